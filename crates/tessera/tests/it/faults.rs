//! Faults, against the real binaries (issue 16): `tessera serve` instances on one PostgreSQL,
//! reached through a relay the test cuts and black-holes, and on a redis-server of the test's
//! own that it SIGKILLs and SIGSTOPs. What must hold whatever fails, whenever:
//! - a token's state changes all at once or not at all: a refresh that failed leaves its token
//!   as it was, so a client retrying through an outage never loses its chain; a logout is
//!   complete or did nothing (and its retry completes it);
//! - revoking a refresh family refuses every access token issued in it, on every instance,
//!   within a second, however many concurrent or retried refreshes made them;
//! - a revocation is complete without Redis: refused everywhere within a second of its return.
//!
//! Each test has its own schema, Redis and relay; loopback only; every wait has a deadline.
//! PostgreSQL: `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! `redis-server` on the PATH.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::fleet::WITHIN;
use crate::fleet::rig::{Answer, Outage, Rig, field, logout, me, refresh, revoke, shown};

/// The audit event of a refresh token presented again outside the honest-retry grace.
const REUSE: &str = "refresh_reuse_detected";

/// How long instances may take to say they are ready again after an outage.
const RECOVERY: Duration = Duration::from_secs(20);

/// Panics unless `a` is a 200.
fn ok(a: &Answer, what: &str) {
    assert!(matches!(a, Ok((200, _))), "{what}: {}", shown(a));
}

/// Panics unless `a` is 400 `invalid_grant`.
fn invalid_grant(a: &Answer, what: &str) {
    assert!(
        matches!(a, Ok((400, body)) if body["error"] == "invalid_grant"),
        "{what}: {}",
        shown(a)
    );
}

/// Panics unless every instance accepts every one of `tokens` on `/auth/me` now.
fn accepted_everywhere(rig: &Rig, tokens: &[(&str, &str)]) {
    for i in &rig.instances {
        for (name, t) in tokens {
            let a = me(&i.url, t);
            assert!(
                matches!(a, Ok((200, _))),
                "{name} on {} before any revocation: {}",
                i.name,
                shown(&a)
            );
        }
    }
}

/// 20 concurrent refreshes of one refresh token, spread over three instances: one rotation and
/// 19 honest retries, every one answered with the same successor and an access token of its
/// own. Revoking the successor (RFC 7009) ends the family: all those access tokens, and the
/// login's, are refused by every instance within a second.
#[test]
fn concurrent_refreshes_then_revocation_refuse_every_access_token() {
    let rig = Rig::new("f_concurrent", 3);
    let (a0, r0) = rig.token_login(0);
    let n = 20;
    let barrier = Barrier::new(n);
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..n)
            .map(|k| {
                let (url, r0, barrier) = (rig.url(k), &r0, &barrier);
                s.spawn(move || {
                    // The thread's client is made before the start, not in the race.
                    crate::fleet::rig::http();
                    barrier.wait();
                    refresh(url, r0)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let statuses: Vec<String> = answers.iter().map(shown).collect();
    eprintln!("{n} concurrent refreshes answered: {statuses:?}");
    assert!(
        answers.iter().all(|a| matches!(a, Ok((200, _)))),
        "every concurrent refresh of one token within the grace answers 200: {statuses:?}"
    );
    let successors: BTreeSet<String> = answers
        .iter()
        .map(|a| field(a, "refresh_token", "refresh"))
        .collect();
    assert_eq!(
        successors.len(),
        1,
        "one successor for one token, however many ask: {successors:?}"
    );
    let successor = successors.into_iter().next().unwrap();
    let access: Vec<String> = answers
        .iter()
        .map(|a| field(a, "access_token", "refresh"))
        .collect();
    assert_eq!(
        access.iter().collect::<BTreeSet<_>>().len(),
        n,
        "an access token of its own for each"
    );
    let names: Vec<String> = (0..n).map(|k| format!("refresh #{k}")).collect();
    let mut tokens: Vec<(&str, &str)> = vec![("login", a0.as_str())];
    tokens.extend(
        names
            .iter()
            .map(|s| s.as_str())
            .zip(access.iter().map(|s| s.as_str())),
    );
    // Verified (and cached) by every instance first.
    accepted_everywhere(&rig, &tokens);

    let start = Instant::now();
    ok(&revoke(rig.url(1), &successor), "RFC 7009 revocation");
    match rig.refused_everywhere(&tokens, start, WITHIN) {
        Ok(took) => eprintln!(
            "all {} access tokens of the family refused by every instance {took:?} after the revocation",
            tokens.len()
        ),
        Err(e) => panic!("revoking the family after {n} concurrent refreshes: {e}"),
    }
    invalid_grant(&refresh(rig.url(2), &successor), "the revoked successor");
}

/// An honest retry: R0 refreshed, then R0 again (the answer was lost) — the same successor R1,
/// and a second access token. Revoking R1 refuses both access tokens on every instance.
#[test]
fn honest_retry_access_tokens_are_revoked_with_the_family() {
    let rig = Rig::new("f_retry", 2);
    let (_, r0) = rig.token_login(0);
    let first = refresh(rig.url(0), &r0);
    let (a1, r1) = (
        field(&first, "access_token", "refresh"),
        field(&first, "refresh_token", "refresh"),
    );
    let retry = refresh(rig.url(1), &r0);
    let (a2, r1_again) = (
        field(&retry, "access_token", "the retry"),
        field(&retry, "refresh_token", "the retry"),
    );
    assert_eq!(
        r1_again, r1,
        "a retry within the grace gets the same successor"
    );
    assert_ne!(a2, a1);
    let tokens = [
        ("first access token", a1.as_str()),
        ("retry's access token", a2.as_str()),
    ];
    accepted_everywhere(&rig, &tokens);

    let start = Instant::now();
    ok(&revoke(rig.url(0), &r1), "RFC 7009 revocation of R1");
    match rig.refused_everywhere(&tokens, start, WITHIN) {
        Ok(took) => {
            eprintln!("both access tokens refused everywhere {took:?} after the revocation")
        }
        Err(e) => panic!("revoking the family after an honest retry: {e}"),
    }
    invalid_grant(&refresh(rig.url(1), &r1), "the revoked successor");
}

/// What one refresh chain went through.
#[derive(Default)]
struct Chain {
    /// When each refresh that answered 200 was sent.
    ok: Vec<Instant>,
    /// When each refresh that answered 503 (true), or not at all (false), was sent.
    failed: Vec<(Instant, bool)>,
    /// Why the chain was lost (a 400), if it was.
    lost: Option<String>,
    /// Answers that are neither 200, 503 nor 400.
    unexpected: Vec<String>,
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Refreshes `token` on `urls` in turn about every 100 ms until `stop`; on a 503 or no answer,
/// the same token again every 200 ms; lost at the first 400.
fn run_chain(urls: &[String], first: usize, mut token: String, stop: &AtomicBool) -> Chain {
    let mut chain = Chain::default();
    let mut k = first;
    // The first time the current token was presented, and how many times since.
    let mut presented: Option<(Instant, u32)> = None;
    while !stop.load(Ordering::SeqCst) {
        let url = &urls[k % urls.len()];
        k += 1;
        let sent = Instant::now();
        let a = refresh(url, &token);
        match &a {
            Ok((200, body)) if body["refresh_token"].is_string() => {
                token = body["refresh_token"].as_str().unwrap().to_owned();
                chain.ok.push(sent);
                presented = None;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok((400, _)) => {
                let history = match presented {
                    Some((at, tries)) => format!(
                        "its token first presented {:?} earlier, {tries} failed tries since",
                        at.elapsed()
                    ),
                    None => "at the token's first presentation".to_owned(),
                };
                chain.lost = Some(format!("{} from {url}, {history}", shown(&a)));
                break;
            }
            other => {
                if !matches!(other, Ok((503, _)) | Err(_)) {
                    chain.unexpected.push(shown(other));
                }
                chain.failed.push((sent, matches!(other, Ok((503, _)))));
                presented.get_or_insert((sent, 0)).1 += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    chain
}

/// Refresh chains through two PostgreSQL outages of `kind` (10 s, then 15 s), as issue 16
/// measured them: no chain may be lost, and no reuse may be detected.
fn chains_survive(name: &str, kind: Outage) {
    const CHAINS: usize = 12;
    let mut rig = Rig::new(name, 3);
    let urls = rig.urls();
    let logins: Vec<String> = (0..CHAINS).map(|c| rig.token_login(c).1).collect();
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(CHAINS + 1);
    let test_start = Instant::now();
    // (what, began, ended)
    let outages: Mutex<Vec<(String, Instant, Instant)>> = Mutex::new(Vec::new());
    let chains: Vec<Chain> = std::thread::scope(|s| {
        let threads: Vec<_> = logins
            .into_iter()
            .enumerate()
            .map(|(c, token)| {
                let (urls, stop, barrier) = (&urls, &stop, &barrier);
                s.spawn(move || {
                    crate::fleet::rig::http();
                    barrier.wait();
                    run_chain(urls, c, token, stop)
                })
            })
            .collect();
        barrier.wait();
        // Whatever happens here (a panic included), the chains stop: the scope joins them.
        let stopper = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(2));
        for (length, then) in [(10, 3), (15, 5)] {
            let began = Instant::now();
            rig.begin(kind);
            std::thread::sleep(Duration::from_secs(length));
            rig.end(kind);
            outages
                .lock()
                .unwrap()
                .push((format!("{kind:?} {length} s"), began, Instant::now()));
            std::thread::sleep(Duration::from_secs(then));
        }
        drop(stopper);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let outages = outages.into_inner().unwrap();
    let ran = test_start.elapsed();

    // The rig works: refreshes went through before the first outage and failed during each.
    let first = outages[0].1;
    for (c, chain) in chains.iter().enumerate() {
        assert!(
            chain.ok.iter().any(|t| *t < first),
            "chain {c} made no progress before the first outage: the rig is broken"
        );
    }
    for (what, began, ended) in &outages {
        let during: Vec<bool> = chains
            .iter()
            .flat_map(|c| &c.failed)
            .filter(|(t, _)| t >= began && t < ended)
            .map(|(_, answered)| *answered)
            .collect();
        let failed = during.len();
        let answered = during.iter().filter(|a| **a).count();
        let recovered: Vec<Duration> = chains
            .iter()
            .filter_map(|c| c.ok.iter().find(|t| *t >= ended).map(|t| *t - *ended))
            .collect();
        eprintln!(
            "{what}: {failed} refreshes failed during it ({answered} answered 503, {} no answer within {:?}); after it, {} of {CHAINS} chains refreshed again, the last {:?} after",
            failed - answered,
            crate::fleet::rig::TIMEOUT,
            recovered.len(),
            recovered.iter().max().copied().unwrap_or_default()
        );
        assert!(
            failed > 0,
            "{what}: no refresh failed during the outage: the rig is broken"
        );
    }
    let total: usize = chains.iter().map(|c| c.ok.len()).sum();
    eprintln!("{total} refreshes over {CHAINS} chains in {ran:?}");

    let mut problems = Vec::new();
    let last = outages.last().unwrap().2;
    for (c, chain) in chains.iter().enumerate() {
        if let Some(why) = &chain.lost {
            problems.push(format!("chain {c} lost: {why}"));
        } else if !chain.ok.iter().any(|t| *t >= last) {
            problems.push(format!("chain {c} made no progress after the last outage"));
        }
        if !chain.unexpected.is_empty() {
            problems.push(format!(
                "chain {c} got unexpected answers: {:?}",
                chain.unexpected
            ));
        }
    }
    let lost = chains.iter().filter(|c| c.lost.is_some()).count();
    let reuse = rig.logs_with(REUSE);
    if !reuse.is_empty() {
        problems.push(format!("{REUSE} in the logs of instances {reuse:?}"));
    }
    eprintln!("{lost} of {CHAINS} chains lost");
    assert!(
        problems.is_empty(),
        "{lost} of {CHAINS} chains lost through {kind:?} outages:\n{}",
        problems.join("\n")
    );
}

#[test]
fn refresh_chains_survive_database_cuts() {
    chains_survive("f_cuts", Outage::PostgresCut);
}

#[test]
fn refresh_chains_survive_database_blackholes() {
    chains_survive("f_holes", Outage::PostgresBlackhole);
}

const OUTAGES: [Outage; 3] = [
    Outage::PostgresCut,
    Outage::RedisKilled,
    Outage::RedisStopped,
];

/// A Bearer logout (refresh family revoked, access token denylisted) during each outage is
/// all or nothing: after the outage either both happened, or neither and its retry does both.
/// Never the access token refused while its family lives on.
#[test]
fn bearer_logout_during_outages_is_all_or_nothing() {
    let mut rig = Rig::new("f_bearer", 2);
    let mut problems = Vec::new();
    for outage in OUTAGES {
        let (a, r) = rig.token_login(0);
        accepted_everywhere(&rig, &[("A", &a)]);
        rig.begin(outage);
        let sent = Instant::now();
        let answer = logout(rig.url(1), &a);
        let took = sent.elapsed();
        rig.end(outage);
        let recovery = rig.wait_ready(RECOVERY);
        eprintln!(
            "{outage:?}: Bearer logout answered {} in {took:?}; ready again {recovery:?} after the outage",
            shown(&answer)
        );
        if let Err(e) = bearer_logout_outcome(&rig, &answer, &a, &r) {
            problems.push(format!("{outage:?}: {e}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Checks what a Bearer logout that answered `answer` left behind; a problem as an error.
fn bearer_logout_outcome(rig: &Rig, answer: &Answer, a: &str, r: &str) -> Result<(), String> {
    let ended = |when: &str| -> Result<(), String> {
        let start = Instant::now();
        let took = rig
            .refused_everywhere(&[("A", a)], start, WITHIN)
            .map_err(|e| format!("{when}: {e}"))?;
        let again = refresh(rig.url(0), r);
        if !matches!(&again, Ok((400, _))) {
            return Err(format!(
                "{when}: A refused, but its refresh token answered {}",
                shown(&again)
            ));
        }
        eprintln!("  {when}: A refused everywhere (checked in {took:?}), R → 400");
        Ok(())
    };
    match answer {
        Ok((204, _)) => ended("answered 204"),
        Ok((503, _)) => {
            let (access, seen) = rig.accepted(a);
            let family = rig.active(0, r);
            match (access, family) {
                (Some(true), true) => {
                    eprintln!("  503 and nothing happened: A accepted everywhere, R active");
                    let retry = logout(rig.url(0), a);
                    if !matches!(&retry, Ok((204, _))) {
                        return Err(format!(
                            "503 and nothing happened, but the retried logout answered {}",
                            shown(&retry)
                        ));
                    }
                    ended("the retried logout answered 204")
                }
                (Some(false), false) => {
                    // Done, though it said otherwise (its answer lost with the store): whole.
                    let retry = logout(rig.url(0), a);
                    eprintln!(
                        "  503, yet the logout was complete; its retry answered {}",
                        shown(&retry)
                    );
                    ended("503 but complete")
                }
                (Some(false), true) => Err(format!(
                    "HALF DONE: answered 503; afterwards A is refused everywhere but its refresh token is still active (R refreshes); a retried logout answers {}",
                    shown(&logout(rig.url(0), a))
                )),
                (Some(true), false) => Err(
                    "HALF DONE: answered 503; afterwards A is accepted everywhere but its refresh family is ended".to_owned(),
                ),
                (None, _) => Err(format!(
                    "answered 503; afterwards the instances disagree on A 1 s after recovery: {seen:?}"
                )),
            }
        }
        other => Err(format!(
            "a Bearer logout answers 204 or 503, not {}",
            shown(other)
        )),
    }
}

/// A session logout during each outage is all or nothing: after the outage the session either
/// still works everywhere (and a retried logout ends it) or is ended everywhere within 1 s.
#[test]
fn session_logout_during_outages_is_all_or_nothing() {
    let mut rig = Rig::new("f_session", 2);
    let mut problems = Vec::new();
    for outage in OUTAGES {
        let s = rig.session_login(0);
        accepted_everywhere(&rig, &[("the session", &s)]);
        rig.begin(outage);
        let sent = Instant::now();
        let answer = logout(rig.url(1), &s);
        let took = sent.elapsed();
        rig.end(outage);
        let recovery = rig.wait_ready(RECOVERY);
        eprintln!(
            "{outage:?}: session logout answered {} in {took:?}; ready again {recovery:?} after the outage",
            shown(&answer)
        );
        if let Err(e) = session_logout_outcome(&rig, &answer, &s) {
            problems.push(format!("{outage:?}: {e}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn session_logout_outcome(rig: &Rig, answer: &Answer, s: &str) -> Result<(), String> {
    let ended = |when: &str| -> Result<(), String> {
        let start = Instant::now();
        let took = rig
            .refused_everywhere(&[("the session", s)], start, WITHIN)
            .map_err(|e| format!("{when}: {e}"))?;
        eprintln!("  {when}: the session is refused everywhere (checked in {took:?})");
        Ok(())
    };
    match answer {
        Ok((204, _)) => {
            ended("answered 204")?;
            let retry = logout(rig.url(0), s);
            eprintln!(
                "  a retry of the completed logout answered {}",
                shown(&retry)
            );
            match retry {
                Ok((204 | 401, _)) => Ok(()),
                other => Err(format!(
                    "a retried logout of an ended session answered {}",
                    shown(&other)
                )),
            }
        }
        Ok((503, _)) => match rig.accepted(s) {
            (Some(true), _) => {
                eprintln!("  503 and nothing happened: the session works everywhere");
                let retry = logout(rig.url(0), s);
                if !matches!(&retry, Ok((204, _))) {
                    return Err(format!(
                        "503 and nothing happened, but the retried logout answered {}",
                        shown(&retry)
                    ));
                }
                ended("the retried logout answered 204")
            }
            (Some(false), _) => {
                let retry = logout(rig.url(0), s);
                eprintln!(
                    "  503, yet the session was ended everywhere; a retried logout answered {}",
                    shown(&retry)
                );
                match retry {
                    Ok((204 | 401, _)) => Ok(()),
                    other => Err(format!(
                        "a retried logout of an ended session answered {}",
                        shown(&other)
                    )),
                }
            }
            (None, seen) => Err(format!(
                "HALF DONE: answered 503; 1 s after recovery the instances disagree on the session: {seen:?}"
            )),
        },
        other => Err(format!(
            "a session logout answers 204 or 503, not {}",
            shown(other)
        )),
    }
}

/// An RFC 7009 revocation while Redis is dead, then while it hangs, answers 200 (it is durable
/// in PostgreSQL first); within a second of Redis answering again, every instance refuses the
/// access token and the refresh token is dead.
#[test]
fn revocation_during_redis_outage_reaches_every_instance() {
    let mut rig = Rig::new("f_revoke", 2);
    let mut problems = Vec::new();
    for outage in [Outage::RedisKilled, Outage::RedisStopped] {
        let (a, r) = rig.token_login(0);
        accepted_everywhere(&rig, &[("A", &a)]);
        rig.begin(outage);
        let sent = Instant::now();
        let answer = revoke(rig.url(1), &r);
        let took = sent.elapsed();
        // Still down a moment after the answer: what the instances do meanwhile does not count.
        std::thread::sleep(Duration::from_millis(500));
        rig.end(outage);
        let back = Instant::now();
        let refused = rig.refused_everywhere(&[("A", &a)], back, WITHIN);
        let again = refresh(rig.url(0), &r);
        eprintln!(
            "{outage:?}: the revocation answered {} in {took:?}; after Redis returned: A {}, R → {}",
            shown(&answer),
            match &refused {
                Ok(t) => format!("refused everywhere {t:?} after"),
                Err(e) => e.clone(),
            },
            shown(&again)
        );
        let mut wrong = Vec::new();
        if !matches!(&answer, Ok((200, _))) {
            wrong.push(format!("the revocation answered {}", shown(&answer)));
        }
        if let Err(e) = refused {
            wrong.push(format!("A after Redis returned: {e}"));
        }
        if !matches!(&again, Ok((400, _))) {
            wrong.push(format!(
                "the revoked refresh token answered {}",
                shown(&again)
            ));
        }
        if !wrong.is_empty() {
            problems.push(format!("{outage:?}: {}", wrong.join("; ")));
        }
        rig.wait_ready(RECOVERY);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
