//! `roomcast check-config FILE`: validate and print the effective config, secrets redacted.
use std::path::Path;
use std::process::ExitCode;

pub fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    match super::load(file) {
        Ok(config) => {
            println!(
                "# {}: OK. Effective configuration (defaults filled in, secrets redacted):",
                file.display()
            );
            if config.identity_is_default {
                println!("# identity defaults to this machine's hostname");
            }
            if config.state_dir.is_none() {
                println!("# no state_dir: refreshed tokens are not kept across restarts");
            }
            print!("{}", config.to_redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("roomcast: invalid config: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}
