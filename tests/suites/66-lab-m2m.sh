#!/usr/bin/env bash
# timeout: 900
# Suite 66: the V4L2 M2M encoder path on vicodec in the qemu lab. The static aarch64 roomcast drives vicodec's
# FWHT encoder through `roomcast encoder-test`, single- and multi-planar and with vivid's pictures as input (vivid
# also reloaded multi-planar only: its NV12 buffers exported per plane and imported, its YUYV, 128 bytes into each
# buffer, copied with the reason logged):
# format negotiation on both queues, buffer cycling, drain and restart, capture times carried through, and
# missing controls tolerated (tests/lab/m2m-test.sh); and `encoder-test --bench` briefly, M2M and software, for
# its figures being there (their size is the benchmark's: tests/bench/run.sh --only lab-m2m). vicodec cannot
# prove H.264 itself: no emulated H.264 encoder exists.
# Like suite 62: runs when the lab is installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=1
# (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/lab/suite.sh
lab_suite lab-m2m
lab_board_bin
exec tests/lab/m2m-test.sh --board "$BOARD"
