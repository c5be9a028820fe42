//! Shared helpers for the Postfix tests (included with `#[path]`): a minimal RFC 3164 line
//! splitter (independent of `envelope`), running the parser over a log, and a flat summary
//! of the records that fixtures write their expected results in.
#![allow(dead_code)]

use sigillo_logs::envelope::Line;
use sigillo_logs::model::{AnomalyKind, Direction, MtaParser, Record, Scope, Transport, Trust};
use sigillo_logs::postfix::{PostfixParser, PostfixParserOptions};
use std::collections::BTreeMap;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 22 13:24:13 mx postfix/smtpd[27642]: msg` → a [`Line`] (time: a monotone stand-in,
/// 2026 with 31-day months). `None` for anything else.
pub fn split(raw: &str) -> Option<Line<'_>> {
    let month = MONTHS.iter().position(|m| raw.get(..3) == Some(*m))? as i64;
    let rest = raw.get(4..)?.trim_start();
    let (day, rest) = rest.split_once(' ')?;
    let (hms, rest) = rest.split_once(' ')?;
    let day: i64 = day.parse().ok()?;
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ")?;
    let (program, pid) = match tag.split_once('[') {
        Some((p, pid)) => (p, pid.strip_suffix(']')?.parse().ok()),
        None => (tag, None),
    };
    let time = 1_767_225_600 + ((month * 31 + day - 1) * 24 + h) * 3600 + m * 60 + s;
    Some(Line {
        time,
        host,
        program,
        pid,
        message,
        raw,
    })
}

/// Runs a fresh parser over every line of `log`.
pub fn run(log: &str) -> (Vec<Record>, PostfixParser) {
    run_with(log, PostfixParserOptions::default())
}

pub fn run_with(log: &str, options: PostfixParserOptions) -> (Vec<Record>, PostfixParser) {
    let mut p = PostfixParser::new(options);
    let mut out = Vec::new();
    for raw in log.lines() {
        if let Some(line) = split(raw) {
            p.feed(&line, &mut out);
        }
    }
    p.finish(&mut out);
    (out, p)
}

fn dir(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    }
}

fn transport_key(t: &Transport) -> &'static str {
    match t {
        Transport::Tls(_) => "tls",
        Transport::Plain => "plain",
        Transport::Unknown { .. } => "unknown",
    }
}

fn trust_key(t: Option<Trust>) -> &'static str {
    match t {
        None => "none",
        Some(Trust::Anonymous) => "anonymous",
        Some(Trust::Untrusted) => "untrusted",
        Some(Trust::Trusted) => "trusted",
        Some(Trust::Verified) => "verified",
    }
}

/// Flat counts: `in.msg.tls`, `in.peer.127.0.0.2.plain`, `out.version.TLSv1.3`, … (see
/// testdata/postfix/README.md). Zero counts are absent.
pub fn summary(records: &[Record], parser: &PostfixParser) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let mut add = |k: String, n: u64| *m.entry(k).or_insert(0) += n;
    for r in records {
        match r {
            Record::Message(msg) => {
                let d = dir(msg.direction);
                let t = transport_key(&msg.transport);
                if msg.scope == Scope::Internal {
                    add(format!("{d}.internal.msg"), 1);
                    add(format!("{d}.internal.msg.{t}"), 1);
                    continue;
                }
                add(format!("{d}.msg"), 1);
                add(format!("{d}.msg.{t}"), 1);
                add(format!("{d}.rcpt"), u64::from(msg.recipients));
                if let Some(s) = msg.status {
                    add(format!("{d}.status.{}", format!("{s:?}").to_lowercase()), 1);
                }
                let who = match (&msg.peer.ip, &msg.peer.hostname) {
                    (Some(ip), _) => ip.to_string(),
                    (None, Some(h)) => h.to_string(),
                    (None, None) => "none".into(),
                };
                add(format!("{d}.peer.{who}.{t}"), 1);
                if msg.direction == Direction::Outbound {
                    let domain = msg.recipient_domain.as_deref().unwrap_or("none");
                    add(format!("{d}.domain.{domain}.{t}"), 1);
                    for spanned in msg.spanned_domains.iter().flatten() {
                        add(format!("{d}.spanned.{spanned}.{t}"), 1);
                    }
                    if let Some(port) = msg.port.filter(|p| *p != 25) {
                        add(format!("{d}.port.{port}.{t}"), 1);
                    }
                }
                if let Transport::Tls(info) = &msg.transport {
                    add(format!("{d}.version.{}", info.version), 1);
                    add(format!("{d}.trust.{}", trust_key(info.trust)), 1);
                    if let Some(kx) = &info.key_exchange {
                        add(format!("{d}.kx.{kx}"), 1);
                    }
                }
            }
            Record::Connection(c) => {
                let d = dir(c.direction);
                let scope = if c.scope == Scope::Internal {
                    "internal."
                } else {
                    ""
                };
                add(format!("{d}.{scope}conn"), 1);
                add(
                    format!("{d}.{scope}conn.{}", transport_key(&c.transport)),
                    1,
                );
                add(format!("{d}.{scope}conn.messages"), u64::from(c.messages));
            }
            Record::Anomaly(a) => {
                let k = match a.kind {
                    AnomalyKind::StartTlsFailed => "starttls-failed",
                    AnomalyKind::StrippingTrace => "stripping-trace",
                };
                add(format!("{}.anomaly.{k}", dir(a.direction)), 1);
            }
        }
    }
    add("unparsed".into(), parser.unparsed());
    add("evicted".into(), parser.evicted());
    add("advice".into(), parser.advice().len() as u64);
    m.retain(|_, v| *v != 0);
    m
}

/// `key = value` lines (`#` comments, blank lines allowed).
pub fn parse_expected(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: expected `key = value`: {line}", n + 1));
        let v: u64 = v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("line {}: not a count: {line}", n + 1));
        m.insert(k.trim().to_owned(), v);
    }
    m
}

pub fn render(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}
