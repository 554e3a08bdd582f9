//! A small WebDriver client for the browser tests: a `chromedriver` on a free loopback port,
//! spoken to in its HTTP/JSON protocol (W3C WebDriver) with blocking `reqwest`, driving headless
//! Chromium (Debian's `chromium` and `chromium-driver`).
//!
//! Every browser is a new WebDriver session with a profile directory of its own (a fresh browser:
//! no cookies, no storage). Its console is captured (`goog:loggingPrefs`), and every wait is
//! bounded by a deadline. Dropping a [`Browser`] ends its session and kills whatever Chromium
//! process still runs on its profile; dropping the [`Driver`] kills `chromedriver`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The desktop and phone window sizes of the screenshots (CSS pixels).
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The `chromedriver` program: `CHROMEDRIVER`, else the one on the PATH.
fn chromedriver_program() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("chromedriver");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "chromedriver is not on the PATH: apt-get install -y chromium chromium-driver \
         (scripts/test.sh installs them as root; README, \"Test it\")"
    );
}

/// The Chromium binary, when it must be named: `CHROME_BIN`, else Debian's `/usr/bin/chromium`
/// (otherwise `chromedriver` looks for it itself).
fn chromium_binary() -> Option<String> {
    if let Ok(p) = std::env::var("CHROME_BIN") {
        return Some(p);
    }
    Path::new("/usr/bin/chromium")
        .exists()
        .then(|| "/usr/bin/chromium".to_owned())
}

/// A running `chromedriver`, killed when dropped.
pub struct Driver {
    child: Child,
    pub url: String,
    /// Where the browsers' profile directories go (the test's temporary directory).
    dir: PathBuf,
    log: PathBuf,
    browsers: std::cell::Cell<u32>,
}

impl Driver {
    /// Starts `chromedriver` on a free loopback port and waits until it is ready.
    pub fn start(dir: &Path) -> Driver {
        let program = chromedriver_program();
        let mut last = String::new();
        // A free port may be taken between the check and chromedriver's bind: try again then.
        for attempt in 0..3 {
            let port = crate::common::free_port();
            let log = dir.join(format!("chromedriver-{port}.log"));
            let child = Command::new(&program)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            let mut driver = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                dir: dir.to_owned(),
                log,
                browsers: std::cell::Cell::new(0),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            loop {
                if let Some(status) = driver.child.try_wait().unwrap() {
                    last = format!(
                        "chromedriver exited ({status}) on attempt {attempt}: {}",
                        std::fs::read_to_string(&driver.log).unwrap_or_default()
                    );
                    break;
                }
                let ready = client
                    .get(format!("{}/status", driver.url))
                    .send()
                    .ok()
                    .and_then(|r| r.json::<Value>().ok())
                    .is_some_and(|v| v["value"]["ready"] == json!(true));
                if ready {
                    return driver;
                }
                if Instant::now() > deadline {
                    last = "chromedriver did not become ready in 20 s".to_owned();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("{last}");
    }

    /// A fresh browser: a new session on a new, empty profile, at the desktop size, its
    /// console captured. `deadline` bounds every wait of the test.
    pub fn browser(&self, deadline: Instant) -> Browser {
        let n = self.browsers.get() + 1;
        self.browsers.set(n);
        let profile = self.dir.join(format!("profile-{n}"));
        std::fs::create_dir_all(&profile).unwrap();
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", profile.display()),
        ];
        if let Ok(extra) = std::env::var("TESSERA_CHROMIUM_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_owned));
        }
        let mut options = json!({ "args": args });
        if let Some(bin) = chromium_binary() {
            options["binary"] = json!(bin);
        }
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": options,
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let res = http()
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .unwrap();
        let status = res.status();
        let v: Value = res.json().unwrap();
        let Some(id) = v["value"]["sessionId"].as_str() else {
            panic!(
                "chromedriver refused a new session ({status}): {v}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        };
        let browser = Browser {
            base: format!("{}/session/{id}", self.url),
            profile,
            deadline,
            console: std::cell::RefCell::new(Vec::new()),
        };
        // The page load and script timeouts stay under the test's own bound.
        browser.cmd(
            "POST",
            "/timeouts",
            json!({ "pageLoad": 20_000, "script": 10_000, "implicit": 0 }),
        );
        browser
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A console entry of the browser.
#[derive(Clone, Debug)]
pub struct ConsoleEntry {
    pub level: String,
    pub message: String,
}

impl std::fmt::Display for ConsoleEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.level, self.message)
    }
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

/// One browser (a WebDriver session); its session is ended and its processes killed on drop.
pub struct Browser {
    base: String,
    profile: PathBuf,
    deadline: Instant,
    /// Every console entry read so far (reading the log empties the browser's buffer).
    console: std::cell::RefCell<Vec<ConsoleEntry>>,
}

impl Browser {
    /// Sends a WebDriver command; `Err((error, message))` when the driver answers with one.
    fn try_cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, (String, String)> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => http().get(&url),
            "DELETE" => http().delete(&url),
            _ => http().post(&url).json(&body),
        };
        let res = req
            .send()
            .map_err(|e| ("transport".to_owned(), e.to_string()))?;
        let ok = res.status().is_success();
        let v: Value = res
            .json()
            .map_err(|e| ("transport".to_owned(), e.to_string()))?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err((
                v["value"]["error"].as_str().unwrap_or("unknown").to_owned(),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|(e, m)| panic!("WebDriver {method} {path}: {e}: {m}"))
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn title(&self) -> String {
        self.try_cmd("GET", "/title", json!({}))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The visible text of the page's body (empty if there is none).
    pub fn text(&self) -> String {
        self.find("body")
            .and_then(|e| {
                self.try_cmd("GET", &format!("/element/{}/text", e.0), json!({}))
                    .ok()
            })
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The first element matching the CSS `selector`, if there is one now.
    pub fn find(&self, selector: &str) -> Option<Element> {
        let v = self
            .try_cmd(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": selector }),
            )
            .ok()?;
        v[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Every element matching the CSS `selector` now.
    pub fn find_all(&self, selector: &str) -> Vec<Element> {
        self.find_all_using("css selector", selector)
    }

    /// The first element matching the XPath `xpath` (to find a button by its text).
    pub fn find_xpath(&self, xpath: &str) -> Option<Element> {
        let v = self
            .try_cmd(
                "POST",
                "/element",
                json!({ "using": "xpath", "value": xpath }),
            )
            .ok()?;
        v[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Every element matching the XPath `xpath` now.
    pub fn find_all_xpath(&self, xpath: &str) -> Vec<Element> {
        self.find_all_using("xpath", xpath)
    }

    fn find_all_using(&self, using: &str, value: &str) -> Vec<Element> {
        let Ok(Value::Array(found)) = self.try_cmd(
            "POST",
            "/elements",
            json!({ "using": using, "value": value }),
        ) else {
            return Vec::new();
        };
        found
            .iter()
            .filter_map(|v| v[ELEMENT].as_str().map(|id| Element(id.to_owned())))
            .collect()
    }

    /// The element's visible text.
    pub fn element_text(&self, e: &Element) -> String {
        self.try_cmd("GET", &format!("/element/{}/text", e.0), json!({}))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Waits (bounded by `timeout` and the test's deadline) for an element matching `selector`.
    pub fn wait_for(&self, selector: &str, timeout: Duration) -> Element {
        self.wait(&format!("an element `{selector}`"), timeout, || {
            self.find(selector)
        })
    }

    /// Polls `probe` until it gives a value; on timeout, fails with what the browser shows.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = (Instant::now() + timeout).min(self.deadline);
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("waited {timeout:?} for {what}; {}", self.describe());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the URL to satisfy `pred`; gives the URL.
    pub fn wait_url(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait(what, timeout, || {
            let u = self.url();
            pred(&u).then_some(u)
        })
    }

    /// What the browser shows now, for failure messages: URL, title, text, console.
    pub fn describe(&self) -> String {
        let mut text = self.text();
        if text.len() > 600 {
            let mut cut = 600;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let console = self.console();
        let console = if console.is_empty() {
            "(none)".to_owned()
        } else {
            console
                .iter()
                .map(|c| format!("\n    {c}"))
                .collect::<String>()
        };
        format!(
            "the browser is at {}\n  title: {:?}\n  text: {:?}\n  console: {console}",
            self.url(),
            self.title(),
            text
        )
    }

    /// Types `text` into the element, replacing what it held (a page may fill it in).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/clear", e.0), json!({}));
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            json!({ "text": text }),
        );
    }

    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), json!({}));
    }

    /// The element's attribute or property `name` as the page has it now.
    pub fn property(&self, e: &Element, name: &str) -> Option<String> {
        self.try_cmd(
            "GET",
            &format!("/element/{}/property/{name}", e.0),
            json!({}),
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// Runs `script` (a function body) in the page, giving its return value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// Runs `script` (a function body) in the page; it finishes by calling its last argument
    /// with the result, which this gives (bounded by the session's script timeout).
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            json!({ "script": script, "args": args }),
        )
    }

    /// The accessibility violations axe-core finds in the current page: `axe_source` (the text
    /// of `axe.min.js`) is injected through WebDriver, which the page's Content Security Policy
    /// does not govern, then `axe.run()` checks the document. Gives axe's `violations` array (and
    /// fails if no rule passed: a run that checked nothing).
    pub fn axe_violations(&self, axe_source: &str) -> Vec<Value> {
        let loaded = self.execute(
            &format!("{axe_source}\n;return typeof window.axe === 'object';"),
            json!([]),
        );
        assert_eq!(loaded, json!(true), "axe-core did not load in the page");
        let got = self.execute_async(
            "const done = arguments[arguments.length - 1];\
             window.axe.run(document, { resultTypes: ['violations'] })\
               .then(r => done({ ok: r.violations, passed: r.passes.length }))\
               .catch(e => done({ error: String(e) }));",
            json!([]),
        );
        if let Some(e) = got.get("error") {
            panic!("axe.run failed: {e}");
        }
        // A run that checked nothing would pass anything.
        let passed = got["passed"].as_u64().unwrap_or(0);
        assert!(passed > 0, "axe.run checked nothing: {got}");
        match &got["ok"] {
            Value::Array(v) => v.clone(),
            other => panic!("axe.run gave {other}"),
        }
    }

    /// Every console entry since the browser started (SEVERE, WARNING, INFO, …).
    pub fn console(&self) -> Vec<ConsoleEntry> {
        // chromedriver keeps the legacy log endpoint under `/se/log` (and, older, `/log`).
        let got = self
            .try_cmd("POST", "/se/log", json!({ "type": "browser" }))
            .or_else(|_| self.try_cmd("POST", "/log", json!({ "type": "browser" })));
        if let Ok(Value::Array(entries)) = got {
            let mut all = self.console.borrow_mut();
            for e in entries {
                all.push(ConsoleEntry {
                    level: e["level"].as_str().unwrap_or_default().to_owned(),
                    message: e["message"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        self.console.borrow().clone()
    }

    /// The console entries at level SEVERE (errors, blocked requests, CSP violations).
    pub fn severe(&self) -> Vec<ConsoleEntry> {
        self.console()
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect()
    }

    /// Fails if the console holds a SEVERE entry.
    pub fn assert_no_severe_console_entry(&self) {
        let severe = self.severe();
        assert!(
            severe.is_empty(),
            "the browser's console has errors:{}\n  at {}",
            severe
                .iter()
                .map(|c| format!("\n    {c}"))
                .collect::<String>(),
            self.url()
        );
    }

    /// Sizes the window so that the page's viewport is `width` x `height` CSS pixels (headless
    /// Chromium's window counts a browser frame around the page).
    pub fn resize(&self, (width, height): (u32, u32)) {
        let set = |w: i64, h: i64| {
            self.cmd("POST", "/window/rect", json!({ "width": w, "height": h }));
        };
        let (width, height) = (i64::from(width), i64::from(height));
        set(width, height);
        let inner = self.execute("return [window.innerWidth, window.innerHeight];", json!([]));
        let (Some(iw), Some(ih)) = (inner[0].as_i64(), inner[1].as_i64()) else {
            return;
        };
        if (iw, ih) != (width, height) {
            set(width + (width - iw), height + (height - ih));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", json!({}));
        decode_base64(b64.as_str().unwrap_or_default())
    }

    /// Screenshots of the current page at the desktop and the phone width, written to
    /// `<target>/browser-screenshots/<name>-desktop.png` and `…-phone.png`; the window is left at
    /// the desktop size. Gives the two paths.
    pub fn screenshots(&self, name: &str) -> [PathBuf; 2] {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut out = Vec::new();
        for (size, label) in [(PHONE, "phone"), (DESKTOP, "desktop")] {
            self.resize(size);
            let png = self.screenshot();
            assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
            let path = dir.join(format!("{name}-{label}.png"));
            std::fs::write(&path, &png).unwrap();
            out.push(path);
        }
        [out[0].clone(), out[1].clone()]
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (Chromium quits), then kills anything left on this profile.
        let _ = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map(|c| c.delete(&self.base).send());
        kill_processes_using(&self.profile);
    }
}

/// Kills (SIGKILL) the processes whose command line names `profile`: the Chromium processes
/// this test started on it, found by their id, and no other.
fn kill_processes_using(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let uses = cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == needle.as_bytes());
        if uses {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Where screenshots go: `TESSERA_SCREENSHOTS`, else `browser-screenshots` in the Cargo target
/// directory the tests were built in (kept as CI artifacts, never committed).
pub fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TESSERA_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    // <target>/debug/tessera
    let bin = Path::new(env!("CARGO_BIN_EXE_tessera"));
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target"))
        .join("browser-screenshots")
}

/// The width and height of a PNG, from its IHDR chunk.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = val(c) else { continue }; // padding, line breaks
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
