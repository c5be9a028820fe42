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
/// as (peer address, TLS?, messages), and whether the parser advises `+incoming_port`. Told
/// apart by pid (+pid, syslog) or remote port (+incoming_port); a merged session would carry
/// the other's messages or transport. With neither, they are merged (the documented limit),
/// and the advice says so.
#[test]
fn concurrent_sessions_from_one_address_stay_apart() {
    use exim_support::{log_lines, run, testdata};
    use sigillo_logs::model::{Direction, Record, Transport};

    type Conn = (&'static str, bool, u32);
    let cases: &[(&str, &[Conn], bool)] = &[
        (
            "concurrent-sessions.log",
            &[
                // Part 1 (+pid): the plain session closes first.
                ("192.0.2.1", false, 1),
                ("192.0.2.1", true, 2),
                // Part 2 (+pid): the plain session is emitted at its close, the TLS one
                // without mail at its `no MAIL` line.
                ("192.0.2.1", false, 1),
                ("192.0.2.1", true, 0),
                // Part 3 (+incoming_port).
                ("192.0.2.2", true, 1),
                ("192.0.2.2", false, 1),
            ],
            false,
        ),
        (
            "concurrent-sessions-syslog.log",
            &[("192.0.2.1", true, 1), ("192.0.2.1", false, 1)],
            false,
        ),
        (
            "concurrent-sessions-merged.log",
            &[("192.0.2.1", true, 2)],
            true,
        ),
    ];
    for (file, want, advised) in cases {
        let text = std::fs::read_to_string(testdata("exim").join(file)).expect("fixture");
        let mut parser = EximParser::new();
        let records = run(&mut parser, &log_lines(&text));
        let got: Vec<(String, bool, u32)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Connection(c) if c.direction == Direction::Inbound => Some((
                    c.peer.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    matches!(c.transport, Transport::Tls(_)),
                    c.messages,
                )),
                _ => None,
            })
            .collect();
        let want: Vec<(String, bool, u32)> = want
            .iter()
            .map(|(ip, tls, n)| (ip.to_string(), *tls, *n))
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
