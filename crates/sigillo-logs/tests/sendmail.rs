//! Sendmail parser against hand-written fixtures (testdata/sendmail/*.log, expected results in
//! *.expect).

mod exim_support;

use exim_support::{check_fixtures, truncations_never_panic};
use sigillo_logs::model::MtaParser;
use sigillo_logs::sendmail::SendmailParser;

fn make() -> Box<dyn MtaParser> {
    Box::new(SendmailParser::new())
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
    use sigillo_logs::model::{AnomalyKind, Direction, Record};
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
