//! Exim parser against fixture mainlogs (testdata/exim/*.log, expected results in *.expect).

mod exim_support;

use exim_support::{check_fixtures, truncations_never_panic};
use sigillo_logs::exim::EximParser;
use sigillo_logs::model::MtaParser;

fn make() -> Box<dyn MtaParser> {
    Box::new(EximParser::new())
}

#[test]
fn fixtures_match_expected_summaries() {
    let n = check_fixtures("exim", &make);
    assert!(n >= 2, "expected at least 2 Exim fixtures, found {n}");
}

#[test]
fn every_truncation_of_every_line_is_safe() {
    let fed = truncations_never_panic("exim", &make);
    assert!(fed > 1000, "fed only {fed} truncated lines");
}

/// Concurrent sessions from one address: each inbound connection record, in emission order,
/// as (time of day, peer address, transport, messages), and whether the parser advises
/// `+incoming_port`. Told apart by pid (+pid, syslog) or remote port (+incoming_port); a
/// merged session would carry the other's messages, transport or opening time. With neither,
/// they are merged (the documented limit), and the advice says so.
#[test]
fn concurrent_sessions_from_one_address_stay_apart() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::model::{Direction, Record, Transport};

    type Conn = (&'static str, &'static str, &'static str, u32);
    let cases: &[(&str, &[Conn], bool)] = &[
        (
            "concurrent-sessions.log",
            &[
                // Part 1 (+pid): the plain session closes first.
                ("10:00:00", "192.0.2.1", "plain", 1),
                ("10:00:00", "192.0.2.1", "tls", 2),
                // Part 2 (+pid): the plain session is emitted at its close, the TLS one
                // without mail at its `no MAIL` line.
                ("10:10:00", "192.0.2.1", "plain", 1),
                ("10:10:00", "192.0.2.1", "tls", 0),
                // Part 3 (+incoming_port).
                ("10:20:00", "192.0.2.2", "tls", 1),
                ("10:20:00", "192.0.2.2", "plain", 1),
            ],
            false,
        ),
        (
            "concurrent-sessions-syslog.log",
            &[
                ("10:00:00", "192.0.2.1", "tls", 1),
                ("10:00:00", "192.0.2.1", "plain", 1),
            ],
            false,
        ),
        (
            "concurrent-sessions-merged.log",
            &[("10:00:00", "192.0.2.1", "tls", 2)],
            true,
        ),
        // Sessions ended by a connect-ACL rejection or a drop keep their own opening line;
        // those without mail are emitted at the end of input.
        (
            "session-endings.log",
            &[
                ("10:30:01", "192.0.2.3", "tls", 1),
                ("10:40:01", "192.0.2.3", "plain", 1),
                ("10:50:01", "192.0.2.3", "tls", 1),
                // +dnssec: the rejection ` DSH=mx.d.example [192.0.2.5] …` ends its session.
                ("11:00:01", "192.0.2.5", "tls", 1),
                // TLS on connect: `H=… dropped by 'connect' ACL` ends its session.
                ("11:10:01", "192.0.2.6", "tls", 1),
                ("10:30:00", "192.0.2.3", "plain", 0),
                ("10:40:00", "192.0.2.3", "plain", 0),
                ("10:50:00", "192.0.2.3", "unknown", 0),
                ("11:00:00", "192.0.2.5", "plain", 0),
                ("11:10:00", "192.0.2.6", "unknown", 0),
            ],
            false,
        ),
        // A pid reused for a later session of the same address (+pid without +smtp_no_mail):
        // each close without mail ends its own session; the earlier one of that pid is
        // emitted when the later one closes, the later one at the end of input.
        (
            "pid-reuse.log",
            &[
                ("10:00:00", "192.0.2.4", "unknown", 0),
                ("10:10:00", "192.0.2.4", "tls", 1),
                ("10:05:00", "192.0.2.4", "unknown", 0),
            ],
            false,
        ),
    ];
    for (file, want, advised) in cases {
        let text = std::fs::read_to_string(testdata("exim").join(file)).expect("fixture");
        let mut parser = EximParser::new();
        let records = run(&mut parser, &log_lines(&text));
        let got: Vec<(String, String, &str, u32)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Connection(c) if c.direction == Direction::Inbound => {
                    let t = c.time % 86_400;
                    Some((
                        format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
                        c.peer.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                        match c.transport {
                            Transport::Tls(_) => "tls",
                            Transport::Plain => "plain",
                            Transport::Unknown { .. } => "unknown",
                        },
                        c.messages,
                    ))
                }
                _ => None,
            })
            .collect();
        let want: Vec<(String, String, &str, u32)> = want
            .iter()
            .map(|(t, ip, kind, n)| (t.to_string(), ip.to_string(), *kind, *n))
            .collect();
        assert_eq!(got, want, "{file}");
        assert_eq!(parser.evicted(), 0, "{file}: nothing evicted");
        let advice = parser.advice();
        assert_eq!(
            advice.iter().any(|a| a.contains("+incoming_port")),
            *advised,
            "{file}: {advice:?}"
        );
    }
}

/// A STARTTLS failure Exim retries in clear is listed once per host, outbound, with the
/// host's name and address and the first line that tells it as evidence (the `delivering
/// unencrypted` line, or an older Exim's `TLS error on connection to` line before it, which
/// names the cause); the delivery after it is plaintext.
#[test]
fn tls_fallback_to_clear_is_a_starttls_failure() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::model::{AnomalyKind, Direction, Record, Transport};

    let text = std::fs::read_to_string(testdata("exim").join("tls-fallback-to-clear.log"))
        .expect("fixture");
    let mut parser = EximParser::new();
    let records = run(&mut parser, &log_lines(&text));
    // (host name, address, evidence substring)
    let want: &[(&str, &str, &str)] = &[
        (
            "mx.example.com",
            "192.0.2.1",
            "certificate verify failed: delivering unencrypted to H=mx.example.com",
        ),
        (
            "smtp.relay.example",
            "192.0.2.2",
            "certificate invalid: delivering unencrypted to H=smtp.relay.example",
        ),
        (
            "mx.old.example",
            "192.0.2.3",
            "TLS error on connection to mx.old.example [192.0.2.3] (SSL_connect)",
        ),
    ];
    let failures: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Anomaly(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), want.len(), "{failures:#?}");
    for (a, (name, ip, evidence)) in failures.iter().zip(want) {
        assert_eq!(a.kind, AnomalyKind::StartTlsFailed);
        assert_eq!(a.direction, Direction::Outbound);
        assert_eq!(a.peer.hostname.as_deref(), Some(*name));
        assert_eq!(a.peer.ip, Some(ip.parse().expect("ip")));
        assert!(a.evidence.contains(evidence), "{}", a.evidence);
        // The delivery to that host after the failure went in clear.
        let delivery = records.iter().find_map(|r| match r {
            Record::Message(m)
                if m.direction == Direction::Outbound
                    && m.peer.ip == a.peer.ip
                    && m.time >= a.time =>
            {
                Some(m)
            }
            _ => None,
        });
        assert_eq!(
            delivery.map(|m| &m.transport),
            Some(&Transport::Plain),
            "{ip}"
        );
    }
}

/// Older Exim logs a failed outbound handshake itself (`TLS error on connection to …`, or
/// `H=… TLS error on connection (…)`) and then again on the next line; callouts log theirs
/// without a message id. Each attempt is listed once, outbound, in log order, with the
/// first line that tells it as evidence.
#[test]
fn older_tls_errors_and_callouts_are_listed_once() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::model::{AnomalyKind, Direction, Record};

    let text = std::fs::read_to_string(testdata("exim").join("tls-error-older-versions.log"))
        .expect("fixture");
    let mut parser = EximParser::new();
    let records = run(&mut parser, &log_lines(&text));
    // (address, evidence substring)
    let want: &[(&str, &str)] = &[
        ("192.0.2.1", "TLS error on connection to mx.example.net"),
        ("192.0.2.2", "TLS error on connection to mx1.example.com"),
        (
            "192.0.2.4",
            "H=mx.example.edu [192.0.2.4] TLS error on connection",
        ),
        ("192.0.2.5", "10:30:01 1abcdh-000000-AB H=mx.example.info"),
        ("192.0.2.5", "10:31:01 1abcdi-000000-AB H=mx.example.info"),
        ("192.0.2.6", "callout unencrypted to mx.example.biz"),
        (
            "192.0.2.7",
            "H=mx.example.mobi [192.0.2.7] TLS error on connection",
        ),
    ];
    let mut failures: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Anomaly(a) => Some(a),
            _ => None,
        })
        .collect();
    failures.sort_by_key(|a| a.time);
    assert_eq!(failures.len(), want.len(), "{failures:#?}");
    for (a, (ip, evidence)) in failures.iter().zip(want) {
        assert_eq!(a.kind, AnomalyKind::StartTlsFailed);
        assert_eq!(a.direction, Direction::Outbound);
        assert_eq!(a.peer.ip, Some(ip.parse().expect("ip")));
        assert!(a.evidence.contains(evidence), "{}", a.evidence);
    }
}

/// A delivery Exim does not retry in clear ends in one `==` line per recipient of the
/// transport run: each run is listed once, outbound, in log order, with the first line that
/// tells it as evidence (its DANE line or older Exim's error line when there is one, else its
/// first `==` line); two runs of one message to one host (two domains, `multi_domain =
/// false`) and a second attempt naming the same recipients are listed apart. A run whose
/// lines straddle a second boundary is one run; a DANE line pairs with its run's `==` lines
/// written two seconds later.
#[test]
fn deferred_recipients_of_one_run_are_one_failure() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::model::{AnomalyKind, Direction, Record};

    // (fixture, [(address, evidence substring)])
    type Case = (&'static str, &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        (
            "tls-deferred-recipients.log",
            &[
                (
                    "192.0.2.21",
                    "DANE attempt failed; TLS connection to mx.example.fo",
                ),
                (
                    "192.0.2.22",
                    "DANE attempt failed; TLS connection to mx.example.se",
                ),
                (
                    "192.0.2.23",
                    "10:20:01 1wuB02-0000000HB03-0aac == nina@example.dk",
                ),
                (
                    "192.0.2.23",
                    "10:20:02 1wuB02-0000000HB03-0aac == nina@example.dk",
                ),
                (
                    "192.0.2.24",
                    "[6101] 1wuB03-0000000HB04-0aad == pia@example.no",
                ),
                (
                    "192.0.2.25",
                    "H=mx.example.is [192.0.2.25] TLS error on connection",
                ),
                (
                    "192.0.2.26",
                    "[6201] 1wuB05-0000000HB06-0aaf DANE attempt failed",
                ),
                (
                    "192.0.2.26",
                    "[6202] 1wuB05-0000000HB06-0aaf DANE attempt failed",
                ),
                ("192.0.2.27", "1wuB06-0000000HB07-0aag == vera@one.example"),
                ("192.0.2.27", "1wuB06-0000000HB07-0aag == xena@two.example"),
            ],
        ),
        (
            "tls-deferred-run-timing.log",
            &[
                (
                    "192.0.2.31",
                    "DANE attempt failed; TLS connection to mx.example.fo",
                ),
                (
                    "192.0.2.32",
                    "12:10:01 1wuC01-0000000HC02-0aab == nina@example.dk",
                ),
                (
                    "192.0.2.32",
                    "12:10:03 1wuC01-0000000HC02-0aab == nina@example.dk",
                ),
                (
                    "192.0.2.33",
                    "[7201] 1wuC02-0000000HC03-0aac DANE attempt failed",
                ),
                (
                    "192.0.2.33",
                    "[7202] 1wuC02-0000000HC03-0aac DANE attempt failed",
                ),
            ],
        ),
    ];
    for (file, want) in cases {
        let text = std::fs::read_to_string(testdata("exim").join(file)).expect("fixture");
        let mut parser = EximParser::new();
        let records = run(&mut parser, &log_lines(&text));
        let failures: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::Anomaly(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(failures.len(), want.len(), "{file}: {failures:#?}");
        for (a, (ip, evidence)) in failures.iter().zip(*want) {
            assert_eq!(a.kind, AnomalyKind::StartTlsFailed, "{file}");
            assert_eq!(a.direction, Direction::Outbound, "{file}");
            assert_eq!(a.peer.ip, Some(ip.parse().expect("ip")), "{file}");
            assert!(a.evidence.contains(evidence), "{file}: {}", a.evidence);
        }
    }
}
