#!/usr/bin/env bash
# timeout: 900
# Issue 2 acceptance against devroom, and (issue 8) the same against livekit-server as a differential check: official Python SDK and livekit-client publish and receive decoded media, all pairs, /rtc/v1 and /rtc, plus H.264.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s -p no:cacheprovider -rA tests/peers/acceptance/test_media_pairs.py
