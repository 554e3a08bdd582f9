//! Keys: generation, JWK and PEM round trips, thumbprints as default kid, JWK Sets, and secrets
//! that never show in `Debug` or `Display`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use tessera_jose::{
    Algorithm, Claims, Error, Jwk, JwkSet, KeySet, Signer, SigningKey, Validation, Verifier,
    VerifyingKey,
};

fn round_trip_verifies(signer: &SigningKey, verifier: &VerifyingKey) {
    let keys = KeySet::new(vec![verifier.clone()]).unwrap();
    let claims = Claims {
        exp: Some(4_000_000_000),
        ..Claims::default()
    };
    let msg = format!("{}.e30", signer.kid());
    let sig = signer.sign(msg.as_bytes()).unwrap();
    verifier.verify_signature(msg.as_bytes(), &sig).unwrap();
    let token = Signer::new(
        SigningKey::from_jwk(&signer.to_jwk().unwrap(), None).unwrap(),
        None,
    )
    .unwrap()
    .sign(&claims)
    .unwrap();
    Verifier::new(keys, Validation::default())
        .verify(&token)
        .unwrap();
}

#[test]
fn private_jwk_round_trips_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg, None).unwrap();
        let jwk = key.to_jwk().unwrap();
        assert_eq!(jwk.alg.as_deref(), Some(alg.name()));
        assert_eq!(jwk.kid.as_deref(), Some(key.kid()));
        assert!(jwk.is_private());
        let again = SigningKey::from_jwk(&jwk, None).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.algorithm(), alg);
        assert_eq!(again.to_jwk().unwrap(), jwk, "{alg}");
        round_trip_verifies(&again, &key.verifying_key().unwrap());
    }
}

#[test]
fn default_kid_is_the_rfc7638_thumbprint() {
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = SigningKey::generate(alg, None).unwrap();
        let public = key.verifying_key().unwrap().public_jwk().unwrap().clone();
        let mut bare = public.clone();
        bare.kid = None;
        bare.alg = None;
        bare.use_ = None;
        assert_eq!(bare.thumbprint().unwrap(), key.kid());
        assert_eq!(
            VerifyingKey::from_jwk(&bare, Some(alg)).unwrap().kid(),
            key.kid()
        );
    }
    let key = SigningKey::generate(Algorithm::EdDSA, Some("mine")).unwrap();
    assert_eq!(key.kid(), "mine");
}

#[test]
fn pkcs8_and_spki_pem_round_trip() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let key = SigningKey::generate(alg, None).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pkcs8_pem(&pem, Some(alg), None).unwrap();
        assert_eq!(again.kid(), key.kid(), "{alg}");
        let public_pem = key.verifying_key().unwrap().to_spki_pem().unwrap();
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let public = VerifyingKey::from_spki_pem(&public_pem, Some(alg), None).unwrap();
        assert_eq!(public.kid(), key.kid());
        round_trip_verifies(&again, &public);
    }
    // The algorithm must fit the key type.
    let ed = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
    let pem = ed.to_pkcs8_pem().unwrap();
    assert_eq!(
        SigningKey::from_pkcs8_pem(&pem, Some(Algorithm::ES256), None).unwrap_err(),
        Error::AlgorithmMismatch
    );
    assert!(SigningKey::from_pkcs8_pem("not a pem", None, None).is_err());
    assert!(
        SigningKey::generate(Algorithm::HS256, None)
            .unwrap()
            .to_pkcs8_der()
            .is_err()
    );
}

#[test]
fn jwks_is_public_only_and_round_trips() {
    let keys: Vec<VerifyingKey> = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ]
    .into_iter()
    .map(|a| {
        SigningKey::generate(a, None)
            .unwrap()
            .verifying_key()
            .unwrap()
    })
    .collect();
    let set = KeySet::new(keys).unwrap();
    let jwks = set.to_jwks();
    // The HMAC secret is never published.
    assert_eq!(jwks.keys.len(), 3);
    let json = serde_json::to_string(&jwks).unwrap();
    for private in ["\"d\"", "\"k\"", "\"p\"", "\"q\"", "\"dp\"", "\"qi\""] {
        assert!(!json.contains(private), "{private} in {json}");
    }
    let parsed: JwkSet = serde_json::from_str(&json).unwrap();
    let again = KeySet::from_jwks(&parsed).unwrap();
    assert_eq!(again.keys().len(), 3);
    for (a, b) in again.keys().iter().zip(set.keys()) {
        assert_eq!((a.kid(), a.algorithm()), (b.kid(), b.algorithm()));
    }
}

#[test]
fn jwks_with_secrets_duplicates_or_foreign_keys() {
    let ed = SigningKey::generate(Algorithm::EdDSA, Some("a")).unwrap();
    let public = ed.verifying_key().unwrap().public_jwk().unwrap().clone();
    // A private key in a JWKS: refused.
    let set = JwkSet {
        keys: vec![ed.to_jwk().unwrap()],
    };
    assert!(matches!(KeySet::from_jwks(&set), Err(Error::InvalidKey(_))));
    // An oct key: refused.
    let hs = SigningKey::generate(Algorithm::HS256, Some("h"))
        .unwrap()
        .to_jwk()
        .unwrap();
    assert!(KeySet::from_jwks(&JwkSet { keys: vec![hs] }).is_err());
    // Two keys with one kid: refused.
    let other = SigningKey::generate(Algorithm::EdDSA, Some("a")).unwrap();
    let other = other.verifying_key().unwrap().public_jwk().unwrap().clone();
    assert!(
        KeySet::from_jwks(&JwkSet {
            keys: vec![public.clone(), other]
        })
        .is_err()
    );
    // Keys this codec does not use (P-521, encryption keys) are skipped, not fatal.
    let p521: Jwk =
        serde_json::from_str(r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#).unwrap();
    let mut enc = public.clone();
    enc.use_ = Some("enc".into());
    enc.kid = Some("enc".into());
    let set = KeySet::from_jwks(&JwkSet {
        keys: vec![p521, enc, public],
    })
    .unwrap();
    assert_eq!(set.keys().len(), 1);
}

#[test]
fn jwk_alg_binding_and_use() {
    let ec = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let mut public = ec.verifying_key().unwrap().public_jwk().unwrap().clone();
    assert_eq!(
        VerifyingKey::from_jwk(&public, Some(Algorithm::EdDSA)).unwrap_err(),
        Error::AlgorithmMismatch
    );
    public.alg = Some("RS256".into());
    assert_eq!(
        VerifyingKey::from_jwk(&public, None).unwrap_err(),
        Error::AlgorithmMismatch
    );
    public.alg = Some("none".into());
    assert!(VerifyingKey::from_jwk(&public, None).is_err());
    public.alg = None;
    public.key_ops = Some(vec!["encrypt".into()]);
    assert!(VerifyingKey::from_jwk(&public, None).is_err());
    // An RSA JWK without alg is RS256; with alg PS256 it is PS256 only.
    let rsa = SigningKey::generate(Algorithm::PS256, None).unwrap();
    let mut jwk = rsa.verifying_key().unwrap().public_jwk().unwrap().clone();
    assert_eq!(
        VerifyingKey::from_jwk(&jwk, None).unwrap().algorithm(),
        Algorithm::PS256
    );
    jwk.alg = None;
    assert_eq!(
        VerifyingKey::from_jwk(&jwk, None).unwrap().algorithm(),
        Algorithm::RS256
    );
    // RSA private keys without their CRT members are refused.
    let mut private = rsa.to_jwk().unwrap();
    private.qi = None;
    assert!(matches!(
        SigningKey::from_jwk(&private, None),
        Err(Error::InvalidKey(_))
    ));
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg, None).unwrap();
        let jwk = key.to_jwk().unwrap();
        let secrets: Vec<String> = [&jwk.d, &jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi, &jwk.k]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_owned())
            .collect();
        assert!(!secrets.is_empty());
        let pem = key
            .to_pkcs8_pem()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let shown = format!(
            "{key:?} {jwk:?} {:?} {:?}",
            key.verifying_key().unwrap(),
            Signer::new(SigningKey::from_jwk(&jwk, None).unwrap(), None).unwrap()
        );
        for s in &secrets {
            assert!(!shown.contains(s.as_str()), "{alg}: secret in {shown}");
            assert!(!shown.contains(&s[..16]), "{alg}: secret prefix in {shown}");
        }
        if !pem.is_empty() {
            let body: String = pem.lines().nth(1).unwrap().to_owned();
            assert!(!shown.contains(&body[..20]));
        }
        // An error made from a bad key mentions no key material.
        let mut broken = jwk.clone();
        broken.x = Some("!!!".into());
        broken.n = Some("!!!".into());
        broken.k = Some("!!!".to_owned().into());
        if let Err(e) = SigningKey::from_jwk(&broken, None) {
            for s in &secrets {
                assert!(!e.to_string().contains(s.as_str()));
            }
        }
    }
}
