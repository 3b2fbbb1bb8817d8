#!/usr/bin/env bash
# timeout: 1500
# Every Rust test (unit, integration, doc), inside the test namespace: no network but 127/8.
# Except tests/client_devroom.rs: its timing assertions (Leave within 1 s of SIGTERM, >= 90 % of
# frames over 5 s) must not share 2 cores with every other test, so suite 51 runs it one test at a
# time. The integration targets are listed from tests/*.rs, so a new test file is picked up here.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/../.."
targets=()
for file in tests/*.rs; do
  name=$(basename "$file" .rs)
  [ "$name" = client_devroom ] && continue
  targets+=(--test "$name")
done
cargo test --offline --lib --bins "${targets[@]}"
exec cargo test --offline --doc
