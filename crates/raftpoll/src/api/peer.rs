//! The `Peer` gRPC service: node-to-node proposals and membership requests,
//! executed on the leader (a follower forwards them).

use crate::cluster::handle::{ClusterError, ClusterHandle, PROPOSE_TIMEOUT};
use crate::cluster::network::BearerAuth;
use crate::cluster::network::MAX_PEER_MESSAGE_BYTES;
use crate::codec;
use crate::model::types::{Command, CommandResult, NodeInfo};
use crate::proto::peer_server::{Peer, PeerServer};
use crate::proto::{
    JoinReply, JoinRequest, ProposeReply, ProposeRequest, RemoveReply, RemoveRequest,
};
use crate::secret::Secret;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

pub struct PeerRpc {
    cluster: ClusterHandle,
}

pub type PeerService = InterceptedService<PeerServer<PeerRpc>, BearerAuth>;

pub fn peer_service(cluster: ClusterHandle, secret: Secret) -> PeerService {
    InterceptedService::new(
        // Proposals up to the largest entry, not tonic's 4 MiB default.
        PeerServer::new(PeerRpc { cluster })
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        BearerAuth::new(secret),
    )
}

/// Allocated ids that are already members' are skipped at most this often.
const MAX_ID_SKIPS: usize = 8;

fn unavailable(e: ClusterError) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl Peer for PeerRpc {
    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let bytes = request.into_inner().command;
        let cmd: Command = codec::decode(&bytes)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        let format = codec::version_of(&bytes);
        cmd.check_level(self.cluster.features().local_level())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A node that is not in a cluster yet says so at once, so a joining
        // or bootstrapping node does not wait on it.
        if !self.cluster.in_cluster() {
            return Err(Status::failed_precondition(
                "this node is not a member of a cluster yet",
            ));
        }
        // A claim is of use only early in its time budget, and its sender
        // retries by itself, at the leader it knows by then: it is passed
        // on once, not held here while a leader is elected.
        let send_within = if cmd.is_claim() {
            Duration::ZERO
        } else {
            PROPOSE_TIMEOUT
        };
        let mut result = self
            .cluster
            .propose_within(cmd.clone(), send_within)
            .await
            .map_err(unavailable)?;
        // The founding node registers itself (raising the id counter) only
        // after the cluster exists: an id allocated in between may be a
        // member's own. Ids are never reused, so skipping one costs nothing.
        for _ in 0..MAX_ID_SKIPS {
            match result {
                CommandResult::NodeIdAllocated(id) if self.cluster.is_member(id) => {
                    result = self
                        .cluster
                        .propose(cmd.clone())
                        .await
                        .map_err(unavailable)?;
                }
                _ => break,
            }
        }
        // Answered in the format it was asked in: the caller reads that one.
        let result = codec::encode_version(&result, format)
            .map_err(|e| Status::internal(format!("cannot encode result: {e}")))?;
        Ok(Response::new(ProposeReply { result }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let r = request.into_inner();
        if r.node_id == 0 || r.addr.is_empty() {
            return Err(Status::invalid_argument(
                "join needs a node id and an address",
            ));
        }
        let info = NodeInfo {
            id: r.node_id,
            name: r.name,
            addr: r.addr,
            groups: r.groups,
        };
        tracing::info!(node_id = info.id, addr = %info.addr, "join request");
        let leader_id = self.cluster.join(info).await.map_err(unavailable)?;
        Ok(Response::new(JoinReply { leader_id }))
    }

    async fn drain(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveReply>, Status> {
        let id = request.into_inner().node_id;
        self.cluster.drain(id).await.map_err(unavailable)?;
        Ok(Response::new(RemoveReply {}))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveReply>, Status> {
        let id = request.into_inner().node_id;
        self.cluster.remove_member(id).await.map_err(unavailable)?;
        Ok(Response::new(RemoveReply {}))
    }
}
