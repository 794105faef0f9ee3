//! raftpoll's link to a test bed [`MariaDb`] as LibreNMS: the `[librenms]` config table (the
//! password in a 0600 file, never on a command line or in the config), and `devices` rows as
//! LibreNMS's "add device" would write them.

use std::fs;
use std::path::{Path, PathBuf};

use super::mariadb::{DATABASE, MariaDb};
use super::process::{chmod, test_dir};
use super::raftpoll::NodeConfig;

/// How a node reaches the database: URL (no password), password file, sync interval.
pub struct LibrenmsLink {
    database: String,
    password: String,
    password_file: PathBuf,
    sync_interval_s: u64,
    _dir: tempfile::TempDir,
}

impl LibrenmsLink {
    /// The `librenms` user of `db`, reading `devices` every `sync_interval_s` seconds.
    pub fn new(db: &MariaDb, sync_interval_s: u64) -> LibrenmsLink {
        Self::as_user(db, super::mariadb::USER, db.password(), sync_interval_s)
    }

    /// Another user of `db` (e.g. one made by [`MariaDb::create_user`] with fewer grants).
    pub fn as_user(db: &MariaDb, user: &str, password: &str, sync_interval_s: u64) -> LibrenmsLink {
        let dir = test_dir("librenms-secret");
        let password_file = dir.path().join("db-password");
        fs::write(&password_file, format!("{password}\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", password_file.display()));
        chmod(&password_file, 0o600);
        LibrenmsLink {
            database: format!("mysql://{user}@127.0.0.1:{}/{DATABASE}", db.port()),
            password: password.to_string(),
            password_file,
            sync_interval_s,
            _dir: dir,
        }
    }

    /// "mysql://user@127.0.0.1:<port>/librenms" (no password).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The password (for checking it never shows up in output).
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The `[librenms]` table of a node's config.
    pub fn table(&self) -> toml::Table {
        use toml::Value;
        let mut t = toml::Table::new();
        t.insert("database".into(), Value::String(self.database.clone()));
        t.insert(
            "password_file".into(),
            Value::String(self.password_file.display().to_string()),
        );
        t.insert(
            "sync_interval_s".into(),
            Value::Integer(self.sync_interval_s as i64),
        );
        t
    }

    /// Puts [`LibrenmsLink::table`] into `cfg` as `[librenms]`.
    pub fn configure(&self, cfg: &mut NodeConfig) {
        cfg.extra
            .insert("librenms".into(), toml::Value::Table(self.table()));
    }
}

/// A `devices` row to insert: SNMP v2c over UDP, as LibreNMS's "add device" writes it.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    pub hostname: String,
    /// `overwrite_ip`: the address polled instead of resolving the hostname.
    pub ip: String,
    pub port: u16,
    pub community: String,
    pub transport: String,
    pub snmp_disable: bool,
}

impl DeviceSpec {
    pub fn v2c(hostname: &str, ip: &str, port: u16, community: &str) -> DeviceSpec {
        DeviceSpec {
            hostname: hostname.to_string(),
            ip: ip.to_string(),
            port,
            community: community.to_string(),
            transport: "udp".into(),
            snmp_disable: false,
        }
    }

    pub fn transport(mut self, transport: &str) -> DeviceSpec {
        self.transport = transport.to_string();
        self
    }
}

/// Inserts `spec` into `devices` (status 0, status_reason ''); returns its device_id.
pub fn insert_device(db: &MariaDb, spec: &DeviceSpec) -> u32 {
    let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    let rows = db.sql(&format!(
        "INSERT INTO devices (hostname, overwrite_ip, community, port, snmpver, transport, \
         snmp_disable, status, status_reason) VALUES ({}, {}, {}, {}, 'v2c', {}, {}, 0, '');\n\
         SELECT LAST_INSERT_ID();",
        q(&spec.hostname),
        q(&spec.ip),
        q(&spec.community),
        spec.port,
        q(&spec.transport),
        u8::from(spec.snmp_disable),
    ));
    rows.first()
        .and_then(|r| r.first())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no device_id for {}: {rows:?}", spec.hostname))
}
