//! TLS end to end (issue 11): real certificates (a CA, node certificates for 127.0.0.1, a
//! foreign CA, an expired certificate, a key of another certificate) and real node processes.
//! A mutual-TLS cluster forms, polls and answers the CLI; clients and nodes the CA did not
//! vouch for are refused with clear errors and never hang; bad files stop a node at start,
//! named; SIGHUP swaps rotated certificates in without a restart.

use raftpoll_testbed as testbed;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use testbed::cluster::{CLI_EVERY, Cluster, RecordingAgent};
use testbed::raftpoll::{NodeOptions, run_node_expecting_exit};
use testbed::tls::mismatched;
use testbed::{NodeConfig, RaftpollNode, TestCa, TlsFiles, free_tcp_port, wait_until_every};

const FORM_DEADLINE: Duration = Duration::from_secs(90);
const POLL_DEADLINE: Duration = Duration::from_secs(30);
/// A refused client must get its answer within this: the CLI's connect timeout is 3 s, a
/// refusal is immediate; a hang would show as the CLI's own 30 s request timeout.
const FAIL_FAST: Duration = Duration::from_secs(5);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a CLI call expected to fail; returns its stderr, checking it failed fast.
fn refused(what: &str, run: impl FnOnce() -> Output) -> String {
    let start = Instant::now();
    let out = run();
    let took = start.elapsed();
    assert!(
        !out.status.success(),
        "{what}: the CLI succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(took < FAIL_FAST, "{what}: took {took:?}: {}", stderr(&out));
    eprintln!("{what}: refused in {took:?}: {}", stderr(&out).trim());
    stderr(&out)
}

/// Whether `status` succeeds with the client files `client`.
fn works(node: &RaftpollNode, client: &[String]) -> bool {
    node.cli_without_tls(&args(&["status"], client))
        .status
        .success()
}

fn args<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    let mut all = base.to_vec();
    all.extend(extra.iter().map(String::as_str));
    all
}

#[test]
fn mutual_tls_cluster_polls_and_refuses_strangers() {
    let started = Instant::now();
    let certs = tempfile::tempdir().expect("cert dir");
    let mut ca = TestCa::new(certs.path(), "cluster");
    let node_files: Vec<TlsFiles> = (1..=3)
        .map(|i| {
            let cert = ca.issue(&format!("n{i}"));
            TlsFiles::new(&ca, &cert, true)
        })
        .collect();
    let agent = RecordingAgent::start(6, "tls");
    let files = node_files.clone();
    let c = Cluster::start(3, move |i, cfg: &mut NodeConfig| {
        cfg.frequency = 3;
        cfg.tls = Some(files[i].clone());
    });
    c.wait_formed(&["follower", "follower", "leader"], FORM_DEADLINE);
    eprintln!("3-node mTLS cluster formed after {:?}", started.elapsed());

    // Writes through every node: followers forward to the leader over mutual TLS.
    for i in 0..agent.count() {
        let host = format!("dev{i}");
        c.add_device(i % 3, &host, agent.port(), &agent.community(i), 0);
    }
    let communities: Vec<String> = (0..agent.count()).map(|i| agent.community(i)).collect();
    wait_until_every(POLL_DEADLINE, CLI_EVERY, "every device polled", || {
        let polls = agent.polls(1000);
        communities
            .iter()
            .all(|c| polls.get(c).is_some_and(|p| !p.is_empty()))
            .then_some(())
    });
    let status = c.node(1).cli_json(&["status", "--json"]);
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    let total: u64 = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["devices"].as_u64())
        .sum();
    assert_eq!(total, 6, "every device owned: {status}");
    eprintln!("devices polled over mTLS after {:?}", started.elapsed());

    let node = c.node(0);
    // A plaintext client: the node speaks only TLS.
    let err = refused("plaintext CLI", || node.cli_without_tls(&["status"]));
    assert!(
        err.contains("may require TLS") && err.contains("--ca"),
        "{err}"
    );

    // A client that trusts another CA: the node's certificate is not trusted.
    let mut foreign = TestCa::new(certs.path(), "foreign");
    let foreign_cert = foreign.issue("intruder");
    let wrong_ca = vec![
        "--ca".to_string(),
        foreign.cert_path().display().to_string(),
    ];
    let err = refused("CLI with a foreign CA", || {
        node.cli_without_tls(&args(&["status"], &wrong_ca))
    });
    assert!(
        err.contains("not trusted") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // The right CA but no client certificate, on a node requiring one.
    let ca_only = vec!["--ca".to_string(), ca.cert_path().display().to_string()];
    let err = refused("CLI without a client certificate", || {
        node.cli_without_tls(&args(&["status"], &ca_only))
    });
    assert!(err.contains("requires a client certificate"), "{err}");

    // A client certificate from another CA, and an expired one from the right CA.
    let stranger = TlsFiles::new(&ca, &foreign_cert, true).cli_args();
    let err = refused("CLI with a foreign client certificate", || {
        node.cli_without_tls(&args(&["status"], &stranger))
    });
    assert!(err.contains("refused this client's certificate"), "{err}");
    let old = ca.issue_expired("old-client");
    let expired = TlsFiles::new(&ca, &old, true).cli_args();
    let err = refused("CLI with an expired client certificate", || {
        node.cli_without_tls(&args(&["status"], &expired))
    });
    assert!(
        err.contains("refused this client's certificate") && err.contains("CertificateExpired"),
        "{err}"
    );
    // --cert without --ca is a usage error, said before connecting.
    let cert_only = stranger[2..].to_vec();
    let err = refused("CLI with --cert but no --ca", || {
        node.cli_without_tls(&args(&["status"], &cert_only))
    });
    assert!(err.contains("need --ca"), "{err}");

    // A node with a foreign CA's certificate (and trusting only that CA) cannot join.
    let mut cfg = c.node(0).config().clone();
    cfg.node_name = "intruder".into();
    cfg.bootstrap = false;
    cfg.listen = None;
    cfg.seeds = (0..3).map(|i| c.node(i).addr()).collect();
    cfg.tls = Some(TlsFiles::new(&foreign, &foreign_cert, true));
    let intruder = RaftpollNode::start_with(cfg, NodeOptions::new().no_wait());
    let why = wait_until_every(
        Duration::from_secs(30),
        CLI_EVERY,
        "the intruder to report its refusal",
        || {
            let logs = intruder.full_logs();
            logs.lines()
                .find(|l| l.contains("no seed answered") && l.contains("certificate"))
                .map(str::to_string)
        },
    );
    eprintln!("intruder: {why}");
    let status = c.node(2).cli_json(&["status", "--json"]);
    let names: Vec<&str> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "the intruder is not a member: {status}");
    assert!(!names.contains(&"intruder"), "{status}");
    // The cluster's side logs the refused handshakes, with the peer's address.
    wait_until_every(
        Duration::from_secs(10),
        CLI_EVERY,
        "a refused handshake in the cluster's logs",
        || {
            (0..3)
                .any(|i| c.node(i).full_logs().contains("TLS handshake refused"))
                .then_some(())
        },
    );
    eprintln!("test done after {:?}", started.elapsed());
}

/// The config text of a one-node cluster on a free port with `tls` (and `advertise`).
fn single_node_config(dir: &Path, tls: &TlsFiles, advertise: Option<&str>) -> String {
    let mut cfg = NodeConfig::new("solo", "127.0.0.1:1");
    cfg.tls = Some(tls.clone());
    cfg.advertise = advertise.map(str::to_string);
    let listen = format!("127.0.0.1:{}", free_tcp_port())
        .parse()
        .expect("listen address");
    cfg.to_toml(&dir.join("data"), listen)
}

#[test]
fn unusable_certificates_stop_the_node_at_start() {
    let certs = tempfile::tempdir().expect("cert dir");
    let mut ca = TestCa::new(certs.path(), "cluster");
    let mut foreign = TestCa::new(certs.path(), "foreign");
    let good = ca.issue("n1");
    let other = ca.issue("n2");
    let expired = ca.issue_expired("n3");
    let strange = foreign.issue("n4");

    let mut cases: Vec<(&str, TlsFiles, Option<&str>, Vec<String>)> = vec![
        (
            "key of another certificate",
            TlsFiles::new(&ca, &mismatched(&good, &other), false),
            None,
            vec![
                format!("key file {}", other.key.display()),
                "does not match".into(),
                good.cert.display().to_string(),
            ],
        ),
        (
            "expired certificate",
            TlsFiles::new(&ca, &expired, false),
            None,
            vec![expired.cert.display().to_string(), "expired".into()],
        ),
        (
            "certificate of another CA",
            TlsFiles::new(&ca, &strange, true),
            None,
            vec![
                strange.cert.display().to_string(),
                "not signed by the CA".into(),
            ],
        ),
        (
            "missing CA file",
            TlsFiles {
                ca: certs.path().join("no-such-ca.pem"),
                ..TlsFiles::new(&ca, &good, false)
            },
            None,
            vec![format!(
                "CA file {}",
                certs.path().join("no-such-ca.pem").display()
            )],
        ),
    ];
    cases.push((
        "certificate not valid for the advertised name",
        TlsFiles::new(&ca, &good, false),
        Some("node9.example.net:7071"),
        vec![
            good.cert.display().to_string(),
            "not valid for name \"node9.example.net\"".into(),
            "advertise".into(),
        ],
    ));
    for (what, tls, advertise, expected) in cases {
        let dir = tempfile::tempdir().expect("node dir");
        let start = Instant::now();
        let out = run_node_expecting_exit(
            &single_node_config(dir.path(), &tls, advertise),
            Duration::from_secs(20),
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: node started: {err}");
        for part in &expected {
            assert!(
                err.contains(part.as_str()),
                "{what}: '{part}' not in: {err}"
            );
        }
        // The key's content never reaches the log.
        let key_pem = std::fs::read_to_string(&tls.key).expect("read key");
        let key_body = key_pem.lines().nth(1).expect("key body");
        assert!(!err.contains(key_body), "{what}: key material in the log");
        eprintln!("{what}: refused in {:?}: {}", start.elapsed(), err.trim());
        assert!(
            !dir.path().join("data").exists(),
            "{what}: storage opened before the TLS check"
        );
    }
}

#[test]
fn sighup_swaps_in_rotated_certificates() {
    let certs = tempfile::tempdir().expect("cert dir");
    let mut old_ca = TestCa::new(certs.path(), "old");
    let mut new_ca = TestCa::new(certs.path(), "new");
    let old_cert = old_ca.issue("solo");
    let new_cert = new_ca.issue("solo");
    // The node reads fixed paths; rotation rewrites their contents.
    let live = TlsFiles {
        ca: certs.path().join("live-ca.pem"),
        cert: certs.path().join("live.pem"),
        key: certs.path().join("live.key"),
        mutual: true,
    };
    let install = |ca: &Path, cert: &Path, key: &Path| {
        std::fs::copy(ca, &live.ca).expect("copy CA");
        std::fs::copy(cert, &live.cert).expect("copy cert");
        std::fs::copy(key, &live.key).expect("copy key");
    };
    install(old_ca.cert_path(), &old_cert.cert, &old_cert.key);

    let mut cfg = NodeConfig::new("solo", "127.0.0.1:1");
    cfg.tls = Some(live.clone());
    let mut node = RaftpollNode::start(cfg);
    node.wait_leader(FORM_DEADLINE);
    let old_client = TlsFiles::new(&old_ca, &old_cert, true).cli_args();
    let new_client = TlsFiles::new(&new_ca, &new_cert, true).cli_args();
    assert!(works(&node, &old_client), "old client before rotation");
    assert!(!works(&node, &new_client), "new client before rotation");

    // Rotate to the new CA and certificate, then SIGHUP: new connections use them.
    install(new_ca.cert_path(), &new_cert.cert, &new_cert.key);
    let hup = Instant::now();
    node.signal("HUP");
    wait_until_every(
        Duration::from_secs(10),
        CLI_EVERY,
        "the new certificate in use",
        || works(&node, &new_client).then_some(()),
    );
    eprintln!(
        "rotated certificate in use {:?} after SIGHUP",
        hup.elapsed()
    );
    assert!(node.is_running(), "SIGHUP stopped the node");
    let err = refused("old-CA client after rotation", || {
        node.cli_without_tls(&args(&["status"], &old_client))
    });
    assert!(err.contains("not trusted"), "{err}");

    // A broken rotation (a key of another certificate) is refused, named; the certificates
    // in use stay.
    let other = new_ca.issue("other");
    std::fs::copy(&other.key, &live.key).expect("copy wrong key");
    node.signal("HUP");
    let line = wait_until_every(
        Duration::from_secs(10),
        CLI_EVERY,
        "the refused reload",
        || {
            node.full_logs()
                .lines()
                .find(|l| l.contains("TLS reload refused"))
                .map(str::to_string)
        },
    );
    assert!(
        line.contains(&live.key.display().to_string()) && line.contains("does not match"),
        "{line}"
    );
    assert!(
        works(&node, &new_client),
        "the running certificates stay after a refused reload"
    );
}

#[test]
fn tls_client_against_a_plaintext_node() {
    let certs = tempfile::tempdir().expect("cert dir");
    let ca = TestCa::new(certs.path(), "cluster");
    let mut node = RaftpollNode::start(NodeConfig::new("plain", "127.0.0.1:1"));
    node.wait_leader(FORM_DEADLINE);
    let with_ca = vec!["--ca".to_string(), ca.cert_path().display().to_string()];
    let err = refused("TLS CLI against a plaintext node", || {
        node.cli_without_tls(&args(&["status"], &with_ca))
    });
    assert!(err.contains("may not use TLS"), "{err}");

    // SIGHUP without [tls] reloads nothing and stops nothing.
    node.signal("HUP");
    wait_until_every(
        Duration::from_secs(10),
        CLI_EVERY,
        "the SIGHUP log line",
        || {
            node.full_logs()
                .contains("SIGHUP: no [tls] section")
                .then_some(())
        },
    );
    assert!(node.is_running(), "SIGHUP stopped the node");
    assert!(node.cli(&["status"]).status.success(), "node still serving");
}
