//! Helpers shared by the storage tests: append to the log and apply to the
//! state machine the way openraft does, waiting for the flush.

use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use raftpoll::raft_types::{Entry, TypeConfig};
use raftpoll::storage::{LogStore, StateMachineStore};

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
