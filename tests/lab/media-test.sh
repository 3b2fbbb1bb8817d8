#!/usr/bin/env bash
# Real capture devices in the qemu arm64 lab, with the static aarch64 board binary:
#   tests/lab/media-test.sh --board BIN [--host DEVROOM_BIN]
# In the VM, roomcast lists the devices (`roomcast devices`), then runs with [video] device = "name:vivid" (the vivid
# camera, found by its card name, captured as YUYV and encoded by the software H.264 encoder) and
# [audio] device = "plughw:Loopback,1,0" (snd-aloop's capture side, into which labprobe plays a 1 kHz tone).
# On the host, devroom (over a tap device, as in board-test.sh) must receive RTP on both tracks; the PNG it
# decodes from the video must show vivid's 75 % colour bars over the full height, which the synthetic
# test pattern does not (its bottom quarter is a grey band), so the picture is the camera's; and the Opus it
# decodes (POST /admin/tracks/<sid>/audio) must be the tone: 1000 Hz +- 3 %.
# Hot-unplug: the camera is then removed with the node open (vivid's platform device unbound from its driver:
# the same video_unregister_device a USB disconnect makes) and restored (bound again). roomcast must report the
# video track failed (event and status line) and stop sending video while the camera is gone, then reopen it
# by the same name and send video again on the same track sid (no republish), with vivid's picture. The microphone
# likewise: snd-aloop's card unbound and bound again; no audio while it is gone, then the tone again on the same track.
# Then roomcast runs again with [video] format = "nv12": vivid captured as NV12 through software H.264, and the
# PNG must again be vivid's bars.
# Last, vivid is reloaded with multiplanar=2, so its camera node speaks only the multi-planar API
# (V4L2_CAP_VIDEO_CAPTURE_MPLANE, as rkisp1 and most SoC capture paths): `roomcast devices` must list its
# multi-planar formats (NM12, NV12 in two memory planes, exists only there), and roomcast, again with
# format = "nv12", must capture it through the multi-planar API (its log says so) with vivid's bars at the room.
# The host drives the VM's phases through files in the shared directory (unplug, replug, mic-unplug, mic-replug,
# nv12, mplane, stop).
# Prints "lab-media: N passed, N failed"; exit 0 only if nothing failed. Needs root (tap device, network namespace).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/room.sh"
lab_begin lab-media "$@"
cp "$BOARD" "$W/share/roomcast"
lab_alsa_conf

lab_room
# One config per run: the YUYV run with the microphone, then the NV12 run (camera only).
lab_config() { # FILE IDENTITY FORMAT AUDIO
  cat > "$1" <<X
url = "ws://198.51.100.1:7880"
token = "$(DEVROOM_BIN=$HOST devroom_token "$2" lab)"
[video]
device = "name:vivid"
format = "$3"
width = 640
height = 360
fps = 15
bitrate = 600
[audio]
device = "$4"
channels = 1
X
}
lab_config "$W/share/lab.toml" lab-board yuyv "plughw:Loopback,1,0"
lab_config "$W/share/lab-nv12.toml" lab-board-nv12 nv12 none
lab_config "$W/share/lab-mplane.toml" lab-board-mplane nv12 none
cat > "$W/share/run.sh" <<'X'
#!/bin/sh
cd /mnt/host
mkdir -p /usr/share && cp -r alsa-conf /usr/share/alsa
./roomcast devices > devices.txt 2>&1; echo "DEVICES-RC $?"
./labprobe tone 1000 600 > tone.log 2>&1 &
tone=$!
RUST_LOG=info,roomcast=debug ./roomcast run --config lab.toml > roomcast.log 2>&1 &
pid=$!
# The host creates each file once it has what it needs from the phase before (or gives up: ./stop).
wait_for() { while [ ! -e "$1" ] && [ ! -e stop ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done; [ -e "$1" ]; }
# vivid's platform device, unbound from and bound to its driver: what a USB camera's disconnect and
# return do to its node (video_unregister_device with the node open, then a new node).
VIVID=/sys/bus/platform/drivers/vivid
if wait_for unplug; then
  echo vivid.0 > $VIVID/unbind; echo "unbind rc=$? nodes: $(ls /dev/video* 2>/dev/null | tr '\n' ' ')" > unplugged.tmp
  mv unplugged.tmp unplugged
fi
if wait_for replug; then
  echo vivid.0 > $VIVID/bind; echo "bind rc=$? nodes: $(ls /dev/video* 2>/dev/null | tr '\n' ' ')" > replugged.tmp
  mv replugged.tmp replugged
fi
# The microphone the same way: snd-aloop's card unbound (the tone player loses its side too) and bound again.
ALOOP=/sys/bus/platform/drivers/snd_aloop
if wait_for mic-unplug; then
  echo snd_aloop.0 > $ALOOP/unbind; echo "unbind rc=$? cards: $(cat /proc/asound/cards | tr -s ' \n' ' ')" > mic-unplugged.tmp
  mv mic-unplugged.tmp mic-unplugged
fi
if wait_for mic-replug; then
  kill $tone 2>/dev/null; wait $tone
  echo snd_aloop.0 > $ALOOP/bind; echo "bind rc=$? cards: $(cat /proc/asound/cards | tr -s ' \n' ' ')" > mic-replugged.tmp
  ./labprobe tone 1000 600 > tone2.log 2>&1 &
  tone=$!
  mv mic-replugged.tmp mic-replugged
fi
if wait_for nv12; then
  kill $pid; wait $pid; echo "ROOMCAST-EXIT $?"
  RUST_LOG=info,roomcast=debug ./roomcast run --config lab-nv12.toml > roomcast-nv12.log 2>&1 &
  pid=$!
fi
if wait_for mplane; then
  kill $pid; wait $pid; echo "ROOMCAST-EXIT $?"
  # vivid's multi-planar variant: the same driver reloaded with multiplanar=2, its capture node then MPLANE only.
  ko=$(grep '/vivid.ko' /etc/lab-modules | cut -d' ' -f1)
  rmmod vivid && insmod "$ko" n_devs=1 multiplanar=2
  echo "$?" > reload.rc
  ./roomcast devices > devices-mplane.txt 2>&1
  RUST_LOG=info,roomcast=debug ./roomcast run --config lab-mplane.toml > roomcast-mplane.log 2>&1 &
  pid=$!
fi
wait_for stop
kill $pid $tone 2>/dev/null
wait $pid
echo "ROOMCAST-EXIT $?"
[ -e stop ]
X
chmod +x "$W/share/run.sh"
lab_boot 1080 "$W/share/run.sh"

bars() { # PNG WHAT
  local check
  if [ -z "$1" ]; then bad "devroom decoded no picture from the camera ($2)"
  elif check=$(python3 "$HERE/png-bars.py" "$1" 2>&1); then ok "the room decoded vivid's picture ($2): $check"
  else bad "the room's picture is not vivid's colour bars ($2): $check"; fi
}
# ---- phase 1: vivid as YUYV and the tone
phase 400
VIDEO= AUDIO=
while alive && { [ -z "$VIDEO" ] || [ -z "$AUDIO" ]; }; do
  poll_events 5000
  VIDEO=$(flowing lab-board video) AUDIO=$(flowing lab-board audio)
done
PNG=
[ -n "$VIDEO" ] && PNG=$(picture "$VIDEO" vivid-yuyv)
TONE=
if [ -n "$AUDIO" ]; then
  # The analysis takes the newest 3 s of Opus: ask once at least 1.5 s of it has come.
  while alive; do
    TONE=$(curl -s --max-time 30 -X POST "$API/admin/tracks/$AUDIO/audio")
    python3 -c 'import json,sys; sys.exit(json.loads(sys.argv[1]).get("seconds",0) < 1.5)' "$TONE" 2>/dev/null && break
    poll_events 1000
  done
fi
ROOMS=$(curl -s --max-time 5 "$API/admin/rooms")

# ---- phase 2: the camera, then the microphone, goes away and comes back
FAILED='"event":"local_track_failed","kind":"video"'
# Unplug and restore one device: ask the VM (the files PREFIXunplug and PREFIXreplug), then wait for roomcast's reports
# on the KIND track and for devroom's packet counts on its SID. The first report ends the pipeline; the reopen
# attempts that follow (backoff 0, 0.25-0.5 s, 0.5-1 s, 1-2 s) find no device, and between the 2nd and the REPORTSth
# report nothing may reach the room. Sets U[KIND.x]: asked, gone, p1/t1 and p2/t2 (packets and time at the 2nd and
# REPORTSth report), replug, back (recovered reported), p3/rtp (the first new packets).
declare -A U
unplug_replug() { # KIND SID PREFIX REPORTS
  local kind=$1 sid=$2 pre=$3 n=$4 p3
  local failed="\"event\":\"local_track_failed\",\"kind\":\"$kind\""
  U[$kind.asked]=$(since)
  touch "$W/share/${pre}unplug"
  wait_file "${pre}unplugged"
  wait_log roomcast.log "$failed" 1 && U[$kind.gone]=$(since)
  wait_log roomcast.log "$failed" 2 && { U[$kind.p1]=$(packets "$sid"); U[$kind.t1]=$(since); }
  wait_log roomcast.log "$failed" "$n" && { U[$kind.p2]=$(packets "$sid"); U[$kind.t2]=$(since); }
  touch "$W/share/${pre}replug"; U[$kind.replug]=$(since)
  wait_file "${pre}replugged"
  wait_log roomcast.log "\"event\":\"local_track_recovered\",\"kind\":\"$kind\"" 1 && U[$kind.back]=$(since)
  while alive && [ -n "${U[$kind.p2]:-}" ]; do
    p3=$(packets "$sid")
    [ "${p3:-0}" -gt "${U[$kind.p2]}" ] && { U[$kind.p3]=$p3 U[$kind.rtp]=$(since); break; }
    poll_events 1000
  done
}
P0= PNG2= VPUB_BEFORE= TONE2= APUB_BEFORE=
if [ -n "$VIDEO" ]; then
  phase 150
  VPUB_BEFORE=${VPUB[lab-board]:-0}
  P0=$(packets "$VIDEO")
  unplug_replug video "$VIDEO" "" 5
  PNG2=$(picture "$VIDEO" vivid-replugged)
fi
if [ -n "$AUDIO" ]; then
  phase 150
  APUB_BEFORE=${APUB[lab-board]:-0}
  unplug_replug audio "$AUDIO" mic- 4
  # The analysis reads the newest 1.4 s: once 2 s have come since the return, all of it is the new tone.
  while alive && [ -n "${U[audio.p3]:-}" ]; do
    [ "$(packets "$AUDIO")" -gt $(( ${U[audio.p3]} + 100 )) ] && { TONE2=$(curl -s --max-time 30 -X POST "$API/admin/tracks/$AUDIO/audio"); break; }
    poll_events 1000
  done
fi

# ---- phases 3 and 4: roomcast started again by the VM for each (the file NEXT), video only: wait for IDENTITY's
# video RTP and its picture (W/NAME.png). Sets RUN_SID and RUN_PNG.
next_run() { # NEXT IDENTITY NAME
  phase 300
  touch "$W/share/$1"
  RUN_SID= RUN_PNG=
  while alive && [ -z "$RUN_SID" ]; do poll_events 5000; RUN_SID=$(flowing "$2" video); done
  [ -n "$RUN_SID" ] && RUN_PNG=$(picture "$RUN_SID" "$3")
}
# vivid as NV12
next_run nv12 lab-board-nv12 vivid-nv12
NV12=$RUN_SID PNG3=$RUN_PNG
# vivid reloaded multi-planar only, captured as NV12 through the multi-planar API
next_run mplane lab-board-mplane vivid-mplane
MPLANE=$RUN_SID PNG4=$RUN_PNG
touch "$W/share/stop"
wait $LABPID; LABPID=

sed 's/^/# devices: /' "$W/share/devices.txt" 2>/dev/null
grep -q '/dev/video0 .*"vivid"' "$W/share/devices.txt" && grep -q "YUYV" "$W/share/devices.txt" \
  && ok "roomcast devices lists vivid with its formats" || bad "roomcast devices: no vivid camera listed"
grep -q 'hw:[0-9],1 .*Loopback' "$W/share/devices.txt" && ok "roomcast devices lists snd-aloop's capture devices" || bad "roomcast devices: no Loopback capture"
grep -q 'vicodec.*encoder, not H.264' "$W/share/devices.txt" && ok "roomcast devices finds vicodec's encoder and that it is not H.264" \
  || bad "roomcast devices: vicodec's encoder not classified"
grep -q 'gpiochip' "$W/share/devices.txt" && ok "roomcast devices lists the GPIO chips" || bad "roomcast devices: no GPIO chips"
grep -E "camera |microphone |not capturing|local_track|status: |error|WARN" "$W/share/roomcast.log" 2>/dev/null | cut -c1-300 | head -40 | sed 's/^/# roomcast: /'
if grep -q "camera /dev/video[0-9]* (vivid): YUYV 640x360 at [0-9]* fps, single-planar API" "$W/share/roomcast.log"; then
  ok "roomcast opened vivid by name as YUYV 640x360 through the single-planar API"
else bad "roomcast did not open vivid as YUYV 640x360 (single-planar API)"; fi
if grep -q "microphone plughw:Loopback,1,0: 48000 Hz, 1 channel" "$W/share/roomcast.log"; then ok "roomcast opened snd-aloop's capture side at 48 kHz mono"
else bad "roomcast did not open the microphone"; fi
grep -q "^tone: 1000.0 Hz" "$W/share/tone.log" && ok "a 1 kHz tone played into snd-aloop" || { sed 's/^/# tone: /' "$W/share/tone.log"; bad "tone player"; }
[ -n "$AUDIO" ] && ok "devroom received Opus RTP from the microphone" || bad "no audio RTP at devroom"
[ -n "$VIDEO" ] && ok "devroom received H.264 RTP from the camera" || bad "no video RTP at devroom"
echo "# rooms: $ROOMS" | cut -c1-600
bars "$PNG" YUYV
echo "# audio at the room: $TONE"
if python3 -c 'import json,sys; a=json.loads(sys.argv[1]); sys.exit(not (abs(a["frequency_hz"]-1000) <= 30 and a["rms"] > 0.05 and a["seconds"] >= 1.5))' "$TONE" 2>/dev/null; then
  ok "the room decodes the tone: $(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); print("%.1f Hz, RMS %.3f, %.2f s of Opus" % (a["frequency_hz"], a["rms"], a["seconds"]))' "$TONE")"
else bad "the room's audio is not the 1000 Hz tone (+- 3 %): ${TONE:-no answer}"; fi

echo "# hot-unplug (s since boot started): unplug asked ${U[video.asked]:-}; $(cat "$W/share/unplugged" 2>/dev/null)"
echo "#   video failed reported ${U[video.gone]:-}; packets $P0 before, ${U[video.p1]:-} at the 2nd report (${U[video.t1]:-}), ${U[video.p2]:-} at the 5th (${U[video.t2]:-})"
echo "#   replug asked ${U[video.replug]:-}; $(cat "$W/share/replugged" 2>/dev/null)"
echo "#   recovered reported ${U[video.back]:-}; new video RTP at devroom ${U[video.rtp]:-} (${U[video.p3]:-} packets)"
grep -E "local_track|status: video|camera /dev|went away|not capturing" "$W/share/roomcast.log" 2>/dev/null | sed -n '/went away\|local_track_failed/,$p' | cut -c1-240 | head -14 | sed 's/^/#   roomcast: /'
[ -n "${U[video.gone]:-}" ] && grep -q "went away\|camera unplugged" "$W/share/roomcast.log" \
  && ok "unplugged: roomcast reports the video track failed (event) and says the camera went away" \
  || bad "unplugged: no local_track_failed for video naming the vanished camera"
grep -q "status: video track failed" "$W/share/roomcast.log" && ok "unplugged: the status line (STATUS=) names the failed video track" \
  || bad "unplugged: no status line for the failed video track"
[ -n "${U[video.p1]:-}" ] && [ "${U[video.p1]:-}" = "${U[video.p2]:-}" ] && ok "unplugged: no video RTP reaches the room while the camera is gone (${U[video.p1]:-} packets for ${U[video.t1]:-}-${U[video.t2]:-} s)" \
  || bad "unplugged: video packets while the camera was gone: ${U[video.p1]:-?} -> ${U[video.p2]:-?}"
[ "$(count roomcast.log "$FAILED")" -ge 5 ] && grep -q '"event":"local_track_failed","kind":"video","error":"[^}]*vivid' "$W/share/roomcast.log" \
  && ok "unplugged: roomcast keeps looking for the camera by its name (vivid) with backoff" \
  || bad "unplugged: no reopen attempts by name"
[ -n "${U[video.back]:-}" ] && ok "replugged: roomcast reports the video track recovered (local_track_recovered)" || bad "replugged: no local_track_recovered"
[ -n "${U[video.rtp]:-}" ] && ok "replugged: video RTP reaches the room again on the same track $VIDEO (${U[video.p2]:-} -> ${U[video.p3]:-} packets)" \
  || bad "replugged: no new video RTP on $VIDEO"
[ -n "$VPUB_BEFORE" ] && [ "${VPUB[lab-board]:-0}" = "$VPUB_BEFORE" ] && ok "replugged: the video track was not republished (one publication, same sid)" \
  || bad "replugged: the video track was republished (${VPUB[lab-board]:-0} publications)"
bars "$PNG2" "after the camera came back"

echo "# microphone unplug (s since boot started): asked ${U[audio.asked]:-}; $(cat "$W/share/mic-unplugged" 2>/dev/null)"
echo "#   audio failed reported ${U[audio.gone]:-}; packets ${U[audio.p1]:-} at the 2nd report (${U[audio.t1]:-}), ${U[audio.p2]:-} at the 4th (${U[audio.t2]:-})"
echo "#   replug asked ${U[audio.replug]:-}; $(cat "$W/share/mic-replugged" 2>/dev/null)"
echo "#   recovered reported ${U[audio.back]:-}; new audio RTP at devroom ${U[audio.rtp]:-} (${U[audio.p3]:-} packets); then $TONE2"
grep -E '"kind":"audio"|status: audio|microphone ' "$W/share/roomcast.log" 2>/dev/null | grep -v local_track_published | cut -c1-220 | head -8 | sed 's/^/#   roomcast: /'
[ -n "${U[audio.gone]:-}" ] && ok "microphone unplugged: roomcast reports the audio track failed" || bad "microphone unplugged: no local_track_failed for audio"
[ -n "${U[audio.p1]:-}" ] && [ "${U[audio.p1]:-}" = "${U[audio.p2]:-}" ] && ok "microphone unplugged: no audio RTP reaches the room while it is gone (${U[audio.p1]:-} packets for ${U[audio.t1]:-}-${U[audio.t2]:-} s)" \
  || bad "microphone unplugged: audio packets while it was gone: ${U[audio.p1]:-?} -> ${U[audio.p2]:-?}"
[ -n "${U[audio.back]:-}" ] && [ -n "${U[audio.rtp]:-}" ] && ok "microphone replugged: recovered, audio RTP on the same track $AUDIO again (${U[audio.p2]:-} -> ${U[audio.p3]:-} packets)" \
  || bad "microphone replugged: no recovery or no new audio RTP on $AUDIO"
[ -n "$APUB_BEFORE" ] && [ "${APUB[lab-board]:-0}" = "$APUB_BEFORE" ] && ok "microphone replugged: the audio track was not republished" \
  || bad "microphone replugged: the audio track was republished (${APUB[lab-board]:-0} publications)"
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); sys.exit(not abs(a["frequency_hz"]-1000) <= 30)' "$TONE2" 2>/dev/null \
  && ok "microphone replugged: the room hears the tone again ($(python3 -c 'import json,sys; print("%.1f Hz" % json.loads(sys.argv[1])["frequency_hz"])' "$TONE2"))" \
  || bad "microphone replugged: the room's audio is not the tone: ${TONE2:-no answer}"

grep -E "camera |error|WARN" "$W/share/roomcast-nv12.log" 2>/dev/null | cut -c1-300 | head -10 | sed 's/^/# roomcast nv12: /'
if grep -q "camera /dev/video[0-9]* (vivid): NV12 640x360" "$W/share/roomcast-nv12.log"; then ok "with [video] format = \"nv12\", roomcast opened vivid as NV12 640x360"
else bad "roomcast did not open vivid as NV12 640x360"; fi
[ -n "$NV12" ] && ok "devroom received H.264 RTP from the NV12 camera" || bad "no video RTP from the NV12 run"
bars "$PNG3" NV12

VIVID_MP=$(sed -n '/"vivid"/,/encoder = "auto" uses/p' "$W/share/devices-mplane.txt" 2>/dev/null)
echo "$VIVID_MP" | grep -E 'vivid|NV12|NM12|auto' | sed 's/^/# devices (vivid multi-planar): /'
[ "$(cat "$W/share/reload.rc" 2>/dev/null)" = 0 ] && ok "vivid reloaded with multiplanar=2" || bad "reloading vivid with multiplanar=2 failed"
# NM12 (NV12 in two memory planes) is offered only on the multi-planar queue: listed means it was enumerated there.
echo "$VIVID_MP" | grep -q '"vivid" .* multi-planar API' && echo "$VIVID_MP" | grep -q '^ *NM12 (.*to the H.264 encoder' \
  && echo "$VIVID_MP" | grep -q '^ *NV12 (' && ok "roomcast devices lists the multi-planar vivid with its multi-planar formats (NV12, NM12)" \
  || bad "roomcast devices: the multi-planar vivid's formats are not listed"
grep -E "camera |error|WARN" "$W/share/roomcast-mplane.log" 2>/dev/null | cut -c1-300 | head -10 | sed 's/^/# roomcast mplane: /'
if grep -q "camera /dev/video[0-9]* (vivid): NV12 640x360 at [0-9]* fps, multi-planar API" "$W/share/roomcast-mplane.log"; then
  ok "roomcast opened the multi-planar vivid as NV12 640x360 through the multi-planar API"
else bad "roomcast did not open the multi-planar vivid as NV12 640x360 (multi-planar API)"; fi
[ -n "$MPLANE" ] && ok "devroom received H.264 RTP from the multi-planar camera" || bad "no video RTP from the multi-planar run"
bars "$PNG4" "NV12 through the multi-planar API"
[ -n "${KEEP:-}" ] && echo "# pictures: $W/*.png"
lab_finish "LAB-|ROOMCAST-EXIT|DEVICES-RC" roomcast.log:25:roomcast "roomcast-nv12.log:10:roomcast nv12" \
  "roomcast-mplane.log:10:roomcast mplane"
