//! End-to-end tests of the SFU with webrtc-rs client peers in the same process, talking
//! over 127.0.0.1 (no signalling: SDP and candidates are handed over directly).
//!
//! Every wait is on an event or a condition with a deadline; nothing sleeps blindly.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use openh264::encoder::{Encoder, EncoderConfig};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::OpenH264API;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

use super::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEADLINE: Duration = Duration::from_secs(15);
const WIDTH: usize = 160;
const HEIGHT: usize = 120;
/// Top-left, top-right, bottom-left, bottom-right.
const QUADRANTS: [[u8; 3]; 4] = [[220, 30, 30], [30, 200, 40], [40, 50, 210], [235, 235, 235]];

/// Collects SFU events and routes the SFU's candidates to the client peers.
struct Hub {
    log: Mutex<Vec<SfuEvent>>,
    notify: Notify,
    clients: Mutex<HashMap<PeerId, ClientSlot>>,
}

#[derive(Default)]
struct ClientSlot {
    pc: Option<Arc<dyn PeerConnection>>,
    ready: bool,
    queued: Vec<RTCIceCandidateInit>,
}

impl Hub {
    fn start(mut events: mpsc::UnboundedReceiver<SfuEvent>) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            log: Mutex::new(Vec::new()),
            notify: Notify::new(),
            clients: Mutex::new(HashMap::new()),
        });
        let h = hub.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let SfuEvent::LocalCandidate {
                    peer,
                    candidate_init,
                } = &event
                {
                    let init: RTCIceCandidateInit =
                        serde_json::from_str(candidate_init).expect("SFU candidate is JSON");
                    assert!(init.candidate.starts_with("candidate:"), "{candidate_init}");
                    let ready_pc = {
                        let mut clients = lock(&h.clients);
                        let slot = clients.entry(*peer).or_default();
                        if slot.ready {
                            slot.pc.clone()
                        } else {
                            slot.queued.push(init.clone());
                            None
                        }
                    };
                    if let Some(pc) = ready_pc {
                        let _ = pc.add_ice_candidate(init).await;
                    }
                }
                lock(&h.log).push(event);
                h.notify.notify_waiters();
            }
        });
        hub
    }

    fn attach(&self, peer: PeerId, pc: Arc<dyn PeerConnection>) {
        lock(&self.clients).entry(peer).or_default().pc = Some(pc);
    }

    /// The client applied the SFU's description: deliver queued candidates from now on.
    async fn ready(&self, peer: PeerId) {
        let (pc, queued) = {
            let mut clients = lock(&self.clients);
            let slot = clients.entry(peer).or_default();
            slot.ready = true;
            (slot.pc.clone(), std::mem::take(&mut slot.queued))
        };
        let pc = pc.expect("client attached before ready");
        for init in queued {
            let _ = pc.add_ice_candidate(init).await;
        }
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&SfuEvent) -> bool) -> SfuEvent {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let notified = self.notify.notified();
            if let Some(event) = lock(&self.log).iter().find(|e| pred(e)) {
                return event.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                panic!(
                    "timed out waiting for SFU event: {what}; saw {:?}",
                    self.kinds()
                );
            }
        }
    }

    fn count(&self, pred: impl Fn(&SfuEvent) -> bool) -> usize {
        lock(&self.log).iter().filter(|e| pred(e)).count()
    }

    fn kinds(&self) -> Vec<String> {
        lock(&self.log)
            .iter()
            .filter(|e| !matches!(e, SfuEvent::LocalCandidate { .. }))
            .map(|e| format!("{e:?}").chars().take(120).collect())
            .collect()
    }
}

/// Waits until `cond` holds, re-checking it each time one of `wakers` fires (the things that
/// can change its outcome: packet counters, the event log), failing after the deadline. No timer
/// paces it: a waiter is registered on every waker before each check, so no change is missed.
async fn wait_until(what: &str, wakers: &[&Notify], cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut woken: Vec<_> = wakers.iter().map(|n| Box::pin(n.notified())).collect();
        for notified in &mut woken {
            notified.as_mut().enable();
        }
        if cond() {
            return;
        }
        let any = futures_util::future::select_all(woken);
        assert!(
            tokio::time::timeout_at(deadline, any).await.is_ok() || cond(),
            "timed out waiting until {what}"
        );
    }
}

/// A counter a test can wait on.
#[derive(Default)]
struct Count {
    value: AtomicUsize,
    changed: Notify,
}

impl Count {
    fn bump(&self) {
        self.value.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn get(&self) -> usize {
        self.value.load(Ordering::SeqCst)
    }
}

enum ClientEvent {
    Track(Arc<dyn TrackRemote>),
    State(RTCPeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
}

struct ClientHandler {
    sfu: Sfu,
    sfu_peer: PeerId,
    tx: mpsc::UnboundedSender<ClientEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let init = event.candidate.to_json().expect("candidate to json");
        let json = serde_json::to_string(&init).unwrap();
        let (sfu, peer) = (self.sfu.clone(), self.sfu_peer);
        tokio::spawn(async move {
            sfu.add_remote_candidate(peer, &json)
                .await
                .expect("SFU accepts the client's candidate");
        });
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(ClientEvent::State(state));
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.tx.send(ClientEvent::DataChannel(dc));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.send(ClientEvent::Track(track));
    }
}

struct Client {
    pc: Arc<dyn PeerConnection>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    tracks: Vec<Arc<dyn TrackRemote>>,
    data_channels: Vec<Arc<dyn DataChannel>>,
    connected: bool,
}

impl Client {
    async fn new(sfu: &Sfu, hub: &Hub, sfu_peer: PeerId) -> Client {
        Client::with_engine(sfu, hub, sfu_peer, media_engine().unwrap()).await
    }

    async fn with_engine(sfu: &Sfu, hub: &Hub, sfu_peer: PeerId, engine: MediaEngine) -> Client {
        let (tx, events) = mpsc::unbounded_channel();
        let handler = Arc::new(ClientHandler {
            sfu: sfu.clone(),
            sfu_peer,
            tx,
        });
        let pc = build_peer_connection_with(LOOPBACK, false, handler, engine)
            .await
            .expect("client PC");
        hub.attach(sfu_peer, pc.clone());
        Client {
            pc,
            events,
            tracks: Vec::new(),
            data_channels: Vec::new(),
            connected: false,
        }
    }

    /// Handles client events until `done` says so (or the deadline passes).
    async fn pump_until(&mut self, what: &str, done: impl Fn(&Client) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(ClientEvent::Track(track))) => self.tracks.push(track),
                Ok(Some(ClientEvent::DataChannel(dc))) => self.data_channels.push(dc),
                Ok(Some(ClientEvent::State(state))) => {
                    assert_ne!(state, RTCPeerConnectionState::Failed, "{what}: PC failed");
                    if state == RTCPeerConnectionState::Connected {
                        self.connected = true;
                    }
                }
                Ok(None) => panic!("{what}: client event channel closed"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

/// A synthetic picture: four solid quadrants.
fn quadrant_picture() -> Vec<u8> {
    quadrant_picture_sized(WIDTH, HEIGHT)
}

fn quadrant_picture_sized(width: usize, height: usize) -> Vec<u8> {
    let mut rgb = vec![0u8; width * height * 3];
    for y in 0..height {
        for x in 0..width {
            let q = (y >= height / 2) as usize * 2 + (x >= width / 2) as usize;
            rgb[(y * width + x) * 3..][..3].copy_from_slice(&QUADRANTS[q]);
        }
    }
    rgb
}

fn assert_quadrants(png: &RgbFrame) {
    let (w, h) = (png.width, png.height);
    let centres = [
        (w / 4, h / 4),
        (3 * w / 4, h / 4),
        (w / 4, 3 * h / 4),
        (3 * w / 4, 3 * h / 4),
    ];
    for (i, (x, y)) in centres.into_iter().enumerate() {
        assert_close(png.pixel(x, y), QUADRANTS[i], &format!("quadrant {i}"));
    }
}

fn local_track(kind: RtpCodecKind, id: &str, codec: RTCRtpCodec, ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        format!("stream-{id}"),
        id.to_string(),
        id.to_string(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

async fn payload_type(sender: &Arc<dyn RtpSender>, mime: &str) -> u8 {
    let params = sender.get_parameters().await.expect("sender parameters");
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .unwrap_or_else(|| panic!("{mime} not negotiated"))
        .payload_type
}

/// A publishing client: H.264 quadrants at 30 fps and Opus silence at 50 packets/s.
struct Publisher {
    client: Client,
    plis: Arc<Count>,
    video_frames_sent: Arc<AtomicU64>,
}

async fn start_publisher(sfu: &Sfu, hub: &Hub, peer: PeerId) -> (Publisher, Answer) {
    start_publisher_with(sfu, hub, peer, media_engine().unwrap()).await
}

async fn start_publisher_with(
    sfu: &Sfu,
    hub: &Hub,
    peer: PeerId,
    engine: MediaEngine,
) -> (Publisher, Answer) {
    let mut client = Client::with_engine(sfu, hub, peer, engine).await;
    let video_ssrc = rand::random::<u32>();
    let audio_ssrc = rand::random::<u32>();
    let video = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            local_track(
                RtpCodecKind::Video,
                "cid-video",
                default_codec(TrackKind::Video),
                video_ssrc,
            ),
        )
        .unwrap(),
    );
    let audio = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            local_track(
                RtpCodecKind::Audio,
                "cid-audio",
                default_codec(TrackKind::Audio),
                audio_ssrc,
            ),
        )
        .unwrap(),
    );
    let video_sender = client.pc.add_track(video.clone()).await.unwrap();
    let audio_sender = client.pc.add_track(audio.clone()).await.unwrap();
    let reliable = client
        .pc
        .create_data_channel("_reliable", None)
        .await
        .unwrap();
    client.data_channels.push(reliable);

    let offer = client.pc.create_offer(None).await.unwrap();
    client.pc.set_local_description(offer).await.unwrap();
    let offer_sdp = client.pc.local_description().await.unwrap().sdp;
    let answer = sfu
        .accept_offer(peer, offer_sdp)
        .await
        .expect("SFU answers");
    client
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer.sdp.clone()).unwrap())
        .await
        .expect("client applies the SFU answer");
    hub.ready(peer).await;
    client
        .pump_until("publisher connected", |c| c.connected)
        .await;

    let video_pt = payload_type(&video_sender, MIME_TYPE_H264).await;
    let audio_pt = payload_type(&audio_sender, MIME_TYPE_OPUS).await;

    let plis = Arc::new(Count::default());
    let force_key = Arc::new(AtomicUsize::new(0));
    {
        let (video, plis, force_key) = (video.clone(), plis.clone(), force_key.clone());
        tokio::spawn(async move {
            while let Some(event) = video.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = event {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        plis.bump();
                        force_key.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    }
    let video_frames_sent = Arc::new(AtomicU64::new(0));
    {
        let sent = video_frames_sent.clone();
        tokio::spawn(async move {
            let config = EncoderConfig::new().skip_frames(false);
            let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
                .expect("openh264 encoder");
            let rgb = quadrant_picture();
            let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (WIDTH, HEIGHT)));
            let mut seen_requests = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            loop {
                tick.tick().await;
                let requests = force_key.load(Ordering::SeqCst);
                if requests != seen_requests {
                    seen_requests = requests;
                    encoder.force_intra_frame();
                }
                let data = encoder.encode(&yuv).expect("encode").to_vec();
                if data.is_empty() {
                    continue;
                }
                let sample = Sample {
                    data: Bytes::from(data),
                    duration: Duration::from_millis(33),
                    ..Sample::new(Instant::now())
                };
                if video
                    .write_sample(video_ssrc, video_pt, &sample, &[])
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            // A valid 20 ms Opus silence frame.
            let sample = Sample {
                data: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
                duration: Duration::from_millis(20),
                ..Sample::new(Instant::now())
            };
            if audio
                .write_sample(audio_ssrc, audio_pt, &sample, &[])
                .await
                .is_err()
            {
                break;
            }
        }
    });
    (
        Publisher {
            client,
            plis,
            video_frames_sent,
        },
        answer,
    )
}

/// Counts what a subscribing client receives per kind.
#[derive(Default)]
struct Received {
    packets: Mutex<HashMap<&'static str, u64>>,
    payload_types: Mutex<HashMap<&'static str, std::collections::BTreeSet<u8>>>,
    changed: Notify,
}

impl Received {
    fn get(&self, kind: &str) -> u64 {
        lock(&self.packets).get(kind).copied().unwrap_or(0)
    }
}

fn count_received(track: Arc<dyn TrackRemote>, kind: &'static str, received: Arc<Received>) {
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            match event {
                TrackRemoteEvent::OnRtpPacket(packet) => {
                    *lock(&received.packets).entry(kind).or_default() += 1;
                    lock(&received.payload_types)
                        .entry(kind)
                        .or_default()
                        .insert(packet.header.payload_type);
                    received.changed.notify_waiters();
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
    });
}

async fn track_kind_name(track: &Arc<dyn TrackRemote>) -> &'static str {
    match track.kind().await {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    }
}

fn assert_close(got: [u8; 3], want: [u8; 3], what: &str) {
    for c in 0..3 {
        let diff = (got[c] as i32 - want[c] as i32).abs();
        assert!(
            diff <= 40,
            "{what}: pixel {got:?} differs from the encoded {want:?}"
        );
    }
}

fn new_sfu(dir: &std::path::Path) -> (Sfu, Arc<Hub>) {
    let (sfu, events) = Sfu::new(SfuConfig {
        media_ip: LOOPBACK,
        ice_tcp: false,
        frame_dir: dir.to_path_buf(),
    });
    (sfu, Hub::start(events))
}

/// Publisher → SFU → subscriber (server offers, like a v0 subscriber PC): counters,
/// keyframes, forwarded RTP, PLI relay, data channels, pause and the PNG snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_media_reaches_a_server_offered_subscriber() {
    let frames = tempfile::tempdir().unwrap();
    let (sfu, hub) = new_sfu(frames.path());

    let pub_peer = sfu.create_peer(PeerRole::ClientOffers).await.unwrap();
    let (publisher, answer) = start_publisher(&sfu, &hub, pub_peer).await;
    let mid_of = |cid: &str| {
        answer
            .mid_to_cid
            .iter()
            .find(|(_, t)| t.as_str() == cid)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| panic!("{cid} not in {:?}", answer.mid_to_cid))
    };
    let video = sfu.publish(pub_peer, &mid_of("cid-video"), "TR_video", "PA_pub");
    let audio = sfu.publish(pub_peer, &mid_of("cid-audio"), "TR_audio", "PA_pub");

    hub.wait_for("video track started", |e| {
        matches!(e, SfuEvent::TrackStarted { peer, track_id, kind: TrackKind::Video, mime, .. }
            if *peer == pub_peer && track_id == "cid-video" && mime.eq_ignore_ascii_case("video/H264"))
    })
    .await;
    hub.wait_for(
        "audio first rtp",
        |e| matches!(e, SfuEvent::FirstRtp { track_key } if *track_key == audio),
    )
    .await;
    assert_eq!(sfu.track_by_sid("TR_video"), Some(video.clone()));

    // The publisher's data channel reaches the SFU.
    let reliable = publisher.client.data_channels[0].clone();
    tokio::time::timeout(DEADLINE, async {
        while let Some(event) = reliable.poll().await {
            if matches!(event, DataChannelEvent::OnOpen) {
                return;
            }
        }
        panic!("_reliable closed before it opened");
    })
    .await
    .expect("_reliable never opened");
    reliable
        .send(BytesMut::from(&b"hello sfu"[..]))
        .await
        .expect("send on the open _reliable");
    hub.wait_for("data from the publisher", |e| {
        matches!(e, SfuEvent::Data { peer, label, data } if *peer == pub_peer && label == "_reliable" && &data[..] == b"hello sfu")
    })
    .await;

    // A subscriber, offered to by the SFU.
    let sub_peer = sfu.create_peer(PeerRole::ServerOffers).await.unwrap();
    let mut subscriber = Client::new(&sfu, &hub, sub_peer).await;
    sfu.forward(&video, sub_peer).await.unwrap();
    sfu.forward(&audio, sub_peer).await.unwrap();
    hub.wait_for(
        "renegotiation for the subscriber",
        |e| matches!(e, SfuEvent::RenegotiationNeeded { peer, .. } if *peer == sub_peer),
    )
    .await;
    let offer = sfu.create_offer(sub_peer, false).await.unwrap();
    assert!(
        offer.contains("PA_pub|TR_video") || offer.contains("TR_video"),
        "{offer}"
    );
    subscriber
        .pc
        .set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let local = subscriber.pc.create_answer(None).await.unwrap();
    subscriber.pc.set_local_description(local).await.unwrap();
    let answer_sdp = subscriber.pc.local_description().await.unwrap().sdp;
    hub.ready(sub_peer).await;
    sfu.accept_answer(sub_peer, answer_sdp).await.unwrap();
    subscriber
        .pump_until(
            "subscriber gets both tracks and the SFU's data channels",
            |c| c.connected && c.tracks.len() == 2 && c.data_channels.len() == 2,
        )
        .await;

    let received = Arc::new(Received::default());
    let mut sub_video = None;
    for track in &subscriber.tracks {
        let kind = track_kind_name(track).await;
        if kind == "video" {
            sub_video = Some(track.clone());
            assert_eq!(track.track_id().await.to_string(), "TR_video");
        }
        count_received(track.clone(), kind, received.clone());
    }
    let sub_video = sub_video.expect("subscriber got a video track");
    wait_until(
        "subscriber receives video and audio",
        &[&received.changed],
        || received.get("video") >= 30 && received.get("audio") >= 25,
    )
    .await;

    // Counters on the SFU.
    let v = sfu.stats(&video);
    let a = sfu.stats(&audio);
    assert!(v.packets >= 30 && v.bytes > 0, "{v:?}");
    assert!(v.frames > 0 && v.frames <= v.packets, "{v:?}");
    assert!(v.keyframes >= 1, "the first picture is an IDR: {v:?}");
    assert!(v.first_rtp_ms.is_some() && a.first_rtp_ms.is_some());
    assert_eq!(a.frames, a.packets, "audio counts one frame per packet");
    assert_eq!(a.keyframes, 0);
    let sent = publisher.video_frames_sent.load(Ordering::SeqCst);
    assert!(
        v.frames <= sent,
        "SFU counted {} pictures, {sent} sent",
        v.frames
    );

    // A PLI from the subscriber reaches the publisher, and a keyframe follows.
    let ssrc = sub_video.ssrcs().await[0];
    let plis_before = publisher.plis.get();
    let keyframes_before = sfu.stats(&video).keyframes;
    let pli_deadline = Instant::now() + DEADLINE;
    loop {
        let arrived = publisher.plis.changed.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        sub_video
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })])
            .await
            .unwrap();
        // The SFU coalesces requests within 100 ms of its last one, so this PLI may be dropped:
        // wait up to 150 ms for it to reach the publisher, then send another.
        let _ = tokio::time::timeout(Duration::from_millis(150), arrived).await;
        if publisher.plis.get() > plis_before {
            break;
        }
        assert!(
            Instant::now() < pli_deadline,
            "PLI never reached the publisher"
        );
    }
    hub.wait_for(
        "keyframe requested",
        |e| matches!(e, SfuEvent::KeyframeRequested { track_key } if *track_key == video),
    )
    .await;
    wait_until(
        "a new keyframe is counted",
        &[&sfu.counters_changed()],
        || sfu.stats(&video).keyframes > keyframes_before,
    )
    .await;

    // SFU → subscriber data on its own _reliable channel.
    let mut labels = Vec::new();
    for dc in &subscriber.data_channels {
        labels.push(dc.label().await.unwrap());
    }
    labels.sort();
    assert_eq!(labels, ["_lossy", "_reliable"]);
    let sub_reliable = {
        let mut found = None;
        for dc in &subscriber.data_channels {
            if dc.label().await.unwrap() == "_reliable" {
                found = Some(dc.clone());
            }
        }
        found.unwrap()
    };
    sfu.send_data(sub_peer, true, Bytes::from_static(b"to subscriber"))
        .await
        .expect("send on _reliable");
    let got = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = sub_reliable.poll().await {
            if let DataChannelEvent::OnMessage(msg) = event {
                return Some(msg.data.freeze());
            }
        }
        None
    })
    .await
    .expect("subscriber data in time");
    assert_eq!(got.as_deref(), Some(&b"to subscriber"[..]));

    // Pause: the SFU keeps counting but forwards nothing.
    sfu.set_paused(true);
    let paused_at_packets = sfu.stats(&video).packets;
    // Packets already handed to the subscriber's PC may still land; let them.
    let before_pause = received.get("video");
    wait_until(
        "publisher keeps sending while paused",
        &[&sfu.counters_changed()],
        || sfu.stats(&video).packets >= paused_at_packets + 60,
    )
    .await;
    let during_pause = received.get("video");
    assert!(
        during_pause <= before_pause + 15,
        "paused SFU forwarded {} packets",
        during_pause - before_pause
    );
    sfu.set_paused(false);
    wait_until("forwarding resumes", &[&received.changed], || {
        received.get("video") >= during_pause + 10
    })
    .await;

    // The PNG shows the picture that was encoded.
    let (path, width, height) = sfu.write_png(&video).await.expect("PNG written");
    assert_eq!((width, height), (WIDTH as u32, HEIGHT as u32));
    assert!(path.starts_with(frames.path()));
    let png = media::read_png_rgb(&path).unwrap();
    assert_eq!((png.width, png.height), (width, height));
    let (w, h) = (png.width, png.height);
    let centres = [
        (w / 4, h / 4),
        (3 * w / 4, h / 4),
        (w / 4, 3 * h / 4),
        (3 * w / 4, 3 * h / 4),
    ];
    for (i, (x, y)) in centres.into_iter().enumerate() {
        assert_close(png.pixel(x, y), QUADRANTS[i], &format!("quadrant {i}"));
    }
    assert!(
        sfu.write_png(&audio).await.is_err(),
        "audio cannot be snapshotted"
    );

    // ICE restart offered by the SFU; media keeps reaching the subscriber.
    let restart = sfu.create_offer(sub_peer, true).await.unwrap();
    subscriber
        .pc
        .set_remote_description(RTCSessionDescription::offer(restart).unwrap())
        .await
        .unwrap();
    let local = subscriber.pc.create_answer(None).await.unwrap();
    subscriber.pc.set_local_description(local).await.unwrap();
    let answer_sdp = subscriber.pc.local_description().await.unwrap().sdp;
    sfu.accept_answer(sub_peer, answer_sdp).await.unwrap();
    let after_restart = received.get("video");
    wait_until(
        "video after the SFU's ICE restart",
        &[&received.changed],
        || received.get("video") >= after_restart + 30,
    )
    .await;

    // Closing the publisher ends the subscription and asks for renegotiation.
    let renegotiations =
        hub.count(|e| matches!(e, SfuEvent::RenegotiationNeeded { peer, .. } if *peer == sub_peer));
    sfu.close_peer(pub_peer).await;
    wait_until(
        "subscriber renegotiation after publisher left",
        &[&hub.notify],
        || {
            hub.count(
                |e| matches!(e, SfuEvent::RenegotiationNeeded { peer, .. } if *peer == sub_peer),
            ) > renegotiations
        },
    )
    .await;
    assert_eq!(sfu.stats(&video), TrackStats::default());
    sfu.close_peer(sub_peer).await;
    publisher.client.pc.close().await.ok();
    subscriber.pc.close().await.ok();
}

/// Offers from a client peer, lets the SFU answer, applies the answer.
async fn client_offers(
    sfu: &Sfu,
    hub: &Hub,
    client: &Client,
    peer: PeerId,
    ice_restart: bool,
) -> (String, Answer) {
    let options = rtc::peer_connection::configuration::RTCOfferOptions { ice_restart };
    let offer = client.pc.create_offer(Some(options)).await.unwrap();
    client.pc.set_local_description(offer).await.unwrap();
    let offer_sdp = client.pc.local_description().await.unwrap().sdp;
    let answer = sfu
        .accept_offer(peer, offer_sdp.clone())
        .await
        .expect("SFU answers");
    client
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer.sdp.clone()).unwrap())
        .await
        .expect("client applies the SFU answer");
    hub.ready(peer).await;
    (offer_sdp, answer)
}

/// Sends Opus silence on `track` every 20 ms until the PC goes away.
fn spawn_opus(track: Arc<TrackLocalStaticSample>, ssrc: u32, payload_type: u8) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let sample = Sample {
                data: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
                duration: Duration::from_millis(20),
                ..Sample::new(Instant::now())
            };
            if track
                .write_sample(ssrc, payload_type, &sample, &[])
                .await
                .is_err()
            {
                break;
            }
        }
    });
}

/// A v1-style single-PC client (client offers): it publishes its own audio on the first
/// m-section and has one recvonly video section. Forwarded tracks land on recvonly sections
/// (one more audio section is requested), its own audio keeps flowing, and a client ICE
/// restart keeps media going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_pc_client_receives_on_recvonly_sections_and_survives_ice_restart() {
    let frames = tempfile::tempdir().unwrap();
    let (sfu, hub) = new_sfu(frames.path());

    let pub_peer = sfu.create_peer(PeerRole::ClientOffers).await.unwrap();
    let (publisher, answer) = start_publisher(&sfu, &hub, pub_peer).await;
    let mid_of = |answer: &Answer, cid: &str| {
        answer
            .mid_to_cid
            .iter()
            .find(|(_, t)| t.as_str() == cid)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| panic!("{cid} not in {:?}", answer.mid_to_cid))
    };
    let video = sfu.publish(
        pub_peer,
        &mid_of(&answer, "cid-video"),
        "TR_video",
        "PA_pub",
    );
    let audio = sfu.publish(
        pub_peer,
        &mid_of(&answer, "cid-audio"),
        "TR_audio",
        "PA_pub",
    );
    hub.wait_for(
        "video first rtp",
        |e| matches!(e, SfuEvent::FirstRtp { track_key } if *track_key == video),
    )
    .await;

    let peer = sfu.create_peer(PeerRole::ClientOffers).await.unwrap();
    let mut client = Client::new(&sfu, &hub, peer).await;
    let own_ssrc = rand::random::<u32>();
    let own = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            local_track(
                RtpCodecKind::Audio,
                "cid-own",
                default_codec(TrackKind::Audio),
                own_ssrc,
            ),
        )
        .unwrap(),
    );
    // First m-section: a video track of the client's own that sends nothing; forwarded video
    // must not be put on it (it is the first sender-less video transceiver on the SFU side).
    let idle_video = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            local_track(
                RtpCodecKind::Video,
                "cid-idle-video",
                default_codec(TrackKind::Video),
                rand::random::<u32>(),
            ),
        )
        .unwrap(),
    );
    client
        .pc
        .add_transceiver_from_track(
            idle_video,
            Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();
    let own_transceiver = client
        .pc
        .add_transceiver_from_track(
            own.clone(),
            Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();
    client
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();
    let (_, first) = client_offers(&sfu, &hub, &client, peer, false).await;
    assert!(
        first.mid_to_track_id.is_empty(),
        "{:?}",
        first.mid_to_track_id
    );
    client
        .pump_until("single-PC client connected", |c| c.connected)
        .await;
    let own_sender = own_transceiver.sender().await.unwrap().unwrap();
    spawn_opus(
        own.clone(),
        own_ssrc,
        payload_type(&own_sender, MIME_TYPE_OPUS).await,
    );
    let own_mid = mid_of(&first, "cid-own");
    let own_key = sfu.publish(peer, &own_mid, "TR_own", "PA_sub");
    hub.wait_for(
        "own audio first rtp",
        |e| matches!(e, SfuEvent::FirstRtp { track_key } if *track_key == own_key),
    )
    .await;

    sfu.forward(&video, peer).await.unwrap();
    sfu.forward(&audio, peer).await.unwrap();
    // One recvonly video section exists, no recvonly audio one: ask for one audio section.
    hub.wait_for("media sections requirement", |e| {
        matches!(e, SfuEvent::RenegotiationNeeded { peer: p, missing_audio: 1, missing_video: 0 } if *p == peer)
    })
    .await;
    client
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Audio,
            Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();
    let (offer, second) = client_offers(&sfu, &hub, &client, peer, false).await;
    let mut sids: Vec<&String> = second.mid_to_track_id.values().collect();
    sids.sort();
    assert_eq!(sids, ["TR_audio", "TR_video"]);
    let offered = parse_sections(&offer);
    let answered = parse_sections(&second.sdp);
    for mid in second.mid_to_track_id.keys() {
        let o = offered
            .iter()
            .find(|s| s.mid.as_ref() == Some(mid))
            .unwrap();
        assert_eq!(o.direction, "recvonly", "forwarded on a recvonly section");
        let a = answered
            .iter()
            .find(|s| s.mid.as_ref() == Some(mid))
            .unwrap();
        assert_eq!(a.direction, "sendonly");
    }
    assert!(
        second.sdp.contains("a=msid:PA_pub|TR_video TR_video"),
        "{}",
        second.sdp
    );
    for own in ["cid-own", "cid-idle-video"] {
        let mid = mid_of(&second, own);
        let answered = answered
            .iter()
            .find(|s| s.mid == Some(mid.clone()))
            .unwrap();
        assert_eq!(
            answered.direction, "recvonly",
            "the client's own {own} stays receive-only"
        );
    }

    client
        .pump_until("both forwarded tracks", |c| c.tracks.len() == 2)
        .await;
    let received = Arc::new(Received::default());
    for track in &client.tracks {
        count_received(
            track.clone(),
            track_kind_name(track).await,
            received.clone(),
        );
    }
    wait_until(
        "single-PC client receives video and audio",
        &[&received.changed],
        || received.get("video") >= 20 && received.get("audio") >= 20,
    )
    .await;
    let own_packets = sfu.stats(&own_key).packets;
    wait_until(
        "the client's own audio still arrives",
        &[&sfu.counters_changed()],
        || sfu.stats(&own_key).packets >= own_packets + 20,
    )
    .await;

    // A PLI from this subscriber reaches the publisher too.
    let mut sub_video = None;
    for track in &client.tracks {
        if track.kind().await == RtpCodecKind::Video {
            sub_video = Some(track.clone());
        }
    }
    let sub_video = sub_video.expect("video track");
    let ssrc = sub_video.ssrcs().await[0];
    let plis_before = publisher.plis.get();
    let pli_deadline = Instant::now() + DEADLINE;
    loop {
        let arrived = publisher.plis.changed.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        sub_video
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })])
            .await
            .unwrap();
        // The SFU coalesces requests within 100 ms of its last one, so this PLI may be dropped:
        // wait up to 150 ms for it to reach the publisher, then send another.
        let _ = tokio::time::timeout(Duration::from_millis(150), arrived).await;
        if publisher.plis.get() > plis_before {
            break;
        }
        assert!(
            Instant::now() < pli_deadline,
            "PLI never reached the publisher"
        );
    }

    // ICE restart from the client; media keeps flowing both ways.
    client_offers(&sfu, &hub, &client, peer, true).await;
    let (video_before, own_before) = (received.get("video"), sfu.stats(&own_key).packets);
    wait_until(
        "media after the ICE restart",
        &[&received.changed, &sfu.counters_changed()],
        || {
            received.get("video") >= video_before + 30
                && sfu.stats(&own_key).packets >= own_before + 25
        },
    )
    .await;
    sfu.close_peer(peer).await;
    sfu.close_peer(pub_peer).await;
    client.pc.close().await.ok();
}

#[test]
fn layer_selection_prefers_the_best_flowing_layer() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut layers = LayerState::default();
    assert!(matches!(
        layers.judge(1, 1, t0),
        LayerVerdict::Use { switched: false }
    ));
    assert!(!layers.awaiting_key, "the first layer needs no switch");
    assert!(matches!(
        layers.judge(3, 3, t0 + ms(10)),
        LayerVerdict::Use { switched: true }
    ));
    assert!(layers.awaiting_key);
    assert!(matches!(
        layers.judge(2, 2, t0 + ms(20)),
        LayerVerdict::Skip
    ));
    assert!(matches!(
        layers.judge(1, 1, t0 + ms(900)),
        LayerVerdict::Skip
    ));
    assert!(matches!(
        layers.judge(3, 3, t0 + ms(950)),
        LayerVerdict::Use { switched: false }
    ));
    // The top layer falls silent for over a second: whatever still flows takes over.
    assert!(matches!(
        layers.judge(2, 2, t0 + ms(2000)),
        LayerVerdict::Use { switched: true }
    ));
    assert_eq!(layers.selected, Some(2));
    assert_eq!(layers.generation, 2);
    assert_eq!(rid_rank(Some("f")), 3);
    assert_eq!(rid_rank(None), 0);
}

#[test]
fn key_picture_start_includes_parameter_sets() {
    // STAP-A with SPS + PPS (the IDR follows in FU-A packets).
    assert!(media::h264_payload_starts_key_picture(&[
        0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce
    ]));
    assert!(media::h264_payload_starts_key_picture(&[0x7c, 0x85, 0]));
    assert!(!media::h264_payload_starts_key_picture(&[0x7c, 0x05, 0]));
    assert!(!media::h264_payload_starts_key_picture(&[0x41, 0x9a]));
}

/// A header extension value as raw bytes (mid and rid are plain strings on the wire).
struct RawExtension(Vec<u8>);

impl rtc::shared::marshal::MarshalSize for RawExtension {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl rtc::shared::marshal::Marshal for RawExtension {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        buf[..self.0.len()].copy_from_slice(&self.0);
        Ok(self.0.len())
    }
}

fn sdes(uri: &'static str, value: &str) -> rtc::rtp::extension::HeaderExtension {
    rtc::rtp::extension::HeaderExtension::Custom {
        uri: uri.into(),
        extension: Box::new(RawExtension(value.as_bytes().to_vec())),
    }
}

/// A simulcast publisher (rids q and f, like LiveKit clients): the SFU starts on q, switches
/// to f once it flows, counts only the forwarded layer, and the snapshot shows f's picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_publisher_is_forwarded_from_its_best_layer() {
    const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    let layers = [("q", 80usize, 64usize), ("f", 160usize, 128usize)];
    let frames = tempfile::tempdir().unwrap();
    let (sfu, hub) = new_sfu(frames.path());
    let pub_peer = sfu.create_peer(PeerRole::ClientOffers).await.unwrap();
    let mut publisher = Client::new(&sfu, &hub, pub_peer).await;
    let ssrcs: Vec<u32> = layers.iter().map(|_| rand::random::<u32>()).collect();
    let codings = layers
        .iter()
        .zip(&ssrcs)
        .map(|((rid, _, _), ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: rid.to_string(),
                ssrc: Some(*ssrc),
                ..Default::default()
            },
            codec: default_codec(TrackKind::Video),
            ..Default::default()
        })
        .collect();
    let track = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "stream-sim".into(),
                "cid-sim".into(),
                "cid-sim".into(),
                RtpCodecKind::Video,
                codings,
            ),
        )
        .unwrap(),
    );
    let transceiver = publisher
        .pc
        .add_transceiver_from_track(
            track.clone(),
            Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();
    let (offer, answer) = client_offers(&sfu, &hub, &publisher, pub_peer, false).await;
    assert!(offer.contains("a=simulcast:send"), "{offer}");
    assert!(answer.sdp.contains("a=simulcast:recv"), "{}", answer.sdp);
    publisher
        .pump_until("simulcast publisher connected", |c| c.connected)
        .await;
    let mid = transceiver.mid().await.unwrap().expect("negotiated mid");
    let sender = transceiver.sender().await.unwrap().unwrap();
    let pt = payload_type(&sender, MIME_TYPE_H264).await;
    let video = sfu.publish(pub_peer, &mid, "TR_sim", "PA_sim");

    let top_enabled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let top_sent = Arc::new(Count::default());
    {
        let (top_enabled, top_sent, mid) = (top_enabled.clone(), top_sent.clone(), mid.clone());
        let ssrcs = ssrcs.clone();
        tokio::spawn(async move {
            let mut encoders: Vec<(Encoder, YUVBuffer)> = layers
                .iter()
                .map(|(_, w, h)| {
                    let config = EncoderConfig::new().skip_frames(false);
                    let encoder =
                        Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
                    let rgb = quadrant_picture_sized(*w, *h);
                    (
                        encoder,
                        YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (*w, *h))),
                    )
                })
                .collect();
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            'outer: loop {
                tick.tick().await;
                for (i, (encoder, yuv)) in encoders.iter_mut().enumerate() {
                    let top = i == layers.len() - 1;
                    if top && !top_enabled.load(Ordering::SeqCst) {
                        continue;
                    }
                    let data = encoder.encode(&*yuv).unwrap().to_vec();
                    let sample = Sample {
                        data: Bytes::from(data),
                        duration: Duration::from_millis(33),
                        ..Sample::new(Instant::now())
                    };
                    let extensions = [sdes(MID_URI, &mid), sdes(RID_URI, layers[i].0)];
                    if track
                        .write_sample(ssrcs[i], pt, &sample, &extensions)
                        .await
                        .is_err()
                    {
                        break 'outer;
                    }
                    if top {
                        top_sent.bump();
                    }
                }
            }
        });
    }
    hub.wait_for(
        "first rtp of the simulcast track",
        |e| matches!(e, SfuEvent::FirstRtp { track_key } if *track_key == video),
    )
    .await;
    let entry = sfu.inner.pub_track(&video).unwrap();
    assert_eq!(lock(&entry.layers).selected, Some(ssrcs[0]), "starts on q");

    let sub_peer = sfu.create_peer(PeerRole::ServerOffers).await.unwrap();
    let mut subscriber = Client::new(&sfu, &hub, sub_peer).await;
    sfu.forward(&video, sub_peer).await.unwrap();
    let offer = sfu.create_offer(sub_peer, false).await.unwrap();
    assert!(
        !offer.contains("a=simulcast"),
        "subscribers get one plain stream"
    );
    subscriber
        .pc
        .set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let local = subscriber.pc.create_answer(None).await.unwrap();
    subscriber.pc.set_local_description(local).await.unwrap();
    let answer_sdp = subscriber.pc.local_description().await.unwrap().sdp;
    hub.ready(sub_peer).await;
    sfu.accept_answer(sub_peer, answer_sdp).await.unwrap();
    subscriber
        .pump_until("subscriber gets the video", |c| {
            c.connected && !c.tracks.is_empty()
        })
        .await;
    let received = Arc::new(Received::default());
    count_received(subscriber.tracks[0].clone(), "video", received.clone());
    wait_until("subscriber receives layer q", &[&received.changed], || {
        received.get("video") >= 20
    })
    .await;

    top_enabled.store(true, Ordering::SeqCst);
    wait_until(
        "the SFU switches to layer f",
        &[&sfu.counters_changed()],
        || lock(&entry.layers).selected == Some(ssrcs[1]),
    )
    .await;
    let switched_at = received.get("video");
    wait_until("forwarding continues on f", &[&received.changed], || {
        received.get("video") >= switched_at + 30
    })
    .await;
    // Only the forwarded layer is counted: one picture per f frame sent, not one per layer.
    let (frames_before, sent_before) = (sfu.stats(&video).frames, top_sent.get() as u64);
    wait_until("30 more f frames", &[&top_sent.changed], || {
        top_sent.get() as u64 >= sent_before + 30
    })
    .await;
    let counted = sfu.stats(&video).frames - frames_before;
    let sent = top_sent.get() as u64 - sent_before;
    assert!(
        counted <= sent + 2,
        "counted {counted} pictures while f sent {sent}: layers are being mixed"
    );
    let (path, width, height) = sfu.write_png(&video).await.expect("PNG of layer f");
    assert_eq!((width, height), (layers[1].1 as u32, layers[1].2 as u32));
    assert_quadrants(&media::read_png_rgb(&path).unwrap());
    sfu.close_peer(sub_peer).await;
    sfu.close_peer(pub_peer).await;
    publisher.pc.close().await.ok();
    subscriber.pc.close().await.ok();
}

/// A client media engine numbering its payload types like a browser might, unlike the SFU's.
fn foreign_engine(opus_pt: u8, h264_pt: u8) -> MediaEngine {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: default_codec(TrackKind::Audio),
                payload_type: opus_pt,
            },
            RtpCodecKind::Audio,
        )
        .unwrap();
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: default_codec(TrackKind::Video),
                payload_type: h264_pt,
            },
            RtpCodecKind::Video,
        )
        .unwrap();
    engine
}

/// Clients number payload types their own way (Chrome's H.264 is rarely 125): the SFU must
/// receive with the publisher's numbers and send with each subscriber's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_types_follow_each_client() {
    let frames = tempfile::tempdir().unwrap();
    let (sfu, hub) = new_sfu(frames.path());
    let pub_peer = sfu.create_peer(PeerRole::ClientOffers).await.unwrap();
    let (_publisher, answer) =
        start_publisher_with(&sfu, &hub, pub_peer, foreign_engine(109, 106)).await;
    assert!(
        answer.sdp.contains("a=rtpmap:106 H264/90000"),
        "{}",
        answer.sdp
    );
    let mid_of = |cid: &str| {
        answer
            .mid_to_cid
            .iter()
            .find(|(_, t)| t.as_str() == cid)
            .map(|(m, _)| m.clone())
            .unwrap()
    };
    let video = sfu.publish(pub_peer, &mid_of("cid-video"), "TR_video", "PA_pub");
    let audio = sfu.publish(pub_peer, &mid_of("cid-audio"), "TR_audio", "PA_pub");
    hub.wait_for(
        "video first rtp",
        |e| matches!(e, SfuEvent::FirstRtp { track_key } if *track_key == video),
    )
    .await;

    // A single-PC subscriber with yet other numbers.
    let peer = sfu.create_peer(PeerRole::ClientOffers).await.unwrap();
    let mut client = Client::with_engine(&sfu, &hub, peer, foreign_engine(110, 98)).await;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        client
            .pc
            .add_transceiver_from_kind(
                kind,
                Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                    direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .unwrap();
    }
    client_offers(&sfu, &hub, &client, peer, false).await;
    client
        .pump_until("subscriber connected", |c| c.connected)
        .await;
    sfu.forward(&video, peer).await.unwrap();
    sfu.forward(&audio, peer).await.unwrap();
    let (_, second) = client_offers(&sfu, &hub, &client, peer, false).await;
    assert!(
        second.sdp.contains("a=rtpmap:98 H264/90000"),
        "{}",
        second.sdp
    );
    client
        .pump_until("both forwarded tracks", |c| c.tracks.len() == 2)
        .await;
    let received = Arc::new(Received::default());
    for track in &client.tracks {
        count_received(
            track.clone(),
            track_kind_name(track).await,
            received.clone(),
        );
    }
    wait_until(
        "the subscriber receives video and audio",
        &[&received.changed],
        || received.get("video") >= 20 && received.get("audio") >= 20,
    )
    .await;
    let pts = lock(&received.payload_types).clone();
    assert_eq!(pts["video"].iter().copied().collect::<Vec<_>>(), [98]);
    assert_eq!(pts["audio"].iter().copied().collect::<Vec<_>>(), [110]);
    sfu.close_peer(peer).await;
    sfu.close_peer(pub_peer).await;
    client.pc.close().await.ok();
}

/// Padding-only packets (bandwidth probes) between pictures must not break the snapshot:
/// libwebrtc sends them on the media SSRC with their own sequence numbers.
#[test]
fn snapshot_survives_padding_between_pictures() {
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::Payloader;
    let config = EncoderConfig::new().skip_frames(false);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
    let rgb = quadrant_picture();
    let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (WIDTH, HEIGHT)));
    let mut payloader = H264Payloader::default();
    let mut snapshot = media::H264Snapshotter::new();
    let mut seq: u16 = 65530; // wraps on the way
    for picture in 0..5u32 {
        let au = Bytes::from(encoder.encode(&yuv).unwrap().to_vec());
        let payloads = payloader.payload(1200, &au).unwrap();
        let last = payloads.len() - 1;
        for (i, payload) in payloads.into_iter().enumerate() {
            snapshot.on_packet(seq, picture * 3000, i == last, &payload);
            seq = seq.wrapping_add(1);
        }
        // Two padding-only probes after each picture.
        for _ in 0..2 {
            snapshot.skip_sequence(seq);
            seq = seq.wrapping_add(1);
        }
    }
    let frame = snapshot.latest_frame().unwrap().expect("a decoded picture");
    assert_eq!((frame.width, frame.height), (WIDTH as u32, HEIGHT as u32));
    assert_quadrants(&frame);

    // A real loss (a hole not explained by padding) discards the picture; the same packets
    // without the hole decode.
    encoder.force_intra_frame();
    let idr = Bytes::from(encoder.encode(&yuv).unwrap().to_vec());
    let payloads = payloader.payload(100, &idr).unwrap();
    assert!(payloads.len() > 2, "small MTU fragments the IDR");
    let last = payloads.len() - 1;
    let mut whole = media::H264Snapshotter::new();
    let mut holed = media::H264Snapshotter::new();
    for (i, payload) in payloads.iter().enumerate() {
        whole.on_packet(100 + i as u16, 0, i == last, payload);
        if i != 1 {
            holed.on_packet(100 + i as u16, 0, i == last, payload);
        }
    }
    assert!(whole.latest_frame().unwrap().is_some());
    assert!(holed.latest_frame().unwrap().is_none());
}
