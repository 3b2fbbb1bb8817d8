//! `roomcast led-test --config FILE --state STATE [--seconds N]`: drive the configured LEDs
//! through one state, then switch them off and release them. For board owners checking the
//! wiring, and for the lab test that measures the patterns on a simulated GPIO chip.
use super::driver::{LedDriver, Lights};
use super::led::TextLed;
use super::pattern::LedState;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file whose [leds] section to drive.
    #[arg(long, short, default_value = "/etc/roomcast/roomcast.toml")]
    pub config: PathBuf,
    /// The state to show: off, connecting, publishing, reconnecting or needs-attention.
    #[arg(long, short)]
    pub state: LedState,
    /// How long to show it; 0 = until Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The "camera and mic live" LED: on or off (default: on while publishing).
    #[arg(long, value_parser = ["on", "off"])]
    pub media: Option<String>,
    /// Also draw the LEDs on the terminal (the only output when the config has no [leds]).
    #[arg(long)]
    pub text: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match crate::config::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("roomcast: invalid config: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if !(args.seconds >= 0.0 && args.seconds.is_finite()) {
        eprintln!(
            "roomcast: --seconds {} is not a duration; use 0 or more",
            args.seconds
        );
        return Ok(ExitCode::from(2));
    }
    let mut lights = Lights::default();
    let patterns = match &config.leds {
        Some(leds) => {
            lights = match Lights::open(leds) {
                Ok(lights) => lights,
                Err(err) => {
                    eprintln!("roomcast: {err}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            leds.patterns.clone()
        }
        None if args.text => Default::default(),
        None => {
            eprintln!(
                "roomcast: {} has no [leds] section: no LED to drive\n  fix: add [leds] with `status = LINE` and `chip` (or `sysfs = \"ACT\"`), or pass --text to see the pattern on the terminal",
                args.config.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.text {
        let (status, media) =
            TextLed::pair(Box::new(std::io::stdout()), std::io::stdout().is_terminal());
        lights.status.push(Box::new(status));
        lights.media.push(Box::new(media));
    }
    let pattern = patterns.for_state(args.state);
    let media = args
        .media
        .as_deref()
        .map_or(args.state == LedState::Publishing, |m| m == "on");
    let timing = match pattern.period() {
        None => String::new(),
        Some(period) => {
            let on: Duration = pattern
                .steps()
                .iter()
                .filter(|s| s.on)
                .map(|s| s.duration)
                .sum();
            format!(
                " {:?} ms, period {} ms, on {:.0} %",
                pattern.millis(),
                period.as_millis(),
                100.0 * on.as_secs_f64() / period.as_secs_f64()
            )
        }
    };
    println!(
        "led-test: {}: {} = {}{timing}; media {}",
        lights.describe(),
        args.state,
        args.state.pattern_name(),
        if media { "on" } else { "off" }
    );
    let driver = LedDriver::start(lights, patterns)?;
    driver.set_state(args.state);
    driver.set_media_live(media);
    wait(args.seconds)?;
    let result = driver.stop();
    match result {
        Ok(()) => {
            println!("led-test: done; LEDs off and released");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("roomcast: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Sleep for `seconds` (0 = forever), cut short by SIGINT or SIGTERM so the LEDs still end off.
fn wait(seconds: f64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let sleep = async {
            if seconds > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), anyhow::Error>(())
    })
}
