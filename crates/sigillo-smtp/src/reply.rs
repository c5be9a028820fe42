//! Parsing of SMTP replies (RFC 5321 §4.2) from a byte buffer.
//!
//! [`parse_reply`] returns `Ok(None)` while a reply is incomplete ("need more input"),
//! and an error as soon as the input can no longer be a valid reply or exceeds a limit,
//! so a caller's buffer never grows past [`ReplyLimits`].

use serde::Serialize;

/// Hard limits applied while parsing a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Longest accepted line, CRLF excluded. RFC 5321 says 512 with CRLF; real servers
    /// (and middleboxes) sometimes exceed it, so the default is more lenient.
    pub max_line: usize,
    /// Most lines accepted in one multi-line reply.
    pub max_lines: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            max_line: 2048,
            max_lines: 128,
        }
    }
}

impl ReplyLimits {
    /// The most bytes a caller ever needs to buffer for one reply under these limits.
    pub fn max_reply_bytes(&self) -> usize {
        (self.max_line + 2) * self.max_lines
    }
}

/// One complete SMTP reply: a three-digit code and its lines as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// The reply code, e.g. 250.
    pub code: u16,
    /// Every line as received, without the line ending (invalid UTF-8 replaced).
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of each line, after the code and the separator.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or(""))
    }

    /// The text of the first line.
    pub fn first_text(&self) -> &str {
        self.texts().next().unwrap_or("")
    }

    /// 2xx: positive completion.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: transient negative completion.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: permanent negative completion.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

/// Why bytes could not be parsed as an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line (or the unterminated tail of the buffer) is longer than allowed.
    #[error("reply line longer than {limit} bytes (got at least {got})")]
    LineTooLong { limit: usize, got: usize },
    /// A multi-line reply has more lines than allowed.
    #[error("reply has more than {limit} lines")]
    TooManyLines { limit: usize },
    /// A line does not start with a three-digit code from 200 to 599.
    #[error("malformed reply line, expected a 3-digit code: {line:?}")]
    BadCode { line: String },
    /// The code is not followed by a space, a hyphen or the end of the line.
    #[error("malformed reply line, expected ' ' or '-' after the code: {line:?}")]
    BadSeparator { line: String },
    /// A continuation line carries a different code than the first line.
    #[error(
        "reply code changed inside a multi-line reply: expected {expected}, got {got}: {line:?}"
    )]
    CodeMismatch {
        expected: u16,
        got: u16,
        line: String,
    },
}

/// Parses one reply from the start of `buf`.
///
/// Returns `Ok(Some((reply, consumed)))` with the number of bytes used, `Ok(None)` when more
/// input is needed, or an error. Lines end in CRLF; a bare LF is accepted too.
pub fn parse_reply(buf: &[u8], limits: &ReplyLimits) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut lines = Vec::new();
    let mut code = None;
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > limits.max_line + 1 {
                return Err(ReplyError::LineTooLong {
                    limit: limits.max_line,
                    got: rest.len(),
                });
            }
            if !rest.is_empty() && lines.len() == limits.max_lines {
                return Err(ReplyError::TooManyLines {
                    limit: limits.max_lines,
                });
            }
            // Validate what we have so far, so garbage fails fast instead of waiting.
            if rest.len() >= 4 {
                check_prefix(rest, code)?;
            }
            return Ok(None);
        };
        let mut line = &rest[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > limits.max_line {
            return Err(ReplyError::LineTooLong {
                limit: limits.max_line,
                got: line.len(),
            });
        }
        if lines.len() == limits.max_lines {
            return Err(ReplyError::TooManyLines {
                limit: limits.max_lines,
            });
        }
        let (line_code, last) = check_prefix(line, code)?;
        code = Some(line_code);
        lines.push(String::from_utf8_lossy(line).into_owned());
        pos += nl + 1;
        if last {
            return Ok(Some((
                Reply {
                    code: line_code,
                    lines,
                },
                pos,
            )));
        }
    }
}

/// Checks code and separator of a (possibly partial) line; returns the code and whether the
/// line is the last of its reply.
fn check_prefix(line: &[u8], expected: Option<u16>) -> Result<(u16, bool), ReplyError> {
    let lossy = || String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return Err(ReplyError::BadCode { line: lossy() });
    }
    let code = u16::from(line[0] - b'0') * 100
        + u16::from(line[1] - b'0') * 10
        + u16::from(line[2] - b'0');
    let last = match line.get(3) {
        // A CR right after the code is the start of the line's CRLF (input cut between CR and LF).
        None | Some(b' ') | Some(b'\r') => true,
        Some(b'-') => false,
        Some(_) => return Err(ReplyError::BadSeparator { line: lossy() }),
    };
    if let Some(expected) = expected
        && expected != code
    {
        return Err(ReplyError::CodeMismatch {
            expected,
            got: code,
            line: lossy(),
        });
    }
    Ok((code, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<Option<(Reply, usize)>, ReplyError> {
        parse_reply(input.as_bytes(), &ReplyLimits::default())
    }

    #[test]
    fn complete_replies() {
        let cases: &[(&str, u16, usize, usize)] = &[
            ("220 mx.example.com ESMTP Postfix\r\n", 220, 1, 34),
            (
                "250-mx.example.com\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                250,
                3,
                50,
            ),
            ("220\r\n", 220, 1, 5),
            ("250 ok\nrest", 250, 1, 7),
            ("421 4.3.2 busy\r\n220 later\r\n", 421, 1, 16),
        ];
        for &(input, code, nlines, consumed) in cases {
            let (reply, used) = parse(input)
                .unwrap()
                .unwrap_or_else(|| panic!("incomplete: {input:?}"));
            assert_eq!(reply.code, code, "{input:?}");
            assert_eq!(reply.lines.len(), nlines, "{input:?}");
            assert_eq!(used, consumed, "{input:?}");
        }
    }

    #[test]
    fn incomplete_needs_more_input() {
        for input in [
            "",
            "2",
            "25",
            "250",
            "250-a\r\n",
            "250-a\r\n250 b",
            "220 hello",
        ] {
            assert_eq!(parse(input).unwrap(), None, "{input:?}");
        }
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            parse("HTTP/1.1 400\r\n"),
            Err(ReplyError::BadCode { .. })
        ));
        assert!(matches!(
            parse("999 x\r\n"),
            Err(ReplyError::BadCode { .. })
        ));
        assert!(matches!(parse("SSH-"), Err(ReplyError::BadCode { .. })));
        assert!(matches!(
            parse("250_x\r\n"),
            Err(ReplyError::BadSeparator { .. })
        ));
        assert!(matches!(
            parse("250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch {
                expected: 250,
                got: 251,
                ..
            })
        ));
    }

    #[test]
    fn limits_bound_the_buffer() {
        let limits = ReplyLimits {
            max_line: 16,
            max_lines: 2,
        };
        let long = format!("220 {}", "a".repeat(40));
        assert!(matches!(
            parse_reply(long.as_bytes(), &limits),
            Err(ReplyError::LineTooLong { .. })
        ));
        let long_line = format!("{long}\r\n");
        assert!(matches!(
            parse_reply(long_line.as_bytes(), &limits),
            Err(ReplyError::LineTooLong { .. })
        ));
        assert!(matches!(
            parse_reply(b"250-a\r\n250-b\r\n250 c\r\n", &limits),
            Err(ReplyError::TooManyLines { limit: 2 })
        ));
    }

    #[test]
    fn split_between_cr_and_lf_needs_more_input() {
        assert_eq!(parse("220\r").unwrap(), None);
        assert_eq!(parse("250-a\r\n250\r").unwrap(), None);
        assert_eq!(parse("221\r\n").unwrap().unwrap().0.code, 221);
    }

    #[test]
    fn buffered_bytes_stay_within_max_reply_bytes() {
        let limits = ReplyLimits {
            max_line: 16,
            max_lines: 3,
        };
        let input = "250-aaaaaaaaaaaa\r\n250-aaaaaaaaaaaa\r\n250-aaaaaaaaaaaa\r\n250-a";
        assert!(input.len() <= limits.max_reply_bytes() + 16);
        assert_eq!(
            parse_reply(input.as_bytes(), &limits),
            Err(ReplyError::TooManyLines { limit: 3 })
        );
    }

    #[test]
    fn texts_skip_code_and_separator() {
        let (reply, _) = parse("250-mx\r\n250 STARTTLS\r\n").unwrap().unwrap();
        assert_eq!(reply.texts().collect::<Vec<_>>(), ["mx", "STARTTLS"]);
        assert_eq!(reply.first_text(), "mx");
    }
}
