//! Signing keys in an HSM (`keys.backend = "pkcs11"`), against SoftHSM2 from Debian: every test
//! initialises a token of its own in a directory of its own (`SOFTHSM2_CONF`), and runs the real
//! binary on it. What is shown: keys are made in the token and sign there, for every algorithm,
//! and off-the-shelf libraries verify the tokens from the JWKS; the private key cannot be read
//! out and nothing of it is in the database; two instances and the CLI share one token through
//! rotation and retirement; the token lost and back gives 503 on issuance only, `degraded`, and
//! recovery without a restart; a wrong PIN stops the start; stored keys keep verifying after a
//! switch to the HSM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Dir, Server, interop_dir, run_check, service_client, tessera};
use crate::fleet::rig::{http, me, readyz, refresh, send};
use crate::fleet::{PW, Shared, eventually};

/// Debian's SoftHSM2 module (package softhsm2, which `scripts/test.sh` installs).
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "tessera";
/// A PIN no log line, port or id would hold by chance.
const PIN: &str = "hsm-pin-7731-zq";

/// A SoftHSM2 of the test's own: its configuration and token directory under `dir`, one token
/// labelled [`LABEL`] with user PIN [`PIN`].
struct Hsm {
    conf: PathBuf,
    tokens: PathBuf,
}

impl Hsm {
    fn new(dir: &Path) -> Hsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: scripts/test.sh installs softhsm2 (apt-get install softhsm2 opensc)"
        );
        let tokens = dir.join("hsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let o = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--so-pin", "0000", "--pin", PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util (package softhsm2)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Hsm { conf, tokens }
    }

    /// What points `tessera` at the token.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("SOFTHSM2_CONF", self.conf.to_str().unwrap()),
            ("TESSERA_KEYS_BACKEND", "pkcs11"),
            ("TESSERA_KEYS_PKCS11_MODULE", MODULE),
            ("TESSERA_KEYS_PKCS11_TOKEN_LABEL", LABEL),
            ("TESSERA_KEYS_PKCS11_PIN", PIN),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// The token's directory taken away: the token is gone for every process using it.
    fn away(&self) {
        std::fs::rename(&self.tokens, self.tokens.with_extension("away")).unwrap();
    }

    fn back(&self) {
        std::fs::rename(self.tokens.with_extension("away"), &self.tokens).unwrap();
    }

    /// The labels of the token's private keys, read by OpenSC's pkcs11-tool.
    fn private_key_labels(&self) -> Vec<String> {
        let o = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", LABEL, "--login"])
            .args(["--pin", PIN, "--list-objects", "--type", "privkey"])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool (package opensc)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("label:"))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// Asks the token, in a child process of this test binary (SoftHSM2 reads `SOFTHSM2_CONF`
    /// from the process's environment, which one test cannot set for itself alone), for the
    /// private value of key `kid`: see [`pkcs11_private_value_child`].
    fn assert_not_extractable(&self, kid: &str) {
        let o = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "hsm::pkcs11_private_value_child"])
            .args(["--nocapture", "--test-threads", "1"])
            .env("SOFTHSM2_CONF", &self.conf)
            .env("TESSERA_TEST_KID", kid)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
        assert!(
            text.contains(&format!("the token refuses the private value of {kid}")),
            "{text}"
        );
    }
}

/// The half of [`Hsm::assert_not_extractable`] that runs in the child: finds the private key
/// by its kid (`CKA_ID`), asks for its private value with `C_GetAttributeValue` (refused:
/// `CKR_ATTRIBUTE_SENSITIVE`), and reads the attributes that say it was made in the token and
/// never left it.
#[test]
#[ignore = "run by the HSM tests in a child process, with SOFTHSM2_CONF and TESSERA_TEST_KID"]
fn pkcs11_private_value_child() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    let Ok(kid) = std::env::var("TESSERA_TEST_KID") else {
        println!("only the HSM tests run this, in a child process with TESSERA_TEST_KID");
        return;
    };
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == LABEL)
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&PIN.to_owned().into()))
        .unwrap();
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(kid.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "one private key {kid}");
    let key = found[0];
    // CKA_VALUE holds an EC or Ed25519 private key; CKA_PRIVATE_EXPONENT and CKA_PRIME_1 an
    // RSA one. Each is either the key's and refused, or not of its type: never given.
    let secret = [
        AttributeType::Value,
        AttributeType::PrivateExponent,
        AttributeType::Prime1,
    ];
    let info = session.get_attribute_info(key, &secret).unwrap();
    assert!(
        info.iter().any(|i| matches!(i, AttributeInfo::Sensitive)),
        "{info:?}"
    );
    assert!(
        info.iter()
            .all(|i| matches!(i, AttributeInfo::Sensitive | AttributeInfo::TypeInvalid)),
        "{info:?}"
    );
    let flags = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Local,
            ],
        )
        .unwrap();
    for a in &flags {
        match a {
            Attribute::Sensitive(v)
            | Attribute::AlwaysSensitive(v)
            | Attribute::NeverExtractable(v)
            | Attribute::Local(v) => assert!(*v, "{a:?}"),
            Attribute::Extractable(v) => assert!(!*v, "{a:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(flags.len(), 5);
    println!("the token refuses the private value of {kid}");
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The status and JSON body of a request (`rig::send`, which must get an answer).
fn call(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    send(req).unwrap_or_else(|e| panic!("{e}"))
}

/// A client-credentials token request by `svc`.
fn client_token(base: &str, secret: &str) -> (u16, Value) {
    call(
        http()
            .post(format!("{base}/oauth2/token"))
            .basic_auth("svc", Some(secret))
            .form(&[("grant_type", "client_credentials")]),
    )
}

fn token_login(base: &str) -> (u16, Value) {
    call(
        http()
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": "alice", "password": PW, "mode": "token"})),
    )
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&tessera_jose::b64::decode(header.as_bytes()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// `tessera ARGS --data-dir DATA` with `env`; the output, which must be a success.
fn cli(args: &[&str], data: &Path, env: &[(String, String)], stdin: Option<&str>) -> Vec<u8> {
    let mut all = args.to_vec();
    all.extend(["--data-dir", data.to_str().unwrap()]);
    let o = tessera(&all, &pairs(env), stdin);
    assert!(
        o.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// alice (a person) and svc (a service, client credentials); svc's secret.
fn accounts(data: &Path, env: &[(String, String)]) -> String {
    cli(
        &["user", "add", "alice", "--password-stdin"],
        data,
        env,
        Some(PW),
    );
    service_client(data, &pairs(env))
}

fn keys_list(data: &Path, env: &[(String, String)]) -> Vec<Value> {
    serde_json::from_slice(&cli(&["keys", "list", "--json"], data, env, None)).unwrap()
}

/// The signing keys' rows in the SQLite database: (kid, length of `sealed`, `public_jwk`).
fn stored_keys(data: &Path) -> Vec<(String, i64, Option<String>)> {
    crate::fleet::block_on(async {
        let url = format!("sqlite://{}", data.join("tessera.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows: Vec<(String, i64, Option<String>)> =
            sqlx::query_as("SELECT kid, length(sealed), public_jwk FROM signing_keys")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        rows
    })
}

/// For each algorithm a token holds: the first key is made in the token, client-credentials and
/// token-mode logins are signed there, and PyJWT, jwcrypto and node jose verify them from the
/// JWKS. The private key cannot be read out of the token, and the database holds its public
/// JWK and nothing sealed.
#[test]
fn tokens_signed_in_the_hsm_verify_everywhere_for_every_algorithm() {
    let python = interop_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "interop/.venv is missing: scripts/test.sh installs it"
    );
    for alg in ["EdDSA", "ES256", "RS256", "PS256"] {
        let dir = Dir::new(&format!("hsm-{alg}"));
        let hsm = Hsm::new(&dir.0);
        let data = dir.0.join("data");
        let mut env = hsm.env();
        env.push(("TESSERA_TOKENS_ALGORITHM".into(), alg.into()));
        let server = Server::start(&data, &pairs(&env));
        let secret = accounts(&data, &env);

        let (status, body) = client_token(&server.url, &secret);
        assert_eq!(status, 200, "{alg}: {body}");
        let service_token = body["access_token"].as_str().unwrap().to_owned();
        let (status, body) = token_login(&server.url);
        assert_eq!(status, 200, "{alg}: {body}");
        let user_token = body["access_token"].as_str().unwrap().to_owned();

        let keys = keys_list(&data, &env);
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0]["backend"], "pkcs11");
        assert_eq!(keys[0]["alg"], alg);
        assert_eq!(keys[0]["state"], "active");
        let kid = keys[0]["kid"].as_str().unwrap().to_owned();
        assert_eq!(kid_of(&service_token), kid);
        assert_eq!(kid_of(&user_token), kid);
        assert_eq!(
            hsm.private_key_labels(),
            vec![kid.clone()],
            "one key, named"
        );

        let jwks = format!("{}/.well-known/jwks.json", server.url);
        let tokens = [service_token.clone(), user_token.clone()];
        let mut args = vec![
            interop_dir()
                .join("python/verify_jwks.py")
                .to_string_lossy()
                .into_owned(),
            jwks.clone(),
            alg.to_owned(),
        ];
        args.extend(tokens.iter().cloned());
        run_check(&python, &args);
        let mut args = vec![
            interop_dir()
                .join("node/verify.mjs")
                .to_string_lossy()
                .into_owned(),
            jwks,
            alg.to_owned(),
        ];
        args.extend(tokens.iter().cloned());
        run_check(Path::new("node"), &args);

        // The server verifies its own, too.
        let (status, body) = me(&server.url, &user_token).unwrap();
        assert_eq!(status, 200, "{body}");

        hsm.assert_not_extractable(&kid);
        let rows = stored_keys(&data);
        assert_eq!(rows.len(), 1);
        let (stored_kid, sealed_len, public) = &rows[0];
        assert_eq!(stored_kid, &kid);
        assert_eq!(
            *sealed_len, 0,
            "nothing sealed is stored for a key in the HSM"
        );
        let public: Value = serde_json::from_str(public.as_deref().unwrap()).unwrap();
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(public.get(private).is_none(), "{private} in {public}");
        }
        assert!(server.stop().success());
    }
}

/// The token goes away: issuance answers 503 (RFC 6749 `temporarily_unavailable` on the token
/// endpoint, a problem on the login), tokens and sessions already out keep working, `/readyz`
/// says `degraded`; the token comes back and all of it works again, without a restart, and the
/// refresh token issued before the outage still works.
#[test]
fn an_hsm_outage_stops_issuance_only_and_recovers() {
    let dir = Dir::new("hsm-outage");
    let hsm = Hsm::new(&dir.0);
    let data = dir.0.join("data");
    let env = hsm.env();
    let server = Server::start(&data, &pairs(&env));
    let secret = accounts(&data, &env);
    let base = server.url.clone();

    let (status, login) = token_login(&base);
    assert_eq!(status, 200, "{login}");
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh_token = login["refresh_token"].as_str().unwrap().to_owned();
    let (status, session) = call(
        http()
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": "alice", "password": PW})),
    );
    assert_eq!(status, 200, "{session}");
    let session = session["session_token"].as_str().unwrap().to_owned();
    let (status, ready) = readyz(&base).unwrap();
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("ready")),
        "{ready}"
    );
    assert_eq!(ready["checks"]["signing_keys"], true);

    hsm.away();
    let (status, body) = client_token(&base, &secret);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let r = http()
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "alice", "password": PW, "mode": "token"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let (status, body) = refresh(&base, &refresh_token).unwrap();
    assert_eq!(status, 503, "{body}");
    for token in [&access, &session] {
        let (status, body) = me(&base, token).unwrap();
        assert_eq!(status, 200, "what is out keeps working: {body}");
    }
    let (status, body) = call(
        http()
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": "alice", "password": PW})),
    );
    assert_eq!(status, 200, "a session login signs nothing: {body}");
    let (status, ready) = readyz(&base).unwrap();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["signing_keys"], false, "{ready}");
    assert_eq!(ready["checks"]["users"], true, "{ready}");

    hsm.back();
    eventually(
        Duration::from_secs(15),
        "issuance after the token is back",
        || client_token(&base, &secret).0 == 200,
    );
    eventually(
        Duration::from_secs(5),
        "ready after the token is back",
        || readyz(&base).unwrap().1["status"] == "ready",
    );
    // The refresh refused during the outage spent nothing: it works now.
    let (status, body) = refresh(&base, &refresh_token).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_login(&base).0, 200);
    let log = server.log_with(&["the PKCS#11 token answers again"]);
    assert!(!log.contains(PIN), "the PIN is never logged");
    assert!(server.stop().success());
}

/// The PIN changed on the token while tessera runs: at the reconnection after an outage the
/// token refuses the old one, and tessera does not offer it again (a token locks, or wipes,
/// after a few wrong PINs): issuance stays 503 and `/readyz` degraded until a restart with the
/// new PIN, which then works.
#[test]
fn a_pin_refused_at_a_reconnection_is_not_offered_again() {
    let dir = Dir::new("hsm-repin");
    let hsm = Hsm::new(&dir.0);
    let data = dir.0.join("data");
    let mut env = hsm.env();
    let server = Server::start(&data, &pairs(&env));
    let secret = accounts(&data, &env);
    assert_eq!(client_token(&server.url, &secret).0, 200);
    let new_pin = "hsm-pin-new-5512-qq";
    let o = Command::new("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", LABEL, "--login"])
        .args(["--pin", PIN, "--change-pin", "--new-pin", new_pin])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .expect("pkcs11-tool (package opensc)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    hsm.away();
    assert_eq!(client_token(&server.url, &secret).0, 503);
    hsm.back();
    // Past several reconnection periods: still refused, and the PIN offered once (one login
    // refused, logged once).
    for _ in 0..8 {
        let (status, body) = client_token(&server.url, &secret);
        assert_eq!(status, 503, "{body}");
        std::thread::sleep(Duration::from_millis(400));
    }
    let (_, ready) = readyz(&server.url).unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    let log = server.log_with(&["no more attempts"]);
    assert_eq!(log.matches("no more attempts").count(), 1, "{log}");
    assert!(!log.contains(PIN) && !log.contains(new_pin), "{log}");
    assert!(server.stop().success());
    env.retain(|(k, _)| k != "TESSERA_KEYS_PKCS11_PIN");
    env.push(("TESSERA_KEYS_PKCS11_PIN".into(), new_pin.into()));
    let server = Server::start(&data, &pairs(&env));
    assert_eq!(client_token(&server.url, &secret).0, 200);
    assert!(server.stop().success());
}

/// A wrong PIN, a missing one, a PIN in the file, or HS256 with an HSM: the start fails with one
/// sentence and exit 2, and the PIN is not in it.
#[test]
fn a_wrong_pin_or_a_shared_secret_fails_the_start() {
    let dir = Dir::new("hsm-pin");
    let hsm = Hsm::new(&dir.0);
    let data = dir.0.join("data");
    let data_dir = data.to_str().unwrap().to_owned();
    let serve = |env: &[(String, String)], extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_dir];
        args.extend_from_slice(extra);
        let o = tessera(&args, &pairs(env), None);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let with = |key: &str, value: Option<&str>| {
        let mut env = hsm.env();
        env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            env.push((key.to_owned(), v.to_owned()));
        }
        env
    };
    let (code, err) = serve(&with("TESSERA_KEYS_PKCS11_PIN", Some("987654")), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("refused the PIN"), "{err}");
    assert!(!err.contains("987654"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");

    let (code, err) = serve(&with("TESSERA_KEYS_PKCS11_PIN", None), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TESSERA_KEYS_PKCS11_PIN"), "{err}");

    let (code, err) = serve(&with("TESSERA_TOKENS_ALGORITHM", Some("HS256")), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("shared secret"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");

    // The PIN has no key in the configuration file; a file of its own works.
    let toml = dir.0.join("tessera.toml");
    std::fs::write(&toml, format!("[keys]\npkcs11_pin = \"{PIN}\"\n")).unwrap();
    let (code, err) = serve(
        &with("TESSERA_KEYS_PKCS11_PIN", None),
        &["--config", toml.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("pkcs11_pin"), "{err}");
    let pin_file = dir.0.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let env = with(
        "TESSERA_KEYS_PKCS11_PIN_FILE",
        Some(pin_file.to_str().unwrap()),
    );
    let env: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| k != "TESSERA_KEYS_PKCS11_PIN")
        .collect();
    let keys = keys_list(&data, &env);
    assert_eq!(keys[0]["backend"], "pkcs11", "{keys:?}");
}

/// A deployment with keys in the store moves to the HSM: the stored key keeps signing until a
/// rotation, and keeps verifying after it; the rotation (by the CLI) makes the new key in the
/// token, and the running server signs with it. Back on `store`, the start says why not.
#[test]
fn moving_from_the_store_to_the_hsm_keeps_every_token_valid() {
    let dir = Dir::new("hsm-migrate");
    let hsm = Hsm::new(&dir.0);
    let data = dir.0.join("data");
    // One issuer across the restarts (the servers listen on new ports): the tokens stay
    // this issuer's.
    let plain: Vec<(String, String)> = vec![
        ("TESSERA_TOKENS_KEY_ACTIVATION_DELAY".into(), "0s".into()),
        ("TESSERA_ISSUER".into(), "http://127.0.0.1:1".into()),
    ];
    let server = Server::start(&data, &pairs(&plain));
    let secret = accounts(&data, &plain);
    let (status, before) = token_login(&server.url);
    assert_eq!(status, 200, "{before}");
    let before = before["access_token"].as_str().unwrap().to_owned();
    let stored_kid = kid_of(&before);
    assert!(server.stop().success());

    let mut env = hsm.env();
    env.extend(plain.iter().cloned());
    let server = Server::start(&data, &pairs(&env));
    let me = |token: &str| me(&server.url, token).unwrap().0;
    assert_eq!(me(&before), 200);
    let (status, body) = client_token(&server.url, &secret);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        kid_of(body["access_token"].as_str().unwrap()),
        stored_kid,
        "the stored key signs until a rotation"
    );

    let out = cli(&["keys", "rotate"], &data, &env, None);
    let out = String::from_utf8_lossy(&out).into_owned();
    let keys = keys_list(&data, &env);
    let held: Vec<&Value> = keys.iter().filter(|k| k["backend"] == "pkcs11").collect();
    assert_eq!(held.len(), 1, "{keys:?}");
    let held_kid = held[0]["kid"].as_str().unwrap().to_owned();
    assert!(out.contains(&held_kid), "{out}");
    assert!(hsm.private_key_labels().contains(&held_kid));
    eventually(
        Duration::from_secs(15),
        "the server signs with the key in the HSM",
        || {
            let (_, body) = client_token(&server.url, &secret);
            body["access_token"]
                .as_str()
                .is_some_and(|t| kid_of(t) == held_kid)
        },
    );
    assert_eq!(me(&before), 200, "the stored key still verifies");
    let jwks: Value = http()
        .get(format!("{}/.well-known/jwks.json", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&stored_kid.as_str()) && kids.contains(&held_kid.as_str()),
        "{kids:?}"
    );
    assert!(server.stop().success());

    let o = tessera(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &pairs(&plain),
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("keys.backend must be pkcs11"), "{err}");
}

/// Two instances over one PostgreSQL and Redis and one token: the first key is made once and
/// both sign with it; a rotation by the CLI (a third process on the token) is picked up by
/// both; once no token the old key signed can be alive, it leaves the JWKS and is destroyed in
/// the token.
#[test]
fn two_instances_share_one_hsm_through_rotation_and_retirement() {
    let mut shared = Shared::new("hsm_pair");
    let hsm = Hsm::new(&shared.dir);
    for (k, v) in hsm.env() {
        shared.set(&k, &v);
    }
    // Retirement comes access_ttl + 60 s (the leeway) after the rotation.
    shared.set("TESSERA_TOKENS_ACCESS_TTL", "1s");
    let issuer = "http://127.0.0.1:1";
    let a = shared.instance("a", issuer);
    let b = shared.instance("b", issuer);
    let secret = service_client(&shared.cli_dir(), &shared.cli_env());
    let kid = |base: &str| {
        let (status, body) = client_token(base, &secret);
        assert_eq!(status, 200, "{body}");
        kid_of(body["access_token"].as_str().unwrap())
    };
    // Inside `eventually`: an answer that is not (yet) the one awaited, whatever it is.
    let signs_with = |base: &str, wanted: &str| {
        let (_, body) = client_token(base, &secret);
        body["access_token"]
            .as_str()
            .is_some_and(|t| kid_of(t) == wanted)
    };
    let first = kid(&a.url);
    assert_eq!(kid(&b.url), first, "one first key for both");
    assert_eq!(hsm.private_key_labels(), vec![first.clone()]);

    let out = shared.tessera(&["keys", "rotate"], None);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let labels = hsm.private_key_labels();
    assert_eq!(labels.len(), 2, "{labels:?}");
    let second = labels.iter().find(|l| **l != first).unwrap().clone();
    assert!(out.contains(&second), "{out}");
    for i in [&a, &b] {
        eventually(Duration::from_secs(15), "the rotation reaches both", || {
            signs_with(&i.url, &second)
        });
    }
    let jwks_kids = |base: &str| -> Vec<String> {
        let jwks: Value = http()
            .get(format!("{base}/.well-known/jwks.json"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        jwks_kids(&b.url).contains(&first),
        "published while tokens it signed live"
    );
    eventually(
        Duration::from_secs(120),
        "the retired key destroyed in the token",
        || hsm.private_key_labels() == vec![second.clone()],
    );
    for i in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "the retired key unpublished",
            || jwks_kids(&i.url) == vec![second.clone()],
        );
        assert_eq!(kid(&i.url), second);
    }
    eventually(Duration::from_secs(10), "key_destroyed logged", || {
        (a.log_text() + &b.log_text()).contains("key_destroyed")
    });
}
