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
. tests/lab/suite.sh
lab_suite lab-led-states
lab_devroom_bin
lab_board_bin
exec tests/lab/led-states-test.sh --board "$BOARD" --host "$DEVROOM"
