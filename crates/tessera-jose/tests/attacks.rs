//! The attack suite: one test per threat of RFC 8725 §2 and per strictness rule of tessera-jose.
//! Each forges a token an attacker could send and checks it is refused for the right reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::net::TcpListener;

use tessera_jose::b64::encode as b64;
use tessera_jose::{
    Algorithm, Error, Jwk, KeySet, Malformed, SigningKey, Validation, Verifier, VerifyingKey,
};

const NOW: i64 = 1_800_000_000;
const CLAIMS: &str = r#"{"iss":"https://auth.example.com","sub":"alice","aud":"api","exp":1800000600,"iat":1800000000}"#;

/// Signs arbitrary header and payload bytes, bypassing every check a well-behaved signer makes.
fn forge(key: &SigningKey, header: &str, payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload));
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

struct Setup {
    key: SigningKey,
    verifier: Verifier,
}

fn setup(alg: Algorithm) -> Setup {
    let key = SigningKey::generate(alg, Some("k1")).unwrap();
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let verifier = Verifier::new(
        keys,
        Validation {
            issuer: Some("https://auth.example.com".into()),
            audiences: vec!["api".into()],
            typ: Some("at+jwt".into()),
            ..Validation::default()
        },
    );
    Setup { key, verifier }
}

impl Setup {
    fn header(&self) -> String {
        format!(
            r#"{{"alg":"{}","kid":"k1","typ":"at+jwt"}}"#,
            self.key.algorithm()
        )
    }
    fn verify(&self, token: &str) -> Result<tessera_jose::Token, Error> {
        self.verifier.verify_at(token, NOW)
    }
    fn good(&self) -> String {
        forge(&self.key, &self.header(), CLAIMS.as_bytes())
    }
}

#[test]
fn a_well_formed_token_is_accepted_by_the_same_setup() {
    for alg in Algorithm::ALL {
        let s = setup(alg);
        assert!(s.verify(&s.good()).is_ok(), "{alg}");
    }
}

// RFC 8725 §2.1: "none" and signature stripping.
#[test]
fn alg_none_in_any_spelling_is_refused() {
    let s = setup(Algorithm::HS256);
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{none}","kid":"k1","typ":"at+jwt"}}"#);
        for sig in ["", "AAAA"] {
            let token = format!(
                "{}.{}.{sig}",
                b64(header.as_bytes()),
                b64(CLAIMS.as_bytes())
            );
            assert_eq!(
                s.verify(&token).unwrap_err(),
                Error::Unsupported("unsecured JWS (alg none)"),
                "{none}"
            );
        }
    }
}

#[test]
fn stripped_signature_is_refused() {
    let s = setup(Algorithm::EdDSA);
    let good = s.good();
    let stripped = &good[..=good.rfind('.').unwrap()];
    assert!(s.verify(stripped).is_err());
}

#[test]
fn alg_is_case_sensitive() {
    let s = setup(Algorithm::HS256);
    for alg in ["hs256", "Hs256", "HS256 ", "eddsa"] {
        let header = format!(r#"{{"alg":"{alg}","kid":"k1","typ":"at+jwt"}}"#);
        let token = forge(&s.key, &header, CLAIMS.as_bytes());
        assert_eq!(
            s.verify(&token).unwrap_err(),
            Error::Unsupported("algorithm"),
            "{alg}"
        );
    }
}

#[test]
fn alg_must_be_the_one_bound_to_the_key() {
    // Key confusion: the verifier holds an RSA public key; the attacker uses its public bytes as
    // an HMAC secret and says HS256.
    let s = setup(Algorithm::RS256);
    let public = s.key.verifying_key().unwrap().to_spki_der().unwrap();
    let hmac = SigningKey::from_jwk(
        &Jwk {
            kty: "oct".into(),
            k: Some(b64(&public).into()),
            ..Jwk::default()
        },
        Some(Algorithm::HS256),
    )
    .unwrap();
    let token = forge(
        &hmac,
        r#"{"alg":"HS256","kid":"k1","typ":"at+jwt"}"#,
        CLAIMS.as_bytes(),
    );
    assert_eq!(s.verify(&token).unwrap_err(), Error::AlgorithmMismatch);
    // A PS256 header over an RS256 key is refused too, even though both are RSA.
    let token = forge(
        &s.key,
        r#"{"alg":"PS256","kid":"k1","typ":"at+jwt"}"#,
        CLAIMS.as_bytes(),
    );
    assert_eq!(s.verify(&token).unwrap_err(), Error::AlgorithmMismatch);
}

#[test]
fn unknown_kid_is_refused() {
    let s = setup(Algorithm::ES256);
    let token = forge(
        &s.key,
        r#"{"alg":"ES256","kid":"k2","typ":"at+jwt"}"#,
        CLAIMS.as_bytes(),
    );
    assert_eq!(s.verify(&token).unwrap_err(), Error::UnknownKey);
}

// RFC 8725 §2.2: weak symmetric keys.
#[test]
fn hmac_keys_shorter_than_the_hash_are_refused() {
    for (alg, len) in [
        (Algorithm::HS256, 32),
        (Algorithm::HS384, 48),
        (Algorithm::HS512, 64),
    ] {
        let jwk = |n: usize| Jwk {
            kty: "oct".into(),
            k: Some(b64(&vec![7u8; n]).into()),
            ..Jwk::default()
        };
        assert!(SigningKey::from_jwk(&jwk(len), Some(alg)).is_ok());
        assert!(VerifyingKey::from_jwk(&jwk(len), Some(alg)).is_ok());
        for short in [0, 1, len - 1] {
            assert!(matches!(
                SigningKey::from_jwk(&jwk(short), Some(alg)),
                Err(Error::InvalidKey(_))
            ));
            assert!(matches!(
                VerifyingKey::from_jwk(&jwk(short), Some(alg)),
                Err(Error::InvalidKey(_))
            ));
        }
    }
}

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    let mut n = vec![0xc3u8; 128];
    n[127] = 0x01;
    let jwk = Jwk {
        kty: "RSA".into(),
        n: Some(b64(&n)),
        e: Some("AQAB".into()),
        ..Jwk::default()
    };
    assert_eq!(
        VerifyingKey::from_jwk(&jwk, None).unwrap_err(),
        Error::InvalidKey("RSA key is shorter than 2048 bits")
    );
    let mut private = jwk.clone();
    for m in [
        &mut private.d,
        &mut private.p,
        &mut private.q,
        &mut private.dp,
        &mut private.dq,
        &mut private.qi,
    ] {
        *m = Some("AQAB".to_owned().into());
    }
    assert_eq!(
        SigningKey::from_jwk(&private, None).unwrap_err(),
        Error::InvalidKey("RSA key is shorter than 2048 bits")
    );
}

// RFC 8725 §2.3/2.4: JWE and its composition with JWS are out of scope: refused clearly.
#[test]
fn jwe_and_json_serializations_are_unsupported() {
    let s = setup(Algorithm::HS256);
    let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGeipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDbSv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaVmqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je81860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi6UklfCpIMfIjf7iGdXKHzg.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ";
    assert_eq!(
        s.verify(jwe).unwrap_err(),
        Error::Unsupported("JWE (encrypted token)")
    );
    let json = r#"{"payload":"e30","signatures":[{"protected":"e30","signature":"AA"}]}"#;
    assert_eq!(
        s.verify(json).unwrap_err(),
        Error::Unsupported("JWS JSON serialization")
    );
    for parts in ["a", "a.b", "a.b.c.d", "a.b.c.d.e.f", "..", "...."] {
        assert!(s.verify(parts).is_err(), "{parts}");
    }
}

// RFC 8725 §2.5: invalid points.
#[test]
fn an_ec_public_key_off_the_curve_is_refused() {
    let key = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let mut jwk = key.verifying_key().unwrap().public_jwk().unwrap().clone();
    let mut y = tessera_jose::b64::decode(jwk.y.as_ref().unwrap().as_bytes()).unwrap();
    y[31] ^= 1;
    jwk.y = Some(b64(&y));
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk, None),
        Err(Error::InvalidKey(_))
    ));
}

// RFC 8725 §2.6: multiplicity of JSON encodings.
#[test]
fn duplicate_members_in_the_header_are_refused() {
    let s = setup(Algorithm::HS256);
    for header in [
        r#"{"alg":"HS256","alg":"HS256","kid":"k1","typ":"at+jwt"}"#,
        r#"{"alg":"HS256","kid":"k1","kid":"k1","typ":"at+jwt"}"#,
        r#"{"alg":"HS256","kid":"k1","typ":"at+jwt","x":1,"x":1}"#,
        r#"{"alg":"HS256","kid":"k1","typ":"at+jwt","k\u0069d":"k1"}"#,
    ] {
        let token = forge(&s.key, header, CLAIMS.as_bytes());
        assert_eq!(
            s.verify(&token).unwrap_err(),
            Error::Malformed(Malformed::DuplicateMember),
            "{header}"
        );
    }
}

#[test]
fn duplicate_members_in_the_claims_are_refused() {
    let s = setup(Algorithm::HS256);
    let base = &CLAIMS[..CLAIMS.len() - 1];
    for extra in [
        r#","sub":"admin""#,
        r#","s\u0075b":"admin""#,
        r#","role":"user","role":"admin""#,
        r#","nested":{"a":1,"a":2}"#,
        r#","exp":4000000000"#,
    ] {
        let payload = format!("{base}{extra}}}");
        let token = forge(&s.key, &s.header(), payload.as_bytes());
        assert_eq!(
            s.verify(&token).unwrap_err(),
            Error::Malformed(Malformed::DuplicateMember),
            "{extra}"
        );
    }
}

#[test]
fn broken_utf8_and_non_objects_are_refused() {
    let s = setup(Algorithm::HS256);
    let mut bad_utf8 = CLAIMS.as_bytes().to_vec();
    let i = CLAIMS.find("alice").unwrap();
    bad_utf8[i] = 0xff;
    for payload in [
        bad_utf8.as_slice(),
        b"[1,2]",
        b"\"sub\"",
        b"",
        br#"{"sub":"a"} x"#,
        br#"{"sub":"\ud800"}"#,
    ] {
        let token = forge(&s.key, &s.header(), payload);
        assert_eq!(
            s.verify(&token).unwrap_err(),
            Error::Malformed(Malformed::Claims),
            "{payload:?}"
        );
    }
    let token = forge(&s.key, "[\"HS256\"]", CLAIMS.as_bytes());
    assert_eq!(
        s.verify(&token).unwrap_err(),
        Error::Malformed(Malformed::Header)
    );
}

#[test]
fn wrong_claim_types_are_refused() {
    let s = setup(Algorithm::HS256);
    for (payload, reason) in [
        (r#"{"exp":"1800000600"}"#, Malformed::NumericDate),
        (r#"{"exp":true}"#, Malformed::NumericDate),
        (r#"{"exp":null}"#, Malformed::NumericDate),
        (r#"{"exp":1e300}"#, Malformed::NumericDate),
        (r#"{"nbf":[1]}"#, Malformed::NumericDate),
        (r#"{"iat":{}}"#, Malformed::NumericDate),
        (r#"{"iss":42,"exp":1800000600}"#, Malformed::Claims),
        (r#"{"aud":[1],"exp":1800000600}"#, Malformed::Claims),
        (r#"{"sub":null,"exp":1800000600}"#, Malformed::Claims),
    ] {
        let token = forge(&s.key, &s.header(), payload.as_bytes());
        assert_eq!(
            s.verify(&token).unwrap_err(),
            Error::Malformed(reason),
            "{payload}"
        );
    }
    // A fractional NumericDate is a number, and allowed.
    let payload = r#"{"iss":"https://auth.example.com","aud":"api","exp":1800000600.5}"#;
    let token = forge(&s.key, &s.header(), payload.as_bytes());
    assert_eq!(s.verify(&token).unwrap().claims.exp, Some(1_800_000_600));
}

// RFC 8725 §2.7: substitution.
#[test]
fn a_token_for_another_audience_or_issuer_is_refused() {
    let s = setup(Algorithm::EdDSA);
    for (payload, err) in [
        (
            CLAIMS.replace(r#""aud":"api""#, r#""aud":"billing""#),
            Error::WrongAudience,
        ),
        (
            CLAIMS.replace(r#""aud":"api""#, r#""aud":["billing","mail"]"#),
            Error::WrongAudience,
        ),
        (
            CLAIMS.replace(r#""aud":"api","#, ""),
            Error::MissingClaim("aud"),
        ),
        (
            CLAIMS.replace("auth.example.com", "evil.example.com"),
            Error::WrongIssuer,
        ),
        (
            CLAIMS.replace("https://auth.example.com", "https://AUTH.example.com"),
            Error::WrongIssuer,
        ),
    ] {
        let token = forge(&s.key, &s.header(), payload.as_bytes());
        assert_eq!(s.verify(&token).unwrap_err(), err, "{payload}");
    }
    let payload = CLAIMS.replace(r#""aud":"api""#, r#""aud":["billing","api"]"#);
    assert!(
        s.verify(&forge(&s.key, &s.header(), payload.as_bytes()))
            .is_ok()
    );
}

// RFC 8725 §2.8: cross-JWT confusion.
#[test]
fn a_token_of_another_type_is_refused() {
    let s = setup(Algorithm::EdDSA);
    for header in [
        r#"{"alg":"EdDSA","kid":"k1"}"#,
        r#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#,
        r#"{"alg":"EdDSA","kid":"k1","typ":"id_token+jwt"}"#,
    ] {
        let token = forge(&s.key, header, CLAIMS.as_bytes());
        assert_eq!(s.verify(&token).unwrap_err(), Error::WrongType, "{header}");
    }
    for header in [
        r#"{"alg":"EdDSA","kid":"k1","typ":"AT+JWT"}"#,
        r#"{"alg":"EdDSA","kid":"k1","typ":"application/at+jwt"}"#,
    ] {
        assert!(
            s.verify(&forge(&s.key, header, CLAIMS.as_bytes())).is_ok(),
            "{header}"
        );
    }
}

// RFC 8725 §2.9 and the key-carrying header members.
#[test]
fn embedded_keys_and_key_urls_are_never_used_or_fetched() {
    let s = setup(Algorithm::EdDSA);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let attacker = SigningKey::generate(Algorithm::EdDSA, Some("k1")).unwrap();
    let attacker_jwk =
        serde_json::to_string(attacker.verifying_key().unwrap().public_jwk().unwrap()).unwrap();
    let headers = [
        format!(r#"{{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jku":"{url}"}}"#),
        format!(r#"{{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x5u":"{url}"}}"#),
        format!(r#"{{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jwk":{attacker_jwk}}}"#),
        r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x5c":["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}"#.to_owned(),
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","jwk":{attacker_jwk}}}"#),
    ];
    for header in &headers {
        // Signed by the attacker's key: refused, since only the trusted key is ever used.
        let token = forge(&attacker, header, CLAIMS.as_bytes());
        assert_eq!(
            s.verify(&token).unwrap_err(),
            Error::BadSignature,
            "{header}"
        );
    }
    // Signed by the real key, the same members are simply ignored.
    let token = forge(&s.key, &headers[0], CLAIMS.as_bytes());
    assert!(s.verify(&token).is_ok());
    // Nothing ever connected to the URL.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

// RFC 7515 §4.1.2–4.1.8: the key-carrying members are never used, but a header is well formed
// only if each has its registered type; RFC 7516 §9: `enc` marks a JWE, and `zip` compresses a
// JWE's plaintext, which a JWS does not define. First found by the fuzz target
// jwt_vs_jsonwebtoken (`"jwk":"atnull+jwt"` was accepted).
#[test]
fn registered_members_must_have_their_registered_types() {
    let s = setup(Algorithm::HS256);
    let jwk = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    for members in [
        r#""jwk":"atnull+jwt""#,
        r#""jwk":[]"#,
        r#""jwk":null"#,
        r#""jku":1"#,
        r#""jku":{}"#,
        r#""x5u":true"#,
        r#""x5c":"MIIB""#,
        r#""x5c":[1]"#,
        r#""x5c":[["MIIB"]]"#,
        r#""x5t":null"#,
        r#""x5t#S256":[]"#,
        r#""jwk":{"kty":"OKP","kty":"OKP"}"#,
    ] {
        let header = format!(r#"{{"alg":"HS256","kid":"k1","typ":"at+jwt",{members}}}"#);
        let token = forge(&s.key, &header, CLAIMS.as_bytes());
        let err = s.verify(&token).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{members}: {err:?}");
    }
    for (members, err) in [
        (r#""enc":"A256GCM""#, Error::Malformed(Malformed::Header)),
        (
            r#""zip":"DEF""#,
            Error::Unsupported("compressed payload (zip)"),
        ),
    ] {
        let header = format!(r#"{{"alg":"HS256","kid":"k1","typ":"at+jwt",{members}}}"#);
        let token = forge(&s.key, &header, CLAIMS.as_bytes());
        assert_eq!(s.verify(&token).unwrap_err(), err, "{members}");
    }
    // Each with its registered type, they are read and ignored.
    let members = format!(
        r#""jku":"https://a.example/k","x5u":"https://a.example/c","jwk":{jwk},"x5c":["MIIB"],"x5t":"AA","x5t#S256":"AA""#
    );
    let header = format!(r#"{{"alg":"HS256","kid":"k1","typ":"at+jwt",{members}}}"#);
    assert!(s.verify(&forge(&s.key, &header, CLAIMS.as_bytes())).is_ok());
}

#[test]
fn crit_rules() {
    let s = setup(Algorithm::HS256);
    let cases = [
        (
            r#""crit":["exp"],"exp":1"#,
            Error::Unsupported("critical header extension"),
        ),
        (r#""crit":[]"#, Error::Malformed(Malformed::Header)),
        (r#""crit":["alg"]"#, Error::Malformed(Malformed::Header)),
        (r#""crit":["kid"]"#, Error::Malformed(Malformed::Header)),
        (r#""crit":["absent"]"#, Error::Malformed(Malformed::Header)),
        (
            r#""crit":["b64","b64"],"b64":true"#,
            Error::Malformed(Malformed::Header),
        ),
        (
            r#""crit":"exp","exp":1"#,
            Error::Malformed(Malformed::Header),
        ),
        (
            r#""crit":["b64"],"b64":false"#,
            Error::Unsupported("unencoded payload (b64: false)"),
        ),
        (
            r#""b64":false"#,
            Error::Unsupported("unencoded payload (b64: false)"),
        ),
        (r#""b64":true"#, Error::Malformed(Malformed::Header)),
    ];
    for (members, err) in cases {
        let header = format!(r#"{{"alg":"HS256","kid":"k1","typ":"at+jwt",{members}}}"#);
        let token = forge(&s.key, &header, CLAIMS.as_bytes());
        assert_eq!(s.verify(&token).unwrap_err(), err, "{members}");
    }
    // b64:true listed in crit is the default encoding, and allowed.
    let header = r#"{"alg":"HS256","kid":"k1","typ":"at+jwt","crit":["b64"],"b64":true}"#;
    assert!(s.verify(&forge(&s.key, header, CLAIMS.as_bytes())).is_ok());
}

#[test]
fn only_canonical_base64url_is_accepted() {
    let s = setup(Algorithm::HS256);
    let good = s.good();
    let parts: Vec<&str> = good.split('.').collect();
    for i in 0..3 {
        let p = parts[i];
        let mut variants = vec![
            format!("{p}="),
            format!("{p}=="),
            format!(" {p}"),
            format!("{p}\n"),
            format!("{}\t{}", &p[..4], &p[4..]),
            p.replace('-', "+").replace('_', "/"),
        ];
        // Non-zero trailing bits: flip the unused low bits of the last character.
        let last = p.as_bytes()[p.len() - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let unused = match p.len() % 4 {
            2 => 4,
            3 => 2,
            _ => 0,
        };
        if unused > 0 {
            let idx = alphabet.iter().position(|&c| c == last).unwrap();
            let twisted = alphabet[idx | 1] as char;
            if twisted as u8 != last {
                variants.push(format!("{}{twisted}", &p[..p.len() - 1]));
            }
        }
        for v in variants {
            if v == p {
                continue;
            }
            let mut t = parts.clone();
            t[i] = &v;
            let token = t.join(".");
            assert!(s.verify(&token).is_err(), "part {i}: {v:?}");
        }
    }
}

#[test]
fn size_cap_is_checked_before_decoding() {
    let s = setup(Algorithm::HS256);
    let garbage = "!".repeat(8 * 1024 + 1);
    assert_eq!(
        s.verify(&garbage).unwrap_err(),
        Error::TooLarge { limit: 8192 }
    );
    // A genuine, correctly signed token that is too large is refused the same way.
    let payload = format!(r#"{{"pad":"{}","exp":1800000600}}"#, "x".repeat(7000));
    let token = forge(&s.key, &s.header(), payload.as_bytes());
    assert_eq!(
        s.verify(&token).unwrap_err(),
        Error::TooLarge { limit: 8192 }
    );
}

#[test]
fn deep_nesting_is_refused_without_recursion_trouble() {
    let s = setup(Algorithm::HS256);
    let deep = |n: usize| {
        format!(
            r#"{{"x":{}1{},"exp":1800000600}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let token = forge(&s.key, &s.header(), deep(20).as_bytes());
    assert_eq!(
        s.verify(&token).unwrap_err(),
        Error::Malformed(Malformed::TooDeep)
    );
    // Far deeper than any stack would survive naively, with a raised size cap.
    let key = SigningKey::generate(Algorithm::HS256, Some("k1")).unwrap();
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let v = Verifier::new(
        keys,
        Validation {
            max_token_len: 1 << 20,
            ..Validation::default()
        },
    );
    let token = forge(
        &key,
        r#"{"alg":"HS256","kid":"k1"}"#,
        deep(100_000).as_bytes(),
    );
    assert_eq!(
        v.verify_at(&token, NOW).unwrap_err(),
        Error::Malformed(Malformed::TooDeep)
    );
    let header = format!(
        r#"{{"alg":"HS256","kid":"k1","x":{}1{}}}"#,
        "[".repeat(50),
        "]".repeat(50)
    );
    let token = forge(&key, &header, b"{}");
    assert_eq!(
        v.verify_at(&token, NOW).unwrap_err(),
        Error::Malformed(Malformed::TooDeep)
    );
}

#[test]
fn es256_signatures_must_be_64_bytes_with_r_and_s_in_range() {
    let s = setup(Algorithm::ES256);
    let good = s.good();
    let (input, sig) = good.rsplit_once('.').unwrap();
    let raw = tessera_jose::b64::decode(sig.as_bytes()).unwrap();
    assert_eq!(raw.len(), 64);
    // DER form (what some libraries emit): refused by length.
    let der = {
        let int = |v: &[u8]| {
            let mut out = vec![0x02];
            let v: Vec<u8> = if v[0] & 0x80 != 0 {
                [&[0u8][..], v].concat()
            } else {
                v.to_vec()
            };
            out.push(v.len() as u8);
            out.extend(v);
            out
        };
        let body = [int(&raw[..32]), int(&raw[32..])].concat();
        [vec![0x30, body.len() as u8], body].concat()
    };
    let n: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let with = |r: &[u8], s_: &[u8]| [r, s_].concat();
    let cases: Vec<(Vec<u8>, Error)> = vec![
        (der, Error::Malformed(Malformed::SignatureLength)),
        (
            raw[..63].to_vec(),
            Error::Malformed(Malformed::SignatureLength),
        ),
        (
            [&raw[..], &[0u8]].concat(),
            Error::Malformed(Malformed::SignatureLength),
        ),
        (with(&[0u8; 32], &raw[32..]), Error::BadSignature),
        (with(&raw[..32], &[0u8; 32]), Error::BadSignature),
        (with(&n, &raw[32..]), Error::BadSignature),
        (with(&raw[..32], &n), Error::BadSignature),
        (with(&[0xffu8; 32], &raw[32..]), Error::BadSignature),
    ];
    for (sig, err) in cases {
        let token = format!("{input}.{}", b64(&sig));
        assert_eq!(s.verify(&token).unwrap_err(), err, "{}", sig.len());
    }
}

#[test]
fn time_claims_with_leeway() {
    let s = setup(Algorithm::HS256);
    let token = s.good(); // exp = NOW + 600, iat = NOW
    let at = |t: i64| s.verifier.verify_at(&token, t);
    assert!(at(NOW + 600 + 59).is_ok());
    assert_eq!(at(NOW + 600 + 60).unwrap_err(), Error::Expired);
    assert_eq!(at(NOW - 61).unwrap_err(), Error::IssuedInFuture);
    assert!(at(NOW - 60).is_ok());
    let nbf = CLAIMS.replace(r#""iat":1800000000"#, r#""nbf":1800000300"#);
    let token = forge(&s.key, &s.header(), nbf.as_bytes());
    assert_eq!(
        s.verifier.verify_at(&token, NOW + 239).unwrap_err(),
        Error::NotYetValid
    );
    assert!(s.verifier.verify_at(&token, NOW + 240).is_ok());
    // exp is required by default.
    let no_exp = CLAIMS.replace(r#","exp":1800000600"#, "");
    let token = forge(&s.key, &s.header(), no_exp.as_bytes());
    assert_eq!(s.verify(&token).unwrap_err(), Error::MissingClaim("exp"));
}

#[test]
fn any_change_to_the_signature_or_signed_bytes_is_refused() {
    for alg in Algorithm::ALL {
        let s = setup(alg);
        let good = s.good();
        // Change a claim and re-encode: the signature no longer matches.
        let (h, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let admin = CLAIMS.replace("alice", "admin");
        let tampered = format!("{h}.{}.{sig}", b64(admin.as_bytes()));
        assert_eq!(
            s.verify(&tampered).unwrap_err(),
            Error::BadSignature,
            "{alg}"
        );
    }
}
