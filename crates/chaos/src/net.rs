//! The chaos tool's private network: Linux network namespaces joined by veth
//! pairs, so a partition is a real cut of a link, not a mocked drop.
//!
//! Layout (all inside namespaces this tool creates; nothing touches the
//! host's interfaces, and no address is reachable from outside):
//! - a hub namespace holding two bridges: `brc` (cluster link: Raft and Peer
//!   traffic between nodes) and `brs` (service link: the SNMP agent,
//!   rrdcached and the tool's own Admin queries, all in the hub at
//!   [`HUB_SERVICE_IP`]);
//! - one namespace per node with two veths: `c0` on `brc` ([`cluster_ip`])
//!   and `s0` on `brs` ([`service_ip`]).
//!
//! A partition sets the hub end of the node's cluster veth down: the node
//! cannot reach any other node, yet still reaches the agent, so a node that
//! kept polling while cut off would show up in the agent's record.
//!
//! Why 10.x and not 127/8: Linux treats 127/8 on a non-loopback device as
//! martian even with `route_localnet` (connections time out), so the links
//! use 10.231.0.0/24 and 10.232.0.0/24, which exist only inside these
//! namespaces.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Address of the hub on the service bridge (agent, rrdcached).
pub const HUB_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 254);

/// Node `i`'s (1-based) address on the cluster link: it advertises this one.
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, 0, i as u8)
}

/// Node `i`'s address on the service link: it polls from this one.
pub fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 232, 0, i as u8)
}

/// Prefix of every namespace this tool creates (`rpchaos<pid>-hub`, `rpchaos<pid>-n1`, …).
const PREFIX: &str = "rpchaos";

/// Most nodes: addresses are `.1` … `.253` and interface names stay short.
pub const MAX_NODES: usize = 99;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "cannot run `ip {args}`: {message} (the chaos tool needs Linux network namespaces: \
         run it as root with iproute2 installed)"
    )]
    Ip { args: String, message: String },
}

/// Runs `ip <args>`.
pub fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Ip {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The namespaces of one chaos run; deleted on drop.
pub struct Net {
    tag: String,
    nodes: usize,
    created: Vec<String>,
}

impl Net {
    /// Creates the hub and `nodes` node namespaces, wired as described above.
    pub fn create(nodes: usize) -> Result<Net, NetError> {
        remove_stale();
        let mut net = Net {
            tag: format!("{PREFIX}{}", std::process::id()),
            nodes,
            created: Vec::new(),
        };
        let hub = net.hub();
        net.add_ns(&hub)?;
        for (bridge, addr) in [("brc", None), ("brs", Some(HUB_SERVICE_IP))] {
            ip(&["-n", &hub, "link", "add", bridge, "type", "bridge"])?;
            if let Some(addr) = addr {
                ip(&[
                    "-n",
                    &hub,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    bridge,
                ])?;
            }
            ip(&["-n", &hub, "link", "set", bridge, "up"])?;
        }
        for i in 1..=nodes {
            let ns = net.node(i);
            net.add_ns(&ns)?;
            for (link, bridge, addr) in [("c", "brc", cluster_ip(i)), ("s", "brs", service_ip(i))] {
                let hub_end = format!("{link}{i}");
                let node_end = format!("{link}0");
                ip(&[
                    "-n", &hub, "link", "add", &hub_end, "type", "veth", "peer", "name", &node_end,
                    "netns", &ns,
                ])?;
                ip(&["-n", &hub, "link", "set", &hub_end, "master", bridge, "up"])?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    &node_end,
                ])?;
                ip(&["-n", &ns, "link", "set", &node_end, "up"])?;
            }
        }
        Ok(net)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), NetError> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    pub fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// Namespace of node `i` (1-based).
    pub fn node(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// A command that runs `program` inside namespace `ns`. `ip netns exec`
    /// execs the program, so the child's pid is the program's own.
    pub fn exec(ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Cuts node `i` off from the other nodes (its cluster link goes down).
    pub fn cut(&self, i: usize) -> Result<(), NetError> {
        ip(&["-n", &self.hub(), "link", "set", &format!("c{i}"), "down"])
    }

    /// Undoes [`Net::cut`].
    pub fn heal(&self, i: usize) -> Result<(), NetError> {
        ip(&["-n", &self.hub(), "link", "set", &format!("c{i}"), "up"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            kill_pids_in(&ns);
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// SIGKILLs every process still inside namespace `ns`.
fn kill_pids_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Deletes namespaces left by chaos runs whose process is gone (killed with
/// SIGKILL, so it could not clean up).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_pids_in(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}
