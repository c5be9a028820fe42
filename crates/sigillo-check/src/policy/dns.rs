//! The DNS side of the policy daemon and of `sigillo check`'s policy discovery: the
//! `_mta-sts` and `_smtp._tls` TXT records (with negative TTLs), DANE (DNSSEC-validated MX
//! and `_25._tcp` TLSA records), and host addresses for the policy fetch.
//!
//! Two resolvers share one name-server configuration: a plain one for MTA-STS (which does not
//! need DNSSEC) and a validating one for DANE, built with hickory's DNSSEC support and the
//! IANA root trust anchors, or a trust anchor file (`--trust-anchor`, DNSKEY records in zone
//! file format) for private test zones.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::proto::serialize::txt::trust_anchor;
use serde::Serialize;
use sigillo_policy::dane::{Tlsa, tlsa_owner};
use sigillo_policy::decide::DaneState;
use sigillo_policy::mta_sts::StsRecord;
use sigillo_policy::tlsrpt::TlsRptRecord;
use sigillo_policy::{TxtRecordError, concat_strings};

use crate::dns::{DnsError, Mx, fqdn, name_text, resolver_builder};

/// Where and how to resolve.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// One name server (`--resolver`); `None` for the system's (`/etc/resolv.conf`).
    pub server: Option<SocketAddr>,
    /// DNSKEY trust anchors for DANE validation; `None` for the IANA root anchors.
    pub trust_anchor: Option<PathBuf>,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Look DANE up at all (a validating resolver is only built when true).
    pub dane: bool,
    /// At most this many MX hosts are looked at for TLSA records.
    pub max_mx_hosts: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            server: None,
            trust_anchor: None,
            timeout: Duration::from_secs(5),
            dane: true,
            max_mx_hosts: 10,
        }
    }
}

/// What the `_mta-sts.<domain>` TXT lookup found (or, with `R` = [`TlsRptRecord`], the
/// `_smtp._tls.<domain>` one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtLookup<R = StsRecord> {
    /// Exactly one valid record (`v=STSv1`, `v=TLSRPTv1`).
    Record(R),
    /// No record: NXDOMAIN, NODATA, no record of the version, or one that is invalid or
    /// repeated (RFC 8461 §3.1, RFC 8460 §3: then the domain has none); `note` says which of
    /// the last two. `negative_ttl` is the SOA-derived TTL of a negative answer, when there
    /// was one.
    NoRecord {
        negative_ttl: Option<u32>,
        note: Option<String>,
    },
    /// The lookup failed (SERVFAIL, timeout, refused).
    Failed { message: String },
}

/// What the DANE lookups for a domain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneLookup {
    /// The state [`sigillo_policy::decide::decide`] takes.
    pub state: DaneState,
    /// The smallest TTL of the answers it rests on, if known.
    pub ttl: Option<u32>,
    /// One line on what was found, for logs and `--check`.
    pub detail: String,
}

impl DaneLookup {
    fn new(state: DaneState, ttl: Option<u32>, detail: impl Into<String>) -> Self {
        Self {
            state,
            ttl,
            detail: detail.into(),
        }
    }
}

/// Picks and parses the one record of a version among a name's TXT records.
type SelectRecord<R> = fn(&[Vec<u8>]) -> Result<Option<R>, TxtRecordError>;

/// The policy daemon's resolvers.
#[derive(Clone)]
pub struct PolicyDns {
    plain: TokioResolver,
    validating: Option<TokioResolver>,
    max_mx_hosts: usize,
    /// The zone of the (first) trust anchor: `.` for the IANA root keys.
    anchor_zone: String,
}

impl std::fmt::Debug for PolicyDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyDns")
            .field("dane", &self.validating.is_some())
            .finish_non_exhaustive()
    }
}

impl PolicyDns {
    /// Builds the resolvers; reads the trust anchor file when one is given.
    pub fn new(config: &DnsConfig) -> Result<Self, DnsError> {
        let build_error = |e: NetError| DnsError::Config {
            message: e.to_string(),
        };
        let plain = resolver_builder(config.server, config.timeout)?
            .build()
            .map_err(build_error)?;
        let mut anchor_zone = ".".to_owned();
        let validating = if config.dane {
            let mut builder = resolver_builder(config.server, config.timeout)?;
            builder.options_mut().validate = true;
            if let Some(path) = &config.trust_anchor {
                let anchor_error = |e: &dyn std::fmt::Display| DnsError::Config {
                    message: format!("trust anchor {}: {e}", path.display()),
                };
                let text = std::fs::read_to_string(path).map_err(|e| anchor_error(&e))?;
                let anchors: TrustAnchors = text.parse().map_err(|e| anchor_error(&e))?;
                if let Some(zone) = first_anchor_zone(&text) {
                    anchor_zone = zone;
                }
                builder = builder.with_trust_anchor(Arc::new(anchors));
            }
            Some(builder.build().map_err(build_error)?)
        } else {
            None
        };
        Ok(Self {
            plain,
            validating,
            max_mx_hosts: config.max_mx_hosts.max(1),
            anchor_zone,
        })
    }

    /// Whether DANE is looked up.
    pub fn dane_enabled(&self) -> bool {
        self.validating.is_some()
    }

    /// The `_mta-sts.<domain>` TXT record.
    pub async fn sts_record(&self, domain: &str) -> TxtLookup {
        self.txt_record(
            &format!("_mta-sts.{domain}"),
            "_mta-sts",
            StsRecord::from_txt,
        )
        .await
    }

    /// The `_smtp._tls.<domain>` TLS-RPT TXT record.
    pub async fn tlsrpt_record(&self, domain: &str) -> TxtLookup<TlsRptRecord> {
        self.txt_record(
            &format!("_smtp._tls.{domain}"),
            "_smtp._tls",
            TlsRptRecord::from_txt,
        )
        .await
    }

    /// The TXT records at `name`, given (each concatenated) to `select`, which picks and
    /// parses the one record of its version; `label` names it in notes.
    async fn txt_record<R>(
        &self,
        name: &str,
        label: &str,
        select: SelectRecord<R>,
    ) -> TxtLookup<R> {
        let name = fqdn(name);
        let lookup = match self.plain.lookup(name.as_str(), RecordType::TXT).await {
            Ok(lookup) => lookup,
            Err(e) => {
                return match negative(&e) {
                    Some(negative_ttl) => TxtLookup::NoRecord {
                        negative_ttl,
                        note: None,
                    },
                    None => TxtLookup::Failed {
                        message: format!("{name} TXT: {e}"),
                    },
                };
            }
        };
        let records: Vec<Vec<u8>> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(concat_strings(&txt.txt_data)),
                _ => None,
            })
            .collect();
        match select(&records) {
            Ok(Some(record)) => TxtLookup::Record(record),
            Ok(None) => TxtLookup::NoRecord {
                negative_ttl: min_ttl(lookup.answers()),
                note: None,
            },
            Err(e) => TxtLookup::NoRecord {
                negative_ttl: min_ttl(lookup.answers()),
                note: Some(format!("invalid {label} record: {e}")),
            },
        }
    }

    /// DANE for a domain: its MX RRset must validate as secure, then each MX host's
    /// `_25._tcp` TLSA RRset (RFC 7672 §2.2); a domain without MX is its own host.
    pub async fn dane(&self, domain: &str) -> DaneLookup {
        let Some(resolver) = &self.validating else {
            return DaneLookup::new(DaneState::NotChecked, None, "DANE not looked up");
        };
        let (hosts, mx_ttl) = match validated_mx(resolver, domain).await {
            Validated::Records {
                status: DnssecStatus::Secure,
                records,
                ttl,
            } => {
                let hosts = exchange_hosts(records);
                if hosts.is_empty() {
                    return DaneLookup::new(DaneState::NoTlsa, ttl, "null MX: no mail");
                }
                (hosts, ttl)
            }
            Validated::Records {
                status: DnssecStatus::Bogus,
                ttl,
                ..
            } => return DaneLookup::new(DaneState::Bogus, ttl, "MX RRset is DNSSEC-bogus"),
            Validated::Records { ttl, .. } => {
                return DaneLookup::new(
                    DaneState::NoTlsa,
                    ttl,
                    "MX RRset not DNSSEC-signed: DANE does not apply",
                );
            }
            Validated::Bogus => {
                return DaneLookup::new(DaneState::Bogus, None, "MX lookup: DNSSEC-bogus");
            }
            Validated::Failed { message } => {
                return DaneLookup::new(
                    DaneState::LookupFailed,
                    None,
                    format!("MX lookup failed: {message}"),
                );
            }
            Validated::NoRecords {
                nxdomain: true,
                ttl,
                ..
            } => return DaneLookup::new(DaneState::NoTlsa, ttl, "the domain does not exist"),
            // No MX: the domain itself is the host (RFC 5321 §5.1), if the denial is secure.
            Validated::NoRecords {
                secure: true, ttl, ..
            } => (vec![domain.to_owned()], ttl),
            Validated::NoRecords { ttl, .. } => {
                return DaneLookup::new(
                    DaneState::NoTlsa,
                    ttl,
                    "no MX and no secure denial: DANE does not apply",
                );
            }
        };
        self.tlsa_for_hosts(resolver, &hosts, mx_ttl).await
    }

    async fn tlsa_for_hosts(
        &self,
        resolver: &TokioResolver,
        hosts: &[String],
        mx_ttl: Option<u32>,
    ) -> DaneLookup {
        let mut ttl = mx_ttl;
        let (mut usable, mut unusable, mut without) = (Vec::new(), Vec::new(), Vec::new());
        // Hosts whose TLSA lookup failed or was DNSSEC-bogus: each is ruled out on its own
        // (RFC 7672 §2.1.1, §2.2), the others still count.
        let (mut failed, mut bogus) = (Vec::new(), Vec::new());
        let mut first_failure = None;
        for host in hosts.iter().take(self.max_mx_hosts) {
            match validated_tlsa(resolver, host).await {
                Validated::Records {
                    status,
                    records,
                    ttl: records_ttl,
                } => {
                    ttl = min_opt(ttl, records_ttl);
                    match status {
                        DnssecStatus::Secure => {}
                        DnssecStatus::Bogus => {
                            bogus.push(host.as_str());
                            continue;
                        }
                        _ => {
                            without.push(host.as_str());
                            continue;
                        }
                    }
                    let any = !records.is_empty();
                    let any_usable = records.iter().any(|r| r.usability().is_ok());
                    match (any, any_usable) {
                        (_, true) => usable.push(host.as_str()),
                        (true, false) => unusable.push(host.as_str()),
                        (false, false) => without.push(host.as_str()),
                    }
                }
                Validated::Bogus => bogus.push(host.as_str()),
                Validated::Failed { message } => {
                    first_failure.get_or_insert_with(|| format!("{host}: {message}"));
                    failed.push(host.as_str());
                }
                Validated::NoRecords {
                    ttl: negative_ttl, ..
                } => {
                    ttl = min_opt(ttl, negative_ttl);
                    without.push(host.as_str());
                }
            }
        }
        let list = |hosts: &[&str]| hosts.join(", ");
        let ruled_out = || {
            let mut parts = Vec::new();
            if !failed.is_empty() {
                parts.push(format!(
                    "TLSA lookup failed for {} ({})",
                    list(&failed),
                    first_failure.as_deref().unwrap_or("")
                ));
            }
            if !bogus.is_empty() {
                parts.push(format!("TLSA of {} is DNSSEC-bogus", list(&bogus)));
            }
            parts.join("; ")
        };
        let broken = !failed.is_empty() || !bogus.is_empty();
        if !usable.is_empty() {
            let mut reason = format!("usable DNSSEC-validated TLSA for {}", list(&usable));
            if broken {
                reason.push_str(&format!("; {}", ruled_out()));
            }
            DaneLookup::new(DaneState::Usable, ttl, reason)
        } else if broken && unusable.is_empty() && without.is_empty() {
            let state = if failed.is_empty() {
                DaneState::Bogus
            } else {
                DaneState::TlsaLookupFailed
            };
            DaneLookup::new(state, ttl, ruled_out())
        } else if broken {
            DaneLookup::new(DaneState::TlsaPartlyFailed, ttl, ruled_out())
        } else if !unusable.is_empty() {
            DaneLookup::new(
                DaneState::AllUnusable,
                ttl,
                format!("only unusable TLSA records, for {}", list(&unusable)),
            )
        } else {
            DaneLookup::new(
                DaneState::NoTlsa,
                ttl,
                format!("signed MX, no DNSSEC-validated TLSA for {}", list(&without)),
            )
        }
    }

    /// The MX RRset of `domain` as the validating resolver saw it, with its DNSSEC status;
    /// `None` when DANE lookups are off (no validating resolver).
    pub async fn validated_mx(&self, domain: &str) -> Option<Validated<Mx>> {
        Some(validated_mx(self.validating.as_ref()?, domain).await)
    }

    /// The `_25._tcp.<host>` TLSA RRset as the validating resolver saw it, with its DNSSEC
    /// status; `None` when DANE lookups are off. A record with no association data is kept
    /// (it is unusable, which is not the same as no record).
    pub async fn validated_tlsa(&self, host: &str) -> Option<Validated<Tlsa>> {
        Some(validated_tlsa(self.validating.as_ref()?, host).await)
    }

    /// At most this many MX hosts are looked at for TLSA records.
    pub fn max_mx_hosts(&self) -> usize {
        self.max_mx_hosts
    }

    /// Whether answers can be validated at all: the DNSKEY RRset of the trust anchor's zone
    /// (the root, or the first zone of `--trust-anchor`) must come back secure. A resolver
    /// that strips DNSSEC records, or trust anchors for a zone the resolver does not lead
    /// to, make every answer look bogus; this tells that apart from a bogus domain. `None`
    /// when DANE lookups are off.
    pub async fn check_validation(&self) -> Option<Result<(), String>> {
        let resolver = self.validating.as_ref()?;
        let zone = &self.anchor_zone;
        Some(
            match validated(resolver, &fqdn(zone), RecordType::DNSKEY, |_| Some(())).await {
                Validated::Records {
                    status: DnssecStatus::Secure,
                    ..
                } => Ok(()),
                Validated::Records { status, .. } => Err(format!(
                    "the DNSKEY RRset of the trust anchor zone {zone} is {status:?}, not secure"
                )),
                Validated::NoRecords { .. } => Err(format!(
                    "no DNSKEY records for the trust anchor zone {zone}"
                )),
                Validated::Bogus => Err(format!(
                    "the DNSKEY RRset of the trust anchor zone {zone} does not validate"
                )),
                Validated::Failed { message } => Err(format!(
                    "the DNSKEY lookup of the trust anchor zone {zone} failed: {message}"
                )),
            },
        )
    }

    /// The addresses of a host (A and AAAA), for connecting to a policy host.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, NetError> {
        let lookup = self.plain.lookup_ip(fqdn(host)).await?;
        Ok(lookup.iter().collect())
    }
}

/// The DNSSEC status of an answer, as RFC 4035 §4.3 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnssecStatus {
    /// Validated from the trust anchor down.
    Secure,
    /// Provably unsigned (an insecure delegation on the way).
    Insecure,
    /// Signatures or denials that should validate do not: a validating resolver refuses it.
    Bogus,
    /// Neither proven secure nor insecure.
    Indeterminate,
}

impl From<Proof> for DnssecStatus {
    fn from(proof: Proof) -> Self {
        match proof {
            Proof::Secure => DnssecStatus::Secure,
            Proof::Insecure => DnssecStatus::Insecure,
            Proof::Bogus => DnssecStatus::Bogus,
            _ => DnssecStatus::Indeterminate,
        }
    }
}

/// What a DNSSEC-validating lookup of one RRset found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated<T> {
    /// An answer: its records (of the asked type) and the weakest proof among them.
    Records {
        status: DnssecStatus,
        records: Vec<T>,
        ttl: Option<u32>,
    },
    /// No records: NXDOMAIN (`nxdomain`) or NODATA; `secure` when the denial validated;
    /// `ttl` its negative TTL.
    NoRecords {
        nxdomain: bool,
        secure: bool,
        ttl: Option<u32>,
    },
    /// The answer (or the denial) failed validation.
    Bogus,
    /// SERVFAIL, timeout, refused…
    Failed { message: String },
}

/// The owner name of the first DNSKEY in trust anchor text (zone file syntax), if any.
fn first_anchor_zone(text: &str) -> Option<String> {
    let entries = trust_anchor::Parser::new(text).parse().ok()?;
    entries.iter().find_map(|entry| match entry {
        trust_anchor::Entry::DNSKEY(record) => Some(record.name().to_ascii()),
        _ => None,
    })
}

/// The exchange hosts of an MX RRset in preference order (then by name), without
/// duplicate records and without a null MX's empty name.
pub fn exchange_hosts(mut records: Vec<Mx>) -> Vec<String> {
    records.retain(|m| !m.host.is_empty());
    records.sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
    records.dedup();
    records.into_iter().map(|m| m.host).collect()
}

async fn validated_mx(resolver: &TokioResolver, domain: &str) -> Validated<Mx> {
    validated(resolver, &fqdn(domain), RecordType::MX, |data| match data {
        RData::MX(mx) => Some(Mx {
            preference: mx.preference,
            host: name_text(&mx.exchange.to_ascii()),
        }),
        _ => None,
    })
    .await
}

async fn validated_tlsa(resolver: &TokioResolver, host: &str) -> Validated<Tlsa> {
    validated(
        resolver,
        &fqdn(&tlsa_owner(host, 25)),
        RecordType::TLSA,
        |data| match data {
            RData::TLSA(t) => {
                let mut rdata = vec![
                    u8::from(t.cert_usage),
                    u8::from(t.selector),
                    u8::from(t.matching),
                ];
                rdata.extend_from_slice(&t.cert_data);
                Tlsa::from_rdata(&rdata).ok()
            }
            _ => None,
        },
    )
    .await
}

/// Looks `name`/`rtype` up through a validating resolver; `convert` picks the records.
async fn validated<T>(
    resolver: &TokioResolver,
    name: &str,
    rtype: RecordType,
    convert: impl Fn(&RData) -> Option<T>,
) -> Validated<T> {
    match resolver.lookup(name, rtype).await {
        Ok(lookup) => {
            let answers = lookup.answers();
            Validated::Records {
                status: rrset_proof(answers, rtype).into(),
                records: answers.iter().filter_map(|r| convert(&r.data)).collect(),
                ttl: min_ttl(answers),
            }
        }
        Err(e) => match classify(&e) {
            Outcome::Bogus => Validated::Bogus,
            Outcome::Failed => Validated::Failed {
                message: e.to_string(),
            },
            Outcome::NxDomain { secure } => Validated::NoRecords {
                nxdomain: true,
                secure,
                ttl: negative(&e).flatten(),
            },
            Outcome::NoData { secure } => Validated::NoRecords {
                nxdomain: false,
                secure,
                ttl: negative(&e).flatten(),
            },
        },
    }
}

/// How a failed lookup counts.
enum Outcome {
    /// DNSSEC validation failed.
    Bogus,
    /// The name does not exist; `secure` when DNSSEC proved it.
    NxDomain { secure: bool },
    /// The name exists without records of the type; `secure` when DNSSEC proved it.
    NoData { secure: bool },
    /// SERVFAIL, timeout, refused…
    Failed,
}

fn classify(error: &NetError) -> Outcome {
    match error {
        NetError::Dns(HickoryDnsError::DnssecBogus) => Outcome::Bogus,
        NetError::Dns(HickoryDnsError::NoRecordsFound(no)) => {
            // The denial's NSEC/NSEC3 records in the authority section carry the proof.
            let secure = no
                .authorities
                .as_deref()
                .is_some_and(|records| records.iter().any(|r| r.proof == Proof::Secure));
            if no.response_code == ResponseCode::NXDomain {
                Outcome::NxDomain { secure }
            } else {
                Outcome::NoData { secure }
            }
        }
        NetError::Dns(HickoryDnsError::Nsec { proof, .. }) => match proof {
            Proof::Bogus => Outcome::Bogus,
            _ => Outcome::NoData { secure: false },
        },
        _ => Outcome::Failed,
    }
}

/// `Some(negative TTL)` when `error` is a negative answer (NXDOMAIN or NODATA): hickory's,
/// or else (validating resolvers drop it) RFC 2308's from the SOA: the smaller of its TTL
/// and its MINIMUM.
fn negative(error: &NetError) -> Option<Option<u32>> {
    match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(no)) => Some(
            no.negative_ttl
                .or_else(|| no.soa.as_ref().map(|soa| soa.ttl.min(soa.data.minimum))),
        ),
        _ => None,
    }
}

/// The weakest proof among the records of type `rtype` (none: indeterminate).
fn rrset_proof(records: &[Record], rtype: RecordType) -> Proof {
    records
        .iter()
        .filter(|r| r.record_type() == rtype)
        .map(|r| r.proof)
        .min_by_key(|p| match p {
            Proof::Bogus => 0,
            Proof::Secure => 3,
            Proof::Insecure => 2,
            _ => 1,
        })
        .unwrap_or(Proof::Indeterminate)
}

fn min_ttl(records: &[Record]) -> Option<u32> {
    records.iter().map(|r| r.ttl).min()
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
