//! The claim races, run deterministically: the scheduler against a cluster
//! that applies entries through the real state machine in the order the test
//! chooses, and answers a proposal only when the test says so. Time is
//! tokio's, paused: it moves only while every task waits, so a claim's
//! timeout and a poll's start window pass exactly, however loaded the machine.

use super::*;
use crate::model::types::NewDevice;
use crate::secret::Secret;
use crate::snmp::FakeSnmpClient;
use crate::snmp::credentials::SnmpCredentials;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ME: NodeId = 1;
const OTHER: NodeId = 2;
const HOST: &str = "sw1";
/// The unix time at which every test starts, ms.
const START_MS: u64 = 1_800_000_000_000;
/// The chaos suite's: a 1.4 s budget and start window, a 2.9 s claim gap,
/// and a claim's answer awaited for the budget (the lease is longer).
const TIMING: Timing = Timing {
    frequency: 3,
    down_retry: 3,
};
const LEASE: Duration = Duration::from_millis(1500);
/// Longer than anything the scheduler waits for here (virtual time).
const PATIENCE: Duration = Duration::from_secs(30);

/// A command the scheduler proposed, waiting for the test's answer.
struct Proposal {
    cmd: Command,
    answer: oneshot::Sender<Result<CommandResult, ClusterError>>,
}

#[derive(Clone)]
struct FakeCluster {
    inner: Arc<Log>,
}

struct Log {
    level: u32,
    state: Mutex<ClusterState>,
    changes: watch::Sender<u64>,
    owner_changes: AtomicU64,
    proposals: mpsc::UnboundedSender<Proposal>,
    /// Tokio's clock at `START_MS`.
    epoch: Instant,
}

impl FakeCluster {
    /// Applies `cmd` as this node's state machine does, then tells the
    /// scheduler, as the storage layer does.
    fn apply(&self, cmd: &Command) -> CommandResult {
        let log = &self.inner;
        if cmd.changes_owners() {
            log.owner_changes.fetch_add(1, Ordering::AcqRel);
        }
        let result = log
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(cmd);
        log.changes.send_modify(|v| *v = v.wrapping_add(1));
        result
    }
}

impl PollCluster for FakeCluster {
    fn node_id(&self) -> NodeId {
        ME
    }

    fn cluster_level(&self) -> u32 {
        self.inner.level
    }

    fn may_poll(&self, _lease: Duration) -> bool {
        true
    }

    fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.inner.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn scan_devices<T>(&self, mut f: impl FnMut(&Device) -> Option<T>) -> Vec<T> {
        self.read(|s| s.devices.values().filter_map(|d| f(d)).collect())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn owner_changes(&self) -> u64 {
        self.inner.owner_changes.load(Ordering::Acquire)
    }

    /// Handed to the test, which applies it (or not) and answers (or not).
    fn propose_within(
        &self,
        cmd: Command,
        _send_within: Duration,
    ) -> impl Future<Output = Result<CommandResult, ClusterError>> + Send {
        let (answer, answered) = oneshot::channel();
        let sent = self.inner.proposals.send(Proposal { cmd, answer });
        async move {
            let lost = || ClusterError::Raft("the test dropped the proposal".into());
            sent.map_err(|_| lost())?;
            answered.await.map_err(|_| lost())?
        }
    }

    fn unix_now_ms(&self) -> u64 {
        START_MS + (Instant::now() - self.inner.epoch).as_millis() as u64
    }
}

/// Node `ME`'s scheduler, owning `HOST`, which is due at once.
struct Node {
    cluster: FakeCluster,
    proposals: mpsc::UnboundedReceiver<Proposal>,
    snmp: Arc<FakeSnmpClient>,
    reports: ReportBuffer,
    _rrd: mpsc::Receiver<RrdUpdate>,
    shutdown: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
}

impl Node {
    fn start(level: u32) -> Node {
        let (proposals_tx, proposals) = mpsc::unbounded_channel();
        let cluster = FakeCluster {
            inner: Arc::new(Log {
                level,
                state: Mutex::default(),
                changes: watch::Sender::new(0),
                owner_changes: AtomicU64::new(0),
                proposals: proposals_tx,
                epoch: Instant::now(),
            }),
        };
        cluster.apply(&Command::AddDevice(NewDevice {
            hostname: HOST.into(),
            address: "192.0.2.1".into(),
            port: 161,
            credentials: SnmpCredentials::V2c {
                community: Secret::new("public"),
            },
            group: 0,
        }));
        cluster.apply(&Command::Assign {
            moves: vec![(HOST.into(), Some(ME))],
        });
        // Up, and last polled a minute ago: due now.
        cluster.apply(&Command::PollReports {
            node: ME,
            reports: vec![PollReport {
                hostname: HOST.into(),
                polled_at: START_MS / 1000 - 60,
                duration_ms: 10,
                status: DeviceStatus::Up,
                reason: None,
            }],
        });
        let snmp = Arc::new(FakeSnmpClient::new());
        snmp.set(
            "1.3.6.1.2.1.1.3.0".parse().expect("oid"),
            crate::snmp::SnmpValue::TimeTicks(123_456),
        );
        let (writer, rrd) = RrdWriterHandle::to_channel(1024);
        let reports = ReportBuffer::default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let scheduler = tokio::spawn(run(
            cluster.clone(),
            snmp.clone(),
            writer,
            reports.clone(),
            SchedulerConfig {
                timing: TIMING,
                discovery_frequency: 86_400,
                max_concurrent_polls: 4,
                lease: LEASE,
            },
            PollExtras::default(),
            shutdown_rx,
        ));
        Node {
            cluster,
            proposals,
            snmp,
            reports,
            _rrd: rrd,
            shutdown,
            scheduler,
        }
    }

    /// The next command the scheduler proposes.
    async fn proposed(&mut self, what: &str) -> Proposal {
        tokio::time::timeout(PATIENCE, self.proposals.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} proposed within {PATIENCE:?}"))
            .expect("the scheduler runs")
    }

    /// The scheduler's first claim, of `HOST` alone and plain, and its time.
    async fn first_claim(&mut self) -> (u64, Proposal) {
        let claim = self.proposed("claim").await;
        let Command::ClaimPolls {
            at_ms, hostnames, ..
        } = &claim.cmd
        else {
            panic!("expected a plain claim, got {}", claim.cmd);
        };
        assert_eq!(hostnames, &[HOST]);
        (*at_ms, claim)
    }

    /// Commits `proposal` and answers it with what the state machine did.
    fn commit(&self, proposal: Proposal) -> CommandResult {
        let result = self.cluster.apply(&proposal.cmd);
        let _ = proposal.answer.send(Ok(result.clone()));
        result
    }

    /// SNMP requests sent to the agent so far.
    fn requests(&self) -> usize {
        self.snmp.get_calls() + self.snmp.walk_calls()
    }

    /// Stops the scheduler, which first lets started polls finish.
    async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(PATIENCE, &mut self.scheduler)
            .await
            .expect("the scheduler stops")
            .expect("the scheduler does not panic");
    }
}

fn claimed(hosts: &[&str]) -> CommandResult {
    CommandResult::Claimed(hosts.iter().map(|h| h.to_string()).collect())
}

/// Waits for the poll to begin, commits what it proposes, stops the node
/// and checks that the poll sent requests. A poll that began proposes its
/// discovery (the device was never discovered) before polling: this is its
/// first sign of life.
async fn assert_polled(node: &mut Node, what: &str) {
    let discovery = node.proposed(what).await;
    assert!(
        matches!(&discovery.cmd, Command::Discovered { hostname, .. } if hostname == HOST),
        "expected the poll's discovery, got {}",
        discovery.cmd
    );
    node.commit(discovery);
    node.stop().await;
    assert!(node.requests() > 0, "the device was not polled");
}

#[tokio::test(start_paused = true)]
async fn a_device_moved_away_after_its_grant_is_still_polled_under_it() {
    let mut node = Node::start(CLAIM_AGAIN_LEVEL);
    let (_, claim) = node.first_claim().await;
    // The log grants the claim, then a rebalance moves the device away;
    // the grant reaches the scheduler only after the move was applied. The
    // new owner is refused a claim for the gap: this is the interval's poll.
    let granted = node.cluster.apply(&claim.cmd);
    assert_eq!(granted, claimed(&[HOST]));
    node.cluster.apply(&Command::Assign {
        moves: vec![(HOST.into(), Some(OTHER))],
    });
    let _ = claim.answer.send(Ok(granted));

    assert_polled(&mut node, "discovery from the poll under the grant").await;
    assert_eq!(node.reports.len(), 1, "the poll was not reported");
}

/// Grants the node's first claim in the log but leaves it unanswered, so
/// the answer comes too late to poll under: the wait for it ends with the
/// start window, after which the node finds its claim granted. Returns the
/// claim's time, and the claim, which the caller keeps unanswered.
async fn grant_too_late(node: &mut Node) -> (u64, Proposal) {
    let (at_ms, first) = node.first_claim().await;
    assert_eq!(node.cluster.apply(&first.cmd), claimed(&[HOST]));
    (at_ms, first)
}

#[tokio::test(start_paused = true)]
async fn a_grant_too_late_to_poll_under_is_claimed_again_at_once_and_polled() {
    let mut node = Node::start(CLAIM_AGAIN_LEVEL);
    let (first_at_ms, unanswered) = grant_too_late(&mut node).await;

    let again = node.proposed("second claim").await;
    assert_eq!(node.requests(), 0, "a poll began after its start window");
    match &again.cmd {
        Command::ClaimPollsAgain {
            node: ME,
            at_ms,
            hostnames,
            abandoned,
            ..
        } => {
            assert_eq!(hostnames, &[HOST]);
            assert_eq!(abandoned, &[(0, first_at_ms)]);
            // About the retry pause after the window closed, well within the gap.
            assert!(
                *at_ms > first_at_ms && *at_ms < first_at_ms + ClaimTimes::widest_gap_ms(TIMING),
                "claimed again at +{} ms",
                at_ms - first_at_ms
            );
        }
        other => panic!("expected the abandoned claim named, got {other}"),
    }
    assert_eq!(
        node.commit(again),
        claimed(&[HOST]),
        "the log refused to replace the abandoned claim"
    );

    assert_polled(&mut node, "discovery from the poll").await;
    drop(unanswered);
    assert_eq!(node.reports.len(), 1, "the poll was not reported");
}

#[tokio::test(start_paused = true)]
async fn below_claim_again_level_a_grant_too_late_to_poll_under_waits_out_the_claim_gap() {
    let mut node = Node::start(CLAIM_AGAIN_LEVEL - 1);
    let (first_at_ms, unanswered) = grant_too_late(&mut node).await;

    let again = node.proposed("second claim").await;
    assert_eq!(node.requests(), 0, "a poll began after its start window");
    match &again.cmd {
        Command::ClaimPolls { at_ms, .. } => assert!(
            *at_ms >= first_at_ms + ClaimTimes::widest_gap_ms(TIMING),
            "claimed again at +{} ms, within the gap",
            at_ms - first_at_ms
        ),
        other => panic!("expected a plain claim, got {other}"),
    }
    assert_eq!(node.commit(again), claimed(&[HOST]));

    assert_polled(&mut node, "discovery from the poll").await;
    drop(unanswered);
}

#[tokio::test(start_paused = true)]
async fn reports_ride_with_the_next_claim_and_wait_for_another_if_it_is_lost() {
    let mut node = Node::start(BATCH_LEVEL);
    let (_, first) = node.first_claim().await;
    node.commit(first);
    let discovery = node.proposed("the poll's discovery").await;
    node.commit(discovery);

    let carries_the_report = |cmd: &Command| {
        matches!(
            &cmd,
            Command::Batch(parts) if matches!(
                &parts[..],
                [Command::PollReports { reports, .. }, Command::ClaimPolls { hostnames, .. }]
                    if reports.len() == 1 && reports[0].hostname == HOST && hostnames == &[HOST]
            )
        )
    };
    let next = node.proposed("the next interval's claim").await;
    assert!(carries_the_report(&next.cmd), "got {}", next.cmd);
    assert!(node.reports.is_empty(), "the report is in the claim");
    // No answer: the report may not be in the log, so it waits again.
    drop(next);
    let retry = node.proposed("the claim after the lost one").await;
    assert!(carries_the_report(&retry.cmd), "got {}", retry.cmd);
    assert_eq!(
        node.commit(retry),
        CommandResult::Batch(vec![CommandResult::Ok, claimed(&[HOST])])
    );
    node.stop().await;
}
