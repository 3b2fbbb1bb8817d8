//! Retry delays for the supervisor: the first retry is immediate, then jittered exponential
//! delays up to a cap of a few seconds, then a steady slow rate once a failure streak has gone on
//! for a while. Never a last attempt.
//!
//! Deterministic: the jitter comes from a [`SplitMix64`] seeded by the caller, so a test with a
//! fixed seed sees the same delays every run. Jitter spreads a fleet of boards that lost the same
//! server, so they do not all knock at the same instant when it comes back.
use std::time::{Duration, Instant};

/// The shape of one kind of backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The second attempt's delay before jitter; it doubles with each further failure.
    pub initial: Duration,
    /// Cap of the exponential phase.
    pub max: Duration,
    /// Once a streak has lasted this long (from its first attempt), delays settle to `steady`.
    pub fast_phase: Duration,
    /// The settled delay, jittered by ±[`STEADY_JITTER_PERCENT`].
    pub steady: Duration,
}

/// Jitter of the steady phase, in percent either side of `steady`.
pub const STEADY_JITTER_PERCENT: u64 = 20;

impl BackoffPolicy {
    /// Joins and resumes: 0, then 125–250 ms, 250–500 ms, … capped at 1–2 s for two minutes,
    /// then 4–6 s for as long as it takes. A short steady rate, because the acceptance target is
    /// media back within seconds of a link's return even when no netlink event says so.
    pub const CONNECTION: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(2),
        fast_phase: Duration::from_secs(120),
        steady: Duration::from_secs(5),
    };

    /// Restarting a failed capture or encoder: 0, then 250–500 ms, … capped at 5–10 s, then 24–36 s
    /// after five minutes (a camera that is unplugged should not be hammered).
    pub const TRACK_RESTART: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(10),
        fast_phase: Duration::from_secs(300),
        steady: Duration::from_secs(30),
    };

    /// The range the delay of attempt `attempt` (1 = the first, immediate one) falls in, given
    /// whether the streak is past its fast phase. For tests and documentation.
    pub fn bounds(&self, attempt: u32, settled: bool) -> (Duration, Duration) {
        if attempt <= 1 {
            return (Duration::ZERO, Duration::ZERO);
        }
        if settled {
            let spread = self.steady * STEADY_JITTER_PERCENT as u32 / 100;
            return (self.steady - spread, self.steady + spread);
        }
        let exponential = self.exponential(attempt - 1);
        (exponential / 2, exponential)
    }

    /// `initial · 2^(failures-1)`, capped at `max`.
    fn exponential(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// One failure streak: call [`Backoff::next_delay`] before each attempt, [`Backoff::reset`] once
/// things work again.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Attempts handed out in this streak (the next one is number `attempts + 1`).
    attempts: u32,
    streak_started: Option<Instant>,
    rng: SplitMix64,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        Self {
            policy,
            attempts: 0,
            streak_started: None,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt, counting that attempt.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        let started = *self.streak_started.get_or_insert(now);
        let settled = now.saturating_duration_since(started) >= self.policy.fast_phase;
        let (low, high) = self.policy.bounds(self.attempts, settled);
        let spread = (high - low).as_nanos() as u64;
        low + Duration::from_nanos(self.rng.below_inclusive(spread))
    }

    /// The number of the attempt the last [`next_delay`](Self::next_delay) was for (1-based; 0
    /// before any).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Start a new streak: the next attempt is immediate again.
    pub fn reset(&mut self) {
        self.attempts = 0;
        self.streak_started = None;
    }

    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }
}

/// A tiny seeded PRNG (Steele, Lea and Flood's SplitMix64): enough for jitter, no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=bound` (the modulo bias is far below anything a retry delay cares about).
    pub fn below_inclusive(&mut self, bound: u64) -> u64 {
        match bound.checked_add(1) {
            Some(range) => self.next_u64() % range,
            None => self.next_u64(),
        }
    }
}
