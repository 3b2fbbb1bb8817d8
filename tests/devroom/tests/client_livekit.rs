//! The device client (library) against the real livekit-server, started by
//! tests/servers/livekit-server.sh. Runs in suite 10, inside tests/netns.sh; suite 40 runs the
//! full scenario list with the built binary against both servers.

use roomcast::media::{AudioSettings, VideoSettings};
use roomcast::room::{PathChoice, Room, RoomEvent, RoomOptions, SignalPath};
use std::time::{Duration, Instant};

mod common;
use common::LiveKitServer;

async fn joins_and_publishes(path: PathChoice, expect: SignalPath) {
    let server = LiveKitServer::start();
    let room_name = format!("rust-{expect:?}").to_lowercase();
    let mut options = RoomOptions::new(&server.url, server.join_token("cam", &room_name));
    options.signal_path = path;
    options.video = VideoSettings {
        device: "test-pattern".into(),
        width: 320,
        height: 240,
        fps: 15,
        bitrate: 500,
        format: None,
    };
    options.audio = AudioSettings {
        device: "tone".into(),
        ..Default::default()
    };
    let (room, mut events) = Room::connect(options)
        .await
        .unwrap_or_else(|e| panic!("join livekit-server: {e}\n{}", server.log_tail()));
    assert_eq!(room.signal_path(), Some(expect));
    let mut published = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while published < 2 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(RoomEvent::LocalTrackPublished { .. })) => published += 1,
            Ok(Some(RoomEvent::Disconnected { detail, .. })) => panic!("disconnected: {detail}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!(
                "{published} of 2 tracks published within 20 s\n{}",
                server.log_tail()
            ),
        }
    }
    // The server's own view: our sid, with H.264 video and Opus audio.
    let sid = room.local_participant().sid;
    let mimes_of = |ps: &[serde_json::Value]| -> Vec<String> {
        let mut m: Vec<String> = ps
            .iter()
            .filter(|p| p["sid"] == sid.as_str())
            .flat_map(|p| p["tracks"].as_array().cloned().unwrap_or_default())
            // protojson: livekit-server writes the proto name, other servers may use camelCase
            .map(|t| {
                let mime = t.get("mime_type").or_else(|| t.get("mimeType"));
                mime.and_then(|m| m.as_str()).unwrap_or("").to_lowercase()
            })
            .collect();
        m.sort();
        m
    };
    let listed = server
        .wait_participants(&room_name, Duration::from_secs(10), |ps| {
            mimes_of(ps).len() == 2
        })
        .unwrap_or_else(|| {
            panic!(
                "livekit-server never listed {sid} with two tracks: {:?}",
                server.list_participants(&room_name)
            )
        });
    assert_eq!(
        mimes_of(&listed),
        ["audio/opus", "video/h264"],
        "tracks of {sid}"
    );
    // close() sends Leave: the server drops us at once, not after a ping timeout.
    let t0 = Instant::now();
    room.close().await;
    let gone = server.wait_participants(&room_name, Duration::from_secs(3), |ps| {
        ps.iter().all(|p| p["sid"] != sid.as_str())
    });
    assert!(
        gone.is_some(),
        "livekit-server still lists {sid} 3 s after close()"
    );
    eprintln!(
        "{expect:?}: gone from ListParticipants {:?} after close()",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_livekit_server_on_rtc_v1_with_h264_and_opus() {
    joins_and_publishes(PathChoice::V1, SignalPath::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_livekit_server_on_rtc_v0_with_h264_and_opus() {
    joins_and_publishes(PathChoice::V0, SignalPath::V0).await;
}
