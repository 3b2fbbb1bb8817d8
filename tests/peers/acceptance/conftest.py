"""Shared pieces of the official-SDK acceptance tests against `roomcast devroom`.

Everything here waits on events with deadlines (devroom's /admin/events long-poll, the peers'
JSON lines); nothing sleeps to let time pass. Must run inside tests/netns.sh.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
PEERS = ROOT / "tests" / "peers"
PY_PEER = PEERS / "py_peer.py"
BROWSER_PEER = PEERS / "js" / "browser_peer.mjs"
LOG_ROOT = Path(os.environ.get("ROOMCAST_TEST_LOGS") or ROOT / "target" / "test-logs")


def roomcast_bin() -> Path:
    if os.environ.get("ROOMCAST_BIN"):
        return Path(os.environ["ROOMCAST_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return target / "debug" / "roomcast"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("ROOMCAST_IN_NETNS") != "1":
        pytest.exit("run these tests inside the test namespace: tests/netns.sh <venv>/bin/python -m pytest ...",
                    returncode=3)
    if not roomcast_bin().exists():
        pytest.exit(f"no roomcast binary at {roomcast_bin()}: run `cargo build` (or set ROOMCAST_BIN)", returncode=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_dir(request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    d = LOG_ROOT / Path(request.node.fspath).stem / name
    d.mkdir(parents=True, exist_ok=True)
    return d


class LineReader:
    """Reads a process's stdout on a thread, keeps every line, lets tests wait on a condition."""

    def __init__(self, stream, logfile: Path, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.json: list[dict] = []
        self.cond = threading.Condition()
        self.closed = False
        self._log = open(logfile, "w")
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self._log.write(line + "\n")
            self._log.flush()
            obj = None
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
            with self.cond:
                self.lines.append(line)
                if isinstance(obj, dict):
                    self.json.append(obj)
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for obj in self.json[seen:]:
                    if pred(obj):
                        return obj
                seen = len(self.json)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"{self.name}: {what} not seen within {timeout:.0f}s"
                                         f"{' (process output ended)' if self.closed else ''}\n{self.tail()}")
                self.cond.wait(left)

    def wait_line(self, pattern: str, timeout: float, what: str) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"{self.name}: {what} not seen within {timeout:.0f}s\n{self.tail()}")
                self.cond.wait(left)

    def tail(self, n: int = 25) -> str:
        with self.cond:
            return "\n".join(f"  {self.name}| {line}" for line in self.lines[-n:])


class DevRoom:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.url = f"ws://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.after = 0
        self.events: list[dict] = []
        frames = workdir / "frames"
        frames.mkdir(exist_ok=True)
        self.stderr = open(workdir / "devroom.stderr", "w")
        cmd = [str(roomcast_bin()), "devroom", "--listen", f"127.0.0.1:{self.port}", "--keys", "devkey:secret",
               "--frame-dir", str(frames)]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, env=env)
        self.out = LineReader(self.proc.stdout, workdir / "devroom.stdout", "devroom")
        try:
            m = self.out.wait_line(r"devroom listening on (ws://\S+)", 30, "the 'devroom listening on' line")
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}\n{self.stderr_tail()}") from None
        self.url = m.group(1)
        self.http = "http" + self.url[2:]

    def stderr_tail(self, n: int = 40) -> str:
        self.stderr.flush()
        try:
            lines = (self.workdir / "devroom.stderr").read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("  devroom.stderr| " + line for line in lines)

    def request(self, method: str, path: str, body: Optional[dict] = None, timeout: float = 10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data, method=method,
                                     headers={"content-type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return json.loads(text) if text.strip() else None

    def rooms(self) -> dict:
        return self.request("GET", "/admin/rooms")

    def fault(self, name: str, body: dict) -> None:
        self.request("POST", f"/admin/fault/{name}", body)

    def poll_events(self, wait_ms: int) -> list[dict]:
        got = self.request("GET", f"/admin/events?after={self.after}&wait_ms={wait_ms}",
                           timeout=wait_ms / 1000 + 10)["events"]
        for ev in got:
            self.after = max(self.after, int(ev.get("seq", 0)))
        self.events.extend(got)
        return got

    def wait_event(self, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
        """Wait (long-poll, with a deadline) for an event matching pred; past events count too."""
        for ev in self.events:
            if pred(ev):
                return ev
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"devroom: {what} not seen within {timeout:.0f}s; events so far:\n"
                                     + "\n".join("  " + json.dumps(e) for e in self.events[-30:])
                                     + "\n" + self.stderr_tail())
            for ev in self.poll_events(int(min(left, 5) * 1000)):
                if pred(ev):
                    return ev

    def stop(self) -> None:
        try:  # keep every event for the logs
            self.poll_events(0)
        except Exception:
            pass
        with open(self.workdir / "devroom.events.jsonl", "w") as f:
            for ev in self.events:
                f.write(json.dumps(ev) + "\n")
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


class Peer:
    """One official-SDK peer process (py_peer.py or browser_peer.mjs)."""

    count = 0

    def __init__(self, sdk: str, workdir: Path, identity: str, args: list[str], stay: float) -> None:
        self.sdk = sdk
        self.identity = identity
        self.stay = stay
        if sdk == "py":
            cmd = [sys.executable, str(PY_PEER)]
        elif sdk == "browser":
            cmd = ["node", str(BROWSER_PEER)]
        else:
            raise ValueError(sdk)
        cmd += ["--identity", identity, "--stay", str(stay)] + args
        self.cmd = cmd
        name = f"{sdk}:{identity}"
        Peer.count += 1
        stem = f"{Peer.count:02d}-{sdk}-{identity}"  # two peers may share an identity
        self.stderr = open(workdir / f"{stem}.stderr", "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL,
                                     cwd=PEERS)
        self.out = LineReader(self.proc.stdout, workdir / f"{stem}.jsonl", name)
        self.workdir = workdir

    def wait_event(self, name: str, timeout: float, pred: Callable[[dict], bool] = lambda e: True) -> dict:
        return self.out.wait_for(lambda e: e.get("event") == name and pred(e), timeout, f"event {name!r}")

    def stop(self) -> None:
        """Ask the peer to leave (SIGTERM → it disconnects and prints its summary)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def finish(self, timeout: float) -> tuple[int, dict]:
        """Wait for exit; returns (exit code, summary)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.sdk}:{self.identity} did not exit within {timeout:.0f}s\n{self.out.tail()}")
        self.out._t.join(5)
        summaries = [o["summary"] for o in self.out.json if "summary" in o]
        if not summaries:
            raise AssertionError(f"{self.sdk}:{self.identity} exited {rc} without a summary\n{self.out.tail()}\n"
                                 + self.stderr_tail())
        return rc, summaries[-1]

    def stderr_tail(self, n: int = 25) -> str:
        self.stderr.flush()
        lines = Path(self.stderr.name).read_text(errors="replace").splitlines()[-n:]
        return "\n".join(f"  {self.sdk}:{self.identity}.stderr| {line}" for line in lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


class World:
    """A devroom plus the peers a test started; torn down (and logs kept) by the fixture."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.devroom = DevRoom(workdir)
        self.peers: list[Peer] = []

    def peer(self, sdk: str, identity: str, *args: str, stay: float = 40, room: str = "test-room",
             spc: Optional[str] = None, token: Optional[str] = None) -> Peer:
        full = ["--url", self.devroom.url, "--room", room]
        if spc is not None:
            full += ["--spc", spc]
        if token is not None:
            full += ["--token", token]
        p = Peer(sdk, self.workdir, identity, full + list(args), stay)
        self.peers.append(p)
        return p

    def diagnostics(self) -> str:
        parts = [p.out.tail() + "\n" + p.stderr_tail(10) for p in self.peers]
        parts.append(self.devroom.stderr_tail())
        return "\n".join(parts)

    def close(self) -> None:
        for p in self.peers:
            p.stop()
        for p in self.peers:
            try:
                p.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            p.kill()
        self.devroom.stop()


@pytest.fixture
def world(request: pytest.FixtureRequest):
    w = World(log_dir(request))
    yield w
    w.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        print(f"\n(logs: {LOG_ROOT})")


def report(case: str, ok: bool, detail: str) -> None:
    """One clear line per checked case, printed live (pytest -s) and kept in the log."""
    line = f"{'PASS' if ok else 'FAIL'} {case}: {detail}"
    print(line, flush=True)
    LOG_ROOT.mkdir(parents=True, exist_ok=True)
    with open(LOG_ROOT / "cases.txt", "a") as f:
        f.write(line + "\n")


def mint(identity: str, room: str = "test-room", *extra: str) -> str:
    out = subprocess.run([sys.executable, str(PEERS / "mint_token.py"), identity, room, *extra],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def track_summary(received: dict, frm: str) -> dict:
    """{"video": {...best video track from identity frm...}, "audio": {...}}."""
    best: dict = {}
    for key, rec in received.items():
        if key.split("/", 1)[0] != frm:
            continue
        kind = rec["kind"]
        if kind not in best or rec["frames"] > best[kind]["frames"]:
            best[kind] = dict(rec, key=key)
    return best
