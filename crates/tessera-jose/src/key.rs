//! Signing and verifying keys: each bound to exactly one [`Algorithm`] and one `kid` when it is
//! made, checked for strength when it is made or loaded, and never shown by `Debug`.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::{hmac, rand, rsa};
use zeroize::Zeroizing;

use crate::alg::Algorithm;
use crate::b64;
use crate::der;
use crate::error::{Error, Malformed};
use crate::jwk::{Jwk, Secret};

fn secret(bytes: &[u8]) -> Secret {
    b64::encode(bytes).into()
}

/// The smallest RSA modulus accepted, in bits (RFC 8725 §3.5 and NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// A private (or secret) key that signs tokens.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    inner: SignInner,
}

enum SignInner {
    Hmac {
        key: Box<hmac::Key>,
        secret: Zeroizing<Vec<u8>>,
    },
    Rsa(rsa::KeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

/// A public (or, for HMAC, secret) key that verifies signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: Arc<str>,
    inner: VerifyInner,
    /// The public JWK, as published in a JWKS (`None` for HMAC: a secret is never published).
    public_jwk: Option<Jwk>,
}

#[derive(Clone)]
enum VerifyInner {
    Hmac(Box<hmac::Key>),
    Public(sig::ParsedPublicKey),
}

fn hmac_alg(alg: Algorithm) -> Option<(hmac::Algorithm, usize)> {
    match alg {
        Algorithm::HS256 => Some((hmac::HMAC_SHA256, 32)),
        Algorithm::HS384 => Some((hmac::HMAC_SHA384, 48)),
        Algorithm::HS512 => Some((hmac::HMAC_SHA512, 64)),
        _ => None,
    }
}

fn hmac_key(alg: Algorithm, secret: &[u8]) -> Result<Box<hmac::Key>, Error> {
    let (h, min) = hmac_alg(alg).ok_or(Error::AlgorithmMismatch)?;
    if secret.len() < min {
        return Err(Error::InvalidKey(
            "HMAC key is shorter than the hash output",
        ));
    }
    Ok(Box::new(hmac::Key::new(h, secret)))
}

fn rsa_params(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        _ => None,
    }
}

fn check_rsa_bits(modulus: &[u8]) -> Result<(), Error> {
    if modulus.len() * 8 < MIN_RSA_BITS || modulus.first().is_none_or(|&b| b == 0) {
        return Err(Error::InvalidKey("RSA key is shorter than 2048 bits"));
    }
    Ok(())
}

fn rejected<E>(_: E) -> Error {
    Error::InvalidKey("the key was rejected by the cryptographic library")
}

fn decode_member<S: AsRef<str> + ?Sized>(value: Option<&S>) -> Result<Zeroizing<Vec<u8>>, Error> {
    let value = value
        .ok_or(Error::InvalidKey("a required member is missing"))?
        .as_ref();
    b64::decode(value.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| Error::InvalidKey("a member is not canonical base64url"))
}

/// The algorithm a JWK is bound to: its `alg`, or the one its key type implies (RSA → RS256,
/// oct → HS256, P-256 → ES256, Ed25519 → EdDSA).
fn jwk_alg(jwk: &Jwk, wanted: Option<Algorithm>) -> Result<Algorithm, Error> {
    let implied = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => Algorithm::RS256,
        ("oct", _) => Algorithm::HS256,
        ("EC", Some("P-256")) => Algorithm::ES256,
        ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
        ("EC" | "OKP", _) => return Err(Error::Unsupported("curve")),
        _ => return Err(Error::Unsupported("key type")),
    };
    let stated = match &jwk.alg {
        Some(a) => Some(Algorithm::from_name(a).ok_or(Error::Unsupported("algorithm"))?),
        None => None,
    };
    let alg = match (stated, wanted) {
        (Some(s), Some(w)) if s != w => return Err(Error::AlgorithmMismatch),
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => implied,
    };
    let fits = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => jwk.kty == "oct",
        Algorithm::RS256 | Algorithm::PS256 => jwk.kty == "RSA",
        Algorithm::ES256 => implied == Algorithm::ES256,
        Algorithm::EdDSA => implied == Algorithm::EdDSA,
    };
    if !fits {
        return Err(Error::AlgorithmMismatch);
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(Error::InvalidKey("the key is not for signatures"));
    }
    if jwk.oth.is_some() {
        return Err(Error::Unsupported("multi-prime RSA key"));
    }
    Ok(alg)
}

fn kid_or_thumbprint(jwk: &Jwk) -> Result<String, Error> {
    match &jwk.kid {
        Some(kid) => Ok(kid.clone()),
        None => jwk.thumbprint(),
    }
}

fn ec_point(x: &[u8], y: &[u8]) -> Result<Vec<u8>, Error> {
    if x.len() != 32 || y.len() != 32 {
        return Err(Error::InvalidKey("P-256 coordinates must be 32 bytes"));
    }
    let mut point = Vec::with_capacity(65);
    point.push(4);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Ok(point)
}

impl SigningKey {
    /// Generates a new key for `alg` (HMAC: a random secret as long as the hash output; RSA: 2048
    /// bits). Its `kid` is `kid`, or the RFC 7638 thumbprint of its public key.
    ///
    /// ```
    /// use tessera_jose::{Algorithm, SigningKey};
    /// let key = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
    /// assert_eq!(key.algorithm(), Algorithm::EdDSA);
    /// assert_eq!(key.kid().len(), 43); // a thumbprint
    /// ```
    pub fn generate(alg: Algorithm, kid: Option<&str>) -> Result<SigningKey, Error> {
        let inner = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let (_, len) = hmac_alg(alg).ok_or(Error::Crypto)?;
                let mut secret = Zeroizing::new(vec![0u8; len]);
                rand::fill(&mut secret).map_err(|_| Error::Crypto)?;
                SignInner::Hmac {
                    key: hmac_key(alg, &secret)?,
                    secret,
                }
            }
            Algorithm::RS256 | Algorithm::PS256 => SignInner::Rsa(
                rsa::KeyPair::generate(rsa::KeySize::Rsa2048).map_err(|_| Error::Crypto)?,
            ),
            Algorithm::ES256 => SignInner::Ec(
                sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| Error::Crypto)?,
            ),
            Algorithm::EdDSA => {
                SignInner::Ed(sig::Ed25519KeyPair::generate().map_err(|_| Error::Crypto)?)
            }
        };
        Self::finish(alg, kid, inner)
    }

    fn finish(alg: Algorithm, kid: Option<&str>, inner: SignInner) -> Result<SigningKey, Error> {
        let mut key = SigningKey {
            alg,
            kid: String::new(),
            inner,
        };
        key.kid = match kid {
            Some(k) => k.to_owned(),
            None => key.public_members()?.thumbprint()?,
        };
        Ok(key)
    }

    /// Loads a private JWK. Its algorithm is its `alg` member or, when absent, the one its key
    /// type implies; pass `alg` to require one. RSA keys need their CRT members.
    pub fn from_jwk(jwk: &Jwk, alg: Option<Algorithm>) -> Result<SigningKey, Error> {
        let alg = jwk_alg(jwk, alg)?;
        if jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "sign"))
        {
            return Err(Error::InvalidKey("key_ops does not allow signing"));
        }
        let inner = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = decode_member(jwk.k.as_ref().map(Secret::expose))?;
                SignInner::Hmac {
                    key: hmac_key(alg, &secret)?,
                    secret,
                }
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let n = decode_member(jwk.n.as_ref())?;
                check_rsa_bits(&n)?;
                let e = decode_member(jwk.e.as_ref())?;
                let d = decode_member(jwk.d.as_ref().map(Secret::expose))?;
                let p = decode_member(jwk.p.as_ref().map(Secret::expose))?;
                let q = decode_member(jwk.q.as_ref().map(Secret::expose))?;
                let dp = decode_member(jwk.dp.as_ref().map(Secret::expose))?;
                let dq = decode_member(jwk.dq.as_ref().map(Secret::expose))?;
                let qi = decode_member(jwk.qi.as_ref().map(Secret::expose))?;
                let pair = rsa::KeyPair::from_components(&rsa::KeyPairComponents {
                    public_key: rsa::PublicKeyComponents {
                        n: n.as_slice(),
                        e: e.as_slice(),
                    },
                    d: d.as_slice(),
                    p: p.as_slice(),
                    q: q.as_slice(),
                    dP: dp.as_slice(),
                    dQ: dq.as_slice(),
                    qInv: qi.as_slice(),
                })
                .map_err(rejected)?;
                SignInner::Rsa(pair)
            }
            Algorithm::ES256 => {
                let d = decode_member(jwk.d.as_ref().map(Secret::expose))?;
                let point = ec_point(
                    &decode_member(jwk.x.as_ref())?,
                    &decode_member(jwk.y.as_ref())?,
                )?;
                SignInner::Ec(
                    sig::EcdsaKeyPair::from_private_key_and_public_key(
                        &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &d,
                        &point,
                    )
                    .map_err(rejected)?,
                )
            }
            Algorithm::EdDSA => {
                let d = decode_member(jwk.d.as_ref().map(Secret::expose))?;
                let x = decode_member(jwk.x.as_ref())?;
                SignInner::Ed(
                    sig::Ed25519KeyPair::from_seed_and_public_key(&d, &x).map_err(rejected)?,
                )
            }
        };
        // Without a `kid`, the thumbprint of the key's own public members (equal to the JWK's).
        Self::finish(alg, jwk.kid.as_deref(), inner)
    }

    /// Loads a PKCS#8 private key (DER). `alg` picks among the algorithms the key type allows
    /// (RSA: RS256 or PS256); by default the one its type implies.
    pub fn from_pkcs8_der(
        der: &[u8],
        alg: Option<Algorithm>,
        kid: Option<&str>,
    ) -> Result<SigningKey, Error> {
        let (kind, _) = der::pkcs8(der)?;
        let (inner, implied) = match kind {
            der::KeyType::Ed25519 => (
                SignInner::Ed(
                    sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(rejected)?,
                ),
                Algorithm::EdDSA,
            ),
            der::KeyType::P256 => (
                SignInner::Ec(
                    sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                        .map_err(rejected)?,
                ),
                Algorithm::ES256,
            ),
            der::KeyType::Rsa => {
                let pair = rsa::KeyPair::from_pkcs8(der).map_err(rejected)?;
                check_rsa_bits(
                    pair.public_key()
                        .modulus()
                        .big_endian_without_leading_zero(),
                )?;
                (SignInner::Rsa(pair), Algorithm::RS256)
            }
        };
        let alg = alg.unwrap_or(implied);
        let fits = alg == implied || (implied == Algorithm::RS256 && alg == Algorithm::PS256);
        if !fits {
            return Err(Error::AlgorithmMismatch);
        }
        Self::finish(alg, kid, inner)
    }

    /// Loads a PEM `PRIVATE KEY` (PKCS#8); see [`SigningKey::from_pkcs8_der`].
    pub fn from_pkcs8_pem(
        pem: &str,
        alg: Option<Algorithm>,
        kid: Option<&str>,
    ) -> Result<SigningKey, Error> {
        let der = Zeroizing::new(crate::pem::decode(pem, "PRIVATE KEY")?);
        Self::from_pkcs8_der(&der, alg, kid)
    }

    /// Exports the private key as PKCS#8 DER. Not available for HMAC secrets.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let der = match &self.inner {
            SignInner::Hmac { .. } => return Err(Error::Unsupported("PKCS#8 for an HMAC secret")),
            SignInner::Rsa(k) => {
                let d: aws_lc_rs::encoding::Pkcs8V1Der = k.as_der().map_err(|_| Error::Crypto)?;
                d.as_ref().to_vec()
            }
            SignInner::Ec(k) => k.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec(),
            SignInner::Ed(k) => k.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec(),
        };
        Ok(Zeroizing::new(der))
    }

    /// Exports the private key as a PEM `PRIVATE KEY` (PKCS#8).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        Ok(Zeroizing::new(crate::pem::encode(
            &self.to_pkcs8_der()?,
            "PRIVATE KEY",
        )))
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id placed in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `message` (the JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(match &self.inner {
            SignInner::Hmac { key, .. } => hmac::sign(key, message).as_ref().to_vec(),
            SignInner::Rsa(k) => {
                let padding: &'static dyn sig::RsaEncoding = if self.alg == Algorithm::PS256 {
                    &sig::RSA_PSS_SHA256
                } else {
                    &sig::RSA_PKCS1_SHA256
                };
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &rand::SystemRandom::new(), message, &mut out)
                    .map_err(|_| Error::Crypto)?;
                out
            }
            SignInner::Ec(k) => k
                .sign(&rand::SystemRandom::new(), message)
                .map_err(|_| Error::Crypto)?
                .as_ref()
                .to_vec(),
            SignInner::Ed(k) => k.sign(message).as_ref().to_vec(),
        })
    }

    /// The public members of the key as a JWK (for HMAC: the secret `k`), without `kid`/`alg`.
    fn public_members(&self) -> Result<Jwk, Error> {
        Ok(match &self.inner {
            SignInner::Hmac { secret, .. } => Jwk {
                kty: "oct".into(),
                k: Some(b64::encode(secret).into()),
                ..Jwk::default()
            },
            SignInner::Rsa(k) => {
                let pk = k.public_key();
                Jwk {
                    kty: "RSA".into(),
                    n: Some(b64::encode(pk.modulus().big_endian_without_leading_zero())),
                    e: Some(b64::encode(pk.exponent().big_endian_without_leading_zero())),
                    ..Jwk::default()
                }
            }
            SignInner::Ec(k) => {
                let point = k.public_key().as_ref();
                let (x, y) = point
                    .get(1..)
                    .filter(|c| c.len() == 64)
                    .map(|c| c.split_at(32))
                    .ok_or(Error::Crypto)?;
                Jwk {
                    kty: "EC".into(),
                    crv: Some("P-256".into()),
                    x: Some(b64::encode(x)),
                    y: Some(b64::encode(y)),
                    ..Jwk::default()
                }
            }
            SignInner::Ed(k) => Jwk {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(b64::encode(k.public_key().as_ref())),
                ..Jwk::default()
            },
        })
    }

    /// The private JWK, with `kid`, `alg` and `use: sig`. Handle with care: it is the secret.
    pub fn to_jwk(&self) -> Result<Jwk, Error> {
        let mut jwk = self.public_members()?;
        match &self.inner {
            SignInner::Hmac { .. } => {}
            SignInner::Rsa(_) => {
                let pkcs8 = self.to_pkcs8_der()?;
                let (_, key) = der::pkcs8(&pkcs8)?;
                let [_, _, d, p, q, dp, dq, qi] = der::rsa_private_components(key)?;
                jwk.d = Some(secret(d));
                jwk.p = Some(secret(p));
                jwk.q = Some(secret(q));
                jwk.dp = Some(secret(dp));
                jwk.dq = Some(secret(dq));
                jwk.qi = Some(secret(qi));
            }
            SignInner::Ec(k) => {
                let d: aws_lc_rs::encoding::EcPrivateKeyBin =
                    k.private_key().as_be_bytes().map_err(|_| Error::Crypto)?;
                jwk.d = Some(secret(d.as_ref()));
            }
            SignInner::Ed(k) => {
                let seed = k.seed().map_err(|_| Error::Crypto)?;
                let d: aws_lc_rs::encoding::Curve25519SeedBin =
                    seed.as_be_bytes().map_err(|_| Error::Crypto)?;
                jwk.d = Some(secret(d.as_ref()));
            }
        }
        jwk.kid = Some(self.kid.clone());
        jwk.alg = Some(self.alg.name().into());
        jwk.use_ = Some("sig".into());
        Ok(jwk)
    }

    /// The key that verifies this key's signatures (for HMAC, the same secret).
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let mut jwk = self.public_members()?;
        jwk.kid = Some(self.kid.clone());
        jwk.alg = Some(self.alg.name().into());
        VerifyingKey::from_jwk_inner(&jwk, Some(self.alg), true)
    }
}

impl VerifyingKey {
    /// Loads a public JWK (or, for HMAC, an `oct` JWK). Its algorithm is its `alg` member or the
    /// one its key type implies; pass `alg` to require one. Private members are ignored.
    ///
    /// ```
    /// use tessera_jose::{Algorithm, Jwk, VerifyingKey};
    /// let jwk: Jwk = serde_json::from_str(
    ///     r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
    /// ).unwrap();
    /// let key = VerifyingKey::from_jwk(&jwk, None).unwrap();
    /// assert_eq!(key.algorithm(), Algorithm::EdDSA);
    /// ```
    pub fn from_jwk(jwk: &Jwk, alg: Option<Algorithm>) -> Result<VerifyingKey, Error> {
        Self::from_jwk_inner(jwk, alg, true)
    }

    fn from_jwk_inner(
        jwk: &Jwk,
        alg: Option<Algorithm>,
        allow_secret: bool,
    ) -> Result<VerifyingKey, Error> {
        let alg = jwk_alg(jwk, alg)?;
        if jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
        {
            return Err(Error::InvalidKey("key_ops does not allow verification"));
        }
        let kid = kid_or_thumbprint(jwk)?;
        let (inner, public_jwk) = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                if !allow_secret {
                    return Err(Error::InvalidKey("a symmetric key in a public key set"));
                }
                let secret = decode_member(jwk.k.as_ref().map(Secret::expose))?;
                (VerifyInner::Hmac(hmac_key(alg, &secret)?), None)
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let n = decode_member(jwk.n.as_ref())?;
                let e = decode_member(jwk.e.as_ref())?;
                check_rsa_bits(&n)?;
                let params = rsa_params(alg).ok_or(Error::Crypto)?;
                // Through SubjectPublicKeyInfo DER rather than `to_parsed_public_key`: the key
                // parsed from DER verifies measurably faster in aws-lc-rs 1.19.
                let spki: aws_lc_rs::encoding::PublicKeyX509Der = rsa::PublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .as_der()
                .map_err(rejected)?;
                let key = sig::ParsedPublicKey::new(params, spki.as_ref()).map_err(rejected)?;
                (VerifyInner::Public(key), Some(jwk.to_public()))
            }
            Algorithm::ES256 => {
                let point = ec_point(
                    &decode_member(jwk.x.as_ref())?,
                    &decode_member(jwk.y.as_ref())?,
                )?;
                let key = sig::ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                    .map_err(rejected)?;
                (VerifyInner::Public(key), Some(jwk.to_public()))
            }
            Algorithm::EdDSA => {
                let x = decode_member(jwk.x.as_ref())?;
                if x.len() != 32 {
                    return Err(Error::InvalidKey("Ed25519 public keys are 32 bytes"));
                }
                let key =
                    sig::ParsedPublicKey::new(&sig::ED25519, x.as_slice()).map_err(rejected)?;
                (VerifyInner::Public(key), Some(jwk.to_public()))
            }
        };
        let public_jwk = public_jwk.map(|mut j| {
            j.kid = Some(kid.clone());
            j.alg = Some(alg.name().into());
            j.use_ = Some("sig".into());
            j.key_ops = None;
            j
        });
        Ok(VerifyingKey {
            alg,
            kid: kid.into(),
            inner,
            public_jwk,
        })
    }

    /// Loads a public key from a JWK Set member, refusing symmetric keys: a JWKS is public.
    pub fn from_public_jwk(jwk: &Jwk) -> Result<VerifyingKey, Error> {
        Self::from_jwk_inner(jwk, None, false)
    }

    /// Loads a SubjectPublicKeyInfo (DER). `alg` as for [`SigningKey::from_pkcs8_der`].
    pub fn from_spki_der(
        der: &[u8],
        alg: Option<Algorithm>,
        kid: Option<&str>,
    ) -> Result<VerifyingKey, Error> {
        let (kind, key) = der::spki(der)?;
        let mut jwk = match kind {
            der::KeyType::Rsa => {
                let pk = rsa::PublicKey::from_der(der).map_err(rejected)?;
                Jwk {
                    kty: "RSA".into(),
                    n: Some(b64::encode(pk.modulus().big_endian_without_leading_zero())),
                    e: Some(b64::encode(pk.exponent().big_endian_without_leading_zero())),
                    ..Jwk::default()
                }
            }
            der::KeyType::P256 => match key {
                [4, xy @ ..] if xy.len() == 64 => Jwk {
                    kty: "EC".into(),
                    crv: Some("P-256".into()),
                    x: Some(b64::encode(&xy[..32])),
                    y: Some(b64::encode(&xy[32..])),
                    ..Jwk::default()
                },
                _ => return Err(Error::Unsupported("compressed EC point")),
            },
            der::KeyType::Ed25519 => Jwk {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(b64::encode(key)),
                ..Jwk::default()
            },
        };
        jwk.kid = kid.map(str::to_owned);
        Self::from_jwk_inner(&jwk, alg, false)
    }

    /// Loads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn from_spki_pem(
        pem: &str,
        alg: Option<Algorithm>,
        kid: Option<&str>,
    ) -> Result<VerifyingKey, Error> {
        Self::from_spki_der(&crate::pem::decode(pem, "PUBLIC KEY")?, alg, kid)
    }

    /// Exports the public key as SubjectPublicKeyInfo DER (not for HMAC).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, Error> {
        match &self.inner {
            VerifyInner::Hmac(_) => Err(Error::Unsupported("SPKI for an HMAC secret")),
            VerifyInner::Public(k) => {
                let der: aws_lc_rs::encoding::PublicKeyX509Der =
                    k.as_der().map_err(|_| Error::Crypto)?;
                Ok(der.as_ref().to_vec())
            }
        }
    }

    /// Exports the public key as a PEM `PUBLIC KEY`.
    pub fn to_spki_pem(&self) -> Result<String, Error> {
        Ok(crate::pem::encode(&self.to_spki_der()?, "PUBLIC KEY"))
    }

    /// The algorithm bound to this key: the only one it verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key id, shared: a verified token's header points at it instead of copying it.
    pub(crate) fn kid_shared(&self) -> &Arc<str> {
        &self.kid
    }

    /// The public JWK with `kid`, `alg`, `use`; `None` for an HMAC secret, which is never
    /// published.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }

    /// Checks `signature` over `message` with this key's algorithm.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        match &self.inner {
            VerifyInner::Hmac(key) => {
                hmac::verify(key, message, signature).map_err(|_| Error::BadSignature)
            }
            VerifyInner::Public(key) => {
                let fixed = match self.alg {
                    Algorithm::ES256 | Algorithm::EdDSA => Some(64),
                    _ => None,
                };
                if fixed.is_some_and(|len| signature.len() != len) {
                    return Err(Malformed::SignatureLength.into());
                }
                key.verify_sig(message, signature)
                    .map_err(|_| Error::BadSignature)
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
