#!/usr/bin/env bash
# timeout: 180
# The harness checks itself before the acceptance suites lean on it: the namespace, the pinned
# official SDKs, the token minters, and Chromium under playwright.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" -m pytest -v -p no:cacheprovider -rA tests/peers/selftest
