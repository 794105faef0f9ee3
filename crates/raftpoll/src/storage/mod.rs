//! Persistent storage for Raft: log, vote and state machine.
//!
//! One sled database per node (the `data_dir`) holds Raft metadata (vote,
//! committed, last purged) and node-local facts (node id, cluster id, the
//! names of the ports it discovered); the Raft log is a directory of segment
//! files beside it and the last state machine snapshot a file (older
//! versions kept both in sled: the log is moved out at start, the snapshot
//! still read).
//! The state machine itself lives in memory; it is rebuilt at start from the
//! snapshot plus the committed log entries openraft re-applies.

mod kv;
mod log_files;
mod log_store;
mod port_names;
mod snapshot_file;
mod state_machine;

pub use log_store::LogStore;
pub use port_names::PortNames;
pub use snapshot_file::SnapshotData;
pub use state_machine::{SharedState, StateMachineStore, snapshot_data_in_format};

use kv::Kv;
use std::path::{Path, PathBuf};

/// Errors of the storage layer. Each names the database path.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("database I/O error in {path}: {source}")]
    Io { path: PathBuf, source: sled::Error },
    #[error("corrupt data in {path}: {what}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
    /// Written by a newer raftpoll (a newer format or entry kind).
    #[error("cannot read {what} in {path}: {detail}")]
    TooNew {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("cannot {what} {path}: {source}")]
    File {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("storage task for {path} failed: {message}")]
    Task { path: PathBuf, message: String },
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        std::io::Error::other(e)
    }
}

/// A node's database. Cheap to clone; the Raft stores are made from it.
#[derive(Clone)]
pub struct Store {
    kv: Kv,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub async fn open(dir: &Path) -> Result<Store, StorageError> {
        let dir = dir.to_path_buf();
        let path = dir.clone();
        let kv = tokio::task::spawn_blocking(move || Kv::open_blocking(&dir))
            .await
            .map_err(|e| StorageError::Task {
                path,
                message: e.to_string(),
            })??;
        Ok(Store { kv })
    }

    pub fn path(&self) -> &Path {
        self.kv.path()
    }

    /// The Raft log store and the state machine store (loaded from the last
    /// snapshot). Make them once per process.
    pub async fn raft_stores(&self) -> Result<(LogStore, StateMachineStore), StorageError> {
        let kv = self.kv.clone();
        let log = tokio::task::spawn_blocking(move || LogStore::open(&kv))
            .await
            .map_err(|e| StorageError::Task {
                path: self.kv.path().to_path_buf(),
                message: e.to_string(),
            })??;
        let sm = StateMachineStore::load(&self.kv, log.appended_bytes())?;
        Ok((log, sm))
    }

    /// The names of the ports this node discovered (never replicated).
    pub fn port_names(&self) -> Result<PortNames, StorageError> {
        PortNames::open(&self.kv)
    }

    /// A node-local fact (never replicated), e.g. this node's id.
    pub fn local_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.kv.tree(kv::LOCAL)?.get_raw(key.as_bytes())
    }

    /// Stores a node-local fact durably (flushed before returning).
    pub async fn local_set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.kv.tree(kv::LOCAL)?.set_raw(key.as_bytes(), value)?;
        self.kv.flush().await
    }
}

/// Opens the database in `dir` and makes the Raft stores from it.
pub async fn open(dir: &Path) -> Result<(Store, LogStore, StateMachineStore), StorageError> {
    let store = Store::open(dir).await?;
    let (log, sm) = store.raft_stores().await?;
    Ok((store, log, sm))
}
