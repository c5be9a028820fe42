//! A private Exim 4.96 instance (GnuTLS) from the dpkg-extracted Debian binary: own spool and
//! log directories in a temp dir, loopback port, accepts one test domain into a maildir, and
//! delivers outward only to the loopback peers given as [`EximOptions::route`]s.
//!
//! Exim keeps root for a `-C` configuration only when the file's path is listed in
//! `/etc/exim4/trusted_configs` (compiled in). The harness therefore writes each instance's
//! configuration to one of a fixed set of slot paths ([`TRUSTED_SLOTS_DIR`]`/slot-NN.conf`),
//! which `.ci/install-peers` (or the harness itself, as root) lists in that file. A slot is
//! claimed by creating its file exclusively, so parallel tests and processes don't clash.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::CertPair;
use crate::util::{
    self, children_of, free_port, pid_alive, service_tempdir, signal, start_time, tail,
    wait_for_greeting, wait_gone,
};

/// Where `.ci/install-peers` extracts the Debian Exim packages' binary.
pub(crate) const DEFAULT_EXIM: &str = "/opt/sigillo/exim/usr/sbin/exim4";
/// Exim's compiled-in list of trusted `-C` configuration files (Debian).
pub const TRUSTED_CONFIGS: &str = "/etc/exim4/trusted_configs";
/// Directory of the slot configuration files listed in [`TRUSTED_CONFIGS`].
pub const TRUSTED_SLOTS_DIR: &str = "/var/lib/sigillo/exim";
/// Number of slots, i.e. Exim instances that can run at once on the machine.
pub const TRUSTED_SLOTS: usize = 32;
/// The user Debian's Exim is compiled to run as.
const EXIM_USER: &str = "Debian-exim";

/// How to set up an [`Exim`] instance.
#[derive(Clone, Debug)]
pub struct EximOptions {
    /// Offer STARTTLS with this certificate; `None`: no TLS (STARTTLS not advertised).
    pub tls: Option<CertPair>,
    /// Also listen on `::1`.
    pub ipv6: bool,
    /// `primary_hostname`, shown in the greeting and the EHLO reply.
    pub hostname: String,
    /// The domain accepted into the maildir.
    pub domain: String,
    /// Port; `None` picks a free one.
    pub port: Option<u16>,
    /// Extra main-section configuration lines (inserted before `begin acl`).
    pub extra_main: Vec<String>,
    /// Outbound routes: mail for an Exim domain list (`a.test` or `a.test : b.test`) is
    /// relayed over SMTP to the address (STARTTLS when offered, any certificate accepted).
    pub routes: Vec<(String, SocketAddr)>,
    /// The daemon's queue-run interval (`-q…`); [`Exim::run_queue`] starts one at once.
    pub queue_interval: Duration,
    /// How long `start` waits for the 220 greeting.
    pub start_timeout: Duration,
}

impl Default for EximOptions {
    fn default() -> Self {
        Self {
            tls: None,
            ipv6: false,
            hostname: "exim.sigillo.test".to_string(),
            domain: "sigillo.test".to_string(),
            port: None,
            extra_main: Vec::new(),
            routes: Vec::new(),
            queue_interval: Duration::from_secs(60),
            start_timeout: Duration::from_secs(20),
        }
    }
}

impl EximOptions {
    /// Offer STARTTLS with `cert`.
    pub fn tls(mut self, cert: &CertPair) -> Self {
        self.tls = Some(cert.clone());
        self
    }
    /// Listen on `::1` as well.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }
    /// Set `primary_hostname`.
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = name.to_string();
        self
    }
    /// Set the accepted test domain.
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_string();
        self
    }
    /// Relay mail for `domains` (an Exim domain list: `a.test` or `a.test : b.test`) over SMTP
    /// to `to`, accepting it from any client. Each route has its own router and smtp
    /// transport, so Exim's connection reuse (`H=… [ip]*` on the second and later messages
    /// down one connection) stays within one route.
    pub fn route(mut self, domains: &str, to: SocketAddr) -> Self {
        self.routes.push((domains.to_string(), to));
        self
    }
    /// Set the daemon's queue-run interval (at least one second).
    pub fn queue_interval(mut self, every: Duration) -> Self {
        self.queue_interval = every;
        self
    }
    /// Add a main-section configuration line.
    pub fn main_line(mut self, line: &str) -> Self {
        self.extra_main.push(line.to_string());
        self
    }
}

/// A running private Exim daemon (`exim4 -C slot.conf -bdf`); killed and cleaned up on drop.
#[derive(Debug)]
pub struct Exim {
    dir: tempfile::TempDir,
    slot: Option<PathBuf>,
    port: u16,
    ipv6: bool,
    queue_interval: Duration,
    binary: PathBuf,
    child: Option<Child>,
}

impl Exim {
    /// The Exim binary: `$SIGILLO_EXIM`, else the `.ci/install-peers` install under
    /// /opt/sigillo/exim, else `exim4` in `PATH`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("SIGILLO_EXIM") {
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
        let default = PathBuf::from(DEFAULT_EXIM);
        if default.is_file() {
            return Some(default);
        }
        util::which("exim4")
    }

    /// Start with defaults but this certificate for STARTTLS.
    pub fn start_with_tls(cert: &CertPair) -> Result<Self> {
        Self::start(EximOptions::default().tls(cert))
    }

    /// Start with defaults, without TLS.
    pub fn start_plain() -> Result<Self> {
        Self::start(EximOptions::default())
    }

    /// Start an instance and wait for its 220 greeting.
    pub fn start(options: EximOptions) -> Result<Self> {
        if !util::is_root() {
            bail!("a private Exim instance needs root");
        }
        let binary = Self::binary().with_context(|| {
            format!("no Exim binary: set SIGILLO_EXIM or run .ci/install-peers ({DEFAULT_EXIM})")
        })?;
        if options.ipv6 && !util::has_ipv6_loopback() {
            bail!("ipv6 requested but ::1 is not available on this host");
        }
        let (uid, gid) = util::user_ids(EXIM_USER)?;
        ensure_trusted_slots()?;
        let dir = service_tempdir("sigillo-exim-")?;
        for sub in ["spool", "log", "inbox"] {
            let p = dir.path().join(sub);
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", p.display()))?;
        }
        if let Some(cert) = &options.tls {
            for (src, name) in [
                (&cert.chain_pem, "server-chain.pem"),
                (&cert.key_pem, "server-key.pem"),
            ] {
                let dst = dir.path().join(name);
                std::fs::copy(src, &dst).with_context(|| format!("copying {}", src.display()))?;
                std::os::unix::fs::chown(&dst, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dst.display()))?;
            }
        }
        let mut exim = Exim {
            dir,
            slot: None,
            port: 0,
            ipv6: options.ipv6,
            queue_interval: options.queue_interval,
            binary: binary.clone(),
            child: None,
        };
        // A port may be taken between free_port() and Exim's bind(): retry with another.
        let attempts = if options.port.is_some() { 1 } else { 3 };
        let mut last_err = None;
        for _ in 0..attempts {
            exim.port = options.port.unwrap_or_else(free_port);
            let config = config_text(exim.dir.path(), &binary, exim.port, &options);
            exim.slot = Some(claim_slot(&config)?);
            match exim.spawn(&binary, options.start_timeout) {
                Ok(()) => return Ok(exim),
                Err(e) => {
                    let in_use = exim.log_text().contains("Address already in use");
                    exim.stop();
                    last_err = Some(e);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("exim did not start")))
    }

    fn spawn(&mut self, binary: &Path, timeout: Duration) -> Result<()> {
        let slot = self.slot.clone().context("no config slot")?;
        let out = std::fs::File::create(self.dir.path().join("exim.stderr"))
            .context("creating exim.stderr")?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .arg("-C")
            .arg(&slot)
            .arg("-bdf")
            .arg(format!("-q{}s", self.queue_interval.as_secs().max(1)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        let result = wait_for_greeting(self.addr(), timeout);
        if let Err(e) = result {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .map(|s| format!("exim exited: {s}"))
                .unwrap_or_else(|| "exim still running".into());
            let (_, check) =
                util::run_capture(Command::new(binary).arg("-C").arg(&slot).arg("-bV"))
                    .unwrap_or((false, String::new()));
            return Err(e.context(format!(
                "private Exim on port {} (config {}) did not come up; {exited}.\n\
                 --- exim stderr ---\n{}\n--- exim -bV ---\n{}\n--- mainlog ---\n{}\n--- paniclog ---\n{}",
                self.port,
                slot.display(),
                tail(&self.dir.path().join("exim.stderr"), 20),
                check.lines().take(5).collect::<Vec<_>>().join("\n"),
                tail(&self.log_path(), 30),
                tail(&self.dir.path().join("log/paniclog"), 10),
            )));
        }
        Ok(())
    }

    /// The SMTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// `[::1]:port`, when started with `ipv6`.
    pub fn addr_v6(&self) -> Option<SocketAddr> {
        self.ipv6
            .then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port))
    }

    /// The main log (`log/mainlog`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log/mainlog")
    }

    fn log_text(&self) -> String {
        let mut s = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        s.push_str(
            &std::fs::read_to_string(self.dir.path().join("log/paniclog")).unwrap_or_default(),
        );
        s.push_str(
            &std::fs::read_to_string(self.dir.path().join("exim.stderr")).unwrap_or_default(),
        );
        s
    }

    /// The main log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Wait until a main-log line contains `needle`; returns the line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        util::wait_for_log_line(&self.log_path(), needle, timeout)
    }

    /// The configuration file in use (a trusted slot path).
    pub fn config_path(&self) -> Option<&Path> {
        self.slot.as_deref()
    }

    /// Runs one queue run in the foreground (`exim -C … -qf`: every queued message, retry
    /// times ignored) and waits for it. Deliveries that continue down an open connection run
    /// in their own processes and may still be finishing when this returns: wait for their log
    /// lines.
    pub fn run_queue(&self) -> Result<()> {
        let slot = self.slot.as_deref().context("no config slot")?;
        let (ok, out) =
            util::run_capture(Command::new(&self.binary).arg("-C").arg(slot).arg("-qf"))?;
        if !ok {
            bail!("exim -qf failed: {out}");
        }
        Ok(())
    }

    /// The maildir receiving the test domain's mail.
    pub fn mailbox_dir(&self) -> PathBuf {
        self.dir.path().join("inbox")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let kids: Vec<(u32, Option<u64>)> = children_of(pid)
                .into_iter()
                .map(|k| (k, start_time(k)))
                .collect();
            signal(pid, "TERM");
            if !wait_gone(&[pid], Duration::from_secs(3)) {
                let _ = child.kill();
            }
            let _ = child.wait();
            for (kid, started) in kids {
                if pid_alive(kid) && start_time(kid) == started {
                    signal(kid, "KILL");
                }
            }
        }
        if let Some(slot) = self.slot.take() {
            let _ = std::fs::remove_file(slot);
        }
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        self.stop();
    }
}

fn slot_path(n: usize) -> PathBuf {
    PathBuf::from(format!("{TRUSTED_SLOTS_DIR}/slot-{n:02}.conf"))
}

/// Make sure the slot directory exists and every slot is listed in Exim's trusted list.
fn ensure_trusted_slots() -> Result<()> {
    // Parallel tests in one process must not append the same lines twice.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(TRUSTED_SLOTS_DIR)
        .with_context(|| format!("creating {TRUSTED_SLOTS_DIR}"))?;
    let list_dir = Path::new(TRUSTED_CONFIGS)
        .parent()
        .context("trusted_configs has no parent")?;
    std::fs::create_dir_all(list_dir)
        .with_context(|| format!("creating {}", list_dir.display()))?;
    let current = std::fs::read_to_string(TRUSTED_CONFIGS).unwrap_or_default();
    let mut missing = String::new();
    for n in 0..TRUSTED_SLOTS {
        let p = slot_path(n).display().to_string();
        if !current.lines().any(|l| l.trim() == p) {
            let _ = writeln!(missing, "{p}");
        }
    }
    if !missing.is_empty() {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(TRUSTED_CONFIGS)
            .with_context(|| format!("opening {TRUSTED_CONFIGS}"))?;
        if !current.is_empty() && !current.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        f.write_all(missing.as_bytes())
            .with_context(|| format!("appending to {TRUSTED_CONFIGS}"))?;
    }
    Ok(())
}

/// Claim a free slot by creating its file exclusively, and write `config` into it. A slot whose
/// owner process is gone is reclaimed.
fn claim_slot(config: &str) -> Result<PathBuf> {
    let me = std::process::id();
    for n in 0..TRUSTED_SLOTS {
        let path = slot_path(n);
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("# sigillo-testkit pid={me}\n{config}").as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).ok().and_then(|s| {
                        s.lines()
                            .next()
                            .and_then(|l| l.strip_prefix("# sigillo-testkit pid="))
                            .and_then(|p| p.trim().parse::<u32>().ok())
                    });
                    match owner {
                        Some(pid) if !pid_alive(pid) => {
                            let _ = std::fs::remove_file(&path);
                        }
                        _ => break,
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
    }
    bail!("all {TRUSTED_SLOTS} Exim config slots in {TRUSTED_SLOTS_DIR} are in use")
}

fn config_text(dir: &Path, binary: &Path, port: u16, o: &EximOptions) -> String {
    let d = dir.display();
    let (mut routers, mut transports) = (String::new(), String::new());
    for (n, (domains, to)) in o.routes.iter().enumerate() {
        // `self = send` and `allow_localhost`: the peer is on this host, on another port.
        let _ = write!(
            routers,
            "route_{n}:\n  driver = manualroute\n  domains = {domains}\n  route_list = * {ip}\n  \
             transport = route_smtp_{n}\n  self = send\n  no_more\n",
            ip = to.ip(),
        );
        let _ = write!(
            transports,
            "route_smtp_{n}:\n  driver = smtp\n  port = {port}\n  allow_localhost\n  \
             hosts_try_dane =\n",
            port = to.port(),
        );
    }
    let interfaces = if o.ipv6 {
        "<; 127.0.0.1 ; ::1"
    } else {
        "127.0.0.1"
    };
    let mut c = String::new();
    let _ = writeln!(c, "primary_hostname = {}", o.hostname);
    // Exim re-executes itself for deliveries and queue runs: not from its compiled-in path.
    let _ = writeln!(c, "exim_path = {}", binary.display());
    let _ = writeln!(c, "daemon_smtp_ports = {port}");
    let _ = writeln!(c, "local_interfaces = {interfaces}");
    if !o.ipv6 {
        let _ = writeln!(c, "disable_ipv6 = true");
    }
    let _ = writeln!(c, "spool_directory = {d}/spool");
    let _ = writeln!(c, "log_file_path = {d}/log/%slog");
    let _ = writeln!(c, "pid_file_path = {d}/exim.pid");
    let _ = writeln!(
        c,
        "log_selector = +tls_cipher +tls_peerdn +tls_certificate_verified +smtp_connection +smtp_syntax_error +smtp_no_mail"
    );
    let _ = writeln!(c, "domainlist local_domains = {}", o.domain);
    let relay_to: Vec<&str> = o.routes.iter().map(|(d, _)| d.as_str()).collect();
    let _ = writeln!(c, "domainlist relay_to_domains = {}", relay_to.join(" : "));
    c.push_str(
        "host_lookup = !*\n\
         rfc1413_query_timeout = 0s\n\
         keep_environment =\n\
         smtp_banner = $smtp_active_hostname ESMTP sigillo-test\n\
         acl_smtp_rcpt = acl_check_rcpt\n\
         check_spool_space = 0\n",
    );
    match &o.tls {
        Some(_) => {
            let _ = writeln!(c, "tls_advertise_hosts = *");
            let _ = writeln!(c, "tls_certificate = {d}/server-chain.pem");
            let _ = writeln!(c, "tls_privatekey = {d}/server-key.pem");
        }
        None => {
            let _ = writeln!(c, "tls_advertise_hosts =");
        }
    }
    for line in &o.extra_main {
        let _ = writeln!(c, "{line}");
    }
    let _ = write!(
        c,
        "
begin acl
acl_check_rcpt:
  accept domains = +local_domains
  accept domains = +relay_to_domains
  deny message = relay not permitted (sigillo test instance)

begin routers
{routers}test_domain:
  driver = accept
  domains = +local_domains
  transport = test_maildir
nowhere:
  driver = redirect
  allow_fail
  data = :fail: sigillo test instance delivers nothing outward

begin transports
test_maildir:
  driver = appendfile
  directory = {d}/inbox
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = {EXIM_USER}
  mode = 0600
{transports}
begin retry
* * F,1h,5m
"
    );
    c
}
