#!/usr/bin/env bash
# timeout: 1500
# Every Rust test (unit, integration, doc), inside the test namespace: no network but 127/8.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test --offline
