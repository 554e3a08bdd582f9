//! The real `tessera` binary against hostile input (issue 15): URLs that hide their host, files
//! that others could read, and the like. Each test drives the binary as an administrator or an
//! attacker would and checks what they see.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Dir, Server, tessera};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[test]
fn client_add_judges_redirect_uris_on_the_parsed_url() {
    let dir = Dir::new("redirect");
    let d = dir.0.join("data");
    let d = d.to_str().unwrap();
    let add = |id: &str, uri: &str| {
        tessera(
            &[
                "client",
                "add",
                id,
                "--grant",
                "authorization_code",
                "--public",
                "--redirect-uri",
                uri,
                "--data-dir",
                d,
            ],
            &[],
            None,
        )
    };
    // Plain http to another host is refused today; dressed up with user information it must be
    // refused as well (it goes to evil.example, user `localhost`, password `80`).
    for (i, uri) in [
        "http://evil.example/cb",
        "http://localhost:80@evil.example/cb",
        "http://localhost@evil.example/cb",
        "https://user:pass@app.example/cb",
        "https://app.example/cb#",
        "https://app.example/cb#frag",
        "http://localhost.evil.example/cb",
    ]
    .iter()
    .enumerate()
    {
        let o = add(&format!("bad{i}"), uri);
        assert!(!o.status.success(), "{uri} was accepted");
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    for (i, uri) in [
        "https://app.example/cb",
        "http://127.0.0.1:8080/cb",
        "http://localhost/cb",
        "http://[::1]:9000/cb",
    ]
    .iter()
    .enumerate()
    {
        let o = add(&format!("good{i}"), uri);
        assert!(o.status.success(), "{uri}: {}", stderr(&o));
    }
}

#[test]
fn verify_refuses_key_urls_with_user_information() {
    // A loopback server that would answer: the refusal must come before any request.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for url in [
        format!("http://localhost:{port}@evil.example/jwks.json"),
        format!("https://user:pass@127.0.0.1:{port}/jwks.json"),
        format!("http://user@127.0.0.1:{port}/jwks.json"),
    ] {
        let o = tessera(&["verify", "x.y.z", "--jwks", &url], &[], None);
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr(&o));
        assert!(stderr(&o).contains("user information"), "{}", stderr(&o));
    }
    let o = tessera(
        &[
            "verify",
            "x.y.z",
            "--issuer",
            &format!("http://localhost:{port}@evil.example"),
        ],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

const PW: &str = "correct horse battery";

/// The `kid` in the header of a token mode login's access token.
fn signing_kid(url: &str) -> String {
    let res = http()
        .post(format!("{url}/auth/login"))
        .json(&serde_json::json!({"username": "alice", "password": PW, "mode": "token"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().unwrap();
    let jwt = body["access_token"].as_str().unwrap();
    tessera_jose::dangerous::decode_unverified(jwt, 8192)
        .unwrap()
        .header["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn of_two_keys_rotated_in_the_same_second_the_newer_signs() {
    let dir = Dir::new("keys");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let now0 = [("TESSERA_TOKENS_KEY_ACTIVATION_DELAY", "0s")];
    let server = Server::start(&data, &now0);
    let o = tessera(
        &["user", "add", "alice", "--password-stdin", "--data-dir", d],
        &[],
        Some(&format!("{PW}\n")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rotate = || {
        let o = tessera(&["keys", "rotate", "--data-dir", d], &now0, None);
        assert!(o.status.success(), "{}", stderr(&o));
        // "new EdDSA key KID: published now, signs from …"
        let text = String::from_utf8(o.stdout).unwrap();
        text.split_whitespace()
            .nth(3)
            .unwrap()
            .trim_end_matches(':')
            .to_owned()
    };
    let older = rotate();
    let newer = rotate();
    assert_ne!(older, newer);
    let o = tessera(&["keys", "list", "--json", "--data-dir", d], &[], None);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let at = |kid: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()["activates_at"]
            .as_i64()
            .unwrap()
    };
    assert!(at(&newer) > at(&older), "{list}");
    // The running server takes the newer key within its reload interval, and keeps it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while signing_kid(&server.url) != newer {
        assert!(
            Instant::now() < deadline,
            "the server never signed with the newer key: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(signing_kid(&server.url), newer);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn the_data_directory_and_database_are_private_to_the_owner() {
    let dir = Dir::new("perms");
    // A fresh start: DATA_DIR 0700, the database, its -wal and -shm and the master key 0600,
    // whatever the umask lets through (022 here: 0755 and 0644 before).
    let data = dir.0.join("data");
    let server = Server::start(&data, &[]);
    let res = http().get(format!("{}/readyz", server.url)).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(mode(&data), 0o700);
    for name in [
        "tessera.db",
        "tessera.db-wal",
        "tessera.db-shm",
        "master.key",
    ] {
        let p = data.join(name);
        assert!(p.exists(), "{name} missing");
        assert_eq!(mode(&p), 0o600, "{name}");
    }
    drop(server);

    // An existing directory and database that others can read are tightened at start, and the
    // log says so.
    let old = dir.0.join("old");
    let d = old.to_str().unwrap();
    let o = tessera(&["user", "list", "--data-dir", d], &[], None);
    assert!(o.status.success(), "{}", stderr(&o));
    set_mode(&old, 0o755);
    set_mode(&old.join("tessera.db"), 0o644);
    let server = Server::start(&old, &[]);
    assert_eq!(mode(&old), 0o700);
    assert_eq!(mode(&old.join("tessera.db")), 0o600);
    for name in ["tessera.db-wal", "tessera.db-shm"] {
        let p = old.join(name);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{name}");
        }
    }
    let log = server.log();
    assert!(log.contains("made private"), "{log}");
    assert!(log.contains("tessera.db"), "{log}");
}

/// A loopback HTTP server: `/keys` serves an empty JWK Set, any other path `p` answers 302 to
/// `redirects(p)`. Returns its base URL.
fn redirector(redirects: fn(&str, u16) -> String) -> String {
    use std::io::{BufRead, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let answer = if path == "/keys" {
                let body = r#"{"keys":[]}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    redirects(&path, port)
                )
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn key_fetches_follow_no_redirect_off_the_allowed_transports() {
    let base = redirector(|path, port| match path {
        "/to-evil" => "http://evil.example/keys".into(),
        "/to-userinfo" => format!("http://localhost:{port}@evil.example/keys"),
        "/to-user" => format!("http://user@127.0.0.1:{port}/keys"),
        _ => format!("http://127.0.0.1:{port}/keys"),
    });
    // Refused at the redirect, before any connection to where it points.
    for path in ["/to-evil", "/to-userinfo", "/to-user"] {
        let o = tessera(
            &["verify", "x.y.z", "--jwks", &format!("{base}{path}")],
            &[],
            None,
        );
        assert_eq!(o.status.code(), Some(1), "{path}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("redirected to a URL that is refused"),
            "{path}: {}",
            stderr(&o)
        );
    }
    // A redirect that stays on loopback is followed (and its empty key set refused as such).
    let o = tessera(
        &["verify", "x.y.z", "--jwks", &format!("{base}/ok")],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no usable signing key"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn client_chosen_values_in_the_log_are_quoted_and_escaped() {
    let dir = Dir::new("logs");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let server = Server::start(&data, &[]);
    let o = tessera(
        &["user", "add", "alice", "--password-stdin", "--data-dir", d],
        &[],
        Some(&format!("{PW}\n")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // An audience may hold quotes and a right-to-left override (not a control character): on a
    // terminal the rest of the line would read backwards, and an unquoted field is ambiguous.
    let aud = "urn:gw\"\u{202e}x=1";
    let o = tessera(
        &[
            "client",
            "add",
            "gateway",
            "--grant",
            "token-exchange",
            "--audience",
            aud,
            "--json",
            "--data-dir",
            d,
        ],
        &[],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let added: Value = serde_json::from_slice(&o.stdout).unwrap();
    let secret = added["client_secret"].as_str().unwrap();
    let login: Value = http()
        .post(format!("{}/auth/login", server.url))
        .json(&serde_json::json!({"username": "alice", "password": PW}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let session = login["session_token"].as_str().unwrap();
    let res = http()
        .post(format!("{}/oauth2/token", server.url))
        .basic_auth("gateway", Some(secret))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", session),
            (
                "subject_token_type",
                "urn:tessera:params:oauth:token-type:session",
            ),
            ("audience", aud),
        ])
        .send()
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("token_exchanged") {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    let line = log.lines().find(|l| l.contains("token_exchanged")).unwrap();
    assert!(
        !line.contains('\u{202e}'),
        "raw override in the log: {line:?}"
    );
    assert!(line.contains(r#"audience="urn:gw\"\u{202e}x=1""#), "{line}");
    assert!(line.contains(r#"client="gateway""#), "{line}");
}
