//! What `serve` and the administration commands share: the configuration and the stores it
//! names, so that an administrator works on the very store the server uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::{MasterKey, Stores, UserStore};
use tessera_jose::SystemClock;
use tessera_server::{AppState, Config};
use tessera_store::{CachedStore, MemoryStore, SqliteStore};

use crate::Failure;

/// Options every stateful command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConfigArgs {
    /// A TOML configuration file (see examples/tessera.toml). Also TESSERA_CONFIG.
    #[arg(long, value_name = "FILE", env = "TESSERA_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory (SQLite database, keys); created if missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// Defaults, the file, `TESSERA_…` variables, then these flags.
    pub fn load(&self) -> Result<Config, Failure> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())
            .map_err(|e| Failure::usage(e.to_string()))?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

/// How long a cached session or user may be served without asking SQLite again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// How often a serving process checks whether another process ended sessions or disabled users.
const GENERATION_POLL: Duration = Duration::from_millis(250);

/// Runs `f` with the stores the configuration names. With `cache` (the server), SQLite reads of
/// sessions and users go through an in-process cache that learns of other processes' changes
/// within [`GENERATION_POLL`].
pub(crate) async fn with_stores<T>(
    config: &Config,
    cache: bool,
    f: impl AsyncStoreFn<T>,
) -> Result<T, Failure> {
    let url = config.database_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Failure::refused(format!(
                    "cannot create the data directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let store = SqliteStore::open(&url)
            .await
            .map_err(|e| Failure::refused(format!("cannot open the database: {e}")))?;
        let out = if cache {
            let cached = CachedStore::new(store.clone(), CACHE_TTL, 100_000);
            let watch = store.watch_generation(cached.clone(), GENERATION_POLL);
            let out = f.call(config, cached.clone(), cached).await;
            watch.abort();
            out
        } else {
            f.call(config, store.clone(), store.clone()).await
        };
        store.close().await;
        out
    } else if url == "memory:" {
        let store = MemoryStore::new();
        f.call(config, store.clone(), store).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Err(Failure::usage(
            "PostgreSQL support is not built into this tessera yet; use sqlite://PATH",
        ))
    } else {
        Err(Failure::usage(format!(
            "unsupported database_url `{url}` (use sqlite://PATH or memory:)"
        )))
    }
}

/// A generic async callback over the two stores (a trait because closures cannot be generic).
pub(crate) trait AsyncStoreFn<T> {
    fn call<U: UserStore + Clone, S: Stores + Clone>(
        self,
        config: &Config,
        users: U,
        sessions: S,
    ) -> impl Future<Output = Result<T, Failure>>;
}

/// The master key that seals signing keys: `TESSERA_MASTER_KEY` (base64url, 32 bytes), or
/// `DATA_DIR/master.key`, created owner-only on first use.
pub(crate) fn master_key(config: &Config) -> Result<MasterKey, Failure> {
    match std::env::var("TESSERA_MASTER_KEY") {
        Ok(text) => MasterKey::from_text(&text)
            .map_err(|e| Failure::usage(format!("TESSERA_MASTER_KEY: {e}"))),
        Err(_) => MasterKey::load_or_create(&config.data_dir.join("master.key"))
            .map_err(|e| Failure::refused(e.to_string())),
    }
}

/// The service over the stores, on the system clock.
pub(crate) async fn state<U: UserStore, S: Stores + Clone>(
    config: &Config,
    users: U,
    sessions: S,
) -> Result<AppState<U, S>, Failure> {
    let master = master_key(config)?;
    tessera_server::build(config, users, sessions, Arc::new(SystemClock), master)
        .await
        .map_err(|e| Failure::usage(e.to_string()))
}
