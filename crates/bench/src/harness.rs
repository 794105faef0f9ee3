//! Shared pieces of the benchmarks: their processes on loopback (started by the testbed),
//! their CPU time and memory, a generated switch recording, and markdown tables.

use super::BenchError;
use raftpoll_testbed::process::Daemon;
use raftpoll_testbed::raftpoll::{NodeConfig, NodeOptions, RaftpollNode, node_log_path};
use raftpoll_testbed::rrdcached::{Rrdcached, RrdcachedOptions};
use raftpoll_testbed::snmpsim::switch_snmprec;
pub use raftpoll_testbed::{free_tcp_port, workspace_bin};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Cluster secret of benchmark nodes (loopback only, thrown away after the run).
pub const BENCH_SECRET: &str = "raftpoll-bench-secret";

/// A program from the system, looked up in PATH and the sbin directories.
pub fn system_bin(name: &str, package: &str) -> Result<PathBuf, BenchError> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BenchError::Setup(format!(
                "{name} not found: install the Debian package {package} (scripts/install-deps.sh --bench)"
            ))
        })
}

/// Polls `f` until it returns `Some`, at most until `deadline` has passed. Unlike the testbed's
/// `wait_until` it does not panic: in a benchmark a timeout is often a finding (devices not
/// polled, files not created) that is reported, not a set-up failure.
pub fn wait_for<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, BenchError> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= end {
            return Err(BenchError::Timeout(format!("{what} (waited {deadline:?})")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process of the test bed whose CPU time and memory the benchmarks read from /proc.
pub trait Running {
    fn pid(&self) -> Option<u32>;
    fn is_running(&mut self) -> bool;

    /// CPU time and memory of the process now.
    fn usage(&self) -> Result<Usage, BenchError> {
        let pid = self
            .pid()
            .ok_or_else(|| BenchError::Setup("the measured process is not running".into()))?;
        Usage::of(pid)
    }
}

impl Running for Daemon {
    fn pid(&self) -> Option<u32> {
        Daemon::pid(self)
    }
    fn is_running(&mut self) -> bool {
        Daemon::is_running(self)
    }
}

impl Running for RaftpollNode {
    fn pid(&self) -> Option<u32> {
        RaftpollNode::pid(self)
    }
    fn is_running(&mut self) -> bool {
        RaftpollNode::is_running(self)
    }
}

impl Running for Rrdcached {
    fn pid(&self) -> Option<u32> {
        Rrdcached::pid(self)
    }
    fn is_running(&mut self) -> bool {
        Rrdcached::is_running(self)
    }
}

/// CPU seconds (user + system) and memory of one process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM).
    pub peak_rss_kib: u64,
    /// CPU seconds of the live threads, by [`NODE_PARTS`].
    pub part_cpu_s: [f64; NODE_PARTS.len()],
}

/// What a raftpoll node's threads work for, from the names it gives them:
/// Raft's runtime (openraft, applies, snapshots, the gRPC server) with sled's
/// threads under the log; the main runtime (scheduling, SNMP, the leader's
/// controller); the RRD writer's thread; the LibreNMS link's thread.
pub const NODE_PARTS: [&str; 4] = ["Raft", "polling", "RRD writer", "LibreNMS link"];
pub const RAFT_PART: usize = 0;
pub const POLLING_PART: usize = 1;
const RRD_WRITER_PART: usize = 2;
/// Where the LibreNMS link's CPU is in [`NODE_PARTS`].
pub const LIBRENMS_LINK_PART: usize = 3;

fn node_part(thread: &str) -> Option<usize> {
    match thread {
        "raft" | "snapshot" => Some(RAFT_PART),
        t if t.starts_with("sled") || t.contains("flusher") => Some(RAFT_PART),
        "poll" => Some(POLLING_PART),
        "rrd-writer" => Some(RRD_WRITER_PART),
        "librenms" => Some(LIBRENMS_LINK_PART),
        _ => None,
    }
}

/// CPU seconds of `pid`'s live threads by [`NODE_PARTS`]. A thread that ended
/// takes its time out of these sums (the process total keeps it).
fn part_cpu_s(pid: u32) -> [f64; NODE_PARTS.len()] {
    let mut parts = [0.0; NODE_PARTS.len()];
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return parts;
    };
    for task in tasks.flatten() {
        // A thread may end between the listing and the read: skip it.
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let Some(part) = node_part(&stat[open + 1..close]) else {
            continue;
        };
        let ticks = stat_fields(&stat);
        parts[part] += (ticks(11) + ticks(12)) as f64 / CLOCK_TICKS_PER_S;
    }
    parts
}

impl Usage {
    /// CPU seconds by [`NODE_PARTS`] from `self` to `later`, and last the
    /// rest (threads that ended, threads of no part).
    pub fn parts_since(&self, later: &Usage) -> Vec<f64> {
        let mut parts: Vec<f64> = self
            .part_cpu_s
            .iter()
            .zip(&later.part_cpu_s)
            .map(|(before, after)| (after - before).max(0.0))
            .collect();
        let rest = (later.cpu_s - self.cpu_s) - parts.iter().sum::<f64>();
        parts.push(rest.max(0.0));
        parts
    }
}

/// Linux reports CPU times in clock ticks; 100 per second on every mainstream kernel build.
const CLOCK_TICKS_PER_S: f64 = 100.0;

impl Usage {
    pub fn of(pid: u32) -> Result<Usage, BenchError> {
        let ticks = stat_ticks(&PathBuf::from(format!("/proc/{pid}/stat")))?;
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after `) state`.
        let cpu_s = (ticks(11) + ticks(12)) as f64 / CLOCK_TICKS_PER_S;
        let status_path = PathBuf::from(format!("/proc/{pid}/status"));
        let status = fs::read_to_string(&status_path)
            .map_err(|e| BenchError::io("read", &status_path, e))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Usage {
            cpu_s,
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
            part_cpu_s: part_cpu_s(pid),
        })
    }
}

/// CPU seconds of this process's waited-for children (cutime + cstime).
pub fn children_cpu_s() -> Result<f64, BenchError> {
    let ticks = stat_ticks(Path::new("/proc/self/stat"))?;
    Ok((ticks(13) + ticks(14)) as f64 / CLOCK_TICKS_PER_S)
}

/// The numeric fields of a `/proc/<pid>/stat` after `(comm)` (which may hold
/// spaces), by 0-based position; 0 where a field is missing.
fn stat_ticks(path: &Path) -> Result<impl Fn(usize) -> u64 + use<>, BenchError> {
    let stat = fs::read_to_string(path).map_err(|e| BenchError::io("read", path, e))?;
    Ok(stat_fields(&stat))
}

/// The numeric fields of a stat line's text after `(comm)`, as [`stat_ticks`].
fn stat_fields(stat: &str) -> impl Fn(usize) -> u64 + use<> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    move |i: usize| fields.get(i).copied().unwrap_or(0)
}

/// The benchmarks' rrdcached: in `dir` (base dir `dir/rrd`), with writes delayed as in
/// production (`-w 300 -z 60`), so what is measured is the cache, not the disk.
pub fn start_rrdcached(dir: &Path) -> Rrdcached {
    RrdcachedOptions::new()
        .dir(dir)
        .write_timeout_s(300)
        .write_delay_s(60)
        .start()
}

/// One `raftpoll node` process (started by the testbed) with a generated config in its own
/// directory.
pub struct Node {
    pub proc: RaftpollNode,
    pub addr: SocketAddr,
    /// Where the node serves `/metrics`.
    pub metrics: SocketAddr,
    pub dir: PathBuf,
}

impl Node {
    /// Starts a node that founds a cluster of one. `extra` is appended to the
    /// generated TOML (a `[poller]`-free tail: put tables there, e.g. `[cluster]`).
    pub fn start(
        dir: &Path,
        name: &str,
        rrdcached: &str,
        poller: &str,
        extra: &str,
    ) -> Result<Node, BenchError> {
        Self::start_with_seed(dir, name, rrdcached, poller, extra, None)
    }

    /// [`Node::start`], joining the cluster of the node at `seed` when given. The config
    /// names only what the benchmark sets: everything else keeps the product's defaults.
    pub fn start_with_seed(
        dir: &Path,
        name: &str,
        rrdcached: &str,
        poller: &str,
        extra: &str,
        seed: Option<SocketAddr>,
    ) -> Result<Node, BenchError> {
        let dir = dir.join(name);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let config = format!(
            "node_name = \"{name}\"\ndata_dir = \"{data}\"\nlisten = \"{addr}\"\n\
             metrics_listen = \"{metrics}\"\n{membership}\n\
             secret = \"{BENCH_SECRET}\"\ngroups = [0]\n\n[poller]\nsource_ip = \"127.0.0.1\"\n{poller}\n\n\
             [rrd]\nrrdcached = \"{rrdcached}\"\n\n{extra}\n",
            data = dir.join("data").display(),
            membership = match seed {
                Some(seed) => format!("bootstrap = false\nseeds = [\"{seed}\"]"),
                None => "bootstrap = true".to_string(),
            },
        );
        let mut cfg = NodeConfig::new(name, rrdcached);
        cfg.listen = Some(addr);
        cfg.secret = BENCH_SECRET.to_string();
        let mut opts = NodeOptions::new().dir(&dir).config_text(config);
        // For profiling: e.g. RAFTPOLL_BENCH_NODE_WRAPPER="heaptrack -o /tmp/node" runs the
        // node under the wrapper (CPU and memory figures are then the wrapper's).
        if let Ok(wrapper) = std::env::var("RAFTPOLL_BENCH_NODE_WRAPPER") {
            opts = opts.wrapper(wrapper.split_whitespace().map(str::to_string));
        }
        let node = Node {
            proc: RaftpollNode::start_with(cfg, opts),
            addr,
            metrics,
            dir,
        };
        // The port accepts before the cluster is up: wait until the CLI gets answers.
        wait_for(Duration::from_secs(30), "the node to answer status", || {
            node.cli(&["status", "--json"]).ok()
        })?;
        Ok(node)
    }

    /// Runs the `raftpoll` CLI against this node; stdout on success.
    pub fn cli(&self, args: &[&str]) -> Result<String, BenchError> {
        let out = self.proc.cli(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(BenchError::Setup(format!(
                "raftpoll {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// `device list --json`, parsed.
    pub fn devices(&self) -> Result<Vec<serde_json::Value>, BenchError> {
        let text = self.cli(&["device", "list", "--json"])?;
        serde_json::from_str(&text)
            .map_err(|e| BenchError::Setup(format!("device list --json: {e}")))
    }

    /// One unlabelled sample of the node's `/metrics` (e.g. `raftpoll_raft_term`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = http_get(self.metrics, "/metrics", Duration::from_secs(5)).ok()?;
        (status == 200).then_some(())?;
        String::from_utf8_lossy(&body).lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }

    /// The node's log (its standard error, every run).
    pub fn log(&self) -> PathBuf {
        node_log_path(&self.dir, self.proc.config().node_name.as_str())
    }
}

/// Total size of the files under `dir`, bytes.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Writes the test bed's simulated switch ([`switch_snmprec`]) with ports 1..=`ports`.
pub fn write_switch_recording(path: &Path, ports: u32) -> Result<(), BenchError> {
    let ifindexes: Vec<u32> = (1..=ports).collect();
    fs::write(path, switch_snmprec("bench-switch", &ifindexes))
        .map_err(|e| BenchError::io("write", path, e))
}

/// A markdown table; every benchmark prints its results as one.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.headers));
        out.push_str(&line(&vec!["---".to_string(); self.headers.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// A short description of this machine for the results header.
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB RAM")
}

/// One HTTP/1.0 GET to a loopback server: (status code, body). `timeout` bounds the
/// connect and each read and write; bodies over 64 MiB are an error.
pub fn http_get(
    addr: SocketAddr,
    path_and_query: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), BenchError> {
    use std::io::{Read, Write};
    const MAX_BODY: u64 = 64 << 20;
    let fail = |what: &str, e: std::io::Error| {
        BenchError::Setup(format!(
            "HTTP GET http://{addr}{path_and_query}: {what}: {e}"
        ))
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail("connect", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| fail("socket", e))?;
    // HTTP/1.0: the server closes after the body, never chunks it.
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail("send", e))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY + 1)
        .read_to_end(&mut raw)
        .map_err(|e| fail("read", e))?;
    if raw.len() as u64 > MAX_BODY {
        return Err(BenchError::Setup(format!(
            "HTTP GET http://{addr}{path_and_query}: answer larger than {MAX_BODY} bytes"
        )));
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let status = raw
        .split(|&b| b == b'\r')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    match (status, split) {
        (Some(status), Some(at)) => Ok((status, raw.split_off(at + 4))),
        _ => Err(BenchError::Setup(format!(
            "HTTP GET http://{addr}{path_and_query}: not an HTTP answer"
        ))),
    }
}

/// Now as `YYYY-MM-DD HH:MM UTC`, for results headers.
pub fn utc_now() -> String {
    utc_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_time(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// `UpdatesReceived` of an rrdcached (or of an [`super::rrd_sink::RrdSink`]), from its `STATS` answer.
pub fn rrd_updates_received(addr: SocketAddr) -> Result<u64, BenchError> {
    use std::io::Write;
    let fail = |e: std::io::Error| BenchError::Setup(format!("rrdcached STATS at {addr}: {e}"));
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.write_all(b"STATS\nQUIT\n").map_err(fail)?;
    let mut lines = BufReader::new(stream).lines();
    let first = lines.next().transpose().map_err(fail)?.unwrap_or_default();
    let count: usize = first
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for line in lines.take(count) {
        let line = line.map_err(fail)?;
        if let Some(v) = line.strip_prefix("UpdatesReceived:") {
            return v
                .trim()
                .parse()
                .map_err(|_| BenchError::Setup(format!("rrdcached STATS at {addr}: {line}")));
        }
    }
    Err(BenchError::Setup(format!(
        "rrdcached STATS at {addr}: no UpdatesReceived in the answer"
    )))
}
