"""Issue 2 acceptance: a bad token gets HTTP 401 with a readable reason, and both official SDKs
surface that reason to the application (Python: ConnectError text; livekit-client:
ConnectionError message read from the validate endpoint, status 401).
"""
from __future__ import annotations

import time

import pytest

from conftest import mint, report

CASES = {
    "wrong-secret": ("--secret", "not-the-devroom-secret"),
    "expired": ("--ttl", "-600"),
    "wrong-key": ("--key", "unknown-key"),
}


# Every case on /rtc/v1 (the SDKs' default); one on /rtc, where the SDKs validate on the v0 path.
VARIANTS = [(case, "1") for case in CASES] + [("wrong-secret", "0")]


@pytest.mark.parametrize("case,spc", VARIANTS, ids=[f"{c}-" + ("rtc-v1" if s == "1" else "rtc-v0")
                                                     for c, s in VARIANTS])
@pytest.mark.parametrize("sdk", ["py", "browser"])
def test_bad_token_is_refused_with_a_readable_reason(world, sdk: str, case: str, spc: str) -> None:
    token = mint("bad-token-peer", "test-room", *CASES[case])
    t = time.monotonic()
    p = world.peer(sdk, "bad-token-peer", "--publish", "none", "--expect-connect-error", "",
                   room="test-room", spc=spc, token=token, stay=30)
    rc, summary = p.finish(45)
    took = time.monotonic() - t
    dr = world.devroom
    rej = dr.wait_event(lambda e: e.get("type") == "join_rejected", 5, "join_rejected")
    reason = (rej.get("reason") or "").strip()
    error = summary.get("error") or ""
    status_seen = "401" in error if sdk == "py" else summary.get("status") == 401
    reason_seen = bool(reason) and reason.lower() in error.lower()
    ok = (not summary.get("connected")) and rej.get("status") == 401 and status_seen and reason_seen
    report(f"bad token ({case}) via {sdk} on {'/rtc/v1' if spc == '1' else '/rtc'}", ok,
           f"devroom 401 reason {reason!r}; SDK error {error!r}; {took:.1f}s")
    assert not summary.get("connected"), "connected with a bad token"
    assert rej.get("status") == 401, rej
    assert len(reason) >= 8, f"devroom's 401 reason is not readable: {reason!r}"
    assert status_seen, f"{sdk} did not report the 401: {error!r} {summary}"
    assert reason_seen, f"{sdk} did not surface devroom's reason {reason!r}: {error!r}"
    assert rc == 0
