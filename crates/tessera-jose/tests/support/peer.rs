//! The `jsonwebtoken` crate as a peer: the same key in its types. Shared by the interop tests
//! and the benches (`#[path]`-included, so it is not a test target of its own).

use jsonwebtoken as jwt;
use tessera_jose::{Algorithm, SigningKey};

/// The same algorithm in `jsonwebtoken`'s enum.
pub fn their_alg(alg: Algorithm) -> jwt::Algorithm {
    match alg {
        Algorithm::HS256 => jwt::Algorithm::HS256,
        Algorithm::HS384 => jwt::Algorithm::HS384,
        Algorithm::HS512 => jwt::Algorithm::HS512,
        Algorithm::RS256 => jwt::Algorithm::RS256,
        Algorithm::PS256 => jwt::Algorithm::PS256,
        Algorithm::ES256 => jwt::Algorithm::ES256,
        Algorithm::EdDSA => jwt::Algorithm::EdDSA,
        _ => unreachable!("an algorithm this peer table does not know"),
    }
}

/// Our key as `jsonwebtoken` keys: the private one through PKCS#8 PEM (or the HMAC secret),
/// the public one through our public JWK.
pub fn their_keys(key: &SigningKey) -> (jwt::EncodingKey, jwt::DecodingKey) {
    let alg = key.algorithm();
    if alg.is_symmetric() {
        let jwk = key.to_jwk().unwrap();
        let secret =
            tessera_jose::b64::decode(jwk.k.as_ref().unwrap().expose().as_bytes()).unwrap();
        return (
            jwt::EncodingKey::from_secret(&secret),
            jwt::DecodingKey::from_secret(&secret),
        );
    }
    let pem = key.to_pkcs8_pem().unwrap();
    let enc = match alg {
        Algorithm::RS256 | Algorithm::PS256 => jwt::EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::ES256 => jwt::EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => jwt::EncodingKey::from_ed_pem(pem.as_bytes()),
    }
    .unwrap();
    let public = key.verifying_key().unwrap().public_jwk().unwrap().clone();
    let their_jwk: jwt::jwk::Jwk =
        serde_json::from_value(serde_json::to_value(&public).unwrap()).unwrap();
    (enc, jwt::DecodingKey::from_jwk(&their_jwk).unwrap())
}
