//! `roomcast run --config FILE`: join the configured room, publish, and stay until told to stop.
//!
//! Room events go to stdout as JSON lines (`{"event": ...}`), logs to stderr.
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
            VideoDevice::TestPatternH264 => "test-pattern-h264".into(),
            VideoDevice::TestPatternBusy => "test-pattern-busy".into(),
            VideoDevice::None => "none".into(),
            VideoDevice::Path(p) => p.display().to_string(),
        },
        width: v.width,
        height: v.height,
        fps: v.fps,
        bitrate: v.bitrate,
        encoder: v.encoder,
        encoder_device: v.encoder_device.clone(),
        format: v.format.pixel(),
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
    // The newest cached refresh_token while it is still good, else the configured source. It
    // only names the server here: every fresh join asks the token source again (below), so a
    // token endpoint that is not reachable yet is retried by the supervisor, not fatal.
    let server_url = match crate::auth::resolve(&config).await {
        Ok(credentials) => credentials.server_url,
        Err(e) => {
            tracing::warn!("no token yet ({e}); the first join asks again");
            config.url.clone()
        }
    };
    let mut options = RoomOptions::new(server_url, String::new());
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
    options.speaker = config.speaker.clone();
    if let Some(cache) = crate::auth::TokenCache::for_config(&config) {
        options.on_token_refreshed = Some(Arc::new(move |token: &str| {
            match cache.store(token) {
                // Said once per refresh (minutes apart): a board owner can see the cache works.
                Ok(()) => tracing::info!(
                    cache = %cache.path().display(),
                    "kept the server's refreshed token for the next join"
                ),
                Err(e) => tracing::warn!("cannot store the refreshed token: {e}"),
            }
        }));
    }
    // Every fresh join (the first after a failed one, each full reconnect) asks again: the
    // cached refresh_token, a newly minted token, or token_url fetched again.
    let token_config = Arc::new(config.clone());
    options.token_source = Some(Arc::new(move || {
        let config = token_config.clone();
        Box::pin(async move {
            crate::auth::resolve(&config)
                .await
                .map(|c| c.token)
                .map_err(|e| anyhow::anyhow!("cannot get a token: {e}"))
        })
    }));
    // WatchdogSec from systemd: the supervisor pings at half of it from its loop.
    options.watchdog_interval = sd_notify::watchdog_enabled()
        .filter(|period| !period.is_zero())
        .map(|period| period / 2);
    options.watch_network = true;
    options.stats_interval =
        (config.stats_interval > 0).then(|| Duration::from_secs(config.stats_interval.into()));

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    // From here on nothing network-related ends the process: the supervisor retries the
    // first join, resumes, rejoins; only SIGTERM/SIGINT stop it.
    let (room, mut events) = Room::start(options);
    let leds = follow_with_leds(config.leds.as_ref(), room.status());
    let mut removed = false;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            event = events.recv(), if !removed => match event {
                Some(event) => {
                    print_event(&event);
                    if let RoomEvent::Disconnected { reason, kind: DisconnectKind::Removed, detail } = &event {
                        removed = true;
                        eprintln!(
                            "roomcast: disconnected from the room by the server ({reason}: \
                             {detail}). Still running: stop with SIGTERM, or fix the cause \
                             and restart."
                        );
                    }
                }
                // The room task ended without being asked: only a bug does that.
                None => {
                    eprintln!("roomcast: the room task ended unexpectedly");
                    return Ok(ExitCode::FAILURE);
                }
            },
        }
    }
    tracing::info!("leaving the room");
    room.close().await;
    let code = tokio::time::timeout(Duration::from_millis(500), room.closed())
        .await
        .unwrap_or(0);
    while let Ok(event) = events.try_recv() {
        print_event(&event);
    }
    if let Some(leds) = leds {
        // The room task is gone, so the status stream ends: the LEDs go dark and are released.
        match tokio::time::timeout(Duration::from_secs(1), leds).await {
            Ok(Ok(Err(err))) => tracing::warn!("status LEDs: {err}"),
            Ok(_) => {}
            Err(_) => tracing::warn!("status LEDs: not switched off within 1 s"),
        }
    }
    Ok(ExitCode::from(code))
}

/// The configured status LEDs follow the supervisor's status until the room task ends; then
/// they are switched off and released. An LED that cannot be opened is reported and skipped:
/// a board keeps streaming without its light.
fn follow_with_leds(
    config: Option<&crate::config::LedConfig>,
    mut status: tokio::sync::watch::Receiver<crate::supervisor::Status>,
) -> Option<tokio::task::JoinHandle<Result<(), crate::status::LedError>>> {
    let leds = match crate::status::StatusLeds::start(config) {
        Ok(Some(leds)) => leds,
        Ok(None) => return None,
        Err(err) => {
            tracing::error!("status LEDs not shown: {err}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        leds.show(&status.borrow_and_update());
        while status.changed().await.is_ok() {
            leds.show(&status.borrow_and_update());
        }
        tokio::task::spawn_blocking(move || leds.stop())
            .await
            .unwrap_or(Ok(()))
    }))
}
