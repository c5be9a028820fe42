//! The DNS side of the policy daemon: the `_mta-sts` TXT record with its negative TTL, DANE
//! (DNSSEC-validated MX and `_25._tcp` TLSA records), and host addresses for the policy fetch.
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
use sigillo_policy::concat_strings;
use sigillo_policy::dane::{Tlsa, tlsa_owner};
use sigillo_policy::decide::DaneState;
use sigillo_policy::mta_sts::StsRecord;

use crate::dns::{DnsError, fqdn, name_text, resolver_builder};

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

/// What the `_mta-sts.<domain>` TXT lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtLookup {
    /// Exactly one valid `v=STSv1` record.
    Record(StsRecord),
    /// No MTA-STS record: NXDOMAIN, NODATA, no `v=STSv1` record, or one that is invalid or
    /// repeated (RFC 8461 §3.1: then the domain has no MTA-STS). `negative_ttl` is the
    /// SOA-derived TTL of a negative answer, when there was one.
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

/// The policy daemon's resolvers.
#[derive(Clone)]
pub struct PolicyDns {
    plain: TokioResolver,
    validating: Option<TokioResolver>,
    max_mx_hosts: usize,
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
        let validating = if config.dane {
            let mut builder = resolver_builder(config.server, config.timeout)?;
            builder.options_mut().validate = true;
            if let Some(path) = &config.trust_anchor {
                let anchors = TrustAnchors::from_file(path).map_err(|e| DnsError::Config {
                    message: format!("trust anchor {}: {e}", path.display()),
                })?;
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
        })
    }

    /// Whether DANE is looked up.
    pub fn dane_enabled(&self) -> bool {
        self.validating.is_some()
    }

    /// The `_mta-sts.<domain>` TXT record.
    pub async fn sts_record(&self, domain: &str) -> TxtLookup {
        let name = fqdn(&format!("_mta-sts.{domain}"));
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
        match StsRecord::from_txt(&records) {
            Ok(Some(record)) => TxtLookup::Record(record),
            Ok(None) => TxtLookup::NoRecord {
                negative_ttl: min_ttl(lookup.answers()),
                note: None,
            },
            Err(e) => TxtLookup::NoRecord {
                negative_ttl: min_ttl(lookup.answers()),
                note: Some(format!("invalid _mta-sts record: {e}")),
            },
        }
    }

    /// DANE for a domain: its MX RRset must validate as secure, then each MX host's
    /// `_25._tcp` TLSA RRset (RFC 7672 §2.2); a domain without MX is its own host.
    pub async fn dane(&self, domain: &str) -> DaneLookup {
        let Some(resolver) = &self.validating else {
            return DaneLookup::new(DaneState::NotChecked, None, "DANE not looked up");
        };
        let hosts = match resolver.lookup(fqdn(domain), RecordType::MX).await {
            Ok(lookup) => {
                let answers = lookup.answers();
                let ttl = min_ttl(answers);
                match rrset_proof(answers, RecordType::MX) {
                    Proof::Secure => {}
                    Proof::Bogus => {
                        return DaneLookup::new(DaneState::Bogus, ttl, "MX RRset is DNSSEC-bogus");
                    }
                    _ => {
                        return DaneLookup::new(
                            DaneState::NoTlsa,
                            ttl,
                            "MX RRset not DNSSEC-signed: DANE does not apply",
                        );
                    }
                }
                let mut hosts: Vec<(u16, String)> = answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, name_text(&mx.exchange.to_ascii()))),
                        _ => None,
                    })
                    .filter(|(_, host)| !host.is_empty())
                    .collect();
                if hosts.is_empty() {
                    return DaneLookup::new(DaneState::NoTlsa, ttl, "null MX: no mail");
                }
                hosts.sort();
                hosts.dedup();
                (hosts.into_iter().map(|(_, h)| h).collect::<Vec<_>>(), ttl)
            }
            Err(e) => match classify(&e) {
                Outcome::Bogus => {
                    return DaneLookup::new(DaneState::Bogus, None, "MX lookup: DNSSEC-bogus");
                }
                Outcome::Failed => {
                    return DaneLookup::new(
                        DaneState::LookupFailed,
                        None,
                        format!("MX lookup failed: {e}"),
                    );
                }
                Outcome::NxDomain => {
                    return DaneLookup::new(
                        DaneState::NoTlsa,
                        negative(&e).flatten(),
                        "the domain does not exist",
                    );
                }
                // No MX: the domain itself is the host (RFC 5321 §5.1), if the denial is secure.
                Outcome::NoData { secure: true } => {
                    (vec![domain.to_owned()], negative(&e).flatten())
                }
                Outcome::NoData { secure: false } => {
                    return DaneLookup::new(
                        DaneState::NoTlsa,
                        negative(&e).flatten(),
                        "no MX and no secure denial: DANE does not apply",
                    );
                }
            },
        };
        let (hosts, mx_ttl) = hosts;
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
        for host in hosts.iter().take(self.max_mx_hosts) {
            let owner = fqdn(&tlsa_owner(host, 25));
            match resolver.lookup(owner.as_str(), RecordType::TLSA).await {
                Ok(lookup) => {
                    let answers = lookup.answers();
                    ttl = min_opt(ttl, min_ttl(answers));
                    match rrset_proof(answers, RecordType::TLSA) {
                        Proof::Secure => {}
                        Proof::Bogus => {
                            return DaneLookup::new(
                                DaneState::Bogus,
                                ttl,
                                format!("TLSA of {host} is DNSSEC-bogus"),
                            );
                        }
                        _ => {
                            without.push(host.as_str());
                            continue;
                        }
                    }
                    let records = answers.iter().filter_map(|r| match &r.data {
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
                    });
                    let mut any = false;
                    let mut any_usable = false;
                    for record in records {
                        any = true;
                        any_usable |= record.usability().is_ok();
                    }
                    match (any, any_usable) {
                        (_, true) => usable.push(host.as_str()),
                        (true, false) => unusable.push(host.as_str()),
                        (false, false) => without.push(host.as_str()),
                    }
                }
                Err(e) => match classify(&e) {
                    Outcome::Bogus => {
                        return DaneLookup::new(
                            DaneState::Bogus,
                            ttl,
                            format!("TLSA lookup of {host}: DNSSEC-bogus"),
                        );
                    }
                    Outcome::Failed => {
                        return DaneLookup::new(
                            DaneState::LookupFailed,
                            ttl,
                            format!("TLSA lookup of {host} failed: {e}"),
                        );
                    }
                    Outcome::NxDomain | Outcome::NoData { .. } => {
                        ttl = min_opt(ttl, negative(&e).flatten());
                        without.push(host.as_str());
                    }
                },
            }
        }
        let list = |hosts: &[&str]| hosts.join(", ");
        if !usable.is_empty() {
            DaneLookup::new(
                DaneState::Usable,
                ttl,
                format!("usable DNSSEC-validated TLSA for {}", list(&usable)),
            )
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

    /// The addresses of a host (A and AAAA), for connecting to a policy host.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, NetError> {
        let lookup = self.plain.lookup_ip(fqdn(host)).await?;
        Ok(lookup.iter().collect())
    }
}

/// How a failed lookup counts.
enum Outcome {
    /// DNSSEC validation failed.
    Bogus,
    /// The name does not exist.
    NxDomain,
    /// The name exists without records of the type; `secure` when DNSSEC proved it.
    NoData { secure: bool },
    /// SERVFAIL, timeout, refused…
    Failed,
}

fn classify(error: &NetError) -> Outcome {
    match error {
        NetError::Dns(HickoryDnsError::DnssecBogus) => Outcome::Bogus,
        NetError::Dns(HickoryDnsError::NoRecordsFound(no)) => {
            if no.response_code == ResponseCode::NXDomain {
                Outcome::NxDomain
            } else {
                let secure = no
                    .authorities
                    .as_deref()
                    .is_some_and(|records| records.iter().any(|r| r.proof == Proof::Secure));
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
