//! raftpoll: a clustered SNMP poller. Poller nodes form a Raft group; the leader
//! assigns devices to nodes by poller group; every node polls its devices over
//! SNMP and streams LibreNMS-compatible RRD updates to rrdcached.
//!
//! Module map:
//! - [`config`]: the node's TOML config, defaults and validation.
//! - [`model`]: the replicated data model and its pure state machine.
//! - [`cluster`]: Raft wiring and network, membership, the leader's controller, assignment.
//! - [`codec`]: the one binary encoding of stored and replicated data.
//! - [`raft_types`]: openraft's type config and aliases (shared by `cluster` and `storage`).
//! - [`storage`]: sled-backed Raft log and state machine storage.
//! - [`snmp`]: the `SnmpClient` trait and its async-snmp implementation.
//! - [`poller`]: scheduler and the SNMP modules (system, ports, processors, storage).
//! - [`rrd`]: RRD layout, rrdcached client and writer.
//! - [`grpc`]: client-side gRPC endpoints, the dialer (plaintext or TLS) and the channel cache.
//! - [`tls`]: certificates, TLS accept and dial, reload on SIGHUP.
//! - [`api`]: gRPC services (Admin for operators) and protobuf conversions.
//! - [`librenms`]: the LibreNMS drop-in: inventory from its database, write-back.
//! - [`client`]: the operator CLI's client side.
//! - [`metrics`]: Prometheus metrics and their `/metrics` HTTP server.
//! - [`runtime`]: the named runtimes Raft and the LibreNMS link run on.
//! - [`node`]: starts and stops a node: every task, in order.

pub mod api;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod grpc;
pub mod librenms;
pub mod metrics;
pub mod model;
pub mod node;
pub mod poller;
pub mod raft_types;
pub mod rrd;
pub mod runtime;
pub mod secret;
pub mod snmp;
pub mod storage;
pub mod tls;

/// Protobuf types generated from `proto/`.
pub mod proto {
    tonic::include_proto!("raftpoll.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("raftpoll_descriptor");
}
