//! Turns Admin replies into what the CLI prints: aligned tables for people,
//! JSON for scripts.

use crate::proto::{self as pb};
use serde_json::{Value, json};
use std::fmt::Write as _;

pub fn status_json(s: &pb::StatusReply) -> Value {
    let devices = s.devices.unwrap_or_default();
    let rrd = s.rrd.clone().unwrap_or_default();
    json!({
        "leader_id": s.leader_id,
        "term": s.term,
        "nodes": s.nodes.iter().map(|n| json!({
            "id": n.id, "name": n.name, "addr": n.addr, "role": n.role,
            "alive": n.alive, "groups": n.groups, "devices": n.devices,
            "version": n.version, "feature_level": n.feature_level,
        })).collect::<Vec<_>>(),
        "cluster_feature_level": s.cluster_feature_level,
        "devices": {"total": devices.total, "unassigned": devices.unassigned},
        "answered_by": s.answered_by,
        "rrd": {
            "rrdcached": rrd.rrdcached, "connected": rrd.connected, "queued": rrd.queued,
            "written": rrd.written, "dropped": rrd.dropped, "errors": rrd.errors,
            "spool_bytes": rrd.spool_bytes, "spool_records": rrd.spool_records,
            "spool_oldest": rrd.spool_oldest, "spool_dropped": rrd.spool_dropped,
        },
        "librenms": s.librenms.as_ref().map(librenms_json),
    })
}

/// The answering node's link to LibreNMS (`null` without `[librenms]`).
fn librenms_json(l: &pb::LibrenmsStatus) -> Value {
    json!({
        "database": l.database,
        "connected": l.connected,
        "last_error": l.last_error,
        "last_sync": l.last_sync,
        "devices": l.devices,
        "skipped": l.skipped.iter().map(skipped_json).collect::<Vec<_>>(),
        "rows_written": l.rows_written,
        "backlog": l.backlog,
    })
}

/// A LibreNMS row raftpoll does not poll, as `device list --json` and
/// `status --json` show it.
pub fn skipped_json(k: &pb::SkippedDevice) -> Value {
    json!({
        "hostname": k.hostname,
        "device_id": k.device_id,
        "status": "skipped",
        "reason": k.reason,
    })
}

pub fn device_json(d: &pb::DeviceSummary) -> Value {
    json!({
        "hostname": d.hostname,
        "group": d.group,
        "node_id": d.node_id,
        "status": d.status,
        "last_polled": d.last_polled,
        "last_poll_ms": d.last_poll_ms,
    })
}

pub fn detail_json(d: &pb::DeviceDetail) -> Value {
    let summary = d.device.clone().unwrap_or_default();
    let mut v = device_json(&summary);
    if let Value::Object(map) = &mut v {
        map.insert("reason".into(), json!(summary.reason));
        map.insert("address".into(), json!(summary.address));
        map.insert("port".into(), json!(summary.port));
        map.insert("snmp_version".into(), json!(summary.snmp_version));
        map.insert("sys_name".into(), json!(d.sys_name));
        map.insert("sys_descr".into(), json!(d.sys_descr));
        map.insert("sys_object_id".into(), json!(d.sys_object_id));
        map.insert("last_discovered".into(), json!(d.last_discovered));
        map.insert(
            "ports".into(),
            d.ports
                .iter()
                .map(|p| json!({"port_id": p.port_id, "ifindex": p.ifindex, "ifname": p.ifname, "ifdescr": p.ifdescr, "rrd": p.rrd}))
                .collect(),
        );
        map.insert("rrd_files".into(), json!(d.rrd_files));
    }
    v
}

/// A value, or `-` where the reply has none.
/// A port's ifName, else its ifDescr; `?` while no node that answered has
/// discovered it (names are kept by the nodes that discover the ports).
fn port_name(p: &pb::PortInfo) -> &str {
    [p.ifname.as_str(), p.ifdescr.as_str()]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or("?")
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub(super) fn status_table(s: &pb::StatusReply) -> String {
    let devices = s.devices.unwrap_or_default();
    let mut out = format!(
        "leader: {}   term: {}   devices: {} ({} unassigned)   feature level: {}\n\n",
        opt(s.leader_id),
        s.term,
        devices.total,
        devices.unassigned,
        s.cluster_feature_level
    );
    let _ = writeln!(
        out,
        "{:>4}  {:<16} {:<22} {:<9} {:<6} {:<10} {:>7}  {:<10} {:>5}",
        "ID", "NAME", "ADDRESS", "ROLE", "ALIVE", "GROUPS", "DEVICES", "VERSION", "LEVEL"
    );
    for n in &s.nodes {
        let groups = n
            .groups
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let alive = if n.alive { "yes" } else { "NO" };
        let version = match (n.version.as_str(), n.feature_level) {
            (_, 0) => "?",
            ("", _) => "older",
            (v, _) => v,
        };
        let level = match n.feature_level {
            0 => "?".to_string(),
            l => l.to_string(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<16} {:<22} {:<9} {:<6} {:<10} {:>7}  {:<10} {:>5}",
            n.id, n.name, n.addr, n.role, alive, groups, n.devices, version, level
        );
    }
    if let Some(r) = &s.rrd {
        let _ = write!(
            out,
            "\nrrdcached {} ({}): {} queued, {} written, {} dropped, {} errors",
            r.rrdcached,
            if r.connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            r.queued,
            r.written,
            r.dropped,
            r.errors
        );
        if r.spool_records > 0 || r.spool_dropped > 0 {
            let _ = write!(
                out,
                "\nspool: {} updates waiting ({} bytes, oldest {}), {} dropped for space",
                r.spool_records,
                r.spool_bytes,
                opt(r.spool_oldest),
                r.spool_dropped
            );
        }
    }
    if let Some(l) = &s.librenms {
        let _ = write!(
            out,
            "
librenms {} ({}): last sync {}, {} devices, {} skipped, {} rows written, {} waiting",
            l.database,
            if l.connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            opt(l.last_sync),
            l.devices,
            l.skipped.len(),
            l.rows_written,
            l.backlog
        );
        if let Some(e) = &l.last_error {
            let _ = write!(
                out,
                "
librenms last error: {e}"
            );
        }
        for k in &l.skipped {
            let _ = write!(
                out,
                "
  skipped {} (device_id {}): {}",
                k.hostname, k.device_id, k.reason
            );
        }
    }
    out
}

pub(super) fn devices_table(
    devices: &[pb::DeviceSummary],
    skipped: &[pb::SkippedDevice],
) -> String {
    let mut out = format!(
        "{:<24} {:>5} {:>5} {:<8} {:>11} {:>8}\n",
        "HOSTNAME", "GROUP", "NODE", "STATUS", "LAST POLLED", "POLL MS"
    );
    for d in devices {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>5} {:<8} {:>11} {:>8}",
            d.hostname,
            d.group,
            opt(d.node_id),
            d.status,
            opt(d.last_polled),
            opt(d.last_poll_ms)
        );
    }
    for k in skipped {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>5} {:<8} LibreNMS device_id {}: {}",
            k.hostname, "-", "-", "skipped", k.device_id, k.reason
        );
    }
    out.trim_end().to_string()
}

pub(super) fn detail_text(d: &pb::DeviceDetail) -> String {
    let s = d.device.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "hostname:     {}", s.hostname);
    let _ = writeln!(
        out,
        "address:      {}:{} (SNMP {})",
        s.address, s.port, s.snmp_version
    );
    let _ = writeln!(out, "group:        {}", s.group);
    let _ = writeln!(out, "node:         {}", opt(s.node_id));
    let _ = writeln!(
        out,
        "status:       {}{}",
        s.status,
        s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "last polled:  {} ({} ms)",
        opt(s.last_polled),
        opt(s.last_poll_ms)
    );
    let _ = writeln!(out, "sysName:      {}", d.sys_name);
    let _ = writeln!(out, "sysDescr:     {}", d.sys_descr);
    let _ = writeln!(out, "ports:");
    for p in &d.ports {
        let _ = writeln!(
            out,
            "  {:>6} ifIndex {:<8} {:<20} {}",
            p.port_id,
            p.ifindex,
            port_name(p),
            p.rrd
        );
    }
    let _ = writeln!(out, "rrd files:");
    for f in &d.rrd_files {
        let _ = writeln!(out, "  {f}");
    }
    out.trim_end().to_string()
}
