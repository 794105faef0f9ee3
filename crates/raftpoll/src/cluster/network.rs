//! Raft peer RPCs over gRPC: the client side (network factory) and the server side.
//!
//! Messages are openraft's own types, in the versioned [`crate::codec`]
//! encoding inside the `bytes` fields of `proto/raft.proto`: each peer is
//! written the newest format it reads (version 1 until its replies say
//! more), and answered in the format it wrote. Every call (and every
//! AppendEntries stream, once) carries the cluster secret as
//! `authorization: Bearer <secret>`; the server checks it in constant time.
//! Between nodes that serve it, AppendEntries go as messages on one
//! long-lived stream per sender and peer instead of one call each.

use crate::cluster::features::{APPEND_STREAM_LEVEL, Features};
use crate::cluster::raft::Raft;
use crate::codec::{CodecError, decode, encode_version, version_of};
use crate::grpc::{ChannelCache, Dialer};
use crate::model::types::NodeId;
use crate::proto::raft_client::RaftClient;
use crate::proto::raft_server::{self, RaftServer};
use crate::proto::{RaftReply, RaftRequest, RaftSnapshotRequest};
use crate::raft_types::{Snapshot, TypeConfig, Vote};
use crate::secret::Secret;
use crate::storage::{SnapshotData, snapshot_data_in_format};
use futures::Stream;
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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

/// Largest Raft message accepted or sent (a whole snapshot travels in one).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Largest command a node proposes (encoded). Proposals that may grow with
/// the inventory (poll reports, claims, bulk adds) are split well below it;
/// one device's discovery is the only entry that cannot be split, and even
/// 100,000 interfaces with long names take a few MiB.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

/// Largest Peer RPC message: one proposal and its framing.
pub const MAX_PEER_MESSAGE_BYTES: usize = MAX_ENTRY_BYTES + 1024 * 1024;

/// How long a follower may take to store and acknowledge entries.
const APPEND_WITH_ENTRIES_TIMEOUT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- client side

/// Creates one [`GrpcNetwork`] per peer for openraft. Channels are connected
/// lazily, one per peer address, and reused by every client of that address.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    /// `Bearer <secret>`; `None` if the secret cannot be a header value (every
    /// call then fails as unreachable instead of sending a broken header).
    auth: Option<AsciiMetadataValue>,
    channels: ChannelCache,
    features: Features,
    /// This node's id, sent with every request (0: not said).
    me: NodeId,
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
            features: Features::default(),
            me: 0,
        }
    }

    /// Tells peers this node's id and feature level, learns theirs from
    /// their replies, and writes to each the newest format it reads.
    pub fn with_features(mut self, features: Features, me: NodeId) -> Self {
        self.features = features;
        self.me = me;
        self
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
            features: self.features.clone(),
            me: self.me,
            append_stream: None,
        }
    }
}

/// openraft's connection to one peer. openraft gives its heartbeats and its
/// replication each a connection of their own, so each has its own stream.
pub struct GrpcNetwork {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
    auth: Option<AsciiMetadataValue>,
    features: Features,
    me: NodeId,
    /// The open AppendEntries stream to the peer, if any.
    append_stream: Option<AppendStream>,
}

/// One AppendEntries stream: requests go in, replies come back in order.
struct AppendStream {
    requests: mpsc::Sender<RaftRequest>,
    replies: Streaming<RaftReply>,
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

    fn no_answer(timeout: Duration) -> Failure {
        Failure::Network(format!("no answer within {} ms", timeout.as_millis()))
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

/// A peer's reply, decoded.
fn decoded<Resp: DeserializeOwned>(reply: &RaftReply) -> Result<Resp, Failure> {
    decode(&reply.payload)
        .map_err(|e| Failure::Network(format!("undecodable reply from peer: {e}")))
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
        self.logged(kind, result)
    }

    /// `result`, its failure logged at debug.
    fn logged<T>(&self, kind: &'static str, result: Result<T, Failure>) -> Result<T, Failure> {
        if let Err(Failure::Unreachable(m) | Failure::Network(m)) = &result {
            tracing::debug!(target_node = self.target, addr = %self.addr, rpc = kind, error = %m, "raft rpc failed");
        }
        result
    }

    /// `message` with the secret and what this node says of itself.
    fn outgoing<M>(&self, message: M, told: Option<u32>) -> Result<Request<M>, Failure> {
        let auth = self
            .auth
            .clone()
            .ok_or_else(|| Failure::Unreachable("cluster secret is not valid ASCII".into()))?;
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", auth);
        self.features
            .annotate(request.metadata_mut(), self.me, told);
        Ok(request)
    }

    /// The cluster's level to tell the peer (a node without an id tells none).
    fn told(&self) -> Option<u32> {
        Some(self.features.told_cluster_level()).filter(|_| self.me != 0)
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
        let mut request = self.outgoing(message, self.told())?;
        request.set_timeout(timeout);
        let reply = match tokio::time::timeout(timeout, send(client, request)).await {
            Err(_) => return Err(Failure::no_answer(timeout)),
            Ok(Err(status)) => return Err(Failure::from_status(&status)),
            Ok(Ok(reply)) => {
                self.features.observe(reply.metadata(), Some(self.target));
                reply.into_inner()
            }
        };
        decoded(&reply)
    }

    /// The request in the newest format the target reads (version 1 until
    /// it said otherwise: it may be an older node).
    fn request<T: Serialize>(&self, rpc: &T) -> Result<RaftRequest, Failure> {
        let payload = encode_version(rpc, self.features.format_for(self.target))
            .map_err(|e| Failure::Network(format!("cannot encode request: {e}")))?;
        Ok(RaftRequest {
            target: self.target,
            payload,
            cluster_level: 0,
        })
    }

    /// Whether AppendEntries go on a stream: both ends must serve it (a
    /// peer not heard from yet may be an older node, so a call comes first).
    fn streams(&self) -> bool {
        self.features.local_level() >= APPEND_STREAM_LEVEL
            && self.features.level_of(self.target) >= APPEND_STREAM_LEVEL
    }

    /// `req` on the AppendEntries stream (opened first if none is open), and
    /// its reply; `None` if the peer does not serve the stream (a node rolled
    /// back to an older version): then a call goes instead, and its reply
    /// tells the peer's level. Any failure or timeout drops the stream, so a
    /// late reply can never be read as the answer to a later request.
    async fn stream_call<Resp: DeserializeOwned>(
        &mut self,
        mut req: RaftRequest,
        timeout: Duration,
    ) -> Result<Option<Resp>, Failure> {
        req.cluster_level = self.told().unwrap_or(0);
        let exchanged = tokio::time::timeout(timeout, async {
            let stream = match self.append_stream.take() {
                Some(stream) => stream,
                None => match self.open_append_stream().await? {
                    Some(stream) => stream,
                    None => return Ok(None),
                },
            };
            let stream = self.append_stream.insert(stream);
            if stream.requests.send(req).await.is_err() {
                return Err(Failure::Network("AppendEntries stream closed".into()));
            }
            match stream.replies.message().await {
                Ok(Some(reply)) => Ok(Some(reply)),
                Ok(None) => Err(Failure::Network("AppendEntries stream ended".into())),
                Err(status) => Err(Failure::from_status(&status)),
            }
        })
        .await
        .unwrap_or_else(|_| Err(Failure::no_answer(timeout)));
        let Some(reply) = exchanged.inspect_err(|_| self.append_stream = None)? else {
            return Ok(None);
        };
        decoded(&reply).map(Some)
    }

    /// A new AppendEntries stream, `None` if the peer does not serve it.
    async fn open_append_stream(&self) -> Result<Option<AppendStream>, Failure> {
        let mut client = self.client.clone().map_err(Failure::Unreachable)?;
        // One request in flight at a time: openraft waits for each reply.
        let (requests, outgoing) = mpsc::channel(1);
        let request = self.outgoing(ReceiverStream::new(outgoing), None)?;
        let response = match client.append_entries_stream(request).await {
            Ok(response) => response,
            Err(s) if s.code() == Code::Unimplemented => return Ok(None),
            Err(s) => return Err(Failure::from_status(&s)),
        };
        self.features
            .observe(response.metadata(), Some(self.target));
        Ok(Some(AppendStream {
            requests,
            replies: response.into_inner(),
        }))
    }
}

impl RaftNetworkV2<TypeConfig> for GrpcNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // A follower answers only once it has written the entries to disk:
        // on a slow disk or a busy machine that takes longer than a
        // heartbeat, and giving up sooner only sends the same entries again
        // (and again), so the follower never catches up and looks dead.
        let timeout = if rpc.entries.is_empty() {
            option.hard_ttl()
        } else {
            option.hard_ttl().max(APPEND_WITH_ENTRIES_TIMEOUT)
        };
        if self.streams() {
            let req = self.request(&rpc).map_err(Failure::into_rpc)?;
            let result = self.stream_call(req, timeout).await;
            if let Some(response) = self
                .logged("append_entries_stream", result)
                .map_err(Failure::into_rpc)?
            {
                return Ok(response);
            }
        }
        let req = self.request(&rpc).map_err(Failure::into_rpc)?;
        self.call("append_entries", req, timeout, |mut c, r| async move {
            c.append_entries(r).await
        })
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
        let format = self.features.format_for(self.target);
        let data = snapshot.snapshot.into_bytes().map_err(|e| {
            Failure::Network(format!("cannot read the snapshot to send: {e}")).into_streaming()
        })?;
        let encoded = encode_version(&vote, format).and_then(|v| {
            let m = encode_version(&snapshot.meta, format)?;
            let data = snapshot_data_in_format(data, format)?;
            Ok((v, m, data))
        });
        let (vote, meta, data) = encoded.map_err(|e| {
            Failure::Network(format!("cannot encode snapshot request: {e}")).into_streaming()
        })?;
        let req = RaftSnapshotRequest {
            target: self.target,
            vote,
            meta,
            data,
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

/// When a leader last reached this node with entries, a heartbeat or a
/// snapshot it accepted. A node can believe it has a leader (its stored vote
/// says so) while that leader no longer counts it as a member: only the
/// silence tells.
#[derive(Clone)]
pub struct LeaderContact {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: Arc<AtomicU64>,
}

impl Default for LeaderContact {
    /// As if contacted at creation: a starting node gets the time a leader
    /// needs to reach it.
    fn default() -> Self {
        LeaderContact {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LeaderContact {
    pub fn record(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last contact.
    pub fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The peer-facing Raft service of `raft`, guarded by the cluster secret.
pub fn raft_service(raft: Raft, secret: Secret) -> RaftService {
    let (_, stop) = watch::channel(false);
    raft_service_with(
        raft,
        secret,
        Features::default(),
        LeaderContact::default(),
        stop,
    )
}

/// [`raft_service`] that records callers' feature levels in `features`,
/// tells them this node's, and records leaders' contacts in `contact`.
/// AppendEntries streams end once `stop` turns true: a server stopping
/// gracefully waits for its streams, and a peer's stream never ends by itself.
pub fn raft_service_with(
    raft: Raft,
    secret: Secret,
    features: Features,
    contact: LeaderContact,
    stop: watch::Receiver<bool>,
) -> RaftService {
    let server = RaftServer::new(RaftRpc {
        raft,
        features,
        contact,
        stop,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(server, BearerAuth::new(secret))
}

/// Hands peer RPCs to the local Raft node.
#[derive(Clone)]
pub struct RaftRpc {
    raft: Raft,
    features: Features,
    contact: LeaderContact,
    stop: watch::Receiver<bool>,
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

    /// Decodes a request (of any format version this node reads) and
    /// records what the caller says of itself. Returns the format to answer in.
    fn decode_request<T: DeserializeOwned>(
        &self,
        request: &Request<RaftRequest>,
    ) -> Result<(T, u16), Status> {
        self.features.observe(request.metadata(), None);
        self.decode_message(request.get_ref())
    }

    fn decode_message<T: DeserializeOwned>(&self, req: &RaftRequest) -> Result<(T, u16), Status> {
        self.check_target(req.target)?;
        let value = decode(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft request: {e}")))?;
        Ok((value, version_of(&req.payload)))
    }

    /// One AppendEntries request, however it came: stored, recorded as the
    /// leader's contact, answered in the format it was written in.
    async fn append(&self, req: &RaftRequest) -> Result<RaftReply, Status> {
        let (rpc, format): (AppendEntriesRequest<TypeConfig>, _) = self.decode_message(req)?;
        self.check_entries(&rpc)?;
        let response = self.raft.append_entries(rpc).await.map_err(unavailable)?;
        // A deposed leader's request is answered with the higher vote.
        if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
            self.contact.record();
        }
        encoded_reply(&response, format)
    }

    /// Refuses entries of a kind above this node's level: the leader keeps
    /// retrying, and this node neither stores nor applies them.
    fn check_entries(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> Result<(), Status> {
        for e in &rpc.entries {
            if let openraft::EntryPayload::Normal(cmd) = &e.payload {
                cmd.check_level(self.features.local_level())
                    .map_err(|err| {
                        Status::invalid_argument(format!("log entry {}: {err}", e.log_id.index))
                    })?;
            }
        }
        Ok(())
    }

    /// A reply in `format`, with this node's level in its metadata.
    fn reply<T: Serialize>(&self, value: &T, format: u16) -> Result<Response<RaftReply>, Status> {
        Ok(self.annotated(encoded_reply(value, format)?))
    }

    /// `message` with this node's level in the response metadata.
    fn annotated<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        self.features
            .annotate(response.metadata_mut(), *self.raft.node_id(), None);
        response
    }
}

/// `value` encoded in `format`, as a reply.
fn encoded_reply<T: Serialize>(value: &T, format: u16) -> Result<RaftReply, Status> {
    let payload = encode_version(value, format)
        .map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(RaftReply { payload })
}

/// The replies of one AppendEntries stream.
type AppendReplies = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send>>;

/// Raft refuses only when it is stopping (fatal): the peer should back off.
fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft node is not running: {e}"))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftRpc {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (rpc, format): (VoteRequest<TypeConfig>, _) = self.decode_request(&request)?;
        self.reply(&self.raft.vote(rpc).await.map_err(unavailable)?, format)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (rpc, format): (VoteRequest<TypeConfig>, _) = self.decode_request(&request)?;
        self.reply(&self.raft.pre_vote(rpc).await.map_err(unavailable)?, format)
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.features.observe(request.metadata(), None);
        Ok(self.annotated(self.append(request.get_ref()).await?))
    }

    type AppendEntriesStreamStream = AppendReplies;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<AppendReplies>, Status> {
        // A node held at an older level answers as an older node would.
        if self.features.local_level() < APPEND_STREAM_LEVEL {
            return Err(Status::unimplemented("AppendEntriesStream"));
        }
        self.features.observe(request.metadata(), None);
        // Each request is answered before the next is read; the first
        // failure ends the stream with its status.
        let replies = futures::stream::try_unfold(
            (self.clone(), request.into_inner()),
            |(rpc, mut requests)| async move {
                let mut stop = rpc.stop.clone();
                let next = tokio::select! {
                    next = requests.message() => next?,
                    // A closed sender never stops the stream.
                    Ok(_) = stop.wait_for(|stop| *stop) => None,
                };
                let Some(req) = next else {
                    return Ok(None);
                };
                if req.cluster_level > 0 {
                    rpc.features.tell(req.cluster_level);
                }
                let reply = rpc.append(&req).await?;
                Ok(Some((reply, (rpc, requests))))
            },
        );
        Ok(self.annotated(Box::pin(replies) as AppendReplies))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftSnapshotRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.features.observe(request.metadata(), None);
        let req = request.into_inner();
        self.check_target(req.target)?;
        let format = version_of(&req.meta);
        let bad =
            |e: CodecError| Status::invalid_argument(format!("undecodable snapshot request: {e}"));
        let vote: Vote = decode(&req.vote).map_err(bad)?;
        let meta = decode(&req.meta).map_err(bad)?;
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotData::InMemory(req.data),
        };
        let response = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(unavailable)?;
        if response.vote == vote {
            self.contact.record();
        }
        self.reply(&response, format)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (rpc, format): (TransferLeaderRequest<TypeConfig>, _) =
            self.decode_request(&request)?;
        self.reply(
            &self
                .raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(unavailable)?,
            format,
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
    fn leader_contact_measures_the_silence_since_the_last_contact() {
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .expect("a minute ago");
        let contact = LeaderContact {
            start: long_ago,
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        assert!(contact.silence() >= Duration::from_secs(60));
        contact.record();
        assert!(contact.silence() < Duration::from_secs(30));
        // A fresh one counts from its creation: a starting node is not "unreached" at once.
        assert!(LeaderContact::default().silence() < Duration::from_secs(30));
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
