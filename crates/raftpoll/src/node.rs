//! Starts and stops a node: every task, one shutdown signal, ordered teardown.
//!
//! [`run`] reads as its list of steps, one function each: TLS → storage and
//! node id → Raft → RRD writer → gRPC server → metrics server → bootstrap →
//! membership and registration, SNMP engine, scheduler, reporter,
//! controller. Shutdown stops the tasks, then the writer, the metrics
//! server, Raft and the gRPC server. SIGHUP re-reads the TLS files.

use crate::api::admin::{RrdStatusSource, admin_service};
use crate::api::peer::peer_service;
use crate::cluster::absence;
use crate::cluster::controller::{self, ControllerConfig};
use crate::cluster::features::{FEATURE_LEVEL, Features, LEVEL_MAX_ENV};
use crate::cluster::handle::ClusterHandle;
use crate::cluster::membership;
use crate::cluster::network::{GrpcNetworkFactory, raft_service_with};
use crate::cluster::raft::{Raft, TimerPeriods, drive_timers, raft_config};
use crate::config::{Config, ConfigError};
use crate::grpc::Dialer;
use crate::librenms::pollers::{self, PollerInfo};
use crate::librenms::writeback::{self, WritebackConfig};
use crate::librenms::{Librenms, LibrenmsError, inventory};
use crate::metrics::{Metrics, SourceTiming};
use crate::model::types::{Command, NodeId, NodeInfo};
use crate::poller::icmp::{IcmpError, Pinger};
use crate::poller::reporter::{self, ReportBuffer};
use crate::poller::schedule::Timing;
use crate::poller::scheduler::{self, PollExtras, SchedulerConfig};
use crate::proto;
use crate::rrd::client::RrdcachedAddr;
use crate::rrd::writer::{RrdWriter, RrdWriterConfig, RrdWriterHandle};
use crate::runtime::{
    self, LIBRENMS_THREAD_NAME, NamedRuntime, POLL_THREAD_NAME, POLLING_NICE, RAFT_THREAD_NAME,
    RAFT_THREADS,
};
use crate::snmp::{AsyncSnmpClient, SnmpClientConfig};
use crate::storage::{PortNames, StorageError, Store};
use crate::tls::{NodeTls, TlsError};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NODE_ID_KEY: &str = "node_id";

/// Streams a peer may open and cancel before this node's server reads them,
/// per connection, before HTTP/2 closes the connection (h2's default is 20).
/// A peer that was paused or cut off comes back to a backlog of requests its
/// callers have given up on (heartbeats every 100 ms, appends, claims): at
/// 20, every heal closed the connection that replication had just resumed
/// on, about a dozen times per chaos run.
const MAX_PENDING_RESET_STREAMS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot serve metrics: metrics_listen = \"{addr}\": {source}")]
    MetricsListen {
        addr: String,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error(
        "this node has no id yet and `bootstrap` is false: set `bootstrap = true` on the first node \
         of a new cluster, or list running nodes in `seeds`"
    )]
    NothingToJoin,
    #[error("invalid rrd.rrdcached: {0}")]
    Rrdcached(String),
    #[error("{0}")]
    Join(String),
    #[error("SNMP engine: {0}")]
    Snmp(String),
    #[error("gRPC server: {0}")]
    Server(String),
    #[error("{0}")]
    Librenms(String),
    #[error(transparent)]
    Icmp(#[from] IcmpError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Exit status of a node whose data was written by a newer raftpoll.
pub const EXIT_TOO_NEW: u8 = 3;

impl NodeError {
    /// The data directory holds a format or entry kind of a newer version.
    pub fn is_too_new(&self) -> bool {
        matches!(self, NodeError::Storage(StorageError::TooNew { .. }))
    }
}

/// `raftpoll node --config FILE`: loads the config, sets up logging, runs
/// until SIGINT/SIGTERM.
pub async fn run_from_file(path: &Path) -> Result<(), NodeError> {
    let config = Config::load(path)?;
    init_logging(&config.log_format);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::MetricsListen {
                        addr: addr.to_string(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    run(config, listener, metrics_listener, shutdown_signal()).await
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,openraft=warn,sled=warn,h2=warn,tower=warn,async_snmp=off",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs a node on an already bound listener (and metrics listener, when
/// `metrics_listen` is set) until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let advertise = config.advertise_addr();
    // Updated by every subsystem; served only with `metrics_listen`.
    let metrics = Metrics::default();

    // 0. TLS: certificates checked before anything else starts.
    let tls = load_tls(&config)?;
    let dialer = tls
        .as_ref()
        .map_or_else(Dialer::plain, |t| Dialer::tls(t.client.clone()));

    // 1. Storage and identity. `store` lives as long as the node.
    let (store, node_id, found_cluster) = open_storage(&config, &dialer).await?;
    tracing::info!(node_id, name = %config.node_name, listen = %config.listen, %advertise, "starting node");

    // 2. One shutdown signal for every task; `exit` is how a graceful leave
    // asks for it.
    let (stop_tx, stop_rx) = watch::channel(false);
    let exit = Arc::new(tokio::sync::Notify::new());

    // 3. RRD writer (its status is served by Admin): its spool is opened
    // (and a large one scanned) before Raft runs, so that never delays a
    // heartbeat.
    let (writer, writer_task) = start_rrd_writer(&config, stop_rx.clone())?;

    // 4. Raft, and the LibreNMS link when configured, each on threads of
    // their own: a busy poller must not delay a heartbeat or an apply.
    let raft_runtime = NamedRuntime::new(RAFT_THREAD_NAME, RAFT_THREADS)
        .map_err(|e| NodeError::Raft(format!("cannot start Raft's threads: {e}")))?;
    let (raft, cluster) = raft_runtime
        .handle()
        .spawn(start_raft(
            config.clone(),
            store.clone(),
            node_id,
            dialer,
            metrics.clone(),
        ))
        .await
        .map_err(|e| NodeError::Raft(format!("Raft start-up task: {e}")))??;
    let librenms = start_librenms(&config).await?;
    let port_names = store.port_names()?;

    // 5. gRPC server: Raft, Peer, Admin, health, reflection.
    let services = Services {
        raft: &raft,
        cluster: &cluster,
        writer: &writer,
        librenms: librenms.as_ref(),
        port_names: &port_names,
        exit: &exit,
    };
    let mut server_task = start_server(
        &config,
        listener,
        services,
        tls.clone(),
        stop_rx.clone(),
        raft_runtime.handle(),
    )
    .await?;
    let reload_task = tokio::spawn(reload_on_sighup(tls, stop_rx.clone()));

    // 5b. Prometheus metrics, when `metrics_listen` is set.
    metrics.attach(
        cluster.clone(),
        writer.clone(),
        SourceTiming {
            lease: Duration::from_millis(config.cluster.lease_ms),
            node_timeout: Duration::from_millis(config.cluster.node_timeout_ms),
            frequency: u64::from(config.poller.frequency),
            down_retry: u64::from(config.poller.down_retry),
        },
    );
    let metrics_task = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        crate::metrics::serve(metrics.clone(), l, stop_rx.clone())
    });

    // 6. Bootstrap a new cluster (only a node that just found no existing one).
    if found_cluster {
        bootstrap(&raft, node_id, &advertise).await?;
    }

    // 7. Background tasks.
    let tasks = spawn_tasks(
        &config,
        services,
        node_id,
        &metrics,
        &stop_rx,
        raft_runtime.handle(),
    )
    .await?;

    // 8. Run until asked to stop (or the server dies), then tear down in order.
    tokio::pin!(shutdown);
    let (server_result, planned) = tokio::select! {
        _ = &mut shutdown => (None, true),
        _ = exit.notified() => (None, false),
        r = &mut server_task => (Some(r), false),
    };
    // 9. A signal is a planned absence: hand over first, while still polling.
    if planned {
        let timeout = Duration::from_millis(config.cluster.shutdown_timeout_ms);
        tracing::info!(
            node_id,
            ?timeout,
            "stopping: handing leadership and devices over"
        );
        // A registration still waiting for a leader must not land after the
        // absence's own (no groups) and hand the devices back.
        tasks.register.abort();
        let absence = absence::step_away(&cluster, timeout).await;
        tracing::info!(node_id, ?absence, "hand-over done");
    }
    tracing::info!(node_id, "shutting down");
    let _ = stop_tx.send(true);
    tasks.join().await;
    let _ = reload_task.await;
    let _ = writer_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    let server_result = match server_result {
        Some(r) => r,
        None => server_task.await,
    };
    drop(store);
    match server_result {
        Ok(result) => result,
        Err(e) => Err(NodeError::Server(e.to_string())),
    }
}

/// Step 1: the data directory, the store in it, and this node's id (with
/// whether it must bootstrap a new cluster).
async fn open_storage(
    config: &Config,
    dialer: &Dialer,
) -> Result<(Store, NodeId, bool), NodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Store::open(&config.data_dir.join("raft")).await?;
    let (node_id, found_cluster) = node_id(&store, config, dialer).await?;
    Ok((store, node_id, found_cluster))
}

/// Step 0: `[tls]` loaded and checked (a bad file stops the node, named);
/// without it, plaintext, with a warning unless only this machine can connect.
fn load_tls(config: &Config) -> Result<Option<NodeTls>, NodeError> {
    match &config.tls {
        Some(settings) => {
            let tls = NodeTls::load(settings, &config.advertise_addr())?;
            tracing::info!(
                cert = %settings.cert_file.display(),
                ca = %settings.ca_file.display(),
                client_auth = ?settings.client_auth,
                "TLS on every gRPC connection"
            );
            Ok(Some(tls))
        }
        None => {
            if !crate::tls::is_loopback(&config.listen) {
                tracing::warn!(
                    listen = %config.listen,
                    "no [tls] section: gRPC is plaintext on a non-loopback address; the cluster \
                     secret and SNMP credentials can be read on the network"
                );
            }
            Ok(None)
        }
    }
}

/// Re-reads the TLS files on every SIGHUP until shutdown. A bad file is
/// logged (named) and the certificates in use stay.
async fn reload_on_sighup(tls: Option<NodeTls>, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; TLS files are not reloadable");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = hup.recv() => {}
            }
            match &tls {
                None => tracing::info!("SIGHUP: no [tls] section, nothing to reload"),
                Some(tls) => match tls.reload() {
                    Ok(()) => tracing::info!(
                        cert = %tls.files().cert_file.display(),
                        "SIGHUP: TLS certificates reloaded; new connections use them"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: TLS reload refused; the certificates in use stay"
                    ),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
        let _ = stop.changed().await;
    }
}

/// Step 4: the Raft instance on the store, and the handle the rest of the
/// node uses to read and propose. Runs on Raft's runtime: openraft spawns
/// its tasks where it starts.
async fn start_raft(
    config: Config,
    store: Store,
    node_id: NodeId,
    dialer: Dialer,
    metrics: Metrics,
) -> Result<(Raft, ClusterHandle), NodeError> {
    let features = Features::from_env().map_err(NodeError::Raft)?;
    if features.local_level() < FEATURE_LEVEL {
        tracing::warn!(
            level = features.local_level(),
            "held at an older feature level ({LEVEL_MAX_ENV})"
        );
    }
    let (log_store, mut sm_store) = store.raft_stores().await?;
    sm_store.set_metrics(metrics.snapshots().clone());
    sm_store.stagger_snapshots(node_id);
    let log_store = log_store
        .with_feature_level(features.local_level())
        .with_appended_counter(metrics.log_appended_bytes().clone());
    // Entries not yet applied must all be readable here: say which one is
    // not (and exit with EXIT_TOO_NEW) rather than fail inside Raft.
    let applied = sm_store.shared().last_applied_index().map_or(0, |i| i + 1);
    log_store.check_readable(applied).await?;
    let shared = sm_store.shared();
    let c = &config.cluster;
    let raft_cfg = raft_config(
        c.heartbeat_ms,
        c.election_timeout_min_ms,
        c.election_timeout_max_ms,
    )
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    let network = GrpcNetworkFactory::with_dialer(config.secret.clone(), dialer.clone())
        .with_features(features.clone(), node_id);
    let raft = Raft::new(node_id, raft_cfg, network, log_store, sm_store)
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    let cluster = ClusterHandle::new(
        raft.clone(),
        shared,
        node_id,
        &config.secret,
        features,
        dialer,
    );
    Ok((raft, cluster))
}

/// Step 4: the RRD writer task, spooling under the data directory.
fn start_rrd_writer(
    config: &Config,
    stop: watch::Receiver<bool>,
) -> Result<(RrdWriterHandle, JoinHandle<()>), NodeError> {
    let rrd_addr: RrdcachedAddr = config
        .rrd
        .rrdcached
        .parse()
        .map_err(|e: crate::rrd::client::RrdError| NodeError::Rrdcached(e.to_string()))?;
    let mut writer_cfg = RrdWriterConfig::new(rrd_addr, config.poller.frequency);
    writer_cfg.queue_capacity = config.rrd.queue_capacity;
    writer_cfg.spool_dir = Some(config.data_dir.join("spool"));
    writer_cfg.spool_max_bytes = config.rrd.spool_max_mb.saturating_mul(1 << 20);
    RrdWriter::spawn(writer_cfg, stop).map_err(|e| NodeError::DataDir {
        path: e.path.display().to_string(),
        source: e.source,
    })
}

/// What the gRPC services serve.
#[derive(Clone, Copy)]
struct Services<'a> {
    raft: &'a Raft,
    cluster: &'a ClusterHandle,
    writer: &'a RrdWriterHandle,
    librenms: Option<&'a Librenms>,
    port_names: &'a PortNames,
    /// Notified by Admin's leave, to stop this node.
    exit: &'a Arc<tokio::sync::Notify>,
}

type ServerTask = JoinHandle<Result<(), NodeError>>;

/// Step 5: the gRPC server (Raft, Peer, Admin, health, reflection) on
/// `listener`, over TLS with `[tls]`, stopping when `stop` changes.
async fn start_server(
    config: &Config,
    listener: TcpListener,
    services: Services<'_>,
    tls: Option<NodeTls>,
    mut stop: watch::Receiver<bool>,
    runtime: &tokio::runtime::Handle,
) -> Result<ServerTask, NodeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<proto::admin_server::AdminServer<crate::api::admin::AdminRpc>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Server(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| NodeError::Server(e.to_string()))?;
    let rrd_status: Arc<dyn RrdStatusSource> = Arc::new(WriterStatus {
        writer: services.writer.clone(),
        addr: config.rrd.rrdcached.clone(),
    });
    let router = tonic::transport::Server::builder()
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
        .add_service(raft_service_with(
            services.raft.clone(),
            config.secret.clone(),
            services.cluster.features().clone(),
            services.cluster.leader_contact().clone(),
            stop.clone(),
        ))
        .add_service(peer_service(
            services.cluster.clone(),
            config.secret.clone(),
        ))
        .add_service(admin_service(
            services.cluster.clone(),
            rrd_status,
            services.librenms.cloned(),
            services.exit.clone(),
            services.port_names.clone(),
            config.secret.clone(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let stopped = async move {
        let _ = stop.changed().await;
    };
    // Served from `runtime` (Raft's): Raft's own RPCs are answered there, and
    // the listener moves over so connections are accepted there too.
    let listener = listener
        .into_std()
        .map_err(|e| NodeError::Server(e.to_string()))?;
    Ok(runtime.spawn(async move {
        let server_error = |e: &dyn std::fmt::Display| NodeError::Server(e.to_string());
        let listener = TcpListener::from_std(listener).map_err(|e| server_error(&e))?;
        let served = match tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(
                        crate::tls::incoming(listener, tls.server),
                        stopped,
                    )
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stopped,
                    )
                    .await
            }
        };
        served.map_err(|e| server_error(&e))
    }))
}

/// Step 6: makes this node the single voter of a new cluster, unless Raft
/// is initialized already (a bootstrap node restarting).
async fn bootstrap(raft: &Raft, node_id: NodeId, advertise: &str) -> Result<(), NodeError> {
    if raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?
    {
        return Ok(());
    }
    let members = BTreeMap::from([(
        node_id,
        openraft::BasicNode {
            addr: advertise.to_string(),
        },
    )]);
    raft.initialize(members)
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    tracing::info!(node_id, "bootstrapped a new cluster");
    Ok(())
}

/// Step 4b: the LibreNMS link. A user without the needed grants stops the
/// node with the missing privilege named; an unreachable database does not
/// (polling and RRD writes go on; the link reports the error in `status`).
async fn start_librenms(config: &Config) -> Result<Option<Librenms>, NodeError> {
    let Some(settings) = &config.librenms else {
        return Ok(None);
    };
    let link = Librenms::new(settings).map_err(|e| NodeError::Librenms(e.to_string()))?;
    match tokio::time::timeout(LIBRENMS_CHECK_TIMEOUT, link.db().check_privileges()).await {
        Ok(Ok(())) => tracing::info!(db = %link.db().shown(), "LibreNMS database ready"),
        Ok(Err(e @ LibrenmsError::Privilege { .. })) => {
            return Err(NodeError::Librenms(e.to_string()));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "LibreNMS database not usable yet; polling goes on");
            link.set_error(e.to_string());
        }
        Err(_) => {
            let e = format!(
                "LibreNMS database {}: no answer within {LIBRENMS_CHECK_TIMEOUT:?}",
                link.db().shown()
            );
            tracing::warn!(error = %e, "LibreNMS database not usable yet; polling goes on");
            link.set_error(e);
        }
    }
    Ok(Some(link))
}

/// How long the start-up privilege check may wait for the database.
const LIBRENMS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's background tasks, joined in this order at shutdown.
struct Tasks {
    scheduler: JoinHandle<()>,
    reporter: JoinHandle<()>,
    controller: JoinHandle<()>,
    timers: JoinHandle<()>,
    register: JoinHandle<()>,
    join: JoinHandle<()>,
    trim: JoinHandle<()>,
    /// Inventory sync, write-back and cluster rows, with `[librenms]`.
    librenms: Vec<JoinHandle<()>>,
    /// Where the `librenms` tasks run; dropped once they are done.
    librenms_runtime: Option<NamedRuntime>,
    /// Where the scheduler, its polls and the reporter run; dropped once
    /// they are done.
    poll_runtime: NamedRuntime,
}

impl Tasks {
    /// Waits for every task (each stops on the shutdown signal).
    async fn join(self) {
        let _ = self.scheduler.await;
        let _ = self.reporter.await;
        let _ = self.controller.await;
        let _ = self.timers.await;
        let _ = self.register.await;
        let _ = self.join.await;
        let _ = self.trim.await;
        for task in self.librenms {
            let _ = task.await;
        }
        drop(self.librenms_runtime);
        drop(self.poll_runtime);
    }
}

/// Step 7: membership upkeep, registration, then the SNMP engine and the
/// scheduler and reporter on polling threads of their own, at a lower
/// priority (see [`POLLING_NICE`]); the controller on Raft's threads
/// (`raft_runtime`), so that polling cannot delay its view of who is alive.
/// Runs on the process's main thread, which the new threads inherit their
/// priority from.
async fn spawn_tasks(
    config: &Config,
    services: Services<'_>,
    node_id: NodeId,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
    raft_runtime: &tokio::runtime::Handle,
) -> Result<Tasks, NodeError> {
    let cluster = services.cluster;
    let writer = services.writer.clone();
    let librenms = services.librenms.cloned();
    let info = NodeInfo {
        id: node_id,
        name: config.node_name.clone(),
        addr: config.advertise_addr(),
        groups: config.groups.clone(),
    };
    let join = tokio::spawn(membership::keep_joined(
        cluster.clone(),
        info.clone(),
        seeds_except_self(config),
        stop.clone(),
    ));
    let register = tokio::spawn(register(cluster.clone(), info, stop.clone()));
    let poll_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let poll_runtime = NamedRuntime::lowered(POLL_THREAD_NAME, poll_threads, POLLING_NICE)
        .map_err(|e| NodeError::Snmp(format!("cannot start the polling threads: {e}")))?;
    let poll = poll_runtime.handle();
    // The engines' sockets and receive tasks belong on the polling threads.
    let snmp = {
        let (config, metrics) = (config.clone(), metrics.clone());
        poll.spawn(async move { start_snmp(&config, &metrics).await })
            .await
            .map_err(|e| NodeError::Snmp(format!("SNMP engine start-up task: {e}")))??
    };
    let icmp = match config.icmp_enabled() {
        true => {
            let _on_poll = poll.enter();
            Some(Arc::new(Pinger::new(
                config.poller.icmp_count,
                Duration::from_millis(config.poller.icmp_timeout_ms),
            )?))
        }
        false => None,
    };
    let reports = ReportBuffer::default();
    let extras = PollExtras {
        icmp,
        librenms: librenms.clone(),
        metrics: metrics.clone(),
        port_names: Some(services.port_names.clone()),
    };
    let scheduler = poll.spawn(scheduler::run(
        cluster.clone(),
        Arc::new(snmp),
        writer,
        reports.clone(),
        scheduler_config(config),
        extras,
        stop.clone(),
    ));
    // The database work on a thread of its own: its CPU is read apart from
    // the polls' (the cost the write-back adds), and a slow driver call
    // cannot hold up a poll.
    let (librenms_runtime, librenms_tasks) = match (&librenms, &config.librenms) {
        (Some(link), Some(settings)) => {
            let runtime = NamedRuntime::new(LIBRENMS_THREAD_NAME, 1).map_err(|e| {
                NodeError::Librenms(format!("cannot start the LibreNMS link's thread: {e}"))
            })?;
            let on_link = runtime.handle();
            let tasks = vec![
                on_link.spawn(inventory::run(
                    link.clone(),
                    cluster.clone(),
                    Duration::from_secs(settings.sync_interval_s),
                    stop.clone(),
                )),
                on_link.spawn(writeback::run(
                    link.clone(),
                    cluster.clone(),
                    WritebackConfig {
                        buffer: settings.writeback_buffer,
                        lease: Duration::from_millis(config.cluster.lease_ms),
                    },
                    stop.clone(),
                )),
                on_link.spawn(pollers::run(
                    link.clone(),
                    cluster.clone(),
                    PollerInfo {
                        node_name: config.node_name.clone(),
                        groups: config.groups.clone(),
                        frequency: config.poller.frequency,
                        down_retry: config.poller.down_retry,
                        discovery_frequency: config.poller.discovery_frequency,
                        workers: config.poller.max_concurrent_polls,
                    },
                    stop.clone(),
                )),
            ];
            (Some(runtime), tasks)
        }
        _ => (None, Vec::new()),
    };
    let reporter = poll.spawn(reporter::run(
        cluster.clone(),
        reports,
        Duration::from_millis(config.poller.report_interval_ms),
        stop.clone(),
    ));
    let controller = raft_runtime.spawn(controller::run(
        cluster.clone(),
        controller_config(config),
        stop.clone(),
    ));
    let timers = raft_runtime.spawn(drive_timers(
        cluster.raft().clone(),
        cluster.leader_contact().clone(),
        TimerPeriods::new(
            config.cluster.heartbeat_ms,
            config.cluster.election_timeout_min_ms,
        ),
        stop.clone(),
    ));
    let trim = tokio::spawn(runtime::trim_freed_memory(
        runtime::TRIM_EVERY,
        stop.clone(),
    ));
    Ok(Tasks {
        scheduler,
        reporter,
        controller,
        timers,
        register,
        join,
        trim,
        librenms: librenms_tasks,
        librenms_runtime,
        poll_runtime,
    })
}

/// The SNMP engine the scheduler polls through.
async fn start_snmp(config: &Config, metrics: &Metrics) -> Result<AsyncSnmpClient, NodeError> {
    AsyncSnmpClient::with_counters(
        SnmpClientConfig {
            source_ip: config.poller.source_ip,
            timeout: Duration::from_millis(config.poller.timeout_ms),
            retries: config.poller.retries,
            max_in_flight: config.poller.max_in_flight,
            per_device_in_flight: config.poller.per_device_in_flight,
        },
        metrics.snmp().clone(),
    )
    .await
    .map_err(|e| NodeError::Snmp(e.to_string()))
}

fn scheduler_config(config: &Config) -> SchedulerConfig {
    SchedulerConfig {
        timing: Timing {
            frequency: u64::from(config.poller.frequency),
            down_retry: u64::from(config.poller.down_retry),
        },
        discovery_frequency: u64::from(config.poller.discovery_frequency),
        max_concurrent_polls: config.poller.max_concurrent_polls,
        lease: Duration::from_millis(config.cluster.lease_ms),
    }
}

fn controller_config(config: &Config) -> ControllerConfig {
    ControllerConfig {
        node_timeout: Duration::from_millis(config.cluster.node_timeout_ms),
        join_debounce: Duration::from_millis(config.cluster.join_debounce_ms),
        default_cost_ms: crate::cluster::assignment::DEFAULT_COST_MS,
        voter_timeout: Duration::from_millis(config.cluster.voter_timeout_ms),
    }
}

/// This node's id, and whether this node must bootstrap a new cluster.
///
/// The id is kept in the data directory once allocated and never reused. A
/// node without one asks its seeds (any member forwards to the leader) to
/// allocate it. `bootstrap = true` founds a cluster only when no seed answers
/// as a member of one, so a second bootstrap node joins instead of forking.
async fn node_id(
    store: &Store,
    config: &Config,
    dialer: &Dialer,
) -> Result<(NodeId, bool), NodeError> {
    if let Some(bytes) = store.local_get(NODE_ID_KEY)? {
        let arr = <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| {
            NodeError::Join(format!("corrupt node id in {}", store.path().display()))
        })?;
        // A bootstrap node that stopped before initializing still must.
        return Ok((u64::from_be_bytes(arr), config.bootstrap));
    }
    let seeds = seeds_except_self(config);
    let (id, bootstrap) = if config.bootstrap {
        match membership::allocate_node_id(&seeds, &config.secret, dialer, 1)
            .await
            .map_err(|e| NodeError::Join(e.to_string()))?
        {
            Some(id) => {
                tracing::warn!(
                    ?seeds,
                    "bootstrap = true, but the seeds already form a cluster: joining it instead"
                );
                (id, false)
            }
            None => (1, true),
        }
    } else if seeds.is_empty() {
        return Err(NodeError::NothingToJoin);
    } else {
        let id = membership::allocate_node_id(&seeds, &config.secret, dialer, u32::MAX)
            .await
            .map_err(|e| NodeError::Join(e.to_string()))?
            .ok_or(NodeError::NothingToJoin)?;
        (id, false)
    };
    store.local_set(NODE_ID_KEY, &id.to_be_bytes()).await?;
    Ok((id, bootstrap))
}

fn seeds_except_self(config: &Config) -> Vec<String> {
    let me = [config.advertise_addr(), config.listen.to_string()];
    config
        .seeds
        .iter()
        .filter(|s| !me.contains(s))
        .cloned()
        .collect()
}

/// Records this node's name, address and groups in the replicated state,
/// retrying until a leader accepts it. Always written, even when the local
/// state already shows them: at start that state may lag the log. A node that
/// stopped right after its planned absence registered it with no groups has
/// that entry in its log, committed by the leader but not yet known here as
/// committed; read before it is applied, the old groups look current, and
/// the node would wait for devices with no groups on record.
async fn register(cluster: ClusterHandle, info: NodeInfo, mut stop: watch::Receiver<bool>) {
    loop {
        match cluster.propose(Command::UpsertNode(info.clone())).await {
            Ok(_) => {
                tracing::info!(node_id = info.id, groups = ?info.groups, "node registered");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "registration pending"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

struct WriterStatus {
    writer: RrdWriterHandle,
    addr: String,
}

impl RrdStatusSource for WriterStatus {
    fn rrd_status(&self) -> proto::RrdStatus {
        let s = self.writer.stats();
        proto::RrdStatus {
            rrdcached: self.addr.clone(),
            connected: s.connected,
            queued: s.queued,
            written: s.written,
            dropped: s.dropped_duplicate + s.dropped_stale,
            errors: s.errors,
            spool_bytes: s.spool_bytes,
            spool_records: s.spool_records,
            spool_oldest: s.spool_oldest_ts,
            spool_dropped: s.dropped_spool_full,
        }
    }
}
