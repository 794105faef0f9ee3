//! The Raft log (in segment files, see [`super::log_files`]) and the vote
//! (in sled) as openraft's `RaftLogStorage`.
//!
//! Durability rule: a vote save or a log append is acknowledged only after
//! it is on disk (sled flushed, or the segment synced).

use super::StorageError;
use super::kv::{self, Kv, Tree};
use super::log_files::{LOG_DIR, LogFiles, sync_dir};
use crate::cluster::features::FEATURE_LEVEL;
use crate::codec::{self, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use crate::raft_types::{Entry, LogId, TypeConfig, Vote};
use openraft::EntryPayload;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use prometheus_client::metrics::counter::Counter;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Raft log storage. Cheap to clone; clones share the same files and trees,
/// so it is also its own log reader.
#[derive(Clone)]
pub struct LogStore {
    kv: Kv,
    files: Arc<LogFiles>,
    meta: Tree,
    /// Entry kinds above this feature level are refused when read, as a node
    /// of that level would (see [`LogStore::with_feature_level`]).
    feature_level: u32,
    /// Bytes of entries appended since the process started (the state
    /// machine paces its snapshots by it).
    appended_bytes: Arc<AtomicU64>,
    /// The same bytes, as the node's metric.
    appended_counter: Counter,
}

/// Entries of an older version's log in sled moved per append (see
/// [`LogStore::open`]), and removed from sled per batch.
const MOVE_BATCH: usize = 1000;

/// Where sled's log tree keeps a marker once the log is in segment files: a
/// version from before the move, started on this data directory (a
/// rollback), reads it as its last entry and refuses it as newer (format
/// [`LOG_MOVED`]) instead of starting on a log without its entries.
const MOVED_KEY: u64 = u64::MAX;
/// The marker's format version: none is real.
const LOG_MOVED: u16 = u16::MAX;

impl LogStore {
    /// Opens the log in the database's directory. An older version's log,
    /// kept in sled, is moved into segment files first (once): written
    /// beside them, renamed into place, then removed from sled. Blocking.
    pub(crate) fn open(kv: &Kv) -> Result<LogStore, StorageError> {
        let meta = kv.tree(kv::META)?;
        let sled_log = kv.tree(kv::LOGS)?;
        if !LogFiles::exists(kv.path()) {
            move_sled_log(kv.path(), &sled_log, &meta)?;
        }
        // Entries are left in sled by a move interrupted after its rename.
        let marker = codec::header_only(LOG_MOVED);
        sled_log.remove_up_to_in_batches(&(MOVED_KEY - 1).to_be_bytes(), MOVE_BATCH)?;
        if sled_log.get_raw(&MOVED_KEY.to_be_bytes())? != Some(marker.clone()) {
            sled_log.set_raw(&MOVED_KEY.to_be_bytes(), &marker)?;
        }
        kv.flush_blocking()?;
        let files = LogFiles::open(kv.path())?;
        if let Some(purged) = meta
            .get::<Option<LogId>>(LAST_PURGED, "last purged log id")?
            .flatten()
        {
            files.purge_through(purged.index)?;
        }
        Ok(LogStore {
            kv: kv.clone(),
            files: Arc::new(files),
            meta,
            feature_level: FEATURE_LEVEL,
            appended_bytes: Arc::default(),
            appended_counter: Counter::default(),
        })
    }

    /// The running count of bytes appended to this log.
    pub(crate) fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended_bytes.clone()
    }

    /// Counts appended bytes into `counter` too (the node's metric).
    pub fn with_appended_counter(mut self, counter: Counter) -> LogStore {
        self.appended_counter = counter;
        self
    }

    /// Holds the store at an older feature level: reading an entry of a
    /// newer kind is then an error, as on a node of that level.
    pub fn with_feature_level(mut self, level: u32) -> LogStore {
        self.feature_level = level;
        self
    }

    fn entry_error(&self, index: u64, bytes: &[u8], e: codec::CodecError) -> StorageError {
        let too_new = matches!(e, codec::CodecError::UnsupportedVersion { .. });
        self.meta.error(
            too_new,
            &format!("log entry {index}"),
            format!(
                "{e} (this node reads format versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION} and entry kinds up to feature level {}; the entry is {} bytes)",
                self.feature_level,
                bytes.len()
            ),
        )
    }

    /// Reads every entry from `from` on: an error names the first this node
    /// cannot read (a newer format or kind). For the start of a node.
    pub async fn check_readable(&self, from: u64) -> Result<(), StorageError> {
        let this = self.clone();
        // One entry at a time: after a long time without a snapshot the log
        // since the last one can be tens of megabytes, decoded even more.
        self.blocking(move || {
            this.files
                .for_each(from, u64::MAX, |i, v| this.decode_entry(i, v).map(drop))
        })
        .await
    }

    /// Decodes entry `index`. An entry this node cannot read (a newer
    /// format or kind) is an error naming its index, format version and
    /// kind: openraft then stops applying rather than skip it.
    fn decode_entry(&self, index: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
        let entry: Entry = codec::decode(bytes).map_err(|e| self.entry_error(index, bytes, e))?;
        if let EntryPayload::Normal(cmd) = &entry.payload {
            cmd.check_level(self.feature_level).map_err(|e| {
                self.meta.error(
                    true,
                    &format!(
                        "log entry {index} (format version {})",
                        codec::version_of(bytes)
                    ),
                    e,
                )
            })?;
        }
        Ok(entry)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .meta
            .get::<Option<LogId>>(LAST_PURGED, "last purged log id")?
            .flatten())
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let until = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let mut entries = Vec::new();
        self.files.for_each(from, until, |i, v| {
            entries.push(self.decode_entry(i, v)?);
            Ok(())
        })?;
        Ok(entries)
    }
}

/// Moves an older version's log from sled into segment files: written into
/// a directory of their own, synced, then renamed into place, so a crash
/// leaves either no segment directory (the move starts again) or the whole
/// log. Entries at or before the purge point are left out.
fn move_sled_log(dir: &Path, sled_log: &Tree, meta: &Tree) -> Result<(), StorageError> {
    let purged = meta
        .get::<Option<LogId>>(LAST_PURGED, "last purged log id")?
        .flatten()
        .map_or(0, |l| l.index + 1);
    let moving = dir.join(format!("{LOG_DIR}.moving"));
    if moving.exists() {
        std::fs::remove_dir_all(&moving).map_err(|source| StorageError::File {
            path: moving.clone(),
            what: "remove",
            source,
        })?;
    }
    let files = LogFiles::open_at(&moving)?;
    let mut batch = Vec::with_capacity(MOVE_BATCH);
    let mut moved = 0u64;
    let range = purged.to_be_bytes().to_vec()..MOVED_KEY.to_be_bytes().to_vec();
    sled_log.for_each_raw(range, |k, v| {
        let index = <[u8; 8]>::try_from(k)
            .map(u64::from_be_bytes)
            .map_err(|_| sled_log.corrupt_key("log index", k))?;
        batch.push((index, v.to_vec()));
        if batch.len() == MOVE_BATCH {
            moved += batch.len() as u64;
            files.append(&batch)?;
            batch.clear();
        }
        Ok(())
    })?;
    moved += batch.len() as u64;
    files.append(&batch)?;
    drop(files);
    let target = dir.join(LOG_DIR);
    std::fs::rename(&moving, &target).map_err(|source| StorageError::File {
        path: target.clone(),
        what: "rename into place",
        source,
    })?;
    sync_dir(dir)?;
    if moved > 0 {
        tracing::info!(
            entries = moved,
            "moved the Raft log from sled into segment files"
        );
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.entries(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.meta.get::<Vote>(VOTE, "vote")?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.last_purged()?;
        let last = self.files.last()?;
        // Only the log id: an entry of a kind this node cannot apply must
        // not keep Raft from starting (applying it stops, naming it).
        let last_entry = last
            .map(|(index, bytes)| {
                codec::decode_leading::<LogId>(&bytes)
                    .map_err(|e| self.entry_error(index, &bytes, e))
            })
            .transpose()?;
        // Purged entries go with their whole segment (see `purge`): one
        // still there is not the log's end when the purge point is past it.
        let last_log_id = match (last_entry, last_purged_log_id) {
            (Some(entry), Some(purged)) if purged.index >= entry.index => Some(purged),
            (Some(entry), _) => Some(entry),
            (None, purged) => purged,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.meta.set(VOTE, vote)?;
        self.kv.flush().await?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed here: it rides along with the next flush. Losing the latest
        // value only means re-applying a little less at start; the cluster's
        // commit index brings the node forward again.
        self.meta.set(COMMITTED, &committed)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self
            .meta
            .get::<Option<LogId>>(COMMITTED, "committed log id")?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry)
                .map_err(|e| io::Error::other(format!("cannot encode log entry: {e}")))?;
            records.push((entry.log_id.index, bytes));
        }
        let written: u64 = records.iter().map(|(_, b)| b.len() as u64).sum();
        let files = self.files.clone();
        // Acknowledge only once the entries are on disk.
        match self.blocking(move || files.append(&records)).await {
            Ok(()) => {
                self.appended_bytes.fetch_add(written, Ordering::Relaxed);
                self.appended_counter.inc_by(written);
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::other(e.to_string())));
                Err(e.into())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        let files = self.files.clone();
        self.blocking(move || files.truncate_from(from)).await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purge point is durable before any segment goes, so after a
        // crash it covers every removed entry; entries it covers are never
        // read again. Only whole segments go: the rest of one stays until
        // a later purge covers all of it.
        self.meta.set(LAST_PURGED, &Some(log_id))?;
        self.kv.flush().await?;
        let files = self.files.clone();
        self.blocking(move || files.purge_through(log_id.index))
            .await?;
        Ok(())
    }
}

impl LogStore {
    /// Runs file work on the blocking pool.
    async fn blocking(
        &self,
        work: impl FnOnce() -> Result<(), StorageError> + Send + 'static,
    ) -> Result<(), StorageError> {
        let path = self.kv.path().to_path_buf();
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| StorageError::Task {
                path,
                message: e.to_string(),
            })?
    }
}
