//! The RRD writer task: queue, durable spool, file creation, batching and reconnects.
//!
//! Pollers hand samples to an [`RrdWriterHandle`]; one task owns the
//! rrdcached connection. Samples flow: bounded channel → admission (valid
//! path, strictly increasing timestamp per file) → the on-disk
//! [`Spool`](super::spool) when one is configured → `pending` (at most
//! `batch_max` in memory) → one `BATCH` per round → the spool's cursor moves
//! past what rrdcached confirmed. Each file gets a `CREATE … -O` before its
//! first update.
//!
//! Every update goes through the spool, not only the overflow: appends are
//! buffered and cost a memcpy; when the writer is caught up the update also
//! goes straight to `pending` without being read back. So rrdcached being
//! away for minutes only grows the spool (bounded by `spool_max_bytes`,
//! oldest dropped first), memory stays at `batch_max` plus the channel, and
//! a node killed at any moment replays its unconfirmed tail in the order it
//! was accepted — timestamp order per file — when it starts again. The
//! channel is drained to the spool before every round, so a kill loses at
//! most what was submitted during the round in flight.
//!
//! Nothing written twice: records of a previous run that may have reached
//! rrdcached (sent before the kill, not yet confirmed) are checked against
//! rrdcached's `LAST` for their file and skipped when not newer, and a
//! "illegal attempt to update … minimum one second step" answer for them (or
//! for any update re-sent after a broken connection) counts as already
//! written. Without a spool directory the writer keeps the old in-memory
//! behaviour.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::{
    BatchOutcome, RrdError, RrdcachedAddr, RrdcachedClient, create_command, is_file_exists,
    is_no_such_file, is_stale_update, update_command,
};
use super::layout::{RrdUpdate, is_valid_rrd_path};
use super::spool::{Dropped, Spool, SpoolError};

/// Timeout for connecting to rrdcached and for each of its answers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest wait between reconnect attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the writer keeps trying to hand over what it holds at shutdown
/// (default; see [`RrdWriter::spawn_with_grace`]).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default bound on the spool's size on disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Longest time spooled updates wait for an fsync (a power loss can lose
/// this much; a process kill loses nothing that reached the spool).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Sends of one update while rrdcached says its file is missing (each one
/// preceded by a CREATE) before the update is dropped.
const MAX_ATTEMPTS: u8 = 2;
/// A CREATE writes a whole file (2.5 MB for a port at step 300, tens of ms):
/// few per batch, and each one extends the wait for the batch's answer.
const MAX_CREATES_PER_BATCH: usize = 64;
const CREATE_ALLOWANCE: Duration = Duration::from_millis(200);
/// Updates moved from the channel to the spool per loop turn, so a flood
/// of submissions cannot starve sending.
const DRAIN_MAX: usize = 20_000;

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
    /// Directory of the durable spool (the node uses `data_dir/spool`);
    /// `None` keeps updates in memory only.
    pub spool_dir: Option<PathBuf>,
    /// Bound on the spool's size on disk; past it the oldest updates are
    /// dropped and counted in `dropped_spool_full`.
    pub spool_max_bytes: u64,
}

impl RrdWriterConfig {
    /// Defaults: 10 000 queued updates, batches of up to 1 000, no spool
    /// (1 GiB bound once `spool_dir` is set).
    pub fn new(addr: RrdcachedAddr, step: u32) -> Self {
        RrdWriterConfig {
            addr,
            step,
            queue_capacity: 10_000,
            batch_max: 1_000,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
        }
    }
}

/// A snapshot of the writer's counters, for status output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Accepted by `submit` and not yet written or dropped.
    pub queued: u64,
    /// Updates rrdcached accepted (in its cache; it writes them to disk
    /// later), including spooled ones of a previous run it already had.
    pub written: u64,
    /// Dropped: a second update for a file in the same second.
    pub dropped_duplicate: u64,
    /// Dropped: older than the last update sent for that file.
    pub dropped_stale: u64,
    /// Dropped: the spool reached `spool_max_bytes`, oldest first.
    pub dropped_spool_full: u64,
    /// Failed connects, broken connections, commands rrdcached refused and
    /// spool I/O errors.
    pub errors: u64,
    /// Whether the writer holds a working connection to rrdcached.
    pub connected: bool,
    /// The most recent error, naming the rrdcached address or spool file.
    pub last_error: Option<String>,
    /// Size of the spool's segment files on disk.
    pub spool_bytes: u64,
    /// Updates in the spool that rrdcached has not confirmed yet.
    pub spool_records: u64,
    /// Unix seconds of the oldest unconfirmed spooled update (None when
    /// the spool holds none).
    pub spool_oldest_ts: Option<u64>,
    /// Damaged spool regions skipped (e.g. a record torn by a kill -9).
    pub spool_corrupt: u64,
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
    dropped_spool_full: AtomicU64,
    errors: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    spool_bytes: AtomicU64,
    spool_records: AtomicU64,
    /// 0 is "none".
    spool_oldest_ts: AtomicU64,
    spool_corrupt: AtomicU64,
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
            dropped_spool_full: s.dropped_spool_full.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            connected: s.connected.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            spool_bytes: s.spool_bytes.load(Ordering::Relaxed),
            spool_records: s.spool_records.load(Ordering::Relaxed),
            spool_oldest_ts: Some(s.spool_oldest_ts.load(Ordering::Relaxed)).filter(|t| *t > 0),
            spool_corrupt: s.spool_corrupt.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
impl RrdWriterHandle {
    /// A handle whose updates go to the returned receiver, for tests of the
    /// code that submits them.
    pub(crate) fn to_channel(capacity: usize) -> (RrdWriterHandle, mpsc::Receiver<RrdUpdate>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            RrdWriterHandle {
                tx,
                shared: Arc::default(),
            },
            rx,
        )
    }
}

/// The writer task. Start it with [`RrdWriter::spawn`].
pub struct RrdWriter {
    config: RrdWriterConfig,
    rx: mpsc::Receiver<RrdUpdate>,
    shared: Arc<Shared>,
    pending: VecDeque<Pending>,
    /// Accepted updates not in the spool (no spool, or it failed), in
    /// order after everything spooled.
    memory: VecDeque<RrdUpdate>,
    spool: Option<Spool>,
    /// Spooled records below this seq are from a previous run.
    run_first_seq: u64,
    /// Records of a previous run below this seq may be in rrdcached.
    maybe_sent_end: u64,
    /// Their files, to ask rrdcached's `LAST` for at the first connect.
    last_to_query: HashSet<String>,
    /// rrdcached's `LAST` for those files.
    last_known: HashMap<String, u64>,
    /// Per file, keyed by [`file_key`]: a node writes ~32 files per device,
    /// and 640,000 path strings as keys would cost more memory than the rest
    /// of the writer. A B-tree, not a hash map: it grows a node at a time,
    /// where a hash map doubles and holds its old and new tables at once (at
    /// 20,000 devices a 52 MB moment, the peak of a node's first interval
    /// after a start in a heap profile).
    files: BTreeMap<u64, FileState>,
    conn: Option<RrdcachedClient>,
    backoff: Duration,
    retry_at: Option<Instant>,
    next_sync: Instant,
    /// Set after a failure has been logged at warn, so an outage logs once.
    failing: bool,
    spool_failing: bool,
    /// Limit on the hand-over at shutdown.
    grace: Duration,
}

struct Pending {
    update: RrdUpdate,
    /// Its spool seq; None when held in memory only.
    seq: Option<u64>,
    /// Counted in `queued` (submitted during this run).
    counted: bool,
    /// Sends so far that rrdcached answered with "No such file".
    attempts: u8,
    /// May be in rrdcached already (re-sent after a broken connection, or
    /// sent before a restart): a "too old" answer means written.
    resent: bool,
}

impl Pending {
    fn new(update: RrdUpdate, seq: Option<u64>) -> Self {
        Pending {
            update,
            seq,
            counted: true,
            attempts: 0,
            resent: false,
        }
    }
}

/// A 64-bit hash of an RRD path. Two paths of one node sharing a key (odds
/// about 1 in 10^8 at 640,000 files) would at worst skip a CREATE, which the
/// "no such file" retry repairs, or drop an update as stale.
fn file_key(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// What the writer knows of one file, in 8 bytes (one per file).
#[derive(Default)]
struct FileState {
    /// Newest timestamp admitted for this file, unix seconds; 0: none yet.
    /// (RRD timestamps fit 32 bits until 2106; a later one is kept as the
    /// largest, which only stops a duplicate from being dropped.)
    last_ts: u32,
    created: bool,
}

impl FileState {
    fn last_ts(&self) -> Option<u64> {
        (self.last_ts != 0).then_some(u64::from(self.last_ts))
    }

    fn set_last_ts(&mut self, ts: u64) {
        self.last_ts = u32::try_from(ts).unwrap_or(u32::MAX);
    }
}

/// What one command of a batch was.
enum Line {
    Create(String),
    Update(usize),
}

impl RrdWriter {
    /// Opens the spool (if configured; replaying it comes first) and starts
    /// the writer on its own thread; the returned task ends with it, and
    /// aborting the task stops the writer on the spot. It stops when `shutdown`
    /// becomes `true` (or its sender is dropped) or when every handle is
    /// gone, after handing what it holds to rrdcached (trying for at most
    /// [`SHUTDOWN_GRACE`]; with a spool, what is left stays spooled).
    pub fn spawn(
        config: RrdWriterConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(RrdWriterHandle, JoinHandle<()>), SpoolError> {
        Self::spawn_with_grace(config, shutdown, SHUTDOWN_GRACE)
    }

    /// [`RrdWriter::spawn`] with another limit on the hand-over at shutdown.
    pub fn spawn_with_grace(
        config: RrdWriterConfig,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<(RrdWriterHandle, JoinHandle<()>), SpoolError> {
        let path = config
            .spool_dir
            .clone()
            .unwrap_or_else(|| "rrd writer thread".into());
        let thread_error = |source| SpoolError { path, source };
        let (mut writer, handle) = Self::new(config, grace)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(thread_error.clone())?;
        // Its own thread and runtime: spool reads and writes block, and must
        // never stall the node's runtime (Raft heartbeats, polls).
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("rrd-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = writer.run(shutdown) => {}
                        // The task was aborted: stop where we are, as a kill.
                        _ = cancel_rx => {}
                    }
                });
                let _ = done_tx.send(());
            })
            .map_err(thread_error)?;
        let stopper = WriterThread {
            cancel: Some(cancel_tx),
            thread: Some(thread),
        };
        let task = tokio::spawn(async move {
            let _ = done_rx.await;
            drop(stopper);
        });
        Ok((handle, task))
    }

    fn new(
        config: RrdWriterConfig,
        grace: Duration,
    ) -> Result<(Self, RrdWriterHandle), SpoolError> {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let mut writer = RrdWriter {
            rx,
            shared: shared.clone(),
            pending: VecDeque::new(),
            memory: VecDeque::new(),
            spool: None,
            run_first_seq: 0,
            maybe_sent_end: 0,
            last_to_query: HashSet::new(),
            last_known: HashMap::new(),
            files: BTreeMap::new(),
            conn: None,
            backoff: BACKOFF_MIN,
            retry_at: None,
            next_sync: Instant::now() + SYNC_INTERVAL,
            failing: false,
            spool_failing: false,
            grace,
            config,
        };
        if let Some(dir) = &writer.config.spool_dir {
            let (spool, recovery) = Spool::open(dir, writer.config.spool_max_bytes)?;
            if recovery.records > 0 || recovery.corrupt > 0 {
                info!(dir = %dir.display(), records = recovery.records, files = recovery.last_ts.len(),
                    corrupt = recovery.corrupt, "replaying RRD spool");
            }
            writer.run_first_seq = spool.next_seq();
            writer.maybe_sent_end = recovery.maybe_sent_end;
            writer.last_to_query = recovery.maybe_sent_files;
            // New samples must be newer than spooled ones of the same file.
            for (path, ts) in recovery.last_ts {
                writer
                    .files
                    .entry(file_key(&path))
                    .or_default()
                    .set_last_ts(ts);
            }
            writer.spool = Some(spool);
            writer.publish();
            if let Some(ts) = recovery.oldest_ts {
                writer
                    .shared
                    .spool_oldest_ts
                    .store(ts.max(1), Ordering::Relaxed);
            }
        }
        Ok((writer, RrdWriterHandle { tx, shared }))
    }

    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            // Checked here too: under steady load `pending` is never empty.
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                break;
            }
            self.drain();
            self.refill();
            self.flush_spool();
            if Instant::now() >= self.next_sync {
                self.sync_spool().await;
            }
            self.publish();
            let blocked = self.retry_at.filter(|t| *t > Instant::now());
            if self.pending.is_empty() || blocked.is_some() {
                let wake = match (blocked, self.sync_due()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let room = self.has_room();
                tokio::select! {
                    _ = signalled(&mut shutdown) => break,
                    next = self.rx.recv(), if room => match next {
                        Some(update) => self.admit(update),
                        None => break,
                    },
                    _ = sleep_until(wake) => {}
                }
                continue;
            }
            if self.round(IO_TIMEOUT).await {
                self.retry_at = None;
            } else {
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
            self.publish();
        }
        self.finish().await;
    }

    /// Hands what it can to rrdcached within the grace period; with a spool
    /// the rest stays on disk for the next start.
    async fn finish(&mut self) {
        self.rx.close();
        while let Ok(update) = self.rx.try_recv() {
            self.admit(update);
        }
        let deadline = Instant::now() + self.grace;
        loop {
            self.refill();
            if self.pending.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !self.round(left.min(IO_TIMEOUT)).await {
                if self.spool.is_some() {
                    break;
                }
                tokio::time::sleep(self.backoff.min(left)).await;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
        let lost = self.pending.iter().filter(|p| p.seq.is_none()).count() + self.memory.len();
        if lost > 0 {
            warn!(addr = %self.config.addr, lost, "rrd writer stopping with updates rrdcached did not take");
            self.shared.error(format!(
                "{lost} updates not written: rrdcached at {} unreachable at shutdown",
                self.config.addr
            ));
        }
        self.pending.clear();
        self.memory.clear();
        self.flush_spool();
        self.sync_spool().await;
        self.publish();
        if let Some(spool) = &self.spool {
            let kept = spool.records();
            if kept > 0 {
                info!(dir = %spool.dir().display(), kept, "rrd writer stopping; updates kept in the spool for the next start");
            }
        }
        // Nothing of this run is queued any more: written, dropped or spooled.
        self.shared.queued.store(0, Ordering::Relaxed);
        self.conn = None;
        self.shared.connected.store(false, Ordering::Relaxed);
    }

    /// Whether the channel may be drained now: always with a working spool,
    /// else while the in-memory queue is below `batch_max`.
    fn has_room(&self) -> bool {
        self.memory.len() < self.config.batch_max.max(1)
    }

    /// Moves updates from the channel into the spool (or memory).
    fn drain(&mut self) {
        for _ in 0..DRAIN_MAX {
            if !self.has_room() {
                break;
            }
            match self.rx.try_recv() {
                Ok(update) => self.admit(update),
                Err(_) => break,
            }
        }
    }

    /// Fills `pending` up to `batch_max`: spooled records first (oldest
    /// first), then updates held only in memory.
    fn refill(&mut self) {
        let max = self.config.batch_max.max(1);
        while self.pending.len() < max {
            if let Some(spool) = self.spool.as_mut()
                && !spool.caught_up()
            {
                match spool.read_next() {
                    Ok(Some(rec)) => {
                        self.pending.push_back(Pending {
                            counted: rec.seq >= self.run_first_seq,
                            resent: rec.seq < self.maybe_sent_end,
                            ..Pending::new(rec.update, Some(rec.seq))
                        });
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Order matters more than progress: retry next turn.
                        self.spool_error(&e);
                        break;
                    }
                }
                if !spool.caught_up() {
                    break;
                }
            }
            match self.memory.pop_front() {
                Some(update) => self.pending.push_back(Pending::new(update, None)),
                None => break,
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
        let state = self.files.entry(file_key(&update.path)).or_default();
        match state.last_ts() {
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
                state.set_last_ts(update.timestamp);
                self.accept(update);
            }
        }
    }

    /// Appends an admitted update to the spool (and to `pending` when the
    /// writer is caught up), or keeps it in memory without a spool.
    fn accept(&mut self, update: RrdUpdate) {
        let max = self.config.batch_max.max(1);
        if let Some(spool) = self.spool.as_mut()
            && self.memory.is_empty()
        {
            let caught_up = spool.caught_up();
            match spool.append(&update) {
                Ok(seq) => {
                    self.spool_failing = false;
                    if caught_up && self.pending.len() < max {
                        spool.skip_to_end();
                        self.pending.push_back(Pending::new(update, Some(seq)));
                    }
                    match spool.enforce_limit() {
                        Ok(dropped) => self.forget_dropped(dropped),
                        Err(e) => self.spool_error(&e),
                    }
                    return;
                }
                Err(e) => self.spool_error(&e),
            }
        }
        self.memory.push_back(update);
    }

    /// Accounts for spooled records the size bound deleted.
    fn forget_dropped(&mut self, dropped: Dropped) {
        let Some((from, to)) = dropped.seqs else {
            return;
        };
        let floor = self.spool.as_ref().map_or(0, Spool::ack_seq);
        self.pending.retain(|p| p.seq.is_none_or(|s| s >= floor));
        self.shared
            .dropped_spool_full
            .fetch_add(dropped.records, Ordering::Relaxed);
        let ours = to.saturating_sub(from.max(self.run_first_seq));
        self.shared.queued.fetch_sub(
            ours.min(self.shared.queued.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }

    fn spool_error(&mut self, e: &SpoolError) {
        if self.spool_failing {
            debug!(error = %e, "RRD spool still failing");
        } else {
            warn!(error = %e, "RRD spool I/O failed; keeping updates in memory meanwhile");
            self.spool_failing = true;
        }
        self.shared.error(e.to_string());
    }

    /// Hands buffered spool appends to the OS.
    fn flush_spool(&mut self) {
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.flush()
        {
            self.spool_error(&e);
        }
    }

    /// When the next fsync is due, if anything awaits one.
    fn sync_due(&self) -> Option<Instant> {
        self.spool
            .as_ref()
            .filter(|s| s.needs_sync())
            .map(|_| self.next_sync)
    }

    /// fsyncs the spool off the async threads.
    async fn sync_spool(&mut self) {
        self.next_sync = Instant::now() + SYNC_INTERVAL;
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if !spool.needs_sync() {
            return;
        }
        let dir = spool.dir().to_path_buf();
        let files = match spool.sync_handles() {
            Ok(files) => files,
            Err(e) => return self.spool_error(&e),
        };
        let synced =
            tokio::task::spawn_blocking(move || files.iter().try_for_each(|f| f.sync_all())).await;
        match synced {
            Ok(Ok(())) => {}
            Ok(Err(source)) => self.spool_error(&SpoolError { path: dir, source }),
            Err(join) => self.spool_error(&SpoolError {
                path: dir,
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }

    /// Publishes the spool's size for status output.
    fn publish(&self) {
        let Some(spool) = &self.spool else {
            return;
        };
        let s = &self.shared;
        let records = spool.records();
        s.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        s.spool_records.store(records, Ordering::Relaxed);
        s.spool_corrupt.store(spool.corrupt(), Ordering::Relaxed);
        if records == 0 {
            s.spool_oldest_ts.store(0, Ordering::Relaxed);
        } else if let Some(p) = self.pending.iter().find(|p| p.seq.is_some()) {
            s.spool_oldest_ts
                .store(p.update.timestamp.max(1), Ordering::Relaxed);
        }
    }

    /// Moves the spool's cursor past everything rrdcached confirmed: up to
    /// the first spooled record still pending (or still unread).
    fn ack_spool(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let first = self
            .pending
            .iter()
            .find_map(|p| p.seq)
            .unwrap_or_else(|| spool.read_seq());
        if let Err(e) = spool.ack(first) {
            self.spool_error(&e);
        }
    }

    /// Connects if needed and sends one batch. False when rrdcached could
    /// not be reached or the connection broke: the caller backs off.
    async fn round(&mut self, timeout: Duration) -> bool {
        self.connect(timeout).await && self.query_last().await && self.send_batch().await
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

    /// Once after a restart: asks rrdcached how far each file whose spooled
    /// records may have been sent already got, so they are not sent twice.
    async fn query_last(&mut self) -> bool {
        if self.last_to_query.is_empty() {
            return true;
        }
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        conn.set_timeout(IO_TIMEOUT);
        let mut paths: Vec<String> = self.last_to_query.iter().cloned().collect();
        paths.sort();
        for path in paths {
            match conn.last(&path).await {
                Ok(ts) => {
                    self.last_known.insert(path.clone(), ts);
                }
                Err(RrdError::Command { message, .. }) if is_no_such_file(&message) => {}
                Err(RrdError::Command { message, .. }) => {
                    debug!(path = %path, message = %message, "rrdcached LAST refused; relying on its stale-update answers");
                }
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            }
            self.last_to_query.remove(&path);
        }
        true
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

    /// Whether rrdcached has `item` already: a record of a previous run
    /// not newer than the file's `LAST`.
    fn already_there(&self, item: &Pending) -> bool {
        item.seq.is_some_and(|s| s < self.maybe_sent_end)
            && self
                .last_known
                .get(&item.update.path)
                .is_some_and(|last| item.update.timestamp <= *last)
    }

    /// The update went into rrdcached.
    fn written(&self, item: &Pending) {
        self.shared.written.fetch_add(1, Ordering::Relaxed);
        if item.counted {
            self.shared.done();
        }
    }

    /// Sends up to `batch_max` pending updates, with a CREATE before the
    /// first update of each file not yet created. On a broken connection the
    /// updates go back to the front of `pending` and this returns false.
    async fn send_batch(&mut self) -> bool {
        let batch = self.build_batch();
        if batch.items.is_empty() {
            if batch.skipped {
                self.ack_spool();
            }
            return true;
        }
        self.mark_sent(&batch.items);
        let Some(conn) = self.conn.as_mut() else {
            self.requeue(batch.items, false);
            return false;
        };
        let creates = u32::try_from(batch.creates).unwrap_or(u32::MAX);
        conn.set_timeout(IO_TIMEOUT + CREATE_ALLOWANCE * creates);
        let outcome = match conn.batch(&batch.commands).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.requeue(batch.items, true);
                self.failed(&e);
                return false;
            }
        };
        self.batch_went_through(batch.items.len());
        self.apply_outcome(&batch.lines, batch.items, &outcome);
        true
    }

    /// Takes the next batch off `pending`: up to `batch_max` updates, each
    /// file's CREATE before its first update while it is not created, at
    /// most [`MAX_CREATES_PER_BATCH`] of them. Spooled updates rrdcached
    /// has already are counted written and skipped.
    fn build_batch(&mut self) -> Batch {
        let max = self.config.batch_max.max(1);
        let capacity = max.min(self.pending.len());
        let mut batch = Batch {
            items: Vec::with_capacity(capacity),
            commands: Vec::with_capacity(capacity + 8),
            lines: Vec::with_capacity(capacity + 8),
            creates: 0,
            skipped: false,
        };
        let mut creating = HashSet::new();
        while batch.items.len() < max {
            let Some(front) = self.pending.front() else {
                break;
            };
            if self.already_there(front) {
                if let Some(item) = self.pending.pop_front() {
                    debug!(path = %item.update.path, ts = item.update.timestamp, "spooled update already in rrdcached");
                    self.written(&item);
                    batch.skipped = true;
                }
                continue;
            }
            let u = &front.update;
            let created = self
                .files
                .get(&file_key(&u.path))
                .is_some_and(|f| f.created);
            if !created && !creating.contains(&u.path) {
                if creating.len() == MAX_CREATES_PER_BATCH {
                    break;
                }
                creating.insert(u.path.clone());
                // rrdtool takes no value at or before the start time.
                let start = u.timestamp.saturating_sub(1);
                batch
                    .commands
                    .push(create_command(&u.path, &u.def, self.config.step, start));
                batch.lines.push(Line::Create(u.path.clone()));
            }
            batch.commands.push(update_command(u));
            batch.lines.push(Line::Update(batch.items.len()));
            if let Some(item) = self.pending.pop_front() {
                batch.items.push(item);
            }
        }
        batch.creates = creating.len();
        batch
    }

    /// Records in the spool, before sending, that these may be in rrdcached
    /// after a kill.
    fn mark_sent(&mut self, items: &[Pending]) {
        if let Some(last_seq) = items.iter().filter_map(|p| p.seq).max()
            && let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.mark_sent(last_seq)
        {
            self.spool_error(&e);
        }
    }

    /// Puts unsent updates back at the front of `pending`, in order;
    /// `resent` when they may have reached rrdcached.
    fn requeue(&mut self, items: Vec<Pending>, resent: bool) {
        for mut item in items.into_iter().rev() {
            item.resent |= resent;
            self.pending.push_front(item);
        }
    }

    /// Backoff and warnings restart only once a batch went through, so a
    /// connection that is accepted and then dropped still backs off.
    fn batch_went_through(&mut self, sent: usize) {
        self.backoff = BACKOFF_MIN;
        if self.failing {
            info!(addr = %self.config.addr, queued = self.pending.len() + sent,
                "rrdcached reachable again; sending queued updates");
            self.failing = false;
        }
    }

    /// Applies rrdcached's answer to a batch: files created, updates
    /// written, retried (file lost) or refused, then the spool's cursor
    /// moved and refusals reported.
    fn apply_outcome(&mut self, lines: &[Line], items: Vec<Pending>, outcome: &BatchOutcome) {
        let errors: HashMap<usize, &str> = outcome
            .errors
            .iter()
            .map(|e| (e.line - 1, e.message.as_str()))
            .collect();
        let mut refusals = Refusals::default();
        let mut retry = Vec::new();
        let mut items: Vec<Option<Pending>> = items.into_iter().map(Some).collect();
        for (index, line) in lines.iter().enumerate() {
            let error = errors.get(&index).copied();
            match line {
                Line::Create(path) => self.create_answered(path, error, &mut refusals),
                Line::Update(i) => {
                    let Some(item) = items.get_mut(*i).and_then(Option::take) else {
                        continue;
                    };
                    if let Some(item) = self.update_answered(item, error, &mut refusals) {
                        retry.push(item);
                    }
                }
            }
        }
        for item in retry.into_iter().rev() {
            self.pending.push_front(item);
        }
        self.ack_spool();
        self.report(refusals);
    }

    /// A CREATE's answer: "file exists" counts as created.
    fn create_answered(&mut self, path: &str, error: Option<&str>, refusals: &mut Refusals) {
        match error {
            Some(msg) if !is_file_exists(msg) => {
                refusals.add(|| format!("CREATE of {path}: {msg}"));
            }
            _ => self.files.entry(file_key(path)).or_default().created = true,
        }
    }

    /// An UPDATE's answer; returns the update if it is to be sent again.
    fn update_answered(
        &mut self,
        mut item: Pending,
        error: Option<&str>,
        refusals: &mut Refusals,
    ) -> Option<Pending> {
        match error {
            None => self.written(&item),
            Some(msg) if item.resent && is_stale_update(msg) => {
                // Reached rrdcached before the connection broke
                // (or before the restart).
                debug!(path = %item.update.path, "update already taken before reconnect");
                self.written(&item);
            }
            Some(msg) if is_no_such_file(msg) && item.attempts + 1 < MAX_ATTEMPTS => {
                debug!(path = %item.update.path, "rrdcached lost the file; creating it again");
                if let Some(f) = self.files.get_mut(&file_key(&item.update.path)) {
                    f.created = false;
                }
                item.attempts += 1;
                return Some(item);
            }
            Some(msg) => {
                refusals.add(|| format!("UPDATE of {}: {msg}", item.update.path));
                if item.counted {
                    self.shared.done();
                }
            }
        }
        None
    }

    /// Logs a batch's refusals once, and counts each as an error.
    fn report(&self, refusals: Refusals) {
        let Some(first) = refusals.first else {
            return;
        };
        warn!(addr = %self.config.addr, refused = refusals.count, first = %first, "rrdcached refused commands");
        // `error` below counts the last one.
        self.shared
            .errors
            .fetch_add(refusals.count as u64 - 1, Ordering::Relaxed);
        self.shared
            .error(format!("rrdcached at {} refused {first}", self.config.addr));
    }
}

/// The writer's thread, seen from the task [`RrdWriter::spawn`] returns:
/// dropping it (the task finished or was aborted) cancels the writer and
/// waits for its thread, so an aborted writer is gone, spool closed, by the
/// time the abort is awaited — never two writers on one spool.
struct WriterThread {
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(thread) = self.thread.take() {
            // Short: the writer stops at its next await point, after at
            // most one spool write.
            let _ = thread.join();
        }
    }
}

/// One batch for rrdcached, taken off `pending`.
struct Batch {
    /// The updates sent, in order.
    items: Vec<Pending>,
    commands: Vec<String>,
    /// What each command is.
    lines: Vec<Line>,
    /// How many of the commands are CREATEs (each may take a while).
    creates: usize,
    /// Whether updates already in rrdcached were taken off `pending`.
    skipped: bool,
}

/// Commands of one batch that rrdcached refused: how many, and the first.
#[derive(Default)]
struct Refusals {
    count: usize,
    first: Option<String>,
}

impl Refusals {
    fn add(&mut self, describe: impl FnOnce() -> String) {
        self.count += 1;
        self.first.get_or_insert_with(describe);
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
            millis: 0,
            values: vec![RrdValue::Gauge(1.0)],
        }
    }

    fn writer() -> (RrdWriter, RrdWriterHandle) {
        let mut config = RrdWriterConfig::new("127.0.0.1:1".parse().expect("addr"), 300);
        config.queue_capacity = 8;
        RrdWriter::new(config, SHUTDOWN_GRACE).expect("no spool to open")
    }

    #[test]
    fn a_file_costs_eight_bytes_and_keeps_its_last_timestamp() {
        assert_eq!(std::mem::size_of::<FileState>(), 8);
        let mut f = FileState::default();
        assert_eq!(f.last_ts(), None);
        f.set_last_ts(1_796_444_000);
        assert_eq!(f.last_ts(), Some(1_796_444_000));
        // Past 2106: kept as the largest, so later updates are still admitted.
        f.set_last_ts(u64::from(u32::MAX) + 10);
        assert_eq!(f.last_ts(), Some(u64::from(u32::MAX)));
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
        w.drain();
        w.refill();
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
        w.drain();
        w.refill();
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
            RrdWriter::spawn_with_grace(RrdWriterConfig::new(addr, 300), stop_rx, grace)
                .expect("no spool to open");
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
