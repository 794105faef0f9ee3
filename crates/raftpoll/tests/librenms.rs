//! LibreNMS drop-in, end to end: real `raftpoll node` processes on loopback whose inventory is
//! LibreNMS's `devices` table in a real MariaDB (the test bed's, with LibreNMS's schema), devices
//! served by a recording `raftpoll-sim`. The assertions are written against LibreNMS's tables, as
//! LibreNMS's UI would read them.
//!
//! Each test has its own database, agent, rrdcached and nodes on free ports.

use raftpoll_testbed as testbed;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use testbed::cluster::{CLI_EVERY, Cluster, RecordingAgent, unix_ms};
use testbed::raftpoll::{run_node_expecting_exit, run_node_expecting_exit_with_env};
use testbed::snmpsim::{SimDevice, Snmpsim, replace_recording, switch_snmprec};
use testbed::{
    DeviceSpec, LibrenmsLink, MariaDb, NodeConfig, SilentHost, free_tcp_port, free_udp_port,
    insert_device, wait_until_every,
};

/// Poll frequency of the test nodes, seconds.
const FREQUENCY: u32 = 5;
const FREQUENCY_MS: u64 = FREQUENCY as u64 * 1000;
/// Seconds between two reads of `devices`.
const SYNC_S: u64 = 1;
/// A silence this long from one source address ends a poll (see `group_polls`).
const BURST_GAP_MS: u64 = 1000;
/// How much later than its start a poll's first request may reach the agent on a loaded box.
const SLACK_MS: u64 = 500;

const FORM_DEADLINE: Duration = Duration::from_secs(60);
const POLL_DEADLINE: Duration = Duration::from_secs(30);
/// A change in `devices` must reach the cluster within a few syncs.
const SYNC_DEADLINE: Duration = Duration::from_secs(20);
/// A poll's result must be in LibreNMS's tables within this of the poll (a poll interval plus
/// write-back batching).
const WRITEBACK_DEADLINE: Duration = Duration::from_secs(20);
const SQL_EVERY: Duration = Duration::from_millis(300);

/// Node settings every test uses.
fn base(cfg: &mut NodeConfig, link: &toml::Table) {
    cfg.frequency = FREQUENCY;
    cfg.timeout_ms = 1000;
    cfg.retries = 0;
    cfg.extra
        .insert("librenms".into(), toml::Value::Table(link.clone()));
}

/// The first value of the first row, if any (and not NULL).
fn scalar(db: &MariaDb, sql: &str) -> Option<String> {
    db.sql(sql)
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .filter(|v| v != "NULL")
}

/// `UNIX_TIMESTAMP(devices.last_polled)` of a device, None while NULL.
fn last_polled(db: &MariaDb, device_id: u32) -> Option<u64> {
    scalar(
        db,
        &format!("SELECT UNIX_TIMESTAMP(last_polled) FROM devices WHERE device_id = {device_id}"),
    )
    .and_then(|v| v.split('.').next().and_then(|s| s.parse().ok()))
}

/// Waits until `devices.last_polled` of `device_id` is later than `after` (unix seconds).
fn wait_last_polled_after(db: &MariaDb, device_id: u32, after: u64, what: &str) -> u64 {
    let what = format!(
        "{what}: devices.last_polled of device_id {device_id} to pass {after} \
         (LibreNMS write-back of poll results)"
    );
    wait_seen(WRITEBACK_DEADLINE, SQL_EVERY, &what, || {
        let seen = last_polled(db, device_id);
        seen.filter(|&t| t > after)
            .ok_or_else(|| format!("last_polled = {seen:?}"))
    })
}

/// Like `wait_until_every`, but `f` says what it saw (Err) while the condition does not hold,
/// and the panic on timeout shows the last of it.
fn wait_seen<T>(
    deadline: Duration,
    every: Duration,
    what: &str,
    f: impl FnMut() -> Result<T, String>,
) -> T {
    try_wait_seen(deadline, every, what, f).unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_seen`] returning the timeout as Err (for checks reported at a test's end).
fn try_wait_seen<T>(
    deadline: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(seen) if start.elapsed() >= deadline => {
                return Err(format!(
                    "timed out after {deadline:?} waiting for {what}; last seen: {seen}"
                ));
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

fn now_s() -> u64 {
    unix_ms() / 1000
}

/// Waits until the agent saw a poll of every community in `communities` starting at or after
/// `since_ms`.
fn wait_polled(agent: &RecordingAgent, communities: &[String], since_ms: u64, what: &str) {
    wait_until_every(POLL_DEADLINE, CLI_EVERY, what, || {
        let polls = agent.polls(BURST_GAP_MS);
        communities
            .iter()
            .all(|c| {
                polls
                    .get(c)
                    .is_some_and(|ps| ps.iter().any(|p| p.start_ms >= since_ms))
            })
            .then_some(())
    });
}

/// Polls of `community` starting at or after `since_ms`.
fn polls_since(agent: &RecordingAgent, community: &str, since_ms: u64) -> usize {
    agent
        .polls(BURST_GAP_MS)
        .get(community)
        .map_or(0, |ps| ps.iter().filter(|p| p.start_ms >= since_ms).count())
}

/// `status --json` from any running node.
fn status(c: &Cluster) -> Value {
    wait_until_every(SYNC_DEADLINE, CLI_EVERY, "a status", || {
        c.up().into_iter().find_map(|i| c.try_status(i))
    })
}

/// Failures collected along a test and reported together at its end.
#[derive(Default)]
struct Soft(Vec<String>);

impl Soft {
    fn fail(&mut self, message: String) {
        eprintln!("CHECK FAILED: {message}");
        self.0.push(message);
    }

    fn check(&mut self, ok: bool, message: String) {
        if !ok {
            self.fail(message);
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// What is wrong with `status.librenms` (test `inventory_follows_the_librenms_database`): the
/// link must be connected and list the tcp, SHA-224 and snmp_disable rows as skipped, each with
/// a reason naming what raftpoll cannot do.
fn link_problems(s: &Value, tcp_id: u32) -> Vec<String> {
    let Some(l) = s["librenms"].as_object() else {
        return vec![format!(
            "`raftpoll status --json` has no `librenms` object in LibreNMS mode: {s}"
        )];
    };
    let mut problems = Vec::new();
    if l.get("connected") != Some(&Value::Bool(true)) {
        problems.push(format!("status librenms.connected is not true: {l:?}"));
    }
    let skipped = |host: &str| {
        l.get("skipped")
            .and_then(Value::as_array)
            .and_then(|k| k.iter().find(|k| k["hostname"] == host))
    };
    for (host, word) in [
        ("lnms-tcp", "tcp"),
        ("lnms-sha224", "SHA-224"),
        ("lnms-nosnmp", "SNMP"),
    ] {
        let ok = skipped(host)
            .and_then(|k| k["reason"].as_str())
            .is_some_and(|r| r.contains(word));
        if !ok {
            problems.push(format!(
                "{host} is not in librenms.skipped with a reason naming {word}: {l:?}"
            ));
        }
    }
    if let Some(k) = skipped("lnms-tcp").filter(|k| k["device_id"].as_u64() != Some(tcp_id.into()))
    {
        problems.push(format!("skipped lnms-tcp has not device_id {tcp_id}: {k}"));
    }
    problems
}

/// Prints how far into the test a phase starts (in the test's output on failure).
fn phase(t0: std::time::Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
}

/// The N of every `<host>/port-id<N>.rrd`.
fn port_id_files(c: &Cluster, host: &str) -> BTreeSet<u64> {
    c.rrd
        .rrd_files()
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.as_os_str() == host))
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_prefix("port-id")?
                .strip_suffix(".rrd")?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn inventory_follows_the_librenms_database() {
    let t0 = std::time::Instant::now();
    let db = MariaDb::start();
    let agent = RecordingAgent::start(4, "lnms");
    let link = LibrenmsLink::new(&db, SYNC_S);
    let hosts: Vec<String> = (0..4).map(|i| format!("lnms-dev{i}")).collect();
    let ids: Vec<u32> = (0..4)
        .map(|i| {
            let spec = DeviceSpec::v2c(&hosts[i], "127.0.0.1", agent.port(), &agent.community(i));
            insert_device(&db, &spec)
        })
        .collect();
    let tcp =
        DeviceSpec::v2c("lnms-tcp", "127.0.0.1", agent.port(), "lnms-unused").transport("tcp");
    let tcp_id = insert_device(&db, &tcp);
    // Two more rows raftpoll cannot poll: SNMPv3 with SHA-224, and SNMP disabled (ping only).
    db.exec(&format!(
        "INSERT INTO devices (hostname, overwrite_ip, port, snmpver, authlevel, authname, \
         authpass, authalgo, transport, status_reason) VALUES ('lnms-sha224', '127.0.0.1', {}, \
         'v3', 'authNoPriv', 'user', 'authpass123', 'SHA-224', 'udp', '')",
        agent.port()
    ));
    let mut nosnmp = DeviceSpec::v2c("lnms-nosnmp", "127.0.0.1", agent.port(), "lnms-unused");
    nosnmp.snmp_disable = true;
    insert_device(&db, &nosnmp);

    phase(t0, "cluster start");
    let table = link.table();
    let c = Cluster::start(3, move |_, cfg| base(cfg, &table));
    let formed = c.wait_formed(&["follower", "follower", "leader"], FORM_DEADLINE);
    let started_ms = unix_ms();

    phase(t0, "first polls");
    // Every pollable row is polled.
    let communities: Vec<String> = (0..4).map(|i| agent.community(i)).collect();
    wait_polled(
        &agent,
        &communities,
        0,
        "the agent to see every LibreNMS device polled",
    );

    phase(t0, "status.librenms");
    // The link is up; the unpollable rows are skipped, with their reasons. Checked softly
    // (reported at the end) so that a missing piece of `status` does not hide later checks.
    let mut soft = Soft::default();
    // Followers read `devices` on their own: wait for a complete picture, but not when the
    // `librenms` object is missing altogether (waiting would not bring it).
    let seen = try_wait_seen(
        SYNC_DEADLINE,
        CLI_EVERY,
        "status librenms: connected, the three unpollable rows skipped with their reasons",
        || {
            let s = status(&c);
            let problems = link_problems(&s, tcp_id);
            if problems.is_empty() || !s["librenms"].is_object() {
                Ok(problems)
            } else {
                Err(problems.join("; "))
            }
        },
    );
    match seen {
        Ok(problems) => problems.into_iter().for_each(|p| soft.fail(p)),
        Err(e) => soft.fail(e),
    }
    let list = c.node(0).cli_ok(&["device", "list", "--json"]);
    soft.check(
        list.contains("lnms-tcp") && list.contains("skipped"),
        format!("`device list --json` does not list lnms-tcp as skipped: {list}"),
    );
    let devices: Vec<String> = c.devices().into_iter().map(|d| d.hostname).collect();
    for host in ["lnms-tcp", "lnms-sha224", "lnms-nosnmp"] {
        assert!(
            !devices.iter().any(|d| d == host),
            "skipped row {host} is a polled device: {devices:?}"
        );
    }

    phase(t0, "device commands");
    // Device commands point at LibreNMS.
    let out = c.node(1).cli(&[
        "device",
        "add",
        "lnms-manual",
        "--ip",
        "127.0.0.1",
        "--community",
        "x",
    ]);
    // (The CLI prints the FAILED_PRECONDITION status's message, not its code.)
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "device add succeeded in LibreNMS mode"
    );
    assert!(
        stderr.contains("LibreNMS"),
        "device add should fail saying the inventory lives in LibreNMS: {stderr}"
    );
    let out = c.node(2).cli(&["device", "remove", &hosts[0]]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("LibreNMS"),
        "device remove should fail saying the inventory lives in LibreNMS: {stderr}"
    );

    phase(t0, "delete and disable rows");
    // A deleted row and a disabled row stop being polled.
    db.exec(&format!("DELETE FROM devices WHERE device_id = {}", ids[2]));
    db.exec(&format!(
        "UPDATE devices SET disabled = 1 WHERE device_id = {}",
        ids[3]
    ));
    wait_until_every(
        SYNC_DEADLINE,
        CLI_EVERY,
        "the deleted and the disabled row to leave `device list`",
        || {
            let names: BTreeSet<String> = c.devices().into_iter().map(|d| d.hostname).collect();
            (!names.contains(&hosts[2]) && !names.contains(&hosts[3])).then_some(())
        },
    );
    let removed_ms = unix_ms();
    // Two later polls of a device still there are the clock: by then any poll of the removed
    // ones that was already under way is over.
    wait_until_every(
        POLL_DEADLINE,
        CLI_EVERY,
        "two more polls of a remaining device",
        || (polls_since(&agent, &communities[0], removed_ms + SLACK_MS) >= 2).then_some(()),
    );
    for i in [2, 3] {
        let late = polls_since(&agent, &communities[i], removed_ms + SLACK_MS);
        assert_eq!(
            late,
            0,
            "{} (row {}) was polled {late} times after it left `device list`",
            hosts[i],
            if i == 2 { "deleted" } else { "disabled" }
        );
    }

    phase(t0, "poller_cluster");
    // Write-back: the poller_cluster rows, one master (the leader).
    let leader = c.name(c.leader_index(&formed));
    wait_seen(
        WRITEBACK_DEADLINE,
        SQL_EVERY,
        &format!("poller_cluster: a row per node, master = 1 only on the Raft leader {leader}"),
        || {
            let rows =
                db.sql("SELECT poller_name, master FROM poller_cluster ORDER BY poller_name");
            let masters: Vec<&str> = rows
                .iter()
                .filter(|r| r[1] == "1")
                .map(|r| r[0].as_str())
                .collect();
            if rows.len() == 3 && masters == [leader.as_str()] {
                Ok(())
            } else {
                Err(format!("(poller_name, master) rows {rows:?}"))
            }
        },
    );
    let reported = |name: &str| {
        scalar(
            &db,
            &format!(
                "SELECT UNIX_TIMESTAMP(last_report) FROM poller_cluster WHERE poller_name = '{name}'"
            ),
        )
        .and_then(|v| v.parse::<u64>().ok())
    };
    let first_report = reported(&leader).expect("leader's last_report");
    wait_until_every(
        WRITEBACK_DEADLINE,
        SQL_EVERY,
        "poller_cluster.last_report of the leader to be refreshed",
        || reported(&leader).filter(|&t| t > first_report),
    );

    phase(t0, "last_polled");
    // Write-back: devices.last_polled advances every interval.
    let t1 = wait_last_polled_after(&db, ids[0], started_ms / 1000 - 1, "first poll");
    let t2 = wait_last_polled_after(&db, ids[0], t1, "next poll");
    assert!(
        t2 - t1 <= 2 * u64::from(FREQUENCY),
        "last_polled moved {t1} → {t2}: more than two intervals apart"
    );
    let up = db.sql(&format!(
        "SELECT status, status_reason, sysName FROM devices WHERE device_id = {}",
        ids[0]
    ));
    assert_eq!(
        up,
        [["1", "", "moving-sim"]],
        "a polled device: status 1, status_reason '', sysName from the agent"
    );
    let details = db.sql(&format!(
        "SELECT uptime, sysObjectID, sysDescr, last_polled_timetaken, last_ping FROM devices \
         WHERE device_id = {}",
        ids[0]
    ));
    soft.check(
        details.len() == 1
            && details[0][0].parse::<u64>().is_ok_and(|u| u > 0)
            && details[0][1..].iter().all(|v| v != "NULL" && !v.is_empty()),
        format!(
            "written back: uptime > 0 and sysObjectID, sysDescr, last_polled_timetaken, \
             last_ping set; got {details:?}"
        ),
    );

    phase(t0, "port ids");
    // Every port RRD names a LibreNMS port of its device (checked softly: the kill below
    // must still run).
    let ports_of = |id: u32| -> BTreeSet<u64> {
        db.sql(&format!("SELECT port_id FROM ports WHERE device_id = {id}"))
            .into_iter()
            .filter_map(|r| r[0].parse().ok())
            .collect()
    };
    let checked = try_wait_seen(
        WRITEBACK_DEADLINE,
        SQL_EVERY,
        "every port-id<N>.rrd of lnms-dev0 and lnms-dev1 to be a ports.port_id of its device",
        || {
            let mut seen = Vec::new();
            let mut ok = true;
            for i in 0..2 {
                let (files, ports) = (port_id_files(&c, &hosts[i]), ports_of(ids[i]));
                ok &= !files.is_empty() && files.is_subset(&ports);
                seen.push(format!(
                    "{}: port-id files {files:?}, ports.port_id of device_id {} {ports:?}",
                    hosts[i], ids[i]
                ));
            }
            if ok { Ok(()) } else { Err(seen.join("; ")) }
        },
    );
    if let Err(e) = checked {
        soft.fail(e);
    }

    phase(t0, "kill the owner");
    // The owner of lnms-dev0 is killed: a survivor polls it and writes it back.
    let owner_id = c
        .devices()
        .into_iter()
        .find(|d| d.hostname == hosts[0])
        .and_then(|d| d.owner)
        .expect("lnms-dev0 has an owner");
    let owner = *c
        .ids(&formed)
        .get(&owner_id)
        .unwrap_or_else(|| panic!("owner {owner_id} of lnms-dev0 is not a node: {formed}"));
    let mut c = c;
    c.kill9(owner);
    let killed = now_s();
    let t3 = wait_last_polled_after(&db, ids[0], killed, "after the owner's SIGKILL");
    wait_last_polled_after(&db, ids[0], t3, "the poll after that");

    for i in 0..c.node_count() {
        soft.check(
            !c.node(i).full_logs().contains(db.password()),
            format!("the database password shows in the log of {}", c.name(i)),
        );
    }

    phase(t0, "new leader master");
    // If the killed node led, the new leader's poller_cluster row becomes the master.
    if owner == c.leader_index(&formed) {
        let new_leader = c.wait_same_leader(FORM_DEADLINE);
        let name = c.ids(&formed).get(&new_leader).map(|&i| c.name(i));
        let name = name.unwrap_or_else(|| panic!("new leader {new_leader} is not a node"));
        let since = now_s();
        let master = try_wait_seen(
            WRITEBACK_DEADLINE,
            SQL_EVERY,
            &format!("poller_cluster: the new leader {name} reported as master = 1"),
            || {
                let rows = db.sql(
                    "SELECT poller_name, master, UNIX_TIMESTAMP(last_report) FROM poller_cluster \
                     ORDER BY poller_name",
                );
                let ok = rows.iter().any(|r| {
                    r[0] == name && r[1] == "1" && r[2].parse::<u64>().is_ok_and(|t| t >= since)
                });
                if ok { Ok(()) } else { Err(format!("{rows:?}")) }
            },
        );
        if let Err(e) = master {
            soft.fail(e);
        }
    }
    soft.finish();
}

/// `(ifIndex, port_id, deleted)` of every `ports` row of a device.
fn port_rows(db: &MariaDb, device_id: u32) -> Vec<(u32, u64, bool)> {
    db.sql(&format!(
        "SELECT ifIndex, port_id, deleted FROM ports WHERE device_id = {device_id} \
         ORDER BY ifIndex"
    ))
    .into_iter()
    .filter_map(|r| Some((r[0].parse().ok()?, r[1].parse().ok()?, r[2] == "1")))
    .collect()
}

#[test]
fn interfaces_added_and_removed_on_the_agent_follow_in_ports() {
    let db = MariaDb::start();
    let link = LibrenmsLink::new(&db, SYNC_S);
    let recording = tempfile::NamedTempFile::new().expect("temp recording");
    std::fs::write(recording.path(), switch_snmprec("ifchange", &[1, 2, 3]))
        .expect("write recording");
    let sim = Snmpsim::start(&[SimDevice::file("ifchange", recording.path())]);
    let host = "lnms-ifchange";
    let id = insert_device(
        &db,
        &DeviceSpec::v2c(host, "127.0.0.1", sim.port(), "ifchange"),
    );
    let table = link.table();
    let c = Cluster::start(3, move |_, cfg| {
        base(cfg, &table);
        // Discovery runs at every second poll, so interface changes show within seconds.
        cfg.discovery_frequency = 2 * FREQUENCY;
    });
    c.wait_formed(&["follower", "follower", "leader"], FORM_DEADLINE);

    // Rows and files for ifIndex 1..3, each file named after its row.
    let deadline = Duration::from_secs(60);
    let first = wait_seen(
        deadline,
        SQL_EVERY,
        "ports rows and port-id files of ifIndex 1, 2, 3",
        || {
            let rows = port_rows(&db, id);
            let files = port_id_files(&c, host);
            let live: BTreeSet<u64> = rows.iter().filter(|r| !r.2).map(|r| r.1).collect();
            let indexes: Vec<u32> = rows.iter().map(|r| r.0).collect();
            if indexes == [1, 2, 3] && live.len() == 3 && files == live {
                Ok(rows)
            } else {
                Err(format!(
                    "rows (ifIndex, port_id, deleted) {rows:?}, files {files:?}"
                ))
            }
        },
    );
    let id_of =
        |rows: &[(u32, u64, bool)], ifindex: u32| rows.iter().find(|r| r.0 == ifindex).map(|r| r.1);

    // The agent loses ifIndex 2 and gains ifIndex 4.
    replace_recording(&sim, "ifchange", &switch_snmprec("ifchange", &[1, 3, 4]));
    let after = wait_seen(
        deadline,
        SQL_EVERY,
        "a ports row and file for ifIndex 4, ifIndex 2 marked deleted",
        || {
            let rows = port_rows(&db, id);
            let files = port_id_files(&c, host);
            let new = rows.iter().find(|r| r.0 == 4 && !r.2);
            let gone = rows.iter().any(|r| r.0 == 2 && r.2);
            match new {
                Some(new) if gone && files.contains(&new.1) => Ok(rows),
                _ => Err(format!(
                    "rows (ifIndex, port_id, deleted) {rows:?}, files {files:?}"
                )),
            }
        },
    );
    for ifindex in [1, 2, 3] {
        assert_eq!(
            id_of(&after, ifindex),
            id_of(&first, ifindex),
            "ifIndex {ifindex} kept its port id: before {first:?}, after {after:?}"
        );
    }
    let new_id = id_of(&after, 4).expect("ifIndex 4 has a row");
    assert!(
        first.iter().all(|r| r.1 != new_id),
        "ifIndex 4 got a port id of its own: {after:?}"
    );
    assert_eq!(after.len(), 4, "one row per interface ever seen: {after:?}");
}

#[test]
fn database_outage_loses_no_rrd_step_and_catches_up() {
    let t0 = std::time::Instant::now();
    let mut db = MariaDb::start();
    let agent = RecordingAgent::start(2, "outage");
    let link = LibrenmsLink::new(&db, SYNC_S);
    let ids: Vec<u32> = (0..2)
        .map(|i| {
            let spec = DeviceSpec::v2c(
                &format!("outage-dev{i}"),
                "127.0.0.1",
                agent.port(),
                &agent.community(i),
            );
            insert_device(&db, &spec)
        })
        .collect();
    phase(t0, "cluster start");
    let table = link.table();
    let c = Cluster::start(1, move |_, cfg| base(cfg, &table));
    c.wait_formed(&["leader"], FORM_DEADLINE);
    let communities: Vec<String> = (0..2).map(|i| agent.community(i)).collect();
    wait_polled(&agent, &communities, 0, "both devices polled");
    let ping = PathBuf::from("outage-dev0/ping-perf.rrd");
    wait_until_every(
        POLL_DEADLINE,
        CLI_EVERY,
        "outage-dev0/ping-perf.rrd",
        || c.rrd.rrd_files().contains(&ping).then_some(()),
    );

    phase(t0, "database stop");
    // The database goes away: polling goes on, status says so.
    db.stop();
    let stopped_ms = unix_ms();
    // Checked softly (reported at the end): the outage and the catch-up must still be seen.
    let mut soft = Soft::default();
    let link_down = try_wait_seen(
        SYNC_DEADLINE,
        CLI_EVERY,
        "`status --json` to show the LibreNMS link down (librenms.connected false, \
         librenms.last_error set)",
        || {
            let s = c.try_status(0).ok_or("no status")?;
            let l = &s["librenms"];
            let error = l["last_error"].as_str().unwrap_or_default();
            if l["connected"] == Value::Bool(false) && !error.is_empty() {
                Ok(())
            } else {
                Err(format!("status: {s}"))
            }
        },
    );
    if let Err(e) = link_down {
        soft.fail(e);
    }
    // ~30 s without the database (polls are the clock: 6 intervals of 5 s).
    wait_until_every(
        Duration::from_secs(60),
        CLI_EVERY,
        "six polls of each device without the database",
        || {
            communities
                .iter()
                .all(|cm| polls_since(&agent, cm, stopped_ms + SLACK_MS) >= 6)
                .then_some(())
        },
    );
    let (last, _) = c.rrd.rrd_lastupdate(&ping);
    assert!(
        last * 1000 >= stopped_ms + 4 * FREQUENCY_MS,
        "ping-perf.rrd was not updated during the outage (last update {last}, stop at {stopped_ms} ms)"
    );
    // No step of the outage is unknown.
    let (from, to) = (stopped_ms / 1000 + 2 * u64::from(FREQUENCY), last);
    let rows = c.rrd.rrd_fetch(&ping, "AVERAGE", from, to);
    let unknown: Vec<u64> = rows
        .iter()
        .filter(|(t, v)| *t <= to && v.iter().all(Option::is_none))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        !rows.is_empty() && unknown.is_empty(),
        "ping-perf.rrd has unknown steps during the outage at {unknown:?}: {rows:?}"
    );

    phase(t0, "database start again");
    // Back: the rows catch up.
    db.start_again();
    let back = now_s();
    for id in &ids {
        wait_last_polled_after(&db, *id, back, "after the database came back");
    }
    let link_up = try_wait_seen(
        SYNC_DEADLINE,
        CLI_EVERY,
        "`status --json` to show the LibreNMS link up again (librenms.connected true)",
        || {
            let s = c.try_status(0).ok_or("no status")?;
            if s["librenms"]["connected"] == Value::Bool(true) {
                Ok(())
            } else {
                Err(format!("status: {s}"))
            }
        },
    );
    if let Err(e) = link_up {
        soft.fail(e);
    }
    soft.finish();
}

#[test]
fn missing_privilege_is_named() {
    let db = MariaDb::start();
    let password = "ro-secret-5f1c9a";
    db.create_user("lnms_ro", password, &["SELECT ON librenms.devices"]);
    let link = LibrenmsLink::as_user(&db, "lnms_ro", password, SYNC_S);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |table: toml::Table| {
        let mut cfg = NodeConfig::new("n1", &format!("127.0.0.1:{}", free_tcp_port()));
        base(&mut cfg, &table);
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        cfg.to_toml(&dir.path().join("data"), listen)
    };
    // The password from `password_file`, then from the environment.
    let mut from_env = link.table();
    from_env.remove("password_file");
    let runs = [
        (
            "password_file",
            run_node_expecting_exit(&config(link.table()), Duration::from_secs(30)),
        ),
        (
            "RAFTPOLL_LIBRENMS_PASSWORD",
            run_node_expecting_exit_with_env(
                &config(from_env),
                Duration::from_secs(30),
                &[("RAFTPOLL_LIBRENMS_PASSWORD", password)],
            ),
        ),
    ];
    for (how, out) in runs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let all = format!("{stdout}\n{stderr}");
        eprintln!("node output (password from {how}):\n{all}");
        assert!(
            !out.status.success(),
            "password from {how}: the node exited successfully without a needed privilege:\n{all}"
        );
        assert!(
            !all.contains(password),
            "password from {how}: the database password shows in the node's output"
        );
        assert!(
            names_missing_privilege(&all),
            "password from {how}: the error should name a missing privilege and its table (user \
             lnms_ro has only SELECT on librenms.devices):\n{all}"
        );
    }
}

/// Whether some line of `output` names a (privilege, table) pair that user `lnms_ro` lacks
/// (it has SELECT on devices only).
fn names_missing_privilege(output: &str) -> bool {
    let privileges = ["SELECT", "INSERT", "UPDATE", "DELETE"];
    let tables = [
        "devices",
        "ports",
        "device_graphs",
        "device_outages",
        "poller_cluster",
    ];
    output.lines().any(|line| {
        let words: Vec<&str> = line
            .split(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
            .collect();
        line.to_lowercase().contains("privilege")
            && privileges.iter().any(|p| {
                tables.iter().any(|t| {
                    (*p, *t) != ("SELECT", "devices") && words.contains(p) && words.contains(t)
                })
            })
    })
}

#[test]
fn icmp_and_snmp_down_reasons() {
    assert!(
        testbed::netns::is_root(),
        "icmp_and_snmp_down_reasons creates a network namespace and needs root (CI runs as root)"
    );
    let silent = SilentHost::create();
    let db = MariaDb::start();
    let agent = RecordingAgent::start(1, "reason");
    let link = LibrenmsLink::new(&db, SYNC_S);
    let dead_port = free_udp_port();
    let specs = [
        DeviceSpec::v2c("reason-up", "127.0.0.1", agent.port(), &agent.community(0)),
        DeviceSpec::v2c("reason-nosnmp", "127.0.0.1", dead_port, "reason-none"),
        DeviceSpec::v2c(
            "reason-noping",
            &silent.addr().to_string(),
            161,
            "reason-none",
        ),
    ];
    let ids: BTreeMap<&str, u32> = specs
        .iter()
        .map(|s| (s.hostname.as_str(), insert_device(&db, s)))
        .collect();
    let table = link.table();
    let c = Cluster::start(1, move |_, cfg| {
        base(cfg, &table);
        // ICMP and SNMP to the namespace leave from the veth's address.
        cfg.source_ip = None;
    });
    c.wait_formed(&["leader"], FORM_DEADLINE);

    // raftpoll's own view: up, down by SNMP timeout, down by ICMP.
    let show = |host: &str| -> Option<Value> {
        serde_json::from_str(&c.try_cli(0, &["device", "show", host, "--json"])?).ok()
    };
    let last = wait_seen(
        POLL_DEADLINE,
        CLI_EVERY,
        "reason-up up, reason-nosnmp and reason-noping down (`device show`)",
        || {
            let last: BTreeMap<String, Option<Value>> = specs
                .iter()
                .map(|s| (s.hostname.clone(), show(&s.hostname)))
                .collect();
            let status = |h: &str| last[h].as_ref().and_then(|d| d["status"].as_str());
            if status("reason-up") == Some("up")
                && status("reason-nosnmp") == Some("down")
                && status("reason-noping") == Some("down")
            {
                Ok(last)
            } else {
                Err(format!("{last:?}"))
            }
        },
    );
    let reason = |h: &str| {
        last[h].as_ref().expect("shown")["reason"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
    };
    assert!(
        reason("reason-nosnmp").contains("timeout")
            || reason("reason-nosnmp").contains("timed out"),
        "a device answering ping but not SNMP should be down by SNMP timeout: {:?}",
        last["reason-nosnmp"]
    );
    assert!(
        reason("reason-noping").contains("icmp"),
        "a device answering no ping should be down with reason icmp: {:?}",
        last["reason-noping"]
    );
    assert!(
        c.rrd
            .rrd_files()
            .contains(&PathBuf::from("reason-up/ping-perf.rrd")),
        "no ping-perf.rrd for reason-up: {:?}",
        c.rrd.rrd_files()
    );

    // LibreNMS's view (write-back).
    wait_seen(
        WRITEBACK_DEADLINE,
        SQL_EVERY,
        "devices.status/status_reason/last_ping written back: up 1 '', nosnmp 0 'snmp', \
         noping 0 'icmp'",
        || {
            let rows =
                db.sql("SELECT hostname, status, status_reason FROM devices ORDER BY hostname");
            let want = [
                ["reason-noping", "0", "icmp"],
                ["reason-nosnmp", "0", "snmp"],
                ["reason-up", "1", ""],
            ];
            // Every device was pinged, the up one polled.
            let pinged = scalar(
                &db,
                "SELECT COUNT(*) FROM devices WHERE last_ping IS NOT NULL",
            );
            let polled = last_polled(&db, ids["reason-up"]).is_some();
            if rows == want && pinged.as_deref() == Some("3") && polled {
                Ok(())
            } else {
                Err(format!(
                    "(hostname, status, status_reason) {rows:?}; rows with last_ping: {pinged:?}; \
                     reason-up last_polled set: {polled}"
                ))
            }
        },
    );

    // Graphs: LibreNMS shows a graph only when its device_graphs row exists.
    let up_id = ids["reason-up"];
    wait_seen(
        WRITEBACK_DEADLINE,
        SQL_EVERY,
        "device_graphs rows for reason-up",
        || {
            let graphs = db.sql(&format!(
                "SELECT graph FROM device_graphs WHERE device_id = {up_id} ORDER BY graph"
            ));
            if graphs.is_empty() {
                Err("no rows".into())
            } else {
                Ok(())
            }
        },
    );

    // An outage: the row is pointed at the dead port (up → down opens a device_outages row),
    // then back at the agent (down → up closes it).
    let outage_rows = || {
        db.sql(&format!(
            "SELECT going_down, IFNULL(up_again, 'open') FROM device_outages \
             WHERE device_id = {up_id} ORDER BY going_down"
        ))
    };
    assert!(
        outage_rows().is_empty(),
        "reason-up has outages before any: {:?}",
        outage_rows()
    );
    db.exec(&format!(
        "UPDATE devices SET port = {dead_port} WHERE device_id = {up_id}"
    ));
    let went_down = now_s();
    wait_seen(
        POLL_DEADLINE,
        SQL_EVERY,
        "reason-up down (status 0, 'snmp') with an open device_outages row",
        || {
            let (dev, rows) = (
                db.sql(&format!(
                    "SELECT status, status_reason FROM devices WHERE device_id = {up_id}"
                )),
                outage_rows(),
            );
            let open = rows.len() == 1
                && rows[0][1] == "open"
                && rows[0][0].parse::<u64>().is_ok_and(|t| t + 2 >= went_down);
            if dev == [["0", "snmp"]] && open {
                Ok(())
            } else {
                Err(format!("devices {dev:?}, outages {rows:?}"))
            }
        },
    );
    db.exec(&format!(
        "UPDATE devices SET port = {} WHERE device_id = {up_id}",
        agent.port()
    ));
    wait_seen(
        POLL_DEADLINE,
        SQL_EVERY,
        "reason-up up again (status 1, '') with its device_outages row closed",
        || {
            let (dev, rows) = (
                db.sql(&format!(
                    "SELECT status, status_reason FROM devices WHERE device_id = {up_id}"
                )),
                outage_rows(),
            );
            let closed = rows.len() == 1
                && rows[0][1]
                    .parse::<u64>()
                    .is_ok_and(|up| rows[0][0].parse::<u64>().is_ok_and(|down| up >= down));
            if dev == [["1", ""]] && closed {
                Ok(())
            } else {
                Err(format!("devices {dev:?}, outages {rows:?}"))
            }
        },
    );
}
