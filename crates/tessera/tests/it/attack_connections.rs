//! Connection attacks on the real `tessera` binary (issue 15, "Connection limits"): slowloris
//! headers, silent and idle connections, a flood of idle connections past the cap, and HTTPS
//! with the descriptor limit reached. Loopback only, short configured timeouts.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Dir, Server};

/// `tessera serve` on a free loopback port with `env` and `DIR/data`, run through `wrapper`
/// (such as `prlimit --nofile=64:64`) when given.
fn start(dir: &Dir, env: &[(&str, &str)], wrapper: &[&str]) -> Server {
    Server::launch(&dir.0.join("data"), env, wrapper, "http")
}

/// CPU time (user + system) `server` has used so far.
fn cpu(server: &Server) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    let o = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// What a read within `wait` saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// Nothing yet: the connection is open.
    Nothing,
    /// End of file or a reset: the server closed it.
    Closed,
    /// Bytes: the server answered.
    Answer(Vec<u8>),
}

fn read_for(s: &mut TcpStream, wait: Duration) -> Seen {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Seen::Closed,
        Ok(n) => Seen::Answer(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Seen::Nothing,
        Err(_) => Seen::Closed,
    }
}

/// Whether the server still holds the connection open (checked without waiting).
fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let open = match (&mut &*s).read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    open
}

/// Sends one complete keep-alive `GET path` and reads its whole response (Content-Length).
fn get(s: &mut TcpStream, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no complete response: {text:?}");
        match read_for(s, Duration::from_secs(10)) {
            Seen::Answer(b) => got.extend(b),
            other => panic!("the connection ended mid-response: {other:?} after {text:?}"),
        }
    }
}

/// Trickles a request's headers, one line every 500 ms, until the server closes the
/// connection; returns how long after the first line it did. Panics if it answers or keeps
/// the connection open for `give_up`.
fn trickle_until_closed(s: &mut TcpStream, give_up: Duration) -> Duration {
    let started = Instant::now();
    let mut line = 0;
    loop {
        let text = if line == 0 {
            "GET /healthz HTTP/1.1\r\n".to_owned()
        } else {
            format!("X-Slow-{line}: still coming\r\n")
        };
        line += 1;
        if s.write_all(text.as_bytes()).is_err() {
            return started.elapsed();
        }
        match read_for(s, Duration::from_millis(500)) {
            Seen::Nothing => {}
            Seen::Closed => return started.elapsed(),
            Seen::Answer(b) => panic!(
                "trickled headers were answered: {:?}",
                String::from_utf8_lossy(&b)
            ),
        }
        assert!(
            started.elapsed() < give_up,
            "headers trickled for {give_up:?} and the connection is still open"
        );
    }
}

fn healthz_answers(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut s = connect(addr);
    let res = get(&mut s, "/healthz");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    started.elapsed()
}

#[test]
fn slowloris_headers_are_cut_at_the_header_read_timeout() {
    let dir = Dir::new("slowloris");
    let server = start(
        &dir,
        &[
            ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "2s"),
            ("TESSERA_CONNECTIONS_IDLE_TIMEOUT", "30s"),
        ],
        &[],
    );
    // The first request of a connection.
    let mut s = connect(server.addr);
    let cut = trickle_until_closed(&mut s, Duration::from_secs(8));
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_millis(4500),
        "first request: cut after {cut:?}, the timeout is 2 s"
    );
    // A later request on a kept-alive connection: its first byte starts the timeout.
    let mut s = connect(server.addr);
    let res = get(&mut s, "/healthz");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    std::thread::sleep(Duration::from_millis(1500));
    let cut = trickle_until_closed(&mut s, Duration::from_secs(8));
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_millis(4500),
        "second request: cut after {cut:?}, the timeout is 2 s"
    );
    // The server is fine.
    assert!(healthz_answers(server.addr) < Duration::from_secs(2));
}

#[test]
fn silent_and_idle_connections_are_closed_but_a_long_response_is_not() {
    let dir = Dir::new("idle");
    let env = [
        ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "1s"),
        ("TESSERA_CONNECTIONS_IDLE_TIMEOUT", "3s"),
    ];
    // A confidential client, to follow the revocation feed (a response that never ends).
    let data = dir.0.join("data");
    let secret = add_follower(&data);
    let server = start(&dir, &env, &[]);
    let addr = server.addr;

    // The feed follower: its response is in flight for as long as it follows.
    let url = format!("http://{addr}/oauth2/revocations");
    let feed = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut res = client
            .get(url)
            .basic_auth("follower", Some(secret))
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
        let started = Instant::now();
        let mut text = String::new();
        let mut buf = [0u8; 1024];
        // The first ping comes at once, the next after 5 s: past both timeouts.
        while text.matches("event: ping").count() < 2 {
            let n = res.read(&mut buf).expect("the feed was cut");
            assert!(n > 0, "the feed ended after {:?}", started.elapsed());
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        started.elapsed()
    });

    // A connection that sends nothing: closed at the header-read timeout.
    let started = Instant::now();
    let mut silent = connect(addr);
    assert_eq!(read_for(&mut silent, Duration::from_secs(5)), Seen::Closed);
    let closed = started.elapsed();
    assert!(
        closed >= Duration::from_millis(800) && closed < Duration::from_millis(3000),
        "a silent connection closed after {closed:?}, the header timeout is 1 s"
    );

    // Kept alive after a complete request, then quiet: closed at the idle timeout (3 s), not
    // at the header timeout (1 s).
    let mut kept = connect(addr);
    let res = get(&mut kept, "/healthz");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let idle_from = Instant::now();
    assert_eq!(read_for(&mut kept, Duration::from_secs(8)), Seen::Closed);
    let closed = idle_from.elapsed();
    assert!(
        closed >= Duration::from_millis(2500) && closed < Duration::from_millis(5500),
        "an idle kept-alive connection closed after {closed:?}, the idle timeout is 3 s"
    );

    let followed = feed.join().unwrap();
    assert!(
        followed >= Duration::from_secs(4),
        "the feed was followed for {followed:?}, past the 3 s idle timeout"
    );
}

#[test]
fn a_flood_of_idle_connections_past_the_cap_does_not_keep_a_client_out() {
    let dir = Dir::new("cap");
    let server = start(
        &dir,
        &[
            ("TESSERA_CONNECTIONS_MAX", "20"),
            ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "30s"),
            ("TESSERA_CONNECTIONS_IDLE_TIMEOUT", "30s"),
        ],
        &[],
    );
    assert!(
        server.log().contains("max_connections=20"),
        "{}",
        server.log()
    );
    let idle: Vec<TcpStream> = (0..60).map(|_| connect(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let took = healthz_answers(server.addr);
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    std::thread::sleep(Duration::from_millis(300));
    let open = idle.iter().filter(|s| still_open(s)).count();
    assert!(
        open <= 20,
        "{open} of 60 idle connections still open past a cap of 20"
    );
    // It stays responsive, each new client taking the place of an idle one.
    for _ in 0..5 {
        let took = healthz_answers(server.addr);
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    }
    let log = server.log_with(&["connection cap reached"]);
    assert!(
        log.matches("connection cap reached").count() <= 3,
        "the cap is logged at most once a second: {log}"
    );
}

/// A self-signed certificate for 127.0.0.1: (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
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
    (cert, key)
}

fn https_healthz(addr: SocketAddr, cert: &Path) -> Result<u16, reqwest::Error> {
    let root = reqwest::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    https
        .get(format!("https://{addr}/healthz"))
        .send()
        .map(|r| r.status().as_u16())
}

/// Retries `/healthz` over HTTPS for up to `within`.
fn https_answers_within(addr: SocketAddr, cert: &Path, within: Duration) {
    let started = Instant::now();
    loop {
        match https_healthz(addr, cert) {
            Ok(200) => return,
            other => assert!(
                started.elapsed() < within,
                "/healthz over HTTPS: {other:?} after {:?}",
                started.elapsed()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn https_out_of_descriptors_backs_off_instead_of_spinning() {
    let dir = Dir::new("emfile");
    let (cert, key) = certificate(&dir.0);
    let server = start(
        &dir,
        &[
            ("TESSERA_TLS_CERT", cert.to_str().unwrap()),
            ("TESSERA_TLS_KEY", key.to_str().unwrap()),
            // A cap above the descriptor limit: accepting really runs out of descriptors.
            ("TESSERA_CONNECTIONS_MAX", "1000"),
            ("TESSERA_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT", "30s"),
            ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "30s"),
        ],
        &["prlimit", "--nofile=64:64"],
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.child.id())).unwrap();
    assert_eq!(comm.trim(), "tessera", "prlimit runs the server itself");
    https_answers_within(server.addr, &cert, Duration::from_secs(5));
    // Connections that never start their handshake, more than the server has descriptors for.
    let held: Vec<TcpStream> = (0..120).map(|_| connect(server.addr)).collect();
    let started = Instant::now();
    while !server.log().contains("Too many open files") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "accepting never ran out of descriptors: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu_before = cpu(&server);
    let log_before = server.log();
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu(&server) - cpu_before;
    let log = server.log();
    let grown = &log[log_before.len().min(log.len())..];
    assert!(
        cpu < Duration::from_millis(500),
        "{cpu:?} of CPU in 3 s out of descriptors: the accept loop spins"
    );
    assert!(
        grown.lines().count() <= 8 && grown.len() < 4096,
        "the log grew by {} lines ({} bytes) in 3 s:\n{}",
        grown.lines().count(),
        grown.len(),
        &grown[..grown.len().min(2000)]
    );
    // Released, the descriptors come back and the server serves again.
    drop(held);
    https_answers_within(server.addr, &cert, Duration::from_secs(10));
}

#[test]
fn https_default_cap_under_a_low_descriptor_limit_keeps_serving() {
    let dir = Dir::new("lowcap");
    let (cert, key) = certificate(&dir.0);
    let server = start(
        &dir,
        &[
            ("TESSERA_TLS_CERT", cert.to_str().unwrap()),
            ("TESSERA_TLS_KEY", key.to_str().unwrap()),
            ("TESSERA_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT", "30s"),
        ],
        &["prlimit", "--nofile=64:64"],
    );
    // 64 descriptors less a reserve of 128 leaves nothing: the floor, 16.
    assert!(
        server.log().contains("max_connections=16"),
        "{}",
        server.log()
    );
    let idle: Vec<TcpStream> = (0..40).map(|_| connect(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = idle.iter().filter(|s| still_open(s)).count();
    assert!(
        open <= 16,
        "{open} of 40 idle connections open past a cap of 16"
    );
    https_answers_within(server.addr, &cert, Duration::from_secs(2));
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
}

/// Standard base64, for HTTP Basic credentials.
/// Registers the confidential client `follower` (to follow the revocation feed, a response
/// that never ends) in the store at `data`; its secret.
fn add_follower(data: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "client",
            "add",
            "follower",
            "--grant",
            "client_credentials",
            "--json",
        ])
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let added: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    added["client_secret"].as_str().unwrap().to_owned()
}

fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Opens the revocation feed on a raw connection and reads until it is caught up (its first
/// `ping`): from then on its response is in flight for as long as it is followed.
fn follow_feed(addr: SocketAddr, id: &str, secret: &str) -> TcpStream {
    let mut s = connect(addr);
    let auth = base64(format!("{id}:{secret}").as_bytes());
    write!(
        s,
        "GET /oauth2/revocations HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    while !text.contains("event: ping") {
        match read_for(&mut s, Duration::from_secs(5)) {
            Seen::Answer(b) => text.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("the feed did not start: {other:?} after {text:?}"),
        }
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    s
}

#[test]
fn the_cap_spares_connections_with_a_request_in_flight() {
    let dir = Dir::new("busy");
    let data = dir.0.join("data");
    let secret = add_follower(&data);
    let server = start(
        &dir,
        &[
            ("TESSERA_CONNECTIONS_MAX", "3"),
            ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "30s"),
            ("TESSERA_CONNECTIONS_IDLE_TIMEOUT", "30s"),
        ],
        &[],
    );
    // Two followers, the oldest connections, each with its response in flight.
    let feeds = [
        follow_feed(server.addr, "follower", &secret),
        follow_feed(server.addr, "follower", &secret),
    ];
    // A flood of idle connections takes the one free place in turn, never a follower's.
    let idle: Vec<TcpStream> = (0..10).map(|_| connect(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(idle.iter().filter(|s| still_open(s)).count() <= 1);
    assert!(feeds.iter().all(still_open), "a follower was closed");
    assert!(healthz_answers(server.addr) < Duration::from_secs(1));
    drop(idle);
    // Every place busy: a new connection is closed at once.
    std::thread::sleep(Duration::from_millis(300));
    let third = follow_feed(server.addr, "follower", &secret);
    let started = Instant::now();
    let mut late = connect(server.addr);
    assert_eq!(read_for(&mut late, Duration::from_secs(3)), Seen::Closed);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        started.elapsed()
    );
    assert!(feeds.iter().all(still_open) && still_open(&third));
    // A place given back is taken again.
    drop(third);
    std::thread::sleep(Duration::from_millis(300));
    assert!(healthz_answers(server.addr) < Duration::from_secs(1));
}

#[test]
fn trickled_bodies_hold_no_place_past_the_cap_nor_past_the_header_timeout() {
    let dir = Dir::new("body");
    let server = start(
        &dir,
        &[
            ("TESSERA_CONNECTIONS_MAX", "5"),
            ("TESSERA_CONNECTIONS_HEADER_READ_TIMEOUT", "2s"),
            ("TESSERA_CONNECTIONS_IDLE_TIMEOUT", "30s"),
        ],
        &[],
    );
    // Every place taken by a request whose body never comes (one byte of a thousand).
    let slow: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = connect(server.addr);
            write!(
                s,
                "POST /auth/login HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A new client takes the place of one of them.
    let took = healthz_answers(server.addr);
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    // And none outlives the header timeout by much (the request timeout is 30 s).
    std::thread::sleep(Duration::from_millis(2500));
    let open = slow.iter().filter(|s| still_open(s)).count();
    assert_eq!(open, 0, "{open} trickled bodies still hold a connection");
    // A body that arrives in time is served as before.
    let mut s = connect(server.addr);
    let body = r#"{"username":"nobody","password":"wrong password"}"#;
    write!(
        s,
        "POST /auth/login HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(&body.as_bytes()[10..]).unwrap();
    match read_for(&mut s, Duration::from_secs(10)) {
        Seen::Answer(b) => assert!(
            String::from_utf8_lossy(&b).starts_with("HTTP/1.1 401"),
            "{}",
            String::from_utf8_lossy(&b)
        ),
        other => panic!("no answer to a body sent in time: {other:?}"),
    }
}
