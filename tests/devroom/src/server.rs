//! The signalling brain: joins, resumes, requests from clients, SFU events, removals.
//!
//! Locking rule: `Shared::state` is a std Mutex and is never held across an `.await`; every
//! function takes what it needs under the lock, drops it, then talks to the SFU.
use super::auth::JoinGrant;
use super::connect::{ConnectRequest, Path};
use super::events::{EventKind, EventLog};
use super::room::*;
use super::sdp;
use super::sfu::{PeerId, PeerRole, Sfu, SfuEvent, TrackKey, TrackKind};
use super::DevRoomConfig;
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_response::Message as Resp;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a participant without a signal connection is kept for a resume.
pub const RESUME_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct FaultState {
    pub reject_joins: u32,
    pub reject_status: u16,
    pub paused: bool,
    /// Injected rejections not yet explained: (identity of the refused connect, status,
    /// reason). The validate request that SDKs send right after a failed upgrade, with the
    /// same identity, consumes its entry; every other validate answers normally.
    pub unexplained_rejections: std::collections::VecDeque<(String, u16, String)>,
}

/// At most this many injected rejections wait for their validate request (oldest dropped).
const UNEXPLAINED_REJECTIONS_KEPT: usize = 16;

pub struct Shared {
    pub cfg: DevRoomConfig,
    pub events: EventLog,
    pub sfu: Sfu,
    pub state: Mutex<State>,
    pub faults: Mutex<FaultState>,
    pub next_conn: AtomicU64,
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn reason_name(reason: i32) -> String {
    proto::DisconnectReason::try_from(reason)
        .map(|r| r.as_str_name().to_string())
        .unwrap_or_else(|_| reason.to_string())
}

fn action_name(action: i32) -> String {
    proto::leave_request::Action::try_from(action)
        .map(|a| a.as_str_name().to_string())
        .unwrap_or_else(|_| action.to_string())
}

pub fn leave_message(
    reason: proto::DisconnectReason,
    action: proto::leave_request::Action,
) -> Resp {
    Resp::Leave(proto::LeaveRequest {
        can_reconnect: action != proto::leave_request::Action::Disconnect,
        reason: reason as i32,
        action: action as i32,
        regions: None,
    })
}

fn kind_of(kind: TrackKind) -> proto::TrackType {
    match kind {
        TrackKind::Audio => proto::TrackType::Audio,
        TrackKind::Video => proto::TrackType::Video,
    }
}

impl Shared {
    pub fn new(cfg: DevRoomConfig, sfu: Sfu, started: Instant) -> Self {
        Self {
            cfg,
            events: EventLog::new(started),
            sfu,
            state: Mutex::new(State::default()),
            faults: Mutex::new(FaultState::default()),
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn server_info(&self) -> proto::ServerInfo {
        proto::ServerInfo {
            edition: proto::server_info::Edition::Standard as i32,
            version: "1.9.0".into(),
            protocol: 16,
            region: "devroom".into(),
            node_id: "ND_devroom".into(),
            ..Default::default()
        }
    }

    pub fn secret_for(&self, key: &str) -> Option<&str> {
        self.cfg
            .keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.as_str())
    }

    fn send_to(&self, room: &str, sid: &str, message: Resp) {
        let state = self.state.lock().unwrap();
        if let Some(sink) = state.participant(room, sid).and_then(|p| p.signal.clone()) {
            sink.send(message);
        }
    }

    fn refresh_token_for(&self, grant: &JoinGrant) -> Option<Resp> {
        let secret = self.secret_for(&grant.api_key)?;
        grant.refreshed_token(secret).map(Resp::RefreshToken)
    }

    /// A new WebSocket arrived with a verified grant: join or resume. Returns the participant
    /// (room, sid) this connection now drives, or None when it was turned away (Leave sent).
    pub async fn open_session(
        self: &Arc<Self>,
        grant: JoinGrant,
        req: ConnectRequest,
        tx: mpsc::UnboundedSender<Outbound>,
    ) -> anyhow::Result<Option<(String, String, u64)>> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let sink = SignalSink { conn, tx };
        if req.reconnect {
            self.resume(grant, req, sink).await
        } else {
            self.join(grant, req, sink).await.map(Some)
        }
    }

    async fn join(
        self: &Arc<Self>,
        grant: JoinGrant,
        req: ConnectRequest,
        sink: SignalSink,
    ) -> anyhow::Result<(String, String, u64)> {
        let publisher_peer = self.sfu.create_peer(PeerRole::ClientOffers).await?;
        let subscriber_peer = match req.path {
            Path::V0 => Some(self.sfu.create_peer(PeerRole::ServerOffers).await?),
            Path::V1 => None,
        };
        let sid = new_sid("PA_");
        let room_name = grant.room.clone();
        let identity = grant.identity.clone();
        let conn = sink.conn;
        let (old, join_response, info) = {
            let mut state = self.state.lock().unwrap();
            let State { rooms, peers } = &mut *state;
            let room = rooms.entry(room_name.clone()).or_insert_with(|| Room {
                name: room_name.clone(),
                sid: new_sid("RM_"),
                created_ms: unix_ms(),
                participants: Vec::new(),
            });
            let old = room
                .participants
                .iter()
                .position(|p| p.identity == identity)
                .map(|i| {
                    let old = room.participants.remove(i);
                    peers.retain(|_, owner| owner.sid != old.sid);
                    old
                });
            let participant = Participant {
                sid: sid.clone(),
                identity: identity.clone(),
                path: req.path,
                state: proto::participant_info::State::Joined,
                joined_at_ms: unix_ms(),
                version: 1,
                protocol: req.protocol,
                client_protocol: req.client_protocol,
                auto_subscribe: req.auto_subscribe,
                metadata: if req.metadata.is_empty() {
                    grant.metadata.clone()
                } else {
                    req.metadata.clone()
                },
                grant: grant.clone(),
                publisher_peer,
                subscriber_peer,
                tracks: Vec::new(),
                unmatched: Vec::new(),
                signal: Some(sink.clone()),
                answer_pings: true,
                negotiation: SubscriberNegotiation::default(),
                subscriptions: Vec::new(),
                disconnected_since: None,
            };
            peers.insert(
                publisher_peer,
                PeerOwner {
                    room: room_name.clone(),
                    sid: sid.clone(),
                    pc: Pc::Publisher,
                },
            );
            if let Some(peer) = subscriber_peer {
                peers.insert(
                    peer,
                    PeerOwner {
                        room: room_name.clone(),
                        sid: sid.clone(),
                        pc: Pc::Subscriber,
                    },
                );
            }
            let info = participant.info();
            let join_response = proto::JoinResponse {
                room: None,
                participant: Some(info.clone()),
                other_participants: room.others(&sid),
                server_version: "1.9.0".into(),
                ice_servers: self.cfg.ice_servers.clone(),
                subscriber_primary: req.path == Path::V0
                    && req.protocol > 2
                    && grant.can_subscribe(),
                ping_timeout: self.cfg.ping_timeout as i32,
                ping_interval: self.cfg.ping_interval as i32,
                server_info: Some(self.server_info()),
                server_region: "devroom".into(),
                fast_publish: grant.can_publish(),
                ..Default::default()
            };
            room.participants.push(participant);
            let join_response = proto::JoinResponse {
                room: Some(room.info()),
                ..join_response
            };
            (old, join_response, info)
        };
        sink.send(Resp::Join(join_response));
        if let Some(refresh) = self.refresh_token_for(&grant) {
            sink.send(refresh);
        }
        if let Some(old) = old {
            self.finish_removal(
                old,
                &room_name,
                proto::DisconnectReason::DuplicateIdentity,
                Some(proto::leave_request::Action::Disconnect),
            )
            .await;
        }
        {
            let state = self.state.lock().unwrap();
            if let Some(room) = state.rooms.get(&room_name) {
                room.broadcast(
                    &sid,
                    &Resp::Update(proto::ParticipantUpdate {
                        participants: vec![info],
                    }),
                );
            }
        }
        self.events.push(EventKind::ParticipantJoined {
            room: room_name.clone(),
            identity,
            sid: sid.clone(),
            signal_path: req.path.as_str().into(),
        });
        if let Some(offer) = req.publisher_offer {
            self.handle_client_offer(&room_name, &sid, offer).await;
        }
        self.subscribe_to_existing(&room_name, &sid).await;
        if req.path == Path::V0 {
            self.negotiate_subscriber(&room_name, &sid, false).await;
        }
        Ok((room_name, sid, conn))
    }

    async fn resume(
        self: &Arc<Self>,
        grant: JoinGrant,
        req: ConnectRequest,
        sink: SignalSink,
    ) -> anyhow::Result<Option<(String, String, u64)>> {
        let room_name = grant.room.clone();
        let found = {
            let mut state = self.state.lock().unwrap();
            match state.participant_mut(&room_name, &req.participant_sid) {
                Some(p) if p.identity == grant.identity => {
                    let old = p.signal.replace(sink.clone());
                    p.disconnected_since = None;
                    p.grant = grant.clone();
                    Some((old, p.path))
                }
                _ => None,
            }
        };
        let Some((old_sink, path)) = found else {
            sink.send(leave_message(
                proto::DisconnectReason::StateMismatch,
                proto::leave_request::Action::Reconnect,
            ));
            let _ = sink.tx.send(Outbound::Close(1000));
            self.events.push(EventKind::LeaveSent {
                identity: grant.identity.clone(),
                sid: req.participant_sid.clone(),
                reason: "STATE_MISMATCH".into(),
                action: "RECONNECT".into(),
            });
            return Ok(None);
        };
        if let Some(old) = old_sink {
            let _ = old.tx.send(Outbound::Drop);
        }
        let sid = req.participant_sid.clone();
        sink.send(Resp::Reconnect(proto::ReconnectResponse {
            ice_servers: self.cfg.ice_servers.clone(),
            client_configuration: None,
            server_info: Some(self.server_info()),
            last_message_seq: 0,
        }));
        if let Some(refresh) = self.refresh_token_for(&grant) {
            sink.send(refresh);
        }
        let everyone = {
            let state = self.state.lock().unwrap();
            state
                .rooms
                .get(&room_name)
                .map(|r| {
                    r.participants
                        .iter()
                        .filter(|p| !p.grant.video.hidden || p.sid == sid)
                        .map(Participant::info)
                        .collect()
                })
                .unwrap_or_default()
        };
        sink.send(Resp::Update(proto::ParticipantUpdate {
            participants: everyone,
        }));
        self.events.push(EventKind::ParticipantResumed {
            identity: grant.identity.clone(),
            sid: sid.clone(),
        });
        if let Some(offer) = req.publisher_offer {
            self.handle_client_offer(&room_name, &sid, offer).await;
        }
        if path == Path::V0 {
            self.negotiate_subscriber(&room_name, &sid, true).await;
        }
        Ok(Some((room_name, sid, sink.conn)))
    }

    /// The WebSocket of `conn` ended (client close, error or drop). The participant stays for
    /// a resume unless it left; `identity` comes from the connection, which may outlive it.
    pub fn on_ws_closed(&self, room: &str, sid: &str, identity: &str, conn: u64, code: u16) {
        {
            let mut state = self.state.lock().unwrap();
            if let Some(p) = state.participant_mut(room, sid) {
                if p.signal.as_ref().is_some_and(|s| s.conn == conn) {
                    p.signal = None;
                    p.disconnected_since = Some(Instant::now());
                }
            }
        }
        self.events.push(EventKind::WsClosed {
            identity: identity.into(),
            sid: sid.into(),
            code,
        });
    }

    /// Remove a participant from its room and tell everyone.
    pub async fn remove_participant(
        self: &Arc<Self>,
        room: &str,
        sid: &str,
        reason: proto::DisconnectReason,
        leave: Option<proto::leave_request::Action>,
    ) -> bool {
        let taken = {
            let mut state = self.state.lock().unwrap();
            let State { rooms, peers } = &mut *state;
            let Some(r) = rooms.get_mut(room) else {
                return false;
            };
            let Some(i) = r.participants.iter().position(|p| p.sid == sid) else {
                return false;
            };
            let p = r.participants.remove(i);
            peers.retain(|_, owner| owner.sid != sid);
            p
        };
        self.finish_removal(taken, room, reason, leave).await;
        true
    }

    async fn finish_removal(
        self: &Arc<Self>,
        mut p: Participant,
        room: &str,
        reason: proto::DisconnectReason,
        leave: Option<proto::leave_request::Action>,
    ) {
        if let Some(sink) = &p.signal {
            if let Some(action) = leave {
                sink.send(leave_message(reason, action));
                self.events.push(EventKind::LeaveSent {
                    identity: p.identity.clone(),
                    sid: p.sid.clone(),
                    reason: reason.as_str_name().into(),
                    action: action.as_str_name().into(),
                });
            }
            let _ = sink.tx.send(Outbound::Close(1000));
        }
        let published: Vec<(String, TrackKey)> = p
            .tracks
            .iter()
            .filter_map(|t| t.key.clone().map(|k| (t.info.sid.clone(), k)))
            .collect();
        let published_sids: HashSet<&str> = published.iter().map(|(s, _)| s.as_str()).collect();
        p.state = proto::participant_info::State::Disconnected;
        p.bump_version();
        let mut gone = p.info();
        gone.disconnect_reason = reason as i32;
        let affected: Vec<(String, PeerId)> = {
            let mut state = self.state.lock().unwrap();
            let mut affected = Vec::new();
            let mut empty = false;
            if let Some(r) = state.rooms.get_mut(room) {
                for q in r.participants.iter_mut() {
                    let before = q.subscriptions.len();
                    q.subscriptions
                        .retain(|s| !published_sids.contains(s.as_str()));
                    if q.subscriptions.len() != before {
                        affected.push((q.sid.clone(), q.receive_peer()));
                    }
                }
                // Not to a newer session of the same identity (duplicate identity): the Go server
                // removes the old one before the new one exists, and an SDK that sees its own
                // identity DISCONNECTED does a full rejoin.
                let update = Resp::Update(proto::ParticipantUpdate {
                    participants: vec![gone],
                });
                if !p.grant.video.hidden {
                    for q in r.participants.iter().filter(|q| q.identity != p.identity) {
                        if let Some(sink) = &q.signal {
                            sink.send(update.clone());
                        }
                    }
                }
                empty = r.participants.is_empty();
            }
            if empty {
                state.rooms.remove(room);
            }
            affected
        };
        // The SFU asks for the renegotiations this causes (RenegotiationNeeded).
        for (_, q_peer) in affected {
            for (_, key) in &published {
                self.sfu.unforward(key, q_peer).await;
            }
        }
        self.sfu.close_peer(p.publisher_peer).await;
        if let Some(peer) = p.subscriber_peer {
            self.sfu.close_peer(peer).await;
        }
        self.events.push(EventKind::ParticipantLeft {
            identity: p.identity.clone(),
            sid: p.sid.clone(),
            reason: reason.as_str_name().into(),
        });
    }

    /// Forward every published track in the room to a newly joined participant.
    async fn subscribe_to_existing(self: &Arc<Self>, room: &str, sid: &str) {
        let (peer, keys) = {
            let state = self.state.lock().unwrap();
            let Some(r) = state.rooms.get(room) else {
                return;
            };
            let Some(me) = r.participant(sid) else { return };
            if !me.auto_subscribe || !me.can_receive() {
                return;
            }
            let keys: Vec<(String, TrackKey)> = r
                .participants
                .iter()
                .filter(|p| p.sid != sid)
                .flat_map(|p| {
                    p.tracks
                        .iter()
                        .filter_map(|t| t.key.clone().map(|k| (t.info.sid.clone(), k)))
                })
                .collect();
            (me.receive_peer(), keys)
        };
        if keys.is_empty() {
            return;
        }
        // The SFU emits RenegotiationNeeded for each forward (v0: offer, v1: ask for a re-offer).
        for (track_sid, key) in keys {
            self.forward_one(room, sid, peer, &track_sid, &key).await;
        }
    }

    async fn forward_one(
        &self,
        room: &str,
        sid: &str,
        peer: PeerId,
        track_sid: &str,
        key: &TrackKey,
    ) {
        if let Err(e) = self.sfu.forward(key, peer).await {
            tracing::warn!(%track_sid, error = %e, "devroom: forwarding failed");
            return;
        }
        let identity = {
            let mut state = self.state.lock().unwrap();
            match state.participant_mut(room, sid) {
                // Already subscribed (a join racing a publish forwards twice; the SFU ignores
                // the repeat): report it once.
                Some(p) if p.subscriptions.iter().any(|s| s == track_sid) => return,
                Some(p) => {
                    p.subscriptions.push(track_sid.to_string());
                    p.identity.clone()
                }
                None => return,
            }
        };
        self.events.push(EventKind::TrackSubscribed {
            identity,
            track_sid: track_sid.into(),
        });
    }

    fn path_of(&self, room: &str, sid: &str) -> Option<Path> {
        self.state
            .lock()
            .unwrap()
            .participant(room, sid)
            .map(|p| p.path)
    }

    /// Something changed in what `sid` receives and the SFU did not say so itself: v0 re-offers
    /// the subscriber PC. (v1 re-offers come from the SFU's RenegotiationNeeded.)
    pub async fn renegotiate(self: &Arc<Self>, room: &str, sid: &str) {
        if self.path_of(room, sid) == Some(Path::V0) {
            self.negotiate_subscriber(room, sid, false).await;
        }
    }

    /// v0: (re-)offer the subscriber PC; one offer in flight at a time, later needs coalesce.
    pub async fn negotiate_subscriber(self: &Arc<Self>, room: &str, sid: &str, ice_restart: bool) {
        let (peer, offer_id) = {
            let mut state = self.state.lock().unwrap();
            let Some(p) = state.participant_mut(room, sid) else {
                return;
            };
            let Some(peer) = p.subscriber_peer else {
                return;
            };
            if p.negotiation.awaiting_answer && !ice_restart {
                p.negotiation.again = true;
                return;
            }
            p.negotiation.awaiting_answer = true;
            p.negotiation.next_offer_id += 1;
            (peer, p.negotiation.next_offer_id)
        };
        match self.sfu.create_offer(peer, ice_restart).await {
            Ok(sdp) => self.send_to(
                room,
                sid,
                Resp::Offer(proto::SessionDescription {
                    r#type: "offer".into(),
                    sdp,
                    id: offer_id,
                    mid_to_track_id: Default::default(),
                }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "devroom: cannot create subscriber offer");
                if let Some(p) = self.state.lock().unwrap().participant_mut(room, sid) {
                    p.negotiation.awaiting_answer = false;
                }
            }
        }
    }

    /// An offer on the publisher (v0) or single (v1) PC: record it, let the SFU answer.
    pub async fn handle_client_offer(
        self: &Arc<Self>,
        room: &str,
        sid: &str,
        offer: proto::SessionDescription,
    ) {
        let (peer, offer_sdp) = {
            let mut state = self.state.lock().unwrap();
            let Some(p) = state.participant_mut(room, sid) else {
                return;
            };
            // Note which mid carries which cid (TrackInfo.mid), and which video codec its
            // AddTrack asked for: the answer must choose that one (see sdp::prefer_codec).
            let mut wanted: Vec<(String, String)> = Vec::new();
            for section in sdp::media_sections(&offer.sdp) {
                if let Some(cid) = &section.msid_track_id {
                    if let Some(t) = p.tracks.iter_mut().find(|t| &t.cid == cid) {
                        t.info.mid = section.mid.clone();
                        let requested = t.info.codecs.first().map(|c| c.mime_type.clone());
                        if let Some(codec) =
                            requested.as_deref().and_then(|m| m.strip_prefix("video/"))
                        {
                            wanted.push((section.mid.clone(), codec.to_string()));
                        }
                    }
                }
            }
            let mut offer_sdp = offer.sdp.clone();
            for (mid, codec) in wanted {
                offer_sdp = sdp::prefer_codec(&offer_sdp, &[mid], &codec);
            }
            (p.publisher_peer, offer_sdp)
        };
        self.unpublish_stopped_tracks(room, sid, &offer.sdp).await;
        match self.sfu.accept_offer(peer, offer_sdp).await {
            Ok(answer) => self.send_to(
                room,
                sid,
                Resp::Answer(proto::SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer.sdp,
                    id: offer.id,
                    mid_to_track_id: answer.mid_to_track_id,
                }),
            ),
            Err(e) => tracing::warn!(error = %e, "devroom: cannot answer client offer"),
        }
    }

    /// There is no unpublish request: a client removes the sender and re-offers. A published
    /// track whose m-section is gone or no longer sending is unpublished: subscribers are detached
    /// and everyone gets the participant without it.
    async fn unpublish_stopped_tracks(self: &Arc<Self>, room: &str, sid: &str, offer_sdp: &str) {
        let sections = sdp::media_sections(offer_sdp);
        let (removed, info) = {
            let mut state = self.state.lock().unwrap();
            let Some(p) = state.participant_mut(room, sid) else {
                return;
            };
            let stopped = |t: &Track| {
                t.key.is_some()
                    && !t.info.mid.is_empty()
                    && !sections
                        .iter()
                        .any(|s| s.mid == t.info.mid && s.client_sends())
            };
            let removed: Vec<Track> = p.tracks.iter().filter(|t| stopped(t)).cloned().collect();
            if removed.is_empty() {
                return;
            }
            p.tracks.retain(|t| !stopped(t));
            p.bump_version();
            (removed, p.info())
        };
        let gone: HashSet<String> = removed.iter().map(|t| t.info.sid.clone()).collect();
        let detach: Vec<(PeerId, TrackKey)> = {
            let mut state = self.state.lock().unwrap();
            let Some(r) = state.rooms.get_mut(room) else {
                return;
            };
            let mut detach = Vec::new();
            for q in r.participants.iter_mut() {
                for t in &removed {
                    if q.subscriptions.contains(&t.info.sid) {
                        detach.push((q.receive_peer(), t.key.clone().expect("published")));
                    }
                }
                q.subscriptions.retain(|s| !gone.contains(s));
            }
            r.broadcast(
                sid,
                &Resp::Update(proto::ParticipantUpdate {
                    participants: vec![info],
                }),
            );
            detach
        };
        for (peer, key) in detach {
            self.sfu.unforward(&key, peer).await;
        }
    }

    /// One SignalRequest from the client of (room, sid).
    pub async fn handle_request(
        self: &Arc<Self>,
        room: &str,
        sid: &str,
        request: proto::SignalRequest,
    ) {
        use proto::signal_request::Message as Req;
        let Some(message) = request.message else {
            return;
        };
        match message {
            Req::Offer(offer) => self.handle_client_offer(room, sid, offer).await,
            Req::Answer(answer) => {
                let peer = self
                    .state
                    .lock()
                    .unwrap()
                    .participant(room, sid)
                    .and_then(|p| p.subscriber_peer);
                let Some(peer) = peer else { return };
                if let Err(e) = self.sfu.accept_answer(peer, answer.sdp).await {
                    tracing::warn!(error = %e, "devroom: bad subscriber answer");
                }
                let again = {
                    let mut state = self.state.lock().unwrap();
                    match state.participant_mut(room, sid) {
                        Some(p) => {
                            p.negotiation.awaiting_answer = false;
                            std::mem::take(&mut p.negotiation.again)
                        }
                        None => false,
                    }
                };
                if again {
                    self.negotiate_subscriber(room, sid, false).await;
                }
            }
            Req::Trickle(trickle) => {
                let peer = {
                    let state = self.state.lock().unwrap();
                    state.participant(room, sid).map(|p| {
                        if trickle.target == proto::SignalTarget::Subscriber as i32 {
                            p.subscriber_peer.unwrap_or(p.publisher_peer)
                        } else {
                            p.publisher_peer
                        }
                    })
                };
                if let Some(peer) = peer {
                    if let Err(e) = self
                        .sfu
                        .add_remote_candidate(peer, &trickle.candidate_init)
                        .await
                    {
                        tracing::debug!(error = %e, "devroom: remote candidate refused");
                    }
                }
            }
            Req::AddTrack(add) => self.handle_add_track(room, sid, add).await,
            Req::Mute(mute) => {
                let update = {
                    let mut state = self.state.lock().unwrap();
                    let Some(p) = state.participant_mut(room, sid) else {
                        return;
                    };
                    let Some(t) = p.tracks.iter_mut().find(|t| t.info.sid == mute.sid) else {
                        return;
                    };
                    t.info.muted = mute.muted;
                    p.bump_version();
                    p.info()
                };
                self.events.push(EventKind::TrackMuted {
                    identity: update.identity.clone(),
                    track_sid: mute.sid.clone(),
                    muted: mute.muted,
                    by: "publisher".into(),
                });
                self.broadcast(
                    room,
                    sid,
                    Resp::Update(proto::ParticipantUpdate {
                        participants: vec![update],
                    }),
                );
            }
            Req::Subscription(sub) => self.handle_subscription(room, sid, sub).await,
            Req::Leave(leave) => {
                let identity = self.identity_of(room, sid);
                self.events.push(EventKind::LeaveReceived {
                    identity,
                    sid: sid.into(),
                    reason: reason_name(leave.reason),
                });
                let reason = proto::DisconnectReason::try_from(leave.reason)
                    .unwrap_or(proto::DisconnectReason::ClientInitiated);
                self.remove_participant(room, sid, reason, None).await;
            }
            Req::SyncState(sync) => self.handle_sync_state(room, sid, sync).await,
            Req::Ping(ts) => {
                if self.answers_pings(room, sid) {
                    let _ = ts;
                    self.send_to(room, sid, Resp::Pong(unix_ms()));
                }
            }
            Req::PingReq(ping) => {
                if self.answers_pings(room, sid) {
                    self.send_to(
                        room,
                        sid,
                        Resp::PongResp(proto::Pong {
                            last_ping_timestamp: ping.timestamp,
                            timestamp: unix_ms(),
                        }),
                    );
                }
            }
            Req::UpdateMetadata(update) => {
                let info = {
                    let mut state = self.state.lock().unwrap();
                    let Some(p) = state.participant_mut(room, sid) else {
                        return;
                    };
                    if !p.grant.video.can_update_own_metadata() {
                        let deny = Resp::RequestResponse(proto::RequestResponse {
                            request_id: update.request_id,
                            reason: proto::request_response::Reason::NotAllowed as i32,
                            message: "the token lacks canUpdateOwnMetadata".into(),
                            ..Default::default()
                        });
                        if let Some(s) = &p.signal {
                            s.send(deny);
                        }
                        return;
                    }
                    if !update.metadata.is_empty() {
                        p.metadata = update.metadata.clone();
                    }
                    if !update.name.is_empty() {
                        p.grant.name = update.name.clone();
                    }
                    for (k, v) in update.attributes {
                        if v.is_empty() {
                            p.grant.attributes.remove(&k);
                        } else {
                            p.grant.attributes.insert(k, v);
                        }
                    }
                    p.bump_version();
                    p.info()
                };
                // Everyone including the sender learns the new info; the sender's SDK also waits
                // for the request's RequestResponse (RS set_metadata times out without it).
                self.broadcast(
                    room,
                    "",
                    Resp::Update(proto::ParticipantUpdate {
                        participants: vec![info],
                    }),
                );
                self.send_to(
                    room,
                    sid,
                    Resp::RequestResponse(proto::RequestResponse {
                        request_id: update.request_id,
                        reason: proto::request_response::Reason::Ok as i32,
                        ..Default::default()
                    }),
                );
            }
            other => tracing::debug!(?other, "devroom: request ignored"),
        }
    }

    fn identity_of(&self, room: &str, sid: &str) -> String {
        self.state
            .lock()
            .unwrap()
            .participant(room, sid)
            .map(|p| p.identity.clone())
            .unwrap_or_default()
    }

    fn answers_pings(&self, room: &str, sid: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .participant(room, sid)
            .is_some_and(|p| p.answer_pings)
    }

    fn broadcast(&self, room: &str, except: &str, message: Resp) {
        let state = self.state.lock().unwrap();
        if let Some(r) = state.rooms.get(room) {
            r.broadcast(except, &message);
        }
    }

    async fn handle_add_track(
        self: &Arc<Self>,
        room: &str,
        sid: &str,
        add: proto::AddTrackRequest,
    ) {
        let source =
            proto::TrackSource::try_from(add.source).unwrap_or(proto::TrackSource::Unknown);
        let refusal = |reason: proto::request_response::Reason, message: String| {
            Resp::RequestResponse(proto::RequestResponse {
                request_id: 0,
                reason: reason as i32,
                message,
                request: Some(proto::request_response::Request::AddTrack(add.clone())),
            })
        };
        let (reply, parked) = {
            let mut state = self.state.lock().unwrap();
            let Some(p) = state.participant_mut(room, sid) else {
                return;
            };
            if !p.grant.may_publish_source(source) {
                let message = format!(
                    "not allowed to publish source {} (token canPublish/canPublishSources)",
                    source.as_str_name()
                );
                (
                    refusal(proto::request_response::Reason::NotAllowed, message),
                    None,
                )
            } else if !add.sid.is_empty() {
                // A backup codec for an existing track: devroom does not simulcast codecs.
                let known = p.tracks.iter().any(|t| t.info.sid == add.sid);
                let reason = if known {
                    proto::request_response::Reason::Ok
                } else {
                    proto::request_response::Reason::NotFound
                };
                (
                    refusal(reason, format!("track {} backup codec ignored", add.sid)),
                    None,
                )
            } else if p.track_by_cid(&add.cid).is_some() {
                (
                    refusal(
                        proto::request_response::Reason::Queued,
                        format!("cid {} is already in use", add.cid),
                    ),
                    None,
                )
            } else {
                let info = track_info_for(&add, new_sid("TR_"));
                p.tracks.push(Track {
                    cid: add.cid.clone(),
                    info: info.clone(),
                    key: None,
                });
                let parked = std::mem::take(&mut p.unmatched);
                (
                    Resp::TrackPublished(proto::TrackPublishedResponse {
                        cid: add.cid.clone(),
                        track: Some(info),
                    }),
                    Some(parked),
                )
            }
        };
        self.send_to(room, sid, reply);
        for media in parked.unwrap_or_default() {
            self.on_track_started(media).await;
        }
    }

    async fn handle_subscription(
        self: &Arc<Self>,
        room: &str,
        sid: &str,
        sub: proto::UpdateSubscription,
    ) {
        let mut sids: Vec<String> = sub.track_sids.clone();
        for pt in &sub.participant_tracks {
            sids.extend(pt.track_sids.iter().cloned());
        }
        let (peer, keys) = {
            let state = self.state.lock().unwrap();
            let Some(me) = state.participant(room, sid) else {
                return;
            };
            if sub.subscribe && !me.can_receive() {
                return;
            }
            let keys: Vec<(String, TrackKey)> = sids
                .iter()
                .filter_map(|s| {
                    state.find_track(s).and_then(|(_, owner, t)| {
                        (owner.sid != sid)
                            .then(|| t.key.clone().map(|k| (s.clone(), k)))
                            .flatten()
                    })
                })
                .filter(|(s, _)| me.subscriptions.contains(s) != sub.subscribe)
                .collect();
            (me.receive_peer(), keys)
        };
        if keys.is_empty() {
            return;
        }
        for (track_sid, key) in &keys {
            if sub.subscribe {
                self.forward_one(room, sid, peer, track_sid, key).await;
            } else {
                self.sfu.unforward(key, peer).await;
                if let Some(p) = self.state.lock().unwrap().participant_mut(room, sid) {
                    p.subscriptions.retain(|s| s != track_sid);
                }
            }
        }
    }

    async fn handle_sync_state(self: &Arc<Self>, room: &str, sid: &str, sync: proto::SyncState) {
        let unknown = {
            let state = self.state.lock().unwrap();
            let Some(p) = state.participant(room, sid) else {
                return;
            };
            sync.publish_tracks
                .iter()
                .find_map(|published| match &published.track {
                    Some(t) if p.tracks.iter().any(|mine| mine.info.sid == t.sid) => None,
                    Some(t) => Some(format!("unknown track {}", t.sid)),
                    None => Some(format!("publication {} without TrackInfo", published.cid)),
                })
        };
        if let Some(why) = unknown {
            tracing::info!(%why, "devroom: SyncState mismatch, asking for a full reconnect");
            self.remove_participant(
                room,
                sid,
                proto::DisconnectReason::StateMismatch,
                Some(proto::leave_request::Action::Reconnect),
            )
            .await;
        }
    }

    /// Dispatch one event from the media plane.
    pub async fn handle_sfu_event(self: &Arc<Self>, event: SfuEvent) {
        match event {
            SfuEvent::LocalCandidate {
                peer,
                candidate_init,
            } => {
                let target = {
                    let state = self.state.lock().unwrap();
                    let Some(owner) = state.peers.get(&peer).cloned() else {
                        return;
                    };
                    let target = match owner.pc {
                        Pc::Publisher => proto::SignalTarget::Publisher,
                        Pc::Subscriber => proto::SignalTarget::Subscriber,
                    };
                    (owner, target)
                };
                let (owner, target) = target;
                self.send_to(
                    &owner.room,
                    &owner.sid,
                    Resp::Trickle(proto::TrickleRequest {
                        candidate_init,
                        target: target as i32,
                        r#final: false,
                    }),
                );
            }
            SfuEvent::TrackStarted {
                peer,
                mid,
                track_id,
                kind,
                mime,
            } => {
                self.on_track_started(UnmatchedMedia {
                    peer,
                    mid,
                    track_id,
                    kind: kind_of(kind),
                    mime,
                })
                .await;
            }
            SfuEvent::GatheringComplete { .. } => {}
            SfuEvent::FirstRtp { track_key } => {
                self.events.push(EventKind::FirstRtp {
                    track_sid: track_key.track_sid.clone(),
                });
            }
            SfuEvent::RenegotiationNeeded {
                peer,
                missing_audio,
                missing_video,
            } => {
                let owner = self.state.lock().unwrap().peers.get(&peer).cloned();
                let Some(owner) = owner else { return };
                match (owner.pc, self.path_of(&owner.room, &owner.sid)) {
                    (Pc::Subscriber, _) => {
                        self.negotiate_subscriber(&owner.room, &owner.sid, false)
                            .await
                    }
                    // v1: ask the client to re-offer, as the Go server's sendUnmatchedMediaRequirement.
                    (Pc::Publisher, Some(Path::V1)) => self.send_to(
                        &owner.room,
                        &owner.sid,
                        Resp::MediaSectionsRequirement(proto::MediaSectionsRequirement {
                            num_audios: missing_audio,
                            num_videos: missing_video,
                        }),
                    ),
                    _ => {}
                }
            }
            SfuEvent::ConnectionState {
                peer,
                state: pc_state,
            } => {
                let info = {
                    let mut state = self.state.lock().unwrap();
                    let Some(owner) = state.peers.get(&peer).cloned() else {
                        return;
                    };
                    let Some(p) = state.participant_mut(&owner.room, &owner.sid) else {
                        return;
                    };
                    let mut changed = None;
                    if pc_state == "connected" && p.state != proto::participant_info::State::Active
                    {
                        p.state = proto::participant_info::State::Active;
                        p.bump_version();
                        changed = Some(p.info());
                    }
                    (owner, p.identity.clone(), changed)
                };
                let (owner, identity, changed) = info;
                self.events.push(EventKind::PeerState {
                    identity,
                    sid: owner.sid.clone(),
                    pc: match owner.pc {
                        Pc::Publisher => "publisher".into(),
                        Pc::Subscriber => "subscriber".into(),
                    },
                    state: pc_state,
                });
                if let Some(info) = changed {
                    self.broadcast(
                        &owner.room,
                        &owner.sid,
                        Resp::Update(proto::ParticipantUpdate {
                            participants: vec![info],
                        }),
                    );
                }
            }
            SfuEvent::Data { peer, label, data } => self.on_data(peer, &label, data).await,
            SfuEvent::KeyframeRequested { track_key } => {
                self.events.push(EventKind::KeyframeRequested {
                    track_sid: track_key.track_sid.clone(),
                });
            }
        }
    }

    async fn on_track_started(self: &Arc<Self>, media: UnmatchedMedia) {
        let matched = {
            let mut state = self.state.lock().unwrap();
            let Some(owner) = state.peers.get(&media.peer).cloned() else {
                return;
            };
            let Some(p) = state.participant_mut(&owner.room, &owner.sid) else {
                return;
            };
            match p.match_pending(&media.track_id, media.kind) {
                None => {
                    p.unmatched.push(media);
                    return;
                }
                Some(i) => {
                    // Subscribers see msid "<participant sid>|<track sid>", as LiveKit clients need.
                    let key =
                        self.sfu
                            .publish(media.peer, &media.mid, &p.tracks[i].info.sid, &p.sid);
                    let t = &mut p.tracks[i];
                    t.key = Some(key.clone());
                    t.info.mid = media.mid.clone();
                    if !media.mime.is_empty() {
                        t.info.mime_type = media.mime.clone();
                    }
                    let published = (t.info.sid.clone(), t.cid.clone(), key);
                    p.bump_version();
                    let info = p.info();
                    let identity = p.identity.clone();
                    let room = state.rooms.get(&owner.room).expect("owner room exists");
                    room.broadcast(
                        &owner.sid,
                        &Resp::Update(proto::ParticipantUpdate {
                            participants: vec![info],
                        }),
                    );
                    let subscribers: Vec<(String, PeerId)> = room
                        .participants
                        .iter()
                        .filter(|q| q.sid != owner.sid && q.auto_subscribe && q.can_receive())
                        .map(|q| (q.sid.clone(), q.receive_peer()))
                        .collect();
                    (owner, identity, published, subscribers)
                }
            }
        };
        let (owner, identity, (track_sid, cid, key), subscribers) = matched;
        self.events.push(EventKind::TrackPublished {
            identity,
            track_sid: track_sid.clone(),
            cid,
            kind: if media.kind == proto::TrackType::Video {
                "video".into()
            } else {
                "audio".into()
            },
            mime: media.mime.clone(),
        });
        for (q_sid, q_peer) in subscribers {
            self.forward_one(&owner.room, &q_sid, q_peer, &track_sid, &key)
                .await;
            self.renegotiate(&owner.room, &q_sid).await;
        }
    }

    // UserPacket's identity/destination fields are deprecated but JS still fills them.
    #[allow(deprecated)]
    async fn on_data(self: &Arc<Self>, peer: PeerId, label: &str, data: bytes::Bytes) {
        let reliable = match label {
            "_reliable" => true,
            "_lossy" => false,
            _ => return,
        };
        let Ok(mut packet) = proto::DataPacket::decode(data.as_ref()) else {
            tracing::debug!("devroom: undecodable data packet dropped");
            return;
        };
        let targets = {
            let state = self.state.lock().unwrap();
            let Some(owner) = state.peers.get(&peer) else {
                return;
            };
            let Some(r) = state.rooms.get(&owner.room) else {
                return;
            };
            let Some(sender) = r.participant(&owner.sid) else {
                return;
            };
            if !sender.grant.can_publish_data() {
                return;
            }
            packet.participant_identity = sender.identity.clone();
            packet.participant_sid = sender.sid.clone();
            let mut destinations = packet.destination_identities.clone();
            if let Some(proto::data_packet::Value::User(user)) = &mut packet.value {
                user.participant_identity = sender.identity.clone();
                user.participant_sid = sender.sid.clone();
                destinations.extend(user.destination_identities.iter().cloned());
            }
            r.participants
                .iter()
                .filter(|q| q.sid != sender.sid)
                .filter(|q| destinations.is_empty() || destinations.contains(&q.identity))
                .map(|q| (q.identity.clone(), q.receive_peer()))
                .collect::<Vec<_>>()
        };
        self.deliver_data(&packet, reliable, targets).await;
    }

    pub async fn deliver_data(
        &self,
        packet: &proto::DataPacket,
        reliable: bool,
        targets: Vec<(String, PeerId)>,
    ) {
        let bytes = bytes::Bytes::from(packet.encode_to_vec());
        let mut to = Vec::new();
        for (identity, peer) in targets {
            match self.sfu.send_data(peer, reliable, bytes.clone()).await {
                Ok(()) => to.push(identity),
                Err(e) => tracing::debug!(%identity, error = %e, "devroom: data not delivered"),
            }
        }
        self.events.push(EventKind::DataForwarded {
            from: packet.participant_identity.clone(),
            to,
            reliable,
            bytes: bytes.len(),
        });
    }

    /// Periodic housekeeping: drop participants whose resume window passed.
    pub async fn tick(self: &Arc<Self>) {
        let expired: Vec<(String, String)> = {
            let state = self.state.lock().unwrap();
            state
                .rooms
                .values()
                .flat_map(|r| {
                    r.participants
                        .iter()
                        .filter(|p| {
                            p.disconnected_since
                                .is_some_and(|t| t.elapsed() > RESUME_WINDOW)
                        })
                        .map(|p| (r.name.clone(), p.sid.clone()))
                })
                .collect()
        };
        for (room, sid) in expired {
            self.remove_participant(&room, &sid, proto::DisconnectReason::SignalClose, None)
                .await;
        }
    }

    /// GET /admin/rooms.
    pub fn snapshot(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap();
        let rooms: Vec<serde_json::Value> = state
            .rooms
            .values()
            .map(|r| {
                let participants: Vec<serde_json::Value> = r
                    .participants
                    .iter()
                    .map(|p| {
                        let tracks: Vec<serde_json::Value> = p
                            .tracks
                            .iter()
                            .map(|t| {
                                let stats = t.key.as_ref().map(|k| self.sfu.stats(k)).unwrap_or_default();
                                let kind = if t.info.r#type == proto::TrackType::Video as i32 { "video" } else { "audio" };
                                serde_json::json!({
                                    "sid": t.info.sid,
                                    "cid": t.cid,
                                    "kind": kind,
                                    "codec": t.info.mime_type,
                                    "source": proto::TrackSource::try_from(t.info.source).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
                                    "mid": t.info.mid,
                                    "published": t.key.is_some(),
                                    "muted": t.info.muted,
                                    "packets": stats.packets,
                                    "frames": stats.frames,
                                    "keyframes": stats.keyframes,
                                    "bytes": stats.bytes,
                                    "first_rtp_ms": stats.first_rtp_ms,
                                    "first_rtp_timestamp": stats.first_rtp_timestamp,
                                    "last_rtp_timestamp": stats.last_rtp_timestamp,
                                })
                            })
                            .collect();
                        let state_name = proto::participant_info::State::try_from(p.state as i32)
                            .map(|s| s.as_str_name())
                            .unwrap_or("UNKNOWN");
                        serde_json::json!({
                            "identity": p.identity,
                            "sid": p.sid,
                            "state": state_name,
                            "signal_path": p.path.as_str(),
                            "signal_connected": p.signal.is_some(),
                            "subscriptions": p.subscriptions,
                            "tracks": tracks,
                        })
                    })
                    .collect();
                serde_json::json!({"name": r.name, "sid": r.sid, "participants": participants})
            })
            .collect();
        serde_json::json!({ "rooms": rooms })
    }

    // ---- faults -------------------------------------------------------------------------

    pub fn sink_of_identity(&self, identity: &str) -> Option<(String, String, Option<SignalSink>)> {
        let state = self.state.lock().unwrap();
        let (room, sid) = state.find_identity(identity)?;
        let sink = state
            .participant(&room, &sid)
            .and_then(|p| p.signal.clone());
        Some((room, sid, sink))
    }

    pub fn fault_drop_ws(&self, identity: &str) -> bool {
        match self.sink_of_identity(identity) {
            Some((_, _, Some(sink))) => sink.tx.send(Outbound::Drop).is_ok(),
            _ => false,
        }
    }

    pub fn fault_answer_pings(&self, identity: &str, answer: bool) -> bool {
        let mut state = self.state.lock().unwrap();
        let Some((room, sid)) = state.find_identity(identity) else {
            return false;
        };
        match state.participant_mut(&room, &sid) {
            Some(p) => {
                p.answer_pings = answer;
                true
            }
            None => false,
        }
    }

    pub async fn fault_send_leave(
        self: &Arc<Self>,
        identity: &str,
        reason: proto::DisconnectReason,
        action: proto::leave_request::Action,
    ) -> bool {
        let Some((room, sid, sink)) = self.sink_of_identity(identity) else {
            return false;
        };
        match action {
            proto::leave_request::Action::Resume => {
                let Some(sink) = sink else { return false };
                sink.send(leave_message(reason, action));
                let _ = sink.tx.send(Outbound::Close(1000));
                self.events.push(EventKind::LeaveSent {
                    identity: identity.into(),
                    sid,
                    reason: reason.as_str_name().into(),
                    action: action_name(action as i32),
                });
                true
            }
            _ => {
                self.remove_participant(&room, &sid, reason, Some(action))
                    .await
            }
        }
    }

    /// Forget every session, as a server restart would: connections dropped without a word.
    pub async fn fault_restart(self: &Arc<Self>) {
        let participants: Vec<Participant> = {
            let mut state = self.state.lock().unwrap();
            state.peers.clear();
            std::mem::take(&mut state.rooms)
                .into_values()
                .flat_map(|r| r.participants)
                .collect()
        };
        for p in participants {
            if let Some(sink) = &p.signal {
                let _ = sink.tx.send(Outbound::Drop);
            }
            self.sfu.close_peer(p.publisher_peer).await;
            if let Some(peer) = p.subscriber_peer {
                self.sfu.close_peer(peer).await;
            }
        }
        self.events.push(EventKind::Restarted {});
    }

    pub fn fault_pause_media(&self, paused: bool) {
        self.faults.lock().unwrap().paused = paused;
        self.sfu.set_paused(paused);
    }

    pub fn fault_reject_joins(&self, count: u32, status: u16) {
        let mut faults = self.faults.lock().unwrap();
        faults.reject_joins = count;
        faults.reject_status = status;
    }

    /// Consume one injected join rejection, if any. `identity` is the refused connect's
    /// (None when its token was unusable anyway) so its validate request can be answered.
    pub fn take_join_rejection(&self, identity: Option<&str>) -> Option<(u16, String)> {
        let mut faults = self.faults.lock().unwrap();
        if faults.reject_joins == 0 {
            return None;
        }
        faults.reject_joins -= 1;
        let status = faults.reject_status;
        let reason = format!("devroom fault injection: join rejected with status {status}");
        if let Some(identity) = identity {
            if faults.unexplained_rejections.len() == UNEXPLAINED_REJECTIONS_KEPT {
                faults.unexplained_rejections.pop_front();
            }
            faults
                .unexplained_rejections
                .push_back((identity.to_string(), status, reason.clone()));
        }
        Some((status, reason))
    }

    /// The injected rejection of `identity`'s last refused connect, answered once: a validate
    /// request explains that attempt and no other client's, however much later it comes.
    pub fn explain_rejection(&self, identity: &str) -> Option<(u16, String)> {
        let mut faults = self.faults.lock().unwrap();
        let at = faults
            .unexplained_rejections
            .iter()
            .position(|(who, _, _)| who == identity)?;
        faults
            .unexplained_rejections
            .remove(at)
            .map(|(_, status, reason)| (status, reason))
    }

    /// Remote mute (Twirp MutePublishedTrack): mark it and ask the publisher to mute.
    pub fn mute_track(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Option<proto::TrackInfo> {
        let (info, track, sink) = {
            let mut state = self.state.lock().unwrap();
            let r = state.rooms.get_mut(room)?;
            let p = r.participants.iter_mut().find(|p| p.identity == identity)?;
            let t = p.tracks.iter_mut().find(|t| t.info.sid == track_sid)?;
            t.info.muted = muted;
            let track = t.info.clone();
            p.bump_version();
            (p.info(), track, p.signal.clone())
        };
        if let Some(sink) = sink {
            sink.send(Resp::Mute(proto::MuteTrackRequest {
                sid: track_sid.into(),
                muted,
            }));
        }
        self.events.push(EventKind::TrackMuted {
            identity: identity.into(),
            track_sid: track_sid.into(),
            muted,
            by: "server".into(),
        });
        let sid = info.sid.clone();
        self.broadcast(
            room,
            &sid,
            Resp::Update(proto::ParticipantUpdate {
                participants: vec![info],
            }),
        );
        Some(track)
    }

    /// The SFU's key of a published track, by its sid.
    fn track_key(&self, track_sid: &str) -> anyhow::Result<TrackKey> {
        let state = self.state.lock().unwrap();
        let (_, _, t) = state.find_track(track_sid).ok_or_else(|| {
            anyhow::anyhow!("no track {track_sid}: see GET /admin/rooms for track sids")
        })?;
        t.key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("track {track_sid} has no media yet"))
    }

    pub async fn write_png(
        &self,
        track_sid: &str,
    ) -> anyhow::Result<(std::path::PathBuf, u32, u32)> {
        let key = self.track_key(track_sid)?;
        self.sfu.write_png(&key).await
    }

    /// A PLI to the publisher of `track_sid` (POST /admin/tracks/<sid>/pli); whether one went
    /// out (at most one per 100 ms).
    pub fn request_keyframe(&self, track_sid: &str) -> anyhow::Result<bool> {
        let key = self.track_key(track_sid)?;
        Ok(self.sfu.request_keyframe(&key))
    }

    pub async fn analyse_audio(
        &self,
        track_sid: &str,
    ) -> anyhow::Result<crate::sfu::audio::AudioAnalysis> {
        let key = self.track_key(track_sid)?;
        self.sfu.analyse_audio(&key).await
    }
}

#[cfg(test)]
mod tests {
    //! The signalling state machine driven directly (no WebSocket): sinks are plain channels.
    use super::*;
    use crate::auth;
    use crate::connect::parse_connect;

    fn shared() -> Arc<Shared> {
        let mut cfg = DevRoomConfig::local("127.0.0.1:0".parse().unwrap());
        cfg.frame_dir = std::env::temp_dir().join("devroom-unit-frames");
        let started = Instant::now();
        let (sfu, _events) = Sfu::with_epoch(
            super::super::sfu::SfuConfig {
                media_ip: cfg.media_ip,
                ice_tcp: cfg.ice_tcp,
                frame_dir: cfg.frame_dir.clone(),
            },
            started,
        );
        Arc::new(Shared::new(cfg, sfu, started))
    }

    fn grant(identity: &str) -> JoinGrant {
        let token = auth::tests::mint(identity, "lobby", |_| {});
        auth::authorize_join(None, Some(&token), &auth::tests::keys()).unwrap()
    }

    type Rx = mpsc::UnboundedReceiver<Outbound>;

    async fn open(
        s: &Arc<Shared>,
        identity: &str,
        query: &str,
    ) -> (Option<(String, String, u64)>, Rx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let req = parse_connect(Path::V0, query).unwrap();
        (s.open_session(grant(identity), req, tx).await.unwrap(), rx)
    }

    /// Drain what is queued for a sink.
    fn drain(rx: &mut Rx) -> Vec<Outbound> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn leaves(out: &[Outbound]) -> Vec<(i32, i32)> {
        out.iter()
            .filter_map(|o| match o {
                Outbound::Msg(m) => match &m.message {
                    Some(Resp::Leave(l)) => Some((l.reason, l.action)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn responses(out: &[Outbound]) -> Vec<Resp> {
        out.iter()
            .filter_map(|o| match o {
                Outbound::Msg(m) => m.message.clone(),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn join_then_duplicate_identity_replaces_the_older_participant() {
        let s = shared();
        let (first, mut first_rx) = open(&s, "cam", "protocol=17").await;
        let (room, first_sid, _) = first.unwrap();
        let sent = responses(&drain(&mut first_rx));
        assert!(
            matches!(sent.first(), Some(Resp::Join(_))),
            "JoinResponse comes first"
        );
        assert!(sent.iter().any(|m| matches!(m, Resp::RefreshToken(_))));

        let (second, mut second_rx) = open(&s, "cam", "protocol=17").await;
        let (_, second_sid, _) = second.unwrap();
        // The newer session never hears that "cam" disconnected (SDKs would rejoin).
        let to_newer = responses(&drain(&mut second_rx));
        assert!(!to_newer.iter().any(|m| matches!(m, Resp::Update(u)
            if u.participants.iter().any(|p| p.state == proto::participant_info::State::Disconnected as i32))));
        assert_ne!(first_sid, second_sid);
        let out = drain(&mut first_rx);
        assert_eq!(
            leaves(&out),
            vec![(
                proto::DisconnectReason::DuplicateIdentity as i32,
                proto::leave_request::Action::Disconnect as i32
            )]
        );
        assert!(matches!(out.last(), Some(Outbound::Close(1000))));
        let state = s.state.lock().unwrap();
        let r = state.rooms.get(&room).unwrap();
        assert_eq!(r.participants.len(), 1);
        assert_eq!(r.participants[0].sid, second_sid);
        assert!(
            state.peers.values().all(|o| o.sid == second_sid),
            "the old peers are forgotten"
        );
    }

    #[tokio::test]
    async fn resume_swaps_the_sink_and_unknown_sid_gets_state_mismatch() {
        let s = shared();
        let (joined, mut old_rx) = open(&s, "cam", "protocol=17").await;
        let (room, sid, conn) = joined.unwrap();
        s.on_ws_closed(&room, &sid, "cam", conn, 1006);
        assert!(s
            .state
            .lock()
            .unwrap()
            .participant(&room, &sid)
            .unwrap()
            .signal
            .is_none());

        let (resumed, mut rx) =
            open(&s, "cam", &format!("protocol=17&reconnect=1&sid={sid}")).await;
        assert_eq!(resumed.as_ref().map(|r| r.1.clone()), Some(sid.clone()));
        let sent = responses(&drain(&mut rx));
        assert!(matches!(sent.first(), Some(Resp::Reconnect(_))), "{sent:?}");
        assert!(sent
            .iter()
            .any(|m| matches!(m, Resp::Update(u) if u.participants.iter().any(|p| p.sid == sid))));
        let _ = drain(&mut old_rx);

        let (refused, mut rx) = open(&s, "cam", "protocol=17&reconnect=1&sid=PA_nope").await;
        assert!(refused.is_none());
        let out = drain(&mut rx);
        assert_eq!(
            leaves(&out),
            vec![(
                proto::DisconnectReason::StateMismatch as i32,
                proto::leave_request::Action::Reconnect as i32
            )]
        );
    }

    #[tokio::test]
    async fn sync_state_with_an_unknown_publication_forces_a_full_reconnect() {
        let s = shared();
        let (joined, mut rx) = open(&s, "cam", "protocol=17").await;
        let (room, sid, _) = joined.unwrap();
        let add = proto::AddTrackRequest {
            cid: "mic".into(),
            r#type: proto::TrackType::Audio as i32,
            ..Default::default()
        };
        s.handle_request(
            &room,
            &sid,
            proto::SignalRequest {
                message: Some(proto::signal_request::Message::AddTrack(add)),
            },
        )
        .await;
        let known = responses(&drain(&mut rx))
            .into_iter()
            .find_map(|m| match m {
                Resp::TrackPublished(p) => p.track,
                _ => None,
            })
            .expect("TrackPublished");

        // A SyncState listing only known tracks is accepted.
        let sync = |tracks: Vec<proto::TrackInfo>| proto::SignalRequest {
            message: Some(proto::signal_request::Message::SyncState(
                proto::SyncState {
                    publish_tracks: tracks
                        .into_iter()
                        .map(|t| proto::TrackPublishedResponse {
                            cid: "mic".into(),
                            track: Some(t),
                        })
                        .collect(),
                    ..Default::default()
                },
            )),
        };
        s.handle_request(&room, &sid, sync(vec![known.clone()]))
            .await;
        assert!(leaves(&drain(&mut rx)).is_empty());

        let stranger = proto::TrackInfo {
            sid: "TR_unknown".into(),
            ..known
        };
        s.handle_request(&room, &sid, sync(vec![stranger])).await;
        assert_eq!(
            leaves(&drain(&mut rx)),
            vec![(
                proto::DisconnectReason::StateMismatch as i32,
                proto::leave_request::Action::Reconnect as i32
            )]
        );
        assert!(s.state.lock().unwrap().participant(&room, &sid).is_none());
    }

    #[tokio::test]
    async fn pings_are_answered_until_the_fault_says_otherwise() {
        let s = shared();
        let (joined, mut rx) = open(&s, "cam", "protocol=17").await;
        let (room, sid, _) = joined.unwrap();
        let _ = drain(&mut rx);
        let ping = || proto::SignalRequest {
            message: Some(proto::signal_request::Message::PingReq(proto::Ping {
                timestamp: 7,
                rtt: 0,
            })),
        };
        s.handle_request(&room, &sid, ping()).await;
        assert!(responses(&drain(&mut rx))
            .iter()
            .any(|m| matches!(m, Resp::PongResp(p) if p.last_ping_timestamp == 7)));
        assert!(s.fault_answer_pings("cam", false));
        s.handle_request(&room, &sid, ping()).await;
        assert!(responses(&drain(&mut rx))
            .iter()
            .all(|m| !matches!(m, Resp::PongResp(_))));
    }

    #[tokio::test]
    async fn metadata_updates_need_the_grant_and_get_a_request_response() {
        let s = shared();
        let (joined, mut rx) = open(&s, "cam", "protocol=17").await;
        let (room, sid, _) = joined.unwrap();
        let _ = drain(&mut rx);
        let update = |request_id| proto::SignalRequest {
            message: Some(proto::signal_request::Message::UpdateMetadata(
                proto::UpdateParticipantMetadata {
                    metadata: "m".into(),
                    request_id,
                    ..Default::default()
                },
            )),
        };
        let reply = |rx: &mut Rx| {
            responses(&drain(rx)).into_iter().find_map(|m| match m {
                Resp::RequestResponse(r) => Some((r.request_id, r.reason)),
                _ => None,
            })
        };
        s.handle_request(&room, &sid, update(3)).await;
        assert_eq!(
            reply(&mut rx),
            Some((3, proto::request_response::Reason::NotAllowed as i32))
        );
        s.state
            .lock()
            .unwrap()
            .participant_mut(&room, &sid)
            .unwrap()
            .grant
            .video
            .can_update_own_metadata = Some(true);
        s.handle_request(&room, &sid, update(4)).await;
        assert_eq!(
            reply(&mut rx),
            Some((4, proto::request_response::Reason::Ok as i32))
        );
        assert_eq!(
            s.state
                .lock()
                .unwrap()
                .participant(&room, &sid)
                .unwrap()
                .metadata,
            "m"
        );
    }

    #[tokio::test]
    async fn a_published_track_whose_section_stops_sending_is_unpublished() {
        let s = shared();
        let (publisher, mut pub_rx) = open(&s, "cam", "protocol=17").await;
        let (room, sid, _) = publisher.unwrap();
        let (watcher, mut watch_rx) = open(&s, "viewer", "protocol=17").await;
        let (_, viewer_sid, _) = watcher.unwrap();
        let add = proto::AddTrackRequest {
            cid: "v".into(),
            r#type: proto::TrackType::Video as i32,
            ..Default::default()
        };
        s.handle_request(
            &room,
            &sid,
            proto::SignalRequest {
                message: Some(proto::signal_request::Message::AddTrack(add)),
            },
        )
        .await;
        let track_sid = {
            // As if the SFU had matched media on mid "1" and forwarded it to the viewer.
            let mut state = s.state.lock().unwrap();
            let p = state.participant_mut(&room, &sid).unwrap();
            let t = &mut p.tracks[0];
            t.info.mid = "1".into();
            t.key = Some(TrackKey {
                peer: p.publisher_peer,
                mid: "1".into(),
                track_sid: t.info.sid.clone(),
            });
            let track_sid = t.info.sid.clone();
            state
                .participant_mut(&room, &viewer_sid)
                .unwrap()
                .subscriptions
                .push(track_sid.clone());
            track_sid
        };
        let _ = (drain(&mut pub_rx), drain(&mut watch_rx));
        let sending = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:s v\r\n";
        s.unpublish_stopped_tracks(&room, &sid, sending).await;
        assert_eq!(
            s.state
                .lock()
                .unwrap()
                .participant(&room, &sid)
                .unwrap()
                .tracks
                .len(),
            1,
            "still sending"
        );

        let stopped = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n";
        s.unpublish_stopped_tracks(&room, &sid, stopped).await;
        assert!(s
            .state
            .lock()
            .unwrap()
            .participant(&room, &sid)
            .unwrap()
            .tracks
            .is_empty());
        assert!(s
            .state
            .lock()
            .unwrap()
            .participant(&room, &viewer_sid)
            .unwrap()
            .subscriptions
            .is_empty());
        let update = responses(&drain(&mut watch_rx))
            .into_iter()
            .find_map(|m| match m {
                Resp::Update(u) => u.participants.into_iter().find(|p| p.sid == sid),
                _ => None,
            })
            .expect("the viewer hears about it");
        assert!(update.tracks.iter().all(|t| t.sid != track_sid));
    }
}
