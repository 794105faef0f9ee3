//! The node's handle on the cluster: propose commands (forwarded to the
//! leader when this node is not it), read the replicated state, see the leader.

use crate::cluster::assignment::{DEFAULT_COST_MS, candidates, drain_moves, placements};
use crate::cluster::features::Features;
use crate::cluster::network::{
    LeaderContact, MAX_ENTRY_BYTES, MAX_PEER_MESSAGE_BYTES, bearer_value,
};
use crate::cluster::raft::Raft;
use crate::codec;
use crate::grpc::{ChannelCache, Dialer, GrpcError};
use crate::model::state::ClusterState;
use crate::model::types::NodeInfo;
use crate::model::types::{Command, CommandResult, NodeId};
use crate::proto::peer_client::PeerClient;
use crate::proto::{JoinRequest, ProposeRequest, RemoveRequest};
use crate::raft_types::{ClientWriteError, RaftError};
use crate::secret::Secret;
use crate::storage::SharedState;
use openraft::ChangeMembers;
use openraft::Instant;
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

/// Metadata key a follower uses to name the leader's address.
pub const LEADER_METADATA: &str = "x-raftpoll-leader";

/// How long one forwarded attempt may take before trying the (maybe new)
/// leader again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Members acknowledged this recently may take a leaving node's devices.
const DRAIN_ALIVE_WITHIN: Duration = Duration::from_secs(3);

/// How long a proposal may wait for a leader to exist and answer.
pub(crate) const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no leader elected within {0:?}; is a majority of nodes up?")]
    NoLeader(Duration),
    /// Asked to pass a command on at once, and no leader is known here.
    #[error("no leader known to this node (an election may be under way)")]
    NoLeaderKnown,
    #[error("forwarding to leader {addr} failed: {message}")]
    Forward { addr: String, message: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot encode or decode a command: {0}")]
    Codec(String),
    #[error(
        "a {kind} entry of {bytes} bytes is larger than the largest entry ({MAX_ENTRY_BYTES} bytes)"
    )]
    TooLarge { kind: &'static str, bytes: usize },
    /// An entry kind the cluster's feature level does not allow yet.
    #[error("{0}")]
    Unsupported(String),
}

/// Something only the leader can do.
enum Op {
    Propose(Command),
    Drain(NodeId),
    Join(NodeInfo),
    Remove(NodeId),
}

#[derive(Debug)]
enum Done {
    Applied(CommandResult),
    Joined { leader_id: NodeId },
    Removed,
}

enum Retry {
    /// Leadership moved: try again on the new leader.
    Yes(ClusterError),
    No(ClusterError),
}

pub fn join_request(info: &NodeInfo) -> JoinRequest {
    JoinRequest {
        node_id: info.id,
        name: info.name.clone(),
        addr: info.addr.clone(),
        groups: info.groups.clone(),
    }
}

#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    shared: SharedState,
    node_id: NodeId,
    secret: Secret,
    auth: Option<AsciiMetadataValue>,
    channels: ChannelCache,
    features: Features,
    leader_contact: LeaderContact,
}

impl ClusterHandle {
    /// `dialer` makes the channels this node forwards and joins through.
    pub fn new(
        raft: Raft,
        shared: SharedState,
        node_id: NodeId,
        secret: &Secret,
        features: Features,
        dialer: Dialer,
    ) -> Self {
        ClusterHandle {
            inner: Arc::new(Inner {
                raft,
                shared,
                node_id,
                secret: secret.clone(),
                auth: bearer_value(secret),
                channels: ChannelCache::new(dialer),
                features,
                leader_contact: LeaderContact::default(),
            }),
        }
    }

    pub fn features(&self) -> &Features {
        &self.inner.features
    }

    /// Recorded by this node's Raft service, read by [`super::membership::keep_joined`].
    pub fn leader_contact(&self) -> &LeaderContact {
        &self.inner.leader_contact
    }

    /// The cluster's feature level: on the leader, the lowest of every
    /// member's (remembered, and told to followers in its requests); on a
    /// follower, what the leader last told.
    pub fn cluster_level(&self) -> u32 {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let me = self.inner.node_id;
        if metrics.current_leader != Some(me) {
            return self.inner.features.told_cluster_level();
        }
        let members: Vec<NodeId> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let level = self.inner.features.cluster_level(members, me);
        self.inner.features.tell(level);
        level
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn secret(&self) -> &Secret {
        &self.inner.secret
    }

    /// How this node dials other nodes.
    pub fn dialer(&self) -> &Dialer {
        self.inner.channels.dialer()
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    pub fn shared(&self) -> &SharedState {
        &self.inner.shared
    }

    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        self.inner.shared.read(f)
    }

    /// The leader's id and advertised address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let id = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Hands leadership to another live voter and waits until it has it.
    pub async fn transfer_leadership(&self) -> Result<(), ClusterError> {
        let view = self.view_with(Duration::from_secs(3));
        let me = self.inner.node_id;
        let Some(to) = view
            .members
            .iter()
            .find(|m| m.id != me && m.alive && m.role == "follower")
            .map(|m| m.id)
        else {
            return Err(ClusterError::Raft(
                "no live voter to hand leadership to".into(),
            ));
        };
        self.inner
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let mut metrics = self.inner.raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.borrow_watched().current_leader == Some(me) {
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(ClusterError::Raft(format!(
                    "leadership did not move to node {to}"
                )));
            }
        }
        Ok(())
    }

    /// Whether this node has ever been part of a Raft group.
    pub fn in_cluster(&self) -> bool {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some()
    }

    /// Whether `id` is in the Raft membership (voter or learner) as this
    /// node knows it.
    pub fn is_member(&self, id: NodeId) -> bool {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.is_leader()
    }

    /// Appends `cmd` to the log through the leader and returns its result once
    /// applied (on the leader).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ClusterError> {
        self.propose_within(cmd, PROPOSE_TIMEOUT).await
    }

    /// [`Self::propose`], but no attempt to reach a leader starts after
    /// `send_within` (the first always does): for a command that is
    /// worthless, or harmful, when it is appended late (a poll claim).
    pub async fn propose_within(
        &self,
        cmd: Command,
        send_within: Duration,
    ) -> Result<CommandResult, ClusterError> {
        let bytes = codec::encoded_size(&cmd).map_err(|e| ClusterError::Codec(e.to_string()))?;
        if bytes > MAX_ENTRY_BYTES {
            return Err(ClusterError::TooLarge {
                kind: cmd.kind(),
                bytes,
            });
        }
        match self.on_leader(Op::Propose(cmd), send_within).await? {
            Done::Applied(r) => Ok(r),
            other => Err(ClusterError::Codec(format!("unexpected reply {other:?}"))),
        }
    }

    /// Adds `info` as a learner (blocking until it caught up) and records it.
    pub async fn join(&self, info: NodeInfo) -> Result<NodeId, ClusterError> {
        match self.on_leader(Op::Join(info), PROPOSE_TIMEOUT).await? {
            Done::Joined { leader_id } => Ok(leader_id),
            other => Err(ClusterError::Codec(format!("unexpected reply {other:?}"))),
        }
    }

    /// Moves a leaving node's devices to live nodes and unregisters it, in
    /// one log entry written by the leader.
    pub async fn drain(&self, id: NodeId) -> Result<(), ClusterError> {
        self.on_leader(Op::Drain(id), PROPOSE_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Removes a node from the Raft membership.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ClusterError> {
        self.on_leader(Op::Remove(id), PROPOSE_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Appends `cmd` only if this node leads, without forwarding: for
    /// decisions (assignment) that are only valid from the leader's own view.
    pub async fn propose_as_leader(&self, cmd: Command) -> Result<CommandResult, ClusterError> {
        self.inner
            .raft
            .client_write(cmd)
            .await
            .map(|r| r.data)
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Runs `op` on the leader: here if this node leads, else over gRPC.
    /// Retries across leader changes; no attempt but the first starts after
    /// `send_within`.
    async fn on_leader(&self, op: Op, send_within: Duration) -> Result<Done, ClusterError> {
        let deadline = tokio::time::Instant::now() + send_within;
        let mut last_error = None;
        let mut first = true;
        while std::mem::take(&mut first) || tokio::time::Instant::now() < deadline {
            match self.leader() {
                Some((id, _)) if id == self.inner.node_id => match self.local(&op).await {
                    Ok(done) => return Ok(done),
                    Err(Retry::Yes(e)) => last_error = Some(e),
                    Err(Retry::No(e)) => return Err(e),
                },
                Some((leader, addr)) => {
                    // A leader that hangs or is cut off answers nothing; as
                    // soon as another one is elected, go there instead.
                    let mut metrics = self.inner.raft.metrics();
                    let replaced = async {
                        while metrics.changed().await.is_ok() {
                            if metrics.borrow_watched().current_leader != Some(leader) {
                                break;
                            }
                        }
                    };
                    tracing::debug!(leader, "passing a request on to the leader");
                    tokio::select! {
                        result = self.forward(leader, &addr, &op) => match result {
                            Ok(done) => return Ok(done),
                            Err(e) => {
                                tracing::debug!(leader, error = %e, "the leader did not take a request");
                                last_error = Some(e);
                            }
                        },
                        _ = replaced => {
                            tracing::debug!(leader, "leader replaced while a request waited on it");
                            last_error = Some(ClusterError::Forward {
                                addr,
                                message: "leader replaced while waiting".into(),
                            });
                            continue;
                        }
                    }
                }
                None => {}
            }
            // Leadership is changing: wait for the metrics to move, briefly.
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = remaining.min(Duration::from_millis(200));
            let mut metrics = self.inner.raft.metrics();
            let _ = tokio::time::timeout(wait, metrics.changed()).await;
        }
        Err(last_error.unwrap_or(if send_within.is_zero() {
            ClusterError::NoLeaderKnown
        } else {
            ClusterError::NoLeader(send_within)
        }))
    }

    async fn local(&self, op: &Op) -> Result<Done, Retry> {
        let raft = &self.inner.raft;
        let classify = |e: RaftError<ClientWriteError>| {
            if e.forward_to_leader().is_some() {
                Retry::Yes(ClusterError::Raft(e.to_string()))
            } else {
                Retry::No(ClusterError::Raft(e.to_string()))
            }
        };
        match op {
            // The leader writes only entry kinds every member applies: a newer
            // kind becomes its older equivalent, or is refused, naming it.
            Op::Propose(cmd) => raft
                .client_write(
                    cmd.clone()
                        .for_level(self.cluster_level())
                        .map_err(|e| Retry::No(ClusterError::Unsupported(e.to_string())))?,
                )
                .await
                .map(|r| Done::Applied(r.data))
                .map_err(classify),
            Op::Drain(id) => {
                let alive: BTreeSet<NodeId> = self
                    .view_with(DRAIN_ALIVE_WITHIN)
                    .members
                    .into_iter()
                    .filter(|m| m.alive)
                    .map(|m| m.id)
                    .collect();
                let leaving = *id;
                let (live, devices) = self.read(|s| {
                    let others = alive.iter().filter(|n| **n != leaving);
                    (candidates(s, others), placements(s, DEFAULT_COST_MS))
                });
                let moves = drain_moves(&live, devices, leaving);
                raft.client_write(Command::Drain { id: *id, moves })
                    .await
                    .map(|r| Done::Applied(r.data))
                    .map_err(classify)
            }
            Op::Join(info) => {
                let known = self.leader_membership_addr(info.id);
                if known.as_deref() != Some(info.addr.as_str()) {
                    let node = openraft::BasicNode {
                        addr: info.addr.clone(),
                    };
                    raft.add_learner(info.id, node, true)
                        .await
                        .map_err(classify)?;
                }
                if self.read(|s| s.nodes.get(&info.id) != Some(info)) {
                    raft.client_write(Command::UpsertNode(info.clone()))
                        .await
                        .map_err(classify)?;
                }
                Ok(Done::Joined {
                    leader_id: self.inner.node_id,
                })
            }
            Op::Remove(id) => {
                let metrics = raft.metrics().borrow_watched().clone();
                let membership = metrics.membership_config.membership();
                let ids = BTreeSet::from([*id]);
                if membership.voter_ids().any(|v| v == *id) {
                    raft.change_membership(ChangeMembers::RemoveVoters(ids), false)
                        .await
                        .map_err(classify)?;
                } else if membership.get_node(id).is_some() {
                    raft.change_membership(ChangeMembers::RemoveNodes(ids), false)
                        .await
                        .map_err(classify)?;
                }
                Ok(Done::Removed)
            }
        }
    }

    fn leader_membership_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    async fn forward(&self, leader_id: NodeId, addr: &str, op: &Op) -> Result<Done, ClusterError> {
        let forward_err = |message: String| ClusterError::Forward {
            addr: addr.to_string(),
            message,
        };
        let mut client =
            PeerClient::new(self.channel(addr).map_err(|e| forward_err(e.to_string()))?)
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let status_err = |s: tonic::Status| forward_err(s.message().to_string());
        match op {
            Op::Propose(cmd) => {
                let format = self.inner.features.format_for(leader_id);
                let bytes = codec::encode_version(cmd, format)
                    .map_err(|e| ClusterError::Codec(e.to_string()))?;
                let mut request = self.request(ProposeRequest { command: bytes });
                // Per attempt: a hung leader must not hold a proposal past
                // the election that replaces it.
                request.set_timeout(ATTEMPT_TIMEOUT);
                let reply = client.propose(request).await.map_err(status_err)?;
                codec::decode(&reply.into_inner().result)
                    .map(Done::Applied)
                    .map_err(|e| ClusterError::Codec(e.to_string()))
            }
            Op::Join(info) => {
                let reply = client
                    .join(self.request(join_request(info)))
                    .await
                    .map_err(status_err)?;
                Ok(Done::Joined {
                    leader_id: reply.into_inner().leader_id,
                })
            }
            Op::Drain(id) => {
                let mut request = self.request(RemoveRequest { node_id: *id });
                request.set_timeout(ATTEMPT_TIMEOUT);
                client.drain(request).await.map_err(status_err)?;
                Ok(Done::Removed)
            }
            Op::Remove(id) => {
                let mut request = self.request(RemoveRequest { node_id: *id });
                request.set_timeout(ATTEMPT_TIMEOUT);
                client.remove(request).await.map_err(status_err)?;
                Ok(Done::Removed)
            }
        }
    }

    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(PROPOSE_TIMEOUT);
        if let Some(auth) = &self.inner.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }

    /// A channel to any node's gRPC address (cached).
    pub fn channel(&self, addr: &str) -> Result<Channel, GrpcError> {
        self.inner.channels.get(addr)
    }
}

/// A member of the Raft group as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub addr: String,
    /// `leader`, `follower` or `learner`.
    pub role: &'static str,
    pub alive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberView>,
}

impl ClusterHandle {
    /// Leader, term and members with roles. Liveness is exact on the leader
    /// (heartbeat acknowledgements within `alive_within`); a follower only
    /// vouches for itself and the leader it hears from.
    pub fn view_with(&self, alive_within: Duration) -> ClusterView {
        self.view_with_grace(alive_within, |_| None)
    }

    /// [`Self::view_with`] for a new leader: a member it has not heard from
    /// yet counts as alive until `grace_until(member)`, so it does not
    /// declare everyone dead on its first tick. (Double polls are prevented
    /// by poll claims, not by this.)
    pub fn view_with_grace(
        &self,
        alive_within: Duration,
        grace_until: impl Fn(NodeId) -> Option<std::time::Instant>,
    ) -> ClusterView {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let me = self.inner.node_id;
        let members = membership
            .nodes()
            .map(|(&id, node)| {
                let role = if Some(id) == metrics.current_leader {
                    "leader"
                } else if voters.contains(&id) {
                    "follower"
                } else {
                    "learner"
                };
                let alive = if id == me || Some(id) == metrics.current_leader {
                    true
                } else {
                    let acked = metrics
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(&id).copied().flatten())
                        .is_some_and(|acked| acked.elapsed() < alive_within);
                    acked || grace_until(id).is_some_and(|t| std::time::Instant::now() < t)
                };
                MemberView {
                    id,
                    addr: node.addr.clone(),
                    role,
                    alive,
                }
            })
            .collect();
        ClusterView {
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            members,
        }
    }

    pub fn view(&self) -> ClusterView {
        self.view_with(Duration::from_secs(3))
    }
}

impl ClusterHandle {
    /// Whether this node may start polls. A leader needs a quorum
    /// acknowledgement within the lease; a follower needs a known leader.
    /// This is only the cheap local half of fencing: every poll is also
    /// claimed through the log ([`Command::ClaimPolls`]), which a node cut
    /// off from the quorum cannot do.
    pub fn may_poll(&self, lease: Duration) -> bool {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        match metrics.current_leader {
            Some(id) if id == self.inner.node_id => {
                // The only voter is its own quorum; openraft refreshes
                // `last_quorum_acked` only from followers' answers, so a
                // cluster of one would otherwise fence itself for good.
                let mut voters = metrics.membership_config.voter_ids();
                let alone = voters.next() == Some(id) && voters.next().is_none();
                alone
                    || metrics
                        .last_quorum_acked
                        .is_some_and(|acked| acked.elapsed() < lease)
            }
            Some(_) => true,
            None => false,
        }
    }
}
