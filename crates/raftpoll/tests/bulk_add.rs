//! Bulk device add on one real `raftpoll node`: `device import` of a CSV file through the CLI,
//! re-import, refused files, and the `AddDevices` call's own checks over gRPC.
//!
//! The devices point at a loopback UDP port where nothing listens and rrdcached at a closed
//! port: the node polls nothing real, and only the inventory is checked.

use raftpoll_testbed as testbed;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use prost::Message as _;
use raftpoll::proto::{self as pb, admin_client::AdminClient};
use serde_json::Value;
use testbed::raftpoll::raftpoll_bin;
use testbed::{NodeConfig, RaftpollNode, free_tcp_port, free_udp_port};

const DEVICES: usize = 2000;
const LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// Distinctive secrets, searched for in every output and in the node's log.
const COMMUNITY: &str = "bulkComm-Qv83";
const AUTH_PASS: &str = "bulkAuth-Lm27x";
const PRIV_PASS: &str = "bulkPriv-Wc51x";

/// A node plus a transcript of everything its CLI printed (for the secrets check).
struct Bed {
    node: RaftpollNode,
    transcript: RefCell<String>,
}

impl Bed {
    fn start() -> Bed {
        let rrdcached = format!("127.0.0.1:{}", free_tcp_port());
        let mut cfg = NodeConfig::new("bulk", &rrdcached);
        // Nothing answers the devices: poll them rarely, the test is about the inventory.
        cfg.frequency = 300;
        cfg.down_retry = 300;
        let bed = Bed {
            node: RaftpollNode::start(cfg),
            transcript: RefCell::new(String::new()),
        };
        bed.node.wait_leader(LEADER_DEADLINE);
        bed
    }

    fn record(&self, out: &Output) {
        let mut t = self.transcript.borrow_mut();
        t.push_str(&String::from_utf8_lossy(&out.stdout));
        t.push_str(&String::from_utf8_lossy(&out.stderr));
    }

    /// `raftpoll device import <file>`, the file's text given on stdin when `file` is `-`.
    fn import(&self, file: &str, stdin: &str) -> Output {
        let mut child = Command::new(raftpoll_bin())
            .args(["device", "import", file, "--addr"])
            .arg(self.node.addr())
            .arg("--secret")
            .arg(&self.node.config().secret)
            .env_remove("RAFTPOLL_ADDR")
            .env_remove("RAFTPOLL_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run raftpoll CLI");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        let out = child.wait_with_output().expect("wait for raftpoll CLI");
        self.record(&out);
        out
    }

    fn import_ok(&self, file: &str, stdin: &str) -> String {
        let out = self.import(file, stdin);
        assert!(
            out.status.success(),
            "import failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn import_fails(&self, file: &str, stdin: &str) -> String {
        let out = self.import(file, stdin);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!out.status.success(), "import should have failed: {text}");
        text
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.node.cli(args);
        self.record(&out);
        assert!(
            out.status.success(),
            "raftpoll {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    fn total(&self) -> u64 {
        self.json(&["status", "--json"])["devices"]["total"]
            .as_u64()
            .expect("devices.total")
    }

    fn hostnames(&self) -> BTreeSet<String> {
        self.json(&["device", "list", "--json"])
            .as_array()
            .expect("device list is an array")
            .iter()
            .map(|d| d["hostname"].as_str().expect("hostname").to_string())
            .collect()
    }

    /// No secret in anything the CLI printed or the node logged.
    fn assert_no_secrets(&self) {
        let logs = self.node.full_logs();
        let transcript = self.transcript.borrow();
        for secret in [COMMUNITY, AUTH_PASS, PRIV_PASS] {
            assert!(!transcript.contains(secret), "{secret} printed by the CLI");
            assert!(!logs.contains(secret), "{secret} in the node's log");
        }
    }
}

/// The test file: columns in an unusual order, quoted cells, v1/v2c/v3 devices.
fn csv(port: u16) -> String {
    let mut text = String::from(
        "community,hostname,port,version,address,v3_user,auth_proto,auth_pass,priv_proto,priv_pass,group\n",
    );
    for i in 0..DEVICES {
        let host = format!("bulk-{i:04}");
        let line = match i % 4 {
            0 => format!("{COMMUNITY}{i},{host},{port},,127.0.0.1,,,,,,\n"),
            1 => format!("\"{COMMUNITY},{i}\",\"{host}\",{port},v1,127.0.0.1,,,,,,2\n"),
            2 => format!(
                ",{host},{port},v3,127.0.0.1,\"user \"\"{i}\"\"\",sha,{AUTH_PASS},aes,{PRIV_PASS},\n"
            ),
            _ => format!("{COMMUNITY}{i},{host},{port},v2c,,,,,,,\n"),
        };
        text.push_str(&line);
    }
    text
}

#[test]
fn import_re_import_and_refused_files() {
    let bed = Bed::start();
    let port = free_udp_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("devices.csv");
    std::fs::write(&file, csv(port)).expect("write CSV");
    let file = file.to_str().expect("UTF-8 path");

    assert_eq!(
        bed.import_ok(file, ""),
        format!("added {DEVICES} devices, 0 already present (skipped)")
    );
    assert_eq!(bed.total(), DEVICES as u64);
    let expected: BTreeSet<String> = (0..DEVICES).map(|i| format!("bulk-{i:04}")).collect();
    assert_eq!(bed.hostnames(), expected);
    // Defaults and columns as `device add` would have them.
    let v3 = bed.json(&["device", "show", "bulk-0002", "--json"]);
    assert_eq!(
        (
            &v3["snmp_version"],
            &v3["address"],
            &v3["port"],
            &v3["group"]
        ),
        (
            &Value::from("v3"),
            &Value::from("127.0.0.1"),
            &Value::from(port),
            &Value::from(0)
        )
    );
    let v1 = bed.json(&["device", "show", "bulk-0001", "--json"]);
    assert_eq!(
        (&v1["snmp_version"], &v1["group"]),
        (&Value::from("v1"), &Value::from(2))
    );
    let default = bed.json(&["device", "show", "bulk-0003", "--json"]);
    assert_eq!(default["address"], Value::from("bulk-0003"));

    // The same file again, from stdin: everything is already there.
    let text = std::fs::read_to_string(file).expect("read CSV");
    assert_eq!(
        bed.import_ok("-", &text),
        format!("added 0 devices, {DEVICES} already present (skipped)")
    );
    assert_eq!(bed.total(), DEVICES as u64);

    // New and existing devices mixed: only the new ones are added.
    let mixed = format!(
        "hostname,address,port,community\n\
         bulk-0005,127.0.0.1,{port},{COMMUNITY}\n\
         extra-1,127.0.0.1,{port},{COMMUNITY}\n\
         bulk-0006,127.0.0.1,{port},{COMMUNITY}\n\
         extra-2,127.0.0.1,{port},{COMMUNITY}\n"
    );
    assert_eq!(
        bed.import_ok("-", &mixed),
        "added 2 devices, 2 already present (skipped)"
    );
    assert_eq!(bed.total(), DEVICES as u64 + 2);

    // Bad lines: every one named by its number, and nothing added, not even the good lines.
    let bad = format!(
        "hostname,address,port,community,auth_pass\n\
         new-1,127.0.0.1,{port},{COMMUNITY},\n\
         new-2,127.0.0.1,99999,{COMMUNITY},\n\
         new-3,127.0.0.1,{port},{COMMUNITY},\n\
         new-4,127.0.0.1,{port},\"{COMMUNITY}\"oops,\n\
         new-5,127.0.0.1,{port},{COMMUNITY},{AUTH_PASS},surplus\n"
    );
    let refused = bed.import_fails("-", &bad);
    assert!(
        refused.contains("3 bad lines, nothing was sent"),
        "{refused}"
    );
    assert!(
        refused.contains("line 3: port '99999'"),
        "line 3 not named: {refused}"
    );
    assert!(
        refused.contains("line 5: column 4 (community): text after the closing quote"),
        "line 5 not named: {refused}"
    );
    assert!(
        refused.contains("line 6: 6 cells, but the header has 5 columns"),
        "line 6 not named: {refused}"
    );
    let hosts = bed.hostnames();
    assert!(
        !hosts.contains("new-1") && !hosts.contains("new-3"),
        "a refused file added devices"
    );
    assert_eq!(bed.total(), DEVICES as u64 + 2);

    // A file that does not exist, and an unknown column.
    let missing = bed.import_fails(
        dir.path().join("nope.csv").to_str().expect("UTF-8 path"),
        "",
    );
    assert!(missing.contains("nope.csv"), "{missing}");
    let unknown = bed.import_fails("-", "hostname,comunity\nx,y\n");
    assert!(
        unknown.contains("line 1: header: unknown column 'comunity'"),
        "{unknown}"
    );

    bed.assert_no_secrets();
}

/// The gRPC call checks what it is given itself (other clients skip the CLI's checks):
/// all or nothing, the bad entry named by position and hostname.
#[test]
fn add_devices_call_refuses_bad_requests_whole() {
    let bed = Bed::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let device = |host: &str, community: &str| pb::AddDeviceRequest {
        hostname: host.into(),
        address: "127.0.0.1".into(),
        port: 1,
        credentials: Some(pb::Credentials {
            version: "v2c".into(),
            community: community.into(),
            ..Default::default()
        }),
        group: 0,
    };
    let call = |devices: Vec<pb::AddDeviceRequest>| {
        runtime.block_on(async {
            let mut client = AdminClient::connect(format!("http://{}", bed.node.addr()))
                .await
                .expect("connect");
            let mut request = tonic::Request::new(pb::AddDevicesRequest { devices });
            let auth = format!("Bearer {}", bed.node.config().secret);
            request
                .metadata_mut()
                .insert("authorization", auth.parse().expect("header"));
            client.add_devices(request).await.map(|r| r.into_inner())
        })
    };

    let twice = call(vec![
        device("g-1", COMMUNITY),
        device("g-2", COMMUNITY),
        device("g-1", COMMUNITY),
    ])
    .expect_err("duplicate hostname accepted");
    assert_eq!(twice.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        twice.message(),
        "device 3 ('g-1'): hostname already given as device 1"
    );
    let invalid = call(vec![device("g-1", COMMUNITY), device("g-2", "")])
        .expect_err("device without community accepted");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(
        invalid.message().starts_with("device 2 ('g-2'): "),
        "{}",
        invalid.message()
    );
    assert_eq!(bed.total(), 0, "a refused call added devices");

    // A call bigger than tonic's default 4 MiB limit, in several log entries.
    let padding = "p".repeat(64);
    let many: Vec<pb::AddDeviceRequest> = (0..50_000)
        .map(|i| {
            device(
                &format!("big-{i:05}"),
                &format!("{COMMUNITY}-{i}-{padding}"),
            )
        })
        .collect();
    let size = pb::AddDevicesRequest {
        devices: many.clone(),
    }
    .encoded_len();
    assert!(size > 4 << 20, "only {size} bytes");
    let reply = call(many).expect("large call");
    assert_eq!((reply.added, reply.existing.len()), (50_000, 0));
    let again = call(vec![
        device("big-00007", COMMUNITY),
        device("g-9", COMMUNITY),
    ])
    .expect("partly known call");
    assert_eq!(again.added, 1);
    assert_eq!(again.existing, ["big-00007"]);
    assert_eq!(bed.total(), 50_001);
    bed.assert_no_secrets();
}
