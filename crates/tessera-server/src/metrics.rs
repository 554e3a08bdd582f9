//! Prometheus metrics: requests and latency per route, written in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tessera_core::Counters;

const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Route {
    statuses: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Debug, Default)]
struct Inner {
    routes: BTreeMap<String, Route>,
    verification_failures: BTreeMap<&'static str, u64>,
    /// Introspections answered active, inactive.
    introspections: [u64; 2],
}

/// Request metrics, labelled by the matched route (never the raw path, which is unbounded).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Open revocation-feed streams.
    pub feed_followers: Gauge,
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(std::sync::atomic::AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metrics {
    /// Records one request.
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Allocates only the first time a route is seen.
        if !g.routes.contains_key(route) {
            g.routes.insert(route.to_owned(), Route::default());
        }
        let Some(r) = g.routes.get_mut(route) else {
            return;
        };
        *r.statuses.entry(status).or_default() += 1;
        let h = &mut r.latency;
        h.count += 1;
        h.sum += secs;
        for (i, b) in BOUNDS.iter().enumerate() {
            if secs <= *b {
                h.buckets[i] += 1;
            }
        }
    }

    /// Counts a refused access token by reason (`expired`, `bad_signature`, `revoked`, …).
    pub fn verification_failed(&self, reason: &'static str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.verification_failures.entry(reason).or_default() += 1;
    }

    /// Counts an introspection by its answer.
    pub fn introspected(&self, active: bool) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.introspections[usize::from(!active)] += 1;
    }

    /// Token counters in the exposition format.
    pub fn render_tokens(&self, t: &tessera_core::TokenCounters, denylisted: usize) -> String {
        let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP tessera_tokens_issued_total Access tokens issued.\n# TYPE tessera_tokens_issued_total counter\n");
        let _ = writeln!(out, "tessera_tokens_issued_total {}", c(&t.issued));
        out.push_str("# HELP tessera_tokens_refreshed_total Refresh-token rotations.\n# TYPE tessera_tokens_refreshed_total counter\n");
        let _ = writeln!(out, "tessera_tokens_refreshed_total {}", c(&t.refreshed));
        out.push_str("# HELP tessera_refresh_families_revoked_total Refresh families revoked.\n# TYPE tessera_refresh_families_revoked_total counter\n");
        let _ = writeln!(
            out,
            "tessera_refresh_families_revoked_total {}",
            c(&t.revoked)
        );
        out.push_str("# HELP tessera_refresh_reuse_detected_total Replays of used refresh tokens.\n# TYPE tessera_refresh_reuse_detected_total counter\n");
        let _ = writeln!(
            out,
            "tessera_refresh_reuse_detected_total {}",
            c(&t.reuse_detected)
        );
        out.push_str("# HELP tessera_denylisted_access_tokens Revocations (by jti, sid or sub) not yet expired.\n# TYPE tessera_denylisted_access_tokens gauge\n");
        let _ = writeln!(out, "tessera_denylisted_access_tokens {denylisted}");
        render_stores(&mut out);
        out.push_str("# HELP tessera_revocation_feed_followers Open revocation-feed streams.\n# TYPE tessera_revocation_feed_followers gauge\n");
        let _ = writeln!(
            out,
            "tessera_revocation_feed_followers {}",
            self.feed_followers.get()
        );
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP tessera_introspections_total Introspection answers by activity.\n# TYPE tessera_introspections_total counter\n");
        for (active, n) in [
            ("true", g.introspections[0]),
            ("false", g.introspections[1]),
        ] {
            let _ = writeln!(
                out,
                "tessera_introspections_total{{active=\"{active}\"}} {n}"
            );
        }
        out.push_str("# HELP tessera_token_verification_failures_total Refused access tokens by reason.\n# TYPE tessera_token_verification_failures_total counter\n");
        for (reason, n) in &g.verification_failures {
            let _ = writeln!(
                out,
                "tessera_token_verification_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }

    /// The exposition text, with the domain counters and the active-session gauge.
    /// `hashing`: the password hashing pool (hashes computed, logins in line, memory held).
    pub fn render(
        &self,
        counters: &Counters,
        hashing: &tessera_core::PasswordHasherPool,
        active_sessions: Option<u64>,
    ) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP tessera_http_requests_total HTTP requests by route and status.\n# TYPE tessera_http_requests_total counter\n");
        for (route, r) in &g.routes {
            for (status, n) in &r.statuses {
                let _ = writeln!(
                    out,
                    "tessera_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP tessera_http_request_duration_seconds Time to answer, by route.\n# TYPE tessera_http_request_duration_seconds histogram\n");
        for (route, h) in g.routes.iter().map(|(k, r)| (k, &r.latency)) {
            for (i, b) in BOUNDS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tessera_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "tessera_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "tessera_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "tessera_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP tessera_logins_total Password logins by result.\n# TYPE tessera_logins_total counter\n");
        let _ = writeln!(
            out,
            "tessera_logins_total{{result=\"ok\"}} {}",
            c(&counters.logins_ok)
        );
        let _ = writeln!(
            out,
            "tessera_logins_total{{result=\"failed\"}} {}",
            c(&counters.logins_failed)
        );
        let _ = writeln!(
            out,
            "tessera_logins_total{{result=\"throttled\"}} {}",
            c(&counters.logins_throttled)
        );
        let _ = writeln!(
            out,
            "tessera_logins_total{{result=\"busy\"}} {}",
            c(&counters.logins_busy)
        );
        out.push_str("# HELP tessera_password_hashes_total Argon2 hashes computed (a login whose client left before its turn costs none).\n# TYPE tessera_password_hashes_total counter\n");
        let _ = writeln!(out, "tessera_password_hashes_total {}", hashing.computed());
        out.push_str("# HELP tessera_password_hash_line Logins hashing or waiting to.\n# TYPE tessera_password_hash_line gauge\n");
        let _ = writeln!(out, "tessera_password_hash_line {}", hashing.in_line());
        out.push_str("# HELP tessera_password_hash_memory_bytes Argon2 working memory the hashing threads hold (each keeps its own for a second after its last hash).\n# TYPE tessera_password_hash_memory_bytes gauge\n");
        let _ = writeln!(
            out,
            "tessera_password_hash_memory_bytes {}",
            hashing.memory_held()
        );
        out.push_str("# HELP tessera_sessions_created_total Sessions created.\n# TYPE tessera_sessions_created_total counter\n");
        let _ = writeln!(
            out,
            "tessera_sessions_created_total {}",
            c(&counters.sessions_created)
        );
        out.push_str("# HELP tessera_sessions_ended_total Sessions ended (logout, revocation, expiry, user disabled).\n# TYPE tessera_sessions_ended_total counter\n");
        let _ = writeln!(
            out,
            "tessera_sessions_ended_total {}",
            c(&counters.sessions_ended)
        );
        if let Some(n) = active_sessions {
            out.push_str("# HELP tessera_active_sessions Sessions in the store.\n# TYPE tessera_active_sessions gauge\n");
            let _ = writeln!(out, "tessera_active_sessions {n}");
        }
        out
    }
}

/// The stores' circuits (see `tessera_store::Circuit`) and cache fallbacks.
fn render_stores(out: &mut String) {
    let circuits = tessera_store::circuits();
    let metric = |out: &mut String,
                  name: &str,
                  kind: &str,
                  help: &str,
                  value: &dyn Fn(&tessera_store::CircuitStats) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in &circuits {
            let _ = writeln!(
                out,
                "{name}{{store=\"{}\"}} {}",
                c.name(),
                value(&c.stats())
            );
        }
    };
    metric(
        out,
        "tessera_store_errors_total",
        "counter",
        "Calls to a store that failed or timed out.",
        &|s| s.errors,
    );
    metric(
        out,
        "tessera_store_timeouts_total",
        "counter",
        "Calls to a store that timed out (stores.timeout).",
        &|s| s.timeouts,
    );
    metric(
        out,
        "tessera_store_failed_fast_total",
        "counter",
        "Calls refused at once because their store was marked down.",
        &|s| s.rejected,
    );
    metric(
        out,
        "tessera_store_marked_down_total",
        "counter",
        "Times a store was marked down.",
        &|s| s.opened,
    );
    metric(
        out,
        "tessera_store_down",
        "gauge",
        "1 while a store is marked down (calls fail at once but for one probe per stores.retry).",
        &|s| u64::from(s.open),
    );
    let _ = writeln!(
        out,
        "# HELP tessera_store_stale_served_total Reads answered from a cache entry past its lifetime because the database failed.\n# TYPE tessera_store_stale_served_total counter\ntessera_store_stale_served_total{{store=\"database\"}} {}",
        tessera_store::stale_served()
    );
}
