//! An rrdcached protocol endpoint that accepts every command and keeps only what the
//! scale benchmark checks: when each device's poller-perf file was updated.
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
        f(&self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for RrdSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, counts: &Mutex<SinkCounts>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut in_batch = false;
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
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
                counts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .creates += 1;
                (!in_batch).then(|| "0 RRD created OK\n".to_string())
            }
            "LAST" => Some("-1 No such file or directory\n".to_string()),
            "QUIT" => return,
            _ => (!in_batch).then(|| "0 OK\n".to_string()),
        };
        if let Some(a) = answer
            && out.write_all(a.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// `UPDATE <host>/<file>.rrd <ts>:<v>…`: counts it, and keeps the time of poller-perf ones.
fn record_update(cmd: &str, counts: &Mutex<SinkCounts>) {
    let mut words = cmd.split(' ').skip(1);
    let (Some(path), Some(values)) = (words.next(), words.next()) else {
        return;
    };
    let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
    c.updates += 1;
    if let Some(host) = path.strip_suffix("/poller-perf.rrd")
        && let Some(ts) = values.split(':').next().and_then(|t| t.parse::<f64>().ok())
    {
        c.polls.entry(host.to_string()).or_default().push(ts);
    }
}
