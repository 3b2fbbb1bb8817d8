//! Software H.264 (openh264): constrained baseline, Annex-B output, IDR on request, bitrate
//! changeable while running. Takes YU12 (any strides), NV12 and YUYV; the latter two are
//! converted to I420 in a buffer kept across frames.
use super::annexb::{self, NalType};
use super::synthetic::TestPattern;
use super::{
    CameraEncoderControls, EncodedFrame, PixelFormat, StopSignal, VideoEncoder, VideoFormat,
    VideoFrame, VideoSource,
};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use super::PERIODIC_IDR_SECONDS;

/// openh264 accepts targets in this range; outside it `SetOption` fails.
const MIN_BPS: u32 = 50_000;

pub struct OpenH264Encoder {
    encoder: Encoder,
    width: u32,
    height: u32,
    keyframe_requested: bool,
    /// Capture time of the first frame: openh264's rate control wants time since stream start.
    first_capture: Option<Duration>,
    /// Packed I420 for formats openh264 cannot take as they are.
    scratch: Vec<u8>,
    out: Vec<u8>,
    /// Finished frames waiting for `poll`. Software encoding is synchronous, so this holds at
    /// most one frame unless the caller skips polling; it is bounded all the same.
    ready: VecDeque<EncodedFrame>,
    bitrate: u32,
}

const READY_LIMIT: usize = 4;

impl OpenH264Encoder {
    pub fn new(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            width % 2 == 0 && height % 2 == 0,
            "[video] {width}x{height}: the software encoder needs even sizes (4:2:0)"
        );
        let bitrate = (bitrate_kbps * 1000).max(MIN_BPS);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate))
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
            keyframe_requested: true,
            first_capture: None,
            scratch: Vec::new(),
            out: Vec::new(),
            ready: VecDeque::with_capacity(READY_LIMIT),
            bitrate,
        })
    }

    /// The target the encoder runs at, in bit/s.
    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    fn encode(&mut self, frame: &VideoFrame) -> anyhow::Result<Option<EncodedFrame>> {
        anyhow::ensure!(
            frame.width == self.width && frame.height == self.height,
            "frame is {}x{}, the encoder was set up for {}x{}",
            frame.width,
            frame.height,
            self.width,
            self.height
        );
        frame.validate()?;
        let (w, h) = (frame.width as usize, frame.height as usize);
        let (cw, ch) = (w / 2, h / 2);
        let zero_copy = frame.format == PixelFormat::Yu12
            && frame.planes[0].data.len() >= frame.planes[0].stride * h
            && frame.planes[1].data.len() >= frame.planes[1].stride * ch
            && frame.planes[2].data.len() >= frame.planes[2].stride * ch;
        let (planes, strides) = if zero_copy {
            let p = &frame.planes;
            (
                (
                    &p[0].data[..p[0].stride * h],
                    &p[1].data[..p[1].stride * ch],
                    &p[2].data[..p[2].stride * ch],
                ),
                (p[0].stride, p[1].stride, p[2].stride),
            )
        } else {
            to_i420(frame, &mut self.scratch)?;
            let (y, rest) = self.scratch.split_at(w * h);
            let (u, v) = rest.split_at(cw * ch);
            ((y, u, v), (w, cw, cw))
        };
        let slices = YUVSlices::new(planes, (w, h), strides);
        if std::mem::take(&mut self.keyframe_requested) {
            self.encoder.force_intra_frame();
        }
        let first = *self.first_capture.get_or_insert(frame.capture);
        let since_start = frame.capture.saturating_sub(first);
        let timestamp = openh264::Timestamp::from_millis(since_start.as_millis() as u64);
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
        Ok(Some(EncodedFrame {
            data: bytes::Bytes::copy_from_slice(&self.out),
            keyframe: matches!(frame_type, FrameType::IDR | FrameType::I),
            capture: frame.capture,
        }))
    }
}

/// Convert any raw format, or an MJPEG frame (decoded), into packed I420 in `out`. YUYV's chroma
/// is 4:2:2: two rows are averaged into one 4:2:0 row.
fn to_i420(frame: &VideoFrame, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (cw, ch) = (w / 2, h / 2);
    out.resize(w * h + 2 * cw * ch, 0);
    let (y_out, chroma) = out.split_at_mut(w * h);
    let (u_out, v_out) = chroma.split_at_mut(cw * ch);
    let p = &frame.planes;
    match frame.format {
        PixelFormat::Yu12 => {
            for row in 0..h {
                let at = row * p[0].stride;
                y_out[row * w..][..w].copy_from_slice(&p[0].data[at..at + w]);
            }
            for row in 0..ch {
                let (u_at, v_at) = (row * p[1].stride, row * p[2].stride);
                u_out[row * cw..][..cw].copy_from_slice(&p[1].data[u_at..u_at + cw]);
                v_out[row * cw..][..cw].copy_from_slice(&p[2].data[v_at..v_at + cw]);
            }
        }
        PixelFormat::Nv12 => {
            for row in 0..h {
                let at = row * p[0].stride;
                y_out[row * w..][..w].copy_from_slice(&p[0].data[at..at + w]);
            }
            for row in 0..ch {
                let uv = &p[1].data[row * p[1].stride..][..cw * 2];
                for x in 0..cw {
                    u_out[row * cw + x] = uv[2 * x];
                    v_out[row * cw + x] = uv[2 * x + 1];
                }
            }
        }
        PixelFormat::Yuyv => {
            let stride = p[0].stride;
            let data = &p[0].data;
            for row in 0..h {
                let line = &data[row * stride..][..w * 2];
                for x in 0..w {
                    y_out[row * w + x] = line[2 * x];
                }
            }
            for row in 0..ch {
                let top = &data[2 * row * stride..][..w * 2];
                let bottom = &data[(2 * row + 1) * stride..][..w * 2];
                for x in 0..cw {
                    let avg = |i: usize| (top[i] as u16 + bottom[i] as u16).div_ceil(2) as u8;
                    u_out[row * cw + x] = avg(4 * x + 1);
                    v_out[row * cw + x] = avg(4 * x + 3);
                }
            }
        }
        PixelFormat::Mjpeg => {
            super::mjpeg::decode_i420(&p[0].data, frame.width, frame.height, out)?;
        }
        other => {
            anyhow::bail!("the software encoder takes YU12, NV12, YUYV or MJPEG, not {other}")
        }
    }
    Ok(())
}

impl VideoEncoder for OpenH264Encoder {
    fn name(&self) -> &str {
        "openh264"
    }

    fn submit(&mut self, frame: VideoFrame) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.ready.len() < READY_LIMIT,
            "openh264: {READY_LIMIT} encoded frames were never polled"
        );
        if let Some(encoded) = self.encode(&frame)? {
            self.ready.push_back(encoded);
        }
        Ok(())
    }

    fn poll(&mut self) -> anyhow::Result<Option<EncodedFrame>> {
        Ok(self.ready.pop_front())
    }

    fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    fn set_bitrate(&mut self, bps: u32) -> anyhow::Result<()> {
        let bps = bps.max(MIN_BPS);
        if bps == self.bitrate {
            return Ok(());
        }
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: bps.try_into().unwrap_or(i32::MAX),
        };
        // SAFETY: ENCODER_OPTION_BITRATE takes a pointer to an SBitrateInfo that outlives the
        // call; the target bitrate is a parameter openh264 documents as changeable at run time.
        let rc = unsafe {
            self.encoder.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                (&raw mut info).cast(),
            )
        };
        anyhow::ensure!(
            rc == 0,
            "openh264 refused a bitrate of {bps} bit/s (error {rc})"
        );
        self.bitrate = bps;
        Ok(())
    }
}

/// A synthetic camera that encodes H.264 itself, like a UVC H.264 camera: the test pattern
/// through openh264, with SPS/PPS on its first IDR only, as many such cameras send them. It
/// drives the passthrough path (`[video] device = "test-pattern-h264"`, for tests and the demo).
pub struct H264TestCamera {
    pattern: TestPattern,
    encoder: OpenH264Encoder,
    requests: Arc<CameraRequests>,
    sent_parameter_sets: bool,
}

/// What the passthrough path asked of the camera's encoder, applied before the next frame.
#[derive(Debug, Default)]
struct CameraRequests {
    keyframe: AtomicBool,
    /// bit/s; 0 means no change.
    bitrate: AtomicU32,
}

struct TestCameraControls(Arc<CameraRequests>);

impl CameraEncoderControls for TestCameraControls {
    fn force_keyframe(&mut self) {
        self.0.keyframe.store(true, Ordering::Relaxed);
    }
    fn set_bitrate(&mut self, bps: u32) {
        self.0.bitrate.store(bps.max(1), Ordering::Relaxed);
    }
}

impl H264TestCamera {
    pub fn new(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pattern: TestPattern::new(width, height, fps)?,
            encoder: OpenH264Encoder::new(width, height, fps, bitrate_kbps)?,
            requests: Arc::default(),
            sent_parameter_sets: false,
        })
    }
}

/// `data` without its SPS and PPS units.
fn strip_parameter_sets(data: &bytes::Bytes) -> anyhow::Result<bytes::Bytes> {
    let units = annexb::split(data)?;
    let mut out = Vec::with_capacity(data.len());
    for unit in units.iter() {
        if !matches!(unit.kind(data), NalType::Sps | NalType::Pps) {
            out.extend_from_slice(&data[unit.start_code_at..unit.end]);
        }
    }
    Ok(out.into())
}

impl VideoSource for H264TestCamera {
    fn format(&self) -> VideoFormat {
        VideoFormat {
            pixel: PixelFormat::H264,
            ..self.pattern.format()
        }
    }

    fn next_frame(&mut self, stop: &StopSignal) -> anyhow::Result<Option<VideoFrame>> {
        loop {
            let Some(raw) = self.pattern.next_frame(stop)? else {
                return Ok(None);
            };
            if self.requests.keyframe.swap(false, Ordering::Relaxed) {
                self.encoder.request_keyframe();
            }
            let bps = self.requests.bitrate.swap(0, Ordering::Relaxed);
            if bps != 0 {
                self.encoder.set_bitrate(bps)?;
            }
            let (width, height) = (raw.width, raw.height);
            self.encoder.submit(raw)?;
            let Some(encoded) = self.encoder.poll()? else {
                continue;
            };
            let data = if self.sent_parameter_sets {
                strip_parameter_sets(&encoded.data)?
            } else {
                self.sent_parameter_sets = encoded.keyframe;
                encoded.data
            };
            return Ok(Some(VideoFrame::compressed(
                PixelFormat::H264,
                width,
                height,
                data,
                encoded.capture,
            )));
        }
    }

    fn encoder_controls(
        &mut self,
        _start_bitrate_bps: u32,
    ) -> Option<Box<dyn CameraEncoderControls>> {
        Some(Box::new(TestCameraControls(self.requests.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Plane;

    fn encode(encoder: &mut OpenH264Encoder, frame: VideoFrame) -> EncodedFrame {
        encoder.submit(frame).unwrap();
        let out = encoder
            .poll()
            .unwrap()
            .expect("a frame comes out of every submit");
        assert!(encoder.poll().unwrap().is_none());
        out
    }

    fn decode_and_check(data: &[u8], w: u32, h: u32) -> usize {
        use openh264::formats::YUVSource as _;
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let picture = decoder.decode(data).unwrap().expect("a decoded picture");
        assert_eq!(picture.dimensions(), (w as usize, h as usize));
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        picture.write_rgb8(&mut rgb);
        crate::media::synthetic::check_rgb(&rgb, w, h, 48).unwrap()
    }

    #[test]
    fn first_frame_is_idr_and_requests_are_honoured() {
        let pattern = TestPattern::new(160, 128, 30).unwrap();
        let mut encoder = OpenH264Encoder::new(160, 128, 30, 300).unwrap();
        let first = encode(&mut encoder, pattern.render(0));
        assert!(first.keyframe);
        // Annex-B start code, then an SPS (nal type 7) first.
        assert_eq!(&first.data[..4], &[0, 0, 0, 1]);
        assert_eq!(first.data[4] & 0x1f, 7);
        let second = encode(&mut encoder, pattern.render(1));
        assert!(!second.keyframe);
        encoder.request_keyframe();
        let third = encode(&mut encoder, pattern.render(2));
        assert!(third.keyframe);
    }

    #[test]
    fn output_carries_the_capture_time_and_parses_as_annex_b() {
        let pattern = TestPattern::new(160, 128, 30).unwrap();
        let mut encoder = OpenH264Encoder::new(160, 128, 30, 300).unwrap();
        let key = encode(&mut encoder, pattern.render(7));
        assert_eq!(key.capture, pattern.render(7).capture);
        let kinds: Vec<_> = annexb::split(&key.data)
            .unwrap()
            .iter()
            .map(|u| u.kind(&key.data))
            .collect();
        assert_eq!(&kinds[..2], &[NalType::Sps, NalType::Pps]);
        assert!(kinds.contains(&NalType::Idr));
        let delta = encode(&mut encoder, pattern.render(8));
        assert!(annexb::split(&delta.data)
            .unwrap()
            .iter()
            .all(|u| u.kind(&delta.data) == NalType::Slice));
    }

    /// The synthetic source through the queue-based trait, as the pipeline drives it.
    #[test]
    fn synthetic_source_submit_and_poll() {
        let mut source = TestPattern::new(160, 128, 60).unwrap();
        let stop = StopSignal::new();
        let mut encoder = OpenH264Encoder::new(160, 128, 60, 300).unwrap();
        let mut captures = Vec::new();
        for _ in 0..READY_LIMIT {
            let frame = source.next_frame(&stop).unwrap().unwrap();
            captures.push(frame.capture);
            encoder.submit(frame).unwrap();
        }
        let mut out = Vec::new();
        while let Some(frame) = encoder.poll().unwrap() {
            out.push(frame);
        }
        assert_eq!(out.len(), READY_LIMIT);
        assert!(out[0].keyframe);
        assert_eq!(out.iter().map(|f| f.capture).collect::<Vec<_>>(), captures);
        // Without polling, the encoder refuses more than it can hold instead of growing.
        for _ in 0..READY_LIMIT {
            encoder.submit(source.render(9)).unwrap();
        }
        assert!(encoder.submit(source.render(9)).is_err());
    }

    /// Grey with fresh luma noise every frame: nothing for the encoder to predict, so its
    /// output is bound by rate control. (Full-range noise in every plane made openh264 fail
    /// with native error 3 at this size.)
    fn noise(w: u32, h: u32, seed: u64, index: u64) -> VideoFrame {
        let mut state = seed ^ (index.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        let luma = (w * h) as usize;
        let data: Vec<u8> = (0..luma * 3 / 2)
            .map(|i| {
                if i >= luma {
                    return 128;
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                96 + (state >> 58) as u8
            })
            .collect();
        VideoFrame::i420(w, h, data.into(), Duration::from_millis(index * 1000 / 30)).unwrap()
    }

    #[test]
    fn bitrate_changes_while_running_and_the_output_follows() {
        let (w, h) = (160, 128);
        let mut encoder = OpenH264Encoder::new(w, h, 30, 2000).unwrap();
        // One second of frames, from frame `from`.
        let bytes_at = |encoder: &mut OpenH264Encoder, from: u64| -> usize {
            (from..from + 30)
                .map(|i| encode(encoder, noise(w, h, 7, i)).data.len())
                .sum()
        };
        bytes_at(&mut encoder, 0);
        let high = bytes_at(&mut encoder, 30);
        encoder.set_bitrate(200_000).unwrap();
        assert_eq!(encoder.bitrate(), 200_000);
        // Let rate control settle, then measure.
        bytes_at(&mut encoder, 60);
        let low = bytes_at(&mut encoder, 90);
        assert!(
            low * 3 < high,
            "2 Mbit/s gave {high} bytes a second, 200 kbit/s gave {low}"
        );
        // Below openh264's floor is clamped, not an error.
        encoder.set_bitrate(1).unwrap();
        assert_eq!(encoder.bitrate(), MIN_BPS);
    }

    /// Repack a test-pattern frame as NV12 or YUYV with padded rows, as a camera would send it.
    fn repack(frame: &VideoFrame, format: PixelFormat, pad: usize) -> VideoFrame {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let [y, u, v] = [0, 1, 2].map(|i| &frame.planes[i].data);
        let mut planes = heapless::Vec::new();
        match format {
            PixelFormat::Nv12 => {
                let stride = w + pad;
                let mut luma = vec![0u8; stride * h];
                let mut uv = vec![0u8; stride * h / 2];
                for row in 0..h {
                    luma[row * stride..][..w].copy_from_slice(&y[row * w..][..w]);
                }
                for row in 0..h / 2 {
                    for x in 0..w / 2 {
                        uv[row * stride + 2 * x] = u[row * w / 2 + x];
                        uv[row * stride + 2 * x + 1] = v[row * w / 2 + x];
                    }
                }
                let _ = planes.push(Plane {
                    data: luma.into(),
                    stride,
                });
                let _ = planes.push(Plane {
                    data: uv.into(),
                    stride,
                });
            }
            PixelFormat::Yuyv => {
                let stride = 2 * w + pad;
                let mut packed = vec![0u8; stride * h];
                for row in 0..h {
                    for x in 0..w {
                        packed[row * stride + 2 * x] = y[row * w + x];
                    }
                    for x in 0..w / 2 {
                        packed[row * stride + 4 * x + 1] = u[(row / 2) * w / 2 + x];
                        packed[row * stride + 4 * x + 3] = v[(row / 2) * w / 2 + x];
                    }
                }
                let _ = planes.push(Plane {
                    data: packed.into(),
                    stride,
                });
            }
            _ => unreachable!(),
        }
        VideoFrame {
            format,
            planes,
            ..frame.clone()
        }
    }

    #[test]
    fn nv12_and_yuyv_with_padded_rows_encode_to_the_same_picture() {
        let (w, h) = (320, 240);
        let pattern = TestPattern::new(w, h, 30).unwrap();
        for format in [PixelFormat::Nv12, PixelFormat::Yuyv] {
            let frame = repack(&pattern.render(0), format, 64);
            frame.validate().unwrap();
            let mut encoder = OpenH264Encoder::new(w, h, 30, 1500).unwrap();
            let encoded = encode(&mut encoder, frame);
            let checked = decode_and_check(&encoded.data, w, h);
            assert!(checked > 100, "{format}: only {checked} pixels compared");
        }
        let broken = VideoFrame::compressed(
            PixelFormat::Mjpeg,
            w,
            h,
            bytes::Bytes::from_static(&[0xff, 0xd8]),
            Duration::ZERO,
        );
        let mut encoder = OpenH264Encoder::new(w, h, 30, 1500).unwrap();
        assert!(encoder.submit(broken).is_err());
    }

    #[test]
    fn an_mjpeg_frame_is_decoded_and_encoded_with_its_picture() {
        let (w, h) = (64u32, 48u32);
        let jpeg = super::super::mjpeg::tests::two_halves_jpeg(w as u16, h as u16);
        let frame = VideoFrame::compressed(
            PixelFormat::Mjpeg,
            w,
            h,
            bytes::Bytes::from(jpeg),
            Duration::from_millis(7),
        );
        let mut encoder = OpenH264Encoder::new(w, h, 30, 1500).unwrap();
        let encoded = encode(&mut encoder, frame);
        assert!(encoded.keyframe);
        assert_eq!(encoded.capture, Duration::from_millis(7));
        // The H.264 decodes to the JPEG's two halves: dark luma left, bright right (60 and 200
        // in JPEG's full range, 68 and 188 in H.264's limited range).
        use openh264::formats::YUVSource as _;
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let yuv = decoder.decode(&encoded.data).unwrap().expect("a picture");
        let (y_stride, _, _) = yuv.strides();
        let y = yuv.y();
        for row in [4, 24, 44] {
            let (left, right) = (y[row * y_stride + 4], y[row * y_stride + 59]);
            assert!(left.abs_diff(68) <= 4, "left luma {left}");
            assert!(right.abs_diff(188) <= 4, "right luma {right}");
        }
    }

    /// A camera that sends SPS/PPS only once: openh264's later IDR with its SPS/PPS cut out
    /// goes through the passthrough path, which puts them back, and a decoder that never saw
    /// the first frame can start from it.
    #[test]
    fn passthrough_restores_sps_pps_so_a_late_decoder_can_start() {
        use crate::media::passthrough::Passthrough;
        let (w, h) = (320, 240);
        let pattern = TestPattern::new(w, h, 30).unwrap();
        let mut encoder = OpenH264Encoder::new(w, h, 30, 1500).unwrap();
        let mut camera = Passthrough::new();
        let as_camera = |frame: &EncodedFrame, strip: bool| {
            let units = annexb::split(&frame.data).unwrap();
            let mut data = Vec::new();
            for unit in &units {
                if strip && matches!(unit.kind(&frame.data), NalType::Sps | NalType::Pps) {
                    continue;
                }
                data.extend_from_slice(&[0, 0, 0, 1]);
                data.extend_from_slice(unit.bytes(&frame.data));
            }
            VideoFrame::compressed(PixelFormat::H264, w, h, data.into(), frame.capture)
        };
        let first = encode(&mut encoder, pattern.render(0));
        camera.submit(as_camera(&first, false)).unwrap();
        assert!(camera.poll().unwrap().unwrap().keyframe);
        let delta = encode(&mut encoder, pattern.render(1));
        camera.submit(as_camera(&delta, false)).unwrap();
        assert!(!camera.poll().unwrap().unwrap().keyframe);
        encoder.request_keyframe();
        let idr = encode(&mut encoder, pattern.render(2));
        assert!(idr.keyframe);
        let bare = as_camera(&idr, true);
        assert!(
            decode_attempt(&bare.planes[0].data).is_none(),
            "without SPS/PPS a fresh decoder cannot start"
        );
        camera.submit(bare).unwrap();
        let out = camera.poll().unwrap().unwrap();
        assert!(out.keyframe);
        assert_eq!(out.capture, idr.capture);
        assert_eq!(camera.inserted_parameter_sets(), 1);
        let checked = decode_and_check(&out.data, w, h);
        assert!(checked > 100, "only {checked} pixels compared");
    }

    /// The H.264 test camera through the passthrough path, as `open_video_encoder` wires it:
    /// only its first IDR carries SPS/PPS, yet every keyframe that comes out does, and a
    /// keyframe request reaches the camera's encoder.
    #[test]
    fn h264_test_camera_through_passthrough() {
        let settings = crate::media::VideoSettings {
            device: "test-pattern-h264".into(),
            width: 160,
            height: 128,
            fps: 60,
            bitrate: 300,
            ..Default::default()
        };
        let mut camera = crate::media::open_video_source(&settings).unwrap();
        assert_eq!(camera.format().pixel, PixelFormat::H264);
        let mut encoder = crate::media::open_video_encoder(&settings, camera.as_mut()).unwrap();
        assert_eq!(encoder.name(), "camera H.264 passthrough");
        let stop = StopSignal::new();
        let mut next = |encoder: &mut Box<dyn VideoEncoder>| {
            let frame = camera.next_frame(&stop).unwrap().unwrap();
            let has_sps = annexb::split(&frame.planes[0].data)
                .unwrap()
                .iter()
                .any(|u| u.kind(&frame.planes[0].data) == NalType::Sps);
            encoder.submit(frame).unwrap();
            (encoder.poll().unwrap().unwrap(), has_sps)
        };
        let (first, camera_sent_sps) = next(&mut encoder);
        assert!(first.keyframe && camera_sent_sps);
        let (delta, _) = next(&mut encoder);
        assert!(!delta.keyframe);
        encoder.request_keyframe();
        let (idr, camera_sent_sps) = next(&mut encoder);
        assert!(idr.keyframe, "the request reached the camera's encoder");
        assert!(!camera_sent_sps, "the camera sends SPS/PPS only once");
        let checked = decode_and_check(&idr.data, 160, 128);
        assert!(checked > 10, "only {checked} pixels compared");
    }

    fn decode_attempt(data: &[u8]) -> Option<()> {
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        decoder.decode(data).ok().flatten().map(|_| ())
    }

    /// The level in the SPS must cover the picture size: 1080p needs 4.0 (8160 macroblocks
    /// a frame is beyond 3.1's 3600), or strict decoders refuse the stream.
    #[test]
    fn the_sps_level_fits_the_resolution() {
        let level = |w: u32, h: u32| {
            let pattern = TestPattern::new(w, h, 30).unwrap();
            let mut encoder = OpenH264Encoder::new(w, h, 30, 2000).unwrap();
            let key = encode(&mut encoder, pattern.render(0));
            let units = annexb::split(&key.data).unwrap();
            let sps = units
                .iter()
                .find(|u| u.kind(&key.data) == NalType::Sps)
                .unwrap()
                .bytes(&key.data)
                .to_vec();
            // profile_idc, constraint flags, level_idc.
            (sps[1], sps[3])
        };
        let (profile, small) = level(640, 480);
        assert_eq!(profile, 66, "baseline");
        let (_, hd) = level(1920, 1080);
        assert!(small >= 30, "640x480 at 30 fps needs 3.0, SPS says {small}");
        assert!(hd >= 40, "1080p at 30 fps needs 4.0, SPS says {hd}");
    }

    /// Common camera sizes that are not multiples of 16 (360, 1080 lines) survive the round trip:
    /// the encoder crops, and the decoded picture still shows the pattern.
    #[test]
    fn sizes_that_are_not_macroblock_multiples_round_trip() {
        for (w, h) in [(640u32, 360u32), (320, 180)] {
            let pattern = TestPattern::new(w, h, 30).unwrap();
            let mut encoder = OpenH264Encoder::new(w, h, 30, 1500).unwrap();
            let encoded = encode(&mut encoder, pattern.render(0));
            let checked = decode_and_check(&encoded.data, w, h);
            assert!(checked > 100, "{w}x{h}: only {checked} pixels compared");
        }
    }
}
