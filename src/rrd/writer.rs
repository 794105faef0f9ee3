//! The RRD writer task: queue, file creation, batching and reconnects.
//!
//! Pollers hand samples to an [`RrdWriterHandle`]; one task owns the
//! rrdcached connection. Samples flow: bounded channel → `pending` (FIFO, at
//! most `batch_max` taken from the channel at a time, so the channel's bound
//! is the memory bound while rrdcached is away) → one `BATCH` per round.
//! Each file gets a `CREATE … -O` before its first update. Per file, only
//! strictly increasing timestamps are admitted, so `pending` is already in
//! timestamp order per file; a future on-disk spool can take the overflow of
//! the channel and refill `pending` in the same order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::{
    RrdError, RrdcachedAddr, RrdcachedClient, create_command, is_file_exists, is_no_such_file,
    is_stale_update, update_command,
};
use super::layout::{RrdUpdate, is_valid_rrd_path};

/// Timeout for connecting to rrdcached and for each of its answers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest wait between reconnect attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the writer keeps trying to hand over what it holds at shutdown
/// (default; see [`RrdWriter::spawn_with_grace`]).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Sends of one update while rrdcached says its file is missing (each one
/// preceded by a CREATE) before the update is dropped.
const MAX_ATTEMPTS: u8 = 2;
/// A CREATE writes a whole file (2.5 MB for a port at step 300, tens of ms):
/// few per batch, and each one extends the wait for the batch's answer.
const MAX_CREATES_PER_BATCH: usize = 64;
const CREATE_ALLOWANCE: Duration = Duration::from_millis(200);

/// Writer settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrdWriterConfig {
    pub addr: RrdcachedAddr,
    /// RRD step in seconds (= poll frequency), used when creating files.
    pub step: u32,
    /// Updates waiting in the channel; `submit` waits when it is full.
    pub queue_capacity: usize,
    /// Most updates in one `BATCH` (and in memory besides the channel).
    pub batch_max: usize,
}

impl RrdWriterConfig {
    /// Defaults: 10 000 queued updates, batches of up to 1 000.
    pub fn new(addr: RrdcachedAddr, step: u32) -> Self {
        RrdWriterConfig {
            addr,
            step,
            queue_capacity: 10_000,
            batch_max: 1_000,
        }
    }
}

/// A snapshot of the writer's counters, for status output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Accepted by `submit` and not yet written or dropped.
    pub queued: u64,
    /// Updates rrdcached accepted (in its cache; it writes them to disk later).
    pub written: u64,
    /// Dropped: a second update for a file in the same second.
    pub dropped_duplicate: u64,
    /// Dropped: older than the last update sent for that file.
    pub dropped_stale: u64,
    /// Failed connects, broken connections and commands rrdcached refused.
    pub errors: u64,
    /// Whether the writer holds a working connection to rrdcached.
    pub connected: bool,
    /// The most recent error, naming the rrdcached address.
    pub last_error: Option<String>,
}

/// Why an update was not queued; the update is handed back.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the RRD writer queue is full")]
    Full(RrdUpdate),
    #[error("the RRD writer has stopped")]
    Closed(RrdUpdate),
}

#[derive(Default)]
struct Shared {
    queued: AtomicU64,
    written: AtomicU64,
    dropped_duplicate: AtomicU64,
    dropped_stale: AtomicU64,
    errors: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    fn done(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cheap to clone; hands updates to the writer task.
#[derive(Clone)]
pub struct RrdWriterHandle {
    tx: mpsc::Sender<RrdUpdate>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RrdWriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RrdWriterHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl RrdWriterHandle {
    /// Queues an update, waiting while the queue is full.
    pub async fn submit(&self, update: RrdUpdate) -> Result<(), SubmitError> {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(update).await.map_err(|e| {
            self.shared.done();
            SubmitError::Closed(e.0)
        })
    }

    /// Queues an update if there is room now.
    pub fn try_submit(&self, update: RrdUpdate) -> Result<(), SubmitError> {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(update).map_err(|e| {
            self.shared.done();
            match e {
                mpsc::error::TrySendError::Full(u) => SubmitError::Full(u),
                mpsc::error::TrySendError::Closed(u) => SubmitError::Closed(u),
            }
        })
    }

    /// The writer's counters right now.
    pub fn stats(&self) -> WriterStats {
        let s = &self.shared;
        WriterStats {
            queued: s.queued.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            dropped_duplicate: s.dropped_duplicate.load(Ordering::Relaxed),
            dropped_stale: s.dropped_stale.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            connected: s.connected.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// The writer task. Start it with [`RrdWriter::spawn`].
pub struct RrdWriter {
    config: RrdWriterConfig,
    rx: mpsc::Receiver<RrdUpdate>,
    shared: Arc<Shared>,
    pending: VecDeque<Pending>,
    files: HashMap<String, FileState>,
    conn: Option<RrdcachedClient>,
    backoff: Duration,
    /// Set after a failure has been logged at warn, so an outage logs once.
    failing: bool,
    /// Limit on the hand-over at shutdown.
    grace: Duration,
}

struct Pending {
    update: RrdUpdate,
    /// Sends so far that rrdcached answered with "No such file".
    attempts: u8,
    /// Was in a batch whose connection broke: rrdcached may have it already.
    resent: bool,
}

#[derive(Default)]
struct FileState {
    created: bool,
    /// Newest timestamp admitted for this file.
    last_ts: Option<u64>,
}

/// What one command of a batch was.
enum Line {
    Create(String),
    Update(usize),
}

impl RrdWriter {
    /// Starts the writer on the current tokio runtime. It stops when
    /// `shutdown` becomes `true` (or its sender is dropped) or when every
    /// handle is gone, after handing what it holds to rrdcached (trying for
    /// at most [`SHUTDOWN_GRACE`]).
    pub fn spawn(
        config: RrdWriterConfig,
        shutdown: watch::Receiver<bool>,
    ) -> (RrdWriterHandle, JoinHandle<()>) {
        Self::spawn_with_grace(config, shutdown, SHUTDOWN_GRACE)
    }

    /// [`RrdWriter::spawn`] with another limit on the hand-over at shutdown.
    pub fn spawn_with_grace(
        config: RrdWriterConfig,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) -> (RrdWriterHandle, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let writer = RrdWriter {
            config,
            rx,
            shared: shared.clone(),
            pending: VecDeque::new(),
            files: HashMap::new(),
            conn: None,
            backoff: BACKOFF_MIN,
            failing: false,
            grace,
        };
        let task = tokio::spawn(writer.run(shutdown));
        (RrdWriterHandle { tx, shared }, task)
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            // Checked here too: under steady load `pending` is never empty.
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                break;
            }
            if self.pending.is_empty() {
                tokio::select! {
                    _ = signalled(&mut shutdown) => break,
                    next = self.rx.recv() => match next {
                        Some(update) => self.admit(update),
                        None => break,
                    },
                }
            }
            self.top_up();
            if self.pending.is_empty() {
                continue;
            }
            if !self.round(IO_TIMEOUT).await {
                tokio::select! {
                    _ = signalled(&mut shutdown) => break,
                    _ = tokio::time::sleep(self.backoff) => {}
                }
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
        self.finish().await;
    }

    /// Hands everything still queued to rrdcached, within the grace period.
    async fn finish(&mut self) {
        self.rx.close();
        while let Ok(update) = self.rx.try_recv() {
            self.admit(update);
        }
        let deadline = Instant::now() + self.grace;
        while !self.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !self.round(left.min(IO_TIMEOUT)).await {
                tokio::time::sleep(self.backoff.min(left)).await;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
        if !self.pending.is_empty() {
            let lost = self.pending.len();
            warn!(addr = %self.config.addr, lost, "rrd writer stopping with updates rrdcached did not take");
            for _ in 0..lost {
                self.shared.done();
            }
            self.shared.error(format!(
                "{lost} updates not written: rrdcached at {} unreachable at shutdown",
                self.config.addr
            ));
            self.pending.clear();
        }
        self.conn = None;
        self.shared.connected.store(false, Ordering::Relaxed);
    }

    /// Moves updates from the channel into `pending`, up to `batch_max`.
    fn top_up(&mut self) {
        while self.pending.len() < self.config.batch_max.max(1) {
            match self.rx.try_recv() {
                Ok(update) => self.admit(update),
                Err(_) => break,
            }
        }
    }

    /// Queues `update` unless it is malformed or not newer than the last
    /// update admitted for its file.
    fn admit(&mut self, update: RrdUpdate) {
        if !is_valid_rrd_path(&update.path) || update.values.len() != update.def.ds.len() {
            warn!(path = ?update.path, values = update.values.len(), ds = update.def.ds.len(),
                "dropping malformed RRD update");
            self.shared.done();
            self.shared.error(format!(
                "malformed RRD update for {:?}: bad path or {} values for {} data sources",
                update.path,
                update.values.len(),
                update.def.ds.len()
            ));
            return;
        }
        let state = match self.files.get_mut(&update.path) {
            Some(state) => state,
            None => self.files.entry(update.path.clone()).or_default(),
        };
        match state.last_ts {
            Some(last) if update.timestamp == last => {
                debug!(path = %update.path, ts = update.timestamp, "dropping second update in the same second");
                self.shared
                    .dropped_duplicate
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.done();
            }
            Some(last) if update.timestamp < last => {
                debug!(path = %update.path, ts = update.timestamp, last, "dropping update older than the last one");
                self.shared.dropped_stale.fetch_add(1, Ordering::Relaxed);
                self.shared.done();
            }
            _ => {
                state.last_ts = Some(update.timestamp);
                self.pending.push_back(Pending {
                    update,
                    attempts: 0,
                    resent: false,
                });
            }
        }
    }

    /// Connects if needed and sends one batch. False when rrdcached could
    /// not be reached or the connection broke: the caller backs off.
    async fn round(&mut self, timeout: Duration) -> bool {
        self.connect(timeout).await && self.send_batch().await
    }

    /// Makes sure a connection is open; on failure records the error.
    async fn connect(&mut self, timeout: Duration) -> bool {
        if self.conn.is_some() {
            return true;
        }
        match RrdcachedClient::connect(&self.config.addr, timeout).await {
            Ok(conn) => {
                if self.failing {
                    debug!(addr = %self.config.addr, "reconnected to rrdcached");
                } else {
                    info!(addr = %self.config.addr, "connected to rrdcached");
                }
                self.conn = Some(conn);
                self.shared.connected.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    fn failed(&mut self, e: &RrdError) {
        if self.failing {
            debug!(error = %e, "rrdcached still unavailable");
        } else {
            warn!(error = %e, queued = self.pending.len(), "rrdcached unavailable; keeping updates queued and retrying");
            self.failing = true;
        }
        self.conn = None;
        self.shared.connected.store(false, Ordering::Relaxed);
        self.shared.error(e.to_string());
    }

    /// Sends up to `batch_max` pending updates, with a CREATE before the
    /// first update of each file not yet created. On a broken connection the
    /// updates go back to the front of `pending` and this returns false.
    async fn send_batch(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let max = self.config.batch_max.max(1);
        let mut items: Vec<Pending> = Vec::with_capacity(max.min(self.pending.len()));
        let mut commands = Vec::with_capacity(items.capacity() + 8);
        let mut lines = Vec::with_capacity(items.capacity() + 8);
        let mut creating = HashSet::new();
        while items.len() < max {
            let Some(front) = self.pending.front() else {
                break;
            };
            let u = &front.update;
            let created = self.files.get(&u.path).is_some_and(|f| f.created);
            if !created && !creating.contains(&u.path) {
                if creating.len() == MAX_CREATES_PER_BATCH {
                    break;
                }
                creating.insert(u.path.clone());
                // rrdtool takes no value at or before the start time.
                let start = u.timestamp.saturating_sub(1);
                commands.push(create_command(&u.path, &u.def, self.config.step, start));
                lines.push(Line::Create(u.path.clone()));
            }
            commands.push(update_command(u));
            lines.push(Line::Update(items.len()));
            if let Some(item) = self.pending.pop_front() {
                items.push(item);
            }
        }

        let creates = u32::try_from(creating.len()).unwrap_or(u32::MAX);
        conn.set_timeout(IO_TIMEOUT + CREATE_ALLOWANCE * creates);
        let outcome = match conn.batch(&commands).await {
            Ok(outcome) => outcome,
            Err(e) => {
                for mut item in items.into_iter().rev() {
                    item.resent = true;
                    self.pending.push_front(item);
                }
                self.failed(&e);
                return false;
            }
        };
        // Backoff and warnings restart only once a batch went through, so a
        // connection that is accepted and then dropped still backs off.
        self.backoff = BACKOFF_MIN;
        if self.failing {
            info!(addr = %self.config.addr, queued = self.pending.len() + items.len(),
                "rrdcached reachable again; sending queued updates");
            self.failing = false;
        }
        let errors: HashMap<usize, &str> = outcome
            .errors
            .iter()
            .map(|e| (e.line - 1, e.message.as_str()))
            .collect();

        let mut retry = Vec::new();
        let mut refused = 0usize;
        let mut first_refusal = None;
        let mut items: Vec<Option<Pending>> = items.into_iter().map(Some).collect();
        for (index, line) in lines.iter().enumerate() {
            let error = errors.get(&index).copied();
            match line {
                Line::Create(path) => match error {
                    Some(msg) if !is_file_exists(msg) => {
                        refused += 1;
                        first_refusal.get_or_insert_with(|| format!("CREATE of {path}: {msg}"));
                    }
                    _ => self.files.entry(path.clone()).or_default().created = true,
                },
                Line::Update(i) => {
                    let Some(mut item) = items.get_mut(*i).and_then(Option::take) else {
                        continue;
                    };
                    match error {
                        None => {
                            self.shared.written.fetch_add(1, Ordering::Relaxed);
                            self.shared.done();
                        }
                        Some(msg) if item.resent && is_stale_update(msg) => {
                            // Reached rrdcached before the connection broke.
                            debug!(path = %item.update.path, "update already taken before reconnect");
                            self.shared.written.fetch_add(1, Ordering::Relaxed);
                            self.shared.done();
                        }
                        Some(msg) if is_no_such_file(msg) && item.attempts + 1 < MAX_ATTEMPTS => {
                            debug!(path = %item.update.path, "rrdcached lost the file; creating it again");
                            if let Some(f) = self.files.get_mut(&item.update.path) {
                                f.created = false;
                            }
                            item.attempts += 1;
                            retry.push(item);
                        }
                        Some(msg) => {
                            refused += 1;
                            first_refusal.get_or_insert_with(|| {
                                format!("UPDATE of {}: {msg}", item.update.path)
                            });
                            self.shared.done();
                        }
                    }
                }
            }
        }
        for item in retry.into_iter().rev() {
            self.pending.push_front(item);
        }
        if let Some(first) = first_refusal {
            warn!(addr = %self.config.addr, refused, first = %first, "rrdcached refused commands");
            self.shared
                .errors
                .fetch_add(refused as u64 - 1, Ordering::Relaxed);
            self.shared
                .error(format!("rrdcached at {} refused {first}", self.config.addr));
        }
        true
    }
}

/// Resolves when shutdown is requested or its sender is gone.
async fn signalled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rrd::layout::{DsDef, DsType, RrdDef, RrdValue};

    fn update(path: &str, ts: u64) -> RrdUpdate {
        RrdUpdate {
            path: path.to_string(),
            def: Arc::new(RrdDef {
                ds: vec![DsDef {
                    name: "x",
                    kind: DsType::Gauge,
                    min: None,
                    max: None,
                }],
            }),
            timestamp: ts,
            values: vec![RrdValue::Gauge(1.0)],
        }
    }

    fn writer() -> (RrdWriter, RrdWriterHandle) {
        let (tx, rx) = mpsc::channel(8);
        let shared = Arc::new(Shared::default());
        let w = RrdWriter {
            config: RrdWriterConfig::new("127.0.0.1:1".parse().expect("addr"), 300),
            rx,
            shared: shared.clone(),
            pending: VecDeque::new(),
            files: HashMap::new(),
            conn: None,
            backoff: BACKOFF_MIN,
            failing: false,
            grace: SHUTDOWN_GRACE,
        };
        (w, RrdWriterHandle { tx, shared })
    }

    #[tokio::test]
    async fn admits_only_increasing_timestamps_per_file() {
        let (mut w, h) = writer();
        for (path, ts) in [
            ("h/a.rrd", 10),
            ("h/a.rrd", 10),
            ("h/b.rrd", 10),
            ("h/a.rrd", 9),
            ("h/a.rrd", 11),
        ] {
            h.submit(update(path, ts)).await.expect("room");
        }
        w.top_up();
        let kept: Vec<(&str, u64)> = w
            .pending
            .iter()
            .map(|p| (p.update.path.as_str(), p.update.timestamp))
            .collect();
        assert_eq!(
            kept,
            vec![("h/a.rrd", 10), ("h/b.rrd", 10), ("h/a.rrd", 11)]
        );
        let stats = h.stats();
        assert_eq!(
            (stats.queued, stats.dropped_duplicate, stats.dropped_stale),
            (3, 1, 1)
        );
    }

    #[tokio::test]
    async fn drops_malformed_updates() {
        let (mut w, h) = writer();
        h.submit(update("/etc/x.rrd", 1)).await.expect("room");
        let mut wrong = update("h/a.rrd", 1);
        wrong.values.push(RrdValue::Unknown);
        h.submit(wrong).await.expect("room");
        w.top_up();
        assert!(w.pending.is_empty());
        let stats = h.stats();
        assert_eq!((stats.queued, stats.errors), (0, 2));
        assert!(stats.last_error.is_some_and(|e| e.contains("h/a.rrd")));
    }

    #[tokio::test]
    async fn try_submit_reports_full_and_closed() {
        let (w, h) = writer();
        for ts in 0..8 {
            h.try_submit(update("h/a.rrd", ts)).expect("room");
        }
        assert!(matches!(
            h.try_submit(update("h/a.rrd", 9)),
            Err(SubmitError::Full(_))
        ));
        drop(w);
        assert!(matches!(
            h.submit(update("h/a.rrd", 9)).await,
            Err(SubmitError::Closed(_))
        ));
        assert_eq!(h.stats().queued, 8);
    }

    #[tokio::test]
    async fn unreachable_rrdcached_is_reported_and_shutdown_is_prompt() {
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            l.local_addr().expect("addr").port()
        };
        let addr: RrdcachedAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let (stop_tx, stop_rx) = watch::channel(false);
        let grace = Duration::from_millis(300);
        let (h, task) =
            RrdWriter::spawn_with_grace(RrdWriterConfig::new(addr, 300), stop_rx, grace);
        h.submit(update("h/a.rrd", 1)).await.expect("room");
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.stats().last_error.is_none() {
            assert!(Instant::now() < deadline, "no error reported");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = h.stats();
        assert!(!stats.connected);
        assert_eq!(stats.queued, 1);
        let err = stats.last_error.unwrap_or_default();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        // Shutdown gives up after the grace period.
        stop_tx.send(true).expect("writer alive");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("writer stops within its grace period")
            .expect("writer task");
        let stats = h.stats();
        assert_eq!(stats.queued, 0);
        assert!(stats.last_error.is_some_and(|e| e.contains("not written")));
    }
}
