//! Opus (libopus): one packet per 20 ms frame.
use super::{AudioEncoder, AudioFrame};

pub struct OpusEncoder {
    encoder: opus::Encoder,
    buf: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(rate: u32, channels: u16, bitrate_kbps: u32) -> anyhow::Result<Self> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => anyhow::bail!("[audio] channels = {n}: Opus here takes 1 or 2"),
        };
        let mut encoder = opus::Encoder::new(rate, layout, opus::Application::Voip)
            .map_err(|e| anyhow::anyhow!("cannot start the Opus encoder at {rate} Hz: {e}"))?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(
                bitrate_kbps.clamp(6, 510) as i32 * 1000,
            ))
            .map_err(|e| anyhow::anyhow!("[audio] bitrate = {bitrate_kbps}: {e}"))?;
        encoder.set_inband_fec(true).ok();
        Ok(Self {
            encoder,
            buf: vec![0; 4000],
        })
    }
}

impl AudioEncoder for OpusEncoder {
    fn encode(&mut self, frame: &AudioFrame) -> anyhow::Result<bytes::Bytes> {
        let n = self
            .encoder
            .encode(&frame.samples, &mut self.buf)
            .map_err(|e| anyhow::anyhow!("Opus encode failed: {e}"))?;
        Ok(bytes::Bytes::copy_from_slice(&self.buf[..n]))
    }
}
