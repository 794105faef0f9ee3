//! The Raft log's entries in append-only segment files: an append is one
//! write and one `fdatasync`, a purge deletes whole files, and nothing runs
//! in the background (sled's flusher relocated live log entries out of
//! half-dead segments all the time: a third of a node's Raft CPU).
//!
//! Layout: a directory of segments named by the index of their first record
//! (`00000000000000000042.seg`). A segment is an 8-byte header (`RPLOG\0`
//! and the format version, u16 little-endian) followed by records: the
//! entry's index (u64), its length (u32) and the CRC-32 of its bytes (u32),
//! all little-endian, then the bytes (the encoded entry, with its own
//! version header). Indexes follow each other with no gap, within a segment
//! and from one segment to the next.
//!
//! Crash rules: appends are acknowledged only after `fdatasync`, so only the
//! last append's records can be torn; a start cuts a bad record at the end
//! of the last segment (and anything after it) unless the record after it is
//! sound, which makes it damage, not a torn write: then the start stops with
//! an error naming the file and offset. Truncation deletes segments from the
//! last one down, a purge from the first one up, so a crash in either leaves
//! a gapless log.

use super::StorageError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The segments' directory, inside the data directory.
pub(crate) const LOG_DIR: &str = "raft-log";
/// The format version written in each segment's header.
pub(crate) const SEGMENT_FORMAT: u16 = 1;
const MAGIC: &[u8; 6] = b"RPLOG\0";
const SEGMENT_HEADER: u64 = 8;
const RECORD_HEADER: u64 = 16;
/// A segment takes no more records once this large: purges free whole
/// segments, so this is about how much purged log a node keeps on disk.
const SEGMENT_BYTES: u64 = 8 << 20;
/// The largest record a start believes: a damaged length must not make it
/// allocate gigabytes (an entry never exceeds the largest RPC).
const MAX_RECORD: u64 = crate::cluster::network::MAX_MESSAGE_BYTES as u64;

/// One segment file and where its records are.
struct Segment {
    /// Index of its first record (its name).
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Offset and length of each record's bytes: record `i` has index
    /// `first + i`.
    records: Vec<(u64, u32)>,
    /// Where the next record goes.
    end: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.records.is_empty()).then(|| self.first + self.records.len() as u64 - 1)
    }
}

/// The log's segments. All methods block (file I/O): call them from
/// `spawn_blocking` where that matters.
pub(crate) struct LogFiles {
    dir: PathBuf,
    /// In index order; the last one takes appends.
    segments: Mutex<Vec<Segment>>,
    /// Records before this index are purged, though their segment may
    /// still hold them: never read again.
    purged_until: AtomicU64,
}

impl LogFiles {
    /// Whether `data_dir` holds a segment directory already.
    pub(crate) fn exists(data_dir: &Path) -> bool {
        data_dir.join(LOG_DIR).is_dir()
    }

    /// Opens the segments in `data_dir` (creating the directory if it is
    /// missing) and checks every record, cutting a torn tail.
    pub(crate) fn open(data_dir: &Path) -> Result<LogFiles, StorageError> {
        Self::open_at(&data_dir.join(LOG_DIR))
    }

    /// [`LogFiles::open`] of the segment directory `dir` itself.
    pub(crate) fn open_at(dir: &Path) -> Result<LogFiles, StorageError> {
        let dir = dir.to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| StorageError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        let listing = fs::read_dir(&dir).map_err(|e| file_error(&dir, "list", e))?;
        for item in listing {
            let path = item.map_err(|e| file_error(&dir, "list", e))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();
        let count = names.len();
        let mut segments: Vec<Segment> = Vec::with_capacity(count);
        for (i, (first, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let segment = read_segment(first, path, is_last)?;
            if let Some(prev) = segments.last() {
                let expected = prev.last().map_or(prev.first, |l| l + 1);
                if segment.first != expected {
                    return Err(corrupt(
                        &segment.path,
                        format!("starts at index {}, expected {expected}", segment.first),
                    ));
                }
            }
            segments.push(segment);
        }
        // A segment created just before a crash may hold no record.
        if let Some(empty) = segments.pop_if(|s| s.records.is_empty()) {
            fs::remove_file(&empty.path).map_err(|e| file_error(&empty.path, "remove", e))?;
        }
        Ok(LogFiles {
            dir,
            segments: Mutex::new(segments),
            purged_until: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Segment>> {
        // The segments are consistent between statements: a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `(index, bytes)` records and makes them durable. Indexes must
    /// follow the last record's (any index may start an empty log).
    pub(crate) fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StorageError> {
        let Some(&(first_index, _)) = records.first() else {
            return Ok(());
        };
        let to_sync = {
            let mut segments = self.lock();
            let next = segments.last().and_then(Segment::last).map(|l| l + 1);
            if let Some(next) = next.filter(|n| *n != first_index) {
                return Err(corrupt(
                    &self.dir,
                    format!("append at index {first_index}, the log ends before {next}"),
                ));
            }
            let full = segments.last().is_none_or(|s| s.end >= SEGMENT_BYTES);
            if full {
                if let Some(closing) = segments.last() {
                    closing
                        .file
                        .sync_data()
                        .map_err(|e| file_error(&closing.path, "sync", e))?;
                }
                segments.push(self.create_segment(first_index)?);
            }
            let Some(segment) = segments.last_mut() else {
                return Err(corrupt(&self.dir, "no segment to append to"));
            };
            let mut buf = Vec::with_capacity(
                records
                    .iter()
                    .map(|(_, b)| b.len() + RECORD_HEADER as usize)
                    .sum(),
            );
            let mut placed = Vec::with_capacity(records.len());
            let mut at = segment.end;
            for (i, (index, bytes)) in records.iter().enumerate() {
                let expected = first_index + i as u64;
                if *index != expected {
                    return Err(corrupt(
                        &segment.path,
                        format!("append of index {index} where {expected} belongs"),
                    ));
                }
                let len = u32::try_from(bytes.len())
                    .ok()
                    .filter(|l| u64::from(*l) <= MAX_RECORD)
                    .ok_or_else(|| corrupt(&segment.path, "an entry larger than 256 MiB"))?;
                buf.extend_from_slice(&index.to_le_bytes());
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
                buf.extend_from_slice(bytes);
                placed.push((at + RECORD_HEADER, len));
                at += RECORD_HEADER + u64::from(len);
            }
            segment
                .file
                .write_all_at(&buf, segment.end)
                .map_err(|e| file_error(&segment.path, "write", e))?;
            segment.end = at;
            segment.records.extend(placed);
            (segment.file.clone(), segment.path.clone())
        };
        // Outside the lock: readers go on while the disk syncs.
        let (file, path) = to_sync;
        file.sync_data().map_err(|e| file_error(&path, "sync", e))
    }

    fn create_segment(&self, first: u64) -> Result<Segment, StorageError> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| file_error(&path, "create", e))?;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        header[..6].copy_from_slice(MAGIC);
        header[6..].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
        file.write_all_at(&header, 0)
            .map_err(|e| file_error(&path, "write", e))?;
        file.sync_data().map_err(|e| file_error(&path, "sync", e))?;
        sync_dir(&self.dir)?;
        Ok(Segment {
            first,
            path,
            file: Arc::new(file),
            records: Vec::new(),
            end: SEGMENT_HEADER,
        })
    }

    /// Calls `visit` with each record's index and bytes from `from` up to
    /// `until` (exclusive), in order; records missing from the range (or
    /// purged) are simply not visited.
    pub(crate) fn for_each(
        &self,
        from: u64,
        until: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let from = from.max(self.purged_until.load(Ordering::Acquire));
        if from >= until {
            return Ok(());
        }
        let segments = self.lock();
        let mut buf = Vec::new();
        for segment in segments.iter() {
            let Some(last) = segment.last() else { continue };
            if last < from || segment.first >= until {
                continue;
            }
            let start = from.saturating_sub(segment.first) as usize;
            let stop = (until.min(last + 1) - segment.first) as usize;
            for (i, &(offset, len)) in segment.records[start..stop].iter().enumerate() {
                let index = segment.first + (start + i) as u64;
                read_record(segment, index, offset, len, &mut buf)?;
                visit(index, &buf)?;
            }
        }
        Ok(())
    }

    /// The last record's index and bytes.
    pub(crate) fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let segments = self.lock();
        let Some((segment, index)) = segments.iter().rev().find_map(|s| s.last().map(|l| (s, l)))
        else {
            return Ok(None);
        };
        let Some(&(offset, len)) = segment.records.last() else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        read_record(segment, index, offset, len, &mut buf)?;
        Ok(Some((index, buf)))
    }

    /// Removes every record from `index` on, durably.
    pub(crate) fn truncate_from(&self, index: u64) -> Result<(), StorageError> {
        let mut segments = self.lock();
        // From the last segment down: a crash midway leaves a gapless log.
        while let Some(segment) = segments.last() {
            if segment.first < index {
                break;
            }
            fs::remove_file(&segment.path).map_err(|e| file_error(&segment.path, "remove", e))?;
            segments.pop();
        }
        if let Some(segment) = segments.last_mut() {
            let keep = (index - segment.first) as usize;
            if keep < segment.records.len() {
                let end = segment.records[keep].0 - RECORD_HEADER;
                segment
                    .file
                    .set_len(end)
                    .map_err(|e| file_error(&segment.path, "truncate", e))?;
                segment
                    .file
                    .sync_data()
                    .map_err(|e| file_error(&segment.path, "sync", e))?;
                segment.records.truncate(keep);
                segment.end = end;
            }
        }
        sync_dir(&self.dir)
    }

    /// Purges the records at or before `index`: they are no longer read,
    /// and the segments holding only such records are deleted (the others
    /// stay until a later purge covers them whole).
    pub(crate) fn purge_through(&self, index: u64) -> Result<(), StorageError> {
        self.purged_until
            .fetch_max(index.saturating_add(1), Ordering::AcqRel);
        let mut segments = self.lock();
        let whole = segments
            .iter()
            .take_while(|s| s.last().is_none_or(|l| l <= index))
            .count();
        // From the first segment up: a crash midway leaves a gapless log.
        for segment in segments.drain(..whole) {
            fs::remove_file(&segment.path).map_err(|e| file_error(&segment.path, "remove", e))?;
        }
        Ok(())
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn read_record(
    segment: &Segment,
    index: u64,
    offset: u64,
    len: u32,
    buf: &mut Vec<u8>,
) -> Result<(), StorageError> {
    let mut head = [0u8; RECORD_HEADER as usize];
    segment
        .file
        .read_exact_at(&mut head, offset - RECORD_HEADER)
        .map_err(|e| file_error(&segment.path, "read", e))?;
    buf.resize(len as usize, 0);
    segment
        .file
        .read_exact_at(buf, offset)
        .map_err(|e| file_error(&segment.path, "read", e))?;
    match check_record(&head, buf) {
        Some((i, _)) if i == index => Ok(()),
        _ => Err(corrupt(
            &segment.path,
            format!(
                "log entry {index} at offset {} fails its check",
                offset - RECORD_HEADER
            ),
        )),
    }
}

/// The index and length a record header gives, if `bytes` match its CRC.
fn check_record(head: &[u8; RECORD_HEADER as usize], bytes: &[u8]) -> Option<(u64, u32)> {
    let (index, len, crc) = parse_header(head);
    (len as usize == bytes.len() && crc32fast::hash(bytes) == crc).then_some((index, len))
}

fn parse_header(head: &[u8; RECORD_HEADER as usize]) -> (u64, u32, u32) {
    let mut index = [0u8; 8];
    index.copy_from_slice(&head[..8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[8..12]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&head[12..16]);
    (
        u64::from_le_bytes(index),
        u32::from_le_bytes(len),
        u32::from_le_bytes(crc),
    )
}

/// Reads a segment's records; a bad record ends the last segment (a torn
/// write) unless a sound record follows it.
fn read_segment(first: u64, path: PathBuf, is_last: bool) -> Result<Segment, StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| file_error(&path, "open", e))?;
    let size = file
        .metadata()
        .map_err(|e| file_error(&path, "read", e))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut header = [0u8; SEGMENT_HEADER as usize];
    if size < SEGMENT_HEADER {
        if !is_last {
            return Err(corrupt(&path, "a segment without its header"));
        }
        // Created just before a crash: no record (the open removes it).
        return Ok(Segment {
            first,
            path,
            file: Arc::new(file),
            records: Vec::new(),
            end: size,
        });
    }
    reader
        .read_exact(&mut header)
        .map_err(|e| file_error(&path, "read", e))?;
    if &header[..6] != MAGIC {
        return Err(corrupt(&path, "not a raftpoll log segment"));
    }
    let version = u16::from_le_bytes([header[6], header[7]]);
    if version > SEGMENT_FORMAT {
        return Err(StorageError::TooNew {
            path: path.clone(),
            what: "log segment".into(),
            detail: format!(
                "format version {version}; this node reads up to {SEGMENT_FORMAT}: upgrade this node"
            ),
        });
    }
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER;
    let mut bytes = Vec::new();
    let mut head = [0u8; RECORD_HEADER as usize];
    while at < size {
        let expected = first + records.len() as u64;
        let sound = next_record(&mut reader, size - at, &mut head, &mut bytes)
            .filter(|(index, _)| *index == expected);
        match sound {
            Some((_, len)) => {
                records.push((at + RECORD_HEADER, len));
                at += RECORD_HEADER + u64::from(len);
            }
            None => {
                let (_, claimed, _) = parse_header(&head);
                let after = at + RECORD_HEADER + u64::from(claimed);
                let damage = after < size && sound_record_at(&file, after, size, expected + 1);
                if !is_last || damage {
                    return Err(corrupt(
                        &path,
                        format!("log entry {expected} at offset {at} fails its check"),
                    ));
                }
                tracing::warn!(
                    path = %path.display(),
                    offset = at,
                    bytes = size - at,
                    "cutting the log's torn last write (never acknowledged)"
                );
                file.set_len(at)
                    .map_err(|e| file_error(&path, "truncate", e))?;
                file.sync_data().map_err(|e| file_error(&path, "sync", e))?;
                break;
            }
        }
    }
    Ok(Segment {
        first,
        path,
        file: Arc::new(file),
        records,
        end: at,
    })
}

/// Reads the next record into `head` and `bytes` (at most `left` bytes of
/// the file remain): its index and length if it is whole and sound.
fn next_record(
    reader: &mut impl Read,
    left: u64,
    head: &mut [u8; RECORD_HEADER as usize],
    bytes: &mut Vec<u8>,
) -> Option<(u64, u32)> {
    *head = [0; RECORD_HEADER as usize];
    if left < RECORD_HEADER || reader.read_exact(head).is_err() {
        return None;
    }
    let (_, len, _) = parse_header(head);
    if u64::from(len) > MAX_RECORD || u64::from(len) > left - RECORD_HEADER {
        return None;
    }
    bytes.resize(len as usize, 0);
    reader.read_exact(bytes).ok()?;
    check_record(head, bytes)
}

/// Whether a sound record of `index` starts at `at`.
fn sound_record_at(file: &File, at: u64, size: u64, index: u64) -> bool {
    let mut reader = BufReader::new(FileAt { file, at });
    let mut head = [0u8; RECORD_HEADER as usize];
    let mut bytes = Vec::new();
    next_record(&mut reader, size - at, &mut head, &mut bytes).is_some_and(|(i, _)| i == index)
}

/// A reader of `file` from `at` on.
struct FileAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error(dir, "sync", e))
}

fn file_error(path: &Path, what: &'static str, source: io::Error) -> StorageError {
    StorageError::File {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn corrupt(path: &Path, detail: impl ToString) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        what: "Raft log".into(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn records(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("entry {i}").into_bytes()))
            .collect()
    }

    fn read_all(log: &LogFiles) -> Vec<u64> {
        let mut seen = Vec::new();
        log.for_each(0, u64::MAX, |i, bytes| {
            assert_eq!(bytes, format!("entry {i}").as_bytes());
            seen.push(i);
            Ok(())
        })
        .expect("read");
        seen
    }

    /// A log of `range` written and closed: its one segment file.
    fn one_segment(dir: &Path, range: std::ops::Range<u64>) -> PathBuf {
        let log = LogFiles::open(dir).expect("open");
        log.append(&records(range)).expect("append");
        drop(log);
        segment_files(dir).remove(0)
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir.join(LOG_DIR))
            .expect("list")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn records_survive_a_reopen_and_truncate_and_purge_keep_the_log_gapless() {
        let tmp = TempDir::new().expect("temp dir");
        let log = LogFiles::open(tmp.path()).expect("open");
        log.append(&records(5..20)).expect("append");
        assert_eq!(log.last().expect("last").map(|(i, _)| i), Some(19));
        let err = log.append(&records(25..26)).expect_err("a gap");
        assert!(err.to_string().contains("index 25"), "{err}");
        drop(log);

        let log = LogFiles::open(tmp.path()).expect("reopen");
        assert_eq!(read_all(&log), (5..20).collect::<Vec<_>>());
        log.truncate_from(12).expect("truncate");
        log.append(&records(12..14)).expect("append after truncate");
        assert_eq!(log.last().expect("last").map(|(i, _)| i), Some(13));
        drop(log);
        let log = LogFiles::open(tmp.path()).expect("reopen");
        assert_eq!(read_all(&log), (5..14).collect::<Vec<_>>());
        log.purge_through(100).expect("purge");
        assert_eq!(read_all(&log), Vec::<u64>::new());
        assert!(segment_files(tmp.path()).is_empty());
        log.append(&records(101..103))
            .expect("append after a purge of all");
        assert_eq!(read_all(&log), vec![101, 102]);
    }

    #[test]
    fn full_segments_are_closed_and_purged_whole() {
        let tmp = TempDir::new().expect("temp dir");
        let log = LogFiles::open(tmp.path()).expect("open");
        let big = vec![7u8; 3 << 20];
        for i in 1..=7u64 {
            log.append(&[(i, big.clone())]).expect("append");
        }
        // 3 MiB records, 8 MiB segments: three records per segment.
        assert_eq!(segment_files(tmp.path()).len(), 3);
        log.purge_through(5).expect("purge");
        assert_eq!(
            segment_files(tmp.path()).len(),
            2,
            "only 1..=3 lies wholly before 5"
        );
        let mut seen = Vec::new();
        log.for_each(4, 8, |i, _| {
            seen.push(i);
            Ok(())
        })
        .expect("read");
        assert_eq!(seen, vec![6, 7], "4 and 5 are kept on disk, not read");
        drop(log);
        let log = LogFiles::open(tmp.path()).expect("reopen");
        assert_eq!(log.last().expect("last").map(|(i, _)| i), Some(7));
    }

    #[test]
    fn a_segment_of_a_newer_format_is_refused_by_name() {
        let tmp = TempDir::new().expect("temp dir");
        let file = one_segment(tmp.path(), 1..3);
        let mut bytes = fs::read(&file).expect("read");
        bytes[6..8].copy_from_slice(&(SEGMENT_FORMAT + 1).to_le_bytes());
        fs::write(&file, &bytes).expect("write");
        let err = LogFiles::open(tmp.path()).err().expect("newer").to_string();
        assert!(
            err.contains("format version 2") && err.contains("upgrade"),
            "{err}"
        );
        assert!(!err.contains("corrupt"), "{err}");
    }

    #[test]
    fn a_torn_last_write_is_cut_and_damage_is_an_error_naming_the_file() {
        let tmp = TempDir::new().expect("temp dir");
        let file = one_segment(tmp.path(), 1..6);
        let len = fs::metadata(&file).expect("size").len();

        // The last record half written.
        let f = OpenOptions::new().write(true).open(&file).expect("open");
        f.set_len(len - 3).expect("cut");
        let log = LogFiles::open(tmp.path()).expect("a torn tail is cut");
        assert_eq!(read_all(&log), vec![1, 2, 3, 4]);
        log.append(&records(5..7)).expect("append after the cut");
        drop(log);

        // A byte of record 2 flipped, sound records after it: damage.
        let mut bytes = fs::read(&file).expect("read");
        let at = SEGMENT_HEADER as usize + (RECORD_HEADER as usize + 7) + RECORD_HEADER as usize;
        bytes[at] ^= 0xFF;
        fs::write(&file, &bytes).expect("write");
        let err = LogFiles::open(tmp.path())
            .err()
            .expect("damage")
            .to_string();
        assert!(
            err.contains("log entry 2") && err.contains(&file.display().to_string()),
            "{err}"
        );
        assert!(err.contains("corrupt"), "{err}");
    }
}
