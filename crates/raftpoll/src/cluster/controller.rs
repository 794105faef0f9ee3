//! The leader's controller: turns liveness and inventory into device
//! ownership by running the pure [`assignment`](super::assignment) and
//! writing its moves as one Raft entry.

use super::assignment::{Balance, Candidate, assign, candidates, placement_of};
use super::handle::ClusterHandle;
use crate::model::types::{Command, NodeId};
use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// A node without heartbeat acknowledgement for this long is dead.
    pub node_timeout: Duration,
    /// A node must be alive this long before devices are rebalanced to it.
    pub join_debounce: Duration,
    /// Cost assumed for a device never polled (ms).
    pub default_cost_ms: f64,
    /// A voter dead this long is replaced by a live learner.
    pub voter_timeout: Duration,
}

/// How long a new leader waits for the first acknowledgement of a member it
/// used to follow (most likely the leader that just failed) before counting
/// it dead: live members answer within a heartbeat or two. A member this
/// node never heard from gets the whole `node_timeout`: after a whole-cluster
/// restart it may still be starting, nobody polls its devices yet either, and
/// moving them to whichever node started first would only move them back.
const NEW_LEADER_GRACE: Duration = Duration::from_secs(1);

/// A gap between controller ticks this long means this process stalled.
const STALL: Duration = Duration::from_secs(1);

/// Cost-driven rebalancing runs at most this often (membership changes
/// trigger one sooner, after the join debounce).
const REBALANCE_EVERY: Duration = Duration::from_secs(600);

/// Most voters; more nodes stay learners (they still poll).
pub const MAX_VOTERS: usize = 5;

/// The membership change the leader should make, if any: promote live
/// learners while voters are fewer than [`MAX_VOTERS`] (only to an odd
/// count), or swap a voter dead past `voter_timeout` for a live learner.
/// Returns the new voter set.
pub fn plan_voters(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    alive: &BTreeSet<NodeId>,
    dead_too_long: &BTreeSet<NodeId>,
) -> Option<BTreeSet<NodeId>> {
    let mut spare: Vec<NodeId> = learners
        .iter()
        .copied()
        .filter(|l| alive.contains(l))
        .collect();
    spare.reverse(); // pop() hands out the lowest id first
    let mut next = voters.clone();
    for dead in voters.intersection(dead_too_long) {
        let Some(learner) = spare.pop() else { break };
        next.remove(dead);
        next.insert(learner);
    }
    while next.len() < MAX_VOTERS && !spare.is_empty() {
        // Grow by two from an odd count, by one from an even count.
        let want = if next.len() % 2 == 1 { 2 } else { 1 };
        if spare.len() < want {
            break;
        }
        for _ in 0..want {
            if let Some(l) = spare.pop() {
                next.insert(l);
            }
        }
    }
    (next != *voters).then_some(next)
}

/// Runs until `shutdown`; does work only while this node leads.
pub async fn run(
    cluster: ClusterHandle,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state_rx = cluster.shared().subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each node was first seen alive in its current run of liveness.
    let mut alive_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut dead_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut leading_since: Option<Instant> = None;
    let mut last_tick: Option<Instant> = None;
    let mut last_live: Vec<Candidate> = Vec::new();
    let mut rebalance_due = false;
    let mut last_rebalance: Option<Instant> = None;
    // Inputs of the last assignment that found nothing to move: with the
    // same live nodes and no ownership change since, it would find nothing
    // again, and walking every device 10+ times a second is not free.
    let mut settled_inputs: Option<(u64, Vec<Candidate>)> = None;
    // Leaders this node heard from since it started.
    let mut followed: BTreeSet<NodeId> = BTreeSet::new();
    let mut server = cluster.raft().server_metrics();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            changed = state_rx.changed() => if changed.is_err() { return },
        }
        if !cluster.is_leader() {
            alive_since.clear();
            dead_since.clear();
            leading_since = None;
            last_tick = None;
            settled_inputs = None;
            // Nothing to do until this node leads: wait for its role to
            // change rather than wake on every tick and every apply.
            loop {
                let (leads, leader) = {
                    let m = server.borrow_watched();
                    (m.state == ServerState::Leader, m.current_leader)
                };
                followed.extend(leader.filter(|_| !leads));
                if leads {
                    break;
                }
                tokio::select! {
                    _ = shutdown.changed() => return,
                    changed = server.changed() => if changed.is_err() { return },
                }
            }
            continue;
        }
        // Keeps the cluster's feature level current, so followers learn it
        // from the leader's next requests (they build entries by it).
        cluster.cluster_level();
        let now = Instant::now();
        // After a stall (process paused, machine overloaded) every
        // acknowledgement looks old: start the grace period again rather
        // than declare everyone dead from a stale view.
        if last_tick.is_some_and(|t| now.duration_since(t) > STALL) {
            tracing::warn!("controller stalled; re-checking liveness before any move");
            leading_since = Some(now);
        }
        last_tick = Some(now);
        let new_leader = leading_since.is_none();
        let since = *leading_since.get_or_insert(now);
        let view = cluster.view_with_grace(config.node_timeout, |id| {
            let grace = if followed.contains(&id) {
                config.node_timeout.min(NEW_LEADER_GRACE)
            } else {
                config.node_timeout
            };
            Some(since + grace)
        });
        for m in &view.members {
            if m.alive {
                if dead_since.remove(&m.id).is_some() {
                    tracing::info!(node = m.id, "node answers heartbeats again");
                }
            } else {
                dead_since.entry(m.id).or_insert_with(|| {
                    tracing::warn!(
                        node = m.id,
                        timeout_ms = config.node_timeout.as_millis() as u64,
                        "node does not answer heartbeats: its devices move"
                    );
                    now
                });
            }
        }
        manage_voters(&cluster, &view, &dead_since, config.voter_timeout).await;
        alive_since.retain(|id, _| view.members.iter().any(|m| m.id == *id && m.alive));
        for m in view.members.iter().filter(|m| m.alive) {
            alive_since.entry(m.id).or_insert(now);
        }
        // Rebalance once after the live nodes or their groups changed (a
        // node back from a planned stop stays alive but registers its groups
        // again) and stayed put for the debounce, and otherwise at most every
        // REBALANCE_EVERY: poll durations jitter, and chasing them would make
        // devices flap.
        let live = cluster.read(|s| candidates(s, alive_since.keys()));
        if new_leader {
            // Taking over is no reason to move devices: the previous leader
            // balanced them (a restarted cluster keeps its owners). Only
            // changes seen from now on, or the periodic pass, rebalance.
            last_live = live.clone();
            rebalance_due = false;
            last_rebalance = Some(now);
        }
        if live != last_live {
            last_live = live.clone();
            rebalance_due = true;
        }
        let settled = alive_since
            .values()
            .all(|t| now.duration_since(*t) >= config.join_debounce);
        let periodic = last_rebalance.is_none_or(|t| now.duration_since(t) >= REBALANCE_EVERY);
        let rebalance = settled && (rebalance_due || periodic);
        if rebalance {
            rebalance_due = false;
            last_rebalance = Some(now);
        }
        let owner_changes = cluster.shared().owner_changes();
        let inputs = (owner_changes, live);
        if !rebalance && settled_inputs.as_ref() == Some(&inputs) {
            continue;
        }
        // Copied in chunks, computed after: applies wait for the lock.
        let devices = cluster
            .shared()
            .scan_devices(|d| Some(placement_of(d, config.default_cost_ms)));
        let moves = assign(&inputs.1, &devices, rebalance.then(Balance::default));
        if moves.is_empty() {
            settled_inputs = Some(inputs);
            continue;
        }
        settled_inputs = None;
        let count = moves.len();
        // A pass stops at `max_moves` (one entry of bounded size): when it
        // did, more may be due (a node joined a large cluster), so the next
        // pass follows once this one is applied, not REBALANCE_EVERY later.
        if rebalance && count >= Balance::default().max_moves {
            rebalance_due = true;
        }
        tracing::debug!(?moves, "assignment");
        match cluster.propose_as_leader(Command::Assign { moves }).await {
            Ok(_) => tracing::info!(moved = count, "devices assigned"),
            Err(e) => tracing::warn!(error = %e, "cannot write assignment"),
        }
    }
}

async fn manage_voters(
    cluster: &ClusterHandle,
    view: &super::handle::ClusterView,
    dead_since: &BTreeMap<NodeId, Instant>,
    voter_timeout: Duration,
) {
    let metrics = cluster.raft().metrics().borrow_watched().clone();
    // One membership change at a time: wait until the last one is committed.
    if metrics.membership_config.log_id() != metrics.committed_membership_config.log_id() {
        return;
    }
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let alive: BTreeSet<NodeId> = view
        .members
        .iter()
        .filter(|m| m.alive)
        .map(|m| m.id)
        .collect();
    let dead_too_long: BTreeSet<NodeId> = dead_since
        .iter()
        .filter(|(_, t)| t.elapsed() >= voter_timeout)
        .map(|(id, _)| *id)
        .collect();
    let Some(next) = plan_voters(&voters, &learners, &alive, &dead_too_long) else {
        return;
    };
    tracing::info!(?voters, ?next, "changing voters");
    // A replaced voter stays as a learner: restarted, it is replicated to
    // like any member, and only `raftpoll leave` removes it.
    let change = cluster
        .raft()
        .change_membership(ChangeMembers::ReplaceAllVoters(next), true);
    match tokio::time::timeout(Duration::from_secs(10), change).await {
        Ok(Ok(_)) => tracing::info!("voters changed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot change voters"),
        Err(_) => tracing::warn!("voter change timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn promotes_to_odd_counts_up_to_five() {
        let none = set(&[]);
        // One voter, one learner: stay at one (two voters tolerate no failure).
        assert_eq!(
            plan_voters(&set(&[1]), &set(&[2]), &set(&[1, 2]), &none),
            None
        );
        assert_eq!(
            plan_voters(&set(&[1]), &set(&[2, 3]), &set(&[1, 2, 3]), &none),
            Some(set(&[1, 2, 3]))
        );
        assert_eq!(
            plan_voters(
                &set(&[1, 2, 3]),
                &set(&[4, 5, 6, 7]),
                &set(&[1, 2, 3, 4, 5, 6, 7]),
                &none
            ),
            Some(set(&[1, 2, 3, 4, 5]))
        );
        assert_eq!(
            plan_voters(
                &set(&[1, 2, 3, 4, 5]),
                &set(&[6, 7]),
                &set(&[1, 2, 3, 4, 5, 6, 7]),
                &none
            ),
            None
        );
        // Dead learners are not promoted.
        assert_eq!(
            plan_voters(&set(&[1]), &set(&[2, 3]), &set(&[1, 2]), &none),
            None
        );
    }

    #[test]
    fn replaces_dead_voter_with_live_learner() {
        let next = plan_voters(&set(&[1, 2, 3]), &set(&[4]), &set(&[1, 2, 4]), &set(&[3]));
        assert_eq!(next, Some(set(&[1, 2, 4])));
        // No live learner: keep the dead voter (the count stays odd).
        assert_eq!(
            plan_voters(&set(&[1, 2, 3]), &set(&[]), &set(&[1, 2]), &set(&[3])),
            None
        );
    }
}
