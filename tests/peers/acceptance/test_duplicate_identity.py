"""Issue 2 acceptance: a second participant with the same identity makes devroom (and livekit-server)
send Leave{DUPLICATE_IDENTITY, DISCONNECT} to the earlier session; the earlier official client sees
that reason and does not come back, and the newer one stays connected.
"""
from __future__ import annotations

import pytest

from conftest import report


@pytest.mark.parametrize("first,second", [("py", "py"), ("browser", "py"), ("py", "browser")],
                         ids=["py-then-py", "browser-then-py", "py-then-browser"])
def test_earlier_client_is_disconnected_with_duplicate_identity(world, first: str, second: str) -> None:
    room = f"dup-{first}-{second}"
    ident = "same-identity"
    older = world.peer(first, ident, "--publish", "none", "--expect-disconnect", "DUPLICATE_IDENTITY",
                       room=room, stay=45)
    older.wait_event("connected", 40)
    newer = world.peer(second, ident, "--publish", "none", "--hold", room=room, stay=45)
    newer.wait_event("connected", 40)
    dr = world.devroom
    newer_connected = newer.out.wait_for(lambda e: e.get("event") == "connected", 1, "connected")
    if dr is not None:
        left = dr.wait_event(lambda e: e.get("type") == "participant_left" and e.get("identity") == ident, 15,
                             f"participant_left for the older {ident}")
        server_saw = f"devroom participant_left {left.get('reason')!r}"
    rc, summary = older.finish(30)
    reason = summary.get("disconnect_reason")
    if dr is not None:
        joins = [e["sid"] for e in dr.events if e.get("type") == "participant_joined" and e.get("identity") == ident]
        rooms = dr.rooms()["rooms"]
        members = [p["sid"] for r in rooms if r["name"] == room for p in r["participants"] if p["identity"] == ident]
    else:  # livekit-server has no event feed: its RoomService lists who is in the room
        members = [p.sid for p in world.server.participants(room) if p.identity == ident]
        joins = [e["sid"] for p in (older, newer) for e in p.out.json if e.get("event") == "connected"]
        server_saw = "livekit-server"
    newer_kicked = [e for e in newer.out.json if e.get("event") == "disconnected"]
    checks = {
        "earlier client saw DUPLICATE_IDENTITY": rc == 0 and reason == "DUPLICATE_IDENTITY",
        "one participant with that identity remains": len(members) == 1,
        "it is the newer session (its JoinResponse sid)": len(members) == 1
        and members[0] == newer_connected.get("sid") == (joins[-1] if joins else None),
        "the newer client stays connected": not newer_kicked,
    }
    failed = [k for k, v in checks.items() if not v]
    report(f"duplicate identity, {first} first then {second} [{world.kind}]", not failed,
           f"earlier {first} client saw {reason!r} ({server_saw}); newer "
           f"{second} client sid {newer_connected.get('sid')}, joins {joins}, "
           f"room members {members}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    assert not failed, f"{failed}\nolder summary {summary}\n{world.diagnostics()}"
    newer.stop()
    rc2, s2 = newer.finish(20)
    assert s2.get("ok"), s2
