#!/usr/bin/env bash
# Install (idempotently, with caching) what the static board builds and the packaging suite need:
#   - Debian packages: cmake, pkg-config, file, qemu-user-static (run aarch64/armv7 binaries on x86_64),
#     systemd (systemd-analyze), and, with --lab, the qemu system emulator + busybox for tests/lab.
#   - zig from PyPI (package `ziglang`) in a venv, and cargo-zigbuild from crates.io.
#   - rustup: the aarch64 musl target, and rust-src (armv7 builds std from source, see build-static.sh).
# Everything lands in $ROOMCAST_TOOLS (default ~/.cache/roomcast-tools), which survives between CI runs on
# the same machine; a second run only checks versions.
#   - cargo-deb from crates.io (the .deb check in tests/suites/60-packaging.sh).
#   - a static alsa-lib for aarch64 (scripts/build-alsa-lib.sh), whose source comes from Debian's archive.
#   - with --lab: the qemu lab (tests/lab/setup.sh: Debian arm64 kernel + modules + initramfs).
# The test suites run inside a network namespace, so this must run before them, with network
# (scripts/install-deps.sh / scripts/test.sh call it).
# Usage: scripts/install-cross-tools.sh [--lab]      then: eval "$(scripts/install-cross-tools.sh --env)"
set -euo pipefail
TOOLS=${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}
ZIG_VERSION=${ZIG_VERSION:-0.17.0}              # PyPI ziglang
ZIGBUILD_VERSION=${ZIGBUILD_VERSION:-0.24.1}    # crates.io cargo-zigbuild
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}   # crates.io cargo-deb

print_env() {
  echo "export PATH=\"$TOOLS/bin:$TOOLS/venv/bin:\$PATH\""
}
if [ "${1:-}" = --env ]; then print_env; exit 0; fi
LAB=0; [ "${1:-}" = --lab ] && LAB=1
log() { echo "[install-cross-tools] $*" >&2; }
mkdir -p "$TOOLS/bin"

# --- Debian packages (apt is shared with other jobs on this machine: serialise on /tmp/apt.lock)
need=()
for pair in cmake:cmake pkg-config:pkg-config file:file qemu-aarch64-static:qemu-user-static \
            systemd-analyze:systemd bzip2:bzip2 make:make dpkg-source:dpkg-dev; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ $LAB = 1 ]; then
  for pair in qemu-system-aarch64:qemu-system-arm cpio:cpio socat:socat ip:iproute2; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  flock /tmp/apt.lock sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${need[*]} >/dev/null"
fi

# --- zig (PyPI ziglang) in a private venv; `zig` wrapper on PATH because cargo-zigbuild looks for it there
if ! "$TOOLS/venv/bin/python" -c "import ziglang" 2>/dev/null || \
   [ "$("$TOOLS/venv/bin/python" -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ]; then
  log "pip install ziglang==$ZIG_VERSION"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q "ziglang==$ZIG_VERSION"
fi

# --- cargo-zigbuild
if [ "$("$TOOLS/bin/cargo-zigbuild" --version 2>/dev/null | awk '{print $2}')" != "$ZIGBUILD_VERSION" ]; then
  log "cargo install cargo-zigbuild@$ZIGBUILD_VERSION"
  cargo install -q --locked --root "$TOOLS" "cargo-zigbuild@$ZIGBUILD_VERSION"
fi

# --- cargo-deb
if [ "$("$TOOLS/bin/cargo-deb" --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
  log "cargo install cargo-deb@$CARGO_DEB_VERSION"
  cargo install -q --locked --root "$TOOLS" "cargo-deb@$CARGO_DEB_VERSION"
fi

# --- rust targets
rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
# --- static alsa-lib for the primary target (cached in $TOOLS/sysroot)
HERE=$(cd "$(dirname "$0")" && pwd)
[ -e "$TOOLS/sysroot/aarch64-unknown-linux-musl/usr/lib/libasound.a" ] || "$HERE/build-alsa-lib.sh" aarch64-unknown-linux-musl >/dev/null
# --- the qemu lab
if [ $LAB = 1 ]; then "$HERE/../tests/lab/setup.sh" arm64; fi
# --- crates for every target (the suites build offline)
(cd "$HERE/.." && cargo fetch --locked -q)
# ... and for std itself, which the armv7 build compiles from source (-Zbuild-std needs its crates offline too)
RUSTC_BOOTSTRAP=1 cargo fetch --locked -q --manifest-path "$(rustc --print sysroot)/lib/rustlib/src/rust/library/Cargo.toml" \
  || log "could not fetch std's crates: the armv7 build (ROOMCAST_TEST_ARMV7=1) will need network"
log "ok: zig $("$TOOLS/venv/bin/python" -m ziglang version), $("$TOOLS/bin/cargo-zigbuild" --version)"
