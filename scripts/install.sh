#!/usr/bin/env bash
# Install roomcast on a board (or into a staging root) and enable its systemd service.
#
#   scripts/install.sh --binary PATH [--root DIR] [--profile NAME] [--no-enable] [--start]
#     --binary PATH   the static roomcast for this board (scripts/build-static.sh prints it)
#     --root DIR      install into DIR instead of / (image building, tests): nothing on the running system
#                     is touched; the service is enabled inside DIR with `systemctl --root`
#     --profile NAME  seed /etc/roomcast/roomcast.toml from board/NAME.toml (default: examples/roomcast.toml)
#     --no-enable     copy files only
#     --start         also start the service now (only on /, and only if check-config accepts the config)
# An existing /etc/roomcast/roomcast.toml is never overwritten.
#
# Layout (the same as the .deb, see [package.metadata.deb] in Cargo.toml):
#   /usr/bin/roomcast                                   0755
#   /lib/systemd/system/roomcast.service                0644
#   /usr/lib/sysusers.d/roomcast.conf                   user roomcast, group gpio, memberships
#   /lib/udev/rules.d/60-roomcast-gpio.rules            /dev/gpiochip* -> group gpio
#   /usr/share/doc/roomcast/examples/roomcast.toml      every key commented
#   /usr/share/roomcast/board/*.toml                    board profiles
#   /etc/roomcast/roomcast.toml                         root:roomcast 0640 (secrets), kept on reinstall
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN= ROOT=/ PROFILE= ENABLE=1 START=0
die() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2;;
    --root) ROOT=$2; shift 2;;
    --profile) PROFILE=$2; shift 2;;
    --no-enable) ENABLE=0; shift;;
    --start) START=1; shift;;
    -h|--help) sed -n '2,22p' "$0"; exit 0;;
    *) die "unknown argument $1 (see --help)";;
  esac
done
[ -n "$BIN" ] || die "need --binary PATH (build one with scripts/build-static.sh)"
[ -f "$BIN" ] || die "binary $BIN does not exist"
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
LIVE=0; [ "$ROOT" = / ] && LIVE=1
R=${ROOT%/}
if [ -n "$PROFILE" ]; then
  CONFIG_SRC=$SRC/board/$PROFILE.toml
  [ -f "$CONFIG_SRC" ] || die "no board profile '$PROFILE'; choose one of: $(cd "$SRC/board" && ls *.toml | sed 's/\.toml$//' | tr '\n' ' ')"
else
  CONFIG_SRC=$SRC/examples/roomcast.toml
fi
log() { echo "install.sh: $*"; }

install -D -m 0755 "$BIN" "$R/usr/bin/roomcast"
install -D -m 0644 "$SRC/systemd/roomcast.service" "$R/lib/systemd/system/roomcast.service"
install -D -m 0644 "$SRC/systemd/roomcast.sysusers" "$R/usr/lib/sysusers.d/roomcast.conf"
install -D -m 0644 "$SRC/systemd/60-roomcast-gpio.rules" "$R/lib/udev/rules.d/60-roomcast-gpio.rules"
install -D -m 0644 "$SRC/examples/roomcast.toml" "$R/usr/share/doc/roomcast/examples/roomcast.toml"
mkdir -p "$R/usr/share/roomcast/board"
install -m 0644 "$SRC"/board/*.toml "$R/usr/share/roomcast/board/"

# users and groups first, so that the config can belong to group roomcast
if [ $LIVE = 1 ]; then systemd-sysusers roomcast.conf
elif command -v systemd-sysusers >/dev/null; then mkdir -p "$R/etc"; systemd-sysusers --root="$ROOT" roomcast.conf; fi

install -d -m 0750 "$R/etc/roomcast"
if [ -e "$R/etc/roomcast/roomcast.toml" ]; then
  log "keeping existing $R/etc/roomcast/roomcast.toml"
else
  install -m 0640 "$CONFIG_SRC" "$R/etc/roomcast/roomcast.toml"
  log "wrote $R/etc/roomcast/roomcast.toml from ${CONFIG_SRC#"$SRC"/}: set url and auth in it"
fi
# group roomcast may read the config; with --root, the group id comes from DIR's /etc/group
gid=$(awk -F: '$1 == "roomcast" {print $3}' "$R/etc/group" 2>/dev/null || true)
if [ -n "$gid" ]; then chgrp "$gid" "$R/etc/roomcast" "$R/etc/roomcast/roomcast.toml"; fi

if [ $ENABLE = 1 ]; then
  if [ $LIVE = 1 ]; then
    udevadm control --reload 2>/dev/null && udevadm trigger --subsystem-match=gpio 2>/dev/null || true
    systemctl daemon-reload
    systemctl enable roomcast.service
  else
    systemctl --root="$ROOT" enable roomcast.service
  fi
  log "enabled roomcast.service"
fi
if [ $START = 1 ] && [ $LIVE = 1 ]; then
  if /usr/bin/roomcast check-config /etc/roomcast/roomcast.toml >/dev/null; then
    systemctl restart roomcast.service && log "started: journalctl -u roomcast -f"
  else
    die "not starting: fix /etc/roomcast/roomcast.toml (roomcast check-config /etc/roomcast/roomcast.toml), then: systemctl start roomcast"
  fi
fi
