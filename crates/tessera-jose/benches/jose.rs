//! Criterion: sign and verify for each algorithm on a typical access token, beside the raw
//! aws-lc-rs primitive, the parsing floor and the `jsonwebtoken` crate (absolute figures).
//! `cargo bench -p tessera-jose --bench ratios` prints the target ratios, measured interleaved.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench that fails may panic

mod common;

use std::time::Duration;

use common::{Fixture, floor};
use criterion::{Criterion, criterion_group, criterion_main};
use tessera_jose::Algorithm;

fn bench(c: &mut Criterion) {
    let eddsa = Fixture::new(Algorithm::EdDSA);
    c.bench_function("floor/parse", |b| b.iter(|| floor(&eddsa.token)));
    for alg in Algorithm::ALL {
        let f = Fixture::new(alg);
        let mut g = c.benchmark_group(format!("verify/{alg}"));
        g.bench_function("tessera", |b| b.iter(|| f.verify_tessera()));
        g.bench_function("raw", |b| b.iter(|| f.verify_raw()));
        g.bench_function("jsonwebtoken", |b| b.iter(|| f.verify_jsonwebtoken()));
        g.finish();
        let mut g = c.benchmark_group(format!("sign/{alg}"));
        g.bench_function("tessera", |b| b.iter(|| f.sign_tessera()));
        g.bench_function("raw", |b| b.iter(|| f.sign_raw()));
        g.bench_function("raw+encoding", |b| b.iter(|| f.sign_raw_encoding()));
        g.bench_function("jsonwebtoken", |b| b.iter(|| f.sign_jsonwebtoken()));
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
