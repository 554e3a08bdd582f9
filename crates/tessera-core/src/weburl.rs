//! The one rule for URLs that somebody else chose (a client's redirect URI, an issuer, a key-set
//! URL): parsed by a real parser (the `url` crate, the WHATWG URL standard that browsers follow),
//! never judged by string prefixes, so that `http://localhost:80@evil.example/cb` is seen for
//! what it is: user `localhost`, password `80`, host `evil.example`.
//!
//! tessera-verify keeps a small copy of [`transport_problem`] (it depends on tessera-jose only).

use std::net::IpAddr;

pub use url::Url;

/// Whether `url`'s host is a loopback host: `localhost` or a loopback IP address, judged on the
/// parsed host (never on the text before a `:` or `@`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Why `url` may not be used to reach a server, or `None`: it must be `https`, or plain `http`
/// to a loopback host (RFC 8252 §7.3), and carry no user information (`user:pass@`), which
/// only serves to make a URL look like it goes elsewhere than it does.
pub fn transport_problem(url: &Url) -> Option<&'static str> {
    if !url.username().is_empty() || url.password().is_some() {
        return Some("a URL with user information (user@ or user:pass@) is refused");
    }
    match url.scheme() {
        "https" if url.host().is_some() => None,
        "http" if is_loopback(url) => None,
        "http" => Some("plain http is allowed for loopback hosts only"),
        _ => Some("the URL must be an absolute https:// URL"),
    }
}

/// Parses `text` and applies [`transport_problem`].
pub fn parse_transport(text: &str) -> Result<Url, &'static str> {
    let url = Url::parse(text).map_err(|_| "not an absolute URL")?;
    match transport_problem(&url) {
        Some(why) => Err(why),
        None => Ok(url),
    }
}

/// Why a redirect URI is refused at registration (and before any redirect to it), or `None`:
/// an absolute `https` URI, or `http` to a loopback host (RFC 8252 §7.3); no user information;
/// no fragment (RFC 6749 §3.1.2); no spaces, quotes or control characters; and written exactly
/// as the parser writes it back, so that the string compared at authorization (exactly, RFC 6749
/// §3.1.2.3) is the URL a browser goes to and no two parsers can read it differently.
pub fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    // Checked on the raw text: the parser silently drops tabs and newlines and trims spaces.
    if uri
        .bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'"' || b == b'<' || b == b'>' || b == b'\\')
    {
        return Some("a redirect URI has no spaces, quotes, backslashes or control characters");
    }
    let Ok(url) = Url::parse(uri) else {
        return Some("a redirect URI is an absolute https:// URI");
    };
    if let Some(why) = transport_problem(&url) {
        return Some(why);
    }
    if url.fragment().is_some() {
        return Some("a redirect URI has no fragment");
    }
    if url.as_str() != uri {
        return Some(
            "a redirect URI is written in its normal form (lowercase scheme and host, no default port, a path)",
        );
    }
    None
}

/// The origin (`scheme://host[:port]`) of an absolute URL, for a content security policy; `None`
/// if it has none.
pub fn origin(uri: &str) -> Option<String> {
    let url = Url::parse(uri).ok()?;
    match url.origin() {
        url::Origin::Tuple(..) => Some(url.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example/cb",
            "https://app.example/cb?x=1",
            "http://127.0.0.1:8080/cb",
            "http://localhost/cb",
            "http://[::1]:9/cb",
            "http://127.5.6.7/cb",
        ] {
            assert_eq!(redirect_uri_problem(ok), None, "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "http://localhost:80@evil.example/cb",
            "http://localhost@evil.example/cb",
            "https://user:pass@app.example/cb",
            "https://app.example/cb#x",
            "https://app.example/cb#",
            "/cb",
            "https:///cb",
            "javascript:alert(1)",
            "https://app.example/c b",
            "https://app.example/c\tb",
            "https://APP.example/cb",
            "http://localhost:80/cb",
            "https://app.example",
            "http://localhost.evil.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "http://0x7f.evil.example/cb",
        ] {
            assert!(redirect_uri_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn transport() {
        assert!(parse_transport("https://auth.example").is_ok());
        assert!(parse_transport("http://127.0.0.1:1/x").is_ok());
        assert!(parse_transport("http://localhost:80@evil.example/").is_err());
        assert!(parse_transport("https://a:b@auth.example").is_err());
        assert!(parse_transport("http://evil.example").is_err());
        assert!(parse_transport("ftp://localhost/").is_err());
        assert_eq!(
            origin("https://a.example:8443/x?y").as_deref(),
            Some("https://a.example:8443")
        );
    }
}
