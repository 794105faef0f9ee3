//! Client-side gRPC connections to nodes: the one way to turn an address into
//! an `Endpoint`, the [`Dialer`] that connects it (plaintext or TLS), and a
//! cache of lazily connected channels, one per address.

use crate::tls::{ClientTls, TlsDialer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a TCP connection to another node before calling it
/// unreachable: nodes are on the same LAN, and callers retry elsewhere.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection with a request waiting on it and nothing read for this long
/// is sent an HTTP/2 ping; one not answered within [`PEER_PING_TIMEOUT`] is
/// closed, and the channel connects afresh on its next request.
///
/// Without it, a TCP connection that carried requests during a network
/// partition stays in the kernel's retransmission backoff after the partition
/// heals (the backoff doubles with every lost retry: seconds after a short
/// partition, minutes after a long one), and every request on it waits that
/// long: claims sent to a new leader over one were committed 2.8 s late. A
/// healthy peer's replies keep the connection read, so no ping is sent on a
/// busy one, and an idle one (no request waiting) is never pinged.
pub const PEER_PING_AFTER: Duration = Duration::from_secs(1);
/// See [`PEER_PING_AFTER`].
pub const PEER_PING_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("invalid address '{addr}': {message}")]
    BadAddress { addr: String, message: String },
}

/// An endpoint for `addr` (`host:port`, or a URI with its scheme) that gives
/// up connecting after `connect_timeout` and drops a connection that stops
/// answering ([`PEER_PING_AFTER`]). Callers add a request timeout and message
/// limits where they need them.
pub fn endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint, GrpcError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| GrpcError::BadAddress {
        addr: addr.to_string(),
        message: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(PEER_PING_AFTER)
        .keep_alive_timeout(PEER_PING_TIMEOUT)
        .keep_alive_while_idle(false))
}

/// How channels reach a node: plaintext, or TLS with the process's client
/// config (swapped on reload; each new connection takes the current one).
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<ClientTls>,
}

impl Dialer {
    pub fn plain() -> Dialer {
        Dialer { tls: None }
    }

    pub fn tls(tls: ClientTls) -> Dialer {
        Dialer { tls: Some(tls) }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A channel that connects on first use (and reconnects by itself).
    pub fn connect_lazy(&self, endpoint: &Endpoint) -> Channel {
        match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => endpoint.connect_with_connector_lazy(TlsDialer::new(tls.clone())),
        }
    }

    /// A channel connected now (TCP and, with TLS, the handshake).
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => endpoint.connect().await,
            Some(tls) => {
                endpoint
                    .connect_with_connector(TlsDialer::new(tls.clone()))
                    .await
            }
        }
    }
}

/// Channels to other nodes, created (not connected) on first use and reused by
/// every client of that address: tonic reconnects a channel by itself. Cheap
/// to clone; clones share the cache.
#[derive(Clone, Default)]
pub struct ChannelCache {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    dialer: Dialer,
}

impl ChannelCache {
    pub fn new(dialer: Dialer) -> Self {
        ChannelCache {
            channels: Arc::default(),
            dialer,
        }
    }

    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The channel to `addr`, with [`PEER_CONNECT_TIMEOUT`].
    pub fn get(&self, addr: &str) -> Result<Channel, GrpcError> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = self
            .dialer
            .connect_lazy(&endpoint(addr, PEER_CONNECT_TIMEOUT)?);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    #[test]
    fn addresses_get_a_scheme_unless_they_have_one() {
        let plain = endpoint("127.0.0.1:7000", PEER_CONNECT_TIMEOUT).expect("valid");
        assert_eq!(plain.uri().to_string(), "http://127.0.0.1:7000/");
        let full = endpoint("https://node1:7000", PEER_CONNECT_TIMEOUT).expect("valid");
        assert_eq!(full.uri().scheme_str(), Some("https"));
        assert!(endpoint("bad address", PEER_CONNECT_TIMEOUT).is_err());
    }

    #[tokio::test]
    async fn one_channel_per_address() {
        let cache = ChannelCache::new(Dialer::plain());
        cache.get("127.0.0.1:7000").expect("valid");
        cache.get("127.0.0.1:7000").expect("valid");
        cache.get("127.0.0.1:7001").expect("valid");
        let count = cache.channels.lock().map(|m| m.len()).unwrap_or(0);
        assert_eq!(count, 2);
        assert!(matches!(
            cache.get("bad address"),
            Err(GrpcError::BadAddress { .. })
        ));
    }

    /// A loopback TCP relay to `to` that, while `cut` is set, drops what it
    /// reads instead of passing it on: a partition in which both TCP
    /// connections stay open and nothing gets through.
    async fn relay(to: std::net::SocketAddr, cut: Arc<AtomicBool>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(to).await else {
                    continue;
                };
                let (a_read, a_write) = inbound.into_split();
                let (b_read, b_write) = outbound.into_split();
                tokio::spawn(pump(a_read, b_write, cut.clone()));
                tokio::spawn(pump(b_read, a_write, cut.clone()));
            }
        });
        addr
    }

    async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, cut: Arc<AtomicBool>) {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test]
    async fn a_connection_that_stops_answering_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let cut = Arc::new(AtomicBool::new(false));
        let addr = relay(server_addr, cut.clone()).await;
        let channel = Dialer::plain()
            .connect_lazy(&endpoint(&addr.to_string(), PEER_CONNECT_TIMEOUT).expect("valid"));
        let mut client = HealthClient::new(channel);
        let check = |client: &mut HealthClient<Channel>| {
            let mut request = tonic::Request::new(HealthCheckRequest::default());
            // Far longer than the ping's two seconds: a request that
            // waits this long was left on the dead connection.
            request.set_timeout(Duration::from_secs(30));
            let mut client = client.clone();
            async move { client.check(request).await }
        };
        check(&mut client).await.expect("answered before the cut");

        cut.store(true, Ordering::SeqCst);
        let status = check(&mut client)
            .await
            .expect_err("nothing gets through the cut");
        // Dropped by the unanswered ping; tonic would report its own
        // request timeout as `Cancelled`.
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "the request was not failed by the connection being dropped: {status}"
        );

        // A fresh connection once the cut heals (the old one lost frames).
        cut.store(false, Ordering::SeqCst);
        check(&mut client)
            .await
            .expect("answered over a new connection");
    }
}
