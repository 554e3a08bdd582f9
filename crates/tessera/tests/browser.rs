//! The pages in a real browser (issue 17): headless Chromium, driven through WebDriver
//! (`chromedriver`, Debian's `chromium-driver`), against the real `tessera serve` with its
//! embedded SQLite store. An "application" is a loopback listener that answers any request with
//! 200, so the browser lands on its redirect URI and the test reads the code from the address.
//!
//! Every browser is fresh (a new session on an empty profile); its console is captured and a
//! SEVERE entry (an error, a blocked request, a Content Security Policy violation) fails the test.
//! Screenshots of each page at desktop and phone widths go to
//! `<target>/browser-screenshots/` (CI artifacts, never committed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

mod common;
mod webdriver;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Dir, free_port, tessera};
use webdriver::{Browser, DESKTOP, Driver, PHONE, png_size};

const PW: &str = "correct horse battery";
/// RFC 7636 Appendix B: the verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CLIENT: &str = "webapp";
const SCOPE: &str = "profile";
/// Each test's bound, every wait included.
const TEST_BOUND: Duration = Duration::from_secs(60);
/// How long a page may take to follow a click (a debug binary, two busy cores).
const STEP: Duration = Duration::from_secs(15);

/// `tessera serve` on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = data.parent().unwrap().join(format!("serve-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &listen,
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            url: format!("http://{listen}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.log().contains("tessera is serving") {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("the server exited ({status}): {}", server.log());
            }
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The application: answers `200 ok` to every request on a loopback port; stopped when dropped.
struct App {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl App {
    fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
                      Connection: close\r\n\r\nok",
                );
                let _ = conn.shutdown(Shutdown::Both);
            }
        });
        App {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/cb", self.port)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What each test runs on: a server with user alice and the public client `webapp` (PKCE,
/// redirect URI on the application), the application, and a chromedriver. Fields drop in order:
/// the driver first, the directory last.
struct Rig {
    driver: Driver,
    server: Server,
    app: App,
    deadline: Instant,
    name: &'static str,
    shots: std::cell::Cell<u32>,
    _dir: Dir,
}

impl Rig {
    fn start(name: &'static str) -> Rig {
        let deadline = Instant::now() + TEST_BOUND;
        let dir = Dir::new(&format!("browser-{name}"));
        let data = dir.0.join("data");
        let server = Server::start(&data);
        let d = data.to_str().unwrap();
        let o = tessera(
            &["user", "add", "alice", "--password-stdin", "--data-dir", d],
            &[],
            Some(&format!("{PW}\n")),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let app = App::start();
        let o = tessera(
            &[
                "client",
                "add",
                CLIENT,
                "--public",
                "--grant",
                "authorization_code",
                "--scope",
                SCOPE,
                "--redirect-uri",
                &app.redirect_uri(),
                "--json",
                "--data-dir",
                d,
            ],
            &[],
            None,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let driver = Driver::start(&dir.0);
        Rig {
            driver,
            server,
            app,
            deadline,
            name,
            shots: std::cell::Cell::new(0),
            _dir: dir,
        }
    }

    fn browser(&self) -> Browser {
        self.driver.browser(self.deadline)
    }

    /// The application's authorization request, with `extra` parameters.
    fn authorize_url(&self, state: &str, extra: &[(&str, &str)]) -> String {
        let redirect = self.app.redirect_uri();
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", redirect.as_str()),
            ("scope", SCOPE),
            ("state", state),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        reqwest::Url::parse_with_params(&format!("{}/oauth2/authorize", self.server.url), params)
            .unwrap()
            .to_string()
    }

    /// Screenshots of the current page at both widths, numbered in the order of the test.
    fn shoot(&self, b: &Browser, page: &str) {
        let n = self.shots.get() + 1;
        self.shots.set(n);
        let [phone, desktop] = b.screenshots(&format!("{}-{n}-{page}", self.name));
        let (pw, _) = png_size(&std::fs::read(&phone).unwrap());
        let (dw, _) = png_size(&std::fs::read(&desktop).unwrap());
        // The phone shot is narrower than the desktop one (the exact width is Chromium's).
        assert!(
            pw < dw && dw >= DESKTOP.0 / 2 && pw <= PHONE.0 * 2,
            "screenshots {pw} px and {dw} px wide"
        );
    }

    /// On the sign-in page: types alice's username and `password`, presses Sign in.
    fn sign_in(&self, b: &Browser, password: &str) {
        let user = b.wait_for("input[name=username]", STEP);
        self.shoot(b, "sign-in");
        b.type_into(&user, "alice");
        let pw = b.wait_for("input[name=password]", STEP);
        b.type_into(&pw, password);
        let submit = b.wait_for("form button[type=submit]", STEP);
        b.click(&submit);
    }

    /// On the consent page: presses Allow.
    fn allow(&self, b: &Browser) {
        let allow = b.wait_for("button[name=decision][value=allow]", STEP);
        self.shoot(b, "consent");
        b.click(&allow);
    }

    /// Waits for the browser to land on the redirect URI; on a timeout, a screenshot of what
    /// the person sees, then a failure naming it.
    fn land_on_redirect_uri(&self, b: &Browser, what: &str) -> String {
        let redirect = self.app.redirect_uri();
        let deadline = (Instant::now() + STEP).min(self.deadline);
        loop {
            let url = b.url();
            if url.starts_with(&redirect) {
                return url;
            }
            if Instant::now() >= deadline {
                self.shoot(b, "stuck");
                panic!(
                    "{what}: the browser did not land on {redirect} within {STEP:?};\n{}",
                    b.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The code of a redirect URI the browser landed on, after checking its state and issuer.
    fn code_of(&self, url: &str, state: &str) -> String {
        let url = reqwest::Url::parse(url).unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert!(!q.contains_key("error"), "an error came back: {url}");
        assert_eq!(q.get("state").map(String::as_str), Some(state), "{url}");
        if let Some(iss) = q.get("iss") {
            assert_eq!(iss.trim_end_matches('/'), self.server.url, "{url}");
        }
        q.get("code")
            .unwrap_or_else(|| panic!("no code in {url}"))
            .clone()
    }

    /// Exchanges `code` at the token endpoint as the application would; gives the answer.
    fn exchange(&self, code: &str) -> Value {
        let res = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .post(format!("{}/oauth2/token", self.server.url))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.app.redirect_uri()),
                ("client_id", CLIENT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .unwrap();
        let status = res.status();
        let body = res.text().unwrap();
        assert_eq!(status, 200, "the code exchange failed: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["access_token"].is_string(), "{v}");
        v
    }

    /// The whole first visit in `b`: the application's authorization request, sign-in, consent,
    /// the redirect URI with a code that the application exchanges.
    fn first_sign_in_with_consent(&self, b: &Browser, state: &str) {
        b.goto(&self.authorize_url(state, &[]));
        self.sign_in(b, PW);
        self.allow(b);
        let url = self.land_on_redirect_uri(b, "after Allow");
        let code = self.code_of(&url, state);
        self.exchange(&code);
    }
}

/// A new user in a fresh browser: the application sends them to tessera, they sign in and allow
/// it, and the browser lands on the redirect URI with a code the application exchanges.
#[test]
fn first_sign_in_with_consent_lands_on_the_redirect_uri_with_a_code() {
    let rig = Rig::start("first-sign-in");
    let b = rig.browser();
    rig.first_sign_in_with_consent(&b, "state-first");
    b.assert_no_severe_console_entry();
}

/// Someone who already allowed the application, in a fresh browser (their session ended, or
/// another device): they sign in and land on the redirect URI, without a consent page. The
/// sign-in form's redirects end at the application, so the page's `form-action` must allow it.
#[test]
fn a_returning_user_in_a_fresh_browser_lands_on_the_redirect_uri() {
    let rig = Rig::start("returning-user");
    {
        let first = rig.browser();
        rig.first_sign_in_with_consent(&first, "state-first");
        first.assert_no_severe_console_entry();
    }
    let b = rig.browser();
    b.goto(&rig.authorize_url("state-again", &[]));
    rig.sign_in(&b, PW);
    let url = rig.land_on_redirect_uri(&b, "a returning user after Sign in");
    let code = rig.code_of(&url, "state-again");
    rig.exchange(&code);
    b.assert_no_severe_console_entry();
}

/// `prompt=login`: a signed-in browser is asked for the password again (a shared computer),
/// then lands on the redirect URI with a code.
#[test]
fn prompt_login_asks_for_the_password_again() {
    let rig = Rig::start("prompt-login");
    let b = rig.browser();
    rig.first_sign_in_with_consent(&b, "state-first");
    b.goto(&rig.authorize_url("state-login", &[("prompt", "login")]));
    let redirect = rig.app.redirect_uri();
    let asked = b.wait("the sign-in form or the redirect URI", STEP, || {
        if b.url().starts_with(&redirect) {
            return Some(false);
        }
        b.find("input[name=password]").map(|_| true)
    });
    assert!(
        asked,
        "prompt=login: the signed-in browser was not asked for its password; {}",
        b.describe()
    );
    rig.sign_in(&b, PW);
    let url = rig.land_on_redirect_uri(&b, "prompt=login after Sign in");
    let code = rig.code_of(&url, "state-login");
    rig.exchange(&code);
    b.assert_no_severe_console_entry();
}
