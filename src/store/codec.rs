//! The on-disk record format: a format version byte, the postcard bytes, and a CRC32 of
//! both (little-endian). A record that fails any check is a `Corrupt` error naming its
//! key, never a panic and never a silent skip.

use serde::{de::DeserializeOwned, Serialize};

use super::StorageError;

/// The first layout of a type (still written for idempotency records and cursors).
pub const FORMAT_V1: u8 = 1;
/// The second layout of a type: events since captures name their hold's operation and
/// quantity; accounts, feed entries and book totals since promo credits (SPEC second
/// edition).
pub const FORMAT_V2: u8 = 2;
/// Events since the SPEC's second edition: promo blocks, refunds, members, alert settings.
pub const FORMAT_V3: u8 = 3;

/// A type stored in a record: the version it is written in today, and how it reads the
/// layouts it was written in before (`legacy.rs`), so data of earlier releases opens.
/// Only store types implement it (`records.rs`, and the store's own `BookTotals` and
/// cursors); the domain is converted to and from them.
pub trait Record: Serialize + DeserializeOwned {
    const VERSION: u8 = FORMAT_V1;
    /// Decodes the postcard bytes of an older `version`; `None` if there never was one.
    fn decode_older(version: u8, bytes: &[u8]) -> Option<postcard::Result<Self>> {
        let _ = (version, bytes);
        None
    }
}

pub fn encode<T: Record>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(T::VERSION);
    let out =
        postcard::to_extend(value, out).expect("invariant: in-memory values always serialize");
    with_crc(out)
}

/// Seals a record (its version byte first): appends the CRC32 of all of it.
pub fn with_crc(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Opens a sealed record: checks its length and CRC32, and answers its version byte and
/// the bytes after it; a damaged record is `Corrupt`, naming its key.
pub fn unseal<'a>(key: &[u8], bytes: &'a [u8]) -> Result<(u8, &'a [u8]), StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: display_key(key),
        reason,
    };
    if bytes.len() < 5 {
        return Err(corrupt(format!(
            "record of {} bytes is shorter than its header and checksum",
            bytes.len()
        )));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let actual = crc32fast::hash(body);
    if expected != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {expected:08x}, computed {actual:08x})"
        )));
    }
    Ok((body[0], &body[1..]))
}

pub fn decode<T: Record>(key: &[u8], bytes: &[u8]) -> Result<T, StorageError> {
    let (v, body) = unseal(key, bytes)?;
    let decoded = if v == T::VERSION {
        postcard::from_bytes(body)
    } else {
        match T::decode_older(v, body) {
            Some(r) => r,
            None => {
                return Err(StorageError::Corrupt {
                    key: display_key(key),
                    reason: format!("unknown record format version {v}"),
                })
            }
        }
    };
    decoded.map_err(|e| StorageError::Corrupt {
        key: display_key(key),
        reason: format!("undecodable v{v} record: {e}"),
    })
}

impl Record for u64 {}
impl Record for i64 {}

/// A key as people read it: printable bytes as they are, others as `\xNN`, so a log line
/// names the account and sequence of a bad record.
pub fn display_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len() + 8);
    for (i, &b) in key.iter().enumerate() {
        if b.is_ascii_graphic() {
            s.push(b as char);
        } else if b == 0 && key.len() >= i + 9 {
            // account ‖ 0 ‖ u64 big-endian: show the number.
            let n = u64::from_be_bytes(key[i + 1..i + 9].try_into().expect("8 bytes"));
            s.push_str(&format!("#{n}"));
            if i + 9 < key.len() {
                s.push_str(&display_key(&key[i + 9..]));
            }
            return s;
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Account, Event, Pricing, Ts};
    use crate::store::records::EventRecordV3;
    use proptest::prelude::*;

    fn round_trip(ev: &Event) -> Event {
        let bytes = encode(&EventRecordV3::from(ev));
        decode::<EventRecordV3>(b"Ea", &bytes).unwrap().into()
    }

    #[test]
    fn round_trip_of_an_event() {
        let p = Pricing::standard();
        let ev = Account::create("a", "growth", Ts(0), Ts(5), &p).unwrap();
        assert_eq!(round_trip(&ev), ev);
    }

    #[test]
    fn corruption_is_an_error_naming_the_key() {
        let mut bytes = encode(&42u64);
        bytes[1] ^= 0xff;
        let key = [b"Eacct\0".as_slice(), &7u64.to_be_bytes()].concat();
        let err = decode::<u64>(&key, &bytes).unwrap_err().to_string();
        assert!(err.contains("Eacct#7"), "{err}");
        assert!(err.contains("checksum"), "{err}");
        assert!(decode::<u64>(b"k", &[1, 2])
            .unwrap_err()
            .to_string()
            .contains("shorter"));
        let mut v2 = encode(&42u64);
        v2[0] = 9;
        assert_eq!(FORMAT_V1, 1);
        let v2 = with_crc(v2[..v2.len() - 4].to_vec());
        assert!(decode::<u64>(b"k", &v2)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<EventRecordV3>(b"k", &bytes);
        }

        #[test]
        fn decode_encode_is_identity(id in "[a-z]{1,8}", plan in 0usize..4, at in 0i64..4_000_000_000_000) {
            let p = Pricing::standard();
            let plan = p.plans.keys().nth(plan).unwrap().clone();
            let ev = Account::create(&id, &plan, Ts(at), Ts(at), &p).unwrap();
            prop_assert_eq!(round_trip(&ev), ev);
        }
    }
}
