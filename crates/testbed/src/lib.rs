//! The local test bed: real daemons (snmpd, snmpsimd, rrdcached, raftpoll-sim, raftpoll nodes) on
//! loopback, for the integration tests, the benchmarks and the chaos runner alike. It talks to
//! raftpoll only as a user does (processes, config files, the CLI), so it does not depend on the
//! product crate.
//!
//! Every daemon runs in its own temp dir on a free port, is ready when a real request succeeds
//! (polled with a deadline, never a fixed sleep) and is killed on drop. When a test panics, the
//! daemons' logs are printed. Set `RAFTPOLL_KEEP_TESTBED=1` to keep the temp dirs for a post-mortem.
//!
//! Everything here is blocking (std::process): use it from plain `#[test]` functions or from a
//! tool's own thread. Failures to set up the bed panic with a message naming what failed: this
//! crate is for tests and test tools only.

pub mod capture;
pub mod cluster;
pub mod fuzz;
pub mod librenms;
pub mod mariadb;
pub mod netns;
pub mod process;
pub mod raftpoll;
pub mod rrdcached;
pub mod sim;
pub mod snmp;
pub mod snmpd;
pub mod snmpsim;
pub mod tls;

pub use librenms::{DeviceSpec, LibrenmsLink, insert_device};
pub use mariadb::MariaDb;
pub use netns::SilentHost;
pub use process::{free_tcp_port, free_udp_port, wait_until, wait_until_every, workspace_bin};
pub use raftpoll::{NodeConfig, RaftpollNode, TEST_SECRET};
pub use rrdcached::Rrdcached;
pub use sim::{SimAgent, SimBuilder};
pub use snmp::{SnmpCreds, snmpget, snmpget_u64, snmpwalk};
pub use snmpd::Snmpd;
pub use snmpsim::{SimDevice, Snmpsim};
pub use tls::{CertFiles, TestCa, TlsFiles};
