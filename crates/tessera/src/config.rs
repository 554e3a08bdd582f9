//! The configuration of the `tessera` process: the server's settings ([`tessera_server::Config`],
//! declared in tessera-server) and the process's own, declared here: where the data and the
//! stores are, how calls to them are bounded, the log format and the shutdown grace. One file
//! and one set of `TESSERA_…` variables hold both; each part takes its keys, and a key neither
//! declares is refused.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_server::config::{ConfigError, Dur};
use tessera_server::settings::{
    self,
    Kind::{Number, Text},
    Section, Setting,
};

/// The process's settings, in the order `--help` and the example file show them.
pub(crate) const SETTINGS: &[Setting] = &[
    Setting::new("data_dir", Text, "SQLite file and keys; created if missing"),
    Setting::sample(
        "database_url",
        Text,
        "\"postgres://user:pass@db:5432/tessera\"",
        "sqlite://PATH (default DATA_DIR/tessera.db), postgres://… for a cluster, or memory:",
    ),
    Setting::sample(
        "redis_url",
        Text,
        "\"redis://redis:6379\"",
        "redis://…: sessions, login throttle and change feed",
    ),
    Setting::new("redis_prefix", Text, "every Redis key starts with it"),
    Setting::new(
        "shutdown_grace",
        Text,
        "after SIGTERM, for requests in flight",
    ),
    Setting::new("log_format", Text, "text or json"),
    Setting::new(
        "stores.timeout",
        Text,
        "a read from the database or Redis; past it, and a ping too, the store is marked down",
    ),
    Setting::new(
        "stores.write_timeout",
        Text,
        "a write, which may wait for a row another holds",
    ),
    Setting::new(
        "stores.retry",
        Text,
        "while a store is down, one probe this often",
    ),
    Setting::new(
        "keys.backend",
        Text,
        "where signing keys are made and sign: store (sealed under the master key) or pkcs11 (an HSM)",
    ),
    Setting::sample(
        "keys.pkcs11_module",
        Text,
        "\"/usr/lib/softhsm/libsofthsm2.so\"",
        "the PKCS#11 library of the HSM, cloud KMS or SoftHSM2",
    ),
    Setting::sample(
        "keys.pkcs11_token_label",
        Text,
        "\"tessera\"",
        "the label of the token that holds the keys",
    ),
    Setting::sample(
        "keys.pkcs11_pin_file",
        Text,
        "\"/run/secrets/hsm-pin\"",
        "a file holding the token's user PIN, if TESSERA_KEYS_PKCS11_PIN is not set",
    ),
    Setting::new(
        "keys.pkcs11_sessions",
        Number,
        "sessions to the token, so signatures at once (0: two per core)",
    ),
];

/// Every table of settings `tessera` reads: the process's, then the server's.
const TABLES: &[&[Setting]] = &[SETTINGS, settings::SETTINGS];

/// Everything `tessera` reads: the process's settings, and (through `Deref`) the server's.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Where the SQLite database and keys live; created if missing.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default: `DATA_DIR/tessera.db`), `postgres://…` (a cluster's shared
    /// database) or `memory:` (nothing kept).
    pub database_url: Option<String>,
    /// `redis://…`: sessions, the login throttle and the change feed of a cluster live there.
    pub redis_url: Option<String>,
    /// The prefix of every Redis key, so that deployments can share one Redis.
    pub redis_prefix: String,
    /// How long requests in flight get to finish after SIGTERM.
    pub shutdown_grace: Dur,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Calls to the stores: timeout and retry.
    pub stores: StoresConfig,
    /// Where signing keys are made and sign.
    pub keys: KeysConfig,
    /// The server's settings.
    #[serde(skip)]
    pub server: tessera_server::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("tessera-data"),
            database_url: None,
            redis_url: None,
            redis_prefix: "tessera".into(),
            shutdown_grace: Dur(Duration::from_secs(30)),
            log_format: "text".into(),
            stores: StoresConfig::default(),
            keys: KeysConfig::default(),
            server: tessera_server::Config::default(),
        }
    }
}

/// Calls to the stores (the database, Redis): how long one may take, and how often a store
/// that failed is tried again.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StoresConfig {
    /// The bound on a read (a statement, a Redis command): the hot path. A read past it fails,
    /// and the store is probed (a ping); if the probe does not answer within it either, the
    /// store is marked down for every request: calls then fail at once (and fall back to what
    /// is cached) until a probe succeeds.
    pub timeout: Dur,
    /// The bound on a write (a transaction, which may wait for a row another holds).
    pub write_timeout: Dur,
    /// While a store is marked down, one call is let through this often as a probe.
    pub retry: Dur,
}

impl Default for StoresConfig {
    fn default() -> Self {
        StoresConfig {
            timeout: Dur(Duration::from_millis(500)),
            write_timeout: Dur(Duration::from_secs(2)),
            retry: Dur(Duration::from_millis(500)),
        }
    }
}

/// Where signing keys are made and sign: in the store, sealed under the master key, or in a
/// PKCS#11 token (an HSM), which never lets them out. The PIN is never in the file:
/// `TESSERA_KEYS_PKCS11_PIN`, or the file `pkcs11_pin_file`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KeysConfig {
    /// `store` or `pkcs11`.
    pub backend: KeyBackend,
    /// The PKCS#11 library.
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the token holding the keys.
    pub pkcs11_token_label: Option<String>,
    /// A file holding the user PIN.
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Sessions to the token (0: two per core).
    pub pkcs11_sessions: usize,
}

/// Where signing keys live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyBackend {
    /// In the store, sealed under the master key.
    #[default]
    Store,
    /// In a PKCS#11 token.
    Pkcs11,
}

impl Section for Config {
    const SETTINGS: &'static [Setting] = SETTINGS;

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_owned()));
        if self.stores.timeout.0.is_zero()
            || self.stores.write_timeout.0.is_zero()
            || self.stores.retry.0.is_zero()
        {
            return bad(
                "stores.timeout, stores.write_timeout and stores.retry must be longer than zero",
            );
        }
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
        {
            return bad(
                "redis_url must be a redis:// URL (TLS to Redis is not built in: keep Redis on a private network)",
            );
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return bad("redis_prefix must be a non-empty word");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format is `text` or `json`");
        }
        if self.keys.backend == KeyBackend::Pkcs11
            && (self.keys.pkcs11_module.is_none() || self.keys.pkcs11_token_label.is_none())
        {
            return bad(
                "keys.backend = pkcs11 needs keys.pkcs11_module and keys.pkcs11_token_label",
            );
        }
        Ok(())
    }
}

impl Config {
    /// Defaults, then the file (if any), then `env` overrides (`TESSERA_…` pairs).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc = settings::read(file, env, TABLES)?;
        let server = settings::take::<tessera_server::Config>(&mut doc)?;
        let config = settings::take::<Config>(&mut doc)?;
        settings::nothing_left(&doc)?;
        if config.keys.backend == KeyBackend::Pkcs11
            && tessera_jose::Algorithm::from_name(&server.tokens.algorithm)
                .is_some_and(tessera_jose::Algorithm::is_symmetric)
        {
            return Err(ConfigError(format!(
                "tokens.algorithm {} is a shared secret, which has no place in an HSM whose keys \
                 are verified from the JWKS: with keys.backend = pkcs11 it is EdDSA, ES256, RS256 \
                 or PS256",
                server.tokens.algorithm
            )));
        }
        Ok(Config { server, ..config })
    }

    /// The database URL: configured, or the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("tessera.db").display()))
    }

    /// Every setting's default, the server's and the process's, as TOML.
    #[cfg(test)]
    fn defaults() -> toml::Table {
        let mut all = settings::defaults::<tessera_server::Config>();
        all.extend(settings::defaults::<Config>());
        all
    }

    /// `examples/tessera.toml`: every setting with its default.
    #[cfg(test)]
    pub fn example() -> String {
        settings::example(TABLES, &Config::defaults())
    }
}

/// The settings list of `tessera serve --help`.
pub(crate) fn help() -> String {
    settings::help(TABLES)
}

impl Deref for Config {
    type Target = tessera_server::Config;

    fn deref(&self) -> &tessera_server::Config {
        &self.server
    }
}

impl DerefMut for Config {
    fn deref_mut(&mut self) -> &mut tessera_server::Config {
        &mut self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// `examples/tessera.toml` is what the tables render (to bring it up to date:
    /// `TESSERA_WRITE_EXAMPLE=1 cargo test -p tessera --bin tessera example`), it parses, and
    /// its values are the defaults.
    #[test]
    fn the_example_config_is_the_settings_tables() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tessera.toml");
        let rendered = Config::example();
        if std::env::var_os("TESSERA_WRITE_EXAMPLE").is_some() {
            std::fs::write(path, &rendered).unwrap();
        }
        let file = std::fs::read_to_string(path).unwrap();
        assert!(
            file == rendered,
            "examples/tessera.toml is not what the settings tables render; \
             TESSERA_WRITE_EXAMPLE=1 cargo test -p tessera --bin tessera example writes it"
        );
        let parsed = Config::load(Some(std::path::Path::new(path)), Vec::new()).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }

    /// Every row is a key of the process's settings, of its kind, and every key is a row.
    #[test]
    fn the_rows_are_the_keys() {
        let problems = settings::problems::<Config>();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// The process's settings and the server's come from the same variables, and each part
    /// checks its own.
    #[test]
    fn cluster_settings_are_checked() {
        let c = Config::load(
            None,
            env(&[
                ("TESSERA_REDIS_URL", "redis://10.0.0.5:6379"),
                ("TESSERA_REDIS_PREFIX", "prod"),
                ("TESSERA_INSTANCE_NAME", "tessera-1"),
                ("TESSERA_STORES_TIMEOUT", "250ms"),
            ]),
        )
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://10.0.0.5:6379"));
        assert_eq!(c.redis_prefix, "prod");
        assert_eq!(c.instance_name.as_deref(), Some("tessera-1"));
        assert_eq!(c.stores.timeout.0, Duration::from_millis(250));
        assert_eq!(Config::default().redis_prefix, "tessera");
        for (k, v) in [
            ("TESSERA_REDIS_URL", "rediss://10.0.0.5:6380"),
            ("TESSERA_REDIS_URL", "http://10.0.0.5"),
            ("TESSERA_REDIS_PREFIX", ""),
            ("TESSERA_REDIS_PREFIX", "two words"),
            ("TESSERA_LOG_FORMAT", "xml"),
            ("TESSERA_STORES_RETRY", "0s"),
            ("TESSERA_INSTANCE_NAME", "bad\nname"),
            ("TESSERA_NOPE", "1"),
        ] {
            assert!(
                Config::load(None, env(&[(k, v)])).is_err(),
                "{k}={v:?} accepted"
            );
        }
    }

    /// A file may hold both parts; a key neither declares is refused, named.
    #[test]
    fn one_file_holds_both_parts() {
        let dir = std::env::temp_dir().join(format!("tessera-both-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "database_url = \"memory:\"\nallow_registration = true\n[stores]\nretry = \"2s\"\n[session]\nidle_timeout = \"5m\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), Vec::new()).unwrap();
        assert_eq!(c.database_url(), "memory:");
        assert!(c.allow_registration);
        assert_eq!(c.stores.retry.secs(), 2);
        assert_eq!(c.session.idle_timeout.secs(), 300);
        std::fs::write(&file, "[stores]\nretries = 3\n").unwrap();
        assert!(Config::load(Some(&file), Vec::new()).is_err());
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        let e = Config::load(Some(&file), Vec::new()).unwrap_err();
        assert!(e.0.contains("unknown_key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
