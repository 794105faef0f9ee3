//! The replicated state as format versions 1 and 2 encoded it, read from an
//! older snapshot (a data directory written before the upgrade, or a peer
//! still at that version) and turned into today's [`ClusterState`].
//!
//! The only difference is [`Port`]: it held its ifName and ifDescr, which the
//! state now keeps as a [`PortKey`]. Every other type is reused as is.

use super::state::ClusterState;
use super::types::*;
use crate::snmp::credentials::SnmpCredentials;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct PortV2 {
    port_id: PortId,
    ifindex: u32,
    ifname: String,
    ifdescr: String,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct InventoryV2 {
    system: SystemInfo,
    ports: Vec<PortV2>,
    processors: Vec<Processor>,
    storages: Vec<Storage>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct DeviceV2 {
    hostname: String,
    address: String,
    port: u16,
    credentials: SnmpCredentials,
    group: GroupId,
    owner: Option<NodeId>,
    status: DeviceStatus,
    reason: Option<String>,
    last_polled: Option<u64>,
    last_claim_ms: Option<u64>,
    last_poll_ms: Option<u64>,
    last_discovered: Option<u64>,
    inventory: InventoryV2,
}

/// [`ClusterState`] in format versions 1 and 2.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct ClusterStateV2 {
    nodes: BTreeMap<NodeId, NodeInfo>,
    devices: BTreeMap<String, DeviceV2>,
    last_node_id: NodeId,
    last_port_id: PortId,
}

impl From<ClusterStateV2> for ClusterState {
    fn from(old: ClusterStateV2) -> ClusterState {
        let devices = old
            .devices
            .into_iter()
            .map(|(hostname, d)| {
                let inv = d.inventory;
                let ports = inv
                    .ports
                    .into_iter()
                    // Ids were handed out one by one: none is past 32 bits.
                    .filter_map(|p| {
                        Port::new(p.port_id, p.ifindex, PortKey::of(&p.ifname, &p.ifdescr))
                    })
                    .collect();
                let device = Device {
                    hostname: d.hostname,
                    address: d.address,
                    port: d.port,
                    credentials: d.credentials,
                    group: d.group,
                    owner: d.owner,
                    status: d.status,
                    reason: d.reason,
                    last_polled: d.last_polled,
                    last_claim_ms: d.last_claim_ms,
                    last_poll_ms: d.last_poll_ms,
                    last_discovered: d.last_discovered,
                    inventory: Arc::new(Inventory {
                        system: inv.system,
                        ports,
                        processors: inv.processors,
                        storages: inv.storages,
                    }),
                };
                (hostname, Arc::new(device))
            })
            .collect();
        ClusterState {
            nodes: old.nodes,
            devices,
            last_node_id: old.last_node_id,
            last_port_id: old.last_port_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::secret::Secret;

    #[test]
    fn ports_of_a_format_1_or_2_state_load_as_their_keys() {
        let port = |port_id, ifindex, ifname: &str, ifdescr: &str| PortV2 {
            port_id,
            ifindex,
            ifname: ifname.into(),
            ifdescr: ifdescr.into(),
        };
        let device = DeviceV2 {
            hostname: "sw1".into(),
            address: "127.0.0.1".into(),
            port: 161,
            credentials: SnmpCredentials::V2c {
                community: Secret::new("public"),
            },
            group: 1,
            owner: Some(2),
            status: DeviceStatus::Up,
            reason: None,
            last_polled: Some(1_700_000_000),
            last_claim_ms: None,
            last_poll_ms: Some(80),
            last_discovered: Some(1_700_000_001),
            inventory: InventoryV2 {
                system: SystemInfo::default(),
                ports: vec![
                    port(7, 1, "Gi0/1", "GigabitEthernet0/1"),
                    port(8, 2, "", "Null0"),
                    port(9, 3, "", ""),
                ],
                processors: vec![],
                storages: vec![],
            },
        };
        let old = ClusterStateV2 {
            nodes: BTreeMap::new(),
            devices: BTreeMap::from([("sw1".to_string(), device)]),
            last_node_id: 2,
            last_port_id: 9,
        };
        for version in [1, 2] {
            let bytes = codec::encode_version(&old, version).expect("encode");
            let state: ClusterState = codec::decode::<ClusterStateV2>(&bytes)
                .expect("decode")
                .into();
            let sw1 = &state.devices["sw1"];
            assert_eq!(
                (sw1.owner, sw1.group, sw1.last_poll_ms),
                (Some(2), 1, Some(80))
            );
            assert_eq!(
                sw1.inventory.ports,
                [
                    Port::new(7, 1, PortKey::name("Gi0/1")),
                    Port::new(8, 2, PortKey::descr("Null0")),
                    Port::new(9, 3, PortKey::of("", "")),
                ]
                .map(|p| p.expect("fits"))
            );
            assert_eq!(state.last_port_id, 9);
        }
    }
}
