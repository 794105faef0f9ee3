//! Stored and replicated formats across versions: the golden fixtures of
//! every earlier version (`tests/fixtures/v<N>/`, written by
//! `examples/write_format_fixtures.rs` at that version) must still load and
//! answer queries.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader};
use raftpoll::model::state::ClusterState;
use raftpoll::model::types::{Command, DeviceStatus};
use raftpoll::raft_types::{Entry, Vote};
use raftpoll::snmp::credentials::SnmpCredentials;
use raftpoll::storage;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn fixture(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{version}"))
}

/// A writable copy (opening a database writes to it; the fixture stays as committed).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// The state every version's fixture log leads to (see the generator).
fn check_final_state(s: &ClusterState) {
    assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(s.nodes[&2].groups, [0, 1]);
    assert_eq!(s.nodes[&3].addr, "127.0.0.1:7003");
    assert_eq!(s.last_node_id, 5);
    assert_eq!(
        s.devices.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sw1", "sw2", "sw3", "sw4"]
    );
    let sw1 = &s.devices["sw1"];
    assert_eq!(
        (sw1.owner, sw1.group, sw1.status),
        (Some(1), 0, DeviceStatus::Up)
    );
    assert_eq!(sw1.last_polled, Some(1_700_000_000));
    assert_eq!(sw1.last_poll_ms, Some(120));
    assert_eq!(sw1.last_discovered, Some(1_700_000_001));
    assert_eq!(sw1.inventory.system.sys_name, "sw1.example");
    let ports: Vec<(u64, u32, &str)> = sw1
        .inventory
        .ports
        .iter()
        .map(|p| (p.port_id, p.ifindex, p.ifname.as_str()))
        .collect();
    assert_eq!(ports, [(1, 1, "lo"), (2, 2, "eth0"), (3, 3, "eth1")]);
    assert_eq!(sw1.inventory.storages.len(), 2);
    assert_eq!(sw1.inventory.processors[0].index, 196608);
    let sw2 = &s.devices["sw2"];
    assert_eq!((sw2.owner, sw2.group), (Some(3), 1));
    assert_eq!(
        sw2.inventory
            .ports
            .iter()
            .map(|p| p.port_id)
            .collect::<Vec<_>>(),
        [500, 501]
    );
    match &sw2.credentials {
        SnmpCredentials::V3(u) => {
            assert_eq!(u.user, "admin");
            assert_eq!(u.auth.as_ref().map(|a| a.1.expose()), Some("authpass"));
            assert_eq!(u.privacy.as_ref().map(|p| p.1.expose()), Some("privpass"));
        }
        other => panic!("sw2 credentials {other:?}"),
    }
    let sw3 = &s.devices["sw3"];
    assert_eq!((sw3.owner, sw3.address.as_str()), (Some(2), "127.0.0.2"));
    assert!(
        matches!(&sw3.credentials, SnmpCredentials::V2c { community } if community.expose() == "private")
    );
    let sw4 = &s.devices["sw4"];
    // The group change unassigned it.
    assert_eq!(
        (sw4.owner, sw4.group, sw4.status),
        (None, 1, DeviceStatus::Down)
    );
    assert_eq!(sw4.reason.as_deref(), Some("timeout"));
    assert_eq!(s.last_port_id, 501);
}

/// Loads the data dir of `version`: node id, vote, committed index, the log,
/// the snapshot, and the state after re-applying the log past the snapshot.
async fn data_dir_loads(version: u32) {
    let tmp = TempDir::new().expect("temp dir");
    copy_dir(&fixture(version).join("data"), tmp.path());
    let (store, mut log, mut sm) = storage::open(tmp.path()).await.expect("open v1 data dir");
    assert_eq!(
        store.local_get("node_id").expect("node id"),
        Some(1u64.to_be_bytes().to_vec())
    );
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(2, 1))
    );
    let state = log.get_log_state().await.expect("log state");
    let last = state.last_log_id.expect("a log").index;
    assert_eq!(last, 23);
    let committed = log.read_committed().await.expect("committed");
    assert_eq!(committed.map(|c| c.index), Some(23));
    let entries: Vec<Entry> = log.try_get_log_entries(1..=last).await.expect("entries");
    assert_eq!(entries.len(), 23);
    assert!(matches!(entries[0].payload, EntryPayload::Blank));
    assert!(matches!(entries[1].payload, EntryPayload::Membership(_)));
    assert!(matches!(
        &entries[9].payload,
        EntryPayload::Normal(Command::AddDevices(ds)) if ds.len() == 5
    ));

    // The snapshot covers the first 12 entries ...
    let (applied, membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied.map(|l| l.index), Some(12));
    assert_eq!(membership.log_id().map(|l| l.index), Some(2));
    let shared = sm.shared();
    assert!(shared.read(|s| s.devices.contains_key("gone1")));
    let snapshot = sm
        .get_current_snapshot()
        .await
        .expect("snapshot")
        .expect("a snapshot");
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(12));

    // ... and re-applying the rest, as openraft does at start, gives the final state.
    let rest = entries[12..].to_vec();
    let stream = futures::stream::iter(rest.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply rest");
    shared.read(check_final_state);
    assert_eq!(shared.last_applied_index(), Some(23));

    // The snapshot can be installed on another node (as the leader sends it).
    let other = TempDir::new().expect("temp dir");
    let (_s, _l, mut sm2) = storage::open(other.path()).await.expect("open");
    sm2.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install v1 snapshot");
    assert!(sm2.shared().read(|s| s.devices.contains_key("gone1")));
}

#[tokio::test]
async fn v1_data_dir_loads_and_answers_queries() {
    data_dir_loads(1).await;
}
