//! The engine of `sigillo check`: resolve targets, probe every MX address for STARTTLS and
//! TLS, analyse certificates, discover each domain's MTA-STS, TLS-RPT, DNSSEC and DANE
//! policies ([`discovery`], [`policy_report`]), and turn what was seen into findings and
//! verdicts; and the I/O of `sigillo policy serve` ([`policy`]).
#![forbid(unsafe_code)]

pub mod accept_log;
pub mod check;
pub mod discovery;
pub mod dns;
pub mod lab;
pub mod policy;
pub mod policy_report;
pub mod probe;
pub mod report;
pub mod strip_proxy;
pub mod summary;
pub mod target;
pub mod tls;

pub use check::{CheckConfig, Checker};
pub use discovery::{DiscoveryConfig, PolicyDiscovery};
pub use dns::{Dns, DnsError, Families};
pub use probe::Timeouts;
pub use report::{Finding, HostReport, Severity, TargetReport, Verdict};
pub use target::{Target, TargetError};
pub use tls::TrustAnchors;
