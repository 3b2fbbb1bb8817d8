#!/usr/bin/env bash
# Boot the arm64 Debian kernel in qemu-system-aarch64 (TCG) and prove the static aarch64 roomcast there.
#   tests/lab/board-test.sh --board BIN [--host BIN] [--profile board/X.toml]
#     --board BIN   static aarch64 roomcast (scripts/build-static.sh)
#     --host BIN    the host's devroom binary (default: the workspace's, see tests/lib/devroom.sh)
# Stage 1 (always): in the VM, `roomcast --version` and `roomcast check-config` on every board profile, and
#   the devices a board would have (vivid camera, snd-aloop, gpio-sim) are listed.
# Stage 2: the VM's network is a tap device in a network namespace of the test's own (tests/lab/room.sh, which
#   the media tests share): host 198.51.100.1/24, guest 198.51.100.2/24,
#   real UDP and TCP both ways. devroom listens on 198.51.100.1; the board runs `roomcast run` with synthetic
#   video (test-pattern) and audio (tone); the stage passes when devroom reports first RTP on a video and an
#   audio track, and prints the time from VM start (qemu launch) to first media.
# Prints "lab: N passed, N failed" at the end; exit 0 only if nothing failed. Needs root (tap device).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/room.sh"
lab_begin lab "$@"
# devroom on the tap from the start: stage 1's network probe uses other ports.
lab_room

# ---- stage 1: boot, --version, check-config on every profile
mkdir -p "$W/share/board" "$W/share/etc"
cp "$BOARD" "$W/share/roomcast"
cp "$ROOT"/board/*.toml "$ROOT/examples/roomcast.toml" "$W/share/board/"
cat > "$W/share/stage1.sh" <<'X'
#!/bin/sh
# runs inside the VM (busybox); /mnt/host = the shared dir
cd /mnt/host
echo "STAGE1 uptime=$(cut -d' ' -f1 /proc/uptime) arch=$(uname -m) kernel=$(uname -r)"
./roomcast --version || exit 10
mkdir -p /etc/roomcast && echo lab-secret > /etc/roomcast/api_secret
rc=0
for f in board/*.toml; do
  if out=$(./roomcast check-config "$f" 2>&1); then echo "CHECK-CONFIG-OK $f"
  else echo "$out" | sed 's/^/  | /'; echo "CHECK-CONFIG-FAIL $f"; rc=11; fi
done
echo "DEVICES $(ls /dev/video* /dev/snd/pcm* /dev/gpiochip* 2>/dev/null | tr '\n' ' ')"
# network path to the host, both transports roomcast needs (WebSocket = TCP, media = UDP)
echo "tcp-hello-from-vm" | timeout 10 nc 198.51.100.1 7998 && echo "NET-TCP-SENT"
# busybox nc has no UDP mode; tftp's write request is one UDP datagram that carries the remote file name
echo x > /tmp/udp-probe; timeout 3 tftp -p -l /tmp/udp-probe -r udp-hello-from-vm 198.51.100.1 7999 2>/dev/null; echo "NET-UDP-SENT"
exit $rc
X
chmod +x "$W/share/stage1.sh"
# host side of the network probe: one TCP and one UDP datagram from the VM, written to files
python3 - "$W" <<'X' &
import socket, sys, os
w = sys.argv[1]
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("198.51.100.1", 7998)); t.listen(1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("198.51.100.1", 7999))
t.settimeout(200); u.settimeout(200)
c, a = t.accept(); open(os.path.join(w, "net-tcp"), "w").write(f"{c.recv(100).decode().strip()} from {a[0]}"); c.close()
d, a = u.recvfrom(512)
if b"udp-hello-from-vm" in d: open(os.path.join(w, "net-udp"), "w").write(f"udp-hello-from-vm from {a[0]}")
X
NETPID=$! LAB_EXTRA_PIDS=$!
lab_boot 300 "$W/share/stage1.sh"
wait $LABPID; RC=$?
kill $NETPID 2>/dev/null
WALL=$(since)
cp "$W/vm.log" "$W/stage1.log"
grep -E "STAGE1|roomcast [0-9]|CHECK-CONFIG|DEVICES|NET|nc:|LAB-(BOOTED|READY|EXIT)|  \|" "$W/stage1.log" | sed 's/^/# /'
if grep -q "LAB-BOOTED" "$W/stage1.log"; then ok "arm64 Debian kernel booted in qemu-system-aarch64 ($(grep -o 'LAB-READY uptime=[0-9.]*' "$W/stage1.log"), ${WALL%.*}s wall incl. poweroff)"
else tail -30 "$W/stage1.log"; bad "arm64 VM boot"; fi
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
if grep -q "^roomcast $VERSION" "$W/stage1.log"; then ok "roomcast --version in the VM"; else bad "roomcast --version in the VM"; fi
n_ok=$(grep -c "CHECK-CONFIG-OK" "$W/stage1.log")
n_all=$(ls "$W/share/board/"*.toml | wc -l)
if [ "$n_ok" = "$n_all" ]; then ok "check-config on $n_all configs in the VM"
else bad "check-config in the VM ($n_ok/$n_all ok)"; fi
if [ "$RC" = 0 ]; then ok "VM stage 1 exit status 0"; else bad "VM stage 1 exit status $RC"; fi
grep -q "/dev/video0" "$W/stage1.log" && grep -q "/dev/snd/pcm" "$W/stage1.log" && ok "VM has board devices (vivid camera, ALSA, gpiochip)" || bad "VM devices missing"
echo "# net: $(cat "$W/net-tcp" 2>/dev/null || echo 'no TCP') / $(cat "$W/net-udp" 2>/dev/null || echo 'no UDP')"
if grep -qx "tcp-hello-from-vm from 198.51.100.2" "$W/net-tcp" 2>/dev/null; then ok "VM -> host TCP over the tap"; else bad "VM -> host TCP over the tap"; fi
if grep -qx "udp-hello-from-vm from 198.51.100.2" "$W/net-udp" 2>/dev/null; then ok "VM -> host UDP over the tap"; else bad "VM -> host UDP over the tap"; fi

# ---- stage 2: roomcast in the VM -> devroom on the host, over a tap device
# Token auth is the one auth form every roomcast config parser accepts; room and identity travel inside the token.
TOKEN=$(DEVROOM_BIN=$HOST devroom_token lab-board lab)
cat > "$W/share/lab.toml" <<X
url = "ws://198.51.100.1:7880"
token = "$TOKEN"
[video]
device = "test-pattern"
width = 320
height = 240
fps = 15
[audio]
device = "tone"
X
cat > "$W/share/stage2.sh" <<'X'
#!/bin/sh
cd /mnt/host
echo "STAGE2-START uptime=$(cut -d' ' -f1 /proc/uptime)"
RUST_LOG=info ./roomcast run --config lab.toml > roomcast.log 2>&1 &
pid=$!
# the host creates ./stop once devroom saw media (or gives up); the VM then powers off
while [ ! -e stop ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
kill $pid 2>/dev/null
[ -e stop ]
X
chmod +x "$W/share/stage2.sh"
lab_boot 300 "$W/share/stage2.sh"
# First RTP on a video and an audio track (devroom's long-poll event API; no sleeps), timed from qemu's start.
VIDEO_AT= AUDIO_AT=
while alive && { [ -z "$VIDEO_AT" ] || [ -z "$AUDIO_AT" ]; }; do
  poll_events 5000
  [ -n "$VIDEO_AT" ] || { [ -n "$(flowing lab-board video)" ] && VIDEO_AT=$(since); }
  [ -n "$AUDIO_AT" ] || { [ -n "$(flowing lab-board audio)" ] && AUDIO_AT=$(since); }
done
touch "$W/share/stop"
wait $LABPID
cp "$W/vm.log" "$W/stage2.log"
grep -E "LAB-(BOOTED|READY|NET)|STAGE2" "$W/stage2.log" | sed 's/^/# /'
if [ -n "$VIDEO_AT" ] && [ -n "$AUDIO_AT" ]; then
  ok "devroom received video and audio from roomcast in the VM"
  echo "# boot to first media: video ${VIDEO_AT:0:6}s audio ${AUDIO_AT:0:6}s after qemu start (TCG, $(grep -o 'LAB-READY uptime=[0-9.]*' "$W/stage2.log"))"
else
  sed 's/^/# roomcast: /' "$W/share/roomcast.log" 2>/dev/null | tail -20
  echo "# devroom rooms: $(curl -s --max-time 5 http://198.51.100.1:7880/admin/rooms)"
  bad "devroom received video and audio from the VM (video=${VIDEO_AT:-none} audio=${AUDIO_AT:-none})"
fi
finish
