//! Logging set-up, in one place for `roomcast` and the test tools built on it (devroom, the demo).
//!
//! Logs go to stderr, so stdout stays free for room events (JSON lines); plain text off a terminal
//! (journald and test logs), colours only on one.
use tracing_subscriber::EnvFilter;

/// Our info; from the WebRTC stack (whose `log` records are bridged into tracing) only errors:
/// its info level is per-packet chatty, and its warnings fire on every healthy connection ("no
/// candidate pairs" before the answer, STUN before the credentials, SCTP's first packet), which
/// on a headless board would fill the journal with false alarms. `RUST_LOG` brings them back.
pub const DEFAULT_FILTER: &str = "info,webrtc=error,rtc=error,rtc_ice=error,rtc_sctp=error,\
     rtc_dtls=error,rtc_srtp=error,rtc_turn=error,rtc_interceptor=error,rtc_mdns=error,\
     webrtc_ice=error";

/// Installs the global subscriber. `spec` (e.g. from `--log`) wins over `RUST_LOG`, which wins
/// over [`DEFAULT_FILTER`]. A bad `spec` is an error naming the fix; a bad `RUST_LOG` is reported
/// and ignored, so a typo in a unit file never stops a board from starting.
pub fn init(spec: Option<&str>) -> Result<(), String> {
    let filter = match spec {
        Some(spec) => EnvFilter::try_new(spec).map_err(|err| {
            format!("--log {spec:?}: {err}; use a level (error, warn, info, debug, trace) or e.g. \"info,roomcast=debug\"")
        })?,
        None => match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|err| {
                eprintln!("roomcast: ignoring RUST_LOG={spec:?}: {err}");
                EnvFilter::new(DEFAULT_FILTER)
            }),
            _ => EnvFilter::new(DEFAULT_FILTER),
        },
    };
    // try_init: when a subscriber is already installed (a test harness), keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    Ok(())
}
