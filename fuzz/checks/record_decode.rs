//! The on-disk record decoder: corrupt, truncated or wrong-version bytes must be a
//! `Corrupt` error naming the key, never a panic, for every record type.
//!
//! Shared by the fuzz target and by `tests/fuzz_corpus.rs`, which replays the corpus.
use creditsd::domain::{Account, Event};
use creditsd::store::codec::{decode, display_key, encode, Record};
use creditsd::store::records::{AccountRecordV2, EventRecordV3, FeedEntryRecordV2, IdemRecordV1};
use creditsd::store::{FeedEntry, IdemRecord, StorageError};

/// `R` is a stored record type, `T` what it stores.
fn check<R, T>(key: &[u8], bytes: &[u8])
where
    R: Record + Clone + PartialEq + std::fmt::Debug + Into<T> + for<'a> From<&'a T>,
{
    match decode::<R>(key, bytes) {
        // What decodes, taken to what it stores and back, must encode to something that
        // decodes to the same record.
        Ok(r) => {
            let back = R::from(&r.clone().into());
            assert_eq!(decode::<R>(key, &encode(&back)).unwrap(), r)
        }
        Err(StorageError::Corrupt { key: k, .. }) => assert_eq!(k, display_key(key)),
        Err(e) => panic!("decoding answered a non-corruption error: {e}"),
    }
}

pub fn run(data: &[u8]) {
    // The first byte picks a key shape, so keys with odd bytes are named too.
    let (key, bytes): (Vec<u8>, &[u8]) = match data.split_first() {
        Some((&n, rest)) if n & 1 == 1 => {
            let k = (n as usize >> 1).min(rest.len());
            (rest[..k].to_vec(), &rest[k..])
        }
        _ => (
            [b"Eacct".as_slice(), &[0], &7u64.to_be_bytes()].concat(),
            data.get(1..).unwrap_or_default(),
        ),
    };
    check::<EventRecordV3, Event>(&key, bytes);
    check::<AccountRecordV2, Account>(&key, bytes);
    check::<IdemRecordV1, IdemRecord>(&key, bytes);
    check::<FeedEntryRecordV2, FeedEntry>(&key, bytes);
    // The same bytes behind a valid checksum reach postcard itself.
    let mut framed = bytes.to_vec();
    framed.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    check::<EventRecordV3, Event>(&key, &framed);
    check::<AccountRecordV2, Account>(&key, &framed);
    check::<IdemRecordV1, IdemRecord>(&key, &framed);
    check::<FeedEntryRecordV2, FeedEntry>(&key, &framed);
}
