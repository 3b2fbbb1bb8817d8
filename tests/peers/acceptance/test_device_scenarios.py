"""The device scenarios, each run against devroom and against the real livekit-server (the
`server_kind` parameter): the built `roomcast run` binary with a generated config (test pattern +
440 Hz tone, api_key/api_secret so it mints its own tokens) joins, publishes H.264 + Opus, and must
handle what a LiveKit server does to a device. Every scenario appends one line per server to
cases.txt ("PASS <scenario> [<server>]: <what was measured>").

Waits are on events with deadlines: roomcast's stdout JSON lines, the official peers' JSON lines,
and RoomService (ListParticipants) answers polled against a deadline.
"""
from __future__ import annotations

import re
import signal
import time

import pytest
from livekit import api

from conftest import report

VIDEO_FRAMES = 30  # decoded frames the subscribers must get from roomcast's H.264 track
AUDIO_FRAMES = 50  # decoded 10 ms audio frames with signal from roomcast's Opus track


def case(world, name: str, ok: bool, detail: str) -> None:
    report(f"{name} [{world.kind}]", ok, detail)


def new_progress(peer, n: int, timeout: float) -> list[dict]:
    """The next n progress reports the peer prints from now on (waited for, with a deadline)."""
    with peer.out.cond:
        old = {id(e) for e in peer.out.json}
    got: list[dict] = []

    def pred(e: dict) -> bool:  # wait_for hands each line to pred once, in order
        if e.get("event") == "progress" and id(e) not in old:
            got.append(e)
        return len(got) >= n

    peer.out.wait_for(pred, timeout, f"{n} progress reports")
    return got


def ours(participants: list, identity: str) -> list:
    return [p for p in participants if p.identity == identity]


@pytest.mark.parametrize("signal_path", ["v1", "v0"])
def test_joins_and_publishes_h264_and_opus(world, signal_path: str) -> None:
    """roomcast joins on /rtc/v1 (signal_path = "v1") and on /rtc ("v0"), and the server lists its
    two tracks as H.264 video and Opus audio."""
    path = {"v1": "/rtc/v1", "v0": "/rtc"}[signal_path]
    room = f"join-{signal_path}"
    rc = world.roomcast(room, "cam", signal_path=signal_path)
    sids = rc.wait_joined(30)
    joined = rc.joined_line()
    members = world.server.wait_participants(room, lambda ps: any(len(p.tracks) == 2 for p in ours(ps, "cam")), 10,
                                             "cam with two tracks")
    tracks = {t.sid: t for p in ours(members, "cam") for t in p.tracks}
    mimes = sorted(tracks[s].mime_type.lower() for s in sids.values() if s in tracks)
    ok = (joined.group(4).lower() == signal_path and joined.group(3) == ours(members, "cam")[0].sid
          and mimes == ["audio/opus", "video/h264"])
    case(world, f"roomcast joins on {path} and publishes H.264 + Opus", ok,
         f"joined over {joined.group(4)} as {joined.group(3)}; server lists tracks {mimes}")
    assert joined.group(4).lower() == signal_path, joined.group(0)
    assert joined.group(3) == ours(members, "cam")[0].sid, "the server lists another sid than roomcast joined with"
    assert mimes == ["audio/opus", "video/h264"], [(t.sid, t.mime_type) for t in tracks.values()]


def test_official_sdks_decode_video_and_audio(world) -> None:
    """The official Python SDK and livekit-client in Chromium, subscribed at the same time, both
    decode roomcast's video and audio."""
    room = "decode"
    rc = world.roomcast(room, "cam")
    rc.wait_joined(30)
    expect = ["--publish", "none", "--hold", "--expect-from", "cam", "--expect-video", str(VIDEO_FRAMES),
              "--expect-audio", str(AUDIO_FRAMES)]
    subs = [world.peer("py", "py-sub", *expect, room=room, stay=60),
            world.peer("browser", "browser-sub", *expect, room=room, stay=60)]
    failures = []
    for p in subs:
        try:
            p.wait_event("expectations_met", 50)
        except AssertionError as e:
            failures.append(str(e))
    for p in subs:
        p.stop()
    for p in subs:
        code, summary = p.finish(20)
        got = {}
        for key, rec in summary.get("received", {}).items():
            if key.startswith("cam/") and rec["frames"] > got.get(rec["kind"], {}).get("frames", -1):
                got[rec["kind"]] = rec
        v, a = got.get("video", {}), got.get("audio", {})
        ok = v.get("frames", 0) >= VIDEO_FRAMES and a.get("frames", 0) >= AUDIO_FRAMES
        case(world, f"{p.sdk} SDK decodes roomcast's H.264 video and Opus audio", ok,
             f"video {v.get('frames', 0)} frames {v.get('width', 0)}x{v.get('height', 0)}, "
             f"audio {a.get('frames', 0)} frames with signal")
        if not ok:
            failures.append(f"{p.sdk}: {summary}")
    assert not failures, "\n".join(failures) + "\n" + world.diagnostics()


def test_duplicate_identity_ends_without_a_rejoin_loop(world) -> None:
    """A second roomcast with the same identity: the first is told DUPLICATE_IDENTITY, reports it as
    removed and does not join again; the second stays."""
    room = "dup"
    first = world.roomcast(room, "cam")
    first.wait_joined(30)
    first_sid = first.joined_line().group(3)
    second = world.roomcast(room, "cam")
    second.wait_joined(30)
    second_sid = second.joined_line().group(3)
    gone = first.wait_event("disconnected", 15)
    # By now the second session is fully up (both tracks accepted); a first session that rejoined in
    # a loop would have kicked it out or shown a second join by the time a fresh peer is in the room.
    watcher = world.peer("py", "watcher", "--publish", "none", "--hold", room=room, stay=30)
    watcher.wait_event("connected", 30)
    members = world.server.wait_participants(room, lambda ps: len(ours(ps, "cam")) == 1, 10,
                                             "exactly one participant named cam")
    first_connects = [e for e in first.events("connection_state_changed") if e.get("state") == "connected"]
    second_kicked = second.events("disconnected")
    alive = first.proc.poll() is None
    ok = (gone.get("reason") == "DUPLICATE_IDENTITY" and gone.get("kind") == "removed" and len(first_connects) == 1
          and not second_kicked and ours(members, "cam")[0].sid == second_sid != first_sid and alive)
    case(world, "duplicate identity ends with no rejoin loop", ok,
         f"first ({first_sid}) got {gone.get('reason')}/{gone.get('kind')}, connected {len(first_connects)}x, "
         f"still running={alive}; server lists {[p.sid for p in ours(members, 'cam')]} (second {second_sid})")
    assert gone.get("reason") == "DUPLICATE_IDENTITY" and gone.get("kind") == "removed", gone
    assert len(first_connects) == 1, f"the first roomcast joined again: {first_connects}"
    assert not second_kicked, f"the second roomcast was disconnected: {second_kicked}"
    assert ours(members, "cam")[0].sid == second_sid, (members, second_sid)
    assert alive, "roomcast exited after a DUPLICATE_IDENTITY (systemd would restart it into a loop)"


def test_bad_token_names_the_cause(world) -> None:
    """A wrong api_secret: roomcast says the server refused the token (HTTP 401, the server's reason,
    what to check), does not connect, keeps running (retrying slowly, never in a tight loop) and
    stops cleanly on SIGTERM."""
    rc = world.roomcast("badtoken", "cam", api_secret="not-the-secret-not-the-secret-00")
    m = rc.err.wait_line(r"token rejected \(HTTP 401\).*", 30, "the token-rejected status")
    line = m.group(0)
    still_running = rc.proc.poll() is None
    rc.terminate()
    code = rc.finish(10)
    err = rc.stderr_text()
    attempts = err.count("token rejected (HTTP 401)")
    connected = any(e.get("state") == "connected" for e in rc.events("connection_state_changed"))
    leaked = re.findall(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", err)  # a JWT in the log is a leaked credential
    ok = still_running and "api_key/api_secret" in line and not connected and not leaked and attempts == 1
    case(world, "bad token gives a clear error naming the cause, no retry loop", ok,
         f"still running {still_running}, {attempts} attempt(s), exit {code} on SIGTERM: {line.strip()[:300]}")
    assert not connected, "connected with a bad token"
    assert still_running, "roomcast exited on a bad token: the network must never end the process"
    assert "api_key/api_secret" in line, f"the status does not say what to check: {line}"
    assert attempts == 1, f"a refused token must be retried slowly, not at once: {attempts} attempts"
    assert not leaked, f"roomcast's log quotes the token: {line}"
    assert code == 0, f"exit {code} on SIGTERM"


def test_mute_published_track_stops_and_resumes(world) -> None:
    """RoomService.MutePublishedTrack on roomcast's video: roomcast reports track_muted, the
    subscriber sees the track muted; unmuting brings track_unmuted and new decoded frames."""
    room = "mute"
    rc = world.roomcast(room, "cam")
    video = rc.wait_joined(30)["video"]
    sub = world.peer("py", "sub", "--publish", "none", "--hold", "--progress-ms", "200", "--expect-from", "cam",
                     "--expect-video", "10", room=room, stay=60)
    sub.wait_event("expectations_met", 40)

    def mute(muted: bool):
        return world.server.api(lambda lk: lk.room.mute_published_track(
            api.MuteRoomTrackRequest(room=room, identity="cam", track_sid=video, muted=muted)))

    mute(True)
    rc.wait_event("track_muted", 10, lambda e: e.get("track_sid") == video)
    sub.wait_event("track_muted", 10, lambda e: e.get("track_sid") == video)
    world.server.wait_participants(
        room, lambda ps: any(t.sid == video and t.muted for p in ours(ps, "cam") for t in p.tracks), 10,
        "the video track listed as muted")
    def frames(e: dict) -> int:
        return e["received"].get(f"cam/{video}", {}).get("frames", 0)

    # While muted the subscriber decodes (almost) nothing: over the next 5 progress reports (200 ms
    # apart, so 1 s, 15 frames at 15 fps unmuted) at most 3 frames already in flight may arrive.
    reports = new_progress(sub, 6, 10)
    at_mute, still = frames(reports[0]), frames(reports[-1])
    assert still - at_mute <= 3, f"the subscriber decoded {still - at_mute} frames of a muted track in ~1 s"
    mute(False)
    rc.wait_event("track_unmuted", 10, lambda e: e.get("track_sid") == video)
    sub.wait_event("track_unmuted", 10, lambda e: e.get("track_sid") == video)
    after = sub.wait_event("progress", 30, lambda e: frames(e) >= still + 30)
    case(world, "MutePublishedTrack stops and resumes our track", True,
         f"roomcast and the Python subscriber saw muted then unmuted for {video}; decoded frames {at_mute} → "
         f"{still} over 1 s muted, {frames(after)} after the unmute")


def test_remove_participant_is_final(world) -> None:
    """RoomService.RemoveParticipant: roomcast gets Leave(DISCONNECT), reports removed with
    PARTICIPANT_REMOVED, keeps running and does not join again."""
    room = "remove"
    rc = world.roomcast(room, "cam")
    rc.wait_joined(30)
    world.server.api(lambda lk: lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="cam")))
    gone = rc.wait_event("disconnected", 10)
    # A rejoin would show as a new participant named cam; a fresh peer's join is the yardstick of time.
    watcher = world.peer("py", "watcher", "--publish", "none", "--hold", room=room, stay=30)
    watcher.wait_event("connected", 30)
    members = world.server.wait_participants(room, lambda ps: any(p.identity == "watcher" for p in ps), 10,
                                             "the watcher")
    connects = [e for e in rc.events("connection_state_changed") if e.get("state") == "connected"]
    alive = rc.proc.poll() is None
    ok = (gone.get("reason") == "PARTICIPANT_REMOVED" and gone.get("kind") == "removed" and len(connects) == 1
          and not ours(members, "cam") and alive)
    case(world, "RemoveParticipant gives Leave DISCONNECT and no rejoin", ok,
         f"roomcast saw {gone.get('reason')}/{gone.get('kind')}, connected {len(connects)}x, still running="
         f"{alive}; server lists {[p.identity for p in members]}")
    assert gone.get("reason") == "PARTICIPANT_REMOVED" and gone.get("kind") == "removed", gone
    assert len(connects) == 1 and not ours(members, "cam"), f"roomcast joined again: {members}"
    assert alive, "roomcast exited after being removed (systemd would restart it into the room again)"


@pytest.mark.parametrize("signal_path", ["v1", "v0"])
def test_send_data_reaches_roomcast(world, signal_path: str) -> None:
    """RoomService.SendData (reliable, with a topic) arrives as roomcast's data_received event: on
    /rtc/v1 over the one PeerConnection, on /rtc over the subscriber PeerConnection's channel."""
    path = {"v1": "/rtc/v1", "v0": "/rtc"}[signal_path]
    room = f"data-{signal_path}"
    rc = world.roomcast(room, "cam", signal_path=signal_path)
    rc.wait_joined(30)
    payload = b"hello from RoomService"
    # Both servers drop a packet for a participant whose data channel is not open yet, and roomcast
    # says nothing when its channels open: send again (each wait bounded) until one arrives.
    t0 = time.monotonic()
    attempts = 0
    got = None
    while got is None:
        attempts += 1
        world.server.api(lambda lk: lk.room.send_data(api.SendDataRequest(
            room=room, data=payload, kind=api.DataPacket.Kind.RELIABLE, destination_identities=["cam"],
            topic="roomcast-test")))
        try:
            got = rc.out.wait_for(lambda e: e.get("event") == "data_received", 0.5, "data_received")
        except AssertionError:
            if time.monotonic() - t0 > 10:
                raise AssertionError(f"no data_received after {attempts} SendData calls in 10 s\n"
                                     + rc.stderr_tail() + "\n" + world.server.stderr_tail()) from None
    ok = bytes(got.get("payload", [])) == payload and got.get("topic") == "roomcast-test"
    case(world, f"SendData reaches roomcast as data_received on {path}", ok,
         f"payload {bytes(got.get('payload', []))!r}, topic {got.get('topic')!r}, from {got.get('participant')!r}, "
         f"reliable={got.get('reliable')}; arrived on SendData call {attempts}, "
         f"{time.monotonic() - t0:.2f}s after the join")
    assert ok, got


def test_sigterm_leaves_at_once(world) -> None:
    """After SIGTERM, roomcast tells the server it leaves: ListParticipants stops listing it at once
    (not after a 15 s ping timeout), and it exits 0."""
    room = "sigterm"
    rc = world.roomcast(room, "cam")
    rc.wait_joined(30)
    world.server.wait_participants(room, lambda ps: bool(ours(ps, "cam")), 10, "cam listed")
    t0 = time.monotonic()
    rc.proc.send_signal(signal.SIGTERM)
    world.server.wait_participants(room, lambda ps: not ours(ps, "cam"), 3, "cam gone within 3 s of SIGTERM")
    took = time.monotonic() - t0
    code = rc.finish(10)
    ok = took < 3 and code == 0
    case(world, "after SIGTERM the server lists roomcast as gone at once", ok,
         f"gone from ListParticipants {took:.2f}s after SIGTERM; exit {code}")
    assert code == 0, rc.stderr_tail()
