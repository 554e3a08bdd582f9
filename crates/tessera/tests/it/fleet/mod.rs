//! What the tests of many real `tessera serve` processes share: a PostgreSQL schema and Redis
//! prefix of their own ([`Shared`]), the instances ([`Instance`]), a redis-server of the test's
//! own that it kills, stops and restarts ([`OwnRedis`]), and a TCP relay to PostgreSQL that it
//! cuts and black-holes ([`Relay`]).
//!
//! [`rig`] puts them together for the fault tests. A test file that uses this module declares
//! `mod common;` and `mod fleet;`.

// Each test binary includes this module and uses part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::free_port;
pub use tessera_testkit::Relay;

pub mod rig;

pub const PW: &str = "correct horse battery";
/// The promise: a revocation made on one instance is refused by every instance within this.
pub const WITHIN: Duration = Duration::from_secs(1);

pub fn postgres_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `host:port` of the machine's PostgreSQL.
pub fn postgres_addr() -> String {
    host_port(&postgres_url()).to_owned()
}

/// The `host:port` part of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> &str {
    url.split('@')
        .nth(1)
        .and_then(|h| h.split('/').next())
        .unwrap_or("127.0.0.1:5432")
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Polls `f` until it holds, for at most `limit`.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A PostgreSQL schema, a Redis prefix, a master key and a scratch directory of one test, and
/// the environment that points `tessera` at them. Dropped: all removed, except the scratch
/// directory (the instances' logs) of a test that failed.
pub struct Shared {
    pub schema: String,
    pub prefix: String,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Shared {
    pub fn new(name: &str) -> Shared {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!("tessera_test_{name}_{}_{nanos}", std::process::id());
        block_on(async {
            let pool = sqlx::PgPool::connect(&postgres_url()).await.expect(
                "PostgreSQL at TEST_POSTGRES_URL (default 127.0.0.1:5432/test) is required",
            );
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        });
        let dir = std::env::temp_dir().join(&schema);
        std::fs::create_dir_all(&dir).unwrap();
        let url = postgres_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        let env = vec![
            (
                "TESSERA_DATABASE_URL".to_owned(),
                format!("{url}{sep}options[search_path]={schema}"),
            ),
            ("TESSERA_REDIS_URL".to_owned(), redis_url()),
            ("TESSERA_REDIS_PREFIX".to_owned(), schema.clone()),
            // Every instance unseals the same signing keys.
            (
                "TESSERA_MASTER_KEY".to_owned(),
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".to_owned(),
            ),
            // Debug binaries, several to a test and several tests at once on a two-core
            // machine: a statement may take longer than the production default (500 ms), and
            // a store marked down for that would fail tests that are not about it. The
            // latency suite (faults_latency.rs) runs with the default.
            ("TESSERA_STORES_TIMEOUT".to_owned(), "3s".to_owned()),
            (
                "TESSERA_TOKENS_KEY_ACTIVATION_DELAY".to_owned(),
                "0s".to_owned(),
            ),
        ];
        Shared {
            prefix: schema.clone(),
            schema,
            dir,
            env,
        }
    }

    /// Overrides one variable of the instances' environment.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Points the instances (and the command line) at PostgreSQL through `relay`.
    pub fn through(&mut self, relay: &Relay) {
        let db = self
            .env
            .iter()
            .find(|(k, _)| k == "TESSERA_DATABASE_URL")
            .unwrap()
            .1
            .clone();
        let relayed = db.replacen(host_port(&db), &format!("127.0.0.1:{}", relay.port), 1);
        self.set("TESSERA_DATABASE_URL", &relayed);
    }

    /// The environment of this store's CLI, as [`crate::common::tessera`] takes it.
    pub fn cli_env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The directory this store's CLI runs in (`--data-dir`).
    pub fn cli_dir(&self) -> PathBuf {
        self.dir.join("cli")
    }

    /// The CLI on this store ([`crate::common::tessera`] with its directory and environment),
    /// which must succeed.
    pub fn tessera(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let dir = self.cli_dir();
        let mut all = args.to_vec();
        all.extend(["--data-dir", dir.to_str().unwrap()]);
        let out = crate::common::tessera(&all, &self.cli_env(), stdin);
        assert!(
            out.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// An instance named `name`, with `issuer` (all instances of a cluster share it). Its log
    /// (stderr, at `info`) is kept in the scratch directory until the test ends.
    pub fn instance(&self, name: &str, issuer: &str) -> Instance {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = self.dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "serve",
                "--listen",
                &listen,
                "--issuer",
                issuer,
                "--data-dir",
            ])
            .arg(self.dir.join(name))
            .env("RUST_LOG", "info,sqlx::postgres::notice=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("TESSERA_INSTANCE_NAME", name)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Ready when it says so (after binding): a bare TCP connect could be answered by the
        // kernel's self-connect on an ephemeral port before the server is up.
        let deadline = Instant::now() + Duration::from_secs(20);
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        while !text().contains("tessera is serving") {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("instance {name} exited ({status}): {}", text());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("instance {name} did not start: {}", text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Instance {
            child,
            name: name.to_owned(),
            url: format!("http://{listen}"),
            log,
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let (schema, prefix) = (self.schema.clone(), self.prefix.clone());
        block_on(async move {
            let drop_schema = async {
                if let Ok(pool) = sqlx::PgPool::connect(&postgres_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(20), drop_schema).await;
            let remove_keys = async {
                if let Ok(r) = tessera_store::RedisStore::open(
                    &redis_url(),
                    &prefix,
                    Arc::new(tessera_jose::SystemClock),
                    60,
                ) {
                    let _ = r.remove_all().await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), remove_keys).await;
        });
        if std::thread::panicking() {
            // The instances' logs, for the failure's post-mortem.
            eprintln!("kept for inspection: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running `tessera serve`; killed when dropped.
pub struct Instance {
    pub child: Child,
    pub name: String,
    pub url: String,
    pub log: PathBuf,
}

impl Instance {
    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis of the test's own, on its own port, that the test kills (SIGKILL), stops (SIGSTOP),
/// continues and starts again on the same port.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
    stopped: bool,
}

impl OwnRedis {
    /// Started in `dir`; with `aof`, every write reaches the disk before it is acknowledged, so
    /// a restart keeps everything.
    pub fn start(dir: PathBuf, aof: bool) -> OwnRedis {
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = OwnRedis {
            port: free_port(),
            dir,
            aof,
            child: None,
            stopped: false,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again), and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.aof {
            // Every write reaches the disk before it is acknowledged.
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        self.child = Some(cmd.spawn().expect("redis-server is required on the PATH"));
        self.stopped = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"PING\r\n")?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf)?;
                Ok(buf)
            });
            if ping.is_ok_and(|b| &b == b"+PONG\r\n") {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye, no final save.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stopped {
                self.signal(&c, "CONT");
                self.stopped = false;
            }
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGSTOP: a hung Redis. Connections are still accepted (by the kernel), nothing is
    /// answered.
    pub fn stop(&mut self) {
        let c = self.child.as_ref().expect("redis-server is not running");
        self.signal(c, "STOP");
        self.stopped = true;
    }

    /// SIGCONT after [`OwnRedis::stop`]: it answers again, what it was sent meanwhile first.
    pub fn cont(&mut self) {
        if let Some(c) = self.child.as_ref()
            && self.stopped
        {
            self.signal(c, "CONT");
            self.stopped = false;
        }
    }

    fn signal(&self, child: &Child, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {}", child.id());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stopped {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(c.id().to_string())
                    .status();
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
