//! tessera-verify: what a resource server needs to check tessera's access tokens by itself.
//!
//! [`Verifier::discover`] reads the issuer's discovery document (RFC 8414) and its JWKS, then
//! verifies every token locally with tessera-jose: signature by a published key (the algorithm
//! bound to the key found by `kid`), `typ: at+jwt`, `iss`, `aud`, times with leeway, and the
//! scopes a route requires. The key set is cached for as long as the JWKS response's
//! `Cache-Control: max-age` allows (bounded), refreshed in the background when it goes stale,
//! and a token signed by a key not yet known (a rotation) triggers one refetch — at most one per
//! [`Options::refetch_interval`], so a flood of random `kid`s cannot become a flood of fetches.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use tessera_verify::{Audience, Options, Verifier};
//! let verifier = Verifier::discover("https://auth.example.com", Options {
//!     audience: Audience::Required("https://api.example.com".into()),
//!     ..Options::default()
//! }).await?;
//! let token = verifier.verify("eyJ…").await?;
//! Verifier::require_scopes(&token, &["orders:read"])?;
//! # Ok(()) }
//! ```

mod feed;
#[cfg(feature = "axum")]
pub mod http;

pub use feed::{FeedOptions, WhenLost};

/// What the fuzz targets (`fuzz/`) reach that the API does not: built only under `cfg(fuzzing)`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// An event of the revocation feed: id, name, data.
    pub type Event = (Option<String>, String, String);

    /// The events the feed's reader takes from a stream arriving in `chunks`, or why it stops.
    pub fn sse_events(chunks: &[&[u8]]) -> Result<Vec<Event>, &'static str> {
        let mut reader = crate::feed::SseReader::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(
                reader
                    .push(chunk)?
                    .into_iter()
                    .map(|e| (e.id, e.name, e.data)),
            );
        }
        Ok(out)
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tessera_jose::{JwkSet, KeySet, Validation};
use tokio::time::Instant;

/// Which `aud` a [`Verifier`] accepts. There is no silent default: a verifier built without
/// choosing is refused by [`Verifier::discover`], because a token the issuer made for another
/// service (another audience) is otherwise accepted here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Audience {
    /// Not chosen ([`Options::default`]): [`Verifier::discover`] fails with
    /// [`DiscoverError::NoAudience`].
    #[default]
    Unset,
    /// Tokens must name this audience (this resource server's identifier) in `aud`.
    Required(String),
    /// **Dangerous**: any `aud`, or none. Every token the issuer signs for any service is then
    /// good here, so a token given to one service can be replayed against this one. Only for a
    /// service that is the issuer's sole audience, or for diagnostics.
    Any,
}

/// How a [`Verifier`] checks tokens and keeps its keys.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `aud` this resource server answers to; must be chosen (see [`Audience`]).
    pub audience: Audience,
    /// Clock-skew tolerance on token times, seconds.
    pub leeway: i64,
    /// The `typ` tokens must carry (`at+jwt`, RFC 9068).
    pub typ: Option<String>,
    /// At most one JWKS fetch for an unknown `kid` per this interval.
    pub refetch_interval: Duration,
    /// How long keys are kept without a `max-age` from the server; also the longest `max-age`
    /// honoured.
    pub max_cache: Duration,
    /// The shortest `max-age` honoured (a server saying 0 is not fetched on every request).
    pub min_cache: Duration,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
    /// How many verified tokens to remember, so that a token sent again (a client re-sends the
    /// same one for its whole life) skips the signature check; its times, and revocations, are
    /// checked on every use. 0: verify every time.
    pub verified_cache: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            audience: Audience::Unset,
            leeway: 60,
            typ: Some("at+jwt".into()),
            refetch_interval: Duration::from_secs(10),
            max_cache: Duration::from_secs(3600),
            min_cache: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            verified_cache: 10_000,
        }
    }
}

/// Why the issuer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The discovery document or the JWKS could not be fetched.
    #[error("cannot fetch {url}: {reason}")]
    Fetch {
        /// What was asked for.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A document is not what the standards say.
    #[error("{0}")]
    Invalid(String),
    /// [`Options::audience`] was left unset (or empty).
    #[error(
        "no audience chosen: set Options::audience to Audience::Required(\"<this service's identifier>\") (or, knowing that tokens for every service are then accepted, Audience::Any)"
    )]
    NoAudience,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid here (RFC 6750 `invalid_token`).
    #[error("invalid token: {0}")]
    Invalid(#[from] tessera_jose::Error),
    /// Valid, but without a scope the route needs (RFC 6750 `insufficient_scope`).
    #[error("the token lacks the scope {0}")]
    InsufficientScope(String),
    /// Revoked at the issuer (learnt from the revocation feed).
    #[error("the token was revoked")]
    Revoked,
    /// The revocation feed has been lost for longer than its grace period and the policy is
    /// [`WhenLost::Refuse`]: no token is accepted until it is back.
    #[error("revocations cannot be checked now")]
    FeedLost,
}

impl VerifyError {
    /// The RFC 6750 error code.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Invalid(_) | VerifyError::Revoked => "invalid_token",
            VerifyError::InsufficientScope(_) => "insufficient_scope",
            VerifyError::FeedLost => "temporarily_unavailable",
        }
    }
}

/// The largest discovery document or JWKS read.
const MAX_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
struct Keys {
    verifier: Arc<tessera_jose::Verifier>,
    fresh_until: Instant,
    /// Moves with every fetch: tokens verified under other keys are verified again.
    generation: u64,
}

/// Verified tokens by their text, with the key generation they were verified under.
type VerifiedCache = std::collections::HashMap<Box<str>, (tessera_jose::Token, u64)>;

#[derive(Debug)]
struct Inner {
    issuer: String,
    jwks_uri: String,
    /// `revocation_feed_endpoint` from the discovery document, if the issuer has one.
    feed_uri: Option<String>,
    feed: std::sync::OnceLock<Arc<feed::Feed>>,
    /// Followers hold it weakly: they stop when the last clone of the verifier is dropped.
    alive: Arc<()>,
    http: reqwest::Client,
    options: Options,
    validation: Validation,
    keys: RwLock<Keys>,
    verified: RwLock<VerifiedCache>,
    /// When the JWKS was last fetched (or a fetch started): the refetch rate limit.
    last_fetch: tokio::sync::Mutex<Instant>,
    /// A background refresh is under way (at most one at a time).
    refreshing: std::sync::atomic::AtomicBool,
    fetches: AtomicU64,
    signature_checks: AtomicU64,
}

/// Verifies one issuer's access tokens. Cheap to clone; clones share the key cache.
#[derive(Debug, Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// GETs `url` as bytes (capped), with the response's `max-age` if it gave one.
async fn get(
    http: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<Duration>), DiscoverError> {
    let fail = |reason: String| DiscoverError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let mut res = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !res.status().is_success() {
        return Err(fail(format!("HTTP {}", res.status())));
    }
    let max_age = res
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(cache_lifetime);
    // Read chunk by chunk and stop at the cap: a huge answer is never held in memory whole.
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| fail(e.to_string()))? {
        if body.len() + chunk.len() > MAX_BYTES {
            return Err(fail(format!("larger than {MAX_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// How long a `Cache-Control` value lets a response be used: its `max-age`, or nothing at all
/// with `no-cache` or `no-store` (the caller's `min_cache` then applies); `None` if it says
/// neither (the caller's `max_cache` applies).
fn cache_lifetime(value: &str) -> Option<Duration> {
    let mut age = None;
    for d in value.split(',').map(str::trim) {
        if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if let Some(n) = d
            .strip_prefix("max-age=")
            .and_then(|n| n.parse::<u64>().ok())
        {
            age = Some(Duration::from_secs(n));
        }
    }
    age
}

/// Whether `url` may be fetched: `https`, or plain `http` only to a loopback host, and no user
/// information (`user:pass@`) either way; judged on the URL as the parser reads it, never on its
/// text (`http://localhost:80@evil.example/` goes to `evil.example`).
///
/// The same rule as `tessera_core::weburl::transport_problem`, copied here (a dozen lines) so
/// that this library keeps depending on tessera-jose alone.
fn transport_ok(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => loopback,
        _ => false,
    }
}

impl Verifier {
    /// Reads `issuer`'s discovery document (`/.well-known/oauth-authorization-server`) and its
    /// JWKS. The document must name the same issuer; plain HTTP only to a loopback address.
    ///
    /// Fails with [`DiscoverError::NoAudience`], before any request, unless
    /// [`Options::audience`] names an audience or is [`Audience::Any`].
    pub async fn discover(issuer: &str, options: Options) -> Result<Verifier, DiscoverError> {
        let audiences = match &options.audience {
            Audience::Required(aud) if !aud.is_empty() => vec![aud.clone()],
            Audience::Any => Vec::new(),
            Audience::Required(_) | Audience::Unset => return Err(DiscoverError::NoAudience),
        };
        let issuer = issuer.trim_end_matches('/').to_owned();
        if !transport_ok(&issuer) {
            return Err(DiscoverError::Invalid(
                "the issuer must be https:// (plain http only on loopback)".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DiscoverError::Invalid(e.to_string()))?;
        let url = format!("{issuer}/.well-known/oauth-authorization-server");
        let (body, _) = get(&http, &url).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| DiscoverError::Invalid("the discovery document is not JSON".into()))?;
        if doc["issuer"].as_str() != Some(issuer.as_str()) {
            return Err(DiscoverError::Invalid(
                "the discovery document names another issuer".into(),
            ));
        }
        let feed_uri = doc["revocation_feed_endpoint"]
            .as_str()
            .filter(|u| transport_ok(u))
            .map(str::to_owned);
        let jwks_uri = doc["jwks_uri"]
            .as_str()
            .filter(|u| transport_ok(u))
            .ok_or_else(|| {
                DiscoverError::Invalid("the discovery document has no usable jwks_uri".into())
            })?
            .to_owned();
        let validation = Validation {
            leeway: options.leeway,
            issuer: Some(issuer.clone()),
            audiences,
            typ: options.typ.clone(),
            required: vec!["exp".into(), "sub".into()],
            ..Validation::default()
        };
        let (verifier, fresh_for) =
            Self::fetch_keys(&http, &jwks_uri, &validation, &options).await?;
        let now = Instant::now();
        let inner = Arc::new(Inner {
            issuer,
            jwks_uri,
            feed_uri,
            feed: std::sync::OnceLock::new(),
            alive: Arc::new(()),
            http,
            validation,
            keys: RwLock::new(Keys {
                verifier,
                fresh_until: now + fresh_for,
                generation: 0,
            }),
            verified: RwLock::default(),
            // The fetch at discovery does not count against the first refetch for a new `kid`:
            // a key rotated in just after start is picked up at once.
            last_fetch: tokio::sync::Mutex::new(
                now.checked_sub(options.refetch_interval).unwrap_or(now),
            ),
            refreshing: std::sync::atomic::AtomicBool::new(false),
            fetches: AtomicU64::new(1),
            signature_checks: AtomicU64::new(0),
            options,
        });
        Ok(Verifier { inner })
    }

    async fn fetch_keys(
        http: &reqwest::Client,
        jwks_uri: &str,
        validation: &Validation,
        options: &Options,
    ) -> Result<(Arc<tessera_jose::Verifier>, Duration), DiscoverError> {
        let (body, max_age) = get(http, jwks_uri).await?;
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|_| DiscoverError::Invalid("the JWKS is not a JWK Set".into()))?;
        let keys = KeySet::from_jwks(&set)
            .map_err(|e| DiscoverError::Invalid(format!("the JWKS is unusable: {e}")))?;
        let fresh_for = max_age
            .unwrap_or(options.max_cache)
            .clamp(options.min_cache, options.max_cache);
        Ok((
            Arc::new(tessera_jose::Verifier::new(keys, validation.clone())),
            fresh_for,
        ))
    }

    /// Fetches the JWKS again if none was fetched within `min_gap`; whether it did.
    async fn refetch(&self, min_gap: Duration) -> bool {
        let i = &self.inner;
        let mut last = i.last_fetch.lock().await;
        if last.elapsed() < min_gap {
            return false;
        }
        *last = Instant::now();
        i.fetches.fetch_add(1, Ordering::Relaxed);
        match Self::fetch_keys(&i.http, &i.jwks_uri, &i.validation, &i.options).await {
            Ok((verifier, fresh_for)) => {
                let mut k = i.keys.write().unwrap_or_else(|e| e.into_inner());
                *k = Keys {
                    verifier,
                    fresh_until: Instant::now() + fresh_for,
                    generation: k.generation + 1,
                };
                true
            }
            Err(e) => {
                tracing::warn!(error = ?e.to_string(), "refreshing the JWKS failed; keeping the keys held");
                false
            }
        }
    }

    fn current(&self) -> (Arc<tessera_jose::Verifier>, bool, u64) {
        let k = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        (
            Arc::clone(&k.verifier),
            Instant::now() >= k.fresh_until,
            k.generation,
        )
    }

    /// `token` verified before under the keys of `generation`.
    fn remembered(&self, token: &str, generation: u64) -> Option<tessera_jose::Token> {
        self.inner
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .filter(|(_, g)| *g == generation)
            .map(|(t, _)| t.clone())
    }

    fn remember(&self, token: &str, verified: &tessera_jose::Token, generation: u64) {
        let capacity = self.inner.options.verified_cache;
        if capacity == 0 {
            return;
        }
        let mut cache = self
            .inner
            .verified
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Past the bound the cache starts over: memory stays bounded whatever is sent.
        if cache.len() >= capacity {
            cache.clear();
        }
        cache.insert(token.into(), (verified.clone(), generation));
    }

    /// Verifies an access token now. Keys past their cache time are refreshed in the
    /// background (this call uses the ones held); a token whose `kid` is unknown waits for one
    /// refetch if the rate limit allows, then is refused if still unknown.
    pub async fn verify(&self, token: &str) -> Result<tessera_jose::Token, VerifyError> {
        let (verifier, stale, generation) = self.current();
        // Stale keys: one background refresh, not one per request while it runs.
        if stale
            && self
                .inner
                .refreshing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let me = self.clone();
            tokio::spawn(async move {
                let gap = me.inner.options.min_cache;
                me.refetch(gap).await;
                me.inner.refreshing.store(false, Ordering::Release);
            });
        }
        let now = unix_now();
        let token = if let Some(t) = self.remembered(token, generation) {
            // The signature was checked; times are checked again.
            self.inner.validation.check(&t.header, &t.claims, now)?;
            t
        } else {
            self.inner.signature_checks.fetch_add(1, Ordering::Relaxed);
            let (verified, generation) = match verifier.verify_at(token, now) {
                Err(tessera_jose::Error::UnknownKey)
                    if self.refetch(self.inner.options.refetch_interval).await =>
                {
                    let (verifier, _, generation) = self.current();
                    (verifier.verify_at(token, now)?, generation)
                }
                other => (other?, generation),
            };
            self.remember(token, &verified, generation);
            verified
        };
        if let Some(feed) = self.inner.feed.get() {
            match feed.verdict(&token.claims) {
                feed::FeedVerdict::Accept => {}
                feed::FeedVerdict::Revoked => return Err(VerifyError::Revoked),
                feed::FeedVerdict::Lost => return Err(VerifyError::FeedLost),
            }
        }
        Ok(token)
    }

    /// Follows the issuer's revocation feed (its discovery document's
    /// `revocation_feed_endpoint`) as the confidential client of `options`: returns once
    /// caught up with every revocation in force, then keeps following in the background,
    /// reconnecting after a cut without missing anything, until the verifier is dropped.
    /// From then on a revoked token (by `jti`, session or subject) is refused with
    /// [`VerifyError::Revoked`], and a feed lost beyond its grace is handled by
    /// [`FeedOptions::when_lost`].
    pub async fn follow_revocations(&self, options: FeedOptions) -> Result<(), DiscoverError> {
        let i = &self.inner;
        let url = i.feed_uri.clone().ok_or_else(|| {
            DiscoverError::Invalid("the issuer publishes no revocation_feed_endpoint".into())
        })?;
        if i.feed.get().is_some() {
            return Err(DiscoverError::Invalid(
                "this verifier already follows the feed".into(),
            ));
        }
        let wait = options.silence;
        let mut follower = feed::Follower::new(
            i.http.clone(),
            url.clone(),
            options,
            i.options.leeway,
            Arc::downgrade(&i.alive),
        );
        let res = follower.connect().await?;
        let feed = Arc::clone(&follower.feed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follower.run(res, tx));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(())) => {
                let _ = i.feed.set(feed);
                Ok(())
            }
            _ => {
                // Not left following in the background for a verifier that does not use it.
                task.abort();
                Err(DiscoverError::Fetch {
                    url,
                    reason: "the revocation feed did not catch up".into(),
                })
            }
        }
    }

    /// How many revocations are held (those whose tokens have not yet expired).
    pub fn revocations_held(&self) -> usize {
        self.inner.feed.get().map_or(0, |f| f.held())
    }

    /// Whether the revocation feed is followed and current.
    pub fn revocation_feed_live(&self) -> bool {
        self.inner.feed.get().is_some_and(|f| f.is_live())
    }

    /// How many revocation events were applied, and how many times the feed was connected.
    pub fn revocation_feed_stats(&self) -> (u64, u64) {
        self.inner
            .feed
            .get()
            .map_or((0, 0), |f| (f.applied(), f.connects()))
    }

    /// Refuses a token that lacks any of `required` in its `scope`.
    pub fn require_scopes(
        token: &tessera_jose::Token,
        required: &[&str],
    ) -> Result<(), VerifyError> {
        let granted = token.claims.scope.as_deref().unwrap_or("");
        for r in required {
            if !granted.split(' ').any(|g| g == *r) {
                return Err(VerifyError::InsufficientScope((*r).to_owned()));
            }
        }
        Ok(())
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// How many tokens had their signature checked (the others were remembered).
    pub fn signature_checks(&self) -> u64 {
        self.inner.signature_checks.load(Ordering::Relaxed)
    }

    /// How many times the JWKS was fetched (discovery included).
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn cache_control_sets_the_lifetime() {
        let s = Duration::from_secs;
        assert_eq!(cache_lifetime("public, max-age=150"), Some(s(150)));
        assert_eq!(cache_lifetime("max-age=60"), Some(s(60)));
        assert_eq!(cache_lifetime("public, no-cache"), Some(s(0)));
        assert_eq!(cache_lifetime("no-store"), Some(s(0)));
        assert_eq!(cache_lifetime("max-age=60, No-Cache"), Some(s(0)));
        assert_eq!(cache_lifetime("public"), None);
        assert_eq!(cache_lifetime("max-age=soon"), None);
    }
}
