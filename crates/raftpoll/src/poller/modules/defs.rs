//! Data-source definitions of the LibreNMS RRD files the modules write, shared as one `Arc` each.

use crate::rrd::layout::{DsDef, DsType, RrdDef};
use std::sync::{Arc, LazyLock};

/// Highest plausible octet/packet rate: 100 Gbit/s in bytes per second.
const PORT_MAX: f64 = 12_500_000_000.0;

/// DS names of `port-id<port_id>.rrd`, in file order.
pub const PORT_DS: [&str; 15] = [
    "INOCTETS",
    "OUTOCTETS",
    "INERRORS",
    "OUTERRORS",
    "INUCASTPKTS",
    "OUTUCASTPKTS",
    "INNUCASTPKTS",
    "OUTNUCASTPKTS",
    "INDISCARDS",
    "OUTDISCARDS",
    "INUNKNOWNPROTOS",
    "INBROADCASTPKTS",
    "OUTBROADCASTPKTS",
    "INMULTICASTPKTS",
    "OUTMULTICASTPKTS",
];

fn gauge(name: &'static str, min: Option<f64>, max: Option<f64>) -> DsDef {
    DsDef {
        name,
        kind: DsType::Gauge,
        min,
        max,
    }
}

static PORT: LazyLock<Arc<RrdDef>> = LazyLock::new(|| {
    Arc::new(RrdDef {
        ds: PORT_DS
            .iter()
            .map(|name| DsDef {
                name,
                kind: DsType::Derive,
                min: Some(0.0),
                max: Some(PORT_MAX),
            })
            .collect(),
    })
});
static UPTIME: LazyLock<Arc<RrdDef>> = LazyLock::new(|| {
    Arc::new(RrdDef {
        ds: vec![gauge("uptime", Some(0.0), None)],
    })
});
static POLLER_PERF: LazyLock<Arc<RrdDef>> = LazyLock::new(|| {
    Arc::new(RrdDef {
        ds: vec![gauge("poller", Some(0.0), None)],
    })
});
static PING_PERF: LazyLock<Arc<RrdDef>> = LazyLock::new(|| {
    Arc::new(RrdDef {
        ds: vec![gauge("ping", Some(0.0), Some(65535.0))],
    })
});
static PROCESSOR: LazyLock<Arc<RrdDef>> = LazyLock::new(|| {
    Arc::new(RrdDef {
        ds: vec![gauge("usage", Some(-273.0), Some(1000.0))],
    })
});
static STORAGE: LazyLock<Arc<RrdDef>> = LazyLock::new(|| {
    Arc::new(RrdDef {
        ds: vec![
            gauge("used", Some(0.0), None),
            gauge("free", Some(0.0), None),
        ],
    })
});

/// `port-id<port_id>.rrd`: the 15 LibreNMS port counters, DERIVE 0:12500000000.
pub fn port_def() -> Arc<RrdDef> {
    PORT.clone()
}

/// `uptime.rrd`: uptime GAUGE 0:U, seconds.
pub fn uptime_def() -> Arc<RrdDef> {
    UPTIME.clone()
}

/// `poller-perf.rrd`: poller GAUGE 0:U, seconds one poll took (written by the scheduler).
pub fn poller_perf_def() -> Arc<RrdDef> {
    POLLER_PERF.clone()
}

/// `ping-perf.rrd`: ping GAUGE 0:65535, milliseconds of the ICMP round trip
/// (written by the scheduler when ICMP checks are on).
pub fn ping_perf_def() -> Arc<RrdDef> {
    PING_PERF.clone()
}

/// `processor-hr-<index>.rrd`: usage GAUGE -273:1000, percent.
pub fn processor_def() -> Arc<RrdDef> {
    PROCESSOR.clone()
}

/// `storage-hrstorage-<descr>.rrd`: used, free GAUGE 0:U, bytes.
pub fn storage_def() -> Arc<RrdDef> {
    STORAGE.clone()
}

/// `mempool-hrstorage-<index>.rrd`: same data sources as storage.
pub fn mempool_def() -> Arc<RrdDef> {
    STORAGE.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defs_are_librenms_shaped() {
        let port = port_def();
        assert_eq!(port.ds.len(), 15);
        assert!(port.ds.iter().all(|ds| ds.kind == DsType::Derive
            && ds.min == Some(0.0)
            && ds.max == Some(12_500_000_000.0)));
        assert_eq!(port.ds[0].name, "INOCTETS");
        assert_eq!(port.ds[14].name, "OUTMULTICASTPKTS");
        assert!(Arc::ptr_eq(&port, &port_def()), "one shared Arc");
        assert_eq!(processor_def().ds[0].min, Some(-273.0));
        assert_eq!(
            storage_def().ds.iter().map(|d| d.name).collect::<Vec<_>>(),
            ["used", "free"]
        );
        assert_eq!(uptime_def().ds[0].name, "uptime");
        assert_eq!(poller_perf_def().ds[0].name, "poller");
    }
}
