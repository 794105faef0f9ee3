//! The Raft log and vote in sled (`RaftLogStorage`).
//!
//! Durability rule: a vote save or a log append is acknowledged only after
//! sled has flushed it to disk. sled flushes everything written before, so
//! writes become durable in the order they were made.

use super::StorageError;
use super::kv::{self, Kv, Tree};
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Raft log storage on sled. Cheap to clone; clones share the same trees, so
/// it is also its own log reader.
#[derive(Clone)]
pub struct LogStore {
    kv: Kv,
    logs: Tree,
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

/// Purged entries removed per sled batch (see [`LogStore::purge`]).
const PURGE_BATCH: usize = 1000;

fn index_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

impl LogStore {
    pub(crate) fn new(kv: &Kv) -> Result<LogStore, StorageError> {
        Ok(LogStore {
            kv: kv.clone(),
            logs: kv.tree(kv::LOGS)?,
            meta: kv.tree(kv::META)?,
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

    fn entry_error(&self, key: &[u8], bytes: &[u8], e: codec::CodecError) -> StorageError {
        let index = <[u8; 8]>::try_from(key).map_or(0, u64::from_be_bytes);
        let too_new = matches!(e, codec::CodecError::UnsupportedVersion { .. });
        self.logs.error(
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
        let path = self.kv.path().to_path_buf();
        // One entry at a time: after a long time without a snapshot the log
        // since the last one can be tens of megabytes, decoded even more.
        tokio::task::spawn_blocking(move || {
            this.logs.for_each_raw(key_range(&(from..)), |k, v| {
                this.decode_entry(k, v).map(drop)
            })
        })
        .await
        .map_err(|e| StorageError::Task {
            path,
            message: e.to_string(),
        })?
    }

    /// Decodes the entry stored under `key`. An entry this node cannot read
    /// (a newer format or kind) is an error naming its index, format version
    /// and kind: openraft then stops applying rather than skip it.
    fn decode_entry(&self, key: &[u8], bytes: &[u8]) -> Result<Entry, StorageError> {
        let index = <[u8; 8]>::try_from(key)
            .map(u64::from_be_bytes)
            .map_err(|_| self.logs.corrupt_key("log index", key))?;
        let entry: Entry = codec::decode(bytes).map_err(|e| self.entry_error(key, bytes, e))?;
        if let EntryPayload::Normal(cmd) = &entry.payload {
            cmd.check_level(self.feature_level).map_err(|e| {
                self.logs.error(
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
        let mut entries = Vec::new();
        self.logs.for_each_raw(key_range(&range), |k, v| {
            entries.push(self.decode_entry(k, v)?);
            Ok(())
        })?;
        Ok(entries)
    }
}

/// The sled key range of a range of log indexes.
fn key_range(range: &impl RangeBounds<u64>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let key = |bound: Bound<&u64>| match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (key(range.start_bound()), key(range.end_bound()))
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
        let last = self.logs.last_raw()?;
        // Only the log id: an entry of a kind this node cannot apply must
        // not keep Raft from starting (applying it stops, naming it).
        let last_entry = last
            .map(|(key, bytes)| {
                codec::decode_leading::<LogId>(&bytes)
                    .map_err(|e| self.entry_error(&key, &bytes, e))
            })
            .transpose()?;
        // Purged entries are removed in the background (see `purge`): one
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
        let rows = entries.into_iter().map(|e| (index_key(e.log_id.index), e));
        let written = self.logs.insert_many(rows)?;
        self.appended_bytes.fetch_add(written, Ordering::Relaxed);
        self.appended_counter.inc_by(written);
        // Acknowledge only once the entries are on disk.
        match self.kv.flush().await {
            Ok(()) => {
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
        let from = match last_log_id {
            Some(id) => Bound::Excluded(index_key(id.index)),
            None => Bound::Unbounded,
        };
        // One atomic batch: no hole even if we crash midway.
        self.logs.remove_range((from, Bound::Unbounded))?;
        self.kv.flush().await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purge point is durable before any entry goes, so after a crash
        // it covers every removed entry; entries it covers are never read
        // again. Removing them happens in the background: openraft awaits
        // this call on its core task, and removing the tens of thousands of
        // entries behind a large snapshot kept a follower from answering
        // heartbeats for 2.6 s (it was declared dead). Leftovers of a crash
        // go with the next purge.
        self.meta.set(LAST_PURGED, &Some(log_id))?;
        self.kv.flush().await?;
        let logs = self.logs.clone();
        let last = index_key(log_id.index);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = logs.remove_up_to_in_batches(&last, PURGE_BATCH) {
                tracing::warn!(error = %e, "cannot remove purged log entries; the next purge retries");
            }
        });
        Ok(())
    }
}
