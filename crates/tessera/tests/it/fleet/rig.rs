//! A rig for fault tests: instances on PostgreSQL through a [`Relay`] and on an [`OwnRedis`],
//! the outages the test puts them through, and HTTP calls that never panic and give up after
//! [`TIMEOUT`], so that an outage is observed rather than crashing the test.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Instance, OwnRedis, PW, Relay, Shared, WITHIN, postgres_addr};

/// Every request gives up after this; a request still unanswered then counts as no answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    static HTTP: reqwest::blocking::Client = reqwest::blocking::Client::builder()
        .timeout(TIMEOUT)
        // A fresh connection per request: nothing kept open across an outage.
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
}

/// This thread's HTTP client.
pub fn http() -> reqwest::blocking::Client {
    HTTP.with(Clone::clone)
}

/// A status and its body (JSON, or its text as a JSON string); or why no answer came.
pub type Answer = Result<(u16, Value), String>;

/// Sends `req` and reads the whole answer.
pub fn send(req: reqwest::blocking::RequestBuilder) -> Answer {
    let describe = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("no answer within {TIMEOUT:?}")
        } else {
            let mut s = format!("transport error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            s
        }
    };
    let r = req.send().map_err(describe)?;
    let status = r.status().as_u16();
    let text = r.text().map_err(describe)?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// The status of `a`, or its failure: for messages.
pub fn shown(a: &Answer) -> String {
    match a {
        Ok((status, body)) if *status >= 400 => format!("{status} {body}"),
        Ok((status, _)) => status.to_string(),
        Err(e) => e.clone(),
    }
}

/// `GET /auth/me` with `Authorization: Bearer token` (an access JWT or a session token).
pub fn me(base: &str, token: &str) -> Answer {
    send(http().get(format!("{base}/auth/me")).bearer_auth(token))
}

/// `grant_type=refresh_token` for the built-in client.
pub fn refresh(base: &str, token: &str) -> Answer {
    send(http().post(format!("{base}/oauth2/token")).form(&[
        ("grant_type", "refresh_token"),
        ("client_id", "tessera"),
        ("refresh_token", token),
    ]))
}

/// RFC 7009 revocation of `token` by the built-in client.
pub fn revoke(base: &str, token: &str) -> Answer {
    send(
        http()
            .post(format!("{base}/oauth2/revoke"))
            .form(&[("token", token), ("client_id", "tessera")]),
    )
}

/// `POST /auth/logout` with `Authorization: Bearer token` (an access JWT or a session token).
pub fn logout(base: &str, token: &str) -> Answer {
    send(
        http()
            .post(format!("{base}/auth/logout"))
            .bearer_auth(token),
    )
}

/// `GET /readyz`.
pub fn readyz(base: &str) -> Answer {
    send(http().get(format!("{base}/readyz")))
}

/// The string field `name` of a 200 answer's body; panics with the answer otherwise.
pub fn field(a: &Answer, name: &str, what: &str) -> String {
    match a {
        Ok((200, body)) if body[name].is_string() => body[name].as_str().unwrap().to_owned(),
        other => panic!("{what}: {}", shown(other)),
    }
}

/// An outage the rig is put through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Every PostgreSQL connection closed, new ones refused.
    PostgresCut,
    /// PostgreSQL unreachable without a word: nothing answers, nothing is refused.
    PostgresBlackhole,
    /// Redis SIGKILLed (it comes back with what its AOF kept).
    RedisKilled,
    /// Redis SIGSTOPped: hung.
    RedisStopped,
}

/// Instances on one PostgreSQL schema (through a relay) and one Redis of their own, a user
/// `alice` with password [`PW`], and `rs`, a confidential client that may introspect.
/// Dropped: the instances, Redis and the relay stopped, the schema removed.
pub struct Rig {
    // Dropped in this order.
    pub instances: Vec<Instance>,
    pub redis: OwnRedis,
    pub relay: Relay,
    rs_secret: String,
    pub shared: Shared,
}

impl Rig {
    /// `n` instances (named a, b, c, …) for the test `name` (a short word: it names the schema).
    pub fn new(name: &str, n: usize) -> Rig {
        Rig::with_env(name, n, &[])
    }

    /// As [`Rig::new`], the instances' environment set with `env`.
    pub fn with_env(name: &str, n: usize, env: &[(&str, &str)]) -> Rig {
        let mut shared = Shared::new(name);
        for (k, v) in env {
            shared.set(k, v);
        }
        let relay = Relay::start(&postgres_addr());
        shared.through(&relay);
        // With its AOF Redis keeps sessions and the denylist across a SIGKILL, as it should be
        // run in production: what a restart loses is then never the test's point.
        let redis = OwnRedis::start(shared.dir.join("redis"), true);
        shared.set("TESSERA_REDIS_URL", &redis.url());
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
                "--json",
            ],
            None,
        );
        let rs_secret = serde_json::from_slice::<Value>(&out.stdout).unwrap()["client_secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let instances = (0..n)
            .map(|k| {
                shared.instance(
                    &((b'a' + k as u8) as char).to_string(),
                    "http://127.0.0.1:1",
                )
            })
            .collect();
        Rig {
            instances,
            redis,
            relay,
            rs_secret,
            shared,
        }
    }

    /// The base URL of instance `k` (modulo their number: round robin).
    pub fn url(&self, k: usize) -> &str {
        &self.instances[k % self.instances.len()].url
    }

    pub fn urls(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.url.clone()).collect()
    }

    /// A token-mode login on instance `k`: (access token, refresh token).
    pub fn token_login(&self, k: usize) -> (String, String) {
        let a = send(
            http()
                .post(format!("{}/auth/login", self.url(k)))
                .json(&json!({"username": "alice", "password": PW, "mode": "token"})),
        );
        (
            field(&a, "access_token", "token login"),
            field(&a, "refresh_token", "token login"),
        )
    }

    /// A session login on instance `k`: the session token.
    pub fn session_login(&self, k: usize) -> String {
        let a = send(
            http()
                .post(format!("{}/auth/login", self.url(k)))
                .json(&json!({"username": "alice", "password": PW})),
        );
        field(&a, "session_token", "session login")
    }

    /// RFC 7662 introspection of `token` by `rs` on instance `k`.
    pub fn introspect(&self, k: usize, token: &str) -> Answer {
        send(
            http()
                .post(format!("{}/oauth2/introspect", self.url(k)))
                .basic_auth("rs", Some(&self.rs_secret))
                .form(&[("token", token)]),
        )
    }

    /// Whether `token` is active by introspection on instance `k`; panics on any failure.
    pub fn active(&self, k: usize, token: &str) -> bool {
        match self.introspect(k, token) {
            Ok((200, body)) => body["active"] == true,
            other => panic!("introspection: {}", shown(&other)),
        }
    }

    /// `/auth/me` with `token` on every instance, polled for [`WITHIN`] until all refuse it
    /// (401): `Some(false)`. `Some(true)` if every instance accepted it (200) throughout;
    /// `None` if they disagree (or fail) at the end.
    pub fn accepted(&self, token: &str) -> (Option<bool>, Vec<String>) {
        let start = Instant::now();
        let mut all_accepted = true;
        loop {
            let answers: Vec<Answer> = self.instances.iter().map(|i| me(&i.url, token)).collect();
            let shown: Vec<String> = self
                .instances
                .iter()
                .zip(&answers)
                .map(|(i, a)| format!("{}: {}", i.name, shown(a)))
                .collect();
            if answers.iter().all(|a| matches!(a, Ok((401, _)))) {
                return (Some(false), shown);
            }
            all_accepted &= answers.iter().all(|a| matches!(a, Ok((200, _))));
            if start.elapsed() >= WITHIN {
                return (all_accepted.then_some(true), shown);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/auth/me` with each of `tokens` on every instance until every instance refuses
    /// every one (401). `Ok(time since since)` if that came within `within` of `since`;
    /// otherwise what was still accepted then, and what became of it in the next 4 s.
    pub fn refused_everywhere(
        &self,
        tokens: &[(&str, &str)],
        since: Instant,
        within: Duration,
    ) -> Result<Duration, String> {
        // (instance, token) pairs not refused yet, with their last answer.
        let mut pending: Vec<(usize, usize, String)> = (0..self.instances.len())
            .flat_map(|i| (0..tokens.len()).map(move |t| (i, t, "not asked".to_owned())))
            .collect();
        let mut at_deadline: Option<Vec<(usize, usize, String)>> = None;
        let give_up = within + Duration::from_secs(4);
        loop {
            for p in &mut pending {
                if since.elapsed() >= give_up {
                    // An instance that does not answer could make a round last minutes.
                    break;
                }
                let a = me(&self.instances[p.0].url, tokens[p.1].1);
                p.2 = if matches!(a, Ok((401, _))) {
                    String::new()
                } else {
                    shown(&a)
                };
            }
            pending.retain(|p| !p.2.is_empty());
            let elapsed = since.elapsed();
            if pending.is_empty() && at_deadline.is_none() {
                return Ok(elapsed);
            }
            if elapsed >= within && at_deadline.is_none() {
                at_deadline = Some(pending.clone());
            }
            if pending.is_empty() || elapsed >= give_up {
                let late = at_deadline.unwrap();
                let late_tokens: std::collections::BTreeSet<usize> =
                    late.iter().map(|p| p.1).collect();
                let names: Vec<&str> = late_tokens.iter().map(|t| tokens[*t].0).collect();
                let detail: Vec<String> = late
                    .iter()
                    .map(|p| format!("{} on {}: {}", tokens[p.1].0, self.instances[p.0].name, p.2))
                    .collect();
                let after = if pending.is_empty() {
                    format!("all refused {elapsed:?} after")
                } else {
                    format!(
                        "{} pairs still not refused {elapsed:?} after",
                        pending.len()
                    )
                };
                return Err(format!(
                    "{} of {} tokens still accepted somewhere {within:?} after ({}); {after}: {}",
                    names.len(),
                    tokens.len(),
                    names.join(", "),
                    detail.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until every instance says it is ready (both stores); how long that took.
    pub fn wait_ready(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        for i in &self.instances {
            loop {
                let a = readyz(&i.url);
                if matches!(&a, Ok((200, body)) if body["status"] == "ready") {
                    break;
                }
                assert!(
                    start.elapsed() < limit,
                    "instance {} not ready {limit:?} after the outage: {}",
                    i.name,
                    shown(&a)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        start.elapsed()
    }

    /// The instances whose log contains `needle`.
    pub fn logs_with(&self, needle: &str) -> Vec<String> {
        self.instances
            .iter()
            .filter(|i| i.log_text().contains(needle))
            .map(|i| i.name.clone())
            .collect()
    }

    pub fn begin(&mut self, outage: Outage) {
        match outage {
            Outage::PostgresCut => self.relay.cut(),
            Outage::PostgresBlackhole => self.relay.blackhole(),
            Outage::RedisKilled => self.redis.kill(),
            Outage::RedisStopped => self.redis.stop(),
        }
    }

    /// Ends `outage`; returns when the store answers again (Redis: PING).
    pub fn end(&mut self, outage: Outage) {
        match outage {
            Outage::PostgresCut | Outage::PostgresBlackhole => self.relay.restore(),
            Outage::RedisKilled => self.redis.restart(),
            Outage::RedisStopped => self.redis.cont(),
        }
    }
}
