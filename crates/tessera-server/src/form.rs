//! Strict `application/x-www-form-urlencoded` decoding (WHATWG URL §5.1, RFC 6749 Appendix B),
//! the one parser behind every form, query and Basic credential tessera reads. Unlike the lenient
//! decoders (which turn invalid UTF-8 into U+FFFD and keep a stray `%` as it is), it refuses input
//! that is not what a form encoder produces: a `%` not followed by two hex digits, and names or
//! values that do not decode to UTF-8. Two different byte strings can then never read as the same
//! parameter, and a malformed request is answered 400 instead of being half-understood.

/// Why a form could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A `%` not followed by two hexadecimal digits.
    #[error("a percent-encoding is malformed")]
    Percent,
    /// A name or value does not decode to UTF-8.
    #[error("a parameter is not UTF-8")]
    Utf8,
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte, anything else itself.
pub fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    // Tokens, ids and secrets have nothing to decode: checked and copied whole.
    if !raw.iter().any(|b| matches!(b, b'+' | b'%')) {
        return std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| FormError::Utf8);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |j: usize| raw.get(j).and_then(|c| (*c as char).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err(FormError::Percent),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::Utf8)
}

/// The name/value pairs of a form body or query, in order; empty pieces (`a=1&&b=2`) skipped, a
/// piece without `=` a name with an empty value, as the standard says.
pub fn parse(raw: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    raw.split(|b| *b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|b| *b == b'=') {
                Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                None => (piece, &[][..]),
            };
            Ok((decode_component(name)?, decode_component(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(
            parse(b"a=1&b=x+y%26z&&c&d=%C3%A9").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y&z".into()),
                ("c".into(), String::new()),
                ("d".into(), "é".into())
            ]
        );
        assert_eq!(parse(b"a=%ff"), Err(FormError::Utf8));
        assert_eq!(parse(b"a=\xff"), Err(FormError::Utf8));
        assert_eq!(parse(b"\xc3=1"), Err(FormError::Utf8));
        assert_eq!(parse(b"a=%4"), Err(FormError::Percent));
        assert_eq!(parse(b"a=%zz"), Err(FormError::Percent));
        assert_eq!(decode_component(b"secret&junk=1").unwrap(), "secret&junk=1");
    }
}
