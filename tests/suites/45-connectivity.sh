#!/usr/bin/env bash
# timeout: 420
# Issue 12 acceptance: LiveKit's four media paths (ICE/UDP, TURN/UDP, ICE/TCP, TURN/TLS), each forced by
# nftables rules in the device's own network namespace, against livekit-server's embedded TURN (UDP on 443,
# TLS on 443 with a test CA made at test time) and coturn. The official Python SDK decodes the device's media
# in every case; the device's media_path event and livekit-server's log name the selected pair. Ends with one
# line per case and its time to first media. Needs root (ip netns, nft), nft, turnserver and openssl.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in nft turnserver openssl; do
  command -v "$tool" >/dev/null || { echo "45-connectivity: no $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
"${LIVEKIT_SERVER_BIN:-${ROOMCAST_TOOLS:-$HOME/.cache/roomcast-tools}/livekit/bin/livekit-server}" --version
exec "${ROOMCAST_VENV:-.peers/venv}/bin/python" tests/peers/connectivity.py "$@"
