package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type x509Report struct {
	SpiffeID           string   `json:"spiffe_id"`
	VerifiedID         string   `json:"verified_id"`
	NotAfter           string   `json:"not_after"`
	Serial             string   `json:"serial"`
	ChainLength        int      `json:"chain_length"`
	VerifiedChainCount int      `json:"verified_chain_count"`
	SVIDCount          int      `json:"svid_count"`
	BundleTrustDomains []string `json:"bundle_trust_domains"`
	// X509BundlesTrustDomains come from the separate FetchX509Bundles stream; the SVID is verified against
	// those too.
	X509BundlesTrustDomains []string `json:"x509_bundles_trust_domains"`
	X509BundlesVerifiedID   string   `json:"x509_bundles_verified_id"`
}

// runX509 fetches an X.509 context (x509svid.ParseRaw inside checks the SVID's shape and that the key matches
// the leaf), verifies the chain with go-spiffe's verifier against the context's bundle and against the bundles
// of the FetchX509Bundles stream.
func runX509(ctx context.Context, args []string) error {
	var common commonFlags
	fs := newFlagSet("x509", &common)
	if err := parseFlags(fs, &common, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, common.timeout)
	defer cancel()
	client, err := newClient(ctx, common.addr)
	if err != nil {
		return err
	}
	defer client.Close()

	x509Context, err := client.FetchX509Context(ctx)
	if err != nil {
		return fmt.Errorf("FetchX509Context: %w", err)
	}
	svid := x509Context.DefaultSVID()
	verifiedID, chains, err := x509svid.Verify(svid.Certificates, x509Context.Bundles)
	if err != nil {
		return fmt.Errorf("x509svid.Verify against the context's bundle: %w", err)
	}
	bundles, err := client.FetchX509Bundles(ctx)
	if err != nil {
		return fmt.Errorf("FetchX509Bundles: %w", err)
	}
	bundlesID, _, err := x509svid.Verify(svid.Certificates, bundles)
	if err != nil {
		return fmt.Errorf("x509svid.Verify against FetchX509Bundles: %w", err)
	}
	leaf := svid.Certificates[0]
	return printJSON(x509Report{
		SpiffeID:                svid.ID.String(),
		VerifiedID:              verifiedID.String(),
		NotAfter:                leaf.NotAfter.UTC().Format(time.RFC3339),
		Serial:                  leaf.SerialNumber.Text(16),
		ChainLength:             len(svid.Certificates),
		VerifiedChainCount:      len(chains),
		SVIDCount:               len(x509Context.SVIDs),
		BundleTrustDomains:      trustDomains(x509Context.Bundles),
		X509BundlesTrustDomains: trustDomains(bundles),
		X509BundlesVerifiedID:   bundlesID.String(),
	})
}

func trustDomains(set *x509bundle.Set) []string {
	names := []string{}
	for _, bundle := range set.Bundles() {
		names = append(names, bundle.TrustDomain().IDString())
	}
	sort.Strings(names)
	return names
}

type watchUpdate struct {
	Serial    string `json:"serial"`
	SpiffeID  string `json:"spiffe_id"`
	NotAfter  string `json:"not_after"`
	ElapsedMs int64  `json:"elapsed_ms"`
	Verified  bool   `json:"verified"`
}

// serialWatcher prints every pushed X.509 context and stops the watch after `want` distinct serials.
type serialWatcher struct {
	start  time.Time
	want   int
	seen   map[string]bool
	cancel context.CancelFunc
	err    error
}

func (w *serialWatcher) OnX509ContextUpdate(x509Context *workloadapi.X509Context) {
	svid := x509Context.DefaultSVID()
	leaf := svid.Certificates[0]
	_, _, verifyErr := x509svid.Verify(svid.Certificates, x509Context.Bundles)
	if verifyErr != nil && w.err == nil {
		w.err = fmt.Errorf("pushed SVID does not verify: %w", verifyErr)
	}
	serial := leaf.SerialNumber.Text(16)
	w.seen[serial] = true
	if err := printJSON(watchUpdate{
		Serial:    serial,
		SpiffeID:  svid.ID.String(),
		NotAfter:  leaf.NotAfter.UTC().Format(time.RFC3339Nano),
		ElapsedMs: time.Since(w.start).Milliseconds(),
		Verified:  verifyErr == nil,
	}); err != nil && w.err == nil {
		w.err = err
	}
	if len(w.seen) >= w.want {
		w.cancel()
	}
}

func (w *serialWatcher) OnX509ContextWatchError(err error) {
	if !isCanceled(err) && w.err == nil {
		w.err = fmt.Errorf("watch error: %w", err)
	}
}

// runWatch watches X.509 contexts until -count distinct serials were pushed (exit 0) or -timeout passes
// (exit 1, after printing what was seen).
func runWatch(ctx context.Context, args []string) error {
	var common commonFlags
	fs := newFlagSet("watch", &common)
	count := fs.Int("count", 2, "distinct serials to wait for")
	if err := parseFlags(fs, &common, args); err != nil {
		return err
	}
	deadline, cancelDeadline := context.WithTimeout(ctx, common.timeout)
	defer cancelDeadline()
	watchCtx, stop := context.WithCancel(deadline)
	defer stop()
	client, err := newClient(watchCtx, common.addr)
	if err != nil {
		return err
	}
	defer client.Close()

	watcher := &serialWatcher{start: time.Now(), want: *count, seen: map[string]bool{}, cancel: stop}
	err = client.WatchX509Context(watchCtx, watcher)
	switch {
	case watcher.err != nil:
		return watcher.err
	case len(watcher.seen) >= *count:
		return nil
	default:
		return fmt.Errorf("saw %d distinct serial(s), wanted %d: %v", len(watcher.seen), *count, err)
	}
}

func isCanceled(err error) bool {
	return err == nil || err == context.Canceled || err == context.DeadlineExceeded ||
		grpcCode(err) == "Canceled" || grpcCode(err) == "DeadlineExceeded"
}
