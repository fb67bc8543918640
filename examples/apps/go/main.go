// Command app calls an API the way a spiffe-broker token must be used (docs/apps.md): mTLS with this
// workload's X.509-SVID from the Workload API (go-spiffe), and a token from the sidecar's Unix socket that
// is bound to that same SVID (RFC 8705 §3, cnf.x5t#S256).
//
// Environment: SPIFFE_ENDPOINT_SOCKET (read by go-spiffe), SIDECAR_SOCKET, API_URL, AUDIENCE, and optionally
// SCOPE and API_ID (the API's SPIFFE ID; without it any server of a trusted trust domain is accepted).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The X.509-SVID (and bundles) from the Workload API, kept current by go-spiffe.
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer source.Close()

	token, err := boundToken(ctx, source)
	if err != nil {
		return err
	}

	authorizer := tlsconfig.AuthorizeAny()
	if id := os.Getenv("API_ID"); id != "" {
		apiID, err := spiffeid.FromString(id)
		if err != nil {
			return err
		}
		authorizer = tlsconfig.AuthorizeID(apiID)
	}
	api := &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(source, source, authorizer)},
		Timeout:   10 * time.Second,
	}
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, os.Getenv("API_URL"), nil)
	if err != nil {
		return err
	}
	request.Header.Set("Authorization", "Bearer "+token)
	response, err := api.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, 1<<20))
	if err != nil {
		return err
	}
	fmt.Println(response.StatusCode, string(body))
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", response.StatusCode)
	}
	return nil
}

// boundToken asks the sidecar for a token until it is bound to the SVID this process presents (after an SVID
// rotation the sidecar may need a moment to catch up).
func boundToken(ctx context.Context, source *workloadapi.X509Source) (string, error) {
	for {
		svid, err := source.GetX509SVID()
		if err != nil {
			return "", err
		}
		digest := sha256.Sum256(svid.Certificates[0].Raw)
		token, err := sidecarToken(ctx)
		if err != nil {
			return "", err
		}
		if binding(token) == base64.RawURLEncoding.EncodeToString(digest[:]) {
			return token, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the sidecar's token is not bound to this app's X.509-SVID: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sidecarToken is GET /v1/token on the sidecar's Unix socket.
func sidecarToken(ctx context.Context) (string, error) {
	sidecar := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", os.Getenv("SIDECAR_SOCKET"))
			},
		},
		Timeout: 10 * time.Second,
	}
	query := url.Values{"audience": {os.Getenv("AUDIENCE")}}
	if scope := os.Getenv("SCOPE"); scope != "" {
		query.Set("scope", scope)
	}
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost/v1/token?"+query.Encode(), nil)
	if err != nil {
		return "", err
	}
	response, err := sidecar.Do(request)
	if err != nil {
		return "", fmt.Errorf("sidecar: %w", err)
	}
	defer response.Body.Close()
	var answer struct {
		AccessToken      string `json:"access_token"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(response.Body, 1<<20)).Decode(&answer); err != nil {
		return "", fmt.Errorf("sidecar: %w", err)
	}
	if response.StatusCode != http.StatusOK || answer.AccessToken == "" {
		return "", fmt.Errorf("sidecar: %d %s: %s", response.StatusCode, answer.Error, answer.ErrorDescription)
	}
	return answer.AccessToken, nil
}

// binding is the token's cnf.x5t#S256, read without verifying the signature (the API verifies it).
func binding(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Cnf struct {
			X5tS256 string `json:"x5t#S256"`
		} `json:"cnf"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return claims.Cnf.X5tS256
}
