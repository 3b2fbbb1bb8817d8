//! Connect/validate URLs and ClientInfo as the room code uses them.
//!
//! Thin adapter: the URL rules (scheme mapping, path appending, validate URL) follow the SDKs
//! (livekit-protocol.md §1.1–1.3).
use crate::signal::url::encode_join_request;
use livekit_protocol as proto;

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
    let mut parsed = url::Url::parse(url.trim())
        .map_err(|e| anyhow::anyhow!("url {url:?}: {e} (expected e.g. wss://my.livekit.cloud)"))?;
    let scheme = match parsed.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => anyhow::bail!("url {url:?}: scheme {other:?} is not ws, wss, http or https"),
    };
    parsed
        .set_scheme(scheme)
        .map_err(|_| anyhow::anyhow!("url {url:?}: cannot use scheme {scheme}"))?;
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

fn append_path(base: &url::Url, segments: &[&str]) -> url::Url {
    let mut out = base.clone();
    let path = base.path().trim_end_matches('/').to_string();
    out.set_path(&format!("{path}/{}", segments.join("/")));
    out
}

/// The ClientInfo we send.
pub fn client_info() -> proto::ClientInfo {
    proto::ClientInfo {
        sdk: proto::client_info::Sdk::Unknown as i32,
        version: crate::VERSION.to_string(),
        protocol: PROTOCOL_VERSION,
        os: std::env::consts::OS.to_string(),
        device_model: format!("roomcast/{}", std::env::consts::ARCH),
        ..Default::default()
    }
}

/// Signalling protocol level we implement.
pub const PROTOCOL_VERSION: i32 = 16;

pub fn v0_url(base: &url::Url, auto_subscribe: bool) -> url::Url {
    let mut url = append_path(base, &["rtc"]);
    let info = client_info();
    url.query_pairs_mut()
        .append_pair("sdk", "roomcast")
        .append_pair("version", &info.version)
        .append_pair("protocol", &info.protocol.to_string())
        .append_pair("os", &info.os)
        .append_pair("device_model", &info.device_model)
        .append_pair("auto_subscribe", if auto_subscribe { "1" } else { "0" })
        .append_pair("adaptive_stream", "0");
    url
}

pub fn v1_url(base: &url::Url, auto_subscribe: bool, publisher_offer: Option<String>) -> url::Url {
    let mut url = append_path(base, &["rtc", "v1"]);
    let join = proto::JoinRequest {
        client_info: Some(client_info()),
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe,
            ..Default::default()
        }),
        publisher_offer: publisher_offer.map(|sdp| proto::SessionDescription {
            r#type: "offer".into(),
            sdp,
            ..Default::default()
        }),
        ..Default::default()
    };
    url.query_pairs_mut()
        .append_pair("join_request", &encode_join_request(&join));
    url
}

/// The validate URL for a connect URL: http(s) scheme, `/validate` appended, query kept.
pub fn validate_url(connect: &url::Url) -> String {
    let mut url = append_path(connect, &["validate"]);
    let scheme = if connect.scheme() == "wss" {
        "https"
    } else {
        "http"
    };
    let _ = url.set_scheme(scheme);
    url.to_string()
}
