#!/usr/bin/env python3
"""Print a LiveKit access token (JWT) minted with the official `livekit-api` package.

usage: mint_token.py IDENTITY ROOM [--key K] [--secret S] [--ttl SECONDS] [--no-publish]
                     [--no-subscribe] [--name NAME] [--metadata M]
Defaults: key devkey, secret secret (devroom's defaults), ttl 3600, all room grants.
"""
import argparse
import datetime
import sys
import warnings

from livekit import api

# devroom's default secret is short; PyJWT warns about it on every mint.
warnings.filterwarnings("ignore", message=".*HMAC key.*")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("identity")
    p.add_argument("room")
    p.add_argument("--key", default="devkey")
    p.add_argument("--secret", default="secret")
    p.add_argument("--ttl", type=int, default=3600, help="seconds; negative gives an expired token")
    p.add_argument("--name")
    p.add_argument("--metadata", default="")
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--no-subscribe", action="store_true")
    a = p.parse_args()
    token = (api.AccessToken(a.key, a.secret)
             .with_identity(a.identity)
             .with_name(a.name or a.identity)
             .with_metadata(a.metadata)
             .with_grants(api.VideoGrants(room_join=True, room=a.room, can_publish=not a.no_publish,
                                          can_subscribe=not a.no_subscribe, can_publish_data=True)))
    if a.ttl >= 0:
        token = token.with_ttl(datetime.timedelta(seconds=a.ttl))
        print(token.to_jwt())
        return 0
    # An already-expired token: livekit-api only mints forward in time, so sign the claims directly.
    import jwt as pyjwt  # PyJWT, a dependency of livekit-api

    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    payload = {"sub": a.identity, "iss": a.key, "nbf": now + a.ttl - 60, "exp": now + a.ttl,
               "name": a.name or a.identity, "video": {"roomJoin": True, "room": a.room, "canPublish": not a.no_publish,
                                              "canSubscribe": not a.no_subscribe, "canPublishData": True}}
    print(pyjwt.encode(payload, a.secret, algorithm="HS256"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
