#!/usr/bin/env bash
# Build (once) and cache the real LiveKit server, pinned, for the tests that run roomcast against it
# (tests/servers/livekit-server.sh, tests/suites/40-livekit-server.sh and the parametrized acceptance tests).
# Needs Go (>= the go line of livekit-server's go.mod, 1.26 at v1.13.5) and network access to the Go
# module proxy the first time. Everything lands in $ROOMCAST_TOOLS/livekit (default
# ~/.cache/roomcast-tools/livekit): the module cache, the build cache and the binary, so a second run
# only checks the version (about a second).
# Usage: scripts/install-livekit-server.sh          then: eval "$(scripts/install-livekit-server.sh --env)"
#        (or use $ROOMCAST_TOOLS/livekit/bin/livekit-server directly)
set -euo pipefail
TOOLS=${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}
LK_VERSION=${LIVEKIT_SERVER_VERSION:-1.13.5}   # a tag without `replace` lines: go install refuses those
LK=$TOOLS/livekit
BIN=$LK/bin/livekit-server
if [ "${1:-}" = --env ]; then echo "export LIVEKIT_SERVER_BIN=\"$BIN\""; exit 0; fi
log() { echo "[install-livekit-server] $*" >&2; }

have_version() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -qw "$LK_VERSION"; }
if have_version; then exit 0; fi

command -v go >/dev/null || { log "go not found: install Go >= 1.26 (https://go.dev/dl/)"; exit 1; }
mkdir -p "$LK/bin" "$LK/gomod" "$LK/gocache"
log "go install github.com/livekit/livekit-server/cmd/server@v$LK_VERSION (minutes on a cold cache)"
start=$(date +%s)
# GOTOOLCHAIN=local: never download another Go toolchain; CGO_ENABLED=0 as livekit's own releases.
# Builds into a temporary GOBIN so a half-done build never replaces a working binary.
tmpbin=$(mktemp -d "$LK/bin.XXXXXX")
trap 'rm -rf "$tmpbin"' EXIT
GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$tmpbin" GOMODCACHE="$LK/gomod" GOCACHE="$LK/gocache" GOFLAGS=-modcacherw \
  nice -n 10 go install "github.com/livekit/livekit-server/cmd/server@v$LK_VERSION"
mv "$tmpbin/server" "$BIN"
have_version || { log "built $BIN but '$BIN --version' does not say $LK_VERSION: $("$BIN" --version 2>&1)"; exit 1; }
log "built livekit-server $LK_VERSION in $(( $(date +%s) - start )) s"
