//! Client-side gRPC connections to nodes: the one way to turn an address into
//! an `Endpoint`, and a cache of lazily connected channels, one per address.

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

/// Channels to other nodes, created (not connected) on first use and reused by
/// every client of that address: tonic reconnects a channel by itself. Cheap
/// to clone; clones share the cache.
#[derive(Clone, Default)]
pub struct ChannelCache {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ChannelCache {
    pub fn new() -> Self {
        ChannelCache::default()
    }

    /// The channel to `addr`, with [`PEER_CONNECT_TIMEOUT`].
    pub fn get(&self, addr: &str) -> Result<Channel, GrpcError> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = endpoint(addr, PEER_CONNECT_TIMEOUT)?.connect_lazy();
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
        let cache = ChannelCache::new();
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
