//! devroom: a LiveKit-protocol room server for tests and the demo (feature `devroom`).
pub mod cli;
pub mod sfu;
