//! Opaque tokens: 256 random bits, base64url, a type prefix and a checksum, so a mistyped or
//! foreign token is refused before any store is asked. Stores only ever see a hash of it.
//!
//! A refresh token also carries the second it was issued, after its prefix, and is stored under
//! that time followed by its hash ([`Token::hash`]): the keys of a table of millions grow at one
//! end, where each rotation's insert finds its page in a cache, instead of at a random page of
//! the tree (one read from disk per rotation once the table outgrows the memory that caches
//! it). Refresh tokens without the time (53 characters, as versions before issued them) are
//! still read, and stored under their SHA-256 as before.

use std::fmt;

use aws_lc_rs::{digest, rand};
use tessera_jose::b64;

/// The kinds of opaque token and their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A session id: `tss_`.
    Session,
    /// A refresh token: `tsr_`.
    Refresh,
    /// A client secret: `tsc_`.
    ClientSecret,
    /// An authorization code: `tsa_`.
    Code,
}

impl Kind {
    /// The prefix of this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Session => "tss_",
            Kind::Refresh => "tsr_",
            Kind::ClientSecret => "tsc_",
            Kind::Code => "tsa_",
        }
    }
}

/// Random bytes in a token.
const RANDOM: usize = 32;
/// base64url of the random part.
const BODY: usize = 43;
/// base64url of the 4-byte checksum.
const CHECK: usize = 6;
/// Total length: prefix, body, checksum.
pub const LEN: usize = 4 + BODY + CHECK;
/// The issue time of a timed refresh token: 6 characters of [`SORTED_B64`] (seconds, 36 bits).
const TIME: usize = 6;
/// Total length of a timed refresh token: prefix, time, body, checksum.
pub const TIMED_LEN: usize = 4 + TIME + BODY + CHECK;

/// The key of a token: what stores keep and look up. The SHA-256 of the token; for a refresh
/// token that carries its issue time, that time then 224 bits of the SHA-256 ([`Token::hash`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lowercase hex, for SQL keys and logs (a key reveals nothing usable: a hash, and for a
    /// timed refresh token the second it was issued).
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    /// Parses [`TokenHash::to_hex`] output.
    pub fn from_hex(s: &str) -> Option<TokenHash> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(TokenHash(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The end: hash bits whatever the kind (a timed key begins with its issue second).
        write!(f, "TokenHash(…{})", &self.to_hex()[52..])
    }
}

/// A token value. Its `Debug` shows only the kind; the value leaves through [`Token::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    kind: Kind,
    value: String,
}

fn checksum(prefix: &str, body: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prefix.as_bytes());
    ctx.update(body.as_bytes());
    let d = ctx.finish();
    b64::encode(&d.as_ref()[..4])
}

/// `N` bytes from the system's random generator. Its failing is not recoverable; aws-lc aborts
/// before this could return.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut random = [0u8; N];
    if rand::fill(&mut random).is_err() {
        random = [0u8; N];
        tracing::error!("system random generator failed");
    }
    random
}

impl Token {
    /// The token of `kind` made of `body` (base64url), after its issue time `at` (Unix seconds)
    /// if it carries one, with the checksum of both.
    fn assemble(kind: Kind, at: Option<i64>, body: &str) -> Token {
        let prefix = kind.prefix();
        let mut value = String::with_capacity(TIMED_LEN);
        value.push_str(prefix);
        if let Some(at) = at {
            value.push_str(&sorted_time(at));
        }
        value.push_str(body);
        let check = checksum(prefix, &value[prefix.len()..]);
        value.push_str(&check);
        Token { kind, value }
    }

    /// A new random token of `kind`.
    pub fn generate(kind: Kind) -> Token {
        Token::assemble(kind, None, &b64::encode(&random_bytes::<RANDOM>()))
    }

    /// A new refresh token: 256 random bits, after its issue time `at` if given (without it,
    /// the form versions before issued).
    pub fn refresh(at: Option<i64>) -> Token {
        Token::assemble(Kind::Refresh, at, &b64::encode(&random_bytes::<RANDOM>()))
    }

    /// The successor of refresh token `from`: 256 bits derived from `from` under `key`,
    /// unpredictable without the key and the same every time, after its issue time `at` if
    /// given (the stored time of the rotation, so that a retry gets the same token; without it,
    /// the form versions before issued).
    pub fn successor(key: &aws_lc_rs::hmac::Key, from: &str, at: Option<i64>) -> Token {
        let tag = aws_lc_rs::hmac::sign(key, from.as_bytes());
        Token::assemble(Kind::Refresh, at, &b64::encode(tag.as_ref()))
    }

    /// Checks the shape and checksum of a presented token of `kind`: no store is asked for a
    /// token that fails here. A refresh token may carry its issue time.
    pub fn parse(kind: Kind, value: &str) -> Option<Token> {
        let time = match value.len() {
            LEN => 0,
            TIMED_LEN if kind == Kind::Refresh => TIME,
            _ => return None,
        };
        if !value.starts_with(kind.prefix()) {
            return None;
        }
        let time_and_body = value.get(4..4 + time + BODY)?;
        let (issued, body) = time_and_body.split_at_checked(time)?;
        let check = value.get(4 + time + BODY..)?;
        if !issued.bytes().all(|c| SORTED_B64.contains(&c)) {
            return None;
        }
        b64::decode(body.as_bytes()).ok()?;
        // Comparing checksums needs no constant time: they are derived from the value itself.
        (checksum(kind.prefix(), time_and_body) == check).then(|| Token {
            kind,
            value: value.to_owned(),
        })
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The token's text, for the one place it is handed to its holder.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The key stores keep: the SHA-256 of the token; for a refresh token that carries its issue
    /// time, that time (4 bytes, big-endian seconds; past 2106, the last of them) followed by the
    /// first 224 bits of the SHA-256, so that keys sort by issue time.
    pub fn hash(&self) -> TokenHash {
        let mut hash = Token::hash_of(&self.value);
        if self.value.len() == TIMED_LEN {
            let issued = self.value.as_bytes()[4..4 + TIME]
                .iter()
                .fold(0u64, |t, c| t << 6 | sextet(*c));
            let issued = u32::try_from(issued).unwrap_or(u32::MAX);
            hash.0.copy_within(..28, 4);
            hash.0[..4].copy_from_slice(&issued.to_be_bytes());
        }
        hash
    }

    /// The SHA-256 of any presented text (a secret checked against a stored hash).
    pub fn hash_of(value: &str) -> TokenHash {
        let d = digest::digest(&digest::SHA256, value.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenHash(out)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}…)", self.kind.prefix())
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

/// Anti-forgery tokens for the server's HTML forms: a MAC of what the form is bound to (a
/// session, a login cookie), so nothing is stored and a token from one binding fails another.
#[derive(Clone)]
pub struct CsrfKey(aws_lc_rs::hmac::Key);

impl fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfKey(…)")
    }
}

impl CsrfKey {
    /// A key (derive it from the master key).
    pub fn new(key: aws_lc_rs::hmac::Key) -> CsrfKey {
        CsrfKey(key)
    }

    /// The token for `binding`.
    pub fn token(&self, binding: &str) -> String {
        b64::encode(aws_lc_rs::hmac::sign(&self.0, binding.as_bytes()).as_ref())
    }

    /// Whether `presented` is the token for `binding`; in constant time.
    pub fn verify(&self, binding: &str, presented: &str) -> bool {
        match b64::decode(presented.as_bytes()) {
            Ok(tag) => aws_lc_rs::hmac::verify(&self.0, binding.as_bytes(), &tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// The base64url alphabet in ASCII order: an identifier's time, written with it, sorts as the
/// time does.
const SORTED_B64: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// A token identifier (`jti`) issued at `now` (Unix seconds): 22 characters of the base64url
/// alphabet, as [`random_id`]'s, of which the first 6 are the time (36 bits, in
/// [`SORTED_B64`]) and the other 16 are 96 random bits. Unique, unguessable, not secret; identifiers issued later sort after,
/// so that the indexes keyed by them (the records of a refresh family's access tokens, the
/// denylist) grow at one end, in pages a cache holds, instead of at a random page of a tree of
/// millions (measured: refresh at 10^6 recorded access tokens 0.80 of its rate at 10^3 with
/// random identifiers, 0.91 with identifiers in time order).
pub fn token_id(now: i64) -> String {
    let mut id = sorted_time(now);
    id.push_str(&b64::encode(&random_bytes::<12>()));
    id
}

/// `now` (Unix seconds; 0 before 1970, the last of 36 bits after) as 6 characters of
/// [`SORTED_B64`].
fn sorted_time(now: i64) -> String {
    let t = u64::try_from(now).unwrap_or(0).min((1 << 36) - 1);
    let mut out = String::with_capacity(22);
    for shift in (0..6).rev() {
        let sextet = (t >> (6 * shift)) & 63;
        out.push(char::from(SORTED_B64[sextet as usize]));
    }
    out
}

/// The value of a character of [`SORTED_B64`] (checked by the caller).
fn sextet(c: u8) -> u64 {
    SORTED_B64.iter().position(|x| *x == c).unwrap_or(0) as u64
}

/// A random identifier with a readable prefix (`usr_…`, `ses_…`): unique, not secret.
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", b64::encode(&random_bytes::<16>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identifiers issued later sort after (every place of the time's six characters carries
    /// into the next), two of one second differ, and each is 22 characters of the base64url
    /// alphabet (opaque: nothing decodes an identifier).
    #[test]
    fn token_ids_sort_by_their_time_and_differ_within_a_second() {
        let (a, b, c) = (
            token_id(1_700_000_000),
            token_id(1_700_000_000),
            token_id(1_700_000_001),
        );
        assert_ne!(a, b);
        assert!(a < c && b < c, "{a} {b} {c}");
        let mut last = token_id(0);
        for t in [
            1,
            63,
            64,
            4_095,
            4_096,
            262_143,
            262_144,
            1 << 30,
            (1 << 36) - 1,
        ] {
            let id = token_id(t);
            assert!(id[..6] > last[..6], "{t}: {id} after {last}");
            assert_eq!(id.len(), 22);
            assert!(id.bytes().all(|x| SORTED_B64.contains(&x)), "{id}");
            last = id;
        }
    }

    #[test]
    fn generated_tokens_parse_and_typos_do_not() {
        let t = Token::generate(Kind::Session);
        assert_eq!(t.expose().len(), LEN);
        assert!(t.expose().starts_with("tss_"));
        assert_eq!(Token::parse(Kind::Session, t.expose()), Some(t.clone()));
        assert_eq!(Token::parse(Kind::Refresh, t.expose()), None);
        let mut typo = t.expose().as_bytes().to_vec();
        typo[10] = if typo[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            Token::parse(Kind::Session, std::str::from_utf8(&typo).unwrap()),
            None
        );
        assert_eq!(Token::parse(Kind::Session, ""), None);
        assert_eq!(Token::parse(Kind::Session, "tss_"), None);
        assert!(!format!("{t:?}").contains(&t.expose()[4..]));
        assert_ne!(Token::generate(Kind::Session), t);
    }

    /// A refresh token carries its issue second: 59 characters, read as a refresh token only,
    /// its checksum covering the time; its key is that time then 224 bits of its SHA-256, so
    /// later tokens have greater keys. A successor is the same for the same time and
    /// predecessor, and differs from one of another time.
    #[test]
    fn refresh_tokens_carry_their_time_and_key_in_its_order() {
        let t = Token::refresh(Some(1_800_000_000));
        assert_eq!(t.expose().len(), TIMED_LEN);
        assert!(t.expose().starts_with("tsr_"));
        assert_eq!(Token::parse(Kind::Refresh, t.expose()), Some(t.clone()));
        assert_eq!(Token::parse(Kind::Session, t.expose()), None);
        let session = format!("tss_{}", &t.expose()[4..]);
        assert_eq!(Token::parse(Kind::Session, &session), None);
        let hash = t.hash();
        assert_eq!(hash.0[..4], 1_800_000_000_u32.to_be_bytes());
        assert_eq!(hash.0[4..], Token::hash_of(t.expose()).0[..28]);
        // The time is under the checksum: another second is a typo.
        let mut typo = t.expose().as_bytes().to_vec();
        typo[9] = if typo[9] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            Token::parse(Kind::Refresh, std::str::from_utf8(&typo).unwrap()),
            None
        );
        let mut keys: Vec<TokenHash> = [1, 63, 64, 4_096, 1_800_000_000, u32::MAX.into()]
            .into_iter()
            .map(|at| Token::refresh(Some(at)).hash())
            .collect();
        let issued = keys.clone();
        keys.sort();
        assert_eq!(keys, issued);
        assert_eq!(Token::refresh(Some(1 << 40)).hash().0[..4], [0xff; 4]);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[7; 32]);
        let next = Token::successor(&key, t.expose(), Some(1_800_000_005));
        assert_eq!(
            next,
            Token::successor(&key, t.expose(), Some(1_800_000_005))
        );
        assert_ne!(
            next,
            Token::successor(&key, t.expose(), Some(1_800_000_006))
        );
        assert_eq!(
            Token::parse(Kind::Refresh, next.expose()),
            Some(next.clone())
        );
        assert!(next.hash() > hash);
    }

    /// A refresh token of the form versions before issued (no time) is still read, under its
    /// SHA-256.
    #[test]
    fn refresh_tokens_without_their_time_are_read_as_before() {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[7; 32]);
        for t in [Token::refresh(None), Token::successor(&key, "tsr_x", None)] {
            assert_eq!(t.expose().len(), LEN);
            assert_eq!(Token::parse(Kind::Refresh, t.expose()), Some(t.clone()));
            assert_eq!(t.hash(), Token::hash_of(t.expose()));
        }
    }

    #[test]
    fn hash_hex_round_trips() {
        let h = Token::generate(Kind::Refresh).hash();
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }
}
