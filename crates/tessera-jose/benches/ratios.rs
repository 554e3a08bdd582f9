//! The target ratios of tessera-jose, measured interleaved: in each round every operation of an
//! algorithm runs one batch (about 4 ms) in turn, so drift in the machine's speed hits all of them
//! alike; each ratio is the median over rounds of that round's ratio. Prints a Markdown table and
//! the targets, and exits non-zero if one is missed.
//!
//! `cargo bench -p tessera-jose --bench ratios` (pin it with `taskset -c 1` for steadier figures).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, floor};
use tessera_jose::Algorithm;

const ROUNDS: usize = 41;
const BATCH: Duration = Duration::from_millis(4);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `ops` interleaved; returns per-op nanoseconds for each op and round.
fn measure(ops: &[&dyn Fn()]) -> Vec<Vec<f64>> {
    // Calibrate a batch size per op so one batch takes about BATCH.
    let sizes: Vec<u64> = ops
        .iter()
        .map(|op| {
            let mut n = 1u64;
            loop {
                let t = Instant::now();
                for _ in 0..n {
                    op();
                }
                if t.elapsed() >= BATCH / 4 || n > 1 << 24 {
                    let per = t.elapsed().as_secs_f64() / n as f64;
                    return ((BATCH.as_secs_f64() / per) as u64).max(1);
                }
                n *= 2;
            }
        })
        .collect();
    let mut out = vec![Vec::with_capacity(ROUNDS); ops.len()];
    for _ in 0..ROUNDS {
        for (i, op) in ops.iter().enumerate() {
            let t = Instant::now();
            for _ in 0..sizes[i] {
                op();
            }
            out[i].push(t.elapsed().as_nanos() as f64 / sizes[i] as f64);
        }
    }
    out
}

fn ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects algorithms by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut misses = Vec::new();
    println!(
        "| alg | verify tessera ns | raw ns | floor ns | jsonwebtoken ns | verify target | ratio | x faster than jsonwebtoken (need) | sign tessera ns | raw+enc ns | jsonwebtoken ns | sign ratio (<= 1.1) | x faster (need) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for alg in Algorithm::ALL {
        if filter.as_deref().is_some_and(|f| !alg.name().contains(f)) {
            continue;
        }
        let f = Fixture::new(alg);
        let token = f.token.clone();
        let ops: [&dyn Fn(); 9] = [
            &|| f.verify_tessera(),
            &|| f.verify_raw(),
            &|| floor(&token),
            &|| f.verify_jsonwebtoken(),
            &|| f.sign_tessera(),
            &|| f.sign_raw_encoding(),
            &|| f.sign_jsonwebtoken(),
            &|| f.sign_raw(),
            &|| f.verify_key_only(),
        ];
        let m = measure(&ops);
        let med: Vec<f64> = m.iter().map(|v| median(v.clone())).collect();
        let symmetric = alg.is_symmetric();
        let (verify_ratio, target, target_text) = if symmetric {
            let base: Vec<f64> = m[1].iter().zip(&m[2]).map(|(r, f)| r + f).collect();
            (ratio(&m[0], &base), 1.2, "<= 1.2 x (raw + floor)")
        } else {
            (ratio(&m[0], &m[1]), 1.05, "<= 1.05 x raw")
        };
        let faster_v = ratio(&m[3], &m[0]);
        let need_v = match alg {
            Algorithm::HS256 => 2.5,
            Algorithm::RS256 => 1.25,
            _ => 1.0,
        };
        let sign_ratio = ratio(&m[4], &m[5]);
        let faster_s = ratio(&m[6], &m[4]);
        let need_s = if symmetric { 1.0 } else { 1.5 };
        if verify_ratio > target {
            misses.push(format!("{alg} verify {verify_ratio:.3} > {target}"));
        }
        if faster_v < need_v {
            misses.push(format!(
                "{alg} verify {faster_v:.2}x faster than jsonwebtoken < {need_v}"
            ));
        }
        if sign_ratio > 1.1 {
            misses.push(format!("{alg} sign {sign_ratio:.3} > 1.1"));
        }
        if faster_s < need_s {
            misses.push(format!(
                "{alg} sign {faster_s:.2}x faster than jsonwebtoken < {need_s}"
            ));
        }
        eprintln!(
            "{alg}: tessera key alone / raw = {:.3}",
            ratio(&m[8], &m[1])
        );
        println!(
            "| {alg} | {:.0} | {:.0} | {:.0} | {:.0} | {target_text} | {verify_ratio:.3} | {faster_v:.2} ({need_v}) | {:.0} | {:.0} | {:.0} | {sign_ratio:.3} | {faster_s:.2} ({need_s}) |",
            med[0], med[1], med[2], med[3], med[4], med[5], med[6]
        );
    }
    println!();
    if misses.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed:");
        for m in &misses {
            println!("- {m}");
        }
        std::process::exit(1);
    }
}
