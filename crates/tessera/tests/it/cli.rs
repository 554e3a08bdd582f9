//! The real `tessera` binary: decode, verify (file, URL, discovery) and keys generate, including
//! garbage input, which must give one plain line on stderr and a non-zero exit, never a panic.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tessera_jose::{Algorithm, Audience, Claims, Jwk, Signer, SigningKey};

fn tessera(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // The binary may stop reading early (size cap): a broken pipe is expected then.
        let _ = input.write_all(bytes);
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A refusal: the given exit code and exactly one plain line on stderr, no panic.
fn assert_refused(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    if code == 1 {
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("tessera: "), "{err}");
    }
    err
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Fixture {
    _dir: tempdir::Dir,
    jwks_path: String,
    jwks: String,
    signer: Signer,
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "tessera-cli-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn fixture() -> Fixture {
    let dir = tempdir::Dir::new();
    let key = SigningKey::generate(Algorithm::EdDSA, Some("k1")).unwrap();
    let public = key.verifying_key().unwrap().public_jwk().unwrap().clone();
    let jwks = serde_json::json!({ "keys": [public] }).to_string();
    let jwks_path = dir.0.join("jwks.json");
    std::fs::write(&jwks_path, &jwks).unwrap();
    Fixture {
        _dir: dir,
        jwks_path: jwks_path.to_str().unwrap().to_owned(),
        jwks,
        signer: Signer::new(key, Some("at+jwt")).unwrap(),
    }
}

fn claims(exp_in: i64) -> Claims {
    Claims {
        iss: Some("https://auth.example.com".into()),
        sub: Some("alice".into()),
        aud: Some(Audience::One("api".into())),
        exp: Some(now() + exp_in),
        iat: Some(now()),
        ..Claims::default()
    }
}

/// Serves `routes` (path → body) over HTTP/1.1 on loopback for `count` requests; a path mapped
/// to `None` is accepted and never answered.
fn serve(routes: Vec<(&'static str, Option<Vec<u8>>)>, count: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..count {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
            match routes.iter().find(|(p, _)| *p == path) {
                Some((_, Some(body))) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(body);
                }
                Some((_, None)) => held.push(s),
                None => {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    format!("http://{addr}")
}

#[test]
fn decode_shows_header_claims_and_readable_times() {
    let f = fixture();
    let token = f.signer.sign(&claims(14 * 60 + 30)).unwrap();
    let o = tessera(&["decode", &token], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("\"alg\": \"EdDSA\""), "{text}");
    assert!(text.contains("\"sub\": \"alice\""), "{text}");
    assert!(text.contains("expires in 14 min"), "{text}");
    assert!(text.contains("issued 0 s ago"), "{text}");
    assert!(text.contains("NOT checked"), "{text}");

    let expired = f.signer.sign(&claims(-3 * 3600 - 100)).unwrap();
    let o = tessera(
        &["decode", "--json", "-"],
        Some(format!("{expired}\n").as_bytes()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["signature_checked"], false);
    assert_eq!(doc["header"]["kid"], "k1");
    assert_eq!(doc["claims"]["sub"], "alice");
    assert_eq!(doc["times"]["exp"]["relative"], "expired 3 h ago");
    assert!(doc["times"]["exp"]["utc"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn decode_refuses_garbage_plainly() {
    for bad in [
        "garbage",
        "a.b.c",
        "....",
        "eyJhbGciOiJub25lIn0",
        "%%%.%%%.%%%",
        "e30.e30.e30=",
        "",
    ] {
        let o = tessera(&["decode", bad], None);
        let err = assert_refused(&o, 1);
        assert!(!err.contains(bad) || bad.len() < 3, "{err}");
    }
    // Broken UTF-8 on stdin, a huge stdin, a JSON serialization.
    assert_refused(&tessera(&["decode", "-"], Some(b"\xff\xfe.\xff.\xff")), 1);
    assert_refused(&tessera(&["decode", "-"], Some(&vec![b'A'; 200_000])), 1);
    assert_refused(&tessera(&["decode", r#"{"payload":"e30"}"#], None), 1);
    // Bad usage is exit 2.
    assert_refused(&tessera(&["decode"], None), 2);
    assert_refused(&tessera(&["decode", "--nope", "x"], None), 2);
}

#[test]
fn verify_with_a_jwks_file() {
    let f = fixture();
    let token = f.signer.sign(&claims(600)).unwrap();
    let base = [
        "verify",
        &token,
        "--jwks",
        &f.jwks_path,
        "--iss",
        "https://auth.example.com",
        "--aud",
        "api",
    ];
    let o = tessera(&base, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("valid: signed by key k1 (EdDSA)"),
        "{}",
        stdout(&o)
    );
    let o = tessera(&[&base[..], &["--json"]].concat(), None);
    let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["claims"]["sub"], "alice");

    // Each refusal: exit 1, the reason on stderr.
    let expired = f.signer.sign(&claims(-3600)).unwrap();
    let cases = [
        (
            vec!["verify", expired.as_str(), "--jwks", &f.jwks_path],
            "expired",
        ),
        (
            vec!["verify", &token, "--jwks", &f.jwks_path, "--aud", "billing"],
            "audience",
        ),
        (
            vec![
                "verify",
                &token,
                "--jwks",
                &f.jwks_path,
                "--iss",
                "https://evil.example.com",
            ],
            "issuer",
        ),
        (
            vec!["verify", &token, "--jwks", &f.jwks_path, "--typ", "JWT"],
            "type",
        ),
        (vec!["verify", "a.b.c", "--jwks", &f.jwks_path], "malformed"),
        (
            vec!["verify", &token, "--jwks", "/nonexistent/jwks.json"],
            "cannot read",
        ),
    ];
    for (args, reason) in cases {
        let err = assert_refused(&tessera(&args, None), 1);
        assert!(err.contains(reason), "{args:?}: {err}");
    }
    // A tampered token.
    let mut t = token.clone().into_bytes();
    let i = t.len() - 5;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    let err = assert_refused(
        &tessera(
            &[
                "verify",
                std::str::from_utf8(&t).unwrap(),
                "--jwks",
                &f.jwks_path,
            ],
            None,
        ),
        1,
    );
    assert!(
        err.contains("signature") || err.contains("malformed"),
        "{err}"
    );
    // --any-typ accepts a token without typ.
    let plain = Signer::new(
        SigningKey::from_jwk(&f.signer.key().to_jwk().unwrap(), None).unwrap(),
        None,
    )
    .unwrap()
    .sign(&claims(600))
    .unwrap();
    assert_refused(
        &tessera(&["verify", &plain, "--jwks", &f.jwks_path], None),
        1,
    );
    assert!(
        tessera(
            &["verify", &plain, "--jwks", &f.jwks_path, "--any-typ"],
            None
        )
        .status
        .success()
    );
}

#[test]
fn verify_bad_usage_is_exit_2() {
    let f = fixture();
    let token = f.signer.sign(&claims(600)).unwrap();
    for args in [
        vec!["verify", token.as_str()],
        vec!["verify", &token, "--jwks", &f.jwks_path, "--leeway", "-5"],
        vec![
            "verify",
            &token,
            "--jwks",
            &f.jwks_path,
            "--issuer",
            "https://a.example",
        ],
        vec!["verify", &token, "--jwks", "http://198.51.100.7/jwks.json"],
    ] {
        assert_refused(&tessera(&args, None), 2);
    }
}

#[test]
fn verify_with_a_jwks_url_and_with_discovery() {
    let f = fixture();
    let token = f.signer.sign(&claims(600)).unwrap();
    let url = serve(vec![("/jwks.json", Some(f.jwks.clone().into_bytes()))], 1);
    let o = tessera(
        &["verify", &token, "--jwks", &format!("{url}/jwks.json")],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // Discovery: the document's issuer must match, and becomes the expected iss. The server is
    // bound first, so that tokens can name its address as their issuer.
    let jwks_body = f.jwks.clone().into_bytes();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}");
    let doc = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json")})
        .to_string();
    std::thread::spawn(move || {
        for _ in 0..4 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = if req.starts_with("GET /.well-known/openid-configuration ") {
                doc.clone().into_bytes()
            } else {
                jwks_body.clone()
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    let mut c = claims(600);
    c.iss = Some(issuer.clone());
    let good = f.signer.sign(&c).unwrap();
    let o = tessera(&["verify", &good, "--issuer", &issuer], None);
    assert!(o.status.success(), "{}", stderr(&o));
    // The token from another issuer is refused.
    let err = assert_refused(&tessera(&["verify", &token, "--issuer", &issuer], None), 1);
    assert!(err.contains("issuer"), "{err}");
}

#[test]
fn a_url_is_fetched_with_a_size_cap_and_a_timeout() {
    let f = fixture();
    let token = f.signer.sign(&claims(600)).unwrap();
    let url = serve(
        vec![
            ("/big", Some(vec![b' '; 2 * 1024 * 1024])),
            ("/hang", None),
            ("/notjson", Some(b"<html>".to_vec())),
        ],
        3,
    );
    let err = assert_refused(
        &tessera(&["verify", &token, "--jwks", &format!("{url}/big")], None),
        1,
    );
    assert!(err.contains("more than"), "{err}");
    let err = assert_refused(
        &tessera(
            &["verify", &token, "--jwks", &format!("{url}/notjson")],
            None,
        ),
        1,
    );
    assert!(err.contains("not JSON"), "{err}");
    let started = Instant::now();
    let err = assert_refused(
        &tessera(
            &[
                "verify",
                &token,
                "--jwks",
                &format!("{url}/hang"),
                "--timeout",
                "1",
            ],
            None,
        ),
        1,
    );
    assert!(err.contains("in time") || err.contains("within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn keys_generate_makes_working_key_pairs() {
    let dir = tempdir::Dir::new();
    for alg in [
        "EdDSA", "ES256", "RS256", "PS256", "HS256", "HS384", "HS512",
    ] {
        let o = tessera(&["keys", "generate", "--alg", alg, "--json"], None);
        assert!(o.status.success(), "{alg}: {}", stderr(&o));
        let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
        let private: Jwk = serde_json::from_value(doc["private"].clone()).unwrap();
        assert!(private.is_private(), "{alg}");
        assert_eq!(private.alg.as_deref(), Some(alg));
        let signer = Signer::new(
            SigningKey::from_jwk(&private, None).unwrap(),
            Some("at+jwt"),
        )
        .unwrap();
        let token = signer.sign(&claims(600)).unwrap();
        // Verify with what a relying party gets: the public JWK (HMAC: the secret itself).
        let key_file = dir.0.join(format!("{alg}.json"));
        if alg.starts_with("HS") {
            assert!(doc["public"].is_null());
            std::fs::write(&key_file, doc["private"].to_string()).unwrap();
        } else {
            let public: Jwk = serde_json::from_value(doc["public"].clone()).unwrap();
            assert!(!public.is_private(), "{alg}");
            assert_eq!(public.kid, private.kid);
            std::fs::write(&key_file, serde_json::json!({"keys": [public]}).to_string()).unwrap();
        }
        let o = tessera(
            &["verify", &token, "--jwks", key_file.to_str().unwrap()],
            None,
        );
        assert!(o.status.success(), "{alg}: {}", stderr(&o));
    }
    let o = tessera(
        &["keys", "generate", "--alg", "EdDSA", "--kid", "2026-11"],
        None,
    );
    assert!(stdout(&o).contains("\"kid\": \"2026-11\""));
    assert!(stdout(&o).contains("keep it secret"));
    for bad in ["none", "hs256", "ES512"] {
        assert_refused(&tessera(&["keys", "generate", "--alg", bad], None), 2);
    }
}

#[test]
fn migrate_brings_the_schema_up_to_date() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-{}-migrate", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    for _ in 0..2 {
        // Twice: the second run finds nothing to do and says the same.
        let o = tessera(&["migrate", "--data-dir", d], None);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("schema up to date"), "{}", stdout(&o));
        assert!(data.join("tessera.db").exists());
    }
    let config = dir.join("memory.toml");
    std::fs::write(&config, "database_url = \"memory:\"\n").unwrap();
    let o = tessera(&["migrate", "--config", config.to_str().unwrap()], None);
    let err = assert_refused(&o, 2);
    assert!(err.contains("no schema to migrate"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
