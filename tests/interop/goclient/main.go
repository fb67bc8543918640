// Command goclient is a go-spiffe v2 client used by tests/interop to prove that a client from another
// ecosystem works against spiffe-broker's dev Workload API, token service and demo API.
//
// Every subcommand prints one JSON document (watch: one per line) on stdout and exits 0, or prints the
// error on stderr and exits 1. Subcommands:
//
//	x509       -addr unix:///path
//	jwt        -addr unix:///path -audience A
//	watch      -addr unix:///path -count N -timeout 8s
//	mtls-token -addr unix:///path -issuer https://127.0.0.1:PORT -audience A [-scope S] -demo-url URL
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type command struct {
	run   func(ctx context.Context, args []string) error
	usage string
}

var commands = map[string]command{
	"x509":       {runX509, "fetch an X.509 context and verify the SVID against the bundle"},
	"jwt":        {runJWT, "fetch a JWT-SVID and validate it remotely and locally"},
	"watch":      {runWatch, "watch X.509 context updates and print each serial"},
	"mtls-token": {runMTLSToken, "exchange a JWT-SVID over mTLS and call the demo API"},
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		usage()
	}
	if err := cmd.run(context.Background(), os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "goclient %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: goclient <command> [flags]")
	for name, cmd := range commands {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", name, cmd.usage)
	}
	os.Exit(2)
}

// commonFlags are the flags every subcommand takes.
type commonFlags struct {
	addr    string
	timeout time.Duration
}

func newFlagSet(name string, common *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&common.addr, "addr", "", "Workload API address (unix:///path)")
	fs.DurationVar(&common.timeout, "timeout", 10*time.Second, "overall deadline")
	return fs
}

func parseFlags(fs *flag.FlagSet, common *commonFlags, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if common.addr == "" {
		return fmt.Errorf("-addr is required")
	}
	return workloadapi.ValidateAddress(common.addr)
}

func newClient(ctx context.Context, addr string) (*workloadapi.Client, error) {
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return nil, fmt.Errorf("workload API client: %w", err)
	}
	return client, nil
}

func printJSON(v any) error {
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	return encoder.Encode(v)
}
