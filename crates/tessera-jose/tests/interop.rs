//! Interoperability with the `jsonwebtoken` crate: its tokens verify with ours, ours with it,
//! for every algorithm both implement, keys exchanged as JWK and PKCS#8 PEM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

#[path = "support/peer.rs"]
mod peer;

use jsonwebtoken as jwt;
use peer::{their_alg, their_keys};
use serde::{Deserialize, Serialize};
use tessera_jose::{Algorithm, Claims, KeySet, Signer, SigningKey, Validation, Verifier};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct TheirClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    scope: String,
}

fn their_claims() -> TheirClaims {
    TheirClaims {
        iss: "https://auth.example.com".into(),
        sub: "usr_42".into(),
        aud: "https://api.example.com".into(),
        exp: 4_000_000_000,
        iat: 1_700_000_000,
        scope: "read write".into(),
    }
}

fn validation() -> Validation {
    Validation {
        issuer: Some("https://auth.example.com".into()),
        audiences: vec!["https://api.example.com".into()],
        ..Validation::default()
    }
}

#[test]
fn their_tokens_verify_with_ours_and_ours_with_theirs() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg, None).unwrap();
        let (enc, dec) = their_keys(&key);
        let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
        let verifier = Verifier::new(keys, validation());

        // Theirs → ours.
        let mut header = jwt::Header::new(their_alg(alg));
        header.kid = Some(key.kid().to_owned());
        let theirs = jwt::encode(&header, &their_claims(), &enc).unwrap();
        let verified = verifier
            .verify(&theirs)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.claims.sub.as_deref(), Some("usr_42"), "{alg}");
        assert_eq!(
            verified.claims.scope.as_deref(),
            Some("read write"),
            "{alg}"
        );

        // Ours → theirs.
        let signer = Signer::new(key, Some("at+jwt")).unwrap();
        let claims = Claims {
            iss: Some("https://auth.example.com".into()),
            sub: Some("usr_42".into()),
            aud: Some(tessera_jose::Audience::One(
                "https://api.example.com".into(),
            )),
            exp: Some(4_000_000_000),
            iat: Some(1_700_000_000),
            scope: Some("read write".into()),
            ..Claims::default()
        };
        let ours = signer.sign(&claims).unwrap();
        let mut v = jwt::Validation::new(their_alg(alg));
        v.set_issuer(&["https://auth.example.com"]);
        v.set_audience(&["https://api.example.com"]);
        let data =
            jwt::decode::<TheirClaims>(&ours, &dec, &v).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(data.claims, their_claims(), "{alg}");
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));

        // And a tampered token of theirs is refused by ours.
        let mut bad = theirs.into_bytes();
        let i = bad.iter().position(|&b| b == b'.').unwrap() + 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert!(
            verifier.verify(std::str::from_utf8(&bad).unwrap()).is_err(),
            "{alg}"
        );
    }
}
