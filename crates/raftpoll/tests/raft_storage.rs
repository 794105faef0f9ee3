//! The sled Raft storage against openraft's storage test suite, plus restart
//! and corruption tests on real sled databases in temp dirs.

mod common;

use common::{append, apply, open_when_unlocked, sled_when_unlocked};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, Membership, RaftLogReader, StorageError as RaftStorageError};
use raftpoll::model::types::{Command, NewDevice};
use raftpoll::raft_types::{Entry, LogId, TypeConfig, Vote};
use raftpoll::secret::Secret;
use raftpoll::snmp::credentials::SnmpCredentials;
use raftpoll::storage::{self, LogStore, StateMachineStore};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), RaftStorageError<TypeConfig>> {
        let dir =
            TempDir::new().map_err(|e| RaftStorageError::read(TypeConfig::err_from_error(&e)))?;
        let (_store, log, sm) = storage::open(dir.path())
            .await
            .map_err(|e| RaftStorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).await.expect("storage suite");
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, node, index)
}

fn device(hostname: &str) -> Command {
    Command::AddDevice(NewDevice {
        hostname: hostname.into(),
        address: "127.0.0.1".into(),
        port: 161,
        credentials: SnmpCredentials::V2c {
            community: Secret::new("public"),
        },
        group: 0,
    })
}

fn entries() -> Vec<Entry> {
    let members = Membership::new_with_defaults(vec![[1u64].into_iter().collect()], []);
    vec![
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 1, 2),
            payload: EntryPayload::Membership(members),
        },
        Entry {
            log_id: log_id(1, 1, 3),
            payload: EntryPayload::Normal(device("sw1")),
        },
        Entry {
            log_id: log_id(1, 1, 4),
            payload: EntryPayload::Normal(device("sw2")),
        },
    ]
}

#[tokio::test]
async fn state_log_and_vote_survive_restart() {
    let dir = TempDir::new().unwrap();
    let vote = Vote::new_committed(1, 1);
    {
        let (store, mut log, mut sm) = storage::open(dir.path()).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        append(&mut log, entries()).await;
        log.save_committed(Some(log_id(1, 1, 4))).await.unwrap();
        // Only part of the log is applied and snapshotted before the "crash".
        apply(&mut sm, entries()[..3].to_vec()).await;
        openraft::RaftSnapshotBuilder::build_snapshot(&mut sm)
            .await
            .unwrap();
        apply(&mut sm, entries()[3..].to_vec()).await;
        store
            .local_set("node_id", &7u64.to_be_bytes())
            .await
            .unwrap();
        let shared = sm.shared();
        assert_eq!(shared.read(|s| s.devices.len()), 2);
        assert_eq!(shared.last_applied_index(), Some(4));
    }

    let (store, mut log, mut sm) = open_when_unlocked(dir.path()).await.unwrap();
    assert_eq!(
        store.local_get("node_id").unwrap(),
        Some(7u64.to_be_bytes().to_vec())
    );
    assert_eq!(store.local_get("cluster_id").unwrap(), None);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 4)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 4)));
    let got = log.try_get_log_entries(1..5).await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(
        matches!(&got[2].payload, EntryPayload::Normal(Command::AddDevice(d)) if d.hostname == "sw1")
    );

    // The state machine restarts from the snapshot (index 3) ...
    let shared = sm.shared();
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 3)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 2)));
    assert!(shared.read(|s| s.devices.contains_key("sw1")));
    assert!(!shared.read(|s| s.devices.contains_key("sw2")));

    // ... and openraft re-applies the committed rest, which wakes subscribers.
    let mut changes = shared.subscribe();
    let rest = log.try_get_log_entries(4..5).await.unwrap();
    apply(&mut sm, rest).await;
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    assert!(shared.read(|s| s.devices.contains_key("sw2")));
    assert_eq!(shared.last_applied_index(), Some(4));
}

#[tokio::test]
async fn rejected_commands_change_nothing() {
    let dir = TempDir::new().unwrap();
    let (_store, _log, mut sm) = storage::open(dir.path()).await.unwrap();
    apply(&mut sm, entries()).await;
    // A duplicate hostname is a deterministic rejection, not an error.
    let dup = Entry {
        log_id: log_id(1, 1, 5),
        payload: EntryPayload::Normal(device("sw1")),
    };
    apply(&mut sm, vec![dup]).await;
    assert_eq!(sm.shared().read(|s| s.devices.len()), 2);
}

#[tokio::test]
async fn corrupt_data_is_an_error_not_a_panic() {
    let dir = TempDir::new().unwrap();
    {
        let (_store, mut log, _sm) = storage::open(dir.path()).await.unwrap();
        append(&mut log, entries()).await;
    }
    {
        // Overwrite the snapshot with garbage, through sled itself.
        let db = sled_when_unlocked(dir.path());
        db.open_tree("raft_sm")
            .unwrap()
            .insert(b"snapshot", &b"\xff\xff garbage"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = match open_when_unlocked(dir.path()).await {
        Ok(_) => panic!("corrupt snapshot accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");

    {
        let db = sled_when_unlocked(dir.path());
        db.open_tree("raft_sm")
            .unwrap()
            .remove(b"snapshot")
            .unwrap();
        db.flush().unwrap();
    }
    // One byte of log entry 2 flipped in its segment file, entries after it
    // sound: damage, not a torn write.
    let segment = std::fs::read_dir(dir.path().join("raft-log"))
        .unwrap()
        .next()
        .expect("a segment")
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let second_payload = 8 + 16 + first_len + 16;
    bytes[second_payload] ^= 0xFF;
    std::fs::write(&segment, &bytes).unwrap();
    let err = match open_when_unlocked(dir.path()).await {
        Ok(_) => panic!("damaged log entry accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("corrupt") && err.contains("log entry 2"),
        "{err}"
    );
    assert!(err.contains(&segment.display().to_string()), "{err}");
}

#[tokio::test]
async fn snapshot_builds_are_counted_and_timed() {
    let dir = TempDir::new().unwrap();
    let (_store, mut log, mut sm) = storage::open(dir.path()).await.unwrap();
    let metrics = raftpoll::metrics::Metrics::default();
    sm.set_metrics(metrics.snapshots().clone());
    append(&mut log, entries()).await;
    apply(&mut sm, entries()).await;
    // openraft builds through the builder it gets from the store: a clone.
    let mut builder = sm.get_snapshot_builder().await;
    openraft::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
    openraft::RaftSnapshotBuilder::build_snapshot(&mut sm)
        .await
        .unwrap();
    assert_eq!(metrics.snapshots().built.get(), 2);
    let text = metrics.prometheus_text();
    assert!(
        text.contains("raftpoll_raft_snapshots_built_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("raftpoll_raft_snapshot_build_duration_seconds_count 2\n"),
        "{text}"
    );
}
