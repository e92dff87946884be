//! `GET /console`: the operators' page (`console/` at the repository's root), compiled
//! into the binary, so it needs no build step and nothing from outside. The page is
//! public; the `/v1` calls its script makes carry the bearer token the user gives it.
//! Every answer here carries a Content-Security-Policy that allows only this origin and
//! no inline script or style, `nosniff`, and `Cache-Control: no-cache` (the assets change
//! with the binary, and their names do not).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use super::error::ApiError;

pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'";

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../console/index.html"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../../console/console.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../../console/console.css"),
};

/// The file at `path` (`/console`, `/console/`, `/console/console.js`,
/// `/console/console.css`); any other path under `/console/` is 404 `not_found`.
pub fn asset(path: &str) -> Result<&'static Asset, ApiError> {
    match path {
        "/console" | "/console/" | "/console/index.html" => Ok(&INDEX),
        "/console/console.js" => Ok(&SCRIPT),
        "/console/console.css" => Ok(&STYLE),
        _ => Err(ApiError::not_found(path)),
    }
}

pub fn response(a: &'static Asset) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(a.body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_found_and_nothing_else() {
        assert!(asset("/console")
            .unwrap()
            .content_type
            .starts_with("text/html"));
        assert!(asset("/console/console.js")
            .unwrap()
            .content_type
            .starts_with("text/javascript"));
        assert!(asset("/console/console.css")
            .unwrap()
            .content_type
            .starts_with("text/css"));
        for p in [
            "/console/x.js",
            "/console/../console.js",
            "/console/console.js/",
        ] {
            assert_eq!(asset(p).err().unwrap().status.as_u16(), 404, "{p}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline <script{open}>");
        }
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "a style attribute");
        for (i, _) in html.match_indices(" on") {
            let name: String = html[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let rest = &html[i + 3 + name.len()..];
            assert!(
                name.is_empty() || !rest.starts_with('='),
                "an inline event handler on{name}="
            );
        }
    }
}
