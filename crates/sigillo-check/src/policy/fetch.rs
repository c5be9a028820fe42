//! Fetching MTA-STS policies over HTTPS (RFC 8461 §3.3): `GET
//! https://mta-sts.<domain>/.well-known/mta-sts.txt`, no redirects followed, a size cap of
//! [`MAX_POLICY_BYTES`], a time limit, and a certificate that must be valid for
//! `mta-sts.<domain>` against Mozilla's roots (plus any `--ca-file`).
//!
//! No connection is kept open between fetches: a policy host is asked again only when its
//! TXT id changes or its policy is due for refresh, hours or days later, while idle
//! connections kept for 90 s cost one file descriptor and about 45 KB each (a daemon taking
//! 1,500 new domains a second held 12,000 of them, 544 MB, after 8 s). A host fetched from
//! again resumes its TLS session instead (rustls' client cache of 256 names), which skips
//! the certificate chain and its signature checks.
//! Host names are resolved through the daemon's own resolver ([`PolicyDns`]), so a
//! `--resolver` applies to the fetch too.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sigillo_policy::mta_sts::{MAX_POLICY_BYTES, Policy, PolicyError};
use sigillo_policy::tlsrpt::ResultType;

use super::dns::PolicyDns;
use crate::tls::{CertProblem, TrustAnchors};

/// Settings of the policy fetch.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The whole fetch (connect, TLS, request, body) must finish within this.
    pub timeout: Duration,
    /// Connecting (TCP) must finish within this.
    pub connect_timeout: Duration,
    /// Roots the policy host's certificate must chain to.
    pub roots: TrustAnchors,
    /// The port policy hosts are reached on: 443, except in tests.
    pub https_port: u16,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            roots: TrustAnchors::mozilla(),
            https_port: 443,
        }
    }
}

/// Why no valid policy could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The HTTPS client could not be built.
    #[error("HTTPS client setup: {message}")]
    Setup { message: String },
    /// The policy host's name did not resolve, or connecting failed.
    #[error("{url}: cannot connect: {message}")]
    Connect { url: String, message: String },
    /// No complete answer within the time limit.
    #[error("{url}: no complete answer within {} s", timeout.as_secs_f64())]
    Timeout { url: String, timeout: Duration },
    /// The certificate is not valid for `mta-sts.<domain>`.
    #[error("{url}: certificate {}: {message}", problem.result_type())]
    Certificate {
        url: String,
        problem: CertProblem,
        message: String,
    },
    /// A redirect, which RFC 8461 §3.3 forbids following.
    #[error("{url}: HTTP {status} redirect to {location:?} not followed (RFC 8461 §3.3)")]
    Redirect {
        url: String,
        status: u16,
        location: String,
    },
    /// A status other than 200.
    #[error("{url}: expected HTTP 200, got {status}")]
    Status { url: String, status: u16 },
    /// A media type other than `text/plain`.
    #[error("{url}: expected media type text/plain, got {got:?}")]
    ContentType { url: String, got: String },
    /// The body is over [`MAX_POLICY_BYTES`].
    #[error("{url}: policy larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// The body is not a valid policy.
    #[error("{url}: invalid policy: {source}")]
    Invalid {
        url: String,
        #[source]
        source: PolicyError,
    },
    /// Any other HTTP or TLS failure.
    #[error("{url}: {message}")]
    Http { url: String, message: String },
}

impl FetchError {
    /// The RFC 8460 result type of this failure.
    pub fn result_type(&self) -> ResultType {
        match self {
            FetchError::Certificate { .. } => ResultType::StsWebpkiInvalid,
            FetchError::Invalid { .. } | FetchError::ContentType { .. } => {
                ResultType::StsPolicyInvalid
            }
            _ => ResultType::StsPolicyFetchError,
        }
    }
}

/// The URL of a domain's policy.
pub fn policy_url(domain: &str) -> String {
    format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
}

/// A policy as fetched, with the `Content-Type` it was served with (`None`: no header).
#[derive(Debug, Clone, PartialEq)]
pub struct ServedPolicy {
    pub policy: Policy,
    pub content_type: Option<String>,
}

/// Fetches policies; cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct PolicyFetcher {
    client: reqwest::Client,
    timeout: Duration,
}

/// Resolves policy host names through [`PolicyDns`], with the configured port.
struct HttpsResolver {
    dns: PolicyDns,
    port: u16,
}

impl Resolve for HttpsResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let dns = self.dns.clone();
        let port = self.port;
        Box::pin(async move {
            let host = name.as_str();
            let addrs = dns.addresses(host).await.map_err(
                |e| -> Box<dyn std::error::Error + Send + Sync> {
                    if e.is_nx_domain() {
                        format!("{host} does not exist (NXDOMAIN)").into()
                    } else if e.is_no_records_found() {
                        format!("no A or AAAA records for {host}").into()
                    } else {
                        Box::new(e)
                    }
                },
            )?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(move |ip| SocketAddr::new(ip, port)));
            Ok(addrs)
        })
    }
}

impl PolicyFetcher {
    /// A fetcher resolving through `dns`.
    pub fn new(config: &FetchConfig, dns: PolicyDns) -> Result<Self, FetchError> {
        let setup = |message: String| FetchError::Setup { message };
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(config.roots.root_store())
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(0)
            .user_agent(concat!("sigillo/", env!("CARGO_PKG_VERSION"), " (MTA-STS)"))
            .dns_resolver(Arc::new(HttpsResolver {
                dns,
                port: config.https_port,
            }))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        Ok(Self {
            client,
            timeout: config.timeout,
        })
    }

    /// Fetches and parses the policy of `domain` (a valid domain name, canonical form).
    pub async fn fetch(&self, domain: &str) -> Result<Policy, FetchError> {
        self.fetch_served(domain).await.map(|served| served.policy)
    }

    /// [`PolicyFetcher::fetch`], with how the policy was served. A response with no
    /// `Content-Type` at all is accepted (a sender that enforces needs the policy more than
    /// the header); one with a type other than `text/plain` is not.
    pub async fn fetch_served(&self, domain: &str) -> Result<ServedPolicy, FetchError> {
        let url = policy_url(domain);
        let mut response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            return Err(FetchError::Redirect {
                url,
                status: status.as_u16(),
                location,
            });
        }
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::Status {
                url,
                status: status.as_u16(),
            });
        }
        let content_type = (response.headers().get(reqwest::header::CONTENT_TYPE))
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        if let Some(text) = &content_type {
            let media = text.split(';').next().unwrap_or("").trim();
            if !media.eq_ignore_ascii_case("text/plain") {
                return Err(FetchError::ContentType {
                    url,
                    got: text.chars().take(100).collect(),
                });
            }
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_POLICY_BYTES as u64)
        {
            return Err(FetchError::TooLarge {
                url,
                limit: MAX_POLICY_BYTES,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&url, &e))?
        {
            if body.len() + chunk.len() > MAX_POLICY_BYTES {
                return Err(FetchError::TooLarge {
                    url,
                    limit: MAX_POLICY_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let policy = Policy::parse(&body).map_err(|source| FetchError::Invalid { url, source })?;
        Ok(ServedPolicy {
            policy,
            content_type,
        })
    }

    fn transport_error(&self, url: &str, error: &reqwest::Error) -> FetchError {
        let url = url.to_owned();
        if let Some(e) = find_rustls_error(error) {
            if let rustls::Error::InvalidCertificate(cert) = e {
                return FetchError::Certificate {
                    url,
                    problem: cert_problem(cert),
                    message: cert.to_string(),
                };
            }
            return FetchError::Http {
                url,
                message: format!("TLS: {e}"),
            };
        }
        if error.is_timeout() {
            return FetchError::Timeout {
                url,
                timeout: self.timeout,
            };
        }
        let message = error_chain(error);
        if error.is_connect() {
            return FetchError::Connect { url, message };
        }
        FetchError::Http { url, message }
    }
}

/// The rustls error somewhere in `error`'s sources (looking inside `io::Error`s too, whose
/// `source()` skips the error they wrap).
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = find_rustls_error(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `error` and its sources, joined with `: ` (reqwest's own message alone is vague).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

fn cert_problem(error: &rustls::CertificateError) -> CertProblem {
    use rustls::CertificateError as E;
    match error {
        E::Expired | E::ExpiredContext { .. } => CertProblem::CertificateExpired,
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            CertProblem::CertificateHostMismatch
        }
        E::UnknownIssuer => CertProblem::CertificateNotTrusted,
        _ => CertProblem::ValidationFailure,
    }
}
