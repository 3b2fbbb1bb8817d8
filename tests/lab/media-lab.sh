# What the media tests in the lab (media-test.sh, speaker-test.sh) share. Source it inside the test's network
# namespace, with HERE (tests/lab), BOARD and HOST (devroom) set.
#   media_lab_begin NAME  loopback up; ok/bad (one check each) and finish (prints "lab-NAME: N passed, N failed"
#                         and exits 0 only if nothing failed); W, a new work directory
#   media_lab_share       W/share gets the board binary (roomcast), labprobe and the host's ALSA configuration
#   media_lab_devroom ARGS  the tap device rclab0 (198.51.100.1; the VM is .2) and devroom on it with ARGS added;
#                           sets DEVPID and API
# Either reports a failure (bad) and ends the test (finish) when it cannot.

media_lab_begin() {
  LAB_TEST=lab-$1 PASS=0 FAIL=0
  ip link set lo up
  W=$(mktemp -d "/tmp/roomcast-$LAB_TEST.XXXXXX")
}
ok()  { PASS=$((PASS + 1)); echo "ok - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
finish() { echo "$LAB_TEST: $PASS passed, $FAIL failed"; [ "$FAIL" = 0 ]; exit $?; }

media_lab_share() {
  mkdir -p "$W/share"
  cp "$BOARD" "$W/share/roomcast"
  # labprobe (plays and records snd-aloop): the lab's copy, or built here when tests/lab/labprobe.c is newer.
  local probe=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}/bin/labprobe.arm64
  if command -v aarch64-linux-gnu-gcc >/dev/null; then
    aarch64-linux-gnu-gcc -O2 -static -o "$W/share/labprobe" "$HERE/labprobe.c" -lm || { bad "build labprobe"; finish; }
  else
    cp "$probe" "$W/share/labprobe" || { bad "no labprobe (run tests/lab/setup.sh)"; finish; }
  fi
  # A static alsa-lib reads its configuration (what "hw", "plughw" and "default" mean) at run time from
  # /usr/share/alsa, as on a board; the lab's initramfs has none, so the host's goes in.
  [ -e /usr/share/alsa/alsa.conf ] || { bad "/usr/share/alsa/alsa.conf missing on the host (apt-get install libasound2-data)"; finish; }
  cp -r /usr/share/alsa "$W/share/alsa-conf"
}

media_lab_devroom() {
  ip tuntap add dev rclab0 mode tap && ip addr add 198.51.100.1/24 dev rclab0 && ip link set rclab0 up \
    || { bad "tap device rclab0 (needs root)"; finish; }
  DEVROOM_BIN=$HOST devroom_start "$W" --listen 198.51.100.1:7880 --keys devkey:secret --media-ip 198.51.100.1 "$@" \
    || { bad "devroom start"; finish; }
  DEVPID=$DEVROOM_PID
  API=http://198.51.100.1:7880
}
