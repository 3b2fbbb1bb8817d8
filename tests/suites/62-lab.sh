#!/usr/bin/env bash
# timeout: 1500
# Suite 62: the qemu lab. Boots Debian's arm64 kernel (resolved from the linux-image-arm64 metapackage by
# tests/lab/setup.sh) in qemu-system-aarch64 and runs the static aarch64 roomcast inside (tests/lab/board-test.sh):
# --version and check-config on every board profile; then, when the host binary has devroom and the board
# binary has `run`, roomcast in the VM publishes to devroom on the host over a tap device and the time from
# boot to first media is printed.
# Runs when the lab is installed (scripts/install-cross-tools.sh --lab, with network) or ROOMCAST_TEST_LAB=1
# (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
LAB=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}
MODE=${ROOMCAST_TEST_LAB:-auto}
if [ "$MODE" = 0 ] || { [ "$MODE" = auto ] && [ ! -e "$LAB/initramfs-arm64.cpio.gz" ]; }; then
  echo "ok - # SKIP lab: not installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=0"
  echo "lab: 0 passed, 0 failed, 1 skipped"; exit 0
fi
[ -e "$LAB/initramfs-arm64.cpio.gz" ] || { echo "not ok - lab missing at $LAB: run scripts/install-cross-tools.sh --lab"; echo "lab: 0 passed, 1 failed"; exit 1; }
export CARGO_NET_OFFLINE=${CARGO_NET_OFFLINE:-true}
# ROOMCAST_BOARD_BIN: use an existing static aarch64 binary instead of (re)building it
BOARD=${ROOMCAST_BOARD_BIN:-$(scripts/build-static.sh aarch64-unknown-linux-musl --alsa 2>/dev/null | tail -1)} \
  || { echo "not ok - board build"; echo "lab: 0 passed, 1 failed"; exit 1; }
HOSTARGS=()
HOSTBIN=${DEVROOM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/devroom}   # scripts/test.sh exports DEVROOM_BIN
[ -x "$HOSTBIN" ] && HOSTARGS=(--host "$HOSTBIN")
exec tests/lab/board-test.sh --board "$BOARD" "${HOSTARGS[@]}"
