#!/usr/bin/env bash
# timeout: 400
# Issue 2 acceptance against devroom and (issue 8) livekit-server: the earlier client is disconnected with DUPLICATE_IDENTITY.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s -p no:cacheprovider -rA tests/peers/acceptance/test_duplicate_identity.py
