//! LiveKit signalling: URL and join_request building (`url`), the pure session state machine
//! (`session`) and the WebSocket shell that only moves bytes (`ws`).
pub mod session;
pub mod url;
pub mod ws;
