//! OpenSMTPD (`smtpd`) → records: lines joined by their 16-hex-digit session id: `smtp
//! connected`/`tls`/`message`/`disconnected` inbound, `mta connecting`/`tls`/`delivery`/
//! `disconnected` outbound, `mda delivery` local.
//!
//! Decisions (formats from OpenSMTPD 6.x/7.x `smtp_session.c`/`mta_session.c`):
//! - **Inbound**: `smtp message msgid=… size=… nrcpt=…` is one message; TLS iff the session
//!   logged `smtp tls ciphers=` (both `TLSv1.3:CIPHER:256` and the older
//!   `version=…, cipher=…, bits=…`). Trust: `smtp cert-check result="verified"` (or
//!   `client-cert-check result="success"`) ⇒ Verified, `"unchecked"`/`"failure"` ⇒
//!   Untrusted, no client certificate ⇒ Anonymous. `address=local` sessions are internal.
//!   `smtp disconnected` emits the connection.
//! - **Outbound**: `mta delivery` lines of one session and one message (the evpid's first 8
//!   hex digits) with the same result make one record (one line per recipient); its
//!   recipient domain is that of the `to=` addresses (delivered to; `rcpt=` is as given in
//!   RCPT TO) when they share one. The peer is
//!   the delivery's `relay="IP (name)"` (also `name [IP]`), else the session's `mta connecting
//!   address=`. Trust: `mta cert-check result="valid"` ⇒ Verified, `"unverified"` ⇒
//!   Untrusted, `smtp cert-check result="no certificate presented"` (written with the mta
//!   session's id) ⇒ Anonymous. Result `Ok` ⇒ sent, `TempFail` ⇒ deferred, else bounced; a
//!   failed delivery in a session without TLS has an unknown transport. `mta disconnected`
//!   emits the outbound connection. `mda delivery` lines are internal deliveries.
//! - **Anomalies**: a refused `XXXXXXXA` command (STARTTLS as a PIX/ASA-style middlebox
//!   rewrites it) ⇒ StrippingTrace, in each form smtp_session.c's `smtp_reply()` has logged
//!   it: `smtp failed-command command="XXXXXXXA" result="500 5.5.1 Invalid command: Command
//!   unrecognized"` (6.4+), `smtp event=failed-command …` (6.0), `smtp-in: Failed command on
//!   session ID: "XXXXXXXA" => 500 …` (5.x, no peer known); a refused `STARTTLS`,
//!   `smtp disconnected reason=tls-…` (or an io-error naming TLS/SSL or a failed handshake),
//!   `mta closing reason=tls-…`, `mta error` naming TLS (`TLS required but not supported by
//!   remote host`, `STARTTLS rejected: …`) and `smtp-out: Error on session ID: opportunistic
//!   TLS failed, downgrading to plain` (or `… after N messages sent: …` naming TLS) ⇒
//!   StartTlsFailed. After a failed attempt mta_session.c connects again under the same
//!   session id (in plaintext after the downgrade): the earlier connection ends there.
//! - 6.0–6.3 sessions (`smtp event=connected`, `event=starttls`, `event=message`) are not
//!   read; their lines count as unparsed, so a report of such a log says so.

use crate::envelope::Line;
use crate::fields::{normalize_tls_version, parse_colon_cipher, parse_ip, parse_u64};
use crate::model::{
    AnomalyKind, AnomalyRecord, ConnectionRecord, DeliveryStatus, Direction, MessageRecord, Mta,
    MtaParser, Peer, Record, Scope, Text, TlsInfo, Transport, Trust, UnixTime,
};
use crate::postfix::bounded::{Bounded, FxBuild};
use crate::recipient::{self, DomainTexts};
use std::net::IpAddr;

const MAX_SESSIONS: usize = 65_536;
const HINT_MID_SESSION: &str =
    "the OpenSMTPD session began before the log: its TLS state was not seen";
const HINT_FAILED: &str = "OpenSMTPD logged no TLS for this failed delivery's session";

/// Space-separated `key=value` tokens, `key="quoted value"` kept whole (quotes removed).
/// The `address=` and `host=` values of a `connected`/`connecting` event.
fn address_and_host(args: &str) -> (Option<&str>, Option<&str>) {
    let (mut address, mut host) = (None, None);
    for (k, v) in kv(args) {
        match k {
            "address" => address = Some(v),
            "host" => host = Some(v),
            _ => {}
        }
    }
    (address, host)
}

fn kv(s: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = s;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                return None;
            }
            let eq = rest.find(['=', ' ']);
            let (key, after) = match eq {
                Some(i) if rest.as_bytes().get(i) == Some(&b'=') => {
                    (rest.get(..i).unwrap_or(""), rest.get(i + 1..).unwrap_or(""))
                }
                _ => {
                    // A bare word: skip it.
                    let end = rest.find(' ').unwrap_or(rest.len());
                    rest = rest.get(end..).unwrap_or("");
                    continue;
                }
            };
            if let Some(q) = after.strip_prefix('"') {
                let end = q.find('"').unwrap_or(q.len());
                let v = q.get(..end).unwrap_or("");
                rest = q.get(end + 1..).unwrap_or("");
                return Some((key, v));
            }
            let end = after.find(' ').unwrap_or(after.len());
            let v = after.get(..end).unwrap_or("");
            rest = after.get(end..).unwrap_or("");
            return Some((key, v));
        }
    })
}

/// `TLSv1.3:TLS_AES_256_GCM_SHA384:256` or `version=TLSv1.2, cipher=…, bits=256`.
fn parse_ciphers(v: &str) -> Option<TlsInfo> {
    if v.starts_with("version=") {
        let (mut version, mut cipher, mut bits) = (None, None, None);
        for part in v.split(", ") {
            match part.split_once('=') {
                Some(("version", x)) => version = Some(x),
                Some(("cipher", x)) => cipher = Some(x),
                Some(("bits", x)) => bits = parse_u64(x).and_then(|b| u16::try_from(b).ok()),
                _ => {}
            }
        }
        return Some(TlsInfo {
            version: normalize_tls_version(version?),
            cipher: cipher?.into(),
            bits,
            key_exchange: None,
            trust: None,
        });
    }
    parse_colon_cipher(v)
}

/// The value of `ciphers=`: the rest of the line (the older form has spaces in it).
fn ciphers_arg(args: &str) -> Option<&str> {
    let v = args.strip_prefix("ciphers=")?;
    Some(v.trim_matches('"'))
}

/// `smtp://192.0.2.2:25`, `smtp+tls://[2001:db8::1]:25`, `192.0.2.2`.
fn ip_of_address(a: &str) -> Option<IpAddr> {
    let a = a.split_once("://").map_or(a, |(_, r)| r);
    if let Some(r) = a.strip_prefix('[') {
        return r.split_once(']').and_then(|(ip, _)| parse_ip(ip));
    }
    parse_ip(a).or_else(|| a.rsplit_once(':').and_then(|(ip, _)| parse_ip(ip)))
}

/// `relay="192.0.2.2 (mx.example.com)"` (what OpenSMTPD writes) or `mx.example.com [192.0.2.2]`.
fn parse_relay(v: &str) -> Peer {
    let v = v.trim();
    if let Some((name, rest)) = v.split_once(" [") {
        return Peer {
            hostname: (!name.is_empty()).then(|| name.into()),
            ip: rest.split_once(']').and_then(|(ip, _)| parse_ip(ip)),
        };
    }
    let (ip, name) = match v.split_once(" (") {
        Some((ip, rest)) => (ip, rest.strip_suffix(')')),
        None => (v, None),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Peer {
        hostname: name.filter(|n| !n.is_empty()).map(Into::into),
        ip: parse_ip(ip),
    }
}

fn host_name(host: Option<&str>, address: Option<&str>) -> Option<Text> {
    let h = host?;
    if h.is_empty() || h == "<unknown>" || Some(h) == address || parse_ip(h).is_some() {
        return None;
    }
    Some(h.into())
}

/// The 16-hex-digit session id and the rest.
fn split_session(m: &str) -> Option<(u64, &str)> {
    let (n, rest) = session_id(m)?;
    Some((n, rest.strip_prefix(' ')?))
}

/// The 16 hex digits of a session id at the start of `m`, and the rest after them.
fn session_id(m: &str) -> Option<(u64, &str)> {
    let id = m.get(..16)?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u64::from_str_radix(id, 16).ok()?, m.get(16..)?))
}

#[derive(Debug)]
struct SmtpSession {
    time: UnixTime,
    peer: Peer,
    internal: bool,
    tls: Option<TlsInfo>,
    trust: Option<Trust>,
    messages: u32,
}

impl SmtpSession {
    fn transport(&self) -> Transport {
        match &self.tls {
            Some(t) => {
                let mut t = t.clone();
                t.trust = Some(self.trust.unwrap_or(Trust::Anonymous));
                Transport::Tls(t)
            }
            None => Transport::Plain,
        }
    }
}

#[derive(Debug)]
struct MtaSession {
    time: UnixTime,
    peer: Peer,
    tls: Option<TlsInfo>,
    trust: Option<Trust>,
    messages: u32,
    pending: Option<(u32, MessageRecord)>,
}

impl MtaSession {
    fn tls(&self) -> Option<TlsInfo> {
        self.tls.as_ref().map(|t| {
            let mut t = t.clone();
            t.trust = self.trust;
            t
        })
    }
}

/// OpenSMTPD's [`MtaParser`]. Program `smtpd`.
#[derive(Debug)]
pub struct OpensmtpdParser {
    // Keyed by smtpd's own random session ids: the fast hash.
    smtp: Bounded<u64, SmtpSession, FxBuild>,
    mta: Bounded<u64, MtaSession, FxBuild>,
    unparsed: u64,
    evicted: u64,
    domains: DomainTexts,
}

impl Default for OpensmtpdParser {
    fn default() -> Self {
        Self::new()
    }
}

impl OpensmtpdParser {
    pub fn new() -> Self {
        Self {
            smtp: Bounded::new(MAX_SESSIONS),
            mta: Bounded::new(MAX_SESSIONS),
            unparsed: 0,
            evicted: 0,
            domains: DomainTexts::default(),
        }
    }

    fn on_smtp(&mut self, id: u64, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match verb {
            "connected" => {
                let (address, host) = address_and_host(args);
                let internal = address == Some("local");
                let ip = address.and_then(ip_of_address);
                if ip.is_none() && !internal {
                    self.unparsed += 1;
                }
                let s = SmtpSession {
                    time: line.time,
                    peer: Peer {
                        hostname: host_name(host, address),
                        ip,
                    },
                    internal,
                    tls: None,
                    trust: None,
                    messages: 0,
                };
                if let Some((_, old)) = self.smtp.insert(id, s) {
                    self.evicted += 1;
                    out.push(Record::Connection(smtp_connection(old)));
                }
            }
            "tls" => {
                let tls = ciphers_arg(args).and_then(parse_ciphers);
                match (tls, self.smtp.get_mut(&id)) {
                    (Some(t), Some(s)) => s.tls = Some(t),
                    (None, _) => self.unparsed += 1,
                    (Some(_), None) => {}
                }
            }
            "cert-check" | "client-cert-check" | "event=client-cert-check" => {
                let result = kv(args).find(|(k, _)| *k == "result").map(|(_, v)| v);
                let trust = match result {
                    Some("verified" | "success") => Some(Trust::Verified),
                    Some("unchecked" | "failure") => Some(Trust::Untrusted),
                    Some("no certificate presented") => Some(Trust::Anonymous),
                    _ => None,
                };
                if let Some(s) = self.smtp.get_mut(&id) {
                    s.trust = trust.or(s.trust);
                } else if let Some(m) = self.mta.get_mut(&id) {
                    // mta_session.c logs a missing server certificate as "smtp cert-check".
                    m.trust = trust.or(m.trust);
                }
            }
            "message" => {
                let (mut size, mut nrcpt) = (None, None);
                for (k, v) in kv(args) {
                    match k {
                        "size" => size = parse_u64(v),
                        "nrcpt" => nrcpt = parse_u64(v),
                        _ => {}
                    }
                }
                let msgid = kv(args).find(|(k, _)| *k == "msgid").map_or("", |(_, v)| v);
                let (peer, scope, transport) = match self.smtp.get_mut(&id) {
                    Some(s) => {
                        s.messages += 1;
                        let scope = if s.internal {
                            Scope::Internal
                        } else {
                            Scope::Internet
                        };
                        (s.peer.clone(), scope, s.transport())
                    }
                    None => (
                        Peer {
                            hostname: None,
                            ip: None,
                        },
                        Scope::Internet,
                        Transport::Unknown {
                            hint: HINT_MID_SESSION,
                        },
                    ),
                };
                out.push(Record::Message(MessageRecord {
                    mta: Mta::Opensmtpd,
                    time: line.time,
                    direction: Direction::Inbound,
                    scope,
                    peer,
                    transport,
                    recipients: nrcpt
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1)
                        .max(1),
                    size,
                    id: msgid.into(),
                    status: None,
                    recipient_domain: None,
                }));
            }
            // 6.4+ `failed-command`, 6.0 `event=failed-command`.
            "failed-command" | "event=failed-command" => {
                let cmd = kv(args)
                    .find(|(k, _)| *k == "command")
                    .map_or("", |(_, v)| v);
                self.on_failed_command(id, cmd, line, out);
            }
            "disconnected" => {
                let reason = kv(args)
                    .find(|(k, _)| *k == "reason")
                    .map_or("", |(_, v)| v);
                if mentions_tls(reason) {
                    let peer = self.smtp_peer(id);
                    out.push(anomaly(
                        line,
                        Direction::Inbound,
                        peer,
                        AnomalyKind::StartTlsFailed,
                    ));
                }
                if let Some(s) = self.smtp.remove(&id) {
                    out.push(Record::Connection(smtp_connection(s)));
                }
            }
            // OpenSMTPD 6.0–6.3 sessions (`smtp event=connected`, `event=starttls`,
            // `event=message`, `event=closed`) are not read: counted as not understood, so
            // the report says so instead of showing such a log as empty.
            verb if verb.starts_with("event=") => self.unparsed += 1,
            _ => {}
        }
    }

    /// A command the server refused: `XXXXXXXA` is STARTTLS as a PIX/ASA-style middlebox
    /// rewrites it; a refused `STARTTLS` is a failed attempt. The logged command is the whole
    /// line the client sent (`strnvis`ed), so only its first word counts.
    fn on_failed_command(&mut self, id: u64, cmd: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let verb = cmd.split_ascii_whitespace().next().unwrap_or("");
        let kind = if verb.eq_ignore_ascii_case("XXXXXXXA") {
            AnomalyKind::StrippingTrace
        } else if verb.eq_ignore_ascii_case("STARTTLS") {
            AnomalyKind::StartTlsFailed
        } else {
            return;
        };
        let peer = self.smtp_peer(id);
        out.push(anomaly(line, Direction::Inbound, peer, kind));
    }

    fn smtp_peer(&mut self, id: u64) -> Peer {
        self.smtp.get_mut(&id).map_or(
            Peer {
                hostname: None,
                ip: None,
            },
            |s| s.peer.clone(),
        )
    }

    fn on_mta(&mut self, id: u64, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match verb {
            "connecting" => {
                let (address, host) = address_and_host(args);
                let ip = address.and_then(ip_of_address);
                let s = MtaSession {
                    time: line.time,
                    peer: Peer {
                        hostname: host_name(host, None),
                        ip,
                    },
                    tls: None,
                    trust: None,
                    messages: 0,
                    pending: None,
                };
                // mta_session.c connects again under the same id after a failed attempt
                // (opportunistic TLS failed, connection closed before it was ready): the
                // earlier connection ends here.
                if let Some(earlier) = self.mta.remove(&id) {
                    mta_close(earlier, out);
                }
                if let Some((_, old)) = self.mta.insert(id, s) {
                    self.evicted += 1;
                    mta_close(old, out);
                }
            }
            "tls" => {
                let tls = ciphers_arg(args).and_then(parse_ciphers);
                match (tls, self.mta.get_mut(&id)) {
                    (Some(t), Some(s)) => s.tls = Some(t),
                    (None, _) => self.unparsed += 1,
                    (Some(_), None) => {}
                }
            }
            "cert-check" => {
                let trust = match kv(args).find(|(k, _)| *k == "result").map(|(_, v)| v) {
                    Some("valid") => Some(Trust::Verified),
                    Some("unverified") => Some(Trust::Untrusted),
                    Some("no certificate presented") => Some(Trust::Anonymous),
                    _ => None,
                };
                if let Some(s) = self.mta.get_mut(&id) {
                    s.trust = trust.or(s.trust);
                }
            }
            "delivery" => self.on_mta_delivery(id, args, line, out),
            "disconnected" | "closing" | "error" => {
                let reason = kv(args)
                    .find(|(k, _)| *k == "reason")
                    .map_or(args, |(_, v)| v);
                self.mta_error(id, reason, line, out);
                if verb != "error"
                    && let Some(s) = self.mta.remove(&id)
                {
                    mta_close(s, out);
                }
            }
            _ => {}
        }
    }

    /// An outbound session's error: one naming TLS (a refused or failed STARTTLS, `TLS
    /// required but not supported by remote host`) is a failed STARTTLS.
    fn mta_error(&mut self, id: u64, reason: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        if mentions_tls(reason) {
            let peer = self.mta.get(&id).map_or(
                Peer {
                    hostname: None,
                    ip: None,
                },
                |s| s.peer.clone(),
            );
            out.push(anomaly(
                line,
                Direction::Outbound,
                peer,
                AnomalyKind::StartTlsFailed,
            ));
        }
    }

    fn on_mta_delivery(&mut self, id: u64, args: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (mut evpid, mut relay, mut result, mut to) = (None, None, None, None);
        for (k, v) in kv(args) {
            match k {
                "evpid" => evpid = Some(v),
                "relay" => relay = Some(v),
                "to" => to = Some(v),
                "result" => result = Some(v),
                _ => {}
            }
        }
        let (Some(evpid), Some(result)) = (evpid, result) else {
            self.unparsed += 1;
            return;
        };
        let msgid = evpid
            .get(..8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        let status = status_of(result);
        let mut peer = relay.map(parse_relay).unwrap_or(Peer {
            hostname: None,
            ip: None,
        });
        let session = self.mta.get_mut(&id);
        if let Some(s) = &session {
            if peer.ip.is_none() {
                peer.ip = s.peer.ip;
            }
            if peer.hostname.is_none() {
                peer.hostname.clone_from(&s.peer.hostname);
            }
        }
        let transport = match session.as_ref().map(|s| s.tls()) {
            Some(Some(t)) => Transport::Tls(t),
            Some(None) if status == DeliveryStatus::Sent => Transport::Plain,
            Some(None) => Transport::Unknown { hint: HINT_FAILED },
            None => Transport::Unknown {
                hint: HINT_MID_SESSION,
            },
        };
        let record = MessageRecord {
            mta: Mta::Opensmtpd,
            time: line.time,
            direction: Direction::Outbound,
            scope: Scope::Internet,
            peer,
            transport,
            recipients: 1,
            size: None,
            id: evpid.get(..8).unwrap_or(evpid).into(),
            status: Some(status),
            // `to=` is the address delivered to (`rcpt=` the one given in RCPT TO).
            recipient_domain: to.and_then(|a| self.domains.of_address(a)),
        };
        let Some(s) = session else {
            out.push(Record::Message(record));
            return;
        };
        if let Some((m, p)) = &mut s.pending
            && *m == msgid
            && p.status == Some(status)
        {
            p.recipients = p.recipients.saturating_add(1);
            recipient::merge(&mut p.recipient_domain, record.recipient_domain.as_ref());
            return;
        }
        let same_message = s.pending.as_ref().is_some_and(|(m, _)| *m == msgid);
        if let Some((_, p)) = s.pending.take() {
            out.push(Record::Message(p));
        }
        if !same_message {
            s.messages += 1;
        }
        s.pending = Some((msgid, record));
    }

    fn on_mda(&mut self, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let Some(args) = rest.strip_prefix("delivery ") else {
            return;
        };
        let (mut evpid, mut result) = (None, None);
        for (k, v) in kv(args) {
            match k {
                "evpid" => evpid = Some(v),
                "result" => result = Some(v),
                _ => {}
            }
        }
        let (Some(evpid), Some(result)) = (evpid, result) else {
            self.unparsed += 1;
            return;
        };
        out.push(Record::Message(MessageRecord {
            mta: Mta::Opensmtpd,
            time: line.time,
            direction: Direction::Outbound,
            scope: Scope::Internal,
            peer: Peer {
                hostname: None,
                ip: None,
            },
            transport: Transport::Plain,
            recipients: 1,
            size: None,
            id: evpid.get(..8).unwrap_or(evpid).into(),
            status: Some(status_of(result)),
            recipient_domain: None,
        }));
    }
}

fn status_of(result: &str) -> DeliveryStatus {
    match result {
        "Ok" => DeliveryStatus::Sent,
        "TempFail" => DeliveryStatus::Deferred,
        _ => DeliveryStatus::Bounced,
    }
}

/// Whether a disconnection reason is a TLS failure: OpenSSL's texts name `SSL`/`TLS`, but
/// libtls's do not (`io-error: handshake failed: No error information`, OpenSMTPD issue
/// #1245).
fn mentions_tls(reason: &str) -> bool {
    let r = reason.as_bytes();
    r.windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"tls") || w.eq_ignore_ascii_case(b"ssl"))
        || r.windows(9).any(|w| w.eq_ignore_ascii_case(b"handshake"))
}

fn smtp_connection(s: SmtpSession) -> ConnectionRecord {
    ConnectionRecord {
        mta: Mta::Opensmtpd,
        time: s.time,
        direction: Direction::Inbound,
        scope: if s.internal {
            Scope::Internal
        } else {
            Scope::Internet
        },
        transport: s.transport(),
        peer: s.peer,
        messages: s.messages,
    }
}

fn mta_close(mut s: MtaSession, out: &mut Vec<Record>) {
    if let Some((_, p)) = s.pending.take() {
        out.push(Record::Message(p));
    }
    let transport = match s.tls() {
        Some(t) => Transport::Tls(t),
        None => Transport::Plain,
    };
    out.push(Record::Connection(ConnectionRecord {
        mta: Mta::Opensmtpd,
        time: s.time,
        direction: Direction::Outbound,
        scope: Scope::Internet,
        peer: s.peer,
        transport,
        messages: s.messages,
    }));
}

fn anomaly(line: &Line<'_>, direction: Direction, peer: Peer, kind: AnomalyKind) -> Record {
    Record::Anomaly(AnomalyRecord {
        mta: Mta::Opensmtpd,
        time: line.time,
        direction,
        peer,
        kind,
        evidence: line.raw.to_string(),
    })
}

impl MtaParser for OpensmtpdParser {
    fn feed(&mut self, line: &Line<'_>, out: &mut Vec<Record>) {
        if line.program != "smtpd" {
            return;
        }
        let Some((id, rest)) = split_session(line.message) else {
            // mta_session.c's errors of a session that has sent messages, and its fallback
            // to plaintext when opportunistic TLS fails: `smtp-out: Error on session
            // 0123456789abcdef after 2 messages sent: …`, `smtp-out: Error on session
            // 0123456789abcdef: opportunistic TLS failed, downgrading to plain`.
            if let Some(r) = line.message.strip_prefix("smtp-out: Error on session ")
                && let Some((n, rest)) = session_id(r)
                && let Some((_, reason)) = rest.split_once(": ")
            {
                self.mta_error(n, reason, line, out);
                return;
            }
            // OpenSMTPD 5.x: `smtp-in: Failed command on session 0123456789abcdef: "XXXXXXXA"
            // => 500 5.5.1 Invalid command: Command unrecognized`.
            if let Some(r) = line
                .message
                .strip_prefix("smtp-in: Failed command on session ")
                && let Some((id, rest)) = session_id(r)
                && let Some((cmd, _)) = rest
                    .strip_prefix(": \"")
                    .and_then(|rest| rest.split_once("\" => "))
            {
                self.on_failed_command(id, cmd, line, out);
            }
            return;
        };
        if let Some(r) = rest.strip_prefix("smtp ") {
            self.on_smtp(id, r, line, out);
        } else if let Some(r) = rest.strip_prefix("mta ") {
            self.on_mta(id, r, line, out);
        } else if let Some(r) = rest.strip_prefix("mda ") {
            self.on_mda(r, line, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Record>) {
        for (_, s) in self.mta.drain_ordered() {
            mta_close(s, out);
        }
        for (_, s) in self.smtp.drain_ordered() {
            out.push(Record::Connection(smtp_connection(s)));
        }
    }

    fn unparsed(&self) -> u64 {
        self.unparsed
    }

    fn evicted(&self) -> u64 {
        self.evicted
    }

    fn advice(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        let got: Vec<_> =
            kv(r#"evpid=1 from=<a@b> source="1.2.3.4" relay="5.6.7.8 (mx.x)" bare result="Ok""#)
                .collect();
        assert_eq!(
            got,
            [
                ("evpid", "1"),
                ("from", "<a@b>"),
                ("source", "1.2.3.4"),
                ("relay", "5.6.7.8 (mx.x)"),
                ("result", "Ok"),
            ]
        );
        assert_eq!(
            kv(r#"a="unclosed"#).collect::<Vec<_>>(),
            [("a", "unclosed")]
        );
        assert_eq!(kv("").count(), 0);
    }

    #[test]
    fn addresses_and_relays() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for (a, want) in [
            ("smtp://192.0.2.2:25", ip("192.0.2.2")),
            ("smtp+tls://[2001:db8::2]:25", ip("2001:db8::2")),
            ("192.0.2.1", ip("192.0.2.1")),
            ("2001:db8::1", ip("2001:db8::1")),
            ("local", None),
        ] {
            assert_eq!(ip_of_address(a), want, "{a}");
        }
        for (r, name, want) in [
            (
                "62.211.72.32 (smtp.tin.it)",
                Some("smtp.tin.it"),
                ip("62.211.72.32"),
            ),
            (
                "mx.example.com [192.0.2.2]",
                Some("mx.example.com"),
                ip("192.0.2.2"),
            ),
            (
                "2001:db8::3 (mx6.example)",
                Some("mx6.example"),
                ip("2001:db8::3"),
            ),
            ("127.0.0.1", None, ip("127.0.0.1")),
        ] {
            let p = parse_relay(r);
            assert_eq!((p.hostname.as_deref(), p.ip), (name, want), "{r}");
        }
    }

    #[test]
    fn cipher_forms() {
        let a = parse_ciphers("TLSv1.3:TLS_AES_256_GCM_SHA384:256").unwrap();
        assert_eq!(
            (a.version.as_ref(), a.cipher.as_ref(), a.bits),
            ("TLSv1.3", "TLS_AES_256_GCM_SHA384", Some(256))
        );
        let b =
            parse_ciphers("version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256").unwrap();
        assert_eq!(
            (b.version.as_ref(), b.cipher.as_ref(), b.bits),
            ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", Some(256))
        );
        assert!(parse_ciphers("version=TLSv1.2").is_none());
    }
}
