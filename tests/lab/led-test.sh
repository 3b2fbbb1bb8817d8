#!/usr/bin/env bash
# The status LEDs on a simulated GPIO chip: boot the arm64 Debian kernel in qemu (TCG), create a gpio-sim
# chip with named lines through configfs, drive it with the static aarch64 roomcast (`roomcast led-test`, one
# state per run), sample the lines' values over real time through gpio-sim's sysfs
# (/sys/devices/platform/gpio-sim.N/gpiochipM/sim_gpioK/value, every 1 ms, tests/lab/linesample.c), and check
# each pattern's period, duty cycle and step lengths within a tolerance on the host.
#   tests/lab/led-test.sh --board BIN [--keep DIR]
# Runs: line found by name (no chip) for every state, with the media LED; chip by label + offset, active low;
# chip by path with configured timings; a kernel LED (uleds, built out-of-tree like gpio-sim) whose trigger is
# parked and restored; a missing line and a line already in use (errors, with fixes); and the lines are
# released on exit (debugfs shows no consumer).
# One state per run, set by hand; tests/lab/led-states-test.sh (suite 65) follows a real connection through
# connect, cut-off, recovery and a refused token. Prints "lab-leds: N passed, N failed"; exit 0 only if nothing failed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BOARD= KEEP=
while [ $# -gt 0 ]; do
  case "$1" in
    --board) BOARD=$(realpath "$2"); shift 2;;
    --keep) KEEP=$2; shift 2;;
    *) echo "led-test.sh: unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BOARD" ] || { echo "led-test.sh: need --board BIN (scripts/build-static.sh)" >&2; exit 2; }
W=$(mktemp -d /tmp/roomcast-leds.XXXXXX)
cleanup() { if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -a "$W"/. "$KEEP"/; fi; rm -rf "$W"; }
trap cleanup EXIT
S=$W/share
mkdir -p "$S"
cp "$BOARD" "$S/roomcast"
CC=${CC_AARCH64:-aarch64-linux-gnu-gcc}
if ! "$CC" -O2 -static -o "$S/linesample" "$HERE/linesample.c" 2>"$W/cc.log"; then
  cat "$W/cc.log"; echo "not ok - build the sampler ($CC; scripts/install-cross-tools.sh --lab installs it)"
  echo "lab-leds: 0 passed, 1 failed"; exit 1
fi

# A kernel LED for SysfsLed: Debian's kernel has the LED class but not uleds (userspace-backed LEDs,
# CONFIG_LEDS_USER), so build it out-of-tree against the lab's headers like setup.sh does for gpio-sim; cached
# in the lab dir. A process in the VM creates the LED by writing struct uleds_user_dev to /dev/uleds.
LAB=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}
KABI=$(cat "$LAB/kabi" 2>/dev/null || true)
ULEDS=$LAB/extmod/uleds-arm64
if [ ! -e "$ULEDS/uleds.ko" ] && [ -n "$KABI" ]; then
  KSER=$(echo "$KABI" | cut -d. -f1,2)
  mkdir -p "$ULEDS.tmp" && \
  tar -xJf "$LAB/kroot/usr/src/linux-source-$KSER.tar.xz" -O "linux-source-$KSER/drivers/leds/uleds.c" > "$ULEDS.tmp/uleds.c" 2>"$W/uleds.log" && \
  echo 'obj-m += uleds.o' > "$ULEDS.tmp/Kbuild" && \
  make -s -C "$LAB/kroot/usr/src/linux-headers-$KABI-arm64" M="$ULEDS.tmp" DEB_BUILD_ARCH=amd64 DEB_HOST_ARCH=arm64 \
    DEB_HOST_GNU_TYPE=aarch64-linux-gnu modules >>"$W/uleds.log" 2>&1 && \
  aarch64-linux-gnu-strip --strip-debug "$ULEDS.tmp/uleds.ko" && rm -rf "$ULEDS" && mv "$ULEDS.tmp" "$ULEDS" \
    || { rm -rf "$ULEDS.tmp"; sed 's/^/# uleds build: /' "$W/uleds.log" | tail -5; }
fi
[ -e "$ULEDS/uleds.ko" ] && cp "$ULEDS/uleds.ko" "$S/"
# struct uleds_user_dev { char name[64]; int max_brightness; }: the LED "lab-act", brightness 0..1
python3 -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<64si", b"lab-act", 1))' > "$S/uleds-act.bin"
printf 'url = "ws://198.51.100.1:7880"\ntoken = "not-used-by-led-test"\n[leds]\nsysfs = "lab-act"\n' > "$S/kernel.toml"

HEAD='url = "ws://198.51.100.1:7880"
token = "not-used-by-led-test"'
# line found by name on every chip, plus the media LED
printf '%s\n[leds]\nstatus = "STATUS_LED"\nmedia = "MEDIA_LED"\n' "$HEAD" > "$S/named.toml"
# chip by label, line by offset, active low
printf '%s\n[leds]\nchip = "roomcast-leds"\nstatus = 2\nactive_low = true\n' "$HEAD" > "$S/label.toml"
# chip by path (filled in inside the VM), configured timings
printf '%s\n[leds]\nchip = "@CHIP@"\nstatus = 2\nmedia = 5\nreconnecting = [50, 150]\nconnecting = [300, 700]\n' "$HEAD" > "$S/path.toml.in"
# a line no chip has
printf '%s\n[leds]\nstatus = "NO_SUCH_LED"\n' "$HEAD" > "$S/missing.toml"

cat > "$S/leds.sh" <<'X'
#!/bin/sh
# inside the VM (busybox); /mnt/host = the shared dir
cd /mnt/host
G=/sys/kernel/config/gpio-sim
[ -d $G ] || { echo "LEDLAB-NO-GPIOSIM (no gpio-sim in configfs)"; exit 20; }
mkdir $G/leds $G/leds/bank0 || exit 21
echo 8 > $G/leds/bank0/num_lines
echo roomcast-leds > $G/leds/bank0/label
mkdir $G/leds/bank0/line2 && echo STATUS_LED > $G/leds/bank0/line2/name
mkdir $G/leds/bank0/line5 && echo MEDIA_LED > $G/leds/bank0/line5/name
echo 1 > $G/leds/live || exit 22
DEV=$(cat $G/leds/dev_name); CHIP=$(cat $G/leds/bank0/chip_name)
V=/sys/devices/platform/$DEV/$CHIP
echo "LEDLAB-CHIP $DEV $CHIP: $(ls -d $V/sim_gpio* | tr '\n' ' ')"
sed "s|@CHIP@|/dev/$CHIP|" path.toml.in > path.toml
# binaries in the VM's tmpfs: no 9p page-in delays while measuring
cp roomcast linesample /tmp/ && ./roomcast --version
# run NAME CONFIG STATE SECONDS: led-test for SECONDS while both lines are sampled until just after its exit
# (released lines fall back to the simulated pull-down)
run() {
  rm -f "/tmp/$1.stop"
  /tmp/roomcast led-test --config "$2" --state "$3" --seconds "$4" > "$1.out" 2>&1 &
  pid=$!
  /tmp/linesample "$V/sim_gpio2/value" "$(($4 + 30))" 1000 "/tmp/$1.stop" > "$1.status" &
  s1=$!
  /tmp/linesample "$V/sim_gpio5/value" "$(($4 + 30))" 1000 "/tmp/$1.stop" > "$1.media" &
  s2=$!
  # held: debugfs names the consumer of a requested line (poll until it shows, or led-test ended)
  while kill -0 $pid 2>/dev/null && ! grep -q "|roomcast" /sys/kernel/debug/gpio; do sleep 0.05; done
  grep -E "STATUS_LED|MEDIA_LED" /sys/kernel/debug/gpio > "$1.held"
  wait $pid; echo "rc=$?" >> "$1.out"
  grep -E "STATUS_LED|MEDIA_LED" /sys/kernel/debug/gpio > "$1.released"
  sleep 0.3; touch "/tmp/$1.stop"
  wait $s1 $s2
  echo "LEDLAB-RUN $1 $(tail -1 "$1.out")"
}
run named-connecting named.toml connecting 5
run named-reconnecting named.toml reconnecting 3
run named-needs-attention named.toml needs-attention 7
run named-publishing named.toml publishing 2
run named-off named.toml off 2
run label-needs-attention label.toml needs-attention 5
run path-reconnecting path.toml reconnecting 3
run path-connecting path.toml connecting 5
# errors: a missing line; a line another process holds
/tmp/roomcast led-test --config missing.toml --state connecting --seconds 1 > missing.out 2>&1; echo "rc=$?" >> missing.out
/tmp/roomcast led-test --config named.toml --state publishing --seconds 3 > holder.out 2>&1 &
pid=$!
sleep 2
/tmp/roomcast led-test --config label.toml --state connecting --seconds 1 > busy.out 2>&1; echo "rc=$?" >> busy.out
wait $pid
# a kernel LED (uleds) whose trigger was "disk-activity": parked at none while roomcast blinks it, restored after
if [ -e uleds.ko ] && insmod uleds.ko; then
  exec 3<>/dev/uleds
  cat uleds-act.bin >&3
  L=/sys/class/leds/lab-act
  echo disk-activity > $L/trigger
  cat $L/trigger > kernel.trigger-before
  rm -f /tmp/kernel.stop
  /tmp/roomcast led-test --config kernel.toml --state reconnecting --seconds 3 > kernel-reconnecting.out 2>&1 &
  pid=$!
  /tmp/linesample $L/brightness 33 1000 /tmp/kernel.stop > kernel-reconnecting.status &
  s1=$!
  while kill -0 $pid 2>/dev/null && ! grep -q "\[none\]" $L/trigger; do sleep 0.05; done
  cat $L/trigger > kernel.trigger-during
  wait $pid; echo "rc=$?" >> kernel-reconnecting.out
  cat $L/trigger > kernel.trigger-after
  sleep 0.3; touch /tmp/kernel.stop; wait $s1
  exec 3>&-
  echo "LEDLAB-RUN kernel-reconnecting $(tail -1 kernel-reconnecting.out)"
else
  echo "LEDLAB-NO-ULEDS"
fi
echo "LEDLAB-DONE"
X
chmod +x "$S/leds.sh"
T0=$(date +%s)
"$HERE/lab.sh" --arch arm64 -t 400 -s "$S" --log "$W/vm.log" "$S/leds.sh" > /dev/null 2>&1; RC=$?
echo "# VM: rc=$RC, $(( $(date +%s) - T0 )) s wall; $(grep -o 'LAB-READY uptime=[0-9.]*' "$W/vm.log")"
grep -E "LEDLAB|roomcast [0-9]|LAB-WARN" "$W/vm.log" | sed 's/^/# /'
PYTHONPATH="$HERE" python3 - "$S" "$RC" <<'X'
import re, sys
from ledcheck import Checks
S, rc = sys.argv[1], int(sys.argv[2])
c = Checks(S)
ok, read, edges = c.ok, c.read, c.edges

ok(rc == 0, f"the VM ran every LED case (exit status {rc})")

def blink(run, steps_ms, active_low=False, media=0, check_media=True):
    """steps_ms: on/off durations starting with on (logical). Checks the physical status line; the window
    includes the pattern's start and the exit, so the first and last segments are left out."""
    if not c.blink(run, run, steps_ms, phys_on=0 if active_low else 1, drop_ends=True):
        return
    if not check_media: return
    mstart, mev, mend, _ = edges(run + ".media")
    ok(mev == [] if not media else (len(mev) == 2 and mev[0][1] == 1),
       f"{run}: media LED {'on' if media else 'off'} throughout (edges {[e[:2] for e in mev]})")

def released(run):
    held, rel = read(run + ".held"), read(run + ".released")
    ok("|roomcast" in held and "|roomcast" not in rel,
       f"{run}: lines held by consumer \"roomcast\" while running, released after exit")
    out = read(run + ".out")
    ok("rc=0" in out and "LEDs off and released" in out, f"{run}: led-test exit status 0 ({out.strip().splitlines()[-1] if out.strip() else 'no output'})")

def constant(run, level, media):
    start, ev, end, gap = edges(run + ".status")
    mstart, mev, mend, _ = edges(run + ".media")
    if not ok(end is not None, f"{run}: sampled the status line"): return
    if level == 1:
        # one rise when the pattern starts, one fall at the exit, nothing in between
        good = len(ev) == 2 and ev[0][1] == 1 and ev[1][1] == 0
        held = ev[1][0] - ev[0][0] if good else 0
        print(f"# {run}: status line high for {held:.0f} ms without a break (edges: {[e[:2] for e in ev]})")
        ok(good, f"{run}: solid (one rise, one fall at exit)")
    else:
        print(f"# {run}: status line edges: {ev}")
        ok(ev == [] and start == 0 and end[1] == 0, f"{run}: dark throughout")
    if media:
        ok(len(mev) == 2 and mev[0][1] == 1 and mev[1][1] == 0, f"{run}: media LED on until exit (edges {[e[:2] for e in mev]})")
    else:
        ok(mev == [], f"{run}: media LED off throughout (edges {[e[:2] for e in mev]})")

blink("named-connecting", [500, 500]); released("named-connecting")
blink("named-reconnecting", [100, 100]); released("named-reconnecting")
blink("named-needs-attention", [150, 150, 150, 1050]); released("named-needs-attention")
constant("named-publishing", 1, media=True); released("named-publishing")
constant("named-off", 0, media=False); released("named-off")
blink("label-needs-attention", [150, 150, 150, 1050], active_low=True); released("label-needs-attention")
blink("path-reconnecting", [50, 150]); released("path-reconnecting")
blink("path-connecting", [300, 700]); released("path-connecting")
# the kernel LED
if ok(read("kernel.trigger-before") != "", "kernel LED lab-act created (uleds)"):
    blink("kernel-reconnecting", [100, 100], check_media=False)
    tr = {w: re.search(r"\[(\S+)\]", read("kernel.trigger-" + w) or "[?]").group(1) for w in ("before", "during", "after")}
    print(f"# kernel LED trigger: before {tr['before']}, while roomcast drives it {tr['during']}, after {tr['after']}")
    ok(tr == {"before": "disk-activity", "during": "none", "after": "disk-activity"},
       "kernel LED: trigger parked at none while driven, disk-activity restored on exit")
    out = read("kernel-reconnecting.out")
    ok("rc=0" in out and "kernel LED /sys/class/leds/lab-act" in out, "kernel LED: led-test exit status 0")
m = read("missing.out"); print("# missing line: " + " | ".join(m.strip().splitlines()))
ok("rc=1" in m and 'no GPIO chip has a line named "NO_SUCH_LED"' in m and "fix:" in m, "a missing line is an error naming it, with a fix")
b = read("busy.out"); print("# line in use: " + " | ".join(b.strip().splitlines()))
ok("rc=1" in b and "in use" in b and '"roomcast"' in b, "a line in use is an error naming its holder")
print(f"lab-leds: {c.passed} passed, {c.failed} failed")
sys.exit(1 if c.failed else 0)
X
