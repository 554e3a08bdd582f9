//! What tessera's tests share (an unpublished crate): [`start`], a tessera in the process on a
//! free loopback port, which the server's tests, the verifier's tests and the resource-server
//! example start (the binary's tests start the real `tessera serve`); and [`Relay`], a TCP relay
//! a test cuts and black-holes between a client and what it talks to.

// Test support: a failure here is a test's failure, and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod relay;

use std::sync::Arc;

use tessera_core::{MasterKey, Stores};
use tessera_jose::Clock;
use tessera_server::config::ConfigError;
use tessera_server::{AppState, Config};

pub use relay::Relay;

/// A running in-process server: its URL and its state (the service, to arrange what a test
/// needs directly).
#[derive(Debug)]
pub struct Local<S> {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's state.
    pub state: AppState<S>,
}

/// Starts `config` (its `listen` replaced by a free loopback port) over `store` with `clock`,
/// keys sealed under `master`; serves until the runtime ends.
pub async fn start<S: Stores + Clone>(
    mut config: Config,
    store: S,
    clock: Arc<dyn Clock>,
    master: MasterKey,
) -> Result<Local<S>, ConfigError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| ConfigError(format!("cannot listen on a loopback port: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConfigError(format!("cannot read the listening address: {e}")))?;
    config.listen = addr;
    let state = tessera_server::build(&config, store, clock, master).await?;
    let router = tessera_server::router(state.clone(), &config);
    tokio::spawn(tessera_server::serve(
        listener,
        router,
        std::future::pending(),
    ));
    Ok(Local {
        url: format!("http://{addr}"),
        state,
    })
}
