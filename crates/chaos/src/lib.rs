//! `raftpoll-chaos`: runs a real local cluster (node processes, rrdcached, a
//! recording SNMP agent) in private network namespaces, injects seeded faults
//! (SIGKILL, SIGTERM, SIGSTOP/SIGCONT, network partitions) with at most a
//! minority faulty at a time, and checks the invariants from what the agent
//! saw. See docs/chaos.md.

pub mod analysis;
pub mod net;

use analysis::{Convergence, Fault, FaultKind, Inputs, Report, RunMeta};
use net::{HUB_SERVICE_IP, Net, cluster_ip, service_ip};
use raftpoll_testbed::raftpoll::{NodeConfig, NodeOptions, RaftpollNode, node_log_path, run_cli};
use raftpoll_testbed::rrdcached::{Rrdcached, RrdcachedOptions};
use raftpoll_testbed::sim::{SimAgent, SimBuilder};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The agent's recording: counters moving at known rates (crates/testbed/recordings).
const RECORDING: &str = include_str!("../../testbed/recordings/moving.snmprec");
const NODE_PORT: u16 = 7000;
const AGENT_PORT: u16 = 16100;
const RRDCACHED_PORT: u16 = 42217;
/// The node's default log filter when RUST_LOG is unset (crates/raftpoll/src/node.rs).
const PRODUCT_LOG_FILTER: &str = "info,openraft=warn,sled=warn,h2=warn,tower=warn,async_snmp=off";
/// One CLI call (status, device list) may take this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// The cluster must be healthy again this long after a fault is undone.
const HEAL_DEADLINE: Duration = Duration::from_secs(60);
/// Convergence at the end must happen within this.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Number of node processes (3 or more; at most a minority is faulty at a time).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Inject faults for this long (`90s`, `10m`, `1h`).
    #[arg(long, value_parser = parse_duration, conflicts_with = "rounds")]
    pub duration: Option<Duration>,
    /// Inject this many rounds of faults (default 20 when --duration is not given).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seed of the fault schedule: the same seed injects the same faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Poll frequency of the nodes, seconds.
    #[arg(long, default_value_t = 3)]
    pub frequency: u32,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 30)]
    pub devices: usize,
    /// Slack on top of 2 × frequency before a gap between polls counts as a missed interval, ms.
    #[arg(long, default_value_t = 1000)]
    pub tolerance_ms: u64,
    /// Fault kinds to inject, comma-separated (kill, term, pause, partition).
    #[arg(long, value_delimiter = ',', value_parser = parse_fault, default_value = "kill,term,pause,partition")]
    pub faults: Vec<FaultKind>,
    /// Most nodes faulty at once (default and upper bound: a minority).
    #[arg(long)]
    pub at_once: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep configs, logs, the agent's record and the report here (default: a temp
    /// directory, removed when the run passes).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// `[cluster] heartbeat_ms` of every node (default: the node's own default), to
    /// measure failover at another heartbeat without a rebuild.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
}

fn parse_fault(s: &str) -> Result<FaultKind, String> {
    FaultKind::ALL
        .into_iter()
        .find(|k| k.name() == s.trim())
        .ok_or_else(|| format!("unknown fault '{s}': expected kill, term, pause or partition"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}': expected a number and a unit, e.g. 120s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("'{s}': unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("{0}")]
    Setup(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("the chaos run found {0} violation(s)")]
    Violations(usize),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ChaosError {
    let path = path.to_path_buf();
    move |source| ChaosError::Io { what, path, source }
}

/// `raftpoll chaos`: runs, prints the report (text or JSON) and fails on any
/// violation.
pub async fn main(args: ChaosArgs) -> Result<(), ChaosError> {
    let json = args.json;
    let report = run(args).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.text());
    }
    if report.passed {
        Ok(())
    } else {
        Err(ChaosError::Violations(report.violations))
    }
}

/// Runs the whole chaos session; Ctrl-C or SIGTERM stops it and cleans up
/// (processes, namespaces).
pub async fn run(args: ChaosArgs) -> Result<Report, ChaosError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut task = tokio::task::spawn_blocking(move || Session::run(args, flag));
    tokio::select! {
        r = &mut task => r.map_err(|e| ChaosError::Setup(format!("chaos task: {e}")))?,
        _ = interrupted() => {
            eprintln!("chaos: interrupted, cleaning up");
            stop.store(true, Ordering::SeqCst);
            let _ = task.await;
            Err(ChaosError::Interrupted)
        }
    }
}

async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[derive(Default)]
struct NodeSlot {
    proc: Option<RaftpollNode>,
    paused: bool,
    cut: bool,
}

/// Pre-fault knowledge: cluster ids by node index, the leader, device owners.
struct Snapshot {
    ids: BTreeMap<usize, u64>,
    leader: Option<usize>,
    owners: BTreeMap<String, Option<u64>>,
}

/// One chaos session. Field order is drop order: processes go before the
/// namespaces they live in.
struct Session {
    nodes: Vec<NodeSlot>,
    agent: Option<SimAgent>,
    rrdcached: Option<Rrdcached>,
    net: Net,
    args: ChaosArgs,
    stop: Arc<AtomicBool>,
    dir: PathBuf,
    secret: String,
    started: Instant,
    started_ms: u64,
}

impl Session {
    fn run(args: ChaosArgs, stop: Arc<AtomicBool>) -> Result<Report, ChaosError> {
        if args.nodes < 3 || args.nodes > net::MAX_NODES {
            return Err(ChaosError::Setup(format!(
                "--nodes must be from 3 to {}",
                net::MAX_NODES
            )));
        }
        if args.faults.is_empty() {
            return Err(ChaosError::Setup(
                "--faults must name at least one fault".into(),
            ));
        }
        if args.devices == 0 || args.frequency < 2 {
            return Err(ChaosError::Setup(
                "--devices must be positive and --frequency at least 2".into(),
            ));
        }
        let (dir, temp) = match &args.workdir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!("raftpoll-chaos-{}", std::process::id())),
                true,
            ),
        };
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let net = Net::create(args.nodes)?;
        let mut session = Session {
            nodes: (0..args.nodes).map(|_| NodeSlot::default()).collect(),
            agent: None,
            rrdcached: None,
            net,
            secret: format!("chaos-{}-{}", args.seed, std::process::id()),
            args,
            stop,
            dir: dir.clone(),
            started: Instant::now(),
            started_ms: unix_ms(),
        };
        let report = session.execute();
        drop(session);
        if let Ok(r) = &report {
            let path = dir.join("report.json");
            let _ = fs::write(&path, serde_json::to_string_pretty(r).unwrap_or_default());
            if temp && r.passed {
                let _ = fs::remove_dir_all(&dir);
            } else {
                eprintln!("chaos: files kept in {}", dir.display());
            }
        } else {
            eprintln!("chaos: files kept in {}", dir.display());
        }
        report
    }

    fn say(&self, msg: impl AsRef<str>) {
        eprintln!(
            "[{:>7.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    /// Sleeps, but returns early with `Interrupted` on Ctrl-C.
    fn sleep(&self, d: Duration) -> Result<(), ChaosError> {
        let until = Instant::now() + d;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(ChaosError::Interrupted);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    fn execute(&mut self) -> Result<Report, ChaosError> {
        self.start_rrdcached()?;
        self.start_agent()?;
        self.start_cluster()?;
        self.add_devices()?;
        self.wait_all_polled()?;
        let mut rng = StdRng::seed_from_u64(self.args.seed);
        let (faults, unhealed) = self.inject_faults(&mut rng)?;
        let last_heal = Instant::now();
        let mut convergence = self.converge()?;
        convergence.settled_ms = convergence
            .converged
            .then(|| last_heal.elapsed().as_millis() as u64);
        // Two more intervals so the gap check sees the cluster after it settled.
        self.sleep(Duration::from_secs(2 * u64::from(self.args.frequency)))?;
        let end_ms = unix_ms();
        let requests = self.stop_agent()?;
        self.say(format!("stopping; analysing {} requests", requests.len()));
        let sources: BTreeMap<IpAddr, usize> = (1..=self.args.nodes)
            .map(|i| (IpAddr::V4(service_ip(i)), i))
            .collect();
        let hostnames: BTreeMap<String, String> = (0..self.args.devices)
            .map(|i| (community(i), hostname(i)))
            .collect();
        let polls = analysis::analyze(
            &requests,
            &Inputs {
                frequency_ms: u64::from(self.args.frequency) * 1000,
                tolerance_ms: self.args.tolerance_ms,
                end_ms,
                sources: &sources,
                hostnames: &hostnames,
                faults: &faults,
            },
        );
        Ok(Report::new(
            RunMeta {
                seed: self.args.seed,
                nodes: self.args.nodes,
                devices: self.args.devices,
                frequency_s: self.args.frequency,
                started_ms: self.started_ms,
                duration_ms: end_ms.saturating_sub(self.started_ms),
            },
            unhealed,
            polls,
            convergence,
        ))
    }

    /// `ip netns exec NS`: every process of the run starts in a namespace.
    fn in_ns(ns: String) -> [String; 4] {
        ["ip".into(), "netns".into(), "exec".into(), ns]
    }

    fn start_rrdcached(&mut self) -> Result<(), ChaosError> {
        // Panics with rrdcached's logs if it cannot start: set-up failures end the run.
        let rrd = RrdcachedOptions::new()
            .listen(SocketAddr::from((HUB_SERVICE_IP, RRDCACHED_PORT)))
            .dir(&self.dir)
            .wrapper(Self::in_ns(self.net.hub()))
            .start();
        self.rrdcached = Some(rrd);
        Ok(())
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("agent-requests.log")
    }

    fn start_agent(&mut self) -> Result<(), ChaosError> {
        let recording = self.dir.join("agent.snmprec");
        fs::write(&recording, RECORDING).map_err(io_err("cannot write", &recording))?;
        // The analysis reads this run's requests only.
        let _ = fs::remove_file(self.record_path());
        let agent = SimBuilder::new()
            .listen(format!("{HUB_SERVICE_IP}:{AGENT_PORT}"))
            .devices(self.args.devices, COMMUNITY_PREFIX)
            .recording(&recording)
            .record(self.record_path())
            .wrapper(Self::in_ns(self.net.hub()))
            .log_dir(&self.dir)
            .start();
        self.agent = Some(agent);
        Ok(())
    }

    fn node_config(&self, i: usize) -> String {
        let seeds: Vec<String> = (1..=self.args.nodes)
            .map(|j| format!("\"{}:{NODE_PORT}\"", cluster_ip(j)))
            .collect();
        let f = self.args.frequency;
        format!(
            "node_name = \"n{i}\"\n\
             data_dir = \"{data}\"\n\
             listen = \"0.0.0.0:{NODE_PORT}\"\n\
             advertise = \"{adv}:{NODE_PORT}\"\n\
             seeds = [{seeds}]\n\
             bootstrap = {bootstrap}\n\
             secret = \"{secret}\"\n\
             [poller]\n\
             frequency = {f}\n\
             down_retry = {f}\n\
             timeout_ms = {timeout}\n\
             retries = 1\n\
             source_ip = \"{src}\"\n\
             [rrd]\n\
             rrdcached = \"{HUB_SERVICE_IP}:{RRDCACHED_PORT}\"\n\
             [cluster]\n\
             join_debounce_ms = 2000\n{heartbeat}",
            data = self.dir.join(format!("n{i}")).join("data").display(),
            adv = cluster_ip(i),
            seeds = seeds.join(", "),
            bootstrap = i == 1,
            secret = self.secret,
            timeout = (u64::from(f) * 1000 / 4).min(1000),
            src = service_ip(i),
            heartbeat = match self.args.heartbeat_ms {
                Some(ms) => format!("heartbeat_ms = {ms}\n"),
                None => String::new(),
            },
        )
    }

    fn start_node(&mut self, i: usize) -> Result<(), ChaosError> {
        let dir = self.dir.join(format!("n{i}"));
        let mut cfg = NodeConfig::new(
            &format!("n{i}"),
            &format!("{HUB_SERVICE_IP}:{RRDCACHED_PORT}"),
        );
        cfg.listen = Some(SocketAddr::from(([0, 0, 0, 0], NODE_PORT)));
        cfg.secret = self.secret.clone();
        // The node's port is inside its namespace: the run checks the cluster through the
        // CLI instead of waiting here.
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        // Restarts are marked in the node's log, to line it up with the fault times.
        let log = node_log_path(&dir, &cfg.node_name);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err("cannot open", &log))?;
        let _ = writeln!(f, "=== chaos: starting n{i} at unix_ms {}", unix_ms());
        let opts = NodeOptions::new()
            .dir(&dir)
            // The product's own default filter: the testbed's debug default would slow the
            // nodes (and change what a run measures).
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| PRODUCT_LOG_FILTER.into()),
            )
            .config_text(self.node_config(i))
            .wrapper(Self::in_ns(self.net.node(i)))
            .no_wait();
        self.nodes[i - 1] = NodeSlot {
            proc: Some(RaftpollNode::start_with(cfg, opts)),
            paused: false,
            cut: false,
        };
        Ok(())
    }

    /// Runs the CLI against node `i` (over its service link, so it answers
    /// even while partitioned) and returns its stdout.
    fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        run_cli(
            &Self::in_ns(self.net.hub()),
            &format!("{}:{NODE_PORT}", service_ip(i)),
            &self.secret,
            args,
            CLI_TIMEOUT,
        )
    }

    fn status(&self, i: usize) -> Option<Value> {
        let out = self.cli(i, &["status", "--json"]).ok()?;
        serde_json::from_str(&out).ok()
    }

    /// Polls `check` every 300 ms until it returns `Some`, or `None` past `deadline`.
    fn wait_for<T>(
        &self,
        deadline: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Result<Option<T>, ChaosError> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(v) = check(self) {
                return Ok(Some(v));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            self.sleep(Duration::from_millis(300))?;
        }
    }

    fn start_cluster(&mut self) -> Result<(), ChaosError> {
        self.start_node(1)?;
        let ok = self.wait_for(Duration::from_secs(60), |s| {
            s.status(1).filter(|st| st["leader_id"].is_u64())
        })?;
        if ok.is_none() {
            return Err(ChaosError::Setup(
                "n1 did not bootstrap a cluster; see n1/raftpoll-n1.stderr".into(),
            ));
        }
        for i in 2..=self.args.nodes {
            self.start_node(i)?;
        }
        if self
            .wait_for(Duration::from_secs(90), |s| s.healthy())?
            .is_none()
        {
            return Err(ChaosError::Setup(format!(
                "the {}-node cluster did not form; see the node logs in {}",
                self.args.nodes,
                self.dir.display()
            )));
        }
        self.say(format!("cluster of {} nodes formed", self.args.nodes));
        Ok(())
    }

    fn add_devices(&mut self) -> Result<(), ChaosError> {
        for i in 0..self.args.devices {
            let (host, comm) = (hostname(i), community(i));
            let port = AGENT_PORT.to_string();
            let ip = HUB_SERVICE_IP.to_string();
            let args = [
                "device",
                "add",
                &host,
                "--ip",
                &ip,
                "--port",
                &port,
                "--community",
                &comm,
            ];
            let added = self.wait_for(Duration::from_secs(30), |s| {
                (1..=s.args.nodes).find_map(|n| s.cli(n, &args).ok())
            })?;
            if added.is_none() {
                return Err(ChaosError::Setup(format!("cannot add device {host}")));
            }
        }
        self.say(format!("{} devices added", self.args.devices));
        Ok(())
    }

    fn requests(&self) -> Vec<analysis::Request> {
        self.agent
            .as_ref()
            .map(SimAgent::requests)
            .unwrap_or_default()
    }

    fn wait_all_polled(&mut self) -> Result<(), ChaosError> {
        let want: BTreeSet<String> = (0..self.args.devices).map(community).collect();
        let ok = self.wait_for(Duration::from_secs(60), |s| {
            let seen: BTreeSet<String> = s.requests().into_iter().map(|r| r.community).collect();
            want.is_subset(&seen).then_some(())
        })?;
        if ok.is_none() {
            return Err(ChaosError::Setup(
                "not every device got polled within 60 s".into(),
            ));
        }
        // Let the join debounce pass and devices spread over the nodes.
        self.sleep(Duration::from_secs(3 * u64::from(self.args.frequency)))?;
        self.say("every device polled; injecting faults");
        Ok(())
    }

    /// Cluster ids, leader and device owners, from the first node that answers.
    fn snapshot(&self, skip: &BTreeSet<usize>) -> Option<Snapshot> {
        (1..=self.args.nodes)
            .filter(|i| !skip.contains(i))
            .find_map(|i| {
                let st = self.status(i)?;
                let ids: BTreeMap<usize, u64> = st["nodes"]
                    .as_array()?
                    .iter()
                    .filter_map(|n| {
                        let idx = n["name"].as_str()?.strip_prefix('n')?.parse().ok()?;
                        Some((idx, n["id"].as_u64()?))
                    })
                    .collect();
                let leader_id = st["leader_id"].as_u64()?;
                let leader = ids
                    .iter()
                    .find(|(_, id)| **id == leader_id)
                    .map(|(i, _)| *i);
                let list: Value =
                    serde_json::from_str(&self.cli(i, &["device", "list", "--json"]).ok()?).ok()?;
                let owners = list
                    .as_array()?
                    .iter()
                    .filter_map(|d| {
                        Some((d["hostname"].as_str()?.to_string(), d["node_id"].as_u64()))
                    })
                    .collect();
                Some(Snapshot {
                    ids,
                    leader,
                    owners,
                })
            })
    }

    /// Every node answers, all agree on one leader that sees every node
    /// alive, and no device is unassigned.
    fn healthy(&self) -> Option<()> {
        let mut leader = None;
        for i in 1..=self.args.nodes {
            let st = self.status(i)?;
            let l = st["leader_id"].as_u64()?;
            if leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
            let nodes = st["nodes"].as_array()?;
            let alive = nodes
                .iter()
                .filter(|n| n["alive"].as_bool() == Some(true))
                .count();
            if nodes.len() != self.args.nodes || alive != self.args.nodes {
                return None;
            }
            if st["devices"]["unassigned"].as_u64() != Some(0) {
                return None;
            }
        }
        Some(())
    }

    fn inject_faults(&mut self, rng: &mut StdRng) -> Result<(Vec<Fault>, Vec<String>), ChaosError> {
        let rounds = match (self.args.rounds, self.args.duration) {
            (Some(r), _) => Some(r),
            (None, Some(_)) => None,
            (None, None) => Some(20),
        };
        let until = self.args.duration.map(|d| Instant::now() + d);
        let minority = (self.args.nodes - 1) / 2;
        let max_faulty = self.args.at_once.map_or(minority, |n| n.clamp(1, minority));
        let mut bag: Vec<FaultKind> = Vec::new();
        let mut seen: BTreeMap<FaultKind, usize> = BTreeMap::new();
        let mut faults = Vec::new();
        let mut unhealed = Vec::new();
        let mut round = 0u32;
        loop {
            if rounds.is_some_and(|r| round >= r) || until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            round += 1;
            let k = rng.random_range(1..=max_faulty);
            let mut victims: Vec<(usize, FaultKind, Duration)> = Vec::new();
            let snap = self.snapshot(&BTreeSet::new());
            let leader = snap.as_ref().and_then(|s| s.leader);
            for _ in 0..k {
                if bag.is_empty() {
                    bag = self.args.faults.clone();
                    bag.shuffle(rng);
                }
                let Some(kind) = bag.pop() else { break };
                let n = seen.entry(kind).or_default();
                *n += 1;
                // Every other fault of a kind hits the leader.
                let taken: BTreeSet<usize> = victims.iter().map(|v| v.0).collect();
                let want_leader = *n % 2 == 1;
                let node = match leader.filter(|l| want_leader && !taken.contains(l)) {
                    Some(l) => l,
                    None => {
                        // Prefer the follower with the most devices: a node
                        // that just rejoined may own none yet, and a fault
                        // there would measure nothing.
                        let owned = |i: &usize| -> usize {
                            snap.as_ref().map_or(0, |s| {
                                let id = s.ids.get(i).copied();
                                s.owners
                                    .values()
                                    .filter(|o| o.is_some() && **o == id)
                                    .count()
                            })
                        };
                        let pool: Vec<usize> = (1..=self.args.nodes)
                            .filter(|i| !taken.contains(i) && Some(*i) != leader)
                            .collect();
                        let most = pool.iter().map(owned).max().unwrap_or(0);
                        let busiest: Vec<usize> =
                            pool.into_iter().filter(|i| owned(i) == most).collect();
                        busiest[rng.random_range(0..busiest.len())]
                    }
                };
                let hold_ms = match kind {
                    FaultKind::Pause => rng.random_range(1000..8000),
                    _ => rng.random_range(4000..8000),
                };
                victims.push((node, kind, Duration::from_millis(hold_ms)));
            }
            let mut round_faults = Vec::new();
            for (node, kind, hold) in &victims {
                let was_leader = leader == Some(*node);
                let node_id = snap.as_ref().and_then(|s| s.ids.get(node).copied());
                let affected: Vec<String> = snap
                    .as_ref()
                    .map(|s| {
                        s.owners
                            .iter()
                            .filter(|(_, o)| o.is_some() && **o == node_id)
                            .map(|(h, _)| h.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let at_ms = unix_ms();
                self.inject(*node, *kind)?;
                let fault = Fault {
                    kind: *kind,
                    node: *node,
                    node_id,
                    was_leader,
                    at_ms,
                    healed_ms: 0,
                    affected,
                };
                self.say(format!(
                    "round {round}: {} n{node} for {:.1}s ({} devices)",
                    fault.label(),
                    hold.as_secs_f64(),
                    fault.affected.len()
                ));
                round_faults.push((fault, *hold, Instant::now()));
            }
            // Undo each fault when its hold time is over, in order.
            round_faults.sort_by_key(|(_, hold, t)| *t + *hold);
            for (mut fault, hold, t) in round_faults {
                self.sleep((t + hold).saturating_duration_since(Instant::now()))?;
                self.heal(fault.node, fault.kind)?;
                fault.healed_ms = unix_ms();
                faults.push(fault);
            }
            if self.wait_for(HEAL_DEADLINE, |s| s.healthy())?.is_none() {
                let what = format!("round {round}: not healthy {HEAL_DEADLINE:?} after the heal");
                self.say(&what);
                unhealed.push(what);
            }
            self.sleep(Duration::from_millis(rng.random_range(500..2000)))?;
        }
        Ok((faults, unhealed))
    }

    fn inject(&mut self, node: usize, kind: FaultKind) -> Result<(), ChaosError> {
        let slot = &mut self.nodes[node - 1];
        match kind {
            FaultKind::Kill => slot.proc = None, // dropping SIGKILLs it
            FaultKind::Term => {
                if let Some(p) = &slot.proc {
                    p.signal("TERM");
                }
            }
            FaultKind::Pause => {
                if let Some(p) = &slot.proc {
                    p.signal("STOP");
                    slot.paused = true;
                }
            }
            FaultKind::Partition => {
                self.net.cut(node)?;
                self.nodes[node - 1].cut = true;
            }
        }
        Ok(())
    }

    fn heal(&mut self, node: usize, kind: FaultKind) -> Result<(), ChaosError> {
        match kind {
            FaultKind::Kill => self.start_node(node)?,
            FaultKind::Term => {
                let stopped = self.wait_for(Duration::from_secs(15), |s| {
                    // Only reads: the process is reaped by `exited` below.
                    s.nodes[node - 1]
                        .proc
                        .as_ref()
                        .and_then(RaftpollNode::pid)
                        .map(|pid| {
                            !Path::new(&format!("/proc/{pid}/status")).exists() || zombie(pid)
                        })
                        .unwrap_or(true)
                        .then_some(())
                })?;
                if stopped.is_none() {
                    self.say(format!(
                        "n{node} did not stop within 15 s of SIGTERM: killing it"
                    ));
                }
                // Gone before its successor starts: a process still holding the data
                // directory's lock would keep the new one from opening it.
                self.nodes[node - 1].proc = None;
                self.start_node(node)?;
            }
            FaultKind::Pause => {
                let slot = &mut self.nodes[node - 1];
                if let Some(p) = &slot.proc {
                    p.signal("CONT");
                }
                slot.paused = false;
            }
            FaultKind::Partition => {
                self.net.heal(node)?;
                self.nodes[node - 1].cut = false;
            }
        }
        Ok(())
    }

    /// Waits until one leader, every device assigned, and identical status
    /// and device owners on every node.
    fn converge(&mut self) -> Result<Convergence, ChaosError> {
        let mut last = Convergence::default();
        let done = self.wait_for(SETTLE_DEADLINE, |s| {
            let c = s.convergence();
            let ok = c.converged;
            last = c;
            ok.then_some(())
        })?;
        let _ = done;
        self.say(format!(
            "convergence: {}",
            if last.converged { "yes" } else { "NO" }
        ));
        Ok(last)
    }

    fn convergence(&self) -> Convergence {
        let mut c = Convergence::default();
        let mut first: Option<(Value, Value)> = None;
        c.identical = true;
        for i in 1..=self.args.nodes {
            let Some(mut st) = self.status(i) else {
                c.problem = Some(format!("n{i} does not answer status"));
                c.identical = false;
                return c;
            };
            let list = self
                .cli(i, &["device", "list", "--json"])
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .unwrap_or(Value::Null);
            let owners: Value = list
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| serde_json::json!([d["hostname"], d["node_id"]]))
                        .collect()
                })
                .unwrap_or(Value::Null);
            if let Value::Object(m) = &mut st {
                m.remove("answered_by");
                m.remove("rrd");
            }
            c.leader_id = st["leader_id"].as_u64();
            c.term = st["term"].as_u64().unwrap_or_default();
            c.devices = st["devices"]["total"].as_u64().unwrap_or_default();
            c.unassigned = st["devices"]["unassigned"].as_u64().unwrap_or(u64::MAX);
            match &first {
                None => first = Some((st, owners)),
                Some((s0, o0)) => {
                    if *s0 != st || *o0 != owners {
                        c.identical = false;
                        c.problem =
                            Some(format!("n{i}'s status or device owners differ from n1's"));
                    }
                }
            }
        }
        let all_owned = first
            .as_ref()
            .and_then(|(_, o)| o.as_array())
            .is_some_and(|a| a.len() == self.args.devices && a.iter().all(|x| x[1].is_u64()));
        c.converged = c.identical
            && c.leader_id.is_some()
            && c.unassigned == 0
            && all_owned
            && c.devices == self.args.devices as u64;
        if !c.converged && c.problem.is_none() {
            c.problem = Some("no leader, or devices unassigned".into());
        }
        c
    }

    /// Stops the agent (it flushes its record) and returns what it recorded.
    fn stop_agent(&mut self) -> Result<Vec<analysis::Request>, ChaosError> {
        let Some(mut agent) = self.agent.take() else {
            return Ok(Vec::new());
        };
        agent.stop(Duration::from_secs(10));
        Ok(agent.requests())
    }
}

/// Whether process `pid` is a zombie (exited, not yet reaped).
fn zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

const COMMUNITY_PREFIX: &str = "chaos";

fn community(i: usize) -> String {
    format!("{COMMUNITY_PREFIX}{i}")
}

fn hostname(i: usize) -> String {
    format!("dev{i:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
