//! `NetNs::create` deletes the namespaces that test processes killed before their cleanup left
//! behind, and leaves those of live processes alone.

use sigillo_testkit::{NetNs, require_tools};
use std::process::Command;

fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn add(name: &str) {
    let ok = Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .expect("ip netns add");
    assert!(ok.success(), "ip netns add {name}");
}

#[test]
fn create_sweeps_namespaces_of_dead_test_processes() {
    require_tools!("ip-netns");
    // A pid that runs no more: a child that has exited and been reaped.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let stale = format!("sigillo-stale-{dead}-0");
    let live = format!("sigillo-live-{}-999", std::process::id());
    add(&stale);
    add(&live);
    assert!(namespaces().contains(&stale));

    let ns = NetNs::create("sweeper").expect("create");
    let after = namespaces();
    let _ = Command::new("ip").args(["netns", "delete", &live]).status();
    assert!(!after.contains(&stale), "stale namespace left: {after:?}");
    assert!(
        after.contains(&live),
        "a live process's namespace was deleted: {after:?}"
    );
    assert!(after.iter().any(|n| n == ns.name()), "{after:?}");
}
