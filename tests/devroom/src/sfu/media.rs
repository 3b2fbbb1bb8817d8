//! Per-track media bookkeeping: counters, keyframe detection, H.264 access-unit assembly,
//! decoding and PNG output. Everything here is synchronous and free of WebRTC types so it
//! can be unit-tested with hand-built payloads.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Counters for one published track, as reported by `GET /admin/rooms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackStats {
    /// RTP packets received, padding-only packets excluded.
    pub packets: u64,
    /// Video: distinct RTP timestamps (one per picture). Audio: packets.
    pub frames: u64,
    /// Video pictures that carried an IDR (H.264) or a key frame (VP8).
    pub keyframes: u64,
    /// RTP payload bytes (headers and padding excluded).
    pub bytes: u64,
    /// When the first RTP packet arrived, in ms since the SFU's epoch.
    pub first_rtp_ms: Option<u64>,
    /// RTP timestamps of the first packet and of the newest picture (video) or packet
    /// (audio): with `frames`, they show whether the sender's media clock keeps pace.
    pub first_rtp_timestamp: Option<u32>,
    pub last_rtp_timestamp: Option<u32>,
}

/// Which payload format a track carries, as far as frame and keyframe logic cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    H264,
    Vp8,
    OtherVideo,
    Audio,
}

impl PayloadFormat {
    pub fn from_mime(mime: &str) -> PayloadFormat {
        let lower = mime.to_ascii_lowercase();
        match lower.as_str() {
            "video/h264" => PayloadFormat::H264,
            "video/vp8" => PayloadFormat::Vp8,
            m if m.starts_with("video/") => PayloadFormat::OtherVideo,
            _ => PayloadFormat::Audio,
        }
    }
}

/// Counts packets, frames and keyframes of one track.
#[derive(Debug)]
pub struct TrackCounter {
    format: PayloadFormat,
    stats: TrackStats,
    last_timestamp: Option<u32>,
    current_picture_is_key: bool,
}

impl TrackCounter {
    pub fn new(format: PayloadFormat) -> Self {
        TrackCounter {
            format,
            stats: TrackStats::default(),
            last_timestamp: None,
            current_picture_is_key: false,
        }
    }

    pub fn stats(&self) -> TrackStats {
        self.stats
    }

    /// Forgets the last picture timestamp (the stream switched to another SSRC with its own
    /// timestamp base); counts are kept.
    pub fn restart_pictures(&mut self) {
        self.last_timestamp = None;
        self.current_picture_is_key = false;
    }

    /// Accounts one RTP packet (payload already stripped of padding). Returns true when the
    /// packet was the first one of the track.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8], now_ms: u64) -> bool {
        let first = self.stats.first_rtp_ms.is_none();
        if first {
            self.stats.first_rtp_ms = Some(now_ms);
            self.stats.first_rtp_timestamp = Some(timestamp);
        }
        self.stats.packets += 1;
        self.stats.bytes += payload.len() as u64;
        if self.format == PayloadFormat::Audio {
            self.stats.frames += 1;
            let newer = self
                .stats
                .last_rtp_timestamp
                .is_none_or(|last| (timestamp.wrapping_sub(last) as i32) > 0);
            if newer {
                self.stats.last_rtp_timestamp = Some(timestamp);
            }
            return first;
        }
        // A picture is the set of packets sharing one timestamp; only a newer timestamp
        // starts a new one, so a reordered straggler is not counted twice.
        let is_newer = match self.last_timestamp {
            None => true,
            Some(last) => (timestamp.wrapping_sub(last) as i32) > 0,
        };
        if is_newer {
            self.stats.frames += 1;
            self.last_timestamp = Some(timestamp);
            self.stats.last_rtp_timestamp = Some(timestamp);
            self.current_picture_is_key = false;
        }
        if timestamp == self.last_timestamp.unwrap_or(timestamp)
            && !self.current_picture_is_key
            && is_keyframe_payload(self.format, payload)
        {
            self.current_picture_is_key = true;
            self.stats.keyframes += 1;
        }
        first
    }
}

/// Whether an RTP payload belongs to a key picture.
pub fn is_keyframe_payload(format: PayloadFormat, payload: &[u8]) -> bool {
    match format {
        PayloadFormat::H264 => h264_payload_has_idr(payload),
        PayloadFormat::Vp8 => vp8_payload_is_keyframe(payload),
        _ => false,
    }
}

const H264_NAL_IDR: u8 = 5;
const H264_NAL_SPS: u8 = 7;
const H264_NAL_STAP_A: u8 = 24;
const H264_NAL_FU_A: u8 = 28;

/// Whether an H.264 RTP payload (RFC 6184) carries the start of, or a whole, IDR slice.
pub fn h264_payload_has_idr(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        H264_NAL_IDR => true,
        H264_NAL_STAP_A => {
            let mut offset = 1;
            while offset + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[offset], payload[offset + 1]]) as usize;
                if payload[offset + 2] & 0x1f == H264_NAL_IDR {
                    return true;
                }
                offset += 2 + size;
            }
            false
        }
        H264_NAL_FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == H264_NAL_IDR),
        _ => false,
    }
}

/// Whether an H.264 RTP payload begins a key picture: an IDR, or the SPS/PPS sent before it.
pub fn h264_payload_starts_key_picture(payload: &[u8]) -> bool {
    if h264_payload_has_idr(payload) {
        return true;
    }
    let nal_types: Vec<u8> = match payload.first().map(|b| b & 0x1f) {
        Some(H264_NAL_STAP_A) => {
            let mut types = Vec::new();
            let mut offset = 1;
            while offset + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[offset], payload[offset + 1]]) as usize;
                types.push(payload[offset + 2] & 0x1f);
                offset += 2 + size;
            }
            types
        }
        Some(t) => vec![t],
        None => vec![],
    };
    nal_types.contains(&H264_NAL_SPS)
}

/// Whether a VP8 RTP payload (RFC 7741) is the first packet of a key frame.
pub fn vp8_payload_is_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut idx = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        idx = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            match payload.get(idx) {
                Some(p) if p & 0x80 != 0 => idx += 2,
                Some(_) => idx += 1,
                None => return false,
            }
        }
        if x & 0x40 != 0 {
            idx += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            idx += 1; // TID/Y/KEYIDX
        }
    }
    // The inverse key frame flag is bit 0 of the VP8 payload header.
    payload.get(idx).is_some_and(|h| h & 0x01 == 0)
}

/// Upper bound on access units kept since the last IDR (about 20 s at 30 fps). Beyond it
/// the buffer is dropped and the caller asks the publisher for a fresh keyframe.
const MAX_PENDING_ACCESS_UNITS: usize = 600;

/// Reassembles H.264 access units from RTP and decodes them on demand.
///
/// Decoding every frame would burn CPU nobody asked for (the machine running the tests is
/// small), so the access units since the last IDR are kept and only decoded when a snapshot
/// is requested. Decoding runs outside the lock as a [`DecodeJob`].
pub struct H264Snapshotter {
    depacketizer: H264Packet,
    current: Vec<u8>,
    current_timestamp: Option<u32>,
    current_broken: bool,
    last_sequence: Option<u16>,
    /// Access units not yet fed to the decoder; starts with an IDR when `decoder` is None.
    pending: Vec<Vec<u8>>,
    /// False until an IDR arrived (and after a loss) – P-frames without it are useless.
    have_reference: bool,
    /// Bumped whenever decoding restarts from an IDR, so a stale job's decoder is discarded.
    generation: u64,
    decoder: Option<openh264::decoder::Decoder>,
    latest: Option<RgbFrame>,
}

/// Access units to decode, taken out of an [`H264Snapshotter`].
pub struct DecodeJob {
    generation: u64,
    decoder: Option<openh264::decoder::Decoder>,
    access_units: Vec<Vec<u8>>,
}

/// What a [`DecodeJob`] produced; hand it back with [`H264Snapshotter::finish_job`].
pub struct DecodeResult {
    generation: u64,
    decoder: Option<openh264::decoder::Decoder>,
    frame: Option<RgbFrame>,
    error: Option<anyhow::Error>,
}

impl DecodeJob {
    /// Decodes the access units (CPU-bound: run it on a blocking thread).
    pub fn run(self) -> DecodeResult {
        let mut result = DecodeResult {
            generation: self.generation,
            decoder: self.decoder,
            frame: None,
            error: None,
        };
        if self.access_units.is_empty() {
            return result;
        }
        if result.decoder.is_none() {
            match openh264::decoder::Decoder::new() {
                Ok(decoder) => result.decoder = Some(decoder),
                Err(err) => {
                    result.error = Some(anyhow!("creating the H.264 decoder: {err}"));
                    return result;
                }
            }
        }
        let decoder = result.decoder.as_mut().expect("decoder was just created");
        for au in &self.access_units {
            match decoder.decode(au) {
                Ok(Some(yuv)) => result.frame = Some(yuv_to_rgb(&yuv)),
                Ok(None) => {}
                Err(err) => tracing::debug!("H.264 decode error (picture skipped): {err}"),
            }
        }
        result
    }
}

/// One decoded picture as packed RGB.
#[derive(Clone, Debug)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl RgbFrame {
    /// The RGB triple at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

impl Default for H264Snapshotter {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Snapshotter {
    pub fn new() -> Self {
        H264Snapshotter {
            depacketizer: H264Packet::default(),
            current: Vec::new(),
            current_timestamp: None,
            current_broken: false,
            last_sequence: None,
            pending: Vec::new(),
            have_reference: false,
            generation: 0,
            decoder: None,
            latest: None,
        }
    }

    /// Feeds one RTP packet (padding stripped). Returns true when the buffer overflowed
    /// and was dropped: the caller should request a keyframe.
    pub fn on_packet(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
    ) -> bool {
        let mut overflowed = false;
        if self.current_timestamp != Some(timestamp) {
            overflowed |= self.finish_access_unit();
            self.current_timestamp = Some(timestamp);
        }
        if let Some(last) = self.last_sequence {
            if sequence != last.wrapping_add(1) {
                // A hole: this picture (and what references it) cannot be decoded correctly.
                self.current_broken = true;
                self.depacketizer = H264Packet::default();
            }
        }
        self.last_sequence = Some(sequence);
        match self.depacketizer.depacketize(payload) {
            Ok(nals) => self.current.extend_from_slice(&nals),
            Err(_) => self.current_broken = true,
        }
        if marker {
            overflowed |= self.finish_access_unit();
            self.current_timestamp = None;
        }
        overflowed
    }

    /// A padding-only packet with this sequence number was dropped before reaching us: it is
    /// not a loss.
    pub fn skip_sequence(&mut self, sequence: u16) {
        if self
            .last_sequence
            .is_some_and(|last| sequence == last.wrapping_add(1))
        {
            self.last_sequence = Some(sequence);
        }
    }

    /// The stream continues on another SSRC (a simulcast layer switch): forget the packet
    /// sequence of the old one instead of mistaking the jump for a loss.
    pub fn restart_stream(&mut self) {
        self.current.clear();
        self.current_timestamp = None;
        self.current_broken = false;
        self.last_sequence = None;
        self.depacketizer = H264Packet::default();
        // P-frames of the new layer cannot use the old layer's references.
        self.have_reference = false;
        self.restart();
    }

    fn restart(&mut self) {
        self.pending.clear();
        self.decoder = None;
        self.generation += 1;
    }

    fn finish_access_unit(&mut self) -> bool {
        let au = std::mem::take(&mut self.current);
        let broken = std::mem::replace(&mut self.current_broken, false);
        if au.is_empty() {
            return false;
        }
        if broken {
            // Everything after a broken picture is garbage until the next IDR.
            self.have_reference = false;
            self.restart();
            return false;
        }
        if annexb_has_idr(&au) {
            self.restart();
            self.have_reference = true;
        }
        if !self.have_reference {
            return false;
        }
        self.pending.push(au);
        if self.pending.len() > MAX_PENDING_ACCESS_UNITS {
            self.have_reference = false;
            self.restart();
            return true;
        }
        false
    }

    /// Takes the pending access units (and the decoder state) out for decoding.
    pub fn take_job(&mut self) -> DecodeJob {
        DecodeJob {
            generation: self.generation,
            decoder: self.decoder.take(),
            access_units: std::mem::take(&mut self.pending),
        }
    }

    /// Puts a finished job back and returns the latest picture decoded so far.
    pub fn finish_job(&mut self, result: DecodeResult) -> anyhow::Result<Option<RgbFrame>> {
        if result.generation == self.generation {
            self.decoder = result.decoder;
        }
        if let Some(frame) = result.frame {
            self.latest = Some(frame);
        }
        match (result.error, &self.latest) {
            (Some(err), None) => Err(err),
            _ => Ok(self.latest.clone()),
        }
    }

    /// Decodes in place (convenient for tests; the SFU uses jobs off the lock).
    pub fn latest_frame(&mut self) -> anyhow::Result<Option<RgbFrame>> {
        let result = self.take_job().run();
        self.finish_job(result)
    }
}

fn yuv_to_rgb(yuv: &openh264::decoder::DecodedYUV<'_>) -> RgbFrame {
    use openh264::formats::YUVSource;
    let (width, height) = yuv.dimensions();
    let mut rgb = vec![0u8; width * height * 3];
    yuv.write_rgb8(&mut rgb);
    RgbFrame {
        width: width as u32,
        height: height as u32,
        rgb,
    }
}

/// Whether an Annex B byte stream contains an IDR NAL unit.
pub fn annexb_has_idr(stream: &[u8]) -> bool {
    let mut i = 0;
    while i + 3 < stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            if stream[i + 3] & 0x1f == H264_NAL_IDR {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// Writes an RGB frame as an 8-bit RGB PNG.
pub fn write_png_file(path: &Path, frame: &RgbFrame) -> anyhow::Result<()> {
    if frame.rgb.len() != (frame.width * frame.height * 3) as usize {
        bail!(
            "frame buffer has {} bytes, expected {}x{}x3",
            frame.rgb.len(),
            frame.width,
            frame.height
        );
    }
    let file = std::fs::File::create(path)
        .with_context(|| format!("creating PNG file {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), frame.width, frame.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("writing PNG header")?;
    writer
        .write_image_data(&frame.rgb)
        .context("writing PNG data")?;
    writer.finish().context("finishing PNG")?;
    Ok(())
}

/// A file name that is safe whatever the track sid contains.
pub fn png_path(dir: &Path, track_sid: &str) -> PathBuf {
    let safe: String = track_sid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{safe}.png"))
}

/// Reads a PNG written by [`write_png_file`] back (used by tests and by callers checking output).
pub fn read_png_rgb(path: &Path) -> anyhow::Result<RgbFrame> {
    let file =
        std::fs::File::open(path).with_context(|| format!("opening PNG {}", path.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().context("reading PNG header")?;
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .ok_or_else(|| anyhow!("PNG too large"))?
    ];
    let info = reader.next_frame(&mut buf).context("reading PNG data")?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        bail!(
            "PNG is {:?}/{:?}, expected 8-bit RGB",
            info.color_type,
            info.bit_depth
        );
    }
    buf.truncate(info.buffer_size());
    Ok(RgbFrame {
        width: info.width,
        height: info.height,
        rgb: buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_idr_detection_covers_single_stap_a_and_fu_a() {
        assert!(h264_payload_has_idr(&[0x65, 0x88]));
        assert!(!h264_payload_has_idr(&[0x41, 0x9a]));
        // STAP-A: SPS (len 2), PPS (len 2), IDR (len 2)
        let stap = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88];
        assert!(h264_payload_has_idr(&stap));
        let stap_no_idr = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        assert!(!h264_payload_has_idr(&stap_no_idr));
        // FU-A start of an IDR, and a middle fragment of one.
        assert!(h264_payload_has_idr(&[0x7c, 0x85, 0x00]));
        assert!(!h264_payload_has_idr(&[0x7c, 0x05, 0x00]));
        assert!(!h264_payload_has_idr(&[]));
    }

    #[test]
    fn vp8_keyframe_detection_reads_the_descriptor() {
        // X=1, S=1, PID=0; I=1 with 15-bit picture id; payload header P=0 → key frame.
        assert!(vp8_payload_is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x10]));
        // Same, P=1 → inter frame.
        assert!(!vp8_payload_is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x11]));
        // Not the start of partition 0.
        assert!(!vp8_payload_is_keyframe(&[0x80, 0x80, 0x81, 0x23, 0x10]));
        // Minimal descriptor, key frame.
        assert!(vp8_payload_is_keyframe(&[0x10, 0x10]));
    }

    #[test]
    fn counter_counts_pictures_by_timestamp_and_keyframes_once() {
        let mut counter = TrackCounter::new(PayloadFormat::H264);
        assert!(counter.on_packet(1000, &[0x7c, 0x85, 1, 2], 5));
        assert!(!counter.on_packet(1000, &[0x7c, 0x45, 3], 6));
        counter.on_packet(4000, &[0x41, 1], 7);
        counter.on_packet(2000, &[0x41, 1], 8); // late straggler: no new picture
        counter.on_packet(7000, &[0x65, 1], 9);
        let stats = counter.stats();
        assert_eq!(stats.packets, 5);
        assert_eq!(stats.frames, 3);
        assert_eq!(stats.keyframes, 2);
        assert_eq!(stats.bytes, 4 + 3 + 2 + 2 + 2);
        assert_eq!(stats.first_rtp_ms, Some(5));
        // The straggler does not move the newest timestamp back.
        assert_eq!(
            (stats.first_rtp_timestamp, stats.last_rtp_timestamp),
            (Some(1000), Some(7000))
        );

        let mut audio = TrackCounter::new(PayloadFormat::from_mime("audio/opus"));
        audio.on_packet(1, &[1, 2, 3], 1);
        audio.on_packet(1, &[1, 2, 3], 2);
        audio.on_packet(961, &[1, 2, 3], 3);
        audio.on_packet(u32::MAX, &[1, 2, 3], 4); // older, across the wrap
        assert_eq!(audio.stats().frames, 4);
        assert_eq!(audio.stats().keyframes, 0);
        assert_eq!(audio.stats().last_rtp_timestamp, Some(961));
    }

    #[test]
    fn annexb_idr_scan() {
        assert!(annexb_has_idr(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 9]));
        assert!(!annexb_has_idr(&[0, 0, 0, 1, 0x41, 1, 2, 3]));
    }
}
