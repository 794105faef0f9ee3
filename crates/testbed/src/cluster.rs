//! Clusters of real `raftpoll` nodes on loopback, and a recording SNMP agent (`raftpoll-sim
//! --record`) that tells which node (by source address) polled which device, and when.
//!
//! Node `i` (0-based) is named `n{i+1}`, polls from `127.0.0.{i+1}`, listens on a free port;
//! node 0 bootstraps the cluster, every other node joins through the nodes started before it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use super::capture::{Poll, Request, group_polls};
use super::process::{test_dir, wait_until_every};
use super::raftpoll::{NodeConfig, RaftpollNode};
use super::rrdcached::Rrdcached;
use super::sim::{SimAgent, SimBuilder};
use super::snmpsim::moving_snmprec;

/// Re-check interval of CLI conditions: a CLI run costs a process start.
pub const CLI_EVERY: Duration = Duration::from_millis(200);

/// Milliseconds since the epoch: the clock of the agent's record file.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The source address node `index` polls from.
pub fn source_ip(index: usize) -> IpAddr {
    let last = u8::try_from(index + 1).expect("at most 254 nodes on loopback");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// `raftpoll-sim` serving `count` copies of `recordings/moving.snmprec` on one UDP port,
/// device `i` answering to community `{prefix}{i}`, recording every answered request.
pub struct RecordingAgent {
    prefix: String,
    count: usize,
    sim: SimAgent,
    _dir: tempfile::TempDir,
}

impl RecordingAgent {
    pub fn start(count: usize, prefix: &str) -> RecordingAgent {
        Self::start_misbehaving(count, prefix, &[])
    }

    /// Like `start`, with device `i` misbehaving as `mode` for each `(i, mode)`
    /// (`raftpoll-sim --misbehave`: silent, slow:<ms>, error-status[:<n>], garbage, truncated,
    /// wrong-reqid).
    pub fn start_misbehaving(
        count: usize,
        prefix: &str,
        misbehave: &[(usize, &str)],
    ) -> RecordingAgent {
        let dir = test_dir("sim");
        let mut sim = SimBuilder::new()
            .devices(count, prefix)
            .recording(moving_snmprec())
            .record(dir.path().join("record.txt"))
            .log_dir(dir.path());
        for (i, mode) in misbehave {
            assert!(*i < count, "misbehaving device {i} of {count}");
            sim = sim.misbehave(&format!("{prefix}{i}"), mode);
        }
        RecordingAgent {
            prefix: prefix.to_string(),
            count,
            sim: sim.start(),
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.sim.port()
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The community of device `i`.
    pub fn community(&self, i: usize) -> String {
        assert!(i < self.count, "the agent serves {} devices", self.count);
        format!("{}{i}", self.prefix)
    }

    /// Every request recorded so far, in time order.
    pub fn requests(&self) -> Vec<Request> {
        self.sim.requests()
    }

    /// Every poll so far, per community (see [`group_polls`]).
    pub fn polls(&self, burst_gap_ms: u64) -> BTreeMap<String, Vec<Poll>> {
        self.sim.polls(burst_gap_ms)
    }

    pub fn logs(&self) -> String {
        self.sim.logs()
    }
}

/// A device as `device list --json` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    pub hostname: String,
    pub group: u64,
    pub owner: Option<u64>,
    pub status: String,
}

fn unique_secret() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("cluster-{}-{n}-{}", std::process::id(), unix_ms())
}

/// Adjusts node `index`'s config before it starts.
type Configure = Box<dyn Fn(usize, &mut NodeConfig) + Send + Sync>;

/// Nodes of one cluster, with the rrdcached they write to.
pub struct Cluster {
    pub rrd: Rrdcached,
    nodes: Vec<RaftpollNode>,
    up: Vec<bool>,
    configure: Configure,
    /// Unique per cluster: a killed node's port may be reused by a node of a cluster in a
    /// parallel test, and a shared secret would let the two clusters talk to each other.
    secret: String,
}

impl Cluster {
    /// Starts `n` nodes: node 0 bootstraps, the others join through the nodes before them.
    /// `configure(index, config)` adjusts each node's config (also for nodes added later).
    pub fn start(
        n: usize,
        configure: impl Fn(usize, &mut NodeConfig) + Send + Sync + 'static,
    ) -> Cluster {
        let mut cluster = Cluster {
            rrd: Rrdcached::start(),
            nodes: Vec::new(),
            up: Vec::new(),
            configure: Box::new(configure),
            secret: unique_secret(),
        };
        for _ in 0..n {
            cluster.add_node();
        }
        cluster
    }

    /// Starts one more node (joining through every node started before it); its index.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let mut cfg = NodeConfig::new(&format!("n{}", index + 1), &self.rrd.addr());
        cfg.secret = self.secret.clone();
        cfg.bootstrap = index == 0;
        cfg.seeds = self.nodes.iter().map(RaftpollNode::addr).collect();
        cfg.source_ip = Some(source_ip(index).to_string());
        (self.configure)(index, &mut cfg);
        self.nodes.push(RaftpollNode::start(cfg));
        self.up.push(true);
        index
    }

    /// Number of nodes started (running or not).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, index: usize) -> &RaftpollNode {
        &self.nodes[index]
    }

    pub fn node_mut(&mut self, index: usize) -> &mut RaftpollNode {
        &mut self.nodes[index]
    }

    /// `n{index+1}`
    pub fn name(&self, index: usize) -> String {
        self.nodes[index].config().node_name.clone()
    }

    /// The node index of a node name.
    pub fn index_of_name(&self, name: &str) -> Option<usize> {
        (0..self.node_count()).find(|&i| self.name(i) == name)
    }

    /// Indexes of nodes this test has not killed.
    pub fn up(&self) -> Vec<usize> {
        (0..self.node_count()).filter(|&i| self.up[i]).collect()
    }

    pub fn is_up(&self, index: usize) -> bool {
        self.up[index]
    }

    /// SIGKILL node `index`; returns the time just before the signal (unix ms).
    pub fn kill9(&mut self, index: usize) -> u64 {
        let at = unix_ms();
        self.nodes[index].kill9();
        self.up[index] = false;
        at
    }

    /// SIGTERM node `index` (a planned stop) and wait up to `grace` for it to exit by itself;
    /// its exit status, or `None` if it had to be killed.
    pub fn terminate(&mut self, index: usize, grace: Duration) -> Option<std::process::ExitStatus> {
        self.up[index] = false;
        self.nodes[index].terminate(grace)
    }

    /// Restarts node `index` with its config and data dir.
    pub fn start_again(&mut self, index: usize) {
        self.nodes[index].start_again();
        self.up[index] = true;
    }

    /// Whether node `index`'s process is still running (it may exit by itself).
    pub fn is_running(&mut self, index: usize) -> bool {
        self.nodes[index].is_running()
    }

    /// Waits until every running node reports the same leader; returns its id.
    pub fn wait_same_leader(&self, deadline: Duration) -> u64 {
        wait_until_every(
            deadline,
            CLI_EVERY,
            "every node to report one leader",
            || {
                let leaders: Option<Vec<u64>> = self
                    .up()
                    .into_iter()
                    .map(|i| self.try_status(i)?["leader_id"].as_u64())
                    .collect();
                let leaders = leaders?;
                let first = *leaders.first()?;
                leaders.iter().all(|&l| l == first).then_some(first)
            },
        )
    }

    /// Marks a node that exited by itself (graceful leave) as down.
    pub fn mark_down(&mut self, index: usize) {
        self.up[index] = false;
    }

    /// SIGKILLs every running node, then starts them all again at once (one thread each, so
    /// no node comes up much later than the others).
    pub fn restart_all(&mut self) {
        for i in self.up() {
            self.nodes[i].kill9();
        }
        let up = self.up.clone();
        std::thread::scope(|s| {
            for (node, up) in self.nodes.iter_mut().zip(up) {
                if up {
                    s.spawn(move || node.start_again());
                }
            }
        });
    }

    /// `raftpoll <args>` on node `index`: stdout if it succeeded.
    pub fn try_cli(&self, index: usize, args: &[&str]) -> Option<String> {
        let out = self.nodes[index].cli(args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `status --json` from node `index`, None if the CLI failed.
    pub fn try_status(&self, index: usize) -> Option<Value> {
        serde_json::from_str(&self.try_cli(index, &["status", "--json"])?).ok()
    }

    /// `device list --json` from node `index`, None if the CLI failed.
    pub fn try_devices(&self, index: usize) -> Option<Vec<DeviceRow>> {
        let list: Value =
            serde_json::from_str(&self.try_cli(index, &["device", "list", "--json"])?).ok()?;
        // LibreNMS rows raftpoll does not poll are listed with status "skipped": not devices.
        list.as_array()?
            .iter()
            .filter(|d| d["status"] != "skipped")
            .map(|d| {
                Some(DeviceRow {
                    hostname: d["hostname"].as_str()?.to_string(),
                    group: d["group"].as_u64()?,
                    owner: d["node_id"].as_u64(),
                    status: d["status"].as_str()?.to_string(),
                })
            })
            .collect()
    }

    /// `device list --json` from any running node (retried until one answers).
    pub fn devices(&self) -> Vec<DeviceRow> {
        wait_until_every(Duration::from_secs(20), CLI_EVERY, "a device list", || {
            self.up().into_iter().find_map(|i| self.try_devices(i))
        })
    }

    /// Owner of every device, by hostname.
    pub fn owners(&self) -> BTreeMap<String, Option<u64>> {
        self.devices()
            .into_iter()
            .map(|d| (d.hostname, d.owner))
            .collect()
    }

    /// Waits until `status --json` from every running node shows the same leader and exactly
    /// the running nodes, all alive, named and with `roles` (sorted, e.g. leader, follower,
    /// follower); returns the status of the first running node.
    pub fn wait_formed(&self, roles: &[&str], deadline: Duration) -> Value {
        let mut want: Vec<&str> = roles.to_vec();
        want.sort_unstable();
        let mut names: Vec<String> = self.up().into_iter().map(|i| self.name(i)).collect();
        names.sort();
        let mut last = Vec::new();
        wait_until_every(deadline, CLI_EVERY, "the cluster to form", || {
            last.clear();
            let mut first = None;
            let mut leader = None;
            for i in self.up() {
                let Some(s) = self.try_status(i) else {
                    last.push(format!("{}: no status", self.name(i)));
                    return None;
                };
                last.push(format!("{}: {s}", self.name(i)));
                let l = s["leader_id"].as_u64()?;
                if *leader.get_or_insert(l) != l {
                    return None;
                }
                let nodes = s["nodes"].as_array()?;
                let mut got: Vec<&str> = nodes.iter().filter_map(|n| n["role"].as_str()).collect();
                got.sort_unstable();
                let mut got_names: Vec<String> = nodes
                    .iter()
                    .filter_map(|n| n["name"].as_str().map(str::to_string))
                    .collect();
                got_names.sort();
                let all_alive = nodes.iter().all(|n| n["alive"] == Value::Bool(true));
                if got != want || got_names != names || !all_alive {
                    return None;
                }
                first.get_or_insert(s);
            }
            first
        })
    }

    /// Node id → node index, from a status.
    pub fn ids(&self, status: &Value) -> BTreeMap<u64, usize> {
        status["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| {
                        let index = self.index_of_name(n["name"].as_str()?)?;
                        Some((n["id"].as_u64()?, index))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The index of the leader named in `status`.
    pub fn leader_index(&self, status: &Value) -> usize {
        let id = status["leader_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no leader in {status}"));
        *self
            .ids(status)
            .get(&id)
            .unwrap_or_else(|| panic!("leader {id} is not a known node: {status}"))
    }

    /// `raftpoll device add` of `hostname` served by the agent under `community`, through
    /// node `via`.
    pub fn add_device(
        &self,
        via: usize,
        hostname: &str,
        agent_port: u16,
        community: &str,
        group: u32,
    ) {
        let port = agent_port.to_string();
        let group = group.to_string();
        self.nodes[via].cli_ok(&[
            "device",
            "add",
            hostname,
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
            "--community",
            community,
            "--group",
            &group,
        ]);
    }

    /// The logs of every node.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(RaftpollNode::logs).collect()
    }
}
