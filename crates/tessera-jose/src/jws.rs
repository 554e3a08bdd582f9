//! JWS compact serialization: sign with a [`Signer`], verify with a [`Verifier`] whose key is
//! looked up by `kid` and whose algorithm is the key's, never the token's.

use std::mem::MaybeUninit;
use std::sync::Arc;

use serde::Serialize;

use crate::b64;
use crate::claims::Claims;
use crate::error::{Error, Malformed};
use crate::header::{Header, Parsed};
use crate::jwk::JwkSet;
use crate::key::{SigningKey, VerifyingKey};
use crate::time::{Clock, SystemClock};
use crate::validation::{DEFAULT_MAX_DEPTH, Validation};

/// The longest signature accepted: RSA with an 8192-bit modulus.
const MAX_SIGNATURE: usize = 1024;

/// Decoded tokens up to this size are verified without a heap buffer.
const STACK_SCRATCH: usize = 2048;

/// The three parts of a compact JWS, still encoded.
pub(crate) struct Parts<'a> {
    pub header: &'a [u8],
    pub payload: &'a [u8],
    pub signature: &'a [u8],
    /// `header.payload`, the signing input.
    pub signing_input: &'a [u8],
}

/// Splits a compact JWS after the size cap, telling JWE and the JSON serializations apart.
pub(crate) fn split(token: &str, max_len: usize) -> Result<Parts<'_>, Error> {
    if token.len() > max_len {
        return Err(Error::TooLarge { limit: max_len });
    }
    let bytes = token.as_bytes();
    if bytes.first() == Some(&b'{') {
        return Err(Error::Unsupported("JWS JSON serialization"));
    }
    let mut dots = memchr::memchr_iter(b'.', bytes);
    let (Some(d1), Some(d2)) = (dots.next(), dots.next()) else {
        return Err(Malformed::Parts.into());
    };
    if dots.next().is_some() {
        return Err(match memchr::memchr_iter(b'.', bytes).count() {
            4 => Error::Unsupported("JWE (encrypted token)"),
            _ => Malformed::Parts.into(),
        });
    }
    Ok(Parts {
        header: &bytes[..d1],
        payload: &bytes[d1 + 1..d2],
        signature: &bytes[d2 + 1..],
        signing_input: &bytes[..d2],
    })
}

/// A verified token: the header and claims, both checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The header.
    pub header: Header,
    /// The claims.
    pub claims: Claims,
}

/// The keys a verifier trusts, looked up by `kid`. Two keys may not share a `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    /// For each key, the encoded headers a [`Signer`] with that key emits, byte for byte. A token
    /// whose header segment is one of these skips header decoding and parsing: those bytes are
    /// known to parse to exactly this `alg`, `kid` and `typ`.
    canonical: Vec<Canonical>,
}

#[derive(Debug, Clone)]
struct Canonical {
    encoded: String,
    key: usize,
    typ: Option<&'static str>,
}

/// The header segment a [`Signer`] emits: `{"alg":…,"kid":…[,"typ":…]}`, base64url.
fn encode_header(alg: crate::Algorithm, kid: &str, typ: Option<&str>) -> Result<String, Error> {
    let json = serde_json::to_vec(&OutHeader {
        alg: alg.name(),
        kid,
        typ,
    })
    .map_err(|_| Error::Crypto)?;
    Ok(b64::encode(&json))
}

impl KeySet {
    /// A key set from keys with distinct `kid`s.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<KeySet, Error> {
        let mut canonical = Vec::with_capacity(keys.len() * 3);
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.kid() == k.kid()) {
                return Err(Error::InvalidKey("two keys share a kid"));
            }
            for typ in [Some("at+jwt"), Some("JWT"), None] {
                canonical.push(Canonical {
                    encoded: encode_header(k.algorithm(), k.kid(), typ)?,
                    key: i,
                    typ,
                });
            }
        }
        Ok(KeySet { keys, canonical })
    }

    /// The header and key of a header segment in a [`Signer`]'s exact form, without decoding it.
    fn canonical(&self, segment: &[u8]) -> Option<(Header, &VerifyingKey)> {
        let c = self
            .canonical
            .iter()
            .find(|c| c.encoded.as_bytes() == segment)?;
        let key = self.keys.get(c.key)?;
        let header = Header {
            alg: key.algorithm(),
            kid: Some(Arc::clone(key.kid_shared())),
            typ: c.typ.map(std::borrow::Cow::Borrowed),
            cty: None,
        };
        Some((header, key))
    }

    /// The public keys of a JWK Set. Keys this codec cannot use (other curves, encryption keys)
    /// are skipped; symmetric keys and duplicate `kid`s make the whole set invalid.
    pub fn from_jwks(set: &JwkSet) -> Result<KeySet, Error> {
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            if jwk.kty == "oct" || jwk.is_private() {
                return Err(Error::InvalidKey("a JWK Set must hold public keys only"));
            }
            match VerifyingKey::from_public_jwk(jwk) {
                Ok(k) => keys.push(k),
                Err(Error::Unsupported(_)) => {}
                Err(Error::InvalidKey("the key is not for signatures")) => {}
                Err(e) => return Err(e),
            }
        }
        KeySet::new(keys)
    }

    /// The public JWK Set (HMAC secrets are never included).
    pub fn to_jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .keys
                .iter()
                .filter_map(|k| k.public_jwk().cloned())
                .collect(),
        }
    }

    /// The key named `kid`; without a `kid`, the only key if there is exactly one.
    pub fn find(&self, kid: Option<&str>) -> Option<&VerifyingKey> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid() == kid),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }

    /// The key a parsed header names, if its algorithm is the key's; the header then shares the
    /// key's `kid`.
    fn resolve(&self, parsed: Parsed<'_>) -> Result<(Header, &VerifyingKey), Error> {
        let key = self.find(parsed.kid.as_deref()).ok_or(Error::UnknownKey)?;
        if key.algorithm() != parsed.header.alg {
            return Err(Error::AlgorithmMismatch);
        }
        let mut header = parsed.header;
        header.kid = parsed.kid.map(|_| Arc::clone(key.kid_shared()));
        Ok((header, key))
    }

    /// The keys.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }
}

/// Decodes the signature part into `buf`, returning the used prefix.
fn decode_signature<'b>(
    encoded: &[u8],
    buf: &'b mut [u8; MAX_SIGNATURE],
) -> Result<&'b [u8], Error> {
    if encoded.len() > MAX_SIGNATURE / 3 * 4 + 2 {
        return Err(Malformed::SignatureLength.into());
    }
    let n = b64::decode_slice(encoded, buf)?;
    Ok(&buf[..n])
}

/// Checks the signature of a compact JWS with `keys` and returns its header and the decoded
/// payload (any bytes, not necessarily JSON). Use [`Verifier`] for JWTs.
pub fn verify_jws(token: &str, keys: &KeySet, max_len: usize) -> Result<(Header, Vec<u8>), Error> {
    let parts = split(token, max_len)?;
    let header_json = b64::decode(parts.header)?;
    let (header, key) = keys.resolve(Header::parse(&header_json, DEFAULT_MAX_DEPTH)?)?;
    let mut buf = [0u8; MAX_SIGNATURE];
    let signature = decode_signature(parts.signature, &mut buf)?;
    let payload = b64::decode(parts.payload)?;
    key.verify_signature(parts.signing_input, signature)?;
    Ok((header, payload))
}

/// Signs `payload` under exactly the given protected header bytes (which must name the key's
/// algorithm). Useful to reproduce published examples; [`Signer`] is the everyday API.
pub fn sign_jws(key: &SigningKey, header_json: &[u8], payload: &[u8]) -> Result<String, Error> {
    let header = Header::parse(header_json, DEFAULT_MAX_DEPTH)?.header;
    if header.alg != key.algorithm() {
        return Err(Error::AlgorithmMismatch);
    }
    let mut out = b64::encode(header_json);
    out.push('.');
    b64::encode_into(payload, &mut out);
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    b64::encode_into(&signature, &mut out);
    Ok(out)
}

/// Signs JWTs with one key, its header (`alg`, `kid`, optional `typ`) encoded once.
///
/// ```
/// use tessera_jose::{Algorithm, Claims, KeySet, Signer, SigningKey, Validation, Verifier};
/// let key = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
/// let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
/// let signer = Signer::new(key, Some("at+jwt")).unwrap();
/// let claims = Claims { sub: Some("alice".into()), exp: Some(4_000_000_000), ..Claims::default() };
/// let token = signer.sign(&claims).unwrap();
/// let verifier = Verifier::new(keys, Validation { typ: Some("at+jwt".into()), ..Default::default() });
/// assert_eq!(verifier.verify(&token).unwrap().claims.sub.as_deref(), Some("alice"));
/// ```
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    header: EncodedHeader,
}

#[derive(Serialize)]
struct OutHeader<'a> {
    alg: &'static str,
    kid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    typ: Option<&'a str>,
}

impl Signer {
    /// A signer whose tokens carry `typ` when given (`at+jwt` for access tokens).
    pub fn new(key: SigningKey, typ: Option<&str>) -> Result<Signer, Error> {
        Ok(Signer {
            header: EncodedHeader::new(key.algorithm(), key.kid(), typ)?,
            key,
        })
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Serializes `claims` as the payload and signs.
    pub fn sign<C: Serialize + ?Sized>(&self, claims: &C) -> Result<String, Error> {
        let input = self.header.signing_input(claims)?;
        let signature = self.key.sign(input.as_bytes())?;
        self.header.finish(input, &signature)
    }
}

/// The protected header (`alg`, `kid`, optional `typ`) of the JWTs one key signs, encoded once,
/// for keys that sign elsewhere (a hardware security module): [`EncodedHeader::signing_input`]
/// is what the key signs, [`EncodedHeader::finish`] appends its signature. [`Signer`] is the
/// same for a key in memory.
///
/// ```
/// use tessera_jose::{Algorithm, Claims, EncodedHeader, KeySet, SigningKey, Validation, Verifier};
/// let key = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
/// let header = EncodedHeader::new(Algorithm::EdDSA, key.kid(), None).unwrap();
/// let claims = Claims { sub: Some("alice".into()), exp: Some(4_000_000_000), ..Claims::default() };
/// let input = header.signing_input(&claims).unwrap();
/// let signature = key.sign(input.as_bytes()).unwrap(); // made by the HSM, say
/// let token = header.finish(input, &signature).unwrap();
/// let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
/// assert!(Verifier::new(keys, Validation::default()).verify(&token).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct EncodedHeader {
    alg: crate::Algorithm,
    encoded: String,
}

impl EncodedHeader {
    /// The header of key `kid` signing with `alg`, with `typ` when given.
    pub fn new(alg: crate::Algorithm, kid: &str, typ: Option<&str>) -> Result<Self, Error> {
        Ok(EncodedHeader {
            alg,
            encoded: encode_header(alg, kid, typ)?,
        })
    }

    /// The algorithm the header names.
    pub fn algorithm(&self) -> crate::Algorithm {
        self.alg
    }

    /// `header.payload` with `claims` as the payload: the JWS signing input.
    pub fn signing_input<C: Serialize + ?Sized>(&self, claims: &C) -> Result<String, Error> {
        let payload =
            serde_json::to_vec(claims).map_err(|_| Error::Malformed(Malformed::Claims))?;
        let sig_len = match self.alg {
            crate::Algorithm::RS256 | crate::Algorithm::PS256 => 342,
            _ => 86,
        };
        let mut out =
            String::with_capacity(self.encoded.len() + payload.len() * 4 / 3 + sig_len + 4);
        out.push_str(&self.encoded);
        out.push('.');
        b64::encode_into(&payload, &mut out);
        Ok(out)
    }

    /// The compact JWS: `input` and `signature`. A signature of the wrong size for the
    /// algorithm (64 bytes for ES256 and EdDSA, at least 256 for RSA) is refused: a key that
    /// signs elsewhere is not trusted to have made the right kind.
    pub fn finish(&self, mut input: String, signature: &[u8]) -> Result<String, Error> {
        let fits = match self.alg {
            crate::Algorithm::ES256 | crate::Algorithm::EdDSA => signature.len() == 64,
            crate::Algorithm::RS256 | crate::Algorithm::PS256 => {
                signature.len() * 8 >= crate::MIN_RSA_BITS
            }
            crate::Algorithm::HS256 => signature.len() == 32,
            crate::Algorithm::HS384 => signature.len() == 48,
            crate::Algorithm::HS512 => signature.len() == 64,
        };
        if !fits {
            return Err(Malformed::SignatureLength.into());
        }
        input.push('.');
        b64::encode_into(signature, &mut input);
        Ok(input)
    }
}

/// Verifies JWTs: size cap, strict parsing, key by `kid`, the key's own algorithm, signature,
/// then the [`Validation`] rules at the clock's time.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeySet,
    validation: Validation,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// A verifier on the system clock.
    pub fn new(keys: KeySet, validation: Validation) -> Verifier {
        Verifier {
            keys,
            validation,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same verifier reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Verifier {
        self.clock = clock;
        self
    }

    /// The trusted keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The validation rules.
    pub fn validation(&self) -> &Validation {
        &self.validation
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<Token, Error> {
        self.verify_at(token, self.clock.now())
    }

    /// Verifies `token` as of `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Token, Error> {
        let parts = split(token, self.validation.max_token_len)?;
        // Header, payload and signature decode into one scratch buffer: on the stack for every
        // ordinary token, on the heap only past that.
        let encoded = parts.header.len() + parts.payload.len() + parts.signature.len();
        let needed = encoded / 4 * 3 + 3;
        if needed <= STACK_SCRATCH {
            let mut scratch = [MaybeUninit::<u8>::uninit(); STACK_SCRATCH];
            self.verify_parts(&parts, &mut scratch, now)
        } else {
            let mut scratch = Vec::with_capacity(needed);
            scratch.resize(needed, MaybeUninit::uninit());
            self.verify_parts(&parts, &mut scratch, now)
        }
    }

    fn verify_parts(
        &self,
        parts: &Parts<'_>,
        scratch: &mut [MaybeUninit<u8>],
        now: i64,
    ) -> Result<Token, Error> {
        let v = &self.validation;
        let (header, key, scratch) = match self.keys.canonical(parts.header) {
            Some((header, key)) => (header, key, scratch),
            None => {
                let (json, rest) = b64::decode_uninit(parts.header, scratch)?;
                let (header, key) = self.keys.resolve(Header::parse(json, v.max_depth)?)?;
                (header, key, rest)
            }
        };
        let (payload, scratch) = b64::decode_uninit(parts.payload, scratch)?;
        if parts.signature.len() > MAX_SIGNATURE / 3 * 4 + 2 {
            return Err(Malformed::SignatureLength.into());
        }
        let (signature, _) = b64::decode_uninit(parts.signature, scratch)?;
        // Parsed before the signature check, while the decoded bytes are still in cache; nothing
        // parsed is used until the signature holds, and a forger gains nothing: the check that
        // follows costs far more than the parse.
        let claims = crate::fastclaims::claims(payload, v.max_depth)?;
        key.verify_signature(parts.signing_input, signature)?;
        v.check(&header, &claims, now)?;
        Ok(Token { header, claims })
    }
}
