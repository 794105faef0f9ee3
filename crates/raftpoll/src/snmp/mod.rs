//! SNMP: our `SnmpClient` trait, value types and the async-snmp implementation.
//!
//! - [`types`]: `Oid`, `SnmpValue`, `VarBind`, independent of async-snmp.
//! - [`client`]: the `SnmpClient` trait, `SnmpTarget`, `SnmpClientConfig`.
//! - [`error`]: `SnmpError`, readable and free of secrets.
//! - [`engine`]: `AsyncSnmpClient`, one shared UDP socket for the whole node.
//! - [`fake`]: an in-memory agent for tests of code above the SNMP layer.

pub mod client;
pub mod engine;
pub mod error;
pub mod fake;
pub mod types;

pub use client::{SnmpClient, SnmpClientConfig, SnmpTarget};
pub use engine::AsyncSnmpClient;
pub use error::SnmpError;
pub use fake::FakeSnmpClient;
pub use types::{Oid, SnmpValue, VarBind};
