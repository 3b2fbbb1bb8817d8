#!/usr/bin/env bash
# timeout: 300
# Issue 9 acceptance against the real livekit-server (tests/peers/recovery.py): the device in a namespace of
# its own with two uplinks (wifi, cell), an official Python SDK subscriber next to the server. One run of:
#   switch   wifi loses its address and goes down, cell comes up with the default route, then back the other way:
#            media resumes with the same participant and track (a resume, no rejoin), timed from uplink-up to the
#            next decoded frame;
#   drop     the signalling TCP connection is killed with `ss -K`: roomcast resumes, and the longest gap between
#            decoded frames stays under 500 ms (no media gap beyond the drop);
#   restart  livekit-server is SIGKILLed and started again on the same ports: a full reconnect with a new
#            participant sid and republished tracks, its events in LiveKit's documented order, and the
#            subscriber decodes the device's new track.
# The benchmark (tests/bench/run.sh) runs the same script 5 times for roomcast and for the Python SDK as the
# publisher. Needs root (ip netns) and livekit-server (scripts/install-livekit-server.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
"${LIVEKIT_SERVER_BIN:-${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}/livekit/bin/livekit-server}" --version
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" tests/peers/recovery.py --runs 1 --peers roomcast --max-drop-gap-ms 500
