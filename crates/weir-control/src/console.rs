//! The web console: a handful of static files compiled into the binary and served at `/`
//! of the admin listener. It is a client of `/api/v1` like any other; nothing here reads
//! the store. No build step (ADR 0013): the files in `console/` are what the browser runs.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Where the page may load from and what it may do: only this origin, no inline script or
/// style, no `eval`, never inside a frame.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../console/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/app.js"),
    },
    Asset {
        name: "forms.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/forms.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../console/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../console/favicon.svg"),
    },
];

/// The console's routes: `/` and `/console/{file}`.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/console/{file}",
            get(|Path(f): Path<String>, h: HeaderMap| async move { serve(&f, &h) }),
        )
}

/// Each asset's ETag: a digest of its bytes, made once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = Sha256::digest(a.body);
                let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return guarded(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "no such console file; the console is at /",
            )
                .into_response(),
        );
    };
    let tag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut rsp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, ASSETS[i].content_type)],
            ASSETS[i].body,
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(tag) {
        rsp.headers_mut().insert(header::ETAG, v);
    }
    // Revalidated on each load (a 304 is cheap), so an upgrade is never half old, half new.
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    guarded(rsp)
}

/// The headers every console answer carries.
fn guarded(mut rsp: Response) -> Response {
    let h = rsp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_no_inline_code() {
        let html = std::str::from_utf8(ASSETS[0].body)
            .unwrap()
            .to_ascii_lowercase();
        // Only this origin: the CSP would block the rest, but the page must not ask.
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
        // No inline script or handler, no inline style.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script type=\"module\" src=\"/console/")
                .count()
        );
        assert!(
            !html.contains(" onload=") && !html.contains(" onclick=") && !html.contains("style=")
        );
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.body);
            assert!(
                !text.contains("eval(")
                    && !text.contains("new Function")
                    && !text.contains("innerHTML"),
                "{} builds code or markup from strings",
                a.name
            );
        }
    }
}
