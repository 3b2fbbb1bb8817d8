//! The one TOML config file: schema, validation with located errors, secrets. (Owner: config/auth/session work.)
pub mod cli;
