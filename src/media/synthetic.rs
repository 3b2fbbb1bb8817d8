//! Synthetic camera and microphone: a test pattern whose pixel values a test can check after a
//! round trip through H.264, and a sine tone.
use super::clock::monotonic_now;
use super::{
    AudioFrame, AudioSource, PixelFormat, StopSignal, VideoFormat, VideoFrame, VideoSource,
};
use std::time::Duration;

/// 75 % colour bars, left to right (RGB).
pub const BARS: [[u8; 3]; 8] = [
    [191, 191, 191], // white
    [191, 191, 0],   // yellow
    [0, 191, 191],   // cyan
    [0, 191, 0],     // green
    [191, 0, 191],   // magenta
    [191, 0, 0],     // red
    [0, 0, 191],     // blue
    [16, 16, 16],    // black
];
/// Background of the bottom band, where the moving block runs.
pub const BAND: [u8; 3] = [64, 64, 64];
/// The moving block.
pub const BLOCK: [u8; 3] = [235, 235, 235];

/// Colour bars over the top three quarters; in the bottom quarter a white block slides across a
/// grey band, one block width per second, so consecutive frames differ and the encoder has real
/// motion to code.
pub struct TestPattern {
    width: u32,
    height: u32,
    fps: u32,
    frame_index: u64,
    /// CLOCK_MONOTONIC time of frame 0.
    started: Option<Duration>,
    background: Vec<u8>,
    /// Fill the block with fresh noise every frame (see [`TestPattern::busy`]).
    busy: bool,
}

/// The pixel a decoded test-pattern frame should show at `(x, y)`, or `None` where the moving
/// block may be or where a bar edge blurs under compression.
pub fn expected_pixel(x: u32, y: u32, width: u32, height: u32) -> Option<[u8; 3]> {
    let bar_width = width / 8;
    let band_top = height * 3 / 4;
    if y >= band_top || bar_width == 0 {
        return None;
    }
    let bar = (x / bar_width).min(7) as usize;
    let offset = x % bar_width;
    // Stay clear of the edges, where the chroma is subsampled and the coder smears.
    if offset < bar_width / 4 || offset > bar_width * 3 / 4 || y < 4 || y + 4 > band_top {
        return None;
    }
    Some(BARS[bar])
}

/// Compare a decoded RGB picture (row-major, 3 bytes per pixel) with the test pattern.
/// Returns the number of sampled pixels and an error naming the first mismatch.
pub fn check_rgb(rgb: &[u8], width: u32, height: u32, tolerance: u8) -> Result<usize, String> {
    if rgb.len() < (width * height * 3) as usize {
        return Err(format!(
            "picture has {} bytes, expected {}",
            rgb.len(),
            width * height * 3
        ));
    }
    let mut checked = 0;
    for y in (0..height).step_by(7) {
        for x in (0..width).step_by(5) {
            let Some(want) = expected_pixel(x, y, width, height) else {
                continue;
            };
            let at = ((y * width + x) * 3) as usize;
            let got = [rgb[at], rgb[at + 1], rgb[at + 2]];
            for c in 0..3 {
                if got[c].abs_diff(want[c]) > tolerance {
                    return Err(format!("pixel ({x},{y}) is {got:?}, the test pattern has {want:?} (tolerance {tolerance})"));
                }
            }
            checked += 1;
        }
    }
    if checked == 0 {
        return Err("no pixel of the picture could be compared".into());
    }
    Ok(checked)
}

/// BT.601 limited-range RGB → YUV, the matrix H.264 decoders assume by default.
pub fn rgb_to_yuv([r, g, b]: [u8; 3]) -> (u8, u8, u8) {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    (
        y.round().clamp(0.0, 255.0) as u8,
        u.round().clamp(0.0, 255.0) as u8,
        v.round().clamp(0.0, 255.0) as u8,
    )
}

/// A packed I420 picture (even `width`×`height`) whose pixel at `(x, y)` is `colour(x, y)` (RGB);
/// chroma is taken at the top-left pixel of each 2×2 block.
pub fn paint_i420(width: u32, height: u32, colour: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0u8; w * h * 3 / 2];
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(w * h / 4);
    for y in 0..h {
        for x in 0..w {
            let (luma, u, v) = rgb_to_yuv(colour(x as u32, y as u32));
            y_plane[y * w + x] = luma;
            if x % 2 == 0 && y % 2 == 0 {
                u_plane[(y / 2) * (w / 2) + x / 2] = u;
                v_plane[(y / 2) * (w / 2) + x / 2] = v;
            }
        }
    }
    out
}

impl TestPattern {
    pub fn new(width: u32, height: u32, fps: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            width >= 64 && height >= 64 && width % 2 == 0 && height % 2 == 0,
            "[video] width/height {width}x{height}: the test pattern needs even sizes of at least 64x64 (I420 halves both)"
        );
        anyhow::ensure!((1..=60).contains(&fps), "[video] fps = {fps}: use 1..=60");
        let mut pattern = Self {
            width,
            height,
            fps,
            frame_index: 0,
            started: None,
            background: Vec::new(),
            busy: false,
        };
        pattern.background = pattern.render_background();
        Ok(pattern)
    }

    /// The busy variant (`[video] device = "test-pattern-busy"`): the moving block carries new
    /// noise in every frame, which no encoder can predict, so the stream uses the bitrate it is
    /// given instead of the few kbit/s the plain pattern needs. For measuring what an uplink
    /// carries and watching the bitrate follow it; the bars stay as they are.
    pub fn busy(mut self) -> Self {
        self.busy = true;
        self
    }

    fn colour_at(&self, x: u32, y: u32) -> [u8; 3] {
        if y >= self.height * 3 / 4 {
            BAND
        } else {
            BARS[(x / (self.width / 8)).min(7) as usize]
        }
    }

    fn render_background(&self) -> Vec<u8> {
        paint_i420(self.width, self.height, |x, y| self.colour_at(x, y))
    }

    /// When frame `index` is due after frame 0: exact nanoseconds, never a sum of rounded
    /// frame durations.
    pub fn frame_offset(&self, index: u64) -> Duration {
        Duration::from_nanos((index as u128 * 1_000_000_000 / self.fps as u128) as u64)
    }

    /// Render frame number `index` (pure: tests use it without waiting). Its capture time is
    /// its offset from frame 0; `next_frame` adds the monotonic time frame 0 was due.
    pub fn render(&self, index: u64) -> VideoFrame {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut i420 = self.background.clone();
        let block = (h / 8).max(16) & !1;
        let band_top = h * 3 / 4;
        let top = band_top + (h - band_top - block) / 2;
        let travel = (w - block) as u64;
        let left = ((index * block as u64 / self.fps as u64) % travel.max(1)) as usize & !1;
        let (luma, u, v) = rgb_to_yuv(BLOCK);
        // xorshift64, seeded by the frame number: fresh in every frame, the same on every run.
        let mut noise = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for y in top..top + block {
            let row = &mut i420[y * w + left..y * w + left + block];
            if self.busy {
                for px in row {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    *px = (noise >> 56) as u8;
                }
            } else {
                row.fill(luma);
            }
        }
        let (u_off, v_off) = (w * h, w * h + w * h / 4);
        for y in (top / 2)..(top + block) / 2 {
            let row = y * (w / 2);
            i420[u_off + row + left / 2..u_off + row + (left + block) / 2].fill(u);
            i420[v_off + row + left / 2..v_off + row + (left + block) / 2].fill(v);
        }
        VideoFrame::i420(
            self.width,
            self.height,
            i420.into(),
            self.frame_offset(index),
        )
        .expect("the test pattern renders whole I420 pictures")
    }
}

impl VideoSource for TestPattern {
    fn format(&self) -> VideoFormat {
        VideoFormat {
            width: self.width,
            height: self.height,
            fps: self.fps,
            pixel: PixelFormat::Yu12,
        }
    }

    /// Paces itself like a camera: frame n is handed over when it is due, stamped with that
    /// monotonic instant, as a driver stamps the buffer when the sensor finishes it.
    fn next_frame(&mut self, stop: &StopSignal) -> anyhow::Result<Option<VideoFrame>> {
        let started = *self.started.get_or_insert_with(monotonic_now);
        let mut frame = self.render(self.frame_index);
        frame.capture += started;
        if !stop.wait_until(frame.capture) {
            return Ok(None);
        }
        self.frame_index += 1;
        Ok(Some(frame))
    }
}

/// A 440 Hz sine at -10 dBFS in 20 ms frames.
pub struct Tone {
    rate: u32,
    channels: u16,
    sample_index: u64,
    /// CLOCK_MONOTONIC time of the first sample.
    started: Option<Duration>,
}

pub const TONE_HZ: f64 = 440.0;

impl Tone {
    pub fn new(rate: u32, channels: u16) -> anyhow::Result<Self> {
        anyhow::ensure!(
            [8000, 12000, 16000, 24000, 48000].contains(&rate),
            "[audio] rate = {rate}: Opus takes 8000, 12000, 16000, 24000 or 48000"
        );
        anyhow::ensure!(
            (1..=2).contains(&channels),
            "[audio] channels = {channels}: use 1 or 2"
        );
        Ok(Self {
            rate,
            channels,
            sample_index: 0,
            started: None,
        })
    }
}

impl AudioSource for Tone {
    fn format(&self) -> (u32, u16) {
        (self.rate, self.channels)
    }

    /// Paced in real time, 20 ms a frame, stamped with the monotonic time of its first sample.
    fn next_frame(&mut self, stop: &StopSignal) -> anyhow::Result<Option<AudioFrame>> {
        let started = *self.started.get_or_insert_with(monotonic_now);
        let per_frame = self.rate as u64 / 50;
        let mut samples = Vec::with_capacity((per_frame * self.channels as u64) as usize);
        for i in 0..per_frame {
            let t = (self.sample_index + i) as f64 / self.rate as f64;
            let value =
                (0.316 * i16::MAX as f64 * (2.0 * std::f64::consts::PI * TONE_HZ * t).sin()) as i16;
            for _ in 0..self.channels {
                samples.push(value);
            }
        }
        let offset = |samples: u64| {
            Duration::from_nanos((samples as u128 * 1_000_000_000 / self.rate as u128) as u64)
        };
        let capture = started + offset(self.sample_index);
        if !stop.wait_until(capture) {
            return Ok(None);
        }
        self.sample_index += per_frame;
        Ok(Some(AudioFrame {
            rate: self.rate,
            channels: self.channels,
            samples,
            capture,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i420_to_rgb(frame: &VideoFrame) -> Vec<u8> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let [yp, up, vp] = [0, 1, 2].map(|i| &frame.planes[i]);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let luma = yp.data[y * yp.stride + x] as f32 - 16.0;
                let u = up.data[(y / 2) * up.stride + x / 2] as f32 - 128.0;
                let v = vp.data[(y / 2) * vp.stride + x / 2] as f32 - 128.0;
                let r = 1.164 * luma + 1.596 * v;
                let g = 1.164 * luma - 0.392 * u - 0.813 * v;
                let b = 1.164 * luma + 2.017 * u;
                rgb.extend([r, g, b].map(|c| c.round().clamp(0.0, 255.0) as u8));
            }
        }
        rgb
    }

    #[test]
    fn pattern_round_trips_through_yuv_and_matches_its_checker() {
        let pattern = TestPattern::new(320, 240, 30).unwrap();
        let frame = pattern.render(17);
        let checked = check_rgb(&i420_to_rgb(&frame), 320, 240, 6).unwrap();
        assert!(checked > 100, "only {checked} pixels compared");
    }

    #[test]
    fn checker_rejects_a_grey_picture() {
        let grey = vec![128u8; 320 * 240 * 3];
        assert!(check_rgb(&grey, 320, 240, 40).is_err());
    }

    #[test]
    fn the_block_moves_between_frames() {
        let pattern = TestPattern::new(320, 240, 30).unwrap();
        assert_ne!(pattern.render(0).planes[0], pattern.render(15).planes[0]);
    }

    #[test]
    fn the_busy_pattern_keeps_its_bars_and_fills_the_block_with_new_noise_each_frame() {
        let plain = TestPattern::new(320, 240, 30).unwrap();
        let busy = TestPattern::new(320, 240, 30).unwrap().busy();
        let (a, b) = (busy.render(3), busy.render(4));
        check_rgb(&i420_to_rgb(&a), 320, 240, 6).unwrap();
        // Noise, not a flat block: the luma across the block's rows takes many values, and
        // differently in consecutive frames.
        let block_row = |f: &VideoFrame| f.planes[0].data[210 * 320..211 * 320].to_vec();
        let distinct: std::collections::HashSet<u8> = block_row(&a).into_iter().collect();
        assert!(distinct.len() > 20, "{} distinct values", distinct.len());
        assert!(block_row(&a) != block_row(&b), "the same noise twice");
        assert!(block_row(&plain.render(3)) != block_row(&a));
        assert!(
            busy.render(3).planes[0].data == a.planes[0].data,
            "the same frame renders the same"
        );
    }

    #[test]
    fn capture_times_are_exact_and_do_not_drift() {
        let pattern = TestPattern::new(64, 64, 30).unwrap();
        assert_eq!(pattern.render(0).capture, Duration::ZERO);
        assert_eq!(pattern.render(1).capture, Duration::from_nanos(33_333_333));
        // One hour in: exactly 3600 s, not 3600 s minus 108,000 rounded-away microseconds.
        assert_eq!(pattern.render(30 * 3600).capture, Duration::from_secs(3600));
        pattern.render(5).validate().unwrap();
    }

    #[test]
    fn a_stopped_source_returns_none_without_waiting_for_its_frame() {
        // 1 fps: the second frame is due a second after the first.
        let mut pattern = TestPattern::new(64, 64, 1).unwrap();
        let stop = StopSignal::new();
        let first = pattern.next_frame(&stop).unwrap().unwrap();
        assert!(first.capture <= monotonic_now());
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = monotonic_now();
                let next = pattern.next_frame(&stop).unwrap();
                (next.is_none(), monotonic_now() - started)
            })
        };
        stop.stop();
        let (stopped, waited) = waiter.join().unwrap();
        assert!(stopped, "a stopped source hands over no frame");
        assert!(waited < Duration::from_millis(900), "waited {waited:?}");
    }

    #[test]
    fn tone_frames_are_20_ms() {
        let mut tone = Tone::new(48000, 1).unwrap();
        let stop = StopSignal::new();
        let frame = tone.next_frame(&stop).unwrap().unwrap();
        let second = tone.next_frame(&stop).unwrap().unwrap();
        assert_eq!(second.capture - frame.capture, Duration::from_millis(20));
        assert_eq!(frame.samples.len(), 960);
        assert_eq!(frame.duration(), Duration::from_millis(20));
        assert!(frame.samples.iter().any(|s| s.unsigned_abs() > 8000));
    }
}
