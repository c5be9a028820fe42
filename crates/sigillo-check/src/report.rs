//! What `sigillo check` reports: per-host facts, findings with evidence, and verdicts. The
//! functions here only interpret a [`ProbeResult`]; they do no I/O. Field names are stable:
//! they are the JSON schema documented in `docs/check-json.md`.

use crate::probe::{HandshakeFailure, ProbeFailure, ProbeResult, ProbeStep, phase_name};
use crate::tls::{self, CertificateInfo, TrustAnchors};
use rustls::pki_types::UnixTime;
use serde::Serialize;
use sigillo_smtp::dialogue::Phase;
use sigillo_smtp::tamper::{self, Sign};

/// The overall answer for a target or a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every host offered STARTTLS and the TLS handshake succeeded.
    Encrypted,
    /// A host does not offer STARTTLS, with no sign of tampering.
    Plaintext,
    /// A host shows signs that STARTTLS is being stripped or blocked.
    Stripped,
    /// A host could not be judged (rate limiting, tarpit, timeout, garbled replies).
    Inconclusive,
    /// The target itself could not be checked (DNS failure, null MX, unreachable network).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Encrypted => "encrypted",
            Verdict::Plaintext => "plaintext",
            Verdict::Stripped => "stripped",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Error => "error",
        }
    }
}

/// How serious a finding is; `--fail-on` picks the lowest that makes the exit code 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Could not judge, or worth knowing (a middlebox that masks the banner).
    Low,
    /// Certificate problems: TLS still protects against passive eavesdropping. A published
    /// policy that senders ignore because it is broken.
    Medium,
    /// Mail can travel in clear: STARTTLS not offered. Or senders that apply the domain's
    /// policy refuse an MX (MTA-STS `enforce`, DANE) or cannot resolve it (DNSSEC-bogus).
    High,
    /// STARTTLS is being stripped or blocked.
    Critical,
}

/// One finding, with the lines that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// RFC 8460 result type where one fits (`starttls-not-supported`,
    /// `certificate-host-mismatch`, `certificate-expired`, `certificate-not-trusted`,
    /// `validation-failure`, `sts-policy-fetch-error`, `sts-policy-invalid`,
    /// `sts-webpki-invalid`, `tlsa-invalid`, `dnssec-invalid`, `dane-required`), else ours
    /// (`starttls-stripped`, `starttls-inconsistent`, `smtp-inspection`, `tlsrpt-invalid`,
    /// `tlsrpt-missing`, `inconclusive`).
    pub id: &'static str,
    /// A finer classification (`masked-capability`, `starttls-rejected`, `timeout`, …).
    pub kind: &'static str,
    pub severity: Severity,
    /// The MX (or host) the finding is about, if it is about one host.
    pub mx: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    /// One sentence for people.
    pub message: String,
    /// The exact lines seen (`S:` server, `C:` client) or other facts that show it.
    pub evidence: Vec<String>,
}

/// The STARTTLS part of a host report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartTlsReport {
    /// Listed in the EHLO reply.
    pub offered: bool,
    /// We sent the command.
    pub attempted: bool,
    /// The reply to STARTTLS, if any (its first line).
    pub reply: Option<String>,
}

/// The certificate part of a TLS report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateReport {
    /// Chain trusted and valid for the name checked.
    pub verified: bool,
    /// Why not, if not.
    pub error: Option<String>,
    /// RFC 8460 result types of the problems found.
    pub problems: Vec<&'static str>,
    /// The name the certificate was checked against (the MX name), if any.
    pub name: Option<String>,
    pub chain_trusted: bool,
    pub name_matches: Option<bool>,
    /// The chain as presented, leaf first.
    pub chain: Vec<CertificateInfo>,
}

/// The TLS part of a host report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsReport {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// IANA cipher suite name.
    pub cipher: String,
    /// The key-exchange group (`X25519`, `secp256r1`).
    pub key_exchange: Option<String>,
    pub handshake_ms: f64,
    /// The name sent as SNI.
    pub sni: Option<String>,
    /// EHLO keywords offered inside TLS.
    pub extensions: Vec<String>,
    pub certificate: CertificateReport,
}

/// Everything about one MX address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    /// The MX host name, or the address for address targets.
    pub mx: String,
    pub preference: Option<u16>,
    pub address: String,
    pub port: u16,
    pub status: Verdict,
    pub connect_ms: Option<f64>,
    pub greeting_ms: Option<f64>,
    pub total_ms: f64,
    /// The first line of the greeting, as received.
    pub banner: Option<String>,
    /// Every greeting line.
    pub banner_lines: Vec<String>,
    /// The EHLO keywords before TLS.
    pub extensions: Vec<String>,
    /// True when EHLO was refused and HELO was used.
    pub helo_fallback: bool,
    pub starttls: StartTlsReport,
    pub tls: Option<TlsReport>,
    /// What went wrong, in words, if the session did not end normally.
    pub error: Option<String>,
    /// The same, structured.
    pub failure: Option<ProbeFailure>,
    /// The whole session (`S:`/`C:` lines; the TLS part is marked).
    pub transcript: Vec<String>,
}

/// Interprets one probe for one MX name: the host report and its findings.
pub fn analyze_host(
    result: &ProbeResult,
    mx: &str,
    preference: Option<u16>,
    check_name: Option<&str>,
    anchors: &TrustAnchors,
    now: UnixTime,
) -> (HostReport, Vec<Finding>) {
    let t = &result.transcript;
    let ehlo = t.ehlo_reply();
    let offered = ehlo.as_ref().is_some_and(|e| e.starttls());
    let mut findings = Vec::new();
    let finding = |id, kind, severity, message: String, evidence: Vec<String>| Finding {
        id,
        kind,
        severity,
        mx: Some(mx.to_owned()),
        address: Some(result.address.ip().to_string()),
        port: Some(result.address.port()),
        message,
        evidence,
    };
    let transcript: Vec<String> = t
        .lines
        .iter()
        .map(|l| {
            let who = match l.direction {
                sigillo_smtp::dialogue::Direction::Client => "C",
                sigillo_smtp::dialogue::Direction::Server => "S",
            };
            if l.tls {
                format!("{who} (TLS): {}", l.line)
            } else {
                format!("{who}: {}", l.line)
            }
        })
        .collect();

    let tls_report = result.tls.as_ref().map(|facts| {
        let chain_result = tls::verify_chain(&facts.chain, anchors, now);
        let name_result = check_name.map(|name| tls::verify_name(&facts.chain, name));
        let mut problems = Vec::new();
        let mut errors = Vec::new();
        if let Err(f) = &chain_result {
            problems.push(f.problem.result_type());
            errors.push(f.message.clone());
            findings.push(finding(
                f.problem.result_type(),
                "chain",
                Severity::Medium,
                format!("{}: {}", mx, f.message),
                facts
                    .chain
                    .first()
                    .and_then(|c| tls::certificate_info(c))
                    .map(|c| {
                        vec![
                            format!("subject: {}", c.subject),
                            format!("issuer: {}", c.issuer),
                            format!("not after: {}", c.not_after),
                        ]
                    })
                    .unwrap_or_default(),
            ));
        }
        if let Some(Err(f)) = &name_result
            && !problems.contains(&f.problem.result_type())
        {
            problems.push(f.problem.result_type());
            errors.push(f.message.clone());
            let sans = facts
                .chain
                .first()
                .and_then(|c| tls::certificate_info(c))
                .map(|c| {
                    vec![
                        format!("subjectAltName: {}", c.sans.join(", ")),
                        format!("subject: {}", c.subject),
                    ]
                })
                .unwrap_or_default();
            findings.push(finding(
                f.problem.result_type(),
                "name",
                Severity::Medium,
                format!("{mx}: {}", f.message),
                sans,
            ));
        }
        TlsReport {
            version: facts.version.clone(),
            cipher: facts.cipher.clone(),
            key_exchange: facts.key_exchange.clone(),
            handshake_ms: facts.handshake_ms,
            sni: result.sni.clone(),
            extensions: t.tls_ehlo_reply().map(|e| e.keywords()).unwrap_or_default(),
            certificate: CertificateReport {
                verified: problems.is_empty(),
                error: (!errors.is_empty()).then(|| errors.join("; ")),
                problems,
                name: check_name.map(str::to_owned),
                chain_trusted: chain_result.is_ok(),
                name_matches: name_result.map(|r| r.is_ok()),
                chain: facts
                    .chain
                    .iter()
                    .filter_map(|c| tls::certificate_info(c))
                    .collect(),
            },
        }
    });

    let signs = tamper::signs(t);
    let masked_banner = signs
        .iter()
        .find(|s| matches!(s, Sign::MaskedBanner { .. }));
    // A masked keyword hides STARTTLS only when STARTTLS itself is not listed: beside it, it
    // is another extension the middlebox does not allow (an inspecting ASA with `allow-tls`).
    let masked_capability = signs
        .iter()
        .find(|s| matches!(s, Sign::MaskedCapability { .. }));
    let strip_sign = masked_capability.filter(|_| !offered).or_else(|| {
        signs
            .iter()
            .find(|s| matches!(s, Sign::StartTlsRejected { .. }))
    });
    let masked_other = masked_capability.filter(|_| offered);
    let starttls_lines = || -> Vec<String> {
        let mut lines: Vec<String> = ehlo
            .iter()
            .flat_map(|e| {
                e.extensions
                    .iter()
                    .filter(|x| x.keyword == "STARTTLS")
                    .map(|x| format!("S: {}", x.line))
            })
            .collect();
        if t.starttls.is_some() {
            lines.push("C: STARTTLS".to_owned());
        }
        lines.extend(
            t.starttls
                .iter()
                .flat_map(|r| r.lines.iter().map(|l| format!("S: {l}"))),
        );
        lines
    };

    let status = if let Some(sign) = strip_sign {
        let (kind, message) = match sign {
            Sign::MaskedCapability { .. } => (
                "masked-capability",
                "STARTTLS is masked in the EHLO reply (Cisco PIX/ASA inspect esmtp style): mail to this host goes in clear".to_owned(),
            ),
            Sign::StartTlsRejected { code: 454, .. } => (
                "starttls-unavailable",
                "STARTTLS is offered but answered 454 (TLS not available): a TLS fault on the server (e.g. a missing key), or a middlebox refusing TLS; either way senders fall back to plaintext".to_owned(),
            ),
            Sign::StartTlsRejected { code, .. } => (
                "starttls-rejected",
                format!("STARTTLS is offered but the command is answered {code} (not recognized): a middlebox rewrites it on its way to the server"),
            ),
            _ => ("tampering", "signs of SMTP tampering".to_owned()),
        };
        // Every sign's lines, in session order: banner, EHLO, STARTTLS and its reply.
        let mut evidence: Vec<String> = Vec::new();
        for line in signs.iter().flat_map(|s| s.evidence()) {
            if !evidence.contains(line) {
                evidence.push(line.clone());
            }
        }
        findings.push(finding(
            "starttls-stripped",
            kind,
            Severity::Critical,
            message,
            evidence,
        ));
        Verdict::Stripped
    } else if let Some(failure) = result.failure.as_ref().filter(|f| !at_quit(f))
        && result.tls.is_none()
    {
        match failure {
            ProbeFailure::NetworkUnreachable { .. } => Verdict::Error,
            ProbeFailure::Handshake {
                failure: HandshakeFailure::NotTls | HandshakeFailure::Closed,
                message,
            } if t.starttls.as_ref().is_some_and(|r| r.code == 220) => {
                let mut evidence = starttls_lines();
                evidence.push(format!("TLS: {message}"));
                findings.push(finding(
                    "starttls-stripped",
                    "handshake-broken",
                    Severity::Critical,
                    "the server accepted STARTTLS but no TLS handshake followed (connection dropped or non-TLS data): something in the path blocks TLS".to_owned(),
                    evidence,
                ));
                Verdict::Stripped
            }
            ProbeFailure::Handshake {
                failure: HandshakeFailure::NotTls,
                message,
            } if t.starttls.is_none() => {
                // Implicit TLS (port 465, --implicit-tls): the first bytes were not TLS.
                findings.push(finding(
                    "inconclusive",
                    "not-tls",
                    Severity::Low,
                    format!("{mx}: the server did not answer in TLS on connect ({message}): it may speak plaintext SMTP on this port (try without --implicit-tls)"),
                    vec![format!("TLS: {message}")],
                ));
                Verdict::Inconclusive
            }
            ProbeFailure::Handshake { failure, message } => {
                let mut evidence = starttls_lines();
                evidence.push(format!("TLS: {message}"));
                let (id, kind, severity) = match failure {
                    HandshakeFailure::Timeout => ("inconclusive", "timeout", Severity::Low),
                    _ => (
                        "validation-failure",
                        "tls-handshake-failed",
                        Severity::Medium,
                    ),
                };
                findings.push(finding(
                    id,
                    kind,
                    severity,
                    format!("{mx}: TLS handshake failed: {message}"),
                    evidence,
                ));
                Verdict::Inconclusive
            }
            other => {
                let kind = match other {
                    ProbeFailure::ConnectFailed { .. } => "connect-failed",
                    ProbeFailure::ConnectTimeout
                    | ProbeFailure::ReplyTimeout { .. }
                    | ProbeFailure::SessionTimeout { .. } => "timeout",
                    ProbeFailure::Closed { .. } => "connection-closed",
                    ProbeFailure::Malformed { .. } => "protocol-error",
                    _ => "io-error",
                };
                let mut evidence = transcript.clone();
                evidence.push(format!("error: {other}"));
                findings.push(finding(
                    "inconclusive",
                    kind,
                    Severity::Low,
                    format!("{mx}: {other}"),
                    evidence,
                ));
                Verdict::Inconclusive
            }
        }
    } else if let Some(reply) = t.greeting.as_ref().filter(|g| g.code != 220) {
        let kind = match reply.code {
            421 => "service-unavailable",
            554 => "rejected",
            _ => "unexpected-greeting",
        };
        findings.push(finding(
            "inconclusive",
            kind,
            Severity::Low,
            format!(
                "{mx}: greeting {} (rate limiting or refusal): STARTTLS support unknown",
                reply.code
            ),
            reply.lines.iter().map(|l| format!("S: {l}")).collect(),
        ));
        Verdict::Inconclusive
    } else if result.tls.is_some() {
        Verdict::Encrypted
    } else if let Some(reply) = t.starttls.as_ref().filter(|r| r.code != 220) {
        // Offered, then refused with a code that is no sign of a rewrite (those are above).
        let evidence = starttls_lines();
        if reply.code == 421 || reply.is_transient() {
            findings.push(finding(
                "inconclusive",
                "starttls-deferred",
                Severity::Low,
                format!(
                    "{mx}: STARTTLS is offered but answered {} (a temporary refusal): try again later",
                    reply.code
                ),
                evidence,
            ));
            Verdict::Inconclusive
        } else {
            findings.push(finding(
                "starttls-not-supported",
                "starttls-refused",
                Severity::High,
                format!(
                    "{mx} offers STARTTLS but refuses the command with {}: senders fall back to plaintext",
                    reply.code
                ),
                evidence,
            ));
            Verdict::Plaintext
        }
    } else if let Some((ehlo_reply, helo)) = t
        .ehlo
        .as_ref()
        .filter(|r| r.code >= 500)
        .map(|r| (r, t.helo.as_ref()))
        .filter(|(_, helo)| !helo.is_some_and(|h| (200..300).contains(&h.code)))
    {
        // EHLO refused, and HELO refused too or not tried: the server refused the session,
        // which says nothing about STARTTLS (RFC 5321 §4.1.1.1).
        let mut evidence: Vec<String> =
            ehlo_reply.lines.iter().map(|l| format!("S: {l}")).collect();
        if let Some(helo) = helo {
            evidence.extend(helo.lines.iter().map(|l| format!("S: {l}")));
        }
        let helo_text = helo.map_or(String::new(), |h| format!(", HELO {}", h.code));
        findings.push(finding(
            "inconclusive",
            "ehlo-refused",
            Severity::Low,
            format!(
                "{mx}: EHLO answered {}{helo_text}: the server refused the session, STARTTLS support unknown (a full domain name as --ehlo may help)",
                ehlo_reply.code
            ),
            evidence,
        ));
        Verdict::Inconclusive
    } else if let Some(reply) = t
        .ehlo
        .as_ref()
        .filter(|r| r.code == 421 || r.is_transient())
    {
        findings.push(finding(
            "inconclusive",
            "service-unavailable",
            Severity::Low,
            format!(
                "{mx}: EHLO answered {}: STARTTLS support unknown",
                reply.code
            ),
            reply.lines.iter().map(|l| format!("S: {l}")).collect(),
        ));
        Verdict::Inconclusive
    } else if let Some(banner) = masked_banner {
        let mut evidence = banner.evidence().to_vec();
        evidence.extend(
            ehlo.iter()
                .flat_map(|e| e.extensions.iter().map(|x| x.line.clone())),
        );
        findings.push(finding(
            "starttls-stripped",
            "masked-banner",
            Severity::Critical,
            "the banner is masked (Cisco PIX/ASA inspect esmtp) and STARTTLS is missing: mail to this host goes in clear".to_owned(),
            evidence,
        ));
        Verdict::Stripped
    } else {
        let mut evidence: Vec<String> = t
            .ehlo
            .as_ref()
            .or(t.helo.as_ref())
            .map(|r| r.lines.iter().map(|l| format!("S: {l}")).collect())
            .unwrap_or_default();
        if t.helo.is_some() {
            evidence.insert(0, "EHLO refused, HELO used".to_owned());
        }
        findings.push(finding(
            "starttls-not-supported",
            "not-offered",
            Severity::High,
            format!("{mx} does not offer STARTTLS: mail to it travels in clear"),
            evidence,
        ));
        Verdict::Plaintext
    };

    if let Some(sign) = masked_other.filter(|_| status != Verdict::Stripped) {
        findings.push(finding(
            "smtp-inspection",
            "masked-capability",
            Severity::Low,
            "EHLO keywords are masked beside STARTTLS: a middlebox inspects SMTP (Cisco PIX/ASA inspect esmtp) and hides extensions it does not allow, though it lets STARTTLS through".to_owned(),
            sign.evidence().to_vec(),
        ));
    }
    if result.bytes_before_handshake > 0 {
        findings.push(finding(
            "smtp-inspection",
            "data-before-handshake",
            Severity::Low,
            format!(
                "{mx}: {} bytes arrived after the 220 reply to STARTTLS and before the TLS handshake (discarded, RFC 3207 §4.2): a broken server, or a middlebox injecting data",
                result.bytes_before_handshake
            ),
            starttls_lines(),
        ));
    }
    if let Some(failure) = result.failure.as_ref().filter(|f| at_quit(f))
        && status != Verdict::Encrypted
    {
        findings.push(finding(
            "inconclusive",
            "after-quit",
            Severity::Low,
            format!("{mx}: at the end of the session: {failure}"),
            vec![format!("error: {failure}")],
        ));
    }
    if let Some(banner) = masked_banner
        && !matches!(status, Verdict::Stripped)
    {
        findings.push(finding(
            "smtp-inspection",
            "masked-banner",
            Severity::Low,
            "the banner is masked: a middlebox inspects SMTP (Cisco PIX/ASA inspect esmtp), though it lets STARTTLS through".to_owned(),
            banner.evidence().to_vec(),
        ));
    }
    if status == Verdict::Encrypted
        && let Some(failure) = &result.failure
    {
        findings.push(finding(
            "inconclusive",
            "after-tls",
            Severity::Low,
            format!("{mx}: after the TLS handshake: {failure}"),
            vec![format!("error: {failure}")],
        ));
    }

    let error = result.failure.as_ref().map(|f| match f {
        ProbeFailure::Malformed { phase, error } => format!(
            "malformed SMTP reply from {} in the {}: {error}",
            result.address,
            phase_name(*phase)
        ),
        other => other.to_string(),
    });
    let report = HostReport {
        mx: mx.to_owned(),
        preference,
        address: result.address.ip().to_string(),
        port: result.address.port(),
        status,
        connect_ms: result.connect_ms,
        greeting_ms: result.greeting_ms,
        total_ms: result.total_ms,
        banner: t.greeting.as_ref().and_then(|g| g.lines.first().cloned()),
        banner_lines: t
            .greeting
            .as_ref()
            .map(|g| g.lines.clone())
            .unwrap_or_default(),
        extensions: ehlo.as_ref().map(|e| e.keywords()).unwrap_or_default(),
        helo_fallback: t.helo.is_some(),
        starttls: StartTlsReport {
            offered,
            attempted: t.starttls.is_some(),
            reply: t.starttls.as_ref().and_then(|r| r.lines.first().cloned()),
        },
        tls: tls_report,
        error,
        failure: result.failure.clone(),
        transcript,
    };
    (report, findings)
}

/// A failure while waiting for the reply to QUIT: the session already showed what it had to.
fn at_quit(failure: &ProbeFailure) -> bool {
    matches!(
        failure,
        ProbeFailure::ReplyTimeout {
            phase: Phase::Quit,
            ..
        } | ProbeFailure::Closed {
            phase: Phase::Quit,
            ..
        } | ProbeFailure::Malformed {
            phase: Phase::Quit,
            ..
        } | ProbeFailure::Io {
            phase: Phase::Quit,
            ..
        } | ProbeFailure::SessionTimeout {
            phase: ProbeStep::Quit,
            ..
        }
    )
}

/// The worst host status decides: stripped, then plaintext, then inconclusive, then
/// encrypted. Hosts in `error` (unreachable network) count only when nothing else does.
pub fn aggregate(statuses: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut seen = [false; 5];
    for s in statuses {
        seen[s as usize] = true;
    }
    for v in [
        Verdict::Stripped,
        Verdict::Plaintext,
        Verdict::Inconclusive,
        Verdict::Encrypted,
    ] {
        if seen[v as usize] {
            return v;
        }
    }
    Verdict::Error
}

/// STARTTLS on some hosts (or address families) of a target but not on others.
pub fn inconsistency(hosts: &[HostReport]) -> Option<Finding> {
    let with: Vec<&HostReport> = hosts
        .iter()
        .filter(|h| h.status == Verdict::Encrypted || h.starttls.offered)
        .collect();
    let without: Vec<&HostReport> = hosts
        .iter()
        .filter(|h| {
            matches!(h.status, Verdict::Plaintext | Verdict::Stripped) && !h.starttls.offered
        })
        .collect();
    if with.is_empty() || without.is_empty() {
        return None;
    }
    let family = |h: &HostReport| {
        if h.address.contains(':') {
            "IPv6"
        } else {
            "IPv4"
        }
    };
    let mut evidence: Vec<String> = with
        .iter()
        .map(|h| {
            format!(
                "{} {} ({}) port {}: STARTTLS offered",
                h.mx,
                h.address,
                family(h),
                h.port
            )
        })
        .collect();
    evidence.extend(without.iter().map(|h| {
        format!(
            "{} {} ({}) port {}: no STARTTLS",
            h.mx,
            h.address,
            family(h),
            h.port
        )
    }));
    Some(Finding {
        id: "starttls-inconsistent",
        kind: "some-hosts",
        severity: Severity::High,
        mx: None,
        address: None,
        port: None,
        message: format!(
            "STARTTLS is offered by {} of {} hosts: the others are misconfigured, or STARTTLS is stripped on their path",
            with.len(),
            with.len() + without.len()
        ),
        evidence,
    })
}

/// One MX record and the addresses it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MxReport {
    pub host: String,
    pub preference: Option<u16>,
    pub addresses: Vec<String>,
    /// A DNS error for this MX's addresses.
    pub error: Option<String>,
}

/// The report for one target: the JSON document `--json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetReport {
    pub target: String,
    /// `domain`, `host` or `address`.
    pub kind: &'static str,
    pub port: u16,
    pub verdict: Verdict,
    /// The MX records used (for host and address targets, the one host).
    pub mx: Vec<MxReport>,
    /// No MX: the domain's own A/AAAA were used (RFC 5321 §5.1).
    pub implicit_mx: bool,
    /// The domain publishes `MX 0 .` (RFC 7505).
    pub null_mx: bool,
    pub hosts: Vec<HostReport>,
    pub findings: Vec<Finding>,
    /// What the domain's MTA-STS, TLS-RPT, DNSSEC and DANE records say and how its MX hosts
    /// fare against them; `None` for host and address targets, and with `--no-policy`.
    pub policy: Option<crate::policy_report::PolicyReport>,
    /// Why the target could not be checked, for verdict `error`.
    pub error: Option<String>,
    /// When the check started (RFC 3339) and how long it took.
    pub started: String,
    pub duration_ms: f64,
}

impl TargetReport {
    /// The most severe finding, if any.
    pub fn worst_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::TlsFacts;
    use sigillo_smtp::dialogue::{ClientDialogue, DialogueConfig, Step};
    use sigillo_smtp::reply::{ReplyLimits, parse_reply};

    /// A probe result from the server's replies in order (the TLS handshake, when STARTTLS
    /// gets 220, succeeds when `tls` is true), the failure that ended it, and the bytes seen
    /// before the handshake.
    fn probe(
        replies: &[&str],
        tls: bool,
        failure: Option<ProbeFailure>,
        early: usize,
    ) -> ProbeResult {
        let mut d = ClientDialogue::new(DialogueConfig {
            ehlo_name: "probe.test".into(),
            starttls: true,
            implicit_tls: false,
        });
        let mut handshook = false;
        for raw in replies {
            let (reply, _) = parse_reply(raw.as_bytes(), &ReplyLimits::default())
                .unwrap()
                .unwrap();
            if let Ok(Step::StartTls) = d.on_reply(reply)
                && tls
            {
                d.on_tls_established();
                handshook = true;
            }
        }
        ProbeResult {
            address: "192.0.2.1:25".parse().unwrap(),
            sni: Some("mx.example".into()),
            connect_ms: Some(1.0),
            greeting_ms: Some(1.0),
            total_ms: 2.0,
            transcript: d.into_transcript(),
            tls: handshook.then(|| TlsFacts {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                key_exchange: Some("X25519".into()),
                handshake_ms: 1.0,
                chain: Vec::new(),
            }),
            failure,
            bytes_before_handshake: early,
        }
    }

    /// Verdicts and the findings that carry them, for sessions that refuse or cut short in
    /// ways that say nothing of STARTTLS, and for middlebox signs beside a working STARTTLS.
    #[test]
    fn verdict_table() {
        const BANNER: &str = "220 mx.example ESMTP\r\n";
        const EHLO_TLS: &str = "250-mx.example\r\n250 STARTTLS\r\n";
        const EHLO_PLAIN: &str = "250-mx.example\r\n250 8BITMIME\r\n";
        let quit_closed = || {
            Some(ProbeFailure::Closed {
                phase: Phase::Quit,
                partial_reply: None,
            })
        };
        let session_timeout = |phase| {
            Some(ProbeFailure::SessionTimeout {
                phase,
                limit_ms: 1500,
                partial_reply: None,
            })
        };
        type Case = (
            &'static str,
            Vec<&'static str>,
            bool,
            Option<ProbeFailure>,
            usize,
        );
        let cases: Vec<(Case, Verdict, &str)> = vec![
            (
                (
                    "EHLO 554, no HELO",
                    vec![BANNER, "554 5.7.1 blocked\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Inconclusive,
                "ehlo-refused",
            ),
            (
                (
                    "EHLO 550, HELO 550",
                    vec![BANNER, "550 go away\r\n", "550 go away\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Inconclusive,
                "ehlo-refused",
            ),
            (
                (
                    "EHLO 500, HELO 421",
                    vec![BANNER, "500 what\r\n", "421 bye\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Inconclusive,
                "ehlo-refused",
            ),
            (
                (
                    "EHLO 502, HELO 250: no ESMTP",
                    vec![BANNER, "502 no\r\n", "250 mx.example\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Plaintext,
                "not-offered",
            ),
            (
                (
                    "STARTTLS 421",
                    vec![BANNER, EHLO_TLS, "421 busy\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Inconclusive,
                "starttls-deferred",
            ),
            (
                (
                    "STARTTLS 451",
                    vec![BANNER, EHLO_TLS, "451 later\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Inconclusive,
                "starttls-deferred",
            ),
            (
                (
                    "STARTTLS 530",
                    vec![BANNER, EHLO_TLS, "530 no\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Plaintext,
                "starttls-refused",
            ),
            (
                (
                    "STARTTLS 502: rewritten",
                    vec![BANNER, EHLO_TLS, "502 unknown\r\n"],
                    false,
                    None,
                    0,
                ),
                Verdict::Stripped,
                "starttls-rejected",
            ),
            (
                (
                    "masked keyword beside STARTTLS, TLS works",
                    vec![
                        BANNER,
                        "250-mx.example\r\n250-XXXXA\r\n250 STARTTLS\r\n",
                        "220 go\r\n",
                    ],
                    true,
                    None,
                    0,
                ),
                Verdict::Encrypted,
                "masked-capability",
            ),
            (
                (
                    "STARTTLS masked",
                    vec![
                        BANNER,
                        "250-mx.example\r\n250 XXXXXXXA\r\n",
                        "500 unknown\r\n",
                    ],
                    false,
                    None,
                    0,
                ),
                Verdict::Stripped,
                "masked-capability",
            ),
            (
                (
                    "closed at QUIT, no STARTTLS",
                    vec![BANNER, EHLO_PLAIN],
                    false,
                    quit_closed(),
                    0,
                ),
                Verdict::Plaintext,
                "after-quit",
            ),
            (
                (
                    "masked keyword beside STARTTLS, the command rewritten",
                    vec![
                        BANNER,
                        "250-mx.example\r\n250-XXXXA\r\n250 STARTTLS\r\n",
                        "502 unknown\r\n",
                    ],
                    false,
                    None,
                    0,
                ),
                Verdict::Stripped,
                "starttls-rejected",
            ),
            (
                (
                    "data before the handshake",
                    vec![BANNER, EHLO_TLS, "220 go\r\n"],
                    true,
                    None,
                    14,
                ),
                Verdict::Encrypted,
                "data-before-handshake",
            ),
            (
                (
                    "session timeout while the EHLO reply trickles in",
                    vec![BANNER],
                    false,
                    session_timeout(ProbeStep::Ehlo),
                    0,
                ),
                Verdict::Inconclusive,
                "timeout",
            ),
            (
                (
                    "session timeout in the handshake",
                    vec![BANNER, EHLO_TLS, "220 go\r\n"],
                    false,
                    session_timeout(ProbeStep::Handshake),
                    0,
                ),
                Verdict::Inconclusive,
                "timeout",
            ),
            (
                (
                    "session timeout at QUIT, no STARTTLS",
                    vec![BANNER, EHLO_PLAIN],
                    false,
                    session_timeout(ProbeStep::Quit),
                    0,
                ),
                Verdict::Plaintext,
                "after-quit",
            ),
            (
                (
                    "session timeout in the EHLO reply in TLS",
                    vec![BANNER, EHLO_TLS, "220 go\r\n"],
                    true,
                    session_timeout(ProbeStep::TlsEhlo),
                    0,
                ),
                Verdict::Encrypted,
                "after-tls",
            ),
        ];
        for ((name, replies, tls, failure, early), verdict, kind) in cases {
            let result = probe(&replies, tls, failure, early);
            let (host, findings) = analyze_host(
                &result,
                "mx.example",
                Some(10),
                Some("mx.example"),
                &TrustAnchors::mozilla(),
                UnixTime::now(),
            );
            assert_eq!(host.status, verdict, "{name}: {findings:#?}");
            assert!(
                findings.iter().any(|f| f.kind == kind),
                "{name}: no {kind} in {findings:#?}"
            );
            if verdict == Verdict::Stripped {
                assert!(
                    !findings.iter().any(|f| f.id == "smtp-inspection"),
                    "{name}: a stripped host has no 'lets STARTTLS through' note: {findings:#?}"
                );
            }
            if verdict != Verdict::Plaintext || kind == "starttls-refused" {
                assert!(
                    !findings.iter().any(|f| f.kind == "not-offered"),
                    "{name}: {findings:#?}"
                );
            }
        }
    }

    #[test]
    fn aggregation_order() {
        use Verdict::*;
        assert_eq!(aggregate([Encrypted, Plaintext, Inconclusive]), Plaintext);
        assert_eq!(aggregate([Encrypted, Stripped, Plaintext]), Stripped);
        assert_eq!(aggregate([Encrypted, Error]), Encrypted);
        assert_eq!(aggregate([Inconclusive, Encrypted]), Inconclusive);
        assert_eq!(aggregate([Error]), Error);
        assert_eq!(aggregate([]), Error);
    }
}
