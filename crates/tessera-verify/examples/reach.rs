//! How long a revocation takes to reach a verifier that follows the feed, for the benchmark
//! (`scripts/bench-verify.sh`); also mints tokens for its cold-token rows.
//!
//!   ISSUER=http://127.0.0.1:8094 CLIENT_ID=rs CLIENT_SECRET=tsc_… AUDIENCE=urn:bench:api \
//!     cargo run --release -p tessera-verify --example reach -- reach 1000
//!   … -- mint 20000 > tokens.txt
//!
//! `reach N`: N client-credentials tokens, each verified (and remembered), then revoked with
//! RFC 7009 at `REVOKE_URL` (default: the issuer; another instance of the cluster shows the
//! path through Redis); the time from sending the revocation to the verifier refusing the token,
//! polled every millisecond. Prints p50, p90, p99 and the maximum; first, how long the
//! follower took to catch up with the revocations already in force, how many it holds, and the
//! growth of this process's resident memory over the catch-up (`scripts/bench-scale.sh`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)] // a benchmark tool: a failure is a panic, its answer is printed

use std::time::{Duration, Instant};

use tessera_verify::{FeedOptions, Options, Verifier, VerifyError};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name}"))
}

async fn mint(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    let res = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// This process's resident memory, KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let issuer = env("ISSUER");
    let (id, secret) = (env("CLIENT_ID"), env("CLIENT_SECRET"));
    let revoke_at = std::env::var("REVOKE_URL").unwrap_or_else(|_| issuer.clone());
    let http = reqwest::Client::new();
    if args.get(1).map(String::as_str) == Some("mint") {
        for _ in 0..n {
            println!("{}", mint(&http, &revoke_at, &id, &secret).await);
        }
        return;
    }
    let verifier = Verifier::discover(
        &issuer,
        Options {
            audience: tessera_verify::Audience::Required(env("AUDIENCE")),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let (rss, started) = (rss_kib(), Instant::now());
    verifier
        .follow_revocations(FeedOptions::new(id.clone(), secret.clone()))
        .await
        .unwrap();
    println!(
        "caught up with {} revocations in {:.0} ms, resident memory +{:.1} MB",
        verifier.revocations_held(),
        started.elapsed().as_secs_f64() * 1000.0,
        (rss_kib().saturating_sub(rss)) as f64 / 1024.0
    );
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        tokens.push(mint(&http, &revoke_at, &id, &secret).await);
    }
    let mut reach = Vec::with_capacity(n);
    for token in &tokens {
        verifier.verify(token).await.unwrap();
        let sent = Instant::now();
        let res = http
            .post(format!("{revoke_at}/oauth2/revoke"))
            .basic_auth(&id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        loop {
            match verifier.verify(token).await {
                Err(VerifyError::Revoked) => break,
                Ok(_) => {}
                Err(e) => panic!("refused for another reason: {e}"),
            }
            assert!(sent.elapsed() < Duration::from_secs(10), "never reached");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        reach.push(sent.elapsed());
    }
    reach.sort();
    let at = |q: f64| {
        let i = ((reach.len() as f64 * q).ceil() as usize).clamp(1, reach.len()) - 1;
        reach[i].as_secs_f64() * 1000.0
    };
    println!(
        "reach over {n} revocations: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
