//! JSON Web Keys and JWK Sets (RFC 7517, RFC 7518 §6, RFC 8037 §2) and their RFC 7638 thumbprint.
//!
//! A [`Jwk`] is the wire form only; turn it into a usable key with
//! [`SigningKey::from_jwk`](crate::SigningKey::from_jwk) or
//! [`VerifyingKey::from_jwk`](crate::VerifyingKey::from_jwk), which check it.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::Error;

/// One JSON Web Key, as it travels. Private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) are
/// wiped from memory on drop and never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA`, `EC`, `OKP` or `oct`.
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm this key is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use: `sig` or `enc`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Permitted operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Curve (`P-256`, `Ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC / OKP public coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC public coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Private: EC/OKP private key, RSA private exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<Secret>,
    /// Private: RSA first prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<Secret>,
    /// Private: RSA second prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<Secret>,
    /// Private: RSA first CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<Secret>,
    /// Private: RSA second CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dq: Option<Secret>,
    /// Private: RSA CRT coefficient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qi: Option<Secret>,
    /// Private: RSA other primes (multi-prime keys are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oth: Option<serde_json::Value>,
    /// Private: the symmetric key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<Secret>,
}

impl Jwk {
    /// True when the JWK carries any private member.
    pub fn is_private(&self) -> bool {
        self.d.is_some() || self.k.is_some()
    }

    /// A copy without any private member (for a JWKS).
    pub fn to_public(&self) -> Jwk {
        Jwk {
            kty: self.kty.clone(),
            kid: self.kid.clone(),
            alg: self.alg.clone(),
            use_: self.use_.clone(),
            key_ops: self.key_ops.clone(),
            crv: self.crv.clone(),
            x: self.x.clone(),
            y: self.y.clone(),
            n: self.n.clone(),
            e: self.e.clone(),
            ..Jwk::default()
        }
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url): the default `kid` of tessera's keys.
    ///
    /// ```
    /// let jwk: tessera_jose::Jwk = serde_json::from_str(
    ///     r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
    /// ).unwrap();
    /// assert_eq!(jwk.thumbprint().unwrap(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    /// ```
    pub fn thumbprint(&self) -> Result<String, Error> {
        fn member(name: &str, value: Option<&String>, out: &mut String) -> Result<(), Error> {
            let value = value.ok_or(Error::InvalidKey("a required member is missing"))?;
            if !out.ends_with('{') {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            // serde_json escapes the value exactly as RFC 7638 §3 requires (no extra whitespace).
            out.push_str(&serde_json::to_string(value).map_err(|_| Error::Crypto)?);
            Ok(())
        }
        let kty = Some(&self.kty);
        let mut json = String::from("{");
        match self.kty.as_str() {
            "RSA" => {
                member("e", self.e.as_ref(), &mut json)?;
                member("kty", kty, &mut json)?;
                member("n", self.n.as_ref(), &mut json)?;
            }
            "EC" => {
                member("crv", self.crv.as_ref(), &mut json)?;
                member("kty", kty, &mut json)?;
                member("x", self.x.as_ref(), &mut json)?;
                member("y", self.y.as_ref(), &mut json)?;
            }
            "OKP" => {
                member("crv", self.crv.as_ref(), &mut json)?;
                member("kty", kty, &mut json)?;
                member("x", self.x.as_ref(), &mut json)?;
            }
            "oct" => {
                let k = self.k.as_ref().map(|k| k.expose().to_owned());
                member("k", k.as_ref(), &mut json)?;
                member("kty", kty, &mut json)?;
            }
            _ => return Err(Error::Unsupported("key type")),
        }
        json.push('}');
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, json.as_bytes());
        json.zeroize();
        Ok(crate::b64::encode(digest.as_ref()))
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Jwk");
        s.field("kty", &self.kty)
            .field("kid", &self.kid)
            .field("alg", &self.alg);
        for (name, v) in [("crv", &self.crv), ("x", &self.x), ("y", &self.y)] {
            if let Some(v) = v {
                s.field(name, v);
            }
        }
        if self.n.is_some() {
            s.field("n", &"…");
        }
        if self.is_private() {
            s.field("private", &"[redacted]");
        }
        s.finish()
    }
}

/// A JWK Set (RFC 7517 §5): `{"keys":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// A private JWK member: wiped from memory on drop, never shown by `Debug`, serialized as the
/// plain string it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
