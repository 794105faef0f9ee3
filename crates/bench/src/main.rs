//! `raftpoll-bench`: run one benchmark and print its table (see BENCHMARKS.md).

use clap::Parser;
use raftpoll_bench::{self as bench, BenchCommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "raftpoll-bench",
    about = "Benchmarks of raftpoll on real processes on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
