//! Property tests: arbitrary input never panics, and any single-byte change to a valid token fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::sync::OnceLock;

use proptest::prelude::*;
use tessera_jose::{
    Algorithm, Claims, KeySet, Signer, SigningKey, Validation, Verifier, dangerous,
};

/// One verifier and one valid token per algorithm, made once (RSA key generation is slow).
fn fixture(alg: Algorithm) -> (Verifier, String) {
    static ALL: OnceLock<Vec<(Verifier, String)>> = OnceLock::new();
    let all = ALL.get_or_init(|| Algorithm::ALL.into_iter().map(make).collect());
    let i = Algorithm::ALL.iter().position(|a| *a == alg).unwrap();
    all[i].clone()
}

fn make(alg: Algorithm) -> (Verifier, String) {
    let key = SigningKey::generate(alg, Some("k1")).unwrap();
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let claims = Claims {
        iss: Some("https://auth.example.com".into()),
        sub: Some("alice".into()),
        exp: Some(4_000_000_000),
        scope: Some("read".into()),
        ..Claims::default()
    };
    let token = Signer::new(key, Some("at+jwt"))
        .unwrap()
        .sign(&claims)
        .unwrap();
    (Verifier::new(keys, Validation::default()), token)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (v, _) = fixture(Algorithm::HS256);
        let text = String::from_utf8_lossy(&bytes);
        let _ = v.verify(&text);
        let _ = dangerous::decode_unverified(&text, 8192);
    }

    #[test]
    fn arbitrary_base64_parts_never_panic(
        h in proptest::collection::vec(any::<u8>(), 0..200),
        p in proptest::collection::vec(any::<u8>(), 0..200),
        s in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let (v, _) = fixture(Algorithm::HS256);
        let b = tessera_jose::b64::encode;
        let token = format!("{}.{}.{}", b(&h), b(&p), b(&s));
        prop_assert!(v.verify(&token).is_err());
        let _ = dangerous::decode_unverified(&token, 8192);
    }

    #[test]
    fn json_shaped_garbage_never_panics(h in "\\{[\"a-z0-9:,\\[\\]{} ]{0,80}\\}", p in "\\{[\"a-z0-9:,.\\[\\]{}e+-]{0,120}\\}") {
        let (v, _) = fixture(Algorithm::HS256);
        let b = tessera_jose::b64::encode;
        let token = format!("{}.{}.AAAA", b(h.as_bytes()), b(p.as_bytes()));
        prop_assert!(v.verify(&token).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_single_byte_change_fails(alg_i in 0usize..7, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let alg = Algorithm::ALL[alg_i];
        let (v, token) = fixture(alg);
        let mut bytes = token.clone().into_bytes();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let changed = String::from_utf8_lossy(&bytes);
        prop_assert!(v.verify(&changed).is_err(), "{} accepted a change at {}", alg, i);
        prop_assert!(v.verify(&token).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// The table-driven decoder of the hot path agrees with the `base64` crate (strict URL-safe,
    /// no padding, no trailing bits) on what it accepts and what it yields.
    #[test]
    fn base64url_decoder_agrees_with_the_base64_crate(s in "[A-Za-z0-9_\\-+/= .\u{e9}]{0,120}") {
        use base64::Engine as _;
        let strict = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
                .with_decode_allow_trailing_bits(false),
        );
        prop_assert_eq!(tessera_jose::b64::decode(s.as_bytes()).ok(), strict.decode(s.as_bytes()).ok());
    }

    #[test]
    fn base64url_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let encoded = tessera_jose::b64::encode(&bytes);
        prop_assert_eq!(tessera_jose::b64::decode(encoded.as_bytes()).unwrap(), bytes);
    }
}
