"""Shared pieces of the official-SDK acceptance tests, run against devroom and against the real
livekit-server (the `server` fixture is parametrized by both; ROOMCAST_TEST_SERVERS narrows it).

Everything here waits on events with deadlines (devroom's /admin/events long-poll, the peers'
JSON lines, roomcast's JSON event lines, RoomService answers polled against a deadline); nothing
sleeps to let time pass. Must run inside tests/netns.sh.
"""
from __future__ import annotations

import asyncio
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
LIVEKIT_HELPER = ROOT / "tests" / "servers" / "livekit-server.sh"
# The servers a test runs against: both unless ROOMCAST_TEST_SERVERS (comma-separated) says otherwise.
SERVERS = [s for s in os.environ.get("ROOMCAST_TEST_SERVERS", "devroom,livekit").split(",") if s]


def roomcast_bin() -> Path:
    if os.environ.get("ROOMCAST_BIN"):
        return Path(os.environ["ROOMCAST_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return target / "debug" / "roomcast"


def devroom_cmd() -> list[str]:
    """The one place that knows how devroom is started: DEVROOM_BIN when set (scripts/test.sh
    exports it), else the debug build of the devroom crate (tests/devroom)."""
    if os.environ.get("DEVROOM_BIN"):
        return [os.environ["DEVROOM_BIN"]]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return [str(target / "debug" / "devroom")]


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


class ServerApi:
    """What every test server offers: its URL and key, tokens, and RoomService (Twirp) through the
    official `livekit-api` package, which both devroom and livekit-server answer."""

    kind = ""
    url = ""
    http = ""
    key = ""
    secret = ""

    def token(self, identity: str, room: str, ttl_s: int = 3600) -> str:
        from livekit import api
        import datetime

        return (api.AccessToken(self.key, self.secret).with_identity(identity).with_name(identity)
                .with_ttl(datetime.timedelta(seconds=ttl_s))
                .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                                             can_publish_data=True)).to_jwt())

    def api(self, call: Callable):
        """Run `await call(LiveKitAPI)` and return its result, e.g.
        server.api(lambda lk: lk.room.list_participants(api.ListParticipantsRequest(room="r")))."""
        from livekit import api

        async def go():
            lk = api.LiveKitAPI(self.http, self.key, self.secret)
            try:
                return await asyncio.wait_for(call(lk), 10)
            finally:
                await lk.aclose()

        return asyncio.run(go())

    def participants(self, room: str) -> list:
        """ListParticipants; a room that does not exist (yet, or any more) has none."""
        from livekit import api

        try:
            return list(self.api(lambda lk: lk.room.list_participants(api.ListParticipantsRequest(room=room)))
                        .participants)
        except api.TwirpError as e:
            if e.code == "not_found" or "not found" in (e.message or "").lower():
                return []
            raise

    def wait_participants(self, room: str, pred: Callable[[list], bool], timeout: float, what: str) -> list:
        """Ask ListParticipants until pred(participants) holds; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.participants(room)
            if pred(got):
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.kind}: {what} not seen within {timeout:.0f}s; ListParticipants("
                                     f"{room}) = {[(p.identity, p.sid, p.state) for p in got]}\n"
                                     + self.stderr_tail())
            time.sleep(0.05)  # interval of a condition poll with a deadline

    def stderr_tail(self, n: int = 40) -> str:
        return ""


class LiveKitServer(ServerApi):
    """The real livekit-server, started by tests/servers/livekit-server.sh in this namespace."""

    kind = "livekit"

    def __init__(self, workdir: Path, turn: bool = False) -> None:
        self.dir = workdir / "livekit-server"
        cmd = ["bash", str(LIVEKIT_HELPER), "start", str(self.dir)] + (["--turn"] if turn else [])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        if out.returncode != 0:
            raise AssertionError(f"livekit-server did not start: {out.stderr.strip()}")
        env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        self.url, self.http = env["LIVEKIT_URL"], env["LIVEKIT_HTTP"]
        self.key, self.secret = env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        self.port = int(self.http.rsplit(":", 1)[1])
        self.log = Path(env["LIVEKIT_LOG"])

    def stderr_tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("  livekit-server| " + line for line in lines)

    def drop_ws(self, pid: int) -> int:
        """Kill (ss -K) the TCP connections process `pid` holds to our HTTP/WebSocket port, as a broken
        network would. Returns how many were killed."""
        out = subprocess.run(["ss", "-tnpH", "state", "established", "dport", "=", f":{self.port}"],
                             capture_output=True, text=True, check=True).stdout
        ports = [line.split()[2].rsplit(":", 1)[1] for line in out.splitlines() if f"pid={pid}," in line]
        for lport in ports:
            subprocess.run(["ss", "-K", "-tnH", "dport", "=", f":{self.port}", "sport", "=", f":{lport}"],
                           capture_output=True, check=True)
        return len(ports)

    def stop(self) -> None:
        subprocess.run(["bash", str(LIVEKIT_HELPER), "stop", str(self.dir)], capture_output=True, timeout=30)


class DevRoom(ServerApi):
    kind = "devroom"
    key = "devkey"
    secret = "secret"

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
        cmd = devroom_cmd() + ["--listen", f"127.0.0.1:{self.port}", "--keys", "devkey:secret",
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


def start_server(kind: str, workdir: Path):
    if kind == "devroom":
        return DevRoom(workdir)
    if kind == "livekit":
        return LiveKitServer(workdir)
    raise ValueError(f"unknown test server {kind!r} (devroom or livekit)")


class World:
    """A server (devroom or livekit-server) plus the peers a test started; torn down (and logs
    kept) by the fixture. `devroom` is the server when it is devroom, else None."""

    def __init__(self, workdir: Path, kind: str = "devroom") -> None:
        self.workdir = workdir
        self.kind = kind
        self.server = start_server(kind, workdir)
        self.devroom = self.server if kind == "devroom" else None
        self.peers: list[Peer] = []
        self.roomcasts: list[Roomcast] = []

    def roomcast(self, room: str, identity: str, **kw) -> "Roomcast":
        """Start `roomcast run` against this world's server (see Roomcast for the options)."""
        r = Roomcast(self.workdir, self.server, room, identity, **kw)
        self.roomcasts.append(r)
        return r

    def peer(self, sdk: str, identity: str, *args: str, stay: float = 40, room: str = "test-room",
             spc: Optional[str] = None, token: Optional[str] = None) -> Peer:
        full = ["--url", self.server.url, "--room", room, "--key", self.server.key, "--secret", self.server.secret]
        if spc is not None:
            full += ["--spc", spc]
        if token is not None:
            full += ["--token", token]
        p = Peer(sdk, self.workdir, identity, full + list(args), stay)
        self.peers.append(p)
        return p

    def diagnostics(self) -> str:
        parts = [p.out.tail() + "\n" + p.stderr_tail(10) for p in self.peers]
        parts += [r.out.tail() + "\n" + r.stderr_tail(15) for r in self.roomcasts]
        parts.append(self.server.stderr_tail())
        return "\n".join(parts)

    def close(self) -> None:
        for r in self.roomcasts:
            r.terminate()
        for r in self.roomcasts:
            try:
                r.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            r.kill()
        for p in self.peers:
            p.stop()
        for p in self.peers:
            try:
                p.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            p.kill()
        self.server.stop()


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """Which server the test runs against; a test may parametrize `server_kind` itself to narrow it."""
    return request.param


@pytest.fixture
def world(request: pytest.FixtureRequest, server_kind: str):
    w = World(log_dir(request), server_kind)
    yield w
    w.close()


@pytest.fixture
def server(world: World):
    """The world's server: url, key, secret, token(), api() (RoomService), participants()."""
    return world.server


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


def mint(identity: str, room: str = "test-room", *extra: str, server: Optional[ServerApi] = None) -> str:
    """A token from mint_token.py; with `server`, for its key and secret (`extra` may override them)."""
    keys = ["--key", server.key, "--secret", server.secret] if server else []
    out = subprocess.run([sys.executable, str(PEERS / "mint_token.py"), identity, room, *keys, *extra],
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


class Roomcast:
    """The real `roomcast run` binary with a generated config (test pattern + tone, a key and secret
    so it mints its own tokens, and a `[speaker] device` when `speaker` is given); its stdout JSON
    event lines are read as they come."""

    count = 0

    def __init__(self, workdir: Path, server: ServerApi, room: str, identity: str, signal_path: str = "auto",
                 api_secret: Optional[str] = None, width: int = 320, height: int = 240, fps: int = 15,
                 speaker: Optional[str] = None) -> None:
        Roomcast.count += 1
        stem = f"roomcast-{Roomcast.count:02d}-{identity}"
        self.identity = identity
        self.workdir = workdir
        state = workdir / f"{stem}.state"
        state.mkdir(exist_ok=True)
        self.config = workdir / f"{stem}.toml"
        self.config.write_text(
            f'url = "{server.url}"\napi_key = "{server.key}"\napi_secret = "{api_secret or server.secret}"\n'
            f'room = "{room}"\nidentity = "{identity}"\nsignal_path = "{signal_path}"\nstate_dir = "{state}"\n\n'
            f'[video]\ndevice = "test-pattern"\nwidth = {width}\nheight = {height}\nfps = {fps}\nbitrate = 500\n\n'
            f'[audio]\ndevice = "tone"\n'
            + (f'\n[speaker]\ndevice = "{speaker}"\n' if speaker else ''))
        self.stderr_path = workdir / f"{stem}.stderr"
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        self.proc = subprocess.Popen([str(roomcast_bin()), "run", "--config", str(self.config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=env)
        self.out = LineReader(self.proc.stdout, workdir / f"{stem}.jsonl", f"roomcast:{identity}")
        # The log is read line by line too, so tests can wait on what roomcast says.
        self.err = LineReader(self.proc.stderr, self.stderr_path, f"roomcast:{identity}.stderr")

    def events(self, name: str) -> list[dict]:
        with self.out.cond:
            return [e for e in self.out.json if e.get("event") == name]

    def wait_event(self, name: str, timeout: float, pred: Callable[[dict], bool] = lambda e: True) -> dict:
        try:
            return self.out.wait_for(lambda e: e.get("event") == name and pred(e), timeout, f"event {name!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.stderr_tail()}") from None

    def wait_joined(self, timeout: float = 30) -> dict:
        """Connected, with both tracks (video, audio) accepted by the server. Returns {kind: track_sid}."""
        self.wait_event("connection_state_changed", timeout, lambda e: e.get("state") == "connected")
        self.wait_event("local_track_published", timeout, lambda e: e.get("kind") == "video")
        self.wait_event("local_track_published", timeout, lambda e: e.get("kind") == "audio")
        return {e["kind"]: e["track_sid"] for e in self.events("local_track_published")}

    def joined_line(self) -> re.Match:
        """roomcast's own log line 'joined room "r" as "id" (PA_..) over V1'."""
        m = None
        for m in re.finditer(r'joined room "([^"]*)" as "([^"]*)" \((\S+)\) over (\w+)', self.stderr_text()):
            pass
        if m is None:
            raise AssertionError(f"no 'joined room' line in roomcast's log\n{self.stderr_tail()}")
        return m

    def stderr_text(self) -> str:
        with self.err.cond:
            return "\n".join(self.err.lines)

    def stderr_tail(self, n: int = 30) -> str:
        lines = self.stderr_text().splitlines()[-n:]
        return "\n".join(f"  roomcast:{self.identity}.stderr| {line}" for line in lines)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"roomcast:{self.identity} did not exit within {timeout:.0f}s\n{self.stderr_tail()}")
        self.out._t.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
