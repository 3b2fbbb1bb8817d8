//! What happened inside devroom, in order: the event log behind `DevRoom::events`,
//! `DevRoom::wait_event` and `GET /admin/events`.
//!
//! Tests in any language wait on these events instead of sleeping, so every event is kept
//! (a devroom lives for one test run) and waiting also sees events that happened before.
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

/// One thing that happened, numbered (`seq` from 1) and timed (`at_ms` since devroom start).
/// Serialises flat: `{"seq":1,"at_ms":12,"type":"participant_joined","room":..}`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DevRoomEvent {
    pub seq: u64,
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The event payloads. `reason` fields carry the DisconnectReason name (e.g. "DUPLICATE_IDENTITY").
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    ParticipantJoined {
        room: String,
        identity: String,
        sid: String,
        signal_path: String,
    },
    ParticipantResumed {
        identity: String,
        sid: String,
    },
    LeaveReceived {
        identity: String,
        sid: String,
        reason: String,
    },
    ParticipantLeft {
        identity: String,
        sid: String,
        reason: String,
    },
    /// The track's media arrived and was matched to its AddTrack (mime is the negotiated codec).
    TrackPublished {
        identity: String,
        track_sid: String,
        cid: String,
        kind: String,
        mime: String,
    },
    FirstRtp {
        track_sid: String,
    },
    KeyframeRequested {
        track_sid: String,
    },
    JoinRejected {
        status: u16,
        reason: String,
    },
    WsClosed {
        identity: String,
        sid: String,
        code: u16,
    },
    /// Devroom sent a LeaveRequest (duplicate identity, fault injection, state mismatch, removal).
    LeaveSent {
        identity: String,
        sid: String,
        reason: String,
        action: String,
    },
    /// A track's muted flag changed: by its publisher (MuteTrack) or by the server API
    /// (Twirp MutePublishedTrack, which also tells the publisher).
    TrackMuted {
        identity: String,
        track_sid: String,
        muted: bool,
        by: String,
    },
    /// A subscriber was attached to a published track.
    TrackSubscribed {
        identity: String,
        track_sid: String,
    },
    /// A data packet was relayed from `from` to `to` identities.
    DataForwarded {
        from: String,
        to: Vec<String>,
        reliable: bool,
        bytes: usize,
    },
    /// A peer connection changed state ("connected", "failed", ...).
    PeerState {
        identity: String,
        sid: String,
        pc: String,
        state: String,
    },
    /// Everything was forgotten by the restart fault.
    Restarted {},
}

/// Append-only, shared log with wake-ups for waiters.
pub struct EventLog {
    started: Instant,
    events: Mutex<Vec<DevRoomEvent>>,
    notify: Notify,
    tx: broadcast::Sender<DevRoomEvent>,
}

impl EventLog {
    pub fn new(started: Instant) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            started,
            events: Mutex::new(Vec::new()),
            notify: Notify::new(),
            tx,
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn ms_since_start(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn push(&self, kind: EventKind) -> DevRoomEvent {
        let event = {
            let mut events = self.events.lock().unwrap();
            let event = DevRoomEvent {
                seq: events.len() as u64 + 1,
                at_ms: self.ms_since_start(),
                kind,
            };
            events.push(event.clone());
            event
        };
        tracing::debug!(?event, "devroom event");
        let _ = self.tx.send(event.clone());
        self.notify.notify_waiters();
        event
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DevRoomEvent> {
        self.tx.subscribe()
    }

    /// Events with `seq > after`.
    pub fn after(&self, after: u64) -> Vec<DevRoomEvent> {
        let events = self.events.lock().unwrap();
        let start = (after as usize).min(events.len());
        events[start..].to_vec()
    }

    /// Fires on every event pushed (for [`crate::sfu::wait_until_notified`]).
    pub fn pushed(&self) -> &Notify {
        &self.notify
    }

    /// Events with `seq > after`, waiting up to `wait` for at least one.
    pub async fn wait_after(&self, after: u64, wait: Duration) -> Vec<DevRoomEvent> {
        crate::sfu::wait_until_notified(&[&self.notify], wait, || {
            let found = self.after(after);
            (!found.is_empty()).then_some(found)
        })
        .await
        .unwrap_or_default()
    }

    /// The first event (past or future) matching `pred`, or None after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&DevRoomEvent) -> bool,
    ) -> Option<DevRoomEvent> {
        let mut checked = 0u64;
        crate::sfu::wait_until_notified(&[&self.notify], timeout, || {
            self.after(checked).into_iter().find(|event| {
                checked = event.seq;
                pred(event)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn joined(identity: &str) -> EventKind {
        EventKind::ParticipantJoined {
            room: "r".into(),
            identity: identity.into(),
            sid: "PA_1".into(),
            signal_path: "v1".into(),
        }
    }

    #[test]
    fn events_serialise_flat_with_type_tag() {
        let log = EventLog::new(Instant::now());
        let event = log.push(joined("a"));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["seq"], 1);
        assert_eq!(json["type"], "participant_joined");
        assert_eq!(json["identity"], "a");
        assert_eq!(json["signal_path"], "v1");
        assert!(json["at_ms"].is_u64());
    }

    #[test]
    fn after_returns_only_newer_events() {
        let log = EventLog::new(Instant::now());
        log.push(joined("a"));
        log.push(joined("b"));
        log.push(joined("c"));
        let seqs: Vec<u64> = log.after(1).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert!(log.after(3).is_empty());
        assert!(log.after(99).is_empty());
    }

    #[tokio::test]
    async fn wait_for_sees_past_and_future_events() {
        let log = Arc::new(EventLog::new(Instant::now()));
        log.push(joined("past"));
        let past = log
            .wait_for(Duration::from_millis(10), |e| matches!(&e.kind, EventKind::ParticipantJoined { identity, .. } if identity == "past"))
            .await;
        assert_eq!(past.map(|e| e.seq), Some(1));

        let writer = log.clone();
        let waiter = tokio::spawn(async move {
            writer
                .wait_for(Duration::from_secs(5), |e| matches!(&e.kind, EventKind::ParticipantJoined { identity, .. } if identity == "future"))
                .await
        });
        tokio::task::yield_now().await;
        log.push(joined("other"));
        log.push(joined("future"));
        assert_eq!(waiter.await.unwrap().map(|e| e.seq), Some(3));
    }

    #[tokio::test]
    async fn wait_after_times_out_empty() {
        let log = EventLog::new(Instant::now());
        log.push(joined("a"));
        assert!(log
            .wait_after(1, Duration::from_millis(20))
            .await
            .is_empty());
        assert_eq!(log.wait_after(0, Duration::from_millis(20)).await.len(), 1);
    }
}
