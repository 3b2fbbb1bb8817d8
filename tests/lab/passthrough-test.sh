#!/usr/bin/env bash
# Cameras that deliver compressed video, in the qemu arm64 lab, with the static aarch64 board binary:
#   tests/lab/passthrough-test.sh --board BIN [--host DEVROOM_BIN]
# Both are played into v4l2loopback, which the VM loads with exclusive_caps=1 (lab.sh --append), so its node
# is no camera until a writer has set a format on its OUTPUT side; labprobe's writer sets the format and
# writes one frame per write at 15 fps, looping. Both samples are four colour bands (orange, purple, teal,
# pink: neither vivid's bars nor roomcast's test pattern). devroom receives the video over a tap device (as
# in media-test.sh) and must decode the bands from it.
# 1. H.264: `devroom h264-sample` (an IDR every 30 frames), `labprobe h264 lab-loopback FILE 15`. roomcast
#    runs with [video] device = "name:lab-loopback", format = "h264": it must open the loopback as an H.264
#    camera and pass the stream through (no encoder). v4l2loopback has no codec controls: roomcast must say
#    once that the camera's encoder lacks FORCE_KEY_FRAME and BITRATE, and PLIs from devroom
#    (POST /admin/tracks/SID/pli) must reach the camera's (missing) controls with no further warning.
# 2. MJPEG: `devroom mjpeg-sample` (concatenated baseline JPEGs; labprobe splits them at SOI after EOI),
#    `labprobe mjpeg lab-loopback FILE 15`. roomcast runs with format = "mjpeg": it must warn about the
#    software decode, encode with openh264, and devroom's picture must be the bands within a tighter
#    tolerance than the H.264 check (a full-range JPEG read as limited range would miss it).
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
# The MJPEG sample: 30 JPEGs of the same bands (2 s at 15 fps, looped by the writer).
MJPEG=$("$HOST" mjpeg-sample --width 320 --height 240 --frames 30 --out "$W/share/sample.mjpeg") \
  || { bad "devroom mjpeg-sample"; finish; }
echo "# mjpeg sample: $MJPEG"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(not (s["frames"] == 30 and s["bytes"] > 0 and s["bands"] == sys.argv[2:]))' \
  "$MJPEG" "${BANDS[@]}" && ok "devroom mjpeg-sample wrote 30 JPEGs of the same bands" || bad "the MJPEG sample: $MJPEG"
# How far a pixel of the decoded MJPEG picture may be off its band's colour, per channel. Measured: at most 6
# (JPEG at quality 85, then openh264 at 600 kbit/s); JPEG's full range read as limited range is 10 and more off.
MJPEG_TOLERANCE=${MJPEG_TOLERANCE:-10}

lab_room
# roomcast's config for the loopback captured as FORMAT, joining as IDENTITY.
loopback_config() { # IDENTITY FORMAT
  cat <<X
url = "ws://198.51.100.1:7880"
token = "$(DEVROOM_BIN=$HOST devroom_token "$1" lab)"
[video]
device = "name:lab-loopback"
format = "$2"
width = 320
height = 240
fps = 15
bitrate = 600
[audio]
device = "none"
X
}
loopback_config lab-passthrough h264 > "$W/share/lab.toml"
loopback_config lab-mjpeg mjpeg > "$W/share/mjpeg.toml"
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
# Both gone, so the loopback is free for another format.
wait $writer
./labprobe mjpeg lab-loopback sample.mjpeg 15 320x240 > writer-mjpeg.log 2>&1 &
writer=$!
while ! grep -q "^mjpeg: streaming" writer-mjpeg.log && kill -0 $writer 2>/dev/null; do sleep 0.1; done
RUST_LOG=info,roomcast=debug ./roomcast run --config mjpeg.toml > roomcast-mjpeg.log 2>&1 &
pid=$!
while [ ! -e stop-mjpeg ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
kill $pid $writer 2>/dev/null
wait $pid
echo "ROOMCAST-MJPEG-EXIT $?"
[ -e stop-mjpeg ]
X
chmod +x "$W/share/run.sh"
lab_boot 600 "$W/share/run.sh" --append "v4l2loopback.exclusive_caps=1"

VIDEO=
while alive && [ -z "$VIDEO" ]; do poll_events 5000; VIDEO=$(flowing lab-passthrough video); done
PNG=
[ -n "$VIDEO" ] && PNG=$(picture "$VIDEO" passthrough)
# Three PLIs, as a viewer's would be relayed, each once roomcast has handled the one before (its debug line
# for a keyframe request that has no FORCE_KEY_FRAME to go to). devroom sends at most one per 100 ms per track
# and answers {"sent": false} to one it held back, which is then asked for again.
REQUEST="keyframe request: no FORCE_KEY_FRAME"
PLIS=0 HELD=0
if [ -n "$PNG" ]; then
  before=$(count roomcast.log "$REQUEST")
  phase 30
  for i in 1 2 3; do
    while alive; do
      curl -s --max-time 5 -X POST "$API/admin/tracks/$VIDEO/pli" | grep -q '"sent":true' && break
      HELD=$((HELD + 1))
    done
    wait_log roomcast.log "$REQUEST" $((before + i)) || break
    PLIS=$i
  done
  PHASE_END=
  echo "# PLIs: $PLIS sent, $HELD asked again (within devroom's 100 ms)"
fi
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

# 2. MJPEG, once the VM has started the MJPEG writer and roomcast again.
MVIDEO= MPNG= MPNG2= MFIRST= MFRAMES=
while alive && [ -z "$MVIDEO" ]; do poll_events 5000; MVIDEO=$(flowing lab-mjpeg video); done
[ -n "$MVIDEO" ] && MPNG=$(picture "$MVIDEO" mjpeg)
# Again once 30 more frames (a whole pass of the looped file) have reached the room: the decode keeps going.
[ -n "$MPNG" ] && MFIRST=$(track_stat "$MVIDEO" frames)
while alive && [ -n "$MPNG" ]; do
  MFRAMES=$(track_stat "$MVIDEO" frames)
  [ "${MFRAMES:-0}" -ge $((MFIRST + 30)) ] && { MPNG2=$(picture "$MVIDEO" mjpeg-looped); break; }
  poll_events 2000
done
touch "$W/share/stop-mjpeg"
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
# The camera's encoder controls: v4l2loopback has none. One warning each at open, whatever happens later.
grep -E "its encoder|FORCE_KEY_FRAME|dropped buffer" "$W/share/roomcast.log" 2>/dev/null | sort | uniq -c | cut -c1-300 | sed 's/^/# controls: /'
[ "$(count roomcast.log "WARN.*camera /dev/video[0-9]*: its encoder lacks FORCE_KEY_FRAME: keyframe requests .* wait for the camera's next periodic IDR")" = 1 ] \
  && [ "$(count roomcast.log "WARN.*camera /dev/video[0-9]*: its encoder lacks BITRATE: the bitrate stays the camera's own")" = 1 ] \
  && ok "roomcast warns once that the camera's encoder lacks FORCE_KEY_FRAME and once that it lacks BITRATE, each with its cost" \
  || bad "the warnings for the camera's missing controls: $(count roomcast.log "its encoder lacks FORCE_KEY_FRAME") for FORCE_KEY_FRAME, $(count roomcast.log "its encoder lacks BITRATE") for BITRATE (want 1 each)"
[ "$PLIS" = 3 ] && [ "$(count roomcast.log "WARN.*FORCE_KEY_FRAME")" = 1 ] && [ "$(count roomcast.log " ERROR ")" = 0 ] \
  && ok "3 PLIs from devroom reached the camera's controls, with no further warning and no error" \
  || bad "PLIs handled: $PLIS of 3; warnings naming FORCE_KEY_FRAME: $(count roomcast.log "WARN.*FORCE_KEY_FRAME") (want the one at open); errors: $(count roomcast.log " ERROR ")"

# MJPEG.
sed 's/^/# writer-mjpeg: /' "$W/share/writer-mjpeg.log" 2>/dev/null | head -3
grep -q "^mjpeg: streaming sample.mjpeg into /dev/video[0-9]*: MJPG 320x240 .* 30 JPEG frames (30 keyframes" "$W/share/writer-mjpeg.log" \
  && ok "labprobe writes the MJPEG sample into v4l2loopback as MJPG 320x240, one JPEG per frame (30)" \
  || bad "the writer did not stream the MJPEG sample into v4l2loopback"
grep -E "camera |video encoder|MJPEG|ERROR|WARN" "$W/share/roomcast-mjpeg.log" 2>/dev/null | cut -c1-300 | head -10 | sed 's/^/# roomcast-mjpeg: /'
grep -q "camera /dev/video[0-9]* (lab-loopback): MJPG 320x240 at 15 fps" "$W/share/roomcast-mjpeg.log" \
  && ok "roomcast opened the loopback by name as an MJPEG camera, 320x240 at 15 fps" || bad "roomcast did not open lab-loopback as MJPG 320x240"
[ "$(count roomcast-mjpeg.log "WARN.*(lab-loopback) is captured as MJPEG: every frame is decoded in software")" = 1 ] \
  && ok "roomcast warns once about the cost of decoding MJPEG in software" || bad "no (or more than one) MJPEG decode-cost warning"
grep -q "video encoder: software" "$W/share/roomcast-mjpeg.log" \
  && ok "the decoded MJPEG goes to the software H.264 encoder" || bad "roomcast did not encode the MJPEG camera with openh264"
[ -n "$MVIDEO" ] && ok "devroom received H.264 RTP from the MJPEG camera ($MVIDEO)" || bad "no video RTP from the MJPEG camera at devroom"
if [ -z "$MPNG" ]; then bad "devroom decoded no picture from the MJPEG camera"
elif check=$(python3 "$HERE/png-bars.py" "$MPNG" --tolerance="$MJPEG_TOLERANCE" "${BANDS[@]}" 2>&1); then ok "devroom decodes the MJPEG sample's picture: $check"
else bad "the room's picture is not the MJPEG sample's bands: $check"; fi
if [ -z "$MPNG2" ]; then bad "no picture decoded after 30 more MJPEG frames (frames at the room: ${MFIRST:-none} at the first picture, ${MFRAMES:-none} at the end)"
elif check=$(python3 "$HERE/png-bars.py" "$MPNG2" --tolerance="$MJPEG_TOLERANCE" "${BANDS[@]}" 2>&1); then
  ok "after a whole pass of the MJPEG file more, devroom still decodes the bands (frames at the room: $MFIRST, then $MFRAMES)"
else bad "after a whole pass of the MJPEG file more, the room's picture is not the bands: $check"; fi
[ -n "${KEEP:-}" ] && echo "# pictures: $PNG $PNG2 $MPNG $MPNG2"
lab_finish "LAB-|ROOMCAST-EXIT|ROOMCAST-MJPEG-EXIT" roomcast.log:25:roomcast writer.log:5:writer roomcast-mjpeg.log:25:roomcast-mjpeg writer-mjpeg.log:5:writer-mjpeg
