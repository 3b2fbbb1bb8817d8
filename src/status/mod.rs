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
