//! `sigillo policy serve` as a real process: `--check` output, Postfix's `postmap -q` as the
//! client, overrides and pins files, SIGTERM, and a restart on the same `--store` while the
//! policy host is down (the cached policy still answers). All peers on 127.0.0.1: the
//! testkit's DNSSEC-signed DNS server and HTTPS server.

mod support;

use serde_json::Value;
use sigillo_testkit::{DnsServer, HttpResponse, HttpsServer, TestCa, ZoneBuilder, require_tools};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::Sigillo;

const SECURE: &str = "secure match=.sts.lab.test servername=hostname";

struct Lab {
    ca: TestCa,
    dns: DnsServer,
    https: HttpsServer,
    dir: tempfile::TempDir,
}

fn lab() -> Lab {
    let dns = ZoneBuilder::new("lab.test")
        .signed()
        .mx("sts.lab.test", 10, "mx.sts.lab.test")
        .txt("_mta-sts.sts.lab.test", "v=STSv1; id=20240101;")
        .a("mta-sts.sts.lab.test", Ipv4Addr::LOCALHOST)
        .mx("pinned.lab.test", 10, "mx.pinned.lab.test")
        .mx("dane.lab.test", 10, "mx.dane.lab.test")
        .tlsa("_25._tcp.mx.dane.lab.test", 3, 1, 1, &[0x11; 32])
        .mx("servfail.lab.test", 10, "mx.servfail.lab.test")
        .servfail("_mta-sts.servfail.lab.test")
        .start()
        .expect("dns");
    let ca = TestCa::new().expect("ca");
    let https = HttpsServer::start(&ca.issue(&["mta-sts.sts.lab.test"]).unwrap()).unwrap();
    https.route(
        "/.well-known/mta-sts.txt",
        HttpResponse::ok("version: STSv1\nmode: enforce\nmx: *.sts.lab.test\nmax_age: 86400\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("overrides.conf"),
        "# local exceptions\nlegacy.lab.test   may\n[relay.lab.test]:587  encrypt\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pins.cf"),
        "# 12 messages, 12 over TLS, 12 verified\npinned.lab.test  verify\n\
         [smtp.lab.test]:587  encrypt\n[2001:db8::25]  encrypt\n\
         # the same relay as another transport spells it (policy build writes both)\n\
         [2001:0db8:0:0::25]  encrypt\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("main.cf"), "").unwrap();
    Lab {
        ca,
        dns,
        https,
        dir,
    }
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The options that point the daemon at this lab.
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "policy".into(),
            "serve".into(),
            "--resolver".into(),
            self.dns.addr().to_string(),
            "--ca-file".into(),
            self.ca.ca_pem().display().to_string(),
            "--mta-sts-port".into(),
            self.https.port().to_string(),
            "--fetch-timeout".into(),
            "2".into(),
            "--overrides".into(),
            self.path("overrides.conf").display().to_string(),
            "--pins".into(),
            self.path("pins.cf").display().to_string(),
            "--store".into(),
            self.path("policies.sqlite").display().to_string(),
        ];
        if let Some(anchor) = self.dns.trust_anchor_file() {
            args.push("--trust-anchor".into());
            args.push(anchor.display().to_string());
        }
        args
    }
}

/// Runs `sigillo ARGS` to completion: (exit code, stdout, stderr).
fn sigillo(args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sigillo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(lab: &Lab, key: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = lab.args();
    args.extend(["--check".into(), key.into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    sigillo(&args)
}

/// A running daemon, on 127.0.0.1:free port.
struct Daemon {
    process: Sigillo,
    addr: SocketAddr,
}

impl Daemon {
    fn start(lab: &Lab) -> Daemon {
        let mut args = lab.args();
        args.extend(["--listen", "127.0.0.1:0", "--map-name", "sts"].map(String::from));
        let mut process = Sigillo::spawn(&args);
        let addr = process.listening_addr();
        Daemon { process, addr }
    }

    fn lines(&self) -> Vec<String> {
        self.process.lines()
    }

    /// SIGTERM, then the exit code and the summary line.
    fn stop(mut self) -> (i32, String) {
        let status = self.process.terminate(Duration::from_secs(15));
        let line = self
            .process
            .wait_for_line("stopped: ", Duration::from_secs(5));
        (status.code().unwrap_or(-1), line)
    }
}

/// `postmap -q KEY socketmap:inet:ADDR:sts` (Postfix's own socketmap client) with a
/// throw-away config directory: (exit code, stdout, stderr).
fn postmap_full(config_dir: &Path, key: &str, addr: SocketAddr) -> (i32, String, String) {
    let out = Command::new("postmap")
        .arg("-c")
        .arg(config_dir)
        .args(["-q", key, &format!("socketmap:inet:{addr}:sts")])
        .output()
        .expect("run postmap");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`postmap_full`] without stderr.
fn postmap(config_dir: &Path, key: &str, addr: SocketAddr) -> (i32, String) {
    let (code, out, _) = postmap_full(config_dir, key, addr);
    (code, out)
}

#[test]
fn check_prints_the_answer_and_why() {
    let lab = lab();
    let (code, out, err) = check(&lab, "sts.lab.test", &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("sts.lab.test: OK {SECURE}"), "{out}");
    assert!(lines.contains(&"  source:  mta-sts"), "{out}");
    assert!(lines.contains(&"  mta-sts: v=STSv1; id=20240101"), "{out}");
    assert!(
        out.contains("  policy:  id 20240101, mode enforce, mx *.sts.lab.test, max_age 86400"),
        "{out}"
    );
    assert!(
        out.contains("  dane:    signed MX, no DNSSEC-validated TLSA"),
        "{out}"
    );
    assert!(
        err.contains("sts.lab.test: fetched MTA-STS policy id 20240101"),
        "{err}"
    );
    // Postfix ≥ 3.10's TLSRPT attributes, on request only.
    let (code, out, err) = check(&lab, "sts.lab.test", &["--tlsrpt-attributes"]);
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap_or_default();
    let want = format!(
        "sts.lab.test: OK {SECURE} policy_type=sts policy_domain=sts.lab.test \
         policy_ttl=86400 mx_host_pattern=*.sts.lab.test {{ policy_string = version: STSv1 }}"
    );
    assert!(first.starts_with(&want), "{out}");

    let cases = [
        ("dane.lab.test", "OK dane-only", "dane"),
        ("pinned.lab.test", "OK verify", "pinned"),
        ("legacy.lab.test", "OK may", "override"),
        ("[relay.lab.test]:587", "OK encrypt", "override"),
        ("other.lab.test", "NOTFOUND ", "none"),
        // Relay pins: Postfix's key for `relayhost = [smtp.lab.test]:587`, and for an IPv6
        // relayhost however main.cf spells it.
        ("[smtp.lab.test]:587", "OK encrypt", "pinned"),
        ("[smtp.lab.test]", "NOTFOUND ", "none"),
        ("[2001:db8::25]", "OK encrypt", "pinned"),
        ("[IPv6:2001:DB8:0::25]:25", "OK encrypt", "pinned"),
        ("[2001:0db8:0:0::25]", "OK encrypt", "pinned"),
        ("[2001:db8::25]:587", "NOTFOUND ", "none"),
    ];
    for (key, reply, source) in cases {
        let (code, out, err) = check(&lab, key, &["--json"]);
        assert_eq!(code, 0, "{err}");
        let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(doc["reply"], reply, "{key}: {doc:#}");
        assert_eq!(doc["decision"]["source"], source, "{key}: {doc:#}");
    }
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let lab = lab();
    std::fs::write(
        lab.path("bad.conf"),
        "ok.lab.test encrypt\nbad.lab.test sekure\n",
    )
    .unwrap();
    let mut args = lab.args();
    let at = args.iter().position(|a| a == "--overrides").unwrap();
    args[at + 1] = lab.path("bad.conf").display().to_string();
    args.extend(["--check".into(), "x.lab.test".into()]);
    let (code, _, err) = sigillo(&args);
    assert_eq!(code, 2);
    assert!(err.contains("bad.conf") && err.contains("line 2"), "{err}");
    assert!(err.contains("unknown TLS level \"sekure\""), "{err}");

    let (code, _, err) = sigillo(&[
        "policy".into(),
        "serve".into(),
        "--listen".into(),
        "localhost:25".into(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("expected IP:PORT, [IPv6]:PORT or unix:/path"),
        "{err}"
    );
}

#[test]
fn serves_postmap_and_keeps_policies_across_a_restart() {
    require_tools!("postmap");
    let mut lab = lab();
    let daemon = Daemon::start(&lab);
    let config = lab.dir.path().to_owned();
    let addr = daemon.addr;
    assert_eq!(postmap(&config, "sts.lab.test", addr), (0, SECURE.into()));
    assert_eq!(
        postmap(&config, "dane.lab.test", addr),
        (0, "dane-only".into())
    );
    assert_eq!(
        postmap(&config, "pinned.lab.test", addr),
        (0, "verify".into())
    );
    assert_eq!(postmap(&config, "legacy.lab.test", addr), (0, "may".into()));
    for key in [
        "[smtp.lab.test]:587",
        "[2001:db8::25]",
        "[ipv6:2001:db8::25]",
    ] {
        assert_eq!(postmap(&config, key, addr), (0, "encrypt".into()), "{key}");
    }
    // NOTFOUND: no output, exit 1, no error; TEMP: a temporary error with its reason.
    let (code, out, err) = postmap_full(&config, "other.lab.test", addr);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(!err.contains("error"), "{err}");
    let (code, out, err) = postmap_full(&config, "servfail.lab.test", addr);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("temporary error: MTA-STS TXT lookup failed for servfail.lab.test"),
        "{err}"
    );
    assert_eq!(lab.https.requests(), 1);
    // Cache hits: no more DNS queries or fetches.
    let queries = lab.dns.queries();
    for _ in 0..5 {
        assert_eq!(postmap(&config, "sts.lab.test", addr), (0, SECURE.into()));
    }
    assert_eq!((lab.dns.queries(), lab.https.requests()), (queries, 1));
    let (code, line) = daemon.stop();
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("1 policy fetch(es)"), "{line}");

    // The policy host goes away; the restarted daemon answers from its store.
    let https_port = lab.https.port();
    lab.https = HttpsServer::start(&lab.ca.issue(&["elsewhere.lab.test"]).unwrap()).unwrap();
    assert_ne!(lab.https.port(), https_port);
    let mut args_lab_port = lab.args();
    if let Some(i) = args_lab_port.iter().position(|a| a == "--mta-sts-port") {
        args_lab_port[i + 1] = https_port.to_string(); // nothing listens there any more
    }
    let daemon = Daemon::start(&lab);
    let restarted = daemon.lines().join("\n");
    assert!(
        restarted.contains("1 cached MTA-STS policies"),
        "{restarted}"
    );
    assert_eq!(
        postmap(&config, "sts.lab.test", daemon.addr),
        (0, SECURE.into())
    );
    assert_eq!(lab.https.requests(), 0, "answered from the store, no fetch");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
    args_lab_port.extend(["--check".into(), "sts.lab.test".into()]);
    let (code, out, err) = sigillo(&args_lab_port);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("sts.lab.test: OK {SECURE}")),
        "{out}"
    );

    // `--check` only reads the store: a user who may not write it (nor its directory, so
    // SQLite cannot make the WAL's `-shm` file) gets the same answer, and the file is left
    // as it was.
    use std::os::unix::fs::PermissionsExt;
    let store = lab.path("policies.sqlite");
    for entry in std::fs::read_dir(lab.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("policies.sqlite-") {
            std::fs::remove_file(&path).unwrap(); // a reader's leftover `-shm`/`-wal`
        } else if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = std::fs::read(&store).unwrap();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let out = if root {
        // Root may write anything: check as `nobody`.
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_sigillo"))
            .args(&args_lab_port)
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv (util-linux)")
    } else {
        Command::new(env!("CARGO_BIN_EXE_sigillo"))
            .args(&args_lab_port)
            .stdin(Stdio::null())
            .output()
            .expect("run sigillo")
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("sts.lab.test: OK {SECURE}")),
        "{stdout}{stderr}"
    );
    assert_eq!(std::fs::read(&store).unwrap(), before);
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// With a file descriptor limit below `--max-connections`, idle connections still make room
/// for a new client (as at the connection limit), instead of locking it out until their idle
/// timeout while `accept` fails with "Too many open files"; and the failures, one every
/// 100 ms, are logged in a few lines, not one each.
#[test]
fn idle_connections_make_room_when_file_descriptors_run_out() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let overrides = dir.path().join("overrides.conf");
    std::fs::write(&overrides, "fd.lab.test  encrypt\n").unwrap();
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_sigillo"))
        .args(["policy", "serve", "--listen", "127.0.0.1:0", "--no-dane"])
        .args(["--resolver", "127.0.0.1:9", "--overrides"])
        .arg(&overrides);
    let mut process = Sigillo::spawn_command(command, "sigillo policy serve".into());
    let addr = process.listening_addr();
    // More idle clients than descriptors: the daemon's accepts start failing.
    let idle: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"15:sts fd.lab.test,").unwrap();
    let mut reply = [0u8; 64];
    let n = client.read(&mut reply).unwrap_or(0);
    assert_eq!(
        &reply[..n],
        b"10:OK encrypt,",
        "{}",
        process.lines().join("\n")
    );
    drop(idle);
    process.terminate(Duration::from_secs(15));
    // `accept` failed every 100 ms until idle connections were closed, but the log has a line
    // for the first failure of each run and one when accept worked again (with the count),
    // not one per failure.
    let lines = process.lines();
    let accept_lines: Vec<&String> = lines.iter().filter(|l| l.contains(": accept ")).collect();
    let failures_counted: u64 = accept_lines
        .iter()
        .filter_map(|l| l.split("accept works again after ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        accept_lines
            .iter()
            .any(|l| l.contains("accept failed: Too many open files")),
        "{lines:#?}"
    );
    assert!(
        failures_counted > accept_lines.len() as u64,
        "{failures_counted} failures in {} lines: {lines:#?}",
        accept_lines.len()
    );
}
