//! The relay hosts each next-hop domain's mail went to (Postfix `relay=host[ip]:port`, Exim
//! `H=host [ip]`, …): [`crate::aggregate::NextHopFigures::relays`]. `sigillo policy build`
//! reads them to tell a smarthost (`relayhost = [smtp.isp.example]`), which Postfix keys its
//! TLS policy by, from MX hosts, which it does not.
//!
//! Bounded per domain: the first [`NEXT_HOP_RELAYS`] distinct hosts are counted by name; the
//! messages to any later ones are counted together.

use crate::model::{Peer, Text};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Relay hosts counted by name per next-hop domain.
pub const NEXT_HOP_RELAYS: usize = 4;

/// The relay hosts one next-hop domain's delivered messages went to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayFigures {
    /// The first [`NEXT_HOP_RELAYS`] distinct hosts seen, most messages first.
    pub hosts: Vec<RelayCount>,
    /// Messages to further hosts, or whose delivery named no host.
    pub other_messages: u64,
}

impl RelayFigures {
    /// `hosts` and `other_messages` together.
    pub fn messages(&self) -> Option<u64> {
        self.hosts
            .iter()
            .try_fold(self.other_messages, |a, h| a.checked_add(h.messages))
    }
}

/// Messages delivered to one relay host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCount {
    /// The host name as logged, lowercase; the address when no name was logged.
    pub host: String,
    pub messages: u64,
}

/// A relay as the record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RelayName {
    Name(Text),
    Ip(IpAddr),
}

impl RelayName {
    fn of(peer: &Peer) -> Option<RelayName> {
        match (&peer.hostname, peer.ip) {
            (Some(name), _) => Some(RelayName::Name(Text::clone(name))),
            (None, Some(ip)) => Some(RelayName::Ip(ip)),
            (None, None) => None,
        }
    }

    fn is(&self, peer: &Peer) -> bool {
        match (self, &peer.hostname) {
            (RelayName::Name(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (RelayName::Ip(a), None) => peer.ip == Some(*a),
            _ => false,
        }
    }

    fn text(&self) -> String {
        match self {
            RelayName::Name(n) => n.trim_end_matches('.').to_ascii_lowercase(),
            RelayName::Ip(ip) => ip.to_string(),
        }
    }
}

/// A [`RelayFigures`] while records come in.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelayTally {
    slots: Vec<(RelayName, u64)>,
    other: u64,
}

impl RelayTally {
    /// Counts one message delivered to `peer`.
    pub(crate) fn add(&mut self, peer: &Peer) {
        if let Some((_, n)) = self.slots.iter_mut().find(|(r, _)| r.is(peer)) {
            *n += 1;
            return;
        }
        match RelayName::of(peer) {
            Some(name) if self.slots.len() < NEXT_HOP_RELAYS => self.slots.push((name, 1)),
            _ => self.other += 1,
        }
    }

    pub(crate) fn figures(&self) -> RelayFigures {
        let mut hosts: Vec<RelayCount> = Vec::with_capacity(self.slots.len());
        let mut other = self.other;
        for (name, messages) in &self.slots {
            let host = name.text();
            // `MX.example` and `mx.example.` are one host.
            match hosts.iter_mut().find(|h| h.host == host) {
                Some(h) => h.messages += messages,
                None if host.is_empty() => other += messages,
                None => hosts.push(RelayCount {
                    host,
                    messages: *messages,
                }),
            }
        }
        hosts.sort_by(|a, b| {
            b.messages
                .cmp(&a.messages)
                .then_with(|| a.host.cmp(&b.host))
        });
        RelayFigures {
            hosts,
            other_messages: other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: Option<&str>, ip: &str) -> Peer {
        Peer {
            hostname: name.map(Text::from),
            ip: ip.parse().ok(),
        }
    }

    #[test]
    fn counts_the_first_hosts_by_name_and_the_rest_together() {
        let mut t = RelayTally::default();
        let deliveries = [
            peer(Some("mx1.example"), "192.0.2.1"),
            peer(Some("MX1.example"), "192.0.2.2"), // same host, another address
            peer(Some("mx2.example"), "192.0.2.3"),
            peer(None, "192.0.2.9"),
            peer(None, "192.0.2.9"),
            peer(None, "192.0.2.9"),
            peer(Some("mx3.example"), "192.0.2.4"),
            peer(Some("mx4.example"), "192.0.2.5"), // a fifth host: counted as other
            peer(None, ""),                         // no host at all: other
            peer(Some("mx1.example."), "192.0.2.1"), // another spelling, slots full: other
        ];
        for p in &deliveries {
            t.add(p);
        }
        let f = t.figures();
        let got: Vec<(&str, u64)> = f
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.messages))
            .collect();
        assert_eq!(
            got,
            [
                ("192.0.2.9", 3),
                ("mx1.example", 2),
                ("mx2.example", 1),
                ("mx3.example", 1)
            ]
        );
        assert_eq!(f.other_messages, 3);
        assert_eq!(f.messages(), Some(deliveries.len() as u64));
    }
}
