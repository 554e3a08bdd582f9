//! HTTPS served directly: rustls (on aws-lc-rs) in front of the same router, through the same
//! accept loop, limits and graceful shutdown as plain HTTP ([`crate::conn`]).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::ConfigError;
use crate::conn::Limits;

/// Loads the PEM certificate chain and private key into a rustls configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ConfigError(format!("cannot read tls_cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ConfigError(format!(
                "tls_cert {} is not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "tls_cert {} holds no certificate",
            cert.display()
        )));
    }
    // The error names the file, never the key's contents.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| {
        ConfigError(format!(
            "tls_key {} is not a readable PEM private key",
            key.display()
        ))
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError(format!(
                "tls_cert and tls_key do not form a usable pair: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` under `limits` until `shutdown`; requests in flight
/// finish.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<ServerConfig>,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::conn::run(
        listener,
        router,
        Some(TlsAcceptor::from(tls)),
        limits,
        shutdown,
    )
    .await
}
