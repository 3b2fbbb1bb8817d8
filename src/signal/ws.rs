//! The WebSocket shell around [`super::session::SignalSession`]: tokio-tungstenite over rustls.
