//! Durable on-disk spool of RRD updates: an append-only, CRC-checked segment log.
//!
//! Design: every update the writer accepts is appended here *before* it is
//! sent to rrdcached (a write-ahead log), and a small cursor file records how
//! far rrdcached has confirmed. So a node killed at any point — rrdcached up
//! or down — replays exactly the unconfirmed tail on restart, in the order it
//! was accepted, which is timestamp order per file. Appends are buffered and
//! reach the OS once per writer round (one `write` syscall, which survives a
//! process kill); `fsync` runs at most once a second, so the happy path costs
//! an encode and a memcpy per update. A power loss can lose the last second.
//!
//! On disk, in the spool directory:
//! - `<id:016x>.seg`: segments, `SEGMENT_MAGIC` then records
//!   `[len u32][crc32 u32][payload]` (little endian). The payload holds a
//!   sequence number (strictly increasing across segments), the timestamp,
//!   the path, the data source definitions and the values. A new segment is
//!   started at every open and when the active one reaches the segment size.
//! - `cursor`: `[ack_seq u64][sent_end u64][crc32 u32]`, overwritten in place
//!   by one `pwrite` after each confirmed batch (and before each batch).
//!   Records with a seq below `ack_seq` are confirmed; records below
//!   `sent_end` were handed to rrdcached and may be there already.
//!
//! Nothing written twice: after a restart, records below `sent_end` are
//! flagged as possibly written; the writer asks rrdcached for each such
//! file's `LAST` and treats a "too old" refusal of them as already written.
//!
//! Damage (a kill -9 mid-write, a torn page) is found by length, CRC, decode
//! and sequence checks: the scan stops at the first bad record of a segment,
//! truncates the active tail or skips the rest of an older segment, counts
//! it, and never panics. The spool is bounded: past `max_bytes` the oldest
//! segments are deleted, confirmed or not, and their unconfirmed records are
//! reported as dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::warn;

use super::layout::{DsDef, DsType, RrdDef, RrdUpdate, RrdValue, is_valid_rrd_path};

/// First bytes of every segment file; the last one is the spool format
/// version (records and cursor layout), bumped on any change to them.
pub const SEGMENT_MAGIC: &[u8; 8] = b"RPSPOOL2";
/// `[len u32][crc u32]` before each payload.
pub const RECORD_HEADER: u64 = 8;
/// No real update comes near this; a larger length means damage.
const MAX_PAYLOAD: u32 = 1 << 20;
const CURSOR_FILE: &str = "cursor";
const CURSOR_LEN: usize = 20;
/// rrdtool's limit on data source names.
const MAX_DS_NAME: usize = 19;
const MAX_DS: usize = 1024;

/// Errors of the spool: always the file involved and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("RRD spool {path}: {source}")]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_path_buf(),
        source,
    }
}

/// The segment size for a spool bounded to `max_bytes`: a sixteenth of it,
/// between 4 KiB and 64 MiB, so dropping the oldest segment frees little.
pub fn segment_bytes_for(max_bytes: u64) -> u64 {
    (max_bytes / 16).clamp(4 << 10, 64 << 20)
}

/// A record read back from the spool.
#[derive(Clone, Debug, PartialEq)]
pub struct SpoolRecord {
    pub seq: u64,
    pub update: RrdUpdate,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Unconfirmed records found.
    pub records: u64,
    /// Newest spooled timestamp per file, among unconfirmed records.
    pub last_ts: HashMap<String, u64>,
    /// Unconfirmed records with a seq below this were sent before the
    /// restart and may already be in rrdcached.
    pub maybe_sent_end: u64,
    /// Files that have such records.
    pub maybe_sent_files: HashSet<String>,
    /// Damaged regions skipped (each a cut tail of one segment).
    pub corrupt: u64,
    /// Oldest timestamp among unconfirmed records.
    pub oldest_ts: Option<u64>,
}

/// Records the size bound deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Unconfirmed records deleted.
    pub records: u64,
    /// The seqs deleted, `[from, to)` (confirmed ones in it excepted).
    pub seqs: Option<(u64, u64)>,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes of valid records plus the magic.
    len: u64,
    first_seq: u64,
    records: u64,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.records
    }
}

/// The spool. Owned by the writer task; every call is plain blocking file
/// I/O on the page cache except [`Spool::sync_handles`]'s fsync, which the
/// caller runs off the async thread.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    out: BufWriter<File>,
    /// Bytes written into `out` not yet handed to the OS.
    unflushed: bool,
    /// Written to the OS since the last fsync.
    unsynced: bool,
    /// Rotated segments not yet fsynced.
    to_sync: Vec<File>,
    /// Segment files created or deleted since the last fsync.
    dir_dirty: bool,
    cursor: File,
    next_seq: u64,
    ack_seq: u64,
    sent_end: u64,
    /// Next record to read: segment index id and offset, and its seq.
    read_seg: u64,
    read_off: u64,
    read_seq: u64,
    reader: Option<(u64, BufReader<File>, u64)>,
    defs: HashMap<Vec<u8>, Arc<RrdDef>>,
    corrupt: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("records", &self.records())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, checks every
    /// unconfirmed record, cuts damaged tails, and starts a new segment.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Recovery), SpoolError> {
        fs::create_dir_all(dir).map_err(at(dir))?;
        let cursor_path = dir.join(CURSOR_FILE);
        let cursor = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&cursor_path)
            .map_err(at(&cursor_path))?;
        // Two writers on one spool would interleave records and cursors.
        cursor.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => SpoolError {
                path: dir.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "in use by another RRD writer (another node on this data directory?)",
                ),
            },
            fs::TryLockError::Error(source) => SpoolError {
                path: cursor_path.clone(),
                source,
            },
        })?;
        let saved = read_cursor(&cursor);
        if saved.is_none() && cursor.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
            warn!(path = %cursor_path.display(), "RRD spool cursor damaged; replaying every spooled update");
        }
        let (ack_seq, sent_end) = saved.unwrap_or((0, u64::MAX));

        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(at(dir))? {
            let entry = entry.map_err(at(dir))?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();

        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut defs = HashMap::new();
        let mut max_seq = None::<u64>;
        let last_id = ids.last().copied();
        for id in ids {
            let path = segment_path(dir, id);
            let scan = scan_segment(&path, ack_seq, &mut defs, max_seq)?;
            if scan.damaged {
                recovery.corrupt += 1;
                warn!(path = %path.display(), offset = scan.len, "damaged RRD spool record; skipping the rest of the segment");
                if Some(id) == last_id {
                    // A kill -9 mid-write: cut the tail so the file is clean.
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(at(&path))?;
                    f.set_len(scan.len).map_err(at(&path))?;
                }
            }
            let fully_confirmed = scan.records == 0 || scan.first_seq + scan.records <= ack_seq;
            if fully_confirmed {
                fs::remove_file(&path).map_err(at(&path))?;
                if let Some(last) = scan.last_seq {
                    max_seq = max_seq.max(Some(last));
                }
                continue;
            }
            for (path, ts, seq) in &scan.unconfirmed {
                recovery.records += 1;
                recovery.oldest_ts = Some(recovery.oldest_ts.map_or(*ts, |o| o.min(*ts)));
                let e = recovery.last_ts.entry(path.clone()).or_insert(*ts);
                *e = (*e).max(*ts);
                if *seq < sent_end {
                    recovery.maybe_sent_files.insert(path.clone());
                    recovery.maybe_sent_end = recovery.maybe_sent_end.max(*seq + 1);
                }
            }
            max_seq = max_seq.max(scan.last_seq);
            segments.push_back(Segment {
                id,
                len: scan.len,
                first_seq: scan.first_seq,
                records: scan.records,
            });
        }

        let mut next_seq = max_seq.map_or(0, |s| s + 1).max(ack_seq);
        if sent_end != u64::MAX {
            next_seq = next_seq.max(sent_end);
        }
        let first_unconfirmed = segments
            .front()
            .map_or(next_seq, |s| s.first_seq.max(ack_seq));
        let new_id = segments.back().map_or(0, |s| s.id) + 1;
        let (out, seg) = new_segment(dir, new_id, next_seq)?;
        segments.push_back(seg);
        let (read_seg, read_seq) = segments
            .front()
            .map_or((new_id, next_seq), |s| (s.id, s.first_seq));
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes_for(max_bytes),
            segments,
            out,
            unflushed: false,
            unsynced: true,
            to_sync: Vec::new(),
            dir_dirty: true,
            cursor,
            next_seq,
            ack_seq: first_unconfirmed,
            sent_end: sent_end.min(next_seq),
            read_seg,
            read_off: SEGMENT_MAGIC.len() as u64,
            read_seq,
            reader: None,
            defs,
            corrupt: recovery.corrupt,
        };
        // Position the reader on the first unconfirmed record.
        while spool.read_seq < spool.ack_seq {
            if spool.read_next()?.is_none() {
                break;
            }
        }
        spool.read_seq = spool.read_seq.max(spool.ack_seq);
        spool.write_cursor()?;
        Ok((spool, recovery))
    }

    /// Appends one update; returns its seq. Buffered: [`Spool::flush`]
    /// hands it to the OS.
    pub fn append(&mut self, update: &RrdUpdate) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        let payload = encode(seq, update);
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_PAYLOAD)
            .ok_or_else(|| SpoolError {
                path: self.active_path(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "update too large to spool"),
            })?;
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc32(&payload).to_le_bytes());
        let path = self.active_path();
        self.out.write_all(&header).map_err(at(&path))?;
        self.out.write_all(&payload).map_err(at(&path))?;
        self.unflushed = true;
        self.next_seq += 1;
        if let Some(seg) = self.segments.back_mut() {
            seg.len += RECORD_HEADER + u64::from(len);
            seg.records += 1;
            if seg.len >= self.segment_bytes {
                self.rotate()?;
            }
        }
        Ok(seq)
    }

    /// Whether every record has been read (or handed out directly).
    pub fn caught_up(&self) -> bool {
        self.read_seq >= self.next_seq
    }

    /// Marks everything appended as read: the caller holds the newest
    /// record in memory already (only valid right after an append made
    /// while [`Spool::caught_up`]).
    pub fn skip_to_end(&mut self) {
        if let Some(seg) = self.segments.back() {
            self.read_seg = seg.id;
            self.read_off = seg.len;
        }
        self.read_seq = self.next_seq;
        self.reader = None;
    }

    /// The next unread record, or None when caught up.
    pub fn read_next(&mut self) -> Result<Option<SpoolRecord>, SpoolError> {
        loop {
            let Some(index) = self.segments.iter().position(|s| s.id >= self.read_seg) else {
                return Ok(None);
            };
            let seg = &self.segments[index];
            if seg.id != self.read_seg {
                self.read_seg = seg.id;
                self.read_off = SEGMENT_MAGIC.len() as u64;
                self.read_seq = seg.first_seq;
                self.reader = None;
            }
            let seg_len = seg.len;
            let is_last = index + 1 == self.segments.len();
            if self.read_off >= seg_len {
                if is_last {
                    return Ok(None);
                }
                let next = &self.segments[index + 1];
                self.read_seg = next.id;
                self.read_off = SEGMENT_MAGIC.len() as u64;
                self.read_seq = next.first_seq;
                self.reader = None;
                continue;
            }
            if is_last {
                self.flush()?;
            }
            let path = segment_path(&self.dir, self.read_seg);
            let reader = match &mut self.reader {
                Some((id, r, off)) if *id == self.read_seg && *off == self.read_off => r,
                _ => {
                    let mut f = File::open(&path).map_err(at(&path))?;
                    f.seek(SeekFrom::Start(self.read_off)).map_err(at(&path))?;
                    self.reader = Some((self.read_seg, BufReader::new(f), self.read_off));
                    match &mut self.reader {
                        Some((_, r, _)) => r,
                        None => return Ok(None),
                    }
                }
            };
            match read_record(reader, seg_len - self.read_off, &mut self.defs) {
                Ok(Some((seq, update, size))) if seq >= self.read_seq => {
                    self.read_off += size;
                    self.read_seq = seq + 1;
                    if let Some((_, _, off)) = &mut self.reader {
                        *off = self.read_off;
                    }
                    return Ok(Some(SpoolRecord { seq, update }));
                }
                Ok(_) | Err(_) => {
                    // Changed under us since the open-time check: skip the rest.
                    self.corrupt += 1;
                    warn!(path = %path.display(), offset = self.read_off, "damaged RRD spool record; skipping the rest of the segment");
                    let lost_from = self.read_seq;
                    if let Some(seg) = self.segments.iter_mut().find(|s| s.id == self.read_seg) {
                        let lost = seg.end_seq().saturating_sub(lost_from);
                        seg.len = self.read_off;
                        seg.records -= lost.min(seg.records);
                    }
                    self.reader = None;
                    if is_last {
                        // Appends continue in a fresh segment.
                        self.rotate()?;
                        self.skip_to_end();
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Hands buffered appends to the OS (survives a process kill).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.unflushed {
            let path = self.active_path();
            self.out.flush().map_err(at(&path))?;
            self.unflushed = false;
            self.unsynced = true;
        }
        Ok(())
    }

    /// Whether something reached the OS since the last fsync.
    pub fn needs_sync(&self) -> bool {
        self.unflushed || self.unsynced || !self.to_sync.is_empty() || self.dir_dirty
    }

    /// Flushes, then returns the files to fsync (active segment, rotated
    /// segments, cursor, directory) so the caller can sync them off the
    /// async thread. Marks them synced.
    pub fn sync_handles(&mut self) -> Result<Vec<File>, SpoolError> {
        self.flush()?;
        let mut files = std::mem::take(&mut self.to_sync);
        let active = self.active_path();
        files.push(self.out.get_ref().try_clone().map_err(at(&active))?);
        let cursor_path = self.dir.join(CURSOR_FILE);
        files.push(self.cursor.try_clone().map_err(at(&cursor_path))?);
        if self.dir_dirty {
            files.push(File::open(&self.dir).map_err(at(&self.dir))?);
            self.dir_dirty = false;
        }
        self.unsynced = false;
        Ok(files)
    }

    /// Records that records up to `seq` are being handed to rrdcached.
    pub fn mark_sent(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq >= self.sent_end {
            self.sent_end = seq + 1;
            self.write_cursor()?;
        }
        Ok(())
    }

    /// Records that every record before `seq` is confirmed (or given up),
    /// and deletes segments that hold only such records.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.ack_seq {
            return Ok(());
        }
        self.ack_seq = seq.min(self.next_seq);
        self.write_cursor()?;
        while self.segments.len() > 1 {
            match self.segments.front() {
                Some(s) if s.end_seq() <= self.ack_seq => self.remove_front()?,
                _ => break,
            }
        }
        Ok(())
    }

    /// Deletes the oldest segments while the spool is over its bound.
    /// Returns the unconfirmed records deleted; the caller forgets any of
    /// them it holds (every seq below [`Spool::ack_seq`]).
    pub fn enforce_limit(&mut self) -> Result<Dropped, SpoolError> {
        let mut dropped = Dropped::default();
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let from = front.first_seq.max(self.ack_seq);
            let to = front.end_seq();
            let next_first = self.segments.get(1).map_or(self.next_seq, |s| s.first_seq);
            self.remove_front()?;
            if to > from {
                dropped.records += to - from;
                dropped.seqs = Some(match dropped.seqs {
                    Some((a, _)) => (a, to),
                    None => (from, to),
                });
            }
            self.ack_seq = self.ack_seq.max(next_first);
            if self.read_seq < next_first {
                self.read_seq = next_first;
            }
        }
        if dropped.records > 0 {
            warn!(dir = %self.dir.display(), dropped = dropped.records, max_bytes = self.max_bytes,
                "RRD spool full; dropped its oldest updates");
            self.write_cursor()?;
        }
        Ok(dropped)
    }

    /// Seq the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// First unconfirmed seq.
    pub fn ack_seq(&self) -> u64 {
        self.ack_seq
    }

    /// Seq of the next record [`Spool::read_next`] returns.
    pub fn read_seq(&self) -> u64 {
        self.read_seq
    }

    /// Unconfirmed records on disk.
    pub fn records(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.end_seq().saturating_sub(s.first_seq.max(self.ack_seq)))
            .sum()
    }

    /// Bytes of the segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Damaged regions skipped since open (including those found at open).
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active_path(&self) -> PathBuf {
        segment_path(&self.dir, self.segments.back().map_or(0, |s| s.id))
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.flush()?;
        let id = self.segments.back().map_or(0, |s| s.id) + 1;
        let (out, seg) = new_segment(&self.dir, id, self.next_seq)?;
        let old = std::mem::replace(&mut self.out, out);
        // Keep the old handle to fsync it with the next sync.
        if let Ok(f) = old.into_inner() {
            self.to_sync.push(f);
        }
        self.segments.push_back(seg);
        self.dir_dirty = true;
        Ok(())
    }

    fn remove_front(&mut self) -> Result<(), SpoolError> {
        if let Some(seg) = self.segments.pop_front() {
            let path = segment_path(&self.dir, seg.id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at(&path)(e)),
            }
            if self.read_seg <= seg.id {
                self.reader = None;
                self.read_seg = seg.id + 1;
                self.read_off = SEGMENT_MAGIC.len() as u64;
            }
            self.dir_dirty = true;
        }
        Ok(())
    }

    fn write_cursor(&mut self) -> Result<(), SpoolError> {
        let mut buf = [0u8; CURSOR_LEN];
        buf[..8].copy_from_slice(&self.ack_seq.to_le_bytes());
        buf[8..16].copy_from_slice(&self.sent_end.to_le_bytes());
        let crc = crc32(&buf[..16]);
        buf[16..].copy_from_slice(&crc.to_le_bytes());
        // One small pwrite: a process kill cannot tear it.
        self.cursor
            .write_all_at(&buf, 0)
            .map_err(at(&self.dir.join(CURSOR_FILE)))?;
        self.unsynced = true;
        Ok(())
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

fn new_segment(
    dir: &Path,
    id: u64,
    first_seq: u64,
) -> Result<(BufWriter<File>, Segment), SpoolError> {
    let path = segment_path(dir, id);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(at(&path))?;
    f.write_all(SEGMENT_MAGIC).map_err(at(&path))?;
    Ok((
        BufWriter::with_capacity(64 << 10, f),
        Segment {
            id,
            len: SEGMENT_MAGIC.len() as u64,
            first_seq,
            records: 0,
        },
    ))
}

fn read_cursor(f: &File) -> Option<(u64, u64)> {
    let mut buf = [0u8; CURSOR_LEN];
    f.read_exact_at(&mut buf, 0).ok()?;
    let crc = u32::from_le_bytes(buf[16..].try_into().ok()?);
    if crc32(&buf[..16]) != crc {
        return None;
    }
    let ack = u64::from_le_bytes(buf[..8].try_into().ok()?);
    let sent = u64::from_le_bytes(buf[8..16].try_into().ok()?);
    Some((ack, sent))
}

struct Scan {
    len: u64,
    first_seq: u64,
    records: u64,
    last_seq: Option<u64>,
    damaged: bool,
    /// (path, timestamp, seq) of records with seq ≥ ack_seq.
    unconfirmed: Vec<(String, u64, u64)>,
}

/// Reads a whole segment, stopping at the first damaged record.
fn scan_segment(
    path: &Path,
    ack_seq: u64,
    defs: &mut HashMap<Vec<u8>, Arc<RrdDef>>,
    prev_seq: Option<u64>,
) -> Result<Scan, SpoolError> {
    let file = File::open(path).map_err(at(path))?;
    let total = file.metadata().map_err(at(path))?.len();
    let mut r = BufReader::with_capacity(256 << 10, file);
    let mut scan = Scan {
        len: 0,
        first_seq: 0,
        records: 0,
        last_seq: None,
        damaged: false,
        unconfirmed: Vec::new(),
    };
    let mut magic = [0u8; 8];
    let read = total >= 8 && r.read_exact(&mut magic).is_ok();
    // The magic's last byte is the spool format version: a newer one is not
    // damage, and must not be cut or deleted by an older node.
    if read && magic[..7] == SEGMENT_MAGIC[..7] && magic[7] > SEGMENT_MAGIC[7] {
        return Err(SpoolError {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "segment of spool format {} written by a newer raftpoll (this version reads format {}): upgrade this node",
                    char::from(magic[7]),
                    char::from(SEGMENT_MAGIC[7])
                ),
            ),
        });
    }
    if !read || &magic != SEGMENT_MAGIC {
        scan.damaged = total > 0;
        return Ok(scan);
    }
    scan.len = 8;
    let mut prev = prev_seq;
    loop {
        if scan.len == total {
            break;
        }
        match read_record(&mut r, total - scan.len, defs) {
            Ok(Some((seq, update, size))) if prev.is_none_or(|p| seq > p) => {
                if scan.records == 0 {
                    scan.first_seq = seq;
                } else if Some(seq) != scan.last_seq.map(|s| s + 1) {
                    // Seqs are contiguous within a segment.
                    scan.damaged = true;
                    break;
                }
                if seq >= ack_seq {
                    scan.unconfirmed.push((update.path, update.timestamp, seq));
                }
                scan.records += 1;
                scan.last_seq = Some(seq);
                prev = Some(seq);
                scan.len += size;
            }
            _ => {
                scan.damaged = true;
                break;
            }
        }
    }
    Ok(scan)
}

/// Reads one record of at most `left` bytes: Ok(None) on a clean or torn
/// end, Err on damage. Returns (seq, update, bytes used).
fn read_record(
    r: &mut impl Read,
    left: u64,
    defs: &mut HashMap<Vec<u8>, Arc<RrdDef>>,
) -> io::Result<Option<(u64, RrdUpdate, u64)>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if left < RECORD_HEADER {
        return Ok(None);
    }
    let mut header = [0u8; 8];
    r.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_PAYLOAD || u64::from(len) > left - RECORD_HEADER {
        return Err(bad("record length out of range"));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if crc32(&payload) != crc {
        return Err(bad("record CRC mismatch"));
    }
    let (seq, update) = decode(&payload, defs).ok_or_else(|| bad("record does not decode"))?;
    Ok(Some((seq, update, RECORD_HEADER + u64::from(len))))
}

/// The payload of one record.
pub fn encode(seq: u64, u: &RrdUpdate) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + u.path.len() + u.def.ds.len() * 40);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&u.timestamp.to_le_bytes());
    b.extend_from_slice(&u.millis.to_le_bytes());
    let path = u.path.as_bytes();
    b.extend_from_slice(&(path.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    b.extend_from_slice(&path[..path.len().min(usize::from(u16::MAX))]);
    encode_def(&u.def, &mut b);
    for v in &u.values {
        match v {
            RrdValue::Unknown => b.push(0),
            RrdValue::Counter(c) => {
                b.push(1);
                b.extend_from_slice(&c.to_le_bytes());
            }
            RrdValue::Gauge(g) => {
                b.push(2);
                b.extend_from_slice(&g.to_le_bytes());
            }
        }
    }
    b
}

fn encode_def(def: &RrdDef, b: &mut Vec<u8>) {
    b.extend_from_slice(&(def.ds.len() as u16).to_le_bytes());
    for ds in &def.ds {
        let name = ds.name.as_bytes();
        b.push(name.len().min(255) as u8);
        b.extend_from_slice(&name[..name.len().min(255)]);
        b.push(match ds.kind {
            DsType::Gauge => 0,
            DsType::Derive => 1,
            DsType::Counter => 2,
        });
        for limit in [ds.min, ds.max] {
            match limit {
                None => b.push(0),
                Some(v) => {
                    b.push(1);
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

/// Decodes a payload; None on anything malformed.
pub fn decode(p: &[u8], defs: &mut HashMap<Vec<u8>, Arc<RrdDef>>) -> Option<(u64, RrdUpdate)> {
    let mut c = Cursor { p, at: 0 };
    let seq = c.u64()?;
    let timestamp = c.u64()?;
    let millis = c.u16()?.min(999);
    let path_len = usize::from(c.u16()?);
    let path = std::str::from_utf8(c.take(path_len)?).ok()?.to_string();
    if !is_valid_rrd_path(&path) {
        return None;
    }
    let def_start = c.at;
    let ds_count = usize::from(c.u16()?);
    if ds_count > MAX_DS {
        return None;
    }
    let mut ds = Vec::with_capacity(ds_count);
    for _ in 0..ds_count {
        let name_len = usize::from(c.u8()?);
        let name = std::str::from_utf8(c.take(name_len)?).ok()?;
        if name.is_empty()
            || name.len() > MAX_DS_NAME
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        let kind = match c.u8()? {
            0 => DsType::Gauge,
            1 => DsType::Derive,
            2 => DsType::Counter,
            _ => return None,
        };
        let mut limits = [None, None];
        for l in &mut limits {
            *l = match c.u8()? {
                0 => None,
                1 => Some(f64::from_le_bytes(c.take(8)?.try_into().ok()?)),
                _ => return None,
            };
        }
        ds.push((name, kind, limits));
    }
    let def_bytes = &p[def_start..c.at];
    let def = match defs.get(def_bytes) {
        Some(d) => d.clone(),
        None => {
            let def = Arc::new(RrdDef {
                ds: ds
                    .iter()
                    .map(|(name, kind, [min, max])| DsDef {
                        name: intern(name),
                        kind: *kind,
                        min: *min,
                        max: *max,
                    })
                    .collect(),
            });
            defs.insert(def_bytes.to_vec(), def.clone());
            def
        }
    };
    let mut values = Vec::with_capacity(ds_count);
    for _ in 0..ds_count {
        values.push(match c.u8()? {
            0 => RrdValue::Unknown,
            1 => RrdValue::Counter(c.u64()?),
            2 => RrdValue::Gauge(f64::from_le_bytes(c.take(8)?.try_into().ok()?)),
            _ => return None,
        });
    }
    if c.at != p.len() {
        return None;
    }
    Some((
        seq,
        RrdUpdate {
            path,
            def,
            timestamp,
            millis,
            values,
        },
    ))
}

/// Data source names are `&'static str`: each distinct (validated, at most
/// 19 byte) name read back is leaked once and reused.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

struct Cursor<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.p.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib), table driven.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Arc<RrdDef> {
        Arc::new(RrdDef {
            ds: vec![
                DsDef {
                    name: "INOCTETS",
                    kind: DsType::Derive,
                    min: Some(0.0),
                    max: Some(12_500_000_000.0),
                },
                DsDef {
                    name: "usage",
                    kind: DsType::Gauge,
                    min: None,
                    max: Some(-1.5),
                },
            ],
        })
    }

    fn update(path: &str, ts: u64) -> RrdUpdate {
        RrdUpdate {
            path: path.to_string(),
            def: def(),
            timestamp: ts,
            millis: 0,
            values: vec![RrdValue::Counter(ts * 7), RrdValue::Gauge(0.25)],
        }
    }

    fn read_all(spool: &mut Spool) -> Vec<(u64, String, u64)> {
        let mut out = Vec::new();
        while let Some(r) = spool.read_next().expect("read") {
            out.push((r.seq, r.update.path, r.update.timestamp));
        }
        out
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_damage() {
        let mut u = update("h/port-id1.rrd", 1_700_000_000);
        u.values = vec![RrdValue::Unknown, RrdValue::Gauge(f64::NAN)];
        let p = encode(42, &u);
        let mut defs = HashMap::new();
        let (seq, back) = decode(&p, &mut defs).expect("decodes");
        assert_eq!(seq, 42);
        assert_eq!(back.path, u.path);
        assert_eq!(back.def, u.def);
        assert_eq!(back.values[0], RrdValue::Unknown);
        assert!(matches!(back.values[1], RrdValue::Gauge(g) if g.is_nan()));
        // Decoded definitions are shared.
        let (_, again) = decode(&p, &mut defs).expect("decodes");
        assert!(Arc::ptr_eq(&back.def, &again.def));
        // Every truncation and a trailing byte are rejected, never a panic.
        for cut in 0..p.len() {
            assert!(decode(&p[..cut], &mut defs).is_none(), "cut at {cut}");
        }
        let mut longer = p.clone();
        longer.push(0);
        assert!(decode(&longer, &mut defs).is_none());
        // A path that escapes the base dir is rejected.
        let evil = encode(1, &update("../x.rrd", 1));
        assert!(decode(&evil, &mut defs).is_none());
        // Arbitrary bytes never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = decode(&junk, &mut defs);
        }
    }

    #[test]
    fn appends_read_back_in_order_and_acks_survive_reopen() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut s, rec) = Spool::open(tmp.path(), 1 << 20).expect("open");
        assert_eq!(rec.records, 0);
        for ts in 0..10 {
            s.append(&update(&format!("h/f{}.rrd", ts % 3), 100 + ts))
                .expect("append");
        }
        assert!(!s.caught_up());
        let got = read_all(&mut s);
        assert_eq!(got.len(), 10);
        assert_eq!(got[0], (0, "h/f0.rrd".to_string(), 100));
        assert!(s.caught_up());
        s.mark_sent(5).expect("sent");
        s.ack(4).expect("ack");
        assert_eq!(s.records(), 6);
        s.flush().expect("flush");
        drop(s);

        let (mut s, rec) = Spool::open(tmp.path(), 1 << 20).expect("reopen");
        assert_eq!(rec.records, 6);
        assert_eq!(rec.maybe_sent_end, 6);
        assert_eq!(
            rec.maybe_sent_files,
            ["h/f1.rrd", "h/f2.rrd"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert_eq!(rec.last_ts.get("h/f0.rrd"), Some(&109));
        assert_eq!(rec.corrupt, 0);
        let got = read_all(&mut s);
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, vec![4, 5, 6, 7, 8, 9]);
        // New appends continue the sequence in a new segment.
        assert_eq!(s.append(&update("h/f0.rrd", 200)).expect("append"), 10);
        assert_eq!(read_all(&mut s).len(), 1);
        s.ack(11).expect("ack all");
        assert_eq!(s.records(), 0);
        drop(s);
        let (_s, rec) = Spool::open(tmp.path(), 1 << 20).expect("reopen");
        assert_eq!(rec.records, 0);
        // Confirmed segments are gone: only the new, empty one is left.
        assert_eq!(segments(tmp.path()).len(), 1);
    }

    #[test]
    fn torn_and_corrupt_tails_are_cut_not_fatal() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut s, _) = Spool::open(tmp.path(), 1 << 20).expect("open");
        for ts in 0..5 {
            s.append(&update("h/a.rrd", 100 + ts)).expect("append");
        }
        s.flush().expect("flush");
        drop(s);
        let seg = segments(tmp.path()).pop().expect("a segment");
        let good_len = fs::metadata(&seg).expect("meta").len();
        // A record cut mid-write by a kill -9.
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        let torn = encode(5, &update("h/a.rrd", 105));
        f.write_all(&(torn.len() as u32).to_le_bytes()).expect("w");
        f.write_all(&crc32(&torn).to_le_bytes()).expect("w");
        f.write_all(&torn[..torn.len() / 2]).expect("w");
        drop(f);

        let (mut s, rec) = Spool::open(tmp.path(), 1 << 20).expect("reopen");
        assert_eq!((rec.records, rec.corrupt), (5, 1));
        assert_eq!(fs::metadata(&seg).expect("meta").len(), good_len);
        assert_eq!(read_all(&mut s).len(), 5);
        s.append(&update("h/a.rrd", 106)).expect("append");
        s.flush().expect("flush");
        drop(s);

        // A flipped byte in the last record of the newest segment.
        let seg = segments(tmp.path()).pop().expect("a segment");
        let mut bytes = fs::read(&seg).expect("read");
        let n = bytes.len();
        bytes[n - 3] ^= 0x55;
        fs::write(&seg, &bytes).expect("write");
        let (mut s, rec) = Spool::open(tmp.path(), 1 << 20).expect("reopen");
        assert_eq!((rec.records, rec.corrupt), (5, 1));
        let got = read_all(&mut s);
        assert_eq!(got.last().map(|g| g.2), Some(104));

        // Garbage instead of a segment header, and a damaged cursor.
        fs::write(tmp.path().join("00000000000000ff.seg"), b"not a spool").expect("w");
        fs::write(tmp.path().join(CURSOR_FILE), b"xx").expect("w");
        drop(s);
        let (mut s, rec) = Spool::open(tmp.path(), 1 << 20).expect("reopen");
        assert_eq!(rec.records, 5);
        // Without a cursor every record may have been sent.
        assert_eq!(rec.maybe_sent_end, 5);
        assert_eq!(read_all(&mut s).len(), 5);
    }

    #[test]
    fn a_second_open_of_a_spool_in_use_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (first, _) = Spool::open(tmp.path(), 1 << 20).expect("open");
        let err = Spool::open(tmp.path(), 1 << 20).expect_err("the spool is in use");
        assert_eq!(err.source.kind(), io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("another RRD writer"), "{err}");
        drop(first);
        Spool::open(tmp.path(), 1 << 20).expect("free again once the first is closed");
    }

    #[test]
    fn size_bound_drops_oldest_segments() {
        let tmp = tempfile::tempdir().expect("tmp");
        let max = 64 << 10;
        let (mut s, _) = Spool::open(tmp.path(), max).expect("open");
        let mut total = Dropped::default();
        for ts in 0..1000 {
            s.append(&update("h/a.rrd", 1000 + ts)).expect("append");
            let d = s.enforce_limit().expect("limit");
            total.records += d.records;
            if let Some((from, to)) = d.seqs {
                assert!(from >= total.seqs.map_or(0, |t| t.1));
                total.seqs = Some((total.seqs.map_or(from, |t| t.0), to));
            }
        }
        assert!(s.bytes() <= max, "{} > {max}", s.bytes());
        assert!(total.records > 0);
        assert_eq!(total.records + s.records(), 1000);
        let got = read_all(&mut s);
        assert_eq!(got.len() as u64, s.records());
        assert_eq!(got.first().map(|g| g.0), total.seqs.map(|t| t.1));
        assert_eq!(got.last().map(|g| g.2), Some(1999));
    }
}
