//! snmpsimd serving recorded real devices (from the snmpsim package) and one device whose
//! counters move at a known rate, each selected by its community name, on one loopback port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{Daemon, chmod, find_program, free_udp_port, start_on_free_port, test_dir};
use super::snmp::{SnmpCreds, snmpget};
use super::snmpd::SYS_UPTIME;

/// Where the snmpsim Debian package ships its example recordings.
pub const PACKAGED_DATA: &str = "/usr/share/doc/snmpsim/examples/data";
/// A Linux host (net-snmp): ifTable + ifXTable (HC counters) for lo/eth0, 2 hrProcessor,
/// hrStorage. Static values.
pub const LINUX_RECORDING: &str = "recorded/linux-full-walk.snmprec.gz";
/// A Windows XP host: ifTable only (32-bit counters, 3 interfaces), 1 hrProcessor, hrStorage.
pub const WINXP_RECORDING: &str = "recorded/winxp-full-walk.snmprec.gz";
/// A Cisco Catalyst 3750 switch: ~57 interfaces with ifXTable, no HOST-RESOURCES.
pub const CISCO_RECORDING: &str = "cisco_16_switch.snmprec.gz";

/// The device with moving counters (`recordings/moving.snmprec`): the `numeric` variation
/// makes each value `initial + rate * seconds since snmpsimd started`, exactly, no jitter.
pub mod moving {
    /// ifInOctets / ifHCInOctets of every port grow by this many octets per second.
    pub const KNOWN_RATE: f64 = 1000.0;
    /// ifOutOctets / ifHCOutOctets of every port grow by this many octets per second.
    pub const KNOWN_OUT_RATE: f64 = 2000.0;
    /// ifInUcastPkts / ifHCInUcastPkts per second (out: twice that).
    pub const KNOWN_IN_PKT_RATE: f64 = 10.0;
    /// (ifIndex, ifName, ifDescr) of its ports.
    pub const PORTS: [(u32, &str, &str); 2] = [
        (1, "eth0", "Ethernet port 0"),
        (2, "eth1", "Ethernet port 1"),
    ];
    pub const SYS_NAME: &str = "moving-sim";
    /// Moving at KNOWN_RATE (append `.<ifIndex>`).
    pub const IF_IN_OCTETS: &str = "1.3.6.1.2.1.2.2.1.10";
    pub const IF_HC_IN_OCTETS: &str = "1.3.6.1.2.1.31.1.1.1.6";
    /// Moving at KNOWN_OUT_RATE (append `.<ifIndex>`).
    pub const IF_OUT_OCTETS: &str = "1.3.6.1.2.1.2.2.1.16";
    pub const IF_HC_OUT_OCTETS: &str = "1.3.6.1.2.1.31.1.1.1.10";
    /// hrProcessorLoad: fixed at 25 and 50 (%).
    pub const PROCESSOR_LOADS: [(u32, u64); 2] = [(196608, 25), (196609, 50)];
    /// hrStorage (index, descr, allocation unit, size, used), fixed.
    pub const STORAGE: [(u32, &str, u64, u64, u64); 2] = [
        (1, "Physical memory", 1024, 2_097_152, 1_048_576),
        (31, "/", 4096, 2_621_440, 655_360),
    ];
}

const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Where a simulated device's data comes from.
#[derive(Clone, Debug)]
pub enum SimSource {
    /// A recording shipped by the snmpsim package, relative to PACKAGED_DATA (.gz is unpacked).
    Packaged(&'static str),
    /// Any .snmprec file (.gz is unpacked).
    File(PathBuf),
}

/// One simulated device: the community that selects it and its data.
#[derive(Clone, Debug)]
pub struct SimDevice {
    pub community: String,
    pub source: SimSource,
}

impl SimDevice {
    pub fn linux(community: &str) -> Self {
        Self::packaged(community, LINUX_RECORDING)
    }

    pub fn winxp(community: &str) -> Self {
        Self::packaged(community, WINXP_RECORDING)
    }

    pub fn cisco(community: &str) -> Self {
        Self::packaged(community, CISCO_RECORDING)
    }

    /// The device with counters moving at `moving::KNOWN_RATE`.
    pub fn moving(community: &str) -> Self {
        Self::file(community, moving_snmprec())
    }

    pub fn packaged(community: &str, recording: &'static str) -> Self {
        SimDevice {
            community: community.to_string(),
            source: SimSource::Packaged(recording),
        }
    }

    pub fn file(community: &str, path: impl Into<PathBuf>) -> Self {
        SimDevice {
            community: community.to_string(),
            source: SimSource::File(path.into()),
        }
    }

    fn path(&self) -> PathBuf {
        match &self.source {
            SimSource::Packaged(rel) => Path::new(PACKAGED_DATA).join(rel),
            SimSource::File(p) => p.clone(),
        }
    }
}

/// `recordings/moving.snmprec` of this crate: the switch with counters moving at known rates.
pub fn moving_snmprec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings/moving.snmprec")
}

pub struct Snmpsim {
    port: u16,
    devices: Vec<SimDevice>,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Snmpsim {
    /// Starts snmpsimd serving `devices` and waits until every community answers.
    pub fn start(devices: &[SimDevice]) -> Snmpsim {
        assert!(!devices.is_empty(), "snmpsim needs at least one device");
        start_on_free_port("snmpsimd", free_udp_port, |port| {
            let dir = test_dir("snmpsim");
            write_data_dir(dir.path(), devices);
            let mut daemon = spawn(dir.path(), port);
            let addr = format!("127.0.0.1:{port}");
            // snmpsimd indexes every data file before it answers at all.
            daemon.wait_ready(READY_DEADLINE, || {
                devices
                    .iter()
                    .all(|d| snmpget(&addr, &SnmpCreds::v2c(&d.community), &[SYS_UPTIME]).is_ok())
            })?;
            Ok(Snmpsim {
                port,
                devices: devices.to_vec(),
                daemon,
                dir,
            })
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:<port>"
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// v2c credentials of the device served under `community`.
    pub fn creds(&self, community: &str) -> SnmpCreds {
        assert!(
            self.devices.iter().any(|d| d.community == community),
            "no simulated device with community {community}"
        );
        SnmpCreds::v2c(community)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn logs(&self) -> String {
        self.daemon.logs()
    }
}

/// `<dir>/data/<community>.snmprec` for each device (snmpsim cannot read .gz itself), readable
/// by nobody; `<dir>/cache` writable by nobody (snmpsimd writes its indexes after dropping
/// privileges).
fn write_data_dir(dir: &Path, devices: &[SimDevice]) {
    let data = dir.join("data");
    let cache = dir.join("cache");
    fs::create_dir_all(&data).expect("create snmpsim data dir");
    fs::create_dir_all(&cache).expect("create snmpsim cache dir");
    for device in devices {
        assert!(
            !device.community.is_empty()
                && device
                    .community
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "community {:?} must be a plain file name",
            device.community
        );
        let src = device.path();
        let dst = data.join(format!("{}.snmprec", device.community));
        if src.extension().is_some_and(|e| e == "gz") {
            let out = Command::new("gzip")
                .arg("-dc")
                .arg(&src)
                .output()
                .unwrap_or_else(|e| panic!("gzip -dc {}: {e}", src.display()));
            assert!(out.status.success(), "gzip -dc {} failed", src.display());
            fs::write(&dst, out.stdout).expect("write unpacked recording");
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
        chmod(&dst, 0o644);
    }
    chmod(dir, 0o755);
    chmod(&data, 0o755);
    chmod(&cache, 0o777);
}

fn spawn(dir: &Path, port: u16) -> Daemon {
    let log = dir.join("snmpsimd.log");
    let mut daemon = Daemon::new("snmpsimd", find_program("snmpsimd"), dir)
        // snmpsim looks for variation modules under $HOME first: keep it out of the user's home.
        .env("HOME", dir)
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--cache-dir={}", dir.join("cache").display()))
        .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
        .arg("--process-user=nobody")
        .arg("--process-group=nogroup")
        .arg(format!("--logging-method=file:{}", log.display()))
        .log_file(log);
    daemon.spawn();
    daemon
}

/// The `.snmprec` text of a switch with one Ethernet port per ifIndex in `ifindexes` (ifDescr
/// `GigabitEthernet0/<i>`, ifName `Gi0/<i>`) whose IF-MIB counters move at known rates (octets
/// 1000/2000 per s in/out, packets 10/20), both the 32-bit ifTable and the 64-bit ifXTable
/// columns, plus the system group and one CPU. Served by snmpsimd and raftpoll-sim alike.
pub fn switch_snmprec(sys_name: &str, ifindexes: &[u32]) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut line = |oid: String, tag: &str, value: String| {
        lines.push((oid, format!("{tag}|{value}")));
    };
    let sys = "1.3.6.1.2.1.1";
    let ports = ifindexes.len();
    line(
        format!("{sys}.1.0"),
        "4",
        format!("raftpoll simulated switch, {ports} ports"),
    );
    line(format!("{sys}.2.0"), "6", "1.3.6.1.4.1.8072.3.2.10".into());
    line(
        format!("{sys}.3.0"),
        "67:numeric",
        "rate=100,initial=100000".into(),
    );
    line(format!("{sys}.5.0"), "4", sys_name.into());
    line("1.3.6.1.2.1.2.1.0".into(), "2", ports.to_string());
    let counter32 = |rate: u32| format!("rate={rate},initial=1000000,wrap=1");
    let counter64 = |rate: u32| format!("rate={rate},initial=4295967296");
    // (table, column, tag, value of port i): ifTable, then ifXTable.
    type Column = (&'static str, u32, &'static str, Box<dyn Fn(u32) -> String>);
    let (if_table, if_x) = ("1.3.6.1.2.1.2.2.1", "1.3.6.1.2.1.31.1.1.1");
    // The same value on every port.
    let same = |table, col, tag, value: String| -> Column {
        (table, col, tag, Box::new(move |_| value.clone()))
    };
    let zero = |table, col, tag| same(table, col, tag, "0".into());
    let moving = same;
    let columns: Vec<Column> = vec![
        (if_table, 1, "2", Box::new(|i| i.to_string())),
        (
            if_table,
            2,
            "4",
            Box::new(|i| format!("GigabitEthernet0/{i}")),
        ),
        (if_table, 3, "2", Box::new(|_| "6".into())),
        (if_table, 5, "66", Box::new(|_| "1000000000".into())),
        (if_table, 7, "2", Box::new(|_| "1".into())),
        (if_table, 8, "2", Box::new(|_| "1".into())),
        moving(if_table, 10, "65:numeric", counter32(1000)),
        moving(if_table, 11, "65:numeric", counter32(10)),
        zero(if_table, 12, "65"),
        zero(if_table, 13, "65"),
        zero(if_table, 14, "65"),
        zero(if_table, 15, "65"),
        moving(if_table, 16, "65:numeric", counter32(2000)),
        moving(if_table, 17, "65:numeric", counter32(20)),
        zero(if_table, 18, "65"),
        zero(if_table, 19, "65"),
        zero(if_table, 20, "65"),
        (if_x, 1, "4", Box::new(|i| format!("Gi0/{i}"))),
        zero(if_x, 2, "65"),
        zero(if_x, 3, "65"),
        zero(if_x, 4, "65"),
        zero(if_x, 5, "65"),
        moving(if_x, 6, "70:numeric", counter64(1000)),
        moving(if_x, 7, "70:numeric", counter64(10)),
        zero(if_x, 8, "70"),
        zero(if_x, 9, "70"),
        moving(if_x, 10, "70:numeric", counter64(2000)),
        moving(if_x, 11, "70:numeric", counter64(20)),
        zero(if_x, 12, "70"),
        zero(if_x, 13, "70"),
        (if_x, 15, "66", Box::new(|_| "1000".into())),
    ];
    for (table, col, tag, value) in &columns {
        for &i in ifindexes {
            line(format!("{table}.{col}.{i}"), tag, value(i));
        }
    }
    line("1.3.6.1.2.1.25.3.3.1.2.196608".into(), "2", "25".into());
    // snmprec files are sorted by OID, numerically.
    let arcs = |oid: &str| -> Vec<u32> { oid.split('.').filter_map(|a| a.parse().ok()).collect() };
    lines.sort_by_cached_key(|(oid, _)| arcs(oid));
    lines
        .iter()
        .map(|(oid, rest)| format!("{oid}|{rest}\n"))
        .collect()
}

/// Replaces the recording of the device served under `community` and makes snmpsimd see the
/// change: it re-indexes a data file whose modification time (whole seconds) changed, so the
/// new file gets a time no earlier read of it had.
pub fn replace_recording(sim: &Snmpsim, community: &str, text: &str) {
    let path = sim.data_dir().join(format!("{community}.snmprec"));
    let old = fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let later = old.max(std::time::SystemTime::now()) + std::time::Duration::from_secs(2);
    fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(later))
        .unwrap_or_else(|e| panic!("set the modification time of {}: {e}", path.display()));
}
