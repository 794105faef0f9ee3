//! LibreNMS drop-in: the cluster takes its inventory from LibreNMS's database
//! and writes what it polls back to it, so LibreNMS's UI sees raftpoll's work
//! without its dispatcher service or Redis.
//!
//! - [`db`]: the connection pool, the privilege check, the queries.
//! - [`inventory`]: `devices` rows → raftpoll devices, and the log entries that
//!   keep the replicated inventory equal to LibreNMS's.
//! - [`ports`]: LibreNMS port ids at discovery, and the `ports` rows after polls.
//! - [`writeback`]: poll results into `devices`, `ports`, `device_graphs` and
//!   `device_outages`, batched and fenced.
//!
//! Everything here is node-local: what must be the same on every node goes
//! through the Raft log as ordinary entries.

pub mod db;
pub mod inventory;
pub mod pollers;
pub mod ports;
pub mod writeback;

use crate::config::LibrenmsConfig;
use crate::poller::scheduler::unix_now;
use db::Db;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Errors of the LibreNMS link. None carries a password.
#[derive(Debug, thiserror::Error)]
pub enum LibrenmsError {
    #[error("invalid librenms.database: {0}")]
    Url(String),
    #[error("cannot read librenms.password_file {path}: {message}")]
    PasswordFile { path: String, message: String },
    #[error("LibreNMS database {db}: {what}: {message}")]
    Query {
        db: String,
        what: &'static str,
        message: String,
    },
    #[error(
        "LibreNMS database {db}: user {user} lacks the {privilege} privilege on table `{table}` \
         (GRANT {privilege} ON {schema}.{table} TO {user}, or GRANT ALL ON {schema}.* as LibreNMS's \
         install guide does)"
    )]
    Privilege {
        db: String,
        user: String,
        schema: String,
        privilege: &'static str,
        table: &'static str,
    },
}

/// How LibreNMS matches a device's interfaces to its `ports` rows
/// (`devices.port_association_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAssociation {
    IfIndex,
    IfName,
    IfDescr,
    IfAlias,
}

impl PortAssociation {
    /// LibreNMS's numbers (1 ifIndex, 2 ifName, 3 ifDescr, 4 ifAlias); any
    /// other value is LibreNMS's default, ifIndex.
    pub fn from_mode(mode: u32) -> Self {
        match mode {
            2 => PortAssociation::IfName,
            3 => PortAssociation::IfDescr,
            4 => PortAssociation::IfAlias,
            _ => PortAssociation::IfIndex,
        }
    }
}

/// A raftpoll device's row in LibreNMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLink {
    pub device_id: u32,
    pub port_association: PortAssociation,
}

/// A `devices` row raftpoll does not poll, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub device_id: u32,
    pub hostname: String,
    pub reason: String,
}

/// The link as `status` shows it.
#[derive(Clone, Debug, Default)]
pub struct LinkStatus {
    /// The last query succeeded.
    pub connected: bool,
    pub last_error: Option<String>,
    /// Unix seconds of the last successful read of `devices`.
    pub last_sync: Option<u64>,
    /// Devices of the last read that raftpoll polls.
    pub devices: usize,
    pub skipped: Vec<Skipped>,
    /// Rows written back since start.
    pub rows_written: u64,
    /// Devices whose latest result waits to be written back.
    pub backlog: usize,
}

/// This node's link to LibreNMS. Cheap to clone.
#[derive(Clone)]
pub struct Librenms {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    links: RwLock<HashMap<String, DeviceLink>>,
    status: Mutex<LinkStatus>,
    pending: writeback::Pending,
}

impl Librenms {
    /// Sets the link up without connecting yet: the database may be down when
    /// the node starts, and polling must not wait for it.
    pub fn new(config: &LibrenmsConfig) -> Result<Librenms, LibrenmsError> {
        Ok(Librenms {
            inner: Arc::new(Inner {
                db: Db::connect_lazy(config)?,
                links: RwLock::default(),
                status: Mutex::default(),
                pending: writeback::Pending::default(),
            }),
        })
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The LibreNMS row of a raftpoll device, as of the last read.
    pub fn link(&self, hostname: &str) -> Option<DeviceLink> {
        self.inner
            .links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hostname)
            .copied()
    }

    pub fn status(&self) -> LinkStatus {
        let mut status = self.status_lock().clone();
        status.backlog = self.inner.pending.len();
        status
    }

    fn pending(&self) -> &writeback::Pending {
        &self.inner.pending
    }

    /// Records a successful read of `devices`.
    pub fn set_inventory(&self, links: HashMap<String, DeviceLink>, skipped: Vec<Skipped>) {
        let devices = links.len();
        *self.inner.links.write().unwrap_or_else(|e| e.into_inner()) = links;
        let mut status = self.status_lock();
        status.connected = true;
        status.last_error = None;
        status.last_sync = Some(unix_now());
        status.devices = devices;
        status.skipped = skipped;
    }

    /// Records a failed query (the link stays as it was otherwise).
    pub fn set_error(&self, error: String) {
        let mut status = self.status_lock();
        status.connected = false;
        status.last_error = Some(error);
    }

    /// Records rows written back, and what still waits.
    pub fn set_written(&self, rows: u64, backlog: usize) {
        let mut status = self.status_lock();
        status.connected = true;
        status.last_error = None;
        status.rows_written += rows;
        status.backlog = backlog;
    }

    fn status_lock(&self) -> std::sync::MutexGuard<'_, LinkStatus> {
        self.inner.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}
