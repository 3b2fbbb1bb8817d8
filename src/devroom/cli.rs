//! `roomcast devroom --listen ADDR --keys KEY:SECRET`.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:7880")]
    pub listen: String,
    #[arg(long, default_value = "devkey:secret")]
    pub keys: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("devroom is not implemented yet")
}
