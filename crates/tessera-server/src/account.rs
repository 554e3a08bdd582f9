//! Pages for a signed-in person: `/signout`. Plain forms (no JavaScript), each with an
//! anti-forgery token bound to the session.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_core::{Authenticated, Stores, UserStore};

use crate::AppState;
use crate::pages::{error_page, esc, page, posted_form};

/// What the sign-out form's anti-forgery token is bound to: the session.
fn signout_key(a: &Authenticated) -> String {
    format!("signout:{}", a.hash.to_hex())
}

/// The page after a sign-out (or for a browser not signed in), the session cookie expired.
fn signed_out<U: UserStore, S: Stores>(state: &AppState<U, S>) -> Response {
    let mut res = page(
        StatusCode::OK,
        "Signed out",
        "<p>You are signed out. Close this window, or go back to the application and sign in \
         again.</p>",
        None,
    );
    res.headers_mut()
        .insert(header::SET_COOKIE, state.set_cookie("", 0));
    res
}

/// `GET /signout`: who is signed in, and a button to sign out.
pub(crate) async fn signout_page<U: UserStore, S: Stores>(
    State(state): State<AppState<U, S>>,
    headers: HeaderMap,
) -> Response {
    let a = match state.browser_session(&headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return signed_out(&state),
        Err(refusal) => return refusal.into_response(),
    };
    let csrf = state.settings.csrf.token(&signout_key(&a));
    let body = format!(
        "<p>Signed in as <strong>{}</strong>.</p>\
         <form method=\"post\" action=\"/signout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Sign out</button></form>",
        esc(&a.user.username),
        esc(&csrf)
    );
    page(StatusCode::OK, "Sign out?", &body, None)
}

/// `POST /signout`: ends the browser's session (and the access tokens issued under it).
pub(crate) async fn signout<U: UserStore, S: Stores>(
    State(state): State<AppState<U, S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match posted_form(&state.settings.origin, &headers, &body) {
        Ok(p) => p,
        Err((status, message)) => return error_page(status, &message),
    };
    let a = match state.browser_session(&headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return signed_out(&state),
        Err(refusal) => return refusal.into_response(),
    };
    let csrf_ok = p.get("csrf").is_some_and(|t| {
        state
            .settings
            .csrf
            .verify(&format!("signout:{}", a.hash.to_hex()), t)
    });
    if !csrf_ok {
        return error_page(
            StatusCode::FORBIDDEN,
            "This form has expired or was not ours; open the sign-out page again.",
        );
    }
    match state.auth.logout(&a.hash, &a.session).await {
        Ok(_) => signed_out(&state),
        Err(_) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is unavailable; try again shortly.",
        ),
    }
}
