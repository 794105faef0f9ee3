//! The Admin calls of the CLI: one authenticated channel to one node, one
//! method per call, gRPC statuses turned into [`ClientError`]s.

use super::import::import_batches;
use super::{ClientError, Connection};
use crate::api::admin::MAX_REQUEST_BYTES;
use crate::grpc::Dialer;
use crate::proto::admin_client::AdminClient;
use crate::proto::{self as pb};
use crate::secret::Secret;
use std::fmt::Write as _;
use std::time::Duration;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

pub(super) struct Admin {
    client: AdminClient<Channel>,
    auth: AsciiMetadataValue,
    addr: String,
    tls: bool,
}

/// Opens the gRPC channel to the node at `conn.addr` (TCP, and with `--ca`
/// the TLS handshake, within the connect timeout).
async fn connect_channel(conn: &Connection, dialer: &Dialer) -> Result<Channel, ClientError> {
    let endpoint = crate::grpc::endpoint(&conn.addr, Duration::from_secs(3))
        .map_err(|_| ClientError::BadAddress(conn.addr.clone()))?
        .timeout(Duration::from_secs(30));
    dialer
        .connect(&endpoint)
        .await
        .map_err(|e| ClientError::Unreachable {
            addr: conn.addr.clone(),
            message: with_hint(source_chain(&e), dialer.is_tls()),
        })
}

/// A transport failure's message with what it most likely means when the
/// two sides disagree about TLS (their own messages are about bytes and
/// frames).
fn with_hint(message: String, tls: bool) -> String {
    let hint = if !tls {
        // A TLS node answers HTTP/2's preface with a TLS alert, which the
        // HTTP/2 client reads as a broken frame, or just closes.
        let mismatch = [
            "h2 protocol error",
            "frame",
            "connection reset",
            "closed",
            "broken pipe",
        ];
        mismatch
            .iter()
            .any(|m| message.contains(m))
            .then_some("the node may require TLS: pass --ca FILE (or set RAFTPOLL_CA)")
    } else if message.contains("CertificateRequired") {
        Some("the node requires a client certificate: pass --cert and --key")
    } else if message.contains("received fatal alert") {
        Some("the node refused this client's certificate (not signed by its CA, or expired)")
    } else if message.contains("invalid peer certificate") {
        Some("the node's certificate is not trusted: is --ca the CA that signed it?")
    } else if [
        "InvalidContentType",
        "corrupt message",
        "eof",
        "tls handshake",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        Some("the node may not use TLS: try without --ca")
    } else {
        None
    };
    match hint {
        Some(h) => format!("{message} ({h})"),
        None => message,
    }
}

impl Admin {
    pub(super) async fn connect(conn: &Connection) -> Result<Admin, ClientError> {
        let secret = Secret::new(conn.secret.clone().ok_or(ClientError::NoSecret)?);
        let auth = crate::cluster::network::bearer_value(&secret).ok_or(ClientError::BadSecret)?;
        let dialer = conn.dialer()?;
        let channel = connect_channel(conn, &dialer).await?;
        Ok(Admin {
            // A device list of a large cluster is bigger than tonic's 4 MiB default.
            client: AdminClient::new(channel).max_decoding_message_size(MAX_REQUEST_BYTES),
            auth,
            addr: conn.addr.clone(),
            tls: dialer.is_tls(),
        })
    }

    pub(super) async fn status(&mut self) -> Result<pb::StatusReply, ClientError> {
        let req = self.request(pb::StatusRequest {});
        let reply = self.client.status(req).await;
        self.answer(reply)
    }

    pub(super) async fn leave(&mut self, node: Option<u64>) -> Result<pb::LeaveReply, ClientError> {
        let req = self.request(pb::LeaveRequest { node_id: node });
        let reply = self.client.leave(req).await;
        self.answer(reply)
    }

    pub(super) async fn list_devices(&mut self) -> Result<pb::ListDevicesReply, ClientError> {
        let req = self.request(pb::ListDevicesRequest {});
        let reply = self.client.list_devices(req).await;
        self.answer(reply)
    }

    pub(super) async fn get_device(
        &mut self,
        hostname: String,
    ) -> Result<pb::DeviceDetail, ClientError> {
        let req = self.request(pb::GetDeviceRequest { hostname });
        let reply = self.client.get_device(req).await;
        self.answer(reply)
    }

    pub(super) async fn add_device(
        &mut self,
        device: pb::AddDeviceRequest,
    ) -> Result<(), ClientError> {
        let req = self.request(device);
        let reply = self.client.add_device(req).await;
        self.answer(reply).map(drop)
    }

    pub(super) async fn remove_device(&mut self, hostname: String) -> Result<(), ClientError> {
        let req = self.request(pb::RemoveDeviceRequest { hostname });
        let reply = self.client.remove_device(req).await;
        self.answer(reply).map(drop)
    }

    pub(super) async fn set_device_group(
        &mut self,
        hostname: String,
        group: u32,
    ) -> Result<(), ClientError> {
        let req = self.request(pb::SetDeviceGroupRequest { hostname, group });
        let reply = self.client.set_device_group(req).await;
        self.answer(reply).map(drop)
    }

    /// Sends checked devices in calls of bounded size; returns how many were
    /// added and how many were already present.
    pub(super) async fn import_devices(
        &mut self,
        devices: Vec<pb::AddDeviceRequest>,
    ) -> Result<(u64, u64), ClientError> {
        let total = devices.len();
        let (mut added, mut skipped) = (0u64, 0u64);
        for batch in import_batches(devices) {
            let req = self.request(pb::AddDevicesRequest { devices: batch });
            match self.client.add_devices(req).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    added += u64::from(reply.added);
                    skipped += reply.existing.len() as u64;
                }
                Err(status) if added + skipped == 0 => return Err(self.error(status)),
                Err(status) => {
                    return Err(ClientError::ImportStopped {
                        cause: Box::new(self.error(status)),
                        added,
                        skipped,
                        total,
                    });
                }
            }
        }
        Ok((added, skipped))
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert("authorization", self.auth.clone());
        r
    }

    fn answer<T>(
        &self,
        reply: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, ClientError> {
        reply
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(s))
    }

    fn error(&self, status: tonic::Status) -> ClientError {
        match status.code() {
            Code::Unauthenticated => ClientError::Unauthenticated {
                addr: self.addr.clone(),
            },
            // Also a TLS refusal (a client certificate the node rejects is
            // only seen after the handshake, on the first call).
            _ if is_transport(&status) => ClientError::Unreachable {
                addr: self.addr.clone(),
                message: with_hint(status_chain(&status), self.tls),
            },
            _ => ClientError::Server(status.message().to_string()),
        }
    }
}

/// Whether the call failed below gRPC (connection, TLS, HTTP/2) rather
/// than with an answer from the node.
fn is_transport(status: &tonic::Status) -> bool {
    let m = status.message();
    m.contains("transport error")
        || m.starts_with("h2 protocol error")
        || std::error::Error::source(status).is_some()
}

/// A failed call's message with its causes (tonic's Display of a status
/// is a debugging dump).
fn status_chain(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => {
            let causes = source_chain(source);
            if causes.contains(status.message()) {
                causes
            } else {
                format!("{}: {causes}", status.message())
            }
        }
        None => status.message().to_string(),
    }
}

/// An error with its causes, as tonic's own message hides them.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        // Wrappers often repeat their cause's text (io::Error around rustls).
        let text = inner.to_string();
        if !s.contains(&text) {
            let _ = write!(s, ": {text}");
        }
        cur = inner.source();
    }
    s
}
