//! Media sources and encoders behind small traits (camera, microphone, encoder), with synthetic
//! implementations that run the whole device on a laptop.
//!
//! Capture runs on plain threads: a real camera or ALSA device blocks in `read`, so every source
//! here is a blocking producer that returns the next frame when it is due. The WebRTC side only
//! sees encoded frames, handed over by [`pipeline`].
//!
//! The path of a video frame: a [`VideoSource`] stamps it with its capture time on
//! CLOCK_MONOTONIC; a [`VideoEncoder`] (openh264, or [`passthrough`] for a camera's own H.264)
//! takes it with `submit` and gives it back encoded with `poll`; the [`queue`] drops the oldest
//! when the network falls behind and asks for an IDR; the track's packetizer turns the capture
//! time into the RTP timestamp ([`clock`]).
//!
//! The other way, subscribed remote audio goes to the [`speaker`] (when one is configured):
//! jitter buffer, Opus decode and mix on a playout thread, paced by the device.
pub mod alsa_pcm;
pub mod annexb;
pub mod bitrate;
pub mod clock;
pub mod frame;
pub mod microphone;
pub mod mjpeg;
pub mod opus_encoder;
pub mod passthrough;
pub mod pipeline;
pub mod queue;
pub mod speaker;
pub mod synthetic;
pub mod timing;
pub mod v4l2;

#[cfg(feature = "software-h264")]
pub mod h264;

pub use frame::{EncodedFrame, PixelFormat, Plane, VideoFrame};

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// 10 or 20 ms of interleaved 16-bit PCM.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    pub rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
    /// When the first sample was captured, on CLOCK_MONOTONIC (see [`clock`]).
    pub capture: Duration,
}

impl AudioFrame {
    pub fn duration(&self) -> Duration {
        let per_channel = self.samples.len() as u64 / self.channels.max(1) as u64;
        Duration::from_micros(per_channel * 1_000_000 / self.rate.max(1) as u64)
    }
}

/// What a camera delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub pixel: PixelFormat,
}

/// Tells a capture thread to stop, and wakes it from a wait. A synthetic source waits on it
/// instead of sleeping, so a stop takes effect at once rather than after the next frame; a
/// device source polls its device fd together with [`StopSignal::fd`], an eventfd raised here.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<(Mutex<StopState>, Condvar)>);

#[derive(Debug, Default)]
struct StopState {
    stopped: bool,
    /// Created on first use by a device source; readable once stopped.
    eventfd: Option<Arc<std::os::fd::OwnedFd>>,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stop(&self) {
        let mut state = self.0 .0.lock().unwrap();
        state.stopped = true;
        if let Some(fd) = &state.eventfd {
            raise_eventfd(fd);
        }
        self.0 .1.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.0 .0.lock().unwrap().stopped
    }

    /// An eventfd that becomes readable (POLLIN) once `stop` is called, for a thread that
    /// blocks in `poll` on a device: poll both, and a stop wakes it at once.
    pub fn fd(&self) -> std::io::Result<Arc<std::os::fd::OwnedFd>> {
        use std::os::fd::FromRawFd;
        let mut state = self.0 .0.lock().unwrap();
        if let Some(fd) = &state.eventfd {
            return Ok(fd.clone());
        }
        // SAFETY: eventfd has no pointer arguments; a non-negative result is a new fd we own.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by eventfd and is owned by nothing else.
        let fd = Arc::new(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) });
        if state.stopped {
            raise_eventfd(&fd);
        }
        state.eventfd = Some(fd.clone());
        Ok(fd)
    }

    /// Wait until `deadline` on CLOCK_MONOTONIC. Returns false if stopped first.
    pub fn wait_until(&self, deadline: Duration) -> bool {
        let mut state = self.0 .0.lock().unwrap();
        loop {
            if state.stopped {
                return false;
            }
            let now = clock::monotonic_now();
            if now >= deadline {
                return true;
            }
            state = self.0 .1.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

fn raise_eventfd(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// A camera: blocks until the next frame is captured and returns it, or `None` once `stop` is
/// raised.
pub trait VideoSource: Send {
    fn format(&self) -> VideoFormat;
    fn next_frame(&mut self, stop: &StopSignal) -> anyhow::Result<Option<VideoFrame>>;
    /// For a camera that delivers H.264 itself: the controls of its encoder, which the
    /// passthrough path forwards keyframe requests and bitrate changes to. Called once, before
    /// capture starts.
    fn encoder_controls(&mut self) -> Option<Box<dyn CameraEncoderControls>> {
        None
    }
}

/// The encoder inside a camera (on a UVC camera: V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME and
/// V4L2_CID_MPEG_VIDEO_BITRATE on its node). Called from the capture thread.
pub trait CameraEncoderControls: Send {
    fn force_keyframe(&mut self);
    fn set_bitrate(&mut self, bps: u32);
}

/// A microphone: blocks until the next 20 ms frame is captured, or `None` once stopped.
pub trait AudioSource: Send {
    /// Sample rate and channel count.
    fn format(&self) -> (u32, u16);
    fn next_frame(&mut self, stop: &StopSignal) -> anyhow::Result<Option<AudioFrame>>;
}

/// Frames in, H.264 (constrained baseline, Annex-B, SPS/PPS before every IDR) out.
///
/// Queue-based, because a V4L2 M2M encoder is: it holds several OUTPUT buffers and hands
/// CAPTURE buffers back later. `submit` may keep the frame; `poll` returns what is finished,
/// each tagged with the capture time of the picture it codes. A software encoder simply has
/// its output ready right after `submit`.
pub trait VideoEncoder: Send {
    /// What it is, for logs: "openh264", "passthrough", "v4l2 /dev/video11".
    fn name(&self) -> &str;
    fn submit(&mut self, frame: VideoFrame) -> anyhow::Result<()>;
    /// The next finished frame, if any. Call until `None` after every `submit`.
    fn poll(&mut self) -> anyhow::Result<Option<EncodedFrame>>;
    /// Make the next encoded picture an IDR (a PLI/FIR from the far end, or a dropped frame).
    fn request_keyframe(&mut self);
    /// Aim for `bps` bits per second from now on. An encoder that cannot change its rate (a
    /// camera's own H.264) returns Ok and keeps going.
    fn set_bitrate(&mut self, bps: u32) -> anyhow::Result<()>;
}

/// PCM in, one Opus packet per frame out.
pub trait AudioEncoder: Send {
    fn encode(&mut self, frame: &AudioFrame) -> anyhow::Result<bytes::Bytes>;
}

/// What to capture and how to encode it, from the `[video]` section.
///
/// The bitrate the encoder may be moved to by congestion feedback is bounded by
/// [`VideoSettings::bitrate_limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSettings {
    /// `"test-pattern"`, `"none"`, a V4L2 device path, `"name:<card>"` or `"bus:<bus info>"`.
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
    /// `"tone"`, `"none"`, or an ALSA PCM name (`default`, `hw:1,0`, `plughw:CARD=Device`).
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

    /// Where congestion feedback may move the encoder: down to a quarter of the configured
    /// bitrate (not below 100 kbit/s, where 30 fps video falls apart), and never above it, since
    /// the configured figure is what the owner budgeted for the uplink.
    pub fn bitrate_limits(&self) -> pipeline::BitrateLimits {
        let max = self.bitrate.saturating_mul(1000);
        pipeline::BitrateLimits::new((max / 4).max(100_000), max)
    }
}

impl AudioSettings {
    pub fn enabled(&self) -> bool {
        self.device != "none"
    }
}

/// Open the configured camera. Only synthetic ones exist so far: the test pattern, and (for
/// the passthrough path) the same pattern from a camera that encodes H.264 itself.
pub fn open_video_source(settings: &VideoSettings) -> anyhow::Result<Box<dyn VideoSource>> {
    match settings.device.as_str() {
        "test-pattern" => Ok(Box::new(synthetic::TestPattern::new(
            settings.width,
            settings.height,
            settings.fps,
        )?)),
        #[cfg(feature = "software-h264")]
        "test-pattern-h264" => Ok(Box::new(h264::H264TestCamera::new(
            settings.width,
            settings.height,
            settings.fps,
            settings.bitrate,
        )?)),
        device
            if device.starts_with('/')
                || device.starts_with("name:")
                || device.starts_with("bus:") =>
        {
            Ok(Box::new(v4l2::Camera::open(
                device,
                settings.width,
                settings.height,
                settings.fps,
            )?))
        }
        other => anyhow::bail!(
            "[video] device = {other:?}: not a camera: use a device path like \"/dev/video0\", \
             \"name:<card name>\" or \"bus:<bus info>\" (see `roomcast devices`), \
             \"test-pattern\" (synthetic) or \"none\""
        ),
    }
}

/// Open the configured microphone: the synthetic tone, or an ALSA PCM by name.
pub fn open_audio_source(settings: &AudioSettings) -> anyhow::Result<Box<dyn AudioSource>> {
    match settings.device.as_str() {
        "tone" => Ok(Box::new(synthetic::Tone::new(
            settings.rate,
            settings.channels,
        )?)),
        name => Ok(Box::new(microphone::Microphone::open(
            name,
            settings.rate,
            settings.channels,
        )?)),
    }
}

/// The encoder for what the camera delivers: its own H.264 passes through; raw pictures, and
/// MJPEG decoded in software, go to the software encoder.
pub fn open_video_encoder(
    settings: &VideoSettings,
    camera: &mut dyn VideoSource,
) -> anyhow::Result<Box<dyn VideoEncoder>> {
    let source = camera.format();
    if source.pixel == PixelFormat::H264 {
        let mut passthrough = passthrough::Passthrough::new();
        if let Some(controls) = camera.encoder_controls() {
            passthrough = passthrough.with_controls(controls);
        }
        return Ok(Box::new(passthrough));
    }
    #[cfg(feature = "software-h264")]
    {
        // The source's own geometry: a camera may settle on a size near the one configured.
        Ok(Box::new(h264::OpenH264Encoder::new(
            source.width,
            source.height,
            source.fps,
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

#[cfg(test)]
mod stop_tests {
    use super::StopSignal;
    use std::os::fd::AsRawFd;

    fn readable(fd: i32, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
    }

    #[test]
    fn the_stop_fd_wakes_a_poll_from_another_thread() {
        let stop = StopSignal::new();
        let fd = stop.fd().unwrap();
        assert!(!readable(fd.as_raw_fd(), 0), "readable before stop");
        let other = stop.clone();
        let waiter = std::thread::spawn(move || readable(fd.as_raw_fd(), 10_000));
        other.stop();
        assert!(waiter.join().unwrap(), "poll did not wake on stop");
        assert!(stop.is_stopped());
    }

    #[test]
    fn an_fd_taken_after_stop_is_already_readable() {
        let stop = StopSignal::new();
        stop.stop();
        let fd = stop.fd().unwrap();
        assert!(readable(fd.as_raw_fd(), 0));
    }
}
