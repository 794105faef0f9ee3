//! The replicated state machine (`RaftStateMachine`): [`ClusterState`] in memory,
//! the last snapshot in a file of its own beside the sled database.
//!
//! Applying is cheap and in memory; durability comes from the Raft log plus the
//! persisted committed index: at start openraft re-applies the committed entries
//! after the snapshot. Every apply or snapshot install bumps a watch counter so
//! the scheduler and the controller wake up on changes.

use super::StorageError;
use super::kv::{self, Kv, Tree};
use super::snapshot_file::{SnapshotData, SnapshotFile};
use crate::codec::{self, CodecError};
use crate::metrics::SnapshotMetrics;
use crate::model::legacy::ClusterStateV2;
use crate::model::state::ClusterState;
use crate::model::types::{CommandResult, Device};
use crate::raft_types::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;

/// Where versions before the snapshot file kept the snapshot (a sled key);
/// read when there is no file. Once a file is written it holds
/// [`SNAPSHOT_MOVED`] instead, so such a version, started on this data
/// directory (a rollback), refuses it as newer rather than start without the
/// snapshot.
const SNAPSHOT: &[u8] = b"snapshot";

/// The format version of the marker left under [`SNAPSHOT`]: none is real.
const SNAPSHOT_MOVED: u16 = u16::MAX;

/// When a snapshot is worth building: once the log appended since the last
/// one is at least as large as that snapshot. Snapshotting then costs in
/// proportion to the log's own writes instead of re-encoding the whole state
/// every few thousand entries (at 100,000 devices tens of MiB, on every node,
/// every two minutes or so), and a restart replays no more log than the
/// snapshot it loads. openraft asks every [`SNAPSHOT_ASK_EVERY_LOGS`]
/// entries; a refused build waits for the next ask.
///
/// Every node sees the same log, so with the same rule every node would
/// build the same snapshot at the same moment: ten 50 MiB encodings at once
/// on one machine stalled a 100,000-device cluster into an election. Each
/// node therefore waits for a different extra share of the snapshot's size
/// (see [`stagger_of`]); snapshots are local, nodes need not agree on them.
///
/// [`SNAPSHOT_ASK_EVERY_LOGS`]: crate::cluster::raft::SNAPSHOT_ASK_EVERY_LOGS
#[derive(Debug)]
struct SnapshotPacing {
    /// Bytes the log store appended since the process started.
    log_bytes: Arc<AtomicU64>,
    /// `log_bytes` when the last snapshot was built or installed.
    log_bytes_at_snapshot: AtomicU64,
    /// Size of the last snapshot; 0 while there is none.
    snapshot_bytes: AtomicU64,
    /// This node's extra wait, in 1024ths of the last snapshot's size.
    stagger: AtomicU64,
}

impl SnapshotPacing {
    fn due(&self) -> bool {
        let logged = self.log_bytes.load(Ordering::Relaxed);
        let since = logged.saturating_sub(self.log_bytes_at_snapshot.load(Ordering::Relaxed));
        snapshot_due(
            since,
            self.snapshot_bytes.load(Ordering::Relaxed),
            self.stagger.load(Ordering::Relaxed),
        )
    }

    fn snapshotted(&self, bytes: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
        self.log_bytes_at_snapshot
            .store(self.log_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Whether a snapshot is due after `logged_since` bytes of log since the last
/// one of `snapshot_bytes` (0: there is none yet), for a node that waits
/// `stagger` 1024ths of it more.
fn snapshot_due(logged_since: u64, snapshot_bytes: u64, stagger: u64) -> bool {
    logged_since >= snapshot_bytes.saturating_add(snapshot_bytes / 1024 * stagger)
}

/// How many 1024ths of a snapshot node `node_id` waits beyond the others:
/// the fraction of the id times the golden ratio (633/1024), which spreads
/// any run of ids over the range, no two of 1,024 consecutive ids alike
/// (ids 1 to 10: 633, 242, 875, 484, 93, 726, 335, 968, 577, 186). Ids
/// modulo a small number repeated: nodes 1 and 9 of ten built together.
fn stagger_of(node_id: u64) -> u64 {
    node_id.wrapping_mul(633) % 1024
}

/// What the state machine holds: the state and how far it got.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    state: ClusterState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// [`Applied`] in format versions 1 and 2 (see [`crate::model::legacy`]).
#[derive(Deserialize)]
struct AppliedV2 {
    state: ClusterStateV2,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Decodes snapshot data (an encoded [`Applied`]) of any format version.
fn decode_applied(bytes: &[u8]) -> Result<Applied, CodecError> {
    if codec::version_of(bytes) >= 3 {
        return codec::decode(bytes);
    }
    let old: AppliedV2 = codec::decode(bytes)?;
    Ok(Applied {
        state: old.state.into(),
        last_applied: old.last_applied,
        membership: old.membership,
    })
}

/// A stored snapshot: openraft's metadata plus the encoded [`Applied`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Name of the thread that encodes a snapshot (one per build).
pub const SNAPSHOT_THREAD_NAME: &str = "snapshot";

/// Devices a [`SharedState::scan_devices`] reads per hold of the lock.
pub const SCAN_CHUNK: usize = 1024;

/// Read access to the applied cluster state for the rest of the node.
/// Cheap to clone.
#[derive(Clone)]
pub struct SharedState {
    applied: Arc<RwLock<Applied>>,
    changes: watch::Receiver<u64>,
    owner_changes: Arc<AtomicU64>,
}

impl SharedState {
    /// Runs `f` on the current state. Keep `f` short: applies wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&read_lock(&self.applied).state)
    }

    /// Runs `f` on every device, in hostname order, holding the read lock
    /// for at most [`SCAN_CHUNK`] devices at a time. An apply waits for the
    /// lock on one of Raft's two threads: a reader holding it through
    /// 100,000 devices on a busy machine, from a lower-priority polling
    /// thread, kept followers from answering heartbeats for seconds. Not a
    /// point-in-time view: a device that changes during the walk is seen as
    /// before or after the change, each device whole.
    pub fn for_each_device(&self, mut f: impl FnMut(&Device)) {
        use std::ops::Bound;
        let mut after: Option<String> = None;
        loop {
            let applied = read_lock(&self.applied);
            let from = match &after {
                None => Bound::Unbounded,
                Some(hostname) => Bound::Excluded(hostname.as_str()),
            };
            let mut seen = 0;
            let mut last = None;
            for (hostname, device) in applied
                .state
                .devices
                .range::<str, _>((from, Bound::Unbounded))
                .take(SCAN_CHUNK)
            {
                seen += 1;
                last = Some(hostname);
                f(device);
            }
            if seen < SCAN_CHUNK {
                return;
            }
            after = last.cloned();
        }
    }

    /// How many devices `f` holds for, walked as [`Self::for_each_device`].
    pub fn count_devices(&self, f: impl Fn(&Device) -> bool) -> usize {
        let mut count = 0;
        self.for_each_device(|d| count += usize::from(f(d)));
        count
    }

    /// `f`'s results over every device, walked as [`Self::for_each_device`].
    pub fn scan_devices<T>(&self, mut f: impl FnMut(&Device) -> Option<T>) -> Vec<T> {
        let mut found = Vec::new();
        self.for_each_device(|d| found.extend(f(d)));
        found
    }

    /// A receiver whose value is bumped after every apply or snapshot install.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Bumped (before the change is signalled) by every apply that can move
    /// devices between nodes, and by snapshot installs: most entries are
    /// poll claims and reports, after which a node's device set is the same.
    pub fn owner_changes(&self) -> u64 {
        self.owner_changes.load(Ordering::Acquire)
    }

    /// Index of the last applied log entry (`None` before the first).
    pub fn last_applied_index(&self) -> Option<u64> {
        read_lock(&self.applied).last_applied.map(|l| l.index)
    }
}

/// The state machine store handed to openraft. Cheap to clone.
#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    changes: Arc<watch::Sender<u64>>,
    owner_changes: Arc<AtomicU64>,
    kv: Kv,
    tree: Tree,
    file: Arc<SnapshotFile>,
    /// Snapshots built and their build time.
    metrics: SnapshotMetrics,
    pacing: Arc<SnapshotPacing>,
}

// A panic while holding the lock cannot leave `Applied` half-written in a way
// that matters more than stopping the node would, so a poisoned lock is used as is.
fn read_lock(l: &RwLock<Applied>) -> RwLockReadGuard<'_, Applied> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock(l: &RwLock<Applied>) -> RwLockWriteGuard<'_, Applied> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl StateMachineStore {
    /// Loads the last snapshot, if any, as the starting state.
    /// Snapshots are paced by `log_bytes`, the log store's count of appended
    /// bytes (see [`SnapshotPacing`]).
    pub(crate) fn load(
        kv: &Kv,
        log_bytes: Arc<AtomicU64>,
    ) -> Result<StateMachineStore, StorageError> {
        let tree = kv.tree(kv::SM)?;
        let corrupt = |what: &str, e: CodecError| match e {
            CodecError::UnsupportedVersion { .. } => StorageError::TooNew {
                path: kv.path().to_path_buf(),
                what: what.into(),
                detail: e.to_string(),
            },
            e => StorageError::Corrupt {
                path: kv.path().to_path_buf(),
                what: what.into(),
                detail: e.to_string(),
            },
        };
        let pacing = SnapshotPacing {
            log_bytes,
            log_bytes_at_snapshot: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            stagger: AtomicU64::new(0),
        };
        let file = SnapshotFile::new(kv.path(), None);
        // Streamed, else read whole (an older format, or damage to name).
        let loaded = match stream_snapshot(&file) {
            Some(streamed) => Some(streamed),
            None => match file.read()? {
                Some(bytes) => Some(bytes),
                None => legacy_snapshot(&tree, &file)?,
            }
            .map(|bytes| {
                let (meta, data) =
                    decode_stored(&bytes).map_err(|e| corrupt("state machine snapshot", e))?;
                let applied =
                    decode_applied(&data).map_err(|e| corrupt("state machine snapshot data", e))?;
                Ok::<_, StorageError>((applied, meta.last_log_id, bytes.len() as u64))
            })
            .transpose()?,
        };
        let (applied, newest) = match loaded {
            Some((applied, newest, size)) => {
                pacing.snapshotted(size);
                (applied, newest)
            }
            None => (Applied::default(), None),
        };
        let (tx, _) = watch::channel(0);
        Ok(StateMachineStore {
            applied: Arc::new(RwLock::new(applied)),
            changes: Arc::new(tx),
            owner_changes: Arc::default(),
            kv: kv.clone(),
            tree,
            file: Arc::new(SnapshotFile::new(kv.path(), newest)),
            metrics: SnapshotMetrics::default(),
            pacing: Arc::new(pacing),
        })
    }

    /// Where snapshot builds are counted (the node's metrics).
    pub fn set_metrics(&mut self, metrics: SnapshotMetrics) {
        self.metrics = metrics;
    }

    /// Paces this store's snapshots as node `node_id`'s, apart from the
    /// other nodes' (see [`SnapshotPacing`]).
    pub fn stagger_snapshots(&self, node_id: u64) {
        self.pacing
            .stagger
            .store(stagger_of(node_id), Ordering::Relaxed);
    }

    /// Read access for the scheduler, controller and API.
    pub fn shared(&self) -> SharedState {
        SharedState {
            applied: self.applied.clone(),
            changes: self.changes.subscribe(),
            owner_changes: self.owner_changes.clone(),
        }
    }

    /// Applies `batch` in order and answers each entry's proposer. Blocking.
    fn apply_now(&self, batch: Vec<EntryResponder<TypeConfig>>) {
        let mut replies = Vec::new();
        let applied_any = !batch.is_empty();
        for (entry, responder) in batch {
            let result = {
                let mut a = write_lock(&self.applied);
                a.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => CommandResult::Ok,
                    EntryPayload::Normal(cmd) => {
                        if cmd.changes_owners() {
                            self.owner_changes.fetch_add(1, Ordering::AcqRel);
                        }
                        a.state.apply(cmd)
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        CommandResult::Ok
                    }
                }
            };
            if let Some(r) = responder {
                replies.push((r, result));
            }
        }
        // Wake subscribers before answering, so a writer that reads after its
        // write returns sees the change signalled.
        if applied_any {
            self.bump();
        }
        for (r, result) in replies {
            r.send(result);
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn meta_of(applied: &Applied) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        }
    }

    /// Marks the snapshot as moved to its file, for an older version that
    /// looks in sled (see [`SNAPSHOT`]), once a file is written.
    async fn mark_moved(&self) -> Result<(), StorageError> {
        self.tree
            .set_raw(SNAPSHOT, &codec::header_only(SNAPSHOT_MOVED))?;
        self.kv.flush().await
    }
}

/// The snapshot an older version left in sled, when there is no file; an
/// error naming the file if sled says it was moved there.
fn legacy_snapshot(tree: &Tree, file: &SnapshotFile) -> Result<Option<Vec<u8>>, StorageError> {
    match tree.get_raw(SNAPSHOT)? {
        Some(bytes) if codec::version_of(&bytes) == SNAPSHOT_MOVED => Err(tree.corrupt(
            "state machine snapshot",
            format!("{} is missing", file.path().display()),
        )),
        bytes => Ok(bytes),
    }
}

/// Strings longer than this are not streamed (see [`stream_snapshot`]).
const STREAM_STRING_LIMIT: usize = 1 << 20;
const STREAM_READ_BUFFER: usize = 256 * 1024;

/// The snapshot file of the current format decoded straight from disk, its
/// strings passing through a small buffer one at a time: a start never holds
/// the file's bytes beside the state they decode into (56 MB beside about
/// 150 MiB at 100,000 devices, the peak of a restarted node). Gives the
/// state, its last log id and the file's size; `None` if there is no file
/// or it cannot be streamed (an older format, damage): the caller then reads
/// it whole, which also names what is wrong.
fn stream_snapshot(file: &SnapshotFile) -> Option<(Applied, Option<LogId>, u64)> {
    let (meta, data) = match file.open() {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "snapshot file not streamed; reading it whole");
            return None;
        }
    };
    let SnapshotData::InFile {
        file: handle, at, ..
    } = data
    else {
        return None;
    };
    let size = handle.metadata().ok()?.len();
    let mut reader = io::BufReader::with_capacity(STREAM_READ_BUFFER, &handle);
    io::Seek::seek(&mut reader, io::SeekFrom::Start(at)).ok()?;
    match codec::decode_current_from::<Applied>(reader, STREAM_STRING_LIMIT) {
        Ok(Some(applied)) => Some((applied, meta.last_log_id, size)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, path = %file.path().display(), "snapshot file not streamed; reading it whole");
            None
        }
    }
}

/// Writes a snapshot as stored, in the current format: the encoded metadata
/// followed by the encoded [`Applied`] (each with its own version header),
/// encoded straight into `writer`. Returns where the data starts. Format
/// version 1 was the bincode of [`StoredSnapshot`]; [`decode_stored`] reads
/// both.
fn write_stored(
    writer: &mut dyn io::Write,
    meta: &SnapshotMeta,
    applied: &Applied,
) -> io::Result<u64> {
    let meta = codec::encode(meta).map_err(io::Error::other)?;
    writer.write_all(&meta)?;
    codec::encode_to_writer(writer, applied)?;
    Ok(meta.len() as u64)
}

/// Snapshot data (an encoded [`Applied`]) in format `version`, for a peer
/// that reads only older formats; as is if it already is in that version.
///
/// A state of format 3 cannot go back to 1 or 2: those held every port's
/// names, which this version no longer keeps, and a peer given empty names
/// would match the next discovery's ports differently from everyone else.
/// That peer catches up from the log instead, or once it is upgraded.
pub fn snapshot_data_in_format(data: Vec<u8>, version: u16) -> Result<Vec<u8>, CodecError> {
    let from = codec::version_of(&data);
    if from == version {
        return Ok(data);
    }
    if version < 3 && from >= 3 {
        return Err(CodecError::Encode(format!(
            "a snapshot of format {from} cannot be sent in format {version} (it no longer holds \
             port names): upgrade the receiving node"
        )));
    }
    let applied = decode_applied(&data)?;
    codec::encode_version(&applied, version)
}

/// Reads a stored snapshot (file or sled value), of any format version:
/// its metadata and its data, borrowed from `bytes` where the format allows.
fn decode_stored(bytes: &[u8]) -> Result<(SnapshotMeta, Cow<'_, [u8]>), CodecError> {
    if codec::version_of(bytes) == 1 {
        let stored: StoredSnapshot = codec::decode(bytes)?;
        return Ok((stored.meta, Cow::Owned(stored.data)));
    }
    let (meta, used) = codec::decode_prefix::<SnapshotMeta>(bytes)?;
    Ok((meta, Cow::Borrowed(&bytes[used..])))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = std::time::Instant::now();
        // Copy the state under the read lock and encode the copy on a thread
        // of its own, at the polling threads' priority. Encoding under the
        // lock held applies for as long (2.5 s at 100,000 devices), and an
        // apply waiting for the lock blocks one of Raft's two threads; at
        // Raft's priority the encoding took the CPU heartbeats needed. The
        // copy is a few strings per device: devices share their inventories.
        // The encoding goes straight to the file: in one buffer it added
        // tens of MiB to every node's peak at 100,000 devices.
        let copy = read_lock(&self.applied).clone();
        let meta = Self::meta_of(&copy);
        let encode_meta = meta.clone();
        let file = self.file.clone();
        let (done, written) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(SNAPSHOT_THREAD_NAME.into())
            .spawn(move || {
                crate::runtime::lower_this_thread(crate::runtime::POLLING_NICE);
                let written = file.write(encode_meta.last_log_id, "build", |w| {
                    write_stored(w, &encode_meta, &copy)
                });
                drop(copy);
                let _ = done.send(written);
            })?;
        let written = written.await.map_err(|_| {
            io::Error::other("the snapshot encoding thread ended without a result")
        })??;
        self.mark_moved().await?;
        self.pacing.snapshotted(written.bytes);
        tracing::debug!(last_log_id = ?meta.last_log_id, bytes = written.bytes, "snapshot built");
        self.metrics.built.inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        Ok(Snapshot {
            meta,
            snapshot: written.data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = read_lock(&self.applied);
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // On the blocking pool: Raft has one thread (see `RAFT_THREADS`),
        // and a long apply (a bulk import) must not hold up heartbeats.
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_now(batch))
            .await
            .map_err(io::Error::other)
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        if force || self.pacing.due() {
            return Some(self.clone());
        }
        tracing::debug!(pacing = ?self.pacing, "snapshot not due yet");
        None
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        // Read, decoded and persisted on the blocking pool: tens of MB at
        // 100,000 devices, and Raft has one thread.
        let encoded_meta = codec::encode(meta).map_err(io::Error::other)?;
        let file = self.file.clone();
        let meta = meta.clone();
        let (applied, written) = tokio::task::spawn_blocking(move || {
            let snapshot = snapshot.into_bytes()?;
            let mut applied = decode_applied(&snapshot).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot from leader: {e}"),
                )
            })?;
            // The metadata is authoritative for where the snapshot stands.
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            // Persist first: after a crash we restart from the new snapshot
            // or the old one, never from a mix.
            let written = file.write(meta.last_log_id, "install", |w| {
                w.write_all(&encoded_meta)?;
                w.write_all(&snapshot)?;
                Ok(encoded_meta.len() as u64)
            })?;
            Ok::<_, io::Error>((applied, written))
        })
        .await
        .map_err(|e| StorageError::Task {
            path: self.kv.path().to_path_buf(),
            message: e.to_string(),
        })??;
        self.mark_moved().await?;
        self.pacing.snapshotted(written.bytes);
        let replaced = std::mem::replace(&mut *write_lock(&self.applied), applied);
        // Freed outside the lock and off Raft's thread.
        tokio::task::spawn_blocking(move || drop(replaced));
        self.metrics.installed.inc();
        self.owner_changes.fetch_add(1, Ordering::AcqRel);
        self.bump();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        if let Some((meta, snapshot)) = self.file.open()? {
            return Ok(Some(Snapshot { meta, snapshot }));
        }
        let Some(bytes) = legacy_snapshot(&self.tree, &self.file)? else {
            return Ok(None);
        };
        let (meta, data) = decode_stored(&bytes).map_err(|e| {
            io::Error::other(self.tree.corrupt("state machine snapshot", e.to_string()))
        })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotData::InMemory(data.into_owned()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot_file::SNAPSHOT_FILE;
    use super::*;
    use crate::model::types::{Command, NodeInfo};

    /// A snapshot as [`write_stored`] writes it, and where its data starts.
    fn encode_stored(meta: &SnapshotMeta, applied: &Applied) -> (Vec<u8>, usize) {
        let mut bytes = Vec::new();
        let data_at = write_stored(&mut bytes, meta, applied).expect("encode");
        (bytes, data_at as usize)
    }

    /// A scan sees every device once, in order, across chunk boundaries.
    #[test]
    fn device_scans_see_every_device_once_across_chunks() {
        use crate::model::types::NewDevice;
        let dir = tempfile::TempDir::new().expect("temp dir");
        let kv = Kv::open_blocking(dir.path()).expect("open");
        let sm = StateMachineStore::load(&kv, Arc::default()).expect("load");
        let shared = sm.shared();
        assert!(shared.scan_devices(|d| Some(d.port)).is_empty());
        for count in [SCAN_CHUNK - 1, SCAN_CHUNK, 2 * SCAN_CHUNK + 3] {
            let news: Vec<NewDevice> = (0..count)
                .map(|i| NewDevice {
                    hostname: format!("sw{i:05}"),
                    address: "127.0.0.1".into(),
                    port: i as u16,
                    credentials: crate::snmp::credentials::SnmpCredentials::V2c {
                        community: crate::secret::Secret::new("public"),
                    },
                    group: 0,
                })
                .collect();
            let mut applied = write_lock(&sm.applied);
            applied.state = ClusterState::default();
            applied.state.apply(&Command::AddDevices(news));
            drop(applied);
            let ports = shared.scan_devices(|d| Some(d.port));
            assert_eq!(
                ports,
                (0..count as u16).collect::<Vec<_>>(),
                "{count} devices"
            );
            let odd = shared.scan_devices(|d| (d.port % 2 == 1).then_some(d.port));
            assert_eq!(odd.len(), count / 2);
        }
    }

    #[test]
    fn stored_snapshot_encoding_matches_the_two_step_one() {
        let mut applied = Applied::default();
        applied.state.apply(&Command::UpsertNode(NodeInfo {
            id: 3,
            name: "n3".into(),
            addr: "127.0.0.1:1".into(),
            groups: vec![0, 2],
        }));
        let meta = StateMachineStore::meta_of(&applied);
        let (bytes, data_at) = encode_stored(&meta, &applied);
        let data = codec::encode(&applied).expect("encode applied");
        assert_eq!(&bytes[data_at..], &data[..]);
        let mut two_step = codec::encode(&meta).expect("encode meta");
        two_step.extend_from_slice(&data);
        assert_eq!(bytes, two_step);
        let (decoded_meta, decoded_data) = decode_stored(&bytes).expect("decode");
        assert_eq!(decoded_data, data);
        assert_eq!(decoded_meta, meta);
        // Version 1: the bincode of the whole struct.
        let v1 = codec::encode_version(
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
            1,
        )
        .expect("encode v1");
        let (decoded_meta, decoded_data) = decode_stored(&v1).expect("decode v1");
        assert_eq!((decoded_meta, decoded_data.into_owned()), (meta, data));
    }

    /// No two of 1,024 consecutive node ids wait alike, and ten nodes'
    /// waits are at least a twentieth of a snapshot apart.
    #[test]
    fn staggers_are_distinct_and_spread() {
        let all: std::collections::BTreeSet<u64> = (1..=1024).map(stagger_of).collect();
        assert_eq!(all.len(), 1024);
        let mut ten: Vec<u64> = (1..=10).map(stagger_of).collect();
        ten.sort_unstable();
        let closest = ten.windows(2).map(|w| w[1] - w[0]).min();
        assert!(closest >= Some(1024 / 20), "{ten:?}");
    }

    /// A policy snapshot waits until the log appended since the last one
    /// is as large as it; a forced one (a follower needs it) never waits.
    #[tokio::test]
    async fn snapshots_wait_until_the_log_since_outgrows_the_last_one() {
        assert!(snapshot_due(0, 0, 0), "no snapshot yet: one is due");
        assert!(snapshot_due(0, 0, 7), "no snapshot yet: one is due");
        assert!(!snapshot_due(999, 1000, 0));
        assert!(snapshot_due(1000, 1000, 0));
        // Node 3 waits 875/1024 more; node 1024 as long as node 0.
        assert!(!snapshot_due(1898, 1024, stagger_of(3)));
        assert!(snapshot_due(1899, 1024, stagger_of(3)));
        assert!(snapshot_due(1024, 1024, stagger_of(1024)));

        let dir = tempfile::TempDir::new().expect("temp dir");
        let kv = Kv::open_blocking(dir.path()).expect("open");
        let log_bytes = Arc::new(AtomicU64::new(0));
        let mut sm = StateMachineStore::load(&kv, log_bytes.clone()).expect("load");
        assert!(sm.try_create_snapshot_builder(false).await.is_some());
        let built = sm.build_snapshot().await.expect("build");
        let size = std::fs::metadata(dir.path().join(SNAPSHOT_FILE))
            .expect("snapshot file")
            .len();
        let data = built.snapshot.into_bytes().expect("data");
        assert!(size as usize > data.len(), "metadata and data");
        assert!(sm.try_create_snapshot_builder(false).await.is_none());
        assert!(sm.try_create_snapshot_builder(true).await.is_some());
        log_bytes.fetch_add(size - 1, Ordering::Relaxed);
        assert!(sm.try_create_snapshot_builder(false).await.is_none());
        log_bytes.fetch_add(1, Ordering::Relaxed);
        assert!(sm.try_create_snapshot_builder(false).await.is_some());

        // After a restart the loaded snapshot's size paces the next one.
        let mut sm = StateMachineStore::load(&kv, Arc::default()).expect("reload");
        assert!(sm.try_create_snapshot_builder(false).await.is_none());
    }

    /// A built snapshot goes to its own file, not sled, and is what the next
    /// start loads; a snapshot an older version left in sled is still read
    /// (and dropped from sled once a file replaces it).
    #[tokio::test]
    async fn snapshots_live_in_a_file_and_older_sled_ones_still_load() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let node = |id: u64| {
            Command::UpsertNode(NodeInfo {
                id,
                name: format!("n{id}"),
                addr: "127.0.0.1:1".into(),
                groups: vec![0],
            })
        };
        let nodes = |sm: &StateMachineStore| sm.shared().read(|s| s.nodes.len());
        let kv = Kv::open_blocking(dir.path()).expect("open");
        // As an older version left it: the snapshot a sled value.
        let mut applied = Applied::default();
        applied.state.apply(&node(1));
        let meta = StateMachineStore::meta_of(&applied);
        let (bytes, _) = encode_stored(&meta, &applied);
        kv.tree(kv::SM)
            .expect("tree")
            .set_raw(SNAPSHOT, &bytes)
            .expect("set");
        let mut sm = StateMachineStore::load(&kv, Arc::default()).expect("load the sled snapshot");
        assert_eq!(nodes(&sm), 1);
        assert!(sm.get_current_snapshot().await.expect("read").is_some());

        write_lock(&sm.applied).state.apply(&node(2));
        let built = sm.build_snapshot().await.expect("build");
        let file = dir.path().join(SNAPSHOT_FILE);
        assert!(file.is_file(), "the snapshot is a file");
        // What an older version reads there: a format it refuses as newer.
        let marker = sm.tree.get_raw(SNAPSHOT).expect("get").expect("marker");
        assert!(matches!(
            decode_stored(&marker),
            Err(CodecError::UnsupportedVersion { .. })
        ));
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(
            current.snapshot.into_bytes().expect("current"),
            built.snapshot.into_bytes().expect("built")
        );

        // What the next start reads (the same database, opened once here:
        // sled keeps its lock a while after a close).
        let sm = StateMachineStore::load(&kv, Arc::default()).expect("load the file");
        assert_eq!(nodes(&sm), 2);
        // The file streams (what a start tries first), not only reads whole.
        let (streamed, last, size) =
            stream_snapshot(&SnapshotFile::new(dir.path(), None)).expect("streams");
        assert_eq!(streamed.state.nodes.len(), 2);
        assert_eq!(last, built.meta.last_log_id);
        assert_eq!(size, std::fs::metadata(&file).expect("size").len());

        // A damaged or lost file is an error naming it, not an empty state.
        std::fs::write(&file, b"garbage").expect("write");
        let err = StateMachineStore::load(&kv, Arc::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("snapshot"), "{err}");
        std::fs::remove_file(&file).expect("remove");
        let err = StateMachineStore::load(&kv, Arc::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
    }
}
