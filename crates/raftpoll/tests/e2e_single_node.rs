//! End to end on one real `raftpoll node` (issue 2, "Done when"): real snmpd, snmpsimd and
//! rrdcached, devices added through the CLI, RRD files checked with `rrdtool info`/`fetch`.
//!
//! Each scenario is its own `#[test]` with its own daemons and ports, so they run in parallel.
//! Every CLI output and the node's logs are checked for leaked secrets at the end of each one.

use raftpoll_testbed as testbed;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testbed::raftpoll::run_node_expecting_exit;
use testbed::snmpd::{V3_AUTH_PASS, V3_PRIV_PASS};
use testbed::snmpsim::moving;
use testbed::{
    NodeConfig, RaftpollNode, Rrdcached, SimDevice, SnmpCreds, Snmpd, Snmpsim, snmpwalk,
    wait_until_every,
};

/// hrProcessorLoad column.
const HR_PROCESSOR_LOAD: &str = "1.3.6.1.2.1.25.3.3.1.2";
/// Poll frequency of the test nodes (the RRD step).
const FREQUENCY: u32 = 10;
/// Distinctive secrets, searched for in every output and log.
const CLUSTER_SECRET: &str = "e2e-cluster-Secret-9Kq2";
const WRONG_SECRET: &str = "e2e-Wrong-secret-4Hv7";
const C_LINUX: &str = "lnxComm-Zr81";
const C_WINXP: &str = "xpComm-Pw36";
const C_MOVING: &str = "movComm-Jd54";
const WRONG_AUTH_PASS: &str = "wrongAuth-Tx93pass";

/// First up-and-polled state: discovery plus a first poll spread over one interval.
const FIRST_POLL_DEADLINE: Duration = Duration::from_secs(60);
/// Re-check interval of CLI/rrdtool conditions (they change every few seconds at most).
const CHECK_EVERY: Duration = Duration::from_millis(500);
const LEADER_DEADLINE: Duration = Duration::from_secs(30);

/// The 15 LibreNMS port data sources (DESIGN.md §4).
const PORT_DS: [&str; 15] = [
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The archives expected at step 10 s, as (cf, steps per row, rows): LibreNMS's archives keep
/// their time per row (5 min, 30 min, 2 h, 1 day → 30, 180, 720, 8640 steps) and row counts,
/// after a raw archive of 2016 rows; AVERAGE, MIN and MAX each, plus LAST raw.
fn expected_rras_step10() -> BTreeSet<(String, u64, u64)> {
    assert_eq!(
        FREQUENCY, 10,
        "expected archives are written out for step 10"
    );
    let layout = [
        (1, 2016),
        (30, 2016),
        (180, 1440),
        (720, 1440),
        (8640, 1440),
    ];
    let mut out: BTreeSet<_> = ["AVERAGE", "MIN", "MAX"]
        .iter()
        .flat_map(|cf| layout.iter().map(|&(p, r)| (cf.to_string(), p, r)))
        .collect();
    out.insert(("LAST".into(), 1, 2016));
    out
}

/// A node plus a transcript of everything its CLI printed (for the secrets check).
struct Bed {
    node: RaftpollNode,
    transcript: RefCell<String>,
}

impl Bed {
    fn start(cfg: NodeConfig) -> Bed {
        let bed = Bed {
            node: RaftpollNode::start(cfg),
            transcript: RefCell::new(String::new()),
        };
        let status = bed.node.wait_leader(LEADER_DEADLINE);
        bed.record(&status.to_string());
        bed
    }

    fn record(&self, text: &str) {
        let mut t = self.transcript.borrow_mut();
        t.push_str(text);
        t.push('\n');
    }

    fn record_output(&self, out: &Output) {
        self.record(&String::from_utf8_lossy(&out.stdout));
        self.record(&String::from_utf8_lossy(&out.stderr));
    }

    /// Runs the CLI with the node's secret; the output is recorded.
    fn cli(&self, args: &[&str]) -> Output {
        let out = self.node.cli(args);
        self.record_output(&out);
        out
    }

    fn cli_with_secret(&self, args: &[&str], secret: &str) -> Output {
        let out = self.node.cli_with_secret(args, secret);
        self.record_output(&out);
        out
    }

    /// Runs the CLI, panicking with its output unless it succeeds; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "raftpoll {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("raftpoll {args:?}: not JSON ({e}): {stdout}"))
    }

    /// Runs the CLI expecting a failure; returns stderr (with stdout appended).
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !out.status.success(),
            "raftpoll {args:?} should have failed: {text}"
        );
        text
    }

    /// `device add <hostname> --ip 127.0.0.1 --port <port> <creds> [extra]`.
    fn add(&self, hostname: &str, port: u16, creds: &SnmpCreds, extra: &[&str]) {
        let port = port.to_string();
        let mut args = vec![
            "device",
            "add",
            hostname,
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
        ];
        let creds = creds.raftpoll_args();
        args.extend(creds.iter().map(String::as_str));
        args.extend(extra);
        let out = self.ok(&args);
        assert!(out.contains(hostname), "device add said: {out}");
    }

    /// `device list --json` keyed by hostname.
    fn list(&self) -> BTreeMap<String, Value> {
        let list = self.json(&["device", "list", "--json"]);
        list.as_array()
            .unwrap_or_else(|| panic!("device list is not an array: {list}"))
            .iter()
            .map(|d| {
                (
                    d["hostname"].as_str().expect("hostname").to_string(),
                    d.clone(),
                )
            })
            .collect()
    }

    fn show(&self, hostname: &str) -> Value {
        self.json(&["device", "show", hostname, "--json"])
    }

    /// Waits until every one of `hostnames` is `up` with `last_polled` set and after `after`.
    fn wait_polled(
        &self,
        hostnames: &[&str],
        after: u64,
        deadline: Duration,
    ) -> BTreeMap<String, Value> {
        let what = format!("{hostnames:?} up and polled after {after}");
        wait_until_every(deadline, CHECK_EVERY, &what, || {
            let list = self.list();
            let all = hostnames.iter().all(|h| {
                list.get(*h).is_some_and(|d| {
                    d["status"] == "up" && d["last_polled"].as_u64().is_some_and(|t| t > after)
                })
            });
            all.then_some(list)
        })
    }

    /// Asserts that no CLI output and no node log contains any of `secrets`.
    fn assert_no_secrets(&self, secrets: &[&str]) {
        let logs = self.node.full_logs();
        assert!(
            logs.contains("starting node"),
            "the node's start is not in its logs:\n{logs}"
        );
        let transcript = self.transcript.borrow();
        for s in secrets {
            if let Some(line) = logs.lines().find(|l| l.contains(s)) {
                panic!("node logs contain secret {s:?}: {line}");
            }
            if let Some(line) = transcript.lines().find(|l| l.contains(s)) {
                panic!("CLI output contains secret {s:?}: {line}");
            }
        }
    }

    /// Plain-text forms of the read commands (into the transcript, for the secrets check).
    fn read_everything_as_text(&self, hostnames: &[&str]) {
        self.ok(&["status"]);
        self.ok(&["status", "--json"]);
        self.ok(&["device", "list"]);
        for h in hostnames {
            self.ok(&["device", "show", h]);
        }
    }
}

fn node_config(name: &str, rrdcached: &str) -> NodeConfig {
    let mut cfg = NodeConfig::new(name, rrdcached);
    cfg.secret = CLUSTER_SECRET.into();
    cfg.frequency = FREQUENCY;
    cfg
}

/// One port of `device show --json`: (port_id, ifindex, ifname, rrd).
type PortRow = (u64, u64, String, String);

/// The `ports` of a `device show --json`, sorted by port_id.
fn ports(show: &Value) -> Vec<PortRow> {
    let mut out: Vec<_> = show["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("no ports array: {show}"))
        .iter()
        .map(|p| {
            (
                p["port_id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("port_id: {p}")),
                p["ifindex"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("ifindex: {p}")),
                p["ifname"]
                    .as_str()
                    .unwrap_or_else(|| panic!("ifname: {p}"))
                    .to_string(),
                p["rrd"]
                    .as_str()
                    .unwrap_or_else(|| panic!("rrd: {p}"))
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn rrd_files(show: &Value) -> Vec<String> {
    show["rrd_files"]
        .as_array()
        .unwrap_or_else(|| panic!("no rrd_files: {show}"))
        .iter()
        .map(|f| f.as_str().expect("rrd file name").to_string())
        .collect()
}

fn num(info: &BTreeMap<String, String>, key: &str, file: &str) -> f64 {
    let v = info
        .get(key)
        .unwrap_or_else(|| panic!("{file}: rrdtool info has no {key}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{file}: {key} = {v} is not a number"))
}

/// Checks step, heartbeat, the archives and the data sources (name → (type, min, max); None for
/// `U`) of one file.
fn check_rrd(rrd: &Rrdcached, file: &str, ds: &[(&str, &str, Option<f64>, Option<f64>)]) {
    let info = rrd.rrd_info(file);
    assert_eq!(
        num(&info, "step", file),
        f64::from(FREQUENCY),
        "{file}: step"
    );

    let names: BTreeSet<&str> = info
        .keys()
        .filter_map(|k| k.strip_prefix("ds[")?.strip_suffix("].type"))
        .collect();
    let want: BTreeSet<&str> = ds.iter().map(|d| d.0).collect();
    assert_eq!(names, want, "{file}: data sources");
    for (name, kind, min, max) in ds {
        let key = |k: &str| format!("ds[{name}].{k}");
        assert_eq!(info[&key("type")], *kind, "{file}: type of {name}");
        assert_eq!(
            num(&info, &key("minimal_heartbeat"), file),
            f64::from(2 * FREQUENCY),
            "{file}: heartbeat of {name}"
        );
        for (what, want) in [("min", min), ("max", max)] {
            let got = num(&info, &key(what), file);
            match want {
                Some(w) => assert_eq!(got, *w, "{file}: {what} of {name}"),
                None => assert!(got.is_nan(), "{file}: {what} of {name} = {got}, want U"),
            }
        }
    }

    let mut rras = BTreeSet::new();
    for i in 0.. {
        let Some(cf) = info.get(&format!("rra[{i}].cf")) else {
            break;
        };
        let per_row = num(&info, &format!("rra[{i}].pdp_per_row"), file) as u64;
        let rows = num(&info, &format!("rra[{i}].rows"), file) as u64;
        assert_eq!(
            num(&info, &format!("rra[{i}].xff"), file),
            0.5,
            "{file}: xff of rra[{i}]"
        );
        assert!(
            rras.insert((cf.clone(), per_row, rows)),
            "{file}: rra[{i}] twice"
        );
    }
    assert_eq!(rras, expected_rras_step10(), "{file}: archives");
}

fn check_port_rrd(rrd: &Rrdcached, file: &str) {
    let ds: Vec<_> = PORT_DS
        .iter()
        .map(|n| (*n, "DERIVE", Some(0.0), Some(12_500_000_000.0)))
        .collect();
    check_rrd(rrd, file, &ds);
}

/// Waits until `file` exists under rrdcached's base dir.
fn wait_file(rrd: &Rrdcached, file: &str) {
    wait_until_every(
        Duration::from_secs(30),
        CHECK_EVERY,
        &format!("{file} to exist"),
        || rrd.path(file).is_file().then_some(()),
    );
}

/// Known values of `ds` in `file` between `start` and now (AVERAGE, raw archive): (row end, value).
fn known_rates(rrd: &Rrdcached, file: &str, ds: &str, start: u64) -> Vec<(u64, f64)> {
    let (names, rows) = rrd.rrd_fetch_named(file, "AVERAGE", start, now());
    let col = names
        .iter()
        .position(|n| n == ds)
        .unwrap_or_else(|| panic!("{file}: no column {ds} in {names:?}"));
    rows.into_iter()
        .filter_map(|(ts, vals)| vals.get(col).copied().flatten().map(|v| (ts, v)))
        .collect()
}

/// The rows after the first (partial) one must each be within 2% of `rate`.
fn assert_rate(rows: &[(u64, f64)], rate: f64, what: &str) {
    let full = &rows[1..];
    for (ts, v) in full {
        let err = (v - rate).abs() / rate;
        assert!(
            err <= 0.02,
            "{what}: row {ts} = {v}/s, expected {rate}/s ±2% (all rows: {rows:?})"
        );
    }
}

/// Issue 2: real agents polled into real rrdcached; files, layout and rates checked.
#[test]
fn polls_real_agents_into_rrdcached() {
    let snmpd = Snmpd::start();
    let sim = Snmpsim::start(&[
        SimDevice::linux(C_LINUX),
        SimDevice::winxp(C_WINXP),
        SimDevice::moving(C_MOVING),
    ]);
    let rrd = Rrdcached::start();
    let bed = Bed::start(node_config("poll", &rrd.addr()));

    let added_at = now();
    bed.add("linux-sim", sim.port(), &sim.creds(C_LINUX), &[]);
    bed.add("winxp-sim", sim.port(), &sim.creds(C_WINXP), &[]);
    bed.add("moving-sim", sim.port(), &sim.creds(C_MOVING), &[]);
    bed.add("snmpd-v3", snmpd.port(), &snmpd.v3(), &[]);
    let hosts = ["linux-sim", "winxp-sim", "moving-sim", "snmpd-v3"];
    let list = bed.wait_polled(&hosts, 0, FIRST_POLL_DEADLINE);
    for h in hosts {
        let d = &list[h];
        assert_eq!(d["group"], 0, "{d}");
        assert!(d["node_id"].as_u64().is_some(), "owned by the node: {d}");
        assert!(d["last_poll_ms"].as_u64().is_some(), "{d}");
        assert!(d["last_polled"].as_u64() >= Some(added_at), "{d}");
    }

    // Ports as discovered, each with its own RRD file.
    let show: BTreeMap<&str, Value> = hosts.iter().map(|h| (*h, bed.show(h))).collect();
    for (h, s) in &show {
        let ports = ports(s);
        assert!(!ports.is_empty(), "{h} has no ports: {s}");
        for (id, _, _, file) in &ports {
            assert_eq!(*file, format!("{h}/port-id{id}.rrd"), "{h}");
        }
        let ids: BTreeSet<u64> = ports.iter().map(|p| p.0).collect();
        assert_eq!(ids.len(), ports.len(), "{h}: port ids unique");
        assert!(s["reason"].is_null(), "{h} is up: {s}");
    }
    let moving_ports: Vec<(u64, String)> = ports(&show["moving-sim"])
        .into_iter()
        .map(|p| (p.1, p.2))
        .collect();
    let want: Vec<(u64, String)> = moving::PORTS
        .iter()
        .map(|(i, n, _)| (u64::from(*i), n.to_string()))
        .collect();
    assert_eq!(moving_ports, want, "moving-sim ports");
    assert_eq!(show["moving-sim"]["sys_name"], moving::SYS_NAME);
    assert_eq!(ports(&show["linux-sim"]).len(), 2, "linux: lo and eth0");
    assert_eq!(ports(&show["winxp-sim"]).len(), 3, "winxp: 3 interfaces");
    assert!(
        ports(&show["snmpd-v3"]).iter().any(|p| p.2 == "lo"),
        "snmpd over v3 has lo: {}",
        show["snmpd-v3"]
    );

    // Every file a device lists exists, with LibreNMS's data sources and step-10 archives.
    let linux_files = rrd_files(&show["linux-sim"]);
    let count = |prefix: &str| {
        linux_files
            .iter()
            .filter(|f| f.starts_with(&format!("linux-sim/{prefix}")))
            .count()
    };
    assert_eq!(count("processor-hr-"), 2, "linux CPUs: {linux_files:?}");
    assert!(
        count("storage-hrstorage-") >= 1,
        "linux disks: {linux_files:?}"
    );
    assert!(
        count("mempool-hrstorage-") >= 1,
        "linux memory: {linux_files:?}"
    );
    for (h, s) in &show {
        let files = rrd_files(s);
        for f in [format!("{h}/uptime.rrd"), format!("{h}/poller-perf.rrd")] {
            assert!(files.contains(&f), "{h}: {f} not in {files:?}");
        }
        for (_, _, _, port_file) in ports(s) {
            assert!(
                files.contains(&port_file),
                "{h}: {port_file} not in {files:?}"
            );
        }
        // This machine's snmpd may list CPUs without a load (containers): nothing to write then.
        let no_cpu_load = *h == "snmpd-v3"
            && snmpwalk(&snmpd.addr(), &snmpd.v3(), HR_PROCESSOR_LOAD)
                .expect("walk hrProcessorLoad")
                .is_empty();
        for f in &files {
            if no_cpu_load && f.contains("/processor-hr-") {
                continue;
            }
            wait_file(&rrd, f);
            let name = Path::new(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("port-id") {
                check_port_rrd(&rrd, f);
            } else if name == "uptime.rrd" {
                check_rrd(&rrd, f, &[("uptime", "GAUGE", Some(0.0), None)]);
            } else if name == "poller-perf.rrd" {
                check_rrd(&rrd, f, &[("poller", "GAUGE", Some(0.0), None)]);
            } else if name.starts_with("processor-hr-") {
                check_rrd(&rrd, f, &[("usage", "GAUGE", Some(-273.0), Some(1000.0))]);
            } else if name.starts_with("storage-hrstorage-") || name.starts_with("mempool-") {
                let gauge = |n| (n, "GAUGE", Some(0.0), None);
                check_rrd(&rrd, f, &[gauge("used"), gauge("free")]);
            } else {
                panic!("{h}: unexpected RRD file {f}");
            }
        }
    }

    // Rates: wait for a few polls of the moving device, then compare with the agent's rates.
    let eth0 = ports(&show["moving-sim"])
        .into_iter()
        .find(|p| p.2 == "eth0")
        .expect("moving-sim eth0")
        .3;
    let in_rows = wait_until_every(
        Duration::from_secs(90),
        Duration::from_secs(1),
        "4 known INOCTETS rows in moving-sim eth0",
        || {
            let rows = known_rates(&rrd, &eth0, "INOCTETS", added_at);
            (rows.len() >= 4).then_some(rows)
        },
    );
    assert_rate(&in_rows, moving::KNOWN_RATE, "INOCTETS");
    let out_rows = known_rates(&rrd, &eth0, "OUTOCTETS", added_at);
    assert!(out_rows.len() >= 4, "OUTOCTETS rows: {out_rows:?}");
    assert_rate(&out_rows, moving::KNOWN_OUT_RATE, "OUTOCTETS");
    // Packet counters move by only ~100 per poll, so one row is ±1% from rounding alone:
    // compare their mean.
    let pkt_rows = known_rates(&rrd, &eth0, "INUCASTPKTS", added_at);
    let full = &pkt_rows[1..];
    let mean = full.iter().map(|r| r.1).sum::<f64>() / full.len() as f64;
    assert!(
        (mean - moving::KNOWN_IN_PKT_RATE).abs() / moving::KNOWN_IN_PKT_RATE <= 0.02,
        "INUCASTPKTS: mean {mean}/s, expected {}/s ±2% (rows: {pkt_rows:?})",
        moving::KNOWN_IN_PKT_RATE
    );

    bed.read_everything_as_text(&hosts);
    bed.assert_no_secrets(&[
        CLUSTER_SECRET,
        C_LINUX,
        C_WINXP,
        C_MOVING,
        V3_AUTH_PASS,
        V3_PRIV_PASS,
    ]);
}

/// Issue 2: v3 authPriv works; a wrong v3 password makes one device `down` with a readable
/// reason while the node keeps polling the others.
#[test]
fn v3_wrong_password_is_down_with_reason() {
    let snmpd = Snmpd::start();
    let sim = Snmpsim::start(&[SimDevice::moving(C_MOVING)]);
    let rrd = Rrdcached::start();
    let mut bed = Bed::start(node_config("v3", &rrd.addr()));

    bed.add("snmpd-v3", snmpd.port(), &snmpd.v3(), &[]);
    bed.add(
        "snmpd-badpass",
        snmpd.port(),
        &snmpd.v3().with_auth_pass(WRONG_AUTH_PASS),
        &[],
    );
    bed.add("moving-sim", sim.port(), &sim.creds(C_MOVING), &[]);

    let good = ["snmpd-v3", "moving-sim"];
    let first = bed.wait_polled(&good, 0, FIRST_POLL_DEADLINE);
    let show = bed.show("snmpd-v3");
    assert_eq!(show["snmp_version"], "v3", "{show}");
    assert!(
        !ports(&show).is_empty(),
        "v3 authPriv discovered ports: {show}"
    );

    let bad = wait_until_every(
        FIRST_POLL_DEADLINE,
        CHECK_EVERY,
        "snmpd-badpass down",
        || {
            let s = bed.show("snmpd-badpass");
            (s["status"] == "down").then_some(s)
        },
    );
    let reason = bad["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("down without a reason: {bad}"))
        .to_lowercase();
    assert!(
        ["authentication", "password", "unknown user", "wrong digest"]
            .iter()
            .any(|w| reason.contains(w)),
        "reason does not say why: {reason:?}"
    );
    assert!(bad["last_polled"].as_u64().is_some(), "{bad}");
    assert!(
        ports(&bad).is_empty(),
        "nothing discovered with a wrong password: {bad}"
    );

    // The node is alive and polls on: the good devices poll again, the bad one is retried.
    let after = good
        .iter()
        .map(|h| first[*h]["last_polled"].as_u64().unwrap())
        .max()
        .unwrap();
    let bad_at = bad["last_polled"].as_u64().unwrap();
    bed.wait_polled(&good, after, Duration::from_secs(30));
    wait_until_every(
        Duration::from_secs(30),
        CHECK_EVERY,
        "snmpd-badpass retried",
        || {
            let d = bed.list().remove("snmpd-badpass")?;
            (d["status"] == "down" && d["last_polled"].as_u64() > Some(bad_at)).then_some(())
        },
    );
    assert!(bed.node.is_running(), "node exited:\n{}", bed.node.logs());

    bed.read_everything_as_text(&["snmpd-v3", "snmpd-badpass", "moving-sim"]);
    bed.assert_no_secrets(&[
        CLUSTER_SECRET,
        C_MOVING,
        V3_AUTH_PASS,
        V3_PRIV_PASS,
        WRONG_AUTH_PASS,
    ]);
}

/// Issue 2: kill -9 and start again with the same config keeps devices, port ids and groups,
/// and polling resumes.
#[test]
fn restart_keeps_devices_ports_and_groups() {
    let sim = Snmpsim::start(&[
        SimDevice::linux(C_LINUX),
        SimDevice::winxp(C_WINXP),
        SimDevice::moving(C_MOVING),
    ]);
    let rrd = Rrdcached::start();
    // Over the unix socket this time; the node serves groups 0 and 3.
    let mut cfg = node_config("restart", &format!("unix:{}", rrd.unix_socket().display()));
    cfg.groups = vec![0, 3];
    let mut bed = Bed::start(cfg);

    bed.add(
        "linux-sim",
        sim.port(),
        &sim.creds(C_LINUX),
        &["--group", "3"],
    );
    bed.add("winxp-sim", sim.port(), &sim.creds(C_WINXP), &[]);
    bed.add("moving-sim", sim.port(), &sim.creds(C_MOVING), &[]);
    // A group no node serves: kept, never polled.
    bed.add(
        "orphan",
        sim.port(),
        &sim.creds(C_MOVING),
        &["--group", "7"],
    );
    bed.ok(&["device", "set-group", "winxp-sim", "3"]);
    let polled = ["linux-sim", "winxp-sim", "moving-sim"];
    bed.wait_polled(&polled, 0, FIRST_POLL_DEADLINE);
    // Files land through the unix socket too.
    wait_file(&rrd, "moving-sim/uptime.rrd");

    // hostname → (group, ports)
    let snapshot = |bed: &Bed| -> BTreeMap<String, (u64, Vec<PortRow>)> {
        bed.list()
            .keys()
            .map(|h| {
                let s = bed.show(h);
                (h.clone(), (s["group"].as_u64().expect("group"), ports(&s)))
            })
            .collect()
    };
    let before = snapshot(&bed);
    let groups: Vec<(&str, u64)> = before.iter().map(|(h, (g, _))| (h.as_str(), *g)).collect();
    assert_eq!(
        groups,
        [
            ("linux-sim", 3),
            ("moving-sim", 0),
            ("orphan", 7),
            ("winxp-sim", 3)
        ]
    );
    for h in polled {
        assert!(!before[h].1.is_empty(), "{h} has ports before the restart");
    }
    let orphan = &bed.list()["orphan"];
    assert_eq!(orphan["status"], "pending", "{orphan}");
    assert!(orphan["node_id"].is_null(), "{orphan}");

    bed.node.kill9();
    let killed_at = now();
    bed.node.start_again();
    let status = bed.node.wait_leader(LEADER_DEADLINE);
    bed.record(&status.to_string());
    assert_eq!(status["devices"]["total"], 4, "{status}");

    assert_eq!(
        snapshot(&bed),
        before,
        "devices, groups and ports after kill -9 and restart"
    );
    bed.wait_polled(&polled, killed_at, FIRST_POLL_DEADLINE);
    assert_eq!(
        snapshot(&bed),
        before,
        "ports after the first polls since the restart"
    );

    bed.read_everything_as_text(&["linux-sim", "winxp-sim", "moving-sim", "orphan"]);
    bed.assert_no_secrets(&[CLUSTER_SECRET, C_LINUX, C_WINXP, C_MOVING]);
}

/// Issue 2: a wrong secret, a typo'd config key, a duplicate hostname, an invalid address and
/// an unknown device are each refused with a clear message.
#[test]
fn refusals_are_clear() {
    let rrd = Rrdcached::start();
    let cfg = node_config("refusals", &rrd.addr());
    let bed = Bed::start(cfg.clone());

    // Wrong cluster secret.
    for args in [&["status"][..], &["device", "list", "--json"][..]] {
        let out = bed.cli_with_secret(args, WRONG_SECRET);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} with a wrong secret succeeded"
        );
        assert!(
            stderr.contains("refused") && stderr.contains("secret"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    }

    // Typo'd key and an invalid value in the config: the node refuses to start.
    let data = tempfile::tempdir().expect("temp dir");
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], testbed::free_tcp_port()));
    for (table, key, value) in [
        ("poller", "fequency", toml::Value::Integer(10)),
        ("poller", "frequency", toml::Value::Integer(0)),
    ] {
        let mut bad = cfg.clone();
        bad.extra.insert(
            table.into(),
            toml::Value::Table([(key.to_string(), value)].into_iter().collect()),
        );
        let text = bad.to_toml(data.path(), listen);
        let out = run_node_expecting_exit(&text, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        bed.record_output(&out);
        assert!(
            !out.status.success(),
            "node started with {table}.{key}: {stderr}"
        );
        assert!(
            stderr.contains(key),
            "{table}.{key}: error does not name the key: {stderr}"
        );
        assert!(
            stderr.contains("raftpoll.toml"),
            "{table}.{key}: error does not name the file: {stderr}"
        );
    }

    // Duplicate hostname.
    let creds = SnmpCreds::v2c(C_MOVING);
    // Nothing answers there: the device is only ever down.
    bed.add("dup", testbed::free_udp_port(), &creds, &[]);
    let mut dup = vec![
        "device",
        "add",
        "dup",
        "--ip",
        "127.0.0.2",
        "--community",
        C_MOVING,
    ];
    let err = bed.fails(&dup);
    assert!(
        err.contains("already exists") && err.contains("dup"),
        "{err}"
    );
    // Invalid address.
    dup[2] = "bad-ip";
    dup[4] = "999.1.1.1";
    let err = bed.fails(&dup);
    assert!(err.contains("999.1.1.1"), "{err}");
    // Unknown device.
    let err = bed.fails(&["device", "show", "nosuch"]);
    assert!(
        err.to_lowercase().contains("unknown device") && err.contains("nosuch"),
        "{err}"
    );

    let list = bed.list();
    assert_eq!(
        list.keys().collect::<Vec<_>>(),
        ["dup"],
        "refused adds left no device"
    );
    let dup_show = bed.show("dup");
    assert_eq!(
        dup_show["address"], "127.0.0.1",
        "the first add stands: {dup_show}"
    );

    bed.assert_no_secrets(&[CLUSTER_SECRET, WRONG_SECRET, C_MOVING]);
}
