//! The scheduler: polls every device this node owns once per interval, with
//! start times spread over the interval, never two polls of one device at
//! once, and down devices retried every `down_retry`.

use super::modules::{self, ModuleError, defs};
use super::reporter::ReportBuffer;
use super::schedule::{Timing, first_due, next_due};
use crate::cluster::handle::ClusterHandle;
use crate::cluster::types::{
    Command, CommandResult, Device, DeviceStatus, Discovery, Inventory, PollReport, Port,
};
use crate::rrd::layout::{RrdUpdate, RrdValue};
use crate::rrd::writer::RrdWriterHandle;
use crate::snmp::{SnmpClient, SnmpTarget};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc, watch};

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
    started: u64,
    status: DeviceStatus,
}

struct Entry {
    due: u64,
    running: bool,
}

struct Context<C> {
    cluster: ClusterHandle,
    client: Arc<C>,
    writer: RrdWriterHandle,
    reports: ReportBuffer,
    config: SchedulerConfig,
}

/// Due devices are gathered this long into one claim, so the log sees a
/// handful of claim entries per second however many devices a node polls.
const CLAIM_WINDOW: Duration = Duration::from_millis(100);

/// Outcome of one claim round-trip through the log.
struct Claim {
    at: u64,
    /// Devices asked for; those not in `granted` go back to the schedule.
    asked: Vec<String>,
    granted: Result<Vec<String>, String>,
}

/// Runs until `shutdown`; polls already started finish (their results are
/// reported) before it returns.
///
/// Every poll is first claimed in the Raft log ([`Command::ClaimPolls`]).
/// Due devices are batched into one claim while the previous one is in
/// flight, so a node costs about one log entry per commit latency, not one
/// per poll.
pub async fn run<C: SnmpClient>(
    cluster: ClusterHandle,
    client: Arc<C>,
    writer: RrdWriterHandle,
    reports: ReportBuffer,
    config: SchedulerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.max_concurrent_polls.max(1)));
    let ctx = Arc::new(Context {
        cluster,
        client,
        writer,
        reports,
        config,
    });
    // Each result comes with the time (unix ms) its poll really began.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Done, u64)>();
    let (claim_tx, mut claim_rx) = mpsc::unbounded_channel::<Claim>();
    let mut state_rx = ctx.cluster.shared().subscribe();
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut heap: BinaryHeap<Reverse<(u64, String)>> = BinaryHeap::new();
    let mut to_claim: Vec<String> = Vec::new();
    let mut claim_in_flight = false;
    let mut last_claim = Instant::now() - CLAIM_WINDOW;
    let mut running = 0usize;
    resync(&ctx, &mut entries, &mut heap);
    loop {
        let claim_wait = CLAIM_WINDOW.saturating_sub(last_claim.elapsed());
        if !claim_in_flight && !to_claim.is_empty() && claim_wait.is_zero() {
            claim_in_flight = true;
            last_claim = Instant::now();
            tokio::spawn(claim(
                ctx.clone(),
                std::mem::take(&mut to_claim),
                claim_tx.clone(),
            ));
        }
        let next = heap.peek().map(|Reverse((due, _))| *due);
        let mut sleep = match next {
            Some(due) => Duration::from_millis(due.saturating_sub(unix_now_ms()).max(1)),
            None => Duration::from_secs(3600),
        };
        if !to_claim.is_empty() && !claim_in_flight {
            sleep = sleep.min(claim_wait.max(Duration::from_millis(1)));
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = state_rx.changed() => {
                if changed.is_err() { break; }
                resync(&ctx, &mut entries, &mut heap);
            }
            Some((done, began_ms)) = done_rx.recv() => {
                running -= 1;
                if let Some(entry) = entries.get_mut(&done.hostname) {
                    entry.running = false;
                    // `started` is the claim's whole second; the poll may have
                    // begun up to a commit later. Counting from the real start
                    // keeps two polls at least `frequency / 2` apart on the wire.
                    let began = done.started.max(began_ms.div_ceil(1000));
                    entry.due = next_due(&done.hostname, began, done.status, ctx.config.timing) * 1000;
                    heap.push(Reverse((entry.due, done.hostname)));
                }
            }
            Some(claimed) = claim_rx.recv() => {
                claim_in_flight = false;
                let granted: HashSet<String> = match claimed.granted {
                    Ok(g) => g.into_iter().collect(),
                    Err(e) => {
                        tracing::warn!(devices = claimed.asked.len(), error = %e, "cannot claim polls; retrying");
                        HashSet::new()
                    }
                };
                for hostname in claimed.asked {
                    if granted.contains(&hostname) {
                        running += 1;
                        let ctx = ctx.clone();
                        let done_tx = done_tx.clone();
                        let permits = permits.clone();
                        let at = claimed.at;
                        tokio::spawn(async move {
                            let Ok(_permit) = permits.acquire_owned().await else { return };
                            let began_ms = unix_now_ms();
                            let done = poll_device(&ctx, hostname, at).await;
                            let _ = done_tx.send((done, began_ms));
                        });
                    } else if let Some(entry) = entries.get_mut(&hostname) {
                        // Refused (polled by someone in this interval, or no
                        // longer ours) or the log was unreachable: back to
                        // the replicated schedule, at least a second from now.
                        entry.running = false;
                        let (last, status) = ctx.cluster.read(|s| {
                            s.devices.get(&hostname).map(|d| (d.last_polled, d.status)).unwrap_or_default()
                        });
                        let now = unix_now();
                        entry.due = first_due(now, last, status, ctx.config.timing).max(now + 1) * 1000;
                        heap.push(Reverse((entry.due, hostname)));
                    }
                }
            }
            _ = tokio::time::sleep(sleep) => {
                let now_ms = unix_now_ms();
                let may_poll = ctx.cluster.may_poll(ctx.config.lease);
                while let Some(Reverse((due, _))) = heap.peek() {
                    if *due > now_ms { break; }
                    let Some(Reverse((due, hostname))) = heap.pop() else { break };
                    let Some(entry) = entries.get_mut(&hostname) else { continue };
                    if entry.due != due || entry.running {
                        continue; // stale heap item, or the poll is still going
                    }
                    if !may_poll {
                        // Fenced: no quorum-backed leader in sight. Try again shortly.
                        entry.due = now_ms + 500;
                        heap.push(Reverse((entry.due, hostname)));
                        continue;
                    }
                    entry.running = true;
                    to_claim.push(hostname);
                }
            }
        }
    }
    // Let started polls finish so their samples and reports are not lost.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(_)) => running -= 1,
            _ => break,
        }
    }
}

async fn claim<C>(
    ctx: Arc<Context<C>>,
    hostnames: Vec<String>,
    reply: mpsc::UnboundedSender<Claim>,
) {
    let at = unix_now();
    let t = ctx.config.timing;
    let cmd = Command::ClaimPolls {
        node: ctx.cluster.node_id(),
        at,
        up_gap: t.frequency.div_ceil(2),
        down_gap: t.down_retry.div_ceil(2),
        hostnames: hostnames.clone(),
    };
    let granted = match ctx.cluster.propose(cmd).await {
        Ok(CommandResult::Claimed(granted)) => Ok(granted),
        Ok(other) => Err(format!("unexpected claim result {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    let _ = reply.send(Claim {
        at,
        asked: hostnames,
        granted,
    });
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Brings the schedule in line with the devices this node owns now.
fn resync<C>(
    ctx: &Context<C>,
    entries: &mut HashMap<String, Entry>,
    heap: &mut BinaryHeap<Reverse<(u64, String)>>,
) {
    let me = ctx.cluster.node_id();
    let now = unix_now();
    let owned: Vec<(String, Option<u64>, DeviceStatus)> = ctx.cluster.read(|s| {
        s.devices_of(me)
            .filter(|d| !entries.contains_key(&d.hostname))
            .map(|d| (d.hostname.clone(), d.last_polled, d.status))
            .collect()
    });
    for (hostname, last_polled, status) in owned {
        let due = first_due(now, last_polled, status, ctx.config.timing) * 1000;
        heap.push(Reverse((due, hostname.clone())));
        entries.insert(
            hostname,
            Entry {
                due,
                running: false,
            },
        );
    }
    let still_owned: HashSet<String> = ctx
        .cluster
        .read(|s| s.devices_of(me).map(|d| d.hostname.clone()).collect());
    entries.retain(|h, _| still_owned.contains(h));
}

async fn poll_device<C: SnmpClient>(ctx: &Context<C>, hostname: String, started: u64) -> Done {
    let clock = Instant::now();
    let me = ctx.cluster.node_id();
    let device: Option<Device> = ctx.cluster.read(|s| {
        s.devices
            .get(&hostname)
            .filter(|d| d.owner == Some(me))
            .cloned()
    });
    let Some(device) = device else {
        // Moved away or removed since it was scheduled.
        return Done {
            hostname,
            started,
            status: DeviceStatus::Pending,
        };
    };
    let outcome = poll_owned(ctx, &device, started).await;
    let duration_ms = clock.elapsed().as_millis() as u64;
    let (status, reason) = match outcome {
        Ok(()) => (DeviceStatus::Up, None),
        Err(reason) => {
            tracing::info!(device = %hostname, %reason, "device down");
            (DeviceStatus::Down, Some(reason))
        }
    };
    if status == DeviceStatus::Up {
        let perf = RrdUpdate {
            path: modules::rrd_file(&hostname, "poller-perf"),
            def: defs::poller_perf_def(),
            timestamp: started,
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
        started,
        status,
    }
}

async fn submit<C>(ctx: &Context<C>, update: RrdUpdate) {
    if let Err(e) = ctx.writer.submit(update).await {
        tracing::warn!(error = %e, "RRD update not queued");
    }
}

/// Discovers when due, then polls. The error is the operator-readable reason.
async fn poll_owned<C: SnmpClient>(
    ctx: &Context<C>,
    device: &Device,
    started: u64,
) -> Result<(), String> {
    let addr = resolve(&device.address, device.port).await?;
    let target = SnmpTarget::new(addr, device.credentials.clone());
    let discovery_due = device
        .last_discovered
        .is_none_or(|t| started >= t + ctx.config.discovery_frequency);
    let inventory = if discovery_due {
        let found = modules::discover(ctx.client.as_ref(), &target)
            .await
            .map_err(|e: ModuleError| e.to_string())?;
        record_discovery(ctx, &device.hostname, started, found).await
    } else {
        device.inventory.clone()
    };
    let step = u32::try_from(ctx.config.timing.frequency).unwrap_or(u32::MAX);
    // Stamp samples when the counters are read, not when the poll was
    // claimed: a discovery in between can take seconds, and a sample stamped
    // early reads as a wrong rate.
    let sampled = unix_now().max(started);
    let out = modules::poll(
        ctx.client.as_ref(),
        &target,
        &device.hostname,
        &inventory,
        step,
        sampled,
    )
    .await
    .map_err(|e| e.to_string())?;
    for note in &out.skipped {
        tracing::debug!(device = %device.hostname, note, "skipped");
    }
    for update in out.updates {
        submit(ctx, update).await;
    }
    Ok(())
}

/// Writes a discovery to the log and returns the inventory with the port ids
/// the state machine allocated.
async fn record_discovery<C>(
    ctx: &Context<C>,
    hostname: &str,
    at: u64,
    found: Discovery,
) -> Inventory {
    let cmd = Command::Discovered {
        hostname: hostname.to_string(),
        at,
        discovery: found.clone(),
    };
    let ids: BTreeMap<u32, u64> = match ctx.cluster.propose(cmd).await {
        Ok(CommandResult::PortIds(ids)) => ids,
        Ok(other) => {
            tracing::warn!(device = hostname, result = ?other, "discovery not recorded");
            BTreeMap::new()
        }
        Err(e) => {
            tracing::warn!(device = hostname, error = %e, "discovery not recorded");
            BTreeMap::new()
        }
    };
    Inventory {
        system: found.system,
        // Without an id a port has no RRD file name yet: skip it this time.
        ports: found
            .ports
            .into_iter()
            .filter_map(|p| {
                ids.get(&p.ifindex).map(|&port_id| Port {
                    port_id,
                    ifindex: p.ifindex,
                    ifname: p.ifname,
                    ifdescr: p.ifdescr,
                })
            })
            .collect(),
        processors: found.processors,
        storages: found.storages,
    }
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
