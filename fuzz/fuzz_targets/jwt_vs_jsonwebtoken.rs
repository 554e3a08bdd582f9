//! Differential: tessera-jose against the `jsonwebtoken` crate, on the same keys and the same
//! validation (exp required, 60 s leeway, no audience). A token is signed here from fuzzed header
//! members and a fuzzed payload; every token tessera-jose accepts, jsonwebtoken must accept too,
//! but for the differences listed in `DOCUMENTED` (where tessera-jose reads the RFCs more
//! widely than jsonwebtoken does, and says so).
#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::{DecodingKey, Validation as JwtValidation};
use libfuzzer_sys::fuzz_target;
use tessera_jose::{Algorithm, KeySet, SigningKey, Validation, Verifier, b64, sign_jws};

struct Peer {
    key: SigningKey,
    decoding: DecodingKey,
    alg: jsonwebtoken::Algorithm,
}

struct Both {
    peers: Vec<Peer>,
    verifier: Verifier,
    /// jsonwebtoken reads the system clock: both verify against it, taken once.
    now: i64,
}

fn both() -> &'static Both {
    static BOTH: OnceLock<Both> = OnceLock::new();
    BOTH.get_or_init(|| {
        let make = |alg: Algorithm, kid: &str| {
            let key = SigningKey::generate(alg, Some(kid)).unwrap();
            let (decoding, peer_alg) = match alg {
                Algorithm::HS256 => {
                    let jwk = serde_json::to_value(key.to_jwk().unwrap()).unwrap();
                    let secret = b64::decode(jwk["k"].as_str().unwrap().as_bytes()).unwrap();
                    (
                        DecodingKey::from_secret(&secret),
                        jsonwebtoken::Algorithm::HS256,
                    )
                }
                Algorithm::ES256 => {
                    let pem = key.verifying_key().unwrap().to_spki_pem().unwrap();
                    (
                        DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
                        jsonwebtoken::Algorithm::ES256,
                    )
                }
                Algorithm::EdDSA => {
                    let pem = key.verifying_key().unwrap().to_spki_pem().unwrap();
                    (
                        DecodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
                        jsonwebtoken::Algorithm::EdDSA,
                    )
                }
                _ => unreachable!(),
            };
            Peer {
                key,
                decoding,
                alg: peer_alg,
            }
        };
        let peers = vec![
            make(Algorithm::HS256, "h"),
            make(Algorithm::ES256, "e"),
            make(Algorithm::EdDSA, "d"),
        ];
        let set = KeySet::new(
            peers
                .iter()
                .map(|p| p.key.verifying_key().unwrap())
                .collect(),
        )
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Both {
            peers,
            verifier: Verifier::new(set, Validation::default()),
            now,
        }
    })
}

/// Tokens tessera-jose accepts and jsonwebtoken refuses, by design; each is a reading of the
/// RFCs, named here so that any other disagreement fails the target.
fn documented(
    header: &serde_json::Value,
    header_refused: bool,
    payload: &serde_json::Value,
) -> Option<&'static str> {
    if header_refused && header.get("jwk").is_some() {
        // RFC 7515 §4.1.3: tessera-jose never uses an embedded key, so checks only that `jwk` is
        // an object; jsonwebtoken parses it as a key and refuses a header whose key it cannot
        // read (only that refusal is excused).
        return Some("jwk not read as a key");
    }
    if header_refused
        && ["url", "nonce"]
            .iter()
            .any(|k| header.get(k).is_some_and(|v| !v.is_string()))
    {
        // RFC 8555 members, not JWS ones: RFC 7515 §4 has a verifier ignore what it does not
        // understand; jsonwebtoken types them.
        return Some("ACME header member of another type");
    }
    let o = payload.as_object()?;
    let not_u64 = |k: &str| o.get(k).is_some_and(|v| !v.is_u64());
    if not_u64("exp") || not_u64("nbf") || not_u64("iat") {
        // RFC 7519 §2: a NumericDate may be negative or carry a fraction; jsonwebtoken reads
        // only unsigned integers.
        return Some("NumericDate that is not an unsigned integer");
    }
    if o.get("aud")
        .is_some_and(|a| !(a.is_string() || a.is_array()))
    {
        return Some("aud of another type (refused by both, unless no audience is asked)");
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let both = both();
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let peer = &both.peers[usize::from(which) % both.peers.len()];
    let (members, payload) = match rest.iter().position(|b| *b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let Ok(members) = std::str::from_utf8(members) else {
        return;
    };
    let header = format!(
        r#"{{"alg":"{}","kid":"{}"{members}}}"#,
        peer.key.algorithm(),
        peer.key.kid()
    );
    let Ok(token) = sign_jws(&peer.key, header.as_bytes(), payload) else {
        return;
    };
    let ours = both.verifier.verify_at(&token, both.now);
    let mut validation = JwtValidation::new(peer.alg);
    validation.leeway = 60;
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    let theirs = jsonwebtoken::decode::<serde_json::Value>(&token, &peer.decoding, &validation);
    if ours.is_ok()
        && let Err(e) = theirs
    {
        let value: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let head: serde_json::Value = serde_json::from_str(&header).unwrap_or_default();
        let header_refused = jsonwebtoken::decode_header(&token).is_err();
        if documented(&head, header_refused, &value).is_none() {
            let near = |k: &str| {
                value[k]
                    .as_i64()
                    .is_some_and(|t| (t - both.now).abs() <= 62)
            };
            // The two clocks are read a moment apart: a time at the very edge of the leeway.
            if !(near("exp") || near("nbf")) {
                panic!(
                    "tessera-jose accepted what jsonwebtoken refused ({e:?}): header {header}, payload {}",
                    String::from_utf8_lossy(payload)
                );
            }
        }
    }
});
