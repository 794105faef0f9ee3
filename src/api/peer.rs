//! The `Peer` gRPC service: followers hand their proposals to the leader here.

use crate::cluster::handle::LEADER_METADATA;
use crate::cluster::network::BearerAuth;
use crate::cluster::raft::Raft;
use crate::cluster::types::Command;
use crate::proto::peer_server::{Peer, PeerServer};
use crate::proto::{ProposeReply, ProposeRequest};
use crate::secret::Secret;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

pub struct PeerRpc {
    raft: Raft,
}

pub type PeerService = InterceptedService<PeerServer<PeerRpc>, BearerAuth>;

pub fn peer_service(raft: Raft, secret: Secret) -> PeerService {
    InterceptedService::new(PeerServer::new(PeerRpc { raft }), BearerAuth::new(secret))
}

#[tonic::async_trait]
impl Peer for PeerRpc {
    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let cmd: Command = bincode::deserialize(&request.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        match self.raft.client_write(cmd).await {
            Ok(resp) => {
                let result = bincode::serialize(&resp.data)
                    .map_err(|e| Status::internal(format!("cannot encode result: {e}")))?;
                Ok(Response::new(ProposeReply { result }))
            }
            Err(e) => match e.forward_to_leader() {
                Some(fwd) => {
                    let mut status = Status::failed_precondition("not the leader");
                    if let Some(addr) = fwd.leader_node.as_ref().map(|n| n.addr.as_str()) {
                        if let Ok(v) = addr.parse() {
                            status.metadata_mut().insert(LEADER_METADATA, v);
                        }
                    }
                    Err(status)
                }
                None => Err(Status::unavailable(e.to_string())),
            },
        }
    }
}
