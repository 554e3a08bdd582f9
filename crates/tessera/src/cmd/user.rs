//! `tessera user …`: accounts, on the same store as the server.

use std::io::{BufRead, IsTerminal};

use crate::config::Config;
use serde_json::json;
use tessera_core::{AccountError, Stores, UserStore as _};

use super::store::{AsyncStoreFn, ConfigArgs, service, with_stores};
use crate::{Failure, out};

/// Subcommands of `tessera user`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create a user. The password is asked on the terminal (not echoed), or read from the
    /// first line of stdin with --password-stdin.
    Add {
        /// The username (case-insensitive; letters, digits, . _ - @ +).
        name: String,
        /// Read the password from stdin instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// List users.
    List {
        /// One JSON array for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Disable a user: it can no longer log in, and all its sessions end at once.
    Disable {
        /// The username.
        name: String,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Enable a disabled user again.
    Enable {
        /// The username.
        name: String,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Delete a user and end all its sessions.
    Delete {
        /// The username.
        name: String,
        #[command(flatten)]
        common: ConfigArgs,
    },
}

fn read_password(from_stdin: bool) -> Result<String, Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::refused(format!("cannot read the password from stdin: {e}")))?;
        let pw = line.strip_suffix('\n').unwrap_or(&line);
        let pw = pw.strip_suffix('\r').unwrap_or(pw);
        return Ok(pw.to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "no terminal to ask for the password: use --password-stdin",
        ));
    }
    let first = rpassword::prompt_password("Password: ")
        .map_err(|e| Failure::refused(format!("cannot read the password: {e}")))?;
    let again = rpassword::prompt_password("Password (again): ")
        .map_err(|e| Failure::refused(format!("cannot read the password: {e}")))?;
    if first != again {
        return Err(Failure::refused("the passwords differ"));
    }
    Ok(first)
}

fn account_failure(e: AccountError) -> Failure {
    Failure::refused(e.to_string())
}

struct Run(Command, Option<String>);

impl AsyncStoreFn<()> for Run {
    async fn call<S: Stores + Clone>(
        self,
        config: &Config,
        store: S,
        _feed: Option<tessera_store::ChangeBus>,
    ) -> Result<(), Failure> {
        let service = service(config, store).await?;
        let auth = &service.auth;
        match self.0 {
            Command::Add { name, .. } => {
                let password = self.1.unwrap_or_default();
                let user = auth
                    .create_user(&name, &password)
                    .await
                    .map_err(account_failure)?;
                out(&format!("created user {} ({})\n", user.username, user.id));
            }
            Command::List { json, .. } => {
                let list = auth
                    .store()
                    .users()
                    .list_users()
                    .await
                    .map_err(|e| Failure::refused(format!("cannot read users: {e}")))?;
                if json {
                    let v: Vec<_> = list
                        .iter()
                        .map(|u| json!({"id": u.id, "username": u.username, "disabled": u.disabled, "created_at": u.created_at}))
                        .collect();
                    out(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&v).unwrap_or_default()
                    ));
                } else {
                    let mut text = String::new();
                    for u in &list {
                        let state = if u.disabled { "disabled" } else { "active" };
                        text.push_str(&format!("{}\t{}\t{state}\n", u.username, u.id));
                    }
                    out(&text);
                }
            }
            Command::Disable { name, .. } => {
                let u = auth
                    .set_disabled(&name, true)
                    .await
                    .map_err(account_failure)?;
                out(&format!(
                    "disabled user {}; its sessions have ended\n",
                    u.username
                ));
            }
            Command::Enable { name, .. } => {
                let u = auth
                    .set_disabled(&name, false)
                    .await
                    .map_err(account_failure)?;
                out(&format!("enabled user {}\n", u.username));
            }
            Command::Delete { name, .. } => {
                let u = auth.delete_user(&name).await.map_err(account_failure)?;
                out(&format!("deleted user {}\n", u.username));
            }
        }
        Ok(())
    }
}

pub(crate) fn run(command: Command) -> Result<(), Failure> {
    let common = match &command {
        Command::Add { common, .. }
        | Command::List { common, .. }
        | Command::Disable { common, .. }
        | Command::Enable { common, .. }
        | Command::Delete { common, .. } => common.clone(),
    };
    let config = common.load()?;
    crate::logging(&config.log_format);
    // The password is read before the runtime starts, so the prompt is the first thing seen.
    let password = match &command {
        Command::Add { password_stdin, .. } => Some(read_password(*password_stdin)?),
        _ => None,
    };
    let runtime = super::runtime()?;
    runtime.block_on(with_stores(&config, false, Run(command, password)))
}
