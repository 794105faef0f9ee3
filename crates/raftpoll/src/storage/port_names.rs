//! The names (ifName, ifDescr) of the ports this node discovered, kept on this
//! node only: the replicated state holds just a key per port (see
//! [`crate::model::types::Port`]), and `device show` asks the owner for names.

use super::StorageError;
use super::kv::{Kv, PORT_NAMES, Tree};
use crate::model::types::DiscoveredPort;

/// Per device, the interfaces of this node's last discovery of it. Cheap to clone.
#[derive(Clone)]
pub struct PortNames {
    tree: Tree,
}

impl PortNames {
    pub(super) fn open(kv: &Kv) -> Result<PortNames, StorageError> {
        Ok(PortNames {
            tree: kv.tree(PORT_NAMES)?,
        })
    }

    /// Replaces what is kept for `hostname`. Not flushed: after a crash the
    /// next discovery writes them again.
    pub fn set(&self, hostname: &str, ports: &[DiscoveredPort]) -> Result<(), StorageError> {
        self.tree.set(hostname.as_bytes(), &ports)
    }

    /// The interfaces of this node's last discovery of `hostname`, if any.
    pub fn get(&self, hostname: &str) -> Result<Option<Vec<DiscoveredPort>>, StorageError> {
        self.tree.get(hostname.as_bytes(), "port names")
    }

    /// Drops what is kept for `hostname` (removed from the cluster).
    pub fn forget(&self, hostname: &str) -> Result<(), StorageError> {
        self.tree.remove(hostname.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_per_device_and_replaced() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let kv = Kv::open_blocking(dir.path()).expect("open");
        let names = PortNames::open(&kv).expect("tree");
        let port = |ifindex: u32, name: &str| DiscoveredPort {
            ifindex,
            ifname: name.into(),
            ifdescr: format!("{name} descr"),
        };
        assert_eq!(names.get("sw1").expect("read"), None);
        names
            .set("sw1", &[port(1, "lo"), port(2, "eth0")])
            .expect("write");
        names.set("sw2", &[port(7, "ge-0/0/0")]).expect("write");
        names.set("sw1", &[port(2, "eth0")]).expect("write");
        assert_eq!(names.get("sw1").expect("read"), Some(vec![port(2, "eth0")]));
        assert_eq!(
            names.get("sw2").expect("read"),
            Some(vec![port(7, "ge-0/0/0")])
        );
    }

    #[test]
    fn names_of_removed_devices_are_forgotten() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let kv = Kv::open_blocking(dir.path()).expect("open");
        let names = PortNames::open(&kv).expect("tree");
        let port = DiscoveredPort {
            ifindex: 1,
            ifname: "eth0".into(),
            ifdescr: "eth0".into(),
        };
        for host in ["sw1", "sw2"] {
            names.set(host, std::slice::from_ref(&port)).expect("write");
        }
        names.forget("sw2").expect("forget");
        names
            .forget("never-known")
            .expect("forget an unknown device");
        assert_eq!(names.get("sw2").expect("read"), None);
        assert_eq!(names.get("sw1").expect("read"), Some(vec![port]));
    }
}
