//! The terminal summary of `sigillo report`: shares per direction, TLS versions, the peers
//! to call, downgrades and stripping traces, and what was wrong with the input.

use sigillo_logs::aggregate::DirectionFigures;
use sigillo_logs::analysis::Analysis;
use sigillo_logs::model::Direction;
use std::fmt::Write;

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn direction_line(out: &mut String, name: &str, d: &DirectionFigures) {
    let _ = writeln!(
        out,
        "  {name:<9} {:>9} messages  {:>7} over TLS  ({:>6})  {} plaintext, {} unknown; {} recipients, {} connections ({} TLS){}",
        d.messages,
        d.tls_messages,
        pct(d.tls_share),
        d.plain_messages,
        d.unknown_messages,
        d.recipients,
        d.connections,
        d.tls_connections,
        if d.deferred + d.bounced > 0 {
            format!("; {} deferred, {} bounced attempts", d.deferred, d.bounced)
        } else {
            String::new()
        }
    );
    if !d.tls.versions.is_empty() {
        let versions: Vec<String> = d
            .tls
            .versions
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        let trust: Vec<String> = d
            .tls
            .trust
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "            TLS versions: {}; trust: {}",
            versions.join(", "),
            trust.join(", ")
        );
    }
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

pub fn render(a: &Analysis) -> String {
    let f = &a.figures;
    let mut out = String::new();
    let span = match (&f.first, &f.last) {
        (Some(first), Some(last)) => format!("{first} to {last}"),
        _ => "no mail found".to_owned(),
    };
    let lines: u64 = a.inputs.iter().map(|i| i.lines).sum();
    let _ = writeln!(
        out,
        "Mail over TLS, {span} ({} files, {lines} lines)",
        a.inputs.len()
    );
    let _ = writeln!(out, "Internet mail:");
    direction_line(&mut out, "inbound", &f.inbound);
    direction_line(&mut out, "outbound", &f.outbound);
    let _ = writeln!(
        out,
        "Internal hops (local delivery, pickup, loopback, --internal), not counted above:"
    );
    direction_line(&mut out, "inbound", &f.internal_inbound);
    direction_line(&mut out, "outbound", &f.internal_outbound);
    if f.daily.len() > 1 {
        let _ = writeln!(out, "Per day (inbound share / outbound share):");
        for d in f.daily.iter().rev().take(14).rev() {
            let _ = writeln!(
                out,
                "  {}  in {:>7} {:>6}   out {:>7} {:>6}",
                d.period,
                d.inbound_messages,
                pct(d.inbound_share),
                d.outbound_messages,
                pct(d.outbound_share)
            );
        }
    }
    if !f.top_plaintext.is_empty() {
        let _ = writeln!(
            out,
            "Top plaintext peers (TLS share if they and those above used TLS):"
        );
        for p in &f.top_plaintext {
            let _ = writeln!(
                out,
                "  {:<8} {:<40} {:>7} plaintext  -> {}",
                dir_name(p.direction),
                p.domain,
                p.plain_messages,
                pct(p.tls_share_if_fixed)
            );
        }
    }
    let mut clear: Vec<_> = f
        .next_hops
        .iter()
        .filter(|h| h.mail.plain_messages > 0)
        .collect();
    if !clear.is_empty() {
        clear.sort_by(|a, b| {
            b.mail
                .plain_messages
                .cmp(&a.mail.plain_messages)
                .then_with(|| a.domain.cmp(&b.domain))
        });
        let _ = writeln!(
            out,
            "Recipient domains sent mail in clear (the next hops a TLS policy is keyed by):"
        );
        for h in clear.iter().take(10) {
            let _ = writeln!(
                out,
                "  {:<40} {:>7} of {:>7} in clear  TLS {}",
                h.domain,
                h.mail.plain_messages,
                h.mail.messages,
                pct(h.mail.tls_share)
            );
        }
        if clear.len() > 10 {
            let _ = writeln!(out, "  … {} more in --json and --csv", clear.len() - 10);
        }
        let pinnable = f
            .next_hops
            .iter()
            .filter(|h| h.mail.messages > 0 && h.mail.tls_messages == h.mail.messages)
            .count();
        let _ = writeln!(
            out,
            "  {pinnable} recipient domains took every message over TLS (candidates for `sigillo policy build`)"
        );
    }
    if !f.downgrades.is_empty() {
        let _ = writeln!(out, "Downgrades (peers that used TLS, then plaintext):");
        for d in f.downgrades.iter().take(20) {
            let who = d
                .hostname
                .clone()
                .or_else(|| d.ip.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<8} {who} [{}]: last TLS {} ({}), {} plaintext from {} ({}) to {} ({}){}",
                dir_name(d.direction),
                d.ip.as_deref().unwrap_or("-"),
                d.last_tls,
                d.last_tls_id,
                d.plain_messages,
                d.first_plain,
                d.first_plain_id,
                d.last_plain,
                d.last_plain_id,
                if d.tls_resumed {
                    ", then TLS again"
                } else {
                    ", still plaintext"
                }
            );
        }
        if f.downgrades.len() > 20 {
            let _ = writeln!(out, "  … {} more in --json", f.downgrades.len() - 20);
        }
    }
    for (title, list) in [
        (
            "Stripping traces (a middlebox rewriting STARTTLS?)",
            &f.stripping_traces,
        ),
        ("Failed STARTTLS", &f.starttls_failures),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}: {}", list.len());
        for t in list.iter().take(10) {
            let _ = writeln!(
                out,
                "  {}{}\n      | {}",
                t.time,
                if t.peer_uses_tls {
                    " (peer uses TLS otherwise)"
                } else {
                    ""
                },
                t.evidence
            );
        }
    }
    for a in &a.advice {
        let _ = writeln!(out, "Advice: {a}");
    }
    if a.unparsed_lines > 0 || a.evicted > 0 {
        let _ = writeln!(
            out,
            "Note: {} MTA lines not understood, {} entries dropped at a state cap (open sessions, queue entries, Exim STARTTLS failure lines)",
            a.unparsed_lines, a.evicted
        );
    }
    out
}

/// Problems with the input, for stderr: one line per source with bad lines, and the first
/// errors; and a note on each source that holds lines of more than one MTA.
pub fn input_problems(a: &Analysis) -> String {
    let mut out = String::new();
    for e in &a.input_errors {
        let _ = writeln!(out, "sigillo report: {e}");
    }
    for i in &a.inputs {
        if !i.other_mta_lines.is_empty() {
            let others: Vec<String> = (i.other_mta_lines.iter())
                .map(|(mta, n)| format!("{n} {mta}"))
                .collect();
            let _ = writeln!(
                out,
                "sigillo report: {}: a {} log with lines of another MTA in it ({}), each read as its MTA's",
                i.source,
                i.format.unwrap_or("?"),
                others.join(", ")
            );
        }
        if i.bad_lines + i.skipped_long_lines == 0 && i.errors.is_empty() {
            continue;
        }
        if i.bad_lines + i.skipped_long_lines > 0 {
            let _ = writeln!(
                out,
                "sigillo report: {}: {} bad lines, {} over-long lines skipped (of {})",
                i.source, i.bad_lines, i.skipped_long_lines, i.lines
            );
        }
        for e in i.errors.iter().take(5) {
            let _ = writeln!(out, "sigillo report: {e}");
        }
        let more = i.errors.len().saturating_sub(5) as u64 + i.errors_dropped;
        if more > 0 {
            let _ = writeln!(out, "  … {more} more");
        }
    }
    out
}
