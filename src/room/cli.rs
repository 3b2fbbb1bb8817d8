//! `roomcast run --config FILE`: join the configured room, publish, and stay until told to stop.
//!
//! Room events go to stdout as JSON lines (`{"event": ...}`), logs to stderr.
use super::{PathChoice, Room, RoomEvent, RoomOptions};
use crate::media::{AudioSettings, VideoSettings};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Logs on stderr; `RUST_LOG` overrides the default level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,webrtc=warn,rtc=warn,rtc_ice=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = standin::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_config(config))
}

/// Stand-in for core's `config::load` and `auth` token cache until they are merged: the same
/// TOML keys (token auth only), the refreshed token kept in `state_dir/refresh-token`.
mod standin {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Video {
        pub device: Option<String>,
        pub width: Option<u32>,
        pub height: Option<u32>,
        pub fps: Option<u32>,
        pub bitrate: Option<u32>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Audio {
        pub device: Option<String>,
        pub rate: Option<u32>,
        pub channels: Option<u16>,
        pub bitrate: Option<u32>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub url: String,
        pub token: String,
        pub signal_path: Option<String>,
        pub auto_subscribe: Option<bool>,
        pub ca_file: Option<std::path::PathBuf>,
        pub state_dir: Option<std::path::PathBuf>,
        pub video: Option<Video>,
        pub audio: Option<Audio>,
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    pub fn cache_file(config: &Config) -> Option<std::path::PathBuf> {
        config.state_dir.as_ref().map(|d| d.join("refresh-token"))
    }

    /// The newest refreshed token if it stays valid for another minute, else the configured one.
    pub fn token(config: &Config) -> String {
        let cached = cache_file(config)
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.trim().to_string());
        match cached {
            Some(t) if expires_later_than(&t, 60) => t,
            _ => config.token.clone(),
        }
    }

    fn expires_later_than(token: &str, seconds: u64) -> bool {
        use base64::Engine as _;
        let Some(payload) = token.split('.').nth(1) else {
            return false;
        };
        let Ok(bytes) =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
        else {
            return false;
        };
        let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp > now + seconds)
    }
}

fn print_event(event: &RoomEvent) {
    if let Ok(line) = serde_json::to_string(event) {
        println!("{line}");
    }
}

async fn run_config(config: standin::Config) -> anyhow::Result<ExitCode> {
    let mut options = RoomOptions::new(config.url.clone(), standin::token(&config));
    options.signal_path = match config.signal_path.as_deref().unwrap_or("auto") {
        "auto" => PathChoice::Auto,
        "v1" => PathChoice::V1,
        "v0" => PathChoice::V0,
        other => anyhow::bail!("signal_path = {other:?}: use \"auto\", \"v1\" or \"v0\""),
    };
    options.auto_subscribe = config.auto_subscribe.unwrap_or(true);
    options.ca_file = config.ca_file.clone();
    if let Some(v) = &config.video {
        let d = VideoSettings::default();
        options.video = VideoSettings {
            device: v.device.clone().unwrap_or(d.device),
            width: v.width.unwrap_or(d.width),
            height: v.height.unwrap_or(d.height),
            fps: v.fps.unwrap_or(d.fps),
            bitrate: v.bitrate.unwrap_or(d.bitrate),
        };
    }
    if let Some(a) = &config.audio {
        let d = AudioSettings::default();
        options.audio = AudioSettings {
            device: a.device.clone().unwrap_or(d.device),
            rate: a.rate.unwrap_or(d.rate),
            channels: a.channels.unwrap_or(d.channels),
            bitrate: a.bitrate.unwrap_or(d.bitrate),
        };
    }
    if let Some(file) = standin::cache_file(&config) {
        options.on_token_refreshed = Some(Arc::new(move |token: &str| {
            if let Err(e) = std::fs::write(&file, token) {
                tracing::warn!(
                    "cannot store the refreshed token in {}: {e}",
                    file.display()
                );
            }
        }));
    }

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (room, mut events) = match Room::connect(options).await {
        Ok(joined) => joined,
        Err(e) => {
            let hint = if e.is_auth_failure() {
                " (check the token or api_key/api_secret in the config)"
            } else {
                ""
            };
            anyhow::bail!("cannot join {}: {e}{hint}", config.url);
        }
    };
    let mut disconnected = false;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            event = events.recv(), if !disconnected => match event {
                Some(event) => {
                    print_event(&event);
                    if let RoomEvent::Disconnected { reason } = &event {
                        disconnected = true;
                        eprintln!(
                            "roomcast: disconnected from the room ({reason}); not rejoining. \
                             Still running: stop with SIGTERM, or fix the cause and restart."
                        );
                    }
                }
                None => disconnected = true,
            },
        }
    }
    if !disconnected {
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
