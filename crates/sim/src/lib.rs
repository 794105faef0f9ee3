//! `raftpoll-sim`: a fast SNMP v1/v2c responder that serves many simulated devices from
//! snmpsim `.snmprec` recordings, for load tests (see `docs/raftpoll-sim.md`).
//!
//! - [`ber`]: the minimal BER codec for the SNMP message subset.
//! - [`snmprec`]: recording loader (static values pre-encoded, `numeric` counters moving).
//! - [`agent`]: devices keyed by (port, community) and the per-datagram request handler.
//! - [`server`]: UDP sockets, the receive/answer loop, the request record file.
//! - [`misbehave`]: devices that answer late, wrongly or not at all (fault tests).

pub mod agent;
pub mod ber;
pub mod misbehave;
pub mod server;
pub mod snmprec;

pub use agent::{Agent, DEFAULT_MAX_SIZE, Device, Handler, Outcome};
pub use misbehave::{Action, Misbehave};
pub use server::{Recorder, Stats, bind_udp, serve};
pub use snmprec::{LoadOptions, Recording};

/// Errors of the simulator (setup only: the request path drops bad packets silently).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read recording {path}: {source}")]
    Recording {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open record file {path}: {source}")]
    RecordFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
