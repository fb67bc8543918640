package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
	maxBody            = 1 << 20
)

type exchangeFlags struct {
	common   commonFlags
	issuer   string
	audience string
	scope    string
	demoURL  string
	brokerID string
	demoID   string
}

func parseExchangeFlags(args []string) (*exchangeFlags, error) {
	f := &exchangeFlags{}
	fs := newFlagSet("mtls-token", &f.common)
	fs.StringVar(&f.issuer, "issuer", "", "token service issuer URL (https://127.0.0.1:PORT)")
	fs.StringVar(&f.audience, "audience", "", "RFC 8693 audience of the access token")
	fs.StringVar(&f.scope, "scope", "", "requested scope (optional)")
	fs.StringVar(&f.demoURL, "demo-url", "", "demo API URL to call with the token (optional)")
	fs.StringVar(&f.brokerID, "broker-id", "spiffe://example.org/spiffe-broker", "token service SPIFFE ID")
	fs.StringVar(&f.demoID, "demo-id", "spiffe://example.org/demo-api", "demo API SPIFFE ID")
	if err := parseFlags(fs, &f.common, args); err != nil {
		return nil, err
	}
	if f.issuer == "" || f.audience == "" {
		return nil, fmt.Errorf("-issuer and -audience are required")
	}
	return f, nil
}

type exchangeReport struct {
	ClientID            string         `json:"client_id"`
	TokenServiceID      string         `json:"token_service_id"`
	Metadata            serverMetadata `json:"metadata"`
	TokenStatus         int            `json:"token_status"`
	TokenResponse       map[string]any `json:"token_response"`
	AccessToken         *accessToken   `json:"access_token,omitempty"`
	CnfMatchesLeaf      bool           `json:"cnf_matches_leaf"`
	DemoStatus          int            `json:"demo_status,omitempty"`
	DemoServerID        string         `json:"demo_server_id,omitempty"`
	DemoBody            string         `json:"demo_body,omitempty"`
	DemoWWWAuthenticate string         `json:"demo_www_authenticate,omitempty"`
}

// runMTLSToken does what a Go workload does without the sidecar: with go-spiffe's mTLS client config (the
// server must present the expected SPIFFE ID), read the RFC 8414 metadata, exchange a JWT-SVID for an access
// token (RFC 8693), verify the token against the JWKS, and call the demo API with it over mTLS with the same
// X509Source.
func runMTLSToken(ctx context.Context, args []string) error {
	f, err := parseExchangeFlags(args)
	if err != nil {
		return err
	}
	brokerID, err := spiffeid.FromString(f.brokerID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.common.timeout)
	defer cancel()
	client, err := newClient(ctx, f.common.addr)
	if err != nil {
		return err
	}
	defer client.Close()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(client))
	if err != nil {
		return fmt.Errorf("X509Source: %w", err)
	}
	defer source.Close()

	broker := mtlsHTTPClient(source, brokerID)
	defer broker.CloseIdleConnections()
	report := &exchangeReport{}
	if err := discover(ctx, broker, f.issuer, report); err != nil {
		return err
	}
	subject, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: f.issuer})
	if err != nil {
		return fmt.Errorf("FetchJWTSVID for the issuer: %w", err)
	}
	report.ClientID = subject.ID.String()
	token, err := exchange(ctx, broker, report, subject.Marshal(), f)
	if err != nil || token == "" {
		if err == nil {
			err = printJSON(report)
		}
		return err
	}
	if err := checkAccessToken(ctx, broker, source, token, report); err != nil {
		return err
	}
	if f.demoURL != "" {
		if err := callDemo(ctx, source, f, token, report); err != nil {
			return err
		}
	}
	return printJSON(report)
}

func mtlsHTTPClient(source *workloadapi.X509Source, serverID spiffeid.ID) *http.Client {
	config := tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(serverID))
	return &http.Client{Transport: &http.Transport{TLSClientConfig: config}}
}

type serverMetadata struct {
	Issuer           string    `json:"issuer"`
	TokenEndpoint    string    `json:"token_endpoint"`
	JWKSURI          string    `json:"jwks_uri"`
	AuthMethods      []string  `json:"token_endpoint_auth_methods_supported"`
	GrantTypes       []string  `json:"grant_types_supported"`
	CertificateBound bool      `json:"tls_client_certificate_bound_access_tokens"`
	ResponseTypes    *[]string `json:"response_types_supported"`
}

// discover reads the RFC 8414 §3 metadata; §3.3: its issuer must be identical to the one asked for.
func discover(ctx context.Context, client *http.Client, issuer string, report *exchangeReport) error {
	response, body, err := do(ctx, client, http.MethodGet, issuer+"/.well-known/oauth-authorization-server", nil, "")
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("metadata: status %d: %s", response.StatusCode, body)
	}
	if err := json.Unmarshal(body, &report.Metadata); err != nil {
		return fmt.Errorf("metadata is not JSON: %w", err)
	}
	if report.Metadata.Issuer != issuer {
		return fmt.Errorf("metadata issuer %q is not %q (RFC 8414 §3.3)", report.Metadata.Issuer, issuer)
	}
	report.TokenServiceID = peerID(response)
	return nil
}

// exchange posts the RFC 8693 §2.1 request; it returns the access token ("" when the server refused).
func exchange(
	ctx context.Context, client *http.Client, report *exchangeReport, subjectToken string, f *exchangeFlags,
) (string, error) {
	form := url.Values{
		"grant_type":         {grantTokenExchange},
		"subject_token":      {subjectToken},
		"subject_token_type": {tokenTypeJWT},
		"audience":           {f.audience},
	}
	if f.scope != "" {
		form.Set("scope", f.scope)
	}
	response, body, err := do(ctx, client, http.MethodPost, report.Metadata.TokenEndpoint,
		strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	report.TokenStatus = response.StatusCode
	report.TokenResponse = map[string]any{}
	if err := json.Unmarshal(body, &report.TokenResponse); err != nil {
		return "", fmt.Errorf("token response (status %d) is not JSON: %q", response.StatusCode, body)
	}
	token, _ := report.TokenResponse["access_token"].(string)
	if token != "" {
		report.TokenResponse["access_token"] = fmt.Sprintf("<%d characters>", len(token))
	}
	return token, nil
}

// callDemo calls the demo API over mTLS with the same X509Source (the token is bound to its leaf).
func callDemo(ctx context.Context, source *workloadapi.X509Source, f *exchangeFlags, token string,
	report *exchangeReport,
) error {
	demoID, err := spiffeid.FromString(f.demoID)
	if err != nil {
		return err
	}
	demo := mtlsHTTPClient(source, demoID)
	defer demo.CloseIdleConnections()
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, f.demoURL, nil)
	if err != nil {
		return err
	}
	request.Header.Set("Authorization", "Bearer "+token)
	response, err := demo.Do(request)
	if err != nil {
		return fmt.Errorf("demo API: %w", err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, maxBody))
	if err != nil {
		return fmt.Errorf("demo API body: %w", err)
	}
	report.DemoStatus = response.StatusCode
	report.DemoServerID = peerID(response)
	report.DemoBody = string(body)
	report.DemoWWWAuthenticate = response.Header.Get("WWW-Authenticate")
	return nil
}

func do(ctx context.Context, client *http.Client, method, target string, body io.Reader, contentType string,
) (*http.Response, []byte, error) {
	request, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		request.Header.Set("Content-Type", contentType)
	}
	response, err := client.Do(request)
	if err != nil {
		return nil, nil, err
	}
	defer response.Body.Close()
	data, err := io.ReadAll(io.LimitReader(response.Body, maxBody))
	return response, data, err
}

// peerID is the SPIFFE ID in the server certificate the connection was made with.
func peerID(response *http.Response) string {
	if response.TLS == nil || len(response.TLS.PeerCertificates) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(response.TLS.PeerCertificates[0])
	if err != nil {
		return "invalid: " + err.Error()
	}
	return id.String()
}

// x5tS256 is RFC 8705 §3.1's confirmation value: base64url(SHA-256(DER of the certificate)), unpadded.
func x5tS256(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
