//! Storage module: HOST-RESOURCES hrStorageTable → `storage-hrstorage-<descr>.rrd`
//! for disks and `mempool-hrstorage-<index>.rrd` for memory.

use super::defs::{mempool_def, storage_def};
use super::{ModuleError, Produced, rrd_file, walk_columns};
use crate::model::types::{Storage, StorageKind};
use crate::rrd::layout::{RrdUpdate, RrdValue, sanitize_name};
use crate::snmp::{Oid, SnmpClient, SnmpTarget, SnmpValue};
use std::collections::HashMap;

/// hrStorageEntry column (1.3.6.1.2.1.25.2.3.1.<col>).
fn hr_storage(col: u32) -> Oid {
    Oid::from([1, 3, 6, 1, 2, 1, 25, 2, 3, 1, col])
}

const TYPE: u32 = 2;
const DESCR: u32 = 3;
const UNITS: u32 = 4;
const SIZE: u32 = 5;
const USED: u32 = 6;

/// hrStorageTypes (1.3.6.1.2.1.25.2.1.<n>) we graph, and as what.
fn kind_of(storage_type: &SnmpValue) -> Option<StorageKind> {
    let SnmpValue::ObjectId(oid) = storage_type else {
        return None;
    };
    match oid.index_under(&Oid::from([1, 3, 6, 1, 2, 1, 25, 2, 1]))? {
        // hrStorageOther, hrStorageRam, hrStorageVirtualMemory
        1..=3 => Some(StorageKind::Memory),
        // hrStorageFixedDisk, hrStorageRemovableDisk, hrStorageFlashMemory, hrStorageNetworkDisk
        4 | 5 | 9 | 10 => Some(StorageKind::Disk),
        _ => None,
    }
}

/// hrStorageSize/Used are Integer32: agents with big disks wrap them
/// negative, so read a negative value as its unsigned 32-bit twin.
fn count(value: &SnmpValue) -> Option<u64> {
    match value {
        SnmpValue::Integer(v) if *v < 0 => u64::try_from(v + (1i64 << 32)).ok(),
        other => other.as_u64(),
    }
}

/// Graphable rows of hrStorageTable. Rows with no allocation units or no
/// size (pseudo file systems) are left out.
pub(super) async fn discover<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
) -> Result<(Vec<Storage>, Vec<String>), ModuleError> {
    let mut notes = Vec::new();
    let columns = walk_columns(
        client,
        target,
        &[
            hr_storage(TYPE),
            hr_storage(DESCR),
            hr_storage(UNITS),
            hr_storage(SIZE),
        ],
        &mut notes,
    )
    .await?;
    let (types, descrs, units, sizes) = (&columns[0], &columns[1], &columns[2], &columns[3]);
    let storages = types
        .iter()
        .filter_map(|(&index, storage_type)| {
            let kind = kind_of(storage_type)?;
            let units = units.get(&index).and_then(SnmpValue::as_u64)?;
            let units = u32::try_from(units).ok().filter(|u| *u > 0)?;
            sizes.get(&index).and_then(count).filter(|s| *s > 0)?;
            let descr = descrs
                .get(&index)
                .and_then(SnmpValue::as_string)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("storage {index}"));
            Some(Storage {
                index,
                descr,
                kind,
                units,
            })
        })
        .collect();
    Ok((storages, notes))
}

/// The RRD name of every storage, in `storages`' order: `storage-hrstorage-<descr>`
/// for a disk, `mempool-hrstorage-<index>` for memory. Two disks whose
/// descriptions sanitise alike would share a file: every one but the lowest
/// hrStorageIndex gets `-<index>` appended, the same on every node and poll.
pub fn rrd_names(storages: &[Storage]) -> Vec<String> {
    let base = |s: &Storage| match s.kind {
        StorageKind::Disk => sanitize_name(&format!("storage-hrstorage-{}", s.descr)),
        StorageKind::Memory => format!("mempool-hrstorage-{}", s.index),
    };
    let mut first_index: HashMap<String, u32> = HashMap::new();
    for s in storages {
        let index = first_index.entry(base(s)).or_insert(s.index);
        *index = (*index).min(s.index);
    }
    storages
        .iter()
        .map(|s| {
            let name = base(s);
            if first_index.get(&name) == Some(&s.index) {
                name
            } else {
                format!("{name}-{}", s.index)
            }
        })
        .collect()
}

/// Used and free bytes of every known storage.
pub(super) async fn poll<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    hostname: &str,
    storages: &[Storage],
    now: u64,
) -> Result<Produced, ModuleError> {
    let mut notes = Vec::new();
    if storages.is_empty() {
        return Ok((Vec::new(), notes));
    }
    let columns = walk_columns(
        client,
        target,
        &[hr_storage(SIZE), hr_storage(USED)],
        &mut notes,
    )
    .await?;
    let (sizes, used) = (&columns[0], &columns[1]);
    let mut updates = Vec::with_capacity(storages.len());
    for (storage, name) in storages.iter().zip(rrd_names(storages)) {
        let def = match storage.kind {
            StorageKind::Disk => storage_def(),
            StorageKind::Memory => mempool_def(),
        };
        let size = sizes.get(&storage.index).and_then(count);
        let used_units = used.get(&storage.index).and_then(count);
        let (Some(size), Some(used_units)) = (size, used_units) else {
            notes.push(format!(
                "{name} ({}): no hrStorageSize/Used on the agent, skipped",
                storage.descr
            ));
            continue;
        };
        let units = u64::from(storage.units);
        let bytes = |n: u64| RrdValue::Gauge(units.saturating_mul(n) as f64);
        updates.push(RrdUpdate {
            path: rrd_file(hostname, &name),
            def,
            timestamp: now,
            millis: 0,
            values: vec![bytes(used_units), bytes(size.saturating_sub(used_units))],
        });
    }
    Ok((updates, notes))
}
