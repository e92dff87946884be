//! `GET /console` through the real daemon: the page and its two assets with their content
//! types and the Content-Security-Policy, without a token even when tokens are
//! configured, and 404 for any other path under it; and the answers the page's scope
//! probes rely on. The page in a browser is tested by `tests/console/` (selenium), run
//! from `tests/python.rs`.

mod common;

use common::*;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'";

fn fetch(d: &Daemon, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    let res = match ureq::request(method, &d.url(path)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let status = res.status();
    let headers = res
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = res.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    (status, headers, res.into_string().unwrap())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
}

#[test]
fn the_console_is_served_with_its_policy_and_nothing_else_under_it() {
    // With a token configured: the page is public, the API behind it is not.
    let sha = creditsd::http::auth::hash_token("console-test-token");
    let d = Daemon::start(&format!(
        "[[auth.tokens]]\nname = \"t\"\nsha256 = \"{sha}\"\nscopes = [\"read\"]\n"
    ));
    assert_eq!(d.get("/v1/pricing").0, 401);

    let (s, h, body) = fetch(&d, "GET", "/console");
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "content-security-policy"), CSP);
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert!(body.contains(r#"<script type="module" src="/console/console.js"></script>"#));
    assert!(body.contains(r#"href="/console/console.css""#));
    assert!(body.contains(r#"data-testid="account-id""#));

    for (path, ctype, needle) in [
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "fetch(",
        ),
        ("/console/console.css", "text/css; charset=utf-8", ":root"),
    ] {
        let (s, h, body) = fetch(&d, "GET", path);
        assert_eq!(s, 200, "{path}");
        assert_eq!(header(&h, "content-type"), ctype, "{path}");
        assert_eq!(header(&h, "content-security-policy"), CSP, "{path}");
        assert_eq!(header(&h, "x-content-type-options"), "nosniff", "{path}");
        assert!(body.contains(needle), "{path}");
    }
    let (s, h, body) = fetch(&d, "HEAD", "/console");
    assert_eq!((s, body.as_str()), (200, ""));
    assert_eq!(header(&h, "content-security-policy"), CSP);

    for path in [
        "/console/app.js",
        "/console/console.js.map",
        "/console/a/b",
        "/console/%2e%2e/Cargo.toml",
        "/consoles",
    ] {
        let (s, _, body) = fetch(&d, "GET", path);
        assert_eq!(s, 404, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}");
    }
    let (s, h, _) = fetch(&d, "POST", "/console");
    assert_eq!(s, 405);
    assert_eq!(header(&h, "allow"), "GET, HEAD");
    let (s, _, body) = fetch(&d, "GET", "/console?x=1");
    assert_eq!(s, 400, "{body}");
}

/// What the page's scope probes rely on: each form's route sent an empty body answers 403
/// when the token lacks the route's scope and 400 when it has it (the scope is checked
/// before the body is read), and writes nothing.
#[test]
fn the_consoles_scope_probes_answer_403_without_the_scope_and_400_with_it() {
    let token = |name: &str, scopes: &str| {
        let sha = creditsd::http::auth::hash_token(&format!("console-{name}"));
        format!("[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{sha}\"\nscopes = [{scopes}]\n")
    };
    let d = Daemon::start(&format!(
        "{}{}{}",
        token("reader", "\"read\""),
        token("debitor", "\"debit\", \"read\""),
        token("admin", "\"admin\""),
    ));
    let call = |name: &str, method: &str, path: &str, body: &str| -> (u16, Value) {
        let req = ureq::request(method, &d.url(path))
            .set("Authorization", &format!("Bearer console-{name}"))
            .set("Content-Type", "application/json");
        let res = match req.send_string(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        (
            res.status(),
            serde_json::from_str(&res.into_string().unwrap()).unwrap(),
        )
    };
    let (s, _) = call("admin", "POST", "/v1/accounts", r#"{"id": "probed"}"#);
    assert_eq!(s, 201);
    let seq = call("reader", "GET", "/v1/accounts/probed", "").1["seq"].clone();
    let routes = [
        ("POST", "/v1/accounts/probed/grants"),
        ("POST", "/v1/accounts/probed/debits/console-probe/refund"),
        ("POST", "/v1/accounts/probed/purchases"),
        ("PUT", "/v1/accounts/probed/plan"),
    ];
    let answers = |name: &str| -> Vec<u16> {
        routes
            .iter()
            .map(|(m, p)| {
                let (s, v) = call(name, m, p, "{}");
                let want = if s == 403 {
                    "forbidden"
                } else {
                    "invalid_request"
                };
                assert_eq!(v["error"]["code"], want, "{name} {m} {p}: {v}");
                s
            })
            .collect()
    };
    assert_eq!(answers("reader"), [403, 403, 403, 403]);
    assert_eq!(answers("debitor"), [403, 400, 403, 403]);
    assert_eq!(answers("admin"), [400, 400, 400, 400]);
    assert_eq!(
        call("reader", "GET", "/v1/accounts/probed", "").1["seq"],
        seq
    );
}
