//! Data packets through devroom end to end: raw clients join on /rtc/v1 over a WebSocket,
//! negotiate a data-only PeerConnection (webrtc-rs) with `_reliable` and `_lossy` channels,
//! and exchange livekit DataPackets through the server: reliable and lossy forwarding,
//! destination_identities, sender identity stamped by the server, RPC pass-through, and
//! Twirp SendData. Every wait is on an event or a channel with a deadline.
// UserPacket.participant_identity/sid are deprecated in the protocol, but the SDKs still read them.
#![allow(deprecated)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use devroom::{DevRoom, EventKind};
use futures_util::{SinkExt as _, StreamExt as _};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol as proto;
use prost::Message as _;
use proto::data_packet::{Kind, Value};
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use rtc::data_channel::RTCDataChannelInit;
use rtc::ice::mdns::MulticastDnsMode;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCSessionDescription, Registry, SettingEngineBuilder,
};

const WAIT: Duration = Duration::from_secs(15);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

mod common;
use common::start_devroom as start;

/// Everyone in these tests joins the same room.
fn token(identity: &str) -> String {
    common::join_token(identity, "lobby")
}

fn v1_url(room: &DevRoom) -> String {
    common::v1_url(room, &common::v1_join(None))
}

/// Sends the client's candidates to devroom as SignalRequest.trickle.
struct TrickleOut {
    out: mpsc::UnboundedSender<Req>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for TrickleOut {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Ok(init) = event.candidate.to_json() else {
            return;
        };
        let _ = self.out.send(Req::Trickle(proto::TrickleRequest {
            candidate_init: serde_json::to_string(&init).unwrap(),
            target: proto::SignalTarget::Publisher as i32,
            r#final: false,
        }));
    }
}

/// A data-only livekit participant on the single-PC path.
struct DataClient {
    identity: String,
    sid: String,
    channels: HashMap<&'static str, Arc<dyn DataChannel>>,
    /// (channel label, packet) in arrival order.
    received: mpsc::UnboundedReceiver<(String, proto::DataPacket)>,
    _pc: Arc<dyn PeerConnection>,
}

impl DataClient {
    async fn join(room: &DevRoom, identity: &str) -> DataClient {
        let mut request = v1_url(room).into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token(identity)).parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Req>();
        tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let bytes = proto::SignalRequest {
                    message: Some(message),
                }
                .encode_to_vec();
                if sink
                    .send(tungstenite::Message::Binary(bytes.into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });

        let mut engine = MediaEngine::default();
        let registry = register_default_interceptors(Registry::new(), &mut engine).unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(engine)
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                        .with_include_loopback_candidate(true)
                        .build(),
                )
                .with_interceptor_registry(registry)
                .with_handler(Arc::new(TrickleOut { out: out.clone() }))
                .with_udp_addrs(vec![SocketAddr::new(LOOPBACK, 0)])
                .build()
                .await
                .unwrap(),
        );

        // The SDKs' channels: `_reliable` ordered, `_lossy` unordered without retransmits.
        let (open_tx, mut open_rx) = mpsc::unbounded_channel::<&'static str>();
        let (received_tx, received) = mpsc::unbounded_channel();
        let mut channels = HashMap::new();
        for (label, init) in [
            (
                "_reliable",
                RTCDataChannelInit {
                    ordered: true,
                    ..Default::default()
                },
            ),
            (
                "_lossy",
                RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                },
            ),
        ] {
            let dc = pc.create_data_channel(label, Some(init)).await.unwrap();
            channels.insert(label, dc.clone());
            let (open_tx, received_tx) = (open_tx.clone(), received_tx.clone());
            tokio::spawn(async move {
                while let Some(event) = dc.poll().await {
                    match event {
                        DataChannelEvent::OnOpen => {
                            let _ = open_tx.send(label);
                        }
                        DataChannelEvent::OnMessage(msg) => {
                            let packet = proto::DataPacket::decode(msg.data.as_ref())
                                .expect("devroom sends DataPackets");
                            let _ = received_tx.send((label.to_string(), packet));
                        }
                        DataChannelEvent::OnClose => break,
                        _ => {}
                    }
                }
            });
        }

        let join = tokio::time::timeout(WAIT, async {
            loop {
                match stream.next().await {
                    Some(Ok(tungstenite::Message::Binary(bytes))) => {
                        if let Some(Resp::Join(join)) =
                            proto::SignalResponse::decode(bytes.as_ref())
                                .unwrap()
                                .message
                        {
                            return join;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("{identity}: signalling ended before the join: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{identity}: no JoinResponse"));

        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let sdp = pc.local_description().await.unwrap().sdp;
        out.send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp,
            id: 1,
            ..Default::default()
        }))
        .unwrap();

        // Signalling reader: apply the answer, then devroom's candidates (held until the answer).
        {
            let pc = pc.clone();
            let identity = identity.to_string();
            tokio::spawn(async move {
                let mut answered = false;
                let mut held: Vec<RTCIceCandidateInit> = Vec::new();
                while let Some(Ok(frame)) = stream.next().await {
                    let tungstenite::Message::Binary(bytes) = frame else {
                        continue;
                    };
                    match proto::SignalResponse::decode(bytes.as_ref())
                        .unwrap()
                        .message
                    {
                        Some(Resp::Answer(answer)) => {
                            pc.set_remote_description(
                                RTCSessionDescription::answer(answer.sdp).unwrap(),
                            )
                            .await
                            .unwrap_or_else(|e| panic!("{identity}: answer refused: {e}"));
                            answered = true;
                            for init in held.drain(..) {
                                let _ = pc.add_ice_candidate(init).await;
                            }
                        }
                        Some(Resp::Trickle(trickle)) => {
                            let init: RTCIceCandidateInit =
                                serde_json::from_str(&trickle.candidate_init).unwrap();
                            if answered {
                                let _ = pc.add_ice_candidate(init).await;
                            } else {
                                held.push(init);
                            }
                        }
                        _ => {}
                    }
                }
            });
        }

        let mut opened = Vec::new();
        while opened.len() < 2 {
            let label = tokio::time::timeout(WAIT, open_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{identity}: data channels never opened: {opened:?}"))
                .unwrap();
            opened.push(label);
        }

        let client = DataClient {
            identity: identity.to_string(),
            sid: join.participant.unwrap().sid,
            channels,
            received,
            _pc: pc,
        };
        // devroom relays from a channel only once it registered it; a packet addressed to
        // nobody comes back as a data_forwarded event, proving both channels are in place.
        for reliable in [true, false] {
            client
                .send(
                    reliable,
                    proto::DataPacket {
                        destination_identities: vec!["nobody".into()],
                        value: Some(Value::User(proto::UserPacket {
                            payload: b"ready?".to_vec(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                )
                .await;
            let me = client.identity.clone();
            room.wait_event(WAIT, move |e| {
                matches!(&e.kind, EventKind::DataForwarded { from, reliable: r, .. } if *from == me && *r == reliable)
            })
            .await
            .unwrap_or_else(|| panic!("{identity}: devroom never saw the reliable={reliable} probe"));
        }
        client
    }

    async fn send(&self, reliable: bool, packet: proto::DataPacket) {
        let label = if reliable { "_reliable" } else { "_lossy" };
        self.channels[label]
            .send(BytesMut::from(packet.encode_to_vec().as_slice()))
            .await
            .unwrap_or_else(|e| panic!("{}: sending on {label}: {e}", self.identity));
    }

    /// The next packet that arrives, with the channel it came on.
    async fn recv(&mut self, what: &str) -> (String, proto::DataPacket) {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: timed out waiting for {what}", self.identity))
            .unwrap()
    }
}

fn user(payload: &[u8], topic: &str, destinations: &[&str]) -> proto::DataPacket {
    let destinations: Vec<String> = destinations.iter().map(|d| d.to_string()).collect();
    proto::DataPacket {
        destination_identities: destinations,
        value: Some(Value::User(proto::UserPacket {
            payload: payload.to_vec(),
            topic: Some(topic.into()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn user_payload(packet: &proto::DataPacket) -> (Vec<u8>, String) {
    match &packet.value {
        Some(Value::User(u)) => (u.payload.clone(), u.topic.clone().unwrap_or_default()),
        other => panic!("expected a user packet, got {other:?}"),
    }
}

#[tokio::test]
async fn reliable_lossy_and_targeted_packets_are_relayed_with_the_sender_stamped() {
    let room = start().await;
    let alice = DataClient::join(&room, "alice").await;
    let mut bob = DataClient::join(&room, "bob").await;
    let mut carol = DataClient::join(&room, "carol").await;

    // Reliable broadcast with a forged sender: both others get it, stamped with alice.
    let mut forged = user(b"hello all", "chat", &[]);
    forged.participant_identity = "mallory".into();
    forged.participant_sid = "PA_forged".into();
    if let Some(Value::User(u)) = &mut forged.value {
        u.participant_identity = "mallory".into();
        u.participant_sid = "PA_forged".into();
    }
    alice.send(true, forged).await;
    for receiver in [&mut bob, &mut carol] {
        let (label, packet) = receiver.recv("alice's reliable broadcast").await;
        assert_eq!(label, "_reliable");
        assert_eq!(
            user_payload(&packet),
            (b"hello all".to_vec(), "chat".into())
        );
        assert_eq!(packet.participant_identity, "alice");
        assert_eq!(packet.participant_sid, alice.sid);
        let Some(Value::User(u)) = &packet.value else {
            unreachable!()
        };
        assert_eq!(
            (u.participant_identity.as_str(), u.participant_sid.as_str()),
            ("alice", alice.sid.as_str())
        );
    }

    // Lossy broadcast arrives on the receivers' lossy channel.
    alice.send(false, user(b"fast", "telemetry", &[])).await;
    for receiver in [&mut bob, &mut carol] {
        let (label, packet) = receiver.recv("alice's lossy broadcast").await;
        assert_eq!(label, "_lossy");
        assert_eq!(
            user_payload(&packet),
            (b"fast".to_vec(), "telemetry".into())
        );
        assert_eq!(packet.participant_identity, "alice");
    }

    // Targeted at bob, reliable and lossy; then a reliable broadcast as a marker. carol's
    // reliable channel is ordered, so the marker being her next packet proves she got
    // nothing addressed to bob in between.
    alice.send(true, user(b"for bob", "dm", &["bob"])).await;
    alice
        .send(false, user(b"for bob, lossy", "dm", &["bob"]))
        .await;
    let mut got = [
        bob.recv("targeted packet").await,
        bob.recv("targeted packet").await,
    ];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got[0].0, "_lossy");
    assert_eq!(user_payload(&got[0].1).0, b"for bob, lossy");
    assert_eq!(got[1].0, "_reliable");
    assert_eq!(user_payload(&got[1].1).0, b"for bob");
    assert_eq!(got[1].1.destination_identities, vec!["bob".to_string()]);

    alice.send(true, user(b"marker", "chat", &[])).await;
    let (label, packet) = carol.recv("the marker").await;
    assert_eq!(label, "_reliable");
    assert_eq!(
        user_payload(&packet).0,
        b"marker",
        "carol received a packet addressed to bob"
    );
    assert_eq!(user_payload(&bob.recv("the marker").await.1).0, b"marker");
    // Lossy targeted packets are checked on devroom's own record: relayed to bob only.
    assert!(room
        .wait_event(
            WAIT,
            |e| matches!(&e.kind, EventKind::DataForwarded { from, to, reliable: false, .. }
            if from == "alice" && to == &vec!["bob".to_string()])
        )
        .await
        .is_some());
    assert!(
        carol.received.try_recv().is_err(),
        "carol got more than the marker"
    );
    room.shutdown().await;
}

#[tokio::test]
async fn rpc_request_ack_and_response_pass_through_to_their_destination_only() {
    let room = start().await;
    let mut caller = DataClient::join(&room, "caller").await;
    let mut callee = DataClient::join(&room, "callee").await;
    let mut bystander = DataClient::join(&room, "bystander").await;

    caller
        .send(
            true,
            proto::DataPacket {
                destination_identities: vec!["callee".into()],
                value: Some(Value::RpcRequest(proto::RpcRequest {
                    id: "req-1".into(),
                    method: "echo".into(),
                    payload: "ping".into(),
                    response_timeout_ms: 5000,
                    version: 1,
                    ..Default::default()
                })),
                ..Default::default()
            },
        )
        .await;
    let (_, request) = callee.recv("rpc request").await;
    assert_eq!(request.participant_identity, "caller");
    assert_eq!(request.participant_sid, caller.sid);
    match request.value {
        Some(Value::RpcRequest(r)) => {
            assert_eq!(
                (r.id.as_str(), r.method.as_str(), r.payload.as_str()),
                ("req-1", "echo", "ping")
            );
            assert_eq!(r.response_timeout_ms, 5000);
        }
        other => panic!("expected an RPC request, got {other:?}"),
    }

    callee
        .send(
            true,
            proto::DataPacket {
                destination_identities: vec!["caller".into()],
                value: Some(Value::RpcAck(proto::RpcAck {
                    request_id: "req-1".into(),
                })),
                ..Default::default()
            },
        )
        .await;
    callee
        .send(
            true,
            proto::DataPacket {
                destination_identities: vec!["caller".into()],
                value: Some(Value::RpcResponse(proto::RpcResponse {
                    request_id: "req-1".into(),
                    value: Some(proto::rpc_response::Value::Payload("pong".into())),
                })),
                ..Default::default()
            },
        )
        .await;
    let (_, ack) = caller.recv("rpc ack").await;
    assert_eq!(ack.participant_identity, "callee");
    assert!(
        matches!(&ack.value, Some(Value::RpcAck(a)) if a.request_id == "req-1"),
        "{ack:?}"
    );
    let (_, response) = caller.recv("rpc response").await;
    assert_eq!(response.participant_identity, "callee");
    assert!(
        matches!(&response.value, Some(Value::RpcResponse(r))
            if r.request_id == "req-1" && r.value == Some(proto::rpc_response::Value::Payload("pong".into()))),
        "{response:?}"
    );

    // The bystander saw none of it: its next reliable packet is this broadcast.
    caller.send(true, user(b"marker", "chat", &[])).await;
    let (_, packet) = bystander.recv("the marker").await;
    assert_eq!(
        user_payload(&packet).0,
        b"marker",
        "the bystander received RPC traffic: {packet:?}"
    );
    room.shutdown().await;
}

/// roomAdmin without a room: admin of every room (so an unknown room gets 404, not 403).
fn admin_token() -> String {
    AccessToken::with_api_key("devkey", "secret")
        .with_grants(VideoGrants {
            room_admin: true,
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

async fn send_data_call(room: &DevRoom, json: bool, body: Vec<u8>) -> (u16, String) {
    let url = format!("{}/twirp/livekit.RoomService/SendData", room.http_url());
    let bearer = admin_token();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let content_type = if json {
            "application/json"
        } else {
            "application/protobuf"
        };
        let mut resp = agent
            .post(&url)
            .header("Content-Type", content_type)
            .header("Authorization", &format!("Bearer {bearer}"))
            .send(&body[..])
            .unwrap();
        (
            resp.status().as_u16(),
            String::from_utf8_lossy(&resp.body_mut().read_to_vec().unwrap()).to_string(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn twirp_send_data_reaches_participants_in_both_encodings() {
    let room = start().await;
    let mut bob = DataClient::join(&room, "bob").await;
    let mut carol = DataClient::join(&room, "carol").await;

    // Protobuf, reliable, to bob only.
    let body = proto::SendDataRequest {
        room: "lobby".into(),
        data: b"server says hi".to_vec(),
        kind: Kind::Reliable as i32,
        topic: Some("announcements".into()),
        destination_identities: vec!["bob".into()],
        ..Default::default()
    }
    .encode_to_vec();
    let (status, reply) = send_data_call(&room, false, body).await;
    assert_eq!(status, 200, "{reply}");
    let (label, packet) = bob.recv("SendData packet").await;
    assert_eq!(label, "_reliable");
    assert_eq!(
        user_payload(&packet),
        (b"server says hi".to_vec(), "announcements".into())
    );
    assert_eq!(
        packet.participant_identity, "",
        "sent by the server, not a participant"
    );

    // JSON (base64 data, enum by name), lossy, to everyone.
    let body = serde_json::json!({
        "room": "lobby",
        "data": "dG8gZXZlcnlvbmU=", // "to everyone"
        "kind": "LOSSY",
        "topic": "all",
    });
    let (status, reply) = send_data_call(&room, true, body.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    let (label, packet) = bob.recv("JSON SendData packet").await;
    assert_eq!(label, "_lossy");
    assert_eq!(
        user_payload(&packet),
        (b"to everyone".to_vec(), "all".into())
    );

    // A reliable broadcast as a marker: carol's reliable channel is ordered, so had the
    // packet for bob reached her, it would come before the marker.
    let body = serde_json::json!({"room": "lobby", "data": "bWFya2Vy", "topic": "all"}); // "marker"
    let (status, reply) = send_data_call(&room, true, body.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    let mut carol_got = [
        carol.recv("JSON SendData packets").await,
        carol.recv("JSON SendData packets").await,
    ];
    carol_got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(carol_got[0].0, "_lossy");
    assert_eq!(user_payload(&carol_got[0].1).0, b"to everyone");
    assert_eq!(carol_got[1].0, "_reliable");
    assert_eq!(
        user_payload(&carol_got[1].1).0,
        b"marker",
        "carol received the packet addressed to bob"
    );
    let (label, packet) = bob.recv("the marker").await;
    assert_eq!(
        (label.as_str(), user_payload(&packet).0),
        ("_reliable", b"marker".to_vec())
    );

    // An unknown room is a 404 with a reason.
    let (status, reply) =
        send_data_call(&room, true, br#"{"room":"nowhere","data":"aGk="}"#.to_vec()).await;
    assert_eq!(status, 404);
    assert!(reply.contains("room does not exist"), "{reply}");
    room.shutdown().await;
}
