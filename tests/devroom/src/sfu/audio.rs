//! Opus tracks on request: the SFU keeps the last few seconds of a track's Opus payloads, and
//! `POST /admin/tracks/<sid>/audio` decodes them and says what the room hears: the dominant
//! frequency, the RMS level and how many seconds were analysed. Tests use it to check that a
//! tone captured on a board arrives at the room as that tone, not just as packets.
//!
//! Synchronous and free of WebRTC types, like `media.rs`, so a unit test can feed it Opus.

use std::collections::VecDeque;

use anyhow::{bail, Context};
use bytes::Bytes;

/// Opus in WebRTC always runs at 48 kHz on the wire (RFC 7587), whatever the sender captured.
pub const RATE: u32 = 48_000;
/// Enough for a frequency to 1 Hz (a 1.4 s FFT window) with room for packets that are lost.
const KEEP: usize = 150;
/// The largest Opus frame (120 ms) at 48 kHz: a decode never writes more.
const MAX_FRAME: usize = 5_760;

/// The most recent Opus payloads of one track, in arrival order.
#[derive(Debug, Default)]
pub struct OpusRecorder {
    packets: VecDeque<Bytes>,
}

impl OpusRecorder {
    pub fn on_packet(&mut self, payload: &[u8]) {
        if self.packets.len() == KEEP {
            self.packets.pop_front();
        }
        self.packets.push_back(Bytes::copy_from_slice(payload));
    }

    /// A copy of what is kept, so the decode runs without holding the track's lock.
    pub fn snapshot(&self) -> Vec<Bytes> {
        self.packets.iter().cloned().collect()
    }
}

/// What the room hears on an audio track.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AudioAnalysis {
    /// The strongest frequency in the decoded audio, Hz (0 for silence).
    pub frequency_hz: f64,
    /// Root mean square of the samples, full scale = 1.0.
    pub rms: f64,
    /// Decoded audio analysed.
    pub seconds: f64,
    pub packets: usize,
}

/// Decodes `packets` (Opus, mono or stereo, downmixed to mono by the decoder) and analyses them.
pub fn analyse_opus(packets: &[Bytes]) -> anyhow::Result<AudioAnalysis> {
    if packets.is_empty() {
        bail!("no Opus packets received yet");
    }
    let mut decoder =
        opus::Decoder::new(RATE, opus::Channels::Mono).context("creating an Opus decoder")?;
    let mut pcm = Vec::with_capacity(packets.len() * 960);
    let mut frame = vec![0f32; MAX_FRAME];
    for packet in packets {
        let n = decoder
            .decode_float(packet, &mut frame, false)
            .with_context(|| format!("decoding a {}-byte Opus packet", packet.len()))?;
        pcm.extend_from_slice(&frame[..n]);
    }
    Ok(AudioAnalysis {
        packets: packets.len(),
        ..analyse_pcm(&pcm, RATE)
    })
}

/// RMS and dominant frequency of mono PCM at `rate`.
pub fn analyse_pcm(pcm: &[f32], rate: u32) -> AudioAnalysis {
    let seconds = pcm.len() as f64 / f64::from(rate);
    let rms = if pcm.is_empty() {
        0.0
    } else {
        (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
    };
    AudioAnalysis {
        frequency_hz: dominant_frequency(pcm, rate),
        rms,
        seconds,
        packets: 0,
    }
}

/// The peak of the magnitude spectrum of the newest power-of-two stretch of `pcm` (Hann window),
/// refined between bins by a parabola through the peak and its neighbours. 0 for too little audio
/// or silence.
fn dominant_frequency(pcm: &[f32], rate: u32) -> f64 {
    if pcm.len() < 64 {
        return 0.0;
    }
    // The newest samples: the decoder's first frames are its start-up, not the signal.
    let n = 1usize << (usize::BITS - 1 - pcm.len().leading_zeros());
    let tail = &pcm[pcm.len() - n..];
    let mut re: Vec<f64> = tail
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
            f64::from(s) * w
        })
        .collect();
    let mut im = vec![0.0; n];
    fft(&mut re, &mut im);
    let mag: Vec<f64> = (0..n / 2).map(|k| re[k].hypot(im[k])).collect();
    // Skip DC (bin 0): an offset is not a tone.
    let Some((peak, &top)) = mag
        .iter()
        .enumerate()
        .skip(1)
        .max_by(|a, b| a.1.total_cmp(b.1))
    else {
        return 0.0;
    };
    if top <= 1e-9 {
        return 0.0;
    }
    let offset = if peak + 1 < mag.len() {
        let (a, b, c) = (mag[peak - 1], top, mag[peak + 1]);
        let d = a - 2.0 * b + c;
        if d.abs() > f64::EPSILON {
            0.5 * (a - c) / d
        } else {
            0.0
        }
    } else {
        0.0
    };
    (peak as f64 + offset) * f64::from(rate) / n as f64
}

/// In-place iterative radix-2 FFT; `re.len()` must be a power of two.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let angle = -2.0 * std::f64::consts::PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (s, c) = (angle * k as f64).sin_cos();
                let (a, b) = (start + k, start + k + len / 2);
                let (tr, ti) = (re[b] * c - im[b] * s, re[b] * s + im[b] * c);
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms Opus packets of a sine at `freq` Hz and `amplitude` (full scale 1.0), as roomcast's
    /// encoder makes them.
    fn opus_sine(freq: f64, amplitude: f32, seconds: f64) -> Vec<Bytes> {
        let mut enc =
            opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let total = (seconds * f64::from(RATE)) as usize;
        let samples: Vec<f32> = (0..total)
            .map(|i| {
                amplitude
                    * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(RATE)).sin() as f32
            })
            .collect();
        samples
            .chunks_exact(960)
            .map(|frame| Bytes::from(enc.encode_vec_float(frame, 1500).unwrap()))
            .collect()
    }

    #[test]
    fn a_sine_encoded_as_opus_decodes_to_its_frequency_and_level() {
        let packets = opus_sine(1000.0, 0.5, 2.0);
        let mut rec = OpusRecorder::default();
        for p in &packets {
            rec.on_packet(p);
        }
        assert_eq!(rec.snapshot().len(), 100);
        let a = analyse_opus(&rec.snapshot()).unwrap();
        assert!((a.frequency_hz - 1000.0).abs() < 5.0, "{a:?}");
        // A sine of amplitude 0.5 has an RMS of 0.354; Opus keeps the level within a few %.
        assert!((a.rms - 0.354).abs() < 0.03, "{a:?}");
        assert!((a.seconds - 2.0).abs() < 0.01, "{a:?}");
        assert_eq!(a.packets, 100);

        let other = analyse_opus(&opus_sine(440.0, 0.2, 1.0)).unwrap();
        assert!((other.frequency_hz - 440.0).abs() < 5.0, "{other:?}");
    }

    #[test]
    fn the_recorder_keeps_the_newest_packets_and_silence_has_no_frequency() {
        let mut rec = OpusRecorder::default();
        for i in 0..KEEP + 10 {
            rec.on_packet(&[i as u8]);
        }
        let kept = rec.snapshot();
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0][0], 10);
        assert!(analyse_opus(&[]).is_err());
        let silent = analyse_pcm(&[0.0; 4800], RATE);
        assert_eq!(silent.frequency_hz, 0.0);
        assert_eq!(silent.rms, 0.0);
    }
}
