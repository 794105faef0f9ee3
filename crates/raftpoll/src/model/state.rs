//! The replicated state machine: applying a [`Command`] is pure and deterministic.

use super::types::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything the cluster agrees on. Identical on every node after applying
/// the same log prefix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Each device behind its own `Arc`, so that copying the state (for a
    /// snapshot, taken under the lock and encoded outside it) copies a
    /// pointer per device, not the device: at 100,000 devices the copy was
    /// 50–65 MiB on top of every node's memory while a snapshot was built.
    /// Applies change a device in place unless a copy still shares it
    /// ([`Arc::make_mut`]). Encoded as the devices themselves.
    pub devices: BTreeMap<String, Arc<Device>>,
    /// Last node id handed out; ids are never reused.
    pub last_node_id: NodeId,
    /// Last port id handed out; ids are never reused.
    pub last_port_id: PortId,
}

/// The device to change, unshared from any copy of the state first.
fn device_mut<'a>(
    devices: &'a mut BTreeMap<String, Arc<Device>>,
    hostname: &str,
) -> Option<&'a mut Device> {
    devices.get_mut(hostname).map(Arc::make_mut)
}

/// Moves a device to `group`; a change unassigns it, since its owner may not
/// serve the new group: assignment decides again.
fn set_group(device: &mut Device, group: GroupId) {
    if device.group != group {
        device.group = group;
        device.owner = None;
    }
}

impl ClusterState {
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::AllocateNodeId => {
                self.last_node_id += 1;
                CommandResult::NodeIdAllocated(self.last_node_id)
            }
            Command::UpsertNode(info) => {
                self.last_node_id = self.last_node_id.max(info.id);
                self.nodes.insert(info.id, info.clone());
                CommandResult::Ok
            }
            Command::Drain { id, moves } => {
                self.apply(&Command::Assign {
                    moves: moves.clone(),
                });
                self.apply(&Command::RemoveNode { id: *id })
            }
            Command::RemoveNode { id } => {
                if self.nodes.remove(id).is_none() {
                    return CommandResult::Rejected(Rejection::UnknownNode(*id));
                }
                for device in self.devices.values_mut() {
                    if device.owner == Some(*id) {
                        Arc::make_mut(device).owner = None;
                    }
                }
                CommandResult::Ok
            }
            Command::AddDevice(new) => self.add_device(new),
            Command::AddDevices(news) => {
                let mut added = 0u32;
                let mut existing = Vec::new();
                for new in news {
                    match self.add_device(new) {
                        CommandResult::Ok => added += 1,
                        _ => existing.push(new.hostname.clone()),
                    }
                }
                CommandResult::DevicesAdded { added, existing }
            }
            Command::AddDevicesPacked { devices, .. } => match cmd.unpack() {
                Some(news) => self.apply(&Command::AddDevices(news)),
                None => CommandResult::Rejected(Rejection::InvalidEntry(format!(
                    "AddDevicesPacked of {} devices names a credential index out of range",
                    devices.len()
                ))),
            },
            Command::UpdateDevices(updates) => {
                for new in updates {
                    let Some(device) = device_mut(&mut self.devices, &new.hostname) else {
                        continue;
                    };
                    device.address = new.address.clone();
                    device.port = new.port;
                    device.credentials = new.credentials.clone();
                    set_group(device, new.group);
                }
                CommandResult::Ok
            }
            Command::RemoveDevices(hostnames) => {
                for hostname in hostnames {
                    self.devices.remove(hostname);
                }
                CommandResult::Ok
            }
            Command::RemoveDevice { hostname } => match self.devices.remove(hostname) {
                Some(_) => CommandResult::Ok,
                None => CommandResult::Rejected(Rejection::UnknownDevice(hostname.clone())),
            },
            Command::SetDeviceGroup { hostname, group } => {
                match device_mut(&mut self.devices, hostname) {
                    Some(device) => {
                        set_group(device, *group);
                        CommandResult::Ok
                    }
                    None => CommandResult::Rejected(Rejection::UnknownDevice(hostname.clone())),
                }
            }
            Command::Assign { moves } => {
                for (hostname, owner) in moves {
                    // A device removed after the leader computed the move is simply skipped.
                    if let Some(device) = device_mut(&mut self.devices, hostname) {
                        device.owner = *owner;
                    }
                }
                CommandResult::Ok
            }
            Command::ClaimPolls {
                node,
                at_ms,
                up_gap_ms,
                down_gap_ms,
                hostnames,
            } => self.claim_polls(*node, *at_ms, (*up_gap_ms, *down_gap_ms), hostnames, &[]),
            Command::ClaimPollsAgain {
                node,
                at_ms,
                up_gap_ms,
                down_gap_ms,
                hostnames,
                abandoned,
            } => self.claim_polls(
                *node,
                *at_ms,
                (*up_gap_ms, *down_gap_ms),
                hostnames,
                abandoned,
            ),
            Command::PollReports { reports, .. } => {
                for report in reports {
                    let Some(device) = device_mut(&mut self.devices, &report.hostname) else {
                        continue;
                    };
                    // Reports may arrive late (batched, or from a previous owner):
                    // never move a device's schedule backwards.
                    if device.last_polled.is_some_and(|t| t > report.polled_at) {
                        continue;
                    }
                    device.last_polled = Some(report.polled_at);
                    device.last_poll_ms = Some(report.duration_ms);
                    device.status = report.status;
                    device.reason = report.reason.clone();
                }
                CommandResult::Ok
            }
            Command::Discovered {
                hostname,
                at,
                discovery,
            } => self.discovered(hostname, *at, &discovery.keyed()),
            Command::DiscoveredPorts {
                hostname,
                at,
                discovery,
                port_ids,
            } => self.discovered_with_ids(hostname, *at, &discovery.keyed(), port_ids),
            Command::DiscoveredKeys {
                hostname,
                at,
                discovery,
                port_ids: None,
            } => self.discovered(hostname, *at, discovery),
            Command::DiscoveredKeys {
                hostname,
                at,
                discovery,
                port_ids: Some(port_ids),
            } => self.discovered_with_ids(hostname, *at, discovery, port_ids),
            Command::Batch(cmds) => {
                CommandResult::Batch(cmds.iter().map(|c| self.apply(c)).collect())
            }
        }
    }

    /// Grants `node` the devices it owns whose last claim is older than
    /// the gap (`gaps`: up, down), or is the claim `abandoned` names for
    /// the device (its index in `hostnames`), which `node` made and never
    /// polled under.
    fn claim_polls(
        &mut self,
        node: NodeId,
        at_ms: u64,
        (up_gap_ms, down_gap_ms): (u64, u64),
        hostnames: &[String],
        abandoned: &[(u32, u64)],
    ) -> CommandResult {
        let mut granted = Vec::with_capacity(hostnames.len());
        for (index, hostname) in hostnames.iter().enumerate() {
            let Some(device) = device_mut(&mut self.devices, hostname) else {
                continue;
            };
            if device.owner != Some(node) {
                continue;
            }
            let gap = if device.status == DeviceStatus::Down {
                down_gap_ms
            } else {
                up_gap_ms
            };
            let recent = device
                .last_claim_ms
                .is_some_and(|t| at_ms.saturating_sub(t) < gap);
            // The state does not record who made the last claim: the owner
            // and the time stand for it. Another node's claim at that same
            // millisecond would need the device to move away and back within
            // the gap.
            let replaces_abandoned = abandoned
                .iter()
                .any(|&(i, t)| i as usize == index && t < at_ms && device.last_claim_ms == Some(t));
            if !recent || replaces_abandoned {
                device.last_claim_ms = Some(at_ms);
                device.last_polled = Some(at_ms / 1000);
                granted.push(hostname.clone());
            }
        }
        CommandResult::Claimed(granted)
    }

    fn add_device(&mut self, new: &NewDevice) -> CommandResult {
        if self.devices.contains_key(&new.hostname) {
            return CommandResult::Rejected(Rejection::DuplicateDevice(new.hostname.clone()));
        }
        self.devices.insert(
            new.hostname.clone(),
            Arc::new(Device {
                hostname: new.hostname.clone(),
                address: new.address.clone(),
                port: new.port,
                credentials: new.credentials.clone(),
                group: new.group,
                owner: None,
                status: DeviceStatus::Pending,
                reason: None,
                last_polled: None,
                last_claim_ms: None,
                last_poll_ms: None,
                last_discovered: None,
                inventory: Arc::default(),
            }),
        );
        CommandResult::Ok
    }

    /// Merges a discovery into the device's inventory. Ports keep their id when
    /// their ifIndex changes: they are matched by ifName, then by ifDescr, then
    /// by ifIndex; unmatched interfaces get fresh ids.
    fn discovered(&mut self, hostname: &str, at: u64, discovery: &KeyedDiscovery) -> CommandResult {
        let Some(device) = device_mut(&mut self.devices, hostname) else {
            return CommandResult::Rejected(Rejection::UnknownDevice(hostname.to_string()));
        };
        // The inventory is replaced below: take its ports, or copy them if a
        // copy of the state still shares it.
        let old_ports = match Arc::get_mut(&mut device.inventory) {
            Some(inventory) => std::mem::take(&mut inventory.ports),
            None => device.inventory.ports.clone(),
        };
        let mut old: Vec<Option<Port>> = old_ports.into_iter().map(Some).collect();
        let mut take = |pred: &dyn Fn(&Port) -> bool| -> Option<Port> {
            old.iter_mut()
                .find(|slot| slot.as_ref().is_some_and(pred))
                .and_then(Option::take)
        };
        // Three passes so a strong match (name) is never stolen by a weak one (index).
        let mut matched: Vec<Option<Port>> = discovery
            .ports
            .iter()
            .map(|found| {
                let key = found.name_key()?;
                take(&|p: &Port| p.key == key)
            })
            .collect();
        for (found, slot) in discovery.ports.iter().zip(matched.iter_mut()) {
            if let (None, Some(key)) = (&slot, found.descr_key()) {
                *slot = take(&|p: &Port| p.key == key);
            }
        }
        for (found, slot) in discovery.ports.iter().zip(matched.iter_mut()) {
            if slot.is_none() && found.name_key().is_none() {
                *slot = take(&|p: &Port| p.ifindex == found.ifindex && !p.key.has_name());
            }
        }
        let mut ports = Vec::with_capacity(matched.len());
        let mut ids = BTreeMap::new();
        for (found, slot) in discovery.ports.iter().zip(matched) {
            let (port_id, fresh) = match slot {
                Some(p) => (p.port_id(), false),
                None => (self.last_port_id + 1, true),
            };
            // Past the ids a port can hold, a new port gets none and is left
            // out, like a port LibreNMS gave no id.
            let Some(port) = Port::new(port_id, found.ifindex, found.key()) else {
                continue;
            };
            if fresh {
                self.last_port_id = port_id;
            }
            ids.insert(found.ifindex, port_id);
            ports.push(port);
        }
        ports.sort_by_key(Port::port_id);
        device.inventory = Arc::new(Inventory {
            system: discovery.system.clone(),
            ports,
            processors: discovery.processors.clone(),
            storages: discovery.storages.clone(),
        });
        device.last_discovered = Some(at);
        CommandResult::PortIds(ids)
    }

    /// Like [`Self::discovered`], with the port ids given (LibreNMS's). The
    /// counter moves past them, so a later discovery without LibreNMS never
    /// hands out an id already in use.
    fn discovered_with_ids(
        &mut self,
        hostname: &str,
        at: u64,
        discovery: &KeyedDiscovery,
        port_ids: &BTreeMap<u32, PortId>,
    ) -> CommandResult {
        let Some(device) = device_mut(&mut self.devices, hostname) else {
            return CommandResult::Rejected(Rejection::UnknownDevice(hostname.to_string()));
        };
        let mut ports: Vec<Port> = discovery
            .ports
            .iter()
            .filter_map(|found| {
                let &port_id = port_ids.get(&found.ifindex)?;
                Port::new(port_id, found.ifindex, found.key())
            })
            .collect();
        ports.sort_by_key(Port::port_id);
        let ids: BTreeMap<u32, PortId> = ports.iter().map(|p| (p.ifindex, p.port_id())).collect();
        device.inventory = Arc::new(Inventory {
            system: discovery.system.clone(),
            ports,
            processors: discovery.processors.clone(),
            storages: discovery.storages.clone(),
        });
        device.last_discovered = Some(at);
        if let Some(max) = ids.values().max() {
            self.last_port_id = self.last_port_id.max(*max);
        }
        CommandResult::PortIds(ids)
    }

    /// Devices owned by `node`, in hostname order.
    pub fn devices_of(&self, node: NodeId) -> impl Iterator<Item = &Device> {
        self.devices
            .values()
            .map(|d| &**d)
            .filter(move |d| d.owner == Some(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::snmp::credentials::SnmpCredentials;

    fn new_device(hostname: &str) -> NewDevice {
        NewDevice {
            hostname: hostname.into(),
            address: "127.0.0.1".into(),
            port: 161,
            credentials: SnmpCredentials::V2c {
                community: Secret::new("public"),
            },
            group: 0,
        }
    }

    fn port(ifindex: u32, ifname: &str, ifdescr: &str) -> DiscoveredPort {
        DiscoveredPort {
            ifindex,
            ifname: ifname.into(),
            ifdescr: ifdescr.into(),
        }
    }

    fn discover(
        state: &mut ClusterState,
        host: &str,
        ports: Vec<DiscoveredPort>,
    ) -> BTreeMap<u32, PortId> {
        let cmd = Command::Discovered {
            hostname: host.into(),
            at: 100,
            discovery: Discovery {
                ports,
                ..Default::default()
            },
        };
        match state.apply(&cmd) {
            CommandResult::PortIds(ids) => ids,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn discovered_ports_take_the_given_ids_and_move_the_counter() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        let cmd = Command::DiscoveredPorts {
            hostname: "sw1".into(),
            at: 100,
            discovery: Discovery {
                ports: vec![
                    port(1, "eth0", "e0"),
                    port(2, "eth1", "e1"),
                    port(3, "", "x"),
                ],
                ..Default::default()
            },
            port_ids: BTreeMap::from([(1, 40), (2, 7)]),
        };
        assert!(!cmd.changes_owners());
        let ids = match s.apply(&cmd) {
            CommandResult::PortIds(ids) => ids,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(ids, BTreeMap::from([(1, 40), (2, 7)]));
        let device = &s.devices["sw1"];
        assert_eq!(device.last_discovered, Some(100));
        let got: Vec<(u64, u32)> = device
            .inventory
            .ports
            .iter()
            .map(|p| (p.port_id(), p.ifindex))
            .collect();
        assert_eq!(got, [(7, 2), (40, 1)]);
        assert_eq!(s.last_port_id, 40);
        // Back to the state machine's ids: a new port never reuses 40.
        let ids = discover(&mut s, "sw1", vec![port(9, "new", "new")]);
        assert_eq!(ids[&9], 41);
        let unknown = Command::DiscoveredPorts {
            hostname: "nope".into(),
            at: 1,
            discovery: Discovery::default(),
            port_ids: BTreeMap::new(),
        };
        assert!(matches!(s.apply(&unknown), CommandResult::Rejected(_)));
    }

    /// The keyed form the leader writes from level 4 on changes the state
    /// exactly as the discovery with names: same ids, same keys, same
    /// counter, through renames, renumbering, ports gaining an ifName and
    /// ports without names, with and without LibreNMS's ids.
    #[test]
    fn a_keyed_discovery_applies_as_the_one_with_names() {
        let runs: Vec<Vec<DiscoveredPort>> = vec![
            vec![port(1, "eth0", "e0"), port(2, "", "e1"), port(3, "", "")],
            // Renumbered, e1 gains an ifName (matched by its ifDescr), the
            // nameless port moves index, a new port.
            vec![
                port(10, "eth0", "e0"),
                port(11, "eth1", "e1"),
                port(3, "", ""),
                port(4, "", ""),
                port(12, "eth2", "e2"),
            ],
            // A name and a description swapped between two ports.
            vec![port(10, "e0", "eth0"), port(11, "eth1", "e1")],
            // With LibreNMS's ids.
            vec![port(10, "eth0", "e0"), port(13, "eth3", "")],
            vec![],
        ];
        let mut with_names = ClusterState::default();
        with_names.apply(&Command::AddDevice(new_device("sw1")));
        let mut keyed = with_names.clone();
        let mut results = Vec::new();
        for (i, ports) in runs.into_iter().enumerate() {
            let hostname = "sw1".to_string();
            let at = 100 + i as u64;
            let discovery = Discovery {
                ports,
                ..Default::default()
            };
            let cmd = if i == 3 {
                Command::DiscoveredPorts {
                    port_ids: discovery.ports.iter().map(|p| (p.ifindex, 900)).collect(),
                    hostname,
                    at,
                    discovery,
                }
            } else {
                Command::Discovered {
                    hostname,
                    at,
                    discovery,
                }
            };
            let compact = cmd.clone().for_level(4).expect("level 4");
            assert_eq!(compact.kind(), "DiscoveredKeys");
            assert_eq!(cmd.clone().for_level(3).expect("level 3"), cmd);
            let result = with_names.apply(&cmd);
            assert_eq!(keyed.apply(&compact), result, "run {i}");
            assert_eq!(with_names, keyed, "run {i}");
            results.push(result);
        }
        let ids = |run: usize| match &results[run] {
            CommandResult::PortIds(ids) => ids.clone(),
            other => panic!("run {run}: {other:?}"),
        };
        // e1 kept its id when it gained an ifName; the nameless port when it
        // kept its index.
        assert_eq!(ids(1)[&11], ids(0)[&2]);
        assert_eq!(ids(1)[&3], ids(0)[&3]);
        assert_eq!(ids(3)[&13], 900);
    }

    /// A copy of the state (a snapshot's) shares the devices, and applies
    /// after it change the state, never the copy.
    #[test]
    fn a_copy_shares_devices_and_keeps_them_as_they_were() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        s.apply(&Command::AddDevice(new_device("sw2")));
        discover(&mut s, "sw1", vec![port(1, "eth0", "e0")]);
        let copy = s.clone();
        assert!(Arc::ptr_eq(&copy.devices["sw1"], &s.devices["sw1"]));
        s.apply(&Command::PollReports {
            node: 1,
            reports: vec![PollReport {
                hostname: "sw1".into(),
                polled_at: 500,
                duration_ms: 20,
                status: DeviceStatus::Up,
                reason: None,
            }],
        });
        discover(
            &mut s,
            "sw1",
            vec![port(1, "eth0", "e0"), port(2, "eth1", "e1")],
        );
        assert_eq!(s.devices["sw1"].last_polled, Some(500));
        assert_eq!(s.devices["sw1"].inventory.ports.len(), 2);
        assert_eq!(copy.devices["sw1"].last_polled, None);
        assert_eq!(copy.devices["sw1"].inventory.ports.len(), 1);
        assert_eq!(
            copy.devices["sw1"].inventory.ports[0].port_id(),
            s.devices["sw1"].inventory.ports[0].port_id(),
            "the port kept its id"
        );
        assert!(Arc::ptr_eq(&copy.devices["sw2"], &s.devices["sw2"]));
    }

    #[test]
    fn duplicate_and_unknown_devices_are_rejected() {
        let mut s = ClusterState::default();
        assert_eq!(
            s.apply(&Command::AddDevice(new_device("sw1"))),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::AddDevice(new_device("sw1"))),
            CommandResult::Rejected(Rejection::DuplicateDevice("sw1".into()))
        );
        assert_eq!(
            s.apply(&Command::RemoveDevice {
                hostname: "sw2".into()
            }),
            CommandResult::Rejected(Rejection::UnknownDevice("sw2".into()))
        );
    }

    #[test]
    fn bulk_add_skips_existing_in_order_and_changes_nothing_else() {
        let mut s = ClusterState::default();
        s.apply(&Command::UpsertNode(NodeInfo {
            id: 1,
            name: "n1".into(),
            addr: "a".into(),
            groups: vec![0],
        }));
        s.apply(&Command::AddDevice(new_device("b")));
        s.apply(&Command::AddDevice(new_device("d")));
        s.apply(&Command::Assign {
            moves: vec![("b".into(), Some(1))],
        });
        let before = s.clone();

        let mut changed_b = new_device("b");
        changed_b.address = "10.0.0.9".into();
        let batch = vec![
            new_device("c"),
            changed_b,
            new_device("a"),
            new_device("d"),
            new_device("e"),
        ];
        assert_eq!(
            s.apply(&Command::AddDevices(batch.clone())),
            CommandResult::DevicesAdded {
                added: 3,
                existing: vec!["b".into(), "d".into()],
            }
        );
        // Existing devices are untouched (not overwritten, owner kept).
        assert_eq!(s.devices["b"], before.devices["b"]);
        assert_eq!(s.devices["d"], before.devices["d"]);
        // New ones are exactly what a single add makes.
        let mut single = before.clone();
        for host in ["c", "a", "e"] {
            single.apply(&Command::AddDevice(new_device(host)));
        }
        assert_eq!(s, single);

        // Re-running the same batch adds nothing and lists all, in order.
        assert_eq!(
            s.apply(&Command::AddDevices(batch)),
            CommandResult::DevicesAdded {
                added: 0,
                existing: vec!["c".into(), "b".into(), "a".into(), "d".into(), "e".into()],
            }
        );
        assert_eq!(s, single);
        assert_eq!(
            s.apply(&Command::AddDevices(Vec::new())),
            CommandResult::DevicesAdded {
                added: 0,
                existing: vec![],
            }
        );
    }

    #[test]
    fn port_ids_survive_ifindex_renumbering() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        let first = discover(
            &mut s,
            "sw1",
            vec![
                port(1, "Gi1", "GigabitEthernet1"),
                port(2, "Gi2", "GigabitEthernet2"),
            ],
        );
        assert_eq!(first.values().copied().collect::<Vec<_>>(), vec![1, 2]);
        // Renumbered after a reboot, plus a new interface.
        let second = discover(
            &mut s,
            "sw1",
            vec![
                port(10, "Gi2", "GigabitEthernet2"),
                port(11, "Gi1", "GigabitEthernet1"),
                port(12, "Gi3", "x"),
            ],
        );
        assert_eq!(second[&11], first[&1]);
        assert_eq!(second[&10], first[&2]);
        assert_eq!(second[&12], 3);
        // A port that vanished and came back gets a new id, never a reused one.
        discover(&mut s, "sw1", vec![port(10, "Gi2", "")]);
        let back = discover(
            &mut s,
            "sw1",
            vec![port(10, "Gi2", ""), port(11, "Gi1", "")],
        );
        assert_eq!(back[&11], 4);
    }

    #[test]
    fn no_port_gets_an_id_past_32_bits() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        s.last_port_id = PortId::from(u32::MAX) - 1;
        let ids = discover(&mut s, "sw1", vec![port(1, "a", ""), port(2, "b", "")]);
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), [(1, 4_294_967_295)]);
        // The port that got an id keeps it; the new one is left out again.
        let again = discover(&mut s, "sw1", vec![port(1, "a", ""), port(3, "c", "")]);
        assert_eq!(again.into_iter().collect::<Vec<_>>(), [(1, 4_294_967_295)]);
        assert_eq!(s.last_port_id, PortId::from(u32::MAX));
        assert_eq!(s.devices["sw1"].inventory.ports.len(), 1);
    }

    #[test]
    fn ports_without_names_match_by_descr() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        let first = discover(
            &mut s,
            "sw1",
            vec![port(1, "", "eth0"), port(2, "", "eth1")],
        );
        let second = discover(
            &mut s,
            "sw1",
            vec![port(5, "", "eth1"), port(6, "", "eth0")],
        );
        assert_eq!(second[&6], first[&1]);
        assert_eq!(second[&5], first[&2]);
    }

    #[test]
    fn late_poll_reports_do_not_rewind_schedule() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        let report = |at, status| PollReport {
            hostname: "sw1".into(),
            polled_at: at,
            duration_ms: 5,
            status,
            reason: None,
        };
        s.apply(&Command::PollReports {
            node: 1,
            reports: vec![report(200, DeviceStatus::Up)],
        });
        s.apply(&Command::PollReports {
            node: 2,
            reports: vec![report(100, DeviceStatus::Down)],
        });
        let d = &s.devices["sw1"];
        assert_eq!((d.last_polled, d.status), (Some(200), DeviceStatus::Up));
    }

    #[test]
    fn claims_only_for_owner_and_once_per_interval() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        s.apply(&Command::AddDevice(new_device("sw2")));
        s.apply(&Command::Assign {
            moves: vec![("sw1".into(), Some(1)), ("sw2".into(), Some(2))],
        });
        let claim = |node, at: u64| Command::ClaimPolls {
            node,
            at_ms: at * 1000,
            up_gap_ms: 150_000,
            down_gap_ms: 30_000,
            hostnames: vec!["sw1".into(), "sw2".into(), "gone".into()],
        };
        assert_eq!(
            s.apply(&claim(1, 1000)),
            CommandResult::Claimed(vec!["sw1".into()])
        );
        // Same interval: nothing granted, even after sw1 moved to node 2.
        s.apply(&Command::Assign {
            moves: vec![("sw1".into(), Some(2))],
        });
        assert_eq!(
            s.apply(&claim(2, 1100)),
            CommandResult::Claimed(vec!["sw2".into()])
        );
        assert_eq!(s.apply(&claim(1, 1200)), CommandResult::Claimed(vec![]));
        assert_eq!(
            s.apply(&claim(2, 1200)),
            CommandResult::Claimed(vec!["sw1".into()])
        );
    }

    #[test]
    fn a_claim_replaces_an_abandoned_one_only_while_it_is_the_last() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        s.apply(&Command::AddDevice(new_device("sw2")));
        s.apply(&Command::Assign {
            moves: vec![("sw1".into(), Some(1)), ("sw2".into(), Some(1))],
        });
        let again = |node, at: u64, abandoned: Vec<(u32, u64)>| Command::ClaimPollsAgain {
            node,
            at_ms: at,
            up_gap_ms: 150_000,
            down_gap_ms: 30_000,
            hostnames: vec!["sw1".into(), "sw2".into()],
            abandoned,
        };
        let claimed =
            |hosts: &[&str]| CommandResult::Claimed(hosts.iter().map(|h| h.to_string()).collect());
        assert_eq!(
            s.apply(&again(1, 1_000_000, vec![])),
            claimed(&["sw1", "sw2"])
        );
        // Within the gap: only the device whose named claim is its last one,
        // named at its own index and before the new claim's time.
        assert_eq!(s.apply(&again(1, 1_002_000, vec![])), claimed(&[]));
        assert_eq!(
            s.apply(&again(1, 1_002_000, vec![(1, 999_999), (5, 1_000_000)])),
            claimed(&[])
        );
        assert_eq!(
            s.apply(&again(1, 1_000_000, vec![(0, 1_000_000)])),
            claimed(&[])
        );
        assert_eq!(
            s.apply(&again(1, 1_002_000, vec![(0, 1_000_000)])),
            claimed(&["sw1"])
        );
        let d = &s.devices["sw1"];
        assert_eq!(
            (d.last_claim_ms, d.last_polled),
            (Some(1_002_000), Some(1002))
        );
        // The replaced claim is no longer the last: naming it again is refused.
        assert_eq!(
            s.apply(&again(1, 1_003_000, vec![(0, 1_000_000)])),
            claimed(&[])
        );
        // Never for a node that does not own the device.
        assert_eq!(
            s.apply(&again(2, 1_004_000, vec![(0, 1_002_000), (1, 1_000_000)])),
            claimed(&[])
        );
        // The same entry as a plain claim (what a level-4 cluster writes) is
        // refused within the gap.
        let plain = again(1, 1_005_000, vec![(1, 1_000_000)])
            .for_level(4)
            .expect("level 4");
        assert!(matches!(plain, Command::ClaimPolls { .. }), "{plain}");
        assert_eq!(s.apply(&plain), claimed(&[]));
    }

    #[test]
    fn a_batch_applies_its_commands_in_order_each_as_alone() {
        let mut s = ClusterState::default();
        s.apply(&Command::AddDevice(new_device("sw1")));
        let claim = Command::ClaimPolls {
            node: 1,
            at_ms: 100_000,
            up_gap_ms: 150_000,
            down_gap_ms: 30_000,
            hostnames: vec!["sw1".into()],
        };
        let batch = Command::Batch(vec![
            Command::Assign {
                moves: vec![("sw1".into(), Some(1))],
            },
            claim.clone(),
            Command::RemoveDevice {
                hostname: "nope".into(),
            },
        ]);
        assert_eq!(
            s.apply(&batch),
            CommandResult::Batch(vec![
                CommandResult::Ok,
                CommandResult::Claimed(vec!["sw1".into()]),
                CommandResult::Rejected(Rejection::UnknownDevice("nope".into())),
            ])
        );
        // The same claim alone, after: refused within the gap.
        assert_eq!(s.apply(&claim), CommandResult::Claimed(vec![]));
    }

    #[test]
    fn node_ids_are_never_reused() {
        let mut s = ClusterState::default();
        assert_eq!(
            s.apply(&Command::AllocateNodeId),
            CommandResult::NodeIdAllocated(1)
        );
        s.apply(&Command::UpsertNode(NodeInfo {
            id: 5,
            name: "n5".into(),
            addr: "a".into(),
            groups: vec![0],
        }));
        s.apply(&Command::RemoveNode { id: 5 });
        assert_eq!(
            s.apply(&Command::AllocateNodeId),
            CommandResult::NodeIdAllocated(6)
        );
    }

    #[test]
    fn group_change_unassigns_and_node_removal_frees_devices() {
        let mut s = ClusterState::default();
        s.apply(&Command::UpsertNode(NodeInfo {
            id: 1,
            name: "n1".into(),
            addr: "a".into(),
            groups: vec![0],
        }));
        s.apply(&Command::AddDevice(new_device("sw1")));
        s.apply(&Command::AddDevice(new_device("sw2")));
        s.apply(&Command::Assign {
            moves: vec![("sw1".into(), Some(1)), ("sw2".into(), Some(1))],
        });
        s.apply(&Command::SetDeviceGroup {
            hostname: "sw1".into(),
            group: 3,
        });
        assert_eq!(s.devices["sw1"].owner, None);
        assert_eq!(s.devices_of(1).count(), 1);
        s.apply(&Command::RemoveNode { id: 1 });
        assert_eq!(s.devices_of(1).count(), 0);
    }
}
