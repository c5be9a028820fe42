//! A real Exim 4.96 (testkit) receives a known mix of mail from several loopback source
//! addresses, with and without STARTTLS, plus one session through a PIX/ASA-style stripping
//! proxy; the parser must give exactly those counts per peer from the mainlog. A second test
//! has Exim relay mail to two other Exims, one with STARTTLS and one without, reusing its
//! connections; the parser must count the outbound connections each receiver logged.

mod exim_support;

use exim_support::{run, summarize};
use sigillo_logs::exim::EximParser;
use sigillo_logs::model::{ConnectionRecord, Direction, MtaParser, Record, Transport};
use sigillo_testkit::{Exim, EximOptions, StripProxy, TestCa, read_reply, require_tools};
use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

fn swaks(port: u16, from_ip: &str, tls: bool, to: &str) {
    swaks_from(port, from_ip, tls, to, "sender@peer.test");
}

fn swaks_from(port: u16, from_ip: &str, tls: bool, to: &str, from: &str) {
    let mut c = Command::new("swaks");
    c.args([
        "--server",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--local-interface",
        from_ip,
        "--to",
        to,
        "--from",
        from,
        "--helo",
        &format!("client-{from_ip}"),
        "--silent",
        "2",
    ]);
    if tls {
        c.arg("--tls");
    }
    let out = c.output().expect("running swaks");
    assert!(
        out.status.success(),
        "swaks from {from_ip} (tls={tls}) failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client that still sends STARTTLS although the proxy masked it as XXXXXXXA.
fn stripped_session(addr: std::net::SocketAddr) {
    let t = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, t).expect("connect to proxy");
    let greeting = read_reply(&mut s, t).expect("greeting");
    assert!(greeting.starts_with("220"), "{greeting}");
    s.write_all(b"EHLO probe.sigillo.test\r\n").expect("EHLO");
    let ehlo = read_reply(&mut s, t).expect("EHLO reply");
    assert!(
        ehlo.contains("XXXXXXXA"),
        "proxy did not mask STARTTLS: {ehlo}"
    );
    s.write_all(b"STARTTLS\r\n").expect("STARTTLS");
    let reply = read_reply(&mut s, t).expect("STARTTLS reply");
    assert!(
        reply.starts_with("500"),
        "Exim should reject XXXXXXXA: {reply}"
    );
    s.write_all(b"QUIT\r\n").expect("QUIT");
    let _ = read_reply(&mut s, t);
}

fn wait_for_count(exim: &Exim, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = exim.log();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {n}× {needle:?} in the mainlog:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn real_exim_counts_per_peer() {
    require_tools!("exim4", "swaks");
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["exim.sigillo.test"]).expect("cert");
    let exim = Exim::start(EximOptions::default().tls(&cert)).expect("exim");
    let port = exim.port();

    for i in 0..3 {
        swaks(port, "127.0.0.2", true, &format!("tls{i}@sigillo.test"));
    }
    for i in 0..2 {
        swaks(port, "127.0.0.3", false, &format!("plain{i}@sigillo.test"));
    }
    // One TLS message to two recipients.
    swaks(port, "127.0.0.5", true, "r1@sigillo.test,r2@sigillo.test");
    let proxy = StripProxy::start(exim.addr()).expect("strip proxy");
    stripped_session(proxy.addr());

    wait_for_count(&exim, " Completed", 6);
    let log = wait_for_count(
        &exim,
        "no MAIL in SMTP connection from (probe.sigillo.test)",
        1,
    );
    let lines: Vec<&str> = log.lines().collect();
    let mut parser = EximParser::new();
    let records = run(&mut parser, &lines);
    let s = summarize(&records, &parser);
    let get = |k: &str| s.get(k).copied().unwrap_or(0);

    let want = [
        ("in.messages", 6),
        ("in.tls", 4),
        ("in.plain", 2),
        ("in.recipients", 7),
        ("in.version.TLSv1.3", 4),
        ("in.trust.untrusted", 4),
        ("peer.127.0.0.2.in.messages", 3),
        ("peer.127.0.0.2.in.tls", 3),
        ("peer.127.0.0.3.in.messages", 2),
        ("peer.127.0.0.3.in.tls", 0),
        ("peer.127.0.0.5.in.messages", 1),
        ("peer.127.0.0.5.in.tls", 1),
        ("out.messages", 0),
        ("out.internal.recipients", 7),
        ("anomaly.stripping-trace.in.127.0.0.1", 1),
        ("unparsed", 0),
        ("evicted", 0),
    ];
    let mut bad = String::new();
    for (k, v) in want {
        if get(k) != v {
            bad.push_str(&format!("  {k}: want {v}, got {}\n", get(k)));
        }
    }
    // Shares per peer.
    let share = |p: &str| {
        get(&format!("peer.{p}.in.tls")) as f64 / get(&format!("peer.{p}.in.messages")) as f64
    };
    if share("127.0.0.2") != 1.0 || share("127.0.0.3") != 0.0 || share("127.0.0.5") != 1.0 {
        bad.push_str("  per-peer TLS shares are not 1, 0, 1\n");
    }
    // Connections per peer: one per swaks run, TLS or plain as sent.
    for (peer, n, tls) in [
        ("127.0.0.2", 3, true),
        ("127.0.0.3", 2, false),
        ("127.0.0.5", 1, true),
    ] {
        let conns: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::Connection(c) if c.peer.ip == Some(ip(peer)) => Some(c),
                _ => None,
            })
            .collect();
        let ok = conns.len() == n
            && conns.iter().all(|c| {
                c.direction == Direction::Inbound
                    && c.messages == 1
                    && matches!(c.transport, Transport::Tls(_)) == tls
            });
        if !ok {
            bad.push_str(&format!("  connections from {peer}: {conns:?}\n"));
        }
    }
    // The stripped session is a plain connection without mail from the proxy (127.0.0.1).
    let stripped = records.iter().any(|r| {
        matches!(r, Record::Connection(c) if c.peer.hostname.is_none()
            && c.peer.ip == Some(ip("127.0.0.1")) && c.messages == 0
            && c.transport == Transport::Plain)
    });
    if !stripped {
        bad.push_str("  no plain no-mail connection from 127.0.0.1 (the stripped session)\n");
    }
    assert!(
        bad.is_empty(),
        "from the real mainlog:\n{bad}\nsummary: {s:#?}\nlog:\n{log}"
    );
    assert!(parser.advice().is_empty(), "{:?}", parser.advice());
}

/// Sessions the sending Exim (EHLO `helo`) opened to this receiving Exim, from the receiver's
/// own log (`+smtp_connection`: one `… closed by QUIT` line per session).
fn sessions_from(receiver: &Exim, helo: &str) -> usize {
    let opener = format!("SMTP connection from ({helo}) [127.0.0.1] closed by QUIT");
    receiver
        .log()
        .lines()
        .filter(|l| l.contains(&opener))
        .count()
}

#[test]
fn real_exim_outbound_connections() {
    require_tools!("exim4", "swaks");
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["exim.sigillo.test"]).expect("cert");
    let tls_peer = Exim::start(
        EximOptions::default()
            .tls(&cert)
            .hostname("tls-peer.sigillo.test")
            .domain("tls.remote.test"),
    )
    .expect("receiving exim with STARTTLS");
    let plain_peer = Exim::start(
        EximOptions::default()
            .hostname("plain-peer.sigillo.test")
            .domain("plain.remote.test"),
    )
    .expect("receiving exim without STARTTLS");
    // Routing only at reception, delivery in one queue run: Exim then sends the messages for
    // one host down one connection (`H=… [ip]*` from the second on). The `rejected-…`
    // domains go to the same hosts, which refuse them at RCPT.
    let helo = "sender.sigillo.test";
    let sender = Exim::start(
        EximOptions::default()
            .tls(&cert)
            .hostname(helo)
            .route(
                "tls.remote.test : rejected-tls.remote.test",
                tls_peer.addr(),
            )
            .route(
                "plain.remote.test : rejected-plain.remote.test",
                plain_peer.addr(),
            )
            .queue_interval(Duration::from_secs(3600))
            .main_line("queue_smtp_domains = *"),
    )
    .expect("sending exim");
    let port = sender.port();
    // Bounces go to a local address of the sender, so every message completes.
    let from = "sender@sigillo.test";
    for i in 0..3 {
        swaks_from(
            port,
            "127.0.0.2",
            true,
            &format!("t{i}@tls.remote.test"),
            from,
        );
    }
    for i in 0..2 {
        swaks_from(
            port,
            "127.0.0.3",
            false,
            &format!("p{i}@plain.remote.test"),
            from,
        );
    }
    swaks_from(
        port,
        "127.0.0.5",
        true,
        "a@tls.remote.test,b@tls.remote.test",
        from,
    );
    let mixed_tls = "y@rejected-tls.remote.test,z@tls.remote.test";
    swaks_from(port, "127.0.0.5", true, mixed_tls, from);
    let mixed_plain = "c@plain.remote.test,x@rejected-plain.remote.test";
    swaks_from(port, "127.0.0.5", true, mixed_plain, from);
    wait_for_count(&sender, " <= sender@sigillo.test ", 8);
    sender.run_queue().expect("queue run");
    // 8 messages and the 2 bounces.
    let log = wait_for_count(&sender, " Completed", 10);

    let lines: Vec<&str> = log.lines().collect();
    let mut parser = EximParser::new();
    let records = run(&mut parser, &lines);
    let s = summarize(&records, &parser);
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    let outbound: Vec<&ConnectionRecord> = records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) if c.direction == Direction::Outbound => Some(c),
            _ => None,
        })
        .collect();
    let (tls, plain): (Vec<&ConnectionRecord>, Vec<&ConnectionRecord>) =
        outbound.iter().partition(|c| c.transport.is_tls());
    let tls_sessions = sessions_from(&tls_peer, helo);
    let plain_sessions = sessions_from(&plain_peer, helo);

    let mut bad = String::new();
    let mut check = |what: &str, got: usize, want: usize| {
        if got != want {
            bad.push_str(&format!("  {what}: want {want}, got {got}\n"));
        }
    };
    // The truth: the sessions each receiver logged.
    check("TLS connections", tls.len(), tls_sessions);
    check("plain connections", plain.len(), plain_sessions);
    check(
        "plain connections known to be plain",
        plain
            .iter()
            .filter(|c| c.transport == Transport::Plain)
            .count(),
        plain_sessions,
    );
    check(
        "connections to 127.0.0.1",
        outbound
            .iter()
            .filter(|c| c.peer.ip == Some(ip("127.0.0.1")))
            .count(),
        outbound.len(),
    );
    // Transactions: t0–t2, a+b, y/z over TLS; p0, p1, c/x in clear.
    let sum = |cs: &[&ConnectionRecord]| cs.iter().map(|c| c.messages as usize).sum::<usize>();
    check("transactions over TLS connections", sum(&tls), 5);
    check("transactions over plain connections", sum(&plain), 3);
    // Delivery records: 8 `=>` (b is a `->`), y's `**` with X=, x's `**` without.
    for (k, v) in [
        ("out.messages", 10),
        ("out.recipients", 11),
        ("out.status.sent", 8),
        ("out.status.bounced", 2),
        ("out.tls", 6),
        ("out.plain", 3),
        ("out.unknown", 1),
        ("in.messages", 8),
        ("in.internal.messages", 2),
        ("unparsed", 0),
        ("evicted", 0),
    ] {
        check(k, get(k) as usize, v);
    }
    assert!(
        bad.is_empty(),
        "from the real mainlog:\n{bad}\nconnections: {outbound:#?}\nsummary: {s:#?}\nlog:\n{log}"
    );
    assert!(
        tls_sessions >= 1 && plain_sessions >= 1,
        "each receiver should have had a session from {helo}"
    );
    assert!(
        tls_sessions < 5 || plain_sessions < 3,
        "Exim reused no connection in its queue run (no `H=… [ip]*` line): nothing tested\n{log}"
    );
}
