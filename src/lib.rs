//! roomcast: publish a board's camera and microphone into a LiveKit room.
//!
//! Module map (see README "Architecture"):
//! - `config`: the one TOML file, validated with located errors.
//! - `auth`: where tokens come from (given, minted, endpoint) and the refreshed-token cache.
//! - `signal`: the LiveKit signalling session (pure state machine) and its WebSocket shell.
//! - `peer`: webrtc-rs PeerConnections, tracks and data channels.
//! - `media`: sources (synthetic, later V4L2/ALSA) and encoders behind small traits.
//! - `room`: the public Room API and its events, and the task that drives a connection.
//! - `supervisor`: every decision about the connection's lifecycle (join, resume, full reconnect,
//!   backoff, health), as a pure state machine the async shell drives.
//! - `status`: the status LEDs (pattern generator, LED drivers, the driver thread).
//! - `logging`: the one logging set-up.
//!
//! The test server (devroom), the demo and the benchmarks are the `devroom` crate in
//! `tests/devroom`; nothing here depends on them.

pub mod auth;
pub mod config;
pub mod devices;
pub mod logging;
pub mod media;
pub mod peer;
pub mod room;
pub mod signal;
pub mod status;
pub mod supervisor;

/// The crate version, reported in ClientInfo and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
