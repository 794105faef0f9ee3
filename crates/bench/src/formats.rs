//! `formats`: size and CPU of the snapshot of a 20,000-device cluster in
//! each candidate encoding: bincode 1 (format 1, unmaintained), postcard
//! (formats 2 and 3, what raftpoll writes), and protobuf through prost (mirror
//! messages defined here, with the conversion from the model counted, as
//! a real protobuf schema would need it).

use crate::BenchError;
use raftpoll::codec;
use raftpoll::model::state::ClusterState;
use raftpoll::model::types::*;
use raftpoll::secret::Secret;
use raftpoll::snmp::credentials::{AuthProtocol, PrivProtocol, SnmpCredentials, UsmCredentials};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct FormatsArgs {
    /// Devices in the snapshot.
    #[arg(long, default_value_t = 20_000)]
    pub devices: usize,
    /// Interfaces per device.
    #[arg(long, default_value_t = 24)]
    pub ports: usize,
    /// Runs per measurement (the median is shown).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// The state of a busy cluster: 3 nodes, `devices` devices (every tenth
/// SNMPv3), each discovered and polled.
pub fn build_state(devices: usize, ports: usize) -> ClusterState {
    let mut s = ClusterState::default();
    for id in 1..=3 {
        s.apply(&Command::UpsertNode(NodeInfo {
            id,
            name: format!("poller-{id}"),
            addr: format!("10.0.0.{id}:7400"),
            groups: vec![0],
        }));
    }
    let news: Vec<NewDevice> = (0..devices)
        .map(|i| NewDevice {
            hostname: format!("sw{i:05}.dc1.example.net"),
            address: format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
            port: 161,
            credentials: if i % 10 == 0 {
                SnmpCredentials::V3(Box::new(UsmCredentials {
                    user: "monitor".into(),
                    auth: Some((AuthProtocol::Sha256, Secret::new("authpassword123"))),
                    privacy: Some((PrivProtocol::Aes128, Secret::new("privpassword123"))),
                }))
            } else {
                SnmpCredentials::V2c {
                    community: Secret::new("c0mmunity"),
                }
            },
            group: 0,
        })
        .collect();
    s.apply(&Command::AddDevices(news.clone()));
    s.apply(&Command::Assign {
        moves: news
            .iter()
            .enumerate()
            .map(|(i, d)| (d.hostname.clone(), Some(i as u64 % 3 + 1)))
            .collect(),
    });
    for d in &news {
        s.apply(&Command::Discovered {
            hostname: d.hostname.clone(),
            at: 1_700_000_000,
            discovery: Discovery {
                system: SystemInfo {
                    sys_name: d.hostname.clone(),
                    sys_descr: "Cisco IOS Software, C3750E Software, Version 15.2(4)E10".into(),
                    sys_object_id: ".1.3.6.1.4.1.9.1.1227".into(),
                },
                ports: (1..=ports as u32)
                    .map(|p| DiscoveredPort {
                        ifindex: 10100 + p,
                        ifname: format!("Gi1/0/{p}"),
                        ifdescr: format!("GigabitEthernet1/0/{p}"),
                    })
                    .collect(),
                processors: vec![Processor {
                    index: 1,
                    descr: "CPU".into(),
                }],
                storages: vec![Storage {
                    index: 1,
                    descr: "Processor memory".into(),
                    kind: StorageKind::Memory,
                    units: 1,
                }],
            },
        });
    }
    s.apply(&Command::PollReports {
        node: 1,
        reports: news
            .iter()
            .map(|d| PollReport {
                hostname: d.hostname.clone(),
                polled_at: 1_700_000_300,
                duration_ms: 850,
                status: DeviceStatus::Up,
                reason: None,
            })
            .collect(),
    });
    s
}

/// Protobuf mirror of the state (what a `.proto` schema would hold).
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct State {
        #[prost(message, repeated, tag = "1")]
        pub nodes: Vec<Node>,
        #[prost(message, repeated, tag = "2")]
        pub devices: Vec<Device>,
        #[prost(uint64, tag = "3")]
        pub last_node_id: u64,
        #[prost(uint64, tag = "4")]
        pub last_port_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Node {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub addr: String,
        #[prost(uint32, repeated, tag = "4")]
        pub groups: Vec<u32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Credentials {
        #[prost(uint32, tag = "1")]
        pub version: u32,
        #[prost(string, tag = "2")]
        pub community: String,
        #[prost(string, tag = "3")]
        pub user: String,
        #[prost(uint32, tag = "4")]
        pub auth_proto: u32,
        #[prost(string, tag = "5")]
        pub auth_pass: String,
        #[prost(uint32, tag = "6")]
        pub priv_proto: u32,
        #[prost(string, tag = "7")]
        pub priv_pass: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Port {
        #[prost(uint64, tag = "1")]
        pub port_id: u64,
        #[prost(uint32, tag = "2")]
        pub ifindex: u32,
        #[prost(fixed64, tag = "3")]
        pub key: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Indexed {
        #[prost(uint32, tag = "1")]
        pub index: u32,
        #[prost(string, tag = "2")]
        pub descr: String,
        #[prost(uint32, tag = "3")]
        pub kind: u32,
        #[prost(uint32, tag = "4")]
        pub units: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Device {
        #[prost(string, tag = "1")]
        pub hostname: String,
        #[prost(string, tag = "2")]
        pub address: String,
        #[prost(uint32, tag = "3")]
        pub port: u32,
        #[prost(message, optional, tag = "4")]
        pub credentials: Option<Credentials>,
        #[prost(uint32, tag = "5")]
        pub group: u32,
        #[prost(uint64, optional, tag = "6")]
        pub owner: Option<u64>,
        #[prost(uint32, tag = "7")]
        pub status: u32,
        #[prost(string, optional, tag = "8")]
        pub reason: Option<String>,
        #[prost(uint64, optional, tag = "9")]
        pub last_polled: Option<u64>,
        #[prost(uint64, optional, tag = "10")]
        pub last_claim_ms: Option<u64>,
        #[prost(uint64, optional, tag = "11")]
        pub last_poll_ms: Option<u64>,
        #[prost(uint64, optional, tag = "12")]
        pub last_discovered: Option<u64>,
        #[prost(string, tag = "13")]
        pub sys_name: String,
        #[prost(string, tag = "14")]
        pub sys_descr: String,
        #[prost(string, tag = "15")]
        pub sys_object_id: String,
        #[prost(message, repeated, tag = "16")]
        pub ports: Vec<Port>,
        #[prost(message, repeated, tag = "17")]
        pub processors: Vec<Indexed>,
        #[prost(message, repeated, tag = "18")]
        pub storages: Vec<Indexed>,
    }
}

fn credentials_pb(c: &SnmpCredentials) -> pb::Credentials {
    match c {
        SnmpCredentials::V1 { community } => pb::Credentials {
            version: 1,
            community: community.expose().into(),
            ..Default::default()
        },
        SnmpCredentials::V2c { community } => pb::Credentials {
            version: 2,
            community: community.expose().into(),
            ..Default::default()
        },
        SnmpCredentials::V3(u) => pb::Credentials {
            version: 3,
            user: u.user.clone(),
            auth_proto: u.auth.as_ref().map_or(0, |a| a.0 as u32 + 1),
            auth_pass: u
                .auth
                .as_ref()
                .map(|a| a.1.expose().into())
                .unwrap_or_default(),
            priv_proto: u.privacy.as_ref().map_or(0, |p| p.0 as u32 + 1),
            priv_pass: u
                .privacy
                .as_ref()
                .map(|p| p.1.expose().into())
                .unwrap_or_default(),
            ..Default::default()
        },
    }
}

fn state_pb(s: &ClusterState) -> pb::State {
    pb::State {
        nodes: s
            .nodes
            .values()
            .map(|n| pb::Node {
                id: n.id,
                name: n.name.clone(),
                addr: n.addr.clone(),
                groups: n.groups.clone(),
            })
            .collect(),
        devices: s
            .devices
            .values()
            .map(|d| pb::Device {
                hostname: d.hostname.clone(),
                address: d.address.clone(),
                port: d.port.into(),
                credentials: Some(credentials_pb(&d.credentials)),
                group: d.group,
                owner: d.owner,
                status: d.status as u32,
                reason: d.reason.clone(),
                last_polled: d.last_polled,
                last_claim_ms: d.last_claim_ms,
                last_poll_ms: d.last_poll_ms,
                last_discovered: d.last_discovered,
                sys_name: d.inventory.system.sys_name.clone(),
                sys_descr: d.inventory.system.sys_descr.clone(),
                sys_object_id: d.inventory.system.sys_object_id.clone(),
                ports: d
                    .inventory
                    .ports
                    .iter()
                    .map(|p| pb::Port {
                        port_id: p.port_id(),
                        ifindex: p.ifindex,
                        key: p.key.bits(),
                    })
                    .collect(),
                processors: d
                    .inventory
                    .processors
                    .iter()
                    .map(|p| pb::Indexed {
                        index: p.index,
                        descr: p.descr.clone(),
                        ..Default::default()
                    })
                    .collect(),
                storages: d
                    .inventory
                    .storages
                    .iter()
                    .map(|st| pb::Indexed {
                        index: st.index,
                        descr: st.descr.clone(),
                        kind: st.kind as u32,
                        units: st.units,
                    })
                    .collect(),
            })
            .collect(),
        last_node_id: s.last_node_id,
        last_port_id: s.last_port_id,
    }
}

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub fn run(args: &FormatsArgs) -> Result<String, BenchError> {
    use prost::Message as _;
    let setup = |e: codec::CodecError| BenchError::Setup(e.to_string());
    let state = build_state(args.devices, args.ports);
    let mut rows = Vec::new();
    for (name, version) in [("bincode 1 (format 1)", 1u16), ("postcard (format 2)", 2)] {
        let bytes = codec::encode_version(&state, version).map_err(setup)?;
        let encode = median(args.runs, || {
            std::hint::black_box(codec::encode_version(&state, version).map(|b| b.len()).ok());
        });
        let decode = median(args.runs, || {
            std::hint::black_box(codec::decode::<ClusterState>(&bytes).ok());
        });
        let back: ClusterState = codec::decode(&bytes).map_err(setup)?;
        if back != state {
            return Err(BenchError::Setup(format!(
                "{name}: the state did not round-trip"
            )));
        }
        rows.push((name, bytes.len(), encode, decode));
    }
    let bytes = state_pb(&state).encode_to_vec();
    let encode = median(args.runs, || {
        std::hint::black_box(state_pb(&state).encode_to_vec().len());
    });
    let decode = median(args.runs, || {
        std::hint::black_box(pb::State::decode(bytes.as_slice()).ok());
    });
    rows.push((
        "protobuf/prost (+ model conversion on encode)",
        bytes.len(),
        encode,
        decode,
    ));

    let mut out = format!(
        "Snapshot of {} devices × {} ports (median of {} runs, {} build)\n\n\
         | encoding | bytes | bytes/device | encode ms | decode ms |\n\
         |---|---:|---:|---:|---:|\n",
        args.devices,
        args.ports,
        args.runs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for (name, size, enc, dec) in rows {
        let _ = writeln!(
            out,
            "| {name} | {size} | {} | {} | {} |",
            size / args.devices.max(1),
            ms(enc),
            ms(dec)
        );
    }
    Ok(out)
}
