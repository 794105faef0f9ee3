//! SNMP modules: what to ask a device and which RRD updates its answers make.
//!
//! [`discover`] finds a device's system info, ports, processors and storage;
//! [`poll`] reads their current values and turns them into LibreNMS-compatible
//! [`RrdUpdate`]s. Both only walk whole table columns (a few GETBULK walks per
//! device, run concurrently up to the client's per-device cap). A table the
//! agent does not have is skipped; only an unreachable device or refused
//! credentials make them fail.

pub mod defs;
mod ports;
mod processors;

pub use ports::{Aliases, PortState};
mod storage;
pub use storage::rrd_names as storage_rrd_names;
mod system;

use crate::model::types::{Discovery, Inventory, SystemInfo};
use crate::rrd::layout::RrdUpdate;
use crate::snmp::{Oid, SnmpClient, SnmpError, SnmpTarget, SnmpValue, VarBind};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// Why a device could not be discovered or polled. Readable, secret-free:
/// it is what an operator sees as the device's `down` reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error(transparent)]
    Snmp(#[from] SnmpError),
}

/// What one poll of one device produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PollOutput {
    pub updates: Vec<RrdUpdate>,
    /// sysName/sysDescr/sysObjectID as read now; `None` when the agent has none of them.
    pub system: Option<SystemInfo>,
    /// sysUpTime in seconds, when the agent has it.
    pub uptime_s: Option<u64>,
    /// Readable notes about what was skipped (absent tables, vanished ports, …).
    pub skipped: Vec<String>,
    /// Every port's state and counters, when asked for (LibreNMS mode).
    pub port_states: Vec<PortState>,
    /// How long each module took (`system`, `ports`, `processors`, `storage`),
    /// for the node's metrics.
    pub timings: Vec<(&'static str, Duration)>,
}

/// Runs one module, noting how long it took when it succeeds.
async fn timed<T, E>(
    module: &'static str,
    run: impl Future<Output = Result<T, E>>,
) -> Result<(T, (&'static str, Duration)), E> {
    let started = Instant::now();
    let out = run.await?;
    Ok((out, (module, started.elapsed())))
}

/// Finds what a device has: system info, ports, processors and storage.
pub async fn discover<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
) -> Result<Discovery, ModuleError> {
    Ok(discover_with(client, target, false).await?.0)
}

/// [`discover`], and with `aliases` (LibreNMS mode) the ifAlias of every
/// interface that has one.
pub async fn discover_with<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    aliases: bool,
) -> Result<(Discovery, Aliases), ModuleError> {
    let mut notes = Vec::new();
    // The system GET doubles as the reachability check: fail fast when down.
    let sys = system::fetch(client, target).await?;
    let (ports, processors, storages) = tokio::try_join!(
        ports::discover(client, target, aliases),
        processors::discover(client, target),
        storage::discover(client, target),
    )?;
    for part in [&ports.2, &processors.1, &storages.1] {
        notes.extend(part.iter().cloned());
    }
    for note in &notes {
        tracing::info!(agent = %target.addr, "discovery: {note}");
    }
    let discovery = Discovery {
        system: sys.info.unwrap_or_default(),
        ports: ports.0,
        processors: processors.0,
        storages: storages.0,
    };
    Ok((discovery, ports.1))
}

/// Polls a device's inventory once; every update is stamped `now` (unix
/// seconds). `step` is the RRD step the files are created with; the modules
/// write raw counters and gauges, so they do not need it today.
pub async fn poll<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    hostname: &str,
    inventory: &Inventory,
    step: u32,
    now: u64,
) -> Result<PollOutput, ModuleError> {
    poll_with(client, target, hostname, inventory, step, now, false).await
}

/// [`poll`], and with `port_states` (LibreNMS mode) every port's
/// [`PortState`] in [`PollOutput::port_states`].
pub async fn poll_with<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    hostname: &str,
    inventory: &Inventory,
    _step: u32,
    now: u64,
    port_states: bool,
) -> Result<PollOutput, ModuleError> {
    let mut out = PollOutput::default();
    let (sys, system_took) = timed("system", system::fetch(client, target)).await?;
    system::updates(&sys, hostname, now, &mut out);
    let (((ports, states), ports_took), (processors, processors_took), (storages, storage_took)) =
        tokio::try_join!(
            timed(
                "ports",
                ports::poll(client, target, hostname, &inventory.ports, now, port_states)
            ),
            timed(
                "processors",
                processors::poll(client, target, hostname, &inventory.processors, now)
            ),
            timed(
                "storage",
                storage::poll(client, target, hostname, &inventory.storages, now)
            ),
        )?;
    out.port_states = states;
    out.timings = vec![system_took, ports_took, processors_took, storage_took];
    for (updates, notes) in [ports, processors, storages] {
        out.updates.extend(updates);
        out.skipped.extend(notes);
    }
    Ok(out)
}

/// Updates and notes one module produced.
type Produced = (Vec<RrdUpdate>, Vec<String>);

/// `<hostname>/<name>.rrd`, sanitised as LibreNMS does (see [`rrd_path`]).
pub use crate::rrd::layout::rrd_path as rrd_file;

/// Walks one table column into `index → value`, skipping exception values
/// and rows whose index is not a single arc. A column the agent cannot
/// serve (error status, garbage) becomes empty with a note; an unreachable
/// device is an error.
async fn walk_column<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    column: &Oid,
) -> Result<(BTreeMap<u32, SnmpValue>, Option<String>), ModuleError> {
    match client.walk(target, column).await {
        Ok(varbinds) => Ok((in_column(varbinds, column), None)),
        Err(e) if e.is_unreachable() => Err(e.into()),
        Err(e) => Ok((
            BTreeMap::new(),
            Some(format!("walk of {column} skipped: {e}")),
        )),
    }
}

/// A walked column as `index → value`, without exception values and rows
/// whose index is not a single arc.
fn in_column(varbinds: Vec<VarBind>, column: &Oid) -> BTreeMap<u32, SnmpValue> {
    varbinds
        .into_iter()
        .filter(|vb| !vb.value.is_exception())
        .filter_map(|vb| Some((vb.oid.index_under(column)?, vb.value)))
        .collect()
}

/// Walks several columns, side by side when the client can (see
/// [`SnmpClient::walk_many`]), collecting the notes of the ones skipped.
async fn walk_columns<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    columns: &[Oid],
    notes: &mut Vec<String>,
) -> Result<Vec<BTreeMap<u32, SnmpValue>>, ModuleError> {
    // Side by side first; a refusal is sorted out column by column, so one
    // column the agent cannot serve does not cost the others.
    let walked = match client.walk_many(target, columns).await {
        Ok(walked) => Some(walked),
        Err(e) if e.is_unreachable() => return Err(e.into()),
        Err(_) => None,
    };
    if let Some(walked) = walked {
        return Ok(walked
            .into_iter()
            .zip(columns)
            .map(|(varbinds, column)| in_column(varbinds, column))
            .collect());
    }
    let results =
        futures::future::try_join_all(columns.iter().map(|c| walk_column(client, target, c)))
            .await?;
    Ok(results
        .into_iter()
        .map(|(values, note)| {
            notes.extend(note);
            values
        })
        .collect())
}

#[cfg(test)]
mod tests;
