#!/usr/bin/env bash
# timeout: 400
# Issue 2 acceptance against devroom and (issue 8) livekit-server: a bad token gets 401 and a readable reason in both SDKs.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s -p no:cacheprovider -rA tests/peers/acceptance/test_bad_token.py
