//! A real net-snmp agent (live counters of this machine) on a free loopback UDP port, v2c and v3.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::process::{Daemon, find_program, free_udp_port, start_on_free_port, test_dir};
use super::snmp::{SnmpCreds, snmpget};

/// v2c community of the agent (read-only, 127.0.0.1 only).
pub const SNMPD_COMMUNITY: &str = "public";
/// v3 authPriv user of the agent, with its protocols (raftpoll CLI spelling) and passwords.
pub const V3_USER: &str = "raftpoll";
pub const V3_AUTH_PROTO: &str = "sha";
pub const V3_AUTH_PASS: &str = "raftpoll-auth-pass";
pub const V3_PRIV_PROTO: &str = "aes";
pub const V3_PRIV_PASS: &str = "raftpoll-priv-pass";

/// sysUpTime.0, answered by every agent.
pub const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";

const READY_DEADLINE: Duration = Duration::from_secs(20);

/// A v3 user of the agent, protocols in net-snmp's spelling (`MD5`, `SHA`, `SHA-512`, `DES`,
/// `AES`, `AES-256`); `privacy` is `None` for an authNoPriv user.
#[derive(Clone, Copy, Debug)]
pub struct SnmpdUser {
    pub name: &'static str,
    pub auth: &'static str,
    pub auth_pass: &'static str,
    pub privacy: Option<(&'static str, &'static str)>,
}

/// The agent's default v3 user ([`V3_USER`], authPriv).
pub const DEFAULT_USER: SnmpdUser = SnmpdUser {
    name: V3_USER,
    auth: "SHA",
    auth_pass: V3_AUTH_PASS,
    privacy: Some(("AES", V3_PRIV_PASS)),
};

pub struct Snmpd {
    port: u16,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Snmpd {
    /// Starts snmpd with the default v3 user and waits until it answers a v2c GET.
    pub fn start() -> Snmpd {
        Snmpd::start_with(&[DEFAULT_USER], "")
    }

    /// Starts snmpd with these v3 users and `extra` lines of snmpd.conf (e.g. `sysName x`).
    pub fn start_with(users: &[SnmpdUser], extra: &str) -> Snmpd {
        start_on_free_port("snmpd", free_udp_port, |port| {
            let dir = test_dir("snmpd");
            let mut daemon = spawn(dir.path(), port, users, extra);
            let addr = format!("127.0.0.1:{port}");
            let creds = SnmpCreds::v2c(SNMPD_COMMUNITY);
            daemon.wait_ready(READY_DEADLINE, || {
                snmpget(&addr, &creds, &[SYS_UPTIME]).is_ok()
            })?;
            Ok(Snmpd { port, daemon, dir })
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:<port>"
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The agent's whole log file (`-Lf`): every `Connection from UDP: …` line.
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("snmpd.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn v2c(&self) -> SnmpCreds {
        SnmpCreds::v2c(SNMPD_COMMUNITY)
    }

    /// The configured v3 authPriv user.
    pub fn v3(&self) -> SnmpCreds {
        SnmpCreds::V3 {
            user: V3_USER.into(),
            auth_proto: V3_AUTH_PROTO.into(),
            auth_pass: V3_AUTH_PASS.into(),
            priv_proto: V3_PRIV_PROTO.into(),
            priv_pass: V3_PRIV_PASS.into(),
        }
    }

    pub fn logs(&self) -> String {
        self.daemon.logs()
    }
}

fn spawn(dir: &Path, port: u16, users: &[SnmpdUser], extra: &str) -> Daemon {
    let persist = dir.join("persist");
    fs::create_dir_all(&persist).expect("create snmpd persistent dir");
    let conf = dir.join("snmpd.conf");
    // createUser is consumed at start and rewritten (as a localized key) into the persistent
    // dir, which SNMP_PERSISTENT_DIR keeps inside our temp dir.
    let mut text = format!(
        "agentAddress udp:127.0.0.1:{port}\n\
         rocommunity {SNMPD_COMMUNITY} 127.0.0.1\n"
    );
    for user in users {
        let (name, auth, auth_pass) = (user.name, user.auth, user.auth_pass);
        match user.privacy {
            Some((proto, pass)) => {
                text += &format!(
                    "createUser {name} {auth} \"{auth_pass}\" {proto} \"{pass}\"\nrouser {name} priv\n"
                )
            }
            None => {
                text += &format!("createUser {name} {auth} \"{auth_pass}\"\nrouser {name} auth\n")
            }
        }
    }
    text += extra;
    fs::write(&conf, text).expect("write snmpd.conf");
    let log = dir.join("snmpd.log");
    let mut daemon = Daemon::new("snmpd", find_program("snmpd"), dir)
        .env("SNMP_PERSISTENT_DIR", &persist)
        .arg("-f")
        .arg("-C")
        .arg("-c")
        .arg(&conf)
        .arg("-m")
        .arg("")
        .arg("-I")
        .arg("-smux")
        .arg("-Lf")
        .arg(&log)
        .arg("-p")
        .arg(dir.join("snmpd.pid"))
        .log_file(log);
    daemon.spawn();
    daemon
}
