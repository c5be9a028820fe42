//! Shared by the Exim, Sendmail and OpenSMTPD parser tests: feed a fixture through the
//! envelope and a parser, and reduce the records to a flat `key value` summary that the
//! fixture's `.expect` file writes down.
#![allow(dead_code)]

use sigillo_logs::envelope::{Envelope, Line, YearGuess};
use sigillo_logs::model::{Direction, MtaParser, Record, Scope, Transport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn testdata(area: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(area)
}

/// The log lines of a fixture: `#` comment lines and blank lines are not log lines.
pub fn log_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

/// Runs every line through the envelope (year 2026) and the parser.
pub fn run(parser: &mut dyn MtaParser, lines: &[&str]) -> Vec<Record> {
    let mut env = Envelope::new(YearGuess::forced(2026));
    let mut out = Vec::new();
    for raw in lines {
        let line = env
            .parse(raw)
            .unwrap_or_else(|e| panic!("envelope rejects fixture line {raw:?}: {e}"));
        parser.feed(&line, &mut out);
    }
    parser.finish(&mut out);
    out
}

fn dir(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    }
}

fn bump(m: &mut BTreeMap<String, u64>, k: String, n: u64) {
    if n > 0 {
        *m.entry(k).or_default() += n;
    }
}

/// The flat summary: counts per direction, TLS, version, trust, key exchange, status, peer,
/// connection and anomaly kind, plus the parser's unparsed and evicted counters.
pub fn summarize(records: &[Record], parser: &dyn MtaParser) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in records {
        match r {
            Record::Message(msg) => {
                let d = dir(msg.direction);
                if msg.scope == Scope::Internal {
                    bump(&mut m, format!("{d}.internal.messages"), 1);
                    bump(
                        &mut m,
                        format!("{d}.internal.recipients"),
                        msg.recipients.into(),
                    );
                    continue;
                }
                bump(&mut m, format!("{d}.messages"), 1);
                bump(&mut m, format!("{d}.recipients"), msg.recipients.into());
                if let Some(s) = msg.status {
                    bump(&mut m, format!("{d}.status.{s:?}").to_lowercase(), 1);
                }
                let peer = msg
                    .peer
                    .ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "noip".into());
                bump(&mut m, format!("peer.{peer}.{d}.messages"), 1);
                if msg.direction == Direction::Outbound {
                    let domain = msg.recipient_domain.as_deref().unwrap_or("none");
                    bump(&mut m, format!("{d}.domain.{domain}"), 1);
                    for spanned in msg.spanned_domains.iter().flatten() {
                        bump(&mut m, format!("{d}.spanned.{spanned}"), 1);
                    }
                }
                if let Some(h) = &msg.peer.hostname {
                    bump(&mut m, format!("peer.{peer}.{d}.name.{h}"), 1);
                }
                match &msg.transport {
                    Transport::Tls(t) => {
                        bump(&mut m, format!("{d}.tls"), 1);
                        bump(&mut m, format!("peer.{peer}.{d}.tls"), 1);
                        bump(&mut m, format!("{d}.version.{}", t.version), 1);
                        if let Some(kx) = &t.key_exchange {
                            bump(&mut m, format!("{d}.kx.{kx}"), 1);
                        }
                        if let Some(tr) = t.trust {
                            bump(&mut m, format!("{d}.trust.{tr:?}").to_lowercase(), 1);
                        }
                        if let Some(b) = t.bits {
                            bump(&mut m, format!("{d}.bits.{b}"), 1);
                        }
                    }
                    Transport::Plain => bump(&mut m, format!("{d}.plain"), 1),
                    Transport::Unknown { .. } => bump(&mut m, format!("{d}.unknown"), 1),
                }
                if let Some(size) = msg.size {
                    bump(&mut m, format!("{d}.bytes"), size);
                }
            }
            Record::Connection(c) => {
                let d = dir(c.direction);
                let scope = if c.scope == Scope::Internal {
                    ".internal"
                } else {
                    ""
                };
                bump(&mut m, format!("conn.{d}{scope}"), 1);
                bump(
                    &mut m,
                    format!("conn.{d}{scope}.messages"),
                    c.messages.into(),
                );
                let kind = match &c.transport {
                    Transport::Tls(_) => "tls",
                    Transport::Plain => "plain",
                    Transport::Unknown { .. } => "unknown",
                };
                bump(&mut m, format!("conn.{d}{scope}.{kind}"), 1);
            }
            Record::Anomaly(a) => {
                let kind = serde_json::to_value(a.kind).expect("kind serializes");
                let peer = a
                    .peer
                    .ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "noip".into());
                bump(
                    &mut m,
                    format!(
                        "anomaly.{}.{}.{peer}",
                        kind.as_str().unwrap_or("?"),
                        dir(a.direction)
                    ),
                    1,
                );
            }
        }
    }
    bump(&mut m, "unparsed".into(), parser.unparsed());
    bump(&mut m, "evicted".into(), parser.evicted());
    m
}

/// Reads an `.expect` file: `key value` lines, `#` comments.
pub fn read_expect(path: &Path) -> BTreeMap<String, u64> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut m = BTreeMap::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let (k, v) = l
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("{}:{}: want `key value`", path.display(), n + 1));
        let v: u64 = v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}:{}: bad number", path.display(), n + 1));
        m.insert(k.to_string(), v);
    }
    m
}

/// A readable diff of two summaries, empty when equal.
pub fn diff(want: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>) -> String {
    let mut s = String::new();
    for k in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        let (w, g) = (want.get(k), got.get(k));
        if w != g {
            s.push_str(&format!("  {k}: want {w:?}, got {g:?}\n"));
        }
    }
    s
}

/// Checks every `NAME.log` in `area` against `NAME.expect`; returns how many were checked.
pub fn check_fixtures(area: &str, make: &dyn Fn() -> Box<dyn MtaParser>) -> usize {
    let dir = testdata(area);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut failures = String::new();
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("fixture readable");
        let mut parser = make();
        let records = run(parser.as_mut(), &log_lines(&text));
        let got = summarize(&records, parser.as_ref());
        let want = read_expect(&log.with_extension("expect"));
        let d = diff(&want, &got);
        if !d.is_empty() {
            failures.push_str(&format!("{}:\n{d}", log.display()));
        }
    }
    assert!(failures.is_empty(), "fixture summaries differ:\n{failures}");
    logs.len()
}

/// Feeds every truncation of every fixture line (of the raw line, through the envelope, and
/// of the message alone) to one parser: it must never panic.
pub fn truncations_never_panic(area: &str, make: &dyn Fn() -> Box<dyn MtaParser>) -> usize {
    let dir = testdata(area);
    let mut fed = 0;
    let mut parser = make();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("testdata dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("fixture");
        let mut env = Envelope::new(YearGuess::forced(2026));
        for raw in log_lines(&text) {
            let full = env.parse(raw).expect("fixture line parses");
            for (cut, _) in raw.char_indices().chain([(raw.len(), ' ')]) {
                if let Ok(line) = env.parse(&raw[..cut]) {
                    parser.feed(&line, &mut out);
                    fed += 1;
                }
            }
            let msg = full.message;
            for (cut, _) in msg.char_indices().chain([(msg.len(), ' ')]) {
                let line = Line {
                    message: &msg[..cut],
                    ..full
                };
                parser.feed(&line, &mut out);
                // and the tail, as if the start were lost
                let line = Line {
                    message: &msg[cut..],
                    ..full
                };
                parser.feed(&line, &mut out);
                fed += 2;
            }
            if out.len() > 10_000 {
                out.clear();
            }
        }
    }
    parser.finish(&mut out);
    fed
}
