//! Configuration files of the peer pollers, generated for the same devices and the same
//! 13 IF-MIB columns raftpoll's ports module walks.

use std::fmt::Write as _;
use std::path::Path;

/// One IF-MIB column: a name (collectd data source, Prometheus metric) and its OID.
pub struct Column {
    pub metric: &'static str,
    pub ds: &'static str,
    pub oid: &'static str,
}

/// The columns raftpoll's ports module walks when an agent has the 64-bit counters: every
/// ifXTable HC column it graphs and the ifTable columns that have no HC twin (the 32-bit
/// octet/packet columns and ifIn/OutNUcastPkts are only asked when HC ones are missing).
pub const IF_COLUMNS: [Column; 13] = [
    col("ifHCInOctets", "hcinoctets", "1.3.6.1.2.1.31.1.1.1.6"),
    col("ifHCOutOctets", "hcoutoctets", "1.3.6.1.2.1.31.1.1.1.10"),
    col("ifInErrors", "inerrors", "1.3.6.1.2.1.2.2.1.14"),
    col("ifOutErrors", "outerrors", "1.3.6.1.2.1.2.2.1.20"),
    col("ifHCInUcastPkts", "hcinucastpkts", "1.3.6.1.2.1.31.1.1.1.7"),
    col(
        "ifHCOutUcastPkts",
        "hcoutucastpkts",
        "1.3.6.1.2.1.31.1.1.1.11",
    ),
    col("ifInDiscards", "indiscards", "1.3.6.1.2.1.2.2.1.13"),
    col("ifOutDiscards", "outdiscards", "1.3.6.1.2.1.2.2.1.19"),
    col(
        "ifInUnknownProtos",
        "inunknownprotos",
        "1.3.6.1.2.1.2.2.1.15",
    ),
    col(
        "ifHCInBroadcastPkts",
        "hcinbcastpkts",
        "1.3.6.1.2.1.31.1.1.1.9",
    ),
    col(
        "ifHCOutBroadcastPkts",
        "hcoutbcastpkts",
        "1.3.6.1.2.1.31.1.1.1.13",
    ),
    col(
        "ifHCInMulticastPkts",
        "hcinmcastpkts",
        "1.3.6.1.2.1.31.1.1.1.8",
    ),
    col(
        "ifHCOutMulticastPkts",
        "hcoutmcastpkts",
        "1.3.6.1.2.1.31.1.1.1.12",
    ),
];

const fn col(metric: &'static str, ds: &'static str, oid: &'static str) -> Column {
    Column { metric, ds, oid }
}

/// collectd type holding one port's 13 counters: one RRD file per port, as raftpoll writes.
pub const COLLECTD_TYPE: &str = "raftpoll_port";

/// snmp_exporter module name.
pub const EXPORTER_MODULE: &str = "raftpoll_ports";

/// Request timeout and resends, the same for every poller.
pub const TIMEOUT_S: u64 = 1;
pub const RETRIES: u32 = 2;

/// A types.db line for [`COLLECTD_TYPE`]: 13 DERIVE data sources.
pub fn collectd_types_db() -> String {
    let sources: Vec<String> = IF_COLUMNS
        .iter()
        .map(|c| format!("{}:DERIVE:0:U", c.ds))
        .collect();
    format!("{COLLECTD_TYPE} {}\n", sources.join(", "))
}

/// What a collectd configuration needs to know.
pub struct CollectdSetup<'a> {
    /// Working directory of collectd: rrdcached's base directory, so the relative RRD
    /// paths collectd creates files at and the ones it sends to rrdcached are the same.
    pub base_dir: &'a Path,
    pub pid_file: &'a Path,
    /// Create missing RRD files (real rrdcached); off for a sink, which keeps no files.
    pub create_files: bool,
    pub types_db: &'a Path,
    pub rrdcached: &'a str,
    pub interval_s: u64,
    /// Varbinds per GETBULK (split over the columns); 0: GETNEXT.
    pub bulk_size: u32,
    pub read_threads: usize,
    pub ports: &'a [u16],
    pub community: &'a str,
}

/// collectd.conf: the snmp plugin walks [`IF_COLUMNS`] as one table (one request carries
/// every column) on every device; the rrdcached plugin writes one RRD per port.
pub fn collectd_conf(s: &CollectdSetup) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "Hostname \"raftpoll-bench\"\nFQDNLookup false");
    let _ = writeln!(c, "BaseDir \"{}\"", s.base_dir.display());
    let _ = writeln!(c, "PIDFile \"{}\"", s.pid_file.display());
    let _ = writeln!(c, "PluginDir \"/usr/lib/collectd\"");
    let _ = writeln!(
        c,
        "TypesDB \"/usr/share/collectd/types.db\" \"{}\"",
        s.types_db.display()
    );
    let _ = writeln!(c, "AutoLoadPlugin false\nInterval {}", s.interval_s);
    let _ = writeln!(c, "ReadThreads {}\nWriteThreads 1\n", s.read_threads);
    let _ = writeln!(
        c,
        "LoadPlugin logfile\n<Plugin logfile>\n  LogLevel \"info\"\n  File STDERR\n  Timestamp true\n</Plugin>\n"
    );
    let _ = writeln!(c, "LoadPlugin snmp\nLoadPlugin rrdcached\n");
    // One archive per CF of 1200 raw steps: 0.4 MB per port file (collectd's default keeps
    // a year in five archives, 1.9 MB per file at a 10 s step; a span longer than rows ×
    // step gets more rows, not coarser ones).
    let _ = writeln!(
        c,
        "<Plugin rrdcached>\n  DaemonAddress \"{}\"\n  DataDir \"collectd\"\n  CreateFiles {}\n  \
         CollectStatistics false\n  StepSize {}\n  HeartBeat {}\n  RRARows 1200\n  \
         RRATimespan {}\n</Plugin>\n",
        s.rrdcached,
        s.create_files,
        s.interval_s,
        s.interval_s * 2,
        s.interval_s * 1200
    );
    let values: Vec<String> = IF_COLUMNS
        .iter()
        .map(|col| format!("\".{}\"", col.oid))
        .collect();
    let _ = writeln!(
        c,
        "<Plugin snmp>\n  <Data \"ifmib\">\n    Type \"{COLLECTD_TYPE}\"\n    Table true\n    Values {}\n  </Data>",
        values.join(" ")
    );
    for (i, port) in s.ports.iter().enumerate() {
        let _ = writeln!(
            c,
            "  <Host \"dev{i}\">\n    Address \"127.0.0.1:{port}\"\n    Version 2\n    Community \"{}\"\n    \
             Collect \"ifmib\"\n    Timeout {TIMEOUT_S}\n    Retries {RETRIES}",
            s.community
        );
        if s.bulk_size > 0 {
            let _ = writeln!(c, "    BulkSize {}", s.bulk_size);
        }
        let _ = writeln!(c, "  </Host>");
    }
    c.push_str("</Plugin>\n");
    c
}

/// snmp.yml for snmp_exporter 0.21 (credentials inside the module): one module walking
/// [`IF_COLUMNS`] with GETBULK, one counter metric per column indexed by ifIndex.
pub fn exporter_config(community: &str, max_repetitions: u32) -> String {
    let mut y = format!("{EXPORTER_MODULE}:\n  walk:\n");
    for col in &IF_COLUMNS {
        let _ = writeln!(y, "  - {}", col.oid);
    }
    y.push_str("  metrics:\n");
    for col in &IF_COLUMNS {
        let _ = writeln!(
            y,
            "  - name: {}\n    oid: {}\n    type: counter\n    help: IF-MIB {}\n    indexes:\n    \
             - labelname: ifIndex\n      type: gauge",
            col.metric, col.oid, col.metric
        );
    }
    let _ = writeln!(
        y,
        "  version: 2\n  max_repetitions: {max_repetitions}\n  retries: {RETRIES}\n  timeout: {TIMEOUT_S}s\n  \
         auth:\n    community: {community}"
    );
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_distinct_and_rrd_safe() {
        let mut oids: Vec<&str> = IF_COLUMNS.iter().map(|c| c.oid).collect();
        oids.sort_unstable();
        oids.dedup();
        assert_eq!(oids.len(), 13);
        for c in &IF_COLUMNS {
            // RRD data source names: at most 19 characters of [a-zA-Z0-9_].
            assert!(c.ds.len() <= 19, "{}", c.ds);
            assert!(c.ds.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        let db = collectd_types_db();
        assert!(
            db.starts_with("raftpoll_port hcinoctets:DERIVE:0:U, "),
            "{db}"
        );
        assert_eq!(db.matches(":DERIVE:0:U").count(), 13);
    }

    #[test]
    fn collectd_conf_lists_every_host_and_column() {
        let ports = [16100, 16101, 16102];
        let setup = CollectdSetup {
            base_dir: Path::new("/w/rrd"),
            pid_file: Path::new("/w/collectd.pid"),
            create_files: true,
            types_db: Path::new("/w/types.db"),
            rrdcached: "127.0.0.1:42217",
            interval_s: 10,
            bulk_size: 52,
            read_threads: 5,
            ports: &ports,
            community: "c",
        };
        let conf = collectd_conf(&setup);
        assert_eq!(conf.matches("<Host \"").count(), 3);
        assert!(conf.contains("Address \"127.0.0.1:16102\""));
        assert_eq!(conf.matches("BulkSize 52").count(), 3);
        assert!(conf.contains("Values \".1.3.6.1.2.1.31.1.1.1.6\" \".1.3.6.1.2.1.31.1.1.1.10\""));
        assert!(conf.contains("DataDir \"collectd\"") && conf.contains("StepSize 10"));
        assert!(conf.contains("CreateFiles true") && conf.contains("RRATimespan 12000"));
        let getnext = collectd_conf(&CollectdSetup {
            bulk_size: 0,
            ..setup
        });
        assert!(!getnext.contains("BulkSize"));
    }

    #[test]
    fn exporter_module_walks_and_exports_every_column() {
        let y = exporter_config("c", 25);
        assert!(y.starts_with("raftpoll_ports:\n  walk:\n  - 1.3.6.1.2.1.31.1.1.1.6\n"));
        assert_eq!(y.matches("type: counter").count(), 13);
        assert_eq!(y.matches("labelname: ifIndex").count(), 13);
        assert!(y.contains("  version: 2\n  max_repetitions: 25\n"));
        assert!(y.ends_with("  auth:\n    community: c\n"));
    }
}
