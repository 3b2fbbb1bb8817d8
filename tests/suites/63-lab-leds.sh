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
. tests/lab/suite.sh
lab_suite lab-leds
lab_board_bin
exec tests/lab/led-test.sh --board "$BOARD"
