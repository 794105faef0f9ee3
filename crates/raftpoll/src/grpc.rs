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

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("invalid address '{addr}': {message}")]
    BadAddress { addr: String, message: String },
}

/// An endpoint for `addr` (`host:port`, or a URI with its scheme) that gives
/// up connecting after `connect_timeout`. Callers add a request timeout and
/// message limits where they need them.
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
    Ok(endpoint.connect_timeout(connect_timeout).tcp_nodelay(true))
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
}
