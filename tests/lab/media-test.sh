#!/usr/bin/env bash
# Real capture devices in the qemu arm64 lab, with the static aarch64 board binary:
#   tests/lab/media-test.sh --board BIN [--host DEVROOM_BIN]
# In the VM, roomcast lists the devices (`roomcast devices`), then runs with [video] device = "name:vivid" (the vivid
# camera, found by its card name, captured as YUYV and encoded by the software H.264 encoder) and
# [audio] device = "plughw:Loopback,1,0" (snd-aloop's capture side, into which labprobe plays a 1 kHz tone).
# On the host, devroom (over a tap device, as in board-test.sh) must receive RTP on both tracks; the PNG it
# decodes from the video must show vivid's 75 % colour bars over the full height, which the synthetic
# test pattern does not (its bottom quarter is a grey band), so the picture is the camera's.
# The tone is captured and Opus-encoded; its frequency is not checked at the room (devroom does not decode Opus).
# Prints "lab-media: N passed, N failed"; exit 0 only if nothing failed. Needs root (tap device, network namespace).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BOARD= HOST=
while [ $# -gt 0 ]; do
  case "$1" in
    --board) BOARD=$(realpath "$2"); shift 2;;
    --host) HOST=$(realpath "$2"); shift 2;;
    *) echo "media-test.sh: unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BOARD" ] || { echo "media-test.sh: need --board BIN" >&2; exit 2; }
. "$ROOT/tests/lib/devroom.sh"
HOST=${HOST:-$(devroom_bin)}
[ -x "$HOST" ] || { echo "media-test.sh: no devroom binary at $HOST (cargo build --workspace)" >&2; exit 2; }
if [ -z "${ROOMCAST_IN_NETNS:-}${ROOMCAST_LAB_NETNS:-}" ]; then
  exec unshare -n env ROOMCAST_LAB_NETNS=1 "$0" --board "$BOARD" --host "$HOST"
fi
ip link set lo up
PASS=0 FAIL=0
ok()  { PASS=$((PASS + 1)); echo "ok - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
finish() { echo "lab-media: $PASS passed, $FAIL failed"; [ "$FAIL" = 0 ]; exit $?; }
W=$(mktemp -d /tmp/roomcast-lab-media.XXXXXX)
DEVPID= LABPID=
cleanup() { for p in $DEVPID $LABPID; do kill "$p" 2>/dev/null; done; ip link del rclab0 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT

mkdir -p "$W/share"
cp "$BOARD" "$W/share/roomcast"
# labprobe plays the tone: the lab's copy, or built here when tests/lab/labprobe.c is newer.
PROBE=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}/bin/labprobe.arm64
if command -v aarch64-linux-gnu-gcc >/dev/null; then
  aarch64-linux-gnu-gcc -O2 -static -o "$W/share/labprobe" "$HERE/labprobe.c" -lm || { bad "build labprobe"; finish; }
else
  cp "$PROBE" "$W/share/labprobe" || { bad "no labprobe (run tests/lab/setup.sh)"; finish; }
fi
# A static alsa-lib reads its configuration (what "hw", "plughw" and "default" mean) at run time from
# /usr/share/alsa, as on a board; the lab's initramfs has none, so the host's goes in.
[ -e /usr/share/alsa/alsa.conf ] || { bad "/usr/share/alsa/alsa.conf missing on the host (apt-get install libasound2-data)"; finish; }
cp -r /usr/share/alsa "$W/share/alsa-conf"

ip tuntap add dev rclab0 mode tap && ip addr add 198.51.100.1/24 dev rclab0 && ip link set rclab0 up \
  || { bad "tap device rclab0 (needs root)"; finish; }
DEVROOM_BIN=$HOST devroom_start "$W" --listen 198.51.100.1:7880 --keys devkey:secret --media-ip 198.51.100.1 --frame-dir "$W/frames" \
  || { bad "devroom start"; finish; }
DEVPID=$DEVROOM_PID
TOKEN=$(DEVROOM_BIN=$HOST devroom_token lab-board lab)
cat > "$W/share/lab.toml" <<X
url = "ws://198.51.100.1:7880"
token = "$TOKEN"
[video]
device = "name:vivid"
width = 640
height = 360
fps = 15
bitrate = 600
[audio]
device = "plughw:Loopback,1,0"
channels = 1
X
cat > "$W/share/run.sh" <<'X'
#!/bin/sh
cd /mnt/host
mkdir -p /usr/share && cp -r alsa-conf /usr/share/alsa
./roomcast devices > devices.txt 2>&1; echo "DEVICES-RC $?"
./labprobe tone 1000 600 > tone.log 2>&1 &
tone=$!
RUST_LOG=info,roomcast=debug ./roomcast run --config lab.toml > roomcast.log 2>&1 &
pid=$!
# the host creates ./stop once it has what it needs (or gives up); the VM then powers off
while [ ! -e stop ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
kill $pid $tone 2>/dev/null
wait $pid
echo "ROOMCAST-EXIT $?"
[ -e stop ]
X
chmod +x "$W/share/run.sh"
"$HERE/lab.sh" --arch arm64 -t 420 -s "$W/share" --tap rclab0:198.51.100.2/24 --log "$W/vm.log" "$W/share/run.sh" >/dev/null 2>&1 &
LABPID=$!

# Wait (devroom's long-poll event API) for first RTP on both tracks, then for video keyframes to decode.
AFTER=0 VIDEO= AUDIO= DEADLINE=$(( $(date +%s) + 360 ))
declare -A KIND FIRST
while [ "$(date +%s)" -lt $DEADLINE ] && { [ -z "$VIDEO" ] || [ -z "$AUDIO" ]; } && kill -0 $LABPID 2>/dev/null; do
  EV=$(curl -s --max-time 10 "http://198.51.100.1:7880/admin/events?after=$AFTER&wait_ms=5000") || continue
  while IFS=$'\t' read -r seq type tsid kind; do
    [ -n "$seq" ] || continue
    AFTER=$seq
    case $type in track_published) KIND[$tsid]=$kind;; first_rtp) FIRST[$tsid]=1;; esac
  done < <(python3 -c 'import json,sys
for e in json.load(sys.stdin).get("events",[]): print("\t".join(str(e.get(k,"")) for k in ("seq","type","track_sid","kind")))' <<<"$EV")
  for sid in "${!FIRST[@]}"; do
    case "${KIND[$sid]:-}" in video) VIDEO=$sid;; audio) AUDIO=$sid;; esac
  done
done
PNG= CHECK=
if [ -n "$VIDEO" ]; then
  # A picture needs a keyframe and the frames after it: ask until one decodes, the way a viewer would.
  while [ "$(date +%s)" -lt $DEADLINE ] && kill -0 $LABPID 2>/dev/null; do
    R=$(curl -s --max-time 60 -X POST "http://198.51.100.1:7880/admin/tracks/$VIDEO/png")
    PNG=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("path",""))' "$R" 2>/dev/null)
    [ -n "$PNG" ] && [ -s "$PNG" ] && break
    PNG=
    # wait for the next video packets before asking again (event-driven, no fixed sleep)
    curl -s --max-time 10 "http://198.51.100.1:7880/admin/events?after=$AFTER&wait_ms=3000" >/dev/null
  done
fi
ROOMS=$(curl -s --max-time 5 http://198.51.100.1:7880/admin/rooms)
touch "$W/share/stop"
wait $LABPID; LABPID=

sed 's/^/# devices: /' "$W/share/devices.txt" 2>/dev/null
grep -q '/dev/video0 .*"vivid"' "$W/share/devices.txt" && grep -q "YUYV" "$W/share/devices.txt" \
  && ok "roomcast devices lists vivid with its formats" || bad "roomcast devices: no vivid camera listed"
grep -q 'hw:[0-9],1 .*Loopback' "$W/share/devices.txt" && ok "roomcast devices lists snd-aloop's capture devices" || bad "roomcast devices: no Loopback capture"
grep -q 'vicodec.*encoder, not H.264' "$W/share/devices.txt" && ok "roomcast devices finds vicodec's encoder and that it is not H.264" \
  || bad "roomcast devices: vicodec's encoder not classified"
grep -q 'gpiochip' "$W/share/devices.txt" && ok "roomcast devices lists the GPIO chips" || bad "roomcast devices: no GPIO chips"
grep -E "camera |microphone |not capturing|error|WARN" "$W/share/roomcast.log" 2>/dev/null | head -20 | sed 's/^/# roomcast: /'
if grep -q "camera /dev/video[0-9]* (vivid): YUYV 640x360" "$W/share/roomcast.log"; then ok "roomcast opened vivid by name as YUYV 640x360"
else bad "roomcast did not open vivid as YUYV 640x360"; fi
if grep -q "microphone plughw:Loopback,1,0: 48000 Hz, 1 channel" "$W/share/roomcast.log"; then ok "roomcast opened snd-aloop's capture side at 48 kHz mono"
else bad "roomcast did not open the microphone"; fi
grep -q "^tone: 1000.0 Hz" "$W/share/tone.log" && ok "a 1 kHz tone played into snd-aloop" || { sed 's/^/# tone: /' "$W/share/tone.log"; bad "tone player"; }
[ -n "$AUDIO" ] && ok "devroom received Opus RTP from the microphone" || bad "no audio RTP at devroom"
[ -n "$VIDEO" ] && ok "devroom received H.264 RTP from the camera" || bad "no video RTP at devroom"
echo "# rooms: $ROOMS" | cut -c1-600
if [ -n "$PNG" ]; then
  cp "$PNG" "$W/vivid.png"
  if CHECK=$(python3 "$HERE/png-bars.py" "$PNG" 2>&1); then ok "the room decoded vivid's picture: $CHECK"
  else bad "the room's picture is not vivid's colour bars: $CHECK"; fi
  [ -n "${KEEP:-}" ] && echo "# picture: $W/vivid.png"
else
  bad "devroom decoded no picture from the camera"
fi
if [ "$FAIL" != 0 ]; then
  grep -E "LAB-|ROOMCAST-EXIT|DEVICES-RC" "$W/vm.log" | sed 's/^/# vm: /'
  tail -25 "$W/share/roomcast.log" 2>/dev/null | sed 's/^/# roomcast: /'
fi
finish
