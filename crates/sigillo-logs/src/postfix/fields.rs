//! Field parsers for Postfix log messages: peers (`HOST[IP]:PORT`), TLS lines, `disconnect`
//! counters, queue ids, qmgr `from=` and delivery `to=` lines. Borrowing, allocation-free
//! (but for small caches of texts a server repeats: TLS details, relays), total: garbage gives
//! `None`, never a panic.

use crate::fields::{intern, normalize_tls_version, parse_u64};
use crate::model::{DeliveryStatus, Peer, TlsInfo, Trust};
use crate::postfix::bounded::FxBuild;
use std::hash::BuildHasher;
use std::net::IpAddr;

/// `HOST[IP]` with an optional `:PORT`, as Postfix logs a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerRef<'a> {
    pub host: &'a str,
    pub ip: &'a str,
    /// `HOST[IP]` or `HOST[IP]:PORT` exactly as logged (the relay key).
    pub whole: &'a str,
}

impl PeerRef<'_> {
    /// The `:PORT` after `HOST[IP]`, if any.
    pub fn port(self) -> Option<u16> {
        let close = self.whole.rfind(']')?;
        self.whole.get(close + 1..)?.strip_prefix(':')?.parse().ok()
    }

    pub fn to_peer(self) -> Peer {
        Peer {
            hostname: (!self.host.is_empty() && self.host != "unknown").then(|| self.host.into()),
            ip: crate::fields::parse_ip(self.ip),
        }
    }
}

/// Each byte of a word set to 1, and to 0x80.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `w` set (and perhaps of bytes above the lowest zero byte,
/// through its borrow): the lowest set bit marks the first zero byte.
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// Index of the first byte of `b` equal to `x` or `y`, eight bytes at a time: host names and
/// addresses are a few words long, too short for memchr's vector set-up to pay, and a word
/// test beats a loop over single bytes.
fn find_either(b: &[u8], x: u8, y: u8) -> Option<usize> {
    let (wx, wy) = (ONES * u64::from(x), ONES * u64::from(y));
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        let hits = zero_bytes(w ^ wx) | zero_bytes(w ^ wy);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&c| c == x || c == y).map(|i| at + i)
}

/// Index of the first `x` in `b` ([`find_either`] with one byte).
pub(crate) fn find_byte(b: &[u8], x: u8) -> Option<usize> {
    find_either(b, x, x)
}

/// Parses `HOST[IP]` (+ `:PORT`) at the start of `s`; returns it and the rest.
pub(crate) fn peer(s: &str) -> Option<(PeerRef<'_>, &str)> {
    let b = s.as_bytes();
    let open = find_either(b, b'[', b' ')?;
    if b.get(open) != Some(&b'[') {
        return None;
    }
    let close = open + 1 + find_byte(b.get(open + 1..)?, b']')?;
    let mut end = close + 1;
    if b.get(end) == Some(&b':') {
        let digits = b
            .get(end + 1..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits > 0 {
            end += 1 + digits;
        }
    }
    Some((
        PeerRef {
            host: s.get(..open)?,
            ip: s.get(open + 1..close)?,
            whole: s.get(..end)?,
        },
        s.get(end..)?,
    ))
}

/// True for 127.0.0.1 and ::1 only (content filters and local submission); other loopback
/// addresses count as ordinary peers.
pub(crate) fn is_local_ip(ip: Option<IpAddr>) -> bool {
    match ip {
        Some(IpAddr::V4(v4)) => v4 == std::net::Ipv4Addr::LOCALHOST,
        Some(IpAddr::V6(v6)) => {
            v6 == std::net::Ipv6Addr::LOCALHOST
                || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
        None => false,
    }
}

/// A `… TLS connection established from|to PEER: VERSION with cipher …` line, or the `…
/// TLS connection reused to PEER: …` line of an smtp process that took over a cached TLS
/// connection (Postfix 3.4 and later, `smtp_tls_connection_reuse = yes`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TlsLine<'a> {
    /// `from` (smtpd) or `to` (smtp/lmtp client).
    pub inbound: bool,
    pub peer: PeerRef<'a>,
    pub info: TlsInfo,
}

const ESTABLISHED: &str = "TLS connection established ";
const REUSED: &str = "TLS connection reused ";

/// The rest of `msg` after `TLS connection established ` or `TLS connection reused `.
fn strip_connection(msg: &str) -> Option<&str> {
    msg.strip_prefix(ESTABLISHED)
        .or_else(|| msg.strip_prefix(REUSED))
}

/// Cheap test: does `msg` start like a TLS line (`[Trust ]TLS connection established ` or
/// `reused `)?
pub(crate) fn is_tls_line(msg: &str) -> bool {
    split_trust(msg).is_some()
}

fn split_trust(msg: &str) -> Option<(Option<Trust>, &str)> {
    // A TLS line starts with `TLS connection` or a trust word: any other first byte (most
    // lines start with a queue id or a word like `connect`) tells at once it is none.
    if !matches!(msg.as_bytes().first(), Some(b'T' | b'A' | b'U' | b'V')) {
        return None;
    }
    if let Some(rest) = strip_connection(msg) {
        return Some((None, rest));
    }
    let sp = find_byte(msg.as_bytes(), b' ')?;
    let trust = match msg.get(..sp)? {
        "Anonymous" => Trust::Anonymous,
        "Untrusted" => Trust::Untrusted,
        "Trusted" => Trust::Trusted,
        "Verified" => Trust::Verified,
        _ => return None,
    };
    Some((Some(trust), strip_connection(msg.get(sp + 1..)?)?))
}

/// Finds `needle` (which starts with `first`) by scanning for `first` a word at a time: the
/// fields of one log line are a few words long, too short for a substring searcher's or
/// memchr's vector set-up to pay.
fn find_from(s: &str, first: u8, needle: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut at = 0;
    while let Some(i) = find_byte(bytes.get(at..)?, first) {
        let pos = at + i;
        if bytes.get(pos..)?.starts_with(needle.as_bytes()) {
            return Some(pos);
        }
        at = pos + 1;
    }
    None
}

/// Parses a TLS line; `None` when `msg` is not one (or is garbled). `cache` remembers the
/// last few detail texts, which a server logs over and over.
pub(crate) fn tls_line<'a>(msg: &'a str, cache: &mut TlsDetailsCache) -> Option<TlsLine<'a>> {
    let (trust, rest) = split_trust(msg)?;
    let (inbound, rest) = if let Some(r) = rest.strip_prefix("from ") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix("to ") {
        (false, r)
    } else {
        return None;
    };
    let (peer, rest) = peer(rest)?;
    let rest = match rest.strip_prefix(": ") {
        Some(rest) => rest,
        // smtpd names the SNI name the client sent, when it accepted one, after the client:
        // `from HOST[IP] to NAME: …` (tls_misc.c tls_log_summary). A DNS name has no `: `.
        None => {
            let sni = rest.strip_prefix(" to ").filter(|_| inbound)?;
            sni.get(find_from(sni, b':', ": ")? + 2..)?
        }
    };
    let mut info = cache.details(rest)?;
    info.trust = trust;
    Some(TlsLine {
        inbound,
        peer,
        info,
    })
}

/// Texts remembered by a [`RecentTexts`] cache, and the longest one kept: room for a
/// server's mix of TLS versions, ciphers, key exchanges and signatures (a dozen in a busy log;
/// four made a third of the lines miss), or for its local relays.
const RECENT_ENTRIES: usize = 16;
const RECENT_MAX_TEXT: usize = 512;

/// The last few distinct texts of a kind that a server logs over and over, and what they
/// parsed to: one compare instead of a parse (and its interning lookups) per line. A short
/// list, searched in order and replaced round the ring: no hashing a peer could attack.
#[derive(Debug)]
pub(crate) struct RecentTexts<V> {
    entries: Vec<(Box<str>, V)>,
    /// The slot the next new text replaces once the cache is full.
    next: usize,
}

impl<V> Default for RecentTexts<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            next: 0,
        }
    }
}

impl<V: Clone> RecentTexts<V> {
    /// `parse(text)`, from the cache when seen lately.
    fn get(&mut self, text: &str, parse: impl FnOnce(&str) -> V) -> V {
        if let Some((_, v)) = self.entries.iter().find(|(t, _)| **t == *text) {
            return v.clone();
        }
        let v = parse(text);
        if text.len() <= RECENT_MAX_TEXT {
            let entry = (Box::from(text), v.clone());
            if self.entries.len() < RECENT_ENTRIES {
                self.entries.push(entry);
            } else if let Some(slot) = self.entries.get_mut(self.next) {
                *slot = entry;
                self.next = (self.next + 1) % RECENT_ENTRIES;
            }
        }
        v
    }
}

/// TLS detail texts (`TLSv1.3 with cipher … key-exchange X25519 …`) and their [`TlsInfo`].
#[derive(Debug, Default)]
pub(crate) struct TlsDetailsCache(RecentTexts<Option<TlsInfo>>);

impl TlsDetailsCache {
    /// [`tls_details`] of `text` (trust unset), from the cache when seen lately.
    fn details(&mut self, text: &str) -> Option<TlsInfo> {
        self.0.get(text, tls_details)
    }
}

/// A texts-to-values cache with one slot per hash (FxHash's top bits), the newest text
/// winning its slot: texts that collide, by chance or made to, only miss the cache, and its
/// memory is fixed. For the texts a log repeats among many distinct ones (peers, relays),
/// where [`RecentTexts`]' short list would mostly miss.
#[derive(Debug)]
pub(crate) struct SlotCache<V> {
    slots: Vec<Option<(Box<str>, V)>>,
}

/// log2 of a [`SlotCache`]'s slots.
const SLOT_BITS: u32 = 11;

impl<V> Default for SlotCache<V> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<V: Clone> SlotCache<V> {
    /// `parse(text)`, from the cache when `text` was seen lately.
    fn get(&mut self, text: &str, parse: impl FnOnce(&str) -> V) -> V {
        // FxHash mixes into the high bits.
        let index = (FxBuild.hash_one(text) >> (u64::BITS - SLOT_BITS)) as usize;
        if self.slots.is_empty() {
            self.slots.resize_with(1 << SLOT_BITS, || None);
        }
        let Some(slot) = self.slots.get_mut(index) else {
            return parse(text);
        };
        match slot {
            Some((t, v)) if **t == *text => v.clone(),
            _ => {
                let v = parse(text);
                if text.len() <= RECENT_MAX_TEXT {
                    *slot = Some((text.into(), v.clone()));
                }
                v
            }
        }
    }
}

/// Peers of inbound sessions (`HOST[IP]`) and the [`Peer`] each parses to: a client that
/// keeps coming back costs a compare and a reference count instead of an address parse and
/// a copy of its name.
#[derive(Debug, Default)]
pub(crate) struct PeerCache(SlotCache<Peer>);

impl PeerCache {
    /// `p.to_peer()`, from the cache when its `HOST[IP]` was seen lately.
    pub fn peer(&mut self, p: PeerRef<'_>) -> Peer {
        let key = p
            .whole
            .get(..p.host.len() + p.ip.len() + 2)
            .unwrap_or(p.whole);
        self.0.get(key, |_| p.to_peer())
    }
}

/// What a delivery's `relay=` names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Relay {
    /// `HOST[IP]` or `HOST[IP]:PORT` and nothing more: a hop, as a record's peer, and its port.
    Hop(Peer, Option<u16>),
    /// Anything else (`local`, `virtual`, `none`, …), interned.
    Name(crate::model::Text),
}

/// Delivery relays (`relay=…`) and what they name: the next hops of outbound mail and a few
/// internal ones (LMTP, content filters).
#[derive(Debug, Default)]
pub(crate) struct RelayCache(SlotCache<Relay>);

impl RelayCache {
    /// [`relay`] of `text`, from the cache when seen lately.
    pub fn relay(&mut self, text: &str) -> Relay {
        self.0.get(text, relay)
    }
}

/// What `relay=TEXT` names (see [`Relay`]).
pub(crate) fn relay(text: &str) -> Relay {
    match peer(text) {
        Some((p, "")) => Relay::Hop(p.to_peer(), p.port()),
        _ => Relay::Name(intern(text)),
    }
}

/// `VERSION with cipher CIPHER (B/B bits)[ key-exchange GROUP …]`, after a TLS line's peer.
fn tls_details(rest: &str) -> Option<TlsInfo> {
    let sp = memchr::memchr(b' ', rest.as_bytes())?;
    let version = rest.get(..sp)?;
    let rest = rest.get(sp + 1..)?.strip_prefix("with cipher ")?;
    if version.is_empty() {
        return None;
    }
    let (cipher, rest) = match memchr::memchr(b' ', rest.as_bytes()) {
        Some(i) => (rest.get(..i)?, rest.get(i + 1..)?),
        None => (rest, ""),
    };
    if cipher.is_empty() {
        return None;
    }
    // `(256/256 bits)`, then (Postfix ≥ 3.4, TLS 1.3) ` key-exchange X25519 …`.
    let (bits, rest) = match rest.strip_prefix('(') {
        Some(r) => {
            let slash = memchr::memchr(b'/', r.as_bytes());
            let bits = slash
                .and_then(|i| r.get(..i))
                .and_then(parse_u64)
                .and_then(|b| u16::try_from(b).ok());
            let after = memchr::memchr(b')', r.as_bytes())
                .and_then(|i| r.get(i + 1..))
                .unwrap_or("");
            (bits, after)
        }
        None => (None, rest),
    };
    let key_exchange = rest
        .strip_prefix(" key-exchange ")
        .and_then(|r| r.split(' ').next())
        .filter(|k| !k.is_empty())
        .map(intern);
    Some(TlsInfo {
        version: normalize_tls_version(version),
        cipher: crate::fields::intern(cipher),
        bits,
        key_exchange,
        trust: None,
    })
}

/// The `disconnect from` counters (Postfix ≥ 3.0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Any `name=N` counter was present.
    pub any: bool,
    /// `starttls=N` or `starttls=N/M`: Some(N successes).
    pub starttls_ok: Option<u64>,
    /// `unknown=N/M`: M (or N without a slash): unrecognised commands sent.
    pub unknown: u64,
    /// `ehlo=N` or `helo=N` with N ≥ 1: the client greeted (an HTTP probe does not).
    pub greeted: bool,
}

/// Parses `name=N[/M] …` after the peer of a disconnect line, in one pass over its tokens
/// (split at spaces, a word at a time: they are a few bytes each).
pub(crate) fn counters(s: &str) -> Counters {
    let mut c = Counters::default();
    let mut rest = s.as_bytes();
    loop {
        let end = find_byte(rest, b' ');
        let tok = end.and_then(|i| rest.get(..i)).unwrap_or(rest);
        // A valid `starttls=` or `unknown=` token is a counter too; other tokens are parsed
        // only until one shows there are counters (`name=N` or `name=N/M`). The first byte
        // tells which of the three names a token can be.
        let named = match tok.first() {
            Some(b's') => tok
                .strip_prefix(b"starttls=")
                .and_then(counter_value)
                .map(|(ok, _)| c.starttls_ok = Some(ok)),
            Some(b'u') => tok
                .strip_prefix(b"unknown=")
                .and_then(counter_value)
                .map(|(_, total)| c.unknown = c.unknown.saturating_add(total)),
            Some(b'e' | b'h') => tok
                .strip_prefix(b"ehlo=")
                .or_else(|| tok.strip_prefix(b"helo="))
                .and_then(counter_value)
                .map(|(ok, _)| c.greeted |= ok > 0),
            _ => None,
        };
        if named.is_some() || (!c.any && counter(tok).is_some()) {
            c.any = true;
        }
        match end.and_then(|i| rest.get(i + 1..)) {
            Some(next) => rest = next,
            None => return c,
        }
    }
}

/// `name=N` → (N, N); `name=N/M` → (N, M).
fn counter(tok: &[u8]) -> Option<(u64, u64)> {
    let eq = tok.iter().position(|&x| x == b'=')?;
    counter_value(tok.get(eq + 1..)?)
}

/// `N` → (N, N); `N/M` → (N, M).
fn counter_value(value: &[u8]) -> Option<(u64, u64)> {
    match value.iter().position(|&x| x == b'/') {
        Some(i) => Some((decimal(value.get(..i)?)?, decimal(value.get(i + 1..)?)?)),
        None => decimal(value).map(|n| (n, n)),
    }
}

/// [`parse_u64`] on bytes: decimal digits only, no sign, no overflow.
fn decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Splits `QID: rest` (queue ids are 5–24 letters and digits, short hex or long base-52).
pub(crate) fn queue_id(msg: &str) -> Option<(&str, &str)> {
    let n = msg.bytes().take_while(u8::is_ascii_alphanumeric).count();
    if !(5..=24).contains(&n) {
        return None;
    }
    let rest = msg.get(n..)?.strip_prefix(": ")?;
    Some((msg.get(..n)?, rest))
}

/// qmgr's `from=<…>, size=N, nrcpt=N (queue active)` (after the queue id).
pub(crate) fn qmgr_from(rest: &str) -> Option<(u64, u32)> {
    let rest = rest.strip_prefix("from=<")?;
    let at = find_from(rest, b'>', ">, size=")?;
    let rest = rest.get(at + ">, size=".len()..)?;
    let comma = find_byte(rest.as_bytes(), b',')?;
    let size = rest.get(..comma)?;
    let rest = rest.get(comma..)?.strip_prefix(", nrcpt=")?;
    let nrcpt = match find_byte(rest.as_bytes(), b' ') {
        Some(sp) => rest.get(..sp)?,
        None => rest,
    };
    Some((parse_u64(size)?, u32::try_from(parse_u64(nrcpt)?).ok()?))
}

/// A delivery line: `to=<…>, [orig_to=<…>, ]relay=…, [conn_use=N, ]delay=…, dsn=…, status=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ToLine<'a> {
    /// The recipient address as logged, without the angle brackets (after address rewriting
    /// and alias expansion: the address the delivery was routed for).
    pub to: &'a str,
    /// As logged: `none`, `local`, `virtual`, `HOST[IP]:PORT`, `HOST[private/dovecot-lmtp]`.
    pub relay: &'a str,
    /// 1 for a fresh connection (the field is absent), N for the N-th use of a cached one.
    pub conn_use: u32,
    pub status: DeliveryStatus,
    /// The parenthesised text after the status word.
    pub text: &'a str,
}

/// True when `text` holds `TLS`: a cheap test before looking for the phrases of a TLS failure,
/// which most delivery texts (`250 2.0.0 Ok: queued as …`) have no `T` to start.
pub(crate) fn mentions_tls(text: &str) -> bool {
    find_from(text, b'T', "TLS").is_some()
}

/// The first `, status=` in the rest of a delivery line, found from its `u`: the fields before
/// it (`delay=`, `delays=`, `dsn=`) have none, so one memchr mostly lands on it (cheaper than
/// a substring searcher's set-up).
fn find_status(rest: &str) -> Option<usize> {
    const NEEDLE: &[u8] = b", status=";
    const PROBE: usize = 6;
    let bytes = rest.as_bytes();
    let mut at = PROBE;
    while let Some(i) = memchr::memchr(b'u', bytes.get(at..)?) {
        let start = at + i - PROBE;
        if bytes.get(start..)?.starts_with(NEEDLE) {
            return Some(start);
        }
        at += i + 1;
    }
    None
}

/// Parses a delivery line (after the queue id). `None` for address probes
/// (`status=deliverable|undeliverable`) and for garbage.
pub(crate) fn to_line(rest: &str) -> Option<ToLine<'_>> {
    let mut rest = rest.strip_prefix("to=<")?;
    let close = find_from(rest, b'>', ">, ")?;
    let to = rest.get(..close)?;
    rest = rest.get(close + 3..)?;
    let mut relay = None;
    let mut conn_use = 1;
    loop {
        if let Some(r) = rest.strip_prefix("orig_to=<") {
            let close = find_from(r, b'>', ">, ")?;
            rest = r.get(close + 3..)?;
            continue;
        }
        if let Some(st) = rest.strip_prefix("status=") {
            // The status word is short: a word-at-a-time search beats `split_once`'s searcher.
            let (word, text) = match find_byte(st.as_bytes(), b' ') {
                Some(sp) => (st.get(..sp)?, st.get(sp + 1..)?),
                None => (st, ""),
            };
            let status = match word {
                "sent" => DeliveryStatus::Sent,
                "deferred" => DeliveryStatus::Deferred,
                "bounced" | "expired" => DeliveryStatus::Bounced,
                _ => return None,
            };
            return Some(ToLine {
                to,
                relay: relay?,
                conn_use,
                status,
                text,
            });
        }
        if rest.starts_with("delay=") {
            // `delay=…, delays=…, dsn=…` carry nothing we count: go straight to the status.
            let at = find_status(rest)?;
            rest = rest.get(at + 2..)?;
            continue;
        }
        let comma = find_from(rest, b',', ", ")?;
        let (field, next) = (rest.get(..comma)?, rest.get(comma + 2..)?);
        if let Some(r) = field.strip_prefix("relay=") {
            relay = Some(r);
        } else if let Some(n) = field.strip_prefix("conn_use=") {
            conn_use = u32::try_from(parse_u64(n)?).ok()?;
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        type Row = (
            &'static str,
            Option<(&'static str, &'static str, &'static str, &'static str)>,
        );
        let table: &[Row] = &[
            (
                "unknown[127.0.0.2]",
                Some(("unknown", "127.0.0.2", "unknown[127.0.0.2]", "")),
            ),
            (
                "mx.example.com[192.0.2.1]:25: TLSv1.3",
                Some((
                    "mx.example.com",
                    "192.0.2.1",
                    "mx.example.com[192.0.2.1]:25",
                    ": TLSv1.3",
                )),
            ),
            ("h[::1] ehlo=1", Some(("h", "::1", "h[::1]", " ehlo=1"))),
            (
                "h[2001:db8::1]:",
                Some(("h", "2001:db8::1", "h[2001:db8::1]", ":")),
            ),
            // `[` and `]` at and around the eight-byte words' edges.
            (
                "abcdefgh[192.0.2.1]",
                Some(("abcdefgh", "192.0.2.1", "abcdefgh[192.0.2.1]", "")),
            ),
            (
                "abcdefg[1234567]:25 x",
                Some(("abcdefg", "1234567", "abcdefg[1234567]:25", " x")),
            ),
            (
                "mail.example.net[2001:db8::1234:5678]",
                Some((
                    "mail.example.net",
                    "2001:db8::1234:5678",
                    "mail.example.net[2001:db8::1234:5678]",
                    "",
                )),
            ),
            ("no brackets", None),
            ("a b[1.2.3.4]", None),
            ("abcdefghijk lmn[1.2.3.4]", None),
            ("abcdefghijklmnop[1.2.3.4.5.6.7.8.9", None),
            ("h[1.2.3.4", None),
            ("", None),
        ];
        for (input, want) in table {
            let got = peer(input).map(|(p, r)| (p.host, p.ip, p.whole, r));
            assert_eq!(got, *want, "{input}");
        }
    }

    #[test]
    fn tls_lines() {
        // (message, inbound, trust, version, cipher, bits, key exchange)
        type Row = (
            &'static str,
            bool,
            Option<Trust>,
            &'static str,
            &'static str,
            Option<u16>,
            Option<&'static str>,
        );
        let table: &[Row] = &[
            (
                "Anonymous TLS connection established from unknown[127.0.0.2]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
                true,
                Some(Trust::Anonymous),
                "TLSv1.3",
                "TLS_AES_256_GCM_SHA384",
                Some(256),
                Some("X25519"),
            ),
            (
                "Untrusted TLS connection established from mail.example.net[198.51.100.7]: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
                true,
                Some(Trust::Untrusted),
                "TLSv1.2",
                "ECDHE-RSA-AES256-GCM-SHA384",
                Some(256),
                None,
            ),
            (
                "Verified TLS connection established to mx.example.org[203.0.113.5]:25: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256",
                false,
                Some(Trust::Verified),
                "TLSv1.3",
                "TLS_AES_128_GCM_SHA256",
                Some(128),
                Some("X25519"),
            ),
            (
                "TLS connection established from old.example[192.0.2.9]: TLSv1 with cipher DHE-RSA-AES256-SHA (256/256 bits)",
                true,
                None,
                "TLSv1",
                "DHE-RSA-AES256-SHA",
                Some(256),
                None,
            ),
            (
                "Verified TLS connection reused to mx.example.org[203.0.113.5]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                false,
                Some(Trust::Verified),
                "TLSv1.3",
                "TLS_AES_256_GCM_SHA384",
                Some(256),
                None,
            ),
            (
                "Trusted TLS connection established to x[192.0.2.1]:25: TLSv1.0 with cipher AES256-SHA",
                false,
                Some(Trust::Trusted),
                "TLSv1",
                "AES256-SHA",
                None,
                None,
            ),
            // smtpd names the SNI name the client sent and it accepted after the client
            // (tls_misc.c tls_log_summary: `from HOST[IP] to SNI: …`).
            (
                "Anonymous TLS connection established from c.example[192.0.2.8] to mail.example.com: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
                true,
                Some(Trust::Anonymous),
                "TLSv1.3",
                "TLS_AES_256_GCM_SHA384",
                Some(256),
                Some("X25519"),
            ),
            (
                "Verified TLS connection reused from c.example[192.0.2.8]:2525 to mx: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
                true,
                Some(Trust::Verified),
                "TLSv1.2",
                "ECDHE-RSA-AES256-GCM-SHA384",
                Some(256),
                None,
            ),
        ];
        // Twice through one cache (the second pass is answered from it, more rows than it
        // holds, so entries are replaced), and once with a fresh cache per line.
        let mut cache = TlsDetailsCache::default();
        let fresh = table.iter().map(|row| (row, true));
        let cached = table.iter().chain(table).map(|row| (row, false));
        for ((msg, inbound, trust, version, cipher, bits, kx), new_cache) in fresh.chain(cached) {
            if new_cache {
                cache = TlsDetailsCache::default();
            }
            let t = tls_line(msg, &mut cache).unwrap_or_else(|| panic!("no parse: {msg}"));
            assert_eq!(t.inbound, *inbound, "{msg}");
            assert!(
                t.peer.whole.ends_with(']') || t.peer.whole.contains("]:"),
                "{msg}"
            );
            assert!(!t.peer.whole.contains(' '), "{msg}");
            assert_eq!(t.info.trust, *trust, "{msg}");
            assert_eq!(&*t.info.version, *version, "{msg}");
            assert_eq!(&*t.info.cipher, *cipher, "{msg}");
            assert_eq!(t.info.bits, *bits, "{msg}");
            assert_eq!(t.info.key_exchange.as_deref(), *kx, "{msg}");
        }
        // More distinct texts than the cache holds, twice round: replaced entries answer
        // as a fresh parse does.
        let texts: Vec<String> = (0..2 * RECENT_ENTRIES + 3)
            .map(|i| format!("TLSv1.3 with cipher C{i} ({i}/256 bits) key-exchange K{i}"))
            .collect();
        for text in texts.iter().chain(&texts) {
            assert_eq!(cache.details(text), tls_details(text), "{text}");
            assert_eq!(cache.details(text), tls_details(text), "{text}");
        }
        for bad in [
            "Bogus TLS connection established from a[1.2.3.4]: TLSv1.3 with cipher X",
            "Anonymous TLS connection established from a[1.2.3.4]",
            "Anonymous TLS connection established via a[1.2.3.4]: TLSv1.3 with cipher X",
            // An SNI name only after a client (smtpd), and followed by `: `.
            "Verified TLS connection established to a[1.2.3.4]:25 to b.example: TLSv1.3 with cipher X",
            "Anonymous TLS connection established from a[1.2.3.4] to b.example TLSv1.3 with cipher X",
            "Anonymous TLS connection established from a[1.2.3.4] for b.example: TLSv1.3 with cipher X",
        ] {
            assert!(tls_line(bad, &mut cache).is_none(), "{bad}");
        }
        // Not even the start of a TLS line (the first byte tells most of them at once).
        for other in [
            "connect from a[1.2.3.4]",
            "anonymous TLS connection established from a[1.2.3.4]: TLSv1.3 with cipher X",
            " TLS connection established from a[1.2.3.4]: TLSv1.3 with cipher X",
            "Unverified TLS connection established from a[1.2.3.4]: TLSv1.3 with cipher X",
            "1A2B3C4D5E: client=a[1.2.3.4]",
            "",
        ] {
            assert!(!is_tls_line(other), "{other}");
            assert!(tls_line(other, &mut cache).is_none(), "{other}");
        }
        for (msg, ..) in table {
            assert!(is_tls_line(msg), "{msg}");
        }
    }

    #[test]
    fn disconnect_counters() {
        // (text, any, starttls_ok, unknown)
        let table: &[(&str, bool, Option<u64>, u64)] = &[
            (
                " ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
                true,
                Some(1),
                0,
            ),
            (
                " ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
                true,
                None,
                0,
            ),
            (" ehlo=1 quit=1 unknown=0/1 commands=2/3", true, None, 1),
            (" ehlo=1 starttls=0/1 commands=1/2", true, Some(0), 0),
            (" ehlo=2 starttls=1/1 commands=3", true, Some(1), 0),
            ("", false, None, 0),
            (" garbage=x/y", false, None, 0),
            // Tokens at the start, doubled spaces, the last `starttls=` winning, invalid
            // values skipped, `unknown=` adding up, tokens longer than a word.
            ("starttls=1 commands=2", true, Some(1), 0),
            ("  ehlo=1  starttls=2/2  quit=1", true, Some(2), 0),
            (" starttls=1 starttls=x starttls=0/1", true, Some(0), 0),
            (" starttls=3 starttls=x", true, Some(3), 0),
            (" starttls= unknown=", false, None, 0),
            (
                " unknown=1/2 unknown=3 commands=123456789/123456790",
                true,
                None,
                5,
            ),
            (" xstarttls=1 xunknown=2", true, None, 0),
            // A token whose first byte is a counter's name's, with no valid value, or another
            // name: a counter only if it is `name=N`.
            (" starttls=x", false, None, 0),
            (" sasl=1 unknown=x", true, None, 0),
            (" ehlo=x helo=y", false, None, 0),
            (" help=2", true, None, 0),
            (" ehlo=1 starttls=1", true, Some(1), 0),
            (
                " unknown=0/9999999999999999999 unknown=9999999999999999999",
                true,
                None,
                u64::MAX,
            ),
        ];
        for (text, any, ok, unknown) in table {
            let c = counters(text);
            assert_eq!(
                (c.any, c.starttls_ok, c.unknown),
                (*any, *ok, *unknown),
                "{text}"
            );
        }
        // (text, greeted)
        let greetings: &[(&str, bool)] = &[
            (" ehlo=1 quit=1", true),
            (" helo=1 quit=1", true),
            (" helo=0/1 quit=1", false),
            (" ehlo=0/1 helo=1", true),
            (" quit=1 commands=1", false),
            (" hello=1 ehlo=x", false),
            ("", false),
        ];
        for (text, greeted) in greetings {
            assert_eq!(counters(text).greeted, *greeted, "{text}");
        }
    }

    #[test]
    fn peer_and_relay_caches_give_what_a_parse_gives() {
        // More distinct peers than slots, so slots are shared and replaced; with and without
        // a port; `unknown` names.
        let mut cache = PeerCache::default();
        let mut relays = RelayCache::default();
        let mut x: u64 = 5;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 33) % n
        };
        for _ in 0..50_000 {
            let n = next(3 << SLOT_BITS);
            let host = if n % 7 == 0 {
                "unknown".to_owned()
            } else {
                format!("mx{n}.example.org")
            };
            let text = match n % 3 {
                0 => format!("{host}[192.0.2.{}]", n % 256),
                1 => format!("{host}[2001:db8::{n:x}]:25"),
                _ => format!("{host}[198.51.100.{}] ehlo=1", n % 256),
            };
            let (p, _) = peer(&text).expect("a peer");
            assert_eq!(cache.peer(p), p.to_peer(), "{text}");
            // The same texts as relays, and relays that are names.
            let named = format!("private/filter{}", n % 100);
            for r in [p.whole, &text, &named] {
                assert_eq!(relays.relay(r), relay(r), "{r}");
            }
        }
    }

    #[test]
    fn relays() {
        let hop = |host: Option<&str>, ip: Option<&str>, port: Option<u16>| {
            Relay::Hop(
                Peer {
                    hostname: host.map(Into::into),
                    ip: ip.and_then(|ip| ip.parse().ok()),
                },
                port,
            )
        };
        let name = |n: &str| Relay::Name(n.into());
        let table = [
            (
                "mx.example.org[203.0.113.5]:25",
                hop(Some("mx.example.org"), Some("203.0.113.5"), Some(25)),
            ),
            (
                "smtp.isp.example[203.0.113.25]:587",
                hop(Some("smtp.isp.example"), Some("203.0.113.25"), Some(587)),
            ),
            // `relayhost = [IPv6:0:0::1]:2525`: the name as written, the address as Postfix
            // prints it (Postfix 3.7).
            (
                "0:0::1[::1]:2525",
                hop(Some("0:0::1"), Some("::1"), Some(2525)),
            ),
            ("unknown[192.0.2.1]", hop(None, Some("192.0.2.1"), None)),
            (
                "mail.lab.test[private/dovecot-lmtp]",
                hop(Some("mail.lab.test"), None, None),
            ),
            ("x[1.2.3.4]:25 more", name("x[1.2.3.4]:25 more")),
            ("virtual", name("virtual")),
            ("local", name("local")),
            ("", name("")),
        ];
        // Each through the cache twice, after more relays than it holds: as fresh.
        let mut cache = RelayCache::default();
        for i in 0..2 * RECENT_ENTRIES {
            let text = format!("h{i}[192.0.2.{i}]:25");
            assert_eq!(cache.relay(&text), relay(&text), "{text}");
        }
        for (text, want) in table.iter().chain(&table) {
            assert_eq!(relay(text), *want, "{text}");
            assert_eq!(cache.relay(text), *want, "{text}");
        }
    }

    #[test]
    fn status_fields() {
        for rest in [
            "delay=0.80, delays=0.26/0.01/0.26/0.26, dsn=2.0.0, status=sent (250 ok)",
            "delay=u, delays=uu, dsn=u, status=sent",
            ", status=sent",
            ", statu, status=x, status=y",
            "status=sent",
            "delay=0, dsn=5.0.0, stat, status",
            "uuuuuuuuuu",
            "u",
            "",
        ] {
            assert_eq!(find_status(rest), rest.find(", status="), "{rest}");
        }
    }

    #[test]
    fn tls_mentions() {
        for (text, want) in [
            ("(250 2.0.0 Ok: queued as 4B6A19AC1C8)", false),
            (
                "(TLS is required, but was not offered by host x[1.2.3.4])",
                true,
            ),
            ("(Cannot start TLS: handshake failure)", true),
            ("(T L S, TL, Tls)", false),
            ("TLS", true),
            ("", false),
        ] {
            assert_eq!(mentions_tls(text), want, "{text}");
        }
    }

    #[test]
    fn queue_ids() {
        let table: &[(&str, Option<(&str, &str)>)] = &[
            ("4B6A19AC1C8: client=x", Some(("4B6A19AC1C8", "client=x"))),
            (
                "4Xh0Bq3VbTz5w3r: removed",
                Some(("4Xh0Bq3VbTz5w3r", "removed")),
            ),
            ("NOQUEUE: reject: RCPT", Some(("NOQUEUE", "reject: RCPT"))),
            ("connect from x", None),
            ("ABC: x", None),
            ("4B6A19AC1C8:client", None),
        ];
        for (msg, want) in table {
            assert_eq!(queue_id(msg), *want, "{msg}");
        }
    }

    #[test]
    fn qmgr_lines() {
        let table: &[(&str, Option<(u64, u32)>)] = &[
            (
                "from=<sender@tls03.a.sender.test>, size=630, nrcpt=1 (queue active)",
                Some((630, 1)),
            ),
            (
                "from=<>, size=2450, nrcpt=3 (queue active)",
                Some((2450, 3)),
            ),
            ("from=<a@b>, status=expired, returned to sender", None),
            ("from=<a@b>, size=x, nrcpt=1 (queue active)", None),
            ("removed", None),
        ];
        for (rest, want) in table {
            assert_eq!(qmgr_from(rest), *want, "{rest}");
        }
    }

    #[test]
    fn delivery_lines() {
        use DeliveryStatus::*;
        // (rest, to, relay, conn_use, status)
        type Row = (
            &'static str,
            Option<(&'static str, &'static str, u32, DeliveryStatus)>,
        );
        let table: &[Row] = &[
            (
                "to=<user@lab.test>, relay=virtual, delay=0.02, delays=0.01/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)",
                Some(("user@lab.test", "virtual", 1, Sent)),
            ),
            (
                "to=<a@example.org>, orig_to=<b@example.com>, relay=mx.example.org[203.0.113.5]:25, conn_use=2, delay=1.1, delays=0/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
                Some(("a@example.org", "mx.example.org[203.0.113.5]:25", 2, Sent)),
            ),
            (
                "to=<a@example.org>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx[192.0.2.1]:25: Connection refused)",
                Some(("a@example.org", "none", 1, Deferred)),
            ),
            (
                "to=<\"odd, >name\"@example.org>, relay=local, delay=0, dsn=5.1.1, status=bounced (unknown user)",
                Some(("\"odd, >name\"@example.org", "local", 1, Bounced)),
            ),
            (
                "to=<a@b>, relay=x[1.2.3.4]:25, delay=0, dsn=2.1.5, status=deliverable (ok)",
                None,
            ),
            (
                "to=<a@b>, relay=x[1.2.3.4]:25, conn_use=zz, status=sent (ok)",
                None,
            ),
            ("to=<a@b>, delay=0, status=sent (ok)", None),
            ("to=<a@b>", None),
        ];
        for (rest, want) in table {
            let got = to_line(rest).map(|t| (t.to, t.relay, t.conn_use, t.status));
            assert_eq!(got, *want, "{rest}");
        }
    }
}
