//! Failures are fast (issue 16), against the real binary: while PostgreSQL is black-holed or
//! Redis hangs (SIGSTOP), `/readyz` answers within 250 ms, from what the instance knows of its
//! stores, and Bearer checks with a valid JWT (and, through a PostgreSQL outage, with a cached
//! session) keep their pace — p99 under 100 ms, and through
//! a PostgreSQL outage at least half the requests per second of before. Measured from 2 s into
//! the outage, past the expiry of the 5 s user cache.
//!
//! The tests run one at a time: each compares rates and latencies, and the other's load would
//! blur them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

#[path = "it/common/mod.rs"]
mod common;
#[path = "it/fleet/mod.rs"]
mod fleet;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleet::rig::{Outage, Rig, me, readyz, shown};

const READYZ_WITHIN: Duration = Duration::from_millis(250);
const BEARER_P99: Duration = Duration::from_millis(100);
/// How far into the outage the measurements start.
const SETTLE: Duration = Duration::from_secs(2);
/// Bearer latencies are sampled until this far into the outage (the user cache expires 5 s
/// after the last read, at the latest 5 s into the outage).
const SAMPLED_UNTIL: Duration = Duration::from_secs(9);
/// Throughput is measured for this long (before the outage, and after the sampling).
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// One at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Bearer `/auth/me` requests answered 200 per second by `url` over `window`, from 4 threads;
/// and the other answers.
fn bearer_rate(url: &str, token: &str, window: Duration) -> (f64, Vec<String>) {
    let served = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    match me(url, token) {
                        Ok((200, _)) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures.lock().unwrap().push(shown(&other)),
                    }
                }
            });
        }
        std::thread::sleep(window);
        stop.store(true, Ordering::SeqCst);
    });
    let rate = served.load(Ordering::SeqCst) as f64 / start.elapsed().as_secs_f64();
    (rate, failures.into_inner().unwrap())
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// Puts one instance through `outage` and measures `/readyz` and Bearer `/auth/me`; with
/// `rate`, Bearer throughput too.
fn stays_fast(name: &str, outage: Outage, rate: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The production default of stores.timeout: what the promise is made with.
    let mut rig = Rig::with_env(name, 1, &[("TESSERA_STORES_TIMEOUT", "500ms")]);
    let (access, _) = rig.token_login(0);
    let url = rig.url(0).to_owned();
    assert!(matches!(me(&url, &access), Ok((200, _))));
    // A session the instance has seen (cached): through a database outage it must keep its
    // pace too, its user served from the cache.
    let session = rig.session_login(0);
    assert!(matches!(me(&url, &session), Ok((200, _))));
    let before = rate.then(|| bearer_rate(&url, &access, RATE_WINDOW));
    let sessions_before = rate.then(|| bearer_rate(&url, &session, RATE_WINDOW));

    rig.begin(outage);
    let began = Instant::now();
    std::thread::sleep(SETTLE);
    let stop = AtomicBool::new(false);
    let (ready, bearer, (during, sessions_during)) = std::thread::scope(|s| {
        let probe = s.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let a = readyz(&url);
                seen.push((sent.elapsed(), shown(&a)));
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        });
        // 200 requests paced over the window; no more once it is over (slow answers leave
        // fewer samples, and the slowest of them decide the p99).
        let mut bearer = Vec::new();
        let n = 200u32;
        let pace = (SAMPLED_UNTIL - SETTLE) / n;
        for k in 0..n {
            let due = began + SETTLE + pace * k;
            if Instant::now() >= began + SAMPLED_UNTIL + pace {
                break;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let sent = Instant::now();
            let a = me(&url, &access);
            bearer.push((sent.elapsed(), shown(&a)));
        }
        let during = rate.then(|| bearer_rate(&url, &access, RATE_WINDOW));
        let sessions_during = rate.then(|| bearer_rate(&url, &session, RATE_WINDOW));
        stop.store(true, Ordering::SeqCst);
        (probe.join().unwrap(), bearer, (during, sessions_during))
    });
    let outage_lasted = began.elapsed();
    // An operator sees it: the store is named down by /readyz and /metrics, with its timeouts
    // and the calls failed fast; through a database outage, users come from the stale cache.
    let store = match outage {
        Outage::PostgresCut | Outage::PostgresBlackhole => "database",
        Outage::RedisKilled | Outage::RedisStopped => "redis",
    };
    let ready_now = readyz(&url);
    let metrics = fleet::rig::send(fleet::rig::http().get(format!("{url}/metrics")));
    rig.end(outage);
    rig.wait_ready(Duration::from_secs(20));

    let mut problems = Vec::new();
    match &ready_now {
        Ok((200, body)) if body["stores_down"] == serde_json::json!([store]) => {}
        other => problems.push(format!(
            "/readyz should name {store} down: {}",
            shown(other)
        )),
    }
    let text = match &metrics {
        Ok((200, serde_json::Value::String(t))) => t.clone(),
        other => panic!("/metrics: {}", shown(other)),
    };
    let value = |name: &str| -> f64 {
        let line = format!("{name}{{store=\"{store}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("/metrics has no {line}"))
    };
    eprintln!(
        "{outage:?}: /metrics: {store} down {}, timeouts {}, failed fast {}, marked down {}",
        value("tessera_store_down"),
        value("tessera_store_timeouts_total"),
        value("tessera_store_failed_fast_total"),
        value("tessera_store_marked_down_total")
    );
    if value("tessera_store_down") != 1.0
        || value("tessera_store_timeouts_total") < 1.0
        || value("tessera_store_failed_fast_total") < 1.0
    {
        problems.push(format!(
            "/metrics should show {store} down, timed out and failing fast"
        ));
    }
    if store == "database" {
        let stale = text
            .lines()
            .find_map(|l| l.strip_prefix("tessera_store_stale_served_total{store=\"database\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if stale < 1.0 {
            problems.push("no user was served from the stale cache".into());
        }
    }
    let slowest_ready = ready.iter().map(|(d, _)| *d).max().unwrap_or_default();
    let statuses: std::collections::BTreeSet<&str> =
        ready.iter().map(|(_, s)| s.as_str()).collect();
    eprintln!(
        "{outage:?}: /readyz {} calls, slowest {slowest_ready:?}, answers {statuses:?}",
        ready.len()
    );
    let slow: Vec<String> = ready
        .iter()
        .filter(|(d, _)| *d >= READYZ_WITHIN)
        .map(|(d, s)| format!("{d:?} ({s})"))
        .collect();
    if !slow.is_empty() {
        problems.push(format!(
            "/readyz took {READYZ_WITHIN:?} or more {} times of {}: {slow:?}",
            slow.len(),
            ready.len()
        ));
    }
    let latencies: Vec<Duration> = bearer.iter().map(|(d, _)| *d).collect();
    let p = p99(latencies.clone());
    let max = latencies.iter().max().copied().unwrap_or_default();
    let refused: Vec<&String> = bearer
        .iter()
        .map(|(_, s)| s)
        .filter(|s| *s != "200")
        .collect();
    eprintln!(
        "{outage:?}: Bearer /auth/me {} calls, p99 {p:?}, max {max:?}, {} not 200",
        bearer.len(),
        refused.len()
    );
    if p >= BEARER_P99 {
        problems.push(format!("Bearer /auth/me p99 {p:?} (max {max:?})"));
    }
    if !refused.is_empty() {
        problems.push(format!(
            "{} Bearer checks of a valid JWT not answered 200, e.g. {}",
            refused.len(),
            refused[0]
        ));
    }
    if let (Some((before, _)), Some((during, failed))) = (sessions_before, sessions_during) {
        eprintln!(
            "{outage:?}: cached session throughput {before:.0}/s before, {during:.0}/s during ({:.0} %), {} failed",
            100.0 * during / before,
            failed.len()
        );
        if during < before / 2.0 || !failed.is_empty() {
            problems.push(format!(
                "cached sessions: {during:.0}/s during the outage, {before:.0}/s before, {} failed",
                failed.len()
            ));
        }
    }
    if let (Some((before, _)), Some((during, failed))) = (before, during) {
        eprintln!(
            "{outage:?}: Bearer throughput {before:.0}/s before, {during:.0}/s during ({:.0} %), {} failed",
            100.0 * during / before,
            failed.len()
        );
        if during < before / 2.0 {
            problems.push(format!(
                "Bearer throughput {during:.0}/s during the outage, {before:.0}/s before"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{outage:?} (measured from {SETTLE:?} to {outage_lasted:?} into it):\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_postgresql_blackhole_keeps_readiness_and_bearer_checks_fast() {
    stays_fast("fl_pghole", Outage::PostgresBlackhole, true);
}

#[test]
fn a_hung_redis_keeps_readiness_and_bearer_checks_fast() {
    stays_fast("fl_redisstop", Outage::RedisStopped, false);
}
