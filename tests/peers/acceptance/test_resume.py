"""Issue 2 acceptance: after devroom drops a participant's WebSocket (on livekit-server: `ss -K` on
its TCP connection), the official Python SDK resumes (reconnect with its participant sid → ReconnectResponse; devroom reports
participant_resumed, not a second join) and media keeps reaching the subscriber.
"""
from __future__ import annotations

import pytest

from conftest import report

MORE_FRAMES = 30  # decoded video frames the subscriber must get after the resume


def frames_from(progress: dict, identity: str, kind: str) -> int:
    return max((v["frames"] for k, v in progress.get("received", {}).items()
                if k.startswith(identity + "/") and v["kind"] == kind), default=0)


@pytest.mark.parametrize("dropped", ["publisher", "subscriber"])
@pytest.mark.parametrize("spc", ["1", "0"], ids=["rtc-v1", "rtc-v0"])
def test_python_resumes_after_dropped_websocket(world, spc: str, dropped: str) -> None:
    path = "/rtc/v1" if spc == "1" else "/rtc"
    room = f"resume-{spc}-{dropped}"
    pub = world.peer("py", "pub", "--publish", "audio,video", "--hold", room=room, spc=spc, stay=60)
    sub = world.peer("py", "sub", "--publish", "none", "--hold", "--progress-ms", "200",
                     "--expect-video", "10", "--expect-from", "pub", room=room, spc=spc, stay=60)
    sub.wait_event("expectations_met", 40)
    dr = world.devroom
    victim = pub if dropped == "publisher" else sub
    if dr is not None:
        joined = dr.wait_event(lambda e: e.get("type") == "participant_joined"
                               and e.get("identity") == victim.identity, 5, f"participant_joined {victim.identity}")
        sid_before = joined["sid"]
        dr.fault("drop_ws", {"identity": victim.identity})
        dr.wait_event(lambda e: e.get("type") == "ws_closed" and e.get("identity") == victim.identity, 10,
                      f"ws_closed for {victim.identity}")
        resumed = dr.wait_event(lambda e: e.get("type") == "participant_resumed"
                                and e.get("identity") == victim.identity, 20,
                                f"participant_resumed for {victim.identity}")
    else:
        # livekit-server has no fault hook: kill the victim's signalling TCP connection (ss -K), as a
        # broken network would; the server keeps the participant and accepts its resume.
        sid_before = victim.wait_event("connected", 1)["sid"]
        killed = world.server.drop_ws(victim.proc.pid)
        assert killed >= 1, f"no signalling connection of {victim.identity} (pid {victim.proc.pid}) to kill"
    reconnected = victim.wait_event("reconnected", 20)
    if dr is None:
        members = world.server.wait_participants(room, lambda ps: any(p.identity == victim.identity for p in ps), 10,
                                                 f"{victim.identity} listed")
        resumed = {"sid": next(p.sid for p in members if p.identity == victim.identity)}
    last = [p for p in sub.out.json if p.get("event") == "progress"]
    at_resume = frames_from(last[-1], "pub", "video") if last else 0
    after = sub.wait_event("progress", 30, lambda e: frames_from(e, "pub", "video") >= at_resume + MORE_FRAMES)

    if dr is not None:
        rejoins = [e for e in dr.events if e.get("type") == "participant_joined"
                   and e.get("identity") == victim.identity and e.get("sid") != sid_before]
    else:  # a full rejoin gets a new sid, which the SDK reports as reconnected with same_sid false
        rejoins = [e for e in victim.out.json if e.get("event") == "reconnected" and not e.get("same_sid")]
    ok = (resumed.get("sid") == sid_before and reconnected.get("same_sid") and not rejoins)
    detail = (f"{dropped} ({victim.identity}) resumed as {resumed.get('sid')} (was {sid_before}), SDK same_sid="
              f"{reconnected.get('same_sid')}, rejoins={len(rejoins)}; subscriber video frames "
              f"{at_resume} → {frames_from(after, 'pub', 'video')}")
    report(f"resume of the {dropped} on {path} [{world.kind}]", ok, detail)
    assert resumed.get("sid") == sid_before, detail
    assert reconnected.get("same_sid"), f"the SDK came back with a different participant sid: {detail}"
    assert not rejoins, f"the SDK fell back to a full rejoin instead of resuming: {detail}"
    for p in (pub, sub):
        p.stop()
    for p in (pub, sub):
        rc, summary = p.finish(20)
        assert summary.get("connected") and summary.get("disconnect_reason") in (None, "CLIENT_INITIATED"), summary
