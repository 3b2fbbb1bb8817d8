#!/bin/bash
# lab.sh - boot the Debian-kernel lab VM (vivid, vicodec, vim2m, v4l2loopback, snd-aloop, snd-dummy,
#          gpio-sim, gpio-mockup) under qemu and run ONE program inside it; exit with its exit code.
# Prerequisite: setup.sh has built $LAB (default ~/.cache/roomcast-lab).
#
#   lab.sh [options] BINARY [ARGS...]     run BINARY (copied into the VM via 9p) and power off
#   lab.sh [options] --shell              interactive shell on the serial console (Ctrl-A x quits qemu)
# Options:
#   -a, --arch amd64|arm64   guest arch (default arm64 = qemu-system-aarch64 -M virt -cpu cortex-a72, TCG)
#   --accel tcg|kvm|auto     default: $LAB_ACCEL or tcg. auto = kvm if a cached 20 s probe boot succeeded
#   -m, --mem MiB            guest RAM (default 1024)        --smp N   vCPUs (default 2)
#   -t, --timeout SECS       kill the VM after SECS (default 600) -> exit 124
#   -s, --share DIR          share host DIR read-write at /mnt/host in the guest
#   --chroot                 share host / read-only at /hostroot (+ tmpfs overlay: writable, changes are lost)
#                            and run BINARY inside `chroot /hostroot` by its host path, cwd = current host dir
#                            (amd64 only: dynamically linked binaries, host's v4l2-ctl/arecord/gpioset...)
#   -e VAR=VALUE             export VAR in the guest (repeatable; RUST_BACKTRACE/RUST_LOG are passed through)
#   --net                    qemu user networking, restrict=on (guest can reach nothing but the forwards below)
#   --hostfwd HPORT:GPORT    host 127.0.0.1:HPORT -> guest 10.0.2.15:GPORT (tcp; implies --net; repeatable)
#   --guestfwd GPORT:HPORT   guest 10.0.2.100:GPORT -> host 127.0.0.1:HPORT (tcp; implies --net; repeatable)
#   --tap IFNAME[:GUEST_CIDR[:GW]]  guest eth0 on an existing host tap device (e.g. in a network namespace the
#                            caller made), static GUEST_CIDR (default 198.51.100.2/24): real UDP and TCP both ways,
#                            unlike --net's user-mode NAT, which forwards TCP only
#   --append "ARGS"          extra kernel cmdline, e.g. "vivid.n_devs=2 snd_aloop.pcm_substreams=8" (module
#                            params), lab.nomod=1 (skip device modules), lab.netlab=1 (veth/dummy/netem)
#   --log FILE               also write the console log to FILE
# Exit: program's exit code; 124 timeout; 125 VM died before the program finished.
set -euo pipefail
LAB=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}
KABI=${KABI:-$(cat "$LAB/kabi" 2>/dev/null || true)}
ARCH=arm64 TAP= ACCEL=${LAB_ACCEL:-tcg} MEM=1024 SMP=2 TIMEOUT=600 SHARE= CHROOT=0 NET=0 SHELLMODE=0 APPEND= LOG=
HOSTFWD=() GUESTFWD=() ENVS=()
die() { echo "lab.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -a|--arch) ARCH=$2; shift 2;;
    --accel) ACCEL=$2; shift 2;;
    -m|--mem) MEM=$2; shift 2;;
    --smp) SMP=$2; shift 2;;
    -t|--timeout) TIMEOUT=$2; shift 2;;
    -s|--share) SHARE=$(realpath "$2"); shift 2;;
    --chroot) CHROOT=1; shift;;
    -e) ENVS+=("$2"); shift 2;;
    --net) NET=1; shift;;
    --hostfwd) NET=1; HOSTFWD+=("$2"); shift 2;;
    --guestfwd) NET=1; GUESTFWD+=("$2"); shift 2;;
    --tap) TAP=$2; shift 2;;
    --append) APPEND="$APPEND $2"; shift 2;;
    --log) LOG=$2; shift 2;;
    --shell) SHELLMODE=1; shift;;
    -h|--help) sed -n '2,30p' "$0"; exit 0;;
    --) shift; break;;
    -*) die "unknown option $1";;
    *) break;;
  esac
done
[ $SHELLMODE = 1 ] || [ $# -ge 1 ] || die "need BINARY (or --shell); see --help"
[ $CHROOT = 1 ] && [ $ARCH != amd64 ] && die "--chroot needs --arch amd64 (host binaries are x86_64)"
INITRD=$LAB/initramfs-$ARCH.cpio.gz
[ -e "$INITRD" ] || die "$INITRD missing: run setup.sh first"

case $ARCH in
  amd64) QEMU=(qemu-system-x86_64 -M pc); CONSOLE=ttyS0
         KERNEL=$LAB/vmlinux-$KABI-amd64                    # PVH boot of the uncompressed kernel (faster)
         [ -e "$KERNEL" ] || KERNEL=$LAB/amd64/boot/vmlinuz-$KABI-amd64
         KERNEL=${LAB_KERNEL:-$KERNEL};;
  arm64) QEMU=(qemu-system-aarch64 -M virt -cpu cortex-a72); CONSOLE=ttyAMA0; KERNEL=$LAB/arm64/boot/vmlinuz-$KABI-arm64
         [ "$ACCEL" = tcg ] || ACCEL=tcg;;
  *) die "arch must be amd64 or arm64";;
esac

# --- accelerator. KVM on this kind of host (nested "kvm-pvm") opens but runs a stock kernel ~1000x slower
#     than TCG, so auto probes once (20 s) and caches the verdict per host kernel.
if [ "$ACCEL" = auto ]; then
  CACHE=$LAB/.kvm-probe-$(uname -r)
  if [ ! -e "$CACHE" ]; then
    if [ -r /dev/kvm ] && [ -w /dev/kvm ] && timeout 20 qemu-system-x86_64 -enable-kvm -cpu host,-arch-capabilities \
         -m 256 -display none -monitor none -serial stdio -no-reboot -nic none -kernel "$KERNEL" -initrd "$INITRD" \
         -append "console=ttyS0 quiet panic=-1 lab.nomod=1 lab.net=0" </dev/null 2>/dev/null | grep -q -m1 LAB-BOOTED; then
      echo kvm > "$CACHE"
    else echo tcg > "$CACHE"; fi
  fi
  ACCEL=$(cat "$CACHE")
fi
if [ "$ACCEL" = kvm ]; then QEMU+=(-enable-kvm -cpu host,-arch-capabilities)
else QEMU+=(-accel tcg,thread=multi); fi

# --- control dir shared as 9p tag "labctl": run script in, rc out
CTL=$(mktemp -d /tmp/lab-ctl.XXXXXX)
QPID=
cleanup() { [ -n "$QPID" ] && kill "$QPID" 2>/dev/null; rm -rf "$CTL"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
q() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }   # POSIX single-quote
if [ $SHELLMODE = 0 ]; then
  BIN=$1; shift
  {
    echo '#!/bin/sh'
    echo "export HOME=/tmp LAB_ARCH=$ARCH"
    for v in RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS; do [ -n "${!v:-}" ] && echo "export $v=$(q "${!v}")"; done
    for e in "${ENVS[@]}"; do echo "export ${e%%=*}=$(q "${e#*=}")"; done
    if [ $CHROOT = 1 ]; then
      ABS=$(realpath "$(command -v "$BIN" || echo "$BIN")")
      printf 'exec chroot /hostroot /bin/sh -c %s sh %s %s' "$(q 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"')" "$(q "$PWD")" "$(q "$ABS")"
    else
      cp "$BIN" "$CTL/$(basename "$BIN")"; chmod +x "$CTL/$(basename "$BIN")"
      printf 'cd /mnt/labctl && exec %s' "$(q "/mnt/labctl/$(basename "$BIN")")"
    fi
    for a in "$@"; do printf ' %s' "$(q "$a")"; done
    echo
  } > "$CTL/run"
  chmod +x "$CTL/run"
fi

ARGS=(-m "$MEM" -smp "$SMP" -display none -no-reboot -kernel "$KERNEL" -initrd "$INITRD"
      -virtfs "local,path=$CTL,mount_tag=labctl,security_model=none,id=labctl")
[ -n "$SHARE" ] && ARGS+=(-virtfs "local,path=$SHARE,mount_tag=host,security_model=none,id=host")
[ $CHROOT = 1 ] && ARGS+=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot")
if [ -n "$TAP" ]; then
  IFS=: read -r TAPIF GCIDR GGW <<<"$TAP"
  ARGS+=(-netdev "tap,id=n0,ifname=$TAPIF,script=no,downscript=no" -device virtio-net-pci,netdev=n0)
  APPEND="$APPEND lab.ip=${GCIDR:-198.51.100.2/24}${GGW:+ lab.gw=$GGW}"
elif [ $NET = 1 ]; then
  N="user,id=n0,restrict=on"
  for f in "${HOSTFWD[@]}"; do N="$N,hostfwd=tcp:127.0.0.1:${f%%:*}-10.0.2.15:${f##*:}"; done
  # "cmd:" = one socat per guest connection (EOF/close propagate). The "-tcp:HOST:PORT" form is a single
  # chardev connected once at qemu start-up: the host server must already listen, and a close by the
  # host never reaches the guest (its nc hangs).
  for f in "${GUESTFWD[@]}"; do N="$N,guestfwd=tcp:10.0.2.100:${f%%:*}-cmd:socat STDIO TCP:127.0.0.1:${f##*:}"; done
  ARGS+=(-netdev "$N" -device virtio-net-pci,netdev=n0)
else
  ARGS+=(-nic none); APPEND="$APPEND lab.net=0"
fi
CMDLINE="console=$CONSOLE quiet panic=-1$APPEND"
[ $SHELLMODE = 1 ] && CMDLINE="$CMDLINE lab.shell=1"

if [ $SHELLMODE = 1 ]; then
  "${QEMU[@]}" "${ARGS[@]}" -serial mon:stdio -append "$CMDLINE"; exit $?
fi
T0=$(date +%s.%N)
if [ -n "$LOG" ]; then exec 3> >(tee "$LOG"); else exec 3>&1; fi
# background + wait so that the EXIT trap can stop qemu if lab.sh itself is interrupted
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" "${ARGS[@]}" -monitor none -serial stdio -append "$CMDLINE" </dev/null >&3 2>&1 &
QPID=$!
set +e; wait $QPID; QRC=$?; set -e
QPID=
exec 3>&-
echo "lab.sh: arch=$ARCH accel=$ACCEL qemu_rc=$QRC wall=$(echo "$(date +%s.%N) - $T0" | bc | cut -c1-6)s" >&2
[ "$QRC" = 124 ] && exit 124
[ -e "$CTL/rc" ] || exit 125
exit "$(cat "$CTL/rc")"
