//! What both benches measure: a typical access token, tessera's sign and verify, the raw
//! aws-lc-rs primitive on the same signing input, the parsing floor and `jsonwebtoken`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)] // bench support

use std::hint::black_box;

use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::{hmac, rand, rsa};
#[path = "../../tests/support/peer.rs"]
mod peer;

use jsonwebtoken as jwt;
use peer::{their_alg, their_keys};
use serde::{Deserialize, Serialize};
use tessera_jose::b64;
use tessera_jose::{Algorithm, Audience, Claims, KeySet, Signer, SigningKey, Validation, Verifier};

const ISS: &str = "https://auth.example.com";
const AUD: &str = "https://api.example.com";

pub fn claims() -> Claims {
    Claims {
        iss: Some(ISS.into()),
        sub: Some("usr_01HX3NQPZR6F8BFD9T2MQV4F5K".into()),
        aud: Some(Audience::One(AUD.into())),
        exp: Some(4_000_000_000),
        iat: Some(1_764_000_000),
        nbf: Some(1_764_000_000),
        jti: Some("01HX3NQPZR6F8BFD9T2MQV4F5K".into()),
        scope: Some("openid profile api:read".into()),
        ..Claims::default()
    }
}

/// The same claims as a plain serde struct: what the parsing floor and jsonwebtoken decode into.
#[derive(Serialize, Deserialize)]
pub struct Plain {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    scope: String,
}

#[derive(Serialize, Deserialize)]
pub struct PlainHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
}

/// The raw primitive on a signing input, with keys prepared once.
#[allow(clippy::large_enum_variant)] // built once per algorithm
enum Raw {
    Hmac(hmac::Key),
    Rsa(
        rsa::KeyPair,
        &'static dyn sig::RsaEncoding,
        sig::ParsedPublicKey,
    ),
    Ec(sig::EcdsaKeyPair, sig::ParsedPublicKey),
    Ed(sig::Ed25519KeyPair, sig::ParsedPublicKey),
}

impl Raw {
    fn from(key: &SigningKey) -> Raw {
        let jwk = key.to_jwk().unwrap();
        let d = |s: &Option<tessera_jose::Secret>| {
            b64::decode(s.as_ref().unwrap().expose().as_bytes()).unwrap()
        };
        match key.algorithm() {
            Algorithm::HS256 => Raw::Hmac(hmac::Key::new(hmac::HMAC_SHA256, &d(&jwk.k))),
            Algorithm::HS384 => Raw::Hmac(hmac::Key::new(hmac::HMAC_SHA384, &d(&jwk.k))),
            Algorithm::HS512 => Raw::Hmac(hmac::Key::new(hmac::HMAC_SHA512, &d(&jwk.k))),
            a @ (Algorithm::RS256 | Algorithm::PS256) => {
                let pair = rsa::KeyPair::from_pkcs8(&key.to_pkcs8_der().unwrap()).unwrap();
                let (enc, params): (&'static dyn sig::RsaEncoding, &'static sig::RsaParameters) =
                    if a == Algorithm::RS256 {
                        (&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256)
                    } else {
                        (&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256)
                    };
                let public = sig::ParsedPublicKey::new(params, pair.public_key().as_ref()).unwrap();
                Raw::Rsa(pair, enc, public)
            }
            Algorithm::ES256 => {
                let pair = sig::EcdsaKeyPair::from_pkcs8(
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &key.to_pkcs8_der().unwrap(),
                )
                .unwrap();
                let public = sig::ParsedPublicKey::new(
                    &sig::ECDSA_P256_SHA256_FIXED,
                    pair.public_key().as_ref(),
                )
                .unwrap();
                Raw::Ec(pair, public)
            }
            _ => {
                let pair = sig::Ed25519KeyPair::from_pkcs8(&key.to_pkcs8_der().unwrap()).unwrap();
                let public =
                    sig::ParsedPublicKey::new(&sig::ED25519, pair.public_key().as_ref()).unwrap();
                Raw::Ed(pair, public)
            }
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Raw::Hmac(k) => hmac::sign(k, msg).as_ref().to_vec(),
            Raw::Rsa(k, enc, _) => {
                let mut out = vec![0; k.public_modulus_len()];
                k.sign(*enc, &rand::SystemRandom::new(), msg, &mut out)
                    .unwrap();
                out
            }
            Raw::Ec(k, _) => k
                .sign(&rand::SystemRandom::new(), msg)
                .unwrap()
                .as_ref()
                .to_vec(),
            Raw::Ed(k, _) => k.sign(msg).as_ref().to_vec(),
        }
    }

    fn verify(&self, msg: &[u8], signature: &[u8]) {
        match self {
            Raw::Hmac(k) => hmac::verify(k, msg, signature).unwrap(),
            Raw::Rsa(_, _, p) | Raw::Ec(_, p) | Raw::Ed(_, p) => {
                p.verify_sig(msg, signature).unwrap()
            }
        }
    }
}

fn theirs(
    key: &SigningKey,
) -> (
    jwt::EncodingKey,
    jwt::DecodingKey,
    jwt::Validation,
    jwt::Header,
) {
    let alg = key.algorithm();
    let (enc, dec) = their_keys(key);
    let mut v = jwt::Validation::new(their_alg(alg));
    v.set_issuer(&[ISS]);
    v.set_audience(&[AUD]);
    let mut header = jwt::Header::new(their_alg(alg));
    header.kid = Some(key.kid().to_owned());
    header.typ = Some("at+jwt".into());
    (enc, dec, v, header)
}

/// Everything one algorithm's measurements need, prepared once.
pub struct Fixture {
    pub alg: Algorithm,
    pub verifier: Verifier,
    pub signer: Signer,
    pub claims: Claims,
    pub token: String,
    input: String,
    signature: Vec<u8>,
    header_json: String,
    raw: Raw,
    their_enc: jwt::EncodingKey,
    their_dec: jwt::DecodingKey,
    their_validation: jwt::Validation,
    their_header: jwt::Header,
}

impl Fixture {
    pub fn new(alg: Algorithm) -> Fixture {
        let key = SigningKey::generate(alg, None).unwrap();
        let raw = Raw::from(&key);
        let (their_enc, their_dec, their_validation, their_header) = theirs(&key);
        let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
        let verifier = Verifier::new(
            keys,
            Validation {
                issuer: Some(ISS.into()),
                audiences: vec![AUD.into()],
                typ: Some("at+jwt".into()),
                ..Validation::default()
            },
        );
        let signer = Signer::new(key, Some("at+jwt")).unwrap();
        let claims = claims();
        let token = signer.sign(&claims).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = b64::decode(signature.as_bytes()).unwrap();
        let header_json = format!(
            r#"{{"alg":"{alg}","kid":"{}","typ":"at+jwt"}}"#,
            signer.key().kid()
        );
        Fixture {
            alg,
            input: input.to_owned(),
            signature,
            header_json,
            verifier,
            signer,
            claims,
            token,
            raw,
            their_enc,
            their_dec,
            their_validation,
            their_header,
        }
    }

    pub fn verify_tessera(&self) {
        black_box(self.verifier.verify(black_box(&self.token)).unwrap());
    }

    /// tessera's key alone: `VerifyingKey::verify_signature` on the same input as `verify_raw`.
    pub fn verify_key_only(&self) {
        self.verifier.keys().keys()[0]
            .verify_signature(black_box(self.input.as_bytes()), &self.signature)
            .unwrap();
    }

    pub fn verify_raw(&self) {
        self.raw
            .verify(black_box(self.input.as_bytes()), &self.signature);
    }

    pub fn verify_jsonwebtoken(&self) {
        black_box(
            jwt::decode::<Plain>(
                black_box(&self.token),
                &self.their_dec,
                &self.their_validation,
            )
            .unwrap(),
        );
    }

    pub fn sign_tessera(&self) {
        black_box(self.signer.sign(black_box(&self.claims)).unwrap());
    }

    pub fn sign_raw(&self) {
        black_box(self.raw.sign(black_box(self.input.as_bytes())));
    }

    /// The raw signature plus the encoding any signer must do: claims to JSON, header and
    /// payload to base64url, the signature to base64url.
    pub fn sign_raw_encoding(&self) {
        let payload = serde_json::to_vec(black_box(&self.claims)).unwrap();
        let mut out = b64::encode(self.header_json.as_bytes());
        out.push('.');
        b64::encode_into(&payload, &mut out);
        let s = self.raw.sign(out.as_bytes());
        out.push('.');
        b64::encode_into(&s, &mut out);
        black_box(out);
    }

    pub fn sign_jsonwebtoken(&self) {
        black_box(
            jwt::encode(&self.their_header, black_box(&self.claims), &self.their_enc).unwrap(),
        );
    }
}

/// The parsing floor: decode the three parts and deserialize header and claims into plain serde
/// structs, as any Rust JWT library must at least do; no crypto, no checks.
pub fn floor(token: &str) {
    let t = black_box(token);
    let mut it = t.split('.');
    let h = b64::decode(it.next().unwrap().as_bytes()).unwrap();
    let p = b64::decode(it.next().unwrap().as_bytes()).unwrap();
    let s = b64::decode(it.next().unwrap().as_bytes()).unwrap();
    let h: PlainHeader = serde_json::from_slice(&h).unwrap();
    let p: Plain = serde_json::from_slice(&p).unwrap();
    black_box((h, p, s));
}
