//! The store format marker: which format a data directory is in, so that a build never
//! misreads a store written by a newer release, and knows what an older one holds.
//!
//! The marker is the one-byte key `V` in sled, a `records::StoreFormatRecordV1` holding
//! the store's format number; a store without it is format 1 (`UNMARKED`). Opening the
//! store (`SledStore::open_on`) reads it first of all, straight from the `Kv`, before the
//! log is replayed: a format newer than `STORE_FORMAT` is refused
//! (`StorageError::Newer`) with nothing written. An older one is upgraded in place once
//! the log is replayed: the marker is written through the overlay and synced, because
//! every older record layout stays readable (`legacy.rs`). `creditsd migrate`
//! (`migrate.rs`) rewrites the records of older layouts into today's, when wanted.

use std::path::Path;

use super::codec::{decode, encode, unseal, FORMAT_V1};
use super::kv::Kv;
use super::records::StoreFormatRecordV1;
use super::StorageError;

/// The store format this build writes, and the newest it reads. Each number, and what a
/// store of it holds:
///
/// - 1: no marker (every release before the segment log): events and every other key in
///   sled, and the write-ahead log as `L‖n` group records in sled.
/// - 2: the write-ahead log in segment files under `<data>/log/` (`segment_log.rs`);
///   events and every other key in sled, as in 1. (Its builds wrote no marker, so such a
///   store reads as 1, which opens the same way.)
/// - 3: events stay in the log where they were written, and sled keeps runs saying where
///   (`runs.rs`); an earlier release's events in sled are read beside them until
///   `creditsd migrate` moves them into the log.
/// - 4: idempotency records in the blocks of the idempotency index (`idem_index.rs`),
///   not a sled key each; an earlier release's records are read beside them until they
///   expire, or until `creditsd migrate` moves them into blocks. (A build of format 3
///   would not see the blocks, so it must refuse such a store.)
///
/// A new format is this number plus one, and a line above saying what changed.
pub const STORE_FORMAT: u32 = 4;

/// The format of a store without a marker.
pub const UNMARKED: u32 = 1;

/// The marker's key: one byte, and no other key starts with `V`.
pub const FORMAT_KEY: [u8; 1] = [b'V'];

/// The marker record of `format`.
pub fn marker(format: u32) -> Vec<u8> {
    encode(&StoreFormatRecordV1 { format })
}

/// The format a marker's bytes say. A marker of a record layout newer than this build's is
/// read for its leading `format`, which every layout keeps first.
pub fn parse(bytes: &[u8]) -> Result<u32, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: "V".into(),
        reason,
    };
    let (version, body) = unseal(&FORMAT_KEY, bytes)?;
    let format = if version > FORMAT_V1 {
        postcard::take_from_bytes::<u32>(body)
            .map(|(format, _)| format)
            .map_err(|e| corrupt(format!("undecodable v{version} store format marker: {e}")))?
    } else {
        decode::<StoreFormatRecordV1>(&FORMAT_KEY, bytes)?.format
    };
    if format < UNMARKED {
        return Err(corrupt(format!("store format {format} does not exist")));
    }
    Ok(format)
}

/// The format the store in `kv` is in (`UNMARKED` without a marker), read from sled
/// itself: what opening sees before the log is replayed.
pub fn read(kv: &dyn Kv) -> Result<u32, StorageError> {
    match kv.get(&FORMAT_KEY)? {
        Some(bytes) => parse(&bytes),
        None => Ok(UNMARKED),
    }
}

/// Answers the format of the store in `kv`, or refuses one newer than this build's
/// (`StorageError::Newer`). It only reads: call it before anything writes.
pub fn refuse_newer(kv: &dyn Kv) -> Result<u32, StorageError> {
    let found = read(kv)?;
    if found > STORE_FORMAT {
        return Err(StorageError::Newer {
            found,
            known: STORE_FORMAT,
            path: None,
        });
    }
    Ok(found)
}

/// `refuse_newer` for the store in the data directory `dir`, which the refusal names.
pub fn refuse_newer_in(kv: &dyn Kv, dir: &Path) -> Result<u32, StorageError> {
    refuse_newer(kv).map_err(|e| match e {
        StorageError::Newer { found, known, .. } => StorageError::Newer {
            found,
            known,
            path: Some(dir.display().to_string()),
        },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{encode, with_crc};
    use crate::store::kv::SledKv;
    use crate::store::SledStore;

    #[test]
    fn markers_read_as_their_format_and_a_newer_one_is_refused() {
        assert_eq!(parse(&marker(STORE_FORMAT)).unwrap(), STORE_FORMAT);
        assert_eq!(parse(&marker(1)).unwrap(), 1);
        assert!(parse(&marker(0))
            .unwrap_err()
            .to_string()
            .contains("format 0"));
        let mut damaged = marker(2);
        damaged[1] ^= 1;
        let e = parse(&damaged).unwrap_err().to_string();
        assert!(e.contains("key V") && e.contains("checksum"), "{e}");
        // A later layout of the marker (version 2, with more after `format`) still says
        // its format.
        let mut later = vec![2];
        later.extend(postcard::to_stdvec(&(7u32, "more fields", 99u64)).unwrap());
        assert_eq!(parse(&with_crc(later)).unwrap(), 7);

        let e = match refuse_newer_in_bytes(&marker(STORE_FORMAT + 1)) {
            Err(e) => e.to_string(),
            Ok(f) => panic!("format {f} opened"),
        };
        assert!(e.contains("/data/x") && e.contains("newer creditsd"), "{e}");
        assert!(
            e.contains(&format!("format {}", STORE_FORMAT + 1))
                && e.contains(&format!("formats 1 to {STORE_FORMAT}"))
                && e.contains("nothing was changed"),
            "{e}"
        );
        assert_eq!(
            refuse_newer_in_bytes(&marker(STORE_FORMAT)).unwrap(),
            STORE_FORMAT
        );
    }

    /// A store of a newer format is refused at open, with nothing written to it; an
    /// unmarked one is marked at open, durably.
    #[test]
    fn open_refuses_a_newer_format_and_marks_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
            kv.insert(b"Cwebhook", &encode(&7u64)).unwrap();
            kv.sync().unwrap();
        }
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            let formats = (store.format_at_open(), store.format().unwrap());
            assert_eq!(formats, (1, STORE_FORMAT));
            assert!(!store.mark_format().unwrap(), "marked once");
        }
        {
            let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(crate::store::format::read(&kv).unwrap(), STORE_FORMAT);
            kv.insert(&FORMAT_KEY, &crate::store::format::marker(STORE_FORMAT + 1))
                .unwrap();
            kv.sync().unwrap();
        }
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
        let err = match SledStore::open(dir.path(), 1 << 20) {
            Err(e) => e,
            Ok(_) => panic!("a store of a newer format opened"),
        };
        let named = Some(dir.path().display().to_string());
        assert!(
            matches!(err, StorageError::Newer { found, known, ref path }
                if found == STORE_FORMAT + 1 && known == STORE_FORMAT && path == &named),
            "{err}"
        );
        assert!(
            !dir.path().join("log").exists(),
            "the log directory was made"
        );
    }

    /// `refuse_newer_in` over a store holding only the marker `bytes`.
    fn refuse_newer_in_bytes(bytes: &[u8]) -> Result<u32, StorageError> {
        struct One(Vec<u8>);
        impl Kv for One {
            fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
                Ok((key == FORMAT_KEY).then(|| self.0.clone()))
            }
            fn insert(&self, _: &[u8], _: &[u8]) -> Result<(), StorageError> {
                panic!("refusing writes nothing")
            }
            fn remove(&self, _: &[u8]) -> Result<(), StorageError> {
                panic!("refusing writes nothing")
            }
            fn range(
                &self,
                _: std::ops::Bound<Vec<u8>>,
                _: std::ops::Bound<Vec<u8>>,
                _: bool,
            ) -> super::super::kv::KvIter<'_> {
                Box::new(std::iter::empty())
            }
            fn sync(&self) -> Result<(), StorageError> {
                panic!("refusing writes nothing")
            }
        }
        refuse_newer_in(&One(bytes.to_vec()), Path::new("/data/x"))
    }
}
