//! Where tokens come from (given, minted from api_key/api_secret, fetched from a token endpoint)
//! and the cache that keeps every refreshed token.
//!
//! `TokenProvider::credentials()` is what the room calls before each (re)join. It prefers, in order:
//! 1. the newest server `refresh_token` for this server/room/identity, from memory or the on-disk
//!    cache in `state_dir`, while it has more than `REFRESHED_MARGIN` left;
//! 2. the configured source: the given token, a minted one (re-minted `REMINT_MARGIN` before
//!    expiry), or one fetched from `token_url`.
//!
//! Every token is decoded (without verifying the signature: only the server has the secret) and
//! checked before connecting, so an expired or wrong-room token fails with a clear error instead
//! of a bare 401.
mod cache;
mod claims;

pub use cache::TokenCache;
pub use claims::{check_token, inspect_token, TokenInfo, CLOCK_LEEWAY};

use crate::config::{AuthConfig, Config, Secret};
use livekit_api::access_token::{AccessToken, VideoGrants};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// TTL of tokens minted on the device: short, so a leaked token is soon useless.
pub const MINT_TTL: Duration = Duration::from_secs(10 * 60);
/// Re-mint when less than this is left.
pub const REMINT_MARGIN: Duration = Duration::from_secs(2 * 60);
/// Use a refreshed token only while at least this much of it is left.
pub const REFRESHED_MARGIN: Duration = Duration::from_secs(60);
/// Token endpoint request timeout.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(10);

/// A token problem, with what to do about it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("the token is not a LiveKit JWT ({0}); fix: copy the whole token (three base64url parts separated by dots)")]
    Malformed(String),
    #[error(
        "the token has no `exp` claim and the server rejects such tokens; fix: mint it with a TTL"
    )]
    NoExpiry,
    #[error("the token for `{identity}` expired at {expired_at} (unix seconds); fix: get a new token, or use api_key/api_secret or token_url so roomcast can renew it")]
    Expired { identity: String, expired_at: u64 },
    #[error("the token for `{identity}` is not valid before {not_before} (unix seconds, now {now}); fix: check the clocks of this device and of the token issuer (NTP)")]
    NotYetValid {
        identity: String,
        not_before: u64,
        now: u64,
    },
    #[error("the token does not grant roomJoin; fix: mint it with the video grant roomJoin=true")]
    MissingRoomJoin,
    #[error("the token has no room; fix: mint it with the video grant room=\"<room>\"")]
    NoRoom,
    #[error("the token has no identity (`sub`); fix: mint it with an identity")]
    NoIdentity,
    #[error("the token is for room `{token_room}` but the config says room `{config_room}`; fix: use a token for `{config_room}` or change `room`")]
    WrongRoom {
        token_room: String,
        config_room: String,
    },
    #[error("the token is for identity `{token_identity}` but the config says identity `{config_identity}`; fix: remove `identity` (the token decides) or use a token for `{config_identity}`")]
    WrongIdentity {
        token_identity: String,
        config_identity: String,
    },
    #[error("cannot mint a token: {0}; fix: check api_key and api_secret")]
    Mint(String),
    #[error("token endpoint {url} answered HTTP {status}: {body}; fix: check token_url and the endpoint's logs")]
    EndpointStatus {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot reach the token endpoint {url}: {reason}; fix: check token_url, the network and ca_file")]
    EndpointTransport { url: String, reason: String },
    #[error("the token endpoint {url} gave an unusable reply: {reason}; fix: it must answer JSON {{\"server_url\": ..., \"participant_token\": ...}}")]
    EndpointReply { url: String, reason: String },
    #[error("cannot read ca_file {path}: {reason}; fix: point ca_file at a PEM file with CA certificates")]
    CaFile { path: String, reason: String },
    #[error("token cache {path}: {reason}; fix: make state_dir writable by roomcast, or remove state_dir")]
    Cache { path: String, reason: String },
}

/// Where a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// The `token` in the config.
    Config,
    /// Minted here from api_key/api_secret.
    Minted,
    /// From `token_url`.
    Endpoint,
    /// A server refresh_token (this run, or the cache from an earlier one).
    Refreshed,
}

/// What a join needs: where to connect and with which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub server_url: String,
    pub token: String,
    pub info: TokenInfo,
    pub origin: TokenOrigin,
}

#[derive(Debug, Clone)]
enum Source {
    Given(Secret),
    Mint { api_key: Secret, api_secret: Secret },
    Endpoint { url: String },
}

/// The TokenSourceRequest the token endpoint convention expects (proto field names).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TokenSourceRequest {
    pub room_name: String,
    pub participant_identity: String,
    pub participant_name: String,
    pub participant_metadata: String,
}

/// Its reply; camelCase accepted too (the sandbox convention).
#[derive(Debug, Clone, serde::Deserialize)]
struct TokenSourceResponse {
    #[serde(alias = "serverUrl")]
    server_url: String,
    #[serde(alias = "participantToken")]
    participant_token: String,
}

/// Hands out credentials for each join; see the module docs for the order of preference.
pub struct TokenProvider {
    source: Source,
    server_url: String,
    room: Option<String>,
    identity: String,
    /// False when the identity is only the hostname default: a given token's `sub` then rules.
    identity_explicit: bool,
    name: String,
    metadata: String,
    ca_file: Option<PathBuf>,
    cache: Option<TokenCache>,
    /// The newest token from the configured source (minted/fetched), reused while fresh.
    current: Option<Credentials>,
    /// The newest server refresh_token.
    refreshed: Option<Credentials>,
}

impl TokenProvider {
    /// A provider for this config; the cache lives in `state_dir` when one is set.
    pub fn from_config(cfg: &Config) -> Self {
        let source = match &cfg.auth {
            AuthConfig::Token(token) => Source::Given(token.clone()),
            AuthConfig::ApiKey {
                api_key,
                api_secret,
            } => Source::Mint {
                api_key: api_key.clone(),
                api_secret: api_secret.clone(),
            },
            AuthConfig::TokenUrl(url) => Source::Endpoint { url: url.clone() },
        };
        Self {
            source,
            server_url: cfg.url.clone(),
            room: cfg.room.clone(),
            identity: cfg.identity.clone(),
            identity_explicit: !cfg.identity_is_default,
            name: cfg.name.clone().unwrap_or_default(),
            metadata: cfg.metadata.clone().unwrap_or_default(),
            ca_file: cfg.ca_file.clone(),
            cache: cfg.state_dir.as_deref().map(TokenCache::in_dir),
            current: None,
            refreshed: None,
        }
    }

    /// Replace the cache (tests, or a caller with its own state dir).
    pub fn with_cache(mut self, cache: Option<TokenCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Credentials for the next join. Fetching from `token_url` runs on a blocking thread.
    pub async fn credentials(&mut self) -> Result<Credentials, AuthError> {
        let now = SystemTime::now();
        if let Some(creds) = self.reusable(now)? {
            return Ok(creds);
        }
        let Source::Endpoint { url } = &self.source else {
            return self.credentials_at(now);
        };
        let (url, request, ca_file) = (url.clone(), self.endpoint_request(), self.ca_file.clone());
        let fetched = tokio::task::spawn_blocking(move || {
            fetch_from_endpoint(&url, &request, ca_file.as_deref())
        })
        .await
        .map_err(|err| AuthError::EndpointTransport {
            url: String::new(),
            reason: err.to_string(),
        })??;
        self.accept_fetched(fetched, SystemTime::now())
    }

    /// Credentials for the next join, evaluated at `now` (blocking for `token_url`).
    pub fn credentials_at(&mut self, now: SystemTime) -> Result<Credentials, AuthError> {
        if let Some(creds) = self.reusable(now)? {
            return Ok(creds);
        }
        match &self.source {
            Source::Given(token) => {
                let info = inspect_token(token.expose())?;
                self.check(&info, now)?;
                let creds = Credentials {
                    server_url: self.server_url.clone(),
                    token: token.expose().to_string(),
                    info,
                    origin: TokenOrigin::Config,
                };
                self.current = Some(creds.clone());
                Ok(creds)
            }
            Source::Mint {
                api_key,
                api_secret,
            } => {
                let token = self.mint(api_key.expose(), api_secret.expose(), now)?;
                let info = inspect_token(&token)?;
                self.check(&info, now)?;
                let creds = Credentials {
                    server_url: self.server_url.clone(),
                    token,
                    info,
                    origin: TokenOrigin::Minted,
                };
                self.current = Some(creds.clone());
                Ok(creds)
            }
            Source::Endpoint { url } => {
                let fetched =
                    fetch_from_endpoint(url, &self.endpoint_request(), self.ca_file.as_deref())?;
                self.accept_fetched(fetched, now)
            }
        }
    }

    /// A refreshed token or the current one, if still good at `now`.
    fn reusable(&mut self, now: SystemTime) -> Result<Option<Credentials>, AuthError> {
        if self.refreshed.is_none() {
            self.refreshed = self.load_cached(now);
        }
        if let Some(refreshed) = &self.refreshed {
            if refreshed.info.remaining(now) > REFRESHED_MARGIN
                && self.check(&refreshed.info, now).is_ok()
            {
                return Ok(Some(refreshed.clone()));
            }
        }
        if let Some(current) = &self.current {
            let margin = match current.origin {
                TokenOrigin::Minted | TokenOrigin::Endpoint => REMINT_MARGIN,
                // A given token cannot be renewed: use it to the end (the check reports expiry).
                _ => Duration::ZERO,
            };
            if current.info.remaining(now) > margin {
                return Ok(Some(current.clone()));
            }
        }
        Ok(None)
    }

    fn load_cached(&self, now: SystemTime) -> Option<Credentials> {
        let cache = self.cache.as_ref()?;
        let (room, identity) = self.cache_key_parts();
        let token = cache.get(&self.server_url, room.as_deref()?, &identity, now)?;
        let info = inspect_token(&token).ok()?;
        Some(Credentials {
            server_url: self.server_url.clone(),
            token,
            info,
            origin: TokenOrigin::Refreshed,
        })
    }

    /// Room and identity this provider asks for (from the given token's claims in token mode).
    fn cache_key_parts(&self) -> (Option<String>, String) {
        if let Source::Given(token) = &self.source {
            if let Ok(info) = inspect_token(token.expose()) {
                return (Some(info.room), info.identity);
            }
        }
        (self.room.clone(), self.identity.clone())
    }

    /// Keep a server refresh_token: in memory for the next resume/rejoin, and in the cache file
    /// for the next start. The token is checked first (a token for another room is not kept).
    pub fn store_refreshed(&mut self, token: &str) -> Result<(), AuthError> {
        let info = inspect_token(token)?;
        let server_url = self
            .current
            .as_ref()
            .map(|c| c.server_url.clone())
            .unwrap_or_else(|| self.server_url.clone());
        let creds = Credentials {
            server_url,
            token: token.to_string(),
            info,
            origin: TokenOrigin::Refreshed,
        };
        self.refreshed = Some(creds.clone());
        if let Some(cache) = &self.cache {
            let (room, identity) = self.cache_key_parts();
            let room = room.unwrap_or_else(|| creds.info.room.clone());
            cache.put(
                &self.server_url,
                &room,
                &identity,
                token,
                creds.info.expires_at,
            )?;
        }
        Ok(())
    }

    /// Forget the given credentials (e.g. the server answered 401 with them): the next call
    /// goes back to the configured source.
    pub fn reject(&mut self, token: &str) {
        if self.refreshed.as_ref().is_some_and(|c| c.token == token) {
            self.refreshed = None;
            if let Some(cache) = &self.cache {
                let (room, identity) = self.cache_key_parts();
                let _ = cache.remove(
                    &self.server_url,
                    room.as_deref().unwrap_or_default(),
                    &identity,
                );
            }
        }
        if self.current.as_ref().is_some_and(|c| c.token == token) {
            self.current = None;
        }
    }

    fn check(&self, info: &TokenInfo, now: SystemTime) -> Result<(), AuthError> {
        let identity = self.identity_explicit.then_some(self.identity.as_str());
        check_token(info, now, self.room.as_deref(), identity)
    }

    /// Mint a token valid from the wall clock's now until `now + MINT_TTL` (`now` may be ahead of
    /// the wall clock in tests; AccessToken itself always starts at the wall clock).
    fn mint(&self, api_key: &str, api_secret: &str, now: SystemTime) -> Result<String, AuthError> {
        let ahead = now.duration_since(SystemTime::now()).unwrap_or_default();
        let room = self.room.clone().ok_or(AuthError::NoRoom)?;
        let grants = VideoGrants {
            room_join: true,
            room,
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            ..Default::default()
        };
        let mut token = AccessToken::with_api_key(api_key, api_secret)
            .with_identity(&self.identity)
            .with_ttl(MINT_TTL + ahead)
            .with_grants(grants);
        if !self.name.is_empty() {
            token = token.with_name(&self.name);
        }
        if !self.metadata.is_empty() {
            token = token.with_metadata(&self.metadata);
        }
        token
            .to_jwt()
            .map_err(|err| AuthError::Mint(err.to_string()))
    }

    fn endpoint_request(&self) -> TokenSourceRequest {
        TokenSourceRequest {
            room_name: self.room.clone().unwrap_or_default(),
            participant_identity: self.identity.clone(),
            participant_name: self.name.clone(),
            participant_metadata: self.metadata.clone(),
        }
    }

    fn accept_fetched(
        &mut self,
        (server_url, token): (String, String),
        now: SystemTime,
    ) -> Result<Credentials, AuthError> {
        let info = inspect_token(&token)?;
        // The endpoint may assign the identity: only room and validity are ours to insist on.
        check_token(&info, now, self.room.as_deref(), None)?;
        let server_url = if server_url.is_empty() {
            self.server_url.clone()
        } else {
            server_url
        };
        let creds = Credentials {
            server_url,
            token,
            info,
            origin: TokenOrigin::Endpoint,
        };
        self.current = Some(creds.clone());
        Ok(creds)
    }
}

/// Cache key parts (room, identity) for a config: the given token's claims in token mode,
/// else the configured room and identity. Must agree with `TokenProvider::cache_key_parts`.
pub(crate) fn cache_key_for(cfg: &Config) -> (Option<String>, String) {
    if let AuthConfig::Token(token) = &cfg.auth {
        if let Ok(info) = inspect_token(token.expose()) {
            return (Some(info.room), info.identity);
        }
    }
    (cfg.room.clone(), cfg.identity.clone())
}

/// One-shot convenience: credentials for a join with this config (cache preferred). Keep a
/// `TokenProvider` instead when joining repeatedly, so minted tokens are reused.
pub async fn resolve(cfg: &Config) -> Result<Credentials, AuthError> {
    TokenProvider::from_config(cfg).credentials().await
}

/// POST the TokenSourceRequest and read `{server_url, participant_token}` (blocking).
pub fn fetch_from_endpoint(
    url: &str,
    request: &TokenSourceRequest,
    ca_file: Option<&Path>,
) -> Result<(String, String), AuthError> {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(ENDPOINT_TIMEOUT))
        .http_status_as_error(false);
    if let Some(ca_file) = ca_file {
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(endpoint_roots(ca_file)?)
                .build(),
        );
    }
    let agent = ureq::Agent::new_with_config(config.build());
    let transport = |err: ureq::Error| AuthError::EndpointTransport {
        url: url.to_string(),
        reason: err.to_string(),
    };
    let mut response = agent
        .post(url)
        .header("User-Agent", crate::signal::url::user_agent())
        .send_json(request)
        .map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(transport)?;
    if !(200..300).contains(&status) {
        let body: String = body.trim().chars().take(300).collect();
        return Err(AuthError::EndpointStatus {
            url: url.to_string(),
            status,
            body,
        });
    }
    let reply: TokenSourceResponse =
        serde_json::from_str(&body).map_err(|err| AuthError::EndpointReply {
            url: url.to_string(),
            reason: err.to_string(),
        })?;
    if reply.participant_token.is_empty() {
        return Err(AuthError::EndpointReply {
            url: url.to_string(),
            reason: "participant_token is empty".into(),
        });
    }
    if !reply.server_url.is_empty() {
        crate::signal::url::validate_server_url(&reply.server_url).map_err(|err| {
            AuthError::EndpointReply {
                url: url.to_string(),
                reason: err.to_string(),
            }
        })?;
    }
    Ok((reply.server_url, reply.participant_token))
}

/// ureq cannot add to its built-in webpki roots, so with a ca_file the token endpoint trusts the
/// CA file plus the system bundle (when the board has one), not the webpki list.
fn endpoint_roots(ca_file: &Path) -> Result<ureq::tls::RootCerts, AuthError> {
    let mut certs = pem_certificates(ca_file)?;
    for bundle in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(mut system) = pem_certificates(Path::new(bundle)) {
            certs.append(&mut system);
            break;
        }
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

fn pem_certificates(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, AuthError> {
    let der = pem_der_certificates(path)?;
    Ok(der
        .into_iter()
        .map(|d| ureq::tls::Certificate::from_der(&d).to_owned())
        .collect())
}

fn pem_der_certificates(path: &Path) -> Result<Vec<Vec<u8>>, AuthError> {
    let fail = |reason: String| AuthError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|err| fail(err.to_string()))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|err| fail(err.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE blocks found".into()));
    }
    Ok(certs)
}

/// Root certificates for the signalling WebSocket: webpki roots plus the certificates of `ca_file`.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, AuthError> {
    let mut store = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for der in pem_der_certificates(path)? {
            store
                .add(rustls::pki_types::CertificateDer::from(der))
                .map_err(|err| AuthError::CaFile {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                })?;
        }
    }
    Ok(store)
}
