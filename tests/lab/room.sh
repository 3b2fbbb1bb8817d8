# The host side of the lab tests whose VM talks to devroom on the host over a tap device (board-test.sh, media-test.sh,
# passthrough-test.sh, speaker-test.sh). Source it after `set -uo pipefail` with HERE (tests/lab) and ROOT (the repository) set.
#   lab_begin NAME "$@"   the test's arguments, --board BIN [--host DEVROOM_BIN] [--venv DIR] (BOARD, HOST, and VENV:
#                     the Python SDK's venv, default ROOMCAST_VENV or .peers/venv); the test runs again
#                     in a network namespace of its own, then: ok/bad/finish count the checks and print "NAME: N passed,
#                     N failed"; W is the work directory (W/share is the VM's /mnt/host), removed on exit unless KEEP
#                     is set; labprobe is built into W/share (or taken from the lab's cache); host processes the
#                     test starts itself go in LAB_EXTRA_PIDS to be killed on exit
#   lab_room          the tap device rclab0 (198.51.100.1) and devroom on it (API, DEVPID)
#   lab_boot TIMEOUT SCRIPT [lab.sh options]   boots the VM on rclab0 (198.51.100.2) running SCRIPT, in the
#                     background (LABPID); the whole run's deadline (DEADLINE) is TIMEOUT - 60 s from now
# and the helpers below: devroom's events, RTP, pictures; roomcast's log in W/share.
lab_begin() {
  LAB_NAME=$1
  shift
  BOARD= HOST= VENV=${ROOMCAST_VENV:-$ROOT/.peers/venv}
  while [ $# -gt 0 ]; do
    case "$1" in
      --board) BOARD=$(realpath "$2"); shift 2;;
      --host) HOST=$(realpath "$2"); shift 2;;
      --venv) VENV=$(realpath -m "$2"); shift 2;;
      *) echo "$LAB_NAME: unknown argument $1" >&2; exit 2;;
    esac
  done
  [ -x "$BOARD" ] || { echo "$LAB_NAME: need --board BIN" >&2; exit 2; }
  . "$ROOT/tests/lib/devroom.sh"
  HOST=${HOST:-$(devroom_bin)}
  [ -x "$HOST" ] || { echo "$LAB_NAME: no devroom binary at $HOST (cargo build --workspace)" >&2; exit 2; }
  if [ -z "${ROOMCAST_IN_NETNS:-}${ROOMCAST_LAB_NETNS:-}" ]; then
    exec unshare -n env ROOMCAST_LAB_NETNS=1 "$0" --board "$BOARD" --host "$HOST" --venv "$VENV"
  fi
  ip link set lo up
  PASS=0 FAIL=0
  W=$(mktemp -d "/tmp/roomcast-$LAB_NAME.XXXXXX")
  DEVPID= LABPID= LAB_EXTRA_PIDS=
  trap lab_cleanup EXIT
  lab_labprobe
}
# labprobe into W/share: the lab's copy, or built here when tests/lab/labprobe.c is newer.
lab_labprobe() {
  mkdir -p "$W/share"
  local probe=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}/bin/labprobe.arm64
  if command -v aarch64-linux-gnu-gcc >/dev/null; then
    aarch64-linux-gnu-gcc -O2 -static -o "$W/share/labprobe" "$HERE/labprobe.c" -lm || { bad "build labprobe"; finish; }
  else
    cp "$probe" "$W/share/labprobe" || { bad "no labprobe (run tests/lab/setup.sh)"; finish; }
  fi
}
# A static alsa-lib reads its configuration (what "hw", "plughw" and "default" mean) at run time from
# /usr/share/alsa, as on a board; the lab's initramfs has none, so the host's goes in (W/share/alsa-conf; the VM
# script copies it to /usr/share/alsa).
lab_alsa_conf() {
  [ -e /usr/share/alsa/alsa.conf ] || { bad "/usr/share/alsa/alsa.conf missing on the host (apt-get install libasound2-data)"; finish; }
  cp -r /usr/share/alsa "$W/share/alsa-conf"
}
ok()  { PASS=$((PASS + 1)); echo "ok - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
finish() { echo "$LAB_NAME: $PASS passed, $FAIL failed"; [ "$FAIL" = 0 ]; exit $?; }
# finish, after showing on a failure the VM's console lines matching PATTERN and the last N lines of each LOG in
# W/share, prefixed with LABEL.
lab_finish() { # PATTERN [LOG:N:LABEL ...]
  local spec log n label
  if [ "$FAIL" != 0 ]; then
    grep -E "$1" "$W/vm.log" | sed 's/^/# vm: /'
    shift
    for spec in "$@"; do
      IFS=: read -r log n label <<<"$spec"
      tail -"$n" "$W/share/$log" 2>/dev/null | sed "s/^/# $label: /"
    done
  fi
  finish
}
lab_cleanup() { for p in $DEVPID $LABPID $LAB_EXTRA_PIDS; do kill "$p" 2>/dev/null; done; ip link del rclab0 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }

lab_room() {
  ip tuntap add dev rclab0 mode tap && ip addr add 198.51.100.1/24 dev rclab0 && ip link set rclab0 up \
    || { bad "tap device rclab0 (needs root)"; finish; }
  DEVROOM_BIN=$HOST devroom_start "$W" --listen 198.51.100.1:7880 --keys devkey:secret --media-ip 198.51.100.1 --frame-dir "$W/frames" \
    || { bad "devroom start"; finish; }
  DEVPID=$DEVROOM_PID
  API=http://198.51.100.1:7880
}

lab_boot() { # TIMEOUT SCRIPT [lab.sh options]
  "$HERE/lab.sh" --arch arm64 -t "$1" -s "$W/share" --tap rclab0:198.51.100.2/24 --log "$W/vm.log" "${@:3}" "$2" >/dev/null 2>&1 &
  LABPID=$!
  T0=$(date +%s.%N)
  DEADLINE=$(( $(date +%s) + $1 - 60 ))
}
since() { echo "$(date +%s.%N) - $T0" | bc | cut -c1-6; }
# Whether the VM still runs and neither the whole run's deadline nor the phase's ($PHASE_END) has passed: a phase
# that fails still leaves the later ones their time.
alive() { local t; t=$(date +%s); [ "$t" -lt $DEADLINE ] && [ "$t" -lt "${PHASE_END:-$DEADLINE}" ] && kill -0 $LABPID 2>/dev/null; }
phase() { PHASE_END=$(( $(date +%s) + $1 )); }

# devroom's events (its long-poll API) after $AFTER, waiting up to $1 ms for one; records the published
# tracks (KIND, OWNER by sid), which have RTP (FIRST) and how often each identity published video and audio
# (VPUB, APUB).
AFTER=0
declare -A KIND FIRST OWNER VPUB APUB
poll_events() {
  local ev seq type tsid kind identity
  ev=$(curl -s --max-time 70 "$API/admin/events?after=$AFTER&wait_ms=$1") || return 0
  while IFS=$'\t' read -r seq type tsid kind identity; do
    [ -n "$seq" ] || continue
    AFTER=$seq
    case $type in
      track_published) KIND[$tsid]=$kind OWNER[$tsid]=$identity
        case $kind in
          video) VPUB[$identity]=$(( ${VPUB[$identity]:-0} + 1 ));;
          audio) APUB[$identity]=$(( ${APUB[$identity]:-0} + 1 ));;
        esac;;
      first_rtp) FIRST[$tsid]=1;;
    esac
  done < <(python3 -c 'import json,sys
for e in json.load(sys.stdin).get("events",[]): print("\t".join(str(e.get(k,"")) for k in ("seq","type","track_sid","kind","identity")))' <<<"$ev")
}
# The sid of IDENTITY's KIND track once it has RTP, else empty.
flowing() {
  local sid
  for sid in "${!FIRST[@]}"; do
    [ "${KIND[$sid]:-}" = "$2" ] && [ "${OWNER[$sid]:-}" = "$1" ] && { echo "$sid"; return; }
  done
}
# What devroom counted on track SID: FIELD is packets, frames, keyframes or bytes (see /admin/rooms).
track_stat() { # SID FIELD
  curl -s --max-time 5 "$API/admin/rooms" | python3 -c 'import json,sys
sid, field = sys.argv[1:3]
print(sum(t[field] for r in json.load(sys.stdin)["rooms"] for p in r["participants"] for t in p["tracks"] if t["sid"]==sid))' "$1" "$2"
}
# RTP packets devroom counted on track SID.
packets() { track_stat "$1" packets; }
# The newest picture of video track SID as a PNG path (copied to W/NAME.png), asking until one decodes (a picture
# needs a keyframe and the frames after it, as for a viewer); empty when none did before the deadline.
picture() { # SID NAME
  local r png
  while alive; do
    r=$(curl -s --max-time 60 -X POST "$API/admin/tracks/$1/png")
    png=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("path",""))' "$r" 2>/dev/null)
    [ -n "$png" ] && [ -s "$png" ] && { cp "$png" "$W/$2.png"; echo "$W/$2.png"; return; }
    poll_events 3000   # the next packets come in the meantime (event-driven, no fixed sleep)
  done
}
# How many lines of roomcast's log (in the shared directory) match PATTERN.
count() { local n; n=$(grep -c -- "$2" "$W/share/$1" 2>/dev/null); echo "${n:-0}"; }
# Wait until roomcast's log LOG has at least N lines matching PATTERN (the VM writes it through 9p).
wait_log() { # LOG PATTERN N
  while alive; do [ "$(count "$1" "$2")" -ge "$3" ] && return 0; sleep 0.2; done; return 1
}
wait_file() { while alive; do [ -e "$W/share/$1" ] && return 0; sleep 0.2; done; return 1; }
