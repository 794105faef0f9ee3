//! The RRD writer against a real rrdcached (TCP and unix socket), checked
//! with `rrdtool info` / `rrdtool fetch` on the files it wrote.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail, ensure};
use raftpoll::poller::modules::defs::{PORT_DS, port_def};
use raftpoll::rrd::client::{RrdcachedAddr, RrdcachedClient};
use raftpoll::rrd::layout::{DsDef, DsType, RrdDef, RrdUpdate, RrdValue, rrd_path};
use raftpoll::rrd::writer::{RrdWriter, RrdWriterConfig, RrdWriterHandle, WriterStats};
use raftpoll_testbed::Rrdcached;
use tokio::sync::watch;

/// A port sample whose INOCTETS counter rises 1000/s from `t0`; the other
/// counters are unknown.
fn port_update(path: &str, t0: u64, ts: u64) -> RrdUpdate {
    let mut values = vec![RrdValue::Unknown; PORT_DS.len()];
    values[0] = RrdValue::Counter(1_000 * (ts - t0) + 5_000_000);
    RrdUpdate {
        path: path.to_string(),
        def: port_def(),
        timestamp: ts,
        millis: 0,
        values,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A start time an hour ago, on a step boundary, so samples align with
/// rows and rates read back exactly.
fn past_start(step: u64) -> u64 {
    (now() - 3600) / step * step
}

struct Writer {
    handle: RrdWriterHandle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Small batches, so tests cross batch boundaries.
    fn start(addr: &RrdcachedAddr, step: u32) -> Self {
        let mut config = RrdWriterConfig::new(addr.clone(), step);
        config.batch_max = 16;
        Self::start_with(config)
    }

    fn start_with(config: RrdWriterConfig) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (handle, task) = RrdWriter::spawn(config, stop_rx).expect("no spool to open");
        Writer { handle, stop, task }
    }

    async fn wait_for(
        &self,
        what: &str,
        cond: impl Fn(&WriterStats) -> bool,
    ) -> Result<WriterStats> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = self.handle.stats();
            if cond(&stats) {
                return Ok(stats);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}: {stats:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Result<()> {
        self.stop.send(true)?;
        tokio::time::timeout(Duration::from_secs(15), self.task).await??;
        Ok(())
    }
}

/// `rrdtool fetch … AVERAGE` rows of `path` (flushed first) as (timestamp, first DS value).
fn first_ds(rrd: &Rrdcached, path: &str, start: u64, end: u64) -> Vec<(u64, Option<f64>)> {
    rrd.rrd_fetch(path, "AVERAGE", start, end)
        .into_iter()
        .map(|(ts, values)| (ts, values.first().copied().flatten()))
        .collect()
}

/// The rrdcached address the writer is given: its TCP port.
fn tcp_addr(rrd: &Rrdcached) -> Result<RrdcachedAddr> {
    Ok(rrd.addr().parse()?)
}

/// Every row in (from, to] reads `rate` within 0.1%.
fn assert_rate(rows: &[(u64, Option<f64>)], from: u64, to: u64, rate: f64) -> Result<()> {
    let covered: Vec<_> = rows
        .iter()
        .filter(|(ts, _)| *ts > from && *ts <= to)
        .collect();
    ensure!(!covered.is_empty(), "no rows in ({from}, {to}]: {rows:?}");
    for (ts, v) in covered {
        match v {
            Some(v) if (v - rate).abs() <= rate * 0.001 => {}
            _ => bail!("row {ts} reads {v:?}, want {rate}: {rows:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn creates_port_file_with_librenms_layout() -> Result<()> {
    let rrd = Rrdcached::start();
    let writer = Writer::start(&tcp_addr(&rrd)?, 300);
    let path = rrd_path("sw1.example", "port-id1");
    let t0 = past_start(300);
    for i in 0..3 {
        writer
            .handle
            .submit(port_update(&path, t0, t0 + 300 * i))
            .await?;
    }
    writer.wait_for("3 written", |s| s.written == 3).await?;
    rrd.flush(&path);

    let info = rrd.rrd_info(&path);
    assert_eq!(info.get("step").map(String::as_str), Some("300"));
    for name in PORT_DS {
        assert_eq!(
            info.get(&format!("ds[{name}].type")).map(String::as_str),
            Some("DERIVE"),
            "{name}"
        );
        assert_eq!(
            info.get(&format!("ds[{name}].minimal_heartbeat"))
                .map(String::as_str),
            Some("600")
        );
        let max: f64 = info[&format!("ds[{name}].max")].parse()?;
        assert_eq!(max, 12_500_000_000.0);
        let min: f64 = info[&format!("ds[{name}].min")].parse()?;
        assert_eq!(min, 0.0);
    }
    let ds_count = info
        .keys()
        .filter(|k| k.ends_with("].type") && k.starts_with("ds["))
        .count();
    assert_eq!(ds_count, 15);
    let rras: Vec<(String, String, String)> = (0..)
        .map_while(|i| {
            Some((
                info.get(&format!("rra[{i}].cf"))?.clone(),
                info.get(&format!("rra[{i}].pdp_per_row"))?.clone(),
                info.get(&format!("rra[{i}].rows"))?.clone(),
            ))
        })
        .collect();
    let mut want = Vec::new();
    for cf in ["AVERAGE", "MIN", "MAX"] {
        for (per_row, rows) in [
            ("1", "2016"),
            ("6", "1440"),
            ("24", "1440"),
            ("288", "1440"),
        ] {
            want.push((cf.to_string(), per_row.to_string(), rows.to_string()));
        }
    }
    want.push(("LAST".into(), "1".into(), "2016".into()));
    assert_eq!(rras, want);
    assert_eq!(
        info.get("last_update").map(String::as_str),
        Some(&*(t0 + 600).to_string())
    );

    let stats = writer.handle.stats();
    assert_eq!(
        (stats.errors, stats.queued, stats.connected),
        (0, 0, true),
        "{stats:?}"
    );
    writer.stop().await?;
    Ok(())
}

#[tokio::test]
async fn derive_rates_land_and_duplicate_seconds_are_not_sent() -> Result<()> {
    let rrd = Rrdcached::start();
    let writer = Writer::start(&tcp_addr(&rrd)?, 10);
    let path = rrd_path("sw2", "port-id7");
    let other = rrd_path("sw2", "port-id8");
    let t0 = past_start(10);
    for i in 0..40 {
        let ts = t0 + 10 * i;
        writer.handle.submit(port_update(&path, t0, ts)).await?;
        // A second sample in the same second must never reach rrdcached.
        let mut again = port_update(&path, t0, ts);
        again.values[0] = RrdValue::Counter(1);
        writer.handle.submit(again).await?;
        writer.handle.submit(port_update(&other, t0, ts)).await?;
    }
    // Older than what the file already has: dropped too.
    writer.handle.submit(port_update(&path, t0, t0 + 5)).await?;
    let stats = writer
        .wait_for("80 written", |s| s.written == 80 && s.queued == 0)
        .await?;
    assert_eq!(
        (stats.dropped_duplicate, stats.dropped_stale, stats.errors),
        (40, 1, 0),
        "{stats:?}"
    );

    let mut c = RrdcachedClient::connect(&tcp_addr(&rrd)?, Duration::from_secs(5)).await?;
    let received = c.stats().await?;
    assert_eq!(received.get("UpdatesReceived"), Some(&80), "{received:?}");
    rrd.flush(&path);
    rrd.flush(&other);

    for p in [&path, &other] {
        let rows = first_ds(&rrd, p, t0, t0 + 390);
        assert_rate(&rows, t0 + 10, t0 + 390, 1000.0)?;
    }
    writer.stop().await?;
    Ok(())
}

#[tokio::test]
async fn unix_socket_works() -> Result<()> {
    let rrd = Rrdcached::start();
    let addr: RrdcachedAddr = format!("unix:{}", rrd.unix_socket().display()).parse()?;
    let writer = Writer::start(&addr, 10);
    let path = rrd_path("[2001:db8::1]", "port-id3");
    assert_eq!(path, "2001_db8__1/port-id3.rrd");
    let t0 = past_start(10);
    for i in 0..10 {
        writer
            .handle
            .submit(port_update(&path, t0, t0 + 10 * i))
            .await?;
    }
    writer.wait_for("10 written", |s| s.written == 10).await?;
    rrd.flush(&path);
    let rows = first_ds(&rrd, &path, t0, t0 + 90);
    assert_rate(&rows, t0 + 10, t0 + 90, 1000.0)?;
    writer.stop().await?;
    Ok(())
}

/// Sends 20 samples, takes rrdcached away (`crash`: SIGKILL after a FLUSH;
/// else SIGTERM), queues 40 more while it is away, starts it again on the
/// same port, and checks all 60 are in the file.
async fn restart_mid_stream(crash: bool) -> Result<()> {
    let mut rrd = Rrdcached::start();
    let addr = tcp_addr(&rrd)?;
    let writer = Writer::start(&addr, 10);
    let path = rrd_path("sw3", "port-id1");
    let t0 = past_start(10);
    for i in 0..20 {
        writer
            .handle
            .submit(port_update(&path, t0, t0 + 10 * i))
            .await?;
    }
    writer.wait_for("20 written", |s| s.written == 20).await?;

    if crash {
        rrd.flush(&path);
        rrd.kill9();
    } else {
        rrd.stop();
    }
    for i in 20..60 {
        writer
            .handle
            .submit(port_update(&path, t0, t0 + 10 * i))
            .await?;
    }
    let stats = writer
        .wait_for("the writer to notice", |s| !s.connected && s.errors > 0)
        .await?;
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains(&addr.to_string()),
        "{stats:?}"
    );
    assert!(stats.queued > 0, "{stats:?}");

    rrd.start_again();
    let stats = writer
        .wait_for("60 written after reconnect", |s| {
            s.written == 60 && s.queued == 0
        })
        .await?;
    assert!(stats.connected);
    rrd.flush(&path);
    let rows = first_ds(&rrd, &path, t0, t0 + 590);
    assert_rate(&rows, t0 + 10, t0 + 590, 1000.0)?;
    writer.stop().await?;
    Ok(())
}

#[tokio::test]
async fn nothing_lost_across_rrdcached_restart() -> Result<()> {
    restart_mid_stream(false).await
}

#[tokio::test]
async fn nothing_lost_across_rrdcached_crash() -> Result<()> {
    restart_mid_stream(true).await
}

#[tokio::test]
async fn unreachable_rrdcached_is_named_then_catches_up() -> Result<()> {
    // rrdcached's port and directories are set up, then it is stopped: the writer starts
    // against an address where nothing listens.
    let mut rrd = Rrdcached::start();
    rrd.stop();
    let addr = tcp_addr(&rrd)?;
    let writer = Writer::start(&addr, 10);
    let path = rrd_path("sw4", "uptime");
    let def = Arc::new(RrdDef {
        ds: vec![DsDef {
            name: "uptime",
            kind: DsType::Gauge,
            min: Some(0.0),
            max: None,
        }],
    });
    let t0 = past_start(10);
    for i in 0..5 {
        writer
            .handle
            .submit(RrdUpdate {
                path: path.clone(),
                def: def.clone(),
                timestamp: t0 + 10 * i,
                millis: 0,
                values: vec![RrdValue::Gauge(1234.5)],
            })
            .await?;
    }
    let stats = writer
        .wait_for("an error", |s| s.last_error.is_some())
        .await?;
    let err = stats.last_error.unwrap_or_default();
    assert!(err.contains(&format!("rrdcached at {addr}")), "{err}");
    assert!(!stats.connected);

    let direct = RrdcachedClient::connect(&addr, Duration::from_secs(2)).await;
    let direct = direct.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(direct.contains(&addr.to_string()), "{direct}");

    rrd.start_again();
    writer
        .wait_for("5 written", |s| s.written == 5 && s.queued == 0)
        .await?;
    rrd.flush(&path);
    let info = rrd.rrd_info(&path);
    assert_eq!(
        info.get("ds[uptime].type").map(String::as_str),
        Some("GAUGE")
    );
    assert_eq!(
        info.get("ds[uptime].last_ds").map(String::as_str),
        Some("1234.5")
    );
    writer.stop().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_hands_over_queued_updates() -> Result<()> {
    let rrd = Rrdcached::start();
    let writer = Writer::start(&tcp_addr(&rrd)?, 10);
    let path = rrd_path("sw5", "port-id2");
    let t0 = past_start(10);
    for i in 0..30 {
        writer
            .handle
            .submit(port_update(&path, t0, t0 + 10 * i))
            .await?;
    }
    let handle = writer.handle.clone();
    writer.stop().await?;
    let stats = handle.stats();
    assert_eq!(
        (stats.written, stats.queued, stats.errors),
        (30, 0, 0),
        "{stats:?}"
    );
    rrd.flush(&path);
    let rows = first_ds(&rrd, &path, t0, t0 + 290);
    assert_rate(&rows, t0 + 10, t0 + 290, 1000.0)?;
    Ok(())
}

#[tokio::test]
async fn recreates_a_file_deleted_while_rrdcached_was_away() -> Result<()> {
    let mut rrd = Rrdcached::start();
    let addr = tcp_addr(&rrd)?;
    let writer = Writer::start(&addr, 10);
    let path = rrd_path("sw6", "port-id1");
    let t0 = past_start(10);
    for i in 0..5 {
        writer
            .handle
            .submit(port_update(&path, t0, t0 + 10 * i))
            .await?;
    }
    writer.wait_for("5 written", |s| s.written == 5).await?;
    rrd.stop();
    std::fs::remove_file(rrd.path(&path))?;

    rrd.start_again();
    for i in 20..40 {
        writer
            .handle
            .submit(port_update(&path, t0, t0 + 10 * i))
            .await?;
    }
    // The first batch after the restart may fail on the old connection and
    // rrdcached then answers "No such file"; neither loses an update.
    let stats = writer
        .wait_for("25 written", |s| s.written == 25 && s.queued == 0)
        .await?;
    assert_eq!(
        stats.dropped_stale + stats.dropped_duplicate,
        0,
        "{stats:?}"
    );
    rrd.flush(&path);
    let rows = first_ds(&rrd, &path, t0 + 200, t0 + 390);
    assert_rate(&rows, t0 + 200, t0 + 390, 1000.0)?;
    writer.stop().await?;
    Ok(())
}

#[tokio::test]
async fn many_new_files_in_one_go() -> Result<()> {
    let rrd = Rrdcached::start();
    let writer = Writer::start_with(RrdWriterConfig::new(tcp_addr(&rrd)?, 10));
    let def = Arc::new(RrdDef {
        ds: vec![DsDef {
            name: "usage",
            kind: DsType::Gauge,
            min: Some(-273.0),
            max: Some(1000.0),
        }],
    });
    let t0 = past_start(10);
    for i in 0..150 {
        writer
            .handle
            .submit(RrdUpdate {
                path: rrd_path(&format!("host{}", i % 3), &format!("processor-hr-{i}")),
                def: def.clone(),
                timestamp: t0,
                millis: 0,
                values: vec![RrdValue::Gauge(f64::from(i))],
            })
            .await?;
    }
    let stats = writer
        .wait_for("150 written", |s| s.written == 150 && s.queued == 0)
        .await?;
    assert_eq!(stats.errors, 0, "{stats:?}");
    for i in 0..150 {
        let file = rrd
            .base_dir()
            .join(format!("host{}", i % 3))
            .join(format!("processor-hr-{i}.rrd"));
        ensure!(file.exists(), "{} missing", file.display());
    }
    writer.stop().await?;
    Ok(())
}
