//! Configuration: defaults that run the whole service with no setup, a TOML file over them, and
//! `TESSERA_…` environment variables over both. Every lifetime is a duration string ("90s",
//! "15m", "12h", "7d").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::settings::{self, SETTINGS, Section};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::settings::ConfigError;

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Parses `"90s"`, `"15m"`, `"12h"`, `"7d"`, `"250ms"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        bad(format!(
            "`{s}` is not a duration (like \"90s\", \"15m\", \"12h\", \"7d\")"
        ))
    })?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(bad(format!(
                "`{s}` has an unknown unit (use ms, s, m, h or d)"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// A duration written as a string in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds, as the domain counts them.
    pub fn secs(self) -> i64 {
        i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX)
    }
}

/// Written back in the largest unit that says it exactly ("30m", "12h", "500ms").
impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let text = if d.subsec_nanos() != 0 {
            format!("{}ms", d.as_millis())
        } else {
            let secs = d.as_secs();
            match [(86_400, "d"), (3600, "h"), (60, "m")]
                .iter()
                .find(|(unit, _)| secs != 0 && secs.is_multiple_of(*unit))
            {
                Some((unit, name)) => format!("{}{name}", secs / unit),
                None => format!("{secs}s"),
            }
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// An address or a CIDR block of trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `192.0.2.1`, `10.0.0.0/8`, `::1`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Result<IpNet, ConfigError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{s}` is not an IP address or CIDR block")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(format!("`{s}` has a bad prefix length")))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IpNet::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Session lifetimes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Ends a session after this long without a request.
    pub idle_timeout: Dur,
    /// Ends a session this long after login, whatever happens.
    pub absolute_timeout: Dur,
    /// How long a server serves a session from memory before asking its store again (ended
    /// sessions are dropped at once through the change feed); `0s` reads the store every time.
    pub cache_ttl: Dur,
    /// Live sessions one user may hold; a login past it ends the oldest (0: no bound).
    pub max_per_user: usize,
    /// How new sessions are laid out in Redis: `compact` (three fields, one of them the fields
    /// that never change) or `fields` (each field alone, the only form versions before commit
    /// f8b4cdf read: for a rolling upgrade from them). Both are read either way.
    pub redis_form: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Dur(Duration::from_secs(30 * 60)),
            absolute_timeout: Dur(Duration::from_secs(12 * 3600)),
            cache_ttl: Dur(Duration::from_secs(5)),
            max_per_user: 100,
            redis_form: "compact".into(),
        }
    }
}

/// Password rules and hashing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Shortest password accepted for a new account.
    pub min_length: usize,
    /// Argon2id memory in KiB (at least 19456).
    pub memory_kib: u32,
    /// Argon2id iterations (at least 2).
    pub iterations: u32,
    /// Argon2id lanes (at least 1).
    pub parallelism: u32,
    /// Hashes computed at once; the rest wait. Default: one less than the CPUs, at least 1.
    pub hash_concurrency: usize,
    /// Logins that may wait for a hashing thread; past it a login is answered 503 with
    /// `Retry-After` at once.
    pub hash_queue: usize,
    /// Niceness of the hashing threads (0 to 19): the share of a saturated core hashing keeps
    /// beside request handling (CFS weights: 0 an equal share, 19 about 1.5 %).
    pub hash_nice: i32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordConfig {
            min_length: 8,
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            hash_concurrency: cpus.saturating_sub(1).max(1),
            hash_queue: 64,
            hash_nice: 8,
        }
    }
}

/// The pages people see.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagesConfig {
    /// The service's name, in every page's header and title.
    pub name: String,
    /// An image shown beside the name (SVG, PNG, JPEG or WebP, at most [`MAX_LOGO`] bytes),
    /// served by tessera itself at `/assets/logo`.
    pub logo: Option<PathBuf>,
    /// What each scope lets an application do, in words the consent and account pages show
    /// instead of the scope's name (`"api:read" = "Read your documents"`); TOML only.
    pub scopes: std::collections::BTreeMap<String, String>,
}

impl Default for PagesConfig {
    fn default() -> Self {
        PagesConfig {
            name: "tessera".into(),
            logo: None,
            scopes: Default::default(),
        }
    }
}

/// The largest logo the pages serve, bytes.
pub const MAX_LOGO: u64 = 256 * 1024;

/// The media type of a logo file, from its extension; `None` for a kind the pages do not serve.
pub fn logo_type(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        _ => return None,
    })
}

/// Login throttling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Failed logins per account before delays start.
    pub account_free_attempts: u32,
    /// Failed logins per client address before delays start.
    pub ip_free_attempts: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Dur,
    /// The longest delay.
    pub max_delay: Dur,
    /// Failures older than this are forgotten.
    pub window: Dur,
    /// How long the device cookie a successful login leaves is honoured: a known device is
    /// throttled on its own, so failures from elsewhere never lock it out.
    pub device_ttl: Dur,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            account_free_attempts: 5,
            ip_free_attempts: 20,
            base_delay: Dur(Duration::from_secs(1)),
            max_delay: Dur(Duration::from_secs(15 * 60)),
            window: Dur(Duration::from_secs(3600)),
            device_ttl: Dur(Duration::from_secs(365 * 86_400)),
        }
    }
}

/// Access and refresh tokens, and the keys that sign them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Algorithm of new signing keys: EdDSA, ES256, RS256, PS256 or HS256.
    pub algorithm: String,
    /// Lifetime of access tokens.
    pub access_ttl: Dur,
    /// `aud` of first-party access tokens (default: the issuer).
    pub audience: Option<String>,
    /// The built-in first-party public client.
    pub client_id: String,
    /// `scope` of first-party access tokens.
    pub scope: String,
    /// How long a rotated key is published before it signs.
    pub key_activation_delay: Dur,
    /// A refresh token unused this long expires.
    pub refresh_idle: Dur,
    /// A refresh-token family ends this long after login, however used.
    pub refresh_absolute: Dur,
    /// A retried refresh within this window gets the same successor instead of a theft alarm.
    pub refresh_grace: Dur,
    /// Live refresh-token families a person may hold with one client (each login or
    /// authorization code starts one); past it, the oldest is revoked with its access tokens.
    pub max_refresh_families: usize,
    /// Verified access tokens remembered, so a re-sent token skips the signature check
    /// (0 turns the cache off).
    pub verified_cache_size: usize,
    /// What introspection answers for an access token while this instance's denylist may be
    /// stale (its change feed lost): `closed` (inactive) or `open` (judge by the last copy).
    pub introspection_stale_denylist: String,
    /// The form of new refresh tokens: `timed` (they carry their issue time and are stored in
    /// its order) or `untimed` (53 characters, the form versions before commit 1b94eb7 issued and
    /// read: for a rolling upgrade from them). Both are read either way.
    pub refresh_token_form: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            algorithm: "EdDSA".into(),
            access_ttl: Dur(Duration::from_secs(15 * 60)),
            audience: None,
            client_id: "tessera".into(),
            scope: "openid".into(),
            key_activation_delay: Dur(Duration::from_secs(5 * 60)),
            refresh_idle: Dur(Duration::from_secs(7 * 86_400)),
            refresh_absolute: Dur(Duration::from_secs(30 * 86_400)),
            refresh_grace: Dur(Duration::from_secs(10)),
            // Far more devices and browsers than a person signs in from with one client, while a
            // loop of logins (a script, a stuffed account) cannot grow the store without bound.
            max_refresh_families: 100,
            verified_cache_size: 50_000,
            introspection_stale_denylist: "closed".into(),
            refresh_token_form: "timed".into(),
        }
    }
}

/// Client connections: how long a client may take, and how many may be open at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// A client that has not sent a request's complete headers this long after connecting (or
    /// after the first byte of a later request on a kept-alive connection) is disconnected.
    pub header_read_timeout: Dur,
    /// A kept-alive connection with no request in flight and nothing received this long is
    /// closed (a response still being sent, such as the revocation feed, is never cut).
    pub idle_timeout: Dur,
    /// How long a client gets to finish the TLS handshake.
    pub tls_handshake_timeout: Dur,
    /// Most connections open at once (0: derived from the process's descriptor limit, leaving
    /// a reserve for the stores). Past it, a new connection takes the place of the oldest one
    /// with no request in flight; when every one is busy, the new one is closed at once.
    pub max: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            header_read_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(60)),
            tls_handshake_timeout: Dur(Duration::from_secs(10)),
            max: 0,
        }
    }
}

/// What the server reads (the `tessera` binary adds the process's own settings: where the
/// stores are, the logs, shutdown). See `examples/tessera.toml` for each key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The public URL of this service (`iss` of its tokens, the origin of its cookies).
    pub issuer: Option<String>,
    /// A name for this instance, sent in an `X-Tessera-Instance` response header (unset: no
    /// header), so that an operator sees which instance behind a load balancer answered.
    pub instance_name: Option<String>,
    /// Whether `POST /auth/register` creates accounts.
    pub allow_registration: bool,
    /// Acknowledges that a TLS-terminating proxy sits in front, so plain HTTP may listen on a
    /// non-loopback address.
    pub behind_tls_proxy: bool,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR blocks).
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Longest a request may take.
    pub request_timeout: Dur,
    /// Session lifetimes.
    pub session: SessionConfig,
    /// Password rules and hashing.
    pub password: PasswordConfig,
    /// Login throttling.
    pub throttle: ThrottleConfig,
    /// Access and refresh tokens and their keys.
    pub tokens: TokenConfig,
    /// Client connections: timeouts and the cap.
    pub connections: ConnectionsConfig,
    /// The pages people see.
    pub pages: PagesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: None,
            instance_name: None,
            allow_registration: false,
            behind_tls_proxy: false,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
            body_limit: 64 * 1024,
            request_timeout: Dur(Duration::from_secs(30)),
            session: SessionConfig::default(),
            password: PasswordConfig::default(),
            throttle: ThrottleConfig::default(),
            tokens: TokenConfig::default(),
            connections: ConnectionsConfig::default(),
            pages: PagesConfig::default(),
        }
    }
}

impl Section for Config {
    const SETTINGS: &'static [settings::Setting] = SETTINGS;

    fn validate(&self) -> Result<(), ConfigError> {
        self.check()
    }
}

impl Config {
    /// Defaults, then the file (if any), then `env` overrides (`TESSERA_…` pairs): the server's
    /// settings alone (the `tessera` binary reads them with its own).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc = settings::read(file, env, &[SETTINGS])?;
        let config = settings::take::<Config>(&mut doc)?;
        settings::nothing_left(&doc)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.session.idle_timeout.0.is_zero() || self.session.absolute_timeout.0.is_zero() {
            return Err(bad("session timeouts must be longer than zero"));
        }
        if self.password.min_length < 8 {
            return Err(bad(
                "password.min_length must be at least 8 (NIST SP 800-63B)",
            ));
        }
        if self.password.memory_kib < 19 * 1024
            || self.password.iterations < 2
            || self.password.parallelism < 1
        {
            return Err(bad(
                "password hashing must be at least Argon2id m=19456 KiB, t=2, p=1",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(bad("tls_cert and tls_key go together"));
        }
        if !matches!(
            self.tokens.algorithm.as_str(),
            "EdDSA" | "ES256" | "RS256" | "PS256" | "HS256"
        ) {
            return Err(bad(
                "tokens.algorithm is EdDSA, ES256, RS256, PS256 or HS256",
            ));
        }
        if self.tokens.access_ttl.0.is_zero()
            || self.tokens.refresh_idle.0.is_zero()
            || self.tokens.refresh_absolute.0.is_zero()
        {
            return Err(bad("token lifetimes must be longer than zero"));
        }
        if self.tokens.max_refresh_families == 0 {
            return Err(bad("tokens.max_refresh_families is at least 1"));
        }
        if !matches!(
            self.tokens.introspection_stale_denylist.as_str(),
            "closed" | "open"
        ) {
            return Err(bad(
                "tokens.introspection_stale_denylist is `closed` or `open`",
            ));
        }
        if !matches!(self.tokens.refresh_token_form.as_str(), "timed" | "untimed") {
            return Err(bad("tokens.refresh_token_form is `timed` or `untimed`"));
        }
        if !matches!(self.session.redis_form.as_str(), "compact" | "fields") {
            return Err(bad("session.redis_form is `compact` or `fields`"));
        }
        let c = &self.connections;
        if c.header_read_timeout.0.is_zero()
            || c.idle_timeout.0.is_zero()
            || c.tls_handshake_timeout.0.is_zero()
        {
            return Err(bad("connection timeouts must be longer than zero"));
        }
        let name = &self.pages.name;
        if name.trim().is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control)
        {
            return Err(bad(
                "pages.name is 1 to 80 characters, none of them a control character",
            ));
        }
        if let Some(logo) = &self.pages.logo {
            if logo_type(logo).is_none() {
                return Err(bad(format!(
                    "pages.logo is an .svg, .png, .jpg or .webp file: {}",
                    logo.display()
                )));
            }
            match std::fs::metadata(logo) {
                Ok(m) if m.is_file() && m.len() <= MAX_LOGO => {}
                Ok(m) if m.is_file() => {
                    return Err(bad(format!(
                        "pages.logo is at most {} KiB: {}",
                        MAX_LOGO / 1024,
                        logo.display()
                    )));
                }
                Ok(_) => return Err(bad(format!("pages.logo is not a file: {}", logo.display()))),
                Err(e) => {
                    return Err(bad(format!(
                        "cannot read pages.logo {}: {e}",
                        logo.display()
                    )));
                }
            }
        }
        for (scope, words) in &self.pages.scopes {
            if words.trim().is_empty() || words.chars().any(char::is_control) {
                return Err(bad(format!(
                    "pages.scopes.\"{scope}\" is a sentence without control characters"
                )));
            }
        }
        if let Some(name) = &self.instance_name
            && (name.is_empty() || axum::http::HeaderValue::from_str(name).is_err())
        {
            return Err(bad("instance_name must be a non-empty printable word"));
        }
        if let Some(issuer) = &self.issuer {
            // Parsed, not judged by prefix: `http://localhost:80@evil.example` is not loopback.
            let url = tessera_core::weburl::Url::parse(issuer)
                .map_err(|_| bad("issuer must be an http(s) URL"))?;
            if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                return Err(bad("issuer must be an http(s) URL"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad("issuer must not carry user information (user@)"));
            }
        }
        Ok(())
    }

    /// Whether HTTPS is served directly.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The issuer URL: configured, or derived from the listen address.
    pub fn issuer(&self) -> String {
        match &self.issuer {
            Some(i) => i.trim_end_matches('/').to_owned(),
            None => {
                let scheme = if self.tls() { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            }
        }
    }

    /// `aud` of first-party access tokens: configured, or the issuer.
    pub fn audience(&self) -> String {
        self.tokens
            .audience
            .clone()
            .unwrap_or_else(|| self.issuer())
    }

    /// Development mode: plain HTTP with a loopback issuer. Cookies then drop `Secure` and the
    /// `__Host-` prefix, which browsers refuse without HTTPS.
    pub fn development(&self) -> bool {
        let issuer = self.issuer();
        tessera_core::weburl::Url::parse(&issuer).is_ok_and(|u| {
            u.scheme() == "http" && tessera_core::weburl::transport_problem(&u).is_none()
        })
    }

    /// Refuses plain HTTP on a non-loopback address unless a TLS proxy is acknowledged.
    pub fn check_transport(&self) -> Result<(), ConfigError> {
        if !self.tls() && !self.listen.ip().is_loopback() && !self.behind_tls_proxy {
            return Err(bad(format!(
                "refusing plain HTTP on {}: set tls_cert and tls_key, listen on a loopback address, or set behind_tls_proxy = true if a TLS proxy terminates HTTPS in front",
                self.listen
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        for bad in ["", "m", "5x", "-5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            IpNet::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8:1::5".parse().unwrap())
        );
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("nope").is_err());
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("tessera-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "allow_registration = true\n[session]\nidle_timeout = \"5m\"\n",
        )
        .unwrap();
        let env = vec![
            ("TESSERA_SESSION_IDLE_TIMEOUT".to_owned(), "90s".to_owned()),
            (
                "TESSERA_TRUSTED_PROXIES".to_owned(),
                "10.0.0.0/8, ::1".to_owned(),
            ),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let c = Config::load(Some(&file), env).unwrap();
        assert!(c.allow_registration);
        assert_eq!(c.session.idle_timeout.secs(), 90);
        assert_eq!(c.session.absolute_timeout.secs(), 43_200);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(Config::load(None, vec![("TESSERA_NOPE".to_owned(), "1".to_owned())]).is_err());
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        assert!(Config::load(Some(&file), Vec::new()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cluster_settings_are_checked() {
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let c = Config::load(
            None,
            vec![
                ("TESSERA_INSTANCE_NAME".to_owned(), "tessera-1".to_owned()),
                ("TESSERA_SESSION_CACHE_TTL".to_owned(), "0s".to_owned()),
                (
                    "TESSERA_TOKENS_INTROSPECTION_STALE_DENYLIST".to_owned(),
                    "open".to_owned(),
                ),
                (
                    "TESSERA_TOKENS_REFRESH_TOKEN_FORM".to_owned(),
                    "untimed".to_owned(),
                ),
                ("TESSERA_SESSION_REDIS_FORM".to_owned(), "fields".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(c.tokens.introspection_stale_denylist, "open");
        assert_eq!(c.tokens.refresh_token_form, "untimed");
        assert_eq!(Config::default().tokens.refresh_token_form, "timed");
        assert_eq!(c.session.redis_form, "fields");
        assert_eq!(Config::default().session.redis_form, "compact");
        assert_eq!(
            Config::default().tokens.introspection_stale_denylist,
            "closed"
        );
        assert_eq!(c.instance_name.as_deref(), Some("tessera-1"));
        assert!(c.session.cache_ttl.0.is_zero());
        for (k, v) in [
            ("TESSERA_INSTANCE_NAME", ""),
            ("TESSERA_INSTANCE_NAME", "bad\nname"),
            ("TESSERA_TOKENS_INTROSPECTION_STALE_DENYLIST", "maybe"),
            ("TESSERA_TOKENS_REFRESH_TOKEN_FORM", "plain"),
            ("TESSERA_TOKENS_MAX_REFRESH_FAMILIES", "0"),
            ("TESSERA_ISSUER", "http://localhost:80@evil.example"),
            ("TESSERA_ISSUER", "https://user:pass@auth.example"),
            ("TESSERA_ISSUER", "ftp://auth.example"),
        ] {
            assert!(Config::load(None, env(k, v)).is_err(), "{k}={v:?} accepted");
        }
    }

    #[test]
    fn connection_settings() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let d = Config::default().connections;
        assert_eq!(d.header_read_timeout.secs(), 10);
        assert_eq!(d.idle_timeout.secs(), 60);
        assert_eq!(d.tls_handshake_timeout.secs(), 10);
        assert_eq!(d.max, 0, "derived from the descriptor limit");
        let c = Config::load(
            None,
            env(&[
                ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "2s"),
                ("TESSERA_CONNECTIONS_IDLE_TIMEOUT", "500ms"),
                ("TESSERA_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT", "3s"),
                ("TESSERA_CONNECTIONS_MAX", "20"),
            ]),
        )
        .unwrap()
        .connections;
        assert_eq!(c.header_read_timeout.secs(), 2);
        assert_eq!(c.idle_timeout.0, Duration::from_millis(500));
        assert_eq!(c.tls_handshake_timeout.secs(), 3);
        assert_eq!(c.max, 20);
        for (k, v) in [
            ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "0s"),
            ("TESSERA_CONNECTIONS_IDLE_TIMEOUT", "0s"),
            ("TESSERA_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT", "0ms"),
            ("TESSERA_CONNECTIONS_MAX", "-1"),
            ("TESSERA_CONNECTIONS_MAX", "many"),
        ] {
            assert!(Config::load(None, env(&[(k, v)])).is_err(), "{k}={v:?}");
        }
    }

    #[test]
    fn transport_rules() {
        let mut c = Config::default();
        assert!(c.check_transport().is_ok());
        assert!(c.development());
        c.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.check_transport().is_err());
        c.behind_tls_proxy = true;
        assert!(c.check_transport().is_ok());
        c.issuer = Some("https://auth.example.com".into());
        assert!(!c.development());
        // Judged on the parsed host: this one is evil.example, not localhost.
        c.issuer = Some("http://localhost:80@evil.example".into());
        assert!(!c.development());
        c.issuer = Some("http://[::1]:8080".into());
        assert!(c.development());
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    /// Every row is a key of the server's configuration, of its kind, and every key is a row
    /// (a new field without one fails here). The example file, which holds the process's
    /// settings too, is checked by the `tessera` binary's tests.
    #[test]
    fn the_rows_are_the_keys() {
        let problems = settings::problems::<Config>();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// A key no section declares is refused, named.
    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("tessera-unknown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "database_url = \"memory:\"\n").unwrap();
        let e = Config::load(Some(&file), Vec::new()).unwrap_err();
        assert!(e.0.contains("database_url"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
