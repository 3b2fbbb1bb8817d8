#!/usr/bin/env bash
# timeout: 900
# Issue 2 acceptance against `roomcast devroom`: official Python SDK and livekit-client publish and receive decoded media, all four pairs, /rtc/v1 and /rtc.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s -p no:cacheprovider -rA tests/peers/acceptance/test_media_pairs.py
