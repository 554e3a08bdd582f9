//! The published examples (RFC 7515 App. A, RFC 7520 §4, RFC 8037 App. A, RFC 7797 §4): each
//! verifies, the deterministic ones are reproduced byte for byte, and the ones tessera must
//! refuse (alg none, b64 false, JSON serializations, ES512) are refused with the right error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use serde_json::Value;
use tessera_jose::{
    Algorithm, Error, Jwk, KeySet, SigningKey, Validation, Verifier, VerifyingKey, sign_jws,
    verify_jws,
};

fn load(path: &str) -> Value {
    let full = format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

fn jwk(v: &Value) -> Jwk {
    serde_json::from_value(v.clone()).unwrap()
}

fn keyset(v: &Value, alg: Algorithm) -> KeySet {
    KeySet::new(vec![VerifyingKey::from_jwk(&jwk(v), Some(alg)).unwrap()]).unwrap()
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap()
}

#[test]
fn rfc7515_a1_hs256_verifies_and_is_reproduced() {
    let v = load("rfc7515/A1_hs256.json");
    let token = str_of(&v, "jws_compact");
    let (header, payload) = verify_jws(token, &keyset(&v["jwk"], Algorithm::HS256), 8192).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(payload, str_of(&v, "payload_utf8").as_bytes());
    let key = SigningKey::from_jwk(&jwk(&v["jwk"]), Some(Algorithm::HS256)).unwrap();
    let ours = sign_jws(
        &key,
        str_of(&v, "protected_header_utf8").as_bytes(),
        str_of(&v, "payload_utf8").as_bytes(),
    )
    .unwrap();
    assert_eq!(ours, token);
}

#[test]
fn rfc7515_a1_as_a_jwt_is_expired() {
    // The example's exp is in 2011: a JWT verifier must refuse it even though it is authentic.
    let v = load("rfc7515/A1_hs256.json");
    let verifier = Verifier::new(keyset(&v["jwk"], Algorithm::HS256), Validation::default());
    assert_eq!(
        verifier.verify(str_of(&v, "jws_compact")),
        Err(Error::Expired)
    );
    // At the time of the example (exp - 1) it is valid, and its custom claim is kept.
    let token = verifier
        .verify_at(str_of(&v, "jws_compact"), 1_300_819_379)
        .unwrap();
    assert_eq!(token.claims.iss.as_deref(), Some("joe"));
    assert_eq!(token.claims.extra["http://example.com/is_root"], true);
}

#[test]
fn rfc7515_a2_rs256_verifies_and_is_reproduced() {
    let v = load("rfc7515/A2_rs256.json");
    let token = str_of(&v, "jws_compact");
    verify_jws(token, &keyset(&v["jwk_public"], Algorithm::RS256), 8192).unwrap();
    let key = SigningKey::from_jwk(&jwk(&v["jwk"]), Some(Algorithm::RS256)).unwrap();
    let ours = sign_jws(
        &key,
        str_of(&v, "protected_header_utf8").as_bytes(),
        str_of(&v, "payload_utf8").as_bytes(),
    )
    .unwrap();
    assert_eq!(ours, token);
}

#[test]
fn rfc7515_a3_es256_verifies() {
    let v = load("rfc7515/A3_es256.json");
    let token = str_of(&v, "jws_compact");
    verify_jws(token, &keyset(&v["jwk_public"], Algorithm::ES256), 8192).unwrap();
    // ECDSA is randomized: our signature differs but verifies with the public key.
    let key = SigningKey::from_jwk(&jwk(&v["jwk"]), None).unwrap();
    let ours = sign_jws(
        &key,
        str_of(&v, "protected_header_utf8").as_bytes(),
        str_of(&v, "payload_utf8").as_bytes(),
    )
    .unwrap();
    verify_jws(&ours, &keyset(&v["jwk_public"], Algorithm::ES256), 8192).unwrap();
}

#[test]
fn rfc7515_a4_es512_is_unsupported_and_a5_none_is_refused() {
    let v = load("rfc7515/A4_es512.json");
    let err = VerifyingKey::from_jwk(&jwk(&v["jwk_public"]), None).unwrap_err();
    assert_eq!(err, Error::Unsupported("curve"));

    let v = load("rfc7515/A5_unsecured_none.json");
    let hs = load("rfc7515/A1_hs256.json");
    let keys = keyset(&hs["jwk"], Algorithm::HS256);
    assert_eq!(
        verify_jws(str_of(&v, "jws_compact"), &keys, 8192).unwrap_err(),
        Error::Unsupported("unsecured JWS (alg none)")
    );
}

#[test]
fn rfc7515_a6_a7_json_serializations_are_unsupported() {
    let hs = load("rfc7515/A1_hs256.json");
    let keys = keyset(&hs["jwk"], Algorithm::HS256);
    for f in [
        "rfc7515/A6_general_json_serialization.json",
        "rfc7515/A7_flattened_json_serialization.json",
    ] {
        let v = load(f);
        let json = serde_json::to_string(&v["jws_json"]).unwrap();
        assert_eq!(
            verify_jws(&json, &keys, 8192).unwrap_err(),
            Error::Unsupported("JWS JSON serialization"),
            "{f}"
        );
    }
}

#[test]
fn rfc7520_4_1_rs256_verifies_and_is_reproduced() {
    let v = load("rfc7520/4_1_rs256_signature.json");
    let token = str_of(&v["output"], "compact");
    let key_json = &v["input"]["key"];
    let keys = KeySet::new(vec![VerifyingKey::from_jwk(&jwk(key_json), None).unwrap()]).unwrap();
    let (header, payload) = verify_jws(token, &keys, 8192).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some("bilbo.baggins@hobbiton.example")
    );
    assert_eq!(payload, str_of(&v["input"], "payload").as_bytes());
    let signer = SigningKey::from_jwk(&jwk(key_json), None).unwrap();
    assert_eq!(signer.kid(), "bilbo.baggins@hobbiton.example");
    let header_json = serde_json::to_vec(&v["signing"]["protected"]).unwrap();
    let ours = sign_jws(
        &signer,
        &header_json,
        str_of(&v["input"], "payload").as_bytes(),
    )
    .unwrap();
    assert_eq!(ours, token);
}

#[test]
fn rfc7520_4_4_hs256_verifies_and_is_reproduced() {
    let v = load("rfc7520/4_4_hs256_integrity_protection.json");
    let token = str_of(&v["output"], "compact");
    let key_json = &v["input"]["key"];
    let keys = KeySet::new(vec![VerifyingKey::from_jwk(&jwk(key_json), None).unwrap()]).unwrap();
    verify_jws(token, &keys, 8192).unwrap();
    let signer = SigningKey::from_jwk(&jwk(key_json), None).unwrap();
    let header_json = serde_json::to_vec(&v["signing"]["protected"]).unwrap();
    let ours = sign_jws(
        &signer,
        &header_json,
        str_of(&v["input"], "payload").as_bytes(),
    )
    .unwrap();
    assert_eq!(ours, token);
}

#[test]
fn rfc8037_ed25519_verifies_is_reproduced_and_has_the_thumbprint() {
    let v = load("rfc8037/A_ed25519_eddsa.json");
    let token = str_of(&v, "jws_compact");
    let public = jwk(&v["jwk_public"]);
    assert_eq!(
        public.thumbprint().unwrap(),
        str_of(&v, "jwk_thumbprint_sha256")
    );
    let keys = KeySet::new(vec![VerifyingKey::from_jwk(&public, None).unwrap()]).unwrap();
    let (_, payload) = verify_jws(token, &keys, 8192).unwrap();
    assert_eq!(payload, b"Example of Ed25519 signing");
    let signer = SigningKey::from_jwk(&jwk(&v["jwk"]), None).unwrap();
    assert_eq!(signer.kid(), str_of(&v, "jwk_thumbprint_sha256"));
    let ours = sign_jws(
        &signer,
        br#"{"alg":"EdDSA"}"#,
        b"Example of Ed25519 signing",
    )
    .unwrap();
    assert_eq!(ours, token);
}

#[test]
fn rfc7797_b64_false_is_unsupported_and_the_control_verifies() {
    let control = load("rfc7797/4_1_control_hs256.json");
    let keys = keyset(&control["jwk"], Algorithm::HS256);
    let (_, payload) = verify_jws(str_of(&control, "jws_compact"), &keys, 8192).unwrap();
    assert_eq!(payload, b"$.02");
    let v = load("rfc7797/4_2_b64_false_detached.json");
    // Put the detached payload back in place, as a sender that misuses b64:false would.
    let detached = str_of(&v, "jws_compact_detached");
    let (h, s) = detached.split_once("..").unwrap();
    let attached = format!("{h}.JC4wMg.{s}");
    for token in [detached, attached.as_str()] {
        assert_eq!(
            verify_jws(token, &keys, 8192).unwrap_err(),
            Error::Unsupported("unencoded payload (b64: false)")
        );
    }
}
