//! Cost of the LibreNMS write-back: the scale run on one node twice, once with devices
//! imported (no database) and once with LibreNMS's `devices` table in a real MariaDB as the
//! inventory and every poll written back. The verdict is the CPU of the node's LibreNMS link
//! thread (the write-back) against the rest of its CPU; the whole mode's extra is printed too.

use super::harness::{LIBRENMS_LINK_PART, Table, machine};
use super::scale::{self, Inventory, Outcome, ScaleArgs};
use super::{BenchError, Workdir};
use raftpoll_testbed::{LibrenmsLink, MariaDb};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Most CPU the write-back may add to a node, % of the node's CPU without it.
const TARGET_OVERHEAD_PCT: f64 = 10.0;

#[derive(clap::Args, Debug)]
pub struct WritebackArgs {
    /// Devices on the node.
    #[arg(long, default_value_t = 20_000)]
    pub devices: usize,
    /// Ports per simulated switch.
    #[arg(long, default_value_t = 30)]
    pub ports: u32,
    /// Poll interval, seconds.
    #[arg(long, default_value_t = 300)]
    pub interval: u32,
    /// Intervals measured after every device has been polled once.
    #[arg(long, default_value_t = 1)]
    pub intervals: u32,
    /// Keep configs, logs and data here (default: a temp dir, removed at the end).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

pub fn run(args: &WritebackArgs) -> Result<String, BenchError> {
    let scale_args = ScaleArgs {
        devices: vec![args.devices],
        ports: args.ports,
        interval: args.interval,
        intervals: args.intervals,
        // Both runs ping first, as LibreNMS mode does: the difference is the write-back.
        icmp: true,
        restart: false,
        max_rss_mib: f64::INFINITY,
        workdir: None,
    };
    let work = Workdir::new(args.workdir.as_deref(), "raftpoll-bench-writeback-")?;
    eprintln!(
        "writeback: {} devices × {} ports, interval {} s, ICMP on, without LibreNMS",
        args.devices, args.ports, args.interval
    );
    let plain = scale::run_one(&scale_args, args.devices, &work, Inventory::Import)?;
    eprintln!("writeback: the same with LibreNMS's database (MariaDB) and the write-back");
    let db = MariaDb::start();
    let link = LibrenmsLink::new(&db, 60);
    let linked = scale::run_one(
        &scale_args,
        args.devices,
        &work,
        Inventory::Librenms(&db, &link),
    )?;

    let mut table = Table::new(&[
        "inventory",
        "devices",
        "ports/device",
        "polls measured",
        "node CPU % of one core",
        "node CPU ms per device-poll",
        "node peak RSS MiB",
        "missed intervals",
        "MariaDB CPU % of one core",
        "devices written back",
        "ports rows written back",
        &scale::split_header(),
    ]);
    for (name, o) in [("CSV import", &plain), ("LibreNMS", &linked)] {
        table.row(vec![
            name.to_string(),
            o.devices.to_string(),
            args.ports.to_string(),
            o.polls.to_string(),
            format!("{:.1}", o.cpu_pct),
            format!("{:.2}", o.cpu_ms_per_poll),
            format!("{:.0}", o.peak_rss_mib),
            o.missed.to_string(),
            o.db_cpu_pct.map_or("-".into(), |c| format!("{c:.1}")),
            o.written_back.map_or("-".into(), |w| w.0.to_string()),
            o.written_back.map_or("-".into(), |w| w.1.to_string()),
            scale::split_cell(&o.parts_pct),
        ]);
    }
    let overhead = overhead_pct(&plain, &linked);
    let database = database_share_pct(&linked);
    let complete = linked.written_back.is_some_and(|(devices, ports)| {
        devices == args.devices && ports == args.devices * args.ports as usize
    });
    let pass = database <= TARGET_OVERHEAD_PCT && complete && linked.missed == 0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "LibreNMS write-back cost on one node: interval {} s, {} interval(s) measured; {}\n",
        args.interval,
        args.intervals,
        machine()
    );
    out.push_str(&table.markdown());
    let _ = writeln!(
        out,
        "\nLibreNMS mode in all adds {overhead:.1} % per device-poll to the node's CPU: the \
         port state columns polled for the ports table, and the write-back."
    );
    let _ = writeln!(
        out,
        "the write-back (the LibreNMS link's thread: database batches, inventory sync, cluster \
         rows) adds {database:.1} % to the rest of the node's CPU (target ≤ \
         {TARGET_OVERHEAD_PCT} %), every device and port written back in the window: \
         {complete}, no missed interval: {} → {}",
        linked.missed == 0,
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(out)
}

/// CPU of the LibreNMS link's thread, % of the rest of the same node's CPU.
fn database_share_pct(linked: &Outcome) -> f64 {
    let link = linked
        .parts_pct
        .get(LIBRENMS_LINK_PART)
        .copied()
        .unwrap_or(f64::INFINITY);
    let rest = linked.cpu_pct - link;
    if rest <= 0.0 {
        return f64::INFINITY;
    }
    100.0 * link / rest
}

/// Extra node CPU per device-poll with the write-back, % of the CPU without it.
/// Per poll rather than per second: both runs poll the same devices, but the
/// window may hold a few more or fewer polls.
fn overhead_pct(plain: &Outcome, linked: &Outcome) -> f64 {
    if plain.cpu_ms_per_poll <= 0.0 {
        return f64::INFINITY;
    }
    100.0 * (linked.cpu_ms_per_poll - plain.cpu_ms_per_poll) / plain.cpu_ms_per_poll
}
