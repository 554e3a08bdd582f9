//! Reading key material from a file or an HTTP(S) URL, with a timeout and a size cap.

use std::io::Read as _;
use std::time::Duration;

use crate::Failure;

/// The most a key set or discovery document may weigh.
pub(crate) const MAX_BYTES: usize = 1024 * 1024;

/// True for `http://` and `https://` URLs.
pub(crate) fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// Reads a local file, refusing one larger than [`MAX_BYTES`].
pub(crate) fn file(path: &str) -> Result<Vec<u8>, Failure> {
    let f = std::fs::File::open(path)
        .map_err(|e| Failure::refused(format!("cannot read {path}: {e}")))?;
    let mut buf = Vec::new();
    f.take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Failure::refused(format!("cannot read {path}: {e}")))?;
    if buf.len() > MAX_BYTES {
        return Err(Failure::refused(format!(
            "{path} is larger than {MAX_BYTES} bytes"
        )));
    }
    Ok(buf)
}

/// GETs `url` with an overall `timeout` and the [`MAX_BYTES`] cap. Plain HTTP is allowed only to
/// a loopback host: keys fetched in the clear could be anyone's.
pub(crate) fn url(url: &str, timeout: Duration) -> Result<Vec<u8>, Failure> {
    let parsed =
        reqwest::Url::parse(url).map_err(|_| Failure::usage(format!("not a URL: {url}")))?;
    // The shared rule, on the parsed URL: https, or plain http to a loopback host; no user@.
    if let Some(why) = tessera_core::weburl::transport_problem(&parsed) {
        return Err(Failure::usage(format!(
            "refusing to fetch keys from {url}: {why}"
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::refused(format!("cannot start the HTTP client: {e}")))?;
    let fetch = async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(redirect_policy())
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        let mut response = client
            .get(parsed.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| describe(url, &e))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BYTES as u64)
        {
            return Err(format!("{url} sent more than {MAX_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(url, &e))? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!("{url} sent more than {MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    // The client's timeout covers the whole exchange; this outer bound is a second guard.
    runtime
        .block_on(async { tokio::time::timeout(timeout + Duration::from_secs(1), fetch).await })
        .map_err(|_| Failure::refused(format!("{url} did not answer within {timeout:?}")))?
        .map_err(Failure::refused)
}

/// At most three redirects, each to a URL the first could have been (the shared rule: https, or
/// plain http to a loopback host, no user information), and never from https to anything but
/// https: keys fetched over TLS are not to be taken from a plain-text hop.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let refused = redirect_refused(attempt.previous(), attempt.url());
        match refused {
            Some(why) => attempt.error(why),
            None if attempt.previous().len() > 3 => attempt.error("too many redirects"),
            None => attempt.follow(),
        }
    })
}

/// Why a redirect to `next`, after `previous`, is refused, if it is.
fn redirect_refused(previous: &[reqwest::Url], next: &reqwest::Url) -> Option<&'static str> {
    if let Some(why) = tessera_core::weburl::transport_problem(next) {
        return Some(why);
    }
    if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        return Some("a redirect from https may only go to https");
    }
    None
}

fn describe(url: &str, e: &reqwest::Error) -> String {
    if e.is_redirect() {
        let why = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_else(|| "refused".into());
        format!("{url} redirected to a URL that is refused ({why})")
    } else if e.is_timeout() {
        format!("{url} did not answer in time")
    } else if e.is_connect() {
        format!("cannot connect to {url}")
    } else {
        format!("fetching {url} failed")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::redirect_refused;

    #[test]
    fn redirects_never_leave_https_nor_loopback_http() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let https = [u("https://auth.example/jwks")];
        let local = [u("http://127.0.0.1:8080/jwks")];
        assert!(redirect_refused(&https, &u("https://cdn.example/jwks")).is_none());
        assert!(redirect_refused(&https, &u("http://127.0.0.1/jwks")).is_some());
        assert!(redirect_refused(&https, &u("http://evil.example/jwks")).is_some());
        assert!(redirect_refused(&local, &u("http://localhost:9/jwks")).is_none());
        assert!(redirect_refused(&local, &u("https://auth.example/jwks")).is_none());
        assert!(redirect_refused(&local, &u("http://evil.example/jwks")).is_some());
        assert!(redirect_refused(&local, &u("http://u@127.0.0.1/jwks")).is_some());
        assert!(redirect_refused(&local, &u("http://localhost:80@evil.example/")).is_some());
    }
}
