//! The versioned binary encoding of everything raftpoll stores or sends
//! between peers (Raft log entries, votes, snapshots, peer RPC payloads).
//!
//! Format versions:
//! - **1**: bincode 1 with its default options, no header (raftpoll up to the
//!   first release with versioned formats). Read forever; written only to a
//!   peer that has not said it reads version 2 (an older node during a
//!   rolling upgrade).
//! - **2**: an 8-byte [`header`](HEADER_LEN) naming the version, then postcard
//!   (serde, varint integers). Written only to a peer that reads no newer one.
//! - **3**: encoded as 2; the replicated [`Port`](crate::model::types::Port)
//!   holds a match key instead of its ifName and ifDescr, so a state snapshot
//!   of version 2 or older decodes through [`crate::model::legacy`]. Written by
//!   default. Every other type is the same as in version 2.
//!
//! Rule: any change to an encoded type (a new field, a reordered variant) or
//! to the encoding bumps [`FORMAT_VERSION`], keeps decoding every earlier
//! version (a branch in [`decode`]), and adds a fixture
//! (`examples/write_format_fixtures.rs` → `tests/fixtures/v<N>/`). New
//! `Command` variants go last and need a feature level (see
//! [`crate::model::types::Command::feature_level`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format this version writes.
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format this version reads (and can still write to older peers).
pub const OLDEST_FORMAT_VERSION: u16 = 1;

/// `[0xFF 'R' 'P' 'F'] [version u16 LE] [0x00] [0xFF]`.
///
/// Chosen so no version-1 value can start with it: a bincode enum tag or
/// `Option` tag never has 0xFF in its first byte together with 'R' in the
/// second, and a value starting with a u64 (a term, a map length) would need
/// it to be at least 2^56 for the last byte to be 0xFF.
pub const HEADER_LEN: usize = 8;
const MAGIC: [u8; 4] = [0xFF, b'R', b'P', b'F'];

/// Why a value could not be encoded or decoded. Callers add what they were
/// encoding or decoding (which entry, which file).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("undecodable (format version {version}): {detail}")]
    Decode { version: u16, detail: String },
    /// Written by a newer raftpoll: upgrade this node.
    #[error(
        "format version {version} is newer than this raftpoll reads (versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}): upgrade this node"
    )]
    UnsupportedVersion { version: u16 },
}

fn header(version: u16) -> [u8; HEADER_LEN] {
    let v = version.to_le_bytes();
    [
        MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], 0x00, 0xFF,
    ]
}

/// A header naming `version` and nothing after it: a marker that a version
/// reading only older formats refuses as written by a newer raftpoll.
pub fn header_only(version: u16) -> Vec<u8> {
    header(version).to_vec()
}

/// The format version of `bytes` (1 for headerless bytes).
pub fn version_of(bytes: &[u8]) -> u16 {
    match bytes {
        [m0, m1, m2, m3, lo, hi, 0x00, 0xFF, ..] if [*m0, *m1, *m2, *m3] == MAGIC => {
            u16::from_le_bytes([*lo, *hi])
        }
        _ => 1,
    }
}

/// Encodes `value` in the current format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_version(value, FORMAT_VERSION)
}

/// Encodes `value` in format `version` (for a peer that reads only older ones).
pub fn encode_version<T: Serialize + ?Sized>(
    value: &T,
    version: u16,
) -> Result<Vec<u8>, CodecError> {
    match version {
        1 => bincode::serialize(value).map_err(|e| CodecError::Encode(e.to_string())),
        2 | 3 => {
            let out = header(version).to_vec();
            postcard::to_extend(value, out).map_err(|e| CodecError::Encode(e.to_string()))
        }
        version => Err(CodecError::UnsupportedVersion { version }),
    }
}

/// Length of [`encode`]'s output, without encoding.
pub fn encoded_size<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        value,
        postcard::ser_flavors::Size::default(),
    )
    .map(|n| n + HEADER_LEN)
    .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends [`encode`]'s output to `buf` (no intermediate buffer).
pub fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    buf.extend_from_slice(&header(FORMAT_VERSION));
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(value, taken).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(())
}

/// Writes [`encode`]'s output to `writer` as it goes, never holding the
/// whole encoding (a state snapshot at 100,000 devices is tens of MiB).
/// An error of the writer comes back as it was.
pub fn encode_to_writer<T: Serialize + ?Sized>(
    writer: &mut dyn std::io::Write,
    value: &T,
) -> std::io::Result<()> {
    /// Keeps the writer's error, which postcard replaces with its own.
    struct KeepError<'a> {
        inner: &'a mut dyn std::io::Write,
        error: Option<std::io::Error>,
    }
    impl KeepError<'_> {
        fn keep<R>(&mut self, result: std::io::Result<R>) -> std::io::Result<R> {
            result.map_err(|e| {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    return e; // retried by `write_all`
                }
                let kind = e.kind();
                self.error = Some(e);
                kind.into()
            })
        }
    }
    impl std::io::Write for KeepError<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let result = self.inner.write(buf);
            self.keep(result)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            let result = self.inner.flush();
            self.keep(result)
        }
    }
    writer.write_all(&header(FORMAT_VERSION))?;
    let mut keep = KeepError {
        inner: writer,
        error: None,
    };
    match postcard::to_io(value, &mut keep) {
        Ok(_) => Ok(()),
        Err(e) => Err(keep
            .error
            .take()
            .unwrap_or_else(|| std::io::Error::other(CodecError::Encode(e.to_string())))),
    }
}

/// Decodes a current-format value at the start of `bytes` and returns it with
/// the length it took (for a value followed by others). Only for formats with
/// a header (version 2 on); version 1 values are not self-delimiting here.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    match version_of(bytes) {
        version @ (2 | 3) => {
            let body = &bytes[HEADER_LEN..];
            let (value, rest) =
                postcard::take_from_bytes(body).map_err(|e| CodecError::Decode {
                    version,
                    detail: e.to_string(),
                })?;
            Ok((value, bytes.len() - rest.len()))
        }
        1 => Err(CodecError::Decode {
            version: 1,
            detail: "not a framed value".into(),
        }),
        version => Err(CodecError::UnsupportedVersion { version }),
    }
}

/// Decodes the first field(s) of an encoded value as `T`, ignoring the rest
/// (e.g. the log id of a log entry whose payload may be of a newer kind).
pub fn decode_leading<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match version_of(bytes) {
        // bincode's `deserialize` accepts trailing bytes.
        1 => decode(bytes),
        version @ (2 | 3) => postcard::take_from_bytes(&bytes[HEADER_LEN..])
            .map(|(value, _)| value)
            .map_err(|e| CodecError::Decode {
                version,
                detail: e.to_string(),
            }),
        version => Err(CodecError::UnsupportedVersion { version }),
    }
}

/// Decodes a value of the current format straight from `reader`, without
/// reading its encoding whole: each string passes through a buffer of
/// `scratch` bytes, so none may be longer. `Ok(None)`: `reader` holds another
/// format version (read its bytes and [`decode`] them).
pub fn decode_current_from<T: DeserializeOwned>(
    mut reader: impl std::io::Read,
    scratch: usize,
) -> Result<Option<T>, CodecError> {
    let fail = |detail: String| CodecError::Decode {
        version: FORMAT_VERSION,
        detail,
    };
    let mut head = [0u8; HEADER_LEN];
    reader
        .read_exact(&mut head)
        .map_err(|e| fail(e.to_string()))?;
    if version_of(&head) != FORMAT_VERSION {
        return Ok(None);
    }
    let mut buffer = vec![0u8; scratch];
    postcard::from_io((reader, &mut buffer[..]))
        .map(|(value, _)| Some(value))
        .map_err(|e| fail(e.to_string()))
}

/// Decodes bytes of any format version this node reads.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match version_of(bytes) {
        1 => bincode::deserialize(bytes).map_err(|e| CodecError::Decode {
            version: 1,
            detail: e.to_string(),
        }),
        version @ (2 | 3) => {
            postcard::from_bytes(&bytes[HEADER_LEN..]).map_err(|e| CodecError::Decode {
                version,
                detail: e.to_string(),
            })
        }
        version => Err(CodecError::UnsupportedVersion { version }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_format_decodes_from_a_reader_through_a_small_buffer() {
        let value = (7u64, vec!["a".repeat(100), "b".repeat(100)], Some(3u32));
        let bytes = encode(&value).expect("encodes");
        // Two strings of 100 bytes through a 100-byte buffer: one at a time.
        let back: Option<(u64, Vec<String>, Option<u32>)> =
            decode_current_from(&bytes[..], 100).expect("decodes");
        assert_eq!(back, Some(value.clone()));
        let err = decode_current_from::<(u64, Vec<String>, Option<u32>)>(&bytes[..], 99)
            .expect_err("a string longer than the buffer");
        assert!(err.to_string().contains("format version 3"), "{err}");
        let older = encode_version(&value, 2).expect("encodes");
        assert!(
            decode_current_from::<(u64, Vec<String>, Option<u32>)>(&older[..], 100)
                .expect("an older header is not an error")
                .is_none()
        );
        let cut = decode_current_from::<(u64, Vec<String>, Option<u32>)>(&bytes[..50], 100);
        assert!(cut.is_err(), "a cut encoding is an error");
    }

    #[test]
    fn round_trip_in_every_version() {
        let value = (7u64, "abc".to_string(), Some(vec![1u8, 2]));
        for version in OLDEST_FORMAT_VERSION..=FORMAT_VERSION {
            let bytes = encode_version(&value, version).expect("encodes");
            assert_eq!(version_of(&bytes), version);
            let back: (u64, String, Option<Vec<u8>>) = decode(&bytes).expect("decodes");
            assert_eq!(back, value);
        }
        let current = encode(&value).expect("encodes");
        assert_eq!(version_of(&current), FORMAT_VERSION);
        assert_eq!(encoded_size(&value).expect("sizes"), current.len());
        let mut appended = encode(&1u8).expect("encodes");
        let first = appended.len();
        encode_into(&mut appended, &value).expect("encodes");
        assert_eq!(appended[first..], current[..]);
        let (one, used): (u8, usize) = decode_prefix(&appended).expect("prefix");
        assert_eq!((one, used), (1, first));
    }

    /// Encoding to a writer gives [`encode`]'s bytes; a failing writer's
    /// error comes back, not the encoder's.
    #[test]
    fn encoding_to_a_writer_matches_and_keeps_the_writers_error() {
        let value = (7u64, "abc".to_string(), vec![9u32; 100]);
        let mut written = Vec::new();
        encode_to_writer(&mut written, &value).expect("encodes");
        assert_eq!(written, encode(&value).expect("encodes"));

        struct Full(usize);
        impl std::io::Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 < buf.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        "disk full",
                    ));
                }
                self.0 -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = encode_to_writer(&mut Full(20), &value).expect_err("full");
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    #[test]
    fn truncated_input_is_a_decode_error() {
        for version in OLDEST_FORMAT_VERSION..=FORMAT_VERSION {
            let bytes = encode_version(&"hello".to_string(), version).expect("encodes");
            let err = decode::<String>(&bytes[..bytes.len() - 1]).expect_err("truncated");
            assert!(
                matches!(err, CodecError::Decode { version: v, .. } if v == version),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_newer_version_is_named() {
        let mut bytes = header(9).to_vec();
        bytes.extend_from_slice(b"whatever");
        let err = decode::<String>(&bytes).expect_err("future version");
        assert!(matches!(err, CodecError::UnsupportedVersion { version: 9 }));
        assert!(err.to_string().contains("format version 9"), "{err}");
    }

    #[test]
    fn version_one_values_are_never_taken_for_a_header() {
        // The leading shapes of v1 values: a u64 (term, map length), an enum
        // tag (u32), an Option tag.
        let samples: Vec<Vec<u8>> = vec![
            bincode::serialize(&u64::from(u32::MAX)).expect("u64"),
            bincode::serialize(&(0x4650_52FFu64, 1u8)).expect("u64 like the magic"),
            bincode::serialize(&Some(5u64)).expect("option"),
            bincode::serialize(&Option::<u64>::None).expect("option"),
        ];
        for s in samples {
            assert_eq!(version_of(&s), 1, "{s:?}");
        }
    }
}
