//! Pages for a signed-in person: `/account` and `/signout`. Plain forms (no JavaScript),
//! each with an anti-forgery token bound to the session.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use tessera_core::client::redirect_uri_problem;
use tessera_core::logsafe::Untrusted;
use tessera_core::{Authenticated, Client, Stores};

use crate::AppState;
use crate::look::esc;
use crate::pages::{MAX_STATE, form_key, params, posted_form, see_other, with_query};

/// Where an application asked `/signout` to send the person back (OpenID Connect
/// RP-Initiated Logout 1.0 §3): an address registered for it, and its `state`.
pub(crate) struct Return {
    client: Client,
    uri: String,
    state: Option<String>,
}

impl<S: Stores> AppState<S> {
    /// The return `p` asks for (`client_id`, `post_logout_redirect_uri`, `state`): none when it
    /// names no address; the page to show when the address is not one registered for the
    /// client (never a redirect: an open redirector is a phishing tool).
    async fn signout_return(
        &self,
        p: &HashMap<String, String>,
    ) -> Result<Option<Return>, Response> {
        let Some(uri) = p.get("post_logout_redirect_uri") else {
            return Ok(None);
        };
        let refused = || {
            self.settings.look.error_page(
                StatusCode::BAD_REQUEST,
                "This sign-out link is not valid: the application did not say who it is, or \
                 the address it asked to return to is not registered for it.",
            )
        };
        let Some(client_id) = p.get("client_id") else {
            return Err(refused());
        };
        if p.get("state").is_some_and(|s| s.len() > MAX_STATE) {
            return Err(refused());
        }
        let client = match self.service.client(client_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(refused()),
            Err(_) => return Err(self.settings.look.unavailable_page()),
        };
        // Registered addresses were checked when the client was added; checked again so that
        // one stored by an older version is never redirected to if the rule now refuses it.
        if !client.post_logout_redirect_uris.contains(uri) || redirect_uri_problem(uri).is_some() {
            return Err(refused());
        }
        Ok(Some(Return {
            client,
            uri: uri.clone(),
            state: p.get("state").cloned(),
        }))
    }

    /// After a sign-out (or for a browser not signed in), the session cookie expired: back to
    /// the application that asked, or a page that says so.
    fn signed_out(&self, back: Option<&Return>) -> Response {
        let mut res = match back {
            Some(b) => {
                let pairs: Vec<(&str, &str)> =
                    b.state.iter().map(|s| ("state", s.as_str())).collect();
                see_other(&with_query(&b.uri, &pairs))
            }
            None => self.settings.look.page(
                StatusCode::OK,
                "Signed out",
                "<p>You are signed out. Close this window, or go back to the application and \
                 sign in again.</p>",
                None,
            ),
        };
        res.headers_mut()
            .insert(header::SET_COOKIE, self.set_cookie("", 0));
        res
    }
}

/// `GET /signout`: who is signed in, and a button to sign out (and, when an application asked,
/// where the person goes back to).
pub(crate) async fn signout_page<S: Stores>(
    State(state): State<AppState<S>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = match params(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(m) => return state.settings.look.error_page(StatusCode::BAD_REQUEST, &m),
    };
    let back = match state.signout_return(&p).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let a = match state.browser_session(&headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return state.signed_out(back.as_ref()),
        Err(res) => return res,
    };
    let csrf = state.settings.csrf.token(&form_key("signout", &a));
    let mut hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&csrf)
    );
    let mut then = String::new();
    if let Some(b) = &back {
        let mut field = |name: &str, value: &str| {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                esc(value)
            );
        };
        field("client_id", &b.client.id);
        field("post_logout_redirect_uri", &b.uri);
        if let Some(s) = &b.state {
            field("state", s);
        }
        let _ = write!(
            then,
            "<p>Then you go back to <strong>{}</strong> <span class=\"muted\">({})</span>.</p>",
            esc(b.client.name.as_deref().unwrap_or(&b.client.id)),
            esc(&crate::http::origin_of(&b.uri))
        );
    }
    let body = format!(
        "<p>Signed in as <strong>{}</strong>.</p>{then}\
         <form method=\"post\" action=\"/signout\">{hidden}\
         <div class=\"actions\"><button type=\"submit\">Sign out</button></div></form>",
        esc(&a.user.username),
    );
    // The form's last redirect goes to the application: its origin is a form target.
    let target = back.as_ref().map(|b| crate::http::origin_of(&b.uri));
    state
        .settings
        .look
        .page(StatusCode::OK, "Sign out?", &body, target.as_deref())
}

/// `POST /signout`: ends the browser's session (and the access tokens issued under it), then
/// back to the application if one asked.
pub(crate) async fn signout<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match posted_form(&state.settings.origin, &headers, &body) {
        Ok(p) => p,
        Err((status, message)) => return state.settings.look.error_page(status, &message),
    };
    let a = match state.browser_session(&headers).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return match state.signout_return(&p).await {
                Ok(back) => state.signed_out(back.as_ref()),
                Err(res) => res,
            };
        }
        Err(res) => return res,
    };
    if !state.form_token_ok(&p, "signout", &a) {
        return state.settings.look.error_page(
            StatusCode::FORBIDDEN,
            "This form has expired or was not ours; open the sign-out page again.",
        );
    }
    // The person asked to sign out: that is done first, whatever becomes of the return (a
    // client removed or an address unregistered since the page was drawn, a store that does
    // not answer): then the page that says so, never a redirect to an address not registered.
    if state.auth.logout(&a.hash, &a.session).await.is_err() {
        return state.settings.look.unavailable_page();
    }
    let back = state.signout_return(&p).await.ok().flatten();
    state.signed_out(back.as_ref())
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
pub(crate) async fn account_page<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Response {
    let a = match state.browser_session(&headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return state.login_page("/account", None, StatusCode::OK, None, None),
        Err(res) => return res,
    };
    let Ok(sessions) = state.auth.sessions_of(&a.user.id).await else {
        return state.settings.look.unavailable_page();
    };
    let Ok(consents) = state.service.consents_of(&a.user.id).await else {
        return state.settings.look.unavailable_page();
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
    state
        .settings
        .look
        .page(StatusCode::OK, "Your account", &body, None)
}

/// A form of the account page, its anti-forgery token checked: the session and the form's
/// fields, or the page to show.
async fn account_form<S: Stores>(
    state: &AppState<S>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Authenticated, HashMap<String, String>), Response> {
    let p = posted_form(&state.settings.origin, headers, body)
        .map_err(|(status, message)| state.settings.look.error_page(status, &message))?;
    let a = match state.browser_session(headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(state.signed_out(None)),
        Err(res) => return Err(res),
    };
    if !state.form_token_ok(&p, "account", &a) {
        return Err(state.settings.look.error_page(
            StatusCode::FORBIDDEN,
            "This form has expired or was not ours; open your account page again.",
        ));
    }
    Ok((a, p))
}

/// `POST /account/sessions/end`: ends one of the person's sessions (this one: signed out).
pub(crate) async fn end_session<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (a, p) = match account_form(&state, &headers, &body).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let handle = p.get("session").map(String::as_str).unwrap_or_default();
    match state.auth.end_session(&a.user.id, handle).await {
        Ok(_) if handle == a.session.handle => state.signed_out(None),
        Ok(_) => see_other("/account"),
        Err(_) => state.settings.look.unavailable_page(),
    }
}

/// `POST /account/consents/withdraw`: withdraws a consent; the application's refresh tokens
/// for this person stop working, and it must ask again.
pub(crate) async fn withdraw_consent<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (a, p) = match account_form(&state, &headers, &body).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let client = p.get("client_id").map(String::as_str).unwrap_or_default();
    match state.service.withdraw_consent(&a.user.id, client).await {
        Ok(withdrawn) => {
            if withdrawn {
                tracing::info!(target: "audit", event = "consent_withdrawn", user = %a.user.id, client = %Untrusted(client));
            }
            see_other("/account")
        }
        Err(_) => state.settings.look.unavailable_page(),
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
