#!/usr/bin/env bash
# A camera that delivers H.264 itself, in the qemu arm64 lab, with the static aarch64 board binary:
#   tests/lab/passthrough-test.sh --board BIN [--host DEVROOM_BIN]
# On the host, `devroom h264-sample` writes an Annex-B H.264 stream of four colour bands (orange, purple, teal,
# pink: neither vivid's bars nor roomcast's test pattern) with an IDR every 30 frames. In the VM, v4l2loopback
# is loaded with exclusive_caps=1 (lab.sh --append), so its node is no camera until a writer has set a format;
# labprobe's writer (`labprobe h264 lab-loopback FILE 15`) sets H264 on its OUTPUT side and writes one access
# unit per frame at 15 fps, looping. roomcast runs with [video] device = "name:lab-loopback", format = "h264":
# it must open the loopback as an H.264 camera and pass the stream through (no encoder), and devroom (over a
# tap device, as in media-test.sh) must receive the video RTP and decode the bands from it.
# Prints "lab-passthrough: N passed, N failed"; exit 0 only if nothing failed. Needs root (tap device, network
# namespace).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/room.sh"
lab_begin lab-passthrough "$@"
cp "$BOARD" "$W/share/roomcast"

# The sample: 320x240, 6 s at 15 fps, an IDR every 2 s (a late decoder starts within one; the loop restarts at one).
SAMPLE=$("$HOST" h264-sample --width 320 --height 240 --frames 90 --fps 15 --gop 30 --out "$W/share/sample.h264") \
  || { bad "devroom h264-sample"; finish; }
echo "# sample: $SAMPLE"
mapfile -t BANDS < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])["bands"]))' "$SAMPLE")
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(not (s["keyframes"] == [0, 30, 60] and s["bytes"] > 0))' "$SAMPLE" \
  && ok "devroom h264-sample wrote 90 frames with an IDR at 0, 30 and 60" || bad "the sample's IDRs: $SAMPLE"

lab_room
cat > "$W/share/lab.toml" <<X
url = "ws://198.51.100.1:7880"
token = "$(DEVROOM_BIN=$HOST devroom_token lab-passthrough lab)"
[video]
device = "name:lab-loopback"
format = "h264"
width = 320
height = 240
fps = 15
bitrate = 600
[audio]
device = "none"
X
cat > "$W/share/run.sh" <<'X'
#!/bin/sh
cd /mnt/host
# Before any writer, exclusive_caps hides the loopback from the cameras.
./roomcast devices > devices-idle.txt 2>&1
./labprobe h264 lab-loopback sample.h264 15 320x240 > writer.log 2>&1 &
writer=$!
# roomcast starts once the writer has set the format and written its first access unit (or gave up).
while ! grep -q "^h264: streaming" writer.log && kill -0 $writer 2>/dev/null; do sleep 0.1; done
./roomcast devices > devices.txt 2>&1
RUST_LOG=info,roomcast=debug ./roomcast run --config lab.toml > roomcast.log 2>&1 &
pid=$!
# The host creates ./stop once it has what it needs (or gives up).
while [ ! -e stop ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
kill $pid $writer 2>/dev/null
wait $pid
echo "ROOMCAST-EXIT $?"
[ -e stop ]
X
chmod +x "$W/share/run.sh"
lab_boot 420 "$W/share/run.sh" --append "v4l2loopback.exclusive_caps=1"

VIDEO=
while alive && [ -z "$VIDEO" ]; do poll_events 5000; VIDEO=$(flowing lab-passthrough video); done
PNG=
[ -n "$VIDEO" ] && PNG=$(picture "$VIDEO" passthrough)
# The writer loops the 6 s file, with IDRs at its frames 0, 30 and 60: 4 keyframes at the room are the camera's
# IDRs passed through for longer than one pass of the file, and the picture after that is the bands still.
KEYS= PNG2=
while alive && [ -n "$VIDEO" ]; do
  KEYS=$(track_stat "$VIDEO" keyframes)
  [ "${KEYS:-0}" -ge 4 ] && { PNG2=$(picture "$VIDEO" passthrough-looped); break; }
  poll_events 2000
done
ROOMS=$(curl -s --max-time 5 "$API/admin/rooms")
touch "$W/share/stop"
wait $LABPID; LABPID=

sed 's/^/# writer: /' "$W/share/writer.log" 2>/dev/null | head -5
grep -q "^h264: streaming sample.h264 into /dev/video[0-9]*: H264 320x240 .* 90 access units (3 IDR" "$W/share/writer.log" \
  && ok "labprobe writes the sample into v4l2loopback as H264 320x240, one access unit per frame (90, 3 IDR)" \
  || bad "the writer did not stream the sample into v4l2loopback"
sed 's/^/# devices: /' "$W/share/devices.txt" 2>/dev/null
grep -q '"lab-loopback"' "$W/share/devices-idle.txt" 2>/dev/null && bad "roomcast devices lists the loopback as a camera before any writer (exclusive_caps=1)" \
  || ok "before a writer sets its format, roomcast devices does not list the loopback as a camera (exclusive_caps=1)"
grep -q '/dev/video[0-9]*  "lab-loopback"' "$W/share/devices.txt" && grep -q "H264 (.*passed through)" "$W/share/devices.txt" \
  && grep -q 'encoder = "auto" uses: camera H.264 passthrough' "$W/share/devices.txt" \
  && ok "with the writer running, roomcast devices lists lab-loopback as a camera whose H264 is passed through" \
  || bad "roomcast devices: no lab-loopback camera with H264 passed through"
grep -E "camera |video encoder|passthrough|local_track|error|WARN" "$W/share/roomcast.log" 2>/dev/null | cut -c1-300 | head -20 | sed 's/^/# roomcast: /'
grep -q "camera /dev/video[0-9]* (lab-loopback): H264 320x240 at 15 fps" "$W/share/roomcast.log" \
  && ok "roomcast opened the loopback by name as an H.264 camera, 320x240 at 15 fps" || bad "roomcast did not open lab-loopback as H264 320x240"
grep -q "video encoder: camera H.264 passthrough" "$W/share/roomcast.log" && ! grep -q "video encoder: software\|video encoder: V4L2 M2M" "$W/share/roomcast.log" \
  && ok "roomcast passes the camera's H.264 through (no encoder)" || bad "roomcast did not choose passthrough"
[ -n "$VIDEO" ] && ok "devroom received H.264 RTP on the video track ($VIDEO)" || bad "no video RTP at devroom"
echo "# rooms: $ROOMS" | cut -c1-600
if [ -z "$PNG" ]; then bad "devroom decoded no picture from the passed-through stream"
elif check=$(python3 "$HERE/png-bars.py" "$PNG" "${BANDS[@]}" 2>&1); then ok "devroom decodes the sample's picture: $check"
else bad "the room's picture is not the sample's bands: $check"; fi
[ "${KEYS:-0}" -ge 4 ] && grep -q "^h264: loop 1 " "$W/share/writer.log" \
  && ok "the camera's IDRs keep coming through as the writer loops the file ($KEYS keyframes at the room)" \
  || bad "keyframes at the room: ${KEYS:-none} (want 4, across the writer's loop)"
if [ -z "$PNG2" ]; then bad "no picture decoded after the writer looped the file"
elif check=$(python3 "$HERE/png-bars.py" "$PNG2" "${BANDS[@]}" 2>&1); then ok "after the loop devroom still decodes the sample's bands"
else bad "after the loop the room's picture is not the sample's bands: $check"; fi
[ -n "${KEEP:-}" ] && echo "# pictures: $PNG $PNG2"
lab_finish "LAB-|ROOMCAST-EXIT" roomcast.log:25:roomcast writer.log:5:writer
