//! The web console: one page and its few files, compiled into the binary.
//!
//! `GET /` is the page and `GET /assets/{file}` one of [`ASSETS`] — exactly
//! those names, looked up in a fixed table, so no path (`..`, encoded
//! dots, a second segment) can reach anything else: an unknown name is a
//! JSON 404 like any other route's. These routes are public (the guard in
//! the parent module lets `GET /` and `GET /assets/*` through without a
//! token) because the files hold no data; everything the console shows it
//! fetches from the API with the token the person types in.
//!
//! # What the page must never do, and the headers that hold it to that
//!
//! Model and skill text is attacker-controlled: a web page the model read,
//! a skill's error message, a tool's result. The console builds its DOM
//! from text nodes only (its markdown renderer creates elements, never
//! parses HTML), and the headers make a slip fail closed instead of
//! running:
//!
//! - `Content-Security-Policy`: scripts, styles, images and connections
//!   from this origin only, no inline script or style, no plugins, no
//!   `<base>`, no form posts; `require-trusted-types-for 'script'` with no
//!   policy, so an `innerHTML = string` anywhere in the console throws in
//!   Chromium instead of parsing; `frame-ancestors 'none'`.
//! - `X-Frame-Options: DENY` (older browsers), `X-Content-Type-Options:
//!   nosniff`, `Referrer-Policy: no-referrer`, and the opener/resource
//!   policies that keep other origins' windows away from it.
//! - `Cache-Control: no-cache`: a browser revalidates, so the page and its
//!   script always come from the binary now running (they change together).
//!
//! The token lives in the tab's `sessionStorage` and goes only into
//! `Authorization` headers; never into a URL, which the gateway refuses
//! anyway.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::api::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("console/index.html"),
};

/// Every file under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("console/icon.svg"),
    },
];

/// The console's policy: see the module doc.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; object-src 'none'; \
     frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

const HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-cache"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

fn serve(asset: &Asset) -> Response {
    let mut r = asset.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    for (name, value) in HEADERS {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    r
}

/// `GET /`: the console's page.
pub async fn index() -> Response {
    serve(&INDEX)
}

/// `GET /assets/{file}`: one of the embedded files, by exact name.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => serve(a),
        None => ApiError::not_found(format!(
            "no console file `{}`; the console's files are {}",
            crate::text::escape_control(&file),
            ASSETS
                .iter()
                .map(|a| format!("/assets/{}", a.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_the_table_serves() {
        // Every `/assets/…` the page names is embedded, so a rename cannot
        // leave the console without its script.
        for part in INDEX.body.split("/assets/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "index.html names /assets/{name}, which is not embedded"
            );
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The policy would block them; a page that relied on them would be
        // broken, not unsafe — but it must not be written that way.
        let page = INDEX.body.to_ascii_lowercase();
        assert!(!page.contains("<script>"), "inline <script> in index.html");
        assert!(!page.contains(" style="), "inline style in index.html");
        // An event handler attribute: ` on` + letters + `=`.
        for (i, _) in page.match_indices(" on") {
            let rest = &page[i + 3..];
            let name_end = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            assert!(
                name_end == 0 || !rest[name_end..].starts_with('='),
                "an inline event handler in index.html: {}",
                &page[i..(i + 3 + name_end + 1).min(page.len())]
            );
        }
        for a in ASSETS {
            assert!(HeaderValue::from_str(a.content_type).is_ok());
        }
    }
}
