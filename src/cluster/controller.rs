//! The leader's controller: turns liveness and inventory into device
//! ownership by running the pure [`assignment`](super::assignment) and
//! writing its moves as one Raft entry.

use super::assignment::{Balance, Candidate, Placement, assign};
use super::handle::ClusterHandle;
use super::types::{Command, NodeId};
use std::collections::BTreeMap;
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
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            changed = state_rx.changed() => if changed.is_err() { return },
        }
        if !cluster.is_leader() {
            alive_since.clear();
            continue;
        }
        let view = cluster.view_with(config.node_timeout);
        let now = Instant::now();
        alive_since.retain(|id, _| view.members.iter().any(|m| m.id == *id && m.alive));
        for m in view.members.iter().filter(|m| m.alive) {
            alive_since.entry(m.id).or_insert(now);
        }
        let settled = alive_since
            .values()
            .all(|t| now.duration_since(*t) >= config.join_debounce);
        let moves = cluster.read(|s| {
            let live: Vec<Candidate> = alive_since
                .keys()
                .filter_map(|id| s.nodes.get(id))
                .map(|n| Candidate {
                    id: n.id,
                    groups: n.groups.clone(),
                })
                .collect();
            let placements: Vec<Placement<'_>> = s
                .devices
                .values()
                .map(|d| Placement {
                    hostname: &d.hostname,
                    group: d.group,
                    owner: d.owner,
                    cost: d
                        .last_poll_ms
                        .map(|ms| ms.max(1) as f64)
                        .unwrap_or(config.default_cost_ms),
                })
                .collect();
            assign(&live, &placements, settled.then(Balance::default))
        });
        if moves.is_empty() {
            continue;
        }
        let count = moves.len();
        match cluster.propose(Command::Assign { moves }).await {
            Ok(_) => tracing::info!(moved = count, "devices assigned"),
            Err(e) => tracing::warn!(error = %e, "cannot write assignment"),
        }
    }
}
