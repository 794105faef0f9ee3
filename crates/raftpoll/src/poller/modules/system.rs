//! System module: sysDescr, sysObjectID, sysName and sysUpTime → `uptime.rrd`.

use super::defs::uptime_def;
use super::{ModuleError, PollOutput, rrd_file};
use crate::model::types::SystemInfo;
use crate::rrd::layout::{RrdUpdate, RrdValue};
use crate::snmp::{Oid, SnmpClient, SnmpTarget};

const SYS_DESCR: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 1, 0];
const SYS_OBJECT_ID: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 2, 0];
const SYS_UPTIME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 3, 0];
const SYS_NAME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 5, 0];

/// What one system GET returned.
pub(super) struct SystemRead {
    /// `None` when the agent has none of the three system strings.
    pub info: Option<SystemInfo>,
    /// sysUpTime in hundredths of a second.
    pub uptime_ticks: Option<u64>,
}

/// One GET of the system group; also how we learn the device answers at all.
pub(super) async fn fetch<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
) -> Result<SystemRead, ModuleError> {
    let oids = [SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME].map(Oid::from);
    let varbinds = client.get(target, &oids).await?;
    let value = |want: &Oid| {
        varbinds
            .iter()
            .find(|vb| &vb.oid == want && !vb.value.is_exception())
            .map(|vb| &vb.value)
    };
    let text = |want: &Oid| value(want).and_then(|v| v.as_string());
    let descr = text(&oids[0]);
    let object_id = text(&oids[1]);
    let name = text(&oids[3]);
    let info = (descr.is_some() || object_id.is_some() || name.is_some()).then(|| SystemInfo {
        sys_name: name.unwrap_or_default(),
        sys_descr: descr.unwrap_or_default(),
        sys_object_id: object_id.unwrap_or_default(),
    });
    Ok(SystemRead {
        info,
        uptime_ticks: value(&oids[2]).and_then(|v| v.as_u64()),
    })
}

/// `uptime.rrd` in seconds, and the system info for the caller.
pub(super) fn updates(read: &SystemRead, hostname: &str, now: u64, out: &mut PollOutput) {
    out.system = read.info.clone();
    out.uptime_s = read.uptime_ticks.map(|ticks| ticks / 100);
    match read.uptime_ticks {
        Some(ticks) => out.updates.push(RrdUpdate {
            path: rrd_file(hostname, "uptime"),
            def: uptime_def(),
            timestamp: now,
            millis: 0,
            values: vec![RrdValue::Gauge((ticks / 100) as f64)],
        }),
        None => out
            .skipped
            .push("uptime: the agent has no sysUpTime.0".to_string()),
    }
}
