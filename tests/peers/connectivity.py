#!/usr/bin/env python3
"""Connectivity cases (issue 12): LiveKit's four media paths, each forced by nftables rules in the
device's own network namespace, against the real livekit-server's embedded TURN (UDP and TLS, with
a test CA made here by openssl) and against coturn as a second, independent TURN server.

Runs inside tests/netns.sh (the server's namespace, 198.51.100.1 on lk0). The device gets a
namespace of its own (`ip netns`, so /etc/netns/<ns>/hosts maps the TURN/TLS domain) joined to
the server's by a veth pair on 203.0.113.0/24; its firewall rules only ever name 198.51.100.1 and
ports. Per case: the official Python SDK subscribes and must decode the device's video and audio;
the device's `media_path` event must name the expected path; livekit-server's debug log must show
the matching pair on its side. Prints one line per case with the time to first media.

usage: connectivity.py [CASE ...] [--json FILE] [--repeat N]    (default: every case, once)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import netlab
from netlab import DEVROOM, PY_PEER, PYTHON, ROOMCAST, ROOT, Lines

IP = "198.51.100.1"
DEV_IP, GW_IP = "203.0.113.2", "203.0.113.1"
DOMAIN = "turn.lk.test"
COTURN_PORT, COTURN_USER, COTURN_PASS = 3479, "coturn", "coturn-test-pass"
COTURN_RELAY = (40000, 40100)
LK_RELAY = (30000, 30100)
NS = f"rcdev{os.getpid()}"
LOGS = Path(os.environ.get("ROOMCAST_TEST_LOGS", ROOT / "target/test-logs")) / "connectivity"


def run(*cmd: str, ns: bool = False, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """A command here (the server's namespace) or, with ns=True, in the device's."""
    return netlab.run(*cmd, ns=NS if ns else None, check=check, **kw)


def stun_answers(port: int, timeout: float) -> bool:
    """A STUN Binding request to IP:port gets an answer (the TURN server is up)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s.sendto(struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12)), (IP, port))
            try:
                data, _ = s.recvfrom(2048)
                if data[:2] == b"\x01\x01":
                    return True
            except socket.timeout:
                pass  # retransmit, like any STUN client
        return False
    finally:
        s.close()


class World:
    def __init__(self) -> None:
        shutil.rmtree(LOGS, ignore_errors=True)
        LOGS.mkdir(parents=True)
        self.dir = Path(tempfile.mkdtemp(prefix="roomcast-conn-"))
        self.coturn = None
        try:
            # The server's address first (livekit-server.sh would add it too): coturn binds it.
            if f"inet {IP}/" not in run("ip", "-4", "addr", "show", "dev", "lk0").stdout:
                run("ip", "addr", "add", f"{IP}/24", "dev", "lk0")
            self.make_ca()
            self.make_device_ns()
            self.start_coturn()
        except BaseException:
            self.close()
            raise

    def make_ca(self) -> None:
        d = self.dir
        ossl = lambda *a: run("openssl", *a, cwd=d)  # noqa: E731
        ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=roomcast test CA")
        ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "turn.key", "-out", "turn.csr", "-subj", f"/CN={DOMAIN}")
        (d / "ext").write_text(f"subjectAltName=DNS:{DOMAIN}\n")
        ossl("x509", "-req", "-in", "turn.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "turn.crt", "-days", "1", "-extfile", "ext")

    def make_device_ns(self) -> None:
        run("ip", "netns", "add", NS)
        run("ip", "link", "add", "rcd0", "type", "veth", "peer", "name", "rcd1", "netns", NS)
        run("ip", "addr", "add", f"{GW_IP}/24", "dev", "rcd0")
        run("ip", "link", "set", "rcd0", "up")
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{DEV_IP}/24", "dev", "rcd1"],
                    ["ip", "link", "set", "rcd1", "up"], ["ip", "route", "add", "default", "via", GW_IP]):
            run(*cmd, ns=True)
        run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=True, check=False)
        hosts = Path("/etc/netns") / NS
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts").write_text(f"127.0.0.1 localhost\n{IP} {DOMAIN}\n")

    def start_coturn(self) -> None:
        log = open(LOGS / "coturn.log", "w")
        self.coturn = subprocess.Popen(
            ["turnserver", "-n", "--listening-ip", IP, "--listening-port", str(COTURN_PORT),
             "--relay-ip", IP, "--min-port", str(COTURN_RELAY[0]), "--max-port", str(COTURN_RELAY[1]),
             "--lt-cred-mech", "--user", f"{COTURN_USER}:{COTURN_PASS}", "--realm", "lk.test",
             "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay", "--log-file", "stdout", "--simple-log",
             "--allowed-peer-ip", IP, "--pidfile", str(self.dir / "coturn.pid")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not stun_answers(COTURN_PORT, 10):
            raise AssertionError("coturn does not answer STUN on its port")

    def start_livekit(self, name: str, tls: bool, coturn: bool) -> dict:
        d = self.dir / f"lk-{name}"
        env = dict(os.environ, LIVEKIT_LOG_LEVEL="debug")
        args = []
        if coturn:
            env["LIVEKIT_TURN_SERVERS"] = (f"[{{host: {IP}, port: {COTURN_PORT}, protocol: udp, "
                                           f"username: {COTURN_USER}, credential: {COTURN_PASS}}}]")
        else:
            args = ["--turn"]
            env["LIVEKIT_TURN_UDP_PORT"] = "443"
            if tls:
                env.update(LIVEKIT_TURN_DOMAIN=DOMAIN, LIVEKIT_TURN_CERT=str(self.dir / "turn.crt"),
                           LIVEKIT_TURN_KEY=str(self.dir / "turn.key"))
        return netlab.livekit_start(d, *args, env=env)

    def stop_livekit(self, lk: dict) -> None:
        if "proc" in lk:  # devroom
            lk["proc"].terminate()
            lk["proc"].wait(10)
            return
        netlab.livekit_stop(lk, keep_log_in=LOGS)

    def start_devroom(self) -> dict:
        """devroom with passive ICE-TCP, handing out coturn as its TURN server."""
        proc = subprocess.Popen(
            [DEVROOM, "--listen", f"{IP}:0", "--keys", "devkey:secret", "--media-ip", IP, "--ice-tcp",
             "--ice-server", f"turn:{IP}:{COTURN_PORT}?transport=udp|{COTURN_USER}|{COTURN_PASS}",
             "--frame-dir", str(self.dir / "frames")],
            stdout=subprocess.PIPE, stderr=open(LOGS / "devroom.log", "w"), text=True)
        line = proc.stdout.readline().strip()  # blocks until devroom says it listens (or exits)
        if not line.startswith("devroom listening on "):
            proc.kill()
            raise AssertionError(f"devroom did not start: {line!r}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        url = line.removeprefix("devroom listening on ")
        return {"LIVEKIT_URL": url, "LIVEKIT_HTTP": url.replace("ws:", "http:"), "LIVEKIT_API_KEY": "devkey",
                "LIVEKIT_API_SECRET": "secret", "LIVEKIT_UDP_PORT": "0", "LIVEKIT_TCP_PORT": "0",
                "proc": proc}

    def firewall(self, rules: list[str]) -> None:
        run("nft", "flush", "ruleset", ns=True)
        # Loopback stays open: the TURN/TLS relay listens on 127.0.0.1 inside the device.
        body = "\n".join(f"    {r}" for r in ['oifname "lo" accept'] + rules)
        text = (f"table inet roomcast_test {{\n  chain out {{\n    type filter hook output priority 0; "
                f"policy accept;\n{body}\n  }}\n}}\n")
        run("nft", "-f", "-", ns=True, input=text)

    def close(self) -> None:
        if self.coturn and self.coturn.poll() is None:
            self.coturn.terminate()
            self.coturn.wait(10)
        run("ip", "netns", "del", NS, check=False)
        shutil.rmtree(Path("/etc/netns") / NS, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# name: (server setup, nft rules given the server's ports, expected path, TURN server in use)
def cases(lk_ports: dict) -> dict:
    http, udp, tcp = lk_ports["http"], lk_ports["udp"], lk_ports["tcp"]
    return {
        "udp": ("embedded", [], "udp"),
        # The same over /rtc, where the PeerConnection is built when the JoinResponse is in: against
        # "udp" (/rtc/v1: the first offer rides in join_request and gathering waits for the
        # JoinResponse), what each gathering order costs in time to first media.
        "udp-v0": ("embedded", [], "udp"),
        # Nothing blocked, but the config's force_relay: only relay candidates may be used.
        "force-relay-config": ("embedded", [], "turn/udp"),
        "turn-udp-media-blocked": ("embedded", [f"ip daddr {IP} udp dport {udp} drop"], "turn/udp"),
        "turn-udp-only-443": ("embedded", ["meta l4proto udp udp dport != 443 drop"], "turn/udp"),
        "tcp-all-udp-blocked": ("embedded", ["meta l4proto udp drop"], "tcp"),
        "turn-tls-only-tcp-443": ("embedded", ["meta l4proto udp drop",
                                               f"ip daddr {IP} tcp dport != {{ {http}, 443 }} drop"],
                                  "turn/tls"),
        "devroom-tcp-all-udp-blocked": ("devroom", ["meta l4proto udp drop"], "tcp"),
        "devroom-coturn-udp-only-turn": ("devroom", [f"meta l4proto udp udp dport != {COTURN_PORT} drop",
                                                     "meta l4proto tcp tcp dport != " + http + " drop"],
                                         "turn/udp"),
        "coturn-udp-media-blocked": ("coturn", [f"ip daddr {IP} udp dport {udp} drop",
                                                f"ip daddr {IP} tcp dport {tcp} drop"], "turn/udp"),
    }


def ports_of(lk: dict) -> dict:
    return {"http": lk["LIVEKIT_HTTP"].rsplit(":", 1)[1], "udp": lk["LIVEKIT_UDP_PORT"],
            "tcp": lk["LIVEKIT_TCP_PORT"]}


def one_case(world: World, lk: dict, name: str, rules: list[str], expect: str, turn: str,
             run: int = 0) -> dict:
    world.firewall(rules)
    tag = f"{name}.{run}" if run else name  # files and room of this run
    room = f"conn-{tag}"
    key, secret = lk["LIVEKIT_API_KEY"], lk["LIVEKIT_API_SECRET"]
    sub = subprocess.Popen(
        [PYTHON, PY_PEER, "--url", lk["LIVEKIT_URL"], "--key", key,
         "--secret", secret, "--room", room, "--identity", "sub", "--publish", "none",
         "--expect-video", "20", "--expect-audio", "20", "--expect-from", "dev", "--stay", "60"],
        stdout=subprocess.PIPE, stderr=open(LOGS / f"{tag}.sub.stderr", "w"), text=True)
    dev = None
    try:
        sub_out = Lines(sub, LOGS / f"{tag}.sub.jsonl")
        sub_out.wait_for(lambda e: e.get("event") == "connected", 30, "the subscriber to connect")
        cfg = netlab.roomcast_config(
            world.dir, tag, lk, room, "dev", fps=15,
            extra=f'ca_file = "{world.dir / "ca.pem"}"\n'
                  f'force_relay = {"true" if name.startswith("force-relay") else "false"}\n'
                  f'signal_path = "{"v0" if name.endswith("-v0") else "v1"}"\n')
        t0 = time.monotonic()
        dev = subprocess.Popen(
            ["ip", "netns", "exec", NS, ROOMCAST, "run", "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=open(LOGS / f"{tag}.dev.stderr", "w"), text=True,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1"))
        dev_out = Lines(dev, LOGS / f"{tag}.dev.jsonl")
        _, path = dev_out.wait_for(lambda e: e.get("event") == "media_path", 40, "the device's media_path event")
        t_video, _ = sub_out.wait_for(lambda e: e.get("event") == "first_frame" and e.get("kind") == "video",
                                      40, "the subscriber's first decoded video frame")
        sub_out.wait_for(lambda e: e.get("event") == "expectations_met", 40,
                         "20 decoded video and 20 audio frames at the subscriber")
        ttfm = t_video - t0
        assert path["path"] == expect, f"{name}: expected {expect}, the device chose {path}"
        local = path["local"]
        if expect.startswith("turn/"):
            # devroom hands out coturn; livekit-server either its own TURN or coturn.
            lo, hi = COTURN_RELAY if turn in ("coturn", "devroom") else LK_RELAY
            port = int(local.rsplit(":", 1)[1])
            assert lo <= port <= hi, f"{name}: relay candidate {local} is not from the expected TURN server's relay range"
        server_pair = (server_side_pair(Path(lk["LIVEKIT_LOG"]), expect, local) if "LIVEKIT_LOG" in lk
                       else "(devroom does not log pairs)")
        return {"case": name, "path": path["path"], "local": local, "remote": path["remote"],
                "ttfm_ms": int(ttfm * 1000), "server": server_pair}
    finally:
        for p in (dev, sub):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def server_side_pair(log: Path, expect: str, device_local: str) -> str:
    """livekit-server's 'selected ICE candidate pair changed' (debug) for the device, checked
    against the expected path: its remote candidate is the device's relay address for TURN, a TCP
    candidate for ICE/TCP, a UDP host candidate on the device's address for UDP."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines()
             if "selected ICE candidate pair" in ln and '"dev"' in ln]
    if not lines:
        return "(no 'selected ICE candidate pair' line for dev in the server log)"
    pairs = []
    for line in lines:
        m = re.search(r'"pair": (\{[^}]*\})', line)
        if m:
            pairs.append(json.loads(m.group(1)))
    if not pairs:
        return "(unreadable pair: " + lines[-1][-200:] + ")"
    # livekit-server shortens addresses in its logs ("203.0.11..."), so ports and types are compared.
    dev_port = int(device_local.rsplit(":", 1)[1])
    # On /rtc the device has two PeerConnections, and the server logs a pair for each: the
    # publisher's is the one that ends at the device's reported (publisher) candidate.
    pair = next((p for p in reversed(pairs) if p.get("remotePort") == dev_port), pairs[-1])
    shown = (f"{pair.get('remoteCandidateType')} {pair.get('remoteProtocol')} "
             f"{pair.get('remoteAddress')}:{pair.get('remotePort')}")
    if expect == "tcp":
        assert pair.get("remoteProtocol") == "tcp", f"server's pair {pair} is not TCP"
    else:
        assert pair.get("remoteProtocol") == "udp" and pair.get("remotePort") == dev_port, \
            f"server's pair {pair} does not end at the device's {device_local}"
    return shown


def main() -> int:
    args = sys.argv[1:]
    json_out, repeat = None, 1
    if "--json" in args:  # the benchmark's way in (tests/bench/bench.py): the figures in a file too
        i = args.index("--json")
        json_out = Path(args[i + 1])
        del args[i:i + 2]
    if "--repeat" in args:  # each case this many times (the benchmark's medians)
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i:i + 2]
    wanted = args
    world = World()
    results, failures = [], []
    try:
        for setup in ("embedded", "coturn", "devroom"):
            setup_of = {n: c[0] for n, c in cases({"http": "0", "udp": "0", "tcp": "0"}).items()}
            if wanted and setup not in {setup_of.get(n) for n in wanted}:
                continue
            if setup == "devroom":
                lk = world.start_devroom()
            else:
                lk = world.start_livekit(setup, tls=setup == "embedded", coturn=setup == "coturn")
            try:
                for name, (s, rules, expect) in cases(ports_of(lk)).items():
                    if s != setup or (wanted and name not in wanted):
                        continue
                    for run in range(repeat):
                        print(f"--- {name}: rules {rules or '(none)'}; expect {expect}", flush=True)
                        try:
                            r = one_case(world, lk, name, rules, expect, setup, run)
                            results.append(r)
                            print(json.dumps(r), flush=True)
                        except AssertionError as e:
                            failures.append(name)
                            print(f"FAIL {name}: {e}", flush=True)
                            tag = f"{name}.{run}" if run else name
                            tail = (LOGS / f"{tag}.dev.stderr").read_text(errors="replace").splitlines()[-15:]
                            print("\n".join(f"  dev.stderr| {ln}" for ln in tail), flush=True)
            finally:
                world.stop_livekit(lk)
    finally:
        world.close()
    print("\n=== connectivity: one line per case (time to first media = device start -> first decoded "
          "video frame at the SDK subscriber)")
    for r in results:
        print(f"PASS {r['case']:<26} path={r['path']:<9} ttfm={r['ttfm_ms']:>5} ms  "
              f"device: {r['local']} <-> {r['remote']}  server: {r['server']}")
    for name in failures:
        print(f"FAIL {name}")
    if json_out:
        json_out.write_text(json.dumps({"results": results, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
