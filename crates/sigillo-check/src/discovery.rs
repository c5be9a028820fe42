//! Policy discovery for `sigillo check`: the lookups and the fetch that show how a mail
//! domain asks senders to protect mail to it. Interpreting them is [`crate::policy_report`]'s job.
//!
//! Per domain, concurrently:
//! - MTA-STS (RFC 8461): the `_mta-sts` TXT record and, when there is one, the policy from
//!   `https://mta-sts.<domain>/.well-known/mta-sts.txt` (through [`PolicyFetcher`]: no
//!   redirects, 64 KiB, time limits, a certificate valid for that name);
//! - TLS-RPT (RFC 8460): the `_smtp._tls` TXT record;
//! - DNSSEC and DANE (RFC 7672 §2.2): the MX RRset through a validating resolver and, when it
//!   is secure, the `_25._tcp` TLSA RRset of each MX host (of the domain itself when a secure
//!   denial proves it has no MX). Once per run, the trust anchor's own zone is checked first:
//!   if even it does not validate, the resolver cannot do DNSSEC (it strips the records, or
//!   the anchors do not lead to it), and nothing is called bogus.
//!
//! The lookups are those of `sigillo policy serve` ([`PolicyDns`]), so both commands see a
//! domain the same way. Every DNS query has the resolver's timeout and the fetch its own, so
//! discovery ends in bounded time.

use std::sync::Arc;

use futures::future::join_all;
use sigillo_policy::dane::Tlsa;
use sigillo_policy::mta_sts::Policy;
use sigillo_policy::tlsrpt::TlsRptRecord;
use tokio::sync::OnceCell;

use crate::dns::{DnsError, Mx};
use crate::policy::dns::{DnsConfig, PolicyDns, TxtLookup, Validated, exchange_hosts};
use crate::policy::fetch::{FetchConfig, FetchError, PolicyFetcher};

/// Where to resolve and how to fetch.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryConfig {
    /// Name server, DNSSEC trust anchors, query timeout, whether to look DANE up.
    pub dns: DnsConfig,
    /// Time limits, roots and port of the MTA-STS policy fetch.
    pub fetch: FetchConfig,
}

/// Why discovery could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The resolvers (or the trust anchor file) could not be set up. The message leaves the
    /// cause to the error chain (`{:#}` with anyhow), so it is not printed twice.
    #[error("policy discovery")]
    Dns {
        #[from]
        source: DnsError,
    },
    /// The HTTPS client could not be built.
    #[error("policy discovery")]
    Fetch {
        #[from]
        source: FetchError,
    },
}

/// Looks up the policies of mail domains; cheap to clone (clones share resolvers and the
/// HTTPS connection pool).
#[derive(Debug, Clone)]
pub struct PolicyDiscovery {
    dns: PolicyDns,
    fetcher: PolicyFetcher,
    /// Whether the resolver's answers validate at all, found once per run.
    validation: Arc<OnceCell<Option<Result<(), String>>>>,
}

/// What was found for one domain, as the lookups returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The domain (canonical form).
    pub domain: String,
    /// The `_mta-sts` TXT record.
    pub sts_record: TxtLookup,
    /// The policy fetch, made only when there is an MTA-STS record (RFC 8461 §3.3).
    pub sts_policy: Option<Result<Policy, FetchError>>,
    /// The policy was served with no `Content-Type` header (accepted; a finding of its own).
    pub sts_policy_without_content_type: bool,
    /// The `_smtp._tls` TXT record.
    pub tlsrpt: TxtLookup<TlsRptRecord>,
    /// Why DNSSEC cannot be checked through this resolver at all (the trust anchor's own
    /// zone does not validate); then `mx` is `None` and `tlsa` empty.
    pub dnssec_unavailable: Option<String>,
    /// The MX RRset through the validating resolver; `None` when DANE lookups are off or
    /// DNSSEC is unavailable.
    pub mx: Option<Validated<Mx>>,
    /// The TLSA RRset of each host DANE applies to, in MX order: the MX hosts of a secure
    /// MX RRset, or the domain itself after a secure denial of MX.
    pub tlsa: Vec<(String, Validated<Tlsa>)>,
}

impl PolicyDiscovery {
    /// Builds the resolvers (reading a trust anchor file, if configured) and the HTTPS client.
    pub fn new(config: &DiscoveryConfig) -> Result<Self, DiscoveryError> {
        let dns = PolicyDns::new(&config.dns)?;
        let fetcher = PolicyFetcher::new(&config.fetch, dns.clone())?;
        Ok(Self {
            dns,
            fetcher,
            validation: Arc::default(),
        })
    }

    /// Discovers the policies of `domain` (a valid domain name in canonical form). Never
    /// fails: failures are in the lookups' values.
    pub async fn discover(&self, domain: &str) -> Discovered {
        let sts = async {
            let record = self.dns.sts_record(domain).await;
            let policy = match &record {
                TxtLookup::Record(_) => Some(self.fetcher.fetch_served(domain).await),
                _ => None,
            };
            let without_content_type =
                matches!(&policy, Some(Ok(served)) if served.content_type.is_none());
            let policy = policy.map(|fetched| fetched.map(|served| served.policy));
            (record, policy, without_content_type)
        };
        let dane = async {
            let validation = self
                .validation
                .get_or_init(|| self.dns.check_validation())
                .await;
            if let Some(Err(why)) = validation {
                return (Some(why.clone()), None, Vec::new());
            }
            let Some(mx) = self.dns.validated_mx(domain).await else {
                return (None, None, Vec::new());
            };
            let hosts: Vec<String> = dane_hosts(domain, &mx)
                .into_iter()
                .take(self.dns.max_mx_hosts())
                .collect();
            let lookups = join_all(hosts.iter().map(|host| self.dns.validated_tlsa(host))).await;
            let tlsa = hosts
                .into_iter()
                .zip(lookups)
                .filter_map(|(host, lookup)| Some((host, lookup?)))
                .collect();
            (None, Some(mx), tlsa)
        };
        let (
            (sts_record, sts_policy, sts_policy_without_content_type),
            tlsrpt,
            (dnssec_unavailable, mx, tlsa),
        ) = tokio::join!(sts, self.dns.tlsrpt_record(domain), dane);
        Discovered {
            domain: domain.to_owned(),
            sts_record,
            sts_policy,
            sts_policy_without_content_type,
            tlsrpt,
            dnssec_unavailable,
            mx,
            tlsa,
        }
    }
}

/// The hosts whose TLSA records count (RFC 7672 §2.2): those of a secure MX RRset, or the
/// domain itself when a secure denial shows it has no MX (RFC 5321 §5.1). An insecure or
/// bogus MX RRset gives none: an attacker could have chosen its hosts.
fn dane_hosts(domain: &str, mx: &Validated<Mx>) -> Vec<String> {
    use crate::policy::dns::DnssecStatus;
    match mx {
        Validated::Records {
            status: DnssecStatus::Secure,
            records,
            ..
        } => exchange_hosts(records.clone()),
        Validated::NoRecords {
            nxdomain: false,
            secure: true,
            ..
        } => vec![domain.to_owned()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::dns::DnssecStatus;

    fn mx(preference: u16, host: &str) -> Mx {
        Mx {
            preference,
            host: host.to_owned(),
        }
    }

    #[test]
    fn dane_applies_only_to_hosts_of_a_secure_mx_rrset() {
        let records = |status| Validated::Records {
            status,
            records: vec![mx(20, "b.example"), mx(10, "a.example"), mx(0, "")],
            ttl: Some(60),
        };
        let none = |nxdomain, secure| Validated::NoRecords {
            nxdomain,
            secure,
            ttl: None,
        };
        let cases: Vec<(Validated<Mx>, Vec<&str>)> = vec![
            (
                records(DnssecStatus::Secure),
                vec!["a.example", "b.example"],
            ),
            (records(DnssecStatus::Insecure), vec![]),
            (records(DnssecStatus::Bogus), vec![]),
            (records(DnssecStatus::Indeterminate), vec![]),
            (none(false, true), vec!["example.org"]),
            (none(false, false), vec![]),
            (none(true, true), vec![]),
            (Validated::Bogus, vec![]),
            (
                Validated::Failed {
                    message: "SERVFAIL".into(),
                },
                vec![],
            ),
        ];
        for (lookup, want) in cases {
            assert_eq!(dane_hosts("example.org", &lookup), want, "{lookup:?}");
        }
    }
}
