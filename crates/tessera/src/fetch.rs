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
            .redirect(reqwest::redirect::Policy::limited(3))
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

fn describe(url: &str, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("{url} did not answer in time")
    } else if e.is_connect() {
        format!("cannot connect to {url}")
    } else {
        format!("fetching {url} failed")
    }
}
