//! End to end, a relay pin for an IPv6 relayhost on another port: a real Postfix relays through
//! `relayhost = [2001:db8::25]:2525` over TLS, `sigillo policy build` pins the relay from its
//! log, and a second real Postfix, whose main.cf spells the same relayhost
//! `[IPv6:2001:DB8::25]:2525`, asks `sigillo policy serve --pins` for its TLS policy under that
//! key, gets the pin, and defers its mail when STARTTLS is stripped on the way, instead of
//! sending it in clear.
//!
//! The relay is `sigillo strip-proxy` on [2001:db8::25]:2525 (first letting STARTTLS through,
//! then stripping it) in front of a receiving Postfix on 127.0.0.1. Deliveries to 127.0.0.1 and ::1
//! count as internal mail, so the relay needs another address: the test runs itself again in
//! a network namespace of its own ([`NetNs::run_test_inside`]) and adds 2001:db8::25 to its
//! loopback interface there.

mod support;

use sigillo_testkit::{NetNs, Postfix, PostfixOptions, TestCa, require_tools};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::Sigillo;

const TEST: &str = "a_relay_pin_built_from_the_log_answers_postfix_for_its_relayhost";
/// The relay's address and port, as the first sender's main.cf writes them.
const RELAY: &str = "[2001:db8::25]:2525";
/// The same relay, as the second sender's main.cf writes it.
const RELAY_SPELLED: &str = "[IPv6:2001:DB8::25]:2525";
const DOMAINS: [&str; 3] = ["a.example", "b.example", "c.example"];

#[test]
fn a_relay_pin_built_from_the_log_answers_postfix_for_its_relayhost() {
    require_tools!("postfix", "swaks", "ip-netns");
    if NetNs::current().is_some() {
        run_lab();
        return;
    }
    let ns = NetNs::create("relay").expect("network namespace");
    let added = ns
        .command("ip")
        .args(["addr", "add", "2001:db8::25/128", "dev", "lo", "nodad"])
        .status()
        .expect("run ip");
    assert!(added.success(), "adding 2001:db8::25 in the namespace");
    // Nothing answers DNS in the namespace: fail lookups at once.
    ns.set_resolv_conf("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        .expect("resolv.conf");
    let name = ns.name().to_owned();
    let status = ns
        .run_test_inside(TEST, Duration::from_secs(120))
        .expect("run the lab in the namespace");
    assert!(status.success(), "the lab in namespace {name} failed");
}

/// A sending Postfix that relays everything to `relayhost`, over TLS when offered.
fn sender(relayhost: &str, policy_maps: Option<String>) -> Postfix {
    let mut options = PostfixOptions::default()
        .hostname("sender.lab.test")
        .domain("sender.lab.test")
        .master_cf("smtp      unix  -       -       n       -       -       smtp")
        .main_cf("inet_protocols", "all")
        .main_cf("default_transport", "smtp")
        .main_cf("relayhost", relayhost)
        .main_cf("smtp_tls_security_level", "may")
        .main_cf("smtp_tls_loglevel", "1")
        .main_cf("smtp_connect_timeout", "10s");
    if let Some(maps) = policy_maps {
        options = options.main_cf("smtp_tls_policy_maps", &maps);
    }
    Postfix::start(options).expect("sending Postfix")
}

fn submit(sender: &Postfix, to: &str, subject: &str) {
    let out = Command::new("timeout")
        .args(["60", "swaks", "--server"])
        .arg(sender.addr().ip().to_string())
        .args(["--port", &sender.port().to_string()])
        .args(["--to", to, "--from", "alice@sender.lab.test"])
        .args(["--helo", "client.lab.test", "--timeout", "20"])
        .args(["--header", &format!("Subject: {subject}")])
        .stdin(Stdio::null())
        .output()
        .expect("run swaks");
    assert!(
        out.status.success(),
        "swaks to {to}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn proxy(upstream: std::net::SocketAddr, allow_tls: bool) -> Sigillo {
    let mut args = vec![
        "strip-proxy".to_owned(),
        "--listen".into(),
        RELAY.into(),
        "--allow-public".into(),
        "--upstream".into(),
        upstream.to_string(),
    ];
    if allow_tls {
        // (A masked banner makes Postfix turn on its PIX workarounds and send HELO: it would
        // not see STARTTLS.)
        args.extend(["--allow-tls".into(), "--no-mask-banner".into()]);
    }
    let mut proxy = Sigillo::spawn(&args);
    proxy.wait_for_line("listening on ", Duration::from_secs(20));
    proxy
}

/// Inside the namespace.
fn run_lab() {
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["mx.lab.test"]).expect("certificate");
    let receiver = Postfix::start(
        PostfixOptions::default()
            .tls(&cert)
            .hostname("mx.lab.test")
            .domain("lab.test")
            .main_cf("virtual_mailbox_domains", &DOMAINS.join(" ")),
    )
    .expect("receiving Postfix");

    // 1. Mail to three domains through the relay, over TLS.
    let mut relay = proxy(receiver.addr(), true);
    let first = sender(RELAY, None);
    for domain in DOMAINS {
        submit(
            &first,
            &format!("user@{domain}"),
            &format!("first {domain}"),
        );
    }
    for domain in DOMAINS {
        let line = first
            .wait_for_log_all(
                &[&format!("to=<user@{domain}>"), "status="],
                Duration::from_secs(60),
            )
            .expect("delivery line");
        assert!(
            line.contains("relay=2001:db8::25[2001:db8::25]:2525,") && line.contains("status=sent"),
            "{line}\n{}",
            first.log()
        );
    }
    assert!(relay.terminate(Duration::from_secs(10)).success());

    // 2. Pins from that log: the relay, under the key of its relayhost.
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("tls_pins");
    let out = Command::new(env!("CARGO_BIN_EXE_sigillo"))
        .args(["policy", "build", "--min-messages", "1", "--postfix"])
        .arg(&pins)
        .arg(first.log_path())
        .stdin(Stdio::null())
        .output()
        .expect("run policy build");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map = std::fs::read_to_string(&pins).unwrap();
    assert!(
        map.lines().any(|l| l == format!("{RELAY}  encrypt")),
        "{map}\n{summary}"
    );

    // 3. STARTTLS stripped on the way to the relay; a second sender, its main.cf spelling the
    // relay otherwise, asks policy serve, which answers with the pin: the mail is deferred.
    let mut relay = proxy(receiver.addr(), false);
    let mut daemon = Sigillo::spawn(&[
        "policy",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--map-name",
        "sts",
        "--verbose",
        "--no-dane",
        "--resolver",
        "127.0.0.1:9",
        "--pins",
        pins.to_str().unwrap(),
    ]);
    let daemon_addr = daemon.listening_addr();
    let second = sender(
        RELAY_SPELLED,
        Some(format!("socketmap:inet:{daemon_addr}:sts")),
    );
    submit(&second, "user@a.example", "second");
    let line = second
        .wait_for_log_all(&["to=<user@a.example>", "status="], Duration::from_secs(60))
        .expect("delivery line");
    assert!(
        line.contains("status=deferred") && line.contains("TLS is required, but was not offered"),
        "{line}\n{}\n--- policy serve ---\n{}",
        second.log(),
        daemon.lines().join("\n")
    );
    let answered = daemon.wait_for_line(RELAY_SPELLED, Duration::from_secs(10));
    assert!(
        answered.contains(&format!("{RELAY_SPELLED}: OK encrypt (pinned from history")),
        "{answered}"
    );
    // The receiver never got it.
    for path in receiver.delivered() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains("Subject: second"), "{}", path.display());
    }
    assert!(relay.terminate(Duration::from_secs(10)).success());
    assert!(daemon.terminate(Duration::from_secs(15)).success());
}
