//! Client side of the operator CLI: sends one command to any node over gRPC
//! and returns what to print.
//!
//! `rpc` holds the Admin calls, `import` reads and checks `device import`
//! files, `render` turns replies into tables or JSON.

mod import;
mod render;
mod rpc;

pub use import::{CsvProblems, LineProblem, parse_import};
pub use render::{detail_json, device_json, status_json};

use crate::proto::{self as pb};
use clap::{Args, Subcommand, ValueEnum};
use rpc::Admin;
use serde_json::Value;
use std::path::PathBuf;

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
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "--cert and --key go together, and need --ca (the CA that signed the nodes' certificates)"
    )]
    TlsArgs,
    #[error("node {addr} refused the cluster secret (UNAUTHENTICATED)")]
    Unauthenticated { addr: String },
    #[error("{0}")]
    Server(String),
    #[error("cannot read {path}: {message}")]
    ReadFile { path: String, message: String },
    #[error("{path}: {problems}")]
    BadCsv { path: String, problems: CsvProblems },
    #[error(
        "{cause} (import stopped after {added} added and {skipped} already present of \
         {total} devices; run it again to add the rest)"
    )]
    ImportStopped {
        // Not `source`: the message already includes it.
        cause: Box<ClientError>,
        added: u64,
        skipped: u64,
        total: usize,
    },
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
    /// CA certificate (PEM) that signed the nodes' certificates: connect
    /// with TLS. Without it the connection is plaintext.
    #[arg(long, global = true, env = "RAFTPOLL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for nodes with `client_auth = "required"`.
    #[arg(long, global = true, env = "RAFTPOLL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, env = "RAFTPOLL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl Connection {
    /// How to reach the node: TLS with `--ca`, plaintext without.
    pub fn dialer(&self) -> Result<crate::grpc::Dialer, ClientError> {
        let cert_and_key = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err(ClientError::TlsArgs),
        };
        match &self.ca {
            Some(ca) => {
                let files = crate::tls::TlsFiles {
                    ca: ca.clone(),
                    cert_and_key,
                };
                Ok(crate::grpc::Dialer::tls(crate::tls::ClientTls::load(
                    &files,
                )?))
            }
            None if cert_and_key.is_some() => Err(ClientError::TlsArgs),
            None => Ok(crate::grpc::Dialer::plain()),
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum DeviceCommand {
    /// Add a device to the cluster.
    Add(AddDeviceArgs),
    /// Add devices from a CSV file with a header line. Columns: hostname
    /// (required), address, port, version, community, v3_user, auth_proto,
    /// auth_pass, priv_proto, priv_pass, group, in any order; an empty cell
    /// takes the `device add` default. Devices already present are skipped.
    /// Nothing is sent if any line is bad.
    Import {
        /// CSV file; `-` reads standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
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

/// Defaults of `device add`, shared with `device import`.
const DEFAULT_PORT: u16 = 161;
const DEFAULT_VERSION: SnmpVersionArg = SnmpVersionArg::V2c;
const DEFAULT_COMMUNITY: &str = "public";

#[derive(Args, Debug, Clone)]
pub struct AddDeviceArgs {
    pub hostname: String,
    /// Agent address; defaults to the hostname.
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = DEFAULT_VERSION)]
    pub snmp_version: SnmpVersionArg,
    #[arg(long, default_value = DEFAULT_COMMUNITY, hide_default_value = true)]
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

/// Runs one client command and returns what to print.
pub async fn run(conn: &Connection, request: Request) -> Result<String, ClientError> {
    // An import is read and checked completely before connecting: a bad
    // file sends nothing.
    let import = match &request {
        Request::Device(DeviceCommand::Import { file }) => Some(import::read_import(file).await?),
        _ => None,
    };
    let mut admin = Admin::connect(conn).await?;
    dispatch(&mut admin, request, import.unwrap_or_default()).await
}

/// Sends `request` and renders the answer; `import` holds the checked
/// devices of an import.
async fn dispatch(
    admin: &mut Admin,
    request: Request,
    import: Vec<pb::AddDeviceRequest>,
) -> Result<String, ClientError> {
    match request {
        Request::Status { json } => {
            let reply = admin.status().await?;
            Ok(if json {
                render::status_json(&reply).to_string()
            } else {
                render::status_table(&reply)
            })
        }
        Request::Leave { node } => {
            let reply = admin.leave(node).await?;
            Ok(format!("node {} left the cluster", reply.node_id))
        }
        Request::Device(DeviceCommand::List { json }) => {
            let reply = admin.list_devices().await?;
            Ok(if json {
                Value::Array(
                    reply
                        .devices
                        .iter()
                        .map(render::device_json)
                        .chain(reply.skipped.iter().map(render::skipped_json))
                        .collect(),
                )
                .to_string()
            } else {
                render::devices_table(&reply.devices, &reply.skipped)
            })
        }
        Request::Device(DeviceCommand::Show { hostname, json }) => {
            let reply = admin.get_device(hostname).await?;
            Ok(if json {
                render::detail_json(&reply).to_string()
            } else {
                render::detail_text(&reply)
            })
        }
        Request::Device(DeviceCommand::Add(a)) => {
            let hostname = a.hostname.clone();
            admin.add_device(add_request(a)).await?;
            Ok(format!("added device {hostname}"))
        }
        Request::Device(DeviceCommand::Import { .. }) => {
            let (added, skipped) = admin.import_devices(import).await?;
            let plural = if added == 1 { "" } else { "s" };
            Ok(format!(
                "added {added} device{plural}, {skipped} already present (skipped)"
            ))
        }
        Request::Device(DeviceCommand::Remove { hostname }) => {
            admin.remove_device(hostname.clone()).await?;
            Ok(format!("removed device {hostname}"))
        }
        Request::Device(DeviceCommand::SetGroup { hostname, group }) => {
            admin.set_device_group(hostname.clone(), group).await?;
            Ok(format!("device {hostname} now in poller group {group}"))
        }
    }
}

/// The request `device add` sends; `device import` builds the same per line.
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
