//! `sigillo report --html`: one self-contained HTML page (inline CSS, hand-made inline SVG
//! charts, no script and no external resource) that shows the figures of a report.
//!
//! Everything that comes from the logs (host names, log lines, cipher names) is untrusted and
//! escaped. Shares are clamped to 0–100 % and never divided by zero, so empty or odd
//! [`Figures`] still give a valid page.

use sigillo_logs::aggregate::{
    AnomalyFigure, DirectionFigures, Downgrade, Figures, PeriodFigures, PlaintextPeer,
};
use sigillo_logs::model::Direction;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Appends formatted text to a `String` (which cannot fail).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// What the page says about the run, besides the figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HtmlMeta {
    /// Page title and heading.
    pub title: String,
    /// When the report was made, as text (`2026-11-22T13:24:13Z`).
    pub generated_at: String,
    /// The files read, with their line counts.
    pub inputs: Vec<InputSummary>,
    /// Advice from the parsers (a setting to change for precise figures), shown as notes.
    pub advice: Vec<String>,
    /// Problems with the inputs as a whole (a path not found or not readable, a file skipped
    /// or read out of time order), shown under the inputs.
    pub input_notes: Vec<String>,
}

/// One input file and how much of it could be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputSummary {
    /// As given on the command line (`-` for stdin).
    pub path: String,
    pub lines: u64,
    /// Lines skipped as unreadable (garbage, binary, truncated).
    pub bad_lines: u64,
}

const INBOUND: &str = "#2563eb";
const OUTBOUND: &str = "#e8710a";
const INBOUND_LIGHT: &str = "#a9c1f5";
const OUTBOUND_LIGHT: &str = "#f6c593";
const PLAIN: &str = "#dc2626";
const UNKNOWN: &str = "#9ca3af";
const GOAL: f64 = 0.8;
/// Rows of the per-peer table, and of each evidence table.
const PEER_ROWS: usize = 50;
const EVIDENCE_ROWS: usize = 200;
const TOP_PLAIN_ROWS: usize = 15;
const TOP_BARS: usize = 8;

/// Renders the whole page.
pub fn render(figures: &Figures, meta: &HtmlMeta) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = if meta.title.trim().is_empty() {
        "sigillo report"
    } else {
        meta.title.as_str()
    };
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light\">\n\
         <meta name=\"generator\" content=\"sigillo report\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(title)
    );
    header(&mut out, figures, meta, title);
    let any_mail = total_messages(figures) > 0;
    cards(&mut out, figures);
    if !meta.advice.is_empty() {
        out.push_str("<section class=\"note\"><h2>The logs lack detail</h2><ul>");
        for a in &meta.advice {
            w!(out, "<li>{}</li>", esc(a));
        }
        out.push_str("</ul></section>\n");
    }
    if any_mail {
        share_over_time(&mut out, figures);
        tls_breakdown(&mut out, figures);
        kx_and_ciphers(&mut out, figures);
        top_plaintext(&mut out, figures);
    } else {
        empty_state(&mut out, figures, meta);
    }
    downgrades(&mut out, &figures.downgrades);
    anomalies(
        &mut out,
        "stripping",
        "STARTTLS stripping traces",
        "Sessions that look like a middlebox removed or rewrote STARTTLS (Postfix \
         <code>unknown=0/1</code> without <code>starttls</code>, Exim's \
         <code>SMTP syntax error in \"XXXXXXXA\"</code>).",
        &figures.stripping_traces,
    );
    anomalies(
        &mut out,
        "starttls-failures",
        "Failed STARTTLS",
        "STARTTLS attempts that did not end in a TLS session.",
        &figures.starttls_failures,
    );
    if any_mail {
        peers_table(&mut out, figures);
    }
    inputs(&mut out, figures, meta);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn total_messages(f: &Figures) -> u64 {
    f.inbound
        .messages
        .saturating_add(f.outbound.messages)
        .saturating_add(f.internal_inbound.messages)
        .saturating_add(f.internal_outbound.messages)
}

fn header(out: &mut String, f: &Figures, meta: &HtmlMeta, title: &str) {
    w!(out, "<header><h1>{}</h1><p class=\"sub\">", esc(title));
    match (&f.first, &f.last) {
        (Some(first), Some(last)) => w!(
            out,
            "Mail from <b>{}</b> to <b>{}</b>",
            esc(&show_time(first)),
            esc(&show_time(last))
        ),
        _ => out.push_str("No Internet mail in these logs"),
    }
    let files = meta.inputs.len();
    let lines: u64 = meta.inputs.iter().map(|i| i.lines).sum();
    w!(
        out,
        " · {} {} · {} lines",
        num(files as u64),
        if files == 1 { "file" } else { "files" },
        num(lines)
    );
    if !meta.generated_at.is_empty() {
        w!(out, " · generated {}", esc(&show_time(&meta.generated_at)));
    }
    out.push_str("</p></header>\n");
}

fn cards(out: &mut String, f: &Figures) {
    out.push_str("<section class=\"cards\">\n");
    direction_card(out, "inbound", "Inbound TLS", "received from", &f.inbound);
    direction_card(out, "outbound", "Outbound TLS", "sent to", &f.outbound);
    let internal = f
        .internal_inbound
        .messages
        .saturating_add(f.internal_outbound.messages);
    w!(
        out,
        "<div class=\"card\" id=\"card-internal\"><div class=\"label\">Internal hops</div>\
         <div class=\"big neutral\">{}</div><div class=\"of\">local and internal messages, \
         not counted as Internet mail</div><dl>\
         <dt title=\"pickup, loopback, --internal ranges\">Received</dt><dd>{}</dd>\
         <dt title=\"local, virtual, LMTP, pipe, content filters\">Delivered</dt><dd>{}</dd>\
         </dl></div>\n",
        num(internal),
        num(f.internal_inbound.messages),
        num(f.internal_outbound.messages)
    );
    let alerts = [
        (f.downgrades.len(), "downgrade", "downgrades", "#downgrades"),
        (
            f.stripping_traces.len(),
            "stripping trace",
            "stripping traces",
            "#stripping",
        ),
        (
            f.starttls_failures.len(),
            "failed STARTTLS",
            "failed STARTTLS",
            "#starttls-failures",
        ),
    ];
    let total: usize = alerts.iter().map(|a| a.0).sum();
    w!(
        out,
        "<div class=\"card\" id=\"card-alerts\"><div class=\"label\">Evidence</div>\
         <div class=\"big {}\">{}</div><div class=\"of\">{}</div><dl>",
        if total > 0 {
            "bad"
        } else if total_messages(f) > 0 {
            "good"
        } else {
            "neutral"
        },
        num(total as u64),
        if total > 0 {
            "findings worth a look"
        } else {
            "no downgrade or stripping seen"
        }
    );
    for (n, one, many, anchor) in alerts {
        w!(
            out,
            "<dt><a href=\"{anchor}\">{}</a></dt><dd class=\"{}\">{}</dd>",
            if n == 1 { one } else { many },
            if n > 0 { "bad" } else { "" },
            num(n as u64)
        );
    }
    out.push_str("</dl></div>\n</section>\n");
}

fn direction_card(out: &mut String, id: &str, label: &str, verb: &str, d: &DirectionFigures) {
    w!(
        out,
        "<div class=\"card\" id=\"card-{id}\"><div class=\"label\">{label}</div>"
    );
    if d.messages == 0 {
        w!(
            out,
            "<div class=\"big neutral\" id=\"{id}-share\">–</div>\
             <div class=\"of\">no {id} Internet mail in these logs</div>"
        );
    } else {
        let share = clamp_share(d.tls_share);
        w!(
            out,
            "<div class=\"big {}\" id=\"{id}-share\">{}</div>\
             <div class=\"of\">{} of {} messages {verb} Internet peers over TLS</div>\
             <div class=\"meter\" title=\"TLS {}\"><span style=\"width:{:.2}%\"></span></div>",
            level(share),
            pct(share),
            num(d.tls_messages),
            num(d.messages),
            pct(share),
            share * 100.0
        );
    }
    w!(
        out,
        "<dl><dt>Recipients</dt><dd>{} <small>· {} TLS</small></dd>\
         <dt>Connections</dt><dd>{} <small>· {} TLS</small></dd>\
         <dt>Plaintext</dt><dd>{}</dd>",
        num(d.recipients),
        num(d.tls_recipients),
        num(d.connections),
        num(d.tls_connections),
        num(d.plain_messages)
    );
    if d.unknown_messages > 0 {
        w!(
            out,
            "<dt title=\"the log does not say whether TLS was used\">Not logged</dt><dd>{}</dd>",
            num(d.unknown_messages)
        );
    }
    if d.deferred > 0 || d.bounced > 0 {
        w!(
            out,
            "<dt>Deferred, bounced</dt><dd>{} / {}</dd>",
            num(d.deferred),
            num(d.bounced)
        );
    }
    out.push_str("</dl></div>\n");
}

fn empty_state(out: &mut String, f: &Figures, meta: &HtmlMeta) {
    let lines: u64 = meta.inputs.iter().map(|i| i.lines).sum();
    let bad: u64 = meta.inputs.iter().map(|i| i.bad_lines).sum();
    w!(
        out,
        "<section class=\"panel empty\" id=\"empty\"><h2>No mail found in these logs</h2>\
         <p>sigillo read {} lines from {} input{} and found no message received or sent.</p><ul>",
        num(lines),
        num(meta.inputs.len() as u64),
        if meta.inputs.len() == 1 { "" } else { "s" }
    );
    if bad > 0 {
        w!(
            out,
            "<li>{} lines could not be read: see the inputs below.</li>",
            num(bad)
        );
    }
    if !meta.input_notes.is_empty() {
        w!(
            out,
            "<li>{} input{} could not be read or {} skipped: see the inputs below.</li>",
            num(meta.input_notes.len() as u64),
            if meta.input_notes.len() == 1 { "" } else { "s" },
            if meta.input_notes.len() == 1 {
                "was"
            } else {
                "were"
            },
        );
    }
    if f.outside_window > 0 {
        w!(
            out,
            "<li>{} records fell outside <code>--since</code>/<code>--until</code>.</li>",
            num(f.outside_window)
        );
    }
    out.push_str(
        "<li>Are these the MTA's mail logs (<code>/var/log/mail.log</code>, \
         <code>exim4/mainlog</code>)? If the format was not recognised, give it with \
         <code>--format</code>.</li></ul></section>\n",
    );
}

// ---------------------------------------------------------------------------------------
// TLS share over time

fn share_over_time(out: &mut String, f: &Figures) {
    // Hours when the logs span at most 3 calendar days (days with mail are not enough: mail
    // on the 1st and the 10th only spans ten days).
    let first_day = f.daily.first().and_then(|d| period_unit(&d.period, false));
    let last_day = f.daily.last().and_then(|d| period_unit(&d.period, false));
    let hourly = !f.hourly.is_empty()
        && match (first_day, last_day) {
            (Some(a), Some(b)) => b.saturating_sub(a) < 3,
            _ => f.daily.len() <= 3,
        };
    let (periods, unit) = if hourly {
        (&f.hourly, "hour")
    } else {
        (&f.daily, "day")
    };
    w!(
        out,
        "<section class=\"panel\" id=\"share-over-time\"><h2>TLS share per {unit}</h2>\
         <p class=\"hint\">Share of Internet messages over TLS in each {unit}; the bars below \
         show how many messages it rests on.</p>"
    );
    let points: Vec<(i64, &PeriodFigures)> = periods
        .iter()
        .filter_map(|p| period_unit(&p.period, hourly).map(|u| (u, p)))
        .collect();
    let (Some(min), Some(max)) = (
        points.iter().map(|p| p.0).min(),
        points.iter().map(|p| p.0).max(),
    ) else {
        out.push_str("<p class=\"muted\">No dated Internet mail.</p></section>\n");
        return;
    };
    let (width, left, right, top, bottom) = (1000.0, 56.0, 986.0, 44.0, 236.0);
    let (vol_top, vol_bottom) = (256.0, 306.0);
    let span = max.saturating_sub(min).saturating_add(1).max(1);
    let slot = (right - left) / span as f64;
    let x = |u: i64| left + ((u - min) as f64 + 0.5) * slot;
    let y = |s: f64| bottom - clamp_share(s) * (bottom - top);
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"chart-share\" \
         viewBox=\"0 0 {width} 340\" role=\"img\" aria-label=\"TLS share per {unit}, inbound \
         and outbound\">"
    );
    // Legend.
    for (i, (name, color)) in [("inbound", INBOUND), ("outbound", OUTBOUND)]
        .iter()
        .enumerate()
    {
        let lx = left + 4.0 + i as f64 * 120.0;
        w!(
            out,
            "<line x1=\"{lx}\" y1=\"16\" x2=\"{}\" y2=\"16\" stroke=\"{color}\" \
             stroke-width=\"3\"/><circle cx=\"{}\" cy=\"16\" r=\"4\" fill=\"{color}\"/>\
             <text class=\"legend\" x=\"{}\" y=\"20\">{name}</text>",
            lx + 24.0,
            lx + 12.0,
            lx + 30.0
        );
    }
    w!(
        out,
        "<line class=\"goal\" x1=\"{}\" y1=\"16\" x2=\"{}\" y2=\"16\"/>\
         <text class=\"legend\" x=\"{}\" y=\"20\">80% goal</text>",
        left + 244.0,
        left + 268.0,
        left + 274.0
    );
    // Grid and y axis.
    for tick in [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] {
        let ty = y(tick);
        let goal = (tick - GOAL).abs() < 1e-9;
        w!(
            out,
            "<line class=\"{}\" x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{right}\" y2=\"{ty:.1}\"/>\
             <text class=\"{}\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            if goal { "goal" } else { "grid" },
            if goal { "goal-label" } else { "tick" },
            left - 8.0,
            ty + 4.0,
            (tick * 100.0).round() as u32
        );
    }
    // Volume strip.
    let max_total = points
        .iter()
        .map(|(_, p)| p.inbound_messages.saturating_add(p.outbound_messages))
        .max()
        .unwrap_or(0)
        .max(1);
    let bar_w = (slot * 0.7).clamp(1.0, 40.0);
    w!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{vol_bottom}\" x2=\"{right}\" y2=\"{vol_bottom}\"/>\
         <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">msgs</text>",
        left - 8.0,
        vol_top + 8.0,
        num(max_total),
        left - 8.0,
        vol_bottom
    );
    for (u, p) in &points {
        let h_in = p.inbound_messages as f64 / max_total as f64 * (vol_bottom - vol_top);
        let h_out = p.outbound_messages as f64 / max_total as f64 * (vol_bottom - vol_top);
        let bx = x(*u) - bar_w / 2.0;
        w!(
            out,
            "<g><title>{}: {} inbound, {} outbound messages</title>\
             <rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h_in:.1}\" fill=\"{INBOUND_LIGHT}\"/>\
             <rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h_out:.1}\" fill=\"{OUTBOUND_LIGHT}\"/></g>",
            esc(&p.period),
            num(p.inbound_messages),
            num(p.outbound_messages),
            vol_bottom - h_in,
            vol_bottom - h_in - h_out
        );
    }
    // X axis ticks.
    w!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\"/>"
    );
    for u in x_ticks(min, max, hourly) {
        let tx = x(u);
        w!(
            out,
            "<line class=\"axis\" x1=\"{tx:.1}\" y1=\"{vol_bottom}\" x2=\"{tx:.1}\" y2=\"{}\"/>\
             <text class=\"tick\" x=\"{tx:.1}\" y=\"326\" text-anchor=\"middle\">{}</text>",
            vol_bottom + 5.0,
            esc(&unit_label(u, hourly, span))
        );
    }
    // The two series: lines broken where a period has no mail, dots with tooltips.
    let dots = points.len() <= 120;
    for (dir, color) in [("inbound", INBOUND), ("outbound", OUTBOUND)] {
        let series: Vec<(i64, f64, u64, u64)> = points
            .iter()
            .filter_map(|(u, p)| {
                let (total, tls, share) = if dir == "inbound" {
                    (p.inbound_messages, p.inbound_tls, p.inbound_share)
                } else {
                    (p.outbound_messages, p.outbound_tls, p.outbound_share)
                };
                (total > 0).then_some((*u, clamp_share(share), tls, total))
            })
            .collect();
        let mut path = String::new();
        let mut prev: Option<i64> = None;
        for (u, s, _, _) in &series {
            let cmd = if prev.is_some_and(|p| u - p == 1) {
                'L'
            } else {
                'M'
            };
            w!(path, "{cmd}{:.1},{:.1} ", x(*u), y(*s));
            prev = Some(*u);
        }
        w!(
            out,
            "<path class=\"series\" id=\"series-{dir}\" d=\"{}\" stroke=\"{color}\"/>",
            path.trim_end()
        );
        for (i, (u, s, tls, total)) in series.iter().enumerate() {
            let isolated = (i == 0 || series[i - 1].0 != u - 1)
                && series.get(i + 1).is_none_or(|n| n.0 != u + 1);
            if dots || isolated {
                let period = points
                    .iter()
                    .find(|p| p.0 == *u)
                    .map(|p| p.1.period.as_str())
                    .unwrap_or("");
                w!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\">\
                     <title>{}: {dir} {} ({} of {} messages over TLS)</title></circle>",
                    x(*u),
                    y(*s),
                    esc(period),
                    pct(*s),
                    num(*tls),
                    num(*total)
                );
            }
        }
    }
    out.push_str("</svg></section>\n");
}

/// Days (`2026-11-22`) or hours (`2026-11-22T13`) since 1970, `None` for anything else.
fn period_unit(period: &str, hourly: bool) -> Option<i64> {
    let b = period.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        let mut v = 0i64;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if hourly {
        if b.get(10) != Some(&b'T') || b.len() != 13 {
            return None;
        }
        let h = digits(11..13)?;
        (h < 24).then_some(days * 24 + h)
    } else {
        (b.len() == 10).then_some(days)
    }
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn unit_label(u: i64, hourly: bool, span: i64) -> String {
    let (days, hour) = if hourly {
        (u.div_euclid(24), Some(u.rem_euclid(24)))
    } else {
        (u, None)
    };
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS
        .get(usize::try_from(m - 1).unwrap_or(0))
        .unwrap_or(&"");
    match hour {
        Some(0) => format!("{month} {d}"),
        Some(h) => format!("{h:02}:00"),
        None if span > 300 => format!("{y}-{m:02}-{d:02}"),
        None => format!("{month} {d}"),
    }
}

/// At most about a dozen ticks, on round steps (hours aligned to the clock).
fn x_ticks(min: i64, max: i64, hourly: bool) -> Vec<i64> {
    let span = max.saturating_sub(min).saturating_add(1);
    let steps: &[i64] = if hourly {
        &[1, 2, 3, 6, 12, 24, 48]
    } else {
        &[1, 2, 7, 14, 28, 91, 182, 364]
    };
    let wanted = 12;
    let step = steps
        .iter()
        .copied()
        .find(|s| span / s <= wanted)
        .unwrap_or_else(|| span / wanted + 1)
        .max(1);
    let mut first = min;
    if hourly {
        first = min + (step - min.rem_euclid(step)) % step;
    }
    let mut ticks = Vec::new();
    let mut u = first;
    while u <= max && ticks.len() <= wanted as usize + 1 {
        ticks.push(u);
        u = u.saturating_add(step);
    }
    if ticks.is_empty() {
        ticks.push(min);
    }
    ticks
}

// ---------------------------------------------------------------------------------------
// TLS versions and trust

struct Segment {
    name: String,
    count: u64,
    color: &'static str,
    /// Place in the legend.
    order: u8,
}

struct StackRow {
    label: &'static str,
    total: u64,
    segments: Vec<Segment>,
}

fn version_color(v: &str) -> &'static str {
    match v {
        "TLSv1.3" => "#047857",
        "TLSv1.2" => "#34b27d",
        "TLSv1.1" => "#f59e0b",
        "TLSv1" => "#ea580c",
        _ => "#a855f7",
    }
}

fn version_rank(v: &str) -> u8 {
    match v {
        "TLSv1.3" => 0,
        "TLSv1.2" => 1,
        "TLSv1.1" => 2,
        "TLSv1" => 3,
        _ => 4,
    }
}

fn trust_color(t: &str) -> &'static str {
    match t {
        "verified" => "#047857",
        "trusted" => "#34b27d",
        "untrusted" => "#f59e0b",
        "anonymous" => "#60a5fa",
        _ => "#cbd5e1",
    }
}

fn trust_rank(t: &str) -> u8 {
    match t {
        "verified" => 0,
        "trusted" => 1,
        "untrusted" => 2,
        "anonymous" => 3,
        _ => 4,
    }
}

fn tls_breakdown(out: &mut String, f: &Figures) {
    out.push_str(
        "<section class=\"panel\" id=\"tls-breakdown\"><h2>How the mail travelled</h2>\
         <p class=\"hint\">Each bar is all Internet messages of one direction: TLS by \
         version, then plaintext and messages whose log does not tell.</p>",
    );
    out.push_str("<h3>TLS version</h3>");
    stacked_chart(out, "chart-versions", &stack_rows(f, Breakdown::Versions));
    out.push_str("<h3>Certificate trust</h3>");
    stacked_chart(out, "chart-trust", &stack_rows(f, Breakdown::Trust));
    out.push_str(
        "<p class=\"hint\">Trust as the MTA logged it: <b>verified</b> (chain and name \
         checked), <b>trusted</b> (chain only), <b>untrusted</b> (not checked or failed), \
         <b>anonymous</b> (no certificate asked for or sent: typical for inbound mail).</p>\
         </section>\n",
    );
}

type Rank = fn(&str) -> u8;
type Colour = fn(&str) -> &'static str;

#[derive(Clone, Copy)]
enum Breakdown {
    Versions,
    Trust,
}

/// One bar per direction: TLS split by version or trust, then plaintext and not logged.
fn stack_rows(f: &Figures, which: Breakdown) -> Vec<StackRow> {
    [("Inbound", &f.inbound), ("Outbound", &f.outbound)]
        .into_iter()
        .map(|(label, d)| {
            let (map, rank, color): (_, Rank, Colour) = match which {
                Breakdown::Versions => (&d.tls.versions, version_rank, version_color),
                Breakdown::Trust => (&d.tls.trust, trust_rank, trust_color),
            };
            let mut entries: Vec<(&String, &u64)> = map.iter().collect();
            entries.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(a.0.cmp(b.0)));
            let mut segments: Vec<Segment> = entries
                .into_iter()
                .map(|(name, &count)| Segment {
                    name: name.clone(),
                    count,
                    color: color(name),
                    order: rank(name),
                })
                .collect();
            segments.push(Segment {
                name: "plaintext".into(),
                count: d.plain_messages,
                color: PLAIN,
                order: 10,
            });
            segments.push(Segment {
                name: "not logged".into(),
                count: d.unknown_messages,
                color: UNKNOWN,
                order: 11,
            });
            StackRow {
                label,
                total: d.messages,
                segments,
            }
        })
        .collect()
}

fn stacked_chart(out: &mut String, id: &str, rows: &[StackRow]) {
    let (label_w, left, right, row_h, bar_h) = (10.0, 150.0, 990.0, 46.0, 28.0);
    let height = rows.len() as f64 * row_h + 6.0;
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" \
         viewBox=\"0 0 1000 {height}\" role=\"img\">"
    );
    let mut legend: Vec<(&str, &'static str, u64, u8)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let top = 4.0 + i as f64 * row_h;
        let cy = top + bar_h / 2.0;
        w!(
            out,
            "<text class=\"row-label\" x=\"{label_w}\" y=\"{:.1}\">{}</text>\
             <text class=\"tick\" x=\"{label_w}\" y=\"{:.1}\">{} msgs</text>",
            cy - 2.0,
            row.label,
            cy + 13.0,
            num(row.total)
        );
        if row.total == 0 {
            w!(
                out,
                "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{bar_h}\" rx=\"4\" \
                 fill=\"#f3f4f6\" stroke=\"#e5e7eb\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\">\
                 no mail</text>",
                right - left,
                left + 10.0,
                cy + 4.0
            );
            continue;
        }
        let mut x = left;
        for seg in row.segments.iter().filter(|s| s.count > 0) {
            let share = ratio(seg.count, row.total);
            let w = share * (right - left);
            w!(
                out,
                "<g><title>{} {}: {} ({} messages)</title><rect x=\"{x:.1}\" y=\"{top}\" \
                 width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{}\"/>",
                row.label,
                esc(&seg.name),
                pct(share),
                num(seg.count),
                seg.color
            );
            if w >= 46.0 {
                w!(
                    out,
                    "<text class=\"in-bar\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    x + w / 2.0,
                    cy + 4.5,
                    pct(share)
                );
            }
            out.push_str("</g>");
            x += w;
            match legend.iter_mut().find(|l| l.0 == seg.name) {
                Some(l) => l.2 = l.2.saturating_add(seg.count),
                None => legend.push((seg.name.as_str(), seg.color, seg.count, seg.order)),
            }
        }
    }
    legend.sort_by(|a, b| a.3.cmp(&b.3).then(a.0.cmp(b.0)));
    out.push_str("</svg><div class=\"legend-row\">");
    for (name, color, count, _) in legend {
        w!(
            out,
            "<span><i style=\"background:{color}\"></i>{} <small>{}</small></span>",
            esc(name),
            num(count)
        );
    }
    out.push_str("</div>");
}

// ---------------------------------------------------------------------------------------
// Key exchange and ciphers

fn kx_and_ciphers(out: &mut String, f: &Figures) {
    if f.inbound.tls_messages == 0 && f.outbound.tls_messages == 0 {
        return;
    }
    out.push_str(
        "<section class=\"panel\" id=\"kx-ciphers\"><h2>Key exchange and ciphers</h2>\
         <p class=\"hint\">Messages over TLS, top 8; <span class=\"sw\" style=\"background:#2563eb\">\
         </span> inbound, <span class=\"sw\" style=\"background:#e8710a\"></span> outbound.</p>\
         <h3>Key exchange</h3>",
    );
    hbar_chart(
        out,
        "chart-kx",
        &top_combined(&f.inbound.tls.key_exchange, &f.outbound.tls.key_exchange),
    );
    out.push_str("<h3>Ciphers</h3>");
    hbar_chart(
        out,
        "chart-ciphers",
        &top_combined(&f.inbound.tls.ciphers, &f.outbound.tls.ciphers),
    );
    out.push_str("</section>\n");
}

/// The `TOP_BARS` largest names over both directions, then one "others" row.
fn top_combined(
    inbound: &BTreeMap<String, u64>,
    outbound: &BTreeMap<String, u64>,
) -> Vec<(String, u64, u64)> {
    let mut all: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (k, v) in inbound {
        all.entry(k).or_default().0 += v;
    }
    for (k, v) in outbound {
        all.entry(k).or_default().1 += v;
    }
    let mut rows: Vec<(String, u64, u64)> = all
        .into_iter()
        .map(|(k, (i, o))| (k.to_owned(), i, o))
        .collect();
    rows.sort_by(|a, b| {
        (b.1.saturating_add(b.2))
            .cmp(&a.1.saturating_add(a.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    if rows.len() > TOP_BARS {
        let rest = rows.split_off(TOP_BARS);
        let n = rest.len();
        let (i, o) = rest.iter().fold((0u64, 0u64), |acc, r| {
            (acc.0.saturating_add(r.1), acc.1.saturating_add(r.2))
        });
        rows.push((format!("{n} others"), i, o));
    }
    rows
}

fn hbar_chart(out: &mut String, id: &str, rows: &[(String, u64, u64)]) {
    let (label_right, left, right, row_h, bar_h) = (320.0, 330.0, 900.0, 26.0, 18.0);
    let height = rows.len() as f64 * row_h + 6.0;
    let max = rows
        .iter()
        .map(|r| r.1.saturating_add(r.2))
        .max()
        .unwrap_or(0)
        .max(1);
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" \
         viewBox=\"0 0 1000 {height}\" role=\"img\">"
    );
    for (i, (name, inbound, outbound)) in rows.iter().enumerate() {
        let top = 4.0 + i as f64 * row_h;
        let total = inbound.saturating_add(*outbound);
        let w_in = *inbound as f64 / max as f64 * (right - left);
        let w_out = *outbound as f64 / max as f64 * (right - left);
        w!(
            out,
            "<g><title>{}: {} inbound, {} outbound</title>\
             <text class=\"mono\" x=\"{label_right}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{left}\" y=\"{top}\" width=\"{w_in:.1}\" height=\"{bar_h}\" fill=\"{INBOUND}\"/>\
             <rect x=\"{:.1}\" y=\"{top}\" width=\"{w_out:.1}\" height=\"{bar_h}\" fill=\"{OUTBOUND}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            esc(name),
            num(*inbound),
            num(*outbound),
            top + 13.5,
            esc(&truncate(name, 40)),
            left + w_in,
            left + w_in + w_out + 6.0,
            top + 13.5,
            num(total)
        );
    }
    out.push_str("</svg>");
}

// ---------------------------------------------------------------------------------------
// Top plaintext peers

fn top_plaintext(out: &mut String, f: &Figures) {
    out.push_str(
        "<section class=\"panel\" id=\"top-plaintext\"><h2>Whom to call to get to 80%</h2>\
         <p class=\"hint\">The domains that exchange the most mail in clear. On the right, the \
         TLS share the direction would reach if that domain and every one above it used TLS.</p>",
    );
    for (dir, d, what) in [
        (
            Direction::Inbound,
            &f.inbound,
            "Inbound: sender domains in clear",
        ),
        (
            Direction::Outbound,
            &f.outbound,
            "Outbound: destination domains in clear",
        ),
    ] {
        if d.messages == 0 {
            continue;
        }
        w!(out, "<h3>{what}</h3>");
        let rows: Vec<&PlaintextPeer> = f
            .top_plaintext
            .iter()
            .filter(|p| p.direction == dir)
            .take(TOP_PLAIN_ROWS)
            .collect();
        let now = clamp_share(d.tls_share);
        if rows.is_empty() {
            w!(
                out,
                "<p class=\"good-text\">No plaintext peers: {} of these messages used TLS.</p>",
                pct(now)
            );
            continue;
        }
        let reach = if now >= GOAL {
            None
        } else {
            rows.iter()
                .position(|p| clamp_share(p.tls_share_if_fixed) >= GOAL)
        };
        let last = rows
            .last()
            .map(|p| clamp_share(p.tls_share_if_fixed))
            .unwrap_or(now);
        out.push_str("<p class=\"verdict\">");
        match reach {
            _ if now >= GOAL => w!(
                out,
                "Already at <b>{}</b>. Fixing {} would bring it to <b>{}</b>.",
                pct(now),
                domains(&rows, rows.len()),
                pct(last)
            ),
            Some(i) => w!(
                out,
                "Now <b>{}</b>. Getting {} onto TLS lifts it to <b>{}</b>.",
                pct(now),
                domains(&rows, i + 1),
                pct(rows
                    .get(i)
                    .map_or(0.0, |p| clamp_share(p.tls_share_if_fixed)))
            ),
            None => w!(
                out,
                "Now <b>{}</b>. Even fixing {} would only reach <b>{}</b>: the plaintext is \
                 spread over many peers.",
                pct(now),
                domains(&rows, rows.len()),
                pct(last)
            ),
        }
        out.push_str("</p>");
        plaintext_chart(out, dir, &rows, now, reach);
    }
    out.push_str("</section>\n");
}

/// `<b>shop.example</b>` for one domain, `the top <b>3</b> domains` for more.
fn domains(rows: &[&PlaintextPeer], n: usize) -> String {
    match (n, rows.first()) {
        (1, Some(p)) => format!("<b>{}</b>", esc(&p.domain)),
        _ if n == rows.len() => format!("all <b>{n}</b> domains listed"),
        _ => format!("the top <b>{n}</b> domains"),
    }
}

fn plaintext_chart(
    out: &mut String,
    dir: Direction,
    rows: &[&PlaintextPeer],
    now: f64,
    reach: Option<usize>,
) {
    let (label_right, bar_left, bar_right) = (250.0, 260.0, 520.0);
    let (track_left, track_right, value_right) = (600.0, 915.0, 990.0);
    let (head, row_h) = (40.0, 28.0);
    let body_bottom = head + rows.len() as f64 * row_h;
    let height = body_bottom + 24.0;
    let id = match dir {
        Direction::Inbound => "chart-plaintext-inbound",
        Direction::Outbound => "chart-plaintext-outbound",
    };
    let max = rows
        .iter()
        .map(|p| p.plain_messages)
        .max()
        .unwrap_or(0)
        .max(1);
    // The track starts a little below "now" (in tens), so the interesting part is wide.
    let lowest = rows
        .iter()
        .map(|p| clamp_share(p.tls_share_if_fixed))
        .fold(now, f64::min);
    let start = ((lowest * 10.0).floor() / 10.0 - 0.1).clamp(0.0, 0.7);
    let tx = |s: f64| {
        let s = (clamp_share(s) - start) / (1.0 - start);
        track_left + s.clamp(0.0, 1.0) * (track_right - track_left)
    };
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" \
         viewBox=\"0 0 1000 {height}\" role=\"img\">\
         <text class=\"col-head\" x=\"{bar_left}\" y=\"14\">plaintext messages</text>\
         <text class=\"col-head\" x=\"{track_left}\" y=\"14\">TLS share if fixed</text>"
    );
    if let Some(i) = reach {
        let y = head + i as f64 * row_h;
        w!(
            out,
            "<rect class=\"reach\" x=\"0\" y=\"{:.1}\" width=\"1000\" height=\"{row_h}\" rx=\"4\"/>",
            y - 2.0
        );
    }
    // The track: its ends, the goal, and "now".
    for tick in [start, 1.0] {
        let x = tx(tick);
        w!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{body_bottom:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"32\" text-anchor=\"middle\">{}%</text>",
            head - 4.0,
            (tick * 100.0).round() as u32
        );
    }
    let gx = tx(GOAL);
    w!(
        out,
        "<line class=\"goal\" x1=\"{gx:.1}\" y1=\"{}\" x2=\"{gx:.1}\" y2=\"{body_bottom:.1}\"/>\
         <text class=\"goal-label\" x=\"{gx:.1}\" y=\"32\" text-anchor=\"middle\">80%</text>",
        head - 4.0
    );
    let nx = tx(now);
    w!(
        out,
        "<line class=\"now\" x1=\"{nx:.1}\" y1=\"{}\" x2=\"{nx:.1}\" y2=\"{body_bottom:.1}\"/>\
         <text class=\"tick\" x=\"{nx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">now {}</text>",
        head - 4.0,
        body_bottom + 16.0,
        pct(now)
    );
    // The cumulative line from "now" through each row's share-if-fixed.
    let mut path = format!("M{nx:.1},{:.1}", head - 4.0);
    for (i, p) in rows.iter().enumerate() {
        let cy = head + i as f64 * row_h + row_h / 2.0 - 2.0;
        w!(path, " L{:.1},{cy:.1}", tx(p.tls_share_if_fixed));
    }
    w!(out, "<path class=\"cumulative\" d=\"{path}\"/>");
    for (i, p) in rows.iter().enumerate() {
        let top = head + i as f64 * row_h;
        let cy = top + row_h / 2.0 - 2.0;
        let w = p.plain_messages as f64 / max as f64 * (bar_right - bar_left);
        let fixed = clamp_share(p.tls_share_if_fixed);
        let strong = if reach == Some(i) { " strong" } else { "" };
        w!(
            out,
            "<g><title>{}: {} plaintext messages ({} of the direction); TLS share if fixed: {}</title>\
             <text class=\"row-label{strong}\" x=\"{label_right}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{bar_left}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"18\" rx=\"2\" fill=\"{PLAIN}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\
             <circle cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"5\" class=\"fixed-dot\"/>\
             <text class=\"dot-label{strong}\" x=\"{value_right}\" y=\"{:.1}\" text-anchor=\"end\">{}</text></g>",
            esc(&p.domain),
            num(p.plain_messages),
            pct(clamp_share(p.cumulative_plain_share)),
            pct(fixed),
            cy + 4.5,
            esc(&truncate(&p.domain, 34)),
            cy - 9.0,
            bar_left + w + 6.0,
            cy + 4.5,
            num(p.plain_messages),
            tx(fixed),
            cy + 4.5,
            pct(fixed)
        );
    }
    out.push_str("</svg>");
}

// ---------------------------------------------------------------------------------------
// Tables

fn direction_badge(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "<span class=\"badge b-in\">inbound</span>",
        Direction::Outbound => "<span class=\"badge b-out\">outbound</span>",
    }
}

fn peer_cell(out: &mut String, hostname: Option<&str>, ip: Option<&str>, domain: Option<&str>) {
    w!(
        out,
        "<td class=\"peer\"><b>{}</b>",
        esc(hostname.unwrap_or("unknown"))
    );
    if let Some(ip) = ip {
        w!(out, "<br><small>{}</small>", esc(ip));
    }
    if let Some(domain) = domain
        && Some(domain) != hostname
        && Some(domain) != ip
    {
        w!(out, " <small class=\"muted\">· {}</small>", esc(domain));
    }
    out.push_str("</td>");
}

fn downgrades(out: &mut String, list: &[Downgrade]) {
    out.push_str(
        "<section class=\"panel\" id=\"downgrades\"><h2>Downgrades</h2>\
         <p class=\"hint\">Peers that used TLS and later exchanged mail in clear.</p>",
    );
    if list.is_empty() {
        out.push_str(
            "<p class=\"good-text\">None: no peer went from TLS to plaintext.</p></section>\n",
        );
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Direction</th><th>Peer</th>\
         <th>Last over TLS</th><th>First in clear</th><th>Last in clear</th>\
         <th class=\"n\">In clear</th><th>Since</th></tr></thead><tbody>",
    );
    for d in list.iter().take(EVIDENCE_ROWS) {
        w!(out, "<tr><td>{}</td>", direction_badge(d.direction));
        peer_cell(
            out,
            d.hostname.as_deref(),
            d.ip.as_deref(),
            Some(d.domain.as_str()),
        );
        for (time, id) in [
            (&d.last_tls, &d.last_tls_id),
            (&d.first_plain, &d.first_plain_id),
            (&d.last_plain, &d.last_plain_id),
        ] {
            w!(
                out,
                "<td class=\"nowrap\">{}<br><code>{}</code></td>",
                esc(&table_time(time)),
                esc(id)
            );
        }
        w!(
            out,
            "<td class=\"n\">{}</td><td>{}</td></tr>",
            num(d.plain_messages),
            if d.tls_resumed {
                "<span class=\"badge b-ok\">TLS resumed</span>"
            } else {
                "<span class=\"badge b-bad\">still in clear</span>"
            }
        );
    }
    out.push_str("</tbody></table></div>");
    more(out, list.len(), EVIDENCE_ROWS);
    out.push_str("</section>\n");
}

fn anomalies(out: &mut String, id: &str, title: &str, hint: &str, list: &[AnomalyFigure]) {
    w!(
        out,
        "<section class=\"panel\" id=\"{id}\"><h2>{title}</h2><p class=\"hint\">{hint}</p>"
    );
    if list.is_empty() {
        out.push_str("<p class=\"good-text\">None found.</p></section>\n");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Time</th><th>Direction</th><th>Peer</th>\
         <th>Evidence (log line)</th></tr></thead><tbody>",
    );
    for a in list.iter().take(EVIDENCE_ROWS) {
        w!(
            out,
            "<tr><td class=\"nowrap\">{}</td><td>{}</td>",
            esc(&table_time(&a.time)),
            direction_badge(a.direction)
        );
        peer_cell(out, a.hostname.as_deref(), a.ip.as_deref(), None);
        w!(
            out,
            "<td class=\"evidence\">{}<code class=\"ev\">{}</code></td></tr>",
            if a.peer_uses_tls {
                "<span class=\"badge b-bad\">peer uses TLS for other mail</span>"
            } else {
                ""
            },
            esc(&truncate(&a.evidence, 4000))
        );
    }
    out.push_str("</tbody></table></div>");
    more(out, list.len(), EVIDENCE_ROWS);
    out.push_str("</section>\n");
}

fn more(out: &mut String, len: usize, shown: usize) {
    if len > shown {
        w!(
            out,
            "<p class=\"muted\">{} more in <code>--json</code>.</p>",
            num((len - shown) as u64)
        );
    }
}

fn peers_table(out: &mut String, f: &Figures) {
    w!(
        out,
        "<section class=\"panel\" id=\"peers\"><h2>Peers</h2><p class=\"hint\">Internet \
         peers by messages{}.</p>",
        if f.peers.len() > PEER_ROWS {
            format!(
                ", top {PEER_ROWS} of {} (all in <code>--csv</code>)",
                num(f.peers.len() as u64)
            )
        } else {
            String::new()
        }
    );
    out.push_str(
        "<div class=\"scroll\"><table class=\"peers\"><thead><tr><th>Direction</th>\
         <th>Peer</th><th class=\"n\">Messages</th><th class=\"n\">TLS</th>\
         <th class=\"n\">Clear</th><th>TLS share</th><th>Versions</th><th>Seen</th></tr>\
         </thead><tbody>",
    );
    for p in f.peers.iter().take(PEER_ROWS) {
        w!(out, "<tr><td>{}</td>", direction_badge(p.direction));
        peer_cell(
            out,
            p.hostname.as_deref(),
            p.ip.as_deref(),
            Some(p.domain.as_str()),
        );
        let share = clamp_share(p.tls_share);
        w!(
            out,
            "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"share\"><span class=\"mini\"><span class=\"{}\" style=\"width:{:.1}%\">\
             </span></span> {}{}</td><td>",
            num(p.messages),
            num(p.tls_messages),
            num(p.plain_messages),
            level(share),
            share * 100.0,
            pct(share),
            if p.unknown_messages > 0 {
                format!(
                    "<br><small class=\"muted\">{} not logged</small>",
                    num(p.unknown_messages)
                )
            } else {
                String::new()
            }
        );
        let mut versions: Vec<(&String, &u64)> = p.versions.iter().collect();
        versions.sort_by(|a, b| version_rank(a.0).cmp(&version_rank(b.0)).then(a.0.cmp(b.0)));
        for (i, (v, n)) in versions.into_iter().enumerate() {
            w!(
                out,
                "{}<span class=\"ver\" style=\"border-color:{}\">{} <small>{}</small></span>",
                if i > 0 { " " } else { "" },
                version_color(v),
                esc(v),
                num(*n)
            );
        }
        w!(
            out,
            "</td><td class=\"nowrap\"><small>{}<br>{}</small></td></tr>",
            esc(&table_time(&p.first_seen)),
            esc(&table_time(&p.last_seen))
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn inputs(out: &mut String, f: &Figures, meta: &HtmlMeta) {
    out.push_str("<section class=\"panel\" id=\"inputs\"><h2>Inputs</h2>");
    if meta.inputs.is_empty() {
        out.push_str("<p class=\"muted\">No input files listed.</p>");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>File</th><th class=\"n\">Lines</th>\
             <th class=\"n\">Unreadable lines</th></tr></thead><tbody>",
        );
        for i in &meta.inputs {
            w!(
                out,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n{}\">{}</td></tr>",
                esc(&i.path),
                num(i.lines),
                if i.bad_lines > 0 { " bad" } else { "" },
                num(i.bad_lines)
            );
        }
        out.push_str("</tbody></table></div>");
    }
    if !meta.input_notes.is_empty() {
        out.push_str("<ul class=\"input-notes\">");
        for n in &meta.input_notes {
            w!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul>");
    }
    let mut notes = Vec::new();
    if f.outside_window > 0 {
        notes.push(format!(
            "{} records outside <code>--since</code>/<code>--until</code> were not counted.",
            num(f.outside_window)
        ));
    }
    if f.omitted.total() > 0 {
        notes.push(format!(
            "{} downgrades or anomalies over the listing cap were counted but not listed.",
            num(f.omitted.total())
        ));
    }
    for n in notes {
        w!(out, "<p class=\"muted\">{n}</p>");
    }
    out.push_str(
        "<p class=\"muted\">Times are log time, shown as UTC. Internal hops (pickup, local \
         delivery, loopback 127.0.0.1/::1, <code>--internal</code> ranges) are counted apart \
         from Internet mail.</p></section>\n",
    );
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// Escapes text for HTML element content and quoted attributes (`<>&"'`); control
/// characters (binary garbage in logs) become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A share as 0–1, whatever came in (NaN and infinities are 0).
fn clamp_share(s: f64) -> f64 {
    if s.is_finite() {
        s.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        clamp_share(part as f64 / whole as f64)
    }
}

/// `62.4%`; whole numbers without decimals (`100%`, `0%`).
fn pct(share: f64) -> String {
    let p = clamp_share(share) * 100.0;
    let text = format!("{p:.1}");
    match text.strip_suffix(".0") {
        Some(whole) => format!("{whole}%"),
        None => format!("{text}%"),
    }
}

/// `1,234,567`.
fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn level(share: f64) -> &'static str {
    if share >= 0.9 {
        "good"
    } else if share >= 0.6 {
        "warn"
    } else {
        "bad"
    }
}

/// `2026-11-22T13:24:13Z` → `2026-11-22 13:24:13 UTC`; anything else as given.
fn show_time(t: &str) -> String {
    let b = t.as_bytes();
    if b.len() == 20 && b.get(10) == Some(&b'T') && b.get(19) == Some(&b'Z') {
        format!("{} {} UTC", &t[..10], &t[11..19])
    } else {
        t.to_owned()
    }
}

/// `2026-11-22T13:24:13Z` → `2026-11-22 13:24:13` (tables; the page says times are UTC).
fn table_time(t: &str) -> String {
    show_time(t)
        .strip_suffix(" UTC")
        .map(str::to_owned)
        .unwrap_or_else(|| t.to_owned())
}

const CSS: &str = r#"
:root{color-scheme:light;--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f5f6f8;--card:#fff;
--good:#047857;--warn:#b45309;--bad:#b91c1c;--in:#2563eb;--out:#e8710a}
*{box-sizing:border-box}
html{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1140px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:27px;margin:0 0 2px;letter-spacing:-.01em}
h2{font-size:19px;margin:0 0 4px}
h3{font-size:14px;margin:18px 0 6px;color:#374151;text-transform:uppercase;letter-spacing:.05em}
.sub,.hint,.muted{color:var(--muted)}
.hint{margin:0 0 10px;font-size:14px}
a{color:inherit}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:16px;margin:22px 0}
.card,.panel,.note{background:var(--card);border:1px solid var(--line);border-radius:12px;
box-shadow:0 1px 2px rgba(0,0,0,.04)}
.card{padding:16px 20px}
.card .label{font-size:13px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);font-weight:650}
.big{font-size:54px;font-weight:750;line-height:1.05;margin:6px 0 2px;font-variant-numeric:tabular-nums;letter-spacing:-.02em}
.good{color:var(--good)}.warn{color:var(--warn)}.bad{color:var(--bad)}.neutral{color:#374151}
.of{font-size:13.5px;color:var(--muted);min-height:2.6em}
.meter{height:8px;background:#fbd5d5;border-radius:4px;overflow:hidden;margin:8px 0 4px}
.meter span{display:block;height:100%;background:currentColor}
.card.good-meter .meter span{background:var(--good)}
#card-inbound .meter span{background:var(--in)}#card-outbound .meter span{background:var(--out)}
dl{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:10px 0 0;font-size:14px}
dt{color:var(--muted);white-space:nowrap}dd{margin:0;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
dd small{color:var(--muted)}
.panel{padding:20px 22px;margin:18px 0}
.note{padding:14px 20px;margin:18px 0;border-left:5px solid #f59e0b}
.note h2{font-size:16px}
.input-notes{color:var(--warn);overflow-wrap:anywhere}
.empty{border-left:5px solid #9ca3af}
svg.chart{display:block;width:100%;height:auto;overflow:visible}
svg text{font-family:inherit;fill:#4b5563;font-size:12px}
svg .tick{font-size:12px;fill:#6b7280;font-variant-numeric:tabular-nums}
svg .legend{font-size:13px;fill:#374151}
svg .row-label{font-size:13.5px;fill:#1f2937;font-weight:600}
svg .row-label.strong,svg .dot-label.strong{fill:#065f46;font-weight:750}
svg .col-head{font-size:12px;fill:#6b7280;font-weight:650;text-transform:uppercase;letter-spacing:.05em}
svg .mono{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;fill:#1f2937}
svg .in-bar{font-size:12.5px;fill:#fff;font-weight:650}
svg .grid{stroke:#e5e7eb;stroke-width:1}
svg .axis{stroke:#9ca3af;stroke-width:1}
svg .goal{stroke:#047857;stroke-width:1.2;stroke-dasharray:5 4}
svg .goal-label{fill:#047857;font-size:11.5px;font-weight:650}
svg .now{stroke:#6b7280;stroke-width:1.2;stroke-dasharray:2 3}
svg .series{fill:none;stroke-width:2.6;stroke-linejoin:round;stroke-linecap:round}
svg .cumulative{fill:none;stroke:#047857;stroke-width:2;stroke-opacity:.55}
svg .fixed-dot{fill:#fff;stroke:#047857;stroke-width:2.4}
svg .dot-label{font-size:12.5px;fill:#047857;font-weight:600}
svg .reach{fill:#ecfdf5}
.legend-row{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13.5px;margin:6px 0 4px 15%}
.legend-row i,.sw{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;vertical-align:-1px}
.legend-row small{color:var(--muted)}
.verdict{font-size:15.5px;margin:4px 0 8px}
.good-text{color:var(--good);font-weight:600}
.scroll{overflow-x:auto}
table{width:100%;border-collapse:collapse;font-size:13.5px}
th{text-align:left;color:var(--muted);font-weight:650;font-size:12.5px;text-transform:uppercase;
letter-spacing:.04em;border-bottom:2px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top}
tbody tr:nth-child(even){background:#fafafb}
.n{text-align:right;font-variant-numeric:tabular-nums}
td.bad{color:var(--bad);font-weight:650}
.nowrap{white-space:nowrap}
td.peer{overflow-wrap:anywhere;min-width:210px}
td.evidence{min-width:320px}
code.ev{display:block;white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f4f6;
border:1px solid #e5e7eb;border-radius:6px;padding:6px 8px;margin-top:4px;color:#111827}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:650;white-space:nowrap}
.b-in{background:#dbeafe;color:#1e40af}.b-out{background:#ffedd5;color:#9a3412}
.b-ok{background:#d1fae5;color:#065f46}.b-bad{background:#fee2e2;color:#991b1b}
.mini{display:inline-block;width:64px;height:8px;background:#fbd5d5;border-radius:4px;overflow:hidden;vertical-align:middle}
.mini span{display:block;height:100%}
.mini .good{background:var(--good)}.mini .warn{background:#f59e0b}.mini .bad{background:var(--bad)}
td.share{white-space:nowrap;font-variant-numeric:tabular-nums}
.ver{display:inline-block;border-left:4px solid;padding:0 6px;background:#f3f4f6;border-radius:3px;font-size:12.5px;margin:1px 0;white-space:nowrap}
@media print{
body{background:#fff;font-size:11pt}
main{max-width:none;padding:0}
.card,.panel,.note{box-shadow:none;break-inside:avoid}
.panel{border-color:#d1d5db}
#peers,#downgrades,#stripping,#starttls-failures{break-inside:auto}
tr{break-inside:avoid}
.scroll{overflow:visible}
a{text-decoration:none}
}
"#;

/// Figures for the tests: a realistic week, and an empty run.
#[cfg(test)]
pub(crate) mod sample {
    use sigillo_logs::aggregate::{AggregateOptions, Aggregator, Figures};
    use sigillo_logs::model::{
        AnomalyKind, AnomalyRecord, ConnectionRecord, DeliveryStatus, Direction, MessageRecord,
        Mta, Peer, Record, Scope, TlsInfo, Transport, Trust, UnixTime,
    };

    /// A peer whose host name is an attack on the page.
    pub const HOSTILE_HOST: &str = "<script>alert(1)</script>";
    /// A log line that is one too.
    pub const HOSTILE_EVIDENCE: &str =
        "warning: TLS library problem: <img src=x onerror=alert('x')> & \"more\"";
    /// 2026-11-16T00:00:00Z.
    pub const WEEK_START: UnixTime = 20_773 * 86_400;

    fn tls(version: &str, cipher: &str, kx: Option<&str>, trust: Trust) -> Transport {
        Transport::Tls(TlsInfo {
            version: version.into(),
            cipher: cipher.into(),
            bits: Some(256),
            key_exchange: kx.map(Into::into),
            trust: Some(trust),
        })
    }

    fn peer(host: Option<&str>, ip: &str) -> Peer {
        Peer {
            hostname: host.map(Into::into),
            ip: ip.parse().ok(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn message(
        time: UnixTime,
        direction: Direction,
        scope: Scope,
        peer: Peer,
        transport: Transport,
        id: String,
        status: Option<DeliveryStatus>,
    ) -> Record {
        Record::Message(MessageRecord {
            mta: Mta::Postfix,
            time,
            direction,
            scope,
            peer,
            transport,
            recipients: 1 + (time % 3) as u32,
            size: Some(4096),
            id: id.into(),
            status,
            // Three recipient domains for outbound mail, so the next-hop table has rows.
            recipient_domain: (direction == Direction::Outbound)
                .then(|| format!("rcpt{}.example", time % 3).into()),
            spanned_domains: None,
            port: None,
        })
    }

    /// One week of a small mail server: several inbound and outbound peers, TLS 1.3/1.2/1.0,
    /// plaintext senders, a downgrade that recovers and one that does not, stripping traces,
    /// failed STARTTLS, internal hops, and hostile names.
    pub fn figures() -> Figures {
        let mut agg = Aggregator::new(AggregateOptions {
            top: 10,
            ..Default::default()
        });
        let mut n = 0u32;
        let mut next_id = || {
            n += 1;
            format!("4Q{n:05X}AB")
        };
        let tls13 = |trust| tls("TLSv1.3", "TLS_AES_256_GCM_SHA384", Some("X25519"), trust);
        let tls12 = |trust| {
            tls(
                "TLSv1.2",
                "ECDHE-RSA-AES128-GCM-SHA256",
                Some("secp256r1"),
                trust,
            )
        };
        let inbound = Direction::Inbound;
        let outbound = Direction::Outbound;
        let net = Scope::Internet;
        for day in 0..7i64 {
            let base = WEEK_START + day * 86_400;
            let at = |i: i64| base + 6 * 3600 + (i * 2_473) % (14 * 3600);
            // A big provider: TLS 1.3, every sixth message TLS 1.2 (70 + 14 over the week).
            for i in 0..12 {
                let k = day * 12 + i;
                let t = if k % 6 == 5 {
                    tls12(Trust::Anonymous)
                } else {
                    tls13(Trust::Anonymous)
                };
                agg.add(&message(
                    at(i),
                    inbound,
                    net,
                    peer(Some("mx1.bigmail.example"), "192.0.2.10"),
                    t.clone(),
                    next_id(),
                    None,
                ));
                agg.add(&Record::Connection(ConnectionRecord {
                    mta: Mta::Postfix,
                    time: at(i),
                    direction: inbound,
                    scope: net,
                    peer: peer(Some("mx1.bigmail.example"), "192.0.2.10"),
                    transport: t,
                    messages: 1,
                }));
            }
            // A shop that never uses TLS.
            for i in 0..5 {
                agg.add(&message(
                    at(20 + i),
                    inbound,
                    net,
                    peer(Some("smtp.shop.example"), "198.51.100.20"),
                    Transport::Plain,
                    next_id(),
                    None,
                ));
            }
            // A relay downgraded on days 3 and 4, TLS again from day 5.
            for i in 0..4 {
                let t = if day == 3 || day == 4 {
                    Transport::Plain
                } else {
                    tls12(Trust::Anonymous)
                };
                agg.add(&message(
                    at(30 + i),
                    inbound,
                    net,
                    peer(Some("relay.oldcorp.example"), "203.0.113.5"),
                    t,
                    next_id(),
                    None,
                ));
            }
            // A newsletter sender on TLS 1.0.
            for i in 0..3 {
                agg.add(&message(
                    at(40 + i),
                    inbound,
                    net,
                    peer(Some("out.newsletter-mailer.example"), "198.51.100.77"),
                    tls(
                        "TLSv1",
                        "ECDHE-RSA-AES256-SHA",
                        Some("secp384r1"),
                        Trust::Untrusted,
                    ),
                    next_id(),
                    None,
                ));
            }
            // No reverse DNS, plaintext, on odd days.
            if day % 2 == 1 {
                agg.add(&message(
                    at(50),
                    inbound,
                    net,
                    peer(None, "203.0.113.99"),
                    Transport::Plain,
                    next_id(),
                    None,
                ));
            }
            // TLS logging off for this one.
            agg.add(&message(
                at(55),
                inbound,
                net,
                peer(Some("mx.quiet.example"), "192.0.2.44"),
                Transport::Unknown {
                    hint: "smtpd_tls_loglevel = 1",
                },
                next_id(),
                None,
            ));
            // Outbound: a large provider over TLS 1.3, verified.
            for i in 0..8 {
                let t = tls(
                    "TLSv1.3",
                    "TLS_AES_128_GCM_SHA256",
                    Some("X25519MLKEM768"),
                    Trust::Verified,
                );
                let google = peer(Some("gmail-smtp-in.l.google.com"), "142.250.27.26");
                agg.add(&message(
                    at(60 + i),
                    outbound,
                    net,
                    google.clone(),
                    t.clone(),
                    next_id(),
                    Some(DeliveryStatus::Sent),
                ));
                if i % 2 == 0 {
                    agg.add(&Record::Connection(ConnectionRecord {
                        mta: Mta::Postfix,
                        time: at(60 + i),
                        direction: outbound,
                        scope: net,
                        peer: google,
                        transport: t,
                        messages: 2,
                    }));
                }
            }
            for i in 0..3 {
                agg.add(&message(
                    at(70 + i),
                    outbound,
                    net,
                    peer(Some("mx.partner.example"), "198.51.100.30"),
                    tls12(Trust::Trusted),
                    next_id(),
                    Some(DeliveryStatus::Sent),
                ));
            }
            // A legacy host: TLS on the first day, plaintext from then on.
            for i in 0..2 {
                let t = if day == 0 {
                    tls12(Trust::Untrusted)
                } else {
                    Transport::Plain
                };
                agg.add(&message(
                    at(80 + i),
                    outbound,
                    net,
                    peer(Some("mail.legacy.example"), "203.0.113.40"),
                    t,
                    next_id(),
                    Some(DeliveryStatus::Sent),
                ));
            }
            agg.add(&message(
                at(85),
                outbound,
                net,
                peer(Some("mx.gone.example"), "203.0.113.41"),
                Transport::Plain,
                next_id(),
                Some(if day % 2 == 0 {
                    DeliveryStatus::Deferred
                } else {
                    DeliveryStatus::Bounced
                }),
            ));
            // Internal hops.
            for i in 0..3 {
                agg.add(&message(
                    at(90 + i),
                    inbound,
                    Scope::Internal,
                    peer(Some("localhost"), "127.0.0.1"),
                    Transport::Plain,
                    next_id(),
                    None,
                ));
                agg.add(&message(
                    at(95 + i),
                    outbound,
                    Scope::Internal,
                    peer(None, "::1"),
                    Transport::Plain,
                    next_id(),
                    Some(DeliveryStatus::Sent),
                ));
            }
        }
        // Hostile names, plaintext.
        for i in 0..2 {
            agg.add(&message(
                WEEK_START + 2 * 86_400 + 3600 * (9 + i),
                inbound,
                net,
                peer(Some(HOSTILE_HOST), "192.0.2.66"),
                Transport::Plain,
                next_id(),
                None,
            ));
        }
        agg.add(&message(
            WEEK_START + 5 * 86_400 + 3600 * 10,
            inbound,
            net,
            peer(Some("evil,\"quoted\".example"), "192.0.2.67"),
            Transport::Plain,
            next_id(),
            None,
        ));
        let anomaly = |time, kind, host: Option<&str>, ip: &str, evidence: &str| {
            Record::Anomaly(AnomalyRecord {
                mta: Mta::Postfix,
                time,
                direction: Direction::Inbound,
                peer: peer(host, ip),
                kind,
                evidence: evidence.to_owned(),
            })
        };
        agg.add(&anomaly(
            WEEK_START + 3 * 86_400 + 8 * 3600,
            AnomalyKind::StrippingTrace,
            Some("relay.oldcorp.example"),
            "203.0.113.5",
            "Nov 19 08:00:00 mx postfix/smtpd[4242]: disconnect from \
             relay.oldcorp.example[203.0.113.5] ehlo=1 mail=1 rcpt=1 data=1 unknown=0/1 \
             quit=1 commands=5/6",
        ));
        agg.add(&anomaly(
            WEEK_START + 4 * 86_400 + 9 * 3600,
            AnomalyKind::StrippingTrace,
            Some("relay.oldcorp.example"),
            "203.0.113.5",
            "2026-11-20 09:00:00 SMTP syntax error in \"XXXXXXXA\" H=relay.oldcorp.example \
             [203.0.113.5] unrecognized command",
        ));
        agg.add(&anomaly(
            WEEK_START + 2 * 86_400 + 11 * 3600,
            AnomalyKind::StartTlsFailed,
            Some(HOSTILE_HOST),
            "192.0.2.66",
            HOSTILE_EVIDENCE,
        ));
        agg.add(&anomaly(
            WEEK_START + 6 * 86_400 + 7 * 3600,
            AnomalyKind::StartTlsFailed,
            None,
            "203.0.113.99",
            "Nov 22 07:00:00 mx postfix/smtpd[5151]: SSL_accept error from \
             unknown[203.0.113.99]: lost connection",
        ));
        agg.finish()
    }

    /// A run that found no mail.
    pub fn empty() -> Figures {
        Aggregator::new(AggregateOptions::default()).finish()
    }

    /// Two days, so the page charts hours.
    pub fn two_days() -> Figures {
        let mut agg = Aggregator::new(AggregateOptions {
            top: 5,
            ..Default::default()
        });
        for h in 0..40i64 {
            let t = WEEK_START + h * 3600 + 60;
            let transport = if h % 4 == 0 {
                Transport::Plain
            } else {
                tls("TLSv1.3", "TLS_AES_256_GCM_SHA384", None, Trust::Anonymous)
            };
            agg.add(&message(
                t,
                Direction::Inbound,
                Scope::Internet,
                peer(Some("mx.a.example"), "192.0.2.1"),
                transport,
                format!("H{h}"),
                None,
            ));
        }
        agg.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> HtmlMeta {
        HtmlMeta {
            title: "Mail TLS report <mx.example>".into(),
            generated_at: "2026-11-23T08:00:00Z".into(),
            inputs: vec![
                InputSummary {
                    path: "/var/log/mail.log".into(),
                    lines: 123_456,
                    bad_lines: 0,
                },
                InputSummary {
                    path: "/var/log/mail.log.1.gz & <odd>".into(),
                    lines: 99,
                    bad_lines: 3,
                },
            ],
            advice: vec!["Set smtpd_tls_loglevel = 1 for TLS details <now>".into()],
            input_notes: vec!["/var/log/mail.log.2.gz: cannot read: <denied>".into()],
        }
    }

    /// The page with the one allowed absolute URL (the SVG namespace) taken out.
    fn without_svg_namespace(page: &str) -> String {
        page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "")
    }

    #[test]
    fn escape_table() {
        let cases = [
            ("plain", "plain"),
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            ("a & b", "a &amp; b"),
            ("\"q\" 'a'", "&quot;q&quot; &#39;a&#39;"),
            ("bin\u{0}\u{1b}[31m", "bin\u{FFFD}\u{FFFD}[31m"),
            ("tab\there", "tab\there"),
            ("ünï", "ünï"),
        ];
        for (input, want) in cases {
            assert_eq!(esc(input), want, "{input:?}");
        }
    }

    #[test]
    fn hostile_peer_names_and_log_lines_are_escaped() {
        let page = render(&sample::figures(), &meta());
        assert!(!page.contains("<script"), "raw script tag in page");
        assert!(!page.contains("<img"), "raw img tag in page");
        assert!(
            !page.contains("<odd>") && !page.contains("<mx.example>") && !page.contains("<now>")
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            page.contains("&lt;img src=x onerror=alert(&#39;x&#39;)&gt; &amp; &quot;more&quot;"),
            "evidence escaped"
        );
        assert!(page.contains("mail.log.1.gz &amp; &lt;odd&gt;"));
        // Every `<` opens one of our own tags.
        let allowed = [
            "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "main", "header", "h1",
            "h2", "h3", "p", "b", "section", "div", "span", "dl", "dt", "dd", "small", "a", "ul",
            "li", "code", "svg", "line", "circle", "text", "rect", "path", "g", "table", "thead",
            "tbody", "tr", "th", "td", "br", "i",
        ];
        for (i, _) in page.match_indices('<') {
            let rest = &page[i + 1..];
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
                .collect();
            assert!(
                allowed.contains(&name.as_str()),
                "unexpected tag <{name} at {i}: {}",
                &page[i..(i + 60).min(page.len())]
            );
        }
    }

    #[test]
    fn no_external_references() {
        for (name, figures) in [
            ("week", sample::figures()),
            ("empty", sample::empty()),
            ("two days", sample::two_days()),
        ] {
            let page = render(&figures, &meta());
            assert!(
                page.contains("xmlns=\"http://www.w3.org/2000/svg\"") || name == "empty",
                "{name}: the namespace exception is exercised"
            );
            let stripped = without_svg_namespace(&page);
            for needle in [
                "http://", "https://", "src=", "<link", "@import", "url(", "<script", "<iframe",
                "<object", "<embed", "<img",
            ] {
                let at = stripped.find(needle);
                // The hostile evidence contains `src=` only in escaped form (`&lt;img src=`).
                let allowed = needle == "src="
                    && at.is_some_and(|i| stripped[..i].ends_with("&lt;img "))
                    && stripped.matches(needle).count() == 1;
                assert!(at.is_none() || allowed, "{name}: page contains {needle:?}");
            }
        }
    }

    #[test]
    fn realistic_page_has_every_part() {
        let f = sample::figures();
        let page = render(&f, &meta());
        for id in [
            "id=\"inbound-share\"",
            "id=\"outbound-share\"",
            "id=\"card-internal\"",
            "id=\"chart-share\"",
            "id=\"series-inbound\"",
            "id=\"series-outbound\"",
            "id=\"chart-versions\"",
            "id=\"chart-trust\"",
            "id=\"chart-kx\"",
            "id=\"chart-ciphers\"",
            "id=\"chart-plaintext-inbound\"",
            "id=\"chart-plaintext-outbound\"",
            "id=\"downgrades\"",
            "id=\"stripping\"",
            "id=\"starttls-failures\"",
            "id=\"peers\"",
            "id=\"inputs\"",
        ] {
            assert!(page.contains(id), "missing {id}");
        }
        assert!(page.contains(&format!(">{}</div>", pct(f.inbound.tls_share))));
        assert!(page.contains("TLS share per day"));
        assert!(page.contains("TLS resumed") && page.contains("still in clear"));
        assert!(page.contains("peer uses TLS for other mail"));
        assert!(!page.contains("NaN") && !page.contains("inf"));
        assert!(page.contains("The logs lack detail"));
        assert!(page.contains("<li>/var/log/mail.log.2.gz: cannot read: &lt;denied&gt;</li>"));
    }

    #[test]
    fn short_logs_chart_hours() {
        let page = render(&sample::two_days(), &meta());
        assert!(page.contains("TLS share per hour"));
        assert!(
            page.contains("id=\"outbound-share\">–<"),
            "no outbound mail"
        );
        assert!(!page.contains("NaN"));
    }

    #[test]
    fn hours_only_when_the_logs_span_three_days_or_less() {
        let mut f = sample::two_days();
        let page = render(&f, &meta());
        assert!(page.contains("TLS share per hour"));
        // Two days with mail, ten days apart: days, not hours.
        f.daily[1].period = "2026-11-26".into();
        let page = render(&f, &meta());
        assert!(page.contains("TLS share per day"));
        f.daily[1].period = "2026-11-18".into();
        let page = render(&f, &meta());
        assert!(
            page.contains("TLS share per hour"),
            "16th to 18th is 3 days"
        );
    }

    #[test]
    fn empty_figures_render_an_empty_state() {
        let page = render(&sample::empty(), &HtmlMeta::default());
        assert!(page.contains("No mail found in these logs"));
        assert!(page.contains("<title>sigillo report</title>"));
        assert!(!page.contains("NaN") && !page.contains("inf"));
        assert!(!page.contains("<svg"), "no charts without data");
        assert!(page.ends_with("</html>\n"));
        // A file that could not be read is said at the top, and named under the inputs.
        let meta = HtmlMeta {
            input_notes: vec!["mail.log.1: cannot read: Permission denied".into()],
            ..HtmlMeta::default()
        };
        let page = render(&sample::empty(), &meta);
        assert!(page.contains("1 input could not be read or was skipped"));
        assert!(page.contains("<li>mail.log.1: cannot read: Permission denied</li>"));
    }

    #[test]
    fn odd_figures_do_not_break_the_page() {
        let mut f = sample::figures();
        f.inbound.tls_share = f64::NAN;
        f.outbound.tls_share = 7.0;
        f.daily[0].period = "garbage".into();
        f.daily[1].inbound_share = f64::INFINITY;
        let page = render(&f, &meta());
        assert!(!page.contains("NaN") && !page.contains("inf"));
        assert!(page.contains("id=\"outbound-share\">100%<"));
    }

    #[test]
    fn period_units_table() {
        let cases = [
            ("1970-01-01", false, Some(0)),
            ("1970-01-02", false, Some(1)),
            ("2026-11-22", false, Some(20_779)),
            ("2000-02-29", false, Some(11_016)),
            ("1970-01-01T05", true, Some(5)),
            ("2026-11-22T13", true, Some(20_779 * 24 + 13)),
            ("2026-11-22T24", true, None),
            ("2026-11-22", true, None),
            ("2026-13-01", false, None),
            ("2026-1-01", false, None),
            ("", false, None),
            ("ü026-11-22", false, None),
        ];
        for (text, hourly, want) in cases {
            assert_eq!(period_unit(text, hourly), want, "{text} {hourly}");
        }
        for u in [0, 1, 11_016, 20_779, -1, 100_000] {
            let (y, m, d) = civil_from_days(u);
            assert_eq!(days_from_civil(y, m, d), u);
        }
    }

    #[test]
    fn number_and_share_formats() {
        let nums = [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1_234_567, "1,234,567"),
        ];
        for (n, want) in nums {
            assert_eq!(num(n), want);
        }
        let shares = [
            (0.0, "0%"),
            (1.0, "100%"),
            (0.6243, "62.4%"),
            (f64::NAN, "0%"),
            (-3.0, "0%"),
            (0.9999, "100%"),
        ];
        for (s, want) in shares {
            assert_eq!(pct(s), want, "{s}");
        }
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("äöü", 3), "äöü");
    }

    #[test]
    fn ticks_stay_few() {
        let cases = [
            (0, 0, false, 1),
            (0, 6, false, 7),
            (0, 40, true, 7),
            (0, 1_000_000, false, 13),
        ];
        for (min, max, hourly, most) in cases {
            let t = x_ticks(min, max, hourly);
            assert!(!t.is_empty() && t.len() <= most, "{min}..{max}: {t:?}");
            assert!(t.iter().all(|u| (min..=max).contains(u)));
        }
    }
}
