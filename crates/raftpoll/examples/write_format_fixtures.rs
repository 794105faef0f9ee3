//! Writes the golden format fixtures of the current version into a directory
//! (`cargo run -p raftpoll --example write_format_fixtures -- <dir>`): a node
//! data dir (vote, committed index, node id, a log holding every kind of
//! entry, a snapshot of its first part), the peer RPC payloads, and an RRD
//! spool. Run once per format version, into `tests/fixtures/v<N>/`, and commit
//! the output: `tests/formats.rs` checks that every later version still reads
//! it. The inputs are fixed, so the fixture's meaning is described by
//! `tests/formats.rs`.

use anyhow::{Context, Result};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, Membership, RaftSnapshotBuilder};
use raftpoll::codec;
use raftpoll::model::types::*;
use raftpoll::raft_types::{Entry, LogId, TypeConfig, Vote};
use raftpoll::rrd::layout::{DsDef, DsType, RrdDef, RrdUpdate, RrdValue};
use raftpoll::rrd::spool::Spool;
use raftpoll::secret::Secret;
use raftpoll::snmp::credentials::{AuthProtocol, PrivProtocol, SnmpCredentials, UsmCredentials};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(2, 1, index)
}

fn new_device(hostname: &str, credentials: SnmpCredentials, group: GroupId) -> NewDevice {
    NewDevice {
        hostname: hostname.into(),
        address: "127.0.0.1".into(),
        port: 1161,
        credentials,
        group,
    }
}

fn v2c(c: &str) -> SnmpCredentials {
    SnmpCredentials::V2c {
        community: Secret::new(c),
    }
}

fn port(ifindex: u32, ifname: &str) -> DiscoveredPort {
    DiscoveredPort {
        ifindex,
        ifname: ifname.into(),
        ifdescr: format!("descr {ifname}"),
    }
}

fn node(id: NodeId, groups: Vec<GroupId>) -> NodeInfo {
    NodeInfo {
        id,
        name: format!("n{id}"),
        addr: format!("127.0.0.1:{}", 7000 + id),
        groups,
    }
}

/// Every kind of command, in an order whose outcome `tests/formats.rs` checks.
fn commands() -> Vec<Command> {
    let v3 = SnmpCredentials::V3(Box::new(UsmCredentials {
        user: "admin".into(),
        auth: Some((AuthProtocol::Sha256, Secret::new("authpass"))),
        privacy: Some((PrivProtocol::Aes128, Secret::new("privpass"))),
    }));
    let v1 = SnmpCredentials::V1 {
        community: Secret::new("old"),
    };
    vec![
        Command::AllocateNodeId,
        Command::AllocateNodeId,
        Command::AllocateNodeId,
        Command::UpsertNode(node(1, vec![0])),
        Command::UpsertNode(node(2, vec![0, 1])),
        Command::UpsertNode(node(3, vec![1])),
        Command::AddDevice(new_device("sw1", v2c("public"), 0)),
        Command::AddDevices(vec![
            new_device("sw2", v3.clone(), 1),
            new_device("sw3", v1, 0),
            new_device("sw4", v2c("public"), 0),
            new_device("gone1", v2c("public"), 0),
            new_device("gone2", v2c("public"), 0),
        ]),
        Command::Assign {
            moves: vec![
                ("sw1".into(), Some(1)),
                ("sw2".into(), Some(3)),
                ("sw3".into(), Some(2)),
                ("sw4".into(), Some(1)),
            ],
        },
        Command::ClaimPolls {
            node: 1,
            at_ms: 1_700_000_000_000,
            up_gap_ms: 240_000,
            down_gap_ms: 60_000,
            hostnames: vec!["sw1".into(), "sw4".into()],
        },
        Command::PollReports {
            node: 1,
            reports: vec![
                PollReport {
                    hostname: "sw1".into(),
                    polled_at: 1_700_000_000,
                    duration_ms: 120,
                    status: DeviceStatus::Up,
                    reason: None,
                },
                PollReport {
                    hostname: "sw4".into(),
                    polled_at: 1_700_000_000,
                    duration_ms: 3000,
                    status: DeviceStatus::Down,
                    reason: Some("timeout".into()),
                },
            ],
        },
        Command::Discovered {
            hostname: "sw1".into(),
            at: 1_700_000_001,
            discovery: Discovery {
                system: SystemInfo {
                    sys_name: "sw1.example".into(),
                    sys_descr: "Linux sw1".into(),
                    sys_object_id: ".1.3.6.1.4.1.8072.3.2.10".into(),
                },
                ports: vec![port(1, "lo"), port(2, "eth0"), port(3, "eth1")],
                processors: vec![Processor {
                    index: 196608,
                    descr: "cpu0".into(),
                }],
                storages: vec![
                    Storage {
                        index: 31,
                        descr: "/".into(),
                        kind: StorageKind::Disk,
                        units: 4096,
                    },
                    Storage {
                        index: 1,
                        descr: "Physical memory".into(),
                        kind: StorageKind::Memory,
                        units: 1024,
                    },
                ],
            },
        },
        Command::DiscoveredPorts {
            hostname: "sw2".into(),
            at: 1_700_000_002,
            discovery: Discovery {
                ports: vec![port(10, "ge-0/0/0"), port(11, "ge-0/0/1")],
                ..Default::default()
            },
            port_ids: BTreeMap::from([(10, 500), (11, 501)]),
        },
        Command::SetDeviceGroup {
            hostname: "sw4".into(),
            group: 1,
        },
        Command::UpdateDevices(vec![NewDevice {
            address: "127.0.0.2".into(),
            ..new_device("sw3", v2c("private"), 0)
        }]),
        Command::RemoveDevice {
            hostname: "gone1".into(),
        },
        Command::RemoveDevices(vec!["gone2".into()]),
        Command::UpsertNode(node(4, vec![0])),
        Command::RemoveNode { id: 4 },
        Command::UpsertNode(node(5, vec![0])),
        Command::Drain {
            id: 5,
            moves: vec![],
        },
    ]
}

/// Entries 1..: blank, membership {1,2,3}, then every command.
fn entries() -> Vec<Entry> {
    let members = Membership::new_with_defaults(vec![[1u64, 2, 3].into_iter().collect()], []);
    let mut out = vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2),
            payload: EntryPayload::Membership(members),
        },
    ];
    for cmd in commands() {
        let index = out.len() as u64 + 1;
        out.push(Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(cmd),
        });
    }
    out
}

/// Entries up to and including this index are in the snapshot.
const SNAPSHOT_AT: usize = 12;

async fn write_data_dir(dir: &Path) -> Result<()> {
    let (store, mut log, mut sm) = raftpoll::storage::open(dir).await?;
    let all = entries();
    log.save_vote(&Vote::new_committed(2, 1)).await?;
    let (tx, rx) = TypeConfig::oneshot();
    log.append(all.clone(), IOFlushed::signal(tx)).await?;
    rx.await.context("append callback")??;
    let last = all.last().map(|e| e.log_id);
    log.save_committed(last).await?;
    let apply =
        |entries: Vec<Entry>| futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(apply(all[..SNAPSHOT_AT].to_vec())).await?;
    sm.build_snapshot().await?;
    sm.apply(apply(all[SNAPSHOT_AT..].to_vec())).await?;
    store.local_set("node_id", &1u64.to_be_bytes()).await?;
    Ok(())
}

fn write_rpc(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes);
    for (i, cmd) in commands().iter().enumerate() {
        let name = cmd.to_string();
        let kind = name.split('(').next().unwrap_or("command");
        write(&format!("command-{i:02}-{kind}.bin"), codec::encode(cmd)?)?;
    }
    let results = vec![
        CommandResult::Ok,
        CommandResult::NodeIdAllocated(9),
        CommandResult::PortIds(BTreeMap::from([(1, 2)])),
        CommandResult::Claimed(vec!["sw1".into()]),
        CommandResult::Rejected(Rejection::DuplicateDevice("sw1".into())),
        CommandResult::Rejected(Rejection::UnknownDevice("x".into())),
        CommandResult::Rejected(Rejection::UnknownNode(7)),
        CommandResult::DevicesAdded {
            added: 2,
            existing: vec!["sw1".into()],
        },
    ];
    write("results.bin", codec::encode(&results)?)?;
    let append = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(2)),
        entries: entries()[2..].to_vec(),
        leader_commit: Some(log_id(2)),
    };
    write("append-entries.bin", codec::encode(&append)?)?;
    write("vote.bin", codec::encode(&Vote::new_committed(2, 1))?)?;
    Ok(())
}

fn write_spool(dir: &Path) -> Result<()> {
    let def = Arc::new(RrdDef {
        ds: vec![
            DsDef {
                name: "INOCTETS",
                kind: DsType::Derive,
                min: Some(0.0),
                max: None,
            },
            DsDef {
                name: "uptime",
                kind: DsType::Gauge,
                min: None,
                max: Some(1e12),
            },
        ],
    });
    let (mut spool, _) = Spool::open(dir, 1 << 20)?;
    for i in 0..5u64 {
        spool.append(&RrdUpdate {
            path: format!("sw{}/port-id{}.rrd", i % 2 + 1, i),
            def: def.clone(),
            timestamp: 1_700_000_000 + i * 300,
            millis: (i * 100) as u16,
            values: vec![RrdValue::Counter(i * 1000), RrdValue::Gauge(0.5 + i as f64)],
        })?;
    }
    spool.flush()?;
    // The first two confirmed by rrdcached, the third handed over.
    spool.mark_sent(3)?;
    spool.ack(2)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: write_format_fixtures <output dir>")?;
    let out = Path::new(&out);
    write_data_dir(&out.join("data")).await?;
    write_rpc(&out.join("rpc"))?;
    write_spool(&out.join("spool"))?;
    println!("fixtures written to {}", out.display());
    Ok(())
}
