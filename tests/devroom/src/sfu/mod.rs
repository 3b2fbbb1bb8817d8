//! devroom's media plane: a small SFU on webrtc 0.21.
//!
//! It knows nothing about signalling. devroom's signalling side creates one [`Sfu`], creates
//! peers on it, relays SDP and trickle candidates, names incoming tracks with [`Sfu::publish`]
//! and subscribes peers with [`Sfu::forward`]. Everything the SFU has to tell signalling comes
//! out of the [`SfuEvent`] channel returned by [`Sfu::new`].
//!
//! Roles:
//! - [`PeerRole::ClientOffers`]: v1 single PC and the v0 publisher PC. The client offers,
//!   [`Sfu::accept_offer`] answers. A track forwarded to such a peer waits for the client's
//!   next offer and is attached to a free recvonly m-section of it (LiveKit single-PC clients
//!   pre-add 3 audio + 3 video recvonly transceivers and add more on
//!   `MediaSectionsRequirement`). [`SfuEvent::RenegotiationNeeded`] says how many more
//!   sections are needed; after it, the client must re-offer.
//! - [`PeerRole::ServerOffers`]: the v0 subscriber PC. The SFU adds a sendonly m-section per
//!   forwarded track; on [`SfuEvent::RenegotiationNeeded`] signalling calls
//!   [`Sfu::create_offer`] and later [`Sfu::accept_answer`] (one offer in flight at a time:
//!   coalesce further `RenegotiationNeeded` until the answer arrived). The SFU opens its own
//!   `_reliable`/`_lossy` data channels on these peers.
//!
//! Keyframes: a PLI/FIR from any subscriber, a new subscription and resuming after
//! [`Sfu::set_paused`] each send a PLI to the publisher (at most one per 100 ms per track) and
//! emit [`SfuEvent::KeyframeRequested`].

pub mod audio;
pub mod media;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use rtc::data_channel::RTCDataChannelInit;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit,
};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

pub use media::{RgbFrame, TrackStats};
pub use roomcast::peer::keyframe::{is_keyframe_request, KeyframeRequestInterceptor};

use media::{H264Snapshotter, PayloadFormat, TrackCounter};
use roomcast::peer::{self, codecs, PcSettings};

/// Re-checks `check` each time one of `notifies` fires (and once at the start) until it returns
/// Some; None after `timeout`. The waiters are registered before every check, so no wake-up is
/// lost. The one wait of devroom and its tests: packet counters, the event log, test-side
/// notifiers.
pub async fn wait_until_notified<T>(
    notifies: &[&tokio::sync::Notify],
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut waits: Vec<_> = notifies.iter().map(|n| Box::pin(n.notified())).collect();
        for wait in &mut waits {
            wait.as_mut().enable();
        }
        if let Some(value) = check() {
            return Some(value);
        }
        let any = futures_util::future::select_all(waits);
        if tokio::time::timeout_at(deadline, any).await.is_err() {
            return check();
        }
    }
}

/// How often a subscriber that has not had a key picture yet asks again (LiveKit's forwarder
/// retries at a similar pace).
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);

/// Identifies one PeerConnection on the SFU.
pub type PeerId = u64;

/// Who sends offers on a PeerConnection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// v1 single PC and v0 publisher PC: the client offers, the SFU answers.
    ClientOffers,
    /// v0 subscriber PC: the SFU offers, the client answers.
    ServerOffers,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

impl TrackKind {
    /// "audio" or "video", as LiveKit's JSON and the admin API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }

    fn to_rtc(self) -> RtpCodecKind {
        match self {
            TrackKind::Audio => RtpCodecKind::Audio,
            TrackKind::Video => RtpCodecKind::Video,
        }
    }

    fn from_rtc(kind: RtpCodecKind) -> Option<TrackKind> {
        match kind {
            RtpCodecKind::Audio => Some(TrackKind::Audio),
            RtpCodecKind::Video => Some(TrackKind::Video),
            _ => None,
        }
    }
}

/// Static SFU configuration.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// UDP sockets bind here (port 0 each), and host candidates carry this address.
    pub media_ip: IpAddr,
    /// Also listen on TCP (media_ip, a free port per PeerConnection): passive ICE-TCP
    /// candidates, which a client whose UDP is blocked dials.
    pub ice_tcp: bool,
    /// Where [`Sfu::write_png`] puts its files (created on demand).
    pub frame_dir: PathBuf,
}

/// A published track: the publishing peer, the m-section it arrives on, and its LiveKit sid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackKey {
    pub peer: PeerId,
    pub mid: String,
    pub track_sid: String,
}

/// What the SFU tells signalling. Emitted on the channel returned by [`Sfu::new`].
#[derive(Debug, Clone)]
pub enum SfuEvent {
    /// A local ICE candidate to trickle: JSON `{"candidate","sdpMid","sdpMLineIndex"}`.
    LocalCandidate {
        peer: PeerId,
        candidate_init: String,
    },
    /// Local gathering finished (LiveKit sends its last candidate with `final = true`).
    GatheringComplete { peer: PeerId },
    /// The first RTP packet of an incoming track arrived. `track_id` is the msid track id
    /// (== the AddTrack cid).
    TrackStarted {
        peer: PeerId,
        mid: String,
        track_id: String,
        kind: TrackKind,
        mime: String,
    },
    /// First RTP of a track that has been named with [`Sfu::publish`] (emitted at whichever
    /// of the two comes later).
    FirstRtp { track_key: TrackKey },
    /// The peer must renegotiate.
    /// - ServerOffers peer (v0 subscriber PC): call [`Sfu::create_offer`] and send the offer
    ///   (missing_* are 0). Keep one offer in flight; coalesce further events until the answer.
    /// - ClientOffers peer (v1 single PC): forwarded tracks wait for the client's next offer.
    ///   Send `MediaSectionsRequirement{num_audios: missing_audio, num_videos: missing_video}`:
    ///   the counts are the tracks no free recvonly m-section of the current offer can carry,
    ///   often 0/0 — the client re-offers all the same.
    RenegotiationNeeded {
        peer: PeerId,
        missing_audio: u32,
        missing_video: u32,
    },
    /// PeerConnection state: "new" | "connecting" | "connected" | "disconnected" | "failed" | "closed".
    ConnectionState { peer: PeerId, state: String },
    /// A message on one of the peer's data channels (a LiveKit `DataPacket`, undecoded).
    Data {
        peer: PeerId,
        label: String,
        data: Bytes,
    },
    /// A PLI was sent to the publisher of this track.
    KeyframeRequested { track_key: TrackKey },
}

/// What [`Sfu::accept_offer`] returns.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The SDP answer.
    pub sdp: String,
    /// mid → track sid of every forwarded track this answer sends to the client: LiveKit's
    /// `SessionDescription.mid_to_track_id`, put it into the answer verbatim.
    pub mid_to_track_id: HashMap<String, String>,
    /// From the client's offer: mid → msid track id (== AddTrack cid) of every m-section
    /// carrying an msid, to match AddTrack requests to m-sections before RTP flows.
    pub mid_to_cid: HashMap<String, String>,
}

/// The SFU. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SfuConfig,
    epoch: Instant,
    events: mpsc::UnboundedSender<SfuEvent>,
    next_peer: AtomicU64,
    paused: AtomicBool,
    /// Bumped on every pause change so forwards re-base their sequence numbers.
    pause_generation: AtomicU64,
    peers: Mutex<HashMap<PeerId, Arc<Peer>>>,
    tracks: Mutex<HashMap<(PeerId, String), Arc<PubTrack>>>,
    /// Woken on every counted packet, so waiters on counters never poll (see `counters_changed`).
    counters_changed: Arc<tokio::sync::Notify>,
}

struct Peer {
    id: PeerId,
    role: PeerRole,
    pc: Arc<dyn PeerConnection>,
    remote_description_set: AtomicBool,
    pending_candidates: tokio::sync::Mutex<Vec<RTCIceCandidateInit>>,
    data_channels: Mutex<HashMap<String, Arc<dyn DataChannel>>>,
    /// Tracks this peer receives, by track sid.
    forwards: Mutex<HashMap<String, Arc<Forward>>>,
    /// ClientOffers: subscriptions waiting for a client offer with a free m-section.
    pending_forwards: Mutex<Vec<TrackKey>>,
    /// Serialises negotiation steps on this peer.
    negotiation: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

/// One incoming track, keyed by (publisher, mid).
struct PubTrack {
    peer: PeerId,
    mid: String,
    sid: Mutex<Option<String>>,
    stream_id: Mutex<Option<String>>,
    remote: Mutex<Option<RemoteInfo>>,
    counter: Mutex<TrackCounter>,
    snapshot: Mutex<H264Snapshotter>,
    /// The last seconds of an Opus track, for `POST /admin/tracks/<sid>/audio`.
    opus: Mutex<audio::OpusRecorder>,
    /// Serialises PNG writes so two decodes never race for the decoder.
    png_lock: tokio::sync::Mutex<()>,
    forwards: Mutex<Vec<Arc<Forward>>>,
    last_pli: Mutex<Option<Instant>>,
    first_rtp_reported: AtomicBool,
    layers: Mutex<LayerState>,
}

/// Simulcast: LiveKit clients publish video as up to three layers (rids q, h, f), each its
/// own SSRC, all delivered on one remote track. The SFU forwards and counts one layer: the
/// best one that is flowing. Without simulcast there is one SSRC and this never switches.
#[derive(Default)]
struct LayerState {
    selected: Option<u32>,
    selected_rank: u8,
    selected_last_seen: Option<Instant>,
    /// SSRC → rank (f=3, h=2, q or unknown rid=1, no rid=0).
    ranks: HashMap<u32, u8>,
    /// Bumped on every switch so forwards re-base sequence numbers and timestamps.
    generation: u64,
    /// After a switch nothing is forwarded until the new layer starts a key picture.
    awaiting_key: bool,
}

/// What to do with a packet of a given SSRC.
enum LayerVerdict {
    /// Not the forwarded layer: ignore.
    Skip,
    /// The forwarded layer; `switched` when it just became so.
    Use { switched: bool },
}

impl LayerState {
    /// How long the selected layer may be silent before a lower one takes over.
    const SILENCE: Duration = Duration::from_secs(1);

    fn judge(&mut self, ssrc: u32, rank: u8, now: Instant) -> LayerVerdict {
        let switch = match self.selected {
            None => true,
            Some(selected) if selected == ssrc => {
                self.selected_last_seen = Some(now);
                return LayerVerdict::Use { switched: false };
            }
            Some(_) => {
                rank > self.selected_rank
                    || self
                        .selected_last_seen
                        .is_none_or(|t| now.duration_since(t) > Self::SILENCE)
            }
        };
        if !switch {
            return LayerVerdict::Skip;
        }
        let first = self.selected.is_none();
        self.selected = Some(ssrc);
        self.selected_rank = rank;
        self.selected_last_seen = Some(now);
        if !first {
            self.generation += 1;
            self.awaiting_key = true;
        }
        LayerVerdict::Use { switched: !first }
    }
}

fn rid_rank(rid: Option<&str>) -> u8 {
    match rid {
        None | Some("") => 0,
        Some("f") => 3,
        Some("h") => 2,
        Some(_) => 1,
    }
}

#[derive(Clone)]
struct RemoteInfo {
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    codec: RTCRtpCodec,
    kind: TrackKind,
    format: PayloadFormat,
}

/// One subscription: a publisher's track written to a subscriber PC.
struct Forward {
    track: TrackKey,
    to: PeerId,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    codec: RTCRtpCodec,
    payload_type: Mutex<Option<u8>>,
    sequence: Mutex<SequenceState>,
    closed: AtomicBool,
    /// A key picture reached this subscriber (always true for audio): until then the SFU keeps
    /// asking the publisher for one (see `activate_forward`).
    key_forwarded: AtomicBool,
}

#[derive(Default)]
struct SequenceState {
    offset: u16,
    /// Newest incoming sequence number seen (forwarded or skipped padding).
    last_in: Option<u16>,
    last_out: Option<u16>,
    timestamp_offset: u32,
    last_timestamp: Option<u32>,
    /// (pause generation, layer generation) the offsets were computed for.
    generation: (u64, u64),
}

impl Sfu {
    /// Creates the SFU. `first_rtp_ms` counts from now.
    pub fn new(cfg: SfuConfig) -> (Sfu, mpsc::UnboundedReceiver<SfuEvent>) {
        Self::with_epoch(cfg, Instant::now())
    }

    /// Like [`Sfu::new`], with `first_rtp_ms` counted from `epoch` (devroom's start).
    pub fn with_epoch(cfg: SfuConfig, epoch: Instant) -> (Sfu, mpsc::UnboundedReceiver<SfuEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            cfg,
            epoch,
            events: tx,
            next_peer: AtomicU64::new(1),
            paused: AtomicBool::new(false),
            pause_generation: AtomicU64::new(0),
            peers: Mutex::new(HashMap::new()),
            tracks: Mutex::new(HashMap::new()),
            counters_changed: Arc::new(tokio::sync::Notify::new()),
        };
        (
            Sfu {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// Creates a PeerConnection bound to `media_ip`. ServerOffers peers get the SFU's own
    /// `_reliable` and `_lossy` data channels right away (they go into the first offer).
    pub async fn create_peer(&self, role: PeerRole) -> anyhow::Result<PeerId> {
        let id = self.inner.next_peer.fetch_add(1, Ordering::Relaxed);
        let handler = Arc::new(PeerHandler {
            inner: Arc::downgrade(&self.inner),
            peer: id,
        });
        let pc =
            build_peer_connection(self.inner.cfg.media_ip, self.inner.cfg.ice_tcp, handler).await?;
        let peer = Arc::new(Peer {
            id,
            role,
            pc,
            remote_description_set: AtomicBool::new(false),
            pending_candidates: tokio::sync::Mutex::new(Vec::new()),
            data_channels: Mutex::new(HashMap::new()),
            forwards: Mutex::new(HashMap::new()),
            pending_forwards: Mutex::new(Vec::new()),
            negotiation: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
        });
        lock(&self.inner.peers).insert(id, peer.clone());
        if role == PeerRole::ServerOffers {
            for (label, lossy) in [("_reliable", false), ("_lossy", true)] {
                let init = RTCDataChannelInit {
                    ordered: true,
                    max_packet_life_time: None,
                    max_retransmits: if lossy { Some(0) } else { None },
                    protocol: String::new(),
                    negotiated: None,
                };
                let dc = peer
                    .pc
                    .create_data_channel(label, Some(init))
                    .await
                    .with_context(|| format!("creating data channel {label}"))?;
                self.inner.register_data_channel(id, label.to_string(), dc);
            }
        }
        Ok(id)
    }

    /// The role a peer was created with.
    pub fn role(&self, peer: PeerId) -> Option<PeerRole> {
        lock(&self.inner.peers).get(&peer).map(|p| p.role)
    }

    /// Applies a client offer (initial, renegotiation or ICE restart) and answers it.
    /// Subscriptions waiting on this peer are attached to free recvonly m-sections first.
    pub async fn accept_offer(&self, peer: PeerId, sdp: String) -> anyhow::Result<Answer> {
        let peer = self.inner.peer(peer)?;
        let _negotiating = peer.negotiation.lock().await;
        let offer = RTCSessionDescription::offer(sdp.clone()).context("parsing the SDP offer")?;
        peer.pc
            .set_remote_description(offer)
            .await
            .context("applying the client's offer")?;
        self.inner.after_remote_description(&peer).await;

        let sections = parse_sections(&sdp);
        let mut answer = Answer {
            mid_to_cid: sections
                .iter()
                .filter_map(|s| Some((s.mid.clone()?, s.msid_track.clone()?)))
                .collect(),
            ..Answer::default()
        };
        if peer.role == PeerRole::ClientOffers {
            self.inner.attach_pending_forwards(&peer, &sections).await;
        }

        let local = peer
            .pc
            .create_answer(None)
            .await
            .context("creating the SDP answer")?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                "peer {}: offer codecs {:?}, answer codecs {:?}",
                peer.id,
                codec_summary(&sdp),
                codec_summary(&local.sdp)
            );
        }
        peer.pc
            .set_local_description(local)
            .await
            .context("applying the SDP answer")?;
        let local = peer
            .pc
            .local_description()
            .await
            .ok_or_else(|| anyhow!("no local description after answering"))?;
        answer.sdp = local.sdp;
        answer.mid_to_track_id = self.inner.subscribed_mids(&peer).await;
        for forward in lock(&peer.forwards).values() {
            self.inner.request_keyframe_for(&forward.track);
        }
        if peer.role == PeerRole::ClientOffers && !lock(&peer.pending_forwards).is_empty() {
            self.inner
                .emit_media_sections_required(&peer, &sections)
                .await;
        }
        Ok(answer)
    }

    /// Creates and applies an offer (ServerOffers peers; `ice_restart` forces new ICE credentials).
    pub async fn create_offer(&self, peer: PeerId, ice_restart: bool) -> anyhow::Result<String> {
        let peer = self.inner.peer(peer)?;
        let _negotiating = peer.negotiation.lock().await;
        let options = RTCOfferOptions { ice_restart };
        let offer = peer
            .pc
            .create_offer(Some(options))
            .await
            .context("creating the SDP offer")?;
        peer.pc
            .set_local_description(offer)
            .await
            .context("applying the SDP offer")?;
        let local = peer
            .pc
            .local_description()
            .await
            .ok_or_else(|| anyhow!("no local description after offering"))?;
        Ok(local.sdp)
    }

    /// Applies the client's answer to an offer from [`Sfu::create_offer`].
    pub async fn accept_answer(&self, peer: PeerId, sdp: String) -> anyhow::Result<()> {
        let peer = self.inner.peer(peer)?;
        let _negotiating = peer.negotiation.lock().await;
        let answer = RTCSessionDescription::answer(sdp).context("parsing the SDP answer")?;
        peer.pc
            .set_remote_description(answer)
            .await
            .context("applying the client's answer")?;
        self.inner.after_remote_description(&peer).await;
        for forward in lock(&peer.forwards).values() {
            self.inner.request_keyframe_for(&forward.track);
        }
        Ok(())
    }

    /// Adds a trickled remote candidate (JSON RTCIceCandidateInit). Queued until the remote
    /// description is set. An empty candidate (end of candidates) is accepted and ignored.
    pub async fn add_remote_candidate(
        &self,
        peer: PeerId,
        candidate_init_json: &str,
    ) -> anyhow::Result<()> {
        let peer = self.inner.peer(peer)?;
        let init: RTCIceCandidateInit =
            serde_json::from_str(candidate_init_json).with_context(|| {
                format!("candidate is not RTCIceCandidateInit JSON: {candidate_init_json}")
            })?;
        if init.candidate.trim().is_empty() {
            return Ok(());
        }
        let mut queue = peer.pending_candidates.lock().await;
        if !peer.remote_description_set.load(Ordering::SeqCst) {
            queue.push(init);
            return Ok(());
        }
        drop(queue);
        peer.pc
            .add_ice_candidate(init)
            .await
            .context("adding the remote ICE candidate")
    }

    /// Names the incoming track on `mid` of `peer` (call it once AddTrack and the m-section
    /// are matched; before or after its RTP starts does not matter). Subscribers see it with
    /// `a=msid:<participant_sid>|<track_sid> <track_sid>`, which LiveKit clients require.
    pub fn publish(
        &self,
        peer: PeerId,
        mid: &str,
        track_sid: &str,
        participant_sid: &str,
    ) -> TrackKey {
        let key = TrackKey {
            peer,
            mid: mid.to_string(),
            track_sid: track_sid.to_string(),
        };
        let track = self.inner.track_entry(peer, mid);
        *lock(&track.sid) = Some(track_sid.to_string());
        *lock(&track.stream_id) = Some(format!("{participant_sid}|{track_sid}"));
        let started = lock(&track.counter).stats().first_rtp_ms.is_some();
        if started && !track.first_rtp_reported.swap(true, Ordering::SeqCst) {
            self.inner.emit(SfuEvent::FirstRtp {
                track_key: key.clone(),
            });
        }
        key
    }

    /// The key of a published track by its sid.
    pub fn track_by_sid(&self, track_sid: &str) -> Option<TrackKey> {
        lock(&self.inner.tracks).values().find_map(|t| {
            let sid = lock(&t.sid).clone()?;
            (sid == track_sid).then(|| TrackKey {
                peer: t.peer,
                mid: t.mid.clone(),
                track_sid: sid,
            })
        })
    }

    /// Kind and mime of a track, once its first RTP packet arrived.
    pub fn track_codec(&self, track: &TrackKey) -> Option<(TrackKind, String)> {
        let entry = lock(&self.inner.tracks)
            .get(&(track.peer, track.mid.clone()))
            .cloned()?;
        let remote = lock(&entry.remote).clone()?;
        Some((remote.kind, remote.codec.mime_type))
    }

    /// Subscribes `to` to `track` and emits RenegotiationNeeded. ServerOffers: the next
    /// [`Sfu::create_offer`] carries it. ClientOffers: it is attached on the client's next offer.
    pub async fn forward(&self, track: &TrackKey, to: PeerId) -> anyhow::Result<()> {
        let peer = self.inner.peer(to)?;
        if to == track.peer {
            bail!(
                "peer {to} cannot subscribe to its own track {}",
                track.track_sid
            );
        }
        if lock(&peer.forwards).contains_key(&track.track_sid)
            || lock(&peer.pending_forwards).contains(track)
        {
            return Ok(());
        }
        match peer.role {
            PeerRole::ServerOffers => {
                let _negotiating = peer.negotiation.lock().await;
                let (local, ssrc, codec) = self.inner.new_local_track(track).await?;
                let kind = self.inner.track_kind(track).await;
                let transceiver = peer
                    .pc
                    .add_transceiver_from_track(
                        local.clone(),
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Sendonly,
                            streams: vec![],
                            send_encodings: vec![],
                        }),
                    )
                    .await
                    .with_context(|| format!("adding a {} sender", kind.as_str()))?;
                let sender = transceiver
                    .sender()
                    .await?
                    .ok_or_else(|| anyhow!("new transceiver has no sender"))?;
                self.inner
                    .activate_forward(&peer, track, local, sender, ssrc, codec);
                self.inner.emit_server_renegotiation(peer.id);
            }
            PeerRole::ClientOffers => {
                lock(&peer.pending_forwards).push(track.clone());
                let sections = match peer.pc.remote_description().await {
                    Some(desc) => parse_sections(&desc.sdp),
                    None => Vec::new(),
                };
                self.inner
                    .emit_media_sections_required(&peer, &sections)
                    .await;
            }
        }
        Ok(())
    }

    /// Ends a subscription and emits RenegotiationNeeded (the m-section goes inactive; a
    /// ClientOffers peer's section becomes free for the next forward after its next offer).
    pub async fn unforward(&self, track: &TrackKey, to: PeerId) {
        let Ok(peer) = self.inner.peer(to) else {
            return;
        };
        lock(&peer.pending_forwards).retain(|t| t != track);
        let forward = lock(&peer.forwards).remove(&track.track_sid);
        if let Some(forward) = forward {
            self.inner.drop_forward(&peer, &forward).await;
            self.inner.renegotiate(&peer).await;
        }
    }

    /// Sends a message on the peer's `_reliable` or `_lossy` data channel.
    pub async fn send_data(&self, peer: PeerId, reliable: bool, data: Bytes) -> anyhow::Result<()> {
        let label = if reliable { "_reliable" } else { "_lossy" };
        let dc = lock(&self.inner.peer(peer)?.data_channels)
            .get(label)
            .cloned()
            .ok_or_else(|| anyhow!("peer {peer} has no {label} data channel (yet)"))?;
        dc.send(BytesMut::from(&data[..]))
            .await
            .with_context(|| format!("sending on {label} of peer {peer}"))
    }

    /// Wakes on every packet any track counts: wait on it (created before checking the
    /// condition) instead of polling the counters.
    pub fn counters_changed(&self) -> Arc<tokio::sync::Notify> {
        self.inner.counters_changed.clone()
    }

    /// Counters of a track (all zero for an unknown key).
    pub fn stats(&self, track: &TrackKey) -> TrackStats {
        lock(&self.inner.tracks)
            .get(&(track.peer, track.mid.clone()))
            .map(|t| lock(&t.counter).stats())
            .unwrap_or_default()
    }

    /// Sends the track's publisher a PLI, as a subscriber's would be relayed. False when none
    /// went out: at most one per 100 ms, and only to a video track with media.
    pub fn request_keyframe(&self, track: &TrackKey) -> bool {
        self.inner.request_keyframe_for(track)
    }

    /// Decodes the track's latest H.264 picture and writes it as an RGB PNG into
    /// `frame_dir`. Returns (path, width, height).
    pub async fn write_png(&self, track: &TrackKey) -> anyhow::Result<(PathBuf, u32, u32)> {
        let entry = lock(&self.inner.tracks)
            .get(&(track.peer, track.mid.clone()))
            .cloned()
            .ok_or_else(|| anyhow!("unknown track {}", track.track_sid))?;
        let _one_at_a_time = entry.png_lock.lock().await;
        let format = lock(&entry.remote).as_ref().map(|r| r.format);
        match format {
            Some(PayloadFormat::H264) => {}
            Some(_) => bail!(
                "track {} is not H.264; only H.264 tracks can be snapshotted",
                track.track_sid
            ),
            None => bail!("track {} has received no RTP yet", track.track_sid),
        }
        let job = lock(&entry.snapshot).take_job();
        let entry2 = entry.clone();
        let frame = tokio::task::spawn_blocking(move || {
            let result = job.run();
            lock(&entry2.snapshot).finish_job(result)
        })
        .await
        .context("decoder task panicked")??;
        let frame = frame.ok_or_else(|| {
            anyhow!(
                "no decodable H.264 picture yet on track {} (no keyframe received?)",
                track.track_sid
            )
        })?;
        let dir = self.inner.cfg.frame_dir.clone();
        let path = media::png_path(&dir, &track.track_sid);
        let (width, height) = (frame.width, frame.height);
        let written = path.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating frame dir {}", dir.display()))?;
            media::write_png_file(&written, &frame)
        })
        .await
        .context("PNG writer task panicked")??;
        Ok((path, width, height))
    }

    /// Decodes the last seconds of an Opus track and says what the room hears.
    pub async fn analyse_audio(&self, track: &TrackKey) -> anyhow::Result<audio::AudioAnalysis> {
        let entry = lock(&self.inner.tracks)
            .get(&(track.peer, track.mid.clone()))
            .cloned()
            .ok_or_else(|| anyhow!("unknown track {}", track.track_sid))?;
        let mime = lock(&entry.remote)
            .as_ref()
            .map(|r| r.codec.mime_type.clone());
        match mime {
            Some(m) if m.eq_ignore_ascii_case("audio/opus") => {}
            Some(m) => bail!(
                "track {} carries {m}; only Opus tracks can be analysed",
                track.track_sid
            ),
            None => bail!("track {} has received no RTP yet", track.track_sid),
        }
        let packets = lock(&entry.opus).snapshot();
        tokio::task::spawn_blocking(move || audio::analyse_opus(&packets))
            .await
            .context("audio analysis task panicked")?
    }

    /// Stops (true) or resumes (false) all forwarding. Counting continues. Resuming asks
    /// every publisher for a keyframe so subscribers recover at once.
    pub fn set_paused(&self, paused: bool) {
        let was = self.inner.paused.swap(paused, Ordering::SeqCst);
        if was != paused {
            self.inner.pause_generation.fetch_add(1, Ordering::SeqCst);
            if !paused {
                let tracks: Vec<Arc<PubTrack>> =
                    lock(&self.inner.tracks).values().cloned().collect();
                for track in tracks {
                    if !lock(&track.forwards).is_empty() {
                        self.inner.request_keyframe(&track);
                    }
                }
            }
        }
    }

    /// Whether forwarding is paused.
    pub fn paused(&self) -> bool {
        self.inner.paused.load(Ordering::SeqCst)
    }

    /// Closes a peer: its PC, its subscriptions and the tracks it published (their
    /// subscribers get RenegotiationNeeded for ServerOffers peers).
    pub async fn close_peer(&self, peer: PeerId) {
        let Some(p) = lock(&self.inner.peers).remove(&peer) else {
            return;
        };
        p.closed.store(true, Ordering::SeqCst);
        let forwards: Vec<Arc<Forward>> = lock(&p.forwards).drain().map(|(_, f)| f).collect();
        for forward in forwards {
            forward.closed.store(true, Ordering::SeqCst);
            if let Some(track) = self.inner.pub_track(&forward.track) {
                lock(&track.forwards).retain(|f| !Arc::ptr_eq(f, &forward));
            }
        }
        let published: Vec<Arc<PubTrack>> = {
            let mut tracks = lock(&self.inner.tracks);
            let keys: Vec<_> = tracks.keys().filter(|(p, _)| *p == peer).cloned().collect();
            keys.into_iter().filter_map(|k| tracks.remove(&k)).collect()
        };
        for track in published {
            let forwards: Vec<Arc<Forward>> = lock(&track.forwards).drain(..).collect();
            for forward in forwards {
                if let Ok(sub) = self.inner.peer(forward.to) {
                    lock(&sub.forwards).remove(&forward.track.track_sid);
                    self.inner.drop_forward(&sub, &forward).await;
                    self.inner.renegotiate(&sub).await;
                }
            }
        }
        for other in lock(&self.inner.peers).values() {
            lock(&other.pending_forwards).retain(|t| t.peer != peer);
        }
        if let Err(err) = p.pc.close().await {
            tracing::debug!("closing peer {peer}: {err}");
        }
    }
}

impl Inner {
    fn emit(&self, event: SfuEvent) {
        let _ = self.events.send(event);
    }

    /// Emits RenegotiationNeeded for either role.
    async fn renegotiate(&self, peer: &Peer) {
        match peer.role {
            PeerRole::ServerOffers => self.emit_server_renegotiation(peer.id),
            PeerRole::ClientOffers => {
                let sections = match peer.pc.remote_description().await {
                    Some(desc) => parse_sections(&desc.sdp),
                    None => Vec::new(),
                };
                self.emit_media_sections_required(peer, &sections).await;
            }
        }
    }

    fn emit_server_renegotiation(&self, peer: PeerId) {
        self.emit(SfuEvent::RenegotiationNeeded {
            peer,
            missing_audio: 0,
            missing_video: 0,
        });
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn peer(&self, peer: PeerId) -> anyhow::Result<Arc<Peer>> {
        lock(&self.peers)
            .get(&peer)
            .cloned()
            .ok_or_else(|| anyhow!("unknown or closed peer {peer}"))
    }

    fn pub_track(&self, key: &TrackKey) -> Option<Arc<PubTrack>> {
        lock(&self.tracks)
            .get(&(key.peer, key.mid.clone()))
            .cloned()
    }

    fn track_entry(&self, peer: PeerId, mid: &str) -> Arc<PubTrack> {
        lock(&self.tracks)
            .entry((peer, mid.to_string()))
            .or_insert_with(|| {
                Arc::new(PubTrack {
                    peer,
                    mid: mid.to_string(),
                    sid: Mutex::new(None),
                    stream_id: Mutex::new(None),
                    remote: Mutex::new(None),
                    counter: Mutex::new(TrackCounter::new(PayloadFormat::Audio)),
                    snapshot: Mutex::new(H264Snapshotter::new()),
                    opus: Mutex::new(audio::OpusRecorder::default()),
                    png_lock: tokio::sync::Mutex::new(()),
                    forwards: Mutex::new(Vec::new()),
                    last_pli: Mutex::new(None),
                    first_rtp_reported: AtomicBool::new(false),
                    layers: Mutex::new(LayerState::default()),
                })
            })
            .clone()
    }

    async fn after_remote_description(&self, peer: &Peer) {
        let mut queue = peer.pending_candidates.lock().await;
        peer.remote_description_set.store(true, Ordering::SeqCst);
        for candidate in queue.drain(..) {
            if let Err(err) = peer.pc.add_ice_candidate(candidate).await {
                tracing::warn!("peer {}: queued remote candidate rejected: {err}", peer.id);
            }
        }
    }

    fn register_data_channel(
        self: &Arc<Self>,
        peer: PeerId,
        label: String,
        dc: Arc<dyn DataChannel>,
    ) {
        if let Ok(p) = self.peer(peer) {
            lock(&p.data_channels).insert(label.clone(), dc.clone());
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(event) = dc.poll().await {
                let Some(inner) = weak.upgrade() else { break };
                match event {
                    DataChannelEvent::OnMessage(msg) => inner.emit(SfuEvent::Data {
                        peer,
                        label: label.clone(),
                        data: msg.data.freeze(),
                    }),
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        });
    }

    /// The codec a forwarded copy of `track` should announce: the one seen on the wire,
    /// else the first one negotiated for its m-section, else a default for the kind.
    async fn track_codec(&self, track: &TrackKey) -> RTCRtpCodec {
        if let Some(entry) = self.pub_track(track) {
            if let Some(remote) = lock(&entry.remote).as_ref() {
                return remote.codec.clone();
            }
        }
        if let Ok(publisher) = self.peer(track.peer) {
            for transceiver in publisher.pc.get_transceivers().await {
                if transceiver.mid().await.ok().flatten().as_deref() != Some(track.mid.as_str()) {
                    continue;
                }
                if let Ok(Some(receiver)) = transceiver.receiver().await {
                    if let Ok(params) = receiver.get_parameters().await {
                        if let Some(first) = params.rtp_parameters.codecs.first() {
                            return first.rtp_codec.clone();
                        }
                    }
                }
                if let Some(desc) = publisher.pc.remote_description().await {
                    if let Some(section) = parse_sections(&desc.sdp)
                        .into_iter()
                        .find(|s| s.mid.as_deref() == Some(track.mid.as_str()))
                    {
                        return default_codec(section.kind.unwrap_or(TrackKind::Video));
                    }
                }
            }
        }
        default_codec(TrackKind::Video)
    }

    async fn track_kind(&self, track: &TrackKey) -> TrackKind {
        let codec = self.track_codec(track).await;
        kind_of_mime(&codec.mime_type)
    }

    async fn new_local_track(
        &self,
        track: &TrackKey,
    ) -> anyhow::Result<(Arc<TrackLocalStaticRTP>, u32, RTCRtpCodec)> {
        let codec = self.track_codec(track).await;
        let kind = kind_of_mime(&codec.mime_type);
        let ssrc = rand::random::<u32>();
        let stream_id = self
            .pub_track(track)
            .and_then(|t| lock(&t.stream_id).clone())
            .unwrap_or_else(|| track.track_sid.clone());
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream_id,
            track.track_sid.clone(),
            track.track_sid.clone(),
            kind.to_rtc(),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            }],
        )));
        Ok((local, ssrc, codec))
    }

    fn activate_forward(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        track: &TrackKey,
        local: Arc<TrackLocalStaticRTP>,
        sender: Arc<dyn RtpSender>,
        ssrc: u32,
        codec: RTCRtpCodec,
    ) {
        let audio = kind_of_mime(&codec.mime_type) == TrackKind::Audio;
        let forward = Arc::new(Forward {
            track: track.clone(),
            to: peer.id,
            local,
            sender,
            ssrc,
            codec,
            payload_type: Mutex::new(None),
            closed: AtomicBool::new(false),
            key_forwarded: AtomicBool::new(audio),
            sequence: Mutex::new(SequenceState::default()),
        });
        lock(&peer.forwards).insert(track.track_sid.clone(), forward.clone());
        let entry = self.track_entry(track.peer, &track.mid);
        lock(&entry.forwards).push(forward.clone());
        // As LiveKit's forwarder does: keep asking the publisher for a key picture until one has
        // reached this subscriber. The first one can arrive before the subscriber's negotiation
        // is done (it is dropped then), and the subscriber's own PLIs may come late or never.
        if !forward.key_forwarded.load(Ordering::SeqCst) {
            let (weak, forward) = (Arc::downgrade(self), forward.clone());
            tokio::spawn(async move {
                let mut retry = tokio::time::interval(KEYFRAME_RETRY);
                loop {
                    retry.tick().await;
                    if forward.closed.load(Ordering::SeqCst)
                        || forward.key_forwarded.load(Ordering::SeqCst)
                    {
                        break;
                    }
                    let Some(inner) = weak.upgrade() else { break };
                    inner.request_keyframe_for(&forward.track);
                }
            });
        }
        // Relay the subscriber's keyframe requests to the publisher.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            // The track delivers events only once negotiation bound it; until then poll()
            // returns None at once, so retry at a modest pace until bound or dropped.
            while !forward.closed.load(Ordering::SeqCst) {
                match forward.local.poll().await {
                    Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                        if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                            let Some(inner) = weak.upgrade() else { break };
                            inner.request_keyframe_for(&forward.track);
                        }
                    }
                    Some(_) => {}
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                if weak.strong_count() == 0 {
                    break;
                }
            }
        });
    }

    async fn drop_forward(&self, peer: &Peer, forward: &Arc<Forward>) {
        forward.closed.store(true, Ordering::SeqCst);
        if let Some(track) = self.pub_track(&forward.track) {
            lock(&track.forwards).retain(|f| !Arc::ptr_eq(f, forward));
        }
        if !peer.closed.load(Ordering::SeqCst) {
            if let Err(err) = peer.pc.remove_track(&forward.sender).await {
                tracing::debug!("peer {}: removing forwarded track: {err}", peer.id);
            }
        }
    }

    /// ClientOffers: attaches waiting subscriptions to free recvonly m-sections of the offer
    /// just applied. add_track takes the first sender-less transceiver of the right kind,
    /// which may be one the client publishes on; those get a placeholder sender while we
    /// search and are released afterwards (removing it restores their recvonly direction).
    async fn attach_pending_forwards(self: &Arc<Self>, peer: &Arc<Peer>, sections: &[Section]) {
        let pending: Vec<TrackKey> = std::mem::take(&mut *lock(&peer.pending_forwards));
        let mut still_pending = Vec::new();
        let mut placeholders: Vec<Arc<dyn RtpSender>> = Vec::new();
        for track in pending {
            if self.pub_track(&track).is_none() {
                continue; // the publisher went away
            }
            let codec = self.track_codec(&track).await;
            let kind = kind_of_mime(&codec.mime_type);
            // Find the slot with probe tracks of their own track ids: webrtc keys a sender's
            // RTCP events by track id, so a placeholder carrying the real id would, when
            // released, take the real sender's PLI route with it.
            let mut slot = None;
            for _attempt in 0..64 {
                let probe_id = format!("probe-{}", rand::random::<u64>());
                let probe = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    probe_id.clone(),
                    probe_id.clone(),
                    probe_id,
                    kind.to_rtc(),
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(rand::random::<u32>()),
                            ..Default::default()
                        },
                        codec: codec.clone(),
                        ..Default::default()
                    }],
                )));
                let sender = match peer.pc.add_track(probe).await {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::warn!("forward {}: add_track: {err}", track.track_sid);
                        break;
                    }
                };
                let transceiver_id: RTCRtpTransceiverId = sender.id().into();
                let mid = transceiver_mid(&peer.pc, transceiver_id).await;
                let usable = mid.as_ref().is_some_and(|mid| {
                    sections.iter().any(|s| {
                        s.mid.as_deref() == Some(mid.as_str())
                            && s.kind == Some(kind)
                            && s.direction == "recvonly"
                    })
                });
                if usable {
                    // Free the slot again: it is now the first free one, so the real track
                    // lands there next.
                    match peer.pc.remove_track(&sender).await {
                        Ok(()) => slot = mid,
                        Err(err) => {
                            tracing::warn!("peer {}: releasing probe: {err}", peer.id);
                            placeholders.push(sender);
                        }
                    }
                    break;
                }
                let brand_new = mid.is_none();
                placeholders.push(sender);
                if brand_new {
                    break; // no free transceiver of that kind left in this offer
                }
            }
            let Some(slot) = slot else {
                still_pending.push(track);
                continue;
            };
            let (local, ssrc, codec) = match self.new_local_track(&track).await {
                Ok(t) => t,
                Err(err) => {
                    tracing::warn!("forward {}: {err:#}", track.track_sid);
                    still_pending.push(track);
                    continue;
                }
            };
            let sender = match peer.pc.add_track(local.clone()).await {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!("forward {}: add_track: {err}", track.track_sid);
                    still_pending.push(track);
                    continue;
                }
            };
            let landed = transceiver_mid(&peer.pc, sender.id().into()).await;
            if landed.as_deref() == Some(slot.as_str()) {
                self.activate_forward(peer, &track, local, sender, ssrc, codec);
            } else {
                tracing::warn!(
                    "forward {}: landed on {landed:?} instead of mid {slot}; retrying on the next offer",
                    track.track_sid
                );
                let _ = peer.pc.remove_track(&sender).await;
                still_pending.push(track);
            }
        }
        for sender in placeholders {
            if let Err(err) = peer.pc.remove_track(&sender).await {
                tracing::warn!("peer {}: releasing placeholder sender: {err}", peer.id);
            }
        }
        lock(&peer.pending_forwards).extend(still_pending);
    }

    async fn subscribed_mids(&self, peer: &Peer) -> HashMap<String, String> {
        let forwards: Vec<Arc<Forward>> = lock(&peer.forwards).values().cloned().collect();
        let mut out = HashMap::new();
        for forward in forwards {
            let id: RTCRtpTransceiverId = forward.sender.id().into();
            if let Some(mid) = transceiver_mid(&peer.pc, id).await {
                out.insert(mid, forward.track.track_sid.clone());
            }
        }
        out
    }

    async fn emit_media_sections_required(&self, peer: &Peer, sections: &[Section]) {
        let pending: Vec<TrackKey> = lock(&peer.pending_forwards).clone();
        let mut want = HashMap::<TrackKind, u32>::new();
        for track in &pending {
            *want.entry(self.track_kind(track).await).or_default() += 1;
        }
        // Free = recvonly sections of the current offer that carry no sender of ours.
        let used: Vec<String> = self.subscribed_mids(peer).await.into_keys().collect();
        let free = |kind: TrackKind| {
            sections
                .iter()
                .filter(|s| {
                    s.kind == Some(kind)
                        && s.direction == "recvonly"
                        && s.mid.as_ref().is_some_and(|m| !used.contains(m))
                })
                .count() as u32
        };
        let need = |kind: TrackKind| {
            want.get(&kind)
                .copied()
                .unwrap_or(0)
                .saturating_sub(free(kind))
        };
        self.emit(SfuEvent::RenegotiationNeeded {
            peer: peer.id,
            missing_audio: need(TrackKind::Audio),
            missing_video: need(TrackKind::Video),
        });
    }

    fn request_keyframe_for(&self, key: &TrackKey) -> bool {
        self.pub_track(key)
            .is_some_and(|track| self.request_keyframe(&track))
    }

    /// Sends a PLI to the publisher of `track`, at most one per 100 ms. Whether one went out.
    fn request_keyframe(&self, track: &Arc<PubTrack>) -> bool {
        let Some(remote) = lock(&track.remote).clone() else {
            return false;
        };
        if remote.kind != TrackKind::Video {
            return false;
        }
        {
            let mut last = lock(&track.last_pli);
            if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
                return false;
            }
            *last = Some(Instant::now());
        }
        if let Some(sid) = lock(&track.sid).clone() {
            self.emit(SfuEvent::KeyframeRequested {
                track_key: TrackKey {
                    peer: track.peer,
                    mid: track.mid.clone(),
                    track_sid: sid,
                },
            });
        }
        let media_ssrc = lock(&track.layers).selected.unwrap_or(remote.ssrc);
        tokio::spawn(async move {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if let Err(err) = remote.track.write_rtcp(vec![Box::new(pli)]).await {
                tracing::debug!("sending PLI: {err}");
            }
        });
        true
    }

    async fn on_remote_track(self: Arc<Self>, peer: PeerId, track: Arc<dyn TrackRemote>) {
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            tracing::warn!("peer {peer}: remote track without SSRC ignored");
            return;
        };
        let Some(codec) = track.codec(ssrc).await else {
            tracing::warn!("peer {peer}: remote track without codec ignored");
            return;
        };
        let Some(kind) = TrackKind::from_rtc(track.kind().await) else {
            return;
        };
        let track_id = track.track_id().await.to_string();
        let mid = match self.peer(peer) {
            Ok(p) => find_receiver_mid(&p.pc, &track).await,
            Err(_) => None,
        };
        let Some(mid) = mid else {
            tracing::warn!("peer {peer}: no m-section found for remote track {track_id}");
            return;
        };
        let format = PayloadFormat::from_mime(&codec.mime_type);
        let entry = self.track_entry(peer, &mid);
        *lock(&entry.counter) = TrackCounter::new(format);
        *lock(&entry.remote) = Some(RemoteInfo {
            track: track.clone(),
            ssrc,
            codec: codec.clone(),
            kind,
            format,
        });
        self.emit(SfuEvent::TrackStarted {
            peer,
            mid: mid.clone(),
            track_id,
            kind,
            mime: codec.mime_type.clone(),
        });
        // Subscribers added before the first packet asked for a keyframe in vain.
        if !lock(&entry.forwards).is_empty() {
            self.request_keyframe(&entry);
        }
        let weak = Arc::downgrade(&self);
        drop(self);
        while let Some(event) = track.poll().await {
            match event {
                TrackRemoteEvent::OnRtpPacket(packet) => {
                    let Some(inner) = weak.upgrade() else { break };
                    inner.on_rtp(&entry, &track, format, packet).await;
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
    }

    async fn on_rtp(
        &self,
        entry: &Arc<PubTrack>,
        track: &Arc<dyn TrackRemote>,
        format: PayloadFormat,
        packet: rtc::rtp::Packet,
    ) {
        // Bandwidth probes carry only padding: neither media nor worth forwarding. Their
        // sequence numbers still count, so the snapshotter and each subscriber's stream must
        // not take the hole they leave for a loss (NACKs, broken pictures).
        if packet.payload.is_empty() {
            let seq = packet.header.sequence_number;
            if lock(&entry.layers).selected == Some(packet.header.ssrc) {
                lock(&entry.snapshot).skip_sequence(seq);
                let forwards: Vec<Arc<Forward>> = lock(&entry.forwards).clone();
                for forward in forwards {
                    forward.skip_sequence(seq);
                }
            }
            return;
        }
        let ssrc = packet.header.ssrc;
        let known = lock(&entry.layers).ranks.get(&ssrc).copied();
        let rank = match known {
            Some(rank) => rank,
            None => {
                let rid = track.rid(ssrc).await;
                let rank = rid_rank(rid.as_deref());
                lock(&entry.layers).ranks.insert(ssrc, rank);
                rank
            }
        };
        let verdict = lock(&entry.layers).judge(ssrc, rank, Instant::now());
        match verdict {
            LayerVerdict::Skip => return,
            LayerVerdict::Use { switched: true } => {
                tracing::debug!(
                    "track {}: switching to layer ssrc {ssrc} (rank {rank})",
                    entry.mid
                );
                lock(&entry.counter).restart_pictures();
                lock(&entry.snapshot).restart_stream();
                *lock(&entry.last_pli) = None;
                self.request_keyframe(entry);
            }
            LayerVerdict::Use { switched: false } => {}
        }
        let first =
            lock(&entry.counter).on_packet(packet.header.timestamp, &packet.payload, self.now_ms());
        self.counters_changed.notify_waiters();
        if format == PayloadFormat::Audio {
            lock(&entry.opus).on_packet(&packet.payload);
        }
        if format == PayloadFormat::H264 {
            let overflowed = lock(&entry.snapshot).on_packet(
                packet.header.sequence_number,
                packet.header.timestamp,
                packet.header.marker,
                &packet.payload,
            );
            if overflowed {
                self.request_keyframe(entry);
            }
        }
        if first {
            if let Some(sid) = lock(&entry.sid).clone() {
                if !entry.first_rtp_reported.swap(true, Ordering::SeqCst) {
                    self.emit(SfuEvent::FirstRtp {
                        track_key: TrackKey {
                            peer: entry.peer,
                            mid: entry.mid.clone(),
                            track_sid: sid,
                        },
                    });
                }
            }
        }
        if self.paused.load(Ordering::SeqCst) {
            return;
        }
        let layer_generation = {
            let mut layers = lock(&entry.layers);
            if layers.awaiting_key {
                if !starts_key_picture(format, &packet.payload) {
                    return;
                }
                layers.awaiting_key = false;
            }
            layers.generation
        };
        let forwards: Vec<Arc<Forward>> = lock(&entry.forwards).clone();
        let pause_generation = self.pause_generation.load(Ordering::SeqCst);
        let key_start =
            format != PayloadFormat::Audio && starts_key_picture(format, &packet.payload);
        for forward in forwards {
            forward
                .write(&packet, pause_generation, layer_generation, key_start)
                .await;
        }
    }
}

impl Forward {
    async fn write(
        &self,
        packet: &rtc::rtp::Packet,
        pause_generation: u64,
        layer_generation: u64,
        key_start: bool,
    ) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let cached = *lock(&self.payload_type);
        let payload_type = match cached {
            Some(pt) => pt,
            None => match self.resolve_payload_type().await {
                Some(pt) => {
                    *lock(&self.payload_type) = Some(pt);
                    pt
                }
                None => return, // not negotiated yet
            },
        };
        let mut out = packet.clone();
        out.header.ssrc = self.ssrc;
        out.header.payload_type = payload_type;
        // Extension ids were negotiated with the publisher, not with this subscriber.
        out.header.extension = false;
        out.header.extensions.clear();
        out.header.extension_profile = 0;
        out.header.extensions_padding = 0;
        out.header.padding = false;
        {
            // Keep this subscriber's stream continuous across pauses (sequence numbers) and
            // simulcast layer switches (sequence numbers and timestamps: each layer has its own
            // random bases).
            let mut seq = lock(&self.sequence);
            let incoming = packet.header.sequence_number;
            let generation = (pause_generation, layer_generation);
            if seq.generation != generation {
                if let Some(last) = seq.last_out {
                    seq.offset = last.wrapping_add(1).wrapping_sub(incoming);
                }
                if seq.generation.1 != layer_generation {
                    if let Some(last_ts) = seq.last_timestamp {
                        // One 30 fps picture later than the last one sent.
                        seq.timestamp_offset = last_ts
                            .wrapping_add(3000)
                            .wrapping_sub(packet.header.timestamp);
                    }
                }
                seq.generation = generation;
            }
            let outgoing = incoming.wrapping_add(seq.offset);
            let newer = match seq.last_out {
                None => true,
                Some(last) => (outgoing.wrapping_sub(last) as i16) > 0,
            };
            let timestamp = packet.header.timestamp.wrapping_add(seq.timestamp_offset);
            if seq
                .last_in
                .is_none_or(|last| (incoming.wrapping_sub(last) as i16) > 0)
            {
                seq.last_in = Some(incoming);
            }
            if newer {
                seq.last_out = Some(outgoing);
                seq.last_timestamp = Some(timestamp);
            }
            out.header.sequence_number = outgoing;
            out.header.timestamp = timestamp;
        }
        match self.local.write_rtp(out).await {
            Ok(()) if key_start => self.key_forwarded.store(true, Ordering::SeqCst),
            Ok(()) => {}
            Err(err) => tracing::trace!(
                "forward {} -> peer {}: {err}",
                self.track.track_sid,
                self.to
            ),
        }
    }

    /// A padding-only packet with this sequence number was dropped: close the gap it would
    /// leave in this subscriber's numbering (when it is the next one in order).
    fn skip_sequence(&self, sequence: u16) {
        let mut seq = lock(&self.sequence);
        if seq
            .last_in
            .is_some_and(|last| sequence == last.wrapping_add(1))
        {
            seq.last_in = Some(sequence);
            seq.offset = seq.offset.wrapping_sub(1);
        }
    }

    async fn resolve_payload_type(&self) -> Option<u8> {
        let params = self.sender.get_parameters().await.ok()?;
        let codecs = &params.rtp_parameters.codecs;
        let same_mime = |c: &&RTCRtpCodecParameters| {
            c.rtp_codec
                .mime_type
                .eq_ignore_ascii_case(&self.codec.mime_type)
        };
        let exact = codecs.iter().filter(same_mime).find(|c| {
            !self.codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_H264)
                || h264_params_match(&c.rtp_codec.sdp_fmtp_line, &self.codec.sdp_fmtp_line)
        });
        exact
            .or_else(|| codecs.iter().find(same_mime))
            .map(|c| c.payload_type)
    }
}

struct PeerHandler {
    inner: Weak<Inner>,
    peer: PeerId,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        match event.candidate.to_json() {
            Ok(init) => {
                let json = serde_json::json!({
                    "candidate": init.candidate,
                    "sdpMid": init.sdp_mid,
                    "sdpMLineIndex": init.sdp_mline_index,
                });
                inner.emit(SfuEvent::LocalCandidate {
                    peer: self.peer,
                    candidate_init: json.to_string(),
                });
            }
            Err(err) => tracing::warn!("peer {}: cannot encode local candidate: {err}", self.peer),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            if let Some(inner) = self.inner.upgrade() {
                inner.emit(SfuEvent::GatheringComplete { peer: self.peer });
            }
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if let Some(inner) = self.inner.upgrade() {
            inner.emit(SfuEvent::ConnectionState {
                peer: self.peer,
                state: state.to_string(),
            });
        }
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let label = match data_channel.label().await {
            Ok(label) => label,
            Err(err) => {
                tracing::warn!("peer {}: data channel without label: {err}", self.peer);
                return;
            }
        };
        inner.register_data_channel(self.peer, label, data_channel);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        // The handler runs on the PC's driver loop: never block it.
        tokio::spawn(inner.on_remote_track(self.peer, track));
    }
}

/// Codecs as LiveKit clients offer them, from roomcast's codec table. H.264 first so
/// publishers that can send it do (devroom can only snapshot H.264); VP8 is what browsers
/// default to and is forwarded too.
fn media_engine() -> anyhow::Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: default_codec(TrackKind::Audio),
            payload_type: codecs::PT_OPUS,
        },
        RtpCodecKind::Audio,
    )?;
    let video = [
        (codecs::h264(codecs::H264_CONSTRAINED_BASELINE, vec![]), 125),
        (codecs::h264("42001f", vec![]), 102),
        (codecs::h264("4d001f", vec![]), 127),
        (codecs::h264("640032", vec![]), 123),
        (codecs::vp8(vec![]), codecs::PT_VP8),
    ];
    for (codec, payload_type) in video {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec,
                payload_type,
            },
            RtpCodecKind::Video,
        )?;
    }
    engine.register_feedback(
        RTCPFeedback {
            typ: "ccm".to_string(),
            parameter: "fir".to_string(),
        },
        RtpCodecKind::Video,
    );
    Ok(engine)
}

fn default_codec(kind: TrackKind) -> RTCRtpCodec {
    match kind {
        TrackKind::Audio => codecs::opus(vec![]),
        TrackKind::Video => codecs::h264(codecs::H264_CONSTRAINED_BASELINE, vec![]),
    }
}

/// Whether a packet can start forwarding after a layer switch: the first packet of a key
/// picture (for H.264 also SPS/PPS, which precede the IDR). Audio always can.
fn starts_key_picture(format: PayloadFormat, payload: &[u8]) -> bool {
    match format {
        PayloadFormat::Audio => true,
        PayloadFormat::H264 => media::h264_payload_starts_key_picture(payload),
        PayloadFormat::Vp8 => media::vp8_payload_is_keyframe(payload),
        PayloadFormat::OtherVideo => true,
    }
}

fn kind_of_mime(mime: &str) -> TrackKind {
    if mime.to_ascii_lowercase().starts_with("audio/") {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

/// H.264 fmtp lines describe the same stream when packetization mode and profile agree.
fn h264_params_match(a: &str, b: &str) -> bool {
    let param = |line: &str, key: &str| {
        line.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let mode = |line: &str| param(line, "packetization-mode").unwrap_or_else(|| "0".into());
    let profile = |line: &str| {
        param(line, "profile-level-id")
            .map(|p| p.chars().take(4).collect::<String>())
            .unwrap_or_else(|| "4200".into())
    };
    mode(a) == mode(b) && profile(a) == profile(b)
}

/// Builds the webrtc PeerConnection every SFU peer uses: explicit UDP address on media_ip,
/// mDNS off (namespaces have no multicast route), default interceptors plus the keyframe
/// request interceptor.
pub(crate) async fn build_peer_connection(
    media_ip: IpAddr,
    ice_tcp: bool,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    build_peer_connection_with(media_ip, ice_tcp, handler, media_engine()?).await
}

/// [`build_peer_connection`] with a given media engine (tests use other payload types).
pub(crate) async fn build_peer_connection_with(
    media_ip: IpAddr,
    ice_tcp: bool,
    handler: Arc<dyn PeerConnectionEventHandler>,
    engine: MediaEngine,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let settings = PcSettings {
        udp_addrs: vec![SocketAddr::new(media_ip, 0)],
        tcp_addrs: if ice_tcp {
            vec![SocketAddr::new(media_ip, 0)]
        } else {
            Vec::new()
        },
        include_loopback: true,
        ..PcSettings::default()
    };
    peer::build_peer_connection(engine, &settings, handler)
        .await
        .with_context(|| format!("creating a PeerConnection on {media_ip}"))
}

async fn transceiver_mid(pc: &Arc<dyn PeerConnection>, id: RTCRtpTransceiverId) -> Option<String> {
    for transceiver in pc.get_transceivers().await {
        if transceiver.id() == id {
            return transceiver.mid().await.ok().flatten();
        }
    }
    None
}

async fn find_receiver_mid(
    pc: &Arc<dyn PeerConnection>,
    track: &Arc<dyn TrackRemote>,
) -> Option<String> {
    let wanted = Arc::as_ptr(track) as *const () as usize;
    for transceiver in pc.get_transceivers().await {
        if let Ok(Some(receiver)) = transceiver.receiver().await {
            if Arc::as_ptr(receiver.track()) as *const () as usize == wanted {
                return transceiver.mid().await.ok().flatten();
            }
        }
    }
    None
}

/// "mid:direction:codec,codec" per m-section, for logs.
fn codec_summary(sdp: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            current = line.split_whitespace().next().unwrap_or("m=").to_string();
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let name = map.split_whitespace().nth(1).unwrap_or("");
            current.push(' ');
            current.push_str(name.split('/').next().unwrap_or(name));
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            current.push_str(&format!(" mid={mid}"));
        } else if matches!(
            line,
            "a=sendonly" | "a=recvonly" | "a=sendrecv" | "a=inactive"
        ) {
            current.push_str(&format!(" {}", &line[2..]));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What the SFU needs to know about one m-section of an SDP.
#[derive(Debug, Clone, Default, PartialEq)]
struct Section {
    kind: Option<TrackKind>,
    mid: Option<String>,
    direction: String,
    msid_track: Option<String>,
}

fn parse_sections(sdp: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut current: Option<Section> = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            if let Some(done) = current.take() {
                sections.push(done);
            }
            let kind = match media.split_whitespace().next() {
                Some("audio") => Some(TrackKind::Audio),
                Some("video") => Some(TrackKind::Video),
                _ => None,
            };
            current = Some(Section {
                kind,
                direction: "sendrecv".to_string(),
                ..Section::default()
            });
            continue;
        }
        let Some(section) = current.as_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim().to_string());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            let mut parts = msid.split_whitespace();
            let _stream = parts.next();
            if let Some(track) = parts.next() {
                section.msid_track = Some(track.to_string());
            }
        } else if let Some(attr) = line.strip_prefix("a=") {
            if matches!(attr, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                section.direction = attr.to_string();
            }
        }
    }
    if let Some(done) = current.take() {
        sections.push(done);
    }
    sections
}

/// Locks a std mutex, shrugging off poisoning (a panicked holder leaves plain data behind).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
