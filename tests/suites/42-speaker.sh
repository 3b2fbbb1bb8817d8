#!/usr/bin/env bash
# timeout: 300
# Issue 10 speaker acceptance (tests/peers/acceptance/test_speaker.py), against devroom and against the
# real livekit-server: the official Python SDK publishes a 440 Hz sine, `roomcast run` plays it into the
# file speaker, and the written PCM must carry 440 Hz (FFT and zero crossings, within 5 %) with sound in
# nearly every 20 ms block; a speaker that cannot be opened is named and costs nothing else. Ends with one
# line per case and server.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOGS=${ROOMCAST_TEST_LOGS:-target/test-logs}
mkdir -p "$LOGS"
before=$(wc -l <"$LOGS/cases.txt" 2>/dev/null || echo 0)
rc=0
ROOMCAST_TEST_SERVERS=${ROOMCAST_TEST_SERVERS:-devroom,livekit} "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s \
  -p no:cacheprovider -rA tests/peers/acceptance/test_speaker.py || rc=$?
echo
echo "=== speaker, one line per case and server"
tail -n +"$((before + 1))" "$LOGS/cases.txt" 2>/dev/null || true
exit $rc
