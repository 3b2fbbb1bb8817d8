//! `roomcast run --config FILE`.
use std::path::Path;
use std::process::ExitCode;

pub fn run(_config: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("run is not implemented yet")
}
