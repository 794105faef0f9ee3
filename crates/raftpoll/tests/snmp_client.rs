//! The SNMP engine and the poller modules against a real net-snmp `snmpd` on 127.0.0.1.
//!
//! Each test starts its own agent on a free port with a temp config (v2c
//! community, v3 users for every supported protocol family) and kills it
//! on drop. Readiness is polled with a deadline, never slept for.

use raftpoll::model::types::{Inventory, Port, PortKey, StorageKind};
use raftpoll::poller::modules::{self, defs};
use raftpoll::rrd::layout::RrdValue;
use raftpoll::secret::Secret;
use raftpoll::snmp::credentials::{AuthProtocol, PrivProtocol, SnmpCredentials, UsmCredentials};
use raftpoll::snmp::{
    AsyncSnmpClient, Oid, SnmpClient, SnmpClientConfig, SnmpError, SnmpTarget, SnmpValue,
};
use raftpoll_testbed::snmpd::{Snmpd, SnmpdUser};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";
const IF_TABLE: &str = "1.3.6.1.2.1.2.2";
const IF_DESCR: &str = "1.3.6.1.2.1.2.2.1.2";

/// v3 users configured in snmpd, one per supported protocol family.
const USERS: &[SnmpdUser] = &[
    user("bob", "SHA", "authpass123", Some(("AES", "privpass123"))),
    user(
        "carol",
        "SHA-512",
        "carolauth123",
        Some(("AES-256", "carolpriv123")),
    ),
    user("dave", "MD5", "daveauth123", Some(("DES", "davepriv123"))),
    user("erin", "SHA-256", "erinauth123", None),
];

const fn user(
    name: &'static str,
    auth: &'static str,
    auth_pass: &'static str,
    privacy: Option<(&'static str, &'static str)>,
) -> SnmpdUser {
    SnmpdUser {
        name,
        auth,
        auth_pass,
        privacy,
    }
}

/// A real snmpd with [`USERS`] and a known sysName.
fn start_snmpd() -> Snmpd {
    Snmpd::start_with(USERS, "sysName raftpoll-test-agent\n")
}

fn oid(s: &str) -> Oid {
    s.parse().expect("test OID")
}

fn v2c(community: &str) -> SnmpCredentials {
    SnmpCredentials::V2c {
        community: Secret::new(community),
    }
}

fn v3(user: &str) -> SnmpCredentials {
    let configured = USERS
        .iter()
        .find(|u| u.name == user)
        .expect("configured user");
    let auth = match configured.auth {
        "MD5" => AuthProtocol::Md5,
        "SHA" => AuthProtocol::Sha1,
        "SHA-256" => AuthProtocol::Sha256,
        _ => AuthProtocol::Sha512,
    };
    let privacy = configured.privacy.map(|(proto, pass)| {
        let proto = match proto {
            "DES" => PrivProtocol::Des,
            "AES" => PrivProtocol::Aes128,
            _ => PrivProtocol::Aes256,
        };
        (proto, Secret::new(pass))
    });
    SnmpCredentials::V3(Box::new(UsmCredentials {
        user: user.into(),
        auth: Some((auth, Secret::new(configured.auth_pass))),
        privacy,
    }))
}

async fn client(timeout_ms: u64, retries: u32) -> AsyncSnmpClient {
    AsyncSnmpClient::new(SnmpClientConfig {
        source_ip: None,
        timeout: Duration::from_millis(timeout_ms),
        retries,
        max_in_flight: 64,
        per_device_in_flight: 4,
    })
    .await
    .expect("bind SNMP socket")
}

#[tokio::test]
async fn v2c_get_sysdescr_and_uptime() {
    let snmpd = start_snmpd();
    let client = client(1000, 1).await;
    let target = SnmpTarget::new(snmpd.socket_addr(), v2c("public"));
    let got = client
        .get(
            &target,
            &[oid(SYS_DESCR), oid(SYS_UPTIME), oid("1.3.6.1.2.1.1.99.0")],
        )
        .await
        .expect("v2c GET");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].oid, oid(SYS_DESCR));
    let descr = got[0].value.as_string().expect("sysDescr is text");
    assert!(!descr.is_empty());
    assert!(
        matches!(got[1].value, SnmpValue::TimeTicks(_)),
        "{:?}",
        got[1].value
    );
    assert!(got[2].value.is_exception(), "{:?}", got[2].value);
}

#[tokio::test]
async fn v2c_walk_of_iftable_is_ordered_and_in_subtree() {
    let snmpd = start_snmpd();
    let client = client(1000, 1).await;
    let target = SnmpTarget::new(snmpd.socket_addr(), v2c("public"));
    let descrs = client
        .walk(&target, &oid(IF_DESCR))
        .await
        .expect("walk ifDescr");
    assert!(
        descrs
            .iter()
            .any(|vb| vb.value.as_string().as_deref() == Some("lo")),
        "{descrs:?}"
    );
    let table = client
        .walk(&target, &oid(IF_TABLE))
        .await
        .expect("walk ifTable");
    // At least 20 columns for every interface, far more than one GETBULK answer.
    assert!(table.len() >= 20 * descrs.len(), "{} varbinds", table.len());
    assert!(table.iter().all(|vb| vb.oid.starts_with(&oid(IF_TABLE))));
    assert!(
        table.windows(2).all(|w| w[0].oid < w[1].oid),
        "strictly increasing"
    );
    let absent = client
        .walk(&target, &oid("1.3.6.1.4.1.99999"))
        .await
        .expect("empty walk");
    assert!(absent.is_empty());
}

#[tokio::test]
async fn v1_get_with_a_missing_object_and_v1_walk() {
    let snmpd = start_snmpd();
    let client = client(1000, 1).await;
    let target = SnmpTarget::new(
        snmpd.socket_addr(),
        SnmpCredentials::V1 {
            community: Secret::new("public"),
        },
    );
    let got = client
        .get(
            &target,
            &[oid(SYS_UPTIME), oid("1.3.6.1.2.1.1.99.0"), oid(SYS_DESCR)],
        )
        .await
        .expect("v1 GET with noSuchName");
    assert!(matches!(got[0].value, SnmpValue::TimeTicks(_)), "{got:?}");
    assert_eq!(got[1].value, SnmpValue::NoSuchInstance);
    assert!(got[2].value.as_string().is_some());
    let descrs = client
        .walk(&target, &oid(IF_DESCR))
        .await
        .expect("v1 GETNEXT walk");
    assert!(!descrs.is_empty());
    // v1 cannot carry Counter64: the HC column walk is empty, not an error.
    let hc = client
        .walk(&target, &oid("1.3.6.1.2.1.31.1.1.1.6"))
        .await
        .expect("v1 HC walk");
    assert!(hc.is_empty(), "{hc:?}");
}

#[tokio::test]
async fn v3_every_protocol_family_works() {
    let snmpd = start_snmpd();
    let client = client(1000, 1).await;
    for user in USERS.iter().map(|u| u.name) {
        let target = SnmpTarget::new(snmpd.socket_addr(), v3(user));
        let got = match client.get(&target, &[oid(SYS_DESCR)]).await {
            Ok(got) => got,
            Err(e) => panic!("v3 user {user}: {e}"),
        };
        assert!(got[0].value.as_string().is_some(), "{user}: {got:?}");
        let walked = client.walk(&target, &oid(IF_DESCR)).await.expect("v3 walk");
        assert!(!walked.is_empty(), "{user}");
    }
}

#[tokio::test]
async fn v3_wrong_password_is_a_readable_auth_failure() {
    let snmpd = start_snmpd();
    let client = client(500, 1).await;
    let SnmpCredentials::V3(mut usm) = v3("bob") else {
        unreachable!()
    };
    usm.auth = Some((AuthProtocol::Sha1, Secret::new("wrong-password-42")));
    let target = SnmpTarget::new(snmpd.socket_addr(), SnmpCredentials::V3(usm.clone()));
    let started = Instant::now();
    let err = client
        .get(&target, &[oid(SYS_DESCR)])
        .await
        .expect_err("wrong password");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(text.contains("wrong authentication password"), "{text}");
    assert!(matches!(err, SnmpError::AuthFailure { .. }), "{err:?}");
    assert!(text.contains("'bob'"), "{text}");
    for secret in ["wrong-password-42", "privpass123", "authpass123"] {
        assert!(!text.contains(secret), "{text}");
    }

    // Right auth password, wrong privacy password.
    usm.auth = Some((AuthProtocol::Sha1, Secret::new("authpass123")));
    usm.privacy = Some((PrivProtocol::Aes128, Secret::new("wrong-privacy-42")));
    let target = SnmpTarget::new(snmpd.socket_addr(), SnmpCredentials::V3(usm.clone()));
    let err = client
        .get(&target, &[oid(SYS_DESCR)])
        .await
        .expect_err("wrong privacy password");
    // net-snmp drops what it cannot decrypt, so this one may only time out.
    assert!(
        matches!(
            err,
            SnmpError::AuthFailure { .. } | SnmpError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong-privacy-42"));

    usm.user = "mallory".into();
    let target = SnmpTarget::new(snmpd.socket_addr(), SnmpCredentials::V3(usm));
    let err = client
        .get(&target, &[oid(SYS_DESCR)])
        .await
        .expect_err("unknown user");
    assert!(matches!(err, SnmpError::AuthFailure { .. }), "{err:?}");
    assert!(err.to_string().contains("'mallory'"), "{err}");
}

#[tokio::test]
async fn timeout_against_a_silent_port() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind silent socket");
    let addr = silent.local_addr().expect("addr");
    let client = client(200, 1).await;
    let target = SnmpTarget::new(addr, v2c("hunter2-community"));
    let started = Instant::now();
    let err = client
        .get(&target, &[oid(SYS_UPTIME)])
        .await
        .expect_err("nobody answers");
    let elapsed = started.elapsed();
    assert_eq!(
        err.to_string(),
        "no response after 2 tries (timeout 200 ms)"
    );
    assert!(err.is_unreachable());
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let err = client
        .walk(&target, &oid(IF_DESCR))
        .await
        .expect_err("walk times out too");
    assert!(matches!(err, SnmpError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_community_times_out_without_naming_it() {
    let snmpd = start_snmpd();
    let client = client(200, 0).await;
    let target = SnmpTarget::new(snmpd.socket_addr(), v2c("not-the-community"));
    let err = client
        .get(&target, &[oid(SYS_UPTIME)])
        .await
        .expect_err("agent drops it");
    assert!(
        matches!(err, SnmpError::Timeout { tries: 1, .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("not-the-community"));
}

#[tokio::test]
async fn one_socket_serves_many_requests_in_flight() {
    let snmpd = start_snmpd();
    let client = AsyncSnmpClient::new(SnmpClientConfig {
        source_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        timeout: Duration::from_millis(2000),
        retries: 2,
        max_in_flight: 16,
        per_device_in_flight: 8,
    })
    .await
    .expect("bind to source_ip");
    let local = client.local_addr();
    assert_eq!(local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let v2 = SnmpTarget::new(snmpd.socket_addr(), v2c("public"));
    let v3 = SnmpTarget::new(snmpd.socket_addr(), v3("bob"));
    let requests = (0..200).map(|i| {
        let client = client.clone();
        let target = if i % 2 == 0 { v2.clone() } else { v3.clone() };
        tokio::spawn(async move { client.get(&target, &[oid(SYS_UPTIME)]).await })
    });
    for result in futures::future::join_all(requests).await {
        let got = result.expect("task").expect("GET");
        assert!(matches!(got[0].value, SnmpValue::TimeTicks(_)));
    }
    assert_eq!(client.local_addr(), local, "still the one socket");
    assert_eq!(
        client.cached_targets(),
        2,
        "one handle per (address, credentials)"
    );
    // The agent saw every request come from that one socket (plus the
    // readiness probe's own socket).
    let ours = format!("[127.0.0.1]:{}->", local.port());
    let log = snmpd.agent_log();
    let from_us = log.lines().filter(|l| l.contains(&ours)).count();
    assert!(
        from_us >= 200,
        "{from_us} requests from {local} in the agent log"
    );
    let sources: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("Connection from UDP: "))
        .filter_map(|l| l.split("->").next())
        .collect();
    assert!(sources.len() <= 2, "sources: {sources:?}");
}

/// Requests that are never answered: how long a batch takes shows how many
/// were in flight at once (each batch waits one full timeout).
#[tokio::test]
async fn in_flight_limits_per_device_and_node_wide() {
    let timeout = Duration::from_millis(200);
    let silent: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind silent socket"))
        .collect();
    let targets: Vec<SnmpTarget> = silent
        .iter()
        .map(|s| SnmpTarget::new(s.local_addr().expect("addr"), v2c("public")))
        .collect();
    let run = |client: AsyncSnmpClient, targets: Vec<SnmpTarget>| async move {
        let started = Instant::now();
        let requests = targets.into_iter().map(|target| {
            let client = client.clone();
            tokio::spawn(async move { client.get(&target, &[oid(SYS_UPTIME)]).await })
        });
        for result in futures::future::join_all(requests).await {
            assert!(matches!(
                result.expect("task"),
                Err(SnmpError::Timeout { .. })
            ));
        }
        started.elapsed()
    };
    let limited = |max_in_flight, per_device_in_flight| {
        AsyncSnmpClient::new(SnmpClientConfig {
            source_ip: None,
            timeout,
            retries: 0,
            max_in_flight,
            per_device_in_flight,
        })
    };

    // 8 requests to one device, 2 at a time: at least 4 timeouts in a row.
    let client = limited(64, 2).await.expect("client");
    let elapsed = run(client, vec![targets[0].clone(); 8]).await;
    assert!(elapsed >= timeout * 4, "{elapsed:?}");

    // 8 requests to each of two devices, 4 at a time node-wide: 4 in a row.
    let client = limited(4, 8).await.expect("client");
    let mut both = vec![targets[0].clone(); 8];
    both.extend(vec![targets[1].clone(); 8]);
    let elapsed = run(client, both).await;
    assert!(elapsed >= timeout * 4, "{elapsed:?}");

    // Without tight limits the same 16 requests overlap.
    let client = limited(64, 8).await.expect("client");
    let mut both = vec![targets[0].clone(); 8];
    both.extend(vec![targets[1].clone(); 8]);
    let elapsed = run(client, both).await;
    assert!(elapsed < timeout * 3, "{elapsed:?}");
}

#[tokio::test]
async fn modules_discover_and_poll_the_real_agent() {
    let snmpd = start_snmpd();
    let client = client(1000, 1).await;
    let target = SnmpTarget::new(snmpd.socket_addr(), v3("bob"));
    let discovery = modules::discover(&client, &target).await.expect("discover");
    assert_eq!(discovery.system.sys_name, "raftpoll-test-agent");
    assert!(
        discovery
            .system
            .sys_object_id
            .starts_with("1.3.6.1.4.1.8072")
    );
    let lo = discovery
        .ports
        .iter()
        .find(|p| p.ifdescr == "lo")
        .unwrap_or_else(|| panic!("lo in {:?}", discovery.ports));
    assert_eq!(lo.ifname, "lo");
    assert!(!discovery.processors.is_empty(), "hrProcessorTable");
    assert!(
        discovery
            .storages
            .iter()
            .any(|s| s.kind == StorageKind::Memory && s.descr == "Physical memory"),
        "{:?}",
        discovery.storages
    );

    let inventory = Inventory {
        system: discovery.system.clone(),
        ports: discovery
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                Port::new(i as u64 + 1, p.ifindex, PortKey::of(&p.ifname, &p.ifdescr))
            })
            .collect(),
        processors: discovery.processors.clone(),
        storages: discovery.storages.clone(),
    };
    // Spawned like the scheduler does, on the multi-threaded runtime.
    let out = {
        let (client, target, inventory) = (client.clone(), target.clone(), inventory.clone());
        tokio::spawn(async move {
            modules::poll(&client, &target, "agent 1", &inventory, 300, 1_700_000_000).await
        })
        .await
        .expect("poll task")
        .expect("poll")
    };
    assert_eq!(
        out.system.as_ref().map(|s| s.sys_name.as_str()),
        Some("raftpoll-test-agent")
    );
    let lo_id = inventory
        .ports
        .iter()
        .find(|p| p.ifindex == lo.ifindex)
        .map(|p| p.port_id());
    let lo_rrd = format!("agent_1/port-id{}.rrd", lo_id.unwrap_or_default());
    let port = out
        .updates
        .iter()
        .find(|u| u.path == lo_rrd)
        .unwrap_or_else(|| panic!("{lo_rrd} in {:?}", out.updates));
    assert_eq!(port.def, defs::port_def());
    assert!(
        matches!(port.values[0], RrdValue::Counter(_)),
        "INOCTETS {:?}",
        port.values[0]
    );
    assert!(
        matches!(port.values[2], RrdValue::Counter(_)),
        "INERRORS {:?}",
        port.values[2]
    );
    let uptime = out
        .updates
        .iter()
        .find(|u| u.path == "agent_1/uptime.rrd")
        .expect("uptime");
    assert!(matches!(uptime.values[0], RrdValue::Gauge(s) if s >= 0.0));
    // net-snmp serves hrProcessorLoad only after a minute of samples: until
    // then the processor is skipped with a note, not an error.
    assert!(
        out.updates
            .iter()
            .any(|u| u.path.starts_with("agent_1/processor-hr-"))
            || out.skipped.iter().any(|n| n.starts_with("processor-hr-")),
        "{:?}",
        out.skipped
    );
    assert!(
        out.updates
            .iter()
            .any(|u| u.path.starts_with("agent_1/mempool-hrstorage-"))
    );
    assert!(out.updates.iter().all(|u| u.values.len() == u.def.ds.len()));
    assert!(out.updates.iter().all(|u| u.timestamp == 1_700_000_000));
}
