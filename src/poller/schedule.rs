//! Pure schedule arithmetic: when a device is due, given its history.

use crate::cluster::types::DeviceStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Seconds between polls of an up device.
    pub frequency: u64,
    /// Seconds between tries of a down device.
    pub down_retry: u64,
}

/// A device's fixed phase within the interval, so that start times spread
/// evenly over the interval instead of bunching (no thundering herd) and
/// stay put across restarts and owner changes.
pub fn phase(hostname: &str, frequency: u64) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = hostname.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % frequency.max(1)
}

/// When a device this node just took over (or found at start) is due, in unix
/// seconds. It continues the replicated schedule: a device polled in the
/// current interval waits for the next one; an overdue or new one is due now.
pub fn first_due(now: u64, last_polled: Option<u64>, status: DeviceStatus, t: Timing) -> u64 {
    match last_polled {
        None => now,
        Some(last) => {
            let gap = if status == DeviceStatus::Down {
                t.down_retry
            } else {
                t.frequency
            };
            now.max(last.saturating_add(gap))
        }
    }
}

/// When the next poll is due after a poll that started at `started`.
/// An up device moves to its own phase slot at least one interval later, so
/// the gap is never shorter than `frequency` (no double poll in an interval),
/// always shorter than `2 × frequency` (the RRD heartbeat: no gap in the
/// graphs) and, once aligned, exactly `frequency`.
pub fn next_due(hostname: &str, started: u64, status: DeviceStatus, t: Timing) -> u64 {
    if status == DeviceStatus::Down {
        return started + t.down_retry;
    }
    let f = t.frequency.max(1);
    let earliest = started + f;
    let slot = phase(hostname, f);
    let base = earliest - earliest % f + slot;
    if base >= earliest { base } else { base + f }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        frequency: 300,
        down_retry: 60,
    };

    #[test]
    fn takeover_continues_schedule() {
        // Polled 100 s ago by the old owner: wait for the rest of the interval.
        assert_eq!(first_due(1000, Some(900), DeviceStatus::Up, T), 1200);
        // Overdue: poll at once.
        assert_eq!(first_due(1000, Some(600), DeviceStatus::Up, T), 1000);
        // Never polled: now.
        assert_eq!(first_due(1000, None, DeviceStatus::Pending, T), 1000);
        // Down: retried after down_retry.
        assert_eq!(first_due(1000, Some(990), DeviceStatus::Down, T), 1050);
    }

    #[test]
    fn next_poll_lands_on_phase_with_bounded_gap() {
        for host in ["a", "sw1", "core-router-17", "x.example.net"] {
            let p = phase(host, 300);
            let first = next_due(host, 1_000_003, DeviceStatus::Up, T);
            assert_eq!(first % 300, p, "{host}");
            let gap = first - 1_000_003;
            assert!((300..600).contains(&gap), "{host}: gap {gap}");
            // Once aligned, exactly one interval.
            assert_eq!(next_due(host, first, DeviceStatus::Up, T), first + 300);
        }
    }

    #[test]
    fn phases_spread_over_interval() {
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            buckets[(phase(&format!("device-{i}"), 300) / 30) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
    }
}
