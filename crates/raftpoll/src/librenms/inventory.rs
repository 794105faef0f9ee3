//! Inventory from LibreNMS: `devices` rows mapped to raftpoll devices (or
//! skipped with a reason), and the difference to the replicated state as the
//! log entries that close it. Pure; the task that reads the table and
//! proposes the entries is [`run`].

use super::{DeviceLink, Librenms, PortAssociation, Skipped};
use crate::api::admin::new_device;
use crate::cluster::handle::ClusterHandle;
use crate::model::state::ClusterState;
use crate::model::types::{Command, NewDevice};
use crate::proto as pb;
use crate::rrd::layout::rrd_dir;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;

/// Devices per log entry of a sync, as for a bulk import.
const DEVICES_PER_ENTRY: usize = 2000;

/// A `devices` row, with the columns raftpoll reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceRow {
    pub device_id: u32,
    pub hostname: String,
    pub overwrite_ip: Option<String>,
    pub port: u16,
    pub transport: String,
    pub snmpver: String,
    pub community: Option<String>,
    pub authlevel: Option<String>,
    pub authname: Option<String>,
    pub authpass: Option<String>,
    pub authalgo: Option<String>,
    pub cryptopass: Option<String>,
    pub cryptoalgo: Option<String>,
    pub poller_group: u32,
    pub disabled: bool,
    pub snmp_disable: bool,
    pub port_association_mode: u32,
}

/// What one read of the `devices` table means for raftpoll.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Devices to poll, by hostname.
    pub wanted: BTreeMap<String, NewDevice>,
    /// Every device's LibreNMS id and port association mode, by hostname.
    pub links: HashMap<String, DeviceLink>,
    /// Rows raftpoll cannot poll, with the reason (disabled rows are not
    /// listed: LibreNMS does not poll them either).
    pub skipped: Vec<Skipped>,
}

/// Maps the rows of one read; a hostname given twice keeps its first row.
pub fn inventory(rows: &[DeviceRow]) -> Inventory {
    let mut inv = Inventory::default();
    // RRD directory → device_id of the row that has it.
    let mut dirs: HashMap<String, u32> = HashMap::new();
    for row in rows {
        if row.disabled {
            continue;
        }
        let skip = |reason: String| Skipped {
            device_id: row.device_id,
            hostname: row.hostname.clone(),
            reason,
        };
        if let Some(first) = inv.links.get(&row.hostname) {
            let reason = format!(
                "hostname already used by device_id {}: RRD files would collide",
                first.device_id
            );
            inv.skipped.push(skip(reason));
            continue;
        }
        let dir = rrd_dir(&row.hostname);
        if let Some(first) = dirs.get(&dir) {
            let reason = format!(
                "RRD directory '{dir}' is already that of device_id {first}: the hostnames \
                 differ only in characters file names cannot hold"
            );
            inv.skipped.push(skip(reason));
            continue;
        }
        match device(row) {
            Ok(device) => {
                dirs.insert(dir, row.device_id);
                inv.links.insert(
                    device.hostname.clone(),
                    DeviceLink {
                        device_id: row.device_id,
                        port_association: PortAssociation::from_mode(row.port_association_mode),
                    },
                );
                inv.wanted.insert(device.hostname.clone(), device);
            }
            Err(reason) => inv.skipped.push(skip(reason)),
        }
    }
    inv
}

/// One row as a raftpoll device, or why raftpoll cannot poll it. Reasons
/// name columns, never their secret values.
pub fn device(row: &DeviceRow) -> Result<NewDevice, String> {
    if row.snmp_disable {
        return Err("SNMP is disabled for this device (ping-only in LibreNMS)".into());
    }
    match row.transport.as_str() {
        "udp" | "udp6" | "" => {}
        other => return Err(format!("transport '{other}' is not supported (udp, udp6)")),
    }
    let mut creds = pb::Credentials::default();
    match row.snmpver.as_str() {
        "v1" | "v2c" => {
            creds.version = row.snmpver.clone();
            creds.community = row.community.clone().unwrap_or_default();
            if creds.community.is_empty() {
                return Err(format!("snmpver {} without a community", row.snmpver));
            }
        }
        "v3" => v3(row, &mut creds)?,
        other => return Err(format!("snmpver '{other}' is not supported (v1, v2c, v3)")),
    }
    let address = row
        .overwrite_ip
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or_default()
        .to_string();
    let request = pb::AddDeviceRequest {
        hostname: row.hostname.clone(),
        address,
        port: u32::from(row.port),
        credentials: Some(creds),
        group: row.poller_group,
    };
    new_device(request).map_err(|status| status.message().to_string())
}

fn v3(row: &DeviceRow, creds: &mut pb::Credentials) -> Result<(), String> {
    creds.version = "v3".into();
    creds.v3_user = row.authname.clone().unwrap_or_default();
    if creds.v3_user.is_empty() {
        return Err("snmpver v3 without an authname".into());
    }
    let level = row.authlevel.as_deref().unwrap_or("noAuthNoPriv");
    let (auth, privacy) = match level {
        "noAuthNoPriv" => (false, false),
        "authNoPriv" => (true, false),
        "authPriv" => (true, true),
        other => {
            return Err(format!(
                "authlevel '{other}' is not an SNMPv3 security level"
            ));
        }
    };
    if auth {
        creds.auth_proto = match row.authalgo.as_deref().unwrap_or("MD5") {
            "MD5" => "md5",
            "SHA" => "sha",
            "SHA-256" => "sha256",
            "SHA-512" => "sha512",
            other => {
                return Err(format!(
                    "authalgo '{other}' is not supported (MD5, SHA, SHA-256, SHA-512)"
                ));
            }
        }
        .into();
        creds.auth_pass = row.authpass.clone().unwrap_or_default();
        if creds.auth_pass.len() < 8 {
            return Err("authpass must be at least 8 characters (RFC 3414)".into());
        }
    }
    if privacy {
        creds.priv_proto = match row.cryptoalgo.as_deref().unwrap_or("AES") {
            "DES" => "des",
            "AES" => "aes",
            "AES-256" => "aes256",
            other => {
                return Err(format!(
                    "cryptoalgo '{other}' is not supported (DES, AES, AES-256)"
                ));
            }
        }
        .into();
        creds.priv_pass = row.cryptopass.clone().unwrap_or_default();
        if creds.priv_pass.len() < 8 {
            return Err("cryptopass must be at least 8 characters (RFC 3414)".into());
        }
    }
    Ok(())
}

/// The log entries that make the replicated devices equal to `wanted`: new
/// devices added, changed ones (address, port, credentials, group) updated,
/// the others removed. Empty when nothing differs, so a sync is idempotent.
pub fn diff(wanted: &BTreeMap<String, NewDevice>, state: &ClusterState) -> Vec<Command> {
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (hostname, want) in wanted {
        match state.devices.get(hostname) {
            None => added.push(want.clone()),
            Some(have)
                if have.address != want.address
                    || have.port != want.port
                    || have.credentials != want.credentials
                    || have.group != want.group =>
            {
                changed.push(want.clone())
            }
            Some(_) => {}
        }
    }
    let removed: Vec<String> = state
        .devices
        .keys()
        .filter(|h| !wanted.contains_key(*h))
        .cloned()
        .collect();
    let mut out = Vec::new();
    out.extend(
        added
            .chunks(DEVICES_PER_ENTRY)
            .map(|c| Command::AddDevices(c.to_vec())),
    );
    out.extend(
        changed
            .chunks(DEVICES_PER_ENTRY)
            .map(|c| Command::UpdateDevices(c.to_vec())),
    );
    out.extend(
        removed
            .chunks(DEVICES_PER_ENTRY)
            .map(|c| Command::RemoveDevices(c.to_vec())),
    );
    out
}

/// Reads the `devices` table every `interval` until shutdown. Every node
/// keeps what it read (LibreNMS ids, skipped rows); the leader also writes
/// the difference into the log. A failed read changes nothing.
pub async fn run(
    librenms: Librenms,
    cluster: ClusterHandle,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => sync_once(&librenms, &cluster).await,
            _ = shutdown.changed() => return,
        }
    }
}

async fn sync_once(librenms: &Librenms, cluster: &ClusterHandle) {
    let rows = match librenms.db().device_rows().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "LibreNMS inventory not read; nothing changes");
            librenms.set_error(e.to_string());
            return;
        }
    };
    let inv = inventory(&rows);
    let wanted = inv.wanted.len();
    librenms.set_inventory(inv.links, inv.skipped);
    if !cluster.is_leader() {
        return;
    }
    let commands = cluster.read(|state| diff(&inv.wanted, state));
    for cmd in commands {
        let what = cmd.to_string();
        if let Err(e) = cluster.propose(cmd).await {
            tracing::warn!(entry = %what, error = %e, "LibreNMS inventory change not written; next sync retries");
            return;
        }
        tracing::info!(entry = %what, "LibreNMS inventory change written");
    }
    tracing::debug!(devices = wanted, "LibreNMS inventory in sync");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snmp::credentials::{AuthProtocol, PrivProtocol, SnmpCredentials};

    fn row(id: u32, hostname: &str) -> DeviceRow {
        DeviceRow {
            device_id: id,
            hostname: hostname.into(),
            port: 161,
            transport: "udp".into(),
            snmpver: "v2c".into(),
            community: Some("public".into()),
            port_association_mode: 1,
            ..DeviceRow::default()
        }
    }

    fn reasons(inv: &Inventory) -> Vec<(&str, &str)> {
        inv.skipped
            .iter()
            .map(|s| (s.hostname.as_str(), s.reason.as_str()))
            .collect()
    }

    #[test]
    fn rows_map_to_devices_or_named_reasons() {
        let mut v3 = row(2, "r2");
        v3.snmpver = "v3".into();
        v3.authlevel = Some("authPriv".into());
        v3.authname = Some("bob".into());
        v3.authalgo = Some("SHA-256".into());
        v3.authpass = Some("auth-secret-1".into());
        v3.cryptoalgo = Some("AES-256".into());
        v3.cryptopass = Some("priv-secret-1".into());
        v3.overwrite_ip = Some("10.0.0.2".into());
        v3.poller_group = 3;
        let mut tcp = row(3, "r3");
        tcp.transport = "tcp".into();
        let mut sha224 = v3.clone();
        sha224.device_id = 4;
        sha224.hostname = "r4".into();
        sha224.authalgo = Some("SHA-224".into());
        let mut ping_only = row(5, "r5");
        ping_only.snmp_disable = true;
        let mut disabled = row(6, "r6");
        disabled.disabled = true;
        let twin = row(7, "r1");
        let inv = inventory(&[row(1, "r1"), v3, tcp, sha224, ping_only, disabled, twin]);

        assert_eq!(inv.wanted.keys().collect::<Vec<_>>(), ["r1", "r2"]);
        let r2 = &inv.wanted["r2"];
        assert_eq!((r2.address.as_str(), r2.group), ("10.0.0.2", 3));
        match &r2.credentials {
            SnmpCredentials::V3(usm) => {
                assert_eq!(usm.auth.as_ref().map(|a| a.0), Some(AuthProtocol::Sha256));
                assert_eq!(
                    usm.privacy.as_ref().map(|p| p.0),
                    Some(PrivProtocol::Aes256)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            inv.wanted["r1"].address, "r1",
            "no overwrite_ip: the hostname"
        );
        assert_eq!(inv.links["r2"].device_id, 2);
        assert_eq!(
            reasons(&inv),
            [
                ("r3", "transport 'tcp' is not supported (udp, udp6)"),
                (
                    "r4",
                    "authalgo 'SHA-224' is not supported (MD5, SHA, SHA-256, SHA-512)"
                ),
                (
                    "r5",
                    "SNMP is disabled for this device (ping-only in LibreNMS)"
                ),
                (
                    "r1",
                    "hostname already used by device_id 1: RRD files would collide"
                ),
            ]
        );
    }

    #[test]
    fn reasons_never_show_secrets() {
        let mut r = row(1, "r1");
        r.snmpver = "v3".into();
        r.authlevel = Some("authPriv".into());
        r.authname = Some("bob".into());
        r.authpass = Some("short".into());
        r.cryptopass = Some("secret-priv-x".into());
        let inv = inventory(&[r]);
        let reason = &inv.skipped[0].reason;
        assert_eq!(reason, "authpass must be at least 8 characters (RFC 3414)");
        assert!(!reason.contains("short") && !reason.contains("secret-priv-x"));
    }

    #[test]
    fn a_row_whose_rrd_directory_is_taken_is_skipped() {
        // An IPv6 literal with and without brackets: both `fe80__1/`.
        let inv = inventory(&[row(1, "fe80::1"), row(2, "[fe80::1]"), row(3, "fe80::2")]);
        assert_eq!(
            inv.wanted.keys().collect::<Vec<_>>(),
            ["fe80::1", "fe80::2"]
        );
        assert_eq!(inv.skipped.len(), 1, "{:?}", inv.skipped);
        assert_eq!(inv.skipped[0].device_id, 2);
        let reason = &inv.skipped[0].reason;
        assert!(
            reason.contains("'fe80__1'") && reason.contains("device_id 1"),
            "{reason}"
        );
    }

    #[test]
    fn diff_adds_updates_removes_and_is_idempotent() {
        let mut state = ClusterState::default();
        let first = inventory(&[row(1, "a"), row(2, "b"), row(3, "c")]);
        for cmd in diff(&first.wanted, &state) {
            state.apply(&cmd);
        }
        assert_eq!(state.devices.len(), 3);
        assert!(diff(&first.wanted, &state).is_empty(), "in sync: no entry");

        let mut moved = row(2, "b");
        moved.overwrite_ip = Some("192.0.2.7".into());
        moved.poller_group = 1;
        let mut recred = row(3, "c");
        recred.community = Some("other".into());
        let second = inventory(&[moved, recred, row(4, "d")]);
        let cmds = diff(&second.wanted, &state);
        let names: Vec<String> = cmds.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "AddDevices(1 devices)",
                "UpdateDevices(2 devices)",
                "RemoveDevices(1 devices)"
            ]
        );
        for cmd in &cmds {
            state.apply(cmd);
        }
        assert_eq!(
            state.devices.keys().collect::<Vec<_>>(),
            ["b", "c", "d"],
            "a removed"
        );
        assert_eq!(state.devices["b"].address, "192.0.2.7");
        assert_eq!(state.devices["b"].group, 1);
        assert!(diff(&second.wanted, &state).is_empty());
    }

    #[test]
    fn an_empty_table_removes_everything_but_only_when_read() {
        let mut state = ClusterState::default();
        for cmd in diff(&inventory(&[row(1, "a")]).wanted, &state) {
            state.apply(&cmd);
        }
        let cmds = diff(&inventory(&[]).wanted, &state);
        assert_eq!(cmds, [Command::RemoveDevices(vec!["a".into()])]);
    }
}
