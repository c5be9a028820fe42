//! The terminal report: a table per target, a short policy section for domains, findings
//! with their evidence, and a summary for several targets. Colour only when asked for (on
//! a terminal, by default).
//!
//! A host's error is cut to [`STATUS_ERROR_CHARS`] in the table's `status` column, so the
//! table stays readable; each error cut there is given in full below the table.

use comfy_table::{Cell, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use sigillo_check::policy::sigillo_policy::dane::CertUsage;
use sigillo_check::policy_report::{LOOKUP_FAILED, PolicyReport, PolicyStatus, TlsaStatus};
use sigillo_check::summary::Summary;
use sigillo_check::{HostReport, Severity, TargetReport, Verdict};
use std::fmt::Write;

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn verdict_code(v: Verdict) -> &'static str {
    match v {
        Verdict::Encrypted => "1;32",
        Verdict::Plaintext => "1;33",
        Verdict::Stripped => "1;31",
        Verdict::Inconclusive => "1;35",
        Verdict::Error => "1;31",
    }
}

fn severity_code(s: Severity) -> &'static str {
    match s {
        Severity::Low => "36",
        Severity::Medium => "33",
        Severity::High => "1;33",
        Severity::Critical => "1;31",
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// Most characters of a host's error in the table's `status` column.
const STATUS_ERROR_CHARS: usize = 60;

/// `text` with its control characters escaped as Rust does (`\u{1b}`, `\r`): what a server
/// sent (its banner, its replies, in cells, errors, evidence and the transcript) reaches the
/// terminal as text, never as a terminal command (an escape sequence, a carriage return).
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A character a terminal acts on or that changes how the text around it reads: controls
/// (C0, DEL, C1), and the Unicode marks that reorder or break lines (bidi embeddings,
/// overrides and isolates, the Arabic letter mark, LRM/RLM, the line and paragraph
/// separators), with which a server's banner could show text in another order than sent.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// One target's report.
pub fn target(r: &TargetReport, color: bool, transcript: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {}  ({} host{}, {:.0} ms)",
        paint(&shown(&r.target), "1", color),
        paint(r.verdict.as_str(), verdict_code(r.verdict), color),
        r.hosts.len(),
        if r.hosts.len() == 1 { "" } else { "s" },
        r.duration_ms
    );
    if r.null_mx {
        let _ = writeln!(out, "  null MX (RFC 7505): the domain accepts no mail");
    } else if r.implicit_mx {
        let _ = writeln!(
            out,
            "  no MX record: its own address is used (RFC 5321 §5.1)"
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error: {}", shown(e));
    }
    if !r.hosts.is_empty() {
        // The errors cut in the table, in full: `address (MX): status: error`.
        let mut cut = Vec::new();
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header([
                "MX",
                "address",
                "banner",
                "STARTTLS",
                "TLS",
                "cipher / group",
                "certificate",
                "status",
            ]);
        for h in &r.hosts {
            let mx = match h.preference {
                Some(p) => format!("{p} {}", shown(&h.mx)),
                None => shown(&h.mx).into_owned(),
            };
            let address = host_address(h);
            let starttls = match (&h.tls, h.starttls.offered) {
                (Some(_), false) => "implicit TLS".to_owned(),
                (_, true) => match &h.starttls.reply {
                    Some(reply) if !reply.starts_with("220") => {
                        format!("offered, refused: {}", truncate(&shown(reply), 30))
                    }
                    _ => "offered".to_owned(),
                },
                (None, false) => "no".to_owned(),
            };
            let (version, cipher, cert) = match &h.tls {
                Some(t) => (
                    t.version.clone(),
                    format!(
                        "{}{}",
                        t.cipher,
                        t.key_exchange
                            .as_ref()
                            .map(|k| format!(" / {k}"))
                            .unwrap_or_default()
                    ),
                    if t.certificate.verified {
                        "verified".to_owned()
                    } else {
                        t.certificate
                            .error
                            .as_deref()
                            .map_or_else(|| "not verified".to_owned(), |e| shown(e).into_owned())
                    },
                ),
                None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            let status = match &h.error {
                Some(e) if h.status != Verdict::Encrypted => {
                    let e = shown(e);
                    let short = truncate(&e, STATUS_ERROR_CHARS);
                    if short != *e {
                        let who = if h.mx == h.address {
                            address.clone()
                        } else {
                            format!("{address} ({})", shown(&h.mx))
                        };
                        cut.push(format!("{who}: {}: {e}", h.status.as_str()));
                    }
                    format!("{}: {short}", h.status.as_str())
                }
                _ => h.status.as_str().to_owned(),
            };
            table.add_row([
                Cell::new(mx),
                Cell::new(address),
                Cell::new(truncate(&shown(h.banner.as_deref().unwrap_or("-")), 40)),
                Cell::new(starttls),
                Cell::new(version),
                Cell::new(cipher),
                Cell::new(cert),
                Cell::new(status),
            ]);
        }
        let _ = writeln!(out, "{table}");
        for line in &cut {
            let _ = writeln!(out, "  {line}");
        }
    }
    if let Some(p) = &r.policy {
        out.push_str(&policy(p, color));
    }
    for f in &r.findings {
        let place = match (&f.mx, &f.address) {
            (Some(mx), Some(addr)) if mx != addr => format!(" [{} {}]", shown(mx), shown(addr)),
            (Some(mx), _) => format!(" [{}]", shown(mx)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} {}{}: {}",
            paint(severity_name(f.severity), severity_code(f.severity), color),
            f.id,
            place,
            shown(&f.message)
        );
        for line in &f.evidence {
            let _ = writeln!(out, "      | {}", shown(line));
        }
    }
    if transcript {
        for h in &r.hosts {
            let _ = writeln!(
                out,
                "  session with {} ({}:{}):",
                shown(&h.mx),
                h.address,
                h.port
            );
            for line in &h.transcript {
                let _ = writeln!(out, "      {}", shown(line));
            }
        }
    }
    out.push('\n');
    out
}

/// `192.0.2.1:25`, `[2001:db8::1]:25`.
fn host_address(h: &HostReport) -> String {
    if h.address.contains(':') {
        format!("[{}]:{}", h.address, h.port)
    } else {
        format!("{}:{}", h.address, h.port)
    }
}

fn policy_status_code(s: PolicyStatus) -> &'static str {
    match s {
        PolicyStatus::Enforced => "1;32",
        PolicyStatus::Testing | PolicyStatus::Unknown => "1;35",
        PolicyStatus::Failing => "1;31",
        PolicyStatus::None => "1;33",
    }
}

/// A TXT record's line: the record, why there is no valid one, or why it is not known.
/// A TXT record holds any bytes its publisher chose: control characters are escaped
/// ([`shown`]).
fn record_line(record: Option<&String>, error: Option<&String>) -> String {
    match (record, error) {
        (Some(record), _) => shown(record).into_owned(),
        (None, Some(error)) if error.starts_with(LOOKUP_FAILED) => shown(error).into_owned(),
        (None, Some(error)) => format!("no valid record: {}", shown(error)),
        (None, None) => "none".to_owned(),
    }
}

/// The short "Policy" section: MTA-STS, TLS-RPT, DNSSEC of the MX RRset, DANE.
fn policy(p: &PolicyReport, color: bool) -> String {
    let mut out = String::new();
    let by = match (p.status, p.enforced_by.len()) {
        (_, 0) => String::new(),
        (PolicyStatus::Enforced, _) => format!(" (by {})", p.enforced_by.join(" and ")),
        // Failing or unknown as a whole, though one mechanism passes.
        (_, 1) => format!(" ({} passes)", p.enforced_by.join(" and ")),
        _ => format!(" ({} pass)", p.enforced_by.join(" and ")),
    };
    let _ = writeln!(
        out,
        "  Policy: {}{by}",
        paint(p.status.as_str(), policy_status_code(p.status), color)
    );
    let sts = &p.mta_sts;
    let record = record_line(sts.record.as_ref(), sts.record_error.as_ref());
    let _ = writeln!(out, "    MTA-STS  {record}");
    if let Some(policy) = &sts.policy {
        let _ = writeln!(
            out,
            "             policy: mode {}, max_age {}, mx {}",
            policy.mode,
            policy.max_age,
            if policy.mx.is_empty() {
                "-".to_owned()
            } else {
                shown(&policy.mx.join(" ")).into_owned()
            }
        );
    }
    if let Some(error) = &sts.fetch_error {
        let _ = writeln!(
            out,
            "             {}: {}",
            sts.fetch_result_type.unwrap_or("fetch failed"),
            shown(error)
        );
    }
    for mx in &sts.mx {
        let judged = |v: Option<bool>, yes: &str, no: &str| match v {
            Some(true) => yes.to_owned(),
            Some(false) => no.to_owned(),
            None => "not judged".to_owned(),
        };
        let _ = writeln!(
            out,
            "             {}: {}, TLS {}, certificate {}",
            shown(&mx.host),
            if mx.matches_policy {
                "matches"
            } else {
                "matches no mx pattern"
            },
            judged(mx.tls, "yes", "no"),
            judged(mx.certificate_valid, "valid", "not valid"),
        );
    }
    let tlsrpt = record_line(p.tlsrpt.record.as_ref(), p.tlsrpt.error.as_ref());
    let _ = writeln!(out, "    TLS-RPT  {tlsrpt}");
    let _ = writeln!(
        out,
        "    DNSSEC   MX RRset {} ({})",
        p.dnssec.mx.as_str(),
        shown(&p.dnssec.detail)
    );
    let quiet = !p.dane.applies && p.dane.hosts.iter().all(|h| h.status == TlsaStatus::None);
    if quiet {
        let _ = writeln!(
            out,
            "    DANE     does not apply (no DNSSEC-validated TLSA records)"
        );
    }
    for (i, host) in p.dane.hosts.iter().enumerate().filter(|_| !quiet) {
        let label = if i == 0 { "DANE    " } else { "        " };
        let records = if host.tlsa.is_empty() {
            String::new()
        } else {
            let records: Vec<String> = host.tlsa.iter().map(|t| truncate(&shown(t), 24)).collect();
            format!(" {}", records.join(", "))
        };
        let _ = writeln!(
            out,
            "    {label} {}: TLSA {}{records}",
            shown(&host.mx),
            host.status.as_str()
        );
        for a in &host.addresses {
            let how = match (a.usage, a.certificate) {
                (Some(CertUsage::DaneTa), Some(index)) => {
                    format!(" (DANE-TA, certificate {index})")
                }
                (Some(CertUsage::DaneEe), _) => " (DANE-EE)".to_owned(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "               {}: {}{how}",
                a.address,
                a.result.as_str()
            );
        }
    }
    out
}

/// The totals after several targets.
pub fn summary(s: &Summary, color: bool) -> String {
    let pct = |part, whole| format!("{part}/{whole} ({:.1}%)", Summary::percent(part, whole));
    let mut out = String::new();
    let _ = writeln!(out, "{}", paint("Summary", "1", color));
    let verdicts: Vec<String> = s.verdicts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "  targets: {} ({})", s.targets, verdicts.join(", "));
    let _ = writeln!(
        out,
        "  targets with STARTTLS on every host: {}",
        pct(s.targets_starttls, s.targets)
    );
    let _ = writeln!(
        out,
        "  targets with valid certificates:     {}",
        pct(s.targets_valid_certificate, s.targets)
    );
    let _ = writeln!(
        out,
        "  hosts with STARTTLS:                 {}",
        pct(s.hosts_starttls, s.hosts)
    );
    let _ = writeln!(
        out,
        "  hosts with a valid certificate:      {}",
        pct(s.hosts_valid_certificate, s.hosts)
    );
    for (version, n) in &s.tls_versions {
        let _ = writeln!(out, "  hosts on {version}: {}", pct(*n, s.hosts));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigillo_check::Finding;
    use sigillo_check::report::StartTlsReport;

    fn host(mx: &str, address: &str, status: Verdict, error: Option<&str>) -> HostReport {
        HostReport {
            mx: mx.into(),
            preference: None,
            address: address.into(),
            port: 25,
            status,
            connect_ms: None,
            greeting_ms: None,
            total_ms: 0.0,
            banner: None,
            banner_lines: Vec::new(),
            extensions: Vec::new(),
            helo_fallback: false,
            starttls: StartTlsReport {
                offered: false,
                attempted: false,
                reply: None,
            },
            tls: None,
            error: error.map(str::to_owned),
            failure: None,
            transcript: Vec::new(),
        }
    }

    fn report(hosts: Vec<HostReport>) -> TargetReport {
        TargetReport {
            target: "example.net".into(),
            kind: "domain",
            port: 25,
            verdict: Verdict::Inconclusive,
            mx: Vec::new(),
            implicit_mx: false,
            null_mx: false,
            hosts,
            findings: Vec::new(),
            policy: None,
            error: None,
            started: "2026-01-01T00:00:00Z".into(),
            duration_ms: 0.0,
        }
    }

    /// An error longer than the table's column is cut there and given in full below the
    /// table, once; a short one is only in the table; an encrypted host's is in neither.
    #[test]
    fn cut_errors_are_given_in_full_below_the_table() {
        let partial = "timed out waiting for the greeting reply; partial reply received: \
                       \"220 ********************************\"";
        let closed = "connection closed while waiting for the EHLO reply; partial reply \
                      received: \"250-mx.example.net\\r\\n250-PIPELINING\\r\\n\"";
        let short = "connection refused";
        let quit = "timed out waiting for the QUIT reply, long after all that matters was seen";
        // (host, the line below the table for it, if any)
        let cases = [
            (
                host(
                    "192.0.2.1",
                    "192.0.2.1",
                    Verdict::Inconclusive,
                    Some(partial),
                ),
                Some(format!("  192.0.2.1:25: inconclusive: {partial}\n")),
            ),
            (
                host(
                    "mx.example.net",
                    "2001:db8::1",
                    Verdict::Stripped,
                    Some(closed),
                ),
                Some(format!(
                    "  [2001:db8::1]:25 (mx.example.net): stripped: {closed}\n"
                )),
            ),
            (
                host("mx.example.net", "192.0.2.2", Verdict::Error, Some(short)),
                None,
            ),
            (
                host(
                    "mx.example.net",
                    "192.0.2.3",
                    Verdict::Encrypted,
                    Some(quit),
                ),
                None,
            ),
        ];
        for (h, below) in &cases {
            let out = target(&report(vec![h.clone()]), false, false);
            let error = h.error.as_deref().unwrap_or_default();
            let after_table = out.rsplit_once("┘\n").map_or("", |(_, rest)| rest);
            match below {
                Some(line) => {
                    assert!(after_table.starts_with(line.as_str()), "{out}");
                    assert_eq!(out.matches(error).count(), 1, "only below: {out}");
                    let cut = truncate(error, STATUS_ERROR_CHARS);
                    assert!(cut.ends_with('…') && out.contains(&cut), "{out}");
                }
                None if h.status == Verdict::Encrypted => {
                    assert!(!out.contains(error), "{out}");
                    assert_eq!(after_table, "\n", "{out}");
                }
                None => {
                    assert_eq!(out.matches(error).count(), 1, "only in the table: {out}");
                    assert_eq!(after_table, "\n", "{out}");
                }
            }
        }
        // All at once: the lines below in the table's order.
        let hosts = cases.iter().map(|(h, _)| h.clone()).collect();
        let out = target(&report(hosts), false, false);
        let below: String = cases.iter().filter_map(|(_, b)| b.clone()).collect();
        assert!(out.ends_with(&format!("┘\n{below}\n")), "{out}");
    }

    /// What a hostile server (or its middlebox) sends reaches the report as it came: a
    /// terminal title change, a screen clear, a bell, a carriage return over the line.
    const HOSTILE: &str = "\x1b]0;pwned\x07 \x1b[2J\r\x08\x7f\u{9b}\u{202e}\u{2066}\u{2028}";

    fn hostile_host() -> HostReport {
        HostReport {
            mx: "mx.example.net".into(),
            preference: Some(10),
            address: "192.0.2.1".into(),
            port: 25,
            status: Verdict::Stripped,
            connect_ms: None,
            greeting_ms: None,
            total_ms: 0.0,
            banner: Some(format!("220 {HOSTILE}")),
            banner_lines: vec![format!("220 {HOSTILE}")],
            extensions: Vec::new(),
            helo_fallback: false,
            starttls: StartTlsReport {
                offered: true,
                attempted: true,
                reply: Some(format!("502 {HOSTILE}")),
            },
            tls: None,
            error: Some(format!(
                "an error from somewhere that kept the server's words: {HOSTILE} and more"
            )),
            failure: None,
            transcript: vec![format!("S: 220 {HOSTILE}")],
        }
    }

    /// Server-supplied text in the terminal report (table cells, the errors in full below
    /// it, findings' evidence, the transcript) has its control characters escaped, with and
    /// without colour: only the report's own colour codes and line ends reach the terminal.
    #[test]
    fn server_text_reaches_the_terminal_escaped() {
        let report = TargetReport {
            target: "example.net".into(),
            kind: "domain",
            port: 25,
            verdict: Verdict::Stripped,
            mx: Vec::new(),
            implicit_mx: false,
            null_mx: false,
            hosts: vec![hostile_host()],
            findings: vec![Finding {
                id: "starttls-stripped",
                kind: "starttls-rejected",
                severity: Severity::Critical,
                mx: Some("mx.example.net".into()),
                address: Some("192.0.2.1".into()),
                port: Some(25),
                message: format!("answered {HOSTILE}"),
                evidence: vec![format!("S: 502 {HOSTILE}")],
            }],
            policy: None,
            error: Some(format!("target error {HOSTILE}")),
            started: "2026-01-01T00:00:00Z".into(),
            duration_ms: 0.0,
        };
        for color in [false, true] {
            let out = target(&report, color, true);
            let bad = raw_hidden(&out);
            assert!(bad.is_empty(), "colour {color}: {bad:?} in\n{out}");
            // What was escaped is still there to read.
            assert!(
                out.contains("\\u{1b}]0;pwned\\u{7}"),
                "colour {color}:\n{out}"
            );
        }
    }
    /// The characters [`hidden`] flags that `out` holds raw, once our own colour codes
    /// (`ESC [ digits ; m`) and line ends are taken out.
    fn raw_hidden(out: &str) -> Vec<char> {
        let mut rest = out.to_owned();
        for code in ["1", "1;31", "1;32", "1;33", "1;35", "0"] {
            rest = rest.replace(&format!("\x1b[{code}m"), "");
        }
        rest.chars().filter(|&c| hidden(c) && c != '\n').collect()
    }

    /// TXT records, a fetch error and names in the policy section come from DNS and the
    /// policy host: their control characters are escaped too.
    #[test]
    fn policy_text_reaches_the_terminal_escaped() {
        use sigillo_check::policy_report::{
            DnssecReport, MtaStsReport, MxDnssec, StsMxReport, TlsRptReport,
        };
        let policy = PolicyReport {
            status: PolicyStatus::Failing,
            enforced_by: Vec::new(),
            mta_sts: MtaStsReport {
                record: Some(format!("v=STSv1; id={HOSTILE}")),
                fetch_error: Some(format!("fetch {HOSTILE}")),
                fetch_result_type: Some("sts-policy-fetch-error"),
                mx: vec![StsMxReport {
                    host: format!("mx{HOSTILE}"),
                    matches_policy: false,
                    tls: None,
                    certificate_valid: None,
                }],
                ..MtaStsReport::default()
            },
            tlsrpt: TlsRptReport {
                error: Some(format!("bad {HOSTILE}")),
                ..TlsRptReport::default()
            },
            dnssec: DnssecReport {
                mx: MxDnssec::Bogus,
                detail: format!("detail {HOSTILE}"),
            },
            dane: sigillo_check::policy_report::DaneReport::default(),
        };
        for color in [false, true] {
            let out = super::policy(&policy, color);
            let bad = raw_hidden(&out);
            assert!(bad.is_empty(), "colour {color}: {bad:?} in\n{out}");
            assert_eq!(
                out.matches("\\u{1b}]0;pwned\\u{7}").count(),
                5,
                "colour {color}:\n{out}"
            );
        }
    }
}
