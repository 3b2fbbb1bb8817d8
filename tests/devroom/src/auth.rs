//! Access tokens on the server side: where the token comes from, HS256 verification against the
//! configured keys, and the join permissions it grants. Pure: no IO, tested below.
use livekit_api::access_token::{AccessToken, Claims, TokenVerifier, VideoGrants};
use livekit_protocol as proto;
use std::time::Duration;

/// Why a request was refused, with the HTTP status LiveKit uses for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid authorization header. Must start with Bearer (got {0:?})")]
    BadHeader(String),
    #[error("no access token: send it as 'Authorization: Bearer <jwt>' or the access_token query parameter")]
    Missing,
    #[error("invalid authorization token: not a JWT ({0})")]
    Malformed(String),
    #[error(
        "invalid authorization token: unknown API key {0:?} (the token's iss); devroom knows {1}"
    )]
    UnknownKey(String, String),
    #[error("invalid authorization token: {0}")]
    Invalid(String),
    #[error("permissions denied: the token's video grant lacks roomJoin=true")]
    NoRoomJoin,
    #[error("no room name: the token's video grant has an empty room")]
    NoRoom,
    #[error("identity cannot be empty: mint the token with an identity (sub)")]
    NoIdentity,
}

impl AuthError {
    /// The status the Go server answers with (SRV/pkg/service/auth.go, rtcservice.go).
    pub fn status(&self) -> u16 {
        match self {
            AuthError::NoRoom | AuthError::NoIdentity => 400,
            _ => 401,
        }
    }
}

/// The token from `Authorization: Bearer` (checked first) or the `access_token` query value.
pub fn token_from(
    authorization: Option<&str>,
    access_token_query: Option<&str>,
) -> Result<String, AuthError> {
    if let Some(header) = authorization {
        return match header.strip_prefix("Bearer ") {
            Some(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
            _ => Err(AuthError::BadHeader(header.chars().take(16).collect())),
        };
    }
    match access_token_query {
        Some(token) if !token.is_empty() => Ok(token.to_string()),
        _ => Err(AuthError::Missing),
    }
}

/// Verify signature, exp and nbf (60 s leeway, as LiveKit) with the secret of the token's `iss`.
pub fn verify(token: &str, keys: &[(String, String)]) -> Result<Claims, AuthError> {
    let unverified =
        Claims::from_unverified(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
    let Some((key, secret)) = keys.iter().find(|(k, _)| *k == unverified.iss) else {
        let known: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        return Err(AuthError::UnknownKey(unverified.iss, known.join(", ")));
    };
    TokenVerifier::with_api_key(key, secret).verify(token).map_err(|e| {
        let text = match &e {
            livekit_api::access_token::AccessTokenError::Encoding(jwt) => {
                use jsonwebtoken::errors::ErrorKind;
                match jwt.kind() {
                    ErrorKind::ExpiredSignature => format!(
                        "token expired (exp {}, now {}): mint a fresh token",
                        unverified.exp,
                        now_secs()
                    ),
                    ErrorKind::ImmatureSignature => format!(
                        "token not valid yet (nbf {}, now {}): check the clock of the minting machine",
                        unverified.nbf,
                        now_secs()
                    ),
                    ErrorKind::InvalidSignature => format!(
                        "signature does not match the secret of API key {key:?}: mint with the same secret"
                    ),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("missing required claim {claim:?}: tokens need exp")
                    }
                    other => format!("{other:?}"),
                }
            }
            other => other.to_string(),
        };
        AuthError::Invalid(text)
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a verified token lets its bearer do in a room.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinGrant {
    pub api_key: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: std::collections::HashMap<String, String>,
    pub room: String,
    pub video: VideoGrants,
    pub exp: u64,
}

impl JoinGrant {
    pub fn can_publish(&self) -> bool {
        self.video.can_publish()
    }
    pub fn can_subscribe(&self) -> bool {
        self.video.can_subscribe()
    }
    pub fn can_publish_data(&self) -> bool {
        self.video.can_publish_data()
    }

    /// canPublish and, when canPublishSources is set, the source must be listed.
    pub fn may_publish_source(&self, source: proto::TrackSource) -> bool {
        if !self.can_publish() {
            return false;
        }
        if self.video.can_publish_sources.is_empty() {
            return true;
        }
        let name = match source {
            proto::TrackSource::Camera => "camera",
            proto::TrackSource::Microphone => "microphone",
            proto::TrackSource::ScreenShare => "screen_share",
            proto::TrackSource::ScreenShareAudio => "screen_share_audio",
            proto::TrackSource::Unknown => "unknown",
        };
        self.video
            .can_publish_sources
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
    }

    pub fn permission(&self) -> proto::ParticipantPermission {
        let sources = if self.video.can_publish_sources.is_empty() {
            Vec::new()
        } else {
            [
                proto::TrackSource::Camera,
                proto::TrackSource::Microphone,
                proto::TrackSource::ScreenShare,
                proto::TrackSource::ScreenShareAudio,
            ]
            .into_iter()
            .filter(|s| self.may_publish_source(*s))
            .map(|s| s as i32)
            .collect()
        };
        proto::ParticipantPermission {
            can_subscribe: self.can_subscribe(),
            can_publish: self.can_publish(),
            can_publish_data: self.can_publish_data(),
            can_publish_sources: sources,
            hidden: self.video.hidden,
            can_update_metadata: self.video.can_update_own_metadata(),
            ..Default::default()
        }
    }

    /// A fresh token with the same grants, valid for max(10 min, the original's remaining life),
    /// as the server's `refresh_token` (SRV/pkg/service/roommanager.go refreshToken).
    pub fn refreshed_token(&self, secret: &str) -> Option<String> {
        let remaining = self.exp.saturating_sub(now_secs());
        let ttl = Duration::from_secs(remaining.max(600));
        AccessToken::with_api_key(&self.api_key, secret)
            .with_identity(&self.identity)
            .with_name(&self.name)
            .with_metadata(&self.metadata)
            .with_attributes(self.attributes.clone())
            .with_grants(self.video.clone())
            .with_ttl(ttl)
            .to_jwt()
            .ok()
    }
}

/// The join checks on verified claims: roomJoin, room name, identity.
pub fn join_grant(claims: Claims) -> Result<JoinGrant, AuthError> {
    if !claims.video.room_join {
        return Err(AuthError::NoRoomJoin);
    }
    if claims.video.room.is_empty() {
        return Err(AuthError::NoRoom);
    }
    if claims.sub.is_empty() {
        return Err(AuthError::NoIdentity);
    }
    Ok(JoinGrant {
        api_key: claims.iss,
        identity: claims.sub,
        name: claims.name,
        metadata: claims.metadata,
        attributes: claims.attributes,
        room: claims.video.room.clone(),
        video: claims.video,
        exp: claims.exp as u64,
    })
}

/// Everything from header/query to a JoinGrant.
pub fn authorize_join(
    authorization: Option<&str>,
    access_token_query: Option<&str>,
    keys: &[(String, String)],
) -> Result<JoinGrant, AuthError> {
    let token = token_from(authorization, access_token_query)?;
    join_grant(verify(&token, keys)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn keys() -> Vec<(String, String)> {
        vec![("devkey".into(), "secret".into())]
    }

    pub fn mint(identity: &str, room: &str, grants: impl FnOnce(&mut VideoGrants)) -> String {
        let mut video = VideoGrants {
            room_join: true,
            room: room.into(),
            ..Default::default()
        };
        grants(&mut video);
        AccessToken::with_api_key("devkey", "secret")
            .with_identity(identity)
            .with_grants(video)
            .to_jwt()
            .unwrap()
    }

    /// A token signed by hand so exp/nbf can be anywhere.
    fn mint_claims(exp: i64, nbf: i64, secret: &str) -> String {
        // livekit-token installs jsonwebtoken's crypto provider on first use; make sure it did.
        let _ = Claims::from_unverified("x.y.z");
        let claims = serde_json::json!({
            "sub": "cam", "iss": "devkey", "exp": exp, "nbf": nbf,
            "video": {"roomJoin": true, "room": "lobby"}
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn header_wins_over_query_and_needs_bearer() {
        assert_eq!(token_from(Some("Bearer abc"), Some("q")).unwrap(), "abc");
        assert_eq!(token_from(None, Some("q")).unwrap(), "q");
        assert!(matches!(
            token_from(Some("Token abc"), Some("q")),
            Err(AuthError::BadHeader(_))
        ));
        assert_eq!(token_from(None, None), Err(AuthError::Missing));
        assert_eq!(token_from(None, None).unwrap_err().status(), 401);
    }

    #[test]
    fn valid_token_gives_grant() {
        let token = mint("cam-1", "lobby", |_| {});
        let grant = authorize_join(None, Some(&token), &keys()).unwrap();
        assert_eq!(grant.identity, "cam-1");
        assert_eq!(grant.room, "lobby");
        assert!(grant.can_publish() && grant.can_subscribe() && grant.can_publish_data());
    }

    #[test]
    fn official_python_reference_token_verifies_when_its_time_is_faked_away() {
        // The captured token is expired by now; it must fail with an expiry message, not a parse error.
        let text = include_str!("../../fixtures/official-sdk-requests/token_reference.txt");
        let jwt = text
            .lines()
            .find_map(|l| l.strip_prefix("JWT: "))
            .unwrap()
            .trim();
        let claims = Claims::from_unverified(jwt).unwrap();
        assert_eq!(claims.sub, "py-peer");
        assert_eq!(claims.video.room, "test-room");
        match verify(jwt, &keys()) {
            Ok(_) => {} // only if the machine's clock is before the capture's exp
            Err(AuthError::Invalid(text)) => assert!(text.contains("expired"), "{text}"),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_secret_unknown_key_and_garbage_are_401_with_reasons() {
        let now = now_secs() as i64;
        let bad = mint_claims(now + 600, now, "other-secret");
        let err = verify(&bad, &keys()).unwrap_err();
        assert_eq!(err.status(), 401);
        assert!(err.to_string().contains("signature"), "{err}");

        let err = verify("not-a-jwt", &keys()).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)));

        let other_key = AccessToken::with_api_key("otherkey", "secret")
            .with_identity("x")
            .with_grants(VideoGrants {
                room_join: true,
                room: "r".into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap();
        let err = verify(&other_key, &keys()).unwrap_err();
        assert!(err.to_string().contains("otherkey") && err.to_string().contains("devkey"));
    }

    #[test]
    fn exp_and_nbf_are_checked_with_small_leeway() {
        let now = now_secs() as i64;
        // Within the 60 s leeway: accepted.
        assert!(verify(&mint_claims(now - 10, now - 100, "secret"), &keys()).is_ok());
        assert!(verify(&mint_claims(now + 600, now + 10, "secret"), &keys()).is_ok());
        // Beyond it: refused with a readable reason.
        let err = verify(&mint_claims(now - 3600, now - 7200, "secret"), &keys()).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let err = verify(&mint_claims(now + 7200, now + 3600, "secret"), &keys()).unwrap_err();
        assert!(err.to_string().contains("not valid yet"), "{err}");
    }

    #[test]
    fn join_checks_room_join_room_and_identity() {
        let no_join = mint("a", "lobby", |v| v.room_join = false);
        let err = authorize_join(Some(&format!("Bearer {no_join}")), None, &keys()).unwrap_err();
        assert_eq!(err, AuthError::NoRoomJoin);
        assert_eq!(err.status(), 401);

        let claims = Claims {
            sub: String::new(),
            video: VideoGrants {
                room_join: true,
                room: "r".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(join_grant(claims).unwrap_err().status(), 400);
    }

    #[test]
    fn publish_sources_restrict_publishing() {
        let token = mint("a", "lobby", |v| {
            v.can_publish_sources = vec!["camera".into()]
        });
        let grant = authorize_join(None, Some(&token), &keys()).unwrap();
        assert!(grant.may_publish_source(proto::TrackSource::Camera));
        assert!(!grant.may_publish_source(proto::TrackSource::Microphone));
        assert_eq!(
            grant.permission().can_publish_sources,
            vec![proto::TrackSource::Camera as i32]
        );

        let token = mint("a", "lobby", |v| v.can_publish = Some(false));
        let grant = authorize_join(None, Some(&token), &keys()).unwrap();
        assert!(!grant.may_publish_source(proto::TrackSource::Camera));
        assert!(!grant.can_publish_data());
    }

    #[test]
    fn refreshed_token_keeps_grants() {
        let token = mint("a", "lobby", |v| v.can_subscribe = Some(false));
        let grant = authorize_join(None, Some(&token), &keys()).unwrap();
        let fresh = grant.refreshed_token("secret").unwrap();
        let again = authorize_join(None, Some(&fresh), &keys()).unwrap();
        assert_eq!(again.identity, "a");
        assert!(!again.can_subscribe());
        assert!(again.exp >= now_secs() + 590);
    }
}
