//! One raw log line → its envelope: timestamp, host, program, pid and the message, for
//! every format sigillo reads (RFC 3164 syslog without a year, ISO 8601 / RFC 3339 syslog,
//! RFC 5424, journald `short-iso`, and Exim's own mainlog). No I/O.
//!
//! The parsers find a line's parts as offsets (`LineParts`), which the reader keeps as spans
//! of its blocks; [`Envelope::parse`] gives them as slices of the line ([`Line`]).
//!
//! [`Envelope`] is the per-file parser state: the [`YearGuess`] for timestamps without a year,
//! a one-entry cache of the last RFC 3164 timestamp (log lines come many to a second; a line
//! in another second of the same minute changes only the seconds) and one of the host after
//! a syslog timestamp (most logs are from one host).
//! Times with a zone are converted to UTC; times without one are taken as UTC.

use crate::model::UnixTime;
use std::fmt;

/// A log line split into its envelope. Borrowed from the raw line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// When, in Unix seconds (a time without zone is taken as UTC).
    pub time: UnixTime,
    /// The host that logged it (empty for Exim's mainlog).
    pub host: &'a str,
    /// The program or syslog tag without the pid: `postfix/smtpd`,
    /// `postfix/submission/smtpd`, `exim` (also for Exim's mainlog), `sm-mta`, `smtpd`.
    pub program: &'a str,
    pub pid: Option<u32>,
    /// What follows the tag (`connect from …`, `1xV7Qo-… <= …`).
    pub message: &'a str,
    /// The whole line, for evidence.
    pub raw: &'a str,
}

/// A [`Line`] with its parts as byte offsets of the line: what the parsers find, so that a
/// caller keeping lines in a larger buffer ([`crate::input::LineBlock`]) takes its spans as
/// they are. Offsets fall next to ASCII delimiters, so on char boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineParts {
    pub time: UnixTime,
    pub pid: Option<u32>,
    /// Start and end of the host (equal when there is none).
    pub host: (usize, usize),
    pub program: Program,
    /// Where the message starts; it runs to the end of the line.
    pub message: usize,
}

/// Where a line's program is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    /// Start and end in the line (equal when there is none).
    At(usize, usize),
    /// `exim`, for Exim's mainlog, whose lines name no program.
    Exim,
}

impl LineParts {
    /// The parts as slices of `raw`, the line they were found in.
    pub(crate) fn line(self, raw: &str) -> Line<'_> {
        let get = |(start, end): (usize, usize)| raw.get(start..end).unwrap_or_default();
        Line {
            time: self.time,
            host: get(self.host),
            program: match self.program {
                Program::At(start, end) => get((start, end)),
                Program::Exim => "exim",
            },
            pid: self.pid,
            message: raw.get(self.message..).unwrap_or_default(),
            raw,
        }
    }
}

/// The envelope formats [`Envelope::parse`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LineFormat {
    /// `Nov 22 13:24:13 host tag[pid]: msg` (no year; optionally `<PRI>` first).
    Rfc3164,
    /// `2026-11-22T13:24:13.123456+01:00 host tag[pid]: msg` (rsyslog high precision, and
    /// journald `short-iso` with `+0100`).
    Rfc3339,
    /// `<22>1 2026-11-22T13:24:13.123Z host app procid msgid [sd] msg`.
    Rfc5424,
    /// Exim's mainlog: `2026-11-22 13:16:34 [+0100] [[pid]] msg`.
    EximMainlog,
}

impl fmt::Display for LineFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineFormat::Rfc3164 => "RFC 3164 syslog",
            LineFormat::Rfc3339 => "RFC 3339 syslog",
            LineFormat::Rfc5424 => "RFC 5424 syslog",
            LineFormat::EximMainlog => "Exim mainlog",
        })
    }
}

/// The part of a line that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    Priority,
    Version,
    Timestamp,
    Host,
    Tag,
    Pid,
    StructuredData,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Priority => "priority",
            Field::Version => "version",
            Field::Timestamp => "timestamp",
            Field::Host => "host",
            Field::Tag => "tag",
            Field::Pid => "pid",
            Field::StructuredData => "structured data",
        })
    }
}

/// Why a line has no envelope. Cheap to build (no allocation): bad lines can be many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("empty line")]
    Empty,
    /// The line starts like none of the formats (byte offset of the first non-blank byte).
    #[error("no known log format starts like this")]
    UnknownFormat,
    /// The line starts like `format` but `field`, at byte `offset` of the line, is not valid.
    #[error("{format} line with a bad {field} at byte {offset}")]
    Malformed {
        format: LineFormat,
        field: Field,
        offset: usize,
    },
}

/// The year for timestamps that have none (RFC 3164). Built from the file's mtime: the first
/// line gets the mtime's year, minus one when its month is after the mtime's month (a file
/// last written in January that starts in December). Later lines follow rollover: a month
/// that drops by six or more (Dec → Jan) starts the next year; a month that jumps forward by
/// nine or more (a late Dec line after Jan) belongs to the year before and changes nothing.
/// Smaller steps back are taken as lines slightly out of order, smaller jumps forward as a
/// gap in the log, both within the same year.
/// [`YearGuess::forced`] (`--year`) fixes the first line's year instead; rollover still applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YearGuess {
    start_year: i32,
    /// 1–12; 0 when the year is forced.
    ref_month: u8,
    /// Year and month of the last line that moved the state.
    last: Option<(i32, u8)>,
}

impl YearGuess {
    /// From the file's modification time as a calendar year and month (1–12), in UTC.
    pub fn from_mtime(year: i32, month: u8) -> Self {
        YearGuess {
            start_year: year,
            ref_month: month.clamp(1, 12),
            last: None,
        }
    }

    /// From the file's modification time in Unix seconds.
    pub fn from_unix_mtime(t: UnixTime) -> Self {
        let (y, m, _) = civil_from_days(t.div_euclid(86_400));
        YearGuess::from_mtime(y.clamp(i32::MIN as i64, i32::MAX as i64) as i32, m as u8)
    }

    /// `--year`: the first line is in `year`.
    pub fn forced(year: i32) -> Self {
        YearGuess {
            start_year: year,
            ref_month: 0,
            last: None,
        }
    }

    /// `--year` for a file read after another: the year goes on from the time of that file's
    /// last line, so a line of January after one of December is in the next year.
    pub fn continuing(last_time: UnixTime) -> Self {
        let at = YearGuess::from_unix_mtime(last_time);
        YearGuess {
            start_year: at.start_year,
            ref_month: 0,
            last: Some((at.start_year, at.ref_month)),
        }
    }

    /// The year of a line in `month` (1–12), updating the rollover state.
    pub fn year_for(&mut self, month: u8) -> i32 {
        match self.last {
            None => {
                let y = if self.ref_month != 0 && month > self.ref_month {
                    self.start_year.saturating_sub(1)
                } else {
                    self.start_year
                };
                self.last = Some((y, month));
                y
            }
            Some((y, last)) if month == last => y,
            Some((y, last)) if month < last => {
                let y = if last - month >= 6 {
                    y.saturating_add(1)
                } else {
                    y
                };
                self.last = Some((y, month));
                y
            }
            Some((y, last)) => {
                if month - last >= 9 {
                    // A straggler from before the rollover: no state change.
                    y.saturating_sub(1)
                } else {
                    self.last = Some((y, month));
                    y
                }
            }
        }
    }
}

/// Per-file envelope parser: the year state, a timestamp cache and a host cache.
#[derive(Debug, Clone)]
pub struct Envelope {
    year: YearGuess,
    /// The first 16 bytes of the last RFC 3164 line (`Nov 22 13:24:13 m`), when they hold
    /// its whole timestamp; with where the timestamp ends and its time. 0 = empty.
    cache_key: [u8; 16],
    cache_len: u8,
    cache_time: UnixTime,
    hosts: HostCache,
}

/// What followed the timestamp of a recent syslog line with a host (` mx `: blanks, the host,
/// blanks), when that fits in 15 bytes: a line with the same bytes after its timestamp, and
/// no blank after them, has the same host and its tag where they end.
#[derive(Debug, Clone, Copy)]
struct HostCache {
    /// The bytes, little-endian, the rest zero.
    key: u128,
    /// Ones over the bytes (none when empty, which no window then matches).
    mask: u128,
    /// How many bytes.
    len: u8,
    /// Where the host starts and ends in them.
    host: (u8, u8),
}

impl Default for HostCache {
    fn default() -> Self {
        HostCache {
            key: 1,
            mask: 0,
            len: 0,
            host: (0, 0),
        }
    }
}

impl HostCache {
    /// The host and where the tag starts, for a line whose timestamp ends at `i`, if the
    /// cached bytes follow it.
    #[inline]
    fn find(&self, b: &[u8], i: usize) -> Option<((usize, usize), usize)> {
        let window = u128::from_le_bytes(*b.get(i..)?.first_chunk::<16>()?);
        let tag_start = i + usize::from(self.len);
        if window & self.mask != self.key || matches!(b.get(tag_start), None | Some(b' ' | b'\t')) {
            return None;
        }
        let (host_start, host_end) = self.host;
        Some((
            (i + usize::from(host_start), i + usize::from(host_end)),
            tag_start,
        ))
    }

    /// Keeps `b[i..tag_start]`, a timestamp's end to its tag, with the host in it.
    fn remember(&mut self, b: &[u8], i: usize, host: (usize, usize), tag_start: usize) {
        let len = tag_start - i;
        if len >= 16 || host.1 >= tag_start {
            return;
        }
        let Some(window) = b.get(i..).and_then(|rest| rest.first_chunk::<16>()) else {
            return;
        };
        let mask = (1u128 << (8 * len)) - 1;
        *self = HostCache {
            key: u128::from_le_bytes(*window) & mask,
            mask,
            len: len as u8,
            host: ((host.0 - i) as u8, (host.1 - i) as u8),
        };
    }
}

impl Envelope {
    pub fn new(year: YearGuess) -> Self {
        Envelope {
            year,
            cache_key: [0; 16],
            cache_len: 0,
            cache_time: 0,
            hosts: HostCache::default(),
        }
    }

    pub fn year_guess(&self) -> &YearGuess {
        &self.year
    }

    /// Splits one line (without its line ending) into its envelope.
    pub fn parse<'a>(&mut self, raw: &'a str) -> Result<Line<'a>, EnvelopeError> {
        self.parse_parts(raw.as_bytes())
            .map(|parts| parts.line(raw))
    }

    /// [`Envelope::parse`] with the parts as offsets of the line, given as its bytes (valid
    /// UTF-8: the offsets are char boundaries of it).
    pub(crate) fn parse_parts(&mut self, b: &[u8]) -> Result<LineParts, EnvelopeError> {
        if self.cache_len != 0 && b.first_chunk::<16>() == Some(&self.cache_key) {
            // The line starts with the cached RFC 3164 timestamp (a month's letter first, no
            // blank or `<`): what `parse_3164` would find in its cache, found first.
            let end = usize::from(self.cache_len);
            return syslog_tail(
                b,
                end,
                self.cache_time,
                LineFormat::Rfc3164,
                &mut self.hosts,
            );
        }
        let mut i = skip_blanks(b, 0);
        match b.get(i) {
            None => Err(EnvelopeError::Empty),
            Some(b'<') => {
                let (_pri, next) = parse_pri(b, i)?;
                i = next;
                if b.get(i) == Some(&b'1') && b.get(i + 1) == Some(&b' ') {
                    parse_5424(b, i + 2)
                } else if b.get(i).is_some_and(u8::is_ascii_digit) && b.get(i + 1) == Some(&b' ') {
                    Err(malformed(LineFormat::Rfc5424, Field::Version, i))
                } else {
                    match b.get(i) {
                        Some(b'A'..=b'Z') => self.parse_3164(b, i),
                        Some(b'0'..=b'9') => parse_iso(b, i, &mut self.hosts),
                        _ => Err(malformed(LineFormat::Rfc5424, Field::Version, i)),
                    }
                }
            }
            Some(b'A'..=b'Z') => self.parse_3164(b, i),
            Some(b'0'..=b'9') => parse_iso(b, i, &mut self.hosts),
            Some(_) => Err(EnvelopeError::UnknownFormat),
        }
    }

    /// The time of an RFC 3164 line whose first 16 bytes `w` differ from the cached ones only
    /// in the seconds: the cached time with the seconds changed. The same day and month give
    /// the same year (the line that filled the cache was the last to ask [`YearGuess`], for
    /// that month). `None` when that is not so, or a fraction follows the seconds.
    #[inline]
    fn next_second(&self, w: [u8; 16]) -> Option<UnixTime> {
        let end = usize::from(self.cache_len);
        // The cached timestamp ends in `:ss` within the window (it has no fraction).
        let ss = end.checked_sub(2)?;
        let (old, new) = (self.cache_key.get(ss..end)?, w.get(ss..end)?);
        let same_before = (u128::from_le_bytes(w) ^ u128::from_le_bytes(self.cache_key))
            .trailing_zeros()
            >= 8 * ss as u32;
        if !same_before || w.get(end) == Some(&b'.') {
            return None;
        }
        let seconds = |d: &[u8]| match *d {
            [tens @ b'0'..=b'9', ones @ b'0'..=b'9'] => {
                Some(i64::from(tens - b'0') * 10 + i64::from(ones - b'0'))
            }
            _ => None,
        };
        let (old, new) = (seconds(old)?, seconds(new)?);
        (new <= 60).then(|| self.cache_time - old + new)
    }

    fn parse_3164(&mut self, b: &[u8], start: usize) -> Result<LineParts, EnvelopeError> {
        const F: LineFormat = LineFormat::Rfc3164;
        let bad = |field, at| malformed(F, field, at);
        let window: Option<[u8; 16]> = b
            .get(start..start + 16)
            .and_then(|w| <[u8; 16]>::try_from(w).ok());
        if self.cache_len != 0 && window == Some(self.cache_key) {
            // Same first 16 bytes, which hold the whole timestamp: same time.
            let end = start + usize::from(self.cache_len);
            return syslog_tail(b, end, self.cache_time, F, &mut self.hosts);
        }
        if let Some(w) = window
            && let Some(time) = self.next_second(w)
        {
            let end = start + usize::from(self.cache_len);
            self.cache_key = w;
            self.cache_time = time;
            return syslog_tail(b, end, time, F, &mut self.hosts);
        }
        // `Nov 22 13:24:13` / `Nov  2 13:24:13` / `Nov 2 13:24:13`: find the end of hh:mm:ss.
        let mut i = start + 3;
        if b.get(i) != Some(&b' ') {
            return Err(bad(Field::Timestamp, start));
        }
        i = skip_spaces(b, i);
        let day_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) && i - day_start < 2 {
            i += 1;
        }
        if i == day_start || b.get(i) != Some(&b' ') {
            return Err(bad(Field::Timestamp, day_start));
        }
        let day_end = i;
        i = skip_spaces(b, i);
        let hms = i;
        let hms_end = hms + 8;
        let month = month_number(b.get(start..start + 3).unwrap_or_default())
            .ok_or(bad(Field::Timestamp, start))?;
        let day = digits(b, day_start, day_end).ok_or(bad(Field::Timestamp, day_start))?;
        let secs = parse_hms(b, hms).ok_or(bad(Field::Timestamp, hms))?;
        if day == 0 || day > days_in_month(month, true) {
            return Err(bad(Field::Timestamp, day_start));
        }
        let year = self.year.year_for(month as u8);
        // `Feb 29` of a year that has none (forced or guessed) is no date: a bad line, as an
        // ISO `2027-02-29` is, not silently `Mar 1`.
        if day > days_in_month(month, is_leap(year.rem_euclid(400).unsigned_abs())) {
            return Err(bad(Field::Timestamp, day_start));
        }
        let time = days_from_civil(i64::from(year), month, day) * 86_400 + secs;
        i = skip_fraction(b, hms_end);
        match window {
            Some(w) if i - start <= 16 => {
                self.cache_key = w;
                self.cache_len = (i - start) as u8;
                self.cache_time = time;
            }
            _ => self.cache_len = 0,
        }
        syslog_tail(b, i, time, F, &mut self.hosts)
    }
}

fn malformed(format: LineFormat, field: Field, offset: usize) -> EnvelopeError {
    EnvelopeError::Malformed {
        format,
        field,
        offset,
    }
}

/// `<PRI>`: 1–3 digits, at most 191. Returns the index after `>`.
fn parse_pri(b: &[u8], lt: usize) -> Result<(u32, usize), EnvelopeError> {
    let bad = malformed(LineFormat::Rfc5424, Field::Priority, lt);
    let mut i = lt + 1;
    let mut v = 0u32;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        v = v * 10 + u32::from(d - b'0');
        i += 1;
        if i - lt > 4 {
            return Err(bad);
        }
    }
    if i == lt + 1 || b.get(i) != Some(&b'>') || v > 191 {
        return Err(bad);
    }
    Ok((v, i + 1))
}

/// After the timestamp (ending at `ts_end`) of an RFC 3164 or RFC 3339 syslog line:
/// ` host tag[pid]: message`. A first token that ends in `:` is a tag with no host before it.
fn syslog_tail(
    b: &[u8],
    ts_end: usize,
    time: UnixTime,
    format: LineFormat,
    hosts: &mut HostCache,
) -> Result<LineParts, EnvelopeError> {
    let (host, tag_start) = match hosts.find(b, ts_end) {
        Some(found) => found,
        None => find_host(b, ts_end, format, hosts)?,
    };
    let (program, pid, message) = split_tag(b, tag_start, format)?;
    Ok(LineParts {
        time,
        pid,
        host,
        program,
        message,
    })
}

/// The host after a timestamp ending at `ts_end` (empty when there is none) and where the tag
/// starts; remembered in `hosts`.
fn find_host(
    b: &[u8],
    ts_end: usize,
    format: LineFormat,
    hosts: &mut HostCache,
) -> Result<((usize, usize), usize), EnvelopeError> {
    if b.get(ts_end) != Some(&b' ') && b.get(ts_end) != Some(&b'\t') {
        return Err(malformed(format, Field::Timestamp, ts_end));
    }
    let host_start = skip_blanks(b, ts_end);
    let host_end = find_blank(b, host_start);
    if host_end == host_start {
        return Err(malformed(format, Field::Host, host_start));
    }
    if b.get(host_end - 1) == Some(&b':') {
        return Ok(((host_start, host_start), host_start));
    }
    let tag_start = skip_blanks(b, host_end);
    hosts.remember(b, ts_end, (host_start, host_end), tag_start);
    Ok(((host_start, host_end), tag_start))
}

/// `program[pid]: message`, `program: message`; a line with no tag (`last message repeated`)
/// has an empty program and the whole rest as message. Returns the program, the pid and where
/// the message starts.
fn split_tag(
    b: &[u8],
    start: usize,
    format: LineFormat,
) -> Result<(Program, Option<u32>, usize), EnvelopeError> {
    let stop = find_any(
        b.get(start..).unwrap_or_default(),
        [b'[', b':', b' ', b'\t'],
    );
    if let Some(n) = stop {
        let i = start + n;
        match b.get(i).copied().unwrap_or(b' ') {
            b'[' => {
                let program = Program::At(start, i);
                let pid_start = i + 1;
                let (value, digits) = leading_number(b.get(pid_start..).unwrap_or_default());
                let mut j = pid_start + digits;
                let pid =
                    u32::try_from(value).map_err(|_| malformed(format, Field::Pid, pid_start))?;
                if digits == 0 || b.get(j) != Some(&b']') {
                    return Err(malformed(format, Field::Pid, pid_start));
                }
                j += 1;
                if b.get(j) == Some(&b':') {
                    j += 1;
                }
                return Ok((program, Some(pid), message_from(b, j)));
            }
            b':' => {
                return Ok((Program::At(start, i), None, message_from(b, i + 1)));
            }
            _ => {}
        }
    }
    Ok((Program::At(start, start), None, start))
}

/// Where the message after a tag starts: one separating space is dropped.
fn message_from(b: &[u8], i: usize) -> usize {
    if b.get(i) == Some(&b' ') { i + 1 } else { i }
}

/// `YYYY-MM-DDThh:mm:ss…` (RFC 3339 syslog, journald short-iso) or `YYYY-MM-DD hh:mm:ss…`
/// (Exim's mainlog).
fn parse_iso(b: &[u8], start: usize, hosts: &mut HostCache) -> Result<LineParts, EnvelopeError> {
    match b.get(start + 10) {
        Some(b'T') | Some(b't') => {
            let (time, i) = parse_datetime(b, start, LineFormat::Rfc3339)?;
            syslog_tail(b, i, time, LineFormat::Rfc3339, hosts)
        }
        Some(b' ') => parse_exim(b, start),
        _ => Err(EnvelopeError::UnknownFormat),
    }
}

/// `YYYY-MM-DDThh:mm:ss[.frac][Z|±hh:mm|±hhmm]`. Returns the UTC time and the index after it.
fn parse_datetime(
    b: &[u8],
    start: usize,
    format: LineFormat,
) -> Result<(UnixTime, usize), EnvelopeError> {
    let days = parse_date(b, start).ok_or(malformed(format, Field::Timestamp, start))?;
    let secs = parse_hms(b, start + 11).ok_or(malformed(format, Field::Timestamp, start + 11))?;
    let mut i = skip_fraction(b, start + 19);
    let offset = match b.get(i) {
        Some(b'Z') | Some(b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let (off, next) =
                parse_offset(b, i + 1, true).ok_or(malformed(format, Field::Timestamp, i))?;
            i = next;
            if sign == b'+' { off } else { -off }
        }
        _ => 0,
    };
    Ok((days * 86_400 + secs - offset, i))
}

/// `hh:mm`, `hhmm` (`colon_optional`) → seconds, and the index after it.
fn parse_offset(b: &[u8], i: usize, colon_optional: bool) -> Option<(i64, usize)> {
    let h = digits(b, i, i + 2)?;
    let (m, next) = if b.get(i + 2) == Some(&b':') {
        (digits(b, i + 3, i + 5)?, i + 5)
    } else if colon_optional || b.get(i + 2).is_some_and(u8::is_ascii_digit) {
        (digits(b, i + 2, i + 4)?, i + 4)
    } else {
        return None;
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some((i64::from(h * 3600 + m * 60), next))
}

/// Exim: `2026-11-22 13:16:34[.mmm] [+0100 ][[pid] ]message`.
fn parse_exim(b: &[u8], start: usize) -> Result<LineParts, EnvelopeError> {
    const F: LineFormat = LineFormat::EximMainlog;
    let days = parse_date(b, start).ok_or(malformed(F, Field::Timestamp, start))?;
    let secs = parse_hms(b, start + 11).ok_or(malformed(F, Field::Timestamp, start + 11))?;
    let mut time = days * 86_400 + secs;
    let mut i = skip_fraction(b, start + 19);
    if b.get(i) != Some(&b' ') {
        return Err(malformed(F, Field::Timestamp, i));
    }
    i += 1;
    // log_timezone: ` +0100 `.
    if let Some(&sign @ (b'+' | b'-')) = b.get(i)
        && let Some((off, next)) = parse_offset(b, i + 1, false)
        && (b.get(next) == Some(&b' ') || next == b.len())
    {
        time -= if sign == b'+' { off } else { -off };
        i = (next + 1).min(b.len());
    }
    // +pid: `[1234] `.
    let mut pid = None;
    if b.get(i) == Some(&b'[') {
        let (value, digits) = leading_number(b.get(i + 1..).unwrap_or_default());
        let j = i + 1 + digits;
        let v = u32::try_from(value).map_err(|_| malformed(F, Field::Pid, i))?;
        if digits == 0 || b.get(j) != Some(&b']') {
            return Err(malformed(F, Field::Pid, i));
        }
        pid = Some(v);
        i = j + 1;
        if b.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    Ok(LineParts {
        time,
        pid,
        host: (0, 0),
        program: Program::Exim,
        message: i,
    })
}

/// RFC 5424 after `<PRI>1 `: `TIMESTAMP HOST APP PROCID MSGID SD [MSG]`.
fn parse_5424(b: &[u8], start: usize) -> Result<LineParts, EnvelopeError> {
    const F: LineFormat = LineFormat::Rfc5424;
    if b.get(start) == Some(&b'-') {
        // NILVALUE timestamp: the line has no time.
        return Err(malformed(F, Field::Timestamp, start));
    }
    let (time, mut i) = parse_datetime(b, start, F)?;
    let mut fields = [(0, 0); 4]; // host, app, procid, msgid
    for (n, slot) in fields.iter_mut().enumerate() {
        if b.get(i) != Some(&b' ') {
            let field = if n == 0 { Field::Timestamp } else { Field::Tag };
            return Err(malformed(F, field, i));
        }
        i += 1;
        let end = find_blank(b, i);
        if end == i {
            return Err(malformed(F, Field::Tag, i));
        }
        *slot = if end == i + 1 && b.get(i) == Some(&b'-') {
            (i, i)
        } else {
            (i, end)
        };
        i = end;
    }
    let [host, (program_start, program_end), procid, _msgid] = fields;
    // A number of up to nine digits; anything else is no pid.
    let pid = digits(b, procid.0, procid.1);
    if b.get(i) != Some(&b' ') {
        return Err(malformed(F, Field::StructuredData, i));
    }
    i += 1;
    i = skip_structured_data(b, i).ok_or(malformed(F, Field::StructuredData, i))?;
    let message = match b.get(i) {
        None => i,
        Some(b' ') => {
            let bom = "\u{feff}".as_bytes();
            if b.get(i + 1..).is_some_and(|m| m.starts_with(bom)) {
                i + 1 + bom.len()
            } else {
                i + 1
            }
        }
        Some(_) => return Err(malformed(F, Field::StructuredData, i)),
    };
    Ok(LineParts {
        time,
        pid,
        host,
        program: Program::At(program_start, program_end),
        message,
    })
}

/// `-` or one or more `[id param="value"…]` (values may hold `\"`, `\\`, `\]`). Returns the
/// index after it.
fn skip_structured_data(b: &[u8], start: usize) -> Option<usize> {
    match b.get(start)? {
        b'-' => return Some(start + 1),
        b'[' => {}
        _ => return None,
    }
    let mut i = start;
    while b.get(i) == Some(&b'[') {
        i += 1;
        let mut quoted = false;
        loop {
            match *b.get(i)? {
                b'\\' if quoted => i += 2,
                b'"' => {
                    quoted = !quoted;
                    i += 1;
                }
                b']' if !quoted => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
    }
    Some(i)
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ') | Some(b'\t')) {
        i += 1;
    }
    i
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

fn find_blank(b: &[u8], i: usize) -> usize {
    match b.get(i..) {
        Some(rest) => i + find_any(rest, [b' ', b'\t']).unwrap_or(rest.len()),
        None => i,
    }
}

/// Where the first of `needles` is in `b`. Eight bytes at a time: in each word, a byte equal
/// to a needle is a zero byte of `word ^ needle`, found with the borrow trick, which is exact
/// up to the lowest zero byte (it may also flag bytes above it, never below).
fn find_any<const N: usize>(b: &[u8], needles: [u8; N]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for chunk in words.by_ref() {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default());
        let mut hits = 0;
        for needle in needles {
            let x = word ^ (ONES * u64::from(needle));
            hits |= x.wrapping_sub(ONES) & !x & HIGHS;
        }
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = words.remainder();
    rest.iter()
        .position(|c| needles.contains(c))
        .map(|n| at + n)
}

/// The number the digits at the start of `b` spell (held at 2^32 once past `u32::MAX`) and
/// how many digits there are. Up to seven digits, with a non-digit after them within eight
/// bytes, are read at once: a byte is not a digit when it is below `0` or adding 0x46 takes it
/// to 0x80 or more (exact up to the first such byte), and the digits, shifted to the top of
/// the word, are summed pairwise in three multiplications.
fn leading_number(b: &[u8]) -> (u64, usize) {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    if let Some(word) = b.first_chunk::<8>() {
        let word = u64::from_le_bytes(*word);
        let not_digit = (word.wrapping_sub(ZEROS) | word.wrapping_add(0x4646_4646_4646_4646))
            & 0x8080_8080_8080_8080;
        let digits = (not_digit.trailing_zeros() / 8) as usize;
        if digits == 0 {
            return (0, 0);
        }
        if digits < 8 {
            let mut v = word.wrapping_sub(ZEROS) << (8 * (8 - digits));
            v = ((v & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(10 << 8 | 1)) >> 8;
            v = ((v & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 << 16 | 1)) >> 16;
            v = ((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 << 32 | 1)) >> 32;
            return (v, digits);
        }
    }
    let mut value = 0u64;
    let mut digits = 0;
    while let Some(d) = b.get(digits).filter(|c| c.is_ascii_digit()) {
        value = (value * 10 + u64::from(d - b'0')).min(1 << 32);
        digits += 1;
    }
    (value, digits)
}

/// `.123456` after seconds: skipped (times are whole seconds).
fn skip_fraction(b: &[u8], mut i: usize) -> usize {
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    i
}

/// The decimal number in `b[from..to]`, all digits, at most 9 of them.
fn digits(b: &[u8], from: usize, to: usize) -> Option<u32> {
    let s = b.get(from..to)?;
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// `hh:mm:ss` at `i` → seconds of the day (a leap second 60 is accepted).
fn parse_hms(b: &[u8], i: usize) -> Option<i64> {
    let &[h1, h2, b':', m1, m2, b':', s1, s2] = b.get(i..i + 8)? else {
        return None;
    };
    let two = |tens: u8, ones: u8| {
        (tens.is_ascii_digit() && ones.is_ascii_digit())
            .then(|| u32::from(tens - b'0') * 10 + u32::from(ones - b'0'))
    };
    let (h, m, s) = (two(h1, h2)?, two(m1, m2)?, two(s1, s2)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(i64::from(h * 3600 + m * 60 + s))
}

/// `YYYY-MM-DD` at `i` → days since 1970-01-01.
fn parse_date(b: &[u8], i: usize) -> Option<i64> {
    if b.get(i + 4) != Some(&b'-') || b.get(i + 7) != Some(&b'-') {
        return None;
    }
    let y = digits(b, i, i + 4)?;
    let m = digits(b, i + 5, i + 7)?;
    let d = digits(b, i + 8, i + 10)?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(m, is_leap(y)) {
        return None;
    }
    Some(days_from_civil(i64::from(y), m, d))
}

fn month_number(abbr: &[u8]) -> Option<u32> {
    Some(match abbr {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

fn is_leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

fn days_in_month(m: u32, leap: bool) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a case file (format described at the top of `testdata/envelope/cases.txt`);
    /// returns how many lines it checked.
    fn run_cases(name: &str, text: &str) -> usize {
        let mut checked = 0;
        for (b, block) in text.split("\n\n").enumerate() {
            let mut env = Envelope::new(YearGuess::from_mtime(2026, 11));
            let mut current: Option<(String, Result<Line<'_>, EnvelopeError>)> = None;
            for (n, row) in block.lines().enumerate() {
                if row.starts_with('#') || row.is_empty() {
                    continue;
                }
                let (key, value) = row
                    .split_once('\t')
                    .unwrap_or_else(|| panic!("{name} block {b} row {n}: no tab in {row:?}"));
                let at = || format!("{name} block {b}: {current:?}");
                match key {
                    "mtime" => {
                        let (y, m) = value.split_once('-').expect("mtime YYYY-MM");
                        env = Envelope::new(YearGuess::from_mtime(
                            y.parse().unwrap(),
                            m.parse().unwrap(),
                        ));
                    }
                    "year" => env = Envelope::new(YearGuess::forced(value.parse().unwrap())),
                    "in" => {
                        checked += 1;
                        current = Some((value.to_string(), env.parse(value)));
                    }
                    _ => {
                        let (_, got) = current.as_ref().expect("expectation before any `in`");
                        match (key, got) {
                            ("error", Err(e)) => {
                                let e = match e {
                                    EnvelopeError::Malformed {
                                        format,
                                        field,
                                        offset,
                                    } => format!("{format:?} {field:?} {offset}"),
                                    other => format!("{other:?}"),
                                };
                                assert_eq!(e, value, "{}", at());
                            }
                            (_, Err(e)) => panic!("{}: unexpected error {e}", at()),
                            ("error", Ok(_)) => panic!("{}: parsed, wanted error {value}", at()),
                            ("time", Ok(l)) => {
                                let want: jiff::Timestamp = value.parse().unwrap();
                                assert_eq!(l.time, want.as_second(), "{}", at());
                            }
                            ("host", Ok(l)) => assert_eq!(l.host, value, "{}", at()),
                            ("program", Ok(l)) => assert_eq!(l.program, value, "{}", at()),
                            ("message", Ok(l)) => assert_eq!(l.message, value, "{}", at()),
                            ("pid", Ok(l)) => {
                                let want = (value != "-").then(|| value.parse().unwrap());
                                assert_eq!(l.pid, want, "{}", at());
                            }
                            _ => panic!("{name}: unknown key {key:?}"),
                        }
                        if let (Some((input, Ok(l))), "time") = (&current, key) {
                            assert_eq!(l.raw, input.as_str());
                        }
                    }
                }
            }
        }
        checked
    }

    #[test]
    fn envelope_cases() {
        let n = run_cases("cases.txt", include_str!("../testdata/envelope/cases.txt"));
        assert!(n >= 65, "only {n} cases ran");
    }

    #[test]
    fn year_inference() {
        let n = run_cases("years.txt", include_str!("../testdata/envelope/years.txt"));
        assert!(n >= 20, "only {n} cases ran");
    }

    #[test]
    fn civil_round_trip() {
        // Against jiff, every day from 1900 to 2200.
        let mut day = jiff::civil::date(1900, 1, 1);
        let end = jiff::civil::date(2200, 1, 1);
        while day < end {
            let z = days_from_civil(i64::from(day.year()), day.month() as u32, day.day() as u32);
            let ts = day.to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp();
            assert_eq!(z * 86_400, ts.as_second(), "{day}");
            assert_eq!(
                civil_from_days(z),
                (i64::from(day.year()), day.month() as u32, day.day() as u32)
            );
            day = day.tomorrow().unwrap();
        }
    }

    #[test]
    fn year_guess_from_unix_mtime() {
        let cases = [
            (0, (1970, 1)),
            (1_795_000_000, (2026, 11)), // 2026-11-18
            (1_798_761_599, (2026, 12)), // 2026-12-31T23:59:59Z
            (1_798_761_600, (2027, 1)),
            (-1, (1969, 12)),
        ];
        for (t, (y, m)) in cases {
            assert_eq!(
                YearGuess::from_unix_mtime(t),
                YearGuess::from_mtime(y, m),
                "{t}"
            );
        }
    }

    #[test]
    fn cache_does_not_leak_between_formats_or_days() {
        // Same time text, different day; same prefix, different second.
        let mut env = Envelope::new(YearGuess::from_mtime(2026, 11));
        let a = env.parse("Nov 22 13:24:13 mx a[1]: x").unwrap().time;
        let b = env.parse("Nov 22 13:24:13 mx a[1]: y").unwrap().time;
        let c = env.parse("Nov 22 13:24:14 mx a[1]: y").unwrap().time;
        let d = env.parse("Nov  2 13:24:13 mx a[1]: y").unwrap().time;
        let e = env.parse("Nov 2 13:24:13 mx a[1]: y").unwrap().time;
        assert_eq!(a, b);
        assert_eq!(c, a + 1);
        assert_eq!(d, a - 20 * 86_400);
        assert_eq!(e, d);
    }

    #[test]
    fn the_cache_gives_what_a_fresh_parse_gives() {
        // Every line after every other: same or different second, host (longer, shorter),
        // blanks after the host, a host-less tag, short lines, another format.
        let lines = [
            "Nov 22 13:24:13 mx postfix/smtpd[1]: connect from a[192.0.2.1] and more text",
            "Nov 22 13:24:13 mx postfix/qmgr[2]: 4B6A19AC1C8: from=<a@b.example>, size=1",
            "Nov 22 13:24:13 mx  postfix/qmgr[2]: two blanks after the host, then more text",
            "Nov 22 13:24:13 mx\tpostfix/qmgr[2]: a tab after the host, then more text here",
            "Nov 22 13:24:13 mx \tpostfix/qmgr[2]: a space and a tab, then more text here",
            "Nov 22 13:24:13 mx2 postfix/smtp[3]: another host with more text after it all",
            "Nov 22 13:24:13 mail.example.org postfix/smtp[3]: a long host name and text",
            "Nov 22 13:24:13 mail.example.org.with.a.host.name.past.the.window x[1]: y",
            "Nov 22 13:24:13 postfix/smtpd[1]: a tag with no host, and some more text here",
            "Nov 22 13:24:13 mx: a host that ends in a colon, and some more text after it",
            "Nov 22 13:24:13 mx postfix/smtpd[1]: short",
            "Nov 22 13:24:13 mx ",
            "Nov 22 13:24:13 mx",
            "Nov 22 13:24:14 mx postfix/smtpd[1]: the next second, with more text after it",
            "Nov 22 13:24:60 mx postfix/smtpd[1]: a leap second, with more text after it",
            "Nov 22 13:24:61 mx postfix/smtpd[1]: no such second, with more text after it",
            "Nov 22 13:24:1x mx postfix/smtpd[1]: no digit, with more text after it here",
            "Nov 22 13:24:14.5 mx postfix/smtpd[1]: a fraction, with more text after it",
            "Nov 2 13:24:13 mx postfix/smtpd[1]: an unpadded day, with more text after it",
            "Nov 2 13:24:14 mx postfix/smtpd[1]: and its next second, with more text here",
            "Nov 22 13:24:13 mxx postfix/smtpd[1]: a host one byte longer, and more text",
            "Nov 22 13:24:13 m postfix/smtpd[1]: a host one byte shorter, and more text",
            "Nov 22 13:24:13 mx    \t  x[1]: more blanks after the host than a cache holds",
            "Nov 22 13:24:13 mx :x[1]: a tag that starts with a colon, and more text here",
            "2026-11-22T13:24:13+01:00 mx postfix/smtpd[1]: RFC 3339, the same host after it",
            "<22>Nov 22 13:24:13 mx postfix/smtpd[1]: with a priority, and more text here",
        ];
        let fresh = |line| Envelope::new(YearGuess::from_mtime(2026, 11)).parse(line);
        for a in lines {
            for b in lines {
                let mut env = Envelope::new(YearGuess::from_mtime(2026, 11));
                let _ = env.parse(a);
                let _ = env.parse(b);
                assert_eq!(env.parse(a), fresh(a), "{a:?} after {b:?}");
                assert_eq!(env.parse(b), fresh(b), "{b:?} after {a:?}");
            }
        }
    }

    #[test]
    fn leading_number_reads_what_a_digit_loop_reads() {
        let naive = |b: &[u8]| {
            let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut value = 0u64;
            for &d in &b[..digits] {
                value = (value * 10 + u64::from(d - b'0')).min(1 << 32);
            }
            (value, digits)
        };
        let mut x: u64 = 7;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 33) % n
        };
        let ends: [&[u8]; 8] = [
            b"",
            b"]",
            b"]: x y z",
            b"/",
            b":",
            b"\x80\x80",
            b"\xff",
            b"\x00\x01",
        ];
        for _ in 0..20_000 {
            let len = next(14) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| b'0' + next(10) as u8).collect();
            b.extend_from_slice(ends[next(8) as usize]);
            if next(4) == 0 {
                b.extend((0..next(10)).map(|_| next(256) as u8));
            }
            assert_eq!(leading_number(&b), naive(&b), "{b:?}");
        }
        for s in [
            "4294967295]",
            "4294967296]",
            "00000000000000000042]",
            "9999999]: x",
        ] {
            assert_eq!(leading_number(s.as_bytes()), naive(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn find_any_finds_the_first_needle_at_every_offset() {
        // Needles after a byte that the word trick could confuse (0x01 above a match,
        // high bytes), at each position of one, two and three words and the remainder.
        let needles = [b'[', b':', b' ', b'\t'];
        for len in 0..30 {
            for at in 0..=len {
                for filler in [b'a', 0x01, 0x5a, 0x3b, 0x80, 0xff] {
                    let mut b = vec![filler; len];
                    if let Some(c) = b.get_mut(at) {
                        *c = needles[at % 4];
                    }
                    if let Some(c) = b.get_mut(at + 1) {
                        *c = needles[(at + 1) % 4];
                    }
                    let naive = b.iter().position(|c| needles.contains(c));
                    assert_eq!(find_any(&b, needles), naive, "{b:?}");
                }
            }
        }
    }

    #[test]
    fn never_panics_on_prefixes_and_garbage() {
        // Every prefix of every case line, plus bytes flipped: must return, not panic.
        let text = include_str!("../testdata/envelope/cases.txt");
        let mut env = Envelope::new(YearGuess::from_mtime(2026, 11));
        let mut n = 0;
        for line in text.lines().filter_map(|l| l.strip_prefix("in\t")) {
            for (i, _) in line.char_indices() {
                let _ = env.parse(&line[..i]);
                let _ = env.parse(&line[i..]);
                n += 2;
            }
        }
        for s in [
            "<",
            "<1",
            "<1>",
            "<1>1",
            "<1>1 ",
            "\u{0}\u{1}\u{7f}",
            "9",
            "2026-11-22T",
            "Nov",
            "Nov ",
            "Nov 2",
        ] {
            assert!(env.parse(s).is_err(), "{s:?}");
            n += 1;
        }
        assert!(n > 1000);
    }
}
