//! What `roomcast run` tells systemd (Type=notify, WatchdogSec): the supervisor decides every
//! line (READY=1 once media flows, STATUS= on every change, WATCHDOG=1 from its loop, STOPPING=1);
//! this only writes it with `sd_notify::notify`, a no-op without NOTIFY_SOCKET (outside systemd).
use crate::supervisor::Notice;

/// Send one line to the service manager.
pub fn send(notice: &Notice) {
    use sd_notify::NotifyState;
    let state = match notice {
        Notice::Ready => NotifyState::Ready,
        Notice::Status(text) => NotifyState::Status(text),
        Notice::Watchdog => NotifyState::Watchdog,
        Notice::Stopping => NotifyState::Stopping,
    };
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::debug!("sd_notify: {e}");
    }
}
