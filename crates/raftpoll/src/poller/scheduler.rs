//! The scheduler: polls every device this node owns once per interval, with
//! start times spread over the interval, never two polls of one device at
//! once, and down devices retried every `down_retry`.

use super::icmp::Pinger;
use super::modules::{self, Aliases, ModuleError, PortState, defs};
use super::reporter::ReportBuffer;
use super::schedule::{Timing, first_due, next_due};
use crate::cluster::handle::{ClusterError, ClusterHandle, PROPOSE_TIMEOUT};
use crate::librenms::ports::{PortSample, port_ids};
use crate::librenms::writeback::{DownCause, PolledDevice};
use crate::librenms::{DeviceLink, Librenms};
use crate::metrics::Metrics;
use crate::model::state::ClusterState;
use crate::model::types::{
    BATCH_LEVEL, CLAIM_AGAIN_LEVEL, Command, CommandResult, Device, DeviceStatus, Discovery,
    Inventory, NodeId, PollReport, Port, PortKey,
};
use crate::rrd::layout::{RrdUpdate, RrdValue};
use crate::rrd::writer::RrdWriterHandle;
use crate::snmp::{Oid, SnmpClient, SnmpError, SnmpTarget, VarBind};
use crate::storage::PortNames;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc, watch};
// Tokio's, so that tests can pause and advance it; outside them it is std's.
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub timing: Timing,
    pub discovery_frequency: u64,
    pub max_concurrent_polls: usize,
    /// Fencing lease (see [`ClusterHandle::may_poll`]).
    pub lease: Duration,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Result of one poll, handed back to the scheduling loop.
struct Done {
    hostname: String,
    /// The claim's time, unix ms.
    claim_at_ms: u64,
    /// `None`: the poll never started (the device was removed, or the
    /// claim's start window passed first): nothing was sent or reported.
    status: Option<DeviceStatus>,
}

struct Entry {
    due: u64,
    running: bool,
    /// The last claim of it that got no answer (its `at_ms` and when it was
    /// made): it may have been granted all the same.
    unanswered: Option<(u64, Instant)>,
    /// This node's last claim of it that was granted but under which no
    /// poll began (its `at_ms`): the next claim asks the log to replace it.
    abandoned: Option<u64>,
}

struct Context<C, K> {
    cluster: K,
    client: Arc<C>,
    writer: RrdWriterHandle,
    reports: ReportBuffer,
    config: SchedulerConfig,
    extras: PollExtras,
}

/// What the scheduler uses of the cluster: [`ClusterHandle`]'s methods of
/// the same names. A trait so that tests can run the scheduler on the real
/// state machine while choosing when a claim is answered and when other
/// entries are applied.
pub trait PollCluster: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    fn cluster_level(&self) -> u32;
    fn may_poll(&self, lease: Duration) -> bool;
    fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R;
    fn scan_devices<T>(&self, f: impl FnMut(&Device) -> Option<T>) -> Vec<T>;
    /// Bumped after every apply (see [`crate::storage::SharedState::subscribe`]).
    fn subscribe(&self) -> watch::Receiver<u64>;
    fn owner_changes(&self) -> u64;
    fn propose_within(
        &self,
        cmd: Command,
        send_within: Duration,
    ) -> impl Future<Output = Result<CommandResult, ClusterError>> + Send;
    /// The unix time (ms) claims carry and polls are scheduled by; tests
    /// tie it to their paused clock.
    fn unix_now_ms(&self) -> u64 {
        unix_now_ms()
    }
}

impl PollCluster for ClusterHandle {
    fn node_id(&self) -> NodeId {
        ClusterHandle::node_id(self)
    }

    fn cluster_level(&self) -> u32 {
        ClusterHandle::cluster_level(self)
    }

    fn may_poll(&self, lease: Duration) -> bool {
        ClusterHandle::may_poll(self, lease)
    }

    fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        ClusterHandle::read(self, f)
    }

    fn scan_devices<T>(&self, f: impl FnMut(&Device) -> Option<T>) -> Vec<T> {
        self.shared().scan_devices(f)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared().subscribe()
    }

    fn owner_changes(&self) -> u64 {
        self.shared().owner_changes()
    }

    fn propose_within(
        &self,
        cmd: Command,
        send_within: Duration,
    ) -> impl Future<Output = Result<CommandResult, ClusterError>> + Send {
        ClusterHandle::propose_within(self, cmd, send_within)
    }
}

/// What a poll does besides SNMP and RRDs, when configured.
#[derive(Clone, Default)]
pub struct PollExtras {
    /// ICMP echo before SNMP (LibreNMS's availability check).
    pub icmp: Option<Arc<Pinger>>,
    /// LibreNMS's database: results written back after every poll.
    pub librenms: Option<Librenms>,
    /// Where polls, claims and module times are counted.
    pub metrics: Metrics,
    /// Where this node keeps the names of the ports it discovers.
    pub port_names: Option<PortNames>,
}

/// Due devices are gathered this long into one claim, so the log sees a
/// handful of claim entries per second however many devices a node polls.
const CLAIM_WINDOW: Duration = Duration::from_millis(100);

/// Wait before claiming again after a refused or failed claim.
const CLAIM_RETRY: Duration = Duration::from_millis(250);

/// Safety margin between a poll's last request and the earliest moment
/// another node could claim the device.
const POLL_BUDGET_MARGIN: Duration = Duration::from_millis(100);

/// The time rules of one claim, for a device polled every `interval_s`
/// (`frequency`, or `down_retry` while it is down).
///
/// A poll sends its first and its last request within `budget` (half an
/// interval less a margin) of its claim, or nothing; the log refuses any other
/// claim of the device for `gap_ms`, half the interval plus the budget. So two
/// polls of a device never overlap, and neither begins less than half an
/// interval after the other, however late a claim was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClaimTimes {
    budget: Duration,
    gap_ms: u64,
}

impl ClaimTimes {
    fn of(interval_s: u64) -> ClaimTimes {
        let half = Duration::from_millis(interval_s.saturating_mul(500));
        // A claim answered late (a leader paused or replaced meanwhile) may
        // start its poll until the budget ends; the gap comes to an interval
        // less the margin, the next slot's claim.
        let budget = half.saturating_sub(POLL_BUDGET_MARGIN);
        ClaimTimes {
            budget,
            gap_ms: (half + budget).as_millis() as u64,
        }
    }

    /// For a device in `status`.
    fn for_status(t: Timing, status: DeviceStatus) -> ClaimTimes {
        ClaimTimes::of(if status == DeviceStatus::Down {
            t.down_retry
        } else {
            t.frequency
        })
    }

    /// How long a claim of devices polled under `t` may take: the time
    /// within which it may be sent to a leader, and the wait for its answer.
    ///
    /// A claim stuck on a hung or cut-off leader must not hold up polling
    /// once a new leader exists: its answer is awaited at most for the
    /// lease, and never past the shortest budget, after which a grant is of
    /// no use. A claim first sent late in that budget (a leader elected
    /// meanwhile) would likely be granted after it: polls nobody starts, and
    /// the log then refuses the devices' next claim for a whole gap, which
    /// can cost them their interval. So it is sent only within the first half
    /// of the budget; after that a fresh claim is made instead.
    fn waits(t: Timing, lease: Duration) -> (Duration, Duration) {
        let budget = ClaimTimes::of(t.frequency.min(t.down_retry)).budget;
        (budget / 2, lease.min(budget))
    }

    /// The longest claim gap of either status: a claim sent this long after
    /// the last one is refused for no timing reason, whatever the device's
    /// status has become.
    fn widest_gap_ms(t: Timing) -> u64 {
        ClaimTimes::of(t.frequency.max(t.down_retry)).gap_ms
    }
}

/// Outcome of one claim round-trip through the log.
struct Claim {
    /// The claim's time, unix ms (the devices' `last_claim_ms` once granted).
    at_ms: u64,
    /// When the claim was made (monotonic: it keeps running while the
    /// process is stopped, which is the point).
    claimed_at: Instant,
    /// Devices asked for; those not in `granted` go back to the schedule.
    asked: Vec<String>,
    granted: Result<Vec<String>, String>,
}

/// A device whose poll claim was granted, waiting for a poll permit.
struct Granted {
    hostname: String,
    /// The claim's time, unix ms.
    at_ms: u64,
    claimed_at: Instant,
}

/// Runs until `shutdown`; polls already started finish (their results are
/// reported) before it returns.
///
/// Every poll is first claimed in the Raft log ([`Command::ClaimPolls`]).
/// Due devices are batched into one claim while the previous one is in
/// flight, so a node costs about one log entry per commit latency, not one
/// per poll.
pub async fn run<C: SnmpClient, K: PollCluster>(
    cluster: K,
    client: Arc<C>,
    writer: RrdWriterHandle,
    reports: ReportBuffer,
    config: SchedulerConfig,
    extras: PollExtras,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(Context {
        cluster,
        client,
        writer,
        reports,
        config,
        extras,
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let (claim_tx, mut claim_rx) = mpsc::unbounded_channel::<Claim>();
    let mut state_rx = ctx.cluster.subscribe();
    let mut scheduler = Scheduler::new(ctx, done_tx, claim_tx);
    scheduler.resync();
    loop {
        scheduler.claim_if_due();
        let sleep = scheduler.sleep();
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = state_rx.changed() => {
                if changed.is_err() { break; }
                scheduler.on_state_change();
            }
            Some(done) = done_rx.recv() => scheduler.on_poll_done(done),
            Some(claimed) = claim_rx.recv() => scheduler.on_claim_answer(claimed),
            _ = tokio::time::sleep(sleep) => scheduler.on_tick(),
        }
    }
    scheduler.finish(&mut done_rx).await;
}

/// The scheduling loop's state: the schedule of owned devices, the claim
/// being gathered or in flight, and the polls granted or running.
struct Scheduler<C, K> {
    ctx: Arc<Context<C, K>>,
    permits: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    claim_tx: mpsc::UnboundedSender<Claim>,
    entries: HashMap<String, Entry>,
    /// Due times; an item whose time differs from its entry's is stale.
    heap: BinaryHeap<Reverse<(u64, String)>>,
    to_claim: Vec<String>,
    claim_in_flight: bool,
    last_claim: Instant,
    /// Polls started (each holds a permit), and granted ones waiting for one.
    running: usize,
    ready: VecDeque<Granted>,
    /// The state machine's owner-change count at the last resync.
    owner_changes: u64,
}

impl<C: SnmpClient, K: PollCluster> Scheduler<C, K> {
    fn new(
        ctx: Arc<Context<C, K>>,
        done_tx: mpsc::UnboundedSender<Done>,
        claim_tx: mpsc::UnboundedSender<Claim>,
    ) -> Self {
        Scheduler {
            permits: Arc::new(Semaphore::new(ctx.config.max_concurrent_polls.max(1))),
            owner_changes: ctx.cluster.owner_changes(),
            ctx,
            done_tx,
            claim_tx,
            entries: HashMap::new(),
            heap: BinaryHeap::new(),
            to_claim: Vec::new(),
            claim_in_flight: false,
            last_claim: Instant::now() - CLAIM_WINDOW,
            running: 0,
            ready: VecDeque::new(),
        }
    }

    /// How long the gathering window still has to run.
    fn claim_wait(&self) -> Duration {
        CLAIM_WINDOW.saturating_sub(self.last_claim.elapsed())
    }

    /// Sends the gathered devices as one claim, unless one is in flight or
    /// the window is still open.
    fn claim_if_due(&mut self) {
        if !self.claim_in_flight && !self.to_claim.is_empty() && self.claim_wait().is_zero() {
            self.claim_in_flight = true;
            self.last_claim = Instant::now();
            let hostnames = std::mem::take(&mut self.to_claim);
            let abandoned = hostnames
                .iter()
                .enumerate()
                .filter_map(|(i, h)| Some((i as u32, self.entries.get(h)?.abandoned?)))
                .collect();
            tokio::spawn(claim(
                self.ctx.clone(),
                hostnames,
                abandoned,
                self.claim_tx.clone(),
            ));
        }
    }

    /// Time until the next device is due, or the gathering window closes.
    fn sleep(&self) -> Duration {
        let next = self.heap.peek().map(|Reverse((due, _))| *due);
        let mut sleep = match next {
            Some(due) => {
                Duration::from_millis(due.saturating_sub(self.ctx.cluster.unix_now_ms()).max(1))
            }
            None => Duration::from_secs(3600),
        };
        if !self.to_claim.is_empty() && !self.claim_in_flight {
            sleep = sleep.min(self.claim_wait().max(Duration::from_millis(1)));
        }
        sleep
    }

    /// The replicated state changed: resync if this node's devices may have.
    fn on_state_change(&mut self) {
        // Claims and reports (most entries) never change this node's devices.
        let now_changes = self.ctx.cluster.owner_changes();
        if now_changes != self.owner_changes {
            self.owner_changes = now_changes;
            self.resync();
        }
    }

    /// A poll finished: start the next granted one and schedule this device.
    fn on_poll_done(&mut self, done: Done) {
        self.running -= 1;
        self.start_granted();
        if let Some(entry) = self.entries.get_mut(&done.hostname) {
            entry.running = false;
            let t = self.ctx.config.timing;
            entry.due = match done.status {
                // Its next slot, but not before the log would grant it: a
                // poll claimed late is followed by one claimed on time.
                Some(status) => {
                    let due = next_due(&done.hostname, done.claim_at_ms / 1000, status, t) * 1000;
                    due.max(done.claim_at_ms + ClaimTimes::for_status(t, status).gap_ms)
                }
                // Granted but not polled (its start window passed first,
                // often because the claim was answered late): the log can
                // replace that claim at once; a cluster too old to do so
                // refuses a claim until the gap has passed.
                None => {
                    let retry = self.ctx.cluster.unix_now_ms() + CLAIM_RETRY.as_millis() as u64;
                    if self.ctx.cluster.cluster_level() >= CLAIM_AGAIN_LEVEL {
                        entry.abandoned = Some(done.claim_at_ms);
                        retry
                    } else {
                        (done.claim_at_ms + ClaimTimes::widest_gap_ms(t)).max(retry)
                    }
                }
            };
            self.heap.push(Reverse((entry.due, done.hostname)));
        }
    }

    /// The log answered a claim: granted devices queue for a permit, the
    /// others go back to the schedule.
    fn on_claim_answer(&mut self, claimed: Claim) {
        self.claim_in_flight = false;
        let (granted, unanswered): (HashSet<String>, _) = match claimed.granted {
            Ok(g) => (g.into_iter().collect(), None),
            Err(e) => {
                tracing::warn!(devices = claimed.asked.len(), error = %e, "cannot claim polls; retrying");
                (HashSet::new(), Some((claimed.at_ms, claimed.claimed_at)))
            }
        };
        for hostname in claimed.asked {
            if granted.contains(&hostname) {
                if let Some(entry) = self.entries.get_mut(&hostname) {
                    entry.abandoned = None;
                }
                self.ready.push_back(Granted {
                    hostname,
                    at_ms: claimed.at_ms,
                    claimed_at: claimed.claimed_at,
                });
            } else {
                self.reschedule_refused(hostname, unanswered);
            }
        }
        self.start_granted();
    }

    /// Refused (polled by someone in this interval, or no longer ours) or
    /// the log was unreachable (`unanswered`: that claim's time and start):
    /// back to the replicated schedule, after a short pause.
    ///
    /// A claim that got no answer may still have been granted: its entry
    /// committed after the wait ran out, and the log then counts the device
    /// as polled in this interval (a retry is refused). Finding its own
    /// claim as the device's last one, this node polls under it, within
    /// that claim's time budget, rather than leave the interval unpolled.
    fn reschedule_refused(&mut self, hostname: String, unanswered: Option<(u64, Instant)>) {
        let me = self.ctx.cluster.node_id();
        let Some(entry) = self.entries.get_mut(&hostname) else {
            return;
        };
        let (last, status, last_claim_ms) = self.ctx.cluster.read(|s| {
            s.devices
                .get(&hostname)
                .map(|d| {
                    let ours = d.last_claim_ms.filter(|_| d.owner == Some(me));
                    (d.last_polled, d.status, ours)
                })
                .unwrap_or_default()
        });
        let earlier = entry.unanswered.take();
        if let Some((at_ms, claimed_at)) = [unanswered, earlier]
            .into_iter()
            .flatten()
            .find(|(at_ms, _)| last_claim_ms == Some(*at_ms))
        {
            self.ready.push_back(Granted {
                hostname,
                at_ms,
                claimed_at,
            });
            return;
        }
        entry.unanswered = unanswered.or(earlier);
        entry.running = false;
        let now = self.ctx.cluster.unix_now_ms() / 1000;
        let due = match last {
            // Its slot came and no claim was granted (a granted one sets
            // `last_polled`): its next slot is an interval away, so it would
            // miss its first interval. Claim again shortly.
            None => now,
            Some(_) => first_due(&hostname, now, last, status, self.ctx.config.timing),
        };
        entry.due =
            (due * 1000).max(self.ctx.cluster.unix_now_ms() + CLAIM_RETRY.as_millis() as u64);
        self.heap.push(Reverse((entry.due, hostname)));
    }

    /// Moves every due device into the claim being gathered.
    fn on_tick(&mut self) {
        let now_ms = self.ctx.cluster.unix_now_ms();
        let may_poll = self.ctx.cluster.may_poll(self.ctx.config.lease);
        while let Some(Reverse((due, _))) = self.heap.peek() {
            if *due > now_ms {
                break;
            }
            let Some(Reverse((due, hostname))) = self.heap.pop() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&hostname) else {
                continue;
            };
            if entry.due != due || entry.running {
                continue; // stale heap item, or the poll is still going
            }
            if !may_poll {
                // Fenced: no quorum-backed leader in sight. Try again shortly.
                entry.due = now_ms + 500;
                self.heap.push(Reverse((entry.due, hostname)));
                continue;
            }
            entry.running = true;
            self.to_claim.push(hostname);
        }
    }

    /// Starts granted polls while permits are free. A task exists only per
    /// running poll (a poll's future is several KiB): thousands of overdue
    /// devices after a restart or failover wait as queue entries instead.
    fn start_granted(&mut self) {
        while !self.ready.is_empty() {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return;
            };
            let Some(g) = self.ready.pop_front() else {
                return;
            };
            if let Some(entry) = self.entries.get(&g.hostname) {
                let late_ms = self.ctx.cluster.unix_now_ms().saturating_sub(entry.due);
                self.ctx
                    .extras
                    .metrics
                    .poll()
                    .schedule_lag
                    .observe(late_ms as f64 / 1000.0);
            }
            self.running += 1;
            let ctx = self.ctx.clone();
            let done_tx = self.done_tx.clone();
            tokio::spawn(async move {
                let done = poll_device(&ctx, g.hostname, g.at_ms, g.claimed_at).await;
                // Free the permit before reporting, so the scheduler can start
                // the next granted poll as soon as it hears of this one.
                drop(permit);
                let _ = done_tx.send(done);
            });
        }
    }

    /// Brings the schedule in line with the devices this node owns now.
    fn resync(&mut self) {
        let me = self.ctx.cluster.node_id();
        let now = self.ctx.cluster.unix_now_ms() / 1000;
        // In chunks (see `scan_devices`): this thread runs below Raft's, and
        // applies wait for the lock it reads under.
        let owned: Vec<(String, Option<u64>, DeviceStatus)> = self.ctx.cluster.scan_devices(|d| {
            (d.owner == Some(me)).then(|| (d.hostname.clone(), d.last_polled, d.status))
        });
        let mine: HashSet<&str> = owned.iter().map(|(h, _, _)| h.as_str()).collect();
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|h| !mine.contains(h.as_str()))
            .cloned()
            .collect();
        self.entries.retain(|h, _| mine.contains(h.as_str()));
        self.forget_removed(gone);
        for (hostname, last_polled, status) in owned {
            if self.entries.contains_key(&hostname) {
                continue;
            }
            let due = first_due(&hostname, now, last_polled, status, self.ctx.config.timing) * 1000;
            self.heap.push(Reverse((due, hostname.clone())));
            self.entries.insert(
                hostname,
                Entry {
                    due,
                    running: false,
                    unanswered: None,
                    abandoned: None,
                },
            );
        }
    }

    /// Drops the port names of devices that left this node because they were
    /// removed from the cluster; those that moved to another node keep theirs
    /// (they may come back). The state never loses a device it had except by
    /// removal, so only devices this schedule held are considered.
    fn forget_removed(&self, gone: Vec<String>) {
        let Some(names) = &self.ctx.extras.port_names else {
            return;
        };
        for hostname in gone {
            if self.ctx.cluster.read(|s| s.devices.contains_key(&hostname)) {
                continue;
            }
            if let Err(e) = names.forget(&hostname) {
                tracing::warn!(device = %hostname, error = %e, "port names of a removed device not dropped");
            }
        }
    }

    /// Lets started polls finish so their samples and reports are not lost.
    async fn finish(mut self, done_rx: &mut mpsc::UnboundedReceiver<Done>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.running > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(_)) => self.running -= 1,
                _ => break,
            }
        }
    }
}

/// Claims `hostnames`; `abandoned` (index into `hostnames`, claim time)
/// names earlier claims of this node's that the log may replace.
async fn claim<C, K: PollCluster>(
    ctx: Arc<Context<C, K>>,
    hostnames: Vec<String>,
    abandoned: Vec<(u32, u64)>,
    reply: mpsc::UnboundedSender<Claim>,
) {
    let at_ms = ctx.cluster.unix_now_ms();
    let claimed_at = Instant::now();
    let t = ctx.config.timing;
    let (up_gap_ms, down_gap_ms) = (
        ClaimTimes::of(t.frequency).gap_ms,
        ClaimTimes::of(t.down_retry).gap_ms,
    );
    let node = ctx.cluster.node_id();
    let cmd = if abandoned.is_empty() {
        Command::ClaimPolls {
            node,
            at_ms,
            up_gap_ms,
            down_gap_ms,
            hostnames: hostnames.clone(),
        }
    } else {
        tracing::info!(
            devices = abandoned.len(),
            "claiming again devices whose last grant came too late to poll under"
        );
        Command::ClaimPollsAgain {
            node,
            at_ms,
            up_gap_ms,
            down_gap_ms,
            hostnames: hostnames.clone(),
            abandoned,
        }
    };
    // Finished polls' reports ride along: no entry of their own.
    let reports = if ctx.cluster.cluster_level() >= BATCH_LEVEL {
        ctx.reports.take_for_claim()
    } else {
        Vec::new()
    };
    let cmd = if reports.is_empty() {
        cmd
    } else {
        let reports = Command::PollReports {
            node,
            reports: reports.clone(),
        };
        Command::Batch(vec![reports, cmd])
    };
    let (send_within, wait) = ClaimTimes::waits(t, ctx.config.lease);
    let proposed = tokio::time::timeout(wait, ctx.cluster.propose_within(cmd, send_within)).await;
    ctx.extras
        .metrics
        .poll()
        .claim_duration
        .observe(claimed_at.elapsed().as_secs_f64());
    let granted = match proposed {
        Ok(Ok(result)) => claimed(result),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from the leader within {wait:?}")),
    };
    if granted.is_err() {
        // Perhaps recorded all the same: a report applied twice changes nothing.
        ctx.reports.put_back(reports);
    }
    let _ = reply.send(Claim {
        at_ms,
        claimed_at,
        asked: hostnames,
        granted,
    });
}

/// The devices a claim's result grants, alone or in a batch.
fn claimed(result: CommandResult) -> Result<Vec<String>, String> {
    match result {
        CommandResult::Claimed(granted) => Ok(granted),
        CommandResult::Batch(results) => results
            .into_iter()
            .find_map(|r| match r {
                CommandResult::Claimed(granted) => Some(granted),
                _ => None,
            })
            .ok_or_else(|| "a batch without a claim result".to_string()),
        other => Err(format!("unexpected claim result {other:?}")),
    }
}

/// Milliseconds since the unix epoch (0 if the clock is before it).
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

async fn poll_device<C: SnmpClient, K: PollCluster>(
    ctx: &Context<C, K>,
    hostname: String,
    claim_at_ms: u64,
    claimed_at: Instant,
) -> Done {
    let clock = Instant::now();
    let started = claim_at_ms / 1000;
    // A device moved to another node since its claim was granted is still
    // polled under that grant: the log refuses its new owner a claim until
    // the claim gap has passed, and this poll ends within its budget, before
    // then. Not polling it would leave it unpolled for a whole interval.
    let device: Option<Arc<Device>> = ctx.cluster.read(|s| s.devices.get(&hostname).cloned());
    let Some(device) = device else {
        // Removed since it was claimed.
        return Done {
            hostname,
            claim_at_ms,
            status: None,
        };
    };
    if device.owner != Some(ctx.cluster.node_id()) {
        tracing::debug!(device = %hostname, owner = ?device.owner, "polling under a grant made before the device moved");
    }
    // Another node may claim the device once the claim gap has passed: this
    // poll must have begun soon after its claim and sent its last request
    // before then (a node paused mid-poll must not carry on when it resumes).
    let times = ClaimTimes::for_status(ctx.config.timing, device.status);
    let client = Fenced {
        inner: ctx.client.clone(),
        deadline: claimed_at + times.budget,
        budget: times.budget,
        begun: AtomicBool::new(false),
    };
    let mut polled = PolledDevice {
        hostname: hostname.clone(),
        polled_at: started,
        ..PolledDevice::default()
    };
    let outcome = poll_owned(ctx, &client, &device, started, &mut polled).await;
    let duration_ms = clock.elapsed().as_millis() as u64;
    let m = ctx.extras.metrics.poll();
    if let Err(Down {
        kind: DownKind::NotStarted,
        reason,
        ..
    }) = &outcome
    {
        // Nothing was sent: no report, the device is claimed again.
        tracing::debug!(device = %hostname, %reason, "poll not started");
        m.not_started.inc();
        return Done {
            hostname,
            claim_at_ms,
            status: None,
        };
    }
    m.duration.observe(clock.elapsed().as_secs_f64());
    match &outcome {
        Ok(()) => m.up.inc(),
        Err(Down {
            kind: DownKind::Timeout,
            ..
        }) => m.timeout.inc(),
        Err(Down {
            kind: DownKind::Fenced,
            ..
        }) => m.fenced.inc(),
        Err(_) => m.down.inc(),
    };
    let (status, reason) = match outcome {
        Ok(()) => (DeviceStatus::Up, None),
        Err(down) => {
            tracing::info!(device = %hostname, reason = %down.reason, "device down");
            polled.down = Some(down.cause);
            (DeviceStatus::Down, Some(down.reason))
        }
    };
    if let Some(librenms) = &ctx.extras.librenms {
        polled.duration_ms = duration_ms;
        librenms.poll_done(polled);
    }
    if status == DeviceStatus::Up {
        let perf = RrdUpdate {
            path: modules::rrd_file(&hostname, "poller-perf"),
            def: defs::poller_perf_def(),
            timestamp: started,
            millis: 0,
            values: vec![RrdValue::Gauge(duration_ms as f64 / 1000.0)],
        };
        submit(ctx, perf).await;
    }
    ctx.reports.push(PollReport {
        hostname: hostname.clone(),
        polled_at: started,
        duration_ms,
        status,
        reason,
    });
    Done {
        hostname,
        claim_at_ms,
        status: Some(status),
    }
}

async fn submit<C, K>(ctx: &Context<C, K>, update: RrdUpdate) {
    if let Err(e) = ctx.writer.submit(update).await {
        tracing::warn!(error = %e, "RRD update not queued");
    }
}

/// Why a poll found a device down: the cause LibreNMS records and the
/// operator-readable reason.
struct Down {
    cause: DownCause,
    reason: String,
    /// How the node's metrics count it.
    kind: DownKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DownKind {
    /// Refused, unreachable, unresolvable, no ICMP answer.
    Down,
    /// No SNMP answer after every retry.
    Timeout,
    /// Stopped at the claim's time budget (the poll's fence).
    Fenced,
    /// The claim's start window passed before the first request: nothing
    /// was sent, and the device is not down.
    NotStarted,
}

impl From<String> for Down {
    fn from(reason: String) -> Down {
        Down {
            cause: DownCause::Snmp,
            reason,
            kind: DownKind::Down,
        }
    }
}

impl From<ModuleError> for Down {
    fn from(e: ModuleError) -> Down {
        let ModuleError::Snmp(snmp) = &e;
        let kind = match snmp {
            SnmpError::Timeout { .. } => DownKind::Timeout,
            SnmpError::BudgetExhausted { .. } => DownKind::Fenced,
            SnmpError::StartWindowPassed { .. } => DownKind::NotStarted,
            _ => DownKind::Down,
        };
        Down {
            cause: DownCause::Snmp,
            reason: e.to_string(),
            kind,
        }
    }
}

/// Pings first when ICMP checks are on (no answer: down, not walked), then
/// discovers when due, then polls. What it learns goes into `polled`.
async fn poll_owned<C: SnmpClient, K: PollCluster>(
    ctx: &Context<C, K>,
    client: &Fenced<C>,
    device: &Device,
    started: u64,
    polled: &mut PolledDevice,
) -> Result<(), Down> {
    let addr = resolve(&device.address, device.port).await?;
    let metrics = ctx.extras.metrics.poll();
    if let Some(pinger) = &ctx.extras.icmp {
        client
            .begin()
            .map_err(|e| Down::from(ModuleError::Snmp(e)))?;
        let ping = pinger.check(addr.ip()).await;
        metrics.observe_module("icmp", ping.took);
        polled.ping_took_ms = Some(ping.took.as_secs_f64() * 1000.0);
        let Some(rtt) = ping.rtt else {
            return Err(Down {
                cause: DownCause::Icmp,
                reason: format!("no answer to ICMP echo from {}", addr.ip()),
                kind: DownKind::Down,
            });
        };
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        polled.ping_rtt_ms = Some(rtt_ms);
        let perf = RrdUpdate {
            path: modules::rrd_file(&device.hostname, "ping-perf"),
            def: defs::ping_perf_def(),
            timestamp: started,
            millis: 0,
            values: vec![RrdValue::Gauge(rtt_ms)],
        };
        submit(ctx, perf).await;
    }
    let target = SnmpTarget::new(addr, device.credentials.clone());
    // LibreNMS mode, for a device LibreNMS has a row for.
    let linked = ctx
        .extras
        .librenms
        .as_ref()
        .and_then(|l| Some((l, l.link(&device.hostname)?)));
    let discovery_due = device
        .last_discovered
        .is_none_or(|t| started >= t + ctx.config.discovery_frequency);
    let inventory = if discovery_due {
        let discovering = Instant::now();
        let (found, aliases) = modules::discover_with(client, &target, linked.is_some()).await?;
        metrics.observe_module("discovery", discovering.elapsed());
        match linked {
            Some((librenms, link)) => {
                record_librenms_discovery(ctx, device, started, found, librenms, link, &aliases)
                    .await
            }
            None => record_discovery(ctx, &device.hostname, started, found).await,
        }
    } else {
        device.inventory.clone()
    };
    let step = u32::try_from(ctx.config.timing.frequency).unwrap_or(u32::MAX);
    // Stamp samples when the counters are read, not when the poll was
    // claimed: a discovery in between can take seconds, and a sample stamped
    // early reads as a wrong rate.
    let sampled_ms = ctx.cluster.unix_now_ms().max(started * 1000);
    let sampled = sampled_ms / 1000;
    let out = modules::poll_with(
        client,
        &target,
        &device.hostname,
        &inventory,
        step,
        sampled,
        linked.is_some(),
    )
    .await?;
    for (module, took) in &out.timings {
        metrics.observe_module(module, *took);
    }
    polled.system = out.system;
    polled.uptime_s = out.uptime_s;
    polled.ports = port_samples(&inventory, out.port_states);
    for note in &out.skipped {
        tracing::debug!(device = %device.hostname, note, "skipped");
    }
    for mut update in out.updates {
        update.millis = (sampled_ms % 1000) as u16;
        submit(ctx, update).await;
    }
    Ok(())
}

/// The inventory's ports with what this poll read of them.
fn port_samples(inventory: &Inventory, states: Vec<PortState>) -> Vec<PortSample> {
    let by_index: HashMap<u32, &Port> = inventory.ports.iter().map(|p| (p.ifindex, p)).collect();
    states
        .into_iter()
        .filter_map(|state| {
            let port = by_index.get(&state.ifindex)?;
            Some(PortSample {
                port_id: port.port_id(),
                state,
            })
        })
        .collect()
}

/// LibreNMS mode: the port ids come from LibreNMS's `ports` table, then the
/// discovery goes to the log with them. While the database fails the device
/// keeps its previous inventory and nothing is proposed, so the next poll
/// discovers again.
async fn record_librenms_discovery<C, K: PollCluster>(
    ctx: &Context<C, K>,
    device: &Device,
    at: u64,
    found: Discovery,
    librenms: &Librenms,
    link: DeviceLink,
    aliases: &Aliases,
) -> Arc<Inventory> {
    let hostname = device.hostname.as_str();
    let port_ids = match port_ids(librenms.db(), link, &found.ports, aliases).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(device = hostname, error = %e, "LibreNMS port ids not read; discovery retried at the next poll");
            librenms.set_error(e.to_string());
            return device.inventory.clone();
        }
    };
    let cmd = Command::DiscoveredPorts {
        hostname: hostname.to_string(),
        at,
        discovery: found.clone(),
        port_ids,
    };
    keep_port_names(ctx, hostname, &found);
    inventory_with_ids(found, propose_discovery(ctx, hostname, cmd).await)
}

/// Proposes a discovery; the port ids the state machine answered, by ifIndex.
async fn propose_discovery<C, K: PollCluster>(
    ctx: &Context<C, K>,
    hostname: &str,
    cmd: Command,
) -> BTreeMap<u32, u64> {
    match ctx.cluster.propose_within(cmd, PROPOSE_TIMEOUT).await {
        Ok(CommandResult::PortIds(ids)) => ids,
        Ok(other) => {
            tracing::warn!(device = hostname, result = ?other, "discovery not recorded");
            BTreeMap::new()
        }
        Err(e) => {
            tracing::warn!(device = hostname, error = %e, "discovery not recorded");
            BTreeMap::new()
        }
    }
}

/// Writes a discovery to the log and returns the inventory with the port ids
/// the state machine allocated.
async fn record_discovery<C, K: PollCluster>(
    ctx: &Context<C, K>,
    hostname: &str,
    at: u64,
    found: Discovery,
) -> Arc<Inventory> {
    let cmd = Command::Discovered {
        hostname: hostname.to_string(),
        at,
        discovery: found.clone(),
    };
    keep_port_names(ctx, hostname, &found);
    inventory_with_ids(found, propose_discovery(ctx, hostname, cmd).await)
}

/// Keeps the discovered ports' names on this node, for `device show`: the
/// replicated state has only their keys.
fn keep_port_names<C, K>(ctx: &Context<C, K>, hostname: &str, found: &Discovery) {
    let Some(names) = &ctx.extras.port_names else {
        return;
    };
    if let Err(e) = names.set(hostname, &found.ports) {
        tracing::warn!(device = hostname, error = %e, "port names not kept");
    }
}

/// A discovery as the inventory the poll uses, with the log's port ids.
fn inventory_with_ids(found: Discovery, ids: BTreeMap<u32, u64>) -> Arc<Inventory> {
    Arc::new(Inventory {
        system: found.system,
        // Without an id a port has no RRD file name yet: skip it this time.
        ports: found
            .ports
            .into_iter()
            .filter_map(|p| {
                let &port_id = ids.get(&p.ifindex)?;
                Port::new(port_id, p.ifindex, PortKey::of(&p.ifname, &p.ifdescr))
            })
            .collect(),
        processors: found.processors,
        storages: found.storages,
    })
}

async fn resolve(address: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    let host = address.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok((ip, port).into());
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("'{host}' resolves to no address")),
        Err(e) => Err(format!("cannot resolve '{host}': {e}")),
    }
}

/// The SNMP client as one poll sees it: no request starts, nor is one in
/// progress driven further, once the poll's deadline has passed. A poll that
/// sent nothing by then did not start at all.
struct Fenced<C> {
    inner: Arc<C>,
    deadline: Instant,
    budget: Duration,
    /// Whether the poll sent anything yet (to the agent, or an ICMP echo).
    begun: AtomicBool,
}

impl<C> Fenced<C> {
    /// Called right before each of the poll's packets: an error once the
    /// deadline has passed, telling a poll that never began from one cut
    /// short.
    fn begin(&self) -> Result<(), SnmpError> {
        let begun = self.begun.load(Ordering::Relaxed);
        if Instant::now() >= self.deadline {
            let budget_ms = self.budget.as_millis() as u64;
            return Err(if begun {
                SnmpError::BudgetExhausted { budget_ms }
            } else {
                SnmpError::StartWindowPassed {
                    window_ms: budget_ms,
                }
            });
        }
        self.begun.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Drives `request` only while the fence allows. Unlike a timeout, the
    /// clock is checked *before* the request is driven, so after a process
    /// pause the request is dropped without sending its retries.
    async fn fenced<T>(
        &self,
        request: impl Future<Output = Result<T, SnmpError>>,
    ) -> Result<T, SnmpError> {
        let mut request = std::pin::pin!(request);
        let mut alarm = std::pin::pin!(tokio::time::sleep_until(self.deadline));
        std::future::poll_fn(|cx| {
            if let Err(e) = self.begin() {
                return Poll::Ready(Err(e));
            }
            if let Poll::Ready(result) = request.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            // Wake at the deadline even if the request never answers.
            let _ = alarm.as_mut().poll(cx);
            Poll::Pending
        })
        .await
    }
}

impl<C: SnmpClient> SnmpClient for Fenced<C> {
    async fn get(&self, target: &SnmpTarget, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        self.fenced(self.inner.get(target, oids)).await
    }

    async fn walk(&self, target: &SnmpTarget, root: &Oid) -> Result<Vec<VarBind>, SnmpError> {
        self.fenced(self.inner.walk(target, root)).await
    }

    async fn walk_many(
        &self,
        target: &SnmpTarget,
        roots: &[Oid],
    ) -> Result<Vec<Vec<VarBind>>, SnmpError> {
        self.fenced(self.inner.walk_many(target, roots)).await
    }
}

#[cfg(test)]
mod races;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::snmp::FakeSnmpClient;
    use crate::snmp::credentials::SnmpCredentials;

    #[test]
    fn claim_times_keep_polls_apart_however_late_a_claim_is_answered() {
        assert_eq!(
            ClaimTimes::of(300),
            ClaimTimes {
                budget: Duration::from_millis(149_900),
                gap_ms: 299_900,
            }
        );
        for interval_s in [1, 2, 3, 60, 300, 86_400] {
            let c = ClaimTimes::of(interval_s);
            let half_ms = interval_s * 500;
            // The latest first request of one poll and the earliest of the
            // next claim's poll are half an interval apart.
            assert_eq!(c.gap_ms - c.budget.as_millis() as u64, half_ms);
            // The last request comes before anyone else may claim.
            assert!((c.budget.as_millis() as u64) < c.gap_ms);
        }
        // The widest gap covers a device whose status changes in between.
        let t = Timing {
            frequency: 300,
            down_retry: 60,
        };
        assert_eq!(ClaimTimes::widest_gap_ms(t), 299_900);
        assert_eq!(ClaimTimes::for_status(t, DeviceStatus::Down).gap_ms, 59_900);
    }

    #[test]
    fn a_claim_is_sent_early_in_its_budget_and_awaited_no_longer_than_it() {
        let lease = Duration::from_millis(1500);
        let t = |frequency, down_retry| Timing {
            frequency,
            down_retry,
        };
        // The chaos suite's 3 s interval: sent within 0.7 s, answered within 1.4 s.
        assert_eq!(
            ClaimTimes::waits(t(3, 3), lease),
            (Duration::from_millis(700), Duration::from_millis(1400))
        );
        // Long intervals: the lease bounds the wait, not the budget.
        assert_eq!(
            ClaimTimes::waits(t(300, 60), lease),
            (Duration::from_millis(14_950), lease)
        );
        for (frequency, down_retry) in [(1, 1), (3, 3), (10, 3), (60, 60), (300, 60)] {
            let timing = t(frequency, down_retry);
            let (send_within, wait) = ClaimTimes::waits(timing, lease);
            let budget = [DeviceStatus::Up, DeviceStatus::Down]
                .map(|status| ClaimTimes::for_status(timing, status).budget)
                .into_iter()
                .min()
                .unwrap_or_default();
            // An answer in time still leaves either status's poll its start.
            assert!(wait <= budget);
            // A claim sent at the last moment has as long again for a grant
            // to come back while it can still be polled under.
            assert!(send_within * 2 <= budget && !send_within.is_zero());
        }
    }

    fn fenced(deadline_in: Duration) -> (Fenced<FakeSnmpClient>, SnmpTarget) {
        let client = Fenced {
            inner: Arc::new(FakeSnmpClient::new()),
            deadline: Instant::now() + deadline_in,
            budget: deadline_in,
            begun: AtomicBool::new(false),
        };
        let target = SnmpTarget::new(
            "127.0.0.1:161".parse().expect("address"),
            SnmpCredentials::V2c {
                community: Secret::new("public"),
            },
        );
        (client, target)
    }

    #[tokio::test]
    async fn a_poll_that_missed_its_start_window_sends_nothing() {
        let (client, target) = fenced(Duration::ZERO);
        let oid: Oid = "1.3.6.1.2.1.1.3.0".parse().expect("oid");
        let err = client.get(&target, &[oid]).await.unwrap_err();
        assert!(
            matches!(err, SnmpError::StartWindowPassed { .. }),
            "{err:?}"
        );
        assert_eq!(client.inner.get_calls(), 0);
        assert!(
            client.begin().is_err(),
            "a later request may not start either"
        );
    }

    #[tokio::test]
    async fn a_poll_begun_in_its_window_goes_on_until_its_deadline() {
        let (mut client, target) = fenced(Duration::from_secs(120));
        let oid: Oid = "1.3.6.1.2.1.1.3.0".parse().expect("oid");
        client
            .get(&target, std::slice::from_ref(&oid))
            .await
            .expect("first request");
        client
            .get(&target, std::slice::from_ref(&oid))
            .await
            .expect("second request");
        assert_eq!(client.inner.get_calls(), 2);
        // Past the deadline, nothing more.
        client.deadline = Instant::now();
        let err = client.get(&target, &[oid]).await.unwrap_err();
        assert!(matches!(err, SnmpError::BudgetExhausted { .. }), "{err:?}");
        assert_eq!(client.inner.get_calls(), 2);
    }
}
