//! The relay hosts each next-hop domain's mail went to (Postfix `relay=host[ip]:port`, Exim
//! `H=host [ip]`, …): [`crate::aggregate::NextHopFigures::relays`]. `sigillo policy build`
//! reads them to tell a smarthost (`relayhost = [smtp.isp.example]`), which Postfix keys its
//! TLS policy by, from MX hosts, which it does not; and the port, which is part of that key
//! when it is not 25 (`relayhost = [smtp.isp.example]:587`).
//!
//! Bounded per domain: the first [`NEXT_HOP_RELAYS`] distinct hosts (a host on two ports is
//! two) are counted by name; the messages to any later ones are counted together. Which
//! domains reached a relay at all is counted apart, past these four
//! ([`crate::aggregate::RelayHostFigures::domains`]).

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

/// Messages delivered to one relay host (on one port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCount {
    /// The host name as logged, lowercase; the address when no name was logged. For a
    /// Postfix relay given as an address (`relayhost = [2001:db8::25]`) the name is the
    /// address as written in main.cf (without an `ipv6:` prefix).
    pub host: String,
    /// The server port, when the log gives it (Postfix always; Exim with `+outgoing_port`);
    /// absent when it does not (in JSON too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub messages: u64,
}

/// A relay as the record names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RelayName {
    Name(Text),
    Ip(IpAddr),
}

impl RelayName {
    pub(crate) fn of(peer: &Peer) -> Option<RelayName> {
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

    /// Whether `peer` is named exactly so (the same bytes): what [`RelayName`]'s `Eq` and
    /// `Hash` agree on, for a table keyed by it. Spellings are merged later, by [`Self::text`].
    #[inline]
    pub(crate) fn is_exactly(&self, peer: &Peer) -> bool {
        match (self, &peer.hostname) {
            (RelayName::Name(a), Some(b)) => Text::ptr_eq(a, b) || a == b,
            (RelayName::Ip(a), None) => peer.ip == Some(*a),
            _ => false,
        }
    }

    /// The name as reported: lowercase, without a trailing dot; the address when no name was
    /// logged.
    pub(crate) fn text(&self) -> String {
        match self {
            RelayName::Name(n) => n.trim_end_matches('.').to_ascii_lowercase(),
            RelayName::Ip(ip) => ip.to_string(),
        }
    }
}

/// A [`RelayFigures`] while records come in.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelayTally {
    slots: Vec<(RelayName, Option<u16>, u64)>,
    other: u64,
}

impl RelayTally {
    /// Counts one message delivered to `peer` on `port`.
    pub(crate) fn add(&mut self, peer: &Peer, port: Option<u16>) {
        if let Some((.., n)) = self
            .slots
            .iter_mut()
            .find(|(r, p, _)| *p == port && r.is(peer))
        {
            *n += 1;
            return;
        }
        match RelayName::of(peer) {
            Some(name) if self.slots.len() < NEXT_HOP_RELAYS => self.slots.push((name, port, 1)),
            _ => self.other += 1,
        }
    }

    pub(crate) fn figures(&self) -> RelayFigures {
        let mut hosts: Vec<RelayCount> = Vec::with_capacity(self.slots.len());
        let mut other = self.other;
        for (name, port, messages) in &self.slots {
            let host = name.text();
            // `MX.example` and `mx.example.` are one host.
            match hosts.iter_mut().find(|h| h.host == host && h.port == *port) {
                Some(h) => h.messages += messages,
                None if host.is_empty() => other += messages,
                None => hosts.push(RelayCount {
                    host,
                    port: *port,
                    messages: *messages,
                }),
            }
        }
        hosts.sort_by(|a, b| {
            b.messages
                .cmp(&a.messages)
                .then_with(|| a.host.cmp(&b.host))
                .then_with(|| a.port.cmp(&b.port))
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
            t.add(p, None);
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

    #[test]
    fn a_host_on_two_ports_is_two_relays_and_the_port_is_in_the_json() {
        let mut t = RelayTally::default();
        let isp = peer(Some("smtp.isp.example"), "203.0.113.25");
        for (p, port) in [
            (&isp, Some(587)),
            (&isp, Some(587)),
            (&isp, Some(25)),
            (&peer(Some("2001:db8::25"), "2001:db8::25"), Some(25)),
            (&peer(Some("mx.example"), "192.0.2.1"), None),
        ] {
            t.add(p, port);
        }
        let f = t.figures();
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({
                "hosts": [
                    {"host": "smtp.isp.example", "port": 587, "messages": 2},
                    {"host": "2001:db8::25", "port": 25, "messages": 1},
                    {"host": "mx.example", "messages": 1},
                    {"host": "smtp.isp.example", "port": 25, "messages": 1},
                ],
                "other_messages": 0
            })
        );
        // A report written before ports were recorded reads back without them.
        let old: RelayFigures = serde_json::from_str(
            r#"{"hosts": [{"host": "smtp.isp.example", "messages": 3}], "other_messages": 0}"#,
        )
        .unwrap();
        assert_eq!(old.hosts[0].port, None);
    }
}
