//! Postfix TLS policy answers (the values of `smtp_tls_policy_maps`, see Postfix's
//! TLS_README "client_tls_policy"), their lookup keys, and writers for static policy files:
//! a Postfix map of pinned peers and an Exim domain list for `hosts_require_tls`.
//!
//! ```
//! use sigillo_policy::mta_sts::Policy;
//! use sigillo_policy::postfix::{PolicyAnswer, TlsPolicy};
//!
//! let sts = Policy::parse(b"version: STSv1\nmode: enforce\nmx: mx1.example.com\n\
//!                           mx: *.example.net\nmax_age: 86400\n")?;
//! let answer = PolicyAnswer::from(TlsPolicy::from_sts(&sts));
//! assert_eq!(
//!     answer.to_string(),
//!     "secure match=mx1.example.com:.example.net servername=hostname"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::{self, DomainError, excerpt};
use crate::mta_sts::Policy;
use crate::tlsrpt::{PolicyType, ResultType};

/// The `servername=` attribute: the SNI name Postfix sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerName {
    /// `hostname`: the MX host's name (what MTA-STS requires).
    Hostname,
    /// `nexthop`: the next-hop domain.
    Nexthop,
    /// A literal name.
    Literal(String),
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerName::Hostname => f.write_str("hostname"),
            ServerName::Nexthop => f.write_str("nexthop"),
            ServerName::Literal(name) => f.write_str(name),
        }
    }
}

/// A Postfix TLS security level with the attributes sigillo sets.
///
/// `Display` gives the policy text, e.g. `secure match=.example.com servername=hostname`.
/// An empty `matches` leaves `match=` out, so Postfix applies its default
/// (`smtp_tls_verify_cert_match`, `smtp_tls_secure_cert_match`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "kebab-case")]
pub enum TlsPolicy {
    /// No TLS.
    None,
    /// Opportunistic TLS: plaintext when STARTTLS is missing (what stripping defeats).
    May,
    /// Mandatory TLS, certificate not checked.
    Encrypt,
    /// Opportunistic DANE: authenticated with usable TLSA, else `may`.
    Dane,
    /// Mandatory DANE: no delivery without usable DNSSEC-validated TLSA.
    DaneOnly,
    /// Certificate fingerprints (`match=` joined with `|`).
    Fingerprint { matches: Vec<String> },
    /// PKIX, name checked against `match=` (default: the MX host name).
    Verify { matches: Vec<String> },
    /// PKIX, name checked against `match=` (default: the next-hop domain).
    Secure {
        matches: Vec<String>,
        servername: Option<ServerName>,
    },
}

impl TlsPolicy {
    /// The level keyword.
    pub fn level(&self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::May => "may",
            TlsPolicy::Encrypt => "encrypt",
            TlsPolicy::Dane => "dane",
            TlsPolicy::DaneOnly => "dane-only",
            TlsPolicy::Fingerprint { .. } => "fingerprint",
            TlsPolicy::Verify { .. } => "verify",
            TlsPolicy::Secure { .. } => "secure",
        }
    }

    /// The answer for an MTA-STS policy, as postfix-mta-sts-resolver gives it: `secure`
    /// matching every `mx` pattern (`*.example.com` as `.example.com`, duplicates dropped)
    /// with `servername=hostname`. Meant for `enforce` policies; the mode is not checked here.
    pub fn from_sts(policy: &Policy) -> Self {
        let mut matches: Vec<String> = Vec::with_capacity(policy.mx.len());
        let mut seen: HashSet<String> = HashSet::with_capacity(policy.mx.len());
        for m in policy.mx.iter().map(|p| p.postfix_match()) {
            if seen.insert(m.clone()) {
                matches.push(m);
            }
        }
        TlsPolicy::Secure {
            matches,
            servername: Some(ServerName::Hostname),
        }
    }
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.level())?;
        let (matches, separator, servername) = match self {
            TlsPolicy::Fingerprint { matches } => (matches.as_slice(), "|", None),
            TlsPolicy::Verify { matches } => (matches.as_slice(), ":", None),
            TlsPolicy::Secure {
                matches,
                servername,
            } => (matches.as_slice(), ":", servername.as_ref()),
            _ => (&[][..], ":", None),
        };
        if !matches.is_empty() {
            write!(f, " match={}", matches.join(separator))?;
        }
        if let Some(name) = servername {
            write!(f, " servername={name}")?;
        }
        Ok(())
    }
}

/// The TLSRPT attributes Postfix 3.10 and later read from a policy answer for an MTA-STS
/// policy, so that its TLSRPT client can report on it (`policy_type`, `policy_domain`,
/// `policy_ttl`, `mx_host_pattern`, `policy_string`, `policy_failure`; names as in Postfix's
/// `smtp_tls_policy` tests).
///
/// Postfix before 3.10 rejects these unknown attributes and with them the whole policy, so
/// only add them when the MTA is known to be 3.10 or later. `policy_string` values contain
/// spaces (`mode: enforce`) and are written in Postfix's `{ name = value }` form; a real
/// Postfix 3.10 reads them so and reports them to its TLSRPT library unchanged
/// (`crates/sigillo/tests/tlsrpt_postfix.rs`). Lines containing `{`, `}` or a control
/// character (an extension value may hold a tab) are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRptAttributes {
    /// `policy_type=`.
    pub policy_type: PolicyType,
    /// `policy_domain=`: the domain whose policy this is.
    pub policy_domain: String,
    /// `policy_ttl=`: seconds the policy stays valid (the MTA-STS `max_age`).
    pub policy_ttl: Option<u32>,
    /// `mx_host_pattern=`, one per MTA-STS `mx` pattern, as written (`*.example.com`).
    pub mx_host_patterns: Vec<String>,
    /// `policy_string`, one per policy line.
    pub policy_strings: Vec<String>,
    /// `policy_failure=`: why the policy could not be applied, if it could not.
    pub policy_failure: Option<ResultType>,
}

impl TlsRptAttributes {
    /// The attributes for an MTA-STS policy of `domain`.
    pub fn for_sts(domain: &str, policy: &Policy) -> Self {
        Self {
            policy_type: PolicyType::Sts,
            policy_domain: domain.to_owned(),
            policy_ttl: Some(policy.max_age),
            mx_host_patterns: policy.mx.iter().map(ToString::to_string).collect(),
            policy_strings: policy
                .lines()
                .into_iter()
                .filter(|l| !l.contains(['{', '}']) && !l.contains(|c: char| c.is_control()))
                .collect(),
            policy_failure: None,
        }
    }
}

impl fmt::Display for TlsRptAttributes {
    /// ` policy_type=sts policy_domain=… …`, with a leading space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            " policy_type={} policy_domain={}",
            self.policy_type, self.policy_domain
        )?;
        if let Some(ttl) = self.policy_ttl {
            write!(f, " policy_ttl={ttl}")?;
        }
        for p in &self.mx_host_patterns {
            write!(f, " mx_host_pattern={p}")?;
        }
        for s in &self.policy_strings {
            write!(f, " {{ policy_string = {s} }}")?;
        }
        if let Some(failure) = self.policy_failure {
            write!(f, " policy_failure={failure}")?;
        }
        Ok(())
    }
}

/// Attributes passed through verbatim from a static override (names Postfix accepts in
/// `smtp_tls_policy_maps` besides `match` and `servername`).
pub const PASSTHROUGH_ATTRIBUTES: &[&str] = &[
    "protocols",
    "ciphers",
    "exclude",
    "tafile",
    "connection_reuse",
    "enable_rpk",
];

/// A complete answer: the level, attributes passed through from a static override, and
/// optional TLSRPT attributes. `Display` gives the text after `OK ` in the socketmap reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAnswer {
    /// The level with `match=` and `servername=`.
    pub policy: TlsPolicy,
    /// Other `name=value` attributes, in order (from [`PASSTHROUGH_ATTRIBUTES`]).
    pub extra: Vec<(String, String)>,
    /// TLSRPT attributes for Postfix ≥ 3.10.
    pub tlsrpt: Option<TlsRptAttributes>,
}

impl From<TlsPolicy> for PolicyAnswer {
    fn from(policy: TlsPolicy) -> Self {
        Self {
            policy,
            extra: Vec::new(),
            tlsrpt: None,
        }
    }
}

impl fmt::Display for PolicyAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.policy)?;
        for (name, value) in &self.extra {
            write!(f, " {name}={value}")?;
        }
        if let Some(attrs) = &self.tlsrpt {
            write!(f, "{attrs}")?;
        }
        Ok(())
    }
}

/// Why policy text (as in a Postfix policy map or sigillo's override file) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyTextError {
    /// No level at all.
    #[error(
        "empty policy: expected a level (none, may, encrypt, dane, dane-only, fingerprint, verify, secure)"
    )]
    Empty,
    /// An unknown level keyword.
    #[error(
        "unknown TLS level {got:?}: expected none, may, encrypt, dane, dane-only, fingerprint, verify or secure"
    )]
    UnknownLevel { got: String },
    /// A word after the level that is not `name=value`.
    #[error("policy attribute {got:?}: expected name=value")]
    NotAttribute { got: String },
    /// An attribute name sigillo does not pass on.
    #[error("unknown policy attribute {got:?}: expected match, servername, {}", PASSTHROUGH_ATTRIBUTES.join(", "))]
    UnknownAttribute { got: String },
    /// An attribute with an empty value.
    #[error("policy attribute {name} has an empty value")]
    EmptyValue { name: String },
    /// An attribute the level does not take (e.g. `match=` with `encrypt`).
    #[error("attribute {attribute} does not apply to level {level}")]
    NotForLevel {
        attribute: &'static str,
        level: &'static str,
    },
    /// A control character, which Postfix would misread.
    #[error("control character {ch:?} in policy text")]
    ControlChar { ch: char },
    /// `servername=` given twice.
    #[error("attribute servername given more than once")]
    DuplicateServername,
    /// `ciphers=`, `protocols=` or `exclude=` given twice, which Postfix refuses.
    #[error("attribute {name} given more than once")]
    RepeatedAttribute { name: &'static str },
}

/// Attributes Postfix accepts once only in a policy (besides `servername`).
const ONCE_ONLY_ATTRIBUTES: [&str; 3] = ["ciphers", "protocols", "exclude"];

impl FromStr for PolicyAnswer {
    type Err = PolicyTextError;

    /// Parses `level [name=value …]` as Postfix reads a policy map entry: words are split
    /// at white space and commas, the level and attribute names in any case; `ciphers`,
    /// `protocols` and `exclude` at most once, `tafile` only with `verify` or `secure` (TLSRPT
    /// attributes are not accepted; `match=` may repeat and its patterns add up). What Postfix
    /// would refuse (deferring the mail as a configuration error) is refused here.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() && !c.is_ascii_whitespace())
        {
            return Err(PolicyTextError::ControlChar { ch: c });
        }
        let mut words =
            (text.split(|c: char| c.is_ascii_whitespace() || c == ',')).filter(|w| !w.is_empty());
        let level = words.next().ok_or(PolicyTextError::Empty)?;
        let level = level.to_ascii_lowercase();
        let level = level.as_str();
        let mut matches: Vec<String> = Vec::new();
        let mut servername: Option<ServerName> = None;
        let mut extra: Vec<(String, String)> = Vec::new();
        for word in words {
            let Some((name, value)) = word.split_once('=') else {
                return Err(PolicyTextError::NotAttribute { got: excerpt(word) });
            };
            if value.is_empty() {
                return Err(PolicyTextError::EmptyValue {
                    name: excerpt(name),
                });
            }
            let name = name.to_ascii_lowercase();
            if let Some(once) = ONCE_ONLY_ATTRIBUTES.iter().find(|&&a| a == name)
                && extra.iter().any(|(n, _)| n == once)
            {
                return Err(PolicyTextError::RepeatedAttribute { name: once });
            }
            let name = name.as_str();
            match name {
                "match" => {
                    let separator = if level == "fingerprint" { '|' } else { ':' };
                    matches.extend(
                        value
                            .split(separator)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned),
                    );
                }
                "servername" => {
                    if servername.is_some() {
                        return Err(PolicyTextError::DuplicateServername);
                    }
                    servername = Some(match value {
                        "hostname" => ServerName::Hostname,
                        "nexthop" => ServerName::Nexthop,
                        literal => ServerName::Literal(literal.to_owned()),
                    });
                }
                n if PASSTHROUGH_ATTRIBUTES.contains(&n) => {
                    extra.push((name.to_owned(), value.to_owned()));
                }
                _ => {
                    return Err(PolicyTextError::UnknownAttribute { got: excerpt(name) });
                }
            }
        }
        let no_match = |level: &'static str, policy: TlsPolicy| {
            if matches.is_empty() {
                Ok(policy)
            } else {
                Err(PolicyTextError::NotForLevel {
                    attribute: "match",
                    level,
                })
            }
        };
        let policy = match level {
            "none" => no_match("none", TlsPolicy::None)?,
            "may" => no_match("may", TlsPolicy::May)?,
            "encrypt" => no_match("encrypt", TlsPolicy::Encrypt)?,
            "dane" => no_match("dane", TlsPolicy::Dane)?,
            "dane-only" => no_match("dane-only", TlsPolicy::DaneOnly)?,
            "fingerprint" => TlsPolicy::Fingerprint { matches },
            "verify" => TlsPolicy::Verify { matches },
            "secure" => TlsPolicy::Secure {
                matches,
                servername: servername.take(),
            },
            other => {
                return Err(PolicyTextError::UnknownLevel {
                    got: excerpt(other),
                });
            }
        };
        if extra.iter().any(|(n, _)| n == "tafile")
            && !matches!(policy, TlsPolicy::Verify { .. } | TlsPolicy::Secure { .. })
        {
            return Err(PolicyTextError::NotForLevel {
                attribute: "tafile",
                level: policy.level(),
            });
        }
        if let Some(name) = servername {
            // Only `secure` keeps it in TlsPolicy; for the others Postfix takes it as is.
            if matches!(policy, TlsPolicy::None) {
                return Err(PolicyTextError::NotForLevel {
                    attribute: "servername",
                    level: "none",
                });
            }
            extra.insert(0, ("servername".to_owned(), name.to_string()));
        }
        Ok(Self {
            policy,
            extra,
            tlsrpt: None,
        })
    }
}

/// A `smtp_tls_policy_maps` lookup key, as Postfix sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum NextHop {
    /// A domain (canonical form): the recipient domain or a transport's next-hop domain.
    /// MTA-STS, DANE and pins apply to these.
    Domain(String),
    /// `.example.com`: Postfix asking for a parent-domain entry (canonical form, without
    /// the dot). Only static overrides answer these.
    ParentDomain(String),
    /// Anything else (`[mx.example.com]:587`, an address literal, a malformed key): only an
    /// exact static override can answer.
    Other(String),
}

impl NextHop {
    /// Classifies a key.
    pub fn parse(key: &str) -> Self {
        if let Some(parent) = key.strip_prefix('.')
            && let Ok(d) = domain::normalize(parent)
        {
            return NextHop::ParentDomain(d);
        }
        match domain::normalize(key) {
            // An all-numeric last label is an IPv4 address, not a domain.
            Ok(d) if !d.rsplit('.').next().is_some_and(is_all_digits) => NextHop::Domain(d),
            _ => NextHop::Other(key.to_ascii_lowercase()),
        }
    }

    /// The key in the canonical form static overrides are stored under: lowercase, no
    /// trailing dot, `.` kept for parent domains.
    pub fn canonical_key(&self) -> String {
        match self {
            NextHop::Domain(d) | NextHop::Other(d) => d.clone(),
            NextHop::ParentDomain(d) => format!(".{d}"),
        }
    }
}

fn is_all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The level a peer is pinned at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinLevel {
    /// TLS required, certificate not checked.
    Encrypt,
    /// TLS required with a PKIX-valid certificate for the MX host name.
    Verify,
}

impl PinLevel {
    /// The Postfix policy for this level (`verify` without `match=`: Postfix checks the MX
    /// host name by default).
    pub fn policy(self) -> TlsPolicy {
        match self {
            PinLevel::Encrypt => TlsPolicy::Encrypt,
            PinLevel::Verify => TlsPolicy::Verify {
                matches: Vec::new(),
            },
        }
    }
}

/// What a pin is based on: message counts over the observed window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Messages delivered to the peer.
    pub messages: u64,
    /// Of those, delivered over TLS.
    pub tls: u64,
    /// Of those, delivered with a verified certificate.
    pub verified: u64,
}

/// SMTP's port: a relay key names its port only when it is another one.
pub const SMTP_PORT: u16 = 25;

/// Why a pin key is not one a pin can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinKeyError {
    /// The domain, or the host of a relay key (`[host]`), is not a valid domain name (nor an
    /// IPv4 address).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A relay key whose brackets hold a colon but no IPv6 address (`[2001:db8::x]`).
    #[error("{got:?} in brackets is not an IPv6 address")]
    BadAddress { got: String },
    /// A relay key with something after `]` other than `:PORT`, a port from 1 to 65535
    /// (a service name such as `:submission` is not taken: write the number).
    #[error("{got:?} after the brackets: expected nothing or :PORT, a number from 1 to 65535")]
    BadPort { got: String },
}

/// A relay next hop as Postfix looks it up in `smtp_tls_policy_maps`: `[host]` or
/// `[host]:port`. Postfix looks the next hop up as written in main.cf (`relayhost`, a
/// transport's `smtp:[host]:port`, `smtp_fallback_relay`): brackets, port and an IPv6
/// address's `ipv6:` prefix included (Postfix's `host_port()` takes `[ipv6:2001:db8::1]` as
/// well as `[2001:db8::1]`). So two keys for one server may differ (`[host]` and
/// `[host]:25`, `[ipv6:2001:db8::1]` and `[2001:db8::1]`): [`RelayKey::match_key`] is the same
/// for both, for a lookup that should find either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayKey {
    /// The host as written, lowercase: a domain name (canonical form), an IPv4 address, or an
    /// IPv6 address, with `ipv6:` when written so.
    host: String,
    /// The address, for an IPv6 host.
    ipv6: Option<std::net::Ipv6Addr>,
    /// The port as written after the brackets, and its value.
    port: Option<(String, u16)>,
}

impl RelayKey {
    /// The key of a relay `host` as logged (a name, an IPv4 or IPv6 address) on `port`:
    /// `[host]`, or `[host]:port` for a port other than 25. An IPv6 address is kept as
    /// spelled (lowercase, `[2001:db8:0::25]`): Postfix logs a relay given as an address as
    /// main.cf or the transport writes it, and looks that same text up in a `hash:` map, so
    /// the logged spelling is the key that map needs.
    pub fn new(host: &str, port: Option<u16>) -> Result<Self, PinKeyError> {
        let (host, ipv6) = relay_host(host)?;
        let port = match port {
            Some(0) => return Err(PinKeyError::BadPort { got: ":0".into() }),
            Some(p) if p != SMTP_PORT => Some((p.to_string(), p)),
            _ => None,
        };
        Ok(Self { host, ipv6, port })
    }

    /// Parses `[host]` or `[host]:port` (`None` when `key` does not start with `[`).
    pub fn parse(key: &str) -> Option<Result<Self, PinKeyError>> {
        let inner = key.strip_prefix('[')?;
        let Some((host, after)) = inner.split_once(']') else {
            return Some(Err(PinKeyError::Domain(DomainError::BadChar {
                name: excerpt(key),
                ch: '[',
            })));
        };
        Some(Self::parse_parts(host, after))
    }

    fn parse_parts(host: &str, after: &str) -> Result<Self, PinKeyError> {
        let (host, ipv6) = relay_host(host)?;
        let port = match after {
            "" => None,
            _ => {
                let port = after
                    .strip_prefix(':')
                    .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|p| Some((p, p.parse::<u16>().ok()?)))
                    .filter(|(_, n)| *n > 0);
                let Some((text, n)) = port else {
                    return Err(PinKeyError::BadPort {
                        got: excerpt(after),
                    });
                };
                Some((text.to_owned(), n))
            }
        };
        Ok(Self { host, ipv6, port })
    }

    /// The host as written, lowercase (an IPv6 address keeps an `ipv6:` prefix).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host without an `ipv6:` prefix: a name or an address.
    pub fn name(&self) -> &str {
        strip_ipv6_prefix(&self.host).unwrap_or(&self.host)
    }

    /// The IPv6 address, when the host is one.
    pub fn ipv6(&self) -> Option<std::net::Ipv6Addr> {
        self.ipv6
    }

    /// The port: as written, else 25.
    pub fn port(&self) -> u16 {
        self.port.as_ref().map_or(SMTP_PORT, |(_, n)| *n)
    }

    /// The same server, whatever the spelling: `[host]` with an IPv6 address in its
    /// canonical form (RFC 5952; Postfix logs it as written) and no `ipv6:` prefix, and
    /// `:port` only for a port other than 25.
    pub fn match_key(&self) -> String {
        let host = match self.ipv6 {
            Some(ip) => ip.to_string(),
            None => self.host.clone(),
        };
        match self.port() {
            SMTP_PORT => format!("[{host}]"),
            port => format!("[{host}]:{port}"),
        }
    }
}

impl fmt::Display for RelayKey {
    /// The key as written: `[host]`, `[host]:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.host)?;
        if let Some((port, _)) = &self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// `host` without Postfix's `ipv6:` prefix (any case), if it has one.
fn strip_ipv6_prefix(host: &str) -> Option<&str> {
    host.get(..5)
        .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
        .and_then(|_| host.get(5..))
}

/// The host of a relay key, checked: lowercase, a domain name in canonical form (an IPv4
/// address passes as one), or an IPv6 address (with `ipv6:` if written so) and its value.
fn relay_host(host: &str) -> Result<(String, Option<std::net::Ipv6Addr>), PinKeyError> {
    let (prefixed, address) = match strip_ipv6_prefix(host) {
        Some(address) => (true, address),
        None => (false, host),
    };
    if prefixed || address.contains(':') {
        let ip: std::net::Ipv6Addr = address
            .parse()
            .map_err(|_| PinKeyError::BadAddress { got: excerpt(host) })?;
        return Ok((host.to_ascii_lowercase(), Some(ip)));
    }
    Ok((domain::normalize(host)?, None))
}

/// The key `key` is found under among pins ([`PinnedPeer::match_key`]): a relay key's
/// [`RelayKey::match_key`], else the key itself, lowercase. For a key Postfix asks.
pub fn next_hop_match_key(key: &str) -> String {
    match RelayKey::parse(key) {
        Some(Ok(relay)) => relay.match_key(),
        _ => key.to_ascii_lowercase(),
    }
}

/// A next hop pinned from history: deliveries to it must use TLS from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedPeer {
    /// The `smtp_tls_policy_maps` key: a next-hop domain, or a relay ([`RelayKey`]:
    /// `[smtp.isp.example]`, what Postfix looks up for `relayhost = [smtp.isp.example]`;
    /// `[smtp.isp.example]:587`, `[2001:db8::25]`), in canonical form: use
    /// [`PinnedPeer::new`], [`PinnedPeer::relay`] or [`PinnedPeer::from_key`].
    pub domain: String,
    /// How strict the pin is.
    pub level: PinLevel,
    /// Why.
    pub evidence: Evidence,
}

impl PinnedPeer {
    /// A pin for `domain` (checked and put in canonical form).
    pub fn new(domain: &str, level: PinLevel, evidence: Evidence) -> Result<Self, DomainError> {
        Ok(Self {
            domain: domain::normalize(domain)?,
            level,
            evidence,
        })
    }

    /// A pin for the relay `host` (a host name, an IPv4 or IPv6 address, as logged) on
    /// `port`, keyed as Postfix looks up a bracketed next hop ([`RelayKey::new`]): `[host]`
    /// for `relayhost = [host]`, `[host]:587` for `relayhost = [host]:587`; an IPv6 address
    /// as spelled.
    pub fn relay(
        host: &str,
        port: Option<u16>,
        level: PinLevel,
        evidence: Evidence,
    ) -> Result<Self, PinKeyError> {
        Ok(Self {
            domain: RelayKey::new(host, port)?.to_string(),
            level,
            evidence,
        })
    }

    /// A pin for a key as a pin file holds it: `[host]` or `[host]:port` for a relay
    /// ([`RelayKey::parse`]), else a domain.
    pub fn from_key(key: &str, level: PinLevel, evidence: Evidence) -> Result<Self, PinKeyError> {
        Ok(Self {
            domain: pin_key(key)?,
            level,
            evidence,
        })
    }

    /// Whether the key is a relay (`[host]`), not a domain.
    pub fn is_relay(&self) -> bool {
        self.domain.starts_with('[')
    }

    /// The relay key, for a relay pin.
    pub fn relay_key(&self) -> Option<RelayKey> {
        RelayKey::parse(&self.domain)?.ok()
    }

    /// The key this pin answers for ([`next_hop_match_key`] of a key Postfix asks): the
    /// domain, or a relay's [`RelayKey::match_key`], so that `[ipv6:2001:db8::25]` finds a pin
    /// for `[2001:db8::25]`, and `[host]:25` one for `[host]`.
    pub fn match_key(&self) -> String {
        next_hop_match_key(&self.domain)
    }
}

/// The canonical form of a pin key: a relay key ([`RelayKey`], written back as given,
/// lowercase), or a domain.
fn pin_key(key: &str) -> Result<String, PinKeyError> {
    match RelayKey::parse(key) {
        Some(relay) => Ok(relay?.to_string()),
        None => Ok(domain::normalize(key)?),
    }
}

/// Why pins cannot be written to a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinFileError {
    /// A pin's domain is not a valid domain name. The message names the line (when read from
    /// a file) but not the reason, which is the [`source`](std::error::Error::source) (and
    /// names the domain itself): a report that prints the chain shows each once.
    #[error("{}", bad_domain_context(.line))]
    BadDomain {
        /// The 1-based line of the pin file, when the pins were read from one.
        line: Option<usize>,
        /// The domain as given (an excerpt of it, if long).
        domain: String,
        #[source]
        source: DomainError,
    },
    /// A relay key whose port or IPv6 address is not valid. The message names the line but
    /// not the reason, which is the [`source`](std::error::Error::source).
    #[error("{}", bad_key_context(.line))]
    BadRelayKey {
        /// The 1-based line of the pin file, when the pins were read from one.
        line: Option<usize>,
        /// The key as given (an excerpt of it, if long).
        key: String,
        #[source]
        source: PinKeyError,
    },
    /// The same domain is pinned twice.
    #[error("domain {domain} is pinned more than once")]
    Duplicate { domain: String },
    /// One relay is pinned under two spellings of its key (`[host]` and `[host]:25`,
    /// `[2001:db8::25]` and `[2001:0db8::25]` or `[ipv6:2001:db8::25]`: one relay for
    /// `policy serve`, [`RelayKey::match_key`]) at two levels. Spellings with one level are
    /// taken: each is a key Postfix may look up (two transports may write one relay
    /// differently), and every lookup gets the same answer; at two levels, which one a
    /// lookup gets would depend on the spelling.
    #[error(
        "{}",
        conflicting_relay_message((.line, .key, .level), (.first_line, .first, .first_level))
    )]
    ConflictingRelay {
        /// The 1-based line of the second spelling, when the pins were read from a file.
        line: Option<usize>,
        /// The second spelling, in canonical form.
        key: String,
        /// Its level.
        level: PinLevel,
        /// The 1-based line of the first spelling, when the pins were read from a file.
        first_line: Option<usize>,
        /// The first spelling, in canonical form (pins being written: the first in order).
        first: String,
        /// Its level.
        first_level: PinLevel,
    },
    /// A line of a pin file that is not `domain  encrypt|verify`.
    #[error("pin file line {line}: expected {expected}, got {got:?}")]
    BadLine {
        line: usize,
        expected: &'static str,
        got: String,
    },
}

/// The message of [`PinFileError::BadDomain`], without its source.
fn bad_domain_context(line: &Option<usize>) -> String {
    match line {
        Some(line) => format!("pin file line {line}: not a valid domain name"),
        None => "pinned domain is not a valid domain name".to_owned(),
    }
}

/// The message of [`PinFileError::ConflictingRelay`]: the second spelling, then the first.
fn conflicting_relay_message(
    (line, key, level): (&Option<usize>, &str, &PinLevel),
    (first_line, first, first_level): (&Option<usize>, &str, &PinLevel),
) -> String {
    let (level, first_level) = (level.policy(), first_level.policy());
    let what = "spellings of one relay need one level";
    match (line, first_line) {
        (Some(line), Some(first_line)) => format!(
            "pin file line {line}: relay {key} is pinned {level}, but line {first_line} pins it \
             {first_level} as {first}: {what}"
        ),
        _ => format!("relay {key} is pinned {level}, but also {first_level} as {first}: {what}"),
    }
}

/// The message of [`PinFileError::BadRelayKey`], without its source.
fn bad_key_context(line: &Option<usize>) -> String {
    match line {
        Some(line) => format!("pin file line {line}: not a valid relay key"),
        None => "pinned relay key is not valid".to_owned(),
    }
}

impl PinFileError {
    /// The error for a key that [`PinnedPeer::from_key`] refused.
    fn bad_key(line: Option<usize>, key: &str, error: PinKeyError) -> Self {
        match error {
            PinKeyError::Domain(source) => PinFileError::BadDomain {
                line,
                domain: excerpt(key),
                source,
            },
            source => PinFileError::BadRelayKey {
                line,
                key: excerpt(key),
                source,
            },
        }
    }
}

/// The pins checked and sorted by domain. What [`read_policy_map_file`] would refuse is
/// refused here too: a domain twice, and one relay under two spellings of its key at two
/// levels ([`PinFileError::ConflictingRelay`]), so that every file written reads back. One
/// relay under several spellings at one level is written as a line for each.
fn sorted_pins(peers: &[PinnedPeer]) -> Result<Vec<(String, &PinnedPeer)>, PinFileError> {
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        let d = pin_key(&p.domain).map_err(|e| PinFileError::bad_key(None, &p.domain, e))?;
        out.push((d, p));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(PinFileError::Duplicate {
            domain: w[0].0.clone(),
        });
    }
    let mut relays: Vec<(String, &str, PinLevel)> = out
        .iter()
        .filter(|(d, _)| d.starts_with('['))
        .map(|(d, p)| (next_hop_match_key(d), d.as_str(), p.level))
        .collect();
    relays.sort();
    if let Some(w) = relays
        .windows(2)
        .find(|w| w[0].0 == w[1].0 && w[0].2 != w[1].2)
    {
        return Err(PinFileError::ConflictingRelay {
            line: None,
            key: w[1].1.to_owned(),
            level: w[1].2,
            first_line: None,
            first: w[0].1.to_owned(),
            first_level: w[0].2,
        });
    }
    Ok(out)
}

fn evidence_comment(e: &Evidence) -> String {
    format!(
        "# {} messages, {} over TLS, {} verified",
        e.messages, e.tls, e.verified
    )
}

/// A Postfix `smtp_tls_policy_maps` source file (for `postmap hash:…` or `texthash:…`):
/// one `domain  encrypt|verify` line per pin, sorted, each after a comment with its
/// evidence.
pub fn policy_map_file(peers: &[PinnedPeer]) -> Result<String, PinFileError> {
    let pins = sorted_pins(peers)?;
    let width = pins.iter().map(|(d, _)| d.len()).max().unwrap_or(0);
    let mut out = String::from(
        "# Postfix smtp_tls_policy_maps: peers pinned by sigillo policy build.\n\
         # Generated file; edit the inputs and build it again.\n",
    );
    for (d, p) in pins {
        out.push_str(&evidence_comment(&p.evidence));
        out.push('\n');
        out.push_str(&format!("{d:width$}  {}\n", p.level.policy()));
    }
    Ok(out)
}

/// Reads back a pin file in the format [`policy_map_file`] writes: one `domain  level` line
/// per pin (`encrypt` or `verify`, nothing after it; the key may be a relay, `[host]` or
/// `[host]:port`, the host a name or an IPv4 or IPv6 address: [`RelayKey`]), `#` comments and
/// blank lines. A comment
/// of the form `# N messages, N over TLS, N verified` right before a pin is its evidence;
/// without one the evidence is zero. Domains are put in canonical form; a domain given twice
/// is an error. A relay may be given under several spellings of its key (`[2001:db8::25]`
/// and `[2001:db8:0::25]`, `[host]` and `[host]:25`: each is what Postfix looks up for a
/// next hop written so), each with the same level; at two levels it is an error
/// ([`PinFileError::ConflictingRelay`]). The pins are in the order of the file.
pub fn read_policy_map_file(text: &str) -> Result<Vec<PinnedPeer>, PinFileError> {
    let mut pins: Vec<PinnedPeer> = Vec::new();
    // The keys pinned so far, and for each relay (by match key) its first pin's index and
    // line: looked up, not scanned for, so that a file of many pins reads in linear time.
    let mut keys: HashSet<String> = HashSet::new();
    let mut relays: HashMap<String, (usize, usize)> = HashMap::new();
    let mut evidence: Option<Evidence> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            evidence = parse_evidence(comment);
            continue;
        }
        if trimmed.is_empty() {
            evidence = None;
            continue;
        }
        let bad = |expected| PinFileError::BadLine {
            line,
            expected,
            got: excerpt(trimmed),
        };
        let mut words = trimmed.split_ascii_whitespace();
        let (Some(name), Some(level), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("'domain  encrypt' or 'domain  verify'"));
        };
        let level = match level {
            "encrypt" => PinLevel::Encrypt,
            "verify" => PinLevel::Verify,
            _ => return Err(bad("level encrypt or verify after the domain")),
        };
        let peer = PinnedPeer::from_key(name, level, evidence.take().unwrap_or_default())
            .map_err(|e| PinFileError::bad_key(Some(line), name, e))?;
        if keys.contains(&peer.domain) {
            return Err(PinFileError::Duplicate {
                domain: peer.domain,
            });
        }
        // Another spelling of a relay already pinned, at another level: `policy serve` finds
        // a relay's pin by its match key, so only one of the two could answer, and a
        // `hash:` map would answer each spelling differently. The spellings before share one
        // level, so the first of them is the one to name.
        if peer.is_relay() {
            match relays.entry(peer.match_key()) {
                Entry::Occupied(first) => {
                    let &(index, first_line) = first.get();
                    let first = &pins[index];
                    if first.level != peer.level {
                        return Err(PinFileError::ConflictingRelay {
                            line: Some(line),
                            key: peer.domain,
                            level: peer.level,
                            first_line: Some(first_line),
                            first: first.domain.clone(),
                            first_level: first.level,
                        });
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert((pins.len(), line));
                }
            }
        }
        keys.insert(peer.domain.clone());
        pins.push(peer);
    }
    Ok(pins)
}

/// The counts of an evidence comment (` 120 messages, 118 over TLS, 90 verified`, without
/// the `#`; a trailing ` (level)` as in Exim lists is allowed).
fn parse_evidence(comment: &str) -> Option<Evidence> {
    let mut counts = comment.split(',').map(str::trim);
    let mut count = |suffix: &str| -> Option<u64> {
        let part = counts.next()?;
        let part = part.split(" (").next().unwrap_or(part);
        part.strip_suffix(suffix)?.trim().parse().ok()
    };
    let evidence = Evidence {
        messages: count("messages")?,
        tls: count("over TLS")?,
        verified: count("verified")?,
    };
    counts.next().is_none().then_some(evidence)
}

/// An Exim domain list file (one domain per line, sorted, `#` comments) of every pin, for a
/// `domainlist` used by the smtp transport, e.g.:
///
/// ```text
/// domainlist tls_pinned = /etc/exim4/tls_pinned
/// # in the remote_smtp transport (needs one domain per delivery):
/// multi_domain = false
/// hosts_require_tls = ${if match_domain{$domain}{+tls_pinned}{*}{}}
/// ```
///
/// Exim's `hosts_require_tls` only makes TLS mandatory: `verify` pins are listed the same as
/// `encrypt` ones (their evidence comment says which they are). Relay pins (`[host]`) are not
/// domains and are left out: in Exim, name the relay in `hosts_require_tls` itself.
pub fn exim_domain_list(peers: &[PinnedPeer]) -> Result<String, PinFileError> {
    let domains: Vec<PinnedPeer> = peers.iter().filter(|p| !p.is_relay()).cloned().collect();
    let pins = sorted_pins(&domains)?;
    let mut out = String::from(
        "# Exim domain list for hosts_require_tls: peers pinned by sigillo policy build.\n\
         # Generated file; edit the inputs and build it again.\n",
    );
    for (d, p) in pins {
        let level = match p.level {
            PinLevel::Encrypt => "encrypt",
            PinLevel::Verify => "verify",
        };
        out.push_str(&format!(
            "{} ({level})\n{d}\n",
            evidence_comment(&p.evidence)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_display() {
        let cases: Vec<(TlsPolicy, &str)> = vec![
            (TlsPolicy::None, "none"),
            (TlsPolicy::May, "may"),
            (TlsPolicy::Encrypt, "encrypt"),
            (TlsPolicy::Dane, "dane"),
            (TlsPolicy::DaneOnly, "dane-only"),
            (
                TlsPolicy::Verify {
                    matches: Vec::new(),
                },
                "verify",
            ),
            (
                TlsPolicy::Verify {
                    matches: vec!["hostname".into(), "nexthop".into()],
                },
                "verify match=hostname:nexthop",
            ),
            (
                TlsPolicy::Fingerprint {
                    matches: vec!["AB:CD".into(), "EF:01".into()],
                },
                "fingerprint match=AB:CD|EF:01",
            ),
            (
                TlsPolicy::Secure {
                    matches: vec!["mx1.example.com".into(), ".example.net".into()],
                    servername: Some(ServerName::Hostname),
                },
                "secure match=mx1.example.com:.example.net servername=hostname",
            ),
            (
                TlsPolicy::Secure {
                    matches: Vec::new(),
                    servername: Some(ServerName::Literal("mx.example".into())),
                },
                "secure servername=mx.example",
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(policy.to_string(), want);
        }
    }

    #[test]
    fn sts_mapping_turns_wildcards_into_dot_domains_once() {
        let sts = Policy::parse(
            b"version: STSv1\nmode: enforce\nmx: *.example.net\nmx: mail.example.com\n\
              mx: *.EXAMPLE.net.\nmax_age: 60\n",
        )
        .unwrap();
        assert_eq!(
            TlsPolicy::from_sts(&sts).to_string(),
            "secure match=.example.net:mail.example.com servername=hostname"
        );
    }

    #[test]
    fn tlsrpt_attributes_text() {
        let sts = Policy::parse(
            b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\n\
              max_age: 86400\nodd: {x}\n",
        )
        .unwrap();
        let answer = PolicyAnswer {
            tlsrpt: Some(TlsRptAttributes::for_sts("example.com", &sts)),
            ..PolicyAnswer::from(TlsPolicy::from_sts(&sts))
        };
        assert_eq!(
            answer.to_string(),
            "secure match=mx1.example.com:.example.net servername=hostname \
             policy_type=sts policy_domain=example.com policy_ttl=86400 \
             mx_host_pattern=mx1.example.com mx_host_pattern=*.example.net \
             { policy_string = version: STSv1 } { policy_string = mode: enforce } \
             { policy_string = mx: mx1.example.com } { policy_string = mx: *.example.net } \
             { policy_string = max_age: 86400 }"
        );
    }

    #[test]
    fn policy_text_parsing() {
        let ok = [
            ("encrypt", "encrypt"),
            ("  may  ", "may"),
            ("dane-only", "dane-only"),
            (
                "verify match=hostname:nexthop",
                "verify match=hostname:nexthop",
            ),
            (
                "secure match=.example.com match=example.com servername=hostname",
                "secure match=.example.com:example.com servername=hostname",
            ),
            (
                "fingerprint match=AB:CD|EF:01",
                "fingerprint match=AB:CD|EF:01",
            ),
            (
                "encrypt protocols=>=TLSv1.2 ciphers=high",
                "encrypt protocols=>=TLSv1.2 ciphers=high",
            ),
            ("encrypt servername=hostname", "encrypt servername=hostname"),
            // As Postfix reads it: commas split words, names in any case.
            (
                "SECURE MATCH=.example.com, servername=hostname",
                "secure match=.example.com servername=hostname",
            ),
            (
                "verify tafile=/etc/ta.pem tafile=/etc/ta2.pem",
                "verify tafile=/etc/ta.pem tafile=/etc/ta2.pem",
            ),
        ];
        for (text, want) in ok {
            let answer: PolicyAnswer = text.parse().unwrap();
            assert_eq!(answer.to_string(), want, "{text}");
            // Display output parses back to the same answer.
            assert_eq!(answer.to_string().parse::<PolicyAnswer>(), Ok(answer));
        }
        let bad: Vec<(&str, PolicyTextError)> = vec![
            ("", PolicyTextError::Empty),
            (
                "secur",
                PolicyTextError::UnknownLevel {
                    got: "secur".into(),
                },
            ),
            (
                "encrypt match=x",
                PolicyTextError::NotForLevel {
                    attribute: "match",
                    level: "encrypt",
                },
            ),
            (
                "none servername=hostname",
                PolicyTextError::NotForLevel {
                    attribute: "servername",
                    level: "none",
                },
            ),
            (
                "verify strict",
                PolicyTextError::NotAttribute {
                    got: "strict".into(),
                },
            ),
            (
                "verify policy_type=sts",
                PolicyTextError::UnknownAttribute {
                    got: "policy_type".into(),
                },
            ),
            (
                "verify match=",
                PolicyTextError::EmptyValue {
                    name: "match".into(),
                },
            ),
            (
                "secure servername=a servername=b",
                PolicyTextError::DuplicateServername,
            ),
            (
                "encrypt protocols=\x0b",
                PolicyTextError::ControlChar { ch: '\x0b' },
            ),
            // What Postfix refuses as a configuration error (and defers the mail for).
            (
                "secure match=a.example,b.example",
                PolicyTextError::NotAttribute {
                    got: "b.example".into(),
                },
            ),
            (
                "encrypt protocols=!SSLv2,!SSLv3",
                PolicyTextError::NotAttribute {
                    got: "!SSLv3".into(),
                },
            ),
            (
                "encrypt exclude=aNULL exclude=eNULL",
                PolicyTextError::RepeatedAttribute { name: "exclude" },
            ),
            (
                "secure ciphers=high CIPHERS=medium",
                PolicyTextError::RepeatedAttribute { name: "ciphers" },
            ),
            (
                "encrypt protocols=>=TLSv1.2 protocols=>=TLSv1.3",
                PolicyTextError::RepeatedAttribute { name: "protocols" },
            ),
            (
                "encrypt tafile=/etc/ta.pem",
                PolicyTextError::NotForLevel {
                    attribute: "tafile",
                    level: "encrypt",
                },
            ),
            (
                "dane tafile=/etc/ta.pem",
                PolicyTextError::NotForLevel {
                    attribute: "tafile",
                    level: "dane",
                },
            ),
        ];
        for (text, want) in bad {
            assert_eq!(text.parse::<PolicyAnswer>(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn next_hop_kinds() {
        let cases = [
            ("Example.COM", NextHop::Domain("example.com".into())),
            ("example.com.", NextHop::Domain("example.com".into())),
            (".Example.com", NextHop::ParentDomain("example.com".into())),
            (
                "[mx.example.com]:587",
                NextHop::Other("[mx.example.com]:587".into()),
            ),
            ("192.0.2.1", NextHop::Other("192.0.2.1".into())),
            ("[192.0.2.1]", NextHop::Other("[192.0.2.1]".into())),
            (
                "mx.example.com:587",
                NextHop::Other("mx.example.com:587".into()),
            ),
            ("", NextHop::Other(String::new())),
            ("..example", NextHop::Other("..example".into())),
        ];
        for (key, want) in cases {
            assert_eq!(NextHop::parse(key), want, "{key:?}");
        }
        assert_eq!(
            NextHop::parse(".Example.com").canonical_key(),
            ".example.com"
        );
    }

    fn pin(domain: &str, level: PinLevel, messages: u64) -> PinnedPeer {
        PinnedPeer::new(
            domain,
            level,
            Evidence {
                messages,
                tls: messages,
                verified: if level == PinLevel::Verify {
                    messages
                } else {
                    0
                },
            },
        )
        .unwrap()
    }

    #[test]
    fn pin_files() {
        let pins = [
            pin("zeta.example", PinLevel::Encrypt, 3),
            pin("Alpha.example.", PinLevel::Verify, 120),
        ];
        assert_eq!(
            policy_map_file(&pins).unwrap(),
            "# Postfix smtp_tls_policy_maps: peers pinned by sigillo policy build.\n\
             # Generated file; edit the inputs and build it again.\n\
             # 120 messages, 120 over TLS, 120 verified\n\
             alpha.example  verify\n\
             # 3 messages, 3 over TLS, 0 verified\n\
             zeta.example   encrypt\n"
        );
        assert_eq!(
            exim_domain_list(&pins).unwrap(),
            "# Exim domain list for hosts_require_tls: peers pinned by sigillo policy build.\n\
             # Generated file; edit the inputs and build it again.\n\
             # 120 messages, 120 over TLS, 120 verified (verify)\n\
             alpha.example\n\
             # 3 messages, 3 over TLS, 0 verified (encrypt)\n\
             zeta.example\n"
        );
        assert_eq!(policy_map_file(&[]).unwrap().lines().count(), 2);

        // A relay is keyed `[host]` in the map, as Postfix looks up `relayhost = [host]`, and
        // left out of the Exim domain list.
        let relay = PinnedPeer::relay(
            "SMTP.isp.example.",
            Some(25),
            PinLevel::Encrypt,
            Evidence::default(),
        )
        .unwrap();
        assert!(relay.is_relay() && !pins[0].is_relay());
        let with_relay = [pins[0].clone(), relay];
        assert!(
            policy_map_file(&with_relay)
                .unwrap()
                .contains("\n[smtp.isp.example]  encrypt\n"),
            "{:?}",
            policy_map_file(&with_relay)
        );
        assert!(!exim_domain_list(&with_relay).unwrap().contains("isp"));
        assert!(PinnedPeer::relay("[x]", None, PinLevel::Encrypt, Evidence::default()).is_err());
    }

    /// The key Postfix looks up for a relayhost is the next hop as written in main.cf: a port
    /// other than 25 is part of it, and an IPv6 address is written in brackets (Postfix 3.7
    /// asks `[::1]:2525` for `relayhost = [::1]:2525`, `[IPv6:0:0::1]:2525` for
    /// `relayhost = [IPv6:0:0::1]:2525`, and logs both as `relay=…[::1]:2525`).
    #[test]
    fn relay_keys_name_the_port_and_ipv6_addresses() {
        let key = |host: &str, port| {
            PinnedPeer::relay(host, port, PinLevel::Encrypt, Evidence::default()).map(|p| p.domain)
        };
        assert_eq!(key("Smtp.ISP.example", None).unwrap(), "[smtp.isp.example]");
        assert_eq!(
            key("smtp.isp.example", Some(25)).unwrap(),
            "[smtp.isp.example]"
        );
        assert_eq!(
            key("smtp.isp.example", Some(587)).unwrap(),
            "[smtp.isp.example]:587"
        );
        assert_eq!(
            key("203.0.113.25", Some(2525)).unwrap(),
            "[203.0.113.25]:2525"
        );
        // An IPv6 relay as Postfix logs its name: the address as written in main.cf, which
        // is what a `hash:` map is asked for; each spelling its own key, lowercase.
        for (host, want) in [
            ("2001:DB8:0::25", "[2001:db8:0::25]"),
            ("2001:0db8:0:0::25", "[2001:0db8:0:0::25]"),
            ("2001:db8::25", "[2001:db8::25]"),
            ("ipv6:2001:db8::25", "[ipv6:2001:db8::25]"),
        ] {
            assert_eq!(key(host, Some(25)).unwrap(), want, "{host}");
            // … one relay for `policy serve`.
            assert_eq!(next_hop_match_key(want), "[2001:db8::25]", "{host}");
        }
        assert_eq!(key("::1", Some(2525)).unwrap(), "[::1]:2525");
        for (host, port) in [
            ("2001:db8::x", None),
            ("mx_1.example", None),
            ("mx", Some(0)),
        ] {
            assert!(key(host, port).is_err(), "{host} {port:?}");
        }

        // Match keys: one server, whatever the spelling.
        let cases = [
            ("[smtp.isp.example]", "[smtp.isp.example]"),
            ("[SMTP.isp.example.]:25", "[smtp.isp.example]"),
            ("[smtp.isp.example]:0587", "[smtp.isp.example]:587"),
            ("[2001:DB8:0::25]", "[2001:db8::25]"),
            ("[IPv6:2001:db8::25]:25", "[2001:db8::25]"),
            ("[ipv6:0:0::1]:2525", "[::1]:2525"),
            ("[192.0.2.1]", "[192.0.2.1]"),
            ("Example.COM", "example.com"),
            ("[bad", "[bad"),
        ];
        for (key, want) in cases {
            assert_eq!(next_hop_match_key(key), want, "{key}");
        }
        let relay = RelayKey::parse("[IPv6:2001:DB8::25]:587").unwrap().unwrap();
        assert_eq!(relay.to_string(), "[ipv6:2001:db8::25]:587");
        assert_eq!(
            (relay.host(), relay.name(), relay.port()),
            ("ipv6:2001:db8::25", "2001:db8::25", 587)
        );
        assert_eq!(relay.ipv6(), Some("2001:db8::25".parse().unwrap()));
        assert!(RelayKey::parse("smtp.isp.example").is_none());
    }

    #[test]
    fn pin_files_read_back() {
        let pins = [
            pin("zeta.example", PinLevel::Encrypt, 3),
            pin("alpha.example", PinLevel::Verify, 120),
        ];
        let mut read = read_policy_map_file(&policy_map_file(&pins).unwrap()).unwrap();
        read.sort_by(|a, b| b.domain.cmp(&a.domain));
        assert_eq!(read, pins);

        let text = "# hand-written\nA.Example.  encrypt\n\n# 5 messages, 4 over TLS, 1 verified\n\
                    b.example verify\n# 9 messages\nc.example encrypt\n\
                    [Relay.Example.]  encrypt\n[192.0.2.1] verify\n[relay.example]:587 encrypt\n\
                    [2001:DB8::25] encrypt\n[IPv6:2001:db8::26]:2525 verify\n";
        let read = read_policy_map_file(text).unwrap();
        let got: Vec<(&str, PinLevel, Evidence)> = read
            .iter()
            .map(|p| (p.domain.as_str(), p.level, p.evidence))
            .collect();
        let counts = |messages, tls, verified| Evidence {
            messages,
            tls,
            verified,
        };
        assert_eq!(
            got,
            [
                ("a.example", PinLevel::Encrypt, Evidence::default()),
                ("b.example", PinLevel::Verify, counts(5, 4, 1)),
                ("c.example", PinLevel::Encrypt, Evidence::default()),
                ("[relay.example]", PinLevel::Encrypt, Evidence::default()),
                ("[192.0.2.1]", PinLevel::Verify, Evidence::default()),
                (
                    "[relay.example]:587",
                    PinLevel::Encrypt,
                    Evidence::default()
                ),
                ("[2001:db8::25]", PinLevel::Encrypt, Evidence::default()),
                (
                    "[ipv6:2001:db8::26]:2525",
                    PinLevel::Verify,
                    Evidence::default()
                ),
            ]
        );
        assert!(read[3].is_relay());
        // Written back as read, each key after its evidence line.
        let map = policy_map_file(&read).unwrap();
        for key in [
            "\n[relay.example]:587  ",
            "\n[ipv6:2001:db8::26]:2525  verify\n",
        ] {
            assert!(map.contains(key), "{key:?} in {map}");
        }
    }

    #[test]
    fn pin_file_errors() {
        let bad_line = |line, expected, got: &str| PinFileError::BadLine {
            line,
            expected,
            got: got.into(),
        };
        let cases: Vec<(&str, PinFileError)> = vec![
            (
                "a.example\n",
                bad_line(1, "'domain  encrypt' or 'domain  verify'", "a.example"),
            ),
            (
                "# c\na.example secure match=x\n",
                bad_line(
                    2,
                    "'domain  encrypt' or 'domain  verify'",
                    "a.example secure match=x",
                ),
            ),
            (
                "a.example may\n",
                bad_line(
                    1,
                    "level encrypt or verify after the domain",
                    "a.example may",
                ),
            ),
            (
                "a.example encrypt\nA.EXAMPLE. verify\n",
                PinFileError::Duplicate {
                    domain: "a.example".into(),
                },
            ),
            // One relay under two spellings at two levels: `policy serve` would answer only
            // one of them.
            (
                "[relay.example]  verify\n# 3 messages\n[Relay.Example]:25  encrypt\n",
                PinFileError::ConflictingRelay {
                    line: Some(3),
                    key: "[relay.example]:25".into(),
                    level: PinLevel::Encrypt,
                    first_line: Some(1),
                    first: "[relay.example]".into(),
                    first_level: PinLevel::Verify,
                },
            ),
            // The first spelling at another level is named, not the last.
            (
                "[2001:db8::25] encrypt\n[2001:0db8::25] encrypt\n\n[IPv6:2001:DB8:0::25] verify\n",
                PinFileError::ConflictingRelay {
                    line: Some(4),
                    key: "[ipv6:2001:db8:0::25]".into(),
                    level: PinLevel::Verify,
                    first_line: Some(1),
                    first: "[2001:db8::25]".into(),
                    first_level: PinLevel::Encrypt,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(read_policy_map_file(text), Err(want), "{text:?}");
        }
        let err = read_policy_map_file("[relay.example] verify\n[relay.example]:25 encrypt\n");
        assert_eq!(
            err.unwrap_err().to_string(),
            "pin file line 2: relay [relay.example]:25 is pinned encrypt, but line 1 pins it \
             verify as [relay.example]: spellings of one relay need one level"
        );
        // An empty or a bad relay name: not a key a pin can hold.
        for text in [
            "[] encrypt\n",
            "[relay_1.example] encrypt\n",
            "[relay.example encrypt\n",
        ] {
            assert!(
                matches!(
                    read_policy_map_file(text),
                    Err(PinFileError::BadDomain { .. })
                ),
                "{text:?}"
            );
        }
        // Nor a bad port (a service name included) or IPv6 address.
        for (text, got) in [
            ("[relay.example]:0 encrypt\n", ":0"),
            ("[relay.example]:65536 encrypt\n", ":65536"),
            ("[relay.example]: encrypt\n", ":"),
            ("[relay.example]:submission encrypt\n", ":submission"),
            ("[relay.example]587 encrypt\n", "587"),
        ] {
            assert_eq!(
                read_policy_map_file(text),
                Err(PinFileError::BadRelayKey {
                    line: Some(1),
                    key: text.split(' ').next().unwrap().into(),
                    source: PinKeyError::BadPort { got: got.into() },
                }),
                "{text:?}"
            );
        }
        let err = read_policy_map_file("# c\n[ipv6:relay.example] encrypt\n").unwrap_err();
        assert_eq!(
            chain(&err),
            "pin file line 2: not a valid relay key: \"ipv6:relay.example\" in brackets is not \
             an IPv6 address"
        );
        assert!(read_policy_map_file("[2001:db8::x] encrypt\n").is_err());
    }

    /// A pin file with many relays, or many spellings of one, reads in time linear in its
    /// size: each line is checked against the pins before it by key, not by a scan of them.
    #[test]
    fn large_pin_files_read_in_linear_time() {
        const N: usize = 40_000;
        let mut text = String::with_capacity(N * 50);
        for i in 0..N {
            text.push_str(&format!(
                "[relay{i}.example]  encrypt\nd{i}.example  verify\n"
            ));
        }
        // 4,096 spellings of one IPv6 relay at one level: its zero groups written with 1 to 4
        // digits, with or without `ipv6:`, with or without `:25`.
        let zeros = ["0", "00", "000", "0000"];
        let mut spellings = 0;
        for n in 0..1024 {
            let z = |k: usize| zeros[(n >> (2 * k)) & 3];
            let address = format!("2001:db8:{}:{}:{}:{}:{}:25", z(0), z(1), z(2), z(3), z(4));
            for prefix in ["", "ipv6:"] {
                for port in ["", ":25"] {
                    text.push_str(&format!("[{prefix}{address}]{port}  encrypt\n"));
                    spellings += 1;
                }
            }
        }
        // Under a second in a debug build; with a scan of the pins before each line, this
        // read took minutes (no clock is asserted: tests here never time themselves).
        let pins = read_policy_map_file(&text);
        assert_eq!(pins.map(|p| p.len()), Ok(2 * N + spellings));
        // And a conflicting spelling at the end is still found, naming the first line.
        text.push_str("[2001:db8::25]  verify\n");
        assert!(matches!(
            read_policy_map_file(&text),
            Err(PinFileError::ConflictingRelay {
                first_line: Some(first),
                first_level: PinLevel::Encrypt,
                ..
            }) if first == 2 * N + 1
        ));
    }

    use crate::test_support::chain;

    #[test]
    fn bad_domain_errors_say_each_fact_once() {
        // A parent-domain key (as in an override) is not a key a pin can hold.
        let err = read_policy_map_file("a.example  encrypt\n.b.example  encrypt\n").unwrap_err();
        assert_eq!(
            err,
            PinFileError::BadDomain {
                line: Some(2),
                domain: ".b.example".into(),
                source: DomainError::EmptyLabel {
                    name: ".b.example".into(),
                },
            }
        );
        assert_eq!(err.to_string(), "pin file line 2: not a valid domain name");
        let text = chain(&err);
        assert_eq!(
            text,
            "pin file line 2: not a valid domain name: empty label in domain name \".b.example\""
        );
        assert_eq!(text.matches(".b.example").count(), 1, "{text}");
        assert_eq!(text.matches("empty label").count(), 1, "{text}");

        // Pins being written have no line.
        let bad = PinnedPeer {
            domain: "a..example".into(),
            level: PinLevel::Encrypt,
            evidence: Evidence::default(),
        };
        let err = policy_map_file(&[bad]).unwrap_err();
        assert_eq!(
            chain(&err),
            "pinned domain is not a valid domain name: empty label in domain name \"a..example\""
        );
    }

    #[test]
    fn pin_files_refuse_bad_and_duplicate_domains() {
        let dup = [
            pin("a.example", PinLevel::Encrypt, 1),
            pin("A.example", PinLevel::Verify, 1),
        ];
        assert_eq!(
            policy_map_file(&dup),
            Err(PinFileError::Duplicate {
                domain: "a.example".into()
            })
        );
        // One relay under several spellings at one level: a line for each (each is what
        // Postfix looks up for a next hop written so), which reads back as written.
        let key = |k: &str, level| PinnedPeer::from_key(k, level, Evidence::default());
        let cases = [
            ("[2001:db8::25]", "[2001:0db8:0:0::25]"),
            ("[2001:db8::25]:587", "[IPv6:2001:DB8::25]:587"),
            ("[relay.example]", "[Relay.Example.]:25"),
        ];
        for (a, b) in cases {
            let pins = [
                key(a, PinLevel::Verify).unwrap(),
                key(b, PinLevel::Verify).unwrap(),
            ];
            let written = policy_map_file(&pins).unwrap();
            let mut sorted = pins.to_vec();
            sorted.sort_by(|a, b| a.domain.cmp(&b.domain));
            assert_eq!(read_policy_map_file(&written), Ok(sorted), "{written}");
            for p in &pins {
                assert!(
                    written.contains(&format!("\n{}  ", p.domain)),
                    "{} in {written}",
                    p.domain
                );
            }
            // At two levels, the file would not read back, so it is not written: the error
            // names both spellings, the first in the order of the file.
            let pins = [
                key(a, PinLevel::Verify).unwrap(),
                key(b, PinLevel::Encrypt).unwrap(),
            ];
            let (first, second) = if pins[0].domain < pins[1].domain {
                (&pins[0], &pins[1])
            } else {
                (&pins[1], &pins[0])
            };
            assert_eq!(
                policy_map_file(&pins),
                Err(PinFileError::ConflictingRelay {
                    line: None,
                    key: second.domain.clone(),
                    level: second.level,
                    first_line: None,
                    first: first.domain.clone(),
                    first_level: first.level,
                }),
                "{pins:?}"
            );
            // … which the reader refuses.
            let text = format!("{a} verify\n{b} encrypt\n");
            assert!(
                matches!(
                    read_policy_map_file(&text),
                    Err(PinFileError::ConflictingRelay {
                        line: Some(2),
                        first_line: Some(1),
                        ..
                    })
                ),
                "{text}"
            );
        }
        let pins = [
            key("[2001:db8::25]", PinLevel::Encrypt).unwrap(),
            key("[2001:0db8::25]", PinLevel::Verify).unwrap(),
        ];
        assert_eq!(
            policy_map_file(&pins).unwrap_err().to_string(),
            "relay [2001:db8::25] is pinned encrypt, but also verify as [2001:0db8::25]: \
             spellings of one relay need one level"
        );
        // The same address on two ports is two relays, at any levels.
        let pins = [
            key("[2001:db8::25]", PinLevel::Encrypt).unwrap(),
            key("[2001:db8::25]:587", PinLevel::Verify).unwrap(),
        ];
        let written = policy_map_file(&pins).unwrap();
        assert_eq!(read_policy_map_file(&written).unwrap(), pins);
        let injected = PinnedPeer {
            domain: "a.example\nevil.example".into(),
            level: PinLevel::Encrypt,
            evidence: Evidence::default(),
        };
        assert!(matches!(
            exim_domain_list(&[injected]),
            Err(PinFileError::BadDomain { .. })
        ));
    }
}
