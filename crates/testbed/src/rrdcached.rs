//! A real rrdcached on loopback TCP (and a unix socket), plus rrdtool helpers to read the files.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{
    Daemon, find_program, free_tcp_port, start_on_free_port, test_dir, wait_until,
};

/// Rows of `rrdtool fetch`: (timestamp, one value per DS; NaN/unknown as None).
pub type FetchRows = Vec<(u64, Vec<Option<f64>>)>;

const READY_DEADLINE: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start rrdcached beyond [`Rrdcached::start`]'s defaults: for benchmarks (longer write
/// delays), and tools that place it themselves (a given directory, a fixed address, a network
/// namespace).
#[derive(Clone, Debug)]
pub struct RrdcachedOptions {
    listen: Option<SocketAddr>,
    dir: Option<PathBuf>,
    write_timeout_s: u32,
    write_delay_s: u32,
    wrapper: Vec<OsString>,
}

impl Default for RrdcachedOptions {
    fn default() -> Self {
        RrdcachedOptions {
            listen: None,
            dir: None,
            // Short, so tests see their updates on disk within seconds.
            write_timeout_s: 5,
            write_delay_s: 1,
            wrapper: Vec::new(),
        }
    }
}

impl RrdcachedOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// TCP address (default: a free port on 127.0.0.1).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Runs in `dir` (base dir `rrd/`, `journal/`, socket, pid file, logs), kept afterwards;
    /// default: a temp dir.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// `-w`: seconds an update may wait in the cache before it is written (default 5).
    pub fn write_timeout_s(mut self, secs: u32) -> Self {
        self.write_timeout_s = secs;
        self
    }

    /// `-z`: random extra delay, up to this many seconds, spreading the writes (default 1).
    pub fn write_delay_s(mut self, secs: u32) -> Self {
        self.write_delay_s = secs;
        self
    }

    /// A command prefix, e.g. `ip netns exec NS` (see [`Daemon::wrapper`]).
    pub fn wrapper<S: Into<OsString>>(mut self, words: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = words.into_iter().map(Into::into).collect();
        self
    }

    /// Starts rrdcached and waits until STATS answers on its unix socket (which works from
    /// outside a network namespace too).
    pub fn start(self) -> Rrdcached {
        let fixed = self.listen;
        let pick = || fixed.map_or_else(free_tcp_port, |a| a.port());
        start_on_free_port("rrdcached", pick, |port| {
            let (dir, temp) = match &self.dir {
                Some(d) => (d.clone(), None),
                None => {
                    let t = test_dir("rrdcached");
                    (t.path().to_path_buf(), Some(t))
                }
            };
            for sub in ["rrd", "journal"] {
                fs::create_dir_all(dir.join(sub))
                    .unwrap_or_else(|e| panic!("create {}: {e}", dir.join(sub).display()));
            }
            let addr = fixed.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            let mut rrd = Rrdcached {
                addr,
                daemon: daemon(&dir, addr, &self).wrapper(self.wrapper.clone()),
                dir,
                _temp: temp,
            };
            rrd.daemon.spawn();
            let sock = rrd.unix_socket();
            rrd.daemon.wait_ready(READY_DEADLINE, || stats_ok(&sock))?;
            Ok(rrd)
        })
    }
}

pub struct Rrdcached {
    addr: SocketAddr,
    daemon: Daemon,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Rrdcached {
    /// Starts rrdcached (`-B -R` base dir, journal, `-w 5 -z 1`) and waits until STATS answers.
    pub fn start() -> Rrdcached {
        RrdcachedOptions::new().start()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1:<port>"
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The TCP address as a socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The unix socket rrdcached also listens on.
    pub fn unix_socket(&self) -> PathBuf {
        self.dir.join("rrdcached.sock")
    }

    /// `-b` dir: relative paths in the protocol are relative to it.
    pub fn base_dir(&self) -> PathBuf {
        self.dir.join("rrd")
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// Stops rrdcached (SIGTERM: it flushes and exits; SIGKILL after 10 s).
    pub fn stop(&mut self) {
        self.daemon.terminate(Duration::from_secs(10));
    }

    /// SIGKILL: pending updates stay in the journal only.
    pub fn kill9(&mut self) {
        self.daemon.kill();
    }

    /// Starts again on the same port, base dir and journal (replayed at start).
    pub fn start_again(&mut self) {
        let sock = self.unix_socket();
        // The port may be held briefly by the old socket: retry until the deadline.
        wait_until(
            READY_DEADLINE,
            "rrdcached to start again on its port",
            || {
                self.daemon.spawn();
                self.daemon
                    .wait_ready(READY_DEADLINE, || stats_ok(&sock))
                    .ok()
            },
        );
    }

    /// Sends one protocol line; returns the status line and the lines that follow it.
    /// Err if the connection fails or the status is negative.
    pub fn command(&self, line: &str) -> Result<Vec<String>, String> {
        command(&self.addr(), line)
    }

    /// Writes one file's pending updates to disk (returns once written).
    pub fn flush(&self, rel: impl AsRef<Path>) {
        // "not found" answers (nothing cached for the file) are fine.
        let _ = self.command(&format!("FLUSH {}", rel.as_ref().display()));
    }

    /// Writes all pending updates: FLUSHALL, then wait for the queue to drain.
    pub fn flush_all(&self) {
        self.command("FLUSHALL").expect("rrdcached FLUSHALL");
        wait_until(Duration::from_secs(30), "rrdcached queue to drain", || {
            let stats = self.command("STATS").ok()?;
            stats
                .iter()
                .any(|l| l.trim() == "QueueLength: 0")
                .then_some(())
        });
    }

    /// Absolute path of `rel` under the base dir (absolute paths are kept).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.base_dir().join(rel)
    }

    /// Every .rrd file under the base dir, relative to it, sorted.
    pub fn rrd_files(&self) -> Vec<PathBuf> {
        let base = self.base_dir();
        let mut out = Vec::new();
        collect_rrds(&base, &base, &mut out);
        out.sort();
        out
    }

    /// `rrdtool info` of a file (after flushing it): key → value, string values unquoted.
    pub fn rrd_info(&self, rel: impl AsRef<Path>) -> BTreeMap<String, String> {
        self.flush(&rel);
        let out = rrdtool(&["info".as_ref(), self.path(&rel).as_os_str()]);
        out.lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_string(), unquote(v)))
            .collect()
    }

    /// `rrdtool fetch` of a file (after flushing it): rows of (timestamp, value per DS), NaN as None.
    pub fn rrd_fetch(&self, rel: impl AsRef<Path>, cf: &str, start: u64, end: u64) -> FetchRows {
        self.rrd_fetch_named(rel, cf, start, end).1
    }

    /// Like `rrd_fetch`, with the DS names in column order.
    pub fn rrd_fetch_named(
        &self,
        rel: impl AsRef<Path>,
        cf: &str,
        start: u64,
        end: u64,
    ) -> (Vec<String>, FetchRows) {
        self.flush(&rel);
        let path = self.path(&rel);
        let (start, end) = (start.to_string(), end.to_string());
        let out = rrdtool(&[
            "fetch".as_ref(),
            path.as_os_str(),
            cf.as_ref(),
            "--start".as_ref(),
            start.as_ref(),
            "--end".as_ref(),
            end.as_ref(),
        ]);
        parse_fetch(&out)
    }

    /// `rrdtool lastupdate` of a file (after flushing it): (timestamp, DS name → value text).
    pub fn rrd_lastupdate(&self, rel: impl AsRef<Path>) -> (u64, BTreeMap<String, String>) {
        self.flush(&rel);
        let out = rrdtool(&["lastupdate".as_ref(), self.path(&rel).as_os_str()]);
        let mut lines = out.lines().filter(|l| !l.trim().is_empty());
        let names: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        let (ts, values) = lines
            .next()
            .and_then(|l| l.split_once(':'))
            .unwrap_or_else(|| panic!("rrdtool lastupdate {}: no data:\n{out}", path_str(&rel)));
        let ts = ts.trim().parse().expect("lastupdate timestamp");
        (
            ts,
            names
                .into_iter()
                .zip(values.split_whitespace().map(String::from))
                .collect(),
        )
    }

    pub fn logs(&self) -> String {
        self.daemon.logs()
    }
}

fn daemon(dir: &Path, addr: SocketAddr, opts: &RrdcachedOptions) -> Daemon {
    Daemon::new("rrdcached", find_program("rrdcached"), dir)
        .arg("-g")
        .arg("-l")
        .arg(addr.to_string())
        .arg("-l")
        .arg(format!("unix:{}", dir.join("rrdcached.sock").display()))
        .arg("-b")
        .arg(dir.join("rrd"))
        .arg("-B")
        .arg("-R")
        .arg("-j")
        .arg(dir.join("journal"))
        .arg("-F")
        .arg("-w")
        .arg(opts.write_timeout_s.to_string())
        .arg("-z")
        .arg(opts.write_delay_s.to_string())
        .arg("-p")
        .arg(dir.join("rrdcached.pid"))
}

/// Whether STATS answers on the unix socket. Not over TCP: from outside a network namespace the
/// TCP address is unreachable, and no other daemon can hold our socket file.
fn stats_ok(sock: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let mut writer = &stream;
    if writer.write_all(b"STATS\n").is_err() {
        return false;
    }
    let mut status = String::new();
    BufReader::new(&stream).read_line(&mut status).is_ok()
        && status
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            .is_some_and(|n| n >= 0)
}

/// One request/answer over TCP: status line `<n> <message>` (negative n = error) then n lines.
fn command(addr: &str, line: &str) -> Result<Vec<String>, String> {
    let err = |e: std::io::Error| format!("rrdcached {addr} `{}`: {e}", first_word(line));
    let sock_addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&sock_addr, IO_TIMEOUT).map_err(err)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(err)?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(err)?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(err)?;
    let n: i64 = status
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("rrdcached {addr}: bad answer {status:?}"))?;
    if n < 0 {
        return Err(format!(
            "rrdcached {addr} `{}`: {}",
            first_word(line),
            status.trim()
        ));
    }
    let mut lines = vec![status.trim_end().to_string()];
    for _ in 0..n {
        let mut l = String::new();
        reader.read_line(&mut l).map_err(err)?;
        lines.push(l.trim_end().to_string());
    }
    Ok(lines)
}

fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

fn rrdtool(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(find_program("rrdtool"))
        // Read the file directly: never through a daemon named in the environment.
        .env_remove("RRDCACHED_ADDRESS")
        .args(args)
        .output()
        .expect("run rrdtool");
    assert!(
        out.status.success(),
        "rrdtool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parses `rrdtool fetch` output: a header of DS names, a blank line, then `ts: v v ...`.
pub fn parse_fetch(out: &str) -> (Vec<String>, FetchRows) {
    let mut lines = out.lines();
    let names = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let rows = lines
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(ts, vals)| {
            let ts = ts.trim().parse().ok()?;
            let vals = vals
                .split_whitespace()
                .map(|v| v.parse::<f64>().ok().filter(|f| !f.is_nan()))
                .collect();
            Some((ts, vals))
        })
        .collect();
    (names, rows)
}

fn collect_rrds(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rrds(base, &path, out);
        } else if path.extension().is_some_and(|e| e == "rrd")
            && let Ok(rel) = path.strip_prefix(base)
        {
            out.push(rel.to_path_buf());
        }
    }
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

fn path_str(p: impl AsRef<Path>) -> String {
    p.as_ref().display().to_string()
}
