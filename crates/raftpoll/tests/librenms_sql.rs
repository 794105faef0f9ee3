//! The write-back's SQL against a real MariaDB with LibreNMS's schema: what the `ports` columns
//! hold after polls (previous values, deltas, rates, poll period), as LibreNMS's port pages read
//! them. The node is not started: the library's write functions run on the test bed's database.

use raftpoll::config::LibrenmsConfig;
use raftpoll::librenms::db::Db;
use raftpoll::librenms::ports::{PortSample, PortWrite, write_rows};
use raftpoll::poller::modules::PortState;
use raftpoll_testbed::{DeviceSpec, LibrenmsLink, MariaDb, insert_device};

fn connect(db: &MariaDb, link: &LibrenmsLink) -> Db {
    let config = LibrenmsConfig {
        database: db.url(),
        password_file: Some(link.password_file().to_path_buf()),
        sync_interval_s: 60,
        writeback_buffer: 1000,
    };
    Db::connect_lazy(&config).expect("pool for the test bed's database")
}

/// Inserts `count` port rows for `device_id` (ifIndex 1..=count); returns their port ids.
fn insert_ports(db: &MariaDb, device_id: u32, count: u32) -> Vec<u64> {
    let values: Vec<String> = (1..=count)
        .map(|i| format!("({device_id}, {i}, 'eth{i}', 'eth{i}')"))
        .collect();
    db.exec(&format!(
        "INSERT INTO ports (device_id, ifIndex, ifName, ifDescr) VALUES {}",
        values.join(", ")
    ));
    db.sql(&format!(
        "SELECT port_id FROM ports WHERE device_id = {device_id} ORDER BY ifIndex"
    ))
    .into_iter()
    .map(|r| r[0].parse().expect("port_id is a number"))
    .collect()
}

fn sample(port_id: u64, ifindex: u32, oper: &'static str, in_octets: u64) -> PortSample {
    PortSample {
        port_id,
        state: PortState {
            ifindex,
            oper_status: Some(oper),
            admin_status: Some("up"),
            speed: Some(1_000_000_000),
            alias: Some(format!("uplink {ifindex}")),
            in_octets: Some(in_octets),
            out_octets: Some(2 * in_octets),
            ..PortState::default()
        },
    }
}

async fn write(pool: &Db, device_id: u32, polled_at: u64, samples: &[PortSample]) -> u64 {
    let writes: Vec<PortWrite> = samples
        .iter()
        .map(|port| PortWrite {
            device_id,
            polled_at,
            port,
        })
        .collect();
    let mut tx = pool.pool().begin().await.expect("begin");
    let rows = write_rows(&mut tx, &writes).await.expect("write port rows");
    tx.commit().await.expect("commit");
    rows
}

fn port_columns(db: &MariaDb, port_id: u64, columns: &str) -> Vec<String> {
    db.sql(&format!(
        "SELECT {columns} FROM ports WHERE port_id = {port_id}"
    ))
    .into_iter()
    .next()
    .unwrap_or_else(|| panic!("no ports row {port_id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_rows_get_previous_values_deltas_and_rates() {
    let db = MariaDb::start();
    let link = LibrenmsLink::new(&db, 60);
    let device = insert_device(&db, &DeviceSpec::v2c("sw1", "127.0.0.1", 161, "c"));
    let ids = insert_ports(&db, device, 3);
    let pool = connect(&db, &link);
    let t0 = 1_700_000_000;

    let first: Vec<PortSample> = (0..3)
        .map(|i| sample(ids[i], i as u32 + 1, "up", 1000))
        .collect();
    assert_eq!(
        write(&pool, device, t0, &first).await,
        3,
        "rows of the first poll"
    );
    assert_eq!(
        port_columns(
            &db,
            ids[0],
            "ifOperStatus, ifAlias, ifSpeed, ifInOctets, poll_time, deleted"
        ),
        ["up", "uplink 1", "1000000000", "1000", &t0.to_string(), "0"]
    );

    // 300 s later: eth1 moved 3000 octets in, eth2 went down, eth3's counter went backwards.
    let t1 = t0 + 300;
    let second = vec![
        sample(ids[0], 1, "up", 4000),
        sample(ids[1], 2, "down", 1300),
        sample(ids[2], 3, "up", 10),
    ];
    write(&pool, device, t1, &second).await;
    assert_eq!(
        port_columns(
            &db,
            ids[0],
            "ifInOctets_prev, ifInOctets_delta, ifInOctets_rate, ifOutOctets_rate, \
             poll_prev, poll_period, poll_time"
        ),
        [
            "1000",
            "3000",
            "10",
            "20",
            &t0.to_string(),
            "300",
            &t1.to_string()
        ],
        "eth1 after the second poll"
    );
    assert_eq!(
        port_columns(
            &db,
            ids[1],
            "ifOperStatus, ifOperStatus_prev, ifInOctets_rate"
        ),
        ["down", "up", "1"],
        "eth2 went down"
    );
    assert_eq!(
        port_columns(&db, ids[2], "ifInOctets, ifInOctets_delta, ifInOctets_rate"),
        ["10", "NULL", "NULL"],
        "eth3's counter went backwards: no delta, no rate"
    );

    // A third poll where eth2 stays down keeps `_prev` at the value before the change.
    write(&pool, device, t1 + 300, &[sample(ids[1], 2, "down", 1600)]).await;
    assert_eq!(
        port_columns(&db, ids[1], "ifOperStatus, ifOperStatus_prev"),
        ["down", "up"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_ports_in_few_statements_and_no_live_orphans() {
    let db = MariaDb::start();
    let link = LibrenmsLink::new(&db, 60);
    let device = insert_device(&db, &DeviceSpec::v2c("big", "127.0.0.1", 161, "c"));
    let count = 2500;
    let ids = insert_ports(&db, device, count);
    let pool = connect(&db, &link);
    let samples: Vec<PortSample> = ids
        .iter()
        .zip(1..)
        .map(|(&id, ifindex)| sample(id, ifindex, "up", u64::from(ifindex)))
        .collect();
    assert_eq!(
        write(&pool, device, 1_700_000_000, &samples).await,
        u64::from(count)
    );
    let written = db.sql(&format!(
        "SELECT COUNT(*) FROM ports WHERE device_id = {device} AND poll_time = 1700000000 \
         AND ifInOctets = ifIndex"
    ));
    assert_eq!(
        written,
        [[count.to_string()]],
        "every port row updated with its own values"
    );

    // A row LibreNMS deleted between discovery and the write comes back marked deleted.
    db.exec(&format!("DELETE FROM ports WHERE port_id = {}", ids[0]));
    write(&pool, device, 1_700_000_300, &samples[..1]).await;
    assert_eq!(
        port_columns(&db, ids[0], "deleted, device_id"),
        ["1", &device.to_string()]
    );
}
