//! Faults the product must survive (issue 4), on real processes: rrdcached stopped for over a
//! minute while polls go on, a node killed with a full spool, a node killed during a burst of
//! device adds, and agents that time out, answer late, answer with errors or with garbage.
//!
//! Agents are `raftpoll-sim` (moving counters, 2 ports per device; `--misbehave` for the bad
//! ones), RRDs go to a real rrdcached and are read back with `rrdtool fetch`. Each scenario
//! has its own daemons and ports, so they run in parallel.

use raftpoll_testbed as testbed;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testbed::cluster::{RecordingAgent, group_polls, unix_ms};
use testbed::{NodeConfig, RaftpollNode, Rrdcached, free_udp_port, wait_until_every};

/// Poll frequency of every node here: the RRD step (heartbeat = 2 steps).
const FREQ: u64 = 5;
/// rrdcached stays away at least this long in the outage tests.
const OUTAGE: Duration = Duration::from_secs(62);
const CHECK_EVERY: Duration = Duration::from_millis(500);
const LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// Discovery, first poll and the first two samples in every port file.
const FIRST_DATA_DEADLINE: Duration = Duration::from_secs(60);
/// A drained spool after rrdcached is back (thousands of records at most).
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn node_config(name: &str, rrdcached: &str) -> NodeConfig {
    let mut cfg = NodeConfig::new(name, rrdcached);
    cfg.frequency = FREQ as u32;
    cfg.down_retry = FREQ as u32;
    cfg.timeout_ms = 1000;
    cfg.retries = 1;
    let mut poller = toml::Table::new();
    // last_polled shows up in `device list` within a second of the poll.
    poller.insert("report_interval_ms".into(), toml::Value::Integer(500));
    cfg.extra
        .insert("poller".into(), toml::Value::Table(poller));
    cfg
}

/// A node that leads its own one-node cluster.
fn start_node(name: &str, rrdcached: &str) -> RaftpollNode {
    let node = RaftpollNode::start(node_config(name, rrdcached));
    node.wait_leader(LEADER_DEADLINE);
    node
}

fn add_device(node: &RaftpollNode, hostname: &str, port: u16, community: &str) {
    let port = port.to_string();
    node.cli_ok(&[
        "device",
        "add",
        hostname,
        "--ip",
        "127.0.0.1",
        "--port",
        &port,
        "--community",
        community,
    ]);
}

/// `status --json`, None while the node does not answer.
fn try_status(node: &RaftpollNode) -> Option<Value> {
    let out = node.cli(&["status", "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// `device list --json` by hostname, None while the node does not answer.
fn try_list(node: &RaftpollNode) -> Option<BTreeMap<String, Value>> {
    let out = node.cli(&["device", "list", "--json"]);
    if !out.status.success() {
        return None;
    }
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    list.as_array()?
        .iter()
        .map(|d| Some((d["hostname"].as_str()?.to_string(), d.clone())))
        .collect()
}

/// The RRD file of every port of `hostname`, once discovery has found `ports` of them.
fn port_files(node: &RaftpollNode, hostname: &str, ports: usize) -> Vec<String> {
    wait_until_every(
        FIRST_DATA_DEADLINE,
        CHECK_EVERY,
        &format!("{hostname} discovered with {ports} ports"),
        || {
            let show = node.cli_json(&["device", "show", hostname, "--json"]);
            let files: Vec<String> = show["ports"]
                .as_array()?
                .iter()
                .filter_map(|p| p["rrd"].as_str().map(str::to_string))
                .collect();
            (files.len() == ports).then_some(files)
        },
    )
}

/// The last update time of `file` (flushed through rrdcached when it runs), None before the
/// file exists.
fn last_update(rrd: &Rrdcached, file: &str) -> Option<u64> {
    rrd.path(file).is_file().then(|| rrd.rrd_lastupdate(file).0)
}

/// Waits until every file has a sample newer than `after`; returns each one's last update.
fn wait_samples_after(rrd: &Rrdcached, files: &[String], after: u64) -> BTreeMap<String, u64> {
    wait_until_every(
        FIRST_DATA_DEADLINE,
        Duration::from_secs(1),
        &format!("a sample newer than {after} in every port file"),
        || {
            files
                .iter()
                .map(|f| Some((f.clone(), last_update(rrd, f).filter(|t| *t > after)?)))
                .collect()
        },
    )
}

/// What `check_filled` found in one file.
#[derive(Debug)]
struct Filled {
    rows: usize,
    /// Rows in the tolerated gap that were unknown.
    gap_unknown: usize,
}

/// Checks the raw AVERAGE rows of `file` that lie wholly within `[from, to]` (sample times):
/// each must be known in every data source, except rows that overlap `gap` (a stretch with
/// no polls at all, e.g. a dead node). INOCTETS must show the agent's rate (1000/s) ±30%:
/// samples are stamped to the second, a 5 s step makes that ±20% per row.
fn check_filled(
    rrd: &Rrdcached,
    file: &str,
    from: u64,
    to: u64,
    gap: Option<(u64, u64)>,
) -> Filled {
    let first_row = from.div_ceil(FREQ) * FREQ + FREQ;
    let last_row = to / FREQ * FREQ;
    assert!(
        last_row > first_row,
        "{file}: window {from}..{to} holds no whole row"
    );
    let (names, rows) = rrd.rrd_fetch_named(file, "AVERAGE", first_row - FREQ, last_row);
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|(ts, _)| (first_row..=last_row).contains(ts))
        .collect();
    let want_rows = ((last_row - first_row) / FREQ + 1) as usize;
    assert_eq!(
        rows.len(),
        want_rows,
        "{file}: rows {first_row}..={last_row}: {rows:?}"
    );
    let in_octets = names
        .iter()
        .position(|n| n == "INOCTETS")
        .unwrap_or_else(|| panic!("{file}: no INOCTETS in {names:?}"));
    let mut gap_unknown = 0;
    for (ts, values) in &rows {
        let overlaps_gap = gap.is_some_and(|(a, b)| ts - FREQ < b && *ts > a);
        let unknown: Vec<&String> = names
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n)
            .collect();
        if !unknown.is_empty() {
            if overlaps_gap {
                gap_unknown += 1;
                continue;
            }
            panic!(
                "{file}: row {ts} (window {from}..{to}, gap {gap:?}) has unknown {unknown:?}; \
                 rows: {rows:?}"
            );
        }
        if let Some(rate) = values[in_octets] {
            assert!(
                (rate - 1000.0).abs() <= 300.0,
                "{file}: row {ts}: INOCTETS {rate}/s, the agent moves at 1000/s; rows: {rows:?}"
            );
        }
    }
    Filled {
        rows: rows.len(),
        gap_unknown,
    }
}

/// Lines of the node's log that report refused or duplicate RRD updates.
fn duplicate_update_lines(node: &RaftpollNode) -> Vec<String> {
    node.full_logs()
        .lines()
        .filter(|l| {
            l.contains("illegal attempt to update")
                || l.contains("minimum one second step")
                || l.contains("duplicate")
        })
        .map(str::to_string)
        .collect()
}

/// rrd section of the node's status: (connected, spool_records, dropped).
fn rrd_state(node: &RaftpollNode) -> Option<(bool, u64, u64)> {
    let s = try_status(node)?;
    let rrd = &s["rrd"];
    Some((
        rrd["connected"].as_bool()?,
        rrd["spool_records"].as_u64()?,
        rrd["dropped"].as_u64().unwrap_or(0),
    ))
}

/// Devices `0..n` of `agent`, added to `node` as `<prefix>-<i>`; returns (hostname, port files).
fn add_agent_devices(
    node: &RaftpollNode,
    agent: &RecordingAgent,
    prefix: &str,
    n: usize,
) -> Vec<(String, Vec<String>)> {
    let hosts: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for (i, h) in hosts.iter().enumerate() {
        add_device(node, h, agent.port(), &agent.community(i));
    }
    hosts
        .into_iter()
        .map(|h| {
            let files = port_files(node, &h, 2);
            (h, files)
        })
        .collect()
}

/// rrdcached stopped for over a minute while a node polls three devices every 5 s: the spool
/// grows and is visible in `status`; once rrdcached is back the spool drains and every step
/// of every port file over the whole stretch is filled, with no update refused.
#[test]
fn rrdcached_outage_of_a_minute_loses_no_sample() {
    let mut rrd = Rrdcached::start();
    let agent = RecordingAgent::start(3, "outage");
    let node = start_node("outage", &rrd.addr());
    let devices = add_agent_devices(&node, &agent, "out", 3);
    let files: Vec<String> = devices.iter().flat_map(|(_, f)| f.clone()).collect();

    // Every file has data before the outage: L0 is the last sample rrdcached took.
    wait_samples_after(&rrd, &files, now() - 2 * FREQ);
    let before = wait_samples_after(&rrd, &files, now());
    let t_stop = now();
    rrd.stop();
    let stopped = Instant::now();

    // The spool grows while rrdcached is away; the writer says it is not connected.
    let mut seen: Vec<(u64, bool, u64)> = Vec::new();
    wait_until_every(
        OUTAGE + Duration::from_secs(30),
        Duration::from_secs(2),
        "a minute of outage",
        || {
            if let Some((connected, records, _)) = rrd_state(&node) {
                seen.push((stopped.elapsed().as_secs(), connected, records));
            }
            (stopped.elapsed() >= OUTAGE).then_some(())
        },
    );
    let late: Vec<_> = seen.iter().filter(|(t, _, _)| *t >= 10).collect();
    assert!(
        !late.is_empty() && late.iter().all(|(_, c, r)| !c && *r > 0),
        "during the outage status must show connected=false and spool_records>0: {seen:?}"
    );
    let growth: Vec<u64> = late.iter().map(|(_, _, r)| *r).collect();
    assert!(
        growth.windows(2).all(|w| w[1] >= w[0]) && growth.last() > growth.first(),
        "spool_records must grow during the outage: {seen:?}"
    );
    // Polls went on: every device was polled in the last part of the outage.
    let list = try_list(&node).expect("device list during the outage");
    for (h, _) in &devices {
        let last = list[h]["last_polled"].as_u64().unwrap_or(0);
        assert!(
            last >= t_stop + OUTAGE.as_secs() - 3 * FREQ,
            "{h} not polled during the outage: {}",
            list[h]
        );
    }

    let t_back = now();
    rrd.start_again();
    let drained_in = Instant::now();
    wait_until_every(
        DRAIN_DEADLINE,
        CHECK_EVERY,
        "the spool to drain after rrdcached is back",
        || rrd_state(&node).filter(|(c, r, _)| *c && *r == 0),
    );
    let drained_in = drained_in.elapsed();
    let after = wait_samples_after(&rrd, &files, t_back + 2 * FREQ);
    rrd.flush_all();

    let (_, _, dropped) = rrd_state(&node).expect("status");
    for f in &files {
        let filled = check_filled(&rrd, f, before[f], after[f], None);
        assert!(
            filled.rows as u64 >= (after[f] - before[f]) / FREQ - 2,
            "{f}: {filled:?}"
        );
        eprintln!(
            "{f}: {} rows filled from {} to {} (outage {t_stop}..{t_back})",
            filled.rows, before[f], after[f]
        );
    }
    assert_eq!(
        dropped, 0,
        "the writer dropped updates (duplicate or stale)"
    );
    let dups = duplicate_update_lines(&node);
    assert!(
        dups.is_empty(),
        "refused RRD updates in the node log:\n{}",
        dups.join("\n")
    );
    eprintln!(
        "outage {}s, peak spool {} records, drained {drained_in:?} after rrdcached came back",
        t_back - t_stop,
        seen.iter().map(|s| s.2).max().unwrap_or(0)
    );
}

/// A node killed (SIGKILL) while rrdcached is away and its spool holds a minute of samples
/// finds them again when it restarts and writes them once rrdcached is back: no gap except
/// the few seconds the node was dead.
#[test]
fn killed_node_replays_its_spool_after_restart() {
    let mut rrd = Rrdcached::start();
    let agent = RecordingAgent::start(2, "replay");
    let mut node = start_node("replay", &rrd.addr());
    let devices = add_agent_devices(&node, &agent, "rep", 2);
    let files: Vec<String> = devices.iter().flat_map(|(_, f)| f.clone()).collect();

    wait_samples_after(&rrd, &files, now() - 2 * FREQ);
    let before = wait_samples_after(&rrd, &files, now());
    rrd.stop();
    let stopped = Instant::now();
    // A minute of samples in the spool only.
    let spooled = wait_until_every(
        OUTAGE + Duration::from_secs(30),
        Duration::from_secs(2),
        "a minute of spooled samples",
        || {
            let (connected, records, _) = rrd_state(&node)?;
            (stopped.elapsed() >= OUTAGE && !connected && records > 0).then_some(records)
        },
    );
    let t_kill = now();
    node.kill9();

    // Restarted while rrdcached is still away: the spool is found again.
    node.start_again();
    node.wait_leader(LEADER_DEADLINE);
    let t_restart = now();
    let recovered = wait_until_every(
        Duration::from_secs(20),
        CHECK_EVERY,
        "the restarted node to report its spool",
        || rrd_state(&node).map(|(_, r, _)| r).filter(|r| *r > 0),
    );
    // What was spooled before the kill, minus at most the updates of the last round that
    // were still in memory.
    assert!(
        recovered + 8 * devices.len() as u64 >= spooled,
        "spool after restart holds {recovered} records, {spooled} before the kill"
    );

    let t_back = now();
    rrd.start_again();
    wait_until_every(
        DRAIN_DEADLINE,
        CHECK_EVERY,
        "the replayed spool to drain",
        || rrd_state(&node).filter(|(c, r, _)| *c && *r == 0),
    );
    let after = wait_samples_after(&rrd, &files, t_back + 2 * FREQ);
    rrd.flush_all();

    // No poll happened from the kill until the node's first poll after the restart.
    let first_poll_after = |community: &str| {
        agent
            .requests()
            .into_iter()
            .find(|r| r.community == community && r.at_ms > t_restart * 1000)
            .map(|r| r.at_ms / 1000 + 1)
            .unwrap_or(t_back)
    };
    for (i, (h, host_files)) in devices.iter().enumerate() {
        let gap = (t_kill - 2 * FREQ, first_poll_after(&agent.community(i)));
        for f in host_files {
            let filled = check_filled(&rrd, f, before[f], after[f], Some(gap));
            eprintln!(
                "{h} {f}: {} rows from {} to {}, {} unknown while the node was dead {gap:?}",
                filled.rows, before[f], after[f], filled.gap_unknown
            );
        }
    }
    let (_, _, dropped) = rrd_state(&node).expect("status");
    assert_eq!(
        dropped, 0,
        "the writer dropped updates (duplicate or stale)"
    );
    let dups = duplicate_update_lines(&node);
    assert!(
        dups.is_empty(),
        "refused RRD updates in the node log:\n{}",
        dups.join("\n")
    );
    eprintln!("spooled {spooled} before the kill at {t_kill}, {recovered} found after restart");
}

/// A client adds 200 devices one by one through the CLI; the node is SIGKILLed in the middle.
/// After a restart every add that was acknowledged is there.
#[test]
fn acknowledged_adds_survive_kill9_mid_burst() {
    const ADDS: usize = 200;
    // Nothing listens there: the devices go down quickly; only the adds matter here.
    let dead_agent = free_udp_port().to_string();
    let mut node = start_node("burst", "127.0.0.1:9");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = node.addr();
    let client = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for i in 0..ADDS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let host = format!("burst-{i:03}");
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftpoll"))
                    .args(["device", "add", &host, "--ip", "127.0.0.1", "--port"])
                    .arg(&dead_agent)
                    .args(["--community", "c", "--addr", &addr, "--secret"])
                    .arg(testbed::TEST_SECRET)
                    .env_remove("RAFTPOLL_ADDR")
                    .env_remove("RAFTPOLL_SECRET")
                    .output()
                    .expect("run raftpoll CLI");
                if out.status.success() {
                    acked.lock().expect("acked list").push(host);
                }
            }
        })
    };
    // Kill somewhere in the middle of the burst.
    wait_until_every(
        Duration::from_secs(60),
        Duration::from_millis(5),
        "60 acknowledged adds",
        || (acked.lock().expect("acked list").len() >= 60).then_some(()),
    );
    node.kill9();
    let killed_after = acked.lock().expect("acked list").len();
    stop.store(true, Ordering::SeqCst);
    client.join().expect("client thread");
    let acked = acked.lock().expect("acked list").clone();

    node.start_again();
    node.wait_leader(LEADER_DEADLINE);
    let list = wait_until_every(
        Duration::from_secs(20),
        CHECK_EVERY,
        "device list after restart",
        || try_list(&node),
    );
    let missing: Vec<&String> = acked.iter().filter(|h| !list.contains_key(*h)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged adds lost by kill -9: {missing:?}",
        missing.len(),
        acked.len()
    );
    eprintln!(
        "{} adds acknowledged ({killed_after} when the kill was sent), {} devices after restart",
        acked.len(),
        list.len()
    );
}

/// Devices whose agents never answer, answer late, answer with genErr, send garbage,
/// truncated BER or a wrong request-id, next to a healthy one on the same node: each bad one
/// is down with a readable reason (or up, for the late one), and the healthy one is polled
/// every interval throughout.
#[test]
fn misbehaving_agents_go_down_with_a_reason_and_others_keep_their_schedule() {
    // (device index, raftpoll-sim mode, what the reason must mention; None: must stay up)
    let cases: [(usize, &str, Option<&str>); 7] = [
        (1, "silent", Some("no response")),
        (2, "slow:300", None),
        (7, "slow:900", Some("budget")),
        (3, "error-status", Some("genErr")),
        (4, "garbage", Some("no response")),
        (5, "truncated", Some("no response")),
        (6, "wrong-reqid", Some("no response")),
    ];
    let modes: Vec<(usize, &str)> = cases.iter().map(|(i, m, _)| (*i, *m)).collect();
    let agent = RecordingAgent::start_misbehaving(8, "mb", &modes);
    let rrd = Rrdcached::start();
    let node = start_node("misbehave", &rrd.addr());
    let host = |i: usize| format!("mb-{i}");
    for i in 0..8 {
        add_device(&node, &host(i), agent.port(), &agent.community(i));
    }

    // Every device reaches its expected state.
    let settled = wait_until_every(
        Duration::from_secs(60),
        CHECK_EVERY,
        "every device up or down as expected",
        || {
            let list = try_list(&node)?;
            let status = |i: usize| list.get(&host(i))?["status"].as_str().map(str::to_string);
            let ok = status(0)? == "up"
                && cases.iter().all(|(i, _, want)| {
                    status(*i).as_deref() == Some(if want.is_some() { "down" } else { "up" })
                });
            ok.then_some(list)
        },
    );
    for (i, mode, want) in cases {
        let show = node.cli_json(&["device", "show", &host(i), "--json"]);
        let reason = show["reason"].as_str().unwrap_or("").to_string();
        eprintln!(
            "{mode}: {} reason={reason:?} last_poll_ms={}",
            show["status"], show["last_poll_ms"]
        );
        match want {
            Some(word) => {
                assert!(
                    reason.contains(word),
                    "{mode}: reason {reason:?} should mention {word:?}: {show}"
                );
                assert!(
                    reason.chars().all(|c| !c.is_control()) && reason.len() < 300,
                    "{mode}: unreadable reason {reason:?}"
                );
                assert!(
                    !reason.contains(&agent.community(i)),
                    "{mode}: the reason shows the community"
                );
            }
            None => assert!(reason.is_empty(), "{mode}: up with reason {reason:?}"),
        }
    }
    let _ = settled;

    // The healthy device keeps its schedule for six more intervals while the others fail.
    let watch_from = unix_ms();
    let mut polled: Vec<u64> = Vec::new();
    // (status, last_polled, last_poll_ms) of the slow:300 device.
    let mut slow: Vec<(String, u64, u64)> = Vec::new();
    wait_until_every(
        Duration::from_secs(6 * FREQ + 10),
        Duration::from_secs(1),
        "six intervals of polls of the healthy device",
        || {
            let list = try_list(&node);
            let device = |i: usize| list.as_ref().and_then(|l| l.get(&host(i)).cloned());
            // Polls that began in the window (the first poll after discovery may realign
            // the device to its slot, up to 1.5 intervals later, before it).
            if let Some(t) = device(0).and_then(|d| d["last_polled"].as_u64())
                && t * 1000 >= watch_from
                && polled.last() != Some(&t)
            {
                polled.push(t);
            }
            if let Some(d) = device(2) {
                slow.push((
                    d["status"].as_str().unwrap_or("?").to_string(),
                    d["last_polled"].as_u64().unwrap_or(0),
                    d["last_poll_ms"].as_u64().unwrap_or(0),
                ));
            }
            (unix_ms() >= watch_from + 6 * FREQ * 1000).then_some(())
        },
    );
    assert!(
        polled.len() >= 5,
        "healthy device polled {} times in 6 intervals: {polled:?}",
        polled.len()
    );
    assert!(
        polled.windows(2).all(|w| w[1] - w[0] <= FREQ + 1),
        "healthy device missed its schedule: last_polled {polled:?}"
    );
    slow.dedup();
    eprintln!("slow:300 device over six intervals: {slow:?}");
    assert!(
        slow.iter().all(|(status, _, _)| status == "up"),
        "the slow:300 device must stay up: {slow:?}"
    );
    // The agent's view: one burst of requests per interval, none further apart.
    let requests: Vec<_> = agent
        .requests()
        .into_iter()
        .filter(|r| r.at_ms >= watch_from)
        .collect();
    let polls = group_polls(&requests, 1000);
    let starts: Vec<u64> = polls[&agent.community(0)]
        .iter()
        .map(|p| p.start_ms)
        .collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] <= FREQ * 1000 + 1500),
        "healthy device's polls as the agent saw them: {starts:?}"
    );
    // The misbehaving ones were tried again all along (down devices retry every 5 s).
    for (i, mode, want) in cases {
        if want.is_some() && mode != "silent" {
            let n = polls.get(&agent.community(i)).map_or(0, Vec::len);
            assert!(n >= 3, "{mode}: only {n} tries in 6 intervals");
        }
    }
}
