//! Scale-out on one machine: N nodes share M simulated switches served over many UDP ports;
//! whether every device is polled within its first interval and then in every interval, with
//! no leader change, and what the cluster costs (CPU, memory per node, Raft log rate).

use super::harness::{
    NODE_PARTS, Node, POLLING_PART, RAFT_PART, Running as _, Table, Usage, dir_size, machine,
    wait_for, write_switch_recording,
};
use super::kill_restart::{KillRestartOutcome, kill_and_restart};
use super::rrd_sink::RrdSink;
use super::scale::{import_devices, poll_gaps, split_cell, split_header, unix_s, wait_polled_once};
use super::{BenchError, Workdir};
use raftpoll_testbed::sim::SimBuilder;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Nodes in the cluster (the first founds it, the others join with it as seed).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Devices, spread over the simulator's UDP ports.
    #[arg(long, default_value_t = 100_000)]
    pub devices: usize,
    /// Ports per simulated switch.
    #[arg(long, default_value_t = 30)]
    pub ports: u32,
    /// UDP ports the simulator serves the devices on.
    #[arg(long, default_value_t = 100)]
    pub sim_ports: u16,
    /// Poll interval, seconds.
    #[arg(long, default_value_t = 300)]
    pub interval: u32,
    /// Intervals measured after every device has been polled once.
    #[arg(long, default_value_t = 2)]
    pub intervals: u32,
    /// Peak RSS allowed per node, MiB (issue target: 300).
    #[arg(long, default_value_t = 300.0)]
    pub max_rss_mib: f64,
    /// Keep configs, logs and data here (default: a temp dir, removed at the end).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// After the measured intervals, SIGKILL a voter and then a learner and restart each
    /// after `--restart-after-s` (issue 12, goal 4).
    #[arg(long)]
    pub kill_restart: bool,
    /// How long each killed node stays down, seconds.
    #[arg(long, default_value_t = 120)]
    pub restart_after_s: u64,
    #[command(flatten)]
    pub raft_timing: RaftTimingArgs,
}

/// Raft timing for every node of the benchmark's cluster; unset means the product's default.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RaftTimingArgs {
    /// `[cluster] heartbeat_ms` of every node.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// `[cluster] election_timeout_min_ms` of every node.
    #[arg(long)]
    pub election_timeout_min_ms: Option<u64>,
    /// `[cluster] election_timeout_max_ms` of every node.
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
}

impl RaftTimingArgs {
    /// `key = value` for each setting given.
    fn settings(&self) -> Vec<String> {
        [
            ("heartbeat_ms", self.heartbeat_ms),
            ("election_timeout_min_ms", self.election_timeout_min_ms),
            ("election_timeout_max_ms", self.election_timeout_max_ms),
        ]
        .iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key} = {v}")))
        .collect()
    }

    /// The `[cluster]` table that sets what was given (empty when nothing was).
    fn config_table(&self) -> String {
        let settings = self.settings();
        if settings.is_empty() {
            String::new()
        } else {
            format!("[cluster]\n{}\n", settings.join("\n"))
        }
    }

    /// For a report's header line.
    fn describe(&self) -> String {
        let settings = self.settings();
        if settings.is_empty() {
            "default Raft timing".into()
        } else {
            format!("Raft timing {}", settings.join(", "))
        }
    }
}

/// Every node's current Raft term; the highest one.
fn max_term(nodes: &[Node]) -> f64 {
    nodes
        .iter()
        .filter_map(|n| n.metric("raftpoll_raft_term"))
        .fold(0.0, f64::max)
}

/// Which node leads now, its log's last index and the bytes it appended to
/// its log since it started.
fn leader_log(nodes: &[Node]) -> Option<(usize, f64, f64)> {
    let (i, leader) = nodes
        .iter()
        .enumerate()
        .find(|(_, n)| n.metric("raftpoll_raft_is_leader") == Some(1.0))?;
    Some((
        i,
        leader.metric("raftpoll_raft_last_log_index")?,
        leader.metric("raftpoll_raft_log_appended_bytes_total")?,
    ))
}

/// Entries and KB per second between two readings of [`leader_log`] on the
/// same leader (bytes as it stored them; every node stores the same).
fn log_rates(
    from: Option<(usize, f64, f64)>,
    to: Option<(usize, f64, f64)>,
    secs: f64,
) -> (String, String) {
    match (from, to) {
        (Some((l0, i0, b0)), Some((l1, i1, b1)))
            if l0 == l1 && i1 >= i0 && b1 >= b0 && secs > 0.0 =>
        {
            (
                format!("{:.1}", (i1 - i0) / secs),
                format!("{:.1}", (b1 - b0) / secs / 1000.0),
            )
        }
        _ => ("- (leader changed)".into(), "- (leader changed)".into()),
    }
}

/// What [`measure`] found: the printed report and each goal's verdict.
pub struct ClusterOutcome {
    pub report: String,
    /// Every device polled within its first interval after the import.
    pub first_polls_in_time: bool,
    pub missed_intervals: usize,
    pub leader_changes: f64,
    pub highest_peak_rss_mib: f64,
    pub pass: bool,
    /// The cluster's CPU in the window by [`NODE_PARTS`] (then the rest), summed
    /// over the nodes; % of one core.
    pub parts_pct: Vec<f64>,
    /// The same with no devices, before the import (the fixed cost).
    pub idle_parts_pct: Vec<f64>,
    /// The busiest node's Raft part, % of one core.
    pub max_node_raft_pct: f64,
    /// Polls in the window.
    pub polls: usize,
    /// The kill and restart phase, when asked for.
    pub kill_restart: Option<KillRestartOutcome>,
}

pub fn run(args: &ClusterArgs) -> Result<String, BenchError> {
    measure(args).map(|outcome| outcome.report)
}

/// Runs the cluster and measures it against the goals (see [`ClusterOutcome`]).
pub fn measure(args: &ClusterArgs) -> Result<ClusterOutcome, BenchError> {
    if args.nodes == 0 || args.devices == 0 || args.sim_ports == 0 || args.interval < 10 {
        return Err(BenchError::Setup(
            "--nodes, --devices and --sim-ports must be positive, --interval at least 10 s".into(),
        ));
    }
    let work = Workdir::new(args.workdir.as_deref(), "raftpoll-bench-cluster-")?;
    let dir = work.path();
    let n = args.devices;
    eprintln!(
        "cluster: {} nodes, {n} devices × {} ports over {} UDP ports, interval {} s",
        args.nodes, args.ports, args.sim_ports, args.interval
    );
    let recording = dir.join("switch.snmprec");
    write_switch_recording(&recording, args.ports)?;
    let sim = SimBuilder::new()
        .devices(n, "dev")
        .ports(args.sim_ports)
        .recording(&recording)
        .log_dir(dir)
        .start();
    let sink = RrdSink::start()?;
    let rrd = sink.addr.to_string();
    let poller = format!(
        "frequency = {}\ndiscovery_frequency = 86400\ntimeout_ms = 2000\nretries = 1",
        args.interval
    );
    let cluster = args.raft_timing.config_table();
    let mut nodes = vec![Node::start(dir, "node1", &rrd, &poller, &cluster)?];
    for i in 2..=args.nodes {
        let seed = Some(nodes[0].addr);
        let name = format!("node{i}");
        nodes.push(Node::start_with_seed(
            dir, &name, &rrd, &poller, &cluster, seed,
        )?);
    }
    wait_for(Duration::from_secs(120), "every node to join", || {
        let status: serde_json::Value =
            serde_json::from_str(&nodes[0].cli(&["status", "--json"]).ok()?).ok()?;
        (status["nodes"].as_array()?.len() == args.nodes).then_some(())
    })?;

    // What the cluster costs with nothing to poll (heartbeats, ticks): the
    // fixed part of the replicated CPU, measured before the import.
    let idle0 = usages(&nodes)?;
    std::thread::sleep(IDLE_WINDOW);
    let idle_parts_pct = cluster_parts_pct(&idle0, &usages(&nodes)?, IDLE_WINDOW.as_secs_f64());

    let log_before_import = leader_log(&nodes);
    let started = Instant::now();
    let import_start = unix_s();
    import_devices(&nodes[0], dir, n, sim.ports())?;
    let add_s = started.elapsed().as_secs_f64();
    let term_after_import = max_term(&nodes);

    let interval = f64::from(args.interval);
    let polled_once = wait_polled_once(&sink, n, args.interval);
    let first_polls_s = started.elapsed().as_secs_f64();
    let polled_before_window = sink.with(|c| c.polls.len());
    // Not every device polled: a finding, measured over one interval rather than a set-up error.
    let intervals = match polled_once {
        Ok(()) => {
            eprintln!(
                "cluster: {n} devices imported in {add_s:.1} s, all polled once after {first_polls_s:.0} s"
            );
            args.intervals
        }
        Err(e) => {
            eprintln!("cluster: {e}: {polled_before_window} of {n} devices polled");
            1
        }
    };
    eprintln!(
        "cluster: measuring {} s",
        u64::from(args.interval) * u64::from(intervals)
    );

    let window_start = unix_s();
    let usage0 = usages(&nodes)?;
    let log0 = leader_log(&nodes);
    let measured = Duration::from_secs(u64::from(args.interval) * u64::from(intervals));
    let end = Instant::now() + measured;
    while Instant::now() < end {
        if let Some(gone) = nodes.iter_mut().position(|node| !node.proc.is_running()) {
            return Err(BenchError::Setup(format!(
                "node{} exited during the run; see {}",
                gone + 1,
                nodes[gone].log().display()
            )));
        }
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
    }
    let usage1 = usages(&nodes)?;
    let log1 = leader_log(&nodes);
    let window_end = unix_s();
    let wall = window_end - window_start;
    let leader_changes = (max_term(&nodes) - term_after_import).max(0.0);
    let (polls, missed, max_gap) =
        sink.with(|c| poll_gaps(&c.polls, window_start, window_end, interval));

    let split_header = split_header();
    let mut per_node = Table::new(&[
        "node",
        "CPU % of one core",
        &split_header,
        "peak RSS MiB",
        "data dir MiB",
    ]);
    let mut cpu_total = 0.0;
    let parts_total = cluster_parts_pct(&usage0, &usage1, wall);
    let mut max_node_raft_pct: f64 = 0.0;
    let mut peak_max: f64 = 0.0;
    for (i, ((node, u0), u1)) in nodes.iter().zip(&usage0).zip(&usage1).enumerate() {
        let cpu_pct = 100.0 * (u1.cpu_s - u0.cpu_s) / wall;
        let parts_pct: Vec<f64> = u0
            .parts_since(u1)
            .iter()
            .map(|cpu| 100.0 * cpu / wall)
            .collect();
        max_node_raft_pct = max_node_raft_pct.max(parts_pct[RAFT_PART]);
        let peak = u1.peak_rss_kib as f64 / 1024.0;
        cpu_total += cpu_pct;
        peak_max = peak_max.max(peak);
        per_node.row(vec![
            format!("node{}", i + 1),
            format!("{cpu_pct:.1}"),
            split_cell(&parts_pct),
            format!("{peak:.0}"),
            format!("{:.1}", dir_size(&node.dir.join("data")) as f64 / 1048576.0),
        ]);
    }
    per_node.row(vec![
        "all".into(),
        format!("{cpu_total:.1}"),
        split_cell(&parts_total),
        "-".into(),
        "-".into(),
    ]);
    let (entries_per_s, kb_per_s) = log_rates(log0, log1, wall);
    let (first_entries_per_s, first_kb_per_s) =
        log_rates(log_before_import, log0, window_start - import_start);
    let kill_restart = if args.kill_restart {
        Some(kill_and_restart(
            &mut nodes,
            &sink,
            interval,
            Duration::from_secs(args.restart_after_s),
        )?)
    } else {
        None
    };
    for node in &mut nodes {
        node.proc.terminate(Duration::from_secs(10));
    }
    drop(sim);

    // By the polls' own sample times, not by when this loop noticed them.
    let last_first_poll = sink.with(|c| {
        c.polls
            .values()
            .filter_map(|times| times.first().copied())
            .fold(f64::NAN, f64::max)
    }) - import_start;
    let first_ok = polled_before_window >= n && last_first_poll <= add_s + interval;
    let pass = first_ok
        && missed == 0
        && leader_changes == 0.0
        && peak_max <= args.max_rss_mib
        && kill_restart.as_ref().is_none_or(|k| k.pass);
    let mut summary = Table::new(&[
        "nodes",
        "devices",
        "ports/device",
        "import (s)",
        "all polled once (s)",
        "last first poll (s after import)",
        "polls measured",
        "missed intervals",
        "longest gap (s)",
        "leader changes",
        "cluster CPU % of one core",
        "CPU ms per device-poll",
        "highest peak RSS MiB",
        "log entries/s",
        "log KB/s",
        "log entries/s, KB/s until measured",
    ]);
    summary.row(vec![
        args.nodes.to_string(),
        n.to_string(),
        args.ports.to_string(),
        format!("{add_s:.1}"),
        if polled_before_window >= n {
            format!("{first_polls_s:.0}")
        } else {
            format!("never ({polled_before_window} of {n} after {first_polls_s:.0})")
        },
        format!("{last_first_poll:.0}"),
        polls.to_string(),
        missed.to_string(),
        format!("{max_gap:.1}"),
        format!("{leader_changes:.0}"),
        format!("{cpu_total:.1}"),
        if polls > 0 {
            format!("{:.2}", 10.0 * cpu_total * wall / polls as f64)
        } else {
            "-".into()
        },
        format!("{peak_max:.0}"),
        entries_per_s,
        kb_per_s,
        format!("{first_entries_per_s}, {first_kb_per_s}"),
    ]);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster: {} nodes on one machine, interval {} s, {} interval(s) measured once every device was polled (or the first-poll wait ran out); {}; {}\n",
        args.nodes,
        args.interval,
        intervals,
        args.raft_timing.describe(),
        machine()
    );
    out.push_str(&summary.markdown());
    out.push('\n');
    out.push_str(&per_node.markdown());
    let _ = writeln!(
        out,
        "\nidle, before the import ({} s, no devices), CPU % of one core by part, cluster: {}",
        IDLE_WINDOW.as_secs(),
        split_cell(&idle_parts_pct)
    );
    if let Some(k) = &kill_restart {
        out.push('\n');
        out.push_str(&k.report);
    }
    let _ = writeln!(
        out,
        "\nevery device polled within its first interval: {first_ok}, no missed interval: {}, \
         no leader change: {}, peak RSS ≤ {:.0} MiB on every node: {}{} → {}",
        missed == 0,
        leader_changes == 0.0,
        args.max_rss_mib,
        peak_max <= args.max_rss_mib,
        match &kill_restart {
            Some(k) => format!(", kill and restart: {}", k.pass),
            None => String::new(),
        },
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(ClusterOutcome {
        report: out,
        first_polls_in_time: first_ok,
        missed_intervals: missed,
        leader_changes,
        highest_peak_rss_mib: peak_max,
        pass,
        parts_pct: parts_total,
        idle_parts_pct,
        max_node_raft_pct,
        polls,
        kill_restart,
    })
}

/// How long the cluster is measured with no devices, before the import.
const IDLE_WINDOW: Duration = Duration::from_secs(30);

fn usages(nodes: &[Node]) -> Result<Vec<Usage>, BenchError> {
    nodes.iter().map(|node| node.proc.usage()).collect()
}

/// The cluster's CPU between two samples by [`NODE_PARTS`] (then the rest),
/// summed over the nodes; % of one core.
fn cluster_parts_pct(before: &[Usage], after: &[Usage], wall_s: f64) -> Vec<f64> {
    let mut total: Vec<f64> = Vec::new();
    for (u0, u1) in before.iter().zip(after) {
        let parts = u0.parts_since(u1);
        total.resize(parts.len(), 0.0);
        for (t, cpu) in total.iter_mut().zip(parts) {
            *t += 100.0 * cpu / wall_s;
        }
    }
    total
}

/// Most replicated (Raft) CPU allowed, % of the polling CPU (issue 12, goal 3).
const TARGET_RAFT_PCT_OF_POLLING: f64 = 10.0;

#[derive(clap::Args, Debug)]
pub struct ScalingArgs {
    /// Cluster sizes to run, one after the other.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3, 5, 10])]
    pub nodes: Vec<usize>,
    /// Devices per node: each cluster polls nodes × this many.
    #[arg(long, default_value_t = 2000)]
    pub devices_per_node: usize,
    /// Ports per simulated switch.
    #[arg(long, default_value_t = 30)]
    pub ports: u32,
    /// UDP ports the simulator serves the devices on.
    #[arg(long, default_value_t = 100)]
    pub sim_ports: u16,
    /// Poll interval, seconds.
    #[arg(long, default_value_t = 60)]
    pub interval: u32,
    /// Intervals measured after every device has been polled once.
    #[arg(long, default_value_t = 2)]
    pub intervals: u32,
    /// Peak RSS allowed per node, MiB.
    #[arg(long, default_value_t = 300.0)]
    pub max_rss_mib: f64,
    #[command(flatten)]
    pub raft_timing: RaftTimingArgs,
}

/// The same load per node on clusters of different sizes: how the replicated
/// (Raft) CPU compares with the polling CPU as nodes are added.
pub fn run_scaling(args: &ScalingArgs) -> Result<String, BenchError> {
    let mut table = Table::new(&[
        "nodes",
        "devices",
        "polls measured",
        "cluster CPU % of one core",
        &split_header(),
        "Raft CPU % of polling CPU",
        "idle Raft CPU % (no devices)",
        "Raft CPU above idle, % of polling CPU",
        "busiest node's Raft CPU %",
        "CPU ms per device-poll",
        "missed intervals",
        "leader changes",
    ]);
    let mut pass = true;
    for &nodes in &args.nodes {
        let outcome = measure(&ClusterArgs {
            nodes,
            devices: nodes * args.devices_per_node,
            ports: args.ports,
            sim_ports: args.sim_ports,
            interval: args.interval,
            intervals: args.intervals,
            max_rss_mib: args.max_rss_mib,
            workdir: None,
            kill_restart: false,
            restart_after_s: 0,
            raft_timing: args.raft_timing.clone(),
        })?;
        eprintln!("{}", outcome.report);
        let cpu: f64 = outcome.parts_pct.iter().sum();
        let share_of_polling = |raft: f64| match outcome.parts_pct[POLLING_PART] {
            polling if polling > 0.0 => 100.0 * raft / polling,
            _ => f64::INFINITY,
        };
        let raft = outcome.parts_pct[RAFT_PART];
        let idle_raft = outcome.idle_parts_pct[RAFT_PART];
        let raft_share = share_of_polling(raft);
        let above_idle_share = share_of_polling((raft - idle_raft).max(0.0));
        pass &= raft_share <= TARGET_RAFT_PCT_OF_POLLING && outcome.pass;
        let wall = f64::from(args.interval) * f64::from(args.intervals);
        table.row(vec![
            nodes.to_string(),
            (nodes * args.devices_per_node).to_string(),
            outcome.polls.to_string(),
            format!("{cpu:.1}"),
            split_cell(&outcome.parts_pct),
            format!("{raft_share:.1}"),
            format!("{idle_raft:.1}"),
            format!("{above_idle_share:.1}"),
            format!("{:.1}", outcome.max_node_raft_pct),
            if outcome.polls > 0 {
                format!("{:.2}", 10.0 * cpu * wall / outcome.polls as f64)
            } else {
                "-".into()
            },
            outcome.missed_intervals.to_string(),
            format!("{:.0}", outcome.leader_changes),
        ]);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scaling: {} devices per node, interval {} s, {} interval(s) measured; parts: {}; {}; {}\n",
        args.devices_per_node,
        args.interval,
        args.intervals,
        NODE_PARTS.join(", "),
        args.raft_timing.describe(),
        machine()
    );
    out.push_str(&table.markdown());
    let _ = writeln!(
        out,
        "\nRaft CPU ≤ {TARGET_RAFT_PCT_OF_POLLING} % of polling CPU at every size, and every size's \
         goals met → {}",
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_timing_sets_only_what_was_given() {
        assert_eq!(RaftTimingArgs::default().config_table(), "");
        let timing = RaftTimingArgs {
            heartbeat_ms: Some(150),
            election_timeout_max_ms: Some(1200),
            ..Default::default()
        };
        assert_eq!(
            timing.config_table(),
            "[cluster]\nheartbeat_ms = 150\nelection_timeout_max_ms = 1200\n"
        );
    }

    #[test]
    fn log_rates_are_per_second_and_only_within_one_leader() {
        let rates = log_rates(Some((0, 100.0, 1e6)), Some((0, 400.0, 4e6)), 30.0);
        assert_eq!(rates, ("10.0".to_string(), "100.0".to_string()));
        // Another node's byte counter is another count: no rate, and it says why.
        let (entries, kb) = log_rates(Some((0, 400.0, 4e6)), Some((1, 500.0, 5e6)), 30.0);
        assert!(entries.contains("leader changed") && kb.contains("leader changed"));
        assert!(
            log_rates(None, Some((0, 1.0, 1.0)), 30.0)
                .0
                .contains("leader changed")
        );
    }
}
