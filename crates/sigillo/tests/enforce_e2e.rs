//! End to end, issue 4's promise: a real Postfix that routes by MX, asking `sigillo policy
//! serve` for its TLS policy, delivers to a second real Postfix through `sigillo strip-proxy`.
//! Mail for a pinned domain, an MTA-STS `enforce` domain or a DANE domain is deferred and
//! never reaches the receiver in clear; mail for a domain without a policy goes in clear
//! through the proxy; without the proxy it goes over TLS, verified for MTA-STS and DANE.
//!
//! Postfix resolves MX, A and TLSA records through the system resolver and trusts DNSSEC only
//! through the resolver's AD bit, so the whole lab runs in a network namespace made by the
//! test, whose `/etc/resolv.conf` points at a validating Unbound on 127.0.0.1:53 (Postfix
//! sets `RES_TRUSTAD` itself), which asks the test's DNSSEC-signed DNS server for `lab.test`
//! and trusts its key. The test runs itself again inside the namespace ([`NetNs::run_test_inside`]);
//! everything listens on the namespace's own loopback:
//!
//! | address | what |
//! |---|---|
//! | 127.0.0.1:53 | Unbound, validating, `lab.test` stub to :5353 with its trust anchor |
//! | 127.0.0.1:5353 | DNS, zone `lab.test` (signed) |
//! | 127.0.0.1:443 | HTTPS, `mta-sts.<domain>` policies |
//! | 127.0.0.1:free | the sending Postfix (swaks submits here), `sigillo policy serve` |
//! | 127.0.0.2:25 | the receiving Postfix, STARTTLS with a TestCa certificate |
//! | 127.0.0.3:25 | `sigillo strip-proxy` in front of 127.0.0.2:25 |

mod support;

use sigillo_testkit::{
    DnsServer, HttpResponse, HttpsServer, NetNs, Postfix, PostfixOptions, TestCa, ZoneBuilder,
    require_tools,
};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::Sigillo;

/// This test's name, to run it again inside the namespace.
const TEST: &str = "postfix_defers_what_a_policy_protects_and_sends_the_rest";
const SENDER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const RECEIVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const PROXY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Where the authoritative DNS server listens; Unbound has port 53.
const AUTHORITY_PORT: u16 = 5353;
/// One `_mta-sts` TXT id for both MTA-STS domains.
const STS_ID: &str = "20250101T000000";

/// What must happen to the message for one recipient domain.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// Deferred by the sending Postfix; the receiver never gets it.
    Deferred,
    /// Delivered, and the receiving session had no TLS.
    InClear,
    /// Delivered over TLS.
    OverTls,
}

/// One recipient domain of the lab.
struct Case {
    domain: &'static str,
    /// Its MX host resolves to the proxy (else straight to the receiver).
    via_proxy: bool,
    /// What `sigillo policy serve` answers for it.
    answer: &'static str,
    outcome: Outcome,
    /// In the sending Postfix's delivery line for it.
    sender_log: &'static str,
}

const CASES: &[Case] = &[
    Case {
        domain: "pinned.lab.test",
        via_proxy: true,
        answer: "OK encrypt",
        outcome: Outcome::Deferred,
        sender_log: "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host \
                     mx.pinned.lab.test[127.0.0.3]",
    },
    Case {
        domain: "sts.lab.test",
        via_proxy: true,
        answer: "OK secure match=mx.sts.lab.test servername=hostname",
        outcome: Outcome::Deferred,
        sender_log: "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host \
                     mx.sts.lab.test[127.0.0.3]",
    },
    // Unbound validates, so Postfix sees the MX, A and TLSA records as secure: it connects
    // to the proxy and, the TLSA record making TLS mandatory, defers when STARTTLS is gone
    // (not "non DNSSEC destination", which it would say before connecting).
    Case {
        domain: "dane.lab.test",
        via_proxy: true,
        answer: "OK dane-only",
        outcome: Outcome::Deferred,
        sender_log: "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host \
                     mx.dane.lab.test[127.0.0.3]",
    },
    // Without the proxy the TLSA record (3 1 1 of the receiver's key) verifies the receiver.
    Case {
        domain: "dane-direct.lab.test",
        via_proxy: false,
        answer: "OK dane-only",
        outcome: Outcome::OverTls,
        sender_log: "relay=mx.dane-direct.lab.test[127.0.0.2]:25",
    },
    Case {
        domain: "plain.lab.test",
        via_proxy: true,
        answer: "NOTFOUND",
        outcome: Outcome::InClear,
        sender_log: "relay=mx.plain.lab.test[127.0.0.3]:25",
    },
    Case {
        domain: "direct.lab.test",
        via_proxy: false,
        answer: "NOTFOUND",
        outcome: Outcome::OverTls,
        sender_log: "relay=mx.direct.lab.test[127.0.0.2]:25",
    },
    Case {
        domain: "sts-direct.lab.test",
        via_proxy: false,
        answer: "OK secure match=mx.sts-direct.lab.test servername=hostname",
        outcome: Outcome::OverTls,
        sender_log: "relay=mx.sts-direct.lab.test[127.0.0.2]:25",
    },
];

#[test]
fn postfix_defers_what_a_policy_protects_and_sends_the_rest() {
    require_tools!("postfix", "swaks", "openssl", "ip-netns", "unbound");
    if NetNs::current().is_some() {
        run_lab();
        return;
    }
    let ns = NetNs::create("e2e").expect("network namespace");
    for ip in [RECEIVER_IP, PROXY_IP] {
        ns.add_address(ip).expect("loopback address");
    }
    ns.set_resolv_conf("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        .expect("resolv.conf");
    let name = ns.name().to_owned();
    let status = ns
        .run_test_inside(TEST, Duration::from_secs(120))
        .expect("run the lab in the namespace");
    assert!(
        status.success(),
        "the lab in namespace {name} failed: {status}"
    );
    drop(ns);
    let (list, etc) = (
        Command::new("ip").args(["netns", "list"]).output().unwrap(),
        Path::new("/etc/netns").join(&name),
    );
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&name) && !etc.exists(),
        "namespace {name} left behind"
    );
}

/// Inside the namespace: start the lab, send one message per case, check each outcome.
fn run_lab() {
    let ca = TestCa::new().expect("test CA");
    let mx_names: Vec<String> = CASES.iter().map(|c| format!("mx.{}", c.domain)).collect();
    let mx_refs: Vec<&str> = mx_names.iter().map(String::as_str).collect();
    let receiver_cert = ca.issue(&mx_refs).expect("receiver certificate");
    let dns = DnsServer::start_at(
        SocketAddr::from((SENDER_IP, AUTHORITY_PORT)),
        zone(&spki_sha256(&receiver_cert.cert_pem)),
    )
    .expect("DNS server on 127.0.0.1:5353");
    let anchor = dns.trust_anchor_file().expect("signed zone");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut resolver = start_unbound(dir.path(), &anchor);
    let https = HttpsServer::start_at(
        SocketAddr::from((SENDER_IP, 443)),
        &ca.issue(&["mta-sts.sts.lab.test", "mta-sts.sts-direct.lab.test"])
            .expect("policy host certificate"),
    )
    .expect("HTTPS server on 127.0.0.1:443");
    for domain in ["sts.lab.test", "sts-direct.lab.test"] {
        https.route_host(
            &format!("mta-sts.{domain}"),
            "/.well-known/mta-sts.txt",
            HttpResponse::ok(format!(
                "version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 86400\n"
            )),
        );
    }

    let domains: Vec<&str> = CASES.iter().map(|c| c.domain).collect();
    let receiver = Postfix::start(
        PostfixOptions::default()
            .tls(&receiver_cert)
            .listen_ip(RECEIVER_IP)
            .hostname("mx.lab.test")
            .domain("lab.test")
            .main_cf("virtual_mailbox_domains", &domains.join(" "))
            .port(25),
    )
    .expect("receiving Postfix on 127.0.0.2:25");
    let mut proxy = Sigillo::spawn(&[
        "strip-proxy",
        "--listen",
        &format!("{PROXY_IP}:25"),
        "--upstream",
        &receiver.addr().to_string(),
    ]);
    proxy.wait_for_line("listening on ", Duration::from_secs(20));

    let pins = dir.path().join("pins.cf");
    std::fs::write(
        &pins,
        "# 40 messages, 40 over TLS, 0 verified\npinned.lab.test  encrypt\n",
    )
    .unwrap();
    let mut args: Vec<OsString> = [
        "policy",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--map-name",
        "sts",
        "--verbose",
        "--resolver",
    ]
    .map(OsString::from)
    .into();
    args.push(dns.addr().to_string().into());
    for (option, path) in [
        ("--trust-anchor", anchor.as_path()),
        ("--ca-file", ca.ca_pem()),
        ("--pins", pins.as_path()),
    ] {
        args.extend([option.into(), path.into()]);
    }
    let mut daemon = Sigillo::spawn(&args);
    let daemon_addr = daemon.listening_addr();

    let sender = Postfix::start(
        PostfixOptions::default()
            .hostname("sender.lab.test")
            .domain("sender.lab.test")
            .master_cf("smtp      unix  -       -       n       -       -       smtp")
            .main_cf("default_transport", "smtp")
            .main_cf("smtp_host_lookup", "dns")
            .main_cf("smtp_dns_support_level", "dnssec")
            // Probe a name the lab serves (the default, `ns:.`, asks the root); the warning it
            // logs when the answer lacks the AD bit is checked below.
            .main_cf("dnssec_probe", "soa:lab.test")
            .main_cf("smtp_tls_security_level", "may")
            .main_cf(
                "smtp_tls_policy_maps",
                &format!("socketmap:inet:{daemon_addr}:sts"),
            )
            .main_cf("smtp_tls_CAfile", &ca.ca_pem().display().to_string())
            .main_cf("smtp_tls_loglevel", "1")
            .main_cf("smtp_connection_cache_on_demand", "no")
            .main_cf("smtp_connect_timeout", "10s"),
    )
    .expect("sending Postfix");

    for case in CASES {
        submit(&sender, case);
    }
    let mut failures = Vec::new();
    for case in CASES {
        if let Err(why) = check_case(case, &sender, &receiver, &daemon) {
            failures.push(format!("{}: {why}", case.domain));
        }
    }
    if sender
        .log()
        .contains("DNSSEC validation may be unavailable")
    {
        failures.push("the sending Postfix found no DNSSEC validation".into());
    }
    assert!(
        failures.is_empty(),
        "{}\n--- sender log ---\n{}\n--- receiver log ---\n{}\n--- policy daemon ---\n{}\n\
         --- proxy ---\n{}\n--- unbound ---\n{}",
        failures.join("\n"),
        sender.log(),
        receiver.log(),
        daemon.lines().join("\n"),
        proxy.lines().join("\n"),
        resolver.lines().join("\n"),
    );
    // The proxy did strip: one connection per case that reached it, each banner masked.
    let relayed: Vec<String> = proxy
        .lines()
        .into_iter()
        .filter(|l| l.contains(" -> "))
        .collect();
    let connecting = CASES.iter().filter(|c| c.via_proxy).count();
    assert!(
        relayed.len() == connecting && relayed.iter().all(|l| l.contains("rewrote: banner")),
        "{relayed:#?}"
    );
    assert!(proxy.terminate(Duration::from_secs(10)).success());
    assert!(daemon.terminate(Duration::from_secs(15)).success());
    assert!(resolver.terminate(Duration::from_secs(15)).success());
}

/// Unbound on 127.0.0.1:53, run directly (no service) with its files in `dir`: validating,
/// `lab.test` a stub zone served by the test's DNS server, trusted through `anchor`.
fn start_unbound(dir: &Path, anchor: &Path) -> Sigillo {
    let conf = dir.join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n\
             \x20 interface: {SENDER_IP}\n\
             \x20 port: 53\n\
             \x20 do-ip6: no\n\
             \x20 do-not-query-localhost: no\n\
             \x20 local-zone: \"test.\" nodefault\n\
             \x20 module-config: \"validator iterator\"\n\
             \x20 trust-anchor-file: \"{}\"\n\
             \x20 chroot: \"\"\n\
             \x20 username: \"\"\n\
             \x20 directory: \"{}\"\n\
             \x20 pidfile: \"{}\"\n\
             \x20 use-syslog: no\n\
             \x20 logfile: \"\"\n\
             \x20 verbosity: 1\n\
             \x20 val-log-level: 2\n\
             remote-control:\n\
             \x20 control-enable: no\n\
             stub-zone:\n\
             \x20 name: \"lab.test\"\n\
             \x20 stub-addr: {SENDER_IP}@{AUTHORITY_PORT}\n",
            anchor.display(),
            dir.display(),
            dir.join("unbound.pid").display(),
        ),
    )
    .expect("write unbound.conf");
    let mut command = Command::new("unbound");
    command.arg("-d").arg("-c").arg(&conf);
    let mut unbound = Sigillo::spawn_command(command, "unbound".into());
    unbound.wait_for_line("start of service", Duration::from_secs(20));
    unbound
}

/// The signed zone: each case's MX, its host's address (proxy or receiver), the MTA-STS
/// records of the two MTA-STS domains and the DANE domains' TLSA (3 1 1 of `spki`).
fn zone(spki: &[u8]) -> ZoneBuilder {
    let mut zone = ZoneBuilder::new("lab.test").signed();
    for case in CASES {
        let mx = format!("mx.{}", case.domain);
        let ip = if case.via_proxy {
            PROXY_IP
        } else {
            RECEIVER_IP
        };
        zone = zone.mx(case.domain, 10, &mx).a(&mx, ip);
    }
    for domain in ["sts.lab.test", "sts-direct.lab.test"] {
        zone = zone
            .txt(
                &format!("_mta-sts.{domain}"),
                &format!("v=STSv1; id={STS_ID};"),
            )
            .a(&format!("mta-sts.{domain}"), SENDER_IP);
    }
    zone.tlsa("_25._tcp.mx.dane.lab.test", 3, 1, 1, spki).tlsa(
        "_25._tcp.mx.dane-direct.lab.test",
        3,
        1,
        1,
        spki,
    )
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (the data of a `3 1 1` TLSA record).
fn spki_sha256(cert_pem: &Path) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -noout -pubkey | openssl pkey -pubin -outform DER \
             | openssl dgst -sha256 -binary",
        )
        .arg("sh")
        .arg(cert_pem)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success() && out.stdout.len() == 32,
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn message_id(case: &Case) -> String {
    format!("<e2e.{}@sender.lab.test>", case.domain)
}

/// Submits the case's message to the sending Postfix with swaks (which must succeed).
fn submit(sender: &Postfix, case: &Case) {
    let out = Command::new("timeout")
        .args(["60", "swaks", "--server"])
        .arg(sender.addr().ip().to_string())
        .args(["--port", &sender.port().to_string()])
        .args(["--to", &format!("user@{}", case.domain)])
        .args([
            "--from",
            "alice@sender.lab.test",
            "--helo",
            "client.lab.test",
        ])
        .args(["--header", &format!("Subject: e2e {}", case.domain)])
        .args(["--header", &format!("Message-Id: {}", message_id(case))])
        .args(["--timeout", "20"])
        .stdin(Stdio::null())
        .output()
        .expect("run swaks");
    assert!(
        out.status.success(),
        "swaks to the sending Postfix for {}: {}{}",
        case.domain,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks one case against the daemon's answer, the sender's delivery line and what the
/// receiver got.
fn check_case(
    case: &Case,
    sender: &Postfix,
    receiver: &Postfix,
    daemon: &Sigillo,
) -> Result<(), String> {
    let rcpt = format!("to=<user@{}>", case.domain);
    let line = sender
        .wait_for_log_all(&[&rcpt, "status="], Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if !line.contains(case.sender_log) {
        return Err(format!("expected {:?} in {line:?}", case.sender_log));
    }
    let asked = format!("{}: {}", case.domain, case.answer);
    if !daemon.lines().iter().any(|l| l.contains(&asked)) {
        return Err(format!("the policy daemon never answered {asked:?}"));
    }
    let received = receiver
        .log()
        .lines()
        .any(|l| l.contains(&format!("message-id={}", message_id(case))));
    match case.outcome {
        Outcome::Deferred => {
            if !line.contains("status=deferred") {
                return Err(format!("not deferred: {line}"));
            }
            if received {
                return Err("the receiver got the message".into());
            }
            Ok(())
        }
        Outcome::InClear | Outcome::OverTls => {
            let queue_id = line
                .split("queued as ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .filter(|_| line.contains("status=sent"))
                .ok_or_else(|| format!("not sent: {line}"))?;
            let tls = receiving_session_had_tls(&receiver.log(), queue_id)?;
            let want_tls = case.outcome == Outcome::OverTls;
            if tls != want_tls {
                return Err(format!(
                    "receiver's session for {queue_id}: TLS {tls}, expected {want_tls}"
                ));
            }
            if want_tls
                && !sender.log().contains(&format!(
                    "TLS connection established to mx.{}[127.0.0.2]:25",
                    case.domain
                ))
            {
                return Err("the sender logged no TLS connection".into());
            }
            if (case.answer.starts_with("OK secure") || case.answer == "OK dane-only")
                && !sender.log().contains(&format!(
                    "Verified TLS connection established to mx.{}",
                    case.domain
                ))
            {
                return Err("the sender did not verify the host (MTA-STS or DANE)".into());
            }
            Ok(())
        }
    }
}

/// Whether the receiving smtpd session that queued `queue_id` used TLS: from its
/// `QUEUEID: client=` line back to the same process's `connect from` (an smtpd process serves
/// one session at a time), is there a `TLS connection established` line?
fn receiving_session_had_tls(log: &str, queue_id: &str) -> Result<bool, String> {
    let lines: Vec<&str> = log.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(&format!("{queue_id}: client=")))
        .ok_or_else(|| format!("the receiver logged no {queue_id}: client= line"))?;
    let process = smtpd_process(lines[at]).ok_or("no smtpd[pid] in the client= line")?;
    for line in lines[..at].iter().rev() {
        if smtpd_process(line) != Some(process) {
            continue;
        }
        if line.contains("TLS connection established from") {
            return Ok(true);
        }
        if line.contains(": connect from ") {
            return Ok(false);
        }
    }
    Err(format!("no connect from line before {queue_id}"))
}

/// `postfix/smtpd[1234]` of a log line.
fn smtpd_process(line: &str) -> Option<&str> {
    let start = line.find("postfix/smtpd[")?;
    let len = line[start..].find(']')?;
    Some(&line[start..=start + len])
}
