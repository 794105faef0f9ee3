//! `AsyncSnmpClient`: the node's SNMP engine on async-snmp, one shared UDP
//! socket for every device, many requests in flight, bounded node-wide and per device.

use super::client::{SnmpClient, SnmpClientConfig, SnmpTarget, walk_each};
use super::credentials::{AuthProtocol, PrivProtocol, SnmpCredentials};
use super::error::SnmpError;
use super::types::{Oid, SnmpValue, VarBind};
use crate::metrics::SnmpCounters;
use async_snmp::v3::ReportStatus;
use async_snmp::{
    Auth, Candidate, Client, ClientBuilder, DesSaltState, EngineCache, ErrorStatus, OidOrdering,
    PersistedDesSaltState, ReceiveLimits, RequestRegistration, Retry, Transport, UdpHandle,
    UdpTransport, UsmConfig, Value, WalkAbortReason, WalkMethod, WalkOptions,
};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};

/// Most varbinds one walk may return before we call the agent broken
/// (a looping agent would otherwise fill memory).
pub const MAX_WALK_VARBINDS: usize = 200_000;
/// GETBULK max-repetitions of a walk whose size is not known yet; async-snmp
/// halves it on tooBig.
const MAX_REPETITIONS: u32 = 25;
/// Largest max-repetitions of a walk sized from the previous walk of the same
/// root: about one Ethernet frame of counter rows. Agents cut a longer answer
/// short (RFC 3416 §4.2.3) and the walk goes on from there.
const MAX_SIZED_REPETITIONS: u32 = 50;
/// Walk sizes remembered per target (a poll walks about twenty roots).
const MAX_SIZED_ROOTS: usize = 64;
/// Most varbinds asked for in one GETBULK of columns walked side by side
/// (columns × max-repetitions): about 12 KB of counter rows. Agents cut a
/// longer answer short and the walk goes on from where it stopped.
const MAX_BULK_VARBINDS: u32 = 512;
/// Requested SO_RCVBUF: room for bursts of answers from many agents.
const RECV_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Cached credential sets per address before the oldest is dropped.
const MAX_ENTRIES_PER_ADDR: usize = 4;

/// The node's SNMP engine. Cheap to clone; clones share the socket, the
/// caches and the in-flight limits.
#[derive(Clone)]
pub struct AsyncSnmpClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: SnmpClientConfig,
    /// Socket for IPv4 targets (or for every target when `source_ip` is set).
    primary: UdpTransport,
    /// IPv6 socket, bound on first use when `source_ip` is not set.
    v6: OnceCell<UdpTransport>,
    engine_cache: Arc<EngineCache>,
    /// DES salt counter shared by every DES target, started on first use.
    des_salt: std::sync::OnceLock<DesSaltState>,
    in_flight: Arc<Semaphore>,
    targets: Mutex<HashMap<SocketAddr, Vec<Arc<TargetEntry>>>>,
    counters: SnmpCounters,
}

tokio::task_local! {
    /// Set while one SNMP operation (a GET, or a whole walk: one request
    /// outstanding at a time) runs: whether its last transmission timed out,
    /// which makes the next one a retry.
    static LAST_TIMED_OUT: Cell<bool>;
}

/// A target's handle on the shared socket, counting messages, retries,
/// timeouts and bytes for the node's metrics (atomic increments only).
struct Counted {
    inner: UdpHandle,
    counters: SnmpCounters,
}

impl Transport for Counted {
    async fn send(&self, data: &[u8]) -> async_snmp::Result<()> {
        self.counters.sent_bytes.inc_by(data.len() as u64);
        self.inner.send(data).await
    }

    async fn request_with<T, F>(
        &self,
        data: &[u8],
        registration: RequestRegistration,
        mut validate: F,
    ) -> async_snmp::Result<T>
    where
        T: Send,
        F: FnMut(hyper::body::Bytes, SocketAddr) -> async_snmp::Result<Candidate<T>> + Send,
    {
        let c = &self.counters;
        c.requests.inc();
        if LAST_TIMED_OUT
            .try_with(|t| t.replace(false))
            .unwrap_or(false)
        {
            c.retries.inc();
        }
        c.sent_bytes.inc_by(data.len() as u64);
        let received = &c.received_bytes;
        let result = self
            .inner
            .request_with(data, registration, move |bytes, from| {
                received.inc_by(bytes.len() as u64);
                validate(bytes, from)
            })
            .await;
        if let Err(e) = &result
            && matches!(**e, async_snmp::Error::Timeout { .. })
        {
            c.timeouts.inc();
            let _ = LAST_TIMED_OUT.try_with(|t| t.set(true));
        }
        result
    }

    fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr()
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn alloc_request_id(&self) -> i32 {
        self.inner.alloc_request_id()
    }

    fn is_reliable(&self) -> bool {
        self.inner.is_reliable()
    }

    fn receive_limits(&self) -> ReceiveLimits {
        self.inner.receive_limits()
    }

    fn send_capacity(&self) -> usize {
        self.inner.send_capacity()
    }
}

/// A per-target client handle on the shared socket, with its own in-flight cap.
struct TargetEntry {
    credentials: SnmpCredentials,
    client: Client<Counted>,
    permits: Arc<Semaphore>,
    /// Varbinds the last complete walk of each root returned, keyed by a hash
    /// of the root. The next walk of a table whose size has not changed then
    /// gets every row and the first object past it in one request, instead of
    /// rounds of 25 and a look past the end.
    walk_sizes: Mutex<Vec<(u64, u32)>>,
}

impl TargetEntry {
    fn walk_size(&self, key: u64) -> Option<u32> {
        lock(&self.walk_sizes)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| *n)
    }

    fn remember_walk_size(&self, key: u64, varbinds: usize) {
        let n = u32::try_from(varbinds).unwrap_or(u32::MAX);
        let mut sizes = lock(&self.walk_sizes);
        match sizes.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = n,
            None => {
                if sizes.len() >= MAX_SIZED_ROOTS {
                    sizes.remove(0);
                }
                sizes.push((key, n));
            }
        }
    }
}

/// Key of a walk root in [`TargetEntry::walk_sizes`]; a collision only costs
/// a walk sized for another table.
fn root_key(root: &Oid) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut h);
    h.finish()
}

/// max-repetitions for a walk that returned `previous` varbinds last time:
/// all of them plus one, to see the end of the table in the same answer.
fn sized_repetitions(previous: u32) -> u32 {
    previous.saturating_add(1).min(MAX_SIZED_REPETITIONS)
}

impl AsyncSnmpClient {
    /// Binds the shared socket (to `source_ip` when given) and sets up the limits.
    pub async fn new(config: SnmpClientConfig) -> Result<Self, SnmpError> {
        Self::with_counters(config, SnmpCounters::default()).await
    }

    /// [`AsyncSnmpClient::new`], counting requests, retries, timeouts and
    /// bytes in `counters`.
    pub async fn with_counters(
        config: SnmpClientConfig,
        counters: SnmpCounters,
    ) -> Result<Self, SnmpError> {
        if config.max_in_flight == 0 || config.per_device_in_flight == 0 {
            return Err(SnmpError::Config {
                detail: "max_in_flight and per-device in-flight must be at least 1".into(),
            });
        }
        let bind_ip = config
            .source_ip
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let primary = bind_transport(bind_ip).await?;
        tracing::debug!(local = %primary.local_addr(), "SNMP socket bound");
        Ok(AsyncSnmpClient {
            inner: Arc::new(Inner {
                in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
                config,
                primary,
                v6: OnceCell::new(),
                engine_cache: Arc::new(EngineCache::new()),
                des_salt: std::sync::OnceLock::new(),
                targets: Mutex::new(HashMap::new()),
                counters,
            }),
        })
    }

    /// Local address of the shared (IPv4 or `source_ip`) socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.primary.local_addr()
    }

    pub fn config(&self) -> &SnmpClientConfig {
        &self.inner.config
    }

    /// Forget the cached handle of a target (device removed or re-keyed).
    pub fn evict(&self, addr: SocketAddr) {
        lock(&self.inner.targets).remove(&addr);
    }

    /// Number of targets with a cached handle.
    pub fn cached_targets(&self) -> usize {
        lock(&self.inner.targets).values().map(Vec::len).sum()
    }

    async fn transport_for(&self, addr: SocketAddr) -> Result<&UdpTransport, SnmpError> {
        let inner = &self.inner;
        match (addr, inner.config.source_ip) {
            (SocketAddr::V6(_), None) => {
                inner
                    .v6
                    .get_or_try_init(|| bind_transport(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))
                    .await
            }
            (SocketAddr::V6(_), Some(IpAddr::V4(source))) => Err(SnmpError::Config {
                detail: format!("target {addr} is IPv6 but poller.source_ip {source} is IPv4"),
            }),
            _ => Ok(&inner.primary),
        }
    }

    /// The cached handle for `target`, built on first use. v3 engine
    /// discovery then happens once per target and is remembered.
    async fn entry(&self, target: &SnmpTarget) -> Result<Arc<TargetEntry>, SnmpError> {
        if let Some(entry) = self.cached(target) {
            return Ok(entry);
        }
        let config = &self.inner.config;
        let retry =
            Retry::fixed(config.retries, Duration::ZERO).map_err(|e| SnmpError::Config {
                detail: format!("retries: {e}"),
            })?;
        let walk_options = WalkOptions {
            method: WalkMethod::Auto,
            max_repetitions: MAX_REPETITIONS,
            ordering: OidOrdering::Strict,
            result_limit: Some(MAX_WALK_VARBINDS),
        };
        let transport = self.transport_for(target.addr).await?;
        let handle = transport
            .handle(target.addr)
            .map_err(|e| self.map_error(&target.credentials, *e))?;
        let mut builder = ClientBuilder::new(to_auth(&target.credentials)?)
            .request_timeout(config.timeout)
            .retry(retry)
            .walk_options(walk_options)
            .engine_cache(self.inner.engine_cache.clone())
            // Agents answer a wrong v3 password or an unknown user with an
            // unauthenticated Report; accepting it turns a long timeout into
            // "authentication failed". The cost: a spoofed Report can fail one
            // request, which dropping packets could do as well.
            .allow_unauthenticated_v3_time_correction(true);
        if uses_des(&target.credentials) {
            builder = builder.des_salt_state(self.des_salt()?);
        }
        let client = builder
            .build_with_transport(Counted {
                inner: handle,
                counters: self.inner.counters.clone(),
            })
            .map_err(|e| self.map_error(&target.credentials, *e))?;
        let fresh = Arc::new(TargetEntry {
            credentials: target.credentials.clone(),
            client,
            permits: Arc::new(Semaphore::new(config.per_device_in_flight)),
            walk_sizes: Mutex::new(Vec::new()),
        });
        let mut targets = lock(&self.inner.targets);
        let entries = targets.entry(target.addr).or_default();
        // Another task may have built one meanwhile: keep the first, so the
        // per-device cap stays a single semaphore.
        if let Some(existing) = entries.iter().find(|e| e.credentials == target.credentials) {
            return Ok(existing.clone());
        }
        if entries.len() >= MAX_ENTRIES_PER_ADDR {
            entries.remove(0);
        }
        entries.push(fresh.clone());
        Ok(fresh)
    }

    /// DES salts must never repeat under one key. Each process starts a new
    /// salt epoch from the clock (seconds), so restarts more than a second
    /// apart never reuse an epoch; within a process the counter advances.
    fn des_salt(&self) -> Result<DesSaltState, SnmpError> {
        if let Some(state) = self.inner.des_salt.get() {
            return Ok(state.clone());
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        // Epochs live in 1..2^31-1; wrap the clock into that range.
        let previous = u32::try_from(secs % 0x7FFF_FFF0).unwrap_or(1).max(1);
        let bad = |e: &dyn std::fmt::Display| SnmpError::Config {
            detail: format!("DES privacy state: {e}"),
        };
        let previous = PersistedDesSaltState::new(previous).map_err(|e| bad(&e))?;
        let state = DesSaltState::restart(previous, |_| Ok::<(), std::convert::Infallible>(()))
            .map_err(|e| bad(&e))?;
        Ok(self.inner.des_salt.get_or_init(|| state).clone())
    }

    fn cached(&self, target: &SnmpTarget) -> Option<Arc<TargetEntry>> {
        lock(&self.inner.targets)
            .get(&target.addr)?
            .iter()
            .find(|e| e.credentials == target.credentials)
            .cloned()
    }

    /// Runs `op` holding one per-device and one node-wide slot. A walk holds
    /// its slots throughout: it never has more than one request outstanding.
    async fn limited<T, F>(&self, entry: &TargetEntry, op: F) -> Result<T, SnmpError>
    where
        F: Future<Output = Result<T, SnmpError>>,
    {
        // Device slot first, so a busy device does not hold node-wide slots while it waits.
        let _device = entry
            .permits
            .acquire()
            .await
            .map_err(|_| SnmpError::Closed)?;
        let _node = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| SnmpError::Closed)?;
        LAST_TIMED_OUT.scope(Cell::new(false), op).await
    }

    fn map_error(&self, credentials: &SnmpCredentials, error: async_snmp::Error) -> SnmpError {
        map_error(&self.inner.config, credentials, error)
    }

    async fn get_inner(
        &self,
        entry: &TargetEntry,
        oids: &[Oid],
    ) -> Result<Vec<VarBind>, SnmpError> {
        let mut missing: HashSet<Oid> = HashSet::new();
        // v1 answers a missing object with noSuchName for the whole PDU: drop
        // the named object and ask again for the rest (at most once per OID).
        for _ in 0..=oids.len() {
            let ask: Vec<async_snmp::Oid> = oids
                .iter()
                .filter(|oid| !missing.contains(*oid))
                .map(to_wire_oid)
                .collect();
            if ask.is_empty() {
                break;
            }
            match entry.client.get_many(&ask).await {
                Ok(response) => {
                    let mut found: HashMap<Oid, SnmpValue> = response
                        .varbinds
                        .into_iter()
                        .map(|vb| (from_wire_oid(&vb.oid), from_wire_value(vb.value)))
                        .collect();
                    return Ok(oids
                        .iter()
                        .map(|oid| {
                            let value = found.remove(oid).unwrap_or(SnmpValue::NoSuchInstance);
                            VarBind::new(oid.clone(), value)
                        })
                        .collect());
                }
                Err(error) => match error.exchange_source() {
                    async_snmp::Error::Snmp {
                        status: ErrorStatus::NoSuchName,
                        oid: Some(bad),
                        ..
                    } if missing.insert(from_wire_oid(bad)) => continue,
                    _ => return Err(self.map_error(&entry.credentials, *error)),
                },
            }
        }
        Ok(oids
            .iter()
            .map(|oid| VarBind::new(oid.clone(), SnmpValue::NoSuchInstance))
            .collect())
    }

    async fn walk_inner(&self, entry: &TargetEntry, root: &Oid) -> Result<Vec<VarBind>, SnmpError> {
        let key = root_key(root);
        let mut options = entry.client.walk_options();
        if let Some(previous) = entry.walk_size(key) {
            options.max_repetitions = sized_repetitions(previous);
        }
        let mut stream = entry
            .client
            .walk_with(to_wire_oid(root), options)
            .map_err(|e| self.map_error(&entry.credentials, *e))?;
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(vb) => out.push(VarBind::new(
                    from_wire_oid(&vb.oid),
                    from_wire_value(vb.value),
                )),
                Err(error) => {
                    if let async_snmp::Error::WalkAborted { reason, .. } = error.exchange_source() {
                        match reason {
                            // A buggy agent looping back: keep what came in order.
                            WalkAbortReason::NonIncreasing | WalkAbortReason::Cycle => {
                                tracing::warn!(
                                    agent = %entry.client.peer_addr(), %root,
                                    kept = out.len(),
                                    "walk stopped: agent returned a non-increasing OID"
                                );
                                return Ok(out);
                            }
                            WalkAbortReason::ResultLimitExceeded { limit } => {
                                return Err(SnmpError::WalkTooLarge {
                                    root: root.to_string(),
                                    limit: *limit,
                                });
                            }
                            _ => {}
                        }
                    }
                    return Err(self.map_error(&entry.credentials, *error));
                }
            }
        }
        entry.remember_walk_size(key, out.len());
        Ok(out)
    }
}

/// One column of a side-by-side walk ([`AsyncSnmpClient::walk_side_by_side`]).
struct ColumnWalk {
    root: Oid,
    found: Vec<VarBind>,
    done: bool,
}

impl ColumnWalk {
    /// Where the next request continues: the last OID read, or the root.
    fn next(&self) -> &Oid {
        self.found.last().map_or(&self.root, |vb| &vb.oid)
    }

    /// Takes one varbind the agent returned for this column; false once
    /// the column has ended (left its subtree, end of MIB, or an agent
    /// going backwards, whose in-order part is kept).
    fn take(&mut self, oid: Oid, value: SnmpValue) -> bool {
        if value == SnmpValue::EndOfMibView || !oid.starts_with(&self.root) || oid <= *self.next() {
            self.done = true;
            return false;
        }
        self.found.push(VarBind::new(oid, value));
        true
    }
}

impl AsyncSnmpClient {
    /// Walks `roots` side by side: each GETBULK carries every unfinished
    /// column, so a table of 30 rows and 15 columns costs one or two
    /// requests instead of fifteen. v2c/v3 only.
    async fn walk_side_by_side(
        &self,
        entry: &TargetEntry,
        roots: &[Oid],
    ) -> Result<Vec<Vec<VarBind>>, SnmpError> {
        let mut columns: Vec<ColumnWalk> = roots
            .iter()
            .map(|root| ColumnWalk {
                root: root.clone(),
                found: Vec::new(),
                done: false,
            })
            .collect();
        // The longest previous walk of these roots sizes the first request.
        let expected = roots
            .iter()
            .filter_map(|root| entry.walk_size(root_key(root)))
            .max();
        let mut repetitions = expected.map_or(MAX_REPETITIONS, sized_repetitions);
        loop {
            let active: Vec<usize> = (0..columns.len()).filter(|i| !columns[*i].done).collect();
            if active.is_empty() {
                break;
            }
            let width = u32::try_from(active.len()).unwrap_or(u32::MAX);
            let reps = repetitions.min((MAX_BULK_VARBINDS / width).max(1));
            let ask: Vec<async_snmp::Oid> = active
                .iter()
                .map(|i| to_wire_oid(columns[*i].next()))
                .collect();
            let answer = match entry.client.get_bulk(&ask, 0, reps).await {
                Ok(answer) => answer,
                Err(error)
                    if matches!(
                        error.exchange_source(),
                        async_snmp::Error::Snmp {
                            status: ErrorStatus::TooBig,
                            ..
                        }
                    ) && reps > 1 =>
                {
                    repetitions = reps / 2;
                    continue;
                }
                Err(error) => return Err(self.map_error(&entry.credentials, *error)),
            };
            let mut progressed = false;
            // The answer is row after row, one varbind per asked column.
            for (n, vb) in answer.into_iter().enumerate() {
                let column = &mut columns[active[n % active.len()]];
                if column.done {
                    continue;
                }
                progressed |= column.take(from_wire_oid(&vb.oid), from_wire_value(vb.value));
                if column.found.len() > MAX_WALK_VARBINDS {
                    return Err(SnmpError::WalkTooLarge {
                        root: column.root.to_string(),
                        limit: MAX_WALK_VARBINDS,
                    });
                }
            }
            if !progressed {
                // An empty or useless answer: end every column here rather
                // than ask the same thing again.
                break;
            }
            // Columns of one table end together; the rest are small.
            repetitions = MAX_REPETITIONS;
        }
        Ok(columns
            .into_iter()
            .map(|column| {
                entry.remember_walk_size(root_key(&column.root), column.found.len());
                column.found
            })
            .collect())
    }
}

impl SnmpClient for AsyncSnmpClient {
    async fn get(&self, target: &SnmpTarget, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let entry = self.entry(target).await?;
        self.limited(&entry, self.get_inner(&entry, oids)).await
    }

    async fn walk(&self, target: &SnmpTarget, root: &Oid) -> Result<Vec<VarBind>, SnmpError> {
        let entry = self.entry(target).await?;
        self.limited(&entry, self.walk_inner(&entry, root)).await
    }

    async fn walk_many(
        &self,
        target: &SnmpTarget,
        roots: &[Oid],
    ) -> Result<Vec<Vec<VarBind>>, SnmpError> {
        // v1 has no GETBULK. A refused side-by-side walk is not retried
        // here: the caller knows whether column by column is worth it.
        if roots.len() < 2 || matches!(target.credentials, SnmpCredentials::V1 { .. }) {
            return walk_each(self, target, roots).await;
        }
        let entry = self.entry(target).await?;
        // Boxed: nested in a poll's future, this one would take the
        // compiler past its layout depth limit.
        Box::pin(self.limited(&entry, self.walk_side_by_side(&entry, roots))).await
    }
}

async fn bind_transport(ip: IpAddr) -> Result<UdpTransport, SnmpError> {
    let bind = SocketAddr::new(ip, 0);
    UdpTransport::builder()
        .bind(bind.to_string())
        .recv_buffer_size(RECV_BUFFER_BYTES)
        .build()
        .await
        .map_err(|e| SnmpError::Io {
            detail: format!("cannot bind SNMP socket to {bind}: {}", io_detail(&e)),
        })
}

fn io_detail(error: &async_snmp::Error) -> String {
    match error.exchange_source() {
        async_snmp::Error::Network { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Our credentials as async-snmp's `Auth`. Errors name the user, never a password.
fn to_auth(credentials: &SnmpCredentials) -> Result<Auth, SnmpError> {
    match credentials {
        SnmpCredentials::V1 { community } => Ok(Auth::v1(community.expose())),
        SnmpCredentials::V2c { community } => Ok(Auth::v2c(community.expose())),
        SnmpCredentials::V3(usm) => {
            let bad = |e: async_snmp::CryptoError| SnmpError::Config {
                detail: format!("v3 user '{}': {e}", usm.user),
            };
            let base = UsmConfig::new(usm.user.clone());
            let config = match (&usm.auth, &usm.privacy) {
                (None, None) => base,
                (None, Some(_)) => {
                    return Err(SnmpError::Config {
                        detail: format!(
                            "v3 user '{}': privacy needs an authentication protocol",
                            usm.user
                        ),
                    });
                }
                (Some((auth, auth_pass)), None) => base
                    .auth(wire_auth(*auth), auth_pass.expose())
                    .map_err(bad)?,
                (Some((auth, auth_pass)), Some((privacy, priv_pass))) => base
                    .auth_priv(
                        wire_auth(*auth),
                        auth_pass.expose(),
                        wire_priv(*privacy),
                        priv_pass.expose(),
                    )
                    .map_err(bad)?,
            };
            Ok(config.into())
        }
    }
}

fn uses_des(credentials: &SnmpCredentials) -> bool {
    matches!(credentials, SnmpCredentials::V3(usm) if matches!(usm.privacy, Some((PrivProtocol::Des, _))))
}

fn wire_auth(protocol: AuthProtocol) -> async_snmp::AuthProtocol {
    match protocol {
        AuthProtocol::Md5 => async_snmp::AuthProtocol::Md5,
        AuthProtocol::Sha1 => async_snmp::AuthProtocol::Sha1,
        AuthProtocol::Sha256 => async_snmp::AuthProtocol::Sha256,
        AuthProtocol::Sha512 => async_snmp::AuthProtocol::Sha512,
    }
}

fn wire_priv(protocol: PrivProtocol) -> async_snmp::PrivProtocol {
    match protocol {
        PrivProtocol::Des => async_snmp::PrivProtocol::Des,
        PrivProtocol::Aes128 => async_snmp::PrivProtocol::Aes128,
        // net-snmp's "AES256" localises its key the Blumenthal way.
        PrivProtocol::Aes256 => async_snmp::PrivProtocol::Aes256Blumenthal,
    }
}

fn to_wire_oid(oid: &Oid) -> async_snmp::Oid {
    async_snmp::Oid::from_slice(oid.arcs())
}

fn from_wire_oid(oid: &async_snmp::Oid) -> Oid {
    Oid::from(oid.arcs())
}

fn from_wire_value(value: Value) -> SnmpValue {
    match value {
        Value::Integer(v) => SnmpValue::Integer(i64::from(v)),
        Value::OctetString(bytes) => SnmpValue::OctetString(bytes.to_vec()),
        Value::Null => SnmpValue::Null,
        Value::ObjectIdentifier(oid) => SnmpValue::ObjectId(from_wire_oid(&oid)),
        Value::IpAddress(ip) => SnmpValue::IpAddress(ip),
        Value::Counter32(v) => SnmpValue::Counter32(v),
        Value::Gauge32(v) | Value::UInteger32(v) => SnmpValue::Gauge32(v),
        Value::TimeTicks(v) => SnmpValue::TimeTicks(v),
        Value::Opaque(bytes) | Value::Nsap(bytes) => SnmpValue::Opaque(bytes.to_vec()),
        Value::Counter64(v) => SnmpValue::Counter64(v),
        Value::NoSuchObject => SnmpValue::NoSuchObject,
        Value::NoSuchInstance => SnmpValue::NoSuchInstance,
        Value::EndOfMibView => SnmpValue::EndOfMibView,
        Value::Unknown { data, .. } => SnmpValue::Opaque(data.to_vec()),
        // async-snmp may add types; treat them as opaque bytes we do not graph.
        _ => SnmpValue::Opaque(Vec::new()),
    }
}

/// async-snmp's error as ours. Its messages name addresses and OIDs, never
/// communities or passwords; the user name is added for v3 auth failures.
fn map_error(
    config: &SnmpClientConfig,
    credentials: &SnmpCredentials,
    error: async_snmp::Error,
) -> SnmpError {
    let user = match credentials {
        SnmpCredentials::V3(usm) => usm.user.as_str(),
        _ => "",
    };
    let timeout_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
    match error.exchange_source() {
        async_snmp::Error::Timeout { retries, .. } => SnmpError::Timeout {
            tries: retries.saturating_add(1),
            timeout_ms,
        },
        async_snmp::Error::ConstructionTimeout { .. } => SnmpError::Timeout {
            tries: 1,
            timeout_ms,
        },
        async_snmp::Error::Auth { .. } => SnmpError::AuthFailure {
            detail: format!("wrong password or unknown user '{user}'"),
        },
        async_snmp::Error::Report { status, .. } => report_error(status, user),
        async_snmp::Error::Privacy(e) => SnmpError::AuthFailure {
            detail: format!("privacy failed for user '{user}': {e}"),
        },
        async_snmp::Error::Snmp { status, index, .. } => SnmpError::Agent {
            status: status.to_string(),
            index: *index,
        },
        async_snmp::Error::Decode(e) => SnmpError::Malformed {
            detail: e.to_string(),
        },
        async_snmp::Error::MalformedResponse { .. } => SnmpError::Malformed {
            detail: "answer does not match the request".into(),
        },
        async_snmp::Error::ResponseShape { .. } => SnmpError::Malformed {
            detail: "unexpected varbinds in the answer".into(),
        },
        async_snmp::Error::Network { source, .. } => SnmpError::Io {
            detail: source.to_string(),
        },
        async_snmp::Error::Closed { .. } => SnmpError::Closed,
        async_snmp::Error::Config(detail) => SnmpError::Config {
            detail: detail.to_string(),
        },
        async_snmp::Error::WalkAborted { reason, .. } => SnmpError::Malformed {
            detail: format!("walk aborted: {reason}"),
        },
        other => SnmpError::Other {
            detail: other.to_string(),
        },
    }
}

fn report_error(status: &ReportStatus, user: &str) -> SnmpError {
    let detail = match status {
        ReportStatus::UnknownUserName { .. } => format!("unknown user '{user}'"),
        ReportStatus::WrongDigest { .. } => {
            format!("wrong authentication password or protocol for user '{user}'")
        }
        ReportStatus::DecryptionError { .. } => {
            format!("decryption failed for user '{user}': wrong privacy password or protocol")
        }
        ReportStatus::UnsupportedSecurityLevel { .. } => {
            format!("security level not allowed for user '{user}'")
        }
        ReportStatus::NotInTimeWindow { .. } => {
            format!("agent rejected our engine time for user '{user}' (clock out of window)")
        }
        ReportStatus::UnknownEngineId { .. } => "agent does not know our engine id".to_string(),
        other => format!("agent report: {other}"),
    };
    SnmpError::AuthFailure { detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::snmp::credentials::UsmCredentials;
    use raftpoll_sim::{self as sim, Agent, Device, LoadOptions, Recording, Stats};

    /// One raftpoll-sim device on loopback serving `snmprec` (community
    /// `c`, answers of at most `max_size` bytes), and a v2c target for it.
    struct SimAgent {
        target: SnmpTarget,
        stats: Arc<Stats>,
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<Result<(), sim::SimError>>,
    }

    impl SimAgent {
        fn start(snmprec: &str, max_size: usize) -> SimAgent {
            let recording = Arc::new(Recording::parse(snmprec.as_bytes(), LoadOptions::default()));
            let socket = sim::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = socket.local_addr().unwrap();
            let device = Device {
                port: addr.port(),
                community: b"c".to_vec(),
                recording,
                misbehave: None,
            };
            let agent = Arc::new(Agent::new(vec![device], max_size));
            let stats = Arc::new(Stats::default());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(sim::serve(
                vec![socket],
                agent,
                None,
                stats.clone(),
                async {
                    let _ = stopped.await;
                },
            ));
            let target = SnmpTarget::new(
                addr,
                SnmpCredentials::V2c {
                    community: Secret::new("c"),
                },
            );
            SimAgent {
                target,
                stats,
                stop,
                server,
            }
        }

        async fn stop(self) {
            let _ = self.stop.send(());
            self.server.await.unwrap().unwrap();
        }
    }

    /// The second walk of a root asks for as many rows as the first one found
    /// (plus one to see the end): one request instead of two rounds of 25.
    #[tokio::test]
    async fn walks_are_sized_from_the_previous_walk_of_the_same_root() {
        use std::sync::atomic::Ordering::Relaxed;
        // A 30-row column (ifHCInOctets) followed by another one (ifHCOutOctets).
        let text: String = (1..=30)
            .map(|i| format!("1.3.6.1.2.1.31.1.1.1.6.{i}|70|{i}\n"))
            .chain((1..=30).map(|i| format!("1.3.6.1.2.1.31.1.1.1.10.{i}|70|{i}\n")))
            .collect();
        let agent = SimAgent::start(&text, sim::DEFAULT_MAX_SIZE);
        let (target, stats) = (&agent.target, &agent.stats);
        let client = AsyncSnmpClient::new(SnmpClientConfig::default())
            .await
            .unwrap();
        // (requests, varbinds) the agent answered so far.
        let answered = || (stats.answered.load(Relaxed), stats.varbinds.load(Relaxed));
        let column = Oid::from([1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6]);
        let first = client.walk(target, &column).await.unwrap();
        assert_eq!(first.len(), 30);
        assert_eq!(
            answered(),
            (2, 50),
            "rows 1-25, then 26-30 and 20 past the end"
        );
        let second = client.walk(target, &column).await.unwrap();
        assert_eq!(second, first);
        assert_eq!(
            answered(),
            (3, 81),
            "30 rows and the first object past them"
        );
        // A root with nothing under it: one varbind past the end next time.
        let absent = Oid::from([1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 7]);
        assert!(client.walk(target, &absent).await.unwrap().is_empty());
        assert!(client.walk(target, &absent).await.unwrap().is_empty());
        assert_eq!(answered(), (5, 81 + 25 + 1));
        assert_eq!(sized_repetitions(500), MAX_SIZED_REPETITIONS);
        agent.stop().await;
    }

    /// Columns walked side by side come back as walked one by one, in far
    /// fewer requests, also when the agent cuts answers short mid-row.
    #[tokio::test]
    async fn columns_walked_side_by_side_match_single_walks() {
        use std::sync::atomic::Ordering::Relaxed;
        // Three 30-row columns, one absent column between them, and a
        // scalar after them.
        let text: String = [6, 10, 18]
            .iter()
            .flat_map(|col| {
                (1..=30).map(move |i| format!("1.3.6.1.2.1.31.1.1.1.{col}.{i}|70|{}\n", i * col))
            })
            .chain(std::iter::once("1.3.6.1.2.1.47.1.0|2|1\n".to_string()))
            .collect();
        let roots: Vec<Oid> = [6, 7, 10, 18]
            .iter()
            .map(|col| Oid::from([1, 3, 6, 1, 2, 1, 31, 1, 1, 1, *col]))
            .collect();
        // A roomy agent (largest UDP payload), one as most agents (one
        // Ethernet frame), and one whose answers hold about 15 varbinds.
        const ROOMY: usize = 65_507;
        for max_size in [ROOMY, sim::DEFAULT_MAX_SIZE, 400] {
            let agent = SimAgent::start(&text, max_size);
            let (target, stats) = (&agent.target, &agent.stats);
            let client = AsyncSnmpClient::new(SnmpClientConfig::default())
                .await
                .unwrap();
            let mut single = Vec::new();
            for root in &roots {
                single.push(client.walk(target, root).await.unwrap());
            }
            let single_requests = stats.answered.load(Relaxed);
            let side_by_side = client.walk_many(target, &roots).await.unwrap();
            assert_eq!(side_by_side, single, "max size {max_size}");
            assert_eq!(
                side_by_side.iter().map(Vec::len).collect::<Vec<_>>(),
                vec![30, 0, 30, 30]
            );
            let requests = stats.answered.load(Relaxed) - single_requests;
            if max_size == ROOMY {
                assert_eq!(requests, 1, "every column and row in one answer");
            } else {
                assert!(
                    requests < single_requests,
                    "{requests} vs {single_requests}"
                );
            }
            agent.stop().await;
        }
    }

    #[test]
    fn short_v3_password_is_a_config_error_without_the_password() {
        let creds = SnmpCredentials::V3(Box::new(UsmCredentials {
            user: "bob".into(),
            auth: Some((AuthProtocol::Sha1, Secret::new("short"))),
            privacy: None,
        }));
        let err = to_auth(&creds).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("bob"), "{text}");
        assert!(!text.contains("short\""), "{text}");
        assert!(matches!(err, SnmpError::Config { .. }));
    }

    #[test]
    fn error_messages_are_readable() {
        let config = SnmpClientConfig::default();
        let v2 = SnmpCredentials::V2c {
            community: Secret::new("s3cret-community"),
        };
        let err = map_error(
            &config,
            &v2,
            async_snmp::Error::Timeout {
                target: "127.0.0.1:161".parse().unwrap(),
                elapsed: Duration::from_secs(3),
                retries: 2,
            },
        );
        assert_eq!(
            err.to_string(),
            "no response after 3 tries (timeout 1000 ms)"
        );
        let v3 = SnmpCredentials::V3(Box::new(UsmCredentials {
            user: "bob".into(),
            auth: Some((AuthProtocol::Sha1, Secret::new("authpass123"))),
            privacy: None,
        }));
        let err = map_error(
            &config,
            &v3,
            async_snmp::Error::Auth {
                target: "127.0.0.1:161".parse().unwrap(),
            },
        );
        assert_eq!(
            err.to_string(),
            "authentication failed: wrong password or unknown user 'bob'"
        );
    }
}
