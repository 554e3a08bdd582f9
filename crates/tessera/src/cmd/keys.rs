//! `tessera keys …`: key material for tessera and for anyone who verifies its tokens.

use serde_json::json;
use tessera_jose::{Algorithm, SigningKey};

use crate::{Failure, out};

/// Subcommands of `tessera keys`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Generate a signing key: prints the private JWK (keep it secret) and the public JWK (publish
    /// it). HMAC algorithms have no public key: their secret is both.
    Generate(GenerateArgs),
}

/// Arguments of `tessera keys generate`.
#[derive(Debug, clap::Args)]
pub(crate) struct GenerateArgs {
    /// Algorithm: EdDSA, ES256, RS256, PS256, HS256, HS384 or HS512 (exactly as written).
    #[arg(long, value_parser = parse_alg)]
    alg: Algorithm,
    /// Key id; by default the RFC 7638 thumbprint of the public key.
    #[arg(long)]
    kid: Option<String>,
    /// Print one JSON object `{"private": …, "public": …}`.
    #[arg(long)]
    json: bool,
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        format!("unknown algorithm (one of: {})", names.join(", "))
    })
}

pub(crate) fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Generate(args) => generate(args),
    }
}

fn generate(args: GenerateArgs) -> Result<(), Failure> {
    if args.kid.as_deref().is_some_and(str::is_empty) {
        return Err(Failure::usage("--kid must not be empty"));
    }
    let key = SigningKey::generate(args.alg, args.kid.as_deref())
        .map_err(|e| Failure::refused(format!("cannot generate the key: {e}")))?;
    let private = key
        .to_jwk()
        .map_err(|e| Failure::refused(format!("cannot export the key: {e}")))?;
    let verifying = key
        .verifying_key()
        .map_err(|e| Failure::refused(format!("cannot export the key: {e}")))?;
    let public = verifying.public_jwk();
    let private = serde_json::to_value(&private).unwrap_or_default();
    let public = serde_json::to_value(public).unwrap_or_default();
    if args.json {
        out(&format!(
            "{}\n",
            super::pretty(&json!({"private": private, "public": public}))
        ));
    } else {
        let mut text = format!(
            "Private JWK (keep it secret):\n{}\n",
            super::pretty(&private)
        );
        if public.is_null() {
            text.push_str("No public JWK: an HMAC secret is shared, never published.\n");
        } else {
            text.push_str(&format!(
                "Public JWK (publish it in a JWK Set):\n{}\n",
                super::pretty(&public)
            ));
        }
        out(&text);
    }
    Ok(())
}
