//! The handlers of the first-party endpoints (DESIGN.md, "Contract (HTTP)").

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_core::{Authenticated, ClientInfo, Stores};

use crate::AppState;
use crate::http::{JsonBody, Peer, bearer, client_ip, cookie, same_origin};
use crate::problem::Problem;

/// The largest session data document, in bytes of JSON.
const MAX_SESSION_DATA: usize = 16 * 1024;

/// Who is calling, and how they proved it.
#[derive(Debug)]
pub struct Caller {
    /// The session.
    pub auth: Authenticated,
    /// True when the session came from the cookie (so same-origin rules apply).
    pub via_cookie: bool,
}

impl<S: Stores> AppState<S> {
    /// The caller's session from `Authorization: Bearer tss_…` or the session cookie; never
    /// from the URL.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        let (token, via_cookie) = match bearer(headers) {
            Some(t) => (t, false),
            None => match cookie(headers, self.settings.cookie_name) {
                Some(t) => (t, true),
                None => return Err(Problem::unauthorized()),
            },
        };
        let auth = self.auth.authenticate(token).await?;
        Ok(Caller { auth, via_cookie })
    }

    /// Refuses a cookie-authenticated change from another origin.
    pub(crate) fn guard(&self, caller: &Caller, headers: &HeaderMap) -> Result<(), Problem> {
        if caller.via_cookie && !same_origin(headers, &self.settings.origin) {
            return Err(Problem::cross_site());
        }
        Ok(())
    }

    /// What a login records of the browser: its `User-Agent` and address (behind trusted
    /// proxies).
    pub(crate) fn client_info(&self, peer: Peer, headers: &HeaderMap) -> ClientInfo {
        ClientInfo {
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            ip: client_ip(peer, headers, &self.settings.trusted_proxies),
            device: cookie(headers, self.settings.device_cookie_name).map(str::to_owned),
        }
    }

    /// The `Set-Cookie` of a new device cookie for `user`, after a successful login: the
    /// session cookie's rules, `SameSite=Strict` (only our own pages log in).
    pub(crate) fn device_cookie(&self, user: &tessera_core::User) -> HeaderValue {
        let (value, max_age) = self.auth.device_cookie(user);
        self.cookie(self.settings.device_cookie_name, &value, "Strict", max_age)
    }

    /// The `Set-Cookie` of the session cookie (`max_age` 0 with an empty value ends it).
    pub(crate) fn set_cookie(&self, value: &str, max_age: i64) -> HeaderValue {
        self.cookie(self.settings.cookie_name, value, "Lax", max_age)
    }

    /// A `Set-Cookie` with the rules every cookie of ours follows: `Path=/; HttpOnly`, and
    /// `Secure` unless in plain-HTTP loopback development.
    pub(crate) fn cookie(
        &self,
        name: &str,
        value: &str,
        same_site: &str,
        max_age: i64,
    ) -> HeaderValue {
        let secure = if self.settings.secure_cookie {
            "; Secure"
        } else {
            ""
        };
        let text = format!(
            "{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    mode: Option<String>,
}

pub(crate) async fn login<S: Stores>(
    State(state): State<AppState<S>>,
    peer: Peer,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, Problem> {
    // Login CSRF: a browser may only log in from our own pages.
    if !same_origin(&headers, &state.settings.origin) {
        return Err(Problem::cross_site());
    }
    let token_mode = match req.mode.as_deref() {
        None | Some("session") => false,
        Some("token") => true,
        Some(_) => return Err(Problem::bad_request("mode is \"session\" or \"token\"")),
    };
    let client = state.client_info(peer, &headers);
    if token_mode {
        let user = state
            .auth
            .check_password(&req.username, &req.password, &client)
            .await?;
        let issued = state
            .tokens
            .issue_for_login(&user)
            .await
            .map_err(|_| Problem::unavailable())?;
        let mut res = crate::oauth::token_response(&issued);
        res.headers_mut().remove(header::PRAGMA);
        res.headers_mut()
            .append(header::SET_COOKIE, state.device_cookie(&user));
        return Ok(res);
    }
    let (token, auth) = state
        .auth
        .login(&req.username, &req.password, &client)
        .await?;
    let max_age = auth.session.expires_at - auth.session.created_at;
    let body = json!({
        "sub": auth.user.id,
        "username": auth.user.username,
        "session_id": auth.session.handle,
        "session_token": token.expose(),
        "expires_at": auth.session.expires_at,
    });
    let mut res = Json(body).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        state.set_cookie(token.expose(), max_age),
    );
    res.headers_mut()
        .append(header::SET_COOKIE, state.device_cookie(&auth.user));
    Ok(no_store(res))
}

pub(crate) async fn logout<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if let Some(token) = bearer(&headers)
        && !token.starts_with("tss_")
    {
        let (t, _) = state.jwt_caller(token).await?;
        state
            .revoke_access(&t)
            .await
            .map_err(|_| Problem::unavailable())?;
        return Ok(no_store(StatusCode::NO_CONTENT.into_response()));
    }
    let caller = state.caller(&headers).await?;
    state.guard(&caller, &headers)?;
    state
        .auth
        .logout(&caller.auth.hash, &caller.auth.session)
        .await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, state.set_cookie("", 0));
    Ok(no_store(res))
}

/// `401` with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1).
fn invalid_token(why: &str) -> Problem {
    let mut p = Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", why);
    p.invalid_token = true;
    p
}

impl<S: Stores> AppState<S> {
    /// A bearer access JWT verified: ours, unexpired, not denylisted, of a live user.
    pub async fn jwt_caller(
        &self,
        token: &str,
    ) -> Result<(std::sync::Arc<tessera_jose::Token>, tessera_core::User), Problem> {
        if tessera_core::Tokens::<S>::is_refresh_token(token) {
            return Err(invalid_token("a refresh token is not an access token"));
        }
        let verified = self.tokens.verify_access(token).map_err(|e| {
            tracing::debug!(reason = e.kind(), "access token refused");
            self.metrics.verification_failed(e.kind());
            invalid_token("the access token is invalid or expired")
        })?;
        if self.denylist.refuses(&verified.claims) {
            self.metrics.verification_failed("revoked");
            return Err(invalid_token("the access token was revoked"));
        }
        let sub = verified.claims.sub.as_deref().unwrap_or_default();
        let user = match self.service.user(sub).await {
            Ok(Some(u)) if !u.disabled => u,
            Ok(_) => return Err(invalid_token("the access token's user no longer exists")),
            Err(_) => return Err(Problem::unavailable()),
        };
        Ok((verified, user))
    }
}

pub(crate) async fn me<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if let Some(token) = bearer(&headers)
        && !token.starts_with("tss_")
    {
        let (t, user) = state.jwt_caller(token).await?;
        return Ok(no_store(
            Json(Me::Jwt {
                sub: &user.id,
                username: &user.username,
                scope: t.claims.scope.as_deref(),
                client_id: t.claims.client_id.as_deref(),
                exp: t.claims.exp,
            })
            .into_response(),
        ));
    }
    let caller = state.caller(&headers).await?;
    let a = &caller.auth;
    Ok(no_store(
        Json(Me::Session {
            sub: &a.user.id,
            username: &a.user.username,
            session_id: &a.session.handle,
            expires_at: a.session.ends_at(),
        })
        .into_response(),
    ))
}

/// The answer of `GET /auth/me`, by how the caller authenticated (`auth`).
#[derive(Serialize)]
#[serde(tag = "auth", rename_all = "lowercase")]
enum Me<'a> {
    Jwt {
        sub: &'a str,
        username: &'a str,
        scope: Option<&'a str>,
        client_id: Option<&'a str>,
        exp: Option<i64>,
    },
    Session {
        sub: &'a str,
        username: &'a str,
        session_id: &'a str,
        expires_at: i64,
    },
}

pub(crate) async fn list_sessions<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = state.caller(&headers).await?;
    let list = state.auth.sessions_of(&caller.auth.user.id).await?;
    let out: Vec<Value> = list
        .iter()
        .map(|(hash, s)| {
            json!({
                "id": s.handle,
                "created_at": s.created_at,
                "last_seen_at": s.last_seen_at,
                "expires_at": s.ends_at(),
                "user_agent": s.user_agent,
                "ip": s.ip,
                "current": *hash == caller.auth.hash,
            })
        })
        .collect();
    Ok(no_store(Json(out).into_response()))
}

pub(crate) async fn end_session<S: Stores>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = state.caller(&headers).await?;
    state.guard(&caller, &headers)?;
    if state.auth.end_session(&caller.auth.user.id, &id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        // Another user's handle looks exactly like one that never existed.
        Err(Problem::not_found("no such session"))
    }
}

pub(crate) async fn end_other_sessions<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = state.caller(&headers).await?;
    state.guard(&caller, &headers)?;
    let n = state
        .auth
        .end_other_sessions(&caller.auth.user.id, &caller.auth.hash)
        .await?;
    Ok(Json(json!({ "ended": n })).into_response())
}

pub(crate) async fn get_session_data<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = state.caller(&headers).await?;
    Ok(no_store(Json(caller.auth.session.data).into_response()))
}

pub(crate) async fn put_session_data<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    JsonBody(data): JsonBody<Value>,
) -> Result<Response, Problem> {
    let caller = state.caller(&headers).await?;
    state.guard(&caller, &headers)?;
    if !data.is_object() {
        return Err(Problem::bad_request("session data is a JSON object"));
    }
    if data.to_string().len() > MAX_SESSION_DATA {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "session data is limited to 16 KiB",
        ));
    }
    if !state
        .auth
        .set_session_data(&caller.auth.hash, &data)
        .await?
    {
        return Err(Problem::unauthorized());
    }
    Ok(no_store(Json(data).into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    username: String,
    password: String,
}

pub(crate) async fn register<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, Problem> {
    if !state.settings.allow_registration {
        return Err(Problem::not_found(
            "self-service registration is not enabled",
        ));
    }
    if !same_origin(&headers, &state.settings.origin) {
        return Err(Problem::cross_site());
    }
    let user = state.auth.create_user(&req.username, &req.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "sub": user.id, "username": user.username })),
    )
        .into_response())
}

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for a store's answer: a probe with a one-second timeout must never
/// see an instance hang because a store does.
const READY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) async fn readyz<S: Stores>(State(state): State<AppState<S>>) -> Response {
    // Each store is asked in a task of its own, so that a store that hangs costs its own
    // timeout there (and marks it down for every request) while this answers within
    // READY_WAIT; a store marked down answers at once.
    let users = {
        let state = state.clone();
        tokio::spawn(async move { state.service.ping().await.is_ok() })
    };
    let sessions = {
        let state = state.clone();
        tokio::spawn(async move { state.service.ping_sessions().await.is_ok() })
    };
    // The key vault (an HSM), if keys sign in one: without it no token is issued, but every
    // token and session already out is verified, so the instance is `degraded`, not gone.
    let keys = {
        let state = state.clone();
        tokio::spawn(async move { state.service.keys.vault_ready().await })
    };
    let answered = |r: Result<
        Result<bool, tokio::task::JoinError>,
        tokio::time::error::Elapsed,
    >| { matches!(r, Ok(Ok(true))) };
    let (users, sessions, keys) = tokio::join!(
        tokio::time::timeout(READY_WAIT, users),
        tokio::time::timeout(READY_WAIT, sessions),
        tokio::time::timeout(READY_WAIT, keys)
    );
    let (users, sessions, keys) = (answered(users), answered(sessions), answered(keys));
    // One store down leaves the other half of the service up (Bearer JWTs verify without any
    // store), and a store outage hits every instance alike: the instance stays in the load
    // balancer and says `degraded`. Only with both stores gone is it `unavailable`.
    let (status, code) = match (users, sessions, keys) {
        (true, true, true) => ("ready", StatusCode::OK),
        (false, false, _) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        _ => ("degraded", StatusCode::OK),
    };
    let down: Vec<&str> = tessera_store::circuits()
        .iter()
        .filter(|c| c.is_open())
        .map(|c| c.name())
        .collect();
    let body = Json(json!({
        "status": status,
        "checks": { "users": users, "sessions": sessions, "signing_keys": keys },
        "stores_down": down,
    }));
    no_store((code, body).into_response())
}

pub(crate) async fn metrics<S: Stores>(State(state): State<AppState<S>>) -> Response {
    let active = state.service.stored_sessions().await.ok();
    let mut text = state
        .metrics
        .render(state.auth.counters(), state.auth.hasher(), active);
    text.push_str(
        &state
            .metrics
            .render_tokens(state.tokens.counters(), state.denylist.len()),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The JWK Set as served: its bytes and `ETag` header made once per key ring, so that a request
/// copies, allocates and validates none of it (each is a reference count).
#[derive(Debug, Default)]
pub struct JwksDocument(std::sync::Mutex<Option<JwksServed>>);

#[derive(Debug, Clone)]
struct JwksServed {
    ring: std::sync::Arc<tessera_core::KeyRing>,
    body: axum::body::Bytes,
    etag: Option<HeaderValue>,
}

impl JwksDocument {
    /// The document of `ring`, made now if the ring changed since the last.
    fn of(&self, ring: std::sync::Arc<tessera_core::KeyRing>) -> JwksServed {
        let mut served = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = served
            .as_ref()
            .filter(|s| std::sync::Arc::ptr_eq(&s.ring, &ring))
        {
            return s.clone();
        }
        let s = JwksServed {
            body: axum::body::Bytes::copy_from_slice(ring.jwks.as_bytes()),
            // Base64url between quotes: always a valid header value.
            etag: HeaderValue::from_str(&ring.jwks_etag).ok(),
            ring,
        };
        *served = Some(s.clone());
        s
    }
}

/// The JWK Set, with a strong `ETag` (the same on every instance publishing the same keys):
/// `If-None-Match` with it answers 304 without the document. It may be cached for half the key
/// activation delay (capped at an hour): a verifier that keeps it for as long as allowed has
/// fetched it again, and learned a rotated key, before that key signs anything.
pub(crate) async fn jwks<S: Stores>(State(state): State<AppState<S>>, req: Request) -> Response {
    let doc = state.settings.jwks.of(state.keys.ring());
    let cache = state.settings.jwks_cache_control.clone();
    let mut res = if req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|v| none_match(v.as_bytes(), doc.ring.jwks_etag.as_bytes()))
    {
        (StatusCode::NOT_MODIFIED, [(header::CACHE_CONTROL, cache)]).into_response()
    } else {
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, cache),
            ],
            doc.body,
        )
            .into_response()
    };
    if let Some(etag) = doc.etag {
        res.headers_mut().insert(header::ETAG, etag);
    }
    res
}

/// Whether an `If-None-Match` value names `etag` (RFC 9110 §13.1.2: a list of entity tags or
/// `*`, compared weakly, so `W/"x"` names `"x"`).
fn none_match(value: &[u8], etag: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|tag| {
        let tag = tag.trim_ascii();
        tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag
    })
}

/// RFC 8414 / OpenID discovery: exactly what this server offers.
pub(crate) async fn discovery<S: Stores>(State(state): State<AppState<S>>) -> Response {
    let s = &state.settings;
    let mut algs = vec![s.algorithm.name()];
    for k in state.keys.ring().keys.keys() {
        let name = k.algorithm().name();
        if !algs.contains(&name) {
            algs.push(name);
        }
    }
    let issuer = &s.issuer;
    let client_auth = ["client_secret_basic", "client_secret_post", "none"];
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_feed_endpoint": format!("{issuer}/oauth2/revocations"),
        "end_session_endpoint": format!("{issuer}/signout"),
        "grant_types_supported": [
            "authorization_code",
            "client_credentials",
            "refresh_token",
            tessera_core::client::TOKEN_EXCHANGE,
        ],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": true,
        "access_token_signing_alg_values_supported": algs,
        "subject_types_supported": ["public"],
        "scopes_supported": s.scope.split_whitespace().collect::<Vec<_>>(),
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(doc)).into_response()
}
