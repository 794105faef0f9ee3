//! A host that exists but answers no ping: a network namespace the test creates, joined to the
//! host by a veth pair on a private /30, with `net.ipv4.icmp_echo_ignore_all=1` inside (a
//! per-namespace setting). Packets to it go down the veth and never leave the machine. Needs
//! root (CAP_NET_ADMIN); deleted on drop.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this process runs as root (uid 0), from /proc/self/status.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs `ip <args>`; Err with its stderr unless it succeeds.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// See the module doc.
pub struct SilentHost {
    ns: String,
    host_if: String,
    host_addr: Ipv4Addr,
    addr: Ipv4Addr,
}

impl SilentHost {
    /// Creates the namespace, the veth pair and the addresses; panics (after cleaning up what
    /// it made) naming the step that failed, or if not root.
    pub fn create() -> SilentHost {
        assert!(
            is_root(),
            "creating a network namespace needs root (CAP_NET_ADMIN): run this test as root, \
             as CI does"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 characters.
        let tag = format!("{:05}{}", pid % 100_000, n % 100);
        let (a, b) = ((pid % 250) as u8, ((n % 64) * 4) as u8);
        let host = SilentHost {
            ns: format!("rptest-{tag}"),
            host_if: format!("rpth{tag}"),
            host_addr: Ipv4Addr::new(10, 254, a, b + 1),
            addr: Ipv4Addr::new(10, 254, a, b + 2),
        };
        if let Err(e) = host.setup() {
            // Drop cleans up whatever was made.
            panic!("setting up network namespace {}: {e}", host.ns);
        }
        host
    }

    fn setup(&self) -> Result<(), String> {
        let peer = self.host_if.replacen("rpth", "rptp", 1);
        ip(&["netns", "add", &self.ns])?;
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.host_addr),
            "dev",
            &self.host_if,
        ])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{}/30", self.addr),
            "dev",
            &peer,
        ])?;
        ip(&["-n", &self.ns, "link", "set", &peer, "up"])?;
        ip(&["-n", &self.ns, "link", "set", "lo", "up"])?;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(["sysctl", "-w", "net.ipv4.icmp_echo_ignore_all=1"])
            .output()
            .map_err(|e| format!("run sysctl in {}: {e}", self.ns))?;
        if !out.status.success() {
            return Err(format!(
                "sysctl icmp_echo_ignore_all in {}: {}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // The address must be reached through our veth only: nothing leaves the machine.
        let route = ip(&["route", "get", &self.addr.to_string()])?;
        if !route.contains(&format!("dev {}", self.host_if)) {
            return Err(format!(
                "{} is not routed through {}: {route}",
                self.addr, self.host_if
            ));
        }
        Ok(())
    }

    /// The address inside the namespace (answers no ICMP echo).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The host end's address.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }
}

impl Drop for SilentHost {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; deleting the namespace would too.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
