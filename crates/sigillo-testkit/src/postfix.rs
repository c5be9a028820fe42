//! A private Postfix 3.7 instance (own config, queue and data directories in a temp dir, own
//! log file, loopback port) that accepts mail for one test domain and never delivers outward.
//!
//! Needs root (the `postfix` command and the master daemon run as root, like in CI) and the
//! Debian `postfix` package with its `postfix` user and `postdrop` group.
//!
//! With [`PostfixOptions::chroot`] the instance is another Postfix, installed in a directory
//! tree of its own and run through `chroot(8)`: Debian 13's Postfix 3.10, which reads TLSRPT
//! attributes in `smtp_tls_policy_maps` answers, needs a newer C library than Debian 12 has,
//! so `.ci/install-peers` bootstraps it into [`POSTFIX_310_ROOT`]. The instance's directory
//! then lies inside that tree, and its `main.cf` names paths as Postfix sees them there.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::CertPair;
use crate::util::{
    self, children_of, free_port, pid_alive, run_capture, service_tempdir, signal, start_time,
    tail, wait_for_greeting, wait_for_port, wait_gone,
};

/// Where `.ci/install-peers` bootstraps Debian 13 with its Postfix 3.10 (TLSRPT support built
/// in); `SIGILLO_POSTFIX310_ROOT` overrides it.
pub const POSTFIX_310_ROOT: &str = "/opt/sigillo/postfix-3.10";

/// How to set up a [`Postfix`] instance.
#[derive(Clone, Debug)]
pub struct PostfixOptions {
    /// Offer STARTTLS with this certificate (`smtpd_tls_security_level = may`); `None`: no TLS.
    pub tls: Option<CertPair>,
    /// Also listen on `[::1]` (`inet_protocols = all`).
    pub ipv6: bool,
    /// `myhostname`, shown in the greeting and the EHLO reply.
    pub hostname: String,
    /// The domain accepted into the instance's maildir (`virtual_mailbox_domains`).
    pub domain: String,
    /// Port to listen on; `None` picks a free one.
    pub port: Option<u16>,
    /// Extra `main.cf` settings appended last (so they override the defaults).
    pub extra_main_cf: Vec<(String, String)>,
    /// Extra `master.cf` service lines (e.g. the `smtp unix … smtp` client, for an instance
    /// that delivers outward).
    pub extra_master_cf: Vec<String>,
    /// Listen on this IPv4 address instead of 127.0.0.1 (`inet_interfaces`). Postfix wants it
    /// on an interface: inside a [`crate::NetNs`], add it with [`crate::NetNs::add_address`].
    pub listen_ip: Option<Ipv4Addr>,
    /// TLS from the first byte (`smtpd_tls_wrappermode`, as on port 465); needs `tls`.
    pub wrapper_mode: bool,
    /// How long `start` waits for the 220 greeting.
    pub start_timeout: Duration,
    /// Run the Postfix installed under this directory, through `chroot(8)` (see the module
    /// documentation); `None`: the system's.
    pub chroot: Option<PathBuf>,
    /// Files copied into the instance's `config_directory` under these names before it starts,
    /// for `main.cf` to name as `$config_directory/NAME` (which also works inside a chroot).
    pub files: Vec<(String, PathBuf)>,
}

impl Default for PostfixOptions {
    fn default() -> Self {
        Self {
            tls: None,
            ipv6: false,
            hostname: "mx.sigillo.test".to_string(),
            domain: "sigillo.test".to_string(),
            port: None,
            extra_main_cf: Vec::new(),
            extra_master_cf: Vec::new(),
            listen_ip: None,
            wrapper_mode: false,
            start_timeout: Duration::from_secs(20),
            chroot: None,
            files: Vec::new(),
        }
    }
}

impl PostfixOptions {
    /// Speak TLS from the first byte (implicit TLS, RFC 8314) instead of offering STARTTLS.
    pub fn wrapper_mode(mut self, on: bool) -> Self {
        self.wrapper_mode = on;
        self
    }

    /// Offer STARTTLS with `cert`.
    pub fn tls(mut self, cert: &CertPair) -> Self {
        self.tls = Some(cert.clone());
        self
    }
    /// Listen on `::1` as well as `127.0.0.1`.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }
    /// Set `myhostname`.
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = name.to_string();
        self
    }
    /// Set the accepted test domain.
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_string();
        self
    }
    /// Add a `main.cf` setting (applied after the defaults).
    pub fn main_cf(mut self, key: &str, value: &str) -> Self {
        self.extra_main_cf
            .push((key.to_string(), value.to_string()));
        self
    }
    /// Add a `master.cf` service line, e.g.
    /// `"smtp      unix  -       -       n       -       -       smtp"`.
    pub fn master_cf(mut self, line: &str) -> Self {
        self.extra_master_cf.push(line.to_string());
        self
    }
    /// Listen on this port (e.g. 25, for a client that delivers by MX) instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// Listen on `ip` instead of 127.0.0.1 (IPv4 only).
    pub fn listen_ip(mut self, ip: Ipv4Addr) -> Self {
        self.listen_ip = Some(ip);
        self
    }
    /// Run the Postfix installed under `root` through `chroot(8)`, e.g. [`Postfix::root_310`].
    pub fn chroot(mut self, root: &Path) -> Self {
        self.chroot = Some(root.to_path_buf());
        self
    }
    /// Copy `src` into the instance's `config_directory` as `name` before it starts.
    pub fn file(mut self, name: &str, src: &Path) -> Self {
        self.files.push((name.to_string(), src.to_path_buf()));
        self
    }
}

/// A running private Postfix instance; stopped (and its processes killed) on drop.
#[derive(Debug)]
pub struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
    ipv6: bool,
    options: PostfixOptions,
    /// The master daemon's pid and start time (to never signal a reused pid).
    master: Option<(u32, Option<u64>)>,
    /// The `postfix` command (inside the chroot for a [`PostfixOptions::chroot`] instance).
    postfix: PathBuf,
}

const ERROR_TRANSPORT: &str = "error:sigillo test instance delivers nothing outward";

const MASTER_CF_SERVICES: &str = "\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Start an instance with these options and wait until it answers with a 220 greeting.
    pub fn start(options: PostfixOptions) -> Result<Self> {
        if !util::is_root() {
            bail!("a private Postfix instance needs root (postfix start runs the master as root)");
        }
        let postfix = match &options.chroot {
            Some(root) => {
                let inside = root.join("usr/sbin/postfix");
                if !inside.is_file() {
                    bail!(
                        "no Postfix under {} (run .ci/install-peers)",
                        root.display()
                    );
                }
                PathBuf::from("/usr/sbin/postfix")
            }
            None => util::which("postfix").context("`postfix` is not installed")?,
        };
        if options.ipv6 && options.listen_ip.is_some() {
            bail!("listen_ip is IPv4 only: it cannot be combined with ipv6");
        }
        if options.ipv6 && !util::has_ipv6_loopback() {
            bail!("ipv6 requested but ::1 is not available on this host");
        }
        let (dir, (uid, gid)) = match &options.chroot {
            Some(root) => (
                util::service_tempdir_in("sigillo-postfix-", &root.join("tmp"))?,
                util::user_ids_in(root, "postfix")?,
            ),
            None => (
                service_tempdir("sigillo-postfix-")?,
                util::user_ids("postfix")?,
            ),
        };
        for sub in ["etc", "queue", "data", "inbox"] {
            std::fs::create_dir_all(dir.path().join(sub))
                .with_context(|| format!("creating {sub} in {}", dir.path().display()))?;
        }
        for sub in ["data", "inbox"] {
            std::os::unix::fs::chown(dir.path().join(sub), Some(uid), Some(gid))
                .with_context(|| format!("chown postfix {sub}"))?;
        }
        let mut pf = Postfix {
            port: 0,
            ipv6: options.ipv6,
            dir,
            options,
            master: None,
            postfix,
        };
        pf.install_tls_files()?;
        for (name, src) in &pf.options.files {
            std::fs::copy(src, pf.dir.path().join("etc").join(name))
                .with_context(|| format!("copying {} into the instance", src.display()))?;
        }

        // A port may be taken between free_port() and Postfix's bind(): retry with another.
        let attempts = if pf.options.port.is_some() { 1 } else { 3 };
        let mut last_err = None;
        for _ in 0..attempts {
            pf.port = pf.options.port.unwrap_or_else(free_port);
            pf.write_config(uid, gid)?;
            match pf.start_once() {
                Ok(()) => return Ok(pf),
                Err(e) => {
                    let in_use = std::fs::read_to_string(pf.log_path())
                        .map(|l| l.contains("Address already in use"))
                        .unwrap_or(false);
                    pf.stop();
                    last_err = Some(e);
                    if !in_use {
                        break;
                    }
                    // Start over with an empty log so the next error is about the next attempt.
                    let _ = std::fs::remove_file(pf.log_path());
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("postfix did not start")))
    }

    /// Start with defaults but this certificate for STARTTLS.
    pub fn start_with_tls(cert: &CertPair) -> Result<Self> {
        Self::start(PostfixOptions::default().tls(cert))
    }

    /// Start with defaults: no TLS at all (STARTTLS not offered).
    pub fn start_plain() -> Result<Self> {
        Self::start(PostfixOptions::default())
    }

    fn install_tls_files(&self) -> Result<()> {
        if let Some(cert) = &self.options.tls {
            std::fs::copy(
                &cert.chain_pem,
                self.dir.path().join("etc/server-chain.pem"),
            )
            .with_context(|| format!("copying {}", cert.chain_pem.display()))?;
            std::fs::copy(&cert.key_pem, self.dir.path().join("etc/server-key.pem"))
                .with_context(|| format!("copying {}", cert.key_pem.display()))?;
        }
        Ok(())
    }

    /// A path of the instance's directory as its Postfix sees it (inside its chroot).
    fn seen_inside(&self, path: &Path) -> String {
        let inside = match &self.options.chroot {
            Some(root) => path
                .strip_prefix(root)
                .map(|p| Path::new("/").join(p))
                .unwrap_or_else(|_| path.to_path_buf()),
            None => path.to_path_buf(),
        };
        inside.display().to_string()
    }

    /// `postfix -c CONF …`, through `chroot(8)` for a [`PostfixOptions::chroot`] instance.
    fn postfix_command(&self) -> Command {
        let conf = self.seen_inside(&self.config_dir());
        let mut command = match &self.options.chroot {
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(&self.postfix);
                c
            }
            None => Command::new(&self.postfix),
        };
        command.arg("-c").arg(conf);
        command
    }

    fn write_config(&self, uid: u32, gid: u32) -> Result<()> {
        let d = self.seen_inside(self.dir.path());
        let o = &self.options;
        let (interfaces, protocols, networks) = if self.ipv6 {
            (
                "127.0.0.1, [::1]".to_string(),
                "all",
                "127.0.0.0/8 [::1]/128",
            )
        } else {
            (self.ip().to_string(), "ipv4", "127.0.0.0/8")
        };
        let mut main = String::new();
        let mut set = |k: &str, v: &str| {
            let _ = writeln!(main, "{k} = {v}");
        };
        set("compatibility_level", "3.6");
        set("queue_directory", &format!("{d}/queue"));
        set("data_directory", &format!("{d}/data"));
        set("mail_owner", "postfix");
        set("setgid_group", "postdrop");
        set("maillog_file", &format!("{d}/postfix.log"));
        set("maillog_file_prefixes", &d);
        set("myhostname", &o.hostname);
        set("mydomain", &o.domain);
        set("myorigin", "$myhostname");
        set("mydestination", "");
        set("inet_interfaces", &interfaces);
        set("inet_protocols", protocols);
        set("mynetworks", networks);
        set("alias_maps", "");
        set("alias_database", "");
        set("local_recipient_maps", "");
        set("relay_domains", "");
        set("biff", "no");
        set("append_dot_mydomain", "no");
        set("smtpd_banner", "$myhostname ESMTP sigillo-test");
        set(
            "smtpd_relay_restrictions",
            "permit_mynetworks, reject_unauth_destination",
        );
        set("virtual_mailbox_domains", &o.domain);
        set("virtual_mailbox_base", &format!("{d}/inbox"));
        set("virtual_mailbox_maps", "static:inbox/");
        set("virtual_uid_maps", &format!("static:{uid}"));
        set("virtual_gid_maps", &format!("static:{gid}"));
        set("default_transport", ERROR_TRANSPORT);
        set("relay_transport", ERROR_TRANSPORT);
        set("local_transport", ERROR_TRANSPORT);
        set("smtpd_tls_loglevel", "1");
        if o.tls.is_some() {
            set("smtpd_tls_security_level", "may");
            set("smtpd_tls_cert_file", &format!("{d}/etc/server-chain.pem"));
            set("smtpd_tls_key_file", &format!("{d}/etc/server-key.pem"));
            if self.options.wrapper_mode {
                set("smtpd_tls_wrappermode", "yes");
            }
        } else {
            set("smtpd_tls_security_level", "none");
        }
        for (k, v) in &o.extra_main_cf {
            set(k, v);
        }
        let etc = self.dir.path().join("etc");
        std::fs::write(etc.join("main.cf"), main).context("writing main.cf")?;
        let mut master = format!(
            "{port}      inet  n       -       n       -       -       smtpd\n{MASTER_CF_SERVICES}",
            port = self.port
        );
        for line in &o.extra_master_cf {
            master.push_str(line);
            master.push('\n');
        }
        std::fs::write(etc.join("master.cf"), master).context("writing master.cf")?;
        Ok(())
    }

    fn start_once(&mut self) -> Result<()> {
        let conf = self.config_dir();
        let (ok, out) = run_capture(self.postfix_command().arg("start"))?;
        if ok {
            self.master = self.read_master_pid().map(|p| (p, start_time(p)));
        }
        let result = if ok && self.options.wrapper_mode {
            // The greeting comes inside TLS: wait until the port accepts connections.
            wait_for_port(self.addr(), self.options.start_timeout)
        } else if ok {
            wait_for_greeting(self.addr(), self.options.start_timeout)
        } else {
            Err(anyhow::anyhow!(
                "`postfix -c {} start` failed: {out}",
                conf.display()
            ))
        };
        match result {
            Ok(_) => {
                if self.master.is_none() {
                    self.master = self.read_master_pid().map(|p| (p, start_time(p)));
                }
                Ok(())
            }
            Err(e) => {
                let (_, check) = run_capture(self.postfix_command().arg("check"))
                    .unwrap_or((false, "(could not run postfix check)".into()));
                Err(e.context(format!(
                    "private Postfix on port {} in {} did not come up.\n\
                     --- postfix start output ---\n{out}\n\
                     --- postfix check output ---\n{check}\n\
                     --- last lines of {} ---\n{}",
                    self.port,
                    self.dir.path().display(),
                    self.log_path().display(),
                    tail(&self.log_path(), 40)
                )))
            }
        }
    }

    fn read_master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The SMTP port (on 127.0.0.1, and on ::1 with `ipv6`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, or the [`PostfixOptions::listen_ip`] and port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip()), self.port)
    }

    fn ip(&self) -> Ipv4Addr {
        self.options.listen_ip.unwrap_or(Ipv4Addr::LOCALHOST)
    }

    /// `[::1]:port`, when started with `ipv6`.
    pub fn addr_v6(&self) -> Option<SocketAddr> {
        self.ipv6
            .then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port))
    }

    /// The instance's log file (`maillog_file`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postfix.log")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Wait until a log line contains `needle` (Postfix logs asynchronously); returns the line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        util::wait_for_log_line(&self.log_path(), needle, timeout)
    }

    /// Wait until a log line contains every one of `needles` (e.g. a recipient and
    /// `status=`); returns the line.
    pub fn wait_for_log_all(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        util::wait_for_log_all(&self.log_path(), needles, timeout)
    }

    /// The instance's `config_directory` (holds main.cf, master.cf), for `postfix -c`, `postconf -c`.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The maildir that receives mail for the test domain (`…/inbox/inbox/`, with `new/`).
    pub fn mailbox_dir(&self) -> PathBuf {
        self.dir.path().join("inbox/inbox")
    }

    /// Messages delivered so far (files in the maildir's `new/` and `cur/`).
    pub fn delivered(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.mailbox_dir().join(sub)) {
                files.extend(rd.flatten().map(|e| e.path()));
            }
        }
        files.sort();
        files
    }

    /// The options it was started with.
    pub fn options(&self) -> &PostfixOptions {
        &self.options
    }

    /// The Debian 13 tree with Postfix 3.10 that `.ci/install-peers` makes, if it is there:
    /// `SIGILLO_POSTFIX310_ROOT`, else [`POSTFIX_310_ROOT`].
    pub fn root_310() -> Option<PathBuf> {
        let root = std::env::var_os("SIGILLO_POSTFIX310_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(POSTFIX_310_ROOT));
        root.join("usr/sbin/postfix").is_file().then_some(root)
    }

    /// The instance's directory (temp dir) on this host.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn stop(&mut self) {
        let master = self.master.take();
        let pid = master.map(|(p, _)| p);
        // Remember the children with their start times, to kill only those same processes.
        let kids: Vec<(u32, Option<u64>)> = pid
            .map(children_of)
            .unwrap_or_default()
            .into_iter()
            .map(|k| (k, start_time(k)))
            .collect();
        let _ = self
            .postfix_command()
            .arg("stop")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(pid) = pid {
            if !wait_gone(&[pid], Duration::from_secs(5)) {
                let _ = self
                    .postfix_command()
                    .arg("abort")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                let same = master.is_some_and(|(_, started)| start_time(pid) == started);
                if !wait_gone(&[pid], Duration::from_secs(2)) && same {
                    signal(pid, "KILL");
                }
            }
            // Children leave by themselves once the master is gone; make sure.
            let kid_pids: Vec<u32> = kids.iter().map(|(k, _)| *k).collect();
            if !wait_gone(&kid_pids, Duration::from_secs(2)) {
                for (kid, started) in &kids {
                    if pid_alive(*kid) && start_time(*kid) == *started {
                        signal(*kid, "KILL");
                    }
                }
            }
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}
