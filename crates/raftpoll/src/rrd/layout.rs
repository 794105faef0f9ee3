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
    /// Sub-second part of the sample time, 0–999 ms. rrdtool takes
    /// fractional timestamps; without them a sample read at 12.9 s but
    /// stamped 12 s skews the rate of a 10 s step by up to 10%.
    pub millis: u16,
    /// One value per data source of `def`, in order.
    pub values: Vec<RrdValue>,
}

/// rrdcached's default TCP port, used when an address names no port.
pub const RRDCACHED_DEFAULT_PORT: u16 = 42217;

/// Replaces every character outside `[A-Za-z0-9,._-]` with `_`, as LibreNMS
/// does for host directories and file names.
pub fn sanitize_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ',' | '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Longest file or directory name the usual file systems take (NAME_MAX).
const NAME_MAX: usize = 255;
/// `-` and 16 hex digits of [`stable_hash`]: what a shortened name ends with.
const HASH_SUFFIX: usize = 17;

/// FNV-1a, 64 bits: stable across versions and platforms (file names must
/// not change with a compiler upgrade), and short names collide rarely enough
/// for a suffix that only long names carry.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `name` (already sanitised, so ASCII) if it fits in [`NAME_MAX`] with
/// `extension`; otherwise its start and a hash of the whole, so that two long
/// names sharing a start stay apart and the same name always shortens alike.
fn fit_name(name: &str, extension: &str) -> String {
    if name.len() + extension.len() <= NAME_MAX {
        return format!("{name}{extension}");
    }
    let keep = NAME_MAX - extension.len() - HASH_SUFFIX;
    format!("{}-{:016x}{extension}", &name[..keep], stable_hash(name))
}

/// The host directory of a device's files: its hostname sanitised (brackets
/// around an IPv6 literal dropped first, like LibreNMS does) and shortened
/// when too long. Two devices with the same directory would share files:
/// adding the second is refused.
pub fn rrd_dir(hostname: &str) -> String {
    let mut host = sanitize_name(hostname.trim_matches(|c| c == '[' || c == ']'));
    // A hostname of only dots (or nothing) must never name a parent directory.
    if host.chars().all(|c| c == '.') {
        host = "_".repeat(host.len().max(1));
    }
    fit_name(&host, "")
}

/// Whether [`rrd_dir`] of `hostname` is `hostname` itself (true of almost
/// every hostname), without building it.
pub fn is_own_rrd_dir(hostname: &str) -> bool {
    hostname.len() <= NAME_MAX
        && !hostname.chars().all(|c| c == '.')
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | '.' | '_' | '-'))
}

/// `<hostname>/<name>.rrd`, relative to rrdcached's base directory, both
/// parts sanitised and shortened to fit a file name.
pub fn rrd_path(hostname: &str, name: &str) -> String {
    format!(
        "{}/{}",
        rrd_dir(hostname),
        fit_name(&sanitize_name(name), ".rrd")
    )
}

/// Whether `path` is safe to put on an rrdcached command line: relative,
/// no `..` component, only characters [`sanitize_name`] keeps plus `/`.
pub fn is_valid_rrd_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | '.' | '_' | '-' | '/'))
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// LibreNMS archives at its default 300 s step: (consolidation period in
/// seconds, rows). The raw archive (one step per row, 2016 rows) comes first
/// and is not listed here.
const LIBRENMS_ARCHIVES: [(u64, u64); 4] = [(300, 2016), (1800, 1440), (7200, 1440), (86400, 1440)];
const RAW_ROWS: u64 = 2016;

/// The archives of every file as (steps per row, rows), for `step`.
///
/// Rule: a raw archive of 2016 rows (one step per row) always comes first;
/// then each LibreNMS archive keeps its row count and its time per row
/// (300 s, 30 min, 2 h, 1 day), so steps per row = period / step rounded to
/// the nearest whole step (at least 1). An archive whose steps per row is not
/// coarser than the previous one adds nothing and is left out. For step 300
/// this gives exactly LibreNMS's `1:2016 6:1440 24:1440 288:1440`; for a
/// shorter step the 7-day 5-minute view and every longer span are kept, at a
/// file size that does not grow with the poll rate.
pub fn rra_layout(step: u32) -> Vec<(u64, u64)> {
    let step = u64::from(step.max(1));
    let mut out = vec![(1, RAW_ROWS)];
    let mut finest = 1;
    for (period, rows) in LIBRENMS_ARCHIVES {
        let per_row = ((period + step / 2) / step).max(1);
        if per_row > finest {
            out.push((per_row, rows));
            finest = per_row;
        }
    }
    out
}

/// Arguments of `rrdtool create` / rrdcached `CREATE` after the file name:
/// `-s <step> -b <start> -O DS:… RRA:…` (heartbeat = 2 × step; `-O` keeps an
/// existing file).
pub fn create_args(def: &RrdDef, step: u32, start: u64) -> String {
    let step = step.max(1);
    let heartbeat = u64::from(step) * 2;
    let mut parts = vec![
        format!("-s {step}"),
        format!("-b {start}"),
        "-O".to_string(),
    ];
    for ds in &def.ds {
        parts.push(format!(
            "DS:{}:{}:{}:{}:{}",
            ds.name,
            ds.kind.as_str(),
            heartbeat,
            limit(ds.min),
            limit(ds.max)
        ));
    }
    let layout = rra_layout(step);
    for cf in ["AVERAGE", "MIN", "MAX"] {
        for (per_row, rows) in &layout {
            parts.push(format!("RRA:{cf}:0.5:{per_row}:{rows}"));
        }
    }
    parts.push(format!("RRA:LAST:0.5:1:{RAW_ROWS}"));
    parts.join(" ")
}

/// `<ts>:<v>:<v>…` for rrdcached `UPDATE`: `U` for unknown (and for a
/// non-finite gauge), integers for counters, plain decimals for gauges.
pub fn update_line(u: &RrdUpdate) -> String {
    let mut line = u.timestamp.to_string();
    if u.millis > 0 {
        line.push_str(&format!(".{:03}", u.millis.min(999)));
    }
    for v in &u.values {
        line.push(':');
        match v {
            RrdValue::Unknown => line.push('U'),
            RrdValue::Counter(c) => line.push_str(&c.to_string()),
            RrdValue::Gauge(g) => line.push_str(&decimal(*g)),
        }
    }
    line
}

impl DsType {
    /// The rrdtool name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            DsType::Gauge => "GAUGE",
            DsType::Derive => "DERIVE",
            DsType::Counter => "COUNTER",
        }
    }
}

fn limit(v: Option<f64>) -> String {
    v.map_or_else(|| "U".to_string(), decimal)
}

/// Rust's `Display` for f64 never uses an exponent, which rrdtool wants.
fn decimal(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "U".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_like() -> RrdDef {
        RrdDef {
            ds: vec![
                DsDef {
                    name: "INOCTETS",
                    kind: DsType::Derive,
                    min: Some(0.0),
                    max: Some(12_500_000_000.0),
                },
                DsDef {
                    name: "usage",
                    kind: DsType::Gauge,
                    min: Some(-273.0),
                    max: None,
                },
            ],
        }
    }

    #[test]
    fn sanitize_keeps_allowed_and_replaces_the_rest() {
        assert_eq!(sanitize_name("sw1.example,com_a-b"), "sw1.example,com_a-b");
        assert_eq!(sanitize_name("a b/c:d\né"), "a_b_c_d__");
        assert_eq!(sanitize_name(""), "");
    }

    #[test]
    fn long_names_are_shortened_deterministically_and_stay_apart() {
        let long = "a".repeat(300);
        let path = rrd_path(&long, &format!("storage-hrstorage-{long}"));
        let (dir, file) = path.split_once('/').expect("dir/file");
        assert_eq!(dir.len(), NAME_MAX);
        assert_eq!(file.len(), NAME_MAX);
        assert!(file.ends_with(".rrd") && is_valid_rrd_path(&path), "{path}");
        // Same input, same name; another long name with the same start, another name.
        assert_eq!(path, rrd_path(&long, &format!("storage-hrstorage-{long}")));
        let other = rrd_path(&long, &format!("storage-hrstorage-{long}b"));
        assert_ne!(path, other);
        assert_eq!(path[..200], other[..200]);
        assert!(!is_own_rrd_dir(&long) && is_own_rrd_dir("sw1.example.com"));
        assert!(!is_own_rrd_dir("sw 1") && !is_own_rrd_dir("..") && !is_own_rrd_dir("[::1]"));
        // Names that fit are left alone.
        let fits = "b".repeat(NAME_MAX - 4);
        assert_eq!(rrd_path("h", &fits), format!("h/{fits}.rrd"));
        // FNV-1a test vector: the hash, hence every shortened name, never changes.
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn rrd_path_sanitizes_both_parts() {
        assert_eq!(rrd_path("sw1", "port-id7"), "sw1/port-id7.rrd");
        assert_eq!(
            rrd_path("[2001:db8::1]", "uptime"),
            "2001_db8__1/uptime.rrd"
        );
        assert_eq!(
            rrd_path("../etc", "storage-hrstorage-/var lib"),
            ".._etc/storage-hrstorage-_var_lib.rrd"
        );
        assert!(is_valid_rrd_path(&rrd_path("../etc", "x")));
    }

    #[test]
    fn path_validation_rejects_escapes_and_separators() {
        assert!(is_valid_rrd_path("sw1/port-id7.rrd"));
        for bad in [
            "",
            "/abs.rrd",
            "../x.rrd",
            "a/../b.rrd",
            "a//b.rrd",
            "a b.rrd",
            "a\nb",
            "./a.rrd",
        ] {
            assert!(!is_valid_rrd_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn create_args_for_step_300_match_librenms() {
        let args = create_args(&port_like(), 300, 1_700_000_000);
        let expected = "-s 300 -b 1700000000 -O \
            DS:INOCTETS:DERIVE:600:0:12500000000 DS:usage:GAUGE:600:-273:U \
            RRA:AVERAGE:0.5:1:2016 RRA:AVERAGE:0.5:6:1440 RRA:AVERAGE:0.5:24:1440 RRA:AVERAGE:0.5:288:1440 \
            RRA:MIN:0.5:1:2016 RRA:MIN:0.5:6:1440 RRA:MIN:0.5:24:1440 RRA:MIN:0.5:288:1440 \
            RRA:MAX:0.5:1:2016 RRA:MAX:0.5:6:1440 RRA:MAX:0.5:24:1440 RRA:MAX:0.5:288:1440 \
            RRA:LAST:0.5:1:2016";
        assert_eq!(args, expected);
    }

    #[test]
    fn rra_layout_keeps_spans_for_other_steps() {
        assert_eq!(
            rra_layout(60),
            vec![(1, 2016), (5, 2016), (30, 1440), (120, 1440), (1440, 1440)]
        );
        assert_eq!(
            rra_layout(10),
            vec![
                (1, 2016),
                (30, 2016),
                (180, 1440),
                (720, 1440),
                (8640, 1440)
            ]
        );
        // 300 s rounds to one 600 s step, same as raw: left out.
        assert_eq!(
            rra_layout(600),
            vec![(1, 2016), (3, 1440), (12, 1440), (144, 1440)]
        );
        assert_eq!(rra_layout(3600), vec![(1, 2016), (2, 1440), (24, 1440)]);
        assert_eq!(rra_layout(0), rra_layout(1));
        let args = create_args(&port_like(), 60, 5);
        assert!(args.starts_with("-s 60 -b 5 -O DS:INOCTETS:DERIVE:120:0:12500000000 "));
        assert!(args.contains("RRA:MAX:0.5:1440:1440 RRA:LAST:0.5:1:2016"));
    }

    #[test]
    fn update_line_formats_values() {
        let u = RrdUpdate {
            path: "h/x.rrd".into(),
            def: Arc::new(port_like()),
            timestamp: 1_700_000_300,
            millis: 0,
            values: vec![
                RrdValue::Counter(18_446_744_073_709_551_615),
                RrdValue::Gauge(0.000_000_1),
                RrdValue::Gauge(1e21),
                RrdValue::Gauge(f64::NAN),
                RrdValue::Unknown,
                RrdValue::Gauge(-12.5),
            ],
        };
        assert_eq!(
            update_line(&u),
            "1700000300:18446744073709551615:0.0000001:1000000000000000000000:U:U:-12.5"
        );
    }
}
