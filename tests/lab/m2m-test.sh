#!/usr/bin/env bash
# The V4L2 M2M encoder path on the kernel's vicodec (a stateful FWHT encoder) in the qemu arm64 lab, with the
# static aarch64 board binary:
#   tests/lab/m2m-test.sh --board BIN
# In the VM, `roomcast encoder-test --format FWHT` drives vicodec's encoder alone: first single-planar (vicodec's
# default), then, after reloading vicodec with multiplanar=1, multi-planar; each also with vivid's pictures as the
# input (camera → encoder), which go in as vivid's own buffers (DMABUF export/import, no copy); last, vivid
# reloaded with multiplanar=2 (a camera that speaks only the multi-planar API) feeds the multi-planar vicodec the same
# way as NV12, while its YUYV, which vivid puts 128 bytes into each buffer (data_offset), must be copied, with the reason. Each run encodes more pictures than the encoder has buffers, drains
# (V4L2_ENC_CMD_STOP → the LAST buffer) half way, restarts and drains again, and prints one JSON line, which
# the host checks here: formats on both queues, buffer cycling, drain and restart, every capture time coming
# back unchanged and in order, FWHT's header in the bitstream, and the H.264 controls vicodec lacks reported
# as lacking (not fatal). It also checks that asking vicodec for H.264 fails with the reason, and that
# `roomcast devices` shows "auto" falling back to software for vivid because vicodec does not give H.264, and a
# picture smaller than vicodec's aligned buffers (640x364 in 640x368) goes through the crop rectangle.
# `encoder-test --bench` (what tests/bench/run.sh --only lab-m2m times) is run briefly on vivid → vicodec and
# vivid → openh264, and its figures are checked for being there and consistent, not for their size.
# Prints "lab-m2m: N passed, N failed"; exit 0 only if nothing failed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BOARD=
while [ $# -gt 0 ]; do
  case "$1" in
    --board) BOARD=$(realpath "$2"); shift 2;;
    *) echo "m2m-test.sh: unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$BOARD" ] || { echo "m2m-test.sh: need --board BIN" >&2; exit 2; }
PASS=0 FAIL=0
ok()  { PASS=$((PASS + 1)); echo "ok - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
finish() { echo "lab-m2m: $PASS passed, $FAIL failed"; [ "$FAIL" = 0 ]; exit $?; }
W=$(mktemp -d /tmp/roomcast-lab-m2m.XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/share"
cp "$BOARD" "$W/share/roomcast"
cat > "$W/share/run.sh" <<'X'
#!/bin/sh
cd /mnt/host
test_run() { # NAME ARGS...: one encoder-test, its JSON line, log and exit code
  name=$1; shift
  RUST_LOG=info ./roomcast encoder-test "$@" > "$name.json" 2> "$name.log"
  echo $? > "$name.rc"
}
./roomcast devices > devices.txt 2>&1
test_run single --format FWHT --frames 60
test_run vivid --format FWHT --frames 30 --source name:vivid --width 640 --height 360
test_run h264 --format H264 --frames 10
# 364 rows: vicodec's buffers are 8-row aligned (368), so the picture needs the crop rectangle
test_run padded --format FWHT --frames 20 --height 364
bench="--bench --source name:vivid --width 640 --height 360 --frames 30 --warmup 5"
test_run benchm2m --format FWHT $bench
test_run benchsw --encoder software $bench
# vicodec's multi-planar variant: the same driver, reloaded with multiplanar=1
ko=$(grep '/vicodec.ko' /etc/lab-modules | cut -d' ' -f1)
rmmod vicodec && insmod "$ko" multiplanar=1
echo $? > reload.rc
test_run mplane --format FWHT --frames 60
test_run vividmp --format FWHT --frames 30 --source name:vivid --width 640 --height 360
# vivid's multi-planar variant (multiplanar=2: its camera node is MPLANE only): its buffers exported per plane
ko=$(grep '/vivid.ko' /etc/lab-modules | cut -d' ' -f1)
rmmod vivid && insmod "$ko" n_devs=1 multiplanar=2
echo $? > vivid-reload.rc
# (480 rows: vicodec keeps 4:2:0 in 16-row aligned buffers, and 360 rows would not be the camera's layout)
test_run vividcammp --format FWHT --frames 30 --source name:vivid --width 640 --height 480 --camera-format nv12
# its YUYV starts 128 bytes into each buffer (data_offset): not importable, so copied
test_run vividcamhdr --format FWHT --frames 30 --source name:vivid --width 640 --height 360
X
chmod +x "$W/share/run.sh"
"$HERE/lab.sh" --arch arm64 -t 420 -s "$W/share" --log "$W/vm.log" "$W/share/run.sh" >/dev/null 2>&1
LABRC=$?
[ "$LABRC" = 0 ] && ok "the lab VM ran the tests" || bad "the lab VM exited with $LABRC"

# One JSON line per run; `check NAME EXPR...` evaluates python expressions over it (j = the summary).
check() {
  local name=$1 what=$2; shift 2
  if [ ! -s "$W/share/$name.json" ]; then
    bad "$what: no summary from encoder-test ($name)"; sed 's/^/# log: /' "$W/share/$name.log" 2>/dev/null | tail -15; return
  fi
  local out
  if out=$(python3 - "$W/share/$name.json" "$@" <<'P' 2>&1
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
for expr in sys.argv[2:]:
    if not eval(expr):
        sys.exit("failed: %s (summary: %s)" % (expr, json.dumps(j)))
print(json.dumps({k: j[k] for k in ("api", "raw", "coded", "frames_in", "frames_out", "output_buffers", "restart", "keyframes", "bytes", "capture_to_encoded_ms", "encoder_cpu_ms_per_frame", "rss_steady_mib") if k in j}))
P
  ); then ok "$what: $out"; else bad "$what: $out"; fi
}

for run in single mplane; do
  api=single-planar; [ $run = mplane ] && api=multi-planar
  check $run "vicodec $api: formats negotiated on both queues (YU12 on OUTPUT, FWHT on CAPTURE)" \
    "j['api'] == '$api'" "j['raw'] == 'YU12'" "j['coded'] == 'FWHT'" "j['width'] == 640 and j['height'] == 480"
  check $run "vicodec $api: buffers cycle (60 pictures through a few buffers, all coded)" \
    "j['frames_in'] == 60" "j['frames_out'] == 60" "j['frames_in'] > j['output_buffers'] >= 1" "j['capture_buffers'] >= 1" \
    "j['bytes'] > 0" "j['skipped'] == 0"
  # vicodec does not flag keyframes on its CAPTURE buffers (bcm2835 does), so only the header is checked.
  check $run "vicodec $api: the coded stream is FWHT (vicodec's frame header magic)" \
    "(j['first_bytes'] or '').startswith('4f4f4f4fffffffff')"
  check $run "vicodec $api: drain (ENC_CMD_STOP → LAST) twice, with a restart between" \
    "j['drain_last_seen'] == [True, True]" "j['frames_after_restart'] == 30" "j['restart'] in ('V4L2_ENC_CMD_START', 'STREAMOFF/STREAMON')"
  check $run "vicodec $api: every capture time comes back unchanged, in order" \
    "j['timestamps_equal_inputs'] is True" "j['timestamps_monotonic'] is True" "j['unmatched'] == 0"
  check $run "vicodec $api: controls it lacks are warned about, not fatal (GOP_SIZE set)" \
    "'GOP_SIZE' in j['controls_applied']" "'BITRATE' in j['controls_lacking']" "j['ok'] is True"
  grep -q "lacks control BITRATE" "$W/share/$run.log" && ok "vicodec $api: the missing BITRATE control is a logged warning" \
    || bad "vicodec $api: no warning about the missing BITRATE control"
  [ "$(cat "$W/share/$run.rc" 2>/dev/null)" = 0 ] && ok "vicodec $api: encoder-test exits 0" || bad "vicodec $api: encoder-test exit $(cat "$W/share/$run.rc" 2>/dev/null)"
done
[ "$(cat "$W/share/reload.rc" 2>/dev/null)" = 0 ] || bad "reloading vicodec with multiplanar=1 failed"

# NAME API RAW HEIGHT LABEL: the camera runs that import the camera's buffers.
for spec in "vivid single-planar YUYV 360 vivid" "vividmp multi-planar YUYV 360 vivid" \
  "vividcammp multi-planar NV12 480 vivid (multi-planar camera, NV12)"; do
  read -r run api raw height cam <<<"$spec"
  check $run "$cam → vicodec $api: camera pictures ($raw 640x$height) through the encoder, drained and restarted" \
    "j['api'] == '$api'" "j['source'] == 'name:vivid'" "j['raw'] == '$raw'" "j['width'] == 640 and j['height'] == $height" \
    "j['frames_in'] == 30 == j['frames_out']" "j['drain_last_seen'] == [True, True]" \
    "j['timestamps_equal_inputs'] and j['timestamps_monotonic']" "j['ok'] is True"
  # vivid exports its buffers (VIDIOC_EXPBUF) and vicodec imports them: no copy on the way in.
  check $run "$cam → vicodec $api: the camera's DMABUFs are imported, not copied" "j['dmabuf'] == 'imported'"
done
[ "$(cat "$W/share/vivid-reload.rc" 2>/dev/null)" = 0 ] || bad "reloading vivid with multiplanar=2 failed"
for run in vividcammp vividcamhdr; do
  camera_api=$(grep -o "camera /dev/video[0-9]* (vivid): [A-Z0-9]* 640x[0-9]* at [0-9]* fps, [a-z-]* API" "$W/share/$run.log" 2>/dev/null)
  [[ "$camera_api" == *"multi-planar API" ]] && ok "vivid with multiplanar=2 is captured through the multi-planar API ($camera_api)" \
    || bad "vivid with multiplanar=2: no multi-planar capture in the log of $run (${camera_api:-no camera line})"
done
check vividcamhdr "vivid (multi-planar camera, YUYV after a 128-byte header) → vicodec: every picture coded, copied rather than imported" \
  "j['raw'] == 'YUYV'" "j['frames_in'] == 30 == j['frames_out']" "j['timestamps_equal_inputs'] and j['timestamps_monotonic']" \
  "j['dmabuf'].startswith('not used: a frame came without a DMABUF')" "j['ok'] is True"
grep -q "puts 128 bytes before each picture (data_offset)" "$W/share/vividcamhdr.log" \
  && ok "vivid (multi-planar camera, YUYV): the log says why its buffers are not lent as DMABUFs (128 bytes of data_offset)" \
  || bad "vivid (multi-planar camera, YUYV): no reason logged for not lending the DMABUFs"

# FWHT's header carries the coded picture size (big-endian, bytes 12-19): 640x364, not the buffer's 368 rows.
check padded "vicodec with a picture smaller than its aligned buffers: the crop is set and the codec codes 640x364" \
  "j['buffer_size'] == '640x368'" "j['crop'] == 'set'" "(j['first_bytes'] or '')[24:40] == '%08x%08x' % (640, 364)" \
  "j['frames_out'] == 20" "j['ok'] is True"

# --bench: every picture out once and in order, and each figure present and consistent (a latency per
# picture coded inside the window, p99 >= p50 > 0, CPU > 0, the peak RSS not below the steady one).
bench_figures=("j['bench'] is True" "j['frames_measured'] == 30" "j['frames_in'] == 35 == j['frames_out']"
  "j['timestamps_equal_inputs'] and j['timestamps_monotonic']"
  "0 < j['capture_to_encoded_ms']['p50'] <= j['capture_to_encoded_ms']['p99'] <= j['capture_to_encoded_ms']['max']"
  "j['encoder_cpu_ms_per_frame'] > 0" "j['process_cpu_ms_per_frame'] > 0" "j['machine_cpu_ms_per_frame'] > 0"
  "0 < j['rss_steady_mib'] <= j['rss_peak_mib']" "j['camera_fps'] > 0" "j['window_s'] > 0" "j['ok'] is True")
check benchm2m "encoder-test --bench, vivid → vicodec: figures for the M2M path" "${bench_figures[@]}" \
  "j['encoder'] == 'm2m' and j['coded'] == 'FWHT' and j['dmabuf'] == 'imported'" \
  "0 < j['latency_samples'] <= 30" "j['drain_last_seen'] is True"
# openh264 codes each picture inside submit, so every picture of the window has its latency.
check benchsw "encoder-test --bench --encoder software, vivid → openh264: figures for the software path" "${bench_figures[@]}" \
  "j['encoder'] == 'software' and j['coded'] == 'H264' and j['name'] == 'openh264'" "j['latency_samples'] == 30"

if [ "$(cat "$W/share/h264.rc" 2>/dev/null)" != 0 ] && grep -q "does not encode H264: it gives FWHT" "$W/share/h264.log"; then
  ok "asking vicodec for H.264 fails with the reason (it gives FWHT)"
else
  bad "encoder-test --format H264 on vicodec: rc $(cat "$W/share/h264.rc" 2>/dev/null)"; sed 's/^/# h264: /' "$W/share/h264.log" 2>/dev/null | tail -5
fi
sed 's/^/# devices: /' "$W/share/devices.txt" 2>/dev/null
grep -q 'vicodec.*encoder, not H.264' "$W/share/devices.txt" && ok "roomcast devices lists vicodec as an encoder that is not H.264" \
  || bad "roomcast devices: vicodec's encoder not listed"
grep -q 'encoder = "auto" uses: software (openh264): the camera gives YUYV and no M2M encoder fits: .*does not encode H264: it gives FWHT' "$W/share/devices.txt" \
  && ok "roomcast devices: for vivid, encoder = \"auto\" falls back to software and says vicodec gives FWHT, not H.264" \
  || bad "roomcast devices: no auto choice with its reason for vivid"
if [ "$FAIL" != 0 ]; then
  grep -E "LAB-|panic" "$W/vm.log" 2>/dev/null | sed 's/^/# vm: /'
  for f in single mplane vivid vividmp vividcammp vividcamhdr padded benchm2m benchsw; do tail -8 "$W/share/$f.log" 2>/dev/null | sed "s/^/# $f: /"; done
fi
finish
