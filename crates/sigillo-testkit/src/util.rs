//! Small helpers shared by the harness: free ports, tool checks, process and log utilities.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port that is free on 127.0.0.1 (and on ::1 when the host has IPv6 loopback), and free
/// for UDP on 127.0.0.1 too, never handed out twice in this process.
///
/// The port is released before it is returned, so another process may still take it; servers
/// started by this crate retry with a new port when their bind fails.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(listener) = TcpListener::bind(("127.0.0.1", 0)) else {
            continue;
        };
        let Ok(addr) = listener.local_addr() else {
            continue;
        };
        let port = addr.port();
        if has_ipv6_loopback() && TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    // Let the OS choose at bind time would be better, but callers need a number: fall back.
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// True when `::1` can be bound on this host.
pub(crate) fn has_ipv6_loopback() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// True when this process runs as root (effective uid 0), which the real MTAs need.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn under_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
        .unwrap_or(false)
}

/// Find an executable in `PATH` (or check an absolute/relative path).
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// Whether a real peer the test needs is usable here. `name` is a command in `PATH`
/// (`swaks`, `openssl`, …) or one of the peers this crate runs: `postfix` and `exim4` (found
/// via [`crate::Exim::binary`]) also need root, and so do `postfix-3.10` (Debian 13's Postfix
/// in a tree of its own, [`crate::Postfix::root_310`]) and `ip-netns` (iproute2's `ip`, for
/// a [`crate::NetNs`]).
///
/// When it is missing: under `CI=true` (any value but empty, `0`, `false`) this **panics**, so
/// a CI run can't silently skip tests; otherwise it prints why to stderr and returns false, and
/// the test should return early (see [`crate::require_tools!`]).
pub fn require_tool(name: &str) -> bool {
    let missing = match name {
        "postfix" => match which("postfix") {
            None => Some("`postfix` is not installed".to_string()),
            Some(_) if !is_root() => Some("private Postfix instances need root".to_string()),
            Some(_) => None,
        },
        "postfix-3.10" => match crate::Postfix::root_310() {
            None => Some(format!(
                "no Postfix 3.10 tree (set SIGILLO_POSTFIX310_ROOT or let .ci/install-peers \
                 bootstrap it into {})",
                crate::POSTFIX_310_ROOT
            )),
            Some(_) if !is_root() => Some("a chrooted Postfix needs root".to_string()),
            Some(_) => None,
        },
        "ip-netns" => match which("ip") {
            None => Some("`ip` (iproute2) is not installed".to_string()),
            Some(_) if !is_root() => Some("network namespaces need root".to_string()),
            Some(_) => None,
        },
        "exim" | "exim4" => match crate::Exim::binary() {
            None => Some(format!(
                "no Exim binary (set SIGILLO_EXIM or install it to {})",
                crate::exim::DEFAULT_EXIM
            )),
            Some(_) if !is_root() => Some("private Exim instances need root".to_string()),
            Some(_) => None,
        },
        other => which(other)
            .is_none()
            .then(|| format!("`{other}` is not in PATH")),
    };
    match missing {
        None => true,
        Some(why) if under_ci() => panic!(
            "required test peer `{name}` is missing under CI: {why}. \
             Run .ci/install-peers (as root) to install the test peers."
        ),
        Some(why) => {
            eprintln!(
                "SKIPPING test: required peer `{name}` unavailable: {why} (run .ci/install-peers)"
            );
            false
        }
    }
}

/// Read one complete SMTP reply (all lines up to `NNN ` ) from `stream`, waiting at most
/// `timeout` in total. Returns the raw text, CRLFs included.
pub fn read_reply(stream: &mut TcpStream, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "timed out after {timeout:?} waiting for an SMTP reply; got so far: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut byte) {
            Ok(0) => bail!(
                "connection closed while reading an SMTP reply; got so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(_) => {
                out.push(byte[0]);
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    let last = line.len() < 4 || line[3] != b'-';
                    line.clear();
                    if last {
                        return Ok(String::from_utf8_lossy(&out).into_owned());
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading an SMTP reply"),
        }
    }
}

/// Connect to `addr` repeatedly until it answers with a `220` greeting or `timeout` passes.
pub(crate) fn wait_for_greeting(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::from("never tried");
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(mut s) => match read_reply(&mut s, Duration::from_secs(3)) {
                Ok(reply) if reply.starts_with("220") => {
                    let _ = std::io::Write::write_all(&mut s, b"QUIT\r\n");
                    return Ok(reply);
                }
                Ok(reply) => last_err = format!("unexpected greeting {reply:?}"),
                Err(e) => last_err = format!("{e:#}"),
            },
            Err(e) => last_err = format!("connect: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr} did not answer with a 220 greeting within {timeout:?} (last error: {last_err})")
}

/// Connect to `addr` repeatedly until it accepts a connection or `timeout` passes.
pub(crate) fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::from("never tried");
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(String::new()),
            Err(e) => last_err = format!("connect: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr} did not accept a connection within {timeout:?} (last error: {last_err})")
}

/// The last `n` lines of a text file (or a note that it can't be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Poll a log file until a line contains `needle`; returns that line.
pub(crate) fn wait_for_log_line(path: &Path, needle: &str, timeout: Duration) -> Result<String> {
    wait_for_log_all(path, &[needle], timeout)
}

/// The first line of the file at `path` containing every one of `needles`, waiting for it up
/// to `timeout`.
pub(crate) fn wait_for_log_all(path: &Path, needles: &[&str], timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(file) = std::fs::File::open(path) {
            for line in BufReader::new(file).lines().map_while(|l| l.ok()) {
                if needles.iter().all(|n| line.contains(n)) {
                    return Ok(line);
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no line containing {needles:?} in {} within {timeout:?}; last lines:\n{}",
                path.display(),
                tail(path, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run a command, returning its combined stdout+stderr and whether it succeeded.
pub(crate) fn run_capture(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// True while a process with this pid exists (and is not a zombie).
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 (after the parenthesised name) is the state; Z = zombie.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Direct children of `pid`, from /proc.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return kids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            kids.push(child);
        }
    }
    kids
}

/// Send a signal with the `kill` command (keeps this crate free of unsafe FFI).
pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Wait until none of `pids` is alive, up to `timeout`; true if they all ended.
pub(crate) fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|p| !pid_alive(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Make a temp dir that service users (postfix, Debian-exim) can traverse.
pub(crate) fn service_tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    service_tempdir_in(prefix, &std::env::temp_dir())
}

/// [`service_tempdir`] under `parent` (e.g. a chroot's `/tmp`).
pub(crate) fn service_tempdir_in(prefix: &str, parent: &Path) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .with_context(|| format!("creating a temp dir in {}", parent.display()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", dir.path().display()))?;
    Ok(dir)
}

/// uid and gid of a system user, from /etc/passwd.
pub(crate) fn user_ids(user: &str) -> Result<(u32, u32)> {
    user_ids_in(Path::new("/"), user)
}

/// uid and gid of a system user of the tree under `root` (a chroot), from its /etc/passwd.
pub(crate) fn user_ids_in(root: &Path, user: &str) -> Result<(u32, u32)> {
    let file = root.join("etc/passwd");
    let passwd =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() > 3 && fields[0] == user {
            let uid = fields[2].parse().context("uid in /etc/passwd")?;
            let gid = fields[3].parse().context("gid in /etc/passwd")?;
            return Ok((uid, gid));
        }
    }
    bail!("user {user:?} does not exist (run .ci/install-peers)")
}

/// A process's start time (field 22 of /proc/PID/stat), to tell a reused pid apart.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); field 22 is at index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Runs swaks against `server` with `args` (`--to`, `--from`, `--tls`, …); returns whether it
/// succeeded, and its output.
pub fn swaks(server: std::net::SocketAddr, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new("swaks")
        .args(["--server", &server.ip().to_string(), "--port"])
        .arg(server.port().to_string())
        .args(args)
        .output()
        .context("run swaks")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// [`swaks`], which must succeed: an error carries its output.
pub fn swaks_ok(server: std::net::SocketAddr, args: &[&str]) -> anyhow::Result<()> {
    let (ok, out) = swaks(server, args)?;
    anyhow::ensure!(ok, "swaks {args:?} failed:\n{out}");
    Ok(())
}
