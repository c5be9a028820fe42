//! The records MTA log parsers emit, and the [`MtaParser`] interface between the line
//! parsers and the aggregator. All times are Unix seconds as written in the log (a syslog
//! time without zone is taken as UTC, so days and hours read as in the log).

use crate::envelope::Line;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

/// Text shared between a parser's state, its records and the aggregator: cloning it
/// copies a pointer, not the text.
pub type Text = Arc<str>;

/// Seconds since 1970-01-01T00:00:00Z.
pub type UnixTime = i64;

/// Which MTA wrote the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mta {
    Postfix,
    Exim,
    Sendmail,
    Opensmtpd,
}

/// Mail received by this MTA, or sent by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// The other end of an SMTP session, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Peer {
    /// The host name, `None` when the MTA logged `unknown` (no reverse DNS) or none.
    pub hostname: Option<Text>,
    pub ip: Option<IpAddr>,
}

/// How far the peer's certificate was checked (Postfix's words; Exim's `CV=yes` is
/// `Verified`, `CV=no` is `Untrusted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    Anonymous,
    Untrusted,
    Trusted,
    Verified,
}

/// A TLS session as logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TlsInfo {
    /// Normalised: `TLSv1.3`, `TLSv1.2`, `TLSv1.1`, `TLSv1` (Exim's `TLS1.3` is `TLSv1.3`).
    pub version: Text,
    /// As logged (OpenSSL, IANA or GnuTLS naming).
    pub cipher: Text,
    /// Symmetric key bits, when logged.
    pub bits: Option<u16>,
    /// Key-exchange group (`X25519`), when logged (Postfix ≥ 3.4 with TLS 1.3 writes it).
    pub key_exchange: Option<Text>,
    pub trust: Option<Trust>,
}

impl TlsInfo {
    /// TLS whose version and cipher the log does not give (only a `starttls=` counter, Exim's
    /// `P=esmtps` without `X=`, Sendmail's `proto=ESMTPS`): both read `unknown`.
    pub fn unknown(trust: Option<Trust>) -> Self {
        Self {
            version: UNKNOWN_TLS.into(),
            cipher: UNKNOWN_TLS.into(),
            bits: None,
            key_exchange: None,
            trust,
        }
    }
}

/// The version and cipher of [`TlsInfo::unknown`].
pub const UNKNOWN_TLS: &str = "unknown";

/// Whether a message or connection used TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Transport {
    Tls(TlsInfo),
    /// Known to be in clear.
    Plain,
    /// The log does not say (e.g. Postfix with `smtpd_tls_loglevel = 0` and no `starttls=`
    /// counter). `hint` names the setting to change.
    Unknown {
        hint: &'static str,
    },
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

/// Whether a hop crossed the Internet or stayed inside the mail system (pickup, local,
/// virtual, LMTP and pipe delivery, content-filter re-injection). Parsers mark the hops they
/// know are local; the aggregator also marks peers in loopback and `--internal` ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Internet,
    Internal,
}

/// The outcome of a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Sent,
    Deferred,
    Bounced,
}

/// One message received (inbound) or one delivery transaction to one relay (outbound:
/// consecutive recipients of one queue id delivered in one session make one record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageRecord {
    pub mta: Mta,
    pub time: UnixTime,
    pub direction: Direction,
    pub scope: Scope,
    pub peer: Peer,
    pub transport: Transport,
    pub recipients: u32,
    pub size: Option<u64>,
    /// Queue id (or message id) to show as "first/last message".
    pub id: Text,
    /// Outbound only.
    pub status: Option<DeliveryStatus>,
    /// Outbound only: the domain of the recipients of this delivery transaction, lowercase:
    /// the next hop Postfix's TLS policy (`smtp_tls_policy_maps`) is keyed by when mail is
    /// routed by MX. `None` inbound, when the log names no recipient domain, and when the
    /// transaction's recipients span several domains (the next hop was then a relay host or
    /// a transport's nexthop, which is also what the policy is keyed by then).
    pub recipient_domain: Option<Text>,
    /// Outbound only: when the transaction's recipients do not all share one domain (so
    /// `recipient_domain` is `None`), the distinct domains they have, in the order met, at
    /// most 100 (Exim's `max_rcpt` default; a recipient without a domain adds none); `None`
    /// otherwise, not an empty list, so that a record carries and drops one null pointer.
    /// Each of these domains' mail went to `peer` in this transaction.
    pub spanned_domains: Option<Box<[Text]>>,
    /// Outbound only: the server port the delivery went to, when the log gives it (Postfix
    /// `relay=host[ip]:port`, Exim `H=host [ip]:port` with `+outgoing_port`).
    pub port: Option<u16>,
}

/// One SMTP connection (session), whether or not it carried mail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionRecord {
    pub mta: Mta,
    pub time: UnixTime,
    pub direction: Direction,
    pub scope: Scope,
    pub peer: Peer,
    pub transport: Transport,
    pub messages: u32,
}

/// Something worth a look, with the log line that shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    /// A STARTTLS attempt that failed (handshake error, TLS library problem).
    StartTlsFailed,
    /// A trace of a STARTTLS-stripping middlebox: Postfix `unknown=0/1` with no `starttls`
    /// from a peer that normally uses TLS; Exim's `SMTP syntax error in "XXXXXXXA"`.
    StrippingTrace,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyRecord {
    pub mta: Mta,
    pub time: UnixTime,
    pub direction: Direction,
    pub peer: Peer,
    pub kind: AnomalyKind,
    /// The log line(s) that show it.
    pub evidence: String,
}

/// What a parser emits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "record", rename_all = "lowercase")]
pub enum Record {
    Message(MessageRecord),
    Connection(ConnectionRecord),
    Anomaly(AnomalyRecord),
}

/// An MTA's line parser and correlator. It joins the lines of a session (by pid, queue id or
/// session id) and emits records once it knows enough. No I/O; the state it keeps is bounded
/// by open sessions and queue entries (oldest evicted past a cap, counted in `evicted`).
pub trait MtaParser {
    /// Feeds one line (lines of other programs are ignored cheaply).
    fn feed(&mut self, line: &Line<'_>, out: &mut Vec<Record>);
    /// End of input: emit what can still be emitted from open state.
    fn finish(&mut self, out: &mut Vec<Record>);
    /// Lines that looked like this MTA's but could not be understood.
    fn unparsed(&self) -> u64;
    /// Entries dropped because a state cap was reached: sessions, queue entries, and for Exim
    /// the STARTTLS failure lines that could still have paired.
    fn evicted(&self) -> u64;
    /// Set when the log lacks what a precise answer needs (e.g. Postfix TLS logging off):
    /// advice to print, naming the setting to change.
    fn advice(&self) -> Vec<String>;
}
