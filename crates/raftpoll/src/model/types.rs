//! Replicated data model: nodes, devices, ports, and the commands that change them.
//!
//! Everything here travels through the Raft log, so it is plain serde data with
//! no I/O and no clocks: timestamps are supplied by whoever proposes a command.

use crate::snmp::credentials::SnmpCredentials;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub type NodeId = u64;
pub type PortId = u64;
/// Poller group number, as in LibreNMS (`0` is the default group).
pub type GroupId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DeviceStatus {
    /// Added, never polled yet.
    #[default]
    Pending,
    Up,
    Down,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Up => "up",
            DeviceStatus::Down => "down",
        }
    }
}

/// A device as an operator adds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    pub hostname: String,
    /// IP address or resolvable name the agent listens on.
    pub address: String,
    pub port: u16,
    pub credentials: SnmpCredentials,
    pub group: GroupId,
}

/// sysName / sysDescr / sysObjectID as last discovered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SystemInfo {
    pub sys_name: String,
    pub sys_descr: String,
    pub sys_object_id: String,
}

/// A discovered interface with its stable, state-machine allocated id.
///
/// Only what every node must agree on: the id, the ifIndex the poller reads
/// its counters at, and the key a later discovery matches it by. The names
/// themselves stay on the node that discovered them ([`crate::storage::PortNames`]):
/// kept here they were most of every node's memory (two strings per port,
/// 3 million ports at 100,000 switches).
///
/// The id is held in 32 bits (LibreNMS's `ports.port_id` is an `int
/// unsigned` too): 16 bytes a port instead of 24, 24 MB on every node at 3
/// million ports. The encoding is the same as a [`PortId`]'s (a varint), so
/// stored states read as before; an id past `u32::MAX` is never handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    port_id: u32,
    pub ifindex: u32,
    pub key: PortKey,
}

impl Port {
    /// The port, or `None` if `port_id` does not fit in the 32 bits a port
    /// id may use.
    pub fn new(port_id: PortId, ifindex: u32, key: PortKey) -> Option<Port> {
        Some(Port {
            port_id: u32::try_from(port_id).ok()?,
            ifindex,
            key,
        })
    }

    pub fn port_id(&self) -> PortId {
        PortId::from(self.port_id)
    }
}

/// What a port is recognised by across discoveries: its ifName, or, without
/// one, its ifDescr, or nothing (then its ifIndex), as a 62-bit FNV-1a hash
/// tagged with which of the three it is. Hashes, not strings, so a port costs
/// the same few bytes on every node whatever its names; two names of one
/// device colliding is about as likely as 1 in 10^13 for a 1,000-port device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortKey(u64);

impl PortKey {
    const NONE: u64 = 0;
    const NAME: u64 = 1;
    const DESCR: u64 = 2;

    /// The key of an interface with these names (LibreNMS's ifName → ifDescr
    /// → ifIndex association order).
    pub fn of(ifname: &str, ifdescr: &str) -> PortKey {
        if !ifname.is_empty() {
            PortKey::name(ifname)
        } else if !ifdescr.is_empty() {
            PortKey::descr(ifdescr)
        } else {
            PortKey(Self::NONE)
        }
    }

    /// The key of a port known by this (non-empty) ifName.
    pub fn name(ifname: &str) -> PortKey {
        PortKey(fnv1a(ifname.as_bytes()) << 2 | Self::NAME)
    }

    /// The key of a port without an ifName, known by this ifDescr.
    pub fn descr(ifdescr: &str) -> PortKey {
        PortKey(fnv1a(ifdescr.as_bytes()) << 2 | Self::DESCR)
    }

    /// The key as one number (for encodings outside serde).
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether the port had an ifName when it was discovered.
    pub fn has_name(self) -> bool {
        self.0 & 3 == Self::NAME
    }
}

/// 64-bit FNV-1a: fixed by its two constants, so every node and every
/// version computes the same key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An interface as seen by one discovery run, before it has a port id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredPort {
    pub ifindex: u32,
    pub ifname: String,
    pub ifdescr: String,
}

/// An interface of a [`KeyedDiscovery`]: the keys of its ifName and ifDescr
/// in place of the names, all the state machine needs to match it with the
/// ports it knows. A key is 0 where the device gave no such name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedPort {
    pub ifindex: u32,
    // Fixed 8 bytes: a hash as a varint takes 10.
    #[serde(with = "postcard::fixint::le")]
    name: u64,
    #[serde(with = "postcard::fixint::le")]
    descr: u64,
}

impl KeyedPort {
    pub fn of(port: &DiscoveredPort) -> KeyedPort {
        let key = |text: &str, of: fn(&str) -> PortKey| {
            if text.is_empty() { 0 } else { of(text).bits() }
        };
        KeyedPort {
            ifindex: port.ifindex,
            name: key(&port.ifname, PortKey::name),
            descr: key(&port.ifdescr, PortKey::descr),
        }
    }

    /// The key of its ifName, if it has one.
    pub fn name_key(&self) -> Option<PortKey> {
        (self.name != 0).then_some(PortKey(self.name))
    }

    /// The key of its ifDescr, if it has one.
    pub fn descr_key(&self) -> Option<PortKey> {
        (self.descr != 0).then_some(PortKey(self.descr))
    }

    /// The key it is recognised by ([`PortKey::of`] of its names).
    pub fn key(&self) -> PortKey {
        self.name_key()
            .or(self.descr_key())
            .unwrap_or(PortKey(PortKey::NONE))
    }
}

/// hrProcessorTable row (`hrDeviceIndex`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processor {
    pub index: u32,
    pub descr: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageKind {
    /// hrStorageFixedDisk, network disk, … → `storage-hrstorage-<descr>.rrd`
    Disk,
    /// hrStorageRam / virtual memory / other memory → `mempool-hrstorage-<index>.rrd`
    Memory,
}

/// hrStorageTable row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    pub index: u32,
    pub descr: String,
    pub kind: StorageKind,
    /// hrStorageAllocationUnits, bytes.
    pub units: u32,
}

/// What one discovery run found on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Discovery {
    pub system: SystemInfo,
    pub ports: Vec<DiscoveredPort>,
    pub processors: Vec<Processor>,
    pub storages: Vec<Storage>,
}

impl Discovery {
    /// The same discovery with each port's names replaced by their keys.
    pub fn keyed(&self) -> KeyedDiscovery {
        KeyedDiscovery {
            system: self.system.clone(),
            ports: self.ports.iter().map(KeyedPort::of).collect(),
            processors: self.processors.clone(),
            storages: self.storages.clone(),
        }
    }
}

/// A [`Discovery`] as the log carries it from feature level 4 on: the port
/// names stay on the node that discovered them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeyedDiscovery {
    pub system: SystemInfo,
    pub ports: Vec<KeyedPort>,
    pub processors: Vec<Processor>,
    pub storages: Vec<Storage>,
}

/// Everything the poller needs to know about a device's inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Inventory {
    pub system: SystemInfo,
    pub ports: Vec<Port>,
    pub processors: Vec<Processor>,
    pub storages: Vec<Storage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub hostname: String,
    pub address: String,
    pub port: u16,
    pub credentials: SnmpCredentials,
    pub group: GroupId,
    /// Node that polls it; `None` while no live node serves its group.
    pub owner: Option<NodeId>,
    pub status: DeviceStatus,
    /// Why the device is down (timeout, authentication failure, …).
    pub reason: Option<String>,
    /// Unix seconds of the start of the last poll.
    pub last_polled: Option<u64>,
    /// Unix milliseconds of the last granted poll claim.
    pub last_claim_ms: Option<u64>,
    pub last_poll_ms: Option<u64>,
    /// Unix seconds of the last discovery.
    pub last_discovered: Option<u64>,
    /// Shared, so a poll's copy of the device does not copy every port
    /// (encoded exactly as the inventory itself).
    pub inventory: Arc<Inventory>,
}

/// A node as it registered itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub name: String,
    /// Advertised gRPC address, reachable by peers and operators.
    pub addr: String,
    pub groups: Vec<GroupId>,
}

/// Outcome of one poll, sent to the log in batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollReport {
    pub hostname: String,
    pub polled_at: u64,
    pub duration_ms: u64,
    pub status: DeviceStatus,
    pub reason: Option<String>,
}

/// A change to the replicated state. Applying one is deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Reserve the next node id for a node that has none yet.
    AllocateNodeId,
    /// Insert or update a node's name, address and groups.
    UpsertNode(NodeInfo),
    RemoveNode {
        id: NodeId,
    },
    /// A graceful leave: hands the node's devices to `moves` (computed by
    /// the leader) and removes the node, in one entry, so no device is ever
    /// left without an owner in between.
    Drain {
        id: NodeId,
        moves: Vec<(String, Option<NodeId>)>,
    },
    AddDevice(NewDevice),
    RemoveDevice {
        hostname: String,
    },
    SetDeviceGroup {
        hostname: String,
        group: GroupId,
    },
    /// Ownership changes decided by the leader, applied together.
    Assign {
        moves: Vec<(String, Option<NodeId>)>,
    },
    /// A node asks to start polling these devices at `at` (unix seconds).
    /// Granted only for devices it owns that were not polled within the last
    /// `up_gap_ms` (`down_gap_ms` for a device that is down): claims are
    /// serialised by the log, so two nodes can never both poll a device in
    /// one interval, and a node cut off from the quorum cannot claim at all.
    ClaimPolls {
        node: NodeId,
        /// Unix milliseconds.
        at_ms: u64,
        up_gap_ms: u64,
        down_gap_ms: u64,
        hostnames: Vec<String>,
    },
    /// Outcomes of finished polls (status, duration, reason).
    PollReports {
        node: NodeId,
        reports: Vec<PollReport>,
    },
    Discovered {
        hostname: String,
        at: u64,
        discovery: Discovery,
    },
    // New variants go last: bincode and postcard number variants in order, and logs
    // written by older versions must still decode.
    /// Many devices in one entry (bulk import). Hostnames already present
    /// are skipped and reported, so an import can be re-run.
    AddDevices(Vec<NewDevice>),
    /// New address, port, credentials or group of existing devices (an
    /// inventory sync from LibreNMS); unknown hostnames are skipped. A device
    /// whose group changes is unassigned, as with `SetDeviceGroup`.
    UpdateDevices(Vec<NewDevice>),
    /// Removes many devices in one entry; unknown hostnames are skipped.
    RemoveDevices(Vec<String>),
    /// A discovery whose port ids come from LibreNMS's `ports` table (by
    /// ifIndex) instead of the state machine's counter; interfaces without
    /// an id are left out until the next discovery.
    DiscoveredPorts {
        hostname: String,
        at: u64,
        discovery: Discovery,
        port_ids: BTreeMap<u32, PortId>,
    },
    // Feature level 2 from here on (see `Command::feature_level`).
    /// [`Command::AddDevices`] with each distinct credential stored once
    /// (a bulk import usually shares a few communities among thousands of
    /// devices): `devices[i].credentials` indexes `credentials`.
    AddDevicesPacked {
        credentials: Vec<SnmpCredentials>,
        devices: Vec<PackedDevice>,
    },
    // Feature level 4 from here on.
    /// [`Command::Discovered`] (`port_ids: None`) or
    /// [`Command::DiscoveredPorts`] (`Some`, LibreNMS's ids) with each port's
    /// names replaced by their keys: about 60 % of the bytes through the log
    /// for short names, far less for long ifDescrs, and applied the same way.
    /// The leader writes a discovery so once the cluster's level allows
    /// ([`Command::for_level`]).
    DiscoveredKeys {
        hostname: String,
        at: u64,
        discovery: KeyedDiscovery,
        port_ids: Option<BTreeMap<u32, PortId>>,
    },
    // Feature level 5 from here on.
    /// [`Command::ClaimPolls`] that may also replace claims of this node's
    /// that it never polled under: for the devices listed in `abandoned`
    /// (an index into `hostnames`, and the abandoned claim's `at_ms`), a
    /// device whose last claim is still that one, by this node, is granted
    /// even within the gap. A claim answered after its claimer stopped
    /// waiting would otherwise hold the device unpolled for a whole gap, and
    /// only the claimer knows that no poll was begun under it.
    ClaimPollsAgain {
        node: NodeId,
        at_ms: u64,
        up_gap_ms: u64,
        down_gap_ms: u64,
        hostnames: Vec<String>,
        abandoned: Vec<(u32, u64)>,
    },
    // Feature level 6 from here on.
    /// Several commands in one entry, applied in order, each as if alone (a
    /// node's poll reports riding with its claim): one append, replication
    /// round and apply on every node instead of one per command.
    Batch(Vec<Command>),
}

/// A device of [`Command::AddDevicesPacked`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedDevice {
    pub hostname: String,
    pub address: String,
    pub port: u16,
    /// Index into the command's credentials.
    pub credentials: u32,
    pub group: GroupId,
}

/// The feature level of [`Command::DiscoveredKeys`].
const KEYED_DISCOVERY_LEVEL: u32 = 4;
/// The feature level of [`Command::ClaimPollsAgain`].
pub const CLAIM_AGAIN_LEVEL: u32 = 5;
/// The feature level of [`Command::Batch`].
pub const BATCH_LEVEL: u32 = 6;

/// Why an entry kind cannot be applied by this node.
#[derive(Debug, thiserror::Error)]
#[error(
    "entry kind {kind} needs feature level {needs}, this node supports level {supports}: upgrade it"
)]
pub struct UnsupportedEntry {
    pub kind: &'static str,
    pub needs: u32,
    pub supports: u32,
}

impl Command {
    /// The variant's name, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::AllocateNodeId => "AllocateNodeId",
            Command::UpsertNode(_) => "UpsertNode",
            Command::RemoveNode { .. } => "RemoveNode",
            Command::Drain { .. } => "Drain",
            Command::AddDevice(_) => "AddDevice",
            Command::RemoveDevice { .. } => "RemoveDevice",
            Command::SetDeviceGroup { .. } => "SetDeviceGroup",
            Command::Assign { .. } => "Assign",
            Command::ClaimPolls { .. } => "ClaimPolls",
            Command::PollReports { .. } => "PollReports",
            Command::Discovered { .. } => "Discovered",
            Command::AddDevices(_) => "AddDevices",
            Command::UpdateDevices(_) => "UpdateDevices",
            Command::RemoveDevices(_) => "RemoveDevices",
            Command::DiscoveredPorts { .. } => "DiscoveredPorts",
            Command::AddDevicesPacked { .. } => "AddDevicesPacked",
            Command::DiscoveredKeys { .. } => "DiscoveredKeys",
            Command::ClaimPollsAgain { .. } => "ClaimPollsAgain",
            Command::Batch(_) => "Batch",
        }
    }

    /// Whether it is (or carries) a poll claim, which is of use only early
    /// in its time budget.
    pub fn is_claim(&self) -> bool {
        match self {
            Command::ClaimPolls { .. } | Command::ClaimPollsAgain { .. } => true,
            Command::Batch(cmds) => cmds.iter().any(Command::is_claim),
            _ => false,
        }
    }

    /// The lowest feature level (see [`crate::cluster::features`]) whose
    /// nodes can decode and apply this kind of entry. A new kind gets the
    /// level of the version that introduces it.
    pub fn feature_level(&self) -> u32 {
        match self {
            Command::AddDevicesPacked { .. } => 2,
            Command::DiscoveredKeys { .. } => KEYED_DISCOVERY_LEVEL,
            Command::ClaimPollsAgain { .. } => CLAIM_AGAIN_LEVEL,
            Command::Batch(cmds) => cmds
                .iter()
                .map(Command::feature_level)
                .fold(BATCH_LEVEL, u32::max),
            _ => 1,
        }
    }

    /// Refuses a kind above `level` (a node held at an older level).
    pub fn check_level(&self, level: u32) -> Result<(), UnsupportedEntry> {
        let needs = self.feature_level();
        if needs > level {
            return Err(UnsupportedEntry {
                kind: self.kind(),
                needs,
                supports: level,
            });
        }
        Ok(())
    }

    /// The same change in entry kinds a cluster at `level` applies: a
    /// discovery with port names in its keyed form once the level allows,
    /// else the command itself if its level allows, else its older
    /// equivalent.
    pub fn for_level(mut self, level: u32) -> Result<Command, UnsupportedEntry> {
        if let Command::Batch(cmds) = self {
            // Below its level a batch has no older equivalent in one entry:
            // refused, and its sender proposes its parts alone.
            let cmds = cmds
                .into_iter()
                .map(|c| c.for_level(level))
                .collect::<Result<_, _>>()?;
            let batch = Command::Batch(cmds);
            return batch.check_level(level).map(|()| batch);
        }
        if level >= KEYED_DISCOVERY_LEVEL {
            self = self.with_port_keys();
        }
        if self.feature_level() <= level {
            return Ok(self);
        }
        match self {
            Command::AddDevicesPacked { .. } => match self.unpack() {
                Some(devices) => Ok(Command::AddDevices(devices)),
                // Bad indexes: kept, so the state machine refuses it as it
                // would on any node.
                None => Ok(self),
            },
            // Below its level no claim is replaced: the plain claim, which
            // the log refuses within the gap as before.
            Command::ClaimPollsAgain {
                node,
                at_ms,
                up_gap_ms,
                down_gap_ms,
                hostnames,
                abandoned: _,
            } => Ok(Command::ClaimPolls {
                node,
                at_ms,
                up_gap_ms,
                down_gap_ms,
                hostnames,
            }),
            other => other.check_level(level).map(|()| other),
        }
    }

    /// A discovery with port names as [`Command::DiscoveredKeys`]; any other
    /// command as it is.
    fn with_port_keys(self) -> Command {
        let (hostname, at, discovery, port_ids) = match self {
            Command::Discovered {
                hostname,
                at,
                discovery,
            } => (hostname, at, discovery, None),
            Command::DiscoveredPorts {
                hostname,
                at,
                discovery,
                port_ids,
            } => (hostname, at, discovery, Some(port_ids)),
            other => return other,
        };
        Command::DiscoveredKeys {
            hostname,
            at,
            discovery: discovery.keyed(),
            port_ids,
        }
    }

    /// Packs a bulk add ([`Command::AddDevicesPacked`]).
    pub fn pack_devices(devices: Vec<NewDevice>) -> Command {
        let mut credentials: Vec<SnmpCredentials> = Vec::new();
        let packed = devices
            .into_iter()
            .map(|d| {
                let index = match credentials.iter().position(|c| *c == d.credentials) {
                    Some(i) => i,
                    None => {
                        credentials.push(d.credentials);
                        credentials.len() - 1
                    }
                };
                PackedDevice {
                    hostname: d.hostname,
                    address: d.address,
                    port: d.port,
                    credentials: index as u32,
                    group: d.group,
                }
            })
            .collect();
        Command::AddDevicesPacked {
            credentials,
            devices: packed,
        }
    }

    /// The devices of an [`Command::AddDevicesPacked`], or `None` if one
    /// names a credential index out of range (or it is another kind).
    pub fn unpack(&self) -> Option<Vec<NewDevice>> {
        let Command::AddDevicesPacked {
            credentials,
            devices,
        } = self
        else {
            return None;
        };
        devices
            .iter()
            .map(|d| {
                credentials.get(d.credentials as usize).map(|c| NewDevice {
                    hostname: d.hostname.clone(),
                    address: d.address.clone(),
                    port: d.port,
                    credentials: c.clone(),
                    group: d.group,
                })
            })
            .collect()
    }

    /// Whether applying it can change which node owns which device (or the
    /// set of devices): the scheduler only re-reads its devices after these.
    pub fn changes_owners(&self) -> bool {
        match self {
            Command::RemoveNode { .. }
            | Command::Drain { .. }
            | Command::AddDevice(_)
            | Command::AddDevices(_)
            | Command::AddDevicesPacked { .. }
            | Command::UpdateDevices(_)
            | Command::RemoveDevices(_)
            | Command::RemoveDevice { .. }
            | Command::SetDeviceGroup { .. }
            | Command::Assign { .. } => true,
            Command::Batch(cmds) => cmds.iter().any(Command::changes_owners),
            Command::AllocateNodeId
            | Command::UpsertNode(_)
            | Command::ClaimPolls { .. }
            | Command::ClaimPollsAgain { .. }
            | Command::PollReports { .. }
            | Command::Discovered { .. }
            | Command::DiscoveredPorts { .. }
            | Command::DiscoveredKeys { .. } => false,
        }
    }
}

// openraft requires `Display` on log payloads (it shows them in its own logs).
// Only names and hostnames: credentials never reach a log line.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::AllocateNodeId => write!(f, "AllocateNodeId"),
            Command::UpsertNode(n) => write!(f, "UpsertNode({} {})", n.id, n.name),
            Command::RemoveNode { id } => write!(f, "RemoveNode({id})"),
            Command::Drain { id, moves } => write!(f, "Drain({id}, {} moves)", moves.len()),
            Command::AddDevice(d) => write!(f, "AddDevice({})", d.hostname),
            Command::AddDevices(ds) => write!(f, "AddDevices({} devices)", ds.len()),
            Command::AddDevicesPacked {
                credentials,
                devices,
            } => write!(
                f,
                "AddDevicesPacked({} devices, {} credentials)",
                devices.len(),
                credentials.len()
            ),
            Command::UpdateDevices(ds) => write!(f, "UpdateDevices({} devices)", ds.len()),
            Command::RemoveDevices(hs) => write!(f, "RemoveDevices({} devices)", hs.len()),
            Command::RemoveDevice { hostname } => write!(f, "RemoveDevice({hostname})"),
            Command::SetDeviceGroup { hostname, group } => {
                write!(f, "SetDeviceGroup({hostname}, {group})")
            }
            Command::Assign { moves } => write!(f, "Assign({} moves)", moves.len()),
            Command::ClaimPolls {
                node, hostnames, ..
            } => {
                write!(f, "ClaimPolls(node {node}, {} devices)", hostnames.len())
            }
            Command::ClaimPollsAgain {
                node,
                hostnames,
                abandoned,
                ..
            } => write!(
                f,
                "ClaimPollsAgain(node {node}, {} devices, {} abandoned claims)",
                hostnames.len(),
                abandoned.len()
            ),
            Command::PollReports { node, reports } => {
                write!(f, "PollReports(node {node}, {} reports)", reports.len())
            }
            Command::Discovered { hostname, .. } => write!(f, "Discovered({hostname})"),
            Command::DiscoveredPorts {
                hostname, port_ids, ..
            } => write!(f, "DiscoveredPorts({hostname}, {} ports)", port_ids.len()),
            Command::DiscoveredKeys {
                hostname,
                discovery,
                ..
            } => write!(
                f,
                "DiscoveredKeys({hostname}, {} ports)",
                discovery.ports.len()
            ),
            Command::Batch(cmds) => {
                write!(f, "Batch(")?;
                for (i, cmd) in cmds.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{cmd}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// Deterministic result of applying a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Ok,
    NodeIdAllocated(NodeId),
    /// Port ids after a discovery, by ifindex.
    PortIds(BTreeMap<u32, PortId>),
    /// Devices whose poll claim was granted.
    Claimed(Vec<String>),
    Rejected(Rejection),
    // New variants go last (see `Command`).
    /// Outcome of [`Command::AddDevices`]: how many were added, and the
    /// hostnames skipped because they already existed, in request order.
    DevicesAdded {
        added: u32,
        existing: Vec<String>,
    },
    /// Outcome of [`Command::Batch`]: each command's, in order.
    Batch(Vec<CommandResult>),
}

/// Why the state machine refused a command; shown to the operator as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("device '{0}' already exists")]
    DuplicateDevice(String),
    #[error("unknown device '{0}'")]
    UnknownDevice(String),
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    // New variants go last (see `Command`).
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::secret::Secret;
    use crate::snmp::credentials::{AuthProtocol, PrivProtocol, UsmCredentials};

    /// `value` encodes (format 3) to the bytes a version first wrote, and
    /// those decode to it: logs and peers holding them stay readable.
    fn assert_encodes_as_recorded<T>(value: &T, recorded: &[u8])
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        let bytes = codec::encode_version(value, 3).expect("encodes");
        assert_eq!(bytes, recorded, "{bytes:?}");
        let decoded: T = codec::decode(recorded).expect("recorded bytes decode");
        assert_eq!(&decoded, value);
    }

    /// `entry` (of `kind`) is written as it is from `level` on, and a node
    /// one level below refuses it, naming the kind and both levels.
    fn assert_first_at_level(entry: &Command, kind: &str, level: u32) {
        let below = level - 1;
        let err = entry
            .check_level(below)
            .expect_err("the level below refuses it");
        assert_eq!(
            err.to_string(),
            format!(
                "entry kind {kind} needs feature level {level}, this node supports level {below}: upgrade it"
            )
        );
        assert_eq!(entry.clone().for_level(level).expect("its level"), *entry);
    }

    /// A port's id is held in 32 bits but encoded as the 64-bit id was:
    /// states written before read the same, and a larger id is refused.
    #[test]
    fn a_port_is_16_bytes_and_encodes_as_with_a_64_bit_id() {
        assert_eq!(std::mem::size_of::<Port>(), 16);
        let key = PortKey::name("Gi0/1");
        let port = Port::new(300_000, 7, key).expect("fits");
        let as_before = (300_000u64, 7u32, key);
        let bytes = codec::encode(&port).expect("encodes");
        assert_eq!(bytes, codec::encode(&as_before).expect("encodes"));
        assert_eq!(codec::decode::<Port>(&bytes).expect("decodes"), port);
        let too_large = codec::encode(&(1u64 << 32, 7u32, key)).expect("encodes");
        assert!(codec::decode::<Port>(&too_large).is_err());
        assert_eq!(Port::new(1 << 32, 7, key), None);
    }

    #[test]
    fn port_keys_follow_the_association_order_and_never_change() {
        assert_eq!(
            PortKey::of("Gi0/1", "GigabitEthernet0/1"),
            PortKey::name("Gi0/1")
        );
        assert_eq!(PortKey::of("", "eth0"), PortKey::descr("eth0"));
        assert_eq!(PortKey::of("", ""), PortKey(0));
        // The same text as a name and as a description are different keys.
        assert_ne!(PortKey::name("eth0"), PortKey::descr("eth0"));
        assert!(PortKey::name("eth0").has_name());
        assert!(!PortKey::descr("eth0").has_name() && !PortKey::of("", "").has_name());
        // Replicated: every node and every later version must compute these
        // same numbers (FNV-1a of "eth0", shifted, tagged).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(PortKey::name("a").bits(), 0xaf63_dc4c_8601_ec8c << 2 | 1);
    }

    /// Every credentials variant, in an entry as the log stores it.
    fn entry_with_every_credential() -> Command {
        let creds = [
            SnmpCredentials::V1 {
                community: Secret::new("pub"),
            },
            SnmpCredentials::V2c {
                community: Secret::new("c2"),
            },
            SnmpCredentials::V3(Box::new(UsmCredentials {
                user: "u".into(),
                auth: Some((AuthProtocol::Sha256, Secret::new("ap"))),
                privacy: Some((PrivProtocol::Aes128, Secret::new("pp"))),
            })),
            SnmpCredentials::V3(Box::new(UsmCredentials {
                user: "v".into(),
                auth: Some((AuthProtocol::Sha512, Secret::new("a"))),
                privacy: None,
            })),
        ];
        Command::AddDevices(
            creds
                .into_iter()
                .enumerate()
                .map(|(i, credentials)| NewDevice {
                    hostname: format!("h{i}"),
                    address: "10.0.0.1".into(),
                    port: 161,
                    credentials,
                    group: 1,
                })
                .collect(),
        )
    }

    /// Bytes of [`entry_with_every_credential`] recorded while the credential
    /// types still lived in this module: logs and snapshots written by older
    /// versions must decode, so moving the types must not change them.
    const RECORDED: &[u8] = &[
        11, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 104, 48, 8, 0, 0, 0, 0, 0, 0,
        0, 49, 48, 46, 48, 46, 48, 46, 49, 161, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 112, 117,
        98, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 104, 49, 8, 0, 0, 0, 0, 0, 0, 0, 49, 48, 46, 48,
        46, 48, 46, 49, 161, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 99, 50, 1, 0, 0, 0, 2, 0, 0, 0,
        0, 0, 0, 0, 104, 50, 8, 0, 0, 0, 0, 0, 0, 0, 49, 48, 46, 48, 46, 48, 46, 49, 161, 0, 2, 0,
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 117, 1, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 97, 112, 1, 1, 0,
        0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 112, 112, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 104, 51, 8, 0,
        0, 0, 0, 0, 0, 0, 49, 48, 46, 48, 46, 48, 46, 49, 161, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
        0, 118, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 97, 0, 1, 0, 0, 0,
    ];

    #[test]
    fn credentials_encode_as_before_their_move() {
        let entry = entry_with_every_credential();
        assert_eq!(codec::encode_version(&entry, 1).expect("encodes"), RECORDED);
        let decoded: Command = codec::decode(RECORDED).expect("old bytes decode");
        assert_eq!(decoded, entry);
        let current: Command =
            codec::decode(&codec::encode(&entry).expect("encodes")).expect("decodes");
        assert_eq!(current, entry);
    }

    /// The discovery of [`DISCOVERED_KEYS`]: two ports of the test bed's
    /// switch, one with only an ifDescr, and LibreNMS's ids.
    fn keyed_discovery() -> Command {
        let port = |ifindex, ifname: &str, ifdescr: &str| DiscoveredPort {
            ifindex,
            ifname: ifname.into(),
            ifdescr: ifdescr.into(),
        };
        Command::DiscoveredPorts {
            hostname: "sw1".into(),
            at: 1_700_000_000,
            discovery: Discovery {
                system: SystemInfo {
                    sys_name: "sw1".into(),
                    sys_descr: "d".into(),
                    sys_object_id: ".1.3".into(),
                },
                ports: vec![port(1, "Gi0/1", "GigabitEthernet0/1"), port(2, "", "lo")],
                processors: vec![Processor {
                    index: 1,
                    descr: "cpu".into(),
                }],
                storages: vec![],
            },
            port_ids: BTreeMap::from([(1, 7), (2, 8)]),
        }
        .for_level(4)
        .expect("level 4")
    }

    /// [`keyed_discovery`] as feature level 4 first wrote it (format 3):
    /// logs holding it must decode in every later version.
    const DISCOVERED_KEYS: &[u8] = &[
        255, 82, 80, 70, 3, 0, 0, 255, 16, 3, 115, 119, 49, 128, 226, 207, 170, 6, 3, 115, 119, 49,
        1, 100, 4, 46, 49, 46, 51, 2, 1, 109, 89, 37, 173, 146, 29, 158, 73, 134, 131, 18, 245, 16,
        74, 132, 168, 2, 0, 0, 0, 0, 0, 0, 0, 0, 178, 227, 79, 213, 30, 228, 180, 34, 1, 1, 3, 99,
        112, 117, 0, 1, 2, 1, 7, 2, 8,
    ];

    #[test]
    fn a_keyed_discovery_encodes_as_recorded() {
        let entry = keyed_discovery();
        assert_encodes_as_recorded(&entry, DISCOVERED_KEYS);
    }

    fn claim_again() -> Command {
        Command::ClaimPollsAgain {
            node: 3,
            at_ms: 1_700_000_002_000,
            up_gap_ms: 299_900,
            down_gap_ms: 59_900,
            hostnames: vec!["sw1".into(), "sw2".into()],
            abandoned: vec![(1, 1_700_000_000_000)],
        }
    }

    /// [`claim_again`] as feature level 5 first wrote it (format 3).
    const CLAIM_POLLS_AGAIN: &[u8] = &[
        255, 82, 80, 70, 3, 0, 0, 255, 17, 3, 208, 223, 149, 255, 188, 49, 252, 166, 18, 252, 211,
        3, 2, 3, 115, 119, 49, 3, 115, 119, 50, 1, 1, 128, 208, 149, 255, 188, 49,
    ];

    #[test]
    fn a_claim_again_encodes_as_recorded_and_is_a_plain_claim_below_level_5() {
        let entry = claim_again();
        assert_encodes_as_recorded(&entry, CLAIM_POLLS_AGAIN);
        assert_first_at_level(&entry, "ClaimPollsAgain", 5);
        assert_eq!(
            entry.for_level(4).expect("level 4"),
            Command::ClaimPolls {
                node: 3,
                at_ms: 1_700_000_002_000,
                up_gap_ms: 299_900,
                down_gap_ms: 59_900,
                hostnames: vec!["sw1".into(), "sw2".into()],
            }
        );
    }

    /// A claim with the reports riding along, as feature level 6 first
    /// wrote it (format 3), and its result.
    fn reports_and_claim() -> Command {
        Command::Batch(vec![
            Command::PollReports {
                node: 3,
                reports: vec![PollReport {
                    hostname: "sw1".into(),
                    polled_at: 1_700_000_000,
                    duration_ms: 120,
                    status: DeviceStatus::Up,
                    reason: None,
                }],
            },
            claim_again(),
        ])
    }
    const REPORTS_AND_CLAIM: &[u8] = &[
        255, 82, 80, 70, 3, 0, 0, 255, 18, 2, 9, 3, 1, 3, 115, 119, 49, 128, 226, 207, 170, 6, 120,
        1, 0, 17, 3, 208, 223, 149, 255, 188, 49, 252, 166, 18, 252, 211, 3, 2, 3, 115, 119, 49, 3,
        115, 119, 50, 1, 1, 128, 208, 149, 255, 188, 49,
    ];
    const REPORTS_AND_CLAIM_RESULT: &[u8] = &[
        255, 82, 80, 70, 3, 0, 0, 255, 6, 2, 0, 3, 1, 3, 115, 119, 50,
    ];

    #[test]
    fn a_batch_encodes_as_recorded_and_only_from_level_6() {
        let entry = reports_and_claim();
        assert_encodes_as_recorded(&entry, REPORTS_AND_CLAIM);
        let result = CommandResult::Batch(vec![
            CommandResult::Ok,
            CommandResult::Claimed(vec!["sw2".into()]),
        ]);
        assert_encodes_as_recorded(&result, REPORTS_AND_CLAIM_RESULT);

        assert!(entry.is_claim());
        assert!(!entry.changes_owners());
        assert_first_at_level(&entry, "Batch", 6);
        assert!(
            entry.for_level(5).is_err(),
            "no older entry holds several commands"
        );
    }

    #[test]
    fn a_discovery_goes_keyed_only_from_level_4_and_is_smaller() {
        let entry = keyed_discovery();
        let err = entry.check_level(3).expect_err("level 3 refuses it");
        assert!(
            err.to_string()
                .contains("DiscoveredKeys needs feature level 4"),
            "{err}"
        );
        // The test bed's switch: 30 ports named as above.
        let ports: Vec<DiscoveredPort> = (1..=30)
            .map(|i| DiscoveredPort {
                ifindex: i,
                ifname: format!("Gi0/{i}"),
                ifdescr: format!("GigabitEthernet0/{i}"),
            })
            .collect();
        let named = Command::Discovered {
            hostname: "sw1".into(),
            at: 1,
            discovery: Discovery {
                ports,
                ..Default::default()
            },
        };
        let keyed = named.clone().for_level(4).expect("level 4");
        let size = |c: &Command| codec::encode(c).expect("encodes").len();
        assert!(
            size(&keyed) * 10 < size(&named) * 7,
            "{} bytes keyed, {} with names",
            size(&keyed),
            size(&named)
        );
        // Below level 4 the names go as before.
        assert_eq!(named.clone().for_level(3).expect("level 3"), named);
    }

    #[test]
    fn a_packed_bulk_add_is_written_as_the_older_kind_below_its_level() {
        let Command::AddDevices(devices) = entry_with_every_credential() else {
            unreachable!()
        };
        let mut shared = devices.clone();
        for d in &mut shared {
            d.credentials = devices[1].credentials.clone();
        }
        shared.extend(devices.clone().into_iter().map(|mut d| {
            d.hostname.push('x');
            d
        }));
        let packed = Command::pack_devices(shared.clone());
        let Command::AddDevicesPacked { credentials, .. } = &packed else {
            panic!("not packed: {packed}")
        };
        assert_eq!(credentials.len(), 4, "each credential stored once");
        assert_eq!(packed.unpack(), Some(shared.clone()));
        assert_eq!(packed.feature_level(), 2);
        assert!(
            codec::encode(&packed).expect("encodes").len()
                < codec::encode(&Command::AddDevices(shared.clone()))
                    .expect("encodes")
                    .len()
        );
        // At level 2 it stays; at level 1 it becomes the older kind, with
        // the same devices.
        assert_eq!(packed.clone().for_level(2).expect("level 2"), packed);
        assert_eq!(
            packed.clone().for_level(1).expect("level 1"),
            Command::AddDevices(shared.clone())
        );
        // A node held at level 1 refuses it, naming kind and levels.
        let err = packed.check_level(1).expect_err("level 1 node");
        assert_eq!(
            err.to_string(),
            "entry kind AddDevicesPacked needs feature level 2, this node supports level 1: upgrade it"
        );
        assert!(Command::AddDevices(shared.clone()).check_level(1).is_ok());
        // Applying either kind gives the same state.
        let mut a = crate::model::state::ClusterState::default();
        let mut b = a.clone();
        let ra = a.apply(&packed);
        let rb = b.apply(&Command::AddDevices(shared));
        assert_eq!((ra, &a), (rb, &b));
        // A bad index is refused deterministically, never a panic.
        let Command::AddDevicesPacked {
            credentials,
            mut devices,
        } = packed
        else {
            unreachable!()
        };
        devices[0].credentials = 99;
        let bad = Command::AddDevicesPacked {
            credentials,
            devices,
        };
        let mut c = crate::model::state::ClusterState::default();
        assert!(matches!(
            c.apply(&bad),
            CommandResult::Rejected(Rejection::InvalidEntry(_))
        ));
        assert!(c.devices.is_empty());
    }
}
