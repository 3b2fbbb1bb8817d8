#!/usr/bin/env bash
# The one way the tests start the real LiveKit server (scripts/install-livekit-server.sh builds it).
# Must run inside the test namespace (tests/netns.sh): it gives the veth lk0 the address 198.51.100.1
# (TEST-NET-2, so no traffic can reach a real network), writes a config, starts livekit-server in the
# background and waits (with a deadline) until its HTTP port answers.
#
# usage: tests/servers/livekit-server.sh start DIR [--turn]   prints KEY=VALUE lines (also in DIR/env):
#          LIVEKIT_URL LIVEKIT_HTTP LIVEKIT_API_KEY LIVEKIT_API_SECRET LIVEKIT_PID LIVEKIT_LOG
#                                                       LIVEKIT_UDP_PORT LIVEKIT_TCP_PORT (media)
#                                                       (and LIVEKIT_TURN_PORT with --turn)
#        tests/servers/livekit-server.sh stop DIR       SIGTERM, wait (bounded), then SIGKILL
#        tests/servers/livekit-server.sh crash DIR      SIGKILL at once (a crash: nobody is told)
#        tests/servers/livekit-server.sh restart DIR    the same server again: same config and ports
# Environment: LIVEKIT_SERVER_BIN (default: the cached build), LIVEKIT_IP (default 198.51.100.1),
#              LIVEKIT_LOG_LEVEL (default info), LIVEKIT_READY_S (default 30).
#   With --turn: LIVEKIT_TURN_UDP_PORT (default: a free port), and for TURN over TLS
#              LIVEKIT_TURN_DOMAIN + LIVEKIT_TURN_CERT + LIVEKIT_TURN_KEY (PEM files): the TLS
#              listener is on 443, the port livekit-server hard-codes in the turns: URL it hands out.
#   LIVEKIT_TURN_SERVERS: YAML flow sequence for rtc.turn_servers (an external TURN server such as
#              coturn, e.g. [{host: 198.51.100.1, port: 3479, protocol: udp, username: u, credential: p}]).
# Config: one key with a 32-character secret, node_ip = LIVEKIT_IP (every host candidate is that address),
# single UDP (mux) and TCP ports, TURN off unless --turn, STUN servers pointing at the namespace (never the
# public ones), short room timeouts so a test's room does not outlive it, and remote unmute allowed.
set -euo pipefail
TOOLS=${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}
BIN=${LIVEKIT_SERVER_BIN:-$TOOLS/livekit/bin/livekit-server}
IP=${LIVEKIT_IP:-198.51.100.1}
KEY=testkey
SECRET=roomcast-test-secret-0123456789ab   # 32 characters: livekit-server complains about shorter ones

die() { echo "livekit-server.sh: $*" >&2; exit 1; }
free_port() { # free_port tcp|udp: a port the kernel says is free now, on $IP
  python3 - "$1" "$IP" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM)
s.bind((sys.argv[2], 0)); print(s.getsockname()[1])
PY
}

# launch DIR HTTP_PORT: run livekit-server on DIR/livekit.yaml (log appended to DIR/livekit.log)
# and wait, with a deadline, until its HTTP port answers.
launch() {
  local dir=$1 http=$2
  "$BIN" --config "$dir/livekit.yaml" >>"$dir/livekit.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/pid"
  local deadline=$(( $(date +%s) + ${LIVEKIT_READY_S:-30} ))
  # Readiness: GET / answers "OK" once the HTTP listener (and so the room service) is up.
  until [ "$(curl -s --max-time 1 "http://$IP:$http/" 2>/dev/null)" = OK ]; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/livekit.log" >&2; die "livekit-server exited at start-up"; }
    [ "$(date +%s)" -lt "$deadline" ] || { tail -20 "$dir/livekit.log" >&2; stop "$dir"; die "not ready within ${LIVEKIT_READY_S:-30}s"; }
    sleep 0.02   # polling interval of a readiness check with a deadline (restart timing reads it)
  done
}

# restart DIR: the server of an earlier `start DIR` again, same config and ports (after `crash`).
restart() {
  local dir=$1 http
  [ -f "$dir/env" ] || die "restart: no $dir/env (start it first)"
  http=$(sed -n 's/^LIVEKIT_HTTP=.*://p' "$dir/env")
  launch "$dir" "$http"
  local pid
  pid=$(cat "$dir/pid")
  sed -i "s/^LIVEKIT_PID=.*/LIVEKIT_PID=$(cat "$dir/pid")/" "$dir/env"
  cat "$dir/env"
}

# crash DIR: SIGKILL, as a crash or power loss: the server says goodbye to no one.
crash() {
  local dir=$1 pid
  pid=$(cat "$dir/pid" 2>/dev/null) || return 0
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done   # bounded wait for exit
  rm -f "$dir/pid"
}

start() {
  local dir=$1 turn=${2:-}
  [ "${ROOMCAST_IN_NETNS:-}" = 1 ] || die "run inside the test namespace (tests/netns.sh)"
  [ -x "$BIN" ] || die "no livekit-server at $BIN: run scripts/install-livekit-server.sh"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # The UDP mux opens one socket per interface address at start-up, so the address comes first.
  # (Two servers starting at once may race to add it: "exists" is fine.)
  ip -4 addr show dev lk0 | grep -q "inet $IP/" || ip addr add "$IP/24" dev lk0 2>/dev/null ||
    ip -4 addr show dev lk0 | grep -q "inet $IP/" || die "cannot add $IP to lk0"
  local http tcp udp turn_port
  http=$(free_port tcp); tcp=$(free_port tcp); udp=$(free_port udp)
  turn_port=${LIVEKIT_TURN_UDP_PORT:-$(free_port udp)}
  cat >"$dir/livekit.yaml" <<YAML
# generated by tests/servers/livekit-server.sh
port: $http
bind_addresses: ["$IP", "127.0.0.1"]
keys:
  $KEY: "$SECRET"
logging: {level: ${LIVEKIT_LOG_LEVEL:-info}, pion_level: warn}
rtc:
  node_ip: $IP
  use_external_ip: false
  tcp_port: $tcp
  udp_port: $udp
  ips: {includes: ["$IP/32"]}
  # without this, clients are handed Google's STUN servers; this address is inside the namespace
  stun_servers: ["$IP:$turn_port"]
${LIVEKIT_TURN_SERVERS:+  turn_servers: $LIVEKIT_TURN_SERVERS}
room:
  empty_timeout: 10
  departure_timeout: 2
  # RoomService.MutePublishedTrack(muted=false) is refused (412 "remote unmute not enabled") without it
  enable_remote_unmute: true
YAML
  if [ "$turn" = --turn ]; then
    cat >>"$dir/livekit.yaml" <<YAML
turn:
  enabled: true
  udp_port: $turn_port
  bind_addresses: ["$IP"]
  relay_range_start: 30000
  relay_range_end: 30100
YAML
    if [ -n "${LIVEKIT_TURN_DOMAIN:-}" ]; then
      cat >>"$dir/livekit.yaml" <<YAML
  domain: $LIVEKIT_TURN_DOMAIN
  tls_port: 443
  cert_file: $LIVEKIT_TURN_CERT
  key_file: $LIVEKIT_TURN_KEY
YAML
    fi
  fi
  launch "$dir" "$http"
  local pid
  pid=$(cat "$dir/pid")
  {
    echo "LIVEKIT_URL=ws://$IP:$http"
    echo "LIVEKIT_HTTP=http://$IP:$http"
    echo "LIVEKIT_API_KEY=$KEY"
    echo "LIVEKIT_API_SECRET=$SECRET"
    echo "LIVEKIT_PID=$pid"
    echo "LIVEKIT_LOG=$dir/livekit.log"
    echo "LIVEKIT_UDP_PORT=$udp"
    echo "LIVEKIT_TCP_PORT=$tcp"
    [ "$turn" = --turn ] && echo "LIVEKIT_TURN_PORT=$turn_port"
  } >"$dir/env"
  cat "$dir/env"
}

stop() {
  local dir=$1 pid
  pid=$(cat "$dir/pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done   # bounded wait for exit
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  start) [ $# -ge 2 ] || die "usage: $0 start DIR [--turn]"; start "$2" "${3:-}" ;;
  restart) [ $# -ge 2 ] || die "usage: $0 restart DIR"; restart "$2" ;;
  crash) [ $# -ge 2 ] || die "usage: $0 crash DIR"; crash "$2" ;;
  stop) [ $# -ge 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
  *) die "usage: $0 start DIR [--turn] | stop DIR | crash DIR | restart DIR" ;;
esac
