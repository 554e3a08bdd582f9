//! An open-loop HTTP/1.1 load generator for latency at a fixed rate (used by
//! `scripts/bench-server.sh`): request *i* is due at `start + i / rate`, sent on connection
//! `i mod conns` (pipelined: it never waits for the previous answer), and its latency is counted
//! from when it was due, so a stall in the server cannot hide by slowing the generator down
//! (no coordinated omission). One thread, a few microseconds per request: lighter than oha.
//!
//!   cargo run --release --example paced -- URL RATE SECONDS CONNS ['Header: value']...
//!
//! Prints one line: `rate=… sent=… answered=… non2xx=… p50_ms=… p99_ms=… p999_ms=… max_ms=…`.

#![allow(clippy::print_stdout)] // a command-line tool: its answer goes to stdout

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Default)]
struct Shared {
    /// Due times of the requests sent and not yet answered, per connection.
    due: Vec<VecDeque<Instant>>,
    latencies_us: Vec<u32>,
    non2xx: u64,
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

async fn read_answers(stream: Rc<TcpStream>, conn: usize, shared: Rc<RefCell<Shared>>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        let now = Instant::now();
        let mut s = shared.borrow_mut();
        // Every complete answer in the buffer, then one shift of what is left (not one per
        // answer: a read can hold hundreds of pipelined answers).
        let mut at = 0;
        while let Some((len, ok)) = response(&buf[at..]) {
            at += len;
            if let Some(due) = s.due[conn].pop_front() {
                let us = now.saturating_duration_since(due).as_micros();
                s.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
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

fn usage() -> ! {
    eprintln!("usage: paced http://HOST:PORT/PATH RATE SECONDS CONNS ['Header: value']...");
    std::process::exit(2)
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
    let host = host.to_owned();

    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("paced: cannot start the runtime");
        std::process::exit(1)
    };
    let local = tokio::task::LocalSet::new();
    let shared = Rc::new(RefCell::new(Shared {
        due: vec![VecDeque::new(); conns],
        ..Shared::default()
    }));
    let sent = local.block_on(&rt, async {
        let mut streams = Vec::new();
        for c in 0..conns {
            let Ok(s) = TcpStream::connect(&host).await else {
                eprintln!("paced: cannot connect to {host}");
                std::process::exit(1)
            };
            let _ = s.set_nodelay(true);
            let s = Rc::new(s);
            tokio::task::spawn_local(read_answers(Rc::clone(&s), c, Rc::clone(&shared)));
            streams.push(s);
        }
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now() + Duration::from_millis(10);
        let end = start + Duration::from_secs_f64(secs);
        let mut i: u64 = 0;
        loop {
            let due = start + period.mul_f64(i as f64);
            if due >= end {
                break;
            }
            let now = Instant::now();
            if now < due {
                // Timers are coarse (1 ms): sleep while far, then yield until due.
                if due - now > Duration::from_millis(2) {
                    tokio::time::sleep_until(due - Duration::from_millis(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            let c = (i % conns as u64) as usize;
            shared.borrow_mut().due[c].push_back(due);
            let s = &streams[c];
            let mut written = 0;
            while written < request.len() {
                match s.try_write(&request[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let _ = s.writable().await;
                    }
                    Err(_) => {
                        eprintln!("paced: the connection broke");
                        std::process::exit(1)
                    }
                }
            }
            i += 1;
        }
        // Let the last answers arrive (at most 2 s).
        let drain = Instant::now() + Duration::from_secs(2);
        while Instant::now() < drain && shared.borrow().due.iter().any(|q| !q.is_empty()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        i
    });
    let mut s = shared.borrow_mut();
    let answered = s.latencies_us.len();
    s.latencies_us.sort_unstable();
    let l = &s.latencies_us;
    println!(
        "rate={:.0} sent={sent} answered={answered} non2xx={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        answered as f64 / secs,
        s.non2xx,
        percentile(l, 0.5),
        percentile(l, 0.99),
        percentile(l, 0.999),
        percentile(l, 1.0),
    );
}
