#!/usr/bin/env bash
# timeout: 600
# Suite 67: cameras that deliver compressed video, in the qemu lab. An H.264 stream of four colour bands
# (`devroom h264-sample`) is written into v4l2loopback (exclusive_caps=1) by labprobe; the static aarch64
# roomcast opens the loopback by its card name with [video] format = "h264" and passes the stream through with
# no encoder, and the picture devroom decodes on the host must be the sample's bands; the loopback's missing
# codec controls are warned about once each and PLIs reach them quietly. Then the same bands as MJPEG
# (`devroom mjpeg-sample`), decoded and encoded by roomcast with format = "mjpeg", must reach the room with
# their colours (tests/lab/passthrough-test.sh).
# Like suite 62: runs when the lab is installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=1
# (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/lab/suite.sh
lab_suite lab-passthrough
lab_devroom_bin
lab_board_bin
exec tests/lab/passthrough-test.sh --board "$BOARD" --host "$DEVROOM"
