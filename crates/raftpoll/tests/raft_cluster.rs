//! Real Raft nodes (openraft + sled + the gRPC network) in one process on
//! loopback: replication to three voters, secret enforcement, restart, and a
//! follower brought back through a snapshot.

mod common;

use common::open_when_unlocked;
use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use raftpoll::cluster::network::{GrpcNetworkFactory, bearer_value, raft_service};
use raftpoll::cluster::raft::{Raft, raft_config};
use raftpoll::model::types::{Command, CommandResult, NewDevice, NodeId};
use raftpoll::proto::RaftRequest;
use raftpoll::proto::raft_client::RaftClient;
use raftpoll::secret::Secret;
use raftpoll::snmp::credentials::SnmpCredentials;
use raftpoll::storage::SharedState;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

const WAIT: Option<Duration> = Some(Duration::from_secs(15));

struct TestNode {
    id: NodeId,
    addr: String,
    raft: Raft,
    shared: SharedState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestNode {
    /// Opens the storage in `dir`, starts Raft and serves its gRPC service on
    /// a fresh loopback port (or `listener` when restarting on the same one).
    async fn start(
        id: NodeId,
        dir: &Path,
        secret: &str,
        listener: Option<tokio::net::TcpListener>,
    ) -> TestNode {
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = listener.local_addr().unwrap().to_string();
        let (_store, log, sm) = open_when_unlocked(dir).await.unwrap();
        let shared = sm.shared();
        let config = raft_config(100, 600, 900).unwrap();
        let network = GrpcNetworkFactory::new(Secret::new(secret));
        let raft = Raft::new(id, config, network, log, sm).await.unwrap();
        let service = raft_service(raft.clone(), Secret::new(secret));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestNode {
            id,
            addr,
            raft,
            shared,
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn node(&self) -> BasicNode {
        BasicNode::new(self.addr.clone())
    }

    /// Stops Raft and the server; the storage is closed once this returns.
    async fn stop(mut self) {
        self.raft.shutdown().await.unwrap();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

fn add_device(hostname: &str) -> Command {
    Command::AddDevice(NewDevice {
        hostname: hostname.into(),
        address: "127.0.0.1".into(),
        port: 161,
        credentials: SnmpCredentials::V2c {
            community: Secret::new("public"),
        },
        group: 0,
    })
}

async fn leader_of(node: &TestNode) -> NodeId {
    let m = node
        .raft
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
        .await
        .unwrap();
    m.current_leader.unwrap()
}

/// A new leader refuses writes (lease not yet valid) until a quorum has
/// acknowledged it; wait for that.
async fn writable_leader(nodes: &[TestNode]) -> &TestNode {
    let id = leader_of(&nodes[0]).await;
    let leader = nodes.iter().find(|n| n.id == id).unwrap();
    leader
        .raft
        .wait(WAIT)
        .leader_with_quorum_acked(None, "leader acknowledged by a quorum")
        .await
        .unwrap();
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_replicate_and_strangers_are_refused() {
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().take(3).enumerate() {
        nodes.push(TestNode::start(i as u64 + 1, dir.path(), "s3cret", None).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(|n| (n.id, n.node())).collect();
    nodes[0].raft.initialize(members).await.unwrap();

    let leader = writable_leader(&nodes).await;
    let leader_id = leader.id;
    let resp = leader.raft.client_write(add_device("sw1")).await.unwrap();
    assert_eq!(resp.data, CommandResult::Ok);
    let index = resp.log_id.index;

    for n in &nodes {
        n.raft
            .wait(WAIT)
            .applied_index_at_least(Some(index), "device applied everywhere")
            .await
            .unwrap();
        assert!(
            n.shared.read(|s| s.devices.contains_key("sw1")),
            "node {}",
            n.id
        );
    }

    // A caller without the right secret is refused before reaching Raft.
    let mut client = RaftClient::connect(format!("http://{}", leader.addr))
        .await
        .unwrap();
    let mut req = tonic::Request::new(RaftRequest {
        target: leader_id,
        payload: vec![],
    });
    req.metadata_mut().insert(
        "authorization",
        bearer_value(&Secret::new("wrong")).unwrap(),
    );
    let status = client.vote(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "missing or wrong cluster secret");
    let status = client
        .append_entries(RaftRequest {
            target: leader_id,
            payload: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A node holding another secret cannot be replicated to: the leader's
    // appends are refused, so it never applies anything.
    let stranger = TestNode::start(4, dirs[3].path(), "other-secret", None).await;
    leader
        .raft
        .add_learner(stranger.id, stranger.node(), false)
        .await
        .unwrap();
    let never = stranger
        .raft
        .wait(Some(Duration::from_secs(2)))
        .applied_index_at_least(Some(1), "stranger applies nothing")
        .await;
    assert!(never.is_err(), "stranger got replicated: {never:?}");
    assert!(stranger.shared.read(|s| s.devices.is_empty()));

    // The cluster still commits with the stranger in its membership as a learner.
    let resp = leader.raft.client_write(add_device("sw2")).await.unwrap();
    for n in &nodes {
        n.raft
            .wait(WAIT)
            .applied_index_at_least(Some(resp.log_id.index), "second device applied")
            .await
            .unwrap();
        assert_eq!(n.shared.read(|s| s.devices.len()), 2);
    }

    stranger.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_state_survives_restart() {
    let dir = TempDir::new().unwrap();
    let node = TestNode::start(1, dir.path(), "s3cret", None).await;
    let members = BTreeMap::from([(1, node.node())]);
    node.raft.initialize(members).await.unwrap();
    writable_leader(std::slice::from_ref(&node)).await;
    let mut changes = node.shared.subscribe();
    let resp = node.raft.client_write(add_device("sw1")).await.unwrap();
    let index = resp.log_id.index;
    assert!(
        changes.has_changed().unwrap(),
        "subscribers are woken by applies"
    );
    changes.borrow_and_update();
    let addr = node.addr.clone();
    node.stop().await;

    // Same directory, same address: everything comes back from disk.
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let node = TestNode::start(1, dir.path(), "s3cret", Some(listener)).await;
    node.raft
        .wait(WAIT)
        .applied_index_at_least(Some(index), "committed log re-applied")
        .await
        .unwrap();
    assert!(node.shared.read(|s| s.devices.contains_key("sw1")));
    assert_eq!(writable_leader(std::slice::from_ref(&node)).await.id, 1);
    let resp = node.raft.client_write(add_device("sw1")).await.unwrap();
    assert!(
        matches!(resp.data, CommandResult::Rejected(_)),
        "{:?}",
        resp.data
    );
    node.stop().await;
}

/// A follower that was down while the leader compacted its log past the
/// follower's last entry can only come back through a snapshot: it gets one
/// over the real gRPC path (the versioned snapshot encoding), installs it and
/// then follows the log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_a_compacted_log_catches_up_through_a_snapshot() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(TestNode::start(i as u64 + 1, dir.path(), "s3cret", None).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(|n| (n.id, n.node())).collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader_id = writable_leader(&nodes).await.id;
    let behind = nodes.iter().position(|n| n.id != leader_id).unwrap();
    let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
    let resp = leader
        .raft
        .client_write(add_device("before"))
        .await
        .unwrap();
    nodes[behind]
        .raft
        .wait(WAIT)
        .applied_index_at_least(Some(resp.log_id.index), "first device on every node")
        .await
        .unwrap();
    let follower = nodes.remove(behind);
    let (follower_id, follower_addr) = (follower.id, follower.addr.clone());
    let follower_last = follower.raft.metrics().borrow_watched().last_log_index;
    follower.stop().await;

    // The others go on, snapshot and drop their log up to the snapshot.
    let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
    let mut last = resp.log_id.index;
    for i in 0..50 {
        let resp = leader
            .raft
            .client_write(add_device(&format!("sw{i}")))
            .await
            .unwrap();
        assert_eq!(resp.data, CommandResult::Ok);
        last = resp.log_id.index;
    }
    leader.raft.trigger().snapshot().await.unwrap();
    let m = leader
        .raft
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.as_ref().is_some_and(|s| s.index >= last),
            "the leader's snapshot of every device",
        )
        .await
        .unwrap();
    let snapshot_index = m.snapshot.unwrap().index;
    leader
        .raft
        .trigger()
        .purge_log(snapshot_index)
        .await
        .unwrap();
    let m = leader
        .raft
        .wait(WAIT)
        .metrics(
            |m| m.purged.as_ref().is_some_and(|p| p.index == snapshot_index),
            "the leader's log purged up to its snapshot",
        )
        .await
        .unwrap();
    let purged = m.purged.unwrap().index;
    assert!(
        follower_last.is_some_and(|l| l < purged),
        "the follower's last entry ({follower_last:?}) must be gone from the leader's log (purged up to {purged})"
    );

    // Back on its address: only a snapshot can bring it to the others' state.
    let listener = tokio::net::TcpListener::bind(&follower_addr).await.unwrap();
    let follower =
        TestNode::start(follower_id, dirs[behind].path(), "s3cret", Some(listener)).await;
    let m = follower
        .raft
        .wait(WAIT)
        .metrics(
            |m| {
                m.snapshot
                    .as_ref()
                    .is_some_and(|s| s.index >= snapshot_index)
            },
            "the follower to install the leader's snapshot",
        )
        .await
        .unwrap();
    assert!(m.last_applied.is_some_and(|a| a.index >= snapshot_index));
    assert_eq!(follower.shared.read(|s| s.devices.len()), 51);
    assert!(follower.shared.read(|s| s.devices.contains_key("sw49")));

    // And it follows the log again after the snapshot.
    let resp = leader.raft.client_write(add_device("after")).await.unwrap();
    follower
        .raft
        .wait(WAIT)
        .applied_index_at_least(Some(resp.log_id.index), "an entry after the snapshot")
        .await
        .unwrap();
    assert!(follower.shared.read(|s| s.devices.contains_key("after")));

    follower.stop().await;
    for n in nodes {
        n.stop().await;
    }
}
