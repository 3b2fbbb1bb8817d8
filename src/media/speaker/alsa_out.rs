//! An ALSA speaker: `hw:`, `plughw:` or `default`, 16-bit interleaved, 48 kHz, mono or stereo,
//! written in 20 ms periods.
//!
//! The PCM is non-blocking and polled together with the [`StopSignal`]'s eventfd, so a stop
//! wakes the playout thread at once. The device buffer holds four periods (80 ms) and playback
//! starts once two are queued, a cushion against a late tick without adding much delay. An
//! underrun (xrun) is recovered and counted, and playback goes on.
use super::{Speaker, StopSignal, RATE};
use crate::media::alsa_pcm::{self, SPEAKER};
use alsa::pcm::PCM;
use std::time::Duration;

/// Periods in the device buffer.
const PERIODS: i64 = 4;
/// Periods queued before the device starts (again, after an underrun).
const START_PERIODS: i64 = 2;

pub struct AlsaSpeaker {
    name: String,
    pcm: PCM,
    channels: u16,
    xruns: u64,
    timeout: Duration,
}

impl AlsaSpeaker {
    pub fn open(name: &str, channels: u16) -> anyhow::Result<Self> {
        let (pcm, period) = alsa_pcm::open(name, SPEAKER, RATE, channels, PERIODS)?;
        {
            let sw = pcm.sw_params_current()?;
            sw.set_start_threshold(period * START_PERIODS)?;
            pcm.sw_params(&sw)?;
        }
        Ok(Self {
            name: name.to_owned(),
            pcm,
            channels,
            xruns: 0,
            timeout: Duration::from_secs(5),
        })
    }

    /// Underruns recovered so far.
    pub fn xruns(&self) -> u64 {
        self.xruns
    }
}

impl Speaker for AlsaSpeaker {
    fn channels(&self) -> u16 {
        self.channels
    }

    fn play(&mut self, frame: &[i16], stop: &StopSignal) -> anyhow::Result<bool> {
        let ch = usize::from(self.channels);
        let mut done = 0;
        while done < frame.len() {
            if stop.is_stopped() {
                return Ok(false);
            }
            let wrote = {
                let io = self.pcm.io_i16()?;
                io.writei(&frame[done..])
            };
            let full = match wrote {
                Ok(frames) if frames > 0 => {
                    done += frames * ch;
                    false
                }
                Ok(_) => true,
                Err(e) if e.errno() == libc::EAGAIN => true,
                Err(e) if e.errno() == libc::EPIPE || e.errno() == libc::ESTRPIPE => {
                    self.xruns += 1;
                    // Said for the first few and then every hundredth: a device that keeps
                    // underrunning must not flood the log.
                    if self.xruns <= 3 || self.xruns % 100 == 0 {
                        tracing::warn!(
                            "[speaker] {}: underrun ({} so far): the device ran dry, recovering",
                            self.name,
                            self.xruns
                        );
                    }
                    // Prepared again; it restarts by itself once START_PERIODS are queued.
                    self.pcm.try_recover(e, true)?;
                    false
                }
                Err(e) => anyhow::bail!(
                    "[speaker] {}: {e} (unplugged?); {}",
                    self.name,
                    alsa_pcm::hint(&e, SPEAKER)
                ),
            };
            // The buffer is full: wait until the device has room (this paces the mixer).
            if full && !alsa_pcm::wait(&self.pcm, stop, self.timeout, SPEAKER, &self.name)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for AlsaSpeaker {
    fn drop(&mut self) {
        // Drop what is queued rather than play it out: a stop is a stop.
        let _ = self.pcm.drop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_speaker_is_named_with_the_fix() {
        let err = AlsaSpeaker::open("hw:CARD=roomcast-absent", 1)
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("[speaker]")
                && msg.contains("roomcast-absent")
                && msg.contains("roomcast devices"),
            "{msg}"
        );
    }

    /// alsa-lib's `null` PCM takes whatever is written: the open, the hardware parameters, the
    /// writes and the stop run through the real code path without a sound card.
    #[test]
    fn plays_into_alsa_null_and_stops() {
        let mut speaker = match AlsaSpeaker::open("null", 2) {
            Ok(s) => s,
            Err(e) => panic!("alsa null PCM: {e:#}"),
        };
        let stop = StopSignal::new();
        let frame = vec![1000i16; super::super::TICK_FRAMES * 2];
        for _ in 0..10 {
            assert!(speaker.play(&frame, &stop).unwrap());
        }
        assert_eq!(speaker.xruns(), 0);
        stop.stop();
        assert!(!speaker.play(&frame, &stop).unwrap());
    }
}
