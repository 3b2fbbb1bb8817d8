#!/usr/bin/env bash
# timeout: 2400
# Suite 60: board packaging. Builds the static aarch64 board binary with cargo-zigbuild and proves it:
#   - `file`: static aarch64 ELF; the board feature set (no devroom/demo subcommands);
#   - qemu-aarch64 user mode: --version, and check-config on examples/roomcast.toml and every board/*.toml
#     (plus a broken config that must be rejected, naming the key);
#   - systemd/roomcast.service: the required directives, `systemd-analyze verify`, `systemd-analyze security`
#     (exposure score printed, must stay <= 2.5);
#   - scripts/install.sh --root DIR: layout, modes, user/groups, enabled service, config kept on reinstall;
#   - the .deb (cargo-deb --no-build): file list, conffile, maintainer scripts;
#   - scripts/build-alsa-lib.sh output: an aarch64 static libasound.a + alsa.pc.
# Optional (slow, see README "Building for a board"):
#   ROOMCAST_TEST_ARMV7=1  also build armv7-unknown-linux-musleabihf (build-std, ~4-8 min cold) and run it
#                          under qemu-arm.
# Tools come from scripts/install-cross-tools.sh, which scripts/test.sh runs before the (offline) suites.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PASS=0 FAIL=0 SKIP=0
ok()   { PASS=$((PASS + 1)); echo "ok - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
skip() { SKIP=$((SKIP + 1)); echo "ok - # SKIP $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
WORK=$(mktemp -d /tmp/roomcast-pkg.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export CARGO_NET_OFFLINE=${CARGO_NET_OFFLINE:-true}   # the suites run in a namespace without network

# --- tools (installed with network by scripts/install-cross-tools.sh; try here too for standalone runs)
eval "$(scripts/install-cross-tools.sh --env)"
if ! command -v cargo-zigbuild >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
  scripts/install-cross-tools.sh >&2 || true
fi
for t in cargo-zigbuild qemu-aarch64-static systemd-analyze file; do
  command -v "$t" >/dev/null || { bad "tool $t missing: run scripts/install-cross-tools.sh (needs network)"; echo "$PASS passed, $FAIL failed"; exit 1; }
done

# --- 1. static aarch64 board build
T0=$(date +%s)
if BIN=$(scripts/build-static.sh aarch64-unknown-linux-musl --alsa 2>"$WORK/build.log" | tail -1) && [ -x "$BIN" ]; then
  ok "static aarch64 board build ($(( $(date +%s) - T0 ))s, $(stat -c %s "$BIN") bytes)"
else
  tail -40 "$WORK/build.log"; bad "static aarch64 board build"; echo "$PASS passed, $FAIL failed"; exit 1
fi
FILE=$(file -b "$BIN")
echo "# file: $FILE"
check "file says statically linked" grep -q "statically linked" <<<"$FILE"
check "file says ARM aarch64" grep -q "ARM aarch64" <<<"$FILE"
check "no ELF interpreter (no dynamic loader needed)" bash -c "! readelf -lW '$BIN' 2>/dev/null | grep -q INTERP"

# --- 2. runs under qemu-aarch64 user mode
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
OUT=$(qemu-aarch64-static "$BIN" --version 2>&1); echo "# --version: $OUT"
check "--version under qemu-aarch64 prints roomcast $VERSION" grep -qx "roomcast $VERSION" <<<"$OUT"
HELP=$(qemu-aarch64-static "$BIN" --help 2>&1)
check "board build has check-config and run" bash -c 'grep -q "check-config" <<<"$0" && grep -q "  run" <<<"$0"' "$HELP"
check "board build has no devroom/demo subcommands" bash -c '! grep -qE "^  (devroom|demo) " <<<"$0"' "$HELP"

# check-config: the profiles read their API secret from /etc/roomcast/api_secret; qemu's -L prefix is consulted
# first for every absolute path the guest opens, so a fake /etc/roomcast/api_secret lives in $WORK/prefix.
mkdir -p "$WORK/prefix/etc/roomcast"
echo "fake-secret-for-check-config" > "$WORK/prefix/etc/roomcast/api_secret"
qa() { qemu-aarch64-static -L "$WORK/prefix" "$BIN" "$@"; }
for f in examples/roomcast.toml board/*.toml; do
  if out=$(qa check-config "$f" 2>&1); then ok "check-config $f (qemu-aarch64)"
  else echo "$out" | sed 's/^/#   /'; bad "check-config $f (qemu-aarch64)"; fi
done
# a typo must be rejected, naming the key (proves the profiles above were really validated)
sed 's/^encoder = /encodr = /' board/raspberry-pi-4.toml > "$WORK/typo.toml"
out=$(qa check-config "$WORK/typo.toml" 2>&1); rc=$?
echo "$out" | head -3 | sed 's/^/#   /'
check "check-config rejects an unknown key and names it" bash -c '[ "$0" != 0 ] && grep -q "encodr" <<<"$1"' "$rc" "$out"

# --- 3. systemd unit
U=systemd/roomcast.service
for d in Type=notify WatchdogSec= Restart=always RestartSec= ProtectSystem=strict PrivateTmp=yes NoNewPrivileges=yes \
         "CapabilityBoundingSet=$" "RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX" \
         "SupplementaryGroups=video audio gpio" "ConfigurationDirectory=roomcast" "StateDirectory=roomcast" \
         "DeviceAllow=char-video4linux" "DeviceAllow=char-alsa" "DeviceAllow=char-gpiochip" DevicePolicy=closed \
         "TimeoutStartSec=infinity" "After=.*time-sync.target" "Wants=.*time-sync.target"; do
  check "unit has ${d%$}" grep -qE "^$d" "$U"
done
# verify resolves ExecStart on this host: point it at the built binary, the rest of the unit is verified as is
sed "s|^ExecStart=/usr/bin/roomcast|ExecStart=$BIN|" "$U" > "$WORK/roomcast.service"
VOUT=$(systemd-analyze verify --man=no "$WORK/roomcast.service" 2>&1); VRC=$?
[ -n "$VOUT" ] && echo "$VOUT" | sed 's/^/#   /'
check "systemd-analyze verify roomcast.service" bash -c '[ "$0" = 0 ] && ! grep -q "roomcast.service" <<<"$1"' "$VRC" "$VOUT"
SOUT=$(systemd-analyze security --offline=yes "$WORK/roomcast.service" 2>&1)
SCORE=$(sed -n 's/.*Overall exposure level for roomcast.service: \([0-9.]*\).*/\1/p' <<<"$SOUT")
echo "# systemd-analyze security: exposure ${SCORE:-?} ($(grep -o 'Overall exposure.*' <<<"$SOUT"))"
check "systemd-analyze security exposure <= 2.5 (is ${SCORE:-unknown})" \
  systemd-analyze security --offline=yes --threshold=25 "$WORK/roomcast.service" >/dev/null 2>&1

# --- 4. install.sh into a staging root
R=$WORK/root
if scripts/install.sh --binary "$BIN" --root "$R" --profile raspberry-pi-4 >"$WORK/install.log" 2>&1; then ok "install.sh --root"
else cat "$WORK/install.log"; bad "install.sh --root"; fi
check "binary installed 0755 and identical" bash -c '[ "$(stat -c %a "$0/usr/bin/roomcast")" = 755 ] && cmp -s "$1" "$0/usr/bin/roomcast"' "$R" "$BIN"
check "unit installed" cmp -s "$U" "$R/lib/systemd/system/roomcast.service"
check "sysusers + udev rule installed" test -s "$R/usr/lib/sysusers.d/roomcast.conf" -a -s "$R/lib/udev/rules.d/60-roomcast-gpio.rules"
check "example config + board profiles installed" bash -c '[ -s "$0/usr/share/doc/roomcast/examples/roomcast.toml" ] && [ $(ls "$0"/usr/share/roomcast/board/*.toml | wc -l) = $(ls board/*.toml | wc -l) ]' "$R"
check "config seeded from the board profile, mode 0640" bash -c 'cmp -s board/raspberry-pi-4.toml "$0/etc/roomcast/roomcast.toml" && [ "$(stat -c %a "$0/etc/roomcast/roomcast.toml")" = 640 ]' "$R"
check "service enabled (multi-user.target.wants)" test -L "$R/etc/systemd/system/multi-user.target.wants/roomcast.service"
check "user roomcast in groups video, audio, gpio" bash -c 'grep -q "^roomcast:" "$0/etc/passwd" && for g in video audio gpio; do grep -qE "^$g:[^:]*:[0-9]+:(.*,)?roomcast(,|$)" "$0/etc/group" || exit 1; done' "$R"
check "config group is roomcast" bash -c '[ "$(stat -c %g "$0/etc/roomcast/roomcast.toml")" = "$(awk -F: "\$1==\"roomcast\"{print \$3}" "$0/etc/group")" ]' "$R"
echo "# local edit" >> "$R/etc/roomcast/roomcast.toml"
scripts/install.sh --binary "$BIN" --root "$R" >/dev/null 2>&1
check "reinstall keeps the edited config" grep -q "^# local edit" "$R/etc/roomcast/roomcast.toml"
out=$(scripts/install.sh --binary "$BIN" --root "$WORK/r2" --profile no-such-board 2>&1); rc=$?
check "install.sh rejects an unknown profile and lists the real ones" bash -c '[ "$0" != 0 ] && grep -q "raspberry-pi-5" <<<"$1"' "$rc" "$out"

# --- 5. .deb with cargo-deb (packs the binary built above)
if command -v cargo-deb >/dev/null; then
  if DEB=$(cargo deb --no-build --no-strip --target aarch64-unknown-linux-musl --profile small -o "$WORK" 2>"$WORK/deb.log" | tail -1) && [ -f "$DEB" ]; then
    ok "cargo deb ($(basename "$DEB"), $(stat -c %s "$DEB") bytes)"
    dpkg-deb -c "$DEB" | awk '{print $6}' > "$WORK/deb.files"
    for f in ./usr/bin/roomcast ./usr/lib/systemd/system/roomcast.service ./etc/roomcast/roomcast.toml \
             ./usr/lib/sysusers.d/roomcast.conf ./lib/udev/rules.d/60-roomcast-gpio.rules \
             ./usr/share/roomcast/board/raspberry-pi-4.toml ./usr/share/doc/roomcast/examples/roomcast.toml; do
      check ".deb contains $f" grep -qx "$f" "$WORK/deb.files"
    done
    check ".deb architecture is arm64" bash -c '[ "$(dpkg-deb -f "$0" Architecture)" = arm64 ]' "$DEB"
    mkdir -p "$WORK/ctl" && dpkg-deb -e "$DEB" "$WORK/ctl"
    check ".deb marks /etc/roomcast/roomcast.toml as a conffile" grep -qx /etc/roomcast/roomcast.toml "$WORK/ctl/conffiles"
    check ".deb postinst creates the user and enables the unit" bash -c 'grep -q "systemd-sysusers.* roomcast.conf" "$0/postinst" && grep -q "deb-systemd-helper enable roomcast.service" "$0/postinst" && sh -n "$0/postinst"' "$WORK/ctl"
  else
    cat "$WORK/deb.log"; bad "cargo deb"
  fi
else
  bad "cargo-deb missing: run scripts/install-cross-tools.sh"
fi

# --- 6. static alsa-lib (built by install-cross-tools.sh with network; here: what it produced)
AS=${ROOMCAST_SYSROOT:-${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}/sysroot}/aarch64-unknown-linux-musl
if [ -e "$AS/usr/lib/libasound.a" ]; then
  check "libasound.a is a static aarch64 archive" bash -c 'cd "$(mktemp -d)" && ar x "$0" pcm.o 2>/dev/null || ar x "$0" $(ar t "$0" | head -1); file -b *.o | grep -q "ARM aarch64"' "$AS/usr/lib/libasound.a"
  check "alsa.pc resolves through pkg-config with the sysroot" bash -c 'PKG_CONFIG_SYSROOT_DIR="$0" PKG_CONFIG_LIBDIR="$0/usr/lib/pkgconfig" pkg-config --static --libs alsa | grep -q -- "-L$0/usr/lib"' "$AS"
  # the board binary has alsa-lib inside: its configuration path and the PCM plugin names are alsa-lib's strings
  check "the board binary links alsa-lib statically (reads /usr/share/alsa/alsa.conf at run time)" bash -c 'grep -aq "/usr/share/alsa" "$0" && grep -aq "snd_pcm_plug_open\|plughw\|ALSA_CONFIG_PATH" "$0"' "$BIN"
  # the microphone named in [audio] is opened through it: a missing one is named (no sound card under qemu-user)
  OUT=$(qemu-aarch64-static "$BIN" devices 2>&1); echo "$OUT" | sed 's/^/# devices: /' | head -12
  check "roomcast devices runs in the board build" grep -q "^Cameras" <<<"$OUT"
else
  bad "static alsa-lib missing at $AS: run scripts/build-alsa-lib.sh aarch64-unknown-linux-musl (needs network once)"
fi

# --- 7. armv7 (opt-in: build-std makes it slow)
if [ "${ROOMCAST_TEST_ARMV7:-0}" = 1 ]; then
  T0=$(date +%s)
  if B7=$(scripts/build-static.sh armv7-unknown-linux-musleabihf 2>"$WORK/b7.log" | tail -1) && [ -x "$B7" ]; then
    ok "static armv7 board build ($(( $(date +%s) - T0 ))s, $(stat -c %s "$B7") bytes)"
    check "armv7: file says statically linked ARM EABI5" bash -c 'file -b "$0" | grep -q "ARM, EABI5.*statically linked"' "$B7"
    check "armv7: --version under qemu-arm" bash -c '[ "$(qemu-arm-static "$0" --version)" = "roomcast $1" ]' "$B7" "$VERSION"
    check "armv7: check-config board/raspberry-pi-zero-2w.toml under qemu-arm" \
      bash -c 'qemu-arm-static -L "$0/prefix" "$1" check-config board/raspberry-pi-zero-2w.toml >/dev/null' "$WORK" "$B7"
    # the 32-bit build end to end (time64 ABI: JWT expiry, timers, RTP clocks): publish to devroom on loopback
    . "$ROOT/tests/lib/devroom.sh"
    if [ -x "$(devroom_bin)" ]; then
      ip link set lo up 2>/dev/null
      devroom_start "$WORK" --listen 127.0.0.1:7890 --keys devkey:secret; DP=$DEVROOM_PID
      TOKEN=$(devroom_token armv7 lab)
      printf 'url = "ws://127.0.0.1:7890"\ntoken = "%s"\n[video]\ndevice = "test-pattern"\nwidth = 320\nheight = 240\nfps = 15\n[audio]\ndevice = "tone"\n' "$TOKEN" > "$WORK/a7.toml"
      timeout 120 qemu-arm-static "$B7" run --config "$WORK/a7.toml" > "$WORK/a7.log" 2>&1 & RP=$!
      got=0 AFTER=0
      for _ in $(seq 40); do   # devroom's long-poll: returns on the next event or after 5 s; no sleeps
        EV=$(curl -s "http://127.0.0.1:7890/admin/events?after=$AFTER&wait_ms=5000")
        AFTER=$(python3 -c 'import json,sys; print(max([e["seq"] for e in json.load(sys.stdin)["events"]], default=int(sys.argv[1])))' "$AFTER" <<<"$EV" 2>/dev/null || echo "$AFTER")
        [ "$(curl -s http://127.0.0.1:7890/admin/rooms | grep -o '"first_rtp_ms":[0-9]' | wc -l)" -ge 2 ] && { got=1; break; }
        kill -0 $RP 2>/dev/null || break
      done
      kill $RP $DP 2>/dev/null
      if [ $got = 1 ]; then ok "armv7: publishes video and audio to devroom under qemu-arm"
      else tail -20 "$WORK/a7.log" | sed 's/^/#   /'; bad "armv7: publishes video and audio to devroom under qemu-arm"; fi
    else
      # Never silent: a check that could not run is a failure that says why.
      bad "armv7: publishes video and audio to devroom under qemu-arm: no devroom binary at $(devroom_bin) (cargo build --workspace)"
    fi
  else tail -40 "$WORK/b7.log"; bad "static armv7 board build"; fi
else
  skip "armv7 build (set ROOMCAST_TEST_ARMV7=1)"
fi

echo "packaging: $PASS passed, $FAIL failed, $SKIP skipped"
[ "$FAIL" = 0 ]
