//! Prometheus metrics end to end (issue 11): a real 3-node cluster polling a real snmpd and
//! writing to a real rrdcached, every node serving `/metrics` on `metrics_listen`. Each scrape
//! goes over HTTP from 127.0.0.1, passes `promtool check metrics`, and the values move:
//! polls and SNMP requests counted, exactly one leader, applied index growing, RRD updates sent.

use raftpoll_testbed as testbed;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use testbed::cluster::Cluster;
use testbed::raftpoll::run_node_expecting_exit;
use testbed::snmpd::SNMPD_COMMUNITY;
use testbed::{NodeConfig, Snmpd, free_tcp_port, wait_until_every};

const DEADLINE: Duration = Duration::from_secs(90);
const CHECK_EVERY: Duration = Duration::from_millis(500);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 GET of `/metrics`; (status line, content type, body).
fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).expect("connect to metrics");
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .expect("timeout");
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head.lines().next().unwrap_or_default().to_string();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, content_type, body) = http_get(addr, "/metrics", None);
    assert!(status.contains("200"), "GET /metrics: {status}\n{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    body
}

/// `promtool check metrics` on `text`: no lint problem, no parse error.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool exit");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Samples of a scrape: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {s:#?}"))
}

/// Sum of every sample of `name` (all label sets).
fn sum(s: &BTreeMap<String, f64>, name: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn three_nodes_serve_metrics_that_move() {
    let agent = Snmpd::start();
    let ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
    let metrics_ports = ports.clone();
    let cluster = Cluster::start(3, move |i, cfg: &mut NodeConfig| {
        cfg.extra.insert(
            "metrics_listen".into(),
            toml::Value::String(format!("127.0.0.1:{}", metrics_ports[i])),
        );
    });
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    cluster.wait_same_leader(DEADLINE);

    // Before any device: every scrape is valid, and exactly one node leads.
    let applied_before: Vec<f64> = addrs
        .iter()
        .map(|a| {
            let text = scrape(*a);
            promtool_check(&text);
            value(&samples(&text), "raftpoll_raft_applied_index")
        })
        .collect();

    let port = agent.port().to_string();
    cluster.node(0).cli_ok(&[
        "device",
        "add",
        "agent1",
        "--ip",
        "127.0.0.1",
        "--port",
        &port,
        "--community",
        SNMPD_COMMUNITY,
    ]);

    // The node that owns the device polls it: polls, SNMP requests and bytes, module times,
    // schedule lag, claims and RRD updates all move there.
    let (owner, s) = wait_until_every(DEADLINE, CHECK_EVERY, "an up poll counted", || {
        addrs.iter().enumerate().find_map(|(i, a)| {
            let s = samples(&scrape(*a));
            let polled = value(&s, "raftpoll_polls_total{result=\"up\"}") >= 1.0;
            let sent = value(&s, "raftpoll_rrd_updates_sent_total") > 0.0;
            // The status comes from the poll report (in the log within report_interval_ms).
            let up = value(&s, "raftpoll_devices{status=\"up\"}") == 1.0;
            (polled && sent && up).then_some((i, s))
        })
    });
    assert!(value(&s, "raftpoll_snmp_requests_total") > 0.0);
    assert!(value(&s, "raftpoll_snmp_sent_bytes_total") > 0.0);
    assert!(value(&s, "raftpoll_snmp_received_bytes_total") > 0.0);
    assert!(value(&s, "raftpoll_poll_duration_seconds_count") >= 1.0);
    assert!(
        value(
            &s,
            "raftpoll_poll_module_duration_seconds_count{module=\"ports\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &s,
            "raftpoll_poll_module_duration_seconds_count{module=\"discovery\"}"
        ) >= 1.0
    );
    assert!(value(&s, "raftpoll_poll_schedule_lag_seconds_count") >= 1.0);
    assert!(value(&s, "raftpoll_claim_duration_seconds_count") >= 1.0);
    assert_eq!(value(&s, "raftpoll_rrdcached_connected"), 1.0);
    assert_eq!(value(&s, "raftpoll_fenced"), 0.0);
    // snmpd answers at once: nothing timed out, nothing was resent.
    assert_eq!(value(&s, "raftpoll_snmp_timeouts_total"), 0.0);
    assert_eq!(value(&s, "raftpoll_snmp_retries_total"), 0.0);

    // Raft: exactly one leader, which sees both others replicating and alive; every node
    // applied the device's entries.
    let scrapes: Vec<BTreeMap<String, f64>> = addrs
        .iter()
        .map(|a| {
            let text = scrape(*a);
            promtool_check(&text);
            samples(&text)
        })
        .collect();
    let leaders: Vec<usize> = (0..3)
        .filter(|&i| value(&scrapes[i], "raftpoll_raft_is_leader") == 1.0)
        .collect();
    assert_eq!(leaders.len(), 1, "is_leader on nodes {leaders:?}");
    let leader = &scrapes[leaders[0]];
    assert_eq!(value(leader, "raftpoll_members"), 3.0);
    assert_eq!(value(leader, "raftpoll_members_alive"), 3.0);
    let lag_series = leader
        .keys()
        .filter(|k| k.starts_with("raftpoll_raft_replication_lag_entries{follower="))
        .count();
    assert_eq!(lag_series, 2, "{leader:#?}");
    let term = value(leader, "raftpoll_raft_term");
    for (i, s) in scrapes.iter().enumerate() {
        assert_eq!(value(s, "raftpoll_raft_term"), term, "node {i}");
        assert!(
            value(s, "raftpoll_raft_applied_index") > applied_before[i],
            "node {i}: applied index did not grow from {}",
            applied_before[i]
        );
        assert!(
            value(s, "raftpoll_raft_last_log_index") >= value(s, "raftpoll_raft_applied_index")
        );
        assert_eq!(sum(s, "raftpoll_cluster_devices"), 1.0, "node {i}");
    }
    // Devices counted once, on their owner.
    let owned: f64 = scrapes.iter().map(|s| sum(s, "raftpoll_devices")).sum();
    assert_eq!(owned, 1.0);
    assert_eq!(sum(&scrapes[owner], "raftpoll_devices"), 1.0);

    // Polls keep being counted (frequency 10 s): the counter moves between scrapes.
    let first = value(&s, "raftpoll_polls_total{result=\"up\"}");
    wait_until_every(DEADLINE, CHECK_EVERY, "a second up poll", || {
        let s = samples(&scrape(addrs[owner]));
        (value(&s, "raftpoll_polls_total{result=\"up\"}") > first).then_some(())
    });

    // A device whose agent never answers: its requests time out and are resent
    // (`retries = 1` in the test bed), and its polls are counted as timeouts.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a silent UDP port");
    let silent_port = silent
        .local_addr()
        .expect("silent address")
        .port()
        .to_string();
    cluster.node(0).cli_ok(&[
        "device",
        "add",
        "silent1",
        "--ip",
        "127.0.0.1",
        "--port",
        &silent_port,
        "--community",
        SNMPD_COMMUNITY,
    ]);
    let s = wait_until_every(DEADLINE, CHECK_EVERY, "a timed-out poll counted", || {
        addrs.iter().find_map(|a| {
            let s = samples(&scrape(*a));
            let timed_out = value(&s, "raftpoll_polls_total{result=\"timeout\"}") >= 1.0;
            let down = value(&s, "raftpoll_devices{status=\"down\"}") == 1.0;
            (timed_out && down).then_some(s)
        })
    });
    // The first GET is sent twice (one retry), and both transmissions time out.
    assert!(value(&s, "raftpoll_snmp_timeouts_total") >= 2.0, "{s:#?}");
    assert!(value(&s, "raftpoll_snmp_retries_total") >= 1.0, "{s:#?}");
    assert!(value(&s, "raftpoll_snmp_timeouts_total") >= value(&s, "raftpoll_snmp_retries_total"));
    drop(silent);

    // Prometheus asks for OpenMetrics and gets it; other paths are 404.
    let (status, content_type, body) = http_get(
        addrs[owner],
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(status.contains("200"), "{status}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE raftpoll_polls counter\n"), "{body}");
    let (status, _, _) = http_get(addrs[owner], "/", None);
    assert!(status.contains("404"), "{status}");

    // No credential in any scrape.
    for a in &addrs {
        let text = scrape(*a);
        assert!(!text.contains(SNMPD_COMMUNITY), "community in metrics");
    }
}

#[test]
fn metrics_listen_in_use_is_refused_naming_the_key() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let taken_addr = taken.local_addr().expect("held address");
    let data = tempfile::tempdir().expect("temp dir");
    let mut cfg = NodeConfig::new("metrics-busy", "127.0.0.1:1");
    cfg.extra.insert(
        "metrics_listen".into(),
        toml::Value::String(taken_addr.to_string()),
    );
    let listen = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let out = run_node_expecting_exit(&cfg.to_toml(data.path(), listen), DEADLINE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node started: {stderr}");
    assert!(
        stderr.contains("metrics_listen") && stderr.contains(&taken_addr.to_string()),
        "error does not name the key and address: {stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    drop(taken);
}
