//! Real Raft nodes (openraft + sled + the gRPC network) in one process on
//! loopback: replication to three voters, secret enforcement, restart, and a
//! follower brought back through a snapshot.

mod common;

use common::open_when_unlocked;
use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use raftpoll::cluster::features::{APPEND_STREAM_LEVEL, FEATURE_LEVEL, Features};
use raftpoll::cluster::network::{
    GrpcNetworkFactory, LeaderContact, bearer_value, raft_service_with,
};
use raftpoll::cluster::raft::{Raft, raft_config};
use raftpoll::codec::{FORMAT_VERSION, decode, encode_version};
use raftpoll::model::types::{Command, CommandResult, NewDevice, NodeId};
use raftpoll::proto::RaftRequest;
use raftpoll::proto::raft_client::RaftClient;
use raftpoll::raft_types::TypeConfig;
use raftpoll::secret::Secret;
use raftpoll::snmp::credentials::SnmpCredentials;
use raftpoll::storage::SharedState;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

const WAIT: Option<Duration> = Some(Duration::from_secs(15));

struct TestNode {
    id: NodeId,
    addr: String,
    raft: Raft,
    shared: SharedState,
    stop: Option<watch::Sender<bool>>,
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
        TestNode::start_at_level(id, dir, secret, listener, FEATURE_LEVEL).await
    }

    /// [`TestNode::start`] held at feature `level`, as an older version.
    async fn start_at_level(
        id: NodeId,
        dir: &Path,
        secret: &str,
        listener: Option<tokio::net::TcpListener>,
        level: u32,
    ) -> TestNode {
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = listener.local_addr().unwrap().to_string();
        let (_store, log, sm) = open_when_unlocked(dir).await.unwrap();
        let shared = sm.shared();
        let config = raft_config(100, 600, 900).unwrap();
        let network =
            GrpcNetworkFactory::new(Secret::new(secret)).with_features(Features::new(level), id);
        let raft = Raft::new(id, config, network, log, sm).await.unwrap();
        let (stop, stopped) = watch::channel(false);
        let service = raft_service_with(
            raft.clone(),
            Secret::new(secret),
            Features::new(level),
            LeaderContact::default(),
            stopped.clone(),
        );
        let server = tokio::spawn(async move {
            let mut stopped = stopped;
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = stopped.wait_for(|s| *s).await;
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
            let _ = stop.send(true);
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

/// Three voters on `dirs[0..3]` (ids 1–3), initialized; their leader's id
/// once it can take writes.
async fn three_voters(dirs: &[TempDir]) -> (Vec<TestNode>, NodeId) {
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().take(3).enumerate() {
        nodes.push(TestNode::start(i as u64 + 1, dir.path(), "s3cret", None).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(|n| (n.id, n.node())).collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader_id = writable_leader(&nodes).await.id;
    (nodes, leader_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_replicate_and_strangers_are_refused() {
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new().unwrap()).collect();
    let (nodes, leader_id) = three_voters(&dirs).await;
    let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
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
        cluster_level: 0,
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
            cluster_level: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = client
        .append_entries_stream(tokio_stream::iter(Vec::<RaftRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // On the AppendEntries stream, a follower answers the leader's heartbeat
    // in order, then ends the stream on a request for another node id.
    let follower = nodes.iter().find(|n| n.id != leader_id).unwrap();
    let vote = leader.raft.metrics().borrow_watched().vote;
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let message = |target| RaftRequest {
        target,
        payload: encode_version(&heartbeat, FORMAT_VERSION).unwrap(),
        cluster_level: 0,
    };
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
    request.metadata_mut().insert(
        "authorization",
        bearer_value(&Secret::new("s3cret")).unwrap(),
    );
    let mut follower_client = RaftClient::connect(format!("http://{}", follower.addr))
        .await
        .unwrap();
    let mut replies = follower_client
        .append_entries_stream(request)
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        requests.send(message(follower.id)).await.unwrap();
        let reply = replies
            .message()
            .await
            .unwrap()
            .expect("a reply per request");
        let response: AppendEntriesResponse<TypeConfig> = decode(&reply.payload).unwrap();
        assert!(response.is_success(), "{response:?}");
    }
    requests.send(message(leader_id)).await.unwrap();
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

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
    let (mut nodes, leader_id) = three_voters(&dirs).await;
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

/// A node at a level before the AppendEntries stream (an older version)
/// refuses it as unimplemented, and a current leader replicates to it with
/// calls: also when the node ran the current version before (a rollback),
/// so the leader first tries the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_follower_is_replicated_to_with_calls() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let (mut nodes, leader_id) = three_voters(&dirs).await;
    let write_and_wait = |nodes: &[TestNode], hostname: String| {
        let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
        let raft = leader.raft.clone();
        let followers: Vec<Raft> = nodes.iter().map(|n| n.raft.clone()).collect();
        async move {
            let resp = raft.client_write(add_device(&hostname)).await.unwrap();
            for r in followers {
                r.wait(WAIT)
                    .applied_index_at_least(Some(resp.log_id.index), "device applied everywhere")
                    .await
                    .unwrap();
            }
        }
    };
    for i in 0..5 {
        write_and_wait(&nodes, format!("sw{i}")).await;
    }

    // A follower comes back on its address at the older level.
    let older = APPEND_STREAM_LEVEL - 1;
    let back = nodes.iter().position(|n| n.id != leader_id).unwrap();
    let follower = nodes.remove(back);
    let (id, addr) = (follower.id, follower.addr.clone());
    follower.stop().await;
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    nodes.push(
        TestNode::start_at_level(id, dirs[back].path(), "s3cret", Some(listener), older).await,
    );
    for i in 5..20 {
        write_and_wait(&nodes, format!("sw{i}")).await;
    }
    for n in &nodes {
        assert_eq!(n.shared.read(|s| s.devices.len()), 20, "node {}", n.id);
    }

    let mut request = tonic::Request::new(tokio_stream::iter(Vec::<RaftRequest>::new()));
    request.metadata_mut().insert(
        "authorization",
        bearer_value(&Secret::new("s3cret")).unwrap(),
    );
    let mut client = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let status = client.append_entries_stream(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    for n in nodes {
        n.stop().await;
    }
}
