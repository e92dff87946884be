//! Bearer tokens: the config holds the SHA-256 of each token and its scopes
//! (`config::Scope`); a request's token is hashed and compared with every configured hash
//! in constant time.

use hyper::StatusCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::{Scope, TokenConfig};

struct Token {
    name: String,
    sha256: [u8; 32],
    scopes: Vec<Scope>,
}

pub struct Auth {
    tokens: Vec<Token>,
}

pub enum Denied {
    /// No token, or not one of ours: 401.
    Unauthenticated,
    /// A valid token without the scope: 403.
    Forbidden { token: String, scope: Scope },
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Auth {
    pub fn new(tokens: &[TokenConfig]) -> Auth {
        Auth {
            tokens: tokens
                .iter()
                .map(|t| Token {
                    name: t.name.clone(),
                    sha256: hex::decode(&t.sha256)
                        .expect("validated")
                        .try_into()
                        .expect("validated: 32 bytes"),
                    scopes: t.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
                })
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks an `Authorization` header value for `scope`. With no tokens configured every
    /// request passes (the daemon then only listens on loopback). `admin` implies all.
    pub fn check(&self, header: Option<&[u8]>, scope: Scope) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        let token = header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .ok_or(Denied::Unauthenticated)?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        // Compare against every token, so timing does not tell which one matched.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let t = found.ok_or(Denied::Unauthenticated)?;
        if t.scopes.contains(&scope) || t.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(Denied::Forbidden {
                token: t.name.clone(),
                scope,
            })
        }
    }

    /// `check` as the API answers it: 401 (with `WWW-Authenticate`) or 403 naming the
    /// token and the scope it lacks.
    pub fn authorize(&self, header: Option<&[u8]>, scope: Scope) -> Result<(), ApiError> {
        match self.check(header, scope) {
            Ok(()) => Ok(()),
            Err(Denied::Unauthenticated) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` is required",
            )
            .header("www-authenticate", "Bearer realm=\"creditsd\"")),
            Err(Denied::Forbidden { token, scope }) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token {token:?} lacks the {:?} scope", scope.name()),
            )),
        }
    }
}
