//! A camera's own H.264, straight through: no decode, no re-encode. What it does add is what a
//! camera often leaves out: SPS/PPS in front of every IDR (see [`super::annexb`]), and the
//! keyframe flag per access unit.
//!
//! It sits behind the same [`VideoEncoder`] trait as the real encoders, so the pipeline does not
//! care whether the camera or the board encodes. Keyframe requests and bitrate changes can only
//! reach a camera through its device controls: the camera source hands them over as
//! [`CameraEncoderControls`]; without them a request waits for the camera's next periodic IDR.
use super::annexb::{AnnexBError, ParameterSets};
use super::{CameraEncoderControls, EncodedFrame, PixelFormat, VideoEncoder, VideoFrame};
use std::collections::VecDeque;

/// Frames waiting for `poll`: one per submit, bounded like every queue here.
const READY_LIMIT: usize = 4;

pub struct Passthrough {
    sets: ParameterSets,
    ready: VecDeque<EncodedFrame>,
    /// Nothing decodable has gone out yet, or the last IDR was unusable: hold deltas back.
    waiting_for_keyframe: bool,
    controls: Option<Box<dyn CameraEncoderControls>>,
    /// Access units dropped while waiting for a usable IDR.
    pub dropped: u64,
    pub keyframe_requests: u64,
}

impl Default for Passthrough {
    fn default() -> Self {
        Self::new()
    }
}

impl Passthrough {
    pub fn new() -> Self {
        Self {
            sets: ParameterSets::new(),
            ready: VecDeque::with_capacity(READY_LIMIT),
            waiting_for_keyframe: true,
            controls: None,
            dropped: 0,
            keyframe_requests: 0,
        }
    }

    /// The camera's encoder controls: keyframe requests and bitrate changes go there.
    pub fn with_controls(mut self, controls: Box<dyn CameraEncoderControls>) -> Self {
        self.controls = Some(controls);
        self
    }

    /// SPS/PPS put in front of IDRs that came without them.
    pub fn inserted_parameter_sets(&self) -> u64 {
        self.sets.inserted
    }
}

impl VideoEncoder for Passthrough {
    fn name(&self) -> &str {
        "camera H.264 passthrough"
    }

    fn submit(&mut self, frame: VideoFrame) -> anyhow::Result<()> {
        anyhow::ensure!(
            frame.format == PixelFormat::H264,
            "passthrough takes the camera's H.264, not {}",
            frame.format
        );
        anyhow::ensure!(
            self.ready.len() < READY_LIMIT,
            "passthrough: {READY_LIMIT} frames were never polled"
        );
        let data = frame.planes[0].data.clone();
        let unit = match self.sets.process(data) {
            Ok(unit) => unit,
            Err(AnnexBError::NoParameterSets) => {
                // No decoder can start from it; ask again and wait.
                tracing::warn!("camera H.264: an IDR came before any SPS/PPS; dropped it");
                // What the buffer held, to tell a camera that starts without SPS/PPS from one
                // whose buffer carries stale bytes behind a shorter access unit. Listed only
                // when debug logging is on: the listing allocates.
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let data = &frame.planes[0].data;
                    let nals = super::annexb::split(data)
                        .map(|units| {
                            units
                                .iter()
                                .map(|u| format!("{:?}@{}", u.kind(data), u.start))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    tracing::debug!(
                        "camera H.264: the dropped buffer: {} bytes, NAL units {nals}",
                        data.len()
                    );
                }
                self.dropped += 1;
                self.waiting_for_keyframe = true;
                self.request_keyframe();
                return Ok(());
            }
            Err(e) => anyhow::bail!("camera H.264: {e}"),
        };
        if self.waiting_for_keyframe && !unit.keyframe {
            self.dropped += 1;
            return Ok(());
        }
        self.waiting_for_keyframe = false;
        self.ready.push_back(EncodedFrame {
            data: unit.data,
            keyframe: unit.keyframe,
            capture: frame.capture,
        });
        Ok(())
    }

    fn poll(&mut self) -> anyhow::Result<Option<EncodedFrame>> {
        Ok(self.ready.pop_front())
    }

    fn request_keyframe(&mut self) {
        self.keyframe_requests += 1;
        if let Some(controls) = self.controls.as_mut() {
            controls.force_keyframe();
        }
    }

    fn set_bitrate(&mut self, bps: u32) -> anyhow::Result<()> {
        if let Some(controls) = self.controls.as_mut() {
            controls.set_bitrate(bps);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Counts keyframe requests and keeps the last bitrate.
    #[derive(Clone, Default)]
    struct Spy {
        keyframes: Arc<AtomicU32>,
        bitrate: Arc<AtomicU32>,
    }

    impl CameraEncoderControls for Spy {
        fn force_keyframe(&mut self) {
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        fn set_bitrate(&mut self, bps: u32) {
            self.bitrate.store(bps, Ordering::Relaxed);
        }
    }

    fn h264(data: &[u8], at_ms: u64) -> VideoFrame {
        VideoFrame::compressed(
            PixelFormat::H264,
            64,
            64,
            Bytes::copy_from_slice(data),
            Duration::from_millis(at_ms),
        )
    }

    const SPS_PPS_IDR: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65,
        0x88,
    ];
    const IDR: &[u8] = &[0, 0, 0, 1, 0x65, 0x88];
    const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9a];

    #[test]
    fn holds_deltas_until_a_keyframe_then_passes_everything_with_its_capture_time() {
        let mut enc = Passthrough::new();
        enc.submit(h264(P, 0)).unwrap();
        assert!(
            enc.poll().unwrap().is_none(),
            "a delta before any IDR is useless"
        );
        enc.submit(h264(SPS_PPS_IDR, 33)).unwrap();
        enc.submit(h264(P, 66)).unwrap();
        let key = enc.poll().unwrap().unwrap();
        assert!(key.keyframe);
        assert_eq!(key.capture, Duration::from_millis(33));
        assert_eq!(&key.data[..], SPS_PPS_IDR);
        let delta = enc.poll().unwrap().unwrap();
        assert!(!delta.keyframe);
        assert_eq!(&delta.data[..], P);
        assert_eq!(enc.dropped, 1);
    }

    #[test]
    fn a_bare_idr_gets_the_remembered_sps_pps() {
        let mut enc = Passthrough::new();
        enc.submit(h264(SPS_PPS_IDR, 0)).unwrap();
        enc.poll().unwrap().unwrap();
        enc.submit(h264(IDR, 4000)).unwrap();
        let key = enc.poll().unwrap().unwrap();
        assert!(key.keyframe);
        assert_eq!(&key.data[..], SPS_PPS_IDR);
        assert_eq!(enc.inserted_parameter_sets(), 1);
    }

    #[test]
    fn an_idr_without_any_sps_pps_is_dropped_and_a_keyframe_requested() {
        let spy = Spy::default();
        let mut enc = Passthrough::new().with_controls(Box::new(spy.clone()));
        enc.submit(h264(IDR, 0)).unwrap();
        assert!(enc.poll().unwrap().is_none());
        assert_eq!(spy.keyframes.load(Ordering::Relaxed), 1);
        assert!(enc.submit(h264(&[1, 2, 3], 0)).is_err(), "not Annex-B");
    }

    #[test]
    fn bitrate_reaches_the_cameras_encoder() {
        let spy = Spy::default();
        let mut enc = Passthrough::new().with_controls(Box::new(spy.clone()));
        enc.set_bitrate(750_000).unwrap();
        assert_eq!(spy.bitrate.load(Ordering::Relaxed), 750_000);
        // Raw frames are not for this path.
        let raw = VideoFrame::i420(64, 64, Bytes::from(vec![0; 64 * 96]), Duration::ZERO);
        assert!(enc.submit(raw.unwrap()).is_err());
    }
}
