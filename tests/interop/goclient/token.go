package main

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

var accessTokenAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.PS256, jose.EdDSA}

type accessToken struct {
	Header map[string]any `json:"header"`
	Claims map[string]any `json:"claims"`
	// KeyUse and KeyAlgorithm are the JWKS entry's "use" and "alg" for the token's kid.
	KeyUse       string `json:"key_use"`
	KeyAlgorithm string `json:"key_alg"`
	// KidIsThumbprint: the kid equals the RFC 7638 SHA-256 thumbprint of the key, as go-jose computes it.
	KidIsThumbprint bool `json:"kid_is_rfc7638_thumbprint"`
}

// checkAccessToken verifies the access token's signature with go-jose against the token service's JWKS
// (fetched from the metadata's jwks_uri over the same mTLS client) and compares cnf.x5t#S256 with this
// workload's current leaf.
func checkAccessToken(ctx context.Context, client *http.Client, source *workloadapi.X509Source, token string,
	report *exchangeReport,
) error {
	jwks, err := fetchJWKS(ctx, client, report.Metadata.JWKSURI)
	if err != nil {
		return err
	}
	parsed, err := jwt.ParseSigned(token, accessTokenAlgorithms)
	if err != nil {
		return fmt.Errorf("access token does not parse: %w", err)
	}
	header := parsed.Headers[0]
	keys := jwks.Key(header.KeyID)
	if len(keys) != 1 {
		return fmt.Errorf("kid %q: %d keys in the JWKS", header.KeyID, len(keys))
	}
	claims := map[string]any{}
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		return fmt.Errorf("access token signature does not verify against the JWKS: %w", err)
	}
	thumbprint, err := keys[0].Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("thumbprint: %w", err)
	}
	report.AccessToken = &accessToken{
		Header:          map[string]any{"alg": header.Algorithm, "kid": header.KeyID, "typ": header.ExtraHeaders[jose.HeaderType]},
		Claims:          claims,
		KeyUse:          keys[0].Use,
		KeyAlgorithm:    keys[0].Algorithm,
		KidIsThumbprint: base64.RawURLEncoding.EncodeToString(thumbprint) == header.KeyID,
	}
	svid, err := source.GetX509SVID()
	if err != nil {
		return err
	}
	cnf, _ := claims["cnf"].(map[string]any)
	report.CnfMatchesLeaf = cnf != nil && cnf["x5t#S256"] == x5tS256(svid.Certificates[0].Raw)
	return nil
}

func fetchJWKS(ctx context.Context, client *http.Client, jwksURI string) (*jose.JSONWebKeySet, error) {
	response, body, err := do(ctx, client, http.MethodGet, jwksURI, nil, "")
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS: status %d", response.StatusCode)
	}
	jwks := &jose.JSONWebKeySet{}
	if err := json.Unmarshal(body, jwks); err != nil {
		return nil, fmt.Errorf("JWKS does not parse with go-jose: %w", err)
	}
	return jwks, nil
}
