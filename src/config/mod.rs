//! The one TOML config file: schema, validation with located errors, secrets.
//!
//! Loading runs in three passes so that every error can name its key, its line and the fix:
//! 1. `toml`'s span-keeping parser (`DeTable`) reads the document; a syntax error has a span.
//! 2. A walk over that tree checks every key against the schema (unknown key → did-you-mean) and
//!    records where each key sits, so later errors can be located.
//! 3. serde fills typed raw structs; type errors carry a span that we map back to the key.
//!    Then semantic checks (one auth method, ranges, URLs) and secret resolution (file/env).
pub mod cli;
mod schema;
mod secret;

pub use secret::{Secret, SecretSource};

pub use crate::media::speaker::{SpeakerDevice, SpeakerSettings};
use crate::signal::url::{validate_server_url, SignalPath};
use crate::status::pattern::{Pattern, Patterns};
use schema::{KeyIndex, Raw};
use std::fmt;
use std::path::{Path, PathBuf};

/// A config problem: which key, where, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    /// The file the error is about.
    pub file: PathBuf,
    /// Dotted key path (`video.fps`, `api_secret.env`); empty for whole-file problems.
    pub key: String,
    /// 1-based line of the key (or of the problem), when there is one.
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file cannot be read.
    Io,
    /// Not valid TOML.
    Syntax,
    /// A key the schema does not know.
    UnknownKey,
    /// A key with a value of the wrong type or out of range.
    InvalidValue,
    /// A required key is absent.
    MissingKey,
    /// Keys that must not be used together (e.g. two auth methods).
    Conflict,
    /// A `{ file = .. }` / `{ env = .. }` secret that cannot be resolved.
    Secret,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// How the device gets its access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// A token given in the config (its own room/identity claims rule).
    Token(Secret),
    /// Mint on the device with the API key and secret.
    ApiKey { api_key: Secret, api_secret: Secret },
    /// POST a TokenSourceRequest to this URL.
    TokenUrl(String),
}

/// Which signalling path to use (`signal_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalPathChoice {
    /// `/rtc/v1`, falling back to `/rtc` on 404 like the official SDKs.
    #[default]
    Auto,
    V1,
    V0,
}

impl SignalPathChoice {
    /// The paths to try, in order.
    pub fn attempts(self) -> &'static [SignalPath] {
        match self {
            SignalPathChoice::Auto => &[SignalPath::V1, SignalPath::V0],
            SignalPathChoice::V1 => &[SignalPath::V1],
            SignalPathChoice::V0 => &[SignalPath::V0],
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            SignalPathChoice::Auto => "auto",
            SignalPathChoice::V1 => "v1",
            SignalPathChoice::V0 => "v0",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoDevice {
    /// A V4L2 capture device node.
    Path(PathBuf),
    /// The synthetic moving test pattern.
    TestPattern,
    /// The same pattern from a synthetic camera that encodes H.264 itself (the passthrough path,
    /// for tests and benchmarks).
    TestPatternH264,
    /// The pattern with a block of fresh noise in every frame: a stream that uses its whole
    /// bitrate, for checking what an uplink carries.
    TestPatternBusy,
    /// Publish no video.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderChoice {
    #[default]
    Auto,
    /// The camera delivers H.264 itself.
    Passthrough,
    /// The SoC's V4L2 memory-to-memory encoder.
    V4l2m2m,
    /// openh264.
    Software,
}

impl EncoderChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            EncoderChoice::Auto => "auto",
            EncoderChoice::Passthrough => "passthrough",
            EncoderChoice::V4l2m2m => "v4l2m2m",
            EncoderChoice::Software => "software",
        }
    }
}

/// `[video] format`: which pixel format to capture a V4L2 camera in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    /// The camera's own H.264 if it has it, else YUYV, NV12, YU12 (first offered), else MJPEG.
    #[default]
    Auto,
    Yuyv,
    Nv12,
    Yu12,
    H264,
    /// Decoded in software on every frame (media::mjpeg); for a camera whose raw modes are too
    /// slow or too small.
    Mjpeg,
}

impl CaptureFormat {
    fn as_str(self) -> &'static str {
        self.pixel().map_or("auto", |p| p.config_name())
    }

    /// The pixel format asked for; None lets the camera's offer decide.
    pub fn pixel(self) -> Option<crate::media::PixelFormat> {
        use crate::media::PixelFormat;
        match self {
            CaptureFormat::Auto => None,
            CaptureFormat::Yuyv => Some(PixelFormat::Yuyv),
            CaptureFormat::Nv12 => Some(PixelFormat::Nv12),
            CaptureFormat::Yu12 => Some(PixelFormat::Yu12),
            CaptureFormat::H264 => Some(PixelFormat::H264),
            CaptureFormat::Mjpeg => Some(PixelFormat::Mjpeg),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    pub device: VideoDevice,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// kbit/s
    pub bitrate: u32,
    /// kbit/s: how far congestion feedback may lower the bitrate (default: a quarter of
    /// `bitrate`, at least 100).
    pub min_bitrate: Option<u32>,
    /// kbit/s: how far congestion feedback may raise it (default: `bitrate`).
    pub max_bitrate: Option<u32>,
    pub encoder: EncoderChoice,
    pub encoder_device: Option<PathBuf>,
    pub format: CaptureFormat,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            device: VideoDevice::Path(PathBuf::from("/dev/video0")),
            width: 1280,
            height: 720,
            fps: 30,
            bitrate: 1500,
            min_bitrate: None,
            max_bitrate: None,
            encoder: EncoderChoice::Auto,
            encoder_device: None,
            format: CaptureFormat::Auto,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioDevice {
    /// An ALSA PCM name ("default", "hw:1,0", ...).
    Alsa(String),
    /// The synthetic tone.
    Tone,
    /// Publish no audio.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub device: AudioDevice,
    /// Hz
    pub rate: u32,
    pub channels: u32,
    /// kbit/s
    pub bitrate: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            device: AudioDevice::Alsa("default".into()),
            rate: 48000,
            channels: 1,
            bitrate: 32,
        }
    }
}

/// The `[leds]` section: where the status LED (and the optional "camera and mic live" LED) is,
/// and the blink timings. Driven by `crate::status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedConfig {
    /// Shows the state by its pattern (off, slow blink, solid, fast blink, double blink).
    pub status: Option<LedLine>,
    /// On while camera and mic are live.
    pub media: Option<LedLine>,
    pub patterns: Patterns,
}

/// One LED: a GPIO line through the character device, or a kernel LED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedLine {
    Gpio {
        /// `None`: the line is found by name on every chip.
        chip: Option<ChipRef>,
        line: LineRef,
        active_low: bool,
    },
    /// `/sys/class/leds/<name>`.
    Sysfs(String),
}

/// A GPIO chip: its device path (`gpiochip0` is written as `/dev/gpiochip0`) or its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChipRef {
    Path(PathBuf),
    Label(String),
}

/// A line on a chip: its offset or its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineRef {
    Offset(u32),
    Name(String),
}

impl fmt::Display for ChipRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChipRef::Path(p) => write!(f, "{}", p.display()),
            ChipRef::Label(l) => write!(f, "label \"{l}\""),
        }
    }
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineRef::Offset(o) => write!(f, "line {o}"),
            LineRef::Name(n) => write!(f, "line \"{n}\""),
        }
    }
}

impl fmt::Display for LedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedLine::Gpio {
                chip,
                line,
                active_low,
            } => {
                match chip {
                    Some(chip) => write!(f, "GPIO {chip} {line}")?,
                    None => write!(f, "GPIO {line}")?,
                }
                if *active_low {
                    write!(f, " (active low)")?;
                }
                Ok(())
            }
            LedLine::Sysfs(name) => write!(f, "kernel LED /sys/class/leds/{name}"),
        }
    }
}

/// The effective configuration: validated, defaults filled in, secrets resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Server URL as ws:// or wss:// (http(s) mapped), without query.
    pub url: String,
    pub auth: AuthConfig,
    pub room: Option<String>,
    pub identity: String,
    /// True when `identity` came from the hostname, not the file.
    pub identity_is_default: bool,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub auto_subscribe: bool,
    pub signal_path: SignalPathChoice,
    /// Use only TURN relay candidates, whatever the server says.
    pub force_relay: bool,
    pub ca_file: Option<PathBuf>,
    /// Where the refreshed-token cache lives; None disables the cache.
    pub state_dir: Option<PathBuf>,
    /// Seconds between `media_stats` events (latency, encoder CPU per frame); 0: none.
    pub stats_interval: u32,
    pub video: VideoConfig,
    pub audio: AudioConfig,
    /// `[speaker]`: subscribed remote audio is played when it names a device; off by default.
    pub speaker: Option<SpeakerSettings>,
    /// Present when the file has a `[leds]` section.
    pub leds: Option<LedConfig>,
}

/// A `media_stats` line a minute: enough to watch a board, little enough for its journal.
pub const DEFAULT_STATS_INTERVAL: u32 = 60;

/// Read, validate and resolve a config file.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        kind: ConfigErrorKind::Io,
        file: path.to_path_buf(),
        key: String::new(),
        line: None,
        message: format!("cannot read the config file: {err}"),
        fix: "check the path (roomcast run --config FILE) and the file's permissions".into(),
    })?;
    parse(&text, path)
}

/// Validate config text; `file` only names the source in errors and anchors relative `{ file = .. }`.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { file, text };
    let index = schema::check_keys(&ctx)?;
    let raw: Raw = toml::from_str(text).map_err(|err| ctx.serde_error(&err, &index))?;
    build(&ctx, &index, raw)
}

/// Error-building context: the file name and its text (for line numbers).
pub(crate) struct Ctx<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Ctx<'_> {
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    pub fn error(
        &self,
        kind: ConfigErrorKind,
        key: &str,
        line: Option<usize>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            kind,
            file: self.file.to_path_buf(),
            key: key.to_string(),
            line,
            message: message.into(),
            fix: fix.into(),
        }
    }

    fn serde_error(&self, err: &toml::de::Error, index: &KeyIndex) -> ConfigError {
        let span = err.span();
        let key = span
            .as_ref()
            .and_then(|span| index.key_at(span.start))
            .unwrap_or_default();
        let line = span.map(|span| self.line_of(span.start));
        let fix = match schema::expected_for(&key) {
            Some(expected) => format!("set `{key}` to {expected}"),
            None => "correct the value's type (see the config reference in the README)".to_string(),
        };
        // untagged enums (secrets, LED lines) say only "did not match any variant": say what fits
        let message = if schema::SECRET_KEYS.contains(&key.as_str())
            || err.message().contains("untagged enum")
        {
            format!(
                "`{key}` must be {}",
                schema::expected_for(&key).unwrap_or_default()
            )
        } else {
            err.message().trim().to_string()
        };
        self.error(ConfigErrorKind::InvalidValue, &key, line, message, fix)
    }
}

fn build(ctx: &Ctx, index: &KeyIndex, raw: Raw) -> Result<Config, ConfigError> {
    let line = |key: &str| index.line(ctx, key);
    let invalid = |key: &str, message: String, fix: String| {
        ctx.error(ConfigErrorKind::InvalidValue, key, line(key), message, fix)
    };

    // url
    let Some(url) = raw.url else {
        return Err(ctx.error(
            ConfigErrorKind::MissingKey,
            "url",
            None,
            "the server URL is missing",
            "add `url = \"wss://your-project.livekit.cloud\"` (ws://, wss://, http:// or https://)",
        ));
    };
    let url = validate_server_url(url.get_ref()).map_err(|err| {
        invalid(
            "url",
            err.to_string(),
            "use ws://host[:port], wss://host, http://host or https://host".into(),
        )
    })?;

    // auth: exactly one method
    let mut methods: Vec<&str> = Vec::new();
    if raw.token.is_some() {
        methods.push("token");
    }
    if raw.api_key.is_some() || raw.api_secret.is_some() {
        methods.push(if raw.api_key.is_some() {
            "api_key"
        } else {
            "api_secret"
        });
    }
    if raw.token_url.is_some() {
        methods.push("token_url");
    }
    const AUTH_FIX: &str =
        "use exactly one of: `token`, `api_key` + `api_secret`, or `token_url` (see the config reference)";
    if methods.len() > 1 {
        let second = methods[1];
        return Err(ctx.error(
            ConfigErrorKind::Conflict,
            second,
            line(second),
            format!(
                "`{}` and `{}` are two auth methods; only one may be set",
                methods[0], second
            ),
            AUTH_FIX,
        ));
    }
    let auth = if let Some(token) = raw.token {
        AuthConfig::Token(secret::resolve(ctx, index, "token", token)?)
    } else if raw.api_key.is_some() || raw.api_secret.is_some() {
        let (Some(key), Some(secret)) = (raw.api_key, raw.api_secret) else {
            let (present, missing) = if index.contains("api_key") {
                ("api_key", "api_secret")
            } else {
                ("api_secret", "api_key")
            };
            return Err(ctx.error(
                ConfigErrorKind::MissingKey,
                missing,
                line(present),
                format!("`{present}` is set but `{missing}` is missing"),
                format!("add `{missing}` (a literal, {{ file = \"/path\" }} or {{ env = \"VAR\" }}), or remove `{present}`"),
            ));
        };
        AuthConfig::ApiKey {
            api_key: secret::resolve(ctx, index, "api_key", key)?,
            api_secret: secret::resolve(ctx, index, "api_secret", secret)?,
        }
    } else if let Some(token_url) = raw.token_url {
        let parsed = url::Url::parse(token_url.get_ref()).map_err(|err| {
            invalid(
                "token_url",
                format!("not a URL: {err}"),
                "use https://host/path (or http:// on a trusted network)".into(),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(
                "token_url",
                format!("scheme `{}` is not http or https", parsed.scheme()),
                "use https://host/path (or http:// on a trusted network)".into(),
            ));
        }
        AuthConfig::TokenUrl(token_url.into_inner())
    } else {
        return Err(ctx.error(
            ConfigErrorKind::MissingKey,
            "token",
            None,
            "no auth method is configured",
            AUTH_FIX,
        ));
    };

    let room = raw.room.map(|r| r.into_inner().trim().to_string());
    if room.as_deref() == Some("") {
        return Err(invalid(
            "room",
            "the room name is empty".into(),
            "set `room = \"lobby\"` or remove it".into(),
        ));
    }
    if room.is_none() && !matches!(auth, AuthConfig::Token(_)) {
        let method = if matches!(auth, AuthConfig::TokenUrl(_)) {
            "token_url"
        } else {
            "api_key"
        };
        return Err(ctx.error(
            ConfigErrorKind::MissingKey,
            "room",
            line(method),
            format!("`room` is required with `{method}`"),
            "add `room = \"lobby\"`",
        ));
    }

    let (identity, identity_is_default) = match raw.identity {
        Some(identity) => {
            let identity = identity.into_inner();
            if identity.trim().is_empty() {
                return Err(invalid(
                    "identity",
                    "the identity is empty".into(),
                    "set a unique `identity = \"cam-1\"` or remove it to use the hostname".into(),
                ));
            }
            (identity, false)
        }
        None => (hostname(), true),
    };

    let ca_file = match raw.ca_file {
        Some(ca) => {
            let ca = PathBuf::from(ca.into_inner());
            if let Err(err) = std::fs::metadata(&ca) {
                return Err(invalid(
                    "ca_file",
                    format!("cannot read {}: {err}", ca.display()),
                    "point `ca_file` at a PEM file with the extra CA certificate(s), or remove it"
                        .into(),
                ));
            }
            Some(ca)
        }
        None => None,
    };
    // systemd's StateDirectory= exports STATE_DIRECTORY: a sensible default for the unit.
    let state_dir = raw
        .state_dir
        .map(|s| PathBuf::from(s.into_inner()))
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from));

    let stats_interval = match raw.stats_interval {
        Some(v) => check_range(
            ctx,
            index,
            "stats_interval",
            v.into_inner(),
            0..=86_400,
            " s",
        )?,
        None => DEFAULT_STATS_INTERVAL,
    };
    let video = build_video(ctx, index, raw.video.unwrap_or_default())?;
    let audio = build_audio(ctx, index, raw.audio.unwrap_or_default())?;
    let speaker = match raw.speaker {
        Some(speaker) => build_speaker(ctx, index, speaker)?,
        None => None,
    };
    let leds = match raw.leds {
        Some(leds) => Some(build_leds(ctx, index, leds)?),
        None => None,
    };

    Ok(Config {
        url: url.to_string().trim_end_matches('/').to_string(),
        auth,
        room,
        identity,
        identity_is_default,
        name: raw.name.map(|v| v.into_inner()),
        metadata: raw.metadata.map(|v| v.into_inner()),
        auto_subscribe: raw.auto_subscribe.map(|v| v.into_inner()).unwrap_or(true),
        signal_path: raw.signal_path.map(|v| v.into_inner()).unwrap_or_default(),
        force_relay: raw.force_relay.map(|v| v.into_inner()).unwrap_or(false),
        ca_file,
        state_dir,
        stats_interval,
        video,
        audio,
        speaker,
        leds,
    })
}

fn check_range(
    ctx: &Ctx,
    index: &KeyIndex,
    key: &str,
    value: u32,
    range: std::ops::RangeInclusive<u32>,
    unit: &str,
) -> Result<u32, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ctx.error(
            ConfigErrorKind::InvalidValue,
            key,
            index.line(ctx, key),
            format!("{value}{unit} is out of range"),
            format!(
                "use a value from {} to {}{unit}",
                range.start(),
                range.end()
            ),
        ))
    }
}

fn build_video(
    ctx: &Ctx,
    index: &KeyIndex,
    raw: schema::RawVideo,
) -> Result<VideoConfig, ConfigError> {
    let defaults = VideoConfig::default();
    let device = match raw.device.map(|d| d.into_inner()) {
        None => defaults.device,
        Some(d) if d == "test-pattern" => VideoDevice::TestPattern,
        Some(d) if d == "test-pattern-h264" => VideoDevice::TestPatternH264,
        Some(d) if d == "test-pattern-busy" => VideoDevice::TestPatternBusy,
        Some(d) if d == "none" => VideoDevice::None,
        // A node, or a USB camera by card name or bus (its /dev/videoN moves between boots).
        Some(d) if d.starts_with('/') || d.starts_with("name:") || d.starts_with("bus:") => {
            VideoDevice::Path(PathBuf::from(d))
        }
        Some(d) => {
            return Err(ctx.error(
                ConfigErrorKind::InvalidValue,
                "video.device",
                index.line(ctx, "video.device"),
                format!("`{d}` is not a device path"),
                "use a V4L2 device path like \"/dev/video0\", \"name:<camera name>\", \"bus:<bus info>\" (see `roomcast devices`), \"test-pattern\", \"test-pattern-busy\" or \"none\"",
            ))
        }
    };
    let even =
        |key: &str, value: Option<toml::Spanned<u32>>, default: u32| -> Result<u32, ConfigError> {
            let value = check_range(
                ctx,
                index,
                key,
                value.map(|v| v.into_inner()).unwrap_or(default),
                16..=4096,
                "",
            )?;
            if value % 2 != 0 {
                return Err(ctx.error(
                    ConfigErrorKind::InvalidValue,
                    key,
                    index.line(ctx, key),
                    format!("{value} is odd; H.264 with 4:2:0 chroma needs even dimensions"),
                    format!("use {} or {}", value - 1, value + 1),
                ));
            }
            Ok(value)
        };
    let width = even("video.width", raw.width, defaults.width)?;
    let height = even("video.height", raw.height, defaults.height)?;
    let fps = check_range(
        ctx,
        index,
        "video.fps",
        raw.fps.map(|v| v.into_inner()).unwrap_or(defaults.fps),
        1..=120,
        "",
    )?;
    let bitrate = check_range(
        ctx,
        index,
        "video.bitrate",
        raw.bitrate
            .map(|v| v.into_inner())
            .unwrap_or(defaults.bitrate),
        50..=50_000,
        " kbit/s",
    )?;
    let limit = |key: &str, value: Option<toml::Spanned<u32>>| {
        value
            .map(|v| check_range(ctx, index, key, v.into_inner(), 50..=50_000, " kbit/s"))
            .transpose()
    };
    let min_bitrate = limit("video.min_bitrate", raw.min_bitrate)?;
    let max_bitrate = limit("video.max_bitrate", raw.max_bitrate)?;
    // The encoder starts at `bitrate`; feedback moves it within [min, max] around it.
    if let Some(min) = min_bitrate.filter(|&min| min > bitrate) {
        return Err(ctx.error(
            ConfigErrorKind::InvalidValue,
            "video.min_bitrate",
            index.line(ctx, "video.min_bitrate"),
            format!("{min} kbit/s is above video.bitrate ({bitrate} kbit/s)"),
            format!("use at most {bitrate} kbit/s"),
        ));
    }
    if let Some(max) = max_bitrate.filter(|&max| max < bitrate) {
        return Err(ctx.error(
            ConfigErrorKind::InvalidValue,
            "video.max_bitrate",
            index.line(ctx, "video.max_bitrate"),
            format!("{max} kbit/s is below video.bitrate ({bitrate} kbit/s)"),
            format!("use at least {bitrate} kbit/s"),
        ));
    }
    Ok(VideoConfig {
        device,
        width,
        height,
        fps,
        bitrate,
        min_bitrate,
        max_bitrate,
        encoder: raw.encoder.map(|v| v.into_inner()).unwrap_or_default(),
        encoder_device: raw.encoder_device.map(|v| PathBuf::from(v.into_inner())),
        format: raw.format.map(|v| v.into_inner()).unwrap_or_default(),
    })
}

fn build_leds(ctx: &Ctx, index: &KeyIndex, raw: schema::RawLeds) -> Result<LedConfig, ConfigError> {
    let invalid = |key: &str, message: String, fix: &str| {
        ctx.error(
            ConfigErrorKind::InvalidValue,
            key,
            index.line(ctx, key),
            message,
            fix,
        )
    };
    let conflict = |gpio: &str, sysfs: &str| {
        ctx.error(
            ConfigErrorKind::Conflict,
            sysfs,
            index.line(ctx, sysfs),
            format!("`{gpio}` and `{sysfs}` both name the same LED"),
            format!("keep one: `{gpio}` for a GPIO line, `{sysfs}` for a kernel LED"),
        )
    };
    let chip = match raw.chip.map(|c| c.into_inner()) {
        None => None,
        Some(c) if c.trim().is_empty() => {
            return Err(invalid(
                "leds.chip",
                "the chip is empty".into(),
                "set `chip` to a path (\"/dev/gpiochip0\"), a name (\"gpiochip0\") or a label (`gpiodetect` lists them), or remove it to find lines by name",
            ))
        }
        Some(c) if c.starts_with('/') => Some(ChipRef::Path(PathBuf::from(c))),
        Some(c)
            if c.strip_prefix("gpiochip").is_some_and(|n| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
            }) =>
        {
            Some(ChipRef::Path(PathBuf::from(format!("/dev/{c}"))))
        }
        Some(c) => Some(ChipRef::Label(c)),
    };
    let active_low = raw.active_low.map(|v| v.into_inner()).unwrap_or(false);
    let gpio = |key: &str,
                line: Option<toml::Spanned<schema::RawLine>>|
     -> Result<Option<LedLine>, ConfigError> {
        let Some(line) = line.map(|l| l.into_inner()) else {
            return Ok(None);
        };
        let line = match line {
            schema::RawLine::Offset(offset) => {
                if chip.is_none() {
                    return Err(ctx.error(
                        ConfigErrorKind::MissingKey,
                        "leds.chip",
                        index.line(ctx, key),
                        format!("`{key}` is line offset {offset}, but no `chip` says on which chip"),
                        "add `chip = \"gpiochip0\"` or the chip's label (`gpiodetect` lists them), or give the line's name instead (`gpioinfo`)",
                    ));
                }
                LineRef::Offset(offset)
            }
            schema::RawLine::Name(name) if name.trim().is_empty() => {
                return Err(invalid(
                    key,
                    "the line name is empty".into(),
                    "use a line offset (17) or a line name as `gpioinfo` shows it (\"GPIO17\")",
                ))
            }
            schema::RawLine::Name(name) => LineRef::Name(name),
        };
        Ok(Some(LedLine::Gpio {
            chip: chip.clone(),
            line,
            active_low,
        }))
    };
    let kernel = |key: &str,
                  name: Option<toml::Spanned<String>>|
     -> Result<Option<LedLine>, ConfigError> {
        let Some(name) = name.map(|n| n.into_inner()) else {
            return Ok(None);
        };
        if name.trim().is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(invalid(
                key,
                format!("`{name}` is not a kernel LED name"),
                "use the name of a directory in /sys/class/leds, like \"ACT\" or \"PWR\" (`ls /sys/class/leds`)",
            ));
        }
        Ok(Some(LedLine::Sysfs(name)))
    };
    if raw.status.is_some() && raw.sysfs.is_some() {
        return Err(conflict("leds.status", "leds.sysfs"));
    }
    if raw.media.is_some() && raw.media_sysfs.is_some() {
        return Err(conflict("leds.media", "leds.media_sysfs"));
    }
    let status = match gpio("leds.status", raw.status)? {
        Some(line) => Some(line),
        None => kernel("leds.sysfs", raw.sysfs)?,
    };
    let media = match gpio("leds.media", raw.media)? {
        Some(line) => Some(line),
        None => kernel("leds.media_sysfs", raw.media_sysfs)?,
    };
    if status.is_none() && media.is_none() {
        return Err(ctx.error(
            ConfigErrorKind::MissingKey,
            "leds.status",
            index.line(ctx, "leds"),
            "[leds] names no LED",
            "set `status = LINE` with `chip` (a GPIO line) or `sysfs = \"ACT\"` (a kernel LED), or remove the [leds] section",
        ));
    }
    let defaults = Patterns::default();
    let pattern = |key: &str,
                   value: Option<toml::Spanned<Vec<u32>>>,
                   default: Pattern|
     -> Result<Pattern, ConfigError> {
        let Some(ms) = value.map(|v| v.into_inner()) else {
            return Ok(default);
        };
        const RANGE: std::ops::RangeInclusive<u32> = 10..=10_000;
        if let Some(bad) = ms.iter().find(|d| !RANGE.contains(d)) {
            return Err(invalid(
                key,
                format!("{bad} ms is out of range"),
                "use durations from 10 to 10000 ms",
            ));
        }
        Pattern::blink(&ms).map_err(|err| {
            invalid(
                key,
                format!("not a blink pattern: {err}"),
                "write 2 to 8 durations in ms, alternating on and off, starting with on: [500, 500]",
            )
        })
    };
    let patterns = Patterns {
        connecting: pattern("leds.connecting", raw.connecting, defaults.connecting)?,
        reconnecting: pattern("leds.reconnecting", raw.reconnecting, defaults.reconnecting)?,
        needs_attention: pattern(
            "leds.needs_attention",
            raw.needs_attention,
            defaults.needs_attention,
        )?,
    };
    Ok(LedConfig {
        status,
        media,
        patterns,
    })
}

fn build_audio(
    ctx: &Ctx,
    index: &KeyIndex,
    raw: schema::RawAudio,
) -> Result<AudioConfig, ConfigError> {
    let defaults = AudioConfig::default();
    let device = match raw.device.map(|d| d.into_inner()) {
        None => defaults.device,
        Some(d) if d == "tone" => AudioDevice::Tone,
        Some(d) if d == "none" => AudioDevice::None,
        Some(d) if d.trim().is_empty() => {
            return Err(ctx.error(
                ConfigErrorKind::InvalidValue,
                "audio.device",
                index.line(ctx, "audio.device"),
                "the ALSA device name is empty",
                "use an ALSA PCM name like \"default\" or \"hw:1,0\", \"tone\" or \"none\"",
            ))
        }
        Some(d) => AudioDevice::Alsa(d),
    };
    let rate = raw.rate.map(|v| v.into_inner()).unwrap_or(defaults.rate);
    // Opus only runs at these rates.
    if ![8000, 12000, 16000, 24000, 48000].contains(&rate) {
        return Err(ctx.error(
            ConfigErrorKind::InvalidValue,
            "audio.rate",
            index.line(ctx, "audio.rate"),
            format!("{rate} Hz is not an Opus sample rate"),
            "use 48000 (or 8000, 12000, 16000, 24000)",
        ));
    }
    let channels = check_range(
        ctx,
        index,
        "audio.channels",
        raw.channels
            .map(|v| v.into_inner())
            .unwrap_or(defaults.channels),
        1..=2,
        "",
    )?;
    let bitrate = check_range(
        ctx,
        index,
        "audio.bitrate",
        raw.bitrate
            .map(|v| v.into_inner())
            .unwrap_or(defaults.bitrate),
        6..=510,
        " kbit/s",
    )?;
    Ok(AudioConfig {
        device,
        rate,
        channels,
        bitrate,
    })
}

/// `[speaker]`: `device` is required (the section exists to name one); `"none"` turns it off.
fn build_speaker(
    ctx: &Ctx,
    index: &KeyIndex,
    raw: schema::RawSpeaker,
) -> Result<Option<SpeakerSettings>, ConfigError> {
    let invalid = |message: String, fix: &str| {
        ctx.error(
            ConfigErrorKind::InvalidValue,
            "speaker.device",
            index
                .line(ctx, "speaker.device")
                .or(index.line(ctx, "speaker")),
            message,
            fix,
        )
    };
    const CHOICES: &str = "use an ALSA PCM name like \"default\" or \"plughw:1,0\" (`roomcast devices` lists the playback devices), \"file:/path/out.raw\" or \"none\"";
    let device = match raw.device.map(|d| d.into_inner()) {
        None => {
            return Err(invalid(
                "[speaker] names no device".into(),
                "set `device = \"default\"` (or another playback device), or remove the [speaker] section to leave the speaker off",
            ))
        }
        Some(d) if d == "none" => return Ok(None),
        Some(d) if d.trim().is_empty() => {
            return Err(invalid("the speaker device name is empty".into(), CHOICES))
        }
        Some(d) => match d.strip_prefix("file:") {
            Some("") => {
                return Err(invalid(
                    "`file:` names no file".into(),
                    "write the path after it, like \"file:/tmp/speaker.raw\"",
                ))
            }
            Some(path) => SpeakerDevice::File(PathBuf::from(path)),
            None => SpeakerDevice::Alsa(d),
        },
    };
    let channels = check_range(
        ctx,
        index,
        "speaker.channels",
        raw.channels.map(|v| v.into_inner()).unwrap_or(1),
        1..=2,
        "",
    )?;
    let volume = check_range(
        ctx,
        index,
        "speaker.volume",
        raw.volume.map(|v| v.into_inner()).unwrap_or(100),
        0..=200,
        " %",
    )?;
    Ok(Some(SpeakerSettings {
        device,
        channels: channels as u16,
        volume,
    }))
}

/// The machine's hostname (the default identity).
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "roomcast".to_string())
}

impl Config {
    /// The effective config as TOML, secrets redacted (what `check-config` prints).
    pub fn to_redacted_toml(&self) -> String {
        use toml::{Table, Value};
        let mut t = Table::new();
        t.insert("url".into(), self.url.clone().into());
        match &self.auth {
            AuthConfig::Token(s) => {
                t.insert("token".into(), s.redacted());
            }
            AuthConfig::ApiKey {
                api_key,
                api_secret,
            } => {
                // The key is an identifier, not a secret, when written literally: show it.
                let key = match api_key.source() {
                    SecretSource::Literal => Value::from(api_key.expose()),
                    _ => api_key.redacted(),
                };
                t.insert("api_key".into(), key);
                t.insert("api_secret".into(), api_secret.redacted());
            }
            AuthConfig::TokenUrl(u) => {
                t.insert("token_url".into(), u.clone().into());
            }
        }
        if let Some(room) = &self.room {
            t.insert("room".into(), room.clone().into());
        }
        t.insert("identity".into(), self.identity.clone().into());
        if let Some(name) = &self.name {
            t.insert("name".into(), name.clone().into());
        }
        if let Some(metadata) = &self.metadata {
            t.insert("metadata".into(), metadata.clone().into());
        }
        t.insert("auto_subscribe".into(), self.auto_subscribe.into());
        t.insert("signal_path".into(), self.signal_path.as_str().into());
        t.insert("force_relay".into(), self.force_relay.into());
        if let Some(ca) = &self.ca_file {
            t.insert("ca_file".into(), ca.display().to_string().into());
        }
        if let Some(dir) = &self.state_dir {
            t.insert("state_dir".into(), dir.display().to_string().into());
        }
        t.insert(
            "stats_interval".into(),
            i64::from(self.stats_interval).into(),
        );
        let mut video = Table::new();
        video.insert(
            "device".into(),
            match &self.video.device {
                VideoDevice::Path(p) => p.display().to_string(),
                VideoDevice::TestPattern => "test-pattern".into(),
                VideoDevice::TestPatternH264 => "test-pattern-h264".into(),
                VideoDevice::TestPatternBusy => "test-pattern-busy".into(),
                VideoDevice::None => "none".into(),
            }
            .into(),
        );
        video.insert("width".into(), i64::from(self.video.width).into());
        video.insert("height".into(), i64::from(self.video.height).into());
        video.insert("fps".into(), i64::from(self.video.fps).into());
        video.insert("bitrate".into(), i64::from(self.video.bitrate).into());
        if let Some(v) = self.video.min_bitrate {
            video.insert("min_bitrate".into(), i64::from(v).into());
        }
        if let Some(v) = self.video.max_bitrate {
            video.insert("max_bitrate".into(), i64::from(v).into());
        }
        video.insert("encoder".into(), self.video.encoder.as_str().into());
        if let Some(dev) = &self.video.encoder_device {
            video.insert("encoder_device".into(), dev.display().to_string().into());
        }
        video.insert("format".into(), self.video.format.as_str().into());
        t.insert("video".into(), video.into());
        let mut audio = Table::new();
        audio.insert(
            "device".into(),
            match &self.audio.device {
                AudioDevice::Alsa(name) => name.clone(),
                AudioDevice::Tone => "tone".into(),
                AudioDevice::None => "none".into(),
            }
            .into(),
        );
        audio.insert("rate".into(), i64::from(self.audio.rate).into());
        audio.insert("channels".into(), i64::from(self.audio.channels).into());
        audio.insert("bitrate".into(), i64::from(self.audio.bitrate).into());
        t.insert("audio".into(), audio.into());
        if let Some(speaker) = &self.speaker {
            let mut table = Table::new();
            table.insert("device".into(), speaker.device.to_string().into());
            table.insert("channels".into(), i64::from(speaker.channels).into());
            table.insert("volume".into(), i64::from(speaker.volume).into());
            t.insert("speaker".into(), table.into());
        }
        if let Some(leds) = &self.leds {
            let mut l = Table::new();
            for (key, sysfs_key, led) in [
                ("status", "sysfs", &leds.status),
                ("media", "media_sysfs", &leds.media),
            ] {
                match led {
                    Some(LedLine::Gpio {
                        chip,
                        line,
                        active_low,
                    }) => {
                        match chip {
                            Some(ChipRef::Path(p)) => {
                                l.insert("chip".into(), p.display().to_string().into());
                            }
                            Some(ChipRef::Label(label)) => {
                                l.insert("chip".into(), label.clone().into());
                            }
                            None => {}
                        }
                        let line: Value = match line {
                            LineRef::Offset(o) => i64::from(*o).into(),
                            LineRef::Name(n) => n.clone().into(),
                        };
                        l.insert(key.into(), line);
                        l.insert("active_low".into(), (*active_low).into());
                    }
                    Some(LedLine::Sysfs(name)) => {
                        l.insert(sysfs_key.into(), name.clone().into());
                    }
                    None => {}
                }
            }
            for (key, pattern) in [
                ("connecting", &leds.patterns.connecting),
                ("reconnecting", &leds.patterns.reconnecting),
                ("needs_attention", &leds.patterns.needs_attention),
            ] {
                let ms: Vec<Value> = pattern
                    .millis()
                    .into_iter()
                    .map(i64::from)
                    .map(Value::from)
                    .collect();
                l.insert(key.into(), Value::Array(ms));
            }
            t.insert("leds".into(), l.into());
        }
        render_in_schema_order(&t)
    }
}

/// TOML text with keys in the order of the config reference (toml's Table sorts them), secret
/// references as inline tables, and sections last.
fn render_in_schema_order(table: &toml::Table) -> String {
    let mut out = String::new();
    for key in schema::TOP_KEYS {
        match table.get(*key) {
            Some(toml::Value::Table(_)) if schema::SECTIONS.contains(key) => {}
            Some(value) => out.push_str(&format!("{key} = {value}\n")),
            None => {}
        }
    }
    for section in schema::SECTIONS {
        if let Some(toml::Value::Table(inner)) = table.get(*section) {
            out.push_str(&format!("\n[{section}]\n"));
            let order = schema::section_keys(section).unwrap_or_default();
            for key in order {
                if let Some(value) = inner.get(*key) {
                    out.push_str(&format!("{key} = {value}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
