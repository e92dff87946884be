//! The on-disk record decoder: corrupt, truncated or wrong-version bytes must be a
//! `Corrupt` error naming the key, never a panic, for every record type.
//!
//! Shared by the fuzz target and by `tests/fuzz_corpus.rs`, which replays the corpus.
use creditsd::domain::{Account, Event};
use creditsd::store::codec::{decode, display_key, encode, Record};
use creditsd::store::{FeedEntry, IdemRecord, StorageError};

fn check<T: Record + PartialEq + std::fmt::Debug>(key: &[u8], bytes: &[u8]) {
    match decode::<T>(key, bytes) {
        // What decodes must encode back to something that decodes to the same value.
        Ok(v) => assert_eq!(decode::<T>(key, &encode(&v)).unwrap(), v),
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
    check::<Event>(&key, bytes);
    check::<Account>(&key, bytes);
    check::<IdemRecord>(&key, bytes);
    check::<FeedEntry>(&key, bytes);
    // The same bytes behind a valid checksum reach postcard itself.
    let mut framed = bytes.to_vec();
    framed.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    check::<Event>(&key, &framed);
    check::<Account>(&key, &framed);
    check::<IdemRecord>(&key, &framed);
    check::<FeedEntry>(&key, &framed);
}
