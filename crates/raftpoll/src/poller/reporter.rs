//! Batches poll reports into the Raft log: they ride with the node's next
//! claim, or go in an entry of their own once they have waited, keeping only
//! the newest report of each device.

use super::scheduler::unix_now_ms;
use crate::api::split_by_size;
use crate::cluster::handle::ClusterHandle;
use crate::codec;
use crate::model::types::{BATCH_LEVEL, Command, PollReport};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where the scheduler drops reports; bounded by the number of devices.
#[derive(Clone, Default)]
pub struct ReportBuffer {
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    reports: BTreeMap<String, PollReport>,
    /// Since when some report has been waiting.
    since: Option<Instant>,
}

/// Reports that ride with one claim: a claim entry stays small whatever
/// the reasons say (the rest wait for the next claim).
const REPORTS_PER_CLAIM: usize = 500;
const REPORT_BYTES_PER_CLAIM: u64 = 128 * 1024;

impl ReportBuffer {
    pub fn push(&self, report: PollReport) {
        let mut pending = self.lock();
        pending.since.get_or_insert_with(Instant::now);
        merge(&mut pending.reports, report);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Vec<PollReport> {
        let mut pending = self.lock();
        pending.since = None;
        std::mem::take(&mut pending.reports).into_values().collect()
    }

    /// The reports that ride with a claim (a bounded share of them).
    pub fn take_for_claim(&self) -> Vec<PollReport> {
        let mut pending = self.lock();
        let mut taken = Vec::new();
        let mut bytes = 0;
        while taken.len() < REPORTS_PER_CLAIM && bytes < REPORT_BYTES_PER_CLAIM {
            let Some((_, report)) = pending.reports.pop_first() else {
                break;
            };
            bytes += codec::encoded_size(&report).map_or(REPORT_BYTES_PER_CLAIM, |n| n as u64);
            taken.push(report);
        }
        // Those left have waited as long as before.
        if pending.reports.is_empty() {
            pending.since = None;
        }
        taken
    }

    pub fn put_back(&self, reports: Vec<PollReport>) {
        let mut pending = self.lock();
        if !reports.is_empty() {
            pending.since.get_or_insert_with(Instant::now);
        }
        for r in reports {
            merge(&mut pending.reports, r);
        }
    }

    /// How long the oldest pending report has waited.
    fn waited(&self) -> Option<Duration> {
        self.lock().since.map(|t| t.elapsed())
    }

    pub fn len(&self) -> usize {
        self.lock().reports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn merge(pending: &mut BTreeMap<String, PollReport>, report: PollReport) {
    match pending.get(&report.hostname) {
        Some(old) if old.polled_at > report.polled_at => {}
        _ => {
            pending.insert(report.hostname.clone(), report);
        }
    }
}

/// Proposes the buffered reports every `interval` until shutdown, then once
/// more.
///
/// In a cluster that applies batches ([`BATCH_LEVEL`]) reports ride with the
/// node's claims ([`ReportBuffer::take_for_claim`]), which cost the log no
/// entry of their own; only reports no claim took within half an interval
/// (the node stopped polling, or claims failed) are flushed here. In an
/// older cluster every flush writes the buffer.
///
/// Flushes fall on the multiples of `interval` in unix time, as do the start
/// slots' claims: every node's reports then reach the leader with the
/// claims of that moment and replicate in the same round, instead of each
/// report entry costing every follower a round of its own.
pub async fn run(
    cluster: ClusterHandle,
    buffer: ReportBuffer,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(until_aligned(interval, unix_now_ms())) => {
                let left_behind = buffer.waited().is_some_and(|w| w >= interval / 2);
                if left_behind || cluster.cluster_level() < BATCH_LEVEL {
                    flush(&cluster, &buffer).await
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    flush(&cluster, &buffer).await;
}

/// Time from `now_ms` (unix milliseconds) to the next multiple of `interval`
/// since the unix epoch (a whole `interval` when `now_ms` is one).
fn until_aligned(interval: Duration, now_ms: u64) -> Duration {
    let every_ms = (interval.as_millis() as u64).max(1);
    Duration::from_millis(every_ms - now_ms % every_ms)
}

/// Reports per entry: small entries replicate and apply without holding up
/// claims, and stay far below the largest entry whatever the reasons say.
const REPORTS_PER_ENTRY: usize = 2000;
const BYTES_PER_ENTRY: u64 = 512 * 1024;

async fn flush(cluster: &ClusterHandle, buffer: &ReportBuffer) {
    let reports = buffer.take();
    let batches = split_by_size(reports, REPORTS_PER_ENTRY, BYTES_PER_ENTRY, |r| {
        codec::encoded_size(r).map_or(BYTES_PER_ENTRY, |n| n as u64)
    });
    let mut batches = batches.into_iter();
    while let Some(batch) = batches.next() {
        let count = batch.len();
        let cmd = Command::PollReports {
            node: cluster.node_id(),
            reports: batch.clone(),
        };
        if let Err(e) = cluster.propose(cmd).await {
            tracing::warn!(reports = count, error = %e, "cannot record poll reports; will retry");
            buffer.put_back(batch);
            batches.for_each(|rest| buffer.put_back(rest));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::DeviceStatus;

    #[test]
    fn newest_report_per_device_wins() {
        let b = ReportBuffer::default();
        let r = |at| PollReport {
            hostname: "sw1".into(),
            polled_at: at,
            duration_ms: 1,
            status: DeviceStatus::Up,
            reason: None,
        };
        b.push(r(10));
        b.push(r(5));
        b.put_back(vec![r(7)]);
        let taken = b.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].polled_at, 10);
        assert!(b.is_empty());
    }

    #[test]
    fn a_claim_takes_a_bounded_share_and_the_rest_keeps_its_age() {
        let b = ReportBuffer::default();
        assert!(b.waited().is_none());
        for i in 0..REPORTS_PER_CLAIM + 10 {
            b.push(PollReport {
                hostname: format!("sw{i}"),
                polled_at: 10,
                duration_ms: 1,
                status: DeviceStatus::Up,
                reason: None,
            });
        }
        let since = b.waited().expect("waiting");
        assert_eq!(b.take_for_claim().len(), REPORTS_PER_CLAIM);
        assert_eq!(b.len(), 10);
        assert!(b.waited().expect("still waiting") >= since);
        assert_eq!(b.take_for_claim().len(), 10);
        assert!(b.waited().is_none(), "nothing left to wait");
    }

    #[test]
    fn flushes_fall_on_multiples_of_the_interval() {
        let every = Duration::from_secs(10);
        assert_eq!(until_aligned(every, 1_000_003_000), Duration::from_secs(7));
        assert_eq!(
            until_aligned(every, 1_000_009_999),
            Duration::from_millis(1)
        );
        assert_eq!(until_aligned(every, 1_000_000_000), every);
    }
}
