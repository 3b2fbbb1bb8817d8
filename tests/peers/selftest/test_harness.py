"""The harness checks itself: namespace, pinned SDKs, token minting, both peer drivers."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[1]
PY = sys.executable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def run_peer(cmd: list[str], timeout: float) -> tuple[int, list[dict]]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=PEERS, stdin=subprocess.DEVNULL)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines and "summary" in lines[-1], f"no summary line:\n{out.stdout}\n{out.stderr[-2000:]}"
    return out.returncode, lines


def test_runs_inside_the_test_namespace() -> None:
    assert os.environ.get("ROOMCAST_IN_NETNS") == "1", "run through tests/netns.sh"
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    seen = {(line.split()[1], line.split()[3]) for line in addrs.splitlines()}
    assert seen == {("lo", "127.0.0.1/8"), ("lk0", "127.0.0.2/8")}, seen
    routes = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True).stdout
    assert routes.strip() == "", f"the namespace must have no default route: {routes}"


def test_nothing_leaves_the_namespace() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(OSError):
        s.sendto(b"x", ("192.0.2.1", 9))  # TEST-NET-1: unreachable without a route


def test_udp_between_127_0_0_2_and_127_0_0_1() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.2", 0))
    tx.sendto(b"ping", rx.getsockname())
    data, addr = rx.recvfrom(16)
    assert data == b"ping" and addr[0] == "127.0.0.2"


def test_pinned_python_sdk() -> None:
    from livekit import api, rtc

    assert rtc.__version__ == "1.2.1"
    assert api.__version__ == "1.2.2"


def test_pinned_js_sdk() -> None:
    pkgs = PEERS / "js" / "node_modules"
    for name, version in [("livekit-client", "2.23.0"), ("livekit-server-sdk", "2.19.2"), ("playwright-core", "1.65.1")]:
        assert json.loads((pkgs / name / "package.json").read_text())["version"] == version
    assert Path("/usr/lib/chromium/chromium").exists()


def test_minted_token_verifies_in_both_sdks() -> None:
    from livekit import api

    token = subprocess.run([PY, "mint_token.py", "alice", "room-1"], capture_output=True, text=True, check=True,
                           cwd=PEERS).stdout.strip()
    claims = api.TokenVerifier("devkey", "secret").verify(token)
    assert claims.identity == "alice" and claims.video.room == "room-1" and claims.video.room_join
    js = ("import {TokenVerifier} from 'livekit-server-sdk';"
          "const c = await new TokenVerifier('devkey','secret').verify(process.argv[1]);"
          "console.log(JSON.stringify(c));")
    out = subprocess.run(["node", "--input-type=module", "-e", js, token], capture_output=True, text=True,
                         cwd=PEERS / "js", check=True).stdout
    assert json.loads(out)["sub"] == "alice"


def test_expired_and_wrongly_signed_tokens_fail_verification() -> None:
    from livekit import api

    for extra in (["--ttl", "-600"], ["--secret", "other"]):
        token = subprocess.run([PY, "mint_token.py", "bob", "room-1", *extra], capture_output=True, text=True,
                               check=True, cwd=PEERS).stdout.strip()
        with pytest.raises(Exception):
            api.TokenVerifier("devkey", "secret").verify(token)


def test_py_peer_reports_a_refused_connection() -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    rc, lines = run_peer([PY, "py_peer.py", "--url", url, "--stay", "20"], 60)
    assert rc == 1 and lines[-1]["summary"]["connected"] is False
    assert any(e.get("event") == "connect_failed" for e in lines)
    rc, lines = run_peer([PY, "py_peer.py", "--url", url, "--stay", "20", "--expect-connect-error", "refused"], 60)
    assert rc == 0, lines


def test_browser_peer_reports_a_refused_connection() -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    rc, lines = run_peer(["node", "js/browser_peer.mjs", "--url", url, "--stay", "20"], 90)
    assert rc == 1 and lines[-1]["summary"]["connected"] is False
    connecting = next(e for e in lines if e.get("event") == "connecting")
    assert connecting["version"] == "2.23.0"
    assert any(e.get("event") == "connect_failed" for e in lines)
