//! openraft wiring: the `Raft` node type, the Raft timing config, and the
//! timers (tick, heartbeats) run only where they have work.

use crate::cluster::network::LeaderContact;
use crate::model::types::NodeId;
use crate::raft_types::{StoredMembership, TypeConfig};
use crate::storage::StateMachineStore;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// A running Raft node of raftpoll (the type config is in [`crate::raft_types`]).
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Default heartbeat interval: more than three heartbeats per minimum
/// election timeout on loopback/LAN, so one lost heartbeat never triggers an
/// election.
///
/// Every node pays for its heartbeats, whether or not it polls: on a 2-core
/// VM about 100 µs of CPU per thread wake-up (openraft's tick, every
/// `heartbeat × 13/64`, runs only where an election may be due: see
/// [`TimerDuty`]). At 100,000 devices over
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

/// What drives openraft's timers on one node, by its role.
///
/// openraft's tick (every `heartbeat × 13/64`: 30 ms at 150 ms) only checks a
/// voter's election timeout and sends the leader's heartbeats, and each
/// wake-up of a Raft thread costs about 100 µs of CPU on a small virtual
/// machine. So the tick runs only where an election may be due; the leader
/// sends its heartbeats from a timer of the heartbeat's own period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerDuty {
    /// Not a voter (a learner, or not yet a member), or the leader of a
    /// cluster of one: no election, no heartbeat. openraft's tick is parked.
    Idle,
    /// The leader: a heartbeat every heartbeat interval; tick parked.
    Heartbeats,
    /// A voter following a known leader: an election can only become due
    /// once that leader falls silent, so the tick runs only from then.
    WatchLeader,
    /// A voter without a leader it follows (a candidate, or just started):
    /// openraft's tick, which times the election.
    Elect,
}

/// The duty of node `id` in the role `state`, following `leader`. A voter of
/// either half of a joint membership (`effective`, `committed`) may be
/// elected.
pub fn timer_duty(
    id: NodeId,
    state: ServerState,
    leader: Option<NodeId>,
    effective: &StoredMembership,
    committed: &StoredMembership,
) -> TimerDuty {
    let voter = [effective, committed]
        .iter()
        .any(|m| m.membership().voter_ids().any(|voter| voter == id));
    let alone = [effective, committed]
        .iter()
        .all(|m| m.membership().nodes().all(|(node, _)| *node == id));
    match (state, leader) {
        // Heartbeats to nobody.
        (ServerState::Leader, _) if alone => TimerDuty::Idle,
        (ServerState::Leader, _) => TimerDuty::Heartbeats,
        _ if !voter => TimerDuty::Idle,
        (_, Some(leader)) if leader != id => TimerDuty::WatchLeader,
        _ => TimerDuty::Elect,
    }
}

/// The periods [`drive_timers`] works by.
#[derive(Clone, Copy, Debug)]
pub struct TimerPeriods {
    pub heartbeat: Duration,
    /// A followed leader silent this long starts openraft's tick: under the
    /// shortest election timeout, so an election is timed as before, and
    /// over a heartbeat, so one late heartbeat does not.
    pub leader_silence: Duration,
}

impl TimerPeriods {
    /// From the heartbeat interval and the shortest election timeout (the
    /// config requires it above two heartbeats): half of it.
    pub fn new(heartbeat_ms: u64, election_min_ms: u64) -> TimerPeriods {
        TimerPeriods {
            heartbeat: Duration::from_millis(heartbeat_ms),
            leader_silence: Duration::from_millis(election_min_ms / 2),
        }
    }
}

/// Runs openraft's timers as [`TimerDuty`] says for this node's role, until
/// `shutdown`; `contact` is when a leader last reached this node. Server
/// metrics change only with the vote, the role, the leader or the
/// membership; in between, a leader wakes once per heartbeat and a follower
/// about once per heartbeat (instead of six times), a learner never.
pub async fn drive_timers(
    raft: Raft,
    contact: LeaderContact,
    periods: TimerPeriods,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut server = raft.server_metrics();
    // Outside the loop: a role re-read (a membership change, say) does not
    // put the next heartbeat off.
    let mut heartbeats = tokio::time::interval(periods.heartbeat);
    heartbeats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let duty = {
            let m = server.borrow_watched();
            timer_duty(
                m.id,
                m.state,
                m.current_leader,
                &m.membership_config,
                &m.committed_membership_config,
            )
        };
        tracing::debug!(?duty, "openraft's timers set by this node's role");
        // Runs until the role changes (or Raft stops: then it returns).
        let duty_done = async {
            loop {
                // openraft only acts when a setting changes.
                match duty {
                    TimerDuty::Idle | TimerDuty::Elect => {
                        raft.runtime_config().tick(duty == TimerDuty::Elect);
                        std::future::pending::<()>().await;
                    }
                    TimerDuty::Heartbeats => {
                        raft.runtime_config().tick(false);
                        heartbeats.tick().await;
                        if raft.trigger().heartbeat().await.is_err() {
                            return;
                        }
                    }
                    TimerDuty::WatchLeader => {
                        let silence = contact.silence();
                        let silent = silence >= periods.leader_silence;
                        raft.runtime_config().tick(silent);
                        // While ticking, look for the leader's return every
                        // heartbeat; else wake when the silence would begin.
                        let wait = if silent {
                            periods.heartbeat
                        } else {
                            periods.leader_silence - silence
                        };
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = server.changed() => if changed.is_err() { return },
            () = duty_done => return,
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
    fn the_tick_runs_only_where_an_election_may_be_due() {
        use ServerState::{Candidate, Follower, Leader, Learner};
        let settled = membership(&[&[1, 2, 3]], &[4]);
        let duty = |id, state, leader| timer_duty(id, state, leader, &settled, &settled);
        assert_eq!(duty(1, Leader, Some(1)), TimerDuty::Heartbeats);
        assert_eq!(
            duty(2, Follower, Some(1)),
            TimerDuty::WatchLeader,
            "a follower times an election once its leader is silent"
        );
        assert_eq!(duty(2, Follower, None), TimerDuty::Elect, "no leader yet");
        assert_eq!(duty(2, Candidate, None), TimerDuty::Elect);
        assert_eq!(
            duty(4, Learner, Some(1)),
            TimerDuty::Idle,
            "a learner never elects"
        );
        assert_eq!(
            duty(9, Learner, None),
            TimerDuty::Idle,
            "nor a node outside"
        );
        // Learner 4 promoted: the change is effective before it is committed.
        let joint = membership(&[&[1, 2, 3], &[1, 2, 3, 4]], &[]);
        assert_eq!(
            timer_duty(4, Follower, Some(1), &joint, &settled),
            TimerDuty::WatchLeader,
            "a voter of the new half"
        );
        // Voter 3 removed: until that commits it may still have to elect.
        let without_3 = membership(&[&[1, 2]], &[3]);
        assert_eq!(
            timer_duty(3, Follower, None, &without_3, &settled),
            TimerDuty::Elect,
            "a voter of the committed one"
        );
        assert_eq!(
            timer_duty(3, Learner, None, &without_3, &without_3),
            TimerDuty::Idle,
            "a learner once committed"
        );
        // A cluster of one: its leader has nobody to send heartbeats to.
        let alone = membership(&[&[1]], &[]);
        assert_eq!(
            timer_duty(1, Leader, Some(1), &alone, &alone),
            TimerDuty::Idle
        );
        let with_learner = membership(&[&[1]], &[2]);
        assert_eq!(
            timer_duty(1, Leader, Some(1), &with_learner, &alone),
            TimerDuty::Heartbeats,
            "a learner being added hears from it"
        );
    }

    #[test]
    fn a_silent_leader_is_noticed_between_one_heartbeat_and_the_election() {
        let p = TimerPeriods::new(DEFAULT_HEARTBEAT_MS, DEFAULT_ELECTION_MIN_MS);
        assert!(p.leader_silence > p.heartbeat);
        assert!(p.leader_silence < Duration::from_millis(DEFAULT_ELECTION_MIN_MS));
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
