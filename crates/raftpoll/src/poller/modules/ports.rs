//! Ports module: IF-MIB ifTable/ifXTable → `port-id<port_id>.rrd`, 64-bit counters preferred.

use super::defs::{PORT_DS, port_def};
use super::{ModuleError, Produced, rrd_file, walk_columns};
use crate::model::types::{DiscoveredPort, Port};
use crate::rrd::layout::{RrdUpdate, RrdValue};
use crate::snmp::{Oid, SnmpClient, SnmpTarget, SnmpValue};
use std::collections::BTreeMap;

/// ifTable column (1.3.6.1.2.1.2.2.1.<col>).
fn if_table(col: u32) -> Oid {
    Oid::from([1, 3, 6, 1, 2, 1, 2, 2, 1, col])
}

/// ifXTable column (1.3.6.1.2.1.31.1.1.1.<col>).
fn if_x_table(col: u32) -> Oid {
    Oid::from([1, 3, 6, 1, 2, 1, 31, 1, 1, 1, col])
}

const IF_DESCR: u32 = 2;
const IF_NAME: u32 = 1;
const IF_SPEED: u32 = 5;
const IF_ADMIN_STATUS: u32 = 7;
const IF_OPER_STATUS: u32 = 8;
const IF_HIGH_SPEED: u32 = 15;
const IF_ALIAS: u32 = 18;

/// ifAlias by ifIndex.
pub type Aliases = BTreeMap<u32, String>;

/// One interface's state and counters as one poll read them, for LibreNMS's
/// `ports` row. Counters are the same values the RRD update got.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortState {
    pub ifindex: u32,
    /// IF-MIB's names: 'up', 'down', 'testing', 'unknown', 'dormant',
    /// 'notPresent', 'lowerLayerDown'.
    pub oper_status: Option<&'static str>,
    pub admin_status: Option<&'static str>,
    /// Bits per second: ifHighSpeed × 10⁶ when the agent has it, else ifSpeed.
    pub speed: Option<u64>,
    pub alias: Option<String>,
    pub in_octets: Option<u64>,
    pub out_octets: Option<u64>,
    pub in_ucast: Option<u64>,
    pub out_ucast: Option<u64>,
    pub in_errors: Option<u64>,
    pub out_errors: Option<u64>,
}

/// ifOperStatus / ifAdminStatus as IF-MIB names them (LibreNMS stores the names).
fn status_name(value: &SnmpValue) -> Option<&'static str> {
    let name = match value.as_i64()? {
        1 => "up",
        2 => "down",
        3 => "testing",
        4 => "unknown",
        5 => "dormant",
        6 => "notPresent",
        7 => "lowerLayerDown",
        _ => return None,
    };
    Some(name)
}

/// Where one port DS comes from: the HC (ifXTable) column preferred, else
/// the 32-bit column. Indexes follow [`PORT_DS`].
struct Source {
    hc: Option<Oid>,
    low: Option<Oid>,
}

const IN_NUCAST: usize = 6;
const OUT_NUCAST: usize = 7;
const IN_BROADCAST: usize = 11;
const OUT_BROADCAST: usize = 12;
const IN_MULTICAST: usize = 13;
const OUT_MULTICAST: usize = 14;

fn sources() -> [Source; 15] {
    let both = |hc, low: Oid| Source {
        hc: Some(if_x_table(hc)),
        low: Some(low),
    };
    let low = |col| Source {
        hc: None,
        low: Some(if_table(col)),
    };
    [
        both(6, if_table(10)),   // INOCTETS: ifHCInOctets / ifInOctets
        both(10, if_table(16)),  // OUTOCTETS
        low(14),                 // INERRORS
        low(20),                 // OUTERRORS
        both(7, if_table(11)),   // INUCASTPKTS
        both(11, if_table(17)),  // OUTUCASTPKTS
        low(12),                 // INNUCASTPKTS: ifInNUcastPkts, or bcast + mcast
        low(18),                 // OUTNUCASTPKTS
        low(13),                 // INDISCARDS
        low(19),                 // OUTDISCARDS
        low(15),                 // INUNKNOWNPROTOS
        both(9, if_x_table(3)),  // INBROADCASTPKTS: ifHCInBroadcastPkts / ifInBroadcastPkts
        both(13, if_x_table(5)), // OUTBROADCASTPKTS
        both(8, if_x_table(2)),  // INMULTICASTPKTS
        both(12, if_x_table(4)), // OUTMULTICASTPKTS
    ]
}

/// ifIndex, ifName and ifDescr of every interface. ifName falls back to
/// ifDescr. With `aliases`, also every non-empty ifAlias by ifIndex (kept
/// out of [`DiscoveredPort`], whose replicated layout must not change).
pub(super) async fn discover<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    aliases: bool,
) -> Result<(Vec<DiscoveredPort>, Aliases, Vec<String>), ModuleError> {
    let mut notes = Vec::new();
    let mut wanted = vec![if_table(IF_DESCR), if_x_table(IF_NAME)];
    if aliases {
        wanted.push(if_x_table(IF_ALIAS));
    }
    let columns = walk_columns(client, target, &wanted, &mut notes).await?;
    let aliases: Aliases = columns
        .get(2)
        .map(|walked| {
            walked
                .iter()
                .filter_map(|(i, v)| Some((*i, v.as_string().filter(|s| !s.is_empty())?)))
                .collect()
        })
        .unwrap_or_default();
    let text = |values: &BTreeMap<u32, SnmpValue>, index: u32| {
        values
            .get(&index)
            .and_then(SnmpValue::as_string)
            .filter(|s| !s.is_empty())
    };
    let (descrs, names) = (&columns[0], &columns[1]);
    let mut indexes: Vec<u32> = descrs.keys().chain(names.keys()).copied().collect();
    indexes.sort_unstable();
    indexes.dedup();
    let ports = indexes
        .into_iter()
        .map(|ifindex| {
            let descr = text(descrs, ifindex);
            let name = text(names, ifindex);
            DiscoveredPort {
                ifindex,
                ifname: name.clone().or_else(|| descr.clone()).unwrap_or_default(),
                ifdescr: descr.or(name).unwrap_or_default(),
            }
        })
        .collect();
    Ok((ports, aliases, notes))
}

/// Counter updates for every known port; with `states`, also each port's
/// [`PortState`] (four more columns walked with the first round, ifSpeed with
/// the second where ifHighSpeed is missing).
pub(super) async fn poll<C: SnmpClient>(
    client: &C,
    target: &SnmpTarget,
    hostname: &str,
    ports: &[Port],
    now: u64,
    states: bool,
) -> Result<(Produced, Vec<PortState>), ModuleError> {
    let mut notes = Vec::new();
    if ports.is_empty() {
        return Ok(((Vec::new(), notes), Vec::new()));
    }
    let sources = sources();
    // values[ds][ifindex]
    let mut values: Vec<BTreeMap<u32, u64>> = vec![BTreeMap::new(); PORT_DS.len()];

    // First round: every HC column, and the columns that only ifTable has
    // (the NUcast ones are left for the second round, they are often derived).
    let first: Vec<(usize, Oid)> = sources
        .iter()
        .enumerate()
        .filter_map(|(ds, s)| match (&s.hc, &s.low) {
            (Some(hc), _) => Some((ds, hc.clone())),
            (None, Some(low)) if ds != IN_NUCAST && ds != OUT_NUCAST => Some((ds, low.clone())),
            _ => None,
        })
        .collect();
    let mut columns: Vec<Oid> = first.iter().map(|(_, oid)| oid.clone()).collect();
    // ifSpeed (32 bits, tops out at 4.3 Gbit/s) only in the second round,
    // for ports without ifHighSpeed.
    let extra = [
        if_table(IF_OPER_STATUS),
        if_table(IF_ADMIN_STATUS),
        if_x_table(IF_HIGH_SPEED),
        if_x_table(IF_ALIAS),
    ];
    if states {
        columns.extend(extra.iter().cloned());
    }
    let mut walked = walk_columns(client, target, &columns, &mut notes).await?;
    let extra_walked = walked.split_off(first.len());
    for ((ds, _), walked) in first.iter().zip(walked) {
        values[*ds] = numbers(walked);
    }

    // Second round: 32-bit columns for ports without the HC counter, and
    // the NUcast columns for ports where broadcast + multicast is not known.
    let lacks = |ds: usize, values: &[BTreeMap<u32, u64>]| {
        ports.iter().any(|p| !values[ds].contains_key(&p.ifindex))
    };
    let mut second: Vec<(usize, Oid)> = Vec::new();
    for (ds, source) in sources.iter().enumerate() {
        if let (Some(_), Some(low)) = (&source.hc, &source.low)
            && lacks(ds, &values)
        {
            second.push((ds, low.clone()));
        }
    }
    for (nucast, bcast, mcast) in [
        (IN_NUCAST, IN_BROADCAST, IN_MULTICAST),
        (OUT_NUCAST, OUT_BROADCAST, OUT_MULTICAST),
    ] {
        if (lacks(bcast, &values) || lacks(mcast, &values))
            && let Some(low) = &sources[nucast].low
        {
            second.push((nucast, low.clone()));
        }
    }
    let mut extra_walked = extra_walked.into_iter();
    let (oper, admin, high_speed, alias) = (
        extra_walked.next().unwrap_or_default(),
        extra_walked.next().unwrap_or_default(),
        extra_walked.next().unwrap_or_default(),
        extra_walked.next().unwrap_or_default(),
    );
    let high_speed: BTreeMap<u32, u64> = numbers(high_speed)
        .into_iter()
        .filter(|(_, mbps)| *mbps > 0)
        .map(|(i, mbps)| (i, mbps.saturating_mul(1_000_000)))
        .collect();
    let mut columns: Vec<Oid> = second.iter().map(|(_, oid)| oid.clone()).collect();
    let want_speed = states && ports.iter().any(|p| !high_speed.contains_key(&p.ifindex));
    if want_speed {
        columns.push(if_table(IF_SPEED));
    }
    let hc_octets = values[0].len();
    let mut walked = walk_columns(client, target, &columns, &mut notes).await?;
    let speed = if want_speed {
        numbers(walked.pop().unwrap_or_default())
    } else {
        BTreeMap::new()
    };
    for ((ds, _), walked) in second.iter().zip(walked) {
        // HC values win; 32-bit ones only fill the gaps.
        for (ifindex, v) in numbers(walked) {
            values[*ds].entry(ifindex).or_insert(v);
        }
    }
    if values[0].len() > hc_octets {
        notes.push(
            "ports: no 64-bit ifHC octet counters for some ports, using 32-bit ifTable counters"
                .to_string(),
        );
    }

    let port_states = if states {
        ports
            .iter()
            .map(|port| {
                let i = port.ifindex;
                let count = |ds: usize| values[ds].get(&i).copied();
                PortState {
                    ifindex: i,
                    oper_status: oper.get(&i).and_then(status_name),
                    admin_status: admin.get(&i).and_then(status_name),
                    speed: high_speed.get(&i).or_else(|| speed.get(&i)).copied(),
                    alias: alias.get(&i).and_then(SnmpValue::as_string),
                    in_octets: count(0),
                    out_octets: count(1),
                    in_errors: count(2),
                    out_errors: count(3),
                    in_ucast: count(4),
                    out_ucast: count(5),
                }
            })
            .collect()
    } else {
        Vec::new()
    };

    let mut updates = Vec::with_capacity(ports.len());
    for port in ports {
        let get = |ds: usize| values[ds].get(&port.ifindex).copied();
        let row: Vec<Option<u64>> = (0..PORT_DS.len())
            .map(|ds| match ds {
                IN_NUCAST | OUT_NUCAST => {
                    let (bcast, mcast) = if ds == IN_NUCAST {
                        (IN_BROADCAST, IN_MULTICAST)
                    } else {
                        (OUT_BROADCAST, OUT_MULTICAST)
                    };
                    match (get(bcast), get(mcast)) {
                        (Some(b), Some(m)) => Some(b.wrapping_add(m)),
                        _ => get(ds),
                    }
                }
                _ => get(ds),
            })
            .collect();
        if row.iter().all(Option::is_none) {
            notes.push(format!(
                "port-id{} (ifIndex {}): no counters on the agent, skipped",
                port.port_id(),
                port.ifindex
            ));
            continue;
        }
        updates.push(RrdUpdate {
            path: rrd_file(hostname, &format!("port-id{}", port.port_id())),
            def: port_def(),
            timestamp: now,
            millis: 0,
            values: row
                .into_iter()
                .map(|v| v.map_or(RrdValue::Unknown, RrdValue::Counter))
                .collect(),
        });
    }
    Ok(((updates, notes), port_states))
}

/// Numeric values of a walked column; anything else is treated as absent.
fn numbers(walked: BTreeMap<u32, SnmpValue>) -> BTreeMap<u32, u64> {
    walked
        .into_iter()
        .filter_map(|(index, value)| Some((index, value.as_u64()?)))
        .collect()
}
