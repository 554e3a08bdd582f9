//! OAuth 2.0 clients (RFC 6749 §2), the authorization codes issued to them (with their PKCE
//! challenge, RFC 7636) and the consents people gave them. Client secrets and codes are opaque
//! tokens kept only as their SHA-256.

use serde::{Deserialize, Serialize};

use crate::token::TokenHash;

/// `grant_type` of the client credentials grant.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// `grant_type` of the authorization code grant.
pub const AUTHORIZATION_CODE: &str = "authorization_code";
/// `grant_type` of token exchange (RFC 8693).
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Hex SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<String>,
    /// The grants it may use ([`CLIENT_CREDENTIALS`], [`AUTHORIZATION_CODE`], [`TOKEN_EXCHANGE`]).
    pub grants: Vec<String>,
    /// The scopes it may be given, space-separated.
    pub scope: String,
    /// The audiences its tokens may name; the first is the default. Empty: the server's own.
    pub audience: Vec<String>,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// What people know the application as (the consent page says it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The application's home page (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// Its logo (https), shown on the consent page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// Where `/signout` may send a person back to when the application asks (OpenID Connect
    /// RP-Initiated Logout's `post_logout_redirect_uri`), matched exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
}

impl Client {
    /// Whether it authenticates with no secret (a public client, PKCE only).
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    /// Whether it may use `grant`.
    pub fn allows(&self, grant: &str) -> bool {
        self.grants.iter().any(|g| g == grant)
    }

    /// Whether `secret` is its secret; in constant time.
    pub fn secret_matches(&self, secret: &str) -> bool {
        let Some(stored) = self.secret_hash.as_deref().and_then(TokenHash::from_hex) else {
            return false;
        };
        let presented = crate::Token::hash_of(secret);
        aws_lc_rs::constant_time::verify_slices_are_equal(&stored.0, &presented.0).is_ok()
    }

    /// The scope to grant for `requested` (`None`: all the client may have): a subset of the
    /// client's scope, or `None` if it asks for more.
    pub fn grant_scope(&self, requested: Option<&str>) -> Option<String> {
        match requested {
            None => Some(self.scope.clone()),
            Some(r) => subset(r, &self.scope).then(|| normalize_scope(r)),
        }
    }
}

/// What `tessera client add` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    /// `client_id`.
    pub id: String,
    /// Grants, by their `grant_type` names ([`TOKEN_EXCHANGE`] may be given as `token-exchange`).
    pub grants: Vec<String>,
    /// Space-separated scopes it may be given.
    pub scope: String,
    /// Audiences its tokens may name (the first is the default).
    pub audience: Vec<String>,
    /// Redirect URIs (authorization code).
    pub redirect_uris: Vec<String>,
    /// A public client: no secret, authorization code with PKCE only.
    pub public: bool,
    /// The name people know it by.
    pub name: Option<String>,
    /// Its home page.
    pub homepage: Option<String>,
    /// Its logo.
    pub logo_uri: Option<String>,
    /// Addresses `/signout` may send a person back to (authorization code).
    pub post_logout_redirect_uris: Vec<String>,
}

/// Why a client cannot be registered as asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

impl NewClient {
    /// Checks the request and makes the client, with its secret unless it is public. The
    /// secret is a `tsc_` token of 256 random bits: its SHA-256 is all that is kept (a slow
    /// password hash would add nothing to a secret this long, and would cap token issuance).
    pub fn build(
        self,
        first_party: &str,
        now: i64,
    ) -> Result<(Client, Option<crate::Token>), ClientError> {
        let bad = |m: &str| Err(ClientError(m.to_owned()));
        if !valid_client_id(&self.id) {
            return bad(
                "a client id is 1 to 64 of A-Z a-z 0-9 . _ : - and does not start with usr_",
            );
        }
        if self.id == first_party {
            return bad("that id is the built-in first-party client's (tokens.client_id)");
        }
        let mut grants = Vec::new();
        for g in &self.grants {
            let g = match g.as_str() {
                CLIENT_CREDENTIALS | AUTHORIZATION_CODE | TOKEN_EXCHANGE => g.clone(),
                "token-exchange" | "token_exchange" => TOKEN_EXCHANGE.to_owned(),
                "password" => return bad("the password grant is not offered (RFC 9700 §2.4)"),
                _ => {
                    return Err(ClientError(format!(
                        "unknown grant `{g}` (client_credentials, authorization_code, token-exchange)"
                    )));
                }
            };
            if !grants.contains(&g) {
                grants.push(g);
            }
        }
        if grants.is_empty() {
            return bad("name at least one grant with --grant");
        }
        let scope = normalize_scope(&self.scope);
        if !scope.is_empty() && !valid_scope(&scope) {
            return bad("a scope is space-separated tokens of printable ASCII without \\ or \"");
        }
        let code = grants.iter().any(|g| g == AUTHORIZATION_CODE);
        if self.public && grants.iter().any(|g| g != AUTHORIZATION_CODE) {
            return bad(
                "a public client has no secret, so it may only use authorization_code (with PKCE)",
            );
        }
        if code && self.redirect_uris.is_empty() {
            return bad("authorization_code needs at least one --redirect-uri");
        }
        if !code && !self.redirect_uris.is_empty() {
            return bad("--redirect-uri is for authorization_code clients");
        }
        if !code && !self.post_logout_redirect_uris.is_empty() {
            return bad("--post-logout-redirect-uri is for authorization_code clients");
        }
        for uri in self
            .redirect_uris
            .iter()
            .chain(&self.post_logout_redirect_uris)
        {
            if let Some(why) = redirect_uri_problem(uri) {
                return Err(ClientError(format!("{why}: {uri}")));
            }
        }
        for aud in &self.audience {
            if aud.is_empty() || aud.contains(' ') || aud.chars().any(char::is_control) {
                return bad("an audience is a non-empty string without spaces");
            }
        }
        if let Some(name) = &self.name
            && (name.trim().is_empty()
                || name.chars().count() > 80
                || name.chars().any(char::is_control))
        {
            return bad("a name is 1 to 80 characters, none of them a control character");
        }
        for (what, url) in [
            ("--homepage", &self.homepage),
            ("--logo-uri", &self.logo_uri),
        ] {
            if let Some(url) = url
                && crate::weburl::parse_transport(url).is_err()
            {
                return Err(ClientError(format!(
                    "{what} is an https URL (or http to a loopback host): {url}"
                )));
            }
        }
        let secret = (!self.public).then(|| crate::Token::generate(crate::Kind::ClientSecret));
        let client = Client {
            name: self.name.map(|n| n.trim().to_owned()),
            homepage: self.homepage,
            logo_uri: self.logo_uri,
            id: self.id,
            secret_hash: secret.as_ref().map(|s| s.hash().to_hex()),
            grants,
            scope,
            audience: self.audience,
            redirect_uris: self.redirect_uris,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
            created_at: now,
        };
        Ok((client, secret))
    }
}

/// An authorization code as the store keeps it (under the hash of its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// The client it was issued to.
    pub client_id: String,
    /// The person who consented.
    pub user_id: String,
    /// The `redirect_uri` of the authorization request (the token request must repeat it).
    pub redirect_uri: String,
    /// The scope granted.
    pub scope: String,
    /// PKCE S256 `code_challenge`.
    pub code_challenge: String,
    /// The session it was issued under (`sid` of the access tokens).
    pub sid: Option<String>,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Unused past this, it is dead.
    pub expires_at: i64,
    /// The refresh family its exchange creates (revoked if the code is used twice).
    pub family: String,
    /// The `jti` of the access token its exchange issues (denylisted if used twice).
    pub access_jti: String,
}

/// A person's standing permission for a client to have a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The client.
    pub client_id: String,
    /// The scope consented to, space-separated.
    pub scope: String,
    /// Seconds since the epoch.
    pub granted_at: i64,
}

/// Whether every scope token of `requested` is in `allowed`.
pub fn subset(requested: &str, allowed: &str) -> bool {
    requested
        .split(' ')
        .filter(|s| !s.is_empty())
        .all(|r| allowed.split(' ').any(|a| a == r))
}

/// Scope tokens sorted, deduplicated, single-spaced.
pub fn normalize_scope(scope: &str) -> String {
    let mut parts: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    parts.sort_unstable();
    parts.dedup();
    parts.join(" ")
}

/// Whether `scope` is a valid RFC 6749 §3.3 scope: tokens of `%x21 / %x23-5B / %x5D-7E`
/// separated by single spaces.
pub fn valid_scope(scope: &str) -> bool {
    scope.split(' ').all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    })
}

/// Whether `id` may name a client: 1 to 64 of `A-Z a-z 0-9 . _ : -`, and never in the user-id
/// namespace (`usr_`), so a client's `sub` cannot collide with a person's.
pub fn valid_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with("usr_")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub use crate::weburl::redirect_uri_problem;

/// Whether `verifier` (RFC 7636 §4.1: 43–128 of `A-Z a-z 0-9 - . _ ~`) hashes to `challenge`
/// under S256; the comparison is in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let ok_len = (43..=128).contains(&verifier.len());
    let ok_chars = verifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !ok_len || !ok_chars {
        return false;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let computed = tessera_jose::b64::encode(digest.as_ref());
    aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes())
        .is_ok()
}

/// Whether `challenge` looks like an S256 challenge: 43 base64url characters.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Removes client `id` and the consents given to it, and announces it to the other instances
/// (which may have it cached); whether there was one.
pub async fn remove_client<S: crate::Stores>(store: &S, id: &str) -> crate::StoreResult<bool> {
    use crate::ClientStore as _;
    let removed = store.clients().delete_client(id).await?;
    store
        .announce(vec![crate::Change::Client(id.to_owned())])
        .await;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example() {
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"
        ));
    }

    #[test]
    fn scopes() {
        assert!(subset("a b", "b c a"));
        assert!(subset("", "a"));
        assert!(!subset("a d", "a b"));
        assert_eq!(normalize_scope("b  a b"), "a b");
        assert!(valid_scope("api:read api:write"));
        assert!(!valid_scope("a  b"));
        assert!(!valid_scope("a\"b"));
        assert!(!valid_scope(""));
    }

    #[test]
    fn ids_and_redirects() {
        assert!(valid_client_id("svc.billing-1"));
        assert!(!valid_client_id("usr_abc"));
        assert!(!valid_client_id("a b"));
        assert!(!valid_client_id(""));
        assert_eq!(redirect_uri_problem("https://app.example/cb"), None);
        assert_eq!(redirect_uri_problem("http://127.0.0.1:8080/cb"), None);
        assert_eq!(redirect_uri_problem("http://localhost/cb"), None);
        assert!(redirect_uri_problem("http://app.example/cb").is_some());
        assert!(redirect_uri_problem("https://app.example/cb#x").is_some());
        assert!(redirect_uri_problem("/cb").is_some());
        assert!(redirect_uri_problem("https:///cb").is_some());
        assert!(redirect_uri_problem("javascript:alert(1)").is_some());
    }
}
