"""Issue 2 acceptance: a second participant with the same identity makes devroom send
Leave{DUPLICATE_IDENTITY, DISCONNECT} to the earlier session; the earlier official client sees
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
    left = dr.wait_event(lambda e: e.get("type") == "participant_left" and e.get("identity") == ident, 15,
                         f"participant_left for the older {ident}")
    rc, summary = older.finish(30)
    reason = summary.get("disconnect_reason")
    ok = rc == 0 and reason == "DUPLICATE_IDENTITY"
    report(f"duplicate identity, {first} first then {second}", ok,
           f"earlier {first} client saw disconnect reason {reason!r}; devroom participant_left reason "
           f"{left.get('reason')!r}")
    assert ok, f"older client exit {rc}, summary {summary}\n{world.diagnostics()}"
    # The newer session is the one still in the room, and the older one did not rejoin.
    rooms = dr.rooms()["rooms"]
    members = [p for r in rooms if r["name"] == room for p in r["participants"] if p["identity"] == ident]
    assert len(members) == 1, f"expected exactly one {ident} in {room}, got {members}"
    newer_connected = newer.out.wait_for(lambda e: e.get("event") == "connected", 1, "connected")
    assert members[0]["sid"] == newer_connected["sid"], (members, newer_connected)
    assert not [e for e in newer.out.json if e.get("event") == "disconnected"], "the newer client was disconnected"
    newer.stop()
    rc2, s2 = newer.finish(20)
    assert s2.get("ok"), s2
