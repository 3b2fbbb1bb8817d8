//! Per-frame timing of a media pipeline: capture → RTP latency and encoder CPU time per frame.
//!
//! The benchmark (tests/bench) and a board owner read these from the periodic `media_stats`
//! room event instead of a profiler. Recording is cheap enough for every frame: a latency is
//! one `u32` written into a fixed ring under an uncontended lock (the forwarder is its only
//! writer), and CPU time is two `clock_gettime` calls per encode on the capture thread.
//! Percentiles are computed only when a report takes the window, every few seconds.
//!
//! `roomcast encoder-test --bench` uses the same window for capture → coded latency and encoder
//! CPU, next to the whole process's CPU ([`process_cpu_time`]).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latencies kept per report window: 34 s of 30 fps video, 20 s of 20 ms audio. A longer window
/// keeps its newest samples (the count still says how many frames it had).
pub const WINDOW: usize = 1024;

/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID): wall time would count the
/// waits for the next frame and the time other threads of a 2-core board take.
pub fn thread_cpu_time() -> Duration {
    super::clock::read_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time the whole process has used (getrusage(RUSAGE_SELF)): every thread, split into user
/// time and system time, which holds what drivers do inside its system calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessCpu {
    pub user: Duration,
    pub system: Duration,
}

impl ProcessCpu {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// The CPU used between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

pub fn process_cpu_time() -> ProcessCpu {
    // SAFETY: rusage is plain old data (integers and timevals); all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct we own; RUSAGE_SELF always exists.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    debug_assert_eq!(rc, 0, "getrusage(RUSAGE_SELF)");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    ProcessCpu {
        user: time(usage.ru_utime),
        system: time(usage.ru_stime),
    }
}

/// One pipeline's timing since the last report. Shared by the capture thread (encode CPU) and
/// the track's forwarder (latency).
#[derive(Debug, Default)]
pub struct FrameTiming {
    /// Capture → handed to the RTP track, µs.
    latencies: Mutex<LatencyWindow>,
    encode_cpu_ns: AtomicU64,
    encoded_frames: AtomicU64,
    /// Payload bytes of the frames sent since the last report: what the encoder really
    /// produced, next to the target it was given.
    bytes_sent: AtomicU64,
}

#[derive(Debug, Default)]
struct LatencyWindow {
    ring: heapless::HistoryBuffer<u32, WINDOW>,
    count: u64,
}

/// What a report window saw.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TimingReport {
    /// Frames handed to the RTP track in the window.
    pub frames_sent: u64,
    /// Encoded payload bytes of those frames (RTP and SRTP overhead not counted); the event
    /// shows them as `sent_bps`.
    #[serde(skip)]
    pub bytes_sent: u64,
    /// Capture → RTP latency percentiles, ms (µs resolution); `None` when no frame went out.
    pub capture_to_rtp_ms: Option<Percentiles>,
    /// Frames that went into the encoder in the window.
    pub frames_encoded: u64,
    /// Encoder CPU time per frame, ms; `None` when nothing was encoded.
    pub encode_cpu_ms_per_frame: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl FrameTiming {
    /// A frame of `bytes` captured `latency` ago has just been written to its RTP track (in
    /// encoder-test `--bench`: has just come out of the encoder).
    pub fn record_sent(&self, latency: Duration, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut window = self.latencies.lock().unwrap();
        window.ring.write(us);
        window.count += 1;
    }

    /// The encoder took `cpu` of thread CPU time for `frames` frames.
    pub fn record_encode(&self, cpu: Duration, frames: u64) {
        let ns = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        self.encode_cpu_ns.fetch_add(ns, Ordering::Relaxed);
        self.encoded_frames.fetch_add(frames, Ordering::Relaxed);
    }

    /// The window so far, which starts a new one.
    pub fn take_report(&self) -> TimingReport {
        let (mut latencies, frames_sent) = {
            let mut window = self.latencies.lock().unwrap();
            let taken: Vec<u32> = window.ring.as_slice().to_vec();
            window.ring.clear();
            (taken, std::mem::take(&mut window.count))
        };
        let cpu_ns = self.encode_cpu_ns.swap(0, Ordering::Relaxed);
        let frames_encoded = self.encoded_frames.swap(0, Ordering::Relaxed);
        latencies.sort_unstable();
        TimingReport {
            frames_sent,
            bytes_sent: self.bytes_sent.swap(0, Ordering::Relaxed),
            capture_to_rtp_ms: percentiles(&latencies),
            frames_encoded,
            encode_cpu_ms_per_frame: (frames_encoded > 0)
                .then(|| round3(cpu_ns as f64 / frames_encoded as f64 / 1e6)),
        }
    }
}

/// Nearest-rank percentiles (p50, p99, max) of sorted µs values, in ms.
fn percentiles(sorted_us: &[u32]) -> Option<Percentiles> {
    let last = *sorted_us.last()?;
    let rank = |p: usize| {
        // Nearest rank: the smallest value with at least p% of the samples at or below it.
        let i = (p * sorted_us.len()).div_ceil(100).max(1) - 1;
        sorted_us[i]
    };
    let ms = |us: u32| round3(f64::from(us) / 1000.0);
    Some(Percentiles {
        p50: ms(rank(50)),
        p99: ms(rank(99)),
        max: ms(last),
    })
}

/// Rounded to three decimals: the figures' resolution in reports (µs for values in ms).
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_window_and_a_report_starts_a_new_one() {
        let timing = FrameTiming::default();
        // 1..=100 ms, out of order.
        for ms in (1..=100u64).rev() {
            timing.record_sent(Duration::from_millis(ms), 10);
        }
        timing.record_encode(Duration::from_millis(30), 10);
        let report = timing.take_report();
        assert_eq!(report.frames_sent, 100);
        assert_eq!(report.bytes_sent, 1000);
        assert_eq!(
            report.capture_to_rtp_ms,
            Some(Percentiles {
                p50: 50.0,
                p99: 99.0,
                max: 100.0
            })
        );
        assert_eq!(report.frames_encoded, 10);
        assert_eq!(report.encode_cpu_ms_per_frame, Some(3.0));

        let empty = timing.take_report();
        assert_eq!(empty.frames_sent, 0);
        assert_eq!(empty.bytes_sent, 0);
        assert_eq!(empty.capture_to_rtp_ms, None);
        assert_eq!(empty.encode_cpu_ms_per_frame, None);
    }

    #[test]
    fn a_window_longer_than_the_ring_keeps_its_newest_latencies_and_counts_every_frame() {
        let timing = FrameTiming::default();
        for _ in 0..WINDOW {
            timing.record_sent(Duration::from_millis(500), 1);
        }
        for _ in 0..WINDOW {
            timing.record_sent(Duration::from_micros(1_500), 1);
        }
        let report = timing.take_report();
        assert_eq!(report.frames_sent, 2 * WINDOW as u64);
        let p = report.capture_to_rtp_ms.unwrap();
        assert_eq!((p.p50, p.p99, p.max), (1.5, 1.5, 1.5));
    }

    #[test]
    fn one_sample_is_every_percentile() {
        assert_eq!(
            percentiles(&[2_345]),
            Some(Percentiles {
                p50: 2.345,
                p99: 2.345,
                max: 2.345
            })
        );
    }

    /// Busy work the optimizer cannot drop, until `moved` says the clock under test moved or
    /// two seconds of wall time pass (a clock that never moves fails the test, not hangs it).
    fn work_until(moved: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut x = 0u64;
        while !moved() && std::time::Instant::now() < deadline {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    #[test]
    fn process_cpu_time_counts_work_done_by_any_thread() {
        let before = process_cpu_time();
        // getrusage's resolution can be a scheduler tick: work on another thread until it moves.
        std::thread::spawn(move || work_until(|| process_cpu_time().total() != before.total()))
            .join()
            .unwrap();
        let used = process_cpu_time().since(before);
        assert!(used.total() > Duration::ZERO);
        assert_eq!(used.total(), used.user + used.system);
    }

    #[test]
    fn thread_cpu_time_counts_work_done_on_this_thread() {
        let before = thread_cpu_time();
        // Its resolution is 1 ns on Linux, but coarse tick accounting could make a pass read 0.
        work_until(|| thread_cpu_time() != before);
        assert!(thread_cpu_time() > before);
    }
}
