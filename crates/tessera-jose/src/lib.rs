//! tessera-jose: a strict JWS/JWT codec. Sign and verify compact JWS (HS256/384/512, RS256,
//! PS256, ES256, EdDSA), JWK and JWK Set, RFC 7638 thumbprints, claim validation.
//!
//! Pure: no I/O, no async, no global state; time comes from a [`Clock`]. Strict after RFC 8725:
//! the algorithm is the key's, never the token's; `none` does not exist; `crit`, `b64`, duplicate
//! members, non-canonical base64url, JWE (and its `enc`, `zip` members) and the JSON
//! serializations are refused; `jku`, `x5u`, `jwk` and `x5c` are never used, and must have their
//! registered types; tokens are size-capped before decoding. The cryptography is aws-lc-rs.
//!
//! ```
//! use tessera_jose::{Algorithm, Claims, Error, KeySet, Signer, SigningKey, Validation, Verifier};
//! let key = SigningKey::generate(Algorithm::ES256, Some("k1")).unwrap();
//! let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
//! let token = Signer::new(key, None).unwrap()
//!     .sign(&Claims { exp: Some(1_000), ..Claims::default() }).unwrap();
//! let verifier = Verifier::new(keys, Validation::default());
//! assert!(verifier.verify_at(&token, 900).is_ok());
//! assert_eq!(verifier.verify_at(&token, 2_000), Err(Error::Expired));
//! ```

mod alg;
pub mod b64;
mod claims;
pub mod dangerous;
mod der;
mod error;
mod fastclaims;
mod header;
mod json;
mod jwk;
mod jws;
mod key;
mod pem;
mod revocation;
mod time;
mod validation;

/// What the fuzz targets (`fuzz/`) reach that the API does not: built only under `cfg(fuzzing)`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use crate::{Claims, Error};

    /// The claims fast path: `None` when it leaves the text to the strict path.
    pub fn claims_fast(text: &str) -> Option<Claims> {
        crate::fastclaims::parse(text)
    }

    /// The strict claims path.
    pub fn claims_strict(text: &str) -> Result<Claims, Error> {
        Claims::parse_strict(text, &crate::json::Ctx::new(crate::DEFAULT_MAX_DEPTH))
    }
}

pub use alg::Algorithm;
pub use claims::{Audience, Claims};
pub use error::{Error, Malformed};
pub use header::Header;
pub use jwk::{Jwk, JwkSet, Secret};
pub use jws::{EncodedHeader, KeySet, Signer, Token, Verifier, sign_jws, verify_jws};
pub use key::{MIN_RSA_BITS, SigningKey, VerifyingKey};
pub use revocation::{Revocation, RevocationEvent, RevocationKey, RevocationSet};
pub use time::{Clock, ManualClock, SystemClock};
pub use validation::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_TOKEN_LEN, Validation, typ_matches};
