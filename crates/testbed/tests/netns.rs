//! The test bed's `SilentHost`: a namespace and veth pair that exist while it lives (its address
//! routed through our veth only) and are gone after drop. Needs root, as CI runs.

use std::process::Command;

use raftpoll_testbed::SilentHost;
use raftpoll_testbed::netns::is_root;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn silent_host_is_set_up_and_cleaned_up() {
    assert!(
        is_root(),
        "this test creates a network namespace: run it as root"
    );
    let host = SilentHost::create();
    let ns = host.namespace().to_string();
    assert!(
        ip(&["netns", "list"]).contains(&ns),
        "namespace {ns} missing"
    );
    let route = ip(&["route", "get", &host.addr().to_string()]);
    assert!(
        !route.contains(" via "),
        "{} must be on a direct link, not through a gateway: {route}",
        host.addr()
    );
    let inside = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-n",
            "net.ipv4.icmp_echo_ignore_all",
        ])
        .output()
        .expect("run sysctl in the namespace");
    assert_eq!(String::from_utf8_lossy(&inside.stdout).trim(), "1");
    drop(host);
    assert!(
        !ip(&["netns", "list"]).contains(&ns),
        "namespace {ns} left behind after drop"
    );
}
