#!/usr/bin/env python3
"""Recovery against the real livekit-server (issue 9): an uplink switch, a WebSocket drop and a
server crash-and-restart, each timed at an official Python SDK subscriber, for roomcast and, in
the same namespaces and the same run, for the official Python SDK as the publisher.

Runs inside tests/netns.sh: that namespace is the server's side (livekit-server on 198.51.100.1,
the subscriber next to it). The publisher gets a namespace of its own with two uplinks, each a
veth pair into the server's namespace:
    wifi 203.0.113.2/26  ── 203.0.113.1/26  ┐
    cell 203.0.113.66/26 ── 203.0.113.65/26 ┴ server namespace: livekit-server on 198.51.100.1
The server is reached only through the publisher's default route, so a switch moves signalling
and media alike.

Faults, per run and publisher:
  switch   both ways (wifi->cell, then cell->wifi): the uplink in use loses its address and goes down; SWITCH_GAP later the other comes up
           with the default route (a real modem is never instant, and the gap keeps frames decoded
           after "up" from being ones sent before "down"). Measured: uplink up -> the first video
           frame the subscriber decodes afterwards. Asserted: the publisher kept its track (a resume,
           not a rejoin: the subscriber sees no participant_disconnected).
  drop     the publisher's signalling TCP connection is killed (ss -K); the media path is untouched.
           Measured: the longest gap between decoded frames at the subscriber from 0.2 s before the
           drop until 1 s after the publisher says it has resumed (33 ms at 30 fps is no gap). Asserted: a resume, the same track.
  uplink   (roomcast only) the uplink's capacity is capped: an nftables policer on the server's end of the
           uplink drops UDP to the server above half the video rate being sent plus room for the
           audio (AUDIO_ALLOWANCE), then the cap is lifted. Measured: cap -> the encoder's target
           (media_stats bitrate_bps) within the cap less the audio's rate, the rate sent then
           (sent_bps), and lift -> the target back up by RISE. Asserted: both happen, and video
           keeps being decoded under the cap.
  restart  livekit-server is SIGKILLed and started again on the same ports. Measured: server up ->
           the publisher's reconnected event, and server up -> the first frame of its new track at
           the subscriber (which has to rejoin as well). Asserted for roomcast: a new participant
           sid, republished tracks, and its full-reconnect events in LiveKit's documented order.

usage: recovery.py [--runs N] [--peers roomcast,sdk] [--cases switch,drop,uplink,restart] [--json FILE]
                   [--max-drop-gap-ms MS]
Prints one line per measurement, then a table with median and max per publisher and case, then
one JSON line. Exit status 1 if an assertion failed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import netlab
from netlab import PY_PEER, PYTHON, ROOMCAST, Lines

NS = f"rcrec{os.getpid()}"
SERVER_IP = "198.51.100.1"
UPLINKS = {  # device interface: (device address/prefix, gateway, server-side interface)
    "wifi": ("203.0.113.2/26", "203.0.113.1", f"rw{os.getpid()}"),
    "cell": ("203.0.113.66/26", "203.0.113.65", f"rc{os.getpid()}"),
}
SWITCH_GAP = 0.3  # seconds between the old uplink going down and the new one coming up
AUDIO_ALLOWANCE = 96_000  # bit/s of the cap left for Opus (32 kbit/s plus 50 packets/s of headers) and the video's headers
AUDIO_BITRATE = 32_000  # roomcast's default Opus rate: the cap minus this is the most the video can have
RISE = 1.2  # ... and has followed it back up when it is this much above its capped level
ROOM = "recovery"
SUB = "sub"
LOGS = netlab.logs_dir("recovery")


def dev(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return netlab.run(*cmd, ns=NS, check=check, **kw)


class World:
    """The two namespaces, livekit-server and the subscriber."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="roomcast-recovery-"))
        self.sub = None
        self.lk: dict = {}
        self.uplink = "wifi"
        netlab.run("ip", "netns", "add", NS)
        try:
            dev("ip", "link", "set", "lo", "up")
            dev("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
            for name, (_, gw, outside) in UPLINKS.items():
                netlab.run("ip", "link", "add", outside, "type", "veth", "peer", "name", name, "netns", NS)
                netlab.run("ip", "addr", "add", f"{gw}/26", "dev", outside)
                netlab.run("ip", "link", "set", outside, "up")
            self.lk = netlab.livekit_start(self.dir / "lk", env=dict(os.environ, LIVEKIT_LOG_LEVEL="debug"))
            self.up("wifi")
            self.start_subscriber()
        except BaseException:
            self.close()
            raise

    def up(self, name: str) -> None:
        addr, gw, _ = UPLINKS[name]
        dev("ip", "addr", "add", addr, "dev", name)
        dev("ip", "link", "set", name, "up")
        dev("ip", "route", "replace", "default", "via", gw, "dev", name)
        self.uplink = name

    def down(self, name: str) -> None:
        dev("ip", "addr", "flush", "dev", name)
        dev("ip", "link", "set", name, "down")

    def start_subscriber(self) -> None:
        key, secret = self.lk["LIVEKIT_API_KEY"], self.lk["LIVEKIT_API_SECRET"]
        self.sub = subprocess.Popen(
            [PYTHON, PY_PEER, "--url", self.lk["LIVEKIT_URL"], "--key", key, "--secret", secret,
             "--room", ROOM, "--identity", SUB, "--publish", "none", "--frame-events", "--hold",
             "--stay", "3600"],
            stdout=subprocess.PIPE, stderr=open(LOGS / "sub.stderr", "w"), text=True)
        self.sub_out = Lines(self.sub, LOGS / "sub.jsonl")
        self.sub_out.wait_for(lambda e: e.get("event") == "connected", 30, "the subscriber to connect")

    def close(self) -> None:
        netlab.stop(self.sub)
        if self.lk:
            netlab.livekit_stop(self.lk, keep_log_in=LOGS)
        netlab.run("ip", "netns", "del", NS, check=False)
        for _, _, outside in UPLINKS.values():
            netlab.run("ip", "link", "del", outside, check=False)


class Publisher:
    """roomcast or the SDK in the device's namespace, publishing video as `identity`."""

    def __init__(self, world: World, kind: str, identity: str) -> None:
        self.world, self.kind, self.identity = world, kind, identity
        lk = world.lk
        key, secret = lk["LIVEKIT_API_KEY"], lk["LIVEKIT_API_SECRET"]
        if kind == "roomcast":
            # A media_stats event a second: the uplink case reads the encoder's target from it.
            # The busy pattern uses its bitrate, as a camera does (the plain one needs 5 kbit/s).
            cfg = netlab.roomcast_config(world.dir, identity, lk, ROOM, identity, fps=30,
                                         extra="stats_interval = 1", camera="test-pattern-busy")
            cmd = [ROOMCAST, "run", "--config", str(cfg)]
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        else:
            cmd = [PYTHON, PY_PEER, "--url", lk["LIVEKIT_URL"], "--key", key, "--secret", secret,
                   "--room", ROOM, "--identity", identity, "--publish", "video", "--fps", "30",
                   "--hold", "--stay", "3600"]
            env = dict(os.environ)
        self.proc = subprocess.Popen(["ip", "netns", "exec", NS, *cmd], stdout=subprocess.PIPE,
                                     stderr=open(LOGS / f"{identity}.stderr", "w"), text=True, env=env)
        self.out = Lines(self.proc, LOGS / f"{identity}.jsonl")
        self.track, _ = self.wait_track(time.monotonic() - 1, 40)

    def wait_track(self, after: float, timeout: float) -> tuple[str, float]:
        """The key of this publisher's video track at the subscriber and the time of its first
        frame decoded at or after `after`."""
        _, e = self.world.sub_out.wait_for(
            lambda e: e.get("event") == "frame" and e.get("identity") == self.identity
            and e["mono"] >= after, timeout, f"a decoded frame from {self.identity}")
        return e["key"], e["mono"]

    def wait_event(self, names: set[str], timeout: float, what: str, after: float = 0.0) -> tuple[float, dict]:
        """The publisher's next event named one of `names` (roomcast: its room events; SDK:
        py_peer's), printed at or after `after` (an earlier fault's late event does not count)."""
        return self.out.wait_for(lambda e: e.get("event") in names, timeout, f"{self.identity}: {what}", after)

    def close(self) -> None:
        netlab.stop(self.proc)


def frames_after(world: World, key: str, after: float, timeout: float, what: str) -> float:
    """Time of the first frame of `key` decoded at the subscriber at or after `after`."""
    _, e = world.sub_out.wait_for(
        lambda e: e.get("event") == "frame" and e.get("key") == key and e["mono"] >= after, timeout, what)
    return e["mono"]


def no_disconnect_of(world: World, identity: str, since: float) -> None:
    for _, e in world.sub_out.events(since):
        if e.get("event") == "participant_disconnected" and e.get("identity") == identity:
            raise AssertionError(f"the subscriber saw {identity} leave: a rejoin, not a resume")


def case_switch(world: World, pub: Publisher) -> float:
    old = world.uplink
    new = "cell" if old == "wifi" else "wifi"
    # A second of media first: frames decoded after "up" must not be a backlog from before "down".
    frames_after(world, pub.track, time.monotonic() + 1.0, 30, "video before the switch")
    since = time.monotonic()
    world.down(old)
    # The gap between the two uplinks is the fault's shape (see SWITCH_GAP), not a wait for an event.
    time.sleep(SWITCH_GAP)
    world.up(new)
    t_up = time.monotonic()
    t_frame = frames_after(world, pub.track, t_up, 30,
                           f"{pub.identity}'s video after the {old}->{new} switch")
    if pub.kind == "roomcast":
        pub.wait_event({"resumed"}, 10, "resumed after the switch", after=since)
    no_disconnect_of(world, pub.identity, since)
    return (t_frame - t_up) * 1000


def signalling_port(world: World) -> str:
    return world.lk["LIVEKIT_HTTP"].rsplit(":", 1)[1]


def case_drop(world: World, pub: Publisher) -> float:
    # A second of media first, so that the gap measured below is the drop's, not the last case's.
    frames_after(world, pub.track, time.monotonic() + 1.0, 10, "video before the drop")
    t_drop = time.monotonic()
    killed = dev("ss", "-K", "-t", "state", "established", "dst", SERVER_IP, "dport", "=", signalling_port(world))
    assert SERVER_IP in killed.stdout, f"ss -K found no signalling connection to kill: {killed.stdout!r}"
    if pub.kind == "roomcast":
        pub.wait_event({"resuming"}, 10, "resuming after the drop", after=t_drop)
        t_back, _ = pub.wait_event({"resumed", "reconnected"}, 20, "resumed after the drop", after=t_drop)
    else:
        pub.wait_event({"reconnecting"}, 20, "reconnecting after the drop", after=t_drop)
        t_back, _ = pub.wait_event({"reconnected"}, 20, "reconnected after the drop", after=t_drop)
    # Frames up to a second after the publisher says it is back: the gap must have closed by then.
    end = frames_after(world, pub.track, t_back + 1.0, 10, "video after the drop")
    times = [e["mono"] for _, e in world.sub_out.events(t_drop - 0.2)
             if e.get("event") == "frame" and e.get("key") == pub.track and t_drop - 0.2 <= e["mono"] <= end]
    gaps = [b - a for a, b in zip(times, times[1:])]
    no_disconnect_of(world, pub.identity, t_drop)
    return max(gaps) * 1000


FULL_RECONNECT = ["participant_disconnected", "local_track_unpublished", "reconnecting", "reconnected",
                  "participant_connected", "local_track_published"]


def assert_full_reconnect_order(events: list[dict]) -> None:
    """roomcast's full-reconnect events in LiveKit's documented order: ParticipantDisconnected
    for the others, LocalTrackUnpublished, Reconnecting, Reconnected, ParticipantConnected for
    those present, LocalTrackPublished. The subscriber rejoins the restarted server on its own
    schedule, so its ParticipantConnected may come after the republish; everything else is
    strict."""
    names = [e["event"] for e in events if e["event"] in FULL_RECONNECT]
    sub_connected = [i for i, e in enumerate(events) if e["event"] == "participant_connected"]
    strict = [n for n in names if n != "participant_connected"]
    expected = ["participant_disconnected", "local_track_unpublished", "local_track_unpublished",
                "reconnecting", "reconnected", "local_track_published", "local_track_published"]
    assert strict[:len(expected)] == expected, f"full reconnect out of order: {names}"
    if sub_connected:
        first_reconnected = next(i for i, e in enumerate(events) if e["event"] == "reconnected")
        assert sub_connected[0] > first_reconnected, f"participant_connected before reconnected: {names}"


def case_restart(world: World, pub: Publisher) -> tuple[float, float]:
    frames_after(world, pub.track, time.monotonic(), 10, "video before the restart")
    seen = len(pub.out.seen)
    t_crash = time.monotonic()
    netlab.run(netlab.LIVEKIT_SH, "crash", world.lk["dir"])
    world.sub_out.wait_for(lambda e: e.get("event") in ("reconnecting", "disconnected"), 30,
                           "the subscriber to notice the server is gone")
    pub.wait_event({"reconnecting", "resuming"}, 30, "noticing the server is gone", after=t_crash)
    netlab.run(netlab.LIVEKIT_SH, "restart", world.lk["dir"])
    t_up = time.monotonic()
    t_rec, _ = pub.wait_event({"reconnected"}, 60, "reconnected after the restart", after=t_up)
    key, t_frame = pub.wait_track(t_up, 60)
    assert key != pub.track, f"{pub.identity}'s track key did not change across a full reconnect: {key}"
    pub.track = key
    if pub.kind == "roomcast":
        pub.wait_event({"local_track_published"}, 20, "the republish")
        pub.wait_event({"local_track_published"}, 20, "the second republish")
        events = [json.loads(line) for _, line in pub.out.seen[seen:] if line.startswith("{")]
        assert_full_reconnect_order(events)
    return (t_rec - t_up) * 1000, (t_frame - t_up) * 1000


def video_stats(pub: Publisher, pred, timeout: float, what: str, after: float) -> tuple[float, dict]:
    return pub.out.wait_for(lambda e: e.get("event") == "media_stats" and e.get("kind") == "video"
                            and e.get("bitrate_bps") is not None and pred(e), timeout,
                            f"{pub.identity}: {what}", after)


def case_uplink(world: World, pub: Publisher) -> dict:
    """The uplink's capacity drops to half of what roomcast sends, then comes back; the
    encoder's target must follow it down and up (receiver-report loss, see src/media/bitrate.rs)."""
    # A whole interval's rate: the first report after this moment may cover less than a second
    # of sending.
    t_first, _ = video_stats(pub, lambda e: True, 10, "a media_stats", time.monotonic())
    _, before = video_stats(pub, lambda e: e["sent_bps"] > 0, 10, "a media_stats with video sent",
                            t_first + 0.01)
    start_target, start_sent = before["bitrate_bps"], before["sent_bps"]
    # The video's share halves; the cap adds room for the Opus track and the packets' overhead,
    # which the policer counts too.
    video_share = start_sent // 2
    cap_bps = video_share + AUDIO_ALLOWANCE
    # A policer at the server's side of the uplink, not a queue: what a radio link at its limit
    # looks like to the sender (loss; the host kernel has no netem to queue with). RTP, RTCP and
    # retransmissions all count against it. At the sender it would fail sends with EPERM instead.
    # Its burst is a second of the rate, as a radio's buffer would absorb a keyframe; a smaller
    # one drops every keyframe the subscriber asks for, and the picture never comes back.
    netlab.run("nft", "-f", "-", input=f"""table inet rccap {{
  chain uplink {{
    type filter hook input priority 0;
    ip saddr 203.0.113.0/24 ip daddr {SERVER_IP} meta l4proto udp limit rate over {cap_bps // 8} bytes/second burst {cap_bps // 8} bytes drop
  }}
}}""")
    t_cap = time.monotonic()
    try:
        fit_limit = cap_bps - AUDIO_BITRATE
        t_fit, fit = video_stats(pub, lambda e: e["bitrate_bps"] <= fit_limit, 30,
                                 f"the target within the cap ({cap_bps} bit/s less the audio's {AUDIO_BITRATE})",
                                 t_cap)
        frames_after(world, pub.track, t_fit, 10, "video under the cap")
        # The rate sent in the next full second at that target.
        _, under = video_stats(pub, lambda e: True, 5, "a media_stats under the cap", t_fit)
    finally:
        netlab.run("nft", "delete", "table", "inet", "rccap")
    t_lift = time.monotonic()
    low = fit["bitrate_bps"]
    t_up, up = video_stats(pub, lambda e: e["bitrate_bps"] >= RISE * low, 30,
                           f"the target back above {RISE} x {low} bit/s after the cap is lifted", t_lift)
    print(f"{pub.identity} uplink: sent {start_sent} bit/s at target {start_target}; cap {cap_bps} "
          f"(video's share {video_share}): target "
          f"{fit['bitrate_bps']} after {t_fit - t_cap:.1f} s, then sent {under['sent_bps']} at "
          f"{under['bitrate_bps']}; lifted: target {up['bitrate_bps']} after {t_up - t_lift:.1f} s", flush=True)
    return {"uplink_cap_to_fit_ms": [(t_fit - t_cap) * 1000], "uplink_lift_to_rise_ms": [(t_up - t_lift) * 1000]}


def one_case(world: World, pub: Publisher, case: str, max_drop_gap_ms) -> dict:
    """One fault; its figures by name (ms)."""
    if case == "switch":  # both ways: wifi->cell, then cell->wifi
        return {"switch_ms": [case_switch(world, pub), case_switch(world, pub)]}
    if case == "drop":
        gap = case_drop(world, pub)
        assert max_drop_gap_ms is None or gap <= max_drop_gap_ms, \
            f"the WebSocket drop left a {gap:.0f} ms gap in the media (limit {max_drop_gap_ms:.0f} ms)"
        return {"drop_gap_ms": [gap]}
    if case == "uplink":
        return case_uplink(world, pub)
    rec, frame = case_restart(world, pub)
    return {"restart_reconnected_ms": [rec], "restart_media_ms": [frame]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--peers", default="roomcast,sdk")
    ap.add_argument("--cases", default="switch,drop,uplink,restart")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--max-drop-gap-ms", type=float,
                    help="fail when a WebSocket drop leaves a longer gap between decoded frames")
    args = ap.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    cases = [c for c in args.cases.split(",") if c]
    figures: dict = {p: {} for p in peers}
    failures: list[str] = []
    world = World()
    try:
        for peer in peers:
            pub = None
            try:
                pub = Publisher(world, peer, f"pub-{peer}")
                for run in range(1, args.runs + 1):
                    for case in cases:
                        if case == "uplink" and peer != "roomcast":
                            continue  # the SDK prints no encoder target to follow
                        try:
                            rows = one_case(world, pub, case, args.max_drop_gap_ms)
                        except AssertionError as e:
                            # Recorded, and the next case goes on if the publisher is back: the
                            # comparison publisher may fail a case where roomcast does not.
                            failures.append(f"{peer} run {run} {case}: {e}")
                            print(f"FAIL {peer} run {run} {case}: {e}", flush=True)
                            tail = (LOGS / f"pub-{peer}.stderr").read_text(errors="replace").splitlines()[-20:]
                            print("\n".join(f"  {peer}.stderr| {ln}" for ln in tail), flush=True)
                            pub.track, _ = pub.wait_track(time.monotonic(), 60)
                            continue
                        for name, values in rows.items():
                            for v in values:
                                figures[peer].setdefault(name, []).append(round(v))
                                print(f"{peer} run {run} {name} {v:.0f}", flush=True)
            except AssertionError as e:
                failures.append(f"{peer}: {e} (no further cases)")
                print(f"FAIL {peer}: {e}", flush=True)
            finally:
                if pub:
                    pub.close()
    finally:
        world.close()
    print("\n=== recovery at livekit-server, timed at an official Python SDK subscriber (ms)")
    print(f"{'publisher':<10} {'figure':<24} {'n':>4} {'median':>7} {'max':>7}  values")
    for peer, rows in figures.items():
        for name, vals in rows.items():
            print(f"{peer:<10} {name:<24} {len(vals):>4} {statistics.median(vals):>7.0f} {max(vals):>7}  {vals}")
    summary = {"recovery": figures, "failures": failures}
    if args.json:
        Path(args.json).write_text(json.dumps(summary))
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
