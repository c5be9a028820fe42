//! A network namespace made by a test, for real peers that route by DNS through the system
//! resolver (a sending Postfix): inside it, `/etc/resolv.conf` is the test's own and every
//! loopback address is the test's. Deleted on drop, with any process still in it.
//!
//! `ip netns exec NAME PROGRAM` runs a program in the namespace and bind-mounts
//! `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf` for it and its children. In-process
//! servers ([`crate::DnsServer`], [`crate::HttpsServer`]) live in the namespace of the test
//! process, so a test that needs them inside runs itself again in the namespace:
//! [`NetNs::run_test_inside`] re-executes the current test binary there for one test, and
//! [`NetNs::current`] tells that test which side it is on.
//!
//! ```no_run
//! use sigillo_testkit::{NetNs, require_tools};
//! use std::time::Duration;
//!
//! #[test]
//! fn routes_by_mx() {
//!     require_tools!("postfix", "ip-netns");
//!     if NetNs::current().is_some() {
//!         // Inside: start the DNS server on 127.0.0.1:53, the MTAs, … and assert.
//!         return;
//!     }
//!     let ns = NetNs::create("mx").expect("netns");
//!     ns.set_resolv_conf("nameserver 127.0.0.1\n").expect("resolv.conf");
//!     let status = ns.run_test_inside("routes_by_mx", Duration::from_secs(90)).expect("run");
//!     assert!(status.success(), "the test inside the namespace failed: {status}");
//! }
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{pid_alive, run_capture, signal, start_time, wait_gone};

/// The environment variable that holds the namespace's name in a test re-executed by
/// [`NetNs::run_test_inside`].
pub const NETNS_ENV: &str = "SIGILLO_NETNS";

/// Where `ip netns exec` looks for per-namespace files.
const NETNS_ETC: &str = "/etc/netns";

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// A network namespace (`ip netns add`) with its loopback up. Dropping it kills the processes
/// still in it, deletes it and its `/etc/netns/NAME` directory.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    etc_dir: PathBuf,
}

impl NetNs {
    /// Create `sigillo-LABEL-PID-N` (unique in this process, and across processes by pid),
    /// bring its `lo` up. Needs root and iproute2. First deletes the namespaces that killed
    /// test processes left behind (see `sweep_stale`).
    pub fn create(label: &str) -> Result<Self> {
        if !crate::is_root() {
            bail!("creating a network namespace needs root");
        }
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("namespace label {label:?}: expected letters, digits and '-'");
        }
        sweep_stale();
        let name = format!(
            "sigillo-{label}-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name])?;
        // From here on, Drop deletes it whatever fails next.
        let ns = NetNs {
            etc_dir: Path::new(NETNS_ETC).join(&name),
            name,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace this process runs in when [`NetNs::run_test_inside`] started it.
    pub fn current() -> Option<String> {
        std::env::var(NETNS_ENV).ok().filter(|n| !n.is_empty())
    }

    /// Its name, for `ip netns exec NAME` / `ip -n NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Put `ip` on the namespace's `lo` as `/32` (bind() works on all of 127/8 anyway, but
    /// Postfix's `inet_interfaces` wants an address that is on an interface).
    pub fn add_address(&self, ip_addr: Ipv4Addr) -> Result<()> {
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{ip_addr}/32"),
            "dev",
            "lo",
        ])
    }

    /// Write `/etc/netns/NAME/resolv.conf`, which `ip netns exec` mounts over
    /// `/etc/resolv.conf` (e.g. `nameserver 127.0.0.1`: resolv.conf has no port, so the
    /// DNS server listens on 53, see [`crate::DnsServer::start_at`]).
    pub fn set_resolv_conf(&self, text: &str) -> Result<()> {
        std::fs::create_dir_all(&self.etc_dir)
            .with_context(|| format!("creating {}", self.etc_dir.display()))?;
        let path = self.etc_dir.join("resolv.conf");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// `ip netns exec NAME PROGRAM`, to add arguments to and run.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run the test named `test` of the current test binary again inside the namespace
    /// (`--exact TEST --nocapture --test-threads 1`, with [`NETNS_ENV`] set), its output going
    /// to this process's. Killed after `timeout`, which is then an error.
    pub fn run_test_inside(&self, test: &str, timeout: Duration) -> Result<ExitStatus> {
        let exe = std::env::current_exe().context("locating the test binary")?;
        let mut child = self
            .command(&exe)
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(NETNS_ENV, &self.name)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("running {} in namespace {}", exe.display(), self.name))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the test")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                // `ip netns exec` execs the program: this pid is the test itself.
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "test {test} in namespace {} still running after {timeout:?}: killed",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes running in the namespace now (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        run_capture(Command::new("ip").args(["netns", "pids", &self.name]))
            .map(|(_, out)| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// End what still runs in the namespace (a test that died before its own cleanup):
    /// SIGTERM, then SIGKILL for those still there after 3 s, each only if its pid still
    /// names the same process.
    fn kill_leftovers(&self) {
        let me = std::process::id();
        let left: Vec<(u32, Option<u64>)> = self
            .pids()
            .into_iter()
            .filter(|p| *p != me)
            .map(|p| (p, start_time(p)))
            .collect();
        if left.is_empty() {
            return;
        }
        for (pid, _) in &left {
            signal(*pid, "TERM");
        }
        let pids: Vec<u32> = left.iter().map(|(p, _)| *p).collect();
        if !wait_gone(&pids, Duration::from_secs(3)) {
            for (pid, started) in &left {
                if pid_alive(*pid) && start_time(*pid) == *started {
                    signal(*pid, "KILL");
                }
            }
            wait_gone(&pids, Duration::from_secs(2));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.kill_leftovers();
        let _ = ip(&["netns", "delete", &self.name]);
        let _ = std::fs::remove_dir_all(&self.etc_dir);
    }
}

/// Deletes the namespaces of test processes that died without their cleanup (killed by a
/// signal, say): `sigillo-LABEL-PID-N` whose PID no longer runs. What still runs in one is
/// ended first, as when a [`NetNs`] is dropped. Namespaces of live processes stay.
fn sweep_stale() {
    let Ok((true, list)) = run_capture(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        // `NAME` or `NAME (id: N)`.
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = owner_pid(name)
            && !pid_alive(pid)
        {
            drop(NetNs {
                etc_dir: Path::new(NETNS_ETC).join(name),
                name: name.to_string(),
            });
        }
    }
}

/// The PID in a name made by [`NetNs::create`] (`sigillo-LABEL-PID-N`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("sigillo-")?;
    let mut parts = rest.rsplitn(3, '-');
    let serial = parts.next()?;
    let pid = parts.next()?;
    let label = parts.next()?;
    if label.is_empty() || serial.parse::<u32>().is_err() {
        return None;
    }
    pid.parse().ok()
}

/// Run `ip ARGS`; an error carries its output.
fn ip(args: &[&str]) -> Result<()> {
    let (ok, out) = run_capture(Command::new("ip").args(args))?;
    if !ok {
        bail!("`ip {}` failed: {}", args.join(" "), out.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_of_names_made_by_create() {
        let table = [
            ("sigillo-e2e-4242-0", Some(4242)),
            ("sigillo-mx-relay-17-3", Some(17)),
            ("sigillo-4242-0", None),
            ("sigillo-e2e-x-0", None),
            ("sigillo-e2e-4242-x", None),
            ("other-e2e-4242-0", None),
            ("sigillo-", None),
        ];
        for (name, want) in table {
            assert_eq!(owner_pid(name), want, "{name}");
        }
    }
}
