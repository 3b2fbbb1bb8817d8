//! What `roomcast run` tells systemd (Type=notify, WatchdogSec) and when, as pure decisions.
//!
//! The shell in `cli.rs` feeds room events and watchdog ticks in and sends what comes out with
//! `sd_notify::notify` (a no-op without NOTIFY_SOCKET, i.e. outside systemd).
use super::{ConnectionState, DisconnectKind, RoomEvent};
use std::time::Duration;

/// One line for the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
}

impl Notice {
    pub fn send(&self) {
        use sd_notify::NotifyState;
        let state = match self {
            Notice::Ready => NotifyState::Ready,
            Notice::Status(text) => NotifyState::Status(text),
            Notice::Watchdog => NotifyState::Watchdog,
            Notice::Stopping => NotifyState::Stopping,
        };
        if let Err(e) = sd_notify::notify(&[state]) {
            tracing::debug!("sd_notify: {e}");
        }
    }
}

/// How the room task looks from outside, sampled at each watchdog tick.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub state: ConnectionState,
    /// Time since the room task last went round its loop (it ticks every [`ENGINE_BEAT`]).
    pub engine_silent_for: Duration,
    /// The signalling task still runs (it ends when the WebSocket or ping/pong dies).
    pub signal_alive: bool,
}

/// How often the room task proves it is alive.
pub const ENGINE_BEAT: Duration = Duration::from_secs(1);

/// Decides READY/STATUS/WATCHDOG from room events.
#[derive(Debug)]
pub struct NotifyPolicy {
    tracks_expected: usize,
    tracks_published: usize,
    connected: bool,
    ready_sent: bool,
    /// The server removed us (Leave DISCONNECT): we stay up on purpose, idle.
    removed: bool,
    /// "via <path> (<local> <-> <remote>)", from the last `media_path` event.
    media_path: Option<String>,
}

impl NotifyPolicy {
    /// `tracks_expected`: how many local tracks the config publishes (READY waits for them).
    pub fn new(tracks_expected: usize) -> Self {
        Self {
            tracks_expected,
            tracks_published: 0,
            connected: false,
            ready_sent: false,
            removed: false,
            media_path: None,
        }
    }

    /// What to send for one room event.
    pub fn on_event(&mut self, event: &RoomEvent) -> Vec<Notice> {
        let mut out = Vec::new();
        match event {
            RoomEvent::ConnectionStateChanged { state } => {
                self.connected = *state == ConnectionState::Connected;
                let text = match state {
                    ConnectionState::Connecting => "connecting",
                    ConnectionState::Connected => "connected",
                    ConnectionState::Reconnecting => "reconnecting",
                    ConnectionState::Disconnected => "disconnected",
                };
                match (&self.media_path, state) {
                    (Some(via), ConnectionState::Connected) => {
                        out.push(Notice::Status(format!("{text} {via}")))
                    }
                    _ => out.push(Notice::Status(text.into())),
                }
            }
            RoomEvent::LocalTrackPublished { .. } => self.tracks_published += 1,
            RoomEvent::MediaPath {
                path,
                local,
                remote,
            } => {
                let via = format!("via {path} ({local} <-> {remote})");
                if self.connected {
                    out.push(Notice::Status(format!("connected {via}")));
                }
                self.media_path = Some(via);
            }
            RoomEvent::Disconnected {
                reason,
                kind,
                detail,
            } => {
                let text = match kind {
                    DisconnectKind::Removed => {
                        self.removed = true;
                        format!("disconnected by the server ({reason}): not rejoining; {detail}")
                    }
                    DisconnectKind::Lost => {
                        format!("connection lost ({reason}): {detail}; exiting for a restart")
                    }
                    DisconnectKind::Left => "left the room".into(),
                };
                out.push(Notice::Status(text));
            }
            _ => {}
        }
        if !self.ready_sent && self.connected && self.tracks_published >= self.tracks_expected {
            self.ready_sent = true;
            out.push(Notice::Ready);
        }
        out
    }

    /// Whether to send WATCHDOG=1 at a tick. `interval` is the tick period (WatchdogSec/2).
    ///
    /// While joined: only when the room task went round its loop recently and signalling runs, so
    /// a wedged task stops the pings and systemd restarts us. After a server DISCONNECT we stay
    /// up by design (a restart would rejoin), so the idle process keeps the watchdog fed.
    pub fn watchdog(&self, health: Health, interval: Duration) -> Option<Notice> {
        if self.removed {
            return Some(Notice::Watchdog);
        }
        let allowed_silence = interval.max(ENGINE_BEAT * 2);
        let alive = health.state != ConnectionState::Disconnected
            && health.signal_alive
            && health.engine_silent_for <= allowed_silence;
        alive.then_some(Notice::Watchdog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::TrackKind;

    fn state(state: ConnectionState) -> RoomEvent {
        RoomEvent::ConnectionStateChanged { state }
    }

    fn published() -> RoomEvent {
        RoomEvent::LocalTrackPublished {
            track_sid: "TR_x".into(),
            cid: "c".into(),
            kind: TrackKind::Video,
        }
    }

    fn healthy() -> Health {
        Health {
            state: ConnectionState::Connected,
            engine_silent_for: Duration::from_millis(200),
            signal_alive: true,
        }
    }

    const TICK: Duration = Duration::from_secs(15);

    #[test]
    fn ready_once_connected_and_every_track_published_in_either_order() {
        let mut p = NotifyPolicy::new(2);
        assert_eq!(p.on_event(&published()), vec![]);
        assert_eq!(
            p.on_event(&state(ConnectionState::Connected)),
            vec![Notice::Status("connected".into())]
        );
        assert_eq!(p.on_event(&published()), vec![Notice::Ready]);

        let mut p = NotifyPolicy::new(2);
        p.on_event(&state(ConnectionState::Connected));
        p.on_event(&published());
        assert_eq!(p.on_event(&published()), vec![Notice::Ready]);
    }

    #[test]
    fn status_says_which_media_path_was_selected() {
        let mut p = NotifyPolicy::new(0);
        let path = RoomEvent::MediaPath {
            path: "turn/tls".into(),
            local: "relay udp 198.51.100.1:30007".into(),
            remote: "host udp 198.51.100.1:7882".into(),
        };
        assert_eq!(p.on_event(&path), vec![]);
        assert_eq!(
            p.on_event(&state(ConnectionState::Connected)),
            vec![
                Notice::Status(
                    "connected via turn/tls (relay udp 198.51.100.1:30007 <-> host udp 198.51.100.1:7882)"
                        .into()
                ),
                Notice::Ready
            ]
        );
        // A later report while connected (after an ICE restart) updates STATUS at once.
        let tcp = RoomEvent::MediaPath {
            path: "tcp".into(),
            local: "host tcp 198.51.100.2:9".into(),
            remote: "host tcp 198.51.100.1:7881".into(),
        };
        assert_eq!(
            p.on_event(&tcp),
            vec![Notice::Status(
                "connected via tcp (host tcp 198.51.100.2:9 <-> host tcp 198.51.100.1:7881)".into()
            )]
        );
    }

    #[test]
    fn ready_is_sent_only_once() {
        let mut p = NotifyPolicy::new(1);
        p.on_event(&published());
        assert!(p
            .on_event(&state(ConnectionState::Connected))
            .contains(&Notice::Ready));
        p.on_event(&state(ConnectionState::Connecting));
        let again = p.on_event(&state(ConnectionState::Connected));
        assert_eq!(again, vec![Notice::Status("connected".into())]);
    }

    #[test]
    fn no_tracks_configured_means_ready_when_connected() {
        let mut p = NotifyPolicy::new(0);
        assert!(p
            .on_event(&state(ConnectionState::Connected))
            .contains(&Notice::Ready));
    }

    #[test]
    fn every_state_change_is_a_status_line() {
        let mut p = NotifyPolicy::new(5);
        for (s, text) in [
            (ConnectionState::Connecting, "connecting"),
            (ConnectionState::Connected, "connected"),
            (ConnectionState::Reconnecting, "reconnecting"),
            (ConnectionState::Disconnected, "disconnected"),
        ] {
            assert_eq!(p.on_event(&state(s)), vec![Notice::Status(text.into())]);
        }
    }

    #[test]
    fn disconnect_status_says_whether_we_rejoin() {
        let mut p = NotifyPolicy::new(0);
        let removed = p.on_event(&RoomEvent::Disconnected {
            reason: "DUPLICATE_IDENTITY".into(),
            kind: DisconnectKind::Removed,
            detail: "the server sent Leave DISCONNECT".into(),
        });
        let [Notice::Status(text)] = removed.as_slice() else {
            panic!("{removed:?}")
        };
        assert!(text.contains("DUPLICATE_IDENTITY") && text.contains("not rejoining"));

        let lost = NotifyPolicy::new(0).on_event(&RoomEvent::Disconnected {
            reason: "SIGNAL_CLOSE".into(),
            kind: DisconnectKind::Lost,
            detail: "no pong within 15 s".into(),
        });
        let [Notice::Status(text)] = lost.as_slice() else {
            panic!("{lost:?}")
        };
        assert!(text.contains("no pong") && text.contains("restart"));
    }

    #[test]
    fn watchdog_pings_while_the_task_ticks_and_signalling_runs() {
        let p = NotifyPolicy::new(0);
        assert_eq!(p.watchdog(healthy(), TICK), Some(Notice::Watchdog));
        let joining = Health {
            state: ConnectionState::Connecting,
            ..healthy()
        };
        assert_eq!(p.watchdog(joining, TICK), Some(Notice::Watchdog));
    }

    #[test]
    fn a_stuck_room_task_stops_the_pings() {
        let p = NotifyPolicy::new(0);
        let stuck = Health {
            engine_silent_for: TICK + Duration::from_millis(1),
            ..healthy()
        };
        assert_eq!(p.watchdog(stuck, TICK), None);
        // A short WatchdogSec still tolerates one missed beat, not more.
        let short = Duration::from_millis(500);
        let one_beat_late = Health {
            engine_silent_for: Duration::from_millis(1500),
            ..healthy()
        };
        assert_eq!(p.watchdog(one_beat_late, short), Some(Notice::Watchdog));
        let stalled = Health {
            engine_silent_for: Duration::from_millis(2500),
            ..healthy()
        };
        assert_eq!(p.watchdog(stalled, short), None);
    }

    #[test]
    fn dead_signalling_or_a_lost_room_stops_the_pings() {
        let p = NotifyPolicy::new(0);
        let no_signal = Health {
            signal_alive: false,
            ..healthy()
        };
        assert_eq!(p.watchdog(no_signal, TICK), None);
        let gone = Health {
            state: ConnectionState::Disconnected,
            ..healthy()
        };
        assert_eq!(p.watchdog(gone, TICK), None);
    }

    #[test]
    fn after_a_server_disconnect_the_idle_process_keeps_the_watchdog_fed() {
        let mut p = NotifyPolicy::new(0);
        p.on_event(&RoomEvent::Disconnected {
            reason: "DUPLICATE_IDENTITY".into(),
            kind: DisconnectKind::Removed,
            detail: String::new(),
        });
        let idle = Health {
            state: ConnectionState::Disconnected,
            engine_silent_for: Duration::from_secs(3600),
            signal_alive: false,
        };
        assert_eq!(p.watchdog(idle, TICK), Some(Notice::Watchdog));
    }
}
