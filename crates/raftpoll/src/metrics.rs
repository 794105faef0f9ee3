//! Prometheus metrics: the families the subsystems update, the gauges read from
//! Raft, the replicated state and the RRD writer at scrape time, and the
//! `/metrics` HTTP server (`metrics_listen`).
//!
//! Hot paths only touch pre-created counters and histograms (atomics); no
//! label lookup per poll. Label values come from fixed sets (poll result,
//! module, device status) or from the cluster's node ids, so label sets stay
//! bounded whatever the number of devices.

use crate::cluster::handle::ClusterHandle;
use crate::model::types::DeviceStatus;
use crate::poller::scheduler::unix_now;
use crate::rrd::writer::RrdWriterHandle;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use openraft::async_runtime::WatchReceiver;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Content type of the OpenMetrics exposition, served when the scraper asks
/// for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format, served otherwise
/// (curl, promtool).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label values of `raftpoll_polls_total{result}`.
type ResultLabel = [(&'static str, &'static str); 1];

/// The SNMP modules whose time is measured, as `module` label values.
pub const MODULES: [&str; 6] = [
    "icmp",
    "discovery",
    "system",
    "ports",
    "processors",
    "storage",
];

/// Buckets for poll and module durations, in seconds (SNMP timeouts are
/// seconds long, a fast poll takes milliseconds).
fn duration_buckets() -> Vec<f64> {
    vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

/// Buckets for how late polls start and how long claims take, in seconds.
fn lag_buckets() -> Vec<f64> {
    vec![
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ]
}

/// The node's metrics. Cheap to clone; clones share every family.
/// [`Metrics::default`] makes a set no server serves (tests, tools).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    poll: PollMetrics,
    snmp: SnmpCounters,
    snapshots: SnapshotMetrics,
    /// Bytes this node appended to its Raft log (the log's own encoding).
    log_appended_bytes: Counter,
    /// What the scrape-time gauges read, once the node has started it.
    sources: Arc<OnceLock<Sources>>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner::new()
    }
}

/// What the scheduler records about polls.
#[derive(Clone)]
pub struct PollMetrics {
    pub up: Counter,
    pub down: Counter,
    pub timeout: Counter,
    pub fenced: Counter,
    pub not_started: Counter,
    /// Whole poll, ICMP to the last RRD update queued.
    pub duration: Histogram,
    /// One per entry of [`MODULES`].
    modules: Vec<Histogram>,
    /// From the time a poll was due to the time it started.
    pub schedule_lag: Histogram,
    /// A poll claim's round trip through the Raft log.
    pub claim_duration: Histogram,
}

impl PollMetrics {
    /// Records `took` for `module` (one of [`MODULES`]; others are ignored).
    pub fn observe_module(&self, module: &str, took: Duration) {
        if let Some(i) = MODULES.iter().position(|m| *m == module) {
            self.modules[i].observe(took.as_secs_f64());
        }
    }
}

/// What the SNMP engine counts, per transmission.
#[derive(Clone, Default)]
pub struct SnmpCounters {
    /// Messages sent, retransmissions included.
    pub requests: Counter,
    /// Retransmissions after a timeout.
    pub retries: Counter,
    /// Transmissions that got no answer within the request timeout.
    pub timeouts: Counter,
    pub sent_bytes: Counter,
    pub received_bytes: Counter,
}

/// What the state machine records about snapshots it builds and installs.
#[derive(Clone)]
pub struct SnapshotMetrics {
    pub built: Counter,
    pub duration: Histogram,
    /// Snapshots received from the leader (this node was too far behind).
    pub installed: Counter,
}

impl Default for SnapshotMetrics {
    fn default() -> Self {
        SnapshotMetrics {
            built: Counter::default(),
            installed: Counter::default(),
            duration: Histogram::new(duration_buckets()),
        }
    }
}

/// The running node's parts the scrape-time gauges read.
struct Sources {
    cluster: ClusterHandle,
    writer: RrdWriterHandle,
    lease: Duration,
    node_timeout: Duration,
    frequency: u64,
    down_retry: u64,
}

impl Inner {
    fn new() -> Self {
        let mut registry = Registry::default();
        let polls = Family::<ResultLabel, Counter>::default();
        registry.register(
            "raftpoll_polls",
            "Polls by this node, by result: up, down (the agent answered with an error \
             or ICMP failed), timeout (no SNMP answer), fenced (stopped at the claim's time budget), \
             not_started (the claim's start window passed before the first request: nothing sent)",
            polls.clone(),
        );
        let result = |r: &'static str| polls.get_or_create_owned(&[("result", r)]);
        let modules_family = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(duration_buckets())
        });
        registry.register(
            "raftpoll_poll_module_duration_seconds",
            "Time one poll spent in each module (icmp, discovery, system, ports, processors, \
             storage)",
            modules_family.clone(),
        );
        let poll = PollMetrics {
            up: result("up"),
            down: result("down"),
            timeout: result("timeout"),
            fenced: result("fenced"),
            not_started: result("not_started"),
            duration: Histogram::new(duration_buckets()),
            modules: MODULES
                .iter()
                .map(|m| modules_family.get_or_create_owned(&[("module", m)]))
                .collect(),
            schedule_lag: Histogram::new(lag_buckets()),
            claim_duration: Histogram::new(lag_buckets()),
        };
        registry.register(
            "raftpoll_poll_duration_seconds",
            "Time of one whole poll of a device",
            poll.duration.clone(),
        );
        registry.register(
            "raftpoll_poll_schedule_lag_seconds",
            "How late polls start: from the time a device was due to the start of its poll",
            poll.schedule_lag.clone(),
        );
        registry.register(
            "raftpoll_claim_duration_seconds",
            "Round trip of one poll claim through the Raft log (a claim covers every device \
             due within 100 ms)",
            poll.claim_duration.clone(),
        );
        let snmp = SnmpCounters::default();
        for (name, help, counter) in [
            (
                "raftpoll_snmp_requests",
                "SNMP messages sent, retransmissions included",
                &snmp.requests,
            ),
            (
                "raftpoll_snmp_retries",
                "SNMP retransmissions after a timeout",
                &snmp.retries,
            ),
            (
                "raftpoll_snmp_timeouts",
                "SNMP transmissions that got no answer within poller.timeout_ms",
                &snmp.timeouts,
            ),
            (
                "raftpoll_snmp_sent_bytes",
                "Bytes of SNMP messages sent",
                &snmp.sent_bytes,
            ),
            (
                "raftpoll_snmp_received_bytes",
                "Bytes of SNMP datagrams received for pending requests",
                &snmp.received_bytes,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let snapshots = SnapshotMetrics::default();
        registry.register(
            "raftpoll_raft_snapshots_built",
            "Raft snapshots this node built",
            snapshots.built.clone(),
        );
        registry.register(
            "raftpoll_raft_snapshots_installed",
            "Raft snapshots this node installed from the leader",
            snapshots.installed.clone(),
        );
        registry.register(
            "raftpoll_raft_snapshot_build_duration_seconds",
            "Time to build and persist one Raft snapshot",
            snapshots.duration.clone(),
        );
        let log_appended_bytes = Counter::default();
        registry.register(
            "raftpoll_raft_log_appended_bytes",
            "Bytes of entries this node appended to its Raft log",
            log_appended_bytes.clone(),
        );
        let sources = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(StateCollector {
            sources: sources.clone(),
        }));
        Inner {
            registry,
            poll,
            snmp,
            snapshots,
            log_appended_bytes,
            sources,
        }
    }
}

impl Metrics {
    pub fn poll(&self) -> &PollMetrics {
        &self.inner.poll
    }

    pub fn snmp(&self) -> &SnmpCounters {
        &self.inner.snmp
    }

    pub fn snapshots(&self) -> &SnapshotMetrics {
        &self.inner.snapshots
    }

    pub fn log_appended_bytes(&self) -> &Counter {
        &self.inner.log_appended_bytes
    }

    /// Hands the running node's parts to the scrape-time gauges. Only the
    /// first call counts.
    pub fn attach(&self, cluster: ClusterHandle, writer: RrdWriterHandle, timing: SourceTiming) {
        let _ = self.inner.sources.set(Sources {
            cluster,
            writer,
            lease: timing.lease,
            node_timeout: timing.node_timeout,
            frequency: timing.frequency.max(1),
            down_retry: timing.down_retry.max(1),
        });
    }

    /// The exposition in the OpenMetrics text format.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector never returns an error.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// The exposition in the Prometheus text format (0.0.4).
    pub fn prometheus_text(&self) -> String {
        to_prometheus_text(&self.openmetrics())
    }
}

/// Settings the scrape-time gauges need.
#[derive(Clone, Copy, Debug)]
pub struct SourceTiming {
    pub lease: Duration,
    pub node_timeout: Duration,
    /// `poller.frequency`, seconds.
    pub frequency: u64,
    /// `poller.down_retry`, seconds.
    pub down_retry: u64,
}

/// OpenMetrics text to Prometheus text: the two differ for this output only
/// in counter family names (`x` with samples `x_total` vs `x_total`), the
/// `# UNIT` lines and the `# EOF` marker.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    let _ = writeln!(out, "{prefix}{name}_total {tail}");
                } else {
                    let _ = writeln!(out, "{line}");
                }
            }
            None => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

/// Gauges (and counters kept by other parts) read at scrape time.
#[derive(Debug)]
struct StateCollector {
    sources: Arc<OnceLock<Sources>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

/// One family of gauges or counters with a single label.
fn labelled(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    values: &[(String, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, n) in values {
        let labels = [(label, value.as_str())];
        let sample = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*n).encode(sample)?,
            _ => ConstGauge::new(*n as i64).encode(sample)?,
        }
    }
    Ok(())
}

/// Device counts from the replicated state.
struct DeviceCounts {
    /// Owned by this node: up, down, pending.
    owned: [u64; 3],
    overdue: u64,
    /// Whole cluster: up, down, pending.
    cluster: [u64; 3],
    unassigned: u64,
}

fn status_index(s: DeviceStatus) -> usize {
    match s {
        DeviceStatus::Up => 0,
        DeviceStatus::Down => 1,
        DeviceStatus::Pending => 2,
    }
}

impl Sources {
    /// One pass over the devices under the state's read lock (counting only:
    /// applies wait for it).
    fn device_counts(&self) -> DeviceCounts {
        let me = self.cluster.node_id();
        let now = unix_now();
        // A device is overdue once its last poll began more than one and a
        // half of its intervals ago (reports reach the log every couple of
        // seconds, so an on-time device never looks overdue).
        let (up_late, down_late) = (self.frequency * 3 / 2, self.down_retry * 3 / 2);
        let mut c = DeviceCounts {
            owned: [0; 3],
            overdue: 0,
            cluster: [0; 3],
            unassigned: 0,
        };
        self.cluster.shared().for_each_device(|d| {
            let i = status_index(d.status);
            c.cluster[i] += 1;
            match d.owner {
                None => c.unassigned += 1,
                Some(owner) if owner == me => {
                    c.owned[i] += 1;
                    let late = if d.status == DeviceStatus::Down {
                        down_late
                    } else {
                        up_late
                    };
                    if d.last_polled.is_some_and(|t| now.saturating_sub(t) > late) {
                        c.overdue += 1;
                    }
                }
                Some(_) => {}
            }
        });
        c
    }
}

const STATUSES: [&str; 3] = ["up", "down", "pending"];

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(src) = self.sources.get() else {
            return Ok(());
        };
        let enc = &mut enc;

        // Devices.
        let d = src.device_counts();
        let by_status = |counts: [u64; 3]| -> Vec<(String, u64)> {
            STATUSES
                .iter()
                .zip(counts)
                .map(|(s, n)| (s.to_string(), n))
                .collect()
        };
        labelled(
            enc,
            "raftpoll_devices",
            "Devices this node owns, by status (up, down, pending: not polled yet)",
            MetricType::Gauge,
            "status",
            &by_status(d.owned),
        )?;
        gauge(
            enc,
            "raftpoll_devices_overdue",
            "Devices this node owns whose last poll began more than 1.5 intervals ago \
             (poller.frequency, or poller.down_retry for a down device)",
            d.overdue as i64,
        )?;
        labelled(
            enc,
            "raftpoll_cluster_devices",
            "Devices in the whole cluster, by status (from the replicated state)",
            MetricType::Gauge,
            "status",
            &by_status(d.cluster),
        )?;
        gauge(
            enc,
            "raftpoll_cluster_devices_unassigned",
            "Devices no node owns (no live node serves their poller group)",
            d.unassigned as i64,
        )?;
        gauge(
            enc,
            "raftpoll_fenced",
            "1 while this node may not start polls (no quorum-backed leader within \
             cluster.lease_ms)",
            i64::from(!src.cluster.may_poll(src.lease)),
        )?;

        // Raft.
        let m = src.cluster.raft().metrics().borrow_watched().clone();
        let me = src.cluster.node_id();
        gauge(
            enc,
            "raftpoll_raft_term",
            "Current Raft term",
            m.current_term,
        )?;
        gauge(
            enc,
            "raftpoll_raft_is_leader",
            "1 on the Raft leader, 0 elsewhere",
            i64::from(m.current_leader == Some(me)),
        )?;
        gauge(
            enc,
            "raftpoll_raft_last_log_index",
            "Index of the last entry in this node's Raft log",
            m.last_log_index.unwrap_or(0),
        )?;
        gauge(
            enc,
            "raftpoll_raft_applied_index",
            "Index of the last Raft entry applied to this node's state",
            m.last_applied.map(|l| l.index).unwrap_or(0),
        )?;
        gauge(
            enc,
            "raftpoll_raft_snapshot_index",
            "Last log index covered by this node's latest snapshot",
            m.snapshot.map(|l| l.index).unwrap_or(0),
        )?;
        let last = m.last_log_index.unwrap_or(0);
        let lag: Vec<(String, u64)> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != me)
                    .map(|(id, matched)| {
                        let at = matched.as_ref().map(|l| l.index).unwrap_or(0);
                        (id.to_string(), last.saturating_sub(at))
                    })
                    .collect()
            })
            .unwrap_or_default();
        labelled(
            enc,
            "raftpoll_raft_replication_lag_entries",
            "On the leader: log entries each follower or learner (label: node id) has yet to \
             acknowledge",
            MetricType::Gauge,
            "follower",
            &lag,
        )?;
        let view = src.cluster.view_with(src.node_timeout);
        gauge(
            enc,
            "raftpoll_members",
            "Members of the Raft group (voters and learners)",
            view.members.len() as i64,
        )?;
        gauge(
            enc,
            "raftpoll_members_alive",
            "Members heard from within cluster.node_timeout_ms (exact on the leader; a follower \
             vouches for itself and the leader only)",
            view.members.iter().filter(|m| m.alive).count() as i64,
        )?;

        // RRD writer.
        let w = src.writer.stats();
        counter(
            enc,
            "raftpoll_rrd_updates_sent",
            "RRD updates rrdcached accepted",
            w.written,
        )?;
        labelled(
            enc,
            "raftpoll_rrd_updates_dropped",
            "RRD updates dropped, by reason: duplicate (second update of a file in one second), \
             stale (older than the last one sent), spool_full (spool at rrd.spool_max_mb)",
            MetricType::Counter,
            "reason",
            &[
                ("duplicate".to_string(), w.dropped_duplicate),
                ("stale".to_string(), w.dropped_stale),
                ("spool_full".to_string(), w.dropped_spool_full),
            ],
        )?;
        counter(
            enc,
            "raftpoll_rrd_errors",
            "RRD failures: failed connects, broken connections, updates rrdcached refused, spool \
             I/O errors",
            w.errors,
        )?;
        gauge(
            enc,
            "raftpoll_rrd_queued_updates",
            "RRD updates accepted and not yet written or dropped",
            w.queued,
        )?;
        gauge(
            enc,
            "raftpoll_rrdcached_connected",
            "1 while the writer holds a working connection to rrdcached",
            i64::from(w.connected),
        )?;
        gauge(
            enc,
            "raftpoll_rrd_spool_bytes",
            "Size of the RRD spool's files on disk",
            w.spool_bytes,
        )?;
        gauge(
            enc,
            "raftpoll_rrd_spool_records",
            "RRD updates in the spool that rrdcached has not confirmed yet",
            w.spool_records,
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until `stop` changes. Open
/// connections are closed then too.
pub fn serve(
    metrics: Metrics,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let metrics = metrics.clone();
                        conns.spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let metrics = metrics.clone();
                                async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &req)) }
                            });
                            let io = hyper_util::rt::TokioIo::new(stream);
                            if let Err(e) = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await
                            {
                                tracing::debug!(error = %e, "metrics connection");
                            }
                        });
                    }
                    // Out of file descriptors and the like: say so, go on.
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics_listen: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    })
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &'static str, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
        resp
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        );
    }
    let wants_openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        reply(StatusCode::OK, OPENMETRICS, metrics.openmetrics())
    } else {
        reply(StatusCode::OK, PROMETHEUS_TEXT, metrics.prometheus_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_families_with_total() {
        let m = Metrics::default();
        m.poll().up.inc();
        m.snmp().requests.inc_by(3);
        m.poll().duration.observe(0.2);
        let om = m.openmetrics();
        assert!(om.contains("# TYPE raftpoll_polls counter"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = m.prometheus_text();
        assert!(
            text.contains("# TYPE raftpoll_polls_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP raftpoll_snmp_requests_total SNMP"),
            "{text}"
        );
        assert!(text.contains("raftpoll_snmp_requests_total 3\n"), "{text}");
        assert!(
            text.contains("raftpoll_polls_total{result=\"up\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE raftpoll_poll_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"), "{text}");
        // Pre-created label values are exposed before they are first used.
        assert!(
            text.contains("raftpoll_polls_total{result=\"fenced\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("raftpoll_poll_module_duration_seconds_count{module=\"storage\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn module_timings_go_to_their_label() {
        let m = Metrics::default();
        m.poll().observe_module("ports", Duration::from_millis(30));
        m.poll()
            .observe_module("no-such-module", Duration::from_secs(1));
        let text = m.prometheus_text();
        assert!(
            text.contains("raftpoll_poll_module_duration_seconds_count{module=\"ports\"} 1\n"),
            "{text}"
        );
    }
}
