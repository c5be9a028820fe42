//! Runs checks: resolves each target to MX hosts and addresses, probes every address once
//! (several targets sharing an address and port share the probe), bounded by a concurrency
//! limit, discovers a domain's policies concurrently with its probes, and assembles the
//! [`TargetReport`].

use crate::discovery::PolicyDiscovery;
use crate::dns::{Dns, Families, MxAnswer};
use crate::policy_report;
use crate::probe::{ProbeConfig, ProbeResult, Timeouts, probe};
use crate::report::{self, MxReport, TargetReport, Verdict};
use crate::target::{Target, TargetSpec};
use crate::tls::{self, TrustAnchors};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rustls::pki_types::{CertificateDer, UnixTime};
use sigillo_smtp::ReplyLimits;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;

/// Settings for a run of checks.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The port when a target gives none (25). 465 means implicit TLS.
    pub port: u16,
    pub ehlo_name: String,
    pub timeouts: Timeouts,
    /// Most probes in flight at once.
    pub concurrency: usize,
    pub families: Families,
    pub limits: ReplyLimits,
    /// TLS from the first byte (RFC 8314) on every port, not only 465.
    pub implicit_tls: bool,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            port: 25,
            ehlo_name: "localhost".to_owned(),
            timeouts: Timeouts::default(),
            concurrency: 64,
            families: Families::default(),
            limits: ReplyLimits::default(),
            implicit_tls: false,
        }
    }
}

type SharedProbe = Shared<BoxFuture<'static, Arc<ProbeResult>>>;

/// One MX (or host) of a target and the addresses to probe.
struct PlannedHost {
    mx: String,
    preference: Option<u16>,
    /// The name the certificate must be valid for (none for address targets).
    check_name: Option<String>,
    addresses: Vec<IpAddr>,
    /// An address family whose lookup failed while the other gave addresses.
    lookup_error: Option<String>,
}

impl PlannedHost {
    fn new(
        mx: &str,
        preference: Option<u16>,
        check_name: Option<&str>,
        addresses: Vec<IpAddr>,
    ) -> Self {
        Self {
            mx: mx.to_owned(),
            preference,
            check_name: check_name.map(str::to_owned),
            addresses,
            lookup_error: None,
        }
    }

    /// From an address lookup that found `addresses` and failed for the families in `errors`.
    fn looked_up(
        mx: &str,
        preference: Option<u16>,
        check_name: Option<&str>,
        (addresses, errors): (Vec<IpAddr>, Vec<crate::dns::DnsError>),
    ) -> Result<Self, String> {
        if addresses.is_empty()
            && let Some(e) = errors.first()
        {
            return Err(e.to_string());
        }
        let mut host = Self::new(mx, preference, check_name, addresses);
        host.lookup_error = (!errors.is_empty()).then(|| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        });
        Ok(host)
    }
}

/// Checks targets; cheap to share (`Arc`) across tasks.
pub struct Checker {
    config: CheckConfig,
    dns: Dns,
    anchors: TrustAnchors,
    tls: Arc<rustls::ClientConfig>,
    permits: Arc<Semaphore>,
    /// Probes made or under way, by address and whether SNI is sent: an address target
    /// (no SNI) never reuses a domain target's probe, nor the other way round.
    probes: Mutex<HashMap<(SocketAddr, bool), SharedProbe>>,
    discovery: Option<PolicyDiscovery>,
}

impl Checker {
    /// A checker that only probes (no policy discovery).
    pub fn new(config: CheckConfig, dns: Dns, anchors: TrustAnchors) -> Arc<Self> {
        Self::with_discovery(config, dns, anchors, None)
    }

    /// A checker that also discovers the MTA-STS, TLS-RPT, DNSSEC and DANE policies of
    /// domain targets, when `discovery` is given.
    pub fn with_discovery(
        config: CheckConfig,
        dns: Dns,
        anchors: TrustAnchors,
        discovery: Option<PolicyDiscovery>,
    ) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
            dns,
            anchors,
            tls: tls::client_config(),
            probes: Mutex::new(HashMap::new()),
            discovery,
        })
    }

    /// Probes an address, or joins the probe already made or under way.
    fn probe_once(self: &Arc<Self>, address: SocketAddr, sni: Option<String>) -> SharedProbe {
        let mut probes = self
            .probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        probes
            .entry((address, sni.is_some()))
            .or_insert_with(|| {
                let this = Arc::clone(self);
                async move {
                    let _permit = this.permits.clone().acquire_owned().await.ok();
                    let config = ProbeConfig {
                        ehlo_name: this.config.ehlo_name.clone(),
                        timeouts: this.config.timeouts,
                        limits: this.config.limits,
                        tls: this.tls.clone(),
                        implicit_tls: this.config.implicit_tls || address.port() == 465,
                    };
                    Arc::new(probe(address, sni.as_deref(), &config).await)
                }
                .boxed()
                .shared()
            })
            .clone()
    }

    /// Resolves a target to the hosts and addresses to probe, recording the MX list (or the
    /// DNS error) in `report`.
    async fn plan(&self, target: &Target, report: &mut TargetReport) -> Vec<PlannedHost> {
        let families = self.config.families;
        let mut plan: Vec<PlannedHost> = Vec::new();
        match &target.spec {
            TargetSpec::Address(ip) => {
                plan.push(PlannedHost::new(&ip.to_string(), None, None, vec![*ip]))
            }
            TargetSpec::Host(name) => {
                let found = self.dns.addresses(name, families).await;
                match PlannedHost::looked_up(name, None, Some(name), found) {
                    Ok(host) => plan.push(host),
                    Err(e) => report.error = Some(e),
                }
            }
            TargetSpec::Domain(domain) => match self.dns.mx(domain).await {
                Ok(MxAnswer::NullMx) => {
                    report.null_mx = true;
                    report.error = Some(format!(
                        "{domain} publishes a null MX (RFC 7505): it accepts no mail"
                    ));
                }
                Ok(MxAnswer::NoMx) => {
                    report.implicit_mx = true;
                    let found = self.dns.addresses(domain, families).await;
                    match PlannedHost::looked_up(domain, None, Some(domain), found) {
                        Ok(host) => plan.push(host),
                        Err(e) => {
                            report.error =
                                Some(format!("no MX, and its address lookup failed: {e}"))
                        }
                    }
                }
                Ok(MxAnswer::Records {
                    records,
                    null_beside,
                }) => {
                    if null_beside {
                        report.findings.push(report::Finding {
                            id: "inconclusive",
                            kind: "null-mx-beside-others",
                            severity: report::Severity::Low,
                            mx: None,
                            address: None,
                            port: None,
                            message: format!(
                                "{domain} publishes a null MX (`MX 0 .`) beside other MX records, which RFC 7505 §3 forbids: some senders may take the domain to accept no mail; the other MX hosts were checked"
                            ),
                            evidence: vec!["MX 0 .".to_owned()],
                        });
                    }
                    let lookups = records
                        .iter()
                        .map(|mx| self.dns.addresses(&mx.host, families));
                    let results = futures::future::join_all(lookups).await;
                    for (mx, found) in records.into_iter().zip(results) {
                        let looked_up = PlannedHost::looked_up(
                            &mx.host,
                            Some(mx.preference),
                            Some(&mx.host),
                            found,
                        );
                        match looked_up {
                            Ok(host) => plan.push(host),
                            Err(e) => report.mx.push(MxReport {
                                host: mx.host,
                                preference: Some(mx.preference),
                                addresses: Vec::new(),
                                error: Some(e),
                            }),
                        }
                    }
                }
                Err(e) => report.error = Some(e.to_string()),
            },
        }
        for host in &plan {
            report.mx.push(MxReport {
                host: host.mx.clone(),
                preference: host.preference,
                addresses: host.addresses.iter().map(IpAddr::to_string).collect(),
                error: host
                    .lookup_error
                    .clone()
                    .or_else(|| host.addresses.is_empty().then(|| "no addresses".to_owned())),
            });
        }
        report.mx.sort_by_key(|m| m.preference);
        plan
    }

    /// Checks one target. Never fails: problems are in the report's verdict and error.
    pub async fn check(self: &Arc<Self>, target: &Target) -> TargetReport {
        let start = Instant::now();
        let started = jiff::Timestamp::now().to_string();
        let port = target.port.unwrap_or(self.config.port);
        let mut report = TargetReport {
            target: target.input.clone(),
            kind: match target.spec {
                TargetSpec::Domain(_) => "domain",
                TargetSpec::Host(_) => "host",
                TargetSpec::Address(_) => "address",
            },
            port,
            verdict: Verdict::Error,
            mx: Vec::new(),
            implicit_mx: false,
            null_mx: false,
            hosts: Vec::new(),
            findings: Vec::new(),
            policy: None,
            error: None,
            started,
            duration_ms: 0.0,
        };
        let discovery = async {
            match (&target.spec, &self.discovery) {
                (TargetSpec::Domain(domain), Some(discovery)) => {
                    Some(discovery.discover(domain).await)
                }
                _ => None,
            }
        };
        let probes = async {
            let plan = self.plan(target, &mut report).await;
            let jobs: Vec<_> = plan
                .into_iter()
                .flat_map(|host| {
                    let host = Arc::new(host);
                    host.addresses.clone().into_iter().map(move |ip| {
                        let probe =
                            self.probe_once(SocketAddr::new(ip, port), host.check_name.clone());
                        let host = Arc::clone(&host);
                        async move { (host, probe.await) }
                    })
                })
                .collect();
            futures::future::join_all(jobs).await
        };
        let (results, discovered) = tokio::join!(probes, discovery);
        let now = UnixTime::now();
        for (host, result) in &results {
            let (host_report, findings) = report::analyze_host(
                result,
                &host.mx,
                host.preference,
                host.check_name.as_deref(),
                &self.anchors,
                now,
            );
            report.hosts.push(host_report);
            report.findings.extend(findings);
        }
        for mx in report.mx.iter().filter(|m| m.error.is_some()) {
            let (kind, message) = if mx.addresses.is_empty() {
                (
                    "mx-unresolvable",
                    format!("MX {} has no usable address", mx.host),
                )
            } else {
                (
                    "address-lookup-failed",
                    format!(
                        "{}: an address lookup failed; only its other addresses were probed",
                        mx.host
                    ),
                )
            };
            report.findings.push(report::Finding {
                id: "inconclusive",
                kind,
                severity: report::Severity::Low,
                mx: Some(mx.host.clone()),
                address: None,
                port: None,
                message,
                evidence: mx.error.iter().cloned().collect(),
            });
        }
        if let Some(f) = report::inconsistency(&report.hosts) {
            report.findings.push(f);
        }
        if let Some(discovered) = &discovered {
            // The DER chain each host report's probe saw, for DANE.
            let chains: Vec<&[CertificateDer<'static>]> = results
                .iter()
                .map(|(_, result)| result.tls.as_ref().map_or(&[][..], |t| &t.chain[..]))
                .collect();
            policy_report::apply(&mut report, discovered, &chains, now);
        }
        report.verdict = if report.error.is_some() && report.hosts.is_empty() {
            Verdict::Error
        } else if report.hosts.is_empty() {
            let why: Vec<String> = report
                .mx
                .iter()
                .filter_map(|m| Some(format!("{}: {}", m.host, m.error.as_ref()?)))
                .collect();
            report.error = Some(if why.is_empty() {
                "no address to probe".to_owned()
            } else {
                format!("no address to probe ({})", why.join("; "))
            });
            Verdict::Error
        } else {
            report::aggregate(report.hosts.iter().map(|h| h.status))
        };
        if report.verdict == Verdict::Error && report.error.is_none() {
            report.error = report.hosts.iter().find_map(|h| h.error.clone());
        }
        report.duration_ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        report
    }
}
