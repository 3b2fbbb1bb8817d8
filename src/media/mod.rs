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

pub use crate::config::EncoderChoice;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Seconds between an encoder's periodic IDRs (each also sends one on every request): a
/// subscriber whose keyframe request got lost still gets a picture this soon.
pub const PERIODIC_IDR_SECONDS: u32 = 4;

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

/// poll(2) on `fds` for up to `timeout`, retried on EINTR: how every device wait here blocks
/// (the device's fd together with a [`StopSignal::fd`]). Ok(false) when the time ran out.
pub fn poll_fds(fds: &mut [libc::pollfd], timeout: Duration) -> std::io::Result<bool> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: `fds` is a live, exclusively borrowed slice of pollfds of the length given.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
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
    /// passthrough path forwards keyframe requests and bitrate changes to, set up for the
    /// configured `start_bitrate_bps`. Called once, before capture starts.
    fn encoder_controls(
        &mut self,
        _start_bitrate_bps: u32,
    ) -> Option<Box<dyn CameraEncoderControls>> {
        None
    }
    /// Lend frames out of the camera's own buffers, each with the DMABUF behind it, instead of
    /// copying them: an M2M encoder that imports the DMABUF then never copies a picture, and a
    /// buffer goes back to the camera when the last clone of its frame is dropped. Returns the
    /// buffers' bytes per row (the encoder's OUTPUT format must match it), or `None` where the
    /// source cannot lend. Called once, before the first frame.
    fn share_buffers(&mut self) -> Option<u32> {
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
    /// The pipeline's stop: an encoder that waits on a device (M2M) wakes when it is raised.
    fn set_stop(&mut self, _stop: &StopSignal) -> anyhow::Result<()> {
        Ok(())
    }
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
    /// `[video] encoder`: which encoder, or `auto` (see [`choose_encoder`]).
    pub encoder: EncoderChoice,
    /// `[video] encoder_device`: the M2M encoder to use instead of the first that fits.
    pub encoder_device: Option<PathBuf>,
    /// `[video] format`: capture a V4L2 camera in this format; None picks the preferred one it
    /// offers (see [`v4l2::choose_format`]).
    pub format: Option<PixelFormat>,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self {
            device: "test-pattern".into(),
            width: 640,
            height: 480,
            fps: 30,
            bitrate: 1000,
            encoder: EncoderChoice::Auto,
            encoder_device: None,
            format: None,
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
        "test-pattern-busy" => Ok(Box::new(
            synthetic::TestPattern::new(settings.width, settings.height, settings.fps)?.busy(),
        )),
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
                settings.format,
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

/// Which encoder a video track gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderKind {
    /// The camera's own H.264, passed through.
    Passthrough,
    /// A V4L2 memory-to-memory H.264 encoder (the SoC's).
    M2m(PathBuf),
    /// openh264 on the CPU.
    Software,
}

/// What `[video] encoder` resolved to, and why (logged at info, shown by `roomcast devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderDecision {
    pub kind: EncoderKind,
    pub reason: String,
}

impl std::fmt::Display for EncoderDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            EncoderKind::Passthrough => f.write_str("camera H.264 passthrough")?,
            EncoderKind::M2m(path) => write!(f, "V4L2 M2M encoder {}", path.display())?,
            EncoderKind::Software => f.write_str("software (openh264)")?,
        }
        write!(f, ": {}", self.reason)
    }
}

/// The one place the encoder is chosen. `auto` means the camera's own H.264 first (no
/// encoding at all), then an M2M encoder that takes the camera's raw format as it is (no
/// conversion on the CPU), then openh264. `candidates` are the M2M nodes with what
/// [`v4l2::m2m::negotiate`] said about each for the camera's format and H.264; `software`
/// says whether this build has openh264. An explicit choice that cannot work is an error
/// naming the fix.
pub fn choose_encoder(
    choice: EncoderChoice,
    camera: PixelFormat,
    candidates: &[(PathBuf, Result<v4l2::m2m::Api, String>)],
    software: bool,
) -> Result<EncoderDecision, String> {
    let decision = |kind, reason: String| Ok(EncoderDecision { kind, reason });
    let no_software = "this build has no software encoder (the `software-h264` feature)";
    if camera == PixelFormat::H264 {
        return match choice {
            EncoderChoice::Auto | EncoderChoice::Passthrough => decision(
                EncoderKind::Passthrough,
                "the camera delivers H.264 itself".into(),
            ),
            other => Err(format!(
                "[video] encoder = \"{}\": the camera delivers H.264, which roomcast passes through \
                 as it is; set encoder = \"auto\" or \"passthrough\"",
                other.as_str()
            )),
        };
    }
    if camera == PixelFormat::Mjpeg {
        // Decoded to I420 on the CPU (media::mjpeg) for openh264; no M2M encoder takes JPEG.
        return match choice {
            EncoderChoice::Auto | EncoderChoice::Software if software => decision(
                EncoderKind::Software,
                "the camera gives MJPEG, decoded in software for openh264".into(),
            ),
            EncoderChoice::Auto | EncoderChoice::Software => Err(format!(
                "[video] the camera delivers MJPEG, which roomcast decodes for the software \
                 encoder, and {no_software}"
            )),
            other => Err(format!(
                "[video] encoder = \"{}\": the camera delivers MJPEG, which roomcast decodes in \
                 software for openh264; set encoder = \"auto\" or \"software\"",
                other.as_str()
            )),
        };
    }
    let usable = candidates.iter().find(|c| c.1.is_ok());
    let reasons = || {
        let list: Vec<&str> = candidates
            .iter()
            .filter_map(|c| c.1.as_ref().err().map(String::as_str))
            .collect();
        if list.is_empty() {
            "no V4L2 memory-to-memory encoder is present".to_owned()
        } else {
            list.join("; ")
        }
    };
    match choice {
        EncoderChoice::Passthrough => Err(format!(
            "[video] encoder = \"passthrough\": the camera delivers {camera}, not H.264; set \
             encoder = \"auto\" (or \"v4l2m2m\" / \"software\")"
        )),
        EncoderChoice::V4l2m2m => match usable {
            Some((path, _)) => decision(
                EncoderKind::M2m(path.clone()),
                format!("encoder = \"v4l2m2m\"; it encodes the camera's {camera} to H.264"),
            ),
            None => Err(format!(
                "[video] encoder = \"v4l2m2m\": no M2M encoder turns the camera's {camera} into \
                 H.264 ({}); set encoder = \"auto\" or \"software\", or encoder_device to one \
                 `roomcast devices` lists as an H.264 encoder",
                reasons()
            )),
        },
        EncoderChoice::Software if software => {
            decision(EncoderKind::Software, "encoder = \"software\"".into())
        }
        EncoderChoice::Software => Err(format!(
            "[video] encoder = \"software\": {no_software}; set encoder = \"auto\" or \"v4l2m2m\""
        )),
        EncoderChoice::Auto => match usable {
            Some((path, _)) => decision(
                EncoderKind::M2m(path.clone()),
                format!("the camera gives {camera}, which this M2M encoder takes as it is"),
            ),
            None if software => decision(
                EncoderKind::Software,
                format!(
                    "the camera gives {camera} and no M2M encoder fits: {}",
                    reasons()
                ),
            ),
            None => Err(format!(
                "[video] no H.264 encoder for the camera's {camera}: {}, and {no_software}",
                reasons()
            )),
        },
    }
}

/// The M2M encoders to consider for `raw` pictures: `[video] encoder_device` alone when set,
/// else every M2M node.
fn m2m_candidates(
    raw: PixelFormat,
    device: Option<&Path>,
) -> Vec<(PathBuf, Result<v4l2::m2m::Api, String>)> {
    let h264 = v4l2::sys::fourcc(*b"H264");
    let nodes = match device {
        Some(path) => vec![path.to_owned()],
        None => v4l2::video_nodes(),
    };
    nodes
        .into_iter()
        .filter_map(|path| match v4l2::query(&path) {
            Ok(info) if device.is_some() || info.is_m2m() => {
                Some((path, v4l2::m2m::negotiate(&info, raw, h264)))
            }
            Ok(_) => None,
            Err(e) => device.map(|_| (path.clone(), Err(format!("{}: {e}", path.display())))),
        })
        .collect()
}

/// The encoder for what the camera delivers, as `[video] encoder` says (see
/// [`choose_encoder`]). The choice and its reason are logged.
pub fn open_video_encoder(
    settings: &VideoSettings,
    camera: &mut dyn VideoSource,
) -> anyhow::Result<Box<dyn VideoEncoder>> {
    let source = camera.format();
    let candidates = if source.pixel.is_compressed() {
        Vec::new()
    } else {
        m2m_candidates(source.pixel, settings.encoder_device.as_deref())
    };
    let mut decision = choose_encoder(
        settings.encoder,
        source.pixel,
        &candidates,
        cfg!(feature = "software-h264"),
    )
    .map_err(anyhow::Error::msg)?;
    if let EncoderKind::M2m(path) = &decision.kind {
        // A V4L2 camera then lends its buffers, so the encoder can import them with no copy.
        let import = camera.share_buffers();
        let m2m = v4l2::m2m::M2mEncoder::open_with(
            path,
            v4l2::m2m::EncoderSettings {
                width: source.width,
                height: source.height,
                fps: source.fps,
                bitrate_bps: settings.bitrate.saturating_mul(1000),
                raw: source.pixel,
                coded: v4l2::sys::fourcc(*b"H264"),
            },
            import,
        );
        match m2m {
            Ok(encoder) => {
                tracing::info!("video encoder: {decision}");
                return Ok(Box::new(encoder));
            }
            Err(e)
                if settings.encoder == EncoderChoice::Auto && cfg!(feature = "software-h264") =>
            {
                tracing::warn!(
                    "video encoder {}: {e:#}; using the software encoder",
                    path.display()
                );
                decision = EncoderDecision {
                    kind: EncoderKind::Software,
                    reason: format!("the M2M encoder {} failed to start: {e:#}", path.display()),
                };
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!("video encoder: {decision}");
    match decision.kind {
        EncoderKind::Passthrough => {
            let mut passthrough = passthrough::Passthrough::new();
            if let Some(controls) = camera.encoder_controls(settings.bitrate.saturating_mul(1000)) {
                passthrough = passthrough.with_controls(controls);
            }
            Ok(Box::new(passthrough))
        }
        #[cfg(feature = "software-h264")]
        EncoderKind::Software => {
            // The source's own geometry: a camera may settle on a size near the one configured.
            Ok(Box::new(h264::OpenH264Encoder::new(
                source.width,
                source.height,
                source.fps,
                settings.bitrate,
            )?))
        }
        other => unreachable!("{other:?} was handled above or is not in this build"),
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
mod encoder_choice_tests {
    use super::*;
    use v4l2::m2m::Api;

    fn cands(list: &[(&str, Result<Api, &str>)]) -> Vec<(PathBuf, Result<Api, String>)> {
        list.iter()
            .map(|(p, r)| (PathBuf::from(p), r.map_err(str::to_owned)))
            .collect()
    }

    #[test]
    fn auto_prefers_camera_h264_then_m2m_then_software() {
        let pi = cands(&[
            ("/dev/video10", Err("/dev/video10 does not encode H264")),
            ("/dev/video11", Ok(Api::MultiPlanar)),
        ]);
        let auto = |camera, c: &[_], sw| choose_encoder(EncoderChoice::Auto, camera, c, sw);
        assert_eq!(
            auto(PixelFormat::H264, &pi, true).unwrap().kind,
            EncoderKind::Passthrough
        );
        let m2m = auto(PixelFormat::Yuyv, &pi, true).unwrap();
        assert_eq!(m2m.kind, EncoderKind::M2m("/dev/video11".into()));
        assert!(m2m.reason.contains("YUYV"), "{}", m2m.reason);
        // vicodec alone: not H.264, so software, and the reason says why.
        let lab = cands(&[(
            "/dev/video4",
            Err("/dev/video4 (vicodec) does not encode H264: it gives FWHT"),
        )]);
        let sw = auto(PixelFormat::Yuyv, &lab, true).unwrap();
        assert_eq!(sw.kind, EncoderKind::Software);
        assert!(sw.reason.contains("FWHT"), "{}", sw.reason);
        assert!(auto(PixelFormat::Yuyv, &[], true)
            .unwrap()
            .reason
            .contains("no V4L2 memory-to-memory encoder"));
        let err = auto(PixelFormat::Yuyv, &lab, false).unwrap_err();
        assert!(err.contains("software-h264"), "{err}");
        // MJPEG is decoded on the CPU for openh264: no M2M encoder takes JPEG.
        let mjpeg = auto(PixelFormat::Mjpeg, &pi, true).unwrap();
        assert_eq!(mjpeg.kind, EncoderKind::Software);
        assert!(mjpeg.reason.contains("MJPEG"), "{}", mjpeg.reason);
        assert!(auto(PixelFormat::Mjpeg, &pi, false)
            .unwrap_err()
            .contains("software-h264"));
    }

    #[test]
    fn explicit_choices_that_cannot_work_name_the_fix() {
        let lab = cands(&[(
            "/dev/video4",
            Err("/dev/video4 (vicodec) does not encode H264: it gives FWHT"),
        )]);
        let err =
            choose_encoder(EncoderChoice::V4l2m2m, PixelFormat::Yu12, &lab, true).unwrap_err();
        assert!(
            err.contains("FWHT") && err.contains("encoder = \"auto\""),
            "{err}"
        );
        let err =
            choose_encoder(EncoderChoice::Passthrough, PixelFormat::Yuyv, &[], true).unwrap_err();
        assert!(
            err.contains("not H.264") && err.contains("\"auto\""),
            "{err}"
        );
        let err =
            choose_encoder(EncoderChoice::Software, PixelFormat::H264, &[], true).unwrap_err();
        assert!(err.contains("passthrough"), "{err}");
        let err =
            choose_encoder(EncoderChoice::Software, PixelFormat::Yuyv, &[], false).unwrap_err();
        assert!(err.contains("software-h264"), "{err}");
        let ok = choose_encoder(
            EncoderChoice::V4l2m2m,
            PixelFormat::Nv12,
            &cands(&[("/dev/video11", Ok(Api::MultiPlanar))]),
            false,
        );
        assert_eq!(ok.unwrap().kind, EncoderKind::M2m("/dev/video11".into()));
    }
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
