//! The synthetic speaker, `device = "file:/path"`: what would have been played, written to a
//! file as raw PCM (48 kHz, signed 16-bit little-endian, interleaved), in real time.
//!
//! It stands in for a device's clock with CLOCK_MONOTONIC: each 20 ms frame is written when
//! it is due, so the playout thread runs as it would on hardware and a test hears the same
//! timing (jitter buffer, concealment, silence) a loudspeaker would. Play it back with
//! `aplay -f S16_LE -r 48000 -c 1 out.raw`.
use super::{Speaker, StopSignal, TICK_FRAMES};
use crate::media::clock;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(20);

pub struct FileSpeaker {
    out: std::io::BufWriter<std::fs::File>,
    channels: u16,
    /// When the next frame is due.
    due: Option<Duration>,
    bytes: Vec<u8>,
}

impl FileSpeaker {
    /// Create (or truncate) `path`.
    pub fn create(path: &Path, channels: u16) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| {
            anyhow::anyhow!(
                "[speaker] device = \"file:{}\": cannot create it: {e}; check that the directory exists and is writable",
                path.display()
            )
        })?;
        tracing::info!(
            "speaker file:{}: raw 48 kHz S16LE, {channels} channel(s)",
            path.display()
        );
        Ok(Self {
            out: std::io::BufWriter::new(file),
            channels: channels.clamp(1, 2),
            due: None,
            bytes: Vec::with_capacity(TICK_FRAMES * 2 * 2),
        })
    }
}

impl Speaker for FileSpeaker {
    fn channels(&self) -> u16 {
        self.channels
    }

    fn play(&mut self, frame: &[i16], stop: &StopSignal) -> anyhow::Result<bool> {
        let due = *self.due.get_or_insert_with(clock::monotonic_now);
        if !stop.wait_until(due) {
            return Ok(false);
        }
        self.bytes.clear();
        for sample in frame {
            self.bytes.extend_from_slice(&sample.to_le_bytes());
        }
        self.out.write_all(&self.bytes)?;
        // Flushed every frame: a reader (a test) sees the audio as it is "played".
        self.out.flush()?;
        self.due = Some(due + TICK);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_as_s16le_at_their_pace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.raw");
        let mut speaker = FileSpeaker::create(&path, 1).unwrap();
        let stop = StopSignal::new();
        let frame: Vec<i16> = (0..TICK_FRAMES as i16).map(|i| i - 480).collect();
        let start = clock::monotonic_now();
        for _ in 0..3 {
            assert!(speaker.play(&frame, &stop).unwrap());
        }
        // The first frame goes at once, the third 40 ms later.
        assert!(clock::monotonic_now() - start >= Duration::from_millis(40));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 3 * TICK_FRAMES * 2);
        assert_eq!(i16::from_le_bytes([bytes[0], bytes[1]]), -480);
        assert_eq!(i16::from_le_bytes([bytes[2], bytes[3]]), -479);
    }

    #[test]
    fn a_stop_wakes_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut speaker = FileSpeaker::create(&dir.path().join("out.raw"), 1).unwrap();
        let stop = StopSignal::new();
        stop.stop();
        assert!(!speaker.play(&[0; TICK_FRAMES], &stop).unwrap());
    }

    #[test]
    fn an_unwritable_path_names_the_fix() {
        let err = FileSpeaker::create(Path::new("/nonexistent-dir/out.raw"), 1)
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(msg.contains("file:/nonexistent-dir/out.raw") && msg.contains("directory"));
    }
}
