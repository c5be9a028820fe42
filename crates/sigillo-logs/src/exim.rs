//! Exim's mainlog (or its syslog lines) → records: `<=` receptions with `P=`, `X=` and `CV=`,
//! `=>`/`->` deliveries, SMTP connections, and `XXXXXXXA` syntax errors and TLS errors.
//!
//! Decisions, from what Exim 4.96 really writes:
//! - **Recipients of a received message.** The `<=` line carries no count. With
//!   `log_selector = +received_recipients` its `for a@x b@y` list is counted and the message
//!   is emitted at once. Otherwise the message waits for its `Completed` line and counts the
//!   distinct original recipients of its final deliveries (`=>`, `->`, `>>`, `**`, `*>`);
//!   at the end of input (or when the cap of open messages is reached, counted in
//!   [`MtaParser::evicted`]) still-deferred recipients are added; never less than 1.
//! - **Transport.** `X=` present ⇒ TLS (version, cipher, bits; GnuTLS names carry the key
//!   exchange, `ECDHE_X25519__…` ⇒ `X25519`). `P=esmtps`/`esmtpsa`/`smtps`, or TLS on
//!   connect's `ssmtp`/`essmtp`/`essmtpa`, without `X=` ⇒ TLS of unknown version (advice:
//!   `+tls_cipher`). `P=smtp`/`esmtp`/`esmtpa` ⇒ plain.
//!   `P=local…` or no `H=` ⇒ internal. `CV=yes`/`dane` ⇒ `Verified`, `CV=no` ⇒ `Untrusted`.
//! - **Deliveries.** `=>` (or cutthrough `>>`) starts one record, each following `->` of
//!   that message adds a recipient. With `H=`: Internet, TLS iff `X=`; without: internal.
//!   The record's recipient domain is that of the address delivered to (the first after the
//!   flag, not the `<original>`), none once a `->` of another domain joins it (the domains
//!   it then spans are listed in `spanned_domains`). With `+dnssec`, a host found by a
//!   DNSSEC-secured lookup is written `H=mx DS [ip]` (deliver.c `d_hostlog()`, on `=>`, `==`
//!   and `**` lines; `:port` and `*` follow `[ip]` as without it): its name, address and port
//!   are read as without ` DS`, which is not kept (the records have no field for it).
//!   `==` (deferred) and `**` (bounced) with `H=` are one record per line. A `**` line
//!   carries `X=` when the session used TLS (4.96 writes it, followed by `CV=no:` and the
//!   error; the fields end where the error starts, so a remote's reply quoted there is read
//!   as no field); `==` lines never do: without `X=` their transport is unknown, since older
//!   versions wrote no `X=` on `**` lines either. Without `H=` no relay was contacted
//!   (unrouteable, retry time not reached, local defer): no record, but the recipient still
//!   counts for the received message.
//! - **STARTTLS failures.** `TLS error on connection from|to … (FUNCTION): …` and (older
//!   versions, outbound) `H=mx [ip] TLS error on connection (FUNCTION): …`, with or without
//!   a message id, when FUNCTION is a handshake's (not `recv`/`send`…: a peer that closed
//!   without close_notify); a `**` or `==` line with `H=` whose error (right after `H=mx
//!   [ip]: ` or `H=mx [ip]:port: `, on `**` lines after the host's other fields) is one the
//!   smtp transport sets when its own TLS set-up failed, `TLS session: …` or `a TLS session is
//!   required, but …` (older: `failure while setting up TLS session`, `a TLS session is
//!   required for mx [ip], but …`), not a remote's reply that mentions TLS (`SMTP error from
//!   remote mail server after …: 450 4.7.1 TLS session required`); `ID H=mx [ip]: a TLS
//!   session is required, but …` (`H=mx [ip]:port: …` with `+outgoing_port`), which the smtp
//!   transport writes for each host that must use TLS (`hosts_require_tls`, DANE, SMTPS) and
//!   refused STARTTLS or did not offer it, before it tries the domain's next host (only the
//!   last host's failure reaches the `==`/`**` lines); an outbound handshake
//!   failure that Exim retries in clear, `ID TLS session: …: delivering unencrypted to H=mx
//!   [ip] (not in hosts_require_tls)` (older: `ID TLS session failure: delivering unencrypted
//!   to mx [ip] …`; the plaintext `=>` that follows counts as such); and a recipient-
//!   verification callout's, `TLS session: …: callout unencrypted to mx [ip] …`. A callout
//!   that is not retried in clear (the host in `hosts_require_tls`, DANE, or
//!   `tls_tempfail_tryclear = false`) is named only on the line that rejects the command:
//!   `… temporarily rejected RCPT <…>: Could not complete recipient verify callout: mx [ip] :
//!   TLS session: …` (or `… : a TLS session is required, but …`), or `… sender verify defer
//!   for <…>: Could not complete sender verify callout: mx [ip] : …`, when the domain has a
//!   single host (with several, Exim logs the bare `Could not complete … callout`, naming
//!   neither a host nor the error: not listed, since a refused connection or a timeout reads
//!   the same; a DANE host's own line still is); older
//!   versions logged `a TLS session is required for mx [ip], but …` or `H=mx [ip]: a TLS
//!   session is required for this host, but …` themselves. A DANE host's failed handshake is logged as
//!   `DANE attempt failed; TLS connection to mx [ip]: …` before the outcome line (a callout's
//!   rejection, a delivery's `==`). Older versions log one failure twice, the `TLS error`
//!   line then the fallback, `==` or rejection line: an error line and a later line of the
//!   other kind for the same message (without one, the same process) and host at most a
//!   second apart count once. A DANE line pairs only with a later outcome line naming its
//!   error, `TLS session: ERROR` (a callout's rejection within a second; a delivery's
//!   `==`/`**` line within 5 seconds, written by another process once the transport process
//!   has ended): smtp.c forces `tls_tempfail_tryclear` false for a DANE host, so a fallback to
//!   clear, like a line with another error or `a TLS session is required, but …`, is another
//!   attempt, and leaves the DANE line waiting for its own. A host's `H=mx [ip]: a TLS session
//!   is required, but REASON` line likewise pairs only with a later `==`/`**` line naming that
//!   error, within 5 seconds: those of its run when
//!   the host was the last tried. No DANE line comes with it (smtp.c logs one only for a
//!   failed handshake, for which it writes no host line). Two lines of one kind are two
//!   attempts (newer versions write one line an attempt), except the `==` lines of one
//!   transport run's recipients: one attempt, even when they straddle a second boundary.
//! - **Inbound connections** need `+smtp_connection`: `SMTP connection from … (TCP/IP
//!   connection count…)` opens; `… closed by QUIT`/`lost`, the timeouts, `SMTP call from …
//!   dropped: too many …` and `H=… rejected connection in "connect" ACL` (TLS only with `X=`
//!   on that line; `+dnssec` glues ` DS` to its start, ` DSH=…`) close, as does, on a
//!   TLS-on-connect port, current Exim's `[ DS]H=… dropped by 'connect' ACL[: …]`
//!   (smtp_in.c `log_connect_tls_drop()`: the connect ACL runs before the TLS handshake
//!   there, so the session had neither TLS nor clear SMTP: unknown; versions that started TLS
//!   before that ACL wrote the `rejected connection` line with `X=`); either only with those
//!   words right after the host and its fields (`I=`, `U=`, whose ident may hold spaces,
//!   `X=`, `CV=`, `DN=`, `SNI=`), not quoted later in a sender or HELO name a client gave. A
//!   session without mail gets its transport from the `no MAIL in SMTP connection from … X=…` line
//!   (`+smtp_no_mail`), which Exim writes *after* the close line; a `no MAIL` line alone also
//!   counts as a connection. Each message takes its
//!   transport from its own `<=` line, never from the session. One peer often holds several
//!   connections at once; they are told apart by:
//!   - the remote port, with `+incoming_port` (`[ip]:port` on every line of the session);
//!   - the pid, with `+pid` (`[pid]` after the time) or in syslog lines (`exim[pid]:`): the
//!     daemon writes the opening line *before* it forks the process that serves the
//!     connection, so that line carries the daemon's pid; every later line of the session
//!     (`<=`, close, `no MAIL`) carries the child's. An opened session waits, unclaimed, for
//!     the first line of a process from its address (and port), which claims the oldest
//!     waiting one; the process's later lines go to that session.
//!
//!   With neither, nothing in the log tells two sessions from one address apart: they are
//!   kept as one (a second opening line replaces the open session of that address, whose
//!   messages and close then count for the newer one), which undercounts connections from a
//!   peer that opens parallel ones. `+incoming_port` or `+pid` makes the count exact.
//! - **Outbound connections.** Exim logs no outbound connect or close, but every delivery line
//!   over SMTP (`=>`, `>>`, `**`, and `==` with `H=`) marks a delivery down a connection
//!   opened for an earlier message with a `*` after the address (`H=mx [ip]*`,
//!   `H=mx [ip]:25*` with `+outgoing_port`; Exim ≤ 4.96 with `+incoming_interface` puts it
//!   after `I=[ip]`), whatever the log selectors. So a delivery line with `H=… [ip]` and no
//!   `*` opens a connection, exactly; `->` lines and a `**`/`==` next to a `=>` of the same
//!   message within a second share its transaction. The connection's transport is that of
//!   its first line (TLS iff `X=`; a `**` without `X=` is unknown until the `=>` of the same
//!   transaction tells), its `messages` the transactions over it: a `*` line is counted for
//!   the last connection seen by the same transport to the same address and port — exact
//!   unless a transport keeps two connections to one host at once (then `+outgoing_port`
//!   does not help either). Not counted: a connection opened before the log begins (its
//!   first line has `*`), and a session to a host that failed before Exim moved on to the
//!   next host (logged as `H=… [ip]: …` without a delivery flag).

use crate::envelope::Line;
use crate::fields::{hash_str, parse_colon_cipher, parse_ip, parse_u64};
use crate::model::{
    AnomalyKind, AnomalyRecord, ConnectionRecord, DeliveryStatus, Direction, MessageRecord, Mta,
    MtaParser, Peer, Record, Scope, Text, TlsInfo, Transport, Trust, UnixTime,
};
use crate::postfix::bounded::{Bounded, FxBuild};
use crate::recipient::{self, DomainTexts};
use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;

// ---------------------------------------------------------------------------------------------
// Exim line pieces.

/// The functions named in `TLS error on connection … (FUNCTION): …` that fail after the
/// handshake, in an established session: Exim (OpenSSL and GnuTLS builds) logs them when a
/// peer closes without close_notify.
const AFTER_HANDSHAKE: [&str; 6] = [
    "recv",
    "send",
    "SSL_read",
    "SSL_write",
    "gnutls_record_recv",
    "gnutls_record_send",
];
/// `H=` (and `SMTP connection from`) host: `name [ip]`, `(helo) [ip]`, `name (helo) [ip]`,
/// `[ip]`, each optionally followed by `:port`; on delivery lines with `+dnssec`, `name DS [ip]`
/// (the ` DS` read past: see [`parse_host`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HostField<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) helo: Option<&'a str>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: Option<u16>,
    /// A `*` right after the address: a delivery down a connection opened for an earlier
    /// message (Exim's `continue_sequence > 1`).
    pub(crate) continued: bool,
}

impl HostField<'_> {
    fn peer(&self) -> Peer {
        Peer {
            hostname: self.name.map(Into::into),
            ip: self.ip,
        }
    }
    fn key(&self) -> Option<ConnKey> {
        self.ip.map(|ip| (ip, self.port.unwrap_or(0)))
    }
}

/// Parses a host field at the start of `s`; returns it and the bytes consumed.
///
/// With `log_selector = +dnssec`, Exim marks a host whose address came from a DNSSEC-secured
/// lookup with ` DS` between its name and its address on `=>`, `==` and `**` lines:
/// deliver.c `d_hostlog()` writes ` H=name`, ` DS` (when `host->dnssec == DS_YES`), ` [ip]`,
/// `:port` (`+outgoing_port`), `*` (a continued connection). A ` DS` followed by ` [` is read
/// past; the record model has no place for the DNSSEC status, so it is not kept. (On the
/// lines of an inbound session Exim writes ` DS` before `H=`, a field of its own.)
fn parse_host(s: &str) -> (HostField<'_>, usize) {
    let b = s.as_bytes();
    let mut h = HostField::default();
    let mut i = 0;
    if !matches!(b.first(), Some(b'[' | b'(')) {
        let end = memchr::memchr(b' ', b).unwrap_or(s.len());
        if end > 0 {
            h.name = s.get(..end);
        }
        i = end;
        if b.get(i..i + 5) == Some(b" DS [") {
            i += 3;
        }
        if !matches!(b.get(i + 1), Some(b'[' | b'(')) {
            return (h, i);
        }
        i += 1;
    }
    if b.get(i) == Some(&b'(') {
        let rest = s.get(i..).unwrap_or("");
        let rb = rest.as_bytes();
        let close = memchr::memchr_iter(b')', rb)
            .find(|&j| rb.get(j + 1..j + 3) == Some(b" ["))
            .or_else(|| memchr::memchr(b')', rb));
        let Some(close) = close else {
            return (h, s.len());
        };
        h.helo = rest.get(1..close);
        i += close + 1;
        if b.get(i) == Some(&b' ') && b.get(i + 1) == Some(&b'[') {
            i += 1;
        } else {
            return (h, i);
        }
    }
    if b.get(i) == Some(&b'[') {
        let rest = s.get(i..).unwrap_or("");
        let Some(close) = memchr::memchr(b']', rest.as_bytes()) else {
            return (h, s.len());
        };
        h.ip = rest.get(1..close).and_then(parse_ip);
        i += close + 1;
        if b.get(i) == Some(&b':') || b.get(i) == Some(&b'.') {
            let digits = b
                .get(i + 1..)
                .unwrap_or(&[])
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits > 0 {
                h.port = s
                    .get(i + 1..i + 1 + digits)
                    .and_then(parse_u64)
                    .and_then(|p| u16::try_from(p).ok());
                i += 1 + digits;
            }
        }
        // Exim marks a delivery down a continued connection with a trailing `*`.
        if b.get(i) == Some(&b'*') {
            h.continued = true;
            i += 1;
        }
    }
    (h, i)
}

/// The fields of an Exim line after the fixed part: `H=` parsed as a host, quoted values
/// (`C="…"`, `DN="…"`, `T="…"`) kept whole, `for a b c` counted.
#[derive(Debug, Default)]
struct Fields<'a> {
    host: Option<HostField<'a>>,
    host_bad: bool,
    proto: Option<&'a str>,
    x: Option<&'a str>,
    cv: Option<&'a str>,
    /// `T=`: the transport (Exim reuses a connection only within one transport).
    transport: Option<&'a str>,
    /// `I=[ip]*`: Exim before 4.97 writes the continued-connection `*` after the interface
    /// when `+incoming_interface` is on.
    continued: bool,
    size: Option<u64>,
    cmds: Option<&'a str>,
    for_count: Option<u32>,
}

fn parse_fields(s: &str) -> Fields<'_> {
    let mut f = Fields::default();
    let b = s.as_bytes();
    let mut pos = 0;
    while pos < b.len() {
        if b[pos] == b' ' {
            pos += 1;
            continue;
        }
        let rest = s.get(pos..).unwrap_or("");
        // Only the first `H=` is the line's host. A later one is read as any other token:
        // parse_host() looks as far as the end of the line for a HELO name's `) [`, so
        // parsing every `H=` as a host made a long line of them quadratic.
        if f.host.is_none()
            && let Some(h) = rest.strip_prefix("H=")
        {
            let (host, used) = parse_host(h);
            f.host_bad = host.ip.is_none() && host.name.is_none();
            f.host = Some(host);
            pos += 2 + used.max(1);
            continue;
        }
        if let Some(list) = rest.strip_prefix("for ") {
            let n = list.split(' ').filter(|t| !t.is_empty()).count();
            f.for_count = u32::try_from(n).ok();
            break;
        }
        // One token, a quoted value kept whole.
        let rb = rest.as_bytes();
        let space = memchr::memchr(b' ', rb).unwrap_or(rb.len());
        let eq = memchr::memchr(b'=', rb.get(..space).unwrap_or(rb));
        let end = match eq {
            Some(e) if rb.get(e + 1) == Some(&b'"') => {
                closing_quote(rest, e + 2).map_or(rest.len(), |q| q + 1)
            }
            _ => space,
        };
        if let Some(e) = eq {
            let v = rest.get(e + 1..end).unwrap_or("");
            // On `**` and `==` lines the error text follows the last field after a colon:
            // `CV=no: SMTP error from remote mail server …`.
            let bare = v.trim_end_matches(':');
            match rb.get(..e) {
                Some(b"P") => f.proto = Some(v),
                Some(b"X") => f.x = Some(bare),
                Some(b"CV") => f.cv = Some(bare),
                Some(b"S") => f.size = parse_u64(v),
                Some(b"C") => f.cmds = Some(v),
                Some(b"T") => f.transport = Some(v),
                Some(b"I") => f.continued |= bare.ends_with('*'),
                _ => {}
            }
        }
        pos += end.max(1);
    }
    f
}

/// Index of the closing `"` at or after `from`, skipping `\"`.
fn closing_quote(s: &str, from: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Exim message ids: `1xV7Qo-0003xF-0o` (6-6-2) and `1wtYVW-0000000GFxD-3Ryp` (6-11-4).
fn split_message_id(m: &str) -> Option<(&str, &str)> {
    let b = m.as_bytes();
    let idlen = match (b.get(6), b.get(13), b.get(16), b.get(18), b.get(23)) {
        (Some(b'-'), Some(b'-'), Some(b' '), _, _) => 16,
        (Some(b'-'), _, _, Some(b'-'), Some(b' ')) => 23,
        _ => return None,
    };
    let id = m.get(..idlen)?;
    if !id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        return None;
    }
    Some((id, m.get(idlen + 1..)?))
}

fn trust_of_cv(cv: Option<&str>) -> Option<Trust> {
    match cv? {
        "yes" | "dane" => Some(Trust::Verified),
        "no" => Some(Trust::Untrusted),
        _ => None,
    }
}

/// What `P=` says about TLS.
#[derive(Debug, PartialEq, Eq)]
enum Proto {
    Tls,
    Plain,
    Local,
    Other,
}

fn classify_proto(p: &str) -> Proto {
    if p.starts_with("local") {
        return Proto::Local;
    }
    let p = p.strip_prefix("utf8").unwrap_or(p);
    match p {
        // `ssmtp`, `essmtp`, `essmtpa`: TLS on connect (smtp_in.c protocols[], `ponconn`).
        "esmtps" | "esmtpsa" | "smtps" | "ssmtp" | "essmtp" | "essmtpa" => Proto::Tls,
        "smtp" | "esmtp" | "esmtpa" | "asmtp" => Proto::Plain,
        _ => Proto::Other,
    }
}

/// The recipient written after `=>`, `->`, `**`: its `<original>` when given.
fn recipient_of(rest: &str) -> &str {
    let mut it = rest.split(' ');
    let first = it.next().unwrap_or("");
    match it.next() {
        Some(o) if o.starts_with('<') => o.trim_end_matches(':'),
        _ => first.trim_end_matches(':'),
    }
}

// ---------------------------------------------------------------------------------------------
// The parser.

type ConnKey = (IpAddr, u16);
/// An inbound session: peer address, remote port (0 without `+incoming_port`) and the pid of
/// the Exim process serving it (0 when lines carry no pid).
type SessionKey = (IpAddr, u16, u32);
/// An outbound connection as Exim can reuse it: transport (hashed name), peer IP, port (0
/// without `+outgoing_port`).
type OutKey = (u64, IpAddr, u16);
/// One outbound STARTTLS attempt as its log lines name it: the message id (hashed; `0` for
/// a callout, which has none) or else the pid (`0` without `+pid`), and the host: its address,
/// or its name (hashed) when no address was logged.
type FailKey = (u64, u32, Option<IpAddr>, u64);

/// Which line of a failed outbound STARTTLS an older Exim wrote: the handshake error itself
/// (`TLS error on connection to …`, `H=… TLS error on connection (…)`), or what followed it
/// (`… delivering unencrypted to …`, a `==`/`**` line naming the TLS session, a callout's
/// `… unencrypted to …`). Newer versions write only the second kind: one line an attempt, or,
/// when the delivery is not retried in clear, one `==`/`**` line per recipient of the transport
/// run ([`RecipientLine`]); except for the lines the transport process writes for one host as
/// its set-up with that host fails, before the run's outcome, which count as the first kind: a
/// DANE host's `DANE attempt failed; …`, and `H=mx [ip]: a TLS session is required, but …`
/// ([`host_tls_required`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailLine {
    HandshakeError,
    Outcome,
}

/// What the lines of one outbound STARTTLS attempt key have left to pair: the lines listed
/// lately that still wait for a line of the other kind ([`FailLine`]) to make one attempt
/// with them, oldest first (two transport runs can each log their handshake error before
/// either's outcome line; another run's line can come between a DANE line and its run's),
/// and the last transport run seen through its per-recipient lines ([`RunSeen`]).
#[derive(Debug, Clone, Default)]
struct FailSeen {
    waiting: Vec<Waiting>,
    run: Option<RunSeen>,
}

impl FailSeen {
    /// How many lines at `time` could still pair with this key's state: its waiting lines
    /// within their windows, and its run while a further recipient line could continue it.
    /// Dropping the key at the table's cap can list each such line once more than it should;
    /// an anchored run's further lines, once more at each change of domain (not counted here:
    /// how many are still to come is not known).
    fn still_pairing(&self, time: UnixTime) -> u64 {
        let waiting = self
            .waiting
            .iter()
            .filter(|w| time.abs_diff(w.time) <= w.wait.secs())
            .count();
        let run = self
            .run
            .as_ref()
            .is_some_and(|r| time.abs_diff(r.last_time) <= RUN_LINE_GAP_SECS);
        waiting as u64 + u64::from(run)
    }
}

/// A listed line of a failed outbound STARTTLS waiting for the line of the other kind that
/// makes one attempt with it ([`Waiting::pairs_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    time: UnixTime,
    line: FailLine,
    wait: Wait,
}

/// Which line of the other kind ([`FailLine`]) a line of a failed outbound STARTTLS pairs
/// with, and how long it waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Any, for [`SAME_TRANSACTION_SECS`]: one process writes both, one right after the other
    /// (older versions' handshake error and its fallback or `==` line).
    Transaction,
    /// A `DANE attempt failed; TLS connection to mx [ip]: ERROR` line, ERROR hashed: only an
    /// outcome line after it that names ERROR (`TLS session: ERROR`: a `==`/`**` line of its
    /// run, a callout's rejection), for `secs` ([`DANE_OUTCOME_SECS`] for a delivery's, whose
    /// `==` lines the delivery process writes once the transport process has ended;
    /// [`SAME_TRANSACTION_SECS`] for a callout's, whose rejection the same process writes
    /// next). transports/smtp.c `smtp_setup_conn()` logs the DANE line with the handshake's
    /// error string and sets `TLS session: <that string>` on the run's addresses, and forces
    /// `tls_tempfail_tryclear` false for a DANE host, so no fallback to clear follows; a line
    /// with another error, `a TLS session is required, but …` (STARTTLS refused or not
    /// offered, which logs no DANE line) or a fallback is another attempt's.
    Dane { error: u64, secs: u64 },
    /// An `ID H=mx [ip]: a TLS session is required, but REASON` line ([`host_tls_required`]),
    /// `a TLS session is required, but REASON` hashed ([`required_reason`]): only an outcome
    /// line after it that names the same error (a `==`/`**` line of its run), for
    /// [`DANE_OUTCOME_SECS`]. transports/smtp.c `smtp_transport_entry()` writes this line from
    /// the transport process for every host that defers (write_logs()), so for the last host
    /// tried the run's `==` lines follow, written by the delivery process once the transport
    /// process has ended, with that host's error; for the others, none does. No DANE line comes
    /// with it: that is logged only for a failed handshake, which write_logs() does not log.
    HostLine { error: u64 },
}

impl Wait {
    /// The most seconds a line waiting so pairs with a later one.
    fn secs(self) -> u64 {
        match self {
            Wait::Transaction => SAME_TRANSACTION_SECS,
            Wait::Dane { secs, .. } => secs,
            Wait::HostLine { .. } => DANE_OUTCOME_SECS,
        }
    }
}

/// What one line of a failed outbound STARTTLS tells [`EximParser::outbound_tls_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FailNote {
    kind: FailLine,
    wait: Wait,
    /// The error an outcome line names (hashed), to match the line that waits for it: the
    /// handshake's after `TLS session: `, as a DANE line names it ([`Wait::Dane`]), or
    /// `a TLS session is required, but REASON`, as a host's line names it ([`Wait::HostLine`]).
    names: Option<u64>,
    /// A `==`/`**` line's place in its transport run.
    recipient: Option<RecipientLine>,
}

impl FailNote {
    fn handshake(wait: Wait) -> Self {
        FailNote {
            kind: FailLine::HandshakeError,
            wait,
            names: None,
            recipient: None,
        }
    }
    fn outcome(names: Option<&str>, recipient: Option<RecipientLine>) -> Self {
        FailNote {
            kind: FailLine::Outcome,
            wait: Wait::Transaction,
            names: names.map(hash_str),
            recipient,
        }
    }
}

impl Waiting {
    /// Whether `note`'s line, at `time`, is the other line of this one's attempt.
    fn pairs_with(&self, note: &FailNote, time: UnixTime) -> bool {
        if self.line == note.kind {
            return false;
        }
        let apart = time.abs_diff(self.time);
        match self.wait {
            Wait::Dane { error, secs } => note.names == Some(error) && apart <= secs,
            Wait::HostLine { error } => note.names == Some(error) && apart <= DANE_OUTCOME_SECS,
            // A DANE line or a host's line pairs with no line before it: its own outcome
            // follows it.
            Wait::Transaction => note.wait == Wait::Transaction && apart <= SAME_TRANSACTION_SECS,
        }
    }
}

/// A `==`/`**` line naming a failed TLS session, one of the lines Exim writes per recipient
/// for one transport run: what the lines of one run share (`route`, and `domain` unless the
/// transport sets `multi_domain`), and which recipient it names ([`recipient_line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecipientLine {
    /// The process that wrote the line and all it says after the router, hashed.
    route: u64,
    /// The recipient's domain, lowercase, hashed.
    domain: u64,
    recipient: u64,
}

/// The transport run of the last per-recipient line of an attempt key: the second of its last
/// line, the `route` and `domain` of its first line ([`RecipientLine`]), whether that line
/// paired with a line the run's transport process wrote itself (`anchored`: a DANE line, a
/// host's `a TLS session is required` line, an older version's `TLS error on connection`
/// line), and the recipients its lines named, first one first (at most
/// [`MAX_RUN_RECIPIENTS`]).
#[derive(Debug, Clone)]
struct RunSeen {
    last_time: UnixTime,
    route: u64,
    domain: u64,
    anchored: bool,
    recipients: Vec<u64>,
}

impl RunSeen {
    /// Whether `r`'s line, at `time`, names another recipient of this run: the same route,
    /// at most [`RUN_LINE_GAP_SECS`] after the run's previous line, an address the run has
    /// not named, and the run's domain, or any domain when the run is anchored. Exim's
    /// deliver.c `do_remote_deliveries()` batches the addresses of several domains with the
    /// same host list into one run when the transport sets `multi_domain` (the default), and
    /// runs once per domain otherwise; the `==` lines of either read the same but for their
    /// domains (one process writes every run's, in blocks). An anchored run's own transport
    /// process logged a line that was counted as the attempt, and so would a second run's:
    /// taking that run's lines for the first's loses nothing (its own line is listed and left
    /// waiting). An unanchored run's next domain is a run of its own (see
    /// [`EximParser::outbound_tls_failure`]).
    fn takes(&self, r: &RecipientLine, time: UnixTime) -> bool {
        self.route == r.route
            && (self.domain == r.domain || self.anchored)
            && time.abs_diff(self.last_time) <= RUN_LINE_GAP_SECS
            && !self.recipients.contains(&r.recipient)
    }
}

const MAX_OPEN_MESSAGES: usize = 65_536;
const MAX_PENDING_DELIVERIES: usize = 4_096;
const MAX_SESSIONS: usize = 65_536;
/// Sessions of one address (and port) opened and not yet claimed by their process: Exim's
/// `smtp_accept_max` defaults to 20 connections at once.
const MAX_UNCLAIMED_PER_PEER: usize = 64;
/// Sessions opened and not yet claimed, over all addresses: memory stays bounded by this
/// many sessions however they spread over addresses.
const MAX_UNCLAIMED: usize = 65_536;
const MAX_CLOSED_NO_MAIL: usize = 1_024;
const MAX_RCPT_HASHES: usize = 1_000;
const MAX_OUTBOUND: usize = 4_096;
/// Outbound STARTTLS failures remembered to count each attempt once: only lines at most a
/// few seconds apart are compared ([`DANE_OUTCOME_SECS`]), so this needs to hold no more
/// than that many seconds' worth. Past it the key seen least recently is dropped, with its
/// waiting lines and run: a later line of that key can be listed again, once for each of
/// them still in its window, which is how many [`MtaParser::evicted`] counts; and a dropped
/// run that had paired ([`RunSeen::anchored`]) is continued by an unanchored one, listed again
/// at each change of domain among its further lines, which `evicted` does not count
/// (documented).
const MAX_TLS_FAILURES: usize = 1_024;
/// Lines of one message to one host this close together (seconds) are one SMTP transaction
/// (`**` and `=>` of the same delivery), not a new connection.
const SAME_TRANSACTION_SECS: u64 = 1;
/// The most seconds between two consecutive `==`/`**` lines of one transport run. The
/// delivery process writes them in one loop with no network wait (deliver.c
/// `remote_post_process()`), milliseconds apart: in whole-second log times the next line
/// is in the same second or, across a second boundary, the next one. Two seconds apart means
/// more than a second with no line of the run, which that loop does not take.
const RUN_LINE_GAP_SECS: u64 = 1;
/// Recipients of one transport run remembered to tell its lines from a new run's (which
/// names an address again); Exim's smtp transport takes 100 at once by default
/// (`max_rcpt`). Past this a run's further addresses are not remembered; its first always is.
const MAX_RUN_RECIPIENTS: usize = 256;
/// Lines of one attempt key waiting to pair ([`FailSeen`]); past this the oldest is dropped,
/// and the line that would have paired with it is listed as an attempt of its own (an
/// over-count by at most one a drop, each counted in [`MtaParser::evicted`]; documented).
/// Parallel transport runs of one message to one host are few (`remote_max_parallel`).
const MAX_WAITING: usize = 16;
/// How long (seconds) a delivery's `DANE attempt failed; …` line, or a host's `H=mx [ip]: a TLS
/// session is required, but …` line, waits for the `==`/`**` outcome line of its transport run
/// ([`Wait::Dane`], [`Wait::HostLine`]). The transport process logs the
/// DANE line when the handshake fails; the delivery process writes the outcome once that
/// process has ended and it has written the outcomes of the runs that ended before, so in
/// parallel runs the outcome can come more than a second later (two runs' DANE lines in one
/// second, the second run's `==` lines two seconds later: two attempts, not three). A
/// callout's DANE line and its rejection, like older versions' `TLS error on connection` line
/// and its fallback line, come from one process, one right after the other:
/// [`SAME_TRANSACTION_SECS`].
const DANE_OUTCOME_SECS: u64 = 5;

const HINT_NO_X: &str = "Exim log_selector +tls_cipher (X=) names the TLS version and cipher";
const HINT_DEFER: &str =
    "Exim writes no X= on deferred (==) lines, and not on ** lines of older versions";
const HINT_NO_MAIL: &str = "Exim log_selector +smtp_no_mail shows TLS for sessions without mail";
const HINT_PROTO: &str = "Exim's P= protocol does not say whether TLS was used";
/// A session dropped in the connect ACL on a TLS-on-connect port (`dropped by 'connect'
/// ACL`): that ACL runs before the handshake, so neither TLS nor clear SMTP went over it.
const HINT_TLS_ON_CONNECT_DROP: &str = "dropped in Exim's connect ACL on a TLS-on-connect port, before the TLS handshake: nothing was sent";

#[derive(Debug)]
struct OpenMessage {
    record: MessageRecord,
    done: Vec<u64>,
    done_extra: u32,
    deferred: Vec<u64>,
}

impl OpenMessage {
    fn recipients(&self, with_deferred: bool) -> u32 {
        let mut n = self.done.len() as u32 + self.done_extra;
        if with_deferred {
            n += self
                .deferred
                .iter()
                .filter(|h| !self.done.contains(h))
                .count() as u32;
        }
        n.max(1)
    }
    fn add(list: &mut Vec<u64>, extra: &mut u32, h: u64) {
        if !list.contains(&h) {
            if list.len() < MAX_RCPT_HASHES {
                list.push(h);
            } else {
                *extra = extra.saturating_add(1);
            }
        }
    }
}

#[derive(Debug)]
struct Session {
    time: UnixTime,
    peer: Peer,
    messages: u32,
    transport: Option<Transport>,
}

/// An outbound connection, open as far as the log tells (Exim logs no close): emitted when a
/// new connection for the same key replaces it, at a cap, or at the end.
#[derive(Debug)]
struct OutboundConn {
    record: ConnectionRecord,
    /// The message and time of the last transaction over it.
    last_id: Text,
    last_time: UnixTime,
}

/// Exim's [`MtaParser`]. Lines whose program is not `exim`/`exim4` are ignored.
#[derive(Debug)]
pub struct EximParser {
    // Keyed by Exim's own message ids: the fast hash.
    received: Bounded<String, OpenMessage, FxBuild>,
    deliveries: Bounded<String, MessageRecord, FxBuild>,
    // Keyed by peer addresses, which the other side chooses: SipHash.
    sessions: Bounded<SessionKey, Session>,
    /// Sessions opened by a daemon that logs pids, oldest first, not yet claimed by the
    /// process serving them.
    unclaimed: Bounded<ConnKey, Vec<Session>>,
    /// How many sessions `unclaimed` holds over all addresses (at most [`MAX_UNCLAIMED`]).
    unclaimed_count: usize,
    /// Sessions closed without mail, waiting for a `no MAIL` line, with the time of the
    /// closing line.
    closed_no_mail: Bounded<SessionKey, (Session, UnixTime)>,
    outbound: Bounded<OutKey, OutboundConn>,
    unparsed: u64,
    evicted: u64,
    tls_without_x: bool,
    tls_without_cv: bool,
    saw_connection_lines: bool,
    saw_received: bool,
    /// A session was opened while another of the same address was open, and the log has
    /// neither ports nor pids to tell them apart.
    merged_sessions: bool,
    /// Outbound STARTTLS failures listed lately, by attempt key: one failure is often logged
    /// on several lines (see [`EximParser::outbound_tls_failure`]).
    tls_failures: Bounded<FailKey, FailSeen, FxBuild>,
    domains: DomainTexts,
}

impl Default for EximParser {
    fn default() -> Self {
        Self::new()
    }
}

impl EximParser {
    pub fn new() -> Self {
        Self {
            received: Bounded::new(MAX_OPEN_MESSAGES),
            deliveries: Bounded::new(MAX_PENDING_DELIVERIES),
            sessions: Bounded::new(MAX_SESSIONS),
            unclaimed: Bounded::new(MAX_UNCLAIMED),
            unclaimed_count: 0,
            closed_no_mail: Bounded::new(MAX_CLOSED_NO_MAIL),
            outbound: Bounded::new(MAX_OUTBOUND),
            unparsed: 0,
            evicted: 0,
            tls_without_x: false,
            tls_without_cv: false,
            saw_connection_lines: false,
            saw_received: false,
            merged_sessions: false,
            tls_failures: Bounded::new(MAX_TLS_FAILURES),
            domains: DomainTexts::default(),
        }
    }

    fn tls_from(&mut self, x: Option<&str>, cv: Option<&str>) -> Option<TlsInfo> {
        let x = x?;
        let Some(mut info) = parse_colon_cipher(x) else {
            self.unparsed += 1;
            return Some(TlsInfo::unknown(trust_of_cv(cv)));
        };
        info.trust = trust_of_cv(cv);
        if cv.is_none() {
            self.tls_without_cv = true;
        }
        Some(info)
    }

    fn on_received(&mut self, id: &str, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        self.saw_received = true;
        let fields = rest.split_once(' ').map_or("", |(_, f)| f);
        let f = parse_fields(fields);
        if f.host_bad {
            self.unparsed += 1;
        }
        let proto = f.proto.map_or(Proto::Other, classify_proto);
        let internal = f.host.is_none() || proto == Proto::Local;
        let transport = if let Some(tls) = self.tls_from(f.x, f.cv) {
            Transport::Tls(tls)
        } else if proto == Proto::Tls {
            self.tls_without_x = true;
            Transport::Tls(TlsInfo::unknown(trust_of_cv(f.cv)))
        } else if proto == Proto::Plain || internal {
            Transport::Plain
        } else {
            Transport::Unknown { hint: HINT_PROTO }
        };
        let host = f.host.unwrap_or_default();
        let record = MessageRecord {
            mta: Mta::Exim,
            time: line.time,
            direction: Direction::Inbound,
            scope: if internal {
                Scope::Internal
            } else {
                Scope::Internet
            },
            peer: host.peer(),
            transport,
            recipients: 1,
            size: f.size,
            id: id.into(),
            status: None,
            recipient_domain: None,
            spanned_domains: None,
            port: None,
        };
        if !internal
            && let Some(key) = host.key()
            && let Some(sk) = self.session_of(key, line.pid)
            && let Some(s) = self.sessions.get_mut(&sk)
        {
            s.messages += 1;
            s.transport = Some(record.transport.clone());
        }
        if let Some(n) = f.for_count {
            let mut record = record;
            record.recipients = n.max(1);
            out.push(Record::Message(record));
            return;
        }
        let open = OpenMessage {
            record,
            done: Vec::new(),
            done_extra: 0,
            deferred: Vec::new(),
        };
        if let Some((_, old)) = self.received.insert(id.to_string(), open) {
            self.evicted += 1;
            emit_open(old, out);
        }
    }

    fn flush_delivery(&mut self, id: &str, out: &mut Vec<Record>) {
        if let Some(r) = self.deliveries.remove(id) {
            out.push(Record::Message(r));
        }
    }

    fn on_delivery(
        &mut self,
        id: &str,
        kind: &[u8],
        rest: &str,
        line: &Line<'_>,
        out: &mut Vec<Record>,
    ) {
        let rcpt_hash = hash_str(recipient_of(rest));
        if let Some(open) = self.received.get_mut(id) {
            match kind {
                b"==" => OpenMessage::add(&mut open.deferred, &mut 0, rcpt_hash),
                _ => OpenMessage::add(&mut open.done, &mut open.done_extra, rcpt_hash),
            }
        }
        if kind == b"*>" {
            return;
        }
        // The address delivered to (after redirection): the next hop's domain.
        let domain = self
            .domains
            .of_address(rest.split(' ').next().unwrap_or("").trim_end_matches(':'));
        if kind == b"->"
            && let Some(r) = self.deliveries.get_mut(id)
        {
            r.recipients = r.recipients.saturating_add(1);
            recipient::merge(
                &mut r.recipient_domain,
                &mut r.spanned_domains,
                domain.as_ref(),
            );
            return;
        }
        // A new successful delivery starts a new record. A `**` or `==` between a `=>` and its
        // `->` lines (an address refused at RCPT in the same transaction) leaves it open.
        if matches!(kind, b"=>" | b">>") {
            self.flush_delivery(id, out);
        }
        // A `==`/`**` line's error (a remote's reply, quoted as it came) is no field: a
        // reply's `X=…` or `T=…` must not be read as the line's TLS or transport.
        let error = match kind {
            b"==" | b"**" => delivery_error(rest),
            _ => None,
        };
        let fields_end = rest.len() - error.map_or(0, str::len);
        let f = parse_fields(rest.get(..fields_end).unwrap_or(rest));
        if f.host_bad {
            self.unparsed += 1;
        }
        let status = match kind {
            b"==" => DeliveryStatus::Deferred,
            b"**" => DeliveryStatus::Bounced,
            _ => DeliveryStatus::Sent,
        };
        let host = f.host.unwrap_or_default();
        let remote = f.host.is_some();
        if !remote && status != DeliveryStatus::Sent {
            // No relay was contacted (unrouteable, retry time not reached, local defer).
            return;
        }
        let transport = if let Some(tls) = self.tls_from(f.x, f.cv) {
            Transport::Tls(tls)
        } else if !remote || status == DeliveryStatus::Sent {
            Transport::Plain
        } else {
            Transport::Unknown { hint: HINT_DEFER }
        };
        if remote
            && status != DeliveryStatus::Sent
            && let Some(failure) = error.and_then(own_tls_failure)
        {
            let recipient = recipient_line(rest, line.pid);
            let note = FailNote::outcome(failure.names, Some(recipient));
            self.outbound_tls_failure(line, id, &host, note, out);
        }
        let size = self.received.get(id).and_then(|o| o.record.size);
        let record = MessageRecord {
            mta: Mta::Exim,
            time: line.time,
            direction: Direction::Outbound,
            scope: if remote {
                Scope::Internet
            } else {
                Scope::Internal
            },
            peer: host.peer(),
            transport,
            recipients: 1,
            size,
            id: id.into(),
            status: Some(status),
            recipient_domain: domain,
            spanned_domains: None,
            port: host.port,
        };
        if remote
            && kind != b"->"
            && let Some(ip) = host.ip
        {
            let key = (
                hash_str(f.transport.unwrap_or("")),
                ip,
                host.port.unwrap_or(0),
            );
            self.track_outbound(key, host.continued || f.continued, &record, out);
        }
        if status == DeliveryStatus::Sent {
            if let Some((_, old)) = self.deliveries.insert(id.to_string(), record) {
                out.push(Record::Message(old));
            }
        } else {
            out.push(Record::Message(record));
        }
    }

    /// Counts the outbound connection of a delivery line with `H=… [ip]`: a new one unless
    /// the line carries Exim's continued-connection `*` or belongs to the same transaction as
    /// the last line over that connection (a `**` or `==` next to a `=>` of the same message).
    fn track_outbound(
        &mut self,
        key: OutKey,
        continued: bool,
        record: &MessageRecord,
        out: &mut Vec<Record>,
    ) {
        if let Some(open) = self.outbound.get_mut(&key) {
            let same_transaction = open.last_id == record.id
                && record.time.abs_diff(open.last_time) <= SAME_TRANSACTION_SECS;
            if same_transaction || continued {
                if !same_transaction {
                    open.record.messages = open.record.messages.saturating_add(1);
                    open.last_id = Text::clone(&record.id);
                }
                open.last_time = record.time;
                // A `**` without X= opened it: the `=>` of the same transaction tells.
                if matches!(open.record.transport, Transport::Unknown { .. })
                    && record.status == Some(DeliveryStatus::Sent)
                {
                    open.record.transport = record.transport.clone();
                }
                return;
            }
        }
        if continued {
            // Opened before the log begins: not counted.
            return;
        }
        if let Some(old) = self.outbound.remove(&key) {
            out.push(Record::Connection(old.record));
        }
        let conn = OutboundConn {
            record: ConnectionRecord {
                mta: Mta::Exim,
                time: record.time,
                direction: Direction::Outbound,
                scope: record.scope,
                peer: record.peer.clone(),
                transport: record.transport.clone(),
                messages: 1,
            },
            last_id: Text::clone(&record.id),
            last_time: record.time,
        };
        if let Some((_, old)) = self.outbound.insert(key, conn) {
            out.push(Record::Connection(old.record));
        }
    }

    /// Lists a failed outbound STARTTLS with `host`, once per attempt. Older Exim logs the
    /// handshake error itself (`ID TLS error on connection to mx [ip] (SSL_connect): …`,
    /// or `ID H=mx [ip] TLS error on connection (…): …`) and then, for the same attempt, either
    /// `ID TLS session failure: delivering unencrypted to mx [ip] (…)` (retried in clear) or
    /// a `==`/`**` line whose error is `failure while setting up TLS session`; a callout
    /// logs the error, then `… unencrypted to mx [ip]`, without a message id; a DANE host's
    /// `DANE attempt failed; …` comes before its outcome line. So a line of the other kind
    /// ([`FailLine`]) naming the same message (or, without one, the same process) and host
    /// that a listed line waits for ([`Wait`], [`Waiting::pairs_with`]) is that same attempt:
    /// not listed again. Each line pairs with one line of the other kind, the oldest waiting
    /// that takes it; lines of one kind are that many attempts (newer Exim writes one outcome
    /// line an attempt, and one message can meet one host twice in a second, over two
    /// connections of two transport runs), each of which a later line of the other kind can
    /// pair with (two runs in parallel each log their `DANE attempt failed` before either's
    /// outcome lines). The host line a transport writes for each host whose STARTTLS was
    /// refused or not offered (`ID H=mx [ip]: a TLS session is required, but …`,
    /// [`host_tls_required`]) is of the first kind too: the last host's is followed by the
    /// run's `==` lines naming the same error, the others by none. A line that pairs with none
    /// is listed and waits in turn, leaving the
    /// lines that wait before it waiting (a run of the message not under DANE can end between
    /// a DANE line and its run's `==` lines).
    ///
    /// A delivery not retried in clear ends in one `==` (or `**`) line per recipient of the
    /// transport run, not one per attempt (`recipient`: [`RecipientLine`]). In Exim's source
    /// (Exim/exim: src/src/deliver.c, transports/smtp.c): `do_remote_deliveries()` hands one
    /// transport run (one subprocess) the chain of addresses with the same transport, the
    /// same host list and, unless the transport sets `multi_domain`, the same domain; on a
    /// failed handshake, smtp.c `smtp_setup_conn()` logs `DANE attempt failed; …` for a DANE
    /// host once per connection and jumps to `TLS_FAILED`/`FAILED`, where `set_errno()`
    /// gives every address of that chain the same errno, message (`TLS session: …`) and host;
    /// back in the delivery process, `remote_post_process()` calls `post_process_one()` for
    /// each address of the chain in turn, and its `deferral_log()` (`failure_log()` for `**`)
    /// writes `== ADDRESS [<parent>] R=router T=transport defer (errno) H=host [ip]: message`
    /// from those shared values, one line after another with no network wait between them.
    /// So a `==`/`**` line with the same message, host, process, recipient domain and text
    /// after `R=` (transport, errno, host, error; `R=` itself is per address, and runs are not
    /// batched by router) as the last run of its key, at most [`RUN_LINE_GAP_SECS`] after that
    /// run's previous line (the run's lines can straddle a second boundary), naming an address
    /// the run has not named yet, is another recipient of that run: not listed, not paired
    /// ([`RunSeen::takes`]). An address of the run named again is a new run (a run names each
    /// address once, so a second attempt starts anew), as is, in general, a new domain: the
    /// run's lines do not say whether the transport sets `multi_domain` (one run for all the
    /// domains with the same host list, the default) or not (one run a domain, which
    /// `do_remote_deliveries()` starts one after the other or in parallel), and the lines of
    /// two one-domain runs read as those of one two-domain run (one process writes both, in
    /// blocks, with the same text after `R=`, within a second when the host fails fast), so
    /// such a run over n domains counts n. Not when the run is anchored: its first line
    /// paired with a line that its transport process wrote itself for that connection (a
    /// DANE line, the host's `a TLS session is required` line, an older version's `TLS error
    /// on connection to` line), and each run to that host writes its own, which is the one
    /// counted: a new domain's lines then continue the run, one run or two. Except a run of
    /// another domain to that host that writes no such line (not under DANE: its domain's MX
    /// lookup was not DNSSEC-secured, deliver.c `same_hosts()` compares names only; with
    /// `hosts_require_tls` a failed handshake logs nothing of its own) with the same error:
    /// its lines are taken for the anchored run's, one attempt too few (documented; `+dnssec`
    /// writes `H=mx DS [ip]` on the DANE run's lines only, so their routes differ).
    fn outbound_tls_failure(
        &mut self,
        line: &Line<'_>,
        id: &str,
        host: &HostField<'_>,
        note: FailNote,
        out: &mut Vec<Record>,
    ) {
        let (id_hash, pid) = if id.is_empty() {
            (0, line.pid.unwrap_or(0))
        } else {
            (hash_str(id), 0)
        };
        let name_hash = match host.ip {
            Some(_) => 0,
            None => hash_str(host.name.unwrap_or("")),
        };
        let key = (id_hash, pid, host.ip, name_hash);
        if let Some(r) = note.recipient
            && let Some(run) = self
                .tls_failures
                .get_mut(&key)
                .and_then(|seen| seen.run.as_mut())
            && run.takes(&r, line.time)
        {
            // Another recipient of the run already counted, in the same second as the run's
            // line before it or the next.
            run.last_time = line.time;
            if run.recipients.len() < MAX_RUN_RECIPIENTS {
                run.recipients.push(r.recipient);
            }
            return;
        }
        let mut seen = self.tls_failures.remove(&key).unwrap_or_default();
        if let Some(r) = note.recipient {
            seen.run = Some(RunSeen {
                last_time: line.time,
                route: r.route,
                domain: r.domain,
                anchored: false,
                recipients: vec![r.recipient],
            });
        }
        let time = line.time;
        seen.waiting
            .retain(|w| time.abs_diff(w.time) <= w.wait.secs());
        let listed = match seen.waiting.iter().position(|w| w.pairs_with(&note, time)) {
            Some(i) => {
                seen.waiting.remove(i);
                // A run's first line paired with its transport process's own line.
                if note.recipient.is_some()
                    && let Some(run) = seen.run.as_mut()
                {
                    run.anchored = true;
                }
                false
            }
            None => {
                if seen.waiting.len() >= MAX_WAITING {
                    // Still in its window (retain() above): its other line, should it come,
                    // is listed on its own.
                    seen.waiting.remove(0);
                    self.evicted += 1;
                }
                seen.waiting.push(Waiting {
                    time,
                    line: note.kind,
                    wait: note.wait,
                });
                true
            }
        };
        // A full table drops the key seen least recently, usually long out of its window.
        if let Some((_, old)) = self.tls_failures.insert(key, seen) {
            self.evicted += old.still_pairing(time);
        }
        if listed {
            out.push(anomaly(
                line,
                Direction::Outbound,
                host.peer(),
                AnomalyKind::StartTlsFailed,
            ));
        }
    }

    /// A handshake's `TLS error on connection …` line (`id` empty when the line has none).
    fn tls_error(
        &mut self,
        line: &Line<'_>,
        id: &str,
        dir: Direction,
        host: &HostField<'_>,
        out: &mut Vec<Record>,
    ) {
        match dir {
            Direction::Outbound => {
                let note = FailNote::handshake(Wait::Transaction);
                self.outbound_tls_failure(line, id, host, note, out);
            }
            _ => out.push(anomaly(line, dir, host.peer(), AnomalyKind::StartTlsFailed)),
        }
    }

    fn on_completed(&mut self, id: &str, out: &mut Vec<Record>) {
        self.flush_delivery(id, out);
        if let Some(open) = self.received.remove(id) {
            let recipients = open.recipients(false);
            let mut r = open.record;
            r.recipients = recipients;
            out.push(Record::Message(r));
        }
    }

    fn on_connection_line(&mut self, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (host, used) = parse_host(rest);
        let Some(key) = host.key() else {
            self.unparsed += 1;
            return;
        };
        let mut tail = rest.get(used..).unwrap_or("").trim_start();
        // `+incoming_interface` puts `I=[ip]:port` before the rest.
        if let Some(after) = tail.strip_prefix("I=") {
            tail = after
                .find(' ')
                .and_then(|sp| after.get(sp..))
                .unwrap_or("")
                .trim_start();
        }
        if tail.starts_with("(TCP/IP connection count") {
            self.saw_connection_lines = true;
            let s = Session {
                time: line.time,
                peer: host.peer(),
                messages: 0,
                transport: None,
            };
            if line.pid.is_some() {
                // The daemon's pid: the session's own process shows on its next line.
                self.add_unclaimed(key, s);
            } else {
                // Without pids a second session of the same address (and port) replaces the
                // first: see the module documentation.
                let sk = (key.0, key.1, 0);
                self.merged_sessions |= self.sessions.get(&sk).is_some();
                if self.sessions.insert(sk, s).is_some() {
                    self.evicted += 1;
                }
            }
        } else if tail.starts_with("closed") || tail.starts_with("lost") {
            self.close_session(key, line.pid, line.time, &host, None, out);
        }
    }

    /// Queues a session opened by a daemon that logs pids until its process claims it.
    /// At most [`MAX_UNCLAIMED_PER_PEER`] wait per address and [`MAX_UNCLAIMED`] in all: past
    /// those, the address's oldest session, or the sessions of the address that has waited
    /// longest, are dropped (counted in `evicted`).
    fn add_unclaimed(&mut self, key: ConnKey, s: Session) {
        if let Some(list) = self.unclaimed.get_mut(&key)
            && list.len() >= MAX_UNCLAIMED_PER_PEER
        {
            list.remove(0);
            self.unclaimed_count -= 1;
            self.evicted += 1;
        }
        while self.unclaimed_count >= MAX_UNCLAIMED {
            let Some((_, old)) = self.unclaimed.pop_oldest() else {
                break;
            };
            self.unclaimed_count -= old.len();
            self.evicted += old.len() as u64;
        }
        let (list, dropped) = self.unclaimed.get_or_insert_with(key, Vec::new);
        // Never: there are fewer addresses than sessions, and the count is capped above.
        debug_assert!(!dropped);
        list.push(s);
        self.unclaimed_count += 1;
    }

    /// How many opened sessions wait for their process, over all addresses.
    pub fn unclaimed_sessions(&self) -> usize {
        self.unclaimed_count
    }

    /// The session a line of process `pid` about peer `key` belongs to: the one that process
    /// claimed, else the oldest unclaimed session of that address (and port), now claimed by
    /// it. `None` for a session opened before the log begins.
    fn session_of(&mut self, key: ConnKey, pid: Option<u32>) -> Option<SessionKey> {
        let sk = (key.0, key.1, pid.unwrap_or(0));
        if self.sessions.get(&sk).is_some() {
            return Some(sk);
        }
        let list = self.unclaimed.get_mut(&key)?;
        let s = (!list.is_empty()).then(|| list.remove(0));
        self.unclaimed_count -= usize::from(s.is_some());
        if list.is_empty() {
            self.unclaimed.remove(&key);
        } else if list.capacity() > 4 * list.len() {
            // Memory follows the sessions held, not the most an address ever had waiting.
            list.shrink_to(2 * list.len());
        }
        if self.sessions.insert(sk, s?).is_some() {
            self.evicted += 1;
        }
        Some(sk)
    }

    /// Ends the session of process `pid` with peer `key`, by a line at `time`. `transport`:
    /// what the closing line itself tells (a connect-ACL rejection), else the session's
    /// messages or a later `no MAIL` line tell.
    fn close_session(
        &mut self,
        key: ConnKey,
        pid: Option<u32>,
        time: UnixTime,
        host: &HostField<'_>,
        transport: Option<Transport>,
        out: &mut Vec<Record>,
    ) {
        let own = (key.0, key.1, pid.unwrap_or(0));
        if self.sessions.get(&own).is_none()
            && let Some((_, closed_at)) = self.closed_no_mail.get(&own)
            && self.same_process_closed(key, *closed_at, time)
        {
            // Closed already by an earlier line of the same process (a connect-ACL rejection,
            // then `closed by DROP in ACL`): this line must not claim another session.
            return;
        }
        let Some(sk) = self.session_of(key, pid) else {
            return;
        };
        let Some(mut s) = self.sessions.remove(&sk) else {
            return;
        };
        if s.peer.hostname.is_none() {
            s.peer.hostname = host.name.map(Into::into);
        }
        if transport.is_some() {
            s.transport = transport;
        }
        if s.messages > 0 {
            out.push(Record::Connection(connection(s, None)));
            return;
        }
        // An earlier session of the same key (a reused pid, or no pid) that no `no MAIL` line
        // ended: it is complete, and must not be overwritten.
        if let Some((old, _)) = self.closed_no_mail.remove(&sk) {
            out.push(Record::Connection(connection(old, None)));
        }
        if let Some((_, (old, _))) = self.closed_no_mail.insert(sk, (s, time)) {
            out.push(Record::Connection(connection(old, None)));
        }
    }

    /// Whether a closing line at `time` of a process whose session with `key` was closed
    /// without mail at `closed_at` is a further line of that same process (a connect-ACL
    /// rejection, then `closed by DROP in ACL`) rather than the close of a later session
    /// served by a process with the same (reused) pid: it is, when it follows within a
    /// second, or when no session of that address opened since is waiting.
    fn same_process_closed(&self, key: ConnKey, closed_at: UnixTime, time: UnixTime) -> bool {
        time.saturating_sub(closed_at) <= SAME_TRANSACTION_SECS as UnixTime
            || !self
                .unclaimed
                .get(&key)
                .is_some_and(|list| list.iter().any(|s| s.time >= closed_at))
    }

    fn on_no_mail(&mut self, rest: &str, line: &Line<'_>, out: &mut Vec<Record>) {
        let (host, used) = parse_host(rest);
        let Some(key) = host.key() else {
            self.unparsed += 1;
            return;
        };
        let f = parse_fields(rest.get(used..).unwrap_or(""));
        let transport = match self.tls_from(f.x, f.cv) {
            Some(tls) => Transport::Tls(tls),
            None => Transport::Plain,
        };
        let closed = (key.0, key.1, line.pid.unwrap_or(0));
        let s = match self.closed_no_mail.remove(&closed) {
            Some((s, _)) => Some(s),
            None => self
                .session_of(key, line.pid)
                .and_then(|sk| self.sessions.remove(&sk)),
        };
        let s = s.unwrap_or(Session {
            time: line.time,
            peer: host.peer(),
            messages: 0,
            transport: None,
        });
        out.push(Record::Connection(connection(s, Some(transport))));
    }
}

/// A `TLS error on connection …` line: its direction, the host, and whether the failing
/// function is a handshake's (`SSL_connect`, `SSL_accept`, `gnutls_handshake`, `certificate
/// verification failed`…) rather than a read or write in an established session
/// ([`AFTER_HANDSHAKE`]). Exim's wordings, after the message id if any:
/// - `TLS error on connection from HOST (FUNCTION): …`: a server-side error, every version;
/// - `TLS error on connection to mx [ip] (FUNCTION): …`: a client-side one, in the older
///   4.x versions (`tls_error()` of tls-openssl.c and tls-gnu.c);
/// - `H=mx [ip] TLS error on connection (FUNCTION): …`: the same in later 4.8x versions,
///   and in current ones for read and write errors only (tls-gnu.c `record_io_error()`).
///
/// Since `tls_error()` returns its text instead of logging it, a client's handshake error
/// shows only on the lines that use it: a `**`/`==` line's `TLS session: …`, or
/// `TLS session: …: delivering|callout unencrypted to …`.
fn tls_error_line(rest: &str) -> Option<(Direction, HostField<'_>, bool)> {
    let (dir, host, after_host) = if let Some(r) = rest.strip_prefix("TLS error on connection ") {
        let (dir, h) = if let Some(h) = r.strip_prefix("from ") {
            (Direction::Inbound, h)
        } else {
            (Direction::Outbound, r.strip_prefix("to ")?)
        };
        let (host, _) = parse_host(h);
        // `… [ip] (FUNCTION): …` (a `from` host may carry a `:port`).
        let after_ip = h.find(']').and_then(|i| h.get(i + 1..)).unwrap_or("");
        (dir, host, after_ip)
    } else {
        let h = rest.strip_prefix("H=")?;
        let (host, used) = parse_host(h);
        let after = h.get(used..)?.strip_prefix(" TLS error on connection")?;
        (Direction::Outbound, host, after)
    };
    let function = after_host
        .split_once(" (")
        .and_then(|(_, f)| f.split_once(')'))
        .map(|(f, _)| f);
    let handshake = !function.is_some_and(|f| AFTER_HANDSHAKE.contains(&f));
    Some((dir, host, handshake))
}

/// The text after `H=` of a line smtp_in.c `smtp_handle_acl_fail()` writes (`H=host [ip]
/// [X=…] [temporarily ]rejected …`). With `log_selector = +dnssec` and the client's reverse
/// lookup DNSSEC-secured (`sender_host_dnssec`), that function writes ` DS` right before
/// `host_and_ident()`'s `H=`, with no space between: `log_write(…, "%s%s%#Y…", " DS",
/// "H=host [ip]", …)` (Exim/exim src/src/smtp_in.c, the current gstring version and the
/// 4.9x `s_tlslog()` one; 4.8x wrote no mark), so the message starts ` DSH=host [ip] …` (after
/// a mainlog's time and `[pid] `), or `DSH=…` where a syslog daemon took the space as the
/// separator after the tag. Delivery lines put ` DS` between the name and `[ip]`
/// ([`parse_host`]) and `<=` lines before ` H=` (a field of its own): neither reaches here.
fn acl_host_text(m: &str) -> Option<&str> {
    let t = m.trim_start_matches(' ');
    let t = t
        .strip_prefix("DS")
        .filter(|r| r.starts_with("H="))
        .unwrap_or(t);
    t.strip_prefix("H=")
}

/// The host of a connect-ACL line (the text after `H=`, [`acl_host_text`]) and the fields
/// between it and the first of `outcomes` (the words saying what happened, `rejected
/// connection in "connect" ACL`, `dropped by 'connect' ACL`), when that text holds only what
/// Exim writes there: host_and_ident()'s ` I=[ip]:port` (`+incoming_interface`) and ` U=ident`,
/// the TLS fields of add_tls_info_for_log() / the 4.9x s_tlslog(): ` X=`, ` CV=`,
/// ` DN="…"`, ` SNI=` (the SPF and DMARC fields a rejection may add follow a sender: none
/// in the connect ACL) (Exim/exim src/src/smtp_in.c, current version, `smtp_handle_acl_fail()`,
/// `log_connect_tls_drop()`, host.c `host_and_ident()`). Those words found anywhere else
/// are no outcome of the connect ACL: a later line of the session quoting what the client
/// gave (`H=(helo) [ip] F=<"x X=… dropped by 'connect' ACL"@e> rejected RCPT …`: a quoted
/// local part may hold spaces), or a junk HELO name, would end the session, and any `X=`
/// there make it TLS.
fn acl_outcome<'a>(rest: &'a str, outcomes: &[&str]) -> Option<(HostField<'a>, &'a str)> {
    let (host, used) = parse_host(rest);
    let after = rest.get(used..)?;
    let at = outcomes.iter().filter_map(|o| after.find(o)).min()?;
    let between = after.get(..at)?;
    only_host_fields(between).then_some((host, between))
}

/// Whether `s` is a run of ` KEY=value` fields that may stand between the host of a
/// connect-ACL line and its outcome ([`acl_outcome`]); a `DN="…"` or `SNI="…"` value may
/// hold spaces, and so may the ident after `U=`: verify.c keeps the rest of the RFC 1413
/// reply's line (through string_printing(), which keeps spaces), so `U=john q smith`. The
/// ident's further words are those that are no field (no `=`) and none of the words Exim
/// writes after the host on a session's other lines (`rejected`, a `<` or `"` quoting what
/// the client gave): `H=[ip] U=john rejected EHLO or HELO x dropped by 'connect' ACL` stays
/// no drop. (An ident is the client's own text, so one holding the words of an outcome
/// itself cannot be told from one.)
fn only_host_fields(s: &str) -> bool {
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return true;
        }
        // A quoted value: the DN, and the SNI as the 4.9x s_tlslog() wrote it, ` SNI="…"`
        // through string_printing() (spaces kept; the current version escapes them).
        if let Some(dn) = rest
            .strip_prefix("DN=\"")
            .or_else(|| rest.strip_prefix("SNI=\""))
        {
            // Up to the quote that ends the field: before a space, or at the end.
            let Some(end) = dn
                .find("\" ")
                .map(|i| i + 1)
                .or_else(|| dn.ends_with('"').then_some(dn.len()))
            else {
                return false;
            };
            rest = dn.get(end..).unwrap_or("");
            continue;
        }
        let end = rest.find(' ').unwrap_or(rest.len());
        let key = rest
            .get(..end)
            .and_then(|t| t.split_once('='))
            .map(|(k, _)| k);
        if !matches!(key, Some("I" | "U" | "X" | "CV" | "SNI")) {
            return false;
        }
        rest = rest.get(end..).unwrap_or("");
        if key == Some("U") {
            // The ident's further words.
            loop {
                let word = rest.trim_start_matches(' ');
                let end = word.find(' ').unwrap_or(word.len());
                let w = word.get(..end).unwrap_or("");
                if w.is_empty() || w.contains(['=', '<', '"']) || w == "rejected" {
                    break;
                }
                rest = word.get(end..).unwrap_or("");
            }
        }
    }
}

/// The host of a failed outbound STARTTLS that Exim's smtp transport retries in clear
/// (`tls_tempfail_tryclear`, the default, and the host not in `hosts_require_tls`):
/// `ID TLS session: (SSL_connect): …: delivering unencrypted to H=mx [ip] (not in
/// hosts_require_tls)`. Older versions write `ID TLS session failure: delivering unencrypted
/// to mx [ip] (…)` after their own `ID TLS error on connection to mx [ip] (SSL_connect): …`
/// line (the two are one failure: [`EximParser::outbound_tls_failure`]). The delivery that
/// follows (`=>` without `X=`) is plaintext, over a new connection.
///
/// A recipient-verification callout whose STARTTLS failed, retried in clear, is logged
/// (usually without a message id: callouts run at RCPT time) by verify.c as `TLS session:
/// (SSL_connect): …: callout unencrypted to mx [ip] (not in hosts_require_tls)` since
/// callouts share the transport's connection setup, and as `TLS session failure: delivering
/// unencrypted to mx [ip] (…)` in the 4.8x verify.c before that: the remote MX's STARTTLS
/// failed all the same, so both name such a host too.
fn unencrypted_fallback(rest: &str) -> Option<HostField<'_>> {
    let at = rest.rfind(" unencrypted to ")?;
    let before = rest.get(..at)?;
    if !before.ends_with("delivering") && !before.ends_with("callout") {
        return None;
    }
    let host = rest.get(at + " unencrypted to ".len()..)?;
    let (h, _) = parse_host(host.strip_prefix("H=").unwrap_or(host));
    (h.ip.is_some() || h.name.is_some()).then_some(h)
}

/// The host of a failed outbound STARTTLS that Exim does not retry in clear, as a
/// recipient-verification (or sender-verification) callout or the DANE check logs it, and
/// which line of the attempt it is ([`FailLine`]). The forms, read in Exim's source
/// (Exim/exim: src/src/verify.c, transports/smtp.c, smtp_in.c, acl.c):
///
/// - `DANE attempt failed; TLS connection to mx [ip]: (SSL_connect): …`: transports/smtp.c
///   `smtp_setup_conn()`, at `TLS_CONN_FAILED` when the host has usable TLSA records, for a
///   delivery (with its message id) and for a callout (without), before the outcome line:
///   a handshake error ([`FailLine::HandshakeError`]). DANE sets `tls_tempfail_tryclear`
///   false ("force TLS"), so no clear retry follows.
/// - `… rejected RCPT <…>: Could not complete recipient verify callout: mx [ip] : TLS
///   session: (SSL_connect): …`, and `… sender verify defer for <…>: Could not complete sender
///   verify callout: mx [ip] : …`: in the verify.c whose callouts set up their connection
///   with the transport's `smtp_setup_conn()` (the one that logs `callout unencrypted to`),
///   a failed handshake leaves the address the message `TLS session: …`, and STARTTLS
///   refused or not offered by a host that requires TLS (`hosts_require_tls`, DANE) leaves
///   `a TLS session is required, but …`. `do_callout()` retries in clear only a host not in
///   `hosts_require_tls` with `tls_tempfail_tryclear` set ([`unencrypted_fallback`]); else it
///   prefixes the message with `mx [ip] : ` and, when the domain has a single host, with
///   `Could not complete recipient|sender verify callout: ` (with several, the message is
///   that bare text, naming no host). acl.c `acl_verify()` hands a recipient's message to
///   smtp_in.c `smtp_handle_acl_fail()`, which logs it on the rejection line, and a sender's
///   on its `sender verify defer for <…>` line. The outcome ([`FailLine::Outcome`]).
/// - `a TLS session is required for mx [ip], but an attempt to start TLS failed|the server
///   did not offer TLS support` and, later, `H=mx [ip]: a TLS session is required for this
///   host, but …`: older verify.c, which ran its own SMTP dialogue, logged these itself when
///   a host in `hosts_require_tls` set up no TLS session without a handshake error (a failed
///   handshake left only `tls_error()`'s `TLS error on connection …` line,
///   [`tls_error_line`]). An outcome line.
///
/// The third value is the handshake error the line names: a DANE line's ERROR, a rejection's
/// after `TLS session: ` ([`Wait::Dane`]).
fn unretried_tls_failure(rest: &str) -> Option<(HostField<'_>, FailLine, Option<&str>)> {
    let named = |h: HostField<'_>| h.ip.is_some() || h.name.is_some();
    if let Some(h) = rest.strip_prefix("DANE attempt failed; TLS connection to ") {
        let (host, used) = parse_host(h);
        let after = h.get(used..)?;
        let error = after.strip_prefix(": ");
        return (named(host) && after.starts_with(':')).then_some((
            host,
            FailLine::HandshakeError,
            error,
        ));
    }
    if let Some(h) = rest.strip_prefix("a TLS session is required for ") {
        let (host, used) = parse_host(h);
        return (named(host) && h.get(used..)?.starts_with(", but ")).then_some((
            host,
            FailLine::Outcome,
            None,
        ));
    }
    if let Some(h) = rest.strip_prefix("H=") {
        let (host, used) = parse_host(h);
        if h.get(used..)?
            .starts_with(": a TLS session is required for this host, but ")
        {
            return named(host).then_some((host, FailLine::Outcome, None));
        }
    }
    const CALLOUT: &str = " verify callout: ";
    let at = memchr::memmem::find(rest.as_bytes(), CALLOUT.as_bytes())?;
    let before = rest.get(..at)?;
    if !before.ends_with("Could not complete recipient")
        && !before.ends_with("Could not complete sender")
    {
        return None;
    }
    let h = rest.get(at + CALLOUT.len()..)?;
    let (host, used) = parse_host(h);
    let error = h.get(used..)?.strip_prefix(" : ")?;
    let handshake = error.strip_prefix("TLS session: ");
    (host.ip.is_some() && (handshake.is_some() || error.starts_with("a TLS session is required")))
        .then_some((host, FailLine::Outcome, handshake))
}

/// What an [`unretried_tls_failure`] line tells [`EximParser::outbound_tls_failure`]: a DANE
/// line waits `dane_secs` for an outcome line naming its error ([`Wait::Dane`]), a rejection
/// names its handshake error.
fn unretried_note(kind: FailLine, error: Option<&str>, dane_secs: u64) -> FailNote {
    match (kind, error) {
        (FailLine::HandshakeError, Some(error)) => FailNote::handshake(Wait::Dane {
            error: hash_str(error),
            secs: dane_secs,
        }),
        (FailLine::HandshakeError, None) => FailNote::handshake(Wait::Transaction),
        (FailLine::Outcome, _) => FailNote::outcome(error, None),
    }
}

/// The error text of a `==`/`**` line with `H=`: what follows the host and the fields after it.
/// deliver.c writes `== ADDRESS … defer (errno)[: strerror] H=name [ip][:port][*]: ERROR`
/// (deferral_log()) and `** ADDRESS … H=name [ip][:port][*][ I=…][ TFO][ X=… CV=… DN="…"]:
/// ERROR` (failure_log(), d_hostlog(), d_tlslog(); `+dnssec` puts ` DS` before `[ip]`, which
/// [`parse_host`] reads past): the error starts after the first field that ends in `:` (a
/// quoted value kept whole). `None` when the line has no `H=` or nothing after a colon there.
/// It is a suffix of `rest`: the line's fields end where it starts.
fn delivery_error(rest: &str) -> Option<&str> {
    let at = if rest.starts_with("H=") {
        0
    } else {
        memchr::memmem::find(rest.as_bytes(), b" H=")? + 1
    };
    let h = rest.get(at + 2..)?;
    let (_, used) = parse_host(h);
    let mut s = h.get(used..)?;
    loop {
        if let Some(error) = s.strip_prefix(": ") {
            return Some(error);
        }
        // The next field: ` TFO*`, ` I=[ip]`, ` X=…`, ` DN="…"`; a ` [ip]` after a name
        // parse_host() did not take.
        let t = s.strip_prefix(' ')?;
        let tb = t.as_bytes();
        let space = memchr::memchr(b' ', tb).unwrap_or(tb.len());
        let eq = memchr::memchr(b'=', tb.get(..space).unwrap_or(tb));
        let end = match eq {
            Some(e) if tb.get(e + 1) == Some(&b'"') => closing_quote(t, e + 2)? + 1,
            _ if space > 0 && tb.get(space - 1) == Some(&b':') => space - 1,
            _ => space,
        };
        if end == 0 {
            return None;
        }
        s = t.get(end..)?;
    }
}

/// A `==`/`**` line's error that Exim's smtp transport set on the run's addresses because its
/// own TLS set-up with the host failed ([`own_tls_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnTlsFailure<'a> {
    /// The error as an earlier line of the attempt names it ([`FailNote`]`::names`): the
    /// handshake's after `TLS session: `, as a DANE line does; `a TLS session is required, but
    /// REASON` ([`required_reason`]), as the host's own line does ([`host_tls_required`]).
    names: Option<&'a str>,
}

/// Whether a `==`/`**` line's error ([`delivery_error`]) is one that Exim's smtp transport
/// sets when its own TLS set-up with the host failed, read in Exim's source (Exim/exim:
/// src/src/transports/smtp.c `smtp_setup_conn()`, 4.6x to 4.9x; the error starts the text).
/// smtp.c defers on these (`TLS_FAILED`), so a `**` line names one only when Exim runs as an
/// MUA wrapper (`mua_wrapper`, where `smtp_transport_entry()` turns every defer into a
/// failure); once the retry time is up, retry.c `retry_update()` writes `** ADDRESS: retry
/// timeout exceeded` after the `==` line, with no `H=` (Exim's test/log/2012):
/// - `TLS session: ERROR`: the handshake failed (`TLS_CONN_FAILED`, ERRNO_TLSFAILURE; ERROR is
///   `tls_client_start()`'s, e.g. `(SSL_connect): …`, `(certificate verification failed): …`,
///   GnuTLS's `error on first read`, and that of a DANE host's `DANE attempt failed` line);
/// - `failure while setting up TLS session`: the same in versions before that;
/// - `a TLS session is required, but an attempt to start TLS failed` or `… but the server did
///   not offer TLS support`: a host in `hosts_require_tls`, or a DANE host, whose STARTTLS was
///   refused or not offered (ERRNO_TLSREQUIRED); `a TLS session is required for mx [ip], but …`
///   in 4.6x.
///
/// Not a remote server's reply, which Exim writes as `SMTP error from remote mail server after
/// COMMAND: REPLY` (check_response()) whatever the reply says, over a session that may well be
/// encrypted.
fn own_tls_failure(error: &str) -> Option<OwnTlsFailure<'_>> {
    if let Some(handshake) = error.strip_prefix("TLS session: ") {
        return Some(OwnTlsFailure {
            names: Some(handshake),
        });
    }
    if error.starts_with("a TLS session is required, but ") {
        return Some(OwnTlsFailure {
            names: Some(required_reason(error)),
        });
    }
    (error.starts_with("failure while setting up TLS session")
        || error.starts_with("a TLS session is required for "))
    .then_some(OwnTlsFailure { names: None })
}

/// `a TLS session is required, but REASON` without what may follow it: REASON is one of
/// smtp.c's two fixed texts (`an attempt to start TLS failed`, `the server did not offer TLS
/// support`). The text up to the first `:` (the reasons have none), should anything follow.
fn required_reason(error: &str) -> &str {
    error.split_once(':').map_or(error, |(reason, _)| reason)
}

/// The host and error of `ID H=mx [ip]: a TLS session is required, but REASON` (with
/// `+outgoing_port`, `H=mx [ip]:25: …`): the line transports/smtp.c `smtp_transport_entry()`
/// writes through `write_logs()` (`H=%s [%s][:%d]: MESSAGE`, then `: strerror` for a positive
/// errno, which ERRNO_TLSREQUIRED is not) for each host of the run whose `smtp_deliver()`
/// deferred, except for a failed handshake (ERRNO_TLSFAILURE) or AUTH, before it goes on to the
/// domain's next host. `smtp_setup_conn()` sets this error (ERRNO_TLSREQUIRED) when a host
/// that must use TLS (`hosts_require_tls`, DANE, SMTPS) refused STARTTLS or did not offer it.
/// Checked in Exim/exim src/src/transports/smtp.c as stored at 001bf8f5 (4.94-era) and in a
/// 4.86-era version (write_logs() then wrote no port). The last host's failure also ends in
/// the run's `==`/`**` lines, naming the same error ([`Wait::HostLine`]).
fn host_tls_required(rest: &str) -> Option<(HostField<'_>, &str)> {
    let h = rest.strip_prefix("H=")?;
    let (host, used) = parse_host(h);
    let error = h.get(used..)?.strip_prefix(": ")?;
    (host.ip.is_some() && error.starts_with("a TLS session is required, but "))
        .then(|| (host, required_reason(error)))
}

/// A `==`/`**` line's place in its transport run ([`EximParser::outbound_tls_failure`]): the
/// address it names (the first word: the address delivered to, not its `<parent>`, which two
/// addresses of one run can share), that address's domain (lowercase), and the run's route:
/// the process that wrote the line (`+pid`) and all the line says after the router
/// (`T=transport defer (errno) H=host [ip]: message`, and for `**` the host's other fields),
/// which Exim writes from values shared by the whole run.
fn recipient_line(rest: &str, pid: Option<u32>) -> RecipientLine {
    let address = rest.split(' ').next().unwrap_or("").trim_end_matches(':');
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    let after_router = rest.find(" T=").and_then(|i| rest.get(i..)).unwrap_or("");
    let new_hasher = || BuildHasherDefault::<DefaultHasher>::default().build_hasher();
    let mut h = new_hasher();
    pid.hash(&mut h);
    after_router.hash(&mut h);
    let mut d = new_hasher();
    for b in domain.bytes() {
        d.write_u8(b.to_ascii_lowercase());
    }
    RecipientLine {
        route: h.finish(),
        domain: d.finish(),
        recipient: hash_str(address),
    }
}

fn emit_open(open: OpenMessage, out: &mut Vec<Record>) {
    let n = open.recipients(true);
    let mut r = open.record;
    r.recipients = n;
    out.push(Record::Message(r));
}

fn connection(s: Session, transport: Option<Transport>) -> ConnectionRecord {
    ConnectionRecord {
        mta: Mta::Exim,
        time: s.time,
        direction: Direction::Inbound,
        scope: Scope::Internet,
        peer: s.peer,
        transport: transport
            .or(s.transport)
            .unwrap_or(Transport::Unknown { hint: HINT_NO_MAIL }),
        messages: s.messages,
    }
}

fn anomaly(line: &Line<'_>, direction: Direction, peer: Peer, kind: AnomalyKind) -> Record {
    Record::Anomaly(AnomalyRecord {
        mta: Mta::Exim,
        time: line.time,
        direction,
        peer,
        kind,
        evidence: line.raw.to_string(),
    })
}

impl MtaParser for EximParser {
    fn feed(&mut self, line: &Line<'_>, out: &mut Vec<Record>) {
        if line.program != "exim" && line.program != "exim4" {
            return;
        }
        let m = line.message;
        if let Some((id, rest)) = split_message_id(m) {
            let b = rest.as_bytes();
            if b.len() >= 3 && b[2] == b' ' {
                let body = rest.get(3..).unwrap_or("");
                match &b[..2] {
                    b"<=" => self.on_received(id, body, line, out),
                    k @ (b"=>" | b">>" | b"->" | b"==" | b"**" | b"*>") => {
                        let kind = if k == b">>" { b"=>" } else { k };
                        self.on_delivery(id, kind, body, line, out);
                    }
                    _ => {}
                }
            } else if rest == "Completed" || rest.starts_with("Completed ") {
                self.on_completed(id, out);
            } else if let Some((dir, host, handshake)) = tls_error_line(rest) {
                // Older Exim logs a delivery's failed handshake with the message id.
                if handshake {
                    self.tls_error(line, id, dir, &host, out);
                }
            } else if let Some(host) = unencrypted_fallback(rest) {
                let note = FailNote::outcome(None, None);
                self.outbound_tls_failure(line, id, &host, note, out);
            } else if let Some((host, kind, error)) = unretried_tls_failure(rest) {
                // A delivery's `DANE attempt failed; …` (its `==` line follows, written by
                // the delivery process once the transport process has ended).
                let note = unretried_note(kind, error, DANE_OUTCOME_SECS);
                self.outbound_tls_failure(line, id, &host, note, out);
            } else if let Some((host, error)) = host_tls_required(rest) {
                // A host that must use TLS refused STARTTLS or did not offer it; Exim goes on
                // to the next host, or, for the last, writes the run's `==` lines.
                let note = FailNote::handshake(Wait::HostLine {
                    error: hash_str(error),
                });
                self.outbound_tls_failure(line, id, &host, note, out);
            }
            return;
        }
        if let Some(rest) = m.strip_prefix("SMTP connection from ") {
            self.on_connection_line(rest, line, out);
        } else if let Some(rest) = m.strip_prefix("no MAIL in SMTP connection from ") {
            self.on_no_mail(rest, line, out);
        } else if let Some(rest) = m.strip_prefix("SMTP syntax error in \"") {
            if rest.starts_with("XXXXXXXA\"") {
                let peer = match rest.find(" H=") {
                    Some(i) => parse_host(rest.get(i + 3..).unwrap_or("")).0.peer(),
                    None => Peer {
                        hostname: None,
                        ip: None,
                    },
                };
                out.push(anomaly(
                    line,
                    Direction::Inbound,
                    peer,
                    AnomalyKind::StrippingTrace,
                ));
            }
        } else if let Some((dir, host, handshake)) = tls_error_line(m) {
            // `… (recv): …`, `… (send): …`: an error in reading or writing an established
            // session (a client that drops without close_notify) is no failed STARTTLS; the
            // handshake's own functions (`SSL_accept`, `gnutls_handshake`…) are.
            if handshake {
                self.tls_error(line, "", dir, &host, out);
            }
        } else if m.starts_with("TLS error on connection ") {
            self.unparsed += 1;
        } else if m.starts_with("TLS session")
            && let Some(host) = unencrypted_fallback(m)
        {
            // A callout's STARTTLS failed and was retried in clear.
            let note = FailNote::outcome(None, None);
            self.outbound_tls_failure(line, "", &host, note, out);
        } else if m.starts_with("SMTP ")
            && let Some(i) = m.find(" on connection from ")
        {
            // `SMTP command timeout on connection from …`, `SMTP data timeout … on connection
            // from …`: the session ends there.
            let (host, _) = parse_host(m.get(i + 20..).unwrap_or(""));
            if let Some(key) = host.key() {
                self.close_session(key, line.pid, line.time, &host, None, out);
            }
        } else if let Some(rest) = m
            .strip_prefix("unexpected disconnection while reading SMTP command from ")
            .or_else(|| m.strip_prefix("SMTP call from "))
        {
            // `SMTP call from HOST dropped: too many syntax or protocol errors …` (or too many
            // unrecognized or nonmail commands): Exim ends the session without a close line.
            let (host, _) = parse_host(rest);
            if let Some(key) = host.key() {
                self.close_session(key, line.pid, line.time, &host, None, out);
            }
        } else if let Some(rest) = acl_host_text(m)
            && let Some((host, between)) = acl_outcome(
                rest,
                &[
                    " rejected connection in \"connect\" ACL",
                    " temporarily rejected connection in \"connect\" ACL",
                ],
            )
        {
            // `[ DS]H=… [X=…] [temporarily ]rejected connection in "connect" ACL…`: the session
            // ends before its greeting, without a close line, in TLS only on a TLS-on-connect
            // port.
            let f = parse_fields(between);
            let transport = match self.tls_from(f.x, f.cv) {
                Some(tls) => Transport::Tls(tls),
                None => Transport::Plain,
            };
            if let Some(key) = host.key() {
                self.close_session(key, line.pid, line.time, &host, Some(transport), out);
            }
        } else if let Some(rest) = acl_host_text(m)
            && let Some((host, between)) = acl_outcome(rest, &[" dropped by 'connect' ACL"])
        {
            // `[ DS]H=… dropped by 'connect' ACL[: …]`: on a TLS-on-connect port the connect ACL
            // runs before the handshake (log_connect_tls_drop()); the session ends there with
            // neither TLS nor clear SMTP. No `X=` can be on it (no TLS yet); one would be read.
            let f = parse_fields(between);
            let transport = match self.tls_from(f.x, f.cv) {
                Some(tls) => Transport::Tls(tls),
                None => Transport::Unknown {
                    hint: HINT_TLS_ON_CONNECT_DROP,
                },
            };
            if let Some(key) = host.key() {
                self.close_session(key, line.pid, line.time, &host, Some(transport), out);
            }
        } else if let Some((host, kind, error)) = unretried_tls_failure(m) {
            // A callout's STARTTLS failed and was not retried in clear (a DANE line and the
            // rejection come from the one process serving the SMTP session, one after the
            // other).
            let note = unretried_note(kind, error, SAME_TRANSACTION_SECS);
            self.outbound_tls_failure(line, "", &host, note, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Record>) {
        for (_, r) in self.deliveries.drain_ordered() {
            out.push(Record::Message(r));
        }
        for (_, open) in self.received.drain_ordered() {
            emit_open(open, out);
        }
        for (_, (s, _)) in self.closed_no_mail.drain_ordered() {
            out.push(Record::Connection(connection(s, None)));
        }
        for (_, s) in self.sessions.drain_ordered() {
            out.push(Record::Connection(connection(s, None)));
        }
        self.unclaimed_count = 0;
        for (_, list) in self.unclaimed.drain_ordered() {
            for s in list {
                out.push(Record::Connection(connection(s, None)));
            }
        }
        for (_, c) in self.outbound.drain_ordered() {
            out.push(Record::Connection(c.record));
        }
    }

    fn unparsed(&self) -> u64 {
        self.unparsed
    }

    fn evicted(&self) -> u64 {
        self.evicted
    }

    fn advice(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.tls_without_x {
            v.push(format!("{HINT_NO_X}: add it to log_selector"));
        }
        if self.tls_without_cv {
            v.push(
                "Exim log_selector +tls_certificate_verified (CV=) tells whether the peer's certificate was verified"
                    .to_string(),
            );
        }
        if self.merged_sessions {
            v.push(
                "Exim log_selector +incoming_port (or +pid) tells parallel connections from one address apart"
                    .to_string(),
            );
        }
        if self.saw_received && !self.saw_connection_lines {
            v.push(
                "Exim log_selector +smtp_connection +smtp_no_mail is needed to count connections"
                    .to_string(),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// input, name, helo, ip, port, rest after the host
    type HostCase = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<IpAddr>,
        Option<u16>,
        &'static str,
    );
    /// delivery-line fields, continued?, transport, X=, CV=
    type ContinuedCase = (
        &'static str,
        bool,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );
    /// the line after the message id, and the host it names: name, address
    type FallbackCase = (&'static str, Option<(&'static str, Option<IpAddr>)>);
    /// X= value, version, cipher, bits, key exchange
    type CipherCase = (
        &'static str,
        &'static str,
        &'static str,
        Option<u16>,
        Option<&'static str>,
    );

    #[test]
    fn host_forms() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let cases: &[HostCase] = &[
            (
                "[127.0.0.1] rest",
                None,
                None,
                ip("127.0.0.1"),
                None,
                " rest",
            ),
            (
                "(helo) [127.0.0.2]:48640 P=x",
                None,
                Some("helo"),
                ip("127.0.0.2"),
                Some(48640),
                " P=x",
            ),
            (
                "mx.example.com [192.0.2.1] X=",
                Some("mx.example.com"),
                None,
                ip("192.0.2.1"),
                None,
                " X=",
            ),
            (
                "mx.example.com (helo x) [2001:db8::1]:25",
                Some("mx.example.com"),
                Some("helo x"),
                ip("2001:db8::1"),
                Some(25),
                "",
            ),
            (
                "mx [192.0.2.2]* X=a",
                Some("mx"),
                None,
                ip("192.0.2.2"),
                None,
                " X=a",
            ),
            // `+dnssec`: deliver.c d_hostlog() writes ` DS` between the name and `[ip]`.
            (
                "mx.example.com DS [192.0.2.1] X=a",
                Some("mx.example.com"),
                None,
                ip("192.0.2.1"),
                None,
                " X=a",
            ),
            (
                "mx.example.com DS [2001:db8::1]:25* TFO",
                Some("mx.example.com"),
                None,
                ip("2001:db8::1"),
                Some(25),
                " TFO",
            ),
            // ` DS` not followed by an address, or another word: the name alone.
            ("mx DS", Some("mx"), None, None, None, " DS"),
            ("mx DS: error", Some("mx"), None, None, None, " DS: error"),
            (
                "mx DSX [192.0.2.1]",
                Some("mx"),
                None,
                None,
                None,
                " DSX [192.0.2.1]",
            ),
            ("[bogus]", None, None, None, None, ""),
            ("(unclosed", None, None, None, None, ""),
            ("", None, None, None, None, ""),
        ];
        for (input, name, helo, ipv, port, rest) in cases {
            let (h, used) = parse_host(input);
            assert_eq!(
                (h.name, h.helo, h.ip, h.port),
                (*name, *helo, *ipv, *port),
                "{input}"
            );
            assert_eq!(&input[used..], *rest, "{input}");
        }
    }

    /// `+dnssec`: deliver.c d_hostlog(), which writes the host of `=>`, `==` and `**` lines
    /// (delivery_log(), deferral_log(), failure_log()), puts ` DS` between the name and `[ip]`
    /// of a host whose DNS lookup was DNSSEC-secured: `H=mx DS [ip]`, then `:port` with
    /// `+outgoing_port` and `*` on a continued connection. Each line (after the message id),
    /// and what its record keeps: the status, `mx.b.example [192.0.2.7]` and the port; then the
    /// messages of each outbound connection counted, and the address of each failed STARTTLS.
    #[test]
    fn dnssec_marked_hosts_keep_address_and_port() {
        type DsCase = (
            &'static [&'static str],
            &'static [(DeliveryStatus, Option<u16>)],
            &'static [u32],
            usize,
        );
        let cases: &[DsCase] = &[
            (
                &[
                    "=> bob@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 OK\"",
                ],
                &[(DeliveryStatus::Sent, None)],
                &[1],
                0,
            ),
            (
                &[
                    "=> bob@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 OK\"",
                ],
                &[(DeliveryStatus::Sent, Some(25))],
                &[1],
                0,
            ),
            (
                &[
                    "== bob@b.example R=dnslookup T=remote_smtp defer (-44) H=mx.b.example DS [192.0.2.7]: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 450 4.2.0 try later",
                ],
                &[(DeliveryStatus::Deferred, None)],
                &[1],
                0,
            ),
            (
                &[
                    "== bob@b.example R=dnslookup T=remote_smtp defer (-44) H=mx.b.example DS [192.0.2.7]:587: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 450 4.2.0 try later",
                ],
                &[(DeliveryStatus::Deferred, Some(587))],
                &[1],
                0,
            ),
            (
                &[
                    "** bob@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 550 5.1.1 no such user",
                ],
                &[(DeliveryStatus::Bounced, None)],
                &[1],
                0,
            ),
            (
                &[
                    "** bob@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 550 5.1.1 no such user",
                ],
                &[(DeliveryStatus::Bounced, Some(25))],
                &[1],
                0,
            ),
            // A second message down the same connection (`*` after the address, or after the
            // port): one connection, two messages.
            (
                &[
                    "=> bob@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 OK\"",
                    "=> cat@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7]* X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 OK\"",
                ],
                &[(DeliveryStatus::Sent, None), (DeliveryStatus::Sent, None)],
                &[2],
                0,
            ),
            (
                &[
                    "=> bob@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 OK\"",
                    "** cat@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7]:25* X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane: SMTP error from remote mail server after RCPT TO:<cat@b.example>: 550 5.1.1 no such user",
                ],
                // (A `=>` record waits for its message's `->` lines: emitted last.)
                &[
                    (DeliveryStatus::Bounced, Some(25)),
                    (DeliveryStatus::Sent, Some(25)),
                ],
                &[2],
                0,
            ),
            // Our own STARTTLS failing with a DNSSEC-secured host: listed with its address.
            (
                &[
                    "== bob@b.example R=dnslookup T=remote_smtp defer (-37) H=mx.b.example DS [192.0.2.7]: TLS session: (SSL_connect): error:x",
                ],
                &[(DeliveryStatus::Deferred, None)],
                &[1],
                1,
            ),
            (
                &[
                    "== bob@b.example R=dnslookup T=remote_smtp defer (-38) H=mx.b.example DS [192.0.2.7]:25: a TLS session is required, but an attempt to start TLS failed",
                ],
                &[(DeliveryStatus::Deferred, Some(25))],
                &[1],
                1,
            ),
        ];
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for (lines, messages, connections, failures) in cases {
            let mut p = EximParser::new();
            let mut out = Vec::new();
            // Each line its own message.
            let lines: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("1abcd{i}-000000-AB {l}"))
                .collect();
            for m in &lines {
                let line = Line {
                    time: 10,
                    host: "",
                    program: "exim",
                    pid: None,
                    message: m,
                    raw: m,
                };
                p.feed(&line, &mut out);
            }
            p.finish(&mut out);
            let mut got_messages = Vec::new();
            let mut got_connections = Vec::new();
            let mut got_failures = 0;
            for r in &out {
                match r {
                    Record::Message(m) => {
                        assert_eq!(
                            m.peer.hostname.as_deref(),
                            Some("mx.b.example"),
                            "{lines:?}"
                        );
                        assert_eq!(m.peer.ip, Some(ip), "{lines:?}");
                        got_messages.push((m.status.unwrap(), m.port));
                    }
                    Record::Connection(c) => {
                        assert_eq!(c.peer.ip, Some(ip), "{lines:?}");
                        got_connections.push(c.messages);
                    }
                    Record::Anomaly(a) => {
                        assert_eq!(a.peer.ip, Some(ip), "{lines:?}");
                        got_failures += 1;
                    }
                }
            }
            assert_eq!(&got_messages, messages, "{lines:?}");
            assert_eq!(&got_connections, connections, "{lines:?}");
            assert_eq!(got_failures, *failures, "{lines:?}");
        }
    }

    #[test]
    fn continued_connection_marks() {
        let cases: &[ContinuedCase] = &[
            (
                "R=r T=t H=mx [192.0.2.1] X=a:b CV=yes",
                false,
                Some("t"),
                Some("a:b"),
                Some("yes"),
            ),
            (
                "R=r T=t H=mx [192.0.2.1]* X=a:b",
                true,
                Some("t"),
                Some("a:b"),
                None,
            ),
            (
                "T=t H=mx [192.0.2.1]:25* X=a:b",
                true,
                Some("t"),
                Some("a:b"),
                None,
            ),
            (
                "T=t H=mx [192.0.2.1]:25 X=a:b",
                false,
                Some("t"),
                Some("a:b"),
                None,
            ),
            (
                "T=t H=mx [192.0.2.1] I=[198.51.100.1]* X=a:b",
                true,
                Some("t"),
                Some("a:b"),
                None,
            ),
            (
                "T=t H=mx [192.0.2.1] I=[198.51.100.1]:4321*",
                true,
                Some("t"),
                None,
                None,
            ),
            (
                "T=t H=mx [192.0.2.1] I=[198.51.100.1] K",
                false,
                Some("t"),
                None,
                None,
            ),
            (
                "T=t H=mx [192.0.2.1] TFO* X=a:b",
                false,
                Some("t"),
                Some("a:b"),
                None,
            ),
            (
                "T=t H=mx [192.0.2.1]* X=TLS1.3:C:256 CV=no: SMTP error from remote mail server",
                true,
                Some("t"),
                Some("TLS1.3:C:256"),
                Some("no"),
            ),
            (
                "T=t H=mx [192.0.2.1]*: SMTP error",
                true,
                Some("t"),
                None,
                None,
            ),
            ("R=r T=t", false, Some("t"), None, None),
        ];
        for (fields, continued, transport, x, cv) in cases {
            let f = parse_fields(fields);
            let got = f.host.is_some_and(|h| h.continued) || f.continued;
            assert_eq!(
                (got, f.transport, f.x, f.cv),
                (*continued, *transport, *x, *cv),
                "{fields}"
            );
        }
    }

    #[test]
    fn cipher_names() {
        let cases: &[CipherCase] = &[
            (
                "TLS1.3:ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM:256",
                "TLSv1.3",
                "ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM",
                Some(256),
                Some("X25519"),
            ),
            (
                "TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256",
                "TLSv1.2",
                "ECDHE-RSA-AES256-GCM-SHA384",
                Some(256),
                None,
            ),
            (
                "TLS1.2:ECDHE_SECP256R1__RSA_SHA256__AES_128_GCM:128",
                "TLSv1.2",
                "ECDHE_SECP256R1__RSA_SHA256__AES_128_GCM",
                Some(128),
                Some("SECP256R1"),
            ),
            (
                "TLS1.0:DHE_RSA_AES_256_CBC_SHA1:256",
                "TLSv1",
                "DHE_RSA_AES_256_CBC_SHA1",
                Some(256),
                None,
            ),
            ("TLSv1:AES256-SHA", "TLSv1", "AES256-SHA", None, None),
            (
                "TLSv1.3:TLS_AES_256_GCM_SHA384:99999",
                "TLSv1.3",
                "TLS_AES_256_GCM_SHA384",
                None,
                None,
            ),
        ];
        for (x, v, c, bits, kx) in cases {
            let t = parse_colon_cipher(x).unwrap();
            assert_eq!(
                (
                    t.version.as_ref(),
                    t.cipher.as_ref(),
                    t.bits,
                    t.key_exchange.as_deref()
                ),
                (*v, *c, *bits, *kx),
                "{x}"
            );
        }
        for bad in ["", "TLS1.3", ":x", "TLS1.3:"] {
            assert!(parse_colon_cipher(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ip_addresses_match_std() {
        let cases = [
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            "1.2.3.4 ",
            "",
            "2001:db8::1",
            "IPv6:2001:db8::1",
            "::ffff:192.0.2.1",
            "1234.1.1.1",
            "1.2.3.a",
            ".1.2.3",
        ];
        for c in cases {
            let want = c.strip_prefix("IPv6:").unwrap_or(c).parse::<IpAddr>().ok();
            assert_eq!(parse_ip(c), want, "{c:?}");
        }
    }

    #[test]
    fn message_ids() {
        let cases = [
            ("1xV7Qo-0003xF-0o <= a", Some(("1xV7Qo-0003xF-0o", "<= a"))),
            (
                "1wtYVW-0000000GFxD-3Ryp => b",
                Some(("1wtYVW-0000000GFxD-3Ryp", "=> b")),
            ),
            ("SMTP connection from [1.2.3.4]", None),
            ("1xV7Qo-0003xF-0o", None),
            ("1xV7Qo-0003xF-0oo x", None),
        ];
        for (m, want) in cases {
            assert_eq!(split_message_id(m), want, "{m}");
        }
    }

    #[test]
    fn unencrypted_fallbacks() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let cases: &[FallbackCase] = &[
            (
                "TLS session: (SSL_connect): error:0A000086:SSL routines::certificate verify failed: delivering unencrypted to H=mx.example.com [192.0.2.1] (not in hosts_require_tls)",
                Some(("mx.example.com", ip("192.0.2.1"))),
            ),
            (
                "TLS session: (gnutls_handshake): A TLS fatal alert has been received.: delivering unencrypted to H=mx6.example.com [2001:db8::25] (not in hosts_require_tls)",
                Some(("mx6.example.com", ip("2001:db8::25"))),
            ),
            (
                "TLS session failure: delivering unencrypted to mx.old.example [192.0.2.3] (not in hosts_require_tls)",
                Some(("mx.old.example", ip("192.0.2.3"))),
            ),
            // Truncated after the name: still the host.
            (
                "TLS session: (x): delivering unencrypted to H=mx.example.com",
                Some(("mx.example.com", None)),
            ),
            ("TLS session: (x): delivering unencrypted to ", None),
            ("TLS session: (x): delivering unencrypted to H=", None),
            // A verification callout (current verify.c): the MX's STARTTLS failed too.
            (
                "TLS session: (SSL_connect): x: callout unencrypted to mx.example.com [192.0.2.1] (not in hosts_require_tls)",
                Some(("mx.example.com", ip("192.0.2.1"))),
            ),
            ("TLS session: (x): callout unencrypted to ", None),
            (
                "TLS session: (x): something unencrypted to mx [192.0.2.1]",
                None,
            ),
            ("=> bob@example.com R=r T=t H=mx [192.0.2.1]", None),
            ("", None),
        ];
        for (rest, want) in cases {
            let got = unencrypted_fallback(rest).map(|h| (h.name.unwrap_or(""), h.ip));
            assert_eq!(got, *want, "{rest}");
        }
    }

    /// A line (after the message id, if any), and the host and line kind it names.
    type UnretriedCase = (
        &'static str,
        Option<(Option<&'static str>, Option<IpAddr>, FailLine)>,
    );

    #[test]
    fn unretried_tls_failures() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let (err, outcome) = (FailLine::HandshakeError, FailLine::Outcome);
        let cases: &[UnretriedCase] = &[
            (
                "DANE attempt failed; TLS connection to mx.example.se [192.0.2.13]: (SSL_connect): error:x",
                Some((Some("mx.example.se"), ip("192.0.2.13"), err)),
            ),
            (
                "DANE attempt failed; TLS connection to mx.example.se [2001:db8::25]: (gnutls_handshake): x",
                Some((Some("mx.example.se"), ip("2001:db8::25"), err)),
            ),
            ("DANE attempt failed; TLS connection to ", None),
            (
                "DANE attempt failed; TLS connection to mx [192.0.2.1]",
                None,
            ),
            (
                "H=c.example [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx.example.net [192.0.2.11] : TLS session: (SSL_connect): error:x",
                Some((Some("mx.example.net"), ip("192.0.2.11"), outcome)),
            ),
            (
                "H=(helo) [198.51.100.7]:4711 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx.example.net [192.0.2.11] : a TLS session is required, but an attempt to start TLS failed",
                Some((Some("mx.example.net"), ip("192.0.2.11"), outcome)),
            ),
            (
                "H=c.example [198.51.100.7] sender verify defer for <c@example.com>: Could not complete sender verify callout: mx.example.com [192.0.2.12] : a TLS session is required, but the server did not offer TLS support",
                Some((Some("mx.example.com"), ip("192.0.2.12"), outcome)),
            ),
            // Several hosts: no detail. Other errors: no failed STARTTLS.
            (
                "H=c.example [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout",
                None,
            ),
            (
                "H=c.example [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx.example.net [192.0.2.11] : Connection refused",
                None,
            ),
            (
                "H=c.example [198.51.100.7] F=<carol@example.com> temporarily rejected RCPT <d@example.org>: Could not complete sender verify callout",
                None,
            ),
            // No address: no host to name.
            (
                "H=c.example [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx.example.net : TLS session: x",
                None,
            ),
            (
                "H=c.example [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: ",
                None,
            ),
            // Not the callout's text.
            (
                "H=c.example [198.51.100.7] F=<a@example.org> rejected RCPT <b@example.net>: x verify callout: mx [192.0.2.1] : TLS session: x",
                None,
            ),
            // Older verify.c.
            (
                "a TLS session is required for mx.example.fi [192.0.2.17], but the server did not offer TLS support",
                Some((Some("mx.example.fi"), ip("192.0.2.17"), outcome)),
            ),
            (
                "H=mx.example.is [192.0.2.18]: a TLS session is required for this host, but an attempt to start TLS failed",
                Some((Some("mx.example.is"), ip("192.0.2.18"), outcome)),
            ),
            ("a TLS session is required for ", None),
            ("a TLS session is required for mx [192.0.2.17]", None),
            (
                "H=mx.example.is [192.0.2.18]: a TLS session is required",
                None,
            ),
            (
                "H=mx.example.net [192.0.2.1] rejected connection in \"connect\" ACL",
                None,
            ),
            ("H=", None),
            ("", None),
        ];
        for (rest, want) in cases {
            let got = unretried_tls_failure(rest).map(|(h, k, _)| (h.name, h.ip, k));
            assert_eq!(got, *want, "{rest}");
        }
    }

    /// A line (after the message id, if any), and what it says: direction, host name,
    /// address, whether the function is a handshake's.
    type TlsErrorCase = (
        &'static str,
        Option<(Direction, Option<&'static str>, Option<IpAddr>, bool)>,
    );

    #[test]
    fn tls_error_lines() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let (i, o) = (Direction::Inbound, Direction::Outbound);
        let cases: &[TlsErrorCase] = &[
            // Older tls-openssl.c.
            (
                "TLS error on connection to mx.example.net [192.0.2.1] (SSL_connect): error:14090086:SSL routines:ssl3_get_server_certificate:certificate verify failed",
                Some((o, Some("mx.example.net"), ip("192.0.2.1"), true)),
            ),
            // Older tls-gnu.c.
            (
                "TLS error on connection to mx.example.net [2001:db8::1] (gnutls_handshake): A TLS fatal alert has been received.",
                Some((o, Some("mx.example.net"), ip("2001:db8::1"), true)),
            ),
            // Later 4.8x.
            (
                "H=mx.example.net [192.0.2.1] TLS error on connection (certificate verification failed): certificate invalid",
                Some((o, Some("mx.example.net"), ip("192.0.2.1"), true)),
            ),
            // tls-gnu.c record_io_error(): a read error, not the handshake.
            (
                "H=mx.example.net [192.0.2.1] TLS error on connection (gnutls_record_recv): The TLS connection was non-properly terminated.",
                Some((o, Some("mx.example.net"), ip("192.0.2.1"), false)),
            ),
            (
                "TLS error on connection to mx.example.net [192.0.2.1] (SSL_read): x",
                Some((o, Some("mx.example.net"), ip("192.0.2.1"), false)),
            ),
            (
                "TLS error on connection from (helo) [192.0.2.9]:4444 (SSL_accept): x",
                Some((i, None, ip("192.0.2.9"), true)),
            ),
            (
                "TLS error on connection from (helo) [192.0.2.9] (recv): x",
                Some((i, None, ip("192.0.2.9"), false)),
            ),
            // Truncated: still the host, counted as a handshake's.
            (
                "TLS error on connection to mx.example.net",
                Some((o, Some("mx.example.net"), None, true)),
            ),
            ("TLS error on connection by x", None),
            (
                "H=mx.example.net [192.0.2.1] rejected connection in \"connect\" ACL",
                None,
            ),
            ("H=mx.example.net [192.0.2.1] TLS error", None),
            ("H=", None),
            ("", None),
        ];
        for (rest, want) in cases {
            let got = tls_error_line(rest).map(|(d, h, hs)| (d, h.name, h.ip, hs));
            assert_eq!(got, *want, "{rest}");
        }
    }

    /// Log lines (program `exim`, no pid), and the outbound STARTTLS failures they list, as
    /// (time, host address).
    type OneFailureCase = (&'static [&'static str], &'static [(i64, &'static str)]);

    #[test]
    fn one_failure_is_listed_once() {
        let cases: &[OneFailureCase] = &[
            // Older versions, retried in clear: the error and the fallback line.
            (
                &[
                    "1abcde-000000-AB TLS error on connection to mx.example.net [192.0.2.1] (SSL_connect): error:x",
                    "1abcde-000000-AB TLS session failure: delivering unencrypted to mx.example.net [192.0.2.1] (not in hosts_require_tls)",
                ],
                &[(0, "192.0.2.1")],
            ),
            // Later 4.8x, not retried: the error and the `==` line.
            (
                &[
                    "1abcde-000000-AB H=mx.example.net [192.0.2.1] TLS error on connection (SSL_connect): error:x",
                    "1abcde-000000-AB == bob@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: failure while setting up TLS session",
                ],
                &[(0, "192.0.2.1")],
            ),
            // Only the error: the delivery moved on to the next host (hosts_require_tls).
            (
                &[
                    "1abcde-000000-AB TLS error on connection to mx1.example.net [192.0.2.1] (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1")],
            ),
            // Two hosts of one message: two failures.
            (
                &[
                    "1abcde-000000-AB TLS error on connection to mx1.example.net [192.0.2.1] (SSL_connect): error:x",
                    "1abcde-000000-AB TLS error on connection to mx2.example.net [192.0.2.2] (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1"), (0, "192.0.2.2")],
            ),
            // Two messages to one host: two failures.
            (
                &[
                    "1abcde-000000-AB TLS error on connection to mx.example.net [192.0.2.1] (SSL_connect): error:x",
                    "1abcdf-000000-AB TLS error on connection to mx.example.net [192.0.2.1] (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1"), (0, "192.0.2.1")],
            ),
            // A 4.8x callout (no message id): error, then the fallback.
            (
                &[
                    "H=mx.example.net [192.0.2.1] TLS error on connection (SSL_connect): error:x",
                    "TLS session failure: delivering unencrypted to mx.example.net [192.0.2.1] (not in hosts_require_tls)",
                ],
                &[(0, "192.0.2.1")],
            ),
            // A callout in current versions.
            (
                &[
                    "TLS session: (SSL_connect): error:x: callout unencrypted to mx.example.net [192.0.2.1] (not in hosts_require_tls)",
                ],
                &[(0, "192.0.2.1")],
            ),
            // A read error after the handshake: none.
            (
                &[
                    "1abcde-000000-AB H=mx.example.net [192.0.2.1] TLS error on connection (SSL_read): x",
                ],
                &[],
            ),
            // A callout not retried in clear (hosts_require_tls): the RCPT rejection.
            (
                &[
                    "H=c.example [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx.example.net [192.0.2.1] : TLS session: (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1")],
            ),
            // A DANE callout: the DANE line and the rejection are one attempt.
            (
                &[
                    "DANE attempt failed; TLS connection to mx.example.net [192.0.2.1]: (SSL_connect): error:x",
                    "H=c.example [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx.example.net [192.0.2.1] : TLS session: (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1")],
            ),
            // A DANE delivery: the DANE line and the `==` line are one attempt.
            (
                &[
                    "1abcde-000000-AB DANE attempt failed; TLS connection to mx.example.net [192.0.2.1]: (SSL_connect): error:x",
                    "1abcde-000000-AB == bob@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: TLS session: (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1")],
            ),
            // The same with two recipients: Exim writes a `==` line for each recipient of the
            // transport run; one attempt.
            (
                &[
                    "1abcde-000000-AB DANE attempt failed; TLS connection to mx.example.net [192.0.2.1]: (SSL_connect): error:x",
                    "1abcde-000000-AB == bob@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: TLS session: (SSL_connect): error:x",
                    "1abcde-000000-AB == carol@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: TLS session: (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1")],
            ),
            // Three recipients without a DANE line (hosts_require_tls), one of them by way of
            // an alias and routed by another router of the run: one attempt.
            (
                &[
                    "1abcde-000000-AB == bob@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: TLS session: (SSL_connect): error:x",
                    "1abcde-000000-AB == carol@example.net <team@example.org> R=aliases T=t defer (-37) H=mx.example.net [192.0.2.1]: TLS session: (SSL_connect): error:x",
                    "1abcde-000000-AB == dave@Example.NET R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: TLS session: (SSL_connect): error:x",
                ],
                &[(0, "192.0.2.1")],
            ),
            // hosts_require_tls (or DANE, or SMTPS), STARTTLS refused or not offered by each
            // host: transports/smtp.c smtp_transport_entry() logs `H=mx [ip]: ERROR` through
            // write_logs() for each host that defers (not for a failed handshake,
            // ERRNO_TLSFAILURE, nor a failed AUTH), and goes on to the next. The last host's
            // failure also ends in the run's `==` lines: one attempt with its `H=` line.
            (
                &[
                    "1abcde-000000-AB H=mx1.example.net [192.0.2.1]: a TLS session is required, but an attempt to start TLS failed",
                    "1abcde-000000-AB H=mx2.example.net [192.0.2.2]: a TLS session is required, but the server did not offer TLS support",
                    "1abcde-000000-AB == bob@example.net R=r T=t defer (-38) H=mx2.example.net [192.0.2.2]: a TLS session is required, but the server did not offer TLS support",
                    "1abcde-000000-AB == carol@example.net R=r T=t defer (-38) H=mx2.example.net [192.0.2.2]: a TLS session is required, but the server did not offer TLS support",
                ],
                &[(0, "192.0.2.1"), (0, "192.0.2.2")],
            ),
            // The first host refused STARTTLS, the second took the message over TLS.
            (
                &[
                    "1abcde-000000-AB H=mx1.example.net [192.0.2.1]: a TLS session is required, but an attempt to start TLS failed",
                    "1abcde-000000-AB => bob@example.net R=r T=t H=mx2.example.net [192.0.2.2] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 OK\"",
                ],
                &[(0, "192.0.2.1")],
            ),
            // `+outgoing_port` (write_logs() of 4.9x adds `:port`); the retry time is up: the
            // run's `==` line, then retry.c retry_update()'s `**` line, which names no host
            // (as in Exim's test/log/2012).
            (
                &[
                    "1abcde-000000-AB H=mx1.example.net [192.0.2.1]:25: a TLS session is required, but an attempt to start TLS failed",
                    "1abcde-000000-AB H=mx2.example.net [192.0.2.2]:25: a TLS session is required, but an attempt to start TLS failed",
                    "1abcde-000000-AB == bob@example.net R=r T=t defer (-38) H=mx2.example.net [192.0.2.2]:25: a TLS session is required, but an attempt to start TLS failed",
                    "1abcde-000000-AB ** bob@example.net: retry timeout exceeded",
                ],
                &[(0, "192.0.2.1"), (0, "192.0.2.2")],
            ),
            // Another error for a host (a refused connection, the remote's reply to STARTTLS
            // when not retried in clear): no failed STARTTLS of ours.
            (
                &[
                    "1abcde-000000-AB H=mx1.example.net [192.0.2.1] Connection refused",
                    "1abcde-000000-AB H=mx2.example.net [192.0.2.2]: SMTP error from remote mail server after STARTTLS: 454 4.7.0 TLS not available due to local problem",
                    "1abcde-000000-AB H=mx3.example.net [192.0.2.3]: a TLS session is required, but an attempt to start TLS failed",
                ],
                &[(0, "192.0.2.3")],
            ),
            // Later 4.8x, two recipients: the error and the `==` lines are one attempt.
            (
                &[
                    "1abcde-000000-AB H=mx.example.net [192.0.2.1] TLS error on connection (SSL_connect): error:x",
                    "1abcde-000000-AB == bob@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: failure while setting up TLS session",
                    "1abcde-000000-AB == carol@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.1]: failure while setting up TLS session",
                ],
                &[(0, "192.0.2.1")],
            ),
        ];
        for (lines, want) in cases {
            let mut p = EximParser::new();
            let mut out = Vec::new();
            for m in *lines {
                let line = Line {
                    time: 0,
                    host: "",
                    program: "exim",
                    pid: None,
                    message: m,
                    raw: m,
                };
                p.feed(&line, &mut out);
            }
            p.finish(&mut out);
            let got: Vec<(i64, String)> = out
                .iter()
                .filter_map(|r| match r {
                    Record::Anomaly(a)
                        if a.kind == AnomalyKind::StartTlsFailed
                            && a.direction == Direction::Outbound =>
                    {
                        Some((a.time, a.peer.ip.map(|i| i.to_string()).unwrap_or_default()))
                    }
                    _ => None,
                })
                .collect();
            let want: Vec<(i64, String)> = want.iter().map(|(t, a)| (*t, a.to_string())).collect();
            assert_eq!(got, want, "{lines:?}");
        }
    }

    /// How many failed STARTTLS attempts the parser lists for `lines` (time, pid, message).
    fn starttls_failures(lines: &[(i64, Option<u32>, &str)]) -> usize {
        failures_and_evicted(lines).0
    }

    /// [`starttls_failures`], and what the parser counts as [`MtaParser::evicted`].
    fn failures_and_evicted(lines: &[(i64, Option<u32>, &str)]) -> (usize, u64) {
        let mut p = EximParser::new();
        let mut out = Vec::new();
        for (time, pid, m) in lines {
            let line = Line {
                time: *time,
                host: "",
                program: "exim",
                pid: *pid,
                message: m,
                raw: m,
            };
            p.feed(&line, &mut out);
        }
        let listed = out
            .iter()
            .filter(|r| matches!(r, Record::Anomaly(a) if a.kind == AnomalyKind::StartTlsFailed))
            .count();
        (listed, p.evicted())
    }

    /// The same attempt's lines a second apart are one failure; further apart, or with
    /// another pid when there is no message id, two.
    #[test]
    fn failures_apart_in_time_or_process() {
        let count = starttls_failures;
        let err = "1abcde-000000-AB TLS error on connection to mx [192.0.2.1] (SSL_connect): x";
        let fallback = "1abcde-000000-AB TLS session failure: delivering unencrypted to mx [192.0.2.1] (not in hosts_require_tls)";
        assert_eq!(count(&[(10, None, err), (11, None, fallback)]), 1);
        assert_eq!(count(&[(10, None, err), (12, None, fallback)]), 2);
        // A delivery's lines come from the transport process and the delivery process.
        assert_eq!(count(&[(10, Some(1), err), (10, Some(2), fallback)]), 1);
        let callout = "TLS session: (SSL_connect): x: callout unencrypted to mx [192.0.2.1] (not in hosts_require_tls)";
        assert_eq!(count(&[(10, Some(1), callout), (10, Some(2), callout)]), 2);
        // Two outcome lines are two attempts, even in one second and without pids.
        assert_eq!(count(&[(10, None, callout), (10, None, callout)]), 2);
        // Newer Exim, one message meeting one host in two transport runs within a second
        // (`multi_domain = false`): one line an attempt, so two failures.
        let newer = "1abcde-000000-AB TLS session: (SSL_connect): error:x: delivering unencrypted to H=mx.example.net [192.0.2.1] (not in hosts_require_tls)";
        assert_eq!(count(&[(10, Some(1), newer), (10, Some(2), newer)]), 2);
        assert_eq!(count(&[(10, None, newer), (10, None, newer)]), 2);
        // An error line pairs with one outcome line only: a second outcome is another attempt.
        assert_eq!(
            count(&[(10, None, err), (10, None, fallback), (11, None, fallback)]),
            2
        );
        // A DANE callout's two lines: one attempt in one process within a second; two in two
        // processes, or further apart. Two rejections are two callouts.
        let dane = "DANE attempt failed; TLS connection to mx [192.0.2.1]: (SSL_connect): x";
        let rejected = "H=c [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx [192.0.2.1] : TLS session: (SSL_connect): x";
        assert_eq!(count(&[(10, Some(1), dane), (10, Some(1), rejected)]), 1);
        assert_eq!(count(&[(10, Some(1), dane), (10, Some(2), rejected)]), 2);
        assert_eq!(count(&[(10, None, dane), (12, None, rejected)]), 2);
        assert_eq!(count(&[(10, None, rejected), (10, None, rejected)]), 2);
        assert_eq!(
            count(&[
                (10, None, dane),
                (10, None, rejected),
                (10, None, dane),
                (10, None, rejected)
            ]),
            2
        );
    }

    /// A delivery not retried in clear: one `==` line per recipient of a transport run, one
    /// failure per run. Runs are told apart by domain, transport, error, process, more than
    /// a second since the run's previous line, and a recipient named again.
    #[test]
    fn recipients_of_one_transport_run() {
        let count = starttls_failures;
        let defer = |rcpt: &str, transport: &str, error: &str| {
            format!(
                "1abcde-000000-AB == {rcpt} R=dnslookup T={transport} defer (-37) H=mx.example.net [192.0.2.1]: {error}"
            )
        };
        let tls = "TLS session: (SSL_connect): error:x";
        let a1 = defer("ann@a.example", "t", tls);
        let a2 = defer("bob@a.example", "t", tls);
        let a3 = defer("cat@a.example", "t", tls);
        let b1 = defer("dan@b.example", "t", tls);
        let b2 = defer("eve@b.example", "t", tls);
        let a4 = defer("fay@a.example", "t", tls);
        let a5 = defer("gus@a.example", "t", tls);
        let dane = "1abcde-000000-AB DANE attempt failed; TLS connection to mx.example.net [192.0.2.1]: (SSL_connect): error:x";
        let one = |m: &str| (10, None, m.to_string());
        let run = |lines: &[(i64, Option<u32>, String)]| {
            let lines: Vec<_> = lines.iter().map(|(t, p, m)| (*t, *p, m.as_str())).collect();
            count(&lines)
        };
        // One run of two and of three recipients, with and without the DANE line.
        assert_eq!(run(&[one(&a1), one(&a2)]), 1);
        assert_eq!(run(&[one(&a1), one(&a2), one(&a3)]), 1);
        assert_eq!(run(&[one(dane), one(&a1), one(&a2)]), 1);
        assert_eq!(run(&[one(dane), one(&a1), one(&a2), one(&a3)]), 1);
        // With +pid: the delivery process writes them all.
        let pid = |p: u32, m: &str| (10, Some(p), m.to_string());
        assert_eq!(run(&[pid(7, &a1), pid(7, &a2), pid(7, &a3)]), 1);
        // Two runs of one message to one host (`multi_domain = false`: one run a domain), with
        // and without their DANE lines, these before the `==` lines (runs in parallel) or each
        // before its own: two attempts.
        assert_eq!(run(&[one(&a1), one(&a2), one(&b1), one(&b2)]), 2);
        assert_eq!(
            run(&[one(dane), one(dane), one(&a1), one(&a2), one(&b1), one(&b2)]),
            2
        );
        assert_eq!(
            run(&[one(dane), one(&a1), one(&a2), one(dane), one(&b1), one(&b2)]),
            2
        );
        // Another transport, another error, another process, another second: another run.
        let a2_other_transport = defer("bob@a.example", "t2", tls);
        assert_eq!(run(&[one(&a1), one(&a2_other_transport)]), 2);
        let a2_other_error = defer("bob@a.example", "t", "TLS session: (SSL_connect): error:y");
        assert_eq!(run(&[one(&a1), one(&a2_other_error)]), 2);
        assert_eq!(run(&[pid(7, &a1), pid(8, &a2)]), 2);
        // A run's lines straddling a second boundary (recipients 1-3 in one second, 4-5 in the
        // next), or each a second after the one before: one run. Two seconds after the run's
        // previous line: another run.
        let at = |t: i64, m: &str| (t, None, m.to_string());
        assert_eq!(run(&[one(&a1), at(11, &a2)]), 1);
        assert_eq!(
            run(&[one(&a1), one(&a2), one(&a3), at(11, &a4), at(11, &a5)]),
            1
        );
        assert_eq!(
            run(&[
                one(dane),
                one(&a1),
                one(&a2),
                one(&a3),
                at(11, &a4),
                at(11, &a5)
            ]),
            1
        );
        let pid_at = |t: i64, m: &str| (t, Some(7), m.to_string());
        assert_eq!(run(&[pid_at(10, &a1), pid_at(10, &a2), pid_at(11, &a3)]), 1);
        assert_eq!(run(&[one(&a1), at(11, &a2), at(12, &a3)]), 1);
        assert_eq!(run(&[one(&a1), at(12, &a2)]), 2);
        assert_eq!(run(&[one(&a1), one(&a2), at(13, &a3)]), 2);
        // Across the boundary the other tests still hold: another domain, another process.
        assert_eq!(run(&[one(&a1), one(&a2), at(11, &b1), at(11, &b2)]), 2);
        assert_eq!(run(&[pid_at(10, &a1), (11, Some(8), a2.clone())]), 2);
        // An address of the run named again, in the same second or the next: a second run.
        assert_eq!(run(&[one(&a1), one(&a2), one(&a1), one(&a2)]), 2);
        assert_eq!(run(&[one(&a1), one(&a1)]), 2);
        assert_eq!(run(&[one(&a1), one(&a2), one(&a2)]), 2);
        assert_eq!(run(&[one(&a1), one(&a2), at(11, &a1), at(11, &a2)]), 2);
        assert_eq!(run(&[one(&a1), one(&a2), at(11, &a3), at(11, &a2)]), 2);
        // A run of 300 recipients (`max_rcpt` raised), over two seconds: one attempt; the
        // message again in the next second, from its first address: a second. The run
        // remembers its first MAX_RUN_RECIPIENTS addresses only: a second attempt naming none
        // of those again, within a second, is taken for more of the run (a documented limit).
        let many: Vec<String> = (0..300)
            .map(|i| defer(&format!("u{i}@a.example"), "t", tls))
            .collect();
        let spread = |from: i64, addrs: &[String]| -> Vec<(i64, Option<u32>, String)> {
            addrs
                .iter()
                .enumerate()
                .map(|(i, m)| (from + i64::from(i >= 150), None, m.clone()))
                .collect()
        };
        assert_eq!(run(&spread(10, &many)), 1);
        let twice = [spread(10, &many), spread(12, &many)].concat();
        assert_eq!(run(&twice), 2);
        let past_the_cap = [spread(10, &many), spread(12, &many[260..])].concat();
        assert_eq!(run(&past_the_cap), 1);
        // A run's lines do not swallow the next message's.
        let other_message = a2.replace("1abcde-000000-AB", "1abcdf-000000-AB");
        assert_eq!(run(&[one(&a1), one(&other_message)]), 2);
        // Nor does a DANE line of a second run, written while the first run's lines are: the
        // first run's next recipient is still that run, the second run pairs with its line.
        assert_eq!(
            run(&[one(dane), one(&a1), one(dane), one(&a2), one(&b1), one(&b2)]),
            2
        );
        // One run over two domains with one host list (`multi_domain = true`, the default),
        // its addresses in the order given, domains interleaved: anchored by the line its
        // transport process wrote (a DANE line; an older version's `TLS error on connection
        // to` line before its `failure while setting up TLS session` lines; the host's `a TLS
        // session is required` line), one attempt. Two one-domain runs (`multi_domain =
        // false`) log one such line each: two, whether their `==` lines follow each its own
        // line or both lines (parallel runs; above). Without such a line, the lines of one
        // run over two domains read as two runs': two (the documented limit).
        assert_eq!(run(&[one(dane), one(&a1), one(&b1), one(&a2)]), 1);
        assert_eq!(
            run(&[one(dane), one(&a1), one(&b1), one(&a2), at(11, &b2)]),
            1
        );
        let err = "1abcde-000000-AB TLS error on connection to mx.example.net [192.0.2.1] (SSL_connect): x";
        let (old_a1, old_b1) = (
            defer("ann@a.example", "t", "failure while setting up TLS session"),
            defer("dan@b.example", "t", "failure while setting up TLS session"),
        );
        assert_eq!(run(&[one(err), one(&old_a1), one(&old_b1)]), 1);
        assert_eq!(run(&[one(err), one(&old_a1), one(err), one(&old_b1)]), 2);
        let required = "a TLS session is required, but the server did not offer TLS support";
        let host_line = format!("1abcde-000000-AB H=mx.example.net [192.0.2.1]: {required}");
        let (req_a1, req_b1) = (
            defer("ann@a.example", "t", required),
            defer("dan@b.example", "t", required),
        );
        assert_eq!(run(&[one(&host_line), one(&req_a1), one(&req_b1)]), 1);
        assert_eq!(
            run(&[one(&host_line), one(&req_a1), one(&host_line), one(&req_b1)]),
            2
        );
        assert_eq!(run(&[one(&a1), one(&b1), one(&a2)]), 3);
        // The documented limit the other way: a DANE run for a (a DNSSEC-signed MX), then a
        // run for b (`multi_domain = false`, its MX unsigned: no DANE, `hosts_require_tls`)
        // failing the handshake with the same error, which writes no line of its own: two
        // attempts read as one anchored run, 1. With `+dnssec` the DANE run's host reads
        // `H=mx DS [ip]`: routes differ, 2.
        assert_eq!(run(&[one(dane), one(&a1), one(&b1)]), 1);
        let ds_a1 = a1.replace("H=mx.example.net [", "H=mx.example.net DS [");
        assert_ne!(ds_a1, a1);
        assert_eq!(run(&[one(dane), one(&ds_a1), one(&b1)]), 2);
        // An anchored run still ends at another route, process or second, or an address named
        // again.
        assert_eq!(run(&[one(dane), one(&a1), at(12, &b1)]), 2);
        assert_eq!(run(&[one(dane), one(&a1), one(&a1)]), 2);
        let b1_other_error = defer("dan@b.example", "t", "TLS session: (SSL_connect): error:y");
        assert_eq!(run(&[one(dane), one(&a1), one(&b1_other_error)]), 2);
        assert_eq!(run(&[pid(7, dane), pid(7, &a1), pid(8, &b1)]), 2);
    }

    /// Two transport runs in parallel log their DANE lines in one second; the delivery process
    /// writes the second run's `==` lines once that run's process has ended, which can be
    /// more than a second later: still two attempts, up to [`DANE_OUTCOME_SECS`].
    #[test]
    fn dane_lines_wait_for_their_runs() {
        let count = starttls_failures;
        let defer = |rcpt: &str| {
            format!(
                "1abcde-000000-AB == {rcpt} R=dnslookup T=t defer (-37) H=mx.example.net [192.0.2.1]: TLS session: (SSL_connect): error:x"
            )
        };
        let (a1, a2) = (defer("ann@a.example"), defer("bob@a.example"));
        let (b1, b2) = (defer("dan@b.example"), defer("eve@b.example"));
        let dane = "1abcde-000000-AB DANE attempt failed; TLS connection to mx.example.net [192.0.2.1]: (SSL_connect): error:x";
        let two_runs = |second_run_at: i64| {
            count(&[
                (10, None, dane),
                (10, None, dane),
                (10, None, &a1),
                (10, None, &a2),
                (second_run_at, None, &b1),
                (second_run_at, None, &b2),
            ])
        };
        assert_eq!(two_runs(11), 2);
        assert_eq!(two_runs(12), 2);
        assert_eq!(two_runs(15), 2);
        // Later than that, the `==` lines are an attempt of their own.
        assert_eq!(two_runs(16), 3);
        // The first run's own lines a second or two after the DANE lines.
        assert_eq!(
            count(&[
                (10, None, dane),
                (10, None, dane),
                (11, None, &a1),
                (11, None, &a2),
                (13, None, &b1),
                (13, None, &b2),
            ]),
            2
        );
        // A DANE line pairs with one run only: the other runs are attempts of their own.
        let c1 = defer("cyd@c.example");
        assert_eq!(
            count(&[
                (10, None, dane),
                (10, None, &a1),
                (12, None, &b1),
                (12, None, &c1),
            ]),
            3
        );
        // Older versions' error line and its fallback line come from one process, one right
        // after the other: two seconds apart they are two attempts (as before).
        let err = "1abcde-000000-AB TLS error on connection to mx.example.net [192.0.2.1] (SSL_connect): x";
        let fallback = "1abcde-000000-AB TLS session failure: delivering unencrypted to mx.example.net [192.0.2.1] (not in hosts_require_tls)";
        assert_eq!(count(&[(10, None, err), (12, None, fallback)]), 2);
        // Nor does a DANE line wait longer for a fallback to clear, which DANE never makes:
        // one two seconds later is another run's attempt (a recipient domain whose MX is not
        // DNSSEC-signed, so not DANE), older versions' form or newer's.
        let newer_fallback = "1abcde-000000-AB TLS session: (SSL_connect): error:x: delivering unencrypted to H=mx.example.net [192.0.2.1] (not in hosts_require_tls)";
        assert_eq!(count(&[(10, None, dane), (12, None, newer_fallback)]), 2);
        assert_eq!(count(&[(10, None, dane), (15, None, fallback)]), 2);
        // A DANE run's `==` lines name the DANE line's error (`TLS session: ERROR`): one with
        // another error is another attempt, one that logged no DANE line (a
        // recipient domain not under DANE, STARTTLS not offered) while the DANE run went on
        // to another host. With `+outgoing_port` (`H=… [ip]:25: …`) the error still matches.
        let other = |rcpt: &str, error: &str| {
            defer(rcpt).replace("TLS session: (SSL_connect): error:x", error)
        };
        let other_error = other("zed@z.example", "TLS session: (SSL_connect): error:y");
        assert_eq!(count(&[(10, None, dane), (14, None, &other_error)]), 2);
        let not_offered = other(
            "zed@z.example",
            "a TLS session is required, but the server did not offer TLS support",
        );
        assert_eq!(count(&[(10, None, dane), (13, None, &not_offered)]), 2);
        let with_port = defer("zed@z.example").replace("[192.0.2.1]:", "[192.0.2.1]:25:");
        assert_eq!(count(&[(10, None, dane), (14, None, &with_port)]), 1);
        // Nor within a second: a DANE line pairs only with a line naming its error, at any
        // distance within its window; one with another error, `a TLS session is required`
        // (STARTTLS not offered: no DANE line is logged then) or a fallback to clear (DANE never
        // makes one) is another attempt, in the same second too, before or after the DANE line.
        assert_eq!(count(&[(10, None, dane), (10, None, &a1)]), 1);
        assert_eq!(count(&[(10, None, dane), (11, None, &other_error)]), 2);
        assert_eq!(count(&[(10, None, dane), (10, None, &other_error)]), 2);
        assert_eq!(count(&[(10, None, dane), (10, None, &not_offered)]), 2);
        assert_eq!(count(&[(10, None, dane), (10, None, newer_fallback)]), 2);
        assert_eq!(count(&[(10, None, dane), (11, None, newer_fallback)]), 2);
        assert_eq!(count(&[(10, None, dane), (10, None, fallback)]), 2);
        assert_eq!(count(&[(10, None, newer_fallback), (10, None, dane)]), 2);
        // A DANE line's own `==` lines come after it: one naming its error just before it is
        // another run's, and the DANE line still waits for its own.
        assert_eq!(count(&[(10, None, &a1), (10, None, dane)]), 2);
        assert_eq!(
            count(&[(10, None, &a1), (10, None, dane), (11, None, &b1)]),
            2
        );
        // Another attempt's line between a DANE line and its run's `==` lines (a run of the
        // message not under DANE ends first): two attempts, the DANE line still waiting.
        assert_eq!(
            count(&[
                (10, None, dane),
                (12, None, &other_error),
                (13, None, &a1),
                (13, None, &a2),
            ]),
            2
        );
        assert_eq!(
            count(&[
                (10, None, dane),
                (12, None, newer_fallback),
                (13, None, &a1),
                (13, None, &a2),
            ]),
            2
        );
        // Parallel runs each log their DANE line before any run's `==` lines: up to
        // MAX_WAITING lines wait, so 16 runs count 16; a 17th drops the oldest, counted as
        // evicted. Runs of one domain each (`multi_domain = false`) within a second read as
        // one run over all the domains, anchored by the first DANE line left: 17, every DANE
        // line listed. Runs that name one address each (a second attempt each, as an address
        // named again starts a new run) pair one by one, and the last one's `==` line, whose
        // DANE line was dropped, is listed on its own (the documented limit: 18, not 17, an
        // over-count of at most the one line evicted).
        let runs = |n: usize, rcpt: &dyn Fn(usize) -> String| {
            let lines: Vec<String> = (0..n).map(|i| defer(&rcpt(i))).collect();
            let mut v: Vec<(i64, Option<u32>, &str)> = vec![(10, None, dane); n];
            v.extend(lines.iter().map(|l| (11, None, l.as_str())));
            failures_and_evicted(&v)
        };
        let domains = |i: usize| format!("u@d{i}.example");
        let same = |_: usize| "ann@a.example".to_string();
        assert_eq!(runs(MAX_WAITING, &domains), (MAX_WAITING, 0));
        assert_eq!(runs(MAX_WAITING, &same), (MAX_WAITING, 0));
        assert_eq!(runs(MAX_WAITING + 1, &domains), (MAX_WAITING + 1, 1));
        assert_eq!(runs(MAX_WAITING + 1, &same), (MAX_WAITING + 2, 1));
        // Lines already out of their window are dropped before the cap is looked at: 16
        // DANE lines, 6 s later 16 more and their runs, count 32, nothing evicted.
        let late: Vec<String> = (0..MAX_WAITING)
            .map(|i| {
                defer(&format!("u{i}@a.example")).replace("a.example", &format!("d{i}.example"))
            })
            .collect();
        let mut v: Vec<(i64, Option<u32>, &str)> = vec![(10, None, dane); MAX_WAITING];
        v.extend(vec![(16, None, dane); MAX_WAITING]);
        v.extend(late.iter().map(|l| (16, None, l.as_str())));
        assert_eq!(failures_and_evicted(&v), (2 * MAX_WAITING, 0));
        // At most MAX_TLS_FAILURES attempt keys are kept, the least recently seen dropped
        // first: a DANE line whose key went (that many other messages' failures since) leaves
        // its `==` line to be listed on its own (documented). Each dropped key's lines still in
        // their window count as evicted: the DANE line, and when the `==` line comes back for
        // its key, the oldest other message's DANE line. So the over-count (1) is at most
        // what is evicted (2).
        let others = |n: usize, then: &str| {
            let lines: Vec<String> = (0..n)
                .map(|i| dane.replace("1abcde-000000-AB", &format!("2{i:05}-000000-AB")))
                .collect();
            let mut v: Vec<(i64, Option<u32>, &str)> = vec![(10, None, dane)];
            v.extend(lines.iter().map(|l| (10, None, l.as_str())));
            v.push((11, None, then));
            failures_and_evicted(&v)
        };
        assert_eq!(others(MAX_TLS_FAILURES - 1, &a1), (MAX_TLS_FAILURES, 0));
        assert_eq!(others(MAX_TLS_FAILURES, &a1), (MAX_TLS_FAILURES + 2, 2));
        // Long after their windows, dropping keys is no loss: nothing is evicted.
        let others_later = |n: usize| {
            let lines: Vec<String> = (0..n)
                .map(|i| dane.replace("1abcde-000000-AB", &format!("2{i:05}-000000-AB")))
                .collect();
            let mut v: Vec<(i64, Option<u32>, &str)> = vec![(10, None, dane)];
            v.extend(lines.iter().map(|l| (20, None, l.as_str())));
            failures_and_evicted(&v)
        };
        assert_eq!(others_later(MAX_TLS_FAILURES), (MAX_TLS_FAILURES + 1, 0));
        // A run dropped with its key while its lines still come: its next recipient's line is
        // listed as a run of its own. Evicted: the run and its first line (which waits a
        // second for an older version's error line), and the oldest other DANE line, dropped
        // when the key came back.
        let run_then_others = |n: usize| {
            let lines: Vec<String> = (0..n)
                .map(|i| dane.replace("1abcde-000000-AB", &format!("2{i:05}-000000-AB")))
                .collect();
            let mut v: Vec<(i64, Option<u32>, &str)> = vec![(10, None, &a1)];
            v.extend(lines.iter().map(|l| (10, None, l.as_str())));
            v.push((10, None, &a2));
            failures_and_evicted(&v)
        };
        assert_eq!(run_then_others(MAX_TLS_FAILURES - 1), (MAX_TLS_FAILURES, 0));
        assert_eq!(run_then_others(MAX_TLS_FAILURES), (MAX_TLS_FAILURES + 2, 3));
        // An anchored run (over two domains, its first line paired with its DANE line) dropped
        // with its key while its lines still come: its next line starts a run of its own,
        // unanchored, so each further change of domain is listed again, as for a run whose own
        // line the log lacks. 1 + 1,024 attempts, listed 1 + 1,024 + 3, evicted 2 (the run,
        // and the oldest other DANE line when the key came back): the over-count passes what
        // is evicted by the changes of domain after the drop (documented).
        let anchored_then_others = |n: usize| {
            let lines: Vec<String> = (0..n)
                .map(|i| dane.replace("1abcde-000000-AB", &format!("2{i:05}-000000-AB")))
                .collect();
            let mut v: Vec<(i64, Option<u32>, &str)> = vec![(10, None, dane), (10, None, &a1)];
            v.extend(lines.iter().map(|l| (10, None, l.as_str())));
            v.extend([(10, None, b1.as_str()), (10, None, &a2), (10, None, &b2)]);
            failures_and_evicted(&v)
        };
        assert_eq!(
            anchored_then_others(MAX_TLS_FAILURES - 1),
            (MAX_TLS_FAILURES, 0)
        );
        assert_eq!(
            anchored_then_others(MAX_TLS_FAILURES),
            (MAX_TLS_FAILURES + 4, 2)
        );
        // A callout's DANE line and its rejection come from the process serving the session,
        // one right after the other: two seconds apart they are two attempts too.
        let callout_dane =
            "DANE attempt failed; TLS connection to mx [192.0.2.1]: (SSL_connect): x";
        let rejected = "H=c [198.51.100.7] F=<a@example.org> temporarily rejected RCPT <b@example.net>: Could not complete recipient verify callout: mx [192.0.2.1] : TLS session: (SSL_connect): x";
        assert_eq!(
            count(&[(10, Some(1), callout_dane), (12, Some(1), rejected)]),
            2
        );
        // Within a second it pairs only with a rejection naming its error: not with another
        // error's, nor with a callout's fallback to clear (a callout to a DANE host is not
        // retried in clear either: verify.c sets its connection up with smtp_setup_conn()).
        assert_eq!(
            count(&[(10, Some(1), callout_dane), (10, Some(1), rejected)]),
            1
        );
        let rejected_other = rejected.replace("(SSL_connect): x", "(SSL_connect): y");
        assert_eq!(
            count(&[(10, Some(1), callout_dane), (10, Some(1), &rejected_other)]),
            2
        );
        let callout_fallback = "TLS session: (SSL_connect): x: callout unencrypted to mx [192.0.2.1] (not in hosts_require_tls)";
        assert_eq!(
            count(&[(10, Some(1), callout_dane), (10, Some(1), callout_fallback)]),
            2
        );
    }

    /// A host's `H=mx [ip]: a TLS session is required, but …` line (smtp.c write_logs(), written
    /// by the transport process for every host whose STARTTLS was refused or not offered)
    /// waits for the outcome lines of its run, which the delivery process writes once the
    /// transport process has ended: a `==`/`**` line naming the same error pairs with it up
    /// to [`DANE_OUTCOME_SECS`] later, as a DANE line's does. Nothing else pairs with it.
    #[test]
    fn host_lines_wait_for_their_runs() {
        let count = starttls_failures;
        let host_line = |ip: &str, why: &str| {
            format!(
                "1abcde-000000-AB H=mx.example.net [{ip}]: a TLS session is required, but {why}"
            )
        };
        let failed = "an attempt to start TLS failed";
        let not_offered = "the server did not offer TLS support";
        let defer = |rcpt: &str, why: &str| {
            format!(
                "1abcde-000000-AB == {rcpt} R=dnslookup T=t defer (-38) H=mx.example.net [192.0.2.1]: a TLS session is required, but {why}"
            )
        };
        let h1 = host_line("192.0.2.1", failed);
        let (a1, a2) = (
            defer("ann@a.example", failed),
            defer("bob@a.example", failed),
        );
        let at = |t: i64, m: &str| (t, None, m.to_string());
        let run = |lines: &[(i64, Option<u32>, String)]| {
            let lines: Vec<_> = lines.iter().map(|(t, p, m)| (*t, *p, m.as_str())).collect();
            count(&lines)
        };
        // The run's `==` lines in the same second or up to 5 s later: one attempt; later, two.
        assert_eq!(run(&[at(10, &h1), at(10, &a1), at(10, &a2)]), 1);
        assert_eq!(run(&[at(10, &h1), at(15, &a1), at(15, &a2)]), 1);
        assert_eq!(run(&[at(10, &h1), at(16, &a1), at(16, &a2)]), 2);
        // A host line alone: the run went on to the next host.
        assert_eq!(run(&[at(10, &h1)]), 1);
        // Two host lines with one host (two runs of the message, `multi_domain = false`), then
        // each run's `==` lines: two attempts.
        let b1 = defer("dan@b.example", failed);
        assert_eq!(
            run(&[
                at(10, &h1),
                at(10, &h1),
                at(11, &a1),
                at(11, &a2),
                at(12, &b1)
            ]),
            2
        );
        // A `==` line naming the other reason, or a handshake error, is another attempt's.
        let a1_not_offered = defer("ann@a.example", not_offered);
        assert_eq!(run(&[at(10, &h1), at(10, &a1_not_offered)]), 2);
        let a1_handshake = a1.replace(
            "a TLS session is required, but an attempt to start TLS failed",
            "TLS session: (SSL_connect): error:x",
        );
        assert_eq!(run(&[at(10, &h1), at(10, &a1_handshake)]), 2);
        // A `==` line before the host line is another run's: the host line waits for its own.
        assert_eq!(run(&[at(10, &a1), at(10, &h1), at(12, &b1)]), 2);
        // Another host's `==` line does not pair with it.
        let other_host = a1.replace("[192.0.2.1]", "[192.0.2.9]");
        assert_eq!(run(&[at(10, &h1), at(10, &other_host)]), 2);
        // Nor a fallback to clear, or older versions' handshake error, in the same second.
        let fallback = "1abcde-000000-AB TLS session: (SSL_connect): error:x: delivering unencrypted to H=mx.example.net [192.0.2.1] (not in hosts_require_tls)";
        assert_eq!(run(&[at(10, &h1), at(10, fallback)]), 2);
        assert_eq!(run(&[at(10, fallback), at(10, &h1)]), 2);
        let err = "1abcde-000000-AB TLS error on connection to mx.example.net [192.0.2.1] (SSL_connect): x";
        assert_eq!(run(&[at(10, err), at(10, &h1)]), 2);
        // A DANE host: smtp_setup_conn() logs `DANE attempt failed; …` only for a failed
        // handshake (TLS_CONN_FAILED, ERRNO_TLSFAILURE), which write_logs() does not log; a
        // STARTTLS refused or not offered logs no DANE line. So a DANE line and a host line
        // are two attempts, and the DANE line still pairs with its own `==` line.
        let dane = "1abcde-000000-AB DANE attempt failed; TLS connection to mx.example.net [192.0.2.1]: (SSL_connect): error:x";
        assert_eq!(run(&[at(10, dane), at(10, &h1)]), 2);
        assert_eq!(
            run(&[
                at(10, dane),
                at(10, &h1),
                at(11, &a1_handshake),
                at(11, &a1)
            ]),
            2
        );
    }

    /// A `==`/`**` line (after the message id) and whether it lists a failed STARTTLS: only
    /// when its error, right after `H=host [ip]` (`:port`, `*`) and the host's other fields,
    /// is one that transports/smtp.c sets on the run's addresses when its own TLS set-up with
    /// the host failed; not a remote server's reply that merely mentions TLS.
    #[test]
    fn delivery_lines_name_our_tls_failures_only() {
        let cases: &[(&str, usize)] = &[
            // Exim's own: `TLS session: ERROR` (smtp_setup_conn() at TLS_CONN_FAILED).
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-37) H=mx.b.example [192.0.2.7]: TLS session: (SSL_connect): error:0A000086:SSL routines::certificate verify failed",
                1,
            ),
            // `+outgoing_port`, a continued connection.
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-37) H=mx.b.example [192.0.2.7]:25: TLS session: (SSL_connect): error:x",
                1,
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-37) H=mx.b.example [192.0.2.7]*: TLS session: (SSL_connect): error:x",
                1,
            ),
            // A `**` line (deliver.c failure_log() writes the host's other fields before the
            // error): GnuTLS's `error on first read` after the handshake, with X=, CV=, DN=.
            (
                "** bob@b.example R=dnslookup T=remote_smtp H=mx.b.example [192.0.2.7] X=TLS1.3:ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM:256 CV=no DN=\"CN=mx.b.example: test\": TLS session: error on first read",
                1,
            ),
            (
                "** bob@b.example R=dnslookup T=remote_smtp H=mx.b.example DS [192.0.2.7] TFO: TLS session: (SSL_connect): error:x",
                1,
            ),
            // STARTTLS refused or not offered by a host that must use TLS (hosts_require_tls,
            // DANE): ERRNO_TLSREQUIRED, and the older forms.
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-38) H=mx.b.example [192.0.2.7]: a TLS session is required, but the server did not offer TLS support",
                1,
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-38) H=mx.b.example [192.0.2.7]: a TLS session is required, but an attempt to start TLS failed",
                1,
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-37) H=mx.b.example [192.0.2.7]: failure while setting up TLS session",
                1,
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-38) H=mx.b.example [192.0.2.7]: a TLS session is required for mx.b.example [192.0.2.7], but the server did not offer TLS support",
                1,
            ),
            // The remote server's own reply, over a session that may well have been
            // encrypted: not our STARTTLS failing.
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-44) H=mx.b.example [192.0.2.7]: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 450 4.7.1 TLS session required by policy",
                0,
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-44) H=mx.b.example [192.0.2.7]:25*: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 451 4.7.0 a TLS session is required, but none is active",
                0,
            ),
            (
                "** bob@b.example R=dnslookup T=remote_smtp H=mx.b.example [192.0.2.7] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes: SMTP error from remote mail server after end of data: 554 5.7.1 TLS session: policy violation",
                0,
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-46) H=mx.b.example [192.0.2.7]: SMTP error from remote mail server after MAIL FROM:<a@a.example> SIZE=1234: 421 4.7.0 failure while setting up TLS session, try later",
                0,
            ),
            // No error after the host: nothing to read.
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-37) H=mx.b.example [192.0.2.7] TLS session",
                0,
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-37): TLS session: x H=mx.b.example [192.0.2.7]",
                0,
            ),
        ];
        let wrong: Vec<(&str, usize)> = cases
            .iter()
            .filter_map(|(rest, want)| {
                let line = format!("1abcde-000000-AB {rest}");
                let got = starttls_failures(&[(10, None, &line)]);
                (got != *want).then_some((*rest, got))
            })
            .collect();
        assert!(wrong.is_empty(), "listed otherwise: {wrong:#?}");
    }

    #[test]
    fn protocols() {
        let cases = [
            ("esmtps", Proto::Tls),
            ("esmtpsa", Proto::Tls),
            ("utf8esmtps", Proto::Tls),
            // TLS on connect (smtp_in.c protocols[], `ponconn`): HELO, EHLO, EHLO and AUTH.
            ("ssmtp", Proto::Tls),
            ("essmtp", Proto::Tls),
            ("essmtpa", Proto::Tls),
            ("utf8essmtpa", Proto::Tls),
            ("esmtp", Proto::Plain),
            ("esmtpa", Proto::Plain),
            ("smtp", Proto::Plain),
            ("local", Proto::Local),
            ("local-esmtp", Proto::Local),
            ("spam-scanned", Proto::Other),
        ];
        for (p, want) in cases {
            assert_eq!(classify_proto(p), want, "{p}");
        }
    }

    /// Sessions opened by a daemon that logs pids and never claimed (no line of their
    /// process follows), spread over many addresses: the parser holds no more than
    /// [`MAX_UNCLAIMED`] of them in all, nor [`MAX_UNCLAIMED_PER_PEER`] of one address, and
    /// counts every one it drops as evicted.
    #[test]
    fn unclaimed_sessions_are_capped_in_all() {
        const ADDRESSES: u32 = 2_048;
        const ROUNDS: u32 = 80;
        let mut p = EximParser::new();
        let mut out = Vec::new();
        let mut fed = 0u64;
        let mut most = 0;
        for round in 0..ROUNDS {
            for a in 0..ADDRESSES {
                let m = format!(
                    "SMTP connection from [10.0.{}.{}] (TCP/IP connection count = 1)",
                    a / 256,
                    a % 256
                );
                let line = Line {
                    time: i64::from(round),
                    host: "",
                    program: "exim",
                    pid: Some(1000),
                    message: &m,
                    raw: &m,
                };
                p.feed(&line, &mut out);
                fed += 1;
                most = most.max(p.unclaimed_sessions());
            }
        }
        assert!(out.is_empty(), "{out:?}");
        assert!(most <= MAX_UNCLAIMED, "held {most}");
        assert!(
            p.unclaimed
                .values_mut()
                .all(|l| l.len() <= MAX_UNCLAIMED_PER_PEER),
            "an address holds more than its cap"
        );
        let held = p.unclaimed_sessions() as u64;
        assert!(p.evicted() > 0);
        p.finish(&mut out);
        assert_eq!(
            out.len() as u64,
            held,
            "every session held is emitted at the end"
        );
        assert_eq!(held + p.evicted(), fed, "every session dropped is counted");
        assert_eq!(p.unclaimed_sessions(), 0);
    }

    /// A connect-ACL rejection ends its session, whether or not `+dnssec` marks the client's
    /// DNSSEC-secured reverse lookup. smtp_in.c `smtp_handle_acl_fail()` glues ` DS` to
    /// `host_and_ident()`'s `H=` (` DSH=mx [ip] …`; `DSH=…` once a syslog daemon took the space
    /// as its separator); the session then keeps the host's name and the rejection's transport
    /// (plain, or TLS with `X=` on a TLS-on-connect port). Any other word glued to `H=` is no
    /// rejection line: its session is left open (emitted at the end, transport unknown).
    #[test]
    fn dnssec_marked_acl_rejections_close_their_session() {
        /// rejection line, the open line's address part, name and transport of the session
        type AclCase = (
            &'static str,
            &'static str,
            Option<&'static str>,
            &'static str,
        );
        let cases: &[AclCase] = &[
            (
                "H=mx.d.example [192.0.2.5] rejected connection in \"connect\" ACL: listed",
                "[192.0.2.5]",
                Some("mx.d.example"),
                "plain",
            ),
            (
                " DSH=mx.d.example [192.0.2.5] rejected connection in \"connect\" ACL: listed",
                "[192.0.2.5]",
                Some("mx.d.example"),
                "plain",
            ),
            (
                "DSH=mx.d.example [192.0.2.5] temporarily rejected connection in \"connect\" ACL",
                "[192.0.2.5]",
                Some("mx.d.example"),
                "plain",
            ),
            (
                " DSH=mx.d.example (helo) [2001:db8::5]:4567 rejected connection in \"connect\" ACL",
                "[2001:db8::5]:4567",
                Some("mx.d.example"),
                "plain",
            ),
            (
                " DSH=mx.d.example [192.0.2.5] X=TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256 CV=no rejected connection in \"connect\" ACL",
                "[192.0.2.5]",
                Some("mx.d.example"),
                "tls",
            ),
            // Not the mark: the session stays open.
            (
                " DSXH=mx.d.example [192.0.2.5] rejected connection in \"connect\" ACL",
                "[192.0.2.5]",
                None,
                "unknown",
            ),
            (
                "DS H=mx.d.example [192.0.2.5] rejected connection in \"connect\" ACL",
                "[192.0.2.5]",
                None,
                "unknown",
            ),
        ];
        for (rejection, addr, name, transport) in cases {
            let got: Vec<_> = session_after(addr, rejection)
                .into_iter()
                .map(|(host, t, time)| (host, transport_word(&t, false), time))
                .collect();
            assert_eq!(
                got,
                [(name.map(str::to_owned), *transport, 10)],
                "{rejection}"
            );
        }
    }

    /// The connection records of a session opened from `addr` at time 10 that gets `line`
    /// at time 11, then the end of input: (host name, transport, time) each.
    fn session_after(addr: &str, line: &str) -> Vec<(Option<String>, Transport, UnixTime)> {
        let mut p = EximParser::new();
        let mut out = Vec::new();
        let open = format!("SMTP connection from {addr} (TCP/IP connection count = 1)");
        for (time, m) in [(10, open.as_str()), (11, line)] {
            let line = Line {
                time,
                host: "",
                program: "exim",
                pid: None,
                message: m,
                raw: m,
            };
            p.feed(&line, &mut out);
        }
        p.finish(&mut out);
        out.into_iter()
            .filter_map(|r| match r {
                Record::Connection(c) => Some((
                    c.peer.hostname.as_deref().map(str::to_owned),
                    c.transport,
                    c.time,
                )),
                _ => None,
            })
            .collect()
    }

    /// `tls`, `plain` or `unknown`; with `drop_apart`, `unknown` only for a session a
    /// TLS-on-connect drop ended ([`HINT_TLS_ON_CONNECT_DROP`]) and `unknown-open` for any
    /// other unknown one (still open at the end of input).
    fn transport_word(t: &Transport, drop_apart: bool) -> &'static str {
        match t {
            Transport::Tls(_) => "tls",
            Transport::Plain => "plain",
            Transport::Unknown { hint } if drop_apart && *hint != HINT_TLS_ON_CONNECT_DROP => {
                "unknown-open"
            }
            Transport::Unknown { .. } => "unknown",
        }
    }

    /// On a TLS-on-connect port current Exim runs the connect ACL before the TLS handshake and,
    /// when it denies, smtp_in.c `log_connect_tls_drop()` writes `[ DS]H=host [ip] dropped by
    /// 'connect' ACL[: MESSAGE]` (`NULL` glued on when the ACL set no log message: `%s` of a
    /// null pointer) instead of the `rejected connection` line; no handshake took place, so
    /// the session ends there, neither TLS nor in clear: unknown. An `X=`, which that line
    /// cannot carry (no TLS yet), would still be read as TLS. Not the drop: another `what`.
    #[test]
    fn tls_on_connect_drops_close_their_session() {
        /// drop line, the open line's address part, name and transport of the session
        type DropCase = (
            &'static str,
            &'static str,
            Option<&'static str>,
            &'static str,
        );
        let cases: &[DropCase] = &[
            (
                "H=[192.0.2.6] dropped by 'connect' ACL: we dislike you",
                "[192.0.2.6]",
                None,
                "unknown",
            ),
            (
                "H=mx.e.example [192.0.2.6] dropped by 'connect' ACLNULL",
                "[192.0.2.6]",
                Some("mx.e.example"),
                "unknown",
            ),
            (
                " DSH=mx.e.example (helo) [2001:db8::6]:4567 dropped by 'connect' ACL: listed",
                "[2001:db8::6]:4567",
                Some("mx.e.example"),
                "unknown",
            ),
            (
                "DSH=mx.e.example [192.0.2.6] dropped by 'connect' ACL",
                "[192.0.2.6]",
                Some("mx.e.example"),
                "unknown",
            ),
            (
                "H=mx.e.example [192.0.2.6] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no dropped by 'connect' ACL",
                "[192.0.2.6]",
                Some("mx.e.example"),
                "tls",
            ),
            // `+incoming_interface`: host_and_ident() writes ` I=[ip]:port` after the host.
            (
                "H=[192.0.2.6]:4567 I=[192.0.2.1]:465 dropped by 'connect' ACL: listed",
                "[192.0.2.6]:4567",
                None,
                "unknown",
            ),
            // Not the drop: the words quoted by a later line of the session, in the sender
            // a client gave (a quoted local part may hold spaces) or a junk HELO name
            // (helo_accept_junk_hosts), are no drop or rejection: the session stays open.
            (
                "H=(helo) [192.0.2.6] F=<\"x X=TLS1.3:TLS_AES_256_GCM_SHA384:256 dropped by 'connect' ACL\"@e.example> rejected RCPT <u@x.example>: relay not permitted",
                "[192.0.2.6]",
                None,
                "unknown-open",
            ),
            (
                "H=(x rejected connection in \"connect\" ACL) [192.0.2.6] F=<a@e.example> rejected RCPT <u@x.example>: relay not permitted",
                "[192.0.2.6]",
                None,
                "unknown-open",
            ),
            (
                "H=(x dropped by 'connect' ACL) [192.0.2.6] F=<a@e.example> rejected RCPT <u@x.example>: relay not permitted",
                "[192.0.2.6]",
                None,
                "unknown-open",
            ),
            // Nor the words in a HELO name a rejection quotes after an ident (`U=`, whose
            // value may hold spaces): `rejected` is no ident word.
            (
                "H=[192.0.2.6] U=john rejected EHLO or HELO x dropped by 'connect' ACL: bad helo",
                "[192.0.2.6]",
                None,
                "unknown-open",
            ),
            // Not the drop: the session stays open (emitted at the end, no name).
            (
                "H=mx.e.example [192.0.2.6] dropped by 'mail' ACL",
                "[192.0.2.6]",
                None,
                "unknown-open",
            ),
        ];
        for (drop, addr, name, transport) in cases {
            let got: Vec<_> = session_after(addr, drop)
                .into_iter()
                .map(|(host, t, time)| (host, transport_word(&t, true), time))
                .collect();
            assert_eq!(got, [(name.map(str::to_owned), *transport, 10)], "{drop}");
        }
    }

    /// Every field Exim may write between the host and the outcome of a connect-ACL line:
    /// host.c host_and_ident() ` I=[ip]:port` (`+incoming_interface`) and ` U=ident` (the
    /// RFC 1413 answer, verify.c `verify_get_ident()`: the rest of the ident reply's line
    /// through string_printing(), so spaces stay), then smtp_in.c add_tls_info_for_log()
    /// ` X=cipher[*]` (`*`: `+tls_resumption`), ` CV=`, ` DN="…"` and ` SNI=` (the 4.9x
    /// s_tlslog() quoted it: ` SNI="…"`, through string_printing(), spaces kept), with and
    /// without ` DS` and a port (Exim/exim src/src/smtp_in.c smtp_handle_acl_fail(),
    /// log_connect_tls_drop(), current and 4.9x). Each combination closes its session,
    /// named, as TLS when an `X=` is there, else plaintext (a rejection) or unknown (a drop).
    #[test]
    fn connect_acl_lines_with_every_host_field_close_their_session() {
        let interfaces = ["", " I=[192.0.2.1]:465"];
        let idents = ["", " U=postmaster", " U=john q smith"];
        let tls_fields = [
            "",
            " X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes",
            " X=TLS1.3:TLS_AES_256_GCM_SHA384:256* CV=no DN=\"/CN=client.example/O=Example Org\" SNI=mx.e.example",
            " X=TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256 CV=no DN=\"CN=client.example,O=Example Org\" SNI=\"mx.e.example\"",
            " X=TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256 CV=no SNI=\"a client name\"",
        ];
        let outcomes = [
            (" rejected connection in \"connect\" ACL: listed", "plain"),
            (
                " temporarily rejected connection in \"connect\" ACL",
                "plain",
            ),
            (" dropped by 'connect' ACL: we dislike you", "unknown"),
            (" dropped by 'connect' ACLNULL", "unknown"),
        ];
        let hosts = [
            ("", "mx.e.example [192.0.2.6]", "[192.0.2.6]"),
            (
                " DS",
                "mx.e.example [2001:db8::6]:4567",
                "[2001:db8::6]:4567",
            ),
        ];
        let mut failed = Vec::new();
        for (ds, host, addr) in hosts {
            for i in interfaces {
                for u in idents {
                    for x in tls_fields {
                        for (outcome, clear) in outcomes {
                            let m = format!("{ds}H={host}{i}{u}{x}{outcome}");
                            let want = if x.is_empty() { clear } else { "tls" };
                            let got: Vec<_> = session_after(addr, &m)
                                .into_iter()
                                .map(|(host, t, _)| (host, transport_word(&t, true)))
                                .collect();
                            if got != [(Some("mx.e.example".to_owned()), want)] {
                                failed.push(format!("{m}\n    -> {got:?}"));
                            }
                        }
                    }
                }
            }
        }
        assert!(
            failed.is_empty(),
            "{}:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }

    /// A long line of `H=` tokens (garbage, or text quoted from elsewhere) is read in time
    /// linear in its length: only its first `H=` is parsed as a host. parse_host() looks as
    /// far as the end of the line for the `) [` after a HELO name, so parsing every `H=(a)`
    /// token as a host scanned the rest of the line each time: a 64 KiB line (the longest
    /// read) took over ten seconds in a debug build, 0.02 s now. No clock is asserted (wall
    /// times vary with the machine); what is asserted is that the first `H=` is the host and
    /// the line yields its one record.
    #[test]
    fn many_host_fields_are_read_in_linear_time() {
        let mut fields = String::from("H=mx.example.net [192.0.2.1] P=esmtp S=10");
        while fields.len() < 64 * 1024 - 32 {
            fields.push_str(" H=(a)");
        }
        let f = parse_fields(&fields);
        let host = f.host.unwrap_or_default();
        assert_eq!(host.ip, "192.0.2.1".parse().ok());
        assert_eq!(host.name, Some("mx.example.net"));
        assert!(!f.host_bad);
        assert_eq!(f.size, Some(10));
        let received = format!("1abcde-000000-AB <= a@b.example {fields}");
        let mut p = EximParser::new();
        let mut out = Vec::new();
        let line = Line {
            time: 0,
            host: "",
            program: "exim",
            pid: None,
            message: &received,
            raw: &received,
        };
        p.feed(&line, &mut out);
        p.finish(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    /// A `==`/`**` line's fields end where its error starts: a remote's reply quoted there
    /// (`SMTP error from remote mail server after …: REPLY`, whatever the reply says) names
    /// neither the session's TLS (`X=`, `CV=`) nor the transport (`T=`, which keys the
    /// outbound connection). Before, every token of the reply was read as a field: a bounce
    /// whose reply held `X=1` was recorded as TLS (its connection too) and counted unparsed.
    /// Rows: the line after the message id, and the transport of its record and of its
    /// connection (`tls`, `unknown`).
    #[test]
    fn delivery_line_fields_end_at_the_error() {
        let cases: &[(&str, &str)] = &[
            (
                "** bob@b.example R=dnslookup T=remote_smtp H=mx.b.example [192.0.2.7]: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 550 5.7.1 <bob@b.example>: X=1 policy",
                "unknown",
            ),
            (
                "== bob@b.example R=dnslookup T=remote_smtp defer (-44) H=mx.b.example [192.0.2.7]: SMTP error from remote mail server after RCPT TO:<bob@b.example>: 451 4.7.1 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes",
                "unknown",
            ),
            // The session's own X= and CV= (before the error) still count, the reply's not.
            (
                "** bob@b.example R=dnslookup T=remote_smtp H=mx.b.example [192.0.2.7] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes DN=\"CN=mx: b\": SMTP error from remote mail server after end of data: 550 5.7.1 CV=no X=bad",
                "tls",
            ),
        ];
        for (rest, want) in cases {
            let m = format!("1abcde-000000-AB {rest}");
            let mut p = EximParser::new();
            let mut out = Vec::new();
            let line = Line {
                time: 0,
                host: "",
                program: "exim",
                pid: None,
                message: &m,
                raw: &m,
            };
            p.feed(&line, &mut out);
            p.finish(&mut out);
            let kind = |t: &Transport| match t {
                Transport::Tls(info) => {
                    assert_eq!(info.trust, Some(Trust::Verified), "{rest}");
                    "tls"
                }
                Transport::Unknown { .. } => "unknown",
                _ => "plain",
            };
            let got: Vec<&str> = out
                .iter()
                .filter_map(|r| match r {
                    Record::Message(m) => Some(kind(&m.transport)),
                    Record::Connection(c) => Some(kind(&c.transport)),
                    _ => None,
                })
                .collect();
            assert_eq!(got, [*want, *want], "{rest}");
            assert_eq!(p.unparsed(), 0, "{rest}");
        }
    }
}
