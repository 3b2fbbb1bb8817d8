//! Media sources and encoders behind small traits (camera, microphone, encoder), with synthetic
//! implementations that run the whole device on a laptop.
//!
//! Capture runs on plain threads: a real camera or ALSA device blocks in `read`, so every source
//! here is a blocking producer that returns the next frame when it is due. The WebRTC side only
//! sees encoded frames, handed over by [`pipeline`].
pub mod annexb;
pub mod clock;
pub mod opus_encoder;
pub mod queue;
pub mod pipeline;
pub mod synthetic;

#[cfg(feature = "software-h264")]
pub mod h264;

use std::time::Duration;

/// One raw picture in I420 (planar Y, then U and V at half resolution).
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub width: u32,
    pub height: u32,
    /// Y plane (`width*height` bytes), then U and V (`width/2 * height/2` each).
    pub i420: Vec<u8>,
    /// Presentation time since the source started.
    pub pts: Duration,
}

/// 10 or 20 ms of interleaved 16-bit PCM.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    pub rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
    pub pts: Duration,
}

impl AudioFrame {
    pub fn duration(&self) -> Duration {
        let per_channel = self.samples.len() as u64 / self.channels.max(1) as u64;
        Duration::from_micros(per_channel * 1_000_000 / self.rate.max(1) as u64)
    }
}

/// An encoded video access unit (Annex-B NAL units with start codes).
#[derive(Debug, Clone)]
pub struct EncodedVideo {
    pub data: bytes::Bytes,
    pub keyframe: bool,
    pub duration: Duration,
}

/// A camera: blocks until the next frame is due and returns it.
pub trait VideoSource: Send {
    /// Width, height and frames per second this source delivers.
    fn format(&self) -> (u32, u32, u32);
    fn next_frame(&mut self) -> anyhow::Result<VideoFrame>;
}

/// A microphone: blocks until the next frame (20 ms) is due and returns it.
pub trait AudioSource: Send {
    /// Sample rate and channel count.
    fn format(&self) -> (u32, u16);
    fn next_frame(&mut self) -> anyhow::Result<AudioFrame>;
}

/// Raw pictures in, H.264 (constrained baseline, Annex-B) out.
pub trait VideoEncoder: Send {
    /// Encode one picture. `Ok(None)` means the encoder skipped it (rate control).
    fn encode(&mut self, frame: &VideoFrame) -> anyhow::Result<Option<EncodedVideo>>;
    /// Make the next encoded picture an IDR (answers a PLI/FIR from the far end).
    fn request_keyframe(&mut self);
}

/// PCM in, one Opus packet per frame out.
pub trait AudioEncoder: Send {
    fn encode(&mut self, frame: &AudioFrame) -> anyhow::Result<bytes::Bytes>;
}

/// What to capture and how to encode it, from the `[video]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSettings {
    /// `"test-pattern"`, `"none"`, or a device path (real capture lands with the capture issue).
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// kbit/s
    pub bitrate: u32,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self {
            device: "test-pattern".into(),
            width: 640,
            height: 480,
            fps: 30,
            bitrate: 1000,
        }
    }
}

/// What to capture and how to encode it, from the `[audio]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSettings {
    /// `"tone"`, `"none"`, or an ALSA PCM name (real capture lands with the capture issue).
    pub device: String,
    pub rate: u32,
    pub channels: u16,
    /// kbit/s
    pub bitrate: u32,
}

impl Default for AudioSettings {
    fn default() -> Self {
        Self {
            device: "tone".into(),
            rate: 48000,
            channels: 1,
            bitrate: 32,
        }
    }
}

impl VideoSettings {
    pub fn enabled(&self) -> bool {
        self.device != "none"
    }
}

impl AudioSettings {
    pub fn enabled(&self) -> bool {
        self.device != "none"
    }
}

/// Open the configured camera. Only the synthetic one exists so far.
pub fn open_video_source(settings: &VideoSettings) -> anyhow::Result<Box<dyn VideoSource>> {
    match settings.device.as_str() {
        "test-pattern" => Ok(Box::new(synthetic::TestPattern::new(
            settings.width,
            settings.height,
            settings.fps,
        )?)),
        other => anyhow::bail!(
            "[video] device = {other:?}: camera capture is not available in this build yet; \
             use device = \"test-pattern\" (synthetic) or \"none\""
        ),
    }
}

/// Open the configured microphone. Only the synthetic one exists so far.
pub fn open_audio_source(settings: &AudioSettings) -> anyhow::Result<Box<dyn AudioSource>> {
    match settings.device.as_str() {
        "tone" => Ok(Box::new(synthetic::Tone::new(
            settings.rate,
            settings.channels,
        )?)),
        other => anyhow::bail!(
            "[audio] device = {other:?}: microphone capture is not available in this build yet; \
             use device = \"tone\" (synthetic) or \"none\""
        ),
    }
}

/// The H.264 encoder for this build.
pub fn open_video_encoder(settings: &VideoSettings) -> anyhow::Result<Box<dyn VideoEncoder>> {
    #[cfg(feature = "software-h264")]
    {
        Ok(Box::new(h264::OpenH264Encoder::new(
            settings.width,
            settings.height,
            settings.fps,
            settings.bitrate,
        )?))
    }
    #[cfg(not(feature = "software-h264"))]
    {
        let _ = settings;
        anyhow::bail!("no H.264 encoder in this build: rebuild with the `software-h264` feature or set [video] device = \"none\"")
    }
}

/// The Opus encoder.
pub fn open_audio_encoder(settings: &AudioSettings) -> anyhow::Result<Box<dyn AudioEncoder>> {
    Ok(Box::new(opus_encoder::OpusEncoder::new(
        settings.rate,
        settings.channels,
        settings.bitrate,
    )?))
}
