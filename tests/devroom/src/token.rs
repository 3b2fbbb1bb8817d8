//! The one place test tools mint LiveKit tokens: Rust tests, the demo, the benchmarks, and shell
//! suites and the qemu lab through `devroom mint-token`. (The official-SDK peers mint with the SDK's
//! own minter, tests/peers/mint_token.py, on purpose: that is part of what they check.)
use livekit_api::access_token::{AccessToken, VideoGrants};
use std::time::Duration;

/// devroom's default API key and secret (`DevRoomConfig::local`).
pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "secret";

/// What a test token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub key: String,
    pub secret: String,
    pub identity: String,
    pub room: String,
    /// Display name; "<identity> display" by default, so tests can tell name from identity.
    pub name: String,
    pub ttl: Duration,
    /// roomAdmin + roomList + roomCreate for RoomService (Twirp) calls.
    pub admin: bool,
}

impl TokenSpec {
    /// A join token for `room` under devroom's default key, valid for an hour.
    pub fn join(identity: &str, room: &str) -> Self {
        Self {
            key: API_KEY.into(),
            secret: API_SECRET.into(),
            identity: identity.into(),
            room: room.into(),
            name: format!("{identity} display"),
            ttl: Duration::from_secs(3600),
            admin: false,
        }
    }

    pub fn mint(&self) -> anyhow::Result<String> {
        AccessToken::with_api_key(&self.key, &self.secret)
            .with_identity(&self.identity)
            .with_name(&self.name)
            .with_ttl(self.ttl)
            .with_grants(VideoGrants {
                room_join: !self.admin,
                room_admin: self.admin,
                room_list: self.admin,
                room_create: self.admin,
                room: self.room.clone(),
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| anyhow::anyhow!("cannot mint a token for {:?}: {e}", self.identity))
    }
}

/// A join token for `room`, signed with `secret` under devroom's API key.
pub fn join_token_signed(identity: &str, room: &str, secret: &str) -> String {
    TokenSpec {
        secret: secret.into(),
        ..TokenSpec::join(identity, room)
    }
    .mint()
    .expect("minting a token with static inputs")
}

/// A join token for `room` that devroom accepts.
pub fn join_token(identity: &str, room: &str) -> String {
    join_token_signed(identity, room, API_SECRET)
}

/// `devroom mint-token IDENTITY ROOM [--key K --secret S --ttl SECONDS --admin]`.
#[derive(clap::Args, Debug)]
pub struct MintArgs {
    pub identity: String,
    pub room: String,
    #[arg(long, default_value = API_KEY)]
    pub key: String,
    #[arg(long, default_value = API_SECRET)]
    pub secret: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// A RoomService (admin) token instead of a join token.
    #[arg(long)]
    pub admin: bool,
}

pub fn mint_cli(args: MintArgs) -> anyhow::Result<String> {
    TokenSpec {
        key: args.key,
        secret: args.secret,
        ttl: Duration::from_secs(args.ttl),
        admin: args.admin,
        ..TokenSpec::join(&args.identity, &args.room)
    }
    .mint()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_carries_room_identity_and_name() {
        let token = join_token("cam-1", "lobby");
        let claims = livekit_api::access_token::TokenVerifier::with_api_key(API_KEY, API_SECRET)
            .verify(&token)
            .unwrap();
        assert_eq!(claims.sub, "cam-1");
        assert_eq!(claims.name, "cam-1 display");
        assert_eq!(claims.video.room, "lobby");
        assert!(claims.video.room_join && !claims.video.room_admin);
    }

    #[test]
    fn admin_token_has_admin_grants_and_no_join() {
        let spec = TokenSpec {
            admin: true,
            ..TokenSpec::join("ops", "lobby")
        };
        let claims = livekit_api::access_token::TokenVerifier::with_api_key(API_KEY, API_SECRET)
            .verify(&spec.mint().unwrap())
            .unwrap();
        assert!(claims.video.room_admin && claims.video.room_list && !claims.video.room_join);
    }
}
