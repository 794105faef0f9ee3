//! The `raftpoll-chaos` binary: parse the command line, run the chaos session, exit non-zero on
//! any violation.

use clap::Parser;
use std::process::ExitCode;

/// Runs a local raftpoll cluster in network namespaces, injects faults and checks the invariants.
#[derive(Parser)]
#[command(name = "raftpoll-chaos", version)]
struct Cli {
    #[command(flatten)]
    args: raftpoll_chaos::ChaosArgs,
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
    match runtime.block_on(raftpoll_chaos::main(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
