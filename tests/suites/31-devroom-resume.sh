#!/usr/bin/env bash
# timeout: 600
# Issue 2 acceptance against devroom and (issue 8) livekit-server: the Python SDK resumes after a dropped WebSocket (livekit-server: ss -K on its TCP connection) and media keeps flowing.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s -p no:cacheprovider -rA tests/peers/acceptance/test_resume.py
