//! `roomcast check-config FILE`.
use std::path::Path;
use std::process::ExitCode;

pub fn check_config(_file: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check-config is not implemented yet")
}
