//! The one binary encoding of everything raftpoll stores or sends between
//! peers (Raft log entries, votes, snapshots, peer RPC payloads): bincode 1
//! with its default options. Changing it breaks every stored log and snapshot.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Write;

/// Why a value could not be encoded or decoded. Shown as bincode's message
/// alone: callers already say what they were encoding or decoding.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Encode(#[source] bincode::Error),
    #[error("{0}")]
    Decode(#[source] bincode::Error),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serialize(value).map_err(CodecError::Encode)
}

/// Appends the encoding of `value` to `writer` (no intermediate buffer).
pub fn encode_into<W: Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> Result<(), CodecError> {
    bincode::serialize_into(writer, value).map_err(CodecError::Encode)
}

/// Length in bytes of the encoding of `value`, without encoding it.
pub fn encoded_size<T: Serialize + ?Sized>(value: &T) -> Result<u64, CodecError> {
    bincode::serialized_size(value).map_err(CodecError::Encode)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    bincode::deserialize(bytes).map_err(CodecError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let value = (7u64, "abc".to_string(), Some(vec![1u8, 2]));
        let bytes = encode(&value).expect("encodes");
        assert_eq!(encoded_size(&value).expect("sizes"), bytes.len() as u64);
        let mut appended = vec![9u8];
        encode_into(&mut appended, &value).expect("encodes");
        assert_eq!(appended[1..], bytes[..]);
        let back: (u64, String, Option<Vec<u8>>) = decode(&bytes).expect("decodes");
        assert_eq!(back, value);
    }

    #[test]
    fn truncated_input_is_a_decode_error() {
        let bytes = encode(&"hello".to_string()).expect("encodes");
        let err = decode::<String>(&bytes[..bytes.len() - 1]).expect_err("truncated");
        assert!(matches!(err, CodecError::Decode(_)), "{err:?}");
    }
}
