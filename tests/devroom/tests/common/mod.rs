//! Helpers shared by the integration tests that run against devroom.
// Each test binary compiles this module and uses its own subset of it.
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses its own subset
pub use devroom::token::{join_token, join_token_signed, API_KEY, API_SECRET};
use devroom::{DevRoom, DevRoomConfig};

/// devroom on an ephemeral loopback port, with its PNGs in a directory that outlives the test
/// (so a failing test leaves the picture behind to look at).
pub async fn start_devroom() -> DevRoom {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DevRoomConfig::local("127.0.0.1:0".parse().unwrap());
    cfg.frame_dir = dir.keep();
    DevRoom::start(cfg).await.unwrap()
}

/// The `roomcast` binary the device tests run: `ROOMCAST_BIN`, else the one cargo built next to
/// this test (`target/<profile>/roomcast`; `cargo build --workspace` builds it). Cargo's
/// `CARGO_BIN_EXE_*` covers only a package's own binaries, and roomcast is another package.
pub fn roomcast_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("ROOMCAST_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/client_devroom-HASH -> target/<profile>/roomcast
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("roomcast"))
        .expect("a test binary lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "no roomcast binary at {}: run `cargo build --workspace` (or set ROOMCAST_BIN)",
        bin.display()
    );
    bin
}

/// The real livekit-server, started by tests/servers/livekit-server.sh (the one helper the
/// shell and Python tests use too) in this test's network namespace; stopped when dropped.
/// Needs tests/netns.sh (scripts/test.sh runs the Rust tests there) and
/// scripts/install-livekit-server.sh.
pub struct LiveKitServer {
    pub url: String,
    pub http: String,
    pub key: String,
    pub secret: String,
    dir: tempfile::TempDir,
}

fn livekit_helper() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../servers/livekit-server.sh")
}

impl LiveKitServer {
    /// Start it and wait (with the helper's deadline) until its HTTP port answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("bash")
            .arg(livekit_helper())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run tests/servers/livekit-server.sh");
        assert!(
            out.status.success(),
            "livekit-server did not start (run the Rust tests inside tests/netns.sh, after \
             scripts/install-livekit-server.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: std::collections::HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LiveKitServer {
            url: env["LIVEKIT_URL"].clone(),
            http: env["LIVEKIT_HTTP"].clone(),
            key: env["LIVEKIT_API_KEY"].clone(),
            secret: env["LIVEKIT_API_SECRET"].clone(),
            dir,
        }
    }

    /// A join token for `room` signed with this server's key.
    pub fn join_token(&self, identity: &str, room: &str) -> String {
        self.token(identity, room, false)
    }

    fn token(&self, identity: &str, room: &str, admin: bool) -> String {
        devroom::token::TokenSpec {
            key: self.key.clone(),
            secret: self.secret.clone(),
            admin,
            ..devroom::token::TokenSpec::join(identity, room)
        }
        .mint()
        .unwrap()
    }

    /// RoomService.ListParticipants (Twirp JSON) for `room`; a room that does not exist (yet, or
    /// any more) has none.
    pub fn list_participants(&self, room: &str) -> Vec<serde_json::Value> {
        let admin = self.token("test-admin", room, true);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        let mut reply = agent
            .post(&format!(
                "{}/twirp/livekit.RoomService/ListParticipants",
                self.http
            ))
            .header("Authorization", &format!("Bearer {admin}"))
            .send_json(serde_json::json!({ "room": room }))
            .expect("ListParticipants");
        let status = reply.status().as_u16();
        let body: serde_json::Value = reply.body_mut().read_json().expect("ListParticipants JSON");
        match status {
            200 => body["participants"].as_array().cloned().unwrap_or_default(),
            404 => Vec::new(),
            _ => panic!("ListParticipants: HTTP {status} {body}"),
        }
    }

    /// Ask ListParticipants until `pred` holds for the list; None after `timeout`.
    pub fn wait_participants(
        &self,
        room: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Option<Vec<serde_json::Value>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let got = self.list_participants(room);
            if pred(&got) {
                return Some(got);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            // interval of a condition poll with a deadline (RoomService has no event stream)
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("livekit.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for LiveKitServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(livekit_helper())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A JoinRequest as the official SDKs send it on /rtc/v1 (protocol 17, auto-subscribe), resuming
/// `reconnect_sid` when given.
pub fn v1_join(reconnect_sid: Option<&str>) -> livekit_protocol::JoinRequest {
    use livekit_protocol as proto;
    proto::JoinRequest {
        client_info: Some(proto::ClientInfo {
            sdk: proto::client_info::Sdk::Rust as i32,
            protocol: 17,
            client_protocol: 2,
            ..Default::default()
        }),
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe: true,
            ..Default::default()
        }),
        reconnect: reconnect_sid.is_some(),
        participant_sid: reconnect_sid.unwrap_or_default().into(),
        ..Default::default()
    }
}

/// devroom's /rtc/v1 URL carrying `join` the way roomcast encodes it.
pub fn v1_url(room: &DevRoom, join: &livekit_protocol::JoinRequest) -> String {
    let encoded = roomcast::signal::url::encode_join_request(join);
    let q: String = url::form_urlencoded::byte_serialize(encoded.as_bytes()).collect();
    format!("{}/rtc/v1?join_request={q}", room.url())
}
