//! The fingerprint of a request's body, which an idempotency key is bound to: the same
//! key with another body is a conflict. A batch item and a single debit with the same
//! fields have the same fingerprint.

use sha2::{Digest, Sha256};

use crate::domain::{Command, ForecastSetting};

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// A field that may be absent: nothing at all when it is, so a request of the first
/// edition (no member, no expiry) keeps the fingerprint its key was bound to.
fn optional(h: &mut Sha256, name: &[u8], value: Option<&[u8]>) {
    if let Some(v) = value {
        field(h, name);
        field(h, v);
    }
}

pub fn fingerprint(cmd: &Command) -> [u8; 16] {
    let mut h = Sha256::new();
    match cmd {
        Command::Debit {
            operation,
            quantity,
            metadata,
            member,
            ..
        } => {
            field(&mut h, b"debit");
            field(&mut h, operation.as_bytes());
            field(&mut h, &quantity.to_le_bytes());
            for (k, v) in metadata {
                field(&mut h, k.as_bytes());
                field(&mut h, v.as_bytes());
            }
            optional(&mut h, b"member", member.as_deref().map(str::as_bytes));
        }
        Command::PlaceHold {
            operation,
            quantity,
            ttl_ms,
            member,
            ..
        } => {
            field(&mut h, b"hold");
            field(&mut h, operation.as_bytes());
            field(&mut h, &quantity.to_le_bytes());
            field(&mut h, &ttl_ms.to_le_bytes());
            optional(&mut h, b"member", member.as_deref().map(str::as_bytes));
        }
        Command::Capture {
            hold_id, credits, ..
        } => {
            field(&mut h, b"capture");
            field(&mut h, &hold_id.to_le_bytes());
            field(&mut h, &credits.map_or(u64::MAX, |c| c.get()).to_le_bytes());
            field(&mut h, &[credits.is_some() as u8]);
        }
        Command::Release { hold_id, .. } => {
            field(&mut h, b"release");
            field(&mut h, &hold_id.to_le_bytes());
        }
        Command::ChangePlan { plan, .. } => {
            field(&mut h, b"plan");
            field(&mut h, plan.as_bytes());
        }
        Command::Purchase { pack, .. } => {
            field(&mut h, b"purchase");
            field(&mut h, pack.as_bytes());
        }
        Command::Grant {
            bucket,
            credits,
            reason,
            expires_at,
            ..
        } => {
            field(&mut h, b"grant");
            field(&mut h, bucket.name().as_bytes());
            field(&mut h, &credits.get().to_le_bytes());
            field(&mut h, reason.as_bytes());
            let at = expires_at.map(|t| t.millis().to_le_bytes());
            optional(&mut h, b"expires_at", at.as_ref().map(|b| &b[..]));
        }
        Command::Refund {
            debit_key,
            credits,
            reason,
            ..
        } => {
            field(&mut h, b"refund");
            field(&mut h, debit_key.as_bytes());
            let c = credits.map(|c| c.get().to_le_bytes());
            optional(&mut h, b"credits", c.as_ref().map(|b| &b[..]));
            field(&mut h, reason.as_bytes());
        }
        Command::SetAlerts {
            thresholds,
            forecast,
            ..
        } => {
            field(&mut h, b"alerts");
            optional(&mut h, b"thresholds", thresholds.as_deref());
            let f = match forecast {
                ForecastSetting::Config => [0, 0, 0, 0, 0],
                ForecastSetting::Off => [1, 0, 0, 0, 0],
                ForecastSetting::Hours(n) => {
                    let b = n.to_le_bytes();
                    [2, b[0], b[1], b[2], b[3]]
                }
            };
            field(&mut h, &f);
        }
        Command::SetMember { member, cap, .. } => {
            field(&mut h, b"member");
            field(&mut h, member.as_bytes());
            let c = cap.map(|c| c.get().to_le_bytes());
            optional(&mut h, b"cap", c.as_ref().map(|b| &b[..]));
        }
        Command::RemoveMember { member, .. } => {
            field(&mut h, b"member_removed");
            field(&mut h, member.as_bytes());
        }
    }
    h.finalize()[..16].try_into().expect("16 bytes")
}

/// The idempotency key a command carries (for purchases, the payment reference), if any.
pub fn key_of(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::Debit {
            idempotency_key, ..
        }
        | Command::PlaceHold {
            idempotency_key, ..
        }
        | Command::ChangePlan {
            idempotency_key, ..
        }
        | Command::Grant {
            idempotency_key, ..
        }
        | Command::Refund {
            idempotency_key, ..
        }
        | Command::SetAlerts {
            idempotency_key, ..
        }
        | Command::SetMember {
            idempotency_key, ..
        }
        | Command::RemoveMember {
            idempotency_key, ..
        } => Some(idempotency_key),
        Command::Capture {
            idempotency_key, ..
        }
        | Command::Release {
            idempotency_key, ..
        } => idempotency_key.as_deref(),
        Command::Purchase { payment_ref, .. } => Some(payment_ref),
    }
}
