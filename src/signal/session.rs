//! The signalling session as a pure state machine (sans-IO, in the way of str0m's `Rtc`):
//! it takes decoded `SignalResponse`s and clock ticks, and hands back frames to send, timers and events.
//! No sockets, no tasks, no clocks of its own: the `ws` shell moves the bytes.
//!
//! The API below is the contract the shell and the room code are written against; keep it stable.
//!
//! Driving it (the shell's loop):
//! 1. `SignalSession::new(opts, now)` right after the WebSocket upgrade.
//! 2. Feed every decoded frame to `handle_response`, call `handle_timeout` when `poll_timeout` is due.
//! 3. After each call drain `poll_transmit` (write each frame) and `poll_event` (act on each event).
//! 4. When the socket closes under us, call `handle_transport_closed`.
//!
//! Behaviour follows the official SDKs (see livekit-protocol.md §3.1, §5, §6.a, §7): pings every
//! `ping_interval` with the measured rtt, `ping_timeout` of silence (ANY message re-arms it, as JS and
//! Rust do) means a dead link, requests are held back while not Active except the pass-through kinds.
use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the server's JoinResponse uses today (livekit-protocol.md §5); used on a resumed session,
/// whose ReconnectResponse carries no ping settings, unless `set_ping_config` says otherwise.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(15);

/// How many sent pings we remember to match pongs against (one is outstanding in practice).
const PING_HISTORY: usize = 8;

/// What the session was configured with at creation.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// How long to wait for the first message (JoinResponse / ReconnectResponse) after the upgrade.
    pub first_message_timeout: Duration,
    /// True when this session resumes an earlier one (expects ReconnectResponse first).
    pub resuming: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            first_message_timeout: Duration::from_secs(5),
            resuming: false,
        }
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Upgraded, waiting for JoinResponse / ReconnectResponse.
    AwaitingFirstMessage,
    /// Joined (or resumed): requests flow.
    Active,
    /// We sent Leave; nothing else goes out.
    Leaving,
    /// Over: the server said Leave, the link died, or we left.
    Closed,
}

/// Why a session ended (`SignalSession::close_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The server sent Leave. `action == Disconnect` means: do not rejoin.
    ServerLeave {
        reason: proto::DisconnectReason,
        action: proto::leave_request::Action,
    },
    /// We called `leave()` and the Leave frame was handed out by `poll_transmit`.
    ClientLeave(proto::DisconnectReason),
    /// No message for `ping_timeout`.
    PingTimeout,
    /// No JoinResponse / ReconnectResponse in time.
    FirstMessageTimeout,
    /// A fresh join whose first message was neither JoinResponse nor Leave.
    UnexpectedFirstMessage,
    /// The owner reported that the WebSocket closed.
    TransportClosed,
}

impl CloseReason {
    /// True when the owner may try to get back in (resume or full reconnect). False for a server
    /// Leave with action DISCONNECT (duplicate identity, removed, room deleted) and our own leave.
    pub fn may_rejoin(&self) -> bool {
        match self {
            CloseReason::ServerLeave { action, .. } => {
                *action != proto::leave_request::Action::Disconnect
            }
            CloseReason::ClientLeave(_) => false,
            _ => true,
        }
    }
}

/// Something the session tells its owner.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    Joined(Box<proto::JoinResponse>),
    Resumed(Box<proto::ReconnectResponse>),
    Answer(proto::SessionDescription),
    Offer(proto::SessionDescription),
    Trickle {
        target: proto::SignalTarget,
        candidate_init: String,
        is_final: bool,
    },
    TrackPublished(proto::TrackPublishedResponse),
    TrackUnpublished(proto::TrackUnpublishedResponse),
    ParticipantUpdate(Vec<proto::ParticipantInfo>),
    RoomUpdate(proto::Room),
    MediaSectionsRequirement(proto::MediaSectionsRequirement),
    RemoteMute(proto::MuteTrackRequest),
    RequestResponse(proto::RequestResponse),
    TokenRefreshed(String),
    /// The server told us to leave: obey `action` (DISCONNECT never rejoins).
    Leave {
        reason: proto::DisconnectReason,
        action: proto::leave_request::Action,
    },
    /// No message for ping_timeout: the link is dead.
    PingTimeout,
    /// No first message within `first_message_timeout`.
    FirstMessageTimeout,
    /// A message this session does not act on, passed through.
    Other(Box<proto::signal_response::Message>),
    /// A fresh join got something other than JoinResponse/Leave first (JS fails the connect too);
    /// the session is Closed.
    UnexpectedFirstMessage(Box<proto::signal_response::Message>),
}

/// The sans-IO signalling session.
pub struct SignalSession {
    opts: SessionOptions,
    state: SessionState,
    first_message_deadline: Instant,
    ping_interval: Option<Duration>,
    ping_timeout: Option<Duration>,
    next_ping_at: Option<Instant>,
    dead_at: Option<Instant>,
    /// (ping timestamp we sent, when we sent it), newest last.
    pings_in_flight: VecDeque<(i64, Instant)>,
    rtt: Option<Duration>,
    /// Wall-clock ms at `clock_origin`: ping timestamps are unix ms like the SDKs' `Date.now()`.
    unix_ms_at_origin: i64,
    clock_origin: Instant,
    last_ping_timestamp: i64,
    /// Requests held back until Active (or until `release_requests` when holding).
    held: VecDeque<Req>,
    hold_after_first_message: bool,
    holding: bool,
    outbound: VecDeque<proto::SignalRequest>,
    events: VecDeque<SessionEvent>,
    latest_token: Option<String>,
    close_reason: Option<CloseReason>,
    pending_client_leave: Option<proto::DisconnectReason>,
}

/// Requests that go out even while the session is not Active: what both SDKs let through while
/// (re)connecting (JS `passThroughQueueSignals`, RS `is_pass_through`).
pub fn is_pass_through(msg: &Req) -> bool {
    matches!(
        msg,
        Req::Trickle(_)
            | Req::Offer(_)
            | Req::Answer(_)
            | Req::SyncState(_)
            | Req::Simulate(_)
            | Req::Leave(_)
    )
}

fn secs(value: i32) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value as u64))
}

impl SignalSession {
    pub fn new(opts: SessionOptions, now: Instant) -> Self {
        let unix_ms_at_origin = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let (ping_interval, ping_timeout) = if opts.resuming {
            (Some(DEFAULT_PING_INTERVAL), Some(DEFAULT_PING_TIMEOUT))
        } else {
            (None, None)
        };
        Self {
            first_message_deadline: now + opts.first_message_timeout,
            opts,
            state: SessionState::AwaitingFirstMessage,
            ping_interval,
            ping_timeout,
            next_ping_at: None,
            dead_at: None,
            pings_in_flight: VecDeque::new(),
            rtt: None,
            unix_ms_at_origin,
            clock_origin: now,
            last_ping_timestamp: 0,
            held: VecDeque::new(),
            hold_after_first_message: false,
            holding: false,
            outbound: VecDeque::new(),
            events: VecDeque::new(),
            latest_token: None,
            close_reason: None,
            pending_client_leave: None,
        }
    }

    /// Ping settings for a resumed session: pass the JoinResponse's `ping_interval`/`ping_timeout`
    /// of the session being resumed (ReconnectResponse has none). Zero disables the respective timer.
    pub fn set_ping_config(&mut self, interval: Duration, timeout: Duration) {
        self.ping_interval = (!interval.is_zero()).then_some(interval);
        self.ping_timeout = (!timeout.is_zero()).then_some(timeout);
    }

    /// Keep holding non-pass-through requests after the first message until `release_requests`.
    /// For resume: the SDKs flush the queue only once the PeerConnections reconnected (§6.a step 6).
    pub fn hold_requests_until_release(&mut self) {
        self.hold_after_first_message = true;
    }

    /// Let held requests go out (in order) and stop holding.
    pub fn release_requests(&mut self) {
        self.hold_after_first_message = false;
        self.holding = false;
        if self.state == SessionState::Active {
            self.flush_held();
        }
    }

    /// Feed one decoded message from the server.
    pub fn handle_response(&mut self, msg: proto::SignalResponse, now: Instant) {
        let Some(message) = msg.message else { return };
        match self.state {
            SessionState::Closed => return,
            SessionState::Leaving => {
                // We are on our way out: only the token is still worth keeping.
                if let Resp::RefreshToken(token) = message {
                    self.store_token(token);
                }
                return;
            }
            SessionState::AwaitingFirstMessage => {
                self.handle_first_message(message, now);
                return;
            }
            SessionState::Active => {}
        }
        self.rearm_dead_timer(now);
        self.dispatch(message, now);
    }

    fn handle_first_message(&mut self, message: Resp, now: Instant) {
        match message {
            Resp::Join(join) => {
                self.ping_interval = secs(join.ping_interval);
                self.ping_timeout = secs(join.ping_timeout);
                self.become_active(now);
                self.events.push_back(SessionEvent::Joined(Box::new(join)));
                self.flush_held();
            }
            Resp::Reconnect(reconnect) if self.opts.resuming => {
                self.become_active(now);
                self.events
                    .push_back(SessionEvent::Resumed(Box::new(reconnect)));
                self.flush_held();
            }
            Resp::Leave(leave) => self.server_leave(leave),
            other if self.opts.resuming => {
                // JS accepts any non-leave first message as a resume (older servers send no
                // ReconnectResponse); do the same, then handle the message itself.
                self.become_active(now);
                self.events.push_back(SessionEvent::Resumed(Box::default()));
                self.flush_held();
                self.dispatch(other, now);
            }
            other => {
                self.close(CloseReason::UnexpectedFirstMessage);
                self.events
                    .push_back(SessionEvent::UnexpectedFirstMessage(Box::new(other)));
            }
        }
    }

    fn become_active(&mut self, now: Instant) {
        self.state = SessionState::Active;
        self.holding = self.hold_after_first_message;
        self.next_ping_at = self.ping_interval.map(|interval| now + interval);
        self.rearm_dead_timer(now);
    }

    fn rearm_dead_timer(&mut self, now: Instant) {
        self.dead_at = self.ping_timeout.map(|timeout| now + timeout);
    }

    fn dispatch(&mut self, message: Resp, now: Instant) {
        let event = match message {
            Resp::Answer(sd) => SessionEvent::Answer(sd),
            Resp::Offer(sd) => SessionEvent::Offer(sd),
            Resp::Trickle(trickle) => SessionEvent::Trickle {
                target: proto::SignalTarget::try_from(trickle.target)
                    .unwrap_or(proto::SignalTarget::Publisher),
                candidate_init: trickle.candidate_init,
                is_final: trickle.r#final,
            },
            Resp::Update(update) => SessionEvent::ParticipantUpdate(update.participants),
            Resp::TrackPublished(published) => SessionEvent::TrackPublished(published),
            Resp::TrackUnpublished(unpublished) => SessionEvent::TrackUnpublished(unpublished),
            Resp::RoomUpdate(update) => SessionEvent::RoomUpdate(update.room.unwrap_or_default()),
            Resp::MediaSectionsRequirement(req) => SessionEvent::MediaSectionsRequirement(req),
            Resp::Mute(mute) => SessionEvent::RemoteMute(mute),
            Resp::RequestResponse(response) => SessionEvent::RequestResponse(response),
            Resp::RefreshToken(token) => {
                self.store_token(token.clone());
                SessionEvent::TokenRefreshed(token)
            }
            Resp::Leave(leave) => {
                self.server_leave(leave);
                return;
            }
            Resp::PongResp(pong) => {
                self.record_pong(pong.last_ping_timestamp, now);
                return;
            }
            Resp::Pong(timestamp) => {
                self.record_pong(timestamp, now);
                return;
            }
            other => SessionEvent::Other(Box::new(other)),
        };
        self.events.push_back(event);
    }

    fn store_token(&mut self, token: String) {
        if !token.is_empty() {
            self.latest_token = Some(token);
        }
    }

    fn record_pong(&mut self, ping_timestamp: i64, now: Instant) {
        if let Some(pos) = self
            .pings_in_flight
            .iter()
            .position(|(ts, _)| *ts == ping_timestamp)
        {
            let (_, sent_at) = self.pings_in_flight[pos];
            self.rtt = Some(now.saturating_duration_since(sent_at));
            // Older pings will never be answered out of order: forget them too.
            self.pings_in_flight.drain(..=pos);
        }
    }

    fn server_leave(&mut self, leave: proto::LeaveRequest) {
        let reason = proto::DisconnectReason::try_from(leave.reason)
            .unwrap_or(proto::DisconnectReason::UnknownReason);
        // We announce protocol >= 13, so `action` is authoritative; `can_reconnect` is the pre-13 field.
        let action = proto::leave_request::Action::try_from(leave.action)
            .unwrap_or(proto::leave_request::Action::Disconnect);
        self.close(CloseReason::ServerLeave { reason, action });
        self.events
            .push_back(SessionEvent::Leave { reason, action });
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = SessionState::Closed;
        self.close_reason.get_or_insert(reason);
        self.held.clear();
        self.next_ping_at = None;
        self.dead_at = None;
    }

    /// Advance the clock: fires pings and timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            SessionState::AwaitingFirstMessage => {
                if now >= self.first_message_deadline {
                    self.close(CloseReason::FirstMessageTimeout);
                    self.outbound.clear();
                    self.events.push_back(SessionEvent::FirstMessageTimeout);
                }
            }
            SessionState::Active => {
                if self.dead_at.is_some_and(|dead_at| now >= dead_at) {
                    self.close(CloseReason::PingTimeout);
                    self.events.push_back(SessionEvent::PingTimeout);
                    return;
                }
                if let (Some(next), Some(interval)) = (self.next_ping_at, self.ping_interval) {
                    if now >= next {
                        self.send_ping(now);
                        // Schedule from now, not from `next`: a late tick must not cause a burst.
                        self.next_ping_at = Some(now + interval);
                    }
                }
            }
            SessionState::Leaving | SessionState::Closed => {}
        }
    }

    fn send_ping(&mut self, now: Instant) {
        let elapsed_ms = now.saturating_duration_since(self.clock_origin).as_millis() as i64;
        // Strictly increasing so every pong matches exactly one ping.
        let timestamp = (self.unix_ms_at_origin + elapsed_ms).max(self.last_ping_timestamp + 1);
        self.last_ping_timestamp = timestamp;
        if self.pings_in_flight.len() == PING_HISTORY {
            self.pings_in_flight.pop_front();
        }
        self.pings_in_flight.push_back((timestamp, now));
        let rtt = self.rtt.map(|rtt| rtt.as_millis() as i64).unwrap_or(0);
        self.push_out(Req::PingReq(proto::Ping { timestamp, rtt }));
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SessionState::AwaitingFirstMessage => Some(self.first_message_deadline),
            SessionState::Active => match (self.next_ping_at, self.dead_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            SessionState::Leaving | SessionState::Closed => None,
        }
    }

    /// Queue a request (held back while not Active, except pass-through kinds).
    pub fn send(&mut self, msg: proto::signal_request::Message) {
        if matches!(self.state, SessionState::Leaving | SessionState::Closed) {
            tracing::debug!(state = ?self.state, "signal request dropped: session is over");
            return;
        }
        if let Req::Leave(leave) = msg {
            // A Leave through `send` is a leave all the same: nothing may follow it.
            let reason = proto::DisconnectReason::try_from(leave.reason)
                .unwrap_or(proto::DisconnectReason::ClientInitiated);
            self.start_leaving(reason, Req::Leave(leave));
        } else if (self.state == SessionState::Active && !self.holding) || is_pass_through(&msg) {
            self.push_out(msg);
        } else {
            self.held.push_back(msg);
        }
    }

    /// Send Leave{reason, DISCONNECT}; after this only the Leave goes out.
    pub fn leave(&mut self, reason: proto::DisconnectReason) {
        if matches!(self.state, SessionState::Leaving | SessionState::Closed) {
            return;
        }
        let leave = proto::LeaveRequest {
            can_reconnect: false,
            reason: reason as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            regions: None,
        };
        self.start_leaving(reason, Req::Leave(leave));
    }

    fn start_leaving(&mut self, reason: proto::DisconnectReason, leave: Req) {
        self.held.clear();
        self.outbound.clear();
        self.next_ping_at = None;
        self.dead_at = None;
        self.state = SessionState::Leaving;
        self.pending_client_leave = Some(reason);
        self.push_out(leave);
    }

    fn push_out(&mut self, msg: Req) {
        self.outbound
            .push_back(proto::SignalRequest { message: Some(msg) });
    }

    fn flush_held(&mut self) {
        if self.holding {
            return;
        }
        while let Some(msg) = self.held.pop_front() {
            self.push_out(msg);
        }
    }

    /// The next frame to write to the WebSocket.
    pub fn poll_transmit(&mut self) -> Option<proto::SignalRequest> {
        let frame = self.outbound.pop_front()?;
        if self.state == SessionState::Leaving && matches!(frame.message, Some(Req::Leave(_))) {
            // The Leave is on its way: we are done.
            let reason = self
                .pending_client_leave
                .take()
                .unwrap_or(proto::DisconnectReason::ClientInitiated);
            self.close(CloseReason::ClientLeave(reason));
        }
        Some(frame)
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The newest refresh_token the server sent, if any.
    pub fn latest_token(&self) -> Option<&str> {
        self.latest_token.as_deref()
    }

    /// Why the session is Closed (None while it is not).
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The last measured ping round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The ping interval/timeout in force (from JoinResponse, or `set_ping_config` on resume).
    pub fn ping_config(&self) -> (Option<Duration>, Option<Duration>) {
        (self.ping_interval, self.ping_timeout)
    }

    /// Requests currently held back (not yet handed to `poll_transmit`).
    pub fn held_requests(&self) -> usize {
        self.held.len()
    }

    /// The WebSocket closed under us (or the owner closed it). Frames not yet written are dropped.
    pub fn handle_transport_closed(&mut self) {
        if self.state != SessionState::Closed {
            let reason = match self.pending_client_leave.take() {
                Some(reason) => CloseReason::ClientLeave(reason),
                None => CloseReason::TransportClosed,
            };
            self.close(reason);
        }
        self.outbound.clear();
    }
}
