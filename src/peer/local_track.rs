//! A local audio or video track: its webrtc-rs sample track, its sender, and the task that moves
//! encoded frames from a media pipeline onto the wire.
use super::Transport;
use crate::media::bitrate::{fraction_lost_for, LossController, SentRate};
use crate::media::clock::{self, RtpClock};
use crate::media::pipeline::{EncodedSample, PipelineControl, SampleReceiver};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::packetizer::Packetizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
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
    /// Encoded frames the capture queue dropped because the network fell behind.
    pub frames_dropped: AtomicU64,
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
    /// Made by the first forwarder and kept by the track: a capture restarted after a failure
    /// (a camera unplugged and back) sends on this same track, so its sequence numbers and RTP
    /// time must go on from where they were. A fresh random start on the same SSRC looks to the
    /// receiver's SRTP like a replay or a wrapped index, and it drops every packet.
    packetizer: Mutex<Option<Arc<Mutex<TimedPacketizer>>>>,
}

/// The same MTU webrtc-rs's sample track packetizes at, so packets keep today's sizes.
const RTP_MTU: usize = 1200;

/// Packetizes encoded frames with RTP timestamps taken from their capture time.
///
/// Why not `TrackLocalStaticSample::write_sample`: in webrtc 0.21 it converts each sample's
/// `duration` to ticks by truncation (`(duration.as_secs_f64() * clock_rate) as u32`) and adds
/// that to a running timestamp (rtc-rtp `PacketizerImpl::packetize`). 33,333 µs becomes 2,999
/// ticks instead of 3,000, about a second of drift per hour, and the timestamp ignores when the
/// frame was actually captured (a late or dropped frame shifts everything after it). Feeding it
/// durations computed from timestamp differences could make the sum exact, but only with a
/// float round trip per frame and knowledge of the *next* frame's time, which a live encoder
/// does not have yet. So the track keeps its own packetizer (the same payloader, MTU and a
/// sequencer of its own), stamps every packet of a frame with the [`RtpClock`] value of its
/// capture time, and writes the packets with `write_rtp`. The track's built-in packetizer is
/// simply never used.
pub struct TimedPacketizer {
    packetizer: Box<dyn Packetizer>,
    clock: RtpClock,
    payload_type: u8,
}

impl TimedPacketizer {
    pub fn new(codec: &RTCRtpCodec, ssrc: u32, payload_type: u8) -> anyhow::Result<Self> {
        let payloader = codec
            .payloader()
            .map_err(|e| anyhow::anyhow!("no packetizer for {}: {e}", codec.mime_type))?;
        let packetizer = rtc::rtp::packetizer::new_packetizer(
            Instant::now(),
            RTP_MTU,
            payload_type,
            ssrc,
            payloader,
            Box::new(rtc::rtp::sequence::new_random_sequencer()),
            codec.clock_rate,
        );
        // One epoch for every track of the process keeps audio and video in sync; the random
        // offset is RFC 3550's initial timestamp.
        let clock = RtpClock::new(codec.clock_rate, clock::session_epoch(), rand::random());
        Ok(Self {
            packetizer: Box::new(packetizer),
            clock,
            payload_type,
        })
    }

    pub fn clock(&self) -> &RtpClock {
        &self.clock
    }

    /// The RTP packets of one frame, all carrying its capture-time timestamp.
    pub fn packetize(&mut self, sample: &EncodedSample) -> anyhow::Result<Vec<rtc::rtp::Packet>> {
        // `samples = 0`: the packetizer's own running timestamp is overwritten below anyway.
        let mut packets = self
            .packetizer
            .packetize(Instant::now(), &sample.data, 0)
            .map_err(|e| anyhow::anyhow!("packetize: {e}"))?;
        let timestamp = self.clock.rtp_timestamp(sample.capture);
        for packet in &mut packets {
            packet.header.timestamp = timestamp;
        }
        Ok(packets)
    }
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
            packetizer: Mutex::default(),
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

    /// The track's packetizer (see `packetizer`), made on first use: a full reconnect's new track
    /// starts its own sequence, a restarted capture on this track continues this one.
    fn packetizer_for(
        &self,
        codec: &RTCRtpCodec,
        payload_type: u8,
    ) -> anyhow::Result<Arc<Mutex<TimedPacketizer>>> {
        let mut slot = self.packetizer.lock().unwrap();
        match slot.as_ref() {
            Some(p) if p.lock().unwrap().payload_type == payload_type => Ok(p.clone()),
            _ => {
                let p = Arc::new(Mutex::new(TimedPacketizer::new(
                    codec,
                    self.ssrc,
                    payload_type,
                )?));
                *slot = Some(p.clone());
                Ok(p)
            }
        }
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
        let codec = match self.kind {
            RtpCodecKind::Video => super::h264_codec(),
            _ => super::opus_codec(),
        };
        let packetizer = self.packetizer_for(&codec, payload_type)?;
        *self.control.lock().unwrap() = Some(control.clone());
        let stats = self.stats.clone();
        let track = self.track.clone();
        let (kind, ssrc) = (self.kind, self.ssrc);
        let rtcp_control = control.clone();
        // A new track (after a full reconnect) goes on from the bitrate the last one reached.
        let mut sent = SentRate::default();
        let mut rate = LossController::new(
            control.limits(),
            control.bitrate_target.load(Ordering::Relaxed),
        );
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
                    // The loss in the server's receiver reports (and its REMB, when it sends
                    // one) sets the video bitrate within the configured limits; see
                    // `media::bitrate` for what LiveKit sends and why TWCC is not used.
                    if kind == RtpCodecKind::Video {
                        let now = Instant::now();
                        for packet in &packets {
                            let packet = packet.as_ref();
                            let changed = match (
                                super::keyframe::remb_bitrate_for(packet, ssrc),
                                fraction_lost_for(packet, ssrc),
                            ) {
                                (Some(bps), _) => rate.on_remb(bps, now),
                                (None, Some(lost)) => {
                                    let sent_bytes = stats.bytes_sent.load(Ordering::Relaxed);
                                    if let Some(bps) = sent.sample(sent_bytes, now) {
                                        rate.on_sent_rate(bps);
                                    }
                                    rate.on_receiver_report(lost, now)
                                }
                                (None, None) => None,
                            };
                            if let Some(bps) = changed {
                                let applied = rtcp_control.set_bitrate(bps);
                                tracing::debug!("video bitrate target {applied} bit/s");
                            }
                        }
                    }
                }
            }
        });
        let (track, stats, kind, muted) = (
            self.track.clone(),
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
                let dropped = control.dropped.load(Ordering::Relaxed);
                stats.frames_dropped.store(dropped, Ordering::Relaxed);
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
                let (keyframe, capture) = (sample.keyframe, sample.capture);
                let packetized = packetizer.lock().unwrap().packetize(&sample);
                let packets = match packetized {
                    Ok(packets) => packets,
                    Err(e) => {
                        tracing::warn!("{kind} frame dropped: {e:#}");
                        continue;
                    }
                };
                let mut result = Ok(());
                for packet in packets {
                    result = track.write_rtp(packet).await;
                    if result.is_err() {
                        break;
                    }
                }
                match result {
                    Ok(()) => {
                        // Capture → RTP: every packet of the frame is with the peer
                        // connection's driver (a bounded queue; it encrypts and sends from
                        // here), on the clock the capture time came from.
                        control
                            .timing
                            .record_sent(clock::monotonic_now().saturating_sub(capture), bytes);
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
pub type SharedSamples = Arc<tokio::sync::Mutex<SampleReceiver>>;

/// Why a forwarder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardEnd {
    /// The capture pipeline stopped (its error says why): the track needs a restart.
    PipelineEnded,
    /// The track can no longer send (its PeerConnection closed).
    WriteFailed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(capture: Duration, len: usize) -> EncodedSample {
        let mut data = vec![0u8, 0, 0, 1, 0x65];
        data.resize(len, 0xab);
        EncodedSample {
            data: data.into(),
            capture,
            keyframe: true,
        }
    }

    #[test]
    fn every_packet_of_a_frame_carries_its_capture_time() {
        let mut p = TimedPacketizer::new(&super::super::h264_codec(), 42, 108).unwrap();
        let t0 = clock::session_epoch() + Duration::from_secs(10);
        let first = p.packetize(&sample(t0, 3000)).unwrap();
        assert!(
            first.len() >= 3,
            "3000 bytes at a 1200-byte MTU is fragmented"
        );
        let ts = p.clock().rtp_timestamp(t0);
        assert!(first.iter().all(|pkt| pkt.header.timestamp == ts));
        assert!(first
            .iter()
            .all(|pkt| pkt.header.ssrc == 42 && pkt.header.payload_type == 108));
        assert_eq!(
            first
                .iter()
                .map(|pkt| pkt.header.marker)
                .collect::<Vec<_>>(),
            [vec![false; first.len() - 1], vec![true]].concat()
        );
        // A frame 1/30 s later: exactly 3000 ticks on, and sequence numbers continue.
        let t1 = t0 + Duration::from_nanos(33_333_333);
        let second = p.packetize(&sample(t1, 100)).unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(
            clock::rtp_diff(ts, second[0].header.timestamp),
            3000,
            "90 kHz from the capture times"
        );
        assert_eq!(
            second[0].header.sequence_number,
            first.last().unwrap().header.sequence_number.wrapping_add(1)
        );
    }

    /// A capture restarted after a failure (a camera unplugged and back) gets a new forwarder on
    /// the same track: its packets must continue the sequence and RTP time on the same SSRC, or
    /// the receiver's SRTP drops them as replays.
    #[test]
    fn a_new_forwarder_on_the_same_track_continues_its_sequence_and_rtp_time() {
        let track = LocalTrack::new(RtpCodecKind::Video, "stream").unwrap();
        let codec = super::super::h264_codec();
        let t0 = clock::session_epoch() + Duration::from_secs(3);
        let packetize = |at: Duration| {
            let packetizer = track.packetizer_for(&codec, 108).unwrap();
            let packets = packetizer
                .lock()
                .unwrap()
                .packetize(&sample(at, 100))
                .unwrap();
            packets
        };
        let before = packetize(t0);
        let after = packetize(t0 + Duration::from_secs(2));
        assert_eq!(after[0].header.ssrc, track.ssrc);
        assert_eq!(
            after[0].header.sequence_number,
            before[0].header.sequence_number.wrapping_add(1)
        );
        assert_eq!(
            clock::rtp_diff(before[0].header.timestamp, after[0].header.timestamp),
            180_000,
            "two seconds of capture time at 90 kHz"
        );
    }

    #[test]
    fn a_gap_in_capture_shows_as_a_gap_in_rtp_time() {
        let mut p = TimedPacketizer::new(&super::super::opus_codec(), 7, 111).unwrap();
        let t0 = clock::session_epoch() + Duration::from_secs(1);
        let a = p.packetize(&sample(t0, 50)).unwrap();
        // Three 20 ms frames lost in between (dropped by a full queue, or muted).
        let b = p
            .packetize(&sample(t0 + Duration::from_millis(80), 50))
            .unwrap();
        assert_eq!(
            clock::rtp_diff(a[0].header.timestamp, b[0].header.timestamp),
            3840
        );
    }
}
