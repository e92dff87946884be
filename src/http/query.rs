//! Query strings: decoding into pairs (a parameter given twice is a 400), integer
//! parameters with bounds, and refusing parameters a route does not take.

use super::error::ApiError;
use super::route;

/// `a=1&b=2` into pairs, percent-decoded; a malformed escape is a 400, and so is a
/// parameter given twice (which of the two would count is nobody's guess).
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |s: &str| route::percent_decode(s, true);
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (decode(k), decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(ApiError::invalid(
                    "query",
                    format!("malformed query parameter {p:?}"),
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(j, _)| j == k) {
            return Err(ApiError::invalid(
                k,
                format!("parameter {k:?} is given twice"),
            ));
        }
    }
    Ok(pairs)
}

/// The integer parameter `name`, if given, in `min..=max`; else a 400 naming it.
pub fn query_u64(
    pairs: &[(String, String)],
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                name,
                format!("{name} must be an integer from {min} to {max}"),
            )),
        },
    }
}

/// Refuses query parameters the route does not know, naming the first.
pub fn only_params(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) if allowed.is_empty() => Err(ApiError::invalid(
            k,
            format!("unknown parameter {k:?}; this route takes no query parameters"),
        )),
        Some((k, _)) => Err(ApiError::invalid(
            k,
            format!(
                "unknown parameter {k:?}; expected one of {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// `limit` of a paged read: 1 to `max`, `default` when not given.
pub fn page_limit(
    pairs: &[(String, String)],
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    Ok(query_u64(pairs, "limit", 1, max as u64)?.map_or(default, |n| n as usize))
}
