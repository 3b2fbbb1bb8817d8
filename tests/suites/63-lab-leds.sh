#!/usr/bin/env bash
# timeout: 900
# Suite 63: the status LEDs in the qemu lab. Boots Debian's arm64 kernel in qemu-system-aarch64, creates a
# gpio-sim chip with named lines and drives it with the static aarch64 roomcast's `led-test`, one state per
# run; the lines are sampled over real time through gpio-sim's sysfs and each pattern's period, duty cycle
# and step lengths are checked within a tolerance (tests/lab/led-test.sh).
# Like suite 62: runs when the lab is installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=1
# (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
LAB=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}
MODE=${ROOMCAST_TEST_LAB:-auto}
if [ "$MODE" = 0 ] || { [ "$MODE" = auto ] && [ ! -e "$LAB/initramfs-arm64.cpio.gz" ]; }; then
  echo "ok - # SKIP lab: not installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=0"
  echo "lab-leds: 0 passed, 0 failed, 1 skipped"; exit 0
fi
[ -e "$LAB/initramfs-arm64.cpio.gz" ] || { echo "not ok - lab missing at $LAB: run scripts/install-cross-tools.sh --lab"; echo "lab-leds: 0 passed, 1 failed"; exit 1; }
export CARGO_NET_OFFLINE=${CARGO_NET_OFFLINE:-true}
# ROOMCAST_BOARD_BIN: use an existing static aarch64 binary instead of (re)building it
BOARD=${ROOMCAST_BOARD_BIN:-$(scripts/build-static.sh aarch64-unknown-linux-musl --alsa 2>/dev/null | tail -1)} \
  || { echo "not ok - board build"; echo "lab-leds: 0 passed, 1 failed"; exit 1; }
exec tests/lab/led-test.sh --board "$BOARD"
