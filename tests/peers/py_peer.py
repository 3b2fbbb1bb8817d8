#!/usr/bin/env python3
"""Official LiveKit Python SDK (PyPI `livekit`, pinned) as an independent test peer.

Connects, optionally publishes a synthetic microphone (440 Hz sine) and camera (moving bar),
subscribes to everything and counts DECODED frames per remote track (rtc.VideoStream /
rtc.AudioStream). Prints one JSON object per line ({"event": ...}) and, last, {"summary": {...}}.

Exit status 0 when every expectation was met before --stay ran out, 1 otherwise.
With expectations the peer leaves as soon as they are met, unless --hold keeps it publishing
until --stay ends or it gets SIGTERM/SIGINT (how a test holds a publisher up for another peer).

Audio: the SDK's playout keeps producing (silent) frames when no packets arrive, so audio
"frames" counts only decoded frames that carry signal (peak above --audio-threshold);
"decoded" counts all of them.

usage: py_peer.py --url URL [--token T | --identity ID --room R] [--publish audio,video|none]
                  [--spc 0|1] [--stay S] [--expect-video N] [--expect-audio N] [--expect-from ID]
                  [--expect-connect-error TEXT] [--expect-disconnect REASON] [--expect-resume]
                  [--hold] [--frame-events] [--progress-ms N] [--codec vp8|h264] [--width W --height H --fps F]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time

import warnings

import numpy as np
from livekit import api, rtc

# devroom's default secret is short; PyJWT warns about it on every mint.
warnings.filterwarnings("ignore", message=".*HMAC key.*")

T0 = time.monotonic()


def now_ms() -> int:
    return int((time.monotonic() - T0) * 1000)


def emit(obj: dict) -> None:
    obj.setdefault("t_ms", now_ms())
    # CLOCK_MONOTONIC seconds: one clock for every process on the machine, so a driver can
    # compare our events with its own fault times (tests/peers/recovery.py).
    obj.setdefault("mono", round(time.monotonic(), 4))
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880"))
    p.add_argument("--token", help="JWT; minted from --identity/--room/--key/--secret when absent")
    p.add_argument("--identity", default="py-peer")
    p.add_argument("--room", default="test-room")
    p.add_argument("--key", default="devkey")
    p.add_argument("--secret", default="secret")
    p.add_argument("--publish", default="audio,video", help="audio,video | audio | video | none")
    p.add_argument("--spc", choices=["0", "1"], help="single peer connection (/rtc/v1) or not (/rtc)")
    p.add_argument("--stay", type=float, default=20.0, help="wall-clock limit in seconds")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--expect-video", type=int, default=0, help="decoded frames per remote video track")
    p.add_argument("--expect-audio", type=int, default=0, help="decoded audio frames with signal per remote audio track")
    p.add_argument("--expect-from", action="append", default=[],
                   help="identity whose tracks must meet the expectations (repeatable; default: any remote)")
    p.add_argument("--expect-connect-error", metavar="TEXT",
                   help="succeed only if connect() fails with an error containing TEXT ('' = any error)")
    p.add_argument("--expect-disconnect", metavar="REASON",
                   help="succeed only if the server disconnects us with this DisconnectReason name")
    p.add_argument("--expect-resume", action="store_true",
                   help="also require a reconnect that kept our participant sid (a resume)")
    p.add_argument("--hold", action="store_true", help="keep going after expectations are met")
    p.add_argument("--frame-events", action="store_true",
                   help="emit a frame event for every decoded video frame (recovery timing)")
    p.add_argument("--progress-ms", type=int, default=0, help="emit a progress event with the counts this often")
    p.add_argument("--log-level", default=os.environ.get("PY_PEER_LOG", "WARNING"),
                   help="Python/SDK logging to stderr (DEBUG shows the FFI's signalling)")
    p.add_argument("--codec", choices=["vp8", "h264", "vp9", "av1"], help="video codec (default: the SDK's, VP8)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--audio-threshold", type=int, default=200, help="peak |sample| that counts as signal")
    return p.parse_args(argv)


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.room: rtc.Room  # created in run(): Room binds to the running event loop
        self.received: dict[str, dict] = {}
        self.tasks: list[asyncio.Task] = []
        self.stop = asyncio.Event()
        self.met = asyncio.Event()
        self.connected = False
        self.sid_at_connect = ""
        self.disconnect_reason: str | None = None
        self.reconnecting = 0
        self.reconnected = 0
        self.resumed = False
        self.published: list[dict] = []
        self.error: str | None = None

    # ---- expectations -------------------------------------------------------------------
    def wanted_tracks(self) -> list[dict]:
        if not self.args.expect_from:
            return list(self.received.values())
        return [r for r in self.received.values() if r["identity"] in self.args.expect_from]

    def media_met(self) -> bool:
        a = self.args
        if not a.expect_video and not a.expect_audio:
            return True
        identities = a.expect_from or sorted({r["identity"] for r in self.received.values()}) or [None]
        for ident in identities:
            tracks = [r for r in self.received.values() if ident is None or r["identity"] == ident]
            if a.expect_video and not any(r["kind"] == "video" and r["frames"] >= a.expect_video for r in tracks):
                return False
            if a.expect_audio and not any(r["kind"] == "audio" and r["frames"] >= a.expect_audio for r in tracks):
                return False
        return True

    def all_met(self) -> bool:
        a = self.args
        if a.expect_connect_error is not None:
            return False  # decided in run()
        if not self.connected:
            return False
        if a.expect_disconnect and self.disconnect_reason != a.expect_disconnect:
            return False
        if a.expect_resume and not self.resumed:
            return False
        return self.media_met()

    def has_expectations(self) -> bool:
        a = self.args
        return bool(a.expect_video or a.expect_audio or a.expect_disconnect or a.expect_resume)

    def check(self) -> None:
        if self.has_expectations() and not self.met.is_set() and self.all_met():
            self.met.set()
            emit({"event": "expectations_met"})
            if not self.args.hold:
                self.stop.set()

    # ---- room events --------------------------------------------------------------------
    def wire_events(self) -> None:
        r = self.room

        @r.on("participant_connected")
        def _pc(p: rtc.RemoteParticipant) -> None:
            emit({"event": "participant_connected", "identity": p.identity, "sid": p.sid})

        @r.on("participant_disconnected")
        def _pd(p: rtc.RemoteParticipant) -> None:
            emit({"event": "participant_disconnected", "identity": p.identity, "sid": p.sid})

        @r.on("track_published")
        def _tp(pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            emit({"event": "track_published", "identity": p.identity, "track_sid": pub.sid,
                  "kind": kind_name(pub.kind), "mime": pub.mime_type})

        @r.on("track_subscribed")
        def _ts(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            kind = kind_name(track.kind)
            key = f"{p.identity}/{pub.sid}"
            emit({"event": "track_subscribed", "identity": p.identity, "track_sid": pub.sid, "kind": kind,
                  "mime": pub.mime_type})
            rec = {"identity": p.identity, "kind": kind, "frames": 0}
            if kind == "video":
                rec.update(width=0, height=0)
                self.received[key] = rec
                self.tasks.append(asyncio.ensure_future(self.count_video(key, track)))
            elif kind == "audio":
                rec.update(decoded=0, sample_rate=0)
                self.received[key] = rec
                self.tasks.append(asyncio.ensure_future(self.count_audio(key, track)))

        @r.on("track_muted")
        def _tm(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            emit({"event": "track_muted", "identity": p.identity, "track_sid": pub.sid})

        @r.on("track_unmuted")
        def _tu(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            emit({"event": "track_unmuted", "identity": p.identity, "track_sid": pub.sid})

        @r.on("track_subscription_failed")
        def _tsf(p: rtc.RemoteParticipant, sid: str, err: str) -> None:
            emit({"event": "track_subscription_failed", "identity": p.identity, "track_sid": sid, "error": err})

        @r.on("connection_state_changed")
        def _cs(state: int) -> None:
            emit({"event": "connection_state", "state": rtc.ConnectionState.Name(state)})

        @r.on("reconnecting")
        def _rg() -> None:
            self.reconnecting += 1
            emit({"event": "reconnecting", "sid": self.room.local_participant.sid})

        @r.on("reconnected")
        def _rd() -> None:
            self.reconnected += 1
            sid = self.room.local_participant.sid
            # A resume keeps the participant sid; a full rejoin gets a new one.
            same = sid == self.sid_at_connect
            self.resumed = self.resumed or same
            emit({"event": "reconnected", "sid": sid, "same_sid": same})
            self.check()

        @r.on("disconnected")
        def _dc(reason: int) -> None:
            try:
                name = rtc.DisconnectReason.Name(reason)
            except ValueError:
                name = str(reason)
            self.disconnect_reason = name
            emit({"event": "disconnected", "reason": name})
            self.check()
            self.stop.set()

        @r.on("data_received")
        def _data(pkt: rtc.DataPacket) -> None:
            emit({"event": "data_received", "from": pkt.participant.identity if pkt.participant else None,
                  "bytes": len(pkt.data), "topic": pkt.topic})

    async def count_video(self, key: str, track: rtc.Track) -> None:
        rec = self.received[key]
        stream = rtc.VideoStream(track)
        try:
            async for ev in stream:
                rec["frames"] += 1
                rec["width"], rec["height"] = ev.frame.width, ev.frame.height
                if rec["frames"] == 1:
                    emit({"event": "first_frame", "key": key, "kind": "video",
                          "width": ev.frame.width, "height": ev.frame.height})
                if self.args.frame_events:
                    emit({"event": "frame", "key": key, "identity": rec["identity"]})
                self.check()
        finally:
            await stream.aclose()

    async def count_audio(self, key: str, track: rtc.Track) -> None:
        rec = self.received[key]
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        threshold = self.args.audio_threshold
        try:
            async for ev in stream:
                rec["decoded"] += 1
                rec["sample_rate"] = ev.frame.sample_rate
                samples = np.frombuffer(ev.frame.data, dtype=np.int16)
                if samples.size and int(np.abs(samples.astype(np.int32)).max()) >= threshold:
                    rec["frames"] += 1
                    if rec["frames"] == 1:
                        emit({"event": "first_frame", "key": key, "kind": "audio"})
                    self.check()
        finally:
            await stream.aclose()

    # ---- publishing ---------------------------------------------------------------------
    async def publish(self) -> None:
        kinds = {k.strip() for k in self.args.publish.split(",") if k.strip() and k.strip() != "none"}
        lp = self.room.local_participant
        if "audio" in kinds:
            asrc = rtc.AudioSource(48000, 1)
            track = rtc.LocalAudioTrack.create_audio_track("sine", asrc)
            pub = await lp.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            self.published.append({"kind": "audio", "sid": pub.sid})
            emit({"event": "published", "kind": "audio", "track_sid": pub.sid})
            self.tasks.append(asyncio.ensure_future(self.feed_audio(asrc)))
        if "video" in kinds:
            vsrc = rtc.VideoSource(self.args.width, self.args.height)
            track = rtc.LocalVideoTrack.create_video_track("bars", vsrc)
            opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False)
            if self.args.codec:
                opts.video_codec = getattr(rtc.VideoCodec, self.args.codec.upper())
            pub = await lp.publish_track(track, opts)
            self.published.append({"kind": "video", "sid": pub.sid})
            emit({"event": "published", "kind": "video", "track_sid": pub.sid})
            self.tasks.append(asyncio.ensure_future(self.feed_video(vsrc)))

    async def feed_audio(self, src: rtc.AudioSource) -> None:
        # 10 ms of a 440 Hz sine per frame, paced by the source's own queue.
        n = 0
        while True:
            t = (np.arange(480) + n * 480) / 48000.0
            samples = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
            await src.capture_frame(rtc.AudioFrame(samples.tobytes(), 48000, 1, 480))
            n += 1

    async def feed_video(self, src: rtc.VideoSource) -> None:
        w, h, fps = self.args.width, self.args.height, self.args.fps
        base = np.zeros((h, w, 4), dtype=np.uint8)
        base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]  # red gradient
        base[..., 3] = 255
        n = 0
        start = time.monotonic()
        while True:
            img = base.copy()
            x = (n * 4) % w
            img[:, x:x + 8, :3] = 255  # moving white bar
            src.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, img.tobytes()))
            n += 1
            # pacing for a synthetic camera, not a wait for a condition
            await asyncio.sleep(max(0.0, start + n / fps - time.monotonic()))

    async def progress(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)  # a reporting period, not a wait for a condition
            emit({"event": "progress", "received": {k: {"kind": v["kind"], "frames": v["frames"]}
                                                    for k, v in self.received.items()}})

    # ---- main ---------------------------------------------------------------------------
    async def run(self) -> int:
        a = self.args
        loop = asyncio.get_running_loop()
        self.room = rtc.Room(loop=loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        token = a.token or mint(a.identity, a.room, a.key, a.secret)
        opts = rtc.RoomOptions(auto_subscribe=True, connect_timeout=a.connect_timeout)
        if a.spc is not None:
            opts.single_peer_connection = a.spc == "1"
        self.wire_events()
        emit({"event": "connecting", "url": a.url, "spc": a.spc, "sdk": "python", "version": rtc.__version__})
        t = time.monotonic()
        try:
            await asyncio.wait_for(self.room.connect(a.url, token, opts), timeout=a.stay)
        except Exception as e:  # ConnectError, TimeoutError
            self.error = f"{type(e).__name__}: {e}"
            emit({"event": "connect_failed", "error": self.error, "ms": int((time.monotonic() - t) * 1000)})
            if a.expect_connect_error is not None:
                ok = a.expect_connect_error.lower() in str(e).lower()
                return self.finish(ok)
            return self.finish(False)
        self.connected = True
        lp = self.room.local_participant
        self.sid_at_connect = lp.sid
        emit({"event": "connected", "ms": int((time.monotonic() - t) * 1000), "room": self.room.name,
              "identity": lp.identity, "sid": lp.sid,
              "remote": sorted(p.identity for p in self.room.remote_participants.values())})
        if a.expect_connect_error is not None:
            self.error = "connected although a connect error was expected"
            await self.room.disconnect()
            return self.finish(False)
        # Tracks that were already subscribed before connect() returned fire track_subscribed too.
        try:
            await asyncio.wait_for(self.publish(), timeout=max(0.1, a.stay - (time.monotonic() - T0)))
        except Exception as e:
            self.error = f"publish failed: {type(e).__name__}: {str(e) or 'no result before --stay ran out'}"
            emit({"event": "publish_failed", "error": self.error})
            await self.room.disconnect()
            return self.finish(False)
        self.check()
        if a.progress_ms > 0:
            self.tasks.append(asyncio.ensure_future(self.progress(a.progress_ms / 1000.0)))
        # Publish/receive until expectations are met (unless --hold), a signal, a server
        # disconnect, or the end of --stay.
        remaining = a.stay - (time.monotonic() - T0)
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max(0.0, remaining))
        except asyncio.TimeoutError:
            emit({"event": "stay_elapsed"})
        ok = self.all_met() if self.has_expectations() else self.connected and self.error is None
        if self.disconnect_reason is None:
            await self.room.disconnect()
        return self.finish(ok)

    def finish(self, ok: bool) -> int:
        for t in self.tasks:
            t.cancel()
        summary = {
            "ok": ok,
            "connected": self.connected,
            "identity": self.args.identity if not self.connected else self.room.local_participant.identity,
            "sid": self.sid_at_connect,
            "published": self.published,
            "received": {k: {kk: vv for kk, vv in v.items() if kk != "identity"} for k, v in self.received.items()},
            "disconnect_reason": self.disconnect_reason,
            "reconnecting": self.reconnecting,
            "reconnected": self.reconnected,
            "resumed": self.resumed,
            "error": self.error,
        }
        emit({"summary": summary})
        return 0 if ok else 1


def kind_name(kind: int) -> str:
    return {rtc.TrackKind.KIND_AUDIO: "audio", rtc.TrackKind.KIND_VIDEO: "video"}.get(kind, str(kind))


def mint(identity: str, room: str, key: str, secret: str) -> str:
    from datetime import timedelta

    return (api.AccessToken(key, secret).with_identity(identity).with_name(identity)
            .with_ttl(timedelta(hours=1))
            .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                                         can_publish_data=True))
            .to_jwt())


def main() -> int:
    args = parse_args(sys.argv[1:])
    import logging

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    peer = Peer(args)
    # Hard wall clock: a hung FFI call must not outlive --stay by much.
    signal.signal(signal.SIGALRM, lambda *_: (emit({"event": "wall_timeout"}), os._exit(1)))
    signal.alarm(int(args.stay + 15))
    code = asyncio.run(peer.run())
    sys.stdout.flush()
    # The FFI's threads can keep the interpreter alive; our work is done and printed.
    os._exit(code)


if __name__ == "__main__":
    main()
