#!/usr/bin/env bash
# Build the static board binary (feature set `board`: no devroom, no demo; profile `small`) for one target
# with cargo-zigbuild: zig (from PyPI) is the C/C++ compiler and linker and brings musl, libc++ and the
# kernel UAPI headers for every target, so no Docker and no per-target gcc are needed.
#
#   scripts/build-static.sh [TARGET] [--profile P] [--alsa] [-- extra cargo args]
#     TARGET   aarch64-unknown-linux-musl (default, primary) | armv7-unknown-linux-musleabihf | x86_64-unknown-linux-musl
#     --alsa   build/point at the static alsa-lib sysroot (scripts/build-alsa-lib.sh), which alsa-sys links.
#              Always on: roomcast captures the microphone through alsa-lib, so every board build needs it;
#              the flag stays accepted for old callers.
# Prints the path of the binary on the last line of stdout.
# Env: CARGO_TARGET_DIR (default target/), ROOMCAST_TOOLS (see install-cross-tools.sh), ROOMCAST_SYSROOT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=aarch64-unknown-linux-musl PROFILE=small ALSA=1 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=$2; shift 2;;
    --alsa) ALSA=1; shift;;
    --) shift; EXTRA=("$@"); break;;
    -*) echo "build-static.sh: unknown option $1" >&2; exit 2;;
    *) TARGET=$1; shift;;
  esac
done
eval "$("$ROOT/scripts/install-cross-tools.sh" --env)"
command -v cargo-zigbuild >/dev/null || { echo "build-static.sh: cargo-zigbuild missing: run scripts/install-cross-tools.sh" >&2; exit 2; }
TU=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')      # CARGO_TARGET_<TRIPLE>_... spelling
tl=$(echo "$TARGET" | tr '-' '_')            # PKG_CONFIG_..._<triple> spelling
ARGS=(zigbuild --locked -j"${JOBS:-2}" -p roomcast --profile "$PROFILE" --no-default-features --features board --target "$TARGET")
RUSTFLAGS_T=()

case "$TARGET" in
  aarch64-unknown-linux-musl|x86_64-unknown-linux-musl)
    rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET";;
  armv7-unknown-linux-musleabihf)
    # 32-bit musl and time_t: musl >= 1.2 (what zig ships, and what alsa-lib/openh264/opus are compiled
    # against here) has a 64-bit time_t on 32-bit targets, but the `libc` crate still defaults to the
    # musl-1.1 32-bit time_t layout. v4l2_buffer.timestamp, snd_pcm_status' timestamps and every timespec
    # cross the Rust <-> C/kernel boundary, so both sides must agree: --cfg libc_unstable_musl_v1_2 switches
    # libc (the one inside std too, because std is rebuilt below) to the time64 layout and the __*_time64
    # symbol redirects that musl 1.2 exports.
    RUSTFLAGS_T+=(--cfg libc_unstable_musl_v1_2)
    if ! rustup target list --installed | grep -qx "$TARGET" && ! rustup target add "$TARGET" 2>/dev/null; then
      # No prebuilt rust-std for this target (this machine's rustup mirror lacks it): build std from source.
      # -Zbuild-std is nightly-only; RUSTC_BOOTSTRAP=1 enables it on the stable toolchain. The rebuilt std has
      # no self-contained crt1.o/libc.a, so zig provides crt, musl libc, libunwind and libc++ instead.
      rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
      export RUSTC_BOOTSTRAP=1
      ARGS+=(-Zbuild-std=std,panic_abort)
      # cargo fingerprints RUSTC_BOOTSTRAP on every unit, host build scripts and proc-macros included: sharing a
      # target dir with the aarch64 build would rebuild them (and relink roomcast) on every switch.
      export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/build-std"
      RUSTFLAGS_T+=(-C link-self-contained=no)
    fi;;
  *) echo "build-static.sh: unsupported target $TARGET" >&2; exit 2;;
esac
if [ ${#RUSTFLAGS_T[@]} -gt 0 ]; then export "CARGO_TARGET_${TU}_RUSTFLAGS=${RUSTFLAGS_T[*]}"; fi

if [ $ALSA = 1 ]; then
  SYSROOT=${ROOMCAST_SYSROOT:-${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}/sysroot}/$TARGET
  [ -e "$SYSROOT/usr/lib/libasound.a" ] || "$ROOT/scripts/build-alsa-lib.sh" "$TARGET" >&2
  export "PKG_CONFIG_SYSROOT_DIR_${tl}=$SYSROOT" "PKG_CONFIG_LIBDIR_${tl}=$SYSROOT/usr/lib/pkgconfig"
  export "PKG_CONFIG_ALLOW_CROSS_${tl}=1"
fi

cd "$ROOT"
T0=$(date +%s)
cargo "${ARGS[@]}" "${EXTRA[@]}" >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/$PROFILE/roomcast
echo "build-static.sh: $TARGET/$PROFILE in $(( $(date +%s) - T0 ))s, $(stat -c %s "$BIN") bytes" >&2
echo "$BIN"
