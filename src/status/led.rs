//! The LEDs: one small trait, and each kind behind it.
//!
//! - [`GpioLed`]: a GPIO line through the character device (gpiocdev, uAPI v2); chip by path or
//!   label, line by offset or name, active-low; off and released on close.
//! - [`SysfsLed`]: a kernel LED (`/sys/class/leds/<name>`, the Pi's ACT and PWR): its trigger is
//!   set to `none` while roomcast drives it and restored on close.
//! - [`TextLed`]: a light drawn on the terminal, for the demo and for boards without LEDs.
//! - [`RecordingLed`]: records what it is told, for tests.
//!
//! None of them knows about time or patterns: `status::driver` decides when to call `set`.
use super::pattern::LedState;
use crate::config::{ChipRef, LineRef};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One light that is either on or off.
pub trait Led: Send {
    /// Light it (`true`) or darken it.
    fn set(&mut self, on: bool) -> Result<(), LedError>;
    /// The state the light shows from now on. Physical LEDs have no use for it; the text LED
    /// prints it.
    fn show_state(&mut self, _state: LedState) {}
    /// Leave the LED in a defined state (off) and hand it back to the system.
    fn close(&mut self) -> Result<(), LedError> {
        self.set(false)
    }
    /// What this LED is, for messages ("GPIO /dev/gpiochip0 line 17").
    fn describe(&self) -> String;
}

/// An LED that cannot be opened or driven: which one, what went wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedError {
    pub led: String,
    pub problem: String,
    pub fix: String,
}

impl LedError {
    fn new(led: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        LedError {
            led: led.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for LedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.led, self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for LedError {}

const PERMISSION_FIX: &str = "run roomcast as a user that may write the device: the package's \
     udev rule gives the roomcast group the GPIO chips and kernel LEDs";

// ---------------------------------------------------------------------------------------------
// GPIO character device

/// A GPIO line held as an output for as long as this value lives.
pub struct GpioLed {
    request: Option<gpiocdev::Request>,
    offset: u32,
    what: String,
}

impl GpioLed {
    /// Find the chip and line and request the line as an output, off.
    pub fn open(
        chip: Option<&ChipRef>,
        line: &LineRef,
        active_low: bool,
    ) -> Result<Self, LedError> {
        let asked = match chip {
            Some(chip) => format!("GPIO {chip} {line}"),
            None => format!("GPIO {line}"),
        };
        let (path, offset) =
            resolve(chip, line).map_err(|(problem, fix)| LedError::new(&asked, problem, fix))?;
        let what = format!(
            "GPIO {} line {offset}{}{}",
            path.display(),
            match line {
                LineRef::Name(n) => format!(" \"{n}\""),
                LineRef::Offset(_) => String::new(),
            },
            if active_low { " (active low)" } else { "" }
        );
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&path)
            .with_line(offset)
            .with_consumer("roomcast");
        if active_low {
            builder.as_active_low();
        }
        builder.as_output(gpiocdev::line::Value::Inactive);
        let request = builder.request().map_err(|err| {
            // gpiocdev wraps the errno in a few ways; its text always ends "(os error N)":
            // EBUSY 16, EACCES 13, EPERM 1 (the same on every Linux architecture roomcast runs on)
            let text = err.to_string();
            let busy = text.contains("(os error 16)");
            let denied = text.contains("(os error 13)") || text.contains("(os error 1)");
            let fix = if busy {
                let holder = gpiocdev::Chip::from_path(&path)
                    .and_then(|c| c.line_info(offset))
                    .map(|i| i.consumer)
                    .unwrap_or_default();
                format!(
                    "the line is in use{}: `gpioinfo` shows the holder. A line owned by the kernel's LED driver is a kernel LED: use `sysfs = \"NAME\"` instead",
                    if holder.is_empty() { String::new() } else { format!(" by \"{holder}\"") }
                )
            } else if denied {
                PERMISSION_FIX.to_string()
            } else {
                "check the chip and line with `gpiodetect` and `gpioinfo`".to_string()
            };
            LedError::new(&what, format!("cannot request the line: {err}"), fix)
        })?;
        Ok(GpioLed {
            request: Some(request),
            offset,
            what,
        })
    }
}

/// The chip's device path and the line's offset.
fn resolve(chip: Option<&ChipRef>, line: &LineRef) -> Result<(PathBuf, u32), (String, String)> {
    let path = match chip {
        None => None,
        Some(ChipRef::Path(path)) => {
            if let Err(err) = gpiocdev::chip::is_chip(path) {
                return Err((
                    format!("{} is not a GPIO chip: {err}", path.display()),
                    format!("use one of the chips here ({}), or its label", chip_list()),
                ));
            }
            Some(path.clone())
        }
        Some(ChipRef::Label(label)) => {
            let found = gpiocdev::chip::chips()
                .unwrap_or_default()
                .into_iter()
                .find(|p| {
                    gpiocdev::Chip::from_path(p)
                        .and_then(|c| c.info())
                        .is_ok_and(|i| i.label == *label)
                });
            match found {
                Some(p) => Some(p),
                None => {
                    return Err((
                        format!("no GPIO chip has the label \"{label}\""),
                        format!("set `chip` to one of the chips here ({}) ", chip_list()),
                    ))
                }
            }
        }
    };
    match (path, line) {
        (Some(path), LineRef::Offset(offset)) => {
            let lines = gpiocdev::Chip::from_path(&path)
                .and_then(|c| c.info())
                .map(|i| i.num_lines)
                .map_err(|err| {
                    (
                        format!("cannot read {}: {err}", path.display()),
                        PERMISSION_FIX.to_string(),
                    )
                })?;
            if *offset >= lines {
                return Err((
                    format!(
                        "{} has {lines} lines (0 to {}), not line {offset}",
                        path.display(),
                        lines.saturating_sub(1)
                    ),
                    "check the offset with `gpioinfo`".into(),
                ));
            }
            Ok((path, *offset))
        }
        (Some(path), LineRef::Name(name)) => {
            let chip = gpiocdev::Chip::from_path(&path).map_err(|err| {
                (
                    format!("cannot open {}: {err}", path.display()),
                    PERMISSION_FIX.to_string(),
                )
            })?;
            match chip.find_line_info(name) {
                Some(info) => Ok((path, info.offset)),
                None => Err((
                    format!("{} has no line named \"{name}\"", path.display()),
                    "check the name with `gpioinfo`, give its offset instead, or remove `chip` to search every chip".into(),
                )),
            }
        }
        (None, LineRef::Name(name)) => match gpiocdev::find_named_line(name) {
            Some(found) => Ok((found.chip, found.info.offset)),
            None => Err((
                format!("no GPIO chip has a line named \"{name}\""),
                format!(
                    "check the name with `gpioinfo` (chips here: {})",
                    chip_list()
                ),
            )),
        },
        (None, LineRef::Offset(offset)) => Err((
            format!("line offset {offset} needs a chip"),
            "set `chip` in [leds]".into(),
        )),
    }
}

/// "gpiochip0 \"pinctrl-bcm2711\", gpiochip1 \"raspberrypi-exp-gpio\"", or "none".
fn chip_list() -> String {
    let chips: Vec<String> = gpiocdev::chip::chips()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| gpiocdev::Chip::from_path(p).and_then(|c| c.info()).ok())
        .map(|i| format!("{} \"{}\"", i.name, i.label))
        .collect();
    if chips.is_empty() {
        "none found".into()
    } else {
        chips.join(", ")
    }
}

impl Led for GpioLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        let Some(request) = &self.request else {
            return Err(LedError::new(
                &self.what,
                "the line was already released",
                "",
            ));
        };
        let value = if on {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        request
            .set_value(self.offset, value)
            .map_err(|err| LedError::new(&self.what, format!("cannot set the line: {err}"), ""))
    }

    fn close(&mut self) -> Result<(), LedError> {
        let result = if self.request.is_some() {
            self.set(false)
        } else {
            Ok(())
        };
        // dropping the request closes its file descriptor: the kernel releases the line
        self.request = None;
        result
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

impl Drop for GpioLed {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

// ---------------------------------------------------------------------------------------------
// kernel LEDs

/// Where kernel LEDs live.
pub const SYSFS_LEDS: &str = "/sys/class/leds";

/// A kernel LED driven through its `brightness` file, its trigger parked at `none`.
pub struct SysfsLed {
    dir: PathBuf,
    /// The trigger it had before (restored on close); `None` once restored.
    saved_trigger: Option<String>,
    max: String,
    what: String,
}

impl SysfsLed {
    pub fn open(name: &str) -> Result<Self, LedError> {
        Self::open_in(Path::new(SYSFS_LEDS), name)
    }

    /// Open `<root>/<name>` (tests point `root` at a directory of their own).
    pub fn open_in(root: &Path, name: &str) -> Result<Self, LedError> {
        let dir = root.join(name);
        let what = format!("kernel LED {}", dir.display());
        if !dir.join("brightness").exists() {
            let mut here: Vec<String> = std::fs::read_dir(root)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            here.sort();
            return Err(LedError::new(
                &what,
                "no such kernel LED",
                if here.is_empty() {
                    "this system has no kernel LEDs: use a GPIO line (`status = LINE` with `chip`)"
                        .to_string()
                } else {
                    format!("set `sysfs` to one of: {}", here.join(", "))
                },
            ));
        }
        let io = |action: &str, err: std::io::Error| {
            let fix = if err.kind() == std::io::ErrorKind::PermissionDenied {
                PERMISSION_FIX
            } else {
                ""
            };
            LedError::new(&what, format!("cannot {action}: {err}"), fix)
        };
        let triggers =
            std::fs::read_to_string(dir.join("trigger")).map_err(|e| io("read its trigger", e))?;
        // "none [mmc0] timer heartbeat": the bracketed one is active
        let active = triggers
            .split_whitespace()
            .find_map(|t| t.strip_prefix('[').and_then(|t| t.strip_suffix(']')))
            .unwrap_or("none")
            .to_string();
        let max = std::fs::read_to_string(dir.join("max_brightness"))
            .map(|m| m.trim().to_string())
            .ok()
            .filter(|m| !m.is_empty() && m != "0")
            .unwrap_or_else(|| "1".into());
        std::fs::write(dir.join("trigger"), "none")
            .map_err(|e| io("set its trigger to none", e))?;
        let mut led = SysfsLed {
            dir,
            saved_trigger: Some(active),
            max,
            what,
        };
        led.set(false)?;
        Ok(led)
    }
}

impl Led for SysfsLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        let value = if on { self.max.as_str() } else { "0" };
        std::fs::write(self.dir.join("brightness"), value)
            .map_err(|err| LedError::new(&self.what, format!("cannot write brightness: {err}"), ""))
    }

    fn close(&mut self) -> Result<(), LedError> {
        let Some(trigger) = self.saved_trigger.take() else {
            return Ok(());
        };
        let off = self.set(false);
        let restored = if trigger == "none" {
            Ok(())
        } else {
            std::fs::write(self.dir.join("trigger"), &trigger).map_err(|err| {
                LedError::new(
                    &self.what,
                    format!("cannot restore its trigger \"{trigger}\": {err}"),
                    format!("echo {trigger} > {}/trigger", self.dir.display()),
                )
            })
        };
        off.and(restored)
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

impl Drop for SysfsLed {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

// ---------------------------------------------------------------------------------------------
// the text LED

/// The terminal's pair of lights: `[LED ●○ connecting]` (status, then media).
pub struct TextPanel {
    out: Box<dyn Write + Send>,
    /// Redraw in place on every blink (a terminal); otherwise one line per state change.
    live: bool,
    status: bool,
    media: bool,
    state: LedState,
    /// A new state waits for the status light's next `set` to be drawn with its level.
    pending: bool,
    /// Something is on the current line (a terminal).
    drawn: bool,
}

impl TextPanel {
    fn render(&self) -> String {
        let glyph = |on| if on { '●' } else { '○' };
        format!(
            "[LED {}{} {}]",
            glyph(self.status),
            glyph(self.media),
            self.state.as_str()
        )
    }

    fn draw(&mut self) {
        let text = self.render();
        let _ = if self.live {
            write!(self.out, "\r\x1b[K{text}")
        } else {
            writeln!(self.out, "{text}")
        };
        self.drawn = self.live;
        self.pending = false;
        let _ = self.out.flush();
    }
}

/// One of the panel's two lights.
pub struct TextLed {
    panel: Arc<Mutex<TextPanel>>,
    media: bool,
}

impl TextLed {
    /// The status light and the media light of one panel written to `out`.
    pub fn pair(out: Box<dyn Write + Send>, live: bool) -> (TextLed, TextLed) {
        let panel = Arc::new(Mutex::new(TextPanel {
            out,
            live,
            status: false,
            media: false,
            state: LedState::Off,
            pending: false,
            drawn: false,
        }));
        (
            TextLed {
                panel: panel.clone(),
                media: false,
            },
            TextLed { panel, media: true },
        )
    }
}

impl Led for TextLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        let mut panel = self.panel.lock().unwrap_or_else(|e| e.into_inner());
        let slot = if self.media {
            &mut panel.media
        } else {
            &mut panel.status
        };
        let changed = *slot != on;
        *slot = on;
        // a terminal shows every blink; a log shows each new state and each media change
        if (changed && (panel.live || self.media)) || (!self.media && panel.pending) {
            panel.draw();
        }
        Ok(())
    }

    fn show_state(&mut self, state: LedState) {
        if self.media {
            return;
        }
        let mut panel = self.panel.lock().unwrap_or_else(|e| e.into_inner());
        panel.state = state;
        panel.pending = true;
        if panel.drawn {
            // a terminal keeps the previous state's line
            let _ = writeln!(panel.out);
            panel.drawn = false;
        }
    }

    fn close(&mut self) -> Result<(), LedError> {
        self.set(false)?;
        if !self.media {
            let mut panel = self.panel.lock().unwrap_or_else(|e| e.into_inner());
            if panel.drawn {
                let _ = writeln!(panel.out);
                let _ = panel.out.flush();
                panel.drawn = false;
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("text LED ({})", if self.media { "media" } else { "status" })
    }
}

// ---------------------------------------------------------------------------------------------
// the recording fake

/// What a [`RecordingLed`] was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Set(bool),
    State(LedState),
    Closed,
}

/// A fake LED that records every call; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct RecordingLed {
    log: Arc<Mutex<Vec<Recorded>>>,
    /// Fail every `set` with this problem (to test error paths).
    pub fail: Option<String>,
}

impl RecordingLed {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, r: Recorded) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }
}

impl Led for RecordingLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        self.push(Recorded::Set(on));
        match &self.fail {
            Some(problem) => Err(LedError::new("recording LED", problem.clone(), "")),
            None => Ok(()),
        }
    }

    fn show_state(&mut self, state: LedState) {
        self.push(Recorded::State(state));
    }

    fn close(&mut self) -> Result<(), LedError> {
        self.push(Recorded::Closed);
        Ok(())
    }

    fn describe(&self) -> String {
        "recording LED".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys/class/leds/ACT: trigger "none [mmc0] timer", max_brightness 255.
    fn fake_sysfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let act = root.path().join("ACT");
        std::fs::create_dir(&act).unwrap();
        std::fs::write(act.join("trigger"), "none [mmc0] timer heartbeat\n").unwrap();
        std::fs::write(act.join("brightness"), "0\n").unwrap();
        std::fs::write(act.join("max_brightness"), "255\n").unwrap();
        root
    }

    fn read(root: &Path, file: &str) -> String {
        std::fs::read_to_string(root.join("ACT").join(file)).unwrap()
    }

    #[test]
    fn a_kernel_led_parks_its_trigger_and_restores_it() {
        let root = fake_sysfs();
        let mut led = SysfsLed::open_in(root.path(), "ACT").unwrap();
        assert_eq!(read(root.path(), "trigger"), "none");
        assert_eq!(read(root.path(), "brightness"), "0");
        led.set(true).unwrap();
        assert_eq!(read(root.path(), "brightness"), "255");
        led.close().unwrap();
        assert_eq!(read(root.path(), "brightness"), "0");
        assert_eq!(read(root.path(), "trigger"), "mmc0");
        // closing twice, or dropping after close, leaves it alone
        std::fs::write(root.path().join("ACT/trigger"), "heartbeat").unwrap();
        led.close().unwrap();
        drop(led);
        assert_eq!(read(root.path(), "trigger"), "heartbeat");
    }

    #[test]
    fn dropping_a_kernel_led_restores_its_trigger_too() {
        let root = fake_sysfs();
        let mut led = SysfsLed::open_in(root.path(), "ACT").unwrap();
        led.set(true).unwrap();
        drop(led);
        assert_eq!(read(root.path(), "brightness"), "0");
        assert_eq!(read(root.path(), "trigger"), "mmc0");
    }

    #[test]
    fn a_missing_kernel_led_lists_the_ones_there() {
        let root = fake_sysfs();
        let err = SysfsLed::open_in(root.path(), "PWR").err().unwrap();
        assert_eq!(err.problem, "no such kernel LED");
        assert_eq!(err.fix, "set `sysfs` to one of: ACT");
        assert!(err.to_string().contains("PWR: no such kernel LED\n  fix:"));
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_text_led_prints_state_changes_to_a_log() {
        let sink = Sink::default();
        let (mut status, mut media) = TextLed::pair(Box::new(sink.clone()), false);
        status.show_state(LedState::Connecting);
        status.set(true).unwrap();
        status.set(false).unwrap(); // a blink: not printed to a log
        status.show_state(LedState::Publishing);
        status.set(true).unwrap();
        media.set(true).unwrap();
        status.close().unwrap();
        media.close().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "[LED ●○ connecting]\n[LED ●○ publishing]\n[LED ●● publishing]\n[LED ○○ publishing]\n"
        );
    }

    #[test]
    fn the_text_led_redraws_every_blink_on_a_terminal() {
        let sink = Sink::default();
        let (mut status, _media) = TextLed::pair(Box::new(sink.clone()), true);
        status.show_state(LedState::Reconnecting);
        status.set(true).unwrap();
        status.set(false).unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "\r\x1b[K[LED ●○ reconnecting]\r\x1b[K[LED ○○ reconnecting]"
        );
    }
}
