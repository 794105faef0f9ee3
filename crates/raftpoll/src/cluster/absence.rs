//! Planned absence (SIGTERM, SIGINT: a restart or an upgrade): before the node
//! stops, a leader hands leadership to another voter, and the node's devices
//! move to the others through the log, so nothing waits for `node_timeout_ms`.
//!
//! The node stays a member: it re-registers with no poller groups, which
//! every leader (this one or the next) reads as "serves nothing now" and
//! reassigns its devices with ordinary `Assign` entries, fenced by claims like
//! any move. When the node starts again it registers its configured groups
//! and takes its share back at the next rebalance. Only entry kinds every
//! version knows are used, so a mixed-version cluster handles it too.

use super::handle::ClusterHandle;
use crate::model::types::{Command, NodeId, NodeInfo};
use openraft::async_runtime::WatchReceiver;
use std::time::Duration;
use tokio::time::Instant;

/// How often the steps below look at the cluster again.
const RECHECK: Duration = Duration::from_millis(100);
/// Members acknowledged within this long count as alive for the hand-over.
const ALIVE_WITHIN: Duration = Duration::from_secs(3);

/// What a planned absence achieved, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Absence {
    /// Leadership went to this node.
    pub leader_to: Option<NodeId>,
    /// Every device this node owned moved before the deadline.
    pub devices_moved: bool,
}

/// Hands leadership and this node's devices to the others, within `timeout`.
/// Best effort: whatever is not done by then is left to the usual failover.
pub async fn step_away(cluster: &ClusterHandle, timeout: Duration) -> Absence {
    let deadline = Instant::now() + timeout;
    let me = cluster.node_id();
    let mut done = Absence::default();
    let others_alive: Vec<NodeId> = cluster
        .view_with(ALIVE_WITHIN)
        .members
        .iter()
        .filter(|m| m.alive && m.id != me)
        .map(|m| m.id)
        .collect();
    if others_alive.is_empty() {
        tracing::info!("no other live member: nothing to hand over");
        return done;
    }
    if cluster.is_leader() {
        done.leader_to = hand_over_leadership(cluster, deadline).await;
    }
    let Some(mut info) = cluster.read(|s| s.nodes.get(&me).cloned()) else {
        return done;
    };
    if owned(cluster, me) > 0 {
        info.groups.clear();
        done.devices_moved = move_devices(cluster, info, deadline).await;
    } else {
        done.devices_moved = true;
    }
    done
}

fn owned(cluster: &ClusterHandle, me: NodeId) -> usize {
    cluster.shared().count_devices(|d| d.owner == Some(me))
}

/// Asks the Raft core to hand leadership to the live voter whose log is the
/// most advanced, and waits until someone else leads.
async fn hand_over_leadership(cluster: &ClusterHandle, deadline: Instant) -> Option<NodeId> {
    let me = cluster.node_id();
    let metrics = cluster.raft().metrics().borrow_watched().clone();
    let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    let alive: Vec<NodeId> = cluster
        .view_with(ALIVE_WITHIN)
        .members
        .iter()
        .filter(|m| m.alive && m.id != me && voters.contains(&m.id))
        .map(|m| m.id)
        .collect();
    let matched = |id: &NodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .map(|log_id| log_id.index)
    };
    let to = alive
        .iter()
        .max_by_key(|id| (matched(id), std::cmp::Reverse(**id)))?;
    if let Err(e) = cluster.raft().trigger().transfer_leader(*to).await {
        tracing::warn!(error = %e, "cannot hand over leadership");
        return None;
    }
    while Instant::now() < deadline {
        let leader = cluster.raft().metrics().borrow_watched().current_leader;
        if leader.is_some_and(|l| l != me) {
            tracing::info!(to = ?leader, "leadership handed over");
            return leader;
        }
        tokio::time::sleep(RECHECK).await;
    }
    tracing::warn!(to, "leadership not handed over in time");
    None
}

/// Registers this node with no groups and waits until it owns no device.
async fn move_devices(cluster: &ClusterHandle, info: NodeInfo, deadline: Instant) -> bool {
    let me = info.id;
    let mut registered = false;
    while Instant::now() < deadline {
        if !registered {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(
                remaining,
                cluster.propose(Command::UpsertNode(info.clone())),
            )
            .await
            {
                Ok(Ok(_)) => registered = true,
                Ok(Err(e)) => tracing::debug!(error = %e, "planned absence not recorded yet"),
                Err(_) => break,
            }
        }
        let left = owned(cluster, me);
        if registered && left == 0 {
            tracing::info!("every device handed over");
            return true;
        }
        tokio::time::sleep(RECHECK).await;
    }
    tracing::warn!(
        devices = owned(cluster, me),
        "devices not all handed over in time; the others take them after node_timeout_ms"
    );
    false
}
