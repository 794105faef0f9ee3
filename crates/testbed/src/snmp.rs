//! SNMP credentials of the test agents and thin wrappers over the net-snmp CLI (snmpget/snmpwalk).

use std::process::Command;

use super::process::find_program;

/// How a test (or raftpoll) talks to one agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnmpCreds {
    V2c {
        community: String,
    },
    /// USM authPriv. Protocol names as raftpoll's CLI spells them (`sha`, `aes`, ...).
    V3 {
        user: String,
        auth_proto: String,
        auth_pass: String,
        priv_proto: String,
        priv_pass: String,
    },
}

impl SnmpCreds {
    pub fn v2c(community: &str) -> Self {
        SnmpCreds::V2c {
            community: community.to_string(),
        }
    }

    /// The same credentials with another auth password (for wrong-password tests).
    pub fn with_auth_pass(&self, pass: &str) -> Self {
        match self {
            SnmpCreds::V3 {
                user,
                auth_proto,
                priv_proto,
                priv_pass,
                ..
            } => SnmpCreds::V3 {
                user: user.clone(),
                auth_proto: auth_proto.clone(),
                auth_pass: pass.to_string(),
                priv_proto: priv_proto.clone(),
                priv_pass: priv_pass.clone(),
            },
            other => other.clone(),
        }
    }

    /// Arguments of net-snmp's CLI tools.
    pub fn netsnmp_args(&self) -> Vec<String> {
        match self {
            SnmpCreds::V2c { community } => vec!["-v2c".into(), "-c".into(), community.clone()],
            SnmpCreds::V3 {
                user,
                auth_proto,
                auth_pass,
                priv_proto,
                priv_pass,
            } => vec![
                "-v3".into(),
                "-l".into(),
                "authPriv".into(),
                "-u".into(),
                user.clone(),
                "-a".into(),
                auth_proto.to_uppercase(),
                "-A".into(),
                auth_pass.clone(),
                "-x".into(),
                priv_proto.to_uppercase(),
                "-X".into(),
                priv_pass.clone(),
            ],
        }
    }

    /// Arguments of `raftpoll device add` (issue 2's CLI).
    pub fn raftpoll_args(&self) -> Vec<String> {
        match self {
            SnmpCreds::V2c { community } => vec![
                "--snmp-version".into(),
                "v2c".into(),
                "--community".into(),
                community.clone(),
            ],
            SnmpCreds::V3 {
                user,
                auth_proto,
                auth_pass,
                priv_proto,
                priv_pass,
            } => vec![
                "--snmp-version".into(),
                "v3".into(),
                "--v3-user".into(),
                user.clone(),
                "--auth-proto".into(),
                auth_proto.clone(),
                "--auth-pass".into(),
                auth_pass.clone(),
                "--priv-proto".into(),
                priv_proto.clone(),
                "--priv-pass".into(),
                priv_pass.clone(),
            ],
        }
    }
}

/// Runs a net-snmp tool with numeric output, no MIBs, and a short timeout.
fn netsnmp(
    tool: &str,
    format: &str,
    addr: &str,
    creds: &SnmpCreds,
    oids: &[&str],
) -> Result<String, String> {
    let out = Command::new(find_program(tool))
        .args(["-m", "", "-On", format, "-Ot", "-Oe", "-t", "1", "-r", "1"])
        .args(creds.netsnmp_args())
        .arg(addr)
        .args(oids)
        .output()
        .map_err(|e| format!("run {tool}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{tool} {addr} {oids:?} failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(stdout)
}

/// GETs `oids` and returns one value per OID (strings unquoted). A missing object is an error.
pub fn snmpget(addr: &str, creds: &SnmpCreds, oids: &[&str]) -> Result<Vec<String>, String> {
    let stdout = netsnmp("snmpget", "-Oqv", addr, creds, oids)?;
    let values: Vec<String> = stdout.lines().map(unquote).collect();
    if let Some(bad) = values.iter().find(|v| v.starts_with("No Such")) {
        return Err(format!("snmpget {addr} {oids:?}: {bad}"));
    }
    if values.len() != oids.len() {
        return Err(format!(
            "snmpget {addr} {oids:?}: unexpected output {stdout:?}"
        ));
    }
    Ok(values)
}

/// GETs one numeric object (counter, gauge, integer, timeticks).
pub fn snmpget_u64(addr: &str, creds: &SnmpCreds, oid: &str) -> Result<u64, String> {
    let values = snmpget(addr, creds, &[oid])?;
    values[0]
        .parse()
        .map_err(|_| format!("snmpget {addr} {oid}: not a number: {:?}", values[0]))
}

/// Walks the subtree at `oid`: (numeric OID with leading dot, value) pairs, strings unquoted.
pub fn snmpwalk(addr: &str, creds: &SnmpCreds, oid: &str) -> Result<Vec<(String, String)>, String> {
    let stdout = netsnmp("snmpwalk", "-Oq", addr, creds, &[oid])?;
    let mut rows: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        // net-snmp GETs the root OID of an empty subtree and prints why it has no value.
        if line.contains("No Such Object") || line.contains("No Such Instance") {
            continue;
        }
        match line.split_once(' ') {
            Some((o, v)) if o.starts_with('.') => rows.push((o.to_string(), unquote(v))),
            // A string value with an embedded newline continues on the next line.
            _ => match rows.last_mut() {
                Some((_, v)) => {
                    v.push('\n');
                    v.push_str(line);
                }
                None if line.starts_with('.') => rows.push((line.to_string(), String::new())),
                None => return Err(format!("snmpwalk {addr} {oid}: unexpected output {line:?}")),
            },
        }
    }
    Ok(rows)
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}
