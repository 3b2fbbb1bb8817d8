//! `Input::ClockJumped` when the wall clock is set (time sync on a board without an RTC): a
//! CLOCK_REALTIME timerfd armed far ahead with TFD_TIMER_CANCEL_ON_SET, whose read fails with
//! ECANCELED whenever the clock is set discontinuously. Tokens minted from then on carry a good
//! time, so the supervisor retries a refused token at once.
use crate::supervisor::Input;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::sync::mpsc;

/// Start the watcher on its own thread. None when timerfd is unavailable.
pub(crate) fn spawn() -> Option<mpsc::Receiver<Input>> {
    // SAFETY: plain timerfd_create(2); the result is checked before it is owned.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_CLOEXEC) };
    if fd < 0 {
        tracing::warn!(
            "cannot watch the wall clock (timerfd): {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("roomcast-clock".into())
        .spawn(move || watch(fd, tx))
        .ok()?;
    Some(rx)
}

// time_t is i64 here but i32 on some armv7 builds: the conversions are not useless there.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn arm(fd: &OwnedFd) -> std::io::Result<()> {
    // Absolute, about a century ahead (within time_t, which is 32 bits on some armv7 builds):
    // it never fires, it only gets cancelled.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let far = now
        .saturating_add(100 * 365 * 24 * 3600)
        .min(i64::from(libc::time_t::MAX));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: libc::time_t::try_from(far).unwrap_or(libc::time_t::MAX),
            tv_nsec: 0,
        },
    };
    // SAFETY: spec is a valid itimerspec; the old value is not asked for.
    let rc = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn watch(fd: OwnedFd, tx: mpsc::Sender<Input>) {
    loop {
        if let Err(e) = arm(&fd) {
            tracing::warn!("clock watcher stopped: {e}");
            return;
        }
        let mut expirations = [0u8; 8];
        // SAFETY: the buffer is valid for 8 bytes, what a timerfd read returns.
        let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        if n >= 0 {
            // It fired: the clock is past the end of time_t. Nothing sensible to watch.
            tracing::warn!("clock watcher stopped: the wall clock is beyond its range");
            return;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ECANCELED) => {
                tracing::info!("the wall clock was set");
                match tx.try_send(Input::ClockJumped) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Some(libc::EINTR) => {}
            _ => {
                tracing::warn!("clock watcher stopped: {}", std::io::Error::last_os_error());
                return;
            }
        }
    }
}
