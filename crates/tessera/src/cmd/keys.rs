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
    /// List the service's signing keys and their state (next, active, retiring, expired).
    List {
        /// One JSON array for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: super::store::ConfigArgs,
    },
    /// Add a new signing key: published in the JWKS at once, signing only after
    /// tokens.key_activation_delay, so that caches learn it first.
    Rotate {
        /// Algorithm of the new key (default: tokens.algorithm).
        #[arg(long, value_parser = parse_alg)]
        alg: Option<Algorithm>,
        #[command(flatten)]
        common: super::store::ConfigArgs,
    },
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
        Command::List { json, common } => managed(&common, Managed::List { json }),
        Command::Rotate { alg, common } => managed(&common, Managed::Rotate { alg }),
    }
}

enum Managed {
    List { json: bool },
    Rotate { alg: Option<Algorithm> },
}

fn managed(common: &super::store::ConfigArgs, what: Managed) -> Result<(), Failure> {
    let config = common.load()?;
    crate::logging(&config.log_format);
    super::runtime()?.block_on(super::store::with_stores(&config, false, what))
}

impl super::store::AsyncStoreFn<()> for Managed {
    async fn call<S: tessera_core::Stores + Clone>(
        self,
        config: &crate::config::Config,
        store: S,
        _feed: Option<tessera_store::ChangeBus>,
    ) -> Result<(), Failure> {
        use tessera_jose::Clock as _;
        let now = tessera_jose::SystemClock.now();
        let default_alg = Algorithm::from_name(&config.tokens.algorithm).ok_or_else(|| {
            Failure::usage("tokens.algorithm is EdDSA, ES256, RS256, PS256 or HS256")
        })?;
        let retain = config.tokens.access_ttl.secs() + tessera_server::LEEWAY;
        let master = super::store::master_key(config)?;
        let vault = super::store::vault(config)?;
        let keys = tessera_core::KeyManager::start(store, master, vault, default_alg, now, retain)
            .await
            .map_err(|e| Failure::refused(e.to_string()))?;
        let fail = |e: tessera_core::KeyError| Failure::refused(e.to_string());
        match self {
            Managed::List { json } => {
                let states = keys.states(now).await.map_err(fail)?;
                if json {
                    out(&format!(
                        "{}\n",
                        super::pretty(&serde_json::to_value(&states).unwrap_or_default())
                    ));
                } else {
                    let mut text = String::new();
                    for k in &states {
                        let state = serde_json::to_value(k.state).unwrap_or_default();
                        text.push_str(&format!(
                            "{}\t{}\t{}\t{}\tsigns from {}\n",
                            k.kid,
                            k.alg,
                            k.backend,
                            state.as_str().unwrap_or(""),
                            crate::humantime::utc(k.activates_at)
                        ));
                    }
                    out(&text);
                }
            }
            Managed::Rotate { alg } => {
                let alg = alg.unwrap_or(default_alg);
                let delay = config.tokens.key_activation_delay.secs();
                let key = keys.rotate(alg, now, delay).await.map_err(fail)?;
                out(&format!(
                    "new {} key {}: published now, signs from {}\n",
                    key.alg,
                    key.kid,
                    crate::humantime::utc(key.activates_at)
                ));
            }
        }
        Ok(())
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
