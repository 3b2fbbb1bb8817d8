//! The LED pattern generator: which level each status light has at a given instant.
//!
//! Pure and sans-IO in the shape of `signal::session`: no clock, no thread, no device. The caller
//! feeds the state to show (`set_state`) and the time (`handle_timeout(now)` once `poll_timeout()`
//! is due) and reads the levels (`status_on`, `media_on`). A driver thread (`status::driver`)
//! applies them to real LEDs; tests step simulated time.
//!
//! A pattern is a timeline of on/off steps in a fixed-capacity buffer, repeated forever. The
//! timeline restarts at its first step when the state changes. Steps follow each other with no
//! drift: a step ends at the instant the previous one ended plus its duration, however late the
//! caller wakes up.
use std::time::{Duration, Instant};

/// The most steps one pattern may have (4 on/off pairs).
pub const MAX_STEPS: usize = 8;

/// What the status LED shows. The supervisor maps its own state onto this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedState {
    /// Stopped: dark.
    Off,
    /// Connecting, or waiting for the network: slow blink.
    Connecting,
    /// Publishing, media flowing: solid.
    Publishing,
    /// Lost the connection and reconnecting: fast blink.
    Reconnecting,
    /// Needs a person (auth refused, bad config, removed or duplicate identity): double blink.
    NeedsAttention,
}

impl LedState {
    pub const ALL: [LedState; 5] = [
        LedState::Off,
        LedState::Connecting,
        LedState::Publishing,
        LedState::Reconnecting,
        LedState::NeedsAttention,
    ];

    /// The name used on the command line and in the text LED (`needs-attention`).
    pub fn as_str(self) -> &'static str {
        match self {
            LedState::Off => "off",
            LedState::Connecting => "connecting",
            LedState::Publishing => "publishing",
            LedState::Reconnecting => "reconnecting",
            LedState::NeedsAttention => "needs-attention",
        }
    }

    /// The pattern's everyday name (`slow blink`).
    pub fn pattern_name(self) -> &'static str {
        match self {
            LedState::Off => "off",
            LedState::Connecting => "slow blink",
            LedState::Publishing => "solid",
            LedState::Reconnecting => "fast blink",
            LedState::NeedsAttention => "double blink",
        }
    }
}

impl std::str::FromStr for LedState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        LedState::ALL
            .into_iter()
            .find(|st| st.as_str() == norm)
            .ok_or_else(|| {
                let names: Vec<&str> = LedState::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown LED state `{s}`; use one of: {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for LedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a timeline: a level held for a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub on: bool,
    pub duration: Duration,
}

/// Why a list of durations is not a blink pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// Not whole on/off pairs (an odd count, or none at all).
    NotPairs(usize),
    /// More than `MAX_STEPS` durations.
    TooLong(usize),
    /// A zero-length step.
    ZeroStep(usize),
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternError::NotPairs(n) => write!(f, "{n} durations are not whole on/off pairs"),
            PatternError::TooLong(n) => write!(f, "{n} durations; at most {MAX_STEPS} fit"),
            PatternError::ZeroStep(i) => write!(f, "step {} is 0 ms long", i + 1),
        }
    }
}

/// A repeating timeline of steps. One step means a constant level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    steps: heapless::Vec<Step, MAX_STEPS>,
}

impl Pattern {
    /// A level that never changes.
    pub fn constant(on: bool) -> Self {
        let mut steps = heapless::Vec::new();
        // capacity is MAX_STEPS >= 1
        let _ = steps.push(Step {
            on,
            duration: Duration::MAX,
        });
        Pattern { steps }
    }

    /// Alternating on/off durations in milliseconds, starting with on: `[500, 500]` is a 1 s,
    /// 50 % blink; `[150, 150, 150, 1050]` two short flashes and a pause.
    pub fn blink(ms: &[u32]) -> Result<Self, PatternError> {
        if ms.is_empty() || ms.len() % 2 != 0 {
            return Err(PatternError::NotPairs(ms.len()));
        }
        if ms.len() > MAX_STEPS {
            return Err(PatternError::TooLong(ms.len()));
        }
        let mut steps = heapless::Vec::new();
        for (i, &d) in ms.iter().enumerate() {
            if d == 0 {
                return Err(PatternError::ZeroStep(i));
            }
            // length checked above
            let _ = steps.push(Step {
                on: i % 2 == 0,
                duration: Duration::from_millis(u64::from(d)),
            });
        }
        Ok(Pattern { steps })
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether the level ever changes.
    pub fn is_constant(&self) -> bool {
        self.steps.len() == 1
    }

    /// One repetition (`None` for a constant level).
    pub fn period(&self) -> Option<Duration> {
        (!self.is_constant()).then(|| self.steps.iter().map(|s| s.duration).sum())
    }

    /// The blink durations in ms, as written in the config (empty for a constant level).
    pub fn millis(&self) -> Vec<u32> {
        if self.is_constant() {
            return Vec::new();
        }
        self.steps
            .iter()
            .map(|s| u32::try_from(s.duration.as_millis()).unwrap_or(u32::MAX))
            .collect()
    }
}

/// The blink patterns a board shows; off and solid are fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns {
    pub connecting: Pattern,
    pub reconnecting: Pattern,
    pub needs_attention: Pattern,
}

/// Defaults (ms, on/off alternating): slow blink 1 s at 50 %, fast blink 200 ms at 50 %, double
/// blink 150 on, 150 off, 150 on, then a 1050 ms pause (1.5 s in all).
pub const DEFAULT_CONNECTING_MS: [u32; 2] = [500, 500];
pub const DEFAULT_RECONNECTING_MS: [u32; 2] = [100, 100];
pub const DEFAULT_NEEDS_ATTENTION_MS: [u32; 4] = [150, 150, 150, 1050];

impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            connecting: Pattern::blink(&DEFAULT_CONNECTING_MS).expect("valid default"),
            reconnecting: Pattern::blink(&DEFAULT_RECONNECTING_MS).expect("valid default"),
            needs_attention: Pattern::blink(&DEFAULT_NEEDS_ATTENTION_MS).expect("valid default"),
        }
    }
}

impl Patterns {
    /// The timeline a state shows.
    pub fn for_state(&self, state: LedState) -> Pattern {
        match state {
            LedState::Off => Pattern::constant(false),
            LedState::Publishing => Pattern::constant(true),
            LedState::Connecting => self.connecting.clone(),
            LedState::Reconnecting => self.reconnecting.clone(),
            LedState::NeedsAttention => self.needs_attention.clone(),
        }
    }
}

/// The pattern state machine for the status LED and the optional "camera and mic live" LED.
#[derive(Debug, Clone)]
pub struct Generator {
    patterns: Patterns,
    state: LedState,
    pattern: Pattern,
    step: usize,
    /// When the current step began (simulated or real, as the caller feeds it).
    step_started: Instant,
    media_live: bool,
}

impl Generator {
    /// Starts dark (`LedState::Off`, media off).
    pub fn new(patterns: Patterns, now: Instant) -> Self {
        Generator {
            pattern: patterns.for_state(LedState::Off),
            patterns,
            state: LedState::Off,
            step: 0,
            step_started: now,
            media_live: false,
        }
    }

    pub fn state(&self) -> LedState {
        self.state
    }

    /// Show `state` from `now` on. A new state starts its timeline at the first step; the same
    /// state again changes nothing (a blink is not restarted by a repeated report).
    pub fn set_state(&mut self, state: LedState, now: Instant) {
        if state == self.state {
            return;
        }
        self.state = state;
        self.pattern = self.patterns.for_state(state);
        self.step = 0;
        self.step_started = now;
    }

    /// The second LED: camera and mic live.
    pub fn set_media_live(&mut self, live: bool) {
        self.media_live = live;
    }

    pub fn status_on(&self) -> bool {
        self.pattern.steps[self.step].on
    }

    pub fn media_on(&self) -> bool {
        self.media_live
    }

    /// When the status level changes next; `None` while it is constant.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pattern.is_constant() {
            return None;
        }
        self.step_started
            .checked_add(self.pattern.steps[self.step].duration)
    }

    /// Advance to the step that is current at `now`. Early calls change nothing; a late call
    /// skips whole repetitions and lands where the timeline would be, keeping its phase.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(period) = self.pattern.period() else {
            return;
        };
        let Some(mut due) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        // Skip whole periods at once when the caller is far behind.
        let behind = now.saturating_duration_since(due);
        if behind >= period {
            let periods = behind.as_nanos() / period.as_nanos();
            let skip = period
                .checked_mul(u32::try_from(periods).unwrap_or(u32::MAX))
                .unwrap_or(Duration::ZERO);
            self.step_started += skip;
            due += skip;
        }
        while now >= due {
            self.step_started = due;
            self.step = (self.step + 1) % self.pattern.steps.len();
            due = self.step_started + self.pattern.steps[self.step].duration;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Every level change from `start` until `until` (ms after start), as (ms, level), by
    /// following poll_timeout exactly as the driver thread does.
    fn transitions(g: &mut Generator, start: Instant, until: u64) -> Vec<(u64, bool)> {
        let mut out = vec![(0, g.status_on())];
        while let Some(at) = g.poll_timeout() {
            if at > start + ms(until) {
                break;
            }
            g.handle_timeout(at);
            out.push(((at - start).as_millis() as u64, g.status_on()));
        }
        out
    }

    fn started(state: LedState) -> (Generator, Instant) {
        let t0 = Instant::now();
        let mut g = Generator::new(Patterns::default(), t0);
        g.set_state(state, t0);
        (g, t0)
    }

    #[test]
    fn off_is_dark_with_no_timer() {
        let t0 = Instant::now();
        let mut g = Generator::new(Patterns::default(), t0);
        assert_eq!(g.state(), LedState::Off);
        assert!(!g.status_on());
        assert!(!g.media_on());
        assert_eq!(g.poll_timeout(), None);
        g.handle_timeout(t0 + Duration::from_secs(3600));
        assert!(!g.status_on());
    }

    #[test]
    fn publishing_is_solid_with_no_timer() {
        let (mut g, t0) = started(LedState::Publishing);
        assert!(g.status_on());
        assert_eq!(g.poll_timeout(), None);
        g.handle_timeout(t0 + Duration::from_secs(86_400));
        assert!(g.status_on());
    }

    #[test]
    fn connecting_is_a_slow_blink_1s_half_on() {
        let (mut g, t0) = started(LedState::Connecting);
        assert_eq!(
            transitions(&mut g, t0, 2000),
            vec![
                (0, true),
                (500, false),
                (1000, true),
                (1500, false),
                (2000, true)
            ]
        );
    }

    #[test]
    fn reconnecting_is_a_fast_blink_200ms_half_on() {
        let (mut g, t0) = started(LedState::Reconnecting);
        assert_eq!(
            transitions(&mut g, t0, 400),
            vec![
                (0, true),
                (100, false),
                (200, true),
                (300, false),
                (400, true)
            ]
        );
    }

    #[test]
    fn needs_attention_is_two_short_flashes_then_a_pause() {
        let (mut g, t0) = started(LedState::NeedsAttention);
        assert_eq!(
            transitions(&mut g, t0, 3000),
            vec![
                (0, true),
                (150, false),
                (300, true),
                (450, false),
                (1500, true),
                (1650, false),
                (1800, true),
                (1950, false),
                (3000, true)
            ]
        );
    }

    #[test]
    fn early_timeouts_change_nothing() {
        let (mut g, t0) = started(LedState::Connecting);
        g.handle_timeout(t0 + ms(499));
        assert!(g.status_on());
        assert_eq!(g.poll_timeout(), Some(t0 + ms(500)));
        g.handle_timeout(t0 + ms(500));
        assert!(!g.status_on());
        assert_eq!(g.poll_timeout(), Some(t0 + ms(1000)));
    }

    #[test]
    fn a_late_wakeup_keeps_the_phase() {
        let (mut g, t0) = started(LedState::Connecting);
        // woken 130 ms late: the off step still ends at 1000, not 1130
        g.handle_timeout(t0 + ms(630));
        assert!(!g.status_on());
        assert_eq!(g.poll_timeout(), Some(t0 + ms(1000)));
        // asleep for an hour and 1.7 s: lands in the off half of the current second
        g.handle_timeout(t0 + ms(3_600_000 + 1_700));
        assert!(!g.status_on());
        assert_eq!(g.poll_timeout(), Some(t0 + ms(3_600_000 + 2_000)));
        // the double blink, 10 periods and 350 ms late: in the gap between the flashes
        let (mut d, t1) = started(LedState::NeedsAttention);
        d.handle_timeout(t1 + ms(15_000 + 200));
        assert!(!d.status_on());
        assert_eq!(d.poll_timeout(), Some(t1 + ms(15_300)));
    }

    #[test]
    fn a_new_state_restarts_its_timeline_and_the_same_state_does_not() {
        let (mut g, t0) = started(LedState::Connecting);
        g.handle_timeout(t0 + ms(500));
        assert!(!g.status_on());
        // the same state reported again keeps the blink going
        g.set_state(LedState::Connecting, t0 + ms(700));
        assert!(!g.status_on());
        assert_eq!(g.poll_timeout(), Some(t0 + ms(1000)));
        // reconnecting from 700 ms on: on at once, off at 800
        g.set_state(LedState::Reconnecting, t0 + ms(700));
        assert!(g.status_on());
        assert_eq!(g.poll_timeout(), Some(t0 + ms(800)));
        // published: solid, no timer
        g.set_state(LedState::Publishing, t0 + ms(750));
        assert!(g.status_on());
        assert_eq!(g.poll_timeout(), None);
        // stopped: dark
        g.set_state(LedState::Off, t0 + ms(900));
        assert!(!g.status_on());
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn the_media_led_is_independent_of_the_status_timeline() {
        let (mut g, t0) = started(LedState::Reconnecting);
        g.set_media_live(true);
        assert!(g.media_on());
        g.handle_timeout(t0 + ms(100));
        assert!(!g.status_on());
        assert!(g.media_on());
        g.set_media_live(false);
        assert!(!g.media_on());
        assert!(!g.status_on());
    }

    #[test]
    fn configured_timings_are_followed_exactly() {
        let t0 = Instant::now();
        let patterns = Patterns {
            connecting: Pattern::blink(&[250, 750]).unwrap(),
            reconnecting: Pattern::blink(&[50, 50]).unwrap(),
            needs_attention: Pattern::blink(&[100, 100, 100, 100, 100, 600]).unwrap(),
        };
        let mut g = Generator::new(patterns, t0);
        g.set_state(LedState::Connecting, t0);
        assert_eq!(
            transitions(&mut g, t0, 2000),
            vec![
                (0, true),
                (250, false),
                (1000, true),
                (1250, false),
                (2000, true)
            ]
        );
        g.set_state(LedState::NeedsAttention, t0 + ms(2000));
        assert_eq!(
            transitions(&mut g, t0, 3100),
            vec![
                (0, true),
                (2100, false),
                (2200, true),
                (2300, false),
                (2400, true),
                (2500, false),
                (3100, true)
            ]
        );
    }

    #[test]
    fn blink_patterns_are_checked() {
        assert_eq!(Pattern::blink(&[]), Err(PatternError::NotPairs(0)));
        assert_eq!(
            Pattern::blink(&[100, 100, 100]),
            Err(PatternError::NotPairs(3))
        );
        assert_eq!(Pattern::blink(&[1; 10]), Err(PatternError::TooLong(10)));
        assert_eq!(Pattern::blink(&[100, 0]), Err(PatternError::ZeroStep(1)));
        let p = Pattern::blink(&[1; 8]).unwrap();
        assert_eq!(p.steps().len(), MAX_STEPS);
        assert_eq!(p.period(), Some(ms(8)));
        assert_eq!(Pattern::constant(true).period(), None);
        assert_eq!(
            Patterns::default().needs_attention.millis(),
            vec![150, 150, 150, 1050]
        );
    }

    #[test]
    fn states_parse_from_their_names() {
        for s in LedState::ALL {
            assert_eq!(s.as_str().parse::<LedState>(), Ok(s));
        }
        assert_eq!("NEEDS_ATTENTION".parse(), Ok(LedState::NeedsAttention));
        assert!("blinking"
            .parse::<LedState>()
            .unwrap_err()
            .contains("connecting"));
    }
}
