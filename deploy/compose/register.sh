#!/bin/sh
# One-shot bootstrap for docker-compose.yml, run by the spire-register service (uid 1000, the same
# uid as spire-server, so it may use the server's admin socket):
#   1. wait until the server answers on its admin socket;
#   2. write the trust bundle the agent bootstraps from (/bootstrap/bundle.pem);
#   3. mint a single-use join token for the agent (/bootstrap/join_token, mode 0640: readable by
#      the agent, which runs with supplementary group 1000), aliased to spiffe://example.org/compose/agent;
#   4. create one registration entry per broker container uid, parented to that alias (idempotent).
# The token is never printed.
set -eu

SOCKET=/tmp/spire-server/private/api.sock
TRUST_DOMAIN=example.org
AGENT_ALIAS="spiffe://${TRUST_DOMAIN}/compose/agent"
X509_TTL=3600
JWT_TTL=300

umask 027

i=0
until spire-server healthcheck -socketPath "$SOCKET" >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    echo "spire-register: server not healthy after 60 s" >&2
    exit 1
  fi
  sleep 1
done

spire-server bundle show -socketPath "$SOCKET" > /bootstrap/bundle.pem.tmp
mv /bootstrap/bundle.pem.tmp /bootstrap/bundle.pem

token=$(spire-server token generate -socketPath "$SOCKET" -spiffeID "$AGENT_ALIAS" -ttl 600 \
  | sed -n 's/^Token: //p')
if [ -z "$token" ]; then
  echo "spire-register: no join token in the server's answer" >&2
  exit 1
fi
printf '%s' "$token" > /bootstrap/join_token.tmp
mv /bootstrap/join_token.tmp /bootstrap/join_token
unset token

# register SPIFFE_ID UID [DNS_NAME]
register() {
  if spire-server entry show -socketPath "$SOCKET" -spiffeID "$1" | grep -q '^Found 0 entries'; then
    set -- "$@" ""
    spire-server entry create -socketPath "$SOCKET" -parentID "$AGENT_ALIAS" -spiffeID "$1" \
      -selector "unix:uid:$2" -x509SVIDTTL "$X509_TTL" -jwtSVIDTTL "$JWT_TTL" \
      ${3:+-dns "$3"} >/dev/null
    echo "spire-register: created $1 (unix:uid:$2)"
  else
    echo "spire-register: $1 already registered"
  fi
}

register "spiffe://${TRUST_DOMAIN}/spiffe-broker" 10001 spiffe-broker
register "spiffe://${TRUST_DOMAIN}/compose/demo-client" 10002
register "spiffe://${TRUST_DOMAIN}/compose/demo-api" 10003 demo-api
