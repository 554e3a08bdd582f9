//! The HTTP contract of the first half of `tessera serve`, end to end: the real server on port
//! 0, a real HTTP client, memory and SQLite stores, time moved by an injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tessera_core::{KeyStore, MasterKey, SessionStore, Stores, UserStore};
use tessera_jose::ManualClock;
use tessera_server::{AppState, Config};
use tessera_store::{MemoryStore, SqliteStore};

const PW: &str = "correct horse battery";
const T0: i64 = 1_800_000_000;

struct App<S> {
    url: String,
    clock: ManualClock,
    state: AppState<S>,
    http: reqwest::Client,
    cookie_name: &'static str,
}

fn config() -> Config {
    let mut c = Config::default();
    // Fast enough for tests, still at the floor the policy demands.
    c.password.hash_concurrency = 2;
    c
}

async fn spawn_with<S: Stores + Clone>(config: Config, store: S) -> App<S> {
    let clock = ManualClock::new(T0);
    let master = MasterKey::from_bytes(&[42u8; 32]).unwrap();
    let local = tessera_testkit::start(config, store, Arc::new(clock.clone()), master)
        .await
        .unwrap();
    let cookie_name = local.state.settings.cookie_name;
    App {
        url: local.url,
        clock,
        state: local.state,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        cookie_name,
    }
}

async fn spawn(config: Config) -> App<MemoryStore> {
    let s = MemoryStore::new();
    spawn_with(config, s).await
}

async fn spawn_sqlite(config: Config) -> App<SqliteStore> {
    let s = SqliteStore::open("sqlite::memory:").await.unwrap();
    spawn_with(config, s).await
}

struct Login {
    token: String,
    set_cookie: String,
    body: Value,
}

impl<S: Stores> App<S> {
    async fn user(&self, name: &str) {
        self.state.auth.create_user(name, PW).await.unwrap();
    }

    async fn login_raw(&self, body: Value, headers: HeaderMap) -> reqwest::Response {
        self.http
            .post(format!("{}/auth/login", self.url))
            .headers(headers)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, name: &str) -> Login {
        let res = self
            .login_raw(json!({"username": name, "password": PW}), HeaderMap::new())
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let set_cookie = res
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = res.json().await.unwrap();
        Login {
            token: body["session_token"].as_str().unwrap().to_owned(),
            set_cookie,
            body,
        }
    }

    fn cookie(&self, token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("{}={token}", self.cookie_name)).unwrap(),
        );
        h
    }

    fn bearer(&self, token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    async fn get(&self, path: &str, headers: HeaderMap) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .headers(headers)
            .send()
            .await
            .unwrap()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: HeaderMap,
    ) -> reqwest::Response {
        self.http
            .request(method, format!("{}{path}", self.url))
            .headers(headers)
            .send()
            .await
            .unwrap()
    }

    async fn me(&self, headers: HeaderMap) -> StatusCode {
        self.get("/auth/me", headers).await.status()
    }
}

async fn problem(res: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tessera:problem:")
    );
    body
}

/// Runs the scenario `$name` against the memory store and against SQLite.
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(spawn(config()).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(spawn_sqlite(config()).await).await;
            }
        }
    };
}

async fn login_me_logout<S: Stores>(app: App<S>) {
    app.user("Alice").await;
    let l = app.login("alice").await;
    assert!(l.token.starts_with("tss_"));
    assert_eq!(l.body["username"], "alice");
    // Development cookie: loopback http issuer, so no Secure and no __Host- prefix.
    assert!(
        l.set_cookie
            .starts_with(&format!("tessera_session={}; ", l.token)),
        "{}",
        l.set_cookie
    );
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(
            l.set_cookie.contains(attr),
            "{attr} missing: {}",
            l.set_cookie
        );
    }
    let me: Value = app
        .get("/auth/me", app.cookie(&l.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["auth"], "session");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["session_id"], l.body["session_id"]);
    assert_eq!(me["sub"], l.body["sub"]);
    assert_eq!(app.me(app.bearer(&l.token)).await, StatusCode::OK);
    // Logout expires the cookie and ends the session.
    let res = app
        .send(reqwest::Method::POST, "/auth/logout", app.cookie(&l.token))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let expired = res.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        expired.starts_with("tessera_session=;") && expired.contains("Max-Age=0"),
        "{expired}"
    );
    assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(app.bearer(&l.token)).await, StatusCode::UNAUTHORIZED);
}
on_both_stores!(login_me_logout);

async fn sessions_list_end_one_end_others<S: Stores>(app: App<S>) {
    app.user("alice").await;
    app.user("bob").await;
    let a1 = app.login("alice").await;
    let a2 = app.login("alice").await;
    let a3 = app.login("alice").await;
    let b1 = app.login("bob").await;
    let list: Vec<Value> = app
        .get("/auth/sessions", app.cookie(&a1.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 3);
    for s in &list {
        for key in [
            "id",
            "created_at",
            "last_seen_at",
            "expires_at",
            "user_agent",
            "ip",
            "current",
        ] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        assert!(s["id"].as_str().unwrap().starts_with("ses_"));
        // The public handle is never the token.
        assert!(!s.to_string().contains("tss_"));
    }
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], a1.body["session_id"]);

    // Alice cannot end Bob's session: it looks like a session that does not exist.
    let bob_id = b1.body["session_id"].as_str().unwrap();
    problem(
        app.send(
            reqwest::Method::DELETE,
            &format!("/auth/sessions/{bob_id}"),
            app.cookie(&a1.token),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(app.me(app.cookie(&b1.token)).await, StatusCode::OK);

    // End one of her own.
    let a2_id = a2.body["session_id"].as_str().unwrap();
    assert_eq!(
        app.send(
            reqwest::Method::DELETE,
            &format!("/auth/sessions/{a2_id}"),
            app.cookie(&a1.token)
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.me(app.cookie(&a2.token)).await,
        StatusCode::UNAUTHORIZED
    );

    // End all others: a3 ends, a1 stays, Bob is untouched.
    let res: Value = app
        .send(
            reqwest::Method::DELETE,
            "/auth/sessions",
            app.cookie(&a1.token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["ended"], 1);
    assert_eq!(
        app.me(app.cookie(&a3.token)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(app.cookie(&a1.token)).await, StatusCode::OK);
    assert_eq!(app.me(app.cookie(&b1.token)).await, StatusCode::OK);
}
on_both_stores!(sessions_list_end_one_end_others);

async fn idle_and_absolute_expiry<S: Stores>(app: App<S>) {
    app.user("alice").await;
    let l = app.login("alice").await;
    // Idle timeout 30 min: activity keeps it alive...
    for _ in 0..4 {
        app.clock.advance(20 * 60);
        assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::OK);
    }
    // ...31 minutes of silence ends it.
    app.clock.advance(31 * 60);
    assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::UNAUTHORIZED);

    // Absolute timeout 12 h ends a session however active.
    let l = app.login("alice").await;
    let end = app.clock_now() + 12 * 3600;
    while app.clock_now() + 20 * 60 < end {
        app.clock.advance(20 * 60);
        assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::OK);
    }
    app.clock.set(end - 1);
    assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::OK);
    app.clock.set(end);
    assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::UNAUTHORIZED);
}
on_both_stores!(idle_and_absolute_expiry);

impl<S> App<S> {
    fn clock_now(&self) -> i64 {
        tessera_jose::Clock::now(&self.clock)
    }
}

async fn last_seen_written_at_most_once_a_minute<S: Stores>(app: App<S>) {
    app.user("alice").await;
    let l = app.login("alice").await;
    let hash = tessera_core::Token::parse(tessera_core::Kind::Session, &l.token)
        .unwrap()
        .hash();
    let seen = || async {
        app.state
            .auth
            .store()
            .sessions()
            .session(&hash)
            .await
            .unwrap()
            .unwrap()
            .last_seen_at
    };
    app.clock.advance(30);
    assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::OK);
    assert_eq!(seen().await, T0);
    app.clock.advance(31);
    assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::OK);
    assert_eq!(seen().await, T0 + 61);
}
on_both_stores!(last_seen_written_at_most_once_a_minute);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_id_at_every_login_and_never_an_adopted_one() {
    let app = spawn(config()).await;
    app.user("alice").await;
    // A session id the server never issued (well-formed, checksummed) is refused, not adopted.
    let planted = tessera_core::Token::generate(tessera_core::Kind::Session);
    assert_eq!(
        app.me(app.cookie(planted.expose())).await,
        StatusCode::UNAUTHORIZED
    );
    // Logging in while presenting it yields a fresh id; the planted one stays useless.
    let mut h = app.cookie(planted.expose());
    h.insert("user-agent", HeaderValue::from_static("fixation-test"));
    let res = app
        .login_raw(json!({"username": "alice", "password": PW}), h)
        .await;
    let body: Value = res.json().await.unwrap();
    let fresh = body["session_token"].as_str().unwrap();
    assert_ne!(fresh, planted.expose());
    assert_eq!(
        app.me(app.cookie(planted.expose())).await,
        StatusCode::UNAUTHORIZED
    );
    // Two logins, two ids.
    let a = app.login("alice").await;
    let b = app.login("alice").await;
    assert_ne!(a.token, b.token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_id_in_the_url_is_ignored() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let l = app.login("alice").await;
    for q in [
        "session",
        "tessera_session",
        "token",
        "access_token",
        "session_token",
    ] {
        let res = app
            .get(&format!("/auth/me?{q}={}", l.token), HeaderMap::new())
            .await;
        problem(res, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_changes_with_the_cookie_are_refused() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let l = app.login("alice").await;
    let cross = |mut h: HeaderMap, how: &str| {
        match how {
            "origin" => h.insert("origin", HeaderValue::from_static("https://evil.example")),
            _ => h.insert("sec-fetch-site", HeaderValue::from_static("cross-site")),
        };
        h
    };
    for how in ["origin", "fetch"] {
        problem(
            app.send(
                reqwest::Method::POST,
                "/auth/logout",
                cross(app.cookie(&l.token), how),
            )
            .await,
            StatusCode::FORBIDDEN,
        )
        .await;
        problem(
            app.send(
                reqwest::Method::DELETE,
                "/auth/sessions",
                cross(app.cookie(&l.token), how),
            )
            .await,
            StatusCode::FORBIDDEN,
        )
        .await;
        // Login CSRF too.
        let res = app
            .login_raw(
                json!({"username": "alice", "password": PW}),
                cross(HeaderMap::new(), how),
            )
            .await;
        problem(res, StatusCode::FORBIDDEN).await;
    }
    assert_eq!(app.me(app.cookie(&l.token)).await, StatusCode::OK);
    // Same origin passes.
    let mut same = app.cookie(&l.token);
    same.insert("origin", HeaderValue::from_str(&app.url).unwrap());
    same.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    let res = app
        .http
        .put(format!("{}/auth/session/data", app.url))
        .headers(same)
        .json(&json!({"k": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A bearer token is not ambient authority: no origin rule applies.
    let h = cross(app.bearer(&l.token), "origin");
    assert_eq!(
        app.send(reqwest::Method::POST, "/auth/logout", h)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_enumeration() {
    let app = spawn(config()).await;
    app.user("alice").await;
    app.user("carol").await;
    app.state.auth.set_disabled("carol", true).await.unwrap();
    let mut answers = Vec::new();
    for (user, pw) in [
        ("nobody", PW),
        ("alice", "wrong password!"),
        ("carol", PW),
        ("not a valid name!", PW),
    ] {
        let res = app
            .login_raw(json!({"username": user, "password": pw}), HeaderMap::new())
            .await;
        let status = res.status();
        let body = res.text().await.unwrap();
        answers.push((status, body));
    }
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    for a in &answers[1..] {
        assert_eq!(a, &answers[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_grows_answers_429_and_resets() {
    let mut c = config();
    c.throttle.account_free_attempts = 3;
    let app = spawn(c).await;
    app.user("alice").await;
    let bad = || {
        app.login_raw(
            json!({"username": "alice", "password": "wrong password!"}),
            HeaderMap::new(),
        )
    };
    // Three free attempts, counted before the hash: the third starts a 1 s delay, and the
    // next attempt is throttled.
    for _ in 0..3 {
        assert_eq!(bad().await.status(), StatusCode::UNAUTHORIZED);
    }
    let res = bad().await;
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    // Even the right password waits.
    let res = app
        .login_raw(
            json!({"username": "alice", "password": PW}),
            HeaderMap::new(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The delay doubles.
    app.clock.advance(1);
    assert_eq!(bad().await.status(), StatusCode::UNAUTHORIZED);
    let res = bad().await;
    assert_eq!(res.headers().get("retry-after").unwrap(), "2");
    // After the delay, the right password works and clears the account's record.
    app.clock.advance(2);
    app.login("alice").await;
    for _ in 0..3 {
        assert_eq!(bad().await.status(), StatusCode::UNAUTHORIZED);
    }
    // Unknown accounts are throttled the same way (no enumeration through the throttle).
    for _ in 0..4 {
        app.login_raw(
            json!({"username": "ghost", "password": "x"}),
            HeaderMap::new(),
        )
        .await;
    }
    assert_eq!(
        app.login_raw(
            json!({"username": "ghost", "password": "x"}),
            HeaderMap::new()
        )
        .await
        .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let mut c = config();
    c.throttle.ip_free_attempts = 2;
    c.throttle.account_free_attempts = 100;
    let app = spawn(c.clone()).await;
    let from = |ip: &'static str| {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(ip));
        h
    };
    // Not trusted: every request counts against 127.0.0.1, whatever the header says.
    for (i, ip) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
        .into_iter()
        .enumerate()
    {
        app.login_raw(
            json!({"username": format!("u{i}"), "password": "x"}),
            from(ip),
        )
        .await;
    }
    assert_eq!(
        app.login_raw(
            json!({"username": "u9", "password": "x"}),
            from("192.0.2.4")
        )
        .await
        .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Trusted loopback proxy: each forwarded address has its own count.
    c.trusted_proxies = vec![tessera_server::config::IpNet::parse("127.0.0.1").unwrap()];
    let app = spawn(c).await;
    for (i, ip) in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
        .into_iter()
        .enumerate()
    {
        let res = app
            .login_raw(
                json!({"username": format!("u{i}"), "password": "x"}),
                from(ip),
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let l = {
        app.user("alice").await;
        app.login_raw(
            json!({"username": "alice", "password": PW}),
            from("198.51.100.7"),
        )
        .await
    };
    let token = l.json::<Value>().await.unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list: Vec<Value> = app
        .get("/auth/sessions", app.cookie(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["ip"], "198.51.100.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_its_sessions() {
    let app = spawn(config()).await;
    app.user("alice").await;
    app.user("bob").await;
    let a1 = app.login("alice").await;
    let a2 = app.login("alice").await;
    let b = app.login("bob").await;
    app.state.auth.set_disabled("alice", true).await.unwrap();
    assert_eq!(
        app.me(app.cookie(&a1.token)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.me(app.bearer(&a2.token)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(app.cookie(&b.token)).await, StatusCode::OK);
    assert_eq!(
        app.state
            .auth
            .store()
            .sessions()
            .sessions_of(a1.body["sub"].as_str().unwrap())
            .await
            .unwrap()
            .len(),
        0
    );
    // And cannot log in, with the same answer as a wrong password.
    let res = app
        .login_raw(
            json!({"username": "alice", "password": PW}),
            HeaderMap::new(),
        )
        .await;
    problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_data_is_the_callers_own() {
    let app = spawn(config()).await;
    app.user("alice").await;
    app.user("bob").await;
    let a = app.login("alice").await;
    let b = app.login("bob").await;
    let put = |token: &str, body: String| {
        let mut h = app.cookie(token);
        h.insert("content-type", HeaderValue::from_static("application/json"));
        app.http
            .put(format!("{}/auth/session/data", app.url))
            .headers(h)
            .body(body)
            .send()
    };
    let data = json!({"theme": "dark", "cart": [1, 2, 3]});
    assert_eq!(
        put(&a.token, data.to_string()).await.unwrap().status(),
        StatusCode::OK
    );
    let got: Value = app
        .get("/auth/session/data", app.cookie(&a.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, data);
    let other: Value = app
        .get("/auth/session/data", app.cookie(&b.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other, json!({}));
    problem(
        put(&a.token, "[1,2]".into()).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let big = json!({"x": "y".repeat(20_000)}).to_string();
    problem(
        put(&a.token, big).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    problem(
        app.get("/auth/session/data", HeaderMap::new()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_problem() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let raw = |ct: &'static str, body: Vec<u8>| {
        app.http
            .post(format!("{}/auth/login", app.url))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "application/json",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            b"{\"username\":\"alice\",\"password\":\"\xff\xfe\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"{"username":"alice","password":42}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"{"username":"alice","password":"p","admin":true}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"{"username":"alice"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"{"username":"alice","password":"p","mode":"magic"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"[]"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            vec![b' '; 70 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "text/plain",
            br#"{"username":"alice","password":"p"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/x-www-form-urlencoded",
            b"username=alice&password=p".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (ct, body, status) in cases {
        let p = problem(raw(ct, body).await.unwrap(), status).await;
        // A secret sent in the wrong place never comes back in the error.
        assert!(!p.to_string().contains("hunter2"));
    }
    let p = problem(
        raw(
            "application/json",
            br#"{"username":"alice","password":["hunter2"]}"#.to_vec(),
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(!p.to_string().contains("hunter2"), "{p}");
    // Malformed tokens of every kind: 401, never 5xx.
    for t in [
        "",
        "tss_",
        "tss_short",
        &"tss_".repeat(40),
        "Bearer",
        "tsr_AAAA",
        "\u{0}",
    ] {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
            h.insert("authorization", v);
        }
        assert_eq!(app.me(h).await, StatusCode::UNAUTHORIZED);
    }
    problem(
        app.get("/no/such/route", HeaderMap::new()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let p = problem(
        app.send(reqwest::Method::DELETE, "/auth/me", HeaderMap::new())
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    assert_eq!(p["title"], "Method Not Allowed");
    // The server is fine afterwards.
    app.login("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_off_unless_configured() {
    let app = spawn(config()).await;
    let res = app
        .http
        .post(format!("{}/auth/register", app.url))
        .json(&json!({"username": "dave", "password": PW}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::NOT_FOUND).await;

    let mut c = config();
    c.allow_registration = true;
    let app = spawn(c).await;
    let reg = |u: &str, p: &str| {
        app.http
            .post(format!("{}/auth/register", app.url))
            .json(&json!({"username": u, "password": p}))
            .send()
    };
    let res = reg("Dave", PW).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["username"], "dave");
    app.login("dave").await;
    problem(reg("dave", PW).await.unwrap(), StatusCode::CONFLICT).await;
    let p = problem(
        reg("erin", "password").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("common"));
    problem(reg("erin", "short").await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(reg("bad name!", PW).await.unwrap(), StatusCode::BAD_REQUEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_cookie_attributes() {
    let mut c = config();
    c.issuer = Some("https://auth.example.com".into());
    let app = spawn(c).await;
    app.user("alice").await;
    let mut h = HeaderMap::new();
    h.insert(
        "origin",
        HeaderValue::from_static("https://auth.example.com"),
    );
    let res = app
        .login_raw(json!({"username": "alice", "password": PW}), h)
        .await;
    assert_eq!(
        res.headers().get("strict-transport-security").unwrap(),
        "max-age=63072000; includeSubDomains"
    );
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.starts_with("__Host-tessera_session=tss_"),
        "{set_cookie}"
    );
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Lax", "; Path=/"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Domain="));
    // The dev cookie name means nothing to a production server.
    let token = res.json::<Value>().await.unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut dev = HeaderMap::new();
    dev.insert(
        "cookie",
        HeaderValue::from_str(&format!("tessera_session={token}")).unwrap(),
    );
    assert_eq!(app.me(dev).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(app.cookie(&token)).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let app = spawn_sqlite(config()).await;
    assert_eq!(
        app.get("/healthz", HeaderMap::new())
            .await
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    let ready: Value = app
        .get("/readyz", HeaderMap::new())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    app.user("alice").await;
    let l = app.login("alice").await;
    app.me(app.cookie(&l.token)).await;
    app.login_raw(
        json!({"username": "alice", "password": "wrong password!"}),
        HeaderMap::new(),
    )
    .await;
    let m = app
        .get("/metrics", HeaderMap::new())
        .await
        .text()
        .await
        .unwrap();
    for line in [
        "tessera_http_requests_total{route=\"/auth/me\",status=\"200\"} 1",
        "tessera_http_requests_total{route=\"/auth/login\",status=\"401\"} 1",
        "tessera_http_request_duration_seconds_count{route=\"/auth/me\"} 1",
        "tessera_logins_total{result=\"ok\"} 1",
        "tessera_logins_total{result=\"failed\"} 1",
        "tessera_sessions_created_total 1",
        "tessera_active_sessions 1",
    ] {
        assert!(m.contains(line), "missing `{line}` in\n{m}");
    }
    assert!(!m.contains("tss_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_older_hash_parameters_rehashes() {
    let store = MemoryStore::new();
    let old = spawn_with(config(), store.clone()).await;
    old.user("alice").await;
    let before = store
        .user_by_name("alice")
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(before.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    let mut stronger = config();
    stronger.password.iterations = 3;
    let new = spawn_with(stronger, store.clone()).await;
    new.login("alice").await;
    let after = store
        .user_by_name("alice")
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(
        after.starts_with("$argon2id$v=19$m=19456,t=3,p=1$"),
        "{after}"
    );
    // The new hash still opens the account.
    new.login("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_a_408_problem() {
    let mut c = config();
    c.request_timeout = tessera_server::config::Dur(std::time::Duration::from_millis(1));
    let app = spawn(c).await;
    app.user("alice").await;
    // An Argon2id verification takes far longer than a millisecond.
    let res = app
        .login_raw(
            json!({"username": "alice", "password": PW}),
            HeaderMap::new(),
        )
        .await;
    problem(res, StatusCode::REQUEST_TIMEOUT).await;
    assert_eq!(
        app.get("/healthz", HeaderMap::new()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_and_discovery_publish_public_keys_only() {
    let app = spawn_sqlite(config()).await;
    let res = app.get("/.well-known/jwks.json", HeaderMap::new()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0]["kid"].as_str().unwrap().len() > 20);
    assert!(keys[0].get("d").is_none());
    // At rest the private key is sealed: the store holds no "d".
    let stored = app.state.auth.store().keys().signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!String::from_utf8_lossy(&stored[0].sealed).contains("\"d\""));
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let doc: Value = app.get(path, HeaderMap::new()).await.json().await.unwrap();
        assert_eq!(doc["issuer"], app.url);
        assert_eq!(
            doc["jwks_uri"],
            format!("{}/.well-known/jwks.json", app.url)
        );
        assert_eq!(doc["token_endpoint"], format!("{}/oauth2/token", app.url));
        assert_eq!(
            doc["revocation_endpoint"],
            format!("{}/oauth2/revoke", app.url)
        );
        assert_eq!(
            doc["introspection_endpoint"],
            format!("{}/oauth2/introspect", app.url)
        );
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{}/oauth2/authorize", app.url)
        );
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post", "none"])
        );
        assert_eq!(
            doc["grant_types_supported"],
            json!([
                "authorization_code",
                "client_credentials",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(
            doc["access_token_signing_alg_values_supported"],
            json!(["EdDSA"])
        );
    }
}

/// The JWKS carries a strong `ETag`; `If-None-Match` naming it (alone, in a list, weak, or `*`)
/// answers 304 with no body; another tag, 200. A rotation changes the document and its tag. It
/// may be cached for half the activation delay (5 minutes by default: 150 s), and is never
/// cached past a key's activation: with keys signing at once it is `no-cache`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_has_an_etag_and_a_lifetime_tied_to_the_key_schedule() {
    let app = spawn(config()).await;
    let res = app.get("/.well-known/jwks.json", HeaderMap::new()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(res.headers()["cache-control"], "public, max-age=150");
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let body = res.text().await.unwrap();
    let with = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert("if-none-match", value.parse().unwrap());
        h
    };
    for value in [
        etag.clone(),
        format!("\"other\", {etag}"),
        format!("W/{etag}"),
        "*".to_owned(),
    ] {
        let res = app.get("/.well-known/jwks.json", with(&value)).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{value}");
        assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(res.headers()["cache-control"], "public, max-age=150");
        assert!(res.headers().get("content-type").is_none());
        assert!(res.bytes().await.unwrap().is_empty());
    }
    for value in ["\"other\"", "", "W/\"x\", \"y\""] {
        let res = app.get("/.well-known/jwks.json", with(value)).await;
        assert_eq!(res.status(), StatusCode::OK, "{value:?}");
        assert_eq!(res.text().await.unwrap(), body);
    }
    let t = app.clock_now();
    app.state
        .keys
        .rotate(tessera_jose::Algorithm::EdDSA, t, 300)
        .await
        .unwrap();
    let res = app.get("/.well-known/jwks.json", with(&etag)).await;
    assert_eq!(res.status(), StatusCode::OK, "a new key, a new document");
    assert_ne!(res.headers()["etag"].to_str().unwrap(), etag);
    assert_ne!(res.text().await.unwrap(), body);

    let mut c = config();
    c.tokens.key_activation_delay = tessera_server::config::Dur(std::time::Duration::ZERO);
    let now = spawn(c).await;
    let res = now.get("/.well-known/jwks.json", HeaderMap::new()).await;
    assert_eq!(res.headers()["cache-control"], "public, no-cache");
    let mut c = config();
    c.tokens.key_activation_delay =
        tessera_server::config::Dur(std::time::Duration::from_secs(86_400));
    let day = spawn(c).await;
    let res = day.get("/.well-known/jwks.json", HeaderMap::new()).await;
    assert_eq!(res.headers()["cache-control"], "public, max-age=3600");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_published_at_once_signs_after_its_delay_and_retires_late() {
    let app = spawn(config()).await;
    let jwks_kids = || async {
        let v: Value = app
            .get("/.well-known/jwks.json", HeaderMap::new())
            .await
            .json()
            .await
            .unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let first = app
        .state
        .keys
        .ring()
        .signer
        .as_ref()
        .unwrap()
        .kid()
        .to_owned();
    let t = app.clock_now();
    let new = app
        .state
        .keys
        .rotate(tessera_jose::Algorithm::EdDSA, t, 300)
        .await
        .unwrap();
    // Published at once, not signing yet.
    assert_eq!(jwks_kids().await, vec![first.clone(), new.kid.clone()]);
    assert_eq!(app.state.keys.ring().signer.as_ref().unwrap().kid(), first);
    app.clock.set(t + 299);
    app.state.keys.refresh(t + 299).await.unwrap();
    assert_eq!(app.state.keys.ring().signer.as_ref().unwrap().kid(), first);
    // From its activation it signs; the old key stays published for 15 min + 60 s.
    app.clock.set(t + 300);
    app.state.keys.refresh(t + 300).await.unwrap();
    assert_eq!(
        app.state.keys.ring().signer.as_ref().unwrap().kid(),
        new.kid
    );
    assert_eq!(jwks_kids().await.len(), 2);
    app.clock.set(t + 300 + 960 - 1);
    app.state.keys.refresh(t + 300 + 959).await.unwrap();
    assert_eq!(jwks_kids().await.len(), 2);
    app.clock.set(t + 300 + 960);
    app.state.keys.refresh(t + 300 + 960).await.unwrap();
    assert_eq!(jwks_kids().await, vec![new.kid.clone()]);
    let states = app.state.keys.states(t + 300 + 960).await.unwrap();
    assert_eq!(states[0].state, tessera_core::KeyState::Expired);
    assert_eq!(states[1].state, tessera_core::KeyState::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hmac_secret_is_never_published() {
    let mut c = config();
    c.tokens.algorithm = "HS256".into();
    let app = spawn(c).await;
    let jwks: Value = app
        .get("/.well-known/jwks.json", HeaderMap::new())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks, json!({"keys": []}));
    assert_eq!(
        app.state.keys.ring().signer.as_ref().unwrap().algorithm(),
        tessera_jose::Algorithm::HS256
    );
}

// ---- JWT access tokens and refresh tokens ----

struct Tokens {
    access: String,
    refresh: String,
}

impl<S: Stores> App<S> {
    async fn token_login(&self, name: &str) -> Tokens {
        let res = self
            .login_raw(
                json!({"username": name, "password": PW, "mode": "token"}),
                HeaderMap::new(),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].as_i64().unwrap() > 0);
        Tokens {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn form(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn refresh(&self, refresh: &str) -> reqwest::Response {
        self.form(
            "/oauth2/token",
            &format!("grant_type=refresh_token&client_id=tessera&refresh_token={refresh}"),
        )
        .await
    }
}

async fn oauth_error(res: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_login_gives_an_rfc9068_access_token_that_me_accepts() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    assert!(t.refresh.starts_with("tsr_"));
    let raw: Value = app
        .login_raw(
            json!({"username": "alice", "password": PW, "mode": "token"}),
            HeaderMap::new(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(raw["expires_in"], 900);
    let d = tessera_jose::dangerous::decode_unverified(&t.access, 8192).unwrap();
    assert_eq!(d.header["typ"], "at+jwt");
    assert_eq!(d.header["alg"], "EdDSA");
    let c = d.claims.unwrap();
    for k in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "scope",
    ] {
        assert!(c.get(k).is_some(), "{k} missing in {c}");
    }
    assert_eq!(c["iss"], app.url);
    assert_eq!(c["aud"], app.url);
    assert_eq!(c["client_id"], "tessera");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    let me: Value = app
        .get("/auth/me", app.bearer(&t.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["auth"], "jwt");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["client_id"], "tessera");
    assert_eq!(me["scope"], "openid");
    assert_eq!(me["exp"], c["exp"]);
    // A refresh token is not an access token.
    let res = app.get("/auth/me", app.bearer(&t.refresh)).await;
    assert_eq!(
        res.headers().get("www-authenticate").unwrap(),
        "Bearer realm=\"tessera\", error=\"invalid_token\""
    );
    problem(res, StatusCode::UNAUTHORIZED).await;
    // Verifiable with the published JWKS alone, by an independent library.
    let jwks: tessera_jose::JwkSet = app
        .get("/.well-known/jwks.json", HeaderMap::new())
        .await
        .json()
        .await
        .unwrap();
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(serde_json::to_value(&jwks.keys[0]).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[&app.url]);
    v.set_issuer(&[&app.url]);
    v.validate_exp = false; // the server's clock is the test's, not the wall clock
    jsonwebtoken::decode::<Value>(
        &t.access,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &v,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_replay_revokes_the_family() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    let res = app.refresh(&t.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
    let r1: Value = res.json().await.unwrap();
    let next = r1["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, t.refresh);
    assert_eq!(
        app.me(app.bearer(r1["access_token"].as_str().unwrap()))
            .await,
        StatusCode::OK
    );
    // The successor works once.
    app.clock.advance(30);
    let r2: Value = app.refresh(&next).await.json().await.unwrap();
    let third = r2["refresh_token"].as_str().unwrap().to_owned();
    // Replaying the first token, long after its use: theft. The whole family dies.
    oauth_error(
        app.refresh(&t.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    oauth_error(
        app.refresh(&third).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The access tokens the family issued that are still alive die with it (RFC 7009 §2.1):
    // the thief's and the victim's alike.
    for access in [
        &t.access,
        r1["access_token"].as_str().unwrap(),
        r2["access_token"].as_str().unwrap(),
    ] {
        assert_eq!(app.me(app.bearer(access)).await, StatusCode::UNAUTHORIZED);
    }
    let m = app
        .get("/metrics", HeaderMap::new())
        .await
        .text()
        .await
        .unwrap();
    assert!(m.contains("tessera_refresh_reuse_detected_total 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_retry_gets_the_same_successor() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    let first: Value = app.refresh(&t.refresh).await.json().await.unwrap();
    // The answer was lost; the client retries 5 s later with the same token.
    app.clock.advance(5);
    let res = app.refresh(&t.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let retry: Value = res.json().await.unwrap();
    assert_eq!(retry["refresh_token"], first["refresh_token"]);
    // The family is alive: the successor works.
    let succ = first["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(succ).await.status(), StatusCode::OK);
    // Now that the successor is used, the same retry is a replay.
    oauth_error(
        app.refresh(&t.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // Past the grace window a retry is a replay too.
    let t = app.token_login("alice").await;
    app.refresh(&t.refresh).await;
    app.clock.advance(11);
    oauth_error(
        app.refresh(&t.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_refreshes_leave_one_family_and_one_successor() {
    let app = Arc::new(spawn_sqlite(config()).await);
    app.user("alice").await;
    let t = app.token_login("alice").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = Arc::clone(&app);
        let refresh = t.refresh.clone();
        tasks.push(tokio::spawn(async move {
            let res = app.refresh(&refresh).await;
            (res.status(), res.json::<Value>().await.unwrap())
        }));
    }
    let mut successors = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        successors.insert(body["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        successors.len(),
        1,
        "more than one successor: {successors:?}"
    );
    let succ = successors.into_iter().next().unwrap();
    assert_eq!(app.refresh(&succ).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_with_a_bearer_token_denylists_it_and_revokes_the_family() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    let other = app.token_login("alice").await;
    assert_eq!(
        app.send(reqwest::Method::POST, "/auth/logout", app.bearer(&t.access))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let res = app.get("/auth/me", app.bearer(&t.access)).await;
    assert_eq!(
        res.headers().get("www-authenticate").unwrap(),
        "Bearer realm=\"tessera\", error=\"invalid_token\""
    );
    problem(res, StatusCode::UNAUTHORIZED).await;
    oauth_error(
        app.refresh(&t.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // Another login of the same user is untouched.
    assert_eq!(app.me(app.bearer(&other.access)).await, StatusCode::OK);
    assert_eq!(app.refresh(&other.refresh).await.status(), StatusCode::OK);
    // The denylist forgets the entry once the token has expired anyway.
    app.clock.advance(900 + 61);
    let fresh = app.token_login("alice").await;
    app.send(
        reqwest::Method::POST,
        "/auth/logout",
        app.bearer(&fresh.access),
    )
    .await;
    assert_eq!(app.state.denylist.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7009_revocation_of_either_kind() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    let res = app
        .form(
            "/oauth2/revoke",
            &format!(
                "token={}&token_type_hint=refresh_token&client_id=tessera",
                t.refresh
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    oauth_error(
        app.refresh(&t.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let t = app.token_login("alice").await;
    let res = app
        .form(
            "/oauth2/revoke",
            &format!("token={}&client_id=tessera", t.access),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.me(app.bearer(&t.access)).await,
        StatusCode::UNAUTHORIZED
    );
    // Unknown tokens: 200 all the same.
    assert_eq!(
        app.form("/oauth2/revoke", "token=nonsense&client_id=tessera")
            .await
            .status(),
        StatusCode::OK
    );
    oauth_error(
        app.form(
            "/oauth2/revoke",
            "token=x&client_id=tessera&token_type_hint=id_token",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unsupported_token_type",
    )
    .await;
    oauth_error(
        app.form("/oauth2/revoke", "token=x&client_id=someone")
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_revokes_its_refresh_tokens() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    app.state.auth.set_disabled("alice", true).await.unwrap();
    oauth_error(
        app.refresh(&t.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.me(app.bearer(&t.access)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lifetimes_expire() {
    let mut c = config();
    c.tokens.access_ttl = tessera_server::config::Dur(std::time::Duration::from_secs(60));
    c.tokens.refresh_idle = tessera_server::config::Dur(std::time::Duration::from_secs(120));
    c.tokens.refresh_absolute = tessera_server::config::Dur(std::time::Duration::from_secs(300));
    let app = spawn(c).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    app.clock.advance(60 + 59);
    assert_eq!(app.me(app.bearer(&t.access)).await, StatusCode::OK); // leeway
    app.clock.advance(1);
    assert_eq!(
        app.me(app.bearer(&t.access)).await,
        StatusCode::UNAUTHORIZED
    );
    // Idle: unused 120 s, the refresh token is dead.
    let t = app.token_login("alice").await;
    app.clock.advance(120);
    oauth_error(
        app.refresh(&t.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // Absolute: used every 100 s, the family still ends 300 s after login.
    let t = app.token_login("alice").await;
    let mut r = t.refresh.clone();
    for _ in 0..2 {
        app.clock.advance(100);
        let body: Value = app.refresh(&r).await.json().await.unwrap();
        r = body["refresh_token"].as_str().unwrap().to_owned();
    }
    app.clock.advance(100);
    oauth_error(
        app.refresh(&r).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_tokens_valid_and_signs_new_ones_after_the_delay() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let kid = |jwt: &str| {
        tessera_jose::dangerous::decode_unverified(jwt, 8192)
            .unwrap()
            .header["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old = app.token_login("alice").await;
    let t0 = app.clock_now();
    let new = app
        .state
        .keys
        .rotate(tessera_jose::Algorithm::ES256, t0, 120)
        .await
        .unwrap();
    // Before its activation the new key does not sign.
    assert_ne!(kid(&app.token_login("alice").await.access), new.kid);
    app.clock.set(t0 + 120);
    app.state.keys.refresh(t0 + 120).await.unwrap();
    let fresh = app.token_login("alice").await;
    assert_eq!(kid(&fresh.access), new.kid);
    assert_eq!(
        tessera_jose::dangerous::decode_unverified(&fresh.access, 8192)
            .unwrap()
            .header["alg"],
        "ES256"
    );
    // A token signed by the retiring key is still good until it expires.
    assert_eq!(app.me(app.bearer(&old.access)).await, StatusCode::OK);
    assert_eq!(app.me(app.bearer(&fresh.access)).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_are_refused_with_401_and_the_server_stays_healthy() {
    use tessera_jose::b64::encode as b64;
    let app = spawn(config()).await;
    app.user("alice").await;
    let good = app.token_login("alice").await.access;
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let claims = String::from_utf8(tessera_jose::b64::decode(p.as_bytes()).unwrap()).unwrap();
    let header = String::from_utf8(tessera_jose::b64::decode(h.as_bytes()).unwrap()).unwrap();
    let kid = tessera_jose::dangerous::decode_unverified(&good, 8192)
        .unwrap()
        .header["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let jku = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    // An attacker's own key, offered inline and by URL.
    let evil =
        tessera_jose::SigningKey::generate(tessera_jose::Algorithm::EdDSA, Some(&kid)).unwrap();
    let evil_jwk =
        serde_json::to_string(evil.verifying_key().unwrap().public_jwk().unwrap()).unwrap();
    let forge = |header: String, payload: &str, key: &tessera_jose::SigningKey| {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&sig))
    };
    // Key confusion: the published public key used as an HMAC secret.
    let public = app.state.keys.ring().keys.keys()[0].to_spki_der().unwrap();
    let confused = tessera_jose::SigningKey::from_jwk(
        &tessera_jose::Jwk {
            kty: "oct".into(),
            k: Some(b64(&public).into()),
            ..Default::default()
        },
        Some(tessera_jose::Algorithm::HS256),
    )
    .unwrap();
    let admin = claims.replace("\"sub\":\"", "\"sub\":\"x");
    let attacks: Vec<String> = vec![
        format!("{}.{p}.", b64(br#"{"alg":"none","typ":"at+jwt"}"#)),
        format!(
            "{}.{p}.{s}",
            b64(format!(r#"{{"alg":"none","kid":"{kid}","typ":"at+jwt"}}"#).as_bytes())
        ),
        forge(
            format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"at+jwt"}}"#),
            &claims,
            &confused,
        ),
        forge(
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","jwk":{evil_jwk}}}"#),
            &claims,
            &evil,
        ),
        forge(
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","jku":"{jku}"}}"#),
            &claims,
            &evil,
        ),
        forge(
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","x5u":"{jku}"}}"#),
            &claims,
            &evil,
        ),
        format!("{h}.{}.{s}", b64(admin.as_bytes())),
        format!("{h}.{p}=.{s}"),
        format!(
            "{h}.{}.{s}",
            p.replace('-', "+").replace('_', "/").replacen('e', "+", 1)
        ),
        format!("{h} .{p}.{s}"),
        format!("{h}.{p}.{s}{}", "A".repeat(9000)),
        format!(
            "{}.{p}.{s}",
            b64(header.replace("at+jwt", "JWT").as_bytes())
        ),
        "a.b.c.d.e".into(),
        "%%%".into(),
    ];
    for (i, t) in attacks.iter().enumerate() {
        let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) else {
            continue;
        };
        let mut hm = HeaderMap::new();
        hm.insert("authorization", v);
        let res = app.get("/auth/me", hm).await;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "attack {i} was not refused: {t}"
        );
    }
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "a key URL was fetched"
    );
    assert_eq!(app.me(app.bearer(&good)).await, StatusCode::OK);
    assert_eq!(
        app.get("/healthz", HeaderMap::new()).await.status(),
        StatusCode::OK
    );
    let m = app
        .get("/metrics", HeaderMap::new())
        .await
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("tessera_token_verification_failures_total{reason=\"bad_signature\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_errors_are_rfc6749() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let t = app.token_login("alice").await;
    oauth_error(
        app.form(
            "/oauth2/token",
            "grant_type=password&username=alice&password=x&client_id=tessera",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        app.form(
            "/oauth2/token",
            "grant_type=client_credentials&client_id=tessera",
        )
        .await,
        StatusCode::BAD_REQUEST,
        // The first-party public client has no secret: it may not act for itself.
        "unauthorized_client",
    )
    .await;
    oauth_error(
        app.form("/oauth2/token", "client_id=tessera").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    oauth_error(
        app.form(
            "/oauth2/token",
            &format!("grant_type=refresh_token&refresh_token={}", t.refresh),
        )
        .await,
        // No client identified at all (RFC 6749 §5.2).
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    oauth_error(
        app.form(
            "/oauth2/token",
            &format!(
                "grant_type=refresh_token&client_id=other&refresh_token={}",
                t.refresh
            ),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    oauth_error(app.form("/oauth2/token", &format!("grant_type=refresh_token&grant_type=refresh_token&client_id=tessera&refresh_token={}", t.refresh)).await, StatusCode::BAD_REQUEST, "invalid_request").await;
    oauth_error(
        app.form(
            "/oauth2/token",
            "grant_type=refresh_token&client_id=tessera&refresh_token=tsr_bogus",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // Unknown parameters are ignored (RFC 6749 §3.2).
    assert_eq!(
        app.form(
            "/oauth2/token",
            &format!(
                "grant_type=refresh_token&client_id=tessera&refresh_token={}&extra=1",
                t.refresh
            )
        )
        .await
        .status(),
        StatusCode::OK
    );
    let res = app
        .http
        .post(format!("{}/oauth2/token", app.url))
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    oauth_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request").await;
    let res = app
        .http
        .post(format!("{}/oauth2/token", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 70 * 1024])
        .send()
        .await
        .unwrap();
    oauth_error(res, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request").await;
    oauth_error(
        app.get("/oauth2/token", HeaderMap::new()).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_access_token_stays_revoked_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("tessera-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    let first = spawn_with(config(), store.clone()).await;
    first.user("alice").await;
    let t = first.token_login("alice").await;
    assert_eq!(
        first
            .send(
                reqwest::Method::POST,
                "/auth/logout",
                first.bearer(&t.access)
            )
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // A new server process over the same database (same master key) refuses it too.
    let store2 = SqliteStore::open(&url).await.unwrap();
    let second = spawn_with(config(), store2).await;
    assert_eq!(
        second.me(second.bearer(&t.access)).await,
        StatusCode::UNAUTHORIZED
    );
    let fresh = second.token_login("alice").await;
    assert_eq!(
        second.me(second.bearer(&fresh.access)).await,
        StatusCode::OK
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[path = "api/oauth.rs"]
mod oauth;

#[tokio::test]
async fn the_debugger_shows_a_token_and_says_whether_this_server_vouches_for_it() {
    let app = spawn_sqlite(Config::default()).await;
    app.user("alice").await;
    let page = app.get("/debugger", HeaderMap::new()).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"token\""));
    let app = &app;
    let debug = |token: String| {
        let body = serde_urlencoded::to_string([("token", token)]).unwrap();
        async move {
            let res = app.form("/debugger", &body).await;
            (res.status(), res.text().await.unwrap())
        }
    };
    let tokens = app.token_login("alice").await;
    let (status, html) = debug(tokens.access.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<strong>Valid.</strong>"), "{html}");
    assert!(
        html.contains("&quot;alg&quot;") && html.contains("&quot;sub&quot;"),
        "{html}"
    );
    assert!(html.contains("expires in 15 min"), "{html}");
    // Revoked (a Bearer logout): refused, and said so.
    let res = app
        .http
        .post(format!("{}/auth/logout", app.url))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (_, html) = debug(tokens.access.clone()).await;
    assert!(html.contains("<strong>Revoked.</strong>"), "{html}");
    // Signed by someone else, with a claim that would be markup: decoded, escaped, not valid.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "<script>alert(1)</script>", "exp": 4_000_000_000_i64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not this server's"),
    )
    .unwrap();
    let (status, html) = debug(forged).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<strong>Not valid here.</strong>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;") && !html.contains("<script>"),
        "{html}"
    );
    // Opaque tokens are only named; garbage is said to be garbage.
    let (status, html) = debug(tokens.refresh.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("a refresh token"), "{html}");
    let (status, html) = debug("not.a.jwt".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("not a JSON Web Token"), "{html}");
}

#[path = "api/openapi.rs"]
mod openapi;
