//! roomcast: publish a board's camera and microphone into a LiveKit room.
//!
//! Module map (see README "Architecture"):
//! - `config`: the one TOML file, validated with located errors.
//! - `auth`: where tokens come from (given, minted, endpoint) and the refreshed-token cache.
//! - `signal`: the LiveKit signalling session (pure state machine) and its WebSocket shell.
//! - `peer`: webrtc-rs PeerConnections, tracks and data channels.
//! - `media`: sources (synthetic, later V4L2/ALSA) and encoders behind small traits.
//! - `room`: the public Room API and its events, and the task that drives a connection.
//! - `status`: the status LEDs (pattern generator, LED drivers, the driver thread).
//! - `devroom` (feature): a LiveKit-protocol room server for tests and the demo.
//! - `demo` (feature): devroom in-process plus the device pipeline on synthetic sources.

pub mod auth;
pub mod config;
pub mod media;
pub mod peer;
pub mod room;
pub mod signal;
pub mod status;

#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "devroom")]
pub mod devroom;

/// The crate version, reported in ClientInfo and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
