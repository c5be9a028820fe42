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
//!   session's id) ⇒ Anonymous; before `mta cert-check` (6.0–6.4), `smtp-out: Server
//!   certificate verification succeeded|failed on session ID` ⇒ Verified / Untrusted. Result
//!   `Ok` ⇒ sent, `TempFail` ⇒ deferred, else bounced; a failed delivery in a session without
//!   TLS has an unknown transport. `mta disconnected` emits the outbound connection. `mda
//!   delivery` lines are internal deliveries.
//! - **Anomalies**: a refused `XXXXXXXA` command (STARTTLS as a PIX/ASA-style middlebox
//!   rewrites it) ⇒ StrippingTrace, in each form smtp_session.c's `smtp_reply()` has logged
//!   it: `smtp failed-command command="XXXXXXXA" result="500 5.5.1 Invalid command: Command
//!   unrecognized"` (6.4+), `smtp event=failed-command …` (6.0–6.3), `smtp-in: Failed command on
//!   session ID: "XXXXXXXA" => 500 …` (5.x, no peer known); a refused `STARTTLS`,
//!   `smtp disconnected reason=tls-…` (or an io-error naming TLS/SSL or a failed handshake),
//!   `mta closing reason=tls-…`, `mta error` naming TLS (`TLS required but not supported by
//!   remote host`, `STARTTLS rejected: …`) and `smtp-out: Error on session ID: opportunistic
//!   TLS failed, downgrading to plain` (or `… after N messages sent: …` naming TLS; 6.0–6.4
//!   also `smtp-out: TLS Error on session ID: TLS failed, downgrading to plain`) ⇒
//!   StartTlsFailed. After a failed attempt mta_session.c connects again under the same
//!   session id (in plaintext after the downgrade): the earlier connection ends there.
//! - **6.0–6.3** (`smtp_session.c` of 2016–2018, `mta_session.c`/`mta.c` of the same years)
//!   wrote the same events as `<session id> smtp event=<name> …` and `… mta event=<name> …`;
//!   each is read as its 6.4 counterpart: `event=connected`, `event=starttls` (⇒ `tls`; its
//!   `ciphers="…"` is quoted and, from 6.3, follows `address=` and `host=`),
//!   `event=client-cert-check`, `event=failed-command`, `event=closed` (⇒ `disconnected`).
//!   Inbound 6.0–6.3 logs one `event=message msgid=… from=<…> to=<…> size=… ndest=…` line per
//!   recipient once the message is committed, all together: lines of one session and msgid
//!   make one message with that many recipients. The message is held with its session until
//!   a line with another msgid, another line of that session, its end, its eviction or the end
//!   of input (one message of a session begun before the log is held alone, likewise). The
//!   inbound formats are those of `smtp_session.c` (verified, revisions 1.281 of 2016 and a
//!   6.3 one). `event=authentication` and `event=bad-input` carry nothing about TLS: ignored.
//! - **Outbound `event=` lines**, as OpenBSD's `mta_session.c` 1.82 (2015-12-12) and `mta.c`
//!   1.200 (2016-01-14) write them (NCommander/openbsd-src-with-branches,
//!   `usr.sbin/smtpd/mta_session.c` and `usr.sbin/smtpd/mta.c` at commit
//!   610363d6565f8b67f5a19f229bb5497bd9595aa0; 6.4's `mta_session.c` 1.113 of 2018-10-31,
//!   catern/OpenSMTPD `smtpd/mta_session.c` at 09a014a2c785eb626c3fb867577a527dfaec47d9, has
//!   the same calls with `event=` dropped, `closed` renamed `disconnected` and `starttls`
//!   `tls`): `mta event=connecting address=<schema>IP:port host=<PTR name>` (schema
//!   `smtp+tls://`, `tls://`, `smtps://`, `lmtp://` or `smtp://`; a host without a PTR name is
//!   `(null)`), `mta event=connected`, `mta event=starttls ciphers=version=…, cipher=…,
//!   bits=…` (unquoted: `ssl_to_text()` to the end of the line), `mta event=delivery
//!   evpid=… from=<…> to=<…> rcpt=<…> source=… relay=IP (name) delay=… result=… stat=…`
//!   (unquoted in mta.c 1.200; a published 6.x excerpt quotes `source`, `relay`, `result`
//!   and `stat`: both are read), `mta event=error reason=…` (the rest of the line; a session
//!   that has sent mail logs `smtp-out: Error on session ID after N messages sent: …`
//!   instead), `mta event=closing reason=ca-failure` and `mta event=closed reason=quit
//!   messages=N`. The server certificate's check is not an `event=` line: `smtp-out: Server
//!   certificate verification succeeded|failed on session ID` (⇒ Verified / Untrusted; 6.4
//!   still writes it; `mta cert-check` is later), and a failed handshake with opportunistic
//!   TLS is `smtp-out: TLS Error on session ID: TLS failed, downgrading to plain` (⇒
//!   StartTlsFailed; the session then connects again under its id).

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

/// The value of `ciphers=`, wherever it sits among the arguments (a word of its own, so not
/// inside another value): quoted up to its closing quote (6.0–6.3 `ciphers="version=TLSv1.2,
/// cipher=…, bits=256"`, after `address=` and `host=` from 6.3), else the rest of the line
/// (6.4+ writes it alone and unquoted, and the older text form has spaces in it).
fn ciphers_arg(args: &str) -> Option<&str> {
    let value = word_value(args, "ciphers=")?;
    Some(match value.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap_or(q),
        None => value.trim_matches('"'),
    })
}

/// The value of `reason=` (a word of its own): quoted up to its closing quote, else the rest
/// of the line (mta_session.c's `mta_error()` writes `reason=%s` last and unquoted, e.g.
/// `reason=IO Error: error:…:SSL routines:…`).
fn reason_arg(args: &str) -> Option<&str> {
    let value = word_value(args, "reason=")?;
    Some(match value.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap_or(q),
        None => value,
    })
}

/// An unquoted `relay=` of mta.c 1.200's delivery line: `IP (name)`, up to ` delay=` (which
/// follows it); `None` when it is quoted or not there.
fn unquoted_relay(args: &str) -> Option<&str> {
    let value = word_value(args, "relay=")?;
    if value.starts_with('"') {
        return None;
    }
    value.split_once(" delay=").map(|(relay, _)| relay)
}

/// What follows `key` (which ends in `=`) where it starts a word of `args`.
fn word_value<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let at = from + args.get(from..)?.find(key)?;
        if at == 0 || args.get(..at).is_some_and(|b| b.ends_with(' ')) {
            return args.get(at + key.len()..);
        }
        from = at + key.len();
    }
}

/// The 6.4 name of an inbound OpenSMTPD 6.0–6.3 `event=` name (smtp_session.c renamed these
/// two; the others kept their names).
fn smtp_verb_of_event(event: &str) -> &str {
    match event {
        "starttls" => "tls",
        "closed" => "disconnected",
        other => other,
    }
}

/// The 6.4 name of an outbound OpenSMTPD 6.0–6.3 `event=` name: mta_session.c 1.82 writes
/// `event=starttls` and `event=closed` where 1.113 (6.4) writes `tls` and `disconnected`; its
/// other events (`connecting`, `connected`, `error`, `closing`) and mta.c's `delivery` keep
/// their names. The server certificate's check is no `event=` line (see `feed`).
fn mta_verb_of_event(event: &str) -> &str {
    match event {
        "starttls" => "tls",
        "closed" => "disconnected",
        other => other,
    }
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
    // `(null)`: mta_session.c 1.82 prints a missing PTR name with `%s` (OpenBSD's printf).
    if h.is_empty()
        || h == "<unknown>"
        || h == "(null)"
        || Some(h) == address
        || parse_ip(h).is_some()
    {
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
    /// A 6.0–6.3 message whose per-recipient `event=message` lines may still be coming.
    legacy: Option<MessageRecord>,
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
    /// A 6.0–6.3 message of a session not seen to begin (its `event=message` lines may still
    /// be coming), with that session's id: one at most.
    orphan: Option<(u64, MessageRecord)>,
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
            orphan: None,
        }
    }

    fn on_smtp(&mut self, id: u64, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let (verb, legacy) = match verb.strip_prefix("event=") {
            Some(event) => (smtp_verb_of_event(event), true),
            None => (verb, false),
        };
        if legacy && verb == "message" {
            self.on_legacy_message(id, args, line, out);
            return;
        }
        // Any other line of the session: a 6.0–6.3 message held for it is complete.
        self.flush_legacy(id, out);
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
                    legacy: None,
                };
                if let Some((_, old)) = self.smtp.insert(id, s) {
                    self.evicted += 1;
                    smtp_close(old, out);
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
            "cert-check" | "client-cert-check" => {
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
                let recipients = nrcpt
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1)
                    .max(1);
                let record = self.inbound_message(id, line, msgid, size, recipients);
                out.push(Record::Message(record));
            }
            // 6.4+ `failed-command`, 6.0 `event=failed-command` (6.3 with `address=` and
            // `host=` before `command=`).
            "failed-command" => {
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
                    smtp_close(s, out);
                }
            }
            // `auth`/`event=authentication`, `event=bad-input`, `envelope`, …: nothing about
            // the transport.
            _ => {}
        }
    }

    /// An inbound message of session `id` (its peer and transport are the session's; a
    /// session not seen to begin leaves them unknown), counted in the session's messages.
    fn inbound_message(
        &mut self,
        id: u64,
        line: &Line<'_>,
        msgid: &str,
        size: Option<u64>,
        recipients: u32,
    ) -> MessageRecord {
        let (peer, scope, transport) = match self.smtp.get_mut(&id) {
            Some(s) => {
                s.messages = s.messages.saturating_add(1);
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
        MessageRecord {
            mta: Mta::Opensmtpd,
            time: line.time,
            direction: Direction::Inbound,
            scope,
            peer,
            transport,
            recipients,
            size,
            id: msgid.into(),
            status: None,
            recipient_domain: None,
            spanned_domains: None,
            port: None,
        }
    }

    /// OpenSMTPD 6.0–6.3's `event=message msgid=… from=<…> to=<…> size=… ndest=…`, one line
    /// per recipient of a committed message, all written together by one loop of
    /// smtp_session.c: a line of the held message (same session, same msgid) adds a
    /// recipient; another msgid completes the held message and holds a new one.
    fn on_legacy_message(&mut self, id: u64, args: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (mut msgid, mut size) = (None, None);
        for (k, v) in kv(args) {
            match k {
                "msgid" if msgid.is_none() => msgid = Some(v),
                "size" => size = parse_u64(v),
                _ => {}
            }
        }
        let Some(msgid) = msgid.filter(|m| !m.is_empty()) else {
            self.unparsed += 1;
            return;
        };
        let same = |m: &MessageRecord| m.id.as_ref() == msgid;
        if let Some(s) = self.smtp.get_mut(&id) {
            if let Some(held) = s.legacy.as_mut().filter(|m| same(m)) {
                held.recipients = held.recipients.saturating_add(1);
                return;
            }
            if let Some(done) = s.legacy.take() {
                out.push(Record::Message(done));
            }
            let record = self.inbound_message(id, line, msgid, size, 1);
            if let Some(s) = self.smtp.get_mut(&id) {
                s.legacy = Some(record);
            }
            return;
        }
        if let Some((_, held)) = self.orphan.as_mut().filter(|(o, m)| *o == id && same(m)) {
            held.recipients = held.recipients.saturating_add(1);
            return;
        }
        let record = self.inbound_message(id, line, msgid, size, 1);
        if let Some((_, done)) = self.orphan.replace((id, record)) {
            out.push(Record::Message(done));
        }
    }

    /// Emits the 6.0–6.3 message held for session `id`, if any: its recipient lines are over.
    fn flush_legacy(&mut self, id: u64, out: &mut Vec<Record>) {
        if let Some(s) = self.smtp.get_mut(&id)
            && let Some(done) = s.legacy.take()
        {
            out.push(Record::Message(done));
        }
        if self.orphan.as_ref().is_some_and(|(o, _)| *o == id)
            && let Some((_, done)) = self.orphan.take()
        {
            out.push(Record::Message(done));
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
        let verb = verb.strip_prefix("event=").map_or(verb, mta_verb_of_event);
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
                    // Later versions' `valid`/`unverified` (mta_session.c's
                    // `mta_tls_started()`); before them, `smtp-out: Server certificate
                    // verification …` (see `feed`).
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
                let reason = reason_arg(args).unwrap_or(args);
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
                "evpid" if evpid.is_none() => evpid = Some(v),
                "relay" if relay.is_none() => relay = Some(unquoted_relay(args).unwrap_or(v)),
                "to" if to.is_none() => to = Some(v),
                "result" if result.is_none() => result = Some(v),
                // The server's reply, last and free text (unquoted in mta.c 1.200): nothing
                // in it is a field.
                "stat" => break,
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
            spanned_domains: None,
            port: None,
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
            recipient::merge(
                &mut p.recipient_domain,
                &mut p.spanned_domains,
                record.recipient_domain.as_ref(),
            );
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
            spanned_domains: None,
            port: None,
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

/// The end of an inbound session: the 6.0–6.3 message held for it, then the connection.
fn smtp_close(mut s: SmtpSession, out: &mut Vec<Record>) {
    if let Some(done) = s.legacy.take() {
        out.push(Record::Message(done));
    }
    out.push(Record::Connection(smtp_connection(s)));
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
            // 6.0–6.4 (mta_session.c 1.82–1.113): a TLS handshake failure with opportunistic
            // TLS, `smtp-out: TLS Error on session 0123456789abcdef: TLS failed, downgrading to
            // plain`, read likewise.
            if let Some(r) = (line.message.strip_prefix("smtp-out: Error on session "))
                .or_else(|| line.message.strip_prefix("smtp-out: TLS Error on session "))
                && let Some((n, rest)) = session_id(r)
                && let Some((_, reason)) = rest.split_once(": ")
            {
                self.mta_error(n, reason, line, out);
                return;
            }
            // 6.0–6.4 (mta_session.c 1.82–1.113, `IO_TLSVERIFIED`): the server certificate's
            // check, logged when the server presented one: `smtp-out: Server certificate
            // verification succeeded on session 0123456789abcdef` (or `failed`).
            if let Some(r) = line
                .message
                .strip_prefix("smtp-out: Server certificate verification ")
                && let Some((result, r)) = r.split_once(" on session ")
                && let Some((n, "")) = session_id(r)
            {
                let trust = match result {
                    "succeeded" => Trust::Verified,
                    "failed" => Trust::Untrusted,
                    _ => return,
                };
                if let Some(s) = self.mta.get_mut(&n) {
                    s.trust = Some(trust);
                }
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
        if let Some((_, done)) = self.orphan.take() {
            out.push(Record::Message(done));
        }
        for (_, s) in self.mta.drain_ordered() {
            mta_close(s, out);
        }
        for (_, s) in self.smtp.drain_ordered() {
            smtp_close(s, out);
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

    #[test]
    fn ciphers_wherever_they_sit() {
        let old = "version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256";
        // 6.4+: first and unquoted, the rest of the line (with spaces in the older form).
        assert_eq!(ciphers_arg(&format!("ciphers={old}")), Some(old));
        assert_eq!(
            ciphers_arg("ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256"),
            Some("TLSv1.3:TLS_AES_256_GCM_SHA384:256")
        );
        // 6.0: quoted.
        assert_eq!(ciphers_arg(&format!("ciphers=\"{old}\"")), Some(old));
        // 6.3: quoted, after address= and host=; what follows the closing quote is not in it.
        assert_eq!(
            ciphers_arg(&format!(
                "address=192.0.2.1 host=mx.example ciphers=\"{old}\" extra=1"
            )),
            Some(old)
        );
        // Only a word of its own: not inside another key or value.
        assert_eq!(
            ciphers_arg("host=xciphers=bad ciphers=\"TLSv1.2:X:1\""),
            Some("TLSv1.2:X:1")
        );
        assert_eq!(ciphers_arg("host=xciphers=bad"), None);
        assert_eq!(ciphers_arg("address=192.0.2.1"), None);
        assert_eq!(ciphers_arg("ciphers=\"unclosed"), Some("unclosed"));
        assert_eq!(ciphers_arg(""), None);
    }

    #[test]
    fn reasons_and_unquoted_relays() {
        // mta_error(): `reason=%s` last and unquoted, spaces and all.
        assert_eq!(
            reason_arg("reason=IO Error: error:1:SSL routines:x"),
            Some("IO Error: error:1:SSL routines:x")
        );
        assert_eq!(
            reason_arg("reason=quit messages=2"),
            Some("quit messages=2")
        );
        assert_eq!(
            reason_arg(r#"reason="io-error: TLS" other=1"#),
            Some("io-error: TLS")
        );
        // Only a word of its own.
        assert_eq!(reason_arg("xreason=a"), None);
        assert_eq!(reason_arg("xreason=a reason=b"), Some("b"));
        assert_eq!(reason_arg(""), None);
        // mta.c 1.200: `relay=IP (name) delay=…`; the quoted form is kv()'s.
        let d = "evpid=1 source=192.0.2.1 relay=203.0.113.5 (mx.example) delay=2s result=Ok";
        assert_eq!(unquoted_relay(d), Some("203.0.113.5 (mx.example)"));
        assert_eq!(
            unquoted_relay(r#"relay="203.0.113.5 (mx.example)" delay=2s"#),
            None
        );
        assert_eq!(unquoted_relay("relay=203.0.113.5"), None);
        assert_eq!(unquoted_relay("delay=2s"), None);
    }

    /// The server certificate's check of 6.0–6.4 names its session last; a delivery line's
    /// reply text is not read for fields.
    #[test]
    fn legacy_server_certificate_lines() {
        let mut p = OpensmtpdParser::new();
        let mut out = Vec::new();
        for m in [
            "00000000000000c3 mta event=connecting address=smtp+tls://192.0.2.9:25 host=(null)",
            "00000000000000c3 mta event=starttls ciphers=version=TLSv1.2, cipher=X, bits=128",
            "smtp-out: Server certificate verification failed on session 00000000000000c3",
            // Not a session of this parser, or not a session id: nothing.
            "smtp-out: Server certificate verification succeeded on session 00000000000000d4",
            "smtp-out: Server certificate verification succeeded on session 00c3",
            "smtp-out: Server certificate verification maybe on session 00000000000000c3",
            "00000000000000c3 mta event=delivery evpid=cccc000100000001 to=<a@b.example> relay=192.0.2.9 delay=1s result=Ok stat=250 result=PermFail relay=x",
        ] {
            p.feed(&line(m), &mut out);
        }
        p.finish(&mut out);
        let Some(Record::Message(m)) = out.first() else {
            panic!("no message first: {out:?}");
        };
        assert_eq!(m.status, Some(DeliveryStatus::Sent));
        assert_eq!(m.peer.ip, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(m.peer.hostname, None, "(null) is no name");
        match &m.transport {
            Transport::Tls(t) => assert_eq!(t.trust, Some(Trust::Untrusted)),
            t => panic!("{t:?}"),
        }
    }

    fn line(message: &str) -> Line<'_> {
        Line {
            time: 1_772_700_000,
            host: "mx",
            program: "smtpd",
            pid: Some(1),
            message,
            raw: message,
        }
    }

    fn messages(out: &[Record]) -> Vec<(&str, u32)> {
        out.iter()
            .filter_map(|r| match r {
                Record::Message(m) => Some((m.id.as_ref(), m.recipients)),
                _ => None,
            })
            .collect()
    }

    /// An inbound session's close, in each form smtp_session.c has written it (OpenBSD
    /// `usr.sbin/smtpd/smtp_session.c` of 2016 for 6.0–6.2, the 6.3 one with `address=` and
    /// `host=`, 6.4+ `smtp disconnected`): the only reason with spaces, `io-error: …`, is
    /// always quoted; the others are one word (`quit`, `timeout`, `disconnect`,
    /// `ca-failure`, `tls-accept-failed`, `no-client-cert`, the certificate check's
    /// `cert-invalid` after two spaces…). A STARTTLS failure iff the whole reason names TLS,
    /// SSL or a handshake; each form ends the session.
    #[test]
    fn inbound_close_reasons() {
        let cases: &[(&str, bool)] = &[
            (
                r#"smtp disconnected reason="io-error: handshake failed: error:0A000126:SSL routines::unexpected eof while reading""#,
                true,
            ),
            // The words after the first are what names TLS here (libtls, OpenSMTPD #1245).
            (
                r#"smtp disconnected reason="io-error: handshake failed: No error information""#,
                true,
            ),
            (
                r#"smtp disconnected reason="io-error: Connection reset by peer""#,
                false,
            ),
            ("smtp disconnected reason=tls-accept-failed", true),
            ("smtp disconnected  reason=cert-invalid", false),
            ("smtp disconnected reason=quit", false),
            ("smtp disconnected reason=timeout", false),
            (
                r#"smtp event=closed reason="io-error: error:1408A0C1:SSL routines:ssl3_get_client_hello:no shared cipher""#,
                true,
            ),
            ("smtp event=closed reason=disconnect", false),
            (
                r#"smtp event=closed address=192.0.2.9 host=c.example reason="io-error: error:1408F10B:SSL routines:ssl3_get_record:wrong version number""#,
                true,
            ),
            (
                "smtp event=closed address=192.0.2.9 host=c.example reason=no-client-cert",
                false,
            ),
        ];
        for (close, tls_failed) in cases {
            let mut p = OpensmtpdParser::new();
            let mut out = Vec::new();
            let open = "00000000000000c3 smtp connected address=192.0.2.9 host=c.example";
            p.feed(&line(open), &mut out);
            let close = format!("00000000000000c3 {close}");
            p.feed(&line(&close), &mut out);
            let failures = out
                .iter()
                .filter(|r| {
                    matches!(r, Record::Anomaly(a)
                    if a.kind == AnomalyKind::StartTlsFailed && a.direction == Direction::Inbound)
                })
                .count();
            assert_eq!(failures, usize::from(*tls_failed), "{close}");
            let closed = out
                .iter()
                .filter(|r| matches!(r, Record::Connection(_)))
                .count();
            assert_eq!(closed, 1, "{close}");
        }
    }

    /// 6.0–6.3 per-recipient lines of two sessions interleaved (two hosts' logs merged) make
    /// one message each; each held message is emitted once, when its session's next line or
    /// the end of input comes.
    #[test]
    fn legacy_recipient_lines_merge_per_session_and_msgid() {
        let mut p = OpensmtpdParser::new();
        let mut out = Vec::new();
        for m in [
            "00000000000000a1 smtp event=connected address=192.0.2.1 host=a.example",
            "00000000000000b2 smtp event=connected address=192.0.2.2 host=b.example",
            "00000000000000a1 smtp event=message msgid=aaaa0001 from=<x@a> to=<1@c> size=10 ndest=1 proto=ESMTP",
            "00000000000000b2 smtp event=message msgid=bbbb0001 from=<x@b> to=<1@c> size=20 ndest=1 proto=ESMTP",
            "00000000000000a1 smtp event=message msgid=aaaa0001 from=<x@a> to=<2@c> size=10 ndest=1 proto=ESMTP",
            "00000000000000b2 smtp event=message msgid=bbbb0001 from=<x@b> to=<2@c> size=20 ndest=1 proto=ESMTP",
            "00000000000000b2 smtp event=message msgid=bbbb0001 from=<x@b> to=<3@c> size=20 ndest=1 proto=ESMTP",
        ] {
            p.feed(&line(m), &mut out);
        }
        assert!(messages(&out).is_empty(), "held until complete: {out:?}");
        // Another msgid of session a1 completes aaaa0001.
        p.feed(
            &line("00000000000000a1 smtp event=message msgid=aaaa0002 from=<x@a> to=<9@c> size=5 ndest=1 proto=ESMTP"),
            &mut out,
        );
        assert_eq!(messages(&out), [("aaaa0001", 2)]);
        // Another line of session b2 completes bbbb0001.
        p.feed(
            &line("00000000000000b2 smtp event=closed reason=quit"),
            &mut out,
        );
        assert_eq!(messages(&out), [("aaaa0001", 2), ("bbbb0001", 3)]);
        p.finish(&mut out);
        assert_eq!(
            messages(&out),
            [("aaaa0001", 2), ("bbbb0001", 3), ("aaaa0002", 1)]
        );
        let conns: Vec<u32> = out
            .iter()
            .filter_map(|r| match r {
                Record::Connection(c) => Some(c.messages),
                _ => None,
            })
            .collect();
        assert_eq!(
            conns,
            [1, 2],
            "b2 closed with 1 message, a1 at the end with 2"
        );
        assert_eq!(p.unparsed(), 0);
    }

    /// A held message whose session is evicted is emitted with it, not lost.
    #[test]
    fn legacy_message_held_by_an_evicted_session_is_emitted() {
        let mut p = OpensmtpdParser::new();
        p.smtp = Bounded::new(1);
        let mut out = Vec::new();
        p.feed(
            &line("00000000000000a1 smtp event=connected address=192.0.2.1 host=a.example"),
            &mut out,
        );
        p.feed(
            &line("00000000000000a1 smtp event=message msgid=aaaa0001 from=<x@a> to=<1@c> size=10 ndest=1 proto=ESMTP"),
            &mut out,
        );
        p.feed(
            &line("00000000000000b2 smtp event=connected address=192.0.2.2 host=b.example"),
            &mut out,
        );
        assert_eq!(messages(&out), [("aaaa0001", 1)]);
        assert_eq!(p.evicted(), 1);
        // A message line without a msgid is not understood.
        p.feed(
            &line("00000000000000b2 smtp event=message from=<x@b> to=<1@c>"),
            &mut out,
        );
        assert_eq!(p.unparsed(), 1);
    }
}
