//! The connect request as the two signalling paths carry it: `/rtc` query parameters (v0) or the
//! `/rtc/v1` `join_request` protobuf. Pure parsing, tested against the official SDKs' captures.
use livekit_protocol as proto;
use roomcast::signal::url::decode_join_request;

/// Which signalling path a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `/rtc`: two PeerConnections, the server offers on the subscriber PC.
    V0,
    /// `/rtc/v1`: one PeerConnection, the client always offers.
    V1,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::V0 => "v0",
            Path::V1 => "v1",
        }
    }
}

/// A refused request: HTTP status and the plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// Everything devroom needs from a connect (or validate) request besides the token.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRequest {
    pub path: Path,
    pub access_token: Option<String>,
    pub reconnect: bool,
    pub participant_sid: String,
    pub reconnect_reason: i32,
    pub auto_subscribe: bool,
    pub protocol: i32,
    pub client_protocol: i32,
    pub sdk: String,
    pub sdk_version: String,
    pub metadata: String,
    pub publisher_offer: Option<proto::SessionDescription>,
    pub sync_state: Option<proto::SyncState>,
}

/// `"1"`/`"true"` only, as the Go server's boolValue.
fn bool_value(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true")
}

/// Parse the (still percent-encoded) query string of a `/rtc` or `/rtc/v1` request.
pub fn parse_connect(path: Path, query: &str) -> Result<ConnectRequest, Refusal> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let access_token = get("access_token").map(str::to_string);
    match path {
        Path::V0 => Ok(ConnectRequest {
            path,
            access_token,
            reconnect: get("reconnect").is_some_and(bool_value),
            participant_sid: get("sid").unwrap_or_default().to_string(),
            reconnect_reason: get("reconnect_reason")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            // v0 default: subscribe to everything unless told otherwise.
            auto_subscribe: get("auto_subscribe").is_none_or(bool_value),
            protocol: get("protocol").and_then(|v| v.parse().ok()).unwrap_or(0),
            client_protocol: get("client_protocol")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            sdk: get("sdk").unwrap_or_default().to_string(),
            sdk_version: get("version").unwrap_or_default().to_string(),
            metadata: String::new(),
            publisher_offer: None,
            sync_state: None,
        }),
        Path::V1 => {
            let Some(raw) = get("join_request") else {
                return Err(Refusal::new(400, "join_request is required"));
            };
            let join = decode_join_request(raw).map_err(|e| Refusal::new(400, e.to_string()))?;
            let info = join.client_info.clone().unwrap_or_default();
            let settings = join.connection_settings.unwrap_or_default();
            Ok(ConnectRequest {
                path,
                access_token,
                reconnect: join.reconnect,
                participant_sid: join.participant_sid.clone(),
                reconnect_reason: join.reconnect_reason,
                // proto3 default: false when the client did not set it.
                auto_subscribe: settings.auto_subscribe,
                protocol: info.protocol,
                client_protocol: info.client_protocol,
                sdk: sdk_name(info.sdk),
                sdk_version: info.version.clone(),
                metadata: join.metadata.clone(),
                publisher_offer: join.publisher_offer.clone(),
                sync_state: join.sync_state.clone(),
            })
        }
    }
}

fn sdk_name(sdk: i32) -> String {
    proto::client_info::Sdk::try_from(sdk)
        .map(|s| s.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

/// Split a request target such as `/rtc/v1/validate?x=y` into (path, is_validate, query).
pub fn split_target(target: &str) -> Option<(Path, bool, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.trim_end_matches('/');
    match path {
        "/rtc" => Some((Path::V0, false, query)),
        "/rtc/validate" => Some((Path::V0, true, query)),
        "/rtc/v1" => Some((Path::V1, false, query)),
        "/rtc/v1/validate" => Some((Path::V1, true, query)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/official-sdk-requests/"
        );
        std::fs::read_to_string(format!("{dir}{name}"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn parse_fixture(name: &str) -> (bool, ConnectRequest) {
        let target = fixture(name);
        let (path, validate, query) = split_target(&target).unwrap();
        (validate, parse_connect(path, query).unwrap())
    }

    #[test]
    fn python_v1_join_request_decodes() {
        let (validate, req) = parse_fixture("python_v1_request_target.txt");
        assert!(!validate);
        assert_eq!(req.path, Path::V1);
        assert_eq!(req.sdk, "python");
        assert_eq!(req.protocol, 18);
        assert_eq!(req.client_protocol, 2);
        assert!(req.auto_subscribe);
        assert!(!req.reconnect);
        assert_eq!(
            req.access_token, None,
            "python sends the token in the header"
        );
        let offer = req.publisher_offer.unwrap();
        assert_eq!(offer.r#type, "offer");
        assert_eq!(offer.sdp.matches("m=audio").count(), 3);
        assert_eq!(offer.sdp.matches("m=video").count(), 3);
    }

    #[test]
    fn js_v1_join_request_decodes_with_query_token() {
        let (_, req) = parse_fixture("js_v1_request_target.txt");
        assert_eq!(req.sdk, "js");
        assert_eq!(req.protocol, 17);
        assert!(req.access_token.unwrap().starts_with("eyJ"));
        assert!(req.publisher_offer.is_some());
    }

    #[test]
    fn v0_query_parameters() {
        let (_, py) = parse_fixture("python_v0_request_target.txt");
        assert_eq!(py.path, Path::V0);
        assert_eq!(
            (py.sdk.as_str(), py.protocol, py.client_protocol),
            ("python", 18, 2)
        );
        assert!(py.auto_subscribe && !py.reconnect);
        let (_, js) = parse_fixture("js_v0_request_target.txt");
        assert_eq!((js.sdk.as_str(), js.protocol), ("js", 17));
        assert!(js.access_token.is_some());
    }

    #[test]
    fn validate_targets_are_recognised() {
        for name in [
            "python_validate_v0_request_target.txt",
            "python_validate_v1_request_target.txt",
            "js_validate_v0_request_target.txt",
            "js_validate_v1_request_target.txt",
        ] {
            let (validate, _) = parse_fixture(name);
            assert!(validate, "{name}");
        }
    }

    #[test]
    fn v0_reconnect_and_defaults() {
        let req = parse_connect(Path::V0, "reconnect=1&sid=PA_abc&reconnect_reason=1").unwrap();
        assert!(req.reconnect && req.auto_subscribe);
        assert_eq!(req.participant_sid, "PA_abc");
        assert_eq!(req.reconnect_reason, 1);
        let req = parse_connect(Path::V0, "reconnect=yes&auto_subscribe=0").unwrap();
        assert!(!req.reconnect && !req.auto_subscribe);
    }

    #[test]
    fn v1_errors_are_400_with_go_server_texts() {
        let err = parse_connect(Path::V1, "access_token=x").unwrap_err();
        assert_eq!(err, Refusal::new(400, "join_request is required"));
        let err = parse_connect(Path::V1, "join_request=%%%").unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.reason.contains("base64"), "{}", err.reason);
    }

    #[test]
    fn v1_reconnect_round_trip() {
        let join = proto::JoinRequest {
            reconnect: true,
            participant_sid: "PA_x".into(),
            reconnect_reason: 1,
            ..Default::default()
        };
        let q = format!(
            "join_request={}",
            url::form_urlencoded::byte_serialize(
                roomcast::signal::url::encode_join_request(&join).as_bytes()
            )
            .collect::<String>()
        );
        let req = parse_connect(Path::V1, &q).unwrap();
        assert!(req.reconnect);
        assert_eq!(req.participant_sid, "PA_x");
        assert!(!req.auto_subscribe, "v1 proto3 default is false");
    }
}
