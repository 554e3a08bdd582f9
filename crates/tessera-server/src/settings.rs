//! Every setting, declared once: its TOML key, its kind and what it does. The environment
//! variable (`TESSERA_` and the key upper-cased, `.` as `_`), the `--help` list of
//! `tessera serve` and `examples/tessera.toml` (a test renders it and compares) all come from
//! the tables of rows; the defaults come from each section's `Default`, the one place they are
//! written.
//!
//! Each crate declares the settings it reads, as a [`Section`]: the server its own
//! ([`crate::Config`], the rows of [`SETTINGS`]), the `tessera` binary the process's (where the
//! stores are, the logs, shutdown). One file and one environment hold them all: each section
//! [`take`]s its keys from the document read, and what none takes is refused.

/// What a setting's value is, in TOML and in its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (a duration is one too: "90s").
    Text,
    /// A whole number.
    Number,
    /// `true` or `false`.
    Flag,
    /// A list of strings; comma-separated in the environment.
    List,
    /// A table; TOML only, no environment variable.
    Table,
}

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// The TOML key (`section.key` for a key of a section).
    pub key: &'static str,
    /// What its value is.
    pub kind: Kind,
    /// What it does, in a few words (`--help` and the example file).
    pub note: &'static str,
    /// For a setting that has no default (or one that depends on the machine), the value the
    /// example file shows, commented out.
    pub sample: Option<&'static str>,
}

impl Setting {
    /// A setting with a default.
    pub const fn new(key: &'static str, kind: Kind, note: &'static str) -> Setting {
        Setting {
            key,
            kind,
            note,
            sample: None,
        }
    }

    /// A setting without a default (or whose default depends on the machine): the example file
    /// shows `value`, commented out.
    pub const fn sample(
        key: &'static str,
        kind: Kind,
        value: &'static str,
        note: &'static str,
    ) -> Setting {
        Setting {
            key,
            kind,
            note,
            sample: Some(value),
        }
    }
}

const fn s(key: &'static str, kind: Kind, note: &'static str) -> Setting {
    Setting::new(key, kind, note)
}

const fn sample(key: &'static str, kind: Kind, value: &'static str, note: &'static str) -> Setting {
    Setting::sample(key, kind, value, note)
}

use Kind::{Flag, List, Number, Table, Text};

/// Why configuration was refused: one sentence naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A part of the configuration, declared by its rows and read from the keys they name (each
/// row's first segment: a top-level key or a `[section]`).
pub trait Section: serde::Serialize + serde::de::DeserializeOwned + Default {
    /// Its settings, in the order `--help` and the example file show them.
    const SETTINGS: &'static [Setting];
    /// Checks what the types cannot say.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Every setting the server reads, in the order `--help` and the example file show them.
pub const SETTINGS: &[Setting] = &[
    s("listen", Text, "address and port"),
    sample(
        "issuer",
        Text,
        "\"https://auth.example.com\"",
        "the public URL; default http(s)://LISTEN",
    ),
    sample(
        "instance_name",
        Text,
        "\"tessera-1\"",
        "sent as X-Tessera-Instance",
    ),
    s(
        "allow_registration",
        Flag,
        "POST /auth/register creates accounts",
    ),
    s("behind_tls_proxy", Flag, "allow plain HTTP off loopback"),
    sample(
        "tls_cert",
        Text,
        "\"/etc/tessera/cert.pem\"",
        "serve HTTPS directly (with tls_key)",
    ),
    sample(
        "tls_key",
        Text,
        "\"/etc/tessera/key.pem\"",
        "the certificate's private key",
    ),
    s(
        "trusted_proxies",
        List,
        "IPs/CIDRs whose X-Forwarded-For is believed; comma-separated in the environment",
    ),
    s("body_limit", Number, "bytes"),
    s("request_timeout", Text, "longest a request may take"),
    s(
        "session.idle_timeout",
        Text,
        "ends a session this long without a request",
    ),
    s(
        "session.absolute_timeout",
        Text,
        "ends a session this long after login",
    ),
    s(
        "session.cache_ttl",
        Text,
        "served from memory this long; 0s: read the store every time",
    ),
    s(
        "session.max_per_user",
        Number,
        "live sessions a user may hold; a login past it ends the oldest (0: no bound)",
    ),
    s(
        "session.redis_form",
        Text,
        "compact or fields: new sessions in Redis hold three fields, or each field alone, the form versions before commit f8b4cdf read, for a rolling upgrade from them; both are read",
    ),
    s("password.min_length", Number, "at least 8"),
    s("password.memory_kib", Number, "Argon2id m (at least 19456)"),
    s("password.iterations", Number, "Argon2id t (at least 2)"),
    s("password.parallelism", Number, "Argon2id p (at least 1)"),
    sample(
        "password.hash_concurrency",
        Number,
        "1",
        "hashes at once; default the CPUs less one, at least 1",
    ),
    s(
        "password.hash_queue",
        Number,
        "logins waiting for a hash; past it 503 and Retry-After at once",
    ),
    s(
        "password.hash_nice",
        Number,
        "hashing threads' niceness, 0-19 (their share of a busy core)",
    ),
    s(
        "throttle.account_free_attempts",
        Number,
        "failed logins per account before delays start",
    ),
    s(
        "throttle.ip_free_attempts",
        Number,
        "failed logins per address before delays start",
    ),
    s(
        "throttle.base_delay",
        Text,
        "the first delay; doubles with each failure",
    ),
    s("throttle.max_delay", Text, "the longest delay"),
    s("throttle.window", Text, "failures older are forgotten"),
    s(
        "throttle.device_ttl",
        Text,
        "a device cookie is honoured this long after its login (see README)",
    ),
    s(
        "tokens.algorithm",
        Text,
        "of new keys: EdDSA, ES256, RS256, PS256 or HS256",
    ),
    s("tokens.access_ttl", Text, "lifetime of access tokens"),
    sample(
        "tokens.audience",
        Text,
        "\"https://api.example.com\"",
        "aud of first-party access tokens; default the issuer",
    ),
    s(
        "tokens.client_id",
        Text,
        "the built-in first-party public client",
    ),
    s("tokens.scope", Text, "scope of first-party access tokens"),
    s(
        "tokens.key_activation_delay",
        Text,
        "a new key is published this long before it signs",
    ),
    s(
        "tokens.refresh_idle",
        Text,
        "a refresh token unused this long expires",
    ),
    s(
        "tokens.refresh_absolute",
        Text,
        "a refresh family ends this long after login",
    ),
    s("tokens.refresh_grace", Text, "an honest retry's window"),
    s(
        "tokens.max_refresh_families",
        Number,
        "live per person and client; past it the oldest is revoked",
    ),
    s(
        "tokens.verified_cache_size",
        Number,
        "verified tokens remembered; 0 verifies every time",
    ),
    s(
        "tokens.introspection_stale_denylist",
        Text,
        "closed or open: while the denylist cannot be read, introspection calls access tokens inactive, or judges them by its last copy",
    ),
    s(
        "tokens.refresh_token_form",
        Text,
        "timed or untimed: new refresh tokens carry their issue time (stored in its order), or are of the form versions before commit 1b94eb7 read, for a rolling upgrade from them; both are read",
    ),
    s(
        "connections.header_read_timeout",
        Text,
        "complete headers due after connecting or a request's first byte",
    ),
    s(
        "connections.idle_timeout",
        Text,
        "a kept-alive connection with nothing in flight is closed",
    ),
    s(
        "connections.tls_handshake_timeout",
        Text,
        "to finish the TLS handshake",
    ),
    s(
        "connections.max",
        Number,
        "open at once; 0: the descriptor limit less max(128, a quarter), at least 16",
    ),
    s("pages.name", Text, "the service's name on every page"),
    sample(
        "pages.logo",
        Text,
        "\"/etc/tessera/logo.svg\"",
        ".svg, .png, .jpg or .webp of at most 256 KiB, served at /assets/logo",
    ),
    sample(
        "pages.scopes",
        Table,
        "\"api:read\" = \"Read your documents\"",
        "what each scope lets an application do, in the words the consent and account pages show",
    ),
];

/// The environment variable of `key`: `TESSERA_` and the key upper-cased, `.` as `_`.
pub fn env_name(key: &str) -> String {
    format!("TESSERA_{}", key.to_ascii_uppercase().replace('.', "_"))
}

/// The setting an environment variable sets, if any, in `tables`.
pub fn by_env(tables: &[&'static [Setting]], name: &str) -> Option<&'static Setting> {
    tables
        .iter()
        .flat_map(|t| t.iter())
        .find(|s| s.kind != Table && env_name(s.key) == name)
}

/// The rows of `tables` in the order a TOML file must have them: the top-level keys first, then
/// each section, in the order they first appear.
fn in_file_order(tables: &[&'static [Setting]]) -> Vec<&'static Setting> {
    let rows: Vec<&'static Setting> = tables.iter().flat_map(|t| t.iter()).collect();
    let section = |s: &Setting| match s.kind {
        Table => s.key,
        _ => s.key.rsplit_once('.').map_or("", |(sec, _)| sec),
    };
    let mut order: Vec<&str> = Vec::new();
    for s in &rows {
        let sec = section(s);
        if !sec.is_empty() && !order.contains(&sec) {
            order.push(sec);
        }
    }
    let mut sorted = rows.clone();
    sorted.sort_by_key(|s| {
        let sec = section(s);
        order.iter().position(|o| *o == sec).map_or(0, |i| i + 1)
    });
    sorted
}

/// The settings list of `tessera serve --help`, of every row of `tables`.
pub fn help(tables: &[&'static [Setting]]) -> String {
    let mut out = String::from(
        "Settings (TOML key, environment variable; see examples/tessera.toml for defaults):\n",
    );
    for s in in_file_order(tables) {
        let env = if s.kind == Table {
            "(TOML only)".to_owned()
        } else {
            env_name(s.key)
        };
        out.push_str(&format!("  {:<36} {env}\n      {}\n", s.key, s.note));
    }
    out.push_str(
        "The master key that seals signing keys: TESSERA_MASTER_KEY (base64url, 32 bytes) or\n\
         DATA_DIR/master.key (created owner-only on first start). DATA_DIR is kept 0700 and the SQLite\n\
         database 0600 (tightened at start if they were open to others). With keys.backend = pkcs11,\n\
         the token's user PIN: TESSERA_KEYS_PKCS11_PIN or the file keys.pkcs11_pin_file.\n\
         Durations are strings: \"250ms\", \"90s\", \"15m\", \"12h\", \"7d\".",
    );
    out
}

/// A value as TOML writes it (the kinds the settings have).
pub(crate) fn toml_text(value: &toml::Value) -> String {
    match value {
        // A TOML basic string escapes as JSON does, for the text of a setting.
        toml::Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_text).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    }
}

/// The value of `key` in `defaults`.
pub(crate) fn default_value<'a>(defaults: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut table = defaults;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = table.get(part)?;
        if parts.peek().is_none() {
            return Some(value);
        }
        table = value.as_table()?;
    }
    None
}

/// `examples/tessera.toml`: every setting of `tables` with its default in `defaults` (or,
/// commented out, a sample), its environment variable and what it does.
pub fn example(tables: &[&'static [Setting]], defaults: &toml::Table) -> String {
    let mut out = String::from(
        "# tessera configuration: every key with its default. `tessera serve` needs none of them.\n\
         # Each key can also be set by an environment variable (shown after it), which wins over this\n\
         # file; `tessera serve --listen/--data-dir/--issuer` win over both. Durations are strings:\n\
         # \"250ms\", \"90s\", \"15m\", \"12h\", \"7d\". This file is rendered from the settings tables\n\
         # (crates/tessera/src/config.rs, crates/tessera-server/src/settings.rs); a test keeps them the same.\n\n",
    );
    let mut section = "";
    for s in in_file_order(tables) {
        let (sec, name) = match s.key.rsplit_once('.') {
            Some((sec, name)) => (sec, name),
            None => ("", s.key),
        };
        if s.kind == Table {
            let mut note = s.note.chars();
            let first = note.next().map(|c| c.to_uppercase().to_string());
            out.push_str(&format!(
                "\n# {}{}.\n[{}]\n",
                first.unwrap_or_default(),
                note.as_str(),
                s.key
            ));
            if let Some(v) = s.sample {
                out.push_str(&format!("# {v}\n"));
            }
            section = s.key;
            continue;
        }
        if sec != section {
            out.push_str(&format!("\n[{sec}]\n"));
            section = sec;
        }
        let line = match (s.sample, default_value(defaults, s.key).map(toml_text)) {
            (Some(v), _) => format!("# {name} = {v}"),
            (None, Some(v)) => format!("{name} = {v}"),
            (None, None) => format!("# {name} ="),
        };
        out.push_str(&format!("{line:<40} # {}: {}\n", env_name(s.key), s.note));
    }
    out.push_str(
        "\n# The master key sealing signing keys: TESSERA_MASTER_KEY, or DATA_DIR/master.key (made on start).\n\
         # The PKCS#11 token's user PIN (keys.backend = \"pkcs11\"): TESSERA_KEYS_PKCS11_PIN or keys.pkcs11_pin_file, never here.\n",
    );
    out
}

/// The defaults of section `C` as a TOML table.
pub fn defaults<C: Section>() -> toml::Table {
    toml::Table::try_from(C::default()).unwrap_or_default()
}

/// The document `file` and `env` (`TESSERA_…` pairs, set by the rows of `tables`) make: the
/// file's keys, overridden by the environment's. Variables with the prefix that no row sets are
/// refused, but for the secrets and tool variables that share it.
pub fn read(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    tables: &[&'static [Setting]],
) -> Result<toml::Table, ConfigError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?,
        None => String::new(),
    };
    let name = file.map_or_else(
        || "the configuration".to_owned(),
        |p| p.display().to_string(),
    );
    parse(&text, &name, env, tables)
}

/// As [`read`], from the text of a file (`name`: how to call it in an error).
pub fn parse(
    text: &str,
    name: &str,
    env: impl IntoIterator<Item = (String, String)>,
    tables: &[&'static [Setting]],
) -> Result<toml::Table, ConfigError> {
    let mut doc = text
        .parse::<toml::Table>()
        .map_err(|e| bad(format!("{name} is not valid TOML: {}", e.message())))?;
    for (name, raw) in env {
        if !name.starts_with("TESSERA_") {
            continue;
        }
        match by_env(tables, &name) {
            Some(setting) => set(&mut doc, setting.key, env_value(setting, &raw)?),
            None if matches!(
                name.as_str(),
                "TESSERA_MASTER_KEY" | "TESSERA_KEYS_PKCS11_PIN" | "TESSERA_CONFIG"
            ) => {}
            None => return Err(bad(format!("unknown configuration variable {name}"))),
        }
    }
    Ok(doc)
}

/// Takes from `doc` the keys section `C` declares and reads them (defaults for the others),
/// checked.
pub fn take<C: Section>(doc: &mut toml::Table) -> Result<C, ConfigError> {
    let mut mine = toml::Table::new();
    for s in C::SETTINGS {
        let top = s.key.split('.').next().unwrap_or(s.key);
        if let Some(v) = doc.remove(top) {
            mine.insert(top.to_owned(), v);
        }
    }
    let c: C = toml::Value::Table(mine)
        .try_into()
        .map_err(|e: toml::de::Error| bad(format!("configuration: {}", e.message())))?;
    c.validate()?;
    Ok(c)
}

/// Refuses what is left of a document once every section took its keys.
pub fn nothing_left(doc: &toml::Table) -> Result<(), ConfigError> {
    match doc.keys().next() {
        Some(key) => Err(bad(format!("configuration: unknown setting `{key}`"))),
        None => Ok(()),
    }
}

/// What is wrong with section `C`'s rows, if anything: a row that is no key of `C`, a row whose
/// kind is not its value's (its default, written as its environment variable would give it,
/// must read back the same), a key of `C` without a row. (The tests of each section call it.)
pub fn problems<C: Section>() -> Vec<String> {
    let defaults = defaults::<C>();
    let mut out = Vec::new();
    for s in C::SETTINGS {
        let value = match (default_value(&defaults, s.key), s.kind) {
            (Some(v), _) => v.clone(),
            (None, Table) => toml::Value::Table(toml::Table::new()),
            (None, _) => match s.sample {
                Some(sample) => sample.trim_matches('"').to_owned().into(),
                None => {
                    out.push(format!("{}: no default, no sample", s.key));
                    continue;
                }
            },
        };
        let mut doc = toml::Table::new();
        set(&mut doc, s.key, value.clone());
        let parsed: Result<C, _> = toml::Value::Table(doc).try_into();
        if let Err(e) = parsed {
            out.push(format!("{} is not a key: {e}", s.key));
            continue;
        }
        if s.kind == Table {
            continue;
        }
        let raw = match &value {
            toml::Value::String(t) => t.clone(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
                .join(","),
            other => toml_text(other),
        };
        match env_value(s, &raw) {
            Ok(back) if back == value => {}
            _ => out.push(format!("{}: its kind is not its value's", s.key)),
        }
    }
    for (key, value) in &defaults {
        let keys: Vec<String> = match value.as_table() {
            Some(t) => t.keys().map(|k| format!("{key}.{k}")).collect(),
            None => vec![key.clone()],
        };
        for k in keys {
            if !C::SETTINGS.iter().any(|s| s.key == k) {
                out.push(format!(
                    "{k} is a setting without a row in the settings table"
                ));
            }
        }
    }
    out
}

/// Sets `key` (`section.key` for a key of a section) in `doc`.
pub(crate) fn set(doc: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        Some((section, rest)) => {
            let entry = doc
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                set(t, rest, value);
            }
        }
        None => {
            doc.insert(key.to_owned(), value);
        }
    }
}

/// Reads an environment value as the TOML value of `setting`.
pub(crate) fn env_value(setting: &Setting, raw: &str) -> Result<toml::Value, ConfigError> {
    let key = setting.key;
    match setting.kind {
        Text | Table => Ok(toml::Value::String(raw.to_owned())),
        List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )),
        Flag => match raw.trim() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(bad(format!("{key}: `{raw}` is not true or false"))),
        },
        Number => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| bad(format!("{key}: `{raw}` is not a whole number"))),
    }
}

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}
