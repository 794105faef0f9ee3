//! A rolling upgrade on real nodes: a 3-node cluster with one node held at
//! feature level 1 (as if it still ran the older version) runs at level 1,
//! keeps polling, and takes a bulk import (written in the older entry kind,
//! which the held node applies); once that node is restarted at the current
//! level, the cluster's level rises and imports keep working.

use raftpoll_testbed as testbed;

use raftpoll::cluster::features::FEATURE_LEVEL;
use serde_json::Value;
use std::time::Duration;
use testbed::cluster::{RecordingAgent, source_ip};
use testbed::raftpoll::NodeOptions;
use testbed::{NodeConfig, RaftpollNode, Rrdcached, wait_until_every};

const DEADLINE: Duration = Duration::from_secs(90);
const EVERY: Duration = Duration::from_millis(500);
const LEVEL_MAX_ENV: &str = "RAFTPOLL_FEATURE_LEVEL_MAX";

fn config(index: usize, rrd: &Rrdcached, seeds: Vec<String>) -> NodeConfig {
    let mut cfg = NodeConfig::new(&format!("n{}", index + 1), &rrd.addr());
    cfg.bootstrap = index == 0;
    cfg.seeds = seeds;
    cfg.source_ip = Some(source_ip(index).to_string());
    cfg.frequency = 10;
    cfg
}

fn status(node: &RaftpollNode) -> Option<Value> {
    let out = node.cli(&["status", "--json"]);
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until `node`'s status knows every member's level and version, and
/// the cluster's level is `level`; returns the status.
fn wait_levels(node: &RaftpollNode, level: u64, want: &[(&str, u64)]) -> Value {
    wait_until_every(
        DEADLINE,
        EVERY,
        "every member's feature level in status",
        || {
            let s = status(node)?;
            let nodes = s["nodes"].as_array()?;
            if nodes.len() != want.len() || s["cluster_feature_level"] != level {
                return None;
            }
            for (name, l) in want {
                let n = nodes.iter().find(|n| n["name"] == *name)?;
                if n["feature_level"] != *l || n["version"].as_str().is_none_or(str::is_empty) {
                    return None;
                }
            }
            Some(s)
        },
    )
}

fn import(
    node: &RaftpollNode,
    agent: &RecordingAgent,
    range: std::ops::Range<usize>,
    dir: &std::path::Path,
) {
    let mut csv = String::from("hostname,address,port,community,group\n");
    for i in range.clone() {
        csv.push_str(&format!(
            "up{i},127.0.0.1,{},{},0\n",
            agent.port(),
            agent.community(i)
        ));
    }
    let path = dir.join(format!("import-{}.csv", range.start));
    std::fs::write(&path, csv).expect("write import file");
    let out = node.cli_ok(&["device", "import", path.to_str().expect("utf-8 path")]);
    assert!(out.contains(&format!("{}", range.len())), "{out}");
}

/// Waits until `node`'s own copy of the state has every device of `range`,
/// each polled (up); returns the device list.
fn wait_polled(node: &RaftpollNode, range: std::ops::Range<usize>) -> Vec<Value> {
    wait_until_every(DEADLINE, EVERY, "every imported device polled", || {
        let list: Value =
            serde_json::from_slice(&node.cli(&["device", "list", "--json"]).stdout).ok()?;
        let devices = list.as_array()?.clone();
        let all = range.clone().all(|i| {
            devices
                .iter()
                .any(|d| d["hostname"] == format!("up{i}") && d["status"] == "up")
        });
        all.then_some(devices)
    })
}

#[test]
fn mixed_levels_keep_polling_and_importing_then_upgrade() {
    let agent = RecordingAgent::start(24, "up");
    let rrd = Rrdcached::start();
    let n1 = RaftpollNode::start(config(0, &rrd, vec![]));
    n1.wait_leader(DEADLINE);
    let n2_dir = testbed::process::test_dir("upgrade-n2");
    let n2_cfg = config(1, &rrd, vec![n1.addr()]);
    let mut n2 = RaftpollNode::start_with(
        n2_cfg.clone(),
        NodeOptions::new()
            .dir(n2_dir.path())
            .env(LEVEL_MAX_ENV, "1"),
    );
    let n3 = RaftpollNode::start(config(2, &rrd, vec![n1.addr(), n2.addr()]));

    // Every node's status (relayed from the leader) shows each member's
    // level, and the cluster runs at the held node's.
    let current = u64::from(FEATURE_LEVEL);
    for node in [&n1, &n2, &n3] {
        wait_levels(node, 1, &[("n1", current), ("n2", 1), ("n3", current)]);
    }
    let table = n3.cli_ok(&["status"]);
    assert!(table.contains("feature level: 1"), "{table}");

    // A bulk import during the mixed period: the held node applies it (it
    // would refuse the newer entry kind and stop), and every device is
    // polled, some of them by the held node.
    import(&n3, &agent, 0..12, n2_dir.path());
    let devices = wait_polled(&n2, 0..12);
    let n2_id = status(&n2)
        .and_then(|s| s["nodes"].as_array()?.iter().find(|n| n["name"] == "n2")?["id"].as_u64())
        .expect("n2's id");
    assert!(
        devices.iter().any(|d| d["node_id"] == n2_id),
        "the held node polls some devices: {devices:?}"
    );
    assert!(
        n2.is_running(),
        "the held node is still running:\n{}",
        n2.logs()
    );
    assert!(!n2.logs().contains("needs feature level"), "{}", n2.logs());
    let polled: Vec<String> = agent.polls(1500).into_keys().collect();
    for i in 0..12 {
        assert!(
            polled.contains(&agent.community(i)),
            "device {i} not polled: {polled:?}"
        );
    }

    // The held node is "upgraded": restarted on its data dir and address
    // without the knob. The cluster's level rises to the current one.
    n2.terminate(Duration::from_secs(10));
    let mut upgraded_cfg = n2_cfg;
    upgraded_cfg.listen = Some(n2.addr().parse().expect("n2's address"));
    let n2 = RaftpollNode::start_with(upgraded_cfg, NodeOptions::new().dir(n2_dir.path()));
    for node in [&n1, &n2, &n3] {
        wait_levels(
            node,
            current,
            &[("n1", current), ("n2", current), ("n3", current)],
        );
    }
    // An import at the current level (the newer entry kind), seen and polled everywhere.
    import(&n2, &agent, 12..24, n2_dir.path());
    for node in [&n1, &n2, &n3] {
        wait_polled(node, 0..24);
    }
}
