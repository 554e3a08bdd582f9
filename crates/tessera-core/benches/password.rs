//! The raw Argon2id rate that a login through `/auth/login` is measured against (issue 21: ≥ 0.9
//! of it): one verification of a password against its PHC string made with tessera's
//! default parameters, as a login runs it on a hashing thread, the `argon2` crate called directly.
//!
//!   taskset -c 0 cargo bench -p tessera-core --bench password

#![allow(clippy::expect_used, clippy::panic)] // a bench that fails may panic

use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use criterion::{Criterion, criterion_group, criterion_main};
use tessera_core::password::HashParams;

fn bench(c: &mut Criterion) {
    let p = HashParams::default();
    let argon2 = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(p.m_cost, p.t_cost, p.p_cost, None).expect("the default parameters"),
    );
    let password = b"correct horse battery staple";
    let phc = argon2
        .hash_password_with_salt(password, b"sixteen bytes!!!")
        .expect("a hash")
        .to_string();
    assert!(p.matches(&phc), "hashed with other parameters: {phc}");
    c.bench_function("password/verify/raw", |b| {
        b.iter(|| {
            Argon2::default()
                .verify_password(password, phc.as_str())
                .expect("the password")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
