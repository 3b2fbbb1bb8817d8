#!/usr/bin/env bash
# The benchmark (figures, not a test): roomcast side by side with the official Python SDK.
#   tests/bench/run.sh [--quick] [--build] [bench.py options: --runs N --lk-runs N --cpu-runs N
#                      --cpu-window S --soak-minutes N --only devroom,livekit,cpu --no-sdk]
#   tests/bench/run.sh --only lab-m2m [--lab-runs N --lab-frames N]
# Prints a table (median, min, max per row) and, as its LAST line, one JSON object with the same figures.
# --quick: one pass of the fast rows (start -> first media at devroom and livekit-server), < 2 min.
# --build: also build the static aarch64 board binary first (slow) so its size row has figures.
# Builds the release roomcast and devroom unless ROOMCAST_BIN and DEVROOM_BIN are both set (the CI
# smoke test passes the debug builds), then runs tests/bench/bench.py inside tests/netns.sh (or
# directly when already inside the namespace). Progress goes to stderr.
# lab-m2m runs only when named: the M2M encoder path (vicodec, FWHT) against software H.264 on vivid's pictures in
# the qemu lab (emulated CPU: not board figures), with ROOMCAST_BOARD_BIN or the static aarch64 board binary, which
# scripts/build-static.sh builds first if needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --build) BUILD=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done
target_dir=${CARGO_TARGET_DIR:-target}
if [ -z "${ROOMCAST_BIN:-}" ] || [ -z "${DEVROOM_BIN:-}" ]; then
  nice -n 10 cargo build --release -p roomcast --bin roomcast >&2
  nice -n 10 cargo build --release -p devroom --bin devroom >&2
  export ROOMCAST_BIN=$PWD/$target_dir/release/roomcast DEVROOM_BIN=$PWD/$target_dir/release/devroom
  case "$target_dir" in /*) export ROOMCAST_BIN=$target_dir/release/roomcast DEVROOM_BIN=$target_dir/release/devroom ;; esac
fi
if [ "$BUILD" = 1 ]; then
  nice -n 10 tests/bench/board-size.sh >&2
fi
PY=${ROOMCAST_VENV:-.peers/venv}/bin/python
[ -x "$PY" ] || PY=python3
if [ "${ROOMCAST_IN_NETNS:-}" = 1 ]; then
  exec "$PY" tests/bench/bench.py "${ARGS[@]}"
fi
exec tests/netns.sh "$PY" tests/bench/bench.py "${ARGS[@]}"
