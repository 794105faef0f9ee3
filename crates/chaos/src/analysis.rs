//! The invariant checker: turns the agent's request record and the injected
//! faults into the chaos report (failover times, double polls, missed
//! intervals). Pure: no I/O, unit-tested on hand-made timelines.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// A silence this long between two requests for one community from one
/// source ends a poll (a poll is tens of requests within ~100 ms).
pub const BURST_GAP_MS: u64 = 1000;

// The request record and its grouping into polls are the testbed's, so the chaos checker and
// the tests read a recording agent's record the same way.
pub use raftpoll_testbed::capture::{Poll, Request, group_polls, parse_record};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL, restarted later with the same data directory.
    Kill,
    /// SIGTERM (graceful stop), restarted later.
    Term,
    /// SIGSTOP, SIGCONT later: a hung node that keeps its sockets open.
    Pause,
    /// The node's cluster link is cut: it cannot reach the other nodes.
    Partition,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Term,
        FaultKind::Pause,
        FaultKind::Partition,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Term => "term",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
        }
    }
}

/// A fault the tool injected.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// Node index (1-based, `n1` …) and its cluster id when known.
    pub node: usize,
    pub node_id: Option<u64>,
    pub was_leader: bool,
    pub at_ms: u64,
    /// When the fault was undone (restart, SIGCONT, link up).
    pub healed_ms: u64,
    /// Devices the node owned right before the fault.
    pub affected: Vec<String>,
}

impl Fault {
    /// `kill leader`, `pause follower`, …: the row of the failover table.
    pub fn label(&self) -> String {
        let role = if self.was_leader {
            "leader"
        } else {
            "follower"
        };
        format!("{} {role}", self.kind.name())
    }
}

/// What the checker needs besides the polls.
pub struct Inputs<'a> {
    pub frequency_ms: u64,
    /// Slack on top of 2 × frequency before a gap counts as a missed interval.
    pub tolerance_ms: u64,
    /// End of observation: gaps up to here count.
    pub end_ms: u64,
    /// Source address → node index.
    pub sources: &'a BTreeMap<IpAddr, usize>,
    /// Community → hostname.
    pub hostnames: &'a BTreeMap<String, String>,
    pub faults: &'a [Fault],
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Stats {
    pub fn of(mut values: Vec<u64>) -> Stats {
        values.sort_unstable();
        let rank = |p: f64| -> u64 {
            if values.is_empty() {
                return 0;
            }
            let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Stats {
            count: values.len(),
            p50_ms: rank(50.0),
            p99_ms: rank(99.0),
            max_ms: values.last().copied().unwrap_or(0),
        }
    }
}

/// Per fault: how long until each affected device was polled again.
#[derive(Clone, Debug, Serialize)]
pub struct FaultOutcome {
    #[serde(flatten)]
    pub fault: Fault,
    /// Milliseconds from the fault to the last affected device's next poll.
    pub recovered_ms: Option<u64>,
    /// Affected devices polled again by another node (the rest waited for the heal).
    pub moved: usize,
    /// Affected devices never polled again.
    pub not_recovered: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub device: String,
    pub at_ms: u64,
    pub detail: String,
}

/// Everything the polls say.
#[derive(Clone, Debug, Serialize)]
pub struct PollAnalysis {
    pub requests: usize,
    pub polls: usize,
    pub faults: Vec<FaultOutcome>,
    /// Failover time per fault label (`kill leader`, …), over every affected device.
    pub failover: BTreeMap<String, Stats>,
    pub double_polls: Vec<Violation>,
    pub missed_intervals: Vec<Violation>,
    pub never_polled: Vec<String>,
    /// The two polls of one device that began closest together, violation
    /// or not: how far the run stayed from a double poll.
    pub closest_polls: Option<Violation>,
}

fn node_name(sources: &BTreeMap<IpAddr, usize>, src: IpAddr) -> String {
    sources
        .get(&src)
        .map(|i| format!("n{i}"))
        .unwrap_or_else(|| src.to_string())
}

pub fn analyze(requests: &[Request], inputs: &Inputs<'_>) -> PollAnalysis {
    let polls = group_polls(requests, BURST_GAP_MS);
    let host = |community: &str| {
        inputs
            .hostnames
            .get(community)
            .cloned()
            .unwrap_or_else(|| "(unknown device)".into())
    };
    let by_host: BTreeMap<String, &Vec<Poll>> = polls.iter().map(|(c, ps)| (host(c), ps)).collect();

    let half = inputs.frequency_ms / 2;
    let mut double_polls = Vec::new();
    let mut missed_intervals = Vec::new();
    let max_gap = 2 * inputs.frequency_ms + inputs.tolerance_ms;
    let mut closest: Option<(u64, Violation)> = None;
    for (device, ps) in &by_host {
        for w in ps.windows(2) {
            let gap = w[1].start_ms - w[0].start_ms;
            let pair = || Violation {
                device: device.clone(),
                at_ms: w[1].start_ms,
                detail: format!(
                    "polled by {} then by {} {gap} ms later",
                    node_name(inputs.sources, w[0].src),
                    node_name(inputs.sources, w[1].src)
                ),
            };
            if gap < half {
                double_polls.push(pair());
            }
            if closest.as_ref().is_none_or(|(min, _)| gap < *min) {
                closest = Some((gap, pair()));
            }
            if gap > max_gap {
                missed_intervals.push(Violation {
                    device: device.clone(),
                    at_ms: w[0].start_ms,
                    detail: format!(
                        "no poll for {gap} ms after the one by {}",
                        node_name(inputs.sources, w[0].src)
                    ),
                });
            }
        }
        if let Some(last) = ps.last()
            && inputs.end_ms.saturating_sub(last.start_ms) > max_gap
        {
            missed_intervals.push(Violation {
                device: device.clone(),
                at_ms: last.start_ms,
                detail: format!(
                    "no poll for the last {} ms of the run",
                    inputs.end_ms - last.start_ms
                ),
            });
        }
    }
    let never_polled: Vec<String> = inputs
        .hostnames
        .iter()
        .filter(|(c, _)| !polls.contains_key(*c))
        .map(|(_, h)| h.clone())
        .collect();

    let mut outcomes = Vec::new();
    let mut per_label: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for fault in inputs.faults {
        let victim: Vec<IpAddr> = inputs
            .sources
            .iter()
            .filter(|(_, i)| **i == fault.node)
            .map(|(ip, _)| *ip)
            .collect();
        let mut delays = Vec::new();
        let mut moved = 0;
        let mut not_recovered = Vec::new();
        for device in &fault.affected {
            // The first poll by another node after the fault, or by the
            // victim itself once healed (its devices may not have moved).
            let next = by_host.get(device).and_then(|ps| {
                ps.iter().find(|p| {
                    p.start_ms >= fault.at_ms
                        && (!victim.contains(&p.src) || p.start_ms >= fault.healed_ms)
                })
            });
            match next {
                Some(p) => {
                    if !victim.contains(&p.src) {
                        moved += 1;
                    }
                    delays.push(p.start_ms - fault.at_ms);
                }
                None => not_recovered.push(device.clone()),
            }
        }
        per_label
            .entry(fault.label())
            .or_default()
            .extend(delays.iter().copied());
        outcomes.push(FaultOutcome {
            fault: fault.clone(),
            recovered_ms: delays.iter().copied().max(),
            moved,
            not_recovered,
        });
    }
    PollAnalysis {
        requests: requests.len(),
        polls: polls.values().map(Vec::len).sum(),
        faults: outcomes,
        failover: per_label
            .into_iter()
            .map(|(k, v)| (k, Stats::of(v)))
            .collect(),
        double_polls,
        missed_intervals,
        never_polled,
        closest_polls: closest.map(|(_, pair)| pair),
    }
}

/// End-of-run cluster agreement.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Convergence {
    pub converged: bool,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub devices: u64,
    pub unassigned: u64,
    /// `status` (without per-node fields) and device owners identical on every node.
    pub identical: bool,
    /// How long after the last heal it took, milliseconds.
    pub settled_ms: Option<u64>,
    pub problem: Option<String>,
}

/// What the run was.
#[derive(Clone, Debug, Serialize)]
pub struct RunMeta {
    pub seed: u64,
    pub nodes: usize,
    pub devices: usize,
    pub frequency_s: u32,
    /// Unix ms when the cluster started; report times are relative to it.
    pub started_ms: u64,
    pub duration_ms: u64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: RunMeta,
    /// Faults after which the cluster did not become healthy again in time.
    pub unhealed: Vec<String>,
    #[serde(flatten)]
    pub polls: PollAnalysis,
    pub convergence: Convergence,
    pub violations: usize,
    pub passed: bool,
}

impl Report {
    pub fn new(
        run: RunMeta,
        unhealed: Vec<String>,
        polls: PollAnalysis,
        convergence: Convergence,
    ) -> Report {
        let not_recovered: usize = polls.faults.iter().map(|f| f.not_recovered.len()).sum();
        let violations = polls.double_polls.len()
            + polls.missed_intervals.len()
            + polls.never_polled.len()
            + not_recovered
            + unhealed.len()
            + usize::from(!convergence.converged);
        Report {
            run,
            unhealed,
            polls,
            convergence,
            violations,
            passed: violations == 0,
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let p = &self.polls;
        let _ = writeln!(
            s,
            "chaos run: seed {} · {} nodes · {} devices · frequency {} s · {:.0} s · {} faults",
            self.run.seed,
            self.run.nodes,
            self.run.devices,
            self.run.frequency_s,
            self.run.duration_ms as f64 / 1000.0,
            p.faults.len()
        );
        let _ = writeln!(s, "agent saw {} requests in {} polls", p.requests, p.polls);
        let _ = writeln!(s, "\nfaults:");
        for f in &p.faults {
            let _ = writeln!(
                s,
                "  +{:>7.1}s {:<18} n{} (id {}) held {:.1}s · {} devices, {} moved, all polled again after {}{}",
                f.fault.at_ms.saturating_sub(self.start_ms()) as f64 / 1000.0,
                f.fault.label(),
                f.fault.node,
                f.fault.node_id.map_or("?".into(), |i| i.to_string()),
                f.fault.healed_ms.saturating_sub(f.fault.at_ms) as f64 / 1000.0,
                f.fault.affected.len(),
                f.moved,
                f.recovered_ms.map_or("-".into(), |ms| format!("{ms} ms")),
                if f.not_recovered.is_empty() {
                    String::new()
                } else {
                    format!(" · NOT polled again: {}", f.not_recovered.join(", "))
                }
            );
        }
        let _ = writeln!(
            s,
            "\ntime until every affected device was polled again (ms):"
        );
        let _ = writeln!(
            s,
            "  {:<18} {:>7} {:>7} {:>7} {:>7}",
            "fault", "devices", "p50", "p99", "max"
        );
        for (label, st) in &p.failover {
            let _ = writeln!(
                s,
                "  {:<18} {:>7} {:>7} {:>7} {:>7}",
                label, st.count, st.p50_ms, st.p99_ms, st.max_ms
            );
        }
        let list = |s: &mut String, title: &str, v: &[Violation]| {
            let _ = writeln!(s, "\n{title}: {}", v.len());
            for x in v.iter().take(50) {
                let _ = writeln!(
                    s,
                    "  +{:.1}s {}: {}",
                    x.at_ms.saturating_sub(self.start_ms()) as f64 / 1000.0,
                    x.device,
                    x.detail
                );
            }
        };
        list(
            &mut s,
            "devices polled twice within one interval",
            &p.double_polls,
        );
        if let Some(c) = &p.closest_polls {
            let _ = writeln!(
                s,
                "\nclosest polls of one device: {}: {}",
                c.device, c.detail
            );
        }
        list(&mut s, "intervals missed", &p.missed_intervals);
        if !p.never_polled.is_empty() {
            let _ = writeln!(s, "\nnever polled: {}", p.never_polled.join(", "));
        }
        if !self.unhealed.is_empty() {
            let _ = writeln!(s, "\ncluster not healthy again after:");
            for u in &self.unhealed {
                let _ = writeln!(s, "  {u}");
            }
        }
        let c = &self.convergence;
        let _ = writeln!(
            s,
            "\nconvergence: {} · leader {} term {} · {} devices, {} unassigned · status identical on every node: {}{}{}",
            if c.converged { "yes" } else { "NO" },
            c.leader_id.map_or("none".into(), |l| l.to_string()),
            c.term,
            c.devices,
            c.unassigned,
            if c.identical { "yes" } else { "no" },
            c.settled_ms
                .map_or(String::new(), |ms| format!(" · settled in {ms} ms")),
            c.problem
                .as_ref()
                .map_or(String::new(), |p| format!(" · {p}"))
        );
        let _ = writeln!(
            s,
            "\nresult: {} ({} violations)",
            if self.passed { "PASS" } else { "FAIL" },
            self.violations
        );
        s
    }

    fn start_ms(&self) -> u64 {
        self.run.started_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 3000;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 232, 0, n])
    }

    fn req(at_ms: u64, n: u8, community: &str) -> Request {
        Request {
            at_ms,
            src: ip(n),
            community: community.into(),
        }
    }

    /// A 20-request poll of `community` by node `n` starting at `at`.
    fn poll(out: &mut Vec<Request>, at: u64, n: u8, community: &str) {
        for k in 0..20 {
            out.push(req(at + k * 3, n, community));
        }
    }

    fn maps() -> (BTreeMap<IpAddr, usize>, BTreeMap<String, String>) {
        (
            (1..=3).map(|n| (ip(n), n as usize)).collect(),
            [("c0", "dev000"), ("c1", "dev001")]
                .into_iter()
                .map(|(c, h)| (c.to_string(), h.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parses_record_lines_and_skips_torn_ones() {
        let text = "1000 10.232.0.1:4000 c0 16100\n1001 10.232.0.2:4000 c1 16100\n10";
        let r = parse_record(text);
        assert_eq!(r, vec![req(1000, 1, "c0"), req(1001, 2, "c1")]);
    }

    #[test]
    fn bursts_split_by_source_and_silence() {
        let mut r = Vec::new();
        poll(&mut r, 0, 1, "c0");
        poll(&mut r, 30, 2, "c0"); // interleaves with n1's burst
        poll(&mut r, 3000, 1, "c0");
        let p = &group_polls(&r, BURST_GAP_MS)["c0"];
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].src, p[0].requests, p[0].end_ms), (ip(1), 20, 57));
        assert_eq!((p[1].src, p[1].start_ms), (ip(2), 30));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Stats::of((1..=100).collect());
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms, s.count), (50, 99, 100, 100));
        assert_eq!(Stats::of(vec![7]).p99_ms, 7);
        assert_eq!(Stats::of(vec![]), Stats::default());
    }

    #[test]
    fn clean_failover_has_no_violations() {
        let (sources, hostnames) = maps();
        let mut r = Vec::new();
        // c0 on n1 until it is killed at 7000; n2 takes over at 9500.
        for at in [1000, 4000, 7000 - 500] {
            poll(&mut r, at, 1, "c0");
        }
        for at in [9500, 12500] {
            poll(&mut r, at, 2, "c0");
        }
        for at in [2000, 5000, 8000, 11000, 14000] {
            poll(&mut r, at, 3, "c1");
        }
        let faults = [Fault {
            kind: FaultKind::Kill,
            node: 1,
            node_id: Some(1),
            was_leader: true,
            at_ms: 7000,
            healed_ms: 13000,
            affected: vec!["dev000".into()],
        }];
        let a = analyze(
            &r,
            &Inputs {
                frequency_ms: F,
                tolerance_ms: 1000,
                end_ms: 15000,
                sources: &sources,
                hostnames: &hostnames,
                faults: &faults,
            },
        );
        assert!(a.double_polls.is_empty(), "{:?}", a.double_polls);
        assert!(a.missed_intervals.is_empty(), "{:?}", a.missed_intervals);
        let closest = a.closest_polls.expect("closest polls");
        assert_eq!(closest.device, "dev000");
        assert_eq!(closest.detail, "polled by n1 then by n1 2500 ms later");
        assert_eq!(a.faults[0].recovered_ms, Some(2500));
        assert_eq!(a.faults[0].moved, 1);
        assert_eq!(a.failover["kill leader"].max_ms, 2500);
    }

    #[test]
    fn double_polls_missed_intervals_and_unrecovered_devices_are_found() {
        let (sources, hostnames) = maps();
        let mut r = Vec::new();
        poll(&mut r, 1000, 1, "c0");
        poll(&mut r, 2000, 2, "c0"); // 1 s after n1's: twice in one interval
        poll(&mut r, 10000, 2, "c0"); // 8 s gap > 2 × 3 s + 1 s
        poll(&mut r, 1000, 3, "c1"); // then silence until the end
        let faults = [Fault {
            kind: FaultKind::Partition,
            node: 3,
            node_id: Some(3),
            was_leader: false,
            at_ms: 3000,
            healed_ms: 8000,
            affected: vec!["dev001".into()],
        }];
        let a = analyze(
            &r,
            &Inputs {
                frequency_ms: F,
                tolerance_ms: 1000,
                end_ms: 12000,
                sources: &sources,
                hostnames: &hostnames,
                faults: &faults,
            },
        );
        assert_eq!(a.double_polls.len(), 1);
        assert_eq!(a.double_polls[0].device, "dev000");
        let missed: Vec<&str> = a
            .missed_intervals
            .iter()
            .map(|v| v.device.as_str())
            .collect();
        assert_eq!(missed, vec!["dev000", "dev001"]);
        assert_eq!(a.faults[0].not_recovered, vec!["dev001".to_string()]);
        let report = Report::new(
            RunMeta {
                seed: 1,
                nodes: 3,
                devices: 2,
                frequency_s: 3,
                started_ms: 0,
                duration_ms: 12000,
            },
            vec![],
            a,
            Convergence {
                converged: true,
                ..Default::default()
            },
        );
        assert_eq!(report.violations, 4);
        assert!(!report.passed);
        assert!(report.text().contains("FAIL"));
    }

    #[test]
    fn victim_polls_before_heal_do_not_count_as_recovery() {
        let (sources, hostnames) = maps();
        let mut r = Vec::new();
        poll(&mut r, 1000, 1, "c0");
        poll(&mut r, 4000, 1, "c0"); // a paused node finishing its burst? still the victim
        poll(&mut r, 6000, 1, "c0"); // after the heal
        let faults = [Fault {
            kind: FaultKind::Pause,
            node: 1,
            node_id: Some(1),
            was_leader: false,
            at_ms: 2000,
            healed_ms: 5000,
            affected: vec!["dev000".into()],
        }];
        let a = analyze(
            &r,
            &Inputs {
                frequency_ms: F,
                tolerance_ms: 1000,
                end_ms: 7000,
                sources: &sources,
                hostnames: &hostnames,
                faults: &faults,
            },
        );
        assert_eq!(a.faults[0].recovered_ms, Some(4000));
        assert_eq!(a.faults[0].moved, 0);
    }
}
