//! How often the core this runs on is taken away (used by `scripts/bench-server.sh`): reads the
//! clock in a loop for SECONDS and counts the gaps between two readings longer than 1 ms and
//! 5 ms. A gap is time in which nothing in this process ran: an interrupt, another task, or the
//! hypervisor running something else on this vCPU. No server can answer in less than the gaps
//! of its core, so they bound what a latency percentile on this machine can show.
//!
//!   cargo run --release --example stalls -- SECONDS
//!
//! Prints one line: `seconds=… over_1ms=… over_5ms=… stopped_ms=… longest_ms=…`.

#![allow(clippy::print_stdout)] // a command-line tool: its answer goes to stdout

use std::time::{Duration, Instant};

fn main() {
    let Some(Ok(secs)) = std::env::args().nth(1).map(|s| s.parse::<f64>()) else {
        eprintln!("usage: stalls SECONDS");
        std::process::exit(2)
    };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (mut over_1ms, mut over_5ms) = (0u32, 0u32);
    let (mut stopped, mut longest) = (Duration::ZERO, Duration::ZERO);
    let mut last = start;
    while last < end {
        let now = Instant::now();
        let gap = now - last;
        if gap > Duration::from_millis(1) {
            over_1ms += 1;
            stopped += gap;
            if gap > Duration::from_millis(5) {
                over_5ms += 1;
            }
        }
        longest = longest.max(gap);
        last = now;
    }
    println!(
        "seconds={secs} over_1ms={over_1ms} over_5ms={over_5ms} stopped_ms={:.1} longest_ms={:.1}",
        stopped.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3
    );
}
