//! The speaker: subscribed remote audio, decoded, mixed and played (`[speaker]`, off by default).
//!
//! The network task hands each RTP packet of a subscribed audio track to a [`SpeakerSink`],
//! which never blocks it: the queue to the playout thread is bounded, and a packet that finds
//! it full is dropped and counted. The playout thread owns the [`mixer`] (a small [`jitter`]
//! buffer and an Opus decoder per track) and the [`Speaker`]; every 20 ms it mixes one frame and
//! hands it to the device, whose own clock paces the loop (an ALSA write blocks while the device
//! buffer is full; the file speaker waits on CLOCK_MONOTONIC). With no remote audio it plays
//! silence, which keeps an ALSA device running instead of underrunning.
//!
//! The thread stops at once on [`Playback`]'s drop (the [`StopSignal`] wakes a device poll or a
//! clock wait) and is joined.
pub mod alsa_out;
pub mod file;
pub mod jitter;
pub mod mixer;

pub use mixer::{RemotePacket, RATE, TICK_FRAMES};

use super::StopSignal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Packets waiting for the playout thread: about a second of one track's 20 ms packets, more
/// than any jitter buffer keeps, so only a stalled thread fills it.
const PACKET_QUEUE: usize = 64;

/// Where mixed audio goes: 48 kHz, 16-bit, interleaved, one 20 ms frame at a time.
pub trait Speaker: Send {
    /// Channels (1 or 2).
    fn channels(&self) -> u16;
    /// Play one 20 ms frame; returns when the device can take the next one (that is what paces
    /// the playout). Ok(false) once `stop` is raised.
    fn play(&mut self, frame: &[i16], stop: &StopSignal) -> anyhow::Result<bool>;
}

/// What to play on, from the `[speaker]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerSettings {
    pub device: SpeakerDevice,
    pub channels: u16,
    /// Percent; 100 plays as received.
    pub volume: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeakerDevice {
    /// An ALSA PCM name (`default`, `hw:1,0`, `plughw:CARD=Device`).
    Alsa(String),
    /// `file:/path`: raw 48 kHz S16LE interleaved PCM written in real time (what a test checks).
    File(PathBuf),
}

impl std::fmt::Display for SpeakerDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpeakerDevice::Alsa(name) => write!(f, "{name}"),
            SpeakerDevice::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

pub fn open_speaker(settings: &SpeakerSettings) -> anyhow::Result<Box<dyn Speaker>> {
    Ok(match &settings.device {
        SpeakerDevice::Alsa(name) => {
            Box::new(alsa_out::AlsaSpeaker::open(name, settings.channels)?)
        }
        SpeakerDevice::File(path) => Box::new(file::FileSpeaker::create(path, settings.channels)?),
    })
}

/// Counters the network side and the playout thread keep.
#[derive(Debug, Default)]
pub struct SpeakerCounters {
    /// Packets handed over.
    pub packets: AtomicU64,
    /// Packets dropped because the playout thread's queue was full.
    pub queue_drops: AtomicU64,
}

/// The network side's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SpeakerSink {
    tx: SyncSender<RemotePacket>,
    /// Track ends, apart from the packet queue so a full queue cannot lose one.
    ended: Arc<Mutex<Vec<Arc<str>>>>,
    counters: Arc<SpeakerCounters>,
}

impl SpeakerSink {
    /// Hand over one packet of track `source`. A full queue drops it (counted): the network
    /// task must never wait for the speaker.
    pub fn push(&self, packet: RemotePacket) {
        self.counters.packets.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(packet) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.counters.queue_drops.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!("speaker: {n} packet(s) dropped: the playout thread is behind");
                }
            }
        }
    }

    /// Track `source` ended: its packets stop being played.
    pub fn end(&self, source: &str) {
        // The playout thread reads the list every tick.
        self.ended.lock().unwrap().push(source.into());
    }

    pub fn counters(&self) -> &SpeakerCounters {
        &self.counters
    }
}

/// The running playout thread. Dropping it stops and joins the thread.
pub struct Playback {
    sink: SpeakerSink,
    stop: StopSignal,
    thread: Option<std::thread::JoinHandle<()>>,
    device: String,
}

impl Playback {
    /// Open the device and start playing (silence until remote audio arrives).
    pub fn start(settings: &SpeakerSettings) -> anyhow::Result<Playback> {
        let speaker = open_speaker(settings)?;
        Ok(Self::with_speaker(
            speaker,
            settings.volume,
            settings.device.to_string(),
        ))
    }

    pub fn with_speaker(speaker: Box<dyn Speaker>, volume: u32, device: String) -> Playback {
        let (tx, rx) = mpsc::sync_channel(PACKET_QUEUE);
        let sink = SpeakerSink {
            tx,
            ended: Arc::default(),
            counters: Arc::default(),
        };
        let stop = StopSignal::new();
        let (thread_stop, ended, name) = (stop.clone(), sink.ended.clone(), device.clone());
        let thread = std::thread::Builder::new()
            .name("roomcast-speaker".into())
            .spawn(move || {
                if let Err(e) = playout(speaker, volume, &rx, &ended, &thread_stop) {
                    tracing::error!("speaker {name} stopped: {e:#}; remote audio is not played");
                }
            })
            .expect("spawn speaker thread");
        tracing::info!("speaker {device}: playing subscribed remote audio");
        Playback {
            sink,
            stop,
            thread: Some(thread),
            device,
        }
    }

    pub fn sink(&self) -> SpeakerSink {
        self.sink.clone()
    }

    /// Stop the thread and wait for it (at once: the stop wakes its wait).
    pub fn stop_and_join(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the speaker thread panicked");
            }
            let c = self.sink.counters();
            tracing::debug!(
                "speaker {}: {} packets, {} dropped at the queue",
                self.device,
                c.packets.load(Ordering::Relaxed),
                c.queue_drops.load(Ordering::Relaxed)
            );
        }
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn playout(
    mut speaker: Box<dyn Speaker>,
    volume: u32,
    rx: &Receiver<RemotePacket>,
    ended: &Mutex<Vec<Arc<str>>>,
    stop: &StopSignal,
) -> anyhow::Result<()> {
    let mut mixer = mixer::Mixer::new(speaker.channels(), volume);
    let mut frame = vec![0i16; mixer.tick_len()];
    loop {
        // Ends first, then the packets: every packet of an ended track was queued before its
        // end was noted, so it is in this drain and removed with the source just below.
        let gone = std::mem::take(&mut *ended.lock().unwrap());
        while let Ok(packet) = rx.try_recv() {
            mixer.push(packet);
        }
        for source in &gone {
            mixer.end(source);
        }
        mixer.mix(&mut frame);
        if !speaker.play(&frame, stop)? {
            let s = mixer.stats();
            tracing::debug!("speaker stopped: {s:?}");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Takes frames as fast as they come until told how many, then reports stopped.
    struct Counting {
        frames: Arc<AtomicUsize>,
    }

    impl Speaker for Counting {
        fn channels(&self) -> u16 {
            1
        }
        fn play(&mut self, frame: &[i16], stop: &StopSignal) -> anyhow::Result<bool> {
            assert_eq!(frame.len(), TICK_FRAMES);
            self.frames.fetch_add(1, Ordering::Relaxed);
            // Paced like a device: the stop wakes it.
            Ok(stop.wait_until(
                super::super::clock::monotonic_now() + std::time::Duration::from_millis(1),
            ))
        }
    }

    #[test]
    fn the_thread_stops_and_joins_on_drop() {
        let frames = Arc::new(AtomicUsize::new(0));
        let playback = Playback::with_speaker(
            Box::new(Counting {
                frames: frames.clone(),
            }),
            100,
            "counting".into(),
        );
        let sink = playback.sink();
        drop(playback);
        let played = frames.load(Ordering::Relaxed);
        // Joined: nothing plays after the drop returned, and a late packet is harmless.
        sink.push(RemotePacket {
            source: "TR_x".into(),
            seq: 1,
            payload: bytes::Bytes::from_static(&[0xf8]),
        });
        assert_eq!(frames.load(Ordering::Relaxed), played);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (tx, _rx) = mpsc::sync_channel(PACKET_QUEUE);
        let sink = SpeakerSink {
            tx,
            ended: Arc::default(),
            counters: Arc::default(),
        };
        for seq in 0..(PACKET_QUEUE as u16 + 5) {
            sink.push(RemotePacket {
                source: "TR_x".into(),
                seq,
                payload: bytes::Bytes::new(),
            });
        }
        assert_eq!(sink.counters().queue_drops.load(Ordering::Relaxed), 5);
        assert_eq!(
            sink.counters().packets.load(Ordering::Relaxed),
            PACKET_QUEUE as u64 + 5
        );
    }
}
