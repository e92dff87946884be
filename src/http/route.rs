//! The route table: every path shape the API serves, the methods each takes, the scope a
//! token needs and the label metrics use, in one place. A path no shape matches is 404
//! `not_found`; a known path asked with a method it does not take is 405 with `Allow`.
//! `HEAD` is answered wherever `GET` is (hyper sends the head without the body).

use hyper::{Method, StatusCode};

use super::error::ApiError;
use crate::config::Scope;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Pricing,
    ListAccounts,
    CreateAccount,
    GetAccount,
    Debit,
    BatchDebits,
    ListHolds,
    PlaceHold,
    Capture,
    Release,
    Plan,
    Purchase,
    Grant,
    Refund,
    Alerts,
    PutMember,
    DeleteMember,
    Ledger,
    Usage,
    Forecast,
    Events,
    Console,
}

impl Route {
    /// The `route` label of the HTTP metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::OpenApi => "openapi",
            Route::Pricing => "pricing",
            Route::ListAccounts => "list_accounts",
            Route::CreateAccount => "create_account",
            Route::GetAccount => "get_account",
            Route::Debit => "debit",
            Route::BatchDebits => "batch_debits",
            Route::ListHolds => "list_holds",
            Route::PlaceHold => "hold",
            Route::Capture => "capture",
            Route::Release => "release",
            Route::Plan => "plan",
            Route::Purchase => "purchase",
            Route::Grant => "grant",
            Route::Refund => "refund",
            Route::Alerts => "alerts",
            Route::PutMember => "put_member",
            Route::DeleteMember => "delete_member",
            Route::Ledger => "ledger",
            Route::Usage => "usage",
            Route::Forecast => "forecast",
            Route::Events => "events",
            Route::Console => "console",
        }
    }

    /// The scope a token needs; `None`: no token needed (probes, metrics, the document,
    /// the console page, whose API calls carry the token).
    pub fn scope(self) -> Option<Scope> {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics | Route::OpenApi | Route::Console => {
                None
            }
            Route::Pricing
            | Route::ListAccounts
            | Route::GetAccount
            | Route::ListHolds
            | Route::Ledger
            | Route::Usage
            | Route::Forecast
            | Route::Events => Some(Scope::Read),
            Route::Debit
            | Route::BatchDebits
            | Route::PlaceHold
            | Route::Capture
            | Route::Release
            | Route::Refund => Some(Scope::Debit),
            Route::Grant => Some(Scope::Admin),
            Route::CreateAccount
            | Route::Plan
            | Route::Purchase
            | Route::Alerts
            | Route::PutMember
            | Route::DeleteMember => Some(Scope::Billing),
        }
    }

    /// Whether the route reads a request body.
    pub fn takes_body(self) -> bool {
        matches!(
            self,
            Route::CreateAccount
                | Route::Debit
                | Route::BatchDebits
                | Route::PlaceHold
                | Route::Capture
                | Route::Release
                | Route::Plan
                | Route::Purchase
                | Route::Grant
                | Route::Refund
                | Route::Alerts
                | Route::PutMember
        )
    }
}

/// A matched request: the route and the path's parameters, percent-decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched {
    pub route: Route,
    /// `{id}` of `/v1/accounts/{id}/...`, decoded, not yet validated.
    pub account: String,
    /// The path's second parameter, decoded, not yet validated: `{hold_id}` of
    /// `.../holds/{hold_id}/...`, `{debit_key}` of `.../debits/{debit_key}/refund`,
    /// `{member}` of `.../members/{member}`.
    pub sub: String,
}

/// The methods a path shape takes, each with its route.
fn shape(segs: &[&str]) -> Option<&'static [(Method, Route)]> {
    use Route::*;
    Some(match segs {
        ["healthz"] => &[(Method::GET, Healthz)],
        ["readyz"] => &[(Method::GET, Readyz)],
        ["metrics"] => &[(Method::GET, Metrics)],
        ["v1", "openapi.json"] => &[(Method::GET, OpenApi)],
        ["console"] | ["console", _] => &[(Method::GET, Console)],
        ["v1", "pricing"] => &[(Method::GET, Pricing)],
        ["v1", "accounts"] => &[(Method::GET, ListAccounts), (Method::POST, CreateAccount)],
        ["v1", "debits"] => &[(Method::POST, BatchDebits)],
        ["v1", "events"] => &[(Method::GET, Events)],
        ["v1", "accounts", _] => &[(Method::GET, GetAccount)],
        ["v1", "accounts", _, "debits"] => &[(Method::POST, Debit)],
        ["v1", "accounts", _, "debits", _, "refund"] => &[(Method::POST, Refund)],
        ["v1", "accounts", _, "alerts"] => &[(Method::PUT, Alerts)],
        ["v1", "accounts", _, "members", _] => {
            &[(Method::PUT, PutMember), (Method::DELETE, DeleteMember)]
        }
        ["v1", "accounts", _, "holds"] => &[(Method::GET, ListHolds), (Method::POST, PlaceHold)],
        ["v1", "accounts", _, "holds", _, "capture"] => &[(Method::POST, Capture)],
        ["v1", "accounts", _, "holds", _, "release"] => &[(Method::POST, Release)],
        ["v1", "accounts", _, "plan"] => &[(Method::PUT, Plan)],
        ["v1", "accounts", _, "purchases"] => &[(Method::POST, Purchase)],
        ["v1", "accounts", _, "grants"] => &[(Method::POST, Grant)],
        ["v1", "accounts", _, "ledger"] => &[(Method::GET, Ledger)],
        ["v1", "accounts", _, "usage"] => &[(Method::GET, Usage)],
        ["v1", "accounts", _, "forecast"] => &[(Method::GET, Forecast)],
        _ => return None,
    })
}

/// Routes a request: 404 for a path no route has, 405 (with `Allow`) for a method the
/// path does not take, 400 for a path segment that is not valid percent-encoded UTF-8.
pub fn resolve(method: &Method, path: &str) -> Result<Matched, ApiError> {
    let raw: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let Some(methods) = shape(&raw) else {
        return Err(ApiError::not_found(path));
    };
    let asked = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let Some(&(_, route)) = methods.iter().find(|(m, _)| m == asked) else {
        let mut allow: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
        if allow.contains(&"GET") {
            allow.push("HEAD");
        }
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} takes {}", allow.join(", ")),
        )
        .header("allow", allow.join(", ")));
    };
    let segment = |i: usize| -> Result<String, ApiError> {
        match raw.get(i) {
            None => Ok(String::new()),
            Some(s) => percent_decode(s, false).ok_or_else(|| {
                ApiError::invalid(
                    match (i, route) {
                        (2, _) => "account",
                        (_, Route::Refund) => "debit_key",
                        (_, Route::PutMember | Route::DeleteMember) => "member",
                        _ => "hold_id",
                    },
                    format!("path segment {s:?} is not valid percent-encoded UTF-8"),
                )
            }),
        }
    };
    let params = raw.len() > 2 && raw[1] == "accounts";
    Ok(Matched {
        route,
        account: if params { segment(2)? } else { String::new() },
        sub: if params { segment(4)? } else { String::new() },
    })
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in a query);
/// `None` for a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: Method, p: &str) -> Result<Route, u16> {
        resolve(&m, p)
            .map(|r| r.route)
            .map_err(|e| e.status.as_u16())
    }

    #[test]
    fn unknown_sub_paths_are_404_and_wrong_methods_405() {
        assert_eq!(route(Method::GET, "/v1/accounts/x/balance"), Err(404));
        assert_eq!(route(Method::POST, "/v1/accounts/x/refunds"), Err(404));
        assert_eq!(
            route(Method::POST, "/v1/accounts/x/debits/job-1/refund"),
            Ok(Route::Refund)
        );
        assert_eq!(
            route(Method::GET, "/v1/accounts/x/debits/job-1/refund"),
            Err(405)
        );
        assert_eq!(
            route(Method::DELETE, "/v1/accounts/x/members/brand-a"),
            Ok(Route::DeleteMember)
        );
        assert_eq!(route(Method::GET, "/v1/accounts/x/members"), Err(404));
        assert_eq!(route(Method::GET, "/v1/accounts/x/holds/h1/foo"), Err(404));
        assert_eq!(route(Method::DELETE, "/v1/accounts/x"), Err(405));
        assert_eq!(route(Method::HEAD, "/v1/accounts/x"), Ok(Route::GetAccount));
        assert_eq!(
            route(Method::GET, "/console/console.js"),
            Ok(Route::Console)
        );
        assert_eq!(route(Method::POST, "/console"), Err(405));
        assert_eq!(route(Method::GET, "/console/a/b"), Err(404));
        assert_eq!(
            route(Method::GET, "/v1/accounts/x/holds"),
            Ok(Route::ListHolds)
        );
        let e = resolve(&Method::DELETE, "/v1/accounts").unwrap_err();
        assert_eq!(
            e.headers.as_deref(),
            Some(&vec![("allow", "GET, POST, HEAD".to_string())])
        );
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        let m = resolve(&Method::GET, "/v1/accounts/org%3Ateam.1_a-B").unwrap();
        assert_eq!(m.account, "org:team.1_a-B");
        let m = resolve(&Method::GET, "/v1/accounts/a%2Fb").unwrap();
        assert_eq!(
            m.account, "a/b",
            "decoded, and then refused by the id check"
        );
        assert_eq!(route(Method::GET, "/v1/accounts/%zz"), Err(400));
        assert_eq!(route(Method::GET, "/v1/accounts/%ff"), Err(400));
    }
}
