# The shared start of the lab suites (tests/suites/62-65): whether the lab runs, and the binaries it needs.
# Source it from the repository root after `set -uo pipefail`.
#   lab_suite NAME   the lab runs when installed (scripts/install-cross-tools.sh --lab) or when
#                    ROOMCAST_TEST_LAB=1 (then a missing lab is a failure); ROOMCAST_TEST_LAB=0 skips it.
#                    NAME prefixes the closing "NAME: N passed, N failed" line.
#   lab_board_bin    BOARD: ROOMCAST_BOARD_BIN, else the static aarch64 board build (scripts/build-static.sh).
#   lab_devroom_bin  DEVROOM: the host's devroom binary (DEVROOM_BIN from scripts/test.sh), built if missing.

lab_fail() {
  echo "not ok - $1"
  echo "$LAB_SUITE: 0 passed, 1 failed"
  exit 1
}

lab_suite() {
  LAB_SUITE=$1
  LAB=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}
  local mode=${ROOMCAST_TEST_LAB:-auto}
  if [ "$mode" = 0 ] || { [ "$mode" = auto ] && [ ! -e "$LAB/initramfs-arm64.cpio.gz" ]; }; then
    echo "ok - # SKIP lab: not installed (scripts/install-cross-tools.sh --lab) or ROOMCAST_TEST_LAB=0"
    echo "$LAB_SUITE: 0 passed, 0 failed, 1 skipped"
    exit 0
  fi
  [ -e "$LAB/initramfs-arm64.cpio.gz" ] || lab_fail "lab missing at $LAB: run scripts/install-cross-tools.sh --lab"
  export CARGO_NET_OFFLINE=${CARGO_NET_OFFLINE:-true}
}

lab_board_bin() {
  BOARD=${ROOMCAST_BOARD_BIN:-$(scripts/build-static.sh aarch64-unknown-linux-musl --alsa 2>/dev/null | tail -1)} \
    || lab_fail "board build"
}

lab_devroom_bin() {
  . tests/lib/devroom.sh
  DEVROOM=$(devroom_bin)
  [ -x "$DEVROOM" ] || nice cargo build -q -p devroom --bin devroom >&2 || lab_fail "devroom build"
}
