#!/usr/bin/env bash
# Install everything the build, the demo and the test suites need. Idempotent and fast when cached:
#   - Debian packages: only the missing ones are installed (apt-get runs under `flock /tmp/apt.lock`);
#   - the official Python SDK in a pinned venv at .peers/venv (skipped while its stamp matches);
#   - the official JS SDK + playwright-core in tests/peers/js/node_modules (`npm ci` only when
#     package-lock.json changed);
#   - livekit-server, built with `go install` at a pinned tag (scripts/install-livekit-server.sh;
#     needs Go and its module proxy once, then only checks the cached binary's version).
# usage: scripts/install-deps.sh [--demo]   (--demo: only what `roomcast-demo` needs, no browser/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=all
[ "${1:-}" = "--demo" ] && MODE=demo

log() { printf '[install-deps] %s\n' "$*" >&2; }
START=$(date +%s)

# --- Debian packages --------------------------------------------------------------------------
# build: gcc/make (cc crates), cmake (libopus via opusic-sys), pkg-config, libasound2-dev (alsa-sys: the
# host build links the system alsa-lib; the board build links a static one); file (tests inspect
# built binaries); git, curl, ca-certificates (rustup on a fresh machine).
# tests: iproute2 + util-linux (the network namespace), python3-venv (peers), chromium (browser peer),
# nodejs/npm only when the machine has no node at all; nftables (the connectivity suite's firewall
# inside the device's namespace), coturn (its second, independent TURN server) and openssl (the
# test CA for TURN over TLS).
APT_PKGS=(build-essential cmake pkg-config libasound2-dev file git curl ca-certificates)
if [ "$MODE" = all ]; then
  APT_PKGS+=(iproute2 util-linux python3 python3-venv chromium nftables coturn openssl)
  command -v node >/dev/null 2>&1 || APT_PKGS+=(nodejs)
  command -v npm >/dev/null 2>&1 || APT_PKGS+=(npm)
fi

missing=()
for p in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]}; run as root or: apt-get install ${missing[*]}"
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  flock /tmp/apt.lock apt-get update -qq
  flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: all present"
fi

# --- Rust ---------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    log "no cargo: installing the Rust toolchain with rustup (needs Rust >= 1.85)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
      sh -s -- -y --profile minimal --component rustfmt,clippy >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add "$comp" >/dev/null 2>&1 || log "could not add rustup component $comp"
  fi
done

[ "$MODE" = demo ] && { log "done in $(( $(date +%s) - START )) s (demo deps)"; exit 0; }

# --- Node >= 20 (playwright-core 1.65 needs it; Debian 12's nodejs is 18) -----------------------
# Debian's node is only the bootstrap: npm then installs a pinned node build that the npm registry
# ships as a package (node-linux-<arch>) into .peers/node; scripts/test.sh puts it first on PATH.
NODE_PIN=22.23.3
node_major() { "$1" -e 'console.log(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }
if [ "$(node_major node)" -lt 20 ]; then
  case "$(uname -m)" in
    x86_64) narch=x64 ;;
    aarch64) narch=arm64 ;;
    *) log "node $(node --version 2>/dev/null) is too old and no node build exists for $(uname -m)"; exit 1 ;;
  esac
  NODE_BIN=$ROOT/.peers/node/node_modules/node-linux-$narch/bin
  if [ "$(node_major "$NODE_BIN/node")" -lt 20 ]; then
    log "node $(node --version 2>/dev/null || echo missing) < 20: installing node-linux-$narch@$NODE_PIN into .peers/node"
    mkdir -p "$ROOT/.peers/node"
    npm install --prefix "$ROOT/.peers/node" --no-audit --no-fund --no-save --loglevel=error \
      "node-linux-$narch@$NODE_PIN" >/dev/null
  fi
  export PATH="$NODE_BIN:$PATH"
fi

# --- Python venv with the official SDK ----------------------------------------------------------
VENV=$ROOT/.peers/venv
REQ=$ROOT/tests/peers/requirements.txt
STAMP=$VENV/.roomcast-stamp
want="$(sha256sum "$REQ" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  log "Python venv: cached ($VENV)"
else
  log "Python venv: installing $REQ"
  rm -rf "$VENV"
  mkdir -p "$ROOT/.peers"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$REQ"
  "$VENV/bin/python" -c 'import livekit.rtc, livekit.api, numpy, pytest' # fail here, not in a test
  echo "$want" >"$STAMP"
fi

# --- npm: livekit-client, livekit-server-sdk, playwright-core -------------------------------------
JS=$ROOT/tests/peers/js
NSTAMP=$JS/node_modules/.roomcast-stamp
nwant="$(sha256sum "$JS/package-lock.json" | cut -d' ' -f1) $(node --version)"
if [ -f "$NSTAMP" ] && [ "$(cat "$NSTAMP")" = "$nwant" ]; then
  log "npm packages: cached ($JS/node_modules)"
else
  log "npm ci in $JS"
  (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$nwant" >"$NSTAMP"
fi

[ -x /usr/lib/chromium/chromium ] || { log "chromium is missing at /usr/lib/chromium/chromium"; exit 1; }

# --- the real LiveKit server (pinned, built with Go once, cached in ~/.cache/roomcast-tools/livekit) ---
bash "$ROOT/scripts/install-livekit-server.sh"
log "done in $(( $(date +%s) - START )) s"
