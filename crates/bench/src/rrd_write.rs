//! The rrdcached write path: updates per second from raftpoll's writer (BATCH, durable
//! spool) into a real rrdcached, against one `rrdtool update --daemon` process per update
//! and against one long-lived `rrdtool -` pipe.

use super::harness::{
    Running as _, Table, Usage, children_cpu_s, machine, start_rrdcached, system_bin, wait_for,
};
use super::{BenchError, Workdir};
use raftpoll::poller::modules::defs::port_def;
use raftpoll::rrd::layout::{RrdUpdate, RrdValue, update_line};
use raftpoll::rrd::writer::{RrdWriter, RrdWriterConfig};
use raftpoll_testbed::rrdcached::Rrdcached;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct RrdArgs {
    /// Port RRD files (15 DS, LibreNMS RRA set, about 2.5 MB each on disk).
    #[arg(long, default_value_t = 200)]
    pub files: usize,
    /// Updates per file sent through raftpoll's writer.
    #[arg(long, default_value_t = 100)]
    pub updates: usize,
    /// Updates sent by the `rrdtool` variants (each is slow; keep it small).
    #[arg(long, default_value_t = 2000)]
    pub rrdtool_updates: usize,
    /// Keep rrdcached's files and logs here (default: a temp dir, removed at the end).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

const STEP: u64 = 300;
/// Old enough that every sample lies in the past.
const FIRST_TS: u64 = 1_600_000_000;

struct Row {
    client: &'static str,
    updates: usize,
    seconds: f64,
    client_cpu_s: f64,
    rrdcached_cpu_s: f64,
}

pub fn run(args: &RrdArgs) -> Result<String, BenchError> {
    if args.files == 0 || args.updates == 0 {
        return Err(BenchError::Setup(
            "--files and --updates must be positive".into(),
        ));
    }
    let work = Workdir::new(args.workdir.as_deref(), "raftpoll-bench-rrd-")?;
    let rrdcached = start_rrdcached(work.path());
    let rrdtool = system_bin("rrdtool", "rrdtool")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Setup(format!("tokio runtime: {e}")))?;
    let paths: Vec<String> = (0..args.files)
        .map(|i| format!("bench/port-id{i}.rrd"))
        .collect();

    eprintln!("rrd: creating {} files", args.files);
    let mut next_k = 0u64;
    runtime.block_on(write_with_writer(&rrdcached, &paths, 1, None, &mut next_k))?;

    let mut rows = Vec::new();
    for (client, spool) in [
        (
            "raftpoll writer: BATCH, durable spool",
            Some(work.path().join("spool")),
        ),
        ("raftpoll writer: BATCH, no spool", None),
    ] {
        eprintln!("rrd: {client}");
        let before = (Usage::of(std::process::id())?, rrdcached.usage()?);
        let started = Instant::now();
        let sent = runtime.block_on(write_with_writer(
            &rrdcached,
            &paths,
            args.updates,
            spool,
            &mut next_k,
        ))?;
        rows.push(row(
            client,
            sent,
            started,
            before,
            Usage::of(std::process::id())?,
            &rrdcached,
        )?);
    }

    eprintln!("rrd: one rrdtool process per update");
    let before = (
        Usage {
            cpu_s: children_cpu_s()?,
            ..Usage::default()
        },
        rrdcached.usage()?,
    );
    let started = Instant::now();
    for i in 0..args.rrdtool_updates {
        let (path, line) = next_update(&paths, i, next_k);
        let status = Command::new(&rrdtool)
            .args(["update", "--daemon", &rrdcached.addr(), &path, &line])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| BenchError::Setup(format!("cannot run rrdtool: {e}")))?;
        if !status.success() {
            return Err(BenchError::Setup(format!(
                "rrdtool update {path} {line} failed"
            )));
        }
    }
    next_k += args.rrdtool_updates.div_ceil(paths.len()) as u64;
    rows.push(row(
        "rrdtool update --daemon, one process per update",
        args.rrdtool_updates,
        started,
        before,
        Usage {
            cpu_s: children_cpu_s()?,
            ..Usage::default()
        },
        &rrdcached,
    )?);

    eprintln!("rrd: one rrdtool - pipe");
    let before_rrdcached = rrdcached.usage()?;
    let started = Instant::now();
    let pipe_cpu = rrdtool_pipe(&rrdtool, &rrdcached, &paths, args.rrdtool_updates, next_k)?;
    rows.push(row(
        "rrdtool - (one process, one command per update)",
        args.rrdtool_updates,
        started,
        (Usage::default(), before_rrdcached),
        Usage {
            cpu_s: pipe_cpu,
            ..Usage::default()
        },
        &rrdcached,
    )?);

    let mut table = Table::new(&[
        "client",
        "updates",
        "seconds",
        "updates/s",
        "client CPU-s",
        "rrdcached CPU-s",
        "µs CPU per update (client + rrdcached)",
    ]);
    for r in &rows {
        let cpu = r.client_cpu_s + r.rrdcached_cpu_s;
        table.row(vec![
            r.client.to_string(),
            r.updates.to_string(),
            format!("{:.2}", r.seconds),
            format!("{:.0}", r.updates as f64 / r.seconds),
            format!("{:.2}", r.client_cpu_s),
            format!("{:.2}", r.rrdcached_cpu_s),
            format!("{:.1}", 1e6 * cpu / r.updates as f64),
        ]);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rrdcached write path: {} port files (15 DS), updates accepted by a real rrdcached \
         (-w 300: written to disk later); {}\n",
        args.files,
        machine()
    );
    out.push_str(&table.markdown());
    Ok(out)
}

fn row(
    client: &'static str,
    updates: usize,
    started: Instant,
    before: (Usage, Usage),
    client_after: Usage,
    rrdcached: &Rrdcached,
) -> Result<Row, BenchError> {
    Ok(Row {
        client,
        updates,
        seconds: started.elapsed().as_secs_f64(),
        client_cpu_s: client_after.cpu_s - before.0.cpu_s,
        rrdcached_cpu_s: rrdcached.usage()?.cpu_s - before.1.cpu_s,
    })
}

/// The `i`-th update after step `k0`: files round-robin, each file's times increasing.
fn next_update(paths: &[String], i: usize, k0: u64) -> (String, String) {
    let path = &paths[i % paths.len()];
    let k = k0 + (i / paths.len()) as u64;
    let update = sample(path, k);
    (path.clone(), update_line(&update))
}

fn sample(path: &str, k: u64) -> RrdUpdate {
    RrdUpdate {
        path: path.to_string(),
        def: port_def(),
        timestamp: FIRST_TS + STEP * k,
        millis: 0,
        values: (0..15).map(|d| RrdValue::Counter(k * 1000 + d)).collect(),
    }
}

/// Sends `per_file` updates to every file through raftpoll's writer and waits until
/// rrdcached has accepted them all. Returns how many were sent.
async fn write_with_writer(
    rrdcached: &Rrdcached,
    paths: &[String],
    per_file: usize,
    spool: Option<PathBuf>,
    next_k: &mut u64,
) -> Result<usize, BenchError> {
    let addr = rrdcached
        .socket_addr()
        .to_string()
        .parse()
        .map_err(|e| BenchError::Setup(format!("rrdcached address: {e}")))?;
    let mut config = RrdWriterConfig::new(addr, STEP as u32);
    config.spool_dir = spool;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (handle, task) = RrdWriter::spawn(config, shutdown)
        .map_err(|e| BenchError::Setup(format!("rrd writer: {e}")))?;
    let total = paths.len() * per_file;
    for k in 0..per_file as u64 {
        for path in paths {
            handle
                .submit(sample(path, *next_k + k))
                .await
                .map_err(|_| BenchError::Setup("the rrd writer stopped".into()))?;
        }
    }
    *next_k += per_file as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let stats = handle.stats();
        if stats.written >= total as u64 {
            break;
        }
        if stats.dropped_duplicate + stats.dropped_stale + stats.dropped_spool_full > 0 {
            return Err(BenchError::Setup(format!(
                "the writer dropped updates: {stats:?}"
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::Timeout(format!(
                "rrdcached to accept {total} updates ({} so far; last error: {:?})",
                stats.written, stats.last_error
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(handle);
    let _ = task.await;
    Ok(total)
}

/// One `rrdtool -` process; each update is a line, each answer awaited (as a poller
/// that wants to know its update arrived must). Returns the process's CPU seconds.
fn rrdtool_pipe(
    rrdtool: &Path,
    rrdcached: &Rrdcached,
    paths: &[String],
    count: usize,
    k0: u64,
) -> Result<f64, BenchError> {
    let mut child = Command::new(rrdtool)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Setup(format!("cannot run rrdtool -: {e}")))?;
    let pid = child.id();
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(BenchError::Setup("rrdtool - has no pipes".into()));
    };
    let mut answers = BufReader::new(stdout);
    let daemon = rrdcached.addr();
    let mut answer = String::new();
    for i in 0..count {
        let (path, line) = next_update(paths, i, k0);
        writeln!(stdin, "update {path} --daemon {daemon} {line}")
            .map_err(|e| BenchError::Setup(format!("rrdtool - stdin: {e}")))?;
        // Answers end with a line starting "OK" or "ERROR".
        loop {
            answer.clear();
            let n = answers
                .read_line(&mut answer)
                .map_err(|e| BenchError::Setup(format!("rrdtool - stdout: {e}")))?;
            if n == 0 {
                return Err(BenchError::Setup("rrdtool - exited".into()));
            }
            if answer.starts_with("ERROR") {
                return Err(BenchError::Setup(format!("rrdtool -: {}", answer.trim())));
            }
            if answer.starts_with("OK") {
                break;
            }
        }
    }
    let cpu = Usage::of(pid)?.cpu_s;
    drop(stdin);
    let _ = wait_for(Duration::from_secs(5), "rrdtool - to exit", || {
        child.try_wait().ok().flatten()
    });
    Ok(cpu)
}
