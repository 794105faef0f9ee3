//! The `Admin` gRPC service for operators, and its protobuf conversions.
//!
//! Reads are answered from this node's replicated state (a device's port
//! names by the node that polls it, which alone keeps them); writes go through
//! [`ClusterHandle::propose`], which forwards them to the leader.

use crate::cluster::features::VERSION;
use crate::cluster::handle::{ClusterError, ClusterHandle};
use crate::cluster::network::BearerAuth;
use crate::codec;
use crate::librenms::Librenms;
use crate::model::state::ClusterState;
use crate::model::types::*;
use crate::poller::modules::storage_rrd_names;
use crate::proto::admin_client::AdminClient;
use crate::proto::admin_server::{Admin, AdminServer};
use crate::proto::{self as pb};
use crate::rrd::layout::{is_own_rrd_dir, rrd_dir, rrd_path};
use crate::secret::Secret;
use crate::snmp::credentials::{AuthProtocol, PrivProtocol, SnmpCredentials, UsmCredentials};
use crate::storage::PortNames;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

/// What the node reports about its own RRD writer in `status`.
pub trait RrdStatusSource: Send + Sync + 'static {
    fn rrd_status(&self) -> pb::RrdStatus;
}

pub struct AdminRpc {
    cluster: ClusterHandle,
    rrd: Arc<dyn RrdStatusSource>,
    /// With `[librenms]`, the inventory lives in LibreNMS's database.
    librenms: Option<Librenms>,
    /// Notified when this node has left the cluster and should exit.
    exit: Arc<Notify>,
    /// The names of the ports this node discovered.
    port_names: PortNames,
}

/// Marks a `GetDevice` relayed to the device's owner, which then answers
/// itself even if its state names another owner (no relay loops).
const RELAYED_HEADER: &str = "x-raftpoll-relayed";

pub type AdminService = InterceptedService<AdminServer<AdminRpc>, BearerAuth>;

/// Largest Admin request accepted: room for a bulk import of a few hundred
/// thousand devices in one call (tonic's default is 4 MiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Devices per log entry in a bulk add. Small enough that one entry stays far
/// below the Raft message limit and the 4 MiB a forwarded proposal may take,
/// big enough that 100k devices need only 50 entries.
const DEVICES_PER_ENTRY: usize = 2000;
/// Byte budget of one bulk-add entry (encoded size): long communities or
/// passwords make a chunk smaller, never an entry too big to forward.
const BYTES_PER_ENTRY: u64 = 1024 * 1024;

pub fn admin_service(
    cluster: ClusterHandle,
    rrd: Arc<dyn RrdStatusSource>,
    librenms: Option<Librenms>,
    exit: Arc<Notify>,
    port_names: PortNames,
    secret: Secret,
) -> AdminService {
    InterceptedService::new(
        AdminServer::new(AdminRpc {
            cluster,
            rrd,
            librenms,
            exit,
            port_names,
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES),
        BearerAuth::new(secret),
    )
}

fn cluster_status(e: ClusterError) -> Status {
    match e {
        ClusterError::NoLeader(_) | ClusterError::NoLeaderKnown => {
            Status::unavailable(e.to_string())
        }
        ClusterError::Unsupported(_) => Status::failed_precondition(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn rejection_status(r: Rejection) -> Status {
    match r {
        Rejection::DuplicateDevice(_) => Status::already_exists(r.to_string()),
        Rejection::UnknownDevice(_) | Rejection::UnknownNode(_) => Status::not_found(r.to_string()),
        Rejection::InvalidEntry(_) => Status::invalid_argument(r.to_string()),
    }
}

impl AdminRpc {
    /// `hostname` as its owner at `addr` shows it.
    async fn owner_device(&self, addr: &str, hostname: &str) -> Result<pb::DeviceDetail, Status> {
        let channel = self
            .cluster
            .channel(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = self.cluster.request(pb::GetDeviceRequest {
            hostname: hostname.to_string(),
        });
        request.set_timeout(Duration::from_secs(2));
        request.metadata_mut().insert(
            RELAYED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        // As large as a device with 10,000 long-named ports needs.
        Ok(AdminClient::new(channel)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .get_device(request)
            .await?
            .into_inner())
    }

    /// What this node's own discoveries say of `hostname`'s port names.
    fn local_port_names(&self, hostname: &str) -> Vec<DiscoveredPort> {
        match self.port_names.get(hostname) {
            Ok(names) => names.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(device = hostname, error = %e, "port names not read");
                Vec::new()
            }
        }
    }

    async fn leader_status(&self, addr: &str) -> Result<pb::StatusReply, Status> {
        let channel = self
            .cluster
            .channel(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = self.cluster.request(pb::StatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        Ok(AdminClient::new(channel)
            .status(request)
            .await?
            .into_inner())
    }

    /// Leaves the cluster gracefully: devices first, then leadership, then
    /// membership; finally asks the process to exit.
    async fn leave_here(&self) -> Result<(), Status> {
        let me = self.cluster.node_id();
        tracing::info!(node_id = me, "leaving the cluster");
        // The leader moves this node's devices and unregisters it in one
        // entry: no device is unassigned in between.
        self.cluster.drain(me).await.map_err(cluster_status)?;
        self.wait_devices_moved(me).await;
        if self.cluster.is_leader() {
            self.cluster
                .transfer_leadership()
                .await
                .map_err(cluster_status)?;
        }
        self.cluster
            .remove_member(me)
            .await
            .map_err(cluster_status)?;
        tracing::info!(node_id = me, "left the cluster; exiting");
        self.exit.notify_one();
        Ok(())
    }

    /// Waits until this node's copy of the state shows the drain, so its
    /// scheduler has stopped polling the devices that moved.
    async fn wait_devices_moved(&self, me: NodeId) {
        let mut changes = self.cluster.shared().subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let shared = self.cluster.shared();
        while shared.count_devices(|d| d.owner == Some(me)) > 0 {
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                tracing::warn!("devices still owned after the drain; leaving anyway");
                return;
            }
        }
    }

    async fn write(&self, cmd: Command) -> Result<CommandResult, Status> {
        match self.cluster.propose(cmd).await.map_err(cluster_status)? {
            CommandResult::Rejected(r) => Err(rejection_status(r)),
            other => Ok(other),
        }
    }
}

pub fn device_summary(d: &Device) -> pb::DeviceSummary {
    pb::DeviceSummary {
        hostname: d.hostname.clone(),
        group: d.group,
        node_id: d.owner,
        status: d.status.as_str().to_string(),
        last_polled: d.last_polled,
        last_poll_ms: d.last_poll_ms,
        reason: d.reason.clone(),
        address: d.address.clone(),
        port: u32::from(d.port),
        snmp_version: d.credentials.version_name().to_string(),
    }
}

/// `d` as `device show` shows it, without port names (see [`name_ports`]).
pub fn device_detail(d: &Device) -> pb::DeviceDetail {
    let inv = &d.inventory;
    let mut rrd_files = vec![
        rrd_path(&d.hostname, "uptime"),
        rrd_path(&d.hostname, "poller-perf"),
    ];
    let ports: Vec<pb::PortInfo> = inv
        .ports
        .iter()
        .map(|p| pb::PortInfo {
            port_id: p.port_id(),
            ifindex: p.ifindex,
            ifname: String::new(),
            ifdescr: String::new(),
            rrd: rrd_path(&d.hostname, &format!("port-id{}", p.port_id())),
        })
        .collect();
    rrd_files.extend(ports.iter().map(|p| p.rrd.clone()));
    rrd_files.extend(
        inv.processors
            .iter()
            .map(|p| rrd_path(&d.hostname, &format!("processor-hr-{}", p.index))),
    );
    rrd_files.extend(
        storage_rrd_names(&inv.storages)
            .iter()
            .map(|name| rrd_path(&d.hostname, name)),
    );
    pb::DeviceDetail {
        device: Some(device_summary(d)),
        ports,
        sys_name: inv.system.sys_name.clone(),
        sys_descr: inv.system.sys_descr.clone(),
        sys_object_id: inv.system.sys_object_id.clone(),
        last_discovered: d.last_discovered,
        rrd_files,
    }
}

/// Names the ports of `shown` that have none yet from `names` (a discovery of
/// the device), where the replicated port's key says they are still its names.
pub fn name_ports(shown: &mut [pb::PortInfo], ports: &[Port], names: &[DiscoveredPort]) {
    let keys: HashMap<PortId, PortKey> = ports.iter().map(|p| (p.port_id(), p.key)).collect();
    let named: HashMap<u32, &DiscoveredPort> = names.iter().map(|n| (n.ifindex, n)).collect();
    for port in shown {
        if !port.ifname.is_empty() || !port.ifdescr.is_empty() {
            continue;
        }
        let found = named
            .get(&port.ifindex)
            .filter(|n| keys.get(&port.port_id) == Some(&PortKey::of(&n.ifname, &n.ifdescr)));
        if let Some(n) = found {
            port.ifname.clone_from(&n.ifname);
            port.ifdescr.clone_from(&n.ifdescr);
        }
    }
}

/// Checks an operator's device and turns it into the replicated form.
pub fn new_device(req: pb::AddDeviceRequest) -> Result<NewDevice, Status> {
    let invalid = |m: String| Err(Status::invalid_argument(m));
    let hostname = req.hostname.trim().to_string();
    if hostname.is_empty() {
        return invalid("hostname must not be empty".into());
    }
    if hostname.len() > 253
        || hostname.contains(['/', ' '])
        || hostname.contains(char::is_control)
        || hostname == "."
        || hostname == ".."
    {
        return invalid(format!("invalid hostname '{}'", hostname.escape_debug()));
    }
    let address = match req.address.trim() {
        "" => hostname.clone(),
        a => a.to_string(),
    };
    if !valid_address(&address) {
        return invalid(format!(
            "invalid address '{address}': expected an IPv4/IPv6 address or a DNS name"
        ));
    }
    let port = match req.port {
        0 => 161,
        p => match u16::try_from(p) {
            Ok(p) => p,
            Err(_) => return invalid(format!("invalid port {p}: must be 1-65535")),
        },
    };
    let credentials = credentials(req.credentials.unwrap_or_default())?;
    Ok(NewDevice {
        hostname,
        address,
        port,
        credentials,
        group: req.group,
    })
}

/// Validates every entry of a bulk add: all or nothing. Errors name the
/// entry by its 1-based position and its hostname.
pub fn new_devices(reqs: Vec<pb::AddDeviceRequest>) -> Result<Vec<NewDevice>, Status> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(reqs.len());
    let mut devices = Vec::with_capacity(reqs.len());
    for (i, req) in reqs.into_iter().enumerate() {
        let n = i + 1;
        let hostname = req.hostname.trim().escape_debug().to_string();
        let device = new_device(req).map_err(|e| {
            Status::invalid_argument(format!("device {n} ('{hostname}'): {}", e.message()))
        })?;
        if let Some(first) = seen.insert(device.hostname.clone(), n) {
            return Err(Status::invalid_argument(format!(
                "device {n} ('{hostname}'): hostname already given as device {first}"
            )));
        }
        devices.push(device);
    }
    Ok(devices)
}

/// Refuses new devices whose RRD directory is another device's (hostnames
/// that differ only in characters a file name cannot hold, `sw 1` and
/// `sw_1`): they would write each other's files. Checked against the
/// cluster's devices and the other new ones; devices that already exist are
/// left to the add (it reports them).
pub fn check_rrd_dirs(state: &ClusterState, devices: &[NewDevice]) -> Result<(), Status> {
    // Only a hostname that is not its own directory can clash with another.
    let unusual: HashMap<String, &str> = state
        .devices
        .keys()
        .filter(|h| !is_own_rrd_dir(h))
        .map(|h| (rrd_dir(h), h.as_str()))
        .collect();
    let mut new: HashMap<String, &str> = HashMap::new();
    for (i, device) in devices.iter().enumerate() {
        let hostname = device.hostname.as_str();
        if state.devices.contains_key(hostname) {
            continue;
        }
        let dir = rrd_dir(hostname);
        let existing = state.devices.get_key_value(&dir).map(|(h, _)| h.as_str());
        let other = existing
            .or_else(|| unusual.get(&dir).copied())
            .or_else(|| new.get(&dir).copied());
        if let Some(other) = other {
            return Err(Status::invalid_argument(format!(
                "device {} ('{}'): its RRD directory '{dir}' is already that of device '{}'; \
                 the two would write the same files",
                i + 1,
                hostname.escape_debug(),
                other.escape_debug()
            )));
        }
        new.insert(dir, hostname);
    }
    Ok(())
}

/// Splits a bulk add into log entries of at most [`DEVICES_PER_ENTRY`]
/// devices and about [`BYTES_PER_ENTRY`] bytes, keeping the order.
fn entry_chunks(devices: Vec<NewDevice>) -> Vec<Vec<NewDevice>> {
    super::split_by_size(devices, DEVICES_PER_ENTRY, BYTES_PER_ENTRY, |d| {
        codec::encoded_size(d).map_or(BYTES_PER_ENTRY, |n| n as u64)
    })
}

/// An IP literal, or a syntactically valid DNS name (not something that
/// merely looks like a broken IPv4 address such as `999.1.1.1`).
fn valid_address(a: &str) -> bool {
    let a = a
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(a);
    if a.parse::<IpAddr>().is_ok() {
        return true;
    }
    let labels: Vec<&str> = a.trim_end_matches('.').split('.').collect();
    let all_numeric = labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit()));
    !all_numeric
        && a.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn credentials(c: pb::Credentials) -> Result<SnmpCredentials, Status> {
    let invalid = |m: &str| Err(Status::invalid_argument(m.to_string()));
    match c.version.as_str() {
        "" | "v2c" | "2c" | "2" => {
            if c.community.is_empty() {
                return invalid("SNMP v2c needs a community");
            }
            Ok(SnmpCredentials::V2c {
                community: Secret::new(c.community),
            })
        }
        "v1" | "1" => {
            if c.community.is_empty() {
                return invalid("SNMP v1 needs a community");
            }
            Ok(SnmpCredentials::V1 {
                community: Secret::new(c.community),
            })
        }
        "v3" | "3" => {
            if c.v3_user.is_empty() {
                return invalid("SNMP v3 needs a user (--v3-user)");
            }
            let auth = match c.auth_proto.to_ascii_lowercase().as_str() {
                "" => None,
                p => {
                    let proto = match p {
                        "md5" => AuthProtocol::Md5,
                        "sha" | "sha1" => AuthProtocol::Sha1,
                        "sha256" => AuthProtocol::Sha256,
                        "sha512" => AuthProtocol::Sha512,
                        _ => {
                            return invalid(
                                "unknown --auth-proto: expected md5, sha, sha256 or sha512",
                            );
                        }
                    };
                    if c.auth_pass.len() < 8 {
                        return invalid("--auth-pass must be at least 8 characters (RFC 3414)");
                    }
                    Some((proto, Secret::new(c.auth_pass)))
                }
            };
            let privacy = match c.priv_proto.to_ascii_lowercase().as_str() {
                "" => None,
                p => {
                    let proto = match p {
                        "des" => PrivProtocol::Des,
                        "aes" | "aes128" => PrivProtocol::Aes128,
                        "aes256" => PrivProtocol::Aes256,
                        _ => return invalid("unknown --priv-proto: expected des, aes or aes256"),
                    };
                    if auth.is_none() {
                        return invalid("--priv-proto needs --auth-proto (authPriv)");
                    }
                    if c.priv_pass.len() < 8 {
                        return invalid("--priv-pass must be at least 8 characters (RFC 3414)");
                    }
                    Some((proto, Secret::new(c.priv_pass)))
                }
            };
            Ok(SnmpCredentials::V3(Box::new(UsmCredentials {
                user: c.v3_user,
                auth,
                privacy,
            })))
        }
        other => Err(Status::invalid_argument(format!(
            "unknown SNMP version '{other}': expected v1, v2c or v3"
        ))),
    }
}

impl AdminRpc {
    /// With `[librenms]` the inventory lives in LibreNMS: devices are added,
    /// removed and regrouped there, and the next sync brings the change here.
    fn inventory_is_ours(&self) -> Result<(), Status> {
        match &self.librenms {
            Some(l) => Err(Status::failed_precondition(format!(
                "the inventory lives in LibreNMS ({}): add, remove and regroup devices there; \
                 raftpoll follows within librenms.sync_interval_s",
                l.db().shown()
            ))),
            None => Ok(()),
        }
    }

    fn librenms_status(&self) -> Option<pb::LibrenmsStatus> {
        let link = self.librenms.as_ref()?;
        let s = link.status();
        Some(pb::LibrenmsStatus {
            database: link.db().shown().to_string(),
            connected: s.connected,
            last_error: s.last_error,
            last_sync: s.last_sync,
            devices: s.devices as u64,
            skipped: s
                .skipped
                .into_iter()
                .map(|k| pb::SkippedDevice {
                    device_id: u64::from(k.device_id),
                    hostname: k.hostname,
                    reason: k.reason,
                })
                .collect(),
            rows_written: s.rows_written,
            backlog: s.backlog as u64,
        })
    }
}

#[tonic::async_trait]
impl Admin for AdminRpc {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        // Only the leader sees liveness: a follower relays its answer, so
        // every node reports the same picture. Falls back to the local view.
        if let Some((leader, addr)) = self
            .cluster
            .leader()
            .filter(|(id, _)| *id != self.cluster.node_id())
        {
            match self.leader_status(&addr).await {
                Ok(mut reply) => {
                    reply.answered_by = self.cluster.node_id();
                    reply.rrd = Some(self.rrd.rrd_status());
                    reply.librenms = self.librenms_status();
                    return Ok(Response::new(reply));
                }
                Err(e) => tracing::debug!(leader, error = %e, "leader did not answer status"),
            }
        }
        let view = self.cluster.view();
        let cluster_feature_level = self.cluster.cluster_level();
        let features = self.cluster.features();
        let me = self.cluster.node_id();
        // Devices per owner (`None`: unassigned), in one walk that lets
        // applies in between (see `for_each_device`).
        let mut owned: BTreeMap<Option<NodeId>, u64> = BTreeMap::new();
        self.cluster
            .shared()
            .for_each_device(|d| *owned.entry(d.owner).or_default() += 1);
        let nodes: Vec<pb::NodeStatus> = self.cluster.read(|s| {
            view.members
                .iter()
                .map(|m| {
                    let info = s.nodes.get(&m.id);
                    let (version, feature_level) = if m.id == me {
                        (VERSION.to_string(), features.local_level())
                    } else {
                        features
                            .peer(m.id)
                            .map_or((String::new(), 0), |p| (p.version, p.level))
                    };
                    pb::NodeStatus {
                        version,
                        feature_level,
                        id: m.id,
                        name: info.map(|i| i.name.clone()).unwrap_or_default(),
                        addr: m.addr.clone(),
                        role: m.role.to_string(),
                        alive: m.alive,
                        groups: info.map(|i| i.groups.clone()).unwrap_or_default(),
                        devices: owned.get(&Some(m.id)).copied().unwrap_or_default(),
                    }
                })
                .collect()
        });
        let total = owned.values().sum();
        let unassigned = owned.get(&None).copied().unwrap_or_default();
        Ok(Response::new(pb::StatusReply {
            leader_id: view.leader_id,
            term: view.term,
            nodes,
            devices: Some(pb::DeviceCounts { total, unassigned }),
            answered_by: self.cluster.node_id(),
            rrd: Some(self.rrd.rrd_status()),
            librenms: self.librenms_status(),
            cluster_feature_level,
        }))
    }

    async fn list_devices(
        &self,
        _: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesReply>, Status> {
        let devices = self
            .cluster
            .shared()
            .scan_devices(|d| Some(device_summary(d)));
        let skipped = self
            .librenms_status()
            .map(|l| l.skipped)
            .unwrap_or_default();
        Ok(Response::new(pb::ListDevicesReply { devices, skipped }))
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::DeviceDetail>, Status> {
        let relayed = request.metadata().contains_key(RELAYED_HEADER);
        let hostname = request.into_inner().hostname;
        let me = self.cluster.node_id();
        let (device, owner) = self
            .cluster
            .read(|s| {
                let device = s.devices.get(&hostname)?.clone();
                let owner = device
                    .owner
                    .filter(|id| *id != me)
                    .and_then(|id| Some((id, s.nodes.get(&id)?.addr.clone())));
                Some((device, owner))
            })
            .ok_or_else(|| rejection_status(Rejection::UnknownDevice(hostname.clone())))?;
        // Port names live on the nodes that discovered the ports: the owner
        // first, then this node (an owner since a failover may not have
        // discovered the device yet).
        let mut detail = None;
        if let Some((owner, addr)) = owner.filter(|_| !relayed) {
            match self.owner_device(&addr, &hostname).await {
                Ok(reply) => detail = Some(reply),
                Err(e) => tracing::debug!(owner, error = %e, "owner did not answer device show"),
            }
        }
        let mut detail = detail.unwrap_or_else(|| device_detail(&device));
        // The owner's answer usually names every port: no need to read ours then.
        if detail
            .ports
            .iter()
            .any(|p| p.ifname.is_empty() && p.ifdescr.is_empty())
        {
            let names = self.local_port_names(&hostname);
            name_ports(&mut detail.ports, &device.inventory.ports, &names);
        }
        Ok(Response::new(detail))
    }

    async fn add_device(
        &self,
        request: Request<pb::AddDeviceRequest>,
    ) -> Result<Response<pb::AddDeviceReply>, Status> {
        self.inventory_is_ours()?;
        let device = new_device(request.into_inner())?;
        self.cluster
            .read(|s| check_rrd_dirs(s, std::slice::from_ref(&device)))?;
        self.write(Command::AddDevice(device)).await?;
        Ok(Response::new(pb::AddDeviceReply {}))
    }

    async fn add_devices(
        &self,
        request: Request<pb::AddDevicesRequest>,
    ) -> Result<Response<pb::AddDevicesReply>, Status> {
        self.inventory_is_ours()?;
        let devices = new_devices(request.into_inner().devices)?;
        self.cluster.read(|s| check_rrd_dirs(s, &devices))?;
        let total = devices.len();
        let mut added = 0u32;
        let mut existing = Vec::new();
        // The newer entry kind once every member applies it; the leader
        // turns it back into the older one if the level dropped meanwhile.
        let packed = self.cluster.cluster_level() >= 2;
        for chunk in entry_chunks(devices) {
            let cmd = if packed {
                Command::pack_devices(chunk)
            } else {
                Command::AddDevices(chunk)
            };
            match self.write(cmd).await {
                Ok(CommandResult::DevicesAdded {
                    added: a,
                    existing: e,
                }) => {
                    added += a;
                    existing.extend(e);
                }
                Ok(other) => {
                    return Err(Status::internal(format!(
                        "unexpected result of a bulk add: {other:?}"
                    )));
                }
                // Earlier entries are committed: say so, a re-run completes it.
                Err(e) => {
                    return Err(Status::new(
                        e.code(),
                        format!(
                            "{} (after adding {added} and skipping {} of {total} devices; \
                             re-run to add the rest)",
                            e.message(),
                            existing.len()
                        ),
                    ));
                }
            }
        }
        Ok(Response::new(pb::AddDevicesReply { added, existing }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveReply>, Status> {
        let me = self.cluster.node_id();
        let target = request.into_inner().node_id.unwrap_or(me);
        if target == me {
            self.leave_here().await?;
            return Ok(Response::new(pb::LeaveReply { node_id: me }));
        }
        // Another node: ask it to leave itself, so it moves its devices first.
        let addr = self
            .cluster
            .view()
            .members
            .into_iter()
            .find(|m| m.id == target)
            .map(|m| m.addr)
            .ok_or_else(|| rejection_status(Rejection::UnknownNode(target)))?;
        let channel = self
            .cluster
            .channel(&addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let request = self.cluster.request(pb::LeaveRequest {
            node_id: Some(target),
        });
        match AdminClient::new(channel).leave(request).await {
            // A dead node cannot move its devices: the leader does, then
            // removes it. Started again, it joins as a learner.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tracing::warn!(
                    node_id = target,
                    "node does not answer; removing it without its help"
                );
                self.cluster.drain(target).await.map_err(cluster_status)?;
                self.cluster
                    .remove_member(target)
                    .await
                    .map_err(cluster_status)?;
                Ok(Response::new(pb::LeaveReply { node_id: target }))
            }
            other => other,
        }
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceReply>, Status> {
        self.inventory_is_ours()?;
        let hostname = request.into_inner().hostname;
        self.write(Command::RemoveDevice { hostname }).await?;
        Ok(Response::new(pb::RemoveDeviceReply {}))
    }

    async fn set_device_group(
        &self,
        request: Request<pb::SetDeviceGroupRequest>,
    ) -> Result<Response<pb::SetDeviceGroupReply>, Status> {
        self.inventory_is_ours()?;
        let r = request.into_inner();
        self.write(Command::SetDeviceGroup {
            hostname: r.hostname,
            group: r.group,
        })
        .await?;
        Ok(Response::new(pb::SetDeviceGroupReply {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(address: &str, creds: pb::Credentials) -> pb::AddDeviceRequest {
        pb::AddDeviceRequest {
            hostname: "sw1".into(),
            address: address.into(),
            port: 0,
            credentials: Some(creds),
            group: 0,
        }
    }

    fn v2c() -> pb::Credentials {
        pb::Credentials {
            version: "v2c".into(),
            community: "public".into(),
            ..Default::default()
        }
    }

    fn named(hostname: &str, community: &str) -> pb::AddDeviceRequest {
        pb::AddDeviceRequest {
            hostname: hostname.into(),
            credentials: Some(pb::Credentials {
                community: community.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn bulk_validation_is_all_or_nothing_and_names_the_entry() {
        let ok = new_devices(vec![named("a", "c1"), named(" b ", "c2")]).unwrap();
        assert_eq!(
            ok.iter().map(|d| d.hostname.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let err = new_devices(vec![named("a", "c1"), named("b", "")]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("device 2 ('b'):") && err.message().contains("community"),
            "{}",
            err.message()
        );
        let err = new_devices(vec![
            named("a", "s3cret"),
            named("b", "x"),
            named("a ", "s3cret"),
        ])
        .unwrap_err();
        assert_eq!(
            err.message(),
            "device 3 ('a'): hostname already given as device 1"
        );
        assert!(new_devices(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn bulk_entries_are_bounded_by_count_and_bytes() {
        let many: Vec<NewDevice> = (0..4500)
            .map(|i| new_device(named(&format!("h{i}"), "public")).unwrap())
            .collect();
        let chunks = entry_chunks(many.clone());
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [2000, 2000, 500]
        );
        assert_eq!(chunks.concat(), many);
        // A 2000-device entry is far below any message limit.
        let entry = codec::encode(&Command::AddDevices(chunks[0].clone())).unwrap();
        assert!(entry.len() < 256 * 1024, "{}", entry.len());

        let big = "x".repeat(300 * 1024);
        let fat: Vec<NewDevice> = (0..7)
            .map(|i| new_device(named(&format!("f{i}"), &big)).unwrap())
            .collect();
        let chunks = entry_chunks(fat);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        for c in &chunks {
            let bytes = codec::encode(&Command::AddDevices(c.clone())).unwrap();
            assert!(bytes.len() as u64 <= BYTES_PER_ENTRY + 64);
        }
    }

    #[test]
    fn addresses() {
        for ok in ["127.0.0.1", "::1", "[::1]", "sw1.example.net", "sw-1"] {
            assert!(new_device(req(ok, v2c())).is_ok(), "{ok}");
        }
        let mut bad_host = req("127.0.0.1", v2c());
        bad_host.hostname = "sw\n1".into();
        assert!(new_device(bad_host).is_err());
        for bad in ["999.1.1.1", "1.2.3", "a..b", "-sw", "sw 1", "sw/1"] {
            let err = new_device(req(bad, v2c())).unwrap_err();
            assert!(err.message().contains(bad), "{bad}: {}", err.message());
        }
        let d = new_device(req("", v2c())).unwrap();
        assert_eq!((d.address.as_str(), d.port), ("sw1", 161));
    }

    #[test]
    fn v3_rules_and_no_secret_in_errors() {
        let mut c = pb::Credentials {
            version: "v3".into(),
            v3_user: "bob".into(),
            auth_proto: "sha".into(),
            auth_pass: "short".into(),
            ..Default::default()
        };
        let err = new_device(req("127.0.0.1", c.clone())).unwrap_err();
        assert!(err.message().contains("auth-pass") && !err.message().contains("short"));
        c.auth_pass = "authpass123".into();
        c.priv_proto = "aes".into();
        c.priv_pass = "privpass123".into();
        let d = new_device(req("127.0.0.1", c)).unwrap();
        assert!(matches!(
            &d.credentials,
            SnmpCredentials::V3(usm) if matches!(usm.privacy, Some((PrivProtocol::Aes128, _)))
        ));
        let err = new_device(req(
            "127.0.0.1",
            pb::Credentials {
                version: "v2c".into(),
                ..Default::default()
            },
        ))
        .unwrap_err();
        assert!(err.message().contains("community"));
    }

    fn device_named(hostname: &str) -> NewDevice {
        NewDevice {
            hostname: hostname.into(),
            address: "127.0.0.1".into(),
            port: 161,
            credentials: SnmpCredentials::V2c {
                community: Secret::new("c"),
            },
            group: 0,
        }
    }

    #[test]
    fn devices_sharing_an_rrd_directory_are_refused() {
        let mut state = ClusterState::default();
        state.apply(&Command::AddDevice(device_named("sw 1")));
        state.apply(&Command::AddDevice(device_named("core")));
        let err = check_rrd_dirs(&state, &[device_named("sw_1")]).unwrap_err();
        assert!(
            err.message().contains("'sw_1'") && err.message().contains("'sw 1'"),
            "{}",
            err.message()
        );
        // An unusual new name against a plain existing one, and two new ones alike.
        state.apply(&Command::AddDevice(device_named("sw_2")));
        assert!(check_rrd_dirs(&state, &[device_named("sw 2")]).is_err());
        let err = check_rrd_dirs(
            &state,
            &[device_named("a"), device_named("x:y"), device_named("x/y")],
        )
        .unwrap_err();
        assert!(
            err.message().starts_with("device 3 ('x/y')"),
            "{}",
            err.message()
        );
        // Distinct directories, and devices that exist already, pass.
        assert!(
            check_rrd_dirs(
                &state,
                &[
                    device_named("sw-1"),
                    device_named("sw 1"),
                    device_named("core")
                ]
            )
            .is_ok()
        );
    }

    #[test]
    fn ports_are_named_only_by_a_discovery_their_key_still_matches() {
        let found = |ifindex: u32, ifname: &str| DiscoveredPort {
            ifindex,
            ifname: ifname.into(),
            ifdescr: format!("{ifname} descr"),
        };
        let shown = |port_id: u64, ifindex: u32| pb::PortInfo {
            port_id,
            ifindex,
            ifname: String::new(),
            ifdescr: String::new(),
            rrd: String::new(),
        };
        let ports = [
            Port::new(1, 1, PortKey::name("eth0")),
            // Renamed since this node's discovery.
            Port::new(2, 2, PortKey::name("eth9")),
            Port::new(3, 3, PortKey::name("eth2")),
        ]
        .map(|p| p.expect("fits"));
        let mut detail = [shown(1, 1), shown(2, 2), shown(3, 3)];
        detail[2].ifname = "from the owner".into();
        name_ports(
            &mut detail,
            &ports,
            &[found(1, "eth0"), found(2, "eth1"), found(3, "eth2")],
        );
        let names: Vec<(&str, &str)> = detail
            .iter()
            .map(|p| (p.ifname.as_str(), p.ifdescr.as_str()))
            .collect();
        assert_eq!(
            names,
            [("eth0", "eth0 descr"), ("", ""), ("from the owner", "")]
        );
    }
}
