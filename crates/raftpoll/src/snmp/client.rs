//! The `SnmpClient` trait the poller talks to, its target and its settings.

use super::credentials::SnmpCredentials;
use super::error::SnmpError;
use super::types::{Oid, VarBind};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where to send requests and how to authenticate. `Debug` is safe: the
/// credentials hold their secrets in [`crate::secret::Secret`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnmpTarget {
    pub addr: SocketAddr,
    pub credentials: SnmpCredentials,
}

impl SnmpTarget {
    pub fn new(addr: SocketAddr, credentials: SnmpCredentials) -> Self {
        SnmpTarget { addr, credentials }
    }
}

/// An SNMP manager able to serve many targets concurrently.
pub trait SnmpClient: Send + Sync + 'static {
    /// GET of `oids`, answered in the same order. Objects the agent does
    /// not have come back as `NoSuchObject`/`NoSuchInstance` (also for v1,
    /// whose `noSuchName` error is turned into per-varbind exceptions).
    fn get(
        &self,
        target: &SnmpTarget,
        oids: &[Oid],
    ) -> impl Future<Output = Result<Vec<VarBind>, SnmpError>> + Send;

    /// Every varbind under `root`, in OID order. GETBULK for v2c/v3, GETNEXT
    /// for v1. An absent subtree gives an empty list.
    fn walk(
        &self,
        target: &SnmpTarget,
        root: &Oid,
    ) -> impl Future<Output = Result<Vec<VarBind>, SnmpError>> + Send;

    /// [`SnmpClient::walk`] of each of `roots` (table columns), answered in
    /// the same order. An engine may walk them side by side in shared
    /// requests; [`walk_each`] walks them one by one. Errors as for `walk`:
    /// one failing column fails the whole call. No default: a wrapper of a
    /// client that inherited one would silently lose the shared requests.
    fn walk_many(
        &self,
        target: &SnmpTarget,
        roots: &[Oid],
    ) -> impl Future<Output = Result<Vec<Vec<VarBind>>, SnmpError>> + Send;
}

/// [`SnmpClient::walk`] of each of `roots`, concurrently (the client caps
/// per-device concurrency): [`SnmpClient::walk_many`] without shared requests.
pub async fn walk_each<C: SnmpClient + ?Sized>(
    client: &C,
    target: &SnmpTarget,
    roots: &[Oid],
) -> Result<Vec<Vec<VarBind>>, SnmpError> {
    futures::future::try_join_all(roots.iter().map(|root| client.walk(target, root))).await
}

/// Settings of the node's SNMP engine (`[poller]` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnmpClientConfig {
    /// Local address requests leave from (`poller.source_ip`); any address when `None`.
    pub source_ip: Option<IpAddr>,
    /// Wait for one answer before resending.
    pub timeout: Duration,
    /// Resends after the first try.
    pub retries: u32,
    /// Requests in flight on the whole node.
    pub max_in_flight: usize,
    /// Requests in flight to one device.
    pub per_device_in_flight: usize,
}

impl Default for SnmpClientConfig {
    fn default() -> Self {
        SnmpClientConfig {
            source_ip: None,
            timeout: Duration::from_millis(1000),
            retries: 2,
            max_in_flight: 1024,
            per_device_in_flight: 4,
        }
    }
}
