//! Scale on one node: N simulated switches (about 30 ports each) polled at a fixed
//! interval; CPU, memory and whether every device was polled in every interval.

use super::harness::{
    self, Node, Running as _, Table, dir_size, machine, wait_for, write_switch_recording,
};
use super::rrd_sink::RrdSink;
use super::{BenchError, Workdir};
use raftpoll_testbed::sim::SimBuilder;
use raftpoll_testbed::{LibrenmsLink, MariaDb};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// Device counts to run, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    pub devices: Vec<usize>,
    /// Ports per simulated switch.
    #[arg(long, default_value_t = 30)]
    pub ports: u32,
    /// Poll interval, seconds.
    #[arg(long, default_value_t = 300)]
    pub interval: u32,
    /// Intervals measured after every device has been polled once.
    #[arg(long, default_value_t = 2)]
    pub intervals: u32,
    /// Start every poll with an ICMP check (`poller.icmp`), as LibreNMS does.
    #[arg(long)]
    pub icmp: bool,
    /// After the measured intervals, SIGKILL the node, start it again on its full data
    /// directory and measure one more interval: the restarted process's peak RSS and the
    /// missed intervals across the restart (issue 12, goal 2).
    #[arg(long)]
    pub restart: bool,
    /// Peak RSS allowed, MiB, before and after the restart (issue 12, goal 2: 200 at 20,000
    /// devices).
    #[arg(long, default_value_t = 200.0)]
    pub max_rss_mib: f64,
    /// Keep configs, logs and data here (default: a temp dir, removed at the end).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

/// Where the node's devices come from.
#[derive(Clone, Copy)]
pub enum Inventory<'a> {
    /// `raftpoll device import` of a CSV file.
    Import,
    /// LibreNMS's `devices` table in this database; the node writes its polls back.
    Librenms(&'a MariaDb, &'a LibrenmsLink),
}

/// What one run measured.
pub struct Outcome {
    pub devices: usize,
    pub add_s: f64,
    pub first_polls_s: f64,
    pub polls: usize,
    pub updates_per_s: f64,
    pub cpu_pct: f64,
    pub cpu_ms_per_poll: f64,
    pub peak_rss_mib: f64,
    pub missed: usize,
    pub max_gap_s: f64,
    pub data_mib: f64,
    /// With [`Inventory::Librenms`]: the database server's CPU in the window, % of one core.
    pub db_cpu_pct: Option<f64>,
    /// With [`Inventory::Librenms`]: devices whose `last_polled` moved in the window, and
    /// `ports` rows whose `poll_time` did.
    pub written_back: Option<(usize, usize)>,
    /// The node's CPU in the window by [`harness::NODE_PARTS`], then the rest
    /// (threads that ended or belong to no part); % of one core.
    pub parts_pct: Vec<f64>,
    /// With `--restart`: what the restarted node did.
    pub restart: Option<Restart>,
}

/// The node SIGKILLed after the measured intervals and started again on its data
/// directory, measured over one interval from its start.
pub struct Restart {
    /// From the start to the node answering status, s.
    pub up_s: f64,
    /// The restarted process's peak RSS.
    pub peak_rss_mib: f64,
    /// Missed intervals from one interval before the kill to one interval after the start.
    pub missed: usize,
    pub max_gap_s: f64,
}

impl Outcome {
    /// Whether the run meets `max_rss_mib` and missed no interval, restart included.
    pub fn passes(&self, max_rss_mib: f64) -> bool {
        self.peak_rss_mib <= max_rss_mib
            && self.missed == 0
            && self
                .restart
                .as_ref()
                .is_none_or(|r| r.peak_rss_mib <= max_rss_mib && r.missed == 0)
    }
}

/// A node's CPU split as one cell: "Raft / polling / RRD writer / LibreNMS
/// link / other", % of one core each.
pub fn split_cell(parts_pct: &[f64]) -> String {
    parts_pct
        .iter()
        .map(|p| format!("{p:.1}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The header of [`split_cell`]'s column.
pub fn split_header() -> String {
    let mut names: Vec<&str> = harness::NODE_PARTS.to_vec();
    names.push("other");
    format!("CPU % by part ({})", names.join(" / "))
}

pub fn run(args: &ScaleArgs) -> Result<String, BenchError> {
    if args.interval < 10 || args.intervals == 0 || args.ports == 0 {
        return Err(BenchError::Setup(
            "--interval must be at least 10 s, --intervals and --ports at least 1".into(),
        ));
    }
    let work = Workdir::new(args.workdir.as_deref(), "raftpoll-bench-scale-")?;
    let mut outcomes = Vec::new();
    for &n in &args.devices {
        eprintln!(
            "scale: {n} devices × {} ports, interval {} s",
            args.ports, args.interval
        );
        outcomes.push(run_one(args, n, &work, Inventory::Import)?);
    }
    let split = split_header();
    let mut headers = vec![
        "devices",
        "ports/device",
        "add (s)",
        "all polled once (s)",
        "polls measured",
        "RRD updates/s",
        "CPU % of one core",
        "CPU ms per device-poll",
        "peak RSS MiB",
        "missed intervals",
        "longest gap (s)",
        "data dir MiB",
        &split,
    ];
    if args.restart {
        headers.extend([
            "restart: up (s)",
            "restart: peak RSS MiB",
            "restart: missed intervals",
            "restart: longest gap (s)",
        ]);
    }
    let mut table = Table::new(&headers);
    for o in &outcomes {
        let mut row = vec![
            o.devices.to_string(),
            args.ports.to_string(),
            format!("{:.1}", o.add_s),
            format!("{:.0}", o.first_polls_s),
            o.polls.to_string(),
            format!("{:.0}", o.updates_per_s),
            format!("{:.1}", o.cpu_pct),
            format!("{:.2}", o.cpu_ms_per_poll),
            format!("{:.0}", o.peak_rss_mib),
            o.missed.to_string(),
            format!("{:.1}", o.max_gap_s),
            format!("{:.1}", o.data_mib),
            split_cell(&o.parts_pct),
        ];
        if let Some(r) = &o.restart {
            row.extend([
                format!("{:.1}", r.up_s),
                format!("{:.0}", r.peak_rss_mib),
                r.missed.to_string(),
                format!("{:.1}", r.max_gap_s),
            ]);
        }
        table.row(row);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scale on one node: interval {} s, {} intervals measured after every device was polled once; {}\n",
        args.interval,
        args.intervals,
        machine()
    );
    out.push_str(&table.markdown());
    for o in &outcomes {
        let _ = writeln!(
            out,
            "\n{} devices: peak RSS ≤ {} MiB and no missed interval{}: {}",
            o.devices,
            args.max_rss_mib,
            if args.restart {
                ", before and after a restart"
            } else {
                ""
            },
            if o.passes(args.max_rss_mib) {
                "PASS"
            } else {
                "FAIL"
            }
        );
    }
    Ok(out)
}

/// Now, in Unix seconds (the sink records polls so).
pub fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One node, `n` devices: add them, wait until each was polled once, then measure
/// `args.intervals` intervals.
pub fn run_one(
    args: &ScaleArgs,
    n: usize,
    work: &Workdir,
    inventory: Inventory,
) -> Result<Outcome, BenchError> {
    let dir = work.path().join(match inventory {
        Inventory::Import => format!("scale-{n}"),
        Inventory::Librenms(..) => format!("scale-{n}-librenms"),
    });
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
    let recording = dir.join("switch.snmprec");
    write_switch_recording(&recording, args.ports)?;
    let sim = SimBuilder::new()
        .devices(n, "dev")
        .recording(&recording)
        .log_dir(&dir)
        .start();
    let sink = RrdSink::start()?;
    let poller = format!(
        "frequency = {}\ndiscovery_frequency = 86400\ntimeout_ms = 2000\nretries = 1\nicmp = {}",
        args.interval, args.icmp
    );
    let extra = match inventory {
        Inventory::Import => String::new(),
        Inventory::Librenms(_, link) => {
            let mut top = toml::Table::new();
            top.insert("librenms".into(), toml::Value::Table(link.table()));
            toml::to_string(&top).map_err(|e| BenchError::Setup(e.to_string()))?
        }
    };
    let mut node = Node::start(&dir, "node1", &sink.addr.to_string(), &poller, &extra)?;

    let started = Instant::now();
    match inventory {
        Inventory::Import => import_devices(&node, &dir, n, &[sim.port()])?,
        Inventory::Librenms(db, _) => insert_devices(db, n, sim.port()),
    }
    let add_s = started.elapsed().as_secs_f64();

    let interval = f64::from(args.interval);
    let polled_once = wait_polled_once(&sink, n, args.interval);
    let first_polls_s = started.elapsed().as_secs_f64();
    if let Err(e) = polled_once {
        let polled = sink.with(|c| c.polls.len());
        return Err(BenchError::Setup(format!(
            "{e}: {polled} of {n} devices polled; see {}",
            dir.display()
        )));
    }

    eprintln!(
        "scale: {n} devices added in {add_s:.1} s, all polled once after {first_polls_s:.0} s; measuring {} s",
        u64::from(args.interval) * u64::from(args.intervals)
    );
    let window_start = unix_s();
    let u0 = node.proc.usage()?;
    let db_usage = |db: &MariaDb| {
        db.pid()
            .ok_or_else(|| BenchError::Setup("mariadbd is not running".into()))
            .and_then(harness::Usage::of)
    };
    let db0 = match inventory {
        Inventory::Librenms(db, _) => Some(db_usage(db)?),
        Inventory::Import => None,
    };
    let updates0 = sink.with(|c| c.updates);
    let measured = Duration::from_secs(u64::from(args.interval) * u64::from(args.intervals));
    run_until(
        &mut node,
        Instant::now() + measured,
        "the node exited during the run",
    )?;
    let u1 = node.proc.usage()?;
    let window_end = unix_s();
    let (db_cpu_pct, written_back) = match (inventory, db0) {
        (Inventory::Librenms(db, _), Some(db0)) => {
            let db1 = db_usage(db)?;
            // Results reach the database up to a flush after their poll.
            let since = window_start as u64;
            let count = |sql: String| -> usize {
                db.sql(&sql)
                    .first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let written = || {
                (
                    count(format!(
                        "SELECT COUNT(*) FROM devices WHERE last_polled >= FROM_UNIXTIME({since})"
                    )),
                    count(format!(
                        "SELECT COUNT(*) FROM ports WHERE poll_time >= {since}"
                    )),
                )
            };
            // The polls at the end of the window wait for the next flush.
            let all = (n, n * args.ports as usize);
            let _ = wait_for(Duration::from_secs(30), "the last write-back", || {
                (written() == all).then_some(())
            });
            let (devices, ports) = written();
            (
                Some(100.0 * (db1.cpu_s - db0.cpu_s) / (window_end - window_start)),
                Some((devices, ports)),
            )
        }
        _ => (None, None),
    };
    let wall = window_end - window_start;
    let updates = sink.with(|c| c.updates) - updates0;

    let (polls, missed, max_gap) =
        sink.with(|c| poll_gaps(&c.polls, window_start, window_end, interval));
    let cpu = u1.cpu_s - u0.cpu_s;
    let data_mib = dir_size(&node.dir.join("data")) as f64 / 1048576.0;
    let restart = if args.restart {
        Some(restart_node(&mut node, &sink, interval)?)
    } else {
        None
    };
    node.proc.terminate(Duration::from_secs(10));
    drop(sim);
    Ok(Outcome {
        devices: n,
        add_s,
        first_polls_s,
        polls,
        updates_per_s: updates as f64 / wall,
        cpu_pct: 100.0 * cpu / wall,
        cpu_ms_per_poll: if polls > 0 {
            1000.0 * cpu / polls as f64
        } else {
            0.0
        },
        peak_rss_mib: u1.peak_rss_kib as f64 / 1024.0,
        missed,
        max_gap_s: max_gap,
        data_mib,
        db_cpu_pct,
        written_back,
        parts_pct: u0
            .parts_since(&u1)
            .iter()
            .map(|cpu| 100.0 * cpu / wall)
            .collect(),
        restart,
    })
}

/// Waits until `end`, checking every second that `node` still runs; if it
/// stopped, the error says `exited` and where its log is.
fn run_until(node: &mut Node, end: Instant, exited: &str) -> Result<(), BenchError> {
    while Instant::now() < end {
        if !node.proc.is_running() {
            return Err(BenchError::Setup(format!(
                "{exited}; see {}",
                node.log().display()
            )));
        }
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
    }
    Ok(())
}

/// SIGKILLs `node`, starts it again on its data directory at once and measures one interval
/// from the start (see [`Restart`]).
fn restart_node(node: &mut Node, sink: &RrdSink, interval: f64) -> Result<Restart, BenchError> {
    eprintln!("scale: SIGKILL and restart of the node");
    let killed_at = unix_s();
    node.proc.kill9();
    let started = Instant::now();
    node.proc.start_again();
    wait_for(
        Duration::from_secs(60),
        "the restarted node to answer status",
        || node.cli(&["status", "--json"]).ok(),
    )?;
    let up_s = started.elapsed().as_secs_f64();
    run_until(
        node,
        started + Duration::from_secs_f64(interval),
        "the restarted node exited",
    )?;
    let usage = node.proc.usage()?;
    let (_, missed, max_gap_s) = sink.with(|c| poll_gaps(&c.polls, killed_at, unix_s(), interval));
    Ok(Restart {
        up_s,
        peak_rss_mib: usage.peak_rss_kib as f64 / 1024.0,
        missed,
        max_gap_s,
    })
}

/// `raftpoll device import` through `node` of `n` devices named `sw00000`… with the
/// simulator's communities `dev<i>`, spread over its UDP `ports` as it serves them.
pub fn import_devices(node: &Node, dir: &Path, n: usize, ports: &[u16]) -> Result<(), BenchError> {
    let csv = dir.join("devices.csv");
    let mut text = String::from("hostname,address,port,community\n");
    for i in 0..n {
        let _ = writeln!(text, "sw{i:05},127.0.0.1,{},dev{i}", ports[i % ports.len()]);
    }
    std::fs::write(&csv, text).map_err(|e| BenchError::io("write", &csv, e))?;
    node.cli(&["device", "import", &csv.display().to_string()])?;
    Ok(())
}

/// Waits until the sink has seen a poll of each of `n` devices: new devices are first polled
/// in their own slot of the coming interval, so two intervals (and 2 minutes) are plenty.
pub fn wait_polled_once(sink: &RrdSink, n: usize, interval: u32) -> Result<(), BenchError> {
    wait_for(
        Duration::from_secs(u64::from(interval) * 2 + 120),
        "every device to be polled once",
        || (sink.with(|c| c.polls.len()) >= n).then_some(()),
    )
}

/// Polls in the window `[window_start, window_end]` (Unix seconds), missed intervals and the
/// longest gap (s). Every device must have been polled in every interval: a gap between
/// consecutive polls (or to the end of the window) above 1.5 intervals counts as missed.
pub fn poll_gaps(
    polls_by_device: &HashMap<String, Vec<f64>>,
    window_start: f64,
    window_end: f64,
    interval: f64,
) -> (usize, usize, f64) {
    let mut polls = 0;
    let mut missed = 0;
    let mut max_gap: f64 = 0.0;
    for times in polls_by_device.values() {
        let mut last = None;
        for &t in times {
            if t >= window_start {
                polls += 1;
            }
            if let Some(prev) = last
                && t >= window_start - interval
            {
                let gap: f64 = t - prev;
                max_gap = max_gap.max(gap);
                if gap > 1.5 * interval {
                    missed += ((gap / interval).round() as usize).saturating_sub(1).max(1);
                }
            }
            last = Some(t);
        }
        let tail = window_end - last.unwrap_or(window_start);
        if tail > 1.5 * interval {
            missed += 1;
            max_gap = max_gap.max(tail);
        }
    }
    (polls, missed, max_gap)
}

/// Inserts `n` SNMPv2c rows into LibreNMS's `devices`, named and addressed as the CSV
/// import names them, a few thousand rows per statement.
fn insert_devices(db: &MariaDb, n: usize, port: u16) {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("('sw{i:05}', '127.0.0.1', 'dev{i}', {port}, 'v2c', 'udp', 0, 0, '')"))
        .collect();
    for chunk in rows.chunks(5000) {
        db.exec(&format!(
            "INSERT INTO devices (hostname, overwrite_ip, community, port, snmpver, transport, \
             snmp_disable, status, status_reason) VALUES {};",
            chunk.join(", ")
        ));
    }
}
