//! The TLSRPT attributes of `sigillo policy serve --tlsrpt-attributes`, read by the only MTA that
//! reads them: a real Postfix 3.10 (Debian 13's, built with TLSRPT support, run through
//! `chroot` from the tree `.ci/install-peers` bootstraps) asks the daemon for the TLS policy of
//! two MTA-STS `enforce` domains, delivers to a real Postfix 3.7 receiver, and hands the
//! policy to its TLSRPT library, which sends one datagram per delivery attempt to a collector
//! socket that this test holds. Postfix must accept the whole answer (the `{ policy_string =
//! … }` form included), enforce it, and report exactly the policy sigillo fetched:
//! - `sts.lab.test`: the receiver's certificate names its MX, so the mail goes over verified TLS
//!   and the report is a success;
//! - `mismatch.lab.test`: its MX presents the same certificate, which does not name it, so the
//!   mail is deferred and the report is a failure, with the same policy.
//!
//! Why the attributes are off by default: Debian 12's Postfix 3.7, asking the same daemon for
//! `sts.lab.test`, rejects the unknown `policy_type` attribute and with it the whole answer,
//! and defers the mail that Postfix 3.10 delivered.
//!
//! Postfix resolves MX records through `/etc/resolv.conf` of its tree (127.0.0.1), so the lab
//! runs in a network namespace made by the test ([`NetNs::run_test_inside`]):
//!
//! | address | what |
//! |---|---|
//! | 127.0.0.1:53 | DNS, zone `lab.test` (signed): MX, `_mta-sts`, `_smtp._tls`, policy hosts |
//! | 127.0.0.1:443 | HTTPS, `mta-sts.<domain>` policies |
//! | 127.0.0.1:free | the sending Postfix 3.10 (swaks submits here), `sigillo policy serve` |
//! | 127.0.0.2:25 | the receiving Postfix 3.7, STARTTLS with a certificate for `mx.sts.lab.test` |

mod support;

use serde_json::Value;
use sigillo_testkit::{
    DnsServer, HttpResponse, HttpsServer, NetNs, Postfix, PostfixOptions, TestCa, ZoneBuilder,
    require_tools, swaks_ok,
};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};
use support::Sigillo;

/// This test's name, to run it again inside the namespace.
const TEST: &str = "postfix_310_reports_the_mta_sts_policy_sigillo_answers";
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const RECEIVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The collector socket, relative to the sending Postfix's queue directory (its smtp
/// processes' working directory), as Postfix's TLSRPT_README suggests.
const SOCKET: &str = "tlsrpt.sock";
/// `tlsrpt_policy_type_t`, `tlsrpt_final_result_t` and `tlsrpt_failure_t` of libtlsrpt's
/// `tlsrpt.h`.
const TLSRPT_POLICY_STS: i64 = 2;
const TLSRPT_FINAL_SUCCESS: i64 = 0;
const TLSRPT_FINAL_FAILURE: i64 = 1;
const TLSRPT_CERTIFICATE_HOST_MISMATCH: i64 = 202;

/// One recipient domain: whether its mail goes through (verified) or is deferred.
struct Case {
    domain: &'static str,
    delivered: bool,
}

const CASES: &[Case] = &[
    Case {
        domain: "sts.lab.test",
        delivered: true,
    },
    Case {
        domain: "mismatch.lab.test",
        delivered: false,
    },
];

fn policy_text(domain: &str) -> String {
    format!("version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 86400\n")
}

#[test]
fn postfix_310_reports_the_mta_sts_policy_sigillo_answers() {
    require_tools!("postfix", "postfix-3.10", "swaks", "ip-netns");
    if NetNs::current().is_some() {
        run_lab();
        return;
    }
    let ns = NetNs::create("tlsrpt").expect("network namespace");
    ns.add_address(RECEIVER_IP).expect("loopback address");
    ns.set_resolv_conf("nameserver 127.0.0.1\n")
        .expect("resolv.conf");
    let status = ns
        .run_test_inside(TEST, Duration::from_secs(120))
        .expect("run the lab in the namespace");
    assert!(status.success(), "the lab failed: {status}");
}

/// Inside the namespace: start the lab, send one message per case, check the outcome and the
/// TLSRPT datagrams.
fn run_lab() {
    let root = Postfix::root_310().expect("the Postfix 3.10 tree");
    let ca = TestCa::new().expect("test CA");
    let dns = DnsServer::start_at(SocketAddr::from((LOCAL_IP, 53)), zone())
        .expect("DNS server on 127.0.0.1:53");
    let anchor = dns.trust_anchor_file().expect("signed zone");
    let https = HttpsServer::start_at(
        SocketAddr::from((LOCAL_IP, 443)),
        &ca.issue(&["mta-sts.sts.lab.test", "mta-sts.mismatch.lab.test"])
            .expect("policy host certificate"),
    )
    .expect("HTTPS server on 127.0.0.1:443");
    for case in CASES {
        https.route_host(
            &format!("mta-sts.{}", case.domain),
            "/.well-known/mta-sts.txt",
            HttpResponse::ok(policy_text(case.domain)),
        );
    }
    // Both MX names lead here; the certificate names only the first.
    let receiver = Postfix::start(
        PostfixOptions::default()
            .tls(
                &ca.issue(&["mx.sts.lab.test"])
                    .expect("receiver certificate"),
            )
            .listen_ip(RECEIVER_IP)
            .hostname("mx.lab.test")
            .domain("lab.test")
            .main_cf("virtual_mailbox_domains", "sts.lab.test mismatch.lab.test")
            .port(25),
    )
    .expect("receiving Postfix on 127.0.0.2:25");

    let mut args: Vec<OsString> = [
        "policy",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--map-name",
        "sts",
        "--verbose",
        "--tlsrpt-attributes",
        "--resolver",
    ]
    .map(OsString::from)
    .into();
    args.push(dns.addr().to_string().into());
    args.extend(["--trust-anchor".into(), anchor.into_os_string()]);
    args.extend(["--ca-file".into(), ca.ca_pem().as_os_str().to_owned()]);
    let mut daemon = Sigillo::spawn(&args);
    let daemon_addr = daemon.listening_addr();

    let sending = |options: PostfixOptions| {
        options
            .file("ca.pem", ca.ca_pem())
            .hostname("sender.lab.test")
            .domain("sender.lab.test")
            .master_cf("smtp      unix  -       -       n       -       -       smtp")
            .main_cf("default_transport", "smtp")
            .main_cf("smtp_host_lookup", "dns")
            .main_cf("smtp_tls_security_level", "may")
            .main_cf(
                "smtp_tls_policy_maps",
                &format!("socketmap:inet:{daemon_addr}:sts"),
            )
            .main_cf("smtp_tls_CAfile", "$config_directory/ca.pem")
            .main_cf("smtp_tls_loglevel", "1")
            .main_cf("smtp_connection_cache_on_demand", "no")
            .main_cf("smtp_connect_timeout", "10s")
    };
    let sender = Postfix::start(
        sending(PostfixOptions::default().chroot(&root))
            .main_cf("smtp_tlsrpt_enable", "yes")
            .main_cf("smtp_tlsrpt_socket_name", SOCKET),
    )
    .expect("sending Postfix 3.10");
    let version = Command::new("chroot")
        .arg(&root)
        .args(["postconf", "-d", "-h", "mail_version"])
        .output()
        .expect("postconf in the tree");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert!(version.starts_with("3.1"), "mail_version {version:?}");

    // The collector: the smtp processes (user postfix) write to it.
    let socket_path = sender.dir().join("queue").join(SOCKET);
    let collector = UnixDatagram::bind(&socket_path).expect("bind the collector socket");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666))
            .expect("chmod the collector socket");
    }
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    for case in CASES {
        submit(&sender, case.domain);
    }
    let mut failures = Vec::new();
    for case in CASES {
        let rcpt = format!("to=<user@{}>", case.domain);
        match sender.wait_for_log_all(&[&rcpt, "status="], Duration::from_secs(60)) {
            Ok(line) if case.delivered && !line.contains("status=sent") => {
                failures.push(format!("{}: not sent: {line}", case.domain));
            }
            Ok(line) if !case.delivered && !line.contains("status=deferred") => {
                failures.push(format!("{}: not deferred: {line}", case.domain));
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: {e}", case.domain)),
        }
    }
    let log = sender.log();
    if !log.contains("Verified TLS connection established to mx.sts.lab.test") {
        failures.push("no verified TLS connection to mx.sts.lab.test".into());
    }
    // Postfix drops a whole policy answer it cannot parse, with a warning naming the map.
    for line in log.lines().filter(|l| l.contains("warning:")) {
        if line.contains("socketmap") || line.contains("policy") || line.contains("TLSRPT") {
            failures.push(format!("sender warning: {line}"));
        }
    }

    let reports = collect(&collector, Duration::from_secs(20));
    for case in CASES {
        if let Err(why) = check_report(case, &reports) {
            failures.push(format!("{}: {why}", case.domain));
        }
    }

    // Postfix 3.7 (this machine's own), same daemon, same domain: the answer is refused whole.
    let old = Postfix::start(sending(PostfixOptions::default())).expect("sending Postfix 3.7");
    submit(&old, "sts.lab.test");
    match old.wait_for_log_all(
        &["to=<user@sts.lab.test>", "status="],
        Duration::from_secs(60),
    ) {
        Ok(line) if line.contains("status=deferred") => {}
        Ok(line) => failures.push(format!("Postfix 3.7 did not defer: {line}")),
        Err(e) => failures.push(format!("Postfix 3.7: {e}")),
    }
    if !old
        .log()
        .contains("invalid attribute name: \"policy_type\"")
    {
        failures.push("Postfix 3.7 logged no invalid attribute policy_type".into());
    }
    assert!(
        failures.is_empty(),
        "{}\n--- datagrams ---\n{}\n--- sender log ---\n{log}\n--- Postfix 3.7 sender log ---\n\
         {}\n--- receiver log ---\n{}\n--- policy daemon ---\n{}",
        failures.join("\n"),
        reports
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        old.log(),
        receiver.log(),
        daemon.lines().join("\n"),
    );
    assert!(daemon.terminate(Duration::from_secs(15)).success());
}

/// The signed zone: each case's MX (at the receiver), its MTA-STS and TLS-RPT records, and its
/// policy host (here).
fn zone() -> ZoneBuilder {
    let mut zone = ZoneBuilder::new("lab.test").signed();
    for case in CASES {
        let d = case.domain;
        let mx = format!("mx.{d}");
        zone = zone
            .mx(d, 10, &mx)
            .a(&mx, RECEIVER_IP)
            .txt(&format!("_mta-sts.{d}"), "v=STSv1; id=20260101T000000;")
            .txt(
                &format!("_smtp._tls.{d}"),
                "v=TLSRPTv1; rua=mailto:tlsrpt@lab.test",
            )
            .a(&format!("mta-sts.{d}"), LOCAL_IP);
    }
    zone
}

/// Submits a message for `user@domain` to the sending Postfix with swaks (which must succeed).
fn submit(sender: &Postfix, domain: &str) {
    let to = format!("user@{domain}");
    let args = [
        "--to",
        &to,
        "--from",
        "alice@sender.lab.test",
        "--timeout",
        "20",
    ];
    swaks_ok(sender.addr(), &args).unwrap_or_else(|e| panic!("{e:#}"));
}

/// Every datagram the collector gets until one per case has come or `timeout` passes, each
/// parsed as JSON (a datagram that is not JSON fails the test).
fn collect(collector: &UnixDatagram, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut reports: Vec<Value> = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let seen = |d: &str| reports.iter().any(|r| r["d"] == d);
        if CASES.iter().all(|c| seen(c.domain)) {
            break;
        }
        match collector.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("datagram is not JSON ({e}): {text}"));
                reports.push(value);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the collector socket: {e}"),
        }
    }
    reports
}

/// The case's datagram carries the TLSRPT record Postfix looked up and exactly the MTA-STS
/// policy sigillo answered, with the expected result.
fn check_report(case: &Case, reports: &[Value]) -> Result<(), String> {
    let d = case.domain;
    let report = reports
        .iter()
        .find(|r| r["d"] == d)
        .ok_or("no TLSRPT datagram for it")?;
    if report["pr"] != "v=TLSRPTv1; rua=mailto:tlsrpt@lab.test" {
        return Err(format!("policy record {}", report["pr"]));
    }
    let policies = report["policies"].as_array().ok_or("no policies")?;
    let [policy] = policies.as_slice() else {
        return Err(format!("{} policies, expected 1", policies.len()));
    };
    let strings: Vec<&str> = policy["policy-string"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let want: Vec<String> = policy_text(d).lines().map(str::to_owned).collect();
    let checks = [
        (
            policy["policy-type"] == TLSRPT_POLICY_STS,
            "policy-type sts",
        ),
        (policy["policy-domain"] == d, "policy-domain"),
        (strings == want, "policy-string: the fetched policy's lines"),
        (
            policy["mx-host"] == serde_json::json!([format!("mx.{d}")]),
            "mx-host: the policy's mx pattern",
        ),
        (
            policy["f"]
                == if case.delivered {
                    TLSRPT_FINAL_SUCCESS
                } else {
                    TLSRPT_FINAL_FAILURE
                },
            "final result",
        ),
        (
            (policy["t"].as_i64().unwrap_or(-1) > 0) != case.delivered,
            "failure count",
        ),
        (
            case.delivered || policy["failure-details"][0]["c"] == TLSRPT_CERTIFICATE_HOST_MISMATCH,
            "failure code: certificate-host-mismatch",
        ),
    ];
    let wrong: Vec<&str> = checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| *what)
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("wrong {}: {policy}", wrong.join(", ")))
    }
}
