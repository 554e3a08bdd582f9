//! tessera-server: the axum application. [`build`] turns a [`Config`] and a pair of stores into
//! an [`AppState`]; [`router`] gives its routes; [`serve`] runs them on a listener until a
//! shutdown signal, letting requests in flight finish. Only this crate speaks HTTP: domain
//! errors become RFC 9457 problems here.

mod account;
pub mod config;
pub mod conn;
mod debugger;
mod feed;
pub mod form;
pub mod http;
pub mod look;
pub mod metrics;
pub mod oauth;
mod pages;
pub mod problem;
mod routes;
pub mod settings;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tessera_core::{
    Auth, Change, Denylist, DeviceCookies, HashParams, KeyManager, MasterKey, PasswordHasherPool,
    PasswordPolicy, SessionPolicy, Stores, Throttle, ThrottlePolicy, TokenSettings, Tokens,
};
use tessera_jose::Clock;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;

pub use config::{Config, ConfigError};
pub use problem::Problem;

/// What the handlers need besides the domain service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `__Host-tessera_session`, or `tessera_session` in development.
    pub cookie_name: &'static str,
    /// `__Host-tessera_device`, or `tessera_device` in development: the login throttle's
    /// device cookie.
    pub device_cookie_name: &'static str,
    /// Whether the cookie carries `Secure`.
    pub secure_cookie: bool,
    /// Our origin (`scheme://host[:port]` of the issuer), for the same-origin rule.
    pub origin: String,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<config::IpNet>,
    /// Whether `/auth/register` is open.
    pub allow_registration: bool,
    /// Whether to send `Strict-Transport-Security` (the issuer is https).
    pub hsts: bool,
    /// The issuer URL (`iss`).
    pub issuer: String,
    /// `aud` of first-party access tokens.
    pub audience: String,
    /// Access-token lifetime, seconds.
    pub access_ttl: i64,
    /// The built-in first-party public client.
    pub client_id: String,
    /// `scope` of first-party access tokens.
    pub scope: String,
    /// Algorithm of new keys.
    pub algorithm: tessera_jose::Algorithm,
    /// How long a rotated key is published before it signs, seconds.
    pub key_activation_delay: i64,
    /// `X-Tessera-Instance` on every response, when configured.
    pub instance_name: Option<HeaderValue>,
    /// Signs the anti-forgery tokens of the HTML forms.
    pub csrf: tessera_core::CsrfKey,
    /// The service's name and logo on the pages (`pages.name`, `pages.logo`).
    pub look: look::Look,
    /// What scopes let an application do, in words (`pages.scopes`).
    pub scope_words: std::collections::BTreeMap<String, String>,
    /// Whether introspection calls an access token active while the denylist may be stale
    /// (`tokens.introspection_stale_denylist = "open"`); closed by default.
    pub introspection_open_when_stale: bool,
}

pub use tessera_core::LEEWAY;

/// The shared state of every handler.
#[derive(Debug)]
pub struct AppState<S> {
    /// The domain service.
    pub auth: Arc<Auth<S>>,
    /// Handler settings.
    pub settings: Arc<Settings>,
    /// Request metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The signing keys.
    pub keys: Arc<KeyManager<S>>,
    /// Access and refresh tokens.
    pub tokens: Arc<Tokens<S>>,
    /// Access tokens revoked before their expiry.
    pub denylist: Arc<Denylist>,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            auth: Arc::clone(&self.auth),
            settings: Arc::clone(&self.settings),
            metrics: Arc::clone(&self.metrics),
            keys: Arc::clone(&self.keys),
            tokens: Arc::clone(&self.tokens),
            denylist: Arc::clone(&self.denylist),
        }
    }
}

impl<S: Stores> AppState<S> {
    /// Denylists a verified access token until its expiry and revokes its refresh family, in
    /// one step of the store.
    pub async fn revoke_access(
        &self,
        token: &tessera_jose::Token,
    ) -> Result<(), tessera_core::GrantError> {
        let c = &token.claims;
        if let (Some(jti), Some(exp)) = (&c.jti, c.exp) {
            self.tokens.revoke_access(jti, exp).await?;
            tracing::info!(target: "audit", event = "access_token_denylisted", user = ?c.sub, until = exp);
        }
        Ok(())
    }
}

/// Builds the service over `store` with `clock`; signing keys are sealed under `master` (a
/// first key is made if the store has none).
pub async fn build<S: Stores + Clone>(
    config: &Config,
    store: S,
    clock: Arc<dyn Clock>,
    master: MasterKey,
) -> Result<AppState<S>, ConfigError> {
    let p = &config.password;
    let hasher = PasswordHasherPool::new(
        HashParams {
            m_cost: p.memory_kib,
            t_cost: p.iterations,
            p_cost: p.parallelism,
        },
        p.hash_concurrency,
        p.hash_queue,
        p.hash_nice,
    )
    .map_err(|e| ConfigError(format!("password hashing: {e}")))?;
    let t = &config.throttle;
    let throttle = Throttle::new(ThrottlePolicy {
        account_free: t.account_free_attempts,
        ip_free: t.ip_free_attempts,
        base_delay: t.base_delay.secs().max(1),
        max_delay: t.max_delay.secs().max(1),
        window: t.window.secs().max(1),
        device_ttl: t.device_ttl.secs().max(1),
        ..ThrottlePolicy::default()
    });
    let development = config.development();
    let issuer = config.issuer();
    let algorithm = tessera_jose::Algorithm::from_name(&config.tokens.algorithm)
        .ok_or_else(|| ConfigError("tokens.algorithm is EdDSA, ES256, RS256 or HS256".into()))?;
    let access_ttl = config.tokens.access_ttl.secs();
    let now = clock.now();
    let successor = master.derive("refresh-token-successor");
    // Revocations survive a restart: the denylist is reloaded from the store.
    let denylist = Arc::new(Denylist::new(access_ttl));
    denylist.extend_stored(
        store
            .denied_access(now)
            .await
            .map_err(|e| ConfigError(format!("reading the access-token denylist: {e}")))?,
        now,
    );
    let csrf = tessera_core::CsrfKey::new(master.derive("form-csrf"));
    let devices = DeviceCookies::new(
        tessera_core::CsrfKey::new(master.derive("device-cookie")),
        config.throttle.device_ttl.secs().max(1),
    );
    let keys = Arc::new(
        KeyManager::start(store.clone(), master, algorithm, now, access_ttl + LEEWAY)
            .await
            .map_err(|e| ConfigError(e.to_string()))?,
    );
    let t = &config.tokens;
    let tokens = Tokens::new(
        store.clone(),
        Arc::clone(&keys),
        successor,
        TokenSettings {
            issuer: issuer.clone(),
            audience: config.audience(),
            access_ttl,
            client_id: t.client_id.clone(),
            scope: t.scope.clone(),
            refresh_idle: t.refresh_idle.secs(),
            refresh_absolute: t.refresh_absolute.secs(),
            refresh_grace: t.refresh_grace.secs(),
            max_refresh_families: t.max_refresh_families,
            leeway: LEEWAY,
            verified_cache: t.verified_cache_size,
        },
        Arc::clone(&clock),
        Arc::clone(&denylist),
    );
    let auth = Auth::new(
        store,
        hasher,
        PasswordPolicy {
            min_len: p.min_length,
            ..PasswordPolicy::default()
        },
        SessionPolicy {
            idle_timeout: config.session.idle_timeout.secs(),
            absolute_timeout: config.session.absolute_timeout.secs(),
            max_per_user: config.session.max_per_user,
            ..SessionPolicy::default()
        },
        throttle,
        devices,
        clock,
        Arc::clone(&denylist),
    );
    Ok(AppState {
        keys,
        tokens: Arc::new(tokens),
        denylist,
        auth: Arc::new(auth),
        settings: Arc::new(Settings {
            cookie_name: if development {
                "tessera_session"
            } else {
                "__Host-tessera_session"
            },
            device_cookie_name: if development {
                "tessera_device"
            } else {
                "__Host-tessera_device"
            },
            secure_cookie: !development,
            origin: http::origin_of(&issuer),
            trusted_proxies: config.trusted_proxies.clone(),
            allow_registration: config.allow_registration,
            hsts: issuer.starts_with("https://"),
            audience: config.audience(),
            issuer,
            access_ttl,
            client_id: config.tokens.client_id.clone(),
            scope: config.tokens.scope.clone(),
            algorithm,
            key_activation_delay: config.tokens.key_activation_delay.secs(),
            csrf,
            introspection_open_when_stale: config.tokens.introspection_stale_denylist == "open",
            scope_words: config.pages.scopes.clone(),
            look: look::Look::from_config(&config.pages)?,
            instance_name: config
                .instance_name
                .as_deref()
                .and_then(|n| HeaderValue::from_str(n).ok()),
        }),
        metrics: Arc::new(metrics::Metrics::default()),
    })
}

/// The routes, with the body limit, the request timeout, metrics and problem bodies for every
/// error the framework itself produces.
pub fn router<S: Stores>(state: AppState<S>, config: &Config) -> Router {
    Router::new()
        .route("/auth/login", post(routes::login::<S>))
        .route("/auth/logout", post(routes::logout::<S>))
        .route("/auth/me", get(routes::me::<S>))
        .route(
            "/auth/sessions",
            get(routes::list_sessions::<S>).delete(routes::end_other_sessions::<S>),
        )
        .route("/auth/sessions/{id}", delete(routes::end_session::<S>))
        .route(
            "/auth/session/data",
            get(routes::get_session_data::<S>).put(routes::put_session_data::<S>),
        )
        .route("/auth/register", post(routes::register::<S>))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz::<S>))
        .route("/metrics", get(routes::metrics::<S>))
        .route("/.well-known/jwks.json", get(routes::jwks::<S>))
        .route("/oauth2/token", post(oauth::token::<S>))
        .route("/oauth2/revoke", post(oauth::revoke::<S>))
        .route("/oauth2/introspect", post(oauth::introspect::<S>))
        .route("/oauth2/revocations", get(feed::revocations::<S>))
        .route(
            "/oauth2/authorize",
            get(pages::authorize::<S>).post(pages::decide::<S>),
        )
        .route("/oauth2/login", post(pages::login_form::<S>))
        .route(look::STYLESHEET, get(look::stylesheet))
        .route(
            look::LOGO,
            get(|State(s): State<AppState<S>>| async move { s.settings.look.logo() }),
        )
        .route(
            "/debugger",
            get(debugger::debugger_page::<S>).post(debugger::debug_token::<S>),
        )
        .route("/account", get(account::account_page::<S>))
        .route("/account/sessions/end", post(account::end_session::<S>))
        .route(
            "/account/consents/withdraw",
            post(account::withdraw_consent::<S>),
        )
        .route(
            "/signout",
            get(account::signout_page::<S>).post(account::signout::<S>),
        )
        .route("/auth/consents", get(pages::consents::<S>))
        .route(
            "/auth/consents/{client_id}",
            delete(pages::withdraw_consent::<S>),
        )
        .route(
            "/.well-known/openid-configuration",
            get(routes::discovery::<S>),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(routes::discovery::<S>),
        )
        .fallback(|| async { Problem::for_status(StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout.0,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), finish::<S>))
        .with_state(state)
}

/// Records metrics, adds the security headers, and turns any error response that is not yet a
/// problem (router 405, timeout 408, …) into one.
async fn finish<S: Stores>(State(state): State<AppState<S>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut res = next.run(req).await;
    let status = res.status();
    let oauth_route = route
        .as_ref()
        .is_some_and(|r| r.as_str().starts_with("/oauth2/"));
    let is_formatted = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        // A handler's own answer (problem, OAuth error, readiness JSON, HTML page) stays; the
        // framework's bare ones (text/plain, empty) are rewritten.
        v.starts_with(b"application/problem+json")
            || v.starts_with(b"text/html")
            || v.starts_with(b"application/json")
    });
    if (status.is_client_error() || status.is_server_error()) && !is_formatted {
        let allow = res.headers().get(header::ALLOW).cloned();
        res = if oauth_route {
            oauth::OAuthError::for_status(status).into_response()
        } else {
            Problem::for_status(status).into_response()
        };
        if let Some(a) = allow {
            res.headers_mut().insert(header::ALLOW, a);
        }
    }
    let h = res.headers_mut();
    if let Some(name) = &state.settings.instance_name {
        h.insert("x-tessera-instance", name.clone());
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if state.settings.hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state
        .metrics
        .record(route, status.as_u16(), started.elapsed());
    res
}

/// Serves `router` on `listener` until `shutdown` completes; requests in flight finish. The
/// connection limits are the defaults ([`conn::Limits::default`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, &conn::Limits::default(), shutdown).await
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes; requests in flight
/// finish.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: &conn::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    conn::run(listener, router, None, limits, shutdown).await
}

/// Reloads the signing keys every `every`: a rotation made by the CLI or another instance, or
/// a key reaching its activation time, takes effect without a restart.
pub fn spawn_key_refresher<S: Stores>(state: &AppState<S>, every: std::time::Duration) {
    let keys = Arc::clone(&state.keys);
    let auth = Arc::clone(&state.auth);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = keys.refresh(auth.now()).await {
                tracing::warn!(error = %e, "reloading the signing keys failed");
            }
        }
    });
}

/// Applies the [`Change`]s other instances (or the CLI) announce, from the store layer's change
/// bus (whose caches take them on their own), until its publishers are gone: a revoked access
/// token joins the denylist, a key change reloads the keys, and [`Change::Everything`] (a feed
/// that reconnected, a generation that moved) reloads both.
pub fn spawn_change_listener<S: Stores>(
    state: &AppState<S>,
    mut changes: tessera_store::Changes,
) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        while let Some(change) = changes.next().await {
            let now = state.auth.now();
            match &change {
                Change::Denied { jti, exp } => {
                    state.denylist.extend_stored([(jti.clone(), *exp)], now);
                }
                Change::Keys => {
                    if let Err(e) = state.keys.refresh(now).await {
                        tracing::warn!(error = %e, "reloading the signing keys failed");
                    }
                }
                Change::Everything => {
                    match state.auth.store().denied_access(now - LEEWAY).await {
                        Ok(entries) => {
                            state.denylist.extend_stored(entries, now);
                            state.denylist.set_fresh(true);
                        }
                        Err(e) => tracing::warn!(error = %e, "reloading the denylist failed"),
                    }
                    if let Err(e) = state.keys.refresh(now).await {
                        tracing::warn!(error = %e, "reloading the signing keys failed");
                    }
                }
                // The denylist's freshness is the store sync's to say (`spawn_denylist_sync`):
                // it stays complete without the feed.
                Change::FeedLost
                | Change::Session(_)
                | Change::SessionsOf(_)
                | Change::User(_)
                | Change::Client(_) => {}
            }
        }
    })
}

/// How far before the previous catch-up each catch-up looks, seconds: an entry is stamped
/// with its writer's clock before its transaction commits, and becomes visible up to this
/// much later (transactions are bounded well below it; clocks of a cluster agree within it).
const SYNC_LOOKBACK: i64 = 10;

/// How often the catch-up reads every entry in force instead of the recent ones.
const SYNC_FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Catches up every `every` with the revocations made durable in the store by any instance
/// (or the CLI): the denylist is complete within `every` of a revocation whether or not the
/// change feed (Redis pub/sub, the fast path) delivered it. The copy counts as fresh while
/// these reads succeed, and stale once they have failed for three periods in a row.
pub fn spawn_denylist_sync<S: Stores>(
    state: &AppState<S>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first catch-up looks back from now: `build` loaded everything before.
        let mut last = state.auth.now();
        let mut failures = 0u32;
        let mut full_at = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let now = state.auth.now();
            // Now and then everything in force, whenever it was stamped: an entry whose
            // transaction became visible later than the lookback (a partitioned writer, a
            // writer's clock far off) is not missed for longer than this.
            let full = full_at.elapsed() >= SYNC_FULL_EVERY;
            let since = if full { i64::MIN } else { last - SYNC_LOOKBACK };
            let read = state.auth.store().denied_since(since, now - LEEWAY).await;
            if full && read.is_ok() {
                full_at = tokio::time::Instant::now();
            }
            match read {
                Ok(entries) => {
                    state.denylist.extend_stored(entries, now);
                    state.denylist.set_fresh(true);
                    last = now;
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 3 {
                        state.denylist.set_fresh(false);
                        tracing::warn!(error = %e, "the denylist cannot be read from the store; it may be stale until it can");
                    }
                }
            }
        }
    })
}

/// Removes dead sessions every `every` until the process ends (stores without native expiry).
pub fn spawn_purger<S: Stores>(state: &AppState<S>, every: std::time::Duration) {
    let auth = Arc::clone(&state.auth);
    let access_ttl = state.tokens.settings().access_ttl;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = auth.store().purge_denied(auth.now() - LEEWAY).await {
                tracing::warn!(error = %e, "purging the access-token denylist failed");
            }
            if let Err(e) = auth
                .store()
                .purge_access(auth.now() - access_ttl - LEEWAY)
                .await
            {
                tracing::warn!(error = %e, "purging the records of expired access tokens failed");
            }
            if let Err(e) = auth.store().purge_codes(auth.now()).await {
                tracing::warn!(error = %e, "purging expired authorization codes failed");
            }
            match auth.store().purge_expired_sessions(auth.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(target: "audit", event = "sessions_purged", count = n),
                Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
            }
        }
    });
}
