//! Room state: rooms, participants, their tracks and signal sinks. Plain data plus the pure
//! decisions on it (track matching, participant info, missing media sections); no IO here.
use super::auth::JoinGrant;
use super::connect::Path;
use super::sfu::{PeerId, TrackKey};
use livekit_protocol as proto;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tokio::sync::mpsc;

/// What the WebSocket task of a connection is told to do.
#[derive(Debug)]
pub enum Outbound {
    Msg(Box<proto::SignalResponse>),
    /// Close the WebSocket with a close frame.
    Close(u16),
    /// Drop the connection without a close frame (fault injection, restart).
    Drop,
}

/// The signalling connection currently attached to a participant.
#[derive(Debug, Clone)]
pub struct SignalSink {
    pub conn: u64,
    pub tx: mpsc::UnboundedSender<Outbound>,
}

impl SignalSink {
    pub fn send(&self, message: proto::signal_response::Message) {
        let _ = self.tx.send(Outbound::Msg(Box::new(proto::SignalResponse {
            message: Some(message),
        })));
    }
}

/// Which of a participant's PeerConnections a peer id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pc {
    /// v0 publisher PC, or the single v1 PC (client offers).
    Publisher,
    /// v0 subscriber PC (server offers).
    Subscriber,
}

#[derive(Debug, Clone)]
pub struct PeerOwner {
    pub room: String,
    pub sid: String,
    pub pc: Pc,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub cid: String,
    pub info: proto::TrackInfo,
    /// Set once media arrived and was matched: the track is published and forwardable.
    pub key: Option<TrackKey>,
}

/// Media the SFU saw before any AddTrack matched it (parked, as the Go server does).
#[derive(Debug, Clone)]
pub struct UnmatchedMedia {
    pub peer: PeerId,
    pub mid: String,
    pub track_id: String,
    pub kind: proto::TrackType,
    pub mime: String,
}

#[derive(Debug, Default, Clone)]
pub struct SubscriberNegotiation {
    pub awaiting_answer: bool,
    pub again: bool,
    pub next_offer_id: u32,
}

#[derive(Debug)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub grant: JoinGrant,
    pub path: Path,
    pub state: proto::participant_info::State,
    pub joined_at_ms: i64,
    pub version: u32,
    pub protocol: i32,
    pub client_protocol: i32,
    pub auto_subscribe: bool,
    pub metadata: String,
    pub publisher_peer: PeerId,
    pub subscriber_peer: Option<PeerId>,
    pub tracks: Vec<Track>,
    pub unmatched: Vec<UnmatchedMedia>,
    pub signal: Option<SignalSink>,
    pub answer_pings: bool,
    pub negotiation: SubscriberNegotiation,
    /// Track sids forwarded to this participant.
    pub subscriptions: Vec<String>,
    pub disconnected_since: Option<Instant>,
}

impl Participant {
    /// The peer on which this participant receives media and data.
    pub fn receive_peer(&self) -> PeerId {
        self.subscriber_peer.unwrap_or(self.publisher_peer)
    }

    pub fn can_receive(&self) -> bool {
        self.grant.can_subscribe()
    }

    pub fn info(&self) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            state: self.state as i32,
            tracks: self
                .tracks
                .iter()
                .filter(|t| t.key.is_some())
                .map(|t| t.info.clone())
                .collect(),
            metadata: self.metadata.clone(),
            joined_at: self.joined_at_ms / 1000,
            joined_at_ms: self.joined_at_ms,
            name: self.grant.name.clone(),
            version: self.version,
            permission: Some(self.grant.permission()),
            is_publisher: self.tracks.iter().any(|t| t.key.is_some()),
            attributes: self.grant.attributes.clone(),
            client_protocol: self.client_protocol,
            ..Default::default()
        }
    }

    /// The track (pending or published) using `cid`.
    pub fn track_by_cid(&self, cid: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.cid == cid)
    }

    /// Which pending AddTrack the media `track_id` (msid track id) on `mid` belongs to:
    /// cid == msid track id, else (like the Go server) the first pending track of the same kind.
    pub fn match_pending(&self, track_id: &str, kind: proto::TrackType) -> Option<usize> {
        self.tracks
            .iter()
            .position(|t| t.key.is_none() && t.cid == track_id)
            .or_else(|| {
                self.tracks
                    .iter()
                    .position(|t| t.key.is_none() && t.info.r#type == kind as i32)
            })
    }

    pub fn bump_version(&mut self) {
        self.version += 1;
    }
}

#[derive(Debug)]
pub struct Room {
    pub name: String,
    pub sid: String,
    pub created_ms: i64,
    pub participants: Vec<Participant>,
}

impl Room {
    pub fn info(&self) -> proto::Room {
        proto::Room {
            sid: self.sid.clone(),
            name: self.name.clone(),
            empty_timeout: 300,
            departure_timeout: 20,
            creation_time: self.created_ms / 1000,
            creation_time_ms: self.created_ms,
            num_participants: self.participants.len() as u32,
            num_publishers: self
                .participants
                .iter()
                .filter(|p| p.info().is_publisher)
                .count() as u32,
            ..Default::default()
        }
    }

    pub fn participant(&self, sid: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.sid == sid)
    }

    pub fn participant_mut(&mut self, sid: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.sid == sid)
    }

    pub fn by_identity(&self, identity: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.identity == identity)
    }

    /// Everyone else's info as the JoinResponse's other_participants (hidden ones left out).
    pub fn others(&self, sid: &str) -> Vec<proto::ParticipantInfo> {
        self.participants
            .iter()
            .filter(|p| p.sid != sid && !p.grant.video.hidden)
            .map(Participant::info)
            .collect()
    }

    /// Send to every participant except `except` that has a signal connection. Hidden
    /// participants (grant `hidden`) are left out of ParticipantUpdates sent to anyone else.
    pub fn broadcast(&self, except: &str, message: &proto::signal_response::Message) {
        for p in self.participants.iter().filter(|p| p.sid != except) {
            let Some(sink) = &p.signal else { continue };
            match message {
                proto::signal_response::Message::Update(update) => {
                    let visible = visible_to(update, &p.sid);
                    if !visible.participants.is_empty() {
                        sink.send(proto::signal_response::Message::Update(visible));
                    }
                }
                other => sink.send(other.clone()),
            }
        }
    }
}

/// The part of a ParticipantUpdate the participant `recipient` may see.
pub fn visible_to(update: &proto::ParticipantUpdate, recipient: &str) -> proto::ParticipantUpdate {
    proto::ParticipantUpdate {
        participants: update
            .participants
            .iter()
            .filter(|i| {
                i.sid == recipient || !i.permission.as_ref().is_some_and(|perm| perm.hidden)
            })
            .cloned()
            .collect(),
    }
}

/// All rooms plus the peer-id index for SFU events.
#[derive(Debug, Default)]
pub struct State {
    pub rooms: BTreeMap<String, Room>,
    pub peers: HashMap<PeerId, PeerOwner>,
}

impl State {
    pub fn participant(&self, room: &str, sid: &str) -> Option<&Participant> {
        self.rooms.get(room)?.participant(sid)
    }

    pub fn participant_mut(&mut self, room: &str, sid: &str) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participant_mut(sid)
    }

    pub fn find_identity(&self, identity: &str) -> Option<(String, String)> {
        self.rooms.values().find_map(|r| {
            r.by_identity(identity)
                .map(|p| (r.name.clone(), p.sid.clone()))
        })
    }

    pub fn find_track(&self, track_sid: &str) -> Option<(&Room, &Participant, &Track)> {
        self.rooms.values().find_map(|r| {
            r.participants.iter().find_map(|p| {
                p.tracks
                    .iter()
                    .find(|t| t.info.sid == track_sid)
                    .map(|t| (r, p, t))
            })
        })
    }
}

/// A LiveKit-style id: prefix plus 12 random base62 characters.
pub fn new_sid(prefix: &str) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// The TrackInfo devroom publishes for an AddTrackRequest.
// The deprecated fields are still what older clients read.
#[allow(deprecated)]
pub fn track_info_for(req: &proto::AddTrackRequest, sid: String) -> proto::TrackInfo {
    let kind = proto::TrackType::try_from(req.r#type).unwrap_or(proto::TrackType::Audio);
    let requested = req
        .simulcast_codecs
        .first()
        .map(|c| c.codec.clone())
        .filter(|c| !c.is_empty());
    let mime = match (kind, requested) {
        (proto::TrackType::Video, Some(codec)) => format!("video/{}", codec.to_ascii_uppercase()),
        (proto::TrackType::Video, None) => String::new(),
        (_, _) => "audio/opus".to_string(),
    };
    let codecs = if mime.is_empty() {
        Vec::new()
    } else {
        vec![proto::SimulcastCodecInfo {
            mime_type: mime.clone(),
            cid: req.cid.clone(),
            layers: req.layers.clone(),
            ..Default::default()
        }]
    };
    proto::TrackInfo {
        sid,
        r#type: kind as i32,
        name: req.name.clone(),
        muted: req.muted,
        width: req.width,
        height: req.height,
        simulcast: req.layers.len() > 1,
        disable_dtx: req.disable_dtx,
        source: req.source,
        layers: req.layers.clone(),
        mime_type: mime,
        codecs,
        stereo: req.stereo,
        disable_red: req.disable_red,
        encryption: req.encryption,
        stream: req.stream.clone(),
        audio_features: req.audio_features.clone(),
        backup_codec_policy: req.backup_codec_policy,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;

    fn participant() -> Participant {
        let token = auth::tests::mint("cam", "lobby", |_| {});
        let grant = auth::authorize_join(None, Some(&token), &auth::tests::keys()).unwrap();
        Participant {
            sid: "PA_1".into(),
            identity: "cam".into(),
            grant,
            path: Path::V1,
            state: proto::participant_info::State::Joined,
            joined_at_ms: 1_000,
            version: 1,
            protocol: 17,
            client_protocol: 2,
            auto_subscribe: true,
            metadata: String::new(),
            publisher_peer: 1,
            subscriber_peer: None,
            tracks: Vec::new(),
            unmatched: Vec::new(),
            signal: None,
            answer_pings: true,
            negotiation: Default::default(),
            subscriptions: Vec::new(),
            disconnected_since: None,
        }
    }

    fn add(p: &mut Participant, cid: &str, kind: proto::TrackType) {
        let req = proto::AddTrackRequest {
            cid: cid.into(),
            r#type: kind as i32,
            ..Default::default()
        };
        p.tracks.push(Track {
            cid: cid.into(),
            info: track_info_for(&req, new_sid("TR_")),
            key: None,
        });
    }

    #[test]
    fn sids_have_prefix_and_are_distinct() {
        let a = new_sid("PA_");
        assert!(a.starts_with("PA_") && a.len() == 15);
        assert_ne!(a, new_sid("PA_"));
    }

    #[test]
    fn media_matches_by_cid_then_by_kind() {
        let mut p = participant();
        add(&mut p, "mic", proto::TrackType::Audio);
        add(&mut p, "cam", proto::TrackType::Video);
        add(&mut p, "cam2", proto::TrackType::Video);
        assert_eq!(p.match_pending("cam2", proto::TrackType::Video), Some(2));
        assert_eq!(
            p.match_pending("something-else", proto::TrackType::Video),
            Some(1)
        );
        p.tracks[1].key = Some(TrackKey {
            peer: 1,
            mid: "1".into(),
            track_sid: "TR_x".into(),
        });
        assert_eq!(p.match_pending("other", proto::TrackType::Video), Some(2));
        assert_eq!(p.match_pending("mic", proto::TrackType::Audio), Some(0));
    }

    #[test]
    fn info_lists_only_published_tracks() {
        let mut p = participant();
        add(&mut p, "mic", proto::TrackType::Audio);
        assert!(p.info().tracks.is_empty());
        assert!(!p.info().is_publisher);
        p.tracks[0].key = Some(TrackKey {
            peer: 1,
            mid: "0".into(),
            track_sid: "TR_x".into(),
        });
        assert_eq!(p.info().tracks.len(), 1);
        assert!(p.info().is_publisher);
    }

    #[test]
    fn track_info_carries_request_fields() {
        let req = proto::AddTrackRequest {
            cid: "c".into(),
            name: "camera".into(),
            r#type: proto::TrackType::Video as i32,
            width: 640,
            height: 480,
            source: proto::TrackSource::Camera as i32,
            simulcast_codecs: vec![proto::SimulcastCodec {
                codec: "h264".into(),
                cid: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let info = track_info_for(&req, "TR_1".into());
        assert_eq!(info.mime_type, "video/H264");
        assert_eq!(info.codecs[0].cid, "c");
        assert_eq!((info.width, info.height), (640, 480));
        let audio = track_info_for(
            &proto::AddTrackRequest {
                r#type: proto::TrackType::Audio as i32,
                ..Default::default()
            },
            "TR_2".into(),
        );
        assert_eq!(audio.mime_type, "audio/opus");
    }

    #[test]
    fn hidden_participants_are_only_visible_to_themselves() {
        let mut hidden = participant();
        hidden.grant.video.hidden = true;
        let visible = participant();
        let update = proto::ParticipantUpdate {
            participants: vec![
                hidden.info(),
                Participant {
                    sid: "PA_2".into(),
                    ..visible
                }
                .info(),
            ],
        };
        let seen_by_other = visible_to(&update, "PA_9");
        assert_eq!(seen_by_other.participants.len(), 1);
        assert_eq!(seen_by_other.participants[0].sid, "PA_2");
        assert_eq!(
            visible_to(&update, "PA_1").participants.len(),
            2,
            "a hidden participant sees itself"
        );
    }
}
