//! API errors: `{"error": {"code", "message", "field"?, ...}}` with a stable code.

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use crate::actor::ActorError;
use crate::domain::{Bucket, Refusal};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub extra: Map<String, Value>,
    pub retry_after_s: Option<u64>,
    /// Headers the answer carries besides `Retry-After` (`Allow`, `WWW-Authenticate`).
    /// (Boxed: most errors carry none, and `Result<_, ApiError>` stays small.)
    pub headers: Option<Box<Vec<(&'static str, String)>>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            extra: Map::new(),
            retry_after_s: None,
            headers: None,
        }
    }
    /// 400 `invalid_request` about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
        e.field = Some(field.to_string());
        e
    }
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {what}"),
        )
    }
    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.insert(key.to_string(), value);
        self
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers
            .get_or_insert_with(Default::default)
            .push((name, value.into()));
        self
    }
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn body(&self) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), json!(self.code));
        e.insert("message".into(), json!(self.message));
        if let Some(f) = &self.field {
            e.insert("field".into(), json!(f));
        }
        for (k, v) in &self.extra {
            e.insert(k.clone(), v.clone());
        }
        json!({ "error": e })
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "account_not_found",
                "no such account",
            ),
            ActorError::Exists => ApiError::new(
                StatusCode::CONFLICT,
                "account_exists",
                "an account with this id exists",
            ),
            ActorError::IdempotencyConflict { key } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!("idempotency key {key:?} was used with a different request"),
            ),
            ActorError::Corrupt(msg) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_corrupt", msg)
            }
            ActorError::Overloaded => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "this account has too many requests waiting; retry later",
            )
            .retry_after(1),
            ActorError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the daemon is shutting down or the request was superseded",
            )
            .retry_after(1),
            ActorError::Refused(r) => r.into(),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::InsufficientCredits {
                required,
                available,
            } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                format!("this needs {required} credits and {available} are available"),
            )
            .with("required", json!(required.get()))
            .with("available", json!(available.get())),
            Refusal::UnknownOperation(op) => ApiError::invalid(
                "operation",
                format!("unknown operation {op:?} (see /v1/pricing)"),
            ),
            Refusal::UnknownPlan(p) => {
                ApiError::invalid("plan", format!("unknown plan {p:?} (see /v1/pricing)"))
            }
            Refusal::UnknownPack(p) => {
                ApiError::invalid("pack", format!("unknown pack {p:?} (see /v1/pricing)"))
            }
            Refusal::Overflow { field } => {
                ApiError::invalid(field, "the amount would overflow the account's books")
            }
            Refusal::PlanUnchanged(p) => ApiError::new(
                StatusCode::CONFLICT,
                "plan_unchanged",
                format!("the account is already on plan {p:?}"),
            ),
            Refusal::HoldNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "hold_not_found",
                format!("no hold h{id} on this account"),
            ),
            Refusal::HoldClosed(id) => ApiError::new(
                StatusCode::CONFLICT,
                "hold_closed",
                format!("hold h{id} was already captured, released or expired"),
            ),
            Refusal::CaptureExceedsHold { held, requested } => ApiError::invalid(
                "credits",
                format!("cannot capture {requested} credits from a hold of {held}"),
            ),
            Refusal::TooManyHolds { max } => ApiError::new(
                StatusCode::CONFLICT,
                "too_many_holds",
                format!("an account may have at most {max} open holds"),
            ),
            Refusal::TooManyBlocks { max } => ApiError::new(
                StatusCode::CONFLICT,
                "too_many_blocks",
                format!("an account may have at most {max} open promo blocks"),
            )
            .with("max", json!(max)),
            Refusal::TooManyMembers { max } => ApiError::new(
                StatusCode::CONFLICT,
                "too_many_members",
                format!("an account may have at most {max} members"),
            )
            .with("max", json!(max)),
            Refusal::ExpiryMismatch(b) => ApiError::invalid(
                "expires_at",
                if b == Bucket::Promo {
                    "a promo grant needs expires_at".to_string()
                } else {
                    format!("only promo credits expire; {} credits take no expires_at", b.name())
                },
            ),
            Refusal::ExpiryNotInFuture => {
                ApiError::invalid("expires_at", "expires_at must be in the future")
            }
            Refusal::DebitNotFound(key) => ApiError::new(
                StatusCode::NOT_FOUND,
                "debit_not_found",
                format!("no debit under idempotency key {key:?} on this account (keys are remembered for idempotency_ttl)"),
            ),
            Refusal::RefundExceedsDebit {
                refundable,
                requested,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "refund_exceeds_debit",
                format!("{requested} credits asked; {refundable} of this debit are left to refund"),
            )
            .with("refundable", json!(refundable.get())),
            Refusal::MemberNotFound(m) => ApiError::new(
                StatusCode::NOT_FOUND,
                "member_not_found",
                format!("no member {m:?} on this account"),
            ),
            Refusal::MemberCapReached {
                cap,
                used,
                required,
            } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "member_cap_reached",
                format!("this needs {required} credits and the member has used {used} of its cap of {cap} this period"),
            )
            .with("cap", json!(cap.get()))
            .with("used", json!(used.get()))
            .with("required", json!(required.get())),
        }
    }
}
