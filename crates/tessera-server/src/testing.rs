//! A tessera in the process, on a free loopback port: what the server's own tests, the
//! verifier's tests and the examples start (the binary's tests start the real `tessera serve`).

use std::sync::Arc;

use tessera_core::{MasterKey, Stores};
use tessera_jose::Clock;

use crate::{AppState, Config, ConfigError};

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
    let state = crate::build(&config, store, clock, master).await?;
    let router = crate::router(state.clone(), &config);
    tokio::spawn(crate::serve(listener, router, std::future::pending()));
    Ok(Local {
        url: format!("http://{addr}"),
        state,
    })
}
