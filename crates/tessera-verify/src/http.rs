//! For axum services (cargo feature `axum`): the [`Bearer`] extractor and the [`VerifyLayer`]
//! tower layer. A missing token answers `401` with `WWW-Authenticate: Bearer`; an invalid one
//! `401` with `error="invalid_token"`; a token without a required scope `403` with
//! `error="insufficient_scope"` (RFC 6750 §3.1). Bodies are RFC 9457 problems.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::{Verifier, VerifyError};

/// A verified access token, from the request's `Authorization: Bearer` header (or from a
/// [`VerifyLayer`] in front, which already checked it).
#[derive(Debug, Clone)]
pub struct Bearer(pub tessera_jose::Token);

/// Why a request was refused.
#[derive(Debug)]
pub enum Rejection {
    /// No bearer token was sent.
    Missing,
    /// The token was refused.
    Refused(VerifyError),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, challenge, detail) = match &self {
            Rejection::Missing => (
                StatusCode::UNAUTHORIZED,
                "Bearer".to_owned(),
                "an access token is required".to_owned(),
            ),
            Rejection::Refused(VerifyError::FeedLost) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Bearer".to_owned(),
                "revocations cannot be checked now; try again shortly".to_owned(),
            ),
            Rejection::Refused(e @ (VerifyError::Invalid(_) | VerifyError::Revoked)) => (
                StatusCode::UNAUTHORIZED,
                "Bearer error=\"invalid_token\"".to_owned(),
                e.to_string(),
            ),
            Rejection::Refused(VerifyError::InsufficientScope(scope)) => (
                StatusCode::FORBIDDEN,
                format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\""),
                format!("the token lacks the scope {scope}"),
            ),
        };
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut res = (status, body.to_string()).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        res
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S> FromRequestParts<S> for Bearer
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        if let Some(b) = parts.extensions.get::<Bearer>() {
            return Ok(b.clone());
        }
        let token = bearer(&parts.headers).ok_or(Rejection::Missing)?;
        Verifier::from_ref(state)
            .verify(token)
            .await
            .map(Bearer)
            .map_err(Rejection::Refused)
    }
}

/// Verifies every request's bearer token (and the scopes given) before the inner service sees
/// it; the token is then available to handlers as [`Bearer`].
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    verifier: Verifier,
    scopes: Vec<String>,
}

impl VerifyLayer {
    /// Requires a valid token from `verifier`.
    pub fn new(verifier: Verifier) -> VerifyLayer {
        VerifyLayer {
            verifier,
            scopes: Vec::new(),
        }
    }

    /// Also requires each of `scopes`.
    pub fn require_scopes<I: IntoIterator<Item = T>, T: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }
}

impl<I> tower::Layer<I> for VerifyLayer {
    type Service = VerifyService<I>;

    fn layer(&self, inner: I) -> VerifyService<I> {
        VerifyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`VerifyLayer`] makes.
#[derive(Debug, Clone)]
pub struct VerifyService<I> {
    inner: I,
    layer: VerifyLayer,
}

impl<I> tower::Service<Request> for VerifyService<I>
where
    I: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    I::Future: Send + 'static,
{
    type Response = Response;
    type Error = I::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, I::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), I::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The clone that was made ready serves this request; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let Some(token) = bearer(req.headers()) else {
                return Ok(Rejection::Missing.into_response());
            };
            let checked = match layer.verifier.verify(token).await {
                Ok(t) => {
                    let scopes: Vec<&str> = layer.scopes.iter().map(String::as_str).collect();
                    Verifier::require_scopes(&t, &scopes).map(|()| t)
                }
                Err(e) => Err(e),
            };
            match checked {
                Ok(t) => {
                    req.extensions_mut().insert(Bearer(t));
                    inner.call(req).await
                }
                Err(e) => Ok(Rejection::Refused(e).into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_challenge() {
        let answer = |r: Rejection| {
            let res = r.into_response();
            let challenge = res.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap_or("")
                .to_owned();
            (res.status(), challenge)
        };
        assert_eq!(
            answer(Rejection::Refused(VerifyError::Revoked)),
            (
                StatusCode::UNAUTHORIZED,
                "Bearer error=\"invalid_token\"".into()
            )
        );
        // The feed lost past its grace: not the token's fault, so no invalid_token.
        assert_eq!(
            answer(Rejection::Refused(VerifyError::FeedLost)),
            (StatusCode::SERVICE_UNAVAILABLE, "Bearer".into())
        );
    }
}
