//! Reading logs: files, directories, rotated `.gz`/`.zst`, stdin; format detection; bad input
//! reported with file and line, skipped and counted.
//!
//! The flow for each input: [`discover`] turns the command line's paths into
//! [`SourcePath`]s (directories walked, rotated files oldest first), [`open`] opens one,
//! detects its compression (by magic bytes) and its MTA [`Format`] (from a sample of the
//! first lines), and [`OpenSource::for_each_line`] hands every good line to a callback
//! (or [`OpenSource::for_each_block`] hands them on as [`LineBlock`]s: the buffers they were
//! read into, no line copied), returning the [`Source`] with its [`InputStats`]. Nothing
//! here stops a run: what goes wrong is recorded in the stats.

use crate::envelope::{Envelope, EnvelopeError, Line, LineParts, Program, YearGuess};
use crate::model::{Mta, UnixTime};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

/// Which MTA wrote a log file: detected from the programs in its first lines, or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Postfix,
    Exim,
    Sendmail,
    Opensmtpd,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Postfix,
        Format::Exim,
        Format::Sendmail,
        Format::Opensmtpd,
    ];

    /// The MTA whose lines carry this syslog tag: `postfix/…`, `postfix-out/…` (multi-instance
    /// names start with `postfix`), `exim`/`exim4`, `sm-mta`/`sendmail`/`sm-msp-queue`,
    /// `smtpd` (OpenSMTPD; Postfix's is `postfix/smtpd`).
    pub fn from_program(program: &str) -> Option<Format> {
        if program.starts_with("postfix") {
            Some(Format::Postfix)
        } else if program == "exim" || program == "exim4" {
            Some(Format::Exim)
        } else if program.starts_with("sm-") || program == "sendmail" {
            Some(Format::Sendmail)
        } else if program == "smtpd" || program == "opensmtpd" {
            Some(Format::Opensmtpd)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Postfix => "postfix",
            Format::Exim => "exim",
            Format::Sendmail => "sendmail",
            Format::Opensmtpd => "opensmtpd",
        }
    }
}

impl From<Format> for Mta {
    fn from(f: Format) -> Mta {
        match f {
            Format::Postfix => Mta::Postfix,
            Format::Exim => Mta::Exim,
            Format::Sendmail => Mta::Sendmail,
            Format::Opensmtpd => Mta::Opensmtpd,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--format` value not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {given:?} (postfix, exim, sendmail, opensmtpd)")]
#[non_exhaustive]
pub struct UnknownFormatName {
    pub given: String,
}

impl FromStr for Format {
    type Err = UnknownFormatName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFormatName {
                given: s.to_string(),
            })
    }
}

/// How a source's bytes are compressed (from its magic bytes, not its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Settings for reading; `Default` gives the ones `sigillo report` uses.
#[derive(Debug, Clone)]
pub struct InputOptions {
    /// `--format`: use this for every source instead of detecting.
    pub format: Option<Format>,
    /// `--year`: the year of the first line without one (otherwise from the file's mtime);
    /// files read after it go on from there ([`open_after`]).
    pub year: Option<i32>,
    /// Longer lines are reported and skipped without being buffered whole.
    pub max_line_len: usize,
    /// The read buffer (raised to at least 2 × `max_line_len` + 64 KiB).
    pub buffer_size: usize,
    /// Errors kept per source; the rest are only counted.
    pub max_errors: usize,
    /// Lines format detection looks at when none of the first 200 is an MTA's (at most half
    /// the read buffer's worth): a `mail.log` may start with many lines of other programs
    /// (dovecot logs to the mail facility too).
    pub sample_lines: usize,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            format: None,
            year: None,
            max_line_len: 64 * 1024,
            buffer_size: 1024 * 1024,
            max_errors: 100,
            sample_lines: 10_000,
        }
    }
}

/// Something wrong with the input, with where it was met. Lines are numbered from 1, as
/// physical lines of the (decompressed) file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The path or directory could not be opened or listed.
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    /// Reading stopped early: a truncated or corrupt `.gz`/`.zst`, or a read error.
    #[error("{file}: truncated after {lines} lines: {reason}")]
    Truncated {
        file: String,
        lines: u64,
        reason: String,
    },
    /// A compression sigillo does not read (xz, bzip2).
    #[error("{file}: {compression} compressed input is not supported; decompress it first")]
    UnsupportedCompression {
        file: String,
        compression: &'static str,
    },
    #[error("{file}:{line}: invalid UTF-8, line skipped")]
    InvalidUtf8 { file: String, line: u64 },
    /// A line with NUL bytes: binary data.
    #[error("{file}:{line}: binary data (NUL bytes), line skipped")]
    Binary { file: String, line: u64 },
    #[error("{file}:{line}: line longer than {limit} bytes, skipped")]
    LongLine {
        file: String,
        line: u64,
        limit: usize,
    },
    /// No envelope format fits the line; `excerpt` is its start.
    #[error("{file}:{line}: {error}: {excerpt:?}")]
    BadLine {
        file: String,
        line: u64,
        error: EnvelopeError,
        excerpt: String,
    },
    /// No line of a known MTA in the sample: the source is not read further unless a format
    /// is forced.
    #[error(
        "{file}: no Postfix, Exim, Sendmail or OpenSMTPD lines in the first {sampled} lines; use --format to force one"
    )]
    UnknownFormat { file: String, sampled: u64 },
    /// The same file (device and inode) reached a second time: named twice, through a
    /// symlink, or both named and inside a directory given. Read once only.
    #[error("{file}: not read again: it is the same file as {first}")]
    SameFile { file: String, first: String },
    /// Found in a directory beside a mail log that holds its mail lines too (Debian's
    /// `syslog`, `mail.info`, `mail.warn` and `mail.err` beside `mail.log`; Exim's reject log
    /// beside its main log), so it is not read: its lines would be counted twice. Named on
    /// the command line, it is read.
    #[error("{file}: not read: its mail lines are also in {covered_by}; name it to read it")]
    CoveredBy { file: String, covered_by: String },
    /// A source's first line is older than the end of one read before it (files named newest
    /// first under names that do not sort by age, or logs of two hosts over the same days).
    /// Everything is still counted, but a peer's mail is not met in time order, so downgrades
    /// (TLS, then plaintext) may be missed or misdated.
    #[error(
        "{file}: starts at {}, before {previous} ends ({}): a peer's mail is not read in \
         time order, so downgrades may be missed; give the files oldest first",
        crate::aggregate::time_text(*starts),
        crate::aggregate::time_text(*previous_ends)
    )]
    OutOfOrder {
        file: String,
        starts: UnixTime,
        previous: String,
        previous_ends: UnixTime,
    },
}

/// How far a source may start before the end of one read earlier without an
/// [`InputError::OutOfOrder`] note: rotation at midnight leaves a few lines of the old day
/// in the new file, and hosts' clocks differ.
pub const OUT_OF_ORDER_SLACK: UnixTime = 3600;

/// [`InputError::OutOfOrder`] notes for sources read in this order, each given as (name,
/// first good line's time, last good line's time): one for each source that starts more than
/// [`OUT_OF_ORDER_SLACK`] before the latest end of those before it.
pub fn out_of_order<'a>(
    sources: impl IntoIterator<Item = (&'a str, Option<UnixTime>, Option<UnixTime>)>,
) -> Vec<InputError> {
    let mut notes = Vec::new();
    let mut latest: Option<(UnixTime, &str)> = None;
    for (name, first, last) in sources {
        let (Some(first), Some(last)) = (first, last) else {
            continue;
        };
        if let Some((ends, previous)) = latest
            && first < ends.saturating_sub(OUT_OF_ORDER_SLACK)
        {
            notes.push(InputError::OutOfOrder {
                file: name.to_owned(),
                starts: first,
                previous: previous.to_owned(),
                previous_ends: ends,
            });
        }
        if latest.is_none_or(|(ends, _)| last > ends) {
            latest = Some((last, name));
        }
    }
    notes
}

/// What reading one source met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Physical lines read (empty ones included).
    pub lines: u64,
    /// Lines handed to the callback.
    pub good_lines: u64,
    /// Lines skipped: invalid UTF-8, binary, or no envelope format fits.
    pub bad_lines: u64,
    /// Lines skipped for being longer than the limit.
    pub skipped_long_lines: u64,
    /// Bytes read after decompression.
    pub bytes: u64,
    /// The first per-line errors (see [`InputOptions::max_errors`]), and every source-level
    /// error (unreadable, truncated, unsupported, unknown format: at most one or two).
    pub errors: Vec<InputError>,
    /// Per-line errors beyond those kept.
    pub errors_dropped: u64,
    /// The times of the first and the last good line.
    pub first_time: Option<UnixTime>,
    pub last_time: Option<UnixTime>,
}

impl InputStats {
    /// Keeps a per-line error while under the cap; source-level errors (unreadable,
    /// truncated, unsupported, unknown format) are always kept (at most a few per source).
    fn push(&mut self, max: usize, e: InputError) {
        let source_level = matches!(
            e,
            InputError::Unreadable { .. }
                | InputError::Truncated { .. }
                | InputError::UnsupportedCompression { .. }
                | InputError::UnknownFormat { .. }
        );
        if source_level {
            self.errors.push(e);
            return;
        }
        if self.errors.len() < max {
            self.errors.push(e);
        } else {
            self.errors_dropped += 1;
        }
    }
}

/// One input: a file or stdin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourcePath {
    Stdin,
    File(PathBuf),
}

impl SourcePath {
    /// `-` is stdin.
    pub fn from_arg(arg: &Path) -> SourcePath {
        if arg.as_os_str() == "-" {
            SourcePath::Stdin
        } else {
            SourcePath::File(arg.to_path_buf())
        }
    }

    pub fn display_name(&self) -> String {
        match self {
            SourcePath::Stdin => "<stdin>".to_string(),
            SourcePath::File(p) => p.display().to_string(),
        }
    }
}

/// One source as read: its name, what it turned out to be, and what was met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path as given or found (`<stdin>` for stdin).
    pub name: String,
    pub path: SourcePath,
    pub compression: Compression,
    /// The format detected or forced; `None` when neither (the source is then not read).
    pub format: Option<Format>,
    pub format_forced: bool,
    pub stats: InputStats,
}

/// Lines format detection looks at first; only when none is an MTA's does it read on, up to
/// [`InputOptions::sample_lines`].
const DETECT_FIRST_LINES: usize = 200;

/// Directory depth followed by [`discover`].
const MAX_DEPTH: usize = 16;

/// Expands the command line's inputs: `-` is stdin, a directory is walked (recursively, hidden
/// entries skipped, symlinked directories not followed) and its files sorted so that rotated
/// files come oldest first (`mail.log.3.gz, mail.log.2.gz, mail.log.1, mail.log`;
/// `mail.log-20261120.gz, mail.log-20261121, mail.log`). Files given by name one after
/// another are put in the same order within each log (different logs keep their order), so
/// `mail.log*`, which the shell expands newest first, is read oldest first too: downgrades are
/// found by reading each peer's mail in time order.
/// A file reached twice (same device and inode) is read once; in a directory, Debian's
/// `syslog`, `mail.info`, `mail.warn` and `mail.err` beside a `mail.log`, and Exim's reject
/// log beside its main log (`rejectlog` beside `mainlog`), are not read
/// ([`InputError::CoveredBy`]).
/// Paths that cannot be read are returned as errors.
pub fn discover<P: AsRef<Path>>(inputs: &[P]) -> (Vec<SourcePath>, Vec<InputError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    // Files named one after another, sorted when a directory, stdin or the end comes.
    let mut named: Vec<PathBuf> = Vec::new();
    let flush = |named: &mut Vec<PathBuf>, out: &mut Vec<SourcePath>| {
        out.extend(
            oldest_first(named.drain(..))
                .into_iter()
                .map(SourcePath::File),
        );
    };
    for input in inputs {
        let p = input.as_ref();
        let sp = SourcePath::from_arg(p);
        if sp == SourcePath::Stdin {
            flush(&mut named, &mut out);
            out.push(sp);
            continue;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                flush(&mut named, &mut out);
                walk(p, 0, &mut out, &mut errors);
            }
            Ok(_) => named.push(p.to_path_buf()),
            Err(e) => errors.push(InputError::Unreadable {
                file: p.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    flush(&mut named, &mut out);
    (drop_same_files(out, &mut errors), errors)
}

/// Files named one after another, each log's rotated files oldest first ([`rotation_key`]);
/// different logs keep the order in which the first file of each was named.
fn oldest_first(named: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut first_named: std::collections::HashMap<String, usize> = Default::default();
    let mut keyed: Vec<(usize, RotationKey, PathBuf)> = named
        .enumerate()
        .map(|(i, path)| {
            let key = rotation_key(&path);
            let family = *first_named.entry(key.0.clone()).or_insert(i);
            (family, key, path)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, path)| path).collect()
}

/// `paths` without a file already in it (same device and inode), each dropped one reported.
fn drop_same_files(paths: Vec<SourcePath>, errors: &mut Vec<InputError>) -> Vec<SourcePath> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: std::collections::HashMap<(u64, u64), usize> = Default::default();
    let mut out: Vec<SourcePath> = Vec::with_capacity(paths.len());
    for path in paths {
        if let SourcePath::File(p) = &path
            && let Ok(m) = std::fs::metadata(p)
        {
            match seen.entry((m.dev(), m.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    let first = out
                        .get(*first.get())
                        .map(SourcePath::display_name)
                        .unwrap_or_default();
                    errors.push(InputError::SameFile {
                        file: p.display().to_string(),
                        first,
                    });
                    continue;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(out.len());
                }
            }
        }
        out.push(path);
    }
    out
}

/// Logs that Debian's rsyslog fills with copies of the mail lines `mail.log` has (`syslog`
/// takes every facility; the `mail.*` level files, in older configurations, the mail
/// facility by level). RHEL's `messages` excludes mail (`mail.none`), so it is not here.
const COVERED_BY_MAIL_LOG: [&str; 4] = ["syslog", "mail.info", "mail.warn", "mail.err"];

/// The main log that holds the lines of Exim's reject log `name` (a [`RotationKey`]'s base
/// name): Exim writes each rejection to both ("the first line of each rejection is a copy of
/// the line that is also written to the main log", then the message's header lines), so a
/// callout's failed STARTTLS named on a rejection line would count twice. `log_file_path` names the logs by
/// putting `main`, `reject` or `panic` for its `%s`: Debian's `mainlog`/`rejectlog`, Red
/// Hat's `main.log`/`reject.log`, cPanel's `exim_mainlog`/`exim_rejectlog`.
fn exim_main_log_of(name: &str) -> Option<String> {
    name.contains("reject")
        .then(|| name.replacen("reject", "main", 1))
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<SourcePath>, errors: &mut Vec<InputError>) {
    let unreadable = |e: io::Error| InputError::Unreadable {
        file: dir.display().to_string(),
        reason: e.to_string(),
    };
    if depth > MAX_DEPTH {
        return;
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(unreadable(e));
            return;
        }
    };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in rd {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push(unreadable(e));
                continue;
            }
        };
        let name = entry.file_name();
        if name.as_encoded_bytes().first() == Some(&b'.') {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => dirs.push(path),
            // A symlink to a file counts; to a directory it does not (no loops).
            Ok(t) if t.is_symlink() => {
                if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    files.push(path);
                }
            }
            Ok(t) if t.is_file() => files.push(path),
            Ok(_) => {}
            Err(e) => errors.push(InputError::Unreadable {
                file: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    let mut files: Vec<(RotationKey, PathBuf)> =
        files.into_iter().map(|p| (rotation_key(&p), p)).collect();
    files.sort();
    // Each log's live file (`mail.log`, `mainlog`), which sorts after its rotated files.
    let live: std::collections::HashMap<String, PathBuf> = files
        .iter()
        .map(|(key, p)| (key.0.clone(), p.clone()))
        .collect();
    for (key, path) in files {
        let by = if COVERED_BY_MAIL_LOG.contains(&key.0.as_str()) {
            live.get("mail.log")
        } else {
            exim_main_log_of(&key.0).and_then(|main| live.get(&main))
        };
        if let Some(by) = by {
            errors.push(InputError::CoveredBy {
                file: path.display().to_string(),
                covered_by: by.display().to_string(),
            });
            continue;
        }
        out.push(SourcePath::File(path));
    }
    dirs.sort();
    for d in dirs {
        walk(&d, depth + 1, out, errors);
    }
}

/// One log's rotated files: their directory and base name (`/var/log`, `mail.log`).
pub type LogFamily = (PathBuf, String);

/// The [`LogFamily`] of a file (`None` for stdin): `mail.log.2.gz`, `mail.log.1` and
/// `mail.log` in one directory are one log, `hostA/mail.log` and `hostB/mail.log` two.
pub fn log_family(path: &SourcePath) -> Option<LogFamily> {
    let SourcePath::File(p) = path else {
        return None;
    };
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    Some((dir, rotation_key(p).0))
}

/// What [`rotation_key`] returns: (base name, class, order, name).
pub type RotationKey = (String, u8, i64, String);

/// Sort key putting a log's rotated files oldest first: (base name, class, order, name).
/// Class 0: `base-YYYYMMDD[…]` (dateext), ascending date; class 1: `base.N`, descending N;
/// class 2: the live `base`.
pub fn rotation_key(path: &Path) -> RotationKey {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stem = name.as_str();
    for ext in [".gz", ".zst", ".zstd", ".xz", ".bz2"] {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s;
            break;
        }
    }
    if let Some((base, n)) = stem.rsplit_once('.')
        && !n.is_empty()
        && n.len() <= 6
        && n.bytes().all(|c| c.is_ascii_digit())
    {
        let n: i64 = n.parse().unwrap_or(0);
        return (base.to_string(), 1, -n, name);
    }
    if let Some((base, d)) = stem.rsplit_once('-')
        && d.len() >= 8
        && d.len() <= 14
        && d.bytes().all(|c| c.is_ascii_digit())
    {
        let d: i64 = d.parse().unwrap_or(0);
        return (base.to_string(), 0, d, name);
    }
    (stem.to_string(), 2, 0, name)
}

/// A source opened, its compression and format known, ready to be read.
pub struct OpenSource {
    source: Source,
    reader: SourceReader,
    envelope: Envelope,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    read_error: Option<io::Error>,
    max_line: usize,
    max_errors: usize,
}

impl fmt::Debug for OpenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSource")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];

/// Opens a source: detects its compression by magic bytes, reads a first buffer and detects
/// the format (unless `options.format` forces it). Never fails: an unreadable source comes
/// back with the error in its stats and no lines.
pub fn open(path: &SourcePath, options: &InputOptions) -> OpenSource {
    open_after(path, options, None)
}

/// [`open`] for a source read after an older file of the same log ([`log_family`]) whose last
/// good line was at `previous_last`: with `--year` ([`InputOptions::year`]) the year goes on
/// from that line instead of starting again, so rotated files that span a new year are dated
/// right.
pub fn open_after(
    path: &SourcePath,
    options: &InputOptions,
    previous_last: Option<UnixTime>,
) -> OpenSource {
    let name = path.display_name();
    let mut stats = InputStats::default();
    let max_errors = options.max_errors;
    let (raw, mtime): (Option<Box<dyn Read + Send>>, SystemTime) = match path {
        SourcePath::Stdin => (Some(Box::new(io::stdin())), SystemTime::now()),
        SourcePath::File(p) => match File::open(p) {
            Ok(f) => {
                let mtime = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or_else(|_| SystemTime::now());
                (Some(Box::new(f)), mtime)
            }
            Err(e) => {
                stats.push(
                    max_errors,
                    InputError::Unreadable {
                        file: name.clone(),
                        reason: e.to_string(),
                    },
                );
                (None, SystemTime::now())
            }
        },
    };
    let mut compression = Compression::None;
    let reader: SourceReader = match raw {
        None => SourceReader::Stream(Box::new(io::empty())),
        Some(raw) => {
            let mut br = BufReader::with_capacity(256 * 1024, raw);
            let magic = peek(&mut br, 6);
            match magic {
                Err(e) => {
                    stats.push(
                        max_errors,
                        InputError::Unreadable {
                            file: name.clone(),
                            reason: e.to_string(),
                        },
                    );
                    SourceReader::Stream(Box::new(io::empty()))
                }
                Ok(m) if m.starts_with(GZIP_MAGIC) => {
                    compression = Compression::Gzip;
                    on_own_thread(flate2::bufread::MultiGzDecoder::new(br))
                }
                Ok(m) if m.starts_with(ZSTD_MAGIC) => match zstd::Decoder::with_buffer(br) {
                    Ok(d) => {
                        compression = Compression::Zstd;
                        on_own_thread(d)
                    }
                    Err(e) => {
                        stats.push(
                            max_errors,
                            InputError::Unreadable {
                                file: name.clone(),
                                reason: e.to_string(),
                            },
                        );
                        SourceReader::Stream(Box::new(io::empty()))
                    }
                },
                Ok(m) if m.starts_with(XZ_MAGIC) || is_bzip2(&m) => {
                    stats.push(
                        max_errors,
                        InputError::UnsupportedCompression {
                            file: name.clone(),
                            compression: if is_bzip2(&m) { "bzip2" } else { "xz" },
                        },
                    );
                    SourceReader::Stream(Box::new(io::empty()))
                }
                Ok(_) => SourceReader::Stream(Box::new(br)),
            }
        }
    };
    let unix_mtime = match mtime.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let year = match (options.year, previous_last) {
        (Some(_), Some(t)) => YearGuess::continuing(t),
        (Some(y), None) => YearGuess::forced(y),
        (None, _) => YearGuess::from_unix_mtime(unix_mtime),
    };
    let max_line = options.max_line_len.max(1);
    let buf_len = options.buffer_size.max(2 * max_line + 64 * 1024);
    let mut open = OpenSource {
        source: Source {
            name,
            path: path.clone(),
            compression,
            format: options.format,
            format_forced: options.format.is_some(),
            stats,
        },
        reader,
        envelope: Envelope::new(year),
        buf: vec![0; buf_len],
        start: 0,
        end: 0,
        eof: false,
        read_error: None,
        max_line,
        max_errors,
    };
    if options.format.is_none() {
        open.detect(options.sample_lines);
    }
    open
}

/// Bytes a decompression thread hands over at a time.
const DECOMPRESSED_CHUNK: usize = 256 * 1024;
/// Chunks that may wait between the decompression thread and the reader.
const DECOMPRESSED_DEPTH: usize = 4;

/// Where a source's bytes come from: a stream read into the reader's buffer, or chunks of
/// whole lines decompressed on a thread of their own, which become the reader's buffers.
enum SourceReader {
    Stream(Box<dyn Read + Send>),
    Chunks(ThreadedReader),
}

impl Read for SourceReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            SourceReader::Stream(r) => r.read(out),
            SourceReader::Chunks(r) => r.read(out),
        }
    }
}

/// Runs a decoder on its own thread, so decompression goes on while lines are parsed.
/// Falls back to decoding inline when no thread can be started.
fn on_own_thread<R: Read + Send + 'static>(inner: R) -> SourceReader {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(DECOMPRESSED_DEPTH);
    let (spare_tx, spare_rx) = mpsc::sync_channel::<Vec<u8>>(DECOMPRESSED_DEPTH + 2);
    let inner = Arc::new(Mutex::new(Some(inner)));
    let for_thread = Arc::clone(&inner);
    let started = std::thread::Builder::new()
        .name("sigillo-decompress".into())
        .spawn(move || {
            let Some(mut inner) = for_thread.lock().ok().and_then(|mut g| g.take()) else {
                return;
            };
            decompress(&mut inner, &tx, &spare_rx);
        });
    if started.is_err()
        && let Some(inner) = inner.lock().ok().and_then(|mut g| g.take())
    {
        return SourceReader::Stream(Box::new(inner));
    }
    SourceReader::Chunks(ThreadedReader {
        rx,
        spare: spare_tx,
        current: Vec::new(),
        pos: 0,
        done: false,
    })
}

/// The decompression thread: reads `inner` to its end (or first error) in chunks of whole
/// lines, each filled to [`DECOMPRESSED_CHUNK`] but the last. The partial line at the end of
/// a chunk starts the next one, so the reader can take a chunk as its buffer instead of
/// copying it ([`ThreadedReader::next_chunk`]); a chunk with no newline at all (part of a
/// longer line) goes on whole. Full chunks keep the reader's blocks full-sized and spare
/// buffers at their length (none is zeroed again); a decoder hands out a block at a time
/// (zstd's are up to 128 KiB).
fn decompress<R: Read>(
    inner: &mut R,
    tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    spare: &mpsc::Receiver<Vec<u8>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        // A carried partial line is shorter than a chunk: it followed a newline in one.
        buf.resize(DECOMPRESSED_CHUNK, 0);
        let mut filled = carry.len();
        if let Some(to) = buf.get_mut(..filled) {
            to.copy_from_slice(&carry);
        }
        carry.clear();
        let mut end: Option<io::Result<()>> = None;
        while let Some(space) = buf.get_mut(filled..).filter(|s| !s.is_empty()) {
            match inner.read(space) {
                Ok(0) => {
                    end = Some(Ok(()));
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    end = Some(Err(e));
                    break;
                }
            }
        }
        buf.truncate(filled);
        if end.is_none()
            && let Some(nl) = memchr::memrchr(b'\n', &buf)
        {
            carry.extend_from_slice(buf.get(nl + 1..).unwrap_or_default());
            buf.truncate(nl + 1);
        }
        // The reader is gone when sending fails: stop.
        if !buf.is_empty() && tx.send(Ok(buf)).is_err() {
            return;
        }
        match end {
            None => {}
            Some(Ok(())) => return,
            Some(Err(e)) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// The reading end of [`on_own_thread`].
struct ThreadedReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ThreadedReader {
    /// Swaps the next chunk in as `buf` (whose old contents go back to the decompression
    /// thread as a spare) and gives its length; 0 at the end of the input. `None` while part
    /// of a chunk is still to be [`read`](Read::read).
    fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        if self.pos < self.current.len() {
            return None;
        }
        if self.done {
            return Some(Ok(0));
        }
        match self.rx.recv() {
            Ok(Ok(chunk)) => {
                let emptied = std::mem::replace(buf, chunk);
                // Dropped if the thread has enough spares.
                let _ = self.spare.try_send(emptied);
                Some(Ok(buf.len()))
            }
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                Some(Ok(0))
            }
        }
    }
}

impl Read for ThreadedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.current.get(self.pos..).unwrap_or_default();
            if !left.is_empty() {
                let n = left.len().min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), left.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.pos += n;
                return Ok(n);
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            // Hand the emptied buffer back; dropped if the thread has enough.
            let _ = self.spare.try_send(std::mem::take(&mut self.current));
            self.pos = 0;
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
    }
}

fn is_bzip2(m: &[u8]) -> bool {
    m.len() >= 4 && m.starts_with(b"BZh") && m.get(3).is_some_and(|c| (b'1'..=b'9').contains(c))
}

/// The first `n` bytes (fewer at end of input), without consuming them.
fn peek<R: Read>(br: &mut BufReader<R>, n: usize) -> io::Result<Vec<u8>> {
    loop {
        match br.fill_buf() {
            Ok(b) => return Ok(b.get(..n).unwrap_or(b).to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl OpenSource {
    /// The source so far (name, compression, format; stats of opening).
    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn format(&self) -> Option<Format> {
        self.source.format
    }

    /// Reads more into `buf[end..]`; sets `eof` (and `read_error`) when the input ends.
    fn fill(&mut self) {
        let Some(space) = self.buf.get_mut(self.end..) else {
            return;
        };
        if space.is_empty() {
            return;
        }
        loop {
            match self.reader.read(space) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => {
                    self.end += n;
                    self.source.stats.bytes += n as u64;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.eof = true;
                    self.read_error = Some(e);
                    return;
                }
            }
        }
    }

    /// Fills the buffer with the first `sample` lines (or as many as fit) and counts the
    /// programs in them.
    /// Detects the format from the first [`DETECT_FIRST_LINES`] lines or, when none of them
    /// is an MTA's, from up to `sample` lines (as many as half the buffer holds).
    fn detect(&mut self, sample: usize) {
        self.detect_in(sample.min(DETECT_FIRST_LINES));
        let unknown = matches!(
            self.source.stats.errors.last(),
            Some(InputError::UnknownFormat { .. })
        );
        if unknown && sample > DETECT_FIRST_LINES {
            // Its note gives way to the one about the larger sample, if any.
            self.source.stats.errors.pop();
            self.detect_in(sample);
        }
    }

    fn detect_in(&mut self, sample: usize) {
        let limit = self.buf.len() / 2;
        while !self.eof
            && self.end < limit
            && memchr::memchr_iter(b'\n', self.buf.get(..self.end).unwrap_or_default())
                .take(sample)
                .count()
                < sample
        {
            self.fill();
        }
        let data = self.buf.get(..self.end).unwrap_or_default();
        let mut env = self.envelope.clone();
        let mut counts = [0u32; 4];
        let mut seen = 0u64;
        for line in data.split(|&c| c == b'\n').take(sample) {
            seen += 1;
            let Ok(s) = std::str::from_utf8(line) else {
                continue;
            };
            if let Ok(l) = env.parse(s.strip_suffix('\r').unwrap_or(s))
                && let Some(f) = Format::from_program(l.program)
                && let Some(c) = counts.get_mut(f as usize)
            {
                *c += 1;
            }
        }
        let best = Format::ALL
            .into_iter()
            .zip(counts)
            .filter(|&(_, c)| c > 0)
            .max_by_key(|&(f, c)| (c, std::cmp::Reverse(f)));
        self.source.format = best.map(|(f, _)| f);
        if self.source.format.is_some() {
            return;
        }
        if let Some(e) = self.read_error.take() {
            let e = InputError::Truncated {
                file: self.source.name.clone(),
                lines: 0,
                reason: e.to_string(),
            };
            self.source.stats.push(self.max_errors, e);
        } else if self.end > 0 {
            let e = InputError::UnknownFormat {
                file: self.source.name.clone(),
                sampled: seen,
            };
            self.source.stats.push(self.max_errors, e);
        }
    }

    /// Hands every good line to `on_line`, in order, and returns the source with its stats.
    /// A source with no format (neither detected nor forced) is not read: it comes back with
    /// its `UnknownFormat` error and no lines.
    pub fn for_each_line<F: FnMut(&Line<'_>)>(self, mut on_line: F) -> Source {
        self.for_each_block(|block| {
            for line in block.lines() {
                on_line(&line);
            }
            Some(block)
        })
    }

    /// Hands the good lines to `on_block` in [`LineBlock`]s, in order, and returns the source
    /// with its stats. Each block is the buffer its lines were read into, so no line is
    /// copied; `on_block` may give back an emptied block, whose buffers are then reused.
    /// A source with no format is not read, as with [`OpenSource::for_each_line`].
    pub fn for_each_block<F>(self, mut on_block: F) -> Source
    where
        F: FnMut(LineBlock) -> Option<LineBlock>,
    {
        let OpenSource {
            mut source,
            mut reader,
            mut envelope,
            mut buf,
            mut start,
            mut end,
            mut eof,
            mut read_error,
            max_line,
            max_errors,
        } = self;
        if source.format.is_none() {
            return source;
        }
        let buf_len = buf.len();
        let mut ctx = Ctx {
            envelope: &mut envelope,
            stats: &mut source.stats,
            name: &source.name,
            max_line,
            max_errors,
        };
        let mut spare: Option<LineBlock> = None;
        // In a line longer than the limit: discard up to the next newline.
        let mut skipping = false;
        loop {
            let region = buf.get(start..end).unwrap_or_default();
            if skipping {
                match memchr::memchr(b'\n', region) {
                    Some(nl) => {
                        start += nl + 1;
                        skipping = false;
                    }
                    None => start = end,
                }
            }
            let region = buf.get(start..end).unwrap_or_default();
            if let Some(last) = memchr::memrchr(b'\n', region) {
                // The complete lines become a block; the partial last line moves on to a
                // fresh buffer, which the next read fills.
                let block_end = start + last + 1;
                let (text, lines) = spare.take().map(LineBlock::into_parts).unwrap_or_default();
                // A reused buffer keeps its length: only what a read needs beyond it is zeroed.
                let mut next = text.into_bytes();
                let tail = buf.get(block_end..end).unwrap_or_default();
                if next.len() < tail.len() {
                    next.resize(tail.len(), 0);
                }
                if let Some(to) = next.get_mut(..tail.len()) {
                    to.copy_from_slice(tail);
                }
                let mut full = std::mem::replace(&mut buf, next);
                full.truncate(block_end);
                // Only after a skipped long line does the block not start the buffer.
                full.drain(..start);
                end -= block_end;
                start = 0;
                let block = ctx.block(full, lines);
                spare = if block.is_empty() {
                    Some(block)
                } else {
                    on_block(block)
                };
            }
            let partial = end - start;
            if partial > max_line {
                ctx.stats.lines += 1;
                ctx.long_line();
                skipping = true;
                start = end;
            }
            if eof {
                match read_error.take() {
                    Some(e) => {
                        let lines = ctx.stats.lines;
                        ctx.push(InputError::Truncated {
                            file: ctx.name.to_string(),
                            lines,
                            reason: e.to_string(),
                        });
                    }
                    None if start < end && !skipping => {
                        // A last line without a newline: given one, it is read like the others
                        // on the next turn, which then ends here with nothing left.
                        buf.truncate(end);
                        buf.push(b'\n');
                        end += 1;
                        continue;
                    }
                    None => {}
                }
                break;
            }
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            // With no partial line to keep, a decompressed chunk of whole lines becomes the
            // buffer as it is, instead of being copied into it.
            if end == 0
                && let SourceReader::Chunks(chunks) = &mut reader
                && let Some(got) = chunks.next_chunk(&mut buf)
            {
                match got {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        end = n;
                        ctx.stats.bytes += n as u64;
                    }
                    Err(e) => {
                        eof = true;
                        read_error = Some(e);
                    }
                }
                continue;
            }
            let want = buf_len.min(end + READ_BYTES);
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let space = buf.get_mut(end..want).unwrap_or_default();
            loop {
                match reader.read(space) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        end += n;
                        ctx.stats.bytes += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eof = true;
                        read_error = Some(e);
                    }
                }
                break;
            }
        }
        source
    }
}

/// Bytes asked of a source per read: about the text of one [`LineBlock`] (the buffer holds
/// more only for the first lines, read for format detection, and a partial line).
const READ_BYTES: usize = 256 * 1024;

/// Reads one source start to end: [`open`], then [`OpenSource::for_each_line`].
pub fn read<F: FnMut(Option<Format>, &Line<'_>)>(
    path: &SourcePath,
    options: &InputOptions,
    mut on_line: F,
) -> Source {
    let open = open(path, options);
    let format = open.format();
    open.for_each_line(|l| on_line(format, l))
}

/// Good lines of one source in the buffer they were read into, with their envelopes as spans
/// of it: what [`OpenSource::for_each_block`] hands on without copying a line.
#[derive(Debug, Default)]
pub struct LineBlock {
    /// The complete lines as read (bad ones blanked), then the envelope parts that are no
    /// slice of their line (Exim mainlog's `exim`), each once.
    text: String,
    lines: Vec<LineSpans>,
}

/// Start and end in [`LineBlock::text`].
type Span = (u32, u32);

/// One good line of a [`LineBlock`], its parts sliced out of the text on demand: a reader that
/// passes over most lines after a look at their program slices nothing else of them.
#[derive(Debug, Clone, Copy)]
pub struct LineView<'a> {
    text: &'a str,
    spans: &'a LineSpans,
}

impl<'a> LineView<'a> {
    #[inline]
    fn get(&self, (a, b): Span) -> &'a str {
        self.text.get(a as usize..b as usize).unwrap_or_default()
    }

    #[inline]
    pub fn time(&self) -> UnixTime {
        self.spans.time
    }

    /// [`Line::program`].
    #[inline]
    pub fn program(&self) -> &'a str {
        self.get(self.spans.program)
    }

    /// The bytes of [`Line::program`], sliced without the char-boundary checks of a `str`
    /// (a span is always on them; the whole line checks its parts again).
    #[inline]
    pub fn program_bytes(&self) -> &'a [u8] {
        let (a, b) = self.spans.program;
        self.text
            .as_bytes()
            .get(a as usize..b as usize)
            .unwrap_or_default()
    }

    /// [`Line::host`].
    #[inline]
    pub fn host(&self) -> &'a str {
        self.get(self.spans.host)
    }

    /// [`Line::pid`].
    #[inline]
    pub fn pid(&self) -> Option<u32> {
        self.spans.pid
    }

    /// [`Line::message`].
    #[inline]
    pub fn message(&self) -> &'a str {
        self.get(self.spans.message)
    }

    /// The whole line.
    #[inline]
    pub fn line(&self) -> Line<'a> {
        let m = self.spans;
        Line {
            time: m.time,
            host: self.get(m.host),
            program: self.get(m.program),
            pid: m.pid,
            message: self.get(m.message),
            raw: self.get(m.raw),
        }
    }
}

/// A [`Line`] with its strings as spans of [`LineBlock::text`].
#[derive(Debug, Clone, Copy)]
struct LineSpans {
    time: UnixTime,
    pid: Option<u32>,
    raw: Span,
    host: Span,
    program: Span,
    message: Span,
}

impl LineBlock {
    /// The good lines, in order.
    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.views().map(|v| v.line())
    }

    /// The good lines, in order, each sliced out of the text only as far as it is looked at.
    pub fn views(&self) -> impl Iterator<Item = LineView<'_>> {
        let text = self.text.as_str();
        self.lines.iter().map(move |spans| LineView { text, spans })
    }

    /// Good line `i`, sliced out of the text only as far as it is looked at.
    #[inline]
    pub fn view(&self, i: usize) -> Option<LineView<'_>> {
        let text = self.text.as_str();
        self.lines.get(i).map(|spans| LineView { text, spans })
    }

    /// How many good lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn into_parts(self) -> (String, Vec<LineSpans>) {
        (self.text, self.lines)
    }
}

impl LineSpans {
    /// The envelope `parts` of the line of `len` bytes at `at` in a block's text; a program
    /// that is no part of the line goes to `constants`, which will follow the text's first
    /// `text_len` bytes.
    #[inline]
    fn new(
        parts: LineParts,
        at: usize,
        len: usize,
        constants: &mut String,
        text_len: usize,
    ) -> Self {
        let in_line = |(start, end): (usize, usize)| to_span(at + start, at + end);
        LineSpans {
            time: parts.time,
            pid: parts.pid,
            raw: to_span(at, at + len),
            host: in_line(parts.host),
            program: match parts.program {
                Program::At(start, end) => in_line((start, end)),
                Program::Exim => constant_span("exim", constants, text_len),
            },
            message: in_line((parts.message, len)),
        }
    }
}

/// Where `part`, a constant, is kept in `constants` (added there the first time), which will
/// follow the text's first `text_len` bytes.
#[cold]
fn constant_span(part: &str, constants: &mut String, text_len: usize) -> Span {
    let found = constants.find(part).unwrap_or_else(|| {
        constants.push_str(part);
        constants.len() - part.len()
    });
    to_span(text_len + found, text_len + found + part.len())
}

/// Block texts stay far below 4 GiB (the read buffer's size); were one not, its spans would
/// come out empty rather than wrong.
fn to_span(start: usize, end: usize) -> Span {
    (
        u32::try_from(start).unwrap_or(u32::MAX),
        u32::try_from(end).unwrap_or(u32::MAX),
    )
}

/// The per-line work, apart from the buffer it reads from.
struct Ctx<'s> {
    envelope: &'s mut Envelope,
    stats: &'s mut InputStats,
    name: &'s str,
    max_line: usize,
    max_errors: usize,
}

/// A line's bytes that are not text (invalid UTF-8 or NUL bytes): reported and skipped.
struct NotText;

impl Ctx<'_> {
    fn push(&mut self, e: InputError) {
        self.stats.push(self.max_errors, e);
    }

    fn long_line(&mut self) {
        self.stats.skipped_long_lines += 1;
        let e = InputError::LongLine {
            file: self.name.to_string(),
            line: self.stats.lines,
            limit: self.max_line,
        };
        self.push(e);
    }

    /// Complete lines, each ending in `\n`, as a block (reusing `lines`' allocation). Fast
    /// path: the whole buffer is valid UTF-8 with no NUL, checked once, and becomes the
    /// block's text as it is. Otherwise each line is checked, and those that are not text are
    /// blanked once reported, so the buffer still becomes the text without a copy.
    fn block(&mut self, bytes: Vec<u8>, mut lines: Vec<LineSpans>) -> LineBlock {
        lines.clear();
        let mut constants = String::new();
        let text_len = bytes.len();
        let checked = if memchr::memchr(0, &bytes).is_none() {
            String::from_utf8(bytes).map_err(std::string::FromUtf8Error::into_bytes)
        } else {
            Err(bytes)
        };
        let mut text = match checked {
            Ok(text) => {
                let bytes = text.as_bytes();
                let mut at = 0;
                let mut on_line = |nl: usize| {
                    self.stats.lines += 1;
                    let line = bytes.get(at..nl).unwrap_or_default();
                    if let Some((parts, len)) = self.text_line(line) {
                        lines.push(LineSpans::new(parts, at, len, &mut constants, text_len));
                    }
                    at = nl + 1;
                };
                // memchr's AVX2 searcher, where the CPU has it, called directly: no dispatch
                // per line, which `memchr_iter` has.
                #[cfg(target_arch = "x86_64")]
                if let Some(newline) = memchr::arch::x86_64::avx2::memchr::One::new(b'\n') {
                    newline.iter(bytes).for_each(&mut on_line);
                } else {
                    memchr::memchr_iter(b'\n', bytes).for_each(&mut on_line);
                }
                #[cfg(not(target_arch = "x86_64"))]
                memchr::memchr_iter(b'\n', bytes).for_each(&mut on_line);
                text
            }
            Err(mut bytes) => {
                let mut at = 0;
                while let Some(n) = memchr::memchr(b'\n', bytes.get(at..).unwrap_or_default()) {
                    let line_end = at + n;
                    match self.line(bytes.get(at..line_end).unwrap_or_default()) {
                        Ok(Some((parts, len))) => {
                            lines.push(LineSpans::new(parts, at, len, &mut constants, text_len));
                        }
                        Ok(None) => {}
                        Err(NotText) => {
                            if let Some(line) = bytes.get_mut(at..line_end) {
                                line.fill(b' ');
                            }
                        }
                    }
                    at = line_end + 1;
                }
                // Every line is now valid text, so this does not fail; were it to, the
                // block would go on empty rather than with spans into a different text.
                String::from_utf8(bytes).unwrap_or_else(|_| {
                    lines.clear();
                    String::new()
                })
            }
        };
        text.push_str(&constants);
        if let (Some(first), Some(last)) = (lines.first(), lines.last()) {
            self.stats.first_time.get_or_insert(first.time);
            self.stats.last_time = Some(last.time);
        }
        LineBlock { text, lines }
    }

    /// One line's bytes (without `\n`), checked: the line's envelope and length (without a
    /// `\r` ending) if it is a good line.
    fn line(&mut self, line: &[u8]) -> Result<Option<(LineParts, usize)>, NotText> {
        self.stats.lines += 1;
        if memchr::memchr(0, line).is_some() {
            self.stats.bad_lines += 1;
            let e = InputError::Binary {
                file: self.name.to_string(),
                line: self.stats.lines,
            };
            self.push(e);
            return Err(NotText);
        }
        match std::str::from_utf8(line) {
            Ok(_) => Ok(self.text_line(line)),
            Err(_) if line.len() > self.max_line => {
                self.long_line();
                Err(NotText)
            }
            Err(_) => {
                self.stats.bad_lines += 1;
                let e = InputError::InvalidUtf8 {
                    file: self.name.to_string(),
                    line: self.stats.lines,
                };
                self.push(e);
                Err(NotText)
            }
        }
    }

    /// One line of valid UTF-8 (already counted in `lines`): its envelope and length (without
    /// a `\r` ending) if it is a good line.
    #[inline(always)]
    fn text_line(&mut self, line: &[u8]) -> Option<(LineParts, usize)> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if line.len() > self.max_line {
            self.long_line();
            return None;
        }
        match self.envelope.parse_parts(line) {
            Ok(parts) => {
                self.stats.good_lines += 1;
                Some((parts, line.len()))
            }
            Err(EnvelopeError::Empty) => None,
            Err(error) => {
                self.bad_line(line, error);
                None
            }
        }
    }

    /// A line of valid UTF-8 with no envelope: counted, and reported with its first 80 bytes
    /// (cut back to a whole character).
    #[cold]
    fn bad_line(&mut self, line: &[u8], error: EnvelopeError) {
        self.stats.bad_lines += 1;
        if self.stats.errors.len() < self.max_errors {
            let mut cut = line.len().min(80);
            // Back over UTF-8 continuation bytes (0b10xx_xxxx) to a character's start.
            while cut > 0 && line.get(cut).is_some_and(|&c| c & 0xC0 == 0x80) {
                cut -= 1;
            }
            let excerpt = String::from_utf8_lossy(line.get(..cut).unwrap_or_default());
            let e = InputError::BadLine {
                file: self.name.to_string(),
                line: self.stats.lines,
                error,
                excerpt: excerpt.into_owned(),
            };
            self.push(e);
        } else {
            self.stats.errors_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_notes_sources_that_start_before_an_earlier_one_ends() {
        let h = OUT_OF_ORDER_SLACK;
        /// A source as (name, first, last).
        type Read = (&'static str, Option<i64>, Option<i64>);
        // (sources in reading order, the names noted)
        let cases: &[(&[Read], &[&str])] = &[
            (
                &[("a", Some(0), Some(100)), ("b", Some(100), Some(200))],
                &[],
            ),
            // within the slack (rotation leaves a few old lines in the new file)
            (
                &[
                    ("a", Some(0), Some(10 * h)),
                    ("b", Some(9 * h), Some(11 * h)),
                ],
                &[],
            ),
            (
                &[
                    ("a", Some(0), Some(10 * h)),
                    ("b", Some(9 * h - 1), Some(11 * h)),
                ],
                &["b"],
            ),
            // against the latest end so far, not only the previous source's
            (
                &[
                    ("a", Some(0), Some(10 * h)),
                    ("b", Some(0), Some(h)),
                    ("c", Some(5 * h), Some(6 * h)),
                ],
                &["b", "c"],
            ),
            // sources with no good line do not count
            (
                &[
                    ("a", Some(0), Some(10 * h)),
                    ("b", None, None),
                    ("c", Some(10 * h), Some(11 * h)),
                ],
                &[],
            ),
            (
                &[
                    ("a", Some(i64::MIN), Some(i64::MIN)),
                    ("b", Some(i64::MIN), Some(0)),
                ],
                &[],
            ),
        ];
        for (sources, want) in cases {
            let got: Vec<String> = out_of_order(sources.iter().copied())
                .into_iter()
                .map(|e| match e {
                    InputError::OutOfOrder { file, .. } => file,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, *want, "{sources:?}");
        }
    }

    /// (message, program, host, raw) of every good line of `data`, read through
    /// `for_each_block` with blocks given back for reuse or not, and the source.
    fn read_blocks(data: &[u8], reuse: bool) -> (Vec<[String; 4]>, Source) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, data).unwrap();
        let options = InputOptions {
            max_line_len: 1024,
            buffer_size: 0,
            ..InputOptions::default()
        };
        let mut got = Vec::new();
        let source = open(&SourcePath::File(path), &options).for_each_block(|block| {
            for l in block.lines() {
                got.push([l.message, l.program, l.host, l.raw].map(str::to_string));
            }
            reuse.then_some(block)
        });
        (got, source)
    }

    #[test]
    fn bad_lines_in_a_block_are_reported_and_the_good_ones_kept_whole() {
        let mut data = Vec::new();
        for i in 0..3000 {
            data.extend_from_slice(
                format!("Nov 22 13:24:13 mx postfix/smtpd[{i}]: ok{i}\n").as_bytes(),
            );
            match i % 1000 {
                7 => data.extend_from_slice(b"Nov 22 13:24:13 mx postfix/smtpd[1]: \xff bad\n"),
                8 => data.extend_from_slice(b"Nov 22 13:24:13 mx postfix/smtpd[1]: \0 nul\n"),
                9 => data.extend_from_slice(b"no envelope\n"),
                10 => data.extend_from_slice(&[b'\xfe'; 1500]),
                _ => {}
            }
        }
        data.extend_from_slice(b"Nov 22 13:24:14 mx postfix/smtpd[9]: last");
        for reuse in [false, true] {
            let (got, source) = read_blocks(&data, reuse);
            // The long line runs into the good line after it, which goes with it.
            let kept: Vec<usize> = (0..3000).filter(|i| i % 1000 != 11).collect();
            assert_eq!(got.len(), kept.len() + 1);
            for (l, i) in got.iter().zip(&kept) {
                let want = format!("Nov 22 13:24:13 mx postfix/smtpd[{i}]: ok{i}");
                assert_eq!(l[3], want);
                assert_eq!(l[0], format!("ok{i}"));
                assert_eq!((l[1].as_str(), l[2].as_str()), ("postfix/smtpd", "mx"));
            }
            assert_eq!(got.last().map(|l| l[0].as_str()), Some("last"));
            let stats = &source.stats;
            // Per thousand: 999 good lines, 3 bad ones and the long one.
            assert_eq!(stats.lines, 3 * 1003 + 1);
            assert_eq!((stats.bad_lines, stats.skipped_long_lines), (9, 3));
            let kinds: Vec<String> = stats.errors.iter().take(4).map(|e| e.to_string()).collect();
            assert_eq!(
                kinds,
                [
                    "t.log:9: invalid UTF-8, line skipped",
                    "t.log:11: binary data (NUL bytes), line skipped",
                    "t.log:13: no known log format starts like this: \"no envelope\"",
                    "t.log:15: line longer than 1024 bytes, skipped",
                ]
                .map(|s| format!("{}/{s}", source.name.rsplit_once('/').unwrap().0)),
            );
        }
    }

    #[test]
    fn blocks_give_every_envelope_case_as_parse_gives_it() {
        // Every envelope case line, each format, through the block's spans and through
        // `Envelope::parse`, from the same year.
        let cases = include_str!("../testdata/envelope/cases.txt");
        let ins: Vec<&str> = cases
            .lines()
            .filter_map(|l| l.strip_prefix("in\t"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.log");
        std::fs::write(&path, ins.join("\n")).unwrap();
        let options = InputOptions {
            format: Some(Format::Postfix),
            year: Some(2026),
            ..InputOptions::default()
        };
        let show = |l: &Line<'_>| format!("{l:?}");
        let mut got = Vec::new();
        let source = open(&SourcePath::File(path), &options).for_each_block(|block| {
            got.extend(block.lines().map(|l| show(&l)));
            None
        });
        let mut env = Envelope::new(YearGuess::forced(2026));
        let want: Vec<String> = ins
            .iter()
            .filter_map(|l| env.parse(l).ok())
            .map(|l| show(&l))
            .collect();
        assert!(want.len() >= 40, "only {} good cases", want.len());
        assert_eq!(got, want);
        assert_eq!(source.stats.good_lines, want.len() as u64);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_start_cut_back_to_a_whole_character() {
        // `é` is two bytes: the 80th byte ends the first 13 + 33 * 2 = 79 in the middle of one.
        let bad = format!("no envelope: {}", "é".repeat(40));
        let data = format!("Nov 22 13:24:13 mx postfix/smtpd[1]: ok\n{bad}\n");
        let (got, source) = read_blocks(data.as_bytes(), false);
        assert_eq!(got.len(), 1);
        let want = format!("no envelope: {}", "é".repeat(33));
        match source.stats.errors.as_slice() {
            [InputError::BadLine { line, excerpt, .. }] => assert_eq!((*line, excerpt), (2, &want)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exim_mainlog_lines_share_their_constant_program() {
        let mut data = Vec::new();
        for i in 0..2000 {
            data.extend_from_slice(format!("2026-11-22 13:16:34 [{i}] m{i}\n").as_bytes());
            if i == 1500 {
                data.extend_from_slice(b"2026-11-22 13:16:34 \xff\n");
            }
        }
        for reuse in [false, true] {
            let (got, source) = read_blocks(&data, reuse);
            assert_eq!(got.len(), 2000);
            for (l, i) in got.iter().zip(0..) {
                assert_eq!(l[0], format!("m{i}"));
                assert_eq!((l[1].as_str(), l[2].as_str()), ("exim", ""));
            }
            assert_eq!(source.stats.bad_lines, 1);
        }
    }
}
