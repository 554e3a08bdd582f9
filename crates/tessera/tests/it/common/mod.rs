//! What the tests of the real binary share: a temporary directory removed afterwards, a free
//! loopback port, and a run of the `tessera` command line.

// `faults_latency` includes this module too, and uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A directory of its own under the system's temporary one, named after the test process and
/// `name`, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("tessera-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tessera args` with `env` and `stdin`, and waits for it.
pub fn tessera(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        let _ = input.write_all(s.as_bytes());
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Waits until `url`'s `/healthz` answers 200, for at most `within`; `what` names the process
/// in the failure.
pub fn until_healthy(url: &str, within: Duration, what: &str) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + within;
    while !client
        .get(format!("{url}/healthz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Registers the confidential client `svc` (client credentials, scope `api:read`) in the store
/// at `data` with the CLI, run with `env`; its secret.
pub fn service_client(data: &Path, env: &[(&str, &str)]) -> String {
    let o = tessera(
        &[
            "client",
            "add",
            "svc",
            "--grant",
            "client_credentials",
            "--scope",
            "api:read",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        env,
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let added: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    added["client_secret"].as_str().unwrap().to_owned()
}

/// `tessera serve` on a free loopback port with `env`, its log in a file beside the data
/// directory; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    pub fn start(data: &Path, env: &[(&str, &str)]) -> Server {
        Server::launch(data, env, &[], "http")
    }

    /// As [`Server::start`], its URL with `scheme` (`https` when the environment gives it a
    /// certificate).
    pub fn start_as(data: &Path, env: &[(&str, &str)], scheme: &str) -> Server {
        Server::launch(data, env, &[], scheme)
    }

    /// As [`Server::start_as`], run through `wrapper` when given (such as
    /// `prlimit --nofile=64:64`).
    pub fn launch(data: &Path, env: &[(&str, &str)], wrapper: &[&str], scheme: &str) -> Server {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = data.parent().unwrap().join(format!("serve-{port}.log"));
        let bin = env!("CARGO_BIN_EXE_tessera");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["serve", "--data-dir", data.to_str().unwrap(), "--listen"])
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut server = Server {
            child,
            url: format!("{scheme}://{addr}"),
            addr,
            log,
        };
        // Ready when it says so (after binding). A bare TCP connect could be answered by the
        // kernel's self-connect on an ephemeral port before the server is up.
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `done` holds for it (within 10 s): the server writes its log lines from a
    /// thread of their own, a few milliseconds after the request that logged them was answered.
    pub fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "the log never got there:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log once it has every one of `needles` (within 10 s).
    pub fn log_with(&self, needles: &[&str]) -> String {
        self.log_until(|log| needles.iter().all(|n| log.contains(n)))
    }

    /// The value of the `/metrics` line that starts with `line_start`.
    pub fn metric(&self, line_start: &str) -> f64 {
        let text = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .get(format!("{}/metrics", self.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
    }

    /// SIGTERM, then the exit status (within 20 s).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The interoperability clients' directory (`interop/`: the pinned Python and Node.js clients).
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

/// Runs an interop script; it must succeed and end with "all checks passed", and its output is
/// shown when it does not.
pub fn run_check(program: &Path, args: &[String]) {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (see README, \"Test it\")",
                program.display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{} failed:\n{text}", program.display());
    assert!(text.contains("all checks passed"), "{text}");
}
