//! What the ALSA microphone and speaker share: opening a PCM at 48 kHz S16 in 20 ms periods,
//! errors that say what to do, and a poll on the PCM together with a [`StopSignal`].
use super::StopSignal;
use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Which end of the board's audio a PCM is, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    /// The config section: "audio" or "speaker".
    pub section: &'static str,
    /// "microphone" or "speaker".
    pub noun: &'static str,
    /// "capture" or "play".
    pub verb: &'static str,
    pub direction: Direction,
    /// The alsa-utils lister: "arecord -l" or "aplay -l".
    pub lister: &'static str,
}

pub const MICROPHONE: Role = Role {
    section: "audio",
    noun: "microphone",
    verb: "capture",
    direction: Direction::Capture,
    lister: "arecord -l",
};

pub const SPEAKER: Role = Role {
    section: "speaker",
    noun: "speaker",
    verb: "play",
    direction: Direction::Playback,
    lister: "aplay -l",
};

/// Frames in one 20 ms period at `rate`.
pub fn block_frames(rate: u32) -> usize {
    rate as usize / 50
}

/// What to do about an ALSA error.
pub fn hint(e: &alsa::Error, role: Role) -> String {
    // alsa-lib (linked statically into the board build) learns what "hw", "plughw" and
    // "default" mean from this file at run time.
    if std::env::var_os("ALSA_CONFIG_PATH").is_none()
        && !std::path::Path::new("/usr/share/alsa/alsa.conf").exists()
    {
        return "/usr/share/alsa/alsa.conf is missing, so ALSA cannot resolve device names: install alsa-lib's data files (Debian: libasound2-data)".into();
    }
    match e.errno() {
        libc::ENOENT | libc::ENODEV => {
            let kind = if role.direction == Direction::Capture {
                "capture"
            } else {
                "playback"
            };
            format!(
                "is the {} plugged in? `roomcast devices` (or {}) lists the {kind} devices",
                role.noun, role.lister
            )
        }
        libc::EBUSY => {
            let shared = if role.direction == Direction::Capture {
                "dsnoop"
            } else {
                "dmix"
            };
            format!("another program holds it: stop it, or use a {shared}/`default` device")
        }
        libc::EACCES | libc::EPERM => "add the service user to the `audio` group".into(),
        _ => "check the name with `roomcast devices`".into(),
    }
}

/// Open `name` non-blocking, interleaved S16 at `rate` with `channels`, in 20 ms periods and a
/// buffer of `periods` of them. Returns the PCM and the period the hardware settled on.
pub fn open(
    name: &str,
    role: Role,
    rate: u32,
    channels: u16,
    periods: i64,
) -> anyhow::Result<(PCM, alsa::pcm::Frames)> {
    let (section, noun) = (role.section, role.noun);
    let pcm = PCM::new(name, role.direction, true)
        .map_err(|e| anyhow::anyhow!("[{section}] {noun} {name:?}: {e}; {}", hint(&e, role)))?;
    {
        let hw = HwParams::any(&pcm)?;
        let fail = |what: String, e: alsa::Error| {
            anyhow::anyhow!(
                "[{section}] {noun} {name:?} cannot {} {what}: {e}; a `plughw:` device converts for you",
                role.verb
            )
        };
        hw.set_access(Access::RWInterleaved)
            .map_err(|e| fail("interleaved".into(), e))?;
        hw.set_format(Format::s16())
            .map_err(|e| fail("16-bit samples".into(), e))?;
        hw.set_channels(u32::from(channels))
            .map_err(|e| fail(format!("{channels} channel(s)"), e))?;
        hw.set_rate(rate, ValueOr::Nearest)
            .map_err(|e| fail(format!("at {rate} Hz"), e))?;
        let got = hw.get_rate()?;
        anyhow::ensure!(
            got == rate,
            "[{section}] {noun} {name:?} runs at {got} Hz, not {rate} Hz; use a `plughw:` device, which resamples"
        );
        let period = block_frames(rate) as alsa::pcm::Frames;
        hw.set_period_size_near(period, ValueOr::Nearest)?;
        hw.set_buffer_size_near(period * periods)?;
        pcm.hw_params(&hw)
            .map_err(|e| fail("with these parameters".into(), e))?;
    }
    let period = pcm.hw_params_current()?.get_period_size()?;
    tracing::info!("{noun} {name}: {rate} Hz, {channels} channel(s), {period}-frame periods");
    Ok((pcm, period))
}

/// Wait until the PCM is ready or `stop` is raised. Ok(false) once stopped; an error when the
/// device gives no sign of life for `timeout`.
pub fn wait(
    pcm: &PCM,
    stop: &StopSignal,
    timeout: Duration,
    role: Role,
    name: &str,
) -> anyhow::Result<bool> {
    use alsa::poll::Descriptors;
    let stop_fd = stop.fd()?;
    let mut fds = pcm.get()?;
    let n = fds.len();
    fds.push(libc::pollfd {
        fd: stop_fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    if stop.is_stopped() {
        return Ok(false);
    }
    let ready = super::poll_fds(&mut fds, timeout)
        .map_err(|e| anyhow::anyhow!("[{}] {name}: poll: {e}", role.section))?;
    anyhow::ensure!(
        ready,
        "[{}] {} {name}: no samples for {} s: the device stalled",
        role.section,
        role.noun,
        timeout.as_secs()
    );
    if fds[n].revents != 0 || stop.is_stopped() {
        return Ok(false);
    }
    // Whatever the PCM says (ready, or an error state), the next read or write tells.
    pcm.revents(&fds[..n])?;
    Ok(true)
}
