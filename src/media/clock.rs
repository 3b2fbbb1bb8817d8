//! Capture time → RTP time.
//!
//! Every frame carries the instant it was captured, as a `Duration` on CLOCK_MONOTONIC: the clock
//! V4L2 stamps buffers with (`V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`) and ALSA reports with
//! `htimestamp` on a monotonic PCM. Synthetic sources read the same clock, so every source in
//! the process shares one time base.
//!
//! An RTP timestamp is then a pure function of the capture time: ticks since one epoch shared by
//! audio and video, at the track's clock rate, plus the track's random initial offset (RFC 3550
//! §5.1), modulo 2^32. Nothing is ever summed, so rounding cannot accumulate: frame *n* at 30 fps
//! is always 3000·n ticks from frame 0, where a running sum of rounded 33,333 µs durations would
//! add 2,999 per frame and lose a second every hour. Audio and video computed from the same epoch
//! stay in step with each other for the same reason.
use std::time::Duration;

/// RTP clock rate of H.264 video (RFC 6184).
pub const VIDEO_RATE: u32 = 90_000;
/// RTP clock rate of Opus, whatever the capture rate (RFC 7587).
pub const AUDIO_RATE: u32 = 48_000;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Now on CLOCK_MONOTONIC, as V4L2 and ALSA stamp their buffers.
pub fn monotonic_now() -> Duration {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// `clock_gettime` for a clock that always exists on Linux (CLOCK_MONOTONIC, and the calling
/// thread's CPU clock since 2.6.12).
pub(crate) fn read_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime({clock})");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The one epoch every track's RTP time counts from: the first time any track asked for it.
/// One per process, so audio and video (and a track restarted after a reconnect) share it.
pub fn session_epoch() -> Duration {
    static EPOCH: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(monotonic_now)
}

/// Whole clock ticks in `d` at `rate` Hz, rounded to the nearest tick. Exact integer arithmetic
/// (u128 nanoseconds), so the same capture time always gives the same tick.
pub fn ticks(d: Duration, rate: u32) -> u64 {
    let nanos = d.as_nanos();
    ((nanos * rate as u128 + NANOS_PER_SEC / 2) / NANOS_PER_SEC) as u64
}

/// Maps capture timestamps of one track onto its RTP timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpClock {
    rate: u32,
    epoch: Duration,
    offset: u32,
}

impl RtpClock {
    /// `epoch` is shared by every track of the session; `offset` is this track's random initial
    /// RTP timestamp.
    pub fn new(rate: u32, epoch: Duration, offset: u32) -> Self {
        assert!(rate > 0, "RTP clock rate must be positive");
        Self {
            rate,
            epoch,
            offset,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The RTP timestamp of a frame captured at `capture` (CLOCK_MONOTONIC). Wraps modulo 2^32
    /// as RTP does (every 13.3 h at 90 kHz, 24.9 h at 48 kHz). A frame captured a little before
    /// the epoch (a device buffer already filled when the track started) maps below the offset
    /// instead of saturating, so timestamps stay monotonic across the epoch.
    pub fn rtp_timestamp(&self, capture: Duration) -> u32 {
        if capture >= self.epoch {
            let t = ticks(capture - self.epoch, self.rate);
            self.offset.wrapping_add(t as u32)
        } else {
            let t = ticks(self.epoch - capture, self.rate);
            self.offset.wrapping_sub(t as u32)
        }
    }
}

/// Signed distance `b - a` between two RTP timestamps, correct across the 2^32 wrap as long as
/// they are less than 2^31 ticks apart (RFC 3550 serial arithmetic).
pub fn rtp_diff(a: u32, b: u32) -> i64 {
    b.wrapping_sub(a) as i32 as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capture time of frame `n` at `fps`, exact to the nanosecond (what an ideal camera reports).
    fn frame_time(start: Duration, n: u64, fps: u64) -> Duration {
        start + Duration::from_nanos((n as u128 * NANOS_PER_SEC / fps as u128) as u64)
    }

    #[test]
    fn thirty_fps_for_ten_hours_has_no_drift() {
        let epoch = Duration::from_secs(12_345);
        let clock = RtpClock::new(VIDEO_RATE, epoch, 0x1234_5678);
        let first = clock.rtp_timestamp(epoch);
        let frames = 30 * 3600 * 10;
        let mut previous = first;
        for n in 1..=frames {
            let ts = clock.rtp_timestamp(frame_time(epoch, n, 30));
            // Every step is exactly one frame of 90 kHz, even across the 2^32 wrap.
            assert_eq!(rtp_diff(previous, ts), 3000, "frame {n}");
            previous = ts;
        }
        // Absolute position: 10 h of 90 kHz from the first frame, modulo 2^32.
        let expected = 0x1234_5678u32.wrapping_add((10 * 3600 * 90_000u64) as u32);
        assert_eq!(previous, expected);
    }

    #[test]
    fn the_old_running_sum_drifts_and_the_clock_does_not() {
        // What summing `(33_333 µs * 90 kHz) as u32` per frame did: 2,999 ticks a frame.
        let nominal = Duration::from_micros(1_000_000 / 30);
        let per_frame = (nominal.as_secs_f64() * VIDEO_RATE as f64) as u32;
        assert_eq!(per_frame, 2999);
        let frames_per_hour = 30 * 3600u64;
        let summed = per_frame as u64 * frames_per_hour;
        let clock = RtpClock::new(VIDEO_RATE, Duration::ZERO, 0);
        let mapped = clock.rtp_timestamp(frame_time(Duration::ZERO, frames_per_hour, 30));
        assert_eq!(mapped as u64, 3600 * 90_000);
        let drift_seconds = (mapped as u64 - summed) as f64 / VIDEO_RATE as f64;
        assert!(drift_seconds > 1.0, "the old sum drifted {drift_seconds} s");
    }

    #[test]
    fn microsecond_truncated_timestamps_stay_within_a_tick_for_hours() {
        // Drivers such as bcm2835 truncate timestamps to µs: each frame's RTP time must still
        // be within one tick of the ideal, however long the stream runs.
        let epoch = Duration::from_secs(7);
        let clock = RtpClock::new(VIDEO_RATE, epoch, 0);
        for n in (0..30 * 3600 * 6u64).step_by(997) {
            let exact = frame_time(epoch, n, 30);
            let truncated = Duration::from_micros(exact.as_micros() as u64);
            let ts = clock.rtp_timestamp(truncated);
            let ideal = (n * 3000) as u32;
            assert!(rtp_diff(ideal, ts).abs() <= 1, "frame {n}: {ts} vs {ideal}");
        }
    }

    #[test]
    fn audio_20ms_frames_for_hours_are_exactly_960_ticks() {
        let epoch = Duration::from_secs(1);
        let clock = RtpClock::new(AUDIO_RATE, epoch, u32::MAX - 5000);
        let mut previous = clock.rtp_timestamp(epoch);
        for n in 1..=(50 * 3600 * 30u64) {
            let ts = clock.rtp_timestamp(epoch + Duration::from_millis(20 * n));
            assert_eq!(rtp_diff(previous, ts), 960, "frame {n}");
            previous = ts;
        }
    }

    #[test]
    fn wraps_modulo_2_pow_32() {
        let clock = RtpClock::new(VIDEO_RATE, Duration::ZERO, u32::MAX - 89_999);
        assert_eq!(clock.rtp_timestamp(Duration::ZERO), u32::MAX - 89_999);
        // One second later the timestamp has wrapped to exactly 0.
        assert_eq!(clock.rtp_timestamp(Duration::from_secs(1)), 0);
        assert_eq!(clock.rtp_timestamp(Duration::from_secs(2)), 90_000);
        // A full 2^32 ticks (~13.25 h) lands back on the offset.
        let period = Duration::from_nanos(((1u128 << 32) * NANOS_PER_SEC / 90_000) as u64);
        let back = clock.rtp_timestamp(period);
        assert!(rtp_diff(u32::MAX - 89_999, back).abs() <= 1);
    }

    #[test]
    fn capture_before_the_epoch_stays_monotonic() {
        let epoch = Duration::from_secs(100);
        let clock = RtpClock::new(VIDEO_RATE, epoch, 10);
        let before = clock.rtp_timestamp(epoch - Duration::from_millis(1));
        let at = clock.rtp_timestamp(epoch);
        assert_eq!(at, 10);
        assert_eq!(rtp_diff(before, at), 90);
    }

    #[test]
    fn audio_and_video_share_the_epoch_and_stay_in_sync() {
        let epoch = Duration::from_secs(50);
        let video = RtpClock::new(VIDEO_RATE, epoch, 777);
        let audio = RtpClock::new(AUDIO_RATE, epoch, 4_000_000_000);
        // After 5 h, a video frame and an audio frame captured at the same instant are at the
        // same media time on their own clocks (each exactly the rounded tick count since the
        // shared epoch, modulo 2^32).
        let t = epoch + Duration::from_secs(5 * 3600) + Duration::from_micros(123_456);
        let v_expected = ticks(t - epoch, VIDEO_RATE) as u32;
        let a_expected = ticks(t - epoch, AUDIO_RATE) as u32;
        assert_eq!(video.rtp_timestamp(t).wrapping_sub(777), v_expected);
        assert_eq!(
            audio.rtp_timestamp(t).wrapping_sub(4_000_000_000),
            a_expected
        );
        // Within one hour (no 2^31 ambiguity) compare media time directly.
        let t = epoch + Duration::from_millis(3_599_987);
        let v = rtp_diff(777, video.rtp_timestamp(t)) as f64 / VIDEO_RATE as f64;
        let a = rtp_diff(4_000_000_000, audio.rtp_timestamp(t)) as f64 / AUDIO_RATE as f64;
        assert!(
            (v - a).abs() < 1.0 / AUDIO_RATE as f64,
            "video {v} s, audio {a} s"
        );
    }

    #[test]
    fn ticks_round_to_nearest() {
        assert_eq!(ticks(Duration::from_nanos(5_555), 90_000), 0);
        assert_eq!(ticks(Duration::from_nanos(5_556), 90_000), 1);
        assert_eq!(ticks(Duration::from_millis(20), 48_000), 960);
    }

    #[test]
    fn monotonic_now_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(b >= a);
        assert!(session_epoch() <= monotonic_now());
    }
}
