//! The signalling session as a pure state machine (sans-IO, in the way of str0m's `Rtc`):
//! it takes decoded `SignalResponse`s and clock ticks, and hands back frames to send, timers and events.
//! No sockets, no tasks, no clocks of its own: the `ws` shell moves the bytes.
//!
//! The API below is the contract the shell and the room code are written against; keep it stable.
use livekit_protocol as proto;
use std::time::{Duration, Instant};

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
        Self { first_message_timeout: Duration::from_secs(5), resuming: false }
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

/// Something the session tells its owner.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    Joined(Box<proto::JoinResponse>),
    Resumed(Box<proto::ReconnectResponse>),
    Answer(proto::SessionDescription),
    Offer(proto::SessionDescription),
    Trickle { target: proto::SignalTarget, candidate_init: String, is_final: bool },
    TrackPublished(proto::TrackPublishedResponse),
    TrackUnpublished(proto::TrackUnpublishedResponse),
    ParticipantUpdate(Vec<proto::ParticipantInfo>),
    RoomUpdate(proto::Room),
    MediaSectionsRequirement(proto::MediaSectionsRequirement),
    RemoteMute(proto::MuteTrackRequest),
    RequestResponse(proto::RequestResponse),
    TokenRefreshed(String),
    /// The server told us to leave: obey `action` (DISCONNECT never rejoins).
    Leave { reason: proto::DisconnectReason, action: proto::leave_request::Action },
    /// No message for ping_timeout: the link is dead.
    PingTimeout,
    /// No first message within `first_message_timeout`.
    FirstMessageTimeout,
    /// A message this session does not act on, passed through.
    Other(Box<proto::signal_response::Message>),
}

/// The sans-IO signalling session.
pub struct SignalSession {
    _private: (),
}

impl SignalSession {
    pub fn new(_opts: SessionOptions, _now: Instant) -> Self {
        todo!("signal session")
    }
    /// Feed one decoded message from the server.
    pub fn handle_response(&mut self, _msg: proto::SignalResponse, _now: Instant) {
        todo!()
    }
    /// Advance the clock: fires pings and timeouts.
    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }
    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// Queue a request (held back while not Active, except pass-through kinds).
    pub fn send(&mut self, _msg: proto::signal_request::Message) {
        todo!()
    }
    /// Send Leave{reason, DISCONNECT}; after this only the Leave goes out.
    pub fn leave(&mut self, _reason: proto::DisconnectReason) {
        todo!()
    }
    /// The next frame to write to the WebSocket.
    pub fn poll_transmit(&mut self) -> Option<proto::SignalRequest> {
        todo!()
    }
    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        todo!()
    }
    pub fn state(&self) -> SessionState {
        todo!()
    }
    /// The newest refresh_token the server sent, if any.
    pub fn latest_token(&self) -> Option<&str> {
        todo!()
    }
}
