//! Tests of the test bed itself: the real agents and rrdcached answer as the other tests expect.

use raftpoll_testbed as testbed;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testbed::snmpsim::moving;
use testbed::{
    NodeConfig, Rrdcached, SimDevice, SnmpCreds, Snmpd, Snmpsim, snmpget, snmpget_u64, snmpwalk,
    wait_until,
};

const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";
const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";
const IF_DESCR: &str = "1.3.6.1.2.1.2.2.1.2";
const IF_NAME: &str = "1.3.6.1.2.1.31.1.1.1.1";
const IF_HC_IN_OCTETS: &str = "1.3.6.1.2.1.31.1.1.1.6";
const HR_PROCESSOR_LOAD: &str = "1.3.6.1.2.1.25.3.3.1.2";
const HR_STORAGE_DESCR: &str = "1.3.6.1.2.1.25.2.3.1.3";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn snmpd_answers_v2c_and_v3_auth_priv() {
    let snmpd = Snmpd::start();
    let v2c = snmpget(&snmpd.addr(), &snmpd.v2c(), &[SYS_UPTIME, SYS_DESCR]).expect("v2c GET");
    assert!(v2c[0].parse::<u64>().is_ok(), "sysUpTime {:?}", v2c[0]);

    let v3 = snmpget(&snmpd.addr(), &snmpd.v3(), &[SYS_DESCR]).expect("v3 authPriv GET");
    assert_eq!(v3[0], v2c[1], "same agent over v2c and v3");

    // Live interface counters of this machine (lo at least).
    let ports = snmpwalk(&snmpd.addr(), &snmpd.v3(), IF_DESCR).expect("v3 walk of ifDescr");
    assert!(ports.iter().any(|(_, d)| d == "lo"), "ifDescr: {ports:?}");

    let wrong = snmpd.v3().with_auth_pass("not-the-password");
    assert!(snmpget(&snmpd.addr(), &wrong, &[SYS_UPTIME]).is_err());
    assert!(snmpget(&snmpd.addr(), &SnmpCreds::v2c("wrong"), &[SYS_UPTIME]).is_err());
}

#[test]
fn snmpsim_serves_recorded_devices() {
    let sim = Snmpsim::start(&[
        SimDevice::linux("linux"),
        SimDevice::winxp("winxp"),
        SimDevice::cisco("cisco"),
    ]);
    let addr = sim.addr();

    // Linux host: ifTable + ifXTable with HC counters, two CPUs, storage.
    let linux = sim.creds("linux");
    let descr = snmpget(&addr, &linux, &[SYS_DESCR]).expect("linux sysDescr");
    assert!(descr[0].starts_with("Linux"), "{descr:?}");
    let names = snmpwalk(&addr, &linux, IF_NAME).expect("linux ifName");
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        snmpwalk(&addr, &linux, IF_HC_IN_OCTETS).expect("HC").len(),
        2
    );
    assert_eq!(
        snmpwalk(&addr, &linux, HR_PROCESSOR_LOAD)
            .expect("cpu")
            .len(),
        2
    );
    assert!(
        !snmpwalk(&addr, &linux, HR_STORAGE_DESCR)
            .expect("storage")
            .is_empty()
    );

    // Windows XP host: 32-bit ifTable only, one CPU.
    let winxp = sim.creds("winxp");
    assert_eq!(
        snmpwalk(&addr, &winxp, IF_DESCR)
            .expect("winxp ifDescr")
            .len(),
        3
    );
    assert!(
        snmpwalk(&addr, &winxp, IF_NAME)
            .expect("winxp ifName")
            .is_empty()
    );
    assert_eq!(
        snmpwalk(&addr, &winxp, HR_PROCESSOR_LOAD)
            .expect("cpu")
            .len(),
        1
    );

    // Cisco switch: many ports with ifXTable.
    let cisco = sim.creds("cisco");
    let name = snmpget(&addr, &cisco, &[SYS_NAME]).expect("cisco sysName");
    assert_eq!(name[0], "Profiler3750");
    assert!(
        snmpwalk(&addr, &cisco, IF_NAME)
            .expect("cisco ifName")
            .len()
            > 50
    );
}

#[test]
fn snmpsim_moving_counters_move_at_known_rate() {
    let sim = Snmpsim::start(&[SimDevice::moving("moving")]);
    let addr = sim.addr();
    let creds = sim.creds("moving");
    let oids: Vec<String> = moving::PORTS
        .iter()
        .flat_map(|(i, _, _)| {
            [
                format!("{}.{i}", moving::IF_HC_IN_OCTETS),
                format!("{}.{i}", moving::IF_IN_OCTETS),
                format!("{}.{i}", moving::IF_HC_OUT_OCTETS),
                format!("{}.{i}", moving::IF_OUT_OCTETS),
            ]
        })
        .collect();
    let oid_refs: Vec<&str> = oids.iter().map(String::as_str).collect();
    // Timestamp a read at the middle of its round trip.
    let read = || {
        let before = Instant::now();
        let values = snmpget(&addr, &creds, &oid_refs).expect("GET counters");
        let at = before + before.elapsed() / 2;
        let values: Vec<f64> = values.iter().map(|v| v.parse().expect("counter")).collect();
        (at, values)
    };

    let (t0, first) = read();
    wait_until(Duration::from_secs(10), "4 s to pass", || {
        (t0.elapsed() >= Duration::from_secs(4)).then_some(())
    });
    let (t1, second) = read();
    let elapsed = (t1 - t0).as_secs_f64();
    let expected = [
        moving::KNOWN_RATE,
        moving::KNOWN_RATE,
        moving::KNOWN_OUT_RATE,
        moving::KNOWN_OUT_RATE,
    ];
    for (k, oid) in oids.iter().enumerate() {
        let rate = (second[k] - first[k]) / elapsed;
        let want = expected[k % 4];
        assert!(
            (rate - want).abs() <= want * 0.02,
            "{oid}: {rate:.1}/s over {elapsed:.3} s, expected {want}/s"
        );
    }
    // 64-bit counters start above 2^32; the 32-bit ones are the same counters modulo 2^32.
    assert!(first[0] > u32::MAX as f64);
    assert!((first[0] % 4_294_967_296.0 - first[1]).abs() < 50.0);

    // The fixed HOST-RESOURCES values are served as documented.
    for (index, load) in moving::PROCESSOR_LOADS {
        let oid = format!("{HR_PROCESSOR_LOAD}.{index}");
        assert_eq!(snmpget_u64(&addr, &creds, &oid).expect("load"), load);
    }
    let name = snmpget(&addr, &creds, &[SYS_NAME]).expect("sysName");
    assert_eq!(name[0], moving::SYS_NAME);
    let if_names = snmpwalk(&addr, &creds, IF_NAME).expect("ifName");
    let want: Vec<&str> = moving::PORTS.iter().map(|(_, n, _)| *n).collect();
    let got: Vec<&str> = if_names.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(got, want);
}

#[test]
fn rrdcached_creates_updates_and_survives_restart() {
    let mut rrd = Rrdcached::start();
    // On step boundaries, so the stored averages are the values written.
    let t = now() / 10 * 10;
    let file = "dev1/test.rrd";
    rrd.command(&format!(
        "CREATE {file} -s 10 -b {} -O DS:x:GAUGE:20:0:U RRA:AVERAGE:0.5:1:100",
        t - 30
    ))
    .expect("CREATE");
    rrd.command(&format!("UPDATE {file} {}:5", t - 20))
        .expect("UPDATE 1");
    rrd.command(&format!("UPDATE {file} {}:7", t - 10))
        .expect("UPDATE 2");
    // -O refuses to overwrite an existing file.
    assert!(
        rrd.command(&format!(
            "CREATE {file} -s 10 -O DS:x:GAUGE:20:0:U RRA:AVERAGE:0.5:1:100"
        ))
        .is_err()
    );
    // At most one update per file per second.
    assert!(rrd.command(&format!("UPDATE {file} {}:8", t - 10)).is_err());

    assert_eq!(rrd.rrd_files(), vec![Path::new(file).to_path_buf()]);
    let info = rrd.rrd_info(file);
    assert_eq!(info["step"], "10");
    assert_eq!(info["ds[x].type"], "GAUGE");
    assert_eq!(info["rra[0].cf"], "AVERAGE");
    assert_eq!(info["last_update"], (t - 10).to_string());

    let (names, rows) = rrd.rrd_fetch_named(file, "AVERAGE", t - 40, t);
    assert_eq!(names, vec!["x"]);
    assert!(rows.iter().any(|(_, v)| v[0] == Some(7.0)), "{rows:?}");
    let (last, values) = rrd.rrd_lastupdate(file);
    assert_eq!((last, values["x"].as_str()), (t - 10, "7"));
    assert!(rrd.unix_socket().exists());

    // An outage: stopped (SIGTERM, -F writes everything), then back on the same port.
    rrd.command(&format!("UPDATE {file} {}:9", t))
        .expect("UPDATE 3");
    rrd.stop();
    assert!(rrd.command("STATS").is_err());
    assert_eq!(rrd.rrd_info(file)["last_update"], t.to_string());
    rrd.start_again();
    rrd.command(&format!("UPDATE {file} {}:10", t + 10))
        .expect("UPDATE after restart");
    rrd.flush_all();
    assert_eq!(rrd.rrd_info(file)["last_update"], (t + 10).to_string());

    // A killed one comes back too (updates it had not written are lost: its journal is
    // buffered, so outage tests must not count on it).
    rrd.kill9();
    rrd.start_again();
    assert!(rrd.command("STATS").is_ok());
}

#[test]
fn node_config_is_accepted_by_raftpoll() {
    let cfg = NodeConfig::new("n1", "127.0.0.1:42217");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = cfg.to_toml(dir.path(), "127.0.0.1:7071".parse().expect("addr"));
    let path = dir.path().join("raftpoll.toml");
    raftpoll::config::Config::parse(&text, &path)
        .unwrap_or_else(|e| panic!("generated config refused: {e}\n{text}"));
}

#[test]
#[should_panic(expected = "timed out after")]
fn wait_until_panics_at_deadline() {
    wait_until(Duration::from_millis(100), "nothing", || {
        thread::yield_now();
        None::<()>
    });
}
