//! tessera-verify against a live tessera (the real server on port 0): discovery, local
//! verification, a key rotation picked up without a restart, and a flood of unknown `kid`s that
//! costs at most one JWKS fetch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::sync::Arc;

use serde_json::{Value, json};
use tessera_core::{MasterKey, Stores as _};
use tessera_server::{AppState, Config};
use tessera_store::MemoryStore;
use tessera_testkit::Relay;
use tessera_verify::{Audience, DiscoverError, Options, Verifier, VerifyError};

const PW: &str = "correct horse battery";

struct Live {
    url: String,
    state: AppState<MemoryStore>,
}

async fn live() -> Live {
    live_with(|_| {}).await
}

/// A live server whose configuration `tweak` adjusts.
async fn live_with(tweak: impl FnOnce(&mut Config)) -> Live {
    let mut config = Config::default();
    tweak(&mut config);
    config.password.hash_concurrency = 2;
    let local = tessera_testkit::start(
        config,
        MemoryStore::new(),
        Arc::new(tessera_jose::SystemClock),
        MasterKey::from_bytes(&[7u8; 32]).unwrap(),
    )
    .await
    .unwrap();
    local.state.auth.create_user("alice", PW).await.unwrap();
    Live {
        url: local.url,
        state: local.state,
    }
}

async fn access_token(url: &str) -> String {
    token_of(url, "alice").await
}

/// A token-mode login's access token for `user`.
async fn token_of(url: &str, user: &str) -> String {
    login_as(url, user, "token").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A verifier of `url`'s tokens for `audience`.
async fn verifier(url: &str, audience: &str) -> Verifier {
    Verifier::discover(url, options(audience)).await.unwrap()
}

fn options(audience: &str) -> Options {
    Options {
        audience: Audience::Required(audience.into()),
        ..Options::default()
    }
}

fn kid_of(token: &str) -> String {
    let d = tessera_jose::dangerous::decode_unverified(token, 8192).unwrap();
    d.header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_locally_and_checks_claims_and_scopes() {
    let live = live().await;
    let token = access_token(&live.url).await;
    let v = verifier(&live.url, &live.url).await;
    assert_eq!(v.issuer(), live.url);
    let t = v.verify(&token).await.unwrap();
    assert!(t.claims.sub.as_deref().unwrap().starts_with("usr_"));
    Verifier::require_scopes(&t, &["openid"]).unwrap();
    let e = Verifier::require_scopes(&t, &["admin"]).unwrap_err();
    assert_eq!(e.code(), "insufficient_scope");
    // Another audience, a tampered token, garbage: refused, with the RFC 6750 code.
    let other = verifier(&live.url, "https://elsewhere").await;
    assert!(matches!(
        other.verify(&token).await,
        Err(VerifyError::Invalid(tessera_jose::Error::WrongAudience))
    ));
    let mut tampered = token.clone().into_bytes();
    let at = tampered.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let e = v
        .verify(std::str::from_utf8(&tampered).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_token");
    assert!(v.verify("not a token").await.is_err());
    // Verification is local: one JWKS fetch for all of it.
    assert_eq!(v.jwks_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_is_picked_up_without_a_restart() {
    let live = live().await;
    let v = verifier(&live.url, &live.url).await;
    let before = access_token(&live.url).await;
    v.verify(&before).await.unwrap();
    // A new key that signs at once (a second later, so it is the newest).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let now = live.state.auth.now();
    live.state
        .keys
        .rotate(tessera_jose::Algorithm::ES256, now, 0)
        .await
        .unwrap();
    let after = access_token(&live.url).await;
    assert_ne!(kid_of(&before), kid_of(&after));
    let t = v.verify(&after).await.unwrap();
    assert_eq!(t.header.alg, tessera_jose::Algorithm::ES256);
    assert_eq!(v.jwks_fetches(), 2, "one refetch for the new kid");
    // The old key is still published: tokens it signed still verify.
    v.verify(&before).await.unwrap();
    assert_eq!(v.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_at_most_one_fetch() {
    let live = live().await;
    let v = verifier(&live.url, &live.url).await;
    let token = access_token(&live.url).await;
    let (_, rest) = token.split_once('.').unwrap();
    for i in 0..500 {
        let header = tessera_jose::b64::encode(
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": format!("random-{i}")})
                .to_string()
                .as_bytes(),
        );
        let forged = format!("{header}.{rest}");
        assert!(matches!(
            v.verify(&forged).await,
            Err(VerifyError::Invalid(tessera_jose::Error::UnknownKey))
        ));
    }
    assert!(v.jwks_fetches() <= 2, "{} fetches", v.jwks_fetches());
    // And good tokens still verify throughout.
    v.verify(&token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_refuses_what_it_cannot_trust() {
    let live = live().await;
    // Plain HTTP off loopback.
    assert!(matches!(
        Verifier::discover("http://auth.example.com", options("x")).await,
        Err(DiscoverError::Invalid(_))
    ));
    // A document naming another issuer (the same server reached under another name).
    let aliased = live.url.replace("127.0.0.1", "localhost");
    assert!(matches!(
        Verifier::discover(&aliased, options("x")).await,
        Err(DiscoverError::Invalid(_))
    ));
    // Nothing listening.
    assert!(matches!(
        Verifier::discover("http://127.0.0.1:9", options("x")).await,
        Err(DiscoverError::Fetch { .. })
    ));
}

/// An issuer in front of the live one that serves its JWKS with `Cache-Control: max-age=SECS`
/// and counts the JWKS requests.
async fn fronted(live: &Live, max_age: u64) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (jwks_url, me) = (format!("{}/.well-known/jwks.json", live.url), url.clone());
    let counter = Arc::clone(&hits);
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || {
                let me = me.clone();
                async move { axum::Json(json!({"issuer": me, "jwks_uri": format!("{me}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let (jwks_url, counter) = (jwks_url.clone(), Arc::clone(&counter));
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = reqwest::get(&jwks_url).await.unwrap().text().await.unwrap();
                    (
                        [("cache-control", format!("public, max-age={max_age}"))],
                        body,
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_refreshed_when_their_max_age_runs_out() {
    let live = live().await;
    let token = access_token(&live.url).await;
    let (issuer, hits) = fronted(&live, 1).await;
    let v = Verifier::discover(
        &issuer,
        Options {
            audience: Audience::Any,
            min_cache: std::time::Duration::ZERO,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    // The fronting issuer is another `iss`: check signatures only through it.
    let _ = v.verify(&token).await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Within max-age: no fetch. Past it: one background refresh on the next verification.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let _ = v.verify(&token).await;
    let start = std::time::Instant::now();
    while hits.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(3),
            "no refresh after max-age"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A long max-age (150 s from tessera itself: half its key activation delay) is honoured:
    // no refresh within it.
    let direct = verifier(&live.url, &live.url).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    direct.verify(&token).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(direct.jwks_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_extractor_and_layer_answer_as_rfc6750_says() {
    use axum::routing::get;
    use tessera_verify::http::{Bearer, VerifyLayer};
    let live = live().await;
    let token = access_token(&live.url).await;
    let v = verifier(&live.url, &live.url).await;
    let whoami = |Bearer(t): Bearer| async move { t.claims.sub.unwrap_or_default() };
    let app = axum::Router::new()
        .route("/me", get(whoami))
        .route(
            "/admin",
            get(whoami).layer(VerifyLayer::new(v.clone()).require_scopes(["admin"])),
        )
        .route(
            "/open",
            get(whoami).layer(VerifyLayer::new(v.clone()).require_scopes(["openid"])),
        )
        .with_state(v);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rs = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let call = |path: &str, auth: Option<&str>| {
        let mut r = http.get(format!("{rs}{path}"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let res = call("/me", Some(&format!("Bearer {token}"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().starts_with("usr_"));
    let res = call("/open", Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for (path, auth, status, challenge) in [
        ("/me", None, 401, "Bearer"),
        (
            "/me",
            Some("Bearer nope".to_owned()),
            401,
            "Bearer error=\"invalid_token\"",
        ),
        ("/me", Some("Basic eDp5".to_owned()), 401, "Bearer"),
        (
            "/admin",
            Some(format!("Bearer {token}")),
            403,
            "Bearer error=\"insufficient_scope\", scope=\"admin\"",
        ),
        ("/admin", None, 401, "Bearer"),
    ] {
        let res = call(path, auth.as_deref()).await.unwrap();
        assert_eq!(res.status(), status, "{path} {auth:?}");
        assert_eq!(res.headers()["www-authenticate"], challenge);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_larger_than_a_mebibyte_is_refused() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let me = url.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || {
                let me = me.clone();
                async move { axum::Json(json!({"issuer": me, "jwks_uri": format!("{me}/jwks")})) }
            }),
        )
        .route("/jwks", get(|| async { " ".repeat(2 * 1024 * 1024) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let e = Verifier::discover(&url, options("x")).await.unwrap_err();
    assert!(
        matches!(&e, DiscoverError::Fetch { reason, .. } if reason.contains("larger than")),
        "{e}"
    );
}

// ---- the revocation feed ----

const API: &str = "https://api.test";

/// Registers `rs`, a confidential client that may exchange session tokens for `API` tokens
/// and follow the feed; its secret.
async fn feed_client(live: &Live) -> String {
    use tessera_core::{ClientStore, NewClient};
    let (client, secret) = NewClient {
        id: "rs".into(),
        grants: vec!["token-exchange".into()],
        scope: "openid".into(),
        audience: vec![API.into()],
        ..NewClient::default()
    }
    .build("tessera", live.state.auth.now())
    .unwrap();
    live.state
        .auth
        .store()
        .clients()
        .create_client(&client)
        .await
        .unwrap();
    secret.unwrap().expose().to_owned()
}

async fn login_as(url: &str, user: &str, mode: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{url}/auth/login"))
        .json(&json!({"username": user, "password": PW, "mode": mode}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A session token of `user`, and an `API` access token exchanged for it (carrying its `sid`).
async fn session_and_exchanged(url: &str, user: &str, secret: &str) -> (String, String) {
    let res = reqwest::Client::new()
        .post(format!("{url}/auth/login"))
        .json(&json!({"username": user, "password": PW}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let body: Value = reqwest::Client::new()
        .post(format!("{url}/oauth2/token"))
        .basic_auth("rs", Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={session}&subject_token_type=urn:tessera:params:oauth:token-type:session"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (session, body["access_token"].as_str().unwrap().to_owned())
}

fn feed(secret: &str) -> tessera_verify::FeedOptions {
    tessera_verify::FeedOptions::new("rs", secret)
}

/// Polls `v` until it refuses `token` as revoked; how long that took.
async fn until_revoked(v: &Verifier, token: &str) -> std::time::Duration {
    let start = std::time::Instant::now();
    loop {
        match v.verify(token).await {
            Err(VerifyError::Revoked) => return start.elapsed(),
            Ok(_) => {}
            Err(e) => panic!("refused for another reason: {e}"),
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "not refused within a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn post_bearer(url: &str, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_an_ended_session_and_a_disabled_user_are_refused_within_a_second() {
    let live = live().await;
    live.state.auth.create_user("bob", PW).await.unwrap();
    let secret = feed_client(&live).await;
    let first_party = verifier(&live.url, &live.url).await;
    first_party.follow_revocations(feed(&secret)).await.unwrap();
    assert!(first_party.revocation_feed_live());
    let api = verifier(&live.url, API).await;
    api.follow_revocations(feed(&secret)).await.unwrap();

    // A revoked access token (logout with it: its jti, and its refresh family).
    let access = token_of(&live.url, "alice").await;
    first_party.verify(&access).await.unwrap();
    assert_eq!(post_bearer(&live.url, "/auth/logout", &access).await, 204);
    until_revoked(&first_party, &access).await;

    // An ended session: the token exchanged for it carries its sid.
    let (session, exchanged) = session_and_exchanged(&live.url, "alice", &secret).await;
    let t = api.verify(&exchanged).await.unwrap();
    assert!(t.claims.sid.is_some());
    assert_eq!(post_bearer(&live.url, "/auth/logout", &session).await, 204);
    until_revoked(&api, &exchanged).await;

    // A disabled user: every token of theirs issued until then.
    let bobs = token_of(&live.url, "bob").await;
    let (_, bobs_api) = session_and_exchanged(&live.url, "bob", &secret).await;
    first_party.verify(&bobs).await.unwrap();
    live.state.auth.set_disabled("bob", true).await.unwrap();
    until_revoked(&first_party, &bobs).await;
    until_revoked(&api, &bobs_api).await;
    // Enabled again at once, a new login's tokens are good (issued after the second of the
    // revocation, which whole-second `iat`s cannot tell apart).
    live.state.auth.set_disabled("bob", false).await.unwrap();
    first_party
        .verify(&token_of(&live.url, "bob").await)
        .await
        .unwrap();
    assert!(matches!(
        first_party.verify(&bobs).await,
        Err(VerifyError::Revoked)
    ));

    // All of it without a single introspection call.
    let metrics = reqwest::get(format!("{}/metrics", live.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("/oauth2/introspect"), "{metrics}");
    assert!(
        metrics.contains("tessera_revocation_feed_followers 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_is_for_confidential_clients_and_needs_an_issuer_that_has_one() {
    let live = live().await;
    let secret = feed_client(&live).await;
    let v = verifier(&live.url, &live.url).await;
    assert!(v.follow_revocations(feed("tsc_wrong")).await.is_err());
    assert!(!v.revocation_feed_live());
    let res = reqwest::get(format!("{}/oauth2/revocations", live.url))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    v.follow_revocations(feed(&secret)).await.unwrap();
    assert!(v.follow_revocations(feed(&secret)).await.is_err(), "twice");
}

/// A live server whose issuer URL is a relay in front of it (discovery, JWKS and the feed all
/// go through the relay).
async fn live_behind_relay() -> (Live, Relay, String) {
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", front.local_addr().unwrap());
    let live = live_with(|c| c.issuer = Some(issuer.clone())).await;
    let relay = Relay::on(front, live.url.strip_prefix("http://").unwrap());
    (live, relay, issuer)
}

async fn wait_for(what: &str, limit: std::time::Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_cut_and_restored_misses_nothing_and_the_loss_policy_applies_meanwhile() {
    use tessera_verify::WhenLost;
    let (live, relay, front) = live_behind_relay().await;
    let secret = feed_client(&live).await;
    let opts = |when_lost| tessera_verify::FeedOptions {
        grace: std::time::Duration::from_secs(1),
        when_lost,
        silence: std::time::Duration::from_secs(2),
        retry: std::time::Duration::from_millis(100),
        ..feed(&secret)
    };
    let closed = verifier(&front, &front).await;
    closed
        .follow_revocations(opts(WhenLost::Refuse))
        .await
        .unwrap();
    let open = verifier(&front, &front).await;
    open.follow_revocations(opts(WhenLost::Allow))
        .await
        .unwrap();

    let t0 = access_token(&live.url).await;
    assert_eq!(post_bearer(&live.url, "/auth/logout", &t0).await, 204);
    until_revoked(&closed, &t0).await;
    assert_eq!(closed.revocation_feed_stats(), (1, 1));
    let t1 = access_token(&live.url).await;
    let t2 = access_token(&live.url).await;
    closed.verify(&t1).await.unwrap();

    relay.cut();
    let limit = std::time::Duration::from_secs(1);
    wait_for("the cut noticed", limit, || !closed.revocation_feed_live()).await;
    // Within the grace period, checks go on with the revocations held.
    closed.verify(&t2).await.unwrap();
    assert!(matches!(
        closed.verify(&t0).await,
        Err(VerifyError::Revoked)
    ));
    // A revocation made while the feed is cut.
    assert_eq!(post_bearer(&live.url, "/auth/logout", &t1).await, 204);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // Past the grace: fail closed refuses everything, fail open accepts on what it holds.
    assert!(matches!(
        closed.verify(&t2).await,
        Err(VerifyError::FeedLost)
    ));
    assert!(matches!(
        closed.verify(&t1).await,
        Err(VerifyError::FeedLost)
    ));
    open.verify(&t2).await.unwrap();
    open.verify(&t1).await.unwrap();

    relay.restore();
    let limit = std::time::Duration::from_secs(3);
    wait_for("the feed back", limit, || {
        closed.revocation_feed_live() && open.revocation_feed_live()
    })
    .await;
    // Nothing missed: the revocation made during the cut is refused by both.
    assert!(matches!(
        closed.verify(&t1).await,
        Err(VerifyError::Revoked)
    ));
    assert!(matches!(open.verify(&t1).await, Err(VerifyError::Revoked)));
    closed.verify(&t2).await.unwrap();
    // The reconnection resumed from its cursor: one new event, not every revocation again.
    let (applied, connects) = closed.revocation_feed_stats();
    assert_eq!(applied, 2);
    assert!(connects >= 2);
}

/// A live server whose access tokens live `secs` seconds, and a verifier with no leeway.
async fn short_lived(secs: u64) -> (Live, Verifier) {
    let live = live_with(|c| {
        c.tokens.access_ttl = tessera_server::config::Dur(std::time::Duration::from_secs(secs));
    })
    .await;
    let strict = Options {
        leeway: 0,
        ..options(&live.url)
    };
    let v = Verifier::discover(&live.url, strict).await.unwrap();
    (live, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_holds_only_revocations_whose_tokens_have_not_expired() {
    // Tokens of 5 s: long enough to outlive the 21 requests below on a busy machine.
    let (live, v) = short_lived(5).await;
    let secret = feed_client(&live).await;
    v.follow_revocations(feed(&secret)).await.unwrap();
    // One login and 20 refreshes: 21 live access tokens of one family, all revoked at once when
    // the family is killed (logout with the last).
    let mut t = login_as(&live.url, "alice", "token").await;
    for _ in 0..20 {
        t = reqwest::Client::new()
            .post(format!("{}/oauth2/token", live.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=refresh_token&client_id=tessera&refresh_token={}",
                t["refresh_token"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    let last = t["access_token"].as_str().unwrap();
    assert_eq!(post_bearer(&live.url, "/auth/logout", last).await, 204);
    let limit = std::time::Duration::from_secs(1);
    wait_for("21 revocations held", limit, || v.revocations_held() == 21).await;
    // Once the tokens they cover have expired, the revocations are forgotten.
    let limit = std::time::Duration::from_secs(7);
    wait_for("the set emptied", limit, || v.revocations_held() == 0).await;
    assert_eq!(v.revocation_feed_stats().0, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sent_again_skips_the_signature_check_but_not_its_expiry() {
    // Whole-second times: a 2 s token is good for at least a second after it is issued.
    let (live, v) = short_lived(2).await;
    let token = access_token(&live.url).await;
    for _ in 0..100 {
        v.verify(&token).await.unwrap();
    }
    assert_eq!(v.signature_checks(), 1);
    // Remembered, but expired: refused all the same.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert!(matches!(
        v.verify(&token).await,
        Err(VerifyError::Invalid(tessera_jose::Error::Expired))
    ));
    assert_eq!(v.signature_checks(), 1);
    // Without the cache, every use is checked.
    let uncached = Verifier::discover(
        &live.url,
        Options {
            verified_cache: 0,
            ..options(&live.url)
        },
    )
    .await
    .unwrap();
    let token = access_token(&live.url).await;
    for _ in 0..3 {
        uncached.verify(&token).await.unwrap();
    }
    assert_eq!(uncached.signature_checks(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_whose_own_copy_is_stale_counts_as_a_lost_feed() {
    let live = live().await;
    let secret = feed_client(&live).await;
    let v = verifier(&live.url, &live.url).await;
    v.follow_revocations(feed(&secret)).await.unwrap();
    assert!(v.revocation_feed_live());
    // The issuer's own change feed is lost: its next heartbeat says `stale`.
    let heartbeat = std::time::Duration::from_secs(7);
    live.state.denylist.set_fresh(false);
    wait_for("stale noticed", heartbeat, || !v.revocation_feed_live()).await;
    live.state.denylist.set_fresh(true);
    wait_for("fresh again", heartbeat, || v.revocation_feed_live()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_needs_an_audience_chosen_by_name() {
    let live = live().await;
    // Forgetting the audience (the default) or giving an empty one: refused, naming the fix.
    for audience in [Audience::Unset, Audience::Required(String::new())] {
        let e = Verifier::discover(
            &live.url,
            Options {
                audience,
                ..Options::default()
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DiscoverError::NoAudience), "{e}");
        assert!(e.to_string().contains("Audience::Required"), "{e}");
    }
    let e = Verifier::discover(&live.url, Options::default())
        .await
        .unwrap_err();
    assert!(matches!(e, DiscoverError::NoAudience), "{e}");
    // Any audience, asked for by name: a token for this issuer's own audience passes.
    let any = Verifier::discover(
        &live.url,
        Options {
            audience: Audience::Any,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    any.verify(&access_token(&live.url).await).await.unwrap();
    // A named audience: only tokens naming it.
    let other = verifier(&live.url, "https://other.example").await;
    assert!(other.verify(&access_token(&live.url).await).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_urls_are_judged_as_parsed_and_redirects_are_not_followed() {
    let live = live().await;
    let port = live.url.rsplit(':').next().unwrap().to_owned();
    // Looks like loopback, goes to evil.example (user `localhost`, password PORT): refused
    // before any request, as is any URL with user information.
    for issuer in [
        format!("http://localhost:{port}@evil.example"),
        format!("http://user@127.0.0.1:{port}"),
        format!("https://user:pass@127.0.0.1:{port}"),
    ] {
        let e = Verifier::discover(&issuer, options("x")).await.unwrap_err();
        assert!(matches!(e, DiscoverError::Invalid(_)), "{issuer}: {e}");
    }
    // A loopback issuer that answers with a redirect (here to the real issuer): not followed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}", listener.local_addr().unwrap());
    let target = format!("{}/.well-known/oauth-authorization-server", live.url);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    let e = Verifier::discover(&redirector, options("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, DiscoverError::Fetch { .. }), "{e}");
    assert!(e.to_string().contains("302"), "{e}");
}
