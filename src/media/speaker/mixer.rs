//! The speaker's mixer: one [`JitterBuffer`] and Opus decoder per remote audio track, summed
//! every 20 ms into one frame for the device.
//!
//! Every tick each source yields 20 ms: the next packet decoded, a concealed one (Opus packet
//! loss concealment) where a packet is missing or a short stall is bridged, or nothing while its
//! buffer fills or after it ran dry. The sum is taken in 32 bits and saturated to 16, so two loud talkers clip instead
//! of wrapping around into noise. A source that sends nothing for [`IDLE_TICKS`] is dropped
//! (its decoder state is stale by then anyway); a track that ends is dropped at once.
//!
//! No clock here: whoever calls [`Mixer::mix`] (the playout thread, paced by the device) sets
//! the pace, and tests call it on simulated time.
use super::jitter::{JitterBuffer, JitterStats, Next};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The speaker's rate: Opus decodes natively at 48 kHz.
pub const RATE: u32 = 48_000;
/// Frames (samples per channel) in one 20 ms tick.
pub const TICK_FRAMES: usize = RATE as usize / 50;
/// The longest Opus packet (120 ms) in frames.
const MAX_PACKET_FRAMES: usize = RATE as usize * 120 / 1000;
/// Ticks without a packet before a source is dropped (2 s).
pub const IDLE_TICKS: u32 = 100;

/// One RTP packet of a subscribed audio track, as the network task hands it over.
#[derive(Debug, Clone)]
pub struct RemotePacket {
    /// The track sid: one mixer source per track.
    pub source: Arc<str>,
    pub seq: u16,
    /// The Opus payload.
    pub payload: Bytes,
}

struct Source {
    jitter: JitterBuffer,
    decoder: opus::Decoder,
    /// Decoded, interleaved, not yet mixed (a packet longer than 20 ms spans ticks).
    pcm: VecDeque<i16>,
    idle_ticks: u32,
    decode_errors: u64,
}

impl Source {
    fn new(channels: u16) -> anyhow::Result<Self> {
        let layout = if channels == 2 {
            opus::Channels::Stereo
        } else {
            opus::Channels::Mono
        };
        Ok(Self {
            jitter: JitterBuffer::new(),
            // Opus downmixes or upmixes to what we ask for, whatever the sender encoded.
            decoder: opus::Decoder::new(RATE, layout)?,
            pcm: VecDeque::with_capacity(MAX_PACKET_FRAMES * channels as usize),
            idle_ticks: 0,
            decode_errors: 0,
        })
    }

    /// Decode until a tick's worth is ready or the buffer has nothing to give.
    fn fill(&mut self, channels: usize, scratch: &mut [i16]) {
        while self.pcm.len() < TICK_FRAMES * channels {
            let frames = match self.jitter.pop() {
                Next::Waiting => return,
                Next::Packet(payload) => self.decoder.decode(&payload, scratch, false),
                // An empty packet asks the decoder to conceal one tick.
                Next::Lost => {
                    self.decoder
                        .decode(&[], &mut scratch[..TICK_FRAMES * channels], false)
                }
            };
            match frames {
                Ok(frames) => self.pcm.extend(&scratch[..frames * channels]),
                Err(e) => {
                    self.decode_errors += 1;
                    if self.decode_errors == 1 {
                        tracing::warn!("speaker: an undecodable Opus packet ({e}); skipped");
                    }
                }
            }
        }
    }
}

/// What the mixer has done so far, summed over all sources it has had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    pub jitter: JitterStats,
    pub decode_errors: u64,
    /// Ticks in which at least one source was heard.
    pub active_ticks: u64,
}

pub struct Mixer {
    channels: usize,
    /// Percent: 100 plays as sent.
    volume: i32,
    sources: HashMap<Arc<str>, Source>,
    /// Stats of sources already dropped.
    retired: MixerStats,
    active_ticks: u64,
    sum: Vec<i32>,
    scratch: Vec<i16>,
}

impl Mixer {
    pub fn new(channels: u16, volume_percent: u32) -> Self {
        let channels = usize::from(channels.clamp(1, 2));
        Self {
            channels,
            volume: volume_percent.min(1000) as i32,
            sources: HashMap::new(),
            retired: MixerStats::default(),
            active_ticks: 0,
            sum: vec![0; TICK_FRAMES * channels],
            scratch: vec![0; MAX_PACKET_FRAMES * channels],
        }
    }

    /// Interleaved samples in one tick.
    pub fn tick_len(&self) -> usize {
        TICK_FRAMES * self.channels
    }

    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    pub fn push(&mut self, packet: RemotePacket) {
        let source = match self.sources.get_mut(&packet.source) {
            Some(source) => source,
            None => match Source::new(self.channels as u16) {
                Ok(source) => {
                    tracing::info!("speaker: playing remote audio track {}", packet.source);
                    self.sources.entry(packet.source.clone()).or_insert(source)
                }
                Err(e) => {
                    tracing::warn!("speaker: no Opus decoder for {}: {e}", packet.source);
                    return;
                }
            },
        };
        source.idle_ticks = 0;
        tracing::trace!(
            "speaker: {} seq {} ({} waiting)",
            packet.source,
            packet.seq,
            source.jitter.depth()
        );
        source.jitter.push(packet.seq, packet.payload);
    }

    /// The track ended: stop playing it now.
    pub fn end(&mut self, source: &str) {
        if let Some(gone) = self.sources.remove(source) {
            self.retire(source, &gone, "ended");
        }
    }

    fn retire(&mut self, key: &str, gone: &Source, why: &str) {
        let j = gone.jitter.stats();
        tracing::info!(
            "speaker: remote audio track {key} {why}; its jitter buffer: {} lost, {} late, \
             {} duplicate, {} over the depth cap, {} stall tick(s) bridged, {} underrun(s)",
            j.lost,
            j.late,
            j.duplicates,
            j.overflow,
            j.bridged,
            j.underruns
        );
        self.retired.jitter += gone.jitter.stats();
        self.retired.decode_errors += gone.decode_errors;
    }

    pub fn stats(&self) -> MixerStats {
        let mut total = self.retired;
        for s in self.sources.values() {
            total.jitter += s.jitter.stats();
            total.decode_errors += s.decode_errors;
        }
        total.active_ticks = self.active_ticks;
        total
    }

    /// One 20 ms tick: every source's next 20 ms, summed and saturated into `out`
    /// ([`Mixer::tick_len`] samples). Returns how many sources were heard; silence when none.
    pub fn mix(&mut self, out: &mut [i16]) -> usize {
        let len = self.tick_len();
        debug_assert_eq!(out.len(), len);
        self.sum.fill(0);
        let mut heard = 0;
        for (key, source) in self.sources.iter_mut() {
            source.idle_ticks += 1;
            let underruns = source.jitter.stats().underruns;
            source.fill(self.channels, &mut self.scratch);
            if source.jitter.stats().underruns > underruns {
                tracing::debug!("speaker: {key} ran dry; waiting for 60 ms of packets again");
            }
            if source.pcm.is_empty() {
                continue;
            }
            heard += 1;
            // A short tail (a packet that did not end on a tick) plays, then silence.
            let take = source.pcm.len().min(len);
            for (acc, sample) in self.sum.iter_mut().zip(source.pcm.drain(..take)) {
                *acc += i32::from(sample);
            }
        }
        let idle: Vec<Arc<str>> = self
            .sources
            .iter()
            .filter(|(_, s)| s.idle_ticks > IDLE_TICKS)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            if let Some(gone) = self.sources.remove(&key) {
                self.retire(&key, &gone, "went quiet (dropped)");
            }
        }
        if heard > 0 {
            self.active_ticks += 1;
        }
        saturate(&self.sum, self.volume, out);
        heard
    }
}

/// `sum` scaled by `volume` percent and clamped into 16 bits.
pub fn saturate(sum: &[i32], volume: i32, out: &mut [i16]) {
    for (o, s) in out.iter_mut().zip(sum) {
        let scaled = i64::from(*s) * i64::from(volume) / 100;
        *o = scaled.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms Opus packets of a sine, as a LiveKit SDK would send them.
    fn tone_packets(freq: f64, amplitude: f64, count: usize) -> Vec<Bytes> {
        let mut enc =
            opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Audio).unwrap();
        let mut buf = vec![0u8; 4000];
        (0..count)
            .map(|n| {
                let pcm: Vec<i16> = (0..TICK_FRAMES)
                    .map(|i| {
                        let t = (n * TICK_FRAMES + i) as f64 / f64::from(RATE);
                        ((2.0 * std::f64::consts::PI * freq * t).sin() * amplitude) as i16
                    })
                    .collect();
                let len = enc.encode(&pcm, &mut buf).unwrap();
                Bytes::copy_from_slice(&buf[..len])
            })
            .collect()
    }

    fn packet(source: &str, seq: u16, payload: &Bytes) -> RemotePacket {
        RemotePacket {
            source: source.into(),
            seq,
            payload: payload.clone(),
        }
    }

    fn peak(frame: &[i16]) -> i32 {
        frame.iter().map(|s| i32::from(*s).abs()).max().unwrap_or(0)
    }

    /// Push packet n and mix one tick, like the network and the playout thread interleave.
    fn run(mixer: &mut Mixer, feed: impl Fn(&mut Mixer, usize), ticks: usize) -> Vec<Vec<i16>> {
        (0..ticks)
            .map(|n| {
                feed(mixer, n);
                let mut out = vec![0; mixer.tick_len()];
                mixer.mix(&mut out);
                out
            })
            .collect()
    }

    #[test]
    fn no_sources_is_silence() {
        let mut mixer = Mixer::new(1, 100);
        let mut out = vec![1; mixer.tick_len()];
        assert_eq!(mixer.mix(&mut out), 0);
        assert!(out.iter().all(|s| *s == 0));
    }

    #[test]
    fn a_source_plays_after_the_target_depth() {
        let packets = tone_packets(440.0, 8000.0, 20);
        let mut mixer = Mixer::new(1, 100);
        let out = run(
            &mut mixer,
            |m, n| m.push(packet("a", n as u16, &packets[n])),
            20,
        );
        // Ticks 0 and 1 wait for the third packet (60 ms); from then on the tone plays.
        assert!(out[..2].iter().all(|f| peak(f) == 0));
        assert!(out[4..].iter().all(|f| peak(f) > 4000), "the tone is heard");
        assert_eq!(mixer.stats().jitter, JitterStats::default());
    }

    #[test]
    fn two_sources_are_summed_with_saturation() {
        // Loud enough that doubling it must clip.
        let packets = tone_packets(440.0, 24000.0, 12);
        let mut alone = Mixer::new(1, 100);
        let single = run(
            &mut alone,
            |m, n| m.push(packet("a", n as u16, &packets[n])),
            12,
        );
        let mut both = Mixer::new(1, 100);
        let mixed = run(
            &mut both,
            |m, n| {
                m.push(packet("a", n as u16, &packets[n]));
                m.push(packet("b", 5000 + n as u16, &packets[n]));
            },
            12,
        );
        let mut clipped = 0;
        for (one, two) in single.iter().zip(&mixed) {
            for (a, m) in one.iter().zip(two) {
                let want = (2 * i32::from(*a)).clamp(-32768, 32767) as i16;
                assert_eq!(*m, want);
                clipped += usize::from(want == i16::MAX || want == i16::MIN);
            }
        }
        assert!(clipped > 0, "the test tone never reached saturation");
    }

    #[test]
    fn a_lost_packet_is_concealed() {
        let packets = tone_packets(440.0, 8000.0, 20);
        let mut mixer = Mixer::new(1, 100);
        let out = run(
            &mut mixer,
            |m, n| {
                if n != 8 {
                    m.push(packet("a", n as u16, &packets[n]));
                }
            },
            20,
        );
        assert_eq!(mixer.stats().jitter.lost, 1);
        // Every tick from the start of playout has sound, the concealed one included.
        assert!(out[2..].iter().all(|f| peak(f) > 1000), "a gap was heard");
    }

    #[test]
    fn a_source_that_stops_falls_silent_and_is_dropped() {
        let packets = tone_packets(440.0, 8000.0, 10);
        let mut mixer = Mixer::new(1, 100);
        let ticks = 10 + IDLE_TICKS as usize + 2;
        let out = run(
            &mut mixer,
            |m, n| {
                if n < 10 {
                    m.push(packet("a", n as u16, &packets[n]));
                }
            },
            ticks,
        );
        // What was buffered plays out, the stall bridge conceals 60 ms more (fading), then
        // silence.
        assert!(peak(&out[11]) > 1000, "packet 9 plays at tick 11");
        assert!(peak(&out[12]) > 0, "the bridge conceals");
        let silent_from = 12 + super::super::jitter::BRIDGE_TICKS as usize;
        assert!(out[silent_from..].iter().all(|f| peak(f) == 0));
        assert_eq!(mixer.sources(), 0, "an idle source is dropped");
        assert_eq!(mixer.stats().jitter.underruns, 1);
    }

    #[test]
    fn an_ended_track_is_removed_at_once() {
        let packets = tone_packets(440.0, 8000.0, 6);
        let mut mixer = Mixer::new(2, 100);
        run(
            &mut mixer,
            |m, n| m.push(packet("a", n as u16, &packets[n])),
            4,
        );
        assert_eq!(mixer.sources(), 1);
        mixer.end("a");
        assert_eq!(mixer.sources(), 0);
        let mut out = vec![0; mixer.tick_len()];
        assert_eq!(mixer.mix(&mut out), 0);
        assert_eq!(peak(&out), 0);
    }

    #[test]
    fn volume_scales_and_saturates() {
        let mut out = [0i16; 4];
        saturate(&[1000, -1000, 40000, -40000], 50, &mut out);
        assert_eq!(out, [500, -500, 20000, -20000]);
        saturate(&[1000, -1000, 40000, -40000], 100, &mut out);
        assert_eq!(out, [1000, -1000, 32767, -32768]);
    }
}
