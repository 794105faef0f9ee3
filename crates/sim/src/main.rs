//! `raftpoll-sim`: serve many simulated SNMP v1/v2c devices from `.snmprec` recordings.
//! Thin main: parse flags, load recordings, bind sockets, build devices, serve until
//! SIGINT/SIGTERM. See docs/raftpoll-sim.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use clap::Parser;
use raftpoll_sim::{
    self as sim, Agent, Device, LoadOptions, Misbehave, Recorder, Recording, Stats,
};

#[derive(Debug, Parser)]
#[command(
    name = "raftpoll-sim",
    about = "Fast SNMP v1/v2c responder serving .snmprec recordings"
)]
struct Cli {
    /// UDP address to listen on (port 0 picks a free port; with --ports only the IP is used).
    #[arg(long, default_value = "127.0.0.1:16100")]
    listen: SocketAddr,
    /// Port range `FIRST-LAST` to spread the devices over (device i on port FIRST + i mod n).
    #[arg(long)]
    ports: Option<String>,
    /// Number of devices (default: one per port).
    #[arg(long)]
    devices: Option<usize>,
    /// Recording file(s) (`.snmprec`, or `.snmprec.gz` via the system gzip); device i
    /// serves recording i mod count.
    #[arg(long = "recording", required = true)]
    recordings: Vec<PathBuf>,
    /// Community of every device (when --community-prefix is not given).
    #[arg(long, default_value = "public")]
    community: String,
    /// Device i answers to community `<prefix><i>`.
    #[arg(long)]
    community_prefix: Option<String>,
    /// Every Counter32/Counter64 object moves at this rate (units per second).
    #[arg(long)]
    rate: Option<f64>,
    /// Largest response in bytes; bigger GET answers become tooBig, GETBULK answers shrink.
    #[arg(long, default_value_t = sim::DEFAULT_MAX_SIZE)]
    max_size: usize,
    /// Append `unix_ms src_addr community port` for every answered request to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Fault injection, repeatable: `COMMUNITY=MODE` makes the device(s) with that community
    /// misbehave. MODE: silent, slow:<ms>, error-status[:<n>], garbage, truncated, wrong-reqid.
    #[arg(long = "misbehave", value_parser = parse_misbehave)]
    misbehave: Vec<(String, Misbehave)>,
    /// Runtime worker threads (1 = everything on one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let recordings = load_recordings(&cli)?;
    let sockets = bind_sockets(&cli)?;
    let ports: Vec<u16> = sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    let devices = build_devices(&cli, &ports, &recordings)?;
    let device_count = devices.len();
    let agent = Arc::new(Agent::new(devices, cli.max_size));
    let recorder = match &cli.record {
        Some(path) => Some(Arc::new(Recorder::create(path)?)),
        None => None,
    };
    let stats = Arc::new(Stats::default());

    // Tests and scripts read these lines to learn the bound ports.
    for s in &sockets {
        println!("listening {}", s.local_addr()?);
    }
    println!("ready devices={device_count}");
    tracing::info!(
        devices = device_count,
        sockets = sockets.len(),
        "raftpoll-sim serving"
    );

    sim::serve(sockets, agent, recorder, stats.clone(), shutdown_signal()).await?;
    tracing::info!(
        answered = stats.answered.load(Ordering::Relaxed),
        varbinds = stats.varbinds.load(Ordering::Relaxed),
        malformed = stats.malformed.load(Ordering::Relaxed),
        unknown_community = stats.unknown_community.load(Ordering::Relaxed),
        "raftpoll-sim stopped"
    );
    Ok(())
}

fn load_recordings(cli: &Cli) -> anyhow::Result<Vec<Arc<Recording>>> {
    let opts = LoadOptions {
        counter_rate: cli.rate,
    };
    cli.recordings
        .iter()
        .map(|path| {
            let rec = Recording::load(path, opts)?;
            if rec.entries.is_empty() {
                bail!("recording {} has no usable objects", path.display());
            }
            tracing::info!(
                path = %path.display(),
                objects = rec.entries.len(),
                skipped_lines = rec.skipped,
                "recording loaded"
            );
            Ok(Arc::new(rec))
        })
        .collect()
}

fn bind_sockets(cli: &Cli) -> anyhow::Result<Vec<std::net::UdpSocket>> {
    let ports: Vec<u16> = match &cli.ports {
        None => vec![cli.listen.port()],
        Some(range) => {
            let (a, b) = range
                .split_once('-')
                .context("--ports wants FIRST-LAST, e.g. 16100-16199")?;
            let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
            if a == 0 || a > b {
                bail!("--ports range {a}-{b} is empty or starts at 0");
            }
            (a..=b).collect()
        }
    };
    ports
        .into_iter()
        .map(|p| Ok(sim::bind_udp(SocketAddr::new(cli.listen.ip(), p))?))
        .collect()
}

fn build_devices(
    cli: &Cli,
    ports: &[u16],
    recordings: &[Arc<Recording>],
) -> anyhow::Result<Vec<Device>> {
    let count = cli.devices.unwrap_or(ports.len());
    if cli.community_prefix.is_none() && count > ports.len() {
        bail!(
            "{count} devices share one community on {} port(s): give --community-prefix \
             or more --ports",
            ports.len()
        );
    }
    let devices: Vec<Device> = (0..count)
        .map(|i| {
            let community = match &cli.community_prefix {
                Some(p) => format!("{p}{i}"),
                None => cli.community.clone(),
            };
            let misbehave = cli
                .misbehave
                .iter()
                .find(|(c, _)| *c == community)
                .map(|(_, m)| *m);
            Device {
                port: ports[i % ports.len()],
                community: community.into_bytes(),
                recording: recordings[i % recordings.len()].clone(),
                misbehave,
            }
        })
        .collect();
    for (community, mode) in &cli.misbehave {
        if !devices.iter().any(|d| d.community == community.as_bytes()) {
            bail!("--misbehave {mode}: no device has the given community");
        }
    }
    Ok(devices)
}

/// `COMMUNITY=MODE` of `--misbehave`.
fn parse_misbehave(s: &str) -> Result<(String, Misbehave), String> {
    let (community, mode) = s
        .rsplit_once('=')
        .ok_or_else(|| "--misbehave wants COMMUNITY=MODE, e.g. dev3=slow:900".to_string())?;
    if community.is_empty() {
        return Err("--misbehave: empty community".into());
    }
    Ok((community.to_string(), mode.parse()?))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
