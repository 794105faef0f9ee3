//! openraft's type configuration for raftpoll and the aliases built on it,
//! shared by `storage` (which persists them) and `cluster` (which runs Raft).

use crate::model::types::{Command, CommandResult, NodeId};

openraft::declare_raft_types!(
    /// Raft types of raftpoll: the log carries [`Command`]s, applying one yields a
    /// [`CommandResult`]; a node's `BasicNode::addr` is its advertised gRPC address.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// Snapshot payloads are the state machine in the [`crate::codec`] encoding,
/// in memory or in the snapshot file.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::storage::SnapshotData>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
pub type RaftError<E = std::convert::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
