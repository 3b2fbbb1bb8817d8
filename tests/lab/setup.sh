#!/bin/bash
# One-time (idempotent) setup of roomcast's qemu lab on Debian 12 (bookworm), as root.
# (The project's own copy of the team's lab: the kernel ABI is always resolved from Debian's metapackage,
#  the default arch is arm64, and the lab lives in a cache dir that survives between CI runs.)
#  1. apt-get install qemu + toolchains, download Debian kernels (amd64 + arm64), dpkg -x into $LAB
#  2. build the drivers Debian leaves disabled (gpio-sim, gpio-mockup, irq_sim, vicodec, vim2m,
#     v4l2-mem2mem [amd64 only], v4l2loopback) out-of-tree against the matching linux-headers
#  3. build one initramfs per arch: busybox-static + modules (deps from modules.dep) + /init
# Usage: setup.sh [amd64] [arm64]     (default: arm64)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${LAB:-${ROOMCAST_LAB:-$HOME/.cache/roomcast-lab}}
ARCHES=${*:-arm64}
mkdir -p "$LAB"/{debs,bin}
log() { echo "[setup $(date +%T)] $*"; }

# ---------------------------------------------------------------- 1. packages
# apt is shared with other jobs on the machine: serialise on /tmp/apt.lock
apt_lock() { flock /tmp/apt.lock "$@"; }
if ! dpkg --print-foreign-architectures | grep -qx arm64; then apt_lock dpkg --add-architecture arm64; NEED_UPDATE=1; fi
if [ -n "${NEED_UPDATE:-}" ] || ! command -v qemu-system-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
   || ! command -v socat >/dev/null || ! command -v cpio >/dev/null; then
  log "apt-get update/install"
  apt_lock sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 qemu-system-arm busybox-static cpio gzip kmod make bc gcc libc6-dev flex bison \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu xz-utils socat iproute2 >/dev/null'
fi
# Debian kernel ABI (e.g. 6.1.0-56): the archive keeps only the newest one, so never pin it. Ask the
# metapackage which image it depends on; only without apt lists fall back to what was downloaded before.
if [ -z "${KABI:-}" ]; then
  KABI=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)-arm64\(:arm64\)\{0,1\}$/\1/p' | head -1)
  [ -n "$KABI" ] || KABI=$(ls "$LAB"/debs/linux-image-*-arm64_*_arm64.deb 2>/dev/null | sed -n 's|.*/linux-image-\([0-9.]*-[0-9]*\)-arm64_.*|\1|p' | sort -V | tail -1)
  [ -n "$KABI" ] || { log "cannot resolve the kernel ABI (apt-get update first)"; exit 1; }
fi
KSER=$(echo "$KABI" | cut -d. -f1,2)          # 6.1.0-56 -> 6.1 (linux-kbuild-6.1, linux-source-6.1)
log "kernel ABI $KABI (series $KSER)"
echo "$KABI" > "$LAB/kabi"
cd "$LAB/debs"
# a new ABI supersedes the old downloads and everything built from them
if ls linux-image-*_*.deb >/dev/null 2>&1 && ! ls linux-image-"$KABI"-*_*.deb >/dev/null 2>&1; then
  log "kernel ABI changed: rebuilding the lab"; rm -rf "$LAB"/{debs/*,amd64,arm64,kroot,src,extmod,busybox-arm64}
fi
PKGS="linux-headers-$KABI-common linux-kbuild-$KSER linux-source-$KSER v4l2loopback-dkms"
for a in $ARCHES; do
  case $a in
    amd64) PKGS="$PKGS linux-image-$KABI-amd64 linux-headers-$KABI-amd64";;
    arm64) PKGS="$PKGS linux-image-$KABI-arm64:arm64 linux-headers-$KABI-arm64:arm64 busybox-static:arm64";;
  esac
done
for p in $PKGS; do
  n=${p%%:*}
  ls "${n}"_*.deb >/dev/null 2>&1 || { log "apt-get download $p"; apt-get download -qq "$p" 2>&1 | grep -v unsandboxed || true; }
done
# linux-source may exist in several versions; keep the one matching the image
IMG=$(ls linux-image-"$KABI"-*_*.deb | head -1)
SRCVER=$(dpkg-deb -f "$IMG" Version)
[ -e "linux-source-${KSER}_${SRCVER}_all.deb" ] || { rm -f linux-source-"${KSER}"_*.deb; apt-get download -qq "linux-source-$KSER=$SRCVER" 2>&1 | grep -v unsandboxed || true; }

for a in $ARCHES; do
  [ -d "$LAB/$a/boot" ] || { log "extract kernel $a"; dpkg -x linux-image-$KABI-${a}_*_$a.deb "$LAB/$a"; }
done
case " $ARCHES " in *" arm64 "*) [ -d "$LAB/busybox-arm64" ] || dpkg -x busybox-static_*_arm64.deb "$LAB/busybox-arm64";; esac
for a in $ARCHES; do
  if [ ! -d "$LAB/kroot/usr/src/linux-headers-$KABI-$a" ]; then
    log "extract headers/kbuild/source ($a)"
    for d in linux-headers-$KABI-common linux-headers-$KABI-$a linux-kbuild-$KSER linux-source-${KSER}_$SRCVER v4l2loopback-dkms; do
      dpkg -x ${d}_*.deb "$LAB/kroot"
    done
    # arch Makefiles include the common tree by absolute path
    sed -i "s|include /usr/src/|include $LAB/kroot/usr/src/|" "$LAB/kroot/usr/src/linux-headers-$KABI-$a/Makefile"
  fi
done
S=$LAB/src/linux-source-$KSER
if [ ! -d "$S/drivers/gpio" ]; then
  log "unpack needed driver sources from linux-source-$KSER.tar.xz"
  mkdir -p "$LAB/src"
  tar -xJf "$LAB/kroot/usr/src/linux-source-$KSER.tar.xz" -C "$LAB/src" --wildcards \
    "linux-source-$KSER/drivers/gpio/*" "linux-source-$KSER/kernel/irq/irq_sim.c" \
    "linux-source-$KSER/drivers/media/test-drivers/*" "linux-source-$KSER/drivers/media/v4l2-core/v4l2-mem2mem.c" \
    "linux-source-$KSER/scripts/extract-vmlinux"
fi
# uncompressed x86 vmlinux: qemu boots it via PVH (-kernel vmlinux), skipping SeaBIOS real-mode setup and the
# XZ decompressor: ~2.5 s faster to a shell under TCG (CONFIG_PVH=y in Debian's amd64 config)
case " $ARCHES " in *" amd64 "*)
  [ -e "$LAB/vmlinux-$KABI-amd64" ] || sh "$S/scripts/extract-vmlinux" "$LAB/amd64/boot/vmlinuz-$KABI-amd64" > "$LAB/vmlinux-$KABI-amd64";; esac

# ---------------------------------------------------------------- 2. out-of-tree modules
E=$LAB/extmod
if [ ! -e "$E/src/Kbuild" ]; then
  mkdir -p "$E/src"; cd "$E/src"
  cp "$S"/drivers/gpio/{gpio-sim.c,gpio-mockup.c,gpiolib.h} "$S"/drivers/media/v4l2-core/v4l2-mem2mem.c \
     "$S"/drivers/media/test-drivers/vim2m.c "$S"/drivers/media/test-drivers/vicodec/*.[ch] \
     "$LAB"/kroot/usr/src/v4l2loopback-*/v4l2loopback{.c,_formats.h} .
  cp "$S"/kernel/irq/irq_sim.c irq_sim_impl.c
  # irq_to_desc() is not exported to modules in 6.1; generic_handle_irq_safe() is equivalent here
  sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq_safe(irqnum);/' irq_sim_impl.c
  printf '#include <linux/module.h>\n#include "irq_sim_impl.c"\nMODULE_LICENSE("GPL");\n' > irq_sim_mod.c
  cat > Kbuild <<'EOF'
obj-m += irq_sim.o gpio-sim.o gpio-mockup.o vicodec.o vim2m.o v4l2loopback.o
irq_sim-objs := irq_sim_mod.o
vicodec-objs := vicodec-core.o codec-fwht.o codec-v4l2-fwht.o
ifeq ($(ARCH),x86)
obj-m += v4l2-mem2mem.o
endif
EOF
fi
for a in $ARCHES; do
  B=$E/build-$a
  if [ ! -e "$B/gpio-sim.ko" ]; then
    log "build out-of-tree modules for $a"
    rm -rf "$B"; cp -a "$E/src" "$B"
    X=(); [ $a = arm64 ] && X=(DEB_BUILD_ARCH=amd64 DEB_HOST_ARCH=arm64 DEB_HOST_GNU_TYPE=aarch64-linux-gnu)
    make -s -j"$(nproc)" -C "$LAB/kroot/usr/src/linux-headers-$KABI-$a" M="$B" "${X[@]}" modules
  fi
  KVER=$KABI-$a
  MD=$LAB/$a/lib/modules/$KVER
  mkdir -p "$MD/extra"
  STRIP=strip; [ $a = arm64 ] && STRIP=aarch64-linux-gnu-strip
  for ko in "$B"/*.ko; do $STRIP --strip-debug -o "$MD/extra/$(basename "$ko")" "$ko"; done
  depmod -b "$LAB/$a" "$KVER"
done

# ---------------------------------------------------------------- 3. initramfs
# module name -> insmod params
declare -A PARAMS=(
  [vivid]="n_devs=1 multiplanar=1"
  [snd-aloop]="index=0 id=Loopback pcm_substreams=2"
  [snd-dummy]="index=1 id=Dummy"
  [gpio-mockup]="gpio_mockup_ranges=-1,8 gpio_mockup_named_lines=1"
  [v4l2loopback]="devices=1 card_label=lab-loopback"
)
for a in $ARCHES; do
  KVER=$KABI-$a
  BASE="virtio_pci 9pnet_virtio 9p virtio_net overlay"   # always loaded (shares, network)
  MODS="vivid snd-aloop configfs irq_sim gpio-sim gpio-mockup vicodec vim2m v4l2loopback"
  [ $a = amd64 ] && MODS="$MODS snd-dummy"          # CONFIG_SND_DUMMY is not set on Debian arm64
  R=$LAB/initramfs-$a; rm -rf "$R"; mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,lib/modules}
  if [ $a = amd64 ]; then cp /bin/busybox "$R/bin/busybox"; else cp "$LAB/busybox-arm64/bin/busybox" "$R/bin/busybox"; fi
  ln -s busybox "$R/bin/sh"                      # /init's #!/bin/sh must exist before --install
  cp "$HERE/init" "$R/init"; chmod 755 "$R/init"
  NETLAB="veth dummy sch_netem sch_tbf sch_htb"   # loaded only with kernel arg lab.netlab=1
  : > "$R/etc/lab-modules-base"; : > "$R/etc/lab-modules"; : > "$R/etc/lab-modules-netlab"
  for list in base dev netlab; do
    case $list in
      base) MS=$BASE; F=$R/etc/lab-modules-base;;
      dev) MS=$MODS; F=$R/etc/lab-modules;;
      netlab) MS=$NETLAB; F=$R/etc/lab-modules-netlab;;
    esac
    for m in $MS; do
      modprobe -d "$LAB/$a" -S "$KVER" --show-depends "$m" | while read -r kw path _; do
        [ "$kw" = insmod ] || continue
        rel=${path#"$LAB/$a"}
        mkdir -p "$R$(dirname "$rel")"; cp -n "$path" "$R$rel"
        n=$(basename "$rel" .ko)
        cat "$R"/etc/lab-modules* | grep -q "^$rel\( \|$\)" || echo "$rel ${PARAMS[$n]:-}" >> "$F"
      done
    done
  done
  (cd "$R" && find . | sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) > "$LAB/initramfs-$a.cpio.gz"
  log "initramfs-$a: $(cat "$R"/etc/lab-modules* | wc -l) modules, $(du -sh "$R" | cut -f1) unpacked, $(du -h "$LAB/initramfs-$a.cpio.gz" | cut -f1) gz"
done
# the static probe tool (optional; any static binary works)
for a in $ARCHES; do
  CC=gcc; [ $a = arm64 ] && CC=aarch64-linux-gnu-gcc
  [ -e "$HERE/labprobe.c" ] && $CC -O2 -static -o "$LAB/bin/labprobe.$a" "$HERE/labprobe.c" -lm
done
log "done"
