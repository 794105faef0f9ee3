//! Benchmarks: commands that start real processes on loopback, load them, and print
//! markdown tables (see BENCHMARKS.md). They measure; the test suite checks correctness.

pub mod bulk_add;
pub mod cluster;
pub mod formats;
pub mod harness;
pub mod kill_restart;
pub mod peers;
pub mod rrd_sink;
pub mod rrd_write;
pub mod scale;
pub mod writeback;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BenchError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> BenchError {
        BenchError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Poll throughput and CPU per poll: raftpoll vs collectd's snmp plugin vs snmp_exporter.
    Peers(peers::PeersArgs),
    /// rrdcached write path: raftpoll's BATCH writer vs one rrdtool process per update.
    Rrd(rrd_write::RrdArgs),
    /// Cluster write path: time to add 100,000 devices, and the Raft data size after.
    BulkAdd(bulk_add::BulkAddArgs),
    /// Devices per node: CPU, memory and missed intervals at 1k, 5k, 20k devices.
    Scale(scale::ScaleArgs),
    /// Scale-out: 100,000 devices over 10 nodes on one machine, missed intervals, leader
    /// changes, CPU and memory per node.
    Cluster(cluster::ClusterArgs),
    /// Replicated against polling CPU on 1, 3, 5 and 10 nodes with the same devices per node.
    Scaling(cluster::ScalingArgs),
    /// Snapshot size and encode/decode CPU: bincode vs postcard vs protobuf, 20k devices.
    Formats(formats::FormatsArgs),
    /// LibreNMS write-back: the node's extra CPU with every poll written to MariaDB.
    Writeback(writeback::WritebackArgs),
}

/// A working directory: the given one (kept), or a temp dir removed at the end.
pub struct Workdir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Workdir {
    pub fn new(keep: Option<&Path>, prefix: &str) -> Result<Workdir, BenchError> {
        match keep {
            Some(p) => {
                std::fs::create_dir_all(p).map_err(|e| BenchError::io("create", p, e))?;
                Ok(Workdir {
                    path: p.to_path_buf(),
                    _temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir()
                    .map_err(|e| BenchError::Setup(format!("cannot create a temp dir: {e}")))?;
                Ok(Workdir {
                    path: temp.path().to_path_buf(),
                    _temp: Some(temp),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs one benchmark and prints its table(s) on stdout.
pub fn run(command: BenchCommand) -> Result<(), BenchError> {
    let out = match command {
        BenchCommand::Peers(args) => peers::run(&args)?,
        BenchCommand::Scale(args) => scale::run(&args)?,
        BenchCommand::Cluster(args) => cluster::run(&args)?,
        BenchCommand::Scaling(args) => cluster::run_scaling(&args)?,
        BenchCommand::Rrd(args) => rrd_write::run(&args)?,
        BenchCommand::BulkAdd(args) => bulk_add::run(&args)?,
        BenchCommand::Formats(args) => formats::run(&args)?,
        BenchCommand::Writeback(args) => writeback::run(&args)?,
    };
    println!("{out}");
    Ok(())
}
