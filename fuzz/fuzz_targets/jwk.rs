//! JWK and JWK Set parsing and key import: never a panic; a key imported exports a JWK that
//! imports again to the same key (same thumbprint).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_jose::{Jwk, JwkSet, KeySet, SigningKey, VerifyingKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = serde_json::from_slice::<JwkSet>(data) {
        let _ = KeySet::from_jwks(&set);
        for jwk in &set.keys {
            check(jwk);
        }
    }
    if let Ok(jwk) = serde_json::from_slice::<Jwk>(data) {
        check(&jwk);
    }
});

fn check(jwk: &Jwk) {
    let _ = jwk.thumbprint();
    let _ = jwk.to_public();
    if let Ok(key) = VerifyingKey::from_public_jwk(jwk) {
        if let Some(public) = key.public_jwk() {
            let again = VerifyingKey::from_public_jwk(public).expect("an exported JWK imports");
            assert_eq!(again.kid(), key.kid());
        }
    }
    if let Ok(key) = SigningKey::from_jwk(jwk, None) {
        let exported = key.to_jwk().expect("an imported key exports");
        let again = SigningKey::from_jwk(&exported, None).expect("an exported JWK imports");
        assert_eq!(again.kid(), key.kid());
        assert_eq!(
            exported.thumbprint().ok(),
            again.to_jwk().unwrap().thumbprint().ok()
        );
    }
}
