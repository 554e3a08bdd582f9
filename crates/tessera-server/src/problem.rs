//! Errors as RFC 9457 problem details: `application/problem+json` with a stable `type`, a
//! `title`, the `status` and a `detail` that never contains a secret.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tessera_core::{AccountError, LoginError, SessionError};

/// An error answer.
#[derive(Debug)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short stable code; the `type` is `urn:tessera:problem:<code>`.
    pub code: &'static str,
    /// One sentence for people.
    pub detail: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<i64>,
    /// Adds `WWW-Authenticate: Bearer` (401).
    pub bearer_challenge: bool,
    /// Makes the challenge `Bearer error="invalid_token"` (a token was presented and refused).
    pub invalid_token: bool,
}

impl Problem {
    /// A problem with no extra headers.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            bearer_challenge: false,
            invalid_token: false,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 401: no valid credentials.
    pub fn unauthorized() -> Problem {
        Problem {
            bearer_challenge: true,
            ..Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no valid session or token was presented",
            )
        }
    }

    /// 403: a cross-site request with a session cookie.
    pub fn cross_site() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "cookie-authenticated changes must come from the same origin",
        )
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 503: a store is unreachable.
    pub fn unavailable() -> Problem {
        Problem {
            retry_after: Some(5),
            ..Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a backing store is unavailable; try again shortly",
            )
        }
    }

    /// The default problem for a bare status (router 404/405, body limit 413, timeout 408, …).
    pub fn for_status(status: StatusCode) -> Problem {
        let (code, detail) = match status.as_u16() {
            404 => ("not_found", "no such resource"),
            405 => (
                "method_not_allowed",
                "this resource does not accept that method",
            ),
            408 => ("timeout", "the request took too long"),
            413 => ("payload_too_large", "the request body is too large"),
            415 => (
                "unsupported_media_type",
                "send the body as application/json",
            ),
            400..=499 => ("invalid_request", "the request was refused"),
            _ => ("internal", "the server failed to answer this request"),
        };
        Problem::new(status, code, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("urn:tessera:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut res = (self.status, body.to_string()).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        if self.invalid_token {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tessera\", error=\"invalid_token\""),
            );
        } else if self.bearer_challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tessera\""),
            );
        }
        res
    }
}

impl From<LoginError> for Problem {
    fn from(e: LoginError) -> Problem {
        match e {
            // One status and one body for unknown user, wrong password and disabled user.
            LoginError::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "invalid username or password",
            ),
            LoginError::Throttled(wait) => Problem {
                retry_after: Some(wait),
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "too many failed logins; try again later",
                )
            },
            LoginError::Busy(wait) => Problem {
                retry_after: Some(wait),
                ..Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many logins at once; try again shortly",
                )
            },
            LoginError::Unavailable => Problem::unavailable(),
        }
    }
}

impl From<SessionError> for Problem {
    fn from(e: SessionError) -> Problem {
        match e {
            SessionError::Invalid => Problem::unauthorized(),
            SessionError::Unavailable => Problem::unavailable(),
        }
    }
}

impl From<AccountError> for Problem {
    fn from(e: AccountError) -> Problem {
        match e {
            AccountError::BadUsername | AccountError::Password(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_account", e.to_string())
            }
            AccountError::Taken => {
                Problem::new(StatusCode::CONFLICT, "username_taken", e.to_string())
            }
            AccountError::NotFound => Problem::not_found(e.to_string()),
            AccountError::Unavailable => Problem::unavailable(),
        }
    }
}
