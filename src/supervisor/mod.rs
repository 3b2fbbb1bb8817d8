//! The connection supervisor: every decision about the connection's lifecycle, as a pure state
//! machine (sans-IO, in the way of str0m's `Rtc` and quinn-proto's `Connection`).
//!
//! It owns the first join and its retries, resume, escalation to a full reconnect, backoff, the
//! reaction to network changes, server Leaves and media failures, READY/STATUS/WATCHDOG, and the
//! status the LEDs show. It never gives up: the only `Exit` it asks for follows `Shutdown`.
//!
//! It does no IO: no sockets, no tasks, no clock, no randomness of its own. Time is the `now`
//! passed in; jitter comes from the seed given to [`Supervisor::new`]. So every path runs in a
//! unit test with simulated time, over simulated days, in milliseconds (see `tests.rs`).
//!
//! # Driving it (the async shell's loop)
//!
//! ```text
//! let mut supervisor = Supervisor::new(config, Instant::now(), seed);
//! supervisor.handle_input(Input::Start, Instant::now());
//! loop {
//!     while let Some(action) = supervisor.poll_action() {
//!         carry_out(action);                 // open signalling, ICE restart, emit an event, …
//!     }
//!     let wake = supervisor.poll_timeout();  // None: nothing timed is pending
//!     select! {
//!         input = next_input()     => supervisor.handle_input(input, Instant::now()),
//!         _ = sleep_until(wake)    => supervisor.handle_timeout(Instant::now()),
//!     }
//! }
//! ```
//!
//! - Drain `poll_action` after every `handle_*` call, in order: the order is part of the contract
//!   (the seven steps of a full reconnect, SendLeave before Stopping, …).
//! - Carry an action out and report what came of it as a later [`Input`] (an `OpenSignal` ends in
//!   `JoinSucceeded`, `ResumeSucceeded`, `JoinFailed`, `Leave` or `ResumeRejected`). Actions do
//!   not block the loop: a join runs as a task whose outcome comes back as an input, and a newer
//!   `OpenSignal` supersedes (aborts) one still in flight.
//! - Drop inputs from connections the supervisor already discarded (`RebuildPeerConnections`,
//!   `CloseConnection`, a superseded `OpenSignal`): it takes each input as news about the
//!   current connection.
//! - Call `handle_timeout` at or after `poll_timeout`; calling it early or twice is harmless.
//!
//! # The decisions, in short
//!
//! - First join: at once, then [`BackoffPolicy::CONNECTION`] for as long as it takes.
//! - A connection that worked and broke (WebSocket closed, ping timeout, PeerConnection failed
//!   or disconnected for `pc_disconnected_grace`, Leave RESUME, a default-route or address
//!   change) is resumed: `OpenSignal { resume: true }`, then `SyncState`, then `IceRestart` only
//!   when the media path is suspect (an ICE restart cuts a path that still works). A network
//!   change or a down PeerConnection also asks for `RebindSockets` first.
//! - The resume escalates to a full reconnect when the server answers it with an HTTP error,
//!   Leave RECONNECT or STATE_MISMATCH, when the ICE restart does not connect within
//!   `resume_timeout`, or when the server stays unreachable past `resume_window`. A full
//!   reconnect goes in LiveKit's documented order: ParticipantDisconnected, LocalTrackUnpublished,
//!   Reconnecting, rejoin with a fresh token, Reconnected, ParticipantConnected, republish with
//!   LocalTrackPublished, then a keyframe as soon as the new publisher connects.
//! - A server that refuses connections (its host answers with a TCP reset, or a proxy with
//!   502-504) is restarting: it is polled every [`SERVER_RESTART_POLL`] for up to
//!   [`SERVER_RESTART_WINDOW`] instead of backing off, and when it answers that it no longer
//!   knows us, the full reconnect's join goes out at once.
//! - 401/403 retry in minutes (`auth_retry`), or at once when the clock jumps. Leave DISCONNECT
//!   never rejoins unless `rejoin_after_removal` is set. Nothing network-related ever exits.
//! - READY=1 once media first flows; WATCHDOG=1 every `watchdog_interval` from `handle_timeout`,
//!   in every state but Stopped; STATUS= on every change, saying why and when the next try is.
pub mod backoff;
#[cfg(test)]
mod tests;

pub use backoff::{Backoff, BackoffPolicy, SplitMix64};

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// At most this many actions wait in the queue. A shell that drains after every call never holds
/// more than about a dozen; on overflow superseded ones (SetStatus, STATUS=, WATCHDOG=1) go first.
pub const ACTION_QUEUE_CAP: usize = 64;

/// A server Leave or a failed-resume escalation retries at once, at most this many times within
/// [`URGENT_WINDOW`]; beyond that it waits its turn in the backoff, so a server that keeps saying
/// RECONNECT cannot spin us. A window, not a count per failure streak: a streak can outlive
/// many separate incidents (each shorter than `stable_after`), and a restarted server must not
/// wait seconds because an earlier, unrelated restart used the budget up.
const URGENT_RETRIES: usize = 3;
const URGENT_WINDOW: Duration = Duration::from_secs(10);

/// While the server's host answers "connection refused" (or a proxy in front of it 502/503/504),
/// retry about this often (±[`SERVER_RESTART_JITTER`]) instead of backing off: the server is
/// being restarted, and the backoff's next step (up to 2 s) would land long after it is back.
/// Refused attempts cost the server one SYN and one RST. The fast polling lasts
/// [`SERVER_RESTART_WINDOW`] from the first refusal; a server down longer than that is not
/// restarting, and the ordinary backoff takes over.
pub const SERVER_RESTART_POLL: Duration = Duration::from_millis(200);
pub const SERVER_RESTART_JITTER: Duration = Duration::from_millis(50);
pub const SERVER_RESTART_WINDOW: Duration = Duration::from_secs(60);

/// One of the two media tracks a board publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

impl Track {
    /// 0 for video, 1 for audio: for per-track arrays.
    pub fn index(self) -> usize {
        match self {
            Track::Video => 0,
            Track::Audio => 1,
        }
    }

    fn other(self) -> Track {
        match self {
            Track::Video => Track::Audio,
            Track::Audio => Track::Video,
        }
    }
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Track::Video => "video",
            Track::Audio => "audio",
        })
    }
}

/// Which tracks the config publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackSet {
    pub video: bool,
    pub audio: bool,
}

impl TrackSet {
    pub fn is_empty(&self) -> bool {
        !self.video && !self.audio
    }

    pub fn contains(&self, track: Track) -> bool {
        match track {
            Track::Video => self.video,
            Track::Audio => self.audio,
        }
    }
}

/// Which PeerConnection a state change is about. On the v1 path (one PC) only the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerConnectionKind {
    Publisher,
    Subscriber,
}

/// RTCPeerConnectionState, as far as the supervisor cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerConnectionState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// What a netlink message said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkChangeKind {
    LinkUp,
    LinkDown,
    AddressAdded,
    AddressRemoved,
    /// The default route now goes through another interface or gateway (or appeared/vanished).
    DefaultRouteChanged,
}

impl NetworkChangeKind {
    /// The path our packets take may be gone: rebind and resume.
    fn may_break_the_path(self) -> bool {
        matches!(
            self,
            NetworkChangeKind::LinkDown
                | NetworkChangeKind::AddressRemoved
                | NetworkChangeKind::DefaultRouteChanged
        )
    }

    /// A new way out may exist: a waiting retry goes now.
    fn may_bring_the_network_up(self) -> bool {
        matches!(
            self,
            NetworkChangeKind::LinkUp
                | NetworkChangeKind::AddressAdded
                | NetworkChangeKind::DefaultRouteChanged
        )
    }
}

/// LeaveRequest.action from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveAction {
    /// Stop: duplicate identity, removed by an admin, room deleted. Never rejoin on our own.
    Disconnect,
    /// Resume the same session (reconnect=1).
    Resume,
    /// Join again as a new session.
    Reconnect,
}

/// What happened, as the shell saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin: the first join.
    Start,
    /// A netlink link, address or route change. `has_default_route`: whether a default route
    /// exists after it. Report only changes that matter (not a container bridge's addresses).
    NetworkChanged {
        kind: NetworkChangeKind,
        has_default_route: bool,
    },
    /// `OpenSignal { resume: false }` got its JoinResponse.
    JoinSucceeded { participant_sid: String },
    /// `OpenSignal { resume: true }` got its ReconnectResponse (or any non-Leave first message).
    ResumeSucceeded,
    /// The `OpenSignal` attempt in flight failed before its first message. `http_status`: the
    /// upgrade's HTTP status; None when the server was not reached or did not answer in time.
    JoinFailed {
        http_status: Option<u16>,
        /// The server's host answered with a TCP reset: nothing listens on the port (the server
        /// is restarting). See [`SERVER_RESTART_POLL`].
        refused: bool,
        detail: String,
    },
    /// The signalling WebSocket closed or errored after the first message.
    SignalClosed { detail: String },
    /// No message from the server within its ping_timeout.
    PingTimeout,
    /// A PeerConnection changed state. After an `IceRestart`, report `Connected` once the
    /// restarted ICE agent has a path again, even if the state never left Connected.
    PeerState {
        pc: PeerConnectionKind,
        state: PeerConnectionState,
    },
    /// The server sent LeaveRequest (at any time, also as an attempt's first message). `reason`
    /// is the DisconnectReason name, e.g. DUPLICATE_IDENTITY.
    Leave { action: LeaveAction, reason: String },
    /// The server refused a resume: Leave{STATE_MISMATCH, RECONNECT} as the first message, or a
    /// failed SyncState. Same effect as `Leave { action: Reconnect }`.
    ResumeRejected { reason: String },
    /// The server accepted a local track and the answer covering it is applied.
    TrackPublished { track: Track, track_sid: String },
    /// The first encoded frame of a track went out on a connected publisher since the track
    /// was (re)published.
    MediaFlowing { track: Track },
    /// A track's capture or encoder failed (or stalled).
    MediaFailed { track: Track, error: String },
    /// A restarted track delivers frames again.
    MediaRecovered { track: Track },
    /// The wall clock jumped (time sync on a board without an RTC): tokens minted now are valid.
    ClockJumped,
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// Room events the supervisor decides; the shell turns each into `RoomEvent`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEventKind {
    /// A resume began (the JS SDK's SignalReconnecting). Followed by `Resumed`, or superseded by
    /// a full reconnect's steps.
    Resuming,
    /// The resume completed: same participant sid, same tracks.
    Resumed,
    /// Full reconnect step 3.
    Reconnecting,
    /// Full reconnect step 5: rejoined as a new participant.
    Reconnected,
    /// Full reconnect step 1 (and on removal): ParticipantDisconnected for every remote
    /// participant known, which are then forgotten.
    ParticipantDisconnectedForAll,
    /// Full reconnect step 2 (and on removal): LocalTrackUnpublished for every local
    /// publication, which are then forgotten (the capture pipelines stay).
    LocalTrackUnpublishedForAll,
    /// Full reconnect step 6, and after every join: ParticipantConnected for everyone in the
    /// JoinResponse.
    ParticipantConnectedForPresent,
    /// Full reconnect step 7, and after every join: one of our tracks is published.
    LocalTrackPublished { track: Track, track_sid: String },
    /// A track's capture or encoder failed; it is being restarted, the other track goes on.
    LocalTrackFailed { track: Track, error: String },
    /// A failed track delivers frames again.
    LocalTrackRecovered { track: Track },
    /// The room is over: removed by the server (`by_server`), or we left (CLIENT_INITIATED).
    Disconnected { reason: String, by_server: bool },
}

/// A line for systemd (sd_notify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
}

/// Why the device needs someone to look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attention {
    /// Leave DISCONNECT (duplicate identity, removed, room deleted): not rejoining on our own.
    RemovedByServer { reason: String },
    /// The server refuses the token (401/403); retrying slowly.
    AuthRejected { http_status: u16 },
    /// A track's capture or encoder failed and is being restarted.
    TrackFailed { track: Track },
    /// Connected, but no media has flowed within `media_start_timeout`.
    NoMedia,
}

/// What the status LEDs show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not started, or stopped.
    Stopped,
    /// Joining (first join), or joined and waiting for media.
    Connecting,
    /// Not connected, and no default route to try over.
    WaitingForNetwork,
    /// Connected and media flowing.
    Publishing,
    /// Lost a connection that worked: resuming or reconnecting.
    Reconnecting,
    NeedsAttention(Attention),
}

/// What the shell should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open signalling. `resume: false`: obtain a fresh token first (mint again, the latest
    /// refresh token, or fetch `token_url` again), build new PeerConnections as a first join does,
    /// and join. `resume: true`: close the current WebSocket if still open (no Leave), open a new
    /// one with reconnect=1 and the participant sid (v1: `join_request.reconnect`), with the
    /// latest token, holding queued requests. Supersedes an attempt still in flight.
    OpenSignal {
        resume: bool,
    },
    /// After a resume: apply the ReconnectResponse's ICE servers and send SyncState.
    SyncState,
    /// ICE-restart the publisher (offer with iceRestart); answer the subscriber's re-offer.
    IceRestart,
    /// Rebind the ICE UDP sockets on the current interfaces before the next ICE restart.
    RebindSockets,
    /// Full reconnect: close the old signalling (Leave first if it is still open) and both
    /// PeerConnections, drop the local tracks, keep the capture pipelines running. The next
    /// `OpenSignal { resume: false }` builds new ones.
    RebuildPeerConnections,
    /// Removed: close signalling and both PeerConnections; nothing follows unless a hold-off
    /// rejoin is configured.
    CloseConnection,
    /// Publish (after a join) or republish (after a full reconnect) every configured track on
    /// the new PeerConnections, from the same capture pipelines.
    PublishTracks,
    /// Ask the video encoder for a keyframe now.
    RequestKeyframe,
    /// Restart a failed track's capture and encoder; report `MediaRecovered` or `MediaFailed`.
    RestartTrack {
        track: Track,
    },
    Emit(RoomEventKind),
    Notify(Notice),
    SetStatus(Status),
    /// Send Leave{CLIENT_INITIATED} on the open signalling and close it (bounded, ~600 ms).
    SendLeave,
    /// Exit the process with this code. Only after `Shutdown`.
    Exit(u8),
}

/// Knobs, with the defaults [`SupervisorConfig::new`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// What the config publishes (READY waits for media when not empty).
    pub tracks: TrackSet,
    /// Joins and resumes. Default [`BackoffPolicy::CONNECTION`].
    pub backoff: BackoffPolicy,
    /// Track restarts. Default [`BackoffPolicy::TRACK_RESTART`].
    pub track_restart_backoff: BackoffPolicy,
    /// After HTTP 401/403: retry this slowly (±10 %). Default 5 min.
    pub auth_retry: Duration,
    /// A connection or track that worked this long before failing starts a new backoff streak
    /// (first retry immediate); one that fails sooner continues its streak. Default 30 s.
    pub stable_after: Duration,
    /// An `OpenSignal` without any answer by then counts as failed (a safety net: the shell's own
    /// connect and join timeouts should fire first). Default 20 s.
    pub open_timeout: Duration,
    /// From JoinSucceeded to the publisher PeerConnection connected. Default 15 s.
    pub connect_timeout: Duration,
    /// From ResumeSucceeded to the publisher connected again after the ICE restart; then the
    /// resume has failed and a full reconnect follows. Default 10 s.
    pub resume_timeout: Duration,
    /// How long after a loss unreachable-server failures keep retrying the resume before a full
    /// reconnect. The server keeps a participant whose ICE failed about 15 + 5 s. Default 20 s.
    pub resume_window: Duration,
    /// A PeerConnection Disconnected this long (without coming back) starts a resume; Failed
    /// starts one at once. Default 2 s.
    pub pc_disconnected_grace: Duration,
    /// netlink sends bursts (address removed, link down, route changed): act this long after the
    /// first message of a burst. Zero acts on each message at once. Default 20 ms.
    pub network_settle: Duration,
    /// Connected with tracks configured, but no media within this: NeedsAttention(NoMedia).
    /// Default 15 s.
    pub media_start_timeout: Duration,
    /// After Leave DISCONNECT, rejoin after this long (None: never on our own). Default None.
    pub rejoin_after_removal: Option<Duration>,
    /// Send WATCHDOG=1 this often (WatchdogSec/2); None: no watchdog. Default None.
    pub watchdog_interval: Option<Duration>,
    /// The wall clock is trusted (RTC or time already synced). False on a board without an RTC
    /// before time sync: a 401 then waits for `ClockJumped`. Default true.
    pub clock_synced: bool,
}

impl SupervisorConfig {
    pub fn new(tracks: TrackSet) -> Self {
        Self {
            tracks,
            backoff: BackoffPolicy::CONNECTION,
            track_restart_backoff: BackoffPolicy::TRACK_RESTART,
            auth_retry: Duration::from_secs(300),
            stable_after: Duration::from_secs(30),
            open_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(15),
            resume_timeout: Duration::from_secs(10),
            resume_window: Duration::from_secs(20),
            pc_disconnected_grace: Duration::from_secs(2),
            network_settle: Duration::from_millis(20),
            media_start_timeout: Duration::from_secs(15),
            rejoin_after_removal: None,
            watchdog_interval: None,
            clock_synced: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptKind {
    /// A fresh join: new participant, new PeerConnections.
    Join,
    /// Resume the current participant.
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before Start.
    Idle,
    /// Backing off until `at`.
    Waiting { attempt: AttemptKind, at: Instant },
    /// OpenSignal issued; waiting for its outcome.
    Opening {
        attempt: AttemptKind,
        deadline: Instant,
        /// Issued while there was no default route: a route coming up supersedes it.
        without_route: bool,
    },
    /// A session is joined. `connect_deadline`: Some until the publisher first connects.
    Joined { connect_deadline: Option<Instant> },
    /// Resumed signalling, ICE restart in flight: waiting for the publisher.
    IceRestarting { deadline: Instant },
    /// Leave DISCONNECT: idle, unless a hold-off rejoin is due at `rejoin_at`.
    Removed { rejoin_at: Option<Instant> },
    /// After Shutdown: nothing more.
    Stopped,
}

/// The participant we joined as.
#[derive(Debug, Clone)]
struct Session {
    participant_sid: String,
    /// When the publisher (last) connected: first connection or completed resume.
    established_at: Option<Instant>,
    /// A signalling WebSocket of this session is open (a Leave can go out on it).
    signal_open: bool,
}

/// A resume in progress.
#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    /// The network path may be gone (network change, PC disconnected/failed, server-side ICE
    /// failure): rebind the sockets and ICE-restart.
    path_suspect: bool,
}

#[derive(Debug, Clone, Default)]
struct PendingNetwork {
    settle_at: Option<Instant>,
    path_changed: bool,
    came_up: bool,
}

#[derive(Debug, Clone)]
struct TrackHealth {
    failed: Option<String>,
    restart_at: Option<Instant>,
    healthy_since: Option<Instant>,
    backoff: Backoff,
}

/// The connection supervisor. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorConfig,
    phase: Phase,
    session: Option<Session>,
    outage: Option<Outage>,
    /// Full reconnect steps 1–3 went out; step 5 (Reconnected) is due at the next join.
    reconnecting_announced: bool,
    /// The publisher connected at least once since Start (Reconnecting rather than Connecting).
    ever_connected: bool,
    /// Consecutive losses of connections that had worked for less than `stable_after`.
    quick_losses: u32,
    /// When the last [`URGENT_RETRIES`] immediate urgent retries were granted.
    urgent_granted: [Option<Instant>; URGENT_RETRIES],
    /// Since when every attempt has found the server restarting (see [`SERVER_RESTART_POLL`]).
    server_restarting_since: Option<Instant>,
    /// Why we are (re)trying, for STATUS=.
    cause: String,
    auth_rejected: Option<u16>,
    removed_reason: Option<String>,
    backoff: Backoff,
    /// Jitter outside the backoff streaks (the slow auth retry).
    rng: SplitMix64,
    has_default_route: bool,
    clock_synced: bool,
    publisher: PeerConnectionState,
    subscriber: PeerConnectionState,
    pc_grace_at: Option<Instant>,
    network: PendingNetwork,
    media_flowing: bool,
    media_deadline: Option<Instant>,
    media_overdue: bool,
    video_published: bool,
    /// A keyframe is due once video is published and the publisher connected (after a
    /// republish).
    keyframe_wanted: bool,
    ready_sent: bool,
    tracks: [TrackHealth; 2],
    watchdog_at: Option<Instant>,
    status: Status,
    status_text: String,
    actions: VecDeque<Action>,
    dropped_actions: u64,
}

impl Supervisor {
    pub fn new(config: SupervisorConfig, now: Instant, seed: u64) -> Self {
        let mut seeds = SplitMix64::new(seed);
        let track = |seed| TrackHealth {
            failed: None,
            restart_at: None,
            healthy_since: None,
            backoff: Backoff::new(config.track_restart_backoff, seed),
        };
        Self {
            backoff: Backoff::new(config.backoff, seeds.next_u64()),
            tracks: [track(seeds.next_u64()), track(seeds.next_u64())],
            rng: SplitMix64::new(seeds.next_u64()),
            watchdog_at: config.watchdog_interval.map(|interval| now + interval),
            clock_synced: config.clock_synced,
            phase: Phase::Idle,
            session: None,
            outage: None,
            reconnecting_announced: false,
            ever_connected: false,
            quick_losses: 0,
            urgent_granted: [None; URGENT_RETRIES],
            server_restarting_since: None,
            cause: String::new(),
            auth_rejected: None,
            removed_reason: None,
            has_default_route: true,
            publisher: PeerConnectionState::New,
            subscriber: PeerConnectionState::New,
            pc_grace_at: None,
            network: PendingNetwork::default(),
            media_flowing: false,
            media_deadline: None,
            media_overdue: false,
            video_published: false,
            keyframe_wanted: false,
            ready_sent: false,
            status: Status::Stopped,
            status_text: String::new(),
            actions: VecDeque::new(),
            dropped_actions: 0,
            config,
        }
    }

    /// Feed one input.
    pub fn handle_input(&mut self, input: Input, now: Instant) {
        if self.phase == Phase::Stopped {
            return;
        }
        match input {
            Input::Start => {
                if self.phase == Phase::Idle {
                    self.cause = "first join".into();
                    self.retry(AttemptKind::Join, now, false);
                }
            }
            Input::NetworkChanged {
                kind,
                has_default_route,
            } => self.on_network_changed(kind, has_default_route, now),
            Input::JoinSucceeded { participant_sid } => self.on_joined(participant_sid, now),
            Input::ResumeSucceeded => self.on_resumed(now),
            Input::JoinFailed {
                http_status,
                refused,
                detail,
            } => {
                let restarting = refused || matches!(http_status, Some(502..=504));
                self.note_server_restarting(restarting, now);
                self.on_attempt_failed(http_status, detail, now)
            }
            Input::SignalClosed { detail } => {
                self.on_signal_lost(format!("signalling closed: {detail}"), now)
            }
            Input::PingTimeout => {
                self.on_signal_lost("no answer from the server within ping_timeout".into(), now)
            }
            Input::PeerState { pc, state } => self.on_peer_state(pc, state, now),
            Input::Leave { action, reason } => self.on_leave(action, reason, now),
            Input::ResumeRejected { reason } => {
                if matches!(
                    self.phase,
                    Phase::Opening { .. } | Phase::Joined { .. } | Phase::IceRestarting { .. }
                ) {
                    self.cause = format!("the server refused the resume ({reason})");
                    self.server_restarting_since = None;
                    self.note_loss(now);
                    self.escalate(now, true);
                }
            }
            Input::TrackPublished { track, track_sid } => self.on_track_published(track, track_sid),
            Input::MediaFlowing { track } => self.on_media_flowing(track),
            Input::MediaFailed { track, error } => self.on_media_failed(track, error, now),
            Input::MediaRecovered { track } => self.on_media_recovered(track, now),
            Input::ClockJumped => {
                self.clock_synced = true;
                if self.auth_rejected.is_some() && matches!(self.phase, Phase::Waiting { .. }) {
                    self.cause = "the clock was set: retrying with a freshly minted token".into();
                    self.backoff.reset();
                    self.retry(AttemptKind::Join, now, false);
                }
            }
            Input::Shutdown => self.shutdown(),
        }
        self.refresh_status();
    }

    /// Advance the clock: fire whatever timer is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Stopped {
            return;
        }
        if let (Some(at), Some(interval)) = (self.watchdog_at, self.config.watchdog_interval) {
            if now >= at {
                self.push(Action::Notify(Notice::Watchdog));
                // From now, not from `at`: a late tick must not cause a burst.
                self.watchdog_at = Some(now + interval);
            }
        }
        if self.network.settle_at.is_some_and(|at| now >= at) {
            self.process_network(now);
        }
        if self.pc_grace_at.is_some_and(|at| now >= at) {
            self.pc_grace_at = None;
            if self.is_established() {
                self.cause = format!(
                    "a PeerConnection stayed disconnected for {}",
                    seconds(self.config.pc_disconnected_grace)
                );
                self.connection_lost(now, true, false);
            }
        }
        self.phase_timeout(now);
        if self.media_deadline.is_some_and(|at| now >= at) {
            self.media_deadline = None;
            if !self.media_flowing {
                self.media_overdue = true;
                self.say(format!(
                    "connected, but no media has flowed for {}: check the camera and microphone",
                    seconds(self.config.media_start_timeout)
                ));
            }
        }
        for track in [Track::Video, Track::Audio] {
            let health = &mut self.tracks[track.index()];
            if health.restart_at.is_some_and(|at| now >= at) {
                health.restart_at = None;
                self.push(Action::RestartTrack { track });
            }
        }
        self.refresh_status();
    }

    /// When `handle_timeout` is due next (None: nothing timed is pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Waiting { at, .. } => Some(at),
            Phase::Opening { deadline, .. } => Some(deadline),
            Phase::Joined { connect_deadline } => connect_deadline,
            Phase::IceRestarting { deadline } => Some(deadline),
            Phase::Removed { rejoin_at } => rejoin_at,
            Phase::Idle | Phase::Stopped => None,
        };
        if self.phase == Phase::Stopped {
            return None;
        }
        [
            phase,
            self.watchdog_at,
            self.network.settle_at,
            self.pc_grace_at,
            self.media_deadline,
            self.tracks[0].restart_at,
            self.tracks[1].restart_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// What the LEDs show now.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The last STATUS= text.
    pub fn status_text(&self) -> &str {
        &self.status_text
    }

    /// The participant sid of the current session, if joined.
    pub fn participant_sid(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.participant_sid.as_str())
    }

    /// The number of the current connection attempt in its failure streak (1 = the first).
    pub fn attempt(&self) -> u32 {
        self.backoff.attempts()
    }

    /// Actions dropped because the queue was full (0 with a shell that drains after each call).
    pub fn dropped_actions(&self) -> u64 {
        self.dropped_actions
    }

    // ---- attempts and backoff -------------------------------------------------------------

    /// Schedule the next attempt of `kind` after the backoff delay. `urgent` (a server Leave, an
    /// escalation) goes at once unless the streak is already long.
    fn retry(&mut self, kind: AttemptKind, now: Instant, urgent: bool) {
        let mut delay = self.backoff.next_delay(now);
        if urgent && !delay.is_zero() && self.grant_urgent(now) {
            // The server answered and said what to do (RECONNECT, STATE_MISMATCH, an HTTP
            // error to a resume): a fresh join now, however long the outage's streak was.
            delay = Duration::ZERO;
        } else if self
            .server_restarting_since
            .is_some_and(|since| now.saturating_duration_since(since) < SERVER_RESTART_WINDOW)
        {
            let spread = SERVER_RESTART_JITTER.as_nanos() as u64;
            let poll = SERVER_RESTART_POLL - SERVER_RESTART_JITTER
                + Duration::from_nanos(self.rng.below_inclusive(spread * 2));
            delay = delay.min(poll);
        }
        if kind == AttemptKind::Resume && !delay.is_zero() && self.resume_window_over(now + delay) {
            // Waiting would only end in a full reconnect: start it now.
            self.escalate_after_resume_window(now);
            return;
        }
        self.say(self.retry_text(kind, delay));
        if delay.is_zero() {
            self.start_attempt(kind, now);
        } else {
            self.phase = Phase::Waiting {
                attempt: kind,
                at: now + delay,
            };
        }
    }

    /// Go now, restarting the streak: the network just came (back) up.
    fn retry_now_network_up(&mut self, kind: AttemptKind, now: Instant) {
        self.backoff.reset();
        self.retry(kind, now, false);
    }

    fn start_attempt(&mut self, kind: AttemptKind, now: Instant) {
        match kind {
            AttemptKind::Join => self.push(Action::OpenSignal { resume: false }),
            AttemptKind::Resume => {
                if self.resume_window_over(now) {
                    self.escalate_after_resume_window(now);
                    return;
                }
                if self.outage.is_some_and(|o| o.path_suspect) {
                    self.push(Action::RebindSockets);
                }
                self.push(Action::OpenSignal { resume: true });
            }
        }
        self.phase = Phase::Opening {
            attempt: kind,
            deadline: now + self.config.open_timeout,
            without_route: !self.has_default_route,
        };
    }

    /// The server has most likely closed the participant by `at` (see `resume_window`).
    fn resume_window_over(&self, at: Instant) -> bool {
        self.outage.is_some_and(|outage| {
            at.saturating_duration_since(outage.since) >= self.config.resume_window
        })
    }

    fn escalate_after_resume_window(&mut self, now: Instant) {
        self.cause = format!(
            "{}; no resume within {}",
            self.cause,
            seconds(self.config.resume_window)
        );
        self.escalate(now, true);
    }

    fn phase_timeout(&mut self, now: Instant) {
        match self.phase.clone() {
            Phase::Waiting { attempt, at } if now >= at => self.start_attempt(attempt, now),
            Phase::Opening { deadline, .. } if now >= deadline => self.on_attempt_failed(
                None,
                format!("no answer within {}", seconds(self.config.open_timeout)),
                now,
            ),
            Phase::Joined {
                connect_deadline: Some(deadline),
            } if now >= deadline => {
                self.cause = format!(
                    "the publisher did not connect within {} of joining",
                    seconds(self.config.connect_timeout)
                );
                self.escalate(now, false);
            }
            Phase::IceRestarting { deadline } if now >= deadline => {
                self.cause = format!(
                    "the ICE restart did not connect within {}",
                    seconds(self.config.resume_timeout)
                );
                self.escalate(now, true);
            }
            Phase::Removed {
                rejoin_at: Some(at),
            } if now >= at => {
                self.cause = "rejoining after the removal hold-off".into();
                self.removed_reason = None;
                self.backoff.reset();
                self.retry(AttemptKind::Join, now, false);
            }
            _ => {}
        }
    }

    // ---- connection outcomes --------------------------------------------------------------

    fn on_joined(&mut self, participant_sid: String, now: Instant) {
        self.server_restarting_since = None;
        let Phase::Opening {
            attempt: AttemptKind::Join,
            ..
        } = self.phase
        else {
            return;
        };
        self.auth_rejected = None;
        let republish = std::mem::take(&mut self.reconnecting_announced);
        self.session = Some(Session {
            participant_sid: participant_sid.clone(),
            established_at: None,
            signal_open: true,
        });
        if republish {
            self.emit(RoomEventKind::Reconnected);
        }
        self.emit(RoomEventKind::ParticipantConnectedForPresent);
        self.push(Action::PublishTracks);
        self.keyframe_wanted = republish;
        if self.config.tracks.is_empty() {
            // Nothing to publish, so nothing to wait for.
            self.establish(now);
        } else {
            self.phase = Phase::Joined {
                connect_deadline: Some(now + self.config.connect_timeout),
            };
            self.say(format!("joined as {participant_sid}; connecting media"));
        }
    }

    fn on_resumed(&mut self, now: Instant) {
        self.server_restarting_since = None;
        let Phase::Opening {
            attempt: AttemptKind::Resume,
            ..
        } = self.phase
        else {
            return;
        };
        if let Some(session) = &mut self.session {
            session.signal_open = true;
        }
        self.push(Action::SyncState);
        let path_suspect = self.outage.is_some_and(|o| o.path_suspect);
        let pcs_down = self.publisher != PeerConnectionState::Connected
            || matches!(
                self.subscriber,
                PeerConnectionState::Disconnected | PeerConnectionState::Failed
            );
        // An ICE restart drops the old path at once (webrtc-rs): only when it is really gone.
        if path_suspect || pcs_down {
            self.push(Action::IceRestart);
            self.phase = Phase::IceRestarting {
                deadline: now + self.config.resume_timeout,
            };
            self.say("signalling resumed; restarting ICE".into());
        } else {
            self.complete_resume(now, false);
        }
    }

    fn complete_resume(&mut self, now: Instant, ice_restarted: bool) {
        self.outage = None;
        self.pc_grace_at = None;
        self.emit(RoomEventKind::Resumed);
        if ice_restarted && self.video_published {
            self.push(Action::RequestKeyframe);
        }
        if let Some(session) = &mut self.session {
            session.established_at = Some(now);
        }
        self.phase = Phase::Joined {
            connect_deadline: None,
        };
        self.say_connected();
    }

    /// The publisher connected for the first time in this session.
    fn establish(&mut self, now: Instant) {
        if let Some(session) = &mut self.session {
            session.established_at = Some(now);
        }
        self.ever_connected = true;
        self.phase = Phase::Joined {
            connect_deadline: None,
        };
        if !self.config.tracks.is_empty() && !self.media_flowing {
            self.media_deadline = Some(now + self.config.media_start_timeout);
        }
        self.maybe_request_keyframe();
        self.maybe_ready();
        self.say_connected();
    }

    fn on_attempt_failed(&mut self, http_status: Option<u16>, detail: String, now: Instant) {
        let Phase::Opening { attempt, .. } = self.phase else {
            return;
        };
        let what = match http_status {
            Some(status) => format!("the server answered HTTP {status}: {detail}"),
            None if self.has_default_route => format!("server unreachable: {detail}"),
            None => format!("no network (no default route): {detail}"),
        };
        match attempt {
            AttemptKind::Resume => {
                self.cause = format!("resume failed: {what}");
                match http_status {
                    // Reached the server and it said no: a fresh session (and token) is the cure.
                    Some(_) => self.escalate(now, true),
                    // Not reached: the session may well still be there; keep resuming.
                    None => self.retry(AttemptKind::Resume, now, false),
                }
            }
            AttemptKind::Join => match http_status {
                Some(status @ (401 | 403)) => self.auth_failed(status, detail, now),
                _ => {
                    self.auth_rejected = None;
                    self.cause = what;
                    self.retry(AttemptKind::Join, now, false);
                }
            },
        }
    }

    /// The server refused the token: retry in minutes (a new token might be minted by then,
    /// an admin might fix the key), or as soon as the clock is set on a board without an RTC.
    fn auth_failed(&mut self, status: u16, detail: String, now: Instant) {
        self.auth_rejected = Some(status);
        let base = self.config.auth_retry;
        let spread = (base / 10).as_nanos() as u64;
        let jitter = self.rng.below_inclusive(spread * 2);
        let delay = base - base / 10 + Duration::from_nanos(jitter);
        self.phase = Phase::Waiting {
            attempt: AttemptKind::Join,
            at: now + delay,
        };
        let clock = if self.clock_synced {
            String::new()
        } else {
            "; the clock is not synced yet, so the token may be minted with a wrong time: \
             retrying as soon as it is"
                .into()
        };
        self.cause = format!("token rejected (HTTP {status}): {detail}");
        self.say(format!(
            "{} (next in {}; check the token or api_key/api_secret){clock}",
            self.cause,
            seconds(delay)
        ));
    }

    fn on_signal_lost(&mut self, cause: String, now: Instant) {
        match self.phase {
            Phase::Opening { .. } => self.on_attempt_failed(None, cause, now),
            Phase::Joined { .. } => {
                self.cause = cause;
                self.connection_lost(now, false, false);
            }
            Phase::IceRestarting { .. } => {
                self.cause = format!("resume failed: {cause}");
                if let Some(session) = &mut self.session {
                    session.signal_open = false;
                }
                self.retry(AttemptKind::Resume, now, false);
            }
            _ => {}
        }
    }

    /// The current session's connection broke: resume it if it ever worked, else start afresh.
    fn connection_lost(&mut self, now: Instant, path_suspect: bool, urgent: bool) {
        self.pc_grace_at = None;
        let established = self
            .session
            .as_ref()
            .is_some_and(|s| s.established_at.is_some());
        if !established {
            // The server drops a participant whose PeerConnection never connected: nothing to
            // resume.
            self.escalate(now, urgent);
            return;
        }
        if let Some(session) = &mut self.session {
            session.signal_open = false;
        }
        let pc_down = [self.publisher, self.subscriber].iter().any(|state| {
            matches!(
                state,
                PeerConnectionState::Disconnected | PeerConnectionState::Failed
            )
        });
        let path_suspect = path_suspect || pc_down;
        match &mut self.outage {
            Some(outage) => outage.path_suspect |= path_suspect,
            None => {
                self.note_loss(now);
                self.outage = Some(Outage {
                    since: now,
                    path_suspect,
                });
                self.emit(RoomEventKind::Resuming);
            }
        }
        self.retry(AttemptKind::Resume, now, urgent);
    }

    /// A connection that worked is lost (the start of an outage, counted once): the first loss
    /// after a stable connection, or the first of a run of quick ones, retries at once; a
    /// connection that keeps dying soon after it is up continues its backoff streak.
    fn note_loss(&mut self, now: Instant) {
        if self.outage.is_some() {
            return;
        }
        let Some(established_at) = self.session.as_ref().and_then(|s| s.established_at) else {
            return;
        };
        if now.saturating_duration_since(established_at) >= self.config.stable_after {
            self.quick_losses = 0;
        } else {
            self.quick_losses += 1;
        }
        if self.quick_losses <= 1 {
            self.backoff.reset();
        }
    }

    /// An immediate urgent retry, unless [`URGENT_RETRIES`] were granted within [`URGENT_WINDOW`].
    fn grant_urgent(&mut self, now: Instant) -> bool {
        let oldest = self
            .urgent_granted
            .iter_mut()
            .min_by_key(|granted| **granted)
            .expect("URGENT_RETRIES > 0");
        match oldest {
            Some(at) if now.saturating_duration_since(*at) < URGENT_WINDOW => false,
            _ => {
                *oldest = Some(now);
                true
            }
        }
    }

    /// Whether the last attempt found the server restarting (refused, or a proxy's 502-504).
    fn note_server_restarting(&mut self, restarting: bool, now: Instant) {
        if restarting {
            self.server_restarting_since.get_or_insert(now);
        } else {
            self.server_restarting_since = None;
        }
    }

    /// Give up on the current session: a full reconnect in LiveKit's documented order (steps
    /// 1–3 here, 4–7 as the join succeeds and the tracks are republished).
    fn escalate(&mut self, now: Instant, urgent: bool) {
        self.outage = None;
        self.pc_grace_at = None;
        if self.session.take().is_some() {
            if !self.reconnecting_announced {
                self.emit(RoomEventKind::ParticipantDisconnectedForAll);
                self.emit(RoomEventKind::LocalTrackUnpublishedForAll);
                self.emit(RoomEventKind::Reconnecting);
                self.reconnecting_announced = true;
            }
            self.push(Action::RebuildPeerConnections);
            self.forget_connection();
        }
        self.retry(AttemptKind::Join, now, urgent);
    }

    /// The PeerConnections and local publications are gone (the pipelines are not).
    fn forget_connection(&mut self) {
        self.publisher = PeerConnectionState::New;
        self.subscriber = PeerConnectionState::New;
        self.media_flowing = false;
        self.media_deadline = None;
        self.media_overdue = false;
        self.video_published = false;
    }

    fn on_leave(&mut self, action: LeaveAction, reason: String, now: Instant) {
        let connected = matches!(
            self.phase,
            Phase::Opening { .. } | Phase::Joined { .. } | Phase::IceRestarting { .. }
        );
        if !connected {
            return;
        }
        match action {
            LeaveAction::Disconnect => self.removed(reason, now),
            LeaveAction::Resume => {
                // The server's side of ICE failed: the path is gone.
                self.cause = format!("the server asked for a resume ({reason})");
                self.connection_lost(now, true, true);
            }
            LeaveAction::Reconnect => {
                self.cause = format!("the server asked for a full reconnect ({reason})");
                self.note_loss(now);
                self.escalate(now, true);
            }
        }
    }

    fn removed(&mut self, reason: String, now: Instant) {
        if self.session.take().is_some() {
            self.emit(RoomEventKind::ParticipantDisconnectedForAll);
            self.emit(RoomEventKind::LocalTrackUnpublishedForAll);
        }
        self.reconnecting_announced = false;
        self.outage = None;
        self.pc_grace_at = None;
        self.forget_connection();
        self.push(Action::CloseConnection);
        self.emit(RoomEventKind::Disconnected {
            reason: reason.clone(),
            by_server: true,
        });
        let rejoin_at = self.config.rejoin_after_removal.map(|wait| now + wait);
        self.phase = Phase::Removed { rejoin_at };
        let next = match self.config.rejoin_after_removal {
            Some(wait) => format!("rejoining {}", in_(wait)),
            None => "not rejoining on its own: fix the cause and restart roomcast".into(),
        };
        self.say(format!("removed by the server ({reason}); {next}"));
        self.removed_reason = Some(reason);
    }

    fn on_peer_state(&mut self, pc: PeerConnectionKind, state: PeerConnectionState, now: Instant) {
        match pc {
            PeerConnectionKind::Publisher => self.publisher = state,
            PeerConnectionKind::Subscriber => self.subscriber = state,
        }
        let down = matches!(
            state,
            PeerConnectionState::Disconnected | PeerConnectionState::Failed
        );
        match self.phase {
            Phase::Joined {
                connect_deadline: Some(_),
            } => {
                if pc == PeerConnectionKind::Publisher && state == PeerConnectionState::Connected {
                    self.establish(now);
                } else if state == PeerConnectionState::Failed {
                    self.cause = format!("the {pc:?} PeerConnection failed before connecting");
                    self.escalate(now, false);
                }
            }
            Phase::Joined {
                connect_deadline: None,
            } => match state {
                PeerConnectionState::Failed => {
                    self.cause = format!("the {pc:?} PeerConnection failed");
                    self.connection_lost(now, true, false);
                }
                PeerConnectionState::Disconnected => {
                    // Often a blip that heals by itself; an ICE restart would cut the old path.
                    self.pc_grace_at
                        .get_or_insert(now + self.config.pc_disconnected_grace);
                }
                PeerConnectionState::Connected => {
                    let any_down = [self.publisher, self.subscriber]
                        .contains(&PeerConnectionState::Disconnected);
                    if !any_down {
                        self.pc_grace_at = None;
                    }
                    self.maybe_request_keyframe();
                }
                _ => {}
            },
            Phase::IceRestarting { .. }
                if pc == PeerConnectionKind::Publisher
                    && state == PeerConnectionState::Connected =>
            {
                self.complete_resume(now, true);
            }
            Phase::Opening {
                attempt: AttemptKind::Resume,
                ..
            }
            | Phase::Waiting {
                attempt: AttemptKind::Resume,
                ..
            } if down => {
                if let Some(outage) = &mut self.outage {
                    outage.path_suspect = true;
                }
            }
            _ => {}
        }
    }

    // ---- network --------------------------------------------------------------------------

    fn on_network_changed(&mut self, kind: NetworkChangeKind, has_route: bool, now: Instant) {
        let had_route = self.has_default_route;
        self.has_default_route = has_route;
        self.network.path_changed |= kind.may_break_the_path();
        self.network.came_up |= has_route && (kind.may_bring_the_network_up() || !had_route);
        if self.config.network_settle.is_zero() {
            self.process_network(now);
        } else if self.network.settle_at.is_none() {
            // Not re-armed by later messages: the reaction comes at most `network_settle` after
            // the first message of a burst.
            self.network.settle_at = Some(now + self.config.network_settle);
        }
    }

    fn process_network(&mut self, now: Instant) {
        let pending = std::mem::take(&mut self.network);
        if !self.has_default_route {
            // Nowhere to go: retries continue on their schedule (the route table may not tell
            // the whole story) and the status says why; a route coming up retries at once.
            if matches!(self.phase, Phase::Waiting { .. }) {
                let text = self.status_text.clone();
                if !text.starts_with("waiting for network") {
                    self.say(format!("waiting for network (no default route); {}", text));
                }
            }
            return;
        }
        let cause = "the network changed".to_string();
        match self.phase.clone() {
            Phase::Joined {
                connect_deadline: None,
            } if pending.path_changed => {
                self.cause = cause;
                self.backoff.reset();
                self.connection_lost(now, true, true);
            }
            Phase::Joined {
                connect_deadline: Some(_),
            } if pending.path_changed => {
                self.cause = format!("{cause} before the PeerConnection connected");
                self.backoff.reset();
                self.escalate(now, true);
            }
            Phase::IceRestarting { .. } if pending.path_changed => {
                // Signalling is back already: only ICE needs the new path.
                self.push(Action::RebindSockets);
                self.push(Action::IceRestart);
                self.phase = Phase::IceRestarting {
                    deadline: now + self.config.resume_timeout,
                };
            }
            Phase::Opening {
                attempt,
                without_route,
                ..
            } if pending.path_changed || (pending.came_up && without_route) => {
                // An attempt on the old path (or on none) is doomed: go again on the new one.
                // A new address elsewhere does not disturb an attempt that may be succeeding.
                if let Some(outage) = &mut self.outage {
                    outage.path_suspect = true;
                }
                self.cause = cause;
                self.retry_now_network_up(attempt, now);
            }
            Phase::Waiting { attempt, .. }
                if (pending.path_changed || pending.came_up) && self.auth_rejected.is_none() =>
            {
                // A waiting attempt may succeed now.
                if let Some(outage) = &mut self.outage {
                    outage.path_suspect = true;
                }
                self.cause = cause;
                self.retry_now_network_up(attempt, now);
            }
            _ => {}
        }
    }

    // ---- media ----------------------------------------------------------------------------

    fn on_track_published(&mut self, track: Track, track_sid: String) {
        if self.session.is_none() {
            return;
        }
        self.emit(RoomEventKind::LocalTrackPublished { track, track_sid });
        if track == Track::Video {
            self.video_published = true;
            self.maybe_request_keyframe();
        }
    }

    /// After a republish: a keyframe as soon as the new video track can carry it.
    fn maybe_request_keyframe(&mut self) {
        if self.keyframe_wanted
            && self.video_published
            && self.publisher == PeerConnectionState::Connected
        {
            self.keyframe_wanted = false;
            self.push(Action::RequestKeyframe);
        }
    }

    fn on_media_flowing(&mut self, _track: Track) {
        if self.session.is_none() {
            return;
        }
        let first = !self.media_flowing;
        self.media_flowing = true;
        self.media_deadline = None;
        self.media_overdue = false;
        self.maybe_ready();
        if first && self.is_established() {
            self.say_connected();
        }
    }

    fn maybe_ready(&mut self) {
        if !self.ready_sent
            && self.is_established()
            && (self.media_flowing || self.config.tracks.is_empty())
        {
            self.ready_sent = true;
            self.push(Action::Notify(Notice::Ready));
        }
    }

    fn on_media_failed(&mut self, track: Track, error: String, now: Instant) {
        let stable_after = self.config.stable_after;
        let health = &mut self.tracks[track.index()];
        if health.restart_at.is_some() {
            // A restart is already scheduled: this is the same failure again.
            health.failed = Some(error);
            return;
        }
        if health
            .healthy_since
            .is_some_and(|since| now.saturating_duration_since(since) >= stable_after)
        {
            health.backoff.reset();
        }
        health.healthy_since = None;
        health.failed = Some(error.clone());
        let delay = health.backoff.next_delay(now);
        let attempt = health.backoff.attempts();
        self.emit(RoomEventKind::LocalTrackFailed {
            track,
            error: error.clone(),
        });
        if delay.is_zero() {
            self.push(Action::RestartTrack { track });
        } else {
            self.tracks[track.index()].restart_at = Some(now + delay);
        }
        let other = track.other();
        let goes_on = if self.config.tracks.contains(other) {
            format!("; {other} goes on")
        } else {
            String::new()
        };
        self.say(format!(
            "{track} track failed: {error} (restart {attempt} {}){goes_on}",
            in_(delay)
        ));
    }

    fn on_media_recovered(&mut self, track: Track, now: Instant) {
        let health = &mut self.tracks[track.index()];
        if health.failed.take().is_none() {
            return;
        }
        health.restart_at = None;
        health.healthy_since = Some(now);
        self.emit(RoomEventKind::LocalTrackRecovered { track });
        if self.is_established() {
            self.say_connected();
        }
    }

    // ---- shutdown -------------------------------------------------------------------------

    fn shutdown(&mut self) {
        if self.session.as_ref().is_some_and(|s| s.signal_open) {
            self.push(Action::SendLeave);
        }
        self.push(Action::Notify(Notice::Stopping));
        self.emit(RoomEventKind::Disconnected {
            reason: "CLIENT_INITIATED".into(),
            by_server: false,
        });
        self.phase = Phase::Stopped;
        self.session = None;
        self.outage = None;
        self.pc_grace_at = None;
        self.network = PendingNetwork::default();
        self.media_deadline = None;
        self.watchdog_at = None;
        for health in &mut self.tracks {
            health.restart_at = None;
        }
        self.refresh_status();
        self.push(Action::Exit(0));
    }

    // ---- status ---------------------------------------------------------------------------

    fn is_established(&self) -> bool {
        matches!(
            self.phase,
            Phase::Joined {
                connect_deadline: None
            }
        )
    }

    fn compute_status(&self) -> Status {
        let away = if !self.has_default_route {
            Status::WaitingForNetwork
        } else if self.ever_connected {
            Status::Reconnecting
        } else {
            Status::Connecting
        };
        match &self.phase {
            Phase::Idle | Phase::Stopped => Status::Stopped,
            Phase::Removed { .. } => Status::NeedsAttention(Attention::RemovedByServer {
                reason: self.removed_reason.clone().unwrap_or_default(),
            }),
            Phase::Waiting { .. } if self.auth_rejected.is_some() => {
                Status::NeedsAttention(Attention::AuthRejected {
                    http_status: self.auth_rejected.unwrap_or_default(),
                })
            }
            Phase::Joined {
                connect_deadline: None,
            } => {
                if let Some(track) = [Track::Video, Track::Audio]
                    .into_iter()
                    .find(|t| self.tracks[t.index()].failed.is_some())
                {
                    Status::NeedsAttention(Attention::TrackFailed { track })
                } else if self.media_flowing || self.config.tracks.is_empty() {
                    Status::Publishing
                } else if self.media_overdue {
                    Status::NeedsAttention(Attention::NoMedia)
                } else if self.ready_sent {
                    // Media flowed before this (re)join: we are getting back, not starting.
                    Status::Reconnecting
                } else {
                    Status::Connecting
                }
            }
            Phase::Waiting { .. }
            | Phase::Opening { .. }
            | Phase::Joined { .. }
            | Phase::IceRestarting { .. } => away,
        }
    }

    fn refresh_status(&mut self) {
        let status = self.compute_status();
        if status != self.status {
            self.status = status.clone();
            self.push(Action::SetStatus(status));
        }
    }

    fn say_connected(&mut self) {
        let failed: Vec<String> = [Track::Video, Track::Audio]
            .into_iter()
            .filter_map(|t| {
                self.tracks[t.index()]
                    .failed
                    .as_ref()
                    .map(|e| format!("{t} track failed: {e}, restarting"))
            })
            .collect();
        let text = if !failed.is_empty() {
            format!("connected; {}", failed.join("; "))
        } else if self.media_flowing || self.config.tracks.is_empty() {
            "publishing".to_string()
        } else {
            "connected; waiting for media".to_string()
        };
        self.say(text);
    }

    /// "reconnecting: signal closed (attempt 3, next in 2.1 s)".
    fn retry_text(&self, kind: AttemptKind, delay: Duration) -> String {
        let verb = match kind {
            AttemptKind::Resume => "resuming",
            AttemptKind::Join if self.reconnecting_announced => "reconnecting",
            AttemptKind::Join => "connecting",
        };
        let network = if self.has_default_route {
            ""
        } else {
            "waiting for network (no default route); "
        };
        let next = if delay.is_zero() {
            "now".to_string()
        } else {
            format!("next {}", in_(delay))
        };
        format!(
            "{network}{verb}: {} (attempt {}, {next})",
            self.cause,
            self.backoff.attempts()
        )
    }

    fn say(&mut self, text: String) {
        if text != self.status_text {
            self.status_text = text.clone();
            self.push(Action::Notify(Notice::Status(text)));
        }
    }

    fn emit(&mut self, event: RoomEventKind) {
        self.push(Action::Emit(event));
    }

    fn push(&mut self, action: Action) {
        if self.actions.len() >= ACTION_QUEUE_CAP {
            let superseded = self.actions.iter().position(|a| {
                matches!(
                    a,
                    Action::SetStatus(_)
                        | Action::Notify(Notice::Status(_))
                        | Action::Notify(Notice::Watchdog)
                )
            });
            self.actions.remove(superseded.unwrap_or(0));
            self.dropped_actions += 1;
        }
        self.actions.push_back(action);
    }
}

/// "2.1 s" or "5.0 min".
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 60.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{secs:.1} s")
    }
}

/// "now" or "in 2.1 s".
fn in_(duration: Duration) -> String {
    if duration.is_zero() {
        "now".into()
    } else {
        format!("in {}", seconds(duration))
    }
}
