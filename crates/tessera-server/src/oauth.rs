//! The OAuth 2.0 endpoints: `/oauth2/token` (RFC 6749: refresh, client credentials,
//! authorization code with PKCE; RFC 8693 token exchange), `/oauth2/revoke` (RFC 7009) and
//! `/oauth2/introspect` (RFC 7662). Form bodies; unknown parameters ignored, repeated ones refused; errors in the
//! RFC 6749 §5.2 JSON shape; `Cache-Control: no-store` on every answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::json;
use tessera_core::client::{AUTHORIZATION_CODE, CLIENT_CREDENTIALS, TOKEN_EXCHANGE};
use tessera_core::logsafe::Untrusted;
use tessera_core::{AccessGrant, AccessIssued, Client, GrantError, Issued, Stores};

use crate::AppState;

/// An RFC 6749 error answer.
#[derive(Debug)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `error` code.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
}

impl OAuthError {
    /// A 400 with `error`.
    pub fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    /// A store is down: `503 temporarily_unavailable`.
    pub fn unavailable() -> OAuthError {
        OAuthError::new("temporarily_unavailable", "try again shortly")
    }

    /// The error for a bare status on an OAuth endpoint (413, 415, 404, 405, 408, …).
    pub fn for_status(status: StatusCode) -> OAuthError {
        let error = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request"
        };
        OAuthError {
            status,
            error,
            description: status.canonical_reason().unwrap_or("error").to_lowercase(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera\""),
            );
        }
        res
    }
}

impl From<GrantError> for OAuthError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::InvalidGrant | GrantError::CodeReused => {
                OAuthError::new("invalid_grant", "the grant is invalid, expired or revoked")
            }
            GrantError::InvalidScope => {
                OAuthError::new("invalid_scope", "the requested scope is not allowed")
            }
            GrantError::InvalidTarget => OAuthError::new(
                "invalid_target",
                "the requested resource or audience is not allowed for this client",
            ),
            GrantError::Unavailable => OAuthError::unavailable(),
        }
    }
}

/// Parses an `application/x-www-form-urlencoded` body: unknown parameters are kept (and later
/// ignored), a parameter sent twice is refused (RFC 6749 §3.2).
fn form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !ok {
        return Err(OAuthError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..OAuthError::new(
                "invalid_request",
                "send the body as application/x-www-form-urlencoded",
            )
        });
    }
    let pairs = crate::form::parse(body).map_err(|e| {
        OAuthError::new(
            "invalid_request",
            format!("the body is not a valid form: {e}"),
        )
    })?;
    let mut out = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                format!("the parameter `{k}` appears more than once"),
            ));
        }
    }
    Ok(out)
}

/// The client making an OAuth request, authenticated.
#[derive(Debug)]
pub struct OAuthClient {
    /// `client_id`.
    pub id: String,
    /// The registered client; `None` for the built-in first-party public client.
    pub client: Option<Client>,
    /// Whether it proved a secret (a confidential client).
    pub confidential: bool,
}

/// RFC 6749 §2.3.1 Basic credentials: `base64(urlencode(id) ":" urlencode(secret))`.
pub(crate) fn basic_credentials(
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, OAuthError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || {
        OAuthError::new(
            "invalid_client",
            "the Authorization header is not valid Basic credentials",
        )
    };
    let v = v.to_str().map_err(|_| bad())?;
    let (scheme, rest) = v.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad())?;
    // Each half is form-urlencoded on its own (RFC 6749 §2.3.1) and decoded strictly: `&` and
    // `=` in a secret are its own characters, not the start of another parameter.
    let colon = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let id = crate::form::decode_component(&raw[..colon]).map_err(|_| bad())?;
    let secret = crate::form::decode_component(&raw[colon + 1..]).map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok(Some((id, secret)))
}

impl<S: Stores> AppState<S> {
    /// Authenticates the client of an OAuth request by exactly one method (RFC 6749 §2.3):
    /// `client_secret_basic`, `client_secret_post`, or `none` (a public client naming itself).
    pub async fn oauth_client(
        &self,
        params: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<OAuthClient, OAuthError> {
        let basic = basic_credentials(headers)?;
        let posted = params.get("client_secret");
        let (id, secret) = match (basic, posted) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::new(
                    "invalid_request",
                    "authenticate the client by one method only",
                ));
            }
            (Some((id, secret)), None) => {
                if params.get("client_id").is_some_and(|c| *c != id) {
                    return Err(OAuthError::new(
                        "invalid_request",
                        "client_id differs from the authenticated client",
                    ));
                }
                (id, Some(secret))
            }
            (None, posted) => match params.get("client_id") {
                Some(id) => (id.clone(), posted.cloned()),
                None => {
                    return Err(OAuthError::new(
                        "invalid_client",
                        "client authentication is required",
                    ));
                }
            },
        };
        if id == self.tokens.settings().client_id {
            if secret.is_some() {
                return Err(OAuthError::new(
                    "invalid_client",
                    "this client authenticates with no secret",
                ));
            }
            return Ok(OAuthClient {
                id,
                client: None,
                confidential: false,
            });
        }
        let unknown = || OAuthError::new("invalid_client", "client authentication failed");
        let client = self
            .service
            .client(&id)
            .await
            .map_err(|_| OAuthError::unavailable())?
            .ok_or_else(unknown)?;
        let confidential = match (&secret, client.is_public()) {
            (Some(s), false) if client.secret_matches(s) => true,
            (None, true) => false,
            _ => {
                tracing::info!(target: "audit", event = "client_authentication_failed", client = %Untrusted(&client.id));
                return Err(unknown());
            }
        };
        Ok(OAuthClient {
            id,
            client: Some(client),
            confidential,
        })
    }
}

fn required<'p>(params: &'p HashMap<String, String>, name: &str) -> Result<&'p str, OAuthError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", format!("{name} is required")))
}

/// The registered client behind `c` if it may use `grant`.
fn registered<'c>(c: &'c OAuthClient, grant: &str) -> Result<&'c Client, OAuthError> {
    match &c.client {
        Some(client) if client.allows(grant) => Ok(client),
        _ => Err(OAuthError::new(
            "unauthorized_client",
            "this client may not use this grant type",
        )),
    }
}

/// RFC 8707 `resource` or RFC 8693 `audience`: at most one of them.
fn target(params: &HashMap<String, String>) -> Result<Option<&str>, OAuthError> {
    match (params.get("resource"), params.get("audience")) {
        (Some(_), Some(_)) => Err(OAuthError::new(
            "invalid_request",
            "send resource or audience, not both",
        )),
        (r, a) => Ok(r.or(a).map(String::as_str)),
    }
}

fn scope_param(params: &HashMap<String, String>) -> Result<Option<&str>, OAuthError> {
    match params.get("scope") {
        Some(s) if !tessera_core::client::valid_scope(s) => {
            Err(OAuthError::new("invalid_scope", "the scope is malformed"))
        }
        s => Ok(s.map(String::as_str)),
    }
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// The token response of RFC 6749 §5.1.
pub fn token_response(issued: &Issued) -> Response {
    no_store(
        Json(TokenBody {
            access_token: &issued.access_token,
            issued_token_type: None,
            refresh_token: Some(issued.refresh_token.expose()),
            token_type: "Bearer",
            expires_in: issued.expires_in,
            scope: &issued.scope,
        })
        .into_response(),
    )
}

/// The members of a token response (RFC 6749 §5.1; RFC 8693 §2.2.1 for an exchange).
#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    token_type: &'static str,
    expires_in: i64,
    scope: &'a str,
}

/// RFC 8693 token type of an access token.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// tessera's token type for a session token (`tss_…`) as the subject of an exchange.
pub const SESSION_TOKEN_TYPE: &str = "urn:tessera:params:oauth:token-type:session";

fn access_response(issued: &AccessIssued, exchange: bool) -> Response {
    no_store(
        Json(TokenBody {
            access_token: &issued.access_token,
            issued_token_type: exchange.then_some(ACCESS_TOKEN_TYPE),
            refresh_token: None,
            token_type: "Bearer",
            expires_in: issued.expires_in,
            scope: &issued.scope,
        })
        .into_response(),
    )
}

pub(crate) async fn token<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form(&headers, &body)?;
    let grant = required(&params, "grant_type")?;
    if grant == "password" {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "the password grant is not offered (RFC 9700 §2.4)",
        ));
    }
    if !matches!(
        grant,
        "refresh_token" | CLIENT_CREDENTIALS | AUTHORIZATION_CODE | TOKEN_EXCHANGE
    ) {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "this grant type is not offered",
        ));
    }
    let caller = state.oauth_client(&params, &headers).await?;
    match grant {
        "refresh_token" => {
            let presented = required(&params, "refresh_token")?;
            // Narrowing on refresh is not offered (the family keeps its scope), but a
            // malformed scope is still refused.
            scope_param(&params)?;
            let issued = state.tokens.refresh(presented, &caller.id).await?;
            Ok(token_response(&issued))
        }
        CLIENT_CREDENTIALS => {
            let client = registered(&caller, CLIENT_CREDENTIALS)?;
            let issued = state
                .tokens
                .client_credentials(client, scope_param(&params)?, target(&params)?)
                .await?;
            Ok(access_response(&issued, false))
        }
        AUTHORIZATION_CODE => {
            let client = registered(&caller, AUTHORIZATION_CODE)?;
            let code = required(&params, "code")?;
            let verifier = required(&params, "code_verifier")?;
            let redirect_uri = params.get("redirect_uri").map(String::as_str);
            match state
                .tokens
                .exchange_code(client, code, redirect_uri, verifier)
                .await
            {
                Ok(issued) => Ok(token_response(&issued)),
                Err(GrantError::CodeReused) => Err(OAuthError::new(
                    "invalid_grant",
                    "the authorization code was used before; what it issued is revoked",
                )),
                Err(e) => Err(e.into()),
            }
        }
        _ => token_exchange(&state, &caller, &params).await,
    }
}

/// RFC 8693: a gateway holding a person's session token gets a short-lived access JWT for one
/// audience, so the services behind it see a JWT, never the session.
async fn token_exchange<S: Stores>(
    state: &AppState<S>,
    caller: &OAuthClient,
    params: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let client = registered(caller, TOKEN_EXCHANGE)?;
    if !caller.confidential {
        return Err(OAuthError::new(
            "unauthorized_client",
            "token exchange is for confidential clients",
        ));
    }
    let subject = required(params, "subject_token")?;
    let subject_type = required(params, "subject_token_type")?;
    if subject_type != SESSION_TOKEN_TYPE
        && !(subject_type == ACCESS_TOKEN_TYPE && subject.starts_with("tss_"))
    {
        return Err(OAuthError::new(
            "invalid_request",
            format!("subject_token_type must be {SESSION_TOKEN_TYPE} (a tss_ session token)"),
        ));
    }
    if params.contains_key("actor_token") {
        return Err(OAuthError::new(
            "invalid_request",
            "delegation with an actor_token is not offered",
        ));
    }
    if let Some(t) = params.get("requested_token_type")
        && t != ACCESS_TOKEN_TYPE
        && t != "urn:ietf:params:oauth:token-type:jwt"
    {
        return Err(OAuthError::new(
            "invalid_request",
            "only access tokens are issued by exchange",
        ));
    }
    let scope = client
        .grant_scope(scope_param(params)?)
        .ok_or_else(|| OAuthError::new("invalid_scope", "the requested scope is not allowed"))?;
    let aud = state.tokens.audience_for(client, target(params)?)?;
    let session = match state.auth.authenticate(subject).await {
        Ok(a) => a,
        Err(tessera_core::SessionError::Unavailable) => return Err(OAuthError::unavailable()),
        Err(_) => {
            return Err(OAuthError::new(
                "invalid_request",
                "the subject token is not a live session",
            ));
        }
    };
    let now = state.auth.now();
    let grant = AccessGrant {
        aud: Some(aud),
        sid: Some(&session.session.handle),
        // Never outlives the session it stands for.
        ttl: Some(session.session.ends_at() - now),
        ..AccessGrant::new(&session.user.id, &client.id, &scope)
    };
    let (access_token, _, expires_in) = state.tokens.sign_access(grant, now).await?;
    tracing::info!(target: "audit", event = "token_exchanged", user = %session.user.id, client = %Untrusted(&client.id), audience = %Untrusted(aud));
    Ok(access_response(
        &AccessIssued {
            access_token,
            expires_in,
            scope,
        },
        true,
    ))
}

pub(crate) async fn revoke<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form(&headers, &body)?;
    let client = state.oauth_client(&params, &headers).await?;
    let presented = required(&params, "token")?;
    if let Some(h) = params.get("token_type_hint")
        && !matches!(h.as_str(), "access_token" | "refresh_token")
    {
        return Err(OAuthError::new(
            "unsupported_token_type",
            "token_type_hint is access_token or refresh_token",
        ));
    }
    if !state
        .tokens
        .revoke_refresh(presented, Some(&client.id))
        .await?
    {
        // Not a refresh token of this client: an access token of this client is denylisted
        // until it expires, and its refresh family revoked. Another client's token is left
        // alone, with the same answer.
        if let Ok(t) = state.tokens.verify_issued(presented)
            && t.claims.client_id.as_deref() == Some(client.id.as_str())
        {
            state.revoke_access(&t).await?;
        }
    }
    // RFC 7009 §2.2: 200 whether or not the token was known.
    Ok(no_store(StatusCode::OK.into_response()))
}

pub(crate) async fn introspect<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form(&headers, &body)?;
    let client = state.oauth_client(&params, &headers).await?;
    if !client.confidential {
        return Err(OAuthError::new(
            "invalid_client",
            "introspection is for confidential clients",
        ));
    }
    let presented = required(&params, "token")?;
    let answer = state.introspection(presented).await?;
    state.metrics.introspected(answer.active());
    Ok(no_store(Json(answer).into_response()))
}

/// An introspection answer (RFC 7662 §2.2), written straight from what was looked up: members
/// with no value are left out rather than written `null`.
pub enum Introspected<'a> {
    /// Not a token that is valid now.
    Inactive,
    /// A session token.
    Session {
        /// The session and its user.
        a: tessera_core::Authenticated,
        /// The server's issuer, client id and scope.
        settings: &'a crate::Settings,
    },
    /// A refresh token.
    Refresh {
        /// Its record.
        r: tessera_core::RefreshRecord,
        /// The server's issuer.
        issuer: &'a str,
    },
    /// An access JWT, with the username of its subject when that is a person.
    Access {
        /// The verified token.
        t: Arc<tessera_jose::Token>,
        /// Its subject's username.
        username: Option<String>,
    },
}

impl std::fmt::Debug for Introspected<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only whether it is active: the rest names a person and their session.
        f.debug_struct("Introspected")
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

impl Introspected<'_> {
    /// Whether the token is active.
    pub fn active(&self) -> bool {
        !matches!(self, Introspected::Inactive)
    }
}

impl Serialize for Introspected<'_> {
    fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        let mut m = z.serialize_map(None)?;
        m.serialize_entry("active", &self.active())?;
        match self {
            Introspected::Inactive => {}
            Introspected::Session { a, settings } => {
                m.serialize_entry("token_type", "Bearer")?;
                m.serialize_entry("iss", &settings.issuer)?;
                m.serialize_entry("sub", &a.user.id)?;
                m.serialize_entry("username", &a.user.username)?;
                m.serialize_entry("client_id", &settings.client_id)?;
                m.serialize_entry("scope", &settings.scope)?;
                m.serialize_entry("sid", &a.session.handle)?;
                m.serialize_entry("iat", &a.session.created_at)?;
                m.serialize_entry("exp", &a.session.ends_at())?;
            }
            Introspected::Refresh { r, issuer } => {
                m.serialize_entry("iss", issuer)?;
                m.serialize_entry("sub", &r.user_id)?;
                m.serialize_entry("client_id", &r.client_id)?;
                m.serialize_entry("scope", &r.scope)?;
                m.serialize_entry("iat", &r.created_at)?;
                m.serialize_entry("exp", &r.expires_at)?;
            }
            Introspected::Access { t, username } => {
                let c = &t.claims;
                m.serialize_entry("token_type", "Bearer")?;
                present(&mut m, "iss", c.iss.as_ref())?;
                m.serialize_entry("sub", c.sub.as_deref().unwrap_or_default())?;
                present(&mut m, "username", username.as_ref())?;
                present(&mut m, "aud", c.aud.as_ref())?;
                present(&mut m, "client_id", c.client_id.as_ref())?;
                present(&mut m, "scope", c.scope.as_ref())?;
                present(&mut m, "jti", c.jti.as_ref())?;
                present(&mut m, "sid", c.sid.as_ref())?;
                present(&mut m, "iat", c.iat.as_ref())?;
                present(&mut m, "nbf", c.nbf.as_ref())?;
                present(&mut m, "exp", c.exp.as_ref())?;
            }
        }
        m.end()
    }
}

/// `key: value` when there is a value.
fn present<M: SerializeMap, T: Serialize>(
    m: &mut M,
    key: &str,
    v: Option<&T>,
) -> Result<(), M::Error> {
    v.map_or(Ok(()), |v| m.serialize_entry(key, v))
}

impl<S: Stores> AppState<S> {
    /// RFC 7662 §2.2: what is known of an access JWT, refresh token or session token; inactive
    /// for anything not valid now. With the denylist possibly stale (its feed lost), access
    /// tokens are inactive unless `tokens.introspection_stale_denylist` is `open`.
    pub async fn introspection(&self, presented: &str) -> Result<Introspected<'_>, OAuthError> {
        use Introspected::Inactive;
        let settings = &*self.settings;
        if presented.starts_with("tss_") {
            return match self.auth.authenticate(presented).await {
                Ok(a) => Ok(Introspected::Session { a, settings }),
                Err(tessera_core::SessionError::Unavailable) => Err(OAuthError::unavailable()),
                Err(_) => Ok(Inactive),
            };
        }
        if presented.starts_with("tsr_") {
            return match self.tokens.refresh_state(presented).await {
                Ok(Some(r)) => Ok(Introspected::Refresh {
                    r,
                    issuer: &settings.issuer,
                }),
                Ok(None) => Ok(Inactive),
                Err(_) => Err(OAuthError::unavailable()),
            };
        }
        let Ok(t) = self.tokens.verify_issued(presented) else {
            return Ok(Inactive);
        };
        let c = &t.claims;
        if self.denylist.refuses(c) {
            return Ok(Inactive);
        }
        if !self.denylist.is_fresh() && !self.settings.introspection_open_when_stale {
            tracing::warn!("introspection answered inactive: the denylist may be stale");
            return Ok(Inactive);
        }
        let sub = c.sub.as_deref().unwrap_or_default();
        let mut username = None;
        if sub.starts_with("usr_") {
            match self.service.user(sub).await {
                Ok(Some(u)) if !u.disabled => username = Some(u.username),
                Ok(_) => return Ok(Inactive),
                Err(_) => return Err(OAuthError::unavailable()),
            }
        }
        if let Some(cid) = c.client_id.as_deref()
            && cid != settings.client_id
        {
            match self.service.client(cid).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Inactive),
                Err(_) => return Err(OAuthError::unavailable()),
            }
        }
        Ok(Introspected::Access { t, username })
    }
}
