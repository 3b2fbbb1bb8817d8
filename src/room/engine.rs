//! The connection shell around the [`Supervisor`]: it carries out the supervisor's actions (open
//! signalling fresh or resuming, SyncState, ICE restart, rebuild and republish, room events,
//! sd_notify, the status) and turns what happens on the WebSocket, the PeerConnections, the
//! capture pipelines and the network into supervisor inputs. It decides nothing about recovery.
//!
//! One task owns everything and handles it in order. Inputs from a connection the supervisor
//! has discarded cannot reach it: each attempt, each WebSocket and each pair of PeerConnections
//! has its own channel, dropped with it, and media notes carry the generation of the tracks
//! they are about. The capture pipelines outlive connections: a full reconnect gives new tracks
//! the same capture, so no device is reopened.
use super::signalurl::{self, PathChoice, SignalPath};
use super::{
    Command, ConnectionState, DisconnectKind, JoinError, LocalTrackPublication, RemoteParticipant,
    RemoteTrackPublication, RoomEvent, RoomOptions, RoomState, TrackKind,
};
use crate::media;
use crate::peer::local_track::{ForwardEnd, LocalTrack, SendStats, SharedSamples};
use crate::peer::{self, PeerEvent, PeerOptions, Transport};
use crate::signal::session::{SessionEvent, SessionOptions};
use crate::signal::ws::{self, ConnectError, ResumeSettings, SignalEvent, SignalHandle};
use crate::supervisor::{
    Action, Input, LeaveAction, Notice, PeerConnectionKind, PeerConnectionState, RoomEventKind,
    Status, Supervisor, SupervisorConfig, Track, TrackSet,
};
use livekit_protocol as proto;
use prost::Message as _;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use webrtc::peer_connection::{RTCIceConnectionState, RTCPeerConnectionState};

pub(crate) struct TrackStatsRef {
    pub cid: String,
    pub stats: Arc<SendStats>,
}

/// Receive-only sections offered up front in single-PC mode (what the SDKs do).
const INITIAL_RECV_AUDIO: usize = 3;
const INITIAL_RECV_VIDEO: usize = 3;
/// Bound on leaving: Leave + close handshake + PC close must fit in 1 s.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(400);
/// Bound on closing discarded PeerConnections (in the background).
const PC_CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
/// Media notes (first frame out, pipeline ended) waiting for the loop: a few per track at most.
const MEDIA_NOTES: usize = 16;
/// Network changes waiting for the loop; netlink bursts beyond this are dropped (the supervisor
/// only needs to know that something changed, and the latest default-route state).
pub(crate) const NETWORK_NOTES: usize = 32;

/// What the room task shares with [`super::Room`].
pub(crate) struct Shared {
    pub state: Arc<Mutex<RoomState>>,
    pub stats: Arc<Mutex<Vec<TrackStatsRef>>>,
    pub events: mpsc::UnboundedSender<RoomEvent>,
    pub status: watch::Sender<Status>,
}

/// `Room::connect` hears the first join's outcome here; a first join that fails then ends the
/// task (the library caller decides). Without it (`roomcast run`) the supervisor retries.
pub(crate) type FirstJoin = oneshot::Sender<Result<(), JoinError>>;

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

async fn refused(
    connect_url: &url::Url,
    token: &str,
    options: &RoomOptions,
    err: ConnectError,
) -> ConnectError {
    let ConnectError::Rejected { status, reason } = err else {
        return err;
    };
    // The upgrade response rarely says why; the validate endpoint does.
    match ws::validate(
        signalurl::validate_url(connect_url),
        token.to_string(),
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

/// Wait for the first message of a fresh session (`JoinResponse`) or a resumed one
/// (`ReconnectResponse`), or the Leave saying why not.
async fn first_message(
    signal: &SignalHandle,
    signal_rx: &mut mpsc::UnboundedReceiver<SignalEvent>,
    join_timeout: Duration,
) -> Result<SessionEvent, JoinError> {
    loop {
        let wait = join_timeout + Duration::from_secs(1);
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
                return Err(JoinError::JoinTimeout(join_timeout));
            }
            event @ (SessionEvent::Joined(_) | SessionEvent::Resumed(_)) => return Ok(event),
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
            other => tracing::debug!("before the first message: {other:?}"),
        }
    }
}

async fn open(options: &RoomOptions, token: &str) -> Result<Opened, JoinError> {
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
            token,
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
                return Err(refused(&url, token, options, e).await.into());
            }
        }
    }
    let ws = match stream {
        Some(ws) => ws,
        None => {
            let url = signalurl::v0_url(&base, options.auto_subscribe);
            match ws::open(
                url.as_str(),
                token,
                options.ca_file.as_deref(),
                options.connect_timeout,
            )
            .await
            {
                Ok(ws) => ws,
                Err(e) => return Err(refused(&url, token, options, e).await.into()),
            }
        }
    };
    let session_options = SessionOptions {
        first_message_timeout: options.join_timeout,
        ..Default::default()
    };
    let (signal, mut signal_rx) = ws::spawn(ws, session_options);
    let join = match first_message(&signal, &mut signal_rx, options.join_timeout).await? {
        SessionEvent::Joined(join) => *join,
        _ => {
            signal.close();
            return Err(JoinError::Closed(
                "the server answered a fresh join with a ReconnectResponse".into(),
            ));
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

/// A fresh join: a new token, signalling, and the PeerConnections the JoinResponse calls for.
async fn join(
    options: RoomOptions,
    token: String,
    shared: SharedRefs,
) -> Result<Joined, JoinError> {
    let opened = open(&options, &token).await?;
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
    let conn = Conn {
        path: opened.path,
        signal: opened.signal,
        signal_open: true,
        publisher,
        subscriber,
        peer_tx: tx,
        tracks: Vec::new(),
        offer_in_flight: opened.path == SignalPath::V1,
        renegotiate: false,
        publisher_connected: false,
        ice_restarting: false,
        mid_to_track: HashMap::new(),
        local_sid: local.sid.clone(),
        token,
        force_relay,
        join,
        options,
        state: shared.state,
        stats: shared.stats,
        events: shared.events,
        speaker: shared.speaker,
    };
    Ok(Joined {
        conn: Box::new(conn),
        signal_rx: opened.signal_rx,
        peer_rx: opened.peer_rx,
    })
}

/// Resume participant `participant_sid`: new signalling with reconnect=1, same PeerConnections.
async fn resume(
    options: RoomOptions,
    token: String,
    path: SignalPath,
    participant_sid: String,
    settings: ResumeSettings,
) -> Result<Resumed, JoinError> {
    let base = signalurl::ws_base(&options.url)?;
    let url = signalurl::resume_url(
        &base,
        path,
        options.auto_subscribe,
        &participant_sid,
        proto::ReconnectReason::RrSignalDisconnected,
    );
    let ws = match ws::open(
        url.as_str(),
        &token,
        options.ca_file.as_deref(),
        options.connect_timeout,
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => return Err(refused(&url, &token, &options, e).await.into()),
    };
    let session_options = SessionOptions {
        first_message_timeout: options.join_timeout,
        resuming: true,
    };
    let (signal, mut signal_rx) = ws::spawn_resumed(ws, session_options, Some(settings));
    let response = match first_message(&signal, &mut signal_rx, options.join_timeout).await? {
        SessionEvent::Resumed(response) => *response,
        // An old server answering with something else: treat as resumed (as JS does).
        _ => proto::ReconnectResponse::default(),
    };
    Ok(Resumed {
        signal,
        signal_rx,
        response,
    })
}

/// Clones of the shared handles a connection reports through.
#[derive(Clone)]
struct SharedRefs {
    state: Arc<Mutex<RoomState>>,
    stats: Arc<Mutex<Vec<TrackStatsRef>>>,
    events: mpsc::UnboundedSender<RoomEvent>,
    speaker: Option<media::speaker::SpeakerSink>,
}

struct Joined {
    conn: Box<Conn>,
    signal_rx: mpsc::UnboundedReceiver<SignalEvent>,
    peer_rx: mpsc::UnboundedReceiver<PeerEvent>,
}

struct Resumed {
    signal: SignalHandle,
    signal_rx: mpsc::UnboundedReceiver<SignalEvent>,
    response: proto::ReconnectResponse,
}

enum Attempt {
    Join(JoinHandle<Result<Joined, JoinError>>),
    Resume(JoinHandle<Result<Resumed, JoinError>>),
}

impl Attempt {
    fn abort(&self) {
        match self {
            Attempt::Join(task) => task.abort(),
            Attempt::Resume(task) => task.abort(),
        }
    }
}

enum AttemptOutcome {
    Joined(Result<Joined, JoinError>),
    Resumed(Result<Resumed, JoinError>),
}

fn task_result<T>(
    result: Result<Result<T, JoinError>, tokio::task::JoinError>,
) -> Result<T, JoinError> {
    result.unwrap_or_else(|e| {
        Err(JoinError::Other(anyhow::anyhow!(
            "the attempt task ended: {e}"
        )))
    })
}

/// The channels the loop waits on besides commands; each belongs to one attempt or connection.
#[derive(Default)]
struct Channels {
    attempt: Option<Attempt>,
    signal_rx: Option<mpsc::UnboundedReceiver<SignalEvent>>,
    peer_rx: Option<mpsc::UnboundedReceiver<PeerEvent>>,
}

impl Channels {
    fn abort_attempt(&mut self) {
        if let Some(attempt) = self.attempt.take() {
            attempt.abort();
        }
    }
}

async fn attempt_done(attempt: &mut Option<Attempt>) -> AttemptOutcome {
    match attempt {
        Some(Attempt::Join(task)) => AttemptOutcome::Joined(task_result(task.await)),
        Some(Attempt::Resume(task)) => AttemptOutcome::Resumed(task_result(task.await)),
        None => std::future::pending().await,
    }
}

async fn recv_from<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// A local track on its way to being published.
struct Publishing {
    track: LocalTrack,
    which: Track,
    settings_kind: TrackKind,
    sid: Option<String>,
    /// The server's TrackInfo, for SyncState after a resume.
    info: Option<proto::TrackInfo>,
    attached: bool,
    started: bool,
    announced: bool,
    forwarder: Option<AbortHandle>,
}

/// One set of PeerConnections and the signalling that currently serves them.
struct Conn {
    path: SignalPath,
    signal: SignalHandle,
    /// The WebSocket is open as far as we know (a Leave can go out on it).
    signal_open: bool,
    publisher: Transport,
    subscriber: Option<Transport>,
    peer_tx: mpsc::UnboundedSender<PeerEvent>,
    tracks: Vec<Publishing>,
    offer_in_flight: bool,
    renegotiate: bool,
    publisher_connected: bool,
    /// An ICE-restart offer went out: report the publisher connected once ICE is back.
    ice_restarting: bool,
    /// v1: mid → track sid, from the server's answers.
    mid_to_track: HashMap<String, String>,
    local_sid: String,
    /// The token this session joined with (a resume uses it unless a newer one came).
    token: String,
    force_relay: bool,
    join: proto::JoinResponse,
    options: RoomOptions,
    state: Arc<Mutex<RoomState>>,
    stats: Arc<Mutex<Vec<TrackStatsRef>>>,
    events: mpsc::UnboundedSender<RoomEvent>,
    /// Where subscribed audio goes, when a speaker is configured and open.
    speaker: Option<media::speaker::SpeakerSink>,
}

/// A running capture pipeline, kept across connections.
struct Capture {
    samples: SharedSamples,
    control: Arc<media::pipeline::PipelineControl>,
    /// Owns the capture thread: dropping it stops the thread.
    pipeline: media::pipeline::Pipeline,
}

impl Capture {
    fn open(track: Track, options: &RoomOptions) -> anyhow::Result<Capture> {
        let mut pipeline = match track {
            Track::Video => {
                let video = &options.video;
                let mut source = media::open_video_source(video)?;
                let encoder = media::open_video_encoder(video, source.as_mut())?;
                let limits = options
                    .video_bitrate_limits
                    .unwrap_or_else(|| video.bitrate_limits());
                let pipeline = media::pipeline::start_video(source, encoder, limits);
                pipeline
                    .control
                    .note_start_bitrate(video.bitrate.saturating_mul(1000));
                pipeline
            }
            Track::Audio => media::pipeline::start_audio(
                media::open_audio_source(&options.audio)?,
                media::open_audio_encoder(&options.audio)?,
            ),
        };
        // The receiver moves to the shared slot; the pipeline keeps a closed stand-in.
        let samples = std::mem::replace(
            &mut pipeline.samples,
            media::pipeline::SampleReceiver::closed(),
        );
        Ok(Capture {
            samples: Arc::new(tokio::sync::Mutex::new(samples)),
            control: pipeline.control.clone(),
            pipeline,
        })
    }

    fn error(&self) -> String {
        self.pipeline
            .error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "the capture pipeline stopped".into())
    }
}

#[derive(Debug)]
enum MediaNoteKind {
    FirstFrame,
    PipelineEnded,
}

#[derive(Debug)]
struct MediaNote {
    generation: u64,
    track: Track,
    kind: MediaNoteKind,
}

fn track_kind(track: Track) -> TrackKind {
    match track {
        Track::Video => TrackKind::Video,
        Track::Audio => TrackKind::Audio,
    }
}

fn pc_kind(path: SignalPath, target: proto::SignalTarget) -> PeerConnectionKind {
    match (path, target) {
        (SignalPath::V0, proto::SignalTarget::Subscriber) => PeerConnectionKind::Subscriber,
        _ => PeerConnectionKind::Publisher,
    }
}

fn pc_state(state: RTCPeerConnectionState) -> Option<PeerConnectionState> {
    Some(match state {
        RTCPeerConnectionState::New => PeerConnectionState::New,
        RTCPeerConnectionState::Connecting => PeerConnectionState::Connecting,
        RTCPeerConnectionState::Connected => PeerConnectionState::Connected,
        RTCPeerConnectionState::Disconnected => PeerConnectionState::Disconnected,
        RTCPeerConnectionState::Failed => PeerConnectionState::Failed,
        RTCPeerConnectionState::Closed => PeerConnectionState::Closed,
        _ => return None,
    })
}

fn leave_action(action: proto::leave_request::Action) -> LeaveAction {
    match action {
        proto::leave_request::Action::Disconnect => LeaveAction::Disconnect,
        proto::leave_request::Action::Resume => LeaveAction::Resume,
        proto::leave_request::Action::Reconnect => LeaveAction::Reconnect,
    }
}

fn leave_action_named(name: &str) -> LeaveAction {
    proto::leave_request::Action::from_str_name(name)
        .map(leave_action)
        .unwrap_or(LeaveAction::Disconnect)
}

/// What a failed attempt tells the supervisor.
fn failure_input(err: &JoinError, resuming: bool) -> Input {
    match err {
        JoinError::Connect(ConnectError::Rejected { status, .. }) => Input::JoinFailed {
            http_status: Some(*status),
            refused: false,
            detail: err.to_string(),
        },
        JoinError::Refused { reason, action } => match leave_action_named(action) {
            LeaveAction::Disconnect => Input::Leave {
                action: LeaveAction::Disconnect,
                reason: reason.clone(),
            },
            _ if resuming => Input::ResumeRejected {
                reason: reason.clone(),
            },
            action => Input::Leave {
                action,
                reason: reason.clone(),
            },
        },
        _ => Input::JoinFailed {
            http_status: None,
            refused: matches!(err, JoinError::Connect(e) if e.is_refused()),
            detail: err.to_string(),
        },
    }
}

fn description(
    kind: &str,
    desc: Option<webrtc::peer_connection::RTCSessionDescription>,
) -> Option<proto::SessionDescription> {
    desc.map(|d| proto::SessionDescription {
        r#type: kind.into(),
        sdp: d.sdp,
        ..Default::default()
    })
}

impl Conn {
    fn emit(&self, event: RoomEvent) {
        let _ = self.events.send(event);
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
            self.tracks.push(Publishing::new(track, Track::Video));
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
            self.tracks.push(Publishing::new(track, Track::Audio));
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
        self.send_offer(sdp);
        Ok(())
    }

    fn send_offer(&mut self, sdp: String) {
        self.offer_in_flight = true;
        self.renegotiate = false;
        self.signal.send(proto::signal_request::Message::Offer(
            proto::SessionDescription {
                r#type: "offer".into(),
                sdp,
                ..Default::default()
            },
        ));
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
        p.info = Some(info.clone());
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

    /// Apply the server's answer; returns the tracks it made published.
    async fn on_answer(
        &mut self,
        answer: proto::SessionDescription,
    ) -> anyhow::Result<Vec<(Track, String)>> {
        self.mid_to_track.extend(answer.mid_to_track_id.clone());
        self.publisher.apply_answer(answer.sdp).await?;
        self.offer_in_flight = false;
        let mut published = Vec::new();
        for p in self
            .tracks
            .iter_mut()
            .filter(|p| p.attached && !p.announced)
        {
            p.announced = true;
            published.push((p.which, p.sid.clone().unwrap_or_default()));
        }
        if self.renegotiate {
            self.negotiate().await?;
        }
        Ok(published)
    }

    /// SyncState after a resume: what we publish (with the server's TrackInfo), the last
    /// descriptions, our subscription choice.
    fn sync_state(
        &self,
        answer: Option<proto::SessionDescription>,
        offer: Option<proto::SessionDescription>,
    ) -> proto::SyncState {
        proto::SyncState {
            answer,
            offer,
            subscription: Some(proto::UpdateSubscription {
                track_sids: Vec::new(),
                subscribe: !self.options.auto_subscribe,
                participant_tracks: Vec::new(),
            }),
            publish_tracks: self
                .tracks
                .iter()
                .filter_map(|p| {
                    p.info.as_ref().map(|info| proto::TrackPublishedResponse {
                        cid: p.track.cid.clone(),
                        track: Some(info.clone()),
                    })
                })
                .collect(),
            ..Default::default()
        }
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
                // The remote track is gone: the speaker lets go of it now. Its RTP stream just
                // stops (webrtc-rs reports no end for a transceiver the server renegotiates
                // away), so this, not the track's end, is when LiveKit says so.
                if let (RoomEvent::TrackUnpublished { track_sid, .. }, Some(speaker)) =
                    (&e, &self.speaker)
                {
                    speaker.end(track_sid);
                }
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
        // Audio goes to the speaker when there is one; everything else (video always) is
        // received and dropped undecoded, which costs no more than reading the socket.
        let speaker = match kind {
            TrackKind::Audio => self.speaker.clone(),
            TrackKind::Video => None,
        };
        let source: Arc<str> = track_sid.as_str().into();
        tokio::spawn(async move {
            use webrtc::media_stream::track_remote::TrackRemoteEvent;
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        if let Some(speaker) = &speaker {
                            speaker.push(media::speaker::RemotePacket {
                                source: source.clone(),
                                seq: packet.header.sequence_number,
                                payload: packet.payload,
                            });
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            if let Some(speaker) = &speaker {
                speaker.end(&source);
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
}

impl Publishing {
    fn new(track: LocalTrack, which: Track) -> Self {
        Self {
            track,
            which,
            settings_kind: track_kind(which),
            sid: None,
            info: None,
            attached: false,
            started: false,
            announced: false,
            forwarder: None,
        }
    }
}

/// The room task: the supervisor and the shell that carries out what it decides.
struct Shell {
    options: RoomOptions,
    shared: Shared,
    supervisor: Supervisor,
    conn: Option<Box<Conn>>,
    /// The last ReconnectResponse, for `SyncState`.
    reconnect_response: Option<proto::ReconnectResponse>,
    /// The newest refresh_token the server sent (used by resumes and, without a token source,
    /// by fresh joins).
    latest_token: Option<String>,
    captures: [Option<Capture>; 2],
    /// The speaker's playout thread, kept across connections like the captures.
    speaker: Option<media::speaker::Playback>,
    /// A failed track is being restarted: its next first frame reports MediaRecovered.
    recovering: [bool; 2],
    /// Bumped whenever local tracks are dropped; media notes of older tracks are ignored.
    generation: u64,
    media_tx: mpsc::Sender<MediaNote>,
    inputs: VecDeque<Input>,
    first_join: Option<FirstJoin>,
    close_done: Vec<oneshot::Sender<()>>,
    ever_connected: bool,
    /// When the last `media_stats` went out (or the room started): the interval the next
    /// one's bytes are divided by.
    stats_since: Instant,
}

/// Run the room: `Input::Start`, then the supervisor's loop until `Exit`. Returns the exit code.
pub(crate) async fn run(
    options: RoomOptions,
    shared: Shared,
    mut commands: mpsc::UnboundedReceiver<Command>,
    first_join: Option<FirstJoin>,
) -> u8 {
    let tracks = TrackSet {
        video: options.video.enabled(),
        audio: options.audio.enabled(),
    };
    let mut config = SupervisorConfig::new(tracks);
    config.watchdog_interval = options.watchdog_interval;
    let now = Instant::now();
    let supervisor = Supervisor::new(config, now, rand::random());
    let (media_tx, mut media_rx) = mpsc::channel(MEDIA_NOTES);
    let (mut network_rx, mut clock_rx) = if options.watch_network {
        (super::netwatch::spawn(), super::clockwatch::spawn())
    } else {
        (None, None)
    };
    let mut shell = Shell {
        options,
        shared,
        supervisor,
        conn: None,
        reconnect_response: None,
        latest_token: None,
        captures: [None, None],
        speaker: None,
        recovering: [false, false],
        generation: 0,
        media_tx,
        inputs: VecDeque::from([Input::Start]),
        first_join,
        close_done: Vec::new(),
        ever_connected: false,
        stats_since: Instant::now(),
    };
    shell.speaker = open_speaker(shell.options.speaker.as_ref());
    let mut channels = Channels::default();
    let mut stats_timer = shell.options.stats_interval.map(|period| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A stalled loop reports once when it comes back, not a burst of short windows.
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    loop {
        if let Some(code) = shell.step(&mut channels).await {
            for done in shell.close_done.drain(..) {
                let _ = done.send(());
            }
            return code;
        }
        let wake = shell.supervisor.poll_timeout();
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(Command::Close(done)) => {
                    shell.close_done.push(done);
                    shell.inputs.push_back(Input::Shutdown);
                }
                // Every Room handle is gone: leave.
                None => shell.inputs.push_back(Input::Shutdown),
            },
            outcome = attempt_done(&mut channels.attempt) => {
                channels.attempt = None;
                shell.on_attempt(outcome, &mut channels);
            }
            event = recv_from(&mut channels.signal_rx) => match event {
                Some(SignalEvent::Session(event)) => {
                    if let Err(e) = shell.handle_session(*event).await {
                        tracing::error!("{e:#}");
                    }
                }
                Some(SignalEvent::Closed { code, reason }) => {
                    channels.signal_rx = None;
                    shell.signal_closed(format!(
                        "the signalling WebSocket closed (code {}): {reason}",
                        code.map_or("none".to_string(), |c| c.to_string())
                    ));
                }
                None => {
                    channels.signal_rx = None;
                    shell.signal_closed("the signalling task ended".into());
                }
            },
            Some(event) = recv_from(&mut channels.peer_rx) => {
                if let Err(e) = shell.handle_peer(event).await {
                    tracing::error!("{e:#}");
                }
            }
            Some(note) = media_rx.recv() => shell.on_media_note(note),
            Some(change) = async {
                match network_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => shell.inputs.push_back(change),
            Some(jumped) = async {
                match clock_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => shell.inputs.push_back(jumped),
            _ = sleep_until(wake) => shell.supervisor.handle_timeout(Instant::now()),
            _ = async {
                match stats_timer.as_mut() {
                    Some(timer) => timer.tick().await,
                    None => std::future::pending().await,
                }
            } => shell.report_media_stats(Instant::now()),
        }
    }
}

/// Start the speaker, if one is configured. One that cannot be opened is a warning: the room
/// goes on without it, and subscribed audio is drained undecoded.
fn open_speaker(
    settings: Option<&media::speaker::SpeakerSettings>,
) -> Option<media::speaker::Playback> {
    let settings = settings?;
    match media::speaker::Playback::start(settings) {
        Ok(playback) => Some(playback),
        Err(e) => {
            // The error names the device and what to check (`roomcast devices` for ALSA).
            tracing::warn!(
                "speaker {} not opened, so remote audio is not played: {e:#}. Everything else \
                 goes on; fix [speaker] device, or remove [speaker] to silence this",
                settings.device
            );
            None
        }
    }
}

impl Shell {
    /// Feed queued inputs and carry out every action, until both are drained.
    async fn step(&mut self, channels: &mut Channels) -> Option<u8> {
        loop {
            while let Some(action) = self.supervisor.poll_action() {
                tracing::debug!("supervisor: {action:?}");
                if let Some(code) = self.carry_out(action, channels).await {
                    return Some(code);
                }
            }
            let input = self.inputs.pop_front()?;
            tracing::debug!("input: {input:?}");
            self.supervisor.handle_input(input, Instant::now());
        }
    }

    fn refs(&self) -> SharedRefs {
        SharedRefs {
            state: self.shared.state.clone(),
            stats: self.shared.stats.clone(),
            events: self.shared.events.clone(),
            speaker: self.speaker.as_ref().map(|p| p.sink()),
        }
    }

    /// Say which path ICE selected (room event `media_path`, and the log): udp, turn/udp, tcp
    /// or turn/tls, with the pair's candidates.
    async fn report_media_path(
        &self,
        publisher: &Arc<dyn webrtc::peer_connection::PeerConnection>,
    ) {
        match peer::path::selected(publisher).await {
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

    fn emit(&self, event: RoomEvent) {
        let _ = self.shared.events.send(event);
    }

    /// One `media_stats` event per running capture: what it did since the last report.
    fn report_media_stats(&mut self, now: Instant) {
        let interval = now.duration_since(std::mem::replace(&mut self.stats_since, now));
        for (track, capture) in [Track::Video, Track::Audio]
            .into_iter()
            .filter_map(|t| Some((t, self.captures[t.index()].as_ref()?)))
        {
            let control = &capture.control;
            let bitrate = control.bitrate_target.load(Ordering::Relaxed);
            let timing = control.timing.take_report();
            self.emit(RoomEvent::MediaStats {
                kind: track_kind(track),
                sent_bps: media::bitrate::bits_per_second(timing.bytes_sent, interval),
                timing,
                bitrate_bps: (track == Track::Video && bitrate != 0).then_some(bitrate),
                frames_dropped: control.dropped.load(Ordering::Relaxed),
            });
        }
    }

    fn set_state(&self, new: ConnectionState) {
        let changed = {
            let mut s = self.shared.state.lock().unwrap();
            let changed = s.state != Some(new);
            s.state = Some(new);
            changed
        };
        if changed {
            self.emit(RoomEvent::ConnectionStateChanged { state: new });
        }
    }

    async fn carry_out(&mut self, action: Action, channels: &mut Channels) -> Option<u8> {
        match action {
            Action::OpenSignal { resume: false } => self.open_fresh(channels),
            Action::OpenSignal { resume: true } => self.open_resume(channels),
            Action::SyncState => self.send_sync_state().await,
            Action::IceRestart => self.ice_restart().await,
            Action::RebindSockets => self.rebind_sockets().await,
            Action::RebuildPeerConnections | Action::CloseConnection => {
                self.teardown(channels, true)
            }
            Action::PublishTracks => {
                if let Some(conn) = self.conn.as_mut() {
                    if let Err(e) = conn.request_tracks() {
                        tracing::error!("cannot publish: {e:#}");
                    }
                }
            }
            Action::RequestKeyframe => {
                if let Some(capture) = &self.captures[Track::Video.index()] {
                    capture.control.request_keyframe();
                }
            }
            Action::RestartTrack { track } => self.restart_track(track).await,
            Action::Emit(kind) => self.emit_kind(kind),
            Action::Notify(notice) => {
                if let Notice::Status(text) = &notice {
                    tracing::info!("status: {text}");
                }
                super::sdnotify::send(&notice);
            }
            Action::SetStatus(status) => self.set_status(status),
            Action::SendLeave => self.leave().await,
            Action::Exit(code) => {
                self.teardown(channels, false);
                // Dropping the playout thread stops and joins it (its wait wakes at once).
                self.speaker = None;
                return Some(code);
            }
        }
        None
    }

    /// `OpenSignal { resume: false }`: a fresh token, new PeerConnections, a new join.
    fn open_fresh(&mut self, channels: &mut Channels) {
        if self.conn.is_some() {
            self.teardown(channels, true);
        }
        channels.abort_attempt();
        let options = self.options.clone();
        let latest = self.latest_token.clone();
        let refs = self.refs();
        channels.attempt = Some(Attempt::Join(tokio::spawn(async move {
            let token = match &options.token_source {
                // Mint again, the cached refresh token, or token_url fetched again.
                Some(source) => source().await.map_err(JoinError::Other)?,
                None => latest.unwrap_or_else(|| options.token.clone()),
            };
            join(options, token, refs).await
        })));
    }

    /// `OpenSignal { resume: true }`: close the current WebSocket (no Leave) and resume.
    fn open_resume(&mut self, channels: &mut Channels) {
        channels.abort_attempt();
        channels.signal_rx = None;
        let Some(conn) = self.conn.as_mut() else {
            self.inputs.push_back(Input::JoinFailed {
                http_status: None,
                refused: false,
                detail: "nothing to resume".into(),
            });
            return;
        };
        conn.signal.close();
        conn.signal_open = false;
        self.shared.state.lock().unwrap().signal_alive = false;
        let settings = ResumeSettings {
            ping_interval: Duration::from_secs(conn.join.ping_interval.max(0) as u64),
            ping_timeout: Duration::from_secs(conn.join.ping_timeout.max(0) as u64),
        };
        let token = self
            .latest_token
            .clone()
            .unwrap_or_else(|| conn.token.clone());
        channels.attempt = Some(Attempt::Resume(tokio::spawn(resume(
            self.options.clone(),
            token,
            conn.path,
            conn.local_sid.clone(),
            settings,
        ))));
    }

    fn on_attempt(&mut self, outcome: AttemptOutcome, channels: &mut Channels) {
        match outcome {
            AttemptOutcome::Joined(Ok(joined)) => {
                let conn = joined.conn;
                {
                    let mut s = self.shared.state.lock().unwrap();
                    let room = conn.join.room.clone().unwrap_or_default();
                    let local = conn.join.participant.clone().unwrap_or_default();
                    s.room_name = room.name;
                    s.room_sid = room.sid;
                    s.local.sid = local.sid.clone();
                    s.local.identity = local.identity.clone();
                    s.local.name = local.name.clone();
                    s.signal_path = Some(conn.path);
                    s.signal_alive = true;
                }
                tracing::info!(
                    "joined room {:?} as {:?} ({}) over {:?}",
                    conn.join
                        .room
                        .as_ref()
                        .map(|r| r.name.as_str())
                        .unwrap_or(""),
                    conn.join
                        .participant
                        .as_ref()
                        .map(|p| p.identity.as_str())
                        .unwrap_or(""),
                    conn.local_sid,
                    conn.path
                );
                self.generation += 1;
                channels.signal_rx = Some(joined.signal_rx);
                channels.peer_rx = Some(joined.peer_rx);
                let participant_sid = conn.local_sid.clone();
                self.conn = Some(conn);
                if let Some(first) = self.first_join.take() {
                    let _ = first.send(Ok(()));
                }
                self.inputs
                    .push_back(Input::JoinSucceeded { participant_sid });
            }
            AttemptOutcome::Resumed(Ok(resumed)) => {
                let Some(conn) = self.conn.as_mut() else {
                    resumed.signal.close();
                    return;
                };
                tracing::info!("signalling resumed as {}", conn.local_sid);
                conn.signal = resumed.signal;
                conn.signal_open = true;
                self.shared.state.lock().unwrap().signal_alive = true;
                channels.signal_rx = Some(resumed.signal_rx);
                self.reconnect_response = Some(resumed.response);
                self.inputs.push_back(Input::ResumeSucceeded);
            }
            AttemptOutcome::Joined(Err(e)) => {
                tracing::warn!("join failed: {e}");
                let input = failure_input(&e, false);
                if let Some(first) = self.first_join.take() {
                    // The library caller asked to hear the first outcome and decide itself.
                    let _ = first.send(Err(e));
                    self.inputs.push_back(Input::Shutdown);
                    return;
                }
                self.inputs.push_back(input);
            }
            AttemptOutcome::Resumed(Err(e)) => {
                tracing::warn!("resume failed: {e}");
                self.inputs.push_back(failure_input(&e, true));
            }
        }
    }

    fn signal_closed(&mut self, detail: String) {
        tracing::warn!("{detail}");
        if let Some(conn) = self.conn.as_mut() {
            conn.signal_open = false;
        }
        self.shared.state.lock().unwrap().signal_alive = false;
        self.inputs.push_back(Input::SignalClosed { detail });
    }

    /// `SyncState`: the ReconnectResponse's ICE servers, then SyncState (before any ICE-restart
    /// offer, as the server expects).
    async fn send_sync_state(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Some(response) = self.reconnect_response.take() {
            if !response.ice_servers.is_empty() {
                // turns: URLs again through the local TURN/TLS relay (webrtc-rs has none).
                let servers = peer::turn_tls::localize(
                    &response.ice_servers,
                    self.options.ca_file.as_deref(),
                )
                .await;
                let config = peer::rtc_configuration(&servers, conn.force_relay);
                for transport in std::iter::once(&conn.publisher).chain(conn.subscriber.as_ref()) {
                    if let Err(e) = transport.pc.set_configuration(config.clone()).await {
                        tracing::warn!("cannot apply the resumed ICE servers: {e}");
                    }
                }
            }
        }
        let (answer, offer) = match &conn.subscriber {
            // Two PCs: the last subscriber answer we sent and the server offer it answered.
            Some(sub) => (
                description("answer", sub.pc.local_description().await),
                description("offer", sub.pc.remote_description().await),
            ),
            // One PC: the last answer received and the last offer sent on the publisher.
            None => (
                description("answer", conn.publisher.pc.remote_description().await),
                description("offer", conn.publisher.pc.local_description().await),
            ),
        };
        let sync = conn.sync_state(answer, offer);
        conn.signal
            .send(proto::signal_request::Message::SyncState(sync));
    }

    /// `IceRestart`: a publisher offer with new ICE credentials (the server re-offers the
    /// subscriber itself; `handle_session` answers it).
    async fn ice_restart(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.publisher.create_offer_with(true).await {
            Ok(sdp) => {
                tracing::info!("restarting ICE on the publisher");
                conn.ice_restarting = true;
                conn.send_offer(sdp);
            }
            Err(e) => {
                tracing::warn!("cannot create the ICE-restart offer: {e:#}");
                self.inputs.push_back(Input::PeerState {
                    pc: PeerConnectionKind::Publisher,
                    state: PeerConnectionState::Failed,
                });
            }
        }
    }

    /// `RebindSockets`: the PeerConnections bind the wildcard (or the loopback address that
    /// routes to a local server) and discard their local candidates on an ICE restart, which
    /// makes webrtc-rs bind again on the interfaces present then. Here we only check that the
    /// route to the server still needs the same kind of binding.
    async fn rebind_sockets(&mut self) {
        let Ok(base) = signalurl::ws_base(&self.options.url) else {
            return;
        };
        let addrs = peer::udp_bind_addrs(server_ip(&base).await);
        tracing::info!("ICE sockets rebind on the next restart: {addrs:?}");
    }

    /// Drop the current connection: Leave (when asked and the WebSocket is open), close the
    /// WebSocket and the PeerConnections (in the background, bounded), forget the local tracks,
    /// the mid map and the trickle queue. The capture pipelines stay.
    fn teardown(&mut self, channels: &mut Channels, leave: bool) {
        channels.abort_attempt();
        channels.signal_rx = None;
        channels.peer_rx = None;
        self.generation += 1;
        self.reconnect_response = None;
        if let Some(conn) = self.conn.take() {
            for p in &conn.tracks {
                if let Some(forwarder) = &p.forwarder {
                    forwarder.abort();
                }
            }
            let send_leave = leave && conn.signal_open && conn.signal.is_alive();
            let Conn {
                signal,
                publisher,
                subscriber,
                ..
            } = *conn;
            tokio::spawn(async move {
                if send_leave {
                    signal
                        .leave(proto::DisconnectReason::ClientInitiated, LEAVE_TIMEOUT)
                        .await;
                } else {
                    signal.close();
                }
                let close = async {
                    publisher.close().await;
                    if let Some(sub) = &subscriber {
                        sub.close().await;
                    }
                };
                let _ = tokio::time::timeout(PC_CLOSE_TIMEOUT, close).await;
            });
        }
        self.shared.stats.lock().unwrap().clear();
        let mut s = self.shared.state.lock().unwrap();
        s.local.tracks.clear();
        s.remotes.clear();
        s.signal_alive = false;
    }

    /// `SendLeave`: Leave{CLIENT_INITIATED} and close, waiting for it (bounded).
    async fn leave(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.signal_open {
            conn.signal
                .leave(proto::DisconnectReason::ClientInitiated, LEAVE_TIMEOUT)
                .await;
            conn.signal_open = false;
        }
        let close = async {
            conn.publisher.close().await;
            if let Some(sub) = &conn.subscriber {
                sub.close().await;
            }
        };
        let _ = tokio::time::timeout(PC_CLOSE_TIMEOUT, close).await;
        for capture in self.captures.iter().flatten() {
            capture.control.stop();
        }
    }

    fn set_status(&mut self, status: Status) {
        let state = match &status {
            Status::Stopped => ConnectionState::Disconnected,
            Status::Connecting => ConnectionState::Connecting,
            Status::Publishing => {
                self.ever_connected = true;
                ConnectionState::Connected
            }
            Status::Reconnecting => ConnectionState::Reconnecting,
            Status::WaitingForNetwork if self.ever_connected => ConnectionState::Reconnecting,
            Status::WaitingForNetwork => ConnectionState::Connecting,
            Status::NeedsAttention(supervisor_attention) => {
                use crate::supervisor::Attention;
                match supervisor_attention {
                    Attention::RemovedByServer { .. } => ConnectionState::Disconnected,
                    Attention::AuthRejected { .. } if self.ever_connected => {
                        ConnectionState::Reconnecting
                    }
                    Attention::AuthRejected { .. } => ConnectionState::Connecting,
                    Attention::TrackFailed { .. } | Attention::NoMedia => {
                        ConnectionState::Connected
                    }
                }
            }
        };
        self.shared.status.send_replace(status);
        self.set_state(state);
    }

    fn emit_kind(&mut self, kind: RoomEventKind) {
        match kind {
            RoomEventKind::Resuming => self.emit(RoomEvent::Resuming),
            RoomEventKind::Resumed => {
                // Requests queued while resuming go out now.
                if let Some(conn) = &self.conn {
                    conn.signal.release_requests();
                }
                self.emit(RoomEvent::Resumed);
            }
            RoomEventKind::Reconnecting => self.emit(RoomEvent::Reconnecting),
            RoomEventKind::Reconnected => self.emit(RoomEvent::Reconnected),
            RoomEventKind::ParticipantDisconnectedForAll => {
                let remotes: Vec<RemoteParticipant> = {
                    let mut s = self.shared.state.lock().unwrap();
                    let mut remotes: Vec<_> = s.remotes.drain().map(|(_, r)| r).collect();
                    remotes.sort_by(|a, b| a.identity.cmp(&b.identity));
                    remotes
                };
                for remote in remotes {
                    let mut sids: Vec<_> = remote.tracks.into_keys().collect();
                    sids.sort();
                    for track_sid in sids {
                        self.emit(RoomEvent::TrackUnpublished {
                            participant: remote.identity.clone(),
                            track_sid,
                        });
                    }
                    self.emit(RoomEvent::ParticipantDisconnected {
                        identity: remote.identity,
                        sid: remote.sid,
                    });
                }
            }
            RoomEventKind::LocalTrackUnpublishedForAll => {
                let tracks = std::mem::take(&mut self.shared.state.lock().unwrap().local.tracks);
                self.shared.stats.lock().unwrap().clear();
                for track in tracks {
                    self.emit(RoomEvent::LocalTrackUnpublished {
                        track_sid: track.sid,
                    });
                }
            }
            RoomEventKind::ParticipantConnectedForPresent => {
                if let Some(conn) = self.conn.as_mut() {
                    let present = conn.join.other_participants.clone();
                    conn.participants_update(present);
                }
            }
            RoomEventKind::LocalTrackPublished { track, track_sid } => {
                let cid = self
                    .conn
                    .as_ref()
                    .and_then(|c| c.tracks.iter().find(|p| p.which == track))
                    .map(|p| p.track.cid.clone())
                    .unwrap_or_default();
                self.emit(RoomEvent::LocalTrackPublished {
                    track_sid,
                    cid,
                    kind: track_kind(track),
                });
            }
            RoomEventKind::LocalTrackFailed { track, error } => {
                self.emit(RoomEvent::LocalTrackFailed {
                    kind: track_kind(track),
                    error,
                })
            }
            RoomEventKind::LocalTrackRecovered { track } => {
                // The other half of a hot-unplug: the failure was logged when the pipeline ended.
                tracing::info!(
                    "{track} track recovered: its device delivers frames again, on the same publication"
                );
                self.emit(RoomEvent::LocalTrackRecovered {
                    kind: track_kind(track),
                })
            }
            RoomEventKind::Disconnected { reason, by_server } => {
                let (kind, detail) = if by_server {
                    (
                        DisconnectKind::Removed,
                        format!(
                            "the server sent Leave {reason} with action DISCONNECT; not rejoining"
                        ),
                    )
                } else {
                    (DisconnectKind::Left, "we left the room".to_string())
                };
                {
                    let mut s = self.shared.state.lock().unwrap();
                    s.disconnect_reason = Some(reason.clone());
                    s.signal_alive = false;
                }
                if by_server {
                    tracing::warn!("{detail}");
                }
                self.set_state(ConnectionState::Disconnected);
                self.emit(RoomEvent::Disconnected {
                    reason,
                    kind,
                    detail,
                });
            }
        }
    }

    // ---- media ----------------------------------------------------------------------------

    /// Start sending every announced track once the publisher is connected, from the running
    /// capture (opened on first use).
    async fn start_media(&mut self) {
        let generation = self.generation;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !conn.publisher_connected {
            return;
        }
        for p in conn.tracks.iter_mut() {
            if !p.announced || p.started {
                continue;
            }
            let i = p.which.index();
            if self.captures[i].is_none() {
                match Capture::open(p.which, &self.options) {
                    Ok(capture) => self.captures[i] = Some(capture),
                    Err(e) => {
                        // A missing camera or microphone costs its own track only: it stays
                        // published and silent, the other goes on, and the supervisor retries it.
                        tracing::error!(
                            "{:?} track {}: not capturing: {e:#}",
                            p.settings_kind,
                            p.sid.as_deref().unwrap_or("")
                        );
                        p.started = true;
                        self.inputs.push_back(Input::MediaFailed {
                            track: p.which,
                            error: format!("{e:#}"),
                        });
                        continue;
                    }
                }
            }
            let Some(capture) = &self.captures[i] else {
                continue;
            };
            match forward(p, capture, generation, self.media_tx.clone()).await {
                Ok(()) => tracing::info!(
                    "{:?} track {} is live",
                    p.settings_kind,
                    p.sid.as_deref().unwrap_or("")
                ),
                Err(e) => tracing::error!("cannot start the {} track: {e:#}", p.which),
            }
        }
    }

    fn on_media_note(&mut self, note: MediaNote) {
        if note.generation != self.generation {
            return;
        }
        let i = note.track.index();
        match note.kind {
            MediaNoteKind::FirstFrame => {
                if std::mem::take(&mut self.recovering[i]) {
                    self.inputs
                        .push_back(Input::MediaRecovered { track: note.track });
                }
                self.inputs
                    .push_back(Input::MediaFlowing { track: note.track });
            }
            MediaNoteKind::PipelineEnded => {
                let error = self.captures[i]
                    .take()
                    .map(|c| c.error())
                    .unwrap_or_else(|| "the capture pipeline stopped".into());
                if let Some(p) = self
                    .conn
                    .as_mut()
                    .and_then(|c| c.tracks.iter_mut().find(|p| p.which == note.track))
                {
                    p.forwarder = None;
                }
                self.inputs.push_back(Input::MediaFailed {
                    track: note.track,
                    error,
                });
            }
        }
    }

    /// `RestartTrack`: open the capture again and feed the current track from it.
    async fn restart_track(&mut self, track: Track) {
        let i = track.index();
        self.captures[i] = None;
        match Capture::open(track, &self.options) {
            Ok(capture) => self.captures[i] = Some(capture),
            Err(e) => {
                self.inputs.push_back(Input::MediaFailed {
                    track,
                    error: format!("{e:#}"),
                });
                return;
            }
        }
        let generation = self.generation;
        let sending = self
            .conn
            .as_mut()
            .and_then(|c| c.tracks.iter_mut().find(|p| p.which == track && p.started));
        match (sending, &self.captures[i]) {
            (Some(p), Some(capture)) => {
                self.recovering[i] = true;
                if let Err(e) = forward(p, capture, generation, self.media_tx.clone()).await {
                    self.recovering[i] = false;
                    self.inputs.push_back(Input::MediaFailed {
                        track,
                        error: format!("{e:#}"),
                    });
                }
            }
            // Nothing to send on right now: the capture runs again, that is the recovery.
            _ => self.inputs.push_back(Input::MediaRecovered { track }),
        }
    }

    // ---- signalling and PeerConnection events -------------------------------------------------

    async fn handle_session(&mut self, event: SessionEvent) -> anyhow::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        match event {
            SessionEvent::Answer(answer) => {
                for (track, track_sid) in conn.on_answer(answer).await? {
                    self.inputs
                        .push_back(Input::TrackPublished { track, track_sid });
                }
                self.start_media().await;
            }
            SessionEvent::Offer(offer) => match (&conn.subscriber, conn.path) {
                (Some(sub), SignalPath::V0) => {
                    let sdp = sub.answer_offer(offer.sdp).await?;
                    conn.signal.send(proto::signal_request::Message::Answer(
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
                let transport = match (target, &conn.subscriber) {
                    (proto::SignalTarget::Subscriber, Some(sub)) if conn.path == SignalPath::V0 => {
                        sub
                    }
                    _ => &conn.publisher,
                };
                if let Err(e) = transport.add_remote_candidate(&candidate_init).await {
                    tracing::warn!("{e:#}");
                }
            }
            SessionEvent::TrackPublished(response) => conn.on_track_published(response).await?,
            SessionEvent::TrackUnpublished(response) => {
                conn.emit(RoomEvent::LocalTrackUnpublished {
                    track_sid: response.track_sid,
                });
            }
            SessionEvent::ParticipantUpdate(infos) => conn.participants_update(infos),
            SessionEvent::MediaSectionsRequirement(req) => {
                if conn.path == SignalPath::V1 {
                    conn.publisher
                        .add_receive_sections(req.num_audios as usize, req.num_videos as usize)
                        .await?;
                    conn.negotiate().await?;
                }
            }
            SessionEvent::TokenRefreshed(token) => {
                if let Some(store) = &self.options.on_token_refreshed {
                    store(&token);
                }
                self.latest_token = Some(token);
            }
            SessionEvent::Leave { reason, action } => {
                let reason = reason.as_str_name().to_string();
                tracing::warn!(
                    "the server sent Leave {reason} with action {}",
                    action.as_str_name()
                );
                conn.signal_open = false;
                self.inputs.push_back(Input::Leave {
                    action: leave_action(action),
                    reason,
                });
            }
            SessionEvent::PingTimeout => {
                tracing::warn!("no answer to ping_req within the server's ping_timeout");
                self.inputs.push_back(Input::PingTimeout);
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
            SessionEvent::RemoteMute(request) => conn.on_remote_mute(request),
            SessionEvent::Joined(_) | SessionEvent::Resumed(_) | SessionEvent::RoomUpdate(_) => {}
            SessionEvent::FirstMessageTimeout
            | SessionEvent::UnexpectedFirstMessage(_)
            | SessionEvent::Other(_) => {}
        }
        Ok(())
    }

    async fn handle_peer(&mut self, event: PeerEvent) -> anyhow::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        match event {
            PeerEvent::LocalCandidate {
                target,
                candidate_init,
            } => {
                conn.signal.send(proto::signal_request::Message::Trickle(
                    proto::TrickleRequest {
                        candidate_init,
                        target: target as i32,
                        r#final: false,
                    },
                ));
            }
            PeerEvent::ConnectionState { target, state } => {
                tracing::debug!("{target:?} PC {state}");
                let pc = pc_kind(conn.path, target);
                let mut newly_connected = None;
                if pc == PeerConnectionKind::Publisher {
                    conn.publisher_connected = state == RTCPeerConnectionState::Connected;
                    if conn.publisher_connected {
                        newly_connected = Some(conn.publisher.pc.clone());
                        conn.ice_restarting = false;
                    }
                }
                if let Some(publisher) = newly_connected {
                    self.report_media_path(&publisher).await;
                }
                if let Some(state) = pc_state(state) {
                    self.inputs.push_back(Input::PeerState { pc, state });
                }
                self.start_media().await;
            }
            PeerEvent::IceConnectionState { target, state } => {
                tracing::debug!("{target:?} ICE {state}");
                let restarted = matches!(
                    state,
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                );
                if restarted
                    && conn.ice_restarting
                    && !conn.offer_in_flight
                    && pc_kind(conn.path, target) == PeerConnectionKind::Publisher
                {
                    // The PeerConnection may never have left Connected: ICE says the path is back.
                    conn.ice_restarting = false;
                    self.inputs.push_back(Input::PeerState {
                        pc: PeerConnectionKind::Publisher,
                        state: PeerConnectionState::Connected,
                    });
                }
            }
            PeerEvent::DataChannel { target, channel } => {
                peer::watch_data_channel(target, channel, conn.peer_tx.clone())
            }
            PeerEvent::Track { track, .. } => conn.on_remote_track(track).await,
            PeerEvent::DataPacket { label, data, .. } => conn.on_data(&label, &data),
        }
        Ok(())
    }
}

/// Feed `p` from `capture`; its first frame and the pipeline's end come back as media notes.
async fn forward(
    p: &mut Publishing,
    capture: &Capture,
    generation: u64,
    notes: mpsc::Sender<MediaNote>,
) -> anyhow::Result<()> {
    let track = p.which;
    let first = notes.clone();
    let handle = p
        .track
        .forward(
            capture.samples.clone(),
            capture.control.clone(),
            move || {
                let _ = first.try_send(MediaNote {
                    generation,
                    track,
                    kind: MediaNoteKind::FirstFrame,
                });
            },
        )
        .await?;
    p.started = true;
    p.forwarder = Some(handle.abort_handle());
    tokio::spawn(async move {
        if let Ok(ForwardEnd::PipelineEnded) = handle.await {
            let _ = notes
                .send(MediaNote {
                    generation,
                    track,
                    kind: MediaNoteKind::PipelineEnded,
                })
                .await;
        }
    });
    Ok(())
}
