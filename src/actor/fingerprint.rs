//! The fingerprint of a request's body, which an idempotency key is bound to: the same
//! key with another body is a conflict. A batch item and a single debit with the same
//! fields have the same fingerprint.

use sha2::{Digest, Sha256};

use crate::domain::Command;

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

pub fn fingerprint(cmd: &Command) -> [u8; 16] {
    let mut h = Sha256::new();
    match cmd {
        Command::Debit {
            operation,
            quantity,
            metadata,
            ..
        } => {
            field(&mut h, b"debit");
            field(&mut h, operation.as_bytes());
            field(&mut h, &quantity.to_le_bytes());
            for (k, v) in metadata {
                field(&mut h, k.as_bytes());
                field(&mut h, v.as_bytes());
            }
        }
        Command::PlaceHold {
            operation,
            quantity,
            ttl_ms,
            ..
        } => {
            field(&mut h, b"hold");
            field(&mut h, operation.as_bytes());
            field(&mut h, &quantity.to_le_bytes());
            field(&mut h, &ttl_ms.to_le_bytes());
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
            ..
        } => {
            field(&mut h, b"grant");
            field(&mut h, bucket.name().as_bytes());
            field(&mut h, &credits.get().to_le_bytes());
            field(&mut h, reason.as_bytes());
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
