//! An ALSA microphone: `hw:`, `plughw:` or `default`, 16-bit interleaved, 48 kHz, mono or
//! stereo, read in 20 ms blocks for Opus.
//!
//! The PCM is non-blocking and polled together with the [`StopSignal`]'s eventfd, so a stop
//! wakes the capture thread at once. The hardware may round the period: whatever it delivers is
//! gathered into exact 20 ms blocks. An overrun (xrun) is recovered and counted, and capture
//! goes on. Each block's capture time is the monotonic time of the read, less the frames that
//! were waiting in the buffer.
use super::{clock, AudioFrame, AudioSource, StopSignal};
use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub struct Microphone {
    name: String,
    pcm: PCM,
    rate: u32,
    channels: u16,
    /// One 20 ms block being filled, interleaved.
    block: Vec<i16>,
    filled: usize,
    started: bool,
    xruns: u64,
    timeout: Duration,
}

/// Frames in one 20 ms block at `rate`.
pub fn block_frames(rate: u32) -> usize {
    rate as usize / 50
}

/// The capture time of a block's first sample: read at `now`, with `queued` frames still in
/// the buffer behind it.
pub fn block_capture_time(now: Duration, rate: u32, block: usize, queued: usize) -> Duration {
    let behind = Duration::from_nanos(((block + queued) as u64 * 1_000_000_000) / rate as u64);
    now.saturating_sub(behind)
}

fn hint(e: &alsa::Error) -> &'static str {
    // alsa-lib (linked statically into the board build) learns what "hw", "plughw" and
    // "default" mean from this file at run time.
    if std::env::var_os("ALSA_CONFIG_PATH").is_none()
        && !std::path::Path::new("/usr/share/alsa/alsa.conf").exists()
    {
        return "/usr/share/alsa/alsa.conf is missing, so ALSA cannot resolve device names: install alsa-lib's data files (Debian: libasound2-data)";
    }
    match e.errno() {
        libc::ENOENT | libc::ENODEV => {
            "is the microphone plugged in? `roomcast devices` (or arecord -l) lists the capture devices"
        }
        libc::EBUSY => "another program holds it: stop it, or use a dsnoop/`default` device",
        libc::EACCES | libc::EPERM => "add the service user to the `audio` group",
        _ => "check the name with `roomcast devices`",
    }
}

impl Microphone {
    pub fn open(name: &str, rate: u32, channels: u16) -> anyhow::Result<Self> {
        let pcm = PCM::new(name, Direction::Capture, true)
            .map_err(|e| anyhow::anyhow!("[audio] microphone {name:?}: {e}; {}", hint(&e)))?;
        {
            let hw = HwParams::any(&pcm)?;
            let fail = |what: String, e: alsa::Error| {
                anyhow::anyhow!(
                    "[audio] microphone {name:?} cannot capture {what}: {e}; a `plughw:` device converts for you"
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
                "[audio] microphone {name:?} runs at {got} Hz, not {rate} Hz; use a `plughw:` device, which resamples"
            );
            let period = block_frames(rate) as alsa::pcm::Frames;
            hw.set_period_size_near(period, ValueOr::Nearest)?;
            hw.set_buffer_size_near(period * 4)?;
            pcm.hw_params(&hw)
                .map_err(|e| fail("with these parameters".into(), e))?;
        }
        let period = pcm.hw_params_current()?.get_period_size()?;
        tracing::info!(
            "microphone {name}: {rate} Hz, {channels} channel(s), {period}-frame periods"
        );
        Ok(Self {
            name: name.to_owned(),
            pcm,
            rate,
            channels,
            block: vec![0; block_frames(rate) * channels as usize],
            filled: 0,
            started: false,
            xruns: 0,
            timeout: Duration::from_secs(5),
        })
    }

    /// Overruns recovered so far.
    pub fn xruns(&self) -> u64 {
        self.xruns
    }

    /// Wait for the PCM or the stop fd. Ok(false) once stopped.
    fn wait(&self, stop: &StopSignal) -> anyhow::Result<bool> {
        use alsa::poll::Descriptors;
        let stop_fd = stop.fd()?;
        let mut fds = self.pcm.get()?;
        let n = fds.len();
        fds.push(libc::pollfd {
            fd: stop_fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        if stop.is_stopped() {
            return Ok(false);
        }
        let ready = super::poll_fds(&mut fds, self.timeout)
            .map_err(|e| anyhow::anyhow!("[audio] {}: poll: {e}", self.name))?;
        anyhow::ensure!(
            ready,
            "[audio] microphone {}: no samples for {} s: the device stalled",
            self.name,
            self.timeout.as_secs()
        );
        if fds[n].revents != 0 || stop.is_stopped() {
            return Ok(false);
        }
        // Whatever the PCM says (data, or an error state), the read tells.
        self.pcm.revents(&fds[..n])?;
        Ok(true)
    }
}

impl AudioSource for Microphone {
    fn format(&self) -> (u32, u16) {
        (self.rate, self.channels)
    }

    fn next_frame(&mut self, stop: &StopSignal) -> anyhow::Result<Option<AudioFrame>> {
        if !self.started {
            self.pcm.start().or_else(|e| {
                // Already running (a started dsnoop) is fine.
                if self.pcm.state() == alsa::pcm::State::Running {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("[audio] {}: start: {e}", self.name))
                }
            })?;
            self.started = true;
        }
        let ch = self.channels as usize;
        loop {
            if stop.is_stopped() {
                return Ok(None);
            }
            let read = {
                let io = self.pcm.io_i16()?;
                io.readi(&mut self.block[self.filled..])
            };
            match read {
                Ok(frames) => {
                    self.filled += frames * ch;
                    if self.filled == self.block.len() {
                        self.filled = 0;
                        let queued = self.pcm.avail_update().unwrap_or(0).max(0) as usize;
                        let capture = block_capture_time(
                            clock::monotonic_now(),
                            self.rate,
                            block_frames(self.rate),
                            queued,
                        );
                        return Ok(Some(AudioFrame {
                            rate: self.rate,
                            channels: self.channels,
                            samples: self.block.clone(),
                            capture,
                        }));
                    }
                    if frames == 0 && !self.wait(stop)? {
                        return Ok(None);
                    }
                }
                Err(e) if e.errno() == libc::EAGAIN => {
                    if !self.wait(stop)? {
                        return Ok(None);
                    }
                }
                Err(e) if e.errno() == libc::EPIPE || e.errno() == libc::ESTRPIPE => {
                    self.xruns += 1;
                    tracing::warn!(
                        "[audio] {}: overrun ({} so far): samples were lost, recovering",
                        self.name,
                        self.xruns
                    );
                    self.pcm.try_recover(e, true)?;
                    // The partial block would splice across the gap.
                    self.filled = 0;
                    if self.pcm.state() != alsa::pcm::State::Running {
                        self.pcm.start()?;
                    }
                }
                Err(e) => {
                    anyhow::bail!(
                        "[audio] microphone {}: {e} (unplugged?); {}",
                        self.name,
                        hint(&e)
                    )
                }
            }
        }
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        let _ = self.pcm.drop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_millisecond_blocks() {
        assert_eq!(block_frames(48_000), 960);
        assert_eq!(block_frames(16_000), 320);
    }

    #[test]
    fn capture_time_counts_back_over_the_block_and_the_queue() {
        let now = Duration::from_secs(100);
        assert_eq!(
            block_capture_time(now, 48_000, 960, 0),
            now - Duration::from_millis(20)
        );
        assert_eq!(
            block_capture_time(now, 48_000, 960, 480),
            now - Duration::from_millis(30)
        );
    }

    #[test]
    fn a_missing_microphone_is_named_with_the_fix() {
        let err = Microphone::open("hw:CARD=roomcast-absent", 48_000, 1)
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("roomcast-absent") && msg.contains("roomcast devices"),
            "{msg}"
        );
    }
}
