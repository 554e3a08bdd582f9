//! Canonical unpadded base64url (RFC 7515 §2): no padding, no `+`/`/`, no whitespace, and the
//! unused trailing bits of the last character must be zero, so every value has one encoding.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{Error, Malformed};

/// The engine: URL-safe alphabet, no padding accepted or produced, non-zero trailing bits refused.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Decodes canonical base64url into a new buffer.
pub fn decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    decode_into(input, &mut out)?;
    Ok(out)
}

/// Decodes canonical base64url, appending to `out`.
pub fn decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    // A length of 1 mod 4 can never be canonical; the engine rejects it too, this is just early.
    if input.len() % 4 == 1 {
        return Err(Malformed::Base64.into());
    }
    ENGINE
        .decode_vec(input, out)
        .map_err(|_| Error::Malformed(Malformed::Base64))
}

/// Decodes into `out`, returning the number of bytes written; `out` must be large enough.
pub fn decode_slice(input: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    if input.len() % 4 == 1 {
        return Err(Malformed::Base64.into());
    }
    ENGINE
        .decode_slice(input, out)
        .map_err(|_| Error::Malformed(Malformed::Base64))
}

/// Encodes as unpadded base64url.
pub fn encode(input: &[u8]) -> String {
    ENGINE.encode(input)
}

/// Encodes as unpadded base64url, appending to `out`.
pub fn encode_into(input: &[u8], out: &mut String) {
    ENGINE.encode_string(input, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_canonical_only() {
        assert_eq!(encode(b"\xfb\xff"), "-_8");
        assert_eq!(decode(b"-_8").unwrap(), b"\xfb\xff");
        for bad in ["-_8=", "+/8", "-_ 8", "-_9", "A", "AB\n", "YQ==", "YR"] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert_eq!(decode(b"YQ").unwrap(), b"a");
        assert_eq!(decode(b"").unwrap(), b"");
    }
}
