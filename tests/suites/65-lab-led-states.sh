#!/usr/bin/env bash
# timeout: 900
# Suite 65: the status LED following a real connection in the qemu lab. The static aarch64 `roomcast run` drives
# a named gpio-sim line (and the media line) while it connects to devroom on the host over a tap device, is cut
# off (nftables drop in the suite's namespace), recovers, and is refused with a token signed with a wrong secret;
# the lines are sampled every 1 ms through gpio-sim's sysfs and each phase's pattern (slow blink, solid, fast
# blink, solid, double blink) is checked for period, duty cycle and step lengths (tests/lab/led-states-test.sh).
# Like suite 62: runs when the lab is installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=1
# (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
LAB=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}
MODE=${ROOMCAST_TEST_LAB:-auto}
if [ "$MODE" = 0 ] || { [ "$MODE" = auto ] && [ ! -e "$LAB/initramfs-arm64.cpio.gz" ]; }; then
  echo "ok - # SKIP lab: not installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=0"
  echo "lab-led-states: 0 passed, 0 failed, 1 skipped"; exit 0
fi
[ -e "$LAB/initramfs-arm64.cpio.gz" ] || { echo "not ok - lab missing at $LAB: run scripts/install-cross-tools.sh --lab"; echo "lab-led-states: 0 passed, 1 failed"; exit 1; }
export CARGO_NET_OFFLINE=${CARGO_NET_OFFLINE:-true}
. tests/lib/devroom.sh
DEVROOM=$(devroom_bin)
[ -x "$DEVROOM" ] || nice cargo build -q -p devroom --bin devroom >&2 \
  || { echo "not ok - devroom build"; echo "lab-led-states: 0 passed, 1 failed"; exit 1; }
# ROOMCAST_BOARD_BIN: use an existing static aarch64 binary instead of (re)building it
BOARD=${ROOMCAST_BOARD_BIN:-$(scripts/build-static.sh aarch64-unknown-linux-musl --alsa 2>/dev/null | tail -1)} \
  || { echo "not ok - board build"; echo "lab-led-states: 0 passed, 1 failed"; exit 1; }
exec tests/lab/led-states-test.sh --board "$BOARD" --host "$DEVROOM"
