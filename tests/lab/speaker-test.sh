#!/usr/bin/env bash
# The speaker on a real ALSA device in the qemu arm64 lab, with the static aarch64 board binary:
#   tests/lab/speaker-test.sh --board BIN [--host DEVROOM_BIN] [--venv DIR]
# devroom runs on the host over a tap device (rclab0, 198.51.100.1, as in media-test.sh). In the VM, roomcast runs
# with no camera and no microphone ([video] and [audio] device = "none") and [speaker] device =
# "plughw:Loopback,0,0": snd-aloop's playback side, subdevice 0. Once roomcast has joined, the official LiveKit
# Python SDK (tests/peers/py_peer.py, from the venv) joins devroom from the host (over rclab0: libwebrtc gathers no
# candidates on a loopback interface) and publishes its 440 Hz sine (amplitude 8000). Once roomcast says it plays
# that track, the VM records 3 s from snd-aloop's capture side, subdevice 0 (hw:Loopback,1,0, which gives what
# Loopback,0,0 plays) with labprobe, and the host analyses the PCM: dominant frequency (FFT and zero crossings)
# 440 Hz +- 3 %, sound in >= 95 % of the 20 ms blocks, RMS of a sine of that amplitude. roomcast's log must show the
# speaker opened at 48 kHz mono and no underrun storm on the device; when the talker leaves, the speaker lets go
# of its track.
# Before the talker joins, 1 s from the capture side must be silence (the speaker is open and plays the silent mix).
# The host drives the VM through files in the shared directory (quiet, tone: recordings of that many seconds; stop).
# Prints "lab-speaker: N passed, N failed"; exit 0 only if nothing failed. Needs root (tap device, network namespace).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/room.sh"
lab_begin lab-speaker "$@"
TALKPID=
PY=$VENV/bin/python
"$PY" -c 'import livekit, numpy' 2>/dev/null || { bad "no Python SDK venv at $VENV (tests/peers/setup.sh, or ROOMCAST_VENV)"; finish; }
cp "$BOARD" "$W/share/roomcast"
lab_alsa_conf
lab_room
cat > "$W/share/lab.toml" <<X
url = "ws://198.51.100.1:7880"
token = "$(DEVROOM_BIN=$HOST devroom_token lab-board lab)"
[video]
device = "none"
[audio]
device = "none"
[speaker]
device = "plughw:Loopback,0,0"
X
cat > "$W/share/run.sh" <<'X'
#!/bin/sh
cd /mnt/host
mkdir -p /usr/share && cp -r alsa-conf /usr/share/alsa
RUST_LOG=info,roomcast=debug ./roomcast run --config lab.toml > roomcast.log 2>&1 &
pid=$!
wait_for() { while [ ! -e "$1" ] && [ ! -e stop ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done; [ -e "$1" ]; }
# Each recording is asked for by the host (the file NAME) and answered with NAME.done.
for take in quiet tone; do
  wait_for $take || break
  ./labprobe record $(cat $take) $take.raw > $take.log 2>&1; echo "RECORD-RC $?" >> $take.log
  touch $take.done
done
wait_for stop
kill $pid 2>/dev/null
wait $pid
echo "ROOMCAST-EXIT $?"
[ -e stop ]
X
chmod +x "$W/share/run.sh"
"$HERE/lab.sh" --arch arm64 -t 420 -s "$W/share" --tap rclab0:198.51.100.2/24 --log "$W/vm.log" "$W/share/run.sh" >/dev/null 2>&1 &
LABPID=$!
DEADLINE=$(( $(date +%s) + 380 ))
alive() { [ "$(date +%s)" -lt $DEADLINE ] && kill -0 $LABPID 2>/dev/null; }
count() { local n; n=$(grep -c -- "$2" "$1" 2>/dev/null); echo "${n:-0}"; }
# Wait until FILE has a line matching PATTERN (roomcast's log comes through 9p, the talker's from its pipe).
wait_line() { while alive; do [ "$(count "$1" "$2")" -ge 1 ] && return 0; sleep 0.2; done; return 1; }
# devroom's events after $AFTER (its long-poll API, up to 5 s a call): whether roomcast (lab-board) joined.
AFTER=0 JOINED=
while alive && [ -z "$JOINED" ]; do
  EV=$(curl -s --max-time 70 "$API/admin/events?after=$AFTER&wait_ms=5000") || continue
  read -r AFTER JOINED < <(python3 -c 'import json,sys
ev=json.loads(sys.argv[2] or "{}").get("events",[])
joined=any(e.get("type")=="participant_joined" and e.get("identity")=="lab-board" for e in ev)
print(max([int(sys.argv[1])]+[e["seq"] for e in ev]), "yes" if joined else "")' "$AFTER" "$EV" 2>/dev/null || echo "$AFTER")
done
[ -n "$JOINED" ] && ok "roomcast (no camera, no microphone, a speaker) joined devroom from the VM" || bad "roomcast did not join devroom"

# Before anyone talks, the speaker is open and plays silence: 1 s from the capture side must be quiet.
# take NAME SECONDS: ask the VM for a recording and wait for it.
take() { echo "$2" > "$W/share/$1.tmp"; mv "$W/share/$1.tmp" "$W/share/$1"; while alive && [ ! -e "$W/share/$1.done" ]; do sleep 0.2; done; [ -e "$W/share/$1.done" ]; }
QUIET=
[ -n "$JOINED" ] && wait_line "$W/share/roomcast.log" "speaker plughw:Loopback,0,0: playing subscribed remote audio" && take quiet 1 && QUIET=1

# The talker: the official Python SDK, publishing its 440 Hz sine until it is stopped.
TALK=$W/talker.jsonl
if [ -n "$JOINED" ]; then
  "$PY" "$ROOT/tests/peers/py_peer.py" --url ws://198.51.100.1:7880 --identity talker --room lab \
    --publish audio --hold --stay 300 > "$TALK" 2> "$W/talker.log" &
  TALKPID=$! LAB_EXTRA_PIDS=$!
fi
wait_line "$TALK" '"event": "published".*"kind": "audio"'
SID=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e.get("event")=="published" and e.get("kind")=="audio": print(e["track_sid"]); break' "$TALK" 2>/dev/null)
[ -n "$SID" ] && ok "the Python SDK published its 440 Hz tone (track $SID)" || bad "the Python SDK published no audio track"
RECORDED=
if [ -n "$SID" ] && wait_line "$W/share/roomcast.log" "speaker: playing remote audio track $SID"; then
  ok "roomcast plays the talker's track on the speaker"
  take tone 3 && RECORDED=1
else
  bad "roomcast never played the talker's track"
fi
# The talker leaves: the speaker lets go of its track at once.
GONE=
if [ -n "$TALKPID" ]; then
  kill "$TALKPID" 2>/dev/null; wait "$TALKPID"; TALKPID= LAB_EXTRA_PIDS=
  [ -n "$SID" ] && wait_line "$W/share/roomcast.log" "speaker: remote audio track $SID ended" && GONE=1
fi
touch "$W/share/stop"
wait $LABPID; LABPID=

sed 's/^/# record: /' "$W/share/quiet.log" "$W/share/tone.log" 2>/dev/null
grep -E "speaker|WARN|ERROR" "$W/share/roomcast.log" 2>/dev/null | cut -c1-300 | head -20 | sed 's/^/# roomcast: /'
if grep -q "speaker plughw:Loopback,0,0: 48000 Hz, 1 channel" "$W/share/roomcast.log"; then
  ok "roomcast opened snd-aloop's playback side as its speaker at 48 kHz mono"
else bad "roomcast did not open the speaker plughw:Loopback,0,0"; fi
# The device's underruns are logged for the first three and every hundredth.
XRUNS=$(sed -n 's/.*\[speaker\].*underrun (\([0-9]*\) so far).*/\1/p' "$W/share/roomcast.log" 2>/dev/null | tail -1)
[ "${XRUNS:-0}" -lt 100 ] && ok "no underrun storm on the speaker (${XRUNS:-0} underrun(s) logged)" \
  || bad "underrun storm on the speaker: $XRUNS underruns"
# analyse RAW: the recording's dominant frequency (FFT, zero crossings), its 20 ms blocks with sound and RMS, on one
# line; exit 0 when it is the 440 Hz sine (+- 3 %) throughout, or with --quiet when it is silence.
analyse() {
  "$PY" - "$@" <<'PYX'
import sys
import numpy as np
RATE, BLOCK, TONE = 48000, 960, 440.0
pcm = np.frombuffer(open(sys.argv[1], "rb").read(), dtype="<i2").astype(np.float64)
x = pcm[5 * BLOCK:]  # the first 100 ms: the capture's start
n = len(x) // BLOCK
rms = np.sqrt(np.mean(x[: n * BLOCK].reshape(n, BLOCK) ** 2, axis=1))
spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
spectrum[0] = 0
fft_hz = float(np.argmax(spectrum)) * RATE / len(x)
signs = np.signbit(x)
zc_hz = float(np.count_nonzero(signs[1:] != signs[:-1])) / 2 / (len(x) / RATE)
sounding = float(np.mean(rms > 500))
level = float(np.sqrt(np.mean(x ** 2)))
print(f"dominant {fft_hz:.1f} Hz (FFT), {zc_hz:.1f} Hz (zero crossings), {sounding:.0%} of {n} 20 ms blocks with sound, "
      f"RMS {level:.0f}, {len(pcm) / RATE:.2f} s recorded")
if sys.argv[2:] == ["--quiet"]:
    sys.exit(not (level < 50 and sounding == 0))
sys.exit(not (abs(fft_hz - TONE) <= 0.03 * TONE and abs(zc_hz - TONE) <= 0.03 * TONE and sounding >= 0.95 and 2000 <= level <= 12000))
PYX
}
if [ -n "$QUIET" ] && grep -q "RECORD-RC 0" "$W/share/quiet.log" && RESULT=$(analyse "$W/share/quiet.raw" --quiet); then
  ok "before anyone talks, the capture side is silent: $RESULT"
else bad "the capture side before the talker: ${RESULT:-no recording}"; fi
RESULT=
if [ -n "$RECORDED" ] && grep -q "RECORD-RC 0" "$W/share/tone.log"; then
  ok "labprobe recorded 3 s from snd-aloop's capture side (hw:Loopback,1,0)"
  if RESULT=$(analyse "$W/share/tone.raw"); then ok "the capture side carries the talker's tone: $RESULT"
  else bad "the capture side is not the 440 Hz tone (+- 3 %) with sound: ${RESULT:-no analysis}"; fi
else
  bad "no recording from the capture side"
fi
[ -n "$GONE" ] && ok "the talker left and the speaker let go of its track: $(grep -o "speaker: remote audio track $SID ended.*" "$W/share/roomcast.log" | head -1 | cut -c1-220)" \
  || bad "the speaker did not let go of the talker's track when it left"
if [ "$FAIL" != 0 ]; then
  grep -E "LAB-|ROOMCAST-EXIT" "$W/vm.log" | sed 's/^/# vm: /'
  tail -25 "$W/share/roomcast.log" 2>/dev/null | sed 's/^/# roomcast: /'
  tail -10 "$TALK" "$W/talker.log" 2>/dev/null | cut -c1-300 | sed 's/^/# talker: /'
fi
finish
