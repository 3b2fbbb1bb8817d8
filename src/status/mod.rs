//! Status LEDs: what the board shows its owner without a screen.
//!
//! - `pattern`: the pure pattern generator (state in, levels and the next change out).
//! - `led`: the `Led` trait and its kinds (GPIO character device, kernel LED, text, fake).
//! - `driver`: the thread that applies the generator to the LEDs.
//! - `cli`: `roomcast led-test`, one state on the configured LEDs (checks the wiring).
//!
//! The supervisor decides the state; this module only shows it.
pub mod cli;
pub mod driver;
pub mod led;
pub mod pattern;

pub use driver::{LedDriver, Lights};
pub use led::{Led, LedError};
pub use pattern::{Generator, LedState, Pattern, Patterns};

use crate::supervisor::{Attention, Status};

/// What the status LED shows for the supervisor's state: the one mapping from the connection's
/// lifecycle to the patterns in the README's table.
impl From<&Status> for LedState {
    fn from(status: &Status) -> Self {
        match status {
            Status::Stopped => LedState::Off,
            Status::Connecting | Status::WaitingForNetwork => LedState::Connecting,
            Status::Publishing => LedState::Publishing,
            Status::Reconnecting => LedState::Reconnecting,
            // A person must act: a new token or key, or the identity is taken or was removed.
            Status::NeedsAttention(Attention::RemovedByServer { .. })
            | Status::NeedsAttention(Attention::AuthRejected { .. }) => LedState::NeedsAttention,
            // Connected; one track is being restarted on its own: the media LED shows that.
            Status::NeedsAttention(Attention::TrackFailed { .. }) => LedState::Publishing,
            // Connected but nothing flows yet: still coming up, as far as the owner can tell.
            Status::NeedsAttention(Attention::NoMedia) => LedState::Connecting,
        }
    }
}

/// Whether the second LED ("camera and mic live") is on for the supervisor's state.
pub fn media_live(status: &Status) -> bool {
    matches!(status, Status::Publishing)
}

/// The board's status LEDs following the supervisor: opened from `[leds]`, shown each state
/// change, switched off and released by `stop`.
pub struct StatusLeds {
    driver: LedDriver,
}

impl StatusLeds {
    /// Opens the configured LEDs; None when `[leds]` names none. An LED that cannot be opened
    /// is an error naming it and the fix; the caller decides whether that stops the board (it
    /// should not: media matters more than a light).
    pub fn start(
        config: Option<&crate::config::LedConfig>,
    ) -> Result<Option<StatusLeds>, LedError> {
        let Some(config) = config else {
            return Ok(None);
        };
        let lights = Lights::open(config)?;
        if lights.is_empty() {
            return Ok(None);
        }
        let what = lights.describe();
        let driver = LedDriver::start(lights, config.patterns.clone()).map_err(|err| LedError {
            led: what,
            problem: format!("cannot start the LED thread: {err}"),
            fix: "check the process limits (threads, memory)".into(),
        })?;
        Ok(Some(StatusLeds { driver }))
    }

    pub fn show(&self, status: &Status) {
        self.driver.set_state(LedState::from(status));
        self.driver.set_media_live(media_live(status));
    }

    /// Every LED off and released; joins the LED thread.
    pub fn stop(self) -> Result<(), LedError> {
        self.driver.stop()
    }
}

#[cfg(test)]
mod supervisor_mapping_tests {
    use super::*;
    use crate::supervisor::Track;

    #[test]
    fn each_supervisor_state_has_its_pattern() {
        let cases = [
            (Status::Stopped, LedState::Off),
            (Status::Connecting, LedState::Connecting),
            (Status::WaitingForNetwork, LedState::Connecting),
            (Status::Publishing, LedState::Publishing),
            (Status::Reconnecting, LedState::Reconnecting),
            (
                Status::NeedsAttention(Attention::AuthRejected { http_status: 401 }),
                LedState::NeedsAttention,
            ),
            (
                Status::NeedsAttention(Attention::RemovedByServer {
                    reason: "DUPLICATE_IDENTITY".into(),
                }),
                LedState::NeedsAttention,
            ),
            (
                Status::NeedsAttention(Attention::TrackFailed {
                    track: Track::Video,
                }),
                LedState::Publishing,
            ),
            (
                Status::NeedsAttention(Attention::NoMedia),
                LedState::Connecting,
            ),
        ];
        for (status, want) in cases {
            assert_eq!(LedState::from(&status), want, "{status:?}");
        }
        assert!(media_live(&Status::Publishing));
        assert!(!media_live(&Status::NeedsAttention(
            Attention::TrackFailed {
                track: Track::Audio
            }
        )));
    }
}
