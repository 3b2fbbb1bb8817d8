//! Connect/validate URLs as the room code uses them: thin wrappers over `signal::url` (core),
//! plus the room-level path choice.
use crate::signal::url as core_url;

/// Which signalling path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathChoice {
    /// `/rtc/v1`, falling back to `/rtc` on 404.
    Auto,
    V1,
    V0,
}

/// The path actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalPath {
    V1,
    V0,
}

/// `ws(s)://host[/prefix]` from whatever the user gave (http(s) mapped to ws(s)).
pub fn ws_base(url: &str) -> anyhow::Result<url::Url> {
    core_url::validate_server_url(url).map_err(|e| anyhow::anyhow!("url: {e}"))
}

fn connect(
    base: &url::Url,
    path: core_url::SignalPath,
    auto_subscribe: bool,
    offer: Option<String>,
    resume: Option<core_url::Resume>,
) -> url::Url {
    let options = core_url::ConnectOptions {
        auto_subscribe,
        resume,
        publisher_offer: offer.map(|sdp| livekit_protocol::SessionDescription {
            r#type: "offer".into(),
            sdp,
            ..Default::default()
        }),
        ..Default::default()
    };
    // `base` already passed validate_server_url, so building on it cannot fail.
    core_url::connect_url(base.as_str(), path, &options).unwrap_or_else(|_| base.clone())
}

pub fn v0_url(base: &url::Url, auto_subscribe: bool) -> url::Url {
    connect(base, core_url::SignalPath::V0, auto_subscribe, None, None)
}

/// The URL that resumes participant `participant_sid` on `path`: `reconnect=1&sid=…` on /rtc,
/// `join_request.reconnect` + `participant_sid` on /rtc/v1.
pub fn resume_url(
    base: &url::Url,
    path: SignalPath,
    auto_subscribe: bool,
    participant_sid: &str,
    reason: livekit_protocol::ReconnectReason,
) -> url::Url {
    let resume = Some(core_url::Resume {
        participant_sid: participant_sid.to_string(),
        reason,
    });
    let path = match path {
        SignalPath::V0 => core_url::SignalPath::V0,
        SignalPath::V1 => core_url::SignalPath::V1,
    };
    connect(base, path, auto_subscribe, None, resume)
}

pub fn v1_url(base: &url::Url, auto_subscribe: bool, publisher_offer: Option<String>) -> url::Url {
    connect(
        base,
        core_url::SignalPath::V1,
        auto_subscribe,
        publisher_offer,
        None,
    )
}

/// The validate URL for a connect URL: http(s) scheme, `/validate` appended, query kept.
pub fn validate_url(connect: &url::Url) -> String {
    core_url::validate_url(connect).to_string()
}
