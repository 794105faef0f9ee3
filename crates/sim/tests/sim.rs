//! End-to-end tests of `raftpoll-sim` with real net-snmp clients (snmpget, snmpwalk,
//! snmpbulkwalk) on loopback.

use raftpoll_testbed::{SimAgent, SimBuilder};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const LINUX_GZ: &str = "/usr/share/doc/snmpsim/examples/data/recorded/linux-full-walk.snmprec.gz";
const IF_HC_IN_OCTETS_1: &str = ".1.3.6.1.2.1.31.1.1.1.6.1";
const IF_IN_OCTETS_1: &str = ".1.3.6.1.2.1.2.2.1.10.1";

fn moving() -> PathBuf {
    raftpoll_testbed::snmpsim::moving_snmprec()
}

/// Starts the simulator with these flags (on a free port of 127.0.0.1) and waits until it serves.
fn start_sim(args: &[&str]) -> SimAgent {
    args.iter()
        .fold(SimBuilder::new(), |sim, arg| sim.arg(*arg))
        .start()
}

/// "127.0.0.1:<port>" of the simulator's first port.
fn target(sim: &SimAgent) -> String {
    format!("127.0.0.1:{}", sim.port())
}

/// Runs a net-snmp tool with numeric output and no MIBs; returns (success, stdout+stderr).
fn net_snmp(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(["-m", "", "-On", "-t", "1", "-r", "1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e} (apt-get install snmp)"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn get_u64(target: &str, community: &str, oid: &str) -> u64 {
    let (ok, text) = net_snmp("snmpget", &["-v2c", "-c", community, "-Oqvt", target, oid]);
    assert!(ok, "snmpget {oid}: {text}");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text}"))
}

/// Expected net-snmp rendering of a static recording line, for the types it prints plainly.
fn expected_rendering(tag: &str, value: &str) -> Option<String> {
    Some(match tag {
        "2" => format!("INTEGER: {value}"),
        "4" => format!("STRING: \"{value}\""),
        "6" => format!("OID: .{value}"),
        "66" => format!("Gauge32: {value}"),
        "65" => format!("Counter32: {value}"),
        "4x" => {
            let bytes: Vec<String> = value
                .as_bytes()
                .chunks(2)
                .map(|c| String::from_utf8_lossy(c).to_uppercase())
                .collect();
            format!("Hex-STRING: {} ", bytes.join(" "))
        }
        _ => return None,
    })
}

#[test]
fn serves_recorded_values_to_net_snmp_clients() {
    let moving = moving();
    let sim = start_sim(&[
        "--recording",
        moving.to_str().unwrap(),
        "--recording",
        LINUX_GZ,
        "--devices",
        "2",
        "--community-prefix",
        "dev",
    ]);
    let target = target(&sim);

    // dev0 serves moving.snmprec: every static value as recorded, every object once.
    let (ok, walk) = net_snmp("snmpbulkwalk", &["-v2c", "-c", "dev0", &target, ".1"]);
    assert!(ok, "{walk}");
    let text = std::fs::read_to_string(&moving).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let mut parts = line.splitn(3, '|');
        let (oid, tag, value) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        if let Some(want) = expected_rendering(tag, value) {
            let want = format!(".{oid} = {want}");
            assert!(walk.lines().any(|l| l == want), "missing `{want}` in walk");
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} values compared");
    // net-snmp prints the agent's endOfMibView as a last line when walking from the root.
    let end = "No more variables left in this MIB View";
    assert!(
        walk.lines().last().is_some_and(|l| l.contains(end)),
        "{walk}"
    );
    let objects = walk
        .lines()
        .filter(|l| l.starts_with(".1.") && !l.contains(end));
    assert_eq!(objects.count(), text.lines().count());

    // GET of a Counter64 and v1 GET work too.
    let (ok, out) = net_snmp(
        "snmpget",
        &["-v2c", "-c", "dev0", &target, IF_HC_IN_OCTETS_1],
    );
    assert!(ok && out.contains("Counter64: "), "{out}");
    let (ok, out) = net_snmp(
        "snmpget",
        &["-v1", "-c", "dev0", &target, ".1.3.6.1.2.1.1.5.0"],
    );
    assert!(ok && out.contains("STRING: \"moving-sim\""), "{out}");

    // Missing objects and instances.
    let (_, out) = net_snmp(
        "snmpget",
        &["-v2c", "-c", "dev0", &target, ".1.3.6.1.2.1.1.5.7"],
    );
    assert!(out.contains("No Such Instance"), "{out}");
    let (_, out) = net_snmp(
        "snmpget",
        &["-v2c", "-c", "dev0", &target, ".1.3.6.1.2.1.99.1"],
    );
    assert!(out.contains("No Such Object"), "{out}");

    // dev1 serves the gzipped Linux recording: sysName from the file.
    let (ok, out) = net_snmp(
        "snmpget",
        &["-v2c", "-c", "dev1", "-Oqv", &target, ".1.3.6.1.2.1.1.5.0"],
    );
    assert!(ok, "{out}");
    assert!(
        !out.contains("moving-sim"),
        "dev1 answered with dev0's data: {out}"
    );
}

#[test]
fn whole_tree_walk_terminates_with_end_of_mib_view() {
    let sim = start_sim(&["--recording", LINUX_GZ]);
    let target = target(&sim);
    let recorded = String::from_utf8(
        Command::new("gzip")
            .args(["-dc", LINUX_GZ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let last_oid = recorded
        .lines()
        .filter_map(|l| l.split('|').next())
        .next_back()
        .unwrap();

    for tool in ["snmpwalk", "snmpbulkwalk"] {
        let (ok, walk) = net_snmp(tool, &["-v2c", "-c", "public", &target, ".1"]);
        assert!(ok, "{tool}: {walk}");
        let mut lines = walk.lines().rev();
        let (end, last) = (lines.next().unwrap(), lines.next().unwrap());
        assert!(
            end.contains("No more variables left in this MIB View"),
            "{tool}: {end}"
        );
        assert!(
            last.starts_with(&format!(".{last_oid} = ")),
            "{tool} ended at {last}"
        );
        assert!(!walk.contains("OID not increasing"), "{tool}: {walk}");
    }
    let (ok, out) = net_snmp("snmpwalk", &["-v1", "-c", "public", &target, ".1"]);
    assert!(
        ok && !out.contains("Counter64"),
        "v1 walk must skip Counter64"
    );

    let (_, out) = net_snmp(
        "snmpgetnext",
        &["-v2c", "-c", "public", &target, &format!(".{last_oid}")],
    );
    assert!(
        out.contains("No more variables left in this MIB View"),
        "{out}"
    );
}

/// Reads `oid` twice at least `span` apart and returns the rate per second.
fn measure_rate(target: &str, community: &str, oid: &str, span: Duration) -> f64 {
    let t0 = Instant::now();
    let v0 = get_u64(target, community, oid);
    let t0 = t0 + (t0.elapsed() / 2);
    while t0.elapsed() < span {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t1 = Instant::now();
    let v1 = get_u64(target, community, oid);
    let t1 = t1 + (t1.elapsed() / 2);
    v1.wrapping_sub(v0) as f64 / (t1 - t0).as_secs_f64()
}

fn assert_rate(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= want * 0.02,
        "rate {got:.1}/s, want {want}/s ± 2%"
    );
}

#[test]
fn counters_move_at_the_known_rate() {
    let moving = moving();
    let sim = start_sim(&[
        "--recording",
        moving.to_str().unwrap(),
        "--devices",
        "2",
        "--community-prefix",
        "dev",
    ]);
    // Rates from moving.snmprec (crates/testbed/README.md): 1000/s in, 100 ticks/s uptime.
    let span = Duration::from_secs(3);
    assert_rate(
        measure_rate(&target(&sim), "dev1", IF_HC_IN_OCTETS_1, span),
        1000.0,
    );
    assert_rate(
        measure_rate(&target(&sim), "dev0", IF_IN_OCTETS_1, span),
        1000.0,
    );
    assert_rate(
        measure_rate(&target(&sim), "dev0", ".1.3.6.1.2.1.1.3.0", span),
        100.0,
    );

    // --rate makes the static counters of a plain recording move.
    let rated = start_sim(&["--recording", LINUX_GZ, "--rate", "5000"]);
    assert_rate(
        measure_rate(&target(&rated), "public", IF_HC_IN_OCTETS_1, span),
        5000.0,
    );
}

/// Starts the simulator on a range of `n` consecutive free ports.
fn start_on_port_range(n: u16, extra: &[&str]) -> SimAgent {
    extra
        .iter()
        .fold(SimBuilder::new().ports(n), |sim, arg| sim.arg(*arg))
        .start()
}

#[test]
fn devices_by_port_and_unknown_communities_get_no_answer() {
    let moving = moving();
    let sim = start_on_port_range(
        2,
        &[
            "--recording",
            moving.to_str().unwrap(),
            "--devices",
            "4",
            "--community-prefix",
            "dev",
        ],
    );
    assert_eq!(sim.ports().len(), 2);
    let on = |port: u16| format!("127.0.0.1:{port}");
    let sys_name = ".1.3.6.1.2.1.1.5.0";
    // Device i listens on port first + i mod 2.
    for (community, port) in [
        ("dev0", sim.ports()[0]),
        ("dev1", sim.ports()[1]),
        ("dev2", sim.ports()[0]),
    ] {
        let (ok, out) = net_snmp("snmpget", &["-v2c", "-c", community, &on(port), sys_name]);
        assert!(
            ok && out.contains("moving-sim"),
            "{community}@{port}: {out}"
        );
    }
    for (community, port) in [
        ("dev1", sim.ports()[0]),
        ("nobody", sim.ports()[0]),
        ("dev9", sim.ports()[1]),
    ] {
        let (ok, out) = net_snmp(
            "snmpget",
            &["-v2c", "-c", community, "-r", "0", &on(port), sys_name],
        );
        assert!(
            !ok && out.contains("Timeout"),
            "{community}@{port} answered: {out}"
        );
    }
}

#[test]
fn record_file_lists_answered_requests() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("requests.log");
    let moving = moving();
    let sim = start_sim(&[
        "--recording",
        moving.to_str().unwrap(),
        "--devices",
        "2",
        "--community-prefix",
        "dev",
        "--record",
        record.to_str().unwrap(),
    ]);
    for community in ["dev0", "dev1", "dev1", "nobody"] {
        net_snmp(
            "snmpget",
            &[
                "-v2c",
                "-c",
                community,
                "-r",
                "0",
                &target(&sim),
                ".1.3.6.1.2.1.1.5.0",
            ],
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (line, community) in lines.iter().zip(["dev0", "dev1", "dev1"]) {
        let f: Vec<&str> = line.split(' ').collect();
        let ms: u64 = f[0].parse().unwrap();
        assert!(now_ms - ms < 60_000, "{line}");
        assert!(f[1].starts_with("127.0.0.1:"), "{line}");
        assert_eq!(f[2], community);
        assert_eq!(f[3], sim.ports()[0].to_string());
        assert_eq!(f[4], "1", "varbinds in the answer: {line}");
    }
}
