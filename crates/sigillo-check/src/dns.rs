//! DNS lookups for checks: MX in preference order (RFC 5321 §5.1), null MX (RFC 7505),
//! A/AAAA, through the system resolver or one given explicitly (`--resolver`).

use hickory_resolver::ResolverBuilder;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mx {
    pub preference: u16,
    /// The exchange host, lower-case, no final dot.
    pub host: String,
}

/// What the MX lookup of a domain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records, sorted by preference then name; `null_beside`: a null MX was published
    /// beside them, which RFC 7505 §3 forbids (it is left out).
    Records { records: Vec<Mx>, null_beside: bool },
    /// A single `MX 0 .`: the domain accepts no mail (RFC 7505).
    NullMx,
    /// The name exists but has no MX: fall back to its A/AAAA (RFC 5321 §5.1).
    NoMx,
}

/// A DNS failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist.
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain { name: String },
    /// The lookup failed (SERVFAIL, timeout, refused, unreachable resolver).
    #[error("{name} {rtype}: DNS lookup failed: {message}")]
    Failed {
        name: String,
        rtype: &'static str,
        message: String,
    },
    /// The resolver could not be set up.
    #[error("DNS resolver configuration: {message}")]
    Config { message: String },
}

/// Which address families to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Default for Families {
    fn default() -> Self {
        Self {
            ipv4: true,
            ipv6: true,
        }
    }
}

/// The resolver used by checks. A resolver that could not be set up is an error only when
/// a lookup is needed, so address targets work without any DNS configuration.
#[derive(Clone)]
pub struct Dns {
    resolver: Result<TokioResolver, DnsError>,
}

/// A resolver builder for the system configuration (`server: None`, `/etc/resolv.conf`) or
/// one name server over UDP with TCP fallback, with sigillo's options (`timeout`, two
/// attempts, names always absolute). Shared by checks and the policy daemon.
pub(crate) fn resolver_builder(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, DnsError> {
    let mut builder = match server {
        None => TokioResolver::builder_tokio().map_err(|e| DnsError::Config {
            message: format!("system resolver: {e}"),
        })?,
        Some(server) => {
            let mut ns = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut ns.connections {
                connection.port = server.port();
            }
            let config = ResolverConfig::from_name_servers(vec![ns]);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
    };
    tune(builder.options_mut(), timeout);
    Ok(builder)
}

impl Dns {
    /// Uses the system's resolver configuration (`/etc/resolv.conf`).
    pub fn system(timeout: Duration) -> Self {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|mut builder| {
                tune(builder.options_mut(), timeout);
                builder.build()
            })
            .map_err(|e| DnsError::Config {
                message: format!("system resolver: {e}"),
            });
        Self { resolver }
    }

    fn resolver(&self) -> Result<&TokioResolver, DnsError> {
        self.resolver.as_ref().map_err(Clone::clone)
    }

    /// Uses one name server, over UDP with TCP fallback.
    pub fn with_server(server: SocketAddr, timeout: Duration) -> Result<Self, DnsError> {
        let mut ns = NameServerConfig::udp_and_tcp(server.ip());
        for connection in &mut ns.connections {
            connection.port = server.port();
        }
        let config = ResolverConfig::from_name_servers(vec![ns]);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        tune(builder.options_mut(), timeout);
        let resolver = builder.build().map_err(|e| DnsError::Config {
            message: e.to_string(),
        })?;
        Ok(Self {
            resolver: Ok(resolver),
        })
    }

    /// The MX records of a domain.
    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        let lookup = match self.resolver()?.lookup(fqdn(domain), RecordType::MX).await {
            Ok(lookup) => lookup,
            Err(e) => return no_records(domain, "MX", e).map(|()| MxAnswer::NoMx),
        };
        let mut records: Vec<Mx> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    host: name_text(&mx.exchange.to_ascii()),
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(MxAnswer::NoMx);
        }
        if records.len() == 1 && records[0].host.is_empty() {
            return Ok(MxAnswer::NullMx);
        }
        // RFC 7505 §3: a null MX mixed with others is a misconfiguration; ignore the null one.
        let before = records.len();
        records.retain(|mx| !mx.host.is_empty());
        let null_beside = records.len() < before;
        records.sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
        records.dedup();
        Ok(MxAnswer::Records {
            records,
            null_beside,
        })
    }

    /// The A then AAAA addresses of a host, for the families asked, and the errors of the
    /// families whose lookup failed: a SERVFAIL on AAAA does not throw away the A records. A
    /// family with no records is not an error; the name not existing is.
    pub async fn addresses(&self, host: &str, families: Families) -> (Vec<IpAddr>, Vec<DnsError>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (wanted, rtype, label) in [
            (families.ipv4, RecordType::A, "A"),
            (families.ipv6, RecordType::AAAA, "AAAA"),
        ] {
            if !wanted {
                continue;
            }
            let resolver = match self.resolver() {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e);
                    break;
                }
            };
            match resolver.lookup(fqdn(host), rtype).await {
                Ok(lookup) => out.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => match no_records(host, label, e) {
                    // The name does not exist: no other family will find it either.
                    Err(e @ DnsError::NxDomain { .. }) => {
                        errors.push(e);
                        break;
                    }
                    Err(e) => errors.push(e),
                    Ok(()) => {}
                },
            }
        }
        out.dedup();
        (out, errors)
    }
}

fn tune(opts: &mut ResolverOpts, timeout: Duration) {
    opts.timeout = timeout;
    opts.attempts = 2;
    opts.ndots = 0;
}

/// Absolute form, so search domains are never appended.
pub(crate) fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

pub(crate) fn name_text(ascii: &str) -> String {
    ascii.trim_end_matches('.').to_ascii_lowercase()
}

/// `Ok(())` for NODATA (the name exists, no records of that type); an error otherwise.
fn no_records(name: &str, rtype: &'static str, error: NetError) -> Result<(), DnsError> {
    if error.is_no_records_found() {
        let nxdomain = matches!(
            &error,
            NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(n)) if n.response_code == ResponseCode::NXDomain
        );
        if nxdomain {
            return Err(DnsError::NxDomain {
                name: name.to_owned(),
            });
        }
        return Ok(());
    }
    Err(DnsError::Failed {
        name: name.to_owned(),
        rtype,
        message: error.to_string(),
    })
}
