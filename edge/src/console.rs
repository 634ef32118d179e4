//! The web console: the single-page app built from `web/` (`npm run build:console` writes it to
//! `edge/console/`, kept in the repository) and embedded in the binary, so `skillup up` and
//! `skillup serve edge` serve it at `/` with nothing else installed.
//!
//! Any `GET` or `HEAD` the route table does not know and that is not under `/api/` lands here:
//! a file of the build is answered as it is (pre-compressed brotli or gzip when the client takes
//! it), a path that names no file (`/library/42`) gets the app's shell so deep links work, and
//! a missing asset (`/_nuxt/gone.js`, anything with an extension) is a plain 404 — never the
//! shell, which a browser would try to run as a script. Hashed assets are cached as immutable,
//! everything else revalidates (`no-cache` with an `ETag`). The shell carries a
//! Content-Security-Policy that allows scripts from this origin and, by hash, the few inline
//! scripts the build writes — no `unsafe-inline`.

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use base64::{Engine as _, prelude::BASE64_STANDARD};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use rust_embed::Embed;
use sha2::{Digest, Sha256};

#[derive(Embed)]
#[folder = "console/"]
struct Files;

/// The app's shell, answered for every deep link.
const SHELL: &str = "200.html";
/// Where the build puts its content-hashed files.
const ASSETS: &str = "_nuxt/";

/// The embedded console.
#[derive(Debug, Clone)]
pub struct Console {
    /// The policy of every HTML answer.
    csp: HeaderValue,
}

impl Console {
    /// The console, if this binary holds a build of it.
    pub fn load() -> Option<Self> {
        Files::get(SHELL)?;
        let mut hashes: Vec<String> = Files::iter()
            .filter(|name| name.ends_with(".html"))
            .filter_map(|name| Files::get(&name))
            .flat_map(|file| inline_script_hashes(&String::from_utf8_lossy(&file.data)))
            .collect();
        hashes.sort();
        hashes.dedup();
        let scripts: String = hashes.iter().map(|h| format!(" '{h}'")).collect();
        let csp = format!(
            "default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; worker-src 'self'; \
             manifest-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; \
             frame-ancestors 'none'"
        );
        Some(Self { csp: HeaderValue::from_str(&csp).ok()? })
    }

    /// Whether a request is the console's: a read of a path no route claims, outside `/api/`.
    pub fn claims(method: &Method, path: &str) -> bool {
        (method == Method::GET || method == Method::HEAD)
            && !path.starts_with("/api/")
            && !matches!(path, "/api" | "/healthz" | "/readyz" | "/metrics")
    }

    /// The answer to a read of `parts.uri.path()`.
    pub fn serve(&self, parts: &Parts) -> Response {
        let path = parts.uri.path().trim_start_matches('/');
        let name = if path.is_empty() { "index.html" } else { path };
        // The pre-compressed twins are served by negotiation, not by name.
        let own = !name.ends_with(".gz") && !name.ends_with(".br") && !name.contains("..");
        let (name, file) = match own.then(|| Files::get(name)).flatten() {
            Some(file) => (name, file),
            None if name.starts_with(ASSETS) || last_segment_has_extension(name) || !own => {
                return not_found();
            }
            None => match Files::get(SHELL) {
                Some(file) => (SHELL, file),
                None => return not_found(),
            },
        };
        let encoding = negotiate(&parts.headers, name);
        let hash = file.metadata.sha256_hash();
        let suffix = encoding.map(|(_, ext)| ext).unwrap_or("id");
        let etag = format!("\"{}-{suffix}\"", hex(&hash[..12]));
        let immutable = name.starts_with(ASSETS);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if immutable {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            }),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, v);
        }
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if name.ends_with(".html") {
            headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            // Links in mail carry tokens in the address: they never leave this site in a Referer.
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
            headers.insert(
                "permissions-policy",
                HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
            );
        }
        let fresh = parts
            .headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim().trim_start_matches("W/") == etag);
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let body = match encoding.and_then(|(coding, ext)| {
            Files::get(&format!("{name}.{ext}")).map(|f| (coding, f.data))
        }) {
            Some((coding, data)) => {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
                data
            }
            None => file.data,
        };
        (StatusCode::OK, headers, Body::from(body.into_owned())).into_response()
    }
}

/// The best pre-compressed twin of `name` the client takes: (`Content-Encoding`, file suffix).
fn negotiate(headers: &HeaderMap, name: &str) -> Option<(&'static str, &'static str)> {
    let accepted: Vec<String> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!refused).then_some(coding)
        })
        .collect();
    [("br", "br"), ("gzip", "gz")].into_iter().find(|(coding, ext)| {
        accepted.iter().any(|a| a == coding) && Files::get(&format!("{name}.{ext}")).is_some()
    })
}

fn last_segment_has_extension(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|s| s.contains('.'))
}

fn not_found() -> Response {
    let mut res = (StatusCode::NOT_FOUND, "not found\n").into_response();
    res.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256-…` of every inline script a browser would run in `html` (import maps included;
/// JSON data blocks are never run and need none).
fn inline_script_hashes(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start + "<script".len()..];
        let Some(close) = after.find('>') else { break };
        let attrs = &after[..close];
        let body_start = &after[close + 1..];
        let Some(end) = body_start.find("</script>") else { break };
        let body = &body_start[..end];
        let data = attrs.contains("application/json") || attrs.contains("application/ld+json");
        if !attrs.contains("src=") && !data && !body.is_empty() {
            out.push(format!("sha256-{}", BASE64_STANDARD.encode(Sha256::digest(body.as_bytes()))));
        }
        rest = &body_start[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inline_scripts_that_run_are_hashed() {
        let html = r#"<script type="importmap">{"a":1}</script><script src="/x.js"></script>
            <script>window.x=1</script><script type="application/json" id="d">[1]</script>"#;
        let hashes = inline_script_hashes(html);
        assert_eq!(hashes.len(), 2, "{hashes:?}");
        let expected = BASE64_STANDARD.encode(Sha256::digest(b"window.x=1"));
        assert_eq!(hashes[1], format!("sha256-{expected}"));
    }

    #[test]
    fn a_path_with_an_extension_is_a_file_not_a_page() {
        assert!(last_segment_has_extension("_nuxt/a.js"));
        assert!(last_segment_has_extension("favicon.ico"));
        assert!(!last_segment_has_extension("library/01J8"));
        assert!(!last_segment_has_extension("verify-email"));
    }

    #[test]
    fn the_console_never_claims_the_api() {
        assert!(Console::claims(&Method::GET, "/library"));
        assert!(Console::claims(&Method::HEAD, "/"));
        assert!(!Console::claims(&Method::GET, "/api/nothing"));
        assert!(!Console::claims(&Method::GET, "/api"));
        assert!(!Console::claims(&Method::POST, "/library"));
        for ops in ["/healthz", "/readyz", "/metrics"] {
            assert!(!Console::claims(&Method::GET, ops), "{ops}");
        }
    }
}
