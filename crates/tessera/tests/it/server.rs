//! The real `tessera` binary as an administrator runs it: `serve` with nothing but a data
//! directory, `user` commands on the same store while the server runs, the transport rules,
//! HTTPS, and graceful shutdown on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    Dir, Server, free_port, interop_dir, run_check, service_client, tessera, until_healthy,
};

const PW: &str = "correct horse battery";

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn login(url: &str, user: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{url}/auth/login"))
        .json(&json!({"username": user, "password": PW}))
        .send()
        .unwrap()
}

#[test]
fn serve_with_nothing_but_a_data_dir_and_administer_it_live() {
    let dir = Dir::new("live");
    let data = dir.0.join("data");
    let server = Server::start_as(&data, &[], "http");
    assert!(
        data.join("tessera.db").exists(),
        "the SQLite file is created on first start"
    );
    let health = client()
        .get(format!("{}/healthz", server.url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let d = data.to_str().unwrap();

    // A user added by the CLI can log in to the running server at once.
    let o = tessera(
        &["user", "add", "Alice", "--password-stdin", "--data-dir", d],
        &[],
        Some(&format!("{PW}\n")),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let res = login(&server.url, "alice");
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = |t: &str| {
        client()
            .get(format!("{}/auth/me", server.url))
            .bearer_auth(t)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(me(&token), 200);

    let o = tessera(&["user", "list", "--json", "--data-dir", d], &[], None);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["username"], "alice");
    assert_eq!(list[0]["disabled"], false);

    // Disabling by the CLI ends the user's sessions on the running server: its session cache
    // learns of it within its 250 ms poll.
    let o = tessera(&["user", "disable", "alice", "--data-dir", d], &[], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let disabled_at = Instant::now();
    while me(&token) != 401 {
        assert!(
            disabled_at.elapsed() < Duration::from_secs(1),
            "still accepted 1 s after disable"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(login(&server.url, "alice").status(), 401);
    let o = tessera(&["user", "enable", "alice", "--data-dir", d], &[], None);
    assert!(o.status.success());
    assert_eq!(login(&server.url, "alice").status(), 200);
    let o = tessera(&["user", "delete", "alice", "--data-dir", d], &[], None);
    assert!(o.status.success());
    assert_eq!(login(&server.url, "alice").status(), 401);

    // The audit trail names what happened and never a password or a token.
    let events = [
        "event=\"login_ok\"",
        "event=\"session_created\"",
        "event=\"login_failed\"",
    ];
    let log = server.log_with(&events);
    assert!(
        !log.contains(PW) && !log.contains(&token) && !log.contains("tss_"),
        "{log}"
    );

    // Refusals: one plain line, exit 1; bad flags exit 2.
    for (args, stdin) in [
        (
            vec!["user", "add", "bob", "--password-stdin", "--data-dir", d],
            "password\n",
        ),
        (
            vec![
                "user",
                "add",
                "bad name!",
                "--password-stdin",
                "--data-dir",
                d,
            ],
            "correct horse\n",
        ),
        (vec!["user", "disable", "nobody", "--data-dir", d], ""),
    ] {
        let o = tessera(&args, &[], Some(stdin));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("tessera: ") && !err.contains("panicked"),
            "{err}"
        );
    }
    // Without a terminal and without --password-stdin, nothing hangs: bad usage.
    let o = tessera(&["user", "add", "carol", "--data-dir", d], &[], None);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        tessera(&["user", "frobnicate"], &[], None).status.code(),
        Some(2)
    );

    assert!(server.stop().success());
}

#[test]
fn plain_http_off_loopback_needs_an_acknowledged_tls_proxy() {
    let dir = Dir::new("transport");
    let d = dir.0.to_str().unwrap();
    let o = tessera(
        &["serve", "--data-dir", d, "--listen", "0.0.0.0:0"],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing plain HTTP"));
    let o = tessera(
        &["serve", "--data-dir", d],
        &[("TESSERA_NO_SUCH_KEY", "1")],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("TESSERA_NO_SUCH_KEY"));
    let o = tessera(
        &["serve", "--data-dir", d],
        &[("TESSERA_SESSION_IDLE_TIMEOUT", "soon")],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn https_with_a_certificate_and_key() {
    let dir = Dir::new("tls");
    let cert = dir.0.join("cert.pem");
    let key = dir.0.join("key.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl could not make a test certificate");
    let env = [
        ("TESSERA_TLS_CERT", cert.to_str().unwrap()),
        ("TESSERA_TLS_KEY", key.to_str().unwrap()),
    ];
    let server = Server::start_as(&dir.0.join("data"), &env, "https");
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let res = https.get(format!("{}/healthz", server.url)).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("strict-transport-security").unwrap(),
        "max-age=63072000; includeSubDomains"
    );
    // Plain HTTP to the TLS port gets nothing useful.
    assert!(
        client()
            .get(server.url.replace("https", "http") + "/healthz")
            .send()
            .is_err()
    );
    assert!(server.stop().success());
    // A key that does not match is refused at start with a sentence, not a panic.
    let o = tessera(
        &["serve", "--data-dir", dir.0.to_str().unwrap()],
        &[
            ("TESSERA_TLS_CERT", cert.to_str().unwrap()),
            ("TESSERA_TLS_KEY", cert.to_str().unwrap()),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tls_key"));
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let dir = Dir::new("graceful");
    let data = dir.0.join("data");
    // Slow hashing makes a login a request that is still running when the signal comes.
    let env = [("TESSERA_PASSWORD_ITERATIONS", "40")];
    let o = tessera(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &env,
        Some(PW),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let server = Server::start_as(&data, &env, "http");
    let url = server.url.clone();
    let started = Instant::now();
    let in_flight = std::thread::spawn(move || login(&url, "alice").status());
    std::thread::sleep(Duration::from_millis(150));
    let log_file = server.log.clone();
    let status = server.stop();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(in_flight.join().unwrap(), 200);
    assert!(started.elapsed() < Duration::from_secs(20));
    // The log lines written by a thread of their own are all out when the process ends, its
    // last one too.
    let log = std::fs::read_to_string(log_file).unwrap();
    let at = |what: &str| log.find(what).unwrap_or_else(|| panic!("no {what}: {log}"));
    assert!(at("event=\"login_ok\"") < at("tessera stopped"), "{log}");
}

/// A log reader that stalls (here a pipe nobody reads, full after 64 KiB) stalls no request:
/// each token issued logs an audit line, and the lines wait for the reader in the server's
/// buffer. Once it reads again, every line is there.
#[test]
fn a_stalled_log_reader_stalls_no_request_and_loses_no_line() {
    let dir = Dir::new("stalled-log");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let secret = service_client(&data, &[]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--data-dir", d, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let killer = KillOnDrop(child);
    until_healthy(&url, Duration::from_secs(20), "the server");
    // 1,000 lines of about 110 bytes: near twice what the pipe holds.
    const TOKENS: usize = 1000;
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (quick, url, secret) = (quick.clone(), url.clone(), secret.clone());
            std::thread::spawn(move || {
                for _ in 0..TOKENS / 2 {
                    let res = quick
                        .post(format!("{url}/oauth2/token"))
                        .basic_auth("svc", Some(&secret))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body("grant_type=client_credentials")
                        .send()
                        .expect("a token request while the log is not read");
                    assert_eq!(res.status(), 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // The reader comes back: every line arrives.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut issued = 0;
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("event=\"client_token_issued\"") {
                issued += 1;
                if issued == TOKENS {
                    break;
                }
            }
        }
        issued
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "fewer than {TOKENS} lines came");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reader.join().unwrap(), TOKENS);
    drop(killer);
}

/// Kills the process when dropped (a test that fails does not leave it running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn keys_rotate_from_the_cli_reaches_the_running_server() {
    let dir = Dir::new("keys");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let server = Server::start_as(
        &data,
        &[("TESSERA_TOKENS_KEY_ACTIVATION_DELAY", "0s")],
        "http",
    );
    // The master key file is private to its owner.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let jwks = || -> Vec<String> {
        let v: Value = client()
            .get(format!("{}/.well-known/jwks.json", server.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = jwks();
    assert_eq!(before.len(), 1);
    let o = tessera(&["keys", "list", "--json", "--data-dir", d], &[], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["kid"], before[0].as_str());
    assert_eq!(list[0]["state"], "active");

    let o = tessera(
        &["keys", "rotate", "--alg", "ES256", "--data-dir", d],
        &[("TESSERA_TOKENS_KEY_ACTIVATION_DELAY", "0s")],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let started = Instant::now();
    while jwks().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the rotation did not reach the server"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = tessera(&["keys", "list", "--data-dir", d], &[], None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("ES256") && text.contains("active") && text.contains("retiring"),
        "{text}"
    );
    // A wrong master key cannot open the stored keys: refused with a sentence.
    let o = tessera(
        &["keys", "list", "--data-dir", d],
        &[(
            "TESSERA_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("master key"));
    assert!(server.stop().success());
}

#[test]
fn client_commands_on_the_store_of_a_running_server() {
    let dir = Dir::new("clients");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let server = Server::start_as(&data, &[], "http");
    let o = tessera(
        &[
            "client",
            "add",
            "billing",
            "--grant",
            "client_credentials",
            "--scope",
            "api:read api:write",
            "--audience",
            "https://api.example",
            "--json",
            "--data-dir",
            d,
        ],
        &[],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let added: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(added["client_id"], "billing");
    let secret = added["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tsc_"));
    // The running server knows it at once.
    let token = |secret: &str| {
        client()
            .post(format!("{}/oauth2/token", server.url))
            .basic_auth("billing", Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&scope=api:read")
            .send()
            .unwrap()
    };
    let res = token(&secret);
    assert_eq!(res.status(), 200);
    let body: Value = res.json().unwrap();
    assert_eq!(body["scope"], "api:read");
    // Listing never shows a secret, nor its hash.
    for args in [
        &["client", "list", "--data-dir", d][..],
        &["client", "list", "--json", "--data-dir", d][..],
    ] {
        let o = tessera(args, &[], None);
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("billing")
                && !text.contains(&secret[4..])
                && !text.contains("secret_hash"),
            "{text}"
        );
    }
    // The secret is nowhere in the database file in clear.
    let db = std::fs::read(data.join("tessera.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(&secret[4..]));
    // A public client: no secret; bad requests are refused with one sentence.
    let o = tessera(
        &[
            "client",
            "add",
            "spa",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            "http://127.0.0.1:9999/cb",
            "--public",
            "--data-dir",
            d,
        ],
        &[],
        None,
    );
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("tsc_"));
    for bad in [
        &[
            "client",
            "add",
            "billing",
            "--grant",
            "client_credentials",
            "--data-dir",
            d,
        ][..],
        &["client", "add", "x", "--grant", "password", "--data-dir", d][..],
        &[
            "client",
            "add",
            "x",
            "--grant",
            "authorization_code",
            "--data-dir",
            d,
        ][..],
        &["client", "remove", "nobody", "--data-dir", d][..],
    ] {
        let o = tessera(bad, &[], None);
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let o = tessera(&["client", "add", "x", "--data-dir", d], &[], None);
    assert_eq!(o.status.code(), Some(2), "--grant is required");
    // Removed: the running server (which caches clients) refuses it within a second.
    let o = tessera(&["client", "remove", "billing", "--data-dir", d], &[], None);
    assert!(o.status.success());
    let removed = Instant::now();
    while token(&secret).status() != 401 {
        assert!(
            removed.elapsed() < Duration::from_secs(1),
            "the removal did not reach the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.stop().success());
}

/// A server with a user, a service (client credentials) and a web application (authorization
/// code), all made with the CLI; the arguments the interop scripts take.
fn interop_server(dir: &Dir) -> (Server, Vec<String>) {
    let data = dir.0.join("data");
    let d = data.to_str().unwrap().to_owned();
    let server = Server::start_as(&data, &[], "http");
    let o = tessera(
        &["user", "add", "alice", "--password-stdin", "--data-dir", &d],
        &[],
        Some(PW),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let add = |args: &[&str]| -> Value {
        let mut all = vec!["client", "add"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--json", "--data-dir", &d]);
        let o = tessera(&all, &[], None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let svc = add(&[
        "svc",
        "--grant",
        "client_credentials",
        "--scope",
        "api:read api:write",
        "--audience",
        "https://api.example",
    ]);
    let web = add(&[
        "webapp",
        "--grant",
        "authorization_code",
        "--scope",
        "profile",
        "--audience",
        "https://app.example",
        "--redirect-uri",
        "https://app.example/cb",
    ]);
    let args = vec![
        server.url.clone(),
        "svc".into(),
        svc["client_secret"].as_str().unwrap().into(),
        "webapp".into(),
        web["client_secret"].as_str().unwrap().into(),
        "https://app.example/cb".into(),
        "alice".into(),
        PW.into(),
    ];
    (server, args)
}

/// Python: authlib drives client credentials and authorization code + PKCE (the pages by plain
/// HTTP), refresh, introspection and revocation; PyJWT's PyJWKClient verifies the tokens.
/// `scripts/test.sh` installs them into `interop/.venv` from `interop/python/requirements.txt`.
#[test]
fn interop_python_authlib_and_pyjwt() {
    let dir = Dir::new("interop-py");
    let (server, args) = interop_server(&dir);
    let python = std::env::var_os("TESSERA_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| interop_dir().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs it (or: python3 -m venv interop/.venv && interop/.venv/bin/pip install -r interop/python/requirements.txt)",
        python.display()
    );
    let mut all = vec![
        interop_dir()
            .join("python/check.py")
            .to_string_lossy()
            .into_owned(),
    ];
    all.extend(args);
    run_check(&python, &all);
    assert!(server.stop().success());
}

/// Node.js: openid-client (discovery, client credentials, introspection, revocation) and jose
/// (createRemoteJWKSet + jwtVerify). `scripts/test.sh` installs them with `npm ci` in `interop/node`.
#[test]
fn interop_node_jose_and_openid_client() {
    let dir = Dir::new("interop-node");
    let (server, args) = interop_server(&dir);
    let node = interop_dir().join("node");
    assert!(
        node.join("node_modules/openid-client").exists(),
        "interop/node/node_modules is missing: scripts/test.sh installs it (or: cd interop/node && npm ci)"
    );
    let all = vec![
        node.join("check.mjs").to_string_lossy().into_owned(),
        args[0].clone(),
        args[1].clone(),
        args[2].clone(),
    ];
    run_check(Path::new("node"), &all);
    assert!(server.stop().success());
}

/// A mass expiry (the sessions of an outage, of a bulk load, all idle past their end at once)
/// goes at the first purge however large it is: each batch of the purge is a write of its own
/// under the write timeout, so a backlog that takes longer than that timeout is not cut short
/// at it (and taken up a minute later, to be cut again), and no store timeout is counted.
#[test]
fn a_mass_expiry_of_sessions_goes_at_the_first_purge_whatever_its_size() {
    let dir = Dir::new("mass-expiry");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let o = tessera(&["migrate", "--data-dir", d], &[], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tessera(
        &["user", "add", "ann", "--password-stdin", "--data-dir", d],
        &[],
        Some(PW),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n: u32 = 80_000;
    let db = format!("sqlite://{}", data.join("tessera.db").display());
    let count = |db: String| async move {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    };
    crate::fleet::block_on(async {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        let user: String = sqlx::query_scalar("SELECT id FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        for i in 0..n {
            // Seen last at 0, idle for 30 minutes: long past its end.
            sqlx::query(
                "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, \
                 expires_at, idle_timeout, data) VALUES ($1, $2, $3, 0, 0, 4000000000, 1800, '{}')",
            )
            // Hashes in no order (as real ones): each removal its own place in the index.
            .bind(format!(
                "{:064x}",
                u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            ))
            .bind(format!("ses_{i}"))
            .bind(&user)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        pool.close().await;
    });
    let started = Instant::now();
    let server = Server::start_as(&data, &[("TESSERA_STORES_WRITE_TIMEOUT", "500ms")], "http");
    // The next purge is a minute after the first.
    let deadline = started + Duration::from_secs(45);
    loop {
        let left = crate::fleet::block_on(count(db.clone()));
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} of {n} sessions left after {:?}: {}",
            started.elapsed(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{n} expired sessions purged within {:?}", started.elapsed());
    assert_eq!(server.metric("tessera_active_sessions"), 0.0);
    let log = server.log_with(&["sessions_purged"]);
    assert!(!log.contains("purging expired sessions failed"), "{log}");
    assert!(server.stop().success());
}
