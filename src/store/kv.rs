//! The ordered key-value engine beneath the store: sled in the daemon, a fault-injecting
//! disk in the simulator (`tests/simulator.rs`). Everything above it — the overlay, the
//! checkpointer, replay at open, the key layout — is the same code in both, so the
//! simulator proves the store the daemon runs. (The write-ahead log is not in it: it has
//! files of its own, `segment_log.rs`, behind `LogFiles`.)
//!
//! The contract the store relies on, which sled 0.34 gives: each `insert` and `remove` is
//! atomic on its own; after a crash the engine holds every write before the last
//! successful `sync` and a prefix of the writes after it (sled recovers its log up to the
//! first torn or missing entry); nothing is ever reordered.

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::StorageError;

/// Keys and values in key order (or reverse), read as the iteration goes.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + 'a>;

pub trait Kv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    fn remove(&self, key: &[u8]) -> Result<(), StorageError>;
    /// The keys in `lo..hi`, ascending, or descending with `rev`.
    fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_>;
    /// Makes every write made before it durable.
    fn sync(&self) -> Result<(), StorageError>;
}

/// sled, with its flush completed by an `fdatasync` of its files: sled 0.34's `flush` is
/// `sync_file_range`, which does not survive a power cut on its own.
pub struct SledKv {
    db: sled::Db,
    /// sled's data file, fsynced after each flush.
    data_file: File,
    /// sled's blob directory and the blob files in it already fsynced (`sync_blobs`).
    blobs_dir: PathBuf,
    blobs_synced: Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

impl SledKv {
    /// Opens (or creates) the database in `dir`. Another process holding it is
    /// `StorageError::Locked`, after waiting up to 5 s for it to let go.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledKv, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Io(format!("creating {}: {e}", dir.display())))?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // The journal decides when to flush (every group in sync mode, every interval
            // in periodic mode); sled's own timer thread would only add unasked-for fsyncs
            // and hold the database open for a moment after we drop it.
            .flush_every_ms(None)
            // LowSpace (the default) rewrites live pages out of fragmented segments
            // eagerly; under a stream of small random updates that was most of the bytes
            // written.
            .mode(sled::Mode::HighThroughput);
        // sled 0.34's I/O threads can hold a dropped database's file lock for a moment
        // (spacejam/sled#1234): a reopen in the same process waits for it, up to 5 s.
        let locked = |e: &std::io::Error| e.to_string().contains("could not acquire lock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match config.open() {
                // sled reports it as `ErrorKind::Other`, recognisable by its message only.
                Err(sled::Error::Io(e)) if locked(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(sled::Error::Io(e)) if locked(&e) => {
                    return Err(StorageError::Locked {
                        path: dir.join("db").display().to_string(),
                    })
                }
                other => break other?,
            }
        };
        let data_path = dir.join("db");
        let data_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(|e| StorageError::Io(format!("opening {}: {e}", data_path.display())))?;
        Ok(SledKv {
            db,
            data_file,
            blobs_dir: dir.join("blobs"),
            blobs_synced: Mutex::default(),
        })
    }

    /// sled 0.34 writes any log item over a quarter segment (128 KiB) to a file of its own
    /// under `blobs/`, and never fsyncs it: the `db` file's fsync would then make durable
    /// a pointer to a blob the power could still take. After each flush (which writes
    /// every blob it points to), each blob file not synced yet is, then the directory.
    /// Only the checkpointer writes sled, one key at a time, so blobs are rare (a huge
    /// snapshot); when there are none this is one empty directory read.
    fn sync_blobs(&self) -> Result<(), StorageError> {
        let io = |what: &str, e: std::io::Error| StorageError::Io(format!("{what}: {e}"));
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("reading sled's blob directory", e)),
        };
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(|e| io("reading sled's blob directory", e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all().map_err(|e| io("fsync of a sled blob", e))?,
                    // sled removed it meanwhile (blob GC): nothing to make durable.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("opening a sled blob", e)),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blobs_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("fsync of sled's blob directory", e))?;
        }
        *synced = present;
        Ok(())
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.db.insert(key, value)?;
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.db.remove(key)?;
        Ok(())
    }
    fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_> {
        sled_range(&self.db, lo, hi, rev)
    }
    /// sled's flush, the blob files it wrote, then an fsync of its data file.
    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        self.sync_blobs()?;
        self.data_file
            .sync_data()
            .map_err(|e| StorageError::Io(format!("fsync of sled data file: {e}")))
    }
}

/// A range of a sled tree as a `KvIter` (also for tests that hold a `sled::Db` of their
/// own beneath an overlay).
pub fn sled_range(db: &sled::Db, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_> {
    let iter = db.range::<Vec<u8>, _>((lo, hi));
    let convert = |kv: sled::Result<(sled::IVec, sled::IVec)>| {
        kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
            .map_err(StorageError::from)
    };
    if rev {
        Box::new(iter.rev().map(convert))
    } else {
        Box::new(iter.map(convert))
    }
}

/// Every key of `kv` that starts with `prefix`, in order.
pub fn scan_prefix<'a>(kv: &'a dyn Kv, prefix: &[u8]) -> KvIter<'a> {
    let lo = Bound::Included(prefix.to_vec());
    let hi = match prefix_end(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    kv.range(lo, hi, false)
}

/// The first key after every key that starts with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SledKv {
        /// How many blob files the last sync saw.
        fn blobs_seen(&self) -> usize {
            self.blobs_synced.lock().unwrap().len()
        }
    }

    /// A write too big for sled's log (over 128 KiB) becomes a blob file, which sled does
    /// not fsync; `sync` does, and it survives a reopen.
    #[test]
    fn blob_files_are_synced_with_the_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 300 * 1024];
        {
            let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
            kv.insert(b"Cbig", &big).unwrap();
            kv.sync().unwrap();
            assert!(kv.blobs_seen() >= 1, "sled wrote no blob file");
            assert_eq!(
                kv.blobs_seen(),
                std::fs::read_dir(dir.path().join("blobs")).unwrap().count()
            );
            kv.sync().unwrap(); // nothing new: nothing to do
        }
        let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(kv.get(b"Cbig").unwrap(), Some(big));
    }

    #[test]
    fn prefixes_end_where_they_should() {
        assert_eq!(prefix_end(b"E"), Some(b"F".to_vec()));
        assert_eq!(prefix_end(&[b'E', 0xff]), Some(b"F".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
