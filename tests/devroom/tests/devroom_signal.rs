//! devroom's signalling driven by a raw WebSocket client speaking livekit-protocol messages:
//! join on both paths, ping, AddTrack, ParticipantUpdate, leave, duplicate identity, resume,
//! bad tokens, validate, admin and Twirp. No media: these tests never send an SDP offer.

use devroom::{DevRoom, EventKind};
use futures_util::{SinkExt as _, StreamExt as _};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

mod common;
use common::{join_token as token, start_devroom as start};

fn v0_url(room: &DevRoom, query: &str) -> String {
    format!(
        "{}/rtc?protocol=17&sdk=rust&auto_subscribe=1&{query}",
        room.url()
    )
}

use common::{v1_join, v1_url};

/// Connect with the token in the Authorization header (as the Python/Rust SDKs do).
async fn connect_bearer(url: &str, jwt: &str) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

async fn send(ws: &mut Ws, message: Req) {
    let bytes = proto::SignalRequest {
        message: Some(message),
    }
    .encode_to_vec();
    ws.send(tungstenite::Message::Binary(bytes.into()))
        .await
        .unwrap();
}

/// The next response satisfying `pick`, skipping others (trickle, offers, updates...).
async fn next<T>(ws: &mut Ws, what: &str, mut pick: impl FnMut(Resp) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        match frame {
            Some(Ok(tungstenite::Message::Binary(bytes))) => {
                let resp = proto::SignalResponse::decode(bytes.as_ref()).unwrap();
                if let Some(found) = resp.message.and_then(&mut pick) {
                    return found;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended while waiting for {what}: {other:?}"),
        }
    }
}

async fn join_v0(room: &DevRoom, identity: &str, lk_room: &str) -> (Ws, proto::JoinResponse) {
    let url = v0_url(room, &format!("access_token={}", token(identity, lk_room)));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let join = next(&mut ws, "join", |m| match m {
        Resp::Join(j) => Some(j),
        _ => None,
    })
    .await;
    (ws, join)
}

fn http_get(url: &str) -> (u16, String, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    let cors = resp
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
        cors,
    )
}

#[tokio::test]
async fn join_v0_gets_join_response_refresh_token_and_pong() {
    let room = start().await;
    let (mut ws, join) = join_v0(&room, "cam", "lobby").await;
    let me = join.participant.clone().unwrap();
    assert!(me.sid.starts_with("PA_"));
    assert_eq!(me.identity, "cam");
    assert_eq!(me.name, "cam display");
    assert_eq!(join.room.as_ref().unwrap().name, "lobby");
    assert!(join.room.unwrap().sid.starts_with("RM_"));
    assert_eq!((join.ping_interval, join.ping_timeout), (5, 15));
    assert!(
        join.subscriber_primary,
        "v0 with protocol 17 and canSubscribe is subscriber-primary"
    );
    assert!(join.server_info.is_some());
    assert!(join.other_participants.is_empty());

    let refreshed = next(&mut ws, "refresh_token", |m| match m {
        Resp::RefreshToken(t) => Some(t),
        _ => None,
    })
    .await;
    let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret")
        .verify(&refreshed)
        .unwrap();
    assert_eq!(claims.sub, "cam");

    send(
        &mut ws,
        Req::PingReq(proto::Ping {
            timestamp: 1234,
            rtt: 0,
        }),
    )
    .await;
    let pong = next(&mut ws, "pong_resp", |m| match m {
        Resp::PongResp(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(pong.last_ping_timestamp, 1234);
    assert!(pong.timestamp > 0);
    send(&mut ws, Req::Ping(99)).await;
    next(&mut ws, "legacy pong", |m| {
        matches!(m, Resp::Pong(_)).then_some(())
    })
    .await;

    let joined = room
        .wait_event(WAIT, |e| matches!(&e.kind, EventKind::ParticipantJoined { identity, signal_path, .. } if identity == "cam" && signal_path == "v0"))
        .await;
    assert!(joined.is_some());
    let snapshot = room.snapshot();
    assert_eq!(snapshot["rooms"][0]["participants"][0]["identity"], "cam");
    assert_eq!(snapshot["rooms"][0]["participants"][0]["signal_path"], "v0");
    room.shutdown().await;
}

#[tokio::test]
async fn add_track_publishes_and_reused_cid_is_queued() {
    let room = start().await;
    let (mut ws, _) = join_v0(&room, "cam", "lobby").await;
    let add = proto::AddTrackRequest {
        cid: "video-cid-1".into(),
        name: "camera".into(),
        r#type: proto::TrackType::Video as i32,
        source: proto::TrackSource::Camera as i32,
        width: 640,
        height: 480,
        ..Default::default()
    };
    send(&mut ws, Req::AddTrack(add.clone())).await;
    let published = next(&mut ws, "track_published", |m| match m {
        Resp::TrackPublished(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(published.cid, "video-cid-1");
    let info = published.track.unwrap();
    assert!(info.sid.starts_with("TR_"));
    assert_eq!(info.r#type, proto::TrackType::Video as i32);
    assert_eq!((info.width, info.height), (640, 480));

    send(&mut ws, Req::AddTrack(add)).await;
    let queued = next(&mut ws, "request_response", |m| match m {
        Resp::RequestResponse(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(
        queued.reason,
        proto::request_response::Reason::Queued as i32
    );

    send(
        &mut ws,
        Req::Mute(proto::MuteTrackRequest {
            sid: info.sid.clone(),
            muted: true,
        }),
    )
    .await;
    let track_sid = info.sid.clone();
    room.wait_event(WAIT, |e| {
        matches!(&e.kind, EventKind::TrackMuted { identity, track_sid: t, muted: true, by }
            if identity == "cam" && *t == track_sid && by == "publisher")
    })
    .await
    .expect("track_muted event for the client's MuteTrack");
    let track = &room.snapshot()["rooms"][0]["participants"][0]["tracks"][0];
    assert_eq!(track["muted"], true);
    assert_eq!(track["sid"], info.sid);
    assert_eq!(track["cid"], "video-cid-1");
    assert_eq!(track["kind"], "video");
    room.shutdown().await;
}

#[tokio::test]
async fn publish_source_not_granted_is_not_allowed() {
    let room = start().await;
    let jwt = AccessToken::with_api_key("devkey", "secret")
        .with_identity("mic-only")
        .with_grants(VideoGrants {
            room_join: true,
            room: "lobby".into(),
            can_publish_sources: vec!["microphone".into()],
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let mut ws = connect_bearer(&v0_url(&room, ""), &jwt).await.unwrap();
    send(
        &mut ws,
        Req::AddTrack(proto::AddTrackRequest {
            cid: "c".into(),
            r#type: proto::TrackType::Video as i32,
            source: proto::TrackSource::Camera as i32,
            ..Default::default()
        }),
    )
    .await;
    let refused = next(&mut ws, "request_response", |m| match m {
        Resp::RequestResponse(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(
        refused.reason,
        proto::request_response::Reason::NotAllowed as i32
    );
    assert!(refused.message.contains("CAMERA"), "{}", refused.message);
    room.shutdown().await;
}

#[tokio::test]
async fn v1_join_with_bearer_sees_others_and_others_see_it() {
    let room = start().await;
    let (mut first, _) = join_v0(&room, "first", "lobby").await;
    let mut second = connect_bearer(&v1_url(&room, &v1_join(None)), &token("second", "lobby"))
        .await
        .unwrap();
    let join = next(&mut second, "join", |m| match m {
        Resp::Join(j) => Some(j),
        _ => None,
    })
    .await;
    assert!(
        !join.subscriber_primary,
        "single PC is never subscriber-primary"
    );
    assert_eq!(join.other_participants.len(), 1);
    assert_eq!(join.other_participants[0].identity, "first");

    let update = next(&mut first, "participant update", |m| match m {
        Resp::Update(u) => u.participants.into_iter().find(|p| p.identity == "second"),
        _ => None,
    })
    .await;
    assert_eq!(update.sid, join.participant.unwrap().sid);
    assert!(room
        .wait_event(WAIT, |e| matches!(&e.kind, EventKind::ParticipantJoined { identity, signal_path, .. } if identity == "second" && signal_path == "v1"))
        .await
        .is_some());

    // Client leave: the event says so and the others learn it.
    send(
        &mut second,
        Req::Leave(proto::LeaveRequest {
            reason: proto::DisconnectReason::ClientInitiated as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            ..Default::default()
        }),
    )
    .await;
    let left = room
        .wait_event(WAIT, |e| matches!(&e.kind, EventKind::ParticipantLeft { identity, .. } if identity == "second"))
        .await
        .expect("participant_left");
    assert!(
        matches!(left.kind, EventKind::ParticipantLeft { ref reason, .. } if reason == "CLIENT_INITIATED")
    );
    assert!(room
        .wait_event(WAIT, |e| matches!(&e.kind, EventKind::LeaveReceived { reason, .. } if reason == "CLIENT_INITIATED"))
        .await
        .is_some());
    let gone = next(&mut first, "disconnected update", |m| match m {
        Resp::Update(u) => u.participants.into_iter().find(|p| p.identity == "second"),
        _ => None,
    })
    .await;
    assert_eq!(
        gone.state,
        proto::participant_info::State::Disconnected as i32
    );
    // The leaver's connection close still names it.
    let second_sid = gone.sid.clone();
    let closed = room
        .wait_event(
            WAIT,
            |e| matches!(&e.kind, EventKind::WsClosed { sid, .. } if *sid == second_sid),
        )
        .await
        .expect("ws_closed after the client's leave");
    assert!(
        matches!(&closed.kind, EventKind::WsClosed { identity, .. } if identity == "second"),
        "{closed:?}"
    );
    room.shutdown().await;
}

#[tokio::test]
async fn duplicate_identity_disconnects_the_older_session() {
    let room = start().await;
    let (mut older, older_join) = join_v0(&room, "cam", "lobby").await;
    let (_newer, newer_join) = join_v0(&room, "cam", "lobby").await;
    assert_ne!(
        older_join.participant.clone().unwrap().sid,
        newer_join.participant.clone().unwrap().sid
    );
    let leave = next(&mut older, "leave", |m| match m {
        Resp::Leave(l) => Some(l),
        _ => None,
    })
    .await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::DuplicateIdentity as i32
    );
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Disconnect as i32
    );
    assert!(room
        .wait_event(WAIT, |e| matches!(&e.kind, EventKind::ParticipantLeft { reason, .. } if reason == "DUPLICATE_IDENTITY"))
        .await
        .is_some());
    // The kicked connection's close names who it was, though the participant is gone.
    let older_sid = older_join.participant.as_ref().unwrap().sid.clone();
    let closed = room
        .wait_event(
            WAIT,
            |e| matches!(&e.kind, EventKind::WsClosed { sid, .. } if *sid == older_sid),
        )
        .await
        .expect("ws_closed of the older session");
    assert!(
        matches!(&closed.kind, EventKind::WsClosed { identity, .. } if identity == "cam"),
        "{closed:?}"
    );
    let participants = room.snapshot()["rooms"][0]["participants"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0]["sid"], newer_join.participant.unwrap().sid);
    room.shutdown().await;
}

#[tokio::test]
async fn resume_after_dropped_ws_gets_reconnect_response_and_unknown_sid_gets_state_mismatch() {
    let room = start().await;
    let (_ws, join) = join_v0(&room, "cam", "lobby").await;
    let sid = join.participant.unwrap().sid;
    assert!(room.faults().drop_ws("cam"));
    assert!(room
        .wait_event(
            WAIT,
            |e| matches!(&e.kind, EventKind::WsClosed { identity, .. } if identity == "cam")
        )
        .await
        .is_some());

    // v0 resume.
    let url = v0_url(
        &room,
        &format!(
            "reconnect=1&sid={sid}&access_token={}",
            token("cam", "lobby")
        ),
    );
    let (mut resumed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = next(&mut resumed, "first message", Some).await;
    assert!(
        matches!(first, Resp::Reconnect(_)),
        "first message after resume: {first:?}"
    );
    assert!(room
        .wait_event(
            WAIT,
            |e| matches!(&e.kind, EventKind::ParticipantResumed { sid: s, .. } if *s == sid)
        )
        .await
        .is_some());

    // v1 resume of an unknown sid.
    let mut stale = connect_bearer(
        &v1_url(&room, &v1_join(Some("PA_unknown"))),
        &token("ghost", "lobby"),
    )
    .await
    .unwrap();
    let first = next(&mut stale, "first message", Some).await;
    match first {
        Resp::Leave(l) => {
            assert_eq!(l.reason, proto::DisconnectReason::StateMismatch as i32);
            assert_eq!(l.action, proto::leave_request::Action::Reconnect as i32);
        }
        other => panic!("expected Leave, got {other:?}"),
    }
    room.shutdown().await;
}

#[tokio::test]
async fn server_leave_fault_reaches_the_client() {
    let room = start().await;
    let (mut ws, _) = join_v0(&room, "cam", "lobby").await;
    assert!(
        room.faults()
            .send_leave(
                "cam",
                proto::DisconnectReason::ServerShutdown,
                proto::leave_request::Action::Resume
            )
            .await
    );
    let leave = next(&mut ws, "leave", |m| match m {
        Resp::Leave(l) => Some(l),
        _ => None,
    })
    .await;
    assert_eq!(leave.reason, proto::DisconnectReason::ServerShutdown as i32);
    assert_eq!(leave.action, proto::leave_request::Action::Resume as i32);
    assert!(leave.can_reconnect);
    assert!(!room.faults().drop_ws("nobody"));
    room.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_get_401_with_reason_on_ws_and_validate() {
    let room = start().await;
    let forged = AccessToken::with_api_key("devkey", "not-the-secret")
        .with_identity("x")
        .with_grants(VideoGrants {
            room_join: true,
            room: "lobby".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    for url in [v0_url(&room, ""), v1_url(&room, &v1_join(None))] {
        match connect_bearer(&url, &forged).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401);
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("signature"), "{body}");
            }
            other => panic!("expected HTTP 401, got {:?}", other.map(|_| "a WebSocket")),
        }
    }
    assert!(room
        .wait_event(WAIT, |e| matches!(
            &e.kind,
            EventKind::JoinRejected { status: 401, .. }
        ))
        .await
        .is_some());

    let http = room.http_url();
    let good = token("x", "lobby");
    let results = tokio::task::spawn_blocking(move || {
        let q = |t: &str| format!("access_token={t}&protocol=17");
        vec![
            http_get(&format!("{http}/rtc/validate?{}", q(&good))),
            http_get(&format!("{http}/rtc/validate?{}", q(&forged))),
            http_get(&format!("{http}/rtc/validate")),
            http_get(&format!("{http}/rtc/v1/validate?{}", q(&good))),
        ]
    })
    .await
    .unwrap();
    assert_eq!(results[0].0, 200);
    assert_eq!(results[0].1, "success");
    assert_eq!(results[0].2.as_deref(), Some("*"));
    assert_eq!(results[1].0, 401);
    assert!(
        results[1].1.contains("invalid authorization token"),
        "{}",
        results[1].1
    );
    assert_eq!(results[2].0, 401);
    assert!(results[2].1.contains("access_token"), "{}", results[2].1);
    assert_eq!(results[3].0, 400, "v1 validate without join_request");
    assert_eq!(results[3].1, "join_request is required");
    room.shutdown().await;
}

#[tokio::test]
async fn reject_joins_fault_refuses_the_next_n_connects() {
    let room = start().await;
    room.faults().reject_joins(1, 503);
    let url = v0_url(&room, &format!("access_token={}", token("cam", "lobby")));
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| "a WebSocket")),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    next(&mut ws, "join", |m| {
        matches!(m, Resp::Join(_)).then_some(())
    })
    .await;
    room.shutdown().await;
}

/// /rtc/v1/validate for `identity`, token in the query (as livekit-client sends it).
fn v1_validate_url(room: &DevRoom, identity: &str) -> String {
    v1_url(room, &v1_join(None))
        .replacen("ws://", "http://", 1)
        .replacen(
            "/rtc/v1?",
            &format!(
                "/rtc/v1/validate?access_token={}&",
                token(identity, "lobby")
            ),
            1,
        )
}

#[tokio::test]
async fn validate_explains_an_injected_rejection_once_and_only_to_the_refused_identity() {
    let room = start().await;
    room.faults().reject_joins(1, 503);
    match connect_bearer(&v1_url(&room, &v1_join(None)), &token("cam", "lobby")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| "a WebSocket")),
    }
    let http = room.http_url();
    let (other_v0, other_v1, cam_first, cam_again_v0, cam_again_v1) = {
        let other_v0 = format!(
            "{http}/rtc/validate?protocol=17&access_token={}",
            token("other", "lobby")
        );
        let cam_v0 = format!(
            "{http}/rtc/validate?protocol=17&access_token={}",
            token("cam", "lobby")
        );
        let (other_v1, cam_v1) = (
            v1_validate_url(&room, "other"),
            v1_validate_url(&room, "cam"),
        );
        tokio::task::spawn_blocking(move || {
            // Order matters: another client's validate comes first and must not see it.
            let other_v0 = http_get(&other_v0);
            let other_v1 = http_get(&other_v1);
            let cam_first = http_get(&cam_v1);
            (
                other_v0,
                other_v1,
                cam_first,
                http_get(&cam_v0),
                http_get(&cam_v1),
            )
        })
        .await
        .unwrap()
    };
    assert_eq!((other_v0.0, other_v0.1.as_str()), (200, "success"));
    assert_eq!((other_v1.0, other_v1.1.as_str()), (200, "success"));
    assert_eq!(
        cam_first.0, 503,
        "the refused client learns why: {}",
        cam_first.1
    );
    assert!(cam_first.1.contains("fault injection"), "{}", cam_first.1);
    assert_eq!(cam_first.2.as_deref(), Some("*"));
    assert_eq!(
        (cam_again_v0.0, cam_again_v1.0),
        (200, 200),
        "explained once; later validates answer as usual"
    );
    // And the next connect of that identity is let in.
    let mut ws = connect_bearer(&v1_url(&room, &v1_join(None)), &token("cam", "lobby"))
        .await
        .unwrap();
    next(&mut ws, "join", |m| {
        matches!(m, Resp::Join(_)).then_some(())
    })
    .await;
    room.shutdown().await;
}

#[tokio::test]
async fn admin_events_long_poll_and_twirp_list_participants() {
    let room = start().await;
    let http = room.http_url();
    let poll = {
        let http = http.clone();
        tokio::task::spawn_blocking(move || {
            http_get(&format!("{http}/admin/events?after=0&wait_ms=5000"))
        })
    };
    let (_ws, _) = join_v0(&room, "cam", "lobby").await;
    let (status, body, _) = poll.await.unwrap();
    assert_eq!(status, 200);
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(events["events"][0]["type"], "participant_joined");
    assert_eq!(events["events"][0]["seq"], 1);

    let (status, body, _) = {
        let http = http.clone();
        tokio::task::spawn_blocking(move || {
            http_get(&format!("{http}/admin/events?after=1000&wait_ms=50"))
        })
        .await
        .unwrap()
    };
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["events"],
        serde_json::json!([])
    );

    let (status, body, _) = {
        let http = http.clone();
        tokio::task::spawn_blocking(move || http_get(&format!("{http}/admin/rooms")))
            .await
            .unwrap()
    };
    assert_eq!(status, 200);
    let rooms: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rooms, room.snapshot());

    let admin = AccessToken::with_api_key("devkey", "secret")
        .with_grants(VideoGrants {
            room_admin: true,
            room_list: true,
            room: "lobby".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&format!(
                "{http}/twirp/livekit.RoomService/ListParticipants"
            ))
            .header("Authorization", &format!("Bearer {admin}"))
            .header("Content-Type", "application/json")
            .send(r#"{"room":"lobby"}"#)
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["participants"][0]["identity"], "cam");
    room.shutdown().await;
}

fn http_post(url: &str, content_type: &str, bearer: Option<&str>, body: Vec<u8>) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url).header("Content-Type", content_type);
    if let Some(token) = bearer {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut resp = req.send(&body[..]).unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_vec().unwrap(),
    )
}

#[tokio::test]
async fn twirp_protobuf_and_admin_fault_errors() {
    let room = start().await;
    let (_ws, _) = join_v0(&room, "cam", "lobby").await;
    let http = room.http_url();
    let lister = AccessToken::with_api_key("devkey", "secret")
        .with_grants(VideoGrants {
            room_list: true,
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let results = tokio::task::spawn_blocking(move || {
        let body = proto::ListRoomsRequest::default().encode_to_vec();
        vec![
            http_post(
                &format!("{http}/twirp/livekit.RoomService/ListRooms"),
                "application/protobuf",
                Some(&lister),
                body.clone(),
            ),
            http_post(
                &format!("{http}/twirp/livekit.RoomService/ListRooms"),
                "application/protobuf",
                None,
                body,
            ),
            http_post(
                &format!("{http}/admin/fault/drop_ws"),
                "application/json",
                None,
                br#"{"identity":"nobody"}"#.to_vec(),
            ),
            http_post(
                &format!("{http}/admin/fault/leave"),
                "application/json",
                None,
                br#"{"identity":"cam","reason":"NOT_A_REASON"}"#.to_vec(),
            ),
            http_post(
                &format!("{http}/admin/fault/leave"),
                "application/json",
                None,
                br#"{"identity":"cam","reason":"SERVER_SHUTDOWN","action":"RESUME"}"#.to_vec(),
            ),
            http_post(
                &format!("{http}/admin/fault/bogus"),
                "application/json",
                None,
                b"{}".to_vec(),
            ),
        ]
    })
    .await
    .unwrap();
    assert_eq!(results[0].0, 200);
    let rooms = proto::ListRoomsResponse::decode(results[0].1.as_slice()).unwrap();
    assert_eq!(
        rooms
            .rooms
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec!["lobby"]
    );
    assert_eq!(rooms.rooms[0].num_participants, 1);
    assert_eq!(results[1].0, 401, "Twirp without a token");
    assert_eq!(results[2].0, 404);
    assert!(String::from_utf8_lossy(&results[2].1).contains("nobody"));
    assert_eq!(results[3].0, 400);
    assert!(String::from_utf8_lossy(&results[3].1).contains("DisconnectReason"));
    assert_eq!(results[4].0, 200);
    assert_eq!(results[5].0, 404);
    assert!(String::from_utf8_lossy(&results[5].1).contains("drop_ws"));
    assert!(room
        .wait_event(WAIT, |e| matches!(&e.kind, EventKind::LeaveSent { reason, action, .. } if reason == "SERVER_SHUTDOWN" && action == "RESUME"))
        .await
        .is_some());
    room.shutdown().await;
}

fn server_token(grants: VideoGrants) -> String {
    AccessToken::with_api_key("devkey", "secret")
        .with_grants(grants)
        .to_jwt()
        .unwrap()
}

/// One Twirp RoomService call; `json` picks the body encoding.
async fn twirp(
    room: &DevRoom,
    method: &str,
    bearer: Option<&str>,
    json: bool,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let url = format!("{}/twirp/livekit.RoomService/{method}", room.http_url());
    let content_type = if json {
        "application/json"
    } else {
        "application/protobuf"
    };
    let bearer = bearer.map(str::to_string);
    tokio::task::spawn_blocking(move || http_post(&url, content_type, bearer.as_deref(), body))
        .await
        .unwrap()
}

async fn publish_video(ws: &mut Ws, cid: &str) -> String {
    send(
        ws,
        Req::AddTrack(proto::AddTrackRequest {
            cid: cid.into(),
            r#type: proto::TrackType::Video as i32,
            source: proto::TrackSource::Camera as i32,
            ..Default::default()
        }),
    )
    .await;
    next(ws, "track_published", |m| match m {
        Resp::TrackPublished(p) => p.track.map(|t| t.sid),
        _ => None,
    })
    .await
}

fn snapshot_track(room: &DevRoom, track_sid: &str) -> serde_json::Value {
    room.snapshot()["rooms"][0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["tracks"].as_array().unwrap().clone())
        .find(|t| t["sid"] == track_sid)
        .unwrap_or_else(|| panic!("track {track_sid} not in {}", room.snapshot()))
}

fn snapshot_identities(room: &DevRoom) -> Vec<String> {
    room.snapshot()["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["participants"].as_array().unwrap().clone())
        .map(|p| p["identity"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn twirp_mute_published_track_reaches_the_publisher_in_both_encodings() {
    let room = start().await;
    let (mut cam, _) = join_v0(&room, "cam", "lobby").await;
    let track_sid = publish_video(&mut cam, "cam-video").await;
    let admin = server_token(VideoGrants {
        room_admin: true,
        room: "lobby".into(),
        ..Default::default()
    });

    // Protobuf: mute.
    let body = proto::MuteRoomTrackRequest {
        room: "lobby".into(),
        identity: "cam".into(),
        track_sid: track_sid.clone(),
        muted: true,
    }
    .encode_to_vec();
    let (status, reply) = twirp(&room, "MutePublishedTrack", Some(&admin), false, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let track = proto::MuteRoomTrackResponse::decode(reply.as_slice())
        .unwrap()
        .track
        .unwrap();
    assert_eq!(
        (track.sid.as_str(), track.muted),
        (track_sid.as_str(), true)
    );
    let mute = next(&mut cam, "server mute", |m| match m {
        Resp::Mute(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((mute.sid.as_str(), mute.muted), (track_sid.as_str(), true));
    assert_eq!(snapshot_track(&room, &track_sid)["muted"], true);
    assert!(room
        .wait_event(
            WAIT,
            |e| matches!(&e.kind, EventKind::TrackMuted { muted: true, by, .. } if by == "server")
        )
        .await
        .is_some());

    // JSON (camelCase field names, as node's server SDK sends): unmute.
    let body =
        serde_json::json!({"room":"lobby","identity":"cam","trackSid":track_sid,"muted":false});
    let (status, reply) = twirp(
        &room,
        "MutePublishedTrack",
        Some(&admin),
        true,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["track"]["sid"], track_sid.as_str());
    assert_ne!(reply["track"]["muted"], true, "{reply}");
    let unmute = next(&mut cam, "server unmute", |m| match m {
        Resp::Mute(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(
        (unmute.sid.as_str(), unmute.muted),
        (track_sid.as_str(), false)
    );
    assert_eq!(snapshot_track(&room, &track_sid)["muted"], false);

    // An unknown track is a 404 with a reason, and changes nothing.
    let body =
        serde_json::json!({"room":"lobby","identity":"cam","trackSid":"TR_nope","muted":true});
    let (status, reply) = twirp(
        &room,
        "MutePublishedTrack",
        Some(&admin),
        true,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&reply).contains("track is not found"));
    assert_eq!(snapshot_track(&room, &track_sid)["muted"], false);
    room.shutdown().await;
}

#[tokio::test]
async fn twirp_remove_participant_sends_leave_and_empties_the_room_in_both_encodings() {
    let room = start().await;
    let (mut cam, cam_join) = join_v0(&room, "cam", "lobby").await;
    let (mut viewer, _) = join_v0(&room, "viewer", "lobby").await;
    let admin = server_token(VideoGrants {
        room_admin: true,
        room: "lobby".into(),
        ..Default::default()
    });

    // JSON: remove the viewer.
    let (status, reply) = twirp(
        &room,
        "RemoveParticipant",
        Some(&admin),
        true,
        br#"{"room":"lobby","identity":"viewer"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let leave = next(&mut viewer, "leave", |m| match m {
        Resp::Leave(l) => Some(l),
        _ => None,
    })
    .await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ParticipantRemoved as i32
    );
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Disconnect as i32
    );
    assert!(room
        .wait_event(WAIT, |e| matches!(&e.kind, EventKind::ParticipantLeft { identity, reason, .. } if identity == "viewer" && reason == "PARTICIPANT_REMOVED"))
        .await
        .is_some());
    assert_eq!(snapshot_identities(&room), vec!["cam"]);
    let gone = next(&mut cam, "viewer disconnected update", |m| match m {
        Resp::Update(u) => u.participants.into_iter().find(|p| {
            p.identity == "viewer" && p.state == proto::participant_info::State::Disconnected as i32
        }),
        _ => None,
    })
    .await;
    assert_eq!(gone.identity, "viewer");

    // Protobuf: ListParticipants agrees, then remove the last one.
    let body = proto::ListParticipantsRequest {
        room: "lobby".into(),
    }
    .encode_to_vec();
    let (status, reply) = twirp(&room, "ListParticipants", Some(&admin), false, body).await;
    assert_eq!(status, 200);
    let listed = proto::ListParticipantsResponse::decode(reply.as_slice()).unwrap();
    assert_eq!(
        listed
            .participants
            .iter()
            .map(|p| (p.identity.as_str(), p.sid.as_str()))
            .collect::<Vec<_>>(),
        vec![("cam", cam_join.participant.as_ref().unwrap().sid.as_str())]
    );
    let body = proto::RoomParticipantIdentity {
        room: "lobby".into(),
        identity: "cam".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let (status, reply) = twirp(&room, "RemoveParticipant", Some(&admin), false, body).await;
    assert_eq!(status, 200);
    assert!(proto::RemoveParticipantResponse::decode(reply.as_slice()).is_ok());
    let leave = next(&mut cam, "leave", |m| match m {
        Resp::Leave(l) => Some(l),
        _ => None,
    })
    .await;
    assert_eq!(
        (leave.reason, leave.action),
        (
            proto::DisconnectReason::ParticipantRemoved as i32,
            proto::leave_request::Action::Disconnect as i32
        )
    );
    assert!(room
        .wait_event(
            WAIT,
            |e| matches!(&e.kind, EventKind::ParticipantLeft { identity, .. } if identity == "cam")
        )
        .await
        .is_some());
    assert!(snapshot_identities(&room).is_empty());

    // Removing someone who is not there is a 404 with a reason.
    let (status, reply) = twirp(
        &room,
        "RemoveParticipant",
        Some(&admin),
        true,
        br#"{"room":"lobby","identity":"cam"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&reply).contains("participant does not exist"));
    room.shutdown().await;
}

#[tokio::test]
async fn twirp_refuses_tokens_without_the_needed_grant_with_a_reason() {
    let room = start().await;
    let (_cam, _) = join_v0(&room, "cam", "lobby").await;
    let joiner = token("cam", "lobby");
    let other_room_admin = server_token(VideoGrants {
        room_admin: true,
        room: "elsewhere".into(),
        ..Default::default()
    });
    let forged = AccessToken::with_api_key("devkey", "not-the-secret")
        .with_grants(VideoGrants {
            room_admin: true,
            room_list: true,
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let remove = br#"{"room":"lobby","identity":"cam"}"#.to_vec();
    for (bearer, method, body, want_status, want_text) in [
        (
            None,
            "RemoveParticipant",
            remove.clone(),
            401,
            "access token",
        ),
        (
            Some(forged.as_str()),
            "RemoveParticipant",
            remove.clone(),
            401,
            "signature",
        ),
        (
            Some(joiner.as_str()),
            "RemoveParticipant",
            remove.clone(),
            403,
            "roomAdmin",
        ),
        (
            Some(other_room_admin.as_str()),
            "RemoveParticipant",
            remove.clone(),
            403,
            "roomAdmin",
        ),
        (
            Some(joiner.as_str()),
            "MutePublishedTrack",
            br#"{"room":"lobby","identity":"cam","trackSid":"TR_x","muted":true}"#.to_vec(),
            403,
            "roomAdmin",
        ),
        (
            Some(joiner.as_str()),
            "SendData",
            br#"{"room":"lobby","data":"aGk="}"#.to_vec(),
            403,
            "roomAdmin",
        ),
        (
            Some(joiner.as_str()),
            "ListParticipants",
            br#"{"room":"lobby"}"#.to_vec(),
            403,
            "roomAdmin",
        ),
        (
            Some(other_room_admin.as_str()),
            "ListRooms",
            b"{}".to_vec(),
            403,
            "roomList",
        ),
    ] {
        let (status, reply) = twirp(&room, method, bearer, true, body).await;
        let reply = String::from_utf8_lossy(&reply).to_string();
        assert_eq!(status, want_status, "{method} with {bearer:?}: {reply}");
        assert!(
            reply.contains(want_text),
            "{method}: reason should mention {want_text}: {reply}"
        );
    }
    // Nothing was removed by the refused calls.
    assert_eq!(snapshot_identities(&room), vec!["cam"]);
    room.shutdown().await;
}
