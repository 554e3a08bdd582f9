//! The OpenAPI 3.1 description of the HTTP API, served at [`PATH`].
//!
//! The document is kept beside the code, in `crates/tessera-server/openapi.json`, and may not
//! drift from it: a test holds its operations to the router's own table
//! ([`crate::operations`]) both ways, and schemathesis sends generated requests to the real
//! server with it (`crates/tessera/tests/it/openapi.rs`), failing on any 5xx, any status or body
//! the document does not describe, or a hang.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_core::Stores;

use crate::{AppState, ConfigError};

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

/// The document as written (no `servers`: each instance names its own issuer).
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The document as this instance serves it: `servers` is its issuer.
#[derive(Clone)]
pub struct Served(Bytes);

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Served({} bytes)", self.0.len())
    }
}

impl Served {
    /// The document with `servers` set to `issuer`.
    pub fn new(issuer: &str) -> Result<Served, ConfigError> {
        let mut doc: Value = serde_json::from_str(DOCUMENT)
            .map_err(|e| ConfigError(format!("the OpenAPI document is not JSON: {e}")))?;
        let Some(top) = doc.as_object_mut() else {
            return Err(ConfigError("the OpenAPI document is not an object".into()));
        };
        top.insert("servers".into(), json!([{ "url": issuer }]));
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| ConfigError(format!("the OpenAPI document: {e}")))?;
        Ok(Served(Bytes::from(bytes)))
    }
}

/// `GET /openapi.json`.
pub(crate) async fn document<S: Stores>(State(state): State<AppState<S>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        state.settings.openapi.0.clone(),
    )
        .into_response()
}
