//! devroom: a LiveKit-protocol room server for roomcast's tests and demo (its own crate, never on a board).
//!
//! Signalling (this module) drives the media plane in [`sfu`]: joins on `/rtc` (v0, two PCs,
//! server offers on the subscriber PC) and `/rtc/v1` (one PC, the client always offers; new
//! subscriptions are delivered by asking the client to re-offer with MediaSectionsRequirement and
//! answering with `mid_to_track_id`, as the Go server does). Everything observable is an
//! [`events::DevRoomEvent`]; faults are injected through [`Faults`] or `/admin/fault/*`.
//!
//! Run it: `devroom --listen 127.0.0.1:7880 --keys devkey:secret [--media-ip IP]
//! [--frame-dir DIR] [--ping-interval 5 --ping-timeout 15]`; it prints
//! `devroom listening on ws://IP:PORT` when ready. HTTP on the same listener:
//!
//! | request | answer |
//! |---|---|
//! | `GET /rtc?…`, `GET /rtc/v1?join_request=…` (WebSocket) | LiveKit signalling; token in `Authorization: Bearer` or `access_token` |
//! | `GET /rtc/validate`, `GET /rtc/v1/validate` | `200 success`, or LiveKit's status with a plain-text reason (CORS `*`) |
//! | `GET /admin/rooms` | rooms → participants (identity, sid, state, signal_path) → tracks (sid, cid, kind, codec, muted, packets, frames, keyframes, bytes, first_rtp_ms, first_rtp_timestamp, last_rtp_timestamp) |
//! | `GET /admin/events?after=SEQ&wait_ms=N` | `{"events":[…]}` with seq > SEQ, long-polling up to N ms |
//! | `POST /admin/fault/drop_ws {"identity"}` | drop the WebSocket without a close frame (the participant stays for a resume) |
//! | `POST /admin/fault/pings {"identity","answer":bool}` | stop/resume answering ping and ping_req |
//! | `POST /admin/fault/leave {"identity","reason","action"}` | send LeaveRequest (reason name or number; DISCONNECT/RESUME/RECONNECT) |
//! | `POST /admin/fault/restart {}` | forget every room and session |
//! | `POST /admin/fault/pause_media {"paused":bool}` | stop/resume forwarding media |
//! | `POST /admin/fault/reject_joins {"count","status"}` | refuse the next connects with that HTTP status (each refused identity's next validate says so once) |
//! | `POST /admin/tracks/{sid}/png` | `{"path","width","height"}`: the latest H.264 frame as PNG |
//! | `POST /twirp/livekit.RoomService/{ListRooms,CreateRoom,DeleteRoom,ListParticipants,GetParticipant,RemoveParticipant,MutePublishedTrack,SendData}` | Twirp, protobuf or JSON bodies |
pub mod auth;
pub mod cli;
pub mod connect;
pub mod demo;
pub mod events;
mod http;
pub mod room;
pub mod sample;
pub mod sdp;
mod server;
pub mod sfu;
pub mod token;
mod twirp;

pub use events::{DevRoomEvent, EventKind};
pub use livekit_protocol::leave_request::Action as LeaveAction;
pub use livekit_protocol::DisconnectReason;

use server::Shared;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to run a devroom.
#[derive(Debug, Clone)]
pub struct DevRoomConfig {
    /// HTTP + WebSocket listener (signal, validate, admin, twirp). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// API key -> secret.
    pub keys: Vec<(String, String)>,
    /// UDP bind + advertised host-candidate address for the SFU.
    pub media_ip: IpAddr,
    /// Sent in JoinResponse and ReconnectResponse (default empty): TURN servers for the
    /// connectivity tests and the demo.
    pub ice_servers: Vec<livekit_protocol::IceServer>,
    /// Passive ICE over TCP next to UDP (default off).
    pub ice_tcp: bool,
    /// Where PNG snapshots go.
    pub frame_dir: PathBuf,
    /// JoinResponse.ping_interval in seconds (LiveKit: 5).
    pub ping_interval: u32,
    /// JoinResponse.ping_timeout in seconds (LiveKit: 15).
    pub ping_timeout: u32,
}

impl DevRoomConfig {
    /// Keys devkey:secret, media on the listen IP, frames in the temp dir.
    pub fn local(listen: SocketAddr) -> Self {
        Self {
            listen,
            keys: vec![("devkey".into(), "secret".into())],
            // A wildcard listen address is no address to advertise in ICE candidates.
            media_ip: if listen.ip().is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            },
            ice_servers: Vec::new(),
            ice_tcp: false,
            frame_dir: std::env::temp_dir().join("devroom-frames"),
            ping_interval: 5,
            ping_timeout: 15,
        }
    }
}

/// A running devroom. Dropping it without `shutdown` leaves the tasks running until the runtime ends.
pub struct DevRoom {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DevRoom {
    pub async fn start(cfg: DevRoomConfig) -> anyhow::Result<DevRoom> {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "devroom cannot listen on {}: {e} (pick another --listen port)",
                    cfg.listen
                )
            })?;
        let local_addr = listener.local_addr()?;
        std::fs::create_dir_all(&cfg.frame_dir).map_err(|e| {
            anyhow::anyhow!(
                "devroom cannot create frame dir {}: {e} (pass --frame-dir)",
                cfg.frame_dir.display()
            )
        })?;
        // One epoch for event times and first_rtp_ms, so both count from devroom start.
        let started = Instant::now();
        let (sfu, mut sfu_events) = sfu::Sfu::with_epoch(
            sfu::SfuConfig {
                media_ip: cfg.media_ip,
                ice_tcp: cfg.ice_tcp,
                frame_dir: cfg.frame_dir.clone(),
            },
            started,
        );
        let shared = Arc::new(Shared::new(cfg, sfu, started));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();

        let app = http::router(shared.clone());
        let mut stop_http = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_http.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "devroom: listener failed");
            }
        }));

        let dispatcher = shared.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = sfu_events.recv().await {
                dispatcher.handle_sfu_event(event).await;
            }
        }));

        let ticker = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = interval.tick() => ticker.tick().await,
                    _ = stopped.changed() => break,
                }
            }
        }));
        Ok(DevRoom {
            shared,
            local_addr,
            stop,
            tasks,
        })
    }

    /// The actual listening address (the port is resolved when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// "ws://127.0.0.1:PORT" (a wildcard listen address is reported as loopback).
    pub fn url(&self) -> String {
        format!("ws://{}", self.reachable_addr())
    }

    /// "http://127.0.0.1:PORT"
    pub fn http_url(&self) -> String {
        format!("http://{}", self.reachable_addr())
    }

    fn reachable_addr(&self) -> SocketAddr {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::from([127, 0, 0, 1]));
        }
        addr
    }

    /// Exactly what GET /admin/rooms returns.
    pub fn snapshot(&self) -> serde_json::Value {
        self.shared.snapshot()
    }

    /// Events from now on (use `wait_event` to also see past ones).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<DevRoomEvent> {
        self.shared.events.subscribe()
    }

    /// Every event so far, oldest first.
    pub fn past_events(&self) -> Vec<DevRoomEvent> {
        self.shared.events.after(0)
    }

    /// The first event, past or future, matching `pred`; None after `timeout`.
    pub async fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&DevRoomEvent) -> bool,
    ) -> Option<DevRoomEvent> {
        self.shared.events.wait_for(timeout, pred).await
    }

    /// Re-checks `check` on every devroom event and every counted media packet until it
    /// returns Some; None after `timeout`. Never paced by a timer: tests wait on counters
    /// ("200 more packets of this track") and on anything that changes with the media flow.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let counters = self.shared.sfu.counters_changed();
        sfu::wait_until_notified(&[&counters, self.shared.events.pushed()], timeout, check).await
    }

    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Decode the latest H.264 frame of a track and write it as PNG.
    pub async fn write_png(&self, track_sid: &str) -> anyhow::Result<PathBuf> {
        self.shared
            .write_png(track_sid)
            .await
            .map(|(path, _, _)| path)
    }

    pub async fn shutdown(self) {
        self.shared.fault_restart().await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Fault injection (the same as `POST /admin/fault/*`). Methods return false when no participant
/// with that identity is connected.
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    /// Drop the participant's WebSocket without a close frame (the participant stays for a resume).
    pub fn drop_ws(&self, identity: &str) -> bool {
        self.shared.fault_drop_ws(identity)
    }

    /// Stop (false) or resume (true) answering the participant's ping/ping_req.
    pub fn answer_pings(&self, identity: &str, answer: bool) -> bool {
        self.shared.fault_answer_pings(identity, answer)
    }

    /// Send LeaveRequest{reason, action}. DISCONNECT and RECONNECT also remove the participant;
    /// RESUME closes only the WebSocket, so the client resumes.
    pub async fn send_leave(
        &self,
        identity: &str,
        reason: DisconnectReason,
        action: LeaveAction,
    ) -> bool {
        self.shared.fault_send_leave(identity, reason, action).await
    }

    /// Forget all rooms and sessions; connections are dropped without a word.
    pub async fn restart(&self) {
        self.shared.fault_restart().await
    }

    /// Stop (true) or resume (false) forwarding media.
    pub fn pause_media(&self, paused: bool) {
        self.shared.fault_pause_media(paused)
    }

    /// Refuse the next `count` connect attempts with HTTP `http_status`. The first validate
    /// request of each refused identity (what SDKs send to learn why) answers with that status
    /// and reason; all other validate requests answer as usual.
    pub fn reject_joins(&self, count: u32, http_status: u16) {
        self.shared.fault_reject_joins(count, http_status)
    }
}
