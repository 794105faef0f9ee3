//! LibreNMS port ids: at discovery the owning node matches the agent's
//! interfaces to the device's `ports` rows by the device's port association
//! mode, inserts rows for new interfaces (the table's auto-increment is the
//! id), marks vanished ones `deleted = 1`; after every poll it updates the
//! columns LibreNMS's port list shows.

use super::{DeviceLink, LibrenmsError, PortAssociation, db::Db};
use crate::model::types::DiscoveredPort;
use crate::poller::modules::PortState;
use sqlx::{MySql, Row, Transaction};
use std::collections::{BTreeMap, HashSet};

/// One interface as one poll read it, for its `ports` row (its names are
/// written by the discovery that found it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortSample {
    /// LibreNMS's `ports.port_id`.
    pub port_id: u64,
    pub state: PortState,
}

/// A device's `ports` row, with the columns matching needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PortRow {
    port_id: u64,
    ifindex: Option<u32>,
    ifname: String,
    ifdescr: String,
    ifalias: String,
    deleted: bool,
}

/// What one discovery changes in a device's `ports` rows.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Discovered interfaces matched to a row: ifIndex → port_id.
    matched: BTreeMap<u32, u64>,
    /// Rows no interface matched that are not marked deleted yet.
    vanished: Vec<u64>,
    /// ifIndexes of interfaces without a row.
    new: Vec<u32>,
    /// Rows that must give up their ifIndex first (UNIQUE(device_id,
    /// ifIndex)): matched rows that move to another one, and vanished rows
    /// whose ifIndex an interface now has.
    parked: Vec<u64>,
}

/// An interface's key in the device's association mode (empty: no match).
fn key<'a>(mode: PortAssociation, found: &'a DiscoveredPort, alias: &'a str) -> String {
    match mode {
        PortAssociation::IfIndex => found.ifindex.to_string(),
        PortAssociation::IfName => found.ifname.clone(),
        PortAssociation::IfDescr => found.ifdescr.clone(),
        PortAssociation::IfAlias => alias.to_string(),
    }
}

fn row_key(mode: PortAssociation, row: &PortRow) -> String {
    match mode {
        PortAssociation::IfIndex => row.ifindex.map(|i| i.to_string()).unwrap_or_default(),
        PortAssociation::IfName => row.ifname.clone(),
        PortAssociation::IfDescr => row.ifdescr.clone(),
        PortAssociation::IfAlias => row.ifalias.clone(),
    }
}

/// Matches interfaces to rows: each row at most once, live rows before
/// deleted ones, then the lowest port id (the one LibreNMS made first).
fn plan(
    mode: PortAssociation,
    rows: &[PortRow],
    found: &[DiscoveredPort],
    aliases: &BTreeMap<u32, String>,
) -> Plan {
    let mut order: Vec<&PortRow> = rows.iter().collect();
    order.sort_by_key(|r| (r.deleted, r.port_id));
    let mut used = HashSet::new();
    let mut plan = Plan::default();
    for port in found {
        let alias = aliases.get(&port.ifindex).map_or("", String::as_str);
        let k = key(mode, port, alias);
        let row = (!k.is_empty())
            .then(|| {
                order
                    .iter()
                    .find(|r| !used.contains(&r.port_id) && row_key(mode, r) == k)
            })
            .flatten();
        match row {
            Some(r) => {
                used.insert(r.port_id);
                plan.matched.insert(port.ifindex, r.port_id);
            }
            None => plan.new.push(port.ifindex),
        }
    }
    plan.vanished = rows
        .iter()
        .filter(|r| !r.deleted && !used.contains(&r.port_id))
        .map(|r| r.port_id)
        .collect();
    let indexes: HashSet<u32> = found.iter().map(|p| p.ifindex).collect();
    let moving: HashSet<u64> = plan
        .matched
        .iter()
        .filter(|(i, id)| {
            rows.iter()
                .any(|r| r.port_id == **id && r.ifindex != Some(**i))
        })
        .map(|(_, id)| *id)
        .collect();
    plan.parked = rows
        .iter()
        .filter(|r| {
            moving.contains(&r.port_id)
                || (!used.contains(&r.port_id) && r.ifindex.is_some_and(|i| indexes.contains(&i)))
        })
        .map(|r| r.port_id)
        .collect();
    plan
}

/// The LibreNMS port id of every discovered interface, by ifIndex. One
/// transaction; the device's rows are locked (`FOR UPDATE`) so two nodes
/// discovering the same device one after the other never insert a port
/// twice, and UNIQUE(device_id, ifIndex) turns a racing insert into a reuse.
pub async fn port_ids(
    db: &Db,
    link: DeviceLink,
    found: &[DiscoveredPort],
    aliases: &BTreeMap<u32, String>,
) -> Result<BTreeMap<u32, u64>, LibrenmsError> {
    let what = "matching ports";
    let err = |e| db.error(what, e);
    let mut tx = db.pool().begin().await.map_err(err)?;
    let rows = sqlx::query(
        "SELECT CAST(port_id AS UNSIGNED) AS port_id, CAST(ifIndex AS SIGNED) AS ifIndex, \
         ifName, ifDescr, ifAlias, CAST(deleted AS SIGNED) AS deleted \
         FROM ports WHERE device_id = ? FOR UPDATE",
    )
    .bind(link.device_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(err)?;
    let rows = rows
        .iter()
        .map(|r| -> Result<PortRow, sqlx::Error> {
            let text = |c: &str| -> Result<String, sqlx::Error> {
                Ok(r.try_get::<Option<String>, _>(c)?.unwrap_or_default())
            };
            Ok(PortRow {
                port_id: r.try_get("port_id")?,
                ifindex: r
                    .try_get::<Option<i64>, _>("ifIndex")?
                    .and_then(|i| u32::try_from(i).ok()),
                ifname: text("ifName")?,
                ifdescr: text("ifDescr")?,
                ifalias: text("ifAlias")?,
                deleted: r.try_get::<i64, _>("deleted")? != 0,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let plan = plan(link.port_association, &rows, found, aliases);
    let by_index: BTreeMap<u32, &DiscoveredPort> = found.iter().map(|p| (p.ifindex, p)).collect();
    let alias = |i: u32| aliases.get(&i).map(String::as_str);
    // A negative ifIndex is no agent's: parked rows hold one until their
    // new ifIndex is set (vanished ones keep it, so a new interface with
    // their old ifIndex gets a row of its own).
    for port_id in &plan.parked {
        sqlx::query("UPDATE ports SET ifIndex = -CAST(port_id AS SIGNED) WHERE port_id = ? AND device_id = ?")
            .bind(port_id)
            .bind(link.device_id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    for port_id in &plan.vanished {
        sqlx::query("UPDATE ports SET deleted = 1 WHERE port_id = ? AND device_id = ?")
            .bind(port_id)
            .bind(link.device_id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    for (ifindex, port_id) in &plan.matched {
        let Some(port) = by_index.get(ifindex) else {
            continue;
        };
        sqlx::query(
            "UPDATE ports SET deleted = 0, ifIndex = ?, ifName = ?, ifDescr = ?, \
             ifAlias = COALESCE(?, ifAlias) WHERE port_id = ? AND device_id = ?",
        )
        .bind(ifindex)
        .bind(&port.ifname)
        .bind(&port.ifdescr)
        .bind(alias(*ifindex))
        .bind(port_id)
        .bind(link.device_id)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    let mut ids = plan.matched.clone();
    for ifindex in &plan.new {
        let Some(port) = by_index.get(ifindex) else {
            continue;
        };
        // As LibreNMS's discovery: device_id, ifIndex, ifName, ifDescr,
        // ifAlias. LAST_INSERT_ID(port_id) makes an existing row's id the
        // statement's insert id too.
        let done = sqlx::query(
            "INSERT INTO ports (device_id, ifIndex, ifName, ifDescr, ifAlias) \
             VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
             port_id = LAST_INSERT_ID(port_id), deleted = 0, ifName = VALUES(ifName), \
             ifDescr = VALUES(ifDescr), ifAlias = VALUES(ifAlias)",
        )
        .bind(link.device_id)
        .bind(ifindex)
        .bind(&port.ifname)
        .bind(&port.ifdescr)
        .bind(alias(*ifindex))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        ids.insert(*ifindex, done.last_insert_id());
    }
    tx.commit().await.map_err(err)?;
    Ok(ids)
}

/// The counter columns a poll updates, each with `_prev`, `_delta`, `_rate`.
const COUNTERS: [&str; 6] = [
    "ifInOctets",
    "ifOutOctets",
    "ifInUcastPkts",
    "ifOutUcastPkts",
    "ifInErrors",
    "ifOutErrors",
];

fn counters(state: &PortState) -> [Option<u64>; 6] {
    [
        state.in_octets,
        state.out_octets,
        state.in_ucast,
        state.out_ucast,
        state.in_errors,
        state.out_errors,
    ]
}

/// Ports per statement: a few thousand bound values, well under MySQL's
/// 65,535 placeholders, and one round trip for about 30 devices.
const PORTS_PER_STATEMENT: usize = 1000;

/// The columns a poll sets besides the counters and `poll_time`, in bind order
/// after `port_id, device_id`; the counters and `poll_time` follow.
const STATE_COLUMNS: [&str; 4] = ["ifOperStatus", "ifAdminStatus", "ifSpeed", "ifAlias"];

/// The upsert of many ports after their polls: one statement, one round
/// trip. The rows exist (discovery made them); should one have been deleted
/// meanwhile it comes back with `deleted = 1`, which LibreNMS hides and
/// cleans up, rather than as a live orphan.
///
/// MySQL assigns `ON DUPLICATE KEY UPDATE` left to right, each assignment
/// seeing the ones before it: `_prev` takes the old value first, `_delta`
/// and `_rate` are computed from it and the old `poll_time`, and only then
/// are the value and the poll columns overwritten. A counter that went
/// backwards (reset, wrap) has no delta or rate this time. Status and speed
/// keep their `_prev` until they change, as LibreNMS's poller does.
fn upsert_sql(rows: usize) -> String {
    let columns: Vec<&str> = STATE_COLUMNS
        .into_iter()
        .chain(COUNTERS)
        .chain(["poll_time"])
        .collect();
    let mut sql = format!(
        "INSERT INTO ports (port_id, device_id, deleted, {}) VALUES ",
        columns.join(", ")
    );
    let one = format!("(?, ?, 1{})", ", ?".repeat(columns.len()));
    sql.push_str(&vec![one; rows].join(", "));
    sql.push_str(" ON DUPLICATE KEY UPDATE ");
    let mut set = Vec::new();
    for c in ["ifOperStatus", "ifAdminStatus", "ifSpeed"] {
        set.push(format!(
            "{c}_prev = IF(VALUES({c}) IS NOT NULL AND NOT (VALUES({c}) <=> {c}), {c}, {c}_prev)"
        ));
        set.push(format!("{c} = COALESCE(VALUES({c}), {c})"));
    }
    set.push("ifAlias = COALESCE(VALUES(ifAlias), ifAlias)".into());
    for c in COUNTERS {
        set.push(format!(
            "{c}_prev = {c}, {c}_delta = IF(VALUES({c}) >= {c}_prev, VALUES({c}) - {c}_prev, NULL), \
             {c}_rate = IF({c}_delta IS NOT NULL AND VALUES(poll_time) > poll_time, \
             ROUND({c}_delta / (VALUES(poll_time) - poll_time)), NULL), {c} = VALUES({c})"
        ));
    }
    set.push(
        "poll_prev = poll_time, \
         poll_period = IF(VALUES(poll_time) > poll_prev, VALUES(poll_time) - poll_prev, NULL), \
         poll_time = VALUES(poll_time)"
            .into(),
    );
    sql.push_str(&set.join(", "));
    sql
}

/// One port of one device after one poll, for [`write_rows`].
pub struct PortWrite<'a> {
    pub device_id: u32,
    pub polled_at: u64,
    pub port: &'a PortSample,
}

/// Updates the `ports` rows of polled ports, [`PORTS_PER_STATEMENT`] per
/// statement; returns rows written.
pub async fn write_rows(
    tx: &mut Transaction<'_, MySql>,
    ports: &[PortWrite<'_>],
) -> Result<u64, sqlx::Error> {
    let mut rows = 0;
    for chunk in ports.chunks(PORTS_PER_STATEMENT) {
        let sql = upsert_sql(chunk.len());
        let mut query = sqlx::query(&sql);
        for w in chunk {
            let state = &w.port.state;
            query = query
                .bind(w.port.port_id)
                .bind(w.device_id)
                .bind(state.oper_status)
                .bind(state.admin_status)
                .bind(state.speed)
                .bind(state.alias.as_deref());
            for value in counters(state) {
                query = query.bind(value);
            }
            query = query.bind(w.polled_at);
        }
        // MySQL counts an updated row twice in an upsert: report ports.
        rows += query.execute(&mut **tx).await?.rows_affected().div_ceil(2);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(port_id: u64, ifindex: u32, ifname: &str, alias: &str, deleted: bool) -> PortRow {
        PortRow {
            port_id,
            ifindex: Some(ifindex),
            ifname: ifname.into(),
            ifdescr: format!("d-{ifname}"),
            ifalias: alias.into(),
            deleted,
        }
    }

    fn found(ifindex: u32, ifname: &str) -> DiscoveredPort {
        DiscoveredPort {
            ifindex,
            ifname: ifname.into(),
            ifdescr: format!("d-{ifname}"),
        }
    }

    #[test]
    fn by_ifindex_matches_reuses_deleted_rows_and_marks_vanished_ones() {
        let rows = [
            row(10, 1, "eth0", "", false),
            row(11, 2, "eth1", "", true),
            row(12, 3, "eth2", "", false),
        ];
        let p = plan(
            PortAssociation::IfIndex,
            &rows,
            &[found(1, "eth0"), found(2, "eth1"), found(4, "eth4")],
            &BTreeMap::new(),
        );
        assert_eq!(p.matched, BTreeMap::from([(1, 10), (2, 11)]));
        assert_eq!(p.new, [4]);
        assert_eq!(p.vanished, [12]);
    }

    #[test]
    fn by_ifname_follows_a_renumbered_interface() {
        let rows = [row(10, 1, "eth0", "", false), row(11, 2, "eth1", "", false)];
        let p = plan(
            PortAssociation::IfName,
            &rows,
            &[found(7, "eth1"), found(8, "eth0")],
            &BTreeMap::new(),
        );
        assert_eq!(p.matched, BTreeMap::from([(7, 11), (8, 10)]));
        assert!(p.new.is_empty() && p.vanished.is_empty());
        assert_eq!(p.parked, [10, 11]);
    }

    #[test]
    fn swapped_ifindexes_and_taken_over_ones_are_parked_first() {
        let rows = [
            row(10, 1, "eth0", "", false),
            row(11, 2, "eth1", "", false),
            row(12, 3, "old", "", false),
            row(13, 4, "same", "", false),
        ];
        let p = plan(
            PortAssociation::IfName,
            &rows,
            &[
                found(2, "eth0"),
                found(1, "eth1"),
                found(3, "new"),
                found(4, "same"),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(p.matched, BTreeMap::from([(1, 11), (2, 10), (4, 13)]));
        assert_eq!(p.new, [3]);
        assert_eq!(p.vanished, [12]);
        assert_eq!(p.parked, [10, 11, 12]);
    }

    #[test]
    fn by_alias_never_matches_an_empty_key_and_uses_each_row_once() {
        let rows = [row(10, 1, "a", "uplink", false), row(11, 2, "b", "", false)];
        let aliases = BTreeMap::from([(1, "uplink".to_string()), (3, "uplink".to_string())]);
        let p = plan(
            PortAssociation::IfAlias,
            &rows,
            &[found(1, "a"), found(2, "b"), found(3, "c")],
            &aliases,
        );
        assert_eq!(p.matched, BTreeMap::from([(1, 10)]));
        assert_eq!(p.new, [2, 3]);
        assert_eq!(p.vanished, [11]);
    }

    #[test]
    fn a_live_row_wins_over_a_deleted_duplicate() {
        let rows = [row(5, 1, "eth0", "", true), row(9, 2, "eth0", "", false)];
        let p = plan(
            PortAssociation::IfName,
            &rows,
            &[found(3, "eth0")],
            &BTreeMap::new(),
        );
        assert_eq!(p.matched, BTreeMap::from([(3, 9)]));
        assert!(p.vanished.is_empty());
    }
}
