//! Helpers shared by the integration tests that run against devroom.
// Each test binary compiles this module and uses its own subset of it.
#![allow(dead_code)]

use livekit_api::access_token::{AccessToken, VideoGrants};
use roomcast::devroom::{DevRoom, DevRoomConfig};

/// devroom's default API key and secret (`DevRoomConfig::local`).
pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "secret";

/// A join token for `room`, signed with `secret` under devroom's API key; the display name is
/// "<identity> display" so tests can tell name from identity.
pub fn join_token_signed(identity: &str, room: &str, secret: &str) -> String {
    AccessToken::with_api_key(API_KEY, secret)
        .with_identity(identity)
        .with_name(&format!("{identity} display"))
        .with_grants(VideoGrants {
            room_join: true,
            room: room.into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

/// A join token for `room` that devroom accepts.
pub fn join_token(identity: &str, room: &str) -> String {
    join_token_signed(identity, room, API_SECRET)
}

/// devroom on an ephemeral loopback port, with its PNGs in a directory that outlives the test
/// (so a failing test leaves the picture behind to look at).
pub async fn start_devroom() -> DevRoom {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DevRoomConfig::local("127.0.0.1:0".parse().unwrap());
    cfg.frame_dir = dir.keep();
    DevRoom::start(cfg).await.unwrap()
}
