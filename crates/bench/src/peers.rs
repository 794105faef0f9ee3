//! Poll throughput against the peers: raftpoll, collectd's snmp plugin and Prometheus
//! snmp_exporter polling the same simulated devices and the same IF-MIB columns, one after
//! the other, each measured for CPU per device-poll and per varbind the agent answered.

mod configs;
mod record;
mod scraper;

use super::harness::{
    self, Node, Running, Table, free_tcp_port, start_rrdcached, system_bin, wait_for, workspace_bin,
};
use super::rrd_sink::RrdSink;
use super::{BenchError, Workdir};
use raftpoll_testbed::process::Daemon;
use raftpoll_testbed::rrdcached::Rrdcached;
use raftpoll_testbed::sim::SimBuilder;
use std::fmt::Write as _;
use std::fs;
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Community of every simulated device (test data on loopback only; never printed).
const COMMUNITY: &str = "public";

/// GETBULK max-repetitions of snmp_exporter (its default, and raftpoll's for a walk of a
/// column it has not walked before).
const EXPORTER_MAX_REPETITIONS: u32 = 25;

/// collectd read threads: enough for every host to finish well within one interval.
const COLLECTD_READ_THREADS: usize = 5;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poller {
    Raftpoll,
    Collectd,
    SnmpExporter,
}

impl Poller {
    const ALL: [Poller; 3] = [Poller::Raftpoll, Poller::Collectd, Poller::SnmpExporter];

    fn name(self) -> &'static str {
        match self {
            Poller::Raftpoll => "raftpoll",
            Poller::Collectd => "collectd",
            Poller::SnmpExporter => "snmp_exporter",
        }
    }
}

/// Where the pollers' RRD updates go.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RrdTarget {
    /// An rrdcached stand-in in the benchmark that acknowledges every command and keeps
    /// nothing: the pollers do all their writing work, no disk fills with RRD files.
    Sink,
    /// A real rrdcached; files take about 3.3 MB per raftpoll port and 0.4 MB per
    /// collectd port (about 22 GB at the default size).
    Real,
}

#[derive(clap::Args, Debug)]
pub struct PeersArgs {
    /// Simulated switches, one UDP port each.
    #[arg(long, default_value_t = 200)]
    pub devices: u16,
    /// Interfaces (IF-MIB rows) of every simulated switch.
    #[arg(long, default_value_t = 30)]
    pub ports_per_device: u32,
    /// Seconds between two polls of one device, for every poller.
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// Measured seconds per poller.
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Seconds each poller runs before it is measured (default: two intervals; raftpoll's
    /// first discovery of every device comes before this).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Keep configs, logs, RRDs and the agent's request record in DIR (default: a temp dir,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Run only these pollers (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Poller>,
    /// collectd's BulkSize: varbinds per GETBULK, split over the 13 columns. 52 = 4 rows,
    /// the most whole rows that fit in one 1472-byte answer; 0 = GETNEXT (collectd's default).
    #[arg(long, default_value_t = 52)]
    pub collectd_bulk_size: u32,
    /// Threads of the HTTP scraper that drives snmp_exporter.
    #[arg(long, default_value_t = 4)]
    pub scrapers: usize,
    /// Where raftpoll and collectd send their RRD updates.
    #[arg(long, value_enum, default_value_t = RrdTarget::Sink)]
    pub rrdcached: RrdTarget,
}

impl PeersArgs {
    fn warmup(&self) -> u64 {
        self.warmup.unwrap_or(2 * self.interval)
    }

    fn pollers(&self) -> Vec<Poller> {
        Poller::ALL
            .into_iter()
            .filter(|p| self.only.is_empty() || self.only.contains(p))
            .collect()
    }

    fn check(&self) -> Result<(), BenchError> {
        let bad = |what: &str| Err(BenchError::Setup(what.to_string()));
        if !(1..=5000).contains(&self.devices) {
            return bad("--devices must be 1 to 5000");
        }
        if !(1..=1000).contains(&self.ports_per_device) {
            return bad("--ports-per-device must be 1 to 1000");
        }
        // Every poller's worst request (timeout × tries) must fit in an interval.
        let worst = configs::TIMEOUT_S * u64::from(configs::RETRIES + 1);
        if self.interval <= worst || self.interval > 3600 {
            return bad(&format!(
                "--interval must be more than {worst} s (request timeout × tries) and at most 3600"
            ));
        }
        if self.duration < self.interval {
            return bad("--duration must be at least one --interval");
        }
        if self.scrapers == 0 || self.scrapers > 64 {
            return bad("--scrapers must be 1 to 64");
        }
        Ok(())
    }

    /// The flags of this run, as typed, for the results header.
    fn flags(&self) -> String {
        let only = self.pollers().iter().map(|p| p.name()).collect::<Vec<_>>();
        format!(
            "--devices {} --ports-per-device {} --interval {} --duration {} --warmup {} \
             --collectd-bulk-size {} --scrapers {} --rrdcached {} (pollers: {})",
            self.devices,
            self.ports_per_device,
            self.interval,
            self.duration,
            self.warmup(),
            self.collectd_bulk_size,
            self.scrapers,
            match self.rrdcached {
                RrdTarget::Sink => "sink",
                RrdTarget::Real => "real",
            },
            only.join(", ")
        )
    }
}

/// One poller's measured window.
struct Run {
    poller: Poller,
    window: record::Window,
    cpu_s: f64,
    peak_rss_kib: u64,
    /// RRD values the poller sent in the window (rrdcached's `UpdatesReceived`).
    rrd_updates: u64,
    /// Version and setup, for the notes under the table.
    about: String,
    /// Anything that makes the numbers suspect (failed scrapes, devices down, …).
    warnings: Vec<String>,
}

/// What every poller run shares.
struct Env<'a> {
    args: &'a PeersArgs,
    dir: &'a Path,
    ports: &'a [u16],
    rrdcached: SocketAddr,
    /// Base directory of a real rrdcached; `None` for the sink.
    rrd_base: Option<&'a Path>,
}

pub fn run(args: &PeersArgs) -> Result<String, BenchError> {
    args.check()?;
    let pollers = args.pollers();
    // Missing programs fail before anything starts.
    for bin in ["raftpoll-sim", "raftpoll"] {
        // Panics naming the missing binary and how to build it.
        workspace_bin(bin);
    }
    if args.rrdcached == RrdTarget::Real {
        system_bin("rrdcached", "rrdcached")?;
    }
    if pollers.contains(&Poller::Collectd) {
        system_bin("collectd", "collectd-core")?;
        if !Path::new("/usr/lib/collectd/snmp.so").is_file() {
            return Err(BenchError::Setup(
                "collectd's snmp plugin /usr/lib/collectd/snmp.so not found: install the \
                 Debian package collectd-core"
                    .into(),
            ));
        }
    }
    if pollers.contains(&Poller::SnmpExporter) {
        system_bin("prometheus-snmp-exporter", "prometheus-snmp-exporter")?;
    }
    let workdir = Workdir::new(args.workdir.as_deref(), "raftpoll-bench-peers-")?;
    let dir = workdir.path();
    let recording = dir.join("switch.snmprec");
    harness::write_switch_recording(&recording, args.ports_per_device)?;
    let record_path = dir.join("requests.log");
    let mut sim = SimBuilder::new()
        .one_device_per_port(args.devices, COMMUNITY)
        .recording(&recording)
        .record(&record_path)
        .log_dir(dir)
        .start();
    let rrd = match args.rrdcached {
        RrdTarget::Sink => Rrd::Sink(RrdSink::start()?),
        RrdTarget::Real => Rrd::Real(Box::new(start_rrdcached(dir))),
    };
    let rrd_base = rrd.base();
    let env = Env {
        args,
        dir,
        ports: sim.ports(),
        rrdcached: rrd.addr(),
        rrd_base: rrd_base.as_deref(),
    };
    let mut runs = Vec::new();
    for poller in pollers {
        progress(&format!("{}: starting", poller.name()));
        let run = match poller {
            Poller::Raftpoll => run_raftpoll(&env)?,
            Poller::Collectd => run_collectd(&env)?,
            Poller::SnmpExporter => run_exporter(&env)?,
        };
        runs.push(run);
    }
    // A graceful stop flushes the record file.
    sim.stop(Duration::from_secs(10));
    let file = fs::File::open(&record_path).map_err(|e| BenchError::io("read", &record_path, e))?;
    let windows: Vec<record::Window> = runs.iter().map(|r| r.window).collect();
    // Polls of one device are about an interval apart (raftpoll: at least half of one);
    // the requests of one poll, retries included, follow each other within the request
    // timeout (1 s).
    let burst_gap_ms = args.interval * 250;
    let counts = record::count(BufReader::new(file), &windows, burst_gap_ms);
    let mut out = report(args, &runs, &counts);
    if args.workdir.is_some() {
        let _ = writeln!(out, "\nFiles kept in {}.", dir.display());
    }
    Ok(out)
}

/// The running RRD target (kept alive for the whole run).
enum Rrd {
    Sink(RrdSink),
    Real(Box<Rrdcached>),
}

impl Rrd {
    fn addr(&self) -> SocketAddr {
        match self {
            Rrd::Sink(s) => s.addr,
            Rrd::Real(r) => r.socket_addr(),
        }
    }

    fn base(&self) -> Option<PathBuf> {
        match self {
            Rrd::Sink(_) => None,
            Rrd::Real(r) => Some(r.base_dir()),
        }
    }
}

fn progress(message: &str) {
    eprintln!("peers: {message}");
}

/// What one measured window gave.
struct Measured {
    window: record::Window,
    cpu_s: f64,
    peak_rss_kib: u64,
    rrd_updates: u64,
}

/// Samples the process's CPU time and the RRD values received over `duration`, failing
/// if the process exits meanwhile.
fn measure(
    proc: &mut impl Running,
    name: &str,
    duration: Duration,
    log: &Path,
    rrdcached: SocketAddr,
) -> Result<Measured, BenchError> {
    let updates_before = harness::rrd_updates_received(rrdcached)?;
    let before = proc.usage()?;
    let start_ms = scraper::unix_ms();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        if !proc.is_running() {
            return Err(BenchError::Setup(format!(
                "{name} exited while being measured; see {}",
                log.display()
            )));
        }
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        );
    }
    let after = proc.usage()?;
    let end_ms = scraper::unix_ms();
    let updates_after = harness::rrd_updates_received(rrdcached)?;
    Ok(Measured {
        window: record::Window { start_ms, end_ms },
        cpu_s: after.cpu_s - before.cpu_s,
        peak_rss_kib: after.peak_rss_kib,
        rrd_updates: updates_after.saturating_sub(updates_before),
    })
}

/// Files ending in `.rrd` under `dir`, recursively.
fn rrd_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                rrd_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "rrd"))
            }
        })
        .sum()
}

/// With a real rrdcached, waits until `count` RRD files exist under `dirs` of its base
/// (files are created once; steady-state polling is what is measured). A warning when
/// they do not all appear in time.
fn wait_for_rrd_files(env: &Env, who: &str, dirs: &[&str], count: usize) -> Option<String> {
    let base = env.rrd_base?;
    progress(&format!("{who}: waiting for its {count} RRD files"));
    wait_for(Duration::from_secs(600), "RRD files to be created", || {
        let found: usize = dirs.iter().map(|d| rrd_files(&base.join(d))).sum();
        (found >= count).then_some(())
    })
    .err()
    .map(|e| format!("{who}: {e}; file creation overlaps the measurement"))
}

/// Waits `secs`, failing early if the process exits.
fn warm_up(proc: &mut impl Running, name: &str, secs: u64, log: &Path) -> Result<(), BenchError> {
    progress(&format!("{name}: warming up for {secs} s"));
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if !proc.is_running() {
            return Err(BenchError::Setup(format!(
                "{name} exited during warm-up; see {}",
                log.display()
            )));
        }
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
        );
    }
    Ok(())
}

/// First line of `program args…` output (stdout or stderr) that starts with `prefix`.
fn version(program: &Path, args: &[&str], prefix: &str) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|out| {
            let text = [out.stdout, out.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| l.starts_with(prefix))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "version unknown".into())
}

fn run_raftpoll(env: &Env) -> Result<Run, BenchError> {
    let args = env.args;
    let poller_toml = format!(
        "frequency = {}\ntimeout_ms = {}\nretries = {}",
        args.interval,
        configs::TIMEOUT_S * 1000,
        configs::RETRIES
    );
    let log = env.dir.join("raftpoll").join("raftpoll-raftpoll.stderr");
    let mut node = Node::start(
        env.dir,
        "raftpoll",
        &env.rrdcached.to_string(),
        &poller_toml,
        "",
    )
    .map_err(|e| {
        BenchError::Setup(format!(
            "raftpoll did not start ({e}); see {}",
            log.display()
        ))
    })?;
    progress(&format!("raftpoll: adding {} devices", env.ports.len()));
    add_devices(&node, env.ports)?;
    // The first poll of a device discovers it; wait until every device has been polled.
    let deadline = Duration::from_secs(3 * args.interval + 60);
    progress("raftpoll: waiting for every device to be discovered and polled");
    wait_for(deadline, "raftpoll to poll every device once", || {
        let devices = node.devices().ok()?;
        let polled = devices
            .iter()
            .filter(|d| d["status"] == "up" && !d["last_polled"].is_null())
            .count();
        (devices.len() == env.ports.len() && polled == devices.len()).then_some(())
    })
    .map_err(|e| BenchError::Setup(format!("{e}; see {}", log.display())))?;
    let mut warnings = Vec::new();
    // Per device: one file per port, uptime, poller-perf and the one processor.
    let files = env.ports.len() * (args.ports_per_device as usize + 3);
    let device_dirs: Vec<String> = (0..env.ports.len()).map(|i| format!("dev{i}")).collect();
    let device_dirs: Vec<&str> = device_dirs.iter().map(String::as_str).collect();
    warnings.extend(wait_for_rrd_files(env, "raftpoll", &device_dirs, files));
    warm_up(&mut node.proc, "raftpoll", args.warmup(), &log)?;
    progress(&format!("raftpoll: measuring for {} s", args.duration));
    let duration = Duration::from_secs(args.duration);
    let m = measure(&mut node.proc, "raftpoll", duration, &log, env.rrdcached)?;
    match node.devices() {
        Ok(devices) => {
            let down = devices.iter().filter(|d| d["status"] != "up").count();
            if down > 0 {
                warnings.push(format!("raftpoll: {down} devices not up at the end"));
            }
        }
        Err(e) => warnings.push(format!("raftpoll: device list failed at the end: {e}")),
    }
    node.proc.terminate(Duration::from_secs(10));
    Ok(Run {
        poller: Poller::Raftpoll,
        window: m.window,
        cpu_s: m.cpu_s,
        peak_rss_kib: m.peak_rss_kib,
        rrd_updates: m.rrd_updates,
        about: format!(
            "raftpoll {}: one-node cluster (Raft on sled), one GETBULK walk per column of the \
             same 13 columns (max-repetitions 25 on the first walk, then sized from the previous \
             walk of the column) plus one GET of the system group and the hrProcessorLoad walk; writes \
             port-id, uptime, poller-perf and processor RRDs through a durable spool",
            env!("CARGO_PKG_VERSION")
        ),
        warnings,
    })
}

/// `raftpoll device add` for every port, a few CLI processes at a time.
fn add_devices(node: &Node, ports: &[u16]) -> Result<(), BenchError> {
    let bin = workspace_bin("raftpoll");
    let addr = node.addr.to_string();
    let threads = 4;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (bin, addr) = (&bin, &addr);
                s.spawn(move || -> Result<(), BenchError> {
                    for (i, port) in ports.iter().enumerate().skip(t).step_by(threads) {
                        let hostname = format!("dev{i}");
                        let out = Command::new(bin)
                            .args([
                                "--addr",
                                addr,
                                "device",
                                "add",
                                &hostname,
                                "--ip",
                                "127.0.0.1",
                            ])
                            .args(["--port", &port.to_string(), "--community", COMMUNITY])
                            .env("RAFTPOLL_SECRET", harness::BENCH_SECRET)
                            .output()
                            .map_err(|e| {
                                BenchError::Setup(format!("cannot run the raftpoll CLI: {e}"))
                            })?;
                        if !out.status.success() {
                            // The CLI's message names the device, never the community.
                            return Err(BenchError::Setup(format!(
                                "raftpoll device add {hostname}: {}",
                                String::from_utf8_lossy(&out.stderr).trim()
                            )));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().unwrap_or_else(|_| {
                Err(BenchError::Setup("a device-adding thread panicked".into()))
            })
        })
    })
}

fn run_collectd(env: &Env) -> Result<Run, BenchError> {
    let args = env.args;
    let bin = system_bin("collectd", "collectd-core")?;
    let dir = env.dir.join("collectd");
    fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
    let types_db = dir.join("types.db");
    fs::write(&types_db, configs::collectd_types_db())
        .map_err(|e| BenchError::io("write", &types_db, e))?;
    let conf = dir.join("collectd.conf");
    let text = configs::collectd_conf(&configs::CollectdSetup {
        // With a real rrdcached, its base directory: the relative paths collectd creates
        // files at and the ones it sends to rrdcached are then the same files.
        base_dir: env.rrd_base.unwrap_or(&dir),
        create_files: env.rrd_base.is_some(),
        pid_file: &dir.join("collectd.pid"),
        types_db: &types_db,
        rrdcached: &env.rrdcached.to_string(),
        interval_s: args.interval,
        bulk_size: args.collectd_bulk_size,
        read_threads: COLLECTD_READ_THREADS,
        ports: env.ports,
        community: COMMUNITY,
    });
    fs::write(&conf, text).map_err(|e| BenchError::io("write", &conf, e))?;
    let log = dir.join("collectd.stderr");
    // -f: stay in the foreground, so the process measured is the one polling.
    let mut proc = Daemon::new("collectd", &bin, &dir)
        .arg("-f")
        .arg("-C")
        .arg(&conf);
    proc.spawn();
    wait_for(
        Duration::from_secs(15),
        "collectd to load its plugins",
        || {
            let text = proc.full_logs();
            (text.contains("Initialization complete") || !proc.is_running()).then_some(())
        },
    )
    .map_err(|e| BenchError::Setup(format!("{e}; see {}", log.display())))?;
    if !proc.is_running() {
        return Err(BenchError::Setup(format!(
            "collectd did not start; see {}",
            log.display()
        )));
    }
    let mut warnings = Vec::new();
    let files = env.ports.len() * args.ports_per_device as usize;
    warnings.extend(wait_for_rrd_files(env, "collectd", &["collectd"], files));
    warm_up(&mut proc, "collectd", args.warmup(), &log)?;
    progress(&format!("collectd: measuring for {} s", args.duration));
    let duration = Duration::from_secs(args.duration);
    let m = measure(&mut proc, "collectd", duration, &log, env.rrdcached)?;
    proc.terminate(Duration::from_secs(10));
    let log_text = proc.full_logs();
    let errors = log_text
        .lines()
        .filter(|l| l.contains("failed") || l.contains("rror"))
        .count();
    if errors > 0 {
        warnings.push(format!(
            "collectd: {errors} error lines in {}",
            log.display()
        ));
    }
    let access = match args.collectd_bulk_size {
        0 => "GETNEXT of all 13 columns per request (BulkSize 0)".to_string(),
        n => format!("GETBULK of all 13 columns per request (BulkSize {n})"),
    };
    Ok(Run {
        poller: Poller::Collectd,
        window: m.window,
        cpu_s: m.cpu_s,
        peak_rss_kib: m.peak_rss_kib,
        rrd_updates: m.rrd_updates,
        about: format!(
            "{}: snmp plugin, one table of the 13 columns, {access}, {COLLECTD_READ_THREADS} \
             read threads; rrdcached plugin writes one RRD per port (13 DERIVE) to the same \
             rrdcached",
            version(&bin, &["-h"], "collectd ")
        ),
        warnings,
    })
}

fn run_exporter(env: &Env) -> Result<Run, BenchError> {
    let args = env.args;
    let bin = system_bin("prometheus-snmp-exporter", "prometheus-snmp-exporter")?;
    let dir = env.dir.join("snmp_exporter");
    fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
    let config = dir.join("snmp.yml");
    fs::write(
        &config,
        configs::exporter_config(COMMUNITY, EXPORTER_MAX_REPETITIONS),
    )
    .map_err(|e| BenchError::io("write", &config, e))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let log = dir.join("snmp_exporter.stderr");
    let mut proc = Daemon::new("snmp_exporter", &bin, &dir)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn");
    proc.spawn();
    wait_for(Duration::from_secs(15), "snmp_exporter to listen", || {
        (TcpStream::connect(addr).is_ok() || !proc.is_running()).then_some(())
    })
    .map_err(|e| BenchError::Setup(format!("{e}; see {}", log.display())))?;
    if !proc.is_running() {
        return Err(BenchError::Setup(format!(
            "snmp_exporter did not start; see {}",
            log.display()
        )));
    }
    let interval = Duration::from_secs(args.interval);
    let total = Duration::from_secs(args.warmup() + args.duration);
    let stop = AtomicBool::new(false);
    let plan = scraper::Plan {
        exporter: addr,
        module: configs::EXPORTER_MODULE,
        targets: env.ports,
        interval,
        threads: args.scrapers,
        // A little past the window, so the scrapes due at its end still start.
        until: Instant::now() + total + Duration::from_secs(2),
        expect: "ifHCInOctets{",
    };
    let (measured, scrapes) = std::thread::scope(|s| {
        let scrapes = s.spawn(|| scraper::run(&plan, &stop));
        let measured = warm_up(&mut proc, "snmp_exporter", args.warmup(), &log).and_then(|()| {
            progress(&format!("snmp_exporter: measuring for {} s", args.duration));
            let duration = Duration::from_secs(args.duration);
            measure(&mut proc, "snmp_exporter", duration, &log, env.rrdcached)
        });
        stop.store(true, Ordering::Relaxed);
        (measured, scrapes.join().unwrap_or_default())
    });
    let m = measured?;
    let window = m.window;
    proc.terminate(Duration::from_secs(10));
    let in_window: Vec<&scraper::Scrape> = scrapes
        .iter()
        .filter(|s| (window.start_ms..window.end_ms).contains(&s.at_ms))
        .collect();
    let failed: Vec<&&scraper::Scrape> = in_window.iter().filter(|s| !s.ok).collect();
    let mut warnings = Vec::new();
    if let Some(first) = failed.first() {
        warnings.push(format!(
            "snmp_exporter: {} of {} scrapes failed (first: {}); see {}",
            failed.len(),
            in_window.len(),
            first.error.as_deref().unwrap_or("no metrics"),
            log.display()
        ));
    }
    Ok(Run {
        poller: Poller::SnmpExporter,
        window,
        cpu_s: m.cpu_s,
        peak_rss_kib: m.peak_rss_kib,
        rrd_updates: m.rrd_updates,
        about: format!(
            "{}: module walking the 13 columns (GETBULK, max-repetitions \
             {EXPORTER_MAX_REPETITIONS}), 13 counter metrics; scraped over HTTP by the benchmark \
             ({} scrapes in the window, {} threads; the scraper's CPU is not counted); writes \
             nothing",
            version(&bin, &["--version"], "snmp_exporter"),
            in_window.len() - failed.len(),
            args.scrapers
        ),
        warnings,
    })
}

/// The results: header, table, and notes on what each poller did.
fn report(args: &PeersArgs, runs: &[Run], counts: &[record::Counts]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## raftpoll-bench peers: poll throughput and CPU, {}\n",
        harness::utc_now()
    );
    let _ = writeln!(out, "Machine: {}  ", harness::machine());
    let _ = writeln!(out, "Flags: `{}`\n", args.flags());
    let expected = u64::from(args.devices) * args.duration / args.interval;
    let rows: Vec<Row> = runs
        .iter()
        .zip(counts)
        .map(|(run, c)| Row::new(run, c, args.ports_per_device))
        .collect();
    let base = rows.iter().find(|r| r.poller == Poller::Raftpoll);
    let mut table = Table::new(&[
        "poller",
        "device-polls",
        "requests",
        "varbinds answered",
        "varbinds / poll",
        "varbinds/s",
        "RRD updates",
        "CPU-s",
        "CPU-s / 1000 polls",
        "CPU-µs / varbind",
        "CPU-µs / port counter",
        "peak RSS MiB",
        "CPU per varbind vs raftpoll",
        "CPU per poll vs raftpoll",
    ]);
    for row in &rows {
        let ratio = |mine: Option<f64>, theirs: Option<f64>| match (mine, theirs) {
            (Some(m), Some(t)) if t > 0.0 => format!("{:.2}×", m / t),
            _ => "–".into(),
        };
        let share = if expected > 0 {
            format!(" ({:.0} %)", 100.0 * row.counts.polls / expected as f64)
        } else {
            String::new()
        };
        table.row(vec![
            row.poller.name().into(),
            format!("{:.0}{share}", row.counts.polls),
            row.counts.requests.to_string(),
            row.counts.varbinds.to_string(),
            opt(row.varbinds_per_poll, 0),
            format!("{:.0}", row.varbinds_per_s),
            row.rrd_updates.to_string(),
            format!("{:.2}", row.cpu_s),
            opt(row.cpu_per_kpoll, 3),
            opt(row.cpu_us_per_varbind, 2),
            opt(row.cpu_us_per_counter, 2),
            format!("{:.1}", row.peak_rss_kib as f64 / 1024.0),
            ratio(
                row.cpu_us_per_varbind,
                base.and_then(|b| b.cpu_us_per_varbind),
            ),
            ratio(row.cpu_per_kpoll, base.and_then(|b| b.cpu_per_kpoll)),
        ]);
    }
    out.push_str(&table.markdown());
    let _ = writeln!(
        out,
        "\nEach poller ran alone against the same {} raftpoll-sim switches ({} interfaces, \
         ifTable + ifXTable, one UDP port and community each) with a {} s interval, {} s of \
         warm-up, then {} s measured. Device-polls, requests and varbinds are what the agent \
         answered in the measured window (a poll: one device's burst of requests; varbinds: \
         every varbind of every answer without error status, including the ones a walk reads \
         past the end of a column, so a poller that reads past the ends looks cheaper per \
         varbind); {expected} device-polls is one per device per interval. Port counters: the \
         13 × {} values every poller delivers per device-poll, the same work for all three. \
         RRD updates: values the poller sent to rrdcached in the window ({rrd}). CPU-s: user + \
         system time of the poller's process over the window (/proc), peak RSS: its VmHWM. \
         Ratios above 1 mean the peer spends more CPU than raftpoll.\n",
        args.devices,
        args.ports_per_device,
        args.interval,
        args.warmup(),
        args.duration,
        args.ports_per_device,
        rrd = match args.rrdcached {
            RrdTarget::Sink => {
                "`--rrdcached sink`: an rrdcached stand-in in the benchmark process that speaks \
                 its protocol, BATCH included, acknowledges every command and keeps nothing; \
                 the files would take about 3.3 MB per raftpoll port"
            }
            RrdTarget::Real =>
                "`--rrdcached real`: a real rrdcached, files created before the warm-up",
        }
    );
    for run in runs {
        let _ = writeln!(out, "- {}", run.about);
    }
    let warnings: Vec<&String> = runs.iter().flat_map(|r| &r.warnings).collect();
    for row in &rows {
        if expected > 0 && row.counts.polls < 0.9 * expected as f64 {
            let _ = writeln!(
                out,
                "- warning: {} polled {:.0} of {expected} expected device-polls: it did not keep up",
                row.poller.name(),
                row.counts.polls
            );
        }
    }
    for w in warnings {
        let _ = writeln!(out, "- warning: {w}");
    }
    out
}

/// Derived numbers of one poller.
struct Row {
    poller: Poller,
    counts: record::Counts,
    cpu_s: f64,
    peak_rss_kib: u64,
    rrd_updates: u64,
    varbinds_per_s: f64,
    varbinds_per_poll: Option<f64>,
    cpu_per_kpoll: Option<f64>,
    cpu_us_per_varbind: Option<f64>,
    /// CPU per IF-MIB counter value delivered (13 per interface per poll).
    cpu_us_per_counter: Option<f64>,
}

impl Row {
    fn new(run: &Run, counts: &record::Counts, ports_per_device: u32) -> Row {
        let secs = (run.window.end_ms.saturating_sub(run.window.start_ms)) as f64 / 1000.0;
        let per = |num: f64, den: f64| (den > 0.0).then(|| num / den);
        Row {
            poller: run.poller,
            counts: *counts,
            cpu_s: run.cpu_s,
            peak_rss_kib: run.peak_rss_kib,
            rrd_updates: run.rrd_updates,
            varbinds_per_s: if secs > 0.0 {
                counts.varbinds as f64 / secs
            } else {
                0.0
            },
            varbinds_per_poll: per(counts.varbinds as f64, counts.polls),
            cpu_per_kpoll: per(run.cpu_s * 1000.0, counts.polls),
            cpu_us_per_varbind: per(run.cpu_s * 1e6, counts.varbinds as f64),
            cpu_us_per_counter: per(
                run.cpu_s * 1e6,
                counts.polls
                    * (configs::IF_COLUMNS.len() as u64 * u64::from(ports_per_device)) as f64,
            ),
        }
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PeersArgs,
    }

    fn parse(flags: &[&str]) -> PeersArgs {
        Cli::try_parse_from([&["peers"], flags].concat())
            .unwrap()
            .args
    }

    #[test]
    fn defaults_and_only() {
        let a = parse(&[]);
        assert_eq!(
            (a.devices, a.ports_per_device, a.interval, a.duration),
            (200, 30, 10, 120)
        );
        assert_eq!(a.warmup(), 20);
        assert_eq!(a.pollers(), Poller::ALL.to_vec());
        assert!(a.check().is_ok());
        let a = parse(&["--only", "snmp-exporter,raftpoll"]);
        assert_eq!(a.pollers(), vec![Poller::Raftpoll, Poller::SnmpExporter]);
        assert!(a.flags().contains("(pollers: raftpoll, snmp_exporter)"));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_flag_named() {
        for (flags, flag) in [
            (&["--devices", "0"][..], "--devices"),
            (&["--interval", "3"][..], "--interval"),
            (&["--duration", "5"][..], "--duration"),
            (&["--scrapers", "0"][..], "--scrapers"),
        ] {
            let err = parse(flags).check().unwrap_err().to_string();
            assert!(err.contains(flag), "{flags:?}: {err}");
        }
    }

    #[test]
    fn report_ratios_against_raftpoll() {
        let args = parse(&["--devices", "10", "--duration", "100"]);
        let run = |poller, cpu_s| Run {
            poller,
            window: record::Window {
                start_ms: 0,
                end_ms: 100_000,
            },
            cpu_s,
            peak_rss_kib: 2048,
            rrd_updates: 7,
            about: format!("{poller:?} about"),
            warnings: vec![],
        };
        let runs = [run(Poller::Raftpoll, 1.0), run(Poller::Collectd, 3.0)];
        let counts = [
            record::Counts {
                requests: 300,
                varbinds: 10_000,
                polls: 100.0,
            },
            record::Counts {
                requests: 800,
                varbinds: 5_000,
                polls: 50.0,
            },
        ];
        let text = report(&args, &runs, &counts);
        // raftpoll: 100 µs per varbind, 10 CPU-s per 1000 polls; collectd: 600 and 60.
        assert!(text.contains("| raftpoll | 100 (100 %) | 300 | 10000 | 100 | 100 | 7 | 1.00 | 10.000 | 100.00 | 25.64 | 2.0 | 1.00× | 1.00× |"), "{text}");
        assert!(text.contains("| collectd | 50 (50 %) | 800 | 5000 | 100 | 50 | 7 | 3.00 | 60.000 | 600.00 | 153.85 | 2.0 | 6.00× | 6.00× |"), "{text}");
        assert!(text.contains("warning: collectd polled 50 of 100 expected device-polls"));
        assert!(!text.contains("public"), "no community in the output");
    }

    /// raftpoll's own rrdcached client (commands and BATCH) and a plain UPDATE, as
    /// librrd sends it, are acknowledged and counted by the sink.
    #[tokio::test]
    async fn rrd_sink_speaks_the_rrdcached_protocol() {
        use raftpoll::rrd::client::{RrdcachedAddr, RrdcachedClient};
        use std::io::{BufRead, Write};
        let sink = RrdSink::start().unwrap();
        let addr: RrdcachedAddr = sink.addr.to_string().parse().unwrap();
        let mut client = RrdcachedClient::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        client.ping().await.unwrap();
        let commands: Vec<String> = ["CREATE h/a.rrd -s 10 DS:x:GAUGE:20:U:U RRA:LAST:0.5:1:10"]
            .into_iter()
            .chain(["UPDATE h/a.rrd 100:1", "UPDATE h/b.rrd 100:1 110:2"])
            .map(String::from)
            .collect();
        let outcome = client.batch(&commands).await.unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(
            client.last("h/a.rrd").await.is_err(),
            "the sink keeps nothing"
        );
        let updates = sink.addr;
        let counted = tokio::task::spawn_blocking(move || {
            let mut conn = std::net::TcpStream::connect(updates).unwrap();
            conn.write_all(b"update h/c.rrd 100:5\n").unwrap();
            let mut answer = String::new();
            std::io::BufReader::new(&conn)
                .read_line(&mut answer)
                .unwrap();
            assert!(answer.starts_with("0 "), "{answer}");
            harness::rrd_updates_received(updates).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(counted, 4);
    }

    #[test]
    fn utc_time_formats_civil_dates() {
        assert_eq!(harness::utc_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(harness::utc_time(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(harness::utc_time(1_709_164_799), "2024-02-28 23:59 UTC");
        assert_eq!(
            harness::utc_time(4_107_542_400 + 3_661),
            "2100-03-01 01:01 UTC"
        );
    }
}
