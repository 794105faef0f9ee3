//! Pure schedule arithmetic: when a device is due, given its history.

use crate::model::types::DeviceStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Seconds between polls of an up device.
    pub frequency: u64,
    /// Seconds between tries of a down device.
    pub down_retry: u64,
}

/// Seconds between two start slots, longest first, where the interval
/// allows.
///
/// Devices due in one slot go into one claim, so a node writes one claim
/// entry per slot instead of one per second; every entry costs each node of
/// the cluster an append, a replication round and an apply whatever its
/// size (at 10 nodes, 2,000 devices each and 60 s, about 0.5 % of one core
/// for the cluster per entry a second). A node starts a slot's polls
/// together, though, and the memory they hold at once grows with the slot:
/// with 5 s slots the peaks of 10 nodes at 10,000 devices each went from
/// 263–283 to 278–309 MiB; with 2 s slots they stayed at 264–287.
const SLOT_CHOICES: [u64; 3] = [4, 2, 1];

/// The spacing of the start slots within an interval, seconds: the longest
/// of [`SLOT_CHOICES`] that divides `frequency` and leaves at least 12
/// slots, else 1. A slot must divide the interval so that successive claims
/// of a device stay exactly one interval apart.
pub fn slot_seconds(frequency: u64) -> u64 {
    SLOT_CHOICES
        .into_iter()
        .find(|&slot| frequency.is_multiple_of(slot) && frequency / slot >= 12)
        .unwrap_or(1)
}

/// A device's fixed phase within the interval, so that start times spread
/// evenly over the interval instead of bunching (no thundering herd) and
/// stay put across restarts and owner changes. It is the start of the slot
/// (see [`slot_seconds`]) holding the device's second in the interval, so
/// a device polled on whole seconds before keeps its place within a slot.
pub fn phase(hostname: &str, frequency: u64) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = hostname.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let frequency = frequency.max(1);
    let second = hash % frequency;
    second - second % slot_seconds(frequency)
}

/// The first moment at or after `from` that is on `hostname`'s phase.
fn next_slot(hostname: &str, from: u64, frequency: u64) -> u64 {
    let f = frequency.max(1);
    let slot = from - from % f + phase(hostname, f);
    if slot >= from { slot } else { slot + f }
}

/// When a device this node just took over (or found at start) is due, in unix
/// seconds. It continues the replicated schedule: a device polled in the
/// current interval waits for the next one, an overdue one is due now, and
/// a new one waits for its own slot in the coming interval.
pub fn first_due(
    hostname: &str,
    now: u64,
    last_polled: Option<u64>,
    status: DeviceStatus,
    t: Timing,
) -> u64 {
    match last_polled {
        None => next_slot(hostname, now, t.frequency),
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
/// Never sooner than one interval (no double poll in an interval). A device
/// off its phase (polled late after a takeover) drifts back by at most a
/// quarter interval per poll, so a gap stays well under the RRD heartbeat of
/// two intervals even if a failover delays the next poll.
pub fn next_due(hostname: &str, started: u64, status: DeviceStatus, t: Timing) -> u64 {
    if status == DeviceStatus::Down {
        return started + t.down_retry;
    }
    let f = t.frequency.max(1);
    let earliest = started + f;
    let delta = next_slot(hostname, earliest, f) - earliest;
    earliest + delta.min(f / 4)
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
        assert_eq!(first_due("sw1", 1000, Some(900), DeviceStatus::Up, T), 1200);
        // Overdue: poll at once.
        assert_eq!(first_due("sw1", 1000, Some(600), DeviceStatus::Up, T), 1000);
        // Down: retried after down_retry.
        assert_eq!(
            first_due("sw1", 1000, Some(990), DeviceStatus::Down, T),
            1050
        );
        // Never polled: its own slot within the coming interval.
        let first = first_due("sw1", 1000, None, DeviceStatus::Pending, T);
        assert!((1000..1300).contains(&first));
        assert_eq!(first % 300, phase("sw1", 300));
    }

    #[test]
    fn late_polls_drift_back_to_phase_with_bounded_gaps() {
        for host in ["a", "sw1", "core-router-17", "x.example.net"] {
            let mut at = 1_000_003;
            for _ in 0..6 {
                let next = next_due(host, at, DeviceStatus::Up, T);
                let gap = next - at;
                assert!((300..=375).contains(&gap), "{host}: gap {gap}");
                at = next;
            }
            assert_eq!(at % 300, phase(host, 300), "{host} back on its phase");
            assert_eq!(next_due(host, at, DeviceStatus::Up, T), at + 300);
        }
    }

    #[test]
    fn slots_divide_the_interval_into_at_least_twelve() {
        for (frequency, slot) in [
            (300, 4),
            (60, 4),
            (48, 4),
            (44, 2),
            (24, 2),
            (22, 1),
            (10, 1),
            (7, 1),
            (1, 1),
        ] {
            assert_eq!(slot_seconds(frequency), slot, "frequency {frequency}");
        }
        for i in 0..1000 {
            let p = phase(&format!("device-{i}"), 300);
            assert_eq!(p % 4, 0);
            assert!(p < 300);
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
