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
