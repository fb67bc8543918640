package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"
)

const otherAudience = "spiffe://example.org/not-the-audience"

type jwtReport struct {
	SpiffeID               string              `json:"spiffe_id"`
	Audience               []string            `json:"audience"`
	Expiry                 string              `json:"expiry"`
	Header                 map[string]any      `json:"header"`
	Claims                 map[string]any      `json:"claims"`
	WorkloadAPIValidatedID string              `json:"workload_api_validated_id"`
	LocalValidatedID       string              `json:"local_validated_id"`
	JWTBundleKeyIDs        map[string][]string `json:"jwt_bundle_key_ids"`
	// ExtraAudienceValidatedIDs: the same token validated for its -extra-audience (remote and local).
	ExtraAudienceValidatedIDs []string `json:"extra_audience_validated_ids,omitempty"`
	// Rejections: what the Workload API (gRPC status code) and go-spiffe's local validation (error text) said
	// about a token for another audience and a token with a corrupted signature; "" means accepted.
	Rejections map[string]string `json:"rejections"`
}

// runJWT fetches a JWT-SVID, validates it with the Workload API's ValidateJWTSVID and locally with
// jwtsvid.ParseAndValidate against the FetchJWTBundles bundles, and checks that both refuse a token for another
// audience and a token whose signature was altered.
func runJWT(ctx context.Context, args []string) error {
	var common commonFlags
	fs := newFlagSet("jwt", &common)
	audience := fs.String("audience", "", "JWT-SVID audience")
	extra := fs.String("extra-audience", "", "a second audience (jwtsvid.Params.ExtraAudiences), optional")
	if err := parseFlags(fs, &common, args); err != nil {
		return err
	}
	if *audience == "" {
		return fmt.Errorf("-audience is required")
	}
	ctx, cancel := context.WithTimeout(ctx, common.timeout)
	defer cancel()
	client, err := newClient(ctx, common.addr)
	if err != nil {
		return err
	}
	defer client.Close()

	params := jwtsvid.Params{Audience: *audience}
	if *extra != "" {
		params.ExtraAudiences = []string{*extra}
	}
	svid, err := client.FetchJWTSVID(ctx, params)
	if err != nil {
		return fmt.Errorf("FetchJWTSVID: %w", err)
	}
	token := svid.Marshal()
	header, err := decodeHeader(token)
	if err != nil {
		return err
	}
	remote, err := client.ValidateJWTSVID(ctx, token, *audience)
	if err != nil {
		return fmt.Errorf("ValidateJWTSVID: %w", err)
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		return fmt.Errorf("FetchJWTBundles: %w", err)
	}
	local, err := jwtsvid.ParseAndValidate(token, bundles, []string{*audience})
	if err != nil {
		return fmt.Errorf("jwtsvid.ParseAndValidate against FetchJWTBundles: %w", err)
	}
	extraIDs, err := validateExtra(ctx, client, bundles, token, *extra)
	if err != nil {
		return err
	}
	return printJSON(jwtReport{
		ExtraAudienceValidatedIDs: extraIDs,
		SpiffeID:                  svid.ID.String(),
		Audience:                  svid.Audience,
		Expiry:                    svid.Expiry.UTC().Format(time.RFC3339),
		Header:                    header,
		Claims:                    svid.Claims,
		WorkloadAPIValidatedID:    remote.ID.String(),
		LocalValidatedID:          local.ID.String(),
		JWTBundleKeyIDs:           keyIDs(bundles),
		Rejections:                rejections(ctx, client, bundles, token, *audience),
	})
}

func validateExtra(ctx context.Context, client *workloadapi.Client, bundles *jwtbundle.Set, token, extra string,
) ([]string, error) {
	if extra == "" {
		return nil, nil
	}
	remote, err := client.ValidateJWTSVID(ctx, token, extra)
	if err != nil {
		return nil, fmt.Errorf("ValidateJWTSVID for the extra audience: %w", err)
	}
	local, err := jwtsvid.ParseAndValidate(token, bundles, []string{extra})
	if err != nil {
		return nil, fmt.Errorf("jwtsvid.ParseAndValidate for the extra audience: %w", err)
	}
	return []string{remote.ID.String(), local.ID.String()}, nil
}

func rejections(ctx context.Context, client *workloadapi.Client, bundles *jwtbundle.Set, token, audience string) map[string]string {
	tampered := tamperSignature(token)
	result := map[string]string{}
	_, err := client.ValidateJWTSVID(ctx, token, otherAudience)
	result["workload_api_other_audience"] = grpcCode(err)
	_, err = client.ValidateJWTSVID(ctx, tampered, audience)
	result["workload_api_tampered"] = grpcCode(err)
	_, err = jwtsvid.ParseAndValidate(token, bundles, []string{otherAudience})
	result["local_other_audience"] = errText(err)
	_, err = jwtsvid.ParseAndValidate(tampered, bundles, []string{audience})
	result["local_tampered"] = errText(err)
	return result
}

// tamperSignature flips one character in the middle of the signature (not the last one, whose low bits may be
// padding that base64url decoding ignores).
func tamperSignature(token string) string {
	parts := strings.Split(token, ".")
	signature := []byte(parts[2])
	middle := len(signature) / 2
	if signature[middle] == 'A' {
		signature[middle] = 'B'
	} else {
		signature[middle] = 'A'
	}
	parts[2] = string(signature)
	return strings.Join(parts, ".")
}

func decodeHeader(token string) (map[string]any, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		return nil, fmt.Errorf("JWT header is not base64url: %w", err)
	}
	header := map[string]any{}
	if err := json.Unmarshal(raw, &header); err != nil {
		return nil, fmt.Errorf("JWT header is not JSON: %w", err)
	}
	return header, nil
}

func keyIDs(set *jwtbundle.Set) map[string][]string {
	result := map[string][]string{}
	for _, bundle := range set.Bundles() {
		ids := []string{}
		for kid := range bundle.JWTAuthorities() {
			ids = append(ids, kid)
		}
		sort.Strings(ids)
		result[bundle.TrustDomain().IDString()] = ids
	}
	return result
}

// grpcCode names the gRPC status code of err ("OK" for nil).
func grpcCode(err error) string {
	return status.Code(err).String()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
