//! One test per error class, plus defaults, secrets and redaction.
use super::*;
use crate::status::Patterns;
use std::path::Path;

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("/etc/roomcast/roomcast.toml"))
}

fn err(text: &str) -> ConfigError {
    parse_str(text).expect_err("config should be rejected")
}

const MINIMAL: &str = "url = \"wss://example.livekit.cloud\"\ntoken = \"eyJ.a.b\"\n";

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let cfg = parse_str(MINIMAL).unwrap();
    assert_eq!(cfg.url, "wss://example.livekit.cloud");
    assert!(matches!(&cfg.auth, AuthConfig::Token(t) if t.expose() == "eyJ.a.b"));
    assert!(cfg.auto_subscribe);
    assert_eq!(cfg.signal_path, SignalPathChoice::Auto);
    assert_eq!(cfg.identity, hostname());
    assert!(cfg.identity_is_default);
    assert_eq!(cfg.video, VideoConfig::default());
    assert_eq!(
        (
            cfg.video.width,
            cfg.video.height,
            cfg.video.fps,
            cfg.video.bitrate
        ),
        (1280, 720, 30, 1500)
    );
    assert_eq!(
        (cfg.audio.rate, cfg.audio.channels, cfg.audio.bitrate),
        (48000, 1, 32)
    );
    assert_eq!(cfg.audio.device, AudioDevice::Alsa("default".into()));
    assert_eq!(cfg.speaker, None, "the speaker is off by default");
    assert_eq!(cfg.leds, None);
}

#[test]
fn full_config_is_read() {
    let text = r#"
url = "https://lk.example.com/base"
api_key = "APIxyz"
api_secret = "s3cret"
room = "lobby"
identity = "cam-1"
name = "Front door"
metadata = "{}"
auto_subscribe = false
signal_path = "v0"
state_dir = "/var/lib/roomcast"

[video]
device = "test-pattern"
width = 640
height = 480
fps = 15
bitrate = 800
encoder = "v4l2m2m"
encoder_device = "/dev/video11"
format = "nv12"

[audio]
device = "tone"
rate = 16000
channels = 2
bitrate = 24

[leds]
chip = "gpiochip1"
status = 17
media = "CAM_LIVE"
active_low = true
connecting = [250, 750]
"#;
    let cfg = parse_str(text).unwrap();
    assert_eq!(cfg.url, "wss://lk.example.com/base", "https maps to wss");
    assert!(
        matches!(&cfg.auth, AuthConfig::ApiKey { api_key, api_secret } if api_key.expose() == "APIxyz" && api_secret.expose() == "s3cret")
    );
    assert_eq!(cfg.room.as_deref(), Some("lobby"));
    assert_eq!(cfg.identity, "cam-1");
    assert!(!cfg.identity_is_default);
    assert!(!cfg.auto_subscribe);
    assert_eq!(cfg.signal_path, SignalPathChoice::V0);
    assert_eq!(
        cfg.signal_path.attempts(),
        &[crate::signal::url::SignalPath::V0]
    );
    assert_eq!(cfg.video.device, VideoDevice::TestPattern);
    assert_eq!(cfg.video.encoder, EncoderChoice::V4l2m2m);
    assert_eq!(
        cfg.video.encoder_device.as_deref(),
        Some(Path::new("/dev/video11"))
    );
    assert_eq!(cfg.video.format, CaptureFormat::Nv12);
    assert_eq!(
        cfg.video.format.pixel(),
        Some(crate::media::PixelFormat::Nv12)
    );
    assert_eq!(
        cfg.audio,
        AudioConfig {
            device: AudioDevice::Tone,
            rate: 16000,
            channels: 2,
            bitrate: 24
        }
    );
    let leds = cfg.leds.unwrap();
    let chip = Some(ChipRef::Path("/dev/gpiochip1".into()));
    assert_eq!(
        leds.status,
        Some(LedLine::Gpio {
            chip: chip.clone(),
            line: LineRef::Offset(17),
            active_low: true
        })
    );
    assert_eq!(
        leds.media,
        Some(LedLine::Gpio {
            chip,
            line: LineRef::Name("CAM_LIVE".into()),
            active_low: true
        })
    );
    assert_eq!(leds.patterns.connecting.millis(), vec![250, 750]);
    assert_eq!(leds.patterns.reconnecting, Patterns::default().reconnecting);
}

const LEDS: &str = "url = \"wss://x\"\ntoken = \"a\"\n[leds]\n";

#[test]
fn leds_by_label_by_name_and_kernel_led() {
    let leds = parse_str(&format!("{LEDS}chip = \"pinctrl-rp1\"\nstatus = 17\n"))
        .unwrap()
        .leds
        .unwrap();
    assert_eq!(
        leds.status,
        Some(LedLine::Gpio {
            chip: Some(ChipRef::Label("pinctrl-rp1".into())),
            line: LineRef::Offset(17),
            active_low: false
        })
    );
    assert_eq!(leds.media, None);
    assert_eq!(leds.patterns, Patterns::default());
    // a named line needs no chip: every chip is searched
    let leds = parse_str(&format!("{LEDS}status = \"STATUS_LED\"\n"))
        .unwrap()
        .leds
        .unwrap();
    assert_eq!(
        leds.status,
        Some(LedLine::Gpio {
            chip: None,
            line: LineRef::Name("STATUS_LED".into()),
            active_low: false
        })
    );
    let leds = parse_str(&format!("{LEDS}sysfs = \"ACT\"\nmedia_sysfs = \"PWR\"\n"))
        .unwrap()
        .leds
        .unwrap();
    assert_eq!(leds.status, Some(LedLine::Sysfs("ACT".into())));
    assert_eq!(leds.media, Some(LedLine::Sysfs("PWR".into())));
    let leds = parse_str(&format!("{LEDS}chip = \"/dev/gpiochip4\"\nstatus = 3\n"))
        .unwrap()
        .leds
        .unwrap();
    assert!(
        matches!(leds.status, Some(LedLine::Gpio { chip: Some(ChipRef::Path(p)), .. }) if p == Path::new("/dev/gpiochip4"))
    );
}

#[test]
fn led_errors_name_the_key_and_the_fix() {
    // an offset without a chip
    let e = err(&format!("{LEDS}status = 17\n"));
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::MissingKey, "leds.chip", Some(4))
    );
    assert!(e.fix.contains("gpiodetect"), "{}", e.fix);
    // a GPIO line and a kernel LED for the same light
    let e = err(&format!(
        "{LEDS}chip = \"gpiochip0\"\nstatus = 17\nsysfs = \"ACT\"\n"
    ));
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::Conflict, "leds.sysfs", Some(6))
    );
    // a section with no LED in it
    let e = err(&format!("{LEDS}active_low = true\n"));
    assert_eq!(
        (e.kind, e.key.as_str()),
        (ConfigErrorKind::MissingKey, "leds.status")
    );
    assert!(e.fix.contains("remove the [leds] section"), "{}", e.fix);
    // the wrong type: what fits is spelled out
    let e = err(&format!("{LEDS}status = true\n"));
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "leds.status", Some(4))
    );
    assert!(e.message.contains("line offset"), "{}", e.message);
    assert!(!e.message.contains("untagged"), "{}", e.message);
    // kernel LED names are directory names
    let e = err(&format!("{LEDS}sysfs = \"/sys/class/leds/ACT\"\n"));
    assert_eq!(
        (e.kind, e.key.as_str()),
        (ConfigErrorKind::InvalidValue, "leds.sysfs")
    );
    assert!(e.fix.contains("ls /sys/class/leds"), "{}", e.fix);
    // patterns: whole on/off pairs, sane durations
    let e = err(&format!(
        "{LEDS}sysfs = \"ACT\"\nconnecting = [500, 500, 500]\n"
    ));
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "leds.connecting", Some(5))
    );
    assert!(e.message.contains("on/off pairs"), "{}", e.message);
    let e = err(&format!("{LEDS}sysfs = \"ACT\"\nreconnecting = [5, 100]\n"));
    assert_eq!(e.key, "leds.reconnecting");
    assert!(e.fix.contains("10 to 10000"), "{}", e.fix);
    let e = err(&format!(
        "{LEDS}sysfs = \"ACT\"\nneeds_attention = \"double\"\n"
    ));
    assert_eq!(e.key, "leds.needs_attention");
    assert!(e.fix.contains("[500, 500]"), "{}", e.fix);
}

#[test]
fn old_led_keys_explain_what_replaced_them() {
    let e = err(&format!("{LEDS}chip = \"gpiochip0\"\nconnected = 17\n"));
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::UnknownKey, "leds.connected", Some(5))
    );
    assert!(e.fix.contains("`status = LINE`"), "{}", e.fix);
    let e = err(&format!("{LEDS}stauts = 3\n"));
    assert!(e.fix.contains("did you mean `status`?"), "{}", e.fix);
}

#[test]
fn the_effective_led_config_parses_back() {
    let text = format!(
        "{LEDS}chip = \"pinctrl-bcm2711\"\nstatus = \"GPIO17\"\nmedia_sysfs = \"PWR\"\nactive_low = true\nneeds_attention = [100, 100, 100, 700]\n"
    );
    let cfg = parse_str(&text).unwrap();
    let shown = cfg.to_redacted_toml();
    assert!(shown.contains("status = \"GPIO17\""), "{shown}");
    assert!(shown.contains("connecting = [500, 500]"), "{shown}");
    assert_eq!(parse_str(&shown).unwrap().leds, cfg.leds);
}

#[test]
fn io_error_names_the_file() {
    let e = load("/nonexistent/roomcast.toml").unwrap_err();
    assert_eq!(e.kind, ConfigErrorKind::Io);
    assert!(e.to_string().contains("/nonexistent/roomcast.toml"), "{e}");
}

#[test]
fn syntax_error_has_a_line() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\nroom = lobby\n");
    assert_eq!(e.kind, ConfigErrorKind::Syntax);
    assert_eq!(e.line, Some(3));
    assert!(!e.fix.is_empty());
}

#[test]
fn unknown_top_level_key_suggests_the_right_one() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\nidentiy = \"cam\"\n");
    assert_eq!(e.kind, ConfigErrorKind::UnknownKey);
    assert_eq!(e.key, "identiy");
    assert_eq!(e.line, Some(3));
    assert!(e.fix.contains("did you mean `identity`?"), "{}", e.fix);
    let shown = e.to_string();
    assert!(
        shown.contains(":3:") && shown.contains("identiy") && shown.contains("fix:"),
        "{shown}"
    );
}

#[test]
fn unknown_key_in_a_section_suggests_within_the_section() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\n[video]\nwidht = 640\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::UnknownKey, "video.widht", Some(4))
    );
    assert!(e.fix.contains("`width`"), "{}", e.fix);
}

#[test]
fn misplaced_key_points_to_its_section() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\nfps = 30\n");
    assert_eq!(e.kind, ConfigErrorKind::UnknownKey);
    assert!(e.fix.contains("[video]"), "{}", e.fix);
    let e = err("url = \"wss://x\"\n[video]\ntoken = \"a\"\n");
    assert!(e.fix.contains("top-level"), "{}", e.fix);
}

#[test]
fn wrong_type_names_key_line_and_expected_value() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\n\n[video]\nfps = \"thirty\"\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "video.fps", Some(5))
    );
    assert!(e.fix.contains("frames per second"), "{}", e.fix);

    let e = err("url = \"wss://x\"\ntoken = \"a\"\nauto_subscribe = \"yes\"\n");
    assert_eq!((e.key.as_str(), e.line), ("auto_subscribe", Some(3)));
    assert!(e.fix.contains("true or false"));

    let e = err("url = \"wss://x\"\ntoken = \"a\"\n\nforce_relay = 1\n");
    assert_eq!((e.key.as_str(), e.line), ("force_relay", Some(4)), "{e:?}");
    assert!(e.fix.contains("true or false"), "{}", e.fix);
}

#[test]
fn force_relay_defaults_off_and_can_be_switched_on() {
    assert!(!parse_str(MINIMAL).unwrap().force_relay);
    let cfg = parse_str(&format!("{MINIMAL}force_relay = true\n")).unwrap();
    assert!(cfg.force_relay);
}

#[test]
fn bad_enum_value_lists_the_choices() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\nsignal_path = \"v2\"\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "signal_path", Some(3))
    );
    assert!(e.fix.contains("\"v1\""), "{}", e.fix);

    let e = err("url = \"wss://x\"\ntoken = \"a\"\n[video]\nformat = \"rgb\"\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "video.format", Some(4))
    );
    assert!(e.fix.contains("\"nv12\""), "{}", e.fix);
    assert_eq!(
        parse_str(MINIMAL).unwrap().video.format,
        CaptureFormat::Auto
    );
}

#[test]
fn out_of_range_values_are_rejected_with_the_range() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\n[audio]\nrate = 44100\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "audio.rate", Some(4))
    );
    assert!(e.fix.contains("48000"));
    let e = err("url = \"wss://x\"\ntoken = \"a\"\n[video]\nfps = 0\n");
    assert_eq!(e.key, "video.fps");
    assert!(e.fix.contains("1 to 120"), "{}", e.fix);
    let e = err("url = \"wss://x\"\ntoken = \"a\"\n[video]\nwidth = 641\n");
    assert_eq!(e.key, "video.width");
    assert!(e.fix.contains("640"), "{}", e.fix);
    let e = err("url = \"wss://x\"\ntoken = \"a\"\n[video]\ndevice = \"video0\"\n");
    assert_eq!(e.key, "video.device");
}

#[test]
fn bad_url_is_rejected() {
    let e = err("url = \"ftp://x\"\ntoken = \"a\"\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "url", Some(1))
    );
    assert!(e.message.contains("ftp"));
    let e = err("url = \"not a url\"\ntoken = \"a\"\n");
    assert_eq!(e.key, "url");
}

#[test]
fn missing_url_and_missing_auth() {
    let e = err("token = \"a\"\n");
    assert_eq!(
        (e.kind, e.key.as_str()),
        (ConfigErrorKind::MissingKey, "url")
    );
    let e = err("url = \"wss://x\"\n");
    assert_eq!(e.kind, ConfigErrorKind::MissingKey);
    assert!(e.fix.contains("exactly one of"), "{}", e.fix);
}

#[test]
fn two_auth_methods_conflict() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\nroom = \"r\"\ntoken_url = \"https://t/\"\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::Conflict, "token_url", Some(4))
    );
    assert!(e.message.contains("`token`"));
}

#[test]
fn api_key_needs_its_secret_and_a_room() {
    let e = err("url = \"wss://x\"\napi_key = \"k\"\nroom = \"r\"\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::MissingKey, "api_secret", Some(2))
    );
    let e = err("url = \"wss://x\"\napi_key = \"k\"\napi_secret = \"s\"\n");
    assert_eq!(
        (e.kind, e.key.as_str()),
        (ConfigErrorKind::MissingKey, "room")
    );
    let e = err("url = \"wss://x\"\ntoken_url = \"https://t/\"\n");
    assert_eq!(
        (e.kind, e.key.as_str()),
        (ConfigErrorKind::MissingKey, "room")
    );
}

#[test]
fn secrets_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "from-file\n").unwrap();
    // PATH is always set under cargo; set_var would race with other test threads reading the env.
    let path_value = std::env::var("PATH").unwrap();
    let text = "url = \"wss://x\"\nroom = \"r\"\napi_key = { env = \"PATH\" }\napi_secret = { file = \"secret\" }\n";
    let cfg = parse(text, &dir.path().join("roomcast.toml")).unwrap();
    let AuthConfig::ApiKey {
        api_key,
        api_secret,
    } = &cfg.auth
    else {
        panic!("api key auth")
    };
    assert_eq!(api_key.expose(), path_value);
    assert_eq!(
        api_secret.expose(),
        "from-file",
        "trailing newline trimmed, path relative to the config"
    );
    assert_eq!(
        api_secret.source(),
        &SecretSource::File(dir.path().join("secret"))
    );
    let debug = format!("{cfg:?}");
    assert!(
        !debug.contains("from-file") && !debug.contains(&path_value),
        "Debug leaks a secret: {debug}"
    );
}

#[test]
fn unresolvable_secrets_name_the_reference() {
    let e = err("url = \"wss://x\"\ntoken = { env = \"ROOMCAST_TEST_SURELY_UNSET\" }\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::Secret, "token.env", Some(2))
    );
    assert!(e.message.contains("ROOMCAST_TEST_SURELY_UNSET"));
    let e = err("url = \"wss://x\"\ntoken = { file = \"/nonexistent/tok\" }\n");
    assert_eq!(
        (e.kind, e.key.as_str()),
        (ConfigErrorKind::Secret, "token.file")
    );
    let e = err("url = \"wss://x\"\ntoken = { file = \"/a\", env = \"B\" }\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::Secret, "token", Some(2))
    );
    let e = err("url = \"wss://x\"\ntoken = { path = \"/a\" }\n");
    assert_eq!(
        (e.kind, e.key.as_str()),
        (ConfigErrorKind::UnknownKey, "token.path")
    );
    assert!(e.fix.contains("file"), "{}", e.fix);
    let e = err("url = \"wss://x\"\ntoken = 12\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "token", Some(2))
    );
    assert!(e.message.contains("{ env"), "{}", e.message);
    let e = err("url = \"wss://x\"\ntoken = \"\"\n");
    assert_eq!((e.kind, e.key.as_str()), (ConfigErrorKind::Secret, "token"));
}

#[test]
fn missing_ca_file_is_reported() {
    let e = err("url = \"wss://x\"\ntoken = \"a\"\nca_file = \"/nonexistent/ca.pem\"\n");
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "ca_file", Some(3))
    );
}

#[test]
fn redacted_output_hides_secrets_and_parses_back() {
    let path_value = std::env::var("PATH").unwrap();
    let text = "url = \"http://127.0.0.1:7880\"\nroom = \"r\"\napi_key = \"devkey\"\napi_secret = { env = \"PATH\" }\nidentity = \"cam\"\n";
    let cfg = parse_str(text).unwrap();
    let shown = cfg.to_redacted_toml();
    assert!(!shown.contains(&path_value), "{shown}");
    assert!(shown.contains("api_secret = { env = \"PATH\" }"), "{shown}");
    assert!(shown.contains("url = \"ws://127.0.0.1:7880\""), "{shown}");
    assert!(shown.contains("[video]") && shown.contains("width = 1280"));
    // The printed effective config is itself a valid config (the env secret resolves again).
    let again = parse_str(&shown).unwrap();
    assert_eq!(again, cfg);

    let literal = parse_str("url = \"wss://x\"\ntoken = \"eyJsecret\"\n")
        .unwrap()
        .to_redacted_toml();
    assert!(
        !literal.contains("eyJsecret") && literal.contains("<redacted>"),
        "{literal}"
    );
}

#[test]
fn suggestion_threshold() {
    assert_eq!(schema::suggest("tokn", schema::TOP_KEYS), Some("token"));
    assert_eq!(
        schema::suggest("auto-subscribe", schema::TOP_KEYS),
        Some("auto_subscribe")
    );
    assert_eq!(schema::suggest("colour", schema::TOP_KEYS), None);
}

#[test]
fn video_bitrate_limits_are_read_and_must_bracket_the_bitrate() {
    let cfg = parse_str(&format!(
        "{MINIMAL}[video]\nbitrate = 800\nmin_bitrate = 200\nmax_bitrate = 1200\n"
    ))
    .unwrap();
    assert_eq!(
        (cfg.video.min_bitrate, cfg.video.max_bitrate),
        (Some(200), Some(1200))
    );
    assert_eq!(parse_str(MINIMAL).unwrap().video.min_bitrate, None);
    let e = err(&format!(
        "{MINIMAL}[video]\nbitrate = 800\nmin_bitrate = 900\n"
    ));
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "video.min_bitrate", Some(5))
    );
    let e = err(&format!(
        "{MINIMAL}[video]\nbitrate = 800\nmax_bitrate = 700\n"
    ));
    assert_eq!((e.key.as_str(), e.line), ("video.max_bitrate", Some(5)));
    let e = err(&format!("{MINIMAL}[video]\nmin_bitrate = 10\n"));
    assert_eq!(e.key, "video.min_bitrate", "below the 50 kbit/s floor");
}

#[test]
fn the_synthetic_cameras_are_video_devices() {
    let cfg = parse_str(&format!(
        "{MINIMAL}\n[video]\ndevice = \"test-pattern-h264\"\n"
    ))
    .unwrap();
    assert_eq!(cfg.video.device, VideoDevice::TestPatternH264);
    let cfg = parse_str(&format!(
        "{MINIMAL}\n[video]\ndevice = \"test-pattern-busy\"\n"
    ))
    .unwrap();
    assert_eq!(cfg.video.device, VideoDevice::TestPatternBusy);
}

#[test]
fn a_speaker_section_names_a_playback_device_or_a_file() {
    let cfg = parse_str(&format!(
        "{MINIMAL}\n[speaker]\ndevice = \"plughw:1,0\"\nchannels = 2\nvolume = 80\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.speaker,
        Some(SpeakerSettings {
            device: SpeakerDevice::Alsa("plughw:1,0".into()),
            channels: 2,
            volume: 80
        })
    );
    let shown = cfg.to_redacted_toml();
    assert!(
        shown.contains("[speaker]\ndevice = \"plughw:1,0\"\nchannels = 2\nvolume = 80\n"),
        "{shown}"
    );
    let cfg = parse_str(&format!(
        "{MINIMAL}\n[speaker]\ndevice = \"file:/tmp/out.raw\"\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.speaker,
        Some(SpeakerSettings {
            device: SpeakerDevice::File("/tmp/out.raw".into()),
            channels: 1,
            volume: 100
        })
    );
    let cfg = parse_str(&format!("{MINIMAL}\n[speaker]\ndevice = \"none\"\n")).unwrap();
    assert_eq!(cfg.speaker, None);
}

#[test]
fn a_speaker_section_without_a_device_says_how_to_fix_it() {
    let e = err(&format!("{MINIMAL}\n[speaker]\nvolume = 50\n"));
    assert_eq!(
        (e.kind, e.key.as_str(), e.line),
        (ConfigErrorKind::InvalidValue, "speaker.device", Some(4))
    );
    assert!(e.fix.contains("remove the [speaker] section"), "{}", e.fix);
    let e = err(&format!("{MINIMAL}\n[speaker]\ndevice = \"file:\"\n"));
    assert_eq!((e.key.as_str(), e.line), ("speaker.device", Some(5)));
    let e = err(&format!(
        "{MINIMAL}\n[speaker]\ndevice = \"default\"\nvolume = 250\n"
    ));
    assert_eq!(e.key, "speaker.volume");
    assert!(e.fix.contains("0 to 200"), "{}", e.fix);
    let e = err(&format!("{MINIMAL}\n[speaker]\ndevcie = \"default\"\n"));
    assert_eq!(e.kind, ConfigErrorKind::UnknownKey);
    assert!(e.fix.contains("did you mean `device`?"), "{}", e.fix);
}

#[test]
fn stats_interval_defaults_to_a_minute_and_zero_turns_it_off() {
    assert_eq!(parse_str(MINIMAL).unwrap().stats_interval, 60);
    let cfg = parse_str(&format!("{MINIMAL}stats_interval = 0\n")).unwrap();
    assert_eq!(cfg.stats_interval, 0);
    let e = err(&format!("{MINIMAL}stats_interval = 100000\n"));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("stats_interval", Some(3)),
        "{e:?}"
    );
}
