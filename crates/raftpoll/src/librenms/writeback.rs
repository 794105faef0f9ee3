//! Write-back: after every poll, the node that polled hands its result here;
//! the latest result per device waits in a bounded buffer and is written to
//! LibreNMS's tables in batches, one transaction per batch. Fenced like
//! polls: a device this node no longer owns is never written.

use super::Librenms;
use crate::model::types::SystemInfo;
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a device is down, as LibreNMS's `devices.status_reason` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownCause {
    /// No answer to ICMP echo.
    Icmp,
    /// Answers ping, not SNMP.
    Snmp,
}

impl DownCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DownCause::Icmp => "icmp",
            DownCause::Snmp => "snmp",
        }
    }
}

/// What one poll of one device found, for the write-back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolledDevice {
    pub hostname: String,
    /// Unix seconds the poll started.
    pub polled_at: u64,
    pub duration_ms: u64,
    /// `None`: up.
    pub down: Option<DownCause>,
    /// ICMP round trip and how long the check took, when ICMP is on.
    pub ping_rtt_ms: Option<f64>,
    pub ping_took_ms: Option<f64>,
    pub system: Option<SystemInfo>,
    /// sysUpTime in seconds.
    pub uptime_s: Option<u64>,
    /// Every port polled, for its `ports` row.
    pub ports: Vec<super::ports::PortSample>,
}

/// Latest results per device, waiting for the database.
#[derive(Default)]
pub struct Pending {
    by_host: Mutex<HashMap<String, PolledDevice>>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PolledDevice>> {
        self.by_host.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Librenms {
    /// Hands over one poll's result; a newer result of the same device
    /// replaces an older one still waiting.
    pub fn poll_done(&self, polled: PolledDevice) {
        let mut pending = self.pending().lock();
        match pending.get(&polled.hostname) {
            Some(old) if old.polled_at > polled.polled_at => {}
            _ => {
                pending.insert(polled.hostname.clone(), polled);
            }
        }
    }
}
