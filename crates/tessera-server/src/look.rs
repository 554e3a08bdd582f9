//! The frame of every page: the service's name and logo (`[pages]` in the configuration), the
//! one stylesheet, and the headers every page carries (a strict content policy, no framing, no
//! caching, no referrer to other sites).

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::{ConfigError, MAX_LOGO, PagesConfig, logo_type};

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where the pages' stylesheet is served (its content's version in the name: cached for good).
pub(crate) const STYLESHEET: &str = "/assets/tessera-2.css";

/// Where the service's logo is served, when it has one.
pub(crate) const LOGO: &str = "/assets/logo";

/// `GET /assets/tessera-2.css`: the pages' one stylesheet.
pub(crate) async fn stylesheet() -> Response {
    let mut res = include_str!("../assets/tessera.css").into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    res
}

/// How the pages present the service: its name, and its logo if it has one.
#[derive(Clone)]
pub struct Look {
    name: String,
    logo: Option<(&'static str, Bytes)>,
}

impl std::fmt::Debug for Look {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Look")
            .field("name", &self.name)
            .field("logo", &self.logo.as_ref().map(|(kind, b)| (kind, b.len())))
            .finish()
    }
}

impl Look {
    /// The look `[pages]` gives, its logo file read now (the configuration checked its kind
    /// and size).
    pub fn from_config(c: &PagesConfig) -> Result<Look, ConfigError> {
        let logo = match &c.logo {
            Some(path) => {
                let kind = logo_type(path).ok_or_else(|| {
                    ConfigError(format!("pages.logo: {} is not an image", path.display()))
                })?;
                // Read once, at most one byte past the limit: the bytes served are the bytes
                // measured (a file replaced since the configuration was checked, or one whose
                // metadata says 0 bytes, as /proc's do, is measured here).
                let cannot = |e: std::io::Error| {
                    ConfigError(format!("cannot read pages.logo {}: {e}", path.display()))
                };
                let file = std::fs::File::open(path).map_err(cannot)?;
                if !file.metadata().map_err(cannot)?.is_file() {
                    return Err(ConfigError(format!(
                        "pages.logo is not a file: {}",
                        path.display()
                    )));
                }
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(file, MAX_LOGO + 1),
                    &mut bytes,
                )
                .map_err(cannot)?;
                if bytes.len() as u64 > MAX_LOGO {
                    return Err(ConfigError(format!(
                        "pages.logo is at most {} KiB: {}",
                        MAX_LOGO / 1024,
                        path.display()
                    )));
                }
                Some((kind, Bytes::from(bytes)))
            }
            None => None,
        };
        Ok(Look {
            name: c.name.clone(),
            logo,
        })
    }

    /// Whether there is a logo to serve.
    pub(crate) fn has_logo(&self) -> bool {
        self.logo.is_some()
    }

    /// `GET /assets/logo`: the logo, which may not run anything even when opened on its own
    /// (an SVG is a document).
    pub(crate) fn logo(&self) -> Response {
        let Some((kind, bytes)) = &self.logo else {
            return crate::Problem::for_status(StatusCode::NOT_FOUND).into_response();
        };
        let mut res = bytes.clone().into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
        );
        res
    }

    /// An HTML page with the headers every page carries. `form_target` is an origin a form on
    /// the page may end up at (the consent form redirects to the client).
    pub(crate) fn page(
        &self,
        status: StatusCode,
        title: &str,
        body: &str,
        form_target: Option<&str>,
    ) -> Response {
        self.page_with(status, title, body, form_target, None)
    }

    /// [`Look::page`], with `images` an origin its images may come from (a client's logo).
    pub(crate) fn page_with(
        &self,
        status: StatusCode,
        title: &str,
        body: &str,
        form_target: Option<&str>,
        images: Option<&str>,
    ) -> Response {
        let name = esc(&self.name);
        // The logo is the tab's icon too (without one, the browser's own `/favicon.ico`
        // request is what the policy blocks).
        let (icon, logo) = if self.has_logo() {
            (
                format!("<link rel=\"icon\" href=\"{LOGO}\">"),
                format!("<img src=\"{LOGO}\" alt=\"\">"),
            )
        } else {
            (String::new(), String::new())
        };
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"color-scheme\" content=\"light dark\">\
             <link rel=\"stylesheet\" href=\"{STYLESHEET}\">{icon}<title>{} · {name}</title></head>\
             <body><header>{logo}{name}</header><main><h1>{}</h1>{body}</main></body></html>\n",
            esc(title),
            esc(title)
        );
        let own = self.has_logo().then_some("'self'");
        let img_src: Vec<&str> = own.into_iter().chain(images).collect();
        let csp = format!(
            "default-src 'none'; style-src 'self';{} form-action 'self'{}; frame-ancestors 'none'; \
             base-uri 'none'",
            if img_src.is_empty() {
                String::new()
            } else {
                format!(" img-src {};", img_src.join(" "))
            },
            form_target.map(|o| format!(" {o}")).unwrap_or_default()
        );
        let mut res = (status, html).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // `same-origin`: our own forms carry our `Origin` (with `no-referrer`, browsers send
        // `Origin: null`), and nothing of these pages' URLs reaches another site.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        res
    }

    /// A page that says what went wrong, in a sentence.
    pub(crate) fn error_page(&self, status: StatusCode, message: &str) -> Response {
        self.page(
            status,
            "Something went wrong",
            &format!("<p>{}</p>", esc(message)),
            None,
        )
    }

    /// The page for a store that does not answer.
    pub(crate) fn unavailable_page(&self) -> Response {
        self.error_page(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
    }
}

/// What a page says when a store does not answer.
pub(crate) const UNAVAILABLE: &str = "The service is unavailable; try again shortly.";
