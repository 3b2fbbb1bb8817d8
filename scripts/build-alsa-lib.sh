#!/usr/bin/env bash
# Build a static alsa-lib (libasound.a + alsa.pc + headers) for one musl target with zig cc, into
#   ${ROOMCAST_SYSROOT:-$ROOMCAST_TOOLS/sysroot}/TARGET/usr/{lib,include}  (cached like the tools)
# alsa-sys finds it through pkg-config (build-static.sh --alsa sets PKG_CONFIG_{SYSROOT_DIR,LIBDIR}_<target>).
#
#   scripts/build-alsa-lib.sh [TARGET]     default aarch64-unknown-linux-musl
#
# Two compilers:
#   zig (default): zig cc from PyPI (scripts/install-cross-tools.sh), the cargo-zigbuild route.
#   cross-rs container: Cross.toml runs this file as its pre-build step (`./pre-build-script $CROSS_TARGET`,
#     only this one file is copied into the image). There CROSS_TOOLCHAIN_PREFIX (or ALSA_CC) names the image's
#     musl gcc, and the result goes to /opt/alsa/TARGET (Cross.toml points pkg-config there).
#
# Source: Debian's alsa-lib source package, via `apt-get source --download-only` (a deb-src entry is added
# next to the existing Debian deb entry when missing). The tarball is cached in $ROOMCAST_TOOLS/src.
# alsa-lib is LGPL-2.1: a statically linked binary must be relinkable by its users (README, "Licensing").
# At run time the board's /usr/share/alsa/alsa.conf is used (--with-configdir); a static alsa-lib cannot
# dlopen external plugins (pulse, pipewire), the built-in hw/plug/dmix/dsnoop/softvol all work.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${1:-aarch64-unknown-linux-musl}
TOOLS=${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}
log() { echo "[build-alsa-lib $TARGET] $*" >&2; }
MODE=zig
if [ -n "${ALSA_CC:-}${CROSS_TOOLCHAIN_PREFIX:-}" ] || [ ! -e "$ROOT/scripts/install-cross-tools.sh" ]; then MODE=cc; fi
if [ $MODE = zig ]; then
  SYSROOT=${ROOMCAST_SYSROOT:-$TOOLS/sysroot}/$TARGET
  eval "$("$ROOT/scripts/install-cross-tools.sh" --env)"
  ZIG=("$TOOLS/venv/bin/python" -m ziglang)
  "${ZIG[@]}" version >/dev/null 2>&1 || { log "zig missing: run scripts/install-cross-tools.sh"; exit 2; }
else
  # inside a cross-rs image (Ubuntu): root, apt, the musl gcc toolchain on PATH
  SYSROOT=${ROOMCAST_SYSROOT:-/opt/alsa}/$TARGET
  TOOLS=${ROOMCAST_TOOLS:-/opt/alsa/tools}
  command -v bzip2 >/dev/null && command -v make >/dev/null || \
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bzip2 make pkg-config >/dev/null; }
fi

case "$TARGET" in
  aarch64-unknown-linux-musl) HOST=aarch64-linux-musl; ZTARGET=aarch64-linux-musl; ZFLAGS="";;
  x86_64-unknown-linux-musl) HOST=x86_64-linux-musl; ZTARGET=x86_64-linux-musl; ZFLAGS="";;
  # the same CPU baseline as Rust's armv7-unknown-linux-musleabihf target (v7-A, VFPv3-D16, no NEON assumed)
  armv7-unknown-linux-musleabihf) HOST=arm-linux-musleabihf; ZTARGET=arm-linux-musleabihf; ZFLAGS="-mcpu=generic+v7a+vfp3d16";;
  *) log "unsupported target"; exit 2;;
esac

# --- source (cached)
SRC=$TOOLS/src/alsa-lib
mkdir -p "$SRC"
TARBALL=$(ls "$SRC"/alsa-lib_*.orig.tar.bz2 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$TARBALL" ]; then
  if ! (cd "$SRC" && apt-get source -qq --download-only alsa-lib >/dev/null 2>&1); then
    log "no deb-src entry: adding /etc/apt/sources.list.d/roomcast-deb-src.sources"
    if [ -e /etc/debian_version ] && ! grep -qi ubuntu /etc/os-release; then
      codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
      flock /tmp/apt.lock sh -c "cat > /etc/apt/sources.list.d/roomcast-deb-src.sources <<X
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
X
apt-get update -qq"
    else
      # cross-rs images are Ubuntu: enable the deb-src lines that ship commented out
      sed -i 's/^# *deb-src/deb-src/' /etc/apt/sources.list && apt-get update -qq
    fi
    (cd "$SRC" && apt-get source -qq --download-only alsa-lib >/dev/null)
  fi
  TARBALL=$(ls "$SRC"/alsa-lib_*.orig.tar.bz2 | sort -V | tail -1)
fi
VERSION=$(basename "$TARBALL" | sed 's/alsa-lib_\(.*\)\.orig\.tar\.bz2/\1/')
log "alsa-lib $VERSION"

# --- compiler wrappers: configure wants single-word CC/AR/RANLIB
W=$TOOLS/ccwrap/$TARGET
mkdir -p "$W"
if [ $MODE = zig ]; then
  printf '#!/bin/sh\nexec %s cc -target %s %s "$@"\n' "${ZIG[*]}" "$ZTARGET" "$ZFLAGS" > "$W/cc"
  printf '#!/bin/sh\nexec %s ar "$@"\n' "${ZIG[*]}" > "$W/ar"
  printf '#!/bin/sh\nexec %s ranlib "$@"\n' "${ZIG[*]}" > "$W/ranlib"
else
  P=${CROSS_TOOLCHAIN_PREFIX:-$HOST-}
  [ "$TARGET" = armv7-unknown-linux-musleabihf ] && [ -z "${CROSS_TOOLCHAIN_PREFIX:-}" ] && P=armv7-linux-musleabihf-
  printf '#!/bin/sh\nexec %s "$@"\n' "${ALSA_CC:-${P}gcc}" > "$W/cc"
  printf '#!/bin/sh\nexec %s "$@"\n' "${P}ar" > "$W/ar"
  printf '#!/bin/sh\nexec %s "$@"\n' "${P}ranlib" > "$W/ranlib"
fi
chmod +x "$W"/*

# --- build: extract fresh with tar (cp -r breaks the autotools timestamps -> "aclocal-1.16: command not found")
B=$(mktemp -d "${TMPDIR:-/tmp}/alsa-lib-$TARGET.XXXXXX")
trap 'rm -rf "$B"' EXIT
tar xjf "$TARBALL" -C "$B" --strip-components=1
cd "$B"
T0=$(date +%s)
CC=$W/cc AR=$W/ar RANLIB=$W/ranlib CFLAGS="-O2" \
  ./configure -q --host="$HOST" --prefix=/usr --enable-static --disable-shared --disable-python \
  --without-debug --with-configdir=/usr/share/alsa >/dev/null
make -s -j"${JOBS:-2}" >/dev/null 2>&1 || make -j1   # rerun serially to show the error
rm -rf "$SYSROOT"; mkdir -p "$SYSROOT"
make -s install DESTDIR="$SYSROOT" >/dev/null
# pkg-config prefixes -I/-L with PKG_CONFIG_SYSROOT_DIR, so keep prefix=/usr in alsa.pc
log "installed $SYSROOT/usr/lib/libasound.a ($(stat -c %s "$SYSROOT/usr/lib/libasound.a") bytes) in $(( $(date +%s) - T0 ))s"
echo "$SYSROOT"
