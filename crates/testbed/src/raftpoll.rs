//! The real `raftpoll` binary as a node process with a generated config, and its CLI.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::process::{
    Daemon, free_tcp_port, start_on_free_port, test_dir, wait_until, workspace_bin,
};
use super::tls::TlsFiles;

/// Cluster secret of test nodes.
pub const TEST_SECRET: &str = "testbed-cluster-secret";

const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Path of the `raftpoll` binary built with the running test or tool.
pub fn raftpoll_bin() -> PathBuf {
    workspace_bin("raftpoll")
}

/// A node's config (issue 2's keys); `data_dir` is the node's temp dir, `listen` a free port
/// unless set. Defaults suit tests: bootstrap a cluster of one, poll every 10 s from 127.0.0.1.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_name: String,
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub seeds: Vec<String>,
    pub bootstrap: bool,
    pub secret: String,
    pub groups: Vec<u32>,
    pub frequency: u32,
    pub down_retry: u32,
    pub discovery_frequency: u32,
    pub timeout_ms: u64,
    pub retries: u32,
    pub max_in_flight: usize,
    /// Reports reach the log this often: tests poll every few seconds and
    /// read a device's status soon after, so shorter than the default 10 s.
    pub report_interval_ms: u64,
    pub source_ip: Option<String>,
    pub rrdcached: String,
    /// `[tls]` of the node; the CLI helpers then pass the same files as `--ca/--cert/--key`.
    pub tls: Option<TlsFiles>,
    /// Further keys, merged over the generated ones (tables are merged key by key).
    pub extra: toml::Table,
}

impl NodeConfig {
    pub fn new(node_name: &str, rrdcached: &str) -> Self {
        NodeConfig {
            node_name: node_name.to_string(),
            listen: None,
            advertise: None,
            seeds: Vec::new(),
            bootstrap: true,
            secret: TEST_SECRET.to_string(),
            groups: vec![0],
            frequency: 10,
            down_retry: 5,
            discovery_frequency: 3600,
            timeout_ms: 1000,
            retries: 1,
            max_in_flight: 256,
            report_interval_ms: 2000,
            source_ip: Some("127.0.0.1".into()),
            rrdcached: rrdcached.to_string(),
            tls: None,
            extra: toml::Table::new(),
        }
    }

    /// The TOML text for a node listening on `listen` with `data_dir`.
    pub fn to_toml(&self, data_dir: &Path, listen: SocketAddr) -> String {
        use toml::Value;
        let mut poller = toml::Table::new();
        poller.insert("frequency".into(), Value::Integer(self.frequency.into()));
        poller.insert("down_retry".into(), Value::Integer(self.down_retry.into()));
        poller.insert(
            "discovery_frequency".into(),
            Value::Integer(self.discovery_frequency.into()),
        );
        poller.insert("timeout_ms".into(), Value::Integer(self.timeout_ms as i64));
        poller.insert("retries".into(), Value::Integer(self.retries.into()));
        poller.insert(
            "max_in_flight".into(),
            Value::Integer(self.max_in_flight as i64),
        );
        poller.insert(
            "report_interval_ms".into(),
            Value::Integer(self.report_interval_ms as i64),
        );
        if let Some(ip) = &self.source_ip {
            poller.insert("source_ip".into(), Value::String(ip.clone()));
        }
        let mut rrd = toml::Table::new();
        rrd.insert("rrdcached".into(), Value::String(self.rrdcached.clone()));

        let mut top = toml::Table::new();
        top.insert("node_name".into(), Value::String(self.node_name.clone()));
        top.insert(
            "data_dir".into(),
            Value::String(data_dir.display().to_string()),
        );
        top.insert("listen".into(), Value::String(listen.to_string()));
        if let Some(adv) = &self.advertise {
            top.insert("advertise".into(), Value::String(adv.clone()));
        }
        top.insert(
            "seeds".into(),
            Value::Array(self.seeds.iter().cloned().map(Value::String).collect()),
        );
        top.insert("bootstrap".into(), Value::Boolean(self.bootstrap));
        top.insert("secret".into(), Value::String(self.secret.clone()));
        top.insert(
            "groups".into(),
            Value::Array(
                self.groups
                    .iter()
                    .map(|g| Value::Integer((*g).into()))
                    .collect(),
            ),
        );
        top.insert("poller".into(), Value::Table(poller));
        top.insert("rrd".into(), Value::Table(rrd));
        if let Some(tls) = &self.tls {
            top.insert("tls".into(), Value::Table(tls.to_table()));
        }
        merge(&mut top, &self.extra);
        toml::to_string(&top).expect("serialize node config")
    }
}

fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// How to run a node beyond its [`NodeConfig`]: for tools that place nodes themselves (a
/// given directory, a command prefix such as `ip netns exec NS` or a profiler, their own
/// config text).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    dir: Option<PathBuf>,
    wrapper: Vec<OsString>,
    config_text: Option<String>,
    wait_ready: bool,
    env: Vec<(OsString, OsString)>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            dir: None,
            wrapper: Vec::new(),
            config_text: None,
            wait_ready: true,
            env: Vec::new(),
        }
    }
}

impl NodeOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs in `dir` (config file, `data/`, logs), kept afterwards; default: a temp dir.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// A command prefix (see [`Daemon::wrapper`]). CPU and memory figures of the pid are then
    /// the prefix's, unless it execs the node (`ip netns exec` does, profilers do not).
    pub fn wrapper<S: Into<OsString>>(mut self, words: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = words.into_iter().map(Into::into).collect();
        self
    }

    /// Writes `text` as the config file instead of [`NodeConfig::to_toml`]: for configs that
    /// keep the product's own defaults. `NodeConfig::listen` must then be set to the text's
    /// `listen`, and `NodeConfig::secret` be its secret (the CLI helpers use both).
    pub fn config_text(mut self, text: impl Into<String>) -> Self {
        self.config_text = Some(text.into());
        self
    }

    /// An environment variable of the node (over the testbed's, e.g. its `RUST_LOG`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Returns once the process is spawned, without waiting for its port: for nodes whose
    /// port is unreachable from here (another network namespace), checked by other means.
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }
}

/// One `raftpoll node` process in its own directory (config file, data dir, logs).
pub struct RaftpollNode {
    cfg: NodeConfig,
    listen: SocketAddr,
    config_path: PathBuf,
    daemon: Daemon,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl RaftpollNode {
    /// Writes the config, starts the node, waits until its gRPC port accepts connections.
    pub fn start(cfg: NodeConfig) -> RaftpollNode {
        RaftpollNode::start_with(cfg, NodeOptions::new())
    }

    /// [`RaftpollNode::start`] with the options of `opts`.
    pub fn start_with(cfg: NodeConfig, opts: NodeOptions) -> RaftpollNode {
        let name = format!("raftpoll node {}", cfg.node_name);
        assert!(
            opts.config_text.is_none() || cfg.listen.is_some(),
            "{name}: a node with its own config text needs NodeConfig::listen"
        );
        let fixed = cfg.listen;
        let pick = || fixed.map_or_else(free_tcp_port, |a| a.port());
        start_on_free_port(&name, pick, |port| {
            let (dir, temp) = match &opts.dir {
                Some(d) => {
                    fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
                    (d.clone(), None)
                }
                None => {
                    let t = test_dir(&format!("node-{}", cfg.node_name));
                    (t.path().to_path_buf(), Some(t))
                }
            };
            let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let listen = fixed.unwrap_or(listen);
            let config_path = dir.join("raftpoll.toml");
            let text = match &opts.config_text {
                Some(text) => text.clone(),
                None => cfg.to_toml(&dir.join("data"), listen),
            };
            fs::write(&config_path, text)
                .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
            let mut daemon =
                node_daemon(&cfg.node_name, &dir, &config_path).wrapper(opts.wrapper.clone());
            for (k, v) in &opts.env {
                daemon = daemon.env(k, v);
            }
            let mut node = RaftpollNode {
                daemon,
                cfg: cfg.clone(),
                listen,
                config_path,
                dir,
                _temp: temp,
            };
            node.daemon.spawn();
            if opts.wait_ready {
                node.daemon.wait_ready(READY_DEADLINE, || accepts(listen))?;
            }
            Ok(node)
        })
    }

    /// "127.0.0.1:<port>": the node's gRPC address.
    pub fn addr(&self) -> String {
        self.listen.to_string()
    }

    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `data/` under the node's directory (where generated configs put the data dir).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The node's directory: config file, `data/`, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, …) without waiting for anything.
    pub fn signal(&self, name: &str) {
        self.daemon.signal(name);
    }

    /// SIGKILL, no shutdown of any kind.
    pub fn kill9(&mut self) {
        self.daemon.kill();
    }

    /// SIGTERM (orderly shutdown), SIGKILL after `grace`; the exit status if it exited by
    /// itself within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.daemon.terminate(grace)
    }

    /// Starts the node again with the same config and data dir (and port).
    pub fn start_again(&mut self) {
        let listen = self.listen;
        // The old listening socket may linger for a moment: retry until the deadline.
        wait_until(READY_DEADLINE, "raftpoll node to start again", || {
            self.daemon.spawn();
            self.daemon
                .wait_ready(READY_DEADLINE, || accepts(listen))
                .ok()
        });
    }

    /// Runs `raftpoll <args> --addr <this node> --secret <its secret>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_secret(args, &self.cfg.secret)
    }

    /// Same as `cli` with another secret (for wrong-secret tests).
    pub fn cli_with_secret(&self, args: &[&str], secret: &str) -> Output {
        let tls = self.cfg.tls.as_ref().map(TlsFiles::cli_args);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(tls.iter().flatten().map(String::as_str));
        cli_command(&self.addr(), secret, &all)
            .output()
            .expect("run raftpoll CLI")
    }

    /// `raftpoll <args> --addr <this node> --secret <its secret>` without the node's TLS
    /// files: for tests that pass their own `--ca/--cert/--key` (or none).
    pub fn cli_without_tls(&self, args: &[&str]) -> Output {
        cli_command(&self.addr(), &self.cfg.secret, args)
            .output()
            .expect("run raftpoll CLI")
    }

    /// `cli`, panicking (with the CLI's output) unless it succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "raftpoll {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cli_ok` of a `--json` command, parsed.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.cli_ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("raftpoll {args:?}: not JSON ({e}): {stdout}"))
    }

    /// `raftpoll status --json`, once it names a leader (within `deadline`).
    pub fn wait_leader(&self, deadline: Duration) -> serde_json::Value {
        wait_until(deadline, "a raft leader in `raftpoll status`", || {
            let out = self.cli(&["status", "--json"]);
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            status.get("leader_id")?.as_u64().map(|_| status)
        })
    }

    pub fn logs(&self) -> String {
        self.daemon.logs()
    }

    /// The node's whole stdout and stderr (all runs), not just the tails.
    pub fn full_logs(&self) -> String {
        self.daemon.full_logs()
    }
}

/// One `raftpoll` CLI run against any node address, under a command prefix (e.g. `ip netns
/// exec NS`), killed after `timeout`. Err (with stderr) unless it succeeds: for tools that
/// expect failures (a node being killed) and must not hang on a paused one.
pub fn run_cli<S: AsRef<OsStr>>(
    wrapper: &[S],
    addr: &str,
    secret: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    let bin = raftpoll_bin();
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = command
        .args(args)
        .arg("--addr")
        .arg(addr)
        .arg("--secret")
        .arg(secret)
        .env_remove("RAFTPOLL_ADDR")
        .env_remove("RAFTPOLL_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    let pid = child.id().to_string();
    // wait_with_output blocks: it runs on a thread so a hung call can be killed.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid])
                .stderr(Stdio::null())
                .status();
            Err(format!("no answer within {timeout:?}"))
        }
    }
}

/// The CLI with `args`, `--addr` and `--secret`, and none of the CLI's environment variables
/// from the test's own environment.
fn cli_command(addr: &str, secret: &str, args: &[&str]) -> Command {
    let mut command = Command::new(raftpoll_bin());
    command
        .args(args)
        .arg("--addr")
        .arg(addr)
        .arg("--secret")
        .arg(secret);
    for var in [
        "RAFTPOLL_ADDR",
        "RAFTPOLL_SECRET",
        "RAFTPOLL_CA",
        "RAFTPOLL_CERT",
        "RAFTPOLL_KEY",
    ] {
        command.env_remove(var);
    }
    command
}

/// The file in `dir` that receives the standard error (the log) of node `node_name`, all of
/// its runs appended.
pub fn node_log_path(dir: &Path, node_name: &str) -> PathBuf {
    dir.join(format!("raftpoll-{node_name}.stderr"))
}

fn node_daemon(name: &str, dir: &Path, config: &Path) -> Daemon {
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,raftpoll=debug".into());
    Daemon::new(&format!("raftpoll-{name}"), raftpoll_bin(), dir)
        .env("RUST_LOG", log)
        .arg("node")
        .arg("--config")
        .arg(config)
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Runs `raftpoll node --config <file with text>` expecting it to exit by itself (a refused
/// config) within `deadline`; panics if it is still running then.
pub fn run_node_expecting_exit(config_text: &str, deadline: Duration) -> Output {
    run_node_expecting_exit_with_env(config_text, deadline, &[])
}

/// [`run_node_expecting_exit`] with environment variables for the node (e.g. a password it
/// reads from its environment, kept off the command line).
pub fn run_node_expecting_exit_with_env(
    config_text: &str,
    deadline: Duration,
    env: &[(&str, &str)],
) -> Output {
    let dir = test_dir("node-config");
    let path = dir.path().join("raftpoll.toml");
    fs::write(&path, config_text).expect("write config");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let file = |p: &Path| fs::File::create(p).expect("create output file");
    let mut child = Command::new(raftpoll_bin())
        .arg("node")
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .expect("spawn raftpoll node");
    let read = |p: &Path| fs::read(p).unwrap_or_default();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Output {
                status,
                stdout: read(&out_path),
                stderr: read(&err_path),
            };
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "raftpoll node kept running with config:\n{config_text}\nstderr: {}",
                String::from_utf8_lossy(&read(&err_path))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
