//! Many servers: real `tessera serve` processes sharing the machine's PostgreSQL and Redis,
//! behind a real HAProxy in plain round-robin, no stickiness. Each test works in its own
//! PostgreSQL schema and Redis key prefix and removes them.
//!
//! PostgreSQL: `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! Redis: `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); HAProxy on the PATH (`scripts/test.sh`
//! installs it as root). A missing one fails these tests; none is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{free_port, until_healthy};
use crate::fleet::{
    Instance, OwnRedis, PW, Relay, Shared, WITHIN, block_on, eventually, postgres_addr,
    postgres_url, redis_url,
};

/// HAProxy in round-robin over `backends`, health-checking `/healthz` every 200 ms.
struct Haproxy {
    child: Child,
    url: String,
}

impl Haproxy {
    fn start(dir: &std::path::Path, backends: &[(&str, &Instance)]) -> Haproxy {
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 2000\n  log stderr format raw local0 info\n\
             defaults\n  mode http\n  log global\n  option log-health-checks\n  option redispatch\n  retries 2\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\
             frontend tessera\n  bind 127.0.0.1:{port}\n  default_backend instances\n\
             backend instances\n  balance roundrobin\n  option httpchk GET /healthz\n\
             \x20 timeout check 2s\n  default-server inter 200ms fall 2 rise 2\n"
        );
        for (name, i) in backends {
            let addr = i.url.trim_start_matches("http://");
            cfg.push_str(&format!("  server {name} {addr} check\n"));
        }
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy is required on the PATH (scripts/test.sh installs it as root)");
        let url = format!("http://127.0.0.1:{port}");
        until_healthy(&url, Duration::from_secs(10), "haproxy");
        Haproxy { child, url }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn post_json(url: &str, body: &Value) -> reqwest::blocking::Response {
    client().post(url).json(body).send().unwrap()
}

/// `/auth/me` with `token`: the status and the instance that answered.
fn me(base: &str, token: &str) -> (u16, String) {
    let r = client()
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .unwrap();
    let who = r
        .headers()
        .get("x-tessera-instance")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), who)
}

/// Waits until every instance refuses `token`; panics if one still accepts it after
/// [`WITHIN`]. Returns how long it took.
fn refused_by_all(instances: &[&Instance], token: &str, what: &str) -> Duration {
    let start = Instant::now();
    let mut pending: Vec<&&Instance> = instances.iter().collect();
    while !pending.is_empty() {
        pending.retain(|i| me(&i.url, token).0 != 401);
        if pending.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < WITHIN,
            "{what}: still accepted by {} 1 s later",
            pending[0].url
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// `/oauth2/token` with `grant_type=refresh_token` for the built-in client.
fn use_refresh(base: &str, token: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "tessera"),
            ("refresh_token", token),
        ])
        .send()
        .unwrap()
}

/// RFC 7009 revocation of `token` for the built-in client: the status.
fn revoke(base: &str, token: &str) -> u16 {
    client()
        .post(format!("{base}/oauth2/revoke"))
        .form(&[("token", token), ("client_id", "tessera")])
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// `/auth/logout` with a Bearer session token: the status.
fn logout(base: &str, session: &str) -> u16 {
    client()
        .post(format!("{base}/auth/logout"))
        .bearer_auth(session)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn session_login(base: &str) -> String {
    let r = post_json(
        &format!("{base}/auth/login"),
        &json!({"username": "alice", "password": PW}),
    );
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn token_login(base: &str) -> Value {
    let r = post_json(
        &format!("{base}/auth/login"),
        &json!({"username": "alice", "password": PW, "mode": "token"}),
    );
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

#[test]
fn three_instances_behind_haproxy_share_everything() {
    let shared = Shared::new("lb");
    // A fresh schema gets every migration; a second run has nothing left to do.
    let o = shared.tessera(&["migrate"], None);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(6 migrations applied now)"),
        "{o:?}"
    );
    let o = shared.tessera(&["migrate"], None);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(0 migrations applied now)"),
        "{o:?}"
    );
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let issuer_port = free_port();
    let issuer = format!("http://127.0.0.1:{issuer_port}");
    let a = shared.instance("a", &issuer);
    let b = shared.instance("b", &issuer);
    let c = shared.instance("c", &issuer);
    let lb = Haproxy::start(&shared.dir, &[("a", &a), ("b", &b), ("c", &c)]);
    let all = [&a, &b, &c];

    // A session made through the balancer is honoured by whichever instance answers.
    let session = session_login(&lb.url);
    let mut seen = BTreeMap::new();
    for _ in 0..100 {
        let (status, who) = me(&lb.url, &session);
        assert_eq!(status, 200, "refused by {who}");
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "round robin reaches every instance: {seen:?}"
    );

    // Every instance has the session cached now. Logging out through one ends it on all.
    for i in all {
        assert_eq!(me(&i.url, &session).0, 200);
    }
    assert_eq!(logout(&a.url, &session), 204);
    let took = refused_by_all(&all, &session, "logout");
    eprintln!("logout reached every instance in {took:?}");

    // An access token verified (and cached) everywhere, revoked through one: refused by all.
    let tokens = token_login(&lb.url);
    let access = tokens["access_token"].as_str().unwrap();
    for i in all {
        assert_eq!(me(&i.url, access).0, 200);
    }
    assert_eq!(revoke(&b.url, access), 200);
    let took = refused_by_all(&all, access, "access-token revocation");
    eprintln!("revocation reached every instance in {took:?}");
    // The refresh family went with it, on every instance.
    let r = use_refresh(&c.url, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(r.status(), 400);

    // Disabling the user with the CLI: every instance refuses its session within 1 s.
    let session = session_login(&lb.url);
    for i in all {
        assert_eq!(me(&i.url, &session).0, 200);
    }
    shared.tessera(&["user", "disable", "alice"], None);
    let took = refused_by_all(&all, &session, "disabling the user");
    eprintln!("disabling reached every instance in {took:?}");
    shared.tessera(&["user", "enable", "alice"], None);

    // A key rotation made with the CLI: every instance publishes the same JWKS with the new key.
    let jwks = |i: &Instance| -> Value {
        client()
            .get(format!("{}/.well-known/jwks.json", i.url))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let before = jwks(&a);
    shared.tessera(&["keys", "rotate"], None);
    let start = Instant::now();
    loop {
        let sets: Vec<Value> = all.iter().map(|i| jwks(i)).collect();
        let grown =
            sets[0]["keys"].as_array().unwrap().len() > before["keys"].as_array().unwrap().len();
        if grown && sets.iter().all(|s| *s == sets[0]) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the instances do not agree on the JWKS: {sets:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Tokens signed by any instance now verify on every other.
    let tokens = token_login(&a.url);
    for i in all {
        assert_eq!(me(&i.url, tokens["access_token"].as_str().unwrap()).0, 200);
    }

    // SIGKILL one instance under load. Requests in flight may fail; once HAProxy has noticed
    // (two failed checks, 200 ms apart), none does, and nothing stored was lost.
    let session = session_login(&lb.url);
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // Failures, by when the request started (ms since `start`).
    let failures = Arc::new(std::sync::Mutex::new(Vec::<u128>::new()));
    let served = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, served) = (
                Arc::clone(&stop),
                Arc::clone(&failures),
                Arc::clone(&served),
            );
            let (url, session) = (lb.url.clone(), session.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                while !stop.load(Ordering::SeqCst) {
                    let began = start.elapsed().as_millis();
                    let ok = http
                        .get(format!("{url}/auth/me"))
                        .bearer_auth(&session)
                        .send()
                        .is_ok_and(|r| r.status() == 200);
                    if !ok {
                        failures.lock().unwrap().push(began);
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut b = b;
    let killed_at = start.elapsed().as_millis();
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    // HAProxy needs two failed checks 200 ms apart; a second is ample.
    let noticed_at = killed_at + 1000;
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let late: Vec<_> = failures.iter().filter(|t| **t >= noticed_at).collect();
    assert!(
        late.is_empty(),
        "requests started after HAProxy noticed the dead instance failed (started at ms {late:?}; killed at {killed_at})"
    );
    eprintln!(
        "{} requests under load; {} failed, all in flight when the instance was killed",
        served.load(Ordering::SeqCst),
        failures.len()
    );
    let mut answered = BTreeSet::new();
    for _ in 0..30 {
        let (status, who) = me(&lb.url, &session);
        assert_eq!(status, 200);
        answered.insert(who);
    }
    assert_eq!(answered.into_iter().collect::<Vec<_>>(), ["a", "c"]);
    // The refresh token issued before the kill still refreshes, through the balancer.
    let r = use_refresh(&lb.url, refresh.as_str());
    assert_eq!(r.status(), 200);
}

fn ready(base: &str) -> Value {
    client()
        .get(format!("{base}/readyz"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The readiness status code and `status` word.
fn ready_status(base: &str) -> (u16, String) {
    let r = client().get(format!("{base}/readyz")).send().unwrap();
    let code = r.status().as_u16();
    let v: Value = r.json().unwrap();
    (code, v["status"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn redis_down_sessions_answer_503_jwts_go_on_and_all_resumes() {
    let mut shared = Shared::new("redisdown");
    let mut redis = OwnRedis::start(shared.dir.join("redis"), false);
    shared.set("TESSERA_REDIS_URL", &redis.url());
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let added: Value = serde_json::from_slice(
        &shared
            .tessera(
                &[
                    "client",
                    "add",
                    "rs",
                    "--grant",
                    "client_credentials",
                    "--json",
                ],
                None,
            )
            .stdout,
    )
    .unwrap();
    let rs_secret = added["client_secret"].as_str().unwrap().to_owned();
    let i = shared.instance("solo", "http://127.0.0.1:1");
    let introspect = |token: &str| -> Value {
        client()
            .post(format!("{}/oauth2/introspect", i.url))
            .basic_auth("rs", Some(&rs_secret))
            .form(&[("token", token)])
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let session = session_login(&i.url);
    let tokens = token_login(&i.url);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(introspect(access)["active"], true);
    let revoked = token_login(&i.url)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(revoke(&i.url, &revoked), 200);
    assert_eq!(me(&i.url, &session).0, 200);
    assert_eq!(ready(&i.url)["status"], "ready");
    let victim = token_login(&i.url);

    redis.kill();
    // Session checks: 503 with a problem body, never 500, never "not logged in".
    eventually(Duration::from_secs(3), "session checks answer 503", || {
        me(&i.url, &session).0 == 503
    });
    let r = client()
        .get(format!("{}/auth/me", i.url))
        .bearer_auth(&session)
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let login = post_json(
        &format!("{}/auth/login", i.url),
        &json!({"username": "alice", "password": PW}),
    );
    assert_eq!(login.status(), 503);
    // Bearer JWTs go on, and the last copy of the denylist still refuses the revoked one.
    assert_eq!(me(&i.url, access).0, 200);
    assert_eq!(me(&i.url, &revoked).0, 401);
    let status = ready(&i.url);
    assert_eq!(status["status"], "degraded", "{status}");
    assert_eq!(status["checks"]["sessions"], false);
    // The denylist is PostgreSQL's, and each instance catches up from it: a revocation made
    // while Redis is down is complete (200) and refused at once, and introspection, which
    // fails closed on a stale denylist, goes on answering the truth.
    let victim_access = victim["access_token"].as_str().unwrap();
    assert_eq!(me(&i.url, victim_access).0, 200);
    assert_eq!(
        revoke(&i.url, victim["refresh_token"].as_str().unwrap()),
        200
    );
    assert_eq!(me(&i.url, victim_access).0, 401);
    assert_eq!(introspect(victim_access), json!({"active": false}));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(introspect(access)["active"], true);

    // Redis is back (empty: it kept nothing): no restart of tessera needed.
    redis.restart();
    eventually(Duration::from_secs(5), "readiness recovers", || {
        ready(&i.url)["status"] == "ready"
    });
    let fresh = session_login(&i.url);
    assert_eq!(me(&i.url, &fresh).0, 200);
    // The lost session is simply gone, never half-alive.
    assert_eq!(me(&i.url, &session).0, 401);
    assert_eq!(me(&i.url, access).0, 200);
    assert_eq!(introspect(access)["active"], true);
    assert_eq!(me(&i.url, victim_access).0, 401);
}

#[test]
fn sessions_survive_a_redis_restart_with_aof() {
    let mut shared = Shared::new("aof");
    let mut redis = OwnRedis::start(shared.dir.join("redis"), true);
    shared.set("TESSERA_REDIS_URL", &redis.url());
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let i = shared.instance("solo", "http://127.0.0.1:1");
    let sessions: Vec<String> = (0..5).map(|_| session_login(&i.url)).collect();
    let revoked = token_login(&i.url)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(revoke(&i.url, &revoked), 200);

    redis.kill();
    redis.restart();
    // A second instance started now learns the denylist from the restarted Redis alone.
    let j = shared.instance("late", "http://127.0.0.1:1");
    eventually(Duration::from_secs(5), "sessions are back", || {
        sessions.iter().all(|s| me(&i.url, s).0 == 200)
    });
    for s in &sessions {
        assert_eq!(me(&j.url, s).0, 200);
    }
    assert_eq!(me(&j.url, &revoked).0, 401);
}

#[test]
fn postgres_down_logins_and_refreshes_answer_503_jwts_go_on() {
    let mut shared = Shared::new("pgdown");
    let relay = Relay::start(&postgres_addr());
    shared.tessera(&["migrate"], None);
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    shared.through(&relay);
    let mut redis = OwnRedis::start(shared.dir.join("redis"), false);
    shared.set("TESSERA_REDIS_URL", &redis.url());
    let i = shared.instance("solo", "http://127.0.0.1:1");
    let tokens = token_login(&i.url);
    let access = tokens["access_token"].as_str().unwrap();
    let session = session_login(&i.url);
    assert_eq!(me(&i.url, access).0, 200);

    relay.cut();
    let login = post_json(
        &format!("{}/auth/login", i.url),
        &json!({"username": "alice", "password": PW, "mode": "token"}),
    );
    assert_eq!(login.status(), 503);
    let refresh = use_refresh(&i.url, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(refresh.status(), 503);
    assert_eq!(
        refresh.json::<Value>().unwrap()["error"],
        "temporarily_unavailable"
    );
    // Past the cache's TTL, Bearer JWTs still verify and sessions (in Redis) still work.
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(me(&i.url, access).0, 200);
    assert_eq!(me(&i.url, &session).0, 200);
    let status = ready(&i.url);
    assert_eq!(status["status"], "degraded", "{status}");
    assert_eq!(status["checks"]["users"], false);
    // Both stores down: only now is the instance unready (503). With the change feed gone the
    // cached users cannot be trusted and the database cannot be asked: Bearer checks answer
    // 503 too (never 500, never a silent yes).
    redis.kill();
    let started = Instant::now();
    loop {
        let last = ready_status(&i.url);
        if last == (503, "unavailable".to_owned()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "readiness: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(me(&i.url, access).0, 503);
    redis.restart();
    eventually(Duration::from_secs(5), "Redis is seen again", || {
        ready(&i.url)["status"] == "degraded"
    });

    // Back: logins and refreshes resume without a restart, and nothing was lost.
    relay.restore();
    eventually(Duration::from_secs(10), "logins resume", || {
        post_json(
            &format!("{}/auth/login", i.url),
            &json!({"username": "alice", "password": PW, "mode": "token"}),
        )
        .status()
            == 200
    });
    let refresh = use_refresh(&i.url, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(refresh.status(), 200);
}

#[test]
fn postgres_without_redis_is_a_cluster_too() {
    let mut shared = Shared::new("pgonly");
    shared.env.retain(|(k, _)| k != "TESSERA_REDIS_URL");
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let issuer = "http://127.0.0.1:1";
    let a = shared.instance("a", issuer);
    let b = shared.instance("b", issuer);
    let both = [&a, &b];
    // Sessions live in PostgreSQL: made on one, honoured by the other; ended on one, refused by
    // both within 1 s (each polls the revocation generation every 250 ms).
    let session = session_login(&a.url);
    for i in both {
        assert_eq!(me(&i.url, &session).0, 200);
    }
    assert_eq!(logout(&b.url, &session), 204);
    refused_by_all(&both, &session, "logout without Redis");
    let access = token_login(&a.url)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in both {
        assert_eq!(me(&i.url, &access).0, 200);
    }
    assert_eq!(revoke(&a.url, &access), 200);
    refused_by_all(&both, &access, "revocation without Redis");
}

#[test]
fn session_cache_ttl_zero_reads_redis_on_every_request() {
    let redis_cli = |args: &[&str]| {
        let o = Command::new("redis-cli")
            .args(["-p", &redis_port()])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success());
    };
    let mut shared = Shared::new("ttl");
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    // Default: a session read once is served from memory; a change made behind tessera's back
    // (no announcement) is seen only when the entry expires.
    let cached = shared.instance("cached", "http://127.0.0.1:1");
    let s1 = session_login(&cached.url);
    assert_eq!(me(&cached.url, &s1).0, 200);
    redis_cli(&["DEL", &redis_key(&shared, &s1)]);
    assert_eq!(me(&cached.url, &s1).0, 200);
    drop(cached);
    // cache_ttl = 0s: every request reads Redis.
    shared.set("TESSERA_SESSION_CACHE_TTL", "0s");
    let direct = shared.instance("direct", "http://127.0.0.1:1");
    let s2 = session_login(&direct.url);
    assert_eq!(me(&direct.url, &s2).0, 200);
    redis_cli(&["DEL", &redis_key(&shared, &s2)]);
    assert_eq!(me(&direct.url, &s2).0, 401);
}

/// The Redis key of the session `token` names.
fn redis_key(shared: &Shared, token: &str) -> String {
    let hash = tessera_core::Token::parse(tessera_core::Kind::Session, token)
        .unwrap()
        .hash()
        .to_hex();
    format!("{}:s:{hash}", shared.prefix)
}

/// The port of the machine's Redis (`TEST_REDIS_URL`), for `redis-cli -p`.
fn redis_port() -> String {
    redis_url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

/// A cluster's shared stores with the user alice, its instances to start with the session cache
/// off (every request reads Redis).
fn alice_with_the_cache_off(name: &str) -> Shared {
    let mut shared = Shared::new(name);
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    shared.set("TESSERA_SESSION_CACHE_TTL", "0s");
    shared
}

/// A rolling upgrade from a version that reads only sessions of each field alone: instances with
/// `session.redis_form = "fields"` write that form, the others the compact one, and every instance
/// reads, lists and ends a session whichever made it (the session cache off, so each request
/// reads Redis).
#[test]
fn sessions_of_either_redis_form_are_shared_by_instances_of_either_setting() {
    let mut shared = alice_with_the_cache_off("form");
    let compact = shared.instance("compact", "http://127.0.0.1:1");
    shared.set("TESSERA_SESSION_REDIS_FORM", "fields");
    let fields = shared.instance("fields", "http://127.0.0.1:1");
    let port = redis_port();
    let layout = |token: &str| -> Vec<String> {
        let o = Command::new("redis-cli")
            .args(["-p", &port, "HKEYS", &redis_key(&shared, token)])
            .output()
            .unwrap();
        assert!(o.status.success());
        let mut names: Vec<String> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    };
    let a = session_login(&compact.url);
    let b = session_login(&fields.url);
    // (no User-Agent: the test's client sends none)
    assert_eq!(layout(&a), ["data", "fixed", "last_seen_at"]);
    assert_eq!(
        layout(&b),
        [
            "created_at",
            "data",
            "expires_at",
            "handle",
            "idle_timeout",
            "ip",
            "last_seen_at",
            "user_id"
        ]
    );
    for i in [&compact, &fields] {
        for token in [&a, &b] {
            assert_eq!(me(&i.url, token).0, 200, "{} reads {token}", i.url);
        }
        let listed = client()
            .get(format!("{}/auth/sessions", i.url))
            .bearer_auth(&a)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    }
    // Each ended by an instance of the other setting: gone from Redis, refused everywhere.
    assert_eq!(logout(&fields.url, &a), 204);
    assert_eq!(logout(&compact.url, &b), 204);
    assert!(layout(&a).is_empty() && layout(&b).is_empty());
    for i in [&compact, &fields] {
        for token in [&a, &b] {
            assert_eq!(me(&i.url, token).0, 401);
        }
    }
}

/// With the session cache off, the Redis reads of requests in flight together leave in shared
/// pipelines: under concurrent load every request is still answered with its own session, and
/// an unknown token among them with 401.
#[test]
fn cache_off_concurrent_requests_each_get_their_own_session() {
    let shared = alice_with_the_cache_off("gather");
    let i = shared.instance("solo", "http://127.0.0.1:1");
    let handle_of = |token: &str| -> Value {
        client()
            .get(format!("{}/auth/me", i.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()["session_id"]
            .clone()
    };
    let mut sessions: Vec<(String, Value)> = (0..10)
        .map(|_| {
            let token = session_login(&i.url);
            let handle = handle_of(&token);
            assert!(handle.is_string());
            (token, handle)
        })
        .collect();
    sessions.push((
        "tss_notasessionatallnotasessionatallnot".into(),
        Value::Null,
    ));
    let sessions = Arc::new(sessions);
    let url = i.url.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (sessions, url) = (Arc::clone(&sessions), url.clone());
            std::thread::spawn(move || {
                let http = client();
                for n in 0..40 {
                    let (token, handle) = &sessions[(t * 7 + n) % sessions.len()];
                    let r = http
                        .get(format!("{url}/auth/me"))
                        .bearer_auth(token)
                        .send()
                        .unwrap();
                    if handle.is_null() {
                        assert_eq!(r.status(), 401);
                    } else {
                        assert_eq!(r.status(), 200);
                        assert_eq!(&r.json::<Value>().unwrap()["session_id"], handle);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn login_throttling_counts_across_instances() {
    let mut shared = Shared::new("throttle");
    shared.set("TESSERA_THROTTLE_ACCOUNT_FREE_ATTEMPTS", "2");
    // Delays count whole seconds: with 2 s, a second boundary crossed between the failure and
    // the next attempt still leaves the account locked.
    shared.set("TESSERA_THROTTLE_BASE_DELAY", "2s");
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let a = shared.instance("a", "http://127.0.0.1:1");
    let b = shared.instance("b", "http://127.0.0.1:1");
    let attempt = |i: &Instance, pw: &str| {
        post_json(
            &format!("{}/auth/login", i.url),
            &json!({"username": "alice", "password": pw}),
        )
        .status()
        .as_u16()
    };
    // Two free attempts, one on each instance: the account is now locked on both.
    assert_eq!(attempt(&a, "wrong password 1"), 401);
    assert_eq!(attempt(&b, "wrong password 2"), 401);
    assert_eq!(attempt(&a, PW), 429);
    assert_eq!(attempt(&b, PW), 429);
    // After the delay, the right password works anywhere and clears the account everywhere.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(attempt(&b, PW), 200);
    assert_eq!(attempt(&a, "wrong password 4"), 401);
    assert_eq!(attempt(&a, PW), 200);
}

#[test]
fn a_burst_of_guesses_over_two_instances_lets_only_the_free_attempts_through() {
    let mut shared = Shared::new("burst");
    shared.set("TESSERA_THROTTLE_BASE_DELAY", "60s");
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let a = shared.instance("a", "http://127.0.0.1:1");
    let b = shared.instance("b", "http://127.0.0.1:1");
    // 60 wrong passwords at once, half on each instance: the reservation in Redis is atomic,
    // so at most the 5 free attempts of the account reach a hash, whichever instance.
    let barrier = Arc::new(Barrier::new(60));
    let threads: Vec<_> = (0..60)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url.clone()
            } else {
                b.url.clone()
            };
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                c.post(format!("{url}/auth/login"))
                    .json(&json!({"username": "alice", "password": format!("wrong {i}")}))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(checked <= 5, "{checked} passwords checked: {statuses:?}");
    assert_eq!(checked + throttled, 60, "{statuses:?}");
    for i in [&a, &b] {
        let r = post_json(
            &format!("{}/auth/login", i.url),
            &json!({"username": "alice", "password": PW}),
        );
        assert_eq!(r.status(), 429);
    }
}

#[test]
fn audit_events_land_in_postgresql_from_servers_and_the_cli() {
    let shared = Shared::new("audit");
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let a = shared.instance("a", "http://127.0.0.1:1");
    let session = session_login(&a.url);
    let r = post_json(
        &format!("{}/auth/login", a.url),
        &json!({"username": "alice", "password": "not the password"}),
    );
    assert_eq!(r.status(), 401);
    assert_eq!(logout(&a.url, &session), 204);
    shared.tessera(&["user", "disable", "alice"], None);
    let schema = shared.schema.clone();
    let events = || -> Vec<(String, String)> {
        block_on(async {
            let pool = sqlx::PgPool::connect(&postgres_url()).await.unwrap();
            let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT event, fields FROM {schema}.audit_events ORDER BY id"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            pool.close().await;
            rows
        })
    };
    let want = [
        "user_created",
        "session_created",
        "login_ok",
        "login_failed",
        "session_ended",
        "user_disabled",
    ];
    eventually(Duration::from_secs(5), "audit events stored", || {
        let got: Vec<String> = events().into_iter().map(|(e, _)| e).collect();
        want.iter().all(|w| got.iter().any(|g| g == w))
    });
    for (event, fields) in events() {
        let f: Value = serde_json::from_str(&fields).unwrap();
        assert!(f.is_object(), "{event}: {fields}");
        assert!(
            !fields.contains("tss_") && !fields.contains(PW),
            "a secret in the audit trail: {event} {fields}"
        );
    }
}

/// A follower of one instance's revocation feed: every event (name, data) as it arrives, read
/// by a thread.
struct FeedReader {
    events: std::sync::mpsc::Receiver<(String, String)>,
}

impl FeedReader {
    /// Follows `base`'s feed as client `rs`, from `cursor` if given.
    fn open(base: &str, secret: &str, cursor: Option<&str>) -> FeedReader {
        use std::io::BufRead;
        let mut req = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .get(format!("{base}/oauth2/revocations"))
            .basic_auth("rs", Some(secret));
        if let Some(c) = cursor {
            req = req.header("last-event-id", c);
        }
        let res = req.send().unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut name, mut data) = (String::new(), String::new());
            for line in std::io::BufReader::new(res).lines() {
                let Ok(line) = line else { return };
                if line.is_empty() {
                    let event = (std::mem::take(&mut name), std::mem::take(&mut data));
                    if tx.send(event).is_err() {
                        return;
                    }
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_owned();
                }
            }
        });
        FeedReader { events }
    }

    /// The `revoked` events sent before the first `ping` (the follower is then caught up).
    fn caught_up(&self) -> Vec<Value> {
        let mut held = Vec::new();
        loop {
            match self.events.recv_timeout(Duration::from_secs(5)) {
                Ok((name, _)) if name == "ping" => return held,
                Ok((name, data)) if name == "revoked" => {
                    held.push(serde_json::from_str(&data).unwrap());
                }
                Ok(_) => {}
                Err(_) => panic!("the feed did not catch up"),
            }
        }
    }

    /// Waits for the `revoked` event whose data has `field` = `value`; panics after [`WITHIN`].
    fn revoked(&self, field: &str, value: &str) -> Value {
        let deadline = Instant::now() + WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((name, data)) if name == "revoked" => {
                    let e: Value = serde_json::from_str(&data).unwrap();
                    if e[field].as_str() == Some(value) {
                        return e;
                    }
                }
                Ok(_) => {}
                Err(_) => panic!("no revocation of {field} {value} within {WITHIN:?}"),
            }
        }
    }
}

/// A claim of a JWT, read without verification.
fn claim(token: &str, name: &str) -> String {
    let unverified = tessera_jose::dangerous::decode_unverified(token, 8192).unwrap();
    unverified.claims.unwrap()[name]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The revocation feed of any instance carries the revocations made on every instance (and by
/// the CLI) within a second.
fn feed_carries_revocations_from_every_instance(shared: &Shared) {
    shared.tessera(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let out = shared.tessera(
        &[
            "client",
            "add",
            "rs",
            "--grant",
            "client_credentials",
            "--audience",
            "https://api.test",
            "--json",
        ],
        None,
    );
    let secret = serde_json::from_slice::<Value>(&out.stdout).unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let issuer = "http://127.0.0.1:1";
    let a = shared.instance("a", issuer);
    let b = shared.instance("b", issuer);
    let feed_b = FeedReader::open(&b.url, &secret, None);
    assert!(feed_b.caught_up().is_empty());
    // An access token revoked on a: on b's feed within a second.
    let access = token_login(&a.url)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(revoke(&a.url, &access), 200);
    let e = feed_b.revoked("jti", &claim(&access, "jti"));
    assert!(e["exp"].as_i64().unwrap() > 0);
    // A user disabled by the CLI: the subject on b's feed.
    let sub = claim(&access, "sub");
    shared.tessera(&["user", "disable", "alice"], None);
    let e = feed_b.revoked("sub", &sub);
    assert!(e["revoked_at"].as_i64().unwrap() > 0);
    // A follower arriving at a with another instance's cursor is sent every revocation in
    // force (those a has learnt of, within the second): nothing is missed by moving between
    // instances.
    let feed_a = FeedReader::open(&a.url, &secret, Some("another-instance.41"));
    feed_a.revoked("jti", &claim(&access, "jti"));
    feed_a.revoked("sub", &sub);
}

#[test]
fn the_revocation_feed_of_any_instance_carries_every_instances_revocations() {
    feed_carries_revocations_from_every_instance(&Shared::new("feed"));
}

#[test]
fn the_revocation_feed_works_with_postgresql_alone() {
    let mut shared = Shared::new("feedpg");
    shared.env.retain(|(k, _)| k != "TESSERA_REDIS_URL");
    feed_carries_revocations_from_every_instance(&shared);
}
