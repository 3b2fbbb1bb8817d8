//! `roomcast demo`: devroom in-process on loopback plus the device pipeline on synthetic sources.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to publish.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo is not implemented yet")
}
