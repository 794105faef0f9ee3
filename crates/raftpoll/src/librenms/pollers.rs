//! Cluster rows: each node keeps its `poller_cluster` and `poller_cluster_stats`
//! rows current, as LibreNMS's dispatcher service does, so the UI's poller
//! page lists the raftpoll nodes, their load, and which one is the master.

use super::{Librenms, LibrenmsError, db::Db};
use crate::cluster::handle::ClusterHandle;
use crate::model::state::ClusterState;
use crate::model::types::{DeviceStatus, GroupId, NodeId};
use sqlx::Row;
use std::time::Duration;
use tokio::sync::watch;

/// Time between two reports; LibreNMS's UI flags a poller whose
/// `last_report` is older than its poller frequency.
const REPORT_EVERY: Duration = Duration::from_secs(15);

/// What a node reports about itself that does not change while it runs.
#[derive(Clone, Debug)]
pub struct PollerInfo {
    pub node_name: String,
    pub groups: Vec<GroupId>,
    pub frequency: u32,
    pub down_retry: u32,
    pub discovery_frequency: u32,
    pub workers: usize,
}

/// One report's numbers, read from the replicated state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Load {
    /// Devices owned by this node.
    devices: u64,
    /// Owned devices overdue for a poll (not polled within their interval):
    /// an estimate of the queue LibreNMS calls depth, as raftpoll has no
    /// queue that outlives a scheduler tick.
    depth: u64,
    /// Sum of every owned device's last poll duration: the worker time one
    /// polling interval costs.
    worker_seconds: f64,
}

/// `raftpoll-<id>`: stable across restarts (the id is kept in the data dir).
pub fn poller_node_id(id: NodeId) -> String {
    format!("raftpoll-{id}")
}

fn load(state: &ClusterState, me: NodeId, info: &PollerInfo, now: u64) -> Load {
    let mut load = Load::default();
    for device in state.devices_of(me) {
        load.devices += 1;
        let interval = match device.status {
            DeviceStatus::Down => info.down_retry,
            _ => info.frequency,
        };
        if device
            .last_polled
            .is_none_or(|at| at + u64::from(interval) < now)
        {
            load.depth += 1;
        }
        load.worker_seconds += device.last_poll_ms.unwrap_or(0) as f64 / 1000.0;
    }
    load
}

/// Reports every [`REPORT_EVERY`] until shutdown.
pub async fn run(
    librenms: Librenms,
    cluster: ClusterHandle,
    info: PollerInfo,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = super::unix_now();
        let me = cluster.node_id();
        let load = cluster.read(|s| load(s, me, &info, now));
        let master = cluster.is_leader();
        if let Err(e) = report(librenms.db(), me, &info, master, load).await {
            tracing::warn!(error = %e, "LibreNMS poller_cluster row not written; retrying");
            librenms.set_error(e.to_string());
        }
    }
}

/// Upserts the node's `poller_cluster` row (unique on `node_id`), then its
/// `poller_cluster_stats` row (unique on parent_poller, poller_type).
async fn report(
    db: &Db,
    me: NodeId,
    info: &PollerInfo,
    master: bool,
    load: Load,
) -> Result<(), LibrenmsError> {
    let what = "writing poller_cluster";
    let node_id = poller_node_id(me);
    let groups = info
        .groups
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let workers = u32::try_from(info.workers).unwrap_or(u32::MAX);
    let mut tx = db.pool().begin().await.map_err(|e| db.error(what, e))?;
    sqlx::query(
        "INSERT INTO poller_cluster (node_id, poller_name, poller_version, poller_groups, \
         last_report, master, poller_enabled, poller_frequency, poller_workers, \
         poller_down_retry, discovery_enabled, discovery_frequency) \
         VALUES (?, ?, ?, ?, NOW(), ?, 1, ?, ?, ?, 1, ?) \
         ON DUPLICATE KEY UPDATE poller_name = VALUES(poller_name), \
         poller_version = VALUES(poller_version), poller_groups = VALUES(poller_groups), \
         last_report = VALUES(last_report), master = VALUES(master), \
         poller_enabled = VALUES(poller_enabled), poller_frequency = VALUES(poller_frequency), \
         poller_workers = VALUES(poller_workers), poller_down_retry = VALUES(poller_down_retry), \
         discovery_enabled = VALUES(discovery_enabled), \
         discovery_frequency = VALUES(discovery_frequency)",
    )
    .bind(&node_id)
    .bind(&info.node_name)
    .bind(concat!("raftpoll ", env!("CARGO_PKG_VERSION")))
    .bind(&groups)
    .bind(master)
    .bind(info.frequency)
    .bind(workers)
    .bind(info.down_retry)
    .bind(info.discovery_frequency)
    .execute(&mut *tx)
    .await
    .map_err(|e| db.error(what, e))?;
    // LAST_INSERT_ID is not set when the row already existed: read the id.
    let id: u64 =
        sqlx::query("SELECT CAST(id AS UNSIGNED) AS id FROM poller_cluster WHERE node_id = ?")
            .bind(&node_id)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get("id"))
            .map_err(|e| db.error(what, e))?;
    sqlx::query(
        "INSERT INTO poller_cluster_stats (parent_poller, poller_type, depth, devices, \
         worker_seconds, workers, frequency) VALUES (?, 'poller', ?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE depth = VALUES(depth), devices = VALUES(devices), \
         worker_seconds = VALUES(worker_seconds), workers = VALUES(workers), \
         frequency = VALUES(frequency)",
    )
    .bind(id)
    .bind(load.depth)
    .bind(load.devices)
    .bind(load.worker_seconds)
    .bind(workers)
    .bind(info.frequency)
    .execute(&mut *tx)
    .await
    .map_err(|e| db.error(what, e))?;
    tx.commit().await.map_err(|e| db.error(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::{Command, NewDevice};
    use crate::secret::Secret;
    use crate::snmp::credentials::SnmpCredentials;

    #[test]
    fn load_counts_owned_devices_and_overdue_ones() {
        let mut state = ClusterState::default();
        for h in ["a", "b", "c"] {
            state.apply(&Command::AddDevice(NewDevice {
                hostname: h.into(),
                address: "10.0.0.1".into(),
                port: 161,
                credentials: SnmpCredentials::V2c {
                    community: Secret::new("public"),
                },
                group: 0,
            }));
        }
        for (h, owner, polled, ms) in [
            ("a", 1, Some(1000), 500),
            ("b", 1, None, 0),
            ("c", 2, None, 0),
        ] {
            let d = std::sync::Arc::make_mut(state.devices.get_mut(h).expect("added"));
            d.owner = Some(owner);
            d.last_polled = polled;
            d.last_poll_ms = Some(ms);
            d.status = DeviceStatus::Up;
        }
        let info = PollerInfo {
            node_name: "n1".into(),
            groups: vec![0],
            frequency: 300,
            down_retry: 60,
            discovery_frequency: 21600,
            workers: 8,
        };
        let got = load(&state, 1, &info, 1100);
        assert_eq!(
            got,
            Load {
                devices: 2,
                depth: 1,
                worker_seconds: 0.5
            }
        );
        assert_eq!(load(&state, 1, &info, 1400).depth, 2);
        assert_eq!(poller_node_id(7), "raftpoll-7");
    }
}
