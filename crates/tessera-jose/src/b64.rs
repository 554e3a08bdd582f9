//! Canonical unpadded base64url (RFC 7515 §2): no padding, no `+`/`/`, no whitespace, and the
//! unused trailing bits of the last character must be zero, so every value has one encoding.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{Error, Malformed};

/// The encoder: URL-safe alphabet, no padding.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Decodes canonical base64url into a new buffer.
pub fn decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    decode_into(input, &mut out)?;
    Ok(out)
}

/// Marks a byte that is not in the base64url alphabet.
const INVALID: u8 = 0x80;

/// The value of each base64url character, `INVALID` for every other byte.
static DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Bit 31 of a [`QUAD`] entry: the character is not in the alphabet.
const BAD_BIT: u32 = 1 << 31;

/// `QUAD[k][c]`: the value of character `c` already shifted to its place in a 24-bit group of
/// four, or [`BAD_BIT`]. Four lookups and three ORs decode four characters.
static QUAD: [[u32; 256]; 4] = {
    let mut t = [[BAD_BIT; 256]; 4];
    let mut c = 0;
    while c < 256 {
        let v = DECODE[c];
        if v != INVALID {
            let mut k = 0;
            while k < 4 {
                t[k][c] = (v as u32) << (18 - 6 * k);
                k += 1;
            }
        }
        c += 1;
    }
    t
};

#[inline(always)]
fn quad(q: &[u8; 4]) -> u32 {
    QUAD[0][usize::from(q[0])]
        | QUAD[1][usize::from(q[1])]
        | QUAD[2][usize::from(q[2])]
        | QUAD[3][usize::from(q[3])]
}

/// The decoded length of `n` canonical characters, or `None` when no canonical encoding has
/// that length (`n % 4 == 1`).
const fn decoded_len(n: usize) -> Option<usize> {
    match n % 4 {
        0 => Some(n / 4 * 3),
        2 => Some(n / 4 * 3 + 1),
        3 => Some(n / 4 * 3 + 2),
        _ => None,
    }
}

/// Decodes canonical base64url, appending to `out`.
///
/// A table-driven decoder for the verifier's hot path (the payload and the signature of every
/// token); the `base64` crate, which encodes, is its reference in the tests.
pub fn decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let len = decoded_len(input.len()).ok_or(Malformed::Base64)?;
    let start = out.len();
    out.resize(start + len, 0);
    match decode_to(input, &mut out[start..]) {
        Ok(()) => Ok(()),
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Decodes into `out`, returning the number of bytes written; `out` must be large enough.
pub fn decode_slice(input: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let len = decoded_len(input.len()).ok_or(Malformed::Base64)?;
    let dst = out.get_mut(..len).ok_or(Malformed::Base64)?;
    decode_to(input, dst)?;
    Ok(len)
}

/// Decodes `input` into `out`, whose length is exactly the decoded length.
fn decode_to(input: &[u8], out: &mut [u8]) -> Result<(), Error> {
    let full = input.len() / 4;
    let (body, tail) = input.split_at(full * 4);
    let (out_body, out_tail) = out.split_at_mut(full * 3);
    let mut acc = 0u32;
    // Eight characters to six bytes at a time; fixed-size arrays let the compiler drop the
    // bounds checks and write each group with plain stores.
    let mut inp = body.chunks_exact(8);
    let mut outp = out_body.chunks_exact_mut(6);
    for (q, o) in (&mut inp).zip(&mut outp) {
        let (Ok(q), Ok(o)) = (<&[u8; 8]>::try_from(q), <&mut [u8; 6]>::try_from(o)) else {
            return Err(Malformed::Base64.into());
        };
        let (q0, q1) = q.split_at(4);
        let (Ok(q0), Ok(q1)) = (<&[u8; 4]>::try_from(q0), <&[u8; 4]>::try_from(q1)) else {
            return Err(Malformed::Base64.into());
        };
        let (hi, lo) = (quad(q0), quad(q1));
        acc |= hi | lo;
        let n = u64::from(hi) << 24 | u64::from(lo & 0x00ff_ffff);
        let bytes = n.to_be_bytes();
        *o = [bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]];
    }
    // At most one group of four is left.
    let rest = inp.remainder();
    let out_rest = outp.into_remainder();
    let out_rest_len = out_rest.len();
    if let (Ok(q), Ok(o)) = (
        <&[u8; 4]>::try_from(rest),
        <&mut [u8; 3]>::try_from(out_rest),
    ) {
        let n = quad(q);
        acc |= n;
        let bytes = n.to_be_bytes();
        *o = [bytes[1], bytes[2], bytes[3]];
    } else if !rest.is_empty() || out_rest_len != 0 {
        return Err(Malformed::Base64.into());
    }
    let mut bad = u8::from(acc & BAD_BIT != 0) << 7;
    match (tail, out_tail) {
        ([], []) => {}
        ([x, y], [o0]) => {
            let (a, b) = (DECODE[usize::from(*x)], DECODE[usize::from(*y)]);
            // Canonical: the 4 unused low bits of the last character are zero.
            bad |= a | b | u8::from(b & 0x0f != 0) << 7;
            *o0 = a << 2 | b >> 4;
        }
        ([x, y, z], [o0, o1]) => {
            let (a, b, c) = (
                DECODE[usize::from(*x)],
                DECODE[usize::from(*y)],
                DECODE[usize::from(*z)],
            );
            // Canonical: the 2 unused low bits of the last character are zero.
            bad |= a | b | c | u8::from(c & 0x03 != 0) << 7;
            *o0 = a << 2 | b >> 4;
            *o1 = b << 4 | c >> 2;
        }
        _ => return Err(Malformed::Base64.into()),
    }
    if bad & INVALID != 0 {
        return Err(Malformed::Base64.into());
    }
    Ok(())
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
    fn agrees_with_the_base64_crate_on_every_short_input() {
        // Every string of up to 3 characters over the alphabet plus some outsiders: our decoder
        // and the base64 crate (strict: no padding, no trailing bits) accept exactly the same ones
        // and decode them alike.
        let chars: Vec<u8> = b"AQgw-_+/=. \n\xff\x00".to_vec();
        let alphabet: Vec<u8> = (0u8..=255)
            .filter(|c| DECODE[*c as usize] != INVALID)
            .collect();
        let mut pool = alphabet.clone();
        pool.extend(chars);
        for a in &pool {
            for b in &pool {
                for c in [None].into_iter().chain(pool.iter().map(Some)) {
                    let mut s = vec![*a, *b];
                    s.extend(c);
                    let ours = decode(&s).ok();
                    let theirs = ENGINE.decode(&s).ok();
                    assert_eq!(ours, theirs, "{s:?}");
                }
            }
        }
    }

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
