//! Private Postfix instances: TLS, no TLS, IPv6, several at once, delivery into the maildir.

mod common;

use std::time::Duration;

use common::{T, greet_ehlo, s_client, swaks, swaks_ok};
use sigillo_testkit::{Postfix, PostfixOptions, TestCa, require_tools};

#[test]
fn postfix_with_tls_negotiates_starttls() {
    require_tools!("postfix", "openssl");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let pf = Postfix::start_with_tls(&cert).unwrap();
    let (greeting, ehlo, _s) = greet_ehlo(pf.addr());
    assert!(
        greeting.starts_with("220 mx.sigillo.test ESMTP"),
        "{greeting}"
    );
    assert!(ehlo.contains("250-STARTTLS\r\n"), "{ehlo}");
    let (ok, out) = s_client(pf.addr(), ca.ca_pem(), "mx.sigillo.test");
    assert!(ok, "openssl s_client failed:\n{out}");
    assert!(out.contains("Verification: OK"), "{out}");
    let line = pf
        .wait_for_log("TLS connection established from", T)
        .unwrap();
    assert!(line.contains("TLSv1.3"), "{line}");
}

#[test]
fn postfix_without_tls_does_not_offer_starttls() {
    require_tools!("postfix");
    let pf = Postfix::start_plain().unwrap();
    let (greeting, ehlo, _s) = greet_ehlo(pf.addr());
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(ehlo.starts_with("250-mx.sigillo.test"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
}

#[test]
fn postfix_on_ipv6_loopback() {
    require_tools!("postfix");
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no ::1 here; skipping");
        return;
    }
    let cert = sigillo_testkit::self_signed(&["v6.sigillo.test"]).unwrap();
    let pf = Postfix::start(
        PostfixOptions::default()
            .tls(&cert)
            .ipv6(true)
            .hostname("v6.sigillo.test"),
    )
    .unwrap();
    let v6 = pf.addr_v6().unwrap();
    let (greeting, ehlo, _s) = greet_ehlo(v6);
    assert!(greeting.starts_with("220 v6.sigillo.test"), "{greeting}");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    let (g4, _, _s4) = greet_ehlo(pf.addr());
    assert!(g4.starts_with("220 v6.sigillo.test"), "{g4}");
    pf.wait_for_log("connect from unknown[::1]", T).unwrap();
}

#[test]
fn three_postfix_instances_at_once() {
    require_tools!("postfix");
    let ca = TestCa::new().unwrap();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let cert = ca.issue(&[&format!("mx{i}.sigillo.test")]).unwrap();
            std::thread::spawn(move || {
                Postfix::start(
                    PostfixOptions::default()
                        .tls(&cert)
                        .hostname(&format!("mx{i}.sigillo.test")),
                )
            })
        })
        .collect();
    let instances: Vec<Postfix> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let mut ports: Vec<u16> = instances.iter().map(|p| p.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for (i, pf) in instances.iter().enumerate() {
        let (greeting, ehlo, _s) = greet_ehlo(pf.addr());
        assert!(
            greeting.starts_with(&format!("220 mx{i}.sigillo.test")),
            "{greeting}"
        );
        assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    }
    // Stopping one leaves the others running.
    let mut it = instances.into_iter();
    let first = it.next().unwrap();
    let addr = first.addr();
    drop(first);
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    for pf in it {
        let (greeting, _, _s) = greet_ehlo(pf.addr());
        assert!(greeting.starts_with("220 "), "{greeting}");
    }
}

#[test]
fn postfix_delivers_test_domain_into_maildir_and_nothing_outward() {
    require_tools!("postfix", "swaks");
    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["mx.sigillo.test"]).unwrap();
    let pf = Postfix::start_with_tls(&cert).unwrap();
    swaks_ok(
        pf.port(),
        &[
            "--to",
            "someone@sigillo.test",
            "--from",
            "a@client.test",
            "--tls",
        ],
    );
    pf.wait_for_log("status=sent (delivered to maildir)", T)
        .unwrap();
    assert_eq!(pf.delivered().len(), 1);
    // A foreign domain is refused at RCPT (its transport is `error:`).
    let (_, text) = swaks(pf.port(), &["--to", "x@example.com"]);
    assert!(text.contains("<** 550"), "{text}");
}

#[test]
fn postfix_drop_stops_the_instance() {
    require_tools!("postfix");
    let pf = Postfix::start_plain().unwrap();
    let addr = pf.addr();
    let log = pf.log_path();
    drop(pf);
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    assert!(!log.exists(), "temp dir removed");
}
