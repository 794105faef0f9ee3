//! A real MariaDB with LibreNMS's tables (`librenms/schema.sql`), for the LibreNMS drop-in's tests.
//!
//! Each [`MariaDb`] has its own data dir, unix socket and TCP port on 127.0.0.1, and is killed on
//! drop, like the other daemons here. Grants are enforced (no `--skip-grant-tables`): `root`
//! (no password) is reachable only over the socket, which lives in our 0700 temp dir; the
//! `librenms` user has a random password and ALL on `librenms.*`, as LibreNMS's install docs give
//! it. SQL is passed to the `mariadb` client on stdin and passwords through `MYSQL_PWD`, so
//! neither shows up in a process list or in our logs.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{
    Daemon, find_program, free_tcp_port, start_on_free_port, test_dir, wait_until,
};

/// The DDL of the LibreNMS tables raftpoll uses (a subset of LibreNMS's schema; see its header).
pub const LIBRENMS_SCHEMA: &str = include_str!("../librenms/schema.sql");

/// The database and user LibreNMS's install docs create.
pub const DATABASE: &str = "librenms";
pub const USER: &str = "librenms";

/// A cold start is ~1-3 s; a loaded 2-core CI machine can take many times that.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// SIGTERM makes mariadbd flush and exit; it needs a few seconds at most on this data size.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Where the time of [`MariaDb::start`] went.
#[derive(Clone, Copy, Debug)]
pub struct StartTimings {
    /// Creating the system tables in a fresh data dir (`mariadbd --bootstrap`).
    pub init: Duration,
    /// From spawning mariadbd until `SELECT 1` answered on the socket.
    pub server: Duration,
    /// Creating the `librenms` database, its tables and its user.
    pub setup: Duration,
}

impl StartTimings {
    pub fn total(&self) -> Duration {
        self.init + self.server + self.setup
    }
}

pub struct MariaDb {
    port: u16,
    dir: PathBuf,
    password: String,
    daemon: Daemon,
    timings: StartTimings,
    _temp: tempfile::TempDir,
}

impl MariaDb {
    /// Initialises a data dir, starts mariadbd on a free port, waits until it answers a query,
    /// then creates the `librenms` database with LibreNMS's tables and the `librenms` user.
    /// Panics (with mariadbd's logs) if any step fails.
    pub fn start() -> MariaDb {
        let temp = test_dir("mariadb");
        let dir = temp.path().to_path_buf();
        let started = Instant::now();
        init_data_dir(&dir);
        let init = started.elapsed();

        let started = Instant::now();
        let (port, daemon) = start_on_free_port("mariadbd", free_tcp_port, |port| {
            let mut daemon = daemon(&dir, port);
            daemon.spawn();
            let sock = dir.join("mariadbd.sock");
            daemon.wait_ready(READY_DEADLINE, || answers(&sock))?;
            Ok((port, daemon))
        });
        let server = started.elapsed();

        let started = Instant::now();
        let mut db = MariaDb {
            port,
            dir,
            password: random_password(),
            daemon,
            timings: StartTimings {
                init,
                server,
                setup: Duration::ZERO,
            },
            _temp: temp,
        };
        // utf8mb4_unicode_ci: the database default LibreNMS's install docs give.
        db.run_sql(
            None,
            &format!(
                "CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
            ),
        )
        .unwrap_or_else(|e| panic!("create database {DATABASE}: {e}\n{}", db.logs()));
        db.run_sql(Some(DATABASE), LIBRENMS_SCHEMA)
            .unwrap_or_else(|e| panic!("load librenms/schema.sql: {e}\n{}", db.logs()));
        let password = db.password.clone();
        db.create_user(
            USER,
            &password,
            &[&format!("ALL PRIVILEGES ON `{DATABASE}`.*")],
        );
        db.timings.setup = started.elapsed();
        db
    }

    /// The unix socket (root can log in here, without a password).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mariadbd.sock")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "mysql://librenms@127.0.0.1:<port>/librenms": no password in it, so it can be logged;
    /// the password is [`MariaDb::password`].
    pub fn url(&self) -> String {
        format!("mysql://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The `librenms` user's password (random per instance).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// How long `start` took, by phase.
    pub fn start_timings(&self) -> StartTimings {
        self.timings
    }

    /// Runs SQL as root (over the socket, in the `librenms` database) and returns the rows of
    /// the last statement's result, each value as text (NULL as "NULL"). Panics with the
    /// client's error on failure.
    pub fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        self.run_sql(Some(DATABASE), sql)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\nstatement: {sql}"))
    }

    /// Runs SQL as root for its effect (see [`MariaDb::sql`]).
    pub fn exec(&self, sql: &str) {
        self.sql(sql);
    }

    /// Runs SQL as `user` over TCP (in the `librenms` database), as raftpoll connects. Err holds
    /// the client's error text, e.g. "ERROR 1142 (42000) … UPDATE command denied to user …".
    pub fn sql_as(
        &self,
        user: &str,
        password: &str,
        sql: &str,
    ) -> Result<Vec<Vec<String>>, String> {
        self.sql_as_in(Some(DATABASE), user, password, sql)
    }

    /// [`MariaDb::sql_as`] in `database`, or in none (names must then be qualified): a user
    /// without any privilege on a database is refused a connection to it before any statement.
    pub fn sql_as_in(
        &self,
        database: Option<&str>,
        user: &str,
        password: &str,
        sql: &str,
    ) -> Result<Vec<Vec<String>>, String> {
        let port = format!("--port={}", self.port);
        let user = format!("--user={user}");
        let db = database.map(|d| format!("--database={d}"));
        let mut args = vec!["--protocol=TCP", "--host=127.0.0.1", &port, &user];
        args.extend(db.as_deref());
        client(&args, Some(password), sql)
    }

    /// Creates `name`@`127.0.0.1` and `name`@`localhost` with `password`, then grants each of
    /// `grants`, written as "<privileges> ON <object>" (e.g. "SELECT ON librenms.devices").
    /// No grants: the user can log in and do nothing else.
    pub fn create_user(&self, name: &str, password: &str, grants: &[&str]) {
        let (name_q, pass_q) = (quote(name), quote(password));
        let mut sql = String::new();
        for host in ["127.0.0.1", "localhost"] {
            sql.push_str(&format!(
                "CREATE USER {name_q}@'{host}' IDENTIFIED BY {pass_q};\n"
            ));
            for grant in grants {
                sql.push_str(&format!("GRANT {grant} TO {name_q}@'{host}';\n"));
            }
        }
        // The statement holds the password: the panic shows only the client's error, with the
        // password masked should the error quote the statement.
        if let Err(e) = self.run_sql(None, &sql) {
            let e = if password.is_empty() {
                e
            } else {
                e.replace(password, "<password>")
            };
            panic!("create user {name} with grants {grants:?}: {e}");
        }
    }

    /// Stops mariadbd (SIGTERM: it flushes and exits cleanly; SIGKILL after 30 s).
    pub fn stop(&mut self) {
        self.daemon.terminate(STOP_GRACE);
    }

    /// SIGKILL: InnoDB recovers from its redo log at the next start.
    pub fn kill9(&mut self) {
        self.daemon.kill();
    }

    /// Starts mariadbd again on the same data dir, socket and port; returns once it answers.
    pub fn start_again(&mut self) {
        let sock = self.socket();
        // The old process may hold the port (or the data dir's lock) for a moment after a
        // kill: retry until the deadline.
        wait_until(
            READY_DEADLINE,
            "mariadbd to start again on its port",
            || {
                self.daemon.spawn();
                self.daemon
                    .wait_ready(READY_DEADLINE, || answers(&sock))
                    .ok()
            },
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The tails of mariadbd's logs (its error log holds the server's messages).
    pub fn logs(&self) -> String {
        self.daemon.logs()
    }

    /// Root over the socket, optionally in `database`.
    fn run_sql(&self, database: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let socket = format!("--socket={}", self.socket().display());
        let db = database.map(|d| format!("--database={d}"));
        let mut args = vec!["--protocol=SOCKET", &socket, "--user=root"];
        args.extend(db.as_deref());
        client(&args, None, sql)
    }
}

/// Creates the system tables (users, grants) in `<dir>/data`. We feed mariadbd --bootstrap the
/// package's SQL ourselves, as mariadb-install-db does, but without the help tables, the `sys`
/// schema and the GIS procedures: nobody here needs them and they triple the time (~1.5 s
/// instead of ~4.5 s). Falls back to mariadb-install-db if the SQL files are not where Debian
/// puts them.
fn init_data_dir(dir: &Path) {
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap_or_else(|e| panic!("create {}: {e}", data.display()));
    let log_path = dir.join("bootstrap.log");
    let log = fs::File::create(&log_path)
        .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
    let files = [
        "mysql_system_tables.sql",
        "mysql_performance_tables.sql",
        "mysql_system_tables_data.sql",
    ];
    let sql_dir = ["/usr/share/mariadb", "/usr/share/mysql"]
        .into_iter()
        .map(Path::new)
        .find(|d| files.iter().all(|f| d.join(f).is_file()));

    let status = match sql_dir {
        Some(sql_dir) => {
            // mariadbd --bootstrap reads one statement per line ending in `;`.
            let mut sql = String::from(
                "create database if not exists mysql;\nuse mysql;\nSET @auth_root_socket=NULL;\n",
            );
            for f in files {
                let path = sql_dir.join(f);
                sql.push_str(
                    &fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
                );
                sql.push('\n');
            }
            // The data script makes passwordless root accounts for localhost, the host name,
            // 127.0.0.1 and ::1. Keep only localhost (the socket, in our 0700 dir): a local
            // process must not get root over TCP.
            sql.push_str("DELETE FROM global_priv WHERE User='root' AND Host<>'localhost';\n");
            sql.push_str("DELETE FROM proxies_priv WHERE User='root' AND Host<>'localhost';\n");
            let mut child = Command::new(locate(SERVER))
                .arg("--no-defaults")
                .arg("--bootstrap")
                .arg(format!("--datadir={}", data.display()))
                // Its own temp dir: the bootstrap's temporary tables in the shared /tmp
                // have been seen vanishing under parallel tests ("Could not remove
                // temporary table … error: 2", then the bootstrap aborts).
                .arg(format!("--tmpdir={}", dir.display()))
                .args(user_arg())
                .args(["--log-warnings=0", "--enforce-storage-engine="])
                .args(["--max_allowed_packet=8M", "--net_buffer_length=16K"])
                .args(SMALL_SERVER)
                .stdin(Stdio::piped())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn mariadbd --bootstrap: {e}"));
            let mut stdin = child.stdin.take().expect("bootstrap stdin");
            let _ = stdin.write_all(sql.as_bytes());
            drop(stdin);
            child.wait().expect("wait for mariadbd --bootstrap")
        }
        None => Command::new(locate(INSTALL_DB))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(user_arg())
            .args(SMALL_SERVER)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .status()
            .unwrap_or_else(|e| panic!("run mariadb-install-db: {e}")),
    };
    if !status.success() {
        panic!(
            "initialising the MariaDB data dir {} failed ({status}):\n{}",
            data.display(),
            fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
}

/// Server options shared by the bootstrap and the daemon: small memory and no fsync, so a
/// start takes a second, not ten. Commits still reach the OS at once
/// (flush_log_at_trx_commit=2), so a SIGKILL loses nothing; only a machine crash would.
const SMALL_SERVER: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-log-buffer-size=2M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-flush-method=nosync",
    "--key-buffer-size=1M",
    "--performance-schema=OFF",
];

fn daemon(dir: &Path, port: u16) -> Daemon {
    let mut daemon = Daemon::new("mariadbd", locate(SERVER), dir)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!(
            "--log-error={}",
            dir.join("mariadbd.err").display()
        ))
        .arg(format!("--tmpdir={}", dir.display()))
        // Accounts are matched by IP (127.0.0.1), never by a DNS lookup of the client.
        .arg("--skip-name-resolve")
        .arg("--character-set-server=utf8mb4")
        .arg("--collation-server=utf8mb4_unicode_ci")
        .log_file(dir.join("mariadbd.err"));
    for arg in user_arg()
        .into_iter()
        .chain(SMALL_SERVER.iter().map(|s| s.to_string()))
    {
        daemon = daemon.arg(arg);
    }
    daemon
}

/// The server and client programs, by their MariaDB names or the older MySQL ones.
const SERVER: &[&str] = &["mariadbd", "mysqld"];
const CLIENT: &[&str] = &["mariadb", "mysql"];
const INSTALL_DB: &[&str] = &["mariadb-install-db", "mysql_install_db"];

/// The first of `names` that is installed (see [`find_program`]); panics naming the first.
fn locate(names: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| find_program(names[0]))
}

/// mariadbd refuses to run as root unless told `--user=root`; as anyone else it needs nothing.
fn user_arg() -> Vec<String> {
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    if uid == 0 {
        vec!["--user=root".to_string()]
    } else {
        Vec::new()
    }
}

/// Ready when a real query answers on the socket (the socket accepting is not enough: the
/// server may still be starting InnoDB).
fn answers(sock: &Path) -> bool {
    // The socket file appears when the server listens; until then, spare a client run. (Not a
    // bare connect: the server logs each one as an aborted connection.)
    if !sock.exists() {
        return false;
    }
    let socket = format!("--socket={}", sock.display());
    client(
        &["--protocol=SOCKET", &socket, "--user=root"],
        None,
        "SELECT 1;",
    )
    .is_ok_and(|rows| rows == [["1"]])
}

/// Runs the `mariadb` client in batch mode (`-N -B`), SQL on stdin, the password (if any) in
/// MYSQL_PWD. Returns the rows, values unescaped; Err holds the client's stderr.
fn client(args: &[&str], password: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let program = locate(CLIENT);
    let mut command = Command::new(&program);
    command.arg("--no-defaults").args(args).args([
        "--batch",
        "--skip-column-names",
        "--connect-timeout=10",
    ]);
    match password {
        Some(p) => command.env("MYSQL_PWD", p),
        None => command.env_remove("MYSQL_PWD"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))?;
    let mut stdin = child.stdin.take().expect("client stdin");
    // A write error means the client exited early; its stderr says why.
    let _ = stdin.write_all(sql.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.split('\t').map(unescape).collect())
        .collect())
}

/// Undoes batch mode's escaping of values: \t \n \\ \0.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A single-quoted SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// 32 hex digits from the std library's randomly seeded hasher (no rand crate needed; this is
/// a test password, not a key).
fn random_password() -> String {
    (0..2)
        .map(|i| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_batch_values() {
        assert_eq!(unescape(r"a\tb\nc\\d"), "a\tb\nc\\d");
        assert_eq!(quote("it's a \\ test"), r"'it''s a \\ test'");
    }

    #[test]
    fn passwords_differ() {
        let (a, b) = (random_password(), random_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
