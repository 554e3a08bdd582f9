//! Values a client chose (a typed username, a client id, a scope, a URL), made safe for a log
//! line: quoted, with control characters, quotes and backslashes escaped, and cut at a length, so
//! that no input can forge a second line or a field of its own.

use std::fmt;

/// The longest part of an untrusted value that is written (in characters).
const MAX_CHARS: usize = 128;

/// An untrusted value for a log field: `tracing::info!(client = %Untrusted(id))` writes it as a
/// Rust string literal (`"a\nb"`), cut after 128 characters with `…` after the closing quote.
///
/// ```
/// use tessera_core::logsafe::Untrusted;
/// assert_eq!(Untrusted("alice\naudit event=login_ok").to_string(), r#""alice\naudit event=login_ok""#);
/// assert_eq!(Untrusted("\u{1b}[31m").to_string(), r#""\u{1b}[31m""#);
/// ```
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_CHARS) {
            // `str`'s Debug quotes and escapes control, non-printable and bidirectional
            // characters, quotes and backslashes.
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Untrusted;

    #[test]
    fn nothing_typed_escapes_its_field() {
        assert_eq!(Untrusted("a\r\nb").to_string(), r#""a\r\nb""#);
        assert_eq!(Untrusted("x\" y=1").to_string(), r#""x\" y=1""#);
        assert_eq!(Untrusted("\u{202e}evil").to_string(), r#""\u{202e}evil""#);
        let long = "é".repeat(300);
        let shown = Untrusted(&long).to_string();
        assert!(shown.ends_with("\"…"));
        assert_eq!(shown.chars().count(), 128 + 3);
    }
}
