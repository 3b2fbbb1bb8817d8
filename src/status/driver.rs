//! The LED driver thread: the IO shell around the pure `pattern::Generator`.
//!
//! It owns the LEDs, receives state changes through a bounded channel, sleeps until the
//! generator's next step (or the next message), and writes a level only when it changes. On stop
//! every LED is switched off and released (`Led::close`). It never decides a timing itself.
use super::led::{GpioLed, Led, LedError, SysfsLed};
use super::pattern::{Generator, LedState, Patterns};
use crate::config::{LedConfig, LedLine};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Instant;

/// How many state changes may wait for the thread (it drains them at once).
pub const QUEUE: usize = 16;

/// The lights a driver owns. Each list may hold several LEDs showing the same thing (a GPIO
/// line and the text LED, say); both empty means nothing to drive.
#[derive(Default)]
pub struct Lights {
    pub status: Vec<Box<dyn Led>>,
    pub media: Vec<Box<dyn Led>>,
}

impl Lights {
    /// Open the LEDs the config names. An LED that cannot be opened is an error naming it.
    pub fn open(config: &LedConfig) -> Result<Lights, LedError> {
        let mut lights = Lights::default();
        if let Some(line) = &config.status {
            lights.status.push(open_line(line)?);
        }
        if let Some(line) = &config.media {
            lights.media.push(open_line(line)?);
        }
        Ok(lights)
    }

    pub fn is_empty(&self) -> bool {
        self.status.is_empty() && self.media.is_empty()
    }

    /// "GPIO /dev/gpiochip0 line 17; media: kernel LED /sys/class/leds/PWR".
    pub fn describe(&self) -> String {
        let list = |leds: &[Box<dyn Led>]| {
            leds.iter()
                .map(|l| l.describe())
                .collect::<Vec<_>>()
                .join(" + ")
        };
        match (self.status.is_empty(), self.media.is_empty()) {
            (false, true) => format!("status: {}", list(&self.status)),
            (true, false) => format!("media: {}", list(&self.media)),
            (false, false) => format!(
                "status: {}; media: {}",
                list(&self.status),
                list(&self.media)
            ),
            (true, true) => "no LEDs".into(),
        }
    }
}

fn open_line(line: &LedLine) -> Result<Box<dyn Led>, LedError> {
    Ok(match line {
        LedLine::Gpio {
            chip,
            line,
            active_low,
        } => Box::new(GpioLed::open(chip.as_ref(), line, *active_low)?),
        LedLine::Sysfs(name) => Box::new(SysfsLed::open(name)?),
    })
}

enum Command {
    State(LedState),
    Media(bool),
    Stop,
}

/// The handle of a running LED thread. With no LEDs it runs no thread and ignores everything.
pub struct LedDriver {
    tx: Option<SyncSender<Command>>,
    thread: Option<JoinHandle<Result<(), LedError>>>,
}

impl LedDriver {
    /// A driver that drives nothing (no `[leds]`).
    pub fn disabled() -> LedDriver {
        LedDriver {
            tx: None,
            thread: None,
        }
    }

    /// Start the thread; the LEDs start dark (`LedState::Off`).
    pub fn start(lights: Lights, patterns: Patterns) -> std::io::Result<LedDriver> {
        if lights.is_empty() {
            return Ok(LedDriver::disabled());
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("roomcast-leds".into())
            .spawn(move || run(lights, patterns, rx))?;
        Ok(LedDriver {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Show `state`. Never blocks: when the queue is full the change is dropped and reported.
    pub fn set_state(&self, state: LedState) -> bool {
        self.send(Command::State(state))
    }

    /// Light or darken the "camera and mic live" LED.
    pub fn set_media_live(&self, live: bool) -> bool {
        self.send(Command::Media(live))
    }

    fn send(&self, command: Command) -> bool {
        let Some(tx) = &self.tx else {
            return true;
        };
        match tx.try_send(command) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("LED queue full: a status change was dropped");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Switch every LED off, release it, and join the thread. Returns the first error met while
    /// driving or closing the LEDs.
    pub fn stop(mut self) -> Result<(), LedError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), LedError> {
        if let Some(tx) = self.tx.take() {
            // blocks only while the queue is full, which the thread drains at once
            let _ = tx.send(Command::Stop);
        }
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(LedError {
                    led: "LED thread".into(),
                    problem: "panicked".into(),
                    fix: String::new(),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for LedDriver {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!("{err}");
        }
    }
}

/// The thread: wait for a message or the generator's next step, apply the levels.
fn run(mut lights: Lights, patterns: Patterns, rx: Receiver<Command>) -> Result<(), LedError> {
    let mut generator = Generator::new(patterns, Instant::now());
    let mut first_error: Option<LedError> = None;
    let mut note = |result: Result<(), LedError>| {
        if let Err(err) = result {
            if first_error.is_none() {
                // once: a broken LED must not flood the log at the blink rate
                tracing::warn!("status LED: {err}");
                first_error = Some(err);
            }
        }
    };
    let mut status = generator.status_on();
    let mut media = generator.media_on();
    for led in &mut lights.status {
        note(led.set(status));
    }
    for led in &mut lights.media {
        note(led.set(media));
    }
    loop {
        let message = match generator.poll_timeout() {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Command::Stop),
            },
            None => Some(rx.recv().unwrap_or(Command::Stop)),
        };
        let now = Instant::now();
        let mut new_state = false;
        match message {
            None => generator.handle_timeout(now),
            Some(Command::State(state)) => {
                generator.handle_timeout(now);
                new_state = state != generator.state();
                generator.set_state(state, now);
                if new_state {
                    for led in lights.status.iter_mut().chain(lights.media.iter_mut()) {
                        led.show_state(state);
                    }
                }
            }
            Some(Command::Media(live)) => generator.set_media_live(live),
            Some(Command::Stop) => break,
        }
        if generator.status_on() != status || new_state {
            status = generator.status_on();
            for led in &mut lights.status {
                note(led.set(status));
            }
        }
        if generator.media_on() != media {
            media = generator.media_on();
            for led in &mut lights.media {
                note(led.set(media));
            }
        }
    }
    for led in lights.status.iter_mut().chain(lights.media.iter_mut()) {
        note(led.close());
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::led::{Recorded, RecordingLed};
    use super::*;
    use Recorded::*;

    fn lights(status: &RecordingLed, media: &RecordingLed) -> Lights {
        Lights {
            status: vec![Box::new(status.clone())],
            media: vec![Box::new(media.clone())],
        }
    }

    #[test]
    fn the_thread_shows_each_state_and_leaves_every_led_off_and_closed() {
        let (status, media) = (RecordingLed::new(), RecordingLed::new());
        let driver = LedDriver::start(lights(&status, &media), Patterns::default()).unwrap();
        assert!(driver.is_enabled());
        assert!(driver.set_state(LedState::Publishing));
        assert!(driver.set_media_live(true));
        assert!(driver.set_state(LedState::Publishing)); // the same state: nothing new
        assert!(driver.set_media_live(false));
        assert!(driver.set_state(LedState::Off));
        // messages are handled in order, and stop comes after them
        driver.stop().unwrap();
        assert_eq!(
            status.record(),
            vec![
                Set(false),
                State(LedState::Publishing),
                Set(true),
                State(LedState::Off),
                Set(false),
                Closed
            ]
        );
        // every LED is told the state (the text LED's media light ignores it)
        assert_eq!(
            media.record(),
            vec![
                Set(false),
                State(LedState::Publishing),
                Set(true),
                Set(false),
                State(LedState::Off),
                Closed
            ]
        );
    }

    #[test]
    fn a_failing_led_is_reported_once_and_still_closed() {
        let mut broken = RecordingLed::new();
        broken.fail = Some("line gone".into());
        let driver = LedDriver::start(
            Lights {
                status: vec![Box::new(broken.clone())],
                media: vec![],
            },
            Patterns::default(),
        )
        .unwrap();
        driver.set_state(LedState::Publishing);
        let err = driver.stop().unwrap_err();
        assert_eq!(err.problem, "line gone");
        assert_eq!(
            broken.record(),
            vec![Set(false), State(LedState::Publishing), Set(true), Closed]
        );
    }

    #[test]
    fn with_no_leds_nothing_runs() {
        let driver = LedDriver::start(Lights::default(), Patterns::default()).unwrap();
        assert!(!driver.is_enabled());
        assert!(driver.set_state(LedState::Connecting));
        driver.stop().unwrap();
        assert!(!LedDriver::disabled().is_enabled());
    }

    #[test]
    fn dropping_the_handle_stops_and_closes() {
        let (status, media) = (RecordingLed::new(), RecordingLed::new());
        let driver = LedDriver::start(lights(&status, &media), Patterns::default()).unwrap();
        driver.set_state(LedState::NeedsAttention);
        drop(driver);
        let record = status.record();
        assert_eq!(record.first(), Some(&Set(false)));
        assert_eq!(record[1..3], [State(LedState::NeedsAttention), Set(true)]);
        assert_eq!(record.last(), Some(&Closed));
        assert_eq!(
            media.record(),
            vec![Set(false), State(LedState::NeedsAttention), Closed]
        );
    }
}
