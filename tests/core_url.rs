//! URL building and the v1 join_request against what the official SDKs actually sent
//! (tests/fixtures/official-sdk-requests, captured from livekit-client JS and the Python SDK).
use livekit_protocol as proto;
use roomcast::signal::url::{
    client_info, connect_url, decode_join_request, encode_join_request, validate_server_url,
    validate_url, ConnectOptions, Resume, SignalPath, UrlError, CLIENT_PROTOCOL, PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, BTreeSet};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/official-sdk-requests"
);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A captured request target ("/rtc/v1?..."), as a URL on the capture's host.
fn target(name: &str) -> url::Url {
    url::Url::parse(&format!("http://127.0.0.1:7880{}", fixture(name).trim())).unwrap()
}

fn query(url: &url::Url) -> BTreeMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn captured() -> serde_json::Value {
    serde_json::from_str(&fixture("captured_connect_requests.json")).unwrap()
}

const V1_CAPTURES: &[(&str, &str)] = &[
    ("js_v1", "js_v1_request_target.txt"),
    ("js_validate_v1", "js_validate_v1_request_target.txt"),
    ("python_v1", "python_v1_request_target.txt"),
    (
        "python_validate_v1",
        "python_validate_v1_request_target.txt",
    ),
];

#[test]
fn official_join_requests_decode_to_what_the_capture_saw() {
    let captured = captured();
    for (key, file) in V1_CAPTURES {
        let url = target(file);
        assert!(
            url.path() == "/rtc/v1" || url.path() == "/rtc/v1/validate",
            "{key}: {}",
            url.path()
        );
        let q = query(&url);
        let req = decode_join_request(&q["join_request"]).unwrap_or_else(|e| panic!("{key}: {e}"));
        let expected = &captured[key]["join_request_decoded"]["join_request"];
        let info = req.client_info.as_ref().expect("client_info");
        let sdk = proto::client_info::Sdk::try_from(info.sdk).unwrap();
        assert_eq!(sdk.as_str_name(), expected["client_info"]["sdk"], "{key}");
        assert_eq!(info.version, expected["client_info"]["version"], "{key}");
        assert_eq!(
            i64::from(info.protocol),
            expected["client_info"]["protocol"],
            "{key}"
        );
        assert_eq!(
            i64::from(info.client_protocol),
            expected["client_info"]["client_protocol"],
            "{key}"
        );
        let settings = req
            .connection_settings
            .as_ref()
            .expect("connection_settings");
        assert_eq!(
            settings.auto_subscribe, expected["connection_settings"]["auto_subscribe"],
            "{key}"
        );
        let offer = req
            .publisher_offer
            .as_ref()
            .expect("both SDKs send the publisher offer on v1");
        assert_eq!(offer.r#type, "offer");
        assert_eq!(
            offer.sdp, expected["publisher_offer"]["sdp"],
            "{key}: SDP survives gzip"
        );
        assert!(
            !req.reconnect && req.participant_sid.is_empty(),
            "{key}: a fresh join"
        );
    }
}

#[test]
fn official_join_requests_are_padded_base64url_of_gzip() {
    for (key, file) in V1_CAPTURES {
        let value = query(&target(file))["join_request"].clone();
        assert_eq!(value.len() % 4, 0, "{key}: padded base64");
        assert!(
            !value.contains('+') && !value.contains('/'),
            "{key}: URL-safe alphabet"
        );
        let wrapped = base64_decode(&value);
        assert_eq!(
            wrapped.compression,
            proto::wrapped_join_request::Compression::Gzip as i32,
            "{key}"
        );
        assert_eq!(
            &wrapped.join_request[..2],
            &[0x1f, 0x8b],
            "{key}: gzip magic"
        );
    }
}

fn base64_decode(value: &str) -> proto::WrappedJoinRequest {
    use base64::Engine as _;
    use prost::Message as _;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(value)
        .unwrap();
    proto::WrappedJoinRequest::decode(bytes.as_slice()).unwrap()
}

#[test]
fn our_encoding_round_trips_the_official_requests() {
    for (key, file) in V1_CAPTURES {
        let original = decode_join_request(&query(&target(file))["join_request"]).unwrap();
        let ours = encode_join_request(&original);
        assert_eq!(ours.len() % 4, 0, "{key}: padded");
        assert!(
            ours.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='),
            "{key}"
        );
        let wrapped = base64_decode(&ours);
        assert_eq!(
            wrapped.compression,
            proto::wrapped_join_request::Compression::Gzip as i32,
            "{key}: an SDP gzips well"
        );
        assert_eq!(
            decode_join_request(&ours).unwrap(),
            original,
            "{key}: round trip"
        );
    }
}

#[test]
fn a_tiny_join_request_is_not_gzipped() {
    let tiny = proto::JoinRequest {
        reconnect: true,
        ..Default::default()
    };
    let encoded = encode_join_request(&tiny);
    assert_eq!(
        base64_decode(&encoded).compression,
        proto::wrapped_join_request::Compression::None as i32
    );
    assert_eq!(decode_join_request(&encoded).unwrap(), tiny);
}

#[test]
fn decode_rejects_unpadded_and_garbage_values() {
    let value = query(&target("python_v1_request_target.txt"))["join_request"].clone();
    assert!(
        decode_join_request(value.trim_end_matches('=')).is_err(),
        "the server requires padding"
    );
    assert!(decode_join_request("!!!!").is_err());
}

#[test]
fn our_v1_url_has_the_sdk_shape() {
    let python = target("python_v1_request_target.txt");
    let opts = ConnectOptions {
        publisher_offer: Some(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0\r\n".repeat(50),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ours = connect_url("http://127.0.0.1:7880", SignalPath::V1, &opts).unwrap();
    assert_eq!(ours.scheme(), "ws");
    assert_eq!(ours.path(), python.path());
    let keys = |u: &url::Url| query(u).into_keys().collect::<BTreeSet<_>>();
    assert_eq!(
        keys(&ours),
        keys(&python),
        "only join_request, no access_token (header auth like Python/Rust)"
    );
    let req = decode_join_request(&query(&ours)["join_request"]).unwrap();
    assert_eq!(req.client_info, Some(client_info()));
    assert!(req.connection_settings.unwrap().auto_subscribe);
    assert_eq!(req.publisher_offer, opts.publisher_offer);
    // '=' padding is percent-encoded in the raw query (%3D), as in the Python SDK's request.
    assert!(python.query().unwrap().ends_with("%3D"));
    let value = &query(&ours)["join_request"];
    assert_eq!(ours.query().unwrap().ends_with("%3D"), value.ends_with('='));
    assert!(!ours
        .query()
        .unwrap()
        .trim_start_matches("join_request=")
        .contains('='));
}

#[test]
fn our_v0_url_has_the_sdk_shape() {
    let python = target("python_v0_request_target.txt");
    let js = target("js_v0_request_target.txt");
    let ours = connect_url(
        "https://lk.example.com",
        SignalPath::V0,
        &ConnectOptions::default(),
    )
    .unwrap();
    assert_eq!(ours.scheme(), "wss");
    assert_eq!(ours.path(), python.path());
    assert_eq!(ours.path(), js.path());
    let ours_q = query(&ours);
    let python_q = query(&python);
    // Every parameter we send is one the Python SDK sends too, with the same meaning.
    for key in ours_q.keys() {
        assert!(
            python_q.contains_key(key),
            "`{key}` is not something the SDKs send"
        );
    }
    for key in [
        "sdk",
        "version",
        "protocol",
        "client_protocol",
        "auto_subscribe",
        "os",
        "os_version",
        "device_model",
    ] {
        assert!(ours_q.contains_key(key), "missing `{key}`");
    }
    assert!(
        !ours_q.contains_key("access_token"),
        "the token travels in the Authorization header"
    );
    assert_eq!(ours_q["auto_subscribe"], "1");
    assert_eq!(ours_q["protocol"], PROTOCOL_VERSION.to_string());
    assert_eq!(ours_q["client_protocol"], CLIENT_PROTOCOL.to_string());
    assert_eq!(ours_q["version"], roomcast::VERSION);
    assert_eq!(ours_q["sdk"], "unknown");
    assert_eq!(ours_q["os"], std::env::consts::OS);
    assert_eq!(
        js.query_pairs()
            .find(|(k, _)| k == "auto_subscribe")
            .unwrap()
            .1,
        "1"
    );

    let off = connect_url(
        "https://lk.example.com",
        SignalPath::V0,
        &ConnectOptions {
            auto_subscribe: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(query(&off)["auto_subscribe"], "0");
}

#[test]
fn validate_urls_match_the_sdks() {
    for (connect, validate) in [
        (
            "python_v0_request_target.txt",
            "python_validate_v0_request_target.txt",
        ),
        (
            "js_v0_request_target.txt",
            "js_validate_v0_request_target.txt",
        ),
    ] {
        let (c, v) = (target(connect), target(validate));
        assert_eq!(format!("{}/validate", c.path()), v.path());
        // Same parameter names (the JS token differs per request).
        assert_eq!(
            query(&c).into_keys().collect::<Vec<_>>(),
            query(&v).into_keys().collect::<Vec<_>>()
        );
    }
    for path in [SignalPath::V0, SignalPath::V1] {
        let ours = connect_url(
            "wss://lk.example.com/base/",
            path,
            &ConnectOptions::default(),
        )
        .unwrap();
        let validate = validate_url(&ours);
        assert_eq!(validate.scheme(), "https");
        assert_eq!(
            validate.path(),
            format!("/base/{}/validate", path.segments())
        );
        assert_eq!(validate.query(), ours.query(), "query kept");
    }
    let plain = connect_url(
        "ws://127.0.0.1:7880",
        SignalPath::V0,
        &ConnectOptions::default(),
    )
    .unwrap();
    assert_eq!(validate_url(&plain).scheme(), "http");
}

#[test]
fn paths_are_appended_to_an_existing_path() {
    let opts = ConnectOptions::default();
    for (server, path, expected) in [
        ("ws://h:7880", SignalPath::V0, "/rtc"),
        ("ws://h:7880/", SignalPath::V1, "/rtc/v1"),
        ("https://h/lk", SignalPath::V1, "/lk/rtc/v1"),
        ("https://h/lk/", SignalPath::V0, "/lk/rtc"),
    ] {
        assert_eq!(
            connect_url(server, path, &opts).unwrap().path(),
            expected,
            "{server}"
        );
    }
    assert_eq!(
        connect_url("http://h", SignalPath::V0, &opts)
            .unwrap()
            .scheme(),
        "ws"
    );
    assert_eq!(
        connect_url("https://h", SignalPath::V0, &opts)
            .unwrap()
            .scheme(),
        "wss"
    );
}

#[test]
fn resume_parameters() {
    let opts = ConnectOptions {
        resume: Some(Resume {
            participant_sid: "PA_abc".into(),
            reason: proto::ReconnectReason::RrSignalDisconnected,
        }),
        ..Default::default()
    };
    let v0 = query(&connect_url("ws://h", SignalPath::V0, &opts).unwrap());
    assert_eq!(v0["reconnect"], "1");
    assert_eq!(v0["sid"], "PA_abc");
    assert_eq!(v0["reconnect_reason"], "1");
    let v1 = connect_url("ws://h", SignalPath::V1, &opts).unwrap();
    let req = decode_join_request(&query(&v1)["join_request"]).unwrap();
    assert!(req.reconnect);
    assert_eq!(req.participant_sid, "PA_abc");
    assert_eq!(
        req.reconnect_reason,
        proto::ReconnectReason::RrSignalDisconnected as i32
    );

    let fresh = query(&connect_url("ws://h", SignalPath::V0, &ConnectOptions::default()).unwrap());
    assert!(!fresh.contains_key("reconnect") && !fresh.contains_key("sid"));
}

#[test]
fn server_urls_are_validated() {
    assert_eq!(
        validate_server_url("wss://h/x").unwrap().as_str(),
        "wss://h/x"
    );
    assert!(matches!(
        validate_server_url("ftp://h"),
        Err(UrlError::Scheme { .. })
    ));
    assert!(matches!(
        validate_server_url("h:7880"),
        Err(UrlError::Scheme { .. }) | Err(UrlError::Parse { .. })
    ));
    assert!(matches!(
        validate_server_url("not a url"),
        Err(UrlError::Parse { .. })
    ));
    assert!(matches!(
        validate_server_url("wss://h/#frag"),
        Err(UrlError::Fragment { .. })
    ));
    let err = validate_server_url("ftp://h").unwrap_err().to_string();
    assert!(err.contains("ftp") && err.contains("wss"), "{err}");
}

#[test]
fn client_info_is_honest() {
    let info = client_info();
    assert_eq!(info.sdk, proto::client_info::Sdk::Unknown as i32);
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.protocol, 15);
    assert!(
        info.capabilities.is_empty(),
        "no packet trailer, no deflate data compression"
    );
    assert!(!info.os.is_empty() && !info.device_model.is_empty());
}
