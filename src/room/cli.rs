//! `roomcast run --config FILE`: join the configured room, publish, and stay until told to stop.
//!
//! Room events go to stdout as JSON lines (`{"event": ...}`), logs to stderr.
use super::sdnotify::{Notice, NotifyPolicy};
use super::{DisconnectKind, PathChoice, Room, RoomEvent, RoomOptions};
use crate::media::{AudioSettings, VideoSettings};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The caller (main) has set up logging.
pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match crate::config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("roomcast: invalid config: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_config(config))
}

fn video_settings(config: &crate::config::Config) -> VideoSettings {
    use crate::config::VideoDevice;
    let v = &config.video;
    VideoSettings {
        device: match &v.device {
            VideoDevice::TestPattern => "test-pattern".into(),
            VideoDevice::None => "none".into(),
            VideoDevice::Path(p) => p.display().to_string(),
        },
        width: v.width,
        height: v.height,
        fps: v.fps,
        bitrate: v.bitrate,
    }
}

/// `[video] min_bitrate` / `max_bitrate` (kbit/s) over the defaults derived from `bitrate`.
fn video_bitrate_limits(
    config: &crate::config::Config,
    video: &VideoSettings,
) -> Option<crate::media::pipeline::BitrateLimits> {
    let v = &config.video;
    if v.min_bitrate.is_none() && v.max_bitrate.is_none() {
        return None;
    }
    let derived = video.bitrate_limits();
    Some(crate::media::pipeline::BitrateLimits::new(
        v.min_bitrate.map_or(derived.min_bps, |k| k * 1000),
        v.max_bitrate.map_or(derived.max_bps, |k| k * 1000),
    ))
}

fn audio_settings(config: &crate::config::Config) -> AudioSettings {
    use crate::config::AudioDevice;
    let a = &config.audio;
    AudioSettings {
        device: match &a.device {
            AudioDevice::Tone => "tone".into(),
            AudioDevice::None => "none".into(),
            AudioDevice::Alsa(name) => name.clone(),
        },
        rate: a.rate,
        channels: a.channels as u16,
        bitrate: a.bitrate,
    }
}

fn print_event(event: &RoomEvent) {
    if let Ok(line) = serde_json::to_string(event) {
        println!("{line}");
    }
}

async fn run_config(config: crate::config::Config) -> anyhow::Result<ExitCode> {
    // The newest cached refresh_token while it is still good, else the configured source.
    let credentials = crate::auth::resolve(&config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut options = RoomOptions::new(credentials.server_url.clone(), credentials.token.clone());
    options.signal_path = match config.signal_path {
        crate::config::SignalPathChoice::Auto => PathChoice::Auto,
        crate::config::SignalPathChoice::V1 => PathChoice::V1,
        crate::config::SignalPathChoice::V0 => PathChoice::V0,
    };
    options.auto_subscribe = config.auto_subscribe;
    options.force_relay = config.force_relay;
    options.ca_file = config.ca_file.clone();
    options.video = video_settings(&config);
    options.video_bitrate_limits = video_bitrate_limits(&config, &options.video);
    options.audio = audio_settings(&config);
    if let Some(cache) = crate::auth::TokenCache::for_config(&config) {
        options.on_token_refreshed = Some(Arc::new(move |token: &str| {
            if let Err(e) = cache.store(token) {
                tracing::warn!("cannot store the refreshed token: {e}");
            }
        }));
    }

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let tracks_expected =
        usize::from(options.video.enabled()) + usize::from(options.audio.enabled());
    let mut notify = NotifyPolicy::new(tracks_expected);
    Notice::Status(format!("joining {}", credentials.server_url)).send();
    // A stop request while still joining ends the attempt at once.
    let joined = tokio::select! {
        joined = Room::connect(options) => joined,
        _ = terminate.recv() => return Ok(stopping()),
        _ = interrupt.recv() => return Ok(stopping()),
    };
    let (room, mut events) = match joined {
        Ok(joined) => joined,
        Err(e) => {
            let hint = if e.is_auth_failure() {
                " (check the token or api_key/api_secret in the config)"
            } else {
                ""
            };
            Notice::Status(format!("cannot join: {e}")).send();
            anyhow::bail!("cannot join {}: {e}{hint}", credentials.server_url);
        }
    };
    // WatchdogSec from systemd: ping at half of it, only while the room is healthy.
    let watchdog_interval = sd_notify::watchdog_enabled()
        .filter(|period| !period.is_zero())
        .map(|period| period / 2);
    let mut watchdog =
        tokio::time::interval(watchdog_interval.unwrap_or(Duration::from_secs(3600)));
    let mut removed = false;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = watchdog.tick(), if watchdog_interval.is_some() => {
                let interval = watchdog_interval.unwrap_or_default();
                match notify.watchdog(room.health(), interval) {
                    Some(notice) => notice.send(),
                    None => tracing::warn!(
                        "room task or signalling unhealthy ({:?}): withholding the watchdog ping",
                        room.health()
                    ),
                }
            }
            event = events.recv(), if !removed => match event {
                Some(event) => {
                    print_event(&event);
                    for notice in notify.on_event(&event) {
                        notice.send();
                    }
                    if let RoomEvent::Disconnected { reason, kind, detail } = &event {
                        match kind {
                            DisconnectKind::Removed => {
                                removed = true;
                                eprintln!(
                                    "roomcast: disconnected from the room by the server ({reason}: \
                                     {detail}); not rejoining. Still running: stop with SIGTERM, \
                                     or fix the cause and restart."
                                );
                            }
                            DisconnectKind::Lost => {
                                return Ok(exit_for_restart(&format!("{reason}: {detail}")));
                            }
                            // Only our own close leaves; the loop below does that.
                            DisconnectKind::Left => return Ok(stopping()),
                        }
                    }
                }
                None => {
                    return Ok(exit_for_restart("the room task ended without a word"));
                }
            },
        }
    }
    Notice::Stopping.send();
    if !removed {
        tracing::info!("leaving the room");
        tokio::time::timeout(Duration::from_secs(1), room.close())
            .await
            .ok();
        while let Ok(event) = events.try_recv() {
            print_event(&event);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status for "the connection is gone, start me again" (EX_TEMPFAIL).
pub const EXIT_RESTART: u8 = 75;

fn stopping() -> ExitCode {
    Notice::Stopping.send();
    ExitCode::SUCCESS
}

/// Until the reconnect supervisor lands, a lost link ends the process; Restart=always rejoins.
fn exit_for_restart(cause: &str) -> ExitCode {
    eprintln!(
        "roomcast: lost the room connection ({cause}); exiting with status {EXIT_RESTART} \
         so systemd restarts roomcast"
    );
    Notice::Stopping.send();
    ExitCode::from(EXIT_RESTART)
}
