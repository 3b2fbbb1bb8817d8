//! Reading a token's claims (unverified: only the server holds the secret) to fail early and clearly.
use super::AuthError;
use livekit_api::access_token::Claims;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server's clock leeway for nbf/exp (PROTO/auth/verifier.go).
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(60);

/// What roomcast needs to know about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// `sub`
    pub identity: String,
    pub name: String,
    pub metadata: String,
    /// `iss`: the API key.
    pub api_key: String,
    pub room: String,
    pub room_join: bool,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    /// `nbf`, unix seconds.
    pub not_before: u64,
    /// `exp`, unix seconds (0 = absent).
    pub expires_at: u64,
}

impl TokenInfo {
    /// Time left before `exp` at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(unix(now)))
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Decode a JWT's claims without checking the signature.
pub fn inspect_token(token: &str) -> Result<TokenInfo, AuthError> {
    let token = token.trim();
    if token.split('.').count() != 3 {
        return Err(AuthError::Malformed(
            "expected header.payload.signature".into(),
        ));
    }
    let claims =
        Claims::from_unverified(token).map_err(|err| AuthError::Malformed(err.to_string()))?;
    Ok(TokenInfo {
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        metadata: claims.metadata.clone(),
        api_key: claims.iss.clone(),
        room: claims.video.room.clone(),
        room_join: claims.video.room_join,
        can_publish: claims.video.can_publish(),
        can_subscribe: claims.video.can_subscribe(),
        can_publish_data: claims.video.can_publish_data(),
        not_before: claims.nbf as u64,
        expires_at: claims.exp as u64,
    })
}

/// What the server will check, checked here first: validity window (with the server's leeway),
/// roomJoin, room, identity. `room`/`identity` are what the config insists on, if anything.
pub fn check_token(
    info: &TokenInfo,
    now: SystemTime,
    room: Option<&str>,
    identity: Option<&str>,
) -> Result<(), AuthError> {
    let now_s = unix(now);
    let leeway = CLOCK_LEEWAY.as_secs();
    if info.expires_at == 0 {
        return Err(AuthError::NoExpiry);
    }
    if now_s > info.expires_at + leeway {
        return Err(AuthError::Expired {
            identity: info.identity.clone(),
            expired_at: info.expires_at,
        });
    }
    if info.not_before > now_s + leeway {
        return Err(AuthError::NotYetValid {
            identity: info.identity.clone(),
            not_before: info.not_before,
            now: now_s,
        });
    }
    if !info.room_join {
        return Err(AuthError::MissingRoomJoin);
    }
    if info.room.is_empty() {
        return Err(AuthError::NoRoom);
    }
    if info.identity.is_empty() {
        return Err(AuthError::NoIdentity);
    }
    if let Some(room) = room {
        if room != info.room {
            return Err(AuthError::WrongRoom {
                token_room: info.room.clone(),
                config_room: room.to_string(),
            });
        }
    }
    if let Some(identity) = identity {
        if identity != info.identity {
            return Err(AuthError::WrongIdentity {
                token_identity: info.identity.clone(),
                config_identity: identity.to_string(),
            });
        }
    }
    Ok(())
}
