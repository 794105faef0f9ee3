//! Child-process plumbing shared by the daemons: free ports, readiness waits, logs, kill on drop.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often readiness conditions are re-checked.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many free ports a daemon is tried on before giving up (another process may grab the
/// port between our probe and the daemon's bind).
const PORT_ATTEMPTS: usize = 5;
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Polls `f` until it returns `Some`, panicking with `what` once `deadline` has passed.
pub fn wait_until<T>(deadline: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_until_every(deadline, POLL_INTERVAL, what, f)
}

/// `wait_until` re-checking every `interval`: for conditions that are costly to check (a CLI
/// run, `rrdtool fetch`) and change only every few seconds.
pub fn wait_until_every<T>(
    deadline: Duration,
    interval: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        thread::sleep(interval);
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago (see [`next_port`]).
pub fn free_udp_port() -> u16 {
    next_port(|port| UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()).unwrap_or_else(|| {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP probe socket");
        sock.local_addr().expect("probe socket address").port()
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (see [`next_port`]).
pub fn free_tcp_port() -> u16 {
    next_port(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()).unwrap_or_else(|| {
        let sock = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a TCP probe socket");
        sock.local_addr().expect("probe socket address").port()
    })
}

/// Lowest port handed out by [`next_port`].
const FIRST_TEST_PORT: u32 = 10_000;

/// The next port below the kernel's ephemeral range (`ip_local_port_range`) that
/// `free` accepts, taking them one after another from a start that differs per
/// process. The kernel never hands those out itself, neither to a `bind(0)` nor as
/// a connection's source port. A port freed by a daemon a test killed therefore
/// stays free until that test starts it again: another test's daemon cannot take it
/// meanwhile, and a client reconnecting to it cannot end up connected to itself
/// (a TCP self-connect when the kernel picks the same port as the source). `None`
/// when the range starts too low to leave room.
fn next_port(free: impl Fn(u16) -> bool) -> Option<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_start
        .checked_sub(FIRST_TEST_PORT)
        .filter(|s| *s >= 1000)?;
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST_TEST_PORT + (offset + n) % span).ok()?;
        if free(port) {
            return Some(port);
        }
    }
    None
}

/// Tries `start` on fresh ports from `pick` until one works; `start` returns Err when the
/// daemon exited early (typically: port taken).
pub fn start_on_free_port<T>(
    what: &str,
    mut pick: impl FnMut() -> u16,
    mut start: impl FnMut(u16) -> Result<T, String>,
) -> T {
    let mut errors = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        match start(pick()) {
            Ok(v) => return v,
            Err(e) => errors.push(e),
        }
    }
    panic!(
        "could not start {what} after {PORT_ATTEMPTS} attempts:\n{}",
        errors.join("\n---\n")
    );
}

/// Finds an installed program in PATH or the sbin directories (snmpd lives in /usr/sbin, which
/// is not in every user's PATH).
pub fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
    ];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: run scripts/install-deps.sh first"))
}

/// A binary of this workspace (`raftpoll`, `raftpoll-sim`), from the cargo target directory
/// the running test or tool was built into: tests run from `target/<profile>/deps/`, tools from
/// `target/<profile>/`. `RAFTPOLL_BIN_DIR` overrides the directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("RAFTPOLL_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("path of the running executable");
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.file_name().is_some_and(|n| n == "deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "`{name}` not found in {}: build the workspace's binaries first (`cargo build --workspace --bins`, \
         with --release for release tools), or set RAFTPOLL_BIN_DIR",
        dir.display()
    );
    path
}

/// Creates the temp dir of one daemon; kept after the test when RAFTPOLL_KEEP_TESTBED is set.
pub fn test_dir(prefix: &str) -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("raftpoll-{prefix}-"))
        .tempdir()
        .expect("create a temp dir");
    if std::env::var_os("RAFTPOLL_KEEP_TESTBED").is_some() {
        dir.disable_cleanup(true);
        eprintln!("testbed: keeping {}", dir.path().display());
    }
    dir
}

/// Makes `path` world-readable (and traversable): daemons that drop privileges (snmpsimd runs
/// as nobody) must read files in our 0700 temp dirs.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// One daemon process: its command line, its log files, and the running child.
pub struct Daemon {
    name: String,
    program: PathBuf,
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdout: PathBuf,
    stderr: PathBuf,
    extra_logs: Vec<PathBuf>,
    child: Option<Child>,
}

impl Daemon {
    /// Describes a daemon whose stdout/stderr go to `<log_dir>/<name>.stdout|.stderr`.
    pub fn new(name: &str, program: impl Into<PathBuf>, log_dir: &Path) -> Self {
        Daemon {
            name: name.to_string(),
            program: program.into(),
            wrapper: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            stdout: log_dir.join(format!("{name}.stdout")),
            stderr: log_dir.join(format!("{name}.stderr")),
            extra_logs: Vec::new(),
            child: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs the program under a command prefix: `["ip", "netns", "exec", "ns1"]` to start it in
    /// a network namespace, `["heaptrack", "-o", "out"]` to profile it. The prefix must exec the
    /// program (keep its pid), as those do.
    pub fn wrapper<S: Into<OsString>>(mut self, words: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = words.into_iter().map(Into::into).collect();
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// A log file the daemon writes itself, printed with the others on failure.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_logs.push(path.into());
        self
    }

    /// Starts the process (killing a previous instance first). Output is appended, so the
    /// logs of a restarted daemon keep its history.
    pub fn spawn(&mut self) {
        self.kill();
        let stdout = append(&self.stdout);
        let stderr = append(&self.stderr);
        let (program, prefix_args) = match self.wrapper.split_first() {
            Some((first, rest)) => (PathBuf::from(first), rest.to_vec()),
            None => (self.program.clone(), Vec::new()),
        };
        let mut command = Command::new(&program);
        if !self.wrapper.is_empty() {
            command.args(prefix_args).arg(&self.program);
        }
        let child = command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} ({}): {e}", self.name, self.program.display()));
        self.child = Some(child);
    }

    /// Waits until `ready` holds. Err (with the logs) if the process exits first; panics at the
    /// deadline.
    pub fn wait_ready(
        &mut self,
        deadline: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let answered = ready();
            // Checked after `ready` too: an answer may come from another daemon that holds the
            // port ours failed to bind.
            if let Some(status) = self.exit_status() {
                self.child = None;
                return Err(format!(
                    "{} exited before it was ready ({status})\n{}",
                    self.name,
                    self.logs()
                ));
            }
            if answered {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                panic!(
                    "{} not ready after {deadline:?}\n{}",
                    self.name,
                    self.logs()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The exit status if the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, …) without waiting for anything.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([format!("-{name}"), pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited within `grace`. Returns its exit
    /// status when it exited by itself within `grace` (`None`: killed, or not running).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Everything this daemon logged (all of its log files, whole), for checks that must see
    /// every line, e.g. that no secret was ever printed.
    pub fn full_logs(&self) -> String {
        [&self.stdout, &self.stderr]
            .into_iter()
            .chain(&self.extra_logs)
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Path of the file that receives the process's standard output.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The tails of all log files of this daemon.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for path in [&self.stdout, &self.stderr]
            .into_iter()
            .chain(&self.extra_logs)
        {
            let text = fs::read_to_string(path).unwrap_or_default();
            if text.trim().is_empty() {
                continue;
            }
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            out.push_str(&format!(
                "----- {} ({}) -----\n{}\n",
                self.name,
                path.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.kill();
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}
