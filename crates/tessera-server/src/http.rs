//! Request plumbing: the JSON body extractor (problem errors, unknown fields refused), the
//! caller's address behind trusted proxies, the session cookie, and the same-origin rule.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::config::IpNet;
use crate::problem::Problem;

/// A JSON request body of type `T`. Content type must be JSON; the size is capped by the body
/// limit; syntax errors, wrong types and unknown fields are 400 problems whose detail never
/// repeats a value from the body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &St) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| Problem::for_status(r.status()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Problem::bad_request(describe(&e)))
    }
}

/// A serde_json error in words that never quote the offending value (it may be a password).
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {}, column {}", e.line(), e.column());
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("the body is not valid JSON ({at})")
        }
        Category::Data => {
            let msg = e.to_string();
            // Field names are safe to repeat; values are not.
            if msg.starts_with("unknown field") || msg.starts_with("missing field") {
                let end = msg
                    .find(", expected")
                    .or_else(|| msg.find(" at line"))
                    .unwrap_or(msg.len());
                format!("{} ({at})", &msg[..end])
            } else {
                format!("a member of the body has the wrong type or value ({at})")
            }
        }
    }
}

/// The TCP peer's address, when the server was started with connect info.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<St: Send + Sync> FromRequestParts<St> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: Peer, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer.0.map(|a| a.ip())?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(*ip))
            .unwrap_or(peer),
    )
}

/// The value of cookie `name`, if sent once.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    // Two cookies of one name (a cookie-tossing attempt): trust neither.
                    return None;
                }
                found = Some(val.trim_matches('"'));
            }
        }
    }
    found
}

/// The bearer token of `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a request that changes state may use a cookie: `Sec-Fetch-Site` must say
/// same-origin (or none: typed by the user), or `Origin` must be ours; a request with neither
/// (not from a browser) passes.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(o) => o.eq_ignore_ascii_case(origin),
        None => true,
    }
}

/// `scheme://host[:port]` of a URL, as the URL parser reads it (user information and a
/// default port dropped); the text itself if it has no origin.
pub fn origin_of(url: &str) -> String {
    tessera_core::weburl::origin(url).unwrap_or_else(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = vec![IpNet::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.1, 10.0.0.2"),
        );
        let from = |ip: &str| Peer(Some(SocketAddr::new(ip.parse().unwrap(), 1234)));
        assert_eq!(
            client_ip(from("10.0.0.1"), &h, &trusted),
            Some("198.51.100.1".parse().unwrap())
        );
        assert_eq!(
            client_ip(from("192.0.2.5"), &h, &trusted),
            Some("192.0.2.5".parse().unwrap())
        );
        assert_eq!(
            client_ip(from("10.0.0.1"), &HeaderMap::new(), &trusted),
            Some("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn cookies_and_bearer() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tessera_session=tss_x; b=2"),
        );
        assert_eq!(cookie(&h, "tessera_session"), Some("tss_x"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("tessera_session=tss_y"),
        );
        assert_eq!(cookie(&h, "tessera_session"), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tss_abc"),
        );
        assert_eq!(bearer(&h), Some("tss_abc"));
    }

    #[test]
    fn origin_rules() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, "http://127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, "http://127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, "http://127.0.0.1:8080"));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h, "http://127.0.0.1:8080"));
        assert_eq!(
            origin_of("https://a.example:8443/x/y"),
            "https://a.example:8443"
        );
    }
}
