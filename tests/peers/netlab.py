"""Pieces shared by the namespace drivers that run a device against livekit-server
(connectivity.py, recovery.py): where the binaries are, commands in a device namespace, a
process's JSON lines read with deadlines, and livekit-server started and stopped through
tests/servers/livekit-server.sh (the one way the tests start it).

Everything waits on a process's output lines with a deadline; nothing here sleeps to let time
pass. Times are time.monotonic() seconds (CLOCK_MONOTONIC, the same clock in every process of
the machine, which is how py_peer.py's frame events are compared with ours).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("ROOMCAST_VENV", str(ROOT / ".peers/venv")) + "/bin/python"
PY_PEER = str(ROOT / "tests/peers/py_peer.py")
ROOMCAST = os.environ.get("ROOMCAST_BIN", str(ROOT / "target/debug/roomcast"))
DEVROOM = os.environ.get("DEVROOM_BIN",
                         str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug/devroom"))
LIVEKIT_SH = str(ROOT / "tests/servers/livekit-server.sh")


def logs_dir(name: str) -> Path:
    """A fresh directory for one driver's logs under target/test-logs (or ROOMCAST_TEST_LOGS)."""
    d = Path(os.environ.get("ROOMCAST_TEST_LOGS", ROOT / "target/test-logs")) / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def run(*cmd: str, ns: Optional[str] = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command (in network namespace `ns` when given) and capture its output."""
    if ns:
        cmd = ("ip", "netns", "exec", ns) + cmd
    done = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if check and done.returncode != 0:
        # The command's own words, not just its status: they name the cause.
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done


def stop(proc: Optional[subprocess.Popen], sig_timeout: float = 10) -> None:
    """SIGTERM, a bounded wait, then SIGKILL."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(sig_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Lines:
    """A process's stdout read line by line on a thread; wait_for() blocks on the next lines."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.q: queue.Queue = queue.Queue()
        self.seen: list[tuple[float, str]] = []
        self.log = open(log, "w")

        def pump() -> None:
            for line in proc.stdout:
                self.log.write(line)
                self.log.flush()
                self.q.put((time.monotonic(), line.rstrip("\n")))
            self.q.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, pred: Callable[[dict], bool], timeout: float, what: str,
                 after: float = 0.0) -> tuple[float, dict]:
        """The next JSON line (after those already consumed, and read at or after `after`) for
        which pred is true, with the time it was read; AssertionError naming `what` after
        `timeout` seconds or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                self.q.put(None)  # EOF stays visible to later waits
                raise AssertionError(f"the process ended while waiting for {what}")
            t, line = item
            self.seen.append(item)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if t >= after and isinstance(obj, dict) and pred(obj):
                return t, obj

    def events(self, since: float = 0.0) -> list[tuple[float, dict]]:
        """Every JSON line consumed so far (by wait_for) that was read at or after `since`."""
        out = []
        for t, line in self.seen:
            if t < since:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append((t, obj))
        return out


def roomcast_config(directory: Path, name: str, lk: dict, room: str, identity: str, fps: int,
                    extra: str = "", camera: str = "test-pattern") -> Path:
    """A roomcast config (and its state directory) for a synthetic 320x240 camera and a tone,
    minting its own tokens from livekit-server's key; `extra` adds top-level lines. `camera`
    "test-pattern-busy" sends the whole bitrate (the plain pattern needs a few kbit/s)."""
    state = directory / f"state-{name}"
    state.mkdir()
    cfg = directory / f"{name}.toml"
    cfg.write_text(
        f'url = "{lk["LIVEKIT_URL"]}"\napi_key = "{lk["LIVEKIT_API_KEY"]}"\n'
        f'api_secret = "{lk["LIVEKIT_API_SECRET"]}"\nroom = "{room}"\nidentity = "{identity}"\n'
        f'state_dir = "{state}"\n{extra}\n'
        f'[video]\ndevice = "{camera}"\nwidth = 320\nheight = 240\nfps = {fps}\nbitrate = 400\n\n'
        f'[audio]\ndevice = "tone"\n')
    return cfg


def livekit_start(directory: Path, *args: str, env: Optional[dict] = None) -> dict:
    """Start livekit-server (tests/servers/livekit-server.sh start); its KEY=VALUE lines as a dict,
    plus "dir"."""
    out = run(LIVEKIT_SH, "start", str(directory), *args, env=env).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line) | {"dir": str(directory)}


def livekit_stop(lk: dict, keep_log_in: Optional[Path] = None) -> None:
    run(LIVEKIT_SH, "stop", lk["dir"], check=False)
    if keep_log_in is not None:
        shutil.copy(lk["LIVEKIT_LOG"], keep_log_in / f"{Path(lk['dir']).name}.log")
