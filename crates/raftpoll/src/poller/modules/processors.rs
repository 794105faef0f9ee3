//! Processors module: HOST-RESOURCES hrProcessorLoad → `processor-hr-<index>.rrd`.

use super::defs::processor_def;
use super::{ModuleError, Produced, rrd_file, walk_column, walk_columns};
use crate::model::types::Processor;
use crate::rrd::layout::{RrdUpdate, RrdValue};
use crate::snmp::{Oid, SnmpClient, SnmpTarget};

fn hr_processor_load() -> Oid {
    Oid::from([1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2])
}

fn hr_processor_frw_id() -> Oid {
    Oid::from([1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 1])
}

fn hr_device_descr() -> Oid {
    Oid::from([1, 3, 6, 1, 2, 1, 25, 3, 2, 1, 3])
}

/// Processors are the rows of hrProcessorTable (net-snmp has the rows at
/// once but hrProcessorLoad only after a minute of samples, so both columns
/// count); their names come from hrDeviceDescr of the same index (one GET).
pub(super) async fn discover<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
) -> Result<(Vec<Processor>, Vec<String>), ModuleError> {
    let mut notes = Vec::new();
    let columns = walk_columns(
        client,
        target,
        &[hr_processor_frw_id(), hr_processor_load()],
        &mut notes,
    )
    .await?;
    let mut indexes: Vec<u32> = columns.iter().flat_map(|c| c.keys().copied()).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.is_empty() {
        return Ok((Vec::new(), notes));
    }
    let descr_oids: Vec<Oid> = indexes
        .iter()
        .map(|i| hr_device_descr().child(*i))
        .collect();
    let descrs = match client.get(target, &descr_oids).await {
        Ok(varbinds) => varbinds,
        Err(e) if e.is_unreachable() => return Err(e.into()),
        Err(e) => {
            notes.push(format!("processor names skipped: {e}"));
            Vec::new()
        }
    };
    let processors = indexes
        .into_iter()
        .map(|index| {
            let want = hr_device_descr().child(index);
            let descr = descrs
                .iter()
                .find(|vb| vb.oid == want)
                .and_then(|vb| vb.value.as_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("Processor {index}"));
            Processor { index, descr }
        })
        .collect();
    Ok((processors, notes))
}

/// Load of every known processor, in percent.
pub(super) async fn poll<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    hostname: &str,
    processors: &[Processor],
    now: u64,
) -> Result<Produced, ModuleError> {
    let mut notes = Vec::new();
    if processors.is_empty() {
        return Ok((Vec::new(), notes));
    }
    let (loads, note) = walk_column(client, target, &hr_processor_load()).await?;
    notes.extend(note);
    let mut updates = Vec::with_capacity(processors.len());
    for processor in processors {
        match loads.get(&processor.index).and_then(|v| v.as_i64()) {
            Some(load) => updates.push(RrdUpdate {
                path: rrd_file(hostname, &format!("processor-hr-{}", processor.index)),
                def: processor_def(),
                timestamp: now,
                millis: 0,
                values: vec![RrdValue::Gauge(load as f64)],
            }),
            None => notes.push(format!(
                "processor-hr-{} ({}): no hrProcessorLoad on the agent, skipped",
                processor.index, processor.descr
            )),
        }
    }
    Ok((updates, notes))
}
