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
pub mod openapi;
mod pages;
pub mod problem;
mod routes;
pub mod settings;
pub mod tls;

/// What the fuzz targets (`fuzz/`) reach that the API does not: built only under `cfg(fuzzing)`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// RFC 6749 §2.3.1 Basic credentials as the token endpoint reads them (`Err`: refused).
    pub fn basic_credentials(
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<(String, String)>, String> {
        crate::oauth::basic_credentials(headers).map_err(|e| format!("{e:?}"))
    }
}

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use tessera_core::{
    HashParams, MasterKey, Service, ServiceSettings, SessionPolicy, Stores, ThrottlePolicy,
    TokenSettings,
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
    /// `Cache-Control` of the JWKS: cacheable for half the activation delay, at most an hour.
    pub jwks_cache_control: HeaderValue,
    /// The JWKS as served, made once per key ring.
    pub jwks: Arc<routes::JwksDocument>,
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
    /// The OpenAPI document, with this instance's issuer as its server.
    pub openapi: openapi::Served,
}

pub use tessera_core::LEEWAY;

/// The shared state of every handler: the domain service (its parts reached through it:
/// `state.auth`, `state.tokens`, `state.keys`, `state.denylist`), and what HTTP adds.
#[derive(Debug)]
pub struct AppState<S> {
    /// The domain service.
    pub service: Service<S>,
    /// Handler settings.
    pub settings: Arc<Settings>,
    /// Request metrics.
    pub metrics: Arc<metrics::Metrics>,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            service: self.service.clone(),
            settings: Arc::clone(&self.settings),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl<S> std::ops::Deref for AppState<S> {
    type Target = Service<S>;
    fn deref(&self) -> &Service<S> {
        &self.service
    }
}

/// Builds the service over `store` with `clock` ([`Service::start`] with the settings
/// `config` gives), and what HTTP adds; signing keys are sealed under `master`.
pub async fn build<S: Stores + Clone>(
    config: &Config,
    store: S,
    clock: Arc<dyn Clock>,
    master: MasterKey,
) -> Result<AppState<S>, ConfigError> {
    build_with(config, store, clock, master, None).await
}

/// [`build`], with new signing keys made in `vault` (an HSM) when there is one.
pub async fn build_with<S: Stores + Clone>(
    config: &Config,
    store: S,
    clock: Arc<dyn Clock>,
    master: MasterKey,
    vault: Option<Arc<dyn tessera_core::KeyVault>>,
) -> Result<AppState<S>, ConfigError> {
    let development = config.development();
    let issuer = config.issuer();
    let mut settings = service_settings(config)?;
    settings.vault = vault;
    let algorithm = settings.algorithm;
    let access_ttl = settings.tokens.access_ttl;
    let csrf = tessera_core::CsrfKey::new(master.derive("form-csrf"));
    let openapi = openapi::Served::new(&issuer)?;
    let service = Service::start(store, settings, clock, master)
        .await
        .map_err(|e| ConfigError(e.0))?;
    Ok(AppState {
        service,
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
            jwks_cache_control: jwks_cache_control(config.tokens.key_activation_delay.secs()),
            jwks: Arc::default(),
            csrf,
            introspection_open_when_stale: config.tokens.introspection_stale_denylist == "open",
            scope_words: config.pages.scopes.clone(),
            look: look::Look::from_config(&config.pages)?,
            openapi,
            instance_name: config
                .instance_name
                .as_deref()
                .and_then(|n| HeaderValue::from_str(n).ok()),
        }),
        metrics: Arc::new(metrics::Metrics::default()),
    })
}

/// `Cache-Control` of the JWKS for a key activation delay of `delay` seconds: `public,
/// max-age=` half of it (at most an hour), so that a cache renews it at least twice while a
/// rotated key waits to sign; `no-cache` (renew every time, a 304 with the `ETag`) when keys
/// sign at once.
fn jwks_cache_control(delay: i64) -> HeaderValue {
    match (delay / 2).min(3600) {
        age if age > 0 => HeaderValue::from_str(&format!("public, max-age={age}"))
            .unwrap_or(HeaderValue::from_static("no-cache")),
        _ => HeaderValue::from_static("public, no-cache"),
    }
}

/// The domain service's settings, from the configuration.
pub fn service_settings(config: &Config) -> Result<ServiceSettings, ConfigError> {
    let algorithm =
        tessera_jose::Algorithm::from_name(&config.tokens.algorithm).ok_or_else(|| {
            ConfigError("tokens.algorithm is EdDSA, ES256, RS256, PS256 or HS256".into())
        })?;
    let p = &config.password;
    let t = &config.throttle;
    let k = &config.tokens;
    Ok(ServiceSettings {
        hash: HashParams {
            m_cost: p.memory_kib,
            t_cost: p.iterations,
            p_cost: p.parallelism,
        },
        hash_concurrency: p.hash_concurrency,
        hash_queue: p.hash_queue,
        hash_nice: p.hash_nice,
        password_min_length: p.min_length,
        throttle: ThrottlePolicy {
            account_free: t.account_free_attempts,
            ip_free: t.ip_free_attempts,
            base_delay: t.base_delay.secs().max(1),
            max_delay: t.max_delay.secs().max(1),
            window: t.window.secs().max(1),
            device_ttl: t.device_ttl.secs().max(1),
            ..ThrottlePolicy::default()
        },
        session: SessionPolicy {
            idle_timeout: config.session.idle_timeout.secs(),
            absolute_timeout: config.session.absolute_timeout.secs(),
            max_per_user: config.session.max_per_user,
            ..SessionPolicy::default()
        },
        tokens: TokenSettings {
            issuer: config.issuer(),
            audience: config.audience(),
            access_ttl: k.access_ttl.secs(),
            client_id: k.client_id.clone(),
            scope: k.scope.clone(),
            refresh_idle: k.refresh_idle.secs(),
            refresh_absolute: k.refresh_absolute.secs(),
            refresh_grace: k.refresh_grace.secs(),
            max_refresh_families: k.max_refresh_families,
            leeway: LEEWAY,
            verified_cache: k.verified_cache_size,
            timed_refresh: k.refresh_token_form == "timed",
        },
        algorithm,
        vault: None,
    })
}

/// The routes, with the body limit, the request timeout, metrics and problem bodies for every
/// error the framework itself produces.
pub fn router<S: Stores>(state: AppState<S>, config: &Config) -> Router {
    api::<S>()
        .router
        .fallback(|| async { Problem::for_status(StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout.0,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), finish::<S>))
        .with_state(state)
}

/// Every operation the router serves, as `(method, path)` with the method in lower case and the
/// path as the OpenAPI document writes it (`/auth/sessions/{id}`). The router is built from the
/// same table, so this list is the router's, and a test holds `/openapi.json` to it.
pub fn operations<S: Stores>() -> Vec<(&'static str, &'static str)> {
    api::<S>()
        .served
        .into_iter()
        .map(|(verb, path)| (verb.name(), path))
        .collect()
}

/// The one table of operations: each line is one method on one path.
fn api<S: Stores>() -> Api<S> {
    use Verb::{Delete, Get, Post, Put};
    Api::default()
        // The JSON API (RFC 9457 problems).
        .at(Post, "/auth/login", routes::login::<S>)
        .at(Post, "/auth/logout", routes::logout::<S>)
        .at(Get, "/auth/me", routes::me::<S>)
        .at(Get, "/auth/sessions", routes::list_sessions::<S>)
        .at(Delete, "/auth/sessions", routes::end_other_sessions::<S>)
        .at(Delete, "/auth/sessions/{id}", routes::end_session::<S>)
        .at(Get, "/auth/session/data", routes::get_session_data::<S>)
        .at(Put, "/auth/session/data", routes::put_session_data::<S>)
        .at(Post, "/auth/register", routes::register::<S>)
        .at(Get, "/auth/consents", pages::consents::<S>)
        .at(
            Delete,
            "/auth/consents/{client_id}",
            pages::withdraw_consent::<S>,
        )
        // Operations.
        .at(Get, "/healthz", routes::healthz)
        .at(Get, "/readyz", routes::readyz::<S>)
        .at(Get, "/metrics", routes::metrics::<S>)
        .at(Get, openapi::PATH, openapi::document::<S>)
        // OAuth 2.0 (RFC 6749 errors) and discovery.
        .at(Get, "/.well-known/jwks.json", routes::jwks::<S>)
        .at(
            Get,
            "/.well-known/openid-configuration",
            routes::discovery::<S>,
        )
        .at(
            Get,
            "/.well-known/oauth-authorization-server",
            routes::discovery::<S>,
        )
        .at(Post, "/oauth2/token", oauth::token::<S>)
        .at(Post, "/oauth2/revoke", oauth::revoke::<S>)
        .at(Post, "/oauth2/introspect", oauth::introspect::<S>)
        .at(Get, "/oauth2/revocations", feed::revocations::<S>)
        // Pages for people.
        .at(Get, "/oauth2/authorize", pages::authorize::<S>)
        .at(Post, "/oauth2/authorize", pages::decide::<S>)
        .at(Post, "/oauth2/login", pages::login_form::<S>)
        .at(Get, look::STYLESHEET, look::stylesheet)
        .at(Get, look::LOGO, |State(s): State<AppState<S>>| async move {
            s.settings.look.logo()
        })
        .at(Get, "/debugger", debugger::debugger_page::<S>)
        .at(Post, "/debugger", debugger::debug_token::<S>)
        .at(Get, "/account", account::account_page::<S>)
        .at(Post, "/account/sessions/end", account::end_session::<S>)
        .at(
            Post,
            "/account/consents/withdraw",
            account::withdraw_consent::<S>,
        )
        .at(Get, "/signout", account::signout_page::<S>)
        .at(Post, "/signout", account::signout::<S>)
}

/// The methods tessera serves (a `GET` answers `HEAD` too).
#[derive(Debug, Clone, Copy)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// The router being built, and the list of what it serves.
struct Api<S> {
    router: Router<AppState<S>>,
    served: Vec<(Verb, &'static str)>,
}

impl<S: Stores> Default for Api<S> {
    fn default() -> Self {
        Api {
            router: Router::new(),
            served: Vec::new(),
        }
    }
}

impl<S: Stores> Api<S> {
    /// Serves `handler` for `verb` on `path` (a second method on a path joins the first).
    fn at<H, T>(mut self, verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState<S>>,
        T: 'static,
    {
        self.router = self.router.route(path, on(verb.filter(), handler));
        self.served.push((verb, path));
        self
    }
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

/// Hands the service ([`Service::apply`]) the changes other instances (or the CLI) announce,
/// from the store layer's change bus (whose caches take them on their own), until its
/// publishers are gone.
pub fn spawn_change_listener<S: Stores>(
    state: &AppState<S>,
    mut changes: tessera_store::Changes,
) -> tokio::task::JoinHandle<()> {
    let service = state.service.clone();
    tokio::spawn(async move {
        while let Some(change) = changes.next().await {
            service.apply(&change).await;
        }
    })
}
