//! The roomcast command line: run, check-config, devices, led-test, encoder-test.
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Publish this board's camera and microphone into a LiveKit room"
)]
struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or a full filter such as
    /// "info,roomcast=debug". Overrides RUST_LOG. Logs go to stderr.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join the room from the config file and publish until stopped.
    Run {
        #[arg(long, short, default_value = "/etc/roomcast/roomcast.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print the effective config with secrets redacted.
    CheckConfig { file: PathBuf },
    /// List the cameras (formats, sizes, rates), encoders (which do H.264), ALSA capture and
    /// playback devices, and GPIO chips this board has.
    Devices,
    /// Drive the configured status LEDs through one state, then switch them off (checks the
    /// wiring; the states are off, connecting, publishing, reconnecting, needs-attention).
    LedTest(roomcast::status::cli::Args),
    /// Check a V4L2 memory-to-memory encoder on its own: encode test-pattern (or camera)
    /// pictures, drain and restart it, and print one JSON line (exit 1 if a check failed).
    EncoderTest(roomcast::media::v4l2::selftest::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(err) = roomcast::logging::init(cli.log.as_deref()) {
        eprintln!("roomcast: {err}");
        return std::process::ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run { config } => roomcast::room::cli::run(&config),
        Command::CheckConfig { file } => roomcast::config::cli::check_config(&file),
        Command::Devices => roomcast::devices::run(),
        Command::LedTest(args) => roomcast::status::cli::run(args),
        Command::EncoderTest(args) => roomcast::media::v4l2::selftest::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("roomcast: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
