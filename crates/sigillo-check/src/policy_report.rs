//! What a mail domain's published TLS policies mean for the MX hosts `sigillo check` probed:
//! MTA-STS, TLS-RPT, the DNSSEC status of the MX RRset, and DANE matched against each
//! presented chain. Interpretation only, no I/O: the lookups come from [`crate::discovery`].
//!
//! Findings use RFC 8460 result types (`sts-policy-fetch-error`, `sts-policy-invalid`,
//! `sts-webpki-invalid`, `validation-failure`, `tlsa-invalid`, `dnssec-invalid`,
//! `dane-required`), so a check lines up with the TLS-RPT reports senders would send. Their
//! severity follows what compliant senders do: a failure they answer by deferring mail (an
//! MX outside an `enforce` policy, a DANE mismatch, a bogus MX RRset) is high; a broken
//! policy they ignore, falling back to opportunistic TLS, is medium.

use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use sigillo_policy::dane::{CertUsage, DaneOutcome, Tlsa, match_chain};
use sigillo_policy::mta_sts::{Mode, Policy, StsRecord};
use sigillo_policy::tlsrpt::{ResultType, TlsRptRecord};

use crate::discovery::Discovered;
use crate::dns::Mx;
use crate::policy::dns::{DnssecStatus, TxtLookup, Validated};
use crate::policy::fetch::{FetchError, policy_url};
use crate::report::{Finding, HostReport, Severity, TargetReport, Verdict};
use crate::tls;

/// How far the domain's policies protect mail to it against downgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyStatus {
    /// DANE, or MTA-STS in mode `enforce`, applies and every MX host passes it: senders
    /// that apply it can be neither downgraded to plaintext nor sent to an impostor.
    Enforced,
    /// MTA-STS in mode `testing` only, and every MX host passes it: failures would be
    /// reported, not prevented.
    Testing,
    /// A policy is published but fails (a policy finding of medium severity or worse):
    /// senders that apply it defer mail (DANE, `enforce`), report failures (`testing`), or
    /// ignore the broken policy.
    Failing,
    /// Neither DANE nor MTA-STS (or MTA-STS mode `none`): senders use opportunistic TLS,
    /// which STARTTLS stripping defeats.
    None,
    /// A lookup or a probe was inconclusive, so whether a policy protects the domain is
    /// not known.
    Unknown,
}

impl PolicyStatus {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyStatus::Enforced => "enforced",
            PolicyStatus::Testing => "testing",
            PolicyStatus::Failing => "failing",
            PolicyStatus::None => "none",
            PolicyStatus::Unknown => "unknown",
        }
    }
}

/// The `policy` object of a domain's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    pub status: PolicyStatus,
    /// The mechanisms that apply and that every MX host passes: `dane`, `mta-sts`.
    pub enforced_by: Vec<&'static str>,
    pub mta_sts: MtaStsReport,
    pub tlsrpt: TlsRptReport,
    pub dnssec: DnssecReport,
    pub dane: DaneReport,
}

/// MTA-STS (RFC 8461): the record, the policy and each MX against it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MtaStsReport {
    /// The `_mta-sts` TXT record in canonical form (`v=STSv1; id=20240101;`), if valid.
    pub record: Option<String>,
    /// Its policy id.
    pub id: Option<String>,
    /// Why there is no valid record although TXT records exist, or why the lookup failed.
    pub record_error: Option<String>,
    /// The policy URL, when it was fetched (only with a valid record).
    pub url: Option<String>,
    /// The policy, when fetched and valid.
    pub policy: Option<PolicyFile>,
    /// Why no valid policy could be had.
    pub fetch_error: Option<String>,
    /// The RFC 8460 result type of `fetch_error`.
    pub fetch_result_type: Option<&'static str>,
    /// Each MX against the policy (modes `enforce` and `testing`).
    pub mx: Vec<StsMxReport>,
}

/// A fetched MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyFile {
    /// Always `STSv1` (anything else does not parse).
    pub version: &'static str,
    pub mode: Mode,
    /// The `mx:` patterns (`mail.example.com`, `*.example.net`).
    pub mx: Vec<String>,
    /// Seconds.
    pub max_age: u32,
    /// Unknown `name: value` lines.
    pub extensions: Vec<String>,
}

impl From<&Policy> for PolicyFile {
    fn from(policy: &Policy) -> Self {
        Self {
            version: "STSv1",
            mode: policy.mode,
            mx: policy.mx.iter().map(ToString::to_string).collect(),
            max_age: policy.max_age,
            extensions: policy
                .extensions
                .iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect(),
        }
    }
}

/// One MX host against an MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StsMxReport {
    pub host: String,
    /// The host matches one of the policy's `mx:` patterns.
    pub matches_policy: bool,
    /// Every address of the host that was judged reached TLS (`null`: none was judged).
    pub tls: Option<bool>,
    /// Every address that reached TLS presented a certificate valid for the host name
    /// (`null`: none reached TLS).
    pub certificate_valid: Option<bool>,
}

/// TLS-RPT (RFC 8460): where senders report failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsRptReport {
    /// The `_smtp._tls` TXT record in canonical form, if valid.
    pub record: Option<String>,
    /// Its report URIs (`mailto:…`, `https://…`).
    pub rua: Vec<String>,
    /// Why there is no valid record although TXT records exist, or why the lookup failed.
    pub error: Option<String>,
}

/// The DNSSEC status of the MX RRset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MxDnssec {
    /// Validated (or, without MX, validly denied): DANE can apply.
    Secure,
    /// Provably unsigned: DANE does not apply.
    Insecure,
    /// Fails validation: validating resolvers answer SERVFAIL.
    Bogus,
    /// Neither proven secure nor insecure.
    Indeterminate,
    /// The validating lookup failed (SERVFAIL, timeout).
    LookupFailed,
    /// Not even the trust anchor's zone validates through this resolver (it strips DNSSEC
    /// records, or the anchors do not lead to it): DNSSEC and DANE cannot be checked.
    Unavailable,
    /// DNSSEC lookups are off.
    NotChecked,
}

impl MxDnssec {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MxDnssec::Secure => "secure",
            MxDnssec::Insecure => "insecure",
            MxDnssec::Bogus => "bogus",
            MxDnssec::Indeterminate => "indeterminate",
            MxDnssec::LookupFailed => "lookup-failed",
            MxDnssec::Unavailable => "unavailable",
            MxDnssec::NotChecked => "not-checked",
        }
    }
}

/// The DNSSEC part of the policy report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnssecReport {
    /// The MX RRset's status.
    pub mx: MxDnssec,
    /// What was found, in words.
    pub detail: String,
}

/// DANE (RFC 7672): TLSA records per MX host, matched against each presented chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DaneReport {
    /// The MX RRset is secure and an MX host has DNSSEC-validated TLSA records: senders
    /// that do DANE require authenticated TLS.
    pub applies: bool,
    /// The hosts DANE was looked up for (those of a secure MX RRset).
    pub hosts: Vec<DaneHostReport>,
}

/// What an MX host's TLSA lookup gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsaStatus {
    /// DNSSEC-validated records, at least one usable for SMTP.
    Usable,
    /// DNSSEC-validated records, none usable (RFC 7672 §2.2: TLS still mandatory).
    Unusable,
    /// No DNSSEC-validated records.
    None,
    /// The TLSA answer fails DNSSEC validation.
    Bogus,
    /// The lookup failed (SERVFAIL, timeout).
    LookupFailed,
}

impl TlsaStatus {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsaStatus::Usable => "usable",
            TlsaStatus::Unusable => "unusable",
            TlsaStatus::None => "none",
            TlsaStatus::Bogus => "bogus",
            TlsaStatus::LookupFailed => "lookup-failed",
        }
    }
}

/// One MX host's TLSA records and how each of its addresses fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaneHostReport {
    pub mx: String,
    pub status: TlsaStatus,
    /// The DNSSEC status of the TLSA RRset or of its denial (`null` when the lookup failed).
    pub dnssec: Option<DnssecStatus>,
    /// The records, presentation format (`3 1 1 <hex>`).
    pub tlsa: Vec<String>,
    /// The lookup error, if any.
    pub error: Option<String>,
    /// Each probed address (hosts with records only).
    pub addresses: Vec<DaneAddressReport>,
}

/// How one address's chain fared against the TLSA records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaneResult {
    /// A usable record authenticated the chain.
    Matched,
    /// Usable records exist, none authenticates the chain: DANE senders do not deliver.
    NoMatch,
    /// Every record is unusable: TLS is mandatory but not authenticated.
    AllUnusable,
    /// No TLS session with this address (see its host status).
    NoTls,
    /// The address could not be reached from this machine (its address family is not
    /// routed here): not judged while another address of the host was.
    NotReached,
}

impl DaneResult {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DaneResult::Matched => "matched",
            DaneResult::NoMatch => "no-match",
            DaneResult::AllUnusable => "all-unusable",
            DaneResult::NoTls => "no-tls",
            DaneResult::NotReached => "not-reached",
        }
    }
}

/// One address of an MX host with TLSA records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaneAddressReport {
    pub address: String,
    pub port: u16,
    pub result: DaneResult,
    /// The record that authenticated the chain.
    pub record: Option<String>,
    /// Its usage (`dane-ee`, `dane-ta`).
    pub usage: Option<CertUsage>,
    /// The index in the chain of the certificate it matched (0: the leaf).
    pub certificate: Option<usize>,
    /// Why records that matched a certificate still did not authenticate the chain (a
    /// DANE-TA chain or name failure).
    pub problems: Vec<String>,
}

/// What DNSSEC-validated TLSA records say about one presented chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneVerdict {
    /// `records[record]` authenticates the chain, matching `chain[cert_index]`.
    Matched {
        record: usize,
        usage: CertUsage,
        cert_index: usize,
    },
    /// Every record is unusable for SMTP.
    AllUnusable,
    /// No usable record authenticates the chain; `problems` says why DANE-TA matches did
    /// not count.
    NoMatch { problems: Vec<String> },
}

/// Checks a chain (leaf first) against DNSSEC-validated TLSA records (RFC 7672 §3.1):
///
/// - DANE-EE(3): the leaf certificate or its key matches. That alone authenticates the
///   server: no name, validity or chain check (§3.1.1).
/// - DANE-TA(2): a certificate above the leaf matches. It counts only if the leaf chains up
///   to it ([`tls::verify_chain_to`]: signatures, validity at `now`, CA constraints,
///   server-auth usage, with the matched certificate as the sole trust anchor) and the leaf
///   is valid for one of `names`: the MX host name or the next-hop domain (§3.2.2).
///
/// Selectors 0 (certificate) and 1 (SPKI) and matching types 0, 1 (SHA-256) and 2 (SHA-512)
/// are compared by [`match_chain`]; DANE-EE matches are tried first, then DANE-TA ones from
/// the certificate nearest the leaf.
pub fn verify_dane(
    records: &[Tlsa],
    chain: &[CertificateDer<'static>],
    names: &[&str],
    now: UnixTime,
) -> DaneVerdict {
    let matches = match match_chain(records, chain) {
        DaneOutcome::Matched { matches } => matches,
        DaneOutcome::AllUnusable { .. } | DaneOutcome::NoRecords => {
            return DaneVerdict::AllUnusable;
        }
        DaneOutcome::NoMatch { .. } => Vec::new(),
    };
    let mut problems = Vec::new();
    if matches.is_empty() {
        return omitted_trust_anchor(records, chain, names, now, &mut problems)
            .unwrap_or(DaneVerdict::NoMatch { problems });
    }
    for m in matches {
        let shown = records
            .get(m.record)
            .map(ToString::to_string)
            .unwrap_or_default();
        if m.needs_chain_and_name_check() {
            if let Err(e) = tls::verify_chain_to(chain, m.cert_index, now) {
                problems.push(format!(
                    "{shown} matches certificate {}, but the chain to it does not verify: {}",
                    m.cert_index, e.message
                ));
                continue;
            }
            if !names.iter().any(|n| tls::verify_name(chain, n).is_ok()) {
                problems.push(format!(
                    "{shown} matches certificate {}, but the leaf is not valid for {}",
                    m.cert_index,
                    names.join(" or ")
                ));
                continue;
            }
        }
        return DaneVerdict::Matched {
            record: m.record,
            usage: m.usage,
            cert_index: m.cert_index,
        };
    }
    omitted_trust_anchor(records, chain, names, now, &mut problems)
        .unwrap_or(DaneVerdict::NoMatch { problems })
}

/// A `2 0 0` record carries the whole trust-anchor certificate, so the server may leave it
/// out of its chain (RFC 7671 §5.2.2): the chain is then checked up to the record's
/// certificate, as if the server had sent it last (`cert_index` is then the chain's length).
fn omitted_trust_anchor(
    records: &[Tlsa],
    chain: &[CertificateDer<'static>],
    names: &[&str],
    now: UnixTime,
    problems: &mut Vec<String>,
) -> Option<DaneVerdict> {
    for (index, r) in records.iter().enumerate() {
        // Only for a certificate the server did not send (one it sent was matched above).
        if !(r.usage == 2 && r.selector == 0 && r.matching_type == 0)
            || chain.is_empty()
            || chain.iter().any(|c| c.as_ref() == r.data.as_slice())
        {
            continue;
        }
        let mut extended = chain.to_vec();
        extended.push(CertificateDer::from(r.data.clone()));
        let at = chain.len();
        if let Err(e) = tls::verify_chain_to(&extended, at, now) {
            problems.push(format!(
                "{r}: the chain does not lead to the certificate it carries: {}",
                e.message
            ));
            continue;
        }
        if !names.iter().any(|n| tls::verify_name(chain, n).is_ok()) {
            problems.push(format!(
                "{r}: the chain leads to the certificate it carries, but the leaf is not valid for {}",
                names.join(" or ")
            ));
            continue;
        }
        return Some(DaneVerdict::Matched {
            record: index,
            usage: CertUsage::DaneTa,
            cert_index: at,
        });
    }
    None
}

/// The canonical text of an `_mta-sts` record.
fn sts_record_text(record: &StsRecord) -> String {
    let mut text = format!("v=STSv1; id={};", record.id);
    for (name, value) in &record.extensions {
        text.push_str(&format!(" {name}={value};"));
    }
    text
}

/// The canonical text of an `_smtp._tls` record.
fn tlsrpt_record_text(record: &TlsRptRecord) -> String {
    let rua: Vec<String> = record.rua.iter().map(ToString::to_string).collect();
    let mut text = format!("v=TLSRPTv1; rua={}", rua.join(","));
    for (name, value) in &record.extensions {
        text.push_str(&format!("; {name}={value}"));
    }
    text
}

/// How one host fared against a policy that requires authenticated TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    Pass,
    Fail,
    Unknown,
}

/// Findings and flags gathered while interpreting one domain.
#[derive(Default)]
struct Assessment {
    findings: Vec<Finding>,
    failing: bool,
    unknown: bool,
    testing: bool,
    enforced_by: Vec<&'static str>,
}

impl Assessment {
    /// A policy problem: the policy fails when it is medium or worse.
    fn problem(&mut self, finding: Finding) {
        self.failing |= finding.severity >= Severity::Medium;
        self.findings.push(finding);
    }

    /// Something that could not be judged.
    fn inconclusive(&mut self, kind: &'static str, mx: Option<&str>, message: String, why: &str) {
        self.unknown = true;
        self.findings.push(finding(
            "inconclusive",
            kind,
            Severity::Low,
            mx,
            message,
            vec![why.to_owned()],
        ));
    }

    /// Counts the judgement of a host (or address).
    fn judged(&mut self, judged: Judged) {
        match judged {
            Judged::Pass => {}
            Judged::Fail => self.failing = true,
            Judged::Unknown => self.unknown = true,
        }
    }
}

fn finding(
    id: &'static str,
    kind: &'static str,
    severity: Severity,
    mx: Option<&str>,
    message: String,
    evidence: Vec<String>,
) -> Finding {
    Finding {
        id,
        kind,
        severity,
        mx: mx.map(str::to_owned),
        address: None,
        port: None,
        message,
        evidence,
    }
}

/// Whether a probed address gives authenticated TLS, in the PKIX sense MTA-STS asks for.
fn judge_pkix(host: &HostReport) -> Judged {
    match (host.status, &host.tls) {
        (Verdict::Encrypted, Some(tls)) if tls.certificate.verified => Judged::Pass,
        (Verdict::Encrypted, _) | (Verdict::Plaintext | Verdict::Stripped, _) => Judged::Fail,
        _ => Judged::Unknown,
    }
}

/// Whether a probed address counts in a policy's judgement of its MX host: one unreachable
/// from this machine (`error`: its address family is not routed here) counts only when no
/// other address of the host could be judged, as in the transport verdict.
fn counts(host: &HostReport, same_mx: &[&HostReport]) -> bool {
    host.status != Verdict::Error || same_mx.iter().all(|h| h.status == Verdict::Error)
}

/// Interprets `discovered` against the probes in `report`, whose `hosts[i]` presented the
/// DER chain `chains[i]` (empty without TLS). Sets `report.policy`, appends the policy
/// findings, and raises to high the certificate findings of MX hosts under an MTA-STS
/// `enforce` policy (senders that apply it will not deliver to them).
pub fn apply(
    report: &mut TargetReport,
    discovered: &Discovered,
    chains: &[&[CertificateDer<'static>]],
    now: UnixTime,
) {
    let mut acc = Assessment::default();
    let mx_hosts: Vec<String> = report.mx.iter().map(|m| m.host.clone()).collect();
    let mta_sts = mta_sts(discovered, &mx_hosts, &report.hosts, &mut acc);
    if let Some(policy) = mta_sts.policy.as_ref().filter(|p| p.mode == Mode::Enforce) {
        escalate_under_enforce(
            &mut report.findings,
            &mx_hosts,
            mta_sts.id.as_deref(),
            policy,
        );
    }
    let tlsrpt = tlsrpt(discovered, &mut acc);
    let dnssec = dnssec(discovered, &mut acc);
    let probed: Vec<(&HostReport, &[CertificateDer<'static>])> = report
        .hosts
        .iter()
        .zip(chains.iter().copied().chain(std::iter::repeat(&[][..])))
        .collect();
    let dane = dane(discovered, &probed, now, &mut acc);
    if mta_sts.policy.as_ref().is_none_or(|p| p.mode == Mode::None) {
        soften_under_dane_ee(&mut report.findings, &dane);
    }
    tlsrpt_missing(discovered, &mta_sts, &dane, &mut acc);
    // An MX none of whose addresses could be reached from here leaves the policy unjudged:
    // say so, rather than leave an `unknown` status unexplained.
    let applies = dane.applies
        || mta_sts
            .policy
            .as_ref()
            .is_some_and(|p| p.mode != Mode::None);
    for mx in mx_hosts.iter().filter(|_| applies) {
        let errors: Vec<String> = (report.hosts.iter())
            .filter(|h| &h.mx == mx)
            .map(|h| (h.status == Verdict::Error).then(|| h.error.clone().unwrap_or_default()))
            .collect::<Option<_>>()
            .unwrap_or_default();
        if !errors.is_empty() {
            acc.inconclusive(
                "mx-not-reached",
                Some(mx),
                format!("no address of {mx} could be reached from this machine: its MTA-STS and DANE status are not judged"),
                &errors.join("; "),
            );
        }
    }
    let status = if acc.failing {
        PolicyStatus::Failing
    } else if !acc.enforced_by.is_empty() {
        PolicyStatus::Enforced
    } else if acc.unknown {
        PolicyStatus::Unknown
    } else if acc.testing {
        PolicyStatus::Testing
    } else {
        PolicyStatus::None
    };
    report.findings.append(&mut acc.findings);
    report.policy = Some(PolicyReport {
        status,
        enforced_by: acc.enforced_by,
        mta_sts,
        tlsrpt,
        dnssec,
        dane,
    });
}

/// The certificate findings of the MX hosts, raised to high with one more line of
/// evidence: under `enforce`, senders that apply MTA-STS refuse these hosts.
fn escalate_under_enforce(
    findings: &mut [Finding],
    mx_hosts: &[String],
    id: Option<&str>,
    policy: &PolicyFile,
) {
    const CERTIFICATE_PROBLEMS: [ResultType; 4] = [
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
        ResultType::ValidationFailure,
    ];
    for f in findings.iter_mut().filter(|f| {
        CERTIFICATE_PROBLEMS.iter().any(|t| t.as_str() == f.id)
            && f.mx.as_ref().is_some_and(|mx| mx_hosts.contains(mx))
    }) {
        f.severity = f.severity.max(Severity::High);
        f.evidence.push(format!(
            "MTA-STS policy{} mode {}: senders that apply it refuse this MX",
            id.map(|id| format!(" id {id}")).unwrap_or_default(),
            policy.mode
        ));
    }
}

/// Lowers to low the medium certificate findings of MX hosts that every reached address
/// authenticates with DANE-EE, when no MTA-STS policy applies: DANE senders check neither
/// the names, the dates nor the issuer of a DANE-EE certificate (RFC 7672 §3.1.1), and
/// opportunistic senders check nothing. A self-signed certificate pinned by `3 1 1` is the
/// usual DANE set-up, not a problem.
fn soften_under_dane_ee(findings: &mut [Finding], dane: &DaneReport) {
    const CERTIFICATE_PROBLEMS: [ResultType; 3] = [
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
    ];
    for host in &dane.hosts {
        let reached: Vec<&DaneAddressReport> = (host.addresses.iter())
            .filter(|a| a.result != DaneResult::NotReached)
            .collect();
        let all_dane_ee = !reached.is_empty()
            && reached
                .iter()
                .all(|a| a.result == DaneResult::Matched && a.usage == Some(CertUsage::DaneEe));
        if !all_dane_ee {
            continue;
        }
        for f in findings.iter_mut().filter(|f| {
            f.severity == Severity::Medium
                && CERTIFICATE_PROBLEMS.iter().any(|t| t.as_str() == f.id)
                && f.mx.as_deref() == Some(host.mx.as_str())
        }) {
            f.severity = Severity::Low;
            f.evidence.push(format!(
                "{}: authenticated by DANE-EE, which checks neither names, dates nor issuer (RFC 7672 §3.1.1); no MTA-STS policy applies",
                host.mx
            ));
        }
    }
}

fn mta_sts(
    d: &Discovered,
    mx_hosts: &[String],
    hosts: &[HostReport],
    acc: &mut Assessment,
) -> MtaStsReport {
    let domain = &d.domain;
    let mut out = MtaStsReport::default();
    match &d.sts_record {
        TxtLookup::Record(record) => {
            out.record = Some(sts_record_text(record));
            out.id = Some(record.id.clone());
        }
        TxtLookup::NoRecord {
            note: Some(note), ..
        } => {
            out.record_error = Some(note.clone());
            acc.problem(finding(
                ResultType::StsPolicyInvalid.as_str(),
                "sts-record",
                Severity::Medium,
                None,
                format!("the _mta-sts.{domain} TXT record is invalid, so senders ignore MTA-STS for {domain} (RFC 8461 §3.1)"),
                vec![note.clone()],
            ));
        }
        TxtLookup::NoRecord { note: None, .. } => {}
        TxtLookup::Failed { message } => {
            out.record_error = Some(format!("{LOOKUP_FAILED}{message}"));
            acc.inconclusive(
                "sts-record-lookup-failed",
                None,
                format!("the _mta-sts.{domain} TXT lookup failed: whether {domain} has MTA-STS is unknown"),
                message,
            );
        }
    }
    let Some(fetched) = &d.sts_policy else {
        return out;
    };
    out.url = Some(policy_url(domain));
    let policy = match fetched {
        Ok(policy) => policy,
        Err(e) => {
            let result_type = e.result_type();
            out.fetch_error = Some(e.to_string());
            out.fetch_result_type = Some(result_type.as_str());
            let message = match result_type {
                ResultType::StsWebpkiInvalid => format!(
                    "the certificate of mta-sts.{domain} is not valid for it: senders cannot trust the MTA-STS policy, so none applies"
                ),
                ResultType::StsPolicyInvalid => {
                    format!("the MTA-STS policy of {domain} is invalid: senders ignore it")
                }
                _ => format!(
                    "the MTA-STS policy of {domain} could not be fetched: senders without a cached copy apply none"
                ),
            };
            acc.problem(finding(
                result_type.as_str(),
                fetch_kind(e),
                Severity::Medium,
                None,
                message,
                vec![e.to_string()],
            ));
            return out;
        }
    };
    if d.sts_policy_without_content_type {
        acc.problem(finding(
            ResultType::StsPolicyInvalid.as_str(),
            "content-type-missing",
            Severity::Low,
            None,
            format!(
                "the MTA-STS policy of {domain} is served without a Content-Type: RFC 8461 §3.2 asks for text/plain, and senders that check it ignore the policy"
            ),
            vec![format!("{}: no Content-Type header", policy_url(domain))],
        ));
    }
    let file = PolicyFile::from(policy);
    if policy.mode == Mode::None {
        out.policy = Some(file);
        return out;
    }
    let mut judged = Vec::new();
    for host in mx_hosts {
        let probed: Vec<&HostReport> = hosts.iter().filter(|h| &h.mx == host).collect();
        let reached: Vec<bool> = probed
            .iter()
            .filter(|h| {
                matches!(
                    h.status,
                    Verdict::Encrypted | Verdict::Plaintext | Verdict::Stripped
                )
            })
            .map(|h| h.status == Verdict::Encrypted)
            .collect();
        let certificates: Vec<bool> = probed
            .iter()
            .filter_map(|h| h.tls.as_ref())
            .map(|t| t.certificate.verified)
            .collect();
        let matches_policy = policy.allows_mx(host);
        if !matches_policy {
            let (severity, effect) = match policy.mode {
                Mode::Enforce => (Severity::High, "senders that apply it refuse this MX"),
                _ => (
                    Severity::Medium,
                    "mode testing: senders still deliver, and report the failure",
                ),
            };
            acc.problem(finding(
                ResultType::ValidationFailure.as_str(),
                "sts-mx-mismatch",
                severity,
                Some(host),
                format!(
                    "MX {host} matches no mx pattern of the MTA-STS policy of {domain}: {effect}"
                ),
                std::iter::once(format!("MX {host}"))
                    .chain(policy.mx.iter().map(|p| format!("policy mx: {p}")))
                    .collect(),
            ));
        }
        let mut verdicts: Vec<Judged> = (probed.iter())
            .filter(|h| counts(h, &probed))
            .map(|h| judge_pkix(h))
            .collect();
        if !matches_policy {
            verdicts.push(Judged::Fail);
        }
        // An MX without an address is used by no sender (its lookup is a finding of its
        // own): nothing to judge, as for DANE.
        if !verdicts.is_empty() {
            judged.push(combine(&verdicts));
        }
        out.mx.push(StsMxReport {
            host: host.clone(),
            matches_policy,
            tls: (!reached.is_empty()).then(|| reached.iter().all(|r| *r)),
            certificate_valid: (!certificates.is_empty()).then(|| certificates.iter().all(|v| *v)),
        });
    }
    let overall = combine(&judged);
    acc.judged(overall);
    if overall == Judged::Pass {
        match policy.mode {
            Mode::Enforce => acc.enforced_by.push("mta-sts"),
            _ => acc.testing = true,
        }
    }
    out.policy = Some(file);
    out
}

/// The worst of several judgements (a failure beats an unknown); no judgement is unknown.
fn combine(judged: &[Judged]) -> Judged {
    if judged.contains(&Judged::Fail) {
        Judged::Fail
    } else if judged.is_empty() || judged.contains(&Judged::Unknown) {
        Judged::Unknown
    } else {
        Judged::Pass
    }
}

/// A finer classification of a failed policy fetch.
fn fetch_kind(error: &FetchError) -> &'static str {
    match error {
        FetchError::Setup { .. } => "client-setup",
        FetchError::Connect { .. } => "connect-failed",
        FetchError::Timeout { .. } => "timeout",
        FetchError::Certificate { problem, .. } => problem.result_type(),
        FetchError::Redirect { .. } => "redirect",
        FetchError::Status { .. } => "http-status",
        FetchError::ContentType { .. } => "content-type",
        FetchError::TooLarge { .. } => "too-large",
        FetchError::Invalid { .. } => "policy-syntax",
        _ => "http-error",
    }
}

fn tlsrpt(d: &Discovered, acc: &mut Assessment) -> TlsRptReport {
    let mut out = TlsRptReport::default();
    match &d.tlsrpt {
        TxtLookup::Record(record) => {
            out.record = Some(tlsrpt_record_text(record));
            out.rua = record.rua.iter().map(ToString::to_string).collect();
        }
        TxtLookup::NoRecord {
            note: Some(note), ..
        } => {
            out.error = Some(note.clone());
            acc.problem(finding(
                "tlsrpt-invalid",
                "record",
                Severity::Low,
                None,
                format!(
                    "the _smtp._tls.{} TXT record is invalid: senders send no TLS reports (RFC 8460 §3)",
                    d.domain
                ),
                vec![note.clone()],
            ));
        }
        TxtLookup::NoRecord { note: None, .. } => {}
        TxtLookup::Failed { message } => {
            out.error = Some(format!("{LOOKUP_FAILED}{message}"));
            // Reports are not enforcement: a finding, but the policy's status stays.
            acc.findings.push(finding(
                "inconclusive",
                "tlsrpt-lookup-failed",
                Severity::Low,
                None,
                format!(
                    "the _smtp._tls.{} TXT lookup failed: whether senders can send TLS reports is unknown",
                    d.domain
                ),
                vec![message.clone()],
            ));
        }
    }
    out
}

/// A domain that publishes MTA-STS (a valid `_mta-sts` record) or DANE (validated TLSA
/// records for its secure MX hosts) but no `_smtp._tls` record at all: senders that fail to
/// deliver under its policy have nowhere to report it. RFC 8460 makes the record optional and
/// defines no result type for its absence, so this is an informational (low) finding that
/// leaves the policy's status as it is. Not raised for an invalid record (`tlsrpt-invalid`)
/// or a failed lookup, nor for a domain with neither policy, where reports would say little.
fn tlsrpt_missing(d: &Discovered, mta_sts: &MtaStsReport, dane: &DaneReport, acc: &mut Assessment) {
    if !matches!(d.tlsrpt, TxtLookup::NoRecord { note: None, .. }) {
        return;
    }
    let mut evidence = vec![format!("_smtp._tls.{}: no TXT record", d.domain)];
    let mut published = Vec::new();
    if let Some(record) = &mta_sts.record {
        published.push("MTA-STS");
        evidence.push(format!("_mta-sts.{}: {record}", d.domain));
    }
    if dane.applies {
        published.push("DANE");
        for host in dane.hosts.iter().filter(|h| !h.tlsa.is_empty()) {
            evidence.push(format!(
                "_25._tcp.{}: {} TLSA record(s), DNSSEC-validated",
                host.mx,
                host.tlsa.len()
            ));
        }
    }
    if published.is_empty() {
        return;
    }
    acc.findings.push(finding(
        "tlsrpt-missing",
        "no-record",
        Severity::Low,
        None,
        format!(
            "{} publishes {} but no TLS-RPT record (_smtp._tls.{}): senders that cannot \
             deliver under its policy cannot report it (RFC 8460)",
            d.domain,
            published.join(" and "),
            d.domain
        ),
        evidence,
    ));
}

/// How `record_error` and `tlsrpt.error` start when the TXT lookup itself failed (rather
/// than giving no valid record).
pub const LOOKUP_FAILED: &str = "lookup failed: ";

fn dnssec(d: &Discovered, acc: &mut Assessment) -> DnssecReport {
    let domain = &d.domain;
    let (mx, detail) = match &d.mx {
        None => match &d.dnssec_unavailable {
            Some(why) => {
                acc.unknown = true;
                (
                    MxDnssec::Unavailable,
                    format!("DNSSEC cannot be validated through this resolver: {why}"),
                )
            }
            None => (MxDnssec::NotChecked, "DNSSEC lookups are off".to_owned()),
        },
        Some(Validated::Records {
            status, records, ..
        }) => {
            let names: Vec<String> = records
                .iter()
                .map(|Mx { preference, host }| format!("{preference} {host}"))
                .collect();
            let state = match status {
                DnssecStatus::Secure => MxDnssec::Secure,
                DnssecStatus::Insecure => MxDnssec::Insecure,
                DnssecStatus::Bogus => MxDnssec::Bogus,
                DnssecStatus::Indeterminate => MxDnssec::Indeterminate,
            };
            (state, format!("MX {}", names.join(", ")))
        }
        Some(Validated::NoRecords {
            nxdomain, secure, ..
        }) => (
            if *secure {
                MxDnssec::Secure
            } else {
                MxDnssec::Insecure
            },
            format!(
                "{} ({} denial)",
                if *nxdomain { "no such domain" } else { "no MX" },
                if *secure { "secure" } else { "unsigned" }
            ),
        ),
        Some(Validated::Bogus) => (MxDnssec::Bogus, "the answer fails validation".to_owned()),
        Some(Validated::Failed { message }) => (MxDnssec::LookupFailed, message.clone()),
    };
    match mx {
        MxDnssec::Bogus => acc.problem(finding(
            ResultType::DnssecInvalid.as_str(),
            "mx-bogus",
            Severity::High,
            None,
            format!("the MX RRset of {domain} fails DNSSEC validation: validating resolvers answer SERVFAIL, and senders behind them cannot deliver"),
            vec![format!("{domain} MX: {detail}")],
        )),
        MxDnssec::LookupFailed => acc.inconclusive(
            "dnssec-lookup-failed",
            None,
            format!("the DNSSEC-validating MX lookup of {domain} failed: its DNSSEC and DANE status are unknown"),
            &detail,
        ),
        _ => {}
    }
    DnssecReport { mx, detail }
}

fn dane(
    d: &Discovered,
    probed: &[(&HostReport, &[CertificateDer<'static>])],
    now: UnixTime,
    acc: &mut Assessment,
) -> DaneReport {
    let mut out = DaneReport::default();
    let mut judged = Vec::new();
    for (host, lookup) in &d.tlsa {
        let (status, dnssec, records, error) = match lookup {
            Validated::Records {
                status: DnssecStatus::Secure,
                records,
                ..
            } if !records.is_empty() => {
                let usable = records.iter().any(|r| r.usability().is_ok());
                let status = if usable {
                    TlsaStatus::Usable
                } else {
                    TlsaStatus::Unusable
                };
                (status, Some(DnssecStatus::Secure), records.as_slice(), None)
            }
            Validated::Records {
                status: DnssecStatus::Bogus,
                ..
            }
            | Validated::Bogus => (TlsaStatus::Bogus, Some(DnssecStatus::Bogus), &[][..], None),
            Validated::Records { status, .. } => (TlsaStatus::None, Some(*status), &[][..], None),
            Validated::NoRecords { secure, .. } => (
                TlsaStatus::None,
                Some(if *secure {
                    DnssecStatus::Secure
                } else {
                    DnssecStatus::Insecure
                }),
                &[][..],
                None,
            ),
            Validated::Failed { message } => (
                TlsaStatus::LookupFailed,
                None,
                &[][..],
                Some(message.clone()),
            ),
        };
        let owner = sigillo_policy::dane::tlsa_owner(host, 25);
        // Senders that do DANE defer mail to a host whose TLSA RRset is bogus, or cannot be
        // looked up, so DANE does not protect the domain's mail then (when it applies).
        match status {
            TlsaStatus::Bogus => judged.push(Judged::Fail),
            TlsaStatus::LookupFailed => judged.push(Judged::Unknown),
            _ => {}
        }
        match status {
            TlsaStatus::Bogus => acc.problem(finding(
                ResultType::DnssecInvalid.as_str(),
                "tlsa-bogus",
                Severity::High,
                Some(host),
                format!("the TLSA RRset of {host} fails DNSSEC validation: senders that do DANE defer mail to it"),
                vec![format!("{owner} TLSA: bogus")],
            )),
            TlsaStatus::LookupFailed => acc.inconclusive(
                "tlsa-lookup-failed",
                Some(host),
                format!("the TLSA lookup of {host} failed: senders that do DANE defer mail to it while it fails"),
                error.as_deref().unwrap_or_default(),
            ),
            TlsaStatus::Unusable => acc.problem(finding(
                ResultType::TlsaInvalid.as_str(),
                "tlsa-unusable",
                Severity::Medium,
                Some(host),
                format!("no TLSA record of {host} is usable for SMTP: DANE senders require TLS but cannot authenticate it (RFC 7672 §2.2)"),
                records
                    .iter()
                    .map(|r| match r.usability() {
                        Ok(_) => format!("{owner} TLSA {r}"),
                        Err(why) => format!("{owner} TLSA {r}: {why}"),
                    })
                    .collect(),
            )),
            _ => {}
        }
        let mut addresses = Vec::new();
        if matches!(status, TlsaStatus::Usable | TlsaStatus::Unusable) {
            let same_mx: Vec<&HostReport> = (probed.iter())
                .filter(|(h, _)| &h.mx == host)
                .map(|(h, _)| *h)
                .collect();
            for (h, chain) in probed.iter().filter(|(h, _)| &h.mx == host) {
                let (mut report, verdict) = dane_address(h, chain, records, &d.domain, now);
                if h.status == Verdict::Error {
                    report.result = DaneResult::NotReached;
                }
                if counts(h, &same_mx) {
                    judged.push(verdict);
                }
                if report.result == DaneResult::NoMatch {
                    acc.problem(mismatch_finding(
                        h,
                        chain,
                        records,
                        &owner,
                        &report.problems,
                    ));
                }
                addresses.push(report);
            }
        }
        out.hosts.push(DaneHostReport {
            mx: host.clone(),
            status,
            dnssec,
            tlsa: records.iter().map(ToString::to_string).collect(),
            error,
            addresses,
        });
    }
    out.applies = out
        .hosts
        .iter()
        .any(|h| matches!(h.status, TlsaStatus::Usable | TlsaStatus::Unusable));
    if !out.applies {
        return out;
    }
    for h in out.hosts.iter().filter(|h| h.status == TlsaStatus::None) {
        acc.problem(finding(
            ResultType::DaneRequired.as_str(),
            "mx-without-tlsa",
            Severity::Medium,
            Some(&h.mx),
            format!(
                "{} publishes DANE TLSA records for other MX hosts but none for {}: senders that require DANE refuse it, others use it without authentication",
                d.domain, h.mx
            ),
            vec![format!(
                "{}: no DNSSEC-validated TLSA records",
                sigillo_policy::dane::tlsa_owner(&h.mx, 25)
            )],
        ));
        judged.push(Judged::Fail);
    }
    let overall = combine(&judged);
    acc.judged(overall);
    if overall == Judged::Pass {
        acc.enforced_by.insert(0, "dane");
    }
    out
}

/// DANE for one probed address: its report and whether it passes.
fn dane_address(
    host: &HostReport,
    chain: &[CertificateDer<'static>],
    records: &[Tlsa],
    domain: &str,
    now: UnixTime,
) -> (DaneAddressReport, Judged) {
    let mut report = DaneAddressReport {
        address: host.address.clone(),
        port: host.port,
        result: DaneResult::NoTls,
        record: None,
        usage: None,
        certificate: None,
        problems: Vec::new(),
    };
    if host.tls.is_none() || chain.is_empty() {
        let judged = match host.status {
            Verdict::Plaintext | Verdict::Stripped => Judged::Fail,
            _ => Judged::Unknown,
        };
        return (report, judged);
    }
    let judged = match verify_dane(records, chain, &[&host.mx, domain], now) {
        DaneVerdict::Matched {
            record,
            usage,
            cert_index,
        } => {
            report.result = DaneResult::Matched;
            report.record = records.get(record).map(ToString::to_string);
            report.usage = Some(usage);
            report.certificate = Some(cert_index);
            Judged::Pass
        }
        // Mandatory but unauthenticated TLS: no downgrade to plaintext, but no
        // protection against an impostor either.
        DaneVerdict::AllUnusable => {
            report.result = DaneResult::AllUnusable;
            Judged::Fail
        }
        DaneVerdict::NoMatch { problems } => {
            report.result = DaneResult::NoMatch;
            report.problems = problems;
            Judged::Fail
        }
    };
    (report, judged)
}

/// `tlsa-invalid` for a chain no usable record authenticates. RFC 8460 defines it as "none
/// of the records in the RRset were found to be valid", which is what a mismatch is to the
/// sender; [`DaneOutcome::failure_result_type`] says `validation-failure` for it, a type
/// that cannot tell a DANE mismatch from any other certificate problem.
fn mismatch_finding(
    host: &HostReport,
    chain: &[CertificateDer<'static>],
    records: &[Tlsa],
    owner: &str,
    problems: &[String],
) -> Finding {
    let mut evidence: Vec<String> = records
        .iter()
        .map(|r| format!("{owner} TLSA {r}"))
        .collect();
    for (index, der) in chain.iter().enumerate() {
        if let Some(info) = tls::certificate_info(der) {
            evidence.push(format!(
                "certificate {index}: {}; SHA-256 {}; SPKI SHA-256 {}",
                info.subject, info.sha256, info.spki_sha256
            ));
        }
    }
    evidence.extend(problems.iter().cloned());
    Finding {
        id: ResultType::TlsaInvalid.as_str(),
        kind: "tlsa-mismatch",
        severity: Severity::High,
        mx: Some(host.mx.clone()),
        address: Some(host.address.clone()),
        port: Some(host.port),
        message: format!(
            "no TLSA record of {} matches the certificate chain it presents: senders that do DANE will not deliver to it",
            host.mx
        ),
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CertificateReport, MxReport, StartTlsReport, TlsReport};
    use sha2::{Digest, Sha256, Sha512};
    use sigillo_policy::mta_sts::MxPattern;
    use sigillo_testkit::{CertPair, TestCa, self_signed};

    fn der_chain(pair: &CertPair) -> Vec<CertificateDer<'static>> {
        let pem = std::fs::read(&pair.chain_pem).unwrap();
        rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn spki(der: &[u8]) -> Vec<u8> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        cert.tbs_certificate.subject_pki.raw.to_vec()
    }

    fn tlsa(usage: u8, selector: u8, matching_type: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching_type,
            data,
        }
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Matched(CertUsage, usize),
        AllUnusable,
        NoMatch(&'static str),
    }

    #[test]
    fn dane_usages_selectors_and_matching_types() {
        let ca = TestCa::new().unwrap();
        let good = der_chain(&ca.issue(&["mx.example.test"]).unwrap());
        let expired = der_chain(&ca.issue_expired(&["mx.example.test"]).unwrap());
        let other_ca = TestCa::new().unwrap();
        let foreign = der_chain(&other_ca.issue(&["mx.example.test"]).unwrap());
        let other_ca_cert = foreign[1].to_vec();
        // A leaf from another CA presented with our CA: the TA matches, the chain does not.
        let spliced = vec![foreign[0].clone(), good[1].clone()];
        let self_signed_chain = der_chain(&self_signed(&["mx.example.test"]).unwrap());
        let (leaf, ca_cert) = (&good[0], &good[1]);
        let sha256 = |b: &[u8]| Sha256::digest(b).to_vec();
        let sha512 = |b: &[u8]| Sha512::digest(b).to_vec();
        let names = ["mx.example.test", "example.test"];
        type Case<'a> = (
            &'a str,
            Vec<Tlsa>,
            &'a [CertificateDer<'static>],
            &'a [&'a str],
            Want,
        );
        // The leaf alone: the trust anchor left out of the chain (RFC 7671 §5.2.2).
        let leaf_only = vec![leaf.clone()];
        let cases: Vec<Case> = vec![
            (
                "2 0 0, the CA left out of the chain",
                vec![tlsa(2, 0, 0, ca_cert.to_vec())],
                &leaf_only,
                &names,
                Want::Matched(CertUsage::DaneTa, 1),
            ),
            (
                "2 0 0 of another CA, the CA left out",
                vec![tlsa(2, 0, 0, other_ca_cert.clone())],
                &leaf_only,
                &names,
                Want::NoMatch("does not lead to the certificate it carries"),
            ),
            (
                "2 0 0, the CA left out, other names",
                vec![tlsa(2, 0, 0, ca_cert.to_vec())],
                &leaf_only,
                &["mx.elsewhere.test"],
                Want::NoMatch("leaf is not valid for mx.elsewhere.test"),
            ),
            (
                "3 1 1",
                vec![tlsa(3, 1, 1, sha256(&spki(leaf)))],
                &good,
                &names,
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            (
                "3 0 1",
                vec![tlsa(3, 0, 1, sha256(leaf))],
                &good,
                &names,
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            (
                "3 1 2",
                vec![tlsa(3, 1, 2, sha512(&spki(leaf)))],
                &good,
                &names,
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            (
                "3 0 0",
                vec![tlsa(3, 0, 0, leaf.to_vec())],
                &good,
                &names,
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            (
                "3 1 0",
                vec![tlsa(3, 1, 0, spki(leaf))],
                &good,
                &names,
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            // DANE-EE: no expiry or name check (RFC 7672 §3.1.1).
            (
                "3 1 1 expired leaf",
                vec![tlsa(3, 1, 1, sha256(&spki(&expired[0])))],
                &expired,
                &names,
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            (
                "3 1 1 other names",
                vec![tlsa(3, 1, 1, sha256(&spki(leaf)))],
                &good,
                &["mx.elsewhere.test"],
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            (
                "3 1 1 self-signed",
                vec![tlsa(3, 1, 1, sha256(&spki(&self_signed_chain[0])))],
                &self_signed_chain,
                &names,
                Want::Matched(CertUsage::DaneEe, 0),
            ),
            (
                "2 0 1",
                vec![tlsa(2, 0, 1, sha256(ca_cert))],
                &good,
                &names,
                Want::Matched(CertUsage::DaneTa, 1),
            ),
            (
                "2 1 1",
                vec![tlsa(2, 1, 1, sha256(&spki(ca_cert)))],
                &good,
                &names,
                Want::Matched(CertUsage::DaneTa, 1),
            ),
            (
                "2 0 2",
                vec![tlsa(2, 0, 2, sha512(ca_cert))],
                &good,
                &names,
                Want::Matched(CertUsage::DaneTa, 1),
            ),
            (
                "2 0 1 by next-hop name",
                vec![tlsa(2, 0, 1, sha256(ca_cert))],
                &good,
                &["mx2.example.test", "mx.example.test"],
                Want::Matched(CertUsage::DaneTa, 1),
            ),
            // DANE-TA: the name and the chain are checked (RFC 7672 §3.1.2, §3.2.2).
            (
                "2 0 1 wrong name",
                vec![tlsa(2, 0, 1, sha256(ca_cert))],
                &good,
                &["mx.elsewhere.test", "elsewhere.test"],
                Want::NoMatch("not valid for mx.elsewhere.test or elsewhere.test"),
            ),
            (
                "2 0 1 expired leaf",
                vec![tlsa(2, 0, 1, sha256(&expired[1]))],
                &expired,
                &names,
                Want::NoMatch("certificate has expired"),
            ),
            (
                "2 0 1 leaf not issued by it",
                vec![tlsa(2, 0, 1, sha256(ca_cert))],
                &spliced,
                &names,
                Want::NoMatch("chain to it does not verify"),
            ),
            // A DANE-TA record never matches the leaf itself.
            (
                "2 0 1 of the leaf",
                vec![tlsa(2, 0, 1, sha256(leaf))],
                &good,
                &names,
                Want::NoMatch(""),
            ),
            (
                "3 1 1 wrong digest",
                vec![tlsa(3, 1, 1, vec![0x11; 32])],
                &good,
                &names,
                Want::NoMatch(""),
            ),
            (
                "2 0 1 of another CA",
                vec![tlsa(2, 0, 1, sha256(&foreign[1]))],
                &good,
                &names,
                Want::NoMatch(""),
            ),
            (
                "0 0 1 and 1 1 1 only",
                vec![
                    tlsa(0, 0, 1, sha256(ca_cert)),
                    tlsa(1, 1, 1, sha256(&spki(leaf))),
                ],
                &good,
                &names,
                Want::AllUnusable,
            ),
            (
                "3 1 1 short digest",
                vec![tlsa(3, 1, 1, vec![0x11; 20])],
                &good,
                &names,
                Want::AllUnusable,
            ),
            (
                "wrong EE, good TA",
                vec![
                    tlsa(3, 1, 1, vec![0x11; 32]),
                    tlsa(2, 0, 1, sha256(ca_cert)),
                ],
                &good,
                &names,
                Want::Matched(CertUsage::DaneTa, 1),
            ),
            (
                "no chain",
                vec![tlsa(3, 1, 1, vec![0x11; 32])],
                &[],
                &names,
                Want::NoMatch(""),
            ),
        ];
        for (name, records, chain, names, want) in cases {
            let got = match verify_dane(&records, chain, names, UnixTime::now()) {
                DaneVerdict::Matched {
                    usage, cert_index, ..
                } => Want::Matched(usage, cert_index),
                DaneVerdict::AllUnusable => Want::AllUnusable,
                DaneVerdict::NoMatch { problems } => match (&want, problems.as_slice()) {
                    (Want::NoMatch(needle), [problem]) if !needle.is_empty() => {
                        assert!(problem.contains(needle), "{name}: {problem}");
                        Want::NoMatch(needle)
                    }
                    (_, []) => Want::NoMatch(""),
                    (_, more) => panic!("{name}: unexpected problems {more:?}"),
                },
            };
            assert_eq!(got, want, "{name}");
        }
    }

    fn host(mx: &str, status: Verdict, certificate_verified: Option<bool>) -> HostReport {
        HostReport {
            mx: mx.to_owned(),
            preference: Some(10),
            address: "192.0.2.1".to_owned(),
            port: 25,
            status,
            connect_ms: None,
            greeting_ms: None,
            total_ms: 1.0,
            banner: Some(format!("220 {mx} ESMTP")),
            banner_lines: vec![],
            extensions: vec![],
            helo_fallback: false,
            starttls: StartTlsReport {
                offered: certificate_verified.is_some(),
                attempted: certificate_verified.is_some(),
                reply: None,
            },
            tls: certificate_verified.map(|verified| TlsReport {
                version: "TLSv1.3".to_owned(),
                cipher: "TLS_AES_128_GCM_SHA256".to_owned(),
                key_exchange: None,
                handshake_ms: 1.0,
                sni: Some(mx.to_owned()),
                extensions: vec![],
                certificate: CertificateReport {
                    verified,
                    error: None,
                    problems: vec![],
                    name: Some(mx.to_owned()),
                    chain_trusted: verified,
                    name_matches: Some(verified),
                    chain: vec![],
                },
            }),
            error: None,
            failure: None,
            transcript: vec![],
        }
    }

    fn target(hosts: Vec<HostReport>) -> TargetReport {
        let mut mx: Vec<String> = hosts.iter().map(|h| h.mx.clone()).collect();
        mx.dedup();
        TargetReport {
            target: "example.test".to_owned(),
            kind: "domain",
            port: 25,
            verdict: Verdict::Encrypted,
            mx: mx
                .into_iter()
                .map(|host| MxReport {
                    host,
                    preference: Some(10),
                    addresses: vec!["192.0.2.1".to_owned()],
                    error: None,
                })
                .collect(),
            implicit_mx: false,
            null_mx: false,
            hosts,
            findings: vec![],
            policy: None,
            error: None,
            started: String::new(),
            duration_ms: 0.0,
        }
    }

    fn policy(mode: Mode, mx: &[&str]) -> Policy {
        Policy {
            mode,
            mx: mx.iter().map(|p| MxPattern::parse(p).unwrap()).collect(),
            max_age: 86400,
            extensions: vec![],
        }
    }

    fn discovered(sts: Option<Result<Policy, FetchError>>) -> Discovered {
        Discovered {
            domain: "example.test".to_owned(),
            sts_record: match sts {
                Some(_) => TxtLookup::Record(StsRecord::parse("v=STSv1; id=20240101").unwrap()),
                None => TxtLookup::NoRecord {
                    negative_ttl: Some(60),
                    note: None,
                },
            },
            sts_policy: sts,
            sts_policy_without_content_type: false,
            dnssec_unavailable: None,
            // A TLS-RPT record, so that only `tlsrpt_missing_only_beside_a_policy` sees
            // `tlsrpt-missing`.
            tlsrpt: TxtLookup::Record(
                TlsRptRecord::parse("v=TLSRPTv1; rua=mailto:tlsrpt@example.test").unwrap(),
            ),
            mx: Some(Validated::Records {
                status: DnssecStatus::Insecure,
                records: vec![Mx {
                    preference: 10,
                    host: "mx.example.test".to_owned(),
                }],
                ttl: Some(60),
            }),
            tlsa: vec![],
        }
    }

    /// (status, findings as (id, kind, severity)) after `apply`.
    fn outcome(
        d: &Discovered,
        hosts: Vec<HostReport>,
    ) -> (PolicyStatus, Vec<(&'static str, &'static str, Severity)>) {
        let mut report = target(hosts);
        report.findings.push(finding(
            "certificate-not-trusted",
            "chain",
            Severity::Medium,
            Some("mx.example.test"),
            "probe finding".to_owned(),
            vec![],
        ));
        apply(&mut report, d, &[], UnixTime::now());
        let policy = report.policy.unwrap();
        (
            policy.status,
            report
                .findings
                .iter()
                .map(|f| (f.id, f.kind, f.severity))
                .collect(),
        )
    }

    /// `tlsrpt-missing`: no `_smtp._tls` record beside MTA-STS or DANE; not beside neither,
    /// nor when the record is invalid or its lookup failed (other findings say so).
    #[test]
    fn tlsrpt_missing_only_beside_a_policy() {
        let none = || TxtLookup::NoRecord {
            negative_ttl: Some(60),
            note: None,
        };
        let invalid = || TxtLookup::NoRecord {
            negative_ttl: None,
            note: Some("invalid _smtp._tls record: …".to_owned()),
        };
        let failed = || TxtLookup::Failed {
            message: "SERVFAIL".to_owned(),
        };
        let sts = || Some(Ok(policy(Mode::Enforce, &["mx.example.test"])));
        let ok = || vec![host("mx.example.test", Verdict::Encrypted, Some(true))];
        // (case, MTA-STS, DANE-EE on the MX, TLS-RPT lookup, the tlsrpt-* findings)
        type Case = (
            &'static str,
            Option<Result<Policy, FetchError>>,
            bool,
            TxtLookup<TlsRptRecord>,
            &'static [(&'static str, &'static str)],
        );
        let cases: Vec<Case> = vec![
            (
                "MTA-STS",
                sts(),
                false,
                none(),
                &[("tlsrpt-missing", "no-record")],
            ),
            (
                "DANE",
                None,
                true,
                none(),
                &[("tlsrpt-missing", "no-record")],
            ),
            (
                "both",
                sts(),
                true,
                none(),
                &[("tlsrpt-missing", "no-record")],
            ),
            ("neither", None, false, none(), &[]),
            (
                "invalid record",
                sts(),
                false,
                invalid(),
                &[("tlsrpt-invalid", "record")],
            ),
            (
                "failed lookup",
                sts(),
                false,
                failed(),
                &[("inconclusive", "tlsrpt-lookup-failed")],
            ),
        ];
        let ca = TestCa::new().unwrap();
        let issued = der_chain(&ca.issue(&["mx.example.test"]).unwrap());
        for (name, sts, dane, lookup, want) in cases {
            let mut d = discovered(sts);
            d.tlsrpt = lookup;
            let mut chain: &[CertificateDer<'static>] = &[];
            if dane {
                chain = &issued;
                d.mx = Some(Validated::Records {
                    status: DnssecStatus::Secure,
                    records: vec![Mx {
                        preference: 10,
                        host: "mx.example.test".to_owned(),
                    }],
                    ttl: Some(60),
                });
                d.tlsa = vec![(
                    "mx.example.test".to_owned(),
                    Validated::Records {
                        status: DnssecStatus::Secure,
                        records: vec![tlsa(3, 0, 0, issued[0].to_vec())],
                        ttl: Some(60),
                    },
                )];
            }
            let mut report = target(ok());
            apply(&mut report, &d, &[chain], UnixTime::now());
            let got: Vec<(&str, &str)> = report
                .findings
                .iter()
                .filter(|f| f.kind.starts_with("tlsrpt") || f.id.starts_with("tlsrpt"))
                .map(|f| (f.id, f.kind))
                .collect();
            assert_eq!(got, want, "{name}");
            let policy = report.policy.unwrap();
            assert_eq!(policy.dane.applies, dane, "{name}");
            if let Some(f) = report.findings.iter().find(|f| f.id == "tlsrpt-missing") {
                assert_eq!(f.severity, Severity::Low, "{name}");
                assert_eq!(f.evidence[0], "_smtp._tls.example.test: no TXT record");
                // Informational: the policy's status is not changed by it.
                assert_eq!(policy.status, PolicyStatus::Enforced, "{name}");
            }
        }
    }

    #[test]
    fn mta_sts_outcomes() {
        use Severity::*;
        let ok = || vec![host("mx.example.test", Verdict::Encrypted, Some(true))];
        let bad_cert = || vec![host("mx.example.test", Verdict::Encrypted, Some(false))];
        let probe_finding = ("certificate-not-trusted", "chain", Medium);
        let fetch_error = FetchError::Status {
            url: policy_url("example.test"),
            status: 404,
        };
        type Case<'a> = (
            &'a str,
            Discovered,
            Vec<HostReport>,
            PolicyStatus,
            Vec<(&'a str, &'a str, Severity)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no MTA-STS",
                discovered(None),
                ok(),
                PolicyStatus::None,
                vec![probe_finding],
            ),
            (
                "enforce, passing",
                discovered(Some(Ok(policy(Mode::Enforce, &["*.example.test"])))),
                ok(),
                PolicyStatus::Enforced,
                vec![("certificate-not-trusted", "chain", High)],
            ),
            (
                "testing, passing",
                discovered(Some(Ok(policy(Mode::Testing, &["mx.example.test"])))),
                ok(),
                PolicyStatus::Testing,
                vec![probe_finding],
            ),
            (
                "mode none",
                discovered(Some(Ok(policy(Mode::None, &[])))),
                bad_cert(),
                PolicyStatus::None,
                vec![probe_finding],
            ),
            (
                "enforce, MX outside the patterns",
                discovered(Some(Ok(policy(Mode::Enforce, &["mail.example.org"])))),
                ok(),
                PolicyStatus::Failing,
                vec![
                    ("certificate-not-trusted", "chain", High),
                    ("validation-failure", "sts-mx-mismatch", High),
                ],
            ),
            (
                "testing, MX outside the patterns",
                discovered(Some(Ok(policy(Mode::Testing, &["*.example.org"])))),
                ok(),
                PolicyStatus::Failing,
                vec![
                    probe_finding,
                    ("validation-failure", "sts-mx-mismatch", Medium),
                ],
            ),
            (
                "enforce, certificate not valid",
                discovered(Some(Ok(policy(Mode::Enforce, &["mx.example.test"])))),
                bad_cert(),
                PolicyStatus::Failing,
                vec![("certificate-not-trusted", "chain", High)],
            ),
            (
                "enforce, plaintext MX",
                discovered(Some(Ok(policy(Mode::Enforce, &["mx.example.test"])))),
                vec![host("mx.example.test", Verdict::Plaintext, None)],
                PolicyStatus::Failing,
                vec![("certificate-not-trusted", "chain", High)],
            ),
            (
                "enforce, MX timed out",
                discovered(Some(Ok(policy(Mode::Enforce, &["mx.example.test"])))),
                vec![host("mx.example.test", Verdict::Inconclusive, None)],
                PolicyStatus::Unknown,
                vec![("certificate-not-trusted", "chain", High)],
            ),
            (
                "policy not found",
                discovered(Some(Err(fetch_error))),
                ok(),
                PolicyStatus::Failing,
                vec![
                    probe_finding,
                    ("sts-policy-fetch-error", "http-status", Medium),
                ],
            ),
            (
                "enforce, one address unreachable from here",
                discovered(Some(Ok(policy(Mode::Enforce, &["mx.example.test"])))),
                vec![
                    host("mx.example.test", Verdict::Encrypted, Some(true)),
                    host("mx.example.test", Verdict::Error, None),
                ],
                PolicyStatus::Enforced,
                vec![("certificate-not-trusted", "chain", High)],
            ),
            (
                "enforce, every address unreachable from here",
                discovered(Some(Ok(policy(Mode::Enforce, &["mx.example.test"])))),
                vec![host("mx.example.test", Verdict::Error, None)],
                PolicyStatus::Unknown,
                vec![
                    ("certificate-not-trusted", "chain", High),
                    ("inconclusive", "mx-not-reached", Low),
                ],
            ),
            (
                "enforce, served without a Content-Type",
                Discovered {
                    sts_policy_without_content_type: true,
                    ..discovered(Some(Ok(policy(Mode::Enforce, &["mx.example.test"]))))
                },
                ok(),
                PolicyStatus::Enforced,
                vec![
                    ("certificate-not-trusted", "chain", High),
                    ("sts-policy-invalid", "content-type-missing", Low),
                ],
            ),
            (
                "enforce, TLS-RPT lookup failed",
                Discovered {
                    tlsrpt: TxtLookup::Failed {
                        message: "SERVFAIL".to_owned(),
                    },
                    ..discovered(Some(Ok(policy(Mode::Enforce, &["mx.example.test"]))))
                },
                ok(),
                PolicyStatus::Enforced,
                vec![
                    ("certificate-not-trusted", "chain", High),
                    ("inconclusive", "tlsrpt-lookup-failed", Low),
                ],
            ),
        ];
        for (name, d, hosts, status, findings) in cases {
            let got = outcome(&d, hosts);
            assert_eq!(got, (status, findings), "{name}");
        }
    }

    #[test]
    fn dane_ee_softens_certificate_findings_without_mta_sts() {
        let ca = TestCa::new().unwrap();
        let chain = der_chain(&ca.issue(&["other.example"]).unwrap());
        let pinned = tlsa(3, 1, 1, Sha256::digest(spki(&chain[0])).to_vec());
        let run = |sts: Option<Result<Policy, FetchError>>| {
            let mut d = discovered(sts);
            d.mx = Some(Validated::Records {
                status: DnssecStatus::Secure,
                records: vec![],
                ttl: None,
            });
            d.tlsa = vec![(
                "mx.example.test".to_owned(),
                Validated::Records {
                    status: DnssecStatus::Secure,
                    records: vec![pinned.clone()],
                    ttl: None,
                },
            )];
            let mut report = target(vec![host(
                "mx.example.test",
                Verdict::Encrypted,
                Some(false),
            )]);
            report.findings.push(finding(
                "certificate-host-mismatch",
                "name",
                Severity::Medium,
                Some("mx.example.test"),
                "probe finding".to_owned(),
                vec![],
            ));
            apply(&mut report, &d, &[&chain[..]], UnixTime::now());
            let f = &report.findings[0];
            (
                report.policy.unwrap().status,
                f.severity,
                f.evidence.iter().any(|e| e.contains("DANE-EE")),
            )
        };
        // DANE alone: the name does not matter to any sender.
        assert_eq!(run(None), (PolicyStatus::Enforced, Severity::Low, true));
        // Under MTA-STS enforce it does: senders that apply it refuse the MX.
        let enforce = Some(Ok(policy(Mode::Enforce, &["mx.example.test"])));
        assert_eq!(run(enforce), (PolicyStatus::Failing, Severity::High, false));
    }

    #[test]
    fn an_mx_without_addresses_is_not_judged() {
        // Senders cannot use an MX with no address: the others decide the policy's status.
        let d = discovered(Some(Ok(policy(Mode::Enforce, &["*.example.test"]))));
        let mut report = target(vec![host(
            "mx.example.test",
            Verdict::Encrypted,
            Some(true),
        )]);
        report.mx.push(MxReport {
            host: "ghost.example.test".to_owned(),
            preference: Some(20),
            addresses: vec![],
            error: Some("no addresses".to_owned()),
        });
        apply(&mut report, &d, &[], UnixTime::now());
        let policy = report.policy.unwrap();
        assert_eq!(policy.status, PolicyStatus::Enforced);
        assert_eq!(policy.enforced_by, ["mta-sts"]);
        let ghost = policy
            .mta_sts
            .mx
            .iter()
            .find(|m| m.host == "ghost.example.test");
        assert_eq!(ghost.map(|m| (m.matches_policy, m.tls)), Some((true, None)));
    }

    #[test]
    fn records_lookups_and_dnssec() {
        use Severity::*;
        let probe_finding = ("certificate-not-trusted", "chain", Medium);
        let ok = || vec![host("mx.example.test", Verdict::Encrypted, Some(true))];

        let mut invalid_record = discovered(None);
        invalid_record.sts_record = TxtLookup::NoRecord {
            negative_ttl: None,
            note: Some("invalid _mta-sts record: …".to_owned()),
        };
        invalid_record.tlsrpt = TxtLookup::NoRecord {
            negative_ttl: None,
            note: Some("invalid _smtp._tls record: …".to_owned()),
        };
        let (status, findings) = outcome(&invalid_record, ok());
        assert_eq!(status, PolicyStatus::Failing);
        assert_eq!(
            findings,
            [
                probe_finding,
                ("sts-policy-invalid", "sts-record", Medium),
                ("tlsrpt-invalid", "record", Low),
            ]
        );

        let mut failed = discovered(None);
        failed.sts_record = TxtLookup::Failed {
            message: "SERVFAIL".to_owned(),
        };
        failed.mx = Some(Validated::Failed {
            message: "timeout".to_owned(),
        });
        let (status, findings) = outcome(&failed, ok());
        assert_eq!(status, PolicyStatus::Unknown);
        assert_eq!(
            findings,
            [
                probe_finding,
                ("inconclusive", "sts-record-lookup-failed", Low),
                ("inconclusive", "dnssec-lookup-failed", Low),
            ]
        );

        for bogus in [
            Validated::Bogus,
            Validated::Records {
                status: DnssecStatus::Bogus,
                records: vec![],
                ttl: None,
            },
        ] {
            let mut d = discovered(None);
            d.mx = Some(bogus);
            let (status, findings) = outcome(&d, ok());
            assert_eq!(status, PolicyStatus::Failing);
            assert_eq!(
                findings,
                [probe_finding, ("dnssec-invalid", "mx-bogus", High)]
            );
        }

        // A resolver through which not even the trust anchor validates: nothing is bogus.
        let mut unavailable = discovered(None);
        unavailable.mx = None;
        unavailable.dnssec_unavailable = Some("no DNSKEY records for . ".to_owned());
        let (status, findings) = outcome(&unavailable, ok());
        assert_eq!(status, PolicyStatus::Unknown);
        assert_eq!(findings, [probe_finding]);
        let mut report = target(ok());
        apply(&mut report, &unavailable, &[], UnixTime::now());
        assert_eq!(report.policy.unwrap().dnssec.mx, MxDnssec::Unavailable);

        let mut with_tlsrpt = discovered(None);
        with_tlsrpt.tlsrpt = TxtLookup::Record(
            TlsRptRecord::parse("v=TLSRPTv1; rua=mailto:a@example.test,https://r.example.test/x")
                .unwrap(),
        );
        let mut report = target(ok());
        apply(&mut report, &with_tlsrpt, &[], UnixTime::now());
        let policy = report.policy.unwrap();
        assert_eq!(
            policy.tlsrpt.record.as_deref(),
            Some("v=TLSRPTv1; rua=mailto:a@example.test,https://r.example.test/x")
        );
        assert_eq!(
            policy.tlsrpt.rua,
            ["mailto:a@example.test", "https://r.example.test/x"]
        );
        assert_eq!(policy.dnssec.mx, MxDnssec::Insecure);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }

    #[test]
    fn dane_outcomes() {
        use Severity::*;
        let ca = TestCa::new().unwrap();
        let chain = der_chain(&ca.issue(&["mx.example.test"]).unwrap());
        let good = tlsa(3, 1, 1, Sha256::digest(spki(&chain[0])).to_vec());
        let wrong = tlsa(3, 1, 1, vec![0x22; 32]);
        let unusable = tlsa(1, 1, 1, vec![0x22; 32]);
        let secure = |records: Vec<Tlsa>| Validated::Records {
            status: DnssecStatus::Secure,
            records,
            ttl: Some(60),
        };
        let no_tlsa = || Validated::NoRecords {
            nxdomain: true,
            secure: true,
            ttl: Some(60),
        };
        let with = |tlsa: Vec<(&str, Validated<Tlsa>)>| {
            let mut d = discovered(None);
            d.mx = Some(Validated::Records {
                status: DnssecStatus::Secure,
                records: vec![],
                ttl: None,
            });
            d.tlsa = tlsa.into_iter().map(|(h, v)| (h.to_owned(), v)).collect();
            d
        };
        let run = |d: &Discovered, hosts: Vec<HostReport>| {
            let mut report = target(hosts);
            let chains: Vec<&[CertificateDer<'static>]> = report
                .hosts
                .iter()
                .map(|h| if h.tls.is_some() { &chain[..] } else { &[][..] })
                .collect();
            apply(&mut report, d, &chains, UnixTime::now());
            let policy = report.policy.unwrap();
            let findings: Vec<_> = report
                .findings
                .iter()
                .map(|f| (f.id, f.kind, f.severity))
                .collect();
            let results: Vec<_> = policy
                .dane
                .hosts
                .iter()
                .flat_map(|h| h.addresses.iter().map(|a| a.result))
                .collect();
            (policy.status, policy.dane.applies, findings, results)
        };
        let one = |status| vec![host("mx.example.test", status, Some(true))];
        let two = || {
            vec![
                host("mx.example.test", Verdict::Encrypted, Some(true)),
                host("mx2.example.test", Verdict::Encrypted, Some(true)),
            ]
        };
        type Case<'a> = (
            &'a str,
            Discovered,
            Vec<HostReport>,
            (
                PolicyStatus,
                bool,
                Vec<(&'a str, &'a str, Severity)>,
                Vec<DaneResult>,
            ),
        );
        let cases: Vec<Case> = vec![
            (
                "3 1 1 matches",
                with(vec![("mx.example.test", secure(vec![good.clone()]))]),
                one(Verdict::Encrypted),
                (
                    PolicyStatus::Enforced,
                    true,
                    vec![],
                    vec![DaneResult::Matched],
                ),
            ),
            (
                "wrong digest",
                with(vec![("mx.example.test", secure(vec![wrong.clone()]))]),
                one(Verdict::Encrypted),
                (
                    PolicyStatus::Failing,
                    true,
                    vec![("tlsa-invalid", "tlsa-mismatch", High)],
                    vec![DaneResult::NoMatch],
                ),
            ),
            (
                "only unusable records",
                with(vec![("mx.example.test", secure(vec![unusable]))]),
                one(Verdict::Encrypted),
                (
                    PolicyStatus::Failing,
                    true,
                    vec![("tlsa-invalid", "tlsa-unusable", Medium)],
                    vec![DaneResult::AllUnusable],
                ),
            ),
            (
                "plaintext MX with TLSA",
                with(vec![("mx.example.test", secure(vec![good.clone()]))]),
                vec![host("mx.example.test", Verdict::Plaintext, None)],
                (PolicyStatus::Failing, true, vec![], vec![DaneResult::NoTls]),
            ),
            (
                "second MX without TLSA",
                with(vec![
                    ("mx.example.test", secure(vec![good.clone()])),
                    ("mx2.example.test", no_tlsa()),
                ]),
                two(),
                (
                    PolicyStatus::Failing,
                    true,
                    vec![("dane-required", "mx-without-tlsa", Medium)],
                    vec![DaneResult::Matched],
                ),
            ),
            (
                "no TLSA anywhere",
                with(vec![("mx.example.test", no_tlsa())]),
                one(Verdict::Encrypted),
                (PolicyStatus::None, false, vec![], vec![]),
            ),
            (
                "insecure TLSA is ignored",
                with(vec![(
                    "mx.example.test",
                    Validated::Records {
                        status: DnssecStatus::Insecure,
                        records: vec![good.clone()],
                        ttl: None,
                    },
                )]),
                one(Verdict::Encrypted),
                (PolicyStatus::None, false, vec![], vec![]),
            ),
            (
                "bogus TLSA",
                with(vec![("mx.example.test", Validated::Bogus)]),
                one(Verdict::Encrypted),
                (
                    PolicyStatus::Failing,
                    false,
                    vec![("dnssec-invalid", "tlsa-bogus", High)],
                    vec![],
                ),
            ),
            (
                "TLSA lookup failed",
                with(vec![(
                    "mx.example.test",
                    Validated::Failed {
                        message: "SERVFAIL".to_owned(),
                    },
                )]),
                one(Verdict::Encrypted),
                (
                    PolicyStatus::Unknown,
                    false,
                    vec![("inconclusive", "tlsa-lookup-failed", Low)],
                    vec![],
                ),
            ),
            // One MX passes DANE; senders that do DANE defer mail to the other while its
            // TLSA lookup fails or is bogus: DANE does not enforce anything then.
            (
                "second MX's TLSA lookup failed",
                with(vec![
                    ("mx.example.test", secure(vec![good.clone()])),
                    (
                        "mx2.example.test",
                        Validated::Failed {
                            message: "SERVFAIL".to_owned(),
                        },
                    ),
                ]),
                two(),
                (
                    PolicyStatus::Unknown,
                    true,
                    vec![("inconclusive", "tlsa-lookup-failed", Low)],
                    vec![DaneResult::Matched],
                ),
            ),
            (
                "second MX's TLSA bogus",
                with(vec![
                    ("mx.example.test", secure(vec![good.clone()])),
                    ("mx2.example.test", Validated::Bogus),
                ]),
                two(),
                (
                    PolicyStatus::Failing,
                    true,
                    vec![("dnssec-invalid", "tlsa-bogus", High)],
                    vec![DaneResult::Matched],
                ),
            ),
            // An address unreachable from here (no IPv6 route) is not judged while another
            // address of the host was; when none was, the host is not judged, and said so.
            (
                "one address unreachable from here",
                with(vec![("mx.example.test", secure(vec![good.clone()]))]),
                vec![
                    host("mx.example.test", Verdict::Encrypted, Some(true)),
                    host("mx.example.test", Verdict::Error, None),
                ],
                (
                    PolicyStatus::Enforced,
                    true,
                    vec![],
                    vec![DaneResult::Matched, DaneResult::NotReached],
                ),
            ),
            (
                "every address unreachable from here",
                with(vec![("mx.example.test", secure(vec![good.clone()]))]),
                vec![host("mx.example.test", Verdict::Error, None)],
                (
                    PolicyStatus::Unknown,
                    true,
                    vec![("inconclusive", "mx-not-reached", Low)],
                    vec![DaneResult::NotReached],
                ),
            ),
        ];
        for (name, d, hosts, want) in cases {
            assert_eq!(run(&d, hosts), want, "{name}");
        }
    }
}
