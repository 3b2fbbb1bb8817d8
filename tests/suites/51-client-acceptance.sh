#!/usr/bin/env bash
# timeout: 900
# Issue 3 acceptance (tests/devroom/tests/client_devroom.rs): the device client (library and the built `roomcast run`) against devroom, one
# test at a time, because some assert timing (Leave within 1 s of SIGTERM, >= 90 % of frames over
# 5 s) that must not compete with a dozen parallel tests for 2 cores. Suite 10 leaves it out.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The tests run the built `roomcast` binary, which `cargo test -p devroom` does not build.
cargo build --offline -p roomcast --bin roomcast
exec cargo test --offline -p devroom --test client_devroom -- --test-threads=1
