//! `tessera serve`: the HTTP service.

use std::net::SocketAddr;
use std::time::Duration;

use tessera_core::{Stores, UserStore};
use tessera_server::Config;

use super::store::{AsyncStoreFn, ConfigArgs, Feed, redact, state, with_stores};
use crate::Failure;

/// How often a server catches up with the revocations in its store (see
/// `tessera_server::spawn_denylist_sync`): the bound on how long a revocation made elsewhere
/// can go unseen here when the change feed did not bring it.
const DENYLIST_SYNC: Duration = Duration::from_millis(500);

/// The settings `serve` reads, for `--help`; a test checks it names every one.
pub(crate) const SETTINGS_HELP: &str = "\
Settings (TOML key, environment variable; see examples/tessera.toml for defaults):
  listen                           TESSERA_LISTEN
  data_dir                         TESSERA_DATA_DIR
  issuer                           TESSERA_ISSUER
  database_url                     TESSERA_DATABASE_URL            (sqlite://PATH, postgres://… or memory:)
  redis_url                        TESSERA_REDIS_URL               (redis://…; sessions, denylist, change feed)
  redis_prefix                     TESSERA_REDIS_PREFIX
  instance_name                    TESSERA_INSTANCE_NAME           (sent as X-Tessera-Instance)
  allow_registration               TESSERA_ALLOW_REGISTRATION
  behind_tls_proxy                 TESSERA_BEHIND_TLS_PROXY
  tls_cert, tls_key                TESSERA_TLS_CERT, TESSERA_TLS_KEY
  trusted_proxies                  TESSERA_TRUSTED_PROXIES         (comma-separated IPs/CIDRs)
  body_limit                       TESSERA_BODY_LIMIT              (bytes)
  request_timeout                  TESSERA_REQUEST_TIMEOUT
  shutdown_grace                   TESSERA_SHUTDOWN_GRACE
  log_format                       TESSERA_LOG_FORMAT              (text or json)
  session.idle_timeout             TESSERA_SESSION_IDLE_TIMEOUT
  session.absolute_timeout         TESSERA_SESSION_ABSOLUTE_TIMEOUT
  session.cache_ttl                TESSERA_SESSION_CACHE_TTL       (0s: read the store every time)
  session.max_per_user             TESSERA_SESSION_MAX_PER_USER    (0: no bound)
  password.min_length              TESSERA_PASSWORD_MIN_LENGTH
  password.memory_kib              TESSERA_PASSWORD_MEMORY_KIB
  password.iterations              TESSERA_PASSWORD_ITERATIONS
  password.parallelism             TESSERA_PASSWORD_PARALLELISM
  password.hash_concurrency        TESSERA_PASSWORD_HASH_CONCURRENCY
  password.hash_queue              TESSERA_PASSWORD_HASH_QUEUE     (logins waiting; past it 503)
  password.hash_nice               TESSERA_PASSWORD_HASH_NICE      (0-19: hashing's share of a busy core)
  throttle.account_free_attempts   TESSERA_THROTTLE_ACCOUNT_FREE_ATTEMPTS
  throttle.ip_free_attempts        TESSERA_THROTTLE_IP_FREE_ATTEMPTS
  throttle.base_delay              TESSERA_THROTTLE_BASE_DELAY
  throttle.max_delay               TESSERA_THROTTLE_MAX_DELAY
  throttle.window                  TESSERA_THROTTLE_WINDOW
  throttle.device_ttl              TESSERA_THROTTLE_DEVICE_TTL     (device cookies: see README)
  tokens.algorithm                 TESSERA_TOKENS_ALGORITHM        (EdDSA, ES256, RS256, HS256)
  tokens.access_ttl                TESSERA_TOKENS_ACCESS_TTL
  tokens.audience                  TESSERA_TOKENS_AUDIENCE
  tokens.client_id                 TESSERA_TOKENS_CLIENT_ID
  tokens.scope                     TESSERA_TOKENS_SCOPE
  tokens.key_activation_delay      TESSERA_TOKENS_KEY_ACTIVATION_DELAY
  tokens.refresh_idle              TESSERA_TOKENS_REFRESH_IDLE
  tokens.refresh_absolute          TESSERA_TOKENS_REFRESH_ABSOLUTE
  tokens.refresh_grace             TESSERA_TOKENS_REFRESH_GRACE
  tokens.max_refresh_families      TESSERA_TOKENS_MAX_REFRESH_FAMILIES (per person and client; past it the oldest is revoked)
  tokens.verified_cache_size       TESSERA_TOKENS_VERIFIED_CACHE_SIZE (0: verify every time)
  tokens.introspection_stale_denylist  TESSERA_TOKENS_INTROSPECTION_STALE_DENYLIST (closed|open)
  connections.header_read_timeout  TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT
  connections.idle_timeout         TESSERA_CONNECTIONS_IDLE_TIMEOUT  (keep-alive, nothing in flight)
  connections.tls_handshake_timeout  TESSERA_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT
  connections.max                  TESSERA_CONNECTIONS_MAX         (0: from the descriptor limit)
  stores.timeout                   TESSERA_STORES_TIMEOUT          (a read from the database or Redis; past it, and a ping too, the store is marked down)
  stores.write_timeout             TESSERA_STORES_WRITE_TIMEOUT    (a write, which may wait for a lock)
  stores.retry                     TESSERA_STORES_RETRY            (while down, one probe this often)
  pages.name                       TESSERA_PAGES_NAME              (the service's name on every page)
  pages.logo                       TESSERA_PAGES_LOGO              (an .svg, .png, .jpg or .webp file, at most 256 KiB)
  pages.scopes                     (TOML only) a table: scope = \"what it lets an application do\", shown on the consent and account pages
The master key that seals signing keys: TESSERA_MASTER_KEY (base64url, 32 bytes) or
DATA_DIR/master.key (created owner-only on first start). DATA_DIR is kept 0700 and the SQLite
database 0600 (tightened at start if they were open to others).
Durations are strings: \"250ms\", \"90s\", \"15m\", \"12h\", \"7d\".";

/// Arguments of `tessera serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: ConfigArgs,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The public URL of this service (default: http://LISTEN).
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let mut config = args.common.load()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(issuer) = args.issuer {
        config.issuer = Some(issuer);
    }
    crate::logging(&config.log_format);
    config
        .check_transport()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let runtime = super::runtime()?;
    runtime.block_on(with_stores(&config, true, Serve))
}

struct Serve;

impl AsyncStoreFn<()> for Serve {
    async fn call<U: UserStore + Clone, S: Stores + Clone>(
        self,
        config: &Config,
        users: U,
        sessions: S,
        feed: Option<Feed>,
    ) -> Result<(), Failure> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                tessera_server::tls::server_config(cert, key)
                    .map_err(|e| Failure::usage(e.to_string()))?,
            ),
            _ => None,
        };
        let state = state(config, users, sessions).await?;
        tessera_server::spawn_purger(&state, Duration::from_secs(60));
        tessera_server::spawn_key_refresher(&state, Duration::from_secs(2));
        tessera_server::spawn_denylist_sync(&state, DENYLIST_SYNC);
        if let Some(feed) = feed {
            tessera_server::spawn_change_listener(&state, feed.changes, feed.evict);
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Failure::refused(format!("cannot listen on {}: {e}", config.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::refused(format!("cannot read the listening address: {e}")))?;
        let limits = tessera_server::conn::Limits::from_config(&config.connections);
        tracing::info!(listen = %local, issuer = %config.issuer(), database = %redact(&config.database_url()), max_connections = limits.max, "tessera is serving");
        let grace = config.shutdown_grace.0;
        let router = tessera_server::router(state, config);
        // On SIGTERM the listener closes and requests in flight get `grace` to finish.
        let (stopping, mut stopped) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        };
        let deadline = async move {
            let _ = stopped.changed().await;
            tokio::time::sleep(grace).await;
        };
        let server = async move {
            match tls {
                Some(tls) => {
                    tessera_server::tls::serve_tls(listener, router, tls, &limits, signal).await
                }
                None => tessera_server::serve_with(listener, router, &limits, signal).await,
            }
        };
        tokio::select! {
            r = server => {
                r.map_err(|e| Failure::refused(format!("the server failed: {e}")))?;
            }
            () = deadline => {
                tracing::warn!(grace_secs = grace.as_secs(), "requests still in flight after the grace period were cut off");
            }
        }
        tracing::info!("tessera stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    #[test]
    fn help_and_example_config_name_every_setting() {
        let example = include_str!("../../../../examples/tessera.toml");
        for (var, key) in tessera_server::config::ENV_KEYS {
            assert!(super::SETTINGS_HELP.contains(var), "--help lacks {var}");
            let leaf = key.rsplit('.').next().unwrap_or(key);
            assert!(super::SETTINGS_HELP.contains(leaf), "--help lacks {key}");
            assert!(example.contains(var), "examples/tessera.toml lacks {var}");
            assert!(example.contains(leaf), "examples/tessera.toml lacks {key}");
        }
        // The example parses, and its values are the defaults.
        let dir = std::env::temp_dir().join(format!("tessera-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tessera.toml");
        std::fs::write(&file, example).unwrap();
        let parsed = tessera_server::Config::load(Some(&file), Vec::new()).unwrap();
        let defaults = tessera_server::Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
