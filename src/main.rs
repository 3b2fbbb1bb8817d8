//! The roomcast command line: run, check-config, led-test, devroom, demo.
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
    /// Drive the configured status LEDs through one state, then switch them off (checks the
    /// wiring; the states are off, connecting, publishing, reconnecting, needs-attention).
    LedTest(roomcast::status::cli::Args),
    /// Run the LiveKit-protocol test room server.
    #[cfg(feature = "devroom")]
    Devroom(roomcast::devroom::cli::Args),
    /// Show the whole pipeline working on this machine: devroom in-process plus synthetic media.
    #[cfg(feature = "demo")]
    Demo(roomcast::demo::Args),
}

/// The default when neither --log nor RUST_LOG says otherwise: our info, the WebRTC stack's
/// warnings only (its info level is per-packet chatty).
const DEFAULT_LOG_FILTER: &str = "info,webrtc=warn,rtc=warn,rtc_ice=warn,webrtc_ice=warn";

fn init_logging(log: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match log {
        Some(spec) => EnvFilter::try_new(spec).map_err(|err| {
            format!("--log {spec:?}: {err}; use a level (error, warn, info, debug, trace) or e.g. \"info,roomcast=debug\"")
        })?,
        None => match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|err| {
                eprintln!("roomcast: ignoring RUST_LOG={spec:?}: {err}");
                EnvFilter::new(DEFAULT_LOG_FILTER)
            }),
            _ => EnvFilter::new(DEFAULT_LOG_FILTER),
        },
    };
    // try_init: a subcommand that sets up its own subscriber later simply keeps this one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(err) = init_logging(cli.log.as_deref()) {
        eprintln!("roomcast: {err}");
        return std::process::ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run { config } => roomcast::room::cli::run(&config),
        Command::CheckConfig { file } => roomcast::config::cli::check_config(&file),
        Command::LedTest(args) => roomcast::status::cli::run(args),
        #[cfg(feature = "devroom")]
        Command::Devroom(args) => roomcast::devroom::cli::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => roomcast::demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("roomcast: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
