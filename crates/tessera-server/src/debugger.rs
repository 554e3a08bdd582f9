//! `/debugger`: a token pasted into a page, shown as jwt.io shows it (header, claims, times in
//! words) and checked against tessera's own keys (signature, issuer, times, revocation). The
//! token is answered back to the one browser that sent it and goes nowhere else: never logged,
//! never stored, never looked up (an opaque session or refresh token is only named, so the page
//! is no oracle for their validity).

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tessera_core::{Stores, humantime};
use tessera_jose::dangerous;

use crate::AppState;
use crate::look::esc;
use crate::pages::posted_form;

/// The form, with `token` in it and `problem` said next to it.
fn form(token: &str, problem: Option<&str>) -> String {
    let (invalid, said) = match problem {
        Some(p) => (
            " aria-invalid=\"true\" aria-describedby=\"problem\"",
            format!(
                "<p id=\"problem\" class=\"error\" role=\"alert\">{}</p>",
                esc(p)
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        "<p>Paste a token to see what it says, and whether this server's keys vouch for it. \
         It is not logged or kept.</p>{said}\
         <form method=\"post\" action=\"/debugger\">\
         <div class=\"field\"><label for=\"token\">Token</label>\
         <textarea id=\"token\" name=\"token\" rows=\"6\" spellcheck=\"false\" \
         autocomplete=\"off\" required autofocus{invalid}>{}</textarea></div>\
         <div class=\"actions\"><button type=\"submit\">Decode</button></div></form>",
        esc(token)
    )
}

/// `GET /debugger`.
pub(crate) async fn debugger_page<S: Stores>(State(state): State<AppState<S>>) -> Response {
    state
        .settings
        .look
        .page(StatusCode::OK, "Token debugger", &form("", None), None)
}

/// JSON, pretty and escaped for a `<pre>`.
fn pretty(v: &Value) -> String {
    esc(&serde_json::to_string_pretty(v).unwrap_or_default())
}

/// `POST /debugger`: the token decoded and judged.
pub(crate) async fn debug_token<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match posted_form(&state.settings.origin, &headers, &body) {
        Ok(p) => p,
        Err((status, message)) => return state.settings.look.error_page(status, &message),
    };
    let token = p.get("token").map(|t| t.trim()).unwrap_or_default();
    let refused = |why: &str| {
        state.settings.look.page(
            StatusCode::BAD_REQUEST,
            "Token debugger",
            &form(token, Some(why)),
            None,
        )
    };
    if token.is_empty() {
        return refused("Paste a token first.");
    }
    if let Some(kind) = ["tss_", "tsr_", "tsa_", "tsc_"]
        .iter()
        .find(|prefix| token.starts_with(**prefix))
    {
        let what = match *kind {
            "tss_" => "a session token",
            "tsr_" => "a refresh token",
            "tsa_" => "an authorization code",
            _ => "a client secret",
        };
        return refused(&format!(
            "This is {what}: an opaque random value that carries nothing to decode. Treat it \
             like a password."
        ));
    }
    let decoded = match dangerous::decode_unverified(token, 64 * 1024) {
        Ok(d) => d,
        Err(e) => {
            return refused(&format!(
                "This is not a JSON Web Token tessera can read ({e})."
            ));
        }
    };
    let now = state.auth.now();
    let mut out = form(token, None);
    // The verdict first: what a person came for.
    let verdict = match state.tokens.verify_issued(token) {
        Ok(t) if state.denylist.refuses(&t.claims) => {
            "<p class=\"error\"><strong>Revoked.</strong> The signature is this server's, \
             but the token was revoked (a sign-out, a revocation, a disabled account): it is \
             refused.</p>"
                .to_owned()
        }
        Ok(t) => format!(
            "<p><strong>Valid.</strong> Signed by this server's key <code>{}</code>, issued \
             by it, within its times, not revoked.</p>",
            esc(t.header.kid.as_deref().unwrap_or("?"))
        ),
        Err(e) => format!(
            "<p class=\"error\"><strong>Not valid here.</strong> {}</p>",
            esc(&e.to_string())
        ),
    };
    out.push_str("<h2>Verdict</h2>");
    out.push_str(&verdict);
    let _ = write!(out, "<h2>Header</h2><pre>{}</pre>", pretty(&decoded.header));
    match &decoded.claims {
        Some(c) => {
            let _ = write!(out, "<h2>Claims</h2><pre>{}</pre>", pretty(c));
            let mut times = String::new();
            for name in ["iat", "nbf", "exp"] {
                if let Some(secs) = c.get(name).and_then(Value::as_i64) {
                    let _ = write!(
                        times,
                        "<li><code>{name}</code> {} — {}</li>",
                        humantime::utc(secs),
                        esc(&humantime::relative(name, secs, now))
                    );
                }
            }
            if !times.is_empty() {
                let _ = write!(out, "<h2>Times</h2><ul>{times}</ul>");
            }
        }
        None => {
            let _ = write!(
                out,
                "<h2>Payload</h2><p>Not a JSON object:</p><pre>{}</pre>",
                esc(&String::from_utf8_lossy(&decoded.payload))
            );
        }
    }
    state
        .settings
        .look
        .page(StatusCode::OK, "Token debugger", &out, None)
}
