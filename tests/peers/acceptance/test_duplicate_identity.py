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
    newer_connected = newer.out.wait_for(lambda e: e.get("event") == "connected", 1, "connected")
    joins = [e for e in dr.events if e.get("type") == "participant_joined" and e.get("identity") == ident]
    rooms = dr.rooms()["rooms"]
    members = [p for r in rooms if r["name"] == room for p in r["participants"] if p["identity"] == ident]
    newer_kicked = [e for e in newer.out.json if e.get("event") == "disconnected"]
    checks = {
        "earlier client saw DUPLICATE_IDENTITY": rc == 0 and reason == "DUPLICATE_IDENTITY",
        "one participant with that identity remains": len(members) == 1,
        "it is the newer session (its JoinResponse sid)": len(members) == 1
        and members[0]["sid"] == newer_connected.get("sid") == (joins[-1]["sid"] if joins else None),
        "the newer client stays connected": not newer_kicked,
    }
    failed = [k for k, v in checks.items() if not v]
    report(f"duplicate identity, {first} first then {second}", not failed,
           f"earlier {first} client saw {reason!r} (devroom participant_left {left.get('reason')!r}); newer "
           f"{second} client sid {newer_connected.get('sid')}, devroom joins {[e['sid'] for e in joins]}, "
           f"room members {[m['sid'] for m in members]}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    assert not failed, f"{failed}\nolder summary {summary}\n{world.diagnostics()}"
    newer.stop()
    rc2, s2 = newer.finish(20)
    assert s2.get("ok"), s2
