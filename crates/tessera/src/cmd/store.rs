//! What `serve` and the administration commands share: the configuration and the stores it
//! names, so that an administrator works on the very store the server uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_core::{MasterKey, Stores};
use tessera_server::AppState;

use crate::config::Config;
use tessera_store::{
    CachedStore, ChangeBus, Circuit, CircuitSettings, Generation, Guarded, MemoryStore, SqliteStore,
};

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

/// How long a cached session or user may be served without asking the store again (changes
/// made elsewhere arrive through the change feed long before).
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most sessions (and as many users) cached.
const CACHE_CAPACITY: usize = 100_000;
/// How often a serving process without Redis polls the database for changes made by another
/// process (the CLI, or another instance on the same PostgreSQL).
const GENERATION_POLL: Duration = Duration::from_millis(250);

/// Runs `f` with the stores the configuration names: `database_url` (SQLite, PostgreSQL or
/// memory) and, if set, `redis_url` for sessions, the denylist and the change feed. With
/// `serve`, reads of sessions and users go through an in-process cache, and `f` gets the change
/// bus that keeps that cache (and, subscribed, the server's denylist and keys) true to changes
/// made elsewhere.
pub(crate) async fn with_stores<T>(
    config: &Config,
    serve: bool,
    f: impl AsyncStoreFn<T>,
) -> Result<T, Failure> {
    let url = config.database_url();
    private_dir(&config.data_dir, url.starts_with("sqlite://"))?;
    if url.starts_with("sqlite://") {
        let store = open_sqlite(&url).await?;
        let out = with_redis(config, serve, store.clone(), f).await;
        store.close().await;
        out
    } else if url == "memory:" {
        if config.redis_url.is_some() {
            return Err(Failure::usage(
                "database_url `memory:` keeps nothing to share; use redis_url with sqlite:// or postgres://",
            ));
        }
        let store = MemoryStore::new();
        f.call(config, store, None).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres(config, serve, &url, f).await
    } else {
        Err(Failure::usage(format!(
            "unsupported database_url `{}` (use sqlite://PATH, postgres://… or memory:)",
            redact(&url)
        )))
    }
}

/// DATA_DIR holds the database and the master key: readable by its owner only (0700). Created
/// so if `create` and missing; an existing one open to others is tightened, and the log says so.
/// Only DATA_DIR itself is touched, never a directory above it.
pub(crate) fn private_dir(dir: &Path, create: bool) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::refused(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ))
    };
    if create && !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(fail)?;
    }
    tighten(dir, 0o700)
}

/// Clears the group and other permission bits of `path` if any is set (and it exists), with a
/// warning in the log naming the file and its old mode.
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    // SQLite's own side files are never symlinks: one there was planted, and following it
    // would change the mode of whatever it points to. (The database and DATA_DIR may be links
    // an operator made to another volume; their target is what is judged and changed.)
    let side_file = path
        .to_str()
        .is_some_and(|p| p.ends_with("-wal") || p.ends_with("-shm"));
    if side_file && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        tracing::warn!(path = %path.display(), "is a symbolic link; its mode is left alone");
        return Ok(());
    }
    // The mode judged is the one set_permissions changes: the target of a symlink.
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let old = meta.permissions().mode() & 0o7777;
    if old & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        Failure::refused(format!(
            "{} is readable by others and cannot be made private: {e}",
            path.display()
        ))
    })?;
    tracing::warn!(
        path = %path.display(),
        old_mode = format_args!("{old:o}"),
        new_mode = format_args!("{mode:o}"),
        "was open to other users; made private"
    );
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: u32) -> Result<(), Failure> {
    Ok(())
}

/// Opens (creating its directory and the file if needed) and migrates a SQLite database. The
/// file is created readable by its owner only (0600) before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the database file's mode); an existing one, or its `-wal`/`-shm`,
/// open to others is tightened.
pub(crate) async fn open_sqlite(url: &str) -> Result<SqliteStore, Failure> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = Path::new(path.split('?').next().unwrap_or(path));
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            private_dir(parent, true)?;
        }
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        open.open(path).map_err(|e| {
            Failure::refused(format!(
                "cannot create the database {}: {e}",
                path.display()
            ))
        })?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            tighten(Path::new(&name), 0o600)?;
        }
    }
    SqliteStore::open(url)
        .await
        .map_err(|e| Failure::refused(format!("cannot open the database: {e}")))
}

#[cfg(feature = "postgres")]
async fn postgres<T>(
    config: &Config,
    serve: bool,
    url: &str,
    f: impl AsyncStoreFn<T>,
) -> Result<T, Failure> {
    let store = tessera_store::PostgresStore::open(url)
        .await
        .map_err(|e| Failure::refused(format!("cannot open the database: {e}")))?;
    crate::audit::attach(store.clone());
    let out = with_redis(config, serve, store.clone(), f).await;
    crate::audit::flush().await;
    store.close().await;
    out
}

#[cfg(not(feature = "postgres"))]
async fn postgres<T>(_: &Config, _: bool, _: &str, _: impl AsyncStoreFn<T>) -> Result<T, Failure> {
    Err(Failure::usage(
        "this tessera was built without PostgreSQL support (cargo feature `postgres`)",
    ))
}

/// `db` alone, or paired with Redis when `redis_url` is set; cached when serving.
async fn with_redis<D, T>(
    config: &Config,
    serve: bool,
    db: D,
    f: impl AsyncStoreFn<T>,
) -> Result<T, Failure>
where
    D: tessera_core::AllConcerns + Stores + Generation + tessera_store::Probe,
{
    if serve {
        // Serving, every call to a store goes through its circuit.
        let db = Guarded::new(db, circuit("database", config));
        return alone_or_shared(config, serve, db, f).await;
    }
    alone_or_shared(config, serve, db, f).await
}

/// `db` alone, or with Redis when `redis_url` is set.
async fn alone_or_shared<D, T>(
    config: &Config,
    serve: bool,
    db: D,
    f: impl AsyncStoreFn<T>,
) -> Result<T, Failure>
where
    D: Stores + Generation + tessera_store::Probe,
{
    match &config.redis_url {
        Some(redis_url) => shared(config, serve, db, redis_url, f).await,
        None => alone(config, serve, db, f).await,
    }
}

/// A store's circuit with the `[stores]` settings.
fn circuit(name: &'static str, config: &Config) -> Arc<Circuit> {
    Circuit::new(
        name,
        CircuitSettings {
            timeout: config.stores.timeout.0,
            write_timeout: config.stores.write_timeout.0,
            retry: config.stores.retry.0,
        },
    )
}

/// `db` alone: other processes' changes are learnt by polling its generation.
async fn alone<D, T>(
    config: &Config,
    serve: bool,
    db: D,
    f: impl AsyncStoreFn<T>,
) -> Result<T, Failure>
where
    D: Stores + Generation + tessera_store::Probe,
{
    let watched = db.clone();
    run(config, serve, db, f, move |bus| {
        tessera_store::watch_generation(watched, GENERATION_POLL, bus)
    })
    .await
}

#[cfg(not(feature = "redis"))]
async fn shared<D, T>(
    _: &Config,
    _: bool,
    _: D,
    _: &str,
    _: impl AsyncStoreFn<T>,
) -> Result<T, Failure>
where
    D: Stores + Generation + tessera_store::Probe,
{
    Err(Failure::usage(
        "this tessera was built without Redis support (cargo feature `redis`)",
    ))
}

#[cfg(feature = "redis")]
async fn shared<D, T>(
    config: &Config,
    serve: bool,
    db: D,
    redis_url: &str,
    f: impl AsyncStoreFn<T>,
) -> Result<T, Failure>
where
    D: Stores + Generation + tessera_store::Probe,
{
    let redis = open_redis(config, redis_url)?;
    let feed = redis.clone();
    let follow = move |bus| feed.follow_changes(bus);
    if serve {
        let guarded = Guarded::new(redis, circuit("redis", config));
        let shared = tessera_store::SharedStore::new(db, guarded);
        return run(config, serve, shared, f, follow).await;
    }
    let shared = tessera_store::SharedStore::new(db, redis);
    run(config, serve, shared, f, follow).await
}

#[cfg(feature = "redis")]
fn open_redis(config: &Config, url: &str) -> Result<tessera_store::RedisStore, Failure> {
    let form = match config.session.redis_form.as_str() {
        "fields" => tessera_store::SessionForm::Fields,
        _ => tessera_store::SessionForm::Compact,
    };
    tessera_store::RedisStore::open(
        url,
        &config.redis_prefix,
        Arc::new(tessera_jose::SystemClock),
        tessera_server::LEEWAY,
    )
    .map(|r| r.writing(form))
    .map_err(|e| Failure::usage(format!("redis_url: {e}")))
}

/// Runs `f` on `store`. Serving, reads go through a cache; the change feed `follow` starts
/// publishes on the change bus, which the cache follows and `f` gets to subscribe to (the
/// server's denylist and keys); the feed stops when `f` returns.
async fn run<D, T>(
    config: &Config,
    serve: bool,
    store: D,
    f: impl AsyncStoreFn<T>,
    follow: impl FnOnce(ChangeBus) -> tokio::task::JoinHandle<()>,
) -> Result<T, Failure>
where
    D: Stores + Clone,
{
    if !serve {
        return f.call(config, store, None).await;
    }
    let bus = ChangeBus::new();
    let cache =
        CachedStore::with_session_ttl(store, CACHE_TTL, config.session.cache_ttl.0, CACHE_CAPACITY);
    // Subscribed before the feed starts: its first Everything reaches every holder.
    let evicting = cache.follow(&bus);
    let listening = bus.clone();
    let feed = follow(bus);
    let out = f.call(config, cache, Some(listening)).await;
    feed.abort();
    evicting.abort();
    out
}

/// A generic async callback over the store (a trait because closures cannot be generic).
pub(crate) trait AsyncStoreFn<T> {
    fn call<S: Stores + Clone>(
        self,
        config: &Config,
        store: S,
        feed: Option<ChangeBus>,
    ) -> impl Future<Output = Result<T, Failure>>;
}

/// A database URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
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

/// The HSM new signing keys are made and sign in, with `keys.backend = "pkcs11"`: the module
/// loaded, the token found by its label and logged in with the PIN of
/// `TESSERA_KEYS_PKCS11_PIN` or `keys.pkcs11_pin_file`. A wrong PIN, a module that does not load
/// or a token that is not there fails the start (exit 2), in one sentence that holds no PIN.
pub(crate) fn vault(config: &Config) -> Result<Option<Arc<dyn tessera_core::KeyVault>>, Failure> {
    use crate::config::KeyBackend;
    let k = &config.keys;
    if k.backend == KeyBackend::Store {
        return Ok(None);
    }
    let (Some(module), Some(label)) = (&k.pkcs11_module, &k.pkcs11_token_label) else {
        return Err(Failure::usage(
            "keys.backend = pkcs11 needs keys.pkcs11_module and keys.pkcs11_token_label",
        ));
    };
    let pin = match (std::env::var("TESSERA_KEYS_PKCS11_PIN"), &k.pkcs11_pin_file) {
        (Ok(pin), _) => zeroize::Zeroizing::new(pin),
        (Err(_), Some(file)) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
                Failure::usage(format!(
                    "cannot read keys.pkcs11_pin_file {}: {e}",
                    file.display()
                ))
            })?);
            zeroize::Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        (Err(_), None) => {
            return Err(Failure::usage(
                "keys.backend = pkcs11 needs the token's PIN: TESSERA_KEYS_PKCS11_PIN or keys.pkcs11_pin_file",
            ));
        }
    };
    let sessions = match k.pkcs11_sessions {
        0 => 2 * std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let vault = tessera_pkcs11::Pkcs11Vault::open(tessera_pkcs11::Pkcs11Settings {
        module: module.clone(),
        token_label: label.clone(),
        pin,
        sessions,
    })
    .map_err(|e| Failure::usage(format!("keys.backend = pkcs11: {e}")))?;
    tracing::info!(module = %module.display(), token = %tessera_core::logsafe::Untrusted(label), sessions, "signing keys in a PKCS#11 token");
    Ok(Some(Arc::new(vault)))
}

/// The domain service over the store, on the system clock: what the CLI's commands need, with
/// nothing of HTTP.
pub(crate) async fn service<S: Stores + Clone>(
    config: &Config,
    store: S,
) -> Result<tessera_core::Service<S>, Failure> {
    let mut settings =
        tessera_server::service_settings(config).map_err(|e| Failure::usage(e.to_string()))?;
    settings.vault = vault(config)?;
    let master = master_key(config)?;
    tessera_core::Service::start(store, settings, Arc::new(tessera_jose::SystemClock), master)
        .await
        .map_err(|e| Failure::usage(e.to_string()))
}

/// The server's state over the store (the service, and what HTTP adds), on the system clock.
pub(crate) async fn state<S: Stores + Clone>(
    config: &Config,
    store: S,
) -> Result<AppState<S>, Failure> {
    let master = master_key(config)?;
    let vault = vault(config)?;
    tessera_server::build_with(
        config,
        store,
        Arc::new(tessera_jose::SystemClock),
        master,
        vault,
    )
    .await
    .map_err(|e| Failure::usage(e.to_string()))
}
