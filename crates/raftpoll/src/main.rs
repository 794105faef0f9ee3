//! The `raftpoll` binary: parse the command line, then hand over to the library.

use clap::{Parser, Subcommand};
use raftpoll::client::{self, Connection, DeviceCommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "raftpoll",
    version,
    about = "Clustered SNMP poller writing LibreNMS-compatible RRDs"
)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a poller node.
    Node {
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the cluster: leader, term, nodes, device counts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Gracefully remove a node (default: the one at --addr): its devices
    /// move first, leadership is handed over, then it exits. A node that
    /// does not answer (dead) is removed by the leader.
    Leave {
        #[arg(long)]
        node: Option<u64>,
    },
    /// Manage devices.
    #[command(subcommand)]
    Device(DeviceCommand),
}

/// Prints a command's output; a closed pipe (`raftpoll status | head -1`) is
/// not an error worth a panic.
fn print_out(out: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{out}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node { config } => raftpoll::node::run_from_file(&config)
                .await
                .map_err(anyhow::Error::from),
            Command::Status { json } => client::run(&cli.conn, client::Request::Status { json })
                .await
                .map(|out| print_out(&out))
                .map_err(anyhow::Error::from),
            Command::Leave { node } => client::run(&cli.conn, client::Request::Leave { node })
                .await
                .map(|out| print_out(&out))
                .map_err(anyhow::Error::from),
            Command::Device(cmd) => client::run(&cli.conn, client::Request::Device(cmd))
                .await
                .map(|out| print_out(&out))
                .map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Data written by a newer raftpoll: restarting cannot help, so a
            // distinct status lets the service manager stop retrying
            // (systemd `RestartPreventExitStatus=3`).
            let too_new = e
                .downcast_ref::<raftpoll::node::NodeError>()
                .is_some_and(raftpoll::node::NodeError::is_too_new);
            if too_new {
                ExitCode::from(raftpoll::node::EXIT_TOO_NEW)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
