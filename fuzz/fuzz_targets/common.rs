#![allow(dead_code)] // each target uses what it needs
// Shared by the targets (each includes it): one signing key of every algorithm, made once per
// process, and the verifier over their public halves.

use std::sync::OnceLock;

use tessera_jose::{Algorithm, KeySet, SigningKey, Validation, Verifier};

/// The moment every target verifies at (claims carry `exp` after it).
pub const NOW: i64 = 1_800_000_000;

pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

pub struct Keys {
    pub signing: Vec<SigningKey>,
    pub verifier: Verifier,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signing: Vec<SigningKey> = ALGORITHMS
            .iter()
            .enumerate()
            .map(|(i, alg)| SigningKey::generate(*alg, Some(&format!("k{i}"))).unwrap())
            .collect();
        let set =
            KeySet::new(signing.iter().map(|k| k.verifying_key().unwrap()).collect()).unwrap();
        Keys {
            signing,
            verifier: Verifier::new(set, Validation::default()),
        }
    })
}
