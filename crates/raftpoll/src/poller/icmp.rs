//! ICMP availability, as LibreNMS checks it before polling: a few echo
//! requests, the device is reachable if one is answered. Unprivileged ICMP
//! (datagram) sockets where the kernel allows them, raw sockets otherwise
//! (surge-ping picks). One client per address family serves every check.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use surge_ping::{Client, Config, ICMP, PingIdentifier, PingSequence};

/// Echo payload: small, like fping's default.
const PAYLOAD: [u8; 24] = [0; 24];

/// Outcome of one availability check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PingResult {
    /// Round-trip time of the fastest answer; `None` when nothing answered.
    pub rtt: Option<Duration>,
    /// How long the whole check took (LibreNMS's `last_ping_timetaken`).
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open an ICMP socket ({family}): {source}; allow unprivileged ICMP (sysctl net.ipv4.ping_group_range) or give the node CAP_NET_RAW"
)]
pub struct IcmpError {
    family: &'static str,
    source: std::io::Error,
}

/// Sends echo requests; cheap to share.
pub struct Pinger {
    v4: Client,
    v6: Option<Client>,
    count: u32,
    timeout: Duration,
    /// Each check gets its own identifier, so concurrent checks of one
    /// address never take each other's replies.
    next_id: AtomicU16,
}

impl Pinger {
    /// `count` requests per check, each waiting `timeout` for its reply. An
    /// IPv6 socket that cannot be opened (no IPv6 on the host) only fails the
    /// checks of IPv6 devices.
    pub fn new(count: u32, timeout: Duration) -> Result<Pinger, IcmpError> {
        let v4 = Client::new(&Config::default()).map_err(|source| IcmpError {
            family: "IPv4",
            source,
        })?;
        let v6 = Client::new(&Config::builder().kind(ICMP::V6).build()).ok();
        Ok(Pinger {
            v4,
            v6,
            count: count.max(1),
            timeout,
            next_id: AtomicU16::new(std::process::id() as u16),
        })
    }

    /// Pings `ip` until one reply comes back or `count` requests went
    /// unanswered.
    pub async fn check(&self, ip: IpAddr) -> PingResult {
        let started = std::time::Instant::now();
        let client = match ip {
            IpAddr::V4(_) => Some(&self.v4),
            IpAddr::V6(_) => self.v6.as_ref(),
        };
        let Some(client) = client else {
            return PingResult {
                rtt: None,
                took: started.elapsed(),
            };
        };
        let id = PingIdentifier(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut pinger = client.pinger(ip, id).await;
        pinger.timeout(self.timeout);
        let mut rtt = None;
        for seq in 0..self.count {
            if let Ok((_, took)) = pinger.ping(PingSequence(seq as u16), &PAYLOAD).await {
                rtt = Some(took);
                break;
            }
        }
        PingResult {
            rtt,
            took: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback always answers (the end-to-end tests check unanswered pings
    /// in a network namespace of their own).
    #[tokio::test]
    async fn loopback_answers() {
        let pinger = match Pinger::new(2, Duration::from_millis(500)) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let r = pinger.check(IpAddr::from([127, 0, 0, 1])).await;
        assert!(r.rtt.is_some(), "{r:?}");
        assert!(r.took >= r.rtt.unwrap_or_default());
    }
}
