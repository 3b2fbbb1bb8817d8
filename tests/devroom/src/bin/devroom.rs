//! `devroom [--listen ADDR --keys KEY:SECRET ...]` runs the test room server;
//! `devroom mint-token IDENTITY ROOM` prints a token for it (shell suites and the qemu lab);
//! `devroom h264-sample --out FILE` and `devroom mjpeg-sample --out FILE` write an H.264 or MJPEG
//! stream of a recognisable picture (the lab's passthrough test feeds them to v4l2loopback).
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "devroom",
    version,
    about = "A LiveKit-protocol room server for roomcast's tests and demo",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    serve: devroom::cli::Args,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a LiveKit token (HS256) for IDENTITY in ROOM, signed with devroom's key by default.
    MintToken(devroom::token::MintArgs),
    /// Write an Annex-B H.264 stream of four colour bands (an IDR every --gop frames) and print
    /// a JSON summary.
    H264Sample(devroom::sample::SampleArgs),
    /// Write concatenated baseline JPEGs of the same four colour bands (an MJPEG camera's
    /// frames) and print a JSON summary.
    MjpegSample(devroom::sample::MjpegArgs),
}

fn print_summary(summary: devroom::sample::SampleSummary) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::MintToken(args)) => devroom::token::mint_cli(args).map(|token| {
            println!("{token}");
            ExitCode::SUCCESS
        }),
        Some(Command::H264Sample(args)) => devroom::sample::run(args).and_then(print_summary),
        Some(Command::MjpegSample(args)) => {
            devroom::sample::run_mjpeg(args).and_then(print_summary)
        }
        None => roomcast::logging::init(None)
            .map_err(anyhow::Error::msg)
            .and_then(|()| devroom::cli::run(cli.serve)),
    };
    result.unwrap_or_else(|err| {
        eprintln!("devroom: {err:#}");
        ExitCode::FAILURE
    })
}
