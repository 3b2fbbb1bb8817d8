#!/usr/bin/env bash
# timeout: 600
# Suite 68: the speaker on a real ALSA device in the qemu lab (issue 10). The static aarch64 roomcast, with no
# camera and no microphone, plays what it subscribes to into snd-aloop (plughw:Loopback,0,0); the official Python
# SDK on the host publishes its 440 Hz sine to devroom over the tap device; the VM records snd-aloop's capture
# side (hw:Loopback,1,0) and the recording's dominant frequency must be 440 Hz +- 3 %, with sound throughout;
# the speaker opens at 48 kHz mono without an underrun storm and lets go of the track when the talker leaves
# (tests/lab/speaker-test.sh).
# Like suite 62: runs when the lab is installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=1
# (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it. The Python SDK comes from ROOMCAST_VENV
# (default .peers/venv).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/lab/suite.sh
lab_suite lab-speaker
lab_devroom_bin
lab_board_bin
exec tests/lab/speaker-test.sh --board "$BOARD" --host "$DEVROOM" --venv "${ROOMCAST_VENV:-.peers/venv}"
