#!/usr/bin/env bash
# The status LED following a real connection: boot the arm64 Debian kernel in qemu (TCG) with its eth0 on a tap
# device (host 198.51.100.1, VM 198.51.100.2, default route via the host), create a gpio-sim chip with the named
# lines STATUS_LED and MEDIA_LED, and run the static aarch64 `roomcast run` there with `[leds]` on them,
# publishing synthetic media (test-pattern + tone) to devroom on the host. The host drives the phases and, once
# roomcast says it is in the phase's state (its `status: …` log lines, read from the shared dir as they are
# written), asks the VM for a sampling window: both lines are sampled every 1 ms through gpio-sim's sysfs
# (tests/lab/linesample.c) and each pattern's period, duty cycle and step lengths are checked on the host within
# the tolerances of tests/lab/led-test.sh. The phases:
#   1a. connecting: devroom is not started yet, every join attempt is refused -> slow blink [500, 500], media off
#   1b. devroom started -> publishing: solid, media LED on
#   2.  cut off: nftables drops everything on the host's tap -> reconnecting: fast blink [100, 100], media off
#   3.  the rules removed -> publishing again: solid, media on
#   4.  roomcast restarted with a token signed with a wrong secret -> devroom answers 401 -> needs attention:
#       double blink [150, 150, 150, 1050], media off
#   and after SIGTERM both lines are low.
#   tests/lab/led-states-test.sh --board BIN --host DEVROOM_BIN [--keep DIR]
# Needs root (tap device, nftables): runs in its own network namespace unless the caller made one (tests/netns.sh
# sets ROOMCAST_IN_NETNS=1). Prints one "# phase …" line per phase with the measured period and duty cycle, and
# "lab-led-states: N passed, N failed"; exit 0 only if nothing failed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BOARD= HOST= KEEP=
while [ $# -gt 0 ]; do
  case "$1" in
    --board) BOARD=$(realpath "$2"); shift 2;;
    --host) HOST=$(realpath "$2"); shift 2;;
    --keep) KEEP=$(realpath -m "$2"); shift 2;;
    *) echo "led-states-test.sh: unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BOARD" ] || { echo "led-states-test.sh: need --board BIN (scripts/build-static.sh)" >&2; exit 2; }
[ -x "$HOST" ] || { echo "led-states-test.sh: need --host BIN (the host's devroom binary)" >&2; exit 2; }
# The tap device, its 198.51.100.0/24 addresses and the nftables rules stay out of the host's own namespace.
if [ -z "${ROOMCAST_IN_NETNS:-}${ROOMCAST_LAB_NETNS:-}" ]; then
  exec unshare -n env ROOMCAST_LAB_NETNS=1 "$0" --board "$BOARD" --host "$HOST" ${KEEP:+--keep "$KEEP"}
fi
ip link set lo up
TAP=rclab0
W=$(mktemp -d /tmp/roomcast-ledstates.XXXXXX)
S=$W/share
mkdir -p "$S"
DEVPID= LABPID=
cleanup() {
  for p in $DEVPID $LABPID; do kill "$p" 2>/dev/null; done
  [ -n "$LABPID" ] && wait "$LABPID" 2>/dev/null
  nft delete table inet rcledcut 2>/dev/null
  ip link del $TAP 2>/dev/null
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -a "$W"/. "$KEEP"/; fi
  rm -rf "$W"
}
trap cleanup EXIT
fail_early() { echo "not ok - $*"; echo "lab-led-states: 0 passed, 1 failed"; exit 1; }

cp "$BOARD" "$S/roomcast"
CC=${CC_AARCH64:-aarch64-linux-gnu-gcc}
"$CC" -O2 -static -o "$S/linesample" "$HERE/linesample.c" 2>"$W/cc.log" \
  || { cat "$W/cc.log"; fail_early "build the sampler ($CC; scripts/install-cross-tools.sh --lab installs it)"; }
command -v nft >/dev/null || fail_early "nft missing (scripts/install-deps.sh installs nftables)"
. "$ROOT/tests/lib/devroom.sh"
# Token auth: room and identity travel in the token. The bad one is signed with a secret devroom does not have.
GOOD=$(DEVROOM_BIN=$HOST devroom_token lab-board lab) || fail_early "mint a token"
BAD=$(DEVROOM_BIN=$HOST devroom_token lab-board lab --secret not-the-secret) || fail_early "mint a token"
for c in good bad; do
  if [ $c = good ]; then t=$GOOD; else t=$BAD; fi
  cat > "$S/$c.toml" <<X
url = "ws://198.51.100.1:7880"
token = "$t"
[video]
device = "test-pattern"
width = 320
height = 240
fps = 10
[audio]
device = "tone"
[leds]
status = "STATUS_LED"
media = "MEDIA_LED"
X
done

# Inside the VM (busybox): set up the chip, start roomcast, then carry out the host's commands (cmd.1, cmd.2, …,
# each written whole by a rename) and report on vm.events.
cat > "$S/states.sh" <<'X'
#!/bin/sh
cd /mnt/host
say() { echo "$*" >> vm.events; echo "LEDSTATES $*"; }
G=/sys/kernel/config/gpio-sim
[ -d $G ] || { say "FAILED no gpio-sim in configfs"; exit 20; }
mkdir $G/leds $G/leds/bank0 || exit 21
echo 8 > $G/leds/bank0/num_lines
echo roomcast-leds > $G/leds/bank0/label
mkdir $G/leds/bank0/line2 && echo STATUS_LED > $G/leds/bank0/line2/name
mkdir $G/leds/bank0/line5 && echo MEDIA_LED > $G/leds/bank0/line5/name
echo 1 > $G/leds/live || { say "FAILED gpio-sim live"; exit 22; }
DEV=$(cat $G/leds/dev_name); CHIP=$(cat $G/leds/bank0/chip_name)
V=/sys/devices/platform/$DEV/$CHIP
# binaries in the VM's tmpfs: no 9p page-in delays while measuring
cp roomcast linesample /tmp/
say "CHIP $DEV $CHIP route=$(ip route | grep '^default' | tr -s ' ')"
start() {
  RUST_LOG=info /tmp/roomcast run --config "$2" > "$1.out" 2> "$1.err" &
  PID=$!
  say "STARTED $1 pid=$PID"
}
start rc1 good.toml
n=1
while :; do
  # the host's next command (a 9p file: polled)
  while [ ! -e cmd.$n ]; do sleep 0.05; done
  set -- $(cat cmd.$n)
  case $1 in
    sample)   # sample NAME SECONDS: both lines for SECONDS
      /tmp/linesample $V/sim_gpio2/value $3 1000 > /tmp/$2.status & a=$!
      /tmp/linesample $V/sim_gpio5/value $3 1000 > /tmp/$2.media & b=$!
      wait $a $b
      kill -0 $PID 2>/dev/null && alive=yes || alive=no
      cp /tmp/$2.status /tmp/$2.media .
      say "SAMPLED $2 roomcast-running=$alive";;
    restart)  # restart NAME CONFIG
      kill $PID; wait $PID; say "EXITED rc=$?"
      start $2 $3;;
    quit)
      kill $PID; wait $PID; rc=$?
      say "STOPPED rc=$rc status=$(cat $V/sim_gpio2/value) media=$(cat $V/sim_gpio5/value)"
      grep -E "STATUS_LED|MEDIA_LED" /sys/kernel/debug/gpio > released.txt
      break;;
  esac
  n=$((n + 1))
done
X
chmod +x "$S/states.sh"
touch "$S/vm.events"

ip tuntap add dev $TAP mode tap && ip addr add 198.51.100.1/24 dev $TAP && ip link set $TAP up \
  || fail_early "tap device $TAP (needs root)"
T0=$(date +%s.%N)
el() { echo "$(date +%s.%N) - $T0" | bc | cut -c1-5; }   # seconds since qemu start (host clock)
"$HERE/lab.sh" --arch arm64 -t 900 -s "$S" --tap "$TAP:198.51.100.2/24:198.51.100.1" --log "$W/vm.log" "$S/states.sh" \
  > /dev/null 2>&1 &
LABPID=$!

# wait_line FILE REGEX SECONDS [FROM]: the first line of FILE from line FROM (default 1) matching REGEX, as it
# is written (tail -F: inotify on the host file); prints it; non-zero after SECONDS or when the VM is gone.
wait_line() {
  local f=$1 re=$2 secs=$3 from=${4:-1} line fd pid
  exec {fd}< <(exec timeout "$secs" tail -n +"$from" -F ${LABPID:+--pid="$LABPID"} "$f" 2>/dev/null)
  pid=$!
  while IFS= read -r line <&"$fd"; do
    if [[ $line =~ $re ]]; then
      kill "$pid" 2>/dev/null; exec {fd}<&-; printf '%s\n' "$line"; return 0
    fi
  done
  exec {fd}<&-
  return 1
}
lines() { if [ -e "$1" ]; then wc -l < "$1"; else echo 0; fi; }
N=0
cmd() { N=$((N + 1)); echo "$*" > "$S/.cmd"; mv "$S/.cmd" "$S/cmd.$N"; }
PHASES=()
# sample NAME SECONDS: one window in the VM; waits for its report
sample() {
  local from
  from=$(( $(lines "$S/vm.events") + 1 ))
  cmd sample "$1" "$2"
  wait_line "$S/vm.events" "^SAMPLED $1 " $(( ${2%.*} + 60 )) "$from" > /dev/null \
    || { echo "# no sample $1 from the VM"; return 1; }
  PHASES+=("$1")
}
why() {   # what went wrong, for a phase that did not come
  echo "# $1 (at $(el) s)"
  for f in rc1.err rc2.err vm.events; do [ -e "$S/$f" ] && tail -8 "$S/$f" | sed "s|^|#   $f: |"; done
  grep -E "LAB-|LEDSTATES|panic" "$W/vm.log" | tail -5 | sed 's/^/#   vm: /'
}
STATUS_RE='status: '
run_phases() {
  wait_line "$S/vm.events" "^STARTED rc1" 300 > /dev/null || { why "the VM did not start roomcast"; return 1; }
  echo "# VM up, roomcast started at $(el) s; $(grep -m1 '^CHIP' "$S/vm.events")"
  # 1a. no devroom yet: each attempt is refused, the supervisor retries: connecting
  local line
  line=$(wait_line "$S/rc1.err" "${STATUS_RE}connecting: server unreachable" 120) || { why "no 'connecting: server unreachable' status"; return 1; }
  echo "# phase connecting: roomcast at $(el) s: ${line#*status: }" | cut -c1-220
  sample connecting 5 || return 1
  # 1b. devroom up: roomcast's next attempt joins and publishes
  DEVROOM_BIN=$HOST devroom_start "$W" --listen 198.51.100.1:7880 --keys devkey:secret --media-ip 198.51.100.1 \
    --frame-dir "$W" --ping-interval 2 --ping-timeout 6 || { why "devroom did not start"; return 1; }
  DEVPID=$DEVROOM_PID
  local t=$(el)
  wait_line "$S/rc1.err" "${STATUS_RE}publishing" 180 > /dev/null || { why "no 'publishing' status after devroom started"; return 1; }
  echo "# phase publishing: devroom started at ${t} s, roomcast publishing at $(el) s"
  sample publishing 2 || return 1
  # 2. cut off: every packet on the tap dropped in the host's namespace
  local from=$(( $(lines "$S/rc1.err") + 1 ))
  nft -f - <<'N' || { why "nft rules"; return 1; }
table inet rcledcut {
  chain cut_in { type filter hook input priority -10; policy accept; iifname "rclab0" drop; }
  chain cut_out { type filter hook output priority -10; policy accept; oifname "rclab0" drop; }
}
N
  t=$(el)
  line=$(wait_line "$S/rc1.err" "${STATUS_RE}(resuming|reconnecting)" 120 "$from") || { why "no 'resuming'/'reconnecting' status after the cut"; return 1; }
  echo "# phase reconnecting: cut at ${t} s, roomcast noticed at $(el) s: ${line#*status: }" | cut -c1-220
  sample reconnecting 3 || return 1
  # 3. the link back
  from=$(( $(lines "$S/rc1.err") + 1 ))
  nft delete table inet rcledcut || { why "nft delete"; return 1; }
  t=$(el)
  wait_line "$S/rc1.err" "${STATUS_RE}publishing" 120 "$from" > /dev/null || { why "no 'publishing' status after the link came back"; return 1; }
  echo "# phase recovered: link back at ${t} s, publishing again at $(el) s"
  sample recovered 2 || return 1
  # 4. a token signed with the wrong secret: devroom answers 401
  cmd restart rc2 bad.toml
  line=$(wait_line "$S/rc2.err" "${STATUS_RE}token rejected" 120) || { why "no 'token rejected' status"; return 1; }
  echo "# phase refused: ${line#*status: }" | cut -c1-220
  sample refused 7 || return 1
  cmd quit
  wait_line "$S/vm.events" "^STOPPED" 60 > /dev/null || { why "roomcast did not stop"; return 1; }
}
run_phases; RUNRC=$?
if [ "$RUNRC" != 0 ]; then
  # let the VM stop roomcast and power off; a VM that no longer answers is killed
  cmd quit
  wait_line "$S/vm.events" "^STOPPED" 60 > /dev/null || kill "$LABPID" 2>/dev/null
fi
EVENTS=$(curl -s --max-time 5 "http://198.51.100.1:7880/admin/events?after=0&wait_ms=0" 2>/dev/null)
printf '%s' "$EVENTS" > "$W/devroom-events.json"
wait $LABPID; VMRC=$?; LABPID=
echo "# VM: rc=$VMRC, $(el) s wall; $(grep -o 'LAB-READY uptime=[0-9.]*' "$W/vm.log")"
grep -E "LEDSTATES|LAB-WARN" "$W/vm.log" | sed 's/^/# /'
PYTHONPATH="$HERE" python3 - "$S" "$VMRC" "$RUNRC" "$W/devroom-events.json" "${PHASES[@]}" <<'X'
import json, sys
from ledcheck import Checks
S, vmrc, runrc, evfile, phases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
c = Checks(S)
ok, read, edges = c.ok, c.read, c.edges

ok(runrc == 0, "every phase reached (connecting, publishing, cut off, recovered, refused) and sampled")
ok(vmrc == 0, f"the VM script ended cleanly (exit status {vmrc})")

def media(run, on):
    start, ev, end, _ = edges(run + ".media")
    ok(start == (1 if on else 0) and ev == [] and end is not None and end[1] == start,
       f"{run}: media LED {'on' if on else 'off'} throughout the window (start {start}, edges {[e[:2] for e in ev]})")

def blink(run, what, steps_ms):
    """The window lies inside one state: every segment between two edges is one whole step."""
    c.blink(run, f"phase {run}: {what}", steps_ms)

def solid(run, what):
    start, ev, end, gap = edges(run + ".status")
    if not ok(start is not None and end is not None, f"{run}: sampled the status line"):
        return
    print(f"# phase {run}: {what}: expected solid: line high {100.0 if start == 1 and not ev else 0:.1f} % of "
          f"{end[0]:.0f} ms, {len(ev)} edges {[e[:2] for e in ev]}, no period; sampling gap <= {gap:.1f} ms")
    ok(start == 1 and ev == [] and end[1] == 1, f"{run}: solid (high for the whole {end[0]:.0f} ms window, no edge)")

checks = {
    "connecting": lambda: (blink("connecting", "connecting (devroom not up yet)", [500, 500]), media("connecting", False)),
    "publishing": lambda: (solid("publishing", "publishing"), media("publishing", True)),
    "reconnecting": lambda: (blink("reconnecting", "cut off from devroom", [100, 100]), media("reconnecting", False)),
    "recovered": lambda: (solid("recovered", "recovered, publishing again"), media("recovered", True)),
    "refused": lambda: (blink("refused", "refused (token with a wrong secret, HTTP 401)", [150, 150, 150, 1050]),
                        media("refused", False)),
}
for name, check in checks.items():
    if not ok(name in phases, f"{name}: window sampled"): continue
    check()
ev = read("vm.events")
stopped = [l for l in ev.splitlines() if l.startswith("STOPPED")]
if ok(bool(stopped), "roomcast stopped by SIGTERM"):
    print(f"# after SIGTERM: {stopped[0]}")
    ok("status=0" in stopped[0] and "media=0" in stopped[0], "both lines low after roomcast exited (off = stopped)")
    rel = read("released.txt")
    ok(rel != "" and "|roomcast" not in rel, "lines released on exit (no consumer in debugfs)")
try:
    evs = json.load(open(evfile)).get("events", [])
except Exception:
    evs = []
count = lambda t: sum(1 for e in evs if e.get("type") == t)
print(f"# devroom: {count('participant_joined')} joins, {count('participant_resumed')} resumes, "
      f"{count('track_published')} tracks published, {count('join_rejected')} joins rejected")
ok(count("join_rejected") >= 1, "devroom refused the bad token's join")
print(f"lab-led-states: {c.passed} passed, {c.failed} failed")
sys.exit(1 if c.failed else 0)
X
