//! Secret values: literal, `{ file = "/path" }` or `{ env = "VAR" }`, resolved at load time and
//! never printed (Debug and check-config show only where they came from).
use super::schema::{KeyIndex, RawSecret};
use super::{ConfigError, ConfigErrorKind, Ctx};
use std::fmt;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Literal,
    File(PathBuf),
    Env(String),
}

/// A resolved secret. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

impl Secret {
    pub fn literal(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            source: SecretSource::Literal,
        }
    }
    /// The secret itself: hand it only to what needs it (JWT signing, Authorization header).
    pub fn expose(&self) -> &str {
        &self.value
    }
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
    /// How check-config shows it: where it came from, never the value.
    pub fn redacted(&self) -> toml::Value {
        match &self.source {
            SecretSource::Literal => toml::Value::from("<redacted>"),
            SecretSource::File(path) => {
                let mut t = toml::Table::new();
                t.insert("file".into(), path.display().to_string().into());
                t.into()
            }
            SecretSource::Env(var) => {
                let mut t = toml::Table::new();
                t.insert("env".into(), var.clone().into());
                t.into()
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?}, <redacted>)", self.source)
    }
}

pub(super) fn resolve(
    ctx: &Ctx,
    index: &KeyIndex,
    key: &str,
    raw: Spanned<RawSecret>,
) -> Result<Secret, ConfigError> {
    let line = Some(ctx.line_of(raw.span().start));
    let fail = |sub: &str, message: String, fix: String| {
        let path = if sub.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{sub}")
        };
        let line = index.line(ctx, &path).or(line);
        ctx.error(ConfigErrorKind::Secret, &path, line, message, fix)
    };
    let secret = match raw.into_inner() {
        RawSecret::Literal(value) => Secret {
            value,
            source: SecretSource::Literal,
        },
        RawSecret::Ref {
            file: Some(file),
            env: None,
        } => {
            let mut path = PathBuf::from(&file);
            if path.is_relative() {
                // Relative to the config file, so a config and its secret files travel together.
                if let Some(dir) = ctx.file.parent() {
                    path = dir.join(path);
                }
            }
            let value = std::fs::read_to_string(&path).map_err(|err| {
                fail(
                    "file",
                    format!("cannot read the secret file {}: {err}", path.display()),
                    "create the file (mode 0600) or point `file` at the right path".into(),
                )
            })?;
            Secret {
                value: value.trim_end_matches(['\n', '\r']).trim().to_string(),
                source: SecretSource::File(path),
            }
        }
        RawSecret::Ref {
            file: None,
            env: Some(var),
        } => {
            let value = std::env::var(&var).map_err(|_| {
                fail(
                    "env",
                    format!("the environment variable `{var}` is not set (or not UTF-8)"),
                    format!("export {var}=... in the service environment, or use {{ file = \"/path\" }}"),
                )
            })?;
            Secret {
                value,
                source: SecretSource::Env(var),
            }
        }
        _ => {
            return Err(fail(
                "",
                "a secret reference needs exactly one of `file` or `env`".into(),
                format!("write `{key} = {{ file = \"/path\" }}` or `{key} = {{ env = \"VAR\" }}`"),
            ))
        }
    };
    if secret.value.is_empty() {
        return Err(fail(
            "",
            "the secret is empty".into(),
            format!("give `{key}` a non-empty value"),
        ));
    }
    Ok(secret)
}
