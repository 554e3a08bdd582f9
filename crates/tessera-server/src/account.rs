//! Pages for a signed-in person: `/account` and `/signout`. Plain forms (no JavaScript),
//! each with an anti-forgery token bound to the session.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_core::logsafe::Untrusted;
use tessera_core::{Authenticated, Stores, UserStore};

use crate::AppState;
use crate::pages::{error_page, esc, form_key, page, posted_form, see_other, unavailable_page};

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
    let csrf = state.settings.csrf.token(&form_key("signout", &a));
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
    let (a, _) = match session_form(
        &state,
        &headers,
        &body,
        "signout",
        "This form has expired or was not ours; open the sign-out page again.",
    )
    .await
    {
        Ok(x) => x,
        Err(res) => return res,
    };
    match state.auth.logout(&a.hash, &a.session).await {
        Ok(_) => signed_out(&state),
        Err(_) => unavailable_page(),
    }
}

/// "3 minutes ago", "in 2 hours": `then` seen from `now`, in words.
pub(crate) fn relative(then: i64, now: i64) -> String {
    let d = now - then;
    let (n, unit) = match d.abs() {
        s if s < 60 => return "just now".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if d >= 0 {
        format!("{n} {unit}{plural} ago")
    } else {
        format!("in {n} {unit}{plural}")
    }
}

/// The browser and system a `User-Agent` names, as a person would say them ("Firefox on
/// Linux"); "Unknown device" when it names neither.
pub(crate) fn device(user_agent: Option<&str>) -> String {
    let ua = user_agent.unwrap_or_default();
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(s)) => s.to_owned(),
        (None, None) => "Unknown device".to_owned(),
    }
}

/// `GET /account`: who is signed in, their sessions and the applications they allowed, each
/// with a button to end or withdraw it. Not signed in: the sign-in form, back here after.
pub(crate) async fn account_page<U: UserStore, S: Stores>(
    State(state): State<AppState<U, S>>,
    headers: HeaderMap,
) -> Response {
    let a = match state.browser_session(&headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return state.login_page("/account", None, StatusCode::OK, None, None),
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(sessions) = state.auth.sessions_of(&a.user.id).await else {
        return unavailable_page();
    };
    let Ok(consents) = state.auth.sessions().consents_of(&a.user.id).await else {
        return unavailable_page();
    };
    let now = state.auth.now();
    let csrf = esc(&state.settings.csrf.token(&form_key("account", &a)));
    let mut body = format!(
        "<p>Signed in as <strong>{}</strong>. <a href=\"/signout\">Sign out</a></p>\
         <h2>Where you are signed in</h2><ul>",
        esc(&a.user.username)
    );
    for (hash, s) in &sessions {
        let this = *hash == a.hash;
        let _ = write!(
            body,
            "<li><strong>{}</strong>{}<br>from {}, signed in {}, last active {}\
             <form method=\"post\" action=\"/account/sessions/end\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"session\" value=\"{}\">\
             <button type=\"submit\">{}</button></form></li>",
            esc(&device(s.user_agent.as_deref())),
            if this { " (this device)" } else { "" },
            esc(s.ip.as_deref().unwrap_or("an unknown address")),
            relative(s.created_at, now),
            relative(s.last_seen_at, now),
            esc(&s.handle),
            if this { "Sign out here" } else { "End" },
        );
    }
    body.push_str("</ul><h2>Applications you allowed</h2>");
    if consents.is_empty() {
        body.push_str("<p>None.</p>");
    } else {
        body.push_str("<ul>");
        for c in &consents {
            let scopes: Vec<String> = c
                .scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(|s| state.scope_html(s))
                .collect();
            let _ = write!(
                body,
                "<li><strong>{}</strong>, allowed {}: {}\
                 <form method=\"post\" action=\"/account/consents/withdraw\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"client_id\" value=\"{}\">\
                 <button type=\"submit\">Withdraw</button></form></li>",
                esc(&c.client_id),
                relative(c.granted_at, now),
                if scopes.is_empty() {
                    "to know who you are".to_owned()
                } else {
                    scopes.join(", ")
                },
                esc(&c.client_id),
            );
        }
        body.push_str("</ul>");
    }
    page(StatusCode::OK, "Your account", &body, None)
}

/// A form of this session's page `form` (`signout`, `account`), its anti-forgery token checked:
/// the session and the form's fields, or the page to show (`stale` when the token is not
/// this session's).
async fn session_form<U: UserStore, S: Stores>(
    state: &AppState<U, S>,
    headers: &HeaderMap,
    body: &[u8],
    form: &str,
    stale: &str,
) -> Result<(Authenticated, std::collections::HashMap<String, String>), Response> {
    let p = posted_form(&state.settings.origin, headers, body)
        .map_err(|(status, message)| error_page(status, &message))?;
    let a = match state.browser_session(headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(signed_out(state)),
        Err(refusal) => return Err(refusal.into_response()),
    };
    let ok = p
        .get("csrf")
        .is_some_and(|t| state.settings.csrf.verify(&form_key(form, &a), t));
    if !ok {
        return Err(error_page(StatusCode::FORBIDDEN, stale));
    }
    Ok((a, p))
}

/// A form of the account page (see [`session_form`]).
async fn account_form<U: UserStore, S: Stores>(
    state: &AppState<U, S>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Authenticated, std::collections::HashMap<String, String>), Response> {
    session_form(
        state,
        headers,
        body,
        "account",
        "This form has expired or was not ours; open your account page again.",
    )
    .await
}

/// `POST /account/sessions/end`: ends one of the person's sessions (this one: signed out).
pub(crate) async fn end_session<U: UserStore, S: Stores>(
    State(state): State<AppState<U, S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (a, p) = match account_form(&state, &headers, &body).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let handle = p.get("session").map(String::as_str).unwrap_or_default();
    match state.auth.end_session(&a.user.id, handle).await {
        Ok(_) if handle == a.session.handle => signed_out(&state),
        Ok(_) => see_other("/account"),
        Err(_) => unavailable_page(),
    }
}

/// `POST /account/consents/withdraw`: withdraws a consent; the application's refresh tokens
/// for this person stop working, and it must ask again.
pub(crate) async fn withdraw_consent<U: UserStore, S: Stores>(
    State(state): State<AppState<U, S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (a, p) = match account_form(&state, &headers, &body).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let client = p.get("client_id").map(String::as_str).unwrap_or_default();
    match state
        .auth
        .sessions()
        .delete_consent(&a.user.id, client)
        .await
    {
        Ok(withdrawn) => {
            if withdrawn {
                tracing::info!(target: "audit", event = "consent_withdrawn", user = %a.user.id, client = %Untrusted(client));
            }
            see_other("/account")
        }
        Err(_) => unavailable_page(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_devices_as_a_person_says_them() {
        assert_eq!(relative(100, 130), "just now");
        assert_eq!(relative(0, 60), "1 minute ago");
        assert_eq!(relative(0, 150), "2 minutes ago");
        assert_eq!(relative(0, 3600), "1 hour ago");
        assert_eq!(relative(0, 3 * 86_400), "3 days ago");
        assert_eq!(relative(7200, 0), "in 2 hours");
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(device(Some(firefox)), "Firefox on Linux");
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(device(Some(chrome)), "Chrome on Windows");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(device(Some(iphone)), "Safari on iPhone");
        assert_eq!(device(None), "Unknown device");
    }
}
