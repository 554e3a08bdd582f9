//! An open-loop HTTP/1.1 load generator for latency at a fixed rate (used by
//! `scripts/bench-server.sh`): request *i* is due at `start + i / rate`, sent on connection
//! `i mod conns` (pipelined: it never waits for the previous answer), and its latency is counted
//! from when it was due, so a stall in the server cannot hide by slowing the generator down
//! (no coordinated omission).
//!
//! The generator sleeps whenever nothing is due (a sending thread that sleeps to the next due
//! time and sends everything due, a reading thread parked in epoll), so its core is mostly idle,
//! as a real client's would be: a busy-spinning generator competes with the server's vCPU for the
//! host (seen here: 4x as many 1 ms+ stalls of a spinning core while the other core spins too).
//! Its own lateness (the sleep's timer slack, ~50 us) counts in the latency: an upper bound.
//!
//!   cargo run --release --example paced -- URL RATE SECONDS CONNS ['Header: value']...
//!
//! Prints one line: `rate=… sent=… answered=… non2xx=… p50_ms=… p99_ms=… p999_ms=… max_ms=…`.
//! With `PACED_SLOW=1`, also prints to stderr, per 100 ms of the run, the answers slower than 1 ms
//! and the slowest of them: where the tail comes from.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its answer goes to stdout

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Shared {
    /// Due times of the requests sent and not yet answered, per connection.
    due: Vec<VecDeque<Instant>>,
    /// (due, latency µs) of every answer.
    answers: Vec<(Instant, u32)>,
    non2xx: u64,
}

type Locked = Arc<Mutex<Shared>>;

fn lock(shared: &Locked) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The length of the first complete response in `buf` and whether it was 2xx.
fn response(buf: &[u8]) -> Option<(usize, bool)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let ok = head.get(9..10) == Some("2");
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    (buf.len() >= end + len).then_some((end + len, ok))
}

async fn read_answers(stream: tokio::net::TcpStream, conn: usize, shared: Locked) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        let now = Instant::now();
        let mut s = lock(&shared);
        // Every complete answer in the buffer, then one shift of what is left (not one per
        // answer: a read can hold hundreds of pipelined answers).
        let mut at = 0;
        while let Some((len, ok)) = response(&buf[at..]) {
            at += len;
            if let Some(due) = s.due[conn].pop_front() {
                let us = now.saturating_duration_since(due).as_micros();
                s.answers.push((due, u32::try_from(us).unwrap_or(u32::MAX)));
            }
            if !ok {
                s.non2xx += 1;
            }
        }
        buf.drain(..at);
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn fail(why: &str) -> ! {
    eprintln!("paced: {why}");
    std::process::exit(1)
}

fn usage() -> ! {
    eprintln!("usage: paced http://HOST:PORT/PATH RATE SECONDS CONNS ['Header: value']...");
    std::process::exit(2)
}

/// The reading side: one thread, one task per connection, parked in epoll while nothing comes.
fn spawn_readers(readers: Vec<TcpStream>, shared: &Locked) {
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            fail("cannot start the runtime")
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let mut tasks = Vec::new();
            for (c, s) in readers.into_iter().enumerate() {
                let Ok(s) = tokio::net::TcpStream::from_std(s) else {
                    fail("cannot register a connection")
                };
                tasks.push(tokio::task::spawn_local(read_answers(
                    s,
                    c,
                    Arc::clone(&shared),
                )));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
}

/// Writes all of `request`; the socket is non-blocking (shared with the reader), so a full send
/// buffer is waited out in short sleeps.
fn send(stream: &mut TcpStream, request: &[u8]) {
    let mut written = 0;
    while written < request.len() {
        match stream.write(&request[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(_) => fail("the connection broke"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let url = args[0].strip_prefix("http://").unwrap_or_else(|| usage());
    let (host, path) = url
        .split_once('/')
        .map_or((url, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let rate: f64 = args[1].parse().unwrap_or_else(|_| usage());
    let secs: f64 = args[2].parse().unwrap_or_else(|_| usage());
    let conns: usize = args[3].parse().unwrap_or_else(|_| usage());
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in &args[4..] {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request = request.into_bytes();

    let shared: Locked = Arc::new(Mutex::new(Shared {
        due: vec![VecDeque::new(); conns],
        ..Shared::default()
    }));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..conns {
        let Ok(s) = TcpStream::connect(host) else {
            fail(&format!("cannot connect to {host}"))
        };
        let (Ok(()), Ok(()), Ok(r)) = (s.set_nodelay(true), s.set_nonblocking(true), s.try_clone())
        else {
            fail("cannot set up a connection")
        };
        writers.push(s);
        readers.push(r);
    }
    spawn_readers(readers, &shared);

    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    loop {
        let due = start + period.mul_f64(sent as f64);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
            continue;
        }
        let c = (sent % conns as u64) as usize;
        lock(&shared).due[c].push_back(due);
        send(&mut writers[c], &request);
        sent += 1;
    }
    // Let the last answers arrive (at most 2 s).
    let drain = Instant::now() + Duration::from_secs(2);
    while Instant::now() < drain && lock(&shared).due.iter().any(|q| !q.is_empty()) {
        std::thread::sleep(Duration::from_millis(5));
    }

    let s = lock(&shared);
    if std::env::var_os("PACED_SLOW").is_some() {
        let mut windows = std::collections::BTreeMap::<u64, (u32, u32)>::new();
        for &(due, us) in s.answers.iter().filter(|a| a.1 > 1000) {
            let w = windows
                .entry(due.saturating_duration_since(start).as_millis() as u64 / 100)
                .or_default();
            w.0 += 1;
            w.1 = w.1.max(us);
        }
        for (w, (n, max)) in windows {
            eprintln!(
                "{:>6} ms: {n} answers over 1 ms, slowest {:.1} ms",
                w * 100,
                f64::from(max) / 1000.0
            );
        }
    }
    let mut l: Vec<u32> = s.answers.iter().map(|a| a.1).collect();
    l.sort_unstable();
    println!(
        "rate={:.0} sent={sent} answered={} non2xx={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        l.len() as f64 / secs,
        l.len(),
        s.non2xx,
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        percentile(&l, 0.999),
        percentile(&l, 1.0),
    );
}
