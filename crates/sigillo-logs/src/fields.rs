//! Small field parsers shared by the MTA parsers: numbers, IP addresses, TLS version names,
//! `version:cipher:bits` triples, interned TLS strings. No I/O, no allocation unless noted.
//! (Their open-state maps are `crate::postfix::bounded::Bounded`.)

use crate::model::{Text, TlsInfo};
use crate::postfix::bounded::FxBuild;
use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::IpAddr;

/// `TLS1.3`, `TLSv1.2`, `TLS1.0`, `TLSv1`, `SSL3.0` → `TLSv1.3`, `TLSv1.2`, `TLSv1`, `TLSv1`,
/// `SSLv3`; anything else as written.
pub(crate) fn normalize_tls_version(v: &str) -> Text {
    let (proto, num) = if let Some(n) = v.strip_prefix("TLSv").or_else(|| v.strip_prefix("TLS")) {
        ("TLSv", n)
    } else if let Some(n) = v.strip_prefix("SSLv").or_else(|| v.strip_prefix("SSL")) {
        ("SSLv", n)
    } else {
        return intern(v);
    };
    let num = match num {
        "1" | "1.0" => "1",
        "3" | "3.0" => "3",
        "1.1" | "1.2" | "1.3" | "2" => num,
        _ => return intern(v),
    };
    match (proto, num) {
        ("TLSv", "1.3") => intern("TLSv1.3"),
        ("TLSv", "1.2") => intern("TLSv1.2"),
        _ => intern(&format!("{proto}{num}")),
    }
}

/// Distinct strings [`intern`] keeps before it starts afresh.
const MAX_INTERNED: usize = 65_536;

/// One shared copy of a string that repeats across records (TLS versions, ciphers,
/// key-exchange groups, local relay names): a lookup instead of an allocation per record.
/// The table is per thread and bounded; past [`MAX_INTERNED`] distinct strings it starts
/// afresh, which costs only sharing, never correctness. Peer host names, which a peer
/// chooses, are not interned: the fast hash here does not resist crafted collisions.
pub(crate) fn intern(s: &str) -> Text {
    thread_local! {
        static STRINGS: RefCell<HashSet<Text, FxBuild>> = RefCell::new(HashSet::default());
    }
    STRINGS.with_borrow_mut(|set| {
        if let Some(t) = set.get(s) {
            return Text::clone(t);
        }
        if set.len() >= MAX_INTERNED {
            set.clear();
        }
        let t: Text = s.into();
        set.insert(Text::clone(&t));
        t
    })
}

/// `version:cipher:bits` (Exim's `X=`, OpenSMTPD's `ciphers=`): bits optional.
pub(crate) fn parse_colon_cipher(x: &str) -> Option<TlsInfo> {
    let (ver, rest) = x.split_once(':')?;
    if ver.is_empty() || rest.is_empty() {
        return None;
    }
    let (cipher, bits) = match rest.rsplit_once(':') {
        Some((c, b)) if !c.is_empty() => match parse_u64(b) {
            Some(n) => (c, u16::try_from(n).ok()),
            None => (rest, None),
        },
        _ => (rest, None),
    };
    Some(TlsInfo {
        version: normalize_tls_version(ver),
        cipher: intern(cipher),
        bits,
        key_exchange: gnutls_key_exchange(cipher),
        trust: None,
    })
}

/// The group inside a GnuTLS description name: `ECDHE_X25519__RSA_PSS_…` → `X25519`.
fn gnutls_key_exchange(cipher: &str) -> Option<Text> {
    let (kx, _) = cipher.split_once("__")?;
    let g = kx
        .strip_prefix("ECDHE_")
        .or_else(|| kx.strip_prefix("DHE_"))?;
    (!g.is_empty()).then(|| intern(g))
}

/// Decimal digits only, no sign, no overflow.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// An IP address as written inside brackets (`192.0.2.1`, `2001:db8::1`, `IPv6:2001:db8::1`).
/// Dotted-quad IPv4 is parsed by hand (the common case, several times faster than `FromStr`).
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Some(v4) = parse_ipv4(s.as_bytes()) {
        return Some(IpAddr::V4(v4));
    }
    let s = s.strip_prefix("IPv6:").unwrap_or(s);
    s.parse().ok()
}

fn parse_ipv4(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        let start = i;
        let mut v: u16 = 0;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() || i - start == 3 {
                break;
            }
            v = v * 10 + u16::from(c - b'0');
            i += 1;
        }
        // No empty parts, no leading zeros (as FromStr), at most 255.
        if i == start || (i - start > 1 && b.get(start) == Some(&b'0')) {
            return None;
        }
        *octet = u8::try_from(v).ok()?;
        if n < 3 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == b.len()).then_some(std::net::Ipv4Addr::from(octets))
}

/// A fixed-key hash, for recipient dedupe within one message (a list, not a table: no
/// HashDoS exposure).
pub(crate) fn hash_str(s: &str) -> u64 {
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(s)
}
