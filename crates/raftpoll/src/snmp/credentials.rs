//! SNMP credentials (v1/v2c community, v3 USM user and protocols), owned by
//! the SNMP layer and stored as they are in the replicated device records.
//!
//! These types are inside encoded Raft log entries and snapshots (see
//! [`crate::codec`]): never reorder, rename or remove fields or variants; new
//! variants go last; a new field is a new format version.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthProtocol {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivProtocol {
    Des,
    Aes128,
    Aes256,
}

/// SNMPv3 USM user. `auth` without `privacy` is authNoPriv; both is authPriv.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsmCredentials {
    pub user: String,
    pub auth: Option<(AuthProtocol, Secret)>,
    pub privacy: Option<(PrivProtocol, Secret)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnmpCredentials {
    V1 {
        community: Secret,
    },
    V2c {
        community: Secret,
    },
    /// Boxed: a USM user is three times a community's size, and every device
    /// of the replicated state holds one of these (6 MB on every node at
    /// 100,000 devices). A box encodes as what it holds.
    V3(Box<UsmCredentials>),
}

impl SnmpCredentials {
    /// `v1`, `v2c` or `v3`, as shown to operators.
    pub fn version_name(&self) -> &'static str {
        match self {
            SnmpCredentials::V1 { .. } => "v1",
            SnmpCredentials::V2c { .. } => "v2c",
            SnmpCredentials::V3(_) => "v3",
        }
    }
}
