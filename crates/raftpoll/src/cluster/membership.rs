//! Joining a cluster through a seed list: allocating a node id, asking the
//! leader to add this node, and asking again whenever this node finds itself
//! outside the group (removed while it was dead, or restarted after that).

use super::handle::{ClusterHandle, join_request};
use super::network::bearer_value;
use crate::codec;
use crate::grpc;
use crate::model::types::{Command, CommandResult, NodeId, NodeInfo};
use crate::proto::ProposeRequest;
use crate::proto::peer_client::PeerClient;
use crate::secret::Secret;
use openraft::async_runtime::WatchReceiver;
use std::time::Duration;
use tokio::sync::watch;
use tonic::Code;

const SEED_TIMEOUT: Duration = Duration::from_secs(5);
/// A member no leader has reached for this long asks the seeds to take it
/// back: it may have been removed while it was away.
const UNREACHED_REJOIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("every seed ({0}) refused our cluster secret: check `secret` in the config")]
    SecretRefused(String),
    #[error("invalid seed address '{0}'")]
    BadSeed(String),
}

async fn peer(
    addr: &str,
    dialer: &grpc::Dialer,
) -> Result<PeerClient<tonic::transport::Channel>, JoinError> {
    let endpoint = grpc::endpoint(addr, grpc::PEER_CONNECT_TIMEOUT)
        .map_err(|_| JoinError::BadSeed(addr.to_string()))?
        .timeout(SEED_TIMEOUT);
    Ok(PeerClient::new(dialer.connect_lazy(&endpoint)))
}

/// A failed call with its causes (a TLS handshake failure is only in them).
fn describe(status: &tonic::Status) -> String {
    let mut s = status.message().to_string();
    let mut cur = std::error::Error::source(status);
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

fn authorized<T>(message: T, secret: &Secret) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(auth) = bearer_value(secret) {
        request.metadata_mut().insert("authorization", auth);
    }
    request
}

/// Asks the seeds, in turn, for a fresh node id, for at most `rounds` rounds
/// (one second apart, growing to five). `None` when no seed answered.
pub async fn allocate_node_id(
    seeds: &[String],
    secret: &Secret,
    dialer: &grpc::Dialer,
    rounds: u32,
) -> Result<Option<NodeId>, JoinError> {
    // Format 1: the seeds' versions are not known yet, and every version
    // reads it (the answer comes back in the same format).
    let command = codec::encode_version(&Command::AllocateNodeId, 1).unwrap_or_default();
    let mut pause = Duration::from_secs(1);
    for round in 0..rounds {
        let mut refused = 0;
        let mut failures = Vec::new();
        for seed in seeds {
            let mut client = peer(seed, dialer).await?;
            let request = authorized(
                ProposeRequest {
                    command: command.clone(),
                },
                secret,
            );
            match client.propose(request).await {
                Ok(reply) => match codec::decode(&reply.into_inner().result) {
                    Ok(CommandResult::NodeIdAllocated(id)) => {
                        tracing::info!(node_id = id, %seed, "node id allocated");
                        return Ok(Some(id));
                    }
                    other => tracing::warn!(%seed, ?other, "unexpected answer to id allocation"),
                },
                Err(status) if status.code() == Code::Unauthenticated => {
                    tracing::error!(%seed, "seed refused our cluster secret");
                    refused += 1;
                }
                Err(status) => {
                    let error = describe(&status);
                    tracing::debug!(%seed, %error, "seed not ready");
                    failures.push(format!("{seed}: {error}"));
                }
            }
        }
        if !seeds.is_empty() && refused == seeds.len() {
            return Err(JoinError::SecretRefused(seeds.join(", ")));
        }
        if round + 1 < rounds {
            tracing::warn!(
                ?seeds,
                errors = %failures.join("; "),
                "no seed answered yet; retrying in {pause:?}"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
    Ok(None)
}

/// Keeps this node in the Raft group until shutdown: joins through the seeds
/// when it is not a member, or when no leader has reached it for a while (it
/// may have been removed while it was away, and still believe in its old
/// membership and leader). Joining is idempotent for a known member.
pub async fn keep_joined(
    cluster: ClusterHandle,
    info: NodeInfo,
    seeds: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let metrics = cluster.raft().metrics().borrow_watched().clone();
        let member = metrics
            .membership_config
            .membership()
            .get_node(&info.id)
            .is_some();
        let leads = metrics.current_leader == Some(info.id);
        let unreached = !leads && cluster.leader_contact().silence() >= UNREACHED_REJOIN;
        if (member && !unreached) || seeds.is_empty() {
            continue;
        }
        for seed in &seeds {
            let Ok(mut client) = peer(seed, cluster.dialer()).await else {
                continue;
            };
            let mut request = authorized(join_request(&info), cluster.secret());
            // Joining waits until this node has caught up with the log.
            request.set_timeout(Duration::from_secs(60));
            match client.join(request).await {
                Ok(reply) => {
                    tracing::info!(%seed, leader = reply.into_inner().leader_id, "joined the cluster");
                    break;
                }
                Err(status) => {
                    tracing::debug!(%seed, error = %describe(&status), "join attempt failed")
                }
            }
        }
    }
}
