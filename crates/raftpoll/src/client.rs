//! Client side of the operator CLI: talks to any node over gRPC and prints
//! tables or JSON.

use crate::api::admin::{MAX_REQUEST_BYTES, new_device};
use crate::proto::admin_client::AdminClient;
use crate::proto::{self as pb};
use crate::secret::Secret;
use clap::{Args, Subcommand, ValueEnum};
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

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

struct Admin {
    client: AdminClient<Channel>,
    auth: AsciiMetadataValue,
    addr: String,
}

impl Admin {
    async fn connect(conn: &Connection) -> Result<Admin, ClientError> {
        let secret = Secret::new(conn.secret.clone().ok_or(ClientError::NoSecret)?);
        let auth = crate::cluster::network::bearer_value(&secret).ok_or(ClientError::BadSecret)?;
        let endpoint = crate::grpc::endpoint(&conn.addr, Duration::from_secs(3))
            .map_err(|_| ClientError::BadAddress(conn.addr.clone()))?
            .timeout(Duration::from_secs(30));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClientError::Unreachable {
                addr: conn.addr.clone(),
                message: source_chain(&e),
            })?;
        Ok(Admin {
            // A device list of a large cluster is bigger than tonic's 4 MiB default.
            client: AdminClient::new(channel).max_decoding_message_size(MAX_REQUEST_BYTES),
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
    // An import is read and checked completely before connecting: a bad
    // file sends nothing.
    let import = match &request {
        Request::Device(DeviceCommand::Import { file }) => Some(read_import(file).await?),
        _ => None,
    };
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
        Request::Device(DeviceCommand::Import { .. }) => {
            import_devices(&mut admin, import.unwrap_or_default()).await
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

/// Devices per `AddDevices` call of an import: a few hundred kB per call.
const IMPORT_DEVICES_PER_CALL: usize = 5000;
/// Byte budget of one `AddDevices` call, below tonic's default 4 MiB limit
/// so even a node with default limits accepts it.
const IMPORT_BYTES_PER_CALL: usize = 3 * 1024 * 1024;

/// Reads `path` (`-`: standard input) and checks every line.
async fn read_import(path: &std::path::Path) -> Result<Vec<pb::AddDeviceRequest>, ClientError> {
    let shown = path.display().to_string();
    let read_err = |e: std::io::Error| ClientError::ReadFile {
        path: shown.clone(),
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        tokio::io::stdin()
            .read_to_end(&mut bytes)
            .await
            .map_err(read_err)?;
    } else {
        bytes = tokio::fs::read(path).await.map_err(read_err)?;
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ClientError::BadCsv {
            path: shown.clone(),
            problems: CsvProblems(vec![LineProblem::new(line, "not UTF-8 text")]),
        }
    })?;
    parse_import(&text).map_err(|problems| ClientError::BadCsv {
        path: shown,
        problems,
    })
}

/// Sends checked devices in calls of bounded size and sums the answers.
async fn import_devices(
    admin: &mut Admin,
    devices: Vec<pb::AddDeviceRequest>,
) -> Result<String, ClientError> {
    let total = devices.len();
    let (mut added, mut skipped) = (0u64, 0u64);
    for batch in import_batches(devices) {
        let req = admin.request(pb::AddDevicesRequest { devices: batch });
        match admin.client.add_devices(req).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                added += u64::from(reply.added);
                skipped += reply.existing.len() as u64;
            }
            Err(status) if added + skipped == 0 => return Err(admin.error(status)),
            Err(status) => {
                return Err(ClientError::ImportStopped {
                    cause: Box::new(admin.error(status)),
                    added,
                    skipped,
                    total,
                });
            }
        }
    }
    let plural = if added == 1 { "" } else { "s" };
    Ok(format!(
        "added {added} device{plural}, {skipped} already present (skipped)"
    ))
}

/// Splits an import into calls of at most [`IMPORT_DEVICES_PER_CALL`]
/// devices and about [`IMPORT_BYTES_PER_CALL`] bytes, keeping the order.
fn import_batches(devices: Vec<pb::AddDeviceRequest>) -> Vec<Vec<pb::AddDeviceRequest>> {
    // Length-delimited size, as it travels inside the request.
    crate::api::split_by_size(
        devices,
        IMPORT_DEVICES_PER_CALL,
        IMPORT_BYTES_PER_CALL as u64,
        |d| (d.encoded_len() + 8) as u64,
    )
}

/// One bad line of an import file. Never holds a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number in the file.
    pub line: usize,
    pub message: String,
}

impl LineProblem {
    fn new(line: usize, message: impl Into<String>) -> Self {
        LineProblem {
            line,
            message: message.into(),
        }
    }
}

/// Every bad line of an import file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblems(pub Vec<LineProblem>);

/// At most this many bad lines are printed; the rest are counted.
const PROBLEMS_SHOWN: usize = 20;

impl fmt::Display for CsvProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        let lines = if n == 1 { "line" } else { "lines" };
        write!(f, "{n} bad {lines}, nothing was sent")?;
        for p in self.0.iter().take(PROBLEMS_SHOWN) {
            write!(f, "\n  line {}: {}", p.line, p.message)?;
        }
        if n > PROBLEMS_SHOWN {
            write!(f, "\n  and {} more", n - PROBLEMS_SHOWN)?;
        }
        Ok(())
    }
}

/// Columns of an import file, as named in its header.
const CSV_COLUMNS: [&str; 11] = [
    "hostname",
    "address",
    "port",
    "version",
    "community",
    "v3_user",
    "auth_proto",
    "auth_pass",
    "priv_proto",
    "priv_pass",
    "group",
];

/// A CSV record: the line it starts on and its cells.
#[derive(Debug, PartialEq)]
struct Record {
    line: usize,
    cells: Vec<String>,
}

/// A record that could not be split into cells: where, and why. Holds no
/// cell content (it might be a secret).
#[derive(Debug, PartialEq)]
struct SyntaxError {
    line: usize,
    /// 0-based index of the cell in its record.
    cell: usize,
    problem: &'static str,
}

/// Splits CSV text into records (RFC 4180: commas, quoted cells that may
/// hold commas, newlines and doubled quotes; CRLF or LF). Unquoted cells are
/// trimmed; blank lines are skipped. A bad record is reported and skipped
/// up to the end of its line, so every bad line can be reported.
fn csv_records(text: &str) -> Vec<Result<Record, SyntaxError>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    loop {
        // Skip blank lines between records.
        while let Some(&c) = chars.peek() {
            match c {
                '\n' => line += 1,
                '\r' | ' ' | '\t' => {}
                _ => break,
            }
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let start = line;
        let mut cells = Vec::new();
        let mut error = None;
        'record: loop {
            let mut cell = String::new();
            while matches!(chars.peek(), Some(' ' | '\t')) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            error = Some("unterminated quoted cell");
                            line = start;
                            break 'record;
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cell.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            cell.push(c);
                        }
                    }
                }
                while matches!(chars.peek(), Some(' ' | '\t' | '\r')) {
                    chars.next();
                }
                match chars.next() {
                    Some(',') => cells.push(cell),
                    None | Some('\n') => {
                        cells.push(cell);
                        line += 1;
                        break;
                    }
                    Some(_) => {
                        error = Some("text after the closing quote");
                        break;
                    }
                }
            } else {
                loop {
                    match chars.next() {
                        Some(',') => {
                            cells.push(cell.trim().to_string());
                            break;
                        }
                        None | Some('\n') => {
                            cells.push(cell.trim().to_string());
                            line += 1;
                            break 'record;
                        }
                        Some('"') => {
                            error = Some("quote inside an unquoted cell (quote the whole cell)");
                            break 'record;
                        }
                        Some(c) => cell.push(c),
                    }
                }
            }
        }
        match error {
            None => out.push(Ok(Record { line: start, cells })),
            Some(problem) => {
                out.push(Err(SyntaxError {
                    line,
                    cell: cells.len(),
                    problem,
                }));
                // Resynchronise at the next line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
        }
    }
}

/// Parses an import file into checked device requests: the same requests
/// and the same checks as `device add`. Reports every bad line.
pub fn parse_import(text: &str) -> Result<Vec<pb::AddDeviceRequest>, CsvProblems> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = csv_records(text).into_iter();
    let header = match records.next() {
        None => {
            return Err(CsvProblems(vec![LineProblem::new(
                1,
                "empty file: expected a header line naming the columns, e.g. hostname,address,community",
            )]));
        }
        Some(Err(e)) => {
            return Err(CsvProblems(vec![LineProblem::new(
                e.line,
                format!("header, column {}: {}", e.cell + 1, e.problem),
            )]));
        }
        Some(Ok(r)) => r,
    };
    let columns = header_columns(&header)?;
    let mut problems = Vec::new();
    let mut devices = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let column = columns
                    .get(e.cell)
                    .copied()
                    .unwrap_or("beyond the last column");
                problems.push(LineProblem::new(
                    e.line,
                    format!("column {} ({column}): {}", e.cell + 1, e.problem),
                ));
                continue;
            }
        };
        if record.cells.len() != columns.len() {
            problems.push(LineProblem::new(
                record.line,
                format!(
                    "{} cells, but the header has {} columns",
                    record.cells.len(),
                    columns.len()
                ),
            ));
            continue;
        }
        let row: HashMap<&str, &str> = columns
            .iter()
            .copied()
            .zip(record.cells.iter().map(String::as_str))
            .collect();
        let request = match row_request(&row) {
            Ok(r) => r,
            Err(message) => {
                problems.push(LineProblem::new(record.line, message));
                continue;
            }
        };
        match new_device(request.clone()) {
            Ok(device) => {
                if let Some(first) = first_line.insert(device.hostname.clone(), record.line) {
                    problems.push(LineProblem::new(
                        record.line,
                        format!("hostname '{}' already on line {first}", device.hostname),
                    ));
                } else {
                    devices.push(request);
                }
            }
            Err(status) => {
                problems.push(LineProblem::new(record.line, csv_wording(status.message())))
            }
        }
    }
    if !problems.is_empty() {
        return Err(CsvProblems(problems));
    }
    if devices.is_empty() {
        return Err(CsvProblems(vec![LineProblem::new(
            header.line,
            "no device lines after the header",
        )]));
    }
    Ok(devices)
}

/// The header's column names, checked: known, not repeated, `hostname` present.
fn header_columns(header: &Record) -> Result<Vec<&'static str>, CsvProblems> {
    let mut columns = Vec::with_capacity(header.cells.len());
    let mut problems = Vec::new();
    for (i, name) in header.cells.iter().enumerate() {
        let wanted = name.trim().to_ascii_lowercase();
        match CSV_COLUMNS.iter().find(|c| **c == wanted) {
            Some(c) if columns.contains(c) => problems.push(format!("column '{c}' appears twice")),
            Some(c) => columns.push(*c),
            None if wanted.is_empty() => problems.push(format!("column {} has no name", i + 1)),
            None => problems.push(format!(
                "unknown column '{}' (known: {})",
                name.trim(),
                CSV_COLUMNS.join(", ")
            )),
        }
    }
    if problems.is_empty() && !columns.contains(&"hostname") {
        problems.push("no 'hostname' column".into());
    }
    if problems.is_empty() {
        Ok(columns)
    } else {
        Err(CsvProblems(
            problems
                .into_iter()
                .map(|m| LineProblem::new(header.line, format!("header: {m}")))
                .collect(),
        ))
    }
}

/// One line as `device add` would send it: empty or missing cells take the
/// same defaults.
fn row_request(row: &HashMap<&str, &str>) -> Result<pb::AddDeviceRequest, String> {
    let cell = |name: &str| row.get(name).copied().filter(|v| !v.is_empty());
    let owned = |name: &str| cell(name).map(str::to_string);
    let port = match cell("port") {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port '{p}': expected a number from 1 to 65535"))?,
    };
    let snmp_version = match cell("version") {
        None => DEFAULT_VERSION,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "v1" | "1" => SnmpVersionArg::V1,
            "v2c" | "2c" | "2" => SnmpVersionArg::V2c,
            "v3" | "3" => SnmpVersionArg::V3,
            _ => return Err(format!("version '{v}': expected v1, v2c or v3")),
        },
    };
    let group = match cell("group") {
        None => 0,
        Some(g) => g
            .parse::<u32>()
            .map_err(|_| format!("group '{g}': expected a number from 0 to 4294967295"))?,
    };
    Ok(add_request(AddDeviceArgs {
        hostname: cell("hostname").unwrap_or_default().to_string(),
        ip: owned("address"),
        port,
        snmp_version,
        community: owned("community").unwrap_or_else(|| DEFAULT_COMMUNITY.into()),
        v3_user: owned("v3_user"),
        auth_proto: owned("auth_proto"),
        auth_pass: owned("auth_pass"),
        priv_proto: owned("priv_proto"),
        priv_pass: owned("priv_pass"),
        group,
    }))
}

/// The server's checks name `device add` flags; an import names columns.
fn csv_wording(message: &str) -> String {
    [
        ("--v3-user", "v3_user"),
        ("--auth-proto", "auth_proto"),
        ("--auth-pass", "auth_pass"),
        ("--priv-proto", "priv_proto"),
        ("--priv-pass", "priv_pass"),
    ]
    .iter()
    .fold(message.to_string(), |m, (flag, column)| {
        m.replace(flag, column)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<LineProblem> {
        match parse_import(text) {
            Ok(devices) => panic!("accepted: {devices:?}"),
            Err(p) => p.0,
        }
    }

    fn creds(r: &pb::AddDeviceRequest) -> pb::Credentials {
        r.credentials.clone().unwrap_or_default()
    }

    #[test]
    fn quoted_cells_hold_commas_quotes_and_newlines() {
        let text = "hostname,community,address\r\n\
                    \"sw1\",  \"pa\"\"ss,word\" ,127.0.0.1\r\n\
                    \n\
                    sw2 , \"multi\nline\", \"10.0.0.2\"\n";
        let devices = parse_import(text).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].hostname, "sw1");
        assert_eq!(creds(&devices[0]).community, "pa\"ss,word");
        assert_eq!(devices[0].address, "127.0.0.1");
        assert_eq!(devices[1].hostname, "sw2");
        assert_eq!(creds(&devices[1]).community, "multi\nline");
        assert_eq!(devices[1].address, "10.0.0.2");
        // Line numbers count physical lines, including those inside quotes.
        let records = csv_records("a\n\"x\ny\"\nb\n");
        let lines: Vec<usize> = records.iter().map(|r| r.as_ref().unwrap().line).collect();
        assert_eq!(lines, [1, 2, 4]);
    }

    #[test]
    fn missing_columns_and_empty_cells_take_device_add_defaults() {
        let text = "\u{feff}Hostname, port ,version,group\nsw1,,,\nsw2,1161,v1,7\n";
        let devices = parse_import(text).unwrap();
        let d = &devices[0];
        assert_eq!((d.hostname.as_str(), d.address.as_str()), ("sw1", ""));
        assert_eq!((d.port, d.group), (161, 0));
        assert_eq!(creds(d).version, "v2c");
        assert_eq!(creds(d).community, "public");
        // The same request `device add sw1` builds.
        let add = add_request(AddDeviceArgs {
            hostname: "sw1".into(),
            ip: None,
            port: DEFAULT_PORT,
            snmp_version: DEFAULT_VERSION,
            community: DEFAULT_COMMUNITY.into(),
            v3_user: None,
            auth_proto: None,
            auth_pass: None,
            priv_proto: None,
            priv_pass: None,
            group: 0,
        });
        assert_eq!(d, &add);
        let d = &devices[1];
        assert_eq!((d.port, d.group), (1161, 7));
        assert_eq!(creds(d).version, "v1");
        // The server fills in the address from the hostname, as for `device add`.
        assert_eq!(new_device(devices[0].clone()).unwrap().address, "sw1");
    }

    #[test]
    fn header_problems_are_named() {
        let p = problems("hostname,comunity,address\nsw1,x,127.0.0.1\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, 1);
        assert!(
            p[0].message
                .starts_with("header: unknown column 'comunity'"),
            "{}",
            p[0].message
        );
        let p = problems("address,community\n127.0.0.1,x\n");
        assert_eq!(p[0].message, "header: no 'hostname' column");
        let p = problems("hostname,port,Port\nsw1,1,2\n");
        assert_eq!(p[0].message, "header: column 'port' appears twice");
        let p = problems("hostname,,port\n");
        assert_eq!(p[0].message, "header: column 2 has no name");
        assert!(problems("")[0].message.starts_with("empty file"));
        assert_eq!(
            problems("hostname\n\n")[0].message,
            "no device lines after the header"
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "hostname,address,port,community\n\
                    ok1,127.0.0.1,161,c\n\
                    bad port,127.0.0.1,70000,c\n\
                    ok2,999.1.1.1,,c\n\
                    \"multi\nline\",127.0.0.1,1,c\n\
                    short,127.0.0.1\n\
                    ok1,127.0.0.1,162,c\n\
                    ok3,127.0.0.1,x\"y,c\n\
                    ok4,127.0.0.1,,c\n";
        let p = problems(text);
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 4, 5, 7, 8, 9], "{p:?}");
        assert_eq!(
            p[0].message,
            "port '70000': expected a number from 1 to 65535"
        );
        assert!(p[1].message.contains("invalid address '999.1.1.1'"));
        assert!(
            p[2].message.contains("invalid hostname"),
            "{}",
            p[2].message
        );
        assert_eq!(p[3].message, "2 cells, but the header has 4 columns");
        assert_eq!(p[4].message, "hostname 'ok1' already on line 2");
        assert_eq!(
            p[5].message,
            "column 3 (port): quote inside an unquoted cell (quote the whole cell)"
        );
    }

    #[test]
    fn no_secret_in_any_problem() {
        let secrets = ["Sekr1t-community", "Au7h-p4", "Priv-pass-99x"];
        let text = format!(
            "hostname,version,community,v3_user,auth_proto,auth_pass,priv_proto,priv_pass\n\
             a,v2c,\"{c}\"x,,,,,\n\
             b,v2c,{c}\"q,,,,,\n\
             c,v3,,bob,sha,{a},,\n\
             d,v3,,bob,sha,{a}-long-enough,aes,\"{p}\" z\n\
             e,v3,,bob,sha,{a}-long-enough,aes,\"{p}\n",
            c = secrets[0],
            a = secrets[1],
            p = secrets[2],
        );
        let p = problems(&text);
        assert_eq!(
            p.iter().map(|p| p.line).collect::<Vec<_>>(),
            [2, 3, 4, 5, 6]
        );
        assert_eq!(
            p[0].message,
            "column 3 (community): text after the closing quote"
        );
        assert_eq!(
            p[1].message,
            "column 3 (community): quote inside an unquoted cell (quote the whole cell)"
        );
        assert!(
            p[2].message.contains("auth_pass must be at least 8"),
            "{}",
            p[2].message
        );
        assert_eq!(
            p[3].message,
            "column 8 (priv_pass): text after the closing quote"
        );
        assert_eq!(
            p[4].message,
            "column 8 (priv_pass): unterminated quoted cell"
        );
        let shown = CsvProblems(p).to_string();
        for s in secrets {
            assert!(!shown.contains(s), "{s} leaked: {shown}");
        }
    }

    #[test]
    fn long_reports_are_capped() {
        let mut text = String::from("hostname,port\n");
        for i in 0..25 {
            text.push_str(&format!("h{i},0\n"));
        }
        let p = CsvProblems(problems(&text));
        assert_eq!(p.0.len(), 25);
        let shown = p.to_string();
        assert!(shown.starts_with("25 bad lines, nothing was sent\n  line 2: port '0'"));
        assert!(shown.contains("\n  line 21: ") && !shown.contains("line 22:"));
        assert!(shown.ends_with("\n  and 5 more"), "{shown}");
    }

    #[test]
    fn import_calls_are_bounded() {
        let text: String = std::iter::once("hostname,community\n".to_string())
            .chain((0..12_001).map(|i| format!("h{i},c{i}\n")))
            .collect();
        let devices = parse_import(&text).unwrap();
        let batches = import_batches(devices.clone());
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [5000, 5000, 2001]
        );
        assert_eq!(batches.concat(), devices);
        let fat: Vec<pb::AddDeviceRequest> = (0..4)
            .map(|i| pb::AddDeviceRequest {
                hostname: format!("f{i}"),
                credentials: Some(pb::Credentials {
                    community: "x".repeat(1024 * 1024),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let batches = import_batches(fat);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        for b in batches {
            let call = pb::AddDevicesRequest { devices: b };
            assert!(call.encoded_len() <= IMPORT_BYTES_PER_CALL);
        }
    }
}
