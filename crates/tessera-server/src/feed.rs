//! `GET /oauth2/revocations`: the revocation feed, as server-sent events, for verifiers that
//! check access tokens without calling introspection (tessera-verify follows it).
//!
//! A confidential client (HTTP Basic) opens the stream; each revocation in force is one event:
//!
//! ```text
//! id: 8fQ2….41
//! event: revoked
//! data: {"jti":"…","exp":1764331200}
//! ```
//!
//! `data` names exactly one of `jti`, `sid`, or `sub` with `revoked_at` (tokens of that subject
//! issued at or before it), and `exp`, after which the revocation no longer matters. A follower
//! that reconnects sends the last `id` it saw as `Last-Event-ID`: the same instance sends only
//! what came after; any other instance (or this one after a restart) sends every revocation in
//! force, so nothing is missed either way. A `ping` event follows as soon as the follower is
//! caught up, and again every [`HEARTBEAT`] while no revocation comes; it says whether this instance's own copy is current (`fresh`) or may be missing
//! revocations made elsewhere (`stale`, its change feed lost): a follower treats a silent or
//! stale feed as lost.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tessera_core::{Denylist, Stores};

use crate::AppState;
use crate::oauth::OAuthError;

/// How often an idle feed says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The most events written in one chunk.
const BATCH: usize = 512;

struct Follower {
    denylist: Arc<Denylist>,
    head: tokio::sync::watch::Receiver<u64>,
    cursor: Option<String>,
    started: bool,
    /// Whether the follower was told it has caught up.
    synced: bool,
}

impl Follower {
    /// The next chunk of the stream: the revocations after the cursor, or a heartbeat.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Follower)> {
        if !self.started {
            self.started = true;
            // A follower that loses the stream comes back after a second (SSE `retry`).
            return Some((Ok(Bytes::from_static(b"retry: 1000\n\n")), self));
        }
        loop {
            // Seen before reading: a revocation added after the read wakes the wait below.
            self.head.borrow_and_update();
            let batch = self.denylist.since(self.cursor.as_deref(), BATCH);
            if let Some((last, _)) = batch.last() {
                let mut out = String::with_capacity(batch.len() * 96);
                for (id, event) in &batch {
                    let data = serde_json::to_string(event).unwrap_or_default();
                    let _ = write!(out, "id: {id}\nevent: revoked\ndata: {data}\n\n");
                }
                self.cursor = Some(last.clone());
                return Some((Ok(Bytes::from(out)), self));
            }
            if !self.synced {
                // Caught up: the first `ping` comes at once, so a follower knows it holds
                // every revocation in force.
                self.synced = true;
                let ping = self.ping();
                return Some((Ok(Bytes::from(ping)), self));
            }
            match tokio::time::timeout(HEARTBEAT, self.head.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => {
                    let ping = self.ping();
                    return Some((Ok(Bytes::from(ping)), self));
                }
            }
        }
    }

    fn ping(&self) -> String {
        let state = if self.denylist.is_fresh() {
            "fresh"
        } else {
            "stale"
        };
        format!("event: ping\ndata: {state}\n\n")
    }
}

/// `GET /oauth2/revocations`.
pub(crate) async fn revocations<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let client = state
        .oauth_client(&std::collections::HashMap::new(), &headers)
        .await?;
    if !client.confidential {
        return Err(OAuthError::new(
            "invalid_client",
            "the revocation feed is for confidential clients",
        ));
    }
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let follower = Follower {
        head: state.denylist.subscribe(),
        denylist: Arc::clone(&state.denylist),
        cursor,
        started: false,
        synced: false,
    };
    state.metrics.feed_followers.inc();
    let guard = FollowerGuard(Arc::clone(&state.metrics));
    let stream = futures_util::stream::unfold(follower, move |f| {
        let _keep = &guard;
        f.next()
    });
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies (nginx) must pass events on as they come.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// Counts a follower out when its stream is dropped.
struct FollowerGuard(Arc<crate::metrics::Metrics>);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.feed_followers.dec();
    }
}
