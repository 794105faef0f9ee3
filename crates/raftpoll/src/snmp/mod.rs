//! SNMP: our `SnmpClient` trait, value types and the async-snmp implementation.
//!
//! - [`types`]: `Oid`, `SnmpValue`, `VarBind`, independent of async-snmp.
//! - [`credentials`]: `SnmpCredentials` and the v3 protocols, as devices store them.
//! - [`client`]: the `SnmpClient` trait, `SnmpTarget`, `SnmpClientConfig`.
//! - [`error`]: `SnmpError`, readable and free of secrets.
//! - [`engine`]: `AsyncSnmpClient`, one shared UDP socket for the whole node.
//! - `fake` (unit tests only): an in-memory agent for tests of code above the SNMP layer.

pub mod client;
pub mod credentials;
pub mod engine;
pub mod error;
#[cfg(test)]
pub mod fake;
pub mod types;

pub use client::{SnmpClient, SnmpClientConfig, SnmpTarget};
pub use engine::AsyncSnmpClient;
pub use error::SnmpError;
#[cfg(test)]
pub use fake::FakeSnmpClient;
pub use types::{Oid, SnmpValue, VarBind};
