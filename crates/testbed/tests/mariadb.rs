//! The test bed's MariaDB: LibreNMS's tables load, rows round-trip, the `librenms` user logs in
//! over TCP with its password, grants are enforced, and data survives stop/kill and restart.

use std::time::Instant;

use raftpoll_testbed::MariaDb;

#[test]
fn librenms_database_users_grants_and_restarts() {
    let started = Instant::now();
    let mut db = MariaDb::start();
    let t = db.start_timings();
    eprintln!(
        "mariadb: started in {:?} (init {:?}, server {:?}, setup {:?}); wall {:?}",
        t.total(),
        t.init,
        t.server,
        t.setup,
        started.elapsed()
    );
    assert_eq!(
        db.url(),
        format!("mysql://librenms@127.0.0.1:{}/librenms", db.port())
    );
    assert!(!db.url().contains(db.password()));

    // The tables and the fixed rows are there.
    let tables: Vec<String> = db
        .sql("SHOW TABLES")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    for t in [
        "device_graphs",
        "device_outages",
        "devices",
        "poller_cluster",
        "poller_cluster_stats",
        "poller_groups",
        "pollers",
        "port_association_mode",
        "ports",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "table {t} missing: {tables:?}"
        );
    }
    assert_eq!(
        db.sql("SELECT pom_id, name FROM port_association_mode ORDER BY pom_id"),
        [
            ["1", "ifIndex"],
            ["2", "ifName"],
            ["3", "ifDescr"],
            ["4", "ifAlias"]
        ]
    );

    // A device row round-trips, with LibreNMS's defaults filled in.
    db.exec(
        "INSERT INTO devices (hostname, community, snmpver, status_reason, ip) \
         VALUES ('sw1.example', 'public', 'v2c', '', INET6_ATON('192.0.2.7'))",
    );
    let rows = db.sql(
        "SELECT device_id, hostname, community, port, transport, poller_group, \
         port_association_mode, INET6_NTOA(ip), sysName, `ignore`, disabled FROM devices",
    );
    assert_eq!(
        rows,
        [[
            "1",
            "sw1.example",
            "public",
            "161",
            "udp",
            "0",
            "1",
            "192.0.2.7",
            "NULL",
            "0",
            "0"
        ]]
    );
    // Values with tabs, newlines and backslashes come back as stored.
    db.exec("UPDATE devices SET sysDescr = 'Linux\\tsw1\\nkernel \\\\ 6' WHERE device_id = 1");
    assert_eq!(
        db.sql("SELECT sysDescr FROM devices WHERE device_id = 1"),
        [["Linux\tsw1\nkernel \\ 6"]]
    );

    // ports.port_id is LibreNMS's auto-increment id; (device_id, ifIndex) is unique.
    db.exec(
        "INSERT INTO ports (device_id, ifIndex, ifName) VALUES (1, 1, 'lo'), (1, 2, 'eth0'), \
         (1, 3, 'eth1')",
    );
    assert_eq!(
        db.sql("SELECT port_id, ifIndex FROM ports ORDER BY port_id"),
        [["1", "1"], ["2", "2"], ["3", "3"]]
    );
    let dup = db.sql_as(
        "librenms",
        db.password(),
        "INSERT INTO ports (device_id, ifIndex) VALUES (1, 2)",
    );
    assert!(
        dup.as_ref().is_err_and(|e| e.contains("Duplicate entry")),
        "duplicate (device_id, ifIndex) was accepted: {dup:?}"
    );

    // The librenms user, over TCP with its password, can read and write its database...
    let rows = db
        .sql_as(
            "librenms",
            db.password(),
            "UPDATE devices SET status = 1, last_polled = NOW() WHERE device_id = 1; \
             SELECT status, CURRENT_USER() FROM devices WHERE device_id = 1",
        )
        .expect("librenms user over TCP");
    assert_eq!(rows, [["1", "librenms@127.0.0.1"]]);
    // ...but not with a wrong password, nor anything outside it.
    let denied = db.sql_as("librenms", "wrong", "SELECT 1");
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("Access denied")),
        "wrong password: {denied:?}"
    );
    let denied = db.sql_as("librenms", db.password(), "SELECT COUNT(*) FROM mysql.user");
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("denied")),
        "librenms read mysql.user: {denied:?}"
    );
    // root has no TCP account: only the socket (in our 0700 temp dir) lets it in.
    let denied = db.sql_as("root", "", "SELECT 1");
    assert!(denied.is_err(), "root logged in over TCP: {denied:?}");

    // A user without privileges is refused, with an error naming the privilege.
    db.create_user("readonly", "ro-secret", &["SELECT ON librenms.devices"]);
    db.create_user("nobody", "no-secret", &[]);
    assert_eq!(
        db.sql_as("readonly", "ro-secret", "SELECT hostname FROM devices")
            .expect("SELECT granted"),
        [["sw1.example"]]
    );
    let denied = db.sql_as("readonly", "ro-secret", "UPDATE devices SET status = 0");
    let err = denied.expect_err("UPDATE without the privilege succeeded");
    assert!(
        err.contains("UPDATE command denied"),
        "unexpected error: {err}"
    );
    let err = db
        .sql_as_in(
            None,
            "nobody",
            "no-secret",
            "UPDATE librenms.devices SET status = 0",
        )
        .expect_err("UPDATE without any privilege succeeded");
    assert!(
        err.contains("UPDATE command denied"),
        "unexpected error: {err}"
    );
    // With no privilege at all on the database, even connecting to it is refused.
    let err = db
        .sql_as("nobody", "no-secret", "SELECT 1")
        .expect_err("connected without any privilege");
    assert!(
        err.contains("Access denied") && err.contains("to database 'librenms'"),
        "unexpected error: {err}"
    );

    // Committed rows survive a clean stop and a SIGKILL, on the same port.
    let port = db.port();
    db.stop();
    assert!(!db.is_running());
    let restarted = Instant::now();
    db.start_again();
    eprintln!("mariadb: restarted after stop in {:?}", restarted.elapsed());
    assert_eq!(db.port(), port);
    db.exec("INSERT INTO device_outages (device_id, going_down) VALUES (1, 1700000000)");
    db.kill9();
    let restarted = Instant::now();
    db.start_again();
    eprintln!(
        "mariadb: restarted after kill -9 in {:?}",
        restarted.elapsed()
    );
    assert_eq!(
        db.sql("SELECT hostname, status FROM devices JOIN device_outages USING (device_id)"),
        [["sw1.example", "1"]]
    );
    assert_eq!(
        db.sql_as("librenms", db.password(), "SELECT COUNT(*) FROM ports")
            .expect("librenms after restart"),
        [["3"]]
    );

    // Nothing we logged holds the librenms password.
    assert!(!db.logs().contains(db.password()));
}
