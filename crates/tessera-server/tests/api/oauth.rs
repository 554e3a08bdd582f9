//! OAuth 2.0 for services and delegated access, over HTTP: client credentials, authorization
//! code with PKCE through the login and consent pages, token exchange, introspection and
//! revocation, each with its refusals.

use super::*;
use tessera_core::{ClientStore, NewClient};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example/cb";

impl<S: Stores> App<S> {
    /// Registers a client as `tessera client add` does; its secret (if confidential).
    async fn client(&self, spec: NewClient) -> Option<String> {
        let (client, secret) = spec.build("tessera", T0).unwrap();
        self.state
            .auth
            .store()
            .clients()
            .create_client(&client)
            .await
            .unwrap();
        secret.map(|s| s.expose().to_owned())
    }

    async fn service(&self, id: &str, scope: &str, audience: &[&str]) -> String {
        self.client(NewClient {
            id: id.into(),
            grants: vec!["client_credentials".into()],
            scope: scope.into(),
            audience: audience.iter().map(|a| (*a).to_owned()).collect(),
            ..NewClient::default()
        })
        .await
        .unwrap()
    }

    async fn basic(&self, path: &str, id: &str, secret: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn introspect(&self, id: &str, secret: &str, token: &str) -> Value {
        let res = self
            .basic("/oauth2/introspect", id, secret, &format!("token={token}"))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        res.json().await.unwrap()
    }
}

fn claims(jwt: &str) -> Value {
    tessera_jose::dangerous::decode_unverified(jwt, 8192)
        .unwrap()
        .claims
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_never_more_than_granted() {
    let app = spawn_sqlite(config()).await;
    let secret = app
        .service(
            "billing",
            "api:read api:write",
            &["https://api.example", "urn:other"],
        )
        .await;
    assert!(secret.starts_with("tsc_"));
    // client_secret_basic, all it may have, its first audience.
    let res = app
        .basic(
            "/oauth2/token",
            "billing",
            &secret,
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for a client alone"
    );
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "billing");
    assert_eq!(c["client_id"], "billing");
    assert_eq!(c["scope"], "api:read api:write");
    assert_eq!(c["aud"], "https://api.example");
    assert_eq!(c["iss"], app.url);
    // client_secret_post, a narrower scope, an RFC 8707 resource it may name.
    let res = app
        .form(
            "/oauth2/token",
            &format!("grant_type=client_credentials&client_id=billing&client_secret={secret}&scope=api:read&resource=urn:other"),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (c["scope"].as_str(), c["aud"].as_str()),
        (Some("api:read"), Some("urn:other"))
    );
    assert_eq!(body["scope"], "api:read");
    // Escalation, a foreign audience.
    for (extra, error) in [
        ("&scope=api:read%20admin", "invalid_scope"),
        ("&resource=https://evil.example", "invalid_target"),
        ("&resource=urn:other&audience=urn:other", "invalid_request"),
    ] {
        oauth_error(
            app.basic(
                "/oauth2/token",
                "billing",
                &secret,
                &format!("grant_type=client_credentials{extra}"),
            )
            .await,
            StatusCode::BAD_REQUEST,
            error,
        )
        .await;
    }
    // Wrong secret, unknown client: 401 with a Basic challenge.
    let res = app
        .basic(
            "/oauth2/token",
            "billing",
            "tsc_wrong",
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    oauth_error(res, StatusCode::UNAUTHORIZED, "invalid_client").await;
    oauth_error(
        app.basic(
            "/oauth2/token",
            "nobody",
            &secret,
            "grant_type=client_credentials",
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // Two methods at once.
    oauth_error(
        app.basic(
            "/oauth2/token",
            "billing",
            &secret,
            &format!("grant_type=client_credentials&client_secret={secret}"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    // No authentication at all.
    oauth_error(
        app.form("/oauth2/token", "grant_type=client_credentials")
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // A client registered without this grant.
    let web = app
        .client(NewClient {
            id: "web".into(),
            grants: vec!["authorization_code".into()],
            redirect_uris: vec![REDIRECT.into()],
            ..NewClient::default()
        })
        .await
        .unwrap();
    oauth_error(
        app.basic(
            "/oauth2/token",
            "web",
            &web,
            "grant_type=client_credentials",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
    )
    .await;
    // The password grant does not exist (RFC 9700 §2.4).
    oauth_error(
        app.basic(
            "/oauth2/token",
            "billing",
            &secret,
            "grant_type=password&username=a&password=b",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_what_would_be_unsafe() {
    let bad = [
        NewClient {
            id: "usr_x".into(),
            grants: vec!["client_credentials".into()],
            ..NewClient::default()
        },
        NewClient {
            id: "tessera".into(),
            grants: vec!["client_credentials".into()],
            ..NewClient::default()
        },
        NewClient {
            id: "a".into(),
            grants: vec![],
            ..NewClient::default()
        },
        NewClient {
            id: "a".into(),
            grants: vec!["password".into()],
            ..NewClient::default()
        },
        NewClient {
            id: "a".into(),
            grants: vec!["client_credentials".into()],
            public: true,
            ..NewClient::default()
        },
        NewClient {
            id: "a".into(),
            grants: vec!["authorization_code".into()],
            ..NewClient::default()
        },
        NewClient {
            id: "a".into(),
            grants: vec!["authorization_code".into()],
            redirect_uris: vec!["http://app.example/cb".into()],
            ..NewClient::default()
        },
        NewClient {
            id: "a".into(),
            grants: vec!["authorization_code".into()],
            redirect_uris: vec!["https://app.example/cb#frag".into()],
            ..NewClient::default()
        },
    ];
    for spec in bad {
        let shown = format!("{spec:?}");
        assert!(spec.build("tessera", T0).is_err(), "{shown}");
    }
    let (c, secret) = NewClient {
        id: "svc".into(),
        grants: vec!["client_credentials".into()],
        ..NewClient::default()
    }
    .build("tessera", T0)
    .unwrap();
    let secret = secret.unwrap();
    // Kept as a hash only; a Debug print shows no secret.
    assert_ne!(c.secret_hash.as_deref(), Some(secret.expose()));
    assert!(!format!("{c:?}{secret:?}").contains(&secret.expose()[4..]));
    assert!(c.secret_matches(secret.expose()));
    assert!(!c.secret_matches("tsc_other"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_answers_for_every_kind_of_token() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    let rs = app.service("resource-server", "", &[]).await;
    // Without client authentication: 401.
    oauth_error(
        app.form("/oauth2/introspect", "token=x").await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // The first-party public client cannot introspect.
    oauth_error(
        app.form("/oauth2/introspect", "token=x&client_id=tessera")
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // An access JWT: active with its claims, then revoked, then inactive.
    let t = app.token_login("alice").await;
    let a = app.introspect("resource-server", &rs, &t.access).await;
    assert_eq!(a["active"], true);
    assert_eq!(a["username"], "alice");
    assert_eq!(a["client_id"], "tessera");
    assert_eq!(a["token_type"], "Bearer");
    assert_eq!(a["iss"], app.url);
    assert!(a["exp"].as_i64().unwrap() > T0);
    // A refresh token: active until used.
    let r = app.introspect("resource-server", &rs, &t.refresh).await;
    assert_eq!(r["active"], true);
    assert_eq!(r["client_id"], "tessera");
    let rotated: Value = app.refresh(&t.refresh).await.json().await.unwrap();
    assert_eq!(
        app.introspect("resource-server", &rs, &t.refresh).await,
        json!({"active": false})
    );
    let next = rotated["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.introspect("resource-server", &rs, next).await["active"],
        true
    );
    let res = app
        .http
        .post(format!("{}/auth/logout", app.url))
        .headers(app.bearer(&t.access))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.introspect("resource-server", &rs, &t.access).await,
        json!({"active": false})
    );
    // A session token: active while the session lives.
    let s = app.login("alice").await;
    let i = app.introspect("resource-server", &rs, &s.token).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["sid"], s.body["session_id"]);
    assert_eq!(i["sub"], s.body["sub"]);
    let res = app
        .send(reqwest::Method::POST, "/auth/logout", app.bearer(&s.token))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.introspect("resource-server", &rs, &s.token).await,
        json!({"active": false})
    );
    // Garbage of every shape: inactive, never an error; but an empty token or a form that is
    // not UTF-8 is a malformed request (400 invalid_request).
    for junk in ["x", "tss_x", "tsr_x", "a.b.c", "%FF%FE", ""] {
        let res = app
            .basic(
                "/oauth2/introspect",
                "resource-server",
                &rs,
                &format!("token={junk}"),
            )
            .await;
        if junk.is_empty() || junk == "%FF%FE" {
            oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
        } else {
            assert_eq!(res.status(), StatusCode::OK, "{junk}");
            assert_eq!(res.json::<Value>().await.unwrap(), json!({"active": false}));
        }
    }
    // An expired token.
    let t = app.token_login("alice").await;
    app.clock.advance(900 + 61);
    assert_eq!(
        app.introspect("resource-server", &rs, &t.access).await,
        json!({"active": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_denylist_closes_introspection_unless_configured_open() {
    for (setting, active) in [("closed", false), ("open", true)] {
        let mut c = config();
        c.tokens.introspection_stale_denylist = setting.into();
        let app = spawn(c).await;
        app.user("alice").await;
        let rs = app.service("rs", "", &[]).await;
        let t = app.token_login("alice").await;
        assert_eq!(app.introspect("rs", &rs, &t.access).await["active"], true);
        // The change feed is lost: revocations made elsewhere may be missing here.
        app.state.denylist.set_fresh(false);
        assert_eq!(
            app.introspect("rs", &rs, &t.access).await["active"],
            active,
            "{setting}"
        );
        // Bearer checks on tessera's own endpoints go on from the last copy either way.
        assert_eq!(app.me(app.bearer(&t.access)).await, StatusCode::OK);
        app.state.denylist.set_fresh(true);
        assert_eq!(app.introspect("rs", &rs, &t.access).await["active"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_revokes_only_its_own_tokens() {
    let app = spawn(config()).await;
    let a = app.service("svc-a", "x", &["https://api.example"]).await;
    let b = app.service("svc-b", "x", &[]).await;
    let rs = app.service("rs", "", &[]).await;
    let token: Value = app
        .basic(
            "/oauth2/token",
            "svc-a",
            &a,
            "grant_type=client_credentials",
        )
        .await
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    // Another client: 200 (RFC 7009 §2.2), token untouched.
    let res = app
        .basic("/oauth2/revoke", "svc-b", &b, &format!("token={access}"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.introspect("rs", &rs, access).await["active"], true);
    // Unauthenticated: refused.
    oauth_error(
        app.form("/oauth2/revoke", &format!("token={access}&client_id=svc-a"))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // Its own client: revoked.
    let res = app
        .basic("/oauth2/revoke", "svc-a", &a, &format!("token={access}"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.introspect("rs", &rs, access).await["active"], false);
    // A removed client's tokens are inactive and it gets no more.
    let token: Value = app
        .basic(
            "/oauth2/token",
            "svc-b",
            &b,
            "grant_type=client_credentials",
        )
        .await
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    assert!(
        app.state
            .auth
            .store()
            .clients()
            .delete_client("svc-b")
            .await
            .unwrap()
    );
    assert_eq!(app.introspect("rs", &rs, access).await["active"], false);
    oauth_error(
        app.basic(
            "/oauth2/token",
            "svc-b",
            &b,
            "grant_type=client_credentials",
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
}

/// The value of hidden input `name` in `html`, unescaped.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)]).unwrap()[2..].to_owned()
}

/// A browser: it keeps its cookies (by name) and sends them back, and sends `Origin` with
/// its form posts like a real one.
struct Browser {
    cookies: std::collections::BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            cookies: Default::default(),
        }
    }

    fn headers(&self, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if !self.cookies.is_empty() {
            let line: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            h.insert("cookie", HeaderValue::from_str(&line.join("; ")).unwrap());
        }
        if let Some(o) = origin {
            h.insert("origin", HeaderValue::from_str(o).unwrap());
        }
        h
    }

    fn keep(&mut self, res: &reqwest::Response) {
        for v in res.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = pair.split_once('=').unwrap();
            if val.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.into(), val.into());
            }
        }
    }

    async fn get<S: Stores>(&mut self, app: &App<S>, path: &str) -> reqwest::Response {
        let res = app.get(path, self.headers(None)).await;
        self.keep(&res);
        res
    }

    async fn post<S: Stores>(&mut self, app: &App<S>, path: &str, body: &str) -> reqwest::Response {
        let res = app
            .http
            .post(format!("{}{path}", app.url))
            .headers(self.headers(Some(&app.url)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }
}

/// The consent page's form, answered with `decision` (its last field).
fn consent_form(html: &str, decision: &str) -> Vec<(String, String)> {
    [
        "csrf",
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .map(|n| ((*n).to_owned(), hidden(html, n)))
    .chain([("decision".to_owned(), decision.to_owned())])
    .collect()
}

impl Browser {
    /// A code for `webapp` and `scope` when consent is remembered: straight back, no page.
    async fn remembered_code<S: Stores>(&mut self, app: &App<S>, scope: &str) -> String {
        let res = self.get(app, &authorize_path("webapp", scope, "s")).await;
        query_of(&location(&res))["code"].clone()
    }
}

fn location(res: &reqwest::Response) -> String {
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    res.headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    let q = url.split_once('?').unwrap().1;
    serde_urlencoded::from_str(q).unwrap()
}

fn authorize_path(client: &str, scope: &str, state: &str) -> String {
    format!(
        "/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}&scope={}&state={state}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc(REDIRECT),
        enc(scope)
    )
}

/// Logs `alice` in through the login page, consents, and returns the code and the browser.
async fn code_through_pages<S: Stores>(app: &App<S>, browser: &mut Browser, scope: &str) -> String {
    let res = browser
        .get(app, &authorize_path("webapp", scope, "xyz"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    let html = res.text().await.unwrap();
    assert!(html.contains("Sign in"));
    let back = location(&sign_in(app, browser, &html).await);
    assert!(back.starts_with("/oauth2/authorize?"));
    let res = browser.get(app, &back).await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' https://app.example"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("webapp") && html.contains("alice"), "{html}");
    for s in scope.split(' ') {
        assert!(html.contains(s));
    }
    let form = consent_form(&html, "allow");
    let res = browser
        .post(
            app,
            "/oauth2/authorize",
            &serde_urlencoded::to_string(&form).unwrap(),
        )
        .await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let q = query_of(&to);
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.url);
    q["code"].clone()
}

async fn web_client<S: Stores>(app: &App<S>) -> String {
    app.client(NewClient {
        id: "webapp".into(),
        grants: vec!["authorization_code".into()],
        scope: "profile api:read api:write".into(),
        audience: vec!["https://api.example".into()],
        redirect_uris: vec![REDIRECT.into()],
        ..NewClient::default()
    })
    .await
    .unwrap()
}

fn exchange_body(code: &str, verifier: &str) -> String {
    format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}",
        enc(REDIRECT)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_through_login_and_consent() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    let secret = web_client(&app).await;
    let rs = app.service("rs", "", &[]).await;
    let mut browser = Browser::new();
    let code = code_through_pages(&app, &mut browser, "profile api:read").await;
    assert!(code.starts_with("tsa_"));
    let res = app
        .basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &exchange_body(&code, VERIFIER),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "api:read profile");
    let access = body["access_token"].as_str().unwrap().to_owned();
    // Introspection answers for tokens of every audience this server issues.
    let i = app.introspect("rs", &rs, &access).await;
    assert_eq!(
        (&i["active"], &i["aud"]),
        (&json!(true), &json!("https://api.example"))
    );
    let c = claims(&access);
    assert_eq!(c["client_id"], "webapp");
    assert_eq!(c["aud"], "https://api.example");
    assert_eq!(c["scope"], "api:read profile");
    assert!(c["sub"].as_str().unwrap().starts_with("usr_"));
    assert!(c["sid"].as_str().unwrap().starts_with("ses_"));
    // Refresh tokens of this grant rotate like first-party ones, client-authenticated.
    let refresh = body["refresh_token"].as_str().unwrap();
    let res = app
        .basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    assert_eq!(rotated["scope"], "api:read profile");
    assert_eq!(
        claims(rotated["access_token"].as_str().unwrap())["aud"],
        "https://api.example"
    );
    // Not another client's to refresh, nor the first-party client's.
    let next = rotated["refresh_token"].as_str().unwrap().to_owned();
    oauth_error(
        app.refresh(&next).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // A second use of the code: refused, and what the first use issued is revoked.
    oauth_error(
        app.basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &exchange_body(&code, VERIFIER),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(app.introspect("rs", &rs, &access).await["active"], false);
    assert_eq!(app.me(app.bearer(&access)).await, StatusCode::UNAUTHORIZED);
    oauth_error(
        app.basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &format!("grant_type=refresh_token&refresh_token={next}"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // Consent is remembered: the next request for no more scope goes straight back.
    let res = browser
        .get(&app, &authorize_path("webapp", "api:read", "s2"))
        .await;
    let to = location(&res);
    assert_eq!(query_of(&to)["state"], "s2");
    let code = query_of(&to)["code"].clone();
    // More scope than consented: asked again.
    let res = browser
        .get(&app, &authorize_path("webapp", "api:write", "s3"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Allow access?"));

    // Withdrawing consent ends the client's refresh tokens for this person.
    let body: Value = app
        .basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &exchange_body(&code, VERIFIER),
        )
        .await
        .json()
        .await
        .unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let session = browser.cookies[app.cookie_name].clone();
    let list: Value = app
        .get("/auth/consents", app.bearer(&session))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["client_id"], "webapp");
    assert_eq!(list[0]["scope"], "api:read profile");
    let res = app
        .send(
            reqwest::Method::DELETE,
            "/auth/consents/webapp",
            app.bearer(&session),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    oauth_error(
        app.basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let res = browser
        .get(&app, &authorize_path("webapp", "api:read", "s4"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .send(
            reqwest::Method::DELETE,
            "/auth/consents/webapp",
            app.bearer(&session),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_client_needs_pkce_and_no_secret() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let none = app
        .client(NewClient {
            id: "webapp".into(),
            grants: vec!["authorization_code".into()],
            scope: "profile".into(),
            redirect_uris: vec![REDIRECT.into()],
            public: true,
            ..NewClient::default()
        })
        .await;
    assert!(none.is_none());
    let mut browser = Browser::new();
    let code = code_through_pages(&app, &mut browser, "profile").await;
    // Wrong verifier: refused, and the code is burnt.
    oauth_error(
        app.form(
            "/oauth2/token",
            &format!("{}&client_id=webapp", exchange_body(&code, &"a".repeat(43))),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let code = browser.remembered_code(&app, "profile").await;
    // Missing verifier.
    oauth_error(
        app.form(
            "/oauth2/token",
            &format!(
                "grant_type=authorization_code&client_id=webapp&code={code}&redirect_uri={}",
                enc(REDIRECT)
            ),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    // A secret for a public client is wrong.
    oauth_error(
        app.form(
            "/oauth2/token",
            &format!(
                "{}&client_id=webapp&client_secret=tsc_x",
                exchange_body(&code, VERIFIER)
            ),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    let res = app
        .form(
            "/oauth2/token",
            &format!("{}&client_id=webapp", exchange_body(&code, VERIFIER)),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    // Public client refresh: client_id only.
    let refresh = body["refresh_token"].as_str().unwrap();
    let res = app
        .form(
            "/oauth2/token",
            &format!("grant_type=refresh_token&client_id=webapp&refresh_token={refresh}"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_refusals() {
    let app = spawn(config()).await;
    app.user("alice").await;
    let secret = web_client(&app).await;
    let mut browser = Browser::new();
    // Unknown client or unregistered redirect URI: an error page here, never a redirect.
    for path in [
        authorize_path("nobody", "profile", "s"),
        authorize_path("webapp", "profile", "s")
            .replace(&enc(REDIRECT), &enc("https://evil.example/cb")),
        "/oauth2/authorize?client_id=webapp&client_id=webapp".to_owned(),
        "/oauth2/authorize?%FF=%FE".to_owned(),
    ] {
        let res = browser.get(&app, &path).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(res.headers().get("location").is_none());
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    // Everything else goes back to the client with `state`.
    for (path, error) in [
        (
            authorize_path("webapp", "profile", "s").replace("&code_challenge_method=S256", ""),
            "invalid_request",
        ),
        (
            authorize_path("webapp", "profile", "s").replace("S256", "plain"),
            "invalid_request",
        ),
        (
            authorize_path("webapp", "profile", "s")
                .replace(&format!("&code_challenge={CHALLENGE}"), ""),
            "invalid_request",
        ),
        (
            authorize_path("webapp", "profile admin", "s"),
            "invalid_scope",
        ),
        (
            authorize_path("webapp", "profile", "s")
                .replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            format!("{}&prompt=none", authorize_path("webapp", "profile", "s")),
            "login_required",
        ),
    ] {
        let to = location(&browser.get(&app, &path).await);
        assert!(to.starts_with(REDIRECT), "{to}");
        let q = query_of(&to);
        assert_eq!(q["error"], error, "{path}");
        assert_eq!(q["state"], "s");
    }
    let code = code_through_pages(&app, &mut browser, "profile").await;
    // Wrong redirect URI at the token endpoint.
    oauth_error(
        app.basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &exchange_body(&code, VERIFIER)
                .replace(&enc(REDIRECT), &enc("https://app.example/other")),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // A code expires in a minute.
    let code = browser.remembered_code(&app, "profile").await;
    app.clock.advance(61);
    oauth_error(
        app.basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &exchange_body(&code, VERIFIER),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // Another client cannot use the code.
    let code = browser.remembered_code(&app, "profile").await;
    let other = app
        .client(NewClient {
            id: "other".into(),
            grants: vec!["authorization_code".into()],
            redirect_uris: vec![REDIRECT.into()],
            ..NewClient::default()
        })
        .await
        .unwrap();
    oauth_error(
        app.basic(
            "/oauth2/token",
            "other",
            &other,
            &exchange_body(&code, VERIFIER),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // Deny: access_denied back at the client.
    let res = browser
        .get(&app, &authorize_path("webapp", "api:write", "d"))
        .await;
    let html = res.text().await.unwrap();
    let mut form = consent_form(&html, "deny");
    let to = location(
        &browser
            .post(
                &app,
                "/oauth2/authorize",
                &serde_urlencoded::to_string(&form).unwrap(),
            )
            .await,
    );
    assert_eq!(query_of(&to)["error"], "access_denied");
    // A forged consent: without the session's token, or from another site.
    form.pop();
    form.push(("decision".into(), "allow".into()));
    form[0].1 = "forged".into();
    let res = browser
        .post(
            &app,
            "/oauth2/authorize",
            &serde_urlencoded::to_string(&form).unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    form[0].1 = hidden(&html, "csrf");
    let res = app
        .http
        .post(format!("{}/oauth2/authorize", app.url))
        .headers(browser.headers(Some("https://evil.example")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&form).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // The login form: a wrong password is a 401 page; an outside `continue` is refused.
    let mut fresh = Browser::new();
    let html = fresh
        .get(&app, &authorize_path("webapp", "profile", "s"))
        .await
        .text()
        .await
        .unwrap();
    let csrf = hidden(&html, "csrf");
    let res = fresh
        .post(
            &app,
            "/oauth2/login",
            &sign_in_form(&csrf, &hidden(&html, "continue"), "wrong"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Said in a sentence next to the fields, which point at it; the username kept, the
    // focus on the password.
    let html = res.text().await.unwrap();
    assert!(
        html.contains("The username or the password is not right"),
        "{html}"
    );
    assert!(html.contains("aria-describedby=\"problem\""), "{html}");
    assert!(html.contains("value=\"alice\""), "{html}");
    assert!(html.contains("required autofocus aria-invalid"), "{html}");
    let res = fresh
        .post(
            &app,
            "/oauth2/login",
            &sign_in_form(&csrf, "https://evil.example/", PW),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // A `continue` of ours that no `Location` header can carry (a control character, a byte
    // outside visible ASCII) is refused too: it was a 303 with no `Location`.
    for bad in [
        "/account\u{1}",
        "/account\u{7f}",
        "/oauth2/authorize?client_id=webapp&x=\u{e9}",
    ] {
        let res = fresh
            .post(&app, "/oauth2/login", &sign_in_form(&csrf, bad, PW))
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad:?}");
    }
    // The login form without its cookie-bound token.
    let res = Browser::new()
        .post(
            &app,
            "/oauth2/login",
            &sign_in_form(&csrf, &hidden(&html, "continue"), PW),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_exchanges_a_session_for_a_short_jwt() {
    let mut c = config();
    c.session.absolute_timeout = tessera_server::config::Dur(std::time::Duration::from_secs(300));
    let app = spawn_sqlite(c).await;
    app.user("alice").await;
    let gw = app
        .client(NewClient {
            id: "gateway".into(),
            grants: vec!["token-exchange".into()],
            scope: "orders:read".into(),
            audience: vec![
                "https://orders.internal".into(),
                "https://billing.internal".into(),
            ],
            ..NewClient::default()
        })
        .await
        .unwrap();
    let s = app.login("alice").await;
    let exchange = |extra: &str| {
        format!(
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={}&subject_token_type=urn:tessera:params:oauth:token-type:session{extra}",
            s.token
        )
    };
    let res = app
        .basic(
            "/oauth2/token",
            "gateway",
            &gw,
            &exchange("&audience=https://billing.internal"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    // Never outlives the session (300 s here, shorter than the 900 s access lifetime).
    assert_eq!(body["expires_in"], 300);
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], s.body["sub"]);
    assert_eq!(c["sid"], s.body["session_id"]);
    assert_eq!(c["aud"], "https://billing.internal");
    assert_eq!(c["client_id"], "gateway");
    assert_eq!(c["scope"], "orders:read");
    for (extra, status, error) in [
        (
            "&audience=https://elsewhere",
            StatusCode::BAD_REQUEST,
            "invalid_target",
        ),
        ("&scope=admin", StatusCode::BAD_REQUEST, "invalid_scope"),
        (
            "&actor_token=x&actor_token_type=y",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "&requested_token_type=urn:ietf:params:oauth:token-type:refresh_token",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        oauth_error(
            app.basic("/oauth2/token", "gateway", &gw, &exchange(extra))
                .await,
            status,
            error,
        )
        .await;
    }
    // A client without the grant.
    let svc = app.service("svc", "", &[]).await;
    oauth_error(
        app.basic("/oauth2/token", "svc", &svc, &exchange("")).await,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
    )
    .await;
    // After logout the session is no subject.
    let res = app
        .send(reqwest::Method::POST, "/auth/logout", app.bearer(&s.token))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    oauth_error(
        app.basic("/oauth2/token", "gateway", &gw, &exchange(""))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

mod attack;

/// The sign-in form's body: its anti-forgery token, where it continues to, `alice` and
/// `password`.
fn sign_in_form(csrf: &str, continue_to: &str, password: &str) -> String {
    format!(
        "csrf={}&continue={}&username=alice&password={}",
        enc(csrf),
        enc(continue_to),
        enc(password)
    )
}

/// Signs `alice` in on the login page `html` (of `browser`): the redirect it answers.
async fn sign_in<S: Stores>(app: &App<S>, browser: &mut Browser, html: &str) -> reqwest::Response {
    let body = sign_in_form(&hidden(html, "csrf"), &hidden(html, "continue"), PW);
    browser.post(app, "/oauth2/login", &body).await
}

#[tokio::test]
async fn a_returning_persons_sign_in_may_end_at_the_client() {
    // A browser blocks the redirects that follow a form's submission when the page's
    // `form-action` does not allow them: a person who consented before, signing in again,
    // goes from the login form to /oauth2/authorize and on to the client.
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    web_client(&app).await;
    let mut first = Browser::new();
    code_through_pages(&app, &mut first, "profile").await;
    let mut fresh = Browser::new();
    let res = fresh
        .get(&app, &authorize_path("webapp", "profile", "r"))
        .await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' https://app.example"),
        "{csp}"
    );
    assert_eq!(res.headers()["referrer-policy"], "same-origin");
    let html = res.text().await.unwrap();
    // A wrong password: the page again, with the same allowance.
    let body = sign_in_form(
        &hidden(&html, "csrf"),
        &hidden(&html, "continue"),
        "wrong-password",
    );
    let res = fresh.post(&app, "/oauth2/login", &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("form-action 'self' https://app.example"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    let back = location(&sign_in(&app, &mut fresh, &html).await);
    let res = fresh.get(&app, &back).await;
    assert!(location(&res).starts_with(REDIRECT));
}

#[tokio::test]
async fn a_form_sent_with_origin_null_passes_on_its_anti_forgery_token_alone() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    web_client(&app).await;
    let mut browser = Browser::new();
    let res = browser
        .get(&app, &authorize_path("webapp", "profile", "n"))
        .await;
    let html = res.text().await.unwrap();
    let post = |csrf: String| {
        let body = sign_in_form(&csrf, &hidden(&html, "continue"), PW);
        app.http
            .post(format!("{}/oauth2/login", app.url))
            .headers(browser.headers(None))
            .header("origin", "null")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // Without the token of this browser's form: refused.
    let res = post("forged".into()).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // With it: signed in, as from any browser.
    let res = post(hidden(&html, "csrf")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // Another site's origin is still refused outright.
    let res = app
        .http
        .post(format!("{}/oauth2/login", app.url))
        .headers(browser.headers(Some("https://evil.example")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", enc(&hidden(&html, "csrf"))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn prompt_login_and_max_age_ask_for_the_password_again() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    web_client(&app).await;
    let mut browser = Browser::new();
    code_through_pages(&app, &mut browser, "profile").await;
    // Signed in and consented: a plain request goes straight back with a code...
    assert!(!browser.remembered_code(&app, "profile").await.is_empty());
    // ...but `prompt=login` shows the sign-in form, and after it the code comes.
    let path = format!("{}&prompt=login", authorize_path("webapp", "profile", "p"));
    let res = browser.get(&app, &path).await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("Sign in"), "{html}");
    assert!(!hidden(&html, "continue").contains("prompt"));
    let back = location(&sign_in(&app, &mut browser, &html).await);
    let res = browser.get(&app, &back).await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT) && to.contains("code="), "{to}");
    // `max_age`: a sign-in older than it is not enough.
    app.clock.advance(120);
    let path = format!("{}&max_age=60", authorize_path("webapp", "profile", "m"));
    let res = browser.get(&app, &path).await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("Sign in"), "{html}");
    let back = location(&sign_in(&app, &mut browser, &html).await);
    let res = browser.get(&app, &back).await;
    assert!(location(&res).contains("code="));
    // With `prompt=none` no page: `login_required` at the client.
    app.clock.advance(120);
    let path = format!(
        "{}&max_age=60&prompt=none",
        authorize_path("webapp", "profile", "z")
    );
    let res = browser.get(&app, &path).await;
    let to = location(&res);
    assert!(to.contains("error=login_required"), "{to}");
    // A malformed max_age is the client's error.
    let path = format!("{}&max_age=soon", authorize_path("webapp", "profile", "x"));
    let res = browser.get(&app, &path).await;
    assert!(location(&res).contains("error=invalid_request"));
}

#[tokio::test]
async fn signout_asks_then_ends_the_session_and_its_cookie() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    web_client(&app).await;
    let mut browser = Browser::new();
    code_through_pages(&app, &mut browser, "profile").await;
    let me = |b: &Browser| app.get("/auth/me", b.headers(None));
    assert_eq!(me(&browser).await.status(), StatusCode::OK);
    // The consent page links to it.
    let res = browser
        .get(
            &app,
            &format!(
                "{}&prompt=consent",
                authorize_path("webapp", "profile", "c")
            ),
        )
        .await;
    assert!(res.text().await.unwrap().contains("href=\"/signout\""));
    let res = browser.get(&app, "/signout").await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("alice") && html.contains("Sign out"),
        "{html}"
    );
    // Another site's post, or one without this session's token, changes nothing.
    let res = browser.post(&app, "/signout", "csrf=forged").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(me(&browser).await.status(), StatusCode::OK);
    let session = browser.cookies.clone();
    let body = format!("csrf={}", enc(&hidden(&html, "csrf")));
    let res = browser.post(&app, "/signout", &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("signed out"));
    // The cookie is expired in the browser, and the session is over on the server.
    assert!(
        !browser
            .cookies
            .keys()
            .any(|k| k.contains("tessera_session"))
    );
    let old = Browser { cookies: session };
    assert_eq!(me(&old).await.status(), StatusCode::UNAUTHORIZED);
    // Signed out, the page says so.
    let html = browser.get(&app, "/signout").await.text().await.unwrap();
    assert!(html.contains("signed out"), "{html}");
}

#[tokio::test]
async fn the_account_page_ends_sessions_and_withdraws_consents() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    let secret = web_client(&app).await;
    // Not signed in: the sign-in form, and back to the account page after it.
    let mut browser = Browser::new();
    let res = browser.get(&app, "/account").await;
    let html = res.text().await.unwrap();
    assert!(html.contains("Sign in"), "{html}");
    assert_eq!(hidden(&html, "continue"), "/account");
    assert_eq!(
        location(&sign_in(&app, &mut browser, &html).await),
        "/account"
    );
    // Another device, and an application allowed from it.
    let mut phone = Browser::new();
    let code = code_through_pages(&app, &mut phone, "profile api:read").await;
    let res = app
        .basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &exchange_body(&code, VERIFIER),
        )
        .await;
    let refresh = res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(3 * 60);
    let res = browser.get(&app, "/account").await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("alice"), "{html}");
    assert!(html.contains("(this device)"), "{html}");
    assert!(html.contains("3 minutes ago"), "{html}");
    assert!(
        html.contains("webapp") && html.contains("<code>api:read</code>"),
        "{html}"
    );
    let csrf = hidden(&html, "csrf");
    // The phone's session, ended from here: the phone is signed out.
    let phone_me = || app.get("/auth/me", phone.headers(None));
    assert_eq!(phone_me().await.status(), StatusCode::OK);
    let sessions: Vec<&str> = html
        .match_indices("name=\"session\" value=\"")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(sessions.len(), 2);
    // Without the page's token: nothing ends.
    for s in &sessions {
        let res = browser
            .post(
                &app,
                "/account/sessions/end",
                &format!("csrf=forged&session={s}"),
            )
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(phone_me().await.status(), StatusCode::OK);
    let mine = app.get("/auth/me", browser.headers(None)).await;
    let mine = mine.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = sessions.iter().find(|s| **s != mine).unwrap();
    let res = browser
        .post(
            &app,
            "/account/sessions/end",
            &format!("csrf={}&session={other}", enc(&csrf)),
        )
        .await;
    assert_eq!(location(&res), "/account");
    assert_eq!(phone_me().await.status(), StatusCode::UNAUTHORIZED);
    // The consent, withdrawn: the application's refresh token stops working.
    let res = browser
        .post(
            &app,
            "/account/consents/withdraw",
            &format!("csrf={}&client_id=webapp", enc(&csrf)),
        )
        .await;
    assert_eq!(location(&res), "/account");
    let html = browser.get(&app, "/account").await.text().await.unwrap();
    assert!(!html.contains("<code>api:read</code>"), "{html}");
    let res = app
        .basic(
            "/oauth2/token",
            "webapp",
            &secret,
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // This device's own session: signed out.
    let res = browser
        .post(
            &app,
            "/account/sessions/end",
            &format!("csrf={}&session={mine}", enc(&csrf)),
        )
        .await;
    assert!(res.text().await.unwrap().contains("signed out"));
    assert_eq!(
        app.get("/auth/me", browser.headers(None)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_pages_load_their_one_stylesheet_from_tessera_and_nothing_else() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    web_client(&app).await;
    let mut browser = Browser::new();
    let res = browser
        .get(&app, &authorize_path("webapp", "profile", "s"))
        .await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'self';"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    let href = html
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    assert!(href.starts_with("/assets/"), "{href}");
    assert!(
        !html.contains("style=") && !html.contains("<script"),
        "{html}"
    );
    let css = browser.get(&app, &href).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.headers()["x-content-type-options"], "nosniff");
    let text = css.text().await.unwrap();
    assert!(text.contains("prefers-color-scheme: dark"));
    assert!(text.contains("min-height: 44px"));
}

#[tokio::test]
async fn the_consent_page_names_the_application_as_people_know_it() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    app.client(NewClient {
        id: "webapp".into(),
        grants: vec!["authorization_code".into()],
        scope: "profile".into(),
        redirect_uris: vec![REDIRECT.into()],
        name: Some("Example <Notes>".into()),
        homepage: Some("https://notes.example/about".into()),
        logo_uri: Some("https://cdn.example/notes.png".into()),
        ..NewClient::default()
    })
    .await
    .unwrap();
    let mut browser = Browser::new();
    let res = browser
        .get(&app, &authorize_path("webapp", "profile", "n"))
        .await;
    let html = res.text().await.unwrap();
    let res = sign_in(&app, &mut browser, &html).await;
    let res = browser.get(&app, &location(&res)).await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("img-src https://cdn.example;"), "{csp}");
    let html = res.text().await.unwrap();
    assert!(
        html.contains(
            "<strong>Example &lt;Notes&gt;</strong> <span class=\"muted\">(webapp)</span>"
        ),
        "{html}"
    );
    assert!(
        html.contains("href=\"https://notes.example/about\""),
        "{html}"
    );
    assert!(
        html.contains("src=\"https://cdn.example/notes.png\""),
        "{html}"
    );
    // What cannot be shown safely is refused at registration.
    for bad in [
        NewClient {
            name: Some("tab\tname".into()),
            ..NewClient::default()
        },
        NewClient {
            homepage: Some("javascript:alert(1)".into()),
            ..NewClient::default()
        },
        NewClient {
            logo_uri: Some("http://cdn.example/logo.png".into()),
            ..NewClient::default()
        },
    ] {
        let r = NewClient {
            id: "other".into(),
            grants: vec!["authorization_code".into()],
            redirect_uris: vec![REDIRECT.into()],
            ..bad
        }
        .build("tessera", 0);
        assert!(r.is_err());
    }
}

#[tokio::test]
async fn scopes_are_shown_in_the_words_the_configuration_gives() {
    let mut c = config();
    c.pages
        .scopes
        .insert("api:read".into(), "Read your <documents>".into());
    let app = spawn_sqlite(c).await;
    app.user("alice").await;
    web_client(&app).await;
    let mut browser = Browser::new();
    let res = browser
        .get(&app, &authorize_path("webapp", "profile api:read", "w"))
        .await;
    let html = res.text().await.unwrap();
    let res = sign_in(&app, &mut browser, &html).await;
    let html = browser
        .get(&app, &location(&res))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(
            "<li>Read your &lt;documents&gt; <span class=\"muted\"><code>api:read</code></span></li>"
        ),
        "{html}"
    );
    // A scope without words is shown by its name.
    assert!(html.contains("<li><code>profile</code></li>"), "{html}");
    // Words with a control character are refused at start.
    let file = std::env::temp_dir().join(format!("tessera-scopes-{}.toml", std::process::id()));
    std::fs::write(&file, "[pages.scopes]\nx = \"a\\u0007b\"\n").unwrap();
    let loaded = Config::load(Some(&file), Vec::new());
    std::fs::remove_file(&file).unwrap();
    assert!(loaded.is_err());
}

const BYE: &str = "https://app.example/bye";

/// `/signout` asked by an application (RP-initiated logout) with `client_id`, `post_logout_redirect_uri` and
/// `state`.
fn signout_path(client: &str, uri: &str, state: &str) -> String {
    format!(
        "/signout?client_id={client}&post_logout_redirect_uri={}&state={state}",
        enc(uri)
    )
}

#[tokio::test]
async fn signout_returns_to_the_applications_registered_address() {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    app.client(NewClient {
        id: "webapp".into(),
        grants: vec!["authorization_code".into()],
        scope: "profile".into(),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![BYE.into()],
        name: Some("Example Notes".into()),
        ..NewClient::default()
    })
    .await;
    // Discovery names the endpoint.
    let doc: Value = app
        .get("/.well-known/openid-configuration", HeaderMap::new())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["end_session_endpoint"], format!("{}/signout", app.url));
    let mut browser = Browser::new();
    code_through_pages(&app, &mut browser, "profile").await;
    // The page names the application and where it goes back to; its form may end up there.
    let res = browser.get(&app, &signout_path("webapp", BYE, "s1")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' https://app.example;"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("Example Notes"), "{html}");
    assert_eq!(hidden(&html, "post_logout_redirect_uri"), BYE);
    assert_eq!(hidden(&html, "state"), "s1");
    // The form, posted, ends the session and goes back with the state.
    let body = format!(
        "csrf={}&client_id=webapp&post_logout_redirect_uri={}&state=s1",
        enc(&hidden(&html, "csrf")),
        enc(BYE)
    );
    let session = browser.cookies.clone();
    let res = browser.post(&app, "/signout", &body).await;
    assert_eq!(location(&res), format!("{BYE}?state=s1"));
    assert!(
        !browser
            .cookies
            .keys()
            .any(|k| k.contains("tessera_session"))
    );
    let old = Browser { cookies: session };
    assert_eq!(
        app.get("/auth/me", old.headers(None)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Signed out already: straight back, nothing to confirm.
    let res = browser.get(&app, &signout_path("webapp", BYE, "s2")).await;
    assert_eq!(location(&res), format!("{BYE}?state=s2"));
    let res = browser
        .get(
            &app,
            &format!(
                "/signout?client_id=webapp&post_logout_redirect_uri={}",
                enc(BYE)
            ),
        )
        .await;
    assert_eq!(location(&res), BYE);
    // An address not registered for the client, an unknown client, or no client at all: a
    // page that says so, never a redirect (an open redirector is a phishing tool).
    for path in [
        signout_path("webapp", "https://evil.example/bye", "x"),
        signout_path("webapp", REDIRECT, "x"),
        signout_path("nobody", BYE, "x"),
        format!("/signout?post_logout_redirect_uri={}", enc(BYE)),
    ] {
        let res = browser.get(&app, &path).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(res.headers().get("location").is_none());
    }
    // A posted form naming an unregistered address is refused too, the session kept.
    let html = browser
        .get(&app, &authorize_path("webapp", "profile", "x"))
        .await
        .text()
        .await
        .unwrap();
    sign_in(&app, &mut browser, &html).await;
    let html = browser.get(&app, "/signout").await.text().await.unwrap();
    let body = format!(
        "csrf={}&client_id=webapp&post_logout_redirect_uri={}",
        enc(&hidden(&html, "csrf")),
        enc("https://evil.example/")
    );
    // The person pressed Sign out, so the session ends; the address is never redirected to,
    // the signed-out page shown instead.
    let session = browser.cookies.clone();
    let res = browser.post(&app, "/signout", &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("location").is_none());
    let old = Browser { cookies: session };
    assert_eq!(
        app.get("/auth/me", old.headers(None)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn a_post_logout_address_is_checked_like_a_redirect_uri() {
    for (grants, uri) in [
        ("authorization_code", "http://app.example/bye"),
        ("authorization_code", "https://app.example/bye#x"),
        ("client_credentials", BYE),
    ] {
        let r = NewClient {
            id: "other".into(),
            grants: vec![grants.into()],
            redirect_uris: if grants == "authorization_code" {
                vec![REDIRECT.into()]
            } else {
                vec![]
            },
            post_logout_redirect_uris: vec![uri.into()],
            ..NewClient::default()
        }
        .build("tessera", 0);
        assert!(r.is_err(), "{grants} {uri}");
    }
}

#[tokio::test]
async fn the_pages_carry_the_services_name_and_logo() {
    let dir = std::env::temp_dir().join(format!("tessera-look-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 8 8\"><rect width=\"8\" height=\"8\" fill=\"#246\"/></svg>";
    let logo = dir.join("logo.svg");
    std::fs::write(&logo, svg).unwrap();
    let mut c = config();
    c.pages.name = "Example <Corp>".into();
    c.pages.logo = Some(logo.clone());
    let app = spawn_sqlite(c).await;
    let mut browser = Browser::new();
    let res = browser.get(&app, "/debugger").await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("img-src 'self';"), "{csp}");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("<title>Token debugger · Example &lt;Corp&gt;</title>"),
        "{html}"
    );
    assert!(
        html.contains("<img src=\"/assets/logo\" alt=\"\">Example &lt;Corp&gt;</header>"),
        "{html}"
    );
    // The logo, from this origin, scripts forbidden even when opened on its own.
    let res = browser.get(&app, "/assets/logo").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("sandbox") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(res.text().await.unwrap(), svg);
    // Without a logo, none is served, and none allowed.
    let app = spawn_sqlite(config()).await;
    let res = browser.get(&app, "/debugger").await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!csp.contains("img-src"), "{csp}");
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("<header>tessera</header>")
    );
    assert_eq!(
        browser.get(&app, "/assets/logo").await.status(),
        StatusCode::NOT_FOUND
    );
    // A logo of a kind a browser may not show as an image, one missing, one too large, or a
    // name with a control character is refused at start.
    std::fs::write(dir.join("logo.html"), "<script>").unwrap();
    std::fs::write(dir.join("big.png"), vec![0u8; 300 * 1024]).unwrap();
    for (file, why) in [
        ("[pages]\nlogo = \"LOGO/logo.html\"\n", "kind"),
        ("[pages]\nlogo = \"LOGO/missing.png\"\n", "missing"),
        ("[pages]\nlogo = \"LOGO/big.png\"\n", "size"),
        ("[pages]\nname = \"a\\u0007b\"\n", "name"),
        ("[pages]\nname = \"\"\n", "empty name"),
    ] {
        let path = dir.join("tessera.toml");
        std::fs::write(&path, file.replace("LOGO", dir.to_str().unwrap())).unwrap();
        assert!(Config::load(Some(&path), Vec::new()).is_err(), "{why}");
    }
    let loaded = Config::load(
        None,
        vec![
            ("TESSERA_PAGES_NAME".to_owned(), "Example".to_owned()),
            ("TESSERA_PAGES_LOGO".to_owned(), logo.display().to_string()),
        ],
    )
    .unwrap();
    assert_eq!(loaded.pages.name, "Example");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// alice, and `webapp` with a registered sign-out return.
async fn app_with_signout_return() -> App<SqliteStore> {
    let app = spawn_sqlite(config()).await;
    app.user("alice").await;
    app.client(NewClient {
        id: "webapp".into(),
        grants: vec!["authorization_code".into()],
        scope: "profile".into(),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![BYE.into()],
        name: Some("Example Notes".into()),
        ..NewClient::default()
    })
    .await;
    app
}

/// The person pressed "Sign out" on a page an application sent them to; the application is
/// removed (or its address unregistered) before the form arrives. The session must still end:
/// the return is only where to go afterwards.
#[tokio::test]
async fn a_confirmed_signout_ends_the_session_even_when_the_return_is_refused() {
    let app = app_with_signout_return().await;
    let mut browser = Browser::new();
    code_through_pages(&app, &mut browser, "profile").await;
    let html = browser
        .get(&app, &signout_path("webapp", BYE, "s1"))
        .await
        .text()
        .await
        .unwrap();
    app.state
        .auth
        .store()
        .clients()
        .delete_client("webapp")
        .await
        .unwrap();
    let body = format!(
        "csrf={}&client_id=webapp&post_logout_redirect_uri={}&state=s1",
        enc(&hidden(&html, "csrf")),
        enc(BYE)
    );
    let session = browser.cookies.clone();
    let res = browser.post(&app, "/signout", &body).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    let old = Browser { cookies: session };
    assert_eq!(
        app.get("/auth/me", old.headers(None)).await.status(),
        StatusCode::UNAUTHORIZED,
        "pressed Sign out, got {status} {text}, and the session is still alive"
    );
}

/// An application's sign-out link with a `state` too long for the page's own form to carry back
/// (`!` travels as itself in a link's query, as `%21` in the form a browser posts: 30 KB of link
/// would be 90 KB of form, past the 64 KiB body limit) is refused on a page, before a form that
/// could never be sent is drawn.
#[tokio::test]
async fn a_signout_link_with_a_state_too_long_to_post_back_is_refused() {
    let app = app_with_signout_return().await;
    let mut browser = Browser::new();
    code_through_pages(&app, &mut browser, "profile").await;
    let big = "!".repeat(30 * 1024);
    let res = browser.get(&app, &signout_path("webapp", BYE, &big)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());
    // The longest state allowed still makes a form that can be sent.
    let most = "!".repeat(2048);
    let html = browser
        .get(&app, &signout_path("webapp", BYE, &most))
        .await
        .text()
        .await
        .unwrap();
    let body = format!(
        "csrf={}&client_id=webapp&post_logout_redirect_uri={}&state={}",
        enc(&hidden(&html, "csrf")),
        enc(BYE),
        enc(&hidden(&html, "state"))
    );
    let res = browser.post(&app, "/signout", &body).await;
    assert!(location(&res).starts_with(&format!("{BYE}?state=")));
    // The consent form carries the authorization request's state the same way.
    let res = browser
        .get(&app, &authorize_path("webapp", "profile", &big))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());
}

/// Malformed links: a page (400), never a panic or a redirect.
#[tokio::test]
async fn malformed_signout_links_are_refused_on_a_page() {
    let app = app_with_signout_return().await;
    let mut browser = Browser::new();
    for q in [
        format!("{}&state=again", signout_path("webapp", BYE, "s")),
        format!("{}&client_id=webapp", signout_path("webapp", BYE, "s")),
        format!(
            "/signout?client_id=webapp&post_logout_redirect_uri={}&state=%ff",
            enc(BYE)
        ),
        format!(
            "/signout?client_id=webapp&post_logout_redirect_uri={}&state=%zz",
            enc(BYE)
        ),
        format!(
            "/signout?client_id=webapp&post_logout_redirect_uri={}%20",
            enc(BYE)
        ),
        format!(
            "/signout?client_id=webapp&post_logout_redirect_uri={}%23x",
            enc(BYE)
        ),
        format!(
            "/signout?client_id=webapp&post_logout_redirect_uri={}/",
            enc(BYE)
        ),
        format!(
            "/signout?client_id={}&post_logout_redirect_uri={}",
            "x".repeat(20000),
            enc(BYE)
        ),
    ] {
        let res = browser.get(&app, &q).await;
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            &q[..q.len().min(200)]
        );
        assert!(res.headers().get("location").is_none());
    }
    // A state with CR/LF and markup: quoted in the Location, never a header or markup.
    let res = browser
        .get(
            &app,
            &signout_path("webapp", BYE, &enc("a\r\nSet-Cookie: x=1<script>\"")),
        )
        .await;
    let loc = location(&res);
    assert!(loc.starts_with(&format!("{BYE}?state=")), "{loc}");
    assert!(!loc.contains(['\r', '\n', '<', '"', ' ']), "{loc}");
}

/// `pages.logo` is measured at load (metadata) and read at build: what is served is whatever
/// the file is by then, of any size (a file replaced in between, or one whose metadata says 0
/// bytes, as /proc and some FUSE files do).
#[tokio::test]
async fn the_logo_served_is_the_logo_measured() {
    let dir = std::env::temp_dir().join(format!("tessera-logo-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logo = dir.join("logo.png");
    std::fs::write(&logo, [0u8; 16]).unwrap();
    let c = Config::load(
        None,
        vec![("TESSERA_PAGES_LOGO".to_owned(), logo.display().to_string())],
    )
    .unwrap();
    std::fs::write(&logo, vec![0u8; 4 * 1024 * 1024]).unwrap();
    let mut c2 = config();
    c2.pages = c.pages;
    let master = MasterKey::from_bytes(&[42u8; 32]).unwrap();
    let s = SqliteStore::open("sqlite::memory:").await.unwrap();
    let built = tessera_server::build(&c2, s, Arc::new(ManualClock::new(T0)), master).await;
    std::fs::remove_dir_all(&dir).unwrap();
    match built {
        Err(e) => assert!(e.to_string().contains("pages.logo"), "{e}"),
        Ok(_) => panic!("a 4 MiB logo was accepted at build, and is served"),
    }
}

#[tokio::test]
async fn discovery_names_each_scope_on_its_own() {
    let mut c = config();
    c.tokens.scope = "openid profile email".into();
    let app = spawn(c).await;
    let doc: Value = app
        .get("/.well-known/openid-configuration", HeaderMap::new())
        .await
        .json()
        .await
        .unwrap();
    // RFC 8414 §2: a JSON array of scope values, not the space-separated list as one.
    assert_eq!(
        doc["scopes_supported"],
        json!(["openid", "profile", "email"])
    );
}
