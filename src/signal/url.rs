//! Connect and validate URLs, the v1 `join_request` parameter, and our ClientInfo.
//!
//! `encode_join_request` / `decode_join_request` are shared by the client and devroom, so both
//! sides of our own tests agree with the official SDKs on the wire format:
//! `base64url-with-padding(WrappedJoinRequest{compression, join_request})`, the inner
//! `JoinRequest` gzip-compressed when that makes it smaller (what the Rust SDK does).
use base64::Engine as _;
use flate2::{read::GzDecoder, write::GzEncoder, Compression};
use livekit_protocol as proto;
use prost::Message as _;
use std::io::{Read as _, Write as _};

/// The server refuses a decompressed JoinRequest above this (Go's http.DefaultMaxHeaderBytes).
pub const MAX_JOIN_REQUEST_BYTES: usize = 1 << 20;

/// Why a `join_request` parameter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JoinRequestError {
    #[error("cannot base64 decode wrapped join request (expected URL-safe base64 with '=' padding): {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("cannot decode WrappedJoinRequest protobuf: {0}")]
    Wrapper(prost::DecodeError),
    #[error("cannot gunzip join request: {0}")]
    Gzip(std::io::Error),
    #[error("join request is larger than {MAX_JOIN_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("cannot decode JoinRequest protobuf: {0}")]
    Inner(prost::DecodeError),
    #[error("unknown join request compression {0}")]
    UnknownCompression(i32),
}

/// Encode a JoinRequest as the v1 `join_request` query value (not yet percent-encoded).
pub fn encode_join_request(req: &proto::JoinRequest) -> String {
    let plain = req.encode_to_vec();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let gzipped = gz.write_all(&plain).and_then(|_| gz.finish()).ok();
    let wrapped = match gzipped {
        Some(g) if g.len() < plain.len() => proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::Gzip as i32,
            join_request: g,
        },
        _ => proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::None as i32,
            join_request: plain,
        },
    };
    base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec())
}

/// Decode a v1 `join_request` query value (already percent-decoded).
pub fn decode_join_request(value: &str) -> Result<proto::JoinRequest, JoinRequestError> {
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(value.trim())?;
    let wrapped =
        proto::WrappedJoinRequest::decode(bytes.as_slice()).map_err(JoinRequestError::Wrapper)?;
    let inner = match proto::wrapped_join_request::Compression::try_from(wrapped.compression) {
        Ok(proto::wrapped_join_request::Compression::None) => wrapped.join_request,
        Ok(proto::wrapped_join_request::Compression::Gzip) => {
            let mut out = Vec::new();
            GzDecoder::new(wrapped.join_request.as_slice())
                .take(MAX_JOIN_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(JoinRequestError::Gzip)?;
            out
        }
        Err(_) => return Err(JoinRequestError::UnknownCompression(wrapped.compression)),
    };
    if inner.len() > MAX_JOIN_REQUEST_BYTES {
        return Err(JoinRequestError::TooLarge);
    }
    proto::JoinRequest::decode(inner.as_slice()).map_err(JoinRequestError::Inner)
}

/// The protocol version we announce. Decided against the server's gates (livekit-protocol.md §1.4,
/// SRV/pkg/rtc/types/protocol_version.go), claiming only what roomcast handles:
///
/// | gate | feature | roomcast |
/// |------|---------|----------|
/// | 1+   | protobuf frames | yes |
/// | 3+   | subscriber-primary dual PC, speaker deltas | yes (SpeakersChanged passed through untouched) |
/// | 6+   | ICE-lite server, migration | yes (webrtc-rs copes with ICE-lite) |
/// | 7+   | server-side TrackUnpublished | yes (`SessionEvent::TrackUnpublished`) |
/// | 9+   | DISCONNECTED entries in ParticipantUpdate | yes (the Room drops those participants) |
/// | 12+  | identity-based resume | yes |
/// | 13+  | `LeaveRequest.action` | yes (DISCONNECT never rejoins) |
/// | 15+  | non-error RequestResponse | yes (an event, not a failure) |
/// | 16+  | room move (RoomMovedResponse) | **no** |
/// | 17+  | packet trailer | **no** |
///
/// Hence 15, not the SDKs' 17: the server then never moves us to another room or sends trailers.
pub const PROTOCOL_VERSION: i32 = 15;

/// Peer-to-peer API level advertised to other participants: 0 = none of RPC-over-data-streams (1)
/// or single-packet data streams (2), which roomcast does not implement.
pub const CLIENT_PROTOCOL: i32 = 0;

/// The `sdk` we report: UNKNOWN. The enum has no "roomcast", and RUST would be a claim about the
/// official libwebrtc-based Rust SDK: the server then assumes codec-change support and enables SCTP
/// zero-checksum (SRV/pkg/rtc/clientinfo.go `SupportsCodecChange`, `SupportsSctpZeroChecksum`), which
/// webrtc-rs does not promise. UNKNOWN makes the server take the conservative path for both; its
/// only other effect is that the server reads the User-Agent (`user_agent()`), which names us.
pub const SDK: proto::client_info::Sdk = proto::client_info::Sdk::Unknown;

/// `sdk=` value on /rtc: the server lower-cases and maps it; anything unknown becomes UNKNOWN.
const SDK_QUERY_VALUE: &str = "unknown";

/// Which signalling endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalPath {
    /// `/rtc/v1`: single PeerConnection, everything in `join_request`.
    V1,
    /// `/rtc`: publisher + subscriber PeerConnections, query parameters.
    V0,
}

impl SignalPath {
    /// Path segments appended to the server URL's own path.
    pub fn segments(self) -> &'static str {
        match self {
            SignalPath::V1 => "rtc/v1",
            SignalPath::V0 => "rtc",
        }
    }
    /// The name devroom reports ("v1" / "v0").
    pub fn as_str(self) -> &'static str {
        match self {
            SignalPath::V1 => "v1",
            SignalPath::V0 => "v0",
        }
    }
}

/// Why a server URL is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("`{url}` is not a URL: {reason}")]
    Parse { url: String, reason: String },
    #[error("`{url}` has scheme `{scheme}`; expected ws, wss, http or https")]
    Scheme { url: String, scheme: String },
    #[error("`{url}` has no host")]
    NoHost { url: String },
    #[error("`{url}` has a #fragment, which a server URL cannot have")]
    Fragment { url: String },
}

/// Check a server URL and normalise it to ws:// or wss:// (http→ws, https→wss, like the SDKs).
pub fn validate_server_url(input: &str) -> Result<url::Url, UrlError> {
    let trimmed = input.trim();
    let mut parsed = url::Url::parse(trimmed).map_err(|err| UrlError::Parse {
        url: trimmed.to_string(),
        reason: err.to_string(),
    })?;
    let scheme = match parsed.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(UrlError::Scheme {
                url: trimmed.to_string(),
                scheme: other.to_string(),
            })
        }
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost {
            url: trimmed.to_string(),
        });
    }
    if parsed.fragment().is_some() {
        return Err(UrlError::Fragment {
            url: trimmed.to_string(),
        });
    }
    // Switching between special schemes is always allowed by the url crate.
    parsed.set_scheme(scheme).map_err(|()| UrlError::Scheme {
        url: trimmed.to_string(),
        scheme: scheme.into(),
    })?;
    Ok(parsed)
}

/// A resume of an earlier session (`reconnect=1&sid=..` / JoinRequest.reconnect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub participant_sid: String,
    pub reason: proto::ReconnectReason,
}

/// What goes into a connect URL besides the server and path.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectOptions {
    pub auto_subscribe: bool,
    /// Some when resuming.
    pub resume: Option<Resume>,
    /// v1 only: the publisher's initial offer, sent inside the join_request (as RS does).
    pub publisher_offer: Option<proto::SessionDescription>,
    pub client_info: proto::ClientInfo,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            auto_subscribe: true,
            resume: None,
            publisher_offer: None,
            client_info: client_info(),
        }
    }
}

/// Append `rtc` or `rtc/v1` to whatever path the server URL has (JS `appendUrlPath`, RS `get_livekit_url`).
fn append_path(url: &mut url::Url, segments: &str) {
    let base = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{base}/{segments}"));
}

/// The WebSocket URL to connect to. The token is NOT in it: send it as `Authorization: Bearer`
/// (`bearer_header`), as the Rust and ESP32 SDKs do, so it stays out of proxy logs.
pub fn connect_url(
    server_url: &str,
    path: SignalPath,
    opts: &ConnectOptions,
) -> Result<url::Url, UrlError> {
    let mut url = validate_server_url(server_url)?;
    append_path(&mut url, path.segments());
    match path {
        SignalPath::V0 => {
            let info = &opts.client_info;
            let mut q = url.query_pairs_mut();
            q.append_pair("sdk", SDK_QUERY_VALUE);
            if !info.os.is_empty() {
                q.append_pair("os", &info.os);
            }
            if !info.os_version.is_empty() {
                q.append_pair("os_version", &info.os_version);
            }
            if !info.device_model.is_empty() {
                q.append_pair("device_model", &info.device_model);
            }
            q.append_pair("protocol", &info.protocol.to_string());
            q.append_pair("client_protocol", &info.client_protocol.to_string());
            q.append_pair(
                "auto_subscribe",
                if opts.auto_subscribe { "1" } else { "0" },
            );
            q.append_pair("adaptive_stream", "0");
            q.append_pair("version", &info.version);
            if let Some(resume) = &opts.resume {
                q.append_pair("reconnect", "1");
                q.append_pair("sid", &resume.participant_sid);
                if resume.reason != proto::ReconnectReason::RrUnknown {
                    q.append_pair("reconnect_reason", &(resume.reason as i32).to_string());
                }
            }
        }
        SignalPath::V1 => {
            let value = encode_join_request(&join_request(opts));
            url.query_pairs_mut().append_pair("join_request", &value);
        }
    }
    Ok(url)
}

/// The v1 JoinRequest: ClientInfo + ConnectionSettings{auto_subscribe} (+ offer, + resume fields).
/// auto_subscribe is always explicit: on v1 an unset value means FALSE (§1.3).
pub fn join_request(opts: &ConnectOptions) -> proto::JoinRequest {
    proto::JoinRequest {
        client_info: Some(opts.client_info.clone()),
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe: opts.auto_subscribe,
            ..Default::default()
        }),
        publisher_offer: opts.publisher_offer.clone(),
        reconnect: opts.resume.is_some(),
        reconnect_reason: opts
            .resume
            .as_ref()
            .map(|r| r.reason as i32)
            .unwrap_or_default(),
        participant_sid: opts
            .resume
            .as_ref()
            .map(|r| r.participant_sid.clone())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The HTTP validate URL for a connect URL: http(s) scheme, `/validate` appended, query kept
/// (JS `createValidateUrl`, RS `get_validate_url`). GET it with the same Authorization header.
pub fn validate_url(connect_url: &url::Url) -> url::Url {
    let mut url = connect_url.clone();
    let scheme = if url.scheme() == "wss" {
        "https"
    } else {
        "http"
    };
    let _ = url.set_scheme(scheme);
    append_path(&mut url, "validate");
    url
}

/// The `Authorization` header value for the signal and validate requests.
pub fn bearer_header(token: &str) -> String {
    format!("Bearer {token}")
}

/// The User-Agent for our HTTP/WS requests: with sdk UNKNOWN the server parses it.
pub fn user_agent() -> String {
    format!(
        "roomcast/{} ({}; {})",
        crate::VERSION,
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Our ClientInfo: see `SDK`, `PROTOCOL_VERSION`, `CLIENT_PROTOCOL` for the choices.
pub fn client_info() -> proto::ClientInfo {
    proto::ClientInfo {
        sdk: SDK as i32,
        version: crate::VERSION.to_string(),
        protocol: PROTOCOL_VERSION,
        os: std::env::consts::OS.to_string(),
        os_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        device_model: device_model(),
        client_protocol: CLIENT_PROTOCOL,
        ..Default::default()
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    // Device-tree strings are NUL-terminated.
    let text = text
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    (!text.is_empty()).then_some(text)
}

/// The board's model: device tree on ARM boards ("Raspberry Pi 4 Model B Rev 1.4"), DMI on PCs,
/// else the CPU architecture.
fn device_model() -> String {
    [
        "/proc/device-tree/model",
        "/sys/firmware/devicetree/base/model",
        "/sys/class/dmi/id/product_name",
    ]
    .iter()
    .find_map(|p| read_trimmed(p))
    .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
