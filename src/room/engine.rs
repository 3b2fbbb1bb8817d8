//! The connection task: signalling events and PeerConnection events in, room events out.
use super::signalurl::{self, PathChoice, SignalPath};
use super::{
    Command, ConnectionState, DisconnectKind, JoinError, LocalTrackPublication, RemoteParticipant,
    RemoteTrackPublication, RoomEvent, RoomOptions, RoomState, TrackKind,
};
use crate::media;
use crate::peer::local_track::{LocalTrack, SendStats};
use crate::peer::{self, PeerEvent, PeerOptions, Transport};
use crate::signal::session::{SessionEvent, SessionOptions};
use crate::signal::ws::{self, ConnectError, SignalEvent, SignalHandle};
use livekit_protocol as proto;
use prost::Message as _;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCPeerConnectionState;

pub(crate) struct TrackStatsRef {
    pub cid: String,
    pub stats: Arc<SendStats>,
}

/// Receive-only sections offered up front in single-PC mode (what the SDKs do).
const INITIAL_RECV_AUDIO: usize = 3;
const INITIAL_RECV_VIDEO: usize = 3;
/// Bound on leaving: Leave + close handshake + PC close must fit in 1 s.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(400);

async fn server_ip(base: &url::Url) -> Option<IpAddr> {
    let host = base
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = base.port_or_known_default().unwrap_or(443);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port)).await.ok()?;
    addrs.next().map(|a| a.ip())
}

async fn refused(connect_url: &url::Url, options: &RoomOptions, err: ConnectError) -> ConnectError {
    let ConnectError::Rejected { status, reason } = err else {
        return err;
    };
    // The upgrade response rarely says why; the validate endpoint does.
    match ws::validate(
        signalurl::validate_url(connect_url),
        options.token.clone(),
        options.ca_file.clone(),
    )
    .await
    {
        Some((_, text)) if !text.is_empty() && text != "success" => ConnectError::Rejected {
            status,
            reason: text,
        },
        _ => ConnectError::Rejected { status, reason },
    }
}

struct Opened {
    path: SignalPath,
    signal: SignalHandle,
    signal_rx: mpsc::UnboundedReceiver<SignalEvent>,
    publisher: Option<Transport>,
    peer_rx: mpsc::UnboundedReceiver<PeerEvent>,
    peer_tx: mpsc::UnboundedSender<PeerEvent>,
    join: proto::JoinResponse,
    /// v1: the first publisher offer, sent in join_request but not yet applied locally, so
    /// nothing is gathered before the JoinResponse's ICE servers are known.
    first_offer: Option<webrtc::peer_connection::RTCSessionDescription>,
}

async fn open(options: &RoomOptions) -> Result<Opened, JoinError> {
    let base = signalurl::ws_base(&options.url)?;
    let udp_addrs = peer::udp_bind_addrs(server_ip(&base).await);
    let (peer_tx, peer_rx) = mpsc::unbounded_channel();
    let mut publisher = None;
    let mut first_offer = None;
    let mut stream = None;
    let mut path = SignalPath::V0;
    if options.signal_path != PathChoice::V0 {
        // v1: the publisher PC exists before the join, its first offer rides in join_request.
        let peer_options = PeerOptions {
            tcp_addrs: peer::tcp_bind_addrs(&udp_addrs),
            udp_addrs: udp_addrs.clone(),
            receive_vp8: true,
            ..Default::default()
        };
        let transport = Transport::new(
            proto::SignalTarget::Publisher,
            &peer_options,
            peer_tx.clone(),
        )
        .await?;
        for channel in transport.create_data_channels().await? {
            peer::watch_data_channel(proto::SignalTarget::Publisher, channel, peer_tx.clone());
        }
        if options.auto_subscribe {
            transport
                .add_receive_sections(INITIAL_RECV_AUDIO, INITIAL_RECV_VIDEO)
                .await?;
        }
        let offer = transport.create_unapplied_offer().await?;
        let url = signalurl::v1_url(&base, options.auto_subscribe, Some(offer.sdp.clone()));
        match ws::open(
            url.as_str(),
            &options.token,
            options.ca_file.as_deref(),
            options.connect_timeout,
        )
        .await
        {
            Ok(ws) => {
                stream = Some(ws);
                publisher = Some(transport);
                first_offer = Some(offer);
                path = SignalPath::V1;
            }
            Err(ConnectError::Rejected { status: 404, .. })
                if options.signal_path == PathChoice::Auto =>
            {
                tracing::info!("/rtc/v1 answered 404: falling back to /rtc (two PeerConnections)");
                transport.close().await;
            }
            Err(e) => {
                transport.close().await;
                return Err(refused(&url, options, e).await.into());
            }
        }
    }
    let ws = match stream {
        Some(ws) => ws,
        None => {
            let url = signalurl::v0_url(&base, options.auto_subscribe);
            match ws::open(
                url.as_str(),
                &options.token,
                options.ca_file.as_deref(),
                options.connect_timeout,
            )
            .await
            {
                Ok(ws) => ws,
                Err(e) => return Err(refused(&url, options, e).await.into()),
            }
        }
    };
    let session_options = SessionOptions {
        first_message_timeout: options.join_timeout,
        ..Default::default()
    };
    let (signal, mut signal_rx) = ws::spawn(ws, session_options);
    // The first message decides: JoinResponse, or a Leave saying why not.
    let join = loop {
        let wait = options.join_timeout + Duration::from_secs(1);
        let event = match tokio::time::timeout(wait, signal_rx.recv()).await {
            Err(_) => SessionEvent::FirstMessageTimeout,
            Ok(Some(SignalEvent::Session(event))) => *event,
            Ok(Some(SignalEvent::Closed { code, reason })) => {
                return Err(JoinError::Closed(format!("code {code:?} {reason}")));
            }
            Ok(None) => return Err(JoinError::Closed("signal task ended".into())),
        };
        match event {
            SessionEvent::FirstMessageTimeout => {
                signal.close();
                return Err(JoinError::JoinTimeout(options.join_timeout));
            }
            SessionEvent::Joined(join) => break *join,
            SessionEvent::Leave { reason, action } => {
                signal.close();
                return Err(JoinError::Refused {
                    reason: reason.as_str_name().into(),
                    action: action.as_str_name().into(),
                });
            }
            SessionEvent::UnexpectedFirstMessage(msg) => {
                signal.close();
                return Err(JoinError::Closed(format!(
                    "the server's first message was not a JoinResponse: {msg:?}"
                )));
            }
            other => tracing::debug!("before JoinResponse: {other:?}"),
        }
    };
    Ok(Opened {
        path,
        signal,
        signal_rx,
        publisher,
        peer_rx,
        peer_tx,
        join,
        first_offer,
    })
}

/// A local track on its way to being published.
struct Publishing {
    track: LocalTrack,
    settings_kind: TrackKind,
    sid: Option<String>,
    attached: bool,
    started: bool,
    announced: bool,
}

struct Engine {
    options: RoomOptions,
    path: SignalPath,
    signal: SignalHandle,
    publisher: Transport,
    subscriber: Option<Transport>,
    peer_tx: mpsc::UnboundedSender<PeerEvent>,
    tracks: Vec<Publishing>,
    offer_in_flight: bool,
    renegotiate: bool,
    publisher_connected: bool,
    pipelines: Vec<tokio::task::JoinHandle<()>>,
    stop_pipelines: Vec<Arc<media::pipeline::PipelineControl>>,
    /// v1: mid → track sid, from the server's answers.
    mid_to_track: HashMap<String, String>,
    state: Arc<Mutex<RoomState>>,
    stats: Arc<Mutex<Vec<TrackStatsRef>>>,
    events: mpsc::UnboundedSender<RoomEvent>,
    local_sid: String,
}

pub(crate) async fn start(
    options: RoomOptions,
    state: Arc<Mutex<RoomState>>,
    stats: Arc<Mutex<Vec<TrackStatsRef>>>,
    events: mpsc::UnboundedSender<RoomEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
) -> Result<(), JoinError> {
    let opened = open(&options).await?;
    let join = opened.join;
    // turns: URLs go through a local TURN/TLS relay (webrtc-rs has no TURN over TLS).
    let ice_servers = peer::turn_tls::localize(&join.ice_servers, options.ca_file.as_deref()).await;
    let force_relay = peer::force_relay(join.client_configuration.as_ref(), options.force_relay);
    let base = signalurl::ws_base(&options.url)?;
    let udp_addrs = peer::udp_bind_addrs(server_ip(&base).await);
    let peer_options = PeerOptions {
        ice_servers,
        force_relay,
        tcp_addrs: peer::tcp_bind_addrs(&udp_addrs),
        udp_addrs,
        receive_vp8: true,
    };
    let tx = opened.peer_tx.clone();
    let (publisher, subscriber) = match opened.publisher {
        Some(p) => (p, None),
        None => {
            let publisher =
                Transport::new(proto::SignalTarget::Publisher, &peer_options, tx.clone()).await?;
            for channel in publisher.create_data_channels().await? {
                peer::watch_data_channel(proto::SignalTarget::Publisher, channel, tx.clone());
            }
            let subscriber =
                Transport::new(proto::SignalTarget::Subscriber, &peer_options, tx.clone()).await?;
            (publisher, Some(subscriber))
        }
    };
    if opened.path == SignalPath::V1 {
        // The PC was built before JoinResponse; its first offer went out unapplied. Give it
        // the server's TURN/STUN and relay policy, then apply the offer: gathering starts now.
        publisher
            .apply_ice_servers_then_gather(
                &peer_options.ice_servers,
                peer_options.force_relay,
                opened.first_offer,
            )
            .await?;
    }

    let local = join.participant.clone().unwrap_or_default();
    {
        let mut s = state.lock().unwrap();
        let room = join.room.clone().unwrap_or_default();
        s.room_name = room.name;
        s.room_sid = room.sid;
        s.local.sid = local.sid.clone();
        s.local.identity = local.identity.clone();
        s.local.name = local.name.clone();
        s.signal_path = Some(opened.path);
        s.state = Some(ConnectionState::Connecting);
    }
    tracing::info!(
        "joined room {:?} as {:?} ({}) over {:?}",
        join.room.as_ref().map(|r| r.name.as_str()).unwrap_or(""),
        local.identity,
        local.sid,
        opened.path
    );

    let mut engine = Engine {
        path: opened.path,
        signal: opened.signal,
        publisher,
        subscriber,
        peer_tx: tx,
        tracks: Vec::new(),
        offer_in_flight: opened.path == SignalPath::V1,
        renegotiate: false,
        publisher_connected: false,
        pipelines: Vec::new(),
        stop_pipelines: Vec::new(),
        mid_to_track: HashMap::new(),
        state,
        stats,
        events,
        local_sid: local.sid.clone(),
        options,
    };
    engine.participants_update(join.other_participants.clone());
    engine.request_tracks()?;
    tokio::spawn(engine.run(opened.signal_rx, opened.peer_rx, commands));
    Ok(())
}

impl Engine {
    fn emit(&self, event: RoomEvent) {
        let _ = self.events.send(event);
    }

    fn set_state(&self, new: ConnectionState) {
        let changed = {
            let mut s = self.state.lock().unwrap();
            let changed = s.state != Some(new);
            s.state = Some(new);
            changed
        };
        if changed {
            self.emit(RoomEvent::ConnectionStateChanged { state: new });
        }
    }

    /// Send AddTrack for every configured track; negotiation waits for TrackPublished.
    fn request_tracks(&mut self) -> anyhow::Result<()> {
        let stream_id = format!("roomcast-{}", self.local_sid);
        if self.options.video.enabled() {
            let track = LocalTrack::new(RtpCodecKind::Video, &stream_id)?;
            let v = &self.options.video;
            self.signal.send(proto::signal_request::Message::AddTrack(
                proto::AddTrackRequest {
                    cid: track.cid.clone(),
                    name: "camera".into(),
                    r#type: proto::TrackType::Video as i32,
                    width: v.width,
                    height: v.height,
                    source: proto::TrackSource::Camera as i32,
                    layers: vec![proto::VideoLayer {
                        quality: proto::VideoQuality::High as i32,
                        width: v.width,
                        height: v.height,
                        bitrate: v.bitrate * 1000,
                        ..Default::default()
                    }],
                    simulcast_codecs: vec![proto::SimulcastCodec {
                        codec: "h264".into(),
                        cid: track.cid.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ));
            self.tracks.push(Publishing {
                track,
                settings_kind: TrackKind::Video,
                sid: None,
                attached: false,
                started: false,
                announced: false,
            });
        }
        if self.options.audio.enabled() {
            let track = LocalTrack::new(RtpCodecKind::Audio, &stream_id)?;
            self.signal.send(proto::signal_request::Message::AddTrack(
                proto::AddTrackRequest {
                    cid: track.cid.clone(),
                    name: "microphone".into(),
                    r#type: proto::TrackType::Audio as i32,
                    source: proto::TrackSource::Microphone as i32,
                    // We send plain Opus; a RED preference would make the server pick a codec we never send.
                    disable_red: true,
                    audio_features: if self.options.audio.channels == 2 {
                        vec![proto::AudioTrackFeature::TfStereo as i32]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                },
            ));
            self.tracks.push(Publishing {
                track,
                settings_kind: TrackKind::Audio,
                sid: None,
                attached: false,
                started: false,
                announced: false,
            });
        }
        let mut stats = self.stats.lock().unwrap();
        for p in &self.tracks {
            stats.push(TrackStatsRef {
                cid: p.track.cid.clone(),
                stats: p.track.stats.clone(),
            });
        }
        Ok(())
    }

    async fn negotiate(&mut self) -> anyhow::Result<()> {
        if self.offer_in_flight {
            self.renegotiate = true;
            return Ok(());
        }
        let sdp = self.publisher.create_offer().await?;
        self.offer_in_flight = true;
        self.renegotiate = false;
        self.signal.send(proto::signal_request::Message::Offer(
            proto::SessionDescription {
                r#type: "offer".into(),
                sdp,
                ..Default::default()
            },
        ));
        Ok(())
    }

    async fn on_track_published(
        &mut self,
        response: proto::TrackPublishedResponse,
    ) -> anyhow::Result<()> {
        let Some(info) = response.track else {
            return Ok(());
        };
        let Some(p) = self.tracks.iter_mut().find(|p| p.track.cid == response.cid) else {
            tracing::warn!("TrackPublished for unknown cid {}", response.cid);
            return Ok(());
        };
        p.sid = Some(info.sid.clone());
        {
            let mut s = self.state.lock().unwrap();
            s.local.tracks.push(LocalTrackPublication {
                sid: info.sid.clone(),
                cid: response.cid.clone(),
                kind: p.settings_kind,
                mime_type: if info.mime_type.is_empty() {
                    if p.settings_kind == TrackKind::Video {
                        "video/H264".into()
                    } else {
                        "audio/opus".into()
                    }
                } else {
                    info.mime_type.clone()
                },
                frames_sent: 0,
                keyframes_sent: 0,
                bytes_sent: 0,
                keyframe_requests: 0,
                frames_dropped: 0,
                muted: false,
            });
        }
        // Negotiate once every requested track has its sid: one offer carries them all.
        if self.tracks.iter().all(|p| p.sid.is_some()) {
            for p in self.tracks.iter_mut().filter(|p| !p.attached) {
                p.track.attach(&self.publisher).await?;
                p.attached = true;
            }
            self.negotiate().await?;
        }
        Ok(())
    }

    /// The server muted or unmuted one of our tracks (RoomService.MutePublishedTrack). As the JS
    /// SDK does: stop (or resume) its media, confirm with MuteTrackRequest, tell the app.
    fn on_remote_mute(&mut self, request: proto::MuteTrackRequest) {
        let Some(p) = self
            .tracks
            .iter()
            .find(|p| p.sid.as_deref() == Some(request.sid.as_str()))
        else {
            tracing::warn!("the server muted track {}, which is not ours", request.sid);
            return;
        };
        if !p.track.set_muted(request.muted) {
            return;
        }
        tracing::info!(
            "the server {} track {}",
            if request.muted { "muted" } else { "unmuted" },
            request.sid
        );
        self.signal.send(proto::signal_request::Message::Mute(
            proto::MuteTrackRequest {
                sid: request.sid.clone(),
                muted: request.muted,
            },
        ));
        let participant = {
            let mut state = self.state.lock().unwrap();
            if let Some(t) = state.local.tracks.iter_mut().find(|t| t.sid == request.sid) {
                t.muted = request.muted;
            }
            state.local.identity.clone()
        };
        let track_sid = request.sid;
        let _ = self.events.send(if request.muted {
            RoomEvent::TrackMuted {
                participant,
                track_sid,
            }
        } else {
            RoomEvent::TrackUnmuted {
                participant,
                track_sid,
            }
        });
    }

    async fn on_answer(&mut self, answer: proto::SessionDescription) -> anyhow::Result<()> {
        self.mid_to_track.extend(answer.mid_to_track_id.clone());
        self.publisher.apply_answer(answer.sdp).await?;
        self.offer_in_flight = false;
        for p in self
            .tracks
            .iter_mut()
            .filter(|p| p.attached && !p.announced)
        {
            p.announced = true;
            let sid = p.sid.clone().unwrap_or_default();
            let _ = self.events.send(RoomEvent::LocalTrackPublished {
                track_sid: sid,
                cid: p.track.cid.clone(),
                kind: p.settings_kind,
            });
        }
        if self.renegotiate {
            self.negotiate().await?;
        }
        self.start_media().await
    }

    /// Start capture once the publisher is connected and the answer covering the tracks is in.
    async fn start_media(&mut self) -> anyhow::Result<()> {
        if !self.publisher_connected {
            return Ok(());
        }
        for i in 0..self.tracks.len() {
            let p = &self.tracks[i];
            if !p.announced || p.started {
                continue;
            }
            let pipeline = match p.settings_kind {
                TrackKind::Video => {
                    let video = &self.options.video;
                    let mut source = media::open_video_source(video)?;
                    let encoder = media::open_video_encoder(video, source.as_mut())?;
                    let limits = self
                        .options
                        .video_bitrate_limits
                        .unwrap_or_else(|| video.bitrate_limits());
                    media::pipeline::start_video(source, encoder, limits)
                }
                TrackKind::Audio => media::pipeline::start_audio(
                    media::open_audio_source(&self.options.audio)?,
                    media::open_audio_encoder(&self.options.audio)?,
                ),
            };
            self.stop_pipelines.push(pipeline.control.clone());
            let handle = p.track.start(pipeline).await?;
            self.pipelines.push(handle);
            self.tracks[i].started = true;
            tracing::info!(
                "{:?} track {} is live",
                self.tracks[i].settings_kind,
                self.tracks[i].sid.as_deref().unwrap_or("")
            );
        }
        Ok(())
    }

    fn participants_update(&mut self, infos: Vec<proto::ParticipantInfo>) {
        for info in infos {
            if info.sid == self.local_sid
                || info.identity == self.state.lock().unwrap().local.identity
            {
                continue;
            }
            let gone = info.state == proto::participant_info::State::Disconnected as i32;
            let mut emitted = Vec::new();
            {
                let mut s = self.state.lock().unwrap();
                if gone {
                    if let Some(old) = s.remotes.remove(&info.identity) {
                        for sid in old.tracks.keys() {
                            emitted.push(RoomEvent::TrackUnpublished {
                                participant: old.identity.clone(),
                                track_sid: sid.clone(),
                            });
                        }
                        emitted.push(RoomEvent::ParticipantDisconnected {
                            identity: old.identity,
                            sid: old.sid,
                        });
                    }
                } else {
                    let is_new = !s.remotes.contains_key(&info.identity);
                    let entry = s.remotes.entry(info.identity.clone()).or_insert_with(|| {
                        RemoteParticipant {
                            sid: info.sid.clone(),
                            identity: info.identity.clone(),
                            name: info.name.clone(),
                            tracks: HashMap::new(),
                        }
                    });
                    entry.sid = info.sid.clone();
                    entry.name = info.name.clone();
                    if is_new {
                        emitted.push(RoomEvent::ParticipantConnected {
                            identity: info.identity.clone(),
                            sid: info.sid.clone(),
                        });
                    }
                    let current: Vec<String> = info.tracks.iter().map(|t| t.sid.clone()).collect();
                    let removed: Vec<String> = entry
                        .tracks
                        .keys()
                        .filter(|sid| !current.contains(sid))
                        .cloned()
                        .collect();
                    for sid in removed {
                        entry.tracks.remove(&sid);
                        emitted.push(RoomEvent::TrackUnpublished {
                            participant: info.identity.clone(),
                            track_sid: sid,
                        });
                    }
                    for t in &info.tracks {
                        if !entry.tracks.contains_key(&t.sid) {
                            let kind = TrackKind::from_proto(t.r#type);
                            entry.tracks.insert(
                                t.sid.clone(),
                                RemoteTrackPublication {
                                    sid: t.sid.clone(),
                                    name: t.name.clone(),
                                    kind,
                                    mime_type: t.mime_type.clone(),
                                    subscribed: false,
                                },
                            );
                            emitted.push(RoomEvent::TrackPublished {
                                participant: info.identity.clone(),
                                track_sid: t.sid.clone(),
                                kind,
                                mime_type: t.mime_type.clone(),
                            });
                        }
                    }
                }
            }
            for e in emitted {
                self.emit(e);
            }
        }
    }

    /// Identify a subscribed track: msid stream id "PA_sid|TR_sid" (LiveKit), else the track id,
    /// else (v1) the answer's mid map.
    async fn on_remote_track(
        &mut self,
        track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>,
    ) {
        let stream_id = track.stream_id().await;
        let track_id = track.track_id().await;
        let (participant_sid, track_sid) = match stream_id.split_once('|') {
            Some((pa, tr)) => (Some(pa.to_string()), tr.to_string()),
            None if track_id.starts_with("TR_") => (None, track_id.clone()),
            None => (
                None,
                self.mid_to_track
                    .values()
                    .find(|v| **v == track_id)
                    .cloned()
                    .unwrap_or(track_id.clone()),
            ),
        };
        let found = {
            let mut s = self.state.lock().unwrap();
            let mut found = None;
            for remote in s.remotes.values_mut() {
                if participant_sid
                    .as_deref()
                    .is_some_and(|pa| pa != remote.sid)
                {
                    continue;
                }
                if let Some(publication) = remote.tracks.get_mut(&track_sid) {
                    publication.subscribed = true;
                    found = Some((remote.identity.clone(), publication.kind));
                }
            }
            found
        };
        let (participant, kind) = match found {
            Some(f) => f,
            None => {
                let kind = if track.kind().await == RtpCodecKind::Video {
                    TrackKind::Video
                } else {
                    TrackKind::Audio
                };
                (participant_sid.unwrap_or_default(), kind)
            }
        };
        self.emit(RoomEvent::TrackSubscribed {
            participant: participant.clone(),
            track_sid: track_sid.clone(),
            kind,
        });
        let events = self.events.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            use webrtc::media_stream::track_remote::TrackRemoteEvent;
            // Drain the track (we do not render remote media) until it ends.
            while let Some(event) = track.poll().await {
                if matches!(event, TrackRemoteEvent::OnEnded) {
                    break;
                }
            }
            if let Some(remote) = state.lock().unwrap().remotes.get_mut(&participant) {
                if let Some(p) = remote.tracks.get_mut(&track_sid) {
                    p.subscribed = false;
                }
            }
            let _ = events.send(RoomEvent::TrackUnsubscribed {
                participant,
                track_sid,
            });
        });
    }

    fn on_data(&self, label: &str, data: &[u8]) {
        let Ok(packet) = proto::DataPacket::decode(data) else {
            tracing::debug!("undecodable data packet on {label}");
            return;
        };
        if let Some(proto::data_packet::Value::User(user)) = packet.value {
            self.emit(RoomEvent::DataReceived {
                participant: packet.participant_identity,
                topic: user.topic,
                payload: user.payload,
                reliable: label == peer::RELIABLE,
            });
        }
    }

    async fn shutdown(&mut self, leave: Option<proto::DisconnectReason>) {
        for control in &self.stop_pipelines {
            control.stop();
        }
        match leave {
            Some(reason) => self.signal.leave(reason, LEAVE_TIMEOUT).await,
            None => self.signal.close(),
        }
        let close_publisher = self.publisher.close();
        match &self.subscriber {
            Some(sub) => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(300),
                    futures_util::future::join(close_publisher, sub.close()),
                )
                .await;
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_millis(300), close_publisher).await;
            }
        }
        for handle in self.pipelines.drain(..) {
            handle.abort();
        }
    }

    fn disconnected(&mut self, reason: String, kind: DisconnectKind, detail: String) {
        {
            let mut s = self.state.lock().unwrap();
            s.disconnect_reason = Some(reason.clone());
            s.state = Some(ConnectionState::Disconnected);
            s.signal_alive = false;
        }
        self.emit(RoomEvent::ConnectionStateChanged {
            state: ConnectionState::Disconnected,
        });
        self.emit(RoomEvent::Disconnected {
            reason,
            kind,
            detail,
        });
    }

    /// The link is gone for a reason a new join may cure: tear down and say so.
    async fn lost(&mut self, reason: &str, detail: String) {
        tracing::warn!("lost the room connection: {detail}");
        self.shutdown(None).await;
        self.disconnected(reason.into(), DisconnectKind::Lost, detail);
    }

    async fn handle_session(&mut self, event: SessionEvent) -> anyhow::Result<bool> {
        match event {
            SessionEvent::Answer(answer) => self.on_answer(answer).await?,
            SessionEvent::Offer(offer) => match (&self.subscriber, self.path) {
                (Some(sub), SignalPath::V0) => {
                    let sdp = sub.answer_offer(offer.sdp).await?;
                    self.signal.send(proto::signal_request::Message::Answer(
                        proto::SessionDescription {
                            r#type: "answer".into(),
                            sdp,
                            id: offer.id,
                            ..Default::default()
                        },
                    ));
                }
                _ => tracing::debug!("ignoring a server offer in single-PC mode"),
            },
            SessionEvent::Trickle {
                target,
                candidate_init,
                ..
            } => {
                let transport = match (target, &self.subscriber) {
                    (proto::SignalTarget::Subscriber, Some(sub)) if self.path == SignalPath::V0 => {
                        sub
                    }
                    _ => &self.publisher,
                };
                if let Err(e) = transport.add_remote_candidate(&candidate_init).await {
                    tracing::warn!("{e:#}");
                }
            }
            SessionEvent::TrackPublished(response) => self.on_track_published(response).await?,
            SessionEvent::TrackUnpublished(response) => {
                self.emit(RoomEvent::LocalTrackUnpublished {
                    track_sid: response.track_sid,
                });
            }
            SessionEvent::ParticipantUpdate(infos) => self.participants_update(infos),
            SessionEvent::MediaSectionsRequirement(req) => {
                if self.path == SignalPath::V1 {
                    self.publisher
                        .add_receive_sections(req.num_audios as usize, req.num_videos as usize)
                        .await?;
                    self.negotiate().await?;
                }
            }
            SessionEvent::TokenRefreshed(token) => {
                if let Some(store) = &self.options.on_token_refreshed {
                    store(&token);
                }
            }
            SessionEvent::Leave { reason, action } => {
                let reason_name = reason.as_str_name().to_string();
                if action == proto::leave_request::Action::Disconnect {
                    let detail =
                        format!("the server sent Leave {reason_name} with action DISCONNECT");
                    tracing::warn!("{detail}; not rejoining");
                    self.shutdown(None).await;
                    self.disconnected(reason_name, DisconnectKind::Removed, detail);
                } else {
                    // Resume/full reconnect is the supervisor's job (a later issue); until then
                    // the process exits and the service manager starts a fresh join.
                    let detail = format!(
                        "the server sent Leave {reason_name} with action {}",
                        action.as_str_name()
                    );
                    self.lost(&reason_name, detail).await;
                }
                return Ok(false);
            }
            SessionEvent::PingTimeout => {
                self.lost(
                    "CONNECTION_TIMEOUT",
                    "no answer to ping_req within the server's ping_timeout".into(),
                )
                .await;
                return Ok(false);
            }
            SessionEvent::RequestResponse(response) => {
                if response.reason != proto::request_response::Reason::Ok as i32 {
                    tracing::warn!(
                        "server refused a request: {:?} {}",
                        response.reason(),
                        response.message
                    );
                }
            }
            SessionEvent::RemoteMute(request) => self.on_remote_mute(request),
            SessionEvent::Joined(_) | SessionEvent::Resumed(_) | SessionEvent::RoomUpdate(_) => {}
            SessionEvent::FirstMessageTimeout
            | SessionEvent::UnexpectedFirstMessage(_)
            | SessionEvent::Other(_) => {}
        }
        Ok(true)
    }

    /// Ok(Some(detail)) when the event ends the connection.
    async fn handle_peer(&mut self, event: PeerEvent) -> anyhow::Result<Option<String>> {
        match event {
            PeerEvent::LocalCandidate {
                target,
                candidate_init,
            } => {
                self.signal.send(proto::signal_request::Message::Trickle(
                    proto::TrickleRequest {
                        candidate_init,
                        target: target as i32,
                        r#final: false,
                    },
                ));
            }
            PeerEvent::ConnectionState { target, state } => {
                tracing::debug!("{target:?} PC {state}");
                let primary = target == proto::SignalTarget::Publisher;
                if primary {
                    match state {
                        RTCPeerConnectionState::Connected => {
                            self.publisher_connected = true;
                            self.report_media_path().await;
                            self.set_state(ConnectionState::Connected);
                            self.start_media().await?;
                        }
                        RTCPeerConnectionState::Failed => {
                            self.publisher_connected = false;
                        }
                        _ => {}
                    }
                }
                if state == RTCPeerConnectionState::Failed {
                    return Ok(Some(format!("the {target:?} PeerConnection failed")));
                }
            }
            PeerEvent::DataChannel { target, channel } => {
                peer::watch_data_channel(target, channel, self.peer_tx.clone())
            }
            PeerEvent::Track { track, .. } => self.on_remote_track(track).await,
            PeerEvent::DataPacket { label, data, .. } => self.on_data(&label, &data),
        }
        Ok(None)
    }

    /// Say which path ICE selected (room event `media_path`, and STATUS=).
    async fn report_media_path(&self) {
        match peer::path::selected(&self.publisher.pc).await {
            Some(p) => {
                tracing::info!("media path {}: {} <-> {}", p.path, p.local, p.remote);
                self.emit(RoomEvent::MediaPath {
                    path: p.path.into(),
                    local: p.local,
                    remote: p.remote,
                });
            }
            None => tracing::warn!("connected, but ICE reports no selected candidate pair"),
        }
    }

    fn beat(&self) {
        let mut s = self.state.lock().unwrap();
        s.engine_beat = Some(std::time::Instant::now());
        s.signal_alive = self.signal.is_alive();
    }

    async fn run(
        mut self,
        mut signal_rx: mpsc::UnboundedReceiver<SignalEvent>,
        mut peer_rx: mpsc::UnboundedReceiver<PeerEvent>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        // The beat proves to the systemd watchdog that this loop still turns.
        let mut beat = tokio::time::interval(super::sdnotify::ENGINE_BEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Close(done)) => {
                        self.shutdown(Some(proto::DisconnectReason::ClientInitiated)).await;
                        self.disconnected(
                            "CLIENT_INITIATED".into(),
                            DisconnectKind::Left,
                            "we left the room".into(),
                        );
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown(Some(proto::DisconnectReason::ClientInitiated)).await;
                        return;
                    }
                },
                _ = beat.tick() => self.beat(),
                event = signal_rx.recv() => match event {
                    Some(SignalEvent::Session(event)) => match self.handle_session(*event).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => tracing::error!("{e:#}"),
                    },
                    Some(SignalEvent::Closed { code, reason }) => {
                        let code = code.map_or("none".to_string(), |c| c.to_string());
                        self.lost(
                            "SIGNAL_CLOSE",
                            format!("the signalling WebSocket closed (code {code}): {reason}"),
                        )
                        .await;
                        return;
                    }
                    None => {
                        self.lost("SIGNAL_CLOSE", "the signalling task ended".into()).await;
                        return;
                    }
                },
                Some(event) = peer_rx.recv() => match self.handle_peer(event).await {
                    Ok(None) => {}
                    Ok(Some(detail)) => {
                        self.lost("MEDIA_FAILURE", detail).await;
                        return;
                    }
                    Err(e) => tracing::error!("{e:#}"),
                },
            }
        }
    }
}
