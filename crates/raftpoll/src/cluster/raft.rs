//! openraft wiring: the type config, handy aliases and the Raft timing config.

use crate::cluster::types::{Command, CommandResult, NodeId};
use crate::storage::StateMachineStore;
use std::sync::Arc;

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

/// A running Raft node of raftpoll.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// Snapshot payloads are plain bytes (bincode, see [`crate::storage`]).
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
pub type RaftError<E = std::convert::Infallible> = openraft::errors::RaftError<TypeConfig, E>;

/// Default heartbeat interval: ~5 heartbeats per minimum election timeout on
/// loopback/LAN, so one lost heartbeat never triggers an election.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// Default election timeout range: a dead leader is replaced in roughly 1 s.
pub const DEFAULT_ELECTION_MIN_MS: u64 = 500;
pub const DEFAULT_ELECTION_MAX_MS: u64 = 1000;
/// Build a snapshot (and allow purging the log) every this many applied entries.
pub const SNAPSHOT_EVERY_LOGS: u64 = 5000;

/// Builds and validates the openraft config.
///
/// Timing is tuned for fast failover (see the `DEFAULT_*` constants); pre-vote is
/// on so a node that was cut off cannot depose a healthy leader by inflating
/// the term when it comes back.
pub fn raft_config(
    heartbeat_ms: u64,
    election_min_ms: u64,
    election_max_ms: u64,
) -> Result<Arc<openraft::Config>, openraft::ConfigError> {
    let config = openraft::Config {
        cluster_name: "raftpoll".to_string(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_min_ms,
        election_timeout_max: election_max_ms,
        // Snapshots are a few MB at most and go in one message.
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_LOGS),
        // Keep some log after a snapshot so a briefly lagging follower gets entries,
        // not a whole snapshot.
        max_in_snapshot_log_to_keep: 1000,
        // Must exceed the snapshot interval, or a lagging follower never catches up.
        replication_lag_threshold: SNAPSHOT_EVERY_LOGS * 2,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

/// [`raft_config`] with the `DEFAULT_*` timings.
pub fn default_raft_config() -> Result<Arc<openraft::Config>, openraft::ConfigError> {
    raft_config(
        DEFAULT_HEARTBEAT_MS,
        DEFAULT_ELECTION_MIN_MS,
        DEFAULT_ELECTION_MAX_MS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let c = default_raft_config().expect("valid");
        assert_eq!(c.heartbeat_interval, DEFAULT_HEARTBEAT_MS);
    }

    #[test]
    fn bad_timings_are_rejected() {
        assert!(raft_config(500, 400, 800).is_err());
        assert!(raft_config(100, 800, 800).is_err());
    }
}
