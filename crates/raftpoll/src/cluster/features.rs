//! Feature levels for rolling upgrades: what each member supports, and the
//! cluster's level (the lowest of its members').
//!
//! A node's feature level says which log entry kinds it can apply and which
//! format versions it reads (level 1: format 1 only; level 2: formats 1–2;
//! level 3: formats 1–3; level 4: formats 1–3 and keyed discoveries; level 5:
//! also claims that replace an abandoned claim; level 6: also batches of
//! commands in one entry; level 7: also the AppendEntries stream between
//! peers, a transport feature that gates no entry kind).
//! Every Raft RPC (and AppendEntries stream) carries the sender's level and
//! version in gRPC metadata, and every reply the answering node's; a node that sends none is a level-1 node
//! (raftpoll before feature levels). Nothing of this is replicated, so the
//! state machine stays pure: the leader learns its followers' levels from
//! their replies within one heartbeat, and tells followers the cluster's level
//! in its own requests. The leader proposes an entry kind only once the
//! cluster's level reaches it ([`crate::model::types::Command::for_level`]).

use crate::codec;
use crate::model::types::NodeId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tonic::metadata::MetadataMap;

/// The feature level of this version.
pub const FEATURE_LEVEL: u32 = 7;
/// The level from which a node serves and uses the AppendEntries stream.
pub const APPEND_STREAM_LEVEL: u32 = 7;
/// This build's version, as shown in `status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Hidden knob for upgrade tests: holds a node at a lower level, as if it
/// ran an older version (it advertises that level, is sent that level's
/// format, and refuses entry kinds above it).
pub const LEVEL_MAX_ENV: &str = "RAFTPOLL_FEATURE_LEVEL_MAX";

const LEVEL_HEADER: &str = "x-raftpoll-level";
const VERSION_HEADER: &str = "x-raftpoll-version";
const NODE_HEADER: &str = "x-raftpoll-node";
const CLUSTER_LEVEL_HEADER: &str = "x-raftpoll-cluster-level";

/// The newest format version a node of `level` reads.
pub fn format_for_level(level: u32) -> u16 {
    match level {
        0 | 1 => 1,
        2 => 2,
        _ => codec::FORMAT_VERSION,
    }
}

/// The cluster's level: the lowest of the members', where a member not heard
/// from yet counts as level 1 (it may be an older node).
pub fn cluster_level(
    local: u32,
    known: &BTreeMap<NodeId, PeerFeatures>,
    members: impl IntoIterator<Item = NodeId>,
    me: NodeId,
) -> u32 {
    members
        .into_iter()
        .filter(|id| *id != me)
        .map(|id| known.get(&id).map_or(1, |p| p.level))
        .fold(local, u32::min)
}

/// What a peer said about itself in its last RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFeatures {
    pub level: u32,
    /// Empty for a node older than feature levels.
    pub version: String,
}

/// This node's level and what it learned of its peers'. Cheap to clone.
#[derive(Clone)]
pub struct Features {
    inner: Arc<Inner>,
}

struct Inner {
    local: u32,
    peers: Mutex<BTreeMap<NodeId, PeerFeatures>>,
    /// The cluster's level as the leader last said (0: not told yet).
    told: AtomicU32,
}

impl Default for Features {
    fn default() -> Self {
        Features::new(FEATURE_LEVEL)
    }
}

impl Features {
    pub fn new(local: u32) -> Features {
        Features {
            inner: Arc::new(Inner {
                local: local.clamp(1, FEATURE_LEVEL),
                peers: Mutex::default(),
                told: AtomicU32::new(0),
            }),
        }
    }

    /// This version's level, lowered by [`LEVEL_MAX_ENV`] if set. An
    /// unparsable value is an error naming the variable.
    pub fn from_env() -> Result<Features, String> {
        match std::env::var(LEVEL_MAX_ENV) {
            Err(_) => Ok(Features::default()),
            Ok(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|l| *l >= 1)
                .map(|l| Features::new(l.min(FEATURE_LEVEL)))
                .ok_or_else(|| format!("{LEVEL_MAX_ENV}={v:?} is not a level (1 or more)")),
        }
    }

    pub fn local_level(&self) -> u32 {
        self.inner.local
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, PeerFeatures>> {
        self.inner.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, node: NodeId, peer: PeerFeatures) {
        self.peers().insert(node, peer);
    }

    pub fn peer(&self, node: NodeId) -> Option<PeerFeatures> {
        self.peers().get(&node).cloned()
    }

    /// The level of `node` as far as known (1 if never heard from).
    pub fn level_of(&self, node: NodeId) -> u32 {
        self.peer(node).map_or(1, |p| p.level)
    }

    /// The format to write to `node`: the newest both sides read.
    pub fn format_for(&self, node: NodeId) -> u16 {
        format_for_level(self.level_of(node).min(self.inner.local))
    }

    /// The cluster's level over `members` (the leader's computation).
    pub fn cluster_level(&self, members: impl IntoIterator<Item = NodeId>, me: NodeId) -> u32 {
        cluster_level(self.inner.local, &self.peers(), members, me)
    }

    /// The cluster's level as the leader last said, at most this node's own
    /// (1 until told).
    pub fn told_cluster_level(&self) -> u32 {
        match self.inner.told.load(Ordering::Acquire) {
            0 => 1,
            l => l.min(self.inner.local),
        }
    }

    /// Remembers the cluster's level (the leader's own computation).
    pub fn tell(&self, level: u32) {
        self.inner.told.store(level.max(1), Ordering::Release);
    }

    /// Adds this node's id, level and version (and, from the leader, the
    /// cluster's level) to outgoing metadata.
    pub fn annotate(&self, md: &mut MetadataMap, me: NodeId, cluster_level: Option<u32>) {
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = v.parse() {
                md.insert(k, v);
            }
        };
        put(NODE_HEADER, me.to_string());
        put(LEVEL_HEADER, self.inner.local.to_string());
        put(VERSION_HEADER, VERSION.to_string());
        if let Some(l) = cluster_level {
            put(CLUSTER_LEVEL_HEADER, l.to_string());
        }
    }

    /// Records what incoming metadata says about `node` (or, for a request,
    /// about the node named in it). Metadata without a level is an older node.
    pub fn observe(&self, md: &MetadataMap, node: Option<NodeId>) {
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let Some(node) = node.or_else(|| get(NODE_HEADER).and_then(|v| v.parse().ok())) else {
            return;
        };
        let level = get(LEVEL_HEADER)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        let version = get(VERSION_HEADER).unwrap_or_default();
        self.record(node, PeerFeatures { level, version });
        if let Some(l) = get(CLUSTER_LEVEL_HEADER).and_then(|v| v.parse::<u32>().ok()) {
            self.inner.told.store(l.max(1), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(level: u32) -> PeerFeatures {
        PeerFeatures {
            level,
            version: "x".into(),
        }
    }

    #[test]
    fn the_cluster_runs_at_its_lowest_member() {
        let mut known = BTreeMap::new();
        // Alone: its own level.
        assert_eq!(cluster_level(2, &known, [1], 1), 2);
        // A member never heard from may be old.
        assert_eq!(cluster_level(2, &known, [1, 2, 3], 1), 1);
        known.insert(2, peer(2));
        assert_eq!(cluster_level(2, &known, [1, 2, 3], 1), 1);
        known.insert(3, peer(1));
        assert_eq!(cluster_level(2, &known, [1, 2, 3], 1), 1);
        known.insert(3, peer(2));
        assert_eq!(cluster_level(2, &known, [1, 2, 3], 1), 2);
        // A node held back holds the cluster back.
        assert_eq!(cluster_level(1, &known, [1, 2, 3], 1), 1);
        // Former members do not count.
        known.insert(9, peer(1));
        assert_eq!(cluster_level(2, &known, [1, 2, 3], 1), 2);
    }

    /// What the leader writes for a packed bulk add as members report in:
    /// the older kind until every member supports level 2.
    #[test]
    fn the_leader_writes_a_new_kind_only_once_every_member_supports_it() {
        use crate::model::types::{Command, NewDevice};
        use crate::secret::Secret;
        use crate::snmp::credentials::SnmpCredentials;
        let devices = vec![NewDevice {
            hostname: "sw1".into(),
            address: "127.0.0.1".into(),
            port: 161,
            credentials: SnmpCredentials::V2c {
                community: Secret::new("c"),
            },
            group: 0,
        }];
        let packed = Command::pack_devices(devices.clone());
        let leader = Features::new(FEATURE_LEVEL);
        let members = [1, 2, 3];
        let written = |f: &Features| {
            packed
                .clone()
                .for_level(f.cluster_level(members, 1))
                .expect("a kind for every level")
        };
        let older = Command::AddDevices(devices);
        assert_eq!(written(&leader), older, "nobody reported yet");
        let mut reply = MetadataMap::new();
        Features::new(2).annotate(&mut reply, 2, None);
        leader.observe(&reply, Some(2));
        assert_eq!(written(&leader), older, "node 3 not heard from");
        leader.observe(&MetadataMap::new(), Some(3));
        assert_eq!(written(&leader), older, "node 3 is an older node");
        let mut reply = MetadataMap::new();
        Features::new(2).annotate(&mut reply, 3, None);
        leader.observe(&reply, Some(3));
        assert_eq!(written(&leader), packed, "every member supports level 2");
        // Node 3 comes back held at level 1: back to the older kind.
        let mut reply = MetadataMap::new();
        Features::new(1).annotate(&mut reply, 3, None);
        leader.observe(&reply, Some(3));
        assert_eq!(written(&leader), older);
    }

    #[test]
    fn metadata_round_trip_and_old_nodes() {
        let leader = Features::new(2);
        let follower = Features::new(1);
        let mut md = MetadataMap::new();
        leader.annotate(&mut md, 1, Some(2));
        follower.observe(&md, None);
        assert_eq!(
            follower.peer(1),
            Some(PeerFeatures {
                level: 2,
                version: VERSION.into()
            })
        );
        // Told 2, but never above its own level.
        assert_eq!(follower.told_cluster_level(), 1);
        let mut reply = MetadataMap::new();
        follower.annotate(&mut reply, 2, None);
        leader.observe(&reply, Some(2));
        assert_eq!(leader.level_of(2), 1);
        assert_eq!(leader.format_for(2), 1);
        // A reply without any header: a node older than feature levels.
        leader.observe(&MetadataMap::new(), Some(3));
        assert_eq!(
            leader.peer(3),
            Some(PeerFeatures {
                level: 1,
                version: String::new()
            })
        );
        assert_eq!(leader.cluster_level([1, 2, 3], 1), 1);
        leader.record(2, peer(2));
        leader.record(3, peer(2));
        assert_eq!(leader.cluster_level([1, 2, 3], 1), 2);
        assert_eq!(leader.format_for(3), 2);
        // Both at this version's level: this version's format.
        let current = Features::new(FEATURE_LEVEL);
        current.record(3, peer(FEATURE_LEVEL));
        assert_eq!(current.format_for(3), codec::FORMAT_VERSION);
        current.record(3, peer(2));
        assert_eq!(current.format_for(3), 2);
    }
}
