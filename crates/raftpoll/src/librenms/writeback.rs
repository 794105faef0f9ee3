//! Write-back: after every poll, the node that polled hands its result here;
//! the latest result per device waits in a bounded buffer and is written to
//! LibreNMS's tables in batches, one transaction per batch. Fenced like
//! polls: a device this node no longer owns is never written.

use super::db::Db;
use super::{Librenms, LibrenmsError, ports};
use crate::cluster::handle::ClusterHandle;
use crate::model::types::SystemInfo;
use sqlx::{MySql, Row, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Why a device is down, as LibreNMS's `devices.status_reason` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownCause {
    /// No answer to ICMP echo.
    Icmp,
    /// Answers ping, not SNMP.
    Snmp,
}

impl DownCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DownCause::Icmp => "icmp",
            DownCause::Snmp => "snmp",
        }
    }
}

/// What one poll of one device found, for the write-back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolledDevice {
    pub hostname: String,
    /// Unix seconds the poll started.
    pub polled_at: u64,
    pub duration_ms: u64,
    /// `None`: up.
    pub down: Option<DownCause>,
    /// ICMP round trip and how long the check took, when ICMP is on.
    pub ping_rtt_ms: Option<f64>,
    pub ping_took_ms: Option<f64>,
    pub system: Option<SystemInfo>,
    /// sysUpTime in seconds.
    pub uptime_s: Option<u64>,
    /// Every port polled, for its `ports` row.
    pub ports: Vec<super::ports::PortSample>,
}

/// Latest results per device, waiting for the database.
#[derive(Default)]
pub struct Pending {
    by_host: Mutex<HashMap<String, PolledDevice>>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PolledDevice>> {
        self.by_host.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Librenms {
    /// Hands over one poll's result; a newer result of the same device
    /// replaces an older one still waiting.
    pub fn poll_done(&self, polled: PolledDevice) {
        keep_newest(&mut self.pending().lock(), polled);
    }
}

impl Pending {
    /// Takes every waiting result.
    fn take(&self) -> Vec<PolledDevice> {
        self.lock().drain().map(|(_, p)| p).collect()
    }

    /// Puts results back after a failed write; a newer result that arrived
    /// meanwhile wins.
    fn put_back(&self, results: Vec<PolledDevice>) {
        let mut pending = self.lock();
        for polled in results {
            keep_newest(&mut pending, polled);
        }
    }

    /// Drops the oldest results beyond `max` devices; returns how many.
    fn bound(&self, max: usize) -> usize {
        bound(&mut self.lock(), max)
    }
}

fn keep_newest(pending: &mut HashMap<String, PolledDevice>, polled: PolledDevice) {
    match pending.get(&polled.hostname) {
        Some(old) if old.polled_at > polled.polled_at => {}
        _ => {
            pending.insert(polled.hostname.clone(), polled);
        }
    }
}

/// Keeps the `max` newest results (by `polled_at`); returns how many were dropped.
fn bound(pending: &mut HashMap<String, PolledDevice>, max: usize) -> usize {
    let excess = pending.len().saturating_sub(max);
    if excess == 0 {
        return 0;
    }
    let mut by_age: Vec<(u64, String)> = pending
        .values()
        .map(|p| (p.polled_at, p.hostname.clone()))
        .collect();
    by_age.sort_unstable();
    for (_, hostname) in by_age.into_iter().take(excess) {
        pending.remove(&hostname);
    }
    excess
}

/// Splits results into those of devices this node still owns and the rest
/// (moved away or removed: the new owner writes them from now on).
fn fence(
    results: Vec<PolledDevice>,
    owned: impl Fn(&str) -> bool,
) -> (Vec<PolledDevice>, Vec<PolledDevice>) {
    results.into_iter().partition(|p| owned(&p.hostname))
}

/// A device's status change between two writes, for `device_outages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    None,
    WentDown,
    CameUp,
}

/// `previous`: up (`true`) or down as last written (or as the row said);
/// `None` when unknown (no row): no transition.
fn transition(previous: Option<bool>, up: bool) -> Transition {
    match (previous, up) {
        (Some(true), false) => Transition::WentDown,
        (Some(false), true) => Transition::CameUp,
        _ => Transition::None,
    }
}

/// How the write-back runs.
#[derive(Clone, Copy, Debug)]
pub struct WritebackConfig {
    /// Most devices whose result may wait (`librenms.writeback_buffer`).
    pub buffer: usize,
    /// Fencing lease, as for polls ([`ClusterHandle::may_poll`]).
    pub lease: Duration,
}

/// Time between two flushes while the database answers.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between two attempts while the database fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Devices per transaction: short transactions, few round trips.
const BATCH: usize = 500;
/// How long the last flush at shutdown may take.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// What the task remembers between flushes (node-local, never replicated).
#[derive(Default)]
struct Memory {
    /// Last status written per LibreNMS device id (`true`: up).
    status: HashMap<u32, bool>,
    /// Graph rows known to exist, so they are inserted once per process.
    graphs: HashSet<(u32, &'static str)>,
}

/// Flushes the waiting results every [`FLUSH_EVERY`] (backing off up to
/// [`MAX_BACKOFF`] while the database fails), and once more at shutdown.
pub async fn run(
    librenms: Librenms,
    cluster: ClusterHandle,
    config: WritebackConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut memory = Memory::default();
    let mut wait = FLUSH_EVERY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
        wait = match flush(&librenms, &cluster, config, &mut memory).await {
            Ok(()) => FLUSH_EVERY,
            Err(()) => (wait * 2).min(MAX_BACKOFF),
        };
    }
    let last = flush(&librenms, &cluster, config, &mut memory);
    if tokio::time::timeout(FINAL_FLUSH, last).await.is_err() {
        tracing::warn!("LibreNMS write-back: last flush cut short at shutdown");
    }
}

/// One round: bound the buffer, fence, write in batches. `Err` after a
/// database error (the results are back in the buffer).
async fn flush(
    librenms: &Librenms,
    cluster: &ClusterHandle,
    config: WritebackConfig,
    memory: &mut Memory,
) -> Result<(), ()> {
    let pending = librenms.pending();
    let dropped = pending.bound(config.buffer);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            buffer = config.buffer,
            "LibreNMS write-back buffer full: oldest results dropped (their next poll writes them)"
        );
    }
    // Fenced: a node without a quorum-backed leader holds its results; it
    // may no longer own the devices, and cannot tell yet.
    if pending.is_empty() || !cluster.may_poll(config.lease) {
        return Ok(());
    }
    let me = cluster.node_id();
    let (mine, moved) = cluster.read(|s| {
        fence(pending.take(), |h| {
            s.devices.get(h).and_then(|d| d.owner) == Some(me)
        })
    });
    if !moved.is_empty() {
        tracing::debug!(
            devices = moved.len(),
            "LibreNMS write-back: results of devices no longer ours dropped"
        );
    }
    let mut linked = Vec::with_capacity(mine.len());
    for polled in mine {
        match librenms.link(&polled.hostname) {
            Some(link) => linked.push((link.device_id, polled)),
            None => tracing::debug!(device = %polled.hostname, "not in LibreNMS; result dropped"),
        }
    }
    let mut rows = 0;
    for (i, batch) in linked.chunks(BATCH).enumerate() {
        match write_batch(librenms.db(), batch, memory).await {
            Ok(n) => rows += n,
            Err(e) => {
                tracing::warn!(error = %e, "LibreNMS write-back failed; retrying");
                librenms.set_error(e.to_string());
                let back = linked
                    .into_iter()
                    .skip(i * BATCH)
                    .map(|(_, polled)| polled)
                    .collect();
                pending.put_back(back);
                return Err(());
            }
        }
    }
    librenms.set_written(rows, pending.len());
    Ok(())
}

/// Writes one batch in one transaction; returns rows written. The memory
/// changes only once the transaction committed.
async fn write_batch(
    db: &Db,
    batch: &[(u32, PolledDevice)],
    memory: &mut Memory,
) -> Result<u64, LibrenmsError> {
    let what = "writing poll results";
    let mut tx = db.pool().begin().await.map_err(|e| db.error(what, e))?;
    let unknown: Vec<u32> = batch
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !memory.status.contains_key(id))
        .collect();
    let mut previous = current_status(&mut tx, &unknown)
        .await
        .map_err(|e| db.error(what, e))?;
    let mut rows = write_devices(&mut tx, batch)
        .await
        .map_err(|e| db.error(what, e))?;
    let mut graphs = Vec::new();
    for (device_id, polled) in batch {
        let id = *device_id;
        let up = polled.down.is_none();
        let before = memory
            .status
            .get(&id)
            .copied()
            .or(previous.get(&id).copied());
        rows += write_outage(&mut tx, id, polled.polled_at, transition(before, up))
            .await
            .map_err(|e| db.error(what, e))?;
        for graph in graphs_of(polled) {
            if !memory.graphs.contains(&(id, graph)) {
                rows += add_graph(&mut tx, id, graph)
                    .await
                    .map_err(|e| db.error(what, e))?;
                graphs.push((id, graph));
            }
        }
        previous.insert(id, up);
    }
    let port_writes: Vec<ports::PortWrite> = batch
        .iter()
        .flat_map(|(device_id, polled)| {
            polled.ports.iter().map(|port| ports::PortWrite {
                device_id: *device_id,
                polled_at: polled.polled_at,
                port,
            })
        })
        .collect();
    rows += ports::write_rows(&mut tx, &port_writes)
        .await
        .map_err(|e| db.error(what, e))?;
    tx.commit().await.map_err(|e| db.error(what, e))?;
    for (id, _) in batch {
        if let Some(up) = previous.get(id) {
            memory.status.insert(*id, *up);
        }
    }
    memory.graphs.extend(graphs);
    Ok(rows)
}

/// `devices.status` of devices not seen yet by this process.
async fn current_status(
    tx: &mut Transaction<'_, MySql>,
    ids: &[u32],
) -> Result<HashMap<u32, bool>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let marks = vec!["?"; ids.len()].join(",");
    let sql = format!(
        "SELECT CAST(device_id AS UNSIGNED) AS device_id, CAST(status AS SIGNED) AS status \
         FROM devices WHERE device_id IN ({marks})"
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id);
    }
    let mut status = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        let id: u64 = row.try_get("device_id")?;
        let up: i64 = row.try_get("status")?;
        if let Ok(id) = u32::try_from(id) {
            status.insert(id, up != 0);
        }
    }
    Ok(status)
}

/// The graphs LibreNMS shows for what this poll wrote.
fn graphs_of(polled: &PolledDevice) -> Vec<&'static str> {
    let mut graphs = Vec::new();
    if polled.down.is_none() {
        graphs.push("poller_perf");
    }
    if polled.uptime_s.is_some() {
        graphs.push("uptime");
    }
    if polled.ping_rtt_ms.is_some() {
        graphs.push("ping_perf");
    }
    graphs
}

/// The derived table of a batch's poll results, in [`write_devices`]'s bind
/// order: its column names, and the type each bound value is cast to (so the
/// table's types do not depend on the first row's values).
const DEVICE_COLUMNS: [(&str, &str); 11] = [
    ("id", "UNSIGNED"),
    ("up", "SIGNED"),
    ("reason", "CHAR(16)"),
    ("polled_at", "UNSIGNED"),
    ("took_s", "DOUBLE"),
    ("uptime", "UNSIGNED"),
    ("pinged", "SIGNED"),
    ("ping_ms", "DOUBLE"),
    ("sys_name", "CHAR"),
    ("sys_descr", "CHAR"),
    ("sys_object_id", "CHAR"),
];

/// `SELECT … UNION ALL SELECT …` of `rows` rows of [`DEVICE_COLUMNS`]; the
/// first row names the columns.
fn device_values_sql(rows: usize) -> String {
    let row = |named: bool| {
        let values: Vec<String> = DEVICE_COLUMNS
            .iter()
            .map(|(name, ty)| match named {
                true => format!("CAST(? AS {ty}) AS {name}"),
                false => format!("CAST(? AS {ty})"),
            })
            .collect();
        format!("SELECT {}", values.join(", "))
    };
    let mut sql = row(true);
    let rest = row(false);
    for _ in 1..rows {
        sql.push_str(" UNION ALL ");
        sql.push_str(&rest);
    }
    sql
}

/// The `devices` rows of a batch in one statement (one round trip, not one
/// per device). As LibreNMS's poller: `last_polled` and its time taken only
/// after a poll of a device that is up, `last_poll_attempted` always;
/// columns this poll did not read keep their values.
async fn write_devices(
    tx: &mut Transaction<'_, MySql>,
    batch: &[(u32, PolledDevice)],
) -> Result<u64, sqlx::Error> {
    if batch.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "UPDATE devices d JOIN ({}) v ON d.device_id = v.id SET \
         d.status = v.up, d.status_reason = v.reason, \
         d.last_poll_attempted = FROM_UNIXTIME(v.polled_at), \
         d.last_polled = IF(v.up, FROM_UNIXTIME(v.polled_at), d.last_polled), \
         d.last_polled_timetaken = IF(v.up, v.took_s, d.last_polled_timetaken), \
         d.uptime = COALESCE(v.uptime, d.uptime), \
         d.last_ping = IF(v.pinged, FROM_UNIXTIME(v.polled_at), d.last_ping), \
         d.last_ping_timetaken = COALESCE(v.ping_ms, d.last_ping_timetaken), \
         d.sysName = COALESCE(v.sys_name, d.sysName), \
         d.sysDescr = COALESCE(v.sys_descr, d.sysDescr), \
         d.sysObjectID = COALESCE(v.sys_object_id, d.sysObjectID)",
        device_values_sql(batch.len())
    );
    let mut query = sqlx::query(&sql);
    for (device_id, polled) in batch {
        let system = polled.system.as_ref();
        query = query
            .bind(device_id)
            .bind(polled.down.is_none())
            .bind(polled.down.map_or("", DownCause::as_str))
            .bind(polled.polled_at)
            .bind(polled.duration_ms as f64 / 1000.0)
            .bind(polled.uptime_s)
            .bind(polled.ping_took_ms.is_some())
            .bind(polled.ping_rtt_ms)
            .bind(system.map(|s| s.sys_name.as_str()))
            .bind(system.map(|s| s.sys_descr.as_str()))
            .bind(system.map(|s| s.sys_object_id.as_str()));
    }
    Ok(query.execute(&mut **tx).await?.rows_affected())
}

/// Opens or closes the device's `device_outages` row on a status change.
async fn write_outage(
    tx: &mut Transaction<'_, MySql>,
    device_id: u32,
    polled_at: u64,
    change: Transition,
) -> Result<u64, sqlx::Error> {
    let rows = match change {
        Transition::None => 0,
        Transition::WentDown => {
            // IGNORE: a retried batch may meet the row it wrote before.
            sqlx::query(
                "INSERT IGNORE INTO device_outages (device_id, going_down, up_again) \
                 VALUES (?, ?, NULL)",
            )
            .bind(device_id)
            .bind(polled_at)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        }
        Transition::CameUp => sqlx::query(
            "UPDATE device_outages SET up_again = ? \
                 WHERE device_id = ? AND up_again IS NULL",
        )
        .bind(polled_at)
        .bind(device_id)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    Ok(rows)
}

/// Adds a `device_graphs` row unless the device has it.
async fn add_graph(
    tx: &mut Transaction<'_, MySql>,
    device_id: u32,
    graph: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO device_graphs (device_id, graph) SELECT ?, ? FROM DUAL \
         WHERE NOT EXISTS (SELECT 1 FROM device_graphs WHERE device_id = ? AND graph = ?)",
    )
    .bind(device_id)
    .bind(graph)
    .bind(device_id)
    .bind(graph)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_devices_is_one_derived_table_with_named_typed_columns() {
        let sql = device_values_sql(3);
        assert_eq!(sql.matches('?').count(), 3 * DEVICE_COLUMNS.len());
        assert_eq!(sql.matches(" UNION ALL ").count(), 2);
        let (first, rest) = sql.split_once(" UNION ALL ").unwrap();
        assert!(first.starts_with("SELECT CAST(? AS UNSIGNED) AS id, CAST(? AS SIGNED) AS up"));
        assert!(first.ends_with("CAST(? AS CHAR) AS sys_object_id"));
        assert!(!rest.contains(" AS id"), "only the first row names columns");
        assert_eq!(device_values_sql(1), first);
    }

    fn polled(hostname: &str, at: u64) -> PolledDevice {
        PolledDevice {
            hostname: hostname.into(),
            polled_at: at,
            ..PolledDevice::default()
        }
    }

    #[test]
    fn fencing_keeps_only_owned_devices() {
        let results = vec![polled("a", 1), polled("b", 1), polled("c", 1)];
        let (mine, moved) = fence(results, |h| h != "b");
        let names = |v: &[PolledDevice]| v.iter().map(|p| p.hostname.clone()).collect::<Vec<_>>();
        assert_eq!(names(&mine), ["a", "c"]);
        assert_eq!(names(&moved), ["b"]);
    }

    #[test]
    fn the_buffer_drops_the_oldest_beyond_its_bound() {
        let mut pending = HashMap::new();
        for (h, at) in [("a", 30), ("b", 10), ("c", 20), ("d", 40)] {
            keep_newest(&mut pending, polled(h, at));
        }
        assert_eq!(bound(&mut pending, 2), 2);
        let mut left: Vec<_> = pending.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["a", "d"]);
        assert_eq!(bound(&mut pending, 2), 0);
    }

    #[test]
    fn put_back_never_replaces_a_newer_result() {
        let pending = Pending::default();
        pending.put_back(vec![polled("a", 10)]);
        let taken = pending.take();
        assert!(pending.is_empty());
        pending.put_back(vec![polled("a", 20)]);
        pending.put_back(taken);
        assert_eq!(pending.take(), vec![polled("a", 20)]);
    }

    #[test]
    fn transitions_need_a_known_previous_status() {
        assert_eq!(transition(Some(true), false), Transition::WentDown);
        assert_eq!(transition(Some(false), true), Transition::CameUp);
        assert_eq!(transition(Some(true), true), Transition::None);
        assert_eq!(transition(Some(false), false), Transition::None);
        assert_eq!(transition(None, false), Transition::None);
        assert_eq!(transition(None, true), Transition::None);
    }

    #[test]
    fn graphs_follow_what_the_poll_wrote() {
        let mut p = polled("a", 1);
        p.down = Some(DownCause::Icmp);
        assert!(graphs_of(&p).is_empty());
        p.down = None;
        p.uptime_s = Some(5);
        p.ping_rtt_ms = Some(0.4);
        assert_eq!(graphs_of(&p), ["poller_perf", "uptime", "ping_perf"]);
    }
}
