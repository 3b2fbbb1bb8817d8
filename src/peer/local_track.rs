//! A local audio or video track: its webrtc-rs sample track, its sender, and the task that moves
//! encoded frames from a media pipeline onto the wire.
use super::Transport;
use crate::media::pipeline::{EncodedSample, PipelineControl};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::rtp_transceiver::RtpSender;

/// Counters for one local track.
#[derive(Debug, Default)]
pub struct SendStats {
    /// Encoded frames handed to the packetizer while connected.
    pub frames_sent: AtomicU64,
    /// The keyframes among `frames_sent`.
    pub keyframes_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// PLI/FIR received from the far end.
    pub keyframe_requests: AtomicU64,
}

pub struct LocalTrack {
    /// Client id: also the `a=msid` track id, so the server can tie the m-section to AddTrack.
    pub cid: String,
    pub kind: RtpCodecKind,
    pub track: Arc<TrackLocalStaticSample>,
    pub ssrc: u32,
    pub sender: Option<Arc<dyn RtpSender>>,
    pub stats: Arc<SendStats>,
    /// While set, encoded frames are dropped instead of sent (a mute, ours or the server's).
    /// The source and encoder keep their pace, so unmuting resumes with live frames, no burst.
    muted: Arc<AtomicBool>,
    /// The running pipeline, once started: unmuting asks it for a keyframe.
    control: Mutex<Option<Arc<PipelineControl>>>,
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect()
}

impl LocalTrack {
    pub fn new(kind: RtpCodecKind, stream_id: &str) -> anyhow::Result<Self> {
        let (codec, name) = match kind {
            RtpCodecKind::Video => (super::h264_codec(), "video"),
            _ => (super::opus_codec(), "audio"),
        };
        // Never reused within a session: the server queues a second AddTrack with a live cid.
        let cid = format!("TR_roomcast_{name}_{}", random_hex(12));
        let ssrc = rand::random::<u32>();
        let media = MediaStreamTrack::new(
            stream_id.to_owned(),
            cid.clone(),
            name.to_owned(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec,
                ..Default::default()
            }],
        );
        let track = Arc::new(
            TrackLocalStaticSample::new(Instant::now(), media)
                .map_err(|e| anyhow::anyhow!("create {name} track: {e}"))?,
        );
        Ok(Self {
            cid,
            kind,
            track,
            ssrc,
            sender: None,
            stats: Arc::default(),
            muted: Arc::default(),
            control: Mutex::default(),
        })
    }

    /// Add a send-only transceiver for this track, offering only our one codec.
    pub async fn attach(&mut self, transport: &Transport) -> anyhow::Result<()> {
        let transceiver = transport
            .pc
            .add_transceiver_from_track(
                self.track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| anyhow::anyhow!("add {} transceiver: {e}", self.kind))?;
        let codec = match self.kind {
            RtpCodecKind::Video => super::h264_codec(),
            _ => super::opus_codec(),
        };
        let payload_type = if self.kind == RtpCodecKind::Video {
            108
        } else {
            111
        };
        if let Err(e) = transceiver
            .set_codec_preferences(vec![RTCRtpCodecParameters {
                rtp_codec: codec,
                payload_type,
            }])
            .await
        {
            tracing::debug!("codec preferences for {}: {e}", self.kind);
        }
        self.sender = transceiver.sender().await.ok().flatten();
        Ok(())
    }

    /// Stop or resume sending this track's media. Returns whether the state changed.
    ///
    /// Unmuting asks the encoder for a keyframe, and video stays silent until it arrives: the
    /// receiver's decoder cannot use the deltas that follow a gap.
    pub fn set_muted(&self, muted: bool) -> bool {
        let changed = self.muted.swap(muted, Ordering::Relaxed) != muted;
        if changed && !muted {
            if let Some(control) = self.control.lock().unwrap().as_ref() {
                control.request_keyframe();
            }
        }
        changed
    }

    pub fn is_muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// The payload type the answer settled on.
    async fn payload_type(&self) -> anyhow::Result<u8> {
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{} track is not attached", self.kind))?;
        let params = sender
            .get_parameters()
            .await
            .map_err(|e| anyhow::anyhow!("sender parameters: {e}"))?;
        params
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the server's answer accepted no codec for the {} track",
                    self.kind
                )
            })
    }

    /// Move frames from a capture pipeline onto the wire; answer PLI/FIR with a keyframe.
    /// Call once the PC is connected: webrtc-rs silently drops samples written before that.
    ///
    /// The pipeline outlives the track (a full reconnect gives new tracks the same capture):
    /// the forwarder holds `samples` while it runs and lets go when it ends or is aborted.
    /// `first_frame` is called once, after the first frame went out. The task ends with
    /// [`ForwardEnd::PipelineEnded`] when the pipeline stopped (a capture or encoder failure).
    pub async fn forward(
        &self,
        samples: SharedSamples,
        control: Arc<PipelineControl>,
        first_frame: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<tokio::task::JoinHandle<ForwardEnd>> {
        let payload_type = self.payload_type().await?;
        *self.control.lock().unwrap() = Some(control.clone());
        let stats = self.stats.clone();
        let track = self.track.clone();
        let rtcp_control = control.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = event {
                    if packets
                        .iter()
                        .any(|p| super::keyframe::is_keyframe_request(p.as_ref()))
                    {
                        stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        rtcp_control.request_keyframe();
                    }
                }
            }
        });
        let (track, ssrc, stats, kind, muted) = (
            self.track.clone(),
            self.ssrc,
            self.stats.clone(),
            self.kind,
            self.muted.clone(),
        );
        Ok(tokio::spawn(async move {
            let mut samples = samples.lock_owned().await;
            let mut first_frame = Some(first_frame);
            // A receiver cannot use deltas that refer to frames it never got (sent on an
            // earlier track, or before a mute).
            let mut wait_for_keyframe = kind == RtpCodecKind::Video;
            loop {
                let Some(sample) = samples.recv().await else {
                    return ForwardEnd::PipelineEnded;
                };
                if muted.load(Ordering::Relaxed) {
                    wait_for_keyframe = kind == RtpCodecKind::Video;
                    continue;
                }
                if wait_for_keyframe {
                    if !sample.keyframe {
                        continue;
                    }
                    wait_for_keyframe = false;
                }
                let bytes = sample.data.len() as u64;
                let keyframe = sample.keyframe;
                let result = track
                    .sample_writer(ssrc, payload_type)
                    .write_sample(&Sample {
                        data: sample.data,
                        duration: sample.duration,
                        ..Sample::new(Instant::now())
                    })
                    .await;
                match result {
                    Ok(()) => {
                        stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                        if keyframe {
                            stats.keyframes_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                        if let Some(first_frame) = first_frame.take() {
                            first_frame();
                        }
                    }
                    Err(e) => {
                        tracing::debug!("{kind} write stopped: {e}");
                        return ForwardEnd::WriteFailed;
                    }
                }
            }
        }))
    }
}

/// A capture pipeline's encoded frames, shared by the successive tracks that send them.
pub type SharedSamples = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<EncodedSample>>>;

/// Why a forwarder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardEnd {
    /// The capture pipeline stopped (its error says why): the track needs a restart.
    PipelineEnded,
    /// The track can no longer send (its PeerConnection closed).
    WriteFailed,
}
