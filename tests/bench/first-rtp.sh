#!/usr/bin/env bash
# Benchmark (not a test): process start -> first RTP at devroom, roomcast vs the official Python SDK.
# Builds release binaries, then runs the benchmark inside the test namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --workspace --bins
target_dir="${CARGO_TARGET_DIR:-target}"
exec tests/netns.sh "$target_dir/release/roomcast-bench"
