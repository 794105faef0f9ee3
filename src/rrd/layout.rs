//! LibreNMS-compatible RRD layout: file names, data sources and archives.

use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsType {
    Gauge,
    Derive,
    Counter,
}

/// One data source: `DS:<name>:<type>:<heartbeat>:<min>:<max>`.
#[derive(Clone, Debug, PartialEq)]
pub struct DsDef {
    pub name: &'static str,
    pub kind: DsType,
    /// `None` is `U`.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The data sources of one kind of RRD file (port, uptime, …). Step and
/// heartbeat come from the poll frequency at CREATE time.
#[derive(Clone, Debug, PartialEq)]
pub struct RrdDef {
    pub ds: Vec<DsDef>,
}

/// One value of an update; `Unknown` is written as `U`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RrdValue {
    Unknown,
    Counter(u64),
    Gauge(f64),
}

/// One sample for one file.
#[derive(Clone, Debug, PartialEq)]
pub struct RrdUpdate {
    /// Relative path `<hostname>/<name>.rrd`, already sanitised.
    pub path: String,
    pub def: Arc<RrdDef>,
    /// Unix seconds, absolute.
    pub timestamp: u64,
    /// One value per data source of `def`, in order.
    pub values: Vec<RrdValue>,
}
