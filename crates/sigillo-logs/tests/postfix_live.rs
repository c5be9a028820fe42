//! Live: a real private Postfix (testkit) receives a known number of messages from swaks,
//! over STARTTLS and in clear, from several loopback source addresses; the parser must count
//! exactly those per peer, with the TLS version, from the log Postfix wrote.

#[path = "postfix_support.rs"]
mod support;

use sigillo_logs::model::{Direction, MtaParser, Record, Scope, Transport};
use sigillo_testkit::{Postfix, PostfixOptions, TestCa, require_tools};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// (source address, messages over TLS, messages in clear)
const PLAN: &[(&str, u32, u32)] = &[
    ("127.0.0.2", 3, 0),
    ("127.0.0.3", 0, 2),
    ("127.0.0.4", 2, 1),
];

fn send(pf: &Postfix, from_ip: &str, tls: bool, n: u32) {
    let domain = &pf.options().domain;
    let server = format!("127.0.0.1:{}", pf.port());
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", &server, "--local-interface", from_ip])
        .args(["--to", &format!("user@{domain}")])
        .args(["--from", &format!("sender{n}@peer-{from_ip}.sender.test")])
        .args(["--helo", &format!("peer-{from_ip}.sender.test")])
        .args([
            "--header",
            &format!("Subject: sigillo live {from_ip} {n} tls={tls}"),
        ])
        .args(["--timeout", "20"]);
    if tls {
        cmd.arg("--tls");
    }
    let out = cmd.output().expect("run swaks");
    assert!(
        out.status.success(),
        "swaks from {from_ip} (tls={tls}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends the plan, then waits until Postfix has logged every disconnect and delivery.
fn run_plan(pf: &Postfix) -> String {
    let mut total = 0;
    for (ip, tls, plain) in PLAN {
        for i in 0..*tls {
            send(pf, ip, true, i);
        }
        for i in 0..*plain {
            send(pf, ip, false, i);
        }
        total += tls + plain;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = pf.log();
        let sent = log.matches("status=sent").count();
        let removed = log.matches(": removed").count();
        let disconnects = log.matches(" disconnect from unknown[127.0.0.").count();
        if sent >= total as usize && removed >= total as usize && disconnects >= total as usize {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "Postfix logged {sent} sent, {removed} removed, {disconnects} disconnects of {total}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn expected_common() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let mut total = 0;
    for (ip, tls, plain) in PLAN {
        if *tls > 0 {
            m.insert(format!("in.peer.{ip}.tls"), u64::from(*tls));
        }
        if *plain > 0 {
            m.insert(format!("in.peer.{ip}.plain"), u64::from(*plain));
        }
        total += u64::from(tls + plain);
    }
    let tls: u64 = PLAN.iter().map(|p| u64::from(p.1)).sum();
    m.insert("in.msg".into(), total);
    m.insert("in.rcpt".into(), total);
    m.insert("in.msg.tls".into(), tls);
    m.insert("in.msg.plain".into(), total - tls);
    // One connection per swaks run, plus none else from 127.0.0.2-4.
    m.insert("in.conn".into(), total);
    m.insert("in.conn.tls".into(), tls);
    m.insert("in.conn.plain".into(), total - tls);
    m.insert("in.conn.messages".into(), total);
    // Every message lands in the maildir through `virtual`.
    m.insert("out.internal.msg".into(), total);
    m.insert("out.internal.msg.plain".into(), total);
    m
}

/// The keys the plan decides (the readiness probe from 127.0.0.1 adds internal connections).
fn relevant(m: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    m.iter()
        .filter(|(k, _)| !k.starts_with("in.internal.conn") && !k.starts_with("in.trust"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[test]
fn live_postfix_counts_per_peer_and_version() {
    require_tools!("postfix", "swaks");
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["mx.sigillo.test"]).expect("cert");
    let pf = Postfix::start(PostfixOptions::default().tls(&cert)).expect("start postfix");
    let log = run_plan(&pf);
    let (records, parser) = support::run(&log);
    let got = support::summary(&records, &parser);

    let tls: u64 = PLAN.iter().map(|p| u64::from(p.1)).sum();
    let mut want = expected_common();
    // Debian 12's OpenSSL 3 and swaks/Net::SSLeay negotiate TLS 1.3 with X25519.
    want.insert("in.version.TLSv1.3".into(), tls);
    want.insert("in.kx.X25519".into(), tls);
    assert_eq!(
        support::render(&relevant(&got)),
        support::render(&want),
        "log:\n{log}"
    );
    // No client certificate: anonymous on every TLS message.
    assert_eq!(got.get("in.trust.anonymous"), Some(&tls), "log:\n{log}");
    assert!(parser.advice().is_empty(), "{:?}", parser.advice());
    // The readiness probe(s): internal, no mail.
    for r in &records {
        if let Record::Connection(c) = r
            && c.peer.ip == Some("127.0.0.1".parse().expect("ip"))
        {
            assert_eq!((c.scope, c.messages), (Scope::Internal, 0), "{c:?}");
        }
    }
    // Sizes come from qmgr.
    for r in &records {
        if let Record::Message(m) = r
            && m.direction == Direction::Inbound
        {
            assert!(m.size.is_some_and(|s| s > 100), "{m:?}");
        }
    }
}

#[test]
fn live_postfix_tls_logging_off_falls_back_to_counters() {
    require_tools!("postfix", "swaks");
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["mx.sigillo.test"]).expect("cert");
    let pf = Postfix::start(
        PostfixOptions::default()
            .tls(&cert)
            .main_cf("smtpd_tls_loglevel", "0"),
    )
    .expect("start postfix");
    let log = run_plan(&pf);
    assert!(
        !log.contains("TLS connection established"),
        "loglevel 0 still logged TLS lines:\n{log}"
    );
    let (records, parser) = support::run(&log);
    let got = support::summary(&records, &parser);
    let tls: u64 = PLAN.iter().map(|p| u64::from(p.1)).sum();
    let mut want = expected_common();
    want.insert("in.version.unknown".into(), tls);
    want.insert("advice".into(), 1);
    assert_eq!(
        support::render(&relevant(&got)),
        support::render(&want),
        "log:\n{log}"
    );
    assert!(
        parser.advice()[0].contains("smtpd_tls_loglevel = 1"),
        "{:?}",
        parser.advice()
    );
    for r in &records {
        if let Record::Message(m) = r
            && let Transport::Tls(info) = &m.transport
        {
            assert_eq!((&*info.version, info.trust), ("unknown", None));
        }
    }
}

/// Postfix 3.4+ with `smtp_tls_connection_reuse = yes`: a real sending Postfix relays three
/// messages, one after the other, to a real receiving Postfix over TLS. Its smtp client talks
/// TLS through tlsproxy, which logs a `TLS connection established to` line of its own (and
/// `CONNECT to`/`DISCONNECT`) next to smtp's, and keeps the connection in scache
/// (`smtp_connection_cache_destinations`), so the later deliveries log `TLS connection reused
/// to` and `conn_use=N`. Each delivery must count as TLS, the connection once, and tlsproxy's
/// lines must not disturb the counts.
#[test]
fn live_postfix_reused_tls_connections_count_as_tls() {
    require_tools!("postfix", "swaks");
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["mx.reuse.test"]).expect("cert");
    let receiver = Postfix::start(
        PostfixOptions::default()
            .tls(&cert)
            .hostname("mx.reuse.test")
            .domain("reuse.test"),
    )
    .expect("receiving Postfix");
    // Both on 127.0.0.1 (Postfix refuses an inet_interfaces address that no interface has):
    // the deliveries are internal hops, which tells nothing about their transport.
    let relay = format!("[127.0.0.1]:{}", receiver.port());
    let sender = Postfix::start(
        PostfixOptions::default()
            .hostname("sender.sigillo.test")
            .master_cf("smtp      unix  -       -       n       -       -       smtp")
            .master_cf("tlsproxy  unix  -       -       n       -       0       tlsproxy")
            .main_cf("default_transport", "smtp")
            .main_cf("relayhost", &relay)
            .main_cf("smtp_tls_security_level", "encrypt")
            .main_cf("smtp_tls_loglevel", "1")
            .main_cf("smtp_tls_connection_reuse", "yes")
            .main_cf("smtp_connection_cache_destinations", "127.0.0.1")
            .main_cf("smtp_connection_cache_time_limit", "30s")
            .main_cf("connection_cache_ttl_limit", "30s"),
    )
    .expect("sending Postfix");

    const MESSAGES: usize = 3;
    for n in 1..=MESSAGES {
        let out = Command::new("swaks")
            .args(["--server", &sender.addr().to_string()])
            .args(["--to", "user@reuse.test", "--from", "someone@sigillo.test"])
            .args(["--timeout", "20"])
            .output()
            .expect("run swaks");
        assert!(
            out.status.success(),
            "swaks {n}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // One at a time: each delivery finds the connection the one before left in scache.
        let deadline = Instant::now() + Duration::from_secs(60);
        while sender.log().matches("status=sent").count() < n {
            assert!(
                Instant::now() < deadline,
                "message {n} not sent:\n{}\n--- receiver ---\n{}",
                sender.log(),
                receiver.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let log = sender.log();
    let smtp_tls_lines = (log.lines())
        .filter(|l| l.contains("postfix/smtp[") && l.contains("TLS connection established to"))
        .count();
    assert!(
        (log.lines())
            .any(|l| l.contains("postfix/tlsproxy[") && l.contains("TLS connection established to")),
        "the smtp client did not go through tlsproxy:\n{log}"
    );
    assert_eq!(
        log.matches("TLS connection reused to").count(),
        MESSAGES - 1,
        "the cached connection was not reused:\n{log}"
    );
    let (records, parser) = support::run(&log);
    assert_eq!(parser.unparsed(), 0, "{log}");
    let outbound: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Message(m) if m.direction == Direction::Outbound => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(outbound.len(), MESSAGES, "{outbound:#?}\n{log}");
    for m in &outbound {
        match &m.transport {
            Transport::Tls(info) => assert!(info.version.starts_with("TLSv1."), "{info:?}"),
            other => panic!("not TLS: {other:?}\n{log}"),
        }
    }
    let connections = records
        .iter()
        .filter(|r| matches!(r, Record::Connection(c) if c.direction == Direction::Outbound))
        .count();
    assert_eq!(connections, smtp_tls_lines, "{log}");
}
