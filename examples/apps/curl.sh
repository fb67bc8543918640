#!/usr/bin/env bash
# Call an API with this workload's X.509-SVID and a token from the sidecar bound to it (docs/apps.md).
#
# Environment: SVID_DIR (svid.0.pem, svid.0.key, bundle.0.pem, as `spire-agent api fetch x509 -write DIR` or
# spiffe-helper write them), SIDECAR_SOCKET, API_URL, AUDIENCE, and optionally SCOPE.
# curl checks the API's DNS name or IP address, not its SPIFFE ID: the API's SVID must carry that name as a SAN.
set -euo pipefail

# 1. A token from the sidecar's Unix socket (bound to the SVID the sidecar holds: the same one as in SVID_DIR).
answer=$(curl -sS --fail-with-body --unix-socket "$SIDECAR_SOCKET" -G http://localhost/v1/token \
  --data-urlencode "audience=$AUDIENCE" ${SCOPE:+--data-urlencode "scope=$SCOPE"})
token=$(printf '%s' "$answer" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "no access_token in the sidecar's answer: $answer" >&2; exit 1; }

# 2. The API over mTLS with the same SVID. The header goes through stdin, so the token is not in `ps` output.
printf 'Authorization: Bearer %s\n' "$token" | curl -sS --fail-with-body -H @- \
  --cert "$SVID_DIR/svid.0.pem" --key "$SVID_DIR/svid.0.key" --cacert "$SVID_DIR/bundle.0.pem" \
  "$API_URL"
echo
