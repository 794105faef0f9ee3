//! `raftpoll-sim` as a process: the fast SNMP responder serving simulated devices, on one port
//! or a range of consecutive ports, optionally recording every answered request (see
//! [`crate::capture`]). Ready when it has printed `listening <addr>` and `ready devices=N`.

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::capture::{Poll, Request, group_polls, parse_record};
use super::process::{Daemon, start_on_free_port, test_dir, workspace_bin};

const READY_DEADLINE: Duration = Duration::from_secs(30);

/// How to start `raftpoll-sim`: its flags, where it runs and where it logs.
#[derive(Clone, Debug, Default)]
pub struct SimBuilder {
    args: Vec<OsString>,
    listen: Option<String>,
    port_range: Option<u16>,
    record: Option<PathBuf>,
    wrapper: Vec<OsString>,
    log_dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
}

impl SimBuilder {
    pub fn new() -> SimBuilder {
        SimBuilder::default()
    }

    /// UDP address (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// Serves `count` devices on one port, device `i` answering to community `{prefix}{i}`.
    pub fn devices(self, count: usize, prefix: &str) -> Self {
        self.arg("--devices")
            .arg(count.to_string())
            .arg("--community-prefix")
            .arg(prefix)
    }

    /// Listens on `count` consecutive free ports (`--ports`) instead of one.
    pub fn ports(mut self, count: u16) -> Self {
        self.port_range = Some(count.max(1));
        self
    }

    /// Serves one device per port on `count` consecutive free ports, all answering to
    /// `community`.
    pub fn one_device_per_port(self, count: u16, community: &str) -> Self {
        self.ports(count).arg("--community").arg(community)
    }

    /// The `.snmprec` recording every device serves.
    pub fn recording(self, path: impl AsRef<Path>) -> Self {
        self.arg("--recording").arg(path.as_ref())
    }

    /// Records every answered request to `path` (see [`crate::capture`]).
    pub fn record(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.record = Some(path.clone());
        self.arg("--record").arg(path)
    }

    /// Makes the device with `community` misbehave (`silent`, `slow:<ms>`, `garbage`, …).
    pub fn misbehave(self, community: &str, mode: &str) -> Self {
        self.arg("--misbehave").arg(format!("{community}={mode}"))
    }

    /// Any other flag.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A command prefix, e.g. `ip netns exec NS` (see [`Daemon::wrapper`]).
    pub fn wrapper<S: Into<OsString>>(mut self, words: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = words.into_iter().map(Into::into).collect();
        self
    }

    /// Logs to `dir/raftpoll-sim.stdout|.stderr` instead of a temp dir.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Starts the simulator and waits until it serves; panics with its logs if it cannot.
    pub fn start(self) -> SimAgent {
        let dir = match &self.log_dir {
            Some(_) => None,
            None => Some(test_dir("sim")),
        };
        let log_dir = self
            .log_dir
            .clone()
            .or_else(|| dir.as_ref().map(|d| d.path().to_path_buf()))
            .expect("a log dir");
        let span = self.port_range;
        let pick_first = move || match span {
            Some(n) => consecutive_free_udp_ports(n),
            None => 0,
        };
        start_on_free_port("raftpoll-sim", pick_first, |first| {
            let stdout = log_dir.join("raftpoll-sim.stdout");
            // A restart must not read the previous run's `ready` line.
            let _ = fs::remove_file(&stdout);
            let mut daemon = Daemon::new("raftpoll-sim", workspace_bin("raftpoll-sim"), &log_dir)
                .wrapper(self.wrapper.clone())
                .env("RUST_LOG", "warn");
            for (k, v) in &self.env {
                daemon = daemon.env(k, v);
            }
            daemon = daemon
                .arg("--listen")
                .arg(self.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into()));
            let mut ports = Vec::new();
            if let Some(n) = span {
                let last = first + (n - 1);
                daemon = daemon.arg("--ports").arg(format!("{first}-{last}"));
                ports = (first..=last).collect();
            }
            for a in &self.args {
                daemon = daemon.arg(a);
            }
            daemon.spawn();
            let mut addr = None;
            daemon.wait_ready(READY_DEADLINE, || {
                let text = fs::read_to_string(&stdout).unwrap_or_default();
                addr = text
                    .lines()
                    .find_map(|l| l.strip_prefix("listening "))
                    .and_then(|a| a.trim().parse::<SocketAddr>().ok());
                addr.is_some() && text.lines().any(|l| l.starts_with("ready "))
            })?;
            let addr = addr.ok_or("no `listening` line")?;
            if ports.is_empty() {
                ports.push(addr.port());
            }
            Ok(SimAgent {
                addr,
                ports,
                record: self.record.clone(),
                daemon,
                _dir: None,
            })
        })
        .with_dir(dir)
    }
}

/// A running `raftpoll-sim`; killed on drop.
pub struct SimAgent {
    addr: SocketAddr,
    ports: Vec<u16>,
    record: Option<PathBuf>,
    daemon: Daemon,
    _dir: Option<tempfile::TempDir>,
}

impl SimAgent {
    fn with_dir(mut self, dir: Option<tempfile::TempDir>) -> SimAgent {
        self._dir = dir;
        self
    }

    /// The first address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every port it serves (one, or the range of [`SimBuilder::one_device_per_port`]).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// SIGTERM (it prints its counters and exits), SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.daemon.terminate(grace);
    }

    /// Every request recorded so far, in time order (the record is flushed every 200 ms; a
    /// half-written last line is skipped). Empty without [`SimBuilder::record`].
    pub fn requests(&self) -> Vec<Request> {
        self.record
            .as_ref()
            .map(|p| parse_record(&fs::read_to_string(p).unwrap_or_default()))
            .unwrap_or_default()
    }

    /// Every poll so far, per community (see [`group_polls`]).
    pub fn polls(&self, burst_gap_ms: u64) -> std::collections::BTreeMap<String, Vec<Poll>> {
        group_polls(&self.requests(), burst_gap_ms)
    }

    /// What it printed on standard output (its `listening`/`ready` lines, its counters at exit).
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.daemon.stdout_path()).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        self.daemon.logs()
    }
}

/// The first of `count` consecutive UDP ports on 127.0.0.1 that were all free a moment ago.
fn consecutive_free_udp_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Each call starts elsewhere in the unprivileged range: parallel tests spread out, and a
    // retry after a lost race does not pick the same ports again.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(count);
    let seed =
        std::process::id().wrapping_mul(7919) ^ (CALLS.fetch_add(1, Ordering::Relaxed) * 4099);
    let mut first = 20_000 + seed % (40_000 - span);
    for _ in 0..64 {
        let candidate = u16::try_from(first).unwrap_or(20_000);
        let all_free =
            (0..count).all(|i| UdpSocket::bind((Ipv4Addr::LOCALHOST, candidate + i)).is_ok());
        if all_free {
            return candidate;
        }
        first = 20_000 + (first + span + 97) % (40_000 - span);
    }
    panic!("no {count} consecutive free UDP ports on 127.0.0.1");
}
