#!/usr/bin/env bash
# Benchmark: size (and build time) of the static board binary.
#   tests/bench/board-size.sh [TARGET...]        default: aarch64-unknown-linux-musl
# Prints one line per target:
#   board-size TARGET bytes=N gzip=N build_s=N [cold]
# build_s is the wall time of scripts/build-static.sh in the current CARGO_TARGET_DIR (incremental when warm).
# ROOMCAST_BENCH_COLD=1 builds into a fresh, empty target dir instead: the cold build time CI would pay without
# a cache (about 5-15 min on 2 cores, depending on load). Needs the tools from scripts/install-cross-tools.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(aarch64-unknown-linux-musl)
COLD=
if [ "${ROOMCAST_BENCH_COLD:-0}" = 1 ]; then
  export CARGO_TARGET_DIR; CARGO_TARGET_DIR=$(mktemp -d "${TMPDIR:-/tmp}/roomcast-cold.XXXXXX"); COLD=" cold"
  trap 'rm -rf "$CARGO_TARGET_DIR"' EXIT
fi
for t in "${TARGETS[@]}"; do
  T0=$(date +%s)
  BIN=$("$ROOT/scripts/build-static.sh" "$t" 2>/dev/null | tail -1)
  T1=$(date +%s)
  echo "board-size $t bytes=$(stat -c %s "$BIN") gzip=$(gzip -9c "$BIN" | wc -c) build_s=$((T1 - T0))$COLD"
done
