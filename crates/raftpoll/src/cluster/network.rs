//! Raft peer RPCs over gRPC: the client side (network factory) and the server side.
//!
//! Messages are openraft's own types, bincode-encoded inside the `bytes`
//! fields of `proto/raft.proto`. Every call carries the cluster secret as
//! `authorization: Bearer <secret>`; the server checks it in constant time.

use crate::cluster::raft::Raft;
use crate::codec::{CodecError, decode, encode};
use crate::grpc::{ChannelCache, Dialer};
use crate::model::types::NodeId;
use crate::proto::raft_client::RaftClient;
use crate::proto::raft_server::{self, RaftServer};
use crate::proto::{RaftReply, RaftRequest, RaftSnapshotRequest};
use crate::raft_types::{Snapshot, TypeConfig, Vote};
use crate::secret::Secret;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// Largest Raft message accepted or sent (a whole snapshot travels in one).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

// ---------------------------------------------------------------- client side

/// Creates one [`GrpcNetwork`] per peer for openraft. Channels are connected
/// lazily, one per peer address, and reused by every client of that address.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    /// `Bearer <secret>`; `None` if the secret cannot be a header value (every
    /// call then fails as unreachable instead of sending a broken header).
    auth: Option<AsciiMetadataValue>,
    channels: ChannelCache,
}

impl GrpcNetworkFactory {
    /// Plaintext channels to peers.
    pub fn new(secret: Secret) -> Self {
        GrpcNetworkFactory::with_dialer(secret, Dialer::plain())
    }

    /// Channels to peers made by `dialer` (TLS when the node has `[tls]`).
    pub fn with_dialer(secret: Secret, dialer: Dialer) -> Self {
        GrpcNetworkFactory {
            auth: bearer_value(&secret),
            channels: ChannelCache::new(dialer),
        }
    }
}

/// `Bearer <secret>` as a metadata value, if the secret is printable ASCII
/// (anything else could not be read back by the server's check).
pub fn bearer_value(secret: &Secret) -> Option<AsciiMetadataValue> {
    let printable = secret
        .expose()
        .bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic());
    if !printable {
        return None;
    }
    format!("Bearer {}", secret.expose()).parse().ok()
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        let client = self
            .channels
            .get(&node.addr)
            .map_err(|e| e.to_string())
            .map(|c| {
                RaftClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            });
        GrpcNetwork {
            target,
            addr: node.addr.clone(),
            client,
            auth: self.auth.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub struct GrpcNetwork {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
    auth: Option<AsciiMetadataValue>,
}

/// Why a call failed, before it becomes openraft's error type.
enum Failure {
    /// Peer down, refusing us, or not the node we meant: back off.
    Unreachable(String),
    /// Transient (timeout, broken stream): retry soon.
    Network(String),
}

impl Failure {
    fn from_status(s: &Status) -> Failure {
        let msg = format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            Code::Unavailable
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Unimplemented => Failure::Unreachable(msg),
            _ => Failure::Network(msg),
        }
    }

    fn into_rpc(self) -> RPCError<TypeConfig> {
        match self {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            Failure::Network(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig> {
        match self {
            Failure::Unreachable(m) => StreamingError::Unreachable(Unreachable::from_string(m)),
            Failure::Network(m) => StreamingError::Network(NetworkError::from_string(m)),
        }
    }
}

impl GrpcNetwork {
    /// Sends one request with the secret and a deadline, decodes the reply.
    /// Failures are logged at debug only: openraft retries, and an unreachable
    /// peer would otherwise flood the log.
    async fn call<M, Resp, F, Fut>(
        &self,
        kind: &'static str,
        message: M,
        timeout: Duration,
        send: F,
    ) -> Result<Resp, Failure>
    where
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<RaftReply>, Status>>,
    {
        let result = self.try_call(message, timeout, send).await;
        if let Err(Failure::Unreachable(m) | Failure::Network(m)) = &result {
            tracing::debug!(target_node = self.target, addr = %self.addr, rpc = kind, error = %m, "raft rpc failed");
        }
        result
    }

    async fn try_call<M, Resp, F, Fut>(
        &self,
        message: M,
        timeout: Duration,
        send: F,
    ) -> Result<Resp, Failure>
    where
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<RaftReply>, Status>>,
    {
        let client = self.client.clone().map_err(Failure::Unreachable)?;
        let auth = self
            .auth
            .clone()
            .ok_or_else(|| Failure::Unreachable("cluster secret is not valid ASCII".into()))?;
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", auth);
        request.set_timeout(timeout);
        let reply = match tokio::time::timeout(timeout, send(client, request)).await {
            Err(_) => {
                return Err(Failure::Network(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )));
            }
            Ok(Err(status)) => return Err(Failure::from_status(&status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        decode(&reply.payload)
            .map_err(|e| Failure::Network(format!("undecodable reply from peer: {e}")))
    }

    fn request<T: Serialize>(&self, rpc: &T) -> Result<RaftRequest, Failure> {
        let payload =
            encode(rpc).map_err(|e| Failure::Network(format!("cannot encode request: {e}")))?;
        Ok(RaftRequest {
            target: self.target,
            payload,
        })
    }
}

impl RaftNetworkV2<TypeConfig> for GrpcNetwork {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let req = self.request(&rpc).map_err(Failure::into_rpc)?;
        self.call(
            "append_entries",
            req,
            option.soft_ttl(),
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
        .map_err(Failure::into_rpc)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let req = self.request(&rpc).map_err(Failure::into_rpc)?;
        self.call("vote", req, option.soft_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
        .map_err(Failure::into_rpc)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let req = self.request(&rpc).map_err(Failure::into_rpc)?;
        self.call("pre_vote", req, option.soft_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
        .map_err(Failure::into_rpc)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let encoded = encode(&vote).and_then(|v| encode(&snapshot.meta).map(|m| (v, m)));
        let (vote, meta) = encoded.map_err(|e| {
            Failure::Network(format!("cannot encode snapshot request: {e}")).into_streaming()
        })?;
        let req = RaftSnapshotRequest {
            target: self.target,
            vote,
            meta,
            data: snapshot.snapshot,
        };
        let send = self.call(
            "install_snapshot",
            req,
            option.hard_ttl(),
            |mut c, r| async move { c.install_snapshot(r).await },
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result.map_err(Failure::into_streaming),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let req = self.request(&req).map_err(Failure::into_rpc)?;
        self.call(
            "transfer_leader",
            req,
            option.soft_ttl(),
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await
        .map_err(Failure::into_rpc)
    }
}

// ---------------------------------------------------------------- server side

/// Checks `authorization: Bearer <secret>` on every request, in constant time.
/// Usable for any tonic service of the node.
#[derive(Clone)]
pub struct BearerAuth {
    secret: Secret,
}

impl BearerAuth {
    pub fn new(secret: Secret) -> Self {
        BearerAuth { secret }
    }

    /// `true` if `metadata` carries the right secret.
    pub fn check(&self, metadata: &MetadataMap) -> bool {
        metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| self.secret.matches(token))
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.check(request.metadata()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong cluster secret"))
        }
    }
}

/// The Raft gRPC service, as added to a tonic `Server`.
pub type RaftService = InterceptedService<RaftServer<RaftRpc>, BearerAuth>;

/// The peer-facing Raft service of `raft`, guarded by the cluster secret.
pub fn raft_service(raft: Raft, secret: Secret) -> RaftService {
    let server = RaftServer::new(RaftRpc { raft })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(server, BearerAuth::new(secret))
}

/// Hands peer RPCs to the local Raft node.
pub struct RaftRpc {
    raft: Raft,
}

impl RaftRpc {
    /// Refuses a request meant for another node id: after an address is
    /// reused, the sender must not mistake us for the node it knew.
    fn check_target(&self, target: NodeId) -> Result<(), Status> {
        let me = *self.raft.node_id();
        if target == me {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "this address serves node {me}, not node {target}"
            )))
        }
    }

    fn decode_request<T: DeserializeOwned>(&self, req: &RaftRequest) -> Result<T, Status> {
        self.check_target(req.target)?;
        decode(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft request: {e}")))
    }
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload =
        encode(value).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(Response::new(RaftReply { payload }))
}

/// Raft refuses only when it is stopping (fatal): the peer should back off.
fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft node is not running: {e}"))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftRpc {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<TypeConfig> = self.decode_request(request.get_ref())?;
        reply(&self.raft.vote(rpc).await.map_err(unavailable)?)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<TypeConfig> = self.decode_request(request.get_ref())?;
        reply(&self.raft.pre_vote(rpc).await.map_err(unavailable)?)
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.decode_request(request.get_ref())?;
        reply(&self.raft.append_entries(rpc).await.map_err(unavailable)?)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftSnapshotRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check_target(req.target)?;
        let bad =
            |e: CodecError| Status::invalid_argument(format!("undecodable snapshot request: {e}"));
        let vote: Vote = decode(&req.vote).map_err(bad)?;
        let meta = decode(&req.meta).map_err(bad)?;
        let snapshot = Snapshot {
            meta,
            snapshot: req.data,
        };
        reply(
            &self
                .raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(unavailable)?,
        )
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = self.decode_request(request.get_ref())?;
        reply(
            &self
                .raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(unavailable)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn bearer_secret_is_checked() {
        let auth = BearerAuth::new(Secret::new("s3cret"));
        assert!(auth.check(&metadata(Some("Bearer s3cret"))));
        assert!(!auth.check(&metadata(Some("Bearer s3cre"))));
        assert!(!auth.check(&metadata(Some("s3cret"))));
        assert!(!auth.check(&metadata(None)));
        let header = bearer_value(&Secret::new("s3cret")).unwrap();
        assert!(auth.check(&metadata(header.to_str().ok())));
        assert!(bearer_value(&Secret::new("caf\u{e9}")).is_none());
    }

    #[test]
    fn refusals_back_off_and_timeouts_retry() {
        let refused = Failure::from_status(&Status::unauthenticated("x")).into_rpc();
        assert!(matches!(refused, RPCError::Unreachable(_)));
        let down = Failure::from_status(&Status::unavailable("x")).into_rpc();
        assert!(matches!(down, RPCError::Unreachable(_)));
        let slow = Failure::from_status(&Status::deadline_exceeded("x")).into_rpc();
        assert!(matches!(slow, RPCError::Network(_)));
    }
}
