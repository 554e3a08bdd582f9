//! The one error type of the codec: says what failed, never echoes key material or token bytes.

use std::fmt;

/// Why a token, key or JWK Set was refused.
///
/// The `Display` text is one plain sentence that is safe to log and to return to a client: it
/// never contains a key, a signature or the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is not a well-formed JWS compact serialization, or its JSON is not acceptable.
    #[error("malformed token: {0}")]
    Malformed(Malformed),
    /// The token is longer than the configured cap (checked before any decoding).
    #[error("token is larger than {limit} bytes")]
    TooLarge {
        /// The cap in force.
        limit: usize,
    },
    /// Something well-formed that this codec deliberately does not support (JWE, JSON
    /// serialization, `b64: false`, an unknown `crit` extension, an algorithm outside the list).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// No key matches the token's `kid` (or the token has no `kid` and several keys are known).
    #[error("no key matches the token's key id")]
    UnknownKey,
    /// The token's `alg` differs from the algorithm bound to the key it names.
    #[error("the token's algorithm is not the one bound to its key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` is in the past, beyond the leeway.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// `iss` is not the expected issuer.
    #[error("token has the wrong issuer")]
    WrongIssuer,
    /// `aud` names none of the expected audiences (or is missing when one is required).
    #[error("token has the wrong audience")]
    WrongAudience,
    /// The header's `typ` is not the expected media type.
    #[error("token has the wrong type")]
    WrongType,
    /// A claim the validation requires is absent.
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    /// A key (JWK, PEM, raw bytes) was refused when it was made or loaded.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The cryptographic library failed to produce a signature or a key.
    #[error("cryptographic operation failed")]
    Crypto,
}

/// What exactly was malformed. Kept separate so callers can match on the broad [`Error`] and
/// still report a precise reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// Not three dot-separated parts.
    Parts,
    /// A part is not canonical unpadded base64url.
    Base64,
    /// The header is not a JSON object of the expected shape.
    Header,
    /// The payload is not a JSON object of the expected shape.
    Claims,
    /// A member name occurs twice in the header or the claims.
    DuplicateMember,
    /// JSON nested deeper than the cap.
    TooDeep,
    /// A NumericDate (`exp`, `nbf`, `iat`) that is not a JSON number in range.
    NumericDate,
    /// The signature has the wrong length for the algorithm.
    SignatureLength,
    /// The header has no `alg`, or an `alg` that is not a string.
    MissingAlg,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Parts => "expected three base64url parts separated by dots",
            Malformed::Base64 => "a part is not canonical unpadded base64url",
            Malformed::Header => "the header is not an acceptable JSON object",
            Malformed::Claims => "the payload is not an acceptable JSON claims object",
            Malformed::DuplicateMember => "a member name occurs twice",
            Malformed::TooDeep => "JSON nested too deeply",
            Malformed::NumericDate => "a date claim is not a number in range",
            Malformed::SignatureLength => "the signature has the wrong length for its algorithm",
            Malformed::MissingAlg => "the header has no valid `alg`",
        })
    }
}

impl Error {
    /// A short stable identifier for metrics labels and logs (`"expired"`, `"bad_signature"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::TooLarge { .. } => "too_large",
            Error::Unsupported(_) => "unsupported",
            Error::UnknownKey => "unknown_key",
            Error::AlgorithmMismatch => "algorithm_mismatch",
            Error::BadSignature => "bad_signature",
            Error::Expired => "expired",
            Error::NotYetValid => "not_yet_valid",
            Error::IssuedInFuture => "issued_in_future",
            Error::WrongIssuer => "wrong_issuer",
            Error::WrongAudience => "wrong_audience",
            Error::WrongType => "wrong_type",
            Error::MissingClaim(_) => "missing_claim",
            Error::InvalidKey(_) => "invalid_key",
            Error::Crypto => "crypto",
        }
    }
}

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Self {
        Error::Malformed(m)
    }
}
