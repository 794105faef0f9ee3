//! Kill and restart under load (issue 12, goal 4): in a running cluster, SIGKILL a voter, then a
//! learner (another voter when there is none), restart each after a pause, and check that the
//! survivors polled its devices within `node_timeout_ms` and one claim round, that it caught up
//! (through a snapshot when the log was compacted past it) and took its share back, and that no
//! device missed an interval meanwhile.

use super::BenchError;
use super::harness::{Node, Running, Table, wait_for};
use super::rrd_sink::RrdSink;
use super::scale::{poll_gaps, unix_s};
use raftpoll::cluster::raft::KEEP_LOGS_AFTER_SNAPSHOT;
use raftpoll::config::ClusterConfig;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

/// One claim round on top of the node timeout: gathering (100 ms), commit, and the sample
/// time's whole second.
const CLAIM_ROUND_S: f64 = 2.0;

/// What happened to one killed node.
struct Victim {
    index: usize,
    name: String,
    role: String,
    devices: usize,
    /// Longest wait, past its due time, of one of its devices for a survivor's poll (s).
    takeover_s: f64,
    /// The leader's log was purged past the victim's last entry while it was down.
    compacted_past: bool,
    snapshots_installed: f64,
    caught_up_s: f64,
    share_back_s: f64,
    devices_after: usize,
    /// The restarted process's peak RSS (MiB), read at the end.
    restarted_peak_mib: f64,
}

/// The verdict and the printed table.
pub struct KillRestartOutcome {
    pub report: String,
    pub takeover_in_time: bool,
    /// Every restarted node applied the log and took half its share back.
    pub back_in_service: bool,
    pub caught_up_through_snapshot: bool,
    pub missed_intervals: usize,
    pub pass: bool,
}

fn status(nodes: &[Node], down: Option<usize>) -> Result<Value, BenchError> {
    let text = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != down)
        .find_map(|(_, n)| n.cli(&["status", "--json"]).ok())
        .ok_or_else(|| BenchError::Setup("no node answers status".into()))?;
    serde_json::from_str(&text).map_err(|e| BenchError::Setup(format!("status --json: {e}")))
}

/// The status's entry for the node named `name`.
fn node_entry<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"].as_str() == Some(name))
}

/// The index of a node with `role` that is not the leader and not in `taken`.
fn pick(status: &Value, nodes: &[Node], role: &str, taken: &[usize]) -> Option<usize> {
    let leader = status["leader_id"].as_u64();
    status["nodes"].as_array()?.iter().find_map(|n| {
        let name = n["name"].as_str()?;
        let index = (0..nodes.len()).find(|&i| format!("node{}", i + 1) == name)?;
        (n["role"].as_str() == Some(role) && n["id"].as_u64() != leader && !taken.contains(&index))
            .then_some(index)
    })
}

/// Kills and restarts a voter and a learner in turn (see the module doc); `restart_after`
/// is how long each stays down.
pub fn kill_and_restart(
    nodes: &mut [Node],
    sink: &RrdSink,
    interval: f64,
    restart_after: Duration,
) -> Result<KillRestartOutcome, BenchError> {
    let node_timeout_s = ClusterConfig::default().node_timeout_ms as f64 / 1000.0;
    let takeover_bound = node_timeout_s + CLAIM_ROUND_S;
    let window_start = unix_s();
    let mut victims = Vec::new();
    let mut taken = Vec::new();
    for wanted in ["follower", "learner"] {
        let before = status(nodes, None)?;
        let index = pick(&before, nodes, wanted, &taken)
            .or_else(|| pick(&before, nodes, "follower", &taken))
            .ok_or_else(|| BenchError::Setup(format!("no {wanted} to kill: {before}")))?;
        taken.push(index);
        let name = format!("node{}", index + 1);
        let id = node_entry(&before, &name)
            .and_then(|n| n["id"].as_u64())
            .ok_or_else(|| BenchError::Setup(format!("{name} is not in the status")))?;
        let role = node_entry(&before, &name)
            .and_then(|n| n["role"].as_str())
            .unwrap_or("?")
            .to_string();
        let owned: BTreeSet<String> = nodes[(index + 1) % nodes.len()]
            .devices()?
            .iter()
            .filter(|d| d["node_id"].as_u64() == Some(id))
            .filter_map(|d| d["hostname"].as_str().map(str::to_string))
            .collect();
        let last_index = nodes[index]
            .metric("raftpoll_raft_last_log_index")
            .unwrap_or(0.0);
        eprintln!(
            "kill-restart: SIGKILL {name} ({role}, {} devices)",
            owned.len()
        );
        let killed_at = unix_s();
        nodes[index].proc.kill9();
        let up_again = std::time::Instant::now() + restart_after;
        while std::time::Instant::now() < up_again {
            if let Some(gone) =
                (0..nodes.len()).find(|&i| i != index && !nodes[i].proc.is_running())
            {
                return Err(BenchError::Setup(format!(
                    "node{} exited while {name} was down; see {}",
                    gone + 1,
                    nodes[gone].log().display()
                )));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let leader = |nodes: &[Node]| {
            nodes
                .iter()
                .enumerate()
                .find(|(i, n)| *i != index && n.metric("raftpoll_raft_is_leader") == Some(1.0))
                .map(|(i, _)| i)
        };
        let leader_now = leader(nodes)
            .ok_or_else(|| BenchError::Setup(format!("no leader while {name} is down")))?;
        let metric = |node: &Node, m: &str| node.metric(m).unwrap_or(0.0);
        let purged_to = metric(&nodes[leader_now], "raftpoll_raft_snapshot_index")
            - KEEP_LOGS_AFTER_SNAPSHOT as f64;
        let compacted_past = purged_to > last_index;
        let target = metric(&nodes[leader_now], "raftpoll_raft_last_log_index");

        eprintln!("kill-restart: restarting {name}");
        nodes[index].proc.start_again();
        let restarted = std::time::Instant::now();
        // A node that never catches up or never gets devices back is a
        // finding (NaN, a FAIL), not a reason to lose the run's report.
        let caught_up_s = wait_for(
            Duration::from_secs(600),
            &format!("{name} to apply the log up to {target}"),
            || (nodes[index].metric("raftpoll_raft_applied_index")? >= target).then_some(()),
        )
        .map_or(f64::NAN, |()| restarted.elapsed().as_secs_f64());
        let snapshots_installed = metric(&nodes[index], "raftpoll_raft_snapshots_installed_total");
        // Its share back: at least half of what it held before.
        let mut devices_after = 0;
        let share_back_s = wait_for(
            Duration::from_secs(interval as u64 * 2 + 120),
            &format!("{name} to take its share of devices back"),
            || {
                let s = status(nodes, None).ok()?;
                devices_after = node_entry(&s, &name)?["devices"].as_u64()? as usize;
                (devices_after * 2 >= owned.len()).then_some(())
            },
        )
        .map_or(f64::NAN, |()| restarted.elapsed().as_secs_f64());
        victims.push((
            Victim {
                index,
                name,
                role,
                devices: owned.len(),
                takeover_s: 0.0,
                compacted_past,
                snapshots_installed,
                caught_up_s,
                share_back_s,
                devices_after,
                restarted_peak_mib: f64::NAN,
            },
            owned,
            killed_at,
        ));
    }
    // One more interval, so the devices handed back are polled by their returned owner.
    let settle = std::time::Instant::now() + Duration::from_secs_f64(interval);
    while std::time::Instant::now() < settle {
        std::thread::sleep(Duration::from_secs(1));
    }
    let window_end = unix_s();
    let (polls, missed, max_gap) =
        sink.with(|c| poll_gaps(&c.polls, window_start, window_end, interval));
    for (victim, owned, killed_at) in &mut victims {
        victim.takeover_s = sink.with(|c| takeover_delay(&c.polls, owned, *killed_at, interval));
        // A start reads the snapshot and replays the log: its own peak,
        // which the run's table (the first process's) does not show.
        victim.restarted_peak_mib = nodes[victim.index]
            .proc
            .usage()
            .map_or(f64::NAN, |u| u.peak_rss_kib as f64 / 1024.0);
    }

    let mut table = Table::new(&[
        "node killed",
        "role",
        "its devices",
        "longest wait past due for a survivor's poll (s)",
        "log compacted past it",
        "snapshots installed",
        "caught up (s after restart)",
        "half its share back (s after restart)",
        "devices then",
        "restarted: peak RSS MiB",
    ]);
    let mut takeover_in_time = true;
    let mut caught_up_through_snapshot = true;
    let mut back_in_service = true;
    for (v, _, _) in &victims {
        takeover_in_time &= v.takeover_s <= takeover_bound;
        caught_up_through_snapshot &= !v.compacted_past || v.snapshots_installed >= 1.0;
        back_in_service &= v.caught_up_s.is_finite() && v.share_back_s.is_finite();
        table.row(vec![
            v.name.clone(),
            v.role.clone(),
            v.devices.to_string(),
            format!("{:.1}", v.takeover_s),
            v.compacted_past.to_string(),
            format!("{:.0}", v.snapshots_installed),
            format!("{:.0}", v.caught_up_s),
            format!("{:.0}", v.share_back_s),
            v.devices_after.to_string(),
            format!("{:.0}", v.restarted_peak_mib),
        ]);
    }
    let pass = takeover_in_time && caught_up_through_snapshot && back_in_service && missed == 0;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "kill and restart: each node down {} s; {polls} polls from the first kill to one interval after the last restart\n",
        restart_after.as_secs()
    );
    report.push_str(&table.markdown());
    let _ = writeln!(
        report,
        "\nsurvivors polled the killed nodes' devices within node_timeout_ms + one claim round \
         ({takeover_bound:.1} s past due): {takeover_in_time}, each restarted node caught up and \
         took half its share back: {back_in_service}, a node behind the compacted log caught up \
         through a snapshot: {caught_up_through_snapshot}, missed intervals: {missed} (longest \
         gap {max_gap:.1} s) → {}",
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(KillRestartOutcome {
        report,
        takeover_in_time,
        back_in_service,
        caught_up_through_snapshot,
        missed_intervals: missed,
        pass,
    })
}

/// The longest wait past its due time (its last poll before `killed_at` plus one interval,
/// or the kill if that was later) until the first poll after the kill, over `devices`.
/// A device never polled again waits until now.
fn takeover_delay(
    polls: &HashMap<String, Vec<f64>>,
    devices: &BTreeSet<String>,
    killed_at: f64,
    interval: f64,
) -> f64 {
    let now = unix_s();
    devices
        .iter()
        .map(|d| {
            let times = polls.get(d).map(Vec::as_slice).unwrap_or_default();
            let last_before = times
                .iter()
                .copied()
                .filter(|&t| t < killed_at)
                .fold(f64::NAN, f64::max);
            let due = if last_before.is_nan() {
                killed_at
            } else {
                (last_before + interval).max(killed_at)
            };
            let next = times
                .iter()
                .copied()
                .find(|&t| t >= killed_at)
                .unwrap_or(now);
            (next - due).max(0.0)
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_delay_is_the_wait_past_due_of_the_slowest_device() {
        let polls: HashMap<String, Vec<f64>> = [
            ("a".to_string(), vec![100.0, 400.0, 700.0]),
            // Due at 500, polled by a survivor at 503.
            ("b".to_string(), vec![200.0, 503.0]),
        ]
        .into_iter()
        .collect();
        let devices: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(takeover_delay(&polls, &devices, 450.0, 300.0), 3.0);
        // Due before the kill: counted from the kill.
        assert_eq!(takeover_delay(&polls, &devices, 502.0, 100.0), 198.0);
    }
}
