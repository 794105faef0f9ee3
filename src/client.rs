//! Client side of the operator CLI: talks to any node over gRPC and prints
//! tables or JSON.

use crate::proto::admin_client::AdminClient;
use crate::proto::{self as pb};
use crate::secret::Secret;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no cluster secret: pass --secret or set RAFTPOLL_SECRET")]
    NoSecret,
    #[error("the cluster secret cannot be sent as a header (non-ASCII characters?)")]
    BadSecret,
    #[error("invalid node address '{0}': expected host:port")]
    BadAddress(String),
    #[error("cannot reach raftpoll node at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("node {addr} refused the cluster secret (UNAUTHENTICATED)")]
    Unauthenticated { addr: String },
    #[error("{0}")]
    Server(String),
}

/// Where to connect and how to authenticate; shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Address of any node of the cluster.
    #[arg(
        long,
        global = true,
        env = "RAFTPOLL_ADDR",
        default_value = "127.0.0.1:7071"
    )]
    pub addr: String,
    /// Cluster secret.
    #[arg(long, global = true, env = "RAFTPOLL_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum DeviceCommand {
    /// Add a device to the cluster.
    Add(AddDeviceArgs),
    /// List all devices with owner and poll state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a device with its ports and RRD files.
    Show {
        hostname: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a device (its RRD files are kept).
    Remove { hostname: String },
    /// Move a device to another poller group.
    SetGroup { hostname: String, group: u32 },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SnmpVersionArg {
    V1,
    V2c,
    V3,
}

#[derive(Args, Debug, Clone)]
pub struct AddDeviceArgs {
    pub hostname: String,
    /// Agent address; defaults to the hostname.
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long, default_value_t = 161)]
    pub port: u16,
    #[arg(long, value_enum, default_value = "v2c")]
    pub snmp_version: SnmpVersionArg,
    #[arg(long, default_value = "public", hide_default_value = true)]
    pub community: String,
    #[arg(long)]
    pub v3_user: Option<String>,
    /// md5, sha, sha256 or sha512.
    #[arg(long)]
    pub auth_proto: Option<String>,
    #[arg(long)]
    pub auth_pass: Option<String>,
    /// des, aes or aes256.
    #[arg(long)]
    pub priv_proto: Option<String>,
    #[arg(long)]
    pub priv_pass: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub group: u32,
}

/// A client command, ready to send.
#[derive(Debug, Clone)]
pub enum Request {
    Status { json: bool },
    Leave { node: Option<u64> },
    Device(DeviceCommand),
}

struct Admin {
    client: AdminClient<Channel>,
    auth: AsciiMetadataValue,
    addr: String,
}

impl Admin {
    async fn connect(conn: &Connection) -> Result<Admin, ClientError> {
        let secret = Secret::new(conn.secret.clone().ok_or(ClientError::NoSecret)?);
        let auth = crate::cluster::network::bearer_value(&secret).ok_or(ClientError::BadSecret)?;
        let endpoint = Endpoint::from_shared(format!("http://{}", conn.addr))
            .map_err(|_| ClientError::BadAddress(conn.addr.clone()))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClientError::Unreachable {
                addr: conn.addr.clone(),
                message: source_chain(&e),
            })?;
        Ok(Admin {
            client: AdminClient::new(channel),
            auth,
            addr: conn.addr.clone(),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert("authorization", self.auth.clone());
        r
    }

    fn error(&self, status: tonic::Status) -> ClientError {
        match status.code() {
            Code::Unauthenticated => ClientError::Unauthenticated {
                addr: self.addr.clone(),
            },
            Code::Unavailable if status.message().contains("transport") => {
                ClientError::Unreachable {
                    addr: self.addr.clone(),
                    message: status.message().to_string(),
                }
            }
            _ => ClientError::Server(status.message().to_string()),
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let _ = write!(s, ": {inner}");
        cur = inner.source();
    }
    s
}

/// Runs one client command and returns what to print.
pub async fn run(conn: &Connection, request: Request) -> Result<String, ClientError> {
    let mut admin = Admin::connect(conn).await?;
    match request {
        Request::Status { json } => {
            let req = admin.request(pb::StatusRequest {});
            let reply = admin
                .client
                .status(req)
                .await
                .map_err(|s| admin.error(s))?
                .into_inner();
            Ok(if json {
                status_json(&reply).to_string()
            } else {
                status_table(&reply)
            })
        }
        Request::Leave { node } => {
            let req = admin.request(pb::LeaveRequest { node_id: node });
            let reply = admin
                .client
                .leave(req)
                .await
                .map_err(|s| admin.error(s))?
                .into_inner();
            Ok(format!("node {} left the cluster", reply.node_id))
        }
        Request::Device(DeviceCommand::List { json }) => {
            let req = admin.request(pb::ListDevicesRequest {});
            let reply = admin
                .client
                .list_devices(req)
                .await
                .map_err(|s| admin.error(s))?
                .into_inner();
            Ok(if json {
                Value::Array(reply.devices.iter().map(device_json).collect()).to_string()
            } else {
                devices_table(&reply.devices)
            })
        }
        Request::Device(DeviceCommand::Show { hostname, json }) => {
            let req = admin.request(pb::GetDeviceRequest { hostname });
            let reply = admin
                .client
                .get_device(req)
                .await
                .map_err(|s| admin.error(s))?
                .into_inner();
            Ok(if json {
                detail_json(&reply).to_string()
            } else {
                detail_text(&reply)
            })
        }
        Request::Device(DeviceCommand::Add(a)) => {
            let hostname = a.hostname.clone();
            let req = admin.request(add_request(a));
            admin
                .client
                .add_device(req)
                .await
                .map_err(|s| admin.error(s))?;
            Ok(format!("added device {hostname}"))
        }
        Request::Device(DeviceCommand::Remove { hostname }) => {
            let req = admin.request(pb::RemoveDeviceRequest {
                hostname: hostname.clone(),
            });
            admin
                .client
                .remove_device(req)
                .await
                .map_err(|s| admin.error(s))?;
            Ok(format!("removed device {hostname}"))
        }
        Request::Device(DeviceCommand::SetGroup { hostname, group }) => {
            let req = admin.request(pb::SetDeviceGroupRequest {
                hostname: hostname.clone(),
                group,
            });
            admin
                .client
                .set_device_group(req)
                .await
                .map_err(|s| admin.error(s))?;
            Ok(format!("device {hostname} now in poller group {group}"))
        }
    }
}

fn add_request(a: AddDeviceArgs) -> pb::AddDeviceRequest {
    let version = match a.snmp_version {
        SnmpVersionArg::V1 => "v1",
        SnmpVersionArg::V2c => "v2c",
        SnmpVersionArg::V3 => "v3",
    };
    pb::AddDeviceRequest {
        hostname: a.hostname,
        address: a.ip.unwrap_or_default(),
        port: u32::from(a.port),
        credentials: Some(pb::Credentials {
            version: version.into(),
            community: a.community,
            v3_user: a.v3_user.unwrap_or_default(),
            auth_proto: a.auth_proto.unwrap_or_default(),
            auth_pass: a.auth_pass.unwrap_or_default(),
            priv_proto: a.priv_proto.unwrap_or_default(),
            priv_pass: a.priv_pass.unwrap_or_default(),
        }),
        group: a.group,
    }
}

pub fn status_json(s: &pb::StatusReply) -> Value {
    let devices = s.devices.unwrap_or_default();
    let rrd = s.rrd.clone().unwrap_or_default();
    json!({
        "leader_id": s.leader_id,
        "term": s.term,
        "nodes": s.nodes.iter().map(|n| json!({
            "id": n.id, "name": n.name, "addr": n.addr, "role": n.role,
            "alive": n.alive, "groups": n.groups, "devices": n.devices,
        })).collect::<Vec<_>>(),
        "devices": {"total": devices.total, "unassigned": devices.unassigned},
        "answered_by": s.answered_by,
        "rrd": {
            "rrdcached": rrd.rrdcached, "connected": rrd.connected, "queued": rrd.queued,
            "written": rrd.written, "dropped": rrd.dropped, "errors": rrd.errors,
            "spool_bytes": rrd.spool_bytes, "spool_records": rrd.spool_records,
            "spool_oldest": rrd.spool_oldest, "spool_dropped": rrd.spool_dropped,
        },
    })
}

pub fn device_json(d: &pb::DeviceSummary) -> Value {
    json!({
        "hostname": d.hostname,
        "group": d.group,
        "node_id": d.node_id,
        "status": d.status,
        "last_polled": d.last_polled,
        "last_poll_ms": d.last_poll_ms,
    })
}

pub fn detail_json(d: &pb::DeviceDetail) -> Value {
    let summary = d.device.clone().unwrap_or_default();
    let mut v = device_json(&summary);
    if let Value::Object(map) = &mut v {
        map.insert("reason".into(), json!(summary.reason));
        map.insert("address".into(), json!(summary.address));
        map.insert("port".into(), json!(summary.port));
        map.insert("snmp_version".into(), json!(summary.snmp_version));
        map.insert("sys_name".into(), json!(d.sys_name));
        map.insert("sys_descr".into(), json!(d.sys_descr));
        map.insert("sys_object_id".into(), json!(d.sys_object_id));
        map.insert("last_discovered".into(), json!(d.last_discovered));
        map.insert(
            "ports".into(),
            d.ports
                .iter()
                .map(|p| json!({"port_id": p.port_id, "ifindex": p.ifindex, "ifname": p.ifname, "rrd": p.rrd}))
                .collect(),
        );
        map.insert("rrd_files".into(), json!(d.rrd_files));
    }
    v
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn status_table(s: &pb::StatusReply) -> String {
    let devices = s.devices.unwrap_or_default();
    let mut out = format!(
        "leader: {}   term: {}   devices: {} ({} unassigned)\n\n",
        opt(s.leader_id),
        s.term,
        devices.total,
        devices.unassigned
    );
    let _ = writeln!(
        out,
        "{:>4}  {:<16} {:<22} {:<9} {:<6} {:<10} {:>7}",
        "ID", "NAME", "ADDRESS", "ROLE", "ALIVE", "GROUPS", "DEVICES"
    );
    for n in &s.nodes {
        let groups = n
            .groups
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let alive = if n.alive { "yes" } else { "NO" };
        let _ = writeln!(
            out,
            "{:>4}  {:<16} {:<22} {:<9} {:<6} {:<10} {:>7}",
            n.id, n.name, n.addr, n.role, alive, groups, n.devices
        );
    }
    if let Some(r) = &s.rrd {
        let _ = write!(
            out,
            "\nrrdcached {} ({}): {} queued, {} written, {} dropped, {} errors",
            r.rrdcached,
            if r.connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            r.queued,
            r.written,
            r.dropped,
            r.errors
        );
        if r.spool_records > 0 || r.spool_dropped > 0 {
            let _ = write!(
                out,
                "\nspool: {} updates waiting ({} bytes, oldest {}), {} dropped for space",
                r.spool_records,
                r.spool_bytes,
                opt(r.spool_oldest),
                r.spool_dropped
            );
        }
    }
    out
}

fn devices_table(devices: &[pb::DeviceSummary]) -> String {
    let mut out = format!(
        "{:<24} {:>5} {:>5} {:<8} {:>11} {:>8}\n",
        "HOSTNAME", "GROUP", "NODE", "STATUS", "LAST POLLED", "POLL MS"
    );
    for d in devices {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>5} {:<8} {:>11} {:>8}",
            d.hostname,
            d.group,
            opt(d.node_id),
            d.status,
            opt(d.last_polled),
            opt(d.last_poll_ms)
        );
    }
    out.trim_end().to_string()
}

fn detail_text(d: &pb::DeviceDetail) -> String {
    let s = d.device.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "hostname:     {}", s.hostname);
    let _ = writeln!(
        out,
        "address:      {}:{} (SNMP {})",
        s.address, s.port, s.snmp_version
    );
    let _ = writeln!(out, "group:        {}", s.group);
    let _ = writeln!(out, "node:         {}", opt(s.node_id));
    let _ = writeln!(
        out,
        "status:       {}{}",
        s.status,
        s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "last polled:  {} ({} ms)",
        opt(s.last_polled),
        opt(s.last_poll_ms)
    );
    let _ = writeln!(out, "sysName:      {}", d.sys_name);
    let _ = writeln!(out, "sysDescr:     {}", d.sys_descr);
    let _ = writeln!(out, "ports:");
    for p in &d.ports {
        let _ = writeln!(
            out,
            "  {:>6} ifIndex {:<8} {:<20} {}",
            p.port_id, p.ifindex, p.ifname, p.rrd
        );
    }
    let _ = writeln!(out, "rrd files:");
    for f in &d.rrd_files {
        let _ = writeln!(out, "  {f}");
    }
    out.trim_end().to_string()
}
