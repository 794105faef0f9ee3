//! Helpers shared by the storage tests: open a database once a previous
//! handle has let go of it, append to the log and apply to the state machine
//! the way openraft does, waiting for the flush.
// Each test file uses some of these.
#![allow(dead_code)]

use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use raftpoll::raft_types::{Entry, TypeConfig};
use raftpoll::storage::{self, LogStore, StateMachineStore};

/// Appends `entries` and waits until they are flushed.
pub async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("callback called").expect("flushed");
}

/// Applies `entries` to the state machine.
pub async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply");
}

/// [`storage::open`] once the previous handle's background threads have
/// let go of the database's file lock; any other outcome is returned.
pub async fn open_when_unlocked(
    path: &std::path::Path,
) -> Result<(storage::Store, LogStore, StateMachineStore), storage::StorageError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match storage::open(path).await {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Opens the sled database at `path` once the previous handle's background
/// threads have let go of its file lock (they outlive the drop briefly).
pub fn sled_when_unlocked(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("sled database {} still locked: {e}", path.display()),
        }
    }
}
