"""Issue 2 acceptance: the official Python SDK and livekit-client (in Chromium) connect to devroom
on /rtc/v1 (single PeerConnection) and on /rtc (two PeerConnections), publish audio and video, and
receive the other's DECODED video and audio. The same pairs against livekit-server are the
differential check that devroom behaves like the real server. Two peers in a room both publish, so one room run
proves both directions; the three rooms cover the four pairs py→py, py→browser, browser→py,
browser→browser, on each signalling path.
"""
from __future__ import annotations

import pytest

from conftest import SERVERS, report, track_summary

VIDEO_FRAMES = 30   # decoded frames per remote video track (2 s at 15 fps)
AUDIO_FRAMES = 50   # decoded 10 ms audio frames with signal
PATHS = {"1": ("/rtc/v1", "v1"), "0": ("/rtc", "v0")}


PAIRS = [("py", "py"), ("py", "browser"), ("browser", "browser")]
# The whole matrix on both servers (livekit-server is the differential check; ~11 s a pair).
MATRIX = [(kind, a, b, spc) for kind in SERVERS for (a, b) in PAIRS for spc in ("1", "0")]


@pytest.mark.parametrize("server_kind,sdk_a,sdk_b,spc", MATRIX,
                         ids=[f"{k}-{a}+{b}-" + ("rtc-v1" if s == "1" else "rtc-v0") for k, a, b, s in MATRIX])
def test_both_publish_and_receive_decoded_media(world, sdk_a: str, sdk_b: str, spc: str) -> None:
    run_pair(world, sdk_a, sdk_b, spc, codec=None)


def test_h264_both_ways_between_python_and_browser(world) -> None:
    """roomcast publishes H.264: the same pair with both SDKs publishing H.264 instead of VP8."""
    run_pair(world, "py", "browser", "1", codec="h264")


def run_pair(world, sdk_a: str, sdk_b: str, spc: str, codec) -> None:
    path, signal_path = PATHS[spc]
    room = f"pairs-{sdk_a}-{sdk_b}-{signal_path}" + (f"-{codec}" if codec else "")
    a_id, b_id = f"{sdk_a}-a", f"{sdk_b}-b"
    common = ["--publish", "audio,video", "--hold", "--expect-video", str(VIDEO_FRAMES),
              "--expect-audio", str(AUDIO_FRAMES)] + (["--codec", codec] if codec else [])
    a = world.peer(sdk_a, a_id, *common, "--expect-from", b_id, room=room, spc=spc, stay=75)
    a.wait_event("connected", 40)
    b = world.peer(sdk_b, b_id, *common, "--expect-from", a_id, room=room, spc=spc, stay=75)
    b.wait_event("connected", 40)

    dr = world.devroom
    for ident in (a_id, b_id):
        if dr is None:  # livekit-server: its RoomService lists what it accepted
            members = world.server.wait_participants(
                room, lambda ps, i=ident: any(p.identity == i and len(p.tracks) == 2 for p in ps), 30,
                f"{ident} with an audio and a video track")
            video = [t for p in members if p.identity == ident for t in p.tracks if t.mime_type.startswith("video/")]
            if codec:
                assert video and video[0].mime_type.lower() == f"video/{codec}", f"{ident} asked for {codec}: {video}"
            continue
        joined = dr.wait_event(lambda e, i=ident: e.get("type") == "participant_joined" and e.get("identity") == i,
                               10, f"participant_joined for {ident}")
        assert joined.get("signal_path") == signal_path, \
            f"{ident} asked for {path} but devroom saw signal_path={joined.get('signal_path')!r}"
        for kind in ("audio", "video"):
            pub = dr.wait_event(lambda e, i=ident, k=kind: e.get("type") == "track_published"
                                and e.get("identity") == i and e.get("kind") == k, 30,
                                f"track_published {kind} by {ident}")
            if kind == "video" and codec:
                assert pub.get("mime", "").lower() == f"video/{codec}", f"{ident} asked for {codec}: {pub}"

    # Both peers hold on until each has decoded the other's media, then both leave.
    failures = []
    for p in (a, b):
        try:
            p.wait_event("expectations_met", 50)
        except AssertionError as e:
            failures.append(str(e))
    for p in (a, b):
        p.stop()
    results = {p.identity: p.finish(20) for p in (a, b)}

    for src, dst in ((a, b), (b, a)):
        rc, summary = results[dst.identity]
        got = track_summary(summary.get("received", {}), src.identity)
        video, audio = got.get("video", {}), got.get("audio", {})
        ok = (video.get("frames", 0) >= VIDEO_FRAMES and audio.get("frames", 0) >= AUDIO_FRAMES)
        detail = (f"video {video.get('frames', 0)} frames {video.get('width', 0)}x{video.get('height', 0)}, "
                  f"audio {audio.get('frames', 0)} frames with signal")
        label = (f"{src.sdk}→{dst.sdk} ({src.identity} → {dst.identity}) on {path}" + (f", {codec}" if codec else "")
                 + f" [{world.kind}]")
        report(label, ok, detail)
        if not ok:
            failures.append(f"{src.sdk}→{dst.sdk} on {path}: {detail}; {dst.identity} summary={summary}")
    for p in (a, b):
        rc, summary = results[p.identity]
        if rc != 0 or not summary.get("ok"):
            failures.append(f"{p.sdk}:{p.identity} exited {rc}, error={summary.get('error')}")
    assert not failures, "\n".join(failures) + "\n" + world.diagnostics()
