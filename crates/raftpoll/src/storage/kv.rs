//! The storage boundary: the few key/value operations the Raft stores need, on sled.
//!
//! Everything sled-specific lives here, so swapping the engine (redb is the
//! fallback named in the design) means rewriting this file only.

use super::StorageError;
use crate::codec::{decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Names of the trees (sled's keyspaces) in the node's database.
pub(crate) const LOGS: &str = "raft_logs";
pub(crate) const META: &str = "raft_meta";
pub(crate) const SM: &str = "raft_sm";
pub(crate) const LOCAL: &str = "local";
pub(crate) const PORT_NAMES: &str = "port_names";

/// One database, shared by the log store, the state machine store and the
/// node-local facts. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Kv {
    db: sled::Db,
    path: Arc<PathBuf>,
}

/// One keyspace of a [`Kv`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Tree {
    tree: sled::Tree,
    path: Arc<PathBuf>,
}

/// sled's page cache. Its default (1 GiB) would hold most of the log and
/// snapshot in memory; reads here are recent log entries (replication to a
/// follower a few entries behind) and rare snapshot loads, which a small
/// cache serves as well. It fills up on any busy node: at 32 MiB it was
/// about a seventh of a 20,000-device node's heap.
const CACHE_BYTES: u64 = 8 << 20;

impl Kv {
    /// Opens (or creates) the database in `dir`. Blocking: call from `spawn_blocking`.
    pub(crate) fn open_blocking(dir: &Path) -> Result<Kv, StorageError> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| StorageError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StorageError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Kv {
            db,
            path: Arc::new(path),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn tree(&self, name: &str) -> Result<Tree, StorageError> {
        let tree = self.db.open_tree(name).map_err(|e| self.io(e))?;
        Ok(Tree {
            tree,
            path: self.path.clone(),
        })
    }

    /// Makes every write done so far durable. The blocking fsync runs on the
    /// blocking pool so the Raft tasks keep running.
    pub(crate) async fn flush(&self) -> Result<(), StorageError> {
        let db = self.db.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StorageError::Task {
                path: (*path).clone(),
                message: e.to_string(),
            })?
            .map(|_| ())
            .map_err(|e| self.io(e))
    }

    /// [`Kv::flush`] on the calling thread.
    pub(crate) fn flush_blocking(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(|e| self.io(e))
    }

    fn io(&self, source: sled::Error) -> StorageError {
        StorageError::Io {
            path: (*self.path).clone(),
            source,
        }
    }
}

impl Tree {
    fn io(&self, source: sled::Error) -> StorageError {
        StorageError::Io {
            path: (*self.path).clone(),
            source,
        }
    }

    /// [`StorageError::TooNew`] if `too_new`, else [`StorageError::Corrupt`].
    pub(crate) fn error(&self, too_new: bool, what: &str, detail: impl ToString) -> StorageError {
        if too_new {
            StorageError::TooNew {
                path: (*self.path).clone(),
                what: what.to_string(),
                detail: detail.to_string(),
            }
        } else {
            self.corrupt(what, detail)
        }
    }

    pub(crate) fn corrupt(&self, what: &str, detail: impl ToString) -> StorageError {
        StorageError::Corrupt {
            path: (*self.path).clone(),
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree
            .get(key)
            .map_err(|e| self.io(e))?
            .map(|v| v.to_vec()))
    }

    pub(crate) fn set_raw(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.tree.insert(key, value).map_err(|e| self.io(e))?;
        Ok(())
    }

    pub(crate) fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.tree.remove(key).map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Reads and decodes a value; `what` names it in a corruption error.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StorageError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some).map_err(|e| self.corrupt(what, e)),
        }
    }

    pub(crate) fn set<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| self.corrupt("value to write", e))?;
        self.set_raw(key, &bytes)
    }

    /// Removes every key up to `last` (inclusive), `per_batch` keys per
    /// atomic batch, so that no single call holds sled for long.
    pub(crate) fn remove_up_to_in_batches(
        &self,
        last: &[u8],
        per_batch: usize,
    ) -> Result<(), StorageError> {
        loop {
            let mut batch = sled::Batch::default();
            let mut keys = 0;
            for item in self.tree.range(..=last).take(per_batch.max(1)) {
                let (k, _) = item.map_err(|e| self.io(e))?;
                batch.remove(k);
                keys += 1;
            }
            if keys == 0 {
                return Ok(());
            }
            self.tree.apply_batch(batch).map_err(|e| self.io(e))?;
        }
    }

    /// Calls `visit` with each raw key/value pair of `range`, in key order,
    /// one at a time (a range can be the whole log: nothing is collected).
    pub(crate) fn for_each_raw<R: RangeBounds<Vec<u8>>>(
        &self,
        range: R,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        for item in self.tree.range(range) {
            let (k, v) = item.map_err(|e| self.io(e))?;
            visit(&k, &v)?;
        }
        Ok(())
    }

    pub(crate) fn corrupt_key(&self, what: &str, key: &[u8]) -> StorageError {
        self.corrupt(what, format!("bad key of {} bytes", key.len()))
    }
}
