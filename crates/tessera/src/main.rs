//! The `tessera` command line: the server (`serve`), accounts (`user`), and the token tools
//! (`decode`, `verify`, `keys generate`).

mod audit;
mod cmd;
mod config;
mod fetch;
mod logwrite;
use tessera_core::humantime;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a refused input (bad token, unreadable key set).
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Exit status for bad usage.
pub(crate) const EXIT_USAGE: u8 = 2;

/// tessera — an authentication and token service: session tokens and JSON Web Tokens.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (defaults: 127.0.0.1:8080, SQLite in ./tessera-data). Every setting can
    /// come from --config FILE or a TESSERA_… environment variable; see examples/tessera.toml.
    #[command(after_help = config::help())]
    Serve(cmd::serve::Args),
    /// Manage user accounts, on the same store as the server.
    #[command(subcommand)]
    User(cmd::user::Command),
    /// Manage OAuth 2.0 clients (services and applications), on the same store as the server.
    #[command(subcommand)]
    Client(cmd::client::Command),
    /// Show a token's header and claims, with times made readable. Checks nothing: the
    /// signature is not verified, so the output says nothing about who made the token.
    Decode(cmd::decode::Args),
    /// Verify a token's signature and claims against a JWK Set (file or URL) or an issuer's
    /// discovery document. Exit 0 when valid, 1 when refused (reason on stderr), 2 on bad usage.
    Verify(cmd::verify::Args),
    /// Signing keys: generate one for yourself, or list and rotate the service's.
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// Bring the database schema (SQLite or PostgreSQL) up to date, then exit. `serve` also
    /// migrates at start; run this first to migrate before rolling out new instances.
    Migrate(cmd::migrate::Args),
}

/// A command's failure: the exit status and one plain sentence for stderr.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn refused(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_REFUSED,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

/// Writes to stdout; a closed pipe (`tessera decode … | head`) is not an error worth a panic.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Structured log lines on stderr (`text` or `json`), filtered by `RUST_LOG` (default `info`),
/// written in batches by a thread of their own (`logwrite`).
pub(crate) fn logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // PostgreSQL's notices ("relation … already exists, skipping") are not news.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(logwrite::start());
    // The log level filters log lines only: the audit trail keeps every audit event.
    let registry = tracing_subscriber::registry().with(audit::AuditLayer);
    let _ = if format == "json" {
        registry.with(fmt.json().with_filter(filter)).try_init()
    } else {
        registry.with(fmt.with_filter(filter)).try_init()
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::User(c) => cmd::user::run(c),
        Command::Client(c) => cmd::client::run(c),
        Command::Decode(args) => cmd::decode::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Migrate(args) => cmd::migrate::run(args),
    };
    // The log lines before the outcome's message.
    logwrite::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "tessera: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
