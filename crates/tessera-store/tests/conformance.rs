//! One store test suite, written once, run against every backend: memory, SQLite, PostgreSQL,
//! and PostgreSQL with Redis (the cluster pairing). Each backend gets a fresh, empty store per
//! test: its own PostgreSQL schema, its own Redis key prefix, removed when the test ends.
//!
//! PostgreSQL and Redis are the machine's (`TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; `TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). A service that is not there fails these tests; none is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use serde_json::json;
use tessera_core::{
    Client, ClientStore, CodeRecord, Consent, DenylistStore, FamilyRevocation, KeyStore, Kind,
    RefreshRecord, RefreshStore, Session, SessionStore, StoreError, StoredKey, Stores,
    ThrottleStore, Token, TokenHash, User, UserStore,
};

fn user(id: &str, name: &str) -> User {
    User {
        id: id.into(),
        username: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        disabled: false,
        created_at: 1_000,
    }
}

fn session(handle: &str, user_id: &str, created: i64) -> (TokenHash, Session) {
    (
        Token::generate(Kind::Session).hash(),
        Session {
            handle: handle.into(),
            user_id: user_id.into(),
            created_at: created,
            last_seen_at: created,
            expires_at: created + 3600,
            idle_timeout: 600,
            user_agent: Some("test/1.0".into()),
            ip: Some("192.0.2.7".into()),
            data: json!({}),
        },
    )
}

async fn users<S: Stores>(s: S) {
    let alice = user("usr_a", "alice");
    s.users().create_user(&alice).await.unwrap();
    assert!(matches!(
        s.users().create_user(&user("usr_b", "alice")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.users().user_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        s.users().user_by_id("usr_a").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(s.users().user_by_name("bob").await.unwrap(), None);
    s.users().create_user(&user("usr_b", "bob")).await.unwrap();
    let names: Vec<String> = s
        .users()
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(s.users().set_disabled("usr_a", true).await.unwrap());
    assert!(
        s.users()
            .user_by_id("usr_a")
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(!s.users().set_disabled("usr_zzz", true).await.unwrap());
    assert!(
        s.users()
            .set_password_hash("usr_a", "$argon2id$new")
            .await
            .unwrap()
    );
    assert_eq!(
        s.users()
            .user_by_id("usr_a")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
    assert!(s.users().delete_user("usr_a").await.unwrap());
    assert!(!s.users().delete_user("usr_a").await.unwrap());
    assert_eq!(s.users().user_by_name("alice").await.unwrap(), None);
    // The name is free again.
    s.users()
        .create_user(&user("usr_c", "alice"))
        .await
        .unwrap();
    s.users().ping().await.unwrap();
}

async fn sessions<S: Stores>(s: S) {
    let (h1, s1) = session("ses_1", "usr_a", 1_000);
    let (h2, s2) = session("ses_2", "usr_a", 1_010);
    let (h3, s3) = session("ses_3", "usr_b", 1_020);
    s.sessions().create_session(&h1, &s1).await.unwrap();
    s.sessions().create_session(&h2, &s2).await.unwrap();
    s.sessions().create_session(&h3, &s3).await.unwrap();
    // Never overwritten.
    assert!(matches!(
        s.sessions().create_session(&h1, &s2).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.sessions().session(&h1).await.unwrap(), Some(s1.clone()));
    assert_eq!(s.sessions().count_sessions().await.unwrap(), 3);

    s.sessions().touch_session(&h1, 1_100).await.unwrap();
    assert_eq!(
        s.sessions()
            .session(&h1)
            .await
            .unwrap()
            .unwrap()
            .last_seen_at,
        1_100
    );
    let data = json!({"cart": [1, 2], "theme": "dark", "nested": {"é": null}});
    assert!(s.sessions().set_session_data(&h1, &data).await.unwrap());
    assert_eq!(s.sessions().session(&h1).await.unwrap().unwrap().data, data);

    let mut of_a: Vec<String> = s
        .sessions()
        .sessions_of("usr_a")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, s)| s.handle)
        .collect();
    of_a.sort();
    assert_eq!(of_a, ["ses_1", "ses_2"]);

    // End all of a's sessions but one: b's are untouched.
    assert_eq!(
        s.sessions()
            .delete_sessions_of("usr_a", Some(&h1))
            .await
            .unwrap(),
        1
    );
    assert!(s.sessions().session(&h2).await.unwrap().is_none());
    assert!(s.sessions().session(&h1).await.unwrap().is_some());
    assert!(s.sessions().session(&h3).await.unwrap().is_some());
    assert_eq!(
        s.sessions()
            .delete_sessions_of("usr_a", None)
            .await
            .unwrap(),
        1
    );
    assert!(s.sessions().sessions_of("usr_a").await.unwrap().is_empty());

    assert!(s.sessions().delete_session(&h3).await.unwrap());
    assert!(!s.sessions().delete_session(&h3).await.unwrap());
    assert!(!s.sessions().set_session_data(&h3, &data).await.unwrap());
    assert_eq!(s.sessions().count_sessions().await.unwrap(), 0);
}

async fn purge<S: Stores>(s: S) {
    let (h1, s1) = session("ses_1", "usr_a", 1_000); // idle end 1600, absolute 4600
    let (h2, mut s2) = session("ses_2", "usr_a", 1_000);
    s2.last_seen_at = 4_000; // idle end 4600, absolute 4600
    s.sessions().create_session(&h1, &s1).await.unwrap();
    s.sessions().create_session(&h2, &s2).await.unwrap();
    assert_eq!(
        s.sessions()
            .purge_expired_sessions(1_599)
            .await
            .unwrap()
            .removed,
        0
    );
    assert_eq!(
        s.sessions()
            .purge_expired_sessions(1_600)
            .await
            .unwrap()
            .removed,
        1
    );
    assert!(s.sessions().session(&h1).await.unwrap().is_none());
    assert_eq!(
        s.sessions()
            .purge_expired_sessions(4_600)
            .await
            .unwrap()
            .removed,
        1
    );
    assert!(s.sessions().session(&h2).await.unwrap().is_none());
}

async fn keys<S: Stores>(s: S) {
    assert!(s.keys().signing_keys().await.unwrap().is_empty());
    let k = |kid: &str, at: i64| StoredKey {
        kid: kid.into(),
        alg: "EdDSA".into(),
        sealed: vec![1, 2, 3, 0, 255],
        public_jwk: None,
        created_at: at,
        activates_at: at + 10,
    };
    // A key held by an HSM: its public JWK, no private material.
    let held = StoredKey {
        sealed: Vec::new(),
        public_jwk: Some(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#
                .into(),
        ),
        ..k("c", 300)
    };
    s.keys().add_signing_key(&k("b", 200)).await.unwrap();
    s.keys().add_signing_key(&held).await.unwrap();
    s.keys().add_signing_key(&k("a", 100)).await.unwrap();
    assert!(matches!(
        s.keys().add_signing_key(&k("a", 300)).await,
        Err(StoreError::Conflict)
    ));
    let mut got = s.keys().signing_keys().await.unwrap();
    got.sort_by_key(|k| k.activates_at);
    assert_eq!(got, vec![k("a", 100), k("b", 200), held]);
}

/// The live refresh families of one person with one client, oldest first: revoked, used-up,
/// idle-expired, ended families and those of other people or clients are not counted.
async fn live_families<S: Stores>(s: S) {
    let rec = |family: &str, user: &str, client: &str, created_at: i64| RefreshRecord {
        family: family.into(),
        user_id: user.into(),
        client_id: client.into(),
        scope: "openid".into(),
        created_at,
        expires_at: created_at + 1_000,
        family_expires_at: 9_000,
        used_at: None,
        access_jti: None,
    };
    let add = |r: RefreshRecord| {
        let s = &s;
        async move {
            s.refresh()
                .create_refresh(&Token::generate(Kind::Refresh).hash(), &r)
                .await
                .unwrap();
        }
    };
    // fam_b began first but was refreshed since: its start counts, not its last use.
    add(rec("fam_b", "usr_lf", "web", 100)).await;
    let used = Token::generate(Kind::Refresh).hash();
    s.refresh()
        .create_refresh(&used, &rec("fam_b", "usr_lf", "web", 100))
        .await
        .unwrap();
    let next = Token::generate(Kind::Refresh).hash();
    assert!(
        s.refresh()
            .rotate_refresh(&used, 500, &next, &rec("fam_b", "usr_lf", "web", 500))
            .await
            .unwrap()
    );
    add(rec("fam_a", "usr_lf", "web", 300)).await;
    add(rec("fam_c", "usr_lf", "web", 300)).await;
    // Not counted: another client, another person, revoked, idle-expired, used up.
    add(rec("fam_other_client", "usr_lf", "cli", 50)).await;
    add(rec("fam_other_user", "usr_lf2", "web", 50)).await;
    add(rec("fam_revoked", "usr_lf", "web", 50)).await;
    s.refresh()
        .revoke_family("fam_revoked", &nothing_more(1_000))
        .await
        .unwrap();
    add(rec("fam_idle", "usr_lf", "web", -2_000)).await;
    let spent = Token::generate(Kind::Refresh).hash();
    s.refresh()
        .create_refresh(&spent, &rec("fam_spent", "usr_lf", "web", 60))
        .await
        .unwrap();
    // Used, and its successor already expired.
    let next = Token::generate(Kind::Refresh).hash();
    assert!(
        s.refresh()
            .rotate_refresh(
                &spent,
                70,
                &next,
                &rec("fam_spent", "usr_lf", "web", -2_000)
            )
            .await
            .unwrap()
    );
    let live = s
        .refresh()
        .live_families("usr_lf", "web", 1_000)
        .await
        .unwrap();
    assert_eq!(
        live,
        vec![
            ("fam_b".to_owned(), 100),
            ("fam_a".to_owned(), 300),
            ("fam_c".to_owned(), 300)
        ]
    );
    // Past the family's end nothing is live.
    assert!(
        s.refresh()
            .live_families("usr_lf", "web", 9_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.refresh()
            .live_families("usr_lf", "cli", 1_000)
            .await
            .unwrap(),
        vec![("fam_other_client".to_owned(), 50)]
    );
}

/// A family revocation that denylists only the family's own access tokens (none issued
/// before 0, each for 100 s), at `now`.
fn nothing_more(now: i64) -> FamilyRevocation<'static> {
    FamilyRevocation {
        since: 0,
        access_ttl: 100,
        also: &[],
        now,
    }
}

/// Refresh tokens: each change of state one step. A rotation spends the token, stores the
/// successor and records its access token together, once; issues in a revoked family record
/// nothing; a revocation denylists every access token recorded in the family with it.
async fn refresh<S: Stores>(s: S) {
    let rec = |family: &str, user: &str, created_at: i64, jti: Option<&str>| RefreshRecord {
        family: family.into(),
        user_id: user.into(),
        client_id: "tessera".into(),
        scope: "openid".into(),
        created_at,
        expires_at: created_at + 1_000,
        family_expires_at: 9_000,
        used_at: None,
        access_jti: jti.map(str::to_owned),
    };
    let h1 = Token::generate(Kind::Refresh).hash();
    let h2 = Token::generate(Kind::Refresh).hash();
    let h3 = Token::generate(Kind::Refresh).hash();
    s.refresh()
        .create_refresh(&h1, &rec("fam_1", "usr_a", 1_000, Some("jti-1")))
        .await
        .unwrap();
    s.refresh()
        .create_refresh(&h3, &rec("fam_2", "usr_b", 1_000, None))
        .await
        .unwrap();
    assert!(matches!(
        s.refresh()
            .create_refresh(&h1, &rec("fam_1", "usr_a", 1_000, None))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.refresh().refresh_token(&h1).await.unwrap(),
        Some((rec("fam_1", "usr_a", 1_000, Some("jti-1")), false))
    );
    assert_eq!(
        s.refresh()
            .family_of_access("jti-1")
            .await
            .unwrap()
            .as_deref(),
        Some("fam_1")
    );
    assert_eq!(s.refresh().family_of_access("nope").await.unwrap(), None);
    // Exactly one rotation wins; the loser changes nothing.
    let succ = rec("fam_1", "usr_a", 1_500, Some("jti-2"));
    assert!(
        s.refresh()
            .rotate_refresh(&h1, 1_500, &h2, &succ)
            .await
            .unwrap()
    );
    let other = rec("fam_1", "usr_a", 1_501, Some("jti-x"));
    assert!(
        !s.refresh()
            .rotate_refresh(&h1, 1_501, &h2, &other)
            .await
            .unwrap()
    );
    assert_eq!(s.refresh().family_of_access("jti-x").await.unwrap(), None);
    assert_eq!(
        s.refresh()
            .refresh_token(&h1)
            .await
            .unwrap()
            .unwrap()
            .0
            .used_at,
        Some(1_500)
    );
    assert_eq!(
        s.refresh().refresh_token(&h2).await.unwrap(),
        Some((succ, false))
    );
    // An honest retry's access token is recorded in the live family.
    assert!(
        s.refresh()
            .record_access("fam_1", "jti-3", 1_502)
            .await
            .unwrap()
    );
    assert_eq!(
        s.refresh()
            .family_of_access("jti-3")
            .await
            .unwrap()
            .as_deref(),
        Some("fam_1")
    );
    // Revoking denylists, in the same step, what was issued after `since` and `also`.
    let also = [("sid:ses_1".to_owned(), 3_000)];
    let mut denied = s
        .refresh()
        .revoke_family(
            "fam_1",
            &FamilyRevocation {
                since: 1_000,
                access_ttl: 900,
                also: &also,
                now: 1_600,
            },
        )
        .await
        .unwrap();
    denied.sort();
    let expected = vec![
        ("jti-2".to_owned(), 2_400),
        ("jti-3".to_owned(), 2_402),
        ("sid:ses_1".to_owned(), 3_000),
    ];
    assert_eq!(denied, expected);
    let mut held = s.denylist().denied_access(1_600).await.unwrap().to_vec();
    held.sort();
    assert_eq!(held, expected);
    // What was added at or after a time (how instances catch up).
    let mut recent = s.denylist().denied_since(1_600, 0).await.unwrap().to_vec();
    recent.sort();
    assert_eq!(recent, expected);
    // From the beginning of time: everything in force.
    let mut all = s
        .denylist()
        .denied_since(i64::MIN, 1_600)
        .await
        .unwrap()
        .to_vec();
    all.sort();
    assert_eq!(all, expected);
    assert!(
        s.denylist()
            .denied_since(1_601, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.refresh().refresh_token(&h2).await.unwrap().unwrap().1);
    // Nothing more is issued in a revoked family, and nothing is spent trying.
    assert!(
        !s.refresh()
            .record_access("fam_1", "jti-4", 1_700)
            .await
            .unwrap()
    );
    assert_eq!(s.refresh().family_of_access("jti-4").await.unwrap(), None);
    let h4 = Token::generate(Kind::Refresh).hash();
    let late = rec("fam_1", "usr_a", 1_700, Some("jti-5"));
    assert!(
        !s.refresh()
            .rotate_refresh(&h2, 1_700, &h4, &late)
            .await
            .unwrap()
    );
    assert_eq!(
        s.refresh()
            .refresh_token(&h2)
            .await
            .unwrap()
            .unwrap()
            .0
            .used_at,
        None
    );
    assert_eq!(s.refresh().refresh_token(&h4).await.unwrap(), None);
    assert_eq!(s.refresh().family_of_access("jti-5").await.unwrap(), None);

    // A user's families all at once, each with the access tokens recorded in it.
    assert!(!s.refresh().refresh_token(&h3).await.unwrap().unwrap().1);
    assert!(
        s.refresh()
            .record_access("fam_2", "jti-b1", 1_800)
            .await
            .unwrap()
    );
    assert!(
        s.refresh()
            .record_access("fam_2", "jti-b0", 500)
            .await
            .unwrap()
    );
    let at = FamilyRevocation {
        since: 1_000,
        access_ttl: 900,
        also: &[],
        now: 1_900,
    };
    assert_eq!(
        s.refresh().revoke_families_of("usr_b", &at).await.unwrap(),
        (1, vec![("jti-b1".to_owned(), 2_700)])
    );
    assert!(s.refresh().refresh_token(&h3).await.unwrap().unwrap().1);
    assert!(
        s.denylist()
            .denied_since(1_900, 0)
            .await
            .unwrap()
            .iter()
            .any(|e| e == ("jti-b1", 2_700))
    );
    assert_eq!(
        s.refresh()
            .revoke_families_of("usr_b", &at)
            .await
            .unwrap()
            .0,
        0
    );
    assert_eq!(
        s.refresh()
            .refresh_token(&Token::generate(Kind::Refresh).hash())
            .await
            .unwrap(),
        None
    );
    // Records of expired access tokens are forgotten.
    assert_eq!(s.refresh().purge_access(1_501).await.unwrap().removed, 3);
    assert_eq!(s.refresh().family_of_access("jti-1").await.unwrap(), None);
    assert_eq!(
        s.refresh()
            .family_of_access("jti-3")
            .await
            .unwrap()
            .as_deref(),
        Some("fam_1")
    );
}

async fn clients<S: Stores>(s: S) {
    let client = |id: &str| Client {
        id: id.into(),
        secret_hash: Some(Token::generate(Kind::ClientSecret).hash().to_hex()),
        grants: vec!["client_credentials".into()],
        scope: "api:read api:write".into(),
        audience: vec!["https://api.example".into()],
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        created_at: 1_000,
        name: (id == "svc-a").then(|| "Service A".into()),
        homepage: None,
        logo_uri: (id == "svc-a").then(|| "https://a.example/logo.png".into()),
    };
    s.clients().create_client(&client("svc-b")).await.unwrap();
    s.clients().create_client(&client("svc-a")).await.unwrap();
    assert!(matches!(
        s.clients().create_client(&client("svc-a")).await,
        Err(StoreError::Conflict)
    ));
    // Stored whole, display fields included.
    let a = s.clients().client("svc-a").await.unwrap().unwrap();
    assert_eq!(a.id, "svc-a");
    assert_eq!(a.name.as_deref(), Some("Service A"));
    assert_eq!(a.logo_uri.as_deref(), Some("https://a.example/logo.png"));
    assert_eq!(
        s.clients().client("svc-b").await.unwrap().unwrap().name,
        None
    );
    assert_eq!(s.clients().client("nope").await.unwrap(), None);
    let ids: Vec<String> = s
        .clients()
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["svc-a", "svc-b"]);

    let code = |expires_at| CodeRecord {
        client_id: "svc-a".into(),
        user_id: "usr_a".into(),
        redirect_uri: "https://app.example/cb".into(),
        scope: "api:read".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        sid: None,
        created_at: 1_000,
        expires_at,
        family: "fam_c".into(),
        access_jti: "jti-c".into(),
    };
    let (c1, c2) = (
        Token::generate(Kind::Code).hash(),
        Token::generate(Kind::Code).hash(),
    );
    s.clients().create_code(&c1, &code(1_060)).await.unwrap();
    s.clients().create_code(&c2, &code(1_010)).await.unwrap();
    assert!(matches!(
        s.clients().create_code(&c1, &code(1_060)).await,
        Err(StoreError::Conflict)
    ));
    // The first use wins; a second sees the record and that it was used.
    assert_eq!(
        s.clients().use_code(&c1, 1_001).await.unwrap(),
        Some((code(1_060), true))
    );
    assert_eq!(
        s.clients().use_code(&c1, 1_002).await.unwrap(),
        Some((code(1_060), false))
    );
    assert_eq!(
        s.clients()
            .use_code(&Token::generate(Kind::Code).hash(), 1_003)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.clients().purge_codes(1_030).await.unwrap().removed, 1);
    assert_eq!(s.clients().use_code(&c2, 1_031).await.unwrap(), None);
    // Redeeming spends the code and stores the grant's first refresh token in one step, once.
    let c3 = Token::generate(Kind::Code).hash();
    s.clients().create_code(&c3, &code(1_060)).await.unwrap();
    assert_eq!(
        s.clients().code(&c3).await.unwrap(),
        Some((code(1_060), false))
    );
    let first = RefreshRecord {
        family: "fam_c".into(),
        user_id: "usr_a".into(),
        client_id: "svc-a".into(),
        scope: "api:read".into(),
        created_at: 1_010,
        expires_at: 2_000,
        family_expires_at: 9_000,
        used_at: None,
        access_jti: Some("jti-c".into()),
    };
    let r1 = Token::generate(Kind::Refresh).hash();
    let r2 = Token::generate(Kind::Refresh).hash();
    assert!(
        s.clients()
            .redeem_code(&c3, 1_010, &r1, &first)
            .await
            .unwrap()
    );
    assert!(
        !s.clients()
            .redeem_code(&c3, 1_011, &r2, &first)
            .await
            .unwrap()
    );
    assert_eq!(
        s.clients().code(&c3).await.unwrap(),
        Some((code(1_060), true))
    );
    assert_eq!(
        s.refresh().refresh_token(&r1).await.unwrap(),
        Some((first.clone(), false))
    );
    assert_eq!(s.refresh().refresh_token(&r2).await.unwrap(), None);
    assert!(
        !s.clients()
            .redeem_code(&Token::generate(Kind::Code).hash(), 1_012, &r2, &first)
            .await
            .unwrap()
    );

    let consent = |client: &str, scope: &str| Consent {
        client_id: client.into(),
        scope: scope.into(),
        granted_at: 1_000,
    };
    s.clients()
        .set_consent("usr_a", &consent("svc-a", "api:read"))
        .await
        .unwrap();
    s.clients()
        .set_consent("usr_a", &consent("svc-a", "api:read api:write"))
        .await
        .unwrap();
    s.clients()
        .set_consent("usr_a", &consent("svc-b", "api:read"))
        .await
        .unwrap();
    s.clients()
        .set_consent("usr_b", &consent("svc-a", "api:read"))
        .await
        .unwrap();
    assert_eq!(
        s.clients().consents_of("usr_a").await.unwrap(),
        [
            consent("svc-a", "api:read api:write"),
            consent("svc-b", "api:read")
        ]
    );
    assert!(s.clients().delete_consent("usr_a", "svc-b").await.unwrap());
    assert!(!s.clients().delete_consent("usr_a", "svc-b").await.unwrap());
    // Removing a client removes the consents given to it.
    assert!(s.clients().delete_client("svc-a").await.unwrap());
    assert!(!s.clients().delete_client("svc-a").await.unwrap());
    assert_eq!(s.clients().client("svc-a").await.unwrap(), None);
    assert!(s.clients().consents_of("usr_a").await.unwrap().is_empty());
    assert!(s.clients().consents_of("usr_b").await.unwrap().is_empty());
}

async fn denylist<S: Stores>(s: S) {
    s.denylist().deny_access("j1", 1_000, 10).await.unwrap();
    s.denylist().deny_access("j2", 2_000, 10).await.unwrap();
    s.denylist().deny_access("j1", 900, 10).await.unwrap(); // never shortened
    let mut got = s.denylist().denied_access(999).await.unwrap().to_vec();
    got.sort();
    assert_eq!(
        got,
        vec![("j1".to_owned(), 1_000), ("j2".to_owned(), 2_000)]
    );
    assert_eq!(
        s.denylist().denied_access(1_000).await.unwrap().to_vec(),
        vec![("j2".to_owned(), 2_000)]
    );
    assert_eq!(s.denylist().purge_denied(1_500).await.unwrap().removed, 1);
    assert_eq!(
        s.denylist().denied_access(0).await.unwrap().to_vec(),
        vec![("j2".to_owned(), 2_000)]
    );
}

/// What a reload reads: every entry in force, each once, across as many pages as the store
/// makes (SQL stores: a thousand a page; here two full pages, so the last is empty), with their
/// count announced first.
async fn denylist_pages<S: Stores>(s: S) {
    #[derive(Default)]
    struct Pages {
        expected: Option<usize>,
        pages: usize,
        got: Vec<(String, i64)>,
    }
    impl tessera_core::DeniedSink for Pages {
        fn expect(&mut self, entries: usize) {
            assert!(self.expected.is_none() && self.pages == 0);
            self.expected = Some(entries);
        }
        fn page(&mut self, page: &tessera_core::Denied) {
            self.pages += 1;
            self.got.extend(page.to_vec());
        }
    }
    // Any character in a key, the empty key too; every 21st entry has expired by 1000, among
    // the others: 2,000 in force.
    let mut want = vec![(String::new(), 5_000)];
    s.denylist().deny_access("", 5_000, 10).await.unwrap();
    for i in 2..2_100 {
        let key = format!("jti é {i}");
        let exp = if i % 21 == 0 { 900 } else { 2_000 + i };
        s.denylist().deny_access(&key, exp, 10).await.unwrap();
        if exp > 1_000 {
            want.push((key, exp));
        }
    }
    assert_eq!(want.len(), 2_000);
    let mut sink = Pages::default();
    s.denylist().each_denied(1_000, &mut sink).await.unwrap();
    assert_eq!(sink.expected, Some(want.len()));
    assert!(sink.pages >= 1);
    want.sort();
    sink.got.sort();
    assert_eq!(sink.got.len(), want.len(), "every entry once");
    assert_eq!(sink.got, want);
    // A backlog purged a batch a call, until there is no more: what ended by then goes (more
    // than a batch of SQL's), and nothing else.
    let expired = (2..2_100).filter(|i| i % 21 == 0).count();
    let ended = u64::try_from(expired + want.iter().filter(|(_, e)| *e <= 2_600).count()).unwrap();
    let mut removed = 0;
    loop {
        let p = s.denylist().purge_denied(2_600).await.unwrap();
        removed += p.removed;
        if !p.more {
            break;
        }
    }
    assert_eq!(removed, ended);
    want.retain(|(_, e)| *e > 2_600);
    let mut left = Pages::default();
    s.denylist().each_denied(0, &mut left).await.unwrap();
    left.got.sort();
    assert_eq!(left.got, want);
}

/// Shared login-throttle counts: what a cluster's Redis keeps. The same rules as the
/// in-process throttle: an attempt is reserved under all its keys at once or not at all, free
/// attempts then doubling delays with a cap, a success gives its attempt back (and forgets a
/// known device), old failures are forgotten.
async fn throttle_shared<S: Stores>(s: S) {
    let policy = tessera_core::ThrottlePolicy {
        account_free: 2,
        ip_free: 3,
        base_delay: 1,
        max_delay: 4,
        window: 3600,
        ..tessera_core::ThrottlePolicy::default()
    };
    let keys = vec![("a:alice".to_owned(), 2), ("ip:192.0.2.1".to_owned(), 3)];
    let reserve = |keys: Vec<(String, u32)>, now: i64| {
        let s = &s;
        async move {
            s.throttle()
                .throttle_reserve(&keys, &policy, now)
                .await
                .unwrap()
                .unwrap()
        }
    };
    // Two free reservations for the account, the second locks it for 1 s.
    assert_eq!(reserve(keys.clone(), 100).await, 0);
    assert_eq!(reserve(keys.clone(), 100).await, 0);
    assert_eq!(reserve(keys.clone(), 100).await, 1);
    // Refused reservations counted nothing: the address is still under its three.
    assert_eq!(reserve(keys[1..].to_vec(), 100).await, 0);
    assert_eq!(reserve(keys[1..].to_vec(), 100).await, 1);
    // Doubling, capped at 4.
    assert_eq!(reserve(keys[..1].to_vec(), 101).await, 0);
    assert_eq!(reserve(keys[..1].to_vec(), 101).await, 2);
    assert_eq!(reserve(keys[..1].to_vec(), 103).await, 0);
    assert_eq!(reserve(keys[..1].to_vec(), 107).await, 0);
    assert_eq!(reserve(keys[..1].to_vec(), 107).await, 4);
    // A success gives one attempt back: five counted, four after it, still locked.
    s.throttle()
        .throttle_release(&[], &keys[..1])
        .await
        .unwrap();
    assert_eq!(reserve(keys[..1].to_vec(), 108).await, 3);
    // A known device's success forgets it; the address gets its attempt back and unlocks.
    let device = vec![("d:n1".to_owned(), 2), ("ip:192.0.2.1".to_owned(), 3)];
    s.throttle()
        .throttle_release(&device[..1], &device[1..])
        .await
        .unwrap();
    assert_eq!(reserve(device.clone(), 108).await, 0);
    s.throttle()
        .throttle_release(&device[..1], &device[1..])
        .await
        .unwrap();
    assert_eq!(reserve(device[..1].to_vec(), 108).await, 0);
    assert_eq!(reserve(device[..1].to_vec(), 108).await, 0);
    assert_eq!(reserve(device[..1].to_vec(), 108).await, 1);
    s.throttle()
        .throttle_release(&device[..1], &[])
        .await
        .unwrap();
    assert_eq!(reserve(device[..1].to_vec(), 108).await, 0);
    // Failures older than the window are forgotten.
    assert_eq!(reserve(keys[..1].to_vec(), 108 + 3601).await, 0);
}

#[tokio::test]
async fn throttle_counters_are_shared_through_redis() {
    let (s, _guard) = services::postgres_redis().await;
    throttle_shared(s).await;
}

#[tokio::test]
async fn stores_without_redis_leave_throttling_to_each_process() {
    use tessera_core::ThrottleStore;
    let s = tessera_store::MemoryStore::new();
    let p = tessera_core::ThrottlePolicy::default();
    assert_eq!(
        s.throttle_reserve(&[("a:x".into(), 1)], &p, 1)
            .await
            .unwrap(),
        None
    );
    let (pg, _guard) = services::postgres().await;
    assert_eq!(
        pg.throttle_reserve(&[("a:x".into(), 1)], &p, 1)
            .await
            .unwrap(),
        None
    );
}

/// Refresh families past their absolute end go, with every token of them (none can be
/// honoured again, and nothing else reads them): without this the tokens of every rotation
/// ever made stayed. A family within its end keeps all of its tokens, the used ones too (a
/// used token presented again is how a theft is seen).
async fn purge_families<S: Stores>(s: S) {
    let rec = |family: &str, created_at: i64, end: i64| RefreshRecord {
        family: family.into(),
        user_id: "usr_a".into(),
        client_id: "tessera".into(),
        scope: "openid".into(),
        created_at,
        expires_at: end,
        family_expires_at: end,
        used_at: None,
        access_jti: None,
    };
    let hashes: Vec<TokenHash> = (0..4)
        .map(|_| Token::generate(Kind::Refresh).hash())
        .collect();
    let [old, old_next, live, live_next] = [&hashes[0], &hashes[1], &hashes[2], &hashes[3]];
    for (first, next, family, end) in [
        (old, old_next, "fam_old", 5_000),
        (live, live_next, "fam_live", 9_000),
    ] {
        s.refresh()
            .create_refresh(first, &rec(family, 1_000, end))
            .await
            .unwrap();
        assert!(
            s.refresh()
                .rotate_refresh(first, 1_500, next, &rec(family, 1_500, end))
                .await
                .unwrap()
        );
    }
    assert_eq!(s.refresh().purge_families(4_999).await.unwrap().removed, 0);
    assert!(s.refresh().refresh_token(old).await.unwrap().is_some());
    assert_eq!(s.refresh().purge_families(5_000).await.unwrap().removed, 1);
    assert_eq!(s.refresh().purge_families(5_000).await.unwrap().removed, 0);
    for gone in [old, old_next] {
        assert_eq!(s.refresh().refresh_token(gone).await.unwrap(), None);
    }
    // Its family went with them: nothing more is issued in it.
    assert!(
        !s.refresh()
            .record_access("fam_old", "jti-late", 5_000)
            .await
            .unwrap()
    );
    // A rotation that read its token before the purge loses, and stores nothing (not an
    // error: the family's row is gone).
    let late = Token::generate(Kind::Refresh).hash();
    assert!(
        !s.refresh()
            .rotate_refresh(old_next, 5_000, &late, &rec("fam_old", 5_000, 5_000))
            .await
            .unwrap()
    );
    assert_eq!(s.refresh().refresh_token(&late).await.unwrap(), None);
    let (used, _) = s.refresh().refresh_token(live).await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(1_500));
    assert!(
        s.refresh()
            .refresh_token(live_next)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.refresh()
            .live_families("usr_a", "tessera", 5_000)
            .await
            .unwrap(),
        vec![("fam_live".to_owned(), 1_000)]
    );
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn users() {
                let (s, _guard) = $make;
                super::users(s).await;
            }

            #[tokio::test]
            async fn sessions() {
                let (s, _guard) = $make;
                super::sessions(s).await;
            }

            #[tokio::test]
            async fn purge() {
                let (s, _guard) = $make;
                super::purge(s).await;
            }

            #[tokio::test]
            async fn keys() {
                let (s, _guard) = $make;
                super::keys(s).await;
            }

            #[tokio::test]
            async fn refresh() {
                let (s, _guard) = $make;
                super::refresh(s).await;
            }

            #[tokio::test]
            async fn purge_families() {
                let (s, _guard) = $make;
                super::purge_families(s).await;
            }

            #[tokio::test]
            async fn live_families() {
                let (s, _guard) = $make;
                super::live_families(s).await;
            }

            #[tokio::test]
            async fn denylist() {
                let (s, _guard) = $make;
                super::denylist(s).await;
            }

            #[tokio::test]
            async fn denylist_pages() {
                let (s, _guard) = $make;
                super::denylist_pages(s).await;
            }

            #[tokio::test]
            async fn clients() {
                let (s, _guard) = $make;
                super::clients(s).await;
            }
        }
    };
}

/// Which writes move the revocation generation (`crate::sql`'s list), the same on every SQL
/// backend: those that end or narrow what a cached record allows, and no other.
async fn generation<S>(s: S)
where
    S: tessera_store::Generation + UserStore + SessionStore + ClientStore + DenylistStore,
{
    let at = || async { s.revocation_generation().await.unwrap() };
    let mut last = at().await;
    let mut moved = |name: &str, now: i64, expected: bool| {
        assert_eq!(
            now != last,
            expected,
            "{name} {} the revocation generation",
            if expected {
                "must move"
            } else {
                "must not move"
            }
        );
        last = now;
    };
    s.create_user(&user("usr_a", "alice")).await.unwrap();
    moved("create_user", at().await, false);
    s.set_password_hash("usr_a", "$argon2id$x").await.unwrap();
    moved("set_password_hash", at().await, false);
    let (h1, s1) = session("ses_1", "usr_a", 1_000);
    let (h2, s2) = session("ses_2", "usr_a", 1_000);
    let (h3, s3) = session("ses_3", "usr_a", 1_000);
    for (h, x) in [(&h1, &s1), (&h2, &s2), (&h3, &s3)] {
        s.create_session(h, x).await.unwrap();
    }
    moved("create_session", at().await, false);
    s.touch_session(&h1, 1_001).await.unwrap();
    s.set_session_data(&h1, &json!({"k": 1})).await.unwrap();
    moved("touch_session and set_session_data", at().await, false);
    s.deny_access("jti-1", 5_000, 1_000).await.unwrap();
    moved("deny_access", at().await, false);
    assert!(s.delete_session(&h1).await.unwrap());
    moved("delete_session", at().await, true);
    assert!(!s.delete_session(&h1).await.unwrap());
    moved("delete_session of no session", at().await, false);
    s.delete_sessions_of("usr_a", Some(&h2)).await.unwrap();
    moved("delete_sessions_of", at().await, true);
    assert!(s.set_disabled("usr_a", true).await.unwrap());
    moved("set_disabled", at().await, true);
    let (client, _) = tessera_core::NewClient {
        id: "svc".into(),
        grants: vec!["client_credentials".into()],
        ..tessera_core::NewClient::default()
    }
    .build("tessera", 1_000)
    .unwrap();
    s.create_client(&client).await.unwrap();
    moved("create_client", at().await, false);
    assert!(s.delete_client("svc").await.unwrap());
    moved("delete_client", at().await, true);
    assert!(s.delete_user("usr_a").await.unwrap());
    moved("delete_user", at().await, true);
}

#[tokio::test]
async fn sqlite_moves_the_generation_on_revoking_writes_only() {
    generation(
        tessera_store::SqliteStore::open("sqlite::memory:")
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn postgres_moves_the_generation_on_revoking_writes_only() {
    let (s, _guard) = services::postgres().await;
    generation(s).await;
}

suite!(memory, (tessera_store::MemoryStore::new(), ()));
suite!(
    cached_memory,
    (
        tessera_store::CachedStore::new(
            tessera_store::MemoryStore::new(),
            std::time::Duration::from_secs(5),
            1000
        ),
        ()
    )
);
suite!(
    cached_sqlite,
    (
        tessera_store::CachedStore::new(
            tessera_store::SqliteStore::open("sqlite::memory:")
                .await
                .unwrap(),
            std::time::Duration::from_secs(5),
            1000
        ),
        ()
    )
);
suite!(
    sqlite_memory,
    (
        tessera_store::SqliteStore::open("sqlite::memory:")
            .await
            .unwrap(),
        ()
    )
);
suite!(postgres, services::postgres().await);
suite!(postgres_redis, services::postgres_redis().await);
suite!(
    postgres_redis_fields,
    services::postgres_redis_writing(tessera_store::SessionForm::Fields).await
);
suite!(cached_postgres_redis, {
    let (s, guard) = services::postgres_redis().await;
    (
        tessera_store::CachedStore::new(s, std::time::Duration::from_secs(5), 1000),
        guard,
    )
});

/// The machine's PostgreSQL and Redis, one schema and one key prefix per test.
mod services {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tessera_store::{PostgresStore, RedisStore, SharedStore};

    pub fn postgres_url() -> String {
        std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    pub fn redis_url() -> String {
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// A name no other test (of this run or a concurrent one) uses.
    pub fn unique(kind: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "tessera_test_{kind}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Removes a test's schema and keys when the test ends, passed or failed.
    pub struct Cleanup {
        schema: Option<String>,
        prefix: Option<String>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let schema = self.schema.take();
            let prefix = self.prefix.take();
            // Drop may run inside the test's runtime: clean up from a thread of our own.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Some(schema) = schema {
                        drop_schema(&schema).await;
                    }
                    if let Some(prefix) = prefix {
                        let r = RedisStore::open(
                            &redis_url(),
                            &prefix,
                            Arc::new(tessera_jose::SystemClock),
                            60,
                        )
                        .unwrap();
                        r.remove_all().await.unwrap();
                    }
                });
            })
            .join()
            .unwrap();
        }
    }

    async fn admin() -> sqlx::PgPool {
        sqlx::PgPool::connect(&postgres_url())
            .await
            .expect("PostgreSQL at TEST_POSTGRES_URL (default 127.0.0.1:5432/test) is required")
    }

    async fn drop_schema(schema: &str) {
        let pool = admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    /// A fresh schema; the URL that selects it.
    pub async fn schema() -> (String, String) {
        let schema = unique("pg");
        let pool = admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let url = postgres_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options[search_path]={schema}");
        (schema, url)
    }

    pub async fn postgres() -> (PostgresStore, Cleanup) {
        let (schema, url) = schema().await;
        let cleanup = Cleanup {
            schema: Some(schema),
            prefix: None,
        };
        let store = PostgresStore::open(&url).await.unwrap();
        (store, cleanup)
    }

    /// Redis with the suite's fixed clock (the suite's times are around 1000).
    pub fn redis(prefix: &str) -> RedisStore {
        RedisStore::open(
            &redis_url(),
            prefix,
            Arc::new(tessera_jose::ManualClock::new(1_000)),
            60,
        )
        .unwrap()
    }

    /// Redis alone, under a fresh prefix (returned, for reading the keys directly).
    pub async fn redis_alone() -> (RedisStore, String, Cleanup) {
        let prefix = unique("redis");
        let store = redis(&prefix);
        store
            .ping()
            .await
            .expect("Redis at TEST_REDIS_URL (default 127.0.0.1:6379) is required");
        let cleanup = Cleanup {
            schema: None,
            prefix: Some(prefix.clone()),
        };
        (store, prefix, cleanup)
    }

    pub async fn postgres_redis() -> (SharedStore<PostgresStore>, Cleanup) {
        postgres_redis_writing(tessera_store::SessionForm::default()).await
    }

    /// [`postgres_redis`], its Redis writing sessions in `form`.
    pub async fn postgres_redis_writing(
        form: tessera_store::SessionForm,
    ) -> (SharedStore<PostgresStore>, Cleanup) {
        let (pg, mut cleanup) = postgres().await;
        let prefix = unique("redis");
        let redis = redis(&prefix).writing(form);
        redis
            .ping()
            .await
            .expect("Redis at TEST_REDIS_URL (default 127.0.0.1:6379) is required");
        cleanup.prefix = Some(prefix);
        (SharedStore::new(pg, redis), cleanup)
    }
}

/// A file database, as `tessera serve` uses, in its own temporary directory.
mod sqlite_file {
    use super::*;

    struct TempDb {
        dir: std::path::PathBuf,
    }

    impl TempDb {
        fn new(name: &str) -> TempDb {
            let dir =
                std::env::temp_dir().join(format!("tessera-store-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDb { dir }
        }
        fn url(&self) -> String {
            format!("sqlite://{}", self.dir.join("tessera.db").display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A second process (the CLI) ends sessions and disables a user in the same file: a server
    /// that caches sessions notices through the revocation generation, within its poll period.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_learns_of_changes_made_by_another_process() {
        use std::time::{Duration, Instant};
        let db = TempDb::new("generation");
        let server = tessera_store::SqliteStore::open(&db.url()).await.unwrap();
        let cached =
            tessera_store::CachedStore::new(server.clone(), Duration::from_secs(3600), 1000);
        let bus = tessera_store::ChangeBus::new();
        cached.follow(&bus);
        tessera_store::watch_generation(server.clone(), Duration::from_millis(50), bus);
        cached.create_user(&user("usr_a", "alice")).await.unwrap();
        let (h, s) = session("ses_1", "usr_a", 1_000);
        cached.create_session(&h, &s).await.unwrap();
        assert!(cached.session(&h).await.unwrap().is_some());
        assert!(!cached.user_by_id("usr_a").await.unwrap().unwrap().disabled);

        let cli = tessera_store::SqliteStore::open(&db.url()).await.unwrap();
        assert_eq!(cli.delete_sessions_of("usr_a", None).await.unwrap(), 1);
        assert!(cli.set_disabled("usr_a", true).await.unwrap());
        let started = Instant::now();
        loop {
            let gone = cached.session(&h).await.unwrap().is_none();
            let disabled = cached.user_by_id("usr_a").await.unwrap().unwrap().disabled;
            if gone && disabled {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "the cache kept a revoked session"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cli.close().await;
    }

    #[tokio::test]
    async fn users_sessions_and_reopen() {
        let db = TempDb::new("reopen");
        let s = tessera_store::SqliteStore::open(&db.url()).await.unwrap();
        users(s.clone()).await;
        sessions(s.clone()).await;
        let (h, sess) = session("ses_keep", "usr_c", 5_000);
        s.create_session(&h, &sess).await.unwrap();
        s.close().await;
        // Data survive a reopen; migrations run again harmlessly.
        let s = tessera_store::SqliteStore::open(&db.url()).await.unwrap();
        assert_eq!(s.session(&h).await.unwrap(), Some(sess));
        assert_eq!(s.user_by_name("alice").await.unwrap().unwrap().id, "usr_c");
        s.close().await;
    }
}

/// The Redis change feed: one `Everything` on connecting, then each change published, in
/// order, and it stays up (its keep-alive pings do not break it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_feed_carries_changes_and_stays_up() {
    use std::time::Duration;
    use tessera_core::Change;
    let (store, _guard) = services::postgres_redis().await;
    let bus = tessera_store::ChangeBus::new();
    let mut rx = bus.subscribe();
    let feed = store.redis().follow_changes(bus);
    let next = async |rx: &mut tessera_store::Changes| {
        tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next(&mut rx).await, Change::Everything);
    // Past two keep-alive pings, nothing but silence.
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), rx.next())
            .await
            .is_err(),
        "the feed should stay quiet and connected"
    );
    // Redis's own writes (sessions) announce themselves; the others are announced by the
    // domain once committed (`Stores::announce`), in the order it announces them.
    let (h, s) = session("ses_1", "usr_a", 1_000);
    store.sessions().create_session(&h, &s).await.unwrap();
    assert!(store.sessions().delete_session(&h).await.unwrap());
    assert_eq!(next(&mut rx).await, Change::Session(h));
    store
        .users()
        .create_user(&user("usr_a", "alice"))
        .await
        .unwrap();
    store.users().set_disabled("usr_a", true).await.unwrap();
    store.announce(vec![Change::User("usr_a".into())]).await;
    assert_eq!(next(&mut rx).await, Change::User("usr_a".into()));
    let denylist = tessera_core::Denylist::new(900);
    denylist
        .record(
            &store,
            tessera_jose::Revocation::Token("jti-1".into()),
            5_000,
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        Change::Denied {
            jti: "jti-1".into(),
            exp: 5_000
        }
    );
    store
        .sessions()
        .delete_sessions_of("usr_a", None)
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Change::SessionsOf("usr_a".into()));
    let (client, _) = tessera_core::NewClient {
        id: "svc".into(),
        grants: vec!["client_credentials".into()],
        ..Default::default()
    }
    .build("tessera", 1_000)
    .unwrap();
    store.clients().create_client(&client).await.unwrap();
    assert!(
        tessera_core::client::remove_client(&store, "svc")
            .await
            .unwrap()
    );
    assert_eq!(next(&mut rx).await, Change::Client("svc".into()));
    feed.abort();
}

/// A session's layout in Redis is what the instances of a cluster share, whatever their version
/// or setting. The compact form (the default) holds three fields; `SessionForm::Fields` writes
/// each field alone, as versions before it did and as they alone read. Whichever wrote a
/// session, a store of either setting reads it, lists it, touches it, gives it data, ends it and
/// purges it (the scripts find its user in either form), and reads what an earlier version
/// writes into it (`last_seen_at`, `data`).
#[tokio::test]
async fn redis_sessions_are_shared_across_forms_and_versions() {
    use tessera_store::SessionForm;
    let (compact, prefix, _guard) = services::redis_alone().await;
    let fields = services::redis(&prefix).writing(SessionForm::Fields);
    let client = redis::Client::open(services::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    const EARLIER: [&str; 9] = [
        "handle",
        "user_id",
        "created_at",
        "last_seen_at",
        "expires_at",
        "idle_timeout",
        "data",
        "user_agent",
        "ip",
    ];
    let some = |v: &str| Some(v.to_string());
    let lc = c.clone();
    let layout = async |h: &TokenHash| -> Vec<String> {
        let mut names: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("{prefix}:s:{}", h.to_hex()))
            .query_async(&mut lc.clone())
            .await
            .unwrap();
        names.sort();
        names
    };

    // A session an earlier version made, as its creation script wrote it.
    let user = "usr \"q\" é";
    let (old, mut s) = session("ses_old", user, 1_000);
    {
        let key = format!("{prefix}:s:{}", old.to_hex());
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(&[
                ("handle", "ses_old"),
                ("user_id", user),
                ("created_at", "1000"),
                ("last_seen_at", "1000"),
                ("expires_at", "4600"),
                ("idle_timeout", "600"),
                ("data", "{}"),
                ("user_agent", "test/1.0"),
                ("ip", "192.0.2.7"),
            ])
            .cmd("EXPIRE")
            .arg(&key)
            .arg(600)
            .cmd("SADD")
            .arg(format!("{prefix}:u:{user}"))
            .arg(old.to_hex())
            .cmd("ZADD")
            .arg(format!("{prefix}:sx"))
            .arg(1_600)
            .arg(old.to_hex())
            .exec_async(&mut c)
            .await
            .unwrap();
    }
    // This version's: one of each setting.
    let (new_compact, mut a) = session("ses_a", user, 1_000);
    a.user_agent = Some("Mozilla/5.0 \"quoted\" \\ é".into());
    a.ip = None;
    compact.create_session(&new_compact, &a).await.unwrap();
    let (new_fields, mut b) = session("ses_b", user, 1_000);
    b.data = json!({"k": [1, "é"]});
    fields.create_session(&new_fields, &b).await.unwrap();

    assert_eq!(
        layout(&new_compact).await,
        ["data", "fixed", "last_seen_at"]
    );
    let mut earlier_names: Vec<String> = EARLIER.iter().map(|n| n.to_string()).collect();
    earlier_names.sort();
    assert_eq!(layout(&new_fields).await, earlier_names);
    assert_eq!(layout(&old).await, earlier_names);
    let key = |h: &TokenHash| format!("{prefix}:s:{}", h.to_hex());
    let fixed: String = redis::cmd("HGET")
        .arg(key(&new_compact))
        .arg("fixed")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&fixed).unwrap(),
        json!(["ses_a", user, 1000, 4600, 600, a.user_agent, null])
    );
    // What an earlier version reads of a session of `Fields`: everything, each field alone.
    let earlier: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(key(&new_fields))
        .arg(&EARLIER[..])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        earlier,
        vec![
            some("ses_b"),
            some(user),
            some("1000"),
            some("1000"),
            some("4600"),
            some("600"),
            some(r#"{"k":[1,"é"]}"#),
            some("test/1.0"),
            some("192.0.2.7")
        ]
    );

    // Each store reads and lists the three.
    let listed = |mut v: Vec<(TokenHash, Session)>| {
        v.sort_by(|x, y| x.1.handle.cmp(&y.1.handle));
        v
    };
    for store in [&compact, &fields] {
        assert_eq!(store.session(&old).await.unwrap(), Some(s.clone()));
        assert_eq!(store.session(&new_compact).await.unwrap(), Some(a.clone()));
        assert_eq!(store.session(&new_fields).await.unwrap(), Some(b.clone()));
        assert_eq!(
            listed(store.sessions_of(user).await.unwrap()),
            vec![
                (new_compact, a.clone()),
                (new_fields, b.clone()),
                (old, s.clone())
            ]
        );
    }
    // Touched and given data by the store of the other setting, and by an earlier version
    // (one field each).
    fields.touch_session(&new_compact, 1_100).await.unwrap();
    // ... which keeps the user's set (600 s left) at least as long as the session (700 s).
    let set_ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}:u:{user}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((690..=700).contains(&set_ttl), "{set_ttl}");
    assert!(
        fields
            .set_session_data(&new_compact, &json!({"theme": "dark"}))
            .await
            .unwrap()
    );
    compact.touch_session(&new_fields, 1_200).await.unwrap();
    compact.touch_session(&old, 1_300).await.unwrap();
    redis::cmd("HSET")
        .arg(key(&old))
        .arg(&[("data", r#"{"n":2}"#)])
        .exec_async(&mut c)
        .await
        .unwrap();
    a.last_seen_at = 1_100;
    a.data = json!({"theme": "dark"});
    b.last_seen_at = 1_200;
    s.last_seen_at = 1_300;
    s.data = json!({"n": 2});
    for store in [&compact, &fields] {
        assert_eq!(store.session(&new_compact).await.unwrap(), Some(a.clone()));
        assert_eq!(store.session(&new_fields).await.unwrap(), Some(b.clone()));
        assert_eq!(store.session(&old).await.unwrap(), Some(s.clone()));
    }
    // A touch moves the expiry of a compact session too (its ends: 1_100 + 600 idle).
    let ends: f64 = redis::cmd("ZSCORE")
        .arg(format!("{prefix}:sx"))
        .arg(new_compact.to_hex())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ends, 1_700.0);

    // Ended one by one, across settings: gone from the user's set too.
    assert!(fields.delete_session(&new_compact).await.unwrap());
    assert!(compact.delete_session(&old).await.unwrap());
    assert_eq!(compact.session(&new_compact).await.unwrap(), None);
    assert_eq!(fields.session(&old).await.unwrap(), None);
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}:u:{user}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(members, vec![new_fields.to_hex()]);

    // Purged: a compact session and one of each field alone, both ended by 5_000.
    let (p, mut ps) = session("ses_p", user, 1_000);
    ps.user_agent = None;
    compact.create_session(&p, &ps).await.unwrap();
    let purged = compact.purge_expired_sessions(5_000).await.unwrap();
    assert_eq!((purged.removed, purged.more), (2, false));
    assert_eq!(compact.count_sessions().await.unwrap(), 0);
    let left: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}:u:{user}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!left, "the user's set is emptied");

    // A compact session whose `fixed` does not parse (only something other than tessera writes
    // one) is an error of the store, never a session.
    let corrupted = async |h: &TokenHash, s: &Session, fixed: &str| {
        compact.create_session(h, s).await.unwrap();
        redis::cmd("HSET")
            .arg(key(h))
            .arg("fixed")
            .arg(fixed)
            .exec_async(&mut lc.clone())
            .await
            .unwrap();
    };
    corrupted(&p, &ps, "[\"ses_p\"").await;
    for store in [&compact, &fields] {
        assert!(matches!(
            store.session(&p).await,
            Err(StoreError::Unavailable(_))
        ));
    }
    // Touched, nothing done; ended, or purged with a good session behind it, all the same.
    compact.touch_session(&p, 1_100).await.unwrap();
    assert!(fields.delete_session(&p).await.unwrap());
    assert_eq!(layout(&p).await, Vec::<String>::new());
    let (q, qs) = session("ses_q", user, 1_000);
    corrupted(&q, &qs, "{}").await;
    let (r, rs) = session("ses_r", user, 1_000);
    compact.create_session(&r, &rs).await.unwrap();
    let purged = compact.purge_expired_sessions(5_000).await.unwrap();
    assert_eq!((purged.removed, purged.more), (2, false));
    assert_eq!(compact.count_sessions().await.unwrap(), 0);
    assert_eq!(layout(&q).await, Vec::<String>::new());
}

/// A Redis of the test's own (for counts no other test disturbs), stopped when dropped.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is required");
        PrivateRedis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Redis's own count of the reads it made from its clients' sockets (`INFO stats`).
    async fn reads_processed(&self) -> u64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = None;
        for _ in 0..100 {
            if let Ok(conn) = client.get_multiplexed_async_connection().await {
                c = Some(conn);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut c.expect("the test's redis-server did not start"))
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Session reads that are ready at the same time leave in one pipeline (on the multi-threaded
/// runtime, as `tessera serve` runs): each caller gets its own session, or none, and Redis reads
/// them from its socket a few times, not once per session.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn concurrent_session_reads_are_gathered_and_each_gets_its_own() {
    use std::sync::Arc;
    let redis = PrivateRedis::start();
    let before_setup = redis.reads_processed().await;
    let store = tessera_store::RedisStore::open(
        &redis.url(),
        "gather",
        Arc::new(tessera_jose::ManualClock::new(1_000)),
        60,
    )
    .unwrap();
    let mut wanted = Vec::new();
    for i in 0..200 {
        let (h, s) = session(&format!("ses_{i}"), &format!("usr_{i}"), 1_000 + i);
        store.create_session(&h, &s).await.unwrap();
        wanted.push((h, Some(s)));
        if i % 4 == 0 {
            wanted.push((Token::generate(Kind::Session).hash(), None));
        }
    }
    // The count counts: 200 creations, each a command of its own.
    assert!(redis.reads_processed().await > before_setup + 200);

    // In waves of 40 (a turn of tokio's scheduler runs at most 61 tasks before it looks at its
    // I/O, which ends a batch early): 250 reads, each wave one pipeline. Measured: 14 or 15
    // socket reads in all; 51 to 212 with each read sent alone.
    let before = redis.reads_processed().await;
    for wave in wanted.chunks(40) {
        let reads: Vec<_> = wave
            .iter()
            .map(|(h, _)| {
                let (store, h) = (store.clone(), *h);
                tokio::spawn(async move { store.session(&h).await })
            })
            .collect();
        for (read, (_, want)) in reads.into_iter().zip(wave) {
            assert_eq!(&read.await.unwrap().unwrap(), want);
        }
    }
    // The INFO command that counts is one more read.
    let made = redis.reads_processed().await - before;
    assert!(
        made <= 30,
        "{made} socket reads for 250 session reads in 7 waves"
    );
}
