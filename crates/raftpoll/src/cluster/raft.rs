//! openraft wiring: the `Raft` node type, the Raft timing config, and the
//! tick run only where it has work (on voters).

use crate::model::types::NodeId;
use crate::raft_types::{StoredMembership, TypeConfig};
use crate::storage::StateMachineStore;
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use tokio::sync::watch;

/// A running Raft node of raftpoll (the type config is in [`crate::raft_types`]).
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Default heartbeat interval: more than three heartbeats per minimum
/// election timeout on loopback/LAN, so one lost heartbeat never triggers an
/// election.
///
/// Every node pays for its heartbeats, and every voter for openraft's tick
/// (`heartbeat × 13/64`; learners park it), whether or not it polls: on a
/// 2-core VM about 100 µs of CPU per thread wake-up. At 100,000 devices over
/// 10 nodes, 150 ms took the cluster's Raft CPU from 9.7 to 8.8 % of one core
/// (idle: 5.2 to 3.8) against 100 ms, and a killed leader's devices were
/// polled again as soon (p99 3.06 s against 3.00 s over 10 kills each). 250 ms
/// with elections of 1–2 s replaced a killed leader in 3.4 s, over the 3 s
/// this product promises; a cluster that can wait longer may set `[cluster]
/// heartbeat_ms` and the election timeouts so.
pub const DEFAULT_HEARTBEAT_MS: u64 = 150;
/// Default election timeout range: a dead leader is replaced in roughly 1 s.
pub const DEFAULT_ELECTION_MIN_MS: u64 = 500;
pub const DEFAULT_ELECTION_MAX_MS: u64 = 1000;
/// openraft asks for a snapshot (after which the log can be purged) every this
/// many entries; the state machine builds one only once the log since its last
/// snapshot has outgrown it (see `storage::state_machine`). Asking often lets
/// each node's own threshold, not a shared entry count, decide the moment.
pub const SNAPSHOT_ASK_EVERY_LOGS: u64 = 1000;
/// Entries kept in the log behind a snapshot, so a briefly lagging follower
/// gets entries, not a whole snapshot.
pub const KEEP_LOGS_AFTER_SNAPSHOT: u64 = 1000;
/// How many entries behind a follower counts as lagging (a learner being
/// added is waited for until it is closer). openraft wants it above the
/// snapshot ask interval; it was twice the former interval of 5,000.
pub const REPLICATION_LAG_THRESHOLD: u64 = 10_000;

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
        // A snapshot goes in one message: tens of MiB at 100,000 devices.
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_ASK_EVERY_LOGS),
        max_in_snapshot_log_to_keep: KEEP_LOGS_AFTER_SNAPSHOT,
        replication_lag_threshold: REPLICATION_LAG_THRESHOLD,
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

/// Whether openraft's tick has work on node `id`: it only checks a voter's
/// election timeout and sends the leader's heartbeats (the leader is a voter
/// too). A voter of either half of a joint membership may be elected.
pub fn tick_has_work(
    id: NodeId,
    effective: &StoredMembership,
    committed: &StoredMembership,
) -> bool {
    [effective, committed]
        .iter()
        .any(|m| m.membership().voter_ids().any(|voter| voter == id))
}

/// Parks openraft's tick while this node is not a voter (a learner, or not
/// yet a member), and runs it again as soon as it becomes one, until
/// `shutdown`. A learner's tick woke its Raft threads every `heartbeat ×
/// 13/64` (50 times a second at 100 ms) to do nothing, and each wake-up
/// costs about 100 µs of CPU on a small virtual machine: half the Raft CPU
/// of an idle learner. Server metrics change only with the vote, the role,
/// the leader or the membership, so this wakes rarely.
pub async fn tick_only_as_voter(raft: Raft, mut shutdown: watch::Receiver<bool>) {
    let mut server = raft.server_metrics();
    loop {
        let wanted = {
            let m = server.borrow_watched();
            tick_has_work(m.id, &m.membership_config, &m.committed_membership_config)
        };
        // openraft only acts when the setting changes.
        raft.runtime_config().tick(wanted);
        tracing::debug!(ticking = wanted, "openraft's tick set by this node's role");
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = server.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Membership;
    use std::collections::BTreeSet;

    fn membership(joint: &[&[NodeId]], learners: &[NodeId]) -> StoredMembership {
        let config: Vec<BTreeSet<NodeId>> = joint
            .iter()
            .map(|ids| ids.iter().copied().collect())
            .collect();
        StoredMembership::new(
            None,
            Membership::new_with_defaults(config, learners.to_vec()),
        )
    }

    #[test]
    fn only_a_voter_needs_the_tick() {
        let settled = membership(&[&[1, 2, 3]], &[4]);
        assert!(tick_has_work(2, &settled, &settled), "a voter elects");
        assert!(
            !tick_has_work(4, &settled, &settled),
            "a learner never does"
        );
        assert!(!tick_has_work(9, &settled, &settled), "nor a node outside");
        // Learner 4 promoted: the change is effective before it is committed.
        let joint = membership(&[&[1, 2, 3], &[1, 2, 3, 4]], &[]);
        assert!(
            tick_has_work(4, &joint, &settled),
            "a voter of the new half"
        );
        // Voter 3 removed: until that commits it may still have to elect.
        let without_3 = membership(&[&[1, 2]], &[3]);
        assert!(
            tick_has_work(3, &without_3, &settled),
            "a voter of the committed one"
        );
        assert!(
            !tick_has_work(3, &without_3, &without_3),
            "a learner once committed"
        );
    }

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
