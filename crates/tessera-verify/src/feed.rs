//! Following the issuer's revocation feed (`revocation_feed_endpoint`, server-sent events), so
//! that a token revoked at the issuer is refused here within about a second while every check
//! stays local.
//!
//! The follower connects with the client's credentials, applies each `revoked` event to a
//! [`RevocationSet`] (entries leave it when the tokens they cover have expired), and resumes
//! after a cut with `Last-Event-ID`, so nothing is missed. The feed counts as lost from the
//! first sign of trouble — the connection failing, no bytes for [`FeedOptions::silence`], or
//! the issuer saying its own copy is `stale` — until it is connected and caught up again.
//! While lost for up to [`FeedOptions::grace`], checks go on with the revocations held; after
//! that, [`WhenLost`] decides.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tessera_jose::{Claims, RevocationEvent, RevocationSet};
use tokio::time::Instant;

use crate::DiscoverError;

/// What checks do once the feed has been lost for longer than the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenLost {
    /// Refuse every token (fail closed): a revocation may have been missed.
    Refuse,
    /// Accept tokens on the revocations held (fail open).
    Allow,
}

/// How the feed is followed.
#[derive(Clone)]
pub struct FeedOptions {
    /// The confidential client the verifier authenticates as.
    pub client_id: String,
    /// Its secret (never printed by `Debug`).
    pub client_secret: String,
    /// How long checks go on with the revocations held after the feed is lost.
    pub grace: Duration,
    /// What happens after that.
    pub when_lost: WhenLost,
    /// How long without a byte (events or heartbeats) before the connection counts as dead.
    pub silence: Duration,
    /// How long to wait before reconnecting.
    pub retry: Duration,
}

impl fmt::Debug for FeedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedOptions")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("grace", &self.grace)
            .field("when_lost", &self.when_lost)
            .field("silence", &self.silence)
            .field("retry", &self.retry)
            .finish()
    }
}

impl FeedOptions {
    /// Follows as `client_id`: 30 s of grace, then refuse; a silent connection is dead after
    /// 15 s (three of the issuer's heartbeats); reconnect after 1 s.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> FeedOptions {
        FeedOptions {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            grace: Duration::from_secs(30),
            when_lost: WhenLost::Refuse,
            silence: Duration::from_secs(15),
            retry: Duration::from_secs(1),
        }
    }
}

/// The longest event accepted; a longer one ends the connection.
const MAX_EVENT: usize = 64 * 1024;

/// What the follower shares with the checks.
#[derive(Debug)]
pub(crate) struct Feed {
    set: RwLock<RevocationSet>,
    /// Whether the set is known to be current.
    live: AtomicBool,
    /// When the feed was lost (milliseconds after `base`), meaningful while `!live`.
    lost_at: AtomicU64,
    base: Instant,
    grace: Duration,
    when_lost: WhenLost,
    leeway: i64,
    /// The second of the last purge: expired revocations are forgotten at most once a second
    /// (a purge scans the set; once per event made a catch-up of 10^5 quadratic).
    purged_at: AtomicI64,
    applied: AtomicU64,
    connects: AtomicU64,
}

/// Why a check refuses on account of the feed.
pub(crate) enum FeedVerdict {
    Accept,
    Revoked,
    Lost,
}

impl Feed {
    fn millis(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lost(&self) {
        if self.live.swap(false, Ordering::AcqRel) {
            self.lost_at.store(self.millis(), Ordering::Release);
            tracing::warn!("the revocation feed is lost; checking on the revocations held");
        }
    }

    fn caught_up(&self) {
        if !self.live.swap(true, Ordering::AcqRel) {
            tracing::info!("the revocation feed is current");
        }
    }

    pub(crate) fn verdict(&self, claims: &Claims) -> FeedVerdict {
        if self
            .set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .refuses(claims)
        {
            return FeedVerdict::Revoked;
        }
        if !self.live.load(Ordering::Acquire) && self.when_lost == WhenLost::Refuse {
            let lost_for = self
                .millis()
                .saturating_sub(self.lost_at.load(Ordering::Acquire));
            if Duration::from_millis(lost_for) > self.grace {
                return FeedVerdict::Lost;
            }
        }
        FeedVerdict::Accept
    }

    fn apply(&self, event: &RevocationEvent, now: i64) {
        let Some(r) = event.revocation() else {
            tracing::warn!("a revocation event named nothing; ignored");
            return;
        };
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        if self.purged_at.swap(now, Ordering::Relaxed) != now {
            set.purge(now - self.leeway);
        }
        if event.exp > now - self.leeway {
            set.insert(r, event.exp);
        }
        self.applied.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn held(&self) -> usize {
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        set.purge(crate::unix_now() - self.leeway);
        set.len()
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }
}

/// Splits the feed's bytes into server-sent events: blocks that end in a blank line. Bytes are
/// kept until their block is whole, so a character that a chunk boundary splits reads as itself
/// (each block is UTF-8, as the server writes JSON).
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    buf: Vec<u8>,
    /// How far `buf` is known to hold no blank line.
    scanned: usize,
}

impl SseReader {
    /// Adds `chunk`: the events it completes, in order; or why the stream cannot be read on (an
    /// event that is not UTF-8, or one growing past `MAX_EVENT`).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, &'static str> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        // Where the next block begins: the blocks read are drained once, at the end (draining
        // each made a chunk of many events quadratic).
        let mut start = 0;
        loop {
            // A blank line may straddle the previous chunk's last byte.
            let from = self.scanned.saturating_sub(1).max(start);
            let Some(at) = self.buf[from..].windows(2).position(|w| w == b"\n\n") else {
                self.scanned = self.buf.len();
                break;
            };
            let end = from + at + 2;
            let block =
                std::str::from_utf8(&self.buf[start..end]).map_err(|_| "the feed is not UTF-8")?;
            events.push(parse_event(block));
            start = end;
            self.scanned = end;
        }
        self.buf.drain(..start);
        self.scanned -= start;
        if self.buf.len() > MAX_EVENT {
            return Err("an event is too large");
        }
        Ok(events)
    }
}

/// One server-sent event as read off the stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    pub(crate) data: String,
}

/// Parses one event block (the lines between blank lines); comments and unknown fields are
/// skipped, as the SSE format says.
fn parse_event(block: &str) -> Event {
    let mut e = Event::default();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => e.id = Some(value.to_owned()),
            "event" => value.clone_into(&mut e.name),
            "data" => {
                if !e.data.is_empty() {
                    e.data.push('\n');
                }
                e.data.push_str(value);
            }
            _ => {}
        }
    }
    e
}

/// The follower: connects, reads, reconnects, until the verifier is dropped.
pub(crate) struct Follower {
    pub(crate) feed: Arc<Feed>,
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) options: FeedOptions,
    cursor: Option<String>,
    /// Gone when the verifier is dropped: the follower stops.
    alive: std::sync::Weak<()>,
}

impl Follower {
    pub(crate) fn new(
        http: reqwest::Client,
        url: String,
        options: FeedOptions,
        leeway: i64,
        alive: std::sync::Weak<()>,
    ) -> Follower {
        let feed = Arc::new(Feed {
            set: RwLock::default(),
            live: AtomicBool::new(false),
            lost_at: AtomicU64::new(0),
            base: Instant::now(),
            grace: options.grace,
            when_lost: options.when_lost,
            leeway,
            purged_at: AtomicI64::new(0),
            applied: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        });
        Follower {
            feed,
            http,
            url,
            options,
            cursor: None,
            alive,
        }
    }

    /// Connects and reads until caught up (the first `ping`); then the rest of the stream is
    /// read by [`Follower::run`].
    pub(crate) async fn connect(&mut self) -> Result<reqwest::Response, DiscoverError> {
        let fail = |reason: String| DiscoverError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let mut req = self
            .http
            .get(&self.url)
            .basic_auth(&self.options.client_id, Some(&self.options.client_secret))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            // The stream lives on; only silence ends it (see `read`).
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(c) = &self.cursor {
            req = req.header("last-event-id", c);
        }
        let res = tokio::time::timeout(self.options.silence, req.send())
            .await
            .map_err(|_| fail("no answer".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if !res.status().is_success() {
            return Err(fail(format!("HTTP {}", res.status())));
        }
        self.feed.connects.fetch_add(1, Ordering::Relaxed);
        Ok(res)
    }

    /// Reads events until the stream ends or falls silent. `synced` is told the first time the
    /// stream is caught up.
    pub(crate) async fn read(
        &mut self,
        mut res: reqwest::Response,
        mut synced: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(), String> {
        let mut reader = SseReader::default();
        loop {
            if self.alive.strong_count() == 0 {
                return Ok(());
            }
            let chunk = match tokio::time::timeout(self.options.silence, res.chunk()).await {
                Err(_) => return Err("the feed fell silent".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(None)) => return Err("the feed ended".into()),
                Ok(Ok(Some(c))) => c,
            };
            // Events are UTF-8 (the server writes JSON); anything else ends the connection.
            for event in reader.push(&chunk)? {
                match event.name.as_str() {
                    "revoked" => {
                        match serde_json::from_str::<RevocationEvent>(&event.data) {
                            Ok(e) => self.feed.apply(&e, crate::unix_now()),
                            Err(_) => tracing::warn!("an unreadable revocation event; ignored"),
                        }
                        if event.id.is_some() {
                            self.cursor = event.id;
                        }
                    }
                    "ping" if event.data == "stale" => self.feed.lost(),
                    "ping" => {
                        self.feed.caught_up();
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Follows for as long as the verifier lives, from `res` (a connection just made);
    /// `synced` is told when it is first caught up.
    pub(crate) async fn run(
        mut self,
        res: reqwest::Response,
        synced: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut first = Some((res, synced));
        loop {
            if self.alive.strong_count() == 0 {
                return;
            }
            let outcome = match first.take() {
                Some((r, synced)) => self.read(r, Some(synced)).await,
                None => match self.connect().await {
                    Ok(r) => self.read(r, None).await,
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(reason) = outcome {
                self.feed.lost();
                // Debug quotes and escapes: the text may come from the network.
                tracing::warn!(?reason, "the revocation feed was cut; reconnecting");
            }
            tokio::time::sleep(self.options.retry).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_as_the_sse_format_says() {
        let e = parse_event("id: a.1\nevent: revoked\ndata: {\"jti\":\"x\",\"exp\":5}\n\n");
        assert_eq!(e.id.as_deref(), Some("a.1"));
        assert_eq!(e.name, "revoked");
        assert_eq!(e.data, "{\"jti\":\"x\",\"exp\":5}");
        let e = parse_event(": comment\r\nevent:ping\r\ndata:fresh\r\n");
        assert_eq!((e.name.as_str(), e.data.as_str()), ("ping", "fresh"));
        let e = parse_event("data: a\ndata: b\nretry: 10\n");
        assert_eq!(e.data, "a\nb");
    }

    /// However the stream is cut into chunks, the same events come out: a character split
    /// between two chunks included (the reader used to decode each chunk on its own and drop
    /// the connection there).
    #[test]
    fn chunk_boundaries_do_not_matter() {
        let stream = "id: 1\nevent: revoked\ndata: {\"sub\":\"\u{e9}l\u{e8}ve\",\"exp\":5}\n\n: keep-alive\n\nevent: ping\ndata: fresh\n\n".as_bytes();
        let whole = SseReader::default().push(stream).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].data, "{\"sub\":\"\u{e9}l\u{e8}ve\",\"exp\":5}");
        for cut in 0..=stream.len() {
            let mut r = SseReader::default();
            let mut got = r.push(&stream[..cut]).unwrap();
            got.extend(r.push(&stream[cut..]).unwrap());
            assert_eq!(got, whole, "cut at {cut}");
        }
        let mut r = SseReader::default();
        let one_by_one: Vec<Event> = stream.iter().flat_map(|b| r.push(&[*b]).unwrap()).collect();
        assert_eq!(one_by_one, whole);
    }

    #[test]
    fn an_event_that_is_not_utf8_or_too_large_ends_the_stream() {
        assert!(SseReader::default().push(b"data: \xff\n\n").is_err());
        let mut r = SseReader::default();
        assert!(r.push(&vec![b'a'; MAX_EVENT]).unwrap().is_empty());
        assert!(r.push(b"a").is_err());
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let o = FeedOptions::new("rs", "tsc_very_secret");
        assert!(!format!("{o:?}").contains("tsc_very_secret"));
    }
}
