//! Token sources, claim checks (against the official SDKs' reference tokens) and the
//! refreshed-token cache.
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use roomcast::auth::{
    check_token, fetch_from_endpoint, inspect_token, AuthError, TokenCache, TokenOrigin,
    TokenProvider, TokenSourceRequest, MINT_TTL,
};
use roomcast::config::{self, Config};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/official-sdk-requests"
);

/// The JWT line of a reference token fixture.
fn reference_token(file: &str) -> String {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("JWT: "))
        .expect("JWT line")
        .trim()
        .to_string()
}

fn at_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn cfg(text: &str) -> Config {
    config::parse(text, Path::new("/test/roomcast.toml")).unwrap()
}

fn mint(identity: &str, room: &str, room_join: bool, ttl: Duration) -> String {
    AccessToken::with_api_key("devkey", "secret")
        .with_identity(identity)
        .with_ttl(ttl)
        .with_grants(VideoGrants {
            room_join,
            room: room.into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

#[test]
fn reference_tokens_decode_like_the_official_verifiers_saw_them() {
    for (file, identity, name) in [
        ("token_reference.txt", "py-peer", "py-peer (display)"),
        ("token_reference_js.txt", "js-peer", "js-peer (display)"),
    ] {
        let info = inspect_token(&reference_token(file)).unwrap();
        assert_eq!(info.identity, identity);
        assert_eq!(info.name, name);
        assert_eq!(info.api_key, "devkey");
        assert_eq!(info.room, "test-room");
        assert_eq!(info.metadata, "{\"role\":\"tester\"}");
        assert!(info.room_join && info.can_publish && info.can_subscribe && info.can_publish_data);
        assert_eq!(
            info.expires_at - info.not_before,
            3600,
            "{file}: a one-hour token"
        );
    }
    let info = inspect_token(&reference_token("token_reference.txt")).unwrap();
    assert_eq!((info.not_before, info.expires_at), (1795553086, 1795556686));
}

#[test]
fn reference_token_checks_at_different_times() {
    let info = inspect_token(&reference_token("token_reference.txt")).unwrap();
    let inside = at_unix(info.not_before + 100);
    assert_eq!(
        check_token(&info, inside, Some("test-room"), Some("py-peer")),
        Ok(())
    );
    assert_eq!(check_token(&info, inside, None, None), Ok(()));
    // The server's 60 s leeway applies on both ends.
    assert_eq!(
        check_token(&info, at_unix(info.expires_at + 60), None, None),
        Ok(())
    );
    assert_eq!(
        check_token(&info, at_unix(info.expires_at + 61), None, None),
        Err(AuthError::Expired {
            identity: "py-peer".into(),
            expired_at: info.expires_at
        })
    );
    assert!(matches!(
        check_token(&info, at_unix(info.not_before - 61), None, None),
        Err(AuthError::NotYetValid { .. })
    ));
    assert_eq!(
        check_token(&info, inside, Some("lobby"), None),
        Err(AuthError::WrongRoom {
            token_room: "test-room".into(),
            config_room: "lobby".into()
        })
    );
    assert!(matches!(
        check_token(&info, inside, None, Some("cam-1")),
        Err(AuthError::WrongIdentity { .. })
    ));
    let shown = AuthError::Expired {
        identity: "py-peer".into(),
        expired_at: 1,
    }
    .to_string();
    assert!(
        shown.contains("expired") && shown.contains("fix:"),
        "{shown}"
    );
}

#[test]
fn missing_room_join_and_garbage_are_named() {
    let token = mint("cam-1", "lobby", false, Duration::from_secs(600));
    let info = inspect_token(&token).unwrap();
    assert_eq!(
        check_token(&info, SystemTime::now(), None, None),
        Err(AuthError::MissingRoomJoin)
    );
    assert!(matches!(
        inspect_token("not-a-jwt"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        inspect_token("a.b.c"),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn minted_tokens_carry_the_config_and_verify_with_the_secret() {
    let mut provider = TokenProvider::from_config(&cfg(
        "url = \"ws://127.0.0.1:7880\"\napi_key = \"devkey\"\napi_secret = \"secret\"\nroom = \"lobby\"\nidentity = \"cam-1\"\nname = \"Front door\"\nmetadata = \"m\"\n",
    ));
    let now = SystemTime::now();
    let creds = provider.credentials_at(now).unwrap();
    assert_eq!(creds.origin, TokenOrigin::Minted);
    assert_eq!(creds.server_url, "ws://127.0.0.1:7880");
    let claims = TokenVerifier::with_api_key("devkey", "secret")
        .verify(&creds.token)
        .expect("signed with api_secret");
    assert_eq!(claims.sub, "cam-1");
    assert_eq!(claims.name, "Front door");
    assert_eq!(claims.metadata, "m");
    assert!(claims.video.room_join);
    assert_eq!(claims.video.room, "lobby");
    assert_eq!(claims.video.can_publish, Some(true));
    assert_eq!(claims.video.can_subscribe, Some(true));
    assert_eq!(claims.video.can_publish_data, Some(true));
    let ttl = creds.info.expires_at - creds.info.not_before;
    assert!(ttl.abs_diff(MINT_TTL.as_secs()) <= 1, "ttl {ttl}");

    // Reused while fresh, re-minted shortly before expiry.
    let again = provider
        .credentials_at(now + Duration::from_secs(60))
        .unwrap();
    assert_eq!(again.token, creds.token);
    let later = provider
        .credentials_at(now + MINT_TTL - Duration::from_secs(60))
        .unwrap();
    assert_eq!(later.origin, TokenOrigin::Minted);
    assert_ne!(later.token, creds.token, "re-minted before expiry");
}

#[test]
fn a_given_token_is_checked_against_the_config() {
    let token = mint("cam-1", "lobby", true, Duration::from_secs(600));
    let mut ok = TokenProvider::from_config(&cfg(&format!(
        "url = \"ws://h\"\ntoken = \"{token}\"\nroom = \"lobby\"\n"
    )));
    let creds = ok.credentials_at(SystemTime::now()).unwrap();
    assert_eq!(
        (creds.origin, creds.info.identity.as_str()),
        (TokenOrigin::Config, "cam-1")
    );

    let mut wrong = TokenProvider::from_config(&cfg(&format!(
        "url = \"ws://h\"\ntoken = \"{token}\"\nroom = \"other\"\n"
    )));
    assert!(matches!(
        wrong.credentials_at(SystemTime::now()),
        Err(AuthError::WrongRoom { .. })
    ));

    let mut late =
        TokenProvider::from_config(&cfg(&format!("url = \"ws://h\"\ntoken = \"{token}\"\n")));
    let err = late
        .credentials_at(SystemTime::now() + Duration::from_secs(3600))
        .unwrap_err();
    assert!(matches!(err, AuthError::Expired { .. }), "{err}");
}

/// A one-shot HTTP server on loopback: returns the request body it got through the channel.
fn one_shot_server(status: u16, body: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut length = 0usize;
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut request_body = vec![0; length];
        reader.read_exact(&mut request_body).unwrap();
        tx.send(format!(
            "{}\n{}",
            request_line.trim(),
            String::from_utf8(request_body).unwrap()
        ))
        .unwrap();
        let mut stream = reader.into_inner();
        write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    (url, rx)
}

#[test]
fn token_endpoint_gets_a_token_source_request() {
    let token: &'static str =
        Box::leak(mint("cam-1", "lobby", true, Duration::from_secs(600)).into_boxed_str());
    let reply: &'static str = Box::leak(
        format!("{{\"server_url\":\"wss://lk.example.com\",\"participant_token\":\"{token}\"}}")
            .into_boxed_str(),
    );
    let (url, seen) = one_shot_server(200, reply);
    let mut provider = TokenProvider::from_config(&cfg(&format!(
        "url = \"ws://fallback\"\ntoken_url = \"{url}\"\nroom = \"lobby\"\nidentity = \"cam-1\"\nname = \"Door\"\n"
    )));
    let creds = provider.credentials_at(SystemTime::now()).unwrap();
    assert_eq!(creds.origin, TokenOrigin::Endpoint);
    assert_eq!(
        creds.server_url, "wss://lk.example.com",
        "the endpoint's server_url wins"
    );
    assert_eq!(creds.token, token);
    let request = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    let (line, body) = request.split_once('\n').unwrap();
    assert!(line.starts_with("POST /token "), "{line}");
    let body: TokenSourceRequest = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        TokenSourceRequest {
            room_name: "lobby".into(),
            participant_identity: "cam-1".into(),
            participant_name: "Door".into(),
            participant_metadata: String::new(),
        }
    );
}

#[test]
fn token_endpoint_errors_carry_status_and_body() {
    let (url, _seen) = one_shot_server(403, "{\"error\":\"room locked\"}");
    let request = TokenSourceRequest {
        room_name: "lobby".into(),
        participant_identity: "cam-1".into(),
        participant_name: String::new(),
        participant_metadata: String::new(),
    };
    let err = fetch_from_endpoint(&url, &request, None).unwrap_err();
    assert!(
        matches!(&err, AuthError::EndpointStatus { status: 403, body, .. } if body.contains("room locked")),
        "{err}"
    );

    let (url, _seen) = one_shot_server(200, "{\"nope\":1}");
    assert!(matches!(
        fetch_from_endpoint(&url, &request, None),
        Err(AuthError::EndpointReply { .. })
    ));

    // Nothing listens on port 9 of loopback.
    assert!(matches!(
        fetch_from_endpoint("http://127.0.0.1:9/token", &request, None),
        Err(AuthError::EndpointTransport { .. })
    ));
}

#[test]
fn refreshed_tokens_are_cached_0600_and_preferred_on_the_next_join() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "url = \"ws://127.0.0.1:7880\"\napi_key = \"devkey\"\napi_secret = \"secret\"\nroom = \"lobby\"\nidentity = \"cam-1\"\nstate_dir = \"{}\"\n",
        dir.path().display()
    );
    let mut first = TokenProvider::from_config(&cfg(&text));
    let minted = first.credentials_at(SystemTime::now()).unwrap();
    assert_eq!(minted.origin, TokenOrigin::Minted);

    let refreshed = mint("cam-1", "lobby", true, Duration::from_secs(3600));
    first.store_refreshed(&refreshed).unwrap();
    let cache_path = dir.path().join("token-cache.json");
    let mode = std::fs::metadata(&cache_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    // This run uses it for the next rejoin...
    assert_eq!(
        first.credentials_at(SystemTime::now()).unwrap().token,
        refreshed
    );

    // ...and so does the next start.
    let mut second = TokenProvider::from_config(&cfg(&text));
    let creds = second.credentials_at(SystemTime::now()).unwrap();
    assert_eq!(
        (creds.origin, creds.token.as_str()),
        (TokenOrigin::Refreshed, refreshed.as_str())
    );

    // Once it is (nearly) expired, the configured source takes over again.
    let mut third = TokenProvider::from_config(&cfg(&text));
    let creds = third
        .credentials_at(SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    assert_eq!(creds.origin, TokenOrigin::Minted);

    // A different identity does not pick up cam-1's token.
    let mut other = TokenProvider::from_config(&cfg(&text.replace("cam-1", "cam-2")));
    assert_eq!(
        other.credentials_at(SystemTime::now()).unwrap().origin,
        TokenOrigin::Minted
    );

    // A rejected token is dropped from the cache.
    second.reject(&refreshed);
    let mut fourth = TokenProvider::from_config(&cfg(&text));
    assert_eq!(
        fourth.credentials_at(SystemTime::now()).unwrap().origin,
        TokenOrigin::Minted
    );
}

#[test]
fn an_expired_given_token_is_rescued_by_a_cached_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let given = mint("cam-1", "lobby", true, Duration::from_secs(120));
    let text = format!(
        "url = \"ws://h\"\ntoken = \"{given}\"\nstate_dir = \"{}\"\n",
        dir.path().display()
    );
    let mut provider = TokenProvider::from_config(&cfg(&text));
    provider
        .store_refreshed(&mint("cam-1", "lobby", true, Duration::from_secs(7200)))
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let mut next_start = TokenProvider::from_config(&cfg(&text));
    let creds = next_start.credentials_at(later).unwrap();
    assert_eq!(creds.origin, TokenOrigin::Refreshed);
}

#[test]
fn a_corrupt_cache_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token-cache.json"), "{ not json").unwrap();
    let cache = TokenCache::in_dir(dir.path());
    assert_eq!(
        cache.get("ws://h", "lobby", "cam-1", SystemTime::now()),
        None
    );
    cache
        .put("ws://h", "lobby", "cam-1", "tok", u64::MAX / 2)
        .unwrap();
    assert_eq!(
        cache
            .get("ws://h", "lobby", "cam-1", SystemTime::now())
            .as_deref(),
        Some("tok")
    );
}

#[test]
fn root_store_adds_the_ca_file() {
    let base = roomcast::auth::root_store(None).unwrap().len();
    assert!(base > 100, "webpki roots");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "no pem here").unwrap();
    assert!(matches!(
        roomcast::auth::root_store(Some(&bad)),
        Err(AuthError::CaFile { .. })
    ));
}

#[tokio::test]
async fn resolve_and_for_config_share_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "url = \"ws://h\"\napi_key = \"devkey\"\napi_secret = \"secret\"\nroom = \"lobby\"\nidentity = \"cam-1\"\nstate_dir = \"{}\"\n",
        dir.path().display()
    );
    let config = cfg(&text);
    assert_eq!(
        roomcast::auth::resolve(&config).await.unwrap().origin,
        TokenOrigin::Minted
    );
    let cache = TokenCache::for_config(&config).expect("state_dir set");
    let refreshed = mint("cam-1", "lobby", true, Duration::from_secs(3600));
    cache.store(&refreshed).unwrap();
    let creds = roomcast::auth::resolve(&config).await.unwrap();
    assert_eq!(
        (creds.origin, creds.token),
        (TokenOrigin::Refreshed, refreshed)
    );
    assert!(
        TokenCache::for_config(&cfg("url = \"ws://h\"\ntoken = \"a.b.c\"\n")).is_none(),
        "no state_dir, no cache"
    );
}
