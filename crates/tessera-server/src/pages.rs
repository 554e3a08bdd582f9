//! Delegated access (RFC 6749 §4.1 with PKCE S256, RFC 7636): `/oauth2/authorize` shows a
//! login page to a person without a session and a consent page naming the client and the
//! scopes; consent is remembered per client and scope set and can be withdrawn through
//! `/auth/consents`. Plain server-rendered HTML that works without JavaScript: every form
//! carries an anti-forgery token, and every page forbids framing and loads nothing.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_core::client::{AUTHORIZATION_CODE, subset, valid_challenge, valid_scope};
use tessera_core::logsafe::Untrusted;
use tessera_core::{Authenticated, Client, Consent, LoginError, Stores};

use crate::AppState;
use crate::http::{Peer, cookie, same_origin};
use crate::look::esc;
use crate::problem::Problem;

/// What the anti-forgery token of a form a session's page shows (`consent`, `signout`,
/// `account`) is bound to: that form and that session.
pub(crate) fn form_key(form: &str, a: &Authenticated) -> String {
    format!("{form}:{}", a.hash.to_hex())
}

/// The longest `state` a page carries in a form, bytes: the form that posts it back,
/// percent-encoded (up to three times longer), must fit the body limit.
pub(crate) const MAX_STATE: usize = 2048;

/// Parameters of a query or form: a parameter sent twice is refused (RFC 6749 §3.1).
pub(crate) fn params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let pairs =
        crate::form::parse(raw).map_err(|e| format!("the parameters are malformed: {e}"))?;
    let mut out = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("the parameter `{k}` appears more than once"));
        }
    }
    Ok(out)
}

/// The parameters of a form posted from one of our pages: another site's post is refused
/// (the status and sentence of the error page). A browser that says nothing of the form's
/// site and sends `Origin: null` (privacy settings, older browsers) is let through to the
/// form's anti-forgery token, which every caller verifies: bound to this browser's login
/// cookie or session, it is the same-origin evidence then.
pub(crate) fn posted_form(
    origin: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, (StatusCode, String)> {
    let opaque = headers.get("sec-fetch-site").is_none()
        && headers
            .get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() == b"null");
    if !opaque && !same_origin(headers, origin) {
        return Err((
            StatusCode::FORBIDDEN,
            "This form was sent from another site.".into(),
        ));
    }
    params(body).map_err(|m| (StatusCode::BAD_REQUEST, m))
}

/// A checked authorization request.
#[derive(Debug)]
struct Request {
    client: Client,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    challenge: String,
    prompt_none: bool,
    /// `prompt=login`: the person signs in again, whatever session the browser has.
    prompt_login: bool,
    /// `max_age`: a sign-in older than this many seconds is not good enough.
    max_age: Option<i64>,
}

/// `uri` with `pairs` added to its query.
pub(crate) fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return uri.to_owned();
    }
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{query}")
}

pub(crate) fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

impl<S: Stores> AppState<S> {
    /// Whether the anti-forgery token of `p`, a form of this session's page `form`, is this
    /// session's.
    pub(crate) fn form_token_ok(
        &self,
        p: &HashMap<String, String>,
        form: &str,
        a: &Authenticated,
    ) -> bool {
        p.get("csrf")
            .is_some_and(|t| self.settings.csrf.verify(&form_key(form, a), t))
    }

    /// The answer to the client: an error on its redirect URI, with `state` and `iss`
    /// (RFC 9207).
    fn redirect_error(&self, r: &Request, error: &str, description: &str) -> Response {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if let Some(s) = &r.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", &self.settings.issuer));
        see_other(&with_query(&r.redirect_uri, &pairs))
    }

    /// Checks an authorization request in the order RFC 6749 §4.1.2.1 sets: client and
    /// redirect URI first (failures shown here), the rest sent back to the client.
    async fn authorization_request(
        &self,
        p: &HashMap<String, String>,
    ) -> Result<Request, Response> {
        let page = |m: &str| self.settings.look.error_page(StatusCode::BAD_REQUEST, m);
        let client_id = p
            .get("client_id")
            .ok_or_else(|| page("client_id is missing"))?;
        let client = match self.service.client(client_id).await {
            Ok(Some(c)) if c.allows(AUTHORIZATION_CODE) => c,
            Ok(_) => {
                return Err(page(
                    "unknown client, or not allowed to ask for authorization",
                ));
            }
            Err(_) => {
                return Err(self.settings.look.unavailable_page());
            }
        };
        let redirect_uri = match p.get("redirect_uri") {
            // Registered URIs were checked when the client was added; checked again here so that
            // one stored by an older version (or by hand) is never redirected to if the rule now
            // refuses it. The comparison itself stays exact, on the strings.
            Some(u) if tessera_core::client::redirect_uri_problem(u).is_some() => {
                return Err(page("the redirect_uri is not acceptable"));
            }
            Some(u) if client.redirect_uris.contains(u) => u.clone(),
            Some(_) => return Err(page("the redirect_uri is not registered for this client")),
            None if client.redirect_uris.len() == 1
                && tessera_core::client::redirect_uri_problem(&client.redirect_uris[0])
                    .is_none() =>
            {
                client.redirect_uris[0].clone()
            }
            None => return Err(page("redirect_uri is required")),
        };
        // Refused here, not sent back: the answer would carry it.
        if p.get("state").is_some_and(|s| s.len() > MAX_STATE) {
            return Err(page("the state parameter is too long"));
        }
        let mut r = Request {
            client,
            redirect_uri,
            scope: String::new(),
            state: p.get("state").cloned(),
            challenge: String::new(),
            prompt_none: false,
            prompt_login: false,
            max_age: None,
        };
        let refuse = |r: &Request, e: &str, d: &str| self.redirect_error(r, e, d);
        if p.get("response_type").map(String::as_str) != Some("code") {
            return Err(refuse(
                &r,
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        match (p.get("code_challenge"), p.get("code_challenge_method")) {
            (Some(c), Some(m)) if m == "S256" && valid_challenge(c) => r.challenge = c.clone(),
            (Some(_), Some(m)) if m == "S256" => {
                return Err(refuse(&r, "invalid_request", "code_challenge is malformed"));
            }
            (Some(_), _) => {
                return Err(refuse(
                    &r,
                    "invalid_request",
                    "code_challenge_method must be S256",
                ));
            }
            (None, _) => {
                return Err(refuse(
                    &r,
                    "invalid_request",
                    "PKCE is required: send code_challenge with S256",
                ));
            }
        }
        r.scope = match p.get("scope") {
            Some(s) if !valid_scope(s) => {
                return Err(refuse(&r, "invalid_scope", "the scope is malformed"));
            }
            s => match r.client.grant_scope(s.map(String::as_str)) {
                Some(scope) => scope,
                None => {
                    return Err(refuse(
                        &r,
                        "invalid_scope",
                        "the scope asked for is not allowed",
                    ));
                }
            },
        };
        match p.get("max_age").map(|m| m.parse::<i64>()) {
            None => {}
            Some(Ok(m)) if m >= 0 => r.max_age = Some(m),
            Some(_) => {
                return Err(refuse(
                    &r,
                    "invalid_request",
                    "max_age is a number of seconds",
                ));
            }
        }
        match p.get("prompt").map(String::as_str) {
            None | Some("consent") => {}
            Some("login") => r.prompt_login = true,
            Some("none") => r.prompt_none = true,
            Some(_) => {
                return Err(refuse(
                    &r,
                    "invalid_request",
                    "prompt is none, login or consent",
                ));
            }
        }
        Ok(r)
    }

    /// The session of the browser (cookie only: a page is never authorised by a header).
    pub(crate) async fn browser_session(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, Response> {
        let Some(token) = cookie(headers, self.settings.cookie_name) else {
            return Ok(None);
        };
        match self.auth.authenticate(token).await {
            Ok(a) => Ok(Some(a)),
            Err(tessera_core::SessionError::Unavailable) => {
                Err(self.settings.look.unavailable_page())
            }
            Err(_) => Ok(None),
        }
    }

    /// Issues the code and sends the browser back to the client with it.
    async fn grant_code(&self, r: &Request, a: &Authenticated) -> Response {
        match self
            .tokens
            .issue_code(
                &r.client,
                &a.user.id,
                &r.redirect_uri,
                &r.scope,
                &r.challenge,
                Some(&a.session.handle),
            )
            .await
        {
            Ok(code) => {
                let mut pairs = vec![("code", code.expose())];
                if let Some(s) = &r.state {
                    pairs.push(("state", s));
                }
                pairs.push(("iss", &self.settings.issuer));
                see_other(&with_query(&r.redirect_uri, &pairs))
            }
            Err(_) => self.redirect_error(r, "temporarily_unavailable", "try again shortly"),
        }
    }

    /// Whether `user_id` consented before to at least `r.scope` for `r.client`.
    async fn consented(&self, user_id: &str, r: &Request) -> Result<bool, Response> {
        let consents = self
            .service
            .consents_of(user_id)
            .await
            .map_err(|_| self.settings.look.unavailable_page())?;
        Ok(consents
            .iter()
            .any(|c| c.client_id == r.client.id && subset(&r.scope, &c.scope)))
    }

    fn login_cookie_name(&self) -> &'static str {
        if self.settings.secure_cookie {
            "__Host-tessera_login"
        } else {
            "tessera_login"
        }
    }

    /// The login page; `continue_to` is the authorization request to resume, and
    /// `redirect_uri` the client's, where the flow may end after the form (a person who
    /// consented before goes straight back): the page's `form-action` allows its origin, or the
    /// browser would block the last redirect of the sign-in.
    pub(crate) fn login_page(
        &self,
        continue_to: &str,
        redirect_uri: Option<&str>,
        status: StatusCode,
        message: Option<&str>,
        nonce: Option<&str>,
    ) -> Response {
        self.login_page_for(continue_to, redirect_uri, status, message, nonce, None)
    }

    /// [`AppState::login_page`] after an attempt: the `username` typed is kept (and the focus
    /// goes to the password).
    fn login_page_for(
        &self,
        continue_to: &str,
        redirect_uri: Option<&str>,
        status: StatusCode,
        message: Option<&str>,
        nonce: Option<&str>,
        username: Option<&str>,
    ) -> Response {
        // The form is bound to a random cookie of this browser (login CSRF).
        let fresh;
        let nonce = match nonce {
            Some(n) => n,
            None => {
                fresh = tessera_core::token::random_id("");
                &fresh
            }
        };
        let csrf = self.settings.csrf.token(&format!("login:{nonce}"));
        let mut body = String::new();
        // An error is said next to the fields it concerns, which point at it.
        let invalid = match message {
            Some(m) => {
                let _ = write!(
                    body,
                    "<p id=\"problem\" class=\"error\" role=\"alert\">{}</p>",
                    esc(m)
                );
                " aria-invalid=\"true\" aria-describedby=\"problem\""
            }
            None => "",
        };
        let typed = username.unwrap_or_default();
        let (focus_user, focus_password) = if typed.is_empty() {
            (" autofocus", "")
        } else {
            ("", " autofocus")
        };
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/oauth2/login\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"continue\" value=\"{}\">\
             <div class=\"field\"><label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" type=\"text\" value=\"{}\" \
             autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required{focus_user}{invalid}></div>\
             <div class=\"field\"><label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required{focus_password}{invalid}></div>\
             <div class=\"actions\"><button type=\"submit\">Sign in</button></div></form>",
            esc(&csrf),
            esc(continue_to),
            esc(typed),
        );
        let target = redirect_uri.map(crate::http::origin_of);
        let mut res = self
            .settings
            .look
            .page(status, "Sign in", &body, target.as_deref());
        res.headers_mut().insert(
            header::SET_COOKIE,
            self.cookie(self.login_cookie_name(), nonce, "Strict", 900),
        );
        res
    }

    /// A scope as a person reads it: its words from `pages.scopes` (its name beside them), or
    /// its name.
    pub(crate) fn scope_html(&self, scope: &str) -> String {
        match self.settings.scope_words.get(scope) {
            Some(words) => format!(
                "{} <span class=\"muted\"><code>{}</code></span>",
                esc(words),
                esc(scope)
            ),
            None => format!("<code>{}</code>", esc(scope)),
        }
    }

    /// The consent page for `r`, its form bound to the session.
    fn consent_page(&self, r: &Request, a: &Authenticated) -> Response {
        let csrf = self.settings.csrf.token(&form_key("consent", a));
        let mut scopes = String::new();
        for s in r.scope.split(' ').filter(|s| !s.is_empty()) {
            let _ = write!(scopes, "<li>{}</li>", self.scope_html(s));
        }
        if scopes.is_empty() {
            scopes.push_str("<li>to know who you are (no other permission)</li>");
        }
        let mut hidden = String::new();
        let mut field = |name: &str, value: &str| {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                esc(value)
            );
        };
        field("csrf", &csrf);
        field("response_type", "code");
        field("client_id", &r.client.id);
        field("redirect_uri", &r.redirect_uri);
        field("scope", &r.scope);
        field("code_challenge", &r.challenge);
        field("code_challenge_method", "S256");
        if let Some(s) = &r.state {
            field("state", s);
        }
        // The application as people know it: its name (its id beside it), logo and home page.
        let c = &r.client;
        let mut app = match &c.name {
            Some(name) => format!(
                "<strong>{}</strong> <span class=\"muted\">({})</span>",
                esc(name),
                esc(&c.id)
            ),
            None => format!("<strong>{}</strong>", esc(&c.id)),
        };
        if let Some(home) = &c.homepage {
            let _ = write!(
                app,
                " <a href=\"{}\" rel=\"noopener noreferrer\" target=\"_blank\">{}</a>",
                esc(home),
                esc(&crate::http::origin_of(home))
            );
        }
        let logo = c.logo_uri.as_deref().map_or_else(String::new, |l| {
            format!(
                "<p><img src=\"{}\" alt=\"\" width=\"64\" height=\"64\"></p>",
                esc(l)
            )
        });
        let body = format!(
            "<p>Signed in as <strong>{}</strong>.</p>{logo}\
             <p>The application {app} asks for access to your account:</p><ul>{scopes}</ul>\
             <p>It will be sent back to <code>{}</code>.</p>\
             <form method=\"post\" action=\"/oauth2/authorize\">{hidden}\
             <div class=\"actions\">\
             <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>\
             </div></form>\
             <p><a href=\"/signout\">Not you? Sign out</a></p>",
            esc(&a.user.username),
            esc(&r.redirect_uri),
        );
        let target = crate::http::origin_of(&r.redirect_uri);
        let images = c.logo_uri.as_deref().map(crate::http::origin_of);
        self.settings.look.page_with(
            StatusCode::OK,
            "Allow access?",
            &body,
            Some(&target),
            images.as_deref(),
        )
    }
}

/// `GET /oauth2/authorize`.
pub(crate) async fn authorize<S: Stores>(
    State(state): State<AppState<S>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let p = match params(query.as_bytes()) {
        Ok(p) => p,
        Err(m) => return state.settings.look.error_page(StatusCode::BAD_REQUEST, &m),
    };
    let r = match state.authorization_request(&p).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let session = match state.browser_session(&headers).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let Some(a) = session else {
        if r.prompt_none {
            return state.redirect_error(&r, "login_required", "the person is not signed in");
        }
        return state.login_page(
            &format!("/oauth2/authorize?{query}"),
            Some(&r.redirect_uri),
            StatusCode::OK,
            None,
            None,
        );
    };
    let stale = r
        .max_age
        .is_some_and(|m| state.auth.now() - a.session.created_at > m);
    if r.prompt_login || stale {
        if r.prompt_none {
            return state.redirect_error(&r, "login_required", "a new sign-in is required");
        }
        // Resumed without `prompt=login` (the new sign-in answers it; `max_age` is kept, and
        // the new session meets it).
        let resumed: Vec<(&String, &String)> = {
            let mut v: Vec<_> = p.iter().filter(|(k, _)| k.as_str() != "prompt").collect();
            v.sort();
            v
        };
        let query = serde_urlencoded::to_string(resumed).unwrap_or_default();
        return state.login_page(
            &format!("/oauth2/authorize?{query}"),
            Some(&r.redirect_uri),
            StatusCode::OK,
            None,
            None,
        );
    }
    match state.consented(&a.user.id, &r).await {
        Ok(true) if p.get("prompt").map(String::as_str) != Some("consent") => {
            state.grant_code(&r, &a).await
        }
        Ok(_) if r.prompt_none => {
            state.redirect_error(&r, "consent_required", "the person has not consented")
        }
        Ok(_) => state.consent_page(&r, &a),
        Err(res) => res,
    }
}

/// `POST /oauth2/authorize`: the consent form's decision.
pub(crate) async fn decide<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match posted_form(&state.settings.origin, &headers, &body) {
        Ok(p) => p,
        Err((status, message)) => return state.settings.look.error_page(status, &message),
    };
    let r = match state.authorization_request(&p).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let a = match state.browser_session(&headers).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return state.settings.look.error_page(
                StatusCode::UNAUTHORIZED,
                "Your session has ended; start again from the application.",
            );
        }
        Err(res) => return res,
    };
    if !state.form_token_ok(&p, "consent", &a) {
        return state.settings.look.error_page(
            StatusCode::FORBIDDEN,
            "This form has expired or was not ours; start again from the application.",
        );
    }
    match p.get("decision").map(String::as_str) {
        Some("allow") => {
            let consent = Consent {
                client_id: r.client.id.clone(),
                scope: r.scope.clone(),
                granted_at: state.auth.now(),
            };
            if state
                .service
                .grant_consent(&a.user.id, &consent)
                .await
                .is_err()
            {
                return state.redirect_error(&r, "temporarily_unavailable", "try again shortly");
            }
            tracing::info!(target: "audit", event = "consent_granted", user = %a.user.id, client = %Untrusted(&r.client.id), scope = %Untrusted(&r.scope));
            state.grant_code(&r, &a).await
        }
        Some("deny") => {
            tracing::info!(target: "audit", event = "consent_denied", user = %a.user.id, client = %Untrusted(&r.client.id));
            state.redirect_error(&r, "access_denied", "the person denied access")
        }
        _ => state
            .settings
            .look
            .error_page(StatusCode::BAD_REQUEST, "decision is allow or deny"),
    }
}

/// `POST /oauth2/login`: the login form; on success, a session cookie and back to the
/// authorization request.
pub(crate) async fn login_form<S: Stores>(
    State(state): State<AppState<S>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match posted_form(&state.settings.origin, &headers, &body) {
        Ok(p) => p,
        Err((status, message)) => return state.settings.look.error_page(status, &message),
    };
    let continue_to = p.get("continue").map(String::as_str).unwrap_or_default();
    // Only back into an authorization request of ours, or the account page: never an open
    // redirect.
    let ours = continue_to.starts_with("/oauth2/authorize?") || continue_to == "/account";
    // And one a `Location` header carries as it is: visible ASCII only (our own links are
    // percent-encoded), so a control character or raw UTF-8 never becomes a 303 to nowhere.
    if !ours || !continue_to.bytes().all(|b| b.is_ascii_graphic()) {
        return state
            .settings
            .look
            .error_page(StatusCode::BAD_REQUEST, "Start again from the application.");
    }
    // The client's redirect URI, checked as the request itself will be: the form-action of
    // the page shown again on an error.
    let query = continue_to
        .strip_prefix("/oauth2/authorize?")
        .map(str::as_bytes);
    let redirect_uri = match query.map(params) {
        Some(Ok(q)) => state
            .authorization_request(&q)
            .await
            .ok()
            .map(|r| r.redirect_uri),
        _ => None,
    };
    let redirect_uri = redirect_uri.as_deref();
    let nonce = cookie(&headers, state.login_cookie_name());
    let csrf_ok = match (nonce, p.get("csrf")) {
        (Some(n), Some(t)) => state.settings.csrf.verify(&format!("login:{n}"), t),
        _ => false,
    };
    if !csrf_ok {
        return state.login_page(
            continue_to,
            redirect_uri,
            StatusCode::FORBIDDEN,
            Some("This form expired; sign in again."),
            None,
        );
    }
    let (Some(username), Some(password)) = (p.get("username"), p.get("password")) else {
        return state.login_page(
            continue_to,
            redirect_uri,
            StatusCode::BAD_REQUEST,
            Some("Enter a username and a password."),
            nonce,
        );
    };
    let client = state.client_info(peer, &headers);
    match state.auth.login(username, password, &client).await {
        Ok((token, a)) => {
            let mut res = see_other(continue_to);
            let max_age = a.session.expires_at - a.session.created_at;
            res.headers_mut().insert(
                header::SET_COOKIE,
                state.set_cookie(token.expose(), max_age),
            );
            res.headers_mut()
                .append(header::SET_COOKIE, state.device_cookie(&a.user));
            res
        }
        // The form again, with the mistake said on it: a page, answered 200 (a 401 would need
        // an authentication scheme, RFC 9110 §15.5.2, and browsers log it as an error).
        Err(LoginError::InvalidCredentials) => state.login_page_for(
            continue_to,
            redirect_uri,
            StatusCode::OK,
            Some("The username or the password is not right. Check them and try again."),
            nonce,
            Some(username),
        ),
        Err(LoginError::Throttled(wait)) => with_retry_after(
            state.login_page_for(
                continue_to,
                redirect_uri,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many attempts. Try again in {}.",
                    seconds(wait)
                )),
                nonce,
                Some(username),
            ),
            wait,
        ),
        Err(LoginError::Busy(wait)) => with_retry_after(
            state.login_page_for(
                continue_to,
                redirect_uri,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Too many people are signing in at this moment. Try again in a few seconds."),
                nonce,
                Some(username),
            ),
            wait,
        ),
        Err(LoginError::Unavailable) => state.settings.look.unavailable_page(),
    }
}

/// "1 second", "12 seconds", "2 minutes": a wait in words.
fn seconds(wait: i64) -> String {
    let wait = wait.max(1);
    match wait {
        1 => "1 second".into(),
        w if w < 120 => format!("{w} seconds"),
        w => format!("{} minutes", (w + 59) / 60),
    }
}

/// `res` with `Retry-After: wait` (seconds).
fn with_retry_after(mut res: Response, wait: i64) -> Response {
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
    res
}

/// `GET /auth/consents`: the caller's standing consents.
pub(crate) async fn consents<S: Stores>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = state.caller(&headers).await?;
    let list = state
        .service
        .consents_of(&caller.auth.user.id)
        .await
        .map_err(|_| Problem::unavailable())?;
    let out: Vec<Value> = list
        .iter()
        .map(|c| json!({"client_id": c.client_id, "scope": c.scope, "granted_at": c.granted_at}))
        .collect();
    let mut res = Json(out).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `DELETE /auth/consents/{client_id}`: withdraws a consent; the client's refresh tokens for
/// this person stop working at once, and it must ask again.
pub(crate) async fn withdraw_consent<S: Stores>(
    State(state): State<AppState<S>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = state.caller(&headers).await?;
    state.guard(&caller, &headers)?;
    let user = &caller.auth.user.id;
    if !state
        .service
        .withdraw_consent(user, &client_id)
        .await
        .map_err(|_| Problem::unavailable())?
    {
        return Err(Problem::not_found("no consent for this client"));
    }
    tracing::info!(target: "audit", event = "consent_withdrawn", user = %user, client = %Untrusted(&client_id));
    Ok(StatusCode::NO_CONTENT.into_response())
}
