#!/usr/bin/env bash
# timeout: 600
# Issue 2 acceptance against `roomcast devroom`: the Python SDK resumes after a dropped WebSocket and media keeps flowing.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -s -p no:cacheprovider -rA tests/peers/acceptance/test_resume.py
