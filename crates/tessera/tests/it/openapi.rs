//! The OpenAPI document against the real server: schemathesis (pinned in
//! `interop/python/requirements.txt`, installed by `scripts/test.sh`) generates requests for
//! every operation `/openapi.json` describes, as a signed-in user and as a confidential client,
//! and fails on a 5xx, on a status, content type, header or body the document does not
//! describe, and on a request that takes longer than its timeout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Dir, Server, service_client, tessera};

const PW: &str = "correct horse battery";

/// Generated requests per operation and phase; the whole run stays within a few minutes.
const EXAMPLES: &str = "30";
/// A run that takes longer than this has hung somewhere.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/.venv/bin/schemathesis");
    assert!(
        venv.exists(),
        "{} is missing: scripts/test.sh installs it (or: python3 -m venv interop/.venv && interop/.venv/bin/pip install -r interop/python/requirements.txt)",
        venv.display()
    );
    venv
}

/// Runs schemathesis on `url`'s document with `config` and `args`; its output when it fails.
fn run(dir: &Path, url: &str, name: &str, config: &str, args: &[&str]) -> String {
    let config_file = dir.join(format!("{name}.toml"));
    std::fs::write(&config_file, config).unwrap();
    let out = dir.join(format!("{name}.out"));
    let mut child = Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
            "--max-examples",
            EXAMPLES,
            "--seed",
            "19",
            "--request-timeout",
            "10",
            // One worker: hypothesis on CPython 3.11 compiles lambdas' source, which is not
            // safe across threads ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--no-color",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "schemathesis ({name}) ran past {RUN_LIMIT:?}:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "schemathesis ({name}) failed:\n{text}");
    // The summary, for the record (cargo test shows it with --nocapture).
    let summary: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    eprintln!("schemathesis ({name}):\n{}", summary.join("\n"));
    text
}

#[test]
fn schemathesis_finds_no_5xx_no_undocumented_answer_and_no_hang() {
    let dir = Dir::new("schemathesis");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap().to_owned();
    // Registration open, so that it is exercised too; the login throttle's free attempts
    // raised, so that generated logins reach the password check rather than all being 429.
    let server = Server::start(
        &data,
        &[
            ("TESSERA_ALLOW_REGISTRATION", "true"),
            ("TESSERA_THROTTLE_IP_FREE_ATTEMPTS", "100000"),
            ("TESSERA_THROTTLE_ACCOUNT_FREE_ATTEMPTS", "100000"),
        ],
    );
    let o = tessera(
        &["user", "add", "alice", "--password-stdin", "--data-dir", &d],
        &[],
        Some(PW),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let secret = &service_client(&data, &[]);

    // Sessions of alice's (their tokens as a bearer and as the cookie) and an access token.
    let http = reqwest::blocking::Client::new();
    let login = |mode: &str| -> Value {
        http.post(format!("{}/auth/login", server.url))
            .json(&json!({"username": "alice", "password": PW, "mode": mode}))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap()
    };
    let session = |v: Value| v["session_token"].as_str().unwrap().to_owned();
    let main = session(login("session"));
    let to_log_out = session(login("session"));
    let access = login("token")["access_token"].as_str().unwrap().to_owned();
    let auth = |bearer: &str| {
        format!(
            "[auth.openapi.userBearer]\nbearer = \"{bearer}\"\n\
             [auth.openapi.sessionCookie]\napi_key = \"{bearer}\"\n\
             [auth.openapi.clientBasic]\nusername = \"svc\"\npassword = \"{secret}\"\n"
        )
    };
    let me = |token: &str| {
        http.get(format!("{}/auth/me", server.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
    };
    let url = &server.url;
    let stateless = "examples,coverage,fuzzing";

    // Every operation but those that end sessions, as alice's main session. Not the revocation
    // feed in any run: a stream that never ends by design (its pings keep any read timeout from
    // firing); its own suites follow it.
    run(
        &dir.0,
        url,
        "all",
        &auth(&main),
        &[
            "--phases",
            stateless,
            "--exclude-path-regex",
            "^/(auth/logout|auth/sessions.*|oauth2/revocations)$",
        ],
    );
    // Nothing generated ended a session it was not asked to end.
    assert_eq!(me(&main), 200);
    assert_eq!(me(&to_log_out), 200);
    // Sign-out, as a session and as an access token.
    run(
        &dir.0,
        url,
        "logout-session",
        &auth(&to_log_out),
        &["--phases", stateless, "--include-path", "/auth/logout"],
    );
    run(
        &dir.0,
        url,
        "logout-token",
        &auth(&access),
        &["--phases", stateless, "--include-path", "/auth/logout"],
    );
    // The caller's sessions: schemathesis reuses the ids GET /auth/sessions answers, so it ends
    // the very session it runs as; last, with the stateful phase (sequences of operations).
    run(
        &dir.0,
        url,
        "sessions",
        &auth(&main),
        &[
            "--phases",
            stateless,
            "--include-path-regex",
            "^/auth/sessions",
        ],
    );
    let last = session(login("session"));
    run(
        &dir.0,
        url,
        "stateful",
        &auth(&last),
        &[
            "--phases",
            "stateful",
            "--exclude-path",
            "/oauth2/revocations",
        ],
    );

    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(server.stop().success());
}
