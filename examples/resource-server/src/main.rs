//! A resource server protected by tessera-verify: it trusts tessera's published keys, checks
//! every access token itself (no database, no introspection call) and requires a scope per
//! route. Given a confidential client's credentials, it follows tessera's revocation feed, so a
//! token revoked at tessera (or whose session ended, or whose user was disabled) is refused here
//! within about a second, still without asking tessera per request.
//!
//!   TESSERA_ISSUER=https://auth.example.com AUDIENCE=https://orders.example.com \
//!   [TESSERA_CLIENT_ID=orders TESSERA_CLIENT_SECRET=tsc_…] \
//!   LISTEN=127.0.0.1:9000 cargo run -p resource-server
//!
//! `GET /whoami` needs any valid token; `GET /orders` needs the scope `orders:read`;
//! `GET /healthz` needs nothing.

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use tessera_verify::http::{Bearer, VerifyLayer};
use tessera_verify::{Audience, DiscoverError, FeedOptions, Options, Verifier};

/// The routes, over `verifier`.
fn app(verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/whoami", get(whoami))
        .route(
            "/orders",
            get(orders).layer(VerifyLayer::new(verifier.clone()).require_scopes(["orders:read"])),
        )
        .with_state(verifier)
}

async fn whoami(Bearer(token): Bearer) -> axum::Json<Value> {
    let c = token.claims;
    axum::Json(json!({"sub": c.sub, "client_id": c.client_id, "scope": c.scope}))
}

async fn orders(Bearer(token): Bearer) -> axum::Json<Value> {
    axum::Json(json!({"owner": token.claims.sub, "orders": []}))
}

/// A verifier for `issuer`'s tokens for `audience`, following its revocation feed as
/// `client` (id, secret) when given.
async fn verifier(
    issuer: &str,
    audience: Option<String>,
    client: Option<(String, String)>,
) -> Result<Verifier, DiscoverError> {
    // No AUDIENCE: discover refuses (DiscoverError::NoAudience) rather than accept any `aud`.
    let options = Options {
        audience: audience.map_or(Audience::Unset, Audience::Required),
        ..Options::default()
    };
    let verifier = Verifier::discover(issuer, options).await?;
    if let Some((id, secret)) = client {
        verifier
            .follow_revocations(FeedOptions::new(id, secret))
            .await?;
    }
    Ok(verifier)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(issuer) = env("TESSERA_ISSUER") else {
        eprintln!("resource-server: set TESSERA_ISSUER and AUDIENCE (and LISTEN)");
        std::process::exit(2)
    };
    let client = env("TESSERA_CLIENT_ID").zip(env("TESSERA_CLIENT_SECRET"));
    let follows = client.is_some();
    let verifier = match verifier(&issuer, env("AUDIENCE"), client).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("resource-server: {e}");
            std::process::exit(1)
        }
    };
    let listen = env("LISTEN").unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("resource-server: cannot listen on {listen}: {e}");
            std::process::exit(1)
        }
    };
    let feed = if follows {
        "following its revocation feed"
    } else {
        "without its revocation feed"
    };
    eprintln!("resource-server: serving on {listen}, trusting {issuer}, {feed}");
    if let Err(e) = axum::serve(listener, app(verifier)).await {
        eprintln!("resource-server: {e}");
        std::process::exit(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failure is a panic

    use std::sync::Arc;

    use super::*;

    /// A live tessera on port 0 with a user `alice` and a client `svc` (scope orders:read).
    async fn tessera() -> (String, String) {
        let mut config = tessera_server::Config::default();
        config.password.hash_concurrency = 2;
        let store = tessera_store::MemoryStore::new();
        let local = tessera_testkit::start(
            config,
            store.clone(),
            Arc::new(tessera_jose::SystemClock),
            tessera_core::MasterKey::from_bytes(&[9u8; 32]).unwrap(),
        )
        .await
        .unwrap();
        let (client, secret) = tessera_core::NewClient {
            id: "svc".into(),
            grants: vec!["client_credentials".into()],
            scope: "orders:read".into(),
            audience: vec!["urn:orders".into()],
            ..Default::default()
        }
        .build("tessera", 0)
        .unwrap();
        tessera_core::ClientStore::create_client(&store, &client)
            .await
            .unwrap();
        (local.url, secret.unwrap().expose().to_owned())
    }

    async fn client_token(issuer: &str, secret: &str) -> String {
        let token: Value = reqwest::Client::new()
            .post(format!("{issuer}/oauth2/token"))
            .basic_auth("svc", Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        token["access_token"].as_str().unwrap().to_owned()
    }

    async fn serve(verifier: Verifier) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rs = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app(verifier)).await });
        rs
    }

    #[tokio::test]
    async fn orders_need_a_valid_token_with_the_scope() {
        let (issuer, secret) = tessera().await;
        let access = client_token(&issuer, &secret).await;
        let verifier = verifier(&issuer, Some("urn:orders".into()), None)
            .await
            .unwrap();
        let rs = serve(verifier).await;
        let http = reqwest::Client::new();
        let res = http
            .get(format!("{rs}/orders"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["owner"], "svc");
        let res = http.get(format!("{rs}/orders")).send().await.unwrap();
        assert_eq!(res.status(), 401);
        let res = http
            .get(format!("{rs}/whoami"))
            .bearer_auth(format!("{access}x"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }

    #[tokio::test]
    async fn a_token_revoked_at_tessera_is_refused_within_a_second() {
        let (issuer, secret) = tessera().await;
        let access = client_token(&issuer, &secret).await;
        let client = Some(("svc".to_owned(), secret.clone()));
        let verifier = verifier(&issuer, Some("urn:orders".into()), client)
            .await
            .unwrap();
        let rs = serve(verifier).await;
        let http = reqwest::Client::new();
        let orders = || http.get(format!("{rs}/orders")).bearer_auth(&access).send();
        assert_eq!(orders().await.unwrap().status(), 200);
        let res = http
            .post(format!("{issuer}/oauth2/revoke"))
            .basic_auth("svc", Some(&secret))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let start = std::time::Instant::now();
        loop {
            let res = orders().await.unwrap();
            if res.status() == 401 {
                let challenge = res.headers()["www-authenticate"].to_str().unwrap();
                assert!(challenge.contains("invalid_token"), "{challenge}");
                break;
            }
            assert!(start.elapsed().as_millis() < 1000, "still accepted");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
