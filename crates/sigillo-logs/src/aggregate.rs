//! Figures from records: the TLS share of mail per direction, day, hour, peer, TLS version,
//! trust, cipher and key exchange; the top plaintext peers; downgrades (peers that used TLS,
//! then sent or received in clear); failed STARTTLS and stripping traces; outbound mail per
//! next-hop (recipient) domain and per relay host, what `sigillo policy build` pins peers
//! from. No I/O. Memory is bounded by distinct peers and hours, not by the number of records.

use crate::model::{
    AnomalyKind, AnomalyRecord, ConnectionRecord, Direction, MessageRecord, Peer, Record, Scope,
    Text, Transport, Trust, UnixTime,
};
use crate::next_hop_relays::{RelayFigures, RelayName, RelayTally};
use crate::postfix::bounded::{Fx, FxBuild};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

/// Most downgrade windows, anomalies and evidence lines kept (the rest are counted).
const MAX_LISTED: usize = 1000;
/// Most next-hop domains counted (the messages of any beyond are counted together).
pub const MAX_NEXT_HOPS: usize = 100_000;
/// Messages sampled per next-hop domain (and per relay), for plaintext and for untrusted TLS
/// each.
pub const NEXT_HOP_SAMPLE: usize = 5;
/// Most relays (a host on a port) counted in [`Figures::relays`] (the messages to any beyond
/// are counted together). Each spelling of a host takes a place until the table is full; a
/// spelling first seen after that still counts for its relay when the table holds it.
pub const MAX_RELAYS: usize = 100_000;
/// Most relays remembered per next-hop domain for [`RelayHostFigures::domains`] (a relay as
/// reported: spellings of one host on one port are one): a relay reached after this many
/// others by a domain does not count that domain, and [`Figures::next_hops_over_relay_cap`]
/// counts the domains this befell. Memory stays at most this many 4-byte ids per domain (and
/// [`MAX_NEXT_HOPS`] domains), however many domains reach one relay.
pub const MAX_RELAYS_PER_NEXT_HOP: usize = 32;

/// An address range (`--internal 10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// A range could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: expected an address range like 10.0.0.0/8 or 2001:db8::/32")]
#[non_exhaustive]
pub struct CidrError {
    pub text: String,
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let err = || CidrError {
            text: text.to_owned(),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| err())?,
                p.parse::<u8>().map_err(|_| err())?,
            ),
            None => {
                let a = text.parse::<IpAddr>().map_err(|_| err())?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Settings of an aggregation.
#[derive(Debug, Clone, Default)]
pub struct AggregateOptions {
    /// Extra internal ranges; 127.0.0.1 and ::1 are always internal (other loopback addresses
    /// count as ordinary peers, which keeps tests that use them honest).
    pub internal: Vec<Cidr>,
    /// Only records at or after this time.
    pub since: Option<UnixTime>,
    /// Only records before this time.
    pub until: Option<UnixTime>,
    /// How many top plaintext peers to list, per direction (0: none).
    pub top: usize,
}

/// Counts that split into TLS versions, trust levels, ciphers and key exchanges.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TlsBreakdown {
    pub versions: BTreeMap<String, u64>,
    pub trust: BTreeMap<String, u64>,
    pub ciphers: BTreeMap<String, u64>,
    pub key_exchange: BTreeMap<String, u64>,
}

/// The figures of one direction (inbound or outbound) and scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DirectionFigures {
    /// Messages received (inbound) or delivery transactions (outbound).
    pub messages: u64,
    pub tls_messages: u64,
    pub plain_messages: u64,
    /// Messages whose transport the log does not tell.
    pub unknown_messages: u64,
    /// `tls_messages / messages` (0 when there are none).
    pub tls_share: f64,
    pub recipients: u64,
    pub tls_recipients: u64,
    pub connections: u64,
    pub tls_connections: u64,
    /// Outbound: delivery attempts deferred and bounced (not counted in `messages`).
    pub deferred: u64,
    pub bounced: u64,
    /// Messages over TLS by version, trust, cipher and key exchange.
    pub tls: TlsBreakdown,
    /// Where `tls` is counted until [`Aggregator::finish`]: cheaper than string-keyed maps.
    #[serde(skip)]
    tallies: TlsTallies,
}

/// Counts by TLS version, trust, cipher and key exchange while records come in.
#[derive(Debug, Clone, Default, PartialEq)]
struct TlsTallies {
    versions: Tally,
    /// Indexed by [`trust_index`].
    trust: [u64; 5],
    ciphers: Tally,
    key_exchange: Tally,
    key_exchange_unknown: u64,
}

/// A count per string. The strings come interned from the parsers, so a pointer comparison
/// almost always finds the entry; the few first distinct strings are searched linearly, any
/// beyond in a hash map. Small when it counts one string, as a peer's TLS versions mostly
/// are: every peer has one (a million peers are a million tallies).
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    small: Vec<(Text, u64)>,
    #[allow(
        clippy::box_collection,
        reason = "8 bytes in every peer's state instead of a 48-byte empty map"
    )]
    more: Option<Box<HashMap<Text, u64>>>,
}

/// Distinct strings a [`Tally`] searches linearly.
const TALLY_LINEAR: usize = 16;

impl Tally {
    /// Counts `key`: inlined for the common case, the string counted first (a peer's one TLS
    /// version, the commonest cipher).
    #[inline]
    fn add(&mut self, key: &Text) {
        match self.small.first_mut() {
            Some((first, n)) if Text::ptr_eq(first, key) => *n += 1,
            _ => self.add_other(key),
        }
    }

    fn add_other(&mut self, key: &Text) {
        if let Some(entry) = self.small.iter_mut().find(|(k, _)| Text::ptr_eq(k, key)) {
            entry.1 += 1;
        } else if let Some(entry) = self.small.iter_mut().find(|(k, _)| k == key) {
            entry.1 += 1;
        } else if self.small.len() < TALLY_LINEAR {
            if self.small.is_empty() {
                // Room for one, not the four a first push makes.
                self.small.reserve_exact(1);
            }
            self.small.push((Text::clone(key), 1));
        } else {
            *self
                .more
                .get_or_insert_default()
                .entry(Text::clone(key))
                .or_default() += 1;
        }
    }

    fn add_to(&self, out: &mut BTreeMap<String, u64>) {
        let more = self.more.iter().flat_map(|more| more.iter());
        for (k, n) in self.small.iter().map(|(k, n)| (k, n)).chain(more) {
            *out.entry(String::from(&**k)).or_default() += n;
        }
    }
}

impl TlsTallies {
    fn add(&mut self, tls: &crate::model::TlsInfo) {
        self.versions.add(&tls.version);
        if let Some(n) = self.trust.get_mut(trust_index(tls.trust)) {
            *n += 1;
        }
        self.ciphers.add(&tls.cipher);
        match &tls.key_exchange {
            Some(kx) => self.key_exchange.add(kx),
            None => self.key_exchange_unknown += 1,
        }
    }

    fn breakdown(&self) -> TlsBreakdown {
        let mut b = TlsBreakdown::default();
        self.versions.add_to(&mut b.versions);
        self.ciphers.add_to(&mut b.ciphers);
        self.key_exchange.add_to(&mut b.key_exchange);
        if self.key_exchange_unknown > 0 {
            *b.key_exchange.entry("unknown".to_owned()).or_default() += self.key_exchange_unknown;
        }
        for (i, &n) in self.trust.iter().enumerate() {
            if n > 0 {
                b.trust
                    .insert(TRUST_NAMES.get(i).unwrap_or(&"unknown").to_string(), n);
            }
        }
        b
    }
}

/// Trust names by [`trust_index`].
const TRUST_NAMES: [&str; 5] = ["anonymous", "untrusted", "trusted", "verified", "unknown"];

fn trust_index(t: Option<Trust>) -> usize {
    match t {
        Some(Trust::Anonymous) => 0,
        Some(Trust::Untrusted) => 1,
        Some(Trust::Trusted) => 2,
        Some(Trust::Verified) => 3,
        None => 4,
    }
}

impl DirectionFigures {
    fn add_message(&mut self, m: &MessageRecord) {
        match m.status {
            Some(crate::model::DeliveryStatus::Deferred) => {
                self.deferred += 1;
                return;
            }
            Some(crate::model::DeliveryStatus::Bounced) => {
                self.bounced += 1;
                return;
            }
            _ => {}
        }
        self.messages += 1;
        self.recipients += u64::from(m.recipients);
        match &m.transport {
            Transport::Tls(tls) => {
                self.tls_messages += 1;
                self.tls_recipients += u64::from(m.recipients);
                self.tallies.add(tls);
            }
            Transport::Plain => self.plain_messages += 1,
            Transport::Unknown { .. } => self.unknown_messages += 1,
        }
    }

    fn add_connection(&mut self, c: &ConnectionRecord) {
        self.connections += 1;
        if c.transport.is_tls() {
            self.tls_connections += 1;
        }
    }

    fn finish(&mut self) {
        self.tls_share = share(self.tls_messages, self.messages);
        self.tls = self.tallies.breakdown();
    }
}

/// `part / whole` rounded to 4 places (0 for nothing): every share in the figures.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 1e4).round() / 1e4
    }
}

/// Inbound and outbound figures for one period (a day or an hour).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeriodFigures {
    /// `2026-11-22` for days, `2026-11-22T13` for hours (log time).
    pub period: String,
    pub inbound_messages: u64,
    pub inbound_tls: u64,
    pub inbound_share: f64,
    pub outbound_messages: u64,
    pub outbound_tls: u64,
    pub outbound_share: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct PeriodCounts {
    inbound: u64,
    inbound_tls: u64,
    outbound: u64,
    outbound_tls: u64,
}

/// [`PeriodCounts`] by period number (days or hours since 1970). Records come mostly in time
/// order, so the period of the last record is kept out of the map, where it is counted without
/// a search.
#[derive(Debug, Default)]
struct Periods {
    map: BTreeMap<i64, PeriodCounts>,
    current: Option<(i64, PeriodCounts)>,
}

impl Periods {
    /// The counts of `period`.
    fn counts(&mut self, period: i64) -> &mut PeriodCounts {
        if self.current.as_ref().is_some_and(|(p, _)| *p != period) {
            self.put_back();
        }
        let (_, counts) = self
            .current
            .get_or_insert_with(|| (period, self.map.remove(&period).unwrap_or_default()));
        counts
    }

    fn put_back(&mut self) {
        if let Some((period, counts)) = self.current.take() {
            self.map.insert(period, counts);
        }
    }

    /// All counts, by period.
    fn finish(&mut self) -> &BTreeMap<i64, PeriodCounts> {
        self.put_back();
        &self.map
    }
}

/// One peer in one direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerFigures {
    pub direction: Direction,
    /// Host name as logged (`null` for `unknown`).
    pub hostname: Option<String>,
    pub ip: Option<String>,
    /// The registered domain of the host name (Public Suffix List), else the IP.
    pub domain: String,
    pub messages: u64,
    pub tls_messages: u64,
    pub plain_messages: u64,
    pub unknown_messages: u64,
    pub tls_share: f64,
    pub versions: BTreeMap<String, u64>,
    pub first_seen: String,
    pub last_seen: String,
}

/// A peer that used TLS, then sent or received mail in clear.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Downgrade {
    pub direction: Direction,
    pub hostname: Option<String>,
    pub ip: Option<String>,
    pub domain: String,
    /// The last message over TLS before the window.
    pub last_tls: String,
    pub last_tls_id: String,
    /// The plaintext window: first and last plaintext message, and how many.
    pub first_plain: String,
    pub first_plain_id: String,
    pub last_plain: String,
    pub last_plain_id: String,
    pub plain_messages: u64,
    /// TLS came back after the window (`false`: still plaintext at the end of the logs).
    pub tls_resumed: bool,
}

/// A failed STARTTLS or a stripping trace, with the log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyFigure {
    pub time: String,
    pub direction: Direction,
    pub hostname: Option<String>,
    pub ip: Option<String>,
    pub evidence: String,
    /// For stripping traces: the peer used TLS for other mail in these logs.
    pub peer_uses_tls: bool,
}

/// A plaintext peer domain, and what fixing it would bring.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaintextPeer {
    pub direction: Direction,
    pub domain: String,
    pub plain_messages: u64,
    /// Share of that direction's messages the plaintext peers up to this one carry.
    pub cumulative_plain_share: f64,
    /// The direction's TLS share if this peer and all before it used TLS.
    pub tls_share_if_fixed: f64,
}

/// Delivered outbound Internet mail to a next hop ([`NextHopFigures`]) or a relay
/// ([`RelayHostFigures`]): the counts, the TLS share, when, and samples. In JSON its fields are
/// those of the entry that holds it (`#[serde(flatten)]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailFigures {
    /// Delivered messages: for a relay, delivery transactions.
    pub messages: u64,
    pub tls_messages: u64,
    /// Over TLS with a certificate the MTA checked: Postfix's `Verified` or `Trusted`
    /// (`Trusted`: the chain is valid; the name is not checked at levels `may`/`encrypt`),
    /// Exim's `CV=yes`.
    pub trusted_tls_messages: u64,
    pub plain_messages: u64,
    /// Messages whose transport the log does not tell.
    pub unknown_messages: u64,
    /// `tls_messages / messages`, rounded to 4 places.
    pub tls_share: f64,
    pub first_seen: String,
    pub last_seen: String,
    /// The messages sent in clear, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain: Option<MessageSample>,
    /// The messages over TLS without a checked certificate, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrusted_tls: Option<MessageSample>,
}

/// Outbound Internet mail to one recipient domain: the next hop Postfix's
/// `smtp_tls_policy_maps` is keyed by when mail is routed by MX. Delivered messages only
/// (delivery transactions with status sent), as in [`DirectionFigures::messages`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextHopFigures {
    /// Lowercase, as logged (an address literal keeps its brackets).
    pub domain: String,
    #[serde(flatten)]
    pub mail: MailFigures,
    /// The relay hosts the messages went to; `None` in a report written before they were
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays: Option<RelayFigures>,
}

/// Delivered outbound Internet mail to one relay host on one port (as in
/// [`RelayFigures`]: an MX host, or a smarthost such as a `relayhost`), each delivery
/// transaction once, however many recipient domains it carried: what `sigillo policy build`
/// judges a smarthost on. [`NextHopFigures`] count a transaction once for each domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayHostFigures {
    /// As in [`crate::next_hop_relays::RelayCount::host`]: the name as logged, lowercase; the
    /// address when no name was logged.
    pub host: String,
    /// The server port, when the log gives it (absent in JSON when it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Delivery transactions.
    #[serde(flatten)]
    pub mail: MailFigures,
    /// Next-hop domains in [`Figures::next_hops`] whose delivered mail went to this relay
    /// (each domain's first [`MAX_RELAYS_PER_NEXT_HOP`] relays count it: see
    /// [`Figures::next_hops_over_relay_cap`]), whether or not it is among the hosts
    /// [`NextHopFigures::relays`] names.
    #[serde(default)]
    pub domains: u64,
}

/// Outbound Internet messages that are not in [`Figures::relays`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaysOmitted {
    /// The delivery named no relay host (neither a name nor an address).
    pub no_host_messages: u64,
    /// Their relay came after [`MAX_RELAYS`] others (see there).
    pub over_cap_messages: u64,
}

/// Some messages of a kind: the first and last by time, and the first few in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSample {
    pub first: MessageRef,
    pub last: MessageRef,
    /// At most [`NEXT_HOP_SAMPLE`].
    pub sample: Vec<MessageRef>,
}

/// One message: when, and its queue id (or message id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub time: String,
    pub id: String,
}

/// Outbound Internet messages that are not in [`Figures::next_hops`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHopsOmitted {
    /// The log named no recipient domain (a local user). A transaction whose recipients span
    /// several domains counts for each of them ([`MessageRecord::spanned_domains`]).
    pub no_domain_messages: u64,
    /// Their domain came after [`MAX_NEXT_HOPS`] others.
    pub over_cap_messages: u64,
}

/// Everything `sigillo report` prints (the `--json` document, minus the input statistics the
/// caller adds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// First and last record time counted.
    pub first: Option<String>,
    pub last: Option<String>,
    /// Internet mail.
    pub inbound: DirectionFigures,
    pub outbound: DirectionFigures,
    /// Local and internal hops (pickup, local delivery, loopback, `--internal`).
    pub internal_inbound: DirectionFigures,
    pub internal_outbound: DirectionFigures,
    pub daily: Vec<PeriodFigures>,
    pub hourly: Vec<PeriodFigures>,
    /// Internet peers, most messages first.
    pub peers: Vec<PeerFigures>,
    /// Plaintext peer domains by volume, with the share TLS would reach if they were fixed.
    pub top_plaintext: Vec<PlaintextPeer>,
    pub downgrades: Vec<Downgrade>,
    pub starttls_failures: Vec<AnomalyFigure>,
    pub stripping_traces: Vec<AnomalyFigure>,
    /// Entries left out of the three lists above, each capped at 1,000 (counted per list).
    pub omitted: Omitted,
    /// Records outside `--since`/`--until`.
    pub outside_window: u64,
    /// Outbound Internet mail per recipient domain, most messages first.
    pub next_hops: Vec<NextHopFigures>,
    pub next_hops_omitted: NextHopsOmitted,
    /// Outbound Internet mail per relay host and port, each transaction once, most messages
    /// first.
    pub relays: Vec<RelayHostFigures>,
    pub relays_omitted: RelaysOmitted,
    /// Next-hop domains in [`Self::next_hops`] whose delivered mail went to more than
    /// [`MAX_RELAYS_PER_NEXT_HOP`] relays: the relays past their first that many do not count
    /// them in [`RelayHostFigures::domains`], which undercounts by up to this many.
    pub next_hops_over_relay_cap: u64,
}

/// How many entries each capped list left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Omitted {
    pub downgrades: u64,
    pub starttls_failures: u64,
    pub stripping_traces: u64,
}

impl Omitted {
    /// All left out, over the three lists.
    pub fn total(&self) -> u64 {
        self.downgrades + self.starttls_failures + self.stripping_traces
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerKey {
    direction: Direction,
    hostname: Option<Text>,
    ip: Option<IpAddr>,
}

impl PeerKey {
    fn new(direction: Direction, peer: &Peer) -> Self {
        Self {
            direction,
            hostname: peer.hostname.clone(),
            ip: peer.ip,
        }
    }

    /// Whether this is the key of `peer` in `direction`.
    fn is(&self, direction: Direction, peer: &Peer) -> bool {
        self.direction == direction && self.ip == peer.ip && self.hostname == peer.hostname
    }
}

/// Hashes what `Eq` compares in two writes: the direction and address in one block, then
/// the name. The derived hash makes about eight small writes, each a SipHash call.
impl Hash for PeerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_peer(self.direction, self.hostname.as_deref(), self.ip, state);
    }
}

/// What [`PeerKey`] hashes, from the parts of one.
fn hash_peer(
    direction: Direction,
    hostname: Option<&str>,
    ip: Option<IpAddr>,
    state: &mut impl Hasher,
) {
    let (family, octets) = match ip {
        None => (0, [0; 16]),
        Some(IpAddr::V4(v4)) => (4, v4.to_ipv6_mapped().octets()),
        Some(IpAddr::V6(v6)) => (6, v6.octets()),
    };
    let mut head = [0u8; 19];
    let (tags, address) = head.split_at_mut(3);
    tags.copy_from_slice(&[direction as u8, family, u8::from(hostname.is_some())]);
    address.copy_from_slice(&octets);
    state.write(&head);
    if let Some(name) = hostname {
        state.write(name.as_bytes());
    }
}

/// Bits of the fast hash that pick a slot of [`Table::recent`].
const RECENT_BITS: u32 = 14;

/// Entries by key, in first-seen order: the peers, the next-hop domains, and the relays. An
/// entry is found through `index`, a SipHash map, since host names, addresses and recipient
/// domains are chosen by others (a flood of crafted colliding keys must not make every lookup
/// slow); but first through `recent`, a direct-mapped cache indexed by FxHash, a fraction of
/// the cost. Crafted collisions there only make it miss.
#[derive(Debug)]
struct Table<K, V> {
    entries: Vec<(K, V)>,
    index: HashMap<K, usize>,
    /// Per slot, the position in `entries` of the key last found through it (`u32::MAX`:
    /// none).
    recent: Vec<u32>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
            recent: vec![u32::MAX; 1 << RECENT_BITS],
        }
    }
}

impl<K: Clone + Eq + Hash, V> Table<K, V> {
    /// The entry of a key: `fast_hash` is its FxHash, `is` tells its entry's key, `key` makes
    /// it. When it is not there, `new` makes its value (`None`: leave it out).
    fn get_or_add(
        &mut self,
        fast_hash: u64,
        is: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        new: impl FnOnce(usize) -> Option<V>,
    ) -> Option<(usize, &mut V)> {
        // FxHash mixes into the high bits.
        let slot = (fast_hash >> (u64::BITS - RECENT_BITS)) as usize;
        let cached = self
            .recent
            .get(slot)
            .and_then(|&position| usize::try_from(position).ok())
            .filter(|&position| self.entries.get(position).is_some_and(|(k, _)| is(k)));
        let position = match cached {
            Some(position) => position,
            None => {
                let position = match self.index.entry(key()) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(e) => {
                        let position = self.entries.len();
                        let value = new(position)?;
                        self.entries.push((e.key().clone(), value));
                        e.insert(position);
                        position
                    }
                };
                if let Some(cached) = self.recent.get_mut(slot) {
                    *cached = u32::try_from(position).unwrap_or(u32::MAX);
                }
                position
            }
        };
        self.entries
            .get_mut(position)
            .map(|(_, value)| (position, value))
    }
}

/// Counts a delivered outbound Internet message for the relay host and port it went to: once,
/// however many recipient domains the transaction carried. `slot` is the peer's: the relay
/// is looked up by name only when the peer's last delivery went elsewhere (another port).
/// A spelling seen for the first time gets the id of its relay from `ids` (see
/// [`RelayState::id`]); once the table is full, a new spelling of a relay it holds counts in
/// the entry of that relay's first spelling. Returns the relay's id (`None`: no host, or a
/// relay after the cap).
fn add_relay(
    relays: &mut Table<(RelayName, Option<u16>), RelayState>,
    ids: &mut HashMap<(String, Option<u16>), RelayPlace>,
    omitted: &mut RelaysOmitted,
    slot: &mut RelaySlot,
    m: &MessageRecord,
) -> Option<u32> {
    if slot.port == m.port
        && let Some((_, relay)) = usize::try_from(slot.position)
            .ok()
            .and_then(|position| relays.entries.get_mut(position))
    {
        relay.mail.add(m);
        return relay.id();
    }
    let port = m.port.map_or(u32::MAX, u32::from);
    let hash = match (&m.peer.hostname, m.peer.ip) {
        (Some(name), _) => fast_hash(|h| {
            h.write(name.as_bytes());
            h.write_u32(port);
        }),
        (None, Some(ip)) => fast_hash(|h| {
            hash_peer(Direction::Outbound, None, Some(ip), h);
            h.write_u32(port);
        }),
        (None, None) => {
            omitted.no_host_messages += 1;
            return None;
        }
    };
    // The peer has a name or an address (checked above): the fallback is not used.
    let name = || {
        RelayName::of(&m.peer).unwrap_or(RelayName::Ip(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
    };
    let relay = relays.get_or_add(
        hash,
        |(name, p)| *p == m.port && name.is_exactly(&m.peer),
        || (name(), m.port),
        |count| {
            (count < MAX_RELAYS).then(|| RelayState {
                mail: MailTally::new(m.time),
                id: relay_id(ids, name().text(), m.port, count),
            })
        },
    );
    let (position, relay) = match relay {
        Some(found) => found,
        None => {
            // The table is full, and this spelling has no entry: it may spell a relay that
            // has one (`MX.example.` for `mx.example`), whose first spelling's entry counts it.
            // Looked up by name only here, past the cap.
            let host = name().text();
            if host.is_empty() {
                omitted.no_host_messages += 1;
                return None;
            }
            let place = ids.get(&(host, m.port)).copied();
            let found = place.and_then(|place| {
                let position = usize::try_from(place.first).ok()?;
                Some((position, &mut relays.entries.get_mut(position)?.1))
            });
            let Some(found) = found else {
                omitted.over_cap_messages += 1;
                return None;
            };
            found
        }
    };
    relay.mail.add(m);
    let position = u32::try_from(position).ok()?;
    *slot = RelaySlot {
        port: m.port,
        position,
    };
    relay.id()
}

/// The id of the relay named `host` (as reported: [`RelayName::text`]) on `port`, a new one
/// when it has none yet (its first spelling being at `position` in the relays table);
/// [`RelayState::NO_HOST`] when the name is empty (a lone `.`).
fn relay_id(
    ids: &mut HashMap<(String, Option<u16>), RelayPlace>,
    host: String,
    port: Option<u16>,
    position: usize,
) -> u32 {
    if host.is_empty() {
        return RelayState::NO_HOST;
    }
    let next = RelayPlace {
        id: u32::try_from(ids.len()).unwrap_or(RelayState::NO_HOST),
        first: u32::try_from(position).unwrap_or(u32::MAX),
    };
    ids.entry((host, port)).or_insert(next).id
}

/// A relay as reported, in [`Aggregator::relay_ids`]: its id ([`RelayState::id`]) and the
/// position of its first spelling in [`Aggregator::relays`] (which counts the spellings that
/// came after the table was full).
#[derive(Debug, Clone, Copy)]
struct RelayPlace {
    id: u32,
    first: u32,
}

/// Counts a delivered outbound Internet message for its recipient domain, or, when its
/// recipients span several domains (a relay host took them in one transaction), for each of
/// them: each domain's mail went to that relay (`relay`, its id, [`RelayState::id`], when it
/// has one).
fn add_next_hop(
    hops: &mut Table<Text, NextHopState>,
    omitted: &mut NextHopsOmitted,
    m: &MessageRecord,
    relay: Option<u32>,
) {
    match &m.recipient_domain {
        Some(domain) => add_next_hop_domain(hops, omitted, domain, m, relay),
        None => match m.spanned_domains.as_deref() {
            None | Some([]) => omitted.no_domain_messages += 1,
            Some(domains) => {
                for domain in domains {
                    add_next_hop_domain(hops, omitted, domain, m, relay);
                }
            }
        },
    }
}

/// Counts a delivered outbound Internet message for `domain`.
fn add_next_hop_domain(
    hops: &mut Table<Text, NextHopState>,
    omitted: &mut NextHopsOmitted,
    domain: &Text,
    m: &MessageRecord,
    relay: Option<u32>,
) {
    let hop = hops.get_or_add(
        fast_hash(|h| h.write(domain.as_bytes())),
        |key| key == domain,
        || Text::clone(domain),
        |count| {
            (count < MAX_NEXT_HOPS).then(|| NextHopState {
                mail: MailTally::new(m.time),
                relays: RelayTally::default(),
                via: Vec::new(),
                over_relay_cap: false,
            })
        },
    );
    let Some((_, hop)) = hop else {
        omitted.over_cap_messages += 1;
        return;
    };
    hop.mail.add(m);
    hop.relays.add(&m.peer, m.port);
    if let Some(relay) = relay {
        hop.went_via(relay);
    }
}

/// The FxHash of what `hash` writes.
fn fast_hash(hash: impl FnOnce(&mut Fx)) -> u64 {
    let mut hasher = FxBuild.build_hasher();
    hash(&mut hasher);
    hasher.finish()
}

#[derive(Debug, Clone)]
struct PeerState {
    messages: u64,
    tls: u64,
    plain: u64,
    unknown: u64,
    versions: Tally,
    first: UnixTime,
    last: UnixTime,
    /// Its [`DowngradeState`] in [`Aggregator::downgrade_states`].
    downgrade_slot: u32,
    /// Outbound: the relay its last delivery was counted for.
    relay: RelaySlot,
}

/// The relay (in [`Aggregator::relays`]) a peer's last outbound delivery was counted for, and
/// its port: the peer's next delivery to that port finds it here, without hashing the name.
#[derive(Debug, Clone, Copy)]
struct RelaySlot {
    port: Option<u16>,
    /// `u32::MAX`: none yet (or the relay came after the cap).
    position: u32,
}

impl RelaySlot {
    const NONE: RelaySlot = RelaySlot {
        port: None,
        position: u32::MAX,
    };
}

/// Who a downgrade window is about: the address, whatever name reverse DNS gave it (Postfix
/// logs `unknown[IP]` when the lookup fails), or the name when no address is logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum DowngradeKey {
    Ip(Direction, IpAddr),
    Name(Direction, Text),
}

/// The downgrade window of one [`DowngradeKey`] while records come in.
#[derive(Debug, Clone, Default)]
struct DowngradeState {
    /// The last TLS message so far, and the position of its peer in [`Aggregator::peers`].
    last_tls: Option<(UnixTime, Text, u32)>,
    /// Boxed: few peers have one.
    window: Option<Box<Window>>,
}

/// A [`NextHopFigures`] while records come in.
#[derive(Debug, Clone)]
struct NextHopState {
    mail: MailTally,
    relays: RelayTally,
    /// The relays (ids, [`RelayState::id`]: spellings merged) its mail went to, distinct, at
    /// most [`MAX_RELAYS_PER_NEXT_HOP`]: for [`RelayHostFigures::domains`].
    via: Vec<u32>,
    /// Its mail went to a relay not in `via`, `via` being full: for
    /// [`Figures::next_hops_over_relay_cap`].
    over_relay_cap: bool,
}

impl NextHopState {
    /// Notes that a message went to the relay `id`. Searched linearly, most recent first: a
    /// domain's mail goes to a few relays, and mostly to the one it went to last.
    #[inline]
    fn went_via(&mut self, id: u32) {
        if self.via.last() == Some(&id) || self.via.contains(&id) {
            return;
        }
        if self.via.len() < MAX_RELAYS_PER_NEXT_HOP {
            if self.via.is_empty() {
                self.via.reserve_exact(1);
            }
            self.via.push(id);
        } else {
            self.over_relay_cap = true;
        }
    }
}

/// One spelling of a relay (a host name as logged, exactly, on a port) while records come in.
#[derive(Debug, Clone)]
struct RelayState {
    mail: MailTally,
    /// The relay it spells: spellings that [`RelayName::text`] reports alike (`MX.example`,
    /// `mx.example.`) on one port share an id, given in first-seen order, so that a next hop
    /// remembers a relay once however it was spelled ([`NextHopState::via`]).
    /// [`Self::NO_HOST`] when the name reports as empty.
    id: u32,
}

impl RelayState {
    const NO_HOST: u32 = u32::MAX;

    fn id(&self) -> Option<u32> {
        (self.id != Self::NO_HOST).then_some(self.id)
    }
}

/// The delivered messages of a next hop ([`NextHopFigures`]) or a relay
/// ([`RelayHostFigures`]) while records come in.
#[derive(Debug, Clone)]
struct MailTally {
    messages: u64,
    tls: u64,
    trusted: u64,
    plain: u64,
    unknown: u64,
    first: UnixTime,
    last: UnixTime,
    plain_sample: Sampler,
    untrusted_sample: Sampler,
}

impl MailTally {
    fn new(time: UnixTime) -> MailTally {
        MailTally {
            messages: 0,
            tls: 0,
            trusted: 0,
            plain: 0,
            unknown: 0,
            first: time,
            last: time,
            plain_sample: Sampler::default(),
            untrusted_sample: Sampler::default(),
        }
    }

    /// Counts one delivered message.
    #[inline]
    fn add(&mut self, m: &MessageRecord) {
        self.messages += 1;
        self.first = self.first.min(m.time);
        self.last = self.last.max(m.time);
        match &m.transport {
            Transport::Tls(info) => {
                self.tls += 1;
                if matches!(info.trust, Some(Trust::Trusted | Trust::Verified)) {
                    self.trusted += 1;
                } else {
                    self.untrusted_sample.add(m.time, &m.id);
                }
            }
            Transport::Plain => {
                self.plain += 1;
                self.plain_sample.add(m.time, &m.id);
            }
            Transport::Unknown { .. } => self.unknown += 1,
        }
    }

    /// The figures of the messages counted.
    fn figures(&self) -> MailFigures {
        MailFigures {
            messages: self.messages,
            tls_messages: self.tls,
            trusted_tls_messages: self.trusted,
            plain_messages: self.plain,
            unknown_messages: self.unknown,
            tls_share: share(self.tls, self.messages),
            first_seen: time_text(self.first),
            last_seen: time_text(self.last),
            plain: self.plain_sample.figures(),
            untrusted_tls: self.untrusted_sample.figures(),
        }
    }

    /// Adds another tally's messages (another spelling of the same relay).
    fn merge(&mut self, other: &MailTally) {
        self.messages += other.messages;
        self.tls += other.tls;
        self.trusted += other.trusted;
        self.plain += other.plain;
        self.unknown += other.unknown;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.plain_sample.merge(&other.plain_sample);
        self.untrusted_sample.merge(&other.untrusted_sample);
    }
}

/// A [`MessageSample`] while records come in.
#[derive(Debug, Clone, Default)]
struct Sampler {
    first: Option<(UnixTime, Text)>,
    last: Option<(UnixTime, Text)>,
    sample: Vec<(UnixTime, Text)>,
}

impl Sampler {
    fn add(&mut self, time: UnixTime, id: &Text) {
        if self.first.as_ref().is_none_or(|(t, _)| time < *t) {
            self.first = Some((time, Text::clone(id)));
        }
        if self.last.as_ref().is_none_or(|(t, _)| time >= *t) {
            self.last = Some((time, Text::clone(id)));
        }
        if self.sample.len() < NEXT_HOP_SAMPLE {
            self.sample.push((time, Text::clone(id)));
        }
    }

    /// Adds another sampler's messages: the earlier first, the later last, and the earliest
    /// few of both samples.
    fn merge(&mut self, other: &Sampler) {
        if let Some((time, id)) = &other.first
            && self.first.as_ref().is_none_or(|(t, _)| time < t)
        {
            self.first = Some((*time, Text::clone(id)));
        }
        if let Some((time, id)) = &other.last
            && self.last.as_ref().is_none_or(|(t, _)| time >= t)
        {
            self.last = Some((*time, Text::clone(id)));
        }
        self.sample.extend(other.sample.iter().cloned());
        self.sample.sort_by_key(|(time, _)| *time);
        self.sample.truncate(NEXT_HOP_SAMPLE);
    }

    fn figures(&self) -> Option<MessageSample> {
        let message = |(time, id): &(UnixTime, Text)| MessageRef {
            time: time_text(*time),
            id: String::from(&**id),
        };
        Some(MessageSample {
            first: message(self.first.as_ref()?),
            last: message(self.last.as_ref()?),
            sample: self.sample.iter().map(message).collect(),
        })
    }
}

#[derive(Debug, Clone)]
struct Window {
    last_tls: (UnixTime, Text),
    first: (UnixTime, Text),
    last: (UnixTime, Text),
    count: u64,
    /// The peers (positions in [`Aggregator::peers`]) of the last TLS and the first
    /// plaintext message: the downgrade shows a name from them.
    peers: (u32, u32),
}

/// How far back in log time a message may arrive and still be put in its place for the
/// downgrade windows: parsers emit some records late (a Postfix delivery waits for its
/// process's next line, an idle one for the hourly sweep; an Exim message for its
/// `Completed` line).
pub const REORDER_LAG_SECS: i64 = 2 * 3600;
/// The time span of one bucket of the reorder buffer.
const REORDER_BUCKET_SECS: i64 = 60;
/// The lag in buckets.
const REORDER_LAG_BUCKETS: usize = (REORDER_LAG_SECS / REORDER_BUCKET_SECS) as usize;
/// At most this many steps are held back; past it the oldest buckets are applied early.
const REORDER_MAX_HELD: usize = 500_000;

/// One message of a peer, for its downgrade windows.
#[derive(Debug, Clone)]
struct PeerStep {
    time: UnixTime,
    /// Position of the peer in [`Aggregator::peers`].
    peer: u32,
    tls: bool,
    id: Text,
}

/// Holds peer steps back for [`REORDER_LAG_SECS`] of log time, in one-minute buckets, and
/// releases them in time order (equal times in arrival order). A step older than every
/// bucket still held is released at once. Memory is bounded by the message rate over the
/// lag, and by [`REORDER_MAX_HELD`].
#[derive(Debug, Default)]
struct ReorderBuffer {
    /// Bucket `i` holds the steps of minute `first_bucket + i`.
    buckets: std::collections::VecDeque<Vec<PeerStep>>,
    first_bucket: i64,
    held: usize,
    /// Steps released at once (older than the buffer), to go out first.
    late: Vec<PeerStep>,
    /// Emptied buckets, kept for the next minutes: a bucket grown from nothing reallocates
    /// several times a minute of log time.
    spare: Vec<Vec<PeerStep>>,
}

impl ReorderBuffer {
    /// Holds `step`; true when some steps are now due ([`ReorderBuffer::release`]).
    fn push(&mut self, step: PeerStep) -> bool {
        let bucket = step.time.div_euclid(REORDER_BUCKET_SECS);
        if self.buckets.is_empty() {
            self.first_bucket = bucket;
        }
        if bucket < self.first_bucket {
            self.late.push(step);
            return true;
        }
        let Some(index) = usize::try_from(bucket - self.first_bucket).ok() else {
            self.late.push(step);
            return true;
        };
        // A jump far ahead in time: everything held is older than the lag behind this step
        // (and no run of empty buckets is made up to it).
        if index > self.buckets.len() + REORDER_LAG_BUCKETS {
            self.drain_all_into_late();
            self.first_bucket = bucket;
            self.buckets.push_back(vec![step]);
            self.held = 1;
            return true;
        }
        while self.buckets.len() <= index {
            let bucket = self.spare.pop().unwrap_or_default();
            self.buckets.push_back(bucket);
        }
        if let Some(b) = self.buckets.get_mut(index) {
            // Kept in time order as it grows (equal times in arrival order): steps come
            // mostly in order, so this moves few if any.
            let at = b.partition_point(|s| s.time <= step.time);
            b.insert(at, step);
            self.held += 1;
        }
        self.buckets.len() > REORDER_LAG_BUCKETS + 1 || self.held > REORDER_MAX_HELD
    }

    fn drain_all_into_late(&mut self) {
        while let Some(mut b) = self.buckets.pop_front() {
            self.late.append(&mut b);
        }
        self.held = 0;
    }

    /// Moves the steps now due into `out`, in time order: those older than the lag behind
    /// the newest bucket (or past the cap), or all of them.
    fn release(&mut self, all: bool, out: &mut Vec<PeerStep>) {
        out.append(&mut self.late);
        while all || self.buckets.len() > REORDER_LAG_BUCKETS + 1 || self.held > REORDER_MAX_HELD {
            let Some(mut front) = self.buckets.pop_front() else {
                break;
            };
            self.held -= front.len();
            out.append(&mut front);
            self.first_bucket += 1;
            // As many as the buckets held at once: memory stays what the lag needs.
            if self.spare.len() <= REORDER_LAG_BUCKETS + 1 {
                self.spare.push(front);
            }
        }
    }
}

/// Accumulates records into [`Figures`].
#[derive(Debug)]
pub struct Aggregator {
    options: AggregateOptions,
    inbound: DirectionFigures,
    outbound: DirectionFigures,
    internal_inbound: DirectionFigures,
    internal_outbound: DirectionFigures,
    days: Periods,
    hours: Periods,
    peers: Table<PeerKey, PeerState>,
    downgrades: Vec<Downgrade>,
    starttls_failures: Vec<AnomalyRecord>,
    stripping_traces: Vec<AnomalyRecord>,
    omitted: Omitted,
    outside_window: u64,
    first: Option<UnixTime>,
    last: Option<UnixTime>,
    /// Recipient domains are chosen by others: see [`Table`].
    next_hops: Table<Text, NextHopState>,
    next_hops_omitted: NextHopsOmitted,
    /// Per relay host (as named, exactly) and port; spellings are merged at the end.
    relays: Table<(RelayName, Option<u16>), RelayState>,
    /// The relays as reported (host as [`RelayName::text`] gives it, and port), by id: the
    /// [`RelayState::id`] of each spelling. At most [`MAX_RELAYS`].
    relay_ids: HashMap<(String, Option<u16>), RelayPlace>,
    relays_omitted: RelaysOmitted,
    /// Peer steps waiting to be applied in time order (downgrade windows).
    in_order: ReorderBuffer,
    /// Downgrade windows, one per address (or name without one) and direction.
    downgrade_states: Vec<DowngradeState>,
    downgrade_slots: HashMap<DowngradeKey, u32>,
    /// The steps [`ReorderBuffer::release`] hands over, kept to reuse its allocation.
    due_scratch: Vec<PeerStep>,
}

impl Aggregator {
    pub fn new(options: AggregateOptions) -> Self {
        Self {
            options,
            inbound: DirectionFigures::default(),
            outbound: DirectionFigures::default(),
            internal_inbound: DirectionFigures::default(),
            internal_outbound: DirectionFigures::default(),
            days: Periods::default(),
            hours: Periods::default(),
            peers: Table::default(),
            downgrades: Vec::new(),
            starttls_failures: Vec::new(),
            stripping_traces: Vec::new(),
            omitted: Omitted::default(),
            outside_window: 0,
            first: None,
            last: None,
            next_hops: Table::default(),
            next_hops_omitted: NextHopsOmitted::default(),
            relays: Table::default(),
            relay_ids: HashMap::new(),
            relays_omitted: RelaysOmitted::default(),
            in_order: ReorderBuffer::default(),
            due_scratch: Vec::new(),
            downgrade_states: Vec::new(),
            downgrade_slots: HashMap::new(),
        }
    }

    fn in_window(&mut self, time: UnixTime) -> bool {
        let inside = self.options.since.is_none_or(|s| time >= s)
            && self.options.until.is_none_or(|u| time < u);
        if !inside {
            self.outside_window += 1;
        }
        inside
    }

    fn is_internal(&self, scope: Scope, ip: Option<IpAddr>) -> bool {
        if scope == Scope::Internal {
            return true;
        }
        let Some(ip) = ip else { return false };
        let loopback_itself = match ip {
            IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
            IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
        };
        loopback_itself || self.options.internal.iter().any(|c| c.contains(ip))
    }

    /// Counts one record.
    pub fn add(&mut self, record: &Record) {
        match record {
            Record::Message(m) => self.add_message(m),
            Record::Connection(c) => {
                if !self.in_window(c.time) {
                    return;
                }
                let internal = self.is_internal(c.scope, c.peer.ip);
                self.figures(c.direction, internal).add_connection(c);
            }
            Record::Anomaly(a) => {
                if !self.in_window(a.time) {
                    return;
                }
                let (list, omitted) = match a.kind {
                    AnomalyKind::StartTlsFailed => (
                        &mut self.starttls_failures,
                        &mut self.omitted.starttls_failures,
                    ),
                    AnomalyKind::StrippingTrace => (
                        &mut self.stripping_traces,
                        &mut self.omitted.stripping_traces,
                    ),
                };
                if list.len() < MAX_LISTED {
                    list.push(a.clone());
                } else {
                    *omitted += 1;
                }
            }
        }
    }

    fn figures(&mut self, direction: Direction, internal: bool) -> &mut DirectionFigures {
        match (direction, internal) {
            (Direction::Inbound, false) => &mut self.inbound,
            (Direction::Outbound, false) => &mut self.outbound,
            (Direction::Inbound, true) => &mut self.internal_inbound,
            (Direction::Outbound, true) => &mut self.internal_outbound,
        }
    }

    fn add_message(&mut self, m: &MessageRecord) {
        if !self.in_window(m.time) {
            return;
        }
        let internal = self.is_internal(m.scope, m.peer.ip);
        self.figures(m.direction, internal).add_message(m);
        let delivered = !matches!(
            m.status,
            Some(crate::model::DeliveryStatus::Deferred | crate::model::DeliveryStatus::Bounced)
        );
        if internal || !delivered {
            return;
        }
        self.first = Some(self.first.map_or(m.time, |f| f.min(m.time)));
        self.last = Some(self.last.map_or(m.time, |l| l.max(m.time)));
        let tls = m.transport.is_tls();
        for (map, key) in [
            (&mut self.days, m.time.div_euclid(86_400)),
            (&mut self.hours, m.time.div_euclid(3600)),
        ] {
            let counts = map.counts(key);
            match m.direction {
                Direction::Inbound => {
                    counts.inbound += 1;
                    counts.inbound_tls += u64::from(tls);
                }
                Direction::Outbound => {
                    counts.outbound += 1;
                    counts.outbound_tls += u64::from(tls);
                }
            }
        }
        let peer = self.peers.get_or_add(
            fast_hash(|h| hash_peer(m.direction, m.peer.hostname.as_deref(), m.peer.ip, h)),
            |key| key.is(m.direction, &m.peer),
            || PeerKey::new(m.direction, &m.peer),
            |_| {
                Some(PeerState {
                    messages: 0,
                    tls: 0,
                    plain: 0,
                    unknown: 0,
                    versions: Tally::default(),
                    first: m.time,
                    last: m.time,
                    downgrade_slot: u32::MAX,
                    relay: RelaySlot::NONE,
                })
            },
        );
        let Some((position, peer)) = peer else {
            return; // Not reached: every new peer is added.
        };
        if m.direction == Direction::Outbound {
            let relay = add_relay(
                &mut self.relays,
                &mut self.relay_ids,
                &mut self.relays_omitted,
                &mut peer.relay,
                m,
            );
            add_next_hop(&mut self.next_hops, &mut self.next_hops_omitted, m, relay);
        }
        if peer.downgrade_slot == u32::MAX {
            let key = match (m.peer.ip, &m.peer.hostname) {
                (Some(ip), _) => DowngradeKey::Ip(m.direction, ip),
                (None, Some(name)) => DowngradeKey::Name(m.direction, Text::clone(name)),
                (None, None) => DowngradeKey::Name(m.direction, Text::from("")),
            };
            let next = u32::try_from(self.downgrade_states.len()).unwrap_or(u32::MAX);
            peer.downgrade_slot = *self.downgrade_slots.entry(key).or_insert_with(|| {
                self.downgrade_states.push(DowngradeState::default());
                next
            });
        }
        peer.messages += 1;
        peer.first = peer.first.min(m.time);
        peer.last = peer.last.max(m.time);
        let tls = match &m.transport {
            Transport::Tls(info) => {
                peer.tls += 1;
                peer.versions.add(&info.version);
                true
            }
            Transport::Plain => {
                peer.plain += 1;
                false
            }
            Transport::Unknown { .. } => {
                peer.unknown += 1;
                return;
            }
        };
        let due = self.in_order.push(PeerStep {
            time: m.time,
            peer: u32::try_from(position).unwrap_or(u32::MAX),
            tls,
            id: m.id.clone(),
        });
        if due {
            self.apply_due_steps(false);
        }
    }

    /// Applies, in time order, the peer steps the reorder buffer releases (all of them at
    /// the end): a TLS message closes the peer's plaintext window as a downgrade; a
    /// plaintext message after a TLS one opens or extends it.
    fn apply_due_steps(&mut self, all: bool) {
        let mut due = std::mem::take(&mut self.due_scratch);
        self.in_order.release(all, &mut due);
        for step in due.drain(..) {
            let slot = usize::try_from(step.peer)
                .ok()
                .and_then(|p| self.peers.entries.get(p))
                .map(|(_, p)| p.downgrade_slot);
            let Some(state) = slot
                .and_then(|s| usize::try_from(s).ok())
                .and_then(|s| self.downgrade_states.get_mut(s))
            else {
                continue;
            };
            // A step placed late (older than the reorder buffer) never makes a window that
            // contradicts itself: plaintext before the last TLS message opens none, and TLS
            // before a window's first plaintext message does not close it.
            let last_tls_time = state.last_tls.as_ref().map(|t| t.0);
            if last_tls_time.is_some_and(|t| step.time < t)
                && (!step.tls || state.window.as_ref().is_some_and(|w| step.time < w.first.0))
            {
                continue;
            }
            if step.tls {
                if let Some(window) = state.window.take() {
                    let peers = &self.peers.entries;
                    push_capped(
                        &mut self.downgrades,
                        || downgrade(peers, *window, true),
                        &mut self.omitted.downgrades,
                    );
                }
                state.last_tls = Some((step.time, step.id, step.peer));
            } else if let Some((time, id, tls_peer)) = &state.last_tls {
                match &mut state.window {
                    Some(w) => {
                        w.last = (step.time, step.id);
                        w.count += 1;
                    }
                    None => {
                        state.window = Some(Box::new(Window {
                            last_tls: (*time, id.clone()),
                            first: (step.time, step.id.clone()),
                            last: (step.time, step.id),
                            count: 1,
                            peers: (*tls_peer, step.peer),
                        }));
                    }
                }
            }
        }
        self.due_scratch = due;
    }

    fn next_hop_figures(&self) -> Vec<NextHopFigures> {
        let mut hops: Vec<NextHopFigures> = self
            .next_hops
            .entries
            .iter()
            .map(|(domain, state)| NextHopFigures {
                domain: String::from(&**domain),
                mail: state.mail.figures(),
                relays: Some(state.relays.figures()),
            })
            .collect();
        // Domains are distinct: an unstable sort gives the same order, with fewer steps.
        hops.sort_unstable_by(|a, b| {
            b.mail
                .messages
                .cmp(&a.mail.messages)
                .then_with(|| a.domain.cmp(&b.domain))
        });
        hops
    }

    /// The relays, spellings of one host on one port (`MX.example`, `mx.example.`) counted
    /// as one, most messages first, each with the next-hop domains whose mail went to it.
    fn relay_figures(&self) -> (Vec<RelayHostFigures>, RelaysOmitted) {
        let mut omitted = self.relays_omitted;
        // By id: the relay's host and port, and the mail of all its spellings.
        let mut keys: Vec<(String, Option<u16>)> =
            vec![(String::new(), None); self.relay_ids.len()];
        for (key, place) in &self.relay_ids {
            if let Some(k) = usize::try_from(place.id)
                .ok()
                .and_then(|id| keys.get_mut(id))
            {
                k.clone_from(key);
            }
        }
        let mut tallies: Vec<Option<MailTally>> = vec![None; keys.len()];
        for (_, relay) in &self.relays.entries {
            let ours = usize::try_from(relay.id)
                .ok()
                .and_then(|id| tallies.get_mut(id));
            match ours {
                Some(Some(ours)) => ours.merge(&relay.mail),
                Some(ours) => *ours = Some(relay.mail.clone()),
                None => omitted.no_host_messages += relay.mail.messages,
            }
        }
        // `via` holds each relay once, however many spellings of it the domain's mail named.
        let mut domains = vec![0u64; keys.len()];
        for (_, hop) in &self.next_hops.entries {
            for &id in &hop.via {
                if let Some(n) = usize::try_from(id).ok().and_then(|id| domains.get_mut(id)) {
                    *n += 1;
                }
            }
        }
        // Every id is some spelling's: each has its tally.
        let mut relays: Vec<RelayHostFigures> = keys
            .into_iter()
            .zip(tallies)
            .zip(domains)
            .filter_map(|((key, tally), domains)| Some(((key, tally?), domains)))
            .map(|(((host, port), mail), domains)| RelayHostFigures {
                host,
                port,
                mail: mail.figures(),
                domains,
            })
            .collect();
        // Host and port are distinct after merging: an unstable sort gives the same order.
        relays.sort_unstable_by(|a, b| {
            b.mail
                .messages
                .cmp(&a.mail.messages)
                .then_with(|| a.host.cmp(&b.host))
                .then_with(|| a.port.cmp(&b.port))
        });
        (relays, omitted)
    }

    /// The figures, with open downgrade windows closed as "still plaintext".
    pub fn finish(mut self) -> Figures {
        self.apply_due_steps(true);
        for state in &mut self.downgrade_states {
            if let Some(window) = state.window.take() {
                let peers = &self.peers.entries;
                push_capped(
                    &mut self.downgrades,
                    || downgrade(peers, *window, false),
                    &mut self.omitted.downgrades,
                );
            }
        }
        let mut peers = Vec::with_capacity(self.peers.entries.len());
        for (key, state) in &mut self.peers.entries {
            peers.push(PeerFigures {
                direction: key.direction,
                hostname: key.hostname.as_deref().map(str::to_owned),
                ip: key.ip.map(ip_text),
                domain: registered_domain(key.hostname.as_deref(), key.ip),
                messages: state.messages,
                tls_messages: state.tls,
                plain_messages: state.plain,
                unknown_messages: state.unknown,
                tls_share: share(state.tls, state.messages),
                versions: {
                    let mut v = BTreeMap::new();
                    state.versions.add_to(&mut v);
                    v
                },
                first_seen: time_text(state.first),
                last_seen: time_text(state.last),
            });
        }
        // Peer keys are distinct: an unstable sort gives the same order, with fewer steps.
        peers.sort_unstable_by(|a, b| {
            b.messages.cmp(&a.messages).then_with(|| {
                (a.direction, &a.hostname, &a.ip).cmp(&(b.direction, &b.hostname, &b.ip))
            })
        });
        self.downgrades
            .sort_by(|a, b| a.first_plain.cmp(&b.first_plain));

        for f in [
            &mut self.inbound,
            &mut self.outbound,
            &mut self.internal_inbound,
            &mut self.internal_outbound,
        ] {
            f.finish();
        }
        let top_plaintext = self.top_plaintext(&peers);
        // The addresses and names of peers that used TLS, gathered once rather than searched
        // for each anomaly.
        let mut tls_ips = HashSet::new();
        let mut tls_names = HashSet::new();
        if !(self.starttls_failures.is_empty() && self.stripping_traces.is_empty()) {
            tls_ips.reserve(self.peers.entries.len());
            tls_names.reserve(self.peers.entries.len());
            for (k, _) in self.peers.entries.iter().filter(|(_, s)| s.tls > 0) {
                tls_ips.extend(k.ip);
                tls_names.extend(k.hostname.as_deref());
            }
        }
        let peer_uses_tls = |a: &AnomalyRecord| {
            a.peer.ip.is_some_and(|ip| tls_ips.contains(&ip))
                || a.peer
                    .hostname
                    .as_deref()
                    .is_some_and(|name| tls_names.contains(name))
        };
        let figure = |a: &AnomalyRecord| AnomalyFigure {
            time: time_text(a.time),
            direction: a.direction,
            hostname: a.peer.hostname.as_deref().map(str::to_owned),
            ip: a.peer.ip.map(ip_text),
            evidence: a.evidence.clone(),
            peer_uses_tls: peer_uses_tls(a),
        };
        let starttls_failures: Vec<AnomalyFigure> =
            self.starttls_failures.iter().map(figure).collect();
        let stripping_traces: Vec<AnomalyFigure> =
            self.stripping_traces.iter().map(figure).collect();
        let period =
            |map: &BTreeMap<i64, PeriodCounts>, seconds: i64, hourly: bool| -> Vec<PeriodFigures> {
                map.iter()
                    .map(|(k, c)| {
                        let text = time_text(k * seconds);
                        PeriodFigures {
                            period: if hourly {
                                text[..13].to_owned()
                            } else {
                                text[..10].to_owned()
                            },
                            inbound_messages: c.inbound,
                            inbound_tls: c.inbound_tls,
                            inbound_share: share(c.inbound_tls, c.inbound),
                            outbound_messages: c.outbound,
                            outbound_tls: c.outbound_tls,
                            outbound_share: share(c.outbound_tls, c.outbound),
                        }
                    })
                    .collect()
            };
        let next_hops = self.next_hop_figures();
        let (relays, relays_omitted) = self.relay_figures();
        let next_hops_over_relay_cap = self
            .next_hops
            .entries
            .iter()
            .filter(|(_, hop)| hop.over_relay_cap)
            .count() as u64;
        Figures {
            first: self.first.map(time_text),
            last: self.last.map(time_text),
            inbound: self.inbound.clone(),
            outbound: self.outbound.clone(),
            internal_inbound: self.internal_inbound.clone(),
            internal_outbound: self.internal_outbound.clone(),
            daily: period(self.days.finish(), 86_400, false),
            hourly: period(self.hours.finish(), 3600, true),
            peers,
            top_plaintext,
            downgrades: std::mem::take(&mut self.downgrades),
            starttls_failures,
            stripping_traces,
            omitted: self.omitted,
            outside_window: self.outside_window,
            next_hops,
            next_hops_omitted: self.next_hops_omitted,
            relays,
            relays_omitted,
            next_hops_over_relay_cap,
        }
    }

    fn top_plaintext(&self, peers: &[PeerFigures]) -> Vec<PlaintextPeer> {
        let mut out = Vec::new();
        for (direction, figures) in [
            (Direction::Inbound, &self.inbound),
            (Direction::Outbound, &self.outbound),
        ] {
            let mut by_domain: HashMap<&str, u64> = HashMap::new();
            for p in peers
                .iter()
                .filter(|p| p.direction == direction && p.plain_messages > 0)
            {
                *by_domain.entry(p.domain.as_str()).or_default() += p.plain_messages;
            }
            let mut domains: Vec<(&str, u64)> = by_domain.into_iter().collect();
            domains.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let mut fixed = 0;
            for (domain, plain) in domains.into_iter().take(self.options.top) {
                fixed += plain;
                out.push(PlaintextPeer {
                    direction,
                    domain: domain.to_owned(),
                    plain_messages: plain,
                    cumulative_plain_share: share(fixed, figures.messages),
                    tls_share_if_fixed: share(figures.tls_messages + fixed, figures.messages),
                });
            }
        }
        out
    }
}

/// Lists the downgrade `item` makes while the list has room (a full list only counts it, so
/// the texts of an omitted downgrade are never made).
fn push_capped(list: &mut Vec<Downgrade>, item: impl FnOnce() -> Downgrade, omitted: &mut u64) {
    if list.len() < MAX_LISTED {
        list.push(item());
    } else {
        *omitted += 1;
    }
}

/// The downgrade of window `w`, shown with the peer of its first plaintext message, or the
/// name its last TLS message came with when that one has none (`unknown[IP]`).
fn downgrade(peers: &[(PeerKey, PeerState)], w: Window, tls_resumed: bool) -> Downgrade {
    let key = |p: u32| {
        usize::try_from(p)
            .ok()
            .and_then(|p| peers.get(p))
            .map(|(k, _)| k)
    };
    let (tls_peer, plain_peer) = (key(w.peers.0), key(w.peers.1));
    let direction = plain_peer.map_or(Direction::Inbound, |k| k.direction);
    let hostname = plain_peer
        .and_then(|k| k.hostname.as_deref())
        .or_else(|| tls_peer.and_then(|k| k.hostname.as_deref()));
    let ip = plain_peer
        .and_then(|k| k.ip)
        .or_else(|| tls_peer.and_then(|k| k.ip));
    Downgrade {
        direction,
        hostname: hostname.map(str::to_owned),
        ip: ip.map(ip_text),
        domain: registered_domain(hostname, ip),
        last_tls: time_text(w.last_tls.0),
        last_tls_id: String::from(&*w.last_tls.1),
        first_plain: time_text(w.first.0),
        first_plain_id: String::from(&*w.first.1),
        last_plain: time_text(w.last.0),
        last_plain_id: String::from(&*w.last.1),
        plain_messages: w.count,
        tls_resumed,
    }
}

/// The registered domain of a host name (`mail-yw1.google.com` → `google.com`), or the IP.
pub fn registered_domain(hostname: Option<&str>, ip: Option<IpAddr>) -> String {
    if let Some(name) = hostname {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(domain) = psl::domain_str(&lower) {
            return domain.to_owned();
        }
        return lower;
    }
    ip.map(ip_text).unwrap_or_else(|| "unknown".to_owned())
}

/// An address as its `Display` writes it; an IPv4 address without the formatting machinery
/// (about 1,300 instructions a call).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        let width = match octet {
            0..=9 => 1,
            10..=99 => 2,
            100.. => 3,
        };
        push_digits(&mut text, u32::from(octet), width);
    }
    text
}

/// RFC 3339 in UTC, to the second (`2026-11-22T13:24:13Z`).
pub fn time_text(t: UnixTime) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let Some(year) = u32::try_from(y).ok().filter(|&year| year <= 9999) else {
        // A year with a sign or more than four digits: rare, `format!` pads it.
        return format!("{y:04}-{m:02}-{d:02}T{hour:02}:{minute:02}:{second:02}Z");
    };
    // Digits written into a template: `format!` costs about 2,600 instructions a call, a
    // character pushed at a time about 500, and the figures of a busy log hold tens of
    // thousands of times.
    let mut text = *b"0000-00-00T00:00:00Z";
    // 0..=59 after the `rem_euclid` above.
    let part = |n: i64| u32::try_from(n).unwrap_or(0);
    for (at, n) in [
        (0..4, year),
        (5..7, m),
        (8..10, d),
        (11..13, part(hour)),
        (14..16, part(minute)),
        (17..19, part(second)),
    ] {
        if let Some(digits) = text.get_mut(at) {
            put_digits(digits, n);
        }
    }
    // ASCII only, so always valid: the check is over 20 bytes.
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

/// Writes the last `digits.len()` decimal digits of `n` into `digits`, zero-padded.
fn put_digits(digits: &mut [u8], mut n: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Appends the last `width` (up to 4) decimal digits of `n`, zero-padded.
fn push_digits(text: &mut String, n: u32, width: usize) {
    const PLACES: [u32; 4] = [1000, 100, 10, 1];
    for place in PLACES.iter().skip(PLACES.len().saturating_sub(width)) {
        text.push(char::from(b'0' + (n / place % 10) as u8));
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mta, TlsInfo};

    /// Records arrive in the order parsers emit them, which is not always log time: the
    /// downgrade windows must come out as in time order, within the reorder lag.
    #[test]
    fn downgrades_follow_log_time_not_arrival_order() {
        let day = 20_414 * 86_400;
        // (arrival order of (time offset, tls, id)), expected (last_tls id, first plain id,
        // last plain id, plain count, resumed) per downgrade.
        type Expected = Vec<(&'static str, &'static str, &'static str, u64, bool)>;
        type Arrivals = Vec<(i64, bool, &'static str)>;
        let cases: Vec<(&str, Arrivals, Expected)> = vec![
            (
                "plain before TLS, emitted after it: no downgrade",
                vec![(600, true, "T1"), (601, true, "T2"), (300, false, "P1")],
                vec![],
            ),
            (
                "TLS then plain, the TLS message emitted last: a downgrade still open",
                vec![(600, false, "P1"), (300, true, "T1")],
                vec![("T1", "P1", "P1", 1, false)],
            ),
            (
                "a late plain message inside a TLS stretch: a window that TLS closes",
                vec![
                    (100, true, "T1"),
                    (300, true, "T2"),
                    (900, true, "T3"),
                    (200, false, "P1"),
                ],
                vec![("T1", "P1", "P1", 1, true)],
            ),
            (
                "in order: unchanged",
                vec![
                    (100, true, "T1"),
                    (200, false, "P1"),
                    (250, false, "P2"),
                    (300, true, "T2"),
                ],
                vec![("T1", "P1", "P2", 2, true)],
            ),
            (
                "late, but TLS after it still held back: put in its place",
                vec![
                    (100, true, "T1"),
                    (REORDER_LAG_SECS + 10_000, true, "T2"),
                    (200, false, "P1"),
                ],
                vec![("T1", "P1", "P1", 1, true)],
            ),
            (
                "later than the lag behind everything held: applied when it arrives",
                vec![
                    (100, true, "T1"),
                    (REORDER_LAG_SECS + 10_000, true, "T2"),
                    (3 * REORDER_LAG_SECS + 20_000, true, "T3"),
                    (200, false, "P1"),
                ],
                // Placed when it arrives, after T2: a plaintext message older than the last
                // TLS one opens no window (it would start before the TLS it follows).
                vec![],
            ),
        ];
        for (name, arrivals, expected) in cases {
            let mut agg = Aggregator::new(AggregateOptions::default());
            for (offset, tls, id) in arrivals {
                agg.add(&msg(
                    day + offset,
                    Direction::Outbound,
                    "mx.peer.example",
                    "203.0.113.31",
                    tls,
                    id,
                ));
            }
            let got: Expected = agg
                .finish()
                .downgrades
                .iter()
                .map(|d| {
                    (
                        leak(&d.last_tls_id),
                        leak(&d.first_plain_id),
                        leak(&d.last_plain_id),
                        d.plain_messages,
                        d.tls_resumed,
                    )
                })
                .collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    /// Downgrade windows follow the address: Postfix logs `unknown[IP]` when reverse DNS
    /// fails, and such plaintext mail after TLS from the named host is a downgrade of the
    /// same peer, shown with its name.
    #[test]
    fn downgrade_windows_follow_the_address_not_the_name() {
        let day = 20_414 * 86_400;
        let mut agg = Aggregator::new(AggregateOptions::default());
        agg.add(&msg(
            day + 10,
            Direction::Inbound,
            "mail.asa.example",
            "198.51.100.90",
            true,
            "T1",
        ));
        let mut unknown = msg(
            day + 20,
            Direction::Inbound,
            "x",
            "198.51.100.90",
            false,
            "P1",
        );
        if let Record::Message(m) = &mut unknown {
            m.peer.hostname = None;
        }
        agg.add(&unknown);
        let f = agg.finish();
        assert_eq!(f.downgrades.len(), 1, "{:#?}", f.downgrades);
        let d = &f.downgrades[0];
        assert_eq!(d.hostname.as_deref(), Some("mail.asa.example"));
        assert_eq!(d.ip.as_deref(), Some("198.51.100.90"));
        assert_eq!(
            (d.last_tls_id.as_str(), d.first_plain_id.as_str()),
            ("T1", "P1")
        );
        // The peers table still lists the two names apart.
        assert_eq!(f.peers.len(), 2);
    }

    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_owned().into_boxed_str())
    }

    fn msg(time: UnixTime, dir: Direction, host: &str, ip: &str, tls: bool, id: &str) -> Record {
        Record::Message(MessageRecord {
            mta: Mta::Postfix,
            time,
            direction: dir,
            scope: Scope::Internet,
            peer: Peer {
                hostname: Some(host.into()),
                ip: ip.parse().ok(),
            },
            transport: if tls {
                Transport::Tls(TlsInfo {
                    version: "TLSv1.3".into(),
                    cipher: "TLS_AES_256_GCM_SHA384".into(),
                    bits: Some(256),
                    key_exchange: Some("X25519".into()),
                    trust: Some(Trust::Anonymous),
                })
            } else {
                Transport::Plain
            },
            recipients: 2,
            size: Some(100),
            id: id.into(),
            status: None,
            recipient_domain: None,
            spanned_domains: None,
            port: None,
        })
    }

    #[test]
    fn shares_peers_days_and_downgrades() {
        let mut agg = Aggregator::new(AggregateOptions {
            top: 10,
            ..Default::default()
        });
        let day = 20_414 * 86_400; // 2025-11-22
        let records = [
            msg(
                day + 10,
                Direction::Inbound,
                "mx1.example.com",
                "192.0.2.1",
                true,
                "A1",
            ),
            msg(
                day + 20,
                Direction::Inbound,
                "mx1.example.com",
                "192.0.2.1",
                true,
                "A2",
            ),
            msg(
                day + 3700,
                Direction::Inbound,
                "mx1.example.com",
                "192.0.2.1",
                false,
                "A3",
            ),
            msg(
                day + 3800,
                Direction::Inbound,
                "mx1.example.com",
                "192.0.2.1",
                false,
                "A4",
            ),
            msg(
                day + 7300,
                Direction::Inbound,
                "mx1.example.com",
                "192.0.2.1",
                true,
                "A5",
            ),
            msg(
                day + 86_400,
                Direction::Inbound,
                "smtp.example.org",
                "198.51.100.7",
                false,
                "B1",
            ),
            msg(
                day + 86_500,
                Direction::Outbound,
                "mx.example.net",
                "203.0.113.9",
                true,
                "C1",
            ),
            msg(
                day + 86_600,
                Direction::Inbound,
                "localhost",
                "127.0.0.1",
                false,
                "L1",
            ),
        ];
        for r in &records {
            agg.add(r);
        }
        let f = agg.finish();
        assert_eq!(
            (
                f.inbound.messages,
                f.inbound.tls_messages,
                f.inbound.plain_messages
            ),
            (6, 3, 3)
        );
        assert_eq!(f.inbound.tls_share, 0.5);
        assert_eq!(f.inbound.recipients, 12);
        assert_eq!(f.inbound.tls.versions["TLSv1.3"], 3);
        assert_eq!(f.outbound.messages, 1);
        assert_eq!(f.internal_inbound.messages, 1, "127.0.0.1 is internal");
        assert_eq!(f.daily.len(), 2);
        assert_eq!(f.daily[0].period, "2025-11-22");
        assert_eq!(
            (f.daily[0].inbound_messages, f.daily[0].inbound_tls),
            (5, 3)
        );
        assert_eq!(f.hourly[0].period, "2025-11-22T00");
        let d = &f.downgrades;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (
                d[0].last_tls_id.as_str(),
                d[0].first_plain_id.as_str(),
                d[0].last_plain_id.as_str()
            ),
            ("A2", "A3", "A4")
        );
        assert_eq!(d[0].plain_messages, 2);
        assert!(d[0].tls_resumed);
        assert_eq!(d[0].domain, "example.com");
        // example.org never used TLS: no downgrade, but the top plaintext peer after example.com.
        let top: Vec<(&str, u64)> = f
            .top_plaintext
            .iter()
            .filter(|p| p.direction == Direction::Inbound)
            .map(|p| (p.domain.as_str(), p.plain_messages))
            .collect();
        assert_eq!(top, [("example.com", 2), ("example.org", 1)]);
        assert_eq!(f.top_plaintext[1].tls_share_if_fixed, 1.0);
    }

    #[test]
    fn periods_count_records_out_of_time_order() {
        let mut agg = Aggregator::new(AggregateOptions::default());
        let day = 20_414 * 86_400;
        for (time, tls) in [(day, true), (day + 86_400, false), (day + 10, false)] {
            agg.add(&msg(
                time,
                Direction::Inbound,
                "mx.example",
                "192.0.2.1",
                tls,
                "id",
            ));
        }
        let f = agg.finish();
        let daily: Vec<_> = f
            .daily
            .iter()
            .map(|p| (p.period.as_str(), p.inbound_messages, p.inbound_tls))
            .collect();
        assert_eq!(daily, [("2025-11-22", 2, 1), ("2025-11-23", 1, 0)]);
        assert_eq!(f.hourly.len(), 2);
    }

    #[test]
    fn downgrades_past_the_cap_are_counted() {
        let mut agg = Aggregator::new(AggregateOptions::default());
        for i in 0..MAX_LISTED + 2 {
            let host = format!("mx{i}.example");
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            for (time, tls) in [(10, true), (20, false), (30, true)] {
                agg.add(&msg(time, Direction::Inbound, &host, &ip, tls, "id"));
            }
        }
        let f = agg.finish();
        assert_eq!(f.downgrades.len(), MAX_LISTED);
        assert_eq!(f.omitted.downgrades, 2);
        assert_eq!(f.downgrades[0].hostname.as_deref(), Some("mx0.example"));
    }

    #[test]
    fn table_finds_keys_whatever_their_fast_hash() {
        let mut table: Table<u32, u32> = Table::default();
        // Every key in one cache slot, and every key in its own: the same counts.
        for fast_hash in [|_: u32| 7, |k: u32| u64::from(k) << 50] {
            table.entries.clear();
            table.index.clear();
            for _ in 0..3 {
                for k in 0..100 {
                    let count = table.get_or_add(fast_hash(k), |key| *key == k, || k, |_| Some(0));
                    *count.expect("added").1 += 1;
                }
            }
            assert_eq!(table.entries.len(), 100);
            assert!(table.entries.iter().all(|&(_, count)| count == 3));
        }
        // A value `new` leaves out is not added.
        assert!(
            table
                .get_or_add(0, |key| *key == 500, || 500, |_| None)
                .is_none()
        );
        assert!(!table.index.contains_key(&500));
    }

    #[test]
    fn window_and_internal_ranges() {
        let mut agg = Aggregator::new(AggregateOptions {
            internal: vec!["10.0.0.0/8".parse().unwrap()],
            since: Some(100),
            until: Some(200),
            top: 5,
        });
        agg.add(&msg(
            50,
            Direction::Inbound,
            "a.example",
            "192.0.2.1",
            true,
            "x",
        ));
        agg.add(&msg(
            150,
            Direction::Inbound,
            "b.example",
            "10.1.2.3",
            false,
            "y",
        ));
        agg.add(&msg(
            150,
            Direction::Inbound,
            "c.example",
            "127.0.0.2",
            false,
            "z",
        ));
        agg.add(&msg(
            250,
            Direction::Inbound,
            "d.example",
            "192.0.2.1",
            true,
            "w",
        ));
        let f = agg.finish();
        assert_eq!(f.outside_window, 2);
        assert_eq!(f.internal_inbound.messages, 1);
        assert_eq!(f.inbound.messages, 1, "127.0.0.2 is an ordinary peer");
    }

    #[test]
    fn each_anomaly_list_has_its_own_cap() {
        let mut agg = Aggregator::new(AggregateOptions {
            top: 5,
            ..Default::default()
        });
        let anomaly = |kind, time| {
            Record::Anomaly(AnomalyRecord {
                mta: Mta::Postfix,
                time,
                direction: Direction::Inbound,
                peer: Peer {
                    hostname: None,
                    ip: "192.0.2.9".parse().ok(),
                },
                kind,
                evidence: "line".into(),
            })
        };
        // A burst of stripped sessions must not crowd out the failures that follow it.
        for t in 0..1500 {
            agg.add(&anomaly(AnomalyKind::StrippingTrace, t));
        }
        for t in 0..5 {
            agg.add(&anomaly(AnomalyKind::StartTlsFailed, 2000 + t));
        }
        let f = agg.finish();
        assert_eq!(f.stripping_traces.len(), MAX_LISTED);
        assert_eq!(f.starttls_failures.len(), 5);
        assert_eq!(
            f.omitted,
            Omitted {
                downgrades: 0,
                starttls_failures: 0,
                stripping_traces: 500
            }
        );
    }

    /// An outbound delivery to `domain` over `transport` (`trusted`, `anonymous`, `plain`,
    /// `unknown`) with `status`, from `ip`.
    fn delivery(
        time: UnixTime,
        domain: Option<&str>,
        transport: &str,
        status: crate::model::DeliveryStatus,
        ip: &str,
        id: &str,
    ) -> Record {
        let Record::Message(mut m) = msg(time, Direction::Outbound, "mx.example", ip, true, id)
        else {
            unreachable!("msg makes message records")
        };
        m.transport = match (transport, m.transport) {
            ("plain", _) => Transport::Plain,
            ("unknown", _) => Transport::Unknown { hint: "test" },
            (trust, Transport::Tls(mut info)) => {
                info.trust = Some(match trust {
                    "verified" => Trust::Verified,
                    "trusted" => Trust::Trusted,
                    "untrusted" => Trust::Untrusted,
                    _ => Trust::Anonymous,
                });
                Transport::Tls(info)
            }
            (_, other) => other,
        };
        m.status = Some(status);
        m.recipient_domain = domain.map(Text::from);
        Record::Message(m)
    }

    #[test]
    fn next_hops_count_delivered_internet_mail_per_recipient_domain() {
        use crate::model::DeliveryStatus::{Bounced, Deferred, Sent};
        let mut agg = Aggregator::new(AggregateOptions {
            top: 5,
            since: Some(1000),
            ..Default::default()
        });
        let net = "192.0.2.1";
        let records = [
            delivery(1010, Some("a.example"), "verified", Sent, net, "A1"),
            delivery(1020, Some("a.example"), "plain", Sent, net, "A2"),
            delivery(1005, Some("a.example"), "anonymous", Sent, net, "A3"),
            delivery(1030, Some("a.example"), "trusted", Sent, net, "A4"),
            delivery(1040, Some("a.example"), "unknown", Sent, net, "A5"),
            delivery(1050, Some("a.example"), "plain", Sent, net, "A6"),
            // Not counted: deferred, bounced, internal, outside the window.
            delivery(1060, Some("a.example"), "plain", Deferred, net, "X1"),
            delivery(1070, Some("a.example"), "plain", Bounced, net, "X2"),
            delivery(1080, Some("a.example"), "plain", Sent, "127.0.0.1", "X3"),
            delivery(10, Some("a.example"), "plain", Sent, net, "X4"),
            delivery(1100, Some("b.example"), "trusted", Sent, net, "B1"),
            delivery(1200, Some("b.example"), "untrusted", Sent, net, "B2"),
            delivery(1300, Some("c.example"), "verified", Sent, net, "C1"),
            delivery(1300, Some("c.example"), "verified", Sent, net, "C2"),
            delivery(1400, None, "plain", Sent, net, "N1"),
        ];
        for r in &records {
            agg.add(r);
        }
        let f = agg.finish();
        let got: Vec<_> = f
            .next_hops
            .iter()
            .map(|h| {
                (
                    h.domain.as_str(),
                    h.mail.messages,
                    h.mail.tls_messages,
                    h.mail.trusted_tls_messages,
                    h.mail.plain_messages,
                    h.mail.unknown_messages,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a.example", 6, 3, 2, 2, 1),
                ("b.example", 2, 2, 1, 0, 0),
                ("c.example", 2, 2, 2, 0, 0),
            ]
        );
        let a = &f.next_hops[0];
        assert_eq!(a.mail.tls_share, 0.5);
        assert_eq!(
            (a.mail.first_seen.as_str(), a.mail.last_seen.as_str()),
            (time_text(1005).as_str(), time_text(1050).as_str())
        );
        let plain = a.mail.plain.as_ref().expect("a.example had plaintext mail");
        let ids = |s: &MessageSample| s.sample.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            (plain.first.id.as_str(), plain.last.id.as_str()),
            ("A2", "A6")
        );
        assert_eq!(ids(plain), ["A2", "A6"]);
        let untrusted = a.mail.untrusted_tls.as_ref().expect("A3 was anonymous");
        assert_eq!(ids(untrusted), ["A3"]);
        assert_eq!(f.next_hops[2].mail.plain, None);
        assert_eq!(f.next_hops[2].mail.untrusted_tls, None);
        assert_eq!(
            f.next_hops_omitted,
            NextHopsOmitted {
                no_domain_messages: 1,
                over_cap_messages: 0
            }
        );
        // The per-domain messages and the omitted ones add up to the outbound figures.
        let listed: u64 = f.next_hops.iter().map(|h| h.mail.messages).sum();
        assert_eq!(listed + 1, f.outbound.messages);
    }

    /// A transaction whose recipients span several domains (to a relay host) counts once for
    /// each of them, with the relay among each one's relays; only one that names no domain
    /// at all is omitted.
    #[test]
    fn a_transaction_spanning_domains_counts_for_each() {
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        let spanning = |time, domains: &[&str], transport, id| {
            let Record::Message(mut m) = delivery(time, None, transport, Sent, "192.0.2.25", id)
            else {
                unreachable!("delivery makes message records")
            };
            m.peer.hostname = Some("smtp.isp.example".into());
            m.spanned_domains = Some(domains.iter().map(|d| Text::from(*d)).collect());
            Record::Message(m)
        };
        agg.add(&delivery(
            1000,
            Some("a.example"),
            "trusted",
            Sent,
            "192.0.2.1",
            "A1",
        ));
        agg.add(&spanning(
            1010,
            &["a.example", "b.example"],
            "trusted",
            "S1",
        ));
        agg.add(&spanning(1020, &["b.example", "c.example"], "plain", "S2"));
        agg.add(&delivery(1030, None, "plain", Sent, "192.0.2.1", "N1"));
        let f = agg.finish();
        let relays = |h: &NextHopFigures| {
            h.relays
                .as_ref()
                .map(|r| {
                    r.hosts
                        .iter()
                        .map(|c| (c.host.clone(), c.messages))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let got: Vec<_> = f
            .next_hops
            .iter()
            .map(|h| {
                (
                    h.domain.as_str(),
                    h.mail.messages,
                    h.mail.tls_messages,
                    h.mail.plain_messages,
                    relays(h),
                )
            })
            .collect();
        let isp = |n| ("smtp.isp.example".to_string(), n);
        assert_eq!(
            got,
            [
                (
                    "a.example",
                    2,
                    2,
                    0,
                    vec![("mx.example".to_string(), 1), isp(1)]
                ),
                ("b.example", 2, 1, 1, vec![isp(2)]),
                ("c.example", 1, 0, 1, vec![isp(1)]),
            ]
        );
        for h in &f.next_hops {
            let r = h.relays.as_ref().expect("relays recorded");
            assert_eq!(r.messages(), Some(h.mail.messages), "{}", h.domain);
        }
        let c = &f.next_hops[2];
        let plain = c.mail.plain.as_ref().expect("S2 was plaintext");
        assert_eq!(plain.first.id, "S2");
        assert_eq!(f.next_hops_omitted.no_domain_messages, 1);
        assert_eq!(f.outbound.messages, 4);
    }

    #[test]
    fn next_hop_samples_and_domains_are_capped() {
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        for i in 0..(NEXT_HOP_SAMPLE as i64 + 3) {
            agg.add(&delivery(
                100 - i,
                Some("many.example"),
                "plain",
                Sent,
                "192.0.2.1",
                &format!("P{i}"),
            ));
        }
        for i in 0..MAX_NEXT_HOPS - 1 {
            let domain = format!("d{i}.example");
            agg.add(&delivery(
                200,
                Some(&domain),
                "trusted",
                Sent,
                "192.0.2.1",
                "D",
            ));
        }
        // A domain already counted still counts; a new one is omitted.
        agg.add(&delivery(
            300,
            Some("many.example"),
            "plain",
            Sent,
            "192.0.2.1",
            "LAST",
        ));
        agg.add(&delivery(
            300,
            Some("new.example"),
            "plain",
            Sent,
            "192.0.2.1",
            "NEW",
        ));
        let f = agg.finish();
        assert_eq!(f.next_hops.len(), MAX_NEXT_HOPS);
        assert_eq!(f.next_hops_omitted.over_cap_messages, 1);
        let many = &f.next_hops[0];
        assert_eq!(
            (many.domain.as_str(), many.mail.plain_messages),
            ("many.example", NEXT_HOP_SAMPLE as u64 + 4)
        );
        let plain = many.mail.plain.as_ref().expect("plaintext sample");
        assert_eq!(plain.sample.len(), NEXT_HOP_SAMPLE);
        // First and last by time, not by log order.
        let last_early = format!("P{}", NEXT_HOP_SAMPLE + 2);
        assert_eq!(
            (plain.first.id.as_str(), plain.last.id.as_str()),
            (last_early.as_str(), "LAST")
        );
    }

    /// `relays` counts each delivery transaction once for the relay host and port it went
    /// to, however many domains it carried (`next_hops` counts it for each); spellings of a
    /// host are one relay, a port another; deliveries without a host, deferred ones and
    /// internal hops are not in it.
    #[test]
    fn relays_count_each_transaction_once() {
        use crate::model::DeliveryStatus::{Deferred, Sent};
        let mut agg = Aggregator::new(AggregateOptions::default());
        // (time, domains, transport, relay host (None: only the address), port, id, status)
        type Delivery<'a> = (
            UnixTime,
            &'a [&'a str],
            &'a str,
            Option<&'a str>,
            Option<u16>,
            &'a str,
            crate::model::DeliveryStatus,
        );
        let isp = Some("smtp.isp.example");
        let deliveries: &[Delivery] = &[
            (
                1000,
                &["a.example", "b.example", "c.example"],
                "trusted",
                isp,
                Some(25),
                "T1",
                Sent,
            ),
            (
                1010,
                &["a.example", "b.example", "c.example"],
                "anonymous",
                isp,
                Some(25),
                "T2",
                Sent,
            ),
            (
                1020,
                &["b.example", "c.example"],
                "plain",
                isp,
                Some(25),
                "P1",
                Sent,
            ),
            // Another spelling of the same host: the same relay.
            (
                1030,
                &["c.example"],
                "unknown",
                Some("SMTP.isp.example."),
                Some(25),
                "U1",
                Sent,
            ),
            // The same host on another port: another relay.
            (
                1040,
                &["a.example", "d.example"],
                "trusted",
                isp,
                Some(587),
                "S1",
                Sent,
            ),
            (
                1050,
                &["a.example"],
                "trusted",
                Some("mx.a.example"),
                Some(25),
                "M1",
                Sent,
            ),
            // No name logged: the address.
            (1060, &["e.example"], "plain", None, Some(25), "N1", Sent),
            // Not delivered: not counted.
            (
                1070,
                &["a.example", "b.example"],
                "plain",
                isp,
                Some(25),
                "D1",
                Deferred,
            ),
        ];
        for &(time, domains, transport, host, port, id, status) in deliveries {
            let domain = (domains.len() == 1).then(|| domains[0]);
            let Record::Message(mut m) =
                delivery(time, domain, transport, status, "192.0.2.25", id)
            else {
                unreachable!("delivery makes message records")
            };
            m.peer.hostname = host.map(Text::from);
            m.port = port;
            if domains.len() > 1 {
                m.spanned_domains = Some(domains.iter().map(|d| Text::from(*d)).collect());
            }
            agg.add(&Record::Message(m));
        }
        // Neither a name nor an address: counted apart.
        let Record::Message(mut m) = delivery(1080, Some("f.example"), "plain", Sent, "", "X1")
        else {
            unreachable!("delivery makes message records")
        };
        m.peer.hostname = None;
        agg.add(&Record::Message(m));
        // An internal hop is no relay.
        let Record::Message(mut m) =
            delivery(1090, Some("g.example"), "plain", Sent, "127.0.0.1", "L1")
        else {
            unreachable!("delivery makes message records")
        };
        m.port = Some(10025);
        agg.add(&Record::Message(m));

        let f = agg.finish();
        assert_eq!(f.outbound.messages, 8);
        let per_domain: u64 = f.next_hops.iter().map(|h| h.mail.messages).sum();
        assert_eq!(
            per_domain, 14,
            "a transaction counts for each of its domains there"
        );
        let got: Vec<_> = f
            .relays
            .iter()
            .map(|r| {
                (
                    r.host.as_str(),
                    r.port,
                    r.mail.messages,
                    r.mail.tls_messages,
                    r.mail.trusted_tls_messages,
                    r.mail.plain_messages,
                    r.mail.unknown_messages,
                    r.domains,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("smtp.isp.example", Some(25), 4, 2, 1, 1, 1, 3),
                ("192.0.2.25", Some(25), 1, 0, 0, 1, 0, 1),
                ("mx.a.example", Some(25), 1, 1, 1, 0, 0, 1),
                ("smtp.isp.example", Some(587), 1, 1, 1, 0, 0, 2),
            ]
        );
        assert_eq!(
            f.relays_omitted,
            RelaysOmitted {
                no_host_messages: 1,
                over_cap_messages: 0
            }
        );
        let listed: u64 = f.relays.iter().map(|r| r.mail.messages).sum();
        assert_eq!(
            listed + f.relays_omitted.no_host_messages,
            f.outbound.messages
        );
        let isp = &f.relays[0];
        assert_eq!(
            (
                isp.mail.first_seen.as_str(),
                isp.mail.last_seen.as_str(),
                isp.mail.tls_share
            ),
            ("1970-01-01T00:16:40Z", "1970-01-01T00:17:10Z", 0.5)
        );
        let ids = |s: &Option<MessageSample>| {
            s.as_ref()
                .map(|s| s.sample.iter().map(|m| m.id.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(ids(&isp.mail.plain), ["P1"]);
        assert_eq!(ids(&isp.mail.untrusted_tls), ["T2"]);
        assert_eq!(ids(&f.relays[2].mail.plain), Vec::<String>::new());
        assert_eq!(
            serde_json::to_value(&f.relays[3]).unwrap(),
            serde_json::json!({
                "host": "smtp.isp.example", "port": 587, "messages": 1, "tls_messages": 1,
                "trusted_tls_messages": 1, "plain_messages": 0, "unknown_messages": 0,
                "tls_share": 1.0, "domains": 2, "first_seen": "1970-01-01T00:17:20Z",
                "last_seen": "1970-01-01T00:17:20Z"
            })
        );
    }

    /// A peer's deliveries find their relay through the peer (its last relay and port): one
    /// that changes port, or whose address another name shares, is still counted right.
    #[test]
    fn a_peer_that_changes_port_counts_for_each_relay() {
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        for (host, ip, port) in [
            ("smtp.isp.example", "192.0.2.25", 25),
            ("smtp.isp.example", "192.0.2.25", 587),
            ("smtp.isp.example", "192.0.2.25", 25),
            ("smtp.isp.example", "192.0.2.26", 25),
            ("other.isp.example", "192.0.2.25", 25),
            ("smtp.isp.example", "192.0.2.25", 587),
            ("smtp.isp.example", "192.0.2.25", 587),
        ] {
            let Record::Message(mut m) = delivery(100, Some("a.example"), "trusted", Sent, ip, "R")
            else {
                unreachable!("delivery makes message records")
            };
            m.peer.hostname = Some(host.into());
            m.port = Some(port);
            agg.add(&Record::Message(m));
        }
        let f = agg.finish();
        let got: Vec<_> = f
            .relays
            .iter()
            .map(|r| (r.host.as_str(), r.port, r.mail.messages))
            .collect();
        assert_eq!(
            got,
            [
                ("smtp.isp.example", Some(25), 3),
                ("smtp.isp.example", Some(587), 3),
                ("other.isp.example", Some(25), 1),
            ]
        );
    }

    /// Spellings of one relay merge their samples: the earliest first, the latest last, and
    /// the earliest few.
    #[test]
    fn relay_spellings_merge_their_samples() {
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        for (i, host) in ["relay.example", "RELAY.example"].into_iter().enumerate() {
            for j in 0..NEXT_HOP_SAMPLE as i64 {
                // The second spelling's messages are the earlier ones.
                let time = 1000 - 100 * i as i64 + j;
                let Record::Message(mut m) = delivery(
                    time,
                    Some("a.example"),
                    "plain",
                    Sent,
                    "192.0.2.25",
                    &format!("{host}{j}"),
                ) else {
                    unreachable!("delivery makes message records")
                };
                m.peer.hostname = Some(host.into());
                agg.add(&Record::Message(m));
            }
        }
        let f = agg.finish();
        assert_eq!(f.relays.len(), 1);
        let plain = f.relays[0].mail.plain.as_ref().expect("plaintext sample");
        let ids: Vec<&str> = plain.sample.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "RELAY.example0",
                "RELAY.example1",
                "RELAY.example2",
                "RELAY.example3",
                "RELAY.example4"
            ]
        );
        assert_eq!(
            (plain.first.id.as_str(), plain.last.id.as_str()),
            ("RELAY.example0", "relay.example4")
        );
        assert_eq!(f.relays[0].mail.messages, 2 * NEXT_HOP_SAMPLE as u64);
    }

    /// `relays[].domains` counts every next-hop domain whose mail went to the relay, not only
    /// the domains naming it among their first [`crate::next_hop_relays::NEXT_HOP_RELAYS`]
    /// hosts; a domain counts once for a relay it reached under two spellings; a domain's
    /// relays after its first [`MAX_RELAYS_PER_NEXT_HOP`] do not count it.
    #[test]
    fn relay_domains_count_every_domain_that_went_there() {
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        let to = |agg: &mut Aggregator, domain: &str, host: &str, ip: &str| {
            let Record::Message(mut m) = delivery(100, Some(domain), "trusted", Sent, ip, "Q")
            else {
                unreachable!("delivery makes message records")
            };
            m.peer.hostname = Some(host.into());
            agg.add(&Record::Message(m));
        };
        // big.example: six MX hosts (mx1 twice); next_hops names the first four.
        for i in 1..=6 {
            let (host, ip) = (format!("mx{i}.big.example"), format!("192.0.2.{i}"));
            to(&mut agg, "big.example", &host, &ip);
        }
        to(&mut agg, "big.example", "mx1.big.example", "192.0.2.1");
        // other.example: mx6 under two spellings, and mx5.
        to(&mut agg, "other.example", "mx6.big.example", "192.0.2.6");
        to(&mut agg, "other.example", "MX6.big.example.", "192.0.2.6");
        to(&mut agg, "other.example", "mx5.big.example", "192.0.2.5");
        // wide.example: one relay more than a domain's relays remembered.
        for i in 0..=MAX_RELAYS_PER_NEXT_HOP {
            to(
                &mut agg,
                "wide.example",
                &format!("w{i:02}.wide.example"),
                "198.51.100.1",
            );
        }
        let f = agg.finish();
        let big = f.next_hops.iter().find(|h| h.domain == "big.example");
        let big = big
            .and_then(|h| h.relays.as_ref())
            .expect("big.example's relays");
        assert_eq!((big.hosts.len(), big.other_messages), (4, 2));
        let domains = |host: &str| {
            f.relays
                .iter()
                .find(|r| r.host == host)
                .map(|r| (r.mail.messages, r.domains))
        };
        let got: Vec<_> = (1..=6)
            .map(|i| domains(&format!("mx{i}.big.example")))
            .collect();
        assert_eq!(
            got,
            [
                Some((2, 1)),
                Some((1, 1)),
                Some((1, 1)),
                Some((1, 1)),
                Some((2, 2)),
                Some((3, 2)),
            ]
        );
        assert_eq!(domains("w00.wide.example"), Some((1, 1)));
        let last = format!("w{MAX_RELAYS_PER_NEXT_HOP:02}.wide.example");
        assert_eq!(domains(&last), Some((1, 0)));
    }

    /// Each next-hop domain remembers its first [`MAX_RELAYS_PER_NEXT_HOP`] relays for
    /// `relays[].domains`, by relay, not by spelling (`MX.example`, `mx.example.` take one
    /// place; an address logged in two IPv6 forms is one address); a domain whose mail went to
    /// a relay past them is counted in `next_hops_over_relay_cap`, once.
    #[test]
    fn relay_domains_stop_at_the_per_domain_cap_and_say_so() {
        use crate::model::DeliveryStatus::Sent;
        const CAP: usize = MAX_RELAYS_PER_NEXT_HOP;
        /// A delivery: domain, host name (`None`: the address alone), address, port.
        type To = (&'static str, Option<String>, &'static str, Option<u16>);
        let named = |domain, host: String, port| (domain, Some(host), "192.0.2.1", port);
        // `domain`'s mail to `r{i}.example` for each `i`, on port 25.
        let spread = |domain, range: std::ops::Range<usize>| -> Vec<To> {
            range
                .map(|i| named(domain, format!("r{i:02}.example"), Some(25)))
                .collect()
        };
        /// A relay expected: host, port, messages, domains.
        type Want = (&'static str, Option<u16>, u64, u64);
        let rows: Vec<(&str, Vec<To>, Vec<Want>, u64)> = vec![
            (
                "as many relays as remembered: all count the domain",
                spread("a.example", 0..CAP),
                vec![
                    ("r00.example", Some(25), 1, 1),
                    ("r31.example", Some(25), 1, 1),
                ],
                0,
            ),
            (
                "one more: it does not, and the domain is over the cap",
                spread("a.example", 0..CAP + 1),
                vec![
                    ("r31.example", Some(25), 1, 1),
                    ("r32.example", Some(25), 1, 0),
                ],
                1,
            ),
            (
                "two spellings of one relay take one place",
                [
                    vec![named("a.example", "R00.Example".into(), Some(25))],
                    vec![named("a.example", "r00.example.".into(), Some(25))],
                    spread("a.example", 0..CAP),
                ]
                .concat(),
                vec![
                    ("r00.example", Some(25), 3, 1),
                    ("r31.example", Some(25), 1, 1),
                ],
                0,
            ),
            (
                "an address in two IPv6 forms is one relay",
                [
                    vec![("a.example", None, "2001:db8::25", Some(25))],
                    vec![("a.example", None, "2001:DB8:0:0::25", Some(25))],
                    spread("a.example", 1..CAP),
                ]
                .concat(),
                vec![
                    ("2001:db8::25", Some(25), 2, 1),
                    ("r31.example", Some(25), 1, 1),
                ],
                0,
            ),
            (
                "one host on two ports is two relays",
                [
                    vec![named("a.example", "r00.example".into(), Some(587))],
                    spread("a.example", 0..CAP),
                ]
                .concat(),
                vec![
                    ("r00.example", Some(587), 1, 1),
                    ("r00.example", Some(25), 1, 1),
                    ("r30.example", Some(25), 1, 1),
                    ("r31.example", Some(25), 1, 0),
                ],
                1,
            ),
            (
                "past the cap: remembered relays still count once, the domain is counted once",
                [
                    spread("a.example", 0..CAP + 3),
                    spread("a.example", 0..CAP + 3),
                ]
                .concat(),
                vec![
                    ("r00.example", Some(25), 2, 1),
                    ("r31.example", Some(25), 2, 1),
                    ("r34.example", Some(25), 2, 0),
                ],
                1,
            ),
            (
                "each domain has its own cap; one under it still counts",
                [
                    spread("a.example", 0..CAP + 1),
                    spread("b.example", 0..CAP + 2),
                    spread("c.example", 10..CAP + 2),
                ]
                .concat(),
                vec![
                    ("r00.example", Some(25), 2, 2),
                    ("r10.example", Some(25), 3, 3),
                    ("r32.example", Some(25), 3, 1),
                    ("r33.example", Some(25), 2, 1),
                ],
                2,
            ),
        ];
        for (name, deliveries, want, over_cap) in rows {
            let mut agg = Aggregator::new(AggregateOptions::default());
            for (domain, host, ip, port) in &deliveries {
                let Record::Message(mut m) = delivery(100, Some(domain), "trusted", Sent, ip, "Q")
                else {
                    unreachable!("delivery makes message records")
                };
                m.peer.hostname = host.as_deref().map(Text::from);
                m.port = *port;
                agg.add(&Record::Message(m));
            }
            let f = agg.finish();
            for (host, port, messages, domains) in want {
                let got = f
                    .relays
                    .iter()
                    .find(|r| r.host == host && r.port == port)
                    .map(|r| (r.mail.messages, r.domains));
                assert_eq!(got, Some((messages, domains)), "{name}: {host} {port:?}");
            }
            assert_eq!(f.next_hops_over_relay_cap, over_cap, "{name}");
            let json = serde_json::to_value(&f).expect("figures as JSON");
            assert_eq!(json["next_hops_over_relay_cap"], over_cap, "{name}");
        }
    }

    /// [`MailFigures`] is flattened into next-hop and relay entries: their JSON keys are those
    /// of earlier reports, which read back (whatever the key order; `domains`, `plain`,
    /// `untrusted_tls` and `relays` may be absent), and what `report` writes reads back equal.
    #[test]
    fn mail_figures_keep_their_keys_and_read_back() {
        let mail = r#""messages": 3, "tls_messages": 2, "trusted_tls_messages": 1,
            "plain_messages": 1, "unknown_messages": 0, "tls_share": 0.6667,
            "first_seen": "2026-12-03T09:01:00Z", "last_seen": "2026-12-03T09:03:00Z""#;
        let sample = r#"{"first": {"time": "2026-12-03T09:02:00Z", "id": "P1"},
            "last": {"time": "2026-12-03T09:02:00Z", "id": "P1"},
            "sample": [{"time": "2026-12-03T09:02:00Z", "id": "P1"}]}"#;
        let want_mail = MailFigures {
            messages: 3,
            tls_messages: 2,
            trusted_tls_messages: 1,
            plain_messages: 1,
            unknown_messages: 0,
            tls_share: 0.6667,
            first_seen: "2026-12-03T09:01:00Z".into(),
            last_seen: "2026-12-03T09:03:00Z".into(),
            plain: None,
            untrusted_tls: None,
        };
        let with_plain = MailFigures {
            plain: serde_json::from_str(sample).ok(),
            ..want_mail.clone()
        };
        let relay = |domains| RelayHostFigures {
            host: "smtp.isp.example".into(),
            port: Some(587),
            mail: want_mail.clone(),
            domains,
        };
        let relays = [
            (
                "the old key order: domains after tls_share",
                r#"{"host": "smtp.isp.example", "port": 587, "messages": 3, "tls_messages": 2,
                "trusted_tls_messages": 1, "plain_messages": 1, "unknown_messages": 0,
                "tls_share": 0.6667, "domains": 4, "first_seen": "2026-12-03T09:01:00Z",
                "last_seen": "2026-12-03T09:03:00Z"}"#
                    .to_owned(),
                relay(4),
            ),
            (
                "no domains: a report from before they were counted",
                format!(r#"{{"host": "smtp.isp.example", "port": 587, {mail}}}"#),
                relay(0),
            ),
            (
                "with a sample",
                format!(
                    r#"{{"host": "smtp.isp.example", "port": 587, {mail}, "plain": {sample},
                    "domains": 2}}"#
                ),
                RelayHostFigures {
                    mail: with_plain.clone(),
                    ..relay(2)
                },
            ),
        ];
        for (name, json, want) in relays {
            let got: RelayHostFigures = serde_json::from_str(&json).expect(name);
            assert_eq!(got, want, "{name}");
        }
        let hop: NextHopFigures =
            serde_json::from_str(&format!(r#"{{"domain": "a.example", {mail}}}"#))
                .expect("a next hop without relays");
        assert_eq!(
            hop,
            NextHopFigures {
                domain: "a.example".into(),
                mail: want_mail.clone(),
                relays: None,
            }
        );

        // What `report` writes: the same keys, flat, and it reads back equal.
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        agg.add(&delivery(
            100,
            Some("a.example"),
            "trusted",
            Sent,
            "192.0.2.1",
            "T1",
        ));
        agg.add(&delivery(
            200,
            Some("a.example"),
            "plain",
            Sent,
            "192.0.2.1",
            "P1",
        ));
        agg.add(&delivery(
            300,
            Some("a.example"),
            "untrusted",
            Sent,
            "192.0.2.1",
            "U1",
        ));
        let f = agg.finish();
        let mail_keys = [
            "messages",
            "tls_messages",
            "trusted_tls_messages",
            "plain_messages",
            "unknown_messages",
            "tls_share",
            "first_seen",
            "last_seen",
            "plain",
            "untrusted_tls",
        ];
        let keys = |v: serde_json::Value| -> Vec<String> {
            let mut keys: Vec<String> = v
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            keys.sort();
            keys
        };
        let hop_json = serde_json::to_value(&f.next_hops[0]).unwrap();
        let relay_json = serde_json::to_value(&f.relays[0]).unwrap();
        let mut want_hop: Vec<String> = ["domain"]
            .iter()
            .chain(&mail_keys)
            .chain(&["relays"])
            .map(|k| k.to_string())
            .collect();
        let mut want_relay: Vec<String> = ["host"]
            .iter()
            .chain(&mail_keys)
            .chain(&["domains"])
            .map(|k| k.to_string())
            .collect();
        want_hop.sort();
        want_relay.sort();
        assert_eq!(keys(hop_json.clone()), want_hop);
        assert_eq!(keys(relay_json.clone()), want_relay);
        let hop_back: NextHopFigures = serde_json::from_value(hop_json).unwrap();
        let relay_back: RelayHostFigures = serde_json::from_value(relay_json).unwrap();
        assert_eq!(hop_back, f.next_hops[0]);
        assert_eq!(relay_back, f.relays[0]);
        assert_eq!(relay_back.mail, hop_back.mail, "one message each way");
    }

    /// At most [`MAX_RELAYS`] relays are counted; a relay already counted still counts, the
    /// transactions to later ones are counted together.
    #[test]
    fn relays_are_capped() {
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        let to = |agg: &mut Aggregator, host: &str| {
            let Record::Message(mut m) = delivery(100, None, "trusted", Sent, "192.0.2.1", "R")
            else {
                unreachable!("delivery makes message records")
            };
            m.peer.hostname = Some(host.into());
            agg.add(&Record::Message(m));
        };
        for i in 0..MAX_RELAYS {
            to(&mut agg, &format!("mx{i}.example"));
        }
        to(&mut agg, "mx0.example");
        to(&mut agg, "new.example");
        let f = agg.finish();
        assert_eq!(f.relays.len(), MAX_RELAYS);
        assert_eq!(
            (f.relays[0].host.as_str(), f.relays[0].mail.messages),
            ("mx0.example", 2)
        );
        assert_eq!(f.relays_omitted.over_cap_messages, 1);
        // Without a recipient domain, the transactions name no next hop.
        assert_eq!(f.relays[0].domains, 0);
    }

    /// The cap is on spellings: once [`MAX_RELAYS`] are held, a new spelling of a relay
    /// already counted (`MX0.Example.` for `mx0.example`) still counts for that relay, its
    /// messages and its domains; only a relay with no place is over the cap, and a spelling
    /// that names no host (`.`) has none either way.
    #[test]
    fn a_new_spelling_past_the_relay_cap_counts_for_its_relay() {
        use crate::model::DeliveryStatus::Sent;
        let mut agg = Aggregator::new(AggregateOptions::default());
        let to = |agg: &mut Aggregator, domain: Option<&str>, host: &str, port: Option<u16>| {
            let Record::Message(mut m) = delivery(100, domain, "trusted", Sent, "192.0.2.1", "R")
            else {
                unreachable!("delivery makes message records")
            };
            m.peer.hostname = Some(host.into());
            m.port = port;
            agg.add(&Record::Message(m));
        };
        for i in 0..MAX_RELAYS {
            to(&mut agg, None, &format!("mx{i}.example"), Some(25));
        }
        // Past the cap, for d.example: a second spelling of mx0 (twice: the second time the
        // peer's slot finds it), mx1 on another port (a relay of its own), a new relay, and
        // a lone dot.
        to(&mut agg, Some("d.example"), "MX0.Example.", Some(25));
        to(&mut agg, Some("d.example"), "MX0.Example.", Some(25));
        to(&mut agg, Some("d.example"), "mx1.example", Some(587));
        to(&mut agg, Some("d.example"), "new.example", Some(25));
        to(&mut agg, Some("d.example"), ".", Some(25));
        let f = agg.finish();
        assert_eq!(f.relays.len(), MAX_RELAYS);
        let mx0 = f
            .relays
            .iter()
            .find(|r| r.host == "mx0.example" && r.port == Some(25))
            .map(|r| (r.mail.messages, r.domains));
        assert_eq!(mx0, Some((3, 1)), "MX0.Example. is mx0.example");
        assert_eq!(
            f.relays_omitted.over_cap_messages, 2,
            "mx1:587 and new.example"
        );
        assert_eq!(f.relays_omitted.no_host_messages, 1, "the dot");
        let listed: u64 = f.relays.iter().map(|r| r.mail.messages).sum();
        assert_eq!(
            listed + f.relays_omitted.over_cap_messages + f.relays_omitted.no_host_messages,
            f.outbound.messages
        );
        assert_eq!(f.next_hops_over_relay_cap, 0);
    }

    #[test]
    fn cidr_table() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.0.2.1", "192.0.2.1", true),
            ("0.0.0.0/0", "198.51.100.1", true),
            ("2001:db8::/32", "2001:db8:1::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("10.0.0.0/8", "::1", false),
        ];
        for (cidr, ip, inside) in cases {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), inside, "{cidr} {ip}");
        }
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.1",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn time_text_is_utc_rfc3339() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_text(1_795_353_853), "2026-11-22T13:24:13Z");
        assert_eq!(time_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(time_text(-1), "1969-12-31T23:59:59Z");
        // Years without four digits go through `format!`'s padding.
        assert_eq!(time_text(-62_135_596_801), "0000-12-31T23:59:59Z");
        assert_eq!(time_text(-62_167_219_201), "-001-12-31T23:59:59Z");
        assert_eq!(time_text(253_402_300_800), "10000-01-01T00:00:00Z");
        // Every second of a leap day, and times from 1970 to 9999, as `format!` writes them.
        let by_format = |t: i64| {
            let (y, m, d) = civil_from_days(t.div_euclid(86_400));
            let s = t.rem_euclid(86_400);
            let (hh, mm, ss) = (s / 3600, s % 3600 / 60, s % 60);
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
        };
        let leap_day = (951_782_400..951_782_400 + 86_400).step_by(7);
        let years = (0..253_402_300_799).step_by(9_999_991);
        for t in leap_day.chain(years).chain([253_402_300_799]) {
            assert_eq!(time_text(t), by_format(t), "{t}");
        }
    }
}
