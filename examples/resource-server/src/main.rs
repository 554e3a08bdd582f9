//! A resource server protected by tessera-verify: it trusts tessera's published keys, checks
//! every access token itself (no database, no introspection call) and requires a scope per
//! route.
//!
//!   TESSERA_ISSUER=https://auth.example.com AUDIENCE=https://orders.example.com \
//!   LISTEN=127.0.0.1:9000 cargo run -p resource-server
//!
//! `GET /whoami` needs any valid token; `GET /orders` needs the scope `orders:read`.

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use tessera_verify::http::{Bearer, VerifyLayer};
use tessera_verify::{Options, Verifier};

/// The routes, over `verifier`.
fn app(verifier: Verifier) -> Router {
    Router::new()
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

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(issuer) = env("TESSERA_ISSUER") else {
        eprintln!("resource-server: set TESSERA_ISSUER (and AUDIENCE, LISTEN)");
        std::process::exit(2)
    };
    let options = Options {
        audience: env("AUDIENCE"),
        ..Options::default()
    };
    let verifier = match Verifier::discover(&issuer, options).await {
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
    eprintln!("resource-server: serving on {listen}, trusting {issuer}");
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = tessera_server::Config {
            listen: listener.local_addr().unwrap(),
            ..Default::default()
        };
        config.password.hash_concurrency = 2;
        let store = tessera_store::MemoryStore::new();
        let state = tessera_server::build(
            &config,
            store.clone(),
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
            ..Default::default()
        }
        .build("tessera", 0)
        .unwrap();
        tessera_core::ClientStore::create_client(&store, &client)
            .await
            .unwrap();
        let router = tessera_server::router(state, &config);
        tokio::spawn(tessera_server::serve(
            listener,
            router,
            std::future::pending(),
        ));
        (
            format!("http://{}", config.listen),
            secret.unwrap().expose().to_owned(),
        )
    }

    #[tokio::test]
    async fn orders_need_a_valid_token_with_the_scope() {
        let (issuer, secret) = tessera().await;
        let token: Value = reqwest::Client::new()
            .post(format!("{issuer}/oauth2/token"))
            .basic_auth("svc", Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let access = token["access_token"].as_str().unwrap().to_owned();
        let verifier = Verifier::discover(
            &issuer,
            Options {
                audience: Some(issuer.clone()),
                ..Options::default()
            },
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rs = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app(verifier)).await });
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
}
