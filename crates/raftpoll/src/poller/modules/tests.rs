//! Module tests against the in-memory fake agent (real GETNEXT ordering).

use super::*;
use crate::model::types::{Port, PortKey, Processor, Storage, StorageKind};
use crate::rrd::layout::RrdValue;
use crate::secret::Secret;
use crate::snmp::FakeSnmpClient;
use crate::snmp::credentials::SnmpCredentials;

fn target() -> SnmpTarget {
    SnmpTarget::new(
        "127.0.0.1:161".parse().unwrap(),
        SnmpCredentials::V2c {
            community: Secret::new("public"),
        },
    )
}

fn oid(s: &str) -> Oid {
    s.parse().unwrap()
}

fn text(s: &str) -> SnmpValue {
    SnmpValue::OctetString(s.as_bytes().to_vec())
}

/// A small switch: system group, two interfaces (ifIndex 1 with HC
/// counters, ifIndex 2 with 32-bit ones only), one CPU, RAM and a disk.
fn device() -> FakeSnmpClient {
    let fake = FakeSnmpClient::new();
    let set = |o: &str, v: SnmpValue| fake.set(oid(o), v);
    set("1.3.6.1.2.1.1.1.0", text("Test switch"));
    set(
        "1.3.6.1.2.1.1.2.0",
        SnmpValue::ObjectId(oid("1.3.6.1.4.1.8072.3.2.10")),
    );
    set("1.3.6.1.2.1.1.3.0", SnmpValue::TimeTicks(123_456));
    set("1.3.6.1.2.1.1.5.0", text("sw1"));
    for (index, name) in [(1, "Gi0/1"), (2, "Gi0/2")] {
        set(
            &format!("1.3.6.1.2.1.2.2.1.2.{index}"),
            text(&format!("GigabitEthernet0/{index}")),
        );
        set(&format!("1.3.6.1.2.1.31.1.1.1.1.{index}"), text(name));
        // ifTable 32-bit columns 10..=20, value = col * 1000 + index
        for col in 10..=20 {
            set(
                &format!("1.3.6.1.2.1.2.2.1.{col}.{index}"),
                SnmpValue::Counter32(col * 1000 + index),
            );
        }
        // 32-bit ifXTable broadcast/multicast columns 2..=5
        for col in 2..=5 {
            set(
                &format!("1.3.6.1.2.1.31.1.1.1.{col}.{index}"),
                SnmpValue::Counter32(col * 100 + index),
            );
        }
    }
    // HC columns 6..=13 for ifIndex 1 only
    for col in 6..=13u64 {
        set(
            &format!("1.3.6.1.2.1.31.1.1.1.{col}.1"),
            SnmpValue::Counter64((1 << 40) + col),
        );
    }
    set("1.3.6.1.2.1.25.3.3.1.2.196608", SnmpValue::Integer(17));
    set(
        "1.3.6.1.2.1.25.3.2.1.3.196608",
        text("GenuineIntel: Intel(R) Xeon(R)"),
    );
    set("1.3.6.1.2.1.25.3.2.1.3.1025", text("network interface lo"));
    let storage = [
        (1, 2, "Physical memory", 1024, 1000, 600),
        (3, 3, "Virtual memory", 1024, 3000, 700),
        (6, 1, "Memory buffers", 1024, 100, 10),
        (31, 4, "/", 4096, 2000, 500),
        (32, 4, "/var/lib/my disk", 4096, 100, 100),
        (40, 7, "/media/cdrom", 2048, 100, 100),
        (41, 4, "/proc", 4096, 0, 0),
    ];
    for (index, kind, descr, units, size, used) in storage {
        set(
            &format!("1.3.6.1.2.1.25.2.3.1.2.{index}"),
            SnmpValue::ObjectId(oid(&format!("1.3.6.1.2.1.25.2.1.{kind}"))),
        );
        set(&format!("1.3.6.1.2.1.25.2.3.1.3.{index}"), text(descr));
        set(
            &format!("1.3.6.1.2.1.25.2.3.1.4.{index}"),
            SnmpValue::Integer(units),
        );
        set(
            &format!("1.3.6.1.2.1.25.2.3.1.5.{index}"),
            SnmpValue::Integer(size),
        );
        set(
            &format!("1.3.6.1.2.1.25.2.3.1.6.{index}"),
            SnmpValue::Integer(used),
        );
    }
    // Something after the tables, so walks must stop at the subtree end.
    set("1.3.6.1.6.3.1.1.4.1.0", SnmpValue::Integer(1));
    fake
}

fn inventory(discovery: &Discovery) -> Inventory {
    Inventory {
        system: discovery.system.clone(),
        ports: discovery
            .ports
            .iter()
            .filter_map(|p| {
                let key = PortKey::of(&p.ifname, &p.ifdescr);
                Port::new(u64::from(p.ifindex) + 6, p.ifindex, key)
            })
            .collect(),
        processors: discovery.processors.clone(),
        storages: discovery.storages.clone(),
    }
}

fn update<'a>(out: &'a PollOutput, path: &str) -> &'a RrdUpdate {
    out.updates
        .iter()
        .find(|u| u.path == path)
        .unwrap_or_else(|| panic!("no update for {path}; have {:?}", paths(out)))
}

fn paths(out: &PollOutput) -> Vec<&str> {
    out.updates.iter().map(|u| u.path.as_str()).collect()
}

#[tokio::test]
async fn discovery_finds_everything() {
    let fake = device();
    let d = discover(&fake, &target()).await.unwrap();
    assert_eq!(d.system.sys_name, "sw1");
    assert_eq!(d.system.sys_descr, "Test switch");
    assert_eq!(d.system.sys_object_id, "1.3.6.1.4.1.8072.3.2.10");
    assert_eq!(d.ports.len(), 2);
    assert_eq!(d.ports[0].ifindex, 1);
    assert_eq!(d.ports[0].ifname, "Gi0/1");
    assert_eq!(d.ports[0].ifdescr, "GigabitEthernet0/1");
    assert_eq!(
        d.processors,
        vec![Processor {
            index: 196608,
            descr: "GenuineIntel: Intel(R) Xeon(R)".into()
        }]
    );
    let storages: Vec<(u32, StorageKind, &str, u32)> = d
        .storages
        .iter()
        .map(|s| (s.index, s.kind, s.descr.as_str(), s.units))
        .collect();
    // CD-ROM (type 7) and the zero-size /proc are left out.
    assert_eq!(
        storages,
        vec![
            (1, StorageKind::Memory, "Physical memory", 1024),
            (3, StorageKind::Memory, "Virtual memory", 1024),
            (6, StorageKind::Memory, "Memory buffers", 1024),
            (31, StorageKind::Disk, "/", 4096),
            (32, StorageKind::Disk, "/var/lib/my disk", 4096),
        ]
    );
}

#[tokio::test]
async fn ifname_falls_back_to_ifdescr() {
    let fake = device();
    fake.remove_subtree(&oid("1.3.6.1.2.1.31.1.1.1.1"));
    let d = discover(&fake, &target()).await.unwrap();
    assert_eq!(d.ports[1].ifname, "GigabitEthernet0/2");
    assert_eq!(d.ports[1].ifdescr, "GigabitEthernet0/2");
}

#[tokio::test]
async fn poll_prefers_hc_counters_and_falls_back_to_32_bit() {
    let fake = device();
    let d = discover(&fake, &target()).await.unwrap();
    let inv = inventory(&d);
    let out = poll(&fake, &target(), "sw1", &inv, 300, 1_700_000_000)
        .await
        .unwrap();

    let hc = update(&out, "sw1/port-id7.rrd");
    assert_eq!(hc.timestamp, 1_700_000_000);
    assert_eq!(hc.values.len(), 15);
    let c = |v: u64| RrdValue::Counter(v);
    // ifIndex 1: HC for octets/ucast/bcast/mcast, ifTable for the rest.
    assert_eq!(hc.values[0], c((1 << 40) + 6)); // INOCTETS = ifHCInOctets
    assert_eq!(hc.values[1], c((1 << 40) + 10)); // OUTOCTETS = ifHCOutOctets
    assert_eq!(hc.values[2], c(14_001)); // INERRORS = ifInErrors
    assert_eq!(hc.values[3], c(20_001)); // OUTERRORS
    assert_eq!(hc.values[4], c((1 << 40) + 7)); // INUCASTPKTS
    // INNUCAST = HC broadcast (9) + HC multicast (8)
    assert_eq!(hc.values[6], c((1 << 41) + 17));
    assert_eq!(hc.values[7], c((1 << 41) + 25)); // 13 + 12
    assert_eq!(hc.values[10], c(15_001)); // INUNKNOWNPROTOS
    assert_eq!(hc.values[11], c((1 << 40) + 9)); // INBROADCASTPKTS
    assert_eq!(hc.values[14], c((1 << 40) + 12)); // OUTMULTICASTPKTS

    // ifIndex 2: all 32-bit.
    let low = update(&out, "sw1/port-id8.rrd");
    assert_eq!(low.values[0], c(10_002)); // ifInOctets
    assert_eq!(low.values[1], c(16_002)); // ifOutOctets
    assert_eq!(low.values[11], c(302)); // ifInBroadcastPkts
    assert_eq!(low.values[6], c(302 + 202)); // bcast + mcast
    assert!(
        out.skipped.iter().any(|n| n.contains("32-bit")),
        "{:?}",
        out.skipped
    );

    assert_eq!(
        update(&out, "sw1/uptime.rrd").values,
        vec![RrdValue::Gauge(1234.0)]
    );
    assert_eq!(
        update(&out, "sw1/processor-hr-196608.rrd").values,
        vec![RrdValue::Gauge(17.0)]
    );
    let system = out.system.clone().unwrap();
    assert_eq!(system.sys_name, "sw1");
}

#[tokio::test]
async fn storage_maths_and_names() {
    let fake = device();
    let inv = inventory(&discover(&fake, &target()).await.unwrap());
    let out = poll(&fake, &target(), "sw1", &inv, 300, 1).await.unwrap();
    let g = |v: f64| RrdValue::Gauge(v);
    // Physical memory: 1024 B units, size 1000, used 600.
    assert_eq!(
        update(&out, "sw1/mempool-hrstorage-1.rrd").values,
        vec![g(600.0 * 1024.0), g(400.0 * 1024.0)]
    );
    // "/" becomes "_" in the file name; 4096 B units, size 2000, used 500.
    assert_eq!(
        update(&out, "sw1/storage-hrstorage-_.rrd").values,
        vec![g(500.0 * 4096.0), g(1500.0 * 4096.0)]
    );
    // Full disk: free is 0; spaces and slashes are sanitised.
    assert_eq!(
        update(&out, "sw1/storage-hrstorage-_var_lib_my_disk.rrd").values,
        vec![g(100.0 * 4096.0), g(0.0)]
    );
    assert!(out.updates.iter().all(|u| u.def.ds.len() == u.values.len()));
}

#[tokio::test]
async fn negative_integer32_storage_sizes_are_unwrapped() {
    let fake = device();
    let inv = inventory(&discover(&fake, &target()).await.unwrap());
    // 3 TiB in 4 KiB units overflows Integer32; agents send it negative.
    let size: i64 = 3 * (1 << 40) / 4096;
    fake.set(
        oid("1.3.6.1.2.1.25.2.3.1.5.31"),
        SnmpValue::Integer(size - (1 << 32)),
    );
    let out = poll(&fake, &target(), "sw1", &inv, 300, 1).await.unwrap();
    assert_eq!(
        update(&out, "sw1/storage-hrstorage-_.rrd").values[1],
        RrdValue::Gauge(((size - 500) * 4096) as f64)
    );
}

#[tokio::test]
async fn missing_tables_are_skipped_not_errors() {
    // Only the system group: a printer-like agent.
    let fake = FakeSnmpClient::new();
    fake.set(oid("1.3.6.1.2.1.1.3.0"), SnmpValue::TimeTicks(500));
    fake.set(oid("1.3.6.1.2.1.1.5.0"), text("printer"));
    let d = discover(&fake, &target()).await.unwrap();
    assert!(d.ports.is_empty() && d.processors.is_empty() && d.storages.is_empty());
    assert_eq!(d.system.sys_name, "printer");
    assert_eq!(d.system.sys_descr, "");

    // An inventory from an earlier discovery whose tables are now gone.
    let full = device();
    let inv = inventory(&discover(&full, &target()).await.unwrap());
    let out = poll(&fake, &target(), "printer", &inv, 300, 1)
        .await
        .unwrap();
    assert_eq!(paths(&out), vec!["printer/uptime.rrd"]);
    assert!(
        out.skipped
            .iter()
            .any(|n| n.starts_with("port-id7 (ifIndex 1)"))
    );
    assert!(
        out.skipped
            .iter()
            .any(|n| n.contains("processor-hr-196608"))
    );
    assert!(
        out.skipped
            .iter()
            .any(|n| n.contains("mempool-hrstorage-1"))
    );
}

#[tokio::test]
async fn a_broken_table_is_a_note_but_a_dead_device_is_an_error() {
    let fake = device();
    let inv = inventory(&discover(&fake, &target()).await.unwrap());
    fake.fail_walk(
        oid("1.3.6.1.2.1.25.3.3.1.2"),
        SnmpError::Agent {
            status: "genErr".into(),
            index: 1,
        },
    );
    let out = poll(&fake, &target(), "sw1", &inv, 300, 1).await.unwrap();
    assert!(
        out.skipped.iter().any(|n| n.contains("genErr")),
        "{:?}",
        out.skipped
    );
    assert!(out.updates.iter().any(|u| u.path == "sw1/port-id7.rrd"));

    let timeout = SnmpError::Timeout {
        tries: 3,
        timeout_ms: 1000,
    };
    fake.fail_with(Some(timeout.clone()));
    let err = poll(&fake, &target(), "sw1", &inv, 300, 1)
        .await
        .unwrap_err();
    assert_eq!(err, ModuleError::Snmp(timeout));
    assert_eq!(
        err.to_string(),
        "no response after 3 tries (timeout 1000 ms)"
    );
    assert!(discover(&fake, &target()).await.is_err());
}

#[tokio::test]
async fn polling_walks_columns_not_ports() {
    let fake = device();
    // 200 more ports: the number of requests must not grow with them.
    for index in 3..203u32 {
        fake.set(
            oid(&format!("1.3.6.1.2.1.31.1.1.1.6.{index}")),
            SnmpValue::Counter64(u64::from(index)),
        );
    }
    let mut inv = inventory(&discover(&fake, &target()).await.unwrap());
    inv.ports.extend((3..203u32).filter_map(|index| {
        Port::new(
            u64::from(index) + 6,
            index,
            PortKey::name(&format!("p{index}")),
        )
    }));
    let (gets, walks) = (fake.get_calls(), fake.walk_calls());
    let out = poll(&fake, &target(), "sw1", &inv, 300, 1).await.unwrap();
    assert_eq!(fake.get_calls() - gets, 1, "one GET for the system group");
    let walks = fake.walk_calls() - walks;
    assert!(walks <= 30, "{walks} walks");
    assert_eq!(
        out.updates
            .iter()
            .filter(|u| u.path.contains("port-id"))
            .count(),
        202
    );
    assert_eq!(
        update(&out, "sw1/port-id9.rrd").values[1],
        RrdValue::Unknown
    );
}

#[test]
fn rrd_file_names_are_sanitised() {
    assert_eq!(
        rrd_file("sw1.example.com", "port-id7"),
        "sw1.example.com/port-id7.rrd"
    );
    assert_eq!(
        rrd_file("sw1", "storage-hrstorage-/var/lib"),
        "sw1/storage-hrstorage-_var_lib.rrd"
    );
    assert_eq!(rrd_file("a/../b", "x y:z"), "a_.._b/x_y_z.rrd");
    assert_eq!(rrd_file("..", "uptime"), "__/uptime.rrd");
    assert_eq!(rrd_file("", "uptime"), "_/uptime.rrd");
    assert_eq!(rrd_file("h", "café,1"), "h/caf_,1.rrd");
}

/// The scheduler spawns polls on the multi-threaded runtime: the futures must be `Send`.
#[test]
fn module_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let fake = device();
    let inv = Inventory::default();
    let target = target();
    let polling = poll(&fake, &target, "sw1", &inv, 300, 1);
    assert_send(&polling);
    let discovering = discover(&fake, &target);
    assert_send(&discovering);
}

#[tokio::test]
async fn librenms_mode_reads_aliases_and_port_states() {
    let fake = device();
    let set = |o: &str, v: SnmpValue| fake.set(oid(o), v);
    set("1.3.6.1.2.1.31.1.1.1.18.1", text("uplink"));
    set("1.3.6.1.2.1.31.1.1.1.18.2", text(""));
    set("1.3.6.1.2.1.2.2.1.8.1", SnmpValue::Integer(1));
    set("1.3.6.1.2.1.2.2.1.8.2", SnmpValue::Integer(7));
    set("1.3.6.1.2.1.2.2.1.7.1", SnmpValue::Integer(1));
    set("1.3.6.1.2.1.2.2.1.7.2", SnmpValue::Integer(2));
    set("1.3.6.1.2.1.2.2.1.5.1", SnmpValue::Gauge32(4_294_967_295));
    set("1.3.6.1.2.1.2.2.1.5.2", SnmpValue::Gauge32(100_000_000));
    set("1.3.6.1.2.1.31.1.1.1.15.1", SnmpValue::Gauge32(10_000));

    let (d, aliases) = discover_with(&fake, &target(), true).await.unwrap();
    assert_eq!(aliases, BTreeMap::from([(1, "uplink".to_string())]));
    assert_eq!(d, discover(&fake, &target()).await.unwrap());
    let (_, none) = discover_with(&fake, &target(), false).await.unwrap();
    assert!(none.is_empty());

    let inv = inventory(&d);
    let plain = poll(&fake, &target(), "sw1", &inv, 300, 1).await.unwrap();
    assert!(plain.port_states.is_empty());
    let out = poll_with(&fake, &target(), "sw1", &inv, 300, 1, true)
        .await
        .unwrap();
    assert_eq!(out.updates, plain.updates);
    let [one, two] = out.port_states.as_slice() else {
        panic!("{:?}", out.port_states);
    };
    assert_eq!(one.ifindex, 1);
    assert_eq!(one.oper_status, Some("up"));
    assert_eq!(one.admin_status, Some("up"));
    assert_eq!(one.speed, Some(10_000_000_000));
    assert_eq!(one.alias.as_deref(), Some("uplink"));
    assert_eq!(one.in_octets, Some((1 << 40) + 6));
    assert_eq!(one.in_errors, Some(14_001));
    assert_eq!(two.oper_status, Some("lowerLayerDown"));
    assert_eq!(two.admin_status, Some("down"));
    assert_eq!(two.speed, Some(100_000_000));
    assert_eq!(two.out_octets, Some(16_002));
    assert_eq!(two.out_ucast, Some(17_002));
}

/// Walks one LibreNMS-mode poll takes, and the speeds it read.
async fn walks_and_speeds(fake: &FakeSnmpClient, inv: &Inventory) -> (usize, Vec<Option<u64>>) {
    let before = fake.walk_calls();
    let out = poll_with(fake, &target(), "sw1", inv, 300, 1, true)
        .await
        .unwrap();
    let speeds = out.port_states.iter().map(|p| p.speed).collect();
    (fake.walk_calls() - before, speeds)
}

/// ifSpeed is walked only while some port has no ifHighSpeed.
#[tokio::test]
async fn if_speed_is_walked_only_for_ports_without_if_high_speed() {
    let fake = device();
    let set = |o: &str, v: SnmpValue| fake.set(oid(o), v);
    set("1.3.6.1.2.1.2.2.1.5.1", SnmpValue::Gauge32(4_294_967_295));
    set("1.3.6.1.2.1.2.2.1.5.2", SnmpValue::Gauge32(100_000_000));
    set("1.3.6.1.2.1.31.1.1.1.15.1", SnmpValue::Gauge32(10_000));
    set("1.3.6.1.2.1.31.1.1.1.15.2", SnmpValue::Gauge32(1_000));
    let inv = inventory(&discover(&fake, &target()).await.unwrap());
    let (all_high, speeds) = walks_and_speeds(&fake, &inv).await;
    assert_eq!(speeds, [Some(10_000_000_000), Some(1_000_000_000)]);
    fake.remove(&oid("1.3.6.1.2.1.31.1.1.1.15.2"));
    let (one_high, speeds) = walks_and_speeds(&fake, &inv).await;
    assert_eq!(speeds, [Some(10_000_000_000), Some(100_000_000)]);
    assert_eq!(one_high, all_high + 1, "ifSpeed walked once more");
}

#[test]
fn storages_whose_names_sanitise_alike_get_distinct_files() {
    let disk = |index: u32, descr: &str| Storage {
        index,
        descr: descr.into(),
        kind: StorageKind::Disk,
        units: 4096,
    };
    let mut memory = disk(1, "Physical memory");
    memory.kind = StorageKind::Memory;
    let storages = [
        disk(40, "/var"),
        memory,
        disk(31, "_var"),
        disk(50, "/home"),
    ];
    assert_eq!(
        super::storage_rrd_names(&storages),
        [
            "storage-hrstorage-_var-40",
            "mempool-hrstorage-1",
            "storage-hrstorage-_var",
            "storage-hrstorage-_home"
        ]
    );
}
