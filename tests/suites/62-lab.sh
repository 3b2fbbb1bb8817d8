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
. tests/lab/suite.sh
lab_suite lab
lab_devroom_bin
lab_board_bin
exec tests/lab/board-test.sh --board "$BOARD" --host "$DEVROOM"
