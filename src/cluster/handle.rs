//! The node's handle on the cluster: propose commands (forwarded to the
//! leader when this node is not it), read the replicated state, see the leader.

use crate::cluster::network::bearer_value;
use crate::cluster::raft::Raft;
use crate::cluster::state::ClusterState;
use crate::cluster::types::{Command, CommandResult, NodeId};
use crate::proto::ProposeRequest;
use crate::proto::peer_client::PeerClient;
use crate::secret::Secret;
use crate::storage::SharedState;
use openraft::Instant;
use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Metadata key a follower uses to name the leader's address.
pub const LEADER_METADATA: &str = "x-raftpoll-leader";

/// How long a proposal may wait for a leader to exist and answer.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no leader elected within {0:?}; is a majority of nodes up?")]
    NoLeader(Duration),
    #[error("forwarding to leader {addr} failed: {message}")]
    Forward { addr: String, message: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot encode or decode a command: {0}")]
    Codec(String),
}

#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    shared: SharedState,
    node_id: NodeId,
    auth: Option<AsciiMetadataValue>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ClusterHandle {
    pub fn new(raft: Raft, shared: SharedState, node_id: NodeId, secret: &Secret) -> Self {
        ClusterHandle {
            inner: Arc::new(Inner {
                raft,
                shared,
                node_id,
                auth: bearer_value(secret),
                channels: Mutex::default(),
            }),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
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

    pub fn is_leader(&self) -> bool {
        self.inner.raft.is_leader()
    }

    /// Appends `cmd` to the log through the leader and returns its result once
    /// applied (on the leader).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ClusterError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        let mut last_error = None;
        while tokio::time::Instant::now() < deadline {
            match self.leader() {
                Some((id, _)) if id == self.inner.node_id => {
                    match self.inner.raft.client_write(cmd.clone()).await {
                        Ok(resp) => return Ok(resp.data),
                        Err(e) if e.forward_to_leader().is_some() => {
                            last_error = Some(ClusterError::Raft(e.to_string()));
                        }
                        Err(e) => return Err(ClusterError::Raft(e.to_string())),
                    }
                }
                Some((_, addr)) => match self.forward(&addr, &cmd).await {
                    Ok(result) => return Ok(result),
                    Err(e) => last_error = Some(e),
                },
                None => {}
            }
            // Leadership is changing: wait for the metrics to move, briefly.
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = remaining.min(Duration::from_millis(200));
            let mut metrics = self.inner.raft.metrics();
            let _ = tokio::time::timeout(wait, metrics.changed()).await;
        }
        Err(last_error.unwrap_or(ClusterError::NoLeader(PROPOSE_TIMEOUT)))
    }

    async fn forward(&self, addr: &str, cmd: &Command) -> Result<CommandResult, ClusterError> {
        let forward_err = |message: String| ClusterError::Forward {
            addr: addr.to_string(),
            message,
        };
        let channel = self.channel(addr).map_err(forward_err)?;
        let bytes = bincode::serialize(cmd).map_err(|e| ClusterError::Codec(e.to_string()))?;
        let mut request = tonic::Request::new(ProposeRequest { command: bytes });
        request.set_timeout(PROPOSE_TIMEOUT);
        if let Some(auth) = &self.inner.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        let reply = PeerClient::new(channel)
            .propose(request)
            .await
            .map_err(|s| forward_err(s.message().to_string()))?;
        bincode::deserialize(&reply.into_inner().result)
            .map_err(|e| ClusterError::Codec(e.to_string()))
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
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
                    metrics
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(&id).copied().flatten())
                        .is_some_and(|acked| acked.elapsed() < alive_within)
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
    /// Whether this node may start polls: it must see a leader. (Lease-based
    /// fencing against a partitioned leader is refined with the cluster work.)
    pub fn may_poll(&self) -> bool {
        self.inner
            .raft
            .metrics()
            .borrow_watched()
            .current_leader
            .is_some()
    }
}
