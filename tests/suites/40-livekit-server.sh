#!/usr/bin/env bash
# timeout: 600
# Issue 8 acceptance: the device scenarios (tests/peers/acceptance/test_device_scenarios.py) with the
# built `roomcast run`, each against devroom and against the real livekit-server (built by
# scripts/install-livekit-server.sh, started by tests/servers/livekit-server.sh). Ends with one line per
# scenario and server.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOGS=${ROOMCAST_TEST_LOGS:-target/test-logs}
mkdir -p "$LOGS"
"${LIVEKIT_SERVER_BIN:-${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}/livekit/bin/livekit-server}" --version
before=$(wc -l <"$LOGS/cases.txt" 2>/dev/null || echo 0)
rc=0
ROOMCAST_TEST_SERVERS=devroom,livekit "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s \
  -p no:cacheprovider -rA tests/peers/acceptance/test_device_scenarios.py || rc=$?
echo
echo "=== device scenarios, one line per scenario and server"
tail -n +"$((before + 1))" "$LOGS/cases.txt" 2>/dev/null | sort -s -t: -k1.6,1 || true   # grouped by scenario ("PASS " and "FAIL " are 5 characters)
exit $rc
