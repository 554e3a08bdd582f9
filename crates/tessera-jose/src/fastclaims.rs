//! A fast path for the claims of ordinary access tokens: registered members only, strings without
//! escapes, integer dates. It yields exactly what the strict serde path would, or gives up
//! (`None`) and that path decides, so it can never accept more than the strict path does. It
//! exists because claims parsing is over half of a verification's non-cryptographic cost.

use crate::claims::{Audience, Claims};
use crate::error::{Error, Malformed};
use crate::json::Ctx;

/// Parses decoded payload bytes: by the fast path when it answers, else strictly
/// ([`Claims::parse_strict`]), so the answer is always the strict path's.
pub(crate) fn claims(bytes: &[u8], max_depth: usize) -> Result<Claims, Error> {
    // Validating UTF-8 once up front is cheaper than serde_json doing it string by string.
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Malformed(Malformed::Claims))?;
    match parse(text) {
        Some(claims) => Ok(claims),
        None => Claims::parse_strict(text, &Ctx::new(max_depth)),
    }
}

/// JSON whitespace.
#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index of the `"` that closes a string starting at `i`, or `None` if a backslash or a
/// control character comes first (or the string never closes). Eight bytes at a time: the
/// lowest flagged byte of each test is always a true hit, so the lowest of all is the answer.
#[inline]
fn closing_quote(bytes: &[u8], mut i: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?);
        let quote = w ^ (LO * u64::from(b'"'));
        let backslash = w ^ (LO * u64::from(b'\\'));
        let hit = (quote.wrapping_sub(LO) & !quote)
            | (backslash.wrapping_sub(LO) & !backslash)
            | (w.wrapping_sub(LO * 0x20) & !w);
        let hit = hit & HI;
        if hit != 0 {
            let at = i + (hit.trailing_zeros() / 8) as usize;
            return (bytes.get(at) == Some(&b'"')).then_some(at);
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
    None
}

struct Cursor<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    /// The next byte that is not whitespace.
    #[inline]
    fn next(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.i) {
            if !is_ws(b) {
                return Some(b);
            }
            self.i += 1;
        }
        None
    }

    /// Consumes `c` (after whitespace) or gives up.
    #[inline]
    fn expect(&mut self, c: u8) -> Option<()> {
        if self.next()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes or control characters, borrowed from the input.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.i;
        let end = closing_quote(self.text.as_bytes(), start)?;
        self.i = end + 1;
        // `"` is ASCII, so both ends are character boundaries of the (valid UTF-8) text.
        self.text.get(start..end)
    }

    /// An integer in JSON syntax (no fraction or exponent, no leading zero) within ±2^53.
    #[inline]
    fn integer(&mut self) -> Option<i64> {
        let negative = self.next()? == b'-';
        if negative {
            self.i += 1;
        }
        let bytes = self.text.as_bytes();
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(&d) = bytes.get(self.i) {
            if !d.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && bytes[start] == b'0') || v > 1 << 53 {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = bytes.get(self.i) {
            return None;
        }
        Some(if negative { -v } else { v })
    }

    /// `,` (more members follow: true) or the closing `c` (false).
    #[inline]
    fn comma_or(&mut self, c: u8) -> Option<bool> {
        match self.next()? {
            b',' => {
                self.i += 1;
                Some(true)
            }
            b if b == c => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }
}

/// Parses `text` (valid UTF-8) if it is an ordinary claims object; `None` otherwise.
pub(crate) fn parse(text: &str) -> Option<Claims> {
    let mut c = Cursor { text, i: 0 };
    let mut claims = Claims::default();
    let mut seen = 0u16;
    c.expect(b'{')?;
    let mut more = if c.next()? == b'}' {
        c.i += 1;
        false
    } else {
        true
    };
    while more {
        let name = c.string()?;
        c.expect(b':')?;
        let bit: u16 = match name.as_bytes() {
            b"iss" => 1,
            b"sub" => 1 << 1,
            b"aud" => 1 << 2,
            b"exp" => 1 << 3,
            b"nbf" => 1 << 4,
            b"iat" => 1 << 5,
            b"jti" => 1 << 6,
            b"scope" => 1 << 7,
            b"client_id" => 1 << 8,
            b"sid" => 1 << 9,
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match bit {
            1 => claims.iss = Some(c.string()?.to_owned()),
            2 => claims.sub = Some(c.string()?.to_owned()),
            4 => {
                claims.aud = Some(if c.next()? == b'[' {
                    c.i += 1;
                    let mut list = Vec::new();
                    let mut more_aud = if c.next()? == b']' {
                        c.i += 1;
                        false
                    } else {
                        true
                    };
                    while more_aud {
                        list.push(c.string()?.to_owned());
                        more_aud = c.comma_or(b']')?;
                    }
                    Audience::Many(list)
                } else {
                    Audience::One(c.string()?.to_owned())
                });
            }
            8 => claims.exp = Some(c.integer()?),
            16 => claims.nbf = Some(c.integer()?),
            32 => claims.iat = Some(c.integer()?),
            64 => claims.jti = Some(c.string()?.to_owned()),
            128 => claims.scope = Some(c.string()?.to_owned()),
            256 => claims.client_id = Some(c.string()?.to_owned()),
            _ => claims.sid = Some(c.string()?.to_owned()),
        }
        more = c.comma_or(b'}')?;
    }
    // Only whitespace may follow the object.
    if c.next().is_some() {
        return None;
    }
    Some(claims)
}

#[cfg(test)]
mod tests {
    use super::closing_quote;
    use proptest::prelude::*;

    fn naive(bytes: &[u8], start: usize) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate().skip(start) {
            match b {
                b'"' => return Some(i),
                b'\\' | 0..=0x1f => return None,
                _ => {}
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20000, ..ProptestConfig::default() })]

        #[test]
        fn closing_quote_agrees_with_a_byte_loop(
            s in proptest::collection::vec(
                prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => 0x80u8..=0xff],
                0..40,
            ),
            start in 0usize..10,
        ) {
            prop_assert_eq!(closing_quote(&s, start), naive(&s, start));
        }
    }
}

/// The fast path against the strict one.
#[cfg(test)]
mod agree {
    use super::*;
    use proptest::prelude::*;

    fn member() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("iss"),
            Just("sub"),
            Just("aud"),
            Just("exp"),
            Just("nbf"),
            Just("iat"),
            Just("jti"),
            Just("scope"),
            Just("client_id"),
            Just("sid"),
            Just("x"),
            Just("s\\u0075b"),
        ];
        // Weighted towards values the fast path takes, so that it answers often.
        let value = prop_oneof![
            8 => Just("\"alice\"".to_owned()),
            8 => (0i64..1 << 40).prop_map(|n| n.to_string()),
            4 => Just("[\"a\",\"b\"]".to_owned()),
            1 => Just("\"a\\\"b\"".to_owned()),
            1 => Just("\"\\u00e9t\u{e9}\"".to_owned()),
            1 => Just("\"\"".to_owned()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => (0i64..1 << 54).prop_map(|n| n.to_string()),
            1 => Just("1.5".to_owned()),
            1 => Just("1e3".to_owned()),
            1 => Just("-0".to_owned()),
            1 => Just("01".to_owned()),
            1 => Just("-".to_owned()),
            1 => Just("[]".to_owned()),
            1 => Just("[\"a\",\"b\"]".to_owned()),
            1 => Just("[ \"a\" , \"b\" ]".to_owned()),
            1 => Just("[\"a\", 1]".to_owned()),
            1 => Just("[\"a\",]".to_owned()),
            1 => Just("{}".to_owned()),
            1 => Just("null".to_owned()),
            1 => Just("true".to_owned()),
            1 => Just("\"tab\there\"".to_owned()),
        ];
        (name, value, prop_oneof![Just(""), Just(" "), Just("\n\t")])
            .prop_map(|(n, v, w)| format!("{w}\"{n}\"{w}:{w}{v}{w}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

        /// Whenever the fast path answers, the strict path answers exactly the same.
        #[test]
        fn fast_path_agrees_with_the_strict_path(
            members in proptest::collection::vec(member(), 0..7),
            tail in prop_oneof![Just(""), Just(" "), Just(" x"), Just(","), Just("}")],
        ) {
            let text = format!("{{{}}}{tail}", members.join(","));
            let strict = Claims::parse_strict(&text, &Ctx::new(16)).ok();
            if let Some(fast) = parse(&text) {
                prop_assert_eq!(Some(fast), strict, "{}", text);
            }
        }
    }

    #[test]
    fn the_fast_path_takes_ordinary_claims_and_leaves_the_rest() {
        let text = r#" { "iss":"https://a","sub":"u","aud":["x","y"],"exp":1800000000,"nbf":-5,
            "iat":0,"jti":"j","scope":"a b","client_id":"c","sid":"s" } "#;
        let fast = parse(text).unwrap();
        assert_eq!(Some(fast), Claims::parse_strict(text, &Ctx::new(16)).ok());
        assert!(parse("{}").is_some());
        for other in [
            r#"{"x":1}"#,
            r#"{"exp":1.5}"#,
            r#"{"exp":01}"#,
            r#"{"sub":"a\"b"}"#,
            r#"{"sub":"a","sub":"b"}"#,
            r#"{"sub":"a"}x"#,
            r#"{"sub":"a",}"#,
            r#"{"aud":[]"#,
            "{\"sub\":\"a\tb\"}",
        ] {
            assert!(parse(other).is_none(), "{other}");
        }
    }
}
