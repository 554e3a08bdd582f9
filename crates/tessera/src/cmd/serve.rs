//! `tessera serve`: the HTTP service.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use tessera_core::Stores;

use tessera_store::ChangeBus;

use super::store::{AsyncStoreFn, ConfigArgs, redact, state, with_stores};
use crate::Failure;

/// How often a server catches up with the revocations in its store (see
/// `tessera_core::Tasks::denylist`): the bound on how long a revocation made elsewhere
/// can go unseen here when the change feed did not bring it.
const DENYLIST_SYNC: Duration = Duration::from_millis(500);

/// Arguments of `tessera serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: ConfigArgs,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The public URL of this service (default: http://LISTEN).
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let mut config = args.common.load()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(issuer) = args.issuer {
        config.issuer = Some(issuer);
    }
    crate::logging(&config.log_format);
    config
        .check_transport()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let runtime = super::runtime()?;
    runtime.block_on(with_stores(&config, true, Serve))
}

struct Serve;

impl AsyncStoreFn<()> for Serve {
    async fn call<S: Stores + Clone>(
        self,
        config: &Config,
        store: S,
        feed: Option<ChangeBus>,
    ) -> Result<(), Failure> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                tessera_server::tls::server_config(cert, key)
                    .map_err(|e| Failure::usage(e.to_string()))?,
            ),
            _ => None,
        };
        let state = state(config, store).await?;
        state.spawn_tasks(tessera_core::Tasks {
            keys: Duration::from_secs(2),
            denylist: DENYLIST_SYNC,
            purge: Duration::from_secs(60),
        });
        if let Some(bus) = feed {
            tessera_server::spawn_change_listener(&state, bus.subscribe());
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Failure::refused(format!("cannot listen on {}: {e}", config.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::refused(format!("cannot read the listening address: {e}")))?;
        let limits = tessera_server::conn::Limits::from_config(&config.connections);
        tracing::info!(listen = %local, issuer = %config.issuer(), database = %redact(&config.database_url()), max_connections = limits.max, "tessera is serving");
        let grace = config.shutdown_grace.0;
        let router = tessera_server::router(state, config);
        // On SIGTERM the listener closes and requests in flight get `grace` to finish.
        let (stopping, mut stopped) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        };
        let deadline = async move {
            let _ = stopped.changed().await;
            tokio::time::sleep(grace).await;
        };
        let server = async move {
            match tls {
                Some(tls) => {
                    tessera_server::tls::serve_tls(listener, router, tls, &limits, signal).await
                }
                None => tessera_server::serve_with(listener, router, &limits, signal).await,
            }
        };
        tokio::select! {
            r = server => {
                r.map_err(|e| Failure::refused(format!("the server failed: {e}")))?;
            }
            () = deadline => {
                tracing::warn!(grace_secs = grace.as_secs(), "requests still in flight after the grace period were cut off");
            }
        }
        tracing::info!("tessera stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
