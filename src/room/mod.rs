//! The public Room API (Room, LocalParticipant, RemoteParticipants, RoomEvent) and the task that
//! keeps the room connected.
//!
//! One task owns the connection supervisor, the signalling, the PeerConnections, the local
//! tracks and the capture pipelines, and handles everything in order, so no state is shared
//! except the snapshot [`Room`] reads and the [`Status`] watch.
pub mod cli;
mod clockwatch;
mod engine;
mod netwatch;
pub mod sdnotify;
pub mod signalurl;

pub use crate::supervisor::Status;

use crate::media::{AudioSettings, VideoSettings};
use livekit_protocol as proto;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub use signalurl::{PathChoice, SignalPath};

/// Where refreshed tokens go (the token cache).
pub type TokenSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A fresh token for every fresh join (mint again, the cached refresh token, or `token_url`
/// fetched again).
pub type TokenSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>> + Send + Sync>;

/// Everything needed to join.
#[derive(Clone)]
pub struct RoomOptions {
    /// ws://, wss://, http:// or https:// server URL.
    pub url: String,
    pub token: String,
    pub signal_path: PathChoice,
    pub auto_subscribe: bool,
    pub ca_file: Option<PathBuf>,
    /// Relay candidates only (config `force_relay`); the server can also ask for it.
    pub force_relay: bool,
    pub video: VideoSettings,
    /// Where congestion feedback may move the video bitrate; `None` derives it from
    /// `video.bitrate` ([`VideoSettings::bitrate_limits`]).
    pub video_bitrate_limits: Option<crate::media::pipeline::BitrateLimits>,
    pub audio: AudioSettings,
    /// Play subscribed remote audio here (`[speaker]`); None: subscribed media is drained
    /// without decoding.
    pub speaker: Option<crate::media::speaker::SpeakerSettings>,
    /// Upgrade timeout.
    pub connect_timeout: Duration,
    /// JoinResponse timeout after the upgrade.
    pub join_timeout: Duration,
    /// Called with every refresh_token the server sends (the token cache).
    pub on_token_refreshed: Option<TokenSink>,
    /// Asked for a token before every fresh join (first join and full reconnects). None: `token`,
    /// or the newest refresh_token the server sent.
    pub token_source: Option<TokenSource>,
    /// Send WATCHDOG=1 this often (WatchdogSec/2). None: no watchdog.
    pub watchdog_interval: Option<Duration>,
    /// Watch netlink for link, address and default-route changes (main table, not lo) and
    /// resume on the new path at once; and watch the wall clock being set (time sync), which
    /// retries a refused token at once.
    pub watch_network: bool,
    /// Emit [`RoomEvent::MediaStats`] this often; None: never.
    pub stats_interval: Option<Duration>,
}

impl RoomOptions {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            signal_path: PathChoice::Auto,
            auto_subscribe: true,
            ca_file: None,
            force_relay: false,
            video: VideoSettings::default(),
            video_bitrate_limits: None,
            audio: AudioSettings::default(),
            speaker: None,
            connect_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(5),
            on_token_refreshed: None,
            token_source: None,
            watchdog_interval: None,
            watch_network: false,
            stats_interval: None,
        }
    }
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Connecting,
    Connected,
    Reconnecting,
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

impl TrackKind {
    fn from_proto(t: i32) -> Self {
        if t == proto::TrackType::Video as i32 {
            TrackKind::Video
        } else {
            TrackKind::Audio
        }
    }
}

/// A remote participant's published track.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteTrackPublication {
    pub sid: String,
    pub name: String,
    pub kind: TrackKind,
    pub mime_type: String,
    pub subscribed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoteParticipant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub tracks: HashMap<String, RemoteTrackPublication>,
}

/// One of our own tracks, once the server accepted it.
#[derive(Debug, Clone, Serialize)]
pub struct LocalTrackPublication {
    pub sid: String,
    pub cid: String,
    pub kind: TrackKind,
    pub mime_type: String,
    /// Encoded frames written to the wire so far.
    pub frames_sent: u64,
    /// The keyframes among `frames_sent`.
    pub keyframes_sent: u64,
    pub bytes_sent: u64,
    pub keyframe_requests: u64,
    /// Encoded frames dropped on the device because the network fell behind (the oldest go
    /// first; a video drop also asks the encoder for an IDR).
    pub frames_dropped: u64,
    /// Muted tracks send no media (the server can mute us: RoomService.MutePublishedTrack).
    pub muted: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LocalParticipant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<LocalTrackPublication>,
}

/// What happened in the room. Serialised as `{"event": "<snake_case name>", ...}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoomEvent {
    ParticipantConnected {
        identity: String,
        sid: String,
    },
    ParticipantDisconnected {
        identity: String,
        sid: String,
    },
    TrackPublished {
        participant: String,
        track_sid: String,
        kind: TrackKind,
        mime_type: String,
    },
    TrackUnpublished {
        participant: String,
        track_sid: String,
    },
    TrackSubscribed {
        participant: String,
        track_sid: String,
        kind: TrackKind,
    },
    TrackUnsubscribed {
        participant: String,
        track_sid: String,
    },
    LocalTrackPublished {
        track_sid: String,
        cid: String,
        kind: TrackKind,
    },
    LocalTrackUnpublished {
        track_sid: String,
    },
    /// A track stopped sending media. For our own tracks (`participant` is our identity) this
    /// follows a mute by the server; we confirm it with MuteTrackRequest.
    TrackMuted {
        participant: String,
        track_sid: String,
    },
    TrackUnmuted {
        participant: String,
        track_sid: String,
    },
    DataReceived {
        participant: String,
        topic: Option<String>,
        payload: Vec<u8>,
        reliable: bool,
    },
    ConnectionStateChanged {
        state: ConnectionState,
    },
    /// The media path ICE selected, once the publisher PC is connected: `path` is `udp`,
    /// `turn/udp`, `tcp` or `turn/tls`; `local`/`remote` are the pair's candidates
    /// (`<type> <protocol> <address>:<port>`).
    MediaPath {
        path: String,
        local: String,
        remote: String,
    },
    /// A connection that worked broke; resuming the same session (same participant sid).
    Resuming,
    /// The resume completed: same participant, same tracks.
    Resumed,
    /// Full reconnect: after ParticipantDisconnected for the others and LocalTrackUnpublished,
    /// before rejoining as a new participant with a fresh token.
    Reconnecting,
    /// Full reconnect: rejoined; ParticipantConnected for everyone present and
    /// LocalTrackPublished for the republished tracks follow.
    Reconnected,
    /// A local track's capture or encoder failed; it is restarted with backoff, the other track
    /// goes on.
    LocalTrackFailed {
        kind: TrackKind,
        error: String,
    },
    /// A failed local track delivers frames again.
    LocalTrackRecovered {
        kind: TrackKind,
    },
    /// Every `stats_interval` seconds, per running capture pipeline: its frames, capture → RTP
    /// latency and encoder CPU time over the interval since the last report (the benchmark
    /// reads these).
    MediaStats {
        kind: TrackKind,
        #[serde(flatten)]
        timing: crate::media::timing::TimingReport,
        /// Video: the bitrate congestion control last asked the encoder for, bit/s (`null`
        /// before any feedback).
        #[serde(skip_serializing_if = "Option::is_none")]
        bitrate_bps: Option<u32>,
        /// The encoded payload actually sent over the interval, bit/s: next to `bitrate_bps`,
        /// how closely the encoder follows its target (a still picture sends far less).
        sent_bps: u64,
        /// Encoded frames dropped because the network fell behind, since the capture started.
        frames_dropped: u64,
    },
    Disconnected {
        /// The DisconnectReason name (e.g. DUPLICATE_IDENTITY, SIGNAL_CLOSE).
        reason: String,
        kind: DisconnectKind,
        /// What happened, in words (for logs and STATUS=).
        detail: String,
    },
}

/// Why the room ended, as far as what to do next goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectKind {
    /// The server sent Leave with action DISCONNECT (duplicate identity, removed, room deleted):
    /// joining again would be wrong.
    Removed,
    /// We left (close / SIGTERM).
    Left,
}

/// What the room knows right now.
#[derive(Debug, Default)]
pub(crate) struct RoomState {
    pub room_name: String,
    pub room_sid: String,
    pub local: LocalParticipant,
    pub remotes: HashMap<String, RemoteParticipant>,
    pub state: Option<ConnectionState>,
    pub signal_path: Option<SignalPath>,
    pub disconnect_reason: Option<String>,
    pub signal_alive: bool,
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Connect(#[from] crate::signal::ws::ConnectError),
    #[error("the server ended the join: {reason} (action {action})")]
    Refused { reason: String, action: String },
    #[error("no JoinResponse within {0:?} after the WebSocket opened")]
    JoinTimeout(Duration),
    #[error("the signalling connection closed before the join completed: {0}")]
    Closed(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl JoinError {
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, JoinError::Connect(e) if e.is_auth_failure())
    }
}

pub(crate) enum Command {
    Close(oneshot::Sender<()>),
}

/// A room kept connected: after the join, a lost connection is resumed or rejoined by the
/// connection supervisor (see `crate::supervisor`) until [`Room::close`].
#[derive(Clone)]
pub struct Room {
    state: Arc<Mutex<RoomState>>,
    stats: Arc<Mutex<Vec<engine::TrackStatsRef>>>,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<u8>>>>,
}

impl Room {
    /// Join: open signalling (v1 with v0 fallback unless forced), wait for JoinResponse, then
    /// publish the configured tracks in the background. LocalTrackPublished events follow.
    /// A first join that fails is returned as the error (no retry); once joined, the room
    /// resumes or rejoins on its own.
    pub async fn connect(
        options: RoomOptions,
    ) -> Result<(Room, mpsc::UnboundedReceiver<RoomEvent>), JoinError> {
        let (first_tx, first_rx) = oneshot::channel();
        let (room, events) = Room::spawn(options, Some(first_tx));
        match first_rx.await {
            Ok(Ok(())) => Ok((room, events)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(JoinError::Closed("the room task ended".into())),
        }
    }

    /// Start the room and return at once: the first join is retried with backoff for as long
    /// as it takes, and nothing network-related ever ends the room (what `roomcast run` uses).
    pub fn start(options: RoomOptions) -> (Room, mpsc::UnboundedReceiver<RoomEvent>) {
        Room::spawn(options, None)
    }

    fn spawn(
        options: RoomOptions,
        first_join: Option<engine::FirstJoin>,
    ) -> (Room, mpsc::UnboundedReceiver<RoomEvent>) {
        let state = Arc::new(Mutex::new(RoomState::default()));
        let stats = Arc::new(Mutex::new(Vec::new()));
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Status::Stopped);
        let shared = engine::Shared {
            state: state.clone(),
            stats: stats.clone(),
            events: event_tx,
            status: status_tx,
        };
        let task = tokio::spawn(engine::run(options, shared, command_rx, first_join));
        (
            Room {
                state,
                stats,
                commands: command_tx,
                status: status_rx,
                task: Arc::new(Mutex::new(Some(task))),
            },
            event_rx,
        )
    }

    /// What the status LEDs show, kept current by the supervisor.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    pub fn name(&self) -> String {
        self.state.lock().unwrap().room_name.clone()
    }

    pub fn signal_path(&self) -> Option<SignalPath> {
        self.state.lock().unwrap().signal_path
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.state
            .lock()
            .unwrap()
            .state
            .unwrap_or(ConnectionState::Connecting)
    }

    /// Why the room disconnected, once it has.
    pub fn disconnect_reason(&self) -> Option<String> {
        self.state.lock().unwrap().disconnect_reason.clone()
    }

    pub fn local_participant(&self) -> LocalParticipant {
        let mut local = self.state.lock().unwrap().local.clone();
        let stats = self.stats.lock().unwrap();
        for track in &mut local.tracks {
            if let Some(s) = stats.iter().find(|s| s.cid == track.cid) {
                // Keyframes first: then frames_sent never lags the keyframes it includes.
                track.keyframes_sent = s
                    .stats
                    .keyframes_sent
                    .load(std::sync::atomic::Ordering::Relaxed);
                track.frames_sent = s
                    .stats
                    .frames_sent
                    .load(std::sync::atomic::Ordering::Relaxed);
                track.bytes_sent = s
                    .stats
                    .bytes_sent
                    .load(std::sync::atomic::Ordering::Relaxed);
                track.keyframe_requests = s
                    .stats
                    .keyframe_requests
                    .load(std::sync::atomic::Ordering::Relaxed);
                track.frames_dropped = s
                    .stats
                    .frames_dropped
                    .load(std::sync::atomic::Ordering::Relaxed);
            }
        }
        local
    }

    /// Remote participants by identity.
    pub fn remote_participants(&self) -> HashMap<String, RemoteParticipant> {
        self.state.lock().unwrap().remotes.clone()
    }

    /// Leave: Leave{CLIENT_INITIATED}, WebSocket close 1000, PCs closed. Returns when done
    /// (bounded by about 600 ms even if the server does not answer).
    pub async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.commands.send(Command::Close(done_tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(900), done_rx).await;
        }
    }

    /// Wait until the room task has ended (after [`Room::close`]); its exit code.
    pub async fn closed(&self) -> u8 {
        let task = self.task.lock().unwrap().take();
        match task {
            Some(task) => task.await.unwrap_or(1),
            None => 0,
        }
    }
}
