//! `tessera client …`: OAuth 2.0 clients, on the same store as the server.

use crate::config::Config;
use serde_json::{Value, json};
use tessera_core::logsafe::Untrusted;
use tessera_core::{Client, ClientStore as _, NewClient, StoreError, Stores};

use super::store::{AsyncStoreFn, ConfigArgs, with_stores};
use crate::{Failure, out};

/// Subcommands of `tessera client`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Register a client. A confidential client's secret is printed once, here, and kept only
    /// as a hash: store it now.
    Add {
        /// The client id (A-Z a-z 0-9 . _ : -, at most 64, not starting with usr_).
        id: String,
        /// A grant it may use: client_credentials, authorization_code or token-exchange
        /// (RFC 8693; a gateway trading a session for a JWT). Repeat for several.
        #[arg(long = "grant", value_name = "GRANT", required = true)]
        grants: Vec<String>,
        /// The scopes it may be given, space-separated ("api:read api:write").
        #[arg(long, value_name = "SCOPES", default_value = "")]
        scope: String,
        /// An audience its tokens may name (the first is the default; the `resource` or
        /// `audience` parameter picks another). Repeat for several. Default: the server's.
        #[arg(long = "audience", value_name = "AUD")]
        audience: Vec<String>,
        /// A redirect URI, matched exactly (authorization_code). Repeat for several.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where /signout may send a person back to when the application asks (OpenID
        /// Connect RP-Initiated Logout), matched exactly (authorization_code). Repeat for
        /// several.
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (a browser or mobile app): no secret; authorization_code with PKCE.
        #[arg(long)]
        public: bool,
        /// The name people know the application by, shown on the consent page.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The application's home page (https), linked from the consent page.
        #[arg(long, value_name = "URL")]
        homepage: Option<String>,
        /// The application's logo (https), shown on the consent page.
        #[arg(long = "logo-uri", value_name = "URL")]
        logo_uri: Option<String>,
        /// Print {"client_id", "client_secret", …} as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// List clients (never their secrets).
    List {
        /// One JSON array for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Remove a client: it can no longer get tokens, its refresh tokens stop working, and its
    /// access tokens are refused by this server's endpoints and introspection.
    Remove {
        /// The client id.
        id: String,
        #[command(flatten)]
        common: ConfigArgs,
    },
}

fn describe(c: &Client) -> Value {
    json!({
        "client_id": c.id,
        "public": c.is_public(),
        "grants": c.grants,
        "scope": c.scope,
        "audience": c.audience,
        "redirect_uris": c.redirect_uris,
        "post_logout_redirect_uris": c.post_logout_redirect_uris,
        "created_at": c.created_at,
        "name": c.name,
        "homepage": c.homepage,
        "logo_uri": c.logo_uri,
    })
}

fn store_failure(e: StoreError) -> Failure {
    Failure::refused(format!("cannot reach the store: {e}"))
}

struct Run(Command);

impl AsyncStoreFn<()> for Run {
    async fn call<S: Stores + Clone>(
        self,
        config: &Config,
        store: S,
        _feed: Option<tessera_store::ChangeBus>,
    ) -> Result<(), Failure> {
        match self.0 {
            Command::Add {
                id,
                grants,
                scope,
                audience,
                redirect_uris,
                post_logout_redirect_uris,
                public,
                name,
                homepage,
                logo_uri,
                json,
                ..
            } => {
                let now = tessera_jose::Clock::now(&tessera_jose::SystemClock);
                let (client, secret) = NewClient {
                    id,
                    grants,
                    scope,
                    audience,
                    redirect_uris,
                    post_logout_redirect_uris,
                    public,
                    name,
                    homepage,
                    logo_uri,
                }
                .build(&config.tokens.client_id, now)
                .map_err(|e| Failure::refused(e.0))?;
                match store.clients().create_client(&client).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => {
                        return Err(Failure::refused(format!(
                            "a client `{}` exists already",
                            client.id
                        )));
                    }
                    Err(e) => return Err(store_failure(e)),
                }
                tracing::info!(target: "audit", event = "client_added", client = %Untrusted(&client.id));
                if json {
                    let mut v = describe(&client);
                    if let Some(s) = &secret {
                        v["client_secret"] = json!(s.expose());
                    }
                    out(&format!("{}\n", super::pretty(&v)));
                } else {
                    let mut text = format!("created client {}\n", client.id);
                    if let Some(s) = &secret {
                        text.push_str(&format!(
                            "client_secret: {}\nThe secret is shown only now; store it safely.\n",
                            s.expose()
                        ));
                    }
                    out(&text);
                }
            }
            Command::List { json, .. } => {
                let list = store
                    .clients()
                    .list_clients()
                    .await
                    .map_err(store_failure)?;
                if json {
                    let v: Vec<Value> = list.iter().map(describe).collect();
                    out(&format!("{}\n", super::pretty(&Value::Array(v))));
                } else {
                    let mut text = String::new();
                    for c in &list {
                        let kind = if c.is_public() {
                            "public"
                        } else {
                            "confidential"
                        };
                        text.push_str(&format!(
                            "{}\t{kind}\t{}\t{}\n",
                            c.id,
                            c.grants.join(","),
                            c.scope
                        ));
                    }
                    out(&text);
                }
            }
            Command::Remove { id, .. } => {
                if !tessera_core::client::remove_client(&store, &id)
                    .await
                    .map_err(store_failure)?
                {
                    return Err(Failure::refused(format!("no client `{id}`")));
                }
                tracing::info!(target: "audit", event = "client_removed", client = %Untrusted(&id));
                out(&format!("removed client {id}\n"));
            }
        }
        Ok(())
    }
}

pub(crate) fn run(command: Command) -> Result<(), Failure> {
    let common = match &command {
        Command::Add { common, .. }
        | Command::List { common, .. }
        | Command::Remove { common, .. } => common.clone(),
    };
    let config = common.load()?;
    crate::logging(&config.log_format);
    let runtime = super::runtime()?;
    runtime.block_on(with_stores(&config, false, Run(command)))
}
