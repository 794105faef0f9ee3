//! gRPC services: `Admin` for operators, `Peer` for node-to-node proposals,
//! and the conversions between protobuf and our types (kept at this edge).

pub mod admin;
pub mod peer;
