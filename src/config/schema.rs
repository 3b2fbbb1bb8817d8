//! The config schema: which keys exist (for unknown-key errors with suggestions), where each key
//! sits in the file (for located errors), and the raw serde structs.
use super::{ConfigError, ConfigErrorKind, Ctx, EncoderChoice, SignalPathChoice};
use serde::Deserialize;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub const TOP_KEYS: &[&str] = &[
    "url",
    "token",
    "api_key",
    "api_secret",
    "token_url",
    "room",
    "identity",
    "name",
    "metadata",
    "auto_subscribe",
    "signal_path",
    "force_relay",
    "ca_file",
    "state_dir",
    "stats_interval",
    "video",
    "audio",
    "speaker",
    "leds",
];
pub const VIDEO_KEYS: &[&str] = &[
    "device",
    "width",
    "height",
    "fps",
    "bitrate",
    "min_bitrate",
    "max_bitrate",
    "encoder",
    "encoder_device",
    "format",
];
pub const AUDIO_KEYS: &[&str] = &["device", "rate", "channels", "bitrate"];
pub const SPEAKER_KEYS: &[&str] = &["device", "channels", "volume"];
pub const LED_KEYS: &[&str] = &[
    "chip",
    "status",
    "media",
    "active_low",
    "sysfs",
    "media_sysfs",
    "connecting",
    "reconnecting",
    "needs_attention",
];
/// `[leds]` keys of the first schema (one LED per meaning), replaced by `status` + `media`.
pub const LED_LEGACY_KEYS: &[&str] = &["connected", "activity", "error"];
pub const SECRET_KEYS: &[&str] = &["token", "api_key", "api_secret"];
const SECRET_REF_KEYS: &[&str] = &["file", "env"];

pub const SECTIONS: &[&str] = &["video", "audio", "speaker", "leds"];

pub fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    match section {
        "video" => Some(VIDEO_KEYS),
        "audio" => Some(AUDIO_KEYS),
        "speaker" => Some(SPEAKER_KEYS),
        "leds" => Some(LED_KEYS),
        _ => None,
    }
}

/// What a key's value should look like, for type errors.
pub fn expected_for(key: &str) -> Option<&'static str> {
    Some(match key {
        "url" | "token_url" | "room" | "identity" | "name" | "metadata" | "ca_file"
        | "state_dir" => "a string",
        "token" | "api_key" | "api_secret" => "a string, { file = \"/path\" } or { env = \"VAR\" }",
        "auto_subscribe" | "force_relay" | "leds.active_low" => "true or false",
        "signal_path" => "\"auto\", \"v1\" or \"v0\"",
        "video.encoder" => "\"auto\", \"passthrough\", \"v4l2m2m\" or \"software\"",
        "video.device" => "a device path like \"/dev/video0\", \"name:<camera name>\", \"bus:<bus info>\", \"test-pattern\" or \"none\"",
        "audio.device" => "an ALSA PCM name like \"default\" or \"hw:1,0\", \"tone\" or \"none\"",
        "speaker.device" => "an ALSA PCM name like \"default\" or \"plughw:1,0\", \"file:/path/out.raw\" or \"none\"",
        "speaker.channels" => "1 or 2",
        "speaker.volume" => "a whole number of percent, like 100",
        "video.encoder_device" => "a string",
        "video.format" => "\"auto\", \"yuyv\", \"nv12\", \"yu12\" or \"h264\"",
        "leds.chip" => "a chip path (\"/dev/gpiochip0\"), name (\"gpiochip0\") or label (\"pinctrl-bcm2711\")",
        "leds.status" | "leds.media" => {
            "a GPIO line offset on `chip` (a whole number, like 17) or a line name (like \"GPIO17\")"
        }
        "leds.sysfs" | "leds.media_sysfs" => "a kernel LED name under /sys/class/leds, like \"ACT\"",
        "leds.connecting" | "leds.reconnecting" | "leds.needs_attention" => {
            "a list of on/off durations in ms, starting with on, like [500, 500]"
        }
        "video.width" | "video.height" => "a whole number of pixels, like 1280",
        "video.fps" => "a whole number of frames per second, like 30",
        "video.bitrate" | "video.min_bitrate" | "video.max_bitrate" | "audio.bitrate" => {
            "a whole number of kbit/s"
        }
        "audio.rate" => "a sample rate in Hz, like 48000",
        "stats_interval" => "a whole number of seconds, like 60 (0: off)",
        "audio.channels" => "1 or 2",
        "video" | "audio" | "speaker" | "leds" => "a table (a [section])",
        _ if key.ends_with(".file") => "a file path string",
        _ if key.ends_with(".env") => "an environment variable name",
        _ => return None,
    })
}

/// Where every key of the file is: dotted path, key span, value span.
#[derive(Debug, Default)]
pub struct KeyIndex {
    entries: Vec<(String, Range<usize>, Range<usize>)>,
}

impl KeyIndex {
    pub fn contains(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| k == key)
    }

    /// 1-based line of a key, if it is in the file.
    pub fn line(&self, ctx: &Ctx, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, span, _)| ctx.line_of(span.start))
    }

    /// The innermost key whose key or value covers `offset`.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        self.entries
            .iter()
            .filter(|(_, key, value)| {
                key.contains(&offset) || value.contains(&offset) || value.start == offset
            })
            .min_by_key(|(_, _, value)| value.len())
            .map(|(k, _, _)| k.clone())
    }
}

/// Pass 2: parse with spans, reject unknown keys (with a suggestion), index the rest.
pub fn check_keys(ctx: &Ctx) -> Result<KeyIndex, ConfigError> {
    let doc = DeTable::parse(ctx.text).map_err(|err| {
        let line = err.span().map(|s| ctx.line_of(s.start));
        ctx.error(
            ConfigErrorKind::Syntax,
            "",
            line,
            format!("not valid TOML: {}", err.message().trim()),
            "fix the TOML syntax on that line (strings need quotes; one key = value per line)",
        )
    })?;
    let mut index = KeyIndex::default();
    walk(ctx, doc.get_ref(), "", TOP_KEYS, &mut index)?;
    Ok(index)
}

fn walk(
    ctx: &Ctx,
    table: &DeTable,
    prefix: &str,
    allowed: &[&str],
    index: &mut KeyIndex,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        let line = Some(ctx.line_of(key.span().start));
        if !allowed.contains(&name) {
            return Err(unknown_key(ctx, prefix, name, &path, line, allowed));
        }
        index.entries.push((path.clone(), key.span(), value.span()));
        if let DeValue::Table(inner) = value.get_ref() {
            if prefix.is_empty() {
                if let Some(keys) = section_keys(name) {
                    walk(ctx, inner, &path, keys, index)?;
                } else if SECRET_KEYS.contains(&name) {
                    walk(ctx, inner, &path, SECRET_REF_KEYS, index)?;
                    if inner.len() != 1 {
                        return Err(ctx.error(
                            ConfigErrorKind::Secret,
                            &path,
                            line,
                            format!("a secret reference needs exactly one of `file` or `env`, found {}", inner.len()),
                            format!("write `{name} = {{ file = \"/path\" }}` or `{name} = {{ env = \"VAR\" }}`"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn unknown_key(
    ctx: &Ctx,
    section: &str,
    name: &str,
    path: &str,
    line: Option<usize>,
    allowed: &[&str],
) -> ConfigError {
    let where_ = if section.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{section}]")
    };
    let fix = if section == "leds" && LED_LEGACY_KEYS.contains(&name) {
        "`connected`, `activity` and `error` are gone: one `status` LED shows every state by its \
         pattern (see the README's LED table); set `status = LINE` and optionally `media = LINE`"
            .to_string()
    } else if let Some(best) = suggest(name, allowed) {
        format!("did you mean `{best}`?")
    } else if let Some(home) = SECTIONS
        .iter()
        .find(|s| section_keys(s).is_some_and(|keys| keys.contains(&name)) && **s != section)
    {
        format!("`{name}` belongs in the [{home}] section")
    } else if section.is_empty()
        && SECTIONS
            .iter()
            .any(|s| section_keys(s).is_some_and(|k| k.contains(&name)))
    {
        format!("`{name}` belongs in a section")
    } else if !section.is_empty() && TOP_KEYS.contains(&name) {
        format!("`{name}` is a top-level key: move it above the first [section]")
    } else {
        format!("remove it; known keys here: {}", allowed.join(", "))
    };
    ctx.error(
        ConfigErrorKind::UnknownKey,
        path,
        line,
        format!("unknown key `{name}` {where_}"),
        fix,
    )
}

/// The closest known key, if it is close enough to be a typo.
pub fn suggest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    candidates
        .iter()
        .map(|c| (levenshtein(&lower, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A secret as written: a literal or a reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSecret {
    Literal(String),
    Ref {
        file: Option<String>,
        env: Option<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
pub struct Raw {
    pub url: Option<Spanned<String>>,
    pub token: Option<Spanned<RawSecret>>,
    pub api_key: Option<Spanned<RawSecret>>,
    pub api_secret: Option<Spanned<RawSecret>>,
    pub token_url: Option<Spanned<String>>,
    pub room: Option<Spanned<String>>,
    pub identity: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub metadata: Option<Spanned<String>>,
    pub auto_subscribe: Option<Spanned<bool>>,
    pub signal_path: Option<Spanned<SignalPathChoice>>,
    pub force_relay: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub stats_interval: Option<Spanned<u32>>,
    pub video: Option<RawVideo>,
    pub audio: Option<RawAudio>,
    pub speaker: Option<RawSpeaker>,
    pub leds: Option<RawLeds>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawVideo {
    pub device: Option<Spanned<String>>,
    pub width: Option<Spanned<u32>>,
    pub height: Option<Spanned<u32>>,
    pub fps: Option<Spanned<u32>>,
    pub bitrate: Option<Spanned<u32>>,
    pub min_bitrate: Option<Spanned<u32>>,
    pub max_bitrate: Option<Spanned<u32>>,
    pub encoder: Option<Spanned<EncoderChoice>>,
    pub encoder_device: Option<Spanned<String>>,
    pub format: Option<Spanned<super::CaptureFormat>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAudio {
    pub device: Option<Spanned<String>>,
    pub rate: Option<Spanned<u32>>,
    pub channels: Option<Spanned<u32>>,
    pub bitrate: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSpeaker {
    pub device: Option<Spanned<String>>,
    pub channels: Option<Spanned<u32>>,
    pub volume: Option<Spanned<u32>>,
}

/// A GPIO line as written: an offset on `chip` or a line name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawLine {
    Offset(u32),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLeds {
    pub chip: Option<Spanned<String>>,
    pub status: Option<Spanned<RawLine>>,
    pub media: Option<Spanned<RawLine>>,
    pub active_low: Option<Spanned<bool>>,
    pub sysfs: Option<Spanned<String>>,
    pub media_sysfs: Option<Spanned<String>>,
    pub connecting: Option<Spanned<Vec<u32>>>,
    pub reconnecting: Option<Spanned<Vec<u32>>>,
    pub needs_attention: Option<Spanned<Vec<u32>>>,
}
