//! Signatures per second on one thread: a key in the PKCS#11 token (`C_Sign` through
//! [`Pkcs11Vault`], no HTTP, no runtime) beside the same algorithm's key in memory
//! (aws-lc-rs), per algorithm. What a token's signature costs is the floor of issuance with keys
//! in it. `scripts/bench-hsm.sh` runs it against SoftHSM2 with:
//!
//! `TESSERA_BENCH_PKCS11_MODULE=… TESSERA_BENCH_PKCS11_LABEL=… TESSERA_BENCH_PKCS11_PIN=…
//!  SOFTHSM2_CONF=… cargo bench -p tessera-pkcs11 --bench sign_rate`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::{Duration, Instant};

use tessera_core::KeyVault;
use tessera_jose::{Algorithm, SigningKey};
use tessera_pkcs11::{Pkcs11Settings, Pkcs11Vault};

/// Operations per second of `op`, run for about `for_`.
fn rate(for_: Duration, mut op: impl FnMut()) -> f64 {
    for _ in 0..50 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_ {
        for _ in 0..20 {
            op();
        }
        n += 20;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let vault = Pkcs11Vault::open(Pkcs11Settings {
        module: var("TESSERA_BENCH_PKCS11_MODULE").into(),
        token_label: var("TESSERA_BENCH_PKCS11_LABEL"),
        pin: zeroize::Zeroizing::new(var("TESSERA_BENCH_PKCS11_PIN")),
        sessions: 1,
    })
    .unwrap();
    let algs = std::env::var("ALGS").unwrap_or_else(|_| "EdDSA ES256 RS256 PS256".into());
    let message = [b'x'; 300]; // about an access token's signing input
    println!("| alg | in the token (C_Sign /s, one thread) | in memory (/s) | token / memory |");
    println!("|---|---:|---:|---:|");
    for name in algs.split_whitespace() {
        let alg = Algorithm::from_name(name).unwrap();
        let kid = vault.generate(alg).unwrap().kid.unwrap();
        let held = rate(Duration::from_secs(2), || {
            vault.sign(&kid, alg, &message).unwrap();
        });
        let key = SigningKey::generate(alg, None).unwrap();
        let local = rate(Duration::from_secs(2), || {
            key.sign(&message).unwrap();
        });
        vault.destroy(&kid).unwrap();
        println!("| {name} | {held:.0} | {local:.0} | {:.3} |", held / local);
    }
}
