//! The short chaos run of issue 4: `raftpoll-chaos` with 3 real nodes, rrdcached and a
//! recording agent in private network namespaces, 20 seeded faults (leader and follower
//! kills, graceful stops, pauses, partitions). Asserts exit 0 and the report's numbers.
//!
//! Needs root and iproute2 (`ip netns`); the run takes about three minutes.

use serde_json::Value;
use std::process::Command;

/// Seed of the suite's run; `RAFTPOLL_CHAOS_SEED` picks another.
const DEFAULT_SEED: u64 = 7;
const ROUNDS: u64 = 20;
const FREQUENCY_S: u64 = 3;

#[test]
fn short_chaos_run_keeps_every_invariant() {
    let seed = std::env::var("RAFTPOLL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let workdir = std::env::temp_dir().join(format!("raftpoll-chaos-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_raftpoll-chaos"))
        .args(["--nodes", "3", "--json"])
        .args(["--rounds", &ROUNDS.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--frequency", &FREQUENCY_S.to_string()])
        .args(["--devices", "30"])
        .arg("--workdir")
        .arg(&workdir)
        .output()
        .expect("run raftpoll chaos");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("no JSON report ({e}); stderr:\n{stderr}");
    });
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    // The violations first: a long report is cut in the middle when shown.
    let found: Vec<String> = ["double_polls", "missed_intervals", "never_polled"]
        .into_iter()
        .flat_map(|kind| {
            let list = report[kind].as_array().cloned().unwrap_or_default();
            list.into_iter().map(move |v| format!("{kind}: {v}"))
        })
        .collect();
    let context = format!(
        "seed {seed}, files in {}\n{}\n{pretty}\n{stderr}",
        workdir.display(),
        found.join("\n")
    );

    // At least 20 faults, every kind, leader faults among them.
    let faults = report["faults"].as_array().expect("faults");
    assert!(faults.len() >= ROUNDS as usize, "{context}");
    for kind in ["kill", "term", "pause", "partition"] {
        assert!(
            faults.iter().any(|f| f["kind"] == kind),
            "no {kind} fault: {context}"
        );
    }
    for kind in ["kill", "pause", "partition"] {
        assert!(
            faults
                .iter()
                .any(|f| f["kind"] == kind && f["was_leader"] == true),
            "no {kind} of the leader: {context}"
        );
    }

    // The invariants.
    assert_eq!(
        report["double_polls"].as_array().map(Vec::len),
        Some(0),
        "{context}"
    );
    assert_eq!(
        report["missed_intervals"].as_array().map(Vec::len),
        Some(0),
        "{context}"
    );
    assert_eq!(
        report["never_polled"].as_array().map(Vec::len),
        Some(0),
        "{context}"
    );
    assert_eq!(
        report["unhealed"].as_array().map(Vec::len),
        Some(0),
        "{context}"
    );
    for f in faults {
        assert_eq!(
            f["not_recovered"].as_array().map(Vec::len),
            Some(0),
            "{context}"
        );
    }
    let c = &report["convergence"];
    assert_eq!(c["converged"], true, "{context}");
    assert_eq!(c["identical"], true, "{context}");
    assert_eq!(c["unassigned"], 0, "{context}");
    assert_eq!(c["devices"], 30, "{context}");

    // Failover: every affected device polled again well within the 5 s bound
    // plus an interval (a device polled just before the fault waits for its next slot).
    for (label, stats) in report["failover"].as_object().expect("failover") {
        let max = stats["max_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(
            max <= 5000 + FREQUENCY_S * 1000,
            "{label}: {max} ms: {context}"
        );
    }
    assert_eq!(report["violations"], 0, "{context}");
    assert_eq!(report["passed"], true, "{context}");
    assert!(
        out.status.success(),
        "exit status {:?}: {context}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&workdir);
}
