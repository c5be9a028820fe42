//! Sendmail (`sm-mta`, `sendmail`, `sm-msp-queue`) → records: `STARTTLS=server|client` lines
//! joined to the `from=` (inbound) and `to=` (outbound) lines of the same process (host, pid).
//!
//! Decisions:
//! - **Join.** Older builds log `STARTTLS=server, relay=…` without a queue id, newer ones
//!   (8.16+) put the session's queue id first; both are joined by process (the syslog host
//!   and pid: merged logs of several hosts keep theirs apart), one per SMTP session, to every
//!   later `QID: from=…` of that process whose `relay=` has the same IP
//!   (a reused pid from another peer does not inherit TLS), within an hour. Outbound,
//!   `STARTTLS=client, relay=NAME` is joined to `QID: to=…, relay=NAME [ip]` lines of the same
//!   pid with the same relay name (trailing dot and case ignored) while that connection can
//!   still be in Sendmail's connection cache: one queue runner delivers to many hosts, and a
//!   cached connection logs its STARTTLS once.
//! - **Transport.** Inbound: the joined STARTTLS line; else `proto=ESMTPS`/`ESMTPSA` ⇒ TLS of
//!   unknown version; else plain. `from=` with `nrcpts=0` (nothing accepted) is no message;
//!   `relay=user@localhost` (no `[ip]`) is a local submission: internal. Outbound: `mailer=`
//!   `esmtp`, `smtp`, `smtp8`, `dsmtp`, `relay` are SMTP hops (Internet unless the aggregator
//!   sees loopback); any other mailer (`local`, `prog`, `*file*`, `lmtp`, …) is internal.
//!   A sent delivery without a joined STARTTLS line is plain; a deferred or bounced one is
//!   unknown; one without an `[ip]` that was not sent contacted nobody: no record.
//! - **Status** from `dsn=` (2/4/5 ⇒ sent/deferred/bounced), else from `stat=`.
//! - **Recipients**: inbound `nrcpts=`; outbound the addresses in the `to=` list, whose
//!   domain is the record's recipient domain when they share one.
//! - **Trust** (`verify=`): `OK`, `DANE_PASS` ⇒ Verified; `TRUSTED` ⇒ Trusted; `NO` (peer sent
//!   no certificate), `NOT` (none requested), `NONE` ⇒ Anonymous; `FAIL` and every other
//!   failure word (`SOFTWARE`, `PROTOCOL`, `TEMP`, `DANE_FAIL`, `CRLFAIL`, …) ⇒ Untrusted.
//! - **Anomalies**: `STARTTLS=server|client, error: …` and `ruleset=tls_server|tls_client, …,
//!   reject=…` ⇒ StartTlsFailed. Stripping traces (Sendmail does not log a refused command
//!   below LogLevel 15):
//!   - `<-- XXXXXXXA` (LogLevel ≥ 15 logs every command): STARTTLS rewritten by a PIX/ASA-style
//!     middlebox; the evidence adds the session's next line naming the peer (its `from=`, or
//!     `did not issue MAIL/EXPN/VRFY/ETRN`);
//!   - `host [ip] did not issue MAIL/EXPN/VRFY/ETRN during connection to …` (a session
//!     without mail, LogLevel > 5) with no `STARTTLS=server` in that process, from an address
//!     that used STARTTLS earlier in the log: a client that insists on TLS and quit when its
//!     STARTTLS was refused;
//!   - outbound, a new plaintext connection to a relay that used `STARTTLS=client` earlier in
//!     the log.
//! - **Inbound connections**: Sendmail logs no connect/disconnect at its default LogLevel, but
//!   it forks one daemon child per SMTP connection, so a pid is one session: it opens with its
//!   `STARTTLS=server` line or its first `from=` line naming an `[ip]`, takes the later
//!   `from=` lines of that pid from the same address (within an hour of its last line) as
//!   more mail on it, and ends with its `did not issue MAIL/EXPN/VRFY/ETRN` line, with another
//!   session of that pid (a `STARTTLS=server` line, or a line from another address or after
//!   an hour), after an hour without a line, or at the end of input. Its transport is TLS
//!   with a `STARTTLS=server` line (or `proto=ESMTPS`), plain otherwise; `messages` counts its
//!   `from=` lines with `nrcpts` above 0. Sessions rejected before `MAIL` that log nothing
//!   of their own (at LogLevel ≤ 5 even those without mail) are not seen.
//! - **Outbound connections**, per process (pid), relay host and mailer (`mailer=`: mci.c
//!   `mci_get(host, m)` caches one connection per host and mailer, so one host reached
//!   through `esmtp` and `relay` is two connections, two cache slots): a `STARTTLS=client`
//!   line is one new TLS connection (exact: one per handshake), of the mailer of the
//!   process's next delivery to that relay (the line names none), in the place of the cache
//!   order it took at its own line (so is a failed handshake's: its connection was made):
//!   when its session failed and Sendmail went on to the next MX host, the relays the process
//!   used before that delivery are behind it. Plaintext connections
//!   leave no line: the first delivery of a process to a relay (by a mailer) without a
//!   `STARTTLS=client` line counts one, and later deliveries of that process to that relay
//!   (by that mailer) reuse it while that process's
//!   connection cache still holds it (Sendmail's cache is per process, mci.c's `MciCache`;
//!   another process to the same relay has its own connection): not idle longer than
//!   `ConnectionCacheTimeout` (5 minutes by default) from the previous use's line to the start
//!   of this delivery's transaction (its line's time minus its `xdelay=`; without `xdelay=`,
//!   its line's time and a minute of grace), and not closed for other relays: a process
//!   caches `ConnectionCacheSize` connections (2 in cf/m4-built configurations) and closes
//!   the least recently used for a new one, so a connection with that many other relays used
//!   by the process since is gone. A delivery over a connection the cache has closed went over
//!   a new one, in clear unless a new `STARTTLS=client` line says otherwise (but see below for
//!   a TLS connection a larger cache would still hold). A deferral that reached no session
//!   (`Connection refused`, `timed out`, `Host is down`, no `[ip]`, …; never one quoting
//!   the server's reply, `Deferred: 4xx …`, whatever the reply names) counts none, takes no
//!   cache slot (deliver.c `deliver()` calls `mci_cache()` only when `makeconnection()`
//!   returned `EX_OK`; a failed attempt keeps host status in the symbol table alone), and
//!   closes the one the model held to that relay (`mci_get()` reuses a cached connection
//!   only while it answers); in a process that logs its connects, so does a deferral quoting
//!   no server reply with no connect line before it and no connection the model holds, unless
//!   it names an error only a session has (`Connection reset by …`: a cached connection). The
//!   closed connection keeps its place in the order: its mci stays in its slot, closed, and
//!   `mci_scan()` gives a new connection that slot or the least recently used open one
//!   after it by slot position, which the log does not show. `messages` are the queue
//!   ids delivered over it. A transaction logs its recipients refused at `RCPT` first, each on
//!   a line of its own, then those sent: a new connection in clear opened by such a line is
//!   of unknown transport until a delivery over it is sent, which makes it plain (and a
//!   stripping trace to a relay that used STARTTLS before).
//! - **Cache size and downgrades.** Below LogLevel 12 a reuse of a cached TLS connection and a
//!   new connection in clear (a middlebox that hid STARTTLS) both leave no line, so the size
//!   is never learnt from a TLS connection seemingly used again behind more relays, and such
//!   a delivery is claimed neither way: to a relay whose TLS connection of the same process
//!   the modelled cache has closed but a larger one (up to 32) would still hold (idle at most
//!   `ConnectionCacheTimeout`, fewer than 32 other relays used since), it is of unknown
//!   transport, with no new connection and no stripping trace, as are the deliveries after it
//!   over the same connection; `advice` counts them and asks for LogLevel 12. Past the
//!   timeout or the 32 relays, or with no TLS connection of the process to that relay, the
//!   log is plain: a new plaintext connection (and a stripping trace to a relay that used
//!   STARTTLS before). The size is 2 per host (the syslog host field) unless that host's log
//!   proves more: at LogLevel 12 and up daemon.c's `makeconnection()` logs `QID: SMTP
//!   outgoing connect on …` for each new connection, so in a process that logs them a
//!   delivery with a connect line before it is a new connection (whatever the model says)
//!   and one without is a reuse; a reuse behind `n` other relays raises the host's size to
//!   `n + 1` (at most 32). A reuse of a connection the log did not show opening is of unknown
//!   transport.
//! - **Processes.** A process is its host and pid. A pid is a new process, with an empty
//!   cache, when it starts an inbound SMTP session (a daemon child is forked per
//!   connection), under another program name (`sm-mta`, `sendmail`, `sm-msp-queue`), or
//!   after being idle longer than `ConnectionCacheTimeout` (all its connections have expired
//!   then anyway). A `starting daemon` line of its host and program name ends no process
//!   (daemon.c `restart_daemon()` execs the daemon anew and `shutdown_daemon()` exits;
//!   neither signals a child): a pid of before it may be the same queue runner with its
//!   cache, or a new process. Below LogLevel 12 its delivery to a relay whose TLS connection
//!   it had before the start is of unknown transport, as behind a larger cache; its
//!   connections in clear are taken as the model holds them; connect lines decide.

use crate::envelope::Line;
use crate::fields::{normalize_tls_version, parse_ip, parse_u64};
use crate::model::{
    AnomalyKind, AnomalyRecord, ConnectionRecord, DeliveryStatus, Direction, MessageRecord, Mta,
    MtaParser, Peer, Record, Scope, Text, TlsInfo, Transport, Trust, UnixTime,
};
use crate::postfix::bounded::{Bounded, FxBuild};
use crate::recipient::{self, DomainTexts};
use std::collections::VecDeque;
use std::net::IpAddr;

const MAX_SERVER_SESSIONS: usize = 65_536;
const MAX_CLIENT_SESSIONS: usize = 16_384;
/// Peer addresses and relay names remembered as having used TLS (for stripping traces).
const MAX_TLS_PEERS: usize = 65_536;
/// Sessions with a `<-- XXXXXXXA` line waiting for a line that names the peer.
const MAX_PENDING_TRACES: usize = 4_096;
/// Inbound: a line of a daemon child more than this after the last line of its session is
/// another session (Sendmail's SMTP server timeouts are at most an hour), and a pending trace
/// or failed handshake of the pid this old is not joined to it.
const MAX_AGE: UnixTime = 3600;
/// Outbound: how long after its last use a connection of a process to a relay is still
/// cached. Sendmail's `ConnectionCacheTimeout` (option `K`; conf.c `setdefaults()`:
/// `MciCacheTimeout = 5 MINUTES`, cf/m4/proto.m4 `5m`). mci.c's `mci_scan()` closes a cached
/// connection when `mci_lastuse + MciCacheTimeout <= now`; `mci_lastuse` is the time of the
/// last SMTP reply read on it (usersmtp.c `reply()`), so of its last delivery's `to=` line,
/// written right after the reply to the message; `now` is when the next delivery looks for a
/// connection (`mci_get()`, which scans first), after deliver.c's `xstart = curtime()` that
/// `xdelay=` counts from (`xdelay=` is `curtime() - xstart` when the line is written). So with
/// `xdelay=`, the idle time from the previous use's line to this line's time minus `xdelay=`
/// is at least the cache's idle time less one second of the log clock: above this, the
/// connection was closed; at or below it, it may still have been cached.
const MCI_CACHE_TIMEOUT: UnixTime = 5 * 60;
/// Without `xdelay=` (or with one that does not parse) the transaction's own time is not
/// known: the line's time is taken as its start and a minute of grace is added.
const NO_XDELAY_GRACE: UnixTime = 60;
/// Outbound: how many connections one process caches. Sendmail's connection cache is a
/// static array of each process (mci.c: `static MCI **MciCache`, `MaxMciCache` slots, option
/// `k` / `ConnectionCacheSize`): a queue runner or delivery process opening a connection when
/// every slot holds a live one closes the least recently used (`mci_cache()` takes the slot
/// `mci_scan()` returns, the oldest `mci_lastuse`, and `mci_uncache()`s it). conf.c's default
/// is 1, but configurations built with cf/m4 set 2 (`confMCI_CACHE_SIZE`, proto.m4
/// `_OPTION(ConnectionCacheSize, confMCI_CACHE_SIZE, 2)`), which this assumes for each host
/// until its log proves a bigger cache: a delivery without a connect line (LogLevel 12 and
/// up) after more other relays than that. A TLS connection seemingly used again without a
/// new `STARTTLS=client` line proves nothing: a new connection in clear looks the same.
const DEFAULT_CACHE_SIZE: usize = 2;
/// Relays remembered per process in order of use (most recent last), and the largest cache
/// size learnt: a connection with this many other relays used after it is taken as closed.
const MAX_CACHE_TRACKED: usize = 32;
/// Processes whose order of relays is remembered.
const MAX_CACHE_PROCESSES: usize = 4_096;
/// Hosts (the syslog host field) whose cache size and daemon start are remembered.
const MAX_HOSTS: usize = 1_024;
const HINT_CACHED_UNSEEN: &str = "Sendmail reused a cached connection (no SMTP outgoing connect \
     line before this delivery) opened before the log shows: whether it is TLS is not known";
const HINT_NOT_SENT: &str =
    "Sendmail logs STARTTLS=client only for sessions that got that far; this delivery was not sent";
const HINT_CACHE_AMBIGUOUS: &str = "Sendmail below LogLevel 12 does not show whether this \
     delivery reused the process's cached TLS connection to the relay (a ConnectionCacheSize \
     larger than modelled, or a process that outlived a daemon restart) or opened a new one in \
     clear";
/// The setting that tells a reused connection from a new one, for [`SendmailParser::advice`].
const HINT_LOG_LEVEL: &str = "set LogLevel 12 or higher (`O LogLevel=12` in sendmail.cf, or \
     define(`confLOG_LEVEL', `12') in the .mc file): Sendmail then logs `SMTP outgoing connect \
     on …` for each new outgoing connection, which tells a reused TLS connection from a new \
     connection in clear";

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

/// An interval as Sendmail logs it in `delay=` and `xdelay=` (`pintvl()` in brief form:
/// `HH:MM:SS`, with a `D+` prefix for whole days), in seconds; `None` when it is not one
/// (or would overflow).
fn parse_interval(v: &str) -> Option<UnixTime> {
    let (days, hms) = match v.split_once('+') {
        Some((d, rest)) => (parse_u64(d)?, rest),
        None => (0, v),
    };
    let mut parts = hms.split(':');
    let (Some(h), Some(m), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (h, m, s) = (parse_u64(h)?, parse_u64(m)?, parse_u64(s)?);
    if m >= 60 || s >= 60 {
        return None;
    }
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h.checked_mul(3600)?)?
        .checked_add(m * 60 + s)?;
    UnixTime::try_from(secs).ok()
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

/// One inbound SMTP session: one daemon child (pid) of Sendmail.
#[derive(Debug)]
struct ServerSession {
    /// Its first line.
    time: UnixTime,
    /// Its last line: a line of the same pid more than [`MAX_AGE`] later is another session.
    last: UnixTime,
    peer: Peer,
    /// From its `STARTTLS=server` line.
    tls: Option<TlsInfo>,
    /// `proto=ESMTPS`/`ESMTPSA` on a `from=` line without a `STARTTLS=server` line.
    proto_tls: bool,
    messages: u32,
}

impl ServerSession {
    fn new(time: UnixTime, relay: Relay<'_>) -> Self {
        Self {
            time,
            last: time,
            peer: peer(relay),
            tls: None,
            proto_tls: false,
            messages: 0,
        }
    }

    /// Whether a line at `time` from `ip` of the same pid belongs to this session.
    fn takes(&self, time: UnixTime, ip: Option<IpAddr>) -> bool {
        time.saturating_sub(self.last) <= MAX_AGE
            && (self.peer.ip.is_none() || ip.is_none() || self.peer.ip == ip)
    }

    fn record(self) -> Record {
        Record::Connection(ConnectionRecord {
            mta: Mta::Sendmail,
            time: self.time,
            direction: Direction::Inbound,
            scope: Scope::Internet,
            transport: inbound_transport(self.tls, self.proto_tls),
            peer: self.peer,
            messages: self.messages,
        })
    }
}

/// An inbound session's or message's transport: TLS with the session's `STARTTLS=server`
/// line, TLS of unknown version with `proto=ESMTPS`/`ESMTPSA`, plain otherwise.
fn inbound_transport(starttls: Option<TlsInfo>, proto_tls: bool) -> Transport {
    match starttls {
        Some(tls) => Transport::Tls(tls),
        None if proto_tls => Transport::Tls(TlsInfo::unknown(None)),
        None => Transport::Plain,
    }
}

/// An outbound connection of one process to one relay host: opened by a `STARTTLS=client`
/// line (TLS) or by the first delivery without one (plain).
#[derive(Debug)]
struct ClientConn {
    /// Last use (the STARTTLS line or a delivery).
    time: UnixTime,
    tls: Option<TlsInfo>,
    /// Set by the first delivery over it; emitted when the connection is replaced, evicted or
    /// at the end of input.
    record: Option<ConnectionRecord>,
    /// Queue id of the last delivery: a second `to=` line of it is the same transaction.
    last_qid: Text,
    /// The [`ClientProcess::epoch`] of the process that opened it: a connection older than
    /// its process's epoch belonged to an earlier process of that pid, and is closed.
    epoch: u64,
    /// A delivery went over this TLS connection or over a new one in clear, and the log does
    /// not say which ([`SendmailParser::ambiguous_reuse`]): the deliveries after it that the
    /// process's cache would take over the same connection are of unknown transport too.
    ambiguous: bool,
}

impl ClientConn {
    /// A connection a `STARTTLS=client` line shows opening (`tls` its handshake; `None` for a
    /// failed one), carrying no delivery yet.
    fn fresh(time: UnixTime, tls: Option<TlsInfo>, epoch: u64) -> Self {
        Self {
            time,
            tls,
            record: None,
            last_qid: "".into(),
            epoch,
            ambiguous: false,
        }
    }
}

/// An outbound connection's key: the process, the relay's name ([`relay_key`]) and the
/// mailer ([`smtp_mailer`]). Sendmail's connection cache holds one connection per host and
/// mailer: mci.c `mci_get(host, m)` looks it up as `stab(host, ST_MCI + m->m_mno, …)`, and
/// `mci_match()` the same, so one host reached through two mailers (`esmtp` and `relay`,
/// say) is two connections, each in a cache slot of its own.
type ConnKey = (Proc, String, u8);

/// The mailer of a connection a `STARTTLS=client` line shows opening: that line names none;
/// the process's next delivery to the relay, the one it was opened for, binds it to its own.
const UNBOUND: u8 = u8::MAX;

/// The SMTP mailers, each tagged for [`ConnKey`]; `None` for any other mailer (internal).
fn smtp_mailer(mailer: &str) -> Option<u8> {
    match mailer {
        "esmtp" => Some(0),
        "smtp" => Some(1),
        "smtp8" => Some(2),
        "dsmtp" => Some(3),
        "relay" => Some(4),
        _ => None,
    }
}

/// A connection's place in its process's cache order ([`ClientProcess::order`]): the hash of
/// its relay name and mailer.
fn slot_of(relay: &str, mailer: u8) -> u64 {
    crate::fields::hash_str(relay) ^ (u64::from(mailer) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A Sendmail process as the log names it: the hash of its host (the syslog host field, so
/// that merged logs of several hosts keep their processes apart) and its pid.
type Proc = (u64, u32);

fn proc_of(line: &Line<'_>) -> Proc {
    (crate::fields::hash_str(line.host), line.pid.unwrap_or(0))
}

/// The syslog tags of Sendmail's processes: one pid under another tag is another process.
fn program_tag(program: &str) -> u8 {
    match program {
        "sm-mta" => 0,
        "sendmail" => 1,
        "sm-msp-queue" => 2,
        _ => 3,
    }
}

/// What the log of one Sendmail host shows of its connection cache.
#[derive(Debug, Clone, Copy)]
struct HostState {
    /// `ConnectionCacheSize` as far as this host's log proves it: [`DEFAULT_CACHE_SIZE`],
    /// raised only by a reuse that a process logging its new connections shows
    /// ([`ClientProcess::logs_connects`]).
    cache_size: usize,
    /// Per [`program_tag`], the epoch of its last `starting daemon` line (0: none seen): a
    /// process of this host and program entered before it may have outlived it
    /// ([`ClientProcess::restarted_from`]).
    started: [u64; 4],
}

impl Default for HostState {
    fn default() -> Self {
        Self {
            cache_size: DEFAULT_CACHE_SIZE,
            started: [0; 4],
        }
    }
}

/// The outbound side of one Sendmail process (a queue runner, or a process delivering the
/// mail it received): its connection cache as far as the log shows.
#[derive(Debug)]
struct ClientProcess {
    /// The relays it used over a connection, least recently used first: the order of its
    /// connection cache. Held as hashes of their names ([`crate::fields::hash_str`]): 8
    /// bytes each, however long a name the log gives.
    order: VecDeque<u64>,
    /// Given when it is taken for a new process of its pid (from
    /// [`SendmailParser::epochs`]); its connections carry it.
    epoch: u64,
    /// Its last outbound line.
    last: UnixTime,
    /// [`program_tag`] of its lines.
    program: u8,
    /// It has logged `SMTP outgoing connect on …` (LogLevel 12 and up): each new connection
    /// of it has such a line, so a delivery without one went over a cached connection.
    logs_connects: bool,
    /// A connect line since its last delivery or `STARTTLS=client` line: the next delivery
    /// went over a new connection.
    connect_pending: bool,
    /// The [`HostState::started`] of its host and program when it was last entered.
    started: u64,
    /// Its epoch before the first `starting daemon` line of its host and program since it
    /// began: a daemon (re)start ends no process of the daemon's (daemon.c
    /// `restart_daemon()` execs itself and `shutdown_daemon()` exits, neither signals its
    /// children), so a queue runner or delivery process may go on with its cache after it,
    /// or its pid may be a new process (after a reboot). Its connections from this epoch on,
    /// but from before its current one, may still be cached, or not.
    restarted_from: Option<u64>,
}

impl ClientProcess {
    fn new(epoch: u64, program: u8, time: UnixTime, started: u64) -> Self {
        Self {
            order: VecDeque::new(),
            epoch,
            last: time,
            program,
            logs_connects: false,
            connect_pending: false,
            started,
            restarted_from: None,
        }
    }
}

/// A `<-- XXXXXXXA` line (LogLevel 15 logs every SMTP command) waiting for a line of the same
/// process that names the peer.
#[derive(Debug)]
struct PendingTrace {
    time: UnixTime,
    evidence: String,
}

/// What a delivery line says of its attempt, for [`SendmailParser::outbound_delivery`].
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// Its `stat=` quotes a reply, or names no failure to connect ([`names_no_session`]).
    session: bool,
    /// Its `stat=` quotes an SMTP reply ([`stat_has_reply`]) or names an error only a
    /// session has ([`SESSION_ERRORS`]): a session was had.
    replied: bool,
    /// When its transaction began (the line's time less `xdelay=`, or the line's time).
    start: UnixTime,
    /// How long a connection may have been idle before `start` and still be cached.
    idle_limit: UnixTime,
}

/// Whether a `stat=` text quotes the server's reply: `Deferred: 451 4.3.0 …` (deliver.c
/// `giveresponse()` appends `SmtpError`, the reply, when no errno says more).
fn stat_has_reply(stat: &str) -> bool {
    let text = stat.strip_prefix("Deferred: ").unwrap_or(stat);
    let code = text.as_bytes().get(..3);
    code.is_some_and(|c| c.iter().all(u8::is_ascii_digit))
        && text
            .as_bytes()
            .get(3)
            .is_none_or(|b| *b == b' ' || *b == b'-')
}

/// Why a deferred delivery reached no SMTP session: no connection to count. Looked for only
/// in a `stat=` that quotes no server reply ([`stat_has_reply`]): a reply may name any of
/// them (a relay's callout quoting its own failure to connect) over a session of its own.
/// deliver.c `giveresponse()` names the host before the errno's text for a connect that
/// failed with `ENETDOWN`, `ENETUNREACH`, `EHOSTDOWN`, `EHOSTUNREACH`, … (`Deferred:
/// HOST: Network is down`); `ECONNREFUSED` and `ETIMEDOUT` read `Connection refused by
/// HOST`, `Connection timed out with HOST` (err.c `sm_errstring()`). `EHOSTDOWN` names the
/// host again, `Deferred: HOST: Host HOST is down` ([`names_no_session`]).
const NO_SESSION: [&str; 7] = [
    "Connection refused",
    "Connection timed out",
    "Operation timed out",
    "No route to host",
    "Network is unreachable",
    "Network is down",
    "Name server",
];

/// Errno texts of a session that failed, never of a connection that could not be made: err.c
/// `sm_errstring()` writes `ECONNRESET` as `Connection reset by HOST`, and usersmtp.c
/// `reply()` sets it for a server that closed the connection without a reply; daemon.c
/// `makeconnection()` has logged its connect line (LogLevel 12 and up) by then, so without
/// one the session went over a cached connection.
const SESSION_ERRORS: [&str; 1] = ["Connection reset by"];

/// Whether a `stat=` that quotes no reply names a failure to connect: a [`NO_SESSION`]
/// text, or `EHOSTDOWN`'s, which err.c `sm_errstring()` writes as `Host %s is down` with
/// the host (`CurHostName`), strerror()'s `Host is down` without one, after
/// `giveresponse()`'s `HOST: `.
fn names_no_session(stat: &str) -> bool {
    NO_SESSION.iter().any(|w| stat.contains(w))
        || (stat.contains(": Host ") && stat.trim_end().ends_with(" is down"))
}

/// Sendmail's [`MtaParser`]. Programs `sm-mta`, `sendmail`, `sm-msp-queue`.
#[derive(Debug)]
pub struct SendmailParser {
    // Pids are the MTA's own: the fast hash. Addresses and relay names come from the other
    // side: SipHash.
    /// Inbound sessions per process (host and pid: merged logs of several hosts keep theirs).
    server: Bounded<Proc, ServerSession, FxBuild>,
    /// Outbound connections per process, relay and mailer (Sendmail caches one per host and
    /// mailer); a `STARTTLS=client` line's under [`UNBOUND`] until its delivery names the
    /// mailer.
    client: Bounded<ConnKey, ClientConn>,
    tls_peers: Bounded<IpAddr, ()>,
    tls_relays: Bounded<String, ()>,
    pending_traces: Bounded<Proc, PendingTrace, FxBuild>,
    /// Processes whose server-side STARTTLS handshake failed, with when: the client did ask
    /// for TLS, so the `did not issue MAIL` line that follows is no stripping trace.
    tls_failed: Bounded<Proc, UnixTime, FxBuild>,
    /// The last STARTTLS failure listed per (process, server side): one failed handshake
    /// logs both `STARTTLS=…, error: …` and, in the same second, the `tls_server` (or
    /// `tls_client`) ruleset's reject; it is listed once.
    failure_listed: Bounded<(Proc, bool), UnixTime, FxBuild>,
    unparsed: u64,
    evicted: u64,
    /// A delivery whose `to=` list ended in `[more]` (Sendmail splits a long list over
    /// several lines): the next `to=` line of the same message, relay and status adds to it.
    more: Option<MessageRecord>,
    domains: DomainTexts,
    /// Log time of the next sweep of sessions without a line for [`MAX_AGE`].
    next_sweep: UnixTime,
    /// Per process, its connection cache as far as the log shows.
    processes: Bounded<Proc, ClientProcess, FxBuild>,
    /// Per host (hash of the syslog host field), its cache size and last daemon start.
    hosts: Bounded<u64, HostState, FxBuild>,
    /// The last epoch given out ([`ClientProcess::epoch`], [`HostState::started`]).
    epochs: u64,
    /// Delivery transactions of unknown transport because below LogLevel 12 the log does not
    /// tell a reused TLS connection from a new one in clear ([`Self::ambiguous_reuse`]).
    ambiguous_deliveries: u64,
}

impl Default for SendmailParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SendmailParser {
    pub fn new() -> Self {
        Self {
            server: Bounded::new(MAX_SERVER_SESSIONS),
            client: Bounded::new(MAX_CLIENT_SESSIONS),
            tls_peers: Bounded::new(MAX_TLS_PEERS),
            tls_relays: Bounded::new(MAX_TLS_PEERS),
            pending_traces: Bounded::new(MAX_PENDING_TRACES),
            tls_failed: Bounded::new(MAX_PENDING_TRACES),
            failure_listed: Bounded::new(MAX_PENDING_TRACES),
            unparsed: 0,
            more: None,
            evicted: 0,
            domains: DomainTexts::default(),
            next_sweep: 0,
            processes: Bounded::new(MAX_CACHE_PROCESSES),
            hosts: Bounded::new(MAX_HOSTS),
            epochs: 0,
            ambiguous_deliveries: 0,
        }
    }

    /// Ends the inbound session of process `pid`, if any: its connection record.
    fn close_server(&mut self, pid: Proc, out: &mut Vec<Record>) {
        if let Some(s) = self.server.remove(&pid) {
            out.push(s.record());
        }
    }

    /// Starts the inbound session of the process that wrote `line` (after
    /// [`Self::close_server`]). A daemon child is forked for each SMTP connection: the pid's
    /// earlier process, with any outbound connections it cached, is over.
    fn open_server(&mut self, line: &Line<'_>, s: ServerSession, out: &mut Vec<Record>) {
        let pid = proc_of(line);
        if let Some((_, old)) = self.server.insert(pid, s) {
            self.evicted += 1;
            out.push(old.record());
        }
        let proc = proc_of(line);
        let program = program_tag(line.program);
        let started = self.started(proc, program);
        if let Some(p) = self.processes.get_mut(&proc) {
            self.epochs += 1;
            *p = ClientProcess::new(self.epochs, program, line.time, started);
        }
    }

    /// The session of the process that wrote `line` that a line from `relay` belongs to: the
    /// open one, or a new one (the open one, of an earlier connection, is closed).
    fn server_for(
        &mut self,
        line: &Line<'_>,
        relay: Relay<'_>,
        out: &mut Vec<Record>,
    ) -> Option<&mut ServerSession> {
        let (pid, time) = (proc_of(line), line.time);
        let same = self
            .server
            .get(&pid)
            .is_some_and(|s| s.takes(time, relay.ip));
        if !same {
            self.close_server(pid, out);
            self.open_server(line, ServerSession::new(time, relay), out);
        }
        let s = self.server.get_mut(&pid)?;
        s.last = time;
        if s.peer.ip.is_none() {
            s.peer = peer(relay);
        }
        Some(s)
    }

    /// Every 10 minutes of log time: closes the sessions without a line for [`MAX_AGE`] (the
    /// child has exited), so open state follows the connections alive.
    fn sweep_servers(&mut self, now: UnixTime, out: &mut Vec<Record>) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.saturating_add(600);
        let cutoff = now.saturating_sub(MAX_AGE);
        for (_, s) in self.server.take_where(|s| s.last < cutoff) {
            out.push(s.record());
        }
    }

    fn on_starttls(&mut self, server: bool, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let pid = proc_of(line);
        if rest.starts_with("error:") || rest.contains(", error:") || rest.starts_with("error") {
            let raw = fields(rest).find(|(k, _)| *k == "relay").map(|(_, v)| v);
            let relay = raw.map(parse_relay).unwrap_or_default();
            if !server && let Some(raw) = raw {
                // A new connection whose handshake failed: the process's next delivery to
                // the relay goes over it (in clear, or none), whichever its mailer.
                let key = (proc_of(line), relay_key(raw), UNBOUND);
                if let Some(old) = self.client.remove(&key) {
                    close_client(key.1.clone(), old, out);
                }
                // It took a slot of the cache when it was made, before the handshake.
                self.touch_cache(key.0, slot_of(&key.1, UNBOUND), line);
                let marker = ClientConn::fresh(line.time, None, 0);
                if let Some(((_, name, _), old)) = self.client.insert(key, marker) {
                    self.evicted += 1;
                    close_client(name, old, out);
                }
            }
            if server {
                // A marker, not a session: one pushed out by the cap loses nothing counted.
                let _ = self.tls_failed.insert(pid, line.time);
            }
            if self.listed_already(pid, server, line.time) {
                return;
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
            let relay = parse_relay(relay);
            if let Some(ip) = relay.ip {
                self.tls_peers.insert(ip, ());
            }
            // STARTTLS comes once, first in a session: an open one of this pid is over.
            self.close_server(pid, out);
            let mut s = ServerSession::new(line.time, relay);
            s.tls = Some(tls);
            self.open_server(line, s, out);
            false
        } else {
            // A new TLS connection of this process to this relay: the one a connect line
            // before it announced.
            let proc = self.enter_process(line, line.time, MCI_CACHE_TIMEOUT + NO_XDELAY_GRACE);
            // The line names no mailer: the connection is bound to its cache slot (relay and
            // mailer) by the process's next delivery to the relay, the one it was opened for.
            let key = (proc, relay_key(relay), UNBOUND);
            self.tls_relays.insert(key.1.clone(), ());
            // Its slot is taken now, its place in the order kept for that delivery to bind
            // ([`Self::bind_slot`]): deliveries to other relays before it are behind it.
            let epoch = self.touch_cache(proc, slot_of(&key.1, UNBOUND), line);
            if let Some(p) = self.processes.get_mut(&proc) {
                p.connect_pending = false;
            }
            if let Some(old) = self.client.remove(&key) {
                close_client(key.1.clone(), old, out);
            }
            let conn = ClientConn::fresh(line.time, Some(tls), epoch);
            match self.client.insert(key, conn) {
                Some(((_, name, _), old)) => {
                    close_client(name, old, out);
                    true
                }
                None => false,
            }
        };
        if evicted {
            self.evicted += 1;
        }
    }

    /// `<-- XXXXXXXA` (LogLevel ≥ 15 logs each SMTP command as `<-- …`): STARTTLS as a
    /// PIX/ASA-style middlebox rewrites it. Held until a line of the same process names the
    /// peer.
    fn on_command(&mut self, cmd: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let verb = cmd.split_ascii_whitespace().next().unwrap_or("");
        if !verb.eq_ignore_ascii_case("XXXXXXXA") {
            return;
        }
        let pending = PendingTrace {
            time: line.time,
            evidence: line.raw.to_string(),
        };
        let pid = proc_of(line);
        if let Some(old) = self.pending_traces.remove(&pid) {
            out.push(trace(old, Direction::Inbound, peer(Relay::default()), None));
        }
        if let Some((_, old)) = self.pending_traces.insert(pid, pending) {
            out.push(trace(old, Direction::Inbound, peer(Relay::default()), None));
        }
    }

    /// The pending `XXXXXXXA` trace of this process, if it is recent enough to be the same
    /// session.
    fn take_pending_trace(&mut self, pid: Proc, now: UnixTime) -> Option<PendingTrace> {
        let p = self.pending_traces.remove(&pid)?;
        (now.saturating_sub(p.time) <= MAX_AGE).then_some(p)
    }

    /// `QID: host [ip] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA`: a session
    /// without mail. It is a stripping trace after a `<-- XXXXXXXA` of the same process, or
    /// when the peer used STARTTLS earlier in the log but not in this session (a client that
    /// insists on TLS and gives up when its STARTTLS is refused).
    fn on_null_session(&mut self, client: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let relay = parse_relay(client);
        let pid = proc_of(line);
        // The session ends here; with a STARTTLS line before it, it was a TLS session.
        let session_tls = self
            .server_for(line, relay, out)
            .is_some_and(|s| s.tls.is_some());
        self.close_server(pid, out);
        // The client asked for TLS and the handshake failed (a STARTTLS failure of its own).
        let tls_failed = (self.tls_failed.remove(&pid))
            .is_some_and(|at| line.time.saturating_sub(at) <= MAX_AGE);
        if let Some(p) = self.take_pending_trace(pid, line.time) {
            out.push(trace(p, Direction::Inbound, peer(relay), Some(line.raw)));
        } else if !session_tls
            && !tls_failed
            && relay.ip.is_some_and(|ip| self.tls_peers.get(&ip).is_some())
        {
            let p = PendingTrace {
                time: line.time,
                evidence: line.raw.to_string(),
            };
            out.push(trace(p, Direction::Inbound, peer(relay), None));
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
        let relay = relay.map(parse_relay).unwrap_or_default();
        // `relay=user@localhost`: a local submission, no SMTP session.
        let internal = relay.ip.is_none();
        let pid = proc_of(line);
        let proto_tls = proto.is_some_and(|p| p.starts_with("ESMTPS"));
        let session = if internal {
            self.server
                .get_mut(&pid)
                .filter(|s| s.takes(line.time, None))
        } else {
            self.server_for(line, relay, out)
        };
        let joined = session.map(|s| {
            s.proto_tls |= proto_tls;
            if nrcpts > 0 {
                s.messages = s.messages.saturating_add(1);
            }
            s.tls.clone()
        });
        if nrcpts == 0 {
            return; // nothing accepted (all recipients rejected, or an aborted transaction)
        }
        if let Some(p) = self.take_pending_trace(pid, line.time) {
            out.push(trace(p, Direction::Inbound, peer(relay), Some(line.raw)));
        }
        let transport = inbound_transport(joined.flatten(), proto_tls);
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
            recipient_domain: None,
            spanned_domains: None,
            port: None,
        }));
    }

    fn on_to(&mut self, qid: &str, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (mut to, mut mailer, mut relay, mut dsn, mut stat) = (None, None, None, None, None);
        let mut xdelay = None;
        for (k, v) in fields(rest) {
            match k {
                "to" => to = Some(v),
                "xdelay" => xdelay = parse_interval(v),
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
        let mut recipients = 0usize;
        let mut domain = None;
        let mut spanned = None;
        let mut continued = false;
        for address in to.split(',').filter(|a| !a.trim().is_empty()) {
            if address.trim() == "[more]" {
                continued = true;
                continue;
            }
            let d = self.domains.of_address(address);
            if recipients == 0 {
                domain = d;
            } else {
                recipient::merge(&mut domain, &mut spanned, d.as_ref());
            }
            recipients += 1;
        }
        let status = match dsn.and_then(|d| d.bytes().next()) {
            Some(b'2') => DeliveryStatus::Sent,
            Some(b'4') => DeliveryStatus::Deferred,
            Some(b'5') => DeliveryStatus::Bounced,
            _ if stat.starts_with("Sent") => DeliveryStatus::Sent,
            _ if stat.starts_with("Deferred") => DeliveryStatus::Deferred,
            _ => DeliveryStatus::Bounced,
        };
        let smtp_tag = mailer.and_then(smtp_mailer);
        let smtp = smtp_tag.is_some();
        let parsed = relay.map(parse_relay).unwrap_or_default();
        if smtp && parsed.ip.is_none() && status != DeliveryStatus::Sent {
            return; // no relay was contacted (DNS failure, retry not due)
        }
        let record = MessageRecord {
            mta: Mta::Sendmail,
            time: line.time,
            direction: Direction::Outbound,
            scope: if smtp {
                Scope::Internet
            } else {
                Scope::Internal
            },
            peer: peer(parsed),
            transport: Transport::Plain,
            recipients: u32::try_from(recipients.max(1)).unwrap_or(u32::MAX),
            size: None,
            id: qid.into(),
            status: Some(status),
            recipient_domain: domain,
            spanned_domains: spanned,
            port: None,
        };
        let record = if smtp {
            // A quoted reply is the server's: a session was had, whatever it names (a relay
            // verifying recipients quotes its own `Connection timed out`).
            let replied = stat_has_reply(stat);
            let session = replied || !names_no_session(stat);
            // The transaction began `xdelay` before its line was written; without it, the
            // line's time and a minute of grace.
            let (start, idle_limit) = match xdelay {
                Some(x) => (line.time.saturating_sub(x), MCI_CACHE_TIMEOUT),
                None => (line.time, MCI_CACHE_TIMEOUT + NO_XDELAY_GRACE),
            };
            let proc = self.enter_process(line, start, idle_limit);
            let key = (
                proc,
                relay.map(relay_key).unwrap_or_default(),
                smtp_tag.unwrap_or_default(),
            );
            let how = Attempt {
                session,
                replied: replied || SESSION_ERRORS.iter().any(|w| stat.contains(w)),
                start,
                idle_limit,
            };
            self.outbound_delivery(key, record, how, line, out)
        } else {
            record
        };
        let record = match self.more.take() {
            Some(mut held)
                if held.id == record.id
                    && held.peer == record.peer
                    && held.status == record.status =>
            {
                held.recipients = held.recipients.saturating_add(record.recipients);
                recipient::merge_part(
                    &mut held.recipient_domain,
                    &mut held.spanned_domains,
                    record.recipient_domain.as_ref(),
                    record.spanned_domains.as_deref().unwrap_or_default(),
                );
                held
            }
            Some(held) => {
                out.push(Record::Message(held));
                record
            }
            None => record,
        };
        if continued {
            self.more = Some(record);
        } else {
            out.push(Record::Message(record));
        }
    }

    /// An SMTP delivery (`to=… mailer=esmtp…`): its transport is the connection of this
    /// process to this relay (a `STARTTLS=client` line ⇒ TLS; none ⇒ plain if sent, unknown
    /// otherwise), and the first delivery over a connection counts it. Sendmail writes no line
    /// for a plaintext connection below LogLevel 12: the first delivery of a process to a
    /// relay without a `STARTTLS=client` line opens one, and later deliveries of that process
    /// to that relay reuse it while the process's connection cache still holds it: idle at
    /// most `idle_limit` from its last use to `start` (when this delivery's transaction
    /// began, its line's time minus `xdelay=`), and not pushed out by the host's
    /// `ConnectionCacheSize` other relays used since ([`Self::still_cached`]). A process
    /// that logs its new connections (`SMTP outgoing connect on …`, LogLevel 12 and up) says
    /// which: a connect line before the delivery is a new connection, none a cached one. In a
    /// process that does not, a TLS connection the model has closed but a larger cache would
    /// still hold ([`Self::ambiguous_reuse`]) makes the delivery, and those after it over the
    /// same connection, of unknown transport: no new connection, no trace.
    fn outbound_delivery(
        &mut self,
        key: ConnKey,
        mut record: MessageRecord,
        how: Attempt,
        line: &Line<'_>,
        out: &mut Vec<Record>,
    ) -> MessageRecord {
        let Attempt {
            mut session,
            replied,
            start,
            idle_limit,
        } = how;
        let slot = slot_of(&key.1, key.2);
        let sent = record.status == Some(DeliveryStatus::Sent);
        // A `STARTTLS=client` line of the process to this relay since its last delivery to
        // it: the new connection this delivery went over, in this delivery's mailer's slot.
        if let Some(fresh) = self.client.remove(&(key.0, key.1.clone(), UNBOUND)) {
            if let Some(old) = self.client.remove(&key) {
                close_client(key.1.clone(), old, out);
            }
            self.bind_slot(key.0, slot_of(&key.1, UNBOUND), slot);
            // A failed handshake leaves no connection to bind: the delivery opened a new one
            // (in clear) or went nowhere, as below.
            if fresh.tls.is_some()
                && let Some(((_, name, _), old)) = self.client.insert(key.clone(), fresh)
            {
                self.evicted += 1;
                close_client(name, old, out);
            }
        }
        let untold = |sent: bool| {
            if sent {
                Transport::Plain
            } else {
                Transport::Unknown {
                    hint: HINT_NOT_SENT,
                }
            }
        };
        // What the process's connect lines tell: a new connection (one since its last
        // delivery), or a cached one (none, in a process that logs them).
        let (connected, logs_connects, epoch, restarted_from) = match self.processes.get_mut(&key.0)
        {
            Some(p) => (
                std::mem::take(&mut p.connect_pending),
                p.logs_connects,
                p.epoch,
                p.restarted_from,
            ),
            None => (false, false, 0, None),
        };
        // Connections of this epoch on may be the process's own: from before a daemon start
        // it may have outlived.
        let own_from = restarted_from.unwrap_or(epoch);
        // A deferral quoting no reply (nor naming an error only a session has), with no
        // connect line before it in a process that logs them, over no connection the model
        // holds: no connection was made. daemon.c `makeconnection()` logs the line only once
        // connected, and deliver.c `deliver()` enters the mci in the cache (`mci_cache()`)
        // only when `makeconnection()` returned `EX_OK`; a failed attempt, or a host its
        // status says is down (`mci_exitstat`, no attempt), keeps only host status, in no
        // cache slot, and closes no other connection.
        if session
            && !replied
            && record.status == Some(DeliveryStatus::Deferred)
            && logs_connects
            && !connected
            && self.client.get(&key).is_none()
        {
            session = false;
        }
        let reused = session && logs_connects && !connected;
        let cached = match self.client.get(&key) {
            // A connect line says this one is new; a deferral that reached no session had no
            // live connection (`mci_get()` reuses a cached one that still answers): the
            // connection the model held is closed.
            Some(_) if connected || !session => false,
            // The connect lines show a reuse: the process outlived any daemon start since.
            Some(c) if reused && c.epoch >= own_from => {
                self.learn_cache_size(key.0, slot);
                true
            }
            // An earlier process's connection; or a TLS one from before a daemon start, of
            // this process or of a new one of its pid: a reuse and a new connection in clear
            // look the same (below). One in clear is plain either way: as the cache holds it.
            Some(c) if c.epoch < own_from || (c.epoch < epoch && c.tls.is_some()) => false,
            Some(c) if start.saturating_sub(c.time) <= idle_limit => self.still_cached(key.0, slot),
            _ => false,
        };
        // Below LogLevel 12, a TLS connection the model has closed but a bigger cache would
        // still hold, or one from before a daemon start: a reuse and a new connection in
        // clear look the same.
        let ambiguous = !cached
            && session
            && !logs_connects
            && self.ambiguous_reuse(&key, own_from, (start, idle_limit));
        if !cached
            && !ambiguous
            && let Some(closed) = self.client.remove(&key)
        {
            close_client(key.1.clone(), closed, out);
        }
        if let Some(c) = self.client.get_mut(&key) {
            c.time = line.time;
            c.ambiguous |= ambiguous;
            if c.ambiguous {
                // Over this TLS connection or a new one in clear: neither, and no part of
                // this connection's figures.
                record.transport = Transport::Unknown {
                    hint: HINT_CACHE_AMBIGUOUS,
                };
                if c.last_qid != record.id {
                    self.ambiguous_deliveries = self.ambiguous_deliveries.saturating_add(1);
                }
            } else {
                record.transport = c.tls.clone().map_or_else(|| untold(sent), Transport::Tls);
                // A connection in clear opened by a line that was not sent (a recipient
                // refused at RCPT is logged before those sent in the same transaction): the
                // first sent delivery over it shows it plain, and to a relay that used
                // STARTTLS before, a trace, as if it had come first.
                let first_sent = sent
                    && c.tls.is_none()
                    && c.record
                        .as_ref()
                        .is_some_and(|r| matches!(r.transport, Transport::Unknown { .. }));
                match &mut c.record {
                    Some(conn) => {
                        if c.last_qid != record.id {
                            conn.messages = conn.messages.saturating_add(1);
                        }
                        if first_sent {
                            conn.transport = Transport::Plain;
                        }
                    }
                    None => c.record = Some(connection_of(&record)),
                }
                if first_sent && !key.1.is_empty() && self.tls_relays.get(&key.1).is_some() {
                    let p = PendingTrace {
                        time: line.time,
                        evidence: line.raw.to_string(),
                    };
                    out.push(trace(p, Direction::Outbound, record.peer.clone(), None));
                }
            }
            c.last_qid = Text::clone(&record.id);
            self.touch_cache(key.0, slot, line);
            return record;
        }
        if reused {
            // A cached connection the log did not show opening (before the log began, or of
            // a process taken for over): whether it is TLS is not known.
            record.transport = Transport::Unknown {
                hint: HINT_CACHED_UNSEEN,
            };
            self.touch_cache(key.0, slot, line);
            return record;
        }
        record.transport = untold(sent);
        if !session {
            return record;
        }
        // A new plaintext connection. To a relay that used STARTTLS before, it is a trace of
        // a middlebox that hid STARTTLS (or of a peer that lost TLS).
        if sent && !key.1.is_empty() && self.tls_relays.get(&key.1).is_some() {
            let p = PendingTrace {
                time: line.time,
                evidence: line.raw.to_string(),
            };
            out.push(trace(p, Direction::Outbound, record.peer.clone(), None));
        }
        let epoch = self.touch_cache(key.0, slot, line);
        let conn = ClientConn {
            time: line.time,
            tls: None,
            record: Some(connection_of(&record)),
            last_qid: Text::clone(&record.id),
            epoch,
            ambiguous: false,
        };
        if let Some(((_, name, _), old)) = self.client.insert(key, conn) {
            self.evicted += 1;
            close_client(name, old, out);
        }
        record
    }

    /// The process that wrote `line`, with its outbound state: the pid's earlier process
    /// (with an empty cache) when that one is over: logged under another program name, or
    /// idle longer than `idle_limit` before `start` (every connection it cached has expired).
    /// After a `starting daemon` line of its host and program it may be the same process or
    /// a new one: it takes a new epoch, and [`ClientProcess::restarted_from`] keeps its
    /// connections from before as perhaps cached.
    fn enter_process(&mut self, line: &Line<'_>, start: UnixTime, idle_limit: UnixTime) -> Proc {
        let proc = proc_of(line);
        let program = program_tag(line.program);
        let started = self.started(proc, program);
        let (p, _) = self.processes.get_or_insert_with(proc, || {
            ClientProcess::new(started, program, start, started)
        });
        if p.program != program || start.saturating_sub(p.last) > idle_limit {
            self.epochs += 1;
            *p = ClientProcess::new(self.epochs, program, start, started);
        } else if p.started < started {
            self.epochs += 1;
            p.restarted_from.get_or_insert(p.epoch);
            p.epoch = self.epochs;
            p.started = started;
        }
        p.last = p.last.max(line.time);
        proc
    }

    /// The epoch of the last `starting daemon` line of `proc`'s host under `program`.
    fn started(&self, proc: Proc, program: u8) -> u64 {
        self.hosts
            .get(&proc.0)
            .and_then(|h| h.started.get(usize::from(program)).copied())
            .unwrap_or(0)
    }

    /// `starting daemon (…): …`: Sendmail (re)started on this host under this program name
    /// (`sm-msp-queue`'s start is not `sm-mta`'s). Its processes from before may outlive it
    /// (a restart signals none of them), or their pids be new processes: see
    /// [`ClientProcess::restarted_from`].
    fn on_daemon_start(&mut self, line: &Line<'_>) {
        self.epochs += 1;
        let epoch = self.epochs;
        let host = crate::fields::hash_str(line.host);
        let (h, _) = self.hosts.get_or_insert_with(host, HostState::default);
        if let Some(started) = h.started.get_mut(usize::from(program_tag(line.program))) {
            *started = epoch;
        }
    }

    /// `QID: SMTP outgoing connect on …` (LogLevel 12 and up, daemon.c `makeconnection()`,
    /// once a new connection is made): the process's next delivery goes over a new
    /// connection, and its deliveries without such a line over cached ones.
    fn on_connect(&mut self, line: &Line<'_>) {
        let proc = self.enter_process(line, line.time, MCI_CACHE_TIMEOUT + NO_XDELAY_GRACE);
        if let Some(p) = self.processes.get_mut(&proc) {
            p.logs_connects = true;
            p.connect_pending = true;
        }
    }

    /// Whether a delivery over `key` (a process and relay) that the modelled cache does not
    /// hold, by a process that does not log its new connections (below LogLevel 12), and
    /// with no new `STARTTLS=client` line, may have gone over the process's TLS connection
    /// to that relay all the same, by a `ConnectionCacheSize` above the one modelled: the
    /// process has one (not of an earlier process of its pid), idle at most `idle_limit`
    /// before `start`, and fewer than [`MAX_CACHE_TRACKED`] other relays used since. Such a
    /// reuse and a new connection in clear (a downgrade) both leave no line, so the delivery
    /// is neither TLS nor plaintext. Past the timeout or the bound, or with no TLS connection
    /// of the process to the relay, the log is plain: a new plaintext connection.
    fn ambiguous_reuse(
        &self,
        key: &ConnKey,
        epoch: u64,
        (start, idle_limit): (UnixTime, UnixTime),
    ) -> bool {
        self.client.get(key).is_some_and(|c| {
            c.tls.is_some() && c.epoch >= epoch && start.saturating_sub(c.time) <= idle_limit
        }) && self.relays_since(key.0, slot_of(&key.1, key.2)) < MAX_CACHE_TRACKED
    }

    /// How many other relays process `proc` used since its last use of `relay` (as many as
    /// are tracked when it fell off the tracked order, or the process's order is not known).
    fn relays_since(&self, proc: Proc, slot: u64) -> usize {
        let Some(p) = self.processes.get(&proc) else {
            return MAX_CACHE_TRACKED;
        };
        let relay = slot;
        p.order
            .iter()
            .rposition(|&r| r == relay)
            .map_or(MAX_CACHE_TRACKED, |i| p.order.len() - 1 - i)
    }

    /// Whether the connection of process `proc` to `relay`, not idle too long, is still in
    /// its cache: fewer than its host's `ConnectionCacheSize` other relays used by the
    /// process since its last use (each of them took a slot, and the cache closes its least
    /// recently used connection for a new one). The size is [`DEFAULT_CACHE_SIZE`] unless
    /// [`Self::learn_cache_size`] raised it: a TLS connection used again without a new
    /// `STARTTLS=client` line behind that many relays is not taken for a bigger cache, since
    /// a new connection in clear (a downgrade) looks the same ([`Self::ambiguous_reuse`]).
    fn still_cached(&self, proc: Proc, slot: u64) -> bool {
        if self.processes.get(&proc).is_none() {
            // Its order pushed out by the cap: it keeps its connection.
            return true;
        }
        let size = self
            .hosts
            .get(&proc.0)
            .map_or(DEFAULT_CACHE_SIZE, |h| h.cache_size);
        self.relays_since(proc, slot) < size
    }

    /// A delivery of process `proc` to `relay` that the log shows went over a cached
    /// connection (no connect line before it, in a process that logs them): the host's cache
    /// holds at least one more than the relays used since, up to [`MAX_CACHE_TRACKED`] (a
    /// connection behind more relays than are tracked shows no size).
    fn learn_cache_size(&mut self, proc: Proc, slot: u64) {
        let since = self.relays_since(proc, slot);
        if since >= MAX_CACHE_TRACKED {
            return;
        }
        let (h, _) = self.hosts.get_or_insert_with(proc.0, HostState::default);
        h.cache_size = h.cache_size.max(since + 1);
    }

    /// The connection of a `STARTTLS=client` line (its place in `proc`'s order under
    /// `unbound`, the slot of its relay and [`UNBOUND`]) is bound to `slot`, its relay and
    /// the mailer of the delivery that names it, keeping the place it took at its line: the
    /// relays used since are behind it. An earlier place of `slot` (a connection of that
    /// relay and mailer that is gone) is given up. Without that place (pushed out of the
    /// tracked order), nothing changes: it is behind as many relays as are tracked.
    fn bind_slot(&mut self, proc: Proc, unbound: u64, slot: u64) {
        let Some(p) = self.processes.get_mut(&proc) else {
            return;
        };
        if !p.order.contains(&unbound) {
            return;
        }
        p.order.retain(|&r| r != slot);
        for r in p.order.iter_mut().filter(|r| **r == unbound) {
            *r = slot;
        }
    }

    /// Notes a use of a connection of process `proc` to `relay`: its most recently used.
    /// Returns the process's epoch, for a connection it opens.
    fn touch_cache(&mut self, proc: Proc, slot: u64, line: &Line<'_>) -> u64 {
        let relay = slot;
        let program = program_tag(line.program);
        let started = self.started(proc, program);
        // An order pushed out by the cap is lost: that process keeps its connections.
        let (p, _) = self.processes.get_or_insert_with(proc, || {
            ClientProcess::new(started, program, line.time, started)
        });
        let order = &mut p.order;
        if let Some(i) = order.iter().rposition(|&r| r == relay) {
            if let Some(r) = order.remove(i) {
                order.push_back(r);
            }
            return p.epoch;
        }
        if order.len() >= MAX_CACHE_TRACKED {
            order.pop_front();
        }
        order.push_back(relay);
        p.epoch
    }

    /// Whether a STARTTLS failure of this process and side was listed within the last
    /// second (the other line of the same failed handshake); else notes this one.
    fn listed_already(&mut self, pid: Proc, server: bool, now: UnixTime) -> bool {
        let listed = (self.failure_listed.get(&(pid, server)))
            .is_some_and(|&at| now.saturating_sub(at) <= 1);
        if listed {
            self.failure_listed.remove(&(pid, server));
        } else {
            // A marker: one pushed out by the cap loses nothing counted.
            let _ = self.failure_listed.insert((pid, server), now);
        }
        listed
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
        if self.listed_already(proc_of(line), dir == Direction::Inbound, line.time) {
            return;
        }
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

/// The connection a delivery opened (its transport and peer).
fn connection_of(m: &MessageRecord) -> ConnectionRecord {
    ConnectionRecord {
        mta: Mta::Sendmail,
        time: m.time,
        direction: Direction::Outbound,
        scope: m.scope,
        peer: m.peer.clone(),
        transport: m.transport.clone(),
        messages: 1,
    }
}

/// Emits an outbound connection that is over: its record, or, for a TLS connection that
/// carried no delivery line, one with the relay name alone.
fn close_client(name: String, c: ClientConn, out: &mut Vec<Record>) {
    match (c.record, c.tls) {
        (Some(r), _) => out.push(Record::Connection(r)),
        (None, Some(tls)) => out.push(Record::Connection(ConnectionRecord {
            mta: Mta::Sendmail,
            time: c.time,
            direction: Direction::Outbound,
            scope: Scope::Internet,
            peer: Peer {
                hostname: (!name.is_empty()).then(|| name.into()),
                ip: None,
            },
            transport: Transport::Tls(tls),
            messages: 0,
        })),
        (None, None) => {}
    }
}

/// A stripping trace: its evidence line, and the line that completed it (the session's end
/// or its mail), if any.
fn trace(p: PendingTrace, direction: Direction, peer: Peer, more: Option<&str>) -> Record {
    let mut evidence = p.evidence;
    if let Some(more) = more {
        evidence.push('\n');
        evidence.push_str(more);
    }
    Record::Anomaly(AnomalyRecord {
        mta: Mta::Sendmail,
        time: p.time,
        direction,
        peer,
        kind: AnomalyKind::StrippingTrace,
        evidence,
    })
}

/// The part of a line before ` did not issue MAIL/EXPN/VRFY/ETRN during connection to …`:
/// the client as Sendmail names it (`name [ip]`, `[ip]`, maybe `(may be forged)`).
fn null_session_client(rest: &str) -> Option<&str> {
    let (client, tail) = rest.split_once(" did not issue MAIL/EXPN/VRFY/ETRN")?;
    tail.starts_with(" during connection to ").then_some(client)
}

impl MtaParser for SendmailParser {
    fn feed(&mut self, line: &Line<'_>, out: &mut Vec<Record>) {
        if !matches!(line.program, "sm-mta" | "sendmail" | "sm-msp-queue") {
            return;
        }
        self.sweep_servers(line.time, out);
        let (qid, rest) = split_qid(line.message);
        // Lines of a session before it has a queue id (older versions).
        let rest = rest.strip_prefix("NOQUEUE: ").unwrap_or(rest);
        if let Some(cmd) = rest.strip_prefix("<-- ") {
            self.on_command(cmd, line, out);
        } else if let Some(client) = null_session_client(rest) {
            self.on_null_session(client, line, out);
        } else if let Some(r) = rest.strip_prefix("STARTTLS=server") {
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
            } else if rest.starts_with("SMTP outgoing connect on ") {
                self.on_connect(line);
            }
        } else if rest.starts_with("starting daemon (") {
            self.on_daemon_start(line);
        }
    }

    fn finish(&mut self, out: &mut Vec<Record>) {
        // Messages are emitted on their own lines (but a list that said `[more]` at the end);
        // what is left is open connections, traces that never learnt their peer, and join
        // context.
        if let Some(held) = self.more.take() {
            out.push(Record::Message(held));
        }
        for ((_, name, _), c) in self.client.drain_ordered() {
            close_client(name, c, out);
        }
        for (_, p) in self.pending_traces.drain_ordered() {
            out.push(trace(p, Direction::Inbound, peer(Relay::default()), None));
        }
        for (_, s) in self.server.drain_ordered() {
            out.push(s.record());
        }
        self.tls_peers.drain_ordered();
        self.tls_relays.drain_ordered();
        self.processes.drain_ordered();
        self.hosts.drain_ordered();
    }

    fn unparsed(&self) -> u64 {
        self.unparsed
    }

    fn evicted(&self) -> u64 {
        self.evicted
    }

    fn advice(&self) -> Vec<String> {
        if self.ambiguous_deliveries == 0 {
            return Vec::new();
        }
        let n = self.ambiguous_deliveries;
        let (deliveries, their) = if n == 1 {
            ("delivery", "its")
        } else {
            ("deliveries", "their")
        };
        vec![format!(
            "Sendmail: {n} outbound {deliveries} went to a relay whose TLS connection the \
             process may still have cached (with a ConnectionCacheSize larger than modelled, or \
             across a daemon restart) or replaced with a new connection in clear; below LogLevel 12 the log does not say \
             which, so {their} transport is unknown (neither TLS nor a downgrade): \
             {HINT_LOG_LEVEL}"
        )]
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
    fn sessions_without_mail() {
        let cases = [
            (
                "mail.example.org [192.0.2.1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
                Some("mail.example.org [192.0.2.1]"),
            ),
            (
                "x.example [192.0.2.4] (may be forged) did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v6",
                Some("x.example [192.0.2.4] (may be forged)"),
            ),
            (
                "[198.51.100.7] did not issue MAIL/EXPN/VRFY/ETRN during connection to stdin",
                Some("[198.51.100.7]"),
            ),
            ("[198.51.100.7] did not issue MAIL/EXPN/VRFY/ETRN", None),
            ("from=<a@b>, size=1", None),
        ];
        for (rest, want) in cases {
            assert_eq!(null_session_client(rest), want, "{rest}");
        }
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
    fn intervals() {
        let cases = [
            ("00:00:01", Some(1)),
            ("00:02:00", Some(120)),
            ("01:02:03", Some(3723)),
            ("23:59:59", Some(86_399)),
            ("1+00:00:00", Some(86_400)),
            ("2+03:04:05", Some(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)),
            ("", None),
            ("00:00", None),
            ("00:00:00:00", None),
            ("00:60:00", None),
            ("00:00:60", None),
            ("-1:00:00", None),
            ("+00:00:01", None),
            ("1+", None),
            ("x+00:00:01", None),
            ("00:0a:01", None),
            ("9999999999999999999+00:00:00", None),
            ("00:00:01 (x)", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_interval(v), want, "{v}");
        }
    }

    /// `stat=` texts of deferrals as deliver.c `giveresponse()` writes them: (text, quotes a
    /// reply, names a failure to connect).
    #[test]
    fn deferral_texts() {
        let cases = [
            ("Deferred: 421 4.3.2 Service not available", true, false),
            ("Deferred: 450-4.7.1 first line of several", true, false),
            ("Deferred: 451", true, false),
            (
                "Deferred: 450 4.1.1 <a@v.example>... unverified address: Connection timed out",
                true,
                true,
            ),
            ("Deferred: Connection refused by mx.x.example.", false, true),
            (
                "Deferred: Connection timed out with mx.x.example.",
                false,
                true,
            ),
            (
                "Deferred: mx.x.example.: Host mx.x.example. is down",
                false,
                true,
            ),
            (
                "Deferred: [192.0.2.9]: Host [192.0.2.9] is down",
                false,
                true,
            ),
            ("Deferred: mx.x.example.: Host is down", false, true),
            ("Deferred: mx.x.example.: Network is down", false, true),
            ("Deferred: mx.x.example.: No route to host", false, true),
            (
                "Deferred: Name server: mx.x.example.: host name lookup failure",
                false,
                true,
            ),
            ("Deferred: Connection reset by mx.x.example.", false, false),
            (
                "Deferred: 123.example: Host 123.example is down",
                false,
                true,
            ),
            ("Deferred", false, false),
            ("Sent (ok)", false, false),
        ];
        for (stat, reply, no_session) in cases {
            assert_eq!(stat_has_reply(stat), reply, "{stat}: reply");
            assert_eq!(names_no_session(stat), no_session, "{stat}: no session");
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
