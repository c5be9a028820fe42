//! Totals over many checked targets: how many offer STARTTLS, have a valid certificate,
//! and which TLS versions they negotiate.

use crate::report::{TargetReport, Verdict};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Counts and shares for a set of target reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub targets: usize,
    /// Targets per verdict.
    pub verdicts: BTreeMap<&'static str, usize>,
    /// Targets where every host reached offered STARTTLS (or implicit TLS).
    pub targets_starttls: usize,
    /// Targets where every TLS host presented a verified certificate.
    pub targets_valid_certificate: usize,
    /// Distinct address:port pairs probed.
    pub hosts: usize,
    pub hosts_starttls: usize,
    pub hosts_valid_certificate: usize,
    /// Hosts per negotiated TLS version.
    pub tls_versions: BTreeMap<String, usize>,
    #[serde(skip)]
    seen: HashSet<SocketAddr>,
}

impl Summary {
    pub fn from_reports<'a>(reports: impl IntoIterator<Item = &'a TargetReport>) -> Self {
        let mut s = Summary::default();
        for r in reports {
            s.add(r);
        }
        s
    }

    /// Counts one more target. Memory grows with distinct hosts only, not with reports.
    pub fn add(&mut self, r: &TargetReport) {
        self.targets += 1;
        *self.verdicts.entry(r.verdict.as_str()).or_default() += 1;
        let reached: Vec<_> = r.hosts.iter().filter(|h| h.banner.is_some()).collect();
        if !reached.is_empty()
            && reached
                .iter()
                .all(|h| h.starttls.offered || h.tls.is_some())
        {
            self.targets_starttls += 1;
        }
        let tls: Vec<_> = r.hosts.iter().filter_map(|h| h.tls.as_ref()).collect();
        if !tls.is_empty()
            && tls.iter().all(|t| t.certificate.verified)
            && r.verdict == Verdict::Encrypted
        {
            self.targets_valid_certificate += 1;
        }
        for h in &r.hosts {
            let Ok(ip) = h.address.parse::<IpAddr>() else {
                continue;
            };
            if !self.seen.insert(SocketAddr::new(ip, h.port)) {
                continue;
            }
            self.hosts += 1;
            if h.starttls.offered || h.tls.is_some() {
                self.hosts_starttls += 1;
            }
            if let Some(t) = &h.tls {
                if t.certificate.verified {
                    self.hosts_valid_certificate += 1;
                }
                *self.tls_versions.entry(t.version.clone()).or_default() += 1;
            }
        }
    }

    /// `part / whole` as a percentage, 0 when `whole` is 0.
    pub fn percent(part: usize, whole: usize) -> f64 {
        if whole == 0 {
            0.0
        } else {
            part as f64 * 100.0 / whole as f64
        }
    }
}
