#!/usr/bin/env bash
# timeout: 300
# Issue 3 smoke: `roomcast-demo` (devroom in-process + the device pipeline on synthetic media) must get
# media into the room and decode a frame. The client's acceptance tests are Rust tests
# (tests/devroom/tests/client_devroom.rs) and run in suite 51, one at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --offline -p devroom --bin roomcast-demo
bin="${CARGO_TARGET_DIR:-target}/debug/roomcast-demo"
out=$("$bin" --seconds 2 --json)
echo "$out"
python3 - "$out" <<'PY'
import json, os, sys
s = json.loads(sys.argv[1])
assert s["media_arrived"], "no media arrived"
assert s["time_to_first_media_ms"] is not None
kinds = {t["kind"]: t for t in s["tracks"]}
assert kinds["video"]["frames_received"] > 0 and kinds["audio"]["packets_received"] > 0, s["tracks"]
assert s["png"] and os.path.getsize(s["png"]) > 0, "no PNG"
print("demo ok: first media after", s["time_to_first_media_ms"], "ms")
PY
