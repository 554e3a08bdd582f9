//! Reading a token without checking it — for inspection tools like `tessera decode` only. Nothing
//! returned here is trustworthy; the module's name makes every use visible in review.

use serde_json::Value;

use crate::b64;
use crate::error::{Error, Malformed};
use crate::json::parse_strict;
use crate::jws::split;
use crate::validation::DEFAULT_MAX_DEPTH;

/// A decoded, unverified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Unverified {
    /// The header, as JSON.
    pub header: Value,
    /// The payload as JSON, when it is JSON.
    pub claims: Option<Value>,
    /// The payload's bytes.
    pub payload: Vec<u8>,
    /// Length in bytes of the (unchecked) signature.
    pub signature_len: usize,
}

/// Decodes a compact JWS's header and payload strictly (canonical base64url, unique member names,
/// nesting cap) without checking its signature.
pub fn decode_unverified(token: &str, max_len: usize) -> Result<Unverified, Error> {
    let parts = split(token, max_len)?;
    let header = parse_strict(
        &b64::decode(parts.header)?,
        DEFAULT_MAX_DEPTH,
        Malformed::Header,
    )?;
    if !header.is_object() {
        return Err(Malformed::Header.into());
    }
    let payload = b64::decode(parts.payload)?;
    let claims = match parse_strict(&payload, DEFAULT_MAX_DEPTH, Malformed::Claims) {
        Ok(v) if v.is_object() => Some(v),
        Ok(_) | Err(Malformed::Claims) => None,
        Err(other) => return Err(other.into()),
    };
    let signature_len = b64::decode(parts.signature)?.len();
    Ok(Unverified {
        header,
        claims,
        payload,
        signature_len,
    })
}
