#!/usr/bin/env bash
# Build and run `roomcast-demo` (tests/devroom): devroom in-process on loopback plus roomcast's device
# pipeline on synthetic sources (test pattern + tone). No board, no LiveKit server, no browser needed.
# usage: scripts/demo.sh [demo args, e.g. --seconds 10 --json]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --demo
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${CARGO_TARGET_DIR:-}" ] || [ ! -d "$CARGO_TARGET_DIR" ]; then
  export CARGO_TARGET_DIR=$PWD/target
fi
cargo build --release -p devroom --bin roomcast-demo
exec "$CARGO_TARGET_DIR/release/roomcast-demo" "$@"
