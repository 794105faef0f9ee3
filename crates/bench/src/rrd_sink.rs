//! An rrdcached stand-in on loopback: speaks its line protocol (`BATCH` included),
//! acknowledges every command and keeps only counts (`STATS` reports `UpdatesReceived`)
//! and when each device's poller-perf file was updated, which the scale benchmark checks.
//!
//! The scale runs need it because 20,000 devices × 32 files with LibreNMS's RRA set would
//! take about 1.5 TB of real RRD files; the write path itself is measured against a real
//! rrdcached by `raftpoll-bench rrd`.

use super::BenchError;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Default)]
pub struct SinkCounts {
    pub creates: u64,
    pub updates: u64,
    /// Sample timestamps (unix seconds) of every `<host>/poller-perf.rrd` update, per host.
    pub polls: HashMap<String, Vec<f64>>,
}

pub struct RrdSink {
    pub addr: SocketAddr,
    counts: Arc<Mutex<SinkCounts>>,
    stop: Arc<AtomicBool>,
}

impl RrdSink {
    pub fn start() -> Result<RrdSink, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| BenchError::Setup(format!("rrd sink: cannot listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::Setup(format!("rrd sink: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| BenchError::Setup(format!("rrd sink: {e}")))?;
        let counts = Arc::new(Mutex::new(SinkCounts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (c, s) = (c.clone(), s.clone());
                        std::thread::spawn(move || serve(stream, &c, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(RrdSink { addr, counts, stop })
    }

    pub fn with<R>(&self, f: impl FnOnce(&SinkCounts) -> R) -> R {
        f(&lock(&self.counts))
    }
}

impl Drop for RrdSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One client until it closes, says QUIT, or the sink stops.
fn serve(stream: TcpStream, counts: &Mutex<SinkCounts>, stop: &AtomicBool) {
    // Short read timeouts only so that a stopped sink notices; a line cut by
    // a timeout stays in `line` and is completed by the next read.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut in_batch = false;
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if !line.ends_with('\n') => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let cmd = line.trim_end();
        let verb = cmd
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "." if in_batch => {
                in_batch = false;
                Some("0 errors\n".to_string())
            }
            "BATCH" => {
                in_batch = true;
                Some("0 Go ahead.  End with dot '.' on its own line.\n".to_string())
            }
            "UPDATE" => {
                record_update(cmd, counts);
                (!in_batch).then(|| "0 errors, enqueued 1 value(s).\n".to_string())
            }
            "CREATE" => {
                lock(counts).creates += 1;
                (!in_batch).then(|| "0 RRD created OK\n".to_string())
            }
            "LAST" => Some("-1 No such file or directory\n".to_string()),
            "STATS" => Some(format!(
                "1 Statistics follow\nUpdatesReceived: {}\n",
                lock(counts).updates
            )),
            "QUIT" => return,
            _ => (!in_batch).then(|| "0 OK\n".to_string()),
        };
        line.clear();
        if let Some(a) = answer
            && out.write_all(a.as_bytes()).is_err()
        {
            return;
        }
    }
}

fn lock(counts: &Mutex<SinkCounts>) -> std::sync::MutexGuard<'_, SinkCounts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `UPDATE <host>/<file>.rrd <ts>:<v>…`: counts it, and keeps the time of poller-perf ones.
fn record_update(cmd: &str, counts: &Mutex<SinkCounts>) {
    let mut words = cmd.split(' ').skip(1);
    let (Some(path), Some(values)) = (words.next(), words.next()) else {
        return;
    };
    let mut c = lock(counts);
    // Every value (`<ts>:<v>…`) after the file name counts, as in rrdcached's STATS.
    c.updates += cmd.split(' ').skip(2).count() as u64;
    if let Some(host) = path.strip_suffix("/poller-perf.rrd")
        && let Some(ts) = values.split(':').next().and_then(|t| t.parse::<f64>().ok())
    {
        c.polls.entry(host.to_string()).or_default().push(ts);
    }
}
