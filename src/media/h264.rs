//! Software H.264 (openh264): constrained baseline, Annex-B output, IDR on request.
use super::{EncodedVideo, VideoEncoder, VideoFrame};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;
use std::time::Duration;

/// Seconds between the encoder's periodic IDRs (it also sends one on every request).
pub const PERIODIC_IDR_SECONDS: u32 = 4;

pub struct OpenH264Encoder {
    encoder: Encoder,
    width: u32,
    height: u32,
    frame_duration: Duration,
    keyframe_requested: bool,
    out: Vec<u8>,
}

impl OpenH264Encoder {
    pub fn new(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> anyhow::Result<Self> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_kbps.max(50) * 1000))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            // Every frame counts: a skipped frame is a frame the room never sees.
            .skip_frames(false)
            // A periodic IDR heals a subscriber whose keyframe request got lost.
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                fps.max(1) * PERIODIC_IDR_SECONDS,
            ));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| anyhow::anyhow!("cannot start the openh264 encoder: {e}"))?;
        Ok(Self {
            encoder,
            width,
            height,
            frame_duration: Duration::from_micros(1_000_000 / fps.max(1) as u64),
            keyframe_requested: true,
            out: Vec::new(),
        })
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn encode(&mut self, frame: &VideoFrame) -> anyhow::Result<Option<EncodedVideo>> {
        anyhow::ensure!(
            frame.width == self.width && frame.height == self.height,
            "frame is {}x{}, the encoder was set up for {}x{}",
            frame.width,
            frame.height,
            self.width,
            self.height
        );
        let (w, h) = (frame.width as usize, frame.height as usize);
        let (y, rest) = frame.i420.split_at(w * h);
        let (u, v) = rest.split_at(w * h / 4);
        let slices = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        if std::mem::take(&mut self.keyframe_requested) {
            self.encoder.force_intra_frame();
        }
        let timestamp = openh264::Timestamp::from_millis(frame.pts.as_millis() as u64);
        let stream = self
            .encoder
            .encode_at(&slices, timestamp)
            .map_err(|e| anyhow::anyhow!("openh264 failed to encode a frame: {e}"))?;
        let frame_type = stream.frame_type();
        if matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.out.clear();
        stream.write_vec(&mut self.out);
        Ok(Some(EncodedVideo {
            data: bytes::Bytes::copy_from_slice(&self.out),
            keyframe: matches!(frame_type, FrameType::IDR | FrameType::I),
            duration: self.frame_duration,
        }))
    }

    fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::synthetic::TestPattern;

    #[test]
    fn first_frame_is_idr_and_requests_are_honoured() {
        let pattern = TestPattern::new(160, 128, 30).unwrap();
        let mut encoder = OpenH264Encoder::new(160, 128, 30, 300).unwrap();
        let first = encoder.encode(&pattern.render(0)).unwrap().unwrap();
        assert!(first.keyframe);
        // Annex-B start code, then an SPS (nal type 7) first.
        assert_eq!(&first.data[..4], &[0, 0, 0, 1]);
        assert_eq!(first.data[4] & 0x1f, 7);
        let second = encoder.encode(&pattern.render(1)).unwrap().unwrap();
        assert!(!second.keyframe);
        encoder.request_keyframe();
        let third = encoder.encode(&pattern.render(2)).unwrap().unwrap();
        assert!(third.keyframe);
    }

    /// Common camera sizes that are not multiples of 16 (360, 1080 lines) survive the round trip:
    /// the encoder crops, and the decoded picture still shows the pattern.
    #[test]
    fn sizes_that_are_not_macroblock_multiples_round_trip() {
        use openh264::formats::YUVSource as _;
        for (w, h) in [(640u32, 360u32), (320, 180)] {
            let pattern = TestPattern::new(w, h, 30).unwrap();
            let mut encoder = OpenH264Encoder::new(w, h, 30, 1500).unwrap();
            let encoded = encoder.encode(&pattern.render(0)).unwrap().unwrap();
            let mut decoder = openh264::decoder::Decoder::new().unwrap();
            let picture = decoder
                .decode(&encoded.data)
                .unwrap()
                .expect("a decoded picture");
            assert_eq!(picture.dimensions(), (w as usize, h as usize));
            let mut rgb = vec![0u8; (w * h * 3) as usize];
            picture.write_rgb8(&mut rgb);
            let checked = crate::media::synthetic::check_rgb(&rgb, w, h, 48).unwrap();
            assert!(checked > 100, "{w}x{h}: only {checked} pixels compared");
        }
    }
}
