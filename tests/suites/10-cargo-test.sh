#!/usr/bin/env bash
# timeout: 1500
# Every Rust test (unit, integration, doc) of the workspace, inside the test namespace: no network
# but 127/8. The root package is tested twice: with its default features and with the board
# feature set (what the static board binary is built from).
# Except tests/devroom/tests/client_devroom.rs: its timing assertions (Leave within 1 s of SIGTERM,
# >= 90 % of frames over 5 s) must not share 2 cores with every other test, so suite 51 runs it one
# test at a time. devroom's integration targets are listed from its tests/*.rs, so a new file is
# picked up here.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/../.."
cargo test --offline -p roomcast
cargo test --offline -p roomcast --no-default-features --features board
targets=()
for file in tests/devroom/tests/*.rs; do
  name=$(basename "$file" .rs)
  [ "$name" = client_devroom ] && continue
  targets+=(--test "$name")
done
cargo test --offline -p devroom --lib --bins "${targets[@]}"
exec cargo test --offline -p devroom --doc
