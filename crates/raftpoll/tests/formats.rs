//! Stored and replicated formats across versions: the golden fixtures of
//! every earlier version (`tests/fixtures/v<N>/`, written by
//! `examples/write_format_fixtures.rs` at that version) must still load and
//! answer queries.

mod common;

use common::{append, apply, open_when_unlocked, sled_when_unlocked};
use openraft::raft::AppendEntriesRequest;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use raftpoll::cluster::network::GrpcNetworkFactory;
use raftpoll::cluster::raft::{Raft, raft_config};
use raftpoll::codec;
use raftpoll::model::state::ClusterState;
use raftpoll::model::types::{Command, CommandResult, DeviceStatus, NewDevice, PortKey};
use raftpoll::raft_types::{Entry, TypeConfig, Vote};
use raftpoll::rrd::layout::RrdValue;
use raftpoll::rrd::spool::Spool;
use raftpoll::secret::Secret;
use raftpoll::snmp::credentials::SnmpCredentials;
use raftpoll::storage::{self, SnapshotData};
use raftpoll_testbed::raftpoll::{NodeConfig, run_node_expecting_exit_with_env};
use std::path::{Path, PathBuf};
use std::time::Duration;
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
    // Older formats held the names: they load as the names' keys.
    let ports: Vec<(u64, u32, PortKey)> = sw1
        .inventory
        .ports
        .iter()
        .map(|p| (p.port_id(), p.ifindex, p.key))
        .collect();
    let key = |name: &str| PortKey::of(name, &format!("descr {name}"));
    assert_eq!(
        ports,
        [(1, 1, key("lo")), (2, 2, key("eth0")), (3, 3, key("eth1"))]
    );
    assert_eq!(sw1.inventory.storages.len(), 2);
    assert_eq!(sw1.inventory.processors[0].index, 196608);
    let sw2 = &s.devices["sw2"];
    assert_eq!((sw2.owner, sw2.group), (Some(3), 1));
    assert_eq!(
        sw2.inventory
            .ports
            .iter()
            .map(|p| p.port_id())
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
    let data = snapshot.snapshot.into_bytes().expect("snapshot data");
    // Written in that version's format.
    assert_eq!(u32::from(codec::version_of(&data)), version);

    // ... and re-applying the rest, as openraft does at start, gives the final state.
    let rest = entries[12..].to_vec();
    let stream = futures::stream::iter(rest.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply rest");
    shared.read(check_final_state);
    assert_eq!(shared.last_applied_index(), Some(23));

    // The snapshot can be installed on another node (as the leader sends it).
    let other = TempDir::new().expect("temp dir");
    let (_s, _l, mut sm2) = storage::open(other.path()).await.expect("open");
    sm2.install_snapshot(&snapshot.meta, SnapshotData::InMemory(data))
        .await
        .expect("install v1 snapshot");
    assert!(sm2.shared().read(|s| s.devices.contains_key("gone1")));
}

#[tokio::test]
async fn v1_data_dir_loads_and_answers_queries() {
    data_dir_loads(1).await;
}

#[tokio::test]
async fn v2_data_dir_loads_and_answers_queries() {
    data_dir_loads(2).await;
}

#[tokio::test]
async fn v3_data_dir_loads_and_answers_queries() {
    data_dir_loads(3).await;
}

/// A snapshot of format 3 (ports as keys) is never sent to a peer reading
/// only format 2 (ports with names): that peer would match the next
/// discovery differently. One of format 2 goes to it as it is, and to a
/// current peer converted.
#[tokio::test]
async fn snapshots_go_to_older_peers_only_in_a_format_that_keeps_their_state() {
    let snapshot_of = |version: u32| async move {
        let tmp = TempDir::new().expect("temp dir");
        copy_dir(&fixture(version).join("data"), tmp.path());
        let (_store, _log, mut sm) = storage::open(tmp.path()).await.expect("open");
        sm.get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot")
            .snapshot
            .into_bytes()
            .expect("snapshot data")
    };
    let current = snapshot_of(3).await;
    let err = storage::snapshot_data_in_format(current.clone(), 2)
        .expect_err("format 3 to a format-2 peer")
        .to_string();
    assert!(err.contains("upgrade the receiving node"), "{err}");
    assert_eq!(
        storage::snapshot_data_in_format(current.clone(), 3).expect("as is"),
        current
    );

    let (older, expected) = {
        let tmp = TempDir::new().expect("temp dir");
        copy_dir(&fixture(2).join("data"), tmp.path());
        let (_store, _log, mut sm) = storage::open(tmp.path()).await.expect("open");
        let snapshot = sm.get_current_snapshot().await.expect("read");
        (
            snapshot.expect("a snapshot"),
            sm.shared().read(Clone::clone),
        )
    };
    let older_data = older.snapshot.into_bytes().expect("snapshot data");
    assert_eq!(
        storage::snapshot_data_in_format(older_data.clone(), 2).expect("as is"),
        older_data
    );
    let converted = storage::snapshot_data_in_format(older_data, 3).expect("to format 3");
    assert_eq!(codec::version_of(&converted), 3);
    let other = TempDir::new().expect("temp dir");
    let (_s, _l, mut sm) = storage::open(other.path()).await.expect("open");
    sm.install_snapshot(&older.meta, SnapshotData::InMemory(converted))
        .await
        .expect("install the converted snapshot");
    assert_eq!(sm.shared().read(Clone::clone), expected);
}

#[test]
fn v1_peer_payloads_decode() {
    peer_payloads_decode(1);
}

#[test]
fn v2_peer_payloads_decode() {
    peer_payloads_decode(2);
}

#[test]
fn v3_peer_payloads_decode() {
    peer_payloads_decode(3);
}

/// Every command of a version's peer payloads decodes, and applying them in
/// order gives the same state as the log.
fn peer_payloads_decode(version: u16) {
    let dir = fixture(version.into()).join("rpc");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("rpc fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("command-"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 21);
    let mut state = ClusterState::default();
    for name in &names {
        let bytes = std::fs::read(dir.join(name)).expect("read fixture");
        assert_eq!(codec::version_of(&bytes), version, "{name}");
        let cmd: Command = codec::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The file is named after the kind it holds.
        assert!(
            name.ends_with(&format!("-{}.bin", cmd.kind())),
            "{name}: {cmd}"
        );
        state.apply(&cmd);
    }
    check_final_state(&state);

    let results: Vec<CommandResult> =
        codec::decode(&std::fs::read(dir.join("results.bin")).expect("read")).expect("results");
    assert_eq!(results.len(), 8);
    assert_eq!(results[1], CommandResult::NodeIdAllocated(9));
    assert!(
        matches!(&results[7], CommandResult::DevicesAdded { added: 2, existing } if existing == &["sw1"])
    );

    let append: AppendEntriesRequest<TypeConfig> =
        codec::decode(&std::fs::read(dir.join("append-entries.bin")).expect("read"))
            .expect("append entries");
    assert_eq!(append.entries.len(), 21);
    assert_eq!(append.vote, Vote::new_committed(2, 1));
    let vote: Vote =
        codec::decode(&std::fs::read(dir.join("vote.bin")).expect("read")).expect("vote");
    assert_eq!(vote, Vote::new_committed(2, 1));
}

#[test]
fn v1_spool_loads() {
    spool_loads(1);
}

#[test]
fn v2_spool_loads() {
    spool_loads(2);
}

#[test]
fn v3_spool_loads() {
    spool_loads(3);
}

/// A version's spool: the unconfirmed records are replayed, in order.
fn spool_loads(version: u32) {
    let tmp = TempDir::new().expect("temp dir");
    copy_dir(&fixture(version).join("spool"), tmp.path());
    let (mut spool, recovery) = Spool::open(tmp.path(), 1 << 20).expect("open v1 spool");
    assert_eq!(recovery.corrupt, 0);
    assert_eq!(recovery.records, 3);
    let mut got = Vec::new();
    while let Some(r) = spool.read_next().expect("read") {
        got.push((
            r.update.path.clone(),
            r.update.timestamp,
            r.update.values.clone(),
        ));
    }
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, "sw1/port-id2.rrd");
    assert_eq!(got[0].1, 1_700_000_600);
    assert_eq!(got[2].2[0], RrdValue::Counter(4000));
    drop(spool);

    // A segment of a newer spool format is refused by name, and left alone.
    let newer = tmp.path().join("00000000000000ff.seg");
    std::fs::write(&newer, b"RPSPOOL9 records of a later layout").expect("write segment");
    let err = Spool::open(tmp.path(), 1 << 20)
        .expect_err("newer spool")
        .to_string();
    assert!(
        err.contains("00000000000000ff.seg") && err.contains("spool format 9"),
        "{err}"
    );
    assert!(newer.exists());
}

/// A version-1 data dir keeps working after the current version writes to
/// it: a new snapshot and new entries (current format) next to old ones.
#[tokio::test]
async fn v1_data_dir_upgrades_in_place() {
    let tmp = TempDir::new().expect("temp dir");
    copy_dir(&fixture(1).join("data"), tmp.path());
    {
        let (_store, mut log, mut sm) = storage::open(tmp.path()).await.expect("open");
        let entries = log.try_get_log_entries(13..=23).await.expect("entries");
        apply(&mut sm, entries).await;
        sm.build_snapshot()
            .await
            .expect("snapshot in the current format");
        let extra = Entry {
            log_id: openraft::testing::log_id::<TypeConfig>(3, 1, 24),
            payload: EntryPayload::Normal(Command::RemoveDevices(vec!["sw3".into()])),
        };
        append(&mut log, vec![extra]).await;
    }
    let (_store, mut log, mut sm) = open_when_unlocked(tmp.path()).await.expect("reopen");
    let snapshot = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    let data = snapshot.snapshot.into_bytes().expect("snapshot data");
    assert_eq!(codec::version_of(&data), codec::FORMAT_VERSION);
    assert_eq!(
        sm.applied_state().await.expect("state").0.map(|l| l.index),
        Some(23)
    );
    sm.shared().read(check_final_state);
    let all = log
        .try_get_log_entries(1..=24)
        .await
        .expect("old and new entries");
    assert_eq!(all.len(), 24);
    apply(&mut sm, all[23..].to_vec()).await;
    assert!(!sm.shared().read(|s| s.devices.contains_key("sw3")));
}

/// The log an older version kept in sled moves into segment files at the
/// first start, once: sled's copy is gone afterwards, and a move cut short
/// (its directory left half-written) is done again from the start.
#[tokio::test]
async fn an_older_log_in_sled_moves_into_segment_files_once() {
    let tmp = TempDir::new().expect("temp dir");
    copy_dir(&fixture(3).join("data"), tmp.path());
    let in_sled = |path: &Path| -> Vec<(u64, Vec<u8>)> {
        let db = sled_when_unlocked(path);
        let tree = db.open_tree("raft_logs").expect("tree");
        tree.iter()
            .map(|kv| {
                let (k, v) = kv.expect("entry");
                let key: [u8; 8] = k.as_ref().try_into().expect("an index key");
                (u64::from_be_bytes(key), v.to_vec())
            })
            .collect()
    };
    assert!(
        !in_sled(tmp.path()).is_empty(),
        "the fixture's log is in sled"
    );
    // A move cut short: its directory exists, the log is still in sled.
    let moving = tmp.path().join("raft-log.moving");
    std::fs::create_dir_all(&moving).expect("create");
    std::fs::write(moving.join("00000000000000000001.seg"), b"half").expect("write");

    let read_all = |log: &mut storage::LogStore| {
        let mut log = log.clone();
        async move {
            let state = log.get_log_state().await.expect("log state");
            let last = state.last_log_id.expect("a last entry").index;
            let from = state.last_purged_log_id.map_or(0, |l| l.index + 1);
            let entries = log.try_get_log_entries(from..=last).await.expect("entries");
            (from, last, entries)
        }
    };
    let (from, last, before) = {
        let (_store, mut log, _sm) = open_when_unlocked(tmp.path()).await.expect("open");
        read_all(&mut log).await
    };
    let indexes: Vec<u64> = before.iter().map(|e| e.log_id.index).collect();
    let first = indexes.first().copied().expect("entries");
    assert!(first <= from.max(1), "from the purge point on: {indexes:?}");
    assert_eq!(
        indexes,
        (first..=last).collect::<Vec<_>>(),
        "every entry, in order"
    );
    assert!(tmp.path().join("raft-log").is_dir());
    assert!(!moving.exists(), "the cut-short move is replaced");
    let (_store, mut log, _sm) = open_when_unlocked(tmp.path()).await.expect("reopen");
    let (_, _, after) = read_all(&mut log).await;
    assert_eq!(after, before, "the same entries after a restart");
    drop((_store, log, _sm));
    // What a version from before the move finds: one entry, of a format
    // newer than any, so it refuses to start (a rollback) instead of
    // starting on a log without its entries.
    let left = in_sled(tmp.path());
    assert_eq!(left.len(), 1, "sled's copy of the log is removed");
    assert_eq!(left[0].0, u64::MAX);
    let err = codec::decode::<Entry>(&left[0].1).expect_err("a marker");
    assert!(err.to_string().contains("65535"), "{err}");
}

/// An entry written by a newer version is refused, naming the entry and its
/// format version; the rest of the log still reads.
#[tokio::test]
async fn a_newer_format_is_named() {
    let tmp = TempDir::new().expect("temp dir");
    copy_dir(&fixture(1).join("data"), tmp.path());
    {
        let db = sled::open(tmp.path()).expect("sled");
        let mut future = vec![0xFF, b'R', b'P', b'F', 9, 0, 0, 0xFF];
        future.extend_from_slice(b"some future layout");
        db.open_tree("raft_logs")
            .expect("tree")
            .insert(24u64.to_be_bytes(), future)
            .expect("insert");
        db.flush().expect("flush");
    }
    let (_store, mut log, _sm) = storage::open(tmp.path()).await.expect("open");
    let err = log
        .get_log_state()
        .await
        .expect_err("newer last entry")
        .to_string();
    assert!(
        err.contains("log entry 24") && err.contains("format version 9"),
        "{err}"
    );
    assert!(err.contains("upgrade this node"), "{err}");
    assert!(!err.contains("corrupt"), "{err}");
    let err = log
        .try_get_log_entries(20..=24)
        .await
        .expect_err("newer")
        .to_string();
    assert!(err.contains("log entry 24"), "{err}");
    assert_eq!(
        log.try_get_log_entries(1..=23).await.expect("older").len(),
        23
    );
}

/// A node held at feature level 1 that finds a level-2 entry in its log
/// (data written after an upgrade, then the binary downgraded) refuses to
/// start Raft, naming the entry, its format version and kind: it never
/// skips the entry (divergence) nor panics; the state stays as it was.
#[tokio::test]
async fn a_newer_entry_kind_stops_the_node_naming_it() {
    let tmp = TempDir::new().expect("temp dir");
    copy_dir(&fixture(1).join("data"), tmp.path());
    let packed = Command::pack_devices(vec![NewDevice {
        hostname: "new1".into(),
        address: "127.0.0.1".into(),
        port: 161,
        credentials: SnmpCredentials::V2c {
            community: Secret::new("public"),
        },
        group: 0,
    }]);
    {
        let (_store, mut log, _sm) = storage::open(tmp.path()).await.expect("open");
        let entry = Entry {
            log_id: openraft::testing::log_id::<TypeConfig>(2, 1, 24),
            payload: EntryPayload::Normal(packed),
        };
        append(&mut log, vec![entry]).await;
        log.save_committed(Some(openraft::testing::log_id::<TypeConfig>(2, 1, 24)))
            .await
            .expect("committed");
    }
    for _attempt in 0..2 {
        let (_store, log, sm) = open_when_unlocked(tmp.path()).await.expect("reopen");
        let shared = sm.shared();
        let mut held = log.clone().with_feature_level(1);
        // The log state (last log id) still reads ...
        let state = held.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id.map(|l| l.index), Some(24));
        // ... the entry itself does not, and says why.
        let network = GrpcNetworkFactory::new(Secret::new("s"));
        let err = match Raft::new(
            1,
            raft_config(100, 600, 900).expect("config"),
            network,
            held,
            sm,
        )
        .await
        {
            Ok(_) => panic!("a level-1 node started on a level-2 entry"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!(
                "log entry 24 (format version {})",
                codec::FORMAT_VERSION
            )),
            "{err}"
        );
        assert!(
            err.contains("AddDevicesPacked needs feature level 2"),
            "{err}"
        );
        assert!(err.contains("upgrade it"), "{err}");
        assert!(!shared.read(|s| s.devices.contains_key("new1")));
        assert_eq!(shared.last_applied_index(), Some(12));
    }
    // The node itself exits at start with the named error and a status
    // saying that restarting cannot help.
    let node_dir = TempDir::new().expect("temp dir");
    copy_dir(tmp.path(), &node_dir.path().join("raft"));
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut cfg = NodeConfig::new("n1", "127.0.0.1:1");
    cfg.bootstrap = false;
    let out = run_node_expecting_exit_with_env(
        &cfg.to_toml(node_dir.path(), listen),
        Duration::from_secs(30),
        &[("RAFTPOLL_FEATURE_LEVEL_MAX", "1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "log entry 24 (format version {})",
            codec::FORMAT_VERSION
        )) && stderr.contains("AddDevicesPacked needs feature level 2"),
        "{stderr}"
    );

    // The current level reads it and applies it.
    let (_store, mut log, mut sm) = open_when_unlocked(tmp.path()).await.expect("reopen");
    let rest = log.try_get_log_entries(13..=24).await.expect("entries");
    apply(&mut sm, rest).await;
    assert!(sm.shared().read(|s| s.devices.contains_key("new1")));
}
