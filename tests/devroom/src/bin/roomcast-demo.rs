//! `roomcast-demo [--seconds N] [--json]`: devroom in-process plus roomcast's device pipeline on
//! synthetic sources; what scripts/demo.sh runs.
use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "roomcast-demo",
    version,
    about = "Show roomcast's whole pipeline working on this machine: devroom in-process plus synthetic media"
)]
struct Cli {
    #[command(flatten)]
    args: devroom::demo::Args,
}

fn main() -> ExitCode {
    devroom::demo::run(Cli::parse().args).unwrap_or_else(|err| {
        eprintln!("roomcast-demo: {err:#}");
        ExitCode::FAILURE
    })
}
