//! The refreshed-token cache: a small JSON file in `state_dir`, written atomically with mode 0600,
//! holding the newest server refresh_token per (server URL, room, identity).
use super::AuthError;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const CACHE_FILE: &str = "token-cache.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCache {
    path: PathBuf,
    /// (server URL, room, identity) that `store` files tokens under (set by `for_config`).
    key: Option<(String, String, String)>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    url: String,
    room: String,
    identity: String,
    token: String,
    /// unix seconds
    expires_at: u64,
}

impl TokenCache {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(CACHE_FILE),
            key: None,
        }
    }

    /// The cache for this config's server/room/identity (None without `state_dir`): what
    /// `TokenProvider` reads on the next join.
    pub fn for_config(cfg: &crate::config::Config) -> Option<Self> {
        let dir = cfg.state_dir.as_deref()?;
        let (room, identity) = super::cache_key_for(cfg);
        Some(Self {
            key: Some((cfg.url.clone(), room?, identity)),
            ..Self::in_dir(dir)
        })
    }

    /// Keep a server refresh_token under this cache's key (see `for_config`).
    pub fn store(&self, token: &str) -> Result<(), AuthError> {
        let Some((url, room, identity)) = &self.key else {
            return Err(AuthError::Cache {
                path: self.path.display().to_string(),
                reason: "no key: build the cache with TokenCache::for_config".into(),
            });
        };
        let info = super::inspect_token(token)?;
        self.put(url, room, identity, token, info.expires_at)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> CacheFile {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                // A damaged cache only costs us the shortcut: the configured source still works.
                tracing::warn!(path = %self.path.display(), %err, "ignoring unreadable token cache");
                CacheFile::default()
            }),
            Err(_) => CacheFile::default(),
        }
    }

    /// The cached token for this key, if it has not expired at `now`.
    pub fn get(&self, url: &str, room: &str, identity: &str, now: SystemTime) -> Option<String> {
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        self.read()
            .entries
            .into_iter()
            .find(|e| {
                e.url == url && e.room == room && e.identity == identity && e.expires_at > now
            })
            .map(|e| e.token)
    }

    /// Store (replace) the token for this key; expired entries are dropped on the way.
    pub fn put(
        &self,
        url: &str,
        room: &str,
        identity: &str,
        token: &str,
        expires_at: u64,
    ) -> Result<(), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut file = self.read();
        file.entries.retain(|e| {
            !(e.url == url && e.room == room && e.identity == identity) && e.expires_at > now
        });
        file.entries.push(Entry {
            url: url.into(),
            room: room.into(),
            identity: identity.into(),
            token: token.into(),
            expires_at,
        });
        self.write(&file)
    }

    pub fn remove(&self, url: &str, room: &str, identity: &str) -> Result<(), AuthError> {
        let mut file = self.read();
        file.entries
            .retain(|e| !(e.url == url && e.room == room && e.identity == identity));
        self.write(&file)
    }

    /// Write to a temporary file (0600) in the same directory, fsync, rename over the old one:
    /// a crash leaves either the old or the new cache, never half of one.
    fn write(&self, file: &CacheFile) -> Result<(), AuthError> {
        let fail = |err: std::io::Error| AuthError::Cache {
            path: self.path.display().to_string(),
            reason: err.to_string(),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
        let tmp = dir.join(format!(".{CACHE_FILE}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            out.write_all(&serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?)?;
            out.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // Make the rename itself durable.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(fail)
    }
}
