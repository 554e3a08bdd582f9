//! The OAuth 2.0 endpoints: `/oauth2/token` (RFC 6749 §6, refresh) and `/oauth2/revoke`
//! (RFC 7009). Form bodies; unknown parameters ignored, repeated ones refused; errors in the
//! RFC 6749 §5.2 JSON shape; `Cache-Control: no-store` on every answer.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tessera_core::{GrantError, Stores, Tokens, UserStore};

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
            GrantError::InvalidGrant => OAuthError::new(
                "invalid_grant",
                "the refresh token is invalid, expired or revoked",
            ),
            GrantError::Unavailable => {
                OAuthError::new("temporarily_unavailable", "try again shortly")
            }
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
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::new("invalid_request", "the body is not a valid form"))?;
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

/// The first-party public client: `client_id` must be it, and no secret is accepted.
fn public_client<S: Stores>(
    tokens: &Tokens<S>,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, OAuthError> {
    if headers.contains_key(header::AUTHORIZATION) || params.contains_key("client_secret") {
        return Err(OAuthError::new(
            "invalid_client",
            "this client authenticates with no secret",
        ));
    }
    match params.get("client_id") {
        Some(id) if *id == tokens.settings().client_id => Ok(id.clone()),
        Some(_) => Err(OAuthError::new("invalid_client", "unknown client")),
        None => Err(OAuthError::new("invalid_request", "client_id is required")),
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
pub fn token_response(issued: &tessera_core::Issued, scope: &str) -> Response {
    no_store(
        Json(json!({
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token.expose(),
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": scope,
        }))
        .into_response(),
    )
}

pub(crate) async fn token<U: UserStore, S: Stores>(
    State(state): State<AppState<U, S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form(&headers, &body)?;
    let grant = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::new("invalid_request", "grant_type is required"))?;
    match grant.as_str() {
        "refresh_token" => {
            let client = public_client(&state.tokens, &params, &headers)?;
            let presented = params
                .get("refresh_token")
                .ok_or_else(|| OAuthError::new("invalid_request", "refresh_token is required"))?;
            let issued = state.tokens.refresh(presented, &client).await?;
            Ok(token_response(&issued, &state.tokens.settings().scope))
        }
        "password" => Err(OAuthError::new(
            "unsupported_grant_type",
            "the password grant is not offered (RFC 9700 §2.4)",
        )),
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "this grant type is not offered",
        )),
    }
}

pub(crate) async fn revoke<U: UserStore, S: Stores>(
    State(state): State<AppState<U, S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form(&headers, &body)?;
    let client = public_client(&state.tokens, &params, &headers)?;
    let presented = params
        .get("token")
        .ok_or_else(|| OAuthError::new("invalid_request", "token is required"))?;
    let hint = params.get("token_type_hint").map(String::as_str);
    if let Some(h) = hint
        && !matches!(h, "access_token" | "refresh_token")
    {
        return Err(OAuthError::new(
            "unsupported_token_type",
            "token_type_hint is access_token or refresh_token",
        ));
    }
    if !state
        .tokens
        .revoke_refresh(presented, Some(&client))
        .await?
    {
        // Not a refresh token we know: an access token of this client is denylisted until it
        // expires, and its refresh family revoked.
        if let Ok(t) = state.tokens.verify_access(presented)
            && t.claims.client_id.as_deref() == Some(client.as_str())
        {
            state.revoke_access(&t).await?;
        }
    }
    // RFC 7009 §2.2: 200 whether or not the token was known.
    Ok(no_store(StatusCode::OK.into_response()))
}
