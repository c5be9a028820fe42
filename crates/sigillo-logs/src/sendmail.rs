//! Sendmail (`sm-mta`, `sendmail`, `sm-msp-queue`) → records: `STARTTLS=server|client` lines
//! joined by pid to the `from=` (inbound) and `to=` (outbound) lines of the same process.
//!
//! Decisions:
//! - **Join.** Older builds log `STARTTLS=server, relay=…` without a queue id, newer ones
//!   (8.16+) put the session's queue id first; both are joined by pid, which is one process per
//!   SMTP session, to every later `QID: from=…` of that pid whose `relay=` has the same IP
//!   (a reused pid from another peer does not inherit TLS), within an hour. Outbound,
//!   `STARTTLS=client, relay=NAME` is joined to `QID: to=…, relay=NAME [ip]` lines of the same
//!   pid with the same relay name (trailing dot and case ignored): one queue runner delivers
//!   to many hosts, and a cached connection logs its STARTTLS once.
//! - **Transport.** Inbound: the joined STARTTLS line; else `proto=ESMTPS`/`ESMTPSA` ⇒ TLS of
//!   unknown version; else plain. `from=` with `nrcpts=0` (nothing accepted) is no message;
//!   `relay=user@localhost` (no `[ip]`) is a local submission: internal. Outbound: `mailer=`
//!   `esmtp`, `smtp`, `smtp8`, `dsmtp`, `relay` are SMTP hops (Internet unless the aggregator
//!   sees loopback); any other mailer (`local`, `prog`, `*file*`, `lmtp`, …) is internal.
//!   A sent delivery without a joined STARTTLS line is plain; a deferred or bounced one is
//!   unknown; one without an `[ip]` that was not sent contacted nobody: no record.
//! - **Status** from `dsn=` (2/4/5 ⇒ sent/deferred/bounced), else from `stat=`.
//! - **Recipients**: inbound `nrcpts=`; outbound the addresses in the `to=` list.
//! - **Trust** (`verify=`): `OK`, `DANE_PASS` ⇒ Verified; `TRUSTED` ⇒ Trusted; `NO` (peer sent
//!   no certificate), `NOT` (none requested), `NONE` ⇒ Anonymous; `FAIL` and every other
//!   failure word (`SOFTWARE`, `PROTOCOL`, `TEMP`, `DANE_FAIL`, `CRLFAIL`, …) ⇒ Untrusted.
//! - **Anomalies**: `STARTTLS=server|client, error: …` and `ruleset=tls_server|tls_client, …,
//!   reject=…` ⇒ StartTlsFailed.
//! - **Connections**: Sendmail logs no connect/disconnect at its default LogLevel, and plain
//!   sessions leave no line of their own: no connection records.

use crate::envelope::Line;
use crate::fields::{BoundedMap, normalize_tls_version, parse_ip, parse_u64};
use crate::model::{
    AnomalyKind, AnomalyRecord, DeliveryStatus, Direction, MessageRecord, Mta, MtaParser, Peer,
    Record, Scope, TlsInfo, Transport, Trust, UnixTime,
};
use std::net::IpAddr;

const MAX_SERVER_SESSIONS: usize = 65_536;
const MAX_CLIENT_SESSIONS: usize = 16_384;
/// A STARTTLS line older than this is not joined to a later line of the same pid.
const MAX_AGE: UnixTime = 3600;
const HINT_NOT_SENT: &str =
    "Sendmail logs STARTTLS=client only for sessions that got that far; this delivery was not sent";

/// `key=value` fields separated by `, `, where a value may itself contain `, ` (e.g.
/// `ctladdr=root (0/0)`): a split happens only before `, key=`; `stat=` takes the rest.
fn fields(s: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut search = 0;
        // `stat=` is the last field and its free text may hold anything, `, key=` included.
        let end = if rest.starts_with("stat=") {
            rest.len()
        } else {
            loop {
                match rest.get(search..).and_then(|r| r.find(", ")) {
                    Some(i) => {
                        let at = search + i;
                        let next = rest.get(at + 2..).unwrap_or("");
                        let key_len = next
                            .bytes()
                            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                            .count();
                        if key_len > 0 && next.as_bytes().get(key_len) == Some(&b'=') {
                            break at;
                        }
                        search = at + 2;
                    }
                    None => break rest.len(),
                }
            }
        };
        let tok = rest.get(..end).unwrap_or("");
        rest = rest.get(end + 2..).unwrap_or("");
        Some(tok.split_once('=').unwrap_or((tok, "")))
    })
}

/// `relay=` values: `name [ip]`, `name. [ip] (may be forged)`, `[ip]`, `[IPv6:…]`,
/// `user@localhost`, `name` (STARTTLS=client).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Relay<'a> {
    name: Option<&'a str>,
    ip: Option<IpAddr>,
}

fn parse_relay(v: &str) -> Relay<'_> {
    let v = v.trim();
    let (name, bracket) = match v.rfind('[') {
        Some(i) => (v.get(..i).unwrap_or("").trim(), v.get(i..).unwrap_or("")),
        None => (v, ""),
    };
    let ip = bracket
        .strip_prefix('[')
        .and_then(|b| b.split_once(']'))
        .and_then(|(ip, _)| parse_ip(ip));
    let name = name.trim_end_matches('.');
    let name = (!name.is_empty() && !name.starts_with('[')).then_some(name);
    Relay { name, ip }
}

/// The name a `STARTTLS=client, relay=` and a `to=…, relay=` line share.
fn relay_key(v: &str) -> String {
    let v = v.trim();
    let name = match v.find(" [") {
        Some(i) => v.get(..i).unwrap_or(""),
        None => v,
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn trust_of(verify: &str) -> Trust {
    match verify {
        "OK" | "DANE_PASS" => Trust::Verified,
        "TRUSTED" => Trust::Trusted,
        "NO" | "NOT" | "NONE" => Trust::Anonymous,
        _ => Trust::Untrusted,
    }
}

/// A queue id prefix: 8–20 alphanumerics and `: `.
fn split_qid(m: &str) -> (Option<&str>, &str) {
    let n = m.bytes().take_while(u8::is_ascii_alphanumeric).count();
    if (8..=20).contains(&n)
        && m.as_bytes().get(n) == Some(&b':')
        && let (Some(q), Some(r)) = (m.get(..n), m.get(n + 1..))
    {
        return (Some(q), r.trim_start());
    }
    (None, m)
}

#[derive(Debug, Clone)]
struct ServerTls {
    time: UnixTime,
    ip: Option<IpAddr>,
    tls: TlsInfo,
}

#[derive(Debug, Clone)]
struct ClientTls {
    time: UnixTime,
    tls: TlsInfo,
}

/// Sendmail's [`MtaParser`]. Programs `sm-mta`, `sendmail`, `sm-msp-queue`.
#[derive(Debug)]
pub struct SendmailParser {
    server: BoundedMap<u32, ServerTls>,
    client: BoundedMap<(u32, String), ClientTls>,
    unparsed: u64,
    evicted: u64,
}

impl Default for SendmailParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SendmailParser {
    pub fn new() -> Self {
        Self {
            server: BoundedMap::new(MAX_SERVER_SESSIONS),
            client: BoundedMap::new(MAX_CLIENT_SESSIONS),
            unparsed: 0,
            evicted: 0,
        }
    }

    fn on_starttls(&mut self, server: bool, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let pid = line.pid.unwrap_or(0);
        if rest.starts_with("error:") || rest.contains(", error:") || rest.starts_with("error") {
            let raw = fields(rest).find(|(k, _)| *k == "relay").map(|(_, v)| v);
            let relay = raw.map(parse_relay).unwrap_or_default();
            if !server && let Some(raw) = raw {
                self.client.remove(&(pid, relay_key(raw)));
            }
            out.push(anomaly(
                line,
                if server {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                relay,
                AnomalyKind::StartTlsFailed,
            ));
            return;
        }
        let (mut relay, mut version, mut verify, mut cipher, mut bits) =
            (None, None, None, None, None);
        for (k, v) in fields(rest) {
            match k {
                "relay" => relay = Some(v),
                "version" => version = Some(v),
                "verify" => verify = Some(v),
                "cipher" => cipher = Some(v),
                "bits" => bits = v.split('/').next().and_then(parse_u64),
                _ => {}
            }
        }
        let (Some(relay), Some(version), Some(cipher)) = (relay, version, cipher) else {
            self.unparsed += 1;
            return;
        };
        let tls = TlsInfo {
            version: normalize_tls_version(version),
            cipher: crate::fields::intern(cipher),
            bits: bits.and_then(|b| u16::try_from(b).ok()),
            key_exchange: None,
            trust: verify.map(trust_of),
        };
        let evicted = if server {
            let ip = parse_relay(relay).ip;
            self.server
                .insert(
                    pid,
                    ServerTls {
                        time: line.time,
                        ip,
                        tls,
                    },
                )
                .is_some()
        } else {
            self.client
                .insert(
                    (pid, relay_key(relay)),
                    ClientTls {
                        time: line.time,
                        tls,
                    },
                )
                .is_some()
        };
        if evicted {
            self.evicted += 1;
        }
    }

    fn on_from(&mut self, qid: &str, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (mut size, mut nrcpts, mut proto, mut relay) = (None, None, None, None);
        for (k, v) in fields(rest) {
            match k {
                "size" => size = parse_u64(v),
                "nrcpts" => nrcpts = parse_u64(v),
                "proto" => proto = Some(v),
                "relay" => relay = Some(v),
                _ => {}
            }
        }
        let Some(nrcpts) = nrcpts else {
            self.unparsed += 1;
            return;
        };
        if nrcpts == 0 {
            return; // nothing accepted (all recipients rejected, or an aborted transaction)
        }
        let relay = relay.map(parse_relay).unwrap_or_default();
        let internal = relay.ip.is_none();
        let pid = line.pid.unwrap_or(0);
        let joined = self.server.get_mut(&pid).and_then(|s| {
            let fresh = line.time.saturating_sub(s.time) <= MAX_AGE;
            let same = s.ip.is_none() || relay.ip.is_none() || s.ip == relay.ip;
            (fresh && same).then(|| s.tls.clone())
        });
        let proto_tls = proto.is_some_and(|p| p.starts_with("ESMTPS"));
        let transport = match joined {
            Some(tls) => Transport::Tls(tls),
            None if proto_tls => Transport::Tls(TlsInfo {
                version: "unknown".into(),
                cipher: "unknown".into(),
                bits: None,
                key_exchange: None,
                trust: None,
            }),
            None => Transport::Plain,
        };
        out.push(Record::Message(MessageRecord {
            mta: Mta::Sendmail,
            time: line.time,
            direction: Direction::Inbound,
            scope: if internal {
                Scope::Internal
            } else {
                Scope::Internet
            },
            peer: peer(relay),
            transport,
            recipients: u32::try_from(nrcpts).unwrap_or(u32::MAX),
            size,
            id: qid.into(),
            status: None,
        }));
    }

    fn on_to(&mut self, qid: &str, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (mut to, mut mailer, mut relay, mut dsn, mut stat) = (None, None, None, None, None);
        for (k, v) in fields(rest) {
            match k {
                "to" => to = Some(v),
                "mailer" => mailer = Some(v),
                "relay" => relay = Some(v),
                "dsn" => dsn = Some(v),
                "stat" => stat = Some(v),
                _ => {}
            }
        }
        let (Some(to), Some(stat)) = (to, stat) else {
            self.unparsed += 1;
            return;
        };
        let recipients = to.split(',').filter(|a| !a.trim().is_empty()).count();
        let status = match dsn.and_then(|d| d.bytes().next()) {
            Some(b'2') => DeliveryStatus::Sent,
            Some(b'4') => DeliveryStatus::Deferred,
            Some(b'5') => DeliveryStatus::Bounced,
            _ if stat.starts_with("Sent") => DeliveryStatus::Sent,
            _ if stat.starts_with("Deferred") => DeliveryStatus::Deferred,
            _ => DeliveryStatus::Bounced,
        };
        let smtp = matches!(mailer, Some("esmtp" | "smtp" | "smtp8" | "dsmtp" | "relay"));
        let parsed = relay.map(parse_relay).unwrap_or_default();
        if smtp && parsed.ip.is_none() && status != DeliveryStatus::Sent {
            return; // no relay was contacted (DNS failure, retry not due)
        }
        let transport = if !smtp {
            Transport::Plain
        } else {
            let pid = line.pid.unwrap_or(0);
            let key = (pid, relay.map(relay_key).unwrap_or_default());
            match self.client.get_mut(&key) {
                Some(c) if line.time.saturating_sub(c.time) <= MAX_AGE => {
                    Transport::Tls(c.tls.clone())
                }
                _ if status == DeliveryStatus::Sent => Transport::Plain,
                _ => Transport::Unknown {
                    hint: HINT_NOT_SENT,
                },
            }
        };
        out.push(Record::Message(MessageRecord {
            mta: Mta::Sendmail,
            time: line.time,
            direction: Direction::Outbound,
            scope: if smtp {
                Scope::Internet
            } else {
                Scope::Internal
            },
            peer: peer(parsed),
            transport,
            recipients: u32::try_from(recipients.max(1)).unwrap_or(u32::MAX),
            size: None,
            id: qid.into(),
            status: Some(status),
        }));
    }

    fn on_tls_ruleset(&mut self, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let mut relay = None;
        let mut ruleset = "";
        let mut reject = false;
        for (k, v) in fields(rest) {
            match k {
                "ruleset" => ruleset = v,
                "relay" => relay = Some(parse_relay(v)),
                "reject" => reject = true,
                _ => {}
            }
        }
        if !reject {
            return;
        }
        // tls_server judges the server we sent to; tls_client the client that sent to us.
        let dir = if ruleset == "tls_server" {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        out.push(anomaly(
            line,
            dir,
            relay.unwrap_or_default(),
            AnomalyKind::StartTlsFailed,
        ));
    }
}

fn peer(r: Relay<'_>) -> Peer {
    Peer {
        hostname: r.name.map(Into::into),
        ip: r.ip,
    }
}

fn anomaly(line: &Line<'_>, direction: Direction, relay: Relay<'_>, kind: AnomalyKind) -> Record {
    Record::Anomaly(AnomalyRecord {
        mta: Mta::Sendmail,
        time: line.time,
        direction,
        peer: peer(relay),
        kind,
        evidence: line.raw.to_string(),
    })
}

impl MtaParser for SendmailParser {
    fn feed(&mut self, line: &Line<'_>, out: &mut Vec<Record>) {
        if !matches!(line.program, "sm-mta" | "sendmail" | "sm-msp-queue") {
            return;
        }
        let (qid, rest) = split_qid(line.message);
        if let Some(r) = rest.strip_prefix("STARTTLS=server") {
            self.on_starttls(true, r.trim_start_matches([',', ' ', ':']), line, out);
        } else if let Some(r) = rest.strip_prefix("STARTTLS=client") {
            self.on_starttls(false, r.trim_start_matches([',', ' ', ':']), line, out);
        } else if rest.starts_with("ruleset=tls_server,") || rest.starts_with("ruleset=tls_client,")
        {
            self.on_tls_ruleset(rest, line, out);
        } else if let Some(qid) = qid {
            if rest.starts_with("from=") {
                self.on_from(qid, rest, line, out);
            } else if rest.starts_with("to=") {
                self.on_to(qid, rest, line, out);
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<Record>) {
        // Every record is emitted on its own line; the TLS state left is only join context.
        self.server.drain();
        self.client.drain();
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
    fn field_splitting() {
        let got: Vec<_> = fields(
            "to=<a@x>,<b@x>, ctladdr=root (0/0), delay=00:00:01, stat=Sent (ok, queued as 1, x=y)",
        )
        .collect();
        assert_eq!(
            got,
            [
                ("to", "<a@x>,<b@x>"),
                ("ctladdr", "root (0/0)"),
                ("delay", "00:00:01"),
                ("stat", "Sent (ok, queued as 1, x=y)"),
            ]
        );
        assert_eq!(fields("").count(), 0);
        assert_eq!(fields(", , =").count(), 1);
    }

    #[test]
    fn relays() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let cases = [
            (
                "mail.example.org [192.0.2.1]",
                Some("mail.example.org"),
                ip("192.0.2.1"),
            ),
            (
                "mx.example.com. [192.0.2.2]",
                Some("mx.example.com"),
                ip("192.0.2.2"),
            ),
            ("[192.0.2.3]", None, ip("192.0.2.3")),
            ("[127.0.0.1] [127.0.0.1]", None, ip("127.0.0.1")),
            (
                "x.example [192.0.2.4] (may be forged)",
                Some("x.example"),
                ip("192.0.2.4"),
            ),
            ("[IPv6:2001:db8::1]", None, ip("2001:db8::1")),
            ("root@localhost", Some("root@localhost"), None),
            (
                "gmail-smtp-in.l.google.com.",
                Some("gmail-smtp-in.l.google.com"),
                None,
            ),
        ];
        for (v, name, ipv) in cases {
            assert_eq!(parse_relay(v), Relay { name, ip: ipv }, "{v}");
        }
        assert_eq!(relay_key("MX.Example.com. [192.0.2.2]"), "mx.example.com");
        assert_eq!(relay_key("mx.example.com."), "mx.example.com");
    }

    #[test]
    fn verify_words() {
        let cases = [
            ("OK", Trust::Verified),
            ("NO", Trust::Anonymous),
            ("NOT", Trust::Anonymous),
            ("NONE", Trust::Anonymous),
            ("FAIL", Trust::Untrusted),
            ("TRUSTED", Trust::Trusted),
            ("SOFTWARE", Trust::Untrusted),
        ];
        for (w, t) in cases {
            assert_eq!(trust_of(w), t, "{w}");
        }
    }

    #[test]
    fn queue_ids() {
        assert_eq!(
            split_qid("u253Kp8W002563: from=x"),
            (Some("u253Kp8W002563"), "from=x")
        );
        assert_eq!(
            split_qid("STARTTLS=server, relay=x"),
            (None, "STARTTLS=server, relay=x")
        );
        assert_eq!(split_qid("abc: x"), (None, "abc: x"));
    }
}
