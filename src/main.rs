//! The roomcast command line: run, check-config, devroom, demo.
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "roomcast", version, about = "Publish this board's camera and microphone into a LiveKit room")]
struct Cli {
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
    /// Run the LiveKit-protocol test room server.
    #[cfg(feature = "devroom")]
    Devroom(roomcast::devroom::cli::Args),
    /// Show the whole pipeline working on this machine: devroom in-process plus synthetic media.
    #[cfg(feature = "demo")]
    Demo(roomcast::demo::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => roomcast::room::cli::run(&config),
        Command::CheckConfig { file } => roomcast::config::cli::check_config(&file),
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
