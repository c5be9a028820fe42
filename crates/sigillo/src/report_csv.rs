//! `sigillo report --csv`: the per-day, per-hour, per-peer and per-next-hop tables of a report as RFC 4180
//! CSV (header row, CRLF line ends, fields quoted only when they hold `,`, `"`, CR or LF).
//!
//! Columns of [`daily`] and [`hourly`] (one row per period that carried Internet mail):
//!
//! | column | meaning |
//! |---|---|
//! | `period` | `2026-11-22` (daily) or `2026-11-22T13` (hourly), log time |
//! | `inbound_messages` | messages received from Internet peers |
//! | `inbound_tls` | of those, over TLS |
//! | `inbound_share` | `inbound_tls / inbound_messages`, a fraction with 4 decimals (`0.0000` when none) |
//! | `outbound_messages` | delivery transactions to Internet peers (sent) |
//! | `outbound_tls` | of those, over TLS |
//! | `outbound_share` | `outbound_tls / outbound_messages`, as above |
//!
//! Columns of [`peers`] (one row per Internet peer and direction, most messages first):
//!
//! | column | meaning |
//! |---|---|
//! | `direction` | `inbound` or `outbound` |
//! | `hostname` | as logged; empty when the MTA logged `unknown` |
//! | `ip` | the peer's address; empty when not logged |
//! | `domain` | registered domain of the host name, else the IP |
//! | `messages`, `tls_messages`, `plain_messages`, `unknown_messages` | counts (`unknown`: the log does not tell) |
//! | `tls_share` | `tls_messages / messages`, a fraction with 4 decimals |
//! | `versions` | TLS messages per version, sorted by name: `TLSv1.2=3;TLSv1.3=12` |
//! | `first_seen`, `last_seen` | RFC 3339 UTC |
//!
//! Columns of [`next_hops`] (one row per recipient domain of delivered outbound Internet
//! mail, the key of Postfix's `smtp_tls_policy_maps`; most messages first):
//!
//! | column | meaning |
//! |---|---|
//! | `domain` | the recipients' domain, lowercase |
//! | `messages`, `tls_messages`, `trusted_tls_messages`, `plain_messages`, `unknown_messages` | counts (`trusted`: Postfix `Verified`/`Trusted`, Exim `CV=yes`) |
//! | `tls_share` | `tls_messages / messages`, a fraction with 4 decimals |
//! | `first_seen`, `last_seen` | RFC 3339 UTC |
//!
//! Values are written as they came from the logs (no spreadsheet-formula escaping), so the
//! files round-trip exactly; host names are untrusted input, open them with care.

use sigillo_logs::aggregate::{Figures, NextHopFigures, PeerFigures, PeriodFigures};
use sigillo_logs::model::Direction;
use std::fmt::Write as _;

const PERIOD_HEADER: [&str; 7] = [
    "period",
    "inbound_messages",
    "inbound_tls",
    "inbound_share",
    "outbound_messages",
    "outbound_tls",
    "outbound_share",
];

const PEER_HEADER: [&str; 12] = [
    "direction",
    "hostname",
    "ip",
    "domain",
    "messages",
    "tls_messages",
    "plain_messages",
    "unknown_messages",
    "tls_share",
    "versions",
    "first_seen",
    "last_seen",
];

const NEXT_HOP_HEADER: [&str; 9] = [
    "domain",
    "messages",
    "tls_messages",
    "trusted_tls_messages",
    "plain_messages",
    "unknown_messages",
    "tls_share",
    "first_seen",
    "last_seen",
];

/// The per-next-hop (recipient domain) table.
pub fn next_hops(figures: &Figures) -> String {
    let mut out = String::with_capacity(64 + figures.next_hops.len() * 96);
    row(&mut out, NEXT_HOP_HEADER);
    for h in &figures.next_hops {
        row(&mut out, next_hop_fields(h));
    }
    out
}

fn next_hop_fields(h: &NextHopFigures) -> [String; 9] {
    [
        h.domain.clone(),
        h.mail.messages.to_string(),
        h.mail.tls_messages.to_string(),
        h.mail.trusted_tls_messages.to_string(),
        h.mail.plain_messages.to_string(),
        h.mail.unknown_messages.to_string(),
        fraction(h.mail.tls_share),
        h.mail.first_seen.clone(),
        h.mail.last_seen.clone(),
    ]
}

/// The per-day table.
pub fn daily(figures: &Figures) -> String {
    periods(&figures.daily)
}

/// The per-hour table.
pub fn hourly(figures: &Figures) -> String {
    periods(&figures.hourly)
}

/// The per-peer table.
pub fn peers(figures: &Figures) -> String {
    let mut out = String::with_capacity(64 + figures.peers.len() * 128);
    row(&mut out, PEER_HEADER);
    for p in &figures.peers {
        row(&mut out, peer_fields(p));
    }
    out
}

fn periods(list: &[PeriodFigures]) -> String {
    let mut out = String::with_capacity(64 + list.len() * 64);
    row(&mut out, PERIOD_HEADER);
    for p in list {
        row(
            &mut out,
            [
                p.period.clone(),
                p.inbound_messages.to_string(),
                p.inbound_tls.to_string(),
                fraction(p.inbound_share),
                p.outbound_messages.to_string(),
                p.outbound_tls.to_string(),
                fraction(p.outbound_share),
            ],
        );
    }
    out
}

fn peer_fields(p: &PeerFigures) -> [String; 12] {
    let mut versions = String::new();
    for (v, n) in &p.versions {
        if !versions.is_empty() {
            versions.push(';');
        }
        let _ = write!(versions, "{v}={n}");
    }
    [
        match p.direction {
            Direction::Inbound => "inbound".to_owned(),
            Direction::Outbound => "outbound".to_owned(),
        },
        p.hostname.clone().unwrap_or_default(),
        p.ip.clone().unwrap_or_default(),
        p.domain.clone(),
        p.messages.to_string(),
        p.tls_messages.to_string(),
        p.plain_messages.to_string(),
        p.unknown_messages.to_string(),
        fraction(p.tls_share),
        versions,
        p.first_seen.clone(),
        p.last_seen.clone(),
    ]
}

/// A share as a fraction with 4 decimals; anything not finite is written as 0.
fn fraction(share: f64) -> String {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    format!("{share:.4}")
}

fn row<S: AsRef<str>, const N: usize>(out: &mut String, fields: [S; N]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f.as_ref());
    }
    out.push_str("\r\n");
}

/// Appends one field, quoted when RFC 4180 requires it (inner quotes doubled).
fn field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        for c in value.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_html::sample;

    /// A strict RFC 4180 reader for the tests: rows of fields, or an error text.
    fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
        let mut rows = Vec::new();
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = text.chars().peekable();
        let mut at_field_start = true;
        while let Some(c) = chars.next() {
            match c {
                '"' if at_field_start => {
                    loop {
                        match chars.next() {
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                cur.push('"');
                            }
                            Some('"') => break,
                            Some(c) => cur.push(c),
                            None => return Err("unterminated quote".into()),
                        }
                    }
                    at_field_start = false;
                    match chars.peek() {
                        Some(',') | Some('\r') | None => {}
                        other => return Err(format!("text after closing quote: {other:?}")),
                    }
                }
                '"' => return Err("quote inside an unquoted field".into()),
                ',' => {
                    fields.push(std::mem::take(&mut cur));
                    at_field_start = true;
                }
                '\r' => {
                    if chars.next() != Some('\n') {
                        return Err("CR without LF".into());
                    }
                    fields.push(std::mem::take(&mut cur));
                    rows.push(std::mem::take(&mut fields));
                    at_field_start = true;
                }
                '\n' => return Err("bare LF outside quotes".into()),
                c => {
                    cur.push(c);
                    at_field_start = false;
                }
            }
        }
        if !cur.is_empty() || !fields.is_empty() {
            return Err("last row not terminated by CRLF".into());
        }
        Ok(rows)
    }

    #[test]
    fn field_quoting_table() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\rhere", "\"cr\rhere\""),
            ("'single' <b>", "'single' <b>"),
            ("ünïcödé", "ünïcödé"),
        ];
        for (value, want) in cases {
            let mut out = String::new();
            field(&mut out, value);
            assert_eq!(out, want, "{value:?}");
        }
    }

    #[test]
    fn quoting_round_trips() {
        let nasty = [
            "a,b",
            "\"quoted\"",
            "multi\r\nline",
            "\"",
            ",",
            "",
            "=cmd|' /C calc'!A0",
            "x\"y,z\nw",
        ];
        let mut out = String::new();
        row(&mut out, nasty);
        row(&mut out, ["1", "2", "3", "4", "5", "6", "7", "8"]);
        let rows = parse(&out).expect("valid CSV");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], nasty.map(str::to_owned).to_vec());
    }

    #[test]
    fn peers_table_round_trips_hostile_names() {
        let figures = sample::figures();
        let text = peers(&figures);
        let rows = parse(&text).expect("valid CSV");
        assert_eq!(rows[0], PEER_HEADER.map(str::to_owned).to_vec());
        assert_eq!(rows.len(), figures.peers.len() + 1);
        for (r, p) in rows[1..].iter().zip(&figures.peers) {
            assert_eq!(r.len(), PEER_HEADER.len());
            assert_eq!(r[1], p.hostname.clone().unwrap_or_default());
            assert_eq!(r[4], p.messages.to_string());
        }
        let hostile = rows
            .iter()
            .find(|r| r[1].contains("<script>"))
            .expect("the hostile peer is listed");
        assert_eq!(hostile[1], sample::HOSTILE_HOST);
        assert!(
            text.contains("\"evil,\"\"quoted\"\".example\""),
            "comma and quotes force quoting: {text}"
        );
        let versions = rows
            .iter()
            .find(|r| r[1] == "mx1.bigmail.example")
            .map(|r| r[9].clone());
        assert_eq!(versions.as_deref(), Some("TLSv1.2=14;TLSv1.3=70"));
    }

    #[test]
    fn daily_and_hourly_tables() {
        let figures = sample::figures();
        let rows = parse(&daily(&figures)).expect("valid CSV");
        assert_eq!(rows[0], PERIOD_HEADER.map(str::to_owned).to_vec());
        assert_eq!(rows.len(), figures.daily.len() + 1);
        assert_eq!(rows[1][0], figures.daily[0].period);
        let d = &figures.daily[0];
        assert_eq!(
            rows[1][1..4],
            [
                d.inbound_messages.to_string(),
                d.inbound_tls.to_string(),
                format!("{:.4}", d.inbound_share)
            ]
        );
        let rows = parse(&hourly(&figures)).expect("valid CSV");
        assert_eq!(rows.len(), figures.hourly.len() + 1);
        assert_eq!(rows[1][0].len(), "2026-11-22T13".len());
    }

    #[test]
    fn next_hops_table() {
        let figures = sample::figures();
        assert!(
            !figures.next_hops.is_empty(),
            "the sample has outbound mail"
        );
        let rows = parse(&next_hops(&figures)).expect("valid CSV");
        assert_eq!(rows[0], NEXT_HOP_HEADER.map(str::to_owned).to_vec());
        assert_eq!(rows.len(), figures.next_hops.len() + 1);
        for (row, h) in rows[1..].iter().zip(&figures.next_hops) {
            assert_eq!(row[0], h.domain);
            assert_eq!(row[1], h.mail.messages.to_string());
            assert_eq!(row[4], h.mail.plain_messages.to_string());
            assert_eq!(row[6], format!("{:.4}", h.mail.tls_share));
        }
    }

    #[test]
    fn empty_figures_give_header_only() {
        let figures = sample::empty();
        for text in [
            daily(&figures),
            hourly(&figures),
            peers(&figures),
            next_hops(&figures),
        ] {
            let rows = parse(&text).expect("valid CSV");
            assert_eq!(rows.len(), 1, "{text}");
        }
    }

    #[test]
    fn fraction_never_prints_nan() {
        let cases = [
            (0.5, "0.5000"),
            (f64::NAN, "0.0000"),
            (f64::INFINITY, "0.0000"),
            (-1.0, "0.0000"),
            (1.0, "1.0000"),
            (0.12346, "0.1235"),
        ];
        for (v, want) in cases {
            assert_eq!(fraction(v), want, "{v}");
        }
    }
}
