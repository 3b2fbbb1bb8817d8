#!/usr/bin/env bash
# timeout: 1200
# Suite 64: real capture devices in the qemu lab. The static aarch64 roomcast lists the lab's devices, captures
# vivid (by card name, YUYV, software H.264) and snd-aloop (a 1 kHz tone, Opus) and publishes both to devroom
# on the host over a tap device; the picture devroom decodes must be vivid's, not the synthetic pattern, and the
# audio devroom decodes must be the tone (1000 Hz +- 3 %). The camera is then unplugged (vivid unbound with its
# node open) and restored: no video while it is gone, video again on the same track after; the same for the
# microphone (snd-aloop's card unbound and bound again). Then vivid captured
# as NV12 ([video] format = "nv12") must give vivid's picture too; last, vivid reloaded with multiplanar=2 (its
# camera node multi-planar only) must be listed with its multi-planar formats and captured as NV12 through the
# multi-planar API, with vivid's picture at the room (tests/lab/media-test.sh).
# Like suite 62: runs when the lab is installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=1
# (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/lab/suite.sh
lab_suite lab-media
lab_devroom_bin
lab_board_bin
exec tests/lab/media-test.sh --board "$BOARD" --host "$DEVROOM"
