//! Hostile input on the OAuth endpoints and pages (issue 15): client credentials that only look
//! valid, forms that are not UTF-8, redirect URIs that hide their host, too many refresh-token
//! families.

use super::*;

impl<S: Stores> App<S> {
    /// POSTs raw bytes as a form, with an optional raw `Authorization` value.
    async fn raw_form(&self, path: &str, auth: Option<&str>, body: &[u8]) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_vec());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn invalid_client(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "{what}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_basic_is_decoded_strictly() {
    let app = spawn(config()).await;
    let secret = app.service("billing", "api:read", &[]).await;
    let cc = b"grant_type=client_credentials";
    // The right secret, its characters percent-encoded: still the right secret (RFC 6749 §2.3.1).
    let encoded: String = secret
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect::<String>();
    let ok = format!("Basic {}", b64(format!("billing:{encoded}").as_bytes()));
    let res = app.raw_form("/oauth2/token", Some(&ok), cc).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Whatever follows `&` is part of the secret, not another parameter to drop.
    for (what, auth) in [
        (
            "secret&junk",
            format!(
                "Basic {}",
                b64(format!("billing:{secret}&junk=1").as_bytes())
            ),
        ),
        (
            "secret&",
            format!("Basic {}", b64(format!("billing:{secret}&").as_bytes())),
        ),
        (
            "id&junk",
            format!("Basic {}", b64(format!("billing&x=1:{secret}").as_bytes())),
        ),
        ("bad base64", "Basic !!!notbase64".to_owned()),
        ("no colon", format!("Basic {}", b64(b"billing"))),
        (
            "bad percent",
            format!("Basic {}", b64(format!("billing:{secret}%zz").as_bytes())),
        ),
        (
            "cut percent",
            format!("Basic {}", b64(format!("billing:{secret}%4").as_bytes())),
        ),
        (
            "percent non-UTF-8",
            format!("Basic {}", b64(format!("billing:{secret}%ff").as_bytes())),
        ),
        (
            "raw non-UTF-8",
            format!(
                "Basic {}",
                b64(&[b"billing:".as_slice(), secret.as_bytes(), b"\xff"].concat())
            ),
        ),
        (
            "empty id",
            format!("Basic {}", b64(format!(":{secret}").as_bytes())),
        ),
        ("not basic", "Bearer x".to_owned()),
    ] {
        for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
            let body: &[u8] = if path == "/oauth2/token" {
                cc
            } else {
                b"token=x"
            };
            invalid_client(
                app.raw_form(path, Some(&auth), body).await,
                &format!("{path} {what}"),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_any_form_is_a_400() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let secret = app.service("billing", "api:read", &[]).await;
    let auth = format!("Basic {}", b64(format!("billing:{secret}").as_bytes()));
    for body in [
        &b"token=%ff"[..],
        b"token=\xff\xfe",
        b"token=x&%ff=1",
        b"token=x&junk=%C3%28",
        b"token=%zz",
    ] {
        for path in ["/oauth2/introspect", "/oauth2/revoke"] {
            oauth_error(
                app.raw_form(path, Some(&auth), body).await,
                StatusCode::BAD_REQUEST,
                "invalid_request",
            )
            .await;
        }
        let mut token = b"grant_type=client_credentials&".to_vec();
        token.extend_from_slice(body);
        oauth_error(
            app.raw_form("/oauth2/token", Some(&auth), &token).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        // The pages' forms (a browser posted them): a 400 error page, never a redirect.
        for path in ["/oauth2/authorize", "/oauth2/login"] {
            let res = app.raw_form(path, None, body).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
            assert!(res.headers().get("location").is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_redirect_uri_that_hides_its_host_is_never_followed() {
    let app = spawn(config()).await;
    // Registered before the rule (or by hand): the user information makes evil.example the host.
    let (mut client, _) = NewClient {
        id: "legacy".into(),
        grants: vec!["authorization_code".into()],
        scope: "profile".into(),
        redirect_uris: vec!["http://localhost/cb".into()],
        public: true,
        ..NewClient::default()
    }
    .build("tessera", T0)
    .unwrap();
    let hidden = "http://localhost:80@evil.example/cb";
    client.redirect_uris = vec![hidden.into()];
    app.state
        .auth
        .store()
        .clients()
        .create_client(&client)
        .await
        .unwrap();
    for path in [
        format!(
            "/oauth2/authorize?response_type=code&client_id=legacy&redirect_uri={}&scope=profile&code_challenge={CHALLENGE}&code_challenge_method=S256",
            enc(hidden)
        ),
        format!(
            "/oauth2/authorize?response_type=code&client_id=legacy&scope=profile&code_challenge={CHALLENGE}&code_challenge_method=plain"
        ),
    ] {
        let res = app.get(&path, HeaderMap::new()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(res.headers().get("location").is_none(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_keys_made_in_the_same_second_the_newer_signs() {
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
    // Their kids are random: one pair could come out right by chance, eight hardly.
    for round in 0..8 {
        let t = app.clock_now();
        let older = app
            .state
            .keys
            .rotate(tessera_jose::Algorithm::EdDSA, t, 0)
            .await
            .unwrap();
        let newer = app
            .state
            .keys
            .rotate(tessera_jose::Algorithm::EdDSA, t, 0)
            .await
            .unwrap();
        assert!(newer.activates_at > older.activates_at, "round {round}");
        assert!(
            newer.activates_at <= t + 2,
            "round {round}: a second later at most"
        );
        app.clock.set(newer.activates_at);
        app.state.keys.refresh(newer.activates_at).await.unwrap();
        let access = app.token_login("alice").await.access;
        assert_eq!(kid(&access), newer.kid, "round {round}");
        app.clock.set(newer.activates_at + 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_past_the_family_bound_revoke_the_oldest_family() {
    let mut c = config();
    c.tokens.max_refresh_families = 3;
    let app = spawn_sqlite(c).await;
    app.user("alice").await;
    app.user("bob").await;
    let bobs = app.token_login("bob").await;
    let mut logins = Vec::new();
    for _ in 0..3 {
        logins.push(app.token_login("alice").await);
        app.clock.advance(1);
    }
    // Within the bound: every family lives; a rotation keeps its family (no new one).
    let res = app.refresh(&logins[0].refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    let oldest_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    let oldest_access = rotated["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me(app.bearer(&oldest_access)).await, StatusCode::OK);
    // A fourth login: the oldest family (the first login's, refreshed since) is revoked, its
    // live access token with it.
    let fourth = app.token_login("alice").await;
    oauth_error(
        app.refresh(&oldest_refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.me(app.bearer(&oldest_access)).await,
        StatusCode::UNAUTHORIZED
    );
    for l in [&logins[1], &logins[2], &fourth] {
        assert_eq!(app.refresh(&l.refresh).await.status(), StatusCode::OK);
    }
    // Another person's family is not theirs to count.
    assert_eq!(app.refresh(&bobs.refresh).await.status(), StatusCode::OK);
}
