//! PLACEHOLDER owned by branch `sfu`: a media-less stand-in with the contract's shape so the
//! signalling side compiles until the real SFU is merged. Every method behaves as "no media".
use bytes::Bytes;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

pub type PeerId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    ClientOffers,
    ServerOffers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Video,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackKey {
    pub peer: PeerId,
    pub mid: String,
    pub track_sid: String,
}

#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    pub packets: u64,
    pub frames: u64,
    pub keyframes: u64,
    pub bytes: u64,
    pub first_rtp_ms: Option<u64>,
}

pub struct SfuConfig {
    pub media_ip: IpAddr,
    pub frame_dir: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub sdp: String,
    pub mid_to_track_id: HashMap<String, String>,
    pub mid_to_subscribed_sid: HashMap<String, String>,
}

#[derive(Debug)]
pub enum SfuEvent {
    LocalCandidate {
        peer: PeerId,
        candidate_init: String,
    },
    TrackStarted {
        peer: PeerId,
        mid: String,
        track_id: String,
        kind: TrackKind,
        mime: String,
    },
    RenegotiationNeeded {
        peer: PeerId,
    },
    ConnectionState {
        peer: PeerId,
        state: String,
    },
    Data {
        peer: PeerId,
        label: String,
        data: Bytes,
    },
    KeyframeRequested {
        track_key: TrackKey,
    },
}

pub struct Sfu {
    next: AtomicU64,
    _events: mpsc::UnboundedSender<SfuEvent>,
}

impl Sfu {
    pub fn new(_cfg: SfuConfig) -> (Sfu, mpsc::UnboundedReceiver<SfuEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Sfu {
                next: AtomicU64::new(1),
                _events: tx,
            },
            rx,
        )
    }
    pub async fn create_peer(&self, _role: PeerRole) -> anyhow::Result<PeerId> {
        Ok(self.next.fetch_add(1, Ordering::Relaxed))
    }
    pub async fn accept_offer(&self, _peer: PeerId, _sdp: String) -> anyhow::Result<Answer> {
        anyhow::bail!("the media plane (branch sfu) is not merged yet")
    }
    pub async fn create_offer(&self, _peer: PeerId, _ice_restart: bool) -> anyhow::Result<String> {
        anyhow::bail!("the media plane (branch sfu) is not merged yet")
    }
    pub async fn accept_answer(&self, _peer: PeerId, _sdp: String) -> anyhow::Result<()> {
        Ok(())
    }
    pub async fn add_remote_candidate(
        &self,
        _peer: PeerId,
        _candidate_init_json: &str,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    pub fn publish(&self, peer: PeerId, mid: &str, track_sid: &str) -> TrackKey {
        TrackKey {
            peer,
            mid: mid.to_string(),
            track_sid: track_sid.to_string(),
        }
    }
    pub fn set_stream_id(&self, _track: &TrackKey, _stream_id: &str) {}
    pub async fn forward(&self, _track: &TrackKey, _to: PeerId) -> anyhow::Result<()> {
        Ok(())
    }
    pub async fn unforward(&self, _track: &TrackKey, _to: PeerId) {}
    pub async fn send_data(
        &self,
        _peer: PeerId,
        _reliable: bool,
        _data: Bytes,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    pub fn stats(&self, _track: &TrackKey) -> TrackStats {
        TrackStats::default()
    }
    pub async fn write_png(&self, _track: &TrackKey) -> anyhow::Result<(PathBuf, u32, u32)> {
        anyhow::bail!("the media plane (branch sfu) is not merged yet")
    }
    pub fn set_paused(&self, _paused: bool) {}
    pub async fn close_peer(&self, _peer: PeerId) {}
}
