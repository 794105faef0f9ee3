//! Device assignment: a pure function from (live nodes, devices, owners, costs)
//! to the ownership changes the leader should write.
//!
//! Rules: a device stays where it is while its owner is alive and serves its
//! group; orphans go to the least-loaded eligible node; rebalancing moves as
//! few devices as possible and only when the spread exceeds a threshold, so
//! small cost fluctuations never make devices flap between nodes.
//!
//! Also here, equally pure: reading [`ClusterState`] into the assignment's
//! inputs, and [`drain_moves`] for a node that leaves gracefully.

use crate::model::state::ClusterState;
use crate::model::types::{Device, GroupId, NodeId};
use std::collections::BTreeMap;

/// A node as the assignment sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub groups: Vec<GroupId>,
}

/// A device as the assignment sees it: a copy, so that the assignment runs
/// after the state's lock is released (applies wait for that lock).
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub hostname: String,
    pub group: GroupId,
    pub owner: Option<NodeId>,
    /// Relative cost of polling it (last poll duration in ms, or a default).
    pub cost: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Balance {
    /// Rebalance only when the most loaded node carries more than this
    /// fraction above the least loaded (relative to the mean load).
    pub threshold: f64,
    /// Upper bound on devices moved by one rebalance, to keep churn low.
    pub max_moves: usize,
}

impl Default for Balance {
    fn default() -> Self {
        Balance {
            threshold: 0.25,
            max_moves: 1000,
        }
    }
}

/// Computes ownership changes. `live` holds only nodes that may poll now.
/// `rebalance` is false while a joining node is still in its debounce window.
/// Returns `(hostname, new owner)` for devices whose owner changes, sorted by hostname.
pub fn assign(
    live: &[Candidate],
    devices: &[Placement],
    rebalance: Option<Balance>,
) -> Vec<(String, Option<NodeId>)> {
    let serves = |node: NodeId, group: GroupId| {
        live.iter()
            .any(|c| c.id == node && c.groups.contains(&group))
    };
    let mut load: BTreeMap<NodeId, f64> = live.iter().map(|c| (c.id, 0.0)).collect();
    let mut owner: Vec<Option<NodeId>> = Vec::with_capacity(devices.len());
    let mut orphans = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        match d.owner.filter(|&n| serves(n, d.group)) {
            Some(n) => {
                *load.entry(n).or_default() += d.cost;
                owner.push(Some(n));
            }
            None => {
                owner.push(None);
                orphans.push(i);
            }
        }
    }
    // Heaviest first gives a tighter greedy packing; hostname breaks ties so
    // every leader computes the same answer.
    orphans.sort_by(|&a, &b| {
        devices[b]
            .cost
            .total_cmp(&devices[a].cost)
            .then_with(|| devices[a].hostname.cmp(&devices[b].hostname))
    });
    for i in orphans {
        let d = &devices[i];
        let target = live
            .iter()
            .filter(|c| c.groups.contains(&d.group))
            .map(|c| (c.id, load[&c.id]))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        if let Some((n, _)) = target {
            *load.entry(n).or_default() += d.cost;
            owner[i] = Some(n);
        }
    }
    if let Some(balance) = rebalance {
        rebalance_loads(live, devices, &mut owner, &mut load, balance);
    }
    let mut moves: Vec<(String, Option<NodeId>)> = devices
        .iter()
        .zip(&owner)
        .filter(|(d, new)| d.owner != **new)
        .map(|(d, new)| (d.hostname.to_string(), *new))
        .collect();
    moves.sort();
    moves
}

/// Greedy: repeatedly move one device from the most to the least loaded node
/// that can take it, choosing the device that best halves their gap. Each
/// move lowers the sum of squared loads, so this ends.
fn rebalance_loads(
    live: &[Candidate],
    devices: &[Placement],
    owner: &mut [Option<NodeId>],
    load: &mut BTreeMap<NodeId, f64>,
    balance: Balance,
) {
    if live.len() < 2 || !spread_beyond(load, balance.threshold) {
        return;
    }
    let groups_of: BTreeMap<NodeId, &[GroupId]> =
        live.iter().map(|c| (c.id, c.groups.as_slice())).collect();
    // Each node's movable devices by (cost, hostname): the device that best
    // halves a gap is then a binary search away, not a walk over every
    // device (which, for every move and every pair of nodes, took minutes
    // at 100,000 devices).
    let by_cost = |a: &usize, b: &usize| {
        devices[*a]
            .cost
            .total_cmp(&devices[*b].cost)
            .then_with(|| devices[*a].hostname.cmp(&devices[*b].hostname))
    };
    let mut held: BTreeMap<NodeId, Vec<usize>> = load.keys().map(|&n| (n, Vec::new())).collect();
    for (i, o) in owner.iter().enumerate() {
        if let Some(list) = o.and_then(|n| held.get_mut(&n))
            && devices[i].cost > 0.0
        {
            list.push(i);
        }
    }
    for list in held.values_mut() {
        list.sort_by(by_cost);
    }
    for _ in 0..balance.max_moves {
        // The widest gap first: a device moves from a heavy node to a light
        // one, never between two nodes that are nearly even (that would
        // only churn). The first pair with a device that narrows it wins.
        let Some((from, to, i)) = widest_gaps(load).into_iter().find_map(|(from, to, gap)| {
            halving_device(devices, &held[&from], gap, groups_of[&to]).map(|(_, i)| (from, to, i))
        }) else {
            return;
        };
        let cost = devices[i].cost;
        *load.entry(from).or_default() -= cost;
        *load.entry(to).or_default() += cost;
        owner[i] = Some(to);
        if let Some(list) = held.get_mut(&from)
            && let Ok(at) = list.binary_search_by(|j| by_cost(j, &i))
        {
            list.remove(at);
        }
        if let Some(list) = held.get_mut(&to)
            && let Err(at) = list.binary_search_by(|j| by_cost(j, &i))
        {
            list.insert(at, i);
        }
    }
}

/// Hysteresis: a rebalance starts only when the spread between the most and
/// the least loaded node is beyond `threshold` × the mean load, then moves
/// while each move strictly narrows a gap, so one run ends balanced and the
/// next finds nothing to do.
fn spread_beyond(load: &BTreeMap<NodeId, f64>, threshold: f64) -> bool {
    let mean = load.values().sum::<f64>() / load.len() as f64;
    let (lo, hi) = load
        .values()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    hi - lo > threshold * mean
}

/// Every (heavier, lighter) pair of nodes with their gap, widest first
/// (node ids break ties, so every leader computes the same moves).
fn widest_gaps(load: &BTreeMap<NodeId, f64>) -> Vec<(NodeId, NodeId, f64)> {
    let mut pairs: Vec<(NodeId, NodeId, f64)> = load
        .iter()
        .flat_map(|(&from, &from_load)| {
            load.iter()
                .map(move |(&to, &to_load)| (from, to, from_load - to_load))
        })
        .filter(|&(_, _, gap)| gap > 0.0)
        .collect();
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    pairs
}

/// Among `held` (device indices ordered by cost, then hostname, all costs
/// above zero), the device of a group in `to_groups` whose move best halves
/// `gap`: cost below `gap`, `|gap − 2 × cost|` smallest, then the smallest
/// hostname. Returns that distance and the device.
fn halving_device(
    devices: &[Placement],
    held: &[usize],
    gap: f64,
    to_groups: &[GroupId],
) -> Option<(f64, usize)> {
    let fits = |i: &usize| to_groups.contains(&devices[*i].group);
    let split = held.partition_point(|&i| devices[i].cost < gap / 2.0);
    // From half the gap up, the first that fits is the closest, and the
    // first of its cost (smallest hostname).
    let above = held[split..]
        .iter()
        .take_while(|&&i| devices[i].cost < gap)
        .find(|i| fits(i))
        .copied();
    // Below half the gap, the last that fits has the closest cost; the first
    // of that cost that fits has the smallest hostname.
    let below = held[..split].iter().rposition(fits).and_then(|last| {
        let cost = devices[held[last]].cost;
        let first_of_cost = held[..=last].partition_point(|&i| devices[i].cost < cost);
        held[first_of_cost..=last].iter().find(|i| fits(i)).copied()
    });
    [below, above]
        .into_iter()
        .flatten()
        .map(|i| ((gap - 2.0 * devices[i].cost).abs(), i))
        .min_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| devices[a.1].hostname.cmp(&devices[b.1].hostname))
        })
}

/// Cost assumed for a device never polled, and the floor below which poll
/// durations count as equal (they are noise), in ms.
pub const DEFAULT_COST_MS: f64 = 100.0;

/// The registered nodes among `ids`, as assignment candidates.
pub fn candidates<'a>(
    state: &ClusterState,
    ids: impl Iterator<Item = &'a NodeId>,
) -> Vec<Candidate> {
    ids.filter_map(|id| state.nodes.get(id))
        .map(|n| Candidate {
            id: n.id,
            groups: n.groups.clone(),
        })
        .collect()
}

/// Every device as assignment sees it.
pub fn placements(state: &ClusterState, cost_floor_ms: f64) -> Vec<Placement> {
    state
        .devices
        .values()
        .map(|d| placement_of(d, cost_floor_ms))
        .collect()
}

/// One device as assignment sees it.
pub fn placement_of(d: &Device, cost_floor_ms: f64) -> Placement {
    Placement {
        hostname: d.hostname.clone(),
        group: d.group,
        owner: d.owner,
        cost: d
            .last_poll_ms
            .map_or(cost_floor_ms, |ms| (ms as f64).max(cost_floor_ms)),
    }
}

/// Where a leaving node's devices go: the least-loaded nodes of `live` (the
/// live nodes but `leaving`) serving their groups; a device whose group no
/// other node serves is let go (no owner). Pure.
pub fn drain_moves(
    live: &[Candidate],
    mut devices: Vec<Placement>,
    leaving: NodeId,
) -> Vec<(String, Option<NodeId>)> {
    let mut theirs = Vec::new();
    for d in devices.iter_mut().filter(|d| d.owner == Some(leaving)) {
        d.owner = None;
        theirs.push(d.hostname.clone());
    }
    let mut moves = assign(live, &devices, None);
    // `assign` reports changes against the owners it was given; a device of
    // the leaving node that finds no new owner must still be let go.
    for hostname in theirs {
        if !moves.iter().any(|(h, _)| *h == hostname) {
            moves.push((hostname, None));
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, groups: &[GroupId]) -> Candidate {
        Candidate {
            id,
            groups: groups.to_vec(),
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("dev{i:03}")).collect()
    }

    fn placements(names: &[String], owners: &[Option<NodeId>], group: GroupId) -> Vec<Placement> {
        names
            .iter()
            .zip(owners)
            .map(|(h, o)| Placement {
                hostname: h.clone(),
                group,
                owner: *o,
                cost: 10.0,
            })
            .collect()
    }

    fn apply(devices: &mut [Placement], moves: &[(String, Option<NodeId>)]) {
        for (h, o) in moves {
            if let Some(d) = devices.iter_mut().find(|d| d.hostname == *h) {
                d.owner = *o;
            }
        }
    }

    fn count(devices: &[Placement], n: NodeId) -> usize {
        devices.iter().filter(|d| d.owner == Some(n)).count()
    }

    #[test]
    fn new_devices_spread_evenly() {
        let hosts = names(30);
        let mut devices = placements(&hosts, &[None; 30], 0);
        let live = [node(1, &[0]), node(2, &[0]), node(3, &[0])];
        let moves = assign(&live, &devices, None);
        assert_eq!(moves.len(), 30);
        apply(&mut devices, &moves);
        assert_eq!(
            [count(&devices, 1), count(&devices, 2), count(&devices, 3)],
            [10, 10, 10]
        );
        // Stable: nothing to do on a second run, with or without rebalancing.
        assert!(assign(&live, &devices, Some(Balance::default())).is_empty());
    }

    #[test]
    fn dead_node_moves_only_its_devices() {
        let hosts = names(30);
        let owners: Vec<_> = (0..30).map(|i| Some(i as u64 % 3 + 1)).collect();
        let devices = placements(&hosts, &owners, 0);
        let live = [node(1, &[0]), node(3, &[0])];
        let moves = assign(&live, &devices, None);
        assert_eq!(moves.len(), 10);
        assert!(moves.iter().all(|(h, o)| {
            let d = devices.iter().find(|d| d.hostname == *h).map(|d| d.owner);
            d == Some(Some(2)) && (*o == Some(1) || *o == Some(3))
        }));
        let to1 = moves.iter().filter(|(_, o)| *o == Some(1)).count();
        assert_eq!(to1, 5);
    }

    #[test]
    fn groups_are_respected_and_orphans_unassigned() {
        let hosts = names(6);
        let mut devices = placements(&hosts, &[None; 6], 0);
        for d in devices.iter_mut().take(3) {
            d.group = 1;
        }
        let live = [node(1, &[0]), node(2, &[0, 1])];
        let moves = assign(&live, &devices, Some(Balance::default()));
        apply(&mut devices, &moves);
        assert!(
            devices
                .iter()
                .filter(|d| d.group == 1)
                .all(|d| d.owner == Some(2))
        );
        // The only group-1 node dies: its group-1 devices become unassigned,
        // its group-0 devices go to node 1.
        let live = [node(1, &[0])];
        let moves = assign(&live, &devices, None);
        apply(&mut devices, &moves);
        assert!(
            devices
                .iter()
                .filter(|d| d.group == 1)
                .all(|d| d.owner.is_none())
        );
        assert!(
            devices
                .iter()
                .filter(|d| d.group == 0)
                .all(|d| d.owner == Some(1))
        );
    }

    #[test]
    fn join_rebalances_with_minimal_moves() {
        let hosts = names(30);
        let owners: Vec<_> = (0..30).map(|i| Some(i as u64 % 2 + 1)).collect();
        let mut devices = placements(&hosts, &owners, 0);
        let live = [node(1, &[0]), node(2, &[0]), node(3, &[0])];
        assert!(
            assign(&live, &devices, None).is_empty(),
            "no rebalance during debounce"
        );
        let moves = assign(&live, &devices, Some(Balance::default()));
        assert_eq!(moves.len(), 10, "only what the new node needs: {moves:?}");
        assert!(moves.iter().all(|(_, o)| *o == Some(3)));
        apply(&mut devices, &moves);
        assert_eq!(count(&devices, 3), 10);
        assert!(assign(&live, &devices, Some(Balance::default())).is_empty());
    }

    #[test]
    fn balances_by_cost_not_count() {
        let hosts = names(4);
        let mut devices = placements(&hosts, &[None; 4], 0);
        devices[0].cost = 300.0;
        for d in devices.iter_mut().skip(1) {
            d.cost = 100.0;
        }
        let live = [node(1, &[0]), node(2, &[0])];
        let moves = assign(&live, &devices, Some(Balance::default()));
        apply(&mut devices, &moves);
        let heavy_owner = devices[0].owner;
        assert!(devices.iter().skip(1).all(|d| d.owner != heavy_owner));
    }

    /// The rebalance walking every device of a pair for each move: the
    /// indexed one must choose the same moves.
    fn rebalance_by_walking_every_device(
        live: &[Candidate],
        devices: &[Placement],
        owner: &mut [Option<NodeId>],
        load: &mut BTreeMap<NodeId, f64>,
        balance: Balance,
    ) {
        if live.len() < 2 || !spread_beyond(load, balance.threshold) {
            return;
        }
        let groups_of: BTreeMap<NodeId, &[GroupId]> =
            live.iter().map(|c| (c.id, c.groups.as_slice())).collect();
        for _ in 0..balance.max_moves {
            let mut chosen = None;
            for (from, to, gap) in widest_gaps(load) {
                let mut best: Option<(f64, usize)> = None;
                for (i, d) in devices.iter().enumerate() {
                    if owner[i] != Some(from)
                        || d.cost <= 0.0
                        || d.cost >= gap
                        || !groups_of[&to].contains(&d.group)
                    {
                        continue;
                    }
                    let after = (gap - 2.0 * d.cost).abs();
                    let better = match best {
                        None => true,
                        Some((b, bi)) => {
                            after < b || (after == b && devices[i].hostname < devices[bi].hostname)
                        }
                    };
                    if better {
                        best = Some((after, i));
                    }
                }
                if let Some((_, i)) = best {
                    chosen = Some((from, to, i));
                    break;
                }
            }
            let Some((from, to, i)) = chosen else { return };
            *load.entry(from).or_default() -= devices[i].cost;
            *load.entry(to).or_default() += devices[i].cost;
            owner[i] = Some(to);
        }
    }

    #[test]
    fn indexed_rebalance_moves_what_walking_every_device_moves() {
        // A small deterministic generator: many shapes, no dependency.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let nodes = 2 + next(5);
            let live: Vec<Candidate> = (1..=nodes)
                .map(|id| match next(3) {
                    0 => node(id, &[0]),
                    1 => node(id, &[0, 1]),
                    _ => node(id, &[1, 2]),
                })
                .collect();
            let count = 1 + next(60) as usize;
            let devices: Vec<Placement> = (0..count)
                .map(|i| Placement {
                    hostname: format!("d{:03}", next(1000)) + &i.to_string(),
                    group: next(3) as GroupId,
                    owner: Some(1 + next(nodes).min(next(nodes))),
                    // Few distinct costs, so ties are common; some free.
                    cost: [0.0, 10.0, 10.0, 25.0, 40.0, 100.0, 100.0][next(7) as usize],
                })
                .collect();
            let balance = Balance {
                threshold: [0.0, 0.25][next(2) as usize],
                max_moves: 1 + next(40) as usize,
            };
            let start = |devices: &[Placement]| {
                let mut load: BTreeMap<NodeId, f64> = live.iter().map(|c| (c.id, 0.0)).collect();
                let owner: Vec<Option<NodeId>> = devices.iter().map(|d| d.owner).collect();
                for d in devices {
                    if let Some(n) = d.owner {
                        *load.entry(n).or_default() += d.cost;
                    }
                }
                (owner, load)
            };
            let (mut indexed, mut indexed_load) = start(&devices);
            rebalance_loads(&live, &devices, &mut indexed, &mut indexed_load, balance);
            let (mut walked, mut walked_load) = start(&devices);
            rebalance_by_walking_every_device(
                &live,
                &devices,
                &mut walked,
                &mut walked_load,
                balance,
            );
            assert_eq!(indexed, walked, "round {round}: {live:?} {devices:?}");
        }
    }

    #[test]
    fn a_node_joining_a_large_cluster_gets_its_share_in_bounded_passes() {
        let hosts = names(20_000);
        let owners: Vec<_> = (0..hosts.len()).map(|i| Some(i as u64 % 4 + 1)).collect();
        let mut devices = placements(&hosts, &owners, 0);
        let live: Vec<Candidate> = (1..=5).map(|id| node(id, &[0])).collect();
        let mut passes = 0;
        loop {
            let moves = assign(&live, &devices, Some(Balance::default()));
            if moves.is_empty() {
                break;
            }
            apply(&mut devices, &moves);
            passes += 1;
            assert!(passes <= 4, "4,000 devices to move at 1,000 a pass");
        }
        assert_eq!(count(&devices, 5), 4000);
    }

    #[test]
    fn small_imbalance_does_not_flap() {
        let hosts = names(3);
        let mut devices = placements(&hosts, &[Some(1), Some(1), Some(2)], 0);
        devices[2].cost = 19.0;
        let live = [node(1, &[0]), node(2, &[0])];
        assert!(assign(&live, &devices, Some(Balance::default())).is_empty());
    }

    #[test]
    fn drain_moves_every_device_in_one_entry() {
        use crate::model::types::{Command, NewDevice, NodeInfo};
        use crate::secret::Secret;
        use crate::snmp::credentials::SnmpCredentials;
        let mut s = ClusterState::default();
        for (id, groups) in [(1, vec![0]), (2, vec![0, 1]), (3, vec![0])] {
            s.apply(&Command::UpsertNode(NodeInfo {
                id,
                name: format!("n{id}"),
                addr: String::new(),
                groups,
            }));
        }
        for i in 0..7 {
            s.apply(&Command::AddDevice(NewDevice {
                hostname: format!("d{i}"),
                address: "127.0.0.1".into(),
                port: 161,
                credentials: SnmpCredentials::V2c {
                    community: Secret::new("c"),
                },
                group: u32::from(i == 6),
            }));
        }
        let all: Vec<_> = (0..7).map(|i| (format!("d{i}"), Some(2))).collect();
        s.apply(&Command::Assign { moves: all });
        let live = candidates(&s, [1, 3].iter());
        let moves = drain_moves(&live, super::placements(&s, DEFAULT_COST_MS), 2);
        s.apply(&Command::Drain { id: 2, moves });
        assert!(!s.nodes.contains_key(&2));
        let owners: Vec<_> = s.devices.values().map(|d| d.owner).collect();
        // Group 0 spreads over nodes 1 and 3; the group-1 device has nowhere to go.
        assert_eq!(owners.iter().filter(|o| **o == Some(1)).count(), 3);
        assert_eq!(owners.iter().filter(|o| **o == Some(3)).count(), 3);
        assert_eq!(s.devices["d6"].owner, None);
    }
}
