//! Postfix: line parser and correlator. It joins smtpd sessions (by host, program and pid) to
//! their queue ids and qmgr lines, and smtp/lmtp deliveries to their TLS connection.
//!
//! # What is emitted
//!
//! - **Inbound** (`smtpd`): one [`MessageRecord`] per queue id (`QID: client=…`), emitted once
//!   qmgr has logged `from=<…>, size=N, nrcpt=N` and the session's transport is known; one
//!   [`ConnectionRecord`] per session, at `disconnect` (`messages` = queue ids in it).
//!   `pickup` makes an internal inbound message. Peers 127.0.0.1 and ::1 are internal
//!   (content-filter re-injection); 127.0.0.2 and up are ordinary peers.
//! - **Outbound** (`smtp`, `lmtp`, `local`, `virtual`, `pipe`, `error`, `discard`, `qmgr`):
//!   one record per run of consecutive `to=` lines of one queue id, relay, status and
//!   connection use (recipients = the run's length). Its `recipient_domain` is the domain
//!   of the `to=` addresses (the address after rewriting and alias expansion, not
//!   `orig_to=`) when they all share one. Postfix groups the recipients of a transaction by
//!   next hop, which is the recipient domain when mail is routed by MX: a run spanning
//!   several domains means a `relayhost` or a transport's nexthop was the next hop, and gets
//!   none: it lists those domains in `spanned_domains` instead, so each of them is counted
//!   with that relay (off the per-recipient path: recipients of one domain cost the one
//!   comparison they always did). With a relay host every delivery goes to `[relay]`, which
//!   is then also what `smtp_tls_policy_maps` is keyed by: pins keyed by recipient domain
//!   would not apply.
//! - **Anomalies**: failed STARTTLS (`SSL_accept error`, `SSL_connect error`,
//!   `TLS library problem`, `Cannot start TLS`, `TLS is required, but …`), one per session or
//!   delivery; stripping traces (a session with `unknown=…` commands and neither a
//!   `starttls=` counter nor a TLS line).
//!
//! # How the transport is decided
//!
//! Inbound, per session, at `disconnect`:
//! 1. a `TLS connection established from` line → [`Transport::Tls`] with its details (the
//!    client may be followed by the SNI name it sent, when smtpd accepted one: `from
//!    HOST[IP] to NAME: …`);
//! 2. else a STARTTLS failure logged in the session → [`Transport::Plain`], or, on an
//!    implicit-TLS service (port 465), [`Transport::Unknown`]: the handshake failed before
//!    any SMTP, so nothing went over the connection, in clear or not;
//! 3. else the `starttls=N[/M]` counter with N ≥ 1 (TLS logging off): TLS, with version and
//!    cipher `"unknown"` and no trust — it counts in the TLS share, and [`advice`] asks for
//!    `smtpd_tls_loglevel = 1` to get the details;
//! 4. else other counters (`commands=…`), or TLS lines seen earlier in the log → plain;
//! 5. else (old Postfix, no counters, no TLS line seen so far) [`Transport::Unknown`] with
//!    the hint to set `smtpd_tls_loglevel = 1`.
//!
//! Outbound, per delivery: the TLS line of the same process to the same relay (before the
//! first `to=` of that connection) → TLS, where the TLS line is `… TLS connection established
//! to` or, for a cached TLS connection taken over with `smtp_tls_connection_reuse = yes`
//! (Postfix 3.4+), `… TLS connection reused to`; `conn_use=N ≥ 2` (a cached connection, no
//! new TLS line) → the transport of the last connection seen to that relay; no TLS line →
//! plain when the log shows any outbound TLS line (so `smtp_tls_loglevel` is on; deliveries
//! before the first one are held back until it comes, up to [`MAX_HELD_UNKNOWN`]),
//! otherwise unknown with the hint `smtp_tls_loglevel = 1`. `relay=none` (no connection:
//! refused, timed out, suspended by qmgr) → status as logged (normally deferred), transport
//! unknown, since nothing was sent (internal for lmtp, and when the reason names a unix
//! socket or 127.0.0.1/::1). Deliveries by `local`, `virtual`, `pipe`, `lmtp`, and to
//! 127.0.0.1/::1, are [`Scope::Internal`] (plain unless a TLS line says otherwise);
//! `error`/`discard` deliveries are internal with an unknown transport.
//!
//! State is capped (open sessions, queue ids awaiting qmgr or disconnect, delivery processes,
//! relays remembered for cached connections): the oldest entries go first, counted in
//! [`MtaParser::evicted`]. A queue id is forgotten once emitted, or at `removed`/`reject`.
//!
//! [`advice`]: MtaParser::advice

pub(crate) mod bounded;
mod fields;

use crate::envelope::Line;
use crate::input::LineView;
use crate::model::{
    AnomalyKind, AnomalyRecord, ConnectionRecord, Direction, MessageRecord, Mta, MtaParser, Peer,
    Record, Scope, Text, TlsInfo, Transport, UnixTime,
};
use crate::recipient::{self, DomainTexts};
use bounded::{Bounded, FxBuild};
use fields::{Counters, PeerRef};
use std::sync::Arc;

/// Hint for inbound sessions whose transport the log does not tell.
pub const HINT_SMTPD: &str = "set smtpd_tls_loglevel = 1 in main.cf";
/// Hint for outbound deliveries whose transport the log does not tell.
pub const HINT_SMTP: &str = "set smtp_tls_loglevel = 1 in main.cf";
/// A delivery over a cached connection opened before the log starts (or forgotten).
pub const HINT_CACHED: &str = "cached connection opened before the log starts";
/// `relay=none`: no connection was made, nothing was sent.
pub const HINT_NO_CONNECTION: &str = "no connection was made (relay=none)";
/// `error`/`discard` transports: no SMTP hop at all.
pub const HINT_NO_HOP: &str = "no SMTP hop (error or discard transport)";

/// An implicit-TLS (port 465) session whose handshake failed: no SMTP went over it at all.
pub const HINT_IMPLICIT_TLS_FAILED: &str =
    "TLS handshake failed on an implicit-TLS service (port 465): nothing was sent";

/// The version and cipher recorded when only a `starttls=` counter shows TLS was used.
pub use crate::model::UNKNOWN_TLS;

/// Caps on the correlator's open state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostfixParserOptions {
    /// Open smtpd sessions (one per smtpd process at most).
    pub max_sessions: usize,
    /// Queue ids received and awaiting their qmgr line or their session's end.
    pub max_pending_messages: usize,
    /// Delivery processes (smtp, lmtp, local, …) with an open connection or delivery.
    pub max_delivery_processes: usize,
    /// Relays whose last connection's transport is kept for `conn_use=N` deliveries.
    pub max_relays: usize,
    /// Queue ids remembered per session (for its connection's transport decision).
    pub max_ids_per_session: usize,
    /// Which lines this parser takes: all of them, or one of two halves whose state is
    /// disjoint, so that two threads can share the work (see [`PostfixRole`]).
    pub role: PostfixRole,
}

/// The lines a [`PostfixParser`] takes. Inbound (smtpd, pickup, cleanup, qmgr's `from=` and
/// `removed`) and delivery (smtp, lmtp, local, virtual, pipe, error, discard, qmgr's `to=`)
/// lines touch disjoint state, so a parser of each role, fed every line, emits between them
/// exactly the records one [`PostfixRole::All`] parser emits: inbound ones in the inbound
/// parser, delivery ones in the delivery parser, each in the same order as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PostfixRole {
    #[default]
    All,
    Inbound,
    Delivery,
}

impl Default for PostfixParserOptions {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            max_pending_messages: 100_000,
            max_delivery_processes: 100_000,
            max_relays: 100_000,
            max_ids_per_session: 1_000,
            role: PostfixRole::All,
        }
    }
}

/// Most evidence lines kept for one anomaly, and most bytes.
const MAX_EVIDENCE_LINES: usize = 4;
const MAX_EVIDENCE_BYTES: usize = 4096;
/// Most distinct (host, program) names interned; the rest share one slot.
const MAX_PROGRAMS: usize = 4096;

/// Which process: (interned host + program, pid).
type ProcKey = (u32, u32);

#[derive(Debug)]
struct Failure {
    time: UnixTime,
    peer: Peer,
    evidence: String,
    lines: usize,
}

impl Failure {
    fn new(line: &Line<'_>, peer: Peer) -> Self {
        Failure {
            time: line.time,
            peer,
            evidence: line
                .raw
                .get(..MAX_EVIDENCE_BYTES)
                .unwrap_or(line.raw)
                .to_owned(),
            lines: 1,
        }
    }

    fn add(&mut self, line: &Line<'_>) {
        if self.lines < MAX_EVIDENCE_LINES
            && self.evidence.len() + line.raw.len() < MAX_EVIDENCE_BYTES
        {
            self.evidence.push('\n');
            self.evidence.push_str(line.raw);
            self.lines += 1;
        }
    }

    fn record(self, direction: Direction) -> Record {
        Record::Anomaly(AnomalyRecord {
            mta: Mta::Postfix,
            time: self.time,
            direction,
            peer: self.peer,
            kind: AnomalyKind::StartTlsFailed,
            evidence: self.evidence,
        })
    }
}

/// An open smtpd session.
#[derive(Debug)]
struct Session {
    time: UnixTime,
    peer: Peer,
    tls: Option<TlsInfo>,
    /// On an implicit-TLS (port 465) service: TLS even without a TLS line.
    implicit_tls: bool,
    ids: Vec<Arc<str>>,
    messages: u32,
    failure: Option<Failure>,
}

/// A received queue id awaiting its qmgr line and/or its transport.
#[derive(Debug)]
struct Pending {
    time: UnixTime,
    peer: Peer,
    scope: Scope,
    transport: Option<Transport>,
    /// (size, nrcpt) from qmgr.
    queued: Option<(u64, u32)>,
}

/// The TLS connection a delivery process opened last.
#[derive(Debug)]
struct Conn {
    relay: Arc<str>,
    tls: TlsInfo,
    /// The queue id of the first delivery over it, once seen.
    id: Option<Box<str>>,
}

/// A run of `to=` lines being grouped into one record.
#[derive(Debug)]
struct Delivery {
    /// The `relay=` text, for the next `to=` line to compare; handed on to the next delivery
    /// of the process when that goes to the same relay (so empty in a delivery emitted).
    relay: Box<str>,
    conn_use: u32,
    /// Same queue id, relay and `conn_use` as the record before it in this process (other
    /// recipients of the message, with another status): the same connection.
    same_connection: bool,
    record: MessageRecord,
}

#[derive(Debug, Default)]
struct DeliveryProc {
    conn: Option<Conn>,
    open: Option<Delivery>,
    failure: Option<Failure>,
    /// Log time of its last line.
    last: UnixTime,
}

/// A delivery process silent this long (log time) has exited: Postfix logs no line when one
/// does, and its `max_idle` is 100 s. Its state is flushed and dropped, so memory follows
/// the processes alive, not every pid the log ever showed.
const IDLE_PROCESS_SECS: UnixTime = 3600;

/// The Postfix [`MtaParser`]. See the module documentation for what it emits and decides.
#[derive(Debug)]
pub struct PostfixParser {
    options: PostfixParserOptions,
    programs: Vec<(Box<str>, Box<str>)>,
    /// Index in `programs` of the last line's program.
    last_program: usize,
    sessions: Bounded<ProcKey, Session, FxBuild>,
    pending: Bounded<Arc<str>, Pending, FxBuild>,
    procs: Bounded<ProcKey, DeliveryProc, FxBuild>,
    relays: Bounded<Arc<str>, Transport>,
    /// A relay that `relays` holds as plain, while nothing was inserted into it since: an
    /// internal hop (LMTP, a content filter) is compared, not hashed, on each delivery.
    plain_relay: Option<Arc<str>>,
    domains: DomainTexts,
    tls_details: fields::TlsDetailsCache,
    /// Peers of inbound sessions, parsed once while they keep coming back.
    peers: fields::PeerCache,
    relays_named: fields::RelayCache,
    unparsed: u64,
    evicted: u64,
    /// Log time of the next sweep of idle delivery processes.
    next_sweep: UnixTime,
    /// An inbound / outbound TLS line was seen: TLS logging is on on that side.
    seen_smtpd_tls: bool,
    seen_smtp_tls: bool,
    advise_smtpd_counters: bool,
    advise_smtpd_unknown: bool,
    /// An implicit-TLS (smtps/submissions) session had no TLS line.
    advise_smtps_implicit: bool,
    advise_smtp_unknown: bool,
    /// Outbound deliveries over a fresh connection with no TLS line, made before any outbound
    /// TLS line was seen: plaintext if one turns up, unknown if none does (TLS logging off).
    /// At most [`MAX_HELD_UNKNOWN`]; past that they go out as unknown.
    held_unknown: Vec<Record>,
    /// [`PostfixParser::held_unknown`] overflowed: no more are held.
    held_overflowed: bool,
    /// Nothing is or will be held: the inbound half, or an outbound TLS line was seen and
    /// what was held went out.
    settled: bool,
}

/// Outbound records of unknown transport held while no outbound TLS line has been seen.
pub const MAX_HELD_UNKNOWN: usize = 20_000;

impl Default for PostfixParser {
    fn default() -> Self {
        Self::new(PostfixParserOptions::default())
    }
}

/// The daemons whose lines matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    Smtpd,
    Qmgr,
    Pickup,
    Cleanup,
    /// smtp, lmtp: network clients.
    Client {
        lmtp: bool,
    },
    /// local, virtual, pipe.
    LocalDelivery,
    /// error, discard, retry.
    NoHop,
}

/// `a == b` for the short texts of an envelope (host and program names) without a call to
/// `memcmp`: up to 16 bytes as two words (overlapping when shorter), fewer than 8 byte by byte.
#[inline]
fn same_short_text(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_le_bytes)
    };
    match n {
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// The daemon of a program: its last component (`postfix/smtpd`, `postfix/submission/smtpd`,
/// `postfix-out/smtp`). Every line asks, so the name is not sliced out and compared as text:
/// the program's last eight bytes form one word, and `/NAME` (five to eight bytes) is its top
/// bytes, compared with the word of each name of that length at once.
#[inline]
fn daemon(program: &[u8]) -> Option<Daemon> {
    let b = program;
    let tail = b.get(b.len().saturating_sub(8)..).unwrap_or_default();
    let w = match <[u8; 8]>::try_from(tail) {
        // The same word as `tail_word` makes, in one load.
        Ok(last8) => u64::from_le_bytes(last8),
        Err(_) => tail_word(tail),
    };
    // Each length on its own: a word matches only a name as long as its mask.
    let five = match w & top_bytes(5) {
        x if x == tail_word(b"/qmgr") => Some(Daemon::Qmgr),
        x if x == tail_word(b"/smtp") => Some(Daemon::Client { lmtp: false }),
        x if x == tail_word(b"/lmtp") => Some(Daemon::Client { lmtp: true }),
        x if x == tail_word(b"/pipe") => Some(Daemon::LocalDelivery),
        _ => None,
    };
    let six = || match w & top_bytes(6) {
        x if x == tail_word(b"/smtpd") => Some(Daemon::Smtpd),
        x if x == tail_word(b"/nqmgr") => Some(Daemon::Qmgr),
        x if x == tail_word(b"/local") => Some(Daemon::LocalDelivery),
        x if x == tail_word(b"/error") || x == tail_word(b"/retry") => Some(Daemon::NoHop),
        _ => None,
    };
    let seven_or_eight = || match (w & top_bytes(7), w) {
        (x, _) if x == tail_word(b"/pickup") => Some(Daemon::Pickup),
        (_, x) if x == tail_word(b"/cleanup") => Some(Daemon::Cleanup),
        (_, x) if x == tail_word(b"/virtual") => Some(Daemon::LocalDelivery),
        (_, x) if x == tail_word(b"/discard") => Some(Daemon::NoHop),
        _ => None,
    };
    five.or_else(six).or_else(seven_or_eight)
}

/// Up to eight bytes as one word, the last byte on top and zeros below the first: the top
/// bytes of the word of a program's last eight bytes are its last bytes.
#[inline]
const fn tail_word(bytes: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut rest = bytes;
    while let [first, tail @ ..] = rest {
        w = (w >> 8) | ((*first as u64) << 56);
        rest = tail;
    }
    w
}

/// The mask of a word's top `n` bytes (1 ≤ n ≤ 8).
const fn top_bytes(n: u32) -> u64 {
    u64::MAX << (8 * (8 - n))
}

/// Records with, for each, the index of the line that emitted it: what an inbound or a
/// delivery parser emitted for a batch of lines, for [`merge_roles`].
#[derive(Debug, Default)]
pub struct TaggedRecords {
    pub records: Vec<Record>,
    /// `lines[k]` is the index of the line that emitted `records[k]` (ascending).
    pub lines: Vec<u32>,
}

impl TaggedRecords {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            records: Vec::with_capacity(n),
            lines: Vec::with_capacity(n),
        }
    }

    /// Feeds line number `index` to `parser`, tagging what it emits.
    pub fn feed<'a>(&mut self, parser: &mut PostfixParser, line: &impl LazyLine<'a>, index: u32) {
        let before = self.records.len();
        parser.feed_lazy(line, &mut self.records);
        self.tag_since(before, index);
    }

    /// Tags the records from `before` on with line `index`.
    #[inline]
    fn tag_since(&mut self, before: usize, index: u32) {
        for _ in before..self.records.len() {
            self.lines.push(index);
        }
    }

    /// [`TaggedRecords::feed`] for a line whose route [`line_route`] gave already (`report`'s
    /// reader asks once for both halves): a line of neither half is passed over at once, a
    /// line of the other half after no more than the delivery half's sweep of idle processes
    /// at its time, which runs at every line of a known daemon, its own or not.
    #[inline]
    pub fn feed_routed<'a>(
        &mut self,
        parser: &mut PostfixParser,
        line: &impl LazyLine<'a>,
        route: Option<LineRoute>,
        index: u32,
    ) {
        let Some(route) = route else {
            return;
        };
        let own = parser.options.role;
        let before = self.records.len();
        if own == route.role || own == PostfixRole::All {
            parser.feed_lazy_known(line, Some(route.daemon), &mut self.records);
        } else if own == PostfixRole::Delivery {
            parser.expire_idle_processes(line.time(), &mut self.records);
            parser.settle_unknown_outbound(before, &mut self.records);
        }
        self.tag_since(before, index);
    }
}

/// A block's Postfix lines split between the two halves, as `report`'s reader splits them
/// once ([`line_route`]): each half then walks only its own lines. The delivery half also
/// sweeps idle processes at the time of the inbound half's lines; each of its lines keeps the
/// latest time of the inbound lines since the one before it, so that it looks at them only
/// when a sweep falls due among them (once in ten minutes of log time).
#[derive(Debug, Clone)]
pub struct HalfLines {
    /// The inbound half's lines: index in the block, and route.
    inbound: Vec<(u32, LineRoute)>,
    /// The delivery half's lines.
    delivery: Vec<DeliveryLine>,
    /// The latest time of the inbound lines after the last delivery line ([`NO_LINE`]: none).
    tail_latest: UnixTime,
}

/// The latest time of no line at all: earlier than any sweep.
const NO_LINE: UnixTime = UnixTime::MIN;

/// A line of the delivery half in [`HalfLines`].
#[derive(Debug, Clone, Copy)]
struct DeliveryLine {
    index: u32,
    route: LineRoute,
    /// The latest time of the inbound lines between the delivery line before it and it
    /// ([`NO_LINE`]: none).
    inbound_latest: UnixTime,
}

impl Default for HalfLines {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl HalfLines {
    /// Room for a block of `lines` lines.
    pub fn with_capacity(lines: usize) -> Self {
        Self {
            // Most lines of a mail server's log are the inbound half's.
            inbound: Vec::with_capacity(lines),
            delivery: Vec::with_capacity(lines / 2),
            tail_latest: NO_LINE,
        }
    }

    /// Line `index` (after those pushed before it), of time `time`, routed by `route`.
    #[inline(always)]
    pub fn push(&mut self, index: u32, route: LineRoute, time: UnixTime) {
        if route.role == PostfixRole::Delivery {
            self.delivery.push(DeliveryLine {
                index,
                route,
                inbound_latest: std::mem::replace(&mut self.tail_latest, NO_LINE),
            });
        } else {
            self.inbound.push((index, route));
            self.tail_latest = self.tail_latest.max(time);
        }
    }
}

impl TaggedRecords {
    /// Feeds `parser` the lines of its half in `lines`, as [`TaggedRecords::feed_routed`]
    /// would feed it every line of the block: `line(i)` is the block's line `i`. A parser of
    /// [`PostfixRole::All`] gets nothing (it reads whole blocks).
    pub fn feed_half<'a, L: LazyLine<'a>>(
        &mut self,
        parser: &mut PostfixParser,
        lines: &HalfLines,
        line: impl Fn(usize) -> Option<L>,
    ) {
        match parser.options.role {
            PostfixRole::All => {}
            PostfixRole::Inbound => {
                for &(index, route) in &lines.inbound {
                    if let Some(l) = line(index as usize) {
                        self.feed_own(parser, &l, route, index);
                    }
                }
            }
            PostfixRole::Delivery => {
                let mut next = 0;
                for d in &lines.delivery {
                    self.sweep_at_inbound(parser, d.inbound_latest, next..d.index, &line);
                    if let Some(l) = line(d.index as usize) {
                        self.feed_own(parser, &l, d.route, d.index);
                    }
                    next = d.index.saturating_add(1);
                }
                let end = lines
                    .inbound
                    .last()
                    .map_or(0, |&(i, _)| i.saturating_add(1));
                self.sweep_at_inbound(parser, lines.tail_latest, next..end, &line);
            }
        }
    }

    /// Feeds `parser` line `index`, one of its own half's lines (routed by `route`), tagging
    /// what it emits: [`TaggedRecords::feed_routed`] for a line known to be the parser's own,
    /// inlined into the loops over a block's lines.
    #[inline(always)]
    fn feed_own<'a>(
        &mut self,
        parser: &mut PostfixParser,
        line: &impl LazyLine<'a>,
        route: LineRoute,
        index: u32,
    ) {
        let before = self.records.len();
        parser.feed_lazy_known(line, Some(route.daemon), &mut self.records);
        self.tag_since(before, index);
    }

    /// The delivery half's pass over the inbound lines among `between`, whose latest time is
    /// `latest`: nothing unless a sweep of idle processes falls due at one of them, and then
    /// what [`TaggedRecords::feed_routed`] does at each.
    #[inline]
    fn sweep_at_inbound<'a, L: LazyLine<'a>>(
        &mut self,
        parser: &mut PostfixParser,
        latest: UnixTime,
        between: std::ops::Range<u32>,
        line: &impl Fn(usize) -> Option<L>,
    ) {
        if latest < parser.next_sweep {
            return;
        }
        for index in between {
            if let Some(l) = line(index as usize)
                && let Some(route) = line_route(&l)
            {
                self.feed_routed(parser, &l, Some(route), index);
            }
        }
    }
}

/// Which half takes a line, and its daemon: what [`line_route`] finds once for both halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRoute {
    /// [`PostfixRole::Inbound`] or [`PostfixRole::Delivery`].
    pub role: PostfixRole,
    daemon: Daemon,
}

/// The half that takes `line`, as [`PostfixParser::feed_lazy`] decides it, and its daemon;
/// `None` for a line of no daemon the parser knows, which neither half looks at further.
#[inline(always)]
pub fn line_route<'a>(line: &impl LazyLine<'a>) -> Option<LineRoute> {
    let daemon = daemon(line.program_bytes())?;
    let role = if is_inbound(daemon, || line.message()) {
        PostfixRole::Inbound
    } else {
        PostfixRole::Delivery
    };
    Some(LineRoute { role, daemon })
}

/// What an inbound and a delivery parser emitted for the same lines, in the order one
/// [`PostfixRole::All`] parser emits it. At the same line the delivery parser's records go
/// first, because its sweep of idle processes runs before the line itself is handled.
pub fn merge_roles<'a>(
    inbound: &'a TaggedRecords,
    delivery: &'a TaggedRecords,
) -> impl Iterator<Item = &'a Record> + 'a {
    let (mut i, mut d) = (0, 0);
    std::iter::from_fn(move || {
        let take_delivery = match (inbound.lines.get(i), delivery.lines.get(d)) {
            (Some(a), Some(b)) => b <= a,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => return None,
        };
        if take_delivery {
            d += 1;
            delivery.records.get(d - 1)
        } else {
            i += 1;
            inbound.records.get(i - 1)
        }
    })
}

/// A line whose parts the parser asks for as it goes: program, time and message tell a half
/// whether the line is its own, its handlers read the parts they need, and a line is wanted
/// whole only as evidence. A [`LineView`] slices each part out of its block on demand, so a
/// half passes over the other half's lines cheaply.
pub trait LazyLine<'a> {
    /// The program's bytes: all the split needs of it, without a char-boundary check.
    fn program_bytes(&self) -> &'a [u8];
    fn time(&self) -> UnixTime;
    fn message(&self) -> &'a str;
    fn host(&self) -> &'a str;
    fn program(&self) -> &'a str;
    fn pid(&self) -> Option<u32>;
    fn line(&self) -> Line<'a>;
}

impl<'a> LazyLine<'a> for Line<'a> {
    fn program_bytes(&self) -> &'a [u8] {
        self.program.as_bytes()
    }
    fn time(&self) -> UnixTime {
        self.time
    }
    fn message(&self) -> &'a str {
        self.message
    }
    fn host(&self) -> &'a str {
        self.host
    }
    fn program(&self) -> &'a str {
        self.program
    }
    fn pid(&self) -> Option<u32> {
        self.pid
    }
    fn line(&self) -> Line<'a> {
        *self
    }
}

impl<'a> LazyLine<'a> for LineView<'a> {
    fn program_bytes(&self) -> &'a [u8] {
        LineView::program_bytes(self)
    }
    fn time(&self) -> UnixTime {
        LineView::time(self)
    }
    fn message(&self) -> &'a str {
        LineView::message(self)
    }
    fn host(&self) -> &'a str {
        LineView::host(self)
    }
    fn program(&self) -> &'a str {
        LineView::program(self)
    }
    fn pid(&self) -> Option<u32> {
        LineView::pid(self)
    }
    fn line(&self) -> Line<'a> {
        LineView::line(self)
    }
}

/// Whether a line of daemon `d` with message `message` belongs to [`PostfixRole::Inbound`]
/// (else to delivery); the message is only looked at for qmgr.
#[inline]
fn is_inbound<'a>(d: Daemon, message: impl FnOnce() -> &'a str) -> bool {
    match d {
        Daemon::Smtpd | Daemon::Pickup | Daemon::Cleanup => true,
        Daemon::Client { .. } | Daemon::LocalDelivery | Daemon::NoHop => false,
        // qmgr's `QID: to=` lines (expired, relay=none) are deliveries; the rest is inbound.
        // (Only lines with a queue id do anything, so the first `:` is the one after it.)
        Daemon::Qmgr => {
            let b = message().as_bytes();
            !fields::find_byte(b, b':')
                .and_then(|colon| b.get(colon..))
                .is_some_and(|rest| rest.starts_with(b": to=<"))
        }
    }
}

fn scope_of(peer: &Peer) -> Scope {
    if fields::is_local_ip(peer.ip) {
        Scope::Internal
    } else {
        Scope::Internet
    }
}

impl PostfixParser {
    pub fn new(options: PostfixParserOptions) -> Self {
        Self {
            options,
            programs: Vec::new(),
            last_program: 0,
            sessions: Bounded::new(options.max_sessions),
            pending: Bounded::new(options.max_pending_messages),
            procs: Bounded::new(options.max_delivery_processes),
            relays: Bounded::new(options.max_relays),
            plain_relay: None,
            domains: DomainTexts::default(),
            tls_details: fields::TlsDetailsCache::default(),
            peers: fields::PeerCache::default(),
            relays_named: fields::RelayCache::default(),
            unparsed: 0,
            evicted: 0,
            next_sweep: UnixTime::MIN,
            seen_smtpd_tls: false,
            seen_smtp_tls: false,
            advise_smtpd_counters: false,
            advise_smtpd_unknown: false,
            advise_smtps_implicit: false,
            advise_smtp_unknown: false,
            held_unknown: Vec::new(),
            held_overflowed: false,
            settled: false,
        }
    }

    /// Open state right now: (sessions, pending queue ids, delivery processes, relays).
    pub fn open_state(&self) -> (usize, usize, usize, usize) {
        (
            self.sessions.len(),
            self.pending.len(),
            self.procs.len(),
            self.relays.len(),
        )
    }

    fn proc_key<'a>(&mut self, line: &impl LazyLine<'a>) -> Option<ProcKey> {
        let pid = line.pid()?;
        let (host, program) = (line.host().as_bytes(), line.program_bytes());
        // The program first: names of different lengths differ without a byte compare.
        let same = |(h, p): &(Box<str>, Box<str>)| {
            same_short_text(p.as_bytes(), program) && same_short_text(h.as_bytes(), host)
        };
        // Lines of one program come in runs: try the last one found first.
        let found = match self.programs.get(self.last_program) {
            Some(entry) if same(entry) => Some(self.last_program),
            _ => self.programs.iter().position(same),
        };
        let id = match found {
            Some(i) => i,
            None if self.programs.len() < MAX_PROGRAMS => {
                self.programs
                    .push((line.host().into(), line.program().into()));
                self.programs.len() - 1
            }
            None => MAX_PROGRAMS,
        };
        self.last_program = id;
        Some((u32::try_from(id).unwrap_or(u32::MAX), pid))
    }

    fn count_evicted<T>(&mut self, e: Option<T>) {
        if e.is_some() {
            self.evicted += 1;
        }
    }

    // ---------------------------------------------------------------- inbound (smtpd)

    /// An smtpd line, sliced out of its block no further than it is looked at.
    fn smtpd<'a>(&mut self, line: &impl LazyLine<'a>, out: &mut Vec<Record>) {
        let msg = line.message();
        if let Some(rest) = msg.strip_prefix("connect from ") {
            let Some((p, _)) = fields::peer(rest) else {
                self.unparsed += 1;
                return;
            };
            let Some(key) = self.proc_key(line) else {
                self.unparsed += 1;
                return;
            };
            if let Some(old) = self.sessions.remove(&key) {
                // The previous session's disconnect is missing.
                self.close_session(old, None, None::<&Line<'_>>, out);
            }
            let s = new_session(line, self.peers.peer(p));
            let e = self.sessions.insert(key, s);
            self.count_evicted(e);
        } else if let Some(rest) = msg.strip_prefix("disconnect from ") {
            let Some((p, rest)) = fields::peer(rest) else {
                self.unparsed += 1;
                return;
            };
            let Some(key) = self.proc_key(line) else {
                self.unparsed += 1;
                return;
            };
            let s = match self.sessions.remove(&key) {
                Some(s) => s,
                None => new_session(line, self.peers.peer(p)),
            };
            let c = fields::counters(rest);
            self.close_session(s, Some(c), Some(line), out);
        } else if fields::is_tls_line(msg) {
            let Some(t) = fields::tls_line(msg, &mut self.tls_details).filter(|t| t.inbound) else {
                self.unparsed += 1;
                return;
            };
            self.seen_smtpd_tls = true;
            if let Some(s) = self.session(line, t.peer) {
                s.tls = Some(t.info);
            }
        } else if let Some(rest) = msg.strip_prefix("SSL_accept error from ") {
            let Some((p, _)) = fields::peer(rest) else {
                self.unparsed += 1;
                return;
            };
            self.session_failure(&line.line(), Some(p));
        } else if msg.starts_with("warning: TLS library problem") {
            self.session_failure(&line.line(), None);
        } else if let Some((id, rest)) = fields::queue_id(msg) {
            if let Some(client) = rest.strip_prefix("client=") {
                let Some((p, _)) = fields::peer(client) else {
                    self.unparsed += 1;
                    return;
                };
                self.client(line, id, p);
            } else if rejects_whole_message(rest) {
                self.forget_unqueued(id);
            }
        }
    }

    /// The open session of this process, created from `p` when the log lacks its start.
    fn session<'a>(&mut self, line: &impl LazyLine<'a>, p: PeerRef<'_>) -> Option<&mut Session> {
        let key = self.proc_key(line)?;
        let (s, evicted) = self
            .sessions
            .get_or_insert_with(key, || new_session(line, self.peers.peer(p)));
        if evicted {
            self.evicted += 1;
        }
        Some(s)
    }

    fn session_failure(&mut self, line: &Line<'_>, p: Option<PeerRef<'_>>) {
        let Some(key) = self.proc_key(line) else {
            self.unparsed += 1;
            return;
        };
        if self.sessions.get(&key).is_none() {
            match p {
                Some(p) => {
                    let s = new_session(line, self.peers.peer(p));
                    let e = self.sessions.insert(key, s);
                    self.count_evicted(e);
                }
                // A library warning outside any session we know: nothing to tie it to.
                None => return,
            }
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            match &mut s.failure {
                Some(f) => f.add(line),
                None => s.failure = Some(Failure::new(line, s.peer.clone())),
            }
        }
    }

    fn client<'a>(&mut self, line: &impl LazyLine<'a>, id: &str, p: PeerRef<'_>) {
        let max_ids = self.options.max_ids_per_session;
        let Some(s) = self.session(line, p) else {
            self.unparsed += 1;
            return;
        };
        s.messages = s.messages.saturating_add(1);
        let key: Arc<str> = id.into();
        let transport = s.tls.clone().map(Transport::Tls);
        let peer = s.peer.clone();
        let undecided = transport.is_none();
        let mut overflow = false;
        if undecided {
            if s.ids.len() < max_ids {
                s.ids.push(Arc::clone(&key));
            } else {
                overflow = true;
            }
        }
        if overflow {
            self.evicted += 1;
        }
        let pending = Pending {
            time: line.time(),
            scope: scope_of(&peer),
            peer,
            transport,
            queued: None,
        };
        let e = self.pending.insert(key, pending);
        self.count_evicted(e);
    }

    /// Decides the session's transport, emits its connection (and anomalies), and settles its
    /// queue ids that waited for the decision.
    fn close_session<'a>(
        &mut self,
        s: Session,
        c: Option<Counters>,
        line: Option<&impl LazyLine<'a>>,
        out: &mut Vec<Record>,
    ) {
        let c = c.unwrap_or_default();
        let had_tls = s.tls.is_some();
        let transport = if let Some(tls) = s.tls {
            Transport::Tls(tls)
        } else if s.failure.is_some() {
            if s.implicit_tls {
                Transport::Unknown {
                    hint: HINT_IMPLICIT_TLS_FAILED,
                }
            } else {
                Transport::Plain
            }
        } else if s.implicit_tls {
            // smtps/submissions with TLS logging off: TLS, version and cipher unknown.
            self.advise_smtps_implicit = true;
            Transport::Tls(TlsInfo::unknown(None))
        } else if c.starttls_ok.is_some_and(|n| n > 0) {
            self.advise_smtpd_counters = true;
            Transport::Tls(TlsInfo::unknown(None))
        } else if c.any || self.seen_smtpd_tls {
            Transport::Plain
        } else {
            self.advise_smtpd_unknown = true;
            Transport::Unknown { hint: HINT_SMTPD }
        };
        let scope = scope_of(&s.peer);
        if let Some(f) = s.failure {
            out.push(f.record(Direction::Inbound));
        } else if c.starttls_ok == Some(0) {
            // `starttls=0/1`: the command was refused or failed, with no warning logged.
            if let Some(line) = line {
                out.push(Failure::new(&line.line(), s.peer.clone()).record(Direction::Inbound));
            }
        }
        // A client that saw STARTTLS offered greeted first: an HTTP probe's `GET /` (no
        // `ehlo=`) is no trace of a rewritten STARTTLS.
        if c.unknown > 0
            && c.starttls_ok.is_none()
            && c.greeted
            && !had_tls
            && let Some(line) = line
        {
            let line = line.line();
            out.push(Record::Anomaly(AnomalyRecord {
                mta: Mta::Postfix,
                time: line.time,
                direction: Direction::Inbound,
                peer: s.peer.clone(),
                kind: AnomalyKind::StrippingTrace,
                evidence: line.raw.to_owned(),
            }));
        }
        for id in &s.ids {
            let done = match self.pending.get_mut(&**id) {
                Some(p) if p.transport.is_none() => {
                    p.transport = Some(transport.clone());
                    p.queued.is_some()
                }
                _ => false,
            };
            if done && let Some(p) = self.pending.remove(&**id) {
                emit_inbound(Arc::clone(id), p, out);
            }
        }
        out.push(Record::Connection(ConnectionRecord {
            mta: Mta::Postfix,
            time: s.time,
            direction: Direction::Inbound,
            scope,
            peer: s.peer,
            transport,
            messages: s.messages,
        }));
    }

    /// Drops a queue id that never reached the queue (rejected as a whole).
    fn forget_unqueued(&mut self, id: &str) {
        if self.pending.get(id).is_some_and(|p| p.queued.is_none()) {
            self.pending.remove(id);
        }
    }

    fn qmgr<'a>(&mut self, line: &impl LazyLine<'a>, out: &mut Vec<Record>) {
        let Some((id, rest)) = fields::queue_id(line.message()) else {
            return;
        };
        if rest.starts_with("from=<") {
            let Some(q) = fields::qmgr_from(rest) else {
                // `status=expired` and the like.
                return;
            };
            let ready = match self.pending.get_mut(id) {
                // Only the first activation counts (deferred mail is activated again).
                Some(p) if p.queued.is_none() => {
                    p.queued = Some(q);
                    // A message is dated by its qmgr `from=` line (docs/report-json.md).
                    p.time = line.time();
                    p.transport.is_some()
                }
                _ => false,
            };
            if ready && let Some((id, p)) = self.pending.remove_entry(id) {
                emit_inbound(id, p, out);
            }
        } else if rest == "removed" {
            self.forget_unqueued(id);
        } else if rest.starts_with("to=<") {
            self.delivery(line, Daemon::Qmgr, id, rest, out);
        }
    }

    fn pickup(&mut self, message: &str, time: UnixTime) {
        let Some((id, rest)) = fields::queue_id(message) else {
            return;
        };
        if rest.starts_with("uid=") || rest.starts_with("sender=") {
            let pending = Pending {
                time,
                peer: Peer {
                    hostname: None,
                    ip: None,
                },
                scope: Scope::Internal,
                transport: Some(Transport::Plain),
                queued: None,
            };
            let e = self.pending.insert(id.into(), pending);
            self.count_evicted(e);
        }
    }

    // ---------------------------------------------------------------- outbound

    fn proc(&mut self, key: ProcKey, time: UnixTime) -> Option<&mut DeliveryProc> {
        let (pr, evicted) = self.procs.get_or_insert_with(key, DeliveryProc::default);
        if evicted {
            self.evicted += 1;
        }
        pr.last = pr.last.max(time);
        Some(pr)
    }

    /// Flushes and drops the state of delivery processes idle for [`IDLE_PROCESS_SECS`];
    /// runs at most once per ten minutes of log time.
    #[inline]
    fn expire_idle_processes(&mut self, now: UnixTime, out: &mut Vec<Record>) {
        if now >= self.next_sweep {
            self.sweep_idle_processes(now, out);
        }
    }

    fn sweep_idle_processes(&mut self, now: UnixTime, out: &mut Vec<Record>) {
        self.next_sweep = now + 600;
        let cutoff = now - IDLE_PROCESS_SECS;
        for (_, pr) in self.procs.take_where(|pr| pr.last < cutoff) {
            flush(pr.open, pr.failure, out);
        }
    }

    /// An smtp or lmtp line, sliced out of its block no further than it is looked at.
    fn client_line<'a>(&mut self, line: &impl LazyLine<'a>, lmtp: bool, out: &mut Vec<Record>) {
        let msg = line.message();
        let d = Daemon::Client { lmtp };
        if let Some((id, rest)) = fields::queue_id(msg) {
            if rest.starts_with("to=<") {
                self.delivery(line, d, id, rest, out);
            } else if rest.starts_with("Cannot start TLS") {
                self.proc_failure(&line.line(), None, true, out);
            }
        } else if fields::is_tls_line(msg) {
            let Some(t) = fields::tls_line(msg, &mut self.tls_details).filter(|t| !t.inbound)
            else {
                self.unparsed += 1;
                return;
            };
            let Some(key) = self.proc_key(line) else {
                self.unparsed += 1;
                return;
            };
            if !lmtp && !self.seen_smtp_tls {
                self.seen_smtp_tls = true;
                // TLS logging is on: deliveries still open that were made without a TLS line
                // are plaintext (those already made are settled after this line), unless so
                // many came before that they already went out as unknown.
                if !self.held_overflowed {
                    for pr in self.procs.values_mut() {
                        if let Some(open) = &mut pr.open
                            && matches!(open.record.transport, Transport::Unknown { hint } if hint == HINT_SMTP)
                        {
                            open.record.transport = Transport::Plain;
                        }
                    }
                }
            }
            let relay: Arc<str> = t.peer.whole.into();
            let known =
                matches!(self.relays.get(t.peer.whole), Some(Transport::Tls(i)) if *i == t.info);
            if !known {
                self.remember_relay(relay.clone(), Transport::Tls(t.info.clone()));
            }
            let Some(pr) = self.proc(key, line.time()) else {
                return;
            };
            let open = pr.open.take();
            let failure = pr.failure.take();
            pr.conn = Some(Conn {
                relay,
                tls: t.info,
                id: None,
            });
            flush(open, failure, out);
        } else if let Some(rest) = msg.strip_prefix("SSL_connect error to ") {
            let p = fields::peer(rest).map(|(p, _)| p);
            self.proc_failure(&line.line(), p, false, out);
        } else if msg.starts_with("warning: TLS library problem") {
            self.proc_failure(&line.line(), None, false, out);
        }
    }

    fn proc_failure(
        &mut self,
        line: &Line<'_>,
        p: Option<PeerRef<'_>>,
        last: bool,
        out: &mut Vec<Record>,
    ) {
        let Some(key) = self.proc_key(line) else {
            self.unparsed += 1;
            return;
        };
        let Some(pr) = self.proc(key, line.time) else {
            return;
        };
        let peer = match (p, &pr.conn) {
            (Some(p), _) => p.to_peer(),
            (None, Some(c)) => fields::peer(&c.relay)
                .map(|(p, _)| p.to_peer())
                .unwrap_or(Peer {
                    hostname: None,
                    ip: None,
                }),
            (None, None) => Peer {
                hostname: None,
                ip: None,
            },
        };
        match &mut pr.failure {
            Some(f) => {
                f.add(line);
                if f.peer.ip.is_none() {
                    f.peer = peer;
                }
            }
            None => pr.failure = Some(Failure::new(line, peer)),
        }
        if last && let Some(f) = pr.failure.take() {
            out.push(f.record(Direction::Outbound));
        }
    }

    fn delivery<'a>(
        &mut self,
        line: &impl LazyLine<'a>,
        d: Daemon,
        id: &str,
        rest: &str,
        out: &mut Vec<Record>,
    ) {
        let Some(t) = fields::to_line(rest) else {
            if !rest.contains("status=deliverable") && !rest.contains("status=undeliverable") {
                self.unparsed += 1;
            }
            return;
        };
        let Some(key) = self.proc_key(line) else {
            self.unparsed += 1;
            return;
        };
        let none = Peer {
            hostname: None,
            ip: None,
        };
        // No hop, or no connection (`relay=none`): nothing to look up.
        let relay = match d {
            Daemon::NoHop => None,
            _ if t.relay == "none" => None,
            _ => Some(self.relays_named.relay(t.relay)),
        };
        let named = |name| {
            let peer = Peer {
                hostname: Some(name),
                ip: None,
            };
            (peer, Scope::Internal, Transport::Plain)
        };
        let mut server_port = None;
        let (peer, scope, transport) = match (d, relay) {
            (Daemon::NoHop, _) => (
                none,
                Scope::Internal,
                Transport::Unknown { hint: HINT_NO_HOP },
            ),
            (_, None) => (
                none,
                no_connection_scope(d, t.text),
                Transport::Unknown {
                    hint: HINT_NO_CONNECTION,
                },
            ),
            (_, Some(fields::Relay::Name(name))) => named(name),
            (Daemon::LocalDelivery, Some(fields::Relay::Hop(..))) => {
                named(crate::fields::intern(t.relay))
            }
            (_, Some(fields::Relay::Hop(peer, port))) => {
                server_port = port;
                let lmtp = d == Daemon::Client { lmtp: true };
                let scope = if lmtp || fields::is_local_ip(peer.ip) {
                    Scope::Internal
                } else {
                    Scope::Internet
                };
                let internal = scope == Scope::Internal;
                let transport = self.client_transport(key, id, t.relay, t.conn_use, internal);
                (peer, scope, transport)
            }
        };
        let tls_failed = fields::mentions_tls(t.text)
            && (t.text.contains("TLS is required, but") || t.text.contains("Cannot start TLS"));
        let domain = self.domains.of_address(t.to);
        let time = line.time();
        let Some(pr) = self.proc(key, time) else {
            return;
        };
        let mut failure = pr.failure.take();
        if tls_failed {
            let line = line.line();
            match &mut failure {
                Some(f) => f.add(&line),
                None => failure = Some(Failure::new(&line, peer.clone())),
            }
        }
        if let Some(f) = failure {
            out.push(f.record(Direction::Outbound));
        }
        if let Some(open) = &mut pr.open
            && &*open.record.id == id
            && *open.relay == *t.relay
            && open.conn_use == t.conn_use
            && open.record.status == Some(t.status)
        {
            open.record.recipients = open.record.recipients.saturating_add(1);
            recipient::merge(
                &mut open.record.recipient_domain,
                &mut open.record.spanned_domains,
                domain.as_ref(),
            );
            return;
        }
        let same_connection = pr.open.as_ref().is_some_and(|open| {
            &*open.record.id == id && *open.relay == *t.relay && open.conn_use == t.conn_use
        });
        // A process delivers to one relay many times in a row: its text is kept once.
        let relay = match &mut pr.open {
            Some(open) if *open.relay == *t.relay => std::mem::take(&mut open.relay),
            _ => t.relay.into(),
        };
        let next = Delivery {
            relay,
            conn_use: t.conn_use,
            same_connection,
            record: MessageRecord {
                mta: Mta::Postfix,
                time,
                direction: Direction::Outbound,
                scope,
                peer,
                transport,
                recipients: 1,
                size: None,
                id: id.into(),
                status: Some(t.status),
                recipient_domain: domain,
                spanned_domains: None,
                port: server_port,
            },
        };
        if let Some(prev) = pr.open.replace(next) {
            emit_delivery(prev, out);
        }
    }

    /// The transport of a delivery by a network client (smtp/lmtp) to `relay`.
    fn client_transport(
        &mut self,
        key: ProcKey,
        id: &str,
        relay: &str,
        conn_use: u32,
        internal: bool,
    ) -> Transport {
        if let Some(pr) = self.procs.get_mut(&key)
            && let Some(c) = &mut pr.conn
            && *c.relay == *relay
        {
            match &c.id {
                None => {
                    c.id = Some(id.into());
                    return Transport::Tls(c.tls.clone());
                }
                Some(first) if **first == *id => return Transport::Tls(c.tls.clone()),
                Some(_) if conn_use >= 2 => return Transport::Tls(c.tls.clone()),
                Some(_) => pr.conn = None,
            }
        }
        if conn_use >= 2 {
            return match self.relays.get(relay) {
                Some(t) => t.clone(),
                None => Transport::Unknown { hint: HINT_CACHED },
            };
        }
        // A fresh connection without a TLS line: plain when TLS logging is evidently on, and
        // for internal hops (LMTP, content filters), where nobody enables it.
        if internal || self.seen_smtp_tls {
            if self.plain_relay.as_deref() != Some(relay) {
                if matches!(self.relays.get(relay), Some(Transport::Plain)) {
                    self.plain_relay = Some(relay.into());
                } else {
                    self.remember_relay(relay.into(), Transport::Plain);
                }
            }
            Transport::Plain
        } else {
            // Held back until an outbound TLS line shows up, or the end
            // (`settle_unknown_outbound`, `finish`).
            Transport::Unknown { hint: HINT_SMTP }
        }
    }

    /// Inserts into `relays`; the only way in, so that `plain_relay` stays true (an insert
    /// may evict the relay it names).
    fn remember_relay(&mut self, relay: Arc<str>, transport: Transport) {
        self.plain_relay = matches!(transport, Transport::Plain).then(|| Arc::clone(&relay));
        let e = self.relays.insert(relay, transport);
        self.count_evicted(e);
    }
}

fn new_session<'a>(line: &impl LazyLine<'a>, peer: Peer) -> Session {
    Session {
        time: line.time(),
        peer,
        tls: None,
        implicit_tls: implicit_tls_service(line.program()),
        ids: Vec::new(),
        messages: 0,
        failure: None,
    }
}

/// True for the smtpd of an implicit-TLS service (port 465): Debian's and Postfix's own
/// master.cf name it `smtps` or `submissions` and log it as `postfix/smtps/smtpd` or
/// `postfix/submissions/smtpd` (`-o syslog_name=…`, `-o smtpd_tls_wrappermode=yes`). Every
/// session that reaches SMTP there is over TLS, whatever TLS logging says.
fn implicit_tls_service(program: &str) -> bool {
    // The last two components `smtps/smtpd` or `submissions/smtpd`, whole.
    let Some(service) = program.strip_suffix("/smtpd") else {
        return false;
    };
    ["smtps", "submissions"].iter().any(|name| {
        service
            .strip_suffix(name)
            .is_some_and(|before| before.is_empty() || before.ends_with('/'))
    })
}

fn emit_inbound(id: Text, p: Pending, out: &mut Vec<Record>) {
    let (size, nrcpt) = p.queued.unwrap_or((0, 0));
    out.push(Record::Message(MessageRecord {
        mta: Mta::Postfix,
        time: p.time,
        direction: Direction::Inbound,
        scope: p.scope,
        peer: p.peer,
        transport: p
            .transport
            .unwrap_or(Transport::Unknown { hint: HINT_SMTPD }),
        recipients: nrcpt,
        size: Some(size),
        id,
        status: None,
        recipient_domain: None,
        spanned_domains: None,
        port: None,
    }));
}

fn flush(open: Option<Delivery>, failure: Option<Failure>, out: &mut Vec<Record>) {
    if let Some(f) = failure {
        out.push(f.record(Direction::Outbound));
    }
    if let Some(d) = open {
        emit_delivery(d, out);
    }
}

/// One delivery record, and the connection it opened: a delivery over a network relay
/// without `conn_use=N` (N ≥ 2), and not continuing the transaction before it, is the first
/// over its connection.
fn emit_delivery(d: Delivery, out: &mut Vec<Record>) {
    if d.conn_use <= 1 && !d.same_connection && d.record.peer.ip.is_some() {
        out.push(Record::Connection(ConnectionRecord {
            mta: Mta::Postfix,
            time: d.record.time,
            direction: Direction::Outbound,
            scope: d.record.scope,
            peer: d.record.peer.clone(),
            transport: d.record.transport.clone(),
            messages: 1,
        }));
    }
    out.push(Record::Message(d.record));
}

impl PostfixParser {
    /// [`MtaParser::feed`] for a line whose parts are taken as needed: a line of the other
    /// half's is looked at no further than its program (and, for qmgr, its message).
    pub fn feed_lazy<'a>(&mut self, line: &impl LazyLine<'a>, out: &mut Vec<Record>) {
        self.feed_lazy_known(line, None, out);
    }

    /// [`PostfixParser::feed_dispatch`], then [`PostfixParser::settle_unknown_outbound`] for
    /// the records it made.
    #[inline]
    fn feed_lazy_known<'a>(
        &mut self,
        line: &impl LazyLine<'a>,
        known: Option<Daemon>,
        out: &mut Vec<Record>,
    ) {
        let start = out.len();
        self.feed_dispatch(line, known, out);
        self.settle_unknown_outbound(start, out);
    }

    /// Outbound deliveries of unknown transport (a fresh connection without a TLS line, see
    /// [`PostfixParser::client_transport`]) made since `start` while no outbound TLS line has
    /// been seen are held back; when the first one turns up, TLS logging is on and they all
    /// go out as plaintext, before the records of that line.
    #[inline(always)]
    fn settle_unknown_outbound(&mut self, start: usize, out: &mut Vec<Record>) {
        if !self.settled {
            self.settle_unknown_outbound_now(start, out);
        }
    }

    /// [`PostfixParser::settle_unknown_outbound`] while there is something to settle.
    #[inline(never)]
    fn settle_unknown_outbound_now(&mut self, start: usize, out: &mut Vec<Record>) {
        if self.options.role == PostfixRole::Inbound
            || (self.seen_smtp_tls && self.held_unknown.is_empty())
        {
            self.settled = true;
            return;
        }
        if self.seen_smtp_tls {
            for record in &mut self.held_unknown {
                match record {
                    Record::Message(m) => m.transport = Transport::Plain,
                    Record::Connection(c) => c.transport = Transport::Plain,
                    _ => {}
                }
            }
            insert_at(out, start, &mut self.held_unknown);
            return;
        }
        if self.held_overflowed {
            if out
                .get(start..)
                .is_some_and(|new| new.iter().any(is_unknown_outbound))
            {
                self.advise_smtp_unknown = true;
            }
            return;
        }
        let mut i = start;
        while let Some(record) = out.get(i) {
            if !is_unknown_outbound(record) {
                i += 1;
            } else if self.held_unknown.len() < MAX_HELD_UNKNOWN {
                self.held_unknown.push(out.remove(i));
            } else {
                // Too many to hold: TLS logging is evidently off. What was held goes out as
                // unknown, before this line's records; the rest of them stay as they are.
                self.held_overflowed = true;
                self.advise_smtp_unknown = true;
                insert_at(out, start, &mut self.held_unknown);
                return;
            }
        }
    }

    /// [`PostfixParser::feed_lazy`]'s work; `known` is the line's daemon when the caller knows the
    /// line is this half's ([`line_route`]), so neither is worked out again.
    #[inline]
    fn feed_dispatch<'a>(
        &mut self,
        line: &impl LazyLine<'a>,
        known: Option<Daemon>,
        out: &mut Vec<Record>,
    ) {
        let Some(d) = known.or_else(|| daemon(line.program_bytes())) else {
            return;
        };
        let role = self.options.role;
        if role != PostfixRole::Inbound {
            self.expire_idle_processes(line.time(), out);
        }
        let mine = known.is_some()
            || match role {
                PostfixRole::All => true,
                PostfixRole::Inbound => is_inbound(d, || line.message()),
                PostfixRole::Delivery => !is_inbound(d, || line.message()),
            };
        if !mine {
            return;
        }
        // Each daemon's handler reads the parts of the line it needs; the whole line is sliced
        // out only for the evidence of failures and anomalies.
        match d {
            Daemon::Smtpd => self.smtpd(line, out),
            Daemon::Qmgr => self.qmgr(line, out),
            Daemon::Pickup => self.pickup(line.message(), line.time()),
            Daemon::Cleanup => {
                if let Some((id, rest)) = fields::queue_id(line.message())
                    && (rest.starts_with("reject:") || rest.starts_with("milter-reject:"))
                {
                    self.forget_unqueued(id);
                }
            }
            Daemon::Client { lmtp } => self.client_line(line, lmtp, out),
            Daemon::LocalDelivery | Daemon::NoHop => {
                if let Some((id, rest)) = fields::queue_id(line.message())
                    && rest.starts_with("to=<")
                {
                    self.delivery(line, d, id, rest, out);
                }
            }
        }
    }
}

/// Moves `records` into `out` at `at` (before the records from there on), in order.
fn insert_at(out: &mut Vec<Record>, at: usize, records: &mut Vec<Record>) {
    let after = out.split_off(at.min(out.len()));
    out.append(records);
    out.extend(after);
}

/// An outbound record whose transport is unknown only because no outbound TLS line has been
/// seen yet ([`HINT_SMTP`]).
fn is_unknown_outbound(record: &Record) -> bool {
    let (direction, transport) = match record {
        Record::Message(m) => (m.direction, &m.transport),
        Record::Connection(c) => (c.direction, &c.transport),
        _ => return false,
    };
    direction == Direction::Outbound
        && matches!(transport, Transport::Unknown { hint } if *hint == HINT_SMTP)
}

/// The scope of a `relay=none` delivery (no connection was made): internal for lmtp, and
/// when the reason names a local hop (`connect to NAME[private/dovecot-lmtp]`, a unix socket;
/// `connect to 127.0.0.1[127.0.0.1]:10024`, a content filter), else Internet.
fn no_connection_scope(d: Daemon, reason: &str) -> Scope {
    if d == (Daemon::Client { lmtp: true }) {
        return Scope::Internal;
    }
    // Only Postfix's own words: the reason starts with them (qmgr puts its own in front); a
    // remote server's reply quoted later never decides.
    let reason = reason.strip_prefix('(').unwrap_or(reason);
    let own = reason
        .strip_prefix("delivery temporarily suspended: ")
        .unwrap_or(reason);
    let local = own
        .strip_prefix("connect to ")
        .and_then(|r| r.get(r.find('[')? + 1..))
        .and_then(|r| r.get(..r.find(']')?))
        .is_some_and(|addr| {
            addr.starts_with("private/")
                || addr.starts_with("public/")
                || addr.starts_with('/')
                || fields::is_local_ip(addr.parse().ok())
        });
    if local {
        Scope::Internal
    } else {
        Scope::Internet
    }
}

/// True for an smtpd `QID: reject:` line that rejects the message itself (at DATA, BDAT or
/// end of message). A rejected recipient (`reject: RCPT`) leaves the message, queued for its
/// accepted recipients: with `smtpd_delay_open_until_valid_rcpt` (the default) the queue id
/// exists once one recipient was accepted, and later rejections are logged with it.
fn rejects_whole_message(rest: &str) -> bool {
    let Some(stage) = rest
        .strip_prefix("reject: ")
        .or_else(|| rest.strip_prefix("milter-reject: "))
    else {
        return false;
    };
    ["DATA ", "BDAT ", "END-OF-MESSAGE "]
        .iter()
        .any(|s| stage.starts_with(s))
}

impl MtaParser for PostfixParser {
    fn feed(&mut self, line: &Line<'_>, out: &mut Vec<Record>) {
        self.feed_lazy(line, out);
    }

    fn finish(&mut self, out: &mut Vec<Record>) {
        for (_, s) in self.sessions.drain_ordered() {
            self.close_session(s, None, None::<&Line<'_>>, out);
        }
        for (id, mut p) in self.pending.drain_ordered() {
            if p.queued.is_none() {
                continue; // never reached the queue
            }
            if p.transport.is_none() {
                p.transport = Some(if self.seen_smtpd_tls {
                    Transport::Plain
                } else {
                    self.advise_smtpd_unknown = true;
                    Transport::Unknown { hint: HINT_SMTPD }
                });
            }
            emit_inbound(id, p, out);
        }
        let start = out.len();
        for (_, pr) in self.procs.drain_ordered() {
            flush(pr.open, pr.failure, out);
        }
        // No outbound TLS line in the whole log: what was held back is unknown, and said so.
        if out
            .get(start..)
            .is_some_and(|new| new.iter().any(is_unknown_outbound))
            || !self.held_unknown.is_empty()
        {
            self.advise_smtp_unknown = true;
        }
        insert_at(out, start, &mut self.held_unknown);
        self.relays.drain_ordered();
        self.plain_relay = None;
    }

    fn unparsed(&self) -> u64 {
        self.unparsed
    }

    fn evicted(&self) -> u64 {
        self.evicted
    }

    fn advice(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.advise_smtpd_unknown {
            v.push(format!(
                "Postfix logged neither TLS lines nor starttls= counters for some inbound sessions, so their transport is unknown: {HINT_SMTPD}"
            ));
        } else if self.advise_smtpd_counters {
            v.push(format!(
                "Inbound TLS was seen only through starttls= counters (TLS version and cipher unknown): {HINT_SMTPD}"
            ));
        }
        if self.advise_smtps_implicit {
            v.push(format!(
                "Sessions on an implicit-TLS service (smtps/submissions, port 465) logged no TLS line; they are counted as TLS with version and cipher unknown: {HINT_SMTPD}"
            ));
        }
        if self.advise_smtp_unknown && self.seen_smtp_tls {
            v.push(format!(
                "Postfix logged outbound TLS lines only after {MAX_HELD_UNKNOWN} deliveries without any (TLS logging turned on part-way?): those count as unknown; {HINT_SMTP}"
            ));
        } else if self.advise_smtp_unknown {
            v.push(format!(
                "Postfix logged no outbound TLS lines, so the transport of outbound deliveries is unknown: {HINT_SMTP}"
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::{Daemon, daemon, implicit_tls_service};

    /// The report may run one parser per input on its own thread.
    #[test]
    fn parser_is_send() {
        fn send<T: Send>() {}
        send::<super::PostfixParser>();
    }

    /// Programs around the word tests' edges: shorter than a word, a name at a word's start,
    /// names within or around others, a NUL where a padding zero would be.
    const PROGRAMS: &[&str] = &[
        "postfix/smtpd",
        "postfix/submission/smtpd",
        "postfix/smtps/smtpd",
        "postfix/submissions/smtpd",
        "postfix-out/smtp",
        "postfix/qmgr",
        "postfix/nqmgr",
        "x/qmgr",
        "/smtp",
        "a/lmtp",
        "/cleanup",
        "postfix/cleanup",
        "postfix/virtual",
        "postfix/discard",
        "postfix/pickup",
        "postfix/local",
        "postfix/pipe",
        "postfix/error",
        "postfix/retry",
        "smtpd",
        "smtps/smtpd",
        "xsmtps/smtpd",
        "submissions/smtpd/",
        "qmgr",
        "postfix/xqmgr",
        "postfix/smtpdx",
        "postfix/cleanupx",
        "postfix/xcleanup",
        "postfix//smtp",
        "postfix/sm/tp",
        "postfix/anvil",
        "postfix/bounce",
        "\0qmgr",
        "\0/qmgr",
        "qmgr\0",
        "postfix/qmgr\0\0\0",
        "\0\0\0/smtp",
        "/",
        "",
        "exim",
        "sm-mta",
    ];

    /// The daemon as the name after the last `/`, compared as text.
    fn daemon_by_text(program: &str) -> Option<Daemon> {
        let (_, name) = program.rsplit_once('/')?;
        Some(match name {
            "smtpd" => Daemon::Smtpd,
            "qmgr" | "nqmgr" => Daemon::Qmgr,
            "pickup" => Daemon::Pickup,
            "cleanup" => Daemon::Cleanup,
            "smtp" => Daemon::Client { lmtp: false },
            "lmtp" => Daemon::Client { lmtp: true },
            "local" | "virtual" | "pipe" => Daemon::LocalDelivery,
            "error" | "discard" | "retry" => Daemon::NoHop,
            _ => return None,
        })
    }

    #[test]
    fn daemon_words_name_the_last_component() {
        for program in PROGRAMS {
            assert_eq!(
                daemon(program.as_bytes()),
                daemon_by_text(program),
                "{program:?}"
            );
        }
    }

    #[test]
    fn short_texts_compare_as_texts() {
        let texts = [
            "",
            "m",
            "mx",
            "mx1",
            "postfix",
            "postfix/",
            "postfix/smtp",
            "postfix/smtpd",
            "postfix/smtpe",
            "qostfix/smtpd",
            "postfix/xmtpd",
            "0123456789abcdef",
            "0123456789abcdeF",
            "1123456789abcdef",
            "0123456789abcdef0",
            "postfix/submission/smtpd",
            "postfix/submission/smtpe",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(
                    super::same_short_text(a.as_bytes(), b.as_bytes()),
                    a == b,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn implicit_tls_services_are_the_last_two_components() {
        for program in PROGRAMS {
            let mut parts = program.rsplit('/');
            let want = parts.next() == Some("smtpd")
                && matches!(parts.next(), Some("smtps" | "submissions"));
            assert_eq!(implicit_tls_service(program), want, "{program:?}");
        }
    }
}
