//! Node configuration: one TOML file, documented defaults, validation.
//!
//! Every key is documented in the README's reference; unknown keys are an
//! error so a typo never silently falls back to a default.

use crate::model::types::GroupId;
use crate::secret::Secret;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: key `{key}` {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
}

/// The node's configuration (`raftpoll node --config <file.toml>`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Human-readable name shown in status. Default: the machine's host name.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// Where the node keeps its Raft log, state, node id and RRD spool. Required.
    pub data_dir: PathBuf,
    /// gRPC listen address for peers and operators.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address peers and clients use to reach this node. Default: `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Addresses of existing nodes to join through.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Create a new cluster with this node as its first member.
    #[serde(default)]
    pub bootstrap: bool,
    /// Cluster secret: every gRPC call must carry it. Required.
    pub secret: Secret,
    /// Poller groups this node serves.
    #[serde(default = "default_groups")]
    pub groups: Vec<GroupId>,
    #[serde(default)]
    pub poller: PollerConfig,
    #[serde(default)]
    pub rrd: RrdConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// LibreNMS drop-in: inventory from LibreNMS's database and poll results
    /// written back to it. Absent: raftpoll keeps its own inventory.
    #[serde(default)]
    pub librenms: Option<LibrenmsConfig>,
    /// TLS on every gRPC connection, served and dialed. Absent: plaintext
    /// (with a warning at start unless `listen` is a loopback address).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Log format: `text` or `json`. The level comes from `RUST_LOG` (default `info`).
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Address of the Prometheus `/metrics` HTTP server. Absent: no metrics
    /// server.
    #[serde(default, deserialize_with = "metrics_listen_addr")]
    pub metrics_listen: Option<SocketAddr>,
}

/// `metrics_listen` with an error naming the key (serde's own names none).
fn metrics_listen_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "key `metrics_listen` must be an IP address and port such as \"127.0.0.1:9231\", \
             not \"{text}\""
        ))
    })
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollerConfig {
    /// Seconds between two polls of a device; also the RRD step.
    pub frequency: u32,
    /// Seconds between retries of a device that is down.
    pub down_retry: u32,
    /// Seconds between two discoveries of a device (ports, processors, storage).
    pub discovery_frequency: u32,
    /// Timeout of one SNMP request, in milliseconds.
    pub timeout_ms: u64,
    /// Retries after a timeout, per request.
    pub retries: u32,
    /// SNMP requests in flight at once, for the whole node.
    pub max_in_flight: usize,
    /// SNMP requests in flight at once, per device.
    pub per_device_in_flight: usize,
    /// Devices polled at the same time.
    pub max_concurrent_polls: usize,
    /// Local address SNMP requests leave from. Default: chosen by the OS.
    pub source_ip: Option<IpAddr>,
    /// How often poll reports are batched into the Raft log, in milliseconds;
    /// flushed on multiples of it in unix time, with the claims of that moment.
    pub report_interval_ms: u64,
    /// Start every poll with an ICMP echo, as LibreNMS's availability check: a
    /// device answering no ping is down (reason `icmp`) and not walked.
    /// Always on with `[librenms]`.
    pub icmp: bool,
    /// Echo requests per check; one answer is enough.
    pub icmp_count: u32,
    /// How long to wait for an echo reply, in milliseconds.
    pub icmp_timeout_ms: u64,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            frequency: 300,
            down_retry: 60,
            discovery_frequency: 21600,
            timeout_ms: 2000,
            retries: 2,
            max_in_flight: 2000,
            per_device_in_flight: 4,
            max_concurrent_polls: 500,
            source_ip: None,
            report_interval_ms: 10_000,
            icmp: false,
            icmp_count: 3,
            icmp_timeout_ms: 500,
        }
    }
}

/// `[librenms]`: the LibreNMS database this cluster takes its inventory from
/// and writes its poll results to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibrenmsConfig {
    /// `mysql://user@host:3306/librenms`, or with `?socket=/run/mysqld/mysqld.sock`
    /// for a unix socket. Must not hold the password.
    pub database: String,
    /// File holding the database password (first line). Default: the
    /// environment variable `RAFTPOLL_LIBRENMS_PASSWORD`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds between two reads of LibreNMS's `devices` table.
    #[serde(default = "default_sync_interval_s")]
    pub sync_interval_s: u64,
    /// Most devices whose latest poll result waits for the database; past it
    /// the oldest waiting results are dropped (the next poll writes them again).
    #[serde(default = "default_writeback_buffer")]
    pub writeback_buffer: usize,
}

/// `[tls]`: the node's certificate and key (served to clients and presented
/// to peers) and the CA that signs every node's certificate. Re-read on SIGHUP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate (chain) of this node; valid for the host of `advertise`.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificate(s) trusted for peers' and clients' certificates.
    pub ca_file: PathBuf,
    /// `"required"`: every connection must present a certificate signed by
    /// `ca_file` (mutual TLS: an unknown node cannot join, replicate or
    /// forward). `"none"`: clients are authenticated by the secret only.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether TLS clients must present a certificate.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Required,
}

fn default_sync_interval_s() -> u64 {
    60
}

fn default_writeback_buffer() -> usize {
    50_000
}

/// Environment variable read for the LibreNMS database password when
/// `password_file` is not set.
pub const LIBRENMS_PASSWORD_ENV: &str = "RAFTPOLL_LIBRENMS_PASSWORD";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RrdConfig {
    /// rrdcached address: `host:port` or `unix:/path/to/socket`.
    pub rrdcached: String,
    /// Updates held in memory while rrdcached is slow or away.
    pub queue_capacity: usize,
    /// Bound on the on-disk spool (`data_dir/spool`) in MiB; past it the
    /// oldest spooled updates are dropped.
    pub spool_max_mb: u64,
}

impl Default for RrdConfig {
    fn default() -> Self {
        RrdConfig {
            rrdcached: "127.0.0.1:42217".into(),
            queue_capacity: 200_000,
            spool_max_mb: 1024,
        }
    }
}

/// Raft and failover timings. Defaults suit a LAN or loopback and move a
/// dead node's devices within about 3 seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Leader heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Election timeout range, milliseconds.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A node that has not heard from a quorum-holding leader for this long
    /// stops starting polls (fencing), milliseconds.
    pub lease_ms: u64,
    /// The leader declares a node dead (and moves its devices) after this
    /// long without acknowledgement, milliseconds. Must exceed `lease_ms`
    /// plus a margin so the old owner stops before the new one starts.
    pub node_timeout_ms: u64,
    /// A voter dead this long is replaced by a live learner and kept as a
    /// learner, milliseconds.
    pub voter_timeout_ms: u64,
    /// A (re)joining node receives devices from others only after being
    /// alive this long, milliseconds (avoids flapping).
    pub join_debounce_ms: u64,
    /// On SIGTERM or SIGINT the node hands leadership and its devices to the
    /// others first; it exits after this long even if that is not done,
    /// milliseconds.
    pub shutdown_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_ms: crate::cluster::raft::DEFAULT_HEARTBEAT_MS,
            election_timeout_min_ms: crate::cluster::raft::DEFAULT_ELECTION_MIN_MS,
            election_timeout_max_ms: crate::cluster::raft::DEFAULT_ELECTION_MAX_MS,
            lease_ms: 1500,
            node_timeout_ms: 2500,
            voter_timeout_ms: 30_000,
            join_debounce_ms: 5000,
            shutdown_timeout_ms: 10_000,
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "raftpoll".into())
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7071))
}

fn default_groups() -> Vec<GroupId> {
    vec![0]
}

fn default_log_format() -> String {
    "text".into()
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // toml's own Display quotes the offending source line, which may be
            // the secret's: keep only its message ("unknown field `fequency`…")
            // and the line number.
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let message = match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            }
        })
    }

    /// Whether polls start with an ICMP check (`poller.icmp`, implied by `[librenms]`).
    pub fn icmp_enabled(&self) -> bool {
        self.poller.icmp || self.librenms.is_some()
    }

    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                problem: problem.to_string(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.secret.expose().len() < 8 {
            return invalid("secret", "must be at least 8 characters");
        }
        // It travels as an HTTP/2 header value.
        if !self
            .secret
            .expose()
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b))
        {
            return invalid("secret", "must be printable ASCII without spaces");
        }
        if self.node_name.trim().is_empty() {
            return invalid("node_name", "must not be empty");
        }
        if self.groups.is_empty() {
            return invalid("groups", "must list at least one poller group");
        }
        if self.metrics_listen == Some(self.listen) {
            return invalid(
                "metrics_listen",
                &format!("must differ from `listen` ({})", self.listen),
            );
        }
        if let Some(adv) = &self.advertise
            && adv.parse::<SocketAddr>().is_err()
            && !adv.contains(':')
        {
            return invalid("advertise", "must be host:port");
        }
        for seed in &self.seeds {
            if !seed.contains(':') {
                return invalid("seeds", &format!("entry '{seed}' must be host:port"));
            }
        }
        let p = &self.poller;
        if p.frequency < 1 {
            return invalid("poller.frequency", "must be at least 1 second");
        }
        if p.down_retry == 0 {
            return invalid("poller.down_retry", "must be at least 1 second");
        }
        if p.discovery_frequency < p.frequency {
            return invalid(
                "poller.discovery_frequency",
                "must not be shorter than poller.frequency",
            );
        }
        if p.timeout_ms == 0 {
            return invalid("poller.timeout_ms", "must be positive");
        }
        if p.retries > 10 {
            return invalid("poller.retries", "must be at most 10");
        }
        // A poll that cannot finish within its interval would overlap the next one.
        let worst_request_ms = p.timeout_ms.saturating_mul(u64::from(p.retries) + 1);
        if worst_request_ms >= u64::from(p.frequency) * 1000 {
            return invalid(
                "poller.timeout_ms",
                "times (retries + 1) must be shorter than poller.frequency",
            );
        }
        if p.max_in_flight == 0 || p.per_device_in_flight == 0 || p.max_concurrent_polls == 0 {
            return invalid(
                "poller.max_in_flight",
                "and per_device_in_flight / max_concurrent_polls must be positive",
            );
        }
        if p.report_interval_ms == 0 {
            return invalid("poller.report_interval_ms", "must be positive");
        }
        if p.icmp_count == 0 || p.icmp_count > 20 {
            return invalid("poller.icmp_count", "must be from 1 to 20");
        }
        if p.icmp_timeout_ms == 0
            || p.icmp_timeout_ms.saturating_mul(u64::from(p.icmp_count))
                >= u64::from(p.frequency) * 1000
        {
            return invalid(
                "poller.icmp_timeout_ms",
                "must be positive, and times icmp_count shorter than poller.frequency",
            );
        }
        if let Some(l) = &self.librenms {
            if let Err(problem) = crate::librenms::db::check_url(&l.database) {
                return invalid("librenms.database", &problem);
            }
            if l.sync_interval_s == 0 {
                return invalid("librenms.sync_interval_s", "must be at least 1 second");
            }
            if l.writeback_buffer == 0 {
                return invalid("librenms.writeback_buffer", "must be positive");
            }
        }
        if let Some(t) = &self.tls {
            for (key, file) in [
                ("tls.cert_file", &t.cert_file),
                ("tls.key_file", &t.key_file),
                ("tls.ca_file", &t.ca_file),
            ] {
                if file.as_os_str().is_empty() {
                    return invalid(key, "must not be empty");
                }
            }
        }
        let r = &self.rrd;
        let valid_rrdcached = match r.rrdcached.strip_prefix("unix:") {
            Some(path) => !path.is_empty(),
            None => r
                .rrdcached
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)),
        };
        if !valid_rrdcached {
            return invalid("rrd.rrdcached", "must be host:port or unix:/path");
        }
        if r.queue_capacity == 0 {
            return invalid("rrd.queue_capacity", "must be positive");
        }
        // At least 1 MiB; at most 16 TiB (so bytes fit comfortably in u64).
        if !(1..=16 << 20).contains(&r.spool_max_mb) {
            return invalid("rrd.spool_max_mb", "must be from 1 to 16777216");
        }
        let c = &self.cluster;
        if c.heartbeat_ms == 0 {
            return invalid("cluster.heartbeat_ms", "must be positive");
        }
        if c.election_timeout_min_ms <= c.heartbeat_ms * 2 {
            return invalid(
                "cluster.election_timeout_min_ms",
                "must be more than twice cluster.heartbeat_ms",
            );
        }
        if c.election_timeout_max_ms <= c.election_timeout_min_ms {
            return invalid(
                "cluster.election_timeout_max_ms",
                "must be greater than cluster.election_timeout_min_ms",
            );
        }
        // Fencing: the old owner must have stopped before the new one starts.
        if c.node_timeout_ms < c.lease_ms + 2 * c.heartbeat_ms {
            return invalid(
                "cluster.node_timeout_ms",
                "must exceed cluster.lease_ms by at least two heartbeats",
            );
        }
        if c.lease_ms <= c.heartbeat_ms * 2 {
            return invalid(
                "cluster.lease_ms",
                "must be more than twice cluster.heartbeat_ms",
            );
        }
        if c.voter_timeout_ms < c.node_timeout_ms {
            return invalid(
                "cluster.voter_timeout_ms",
                "must not be shorter than cluster.node_timeout_ms",
            );
        }
        if self.log_format != "text" && self.log_format != "json" {
            return invalid("log_format", "must be \"text\" or \"json\"");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "data_dir = \"/tmp/x\"\nsecret = \"s3cret-value\"\n";

    fn load(text: &str) -> Result<Config, ConfigError> {
        let path = Path::new("node.toml");
        let config = Config::parse(text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    #[test]
    fn metrics_listen_is_optional_and_checked() {
        assert_eq!(load(MINIMAL).expect("minimal").metrics_listen, None);
        let c = load(&format!("metrics_listen = \"127.0.0.1:9231\"\n{MINIMAL}")).expect("valid");
        assert_eq!(
            c.metrics_listen,
            Some("127.0.0.1:9231".parse().expect("addr"))
        );
        let err = load(&format!("metrics_listen = \"127.0.0.1:7071\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics_listen") && err.contains("listen"),
            "{err}"
        );
        let err = load(&format!("metrics_listen = \"nowhere\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics_listen"), "{err}");
    }

    #[test]
    fn defaults() {
        let c = load(MINIMAL).expect("minimal config");
        assert_eq!(c.listen.to_string(), "127.0.0.1:7071");
        assert_eq!(c.advertise_addr(), "127.0.0.1:7071");
        assert_eq!(c.groups, vec![0]);
        assert_eq!(c.poller.frequency, 300);
        assert_eq!(c.poller.down_retry, 60);
        assert_eq!(c.poller.discovery_frequency, 21600);
        assert!(!c.bootstrap);
    }

    #[test]
    fn typo_names_key_and_file() {
        let err = load(&format!("{MINIMAL}[poller]\nfequency = 10\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fequency"), "{err}");
        assert!(err.contains("node.toml"), "{err}");
        let err = load(&format!("{MINIMAL}bootstrapp = true\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bootstrapp"), "{err}");
    }

    #[test]
    fn missing_required_keys() {
        let err = load("secret = \"s3cret-value\"\n").unwrap_err().to_string();
        assert!(err.contains("data_dir"), "{err}");
        let err = load("data_dir = \"/tmp\"\n").unwrap_err().to_string();
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn invalid_values_are_named_and_secret_not_echoed() {
        let err = load(&format!("{MINIMAL}[poller]\nfrequency = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("poller.frequency"), "{err}");
        let err = load(&format!("{MINIMAL}[rrd]\nrrdcached = \"nonsense\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rrd.rrdcached"), "{err}");
        let err = load("data_dir = \"/tmp\"\nsecret = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret") && !err.contains("short"), "{err}");
        let err = load("data_dir = \"/tmp\"\nsecret = \"unterminated-secret\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("unterminated-secret"), "{err}");
        let err = load(&format!(
            "{MINIMAL}[poller]\nfrequency = 10\ntimeout_ms = 5000\nretries = 2\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("poller.timeout_ms"), "{err}");
        let err = load(&format!(
            "{MINIMAL}[cluster]\nlease_ms = 3000\nnode_timeout_ms = 3000\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("cluster.node_timeout_ms"), "{err}");
        let err = load("data_dir = \"/tmp\"\nsecret = \"caf\u{e9}-secret\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("printable ASCII"), "{err}");
    }

    #[test]
    fn rrd_spool_bound() {
        assert_eq!(load(MINIMAL).expect("minimal").rrd.spool_max_mb, 1024);
        let c = load(&format!("{MINIMAL}[rrd]\nspool_max_mb = 5\n")).expect("5 MiB");
        assert_eq!(c.rrd.spool_max_mb, 5);
        for bad in ["0", "16777217"] {
            let err = load(&format!("{MINIMAL}[rrd]\nspool_max_mb = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("rrd.spool_max_mb"), "{err}");
        }
    }

    #[test]
    fn tls_section() {
        assert!(load(MINIMAL).expect("minimal").tls.is_none());
        let tls = "[tls]\ncert_file = \"n1.pem\"\nkey_file = \"n1.key\"\nca_file = \"ca.pem\"\n";
        let c = load(&format!("{MINIMAL}{tls}")).expect("tls");
        let t = c.tls.expect("tls section");
        assert_eq!(t.cert_file, Path::new("n1.pem"));
        assert_eq!(t.client_auth, ClientAuth::None);
        let c = load(&format!("{MINIMAL}{tls}client_auth = \"required\"\n")).expect("mtls");
        assert_eq!(c.tls.map(|t| t.client_auth), Some(ClientAuth::Required));

        let err = load(&format!("{MINIMAL}{tls}client_auth = \"maybe\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `maybe`"), "{err}");
        let err = load(&format!("{MINIMAL}{tls}certfile = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `certfile`"), "{err}");
        let err = load(&format!(
            "{MINIMAL}[tls]\ncert_file = \"a\"\nkey_file = \"b\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing field `ca_file`"), "{err}");
        let err = load(&format!(
            "{MINIMAL}[tls]\ncert_file = \"\"\nkey_file = \"b\"\nca_file = \"c\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`tls.cert_file` must not be empty"), "{err}");
    }

    #[test]
    fn shipped_cluster_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-configs");
        let mut checked = 0;
        for sub in ["3-node", "5-node"] {
            let entries = std::fs::read_dir(dir.join(sub)).expect("cluster-configs dir");
            for entry in entries {
                let path = entry.expect("dir entry").path();
                let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(config.seeds.len() >= 3, "{}", path.display());
                checked += 1;
            }
        }
        assert_eq!(checked, 8);
    }
}
