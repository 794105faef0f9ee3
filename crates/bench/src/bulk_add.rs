//! Cluster write path: time to add many devices (CLI import of a CSV file, and the
//! `AddDevices` RPC called directly) and the size of each node's Raft data afterwards.

use super::harness::{BENCH_SECRET, Node, Table, dir_size, machine, wait_for};
use super::rrd_sink::RrdSink;
use super::{BenchError, Workdir};
use raftpoll::proto::admin_client::AdminClient;
use raftpoll::proto::{AddDeviceRequest, AddDevicesRequest, Credentials};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BulkAddArgs {
    /// Devices to add.
    #[arg(long, default_value_t = 100_000)]
    pub devices: usize,
    /// Cluster sizes to run, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub nodes: Vec<usize>,
    /// Devices per call when the RPC is called directly.
    #[arg(long, default_value_t = 10_000)]
    pub per_call: usize,
    /// Keep configs, logs and data here (default: a temp dir, removed at the end).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

struct Row {
    method: &'static str,
    nodes: usize,
    seconds: f64,
    raft_mib: f64,
}

pub fn run(args: &BulkAddArgs) -> Result<String, BenchError> {
    if args.devices == 0 || args.per_call == 0 || args.nodes.contains(&0) {
        return Err(BenchError::Setup(
            "--devices, --per-call and --nodes must be positive".into(),
        ));
    }
    let work = Workdir::new(args.workdir.as_deref(), "raftpoll-bench-bulk-")?;
    let mut rows = Vec::new();
    for &nodes in &args.nodes {
        for method in [Method::CliImport, Method::Rpc] {
            let dir = work.path().join(format!("{}-{nodes}", method.slug()));
            eprintln!(
                "bulk-add: {} devices, {}, {nodes} node(s)",
                args.devices,
                method.name()
            );
            rows.push(run_one(args, nodes, method, &dir)?);
        }
    }
    let mut table = Table::new(&[
        "method",
        "nodes",
        "devices",
        "seconds",
        "devices/s",
        "Raft data per node (MiB)",
    ]);
    for r in &rows {
        table.row(vec![
            r.method.to_string(),
            r.nodes.to_string(),
            args.devices.to_string(),
            format!("{:.2}", r.seconds),
            format!("{:.0}", args.devices as f64 / r.seconds),
            format!("{:.1}", r.raft_mib),
        ]);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "adding {} devices until every node has applied them; Raft data = sled directory \
         (log + snapshot) of the largest node; {}\n",
        args.devices,
        machine()
    );
    out.push_str(&table.markdown());
    Ok(out)
}

#[derive(Clone, Copy)]
enum Method {
    CliImport,
    Rpc,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::CliImport => "raftpoll device import FILE.csv",
            Method::Rpc => "AddDevices RPC",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Method::CliImport => "import",
            Method::Rpc => "rpc",
        }
    }
}

/// Device `i`: a loopback address in a port range where nothing listens, so the
/// nodes' polls of it fail fast and stay on loopback.
fn device(i: usize) -> (String, u16, String) {
    (
        format!("bulk{i:06}"),
        20_000 + (i % 10_000) as u16,
        format!("c{i}"),
    )
}

fn run_one(
    args: &BulkAddArgs,
    nodes: usize,
    method: Method,
    dir: &std::path::Path,
) -> Result<Row, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
    let sink = RrdSink::start()?;
    let rrd = sink.addr.to_string();
    let poller = "frequency = 300";
    let first = Node::start(dir, "node1", &rrd, poller, "")?;
    let mut cluster = vec![first];
    for i in 2..=nodes {
        let seed = Some(cluster[0].addr);
        cluster.push(Node::start_with_seed(
            dir,
            &format!("node{i}"),
            &rrd,
            poller,
            "",
            seed,
        )?);
    }
    wait_for(Duration::from_secs(60), "every node to join", || {
        let status = cluster[0].cli(&["status", "--json"]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&status).ok()?;
        (v["nodes"].as_array()?.len() == nodes).then_some(())
    })?;

    let csv = dir.join("devices.csv");
    if let Method::CliImport = method {
        let mut text = String::from("hostname,address,port,community\n");
        for i in 0..args.devices {
            let (host, port, community) = device(i);
            let _ = writeln!(text, "{host},127.0.0.1,{port},{community}");
        }
        std::fs::write(&csv, text).map_err(|e| BenchError::io("write", &csv, e))?;
    }
    let started = Instant::now();
    match method {
        Method::CliImport => {
            cluster[0].cli(&["device", "import", &csv.display().to_string()])?;
        }
        Method::Rpc => add_by_rpc(&cluster[0], args)?,
    }
    // Done when every node has applied every device.
    for node in &cluster {
        wait_for(
            Duration::from_secs(120),
            "every node to apply the devices",
            || {
                let status = node.cli(&["status", "--json"]).ok()?;
                let v: serde_json::Value = serde_json::from_str(&status).ok()?;
                (v["devices"]["total"].as_u64()? >= args.devices as u64).then_some(())
            },
        )?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let raft_mib = cluster
        .iter()
        .map(|n| dir_size(&n.proc.data_dir().join("raft")))
        .max()
        .unwrap_or(0) as f64
        / 1048576.0;
    Ok(Row {
        method: method.name(),
        nodes,
        seconds,
        raft_mib,
    })
}

fn add_by_rpc(node: &Node, args: &BulkAddArgs) -> Result<(), BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Setup(format!("tokio runtime: {e}")))?;
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
            .map_err(|e| BenchError::Setup(format!("node address: {e}")))?
            .connect()
            .await
            .map_err(|e| BenchError::Setup(format!("cannot reach {}: {e}", node.addr)))?;
        let mut client = AdminClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {BENCH_SECRET}")
            .parse()
            .map_err(|_| BenchError::Setup("bad secret".into()))?;
        let all: Vec<usize> = (0..args.devices).collect();
        for chunk in all.chunks(args.per_call) {
            let devices = chunk
                .iter()
                .map(|&i| {
                    let (hostname, port, community) = device(i);
                    AddDeviceRequest {
                        hostname,
                        address: "127.0.0.1".into(),
                        port: u32::from(port),
                        credentials: Some(Credentials {
                            version: "v2c".into(),
                            community,
                            ..Default::default()
                        }),
                        group: 0,
                    }
                })
                .collect();
            let mut request = tonic::Request::new(AddDevicesRequest { devices });
            request.metadata_mut().insert("authorization", auth.clone());
            client
                .add_devices(request)
                .await
                .map_err(|s| BenchError::Setup(format!("AddDevices: {}", s.message())))?;
        }
        Ok(())
    })
}
