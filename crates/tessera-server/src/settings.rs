//! Every setting, declared once: its TOML key, its kind and what it does. The environment
//! variable (`TESSERA_` and the key upper-cased, `.` as `_`), the `--help` list of
//! `tessera serve` and `examples/tessera.toml` (a test renders it and compares) all come from
//! this table; the defaults come from [`Config::default`](crate::Config), the one place they
//! are written ([`Config::example`](crate::Config::example) renders the example with them).

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

const fn s(key: &'static str, kind: Kind, note: &'static str) -> Setting {
    Setting {
        key,
        kind,
        note,
        sample: None,
    }
}

const fn sample(key: &'static str, kind: Kind, value: &'static str, note: &'static str) -> Setting {
    Setting {
        key,
        kind,
        note,
        sample: Some(value),
    }
}

use Kind::{Flag, List, Number, Table, Text};

/// Every setting `tessera serve` reads, in the order `--help` and the example file show them.
pub const SETTINGS: &[Setting] = &[
    s("listen", Text, "address and port"),
    s("data_dir", Text, "SQLite file and keys; created if missing"),
    sample(
        "issuer",
        Text,
        "\"https://auth.example.com\"",
        "the public URL; default http(s)://LISTEN",
    ),
    sample(
        "database_url",
        Text,
        "\"postgres://user:pass@db:5432/tessera\"",
        "sqlite://PATH (default DATA_DIR/tessera.db), postgres://… for a cluster, or memory:",
    ),
    sample(
        "redis_url",
        Text,
        "\"redis://redis:6379\"",
        "redis://…: sessions, denylist and change feed",
    ),
    s("redis_prefix", Text, "every Redis key starts with it"),
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
        "shutdown_grace",
        Text,
        "after SIGTERM, for requests in flight",
    ),
    s("log_format", Text, "text or json"),
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
        "of new keys: EdDSA, ES256, RS256 or HS256",
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
    s(
        "stores.timeout",
        Text,
        "a read from the database or Redis; past it, and a ping too, the store is marked down",
    ),
    s(
        "stores.write_timeout",
        Text,
        "a write, which may wait for a row another holds",
    ),
    s(
        "stores.retry",
        Text,
        "while a store is down, one probe this often",
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

/// The setting an environment variable sets, if any.
pub fn by_env(name: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.kind != Table && env_name(s.key) == name)
}

/// The settings list of `tessera serve --help`.
pub fn help() -> String {
    let mut out = String::from(
        "Settings (TOML key, environment variable; see examples/tessera.toml for defaults):\n",
    );
    for s in SETTINGS {
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
         database 0600 (tightened at start if they were open to others).\n\
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

/// `examples/tessera.toml`: every setting with its default in `defaults` (or, commented out, a
/// sample), its environment variable and what it does.
pub fn example(defaults: &toml::Table) -> String {
    let mut out = String::from(
        "# tessera configuration: every key with its default. `tessera serve` needs none of them.\n\
         # Each key can also be set by an environment variable (shown after it), which wins over this\n\
         # file; `tessera serve --listen/--data-dir/--issuer` win over both. Durations are strings:\n\
         # \"250ms\", \"90s\", \"15m\", \"12h\", \"7d\". This file is rendered from the settings table\n\
         # (crates/tessera-server/src/settings.rs); a test keeps the two the same.\n\n",
    );
    let mut section = "";
    for s in SETTINGS {
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
        "\n# The master key sealing signing keys: TESSERA_MASTER_KEY, or DATA_DIR/master.key (made on start).\n",
    );
    out
}
