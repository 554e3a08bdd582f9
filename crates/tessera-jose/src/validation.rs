//! What a verified token must also satisfy: time window with leeway, issuer, audience, type,
//! required claims, and the size and nesting caps checked before any work is done.

use crate::claims::Claims;
use crate::error::Error;
use crate::header::Header;

/// Claim validation rules. `Validation::default()` is safe: `exp` required, 60 s leeway, 8 KiB
/// size cap, nesting depth 16; add `issuer`, `audiences` and `typ` for your deployment.
///
/// ```
/// let v = tessera_jose::Validation {
///     issuer: Some("https://auth.example.com".into()),
///     audiences: vec!["https://api.example.com".into()],
///     typ: Some("at+jwt".into()),
///     ..Default::default()
/// };
/// assert_eq!(v.leeway, 60);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: i64,
    /// When set, `iss` must be present and equal this exactly.
    pub issuer: Option<String>,
    /// When non-empty, `aud` must be present and name at least one of these.
    pub audiences: Vec<String>,
    /// When set, the header's `typ` must be this media type (compared case-insensitively, with
    /// an optional `application/` prefix, as RFC 7515 §4.1.9 says).
    pub typ: Option<String>,
    /// Claims that must be present (default: `exp`).
    pub required: Vec<String>,
    /// Tokens longer than this many bytes are refused before decoding.
    pub max_token_len: usize,
    /// JSON nested deeper than this is refused.
    pub max_depth: usize,
}

/// The default size cap: 8 KiB.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// The default JSON nesting cap.
pub const DEFAULT_MAX_DEPTH: usize = 16;

impl Default for Validation {
    fn default() -> Self {
        Validation {
            leeway: 60,
            issuer: None,
            audiences: Vec::new(),
            typ: None,
            required: vec!["exp".into()],
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Compares media types as RFC 7515 §4.1.9 says: ignoring ASCII case and an `application/` prefix.
pub fn typ_matches(expected: &str, actual: &str) -> bool {
    fn strip(t: &str) -> &str {
        match t.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
            _ => t,
        }
    }
    strip(expected).eq_ignore_ascii_case(strip(actual))
}

impl Validation {
    /// Checks a verified header and claims against these rules at time `now`.
    pub fn check(&self, header: &Header, claims: &Claims, now: i64) -> Result<(), Error> {
        if let Some(typ) = &self.typ {
            match &header.typ {
                Some(t) if typ_matches(typ, t) => {}
                _ => return Err(Error::WrongType),
            }
        }
        for name in &self.required {
            if !claims.has(name) {
                return Err(Error::MissingClaim(registered(name)));
            }
        }
        let leeway = self.leeway;
        if claims
            .exp
            .is_some_and(|exp| now >= exp.saturating_add(leeway))
        {
            return Err(Error::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
        {
            return Err(Error::NotYetValid);
        }
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(leeway))
        {
            return Err(Error::IssuedInFuture);
        }
        if let Some(iss) = &self.issuer {
            match &claims.iss {
                None => return Err(Error::MissingClaim("iss")),
                Some(i) if i != iss => return Err(Error::WrongIssuer),
                Some(_) => {}
            }
        }
        if !self.audiences.is_empty() {
            match &claims.aud {
                None => return Err(Error::MissingClaim("aud")),
                Some(aud) if !self.audiences.iter().any(|a| aud.contains(a)) => {
                    return Err(Error::WrongAudience);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// A `'static` name for a required claim in an error (custom names are reported generically).
fn registered(name: &str) -> &'static str {
    match name {
        "iss" => "iss",
        "sub" => "sub",
        "aud" => "aud",
        "exp" => "exp",
        "nbf" => "nbf",
        "iat" => "iat",
        "jti" => "jti",
        "scope" => "scope",
        "client_id" => "client_id",
        "sid" => "sid",
        _ => "a required custom claim",
    }
}
