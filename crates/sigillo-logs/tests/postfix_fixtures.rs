//! Postfix fixtures: every `testdata/postfix/NAME.log` is run through the parser and its
//! summary compared with `NAME.expected` (format: testdata/postfix/README.md). Also: the
//! parser survives every truncation and some manglings of every fixture line, and its state
//! caps evict (and count) as documented.

#[path = "postfix_support.rs"]
mod support;

use sigillo_logs::envelope::Line;
use sigillo_logs::input::{self, Format, InputOptions, SourcePath};
use sigillo_logs::model::{AnomalyKind, MtaParser, Record};
use sigillo_logs::postfix::{
    HalfLines, PostfixParser, PostfixParserOptions, PostfixRole, TaggedRecords, line_route,
    merge_roles,
};
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/postfix")
}

fn fixture_logs() -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata/postfix")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn fixtures_match_their_expected_results() {
    let logs = fixture_logs();
    assert!(logs.len() >= 8, "fixtures missing: {logs:?}");
    let mut failures = Vec::new();
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("read fixture");
        let expected_path = log.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let (records, parser) = support::run(&text);
        let got = support::render(&support::summary(&records, &parser));
        let want = support::render(&support::parse_expected(&expected));
        if got != want {
            failures.push(format!(
                "{}:\n--- expected\n{want}--- got\n{got}",
                log.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `relay-ports.log`: each delivery record carries its server port, and the relay's name as
/// logged (for a relayhost given as an IPv6 address, the address as written in main.cf).
#[test]
fn delivery_records_carry_the_server_port() {
    let text = std::fs::read_to_string(testdata().join("relay-ports.log")).expect("read");
    let (records, _) = support::run(&text);
    let got: Vec<(String, String, Option<u16>)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Message(m) => Some((
                m.recipient_domain.as_deref().unwrap_or("none").to_owned(),
                m.peer.hostname.as_deref().unwrap_or("none").to_owned(),
                m.port,
            )),
            _ => None,
        })
        .collect();
    let want = [
        ("a.example", "smtp.isp.example", Some(587)),
        ("b.example", "2001:DB8:0::25", Some(25)),
        ("c.example", "mx.c.example", Some(25)),
    ]
    .map(|(d, h, p)| (d.to_owned(), h.to_owned(), p));
    assert_eq!(got, want);
}

#[test]
fn stripping_trace_carries_the_disconnect_line_and_peer() {
    let text = std::fs::read_to_string(testdata().join("stripped-and-failures.log")).expect("read");
    let (records, _) = support::run(&text);
    let traces: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Anomaly(a) if a.kind == AnomalyKind::StrippingTrace => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(traces.len(), 2);
    assert!(
        traces[0].evidence.ends_with("unknown=0/1 commands=5/6"),
        "{traces:?}"
    );
    assert_eq!(
        traces[0].peer.hostname.as_deref(),
        Some("mail.partner.example")
    );
    // The handshake failure is one anomaly with both lines as evidence.
    let failed: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Anomaly(a) if a.kind == AnomalyKind::StartTlsFailed => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(failed[0].evidence.lines().count(), 2, "{failed:?}");
    assert!(failed[0].evidence.contains("SSL_accept error"));
}

/// Deliveries made before the log's first outbound TLS line are held back (to turn plain
/// when one shows up), at most `MAX_HELD_UNKNOWN`: a log with more and no TLS line at all
/// counts every one as unknown, with the advice to turn TLS logging on, and a TLS line after
/// that settles only what comes after it.
#[test]
fn deliveries_without_any_tls_line_are_unknown_past_the_hold() {
    use sigillo_logs::postfix::MAX_HELD_UNKNOWN;
    let n = MAX_HELD_UNKNOWN + 5;
    let mut log = String::new();
    for i in 0..n {
        log.push_str(&format!(
            "Mar 11 08:{:02}:{:02} mx postfix/smtp[7101]: 9E{i:08X}: to=<a@plain.example>, relay=mx.plain.example[198.51.100.60]:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)\n",
            (i / 60) % 60,
            i % 60
        ));
    }
    let (records, parser) = support::run(&log);
    let got = support::summary(&records, &parser);
    assert_eq!(got.get("out.msg.unknown"), Some(&(n as u64)), "{got:?}");
    assert_eq!(got.get("out.msg.plain"), None);
    assert_eq!(got.get("advice"), Some(&1));
    // The same log followed by a TLS line and one more delivery: that one is plain.
    log.push_str("Mar 11 09:00:00 mx postfix/smtp[7102]: Trusted TLS connection established to mx.tls.example[203.0.113.80]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n");
    log.push_str("Mar 11 09:00:01 mx postfix/smtp[7102]: 9F00000001: to=<b@tls.example>, relay=mx.tls.example[203.0.113.80]:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)\n");
    log.push_str("Mar 11 09:00:02 mx postfix/smtp[7103]: 9F00000002: to=<c@plain.example>, relay=mx.plain.example[198.51.100.60]:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)\n");
    let (records, parser) = support::run(&log);
    let got = support::summary(&records, &parser);
    assert_eq!(got.get("out.msg.unknown"), Some(&(n as u64)), "{got:?}");
    assert_eq!(got.get("out.msg.tls"), Some(&1));
    assert_eq!(got.get("out.msg.plain"), Some(&1));
}

/// Feeds every prefix of every fixture line (whole line, and message only with the envelope
/// intact), and some manglings, into one parser: it must neither panic nor grow unbounded.
#[test]
fn truncated_and_mangled_lines_never_panic() {
    let options = PostfixParserOptions {
        max_sessions: 64,
        max_pending_messages: 64,
        max_delivery_processes: 64,
        max_relays: 64,
        max_ids_per_session: 8,
        ..PostfixParserOptions::default()
    };
    let mut p = PostfixParser::new(options);
    let mut out = Vec::new();
    let mut fed = 0u64;
    for log in fixture_logs() {
        let text = std::fs::read_to_string(&log).expect("read");
        for raw in text.lines() {
            let Some(whole) = support::split(raw) else {
                continue;
            };
            let mangled = [
                raw.replace(']', ""),
                raw.replace('[', "[["),
                raw.replace(": ", ":"),
                raw.replace('=', "=="),
                raw.replace(", ", ","),
                raw.replace(|c: char| c.is_ascii_digit(), "9999999999"),
                raw.replace('<', ""),
                raw.replace("TLSv", "\u{fffd}"),
            ];
            for i in (0..=raw.len()).filter(|&i| raw.is_char_boundary(i)) {
                if let Some(line) = support::split(&raw[..i]) {
                    p.feed(&line, &mut out);
                    fed += 1;
                }
            }
            for i in (0..=whole.message.len()).filter(|&i| whole.message.is_char_boundary(i)) {
                let line = Line {
                    message: &whole.message[..i],
                    ..whole
                };
                p.feed(&line, &mut out);
                fed += 1;
            }
            for m in &mangled {
                if let Some(line) = support::split(m) {
                    p.feed(&line, &mut out);
                    fed += 1;
                }
            }
            let (s, q, d, r) = p.open_state();
            assert!(
                s <= 64 && q <= 64 && d <= 64 && r <= 64,
                "{:?}",
                p.open_state()
            );
            out.clear();
        }
    }
    p.finish(&mut out);
    assert!(fed > 10_000, "only {fed} lines fed");
    assert!(p.unparsed() > 0, "truncated lines should count as unparsed");
}

#[test]
fn caps_evict_oldest_and_count() {
    // 5 sessions open at once with room for 2: 3 evicted; 3 queue ids pending with room for 2.
    let mut log = String::new();
    for pid in 1..=5 {
        log.push_str(&format!(
            "Nov 28 10:00:0{pid} mx postfix/smtpd[{pid}]: connect from unknown[192.0.2.{pid}]\n"
        ));
    }
    for pid in 4..=5 {
        log.push_str(&format!(
            "Nov 28 10:00:10 mx postfix/smtpd[{pid}]: disconnect from unknown[192.0.2.{pid}] ehlo=1 quit=1 commands=2\n"
        ));
    }
    let options = PostfixParserOptions {
        max_sessions: 2,
        max_pending_messages: 2,
        ..PostfixParserOptions::default()
    };
    let (records, parser) = support::run_with(&log, options);
    assert_eq!(parser.evicted(), 3);
    let conns = records
        .iter()
        .filter(|r| matches!(r, Record::Connection(_)))
        .count();
    assert_eq!(conns, 2, "only the two sessions kept are emitted");

    let mut log = String::new();
    for (i, id) in ["AAAAA1", "AAAAA2", "AAAAA3"].iter().enumerate() {
        log.push_str(&format!(
            "Nov 28 10:01:0{i} mx postfix/smtpd[9]: {id}: client=unknown[192.0.2.9]\n"
        ));
    }
    for id in ["AAAAA1", "AAAAA2", "AAAAA3"] {
        log.push_str(&format!(
            "Nov 28 10:02:00 mx postfix/qmgr[8]: {id}: from=<a@b>, size=10, nrcpt=1 (queue active)\n"
        ));
    }
    log.push_str("Nov 28 10:03:00 mx postfix/smtpd[9]: disconnect from unknown[192.0.2.9] ehlo=1 mail=3 rcpt=3 data=3 quit=1 commands=11\n");
    let (records, parser) = support::run_with(&log, options);
    assert_eq!(parser.evicted(), 1, "AAAAA1 evicted");
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Message(m) => Some(&*m.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["AAAAA2", "AAAAA3"]);
}

/// A relay remembered as plain and then evicted by another relay's TLS line is remembered
/// again at its next delivery (the parser's shortcut for a relay known plain must not outlive
/// its entry).
#[test]
fn relay_evicted_after_plain_delivery_is_remembered_again() {
    let log = "\
Nov 22 10:00:00 mx postfix/lmtp[300]: 1A1B2C3D4E: to=<u@lab.test>, relay=mail.lab.test[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:00:01 mx postfix/smtp[301]: Trusted TLS connection established to mx.b.example[198.51.100.2]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
Nov 22 10:00:02 mx postfix/lmtp[300]: 2A1B2C3D4E: to=<v@lab.test>, relay=mail.lab.test[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:00:03 mx postfix/lmtp[300]: 3A1B2C3D4E: to=<w@lab.test>, relay=mail.lab.test[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 ok)
";
    let options = PostfixParserOptions {
        max_relays: 1,
        ..PostfixParserOptions::default()
    };
    let (_, parser) = support::run_with(log, options);
    assert_eq!(
        parser.evicted(),
        2,
        "the LMTP relay by the TLS relay, then back"
    );
}

/// Lines of other programs and irrelevant Postfix lines leave no state and no records.
#[test]
fn irrelevant_lines_are_ignored() {
    let log = "\
Nov 28 10:00:00 mx sshd[100]: Accepted publickey for root from 192.0.2.1 port 22
Nov 28 10:00:00 mx smtpd[101]: f274cf34b7d0786b smtp connected address=192.0.2.1 host=x
Nov 28 10:00:00 mx postfix/anvil[102]: statistics: max connection rate 1/60s for (smtp:192.0.2.1) at Nov 28 10:00:00
Nov 28 10:00:00 mx postfix/postscreen[103]: CONNECT from [192.0.2.1]:4711 to [192.0.2.2]:25
Nov 28 10:00:00 mx postfix/smtpd[104]: warning: hostname x does not resolve to address 192.0.2.1
Nov 28 10:00:00 mx postfix/cleanup[105]: 1E1B2C3D4E: message-id=<x@y>
Nov 28 10:00:00 mx postfix/qmgr[106]: 1E1B2C3D4E: from=<a@b>, size=10, nrcpt=1 (queue active)
";
    let (records, parser) = support::run(log);
    assert!(records.is_empty(), "{records:?}");
    assert_eq!((parser.unparsed(), parser.evicted()), (0, 0));
    assert_eq!(parser.open_state(), (0, 0, 0, 0));
}

/// A fresh inbound half and delivery half, as `report` runs them.
fn halves() -> (PostfixParser, PostfixParser) {
    let with_role = |role| {
        PostfixParser::new(PostfixParserOptions {
            role,
            ..PostfixParserOptions::default()
        })
    };
    (
        with_role(PostfixRole::Inbound),
        with_role(PostfixRole::Delivery),
    )
}

/// Runs an inbound and a delivery parser over every line of `text`: merged by line, they must
/// emit exactly the records one parser of every line emits, with the same counts and advice.
/// So must a second pair fed each line routed by its [`line_route`], and a third fed only
/// its own lines ([`HalfLines`]), as `report` feeds them. Returns how many records were
/// compared.
fn assert_halves_equal_one_parser(text: &str, label: &str) -> usize {
    let (whole, whole_parser) = support::run(text);
    let (mut inbound, mut delivery) = halves();
    let (mut routed_in, mut routed_out) = halves();
    let (mut tagged_in, mut tagged_out) = (TaggedRecords::default(), TaggedRecords::default());
    let (mut routed_in_records, mut routed_out_records) =
        (TaggedRecords::default(), TaggedRecords::default());
    let lines: Vec<Option<Line<'_>>> = text.lines().map(support::split).collect();
    let mut split = HalfLines::default();
    for (i, line) in lines.iter().enumerate() {
        let Some(line) = line else {
            continue;
        };
        let i = u32::try_from(i).expect("few lines");
        tagged_in.feed(&mut inbound, line, i);
        tagged_out.feed(&mut delivery, line, i);
        let route = line_route(line);
        routed_in_records.feed_routed(&mut routed_in, line, route, i);
        routed_out_records.feed_routed(&mut routed_out, line, route, i);
        if let Some(route) = route {
            split.push(i, route, line.time);
        }
    }
    let (mut split_in, mut split_out) = halves();
    let (mut split_in_records, mut split_out_records) =
        (TaggedRecords::default(), TaggedRecords::default());
    let line_at = |i: usize| lines.get(i).copied().flatten();
    split_in_records.feed_half(&mut split_in, &split, line_at);
    split_out_records.feed_half(&mut split_out, &split, line_at);
    let mut by_half: Vec<Record> = merge_roles(&split_in_records, &split_out_records)
        .cloned()
        .collect();
    split_in.finish(&mut by_half);
    split_out.finish(&mut by_half);
    assert_eq!(by_half, whole, "{label}: each half fed its own lines");
    let mut merged: Vec<Record> = merge_roles(&tagged_in, &tagged_out).cloned().collect();
    inbound.finish(&mut merged);
    delivery.finish(&mut merged);
    assert_eq!(merged, whole, "{label}");
    let mut routed: Vec<Record> = merge_roles(&routed_in_records, &routed_out_records)
        .cloned()
        .collect();
    routed_in.finish(&mut routed);
    routed_out.finish(&mut routed);
    assert_eq!(routed, whole, "{label}: routed by line_route");
    assert_eq!(
        routed_in.unparsed() + routed_out.unparsed(),
        whole_parser.unparsed(),
        "{label}: routed by line_route"
    );
    assert_eq!(
        inbound.unparsed() + delivery.unparsed(),
        whole_parser.unparsed(),
        "{label}"
    );
    assert_eq!(
        inbound.evicted() + delivery.evicted(),
        whole_parser.evicted(),
        "{label}"
    );
    let mut advice = inbound.advice();
    advice.extend(delivery.advice());
    assert_eq!(advice, whole_parser.advice(), "{label}");
    whole.len()
}

/// The two halves `report` runs on two threads share no state: together they emit what one
/// parser emits, on every fixture.
#[test]
fn inbound_and_delivery_roles_together_equal_one_parser() {
    let mut compared = 0;
    for log in fixture_logs() {
        let text = std::fs::read_to_string(&log).expect("read");
        compared += assert_halves_equal_one_parser(&text, &log.display().to_string());
    }
    assert!(compared > 100, "only {compared} records compared");
}

/// What `report` runs: every fixture read in blocks, each line fed to both halves as a view of
/// its block (sliced out whole only by the half that takes it), merged per block. Together
/// they emit what one parser fed whole lines emits.
#[test]
fn halves_fed_line_views_equal_one_parser_of_lines() {
    let options = InputOptions {
        format: Some(Format::Postfix),
        year: Some(2026),
        ..InputOptions::default()
    };
    let mut compared = 0;
    for log in fixture_logs() {
        let (mut whole_parser, mut whole) = (PostfixParser::default(), Vec::new());
        let (mut inbound, mut delivery) = halves();
        let (mut routed_in, mut routed_out) = halves();
        let (mut split_in, mut split_out) = halves();
        let (mut merged, mut routed): (Vec<Record>, Vec<Record>) = (Vec::new(), Vec::new());
        let mut by_half: Vec<Record> = Vec::new();
        input::open(&SourcePath::File(log.clone()), &options).for_each_block(|block| {
            for line in block.lines() {
                whole_parser.feed(&line, &mut whole);
            }
            let (mut tagged_in, mut tagged_out) =
                (TaggedRecords::default(), TaggedRecords::default());
            for (i, view) in block.views().enumerate() {
                let i = u32::try_from(i).expect("few lines");
                tagged_in.feed(&mut inbound, &view, i);
                tagged_out.feed(&mut delivery, &view, i);
            }
            merged.extend(merge_roles(&tagged_in, &tagged_out).cloned());
            // As `report` feeds them: each line's role found once, each half routed by it.
            let (mut tagged_in, mut tagged_out) =
                (TaggedRecords::default(), TaggedRecords::default());
            for (i, view) in block.views().enumerate() {
                let i = u32::try_from(i).expect("few lines");
                let route = line_route(&view);
                tagged_in.feed_routed(&mut routed_in, &view, route, i);
                tagged_out.feed_routed(&mut routed_out, &view, route, i);
            }
            routed.extend(merge_roles(&tagged_in, &tagged_out).cloned());
            // As `report` feeds them: the block's lines split once, each half walking its own.
            let mut split = HalfLines::with_capacity(block.len());
            for (i, view) in block.views().enumerate() {
                if let Some(route) = line_route(&view) {
                    split.push(u32::try_from(i).expect("few lines"), route, view.time());
                }
            }
            let (mut tagged_in, mut tagged_out) =
                (TaggedRecords::default(), TaggedRecords::default());
            tagged_in.feed_half(&mut split_in, &split, |i| block.view(i));
            tagged_out.feed_half(&mut split_out, &split, |i| block.view(i));
            by_half.extend(merge_roles(&tagged_in, &tagged_out).cloned());
            Some(block)
        });
        whole_parser.finish(&mut whole);
        inbound.finish(&mut merged);
        delivery.finish(&mut merged);
        assert_eq!(merged, whole, "{}", log.display());
        routed_in.finish(&mut routed);
        routed_out.finish(&mut routed);
        assert_eq!(routed, whole, "{}: routed by line_route", log.display());
        split_in.finish(&mut by_half);
        split_out.finish(&mut by_half);
        assert_eq!(by_half, whole, "{}: each half its own lines", log.display());
        assert_eq!(
            split_in.unparsed() + split_out.unparsed(),
            whole_parser.unparsed(),
            "{}: each half its own lines",
            log.display()
        );
        assert_eq!(
            inbound.unparsed() + delivery.unparsed(),
            whole_parser.unparsed(),
            "{}",
            log.display()
        );
        compared += whole.len();
    }
    assert!(compared > 100, "only {compared} records compared");
}

/// Delivery processes idle for over an hour are flushed by a sweep, oldest first in both
/// halves' numbering of processes (found by the `log_lines` fuzz target: the sweep used to
/// follow hash order, which differs between a whole parser and its delivery half).
#[test]
fn idle_process_sweep_order_is_the_same_in_both_halves() {
    let log = "\
Nov 22 10:00:00 mx postfix/smtpd[100]: connect from a.example[192.0.2.1]
Nov 22 10:00:01 mx postfix/virtual[201]: 1A1B2C3D4E: to=<u@lab.test>, relay=virtual, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to maildir)
Nov 22 10:00:02 oldmx postfix/smtp[202]: 2A1B2C3D4E: to=<b@b.example>, relay=mx.b.example[198.51.100.2]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:00:03 mx postfix/smtp[203]: 3A1B2C3D4E: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:00:04 mx postfix/lmtp[204]: 4A1B2C3D4E: to=<v@lab.test>, relay=mail.lab.test[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 ok)
Nov 22 12:30:00 mx postfix/smtpd[100]: disconnect from a.example[192.0.2.1] ehlo=1 quit=1 commands=2
";
    let n = assert_halves_equal_one_parser(log, "sweep");
    assert_eq!(
        n, 7,
        "4 messages, 2 outbound connections, 1 inbound connection"
    );
}

/// The delivery half, fed only its own lines ([`HalfLines`]), still sweeps idle processes at
/// the inbound lines where a sweep falls due: twice among the inbound lines between two of
/// its lines (at 10:30, when nothing is idle for an hour yet, and at 11:05, which flushes the
/// deliveries of 10:00 before that line's records), and after its last line (12:30).
#[test]
fn idle_process_sweeps_at_inbound_lines_between_delivery_lines() {
    let log = "\
Nov 22 10:00:00 mx postfix/smtpd[100]: connect from a.example[192.0.2.1]
Nov 22 10:00:01 mx postfix/virtual[201]: 1A1B2C3D4E: to=<u@lab.test>, relay=virtual, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to maildir)
Nov 22 10:00:02 mx postfix/smtp[203]: 3A1B2C3D4E: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:30:00 mx postfix/smtpd[101]: connect from b.example[192.0.2.2]
Nov 22 10:30:01 mx postfix/anvil[300]: statistics: max connection rate 1/60s for (smtp:192.0.2.2) at Nov 22 10:30:00
Nov 22 11:05:00 mx postfix/smtpd[102]: connect from c.example[192.0.2.3]
Nov 22 11:05:01 mx postfix/smtpd[102]: disconnect from c.example[192.0.2.3] ehlo=1 quit=1 commands=2
Nov 22 11:20:00 mx postfix/lmtp[204]: 4A1B2C3D4E: to=<v@lab.test>, relay=mail.lab.test[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 ok)
Nov 22 12:30:00 mx postfix/smtpd[101]: disconnect from b.example[192.0.2.2] ehlo=1 quit=1 commands=2
Nov 22 12:30:01 mx postfix/smtpd[100]: disconnect from a.example[192.0.2.1] ehlo=1 quit=1 commands=2
";
    let n = assert_halves_equal_one_parser(log, "sweeps between delivery lines");
    assert_eq!(
        n, 7,
        "3 messages, 1 outbound connection, 3 inbound connections"
    );
}

/// Feeds the good lines of `text` to an inbound and a delivery half as `report` does, cut
/// into blocks of `per_block` lines: each block's lines split once ([`HalfLines`]), each half
/// walking its own list, the records merged per block. Returns the merged records (with both
/// halves' `finish`) and the two halves.
fn fed_in_blocks(text: &str, per_block: usize) -> (Vec<Record>, PostfixParser, PostfixParser) {
    let lines: Vec<Line<'_>> = text.lines().filter_map(support::split).collect();
    let (mut inbound, mut delivery) = halves();
    let mut merged = Vec::new();
    for block in lines.chunks(per_block) {
        let mut split = HalfLines::with_capacity(block.len());
        for (i, line) in block.iter().enumerate() {
            if let Some(route) = line_route(line) {
                split.push(u32::try_from(i).expect("few lines"), route, line.time);
            }
        }
        let (mut tagged_in, mut tagged_out) = (TaggedRecords::default(), TaggedRecords::default());
        tagged_in.feed_half(&mut inbound, &split, |i| block.get(i).copied());
        tagged_out.feed_half(&mut delivery, &split, |i| block.get(i).copied());
        merged.extend(merge_roles(&tagged_in, &tagged_out).cloned());
    }
    inbound.finish(&mut merged);
    delivery.finish(&mut merged);
    (merged, inbound, delivery)
}

/// A log for the delivery half's sweeps at inbound lines it does not walk (outbound TLS
/// logging on, so that each delivery goes out when its process is flushed): time going
/// backwards before and after a sweep (a run of inbound lines whose last line is before the
/// next sweep while one before it is past it), lines of other programs (later than the next
/// sweep, which they must not trigger) between the halves' lines, a sweep due at exactly the
/// time of the next sweep, and a log that ends with inbound lines only.
const SWEEP_EDGES: &str = "\
Nov 22 10:00:00 mx postfix/smtpd[100]: connect from a.example[192.0.2.1]
Nov 22 10:00:01 mx postfix/smtp[203]: Verified TLS connection established to gmail-smtp-in.l.google.com[142.250.1.26]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
Nov 22 10:00:02 mx postfix/smtp[203]: 3A1B2C3D4E: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:00:03 mx postfix/virtual[201]: 1A1B2C3D4E: to=<u@lab.test>, relay=virtual, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to maildir)
Nov 22 10:05:00 mx postfix/smtpd[101]: connect from b.example[192.0.2.2]
Nov 22 09:00:00 mx postfix/smtpd[102]: connect from c.example[192.0.2.3]
Nov 22 13:00:00 mx dovecot: imap-login: Login: user=<u@lab.test>, method=PLAIN, rip=192.0.2.9
Nov 22 13:00:01 mx exim[400]: 2026-11-22 13:00:01 1vAbCd-000001-AB <= a@b.example H=b.example [192.0.2.2] P=esmtps S=1000
Nov 22 10:09:59 mx postfix/smtpd[102]: disconnect from c.example[192.0.2.3] ehlo=1 quit=1 commands=2
Nov 22 11:05:00 mx postfix/smtpd[101]: disconnect from b.example[192.0.2.2] ehlo=1 quit=1 commands=2
Nov 22 10:09:30 mx postfix/smtpd[103]: connect from d.example[192.0.2.4]
Nov 22 10:30:01 mx postfix/smtp[204]: 4A1B2C3D4E: to=<b@b.example>, relay=mx.b.example[198.51.100.2]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:30:02 mx postfix/smtp[204]: 5A1B2C3D4E: to=<c@b.example>, relay=mx.b.example[198.51.100.2]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)
Nov 22 10:54:59 mx postfix/smtp[205]: 6A1B2C3D4E: to=<d@d.example>, relay=mx.d.example[198.51.100.4]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)
Nov 22 11:45:00 mx postfix/smtpd[103]: disconnect from d.example[192.0.2.4] ehlo=1 quit=1 commands=2
Nov 22 11:40:00 mx postfix/smtpd[104]: connect from e.example[192.0.2.5]
Nov 22 11:55:00 mx postfix/smtpd[104]: disconnect from e.example[192.0.2.5] ehlo=1 quit=1 commands=2
Nov 22 11:55:01 mx postfix/smtp[206]: 7A1B2C3D4E: to=<f@f.example>, relay=mx.f.example[198.51.100.6]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)
Nov 22 12:50:00 mx postfix/smtpd[105]: connect from f.example[192.0.2.6]
Nov 22 12:51:00 mx postfix/smtpd[100]: disconnect from a.example[192.0.2.1] ehlo=1 quit=1 commands=2
";

/// What `report` does with block boundaries anywhere: every fixture, and [`SWEEP_EDGES`], cut
/// into blocks of 1 to 7 lines (so blocks of inbound lines only, of delivery lines only, a
/// sweep due in the first line of a block or in the last block), fed through [`HalfLines`]:
/// the same records, unparsed and evicted counts as one parser.
#[test]
fn halves_fed_their_own_lines_by_block_equal_one_parser() {
    let mut logs: Vec<(String, String)> = fixture_logs()
        .into_iter()
        .map(|log| {
            let text = std::fs::read_to_string(&log).expect("read");
            (log.display().to_string(), text)
        })
        .collect();
    logs.push(("SWEEP_EDGES".to_owned(), SWEEP_EDGES.to_owned()));
    let mut compared = 0;
    for (label, text) in &logs {
        let (whole, whole_parser) = support::run(text);
        for per_block in [1, 2, 3, 4, 7] {
            let (by_block, inbound, delivery) = fed_in_blocks(text, per_block);
            assert_eq!(by_block, whole, "{label}: blocks of {per_block}");
            assert_eq!(
                inbound.unparsed() + delivery.unparsed(),
                whole_parser.unparsed(),
                "{label}: blocks of {per_block}"
            );
            assert_eq!(
                inbound.evicted() + delivery.evicted(),
                whole_parser.evicted(),
                "{label}: blocks of {per_block}"
            );
            compared += whole.len();
        }
    }
    assert!(compared > 500, "only {compared} records compared");
    // The edge log itself: the three sweeps that flush fall at inbound lines (11:05 flushes
    // the deliveries of 10:00, 11:45 those of 10:30, 11:55:00, due at exactly that second,
    // the one of 10:54:59), and each of its messages is counted.
    let (whole, _) = support::run(SWEEP_EDGES);
    let messages = whole
        .iter()
        .filter(|r| matches!(r, Record::Message(_)))
        .count();
    assert_eq!(messages, 6, "{whole:#?}");
}

/// A delivery's `relay=` text is handed on to the next delivery of its process only when the
/// next goes to the same text (6189a88): recipients of one message in a row are one record
/// while the relay text stays the same, and a relay that differs only in case, port or IP
/// starts a record of its own, with its own peer and port.
#[test]
fn a_relay_differing_in_case_port_or_ip_is_another_relay() {
    let to = |n: u32, relay: &str| {
        format!(
            "Nov 22 10:00:{n:02} mx postfix/smtp[300]: 1A1B2C3D4E: to=<r{n}@x.example>, relay={relay}, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n"
        )
    };
    let mut log = String::from(
        "Nov 22 10:00:00 mx postfix/smtp[300]: Verified TLS connection established to mx.x.example[192.0.2.10]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n",
    );
    for (n, relay) in [
        "mx.x.example[192.0.2.10]:25",
        "mx.x.example[192.0.2.10]:25",
        "MX.X.EXAMPLE[192.0.2.10]:25",
        "mx.x.example[192.0.2.10]:25",
        "mx.x.example[192.0.2.10]:587",
        "mx.x.example[192.0.2.11]:587",
        "mx.x.example[192.0.2.11]:587",
    ]
    .into_iter()
    .enumerate()
    {
        log.push_str(&to(u32::try_from(n).expect("few") + 1, relay));
    }
    let (records, _) = support::run(&log);
    // (recipients, host, IP, port)
    let got: Vec<(u32, String, String, Option<u16>)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Message(m) => Some((
                m.recipients,
                m.peer.hostname.as_deref().unwrap_or("none").to_owned(),
                m.peer
                    .ip
                    .map_or_else(|| "none".to_owned(), |ip| ip.to_string()),
                m.port,
            )),
            _ => None,
        })
        .collect();
    let want = [
        (2, "mx.x.example", "192.0.2.10", Some(25)),
        (1, "MX.X.EXAMPLE", "192.0.2.10", Some(25)),
        (1, "mx.x.example", "192.0.2.10", Some(25)),
        (1, "mx.x.example", "192.0.2.10", Some(587)),
        (2, "mx.x.example", "192.0.2.11", Some(587)),
    ]
    .map(|(n, h, ip, p)| (n, h.to_owned(), ip.to_owned(), p));
    assert_eq!(got, want);
    assert_halves_equal_one_parser(&log, "relay texts");
}
