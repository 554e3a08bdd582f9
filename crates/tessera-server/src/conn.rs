//! Connections: the one accept loop of plain HTTP and HTTPS, with a header-read timeout, a
//! keep-alive idle timeout, a TLS handshake timeout, a cap on open connections and a backoff on
//! accept errors.
//!
//! Each connection is watched by a [`Tracker`] shared by its socket (which notes the bytes that
//! arrive), its service (which counts the requests in flight, from complete headers to the last
//! byte of the response) and a [`Watchdog`] polled beside it in the connection's task:
//!
//! - receiving a request's headers (from the accept, the end of the TLS handshake, or the first
//!   byte after a kept-alive connection went quiet): closed at `header_read_timeout` after that;
//! - no request in flight and nothing received since the last one ended: closed at
//!   `idle_timeout` after that end;
//! - a request whose body is still arriving: closed at `header_read_timeout` after its headers
//!   were complete, and evictable under the cap like a connection still sending its headers, so
//!   a trickled body holds a place no longer than trickled headers do;
//! - a request in flight with its body received (a slow handler, a long response such as the
//!   revocation feed): never cut here (`request_timeout` bounds the handler).
//!
//! hyper's own `header_read_timeout` is not used: it is one deadline that starts whenever hyper
//! waits for a request head, the start of every keep-alive pause included, so it would cut idle
//! connections at the header timeout. One gap is known: the bytes of a request pipelined behind
//! one in flight are not told apart from its body, so a partial pipelined request waits for the
//! idle timeout, not the header timeout.
//!
//! Past `max` open connections a new one takes the place of the oldest one with no request in
//! flight (idle, or still sending its headers or handshake), which is closed; when every one is
//! busy, the new one is closed at once. So a burst of idle or slow connections cannot keep an
//! honest client out, and the process keeps descriptors for its stores.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use crate::config::ConnectionsConfig;

/// The first pause after an accept error; it doubles while errors continue.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause after an accept error.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning line per this long for accept errors, and one for the cap.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// The descriptor limit assumed when it cannot be read.
const FALLBACK_DESCRIPTORS: u64 = 1024;

/// The connection settings in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`ConnectionsConfig::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`ConnectionsConfig::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`ConnectionsConfig::tls_handshake_timeout`].
    pub tls_handshake_timeout: Duration,
    /// The cap: configured, or derived from the descriptor limit ([`default_max`]).
    pub max: usize,
}

impl Limits {
    /// The configured limits, with a `max` of 0 derived from the descriptor limit.
    pub fn from_config(c: &ConnectionsConfig) -> Limits {
        Limits {
            header_read_timeout: c.header_read_timeout.0,
            idle_timeout: c.idle_timeout.0,
            tls_handshake_timeout: c.tls_handshake_timeout.0,
            max: if c.max == 0 { default_max() } else { c.max },
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&ConnectionsConfig::default())
    }
}

/// The default cap: the process's soft descriptor limit less a reserve for the stores, logs and
/// runtime (128 or a quarter of the limit, whichever is larger), at least 16. The limit is read
/// from `/proc/self/limits`; 1024 is assumed where that cannot be read.
pub fn default_max() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| soft_descriptor_limit(&text))
        .unwrap_or(FALLBACK_DESCRIPTORS);
    max_for_descriptors(soft)
}

fn max_for_descriptors(soft: u64) -> usize {
    let reserve = (soft / 4).max(128);
    usize::try_from(soft.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(16)
}

/// The soft limit of `Max open files` in the text of `/proc/self/limits`.
fn soft_descriptor_limit(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown`: then the
/// listener closes and the requests in flight finish.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = *limits;
    let registry = Arc::new(Registry::new(limits.max));
    let graceful = GracefulShutdown::new();
    let mut backoff = Backoff::default();
    let mut cap = CapLog::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) the listener stays readable: without a
                // pause the loop would spin and log without end.
                let pause = backoff.failed();
                if let Some(errors) = backoff.log.hit() {
                    tracing::warn!(error = %e, errors, pause_ms = pause.as_millis(), "accepting connections failed (errors counted since the last such line)");
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // Responses go out at once: without TCP_NODELAY a second response written before the
        // first is acknowledged (pipelining, a busy connection) waits for the peer's delayed
        // ACK, up to 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        let conn = Arc::new(Tracker::new(&limits, tls.is_some()));
        let slot = match registry.admit(&conn) {
            Admission::Room(slot) => slot,
            Admission::Evicted(slot) => {
                cap.closed += 1;
                cap.report(limits.max);
                slot
            }
            Admission::Full => {
                cap.refused += 1;
                cap.report(limits.max);
                drop(tcp);
                continue;
            }
        };
        let service = Service {
            router: router.clone(),
            peer,
            conn: Arc::clone(&conn),
        };
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let io = Watched {
                io: tcp,
                conn: Arc::clone(&conn),
            };
            let serve = async {
                match tls {
                    None => drive(io, service, watcher, peer).await,
                    Some(acceptor) => match acceptor.accept(io).await {
                        Ok(tls) => {
                            conn.handshake_done();
                            drive(tls, service, watcher, peer).await;
                        }
                        Err(e) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    },
                }
            };
            tokio::pin!(serve);
            let mut watchdog = std::pin::pin!(Watchdog::new(Arc::clone(&conn)));
            let mut evictable = true;
            loop {
                tokio::select! {
                    biased;
                    () = &mut serve => break,
                    () = conn.evict.notified(), if evictable => {
                        // Chosen while it had no request in flight; one may have begun since,
                        // in this task: it is not cut, and the connection, no longer counted
                        // under the cap, ends by its own timeouts.
                        if conn.busy() {
                            evictable = false;
                            continue;
                        }
                        tracing::debug!(%peer, "connection closed to make room under the cap");
                        break;
                    }
                    () = &mut watchdog => {
                        tracing::debug!(%peer, "connection closed: header-read, handshake or idle timeout");
                        break;
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it ends.
async fn drive<I>(io: I, service: Service, watcher: Watcher, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    // The timeouts are the Watchdog's (see the module's doc).
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Pauses after accept errors: [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], reset by a success.
#[derive(Debug, Default)]
struct Backoff {
    pause: Option<Duration>,
    log: Tally,
}

impl Backoff {
    fn failed(&mut self) -> Duration {
        let pause = self
            .pause
            .map_or(BACKOFF_MIN, |p| p.saturating_mul(2).min(BACKOFF_MAX));
        self.pause = Some(pause);
        pause
    }

    fn succeeded(&mut self) {
        self.pause = None;
    }
}

/// Counts events and says when a line about them is due: at most once per [`LOG_EVERY`].
#[derive(Debug, Default)]
struct Tally {
    last: Option<Instant>,
    count: u64,
}

impl Tally {
    /// Counts one event; the count since the last line when a line is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            self.last = Some(now);
            Some(std::mem::take(&mut self.count))
        } else {
            None
        }
    }
}

/// The connections closed (to make room, or at once) under the cap, reported at most once per
/// [`LOG_EVERY`].
#[derive(Debug, Default)]
struct CapLog {
    every: Tally,
    closed: u64,
    refused: u64,
}

impl CapLog {
    fn report(&mut self, max: usize) {
        if self.every.hit().is_some() {
            tracing::warn!(
                max,
                closed_for_room = self.closed,
                refused_all_busy = self.refused,
                "connection cap reached: the oldest connections with no request in flight are closed for new ones, new ones are closed when every connection is busy (counted since the last such line)"
            );
            self.closed = 0;
            self.refused = 0;
        }
    }
}

/// What one connection is doing, in milliseconds since it was accepted.
#[derive(Debug)]
pub(crate) struct Tracker {
    born: Instant,
    header_ms: u64,
    idle_ms: u64,
    /// Requests whose headers are complete and whose response is not yet all sent.
    in_flight: AtomicU32,
    /// Whether the request in flight is still receiving its body: then `reading_until` applies
    /// and the connection may be evicted.
    body_pending: AtomicBool,
    /// Whether a request's headers (or the TLS handshake) are being received: then
    /// `reading_until` applies, else `idle_until` (when nothing is in flight).
    reading: AtomicBool,
    reading_until: AtomicU64,
    idle_until: AtomicU64,
    /// Told when the connection must close to make room.
    evict: Notify,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Tracker {
    fn new(limits: &Limits, tls: bool) -> Tracker {
        let first = if tls {
            limits.tls_handshake_timeout
        } else {
            limits.header_read_timeout
        };
        Tracker {
            born: Instant::now(),
            header_ms: millis(limits.header_read_timeout),
            idle_ms: millis(limits.idle_timeout),
            in_flight: AtomicU32::new(0),
            body_pending: AtomicBool::new(false),
            reading: AtomicBool::new(true),
            reading_until: AtomicU64::new(millis(first)),
            idle_until: AtomicU64::new(u64::MAX),
            evict: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        millis(self.born.elapsed())
    }

    /// The TLS handshake is done: the first request's headers are due in the header timeout.
    fn handshake_done(&self) {
        self.reading_until
            .store(self.now().saturating_add(self.header_ms), Relaxed);
    }

    /// Bytes arrived: after a quiet spell they start a request, whose headers are now due.
    fn received(&self) {
        if self.in_flight.load(Relaxed) == 0 && !self.reading.load(Relaxed) {
            self.reading_until
                .store(self.now().saturating_add(self.header_ms), Relaxed);
            self.reading.store(true, Relaxed);
        }
    }

    /// A request's headers are complete.
    fn begin(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.reading.store(false, Relaxed);
    }

    /// The request's body is still to come: it is due within the header timeout.
    fn body_started(&self) {
        self.reading_until
            .store(self.now().saturating_add(self.header_ms), Relaxed);
        self.body_pending.store(true, Relaxed);
    }

    /// The request's body is all received (or will not be read).
    fn body_done(&self) {
        self.body_pending.store(false, Relaxed);
    }

    /// A response is all sent (or abandoned).
    fn end(&self) {
        self.idle_until
            .store(self.now().saturating_add(self.idle_ms), Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// A request in flight whose body has arrived: not to be cut or evicted.
    fn busy(&self) -> bool {
        self.in_flight.load(Relaxed) > 0 && !self.body_pending.load(Relaxed)
    }

    /// When the connection must close unless something happens first: none while busy.
    fn due(&self) -> Option<u64> {
        if self.in_flight.load(Relaxed) > 0 && self.body_pending.load(Relaxed) {
            Some(self.reading_until.load(Relaxed))
        } else if self.busy() {
            None
        } else if self.reading.load(Relaxed) {
            Some(self.reading_until.load(Relaxed))
        } else {
            Some(self.idle_until.load(Relaxed))
        }
    }
}

/// Completes when the connection's current deadline passes. It is polled with the connection
/// in the same task, so it sees every change of state right after it happens; its timer is
/// moved only when a deadline comes earlier (a later one is found when the timer fires).
struct Watchdog {
    conn: Arc<Tracker>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<u64>,
}

impl Watchdog {
    fn new(conn: Arc<Tracker>) -> Watchdog {
        let sleep = Box::pin(tokio::time::sleep_until(conn.born.into()));
        Watchdog {
            conn,
            sleep,
            armed: None,
        }
    }
}

impl Future for Watchdog {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let Some(due) = this.conn.due() else {
                // Busy: the end of the request happens in this task and polls this again.
                return Poll::Pending;
            };
            if this.armed.is_none_or(|armed| due < armed) {
                // A deadline too far to represent (a timeout of centuries) never comes.
                let Some(at) = this.conn.born.checked_add(Duration::from_millis(due)) else {
                    return Poll::Pending;
                };
                this.sleep.as_mut().reset(at.into());
                this.armed = Some(due);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.armed = None;
            if this.conn.due().is_some_and(|due| due <= this.conn.now()) {
                return Poll::Ready(());
            }
        }
    }
}

/// The socket, noting for its [`Tracker`] when bytes arrive.
struct Watched {
    io: TcpStream,
    conn: Arc<Tracker>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.received();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The router for one connection: gives handlers the peer's address (`ConnectInfo`) and
/// counts the request in flight until its response is all sent.
#[derive(Clone)]
struct Service {
    router: Router,
    peer: SocketAddr,
    conn: Arc<Tracker>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: hyper::Request<Incoming>) -> Answer {
        let in_flight = InFlight::begin(Arc::clone(&self.conn));
        let mut req = if req.body().is_end_stream() {
            req.map(Body::new)
        } else {
            self.conn.body_started();
            let conn = Arc::clone(&self.conn);
            req.map(|inner| {
                Body::new(Arriving {
                    inner,
                    conn: Some(conn),
                })
            })
        };
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.router.clone();
        Answer {
            inner: tower::Service::call(&mut router, req),
            in_flight: Some(in_flight),
        }
    }
}

/// A request body still arriving: its connection stays evictable, under the header timeout,
/// until the last frame is in or the handler lets the body go.
struct Arriving {
    inner: Incoming,
    conn: Option<Arc<Tracker>>,
}

impl Arriving {
    fn done(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.body_done();
        }
    }
}

impl HttpBody for Arriving {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) || this.inner.is_end_stream() {
            this.done();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.done();
    }
}

/// One request counted in flight; counted out when dropped.
struct InFlight(Arc<Tracker>);

impl InFlight {
    fn begin(conn: Arc<Tracker>) -> InFlight {
        conn.begin();
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The router's answer, its body carrying the request's [`InFlight`].
struct Answer {
    inner: axum::routing::future::RouteFuture<Infallible>,
    in_flight: Option<InFlight>,
}

impl Future for Answer {
    type Output = Result<hyper::Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(Ok(res)) => res,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Poll::Pending,
        };
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(res.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that keeps its request counted in flight until hyper drops it.
struct Tracked {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections, oldest first.
#[derive(Debug)]
pub(crate) struct Registry {
    max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, Arc<Tracker>>,
}

/// A connection's place under the cap, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().conns.remove(&self.id);
    }
}

/// Whether a new connection may stay.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Under the cap.
    Room(Slot),
    /// At the cap: the oldest connection with no request in flight was told to close.
    Evicted(Slot),
    /// At the cap and every connection busy: close the new one.
    Full,
}

impl Registry {
    fn new(max: usize) -> Registry {
        Registry {
            max: max.max(1),
            open: Mutex::new(Open::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `conn`, making room if the cap is reached.
    fn admit(self: &Arc<Self>, conn: &Arc<Tracker>) -> Admission {
        let mut open = self.lock();
        let mut evicted = false;
        if open.conns.len() >= self.max {
            // A scan in age order; it walks past busy connections only, which hold a request.
            let victim = open
                .conns
                .iter()
                .find(|(_, c)| !c.busy())
                .map(|(id, _)| *id);
            match victim.and_then(|id| open.conns.remove(&id)) {
                Some(old) => {
                    old.evict.notify_one();
                    evicted = true;
                }
                None => return Admission::Full,
            }
        }
        let id = open.next;
        open.next += 1;
        open.conns.insert(id, Arc::clone(conn));
        let slot = Slot {
            registry: Arc::clone(self),
            id,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Room(slot)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(5),
            max: 2,
        }
    }

    #[test]
    fn default_cap_leaves_a_reserve() {
        assert_eq!(max_for_descriptors(64), 16);
        assert_eq!(max_for_descriptors(256), 128);
        assert_eq!(max_for_descriptors(1024), 768);
        assert_eq!(max_for_descriptors(1_048_576), 786_432);
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(soft_descriptor_limit(text), Some(1024));
        assert_eq!(soft_descriptor_limit("nothing"), None);
        assert!(default_max() >= 16);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..6).map(|_| millis(b.failed())).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(millis(b.failed()), 100);
        let mut t = Tally::default();
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        t.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(t.hit(), Some(3));
    }

    #[test]
    fn deadlines_follow_the_connection() {
        let t = Tracker::new(&limits(), false);
        assert_eq!(t.due(), Some(10_000), "headers due from the accept");
        t.received();
        assert_eq!(t.due(), Some(10_000), "more header bytes move nothing");
        t.begin();
        assert_eq!(t.due(), None, "a request in flight is never cut");
        t.received();
        t.end();
        let idle = t.due().unwrap();
        assert!((60_000..61_000).contains(&idle), "{idle}");
        t.received();
        let next = t.due().unwrap();
        assert!((10_000..11_000).contains(&next), "{next}");
        let tls = Tracker::new(&limits(), true);
        assert_eq!(tls.due(), Some(5_000), "the handshake first");
        tls.handshake_done();
        assert!((10_000..11_000).contains(&tls.due().unwrap()));
    }

    #[tokio::test]
    async fn the_watchdog_fires_at_the_deadline_and_not_for_a_timeout_of_centuries() {
        let quick = Limits {
            header_read_timeout: Duration::from_millis(50),
            ..limits()
        };
        let t = Arc::new(Tracker::new(&quick, false));
        let started = Instant::now();
        Watchdog::new(Arc::clone(&t)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        let forever = Limits {
            header_read_timeout: Duration::from_secs(u64::MAX / 2),
            ..limits()
        };
        let t = Arc::new(Tracker::new(&forever, false));
        let waited =
            tokio::time::timeout(Duration::from_millis(50), Watchdog::new(Arc::clone(&t))).await;
        assert!(waited.is_err(), "no deadline, no close");
    }

    #[tokio::test]
    async fn the_cap_evicts_the_oldest_without_a_request_in_flight() {
        let registry = Arc::new(Registry::new(2));
        let a = Arc::new(Tracker::new(&limits(), false));
        let b = Arc::new(Tracker::new(&limits(), false));
        let c = Arc::new(Tracker::new(&limits(), false));
        let d = Arc::new(Tracker::new(&limits(), false));
        let _a = registry.admit(&a);
        let sb = registry.admit(&b);
        assert!(matches!(sb, Admission::Room(_)));
        a.begin();
        // a is busy: b, the oldest with nothing in flight, makes room for c.
        let sc = registry.admit(&c);
        assert!(matches!(sc, Admission::Evicted(_)));
        tokio::time::timeout(Duration::from_secs(1), b.evict.notified())
            .await
            .expect("b is told to close");
        drop(sb);
        c.begin();
        // Every connection busy: the new one is refused.
        assert!(matches!(registry.admit(&d), Admission::Full));
        // A slot given back makes room again.
        drop(sc);
        assert!(matches!(registry.admit(&d), Admission::Room(_)));
    }
}
