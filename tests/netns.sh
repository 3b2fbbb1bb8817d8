#!/usr/bin/env bash
# usage: tests/netns.sh CMD [ARGS...]
# Run CMD in a fresh private network namespace: `lo` up, plus a veth pair lk0/lk1 with 127.0.0.2/8
# on lk0. WebRTC stacks (libwebrtc in the Python SDK, Chromium) never gather candidates on a
# loopback interface, but they do on lk0, so 127.0.0.2 <-> 127.0.0.1 carries ICE/DTLS/RTP while
# nothing can leave the machine (see README "Tests"). When CMD ends, every process still left in
# the namespace is killed, so a crashed test cannot leak a browser or a server into the next one.
# Exit status: CMD's.
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: tests/netns.sh CMD [ARGS...]" >&2
  exit 2
fi

if [ "${ROOMCAST_NETNS:-}" != "$$-inner" ]; then
  # Outer half: create the namespace and re-run this script inside it. Root gets a plain network
  # namespace; without root, a user namespace maps us to root inside it.
  flags=(--net)
  [ "$(id -u)" = 0 ] || flags=(--net --map-root-user)
  exec unshare "${flags[@]}" -- env ROOMCAST_NETNS=pending bash -c \
    'export ROOMCAST_NETNS=$$-inner; exec bash "$0" "$@"' "$0" "$@"
fi

# Inner half: we are pid $$ inside the new namespace.
ip link set lo up
ip link add lk0 type veth peer name lk1
ip addr add 127.0.0.2/8 dev lk0
ip link set lk0 up
ip link set lk1 up
# IPv6 link-local candidates on the veth would only add failing ICE pairs.
for l in lk0 lk1; do echo 1 >/proc/sys/net/ipv6/conf/$l/disable_ipv6 2>/dev/null || true; done
# Children (suites) see this and don't nest another namespace.
export ROOMCAST_IN_NETNS=1

kill_leftovers() {
  local me ns pid
  me=$(readlink /proc/$$/ns/net)
  for sig in TERM KILL; do
    local found=0
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      [ "$pid" = $$ ] && continue
      ns=$(readlink "$d/ns/net" 2>/dev/null) || continue
      if [ "$ns" = "$me" ]; then
        kill -"$sig" "$pid" 2>/dev/null && found=1
      fi
    done
    [ $found = 0 ] && return 0
    [ $sig = TERM ] && for _ in 1 2 3 4 5 6 7 8 9 10; do
      # wait (bounded) for TERMed processes to go before escalating
      local alive=0
      for d in /proc/[0-9]*; do
        [ "${d#/proc/}" = $$ ] && continue
        [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$me" ] && { alive=1; break; }
      done
      [ $alive = 0 ] && return 0
      sleep 0.2
    done
  done
}

status=0
"$@" || status=$?
kill_leftovers
exit $status
