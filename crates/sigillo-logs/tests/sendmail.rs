//! Sendmail parser against hand-written fixtures (testdata/sendmail/*.log, expected results in
//! *.expect).

mod exim_support;

use exim_support::{check_fixtures, truncations_never_panic};
use sigillo_logs::model::{AnomalyKind, MtaParser, Record, Transport};
use sigillo_logs::sendmail::SendmailParser;

fn make() -> Box<dyn MtaParser> {
    Box::new(SendmailParser::new())
}

/// A transport in one word, for the tables below.
fn transport_name(t: &Transport) -> &'static str {
    match t {
        Transport::Tls(_) => "tls",
        Transport::Plain => "plain",
        Transport::Unknown { .. } => "unknown",
    }
}

/// The transport of the message record with queue id `id`, in one word.
fn message_transport(records: &[Record], id: &str) -> Option<&'static str> {
    records.iter().find_map(|r| match r {
        Record::Message(m) if &*m.id == id => Some(transport_name(&m.transport)),
        _ => None,
    })
}

/// How many stripping traces `records` hold.
fn stripping_traces(records: &[Record]) -> usize {
    records
        .iter()
        .filter(|r| matches!(r, Record::Anomaly(a) if a.kind == AnomalyKind::StrippingTrace))
        .count()
}

#[test]
fn fixtures_match_expected_summaries() {
    let n = check_fixtures("sendmail", &make);
    assert!(n >= 1, "no Sendmail fixtures found");
}

#[test]
fn every_truncation_of_every_line_is_safe() {
    let fed = truncations_never_panic("sendmail", &make);
    assert!(fed > 1000, "fed only {fed} truncated lines");
}

/// Every stripping trace of stripping-and-connections.log: its direction, peer address and
/// the log lines its evidence holds (one substring per line, in order).
#[test]
fn stripping_traces_carry_their_peer_and_evidence_lines() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::model::Direction;
    use std::net::IpAddr;

    let path = testdata("sendmail").join("stripping-and-connections.log");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut parser = SendmailParser::new();
    let records = run(&mut parser, &log_lines(&text));
    let traces: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Anomaly(a) if a.kind == AnomalyKind::StrippingTrace => Some(a),
            _ => None,
        })
        .collect();
    let want: &[(Direction, Option<&str>, &[&str])] = &[
        (
            Direction::Inbound,
            Some("192.0.2.1"),
            &["sm-mta[7002]: 42390000007002: mail.example.org [192.0.2.1] did not issue"],
        ),
        (
            Direction::Inbound,
            Some("203.0.113.50"),
            &[
                "sm-mta[7004]: 4239A000007004: <-- XXXXXXXA",
                "[203.0.113.50] (may be forged) did not issue MAIL",
            ],
        ),
        (
            Direction::Inbound,
            Some("192.0.2.1"),
            &[
                "sm-mta[7005]: 4239K000007005: <-- XXXXXXXA",
                "4239K000007005: from=<alice@example.org>, size=900",
            ],
        ),
        (
            Direction::Outbound,
            Some("192.0.2.61"),
            &["sm-mta[8001]: 423B0000008001: to=<e@tls.example>"],
        ),
        (
            Direction::Inbound,
            None,
            &["sm-mta[7006]: NOQUEUE: <-- XXXXXXXA"],
        ),
    ];
    assert_eq!(traces.len(), want.len(), "{traces:#?}");
    for (direction, ip, lines) in want {
        let ip: Option<IpAddr> = ip.map(|s| s.parse().expect("ip"));
        let found = traces.iter().any(|a| {
            let got: Vec<&str> = a.evidence.lines().collect();
            a.direction == *direction
                && a.peer.ip == ip
                && got.len() == lines.len()
                && got.iter().zip(lines.iter()).all(|(g, w)| g.contains(w))
        });
        assert!(
            found,
            "no trace {direction:?} {ip:?} {lines:?} in {traces:#?}"
        );
    }
}

/// A daemon child is one inbound session: later mail of the same pid from the same address
/// within an hour of its last line is more mail on it; after an hour, or from another address,
/// it is another session. A session silent for an hour is closed as the log goes on (its
/// record comes out before the end of input, and it is not counted as evicted state).
#[test]
fn inbound_sessions_follow_the_daemon_child() {
    use sigillo_logs::envelope::{Envelope, YearGuess};
    use sigillo_logs::model::Direction;

    let from = |time: &str, pid: u32, qid: &str, ip: &str| {
        format!(
            "Mar  3 {time} mx sm-mta[{pid}]: {qid}: from=<a@example.org>, size=10, class=0, \
             nrcpts=1, proto=ESMTP, daemon=MTA, relay=[{ip}]"
        )
    };
    let lines = [
        from("08:00:00", 7000, "4238Q0Aa007000", "192.0.2.1"),
        from("08:50:00", 7000, "4238Q0Ab007000", "192.0.2.1"), // same session
        from("09:51:00", 7000, "4238Q0Ac007000", "192.0.2.1"), // 61 min later: another
        from("09:52:00", 7000, "4238Q0Ad007000", "192.0.2.2"), // another address: another
        "Mar  3 09:53:00 mx sm-mta[7001]: STARTTLS=server, relay=[192.0.2.3], version=TLSv1.3, \
         verify=NO, cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
            .to_owned(),
        from("09:53:01", 7001, "4238Q0Ae007001", "192.0.2.3"),
        // Hours later, another process: the sessions above have ended.
        from("12:00:00", 7002, "4238Q0Af007002", "192.0.2.4"),
    ];
    let mut env = Envelope::new(YearGuess::forced(2026));
    let mut parser = SendmailParser::new();
    let mut out = Vec::new();
    for raw in &lines {
        parser.feed(&env.parse(raw).expect("line"), &mut out);
    }
    let connections = |out: &[Record]| -> Vec<(String, u32, bool)> {
        out.iter()
            .filter_map(|r| match r {
                Record::Connection(c) if c.direction == Direction::Inbound => Some((
                    c.peer.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    c.messages,
                    matches!(c.transport, Transport::Tls(_)),
                )),
                _ => None,
            })
            .collect()
    };
    let before_end = connections(&out);
    assert_eq!(
        before_end,
        [
            ("192.0.2.1".into(), 2, false),
            ("192.0.2.1".into(), 1, false),
            ("192.0.2.2".into(), 1, false),
            ("192.0.2.3".into(), 1, true),
        ],
        "sessions closed before the end of input"
    );
    parser.finish(&mut out);
    let all = connections(&out);
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(all[4], ("192.0.2.4".into(), 1, false));
    assert_eq!(
        parser.evicted(),
        0,
        "closing an ended session loses nothing"
    );
}

/// Every outbound connection of connection-cache-processes.log: Sendmail's connection cache
/// is per process (two processes to one relay, one in TLS, have a connection each), holds
/// ConnectionCacheSize connections (2 until a process logging its new connections shows a
/// reuse behind more) and closes the least recently used for a new one.
#[test]
fn connection_cache_is_per_process_and_bounded() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::model::Direction;

    let path = testdata("sendmail").join("connection-cache-processes.log");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut parser = SendmailParser::new();
    let records = run(&mut parser, &log_lines(&text));
    let mut got: Vec<(String, bool, u32)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) if c.direction == Direction::Outbound => Some((
                c.peer.hostname.as_deref().unwrap_or("").to_owned(),
                matches!(c.transport, Transport::Tls(_)),
                c.messages,
            )),
            _ => None,
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, bool, u32)> = [
        // 9001 and 9002: one connection each to the shared relay.
        ("mx.shared.example", true, 2),
        ("mx.shared.example", false, 2),
        // 9003, a cache of 2: mx.a and mx.b closed for others, opened again.
        ("mx.a.example", false, 1),
        ("mx.a.example", false, 1),
        ("mx.b.example", false, 1),
        ("mx.b.example", false, 1),
        ("mx.c.example", false, 2),
        // 9004: mx.d's TLS connection used again behind two relays, with no connect line
        // (a cache of 3).
        ("mx.d.example", true, 2),
        ("mx.e.example", true, 1),
        ("mx.f.example", true, 1),
        // 9005, with that cache of 3: mx.g kept behind two relays.
        ("mx.g.example", false, 2),
        ("mx.h.example", false, 1),
        ("mx.i.example", false, 1),
    ]
    .into_iter()
    .map(|(n, t, m)| (n.to_owned(), t, m))
    .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(parser.evicted(), 0);
}

/// A TLS connection taken as closed (more relays used by its process since than are tracked)
/// teaches no cache size: another process's plaintext connection behind two relays is still
/// closed by a cache of 2, as without it.
#[test]
fn a_connection_taken_as_closed_teaches_no_cache_size() {
    use exim_support::{log_lines, run};
    use sigillo_logs::model::Direction;

    let to = |time: &str, pid: u32, qid: &str, host: &str, ip: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[{pid}]: {qid}: to=<u@{host}>, delay=00:00:01, \
             xdelay=00:00:01, mailer=esmtp, pri=120000, relay={host}. [{ip}], dsn=2.0.0, \
             stat=Sent (ok)"
        )
    };
    let mut lines = vec![
        "Mar  4 08:00:00 mx sm-mta[9100]: STARTTLS=client, relay=mx.t.example., \
         version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
            .to_owned(),
        to(
            "08:00:01",
            9100,
            "4250B0Aa009100",
            "mx.t.example",
            "192.0.2.10",
        ),
    ];
    // 32 other relays, then mx.t again with no STARTTLS=client line.
    for i in 0..32 {
        let (time, qid) = (format!("08:00:{:02}", 2 + i), format!("4250B1{i:02}009100"));
        let (host, ip) = (format!("mx.r{i}.example"), format!("198.51.100.{}", i + 1));
        lines.push(to(&time, 9100, &qid, &host, &ip));
    }
    lines.push(to(
        "08:00:40",
        9100,
        "4250B2Aa009100",
        "mx.t.example",
        "192.0.2.10",
    ));
    // Process 9200, plaintext: mx.p, mx.q1, mx.q2, mx.p again (closed by a cache of 2).
    let tail = [
        to(
            "09:00:00",
            9200,
            "4251C0Aa009200",
            "mx.p.example",
            "203.0.113.1",
        ),
        to(
            "09:00:10",
            9200,
            "4251C0Ab009200",
            "mx.q1.example",
            "203.0.113.2",
        ),
        to(
            "09:00:20",
            9200,
            "4251C0Ac009200",
            "mx.q2.example",
            "203.0.113.3",
        ),
        to(
            "09:00:30",
            9200,
            "4251C0Ad009200",
            "mx.p.example",
            "203.0.113.1",
        ),
    ];
    lines.extend(tail.iter().cloned());
    let connections = |lines: &[String]| {
        let text = lines.join("\n");
        let records = run(&mut SendmailParser::new(), &log_lines(&text));
        records
            .iter()
            .filter(|r| matches!(r, Record::Connection(c) if c.direction == Direction::Outbound))
            .count()
    };
    // 9100: mx.t in TLS, 32 relays, mx.t anew in clear; 9200: four connections.
    assert_eq!(connections(&tail), 4);
    assert_eq!(connections(&lines), 1 + 32 + 1 + 4);
}

/// A TLS connection of a process used again without a new STARTTLS=client line, below
/// LogLevel 12, after `n` other relays and an idle time: while a cache larger than the 2
/// modelled (up to 32) would still hold it (idle at most ConnectionCacheTimeout from its last
/// use to the start of this delivery's transaction, fewer than 32 other relays since) the
/// delivery is of unknown transport, with no stripping trace and no connection of its own,
/// and `advice` counts it and asks for LogLevel 12; past either bound it is a new plaintext
/// connection and a trace; behind fewer relays than the model holds it is the TLS connection.
#[test]
fn a_tls_connection_a_larger_cache_could_hold_is_unknown() {
    use exim_support::{log_lines, run};
    use sigillo_logs::model::Direction;

    let to = |time: &str, qid: &str, host: &str, ip: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[9100]: {qid}: to=<u@{host}>, delay=00:00:01, \
             xdelay=00:00:01, mailer=esmtp, pri=120000, relay={host}. [{ip}], dsn=2.0.0, \
             stat=Sent (ok)"
        )
    };
    // (other relays between, time of the last delivery to mx.t, its transport, traces,
    // outbound connections)
    let cases: [(usize, &str, &str, usize, usize); 6] = [
        (1, "08:00:40", "tls", 0, 2),       // the modelled cache of 2 holds it
        (2, "08:00:40", "unknown", 0, 3),   // a cache of 3 would
        (31, "08:00:40", "unknown", 0, 32), // a cache of 32 would
        (32, "08:00:40", "plain", 1, 34),   // none up to 32 would
        (2, "08:05:02", "unknown", 0, 3),   // idle 300 s: a cache may still hold it
        (2, "08:05:03", "plain", 1, 4),     // idle 301 s: closed by the timeout
    ];
    for (between, last, want, traces, connections) in cases {
        let mut lines = vec![
            "Mar  4 08:00:00 mx sm-mta[9100]: STARTTLS=client, relay=mx.t.example., \
             version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
                .to_owned(),
            to("08:00:01", "4250B0Aa009100", "mx.t.example", "192.0.2.10"),
        ];
        for i in 0..between {
            let (time, qid) = (format!("08:00:{:02}", 2 + i), format!("4250B1{i:02}009100"));
            let (host, ip) = (format!("mx.r{i}.example"), format!("198.51.100.{}", i + 1));
            lines.push(to(&time, &qid, &host, &ip));
        }
        lines.push(to(last, "4250B2Aa009100", "mx.t.example", "192.0.2.10"));
        let text = lines.join("\n");
        let mut parser = SendmailParser::new();
        let records = run(&mut parser, &log_lines(&text));
        let label = format!("{between} relays, last at {last}");
        let got = message_transport(&records, "4250B2Aa009100");
        assert_eq!(got, Some(want), "{label}");
        let got_traces = stripping_traces(&records);
        assert_eq!(got_traces, traces, "{label}: stripping traces");
        let got_connections = records
            .iter()
            .filter(|r| matches!(r, Record::Connection(c) if c.direction == Direction::Outbound))
            .count();
        assert_eq!(
            got_connections, connections,
            "{label}: outbound connections"
        );
        let advice = parser.advice();
        if want == "unknown" {
            assert_eq!(advice.len(), 1, "{label}: {advice:?}");
            for part in [
                "Sendmail: 1 outbound delivery went",
                "O LogLevel=12",
                "define(`confLOG_LEVEL', `12')",
            ] {
                assert!(advice[0].contains(part), "{label}: {part} in {advice:?}");
            }
        } else {
            assert!(advice.is_empty(), "{label}: {advice:?}");
        }
    }
}

/// connection-cache-downgrade.log in `report`'s figures: a relay that used TLS and was
/// delivered to again with no STARTTLS=client line is a downgrade only where the log shows a
/// new connection in clear: by a new process of the same pid (C, E, F), after a connect line
/// (G), or past ConnectionCacheTimeout (I, and J's last delivery). Behind the modelled cache
/// of 2 but within what a larger cache would hold (A, B, J), or after a daemon start the
/// process may have outlived (D), below LogLevel 12, the delivery is of unknown transport and
/// no downgrade; mx.a2, whose reuse behind two relays its host's connect lines show, is TLS.
/// `advice` counts the five ambiguous deliveries.
#[test]
fn a_delivery_behind_the_cache_is_a_downgrade_only_where_the_log_shows_one() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::aggregate::{AggregateOptions, Aggregator};
    use sigillo_logs::model::Direction;

    let path = testdata("sendmail").join("connection-cache-downgrade.log");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut parser = SendmailParser::new();
    let records = run(&mut parser, &log_lines(&text));
    let mut agg = Aggregator::new(AggregateOptions::default());
    for r in &records {
        agg.add(r);
    }
    let f = agg.finish();
    let mut got: Vec<(String, String)> = f
        .downgrades
        .iter()
        .filter(|d| d.direction == Direction::Outbound)
        .map(|d| (d.ip.clone().unwrap_or_default(), d.first_plain_id.clone()))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("192.0.2.100", "4269A0Ah009104"), // J: past the timeout, after two unknown
        ("192.0.2.40", "4262A0Ab009300"),  // C: the same pid on another host
        ("192.0.2.60", "4264A0Ab009500"),  // E: after an inbound session began
        ("192.0.2.70", "4265A0Ab009600"),  // F: under another program name
        ("192.0.2.80", "4266A0Ab009202"),  // G: a connect line, no STARTTLS line
        ("192.0.2.90", "4268A0Ad009103"),  // I: past the timeout
    ]
    .into_iter()
    .map(|(ip, id)| (ip.to_owned(), id.to_owned()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        (
            f.outbound.tls_messages,
            f.outbound.plain_messages,
            f.outbound.unknown_messages
        ),
        (11, 19, 6)
    );
    let advice = parser.advice();
    assert_eq!(advice.len(), 1, "{advice:?}");
    assert!(
        advice[0].starts_with("Sendmail: 5 outbound deliveries"),
        "{advice:?}"
    );
}

/// One SMTP transaction of several recipients to one relay logs a line per recipient refused
/// at RCPT (deliver.c `deliver()`: `giveresponse()` for each failed `smtprcpt()`) before the
/// line of those sent. A new connection in clear whose first line is such a refusal is still
/// a plaintext connection once a recipient is sent over it, and a stripping trace to a relay
/// that used STARTTLS before, as when its first line is the sent one.
#[test]
fn a_refused_recipient_first_does_not_hide_a_new_plaintext_connection() {
    use exim_support::{log_lines, run};
    use sigillo_logs::model::Direction;

    let to = |time: &str, pid: u32, rcpt: &str, tail: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[{pid}]: 4250C0Aa00{pid}: to=<{rcpt}@t.example>, \
             delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120000, \
             relay=mx.t.example. [192.0.2.10], {tail}"
        )
    };
    let starttls = "Mar  4 08:00:00 mx sm-mta[9100]: STARTTLS=client, relay=mx.t.example., \
                    version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256";
    // (the first line of process 9200's transaction, what is asked of it)
    let cases = [
        ("dsn=5.1.1, stat=User unknown", "a refused recipient"),
        (
            "dsn=4.2.1, stat=Deferred: 450 4.2.1 Mailbox busy",
            "a deferred recipient",
        ),
        ("dsn=2.0.0, stat=Sent (ok)", "a sent recipient (as before)"),
    ];
    for (first, label) in cases {
        let lines = [
            starttls.to_owned(),
            to("08:00:01", 9100, "a", "dsn=2.0.0, stat=Sent (ok)"),
            to("08:01:00", 9200, "bad", first),
            to("08:01:00", 9200, "good", "dsn=2.0.0, stat=Sent (ok)"),
        ];
        let records = run(&mut SendmailParser::new(), &log_lines(&lines.join("\n")));
        let traces = stripping_traces(&records);
        assert_eq!(traces, 1, "{label}: stripping traces in {records:#?}");
        let mut conns: Vec<(&str, u32)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Connection(c) if c.direction == Direction::Outbound => {
                    Some((transport_name(&c.transport), c.messages))
                }
                _ => None,
            })
            .collect();
        conns.sort();
        assert_eq!(conns, [("plain", 1), ("tls", 1)], "{label}: connections");
    }
}

/// A `starting daemon` line ends no process of the daemon's: daemon.c `restart_daemon()`
/// (SIGHUP) execs the daemon anew and `shutdown_daemon()` exits, neither signals a child, so
/// a queue runner may go on using its cached connections after it; or its pid may be a new
/// process (after a reboot). Process 9400 delivers to mx.v over TLS, a daemon starts, and
/// 9400 delivers to mx.v again with no STARTTLS=client line: below LogLevel 12 that is a
/// reuse or a new connection in clear, unknown; with connect lines (LogLevel 12) their
/// absence shows the reuse. `sm-msp-queue`'s start is not `sm-mta`'s: the connection is
/// still cached, TLS.
#[test]
fn a_daemon_start_leaves_a_tls_connection_of_a_process_before_it_unknown() {
    use exim_support::{log_lines, run};

    let to = |time: &str, qid: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[9400]: {qid}: to=<u@v.example>, delay=00:00:01, \
             xdelay=00:00:01, mailer=esmtp, pri=120000, relay=mx.v.example. [192.0.2.50], \
             dsn=2.0.0, stat=Sent (ok)"
        )
    };
    let connect = "Mar  4 11:00:00 mx sm-mta[9400]: 4263A0Aa009400: SMTP outgoing connect on \
                   [192.0.2.25]";
    let starttls = "Mar  4 11:00:00 mx sm-mta[9400]: STARTTLS=client, relay=mx.v.example., \
                    version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256";
    // (the daemon's start line, the process logs connect lines, the second delivery's
    // transport, stripping traces, ambiguous deliveries in advice)
    let cases = [
        (
            "sm-mta[1000]: starting daemon (8.17.1): SMTP+queueing@00:30:00",
            false,
            "unknown",
            0,
            true,
        ),
        (
            "sm-mta[1000]: starting daemon (8.17.1): SMTP+queueing@00:30:00",
            true,
            "tls",
            0,
            false,
        ),
        (
            "sm-msp-queue[1001]: starting daemon (8.17.1): queueing@00:20:00",
            false,
            "tls",
            0,
            false,
        ),
    ];
    for (start, connects, want, traces, advice) in cases {
        let mut lines = Vec::new();
        if connects {
            lines.push(connect.to_owned());
        }
        lines.push(starttls.to_owned());
        lines.push(to("11:00:01", "4263A0Aa009400"));
        lines.push(format!("Mar  4 11:01:00 mx {start}"));
        lines.push(to("11:02:00", "4263A0Ab009400"));
        let mut parser = SendmailParser::new();
        let records = run(&mut parser, &log_lines(&lines.join("\n")));
        let label = format!("{start}, connect lines {connects}");
        let got = message_transport(&records, "4263A0Ab009400");
        assert_eq!(got, Some(want), "{label}");
        let got_traces = stripping_traces(&records);
        assert_eq!(got_traces, traces, "{label}: stripping traces");
        assert_eq!(!parser.advice().is_empty(), advice, "{label}: advice");
    }
}

/// Merged logs of two hosts: the inbound session of one host's daemon child is not ended by
/// a line of the other host's process of the same pid. Host mx's child 9500 receives two
/// messages in one session and delivers each itself (DeliveryMode=interactive, the second
/// over its cached TLS connection to mx.t); host mx2's child 9500 receives one in between.
/// mx's session is one session of 2 messages, and its second delivery is TLS, no trace.
#[test]
fn merged_hosts_keep_their_inbound_sessions_apart() {
    use exim_support::{log_lines, run};
    use sigillo_logs::model::Direction;

    let lines = [
        "Mar  4 12:00:00 mx sm-mta[9500]: 4264A0Aa009500: from=<a@example.org>, size=900, \
         class=0, nrcpts=1, msgid=<1@example.org>, proto=ESMTP, daemon=MTA, relay=[198.51.100.9]",
        "Mar  4 12:00:01 mx sm-mta[9500]: STARTTLS=client, relay=mx.t.example., \
         version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
        "Mar  4 12:00:02 mx sm-mta[9500]: 4264A0Aa009500: to=<u@t.example>, delay=00:00:02, \
         xdelay=00:00:01, mailer=esmtp, pri=120000, relay=mx.t.example. [192.0.2.10], \
         dsn=2.0.0, stat=Sent (ok)",
        "Mar  4 12:00:05 mx2 sm-mta[9500]: 4264B0Aa009500: from=<b@example.net>, size=800, \
         class=0, nrcpts=1, msgid=<2@example.net>, proto=ESMTP, daemon=MTA, relay=[203.0.113.7]",
        "Mar  4 12:00:10 mx sm-mta[9500]: 4264A0Ab009500: from=<a@example.org>, size=900, \
         class=0, nrcpts=1, msgid=<3@example.org>, proto=ESMTP, daemon=MTA, relay=[198.51.100.9]",
        "Mar  4 12:00:11 mx sm-mta[9500]: 4264A0Ab009500: to=<v@t.example>, delay=00:00:01, \
         xdelay=00:00:01, mailer=esmtp, pri=120000, relay=mx.t.example. [192.0.2.10], \
         dsn=2.0.0, stat=Sent (ok)",
    ];
    let records = run(&mut SendmailParser::new(), &log_lines(&lines.join("\n")));
    let second = records.iter().find_map(|r| match r {
        Record::Message(m) if &*m.id == "4264A0Ab009500" && m.direction == Direction::Outbound => {
            Some(matches!(m.transport, Transport::Tls(_)))
        }
        _ => None,
    });
    assert_eq!(second, Some(true), "{records:#?}");
    let traces = stripping_traces(&records);
    assert_eq!(traces, 0);
    let mut sessions: Vec<(String, u32)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) if c.direction == Direction::Inbound => Some((
                c.peer.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                c.messages,
            )),
            _ => None,
        })
        .collect();
    sessions.sort();
    assert_eq!(
        sessions,
        [
            ("198.51.100.9".to_owned(), 2),
            ("203.0.113.7".to_owned(), 1)
        ]
    );
}

/// A deferral that reached no SMTP session (`Connection refused`, …) says the process had no
/// live connection to the relay (mci.c `mci_get()` reuses a cached one that still answers;
/// a connection was tried, or the host's status says it is down): it is of unknown
/// transport, not TLS over a cached connection, and counts for no connection. The next
/// delivery to that relay opens a new one (in clear without a STARTTLS=client line).
#[test]
fn a_deferral_without_a_session_goes_over_no_cached_connection() {
    use exim_support::{log_lines, run};
    use sigillo_logs::model::Direction;

    let to = |time: &str, qid: &str, tail: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[9100]: {qid}: to=<u@t.example>, delay=00:00:01, \
             xdelay=00:00:01, mailer=esmtp, pri=120000, relay=mx.t.example. [192.0.2.10], \
             {tail}"
        )
    };
    let lines = [
        "Mar  4 08:00:00 mx sm-mta[9100]: STARTTLS=client, relay=mx.t.example., \
         version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
            .to_owned(),
        to("08:00:01", "4250D0Aa009100", "dsn=2.0.0, stat=Sent (ok)"),
        to(
            "08:01:00",
            "4250D0Ab009100",
            "dsn=4.0.0, stat=Deferred: Connection refused by mx.t.example.",
        ),
        to("08:02:00", "4250D0Ac009100", "dsn=2.0.0, stat=Sent (ok)"),
    ];
    let records = run(&mut SendmailParser::new(), &log_lines(&lines.join("\n")));
    let transport = |id: &str| message_transport(&records, id);
    assert_eq!(transport("4250D0Ab009100"), Some("unknown"));
    assert_eq!(transport("4250D0Ac009100"), Some("plain"));
    let mut conns: Vec<(bool, u32)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) if c.direction == Direction::Outbound => {
                Some((matches!(c.transport, Transport::Tls(_)), c.messages))
            }
            _ => None,
        })
        .collect();
    conns.sort();
    assert_eq!(conns, [(false, 1), (true, 1)]);
    let traces = stripping_traces(&records);
    assert_eq!(traces, 1);
}

/// Sendmail caches one connection per host and mailer (mci.c `mci_get(host, m)` and
/// `mci_match()` look it up as `stab(host, ST_MCI + m->m_mno, …)`): one relay reached through
/// `esmtp` and through `relay` is two connections, each in a cache slot of its own. A TLS
/// connection of one mailer does not carry a delivery of the other: that one went over a new
/// connection, in clear without a `STARTTLS=client` line before it (a stripping trace to a
/// relay that used STARTTLS), and the first mailer's connection is still cached after it. A
/// `STARTTLS=client` line names no mailer: it belongs to the next delivery to its relay.
#[test]
fn one_relay_through_two_mailers_is_two_connections() {
    use exim_support::{log_lines, run};
    use sigillo_logs::model::Direction;

    let starttls = |time: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[9100]: STARTTLS=client, relay=mx.h.example., \
             version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
        )
    };
    let to = |time: &str, qid: &str, mailer: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[9100]: {qid}: to=<u@h.example>, delay=00:00:01, \
             xdelay=00:00:01, mailer={mailer}, pri=120000, relay=mx.h.example. [192.0.2.10], \
             dsn=2.0.0, stat=Sent (ok)"
        )
    };
    // (the second delivery's mailer, a STARTTLS=client line before it, the transports of
    // the three deliveries, stripping traces, outbound connections as (transport, messages))
    type Row = (
        &'static str,
        bool,
        [&'static str; 3],
        usize,
        &'static [(&'static str, u32)],
    );
    let rows: [Row; 4] = [
        // The same mailer: one TLS connection, reused twice.
        ("esmtp", false, ["tls", "tls", "tls"], 0, &[("tls", 3)]),
        // Another mailer, no STARTTLS line: a new connection in clear; esmtp's TLS
        // connection is still cached (one other slot used since, of 2).
        (
            "relay",
            false,
            ["tls", "plain", "tls"],
            1,
            &[("plain", 1), ("tls", 2)],
        ),
        (
            "smtp8",
            false,
            ["tls", "plain", "tls"],
            1,
            &[("plain", 1), ("tls", 2)],
        ),
        // Another mailer with its own STARTTLS line: two TLS connections.
        (
            "relay",
            true,
            ["tls", "tls", "tls"],
            0,
            &[("tls", 1), ("tls", 2)],
        ),
    ];
    for (mailer, own_tls, want, traces, conns) in rows {
        let mut lines = vec![
            starttls("08:00:00"),
            to("08:00:01", "4250E0Aa009100", "esmtp"),
        ];
        if own_tls {
            lines.push(starttls("08:00:09"));
        }
        lines.push(to("08:00:10", "4250E0Ab009100", mailer));
        lines.push(to("08:00:20", "4250E0Ac009100", "esmtp"));
        let records = run(&mut SendmailParser::new(), &log_lines(&lines.join("\n")));
        let label = format!("second over {mailer}, own STARTTLS line {own_tls}");
        let got: Vec<_> = ["4250E0Aa009100", "4250E0Ab009100", "4250E0Ac009100"]
            .iter()
            .map(|id| message_transport(&records, id).unwrap_or("none"))
            .collect();
        assert_eq!(got, want, "{label}");
        assert_eq!(
            stripping_traces(&records),
            traces,
            "{label}: stripping traces"
        );
        let mut got_conns: Vec<(&str, u32)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Connection(c) if c.direction == Direction::Outbound => {
                    Some((transport_name(&c.transport), c.messages))
                }
                _ => None,
            })
            .collect();
        got_conns.sort();
        assert_eq!(got_conns, conns, "{label}: connections");
    }
}

/// A connection that could not be made takes no cache slot and closes no other connection:
/// deliver.c `deliver()` enters the mci in the cache (`mci_cache()`) only when
/// `makeconnection()` returned `EX_OK`, and daemon.c `makeconnection()` logs `SMTP outgoing
/// connect on …` (LogLevel 12 and up) only then. Process 9300 logs its connects: mx.t over
/// TLS, a deferral to mx.x with no connect line, mx.b over a new connection, mx.t again with
/// no connect line (a reuse). Where mx.x's deferral made no connection (an errno's text of a
/// failed connect, not a server's reply) mx.t's reuse is behind one other connection, and
/// the host's cache is not learnt bigger than 2: process 9301 of the same host (no connect
/// lines) using mx.s behind two relays is of unknown transport. Where mx.x's deferral quotes
/// a reply, or names an error only a session has (`Connection reset by …`), it went over a
/// cached connection the log did not show opening, in a slot of its own: mx.t's reuse shows
/// a cache of 3, which holds 9301's connection to mx.s (TLS). Below LogLevel 12
/// (process 9400) a deferral that names a failed connect leaves mx.t's TLS connection cached
/// behind mx.b; one with a reply had a session, over a new connection in a slot of its own.
#[test]
fn a_failed_connection_takes_no_cache_slot() {
    use exim_support::{log_lines, run};

    let line = |time: &str, pid: u32, rest: &str| format!("Mar  4 {time} mx sm-mta[{pid}]: {rest}");
    let starttls = |time: &str, pid: u32, host: &str| {
        line(
            time,
            pid,
            &format!(
                "STARTTLS=client, relay={host}., version=TLSv1.3, verify=OK, \
                 cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
            ),
        )
    };
    let to = |time: &str, pid: u32, qid: &str, host: &str, ip: &str, tail: &str| {
        line(
            time,
            pid,
            &format!(
                "{qid}: to=<u@{host}>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, \
                 pri=120000, relay={host}. [{ip}], {tail}"
            ),
        )
    };
    let connect = |time: &str, pid: u32, qid: &str| {
        line(
            time,
            pid,
            &format!("{qid}: SMTP outgoing connect on [192.0.2.25]"),
        )
    };
    let sent = "dsn=2.0.0, stat=Sent (ok)";
    // (mx.x's stat=, a phrase of the hint of its unknown transport, 9301's second mx.s
    // delivery's transport, 9400's second mx.t delivery's transport)
    let rows = [
        (
            "dsn=4.0.0, stat=Deferred: Connection refused by mx.x.example.",
            "was not sent",
            "unknown",
            "tls",
        ),
        // EHOSTDOWN: giveresponse() names the host, then sm_errstring()'s text, which names
        // it again (`Host %s is down`, CurHostName) or, without one, is strerror()'s.
        (
            "dsn=4.0.0, stat=Deferred: mx.x.example.: Host mx.x.example. is down",
            "was not sent",
            "unknown",
            "tls",
        ),
        (
            "dsn=4.0.0, stat=Deferred: mx.x.example.: Host is down",
            "was not sent",
            "unknown",
            "tls",
        ),
        (
            // ECONNRESET (usersmtp.c reply() fakes it for a server that closed without a
            // reply): a session was had, over a connection; with no connect line, a cached one.
            "dsn=4.0.0, stat=Deferred: Connection reset by mx.x.example.",
            "opened before the log shows",
            "tls",
            "unknown",
        ),
        (
            "dsn=4.3.2, stat=Deferred: 421 4.3.2 Service not available",
            "opened before the log shows",
            "tls",
            "unknown",
        ),
    ];
    for (x_stat, hint, want_9301, want_9400) in rows {
        let lines = [
            connect("08:00:00", 9300, "4250F0Aa009300"),
            starttls("08:00:00", 9300, "mx.t.example"),
            to(
                "08:00:01",
                9300,
                "4250F0Aa009300",
                "mx.t.example",
                "192.0.2.10",
                sent,
            ),
            to(
                "08:00:10",
                9300,
                "4250F0Ab009300",
                "mx.x.example",
                "198.51.100.9",
                x_stat,
            ),
            connect("08:00:20", 9300, "4250F0Ac009300"),
            to(
                "08:00:21",
                9300,
                "4250F0Ac009300",
                "mx.b.example",
                "198.51.100.1",
                sent,
            ),
            to(
                "08:00:30",
                9300,
                "4250F0Ad009300",
                "mx.t.example",
                "192.0.2.10",
                sent,
            ),
            starttls("08:01:00", 9301, "mx.s.example"),
            to(
                "08:01:01",
                9301,
                "4250G0Aa009301",
                "mx.s.example",
                "192.0.2.30",
                sent,
            ),
            to(
                "08:01:10",
                9301,
                "4250G0Ab009301",
                "mx.r1.example",
                "198.51.100.3",
                sent,
            ),
            to(
                "08:01:20",
                9301,
                "4250G0Ac009301",
                "mx.r2.example",
                "198.51.100.4",
                sent,
            ),
            to(
                "08:01:30",
                9301,
                "4250G0Ad009301",
                "mx.s.example",
                "192.0.2.30",
                sent,
            ),
            // Below LogLevel 12, on another host's log: the same story without connect lines.
            starttls("09:00:00", 9400, "mx.t.example").replace(" mx ", " mx3 "),
            to(
                "09:00:01",
                9400,
                "4250H0Aa009400",
                "mx.t.example",
                "192.0.2.10",
                sent,
            )
            .replace(" mx ", " mx3 "),
            to(
                "09:00:10",
                9400,
                "4250H0Ab009400",
                "mx.x.example",
                "198.51.100.9",
                x_stat,
            )
            .replace(" mx ", " mx3 "),
            to(
                "09:00:21",
                9400,
                "4250H0Ac009400",
                "mx.b.example",
                "198.51.100.1",
                sent,
            )
            .replace(" mx ", " mx3 "),
            to(
                "09:00:30",
                9400,
                "4250H0Ad009400",
                "mx.t.example",
                "192.0.2.10",
                sent,
            )
            .replace(" mx ", " mx3 "),
        ];
        let records = run(&mut SendmailParser::new(), &log_lines(&lines.join("\n")));
        let x_hint = records.iter().find_map(|r| match r {
            Record::Message(m) if &*m.id == "4250F0Ab009300" => match &m.transport {
                Transport::Unknown { hint } => Some(*hint),
                _ => None,
            },
            _ => None,
        });
        assert!(
            x_hint.is_some_and(|h| h.contains(hint)),
            "{x_stat}: mx.x's hint {x_hint:?}"
        );
        let transport = |id: &str| message_transport(&records, id);
        assert_eq!(
            transport("4250F0Ad009300"),
            Some("tls"),
            "{x_stat}: 9300's reuse"
        );
        assert_eq!(
            transport("4250G0Ad009301"),
            Some(want_9301),
            "{x_stat}: 9301"
        );
        assert_eq!(
            transport("4250H0Ad009400"),
            Some(want_9400),
            "{x_stat}: 9400"
        );
    }
}

/// The outbound connections of `records` as (transport, messages), sorted.
fn outbound_connections(records: &[Record]) -> Vec<(&'static str, u32)> {
    use sigillo_logs::model::Direction;
    let mut got: Vec<(&str, u32)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) if c.direction == Direction::Outbound => {
                Some((transport_name(&c.transport), c.messages))
            }
            _ => None,
        })
        .collect();
    got.sort();
    got
}

/// A deferral that quotes the server's reply had a session, whatever the reply says:
/// deliver.c `giveresponse()` writes `Deferred: ` and the errno's text when there is one,
/// else `SmtpError`, the server's 4xx reply (usersmtp.c `reply()`, its first line:
/// `450-…` for a multi-line one). A relay verifying recipients by callout quotes its own
/// failure to connect (`450 4.1.1 <a@v.example>... Recipient address rejected: unverified
/// address: connect to …: Connection timed out`): that is a reply over the TLS connection
/// the recipient after it is sent over, not a connection that failed. Read as one, the TLS
/// connection was closed and the sent recipient taken for a new connection in clear (a
/// stripping trace to a relay that used STARTTLS).
#[test]
fn a_deferral_quoting_a_reply_had_a_session_whatever_the_reply_names() {
    use exim_support::{log_lines, run};

    let line = |time: &str, rest: &str| format!("Mar  4 {time} mx sm-mta[9500]: {rest}");
    let to = |time: &str, rcpt: &str, tail: &str| {
        line(
            time,
            &format!(
                "4250J0Aa009500: to=<{rcpt}@v.example>, delay=00:00:02, xdelay=00:00:02, \
                 mailer=esmtp, pri=120000, relay=mx.v.example. [192.0.2.40], {tail}"
            ),
        )
    };
    // (the first recipient's deferral, stripping traces, outbound connections)
    type Row = (&'static str, usize, &'static [(&'static str, u32)]);
    let rows: [Row; 4] = [
        (
            "dsn=4.2.0, stat=Deferred: 450 4.2.0 <a@v.example>... Greylisted",
            0,
            &[("tls", 1)],
        ),
        (
            "dsn=4.1.1, stat=Deferred: 450 4.1.1 <a@v.example>... Recipient address rejected: \
             unverified address: connect to mx2.v.example[198.51.100.20]:25: Connection timed out",
            0,
            &[("tls", 1)],
        ),
        (
            "dsn=4.1.1, stat=Deferred: 450-4.1.1 <a@v.example>... unverified address: \
             Connection refused",
            0,
            &[("tls", 1)],
        ),
        (
            "dsn=4.4.3, stat=Deferred: 451 4.4.3 Name server: v.example: host name lookup failure",
            0,
            &[("tls", 1)],
        ),
    ];
    for (deferral, traces, conns) in rows {
        let lines = [
            line(
                "08:00:00",
                "STARTTLS=client, relay=mx.v.example., version=TLSv1.3, verify=OK, \
                 cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
            ),
            to("08:00:02", "a", deferral),
            to("08:00:02", "b", "dsn=2.0.0, stat=Sent (ok)"),
        ];
        let records = run(&mut SendmailParser::new(), &log_lines(&lines.join("\n")));
        let transports: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::Message(m) => Some(transport_name(&m.transport)),
                _ => None,
            })
            .collect();
        assert_eq!(transports, ["tls", "tls"], "{deferral}: transports");
        assert_eq!(stripping_traces(&records), traces, "{deferral}: traces");
        assert_eq!(
            outbound_connections(&records),
            conns,
            "{deferral}: connections"
        );
    }
}

/// A `STARTTLS=client` line is a connection the process opened then, in a slot of its cache,
/// though the line names no mailer: it takes its place in the cache order at that line, and
/// the delivery that names its mailer later binds it there. When the session failed after
/// the handshake and Sendmail went on to the next MX host (deliver.c `goto tryhost`; the
/// `to=` line names the last host), the next delivery line of the process names another
/// relay: the connection of the STARTTLS line stays behind it, and behind two other relays a
/// cache of 2 has closed it (and it pushed out a connection of its own). Below LogLevel 12, a
/// delivery to its relay after that is of unknown transport (a larger cache might hold it),
/// not TLS; and a connection used before it is behind two.
#[test]
fn a_starttls_line_takes_its_cache_slot_at_its_line() {
    use exim_support::{log_lines, run};

    let to = |time: &str, qid: &str, host: &str, ip: &str| {
        format!(
            "Mar  4 {time} mx sm-mta[9600]: {qid}: to=<u@{host}>, delay=00:00:01, \
             xdelay=00:00:01, mailer=esmtp, pri=120000, relay={host}. [{ip}], dsn=2.0.0, \
             stat=Sent (ok)"
        )
    };
    let starttls = "Mar  4 08:00:00 mx sm-mta[9600]: STARTTLS=client, relay=mx1.example., \
                    version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256";
    let host = |name: &str| match name {
        "mx1" => ("mx1.example", "192.0.2.51"),
        "mx2" => ("mx2.example", "192.0.2.52"),
        "r1" => ("r1.example", "198.51.100.61"),
        _ => ("a.example", "198.51.100.71"),
    };
    // (relays delivered to before the STARTTLS=client line of mx1, after it, the transport
    // of the last delivery, outbound connections as (transport, messages))
    type Row = (
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        &'static [(&'static str, u32)],
    );
    let rows: [Row; 5] = [
        (&[], &["mx1"], "tls", &[("tls", 1)]),
        (&[], &["mx2", "mx1"], "tls", &[("plain", 1), ("tls", 1)]),
        (
            &[],
            &["mx2", "r1", "mx1"],
            "unknown",
            &[("plain", 1), ("plain", 1), ("tls", 0)],
        ),
        // a.example's connection behind mx1's and mx2's: closed, a new one in clear.
        (
            &["a"],
            &["mx2", "a"],
            "plain",
            &[("plain", 1), ("plain", 1), ("plain", 1), ("tls", 0)],
        ),
        // Behind mx1's alone: still cached.
        (&["a"], &["mx1", "a"], "plain", &[("plain", 2), ("tls", 1)]),
    ];
    for (before, after, want, conns) in rows {
        let mut lines = Vec::new();
        let mut n = 0;
        let mut deliver = |lines: &mut Vec<String>, name: &str, time: &str| {
            let (h, ip) = host(name);
            n += 1;
            lines.push(to(time, &format!("4250K0{n:02}009600"), h, ip));
        };
        for (i, name) in before.iter().enumerate() {
            deliver(&mut lines, name, &format!("07:59:{:02}", 30 + i * 10));
        }
        lines.push(starttls.to_owned());
        for (i, name) in after.iter().enumerate() {
            deliver(&mut lines, name, &format!("08:00:{:02}", 5 + i * 10));
        }
        let records = run(&mut SendmailParser::new(), &log_lines(&lines.join("\n")));
        let label = format!("{before:?} STARTTLS {after:?}");
        let last = format!("4250K0{:02}009600", before.len() + after.len());
        assert_eq!(message_transport(&records, &last), Some(want), "{label}");
        assert_eq!(
            outbound_connections(&records),
            conns,
            "{label}: connections"
        );
    }
}
