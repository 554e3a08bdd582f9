//! `tessera verify`: signature and claims against a JWK Set (file or URL) or an issuer's
//! discovery document. Exit 0 valid, 1 refused, 2 bad usage.

use std::time::Duration;

use serde_json::{Value, json};
use tessera_jose::{Jwk, JwkSet, KeySet, Validation, Verifier, VerifyingKey};

use crate::fetch;
use crate::{Failure, out};

/// Arguments of `tessera verify`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("keys").required(true).args(["jwks", "issuer"])))]
pub(crate) struct Args {
    /// The token, or `-` to read it from stdin.
    token: String,
    /// The keys: a JWK Set (or one JWK) in a file, or an https:// URL serving a JWK Set.
    #[arg(long, value_name = "URL|FILE")]
    jwks: Option<String>,
    /// The issuer's URL: its discovery document names the JWK Set, and `iss` must equal it.
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// The `iss` the token must carry (default: the --issuer URL, if given).
    #[arg(long, value_name = "ISS")]
    iss: Option<String>,
    /// An audience the token's `aud` must name; repeat to accept any of several.
    #[arg(long, value_name = "AUD")]
    aud: Vec<String>,
    /// The header `typ` the token must carry.
    #[arg(
        long,
        value_name = "TYP",
        default_value = "at+jwt",
        conflicts_with = "any_typ"
    )]
    typ: String,
    /// Accept any header `typ` (or none).
    #[arg(long)]
    any_typ: bool,
    /// Seconds of clock skew tolerated on exp, nbf and iat.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(i64).range(0..=86_400))]
    leeway: i64,
    /// Seconds allowed for fetching keys over HTTP.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout: u64,
    /// Print one JSON object (valid, header, claims) for scripts.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let token = super::token_arg(&args.token)?;
    let timeout = Duration::from_secs(args.timeout);
    let (keys, discovered_issuer) = match (&args.jwks, &args.issuer) {
        (Some(source), _) => (load_keys(source, timeout)?, None),
        (None, Some(issuer)) => {
            let (keys, iss) = discover(issuer, timeout)?;
            (keys, Some(iss))
        }
        (None, None) => return Err(Failure::usage("give --jwks or --issuer")),
    };
    let validation = Validation {
        leeway: args.leeway,
        issuer: args.iss.clone().or(discovered_issuer),
        audiences: args.aud.clone(),
        typ: (!args.any_typ).then(|| args.typ.clone()),
        ..Validation::default()
    };
    let verified = Verifier::new(keys, validation)
        .verify(&token)
        .map_err(|e| Failure::refused(format!("invalid: {e}")))?;
    let header = serde_json::to_value(&verified.header).unwrap_or_default();
    let claims = serde_json::to_value(&verified.claims).unwrap_or_default();
    if args.json {
        out(&format!(
            "{}\n",
            super::pretty(&json!({"valid": true, "header": header, "claims": claims}))
        ));
    } else {
        out(&format!(
            "valid: signed by key {} ({})\n{}\n",
            verified.header.kid.as_deref().unwrap_or("(no kid)"),
            verified.header.alg,
            super::pretty(&claims)
        ));
    }
    Ok(())
}

fn load_keys(source: &str, timeout: Duration) -> Result<KeySet, Failure> {
    let (bytes, remote) = if fetch::is_url(source) {
        (fetch::url(source, timeout)?, true)
    } else {
        (fetch::file(source)?, false)
    };
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|_| Failure::refused(format!("{source} is not JSON")))?;
    let refused =
        |e: tessera_jose::Error| Failure::refused(format!("unusable keys in {source}: {e}"));
    if doc.get("keys").is_some() {
        let set: JwkSet = serde_json::from_value(doc)
            .map_err(|_| Failure::refused(format!("{source} is not a JWK Set")))?;
        let keys = KeySet::from_jwks(&set).map_err(refused)?;
        if keys.keys().is_empty() {
            return Err(Failure::refused(format!(
                "{source} holds no usable signing key"
            )));
        }
        Ok(keys)
    } else {
        let jwk: Jwk = serde_json::from_value(doc)
            .map_err(|_| Failure::refused(format!("{source} is neither a JWK nor a JWK Set")))?;
        // A single secret (HMAC) key may come from a local file, never from the network.
        let key = if remote {
            VerifyingKey::from_public_jwk(&jwk)
        } else {
            VerifyingKey::from_jwk(&jwk, None)
        }
        .map_err(refused)?;
        KeySet::new(vec![key]).map_err(refused)
    }
}

/// Reads the issuer's discovery document (OpenID, then RFC 8414) and its JWK Set.
fn discover(issuer: &str, timeout: Duration) -> Result<(KeySet, String), Failure> {
    if !fetch::is_url(issuer) {
        return Err(Failure::usage("--issuer must be an https:// URL"));
    }
    let base = issuer.trim_end_matches('/');
    let mut last = None;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let url = format!("{base}{path}");
        match fetch::url(&url, timeout) {
            Ok(bytes) => {
                let doc: Value = serde_json::from_slice(&bytes)
                    .map_err(|_| Failure::refused(format!("{url} is not JSON")))?;
                // RFC 8414 §3.3: the document's issuer must be the one asked for.
                if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
                    return Err(Failure::refused(format!(
                        "{url} names another issuer than {issuer}"
                    )));
                }
                let jwks_uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Failure::refused(format!("{url} has no jwks_uri")))?;
                // A document from the network names a URL, never a file on this machine.
                if !fetch::is_url(jwks_uri) {
                    return Err(Failure::refused(format!("{url} names no jwks_uri URL")));
                }
                return Ok((load_keys(jwks_uri, timeout)?, issuer.to_owned()));
            }
            Err(f) if f.code == crate::EXIT_USAGE => return Err(f),
            Err(f) => last = Some(f),
        }
    }
    Err(last.unwrap_or_else(|| Failure::refused("discovery failed")))
}
