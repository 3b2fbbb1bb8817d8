# Shell helpers for suites, benchmarks and the qemu lab that need devroom (tests/devroom).
# Source it: `. tests/lib/devroom.sh`. One way to find the binary, start it and mint its tokens.

# The devroom binary: $DEVROOM_BIN (scripts/test.sh exports it), else the debug build.
devroom_bin() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  printf '%s\n' "${DEVROOM_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/devroom}"
}

# devroom_start DIR [devroom args...]: starts devroom (stderr to DIR/devroom.log) and returns once it
# printed its ready line, read from its stdout through a FIFO (no polling). Sets DEVROOM_PID and
# DEVROOM_URL; returns non-zero with the log on stderr when it does not come up within 30 s.
devroom_start() {
  local dir=$1 line=
  shift
  rm -f "$dir/devroom.ready"
  mkfifo "$dir/devroom.ready"
  "$(devroom_bin)" "$@" > "$dir/devroom.ready" 2> "$dir/devroom.log" &
  DEVROOM_PID=$!
  exec {DEVROOM_READY_FD}< "$dir/devroom.ready"
  if ! IFS= read -r -t 30 line <&"$DEVROOM_READY_FD" || [[ $line != "devroom listening on "* ]]; then
    echo "devroom did not start (got: ${line:-nothing}):" >&2
    cat "$dir/devroom.log" >&2
    return 1
  fi
  DEVROOM_URL=${line#devroom listening on }
  # devroom prints nothing more on stdout; keep draining it so it can never block on a full pipe.
  cat <&"$DEVROOM_READY_FD" > /dev/null &
  exec {DEVROOM_READY_FD}<&-
}

# devroom_token IDENTITY ROOM [--key K --secret S --ttl SECONDS --admin]: a token devroom accepts.
devroom_token() {
  "$(devroom_bin)" mint-token "$@"
}
