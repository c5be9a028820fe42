//! A sans-IO imitation of Cisco PIX/ASA `inspect esmtp` with its default settings, to reproduce
//! STARTTLS stripping and banner masking in tests and labs (the testkit's strip proxy drives it).
//!
//! The defaults of the real box are `mask-banner` (the 220 greeting's text becomes asterisks) and
//! `no allow-tls`: a `250-STARTTLS` line of an EHLO reply becomes `250-XXXXXXXA` (same length, so
//! TCP sequence numbers need no fix-up) and a client's `STARTTLS` command reaches the server as
//! `XXXXXXXA`. [`AsaRewriter`] does the same on byte streams: feed it whatever arrived in each
//! direction and forward what it returns.
//!
//! It works on lines (ended by LF, CR kept), buffers a partial line until its end arrives, and
//! gives up on a line longer than [`AsaConfig::max_line`] (those bytes pass through unchanged,
//! counted in [`AsaStats`]; a reply line's first four bytes still say whether it ends a reply).
//! Message content after `DATA` + `354` passes untouched until the line `.` that ends it (bare
//! LF line ends count: see `BodyEnd`), and so do the bytes of a `BDAT <size>` chunk
//! (CHUNKING), counted. When
//! STARTTLS is allowed and the server accepted it with 220, the rewriter becomes transparent for
//! good (the rest is TLS).

/// Default cap on a buffered line, in bytes.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// Which rewrites to do; [`Default`] is the ASA's default `inspect esmtp` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsaConfig {
    /// Replace the text of the 220 greeting by asterisks (`mask-banner`).
    pub mask_banner: bool,
    /// Mask STARTTLS in EHLO replies and the STARTTLS command (`no allow-tls`).
    pub strip_starttls: bool,
    /// Longest line buffered while waiting for its end; longer lines pass through unchanged.
    pub max_line: usize,
}

impl Default for AsaConfig {
    fn default() -> Self {
        Self {
            mask_banner: true,
            strip_starttls: true,
            max_line: DEFAULT_MAX_LINE,
        }
    }
}

/// The masked form of `STARTTLS`, as the ASA writes it (same length).
pub const MASKED_STARTTLS: &[u8; 8] = b"XXXXXXXA";

/// Where the scan of message content stands, to find the line `.` that ends it.
///
/// Which endings count: a line that is only `.`, ended by LF with or without a CR before it,
/// after a line ended the same way. So `CRLF.CRLF`, and also `LF.LF`, `CRLF.LF` and `LF.CRLF`;
/// not a bare CR (`CR.CR`), nor `.` followed by anything else (`..` is dot-stuffed content).
///
/// The proxy must leave body mode wherever the server may have left it, or it stops
/// rewriting commands and its state no longer follows the session. Postfix before 3.9 (and
/// 3.9+ for clients in `smtpd_forbid_bare_newline_exclusions`, by default `$mynetworks`), with
/// `smtpd_forbid_bare_newline = no`, reads every line up to LF, drops one CR before it and
/// ends DATA on a line `.`: exactly the endings above. With `normalize` (the 3.9 default) or
/// `reject` it ends DATA only on `CRLF.CRLF` (the SMTP smuggling fix). The wider of the two
/// is followed. Its cost, with a strict server and a client that mixes line endings: the
/// proxy reads the rest of the message as commands. A content line `STARTTLS` is then masked
/// (same length); a content line `DATA` or `BDAT n` puts the proxy back in body mode, or
/// passes the next `n` bytes as a chunk, so it can stay out of step with the server for the
/// rest of the session and let a later `STARTTLS` through unmasked. Staying in body mode
/// instead would stop all rewriting for the rest of the session on a lenient server, for any
/// client that ends its data with a bare LF. The proxy is a test tool for the admin's own MTA,
/// whose client writes CRLF throughout and meets neither case; a client crafted to
/// desynchronise it can. Cisco does not document which endings the PIX/ASA `inspect esmtp`
/// engine takes as the end of data, so this imitation follows the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// At the start of a line (after LF, or right after the 354: an empty body is `.` alone).
    LineStart,
    /// The line so far is `.`.
    Dot,
    /// The line so far is `.` and a CR.
    DotCr,
    /// Anywhere else in a line.
    InLine,
}

/// Line buffer of one direction.
#[derive(Debug, Clone, Default)]
struct Direction {
    buf: Vec<u8>,
    /// Inside a line that was too long: pass bytes through until the next LF.
    overlong: bool,
    /// The first bytes of the overlong line being passed through, up to 5: enough for
    /// [`reply_code`] to judge its start as it judges a whole line (`250 `, `250-`; but
    /// `250\r` and more is no reply line, while the 4 bytes `250\r` read as `250` ended),
    /// and all of a line that short (under a limit of a few bytes).
    overlong_head: Vec<u8>,
    /// Lines found too long to inspect so far.
    overlong_lines: u32,
}

impl Direction {
    /// The line in `buf`, going on in `bytes` (up to its LF, if there), is too long to
    /// inspect: count it, and keep its start.
    fn too_long(&mut self, bytes: &[u8]) {
        self.overlong_lines = self.overlong_lines.saturating_add(1);
        self.overlong_head = self.buf.iter().chain(bytes).take(5).copied().collect();
    }

    /// More of the overlong line (up to its LF, if there): its start, if still shorter than
    /// kept, goes on.
    fn more_of_long(&mut self, bytes: &[u8]) {
        let room = 5usize.saturating_sub(self.overlong_head.len());
        self.overlong_head.extend(bytes.iter().take(room));
    }
}

/// What a rewriter changed so far on its connection. More counters may come: outside this
/// crate, start from `AsaStats::default()` and set fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AsaStats {
    /// Greeting lines whose text was replaced by asterisks.
    pub banner_lines_masked: u32,
    /// `250` reply lines whose `STARTTLS` became `XXXXXXXA` (server to client).
    pub capabilities_masked: u32,
    /// `STARTTLS` commands that reached the server as `XXXXXXXA` (client to server).
    pub commands_masked: u32,
    /// Lines from the client longer than [`AsaConfig::max_line`], passed through uninspected
    /// (a `STARTTLS` in them was not masked). Message content is not lines.
    pub overlong_command_lines: u32,
    /// Lines from the server longer than [`AsaConfig::max_line`], passed through uninspected
    /// (a `STARTTLS` in them was not masked, a banner line not masked).
    pub overlong_reply_lines: u32,
}

/// A stateful rewriter for one SMTP connection, fed from both directions.
#[derive(Debug, Clone)]
pub struct AsaRewriter {
    config: AsaConfig,
    stats: AsaStats,
    s2c: Direction,
    c2s: Direction,
    greeting_done: bool,
    data_pending: bool,
    tls_pending: bool,
    in_body: bool,
    /// Where the message body scan stands ([`BodyEnd`]).
    body_end: BodyEnd,
    /// Bytes of a `BDAT` chunk from the client still to pass through untouched.
    bdat_remaining: u64,
    /// Replies the server still owes: the greeting, one a command line, one a message
    /// body's end, less the replies seen ([`AsaRewriter::replies_owed`]).
    replies_owed: u32,
    transparent: bool,
}

impl Default for AsaRewriter {
    fn default() -> Self {
        Self::new(AsaConfig::default())
    }
}

impl AsaRewriter {
    /// A rewriter for a new connection (the server's greeting comes first).
    pub fn new(config: AsaConfig) -> Self {
        Self {
            config,
            stats: AsaStats::default(),
            s2c: Direction::default(),
            c2s: Direction::default(),
            greeting_done: false,
            data_pending: false,
            tls_pending: false,
            in_body: false,
            body_end: BodyEnd::LineStart,
            bdat_remaining: 0,
            replies_owed: 1,
            transparent: false,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> AsaConfig {
        self.config
    }

    /// What was rewritten so far, and the lines too long to inspect.
    pub fn stats(&self) -> AsaStats {
        AsaStats {
            overlong_command_lines: self.c2s.overlong_lines,
            overlong_reply_lines: self.s2c.overlong_lines,
            ..self.stats
        }
    }

    /// True while the client's message content is being passed through (after DATA + 354).
    pub fn in_body(&self) -> bool {
        self.in_body
    }

    /// True once an allowed STARTTLS succeeded: everything passes through from then on.
    pub fn is_transparent(&self) -> bool {
        self.transparent
    }

    /// How many replies the server owes the client so far: the greeting, one for each
    /// command line and each message body's end the client sent, less the replies (their
    /// last lines) the server sent. `None` once TLS made the session opaque. A proxy uses it
    /// to tell a server still working on an answer (a content filter scanning the message)
    /// from one that has answered everything and merely stays open.
    pub fn replies_owed(&self) -> Option<u32> {
        (!self.transparent).then_some(self.replies_owed)
    }

    /// Rewrite bytes going from the server to the client; returns what to forward (possibly
    /// nothing yet, when only part of a line arrived).
    pub fn server_to_client(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + self.s2c.buf.len());
        if self.transparent {
            out.append(&mut self.s2c.buf);
            out.extend_from_slice(bytes);
            return out;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.transparent {
                out.extend_from_slice(rest);
                break;
            }
            let (taken, tail) = take_line(&mut self.s2c, rest, self.config.max_line, &mut out);
            rest = tail;
            match taken {
                Taken::Line(mut line) => {
                    self.server_line(&mut line);
                    out.extend_from_slice(&line);
                }
                // An overlong reply line is not inspected, but its start (`250 ` or `250-`)
                // says whether it ends a reply: a reply owed is paid, as by a short line.
                Taken::OverlongEnd => {
                    let head = std::mem::take(&mut self.s2c.overlong_head);
                    if let Some((code, true)) = reply_code(&head) {
                        self.reply_ended(code);
                    }
                }
                Taken::Partial => {}
            }
        }
        out
    }

    /// Rewrite bytes going from the client to the server; returns what to forward.
    pub fn client_to_server(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + self.c2s.buf.len());
        if self.transparent {
            out.append(&mut self.c2s.buf);
            out.extend_from_slice(bytes);
            return out;
        }
        // Bytes buffered before the body started belong to the body.
        let pending = if self.in_body && !self.c2s.buf.is_empty() {
            let mut p = std::mem::take(&mut self.c2s.buf);
            p.extend_from_slice(bytes);
            Some(p)
        } else {
            None
        };
        let mut rest: &[u8] = pending.as_deref().unwrap_or(bytes);
        while !rest.is_empty() {
            if self.transparent {
                out.extend_from_slice(rest);
                break;
            }
            if self.bdat_remaining > 0 {
                let n = usize::try_from(self.bdat_remaining)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                out.extend_from_slice(&rest[..n]);
                self.bdat_remaining -= n as u64;
                rest = &rest[n..];
                continue;
            }
            if self.in_body {
                let n = self.scan_body(rest);
                out.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
            let (taken, tail) = take_line(&mut self.c2s, rest, self.config.max_line, &mut out);
            rest = tail;
            match taken {
                Taken::Line(mut line) => {
                    self.client_line(&mut line);
                    out.extend_from_slice(&line);
                }
                // A command line too long to inspect still gets a reply (`500`).
                Taken::OverlongEnd => {
                    self.replies_owed = self.replies_owed.saturating_add(1);
                }
                Taken::Partial => {}
            }
        }
        out
    }

    /// Take the bytes of an unfinished line buffered from the server (e.g. when the server
    /// closed the connection mid-line): they are forwarded unchanged.
    pub fn take_pending_server(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.s2c.buf)
    }

    /// Take the bytes of an unfinished line buffered from the client, unchanged.
    pub fn take_pending_client(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.c2s.buf)
    }

    /// Scan message content; returns how many bytes of `bytes` belong to the body (up to and
    /// including the line `.` that ends it, see [`BodyEnd`]), leaving body mode at the end.
    fn scan_body(&mut self, bytes: &[u8]) -> usize {
        for (i, &b) in bytes.iter().enumerate() {
            self.body_end = match (self.body_end, b) {
                (BodyEnd::Dot | BodyEnd::DotCr, b'\n') => {
                    self.in_body = false;
                    self.replies_owed = self.replies_owed.saturating_add(1);
                    self.body_end = BodyEnd::LineStart;
                    return i + 1;
                }
                (_, b'\n') => BodyEnd::LineStart,
                (BodyEnd::LineStart, b'.') => BodyEnd::Dot,
                (BodyEnd::Dot, b'\r') => BodyEnd::DotCr,
                _ => BodyEnd::InLine,
            };
        }
        bytes.len()
    }

    fn server_line(&mut self, line: &mut [u8]) {
        let Some((code, last)) = reply_code(line) else {
            return;
        };
        let end = content_end(line);
        if !self.greeting_done {
            if self.config.mask_banner && code == 220 && end > 4 {
                line[4..end].fill(b'*');
                self.stats.banner_lines_masked = self.stats.banner_lines_masked.saturating_add(1);
            }
        } else if self.config.strip_starttls && code == 250 && end > 4 {
            let text = &line[4..end];
            let word_len = trim_end_spaces(text).len();
            if text[..word_len].eq_ignore_ascii_case(b"STARTTLS") {
                line[4..4 + word_len].copy_from_slice(MASKED_STARTTLS);
                self.stats.capabilities_masked = self.stats.capabilities_masked.saturating_add(1);
            }
        }
        if last {
            self.reply_ended(code);
        }
    }

    /// The last line of a reply with `code` came (whole or too long to inspect).
    fn reply_ended(&mut self, code: u16) {
        self.replies_owed = self.replies_owed.saturating_sub(1);
        if !self.greeting_done {
            self.greeting_done = true;
            return;
        }
        if self.data_pending && code == 354 {
            self.data_pending = false;
            self.in_body = true;
            // The line end of the DATA command counts: a lone "." line ends an empty body.
            self.body_end = BodyEnd::LineStart;
            // A line the client began before the 354 is message content, as its bytes still
            // buffered are (`client_to_server`): one already too long is no command line,
            // and its end, when it comes, is not the end of one.
            if std::mem::take(&mut self.c2s.overlong) {
                self.c2s.overlong_lines = self.c2s.overlong_lines.saturating_sub(1);
            }
        }
        if self.tls_pending && code == 220 {
            self.tls_pending = false;
            self.transparent = true;
        }
    }

    fn client_line(&mut self, line: &mut [u8]) {
        // Every line in command mode gets a reply, if only `500` (a BDAT chunk's too).
        self.replies_owed = self.replies_owed.saturating_add(1);
        let end = content_end(line);
        let start = line[..end]
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(end);
        let cmd = trim_end_spaces(&line[start..end]);
        let cmd_len = cmd.len();
        if cmd.eq_ignore_ascii_case(b"STARTTLS") {
            self.data_pending = false;
            if self.config.strip_starttls {
                line[start..start + cmd_len].copy_from_slice(MASKED_STARTTLS);
                self.stats.commands_masked = self.stats.commands_masked.saturating_add(1);
            } else {
                self.tls_pending = true;
            }
        } else if cmd.eq_ignore_ascii_case(b"DATA") {
            self.data_pending = true;
            self.tls_pending = false;
        } else if let Some(size) = bdat_size(cmd) {
            // RFC 3030: the chunk's bytes follow the command line at once, with no reply
            // awaited; they are message content, never commands.
            self.bdat_remaining = size;
            self.data_pending = false;
            self.tls_pending = false;
        } else {
            // DATA and STARTTLS end a pipelined group: another command means their reply came.
            self.data_pending = false;
            self.tls_pending = false;
        }
    }
}

/// The chunk size of a `BDAT <size> [LAST]` command (RFC 3030), any case.
fn bdat_size(cmd: &[u8]) -> Option<u64> {
    let verb = cmd.get(..5)?;
    if !verb.eq_ignore_ascii_case(b"BDAT ") {
        return None;
    }
    let size = cmd
        .get(5..)?
        .split(|b| *b == b' ')
        .find(|w| !w.is_empty())?;
    if !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Digits only, so no sign; too many for a u64 fails the parse.
    std::str::from_utf8(size).ok()?.parse().ok()
}

/// What [`take_line`] found.
enum Taken {
    /// A complete line, to inspect.
    Line(Vec<u8>),
    /// The end (LF) of a line too long to inspect, passed through.
    OverlongEnd,
    /// No line end yet.
    Partial,
}

/// Take the next complete line from `dir`'s buffer plus `bytes`. Returns what was found and
/// the unconsumed rest of `bytes`. Overlong data is appended to `out` directly.
fn take_line<'a>(
    dir: &mut Direction,
    bytes: &'a [u8],
    max_line: usize,
    out: &mut Vec<u8>,
) -> (Taken, &'a [u8]) {
    let nl = bytes.iter().position(|b| *b == b'\n');
    if dir.overlong {
        return match nl {
            Some(i) => {
                dir.overlong = false;
                dir.more_of_long(&bytes[..=i]);
                out.extend_from_slice(&bytes[..=i]);
                (Taken::OverlongEnd, &bytes[i + 1..])
            }
            None => {
                dir.more_of_long(bytes);
                out.extend_from_slice(bytes);
                (Taken::Partial, &[])
            }
        };
    }
    match nl {
        Some(i) if dir.buf.len() + i < max_line => {
            let mut line = std::mem::take(&mut dir.buf);
            line.extend_from_slice(&bytes[..=i]);
            (Taken::Line(line), &bytes[i + 1..])
        }
        Some(i) => {
            // The line is too long to inspect: pass it through.
            dir.too_long(&bytes[..=i]);
            out.append(&mut dir.buf);
            out.extend_from_slice(&bytes[..=i]);
            (Taken::OverlongEnd, &bytes[i + 1..])
        }
        None if dir.buf.len() + bytes.len() > max_line => {
            dir.too_long(bytes);
            out.append(&mut dir.buf);
            out.extend_from_slice(bytes);
            dir.overlong = true;
            (Taken::Partial, &[])
        }
        None => {
            dir.buf.extend_from_slice(bytes);
            (Taken::Partial, &[])
        }
    }
}

/// Index where the line's content ends (before `\r\n` or `\n`).
fn content_end(line: &[u8]) -> usize {
    let mut end = line.len();
    if end > 0 && line[end - 1] == b'\n' {
        end -= 1;
    }
    if end > 0 && line[end - 1] == b'\r' {
        end -= 1;
    }
    end
}

fn trim_end_spaces(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(0, |i| i + 1);
    &s[..n]
}

/// The reply code and whether this is the last line of the reply (`250 ` vs `250-`).
fn reply_code(line: &[u8]) -> Option<(u16, bool)> {
    let end = content_end(line);
    if end < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match line[..end].get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a conversation: which direction, what goes in, what must come out.
    #[derive(Clone, Copy)]
    enum Dir {
        S2C,
        C2S,
    }
    use Dir::{C2S, S2C};

    fn run(config: AsaConfig, steps: &[(Dir, &str, &str)]) {
        let mut rw = AsaRewriter::new(config);
        for (i, (dir, input, want)) in steps.iter().enumerate() {
            let got = match dir {
                S2C => rw.server_to_client(input.as_bytes()),
                C2S => rw.client_to_server(input.as_bytes()),
            };
            assert_eq!(
                String::from_utf8_lossy(&got),
                *want,
                "step {i}: input {input:?}"
            );
        }
    }

    const DEFAULTS: AsaConfig = AsaConfig {
        mask_banner: true,
        strip_starttls: true,
        max_line: DEFAULT_MAX_LINE,
    };

    #[test]
    fn table() {
        let allow_tls = AsaConfig {
            strip_starttls: false,
            ..DEFAULTS
        };
        let no_mask = AsaConfig {
            mask_banner: false,
            ..DEFAULTS
        };
        let small = AsaConfig {
            max_line: 16,
            ..DEFAULTS
        };
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, AsaConfig, &[(Dir, &str, &str)])] = &[
            (
                "banner masked, same length",
                DEFAULTS,
                &[(
                    S2C,
                    "220 mx.example ESMTP Postfix\r\n",
                    "220 ************************\r\n",
                )],
            ),
            (
                "multi-line banner, each line masked",
                DEFAULTS,
                &[(
                    S2C,
                    "220-mx.example\r\n220 hi there\r\n",
                    "220-**********\r\n220 ********\r\n",
                )],
            ),
            (
                "banner kept when mask_banner is off",
                no_mask,
                &[(S2C, "220 mx.example ESMTP\r\n", "220 mx.example ESMTP\r\n")],
            ),
            (
                "non-220 greeting not masked",
                DEFAULTS,
                &[(S2C, "554 go away\r\n", "554 go away\r\n")],
            ),
            (
                "partial line buffered until LF",
                DEFAULTS,
                &[
                    (S2C, "220 ab", ""),
                    (S2C, "c\r", ""),
                    (S2C, "\n", "220 ***\r\n"),
                ],
            ),
            (
                "EHLO reply: STARTTLS masked in the middle and at the end",
                DEFAULTS,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (C2S, "EHLO c\r\n", "EHLO c\r\n"),
                    (
                        S2C,
                        "250-mx\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
                        "250-mx\r\n250-XXXXXXXA\r\n250 8BITMIME\r\n",
                    ),
                    (C2S, "EHLO c\r\n", "EHLO c\r\n"),
                    (
                        S2C,
                        "250-mx\r\n250 starttls\r\n",
                        "250-mx\r\n250 XXXXXXXA\r\n",
                    ),
                ],
            ),
            (
                "BDAT chunks pass untouched, counted, a last line without LF too",
                DEFAULTS,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (
                        C2S,
                        "BDAT 14\r\nSTARTTLS\r\nab\r\n",
                        "BDAT 14\r\nSTARTTLS\r\nab\r\n",
                    ),
                    (C2S, "bdat 5 LAST\r\nhe", "bdat 5 LAST\r\nhe"),
                    (C2S, "llo", "llo"),
                    (C2S, "STARTTLS\r\n", "XXXXXXXA\r\n"),
                ],
            ),
            (
                "STARTTLS command rewritten, any case",
                DEFAULTS,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (C2S, "STARTTLS\r\n", "XXXXXXXA\r\n"),
                    (C2S, "StartTls\r\n", "XXXXXXXA\r\n"),
                    (C2S, "STARTTLSX\r\n", "STARTTLSX\r\n"),
                ],
            ),
            (
                "allow-tls: STARTTLS kept, then transparent after 220",
                allow_tls,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (
                        S2C,
                        "250-mx\r\n250 STARTTLS\r\n",
                        "250-mx\r\n250 STARTTLS\r\n",
                    ),
                    (C2S, "STARTTLS\r\n", "STARTTLS\r\n"),
                    (S2C, "220 2.0.0 Ready\r\n", "220 2.0.0 Ready\r\n"),
                    (C2S, "\x16\x03\x01no newline", "\x16\x03\x01no newline"),
                    (S2C, "250 STARTTLS\r\n", "250 STARTTLS\r\n"),
                ],
            ),
            (
                "allow-tls: refused STARTTLS keeps inspecting",
                allow_tls,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (C2S, "STARTTLS\r\n", "STARTTLS\r\n"),
                    (S2C, "454 no\r\n", "454 no\r\n"),
                    (C2S, "QUIT\r\n", "QUIT\r\n"),
                    (S2C, "220 x\r\n", "220 x\r\n"),
                ],
            ),
            (
                "message body untouched until CRLF.CRLF",
                DEFAULTS,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (
                        C2S,
                        "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                        "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                    ),
                    (
                        S2C,
                        "250 ok\r\n250 ok\r\n354 go\r\n",
                        "250 ok\r\n250 ok\r\n354 go\r\n",
                    ),
                    (
                        C2S,
                        "STARTTLS\r\nno newline yet",
                        "STARTTLS\r\nno newline yet",
                    ),
                    (C2S, "\r\n.", "\r\n."),
                    (C2S, "\r\nSTARTTLS\r\n", "\r\nXXXXXXXA\r\n"),
                ],
            ),
            (
                "empty body (lone dot right after 354)",
                DEFAULTS,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (C2S, "DATA\r\n", "DATA\r\n"),
                    (S2C, "354 go\r\n", "354 go\r\n"),
                    (C2S, ".\r\nSTARTTLS\r\n", ".\r\nXXXXXXXA\r\n"),
                ],
            ),
            (
                "DATA refused: no body mode",
                DEFAULTS,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (C2S, "DATA\r\n", "DATA\r\n"),
                    (S2C, "554 no rcpt\r\n", "554 no rcpt\r\n"),
                    (C2S, "STARTTLS\r\n", "XXXXXXXA\r\n"),
                ],
            ),
            (
                "overlong line passes through unchanged",
                small,
                &[
                    (S2C, "220 x\r\n", "220 *\r\n"),
                    (S2C, "250-0123456789abcdef", "250-0123456789abcdef"),
                    (S2C, "more\r\n250 STARTTLS\r\n", "more\r\n250 XXXXXXXA\r\n"),
                    (
                        C2S,
                        "STARTTLS STARTTLS STARTTLS\r\n",
                        "STARTTLS STARTTLS STARTTLS\r\n",
                    ),
                ],
            ),
            (
                "bare LF lines are handled",
                DEFAULTS,
                &[
                    (S2C, "220 ab\n", "220 **\n"),
                    (S2C, "250 STARTTLS\n", "250 XXXXXXXA\n"),
                    (C2S, "starttls\n", "XXXXXXXA\n"),
                ],
            ),
            (
                "garbage greeting passes through",
                DEFAULTS,
                &[
                    (S2C, "HELLO\r\n", "HELLO\r\n"),
                    (S2C, "220 x\r\n", "220 *\r\n"),
                ],
            ),
        ];
        for (name, config, steps) in cases {
            eprintln!("case: {name}");
            run(*config, steps);
        }
    }

    #[test]
    fn stats_count_what_was_rewritten() {
        let conversation: &[(Dir, &str)] = &[
            (S2C, "220-mx.example\r\n220 ESMTP\r\n"),
            (C2S, "EHLO c\r\n"),
            (S2C, "250-mx\r\n250-STARTTLS\r\n250 8BITMIME\r\n"),
            (C2S, "STARTTLS\r\n"),
            (S2C, "500 5.5.2 Error: command not recognized\r\n"),
            (C2S, "EHLO c\r\n"),
            (S2C, "250-mx\r\n250 STARTTLS\r\n"),
        ];
        let cases = [
            (
                DEFAULTS,
                AsaStats {
                    banner_lines_masked: 2,
                    capabilities_masked: 2,
                    commands_masked: 1,
                    ..AsaStats::default()
                },
            ),
            (
                AsaConfig {
                    strip_starttls: false,
                    ..DEFAULTS
                },
                AsaStats {
                    banner_lines_masked: 2,
                    ..AsaStats::default()
                },
            ),
            (
                AsaConfig {
                    mask_banner: false,
                    ..DEFAULTS
                },
                AsaStats {
                    banner_lines_masked: 0,
                    capabilities_masked: 2,
                    commands_masked: 1,
                    ..AsaStats::default()
                },
            ),
        ];
        for (config, want) in cases {
            let mut rw = AsaRewriter::new(config);
            for (dir, bytes) in conversation {
                match dir {
                    S2C => rw.server_to_client(bytes.as_bytes()),
                    C2S => rw.client_to_server(bytes.as_bytes()),
                };
            }
            assert_eq!(rw.stats(), want, "{config:?}");
        }
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let server = "220-mx.example\r\n220 ESMTP\r\n250-mx\r\n250-STARTTLS\r\n250 SIZE\r\n";
        let mut whole = AsaRewriter::default();
        let want = whole.server_to_client(server.as_bytes());
        let mut single = AsaRewriter::default();
        let got: Vec<u8> = server
            .as_bytes()
            .iter()
            .flat_map(|b| single.server_to_client(std::slice::from_ref(b)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), server.len());
    }

    /// The endings of message content that leave body mode, and look-alikes that do not.
    /// After the body, a `STARTTLS` line is masked only if body mode was left.
    #[test]
    fn body_endings() {
        // (body after the 354, whether it ended)
        let cases: &[(&str, bool)] = &[
            ("a\r\n.\r\n", true),
            ("a\n.\n", true),
            ("a\r\n.\n", true),
            ("a\n.\r\n", true),
            (".\n", true),
            (".\r\n", true),
            ("a\n\n.\n", true),
            ("a\r\n..\r\n", false),
            ("a\n..\n", false),
            ("a\n. \n", false),
            ("a\n.x\n", false),
            ("a\n.\r\r\n", false),
            ("a\r.\r", false),
            ("a\r.\r\n", false),
            ("a.\n", false),
        ];
        for &(body, ended) in cases {
            let mut rw = AsaRewriter::default();
            rw.server_to_client(b"220 x\r\n");
            rw.client_to_server(b"DATA\r\n");
            rw.server_to_client(b"354 go\r\n");
            assert!(rw.in_body(), "{body:?}");
            let input = format!("{body}STARTTLS\r\n");
            let want = if ended {
                format!("{body}XXXXXXXA\r\n")
            } else {
                input.clone()
            };
            // Whole, and a byte at a time.
            let got = rw.clone().client_to_server(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), want, "{body:?}");
            let got: Vec<u8> = input
                .bytes()
                .flat_map(|b| rw.client_to_server(&[b]))
                .collect();
            assert_eq!(String::from_utf8_lossy(&got), want, "{body:?} by bytes");
            assert_eq!(rw.in_body(), !ended, "{body:?}");
        }
    }

    /// After a bare-LF ending the state machine follows the next transaction: a second DATA
    /// enters body mode again, and its body passes untouched.
    #[test]
    fn a_bare_lf_ending_keeps_the_session_in_step() {
        run(
            DEFAULTS,
            &[
                (S2C, "220 x\r\n", "220 *\r\n"),
                (C2S, "DATA\n", "DATA\n"),
                (S2C, "354 go\n", "354 go\n"),
                (C2S, "STARTTLS\n.\n", "STARTTLS\n.\n"),
                (S2C, "250 ok\n", "250 ok\n"),
                (C2S, "DATA\r\n", "DATA\r\n"),
                (S2C, "354 go\r\n", "354 go\r\n"),
                (C2S, "STARTTLS\r\n.\n", "STARTTLS\r\n.\n"),
                (S2C, "250 ok\r\n", "250 ok\r\n"),
                (C2S, "STARTTLS\r\n", "XXXXXXXA\r\n"),
            ],
        );
    }

    #[test]
    fn body_end_split_across_chunks() {
        let mut rw = AsaRewriter::default();
        rw.server_to_client(b"220 x\r\n");
        rw.client_to_server(b"DATA\r\n");
        rw.server_to_client(b"354 go\r\n");
        let body = b"line\r\n\r\r\n.x\r\n.\r\nSTARTTLS\r\n";
        let got: Vec<u8> = body
            .iter()
            .flat_map(|b| rw.client_to_server(std::slice::from_ref(b)))
            .collect();
        assert_eq!(got, b"line\r\n\r\r\n.x\r\n.\r\nXXXXXXXA\r\n");
        assert!(!rw.in_body());
    }

    /// The replies a server owes: the greeting, one a command line (pipelined or not), one a
    /// body's end and one a BDAT chunk; a multi-line reply pays one. Once TLS is up the
    /// session is opaque.
    #[test]
    fn replies_owed_follow_commands_and_replies() {
        let mut rw = AsaRewriter::new(AsaConfig {
            strip_starttls: false,
            ..AsaConfig::default()
        });
        let steps: &[(Dir, &str, Option<u32>)] = &[
            (S2C, "", Some(1)),
            (S2C, "220-mx ESMTP\r\n", Some(1)),
            (S2C, "220 mx\r\n", Some(0)),
            (C2S, "EHLO c\r\n", Some(1)),
            (S2C, "250-mx\r\n250-PIPELINING\r\n", Some(1)),
            (S2C, "250 STARTTLS\r\n", Some(0)),
            (C2S, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", Some(3)),
            (S2C, "250 ok\r\n250 ok\r\n354 go\r\n", Some(0)),
            // Body lines are not commands; the end of the body is owed a reply.
            (C2S, "Subject: x\r\n\r\nQUIT\r\n", Some(0)),
            (C2S, ".\r\nBDAT 5 LAST\r\nab\r\n", Some(2)),
            (S2C, "250 queued\r\n", Some(1)),
            (S2C, "250 chunk\r\n", Some(0)),
            // A reply in pieces pays when its last line is whole.
            (C2S, "NOOP\r\n", Some(1)),
            (S2C, "250 o", Some(1)),
            (S2C, "k\r\n", Some(0)),
            // More replies than commands (a server's 421 at the end) do not go below 0.
            (S2C, "421 bye\r\n", Some(0)),
            (C2S, "STARTTLS\r\n", Some(1)),
            (S2C, "220 go ahead\r\n", None),
            (C2S, "EHLO c\r\n", None),
        ];
        check_owed(&mut rw, steps);
    }

    /// A command line too long to inspect is passed through, and still owed its reply
    /// (`500`), whether it arrives at once or in pieces.
    #[test]
    fn an_overlong_command_line_is_owed_a_reply() {
        let mut rw = AsaRewriter::new(AsaConfig {
            max_line: 16,
            ..AsaConfig::default()
        });
        let steps: &[(Dir, &str, Option<u32>)] = &[
            (S2C, "220 mx\r\n", Some(0)),
            (C2S, "NOOP\r\n", Some(1)),
            (C2S, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n", Some(2)),
            (C2S, "YYYYYYYYYYYYYYYYYYYY", Some(2)),
            (C2S, "YYYYYYYYYYYYYYYYYYYY\r\nQUIT\r\n", Some(4)),
            (S2C, "250 ok\r\n500 too long\r\n", Some(2)),
            (S2C, "500 too long\r\n221 bye\r\n", Some(0)),
        ];
        check_owed(&mut rw, steps);
        assert_eq!(
            rw.stats(),
            AsaStats {
                banner_lines_masked: 1,
                overlong_command_lines: 2,
                ..AsaStats::default()
            }
        );
    }

    /// A reply line too long to inspect is passed through and counted; its start still says
    /// whether it ends a reply (`250 ` does, `250-` does not), whole or in pieces, so the
    /// reply owed is paid, an overlong greeting ends the greeting (the EHLO reply after it is
    /// still inspected), and an overlong 354 starts the message.
    #[test]
    fn an_overlong_reply_line_is_counted_and_can_end_a_reply() {
        let mut rw = AsaRewriter::new(AsaConfig {
            max_line: 16,
            ..AsaConfig::default()
        });
        let long = "x".repeat(40);
        let steps: Vec<(Dir, String, Option<u32>)> = vec![
            (S2C, format!("220 mx {long}\r\n"), Some(0)),
            (C2S, "EHLO c\r\n".into(), Some(1)),
            (S2C, format!("250-mx {long}\r\n"), Some(1)),
            (S2C, "25".into(), Some(1)),
            (S2C, format!("0 STARTTLS {long}"), Some(1)),
            (S2C, "\r\n".into(), Some(0)),
            (C2S, "EHLO c\r\n".into(), Some(1)),
            (S2C, "250-mx\r\n250 STARTTLS\r\n".into(), Some(0)),
            (C2S, "DATA\r\n".into(), Some(1)),
            (S2C, format!("354 go ahead {long}\r\n"), Some(0)),
        ];
        let (mut sent, mut forwarded) = (String::new(), Vec::new());
        for (i, (dir, bytes, owed)) in steps.iter().enumerate() {
            match dir {
                S2C => {
                    sent.push_str(bytes);
                    forwarded.extend(rw.server_to_client(bytes.as_bytes()));
                }
                C2S => drop(rw.client_to_server(bytes.as_bytes())),
            }
            assert_eq!(rw.replies_owed(), *owed, "step {i}: {bytes:?}");
        }
        // The overlong lines passed unchanged; only the short STARTTLS line was masked.
        assert_eq!(
            String::from_utf8_lossy(&forwarded),
            sent.replacen("250 STARTTLS\r\n", "250 XXXXXXXA\r\n", 1)
        );
        assert!(rw.in_body(), "the overlong 354 started the message");
        assert_eq!(
            rw.stats(),
            AsaStats {
                capabilities_masked: 1,
                overlong_reply_lines: 4,
                ..AsaStats::default()
            }
        );
    }

    /// Whether a reply line ends the reply owed does not depend on its length: a line too
    /// long to inspect is judged by its start as a short one is, whole or cut into two reads
    /// at any byte. `250\r` followed by more is no reply line (the CR is not the line's end).
    #[test]
    fn an_overlong_reply_line_ends_a_reply_as_a_short_one_would() {
        // (the line's start, whether a line starting so ends the reply)
        let starts: &[(&str, bool)] = &[
            ("250 ", true),
            ("250-", false),
            ("250\r", false),
            ("250\t", false),
            ("2500", false),
            ("25 x", false),
            ("25-x", false),
            ("x250", false),
        ];
        // (the line, the longest line inspected, whether it ends the reply)
        let mut cases: Vec<(String, usize, bool)> = Vec::new();
        for &(start, ends) in starts {
            // Short, and too long, for a 16-byte limit.
            for len in [8, 40] {
                cases.push((format!("{start}{}\r\n", "y".repeat(len)), 16, ends));
            }
        }
        // Whole lines of a few bytes, too long for a 2-byte limit.
        let tiny: &[(&str, bool)] = &[
            ("250\r\n", true),
            ("250\n", true),
            ("250 \r\n", true),
            ("250-\n", false),
            ("25\r\n", false),
            ("250\rx\n", false),
        ];
        cases.extend(tiny.iter().map(|&(line, ends)| (line.to_owned(), 2, ends)));
        for (line, max_line, ends) in cases {
            let config = AsaConfig {
                max_line,
                ..AsaConfig::default()
            };
            let what = if line.len() > max_line {
                "overlong"
            } else {
                "short"
            };
            for cut in 0..=line.len() {
                let mut rw = AsaRewriter::new(config);
                rw.server_to_client(b"220 mx\r\n");
                rw.client_to_server(b"NOOP\r\n");
                assert_eq!(rw.replies_owed(), Some(1), "{what} {line:?}");
                let (a, b) = line.as_bytes().split_at(cut);
                let mut got = rw.server_to_client(a);
                got.extend(rw.server_to_client(b));
                assert_eq!(got, line.as_bytes(), "{what} {line:?} cut at {cut}");
                let want = Some(u32::from(!ends));
                assert_eq!(rw.replies_owed(), want, "{what} {line:?} cut at {cut}");
            }
        }
    }

    /// A client that starts its message before the 354 came (a line too long to inspect,
    /// with no LF yet): the rest of that line is message content once the 354 comes, not the
    /// end of an overlong command line, so the first command after the message is still
    /// inspected (its `STARTTLS` masked) and owed a reply.
    #[test]
    fn an_overlong_line_sent_before_the_354_is_message_content() {
        let small = AsaConfig {
            max_line: 16,
            ..AsaConfig::default()
        };
        let long = "x".repeat(40);
        // (how the 354 meets the long line: what the client sent of it before and after)
        let cases: [(&str, &str); 3] = [
            (&long, "\r\n.\r\n"),
            (&long, "yyyy\r\n.\r\n"),
            ("0123456789", &format!("{long}\r\n.\r\n")),
        ];
        for (before, after) in cases {
            let mut rw = AsaRewriter::new(small);
            rw.server_to_client(b"220 mx\r\n");
            rw.client_to_server(b"DATA\r\n");
            let mut got = rw.client_to_server(before.as_bytes());
            rw.server_to_client(b"354 go\r\n");
            assert!(rw.in_body(), "{before:?}");
            got.extend(rw.client_to_server(after.as_bytes()));
            assert!(!rw.in_body(), "{before:?} {after:?}");
            assert_eq!(rw.replies_owed(), Some(1), "{before:?}: the message end");
            got.extend(rw.client_to_server(b"STARTTLS\r\n"));
            assert_eq!(
                String::from_utf8_lossy(&got),
                format!("{before}{after}XXXXXXXA\r\n"),
                "{before:?} {after:?}"
            );
            assert_eq!(rw.replies_owed(), Some(2), "{before:?}");
            assert_eq!(rw.stats().overlong_command_lines, 0, "{before:?}: content");
        }
    }

    fn check_owed(rw: &mut AsaRewriter, steps: &[(Dir, &str, Option<u32>)]) {
        for (i, (dir, bytes, owed)) in steps.iter().enumerate() {
            match dir {
                S2C => drop(rw.server_to_client(bytes.as_bytes())),
                C2S => drop(rw.client_to_server(bytes.as_bytes())),
            }
            assert_eq!(rw.replies_owed(), *owed, "step {i}: {bytes:?}");
        }
    }
}
