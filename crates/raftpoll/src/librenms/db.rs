//! The LibreNMS database: a small connection pool (sqlx, no compile-time
//! queries), the privilege check made at start, and the queries raftpoll runs.
//! Errors name the database (without the password) and what was being done.

use super::LibrenmsError;
use super::inventory::DeviceRow;
use crate::config::{LIBRENMS_PASSWORD_ENV, LibrenmsConfig};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Executor, Row};
use std::str::FromStr;
use std::time::Duration;

/// Connections per node: inventory reads, write-back and the cluster rows
/// each use one at a time.
const MAX_CONNECTIONS: u32 = 4;
/// A query waiting longer than this for a connection fails (the database is
/// down or slow); callers retry on their next round.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// MySQL's "command denied to user for table" error number.
const ER_TABLEACCESS_DENIED: u16 = 1142;
/// MySQL's "access denied for user to database" error number.
const ER_DBACCESS_DENIED: u16 = 1044;

/// Checks `librenms.database` without connecting: a `mysql://` URL that
/// names a user and a database and holds no password.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))
        .ok_or("must start with mysql:// (e.g. mysql://librenms@127.0.0.1:3306/librenms)")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err(
            "must not hold the password: use librenms.password_file or RAFTPOLL_LIBRENMS_PASSWORD"
                .into(),
        );
    }
    let options = MySqlConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    if options.get_database().is_none_or(str::is_empty) {
        return Err("must name the database (…/librenms)".into());
    }
    Ok(())
}

/// The password: first line of `password_file`, else the environment.
fn password(config: &LibrenmsConfig) -> Result<Option<String>, LibrenmsError> {
    match &config.password_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|text| text.lines().next().map(str::to_string))
            .map_err(|e| LibrenmsError::PasswordFile {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        None => Ok(std::env::var(LIBRENMS_PASSWORD_ENV).ok()),
    }
}

/// A pool of connections to LibreNMS's database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: MySqlPool,
    /// `user@host:port/db` (or the socket path), for messages.
    shown: String,
    user: String,
    schema: String,
}

impl Db {
    /// A pool that connects on first use.
    pub fn connect_lazy(config: &LibrenmsConfig) -> Result<Db, LibrenmsError> {
        check_url(&config.database).map_err(LibrenmsError::Url)?;
        let mut options = MySqlConnectOptions::from_str(&config.database)
            .map_err(|e| LibrenmsError::Url(e.to_string()))?;
        if let Some(pw) = password(config)? {
            options = options.password(&pw);
        }
        let user = options.get_username().to_string();
        let schema = options.get_database().unwrap_or_default().to_string();
        let place = match options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        let shown = format!("{user}@{place}/{schema}");
        let pool = MySqlPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Db {
            pool,
            shown,
            user,
            schema,
        })
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// `user@host:port/db`, never the password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A query error, with a missing privilege named as such.
    pub fn error(&self, what: &'static str, e: sqlx::Error) -> LibrenmsError {
        LibrenmsError::Query {
            db: self.shown.clone(),
            what,
            message: e.to_string(),
        }
    }

    /// Runs a statement for every privilege raftpoll needs, each without
    /// effect (`WHERE 1 = 0`), so a missing grant is one clear error at start
    /// instead of failed writes later.
    pub async fn check_privileges(&self) -> Result<(), LibrenmsError> {
        const CHECKS: &[(&str, &str, &str)] = &[
            (
                "SELECT",
                "devices",
                "SELECT device_id FROM devices WHERE 1 = 0",
            ),
            (
                "UPDATE",
                "devices",
                "UPDATE devices SET status = status WHERE 1 = 0",
            ),
            ("SELECT", "ports", "SELECT port_id FROM ports WHERE 1 = 0"),
            (
                "INSERT",
                "ports",
                "INSERT INTO ports (device_id, ifIndex) SELECT 0, 0 FROM DUAL WHERE 1 = 0",
            ),
            (
                "UPDATE",
                "ports",
                "UPDATE ports SET deleted = deleted WHERE 1 = 0",
            ),
            (
                "INSERT",
                "device_graphs",
                "INSERT INTO device_graphs (device_id, graph) SELECT 0, '' FROM DUAL WHERE 1 = 0",
            ),
            (
                "INSERT",
                "device_outages",
                "INSERT INTO device_outages (device_id, going_down) SELECT 0, 0 FROM DUAL WHERE 1 = 0",
            ),
            (
                "UPDATE",
                "device_outages",
                "UPDATE device_outages SET up_again = up_again WHERE 1 = 0",
            ),
            (
                "INSERT",
                "poller_cluster",
                "INSERT INTO poller_cluster (node_id, poller_name, last_report, master) \
                 SELECT '', '', NOW(), 0 FROM DUAL WHERE 1 = 0",
            ),
            (
                "UPDATE",
                "poller_cluster",
                "UPDATE poller_cluster SET master = master WHERE 1 = 0",
            ),
            (
                "INSERT",
                "poller_cluster_stats",
                "INSERT INTO poller_cluster_stats (parent_poller, poller_type, depth, devices, \
                 worker_seconds, workers, frequency) SELECT 0, '', 0, 0, 0, 0, 0 FROM DUAL WHERE 1 = 0",
            ),
            (
                "UPDATE",
                "poller_cluster_stats",
                "UPDATE poller_cluster_stats SET depth = depth WHERE 1 = 0",
            ),
        ];
        for (privilege, table, sql) in CHECKS {
            if let Err(e) = self.pool.execute(*sql).await {
                let denied = e
                    .as_database_error()
                    .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
                    .is_some_and(|d| {
                        matches!(d.number(), ER_TABLEACCESS_DENIED | ER_DBACCESS_DENIED)
                    });
                return Err(if denied {
                    LibrenmsError::Privilege {
                        db: self.shown.clone(),
                        user: self.user.clone(),
                        schema: self.schema.clone(),
                        privilege,
                        table,
                    }
                } else {
                    self.error("checking privileges", e)
                });
            }
        }
        Ok(())
    }

    /// Every row of `devices`, with the columns the inventory needs. Casts
    /// keep the Rust types independent of the column types of a LibreNMS
    /// version (`tinyint` vs `boolean`, signed vs unsigned).
    pub async fn device_rows(&self) -> Result<Vec<DeviceRow>, LibrenmsError> {
        let rows = sqlx::query(
            "SELECT CAST(device_id AS UNSIGNED) AS device_id, hostname, overwrite_ip, \
             CAST(port AS UNSIGNED) AS port, transport, snmpver, community, \
             CAST(authlevel AS CHAR) AS authlevel, authname, authpass, authalgo, cryptopass, \
             cryptoalgo, CAST(poller_group AS SIGNED) AS poller_group, \
             CAST(disabled AS SIGNED) AS disabled, CAST(snmp_disable AS SIGNED) AS snmp_disable, \
             CAST(port_association_mode AS SIGNED) AS port_association_mode \
             FROM devices ORDER BY device_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("reading devices", e))?;
        rows.iter()
            .map(device_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.error("reading devices", e))
    }
}

fn device_row(r: &MySqlRow) -> Result<DeviceRow, sqlx::Error> {
    let text = |col: &str| -> Result<Option<String>, sqlx::Error> { r.try_get(col) };
    let number = |col: &str| -> Result<i64, sqlx::Error> { r.try_get(col) };
    let device_id: u64 = r.try_get("device_id")?;
    let port: u64 = r.try_get("port")?;
    Ok(DeviceRow {
        device_id: u32::try_from(device_id).unwrap_or(u32::MAX),
        hostname: r.try_get("hostname")?,
        overwrite_ip: text("overwrite_ip")?,
        port: u16::try_from(port).unwrap_or(0),
        transport: text("transport")?.unwrap_or_default(),
        snmpver: text("snmpver")?.unwrap_or_default(),
        community: text("community")?,
        authlevel: text("authlevel")?,
        authname: text("authname")?,
        authpass: text("authpass")?,
        authalgo: text("authalgo")?,
        cryptopass: text("cryptopass")?,
        cryptoalgo: text("cryptoalgo")?,
        poller_group: u32::try_from(number("poller_group")?).unwrap_or(0),
        disabled: number("disabled")? != 0,
        snmp_disable: number("snmp_disable")? != 0,
        port_association_mode: u32::try_from(number("port_association_mode")?).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_connecting() {
        assert!(check_url("mysql://librenms@127.0.0.1:3306/librenms").is_ok());
        assert!(
            check_url("mysql://librenms@localhost/librenms?socket=/run/mysqld/mysqld.sock").is_ok()
        );
        let refused = |url: &str| check_url(url).expect_err(url);
        assert!(refused("postgres://x@h/db").contains("mysql://"));
        let with_pw = refused("mysql://librenms:hunter22@127.0.0.1/librenms");
        assert!(with_pw.contains("must not hold the password"));
        assert!(!with_pw.contains("hunter22"));
        assert!(refused("mysql://librenms@127.0.0.1:3306").contains("database"));
    }
}
