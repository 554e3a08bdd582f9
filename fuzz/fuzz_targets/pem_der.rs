//! PEM and DER key import (PKCS#8 private keys, SPKI public keys) for every algorithm: never a
//! panic; a key imported exports DER that imports again to the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_jose::{Algorithm, SigningKey, VerifyingKey};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // An algorithm named, or none (the key's own).
    let alg: Option<Algorithm> = common::ALGORITHMS.get(usize::from(which) % 5).copied();
    if let Ok(key) = SigningKey::from_pkcs8_der(rest, alg, None) {
        let der = key.to_pkcs8_der().expect("an imported key exports");
        let again = SigningKey::from_pkcs8_der(&der, alg, None).expect("exported DER imports");
        assert_eq!(again.kid(), key.kid());
    }
    if let Ok(key) = VerifyingKey::from_spki_der(rest, alg, None) {
        let der = key.to_spki_der().expect("an imported key exports");
        let again = VerifyingKey::from_spki_der(&der, alg, None).expect("exported DER imports");
        assert_eq!(again.kid(), key.kid());
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = SigningKey::from_pkcs8_pem(text, alg, None);
        let _ = VerifyingKey::from_spki_pem(text, alg, None);
    }
});
