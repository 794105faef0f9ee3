//! The snapshot file beside the sled database: written atomically through a
//! buffer (never the whole snapshot in memory), and [`SnapshotData`], the
//! handle openraft passes between the state machine and the network.

use super::StorageError;
use crate::codec;
use crate::raft_types::{LogId, SnapshotMeta};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The last snapshot, in the data directory: the encoded metadata followed by
/// the encoded state machine, each with its own version header. A sled value
/// this size cost sled's serialisation and page copies on top of the
/// snapshot itself (about 100 MiB more at 20,000 devices).
pub const SNAPSHOT_FILE: &str = "raft-snapshot.bin";

/// How much of the file's head [`SnapshotFile::open`] reads for the
/// metadata: a membership of thousands of nodes fits.
const META_READ_LIMIT: u64 = 1 << 20;

/// The write buffer: large enough that the encoder's small writes cost
/// nothing, small beside a snapshot of tens of MiB.
const WRITE_BUFFER: usize = 256 * 1024;

/// The data of a snapshot (an encoded state machine), as openraft hands it
/// between the state machine and the network.
#[derive(Debug)]
pub enum SnapshotData {
    /// Received from a leader, or an older version's snapshot read from sled.
    InMemory(Vec<u8>),
    /// In a snapshot file from byte `at` to its end. The file was opened
    /// when the snapshot was written or read, so a newer snapshot renamed
    /// over `path` does not change what this reads.
    InFile { file: File, at: u64, path: PathBuf },
}

impl SnapshotData {
    /// The data's bytes (read from the file if it is in one).
    pub fn into_bytes(self) -> Result<Vec<u8>, StorageError> {
        match self {
            SnapshotData::InMemory(bytes) => Ok(bytes),
            SnapshotData::InFile { file, at, path } => {
                let fail = |source| StorageError::File {
                    path: path.clone(),
                    what: "read the snapshot",
                    source,
                };
                let len = file.metadata().map_err(fail)?.len();
                let size = usize::try_from(len.saturating_sub(at))
                    .map_err(|_| fail(io::Error::other("larger than memory can address")))?;
                let mut bytes = vec![0; size];
                file.read_exact_at(&mut bytes, at).map_err(fail)?;
                Ok(bytes)
            }
        }
    }
}

/// A snapshot written by [`SnapshotFile::write`].
#[derive(Debug)]
pub struct Written {
    /// The snapshot's data, in the file just written.
    pub data: SnapshotData,
    /// The file's size: metadata and data.
    pub bytes: u64,
}

/// The snapshot file of one data directory. Builds and installs may run at
/// once (openraft builds on a task of its own); this keeps the file at the
/// newest snapshot of the two.
#[derive(Debug)]
pub struct SnapshotFile {
    dir: PathBuf,
    /// The last log id of the snapshot in the file (`None`: no snapshot, or
    /// one of an empty log).
    newest: Mutex<Option<LogId>>,
}

impl SnapshotFile {
    /// The snapshot file in `dir`, holding the snapshot up to `newest`.
    pub fn new(dir: &Path, newest: Option<LogId>) -> SnapshotFile {
        SnapshotFile {
            dir: dir.to_path_buf(),
            newest: Mutex::new(newest),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// The whole file, or `None` if there is none.
    pub fn read(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::File {
                path,
                what: "read the snapshot",
                source,
            }),
        }
    }

    /// The snapshot's metadata and a handle to its data, reading only the
    /// metadata; `None` if there is no file.
    pub fn open(&self) -> Result<Option<(SnapshotMeta, SnapshotData)>, StorageError> {
        let path = self.path();
        let fail = |source| StorageError::File {
            path: path.clone(),
            what: "read the snapshot",
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let mut head = Vec::new();
        (&file)
            .take(META_READ_LIMIT)
            .read_to_end(&mut head)
            .map_err(fail)?;
        let (meta, used) =
            codec::decode_prefix::<SnapshotMeta>(&head).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                what: "snapshot metadata".into(),
                detail: e.to_string(),
            })?;
        let data = SnapshotData::InFile {
            file,
            at: used as u64,
            path,
        };
        Ok(Some((meta, data)))
    }

    /// Writes a snapshot up to `last_log_id`: `fill` writes the encoded
    /// metadata and data through a buffer into a new file (named after
    /// `kind`, so a build and an install never share one) and returns where
    /// the data starts. The file is synced, then renamed over the snapshot
    /// file and the directory synced, unless the file already holds a newer
    /// snapshot: then the new one is dropped and its data is still read
    /// through the returned handle. Blocking: call off the async workers.
    pub fn write(
        &self,
        last_log_id: Option<LogId>,
        kind: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
    ) -> Result<Written, StorageError> {
        let path = self.path();
        let new = self.dir.join(format!("{SNAPSHOT_FILE}.{kind}"));
        let fail = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::File { path, what, source }
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&new)
            .map_err(fail("create the snapshot", &new))?;
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, &file);
        let at = fill(&mut writer).map_err(fail("write the snapshot", &new))?;
        writer.flush().map_err(fail("write the snapshot", &new))?;
        drop(writer);
        file.sync_all().map_err(fail("sync the snapshot", &new))?;
        let bytes = file
            .metadata()
            .map_err(fail("read the size of the snapshot", &new))?
            .len();
        {
            let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
            if *newest > last_log_id {
                std::fs::remove_file(&new).map_err(fail("remove the older snapshot", &new))?;
            } else {
                std::fs::rename(&new, &path).map_err(fail("rename the snapshot to", &path))?;
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(fail("sync the directory of", &path))?;
                *newest = last_log_id;
            }
        }
        Ok(Written {
            data: SnapshotData::InFile { file, at, path },
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_types::TypeConfig;
    use openraft::testing::log_id;

    fn write(file: &SnapshotFile, index: u64, data: &[u8]) -> Written {
        let meta = SnapshotMeta {
            last_log_id: Some(log_id::<TypeConfig>(1, 0, index)),
            ..Default::default()
        };
        let encoded_meta = codec::encode(&meta).expect("encode");
        file.write(meta.last_log_id, "test", |w| {
            w.write_all(&encoded_meta)?;
            w.write_all(data)?;
            Ok(encoded_meta.len() as u64)
        })
        .expect("write")
    }

    /// What was written is what is read back, through the handle and
    /// through the path, and an older snapshot never replaces a newer one.
    #[test]
    fn the_file_keeps_the_newest_snapshot() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = SnapshotFile::new(dir.path(), None);
        assert!(file.open().expect("open").is_none());
        assert!(file.read().expect("read").is_none());

        let ten = write(&file, 10, b"ten");
        assert_eq!(
            ten.bytes,
            file.read().expect("read").expect("file").len() as u64
        );
        let (meta, data) = file.open().expect("open").expect("a snapshot");
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(10));
        assert_eq!(data.into_bytes().expect("bytes"), b"ten");

        let twenty = write(&file, 20, b"twenty");
        // The handle of the replaced snapshot still reads it.
        assert_eq!(ten.data.into_bytes().expect("bytes"), b"ten");
        let older = write(&file, 15, b"fifteen");
        assert_eq!(older.data.into_bytes().expect("bytes"), b"fifteen");
        let (meta, data) = file.open().expect("open").expect("a snapshot");
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(20));
        assert_eq!(data.into_bytes().expect("bytes"), b"twenty");
        assert_eq!(twenty.data.into_bytes().expect("bytes"), b"twenty");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [SNAPSHOT_FILE], "no temporary file left");
    }

    /// A damaged file is an error naming it and what is wrong.
    #[test]
    fn a_damaged_file_is_named() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = SnapshotFile::new(dir.path(), None);
        std::fs::write(file.path(), b"garbage").expect("write");
        let err = file.open().expect_err("refused");
        assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
        assert!(err.to_string().contains("metadata"), "{err}");
    }
}
