#!/usr/bin/env python3
"""The benchmark driver behind tests/bench/run.sh (not a test: it prints figures and judges nothing).

Runs inside the test namespace (tests/netns.sh). roomcast (`roomcast run`) and the official Python SDK
(tests/peers/py_peer.py) are measured alternately, run by run, in the same process tree and the same
namespace. Prints a table (median, min and max per row) and, as its LAST line, one JSON object with the
same figures. Rows that depend on unfinished work print "n/a" and the reason, never a figure.

Only the standard library: it runs under the peers' venv python (for py_peer) but needs nothing from it.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")
ROOM = "bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port(ip: str) -> int:
    s = socket.socket()
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Lines:
    """Reads a child's stdout JSON lines in a thread, stamping each with its arrival time."""

    def __init__(self, proc: subprocess.Popen):
        self.items: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _run(self, stream) -> None:
        for raw in stream:
            t = time.monotonic()
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self.items.append((t, obj))
                self.cond.notify_all()

    def wait(self, pred, deadline: float):
        """The arrival time of the first line matching pred, or None at the deadline."""
        with self.cond:
            while True:
                for t, obj in self.items:
                    if pred(obj):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


# ---------------------------------------------------------------- servers


class Devroom:
    """The devroom binary on 127.0.0.1; its /admin/events long-poll tells when media arrives."""

    def __init__(self, binary: str, workdir: Path):
        self.port = free_port("127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        self.key, self.secret = "devkey", "secret"
        self.log = open(workdir / "devroom.log", "w")
        self.proc = subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{self.port}", "--keys", f"{self.key}:{self.secret}",
             "--frame-dir", str(workdir / "frames")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.after = 0
        self.events: list[tuple[float, dict]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._poll(0)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("devroom did not answer within 20 s")

    def _poll(self, wait_ms: int) -> None:
        with urllib.request.urlopen(f"{self.http}/admin/events?after={self.after}&wait_ms={wait_ms}",
                                    timeout=wait_ms / 1000 + 5) as r:
            body = json.load(r)
        t = time.monotonic()
        for e in body.get("events", []):
            self.after = max(self.after, e["seq"])
            self.events.append((t, e))

    def first_media(self, identity: str, deadline: float) -> dict[str, float]:
        """{"video": t, "audio": t}: arrival times of devroom's first_rtp per kind of identity's tracks.
        The long-poll returns as soon as devroom records the event (loopback HTTP, about 1 ms)."""
        found: dict[str, float] = {}
        while time.monotonic() < deadline:
            kinds = {e["track_sid"]: e["kind"] for _, e in self.events
                     if e.get("type") == "track_published" and e.get("identity") == identity}
            for t, e in self.events:
                if e.get("type") == "first_rtp" and e.get("track_sid") in kinds:
                    found.setdefault(kinds[e["track_sid"]], t)
            if "video" in found and "audio" in found:
                break
            self._poll(int(max(1, min(1000, (deadline - time.monotonic()) * 1000))))
        return found

    def close(self) -> None:
        stop(self.proc)


class LiveKit:
    """livekit-server via tests/servers/livekit-server.sh, plus a subscribing Python SDK peer: first
    media at livekit-server is the subscriber's first DECODED frame per kind (video, and audio with
    signal), which includes the server forwarding it, the subscriber's negotiation and its decoder."""

    def __init__(self, workdir: Path, python: str):
        self.dir = workdir / "livekit"
        out = subprocess.run([str(ROOT / "tests/servers/livekit-server.sh"), "start", str(self.dir)],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError((out.stderr.strip().splitlines() or ["livekit-server.sh failed"])[-1])
        env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        self.url, self.key, self.secret = env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        self.sub_log = open(workdir / "livekit-subscriber.err", "w")
        self.sub = subprocess.Popen(
            [python, str(ROOT / "tests/peers/py_peer.py"), "--url", self.url, "--identity", "bench-subscriber",
             "--room", ROOM, "--key", self.key, "--secret", self.secret, "--publish", "none",
             "--stay", "3600", "--hold"],
            stdout=subprocess.PIPE, stderr=self.sub_log, stdin=subprocess.DEVNULL, text=True)
        self.lines = Lines(self.sub)
        if self.lines.wait(lambda o: o.get("event") == "connected", time.monotonic() + 30) is None:
            raise RuntimeError("the subscribing Python SDK peer did not connect to livekit-server")

    def first_media(self, identity: str, deadline: float) -> dict[str, float]:
        found = {}
        for kind in ("video", "audio"):
            t = self.lines.wait(lambda o: o.get("event") == "first_frame" and o.get("kind") == kind
                                and str(o.get("key", "")).startswith(identity + "/"), deadline)
            if t is not None:
                found[kind] = t
        return found

    def close(self) -> None:
        stop(self.sub)
        subprocess.run([str(ROOT / "tests/servers/livekit-server.sh"), "stop", str(self.dir)],
                       capture_output=True, timeout=30)


# ---------------------------------------------------------------- publishers


class Publishers:
    def __init__(self, roomcast: str, python: str, workdir: Path):
        self.roomcast, self.python, self.workdir = roomcast, python, workdir
        self.n = 0

    def start(self, who: str, server, identity: str, *, width=320, height=240, fps=30,
              device="test-pattern", bitrate=500, stats_interval=0) -> subprocess.Popen:
        """With `stats_interval` (roomcast only), roomcast's stdout events are read into `proc.lines`."""
        self.n += 1
        err = open(self.workdir / f"{self.n:03d}-{identity}.log", "w")
        if who == "roomcast":
            state = self.workdir / f"{identity}.state"
            state.mkdir(exist_ok=True)
            config = self.workdir / f"{identity}.toml"
            config.write_text(
                f'url = "{server.url}"\napi_key = "{server.key}"\napi_secret = "{server.secret}"\n'
                f'room = "{ROOM}"\nidentity = "{identity}"\nstate_dir = "{state}"\n'
                f'stats_interval = {stats_interval}\n\n'
                f'[video]\ndevice = "{device}"\nwidth = {width}\nheight = {height}\nfps = {fps}\n'
                f'bitrate = {bitrate}\n\n[audio]\ndevice = "tone"\n')
            cmd = [self.roomcast, "run", "--config", str(config)]
            if stats_interval:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
                proc.lines = Lines(proc)
                return proc
        else:
            cmd = [self.python, str(ROOT / "tests/peers/py_peer.py"), "--url", server.url, "--identity", identity,
                   "--room", ROOM, "--key", server.key, "--secret", server.secret, "--publish", "audio,video",
                   "--codec", "h264", "--width", str(width), "--height", str(height), "--fps", str(fps),
                   "--stay", "120", "--hold"]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)


WHO = {"roomcast": "roomcast", "sdk": "python SDK"}


def stats(values: list[float], digits: int = 1) -> dict:
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(values), "median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def first_rtp_rows(server, pubs: Publishers, runs: int, tag: str, who_list) -> dict:
    """Alternating runs: process start -> first media per kind, in ms."""
    out = {w: {"video": [], "audio": [], "failed": 0} for w in who_list}
    for i in range(runs):
        for w in who_list:
            identity = f"{tag}-{w}-{i}"
            t0 = time.monotonic()
            proc = pubs.start(w, server, identity)
            found = server.first_media(identity, t0 + 30)
            stop(proc)
            for kind in ("video", "audio"):
                if kind in found:
                    out[w][kind].append((found[kind] - t0) * 1000)
                else:
                    out[w]["failed"] += 1
            log(f"  first media at {tag}, {WHO[w]:10} #{i}: "
                + ", ".join(f"{k} {(found[k] - t0) * 1000:.0f} ms" if k in found else f"{k} none"
                            for k in ("video", "audio")))
    return {w: {"video": stats(v["video"]), "audio": stats(v["audio"]), "runs_without_media": v["failed"],
                "samples_video": [round(x, 1) for x in v["video"]]} for w, v in out.items()}


def proc_cpu_rss(pid: int) -> tuple[float, int, int]:
    """(user+sys seconds, VmRSS KiB, VmHWM KiB)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return cpu, rss, hwm


# roomcast's media_stats windows while publish_rows measures: short, so a 10 s window holds several whole ones.
STATS_INTERVAL_S = 2
TIMING_KEYS = ("capture_to_rtp_p50_ms", "capture_to_rtp_p99_ms", "encode_cpu_ms_per_frame")


def frame_timing(lines: Lines, start: float, end: float) -> dict:
    """roomcast's video media_stats events whose whole interval lies in [start, end]: capture -> RTP p50 (the
    median of the intervals' p50s), p99 (the highest interval p99) and encoder CPU ms per frame (all frames)."""
    with lines.cond:
        events = [o for t, o in lines.items if start + STATS_INTERVAL_S <= t <= end
                  and o.get("event") == "media_stats" and o.get("kind") == "video"]
    lat = [e["capture_to_rtp_ms"] for e in events if e.get("capture_to_rtp_ms")]
    frames = sum(e["frames_encoded"] for e in events if e.get("encode_cpu_ms_per_frame") is not None)
    cpu = sum(e["encode_cpu_ms_per_frame"] * e["frames_encoded"] for e in events
              if e.get("encode_cpu_ms_per_frame") is not None)
    out = {}
    if lat:
        out["capture_to_rtp_p50_ms"] = statistics.median(x["p50"] for x in lat)
        out["capture_to_rtp_p99_ms"] = max(x["p99"] for x in lat)
    if frames:
        out["encode_cpu_ms_per_frame"] = cpu / frames
    return out


def publish_rows(server: Devroom, pubs: Publishers, runs: int, window: float, who_list) -> dict:
    """720p30 + Opus into devroom; measured for `window` seconds once media flows."""
    configs = [("roomcast_sw_h264", "roomcast", "test-pattern"),
               ("roomcast_passthrough_h264", "roomcast", "test-pattern-h264"),
               ("sdk_h264", "sdk", None)]
    configs = [c for c in configs if c[1] in who_list]
    res = {name: {"cpu_s_per_min": [], "rss_peak_mib": [], "rss_steady_mib": [],
                  **({k: [] for k in TIMING_KEYS} if w == "roomcast" else {})} for name, w, _ in configs}
    for i in range(runs):
        for name, w, device in configs:
            identity = f"cpu-{name}-{i}"
            t0 = time.monotonic()
            proc = pubs.start(w, server, identity, width=1280, height=720, fps=30,
                              device=device or "test-pattern", bitrate=1700,
                              stats_interval=STATS_INTERVAL_S if w == "roomcast" else 0)
            found = server.first_media(identity, t0 + 30)
            if len(found) < 2 or proc.poll() is not None:
                log(f"  publish 720p30 {name} #{i}: no media, skipped")
                stop(proc)
                continue
            try:
                c0, _, _ = proc_cpu_rss(proc.pid)
                start, samples = time.monotonic(), []
                while time.monotonic() - start < window:
                    time.sleep(0.25)
                    samples.append((time.monotonic() - start, *proc_cpu_rss(proc.pid)))
            except OSError:  # the publisher exited mid-window: no figure for this run
                log(f"  publish 720p30 {name} #{i}: exited while measured, skipped")
                stop(proc)
                continue
            elapsed = samples[-1][0]
            cpu = (samples[-1][1] - c0) / elapsed * 60
            steady = statistics.median(s[2] for s in samples if s[0] >= window / 2) / 1024
            peak = samples[-1][3] / 1024
            timing = frame_timing(proc.lines, start, time.monotonic()) if w == "roomcast" else {}
            stop(proc)
            res[name]["cpu_s_per_min"].append(cpu)
            res[name]["rss_peak_mib"].append(peak)
            res[name]["rss_steady_mib"].append(steady)
            for k, v in timing.items():
                res[name][k].append(v)
            log(f"  publish 720p30 {name:26} #{i}: {cpu:.1f} CPU-s/min, RSS peak {peak:.1f} MiB, "
                f"steady {steady:.1f} MiB"
                + "".join(f", {k} {v:.2f}" for k, v in timing.items()))
    return {name: {k: stats(v, 2 if k in TIMING_KEYS else 1) for k, v in r.items()} for name, r in res.items()}


def board_size() -> dict:
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    b = target_dir / "aarch64-unknown-linux-musl/small/roomcast"
    if not b.exists():
        return {"na": "no static aarch64 binary at <target>/aarch64-unknown-linux-musl/small/roomcast; "
                      "`tests/bench/run.sh --build` builds it (slow: 3-17 min)"}
    data = b.read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9)),
            "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(b.stat().st_mtime))}


NA = {
    "capture_to_rtp_m2m_h264": "n/a: no V4L2 M2M H.264 encoder here or in the qemu lab (boards only: Raspberry Pi, "
                               "Rockchip). The M2M path itself is measured on the lab's vicodec (FWHT) against "
                               "software H.264 on the same emulated CPU: tests/bench/run.sh --only lab-m2m",
    "rss_drift_soak": "n/a: not built yet (a soak with an uplink switch every 30 s, on suite 55's topology)",
}

RECOVERY_ROWS = {
    "switch_ms": "uplink switch: new uplink up -> next decoded frame (ms)",
    "drop_gap_ms": "WebSocket drop (ss -K): longest frame gap (ms)",
    "restart_reconnected_ms": "server restart: server up -> reconnected (ms)",
    "restart_media_ms": "server restart: server up -> frame at subscriber (ms)",
    "uplink_cap_to_fit_ms": "uplink capped: cap -> bitrate target within it (ms)",
    "uplink_lift_to_rise_ms": "uplink cap lifted: lift -> target up 20 % (ms)",
}


def driver_json(script: str, args: list[str], workdir: Path, python: str, name: str) -> dict:
    """Run one of the namespace drivers in tests/peers (recovery.py, connectivity.py) with
    --json; its figures, or {"na": why}. Their own output goes to the bench's log directory."""
    out = workdir / f"{name}.json"
    log_path = workdir / f"{name}.log"
    with open(log_path, "w") as logf:
        done = subprocess.run([python, str(ROOT / "tests/peers" / script), *args, "--json", str(out)],
                              stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if not out.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return {"na": f"n/a: {script} exited {done.returncode} without figures: {' | '.join(tail)}"}
    return json.loads(out.read_text())


def recovery_rows(runs: int, who: list[str], workdir: Path, python: str) -> dict:
    """tests/peers/recovery.py: switch, drop and restart at livekit-server, each publisher `runs` times."""
    r = driver_json("recovery.py", ["--runs", str(runs), "--peers", ",".join(who)], workdir, python, "recovery")
    if "na" in r:
        return r
    return {"by_publisher": {w: {k: stats(v) for k, v in rows.items()} for w, rows in r["recovery"].items()},
            "failures": r["failures"]}


def path_rows(runs: int, workdir: Path, python: str) -> dict:
    """tests/peers/connectivity.py: start -> first decoded video per path, `runs` runs per case."""
    r = driver_json("connectivity.py", ["--repeat", str(runs)], workdir, python, "paths")
    if "na" in r:
        return r
    by_case: dict = {}
    for c in r["results"]:
        by_case.setdefault(c["case"], {"path": c["path"], "values": []})["values"].append(c["ttfm_ms"])
    return {"by_case": {k: {"path": v["path"], **stats(v["values"])} for k, v in by_case.items()},
            "failures": r["failures"]}


# ---------------------------------------------------------------- the qemu lab's M2M encoder

# (width, height, fps) of vivid's pictures. vicodec takes nothing below 640x360 (its MIN_WIDTH/MIN_HEIGHT), and
# vivid gives 1280x720 at 12 fps at most; there a picture costs the emulated CPU about a frame interval, so the
# queue in front of the encoder shows.
LAB_M2M_SIZES = [(640, 360, 30), (1280, 720, 10)]
LAB_M2M_WARMUP = 30
# Row name -> the `encoder-test --bench` arguments that pick its encoder.
LAB_M2M_ENCODERS = {
    "roomcast_m2m_vicodec_fwht": ["--encoder", "m2m", "--format", "FWHT"],
    "roomcast_software_h264": ["--encoder", "software"],
}
# JSON field of encoder-test --bench -> table row (each row also says it is qemu TCG, not a board).
LAB_M2M_ROWS = {
    "capture_to_encoded_p50_ms": "capture -> encoded p50 ms",
    "capture_to_encoded_p99_ms": "capture -> encoded p99 ms",
    "encoder_cpu_ms_per_frame": "encoder CPU ms/frame",
    "process_cpu_ms_per_frame": "process CPU ms/frame",
    "machine_cpu_ms_per_frame": "whole-VM CPU ms/frame",
    "rss_steady_mib": "RSS steady MiB",
    "camera_fps": "frames/s the camera delivered",
}
LAB_TAG = "qemu TCG lab, not a board"


def board_binary(workdir: Path) -> tuple[str | None, str]:
    """The static aarch64 board binary the lab runs: ROOMCAST_BOARD_BIN, else scripts/build-static.sh's
    (built now if needed; niced). (path, "") or (None, why)."""
    given = os.environ.get("ROOMCAST_BOARD_BIN")
    if given:
        return (given, "") if os.access(given, os.X_OK) else (None, f"ROOMCAST_BOARD_BIN={given} is not executable")
    log("bench: lab-m2m: building the static aarch64 board binary (scripts/build-static.sh; slow the first time)")
    with open(workdir / "build-static.log", "w") as logf:
        out = subprocess.run(["nice", "-n", "10", str(ROOT / "scripts/build-static.sh"), "aarch64-unknown-linux-musl",
                              "--alsa"], stdout=subprocess.PIPE, stderr=logf, text=True, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return None, f"scripts/build-static.sh exited {out.returncode} (log {workdir / 'build-static.log'})"
    return lines[-1], ""


def lab_m2m_rows(runs: int, frames: int, workdir: Path) -> dict:
    """tests/lab/lab.sh (qemu TCG, emulated cortex-a72) runs `roomcast encoder-test --bench` on vivid's pictures:
    vicodec's FWHT encoder through the M2M path, and openh264, alternately, `runs` times each."""
    lab = Path(os.environ.get("LAB") or os.environ.get("ROOMCAST_LAB") or Path.home() / ".cache/roomcast-lab")
    if not (lab / "initramfs-arm64.cpio.gz").exists():
        return {"na": f"n/a: no qemu lab at {lab}: scripts/install-cross-tools.sh --lab"}
    board, why = board_binary(workdir)
    if board is None:
        return {"na": f"n/a: no board binary: {why}"}
    share = workdir / "lab-m2m"
    share.mkdir()
    shutil.copy(board, share / "roomcast")
    script = ["#!/bin/sh", "cd /mnt/host", "nproc > cpus.txt"]
    for w, h, fps in LAB_M2M_SIZES:
        common = ["--bench", "--source", "name:vivid", "--width", str(w), "--height", str(h), "--fps", str(fps),
                  "--frames", str(frames), "--warmup", str(LAB_M2M_WARMUP)]
        for i in range(runs):
            for name, args in LAB_M2M_ENCODERS.items():
                out = f"{name}-{w}x{h}p{fps}-{i}"
                script.append(f"./roomcast encoder-test {' '.join(common + args)} > {out}.json 2> {out}.log")
    (share / "run.sh").write_text("\n".join(script) + "\n")
    (share / "run.sh").chmod(0o755)
    load = os.getloadavg()[0]
    log(f"bench: lab-m2m: {runs} runs each of {', '.join(LAB_M2M_ENCODERS)} in the qemu lab "
        f"(host load {load:.2f}; log {workdir / 'lab-m2m.log'})")
    t0 = time.monotonic()
    with open(workdir / "lab-m2m.log", "w") as logf:
        done = subprocess.run([str(ROOT / "tests/lab/lab.sh"), "--arch", "arm64", "-t", "1500", "-s", str(share),
                               "--log", str(workdir / "lab-m2m-vm.log"), str(share / "run.sh")],
                              stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    by_size: dict = {}
    failures = []
    for w, h, fps in LAB_M2M_SIZES:
        size = f"{w}x{h}p{fps}"
        values: dict = {name: {k: [] for k in LAB_M2M_ROWS} for name in LAB_M2M_ENCODERS}
        for i in range(runs):
            for name in LAB_M2M_ENCODERS:
                out = share / f"{name}-{size}-{i}"
                try:
                    j = json.loads(out.with_suffix(".json").read_text().strip().splitlines()[-1])
                except (OSError, ValueError, IndexError):
                    err = out.with_suffix(".log")
                    tail = err.read_text(errors="replace").strip().splitlines()[-2:] if err.exists() else []
                    failures.append(f"{name} {size} #{i}: no result (lab exit {done.returncode}) {' | '.join(tail)}")
                    continue
                if not j.get("ok"):
                    failures.append(f"{name} {size} #{i}: encoder-test said ok=false")
                lat = j.get("capture_to_encoded_ms") or {}
                figures = {**j, "capture_to_encoded_p50_ms": lat.get("p50"),
                           "capture_to_encoded_p99_ms": lat.get("p99")}
                for k in LAB_M2M_ROWS:
                    if figures.get(k) is not None:
                        values[name][k].append(figures[k])
                log(f"  lab-m2m {name:26} {size} #{i}: " + ", ".join(f"{k} {figures.get(k)}" for k in LAB_M2M_ROWS))
        by_size[size] = {name: {k: stats(v, 2) for k, v in rows.items()} for name, rows in values.items()}
    cpus = (share / "cpus.txt").read_text().strip() if (share / "cpus.txt").exists() else "?"
    return {"by_size": by_size, "failures": failures, "host_load_at_start": load,
            "duration_s": round(time.monotonic() - t0, 1),
            "vm": f"qemu-system-aarch64 -M virt -cpu cortex-a72, TCG (emulated), {cpus} vCPUs",
            "pictures": f"vivid YUYV, {LAB_M2M_WARMUP} pictures warm-up, then {frames} measured, per run"}


def machine() -> dict:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "arch": platform.machine(),
            "loadavg_at_start": os.getloadavg()[0]}


def fmt(v, unit=""):
    return "n/a" if v is None else f"{v:g}{unit}"


def table(result: dict) -> list[str]:
    rows = [("row", "who", "median", "min", "max", "n")]

    def add(row, who, s, unit):
        rows.append((row, who, fmt(s["median"]), fmt(s["min"]), fmt(s["max"]), str(s["n"])))

    for server, data in result["first_rtp_ms"].get("by_server", {}).items():
        if "na" in data:
            rows.append((f"start -> first media @{server} (ms)", "-", data["na"], "", "", ""))
            continue
        for w, d in data.items():
            for kind in ("video", "audio"):
                add(f"start -> first {kind} @{server} (ms)", WHO[w], d[kind], "ms")
    pub = result.get("publish_720p30")
    if isinstance(pub, dict) and "na" not in pub:
        for name, d in pub.items():
            add("CPU s/min, 720p30+Opus", name, d["cpu_s_per_min"], "")
            add("RSS peak MiB, 720p30+Opus", name, d["rss_peak_mib"], "")
            add("RSS steady MiB, 720p30+Opus", name, d["rss_steady_mib"], "")
            if "capture_to_rtp_p50_ms" in d:
                add("capture -> RTP p50 ms, 720p30 video", name, d["capture_to_rtp_p50_ms"], "")
                add("capture -> RTP p99 ms, 720p30 video", name, d["capture_to_rtp_p99_ms"], "")
                add("encoder CPU ms/frame, 720p30 video", name, d["encode_cpu_ms_per_frame"], "")
    elif pub:
        rows.append(("CPU/RSS 720p30+Opus", "-", "n/a: " + pub["na"], "", "", ""))
    rec = result.get("recovery_ms")
    if isinstance(rec, dict) and "na" not in rec:
        for w, rows_of in rec["by_publisher"].items():
            for k, d in rows_of.items():
                add(RECOVERY_ROWS.get(k, k), WHO[w], d, "ms")
        for f in rec["failures"]:
            rows.append(("recovery", "-", f"n/a: failed: {f}", "", "", ""))
    elif rec:
        rows.append(("recovery @livekit-server", "-", rec["na"], "", "", ""))
    paths = result.get("first_media_per_path_ms")
    if isinstance(paths, dict) and "na" not in paths:
        for case, d in paths["by_case"].items():
            add(f"start -> first video, {d['path']} ({case}) (ms)", "roomcast", d, "ms")
        for f in paths["failures"]:
            rows.append(("connectivity path", "-", f"n/a: failed: {f}", "", "", ""))
    elif paths:
        rows.append(("start -> first video per path", "-", paths["na"], "", "", ""))
    lab = result.get("lab_m2m")
    if isinstance(lab, dict) and "na" not in lab:
        for size, by_encoder in lab["by_size"].items():
            for name, d in by_encoder.items():
                for k, label in LAB_M2M_ROWS.items():
                    add(f"{label}, {size}, {LAB_TAG}", name, d[k], "")
        for f in lab["failures"]:
            rows.append(("lab-m2m", "-", f"n/a: failed: {f}", "", "", ""))
    elif lab:
        rows.append(("M2M encoder in the qemu lab", "-", lab["na"], "", "", ""))
    bs = result["board_binary"]
    if "na" in bs:
        rows.append(("static aarch64 binary", "roomcast", "n/a: " + bs["na"], "", "", ""))
    else:
        rows.append(("static aarch64 binary (bytes)", "roomcast", str(bs["bytes"]), "", "", "1"))
        rows.append(("static aarch64 binary (gzip -9)", "roomcast", str(bs["gzip_bytes"]), "", "", "1"))
    for k, v in result["not_available"].items():
        rows.append((k, "-", v, "", "", ""))
    long = lambda r: r[2].startswith("n/a")  # noqa: E731
    widths = [max(len(r[i]) for r in rows if not long(r) or i < 2) for i in range(6)]
    out = []
    for r in rows:
        if long(r):
            out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
        else:
            out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one pass of the fast rows (first media only)")
    p.add_argument("--runs", type=int, default=10, help="runs per publisher for start -> first media at devroom")
    p.add_argument("--lk-runs", type=int, default=5, help="runs per publisher at livekit-server")
    p.add_argument("--cpu-runs", type=int, default=5, help="runs per configuration for CPU/RSS")
    p.add_argument("--cpu-window", type=float, default=10.0, help="seconds measured while publishing 720p30")
    p.add_argument("--soak-minutes", type=float, default=2.0, help="RSS drift soak length (row n/a for now)")
    p.add_argument("--no-sdk", action="store_true", help="roomcast only")
    p.add_argument("--recovery-runs", type=int, default=5, help="runs per publisher of switch/drop/restart")
    p.add_argument("--path-runs", type=int, default=3, help="runs per connectivity case")
    p.add_argument("--lab-runs", type=int, default=3, help="lab-m2m: runs per encoder")
    p.add_argument("--lab-frames", type=int, default=300, help="lab-m2m: pictures measured per run")
    p.add_argument("--only", default="",
                   help="comma list of row groups: devroom,livekit,cpu,recovery,paths; lab-m2m (only when "
                        "named: boots the qemu lab with the static board binary)")
    a = p.parse_args()
    if os.environ.get("ROOMCAST_IN_NETNS") != "1":
        log("bench.py: run me through tests/bench/run.sh (it enters the network namespace)")
        return 2
    if a.quick:
        a.runs = a.lk_runs = 1
    t_start = time.monotonic()
    roomcast = os.environ["ROOMCAST_BIN"]
    devroom_bin = os.environ["DEVROOM_BIN"]
    python = str(Path(os.environ.get("ROOMCAST_VENV") or ROOT / ".peers/venv") / "bin/python")
    who = ["roomcast"] if a.no_sdk or not Path(python).exists() else ["roomcast", "sdk"]
    only = set(filter(None, a.only.split(",")))
    want = lambda g: not only or g in only  # noqa: E731
    workdir = Path(tempfile.mkdtemp(prefix="roomcast-bench-"))
    pubs = Publishers(roomcast, python, workdir)
    result: dict = {"bench": "roomcast", "quick": a.quick, "machine": machine(),
                    "binaries": {"roomcast": roomcast, "devroom": devroom_bin},
                    "first_rtp_ms": {}}
    by_server: dict = {}
    log(f"bench: roomcast={roomcast} devroom={devroom_bin} python SDK={'yes' if 'sdk' in who else 'no'} "
        f"logs in {workdir}")
    dev = Devroom(devroom_bin, workdir)
    try:
        if want("devroom"):
            by_server["devroom"] = first_rtp_rows(dev, pubs, a.runs, "devroom", who)
        if want("livekit"):
            try:
                lk = LiveKit(workdir, python)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as e:
                by_server["livekit"] = {"na": f"n/a: livekit-server not started ({e}); "
                                              "scripts/install-livekit-server.sh builds it"}
            else:
                try:
                    by_server["livekit"] = first_rtp_rows(lk, pubs, a.lk_runs, "livekit", who)
                finally:
                    lk.close()
        if a.quick:
            result["publish_720p30"] = {"na": "not run with --quick"}
            result["recovery_ms"] = {"na": "n/a: not run with --quick"}
            result["first_media_per_path_ms"] = {"na": "n/a: not run with --quick"}
        else:
            if want("cpu"):
                result["publish_720p30"] = publish_rows(dev, pubs, a.cpu_runs, a.cpu_window, who)
            if want("recovery"):
                log(f"bench: recovery, {a.recovery_runs} runs per publisher (tests/peers/recovery.py)")
                result["recovery_ms"] = recovery_rows(a.recovery_runs, who, workdir, python)
            if want("paths"):
                log("bench: first media per connectivity path (tests/peers/connectivity.py)")
                result["first_media_per_path_ms"] = path_rows(a.path_runs, workdir, python)
            # Only when asked for by name: it boots a VM and may build the board binary first.
            if "lab-m2m" in only:
                result["lab_m2m"] = lab_m2m_rows(a.lab_runs, a.lab_frames, workdir)
    finally:
        dev.close()
    # The quick smoke test's contract: first_rtp_ms.{roomcast,python_sdk} (video/audio at devroom).
    for w, name in (("roomcast", "roomcast"), ("sdk", "python_sdk")):
        d = by_server.get("devroom", {}).get(w)
        result["first_rtp_ms"][name] = {"video": d["video"], "audio": d["audio"]} if d else \
            {"na": "SDK venv missing: scripts/install-deps.sh" if w == "sdk" else "devroom rows not run"}
    result["first_rtp_ms"]["by_server"] = by_server
    result["first_rtp_ms"]["measures"] = {
        "devroom": "process start -> devroom records the first RTP packet of the publisher's track",
        "livekit": "process start -> a Python SDK subscriber decodes the first frame (video) / first "
                   "audio frame with signal, through livekit-server"}
    result["publish_720p30_measures"] = (
        "into devroom, after first media: user+sys CPU seconds per minute, VmHWM (peak) and median VmRSS over the "
        "second half (steady) of the window. roomcast_passthrough_h264 is device = test-pattern-h264, a synthetic "
        "camera that runs openh264 in-process the way a UVC H.264 camera would in hardware, so its CPU includes "
        "that camera-side encode. capture -> RTP (roomcast only, from its media_stats events every "
        f"{STATS_INTERVAL_S} s within the window): capture timestamp (CLOCK_MONOTONIC) to the last RTP packet of "
        "the frame handed to the WebRTC stack; p50 is the median of the intervals' p50s, p99 the highest interval "
        "p99. For passthrough it includes the synthetic camera's encode (the capture time is stamped before it). "
        "Encoder CPU ms/frame is the capture thread's CPU time in the encoder (openh264, or passthrough's Annex-B "
        "parse), not the synthetic camera's")
    result["recovery_measures"] = (
        "tests/peers/recovery.py at livekit-server, timed at an official Python SDK subscriber; the publisher "
        "(roomcast, or the Python SDK) in a namespace of its own with two uplinks. Switch: SWITCH_GAP (0.3 s) "
        "between the old uplink down and the new one up, timed from up")
    result["first_media_per_path_measures"] = (
        "tests/peers/connectivity.py: roomcast start -> first decoded video at the SDK subscriber, each path "
        "forced by nftables in the device's namespace; udp-v0 is the udp case over /rtc (PeerConnection built at the "
        "JoinResponse) against /rtc/v1 (first offer in join_request, gathering after the JoinResponse)")
    result["lab_m2m_measures"] = (
        "tests/bench/run.sh --only lab-m2m: `roomcast encoder-test --bench` (the static aarch64 board binary) in the "
        "qemu lab, emulated by TCG: absolute figures are far slower than a board's; the ratio M2M vs software and the "
        "latency the M2M queue adds are what they show. Each run: vivid's pictures through the capture thread's loop "
        "(next picture, submit, poll), warm-up excluded. capture -> encoded: vivid's capture timestamp to the poll "
        "that returns the coded frame (p50/p99 per run; the row's median/min/max are over runs). Encoder CPU: the "
        "thread's CPU inside submit+poll (media_stats' definition); vicodec codes inside VIDIOC_QBUF when it is "
        "idle (v4l2_m2m_try_run from the ioctl), so that is in it as system time, and only a job started after "
        "another finishes runs in a kworker, which only the whole-VM row sees. Process CPU: getrusage user+sys over "
        "the window. Whole-VM CPU: /proc/stat busy time of every vCPU, including vivid's picture generator. "
        "RSS steady: median VmRSS over the window's second half")
    result["board_binary"] = board_size()
    na = dict(NA)
    na["rss_drift_soak"] += f" (--soak-minutes {a.soak_minutes:g} asked)"
    result["not_available"] = na
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    shutil.rmtree(workdir, ignore_errors=True) if os.environ.get("ROOMCAST_BENCH_KEEP") != "1" else None
    m = result["machine"]
    print(f"roomcast benchmark: {m['nproc']} cores, {m['cpu']}, load {m['loadavg_at_start']:.2f} at start, "
          f"{result['duration_s']} s")
    print("\n".join(table(result)))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
