//! The Postfix socketmap protocol (`socketmap_table(5)`): netstring framing, lookup requests
//! and their replies, decoded from and encoded into byte buffers.
//!
//! Both directions are netstrings, `<length>:<bytes>,`, with no newline in between. A request
//! is `<map name> <key>` (`19:postfix example.com,`); a reply is `OK <data>`, `NOTFOUND `,
//! `TEMP <reason>`, `TIMEOUT <reason>` or `PERM <reason>`. Postfix may pipeline requests and
//! keep a connection open, so [`decode_request`] takes whatever bytes have arrived and returns
//! the first request with the number of bytes it used, or `Ok(None)` when more are needed:
//!
//! ```
//! use sigillo_policy::socketmap::{decode_request, Reply};
//!
//! let mut buf: &[u8] = b"19:postfix example.com,16:postfix .example,";
//! let mut out = Vec::new();
//! while let Some((request, used)) = decode_request(buf)? {
//!     assert_eq!(request.map_name, "postfix");
//!     Reply::NotFound.encode(&mut out)?;
//!     buf = &buf[used..];
//! }
//! assert!(buf.is_empty());
//! assert_eq!(out, b"9:NOTFOUND ,9:NOTFOUND ,");
//! # Ok::<(), sigillo_policy::socketmap::SocketmapError>(())
//! ```
//!
//! An error means the stream has lost its framing: answer nothing more and close the
//! connection (Postfix then retries on a new one).

use std::fmt;

/// Largest reply payload, in bytes: the limit Postfix's socketmap client enforces.
pub const MAX_REPLY_LEN: usize = 100_000;

/// Largest request payload accepted by [`decode_request`], in bytes.
///
/// A request is a map name, a space and a key; for `smtp_tls_policy_maps` the key is a
/// next-hop (a domain is at most 253 bytes, plus brackets and a port). 4096 leaves room for
/// other maps' keys while bounding what one connection can make the server buffer: a length
/// prefix above it is rejected as soon as its digits arrive.
pub const MAX_REQUEST_LEN: usize = 4096;

/// Why bytes are not a valid socketmap exchange, or a reply cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocketmapError {
    /// A byte other than a digit where the netstring length starts.
    #[error("netstring length: expected a digit, got byte {got:#04x}")]
    BadLength { got: u8 },
    /// A byte other than a digit or `:` after the length digits.
    #[error("netstring: expected a digit or ':' after the length, got byte {got:#04x}")]
    MissingColon { got: u8 },
    /// The length has a leading zero (`007:`), which netstrings forbid.
    #[error("netstring length has a leading zero")]
    LeadingZero,
    /// A payload to encode is over the cap.
    #[error("netstring longer than {limit} bytes (got {got})")]
    TooLong { limit: usize, got: usize },
    /// A length prefix announces more than the cap. It is rejected as soon as its digits show
    /// that, before its `:` arrives, so `digits` are the ones that had arrived: at most
    /// [`MAX_SHOWN_DIGITS`] of them, with `count` saying how many there were in all.
    #[error(
        "netstring length over the limit of {limit} bytes: got {digits}{}",
        elided_digits(.digits, *.count)
    )]
    LengthOverLimit {
        limit: usize,
        digits: String,
        count: usize,
    },
    /// The byte after the payload is not the closing `,`.
    #[error("netstring: expected ',' after {len} bytes of payload, got byte {got:#04x}")]
    MissingComma { len: usize, got: u8 },
    /// The payload is not UTF-8.
    #[error("socketmap payload is not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    /// A request without the space between map name and key.
    #[error("socketmap request: expected '<name> <key>', got no space in {got:?}")]
    MissingSpace { got: String },
    /// A request whose map name is empty (it starts with a space).
    #[error("socketmap request: empty map name")]
    EmptyMapName,
    /// A map name that contains a space cannot be encoded into a request.
    #[error("socketmap map name must not contain a space, got {got:?}")]
    SpaceInMapName { got: String },
    /// A reply does not start with one of the five status words.
    #[error("socketmap reply: expected OK, NOTFOUND, TEMP, TIMEOUT or PERM, got {got:?}")]
    BadStatus { got: String },
    /// Reply data or a key contains a control character (CR, LF, NUL…), which Postfix would
    /// misread; see [`sanitize_text`].
    #[error("control character {byte:#04x} in socketmap text {text:?}")]
    ControlChar { byte: u8, text: String },
}

/// Most digits of an over-long length prefix kept in [`SocketmapError::LengthOverLimit`]:
/// as many as the largest 64-bit number has.
pub const MAX_SHOWN_DIGITS: usize = 20;

/// Decodes one netstring from the start of `buf`, whose payload may be at most `max_len`
/// bytes.
///
/// Returns the payload and the number of bytes used, or `Ok(None)` when `buf` holds only the
/// beginning of a valid netstring. Malformed framing is reported as soon as it is visible,
/// e.g. a length over `max_len` before its `:` arrives.
pub fn decode_netstring(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(&[u8], usize)>, SocketmapError> {
    let mut len: usize = 0;
    let mut digits = 0usize;
    let mut colon = None;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                if digits == 1 && len == 0 {
                    return Err(SocketmapError::LeadingZero);
                }
                let next = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(b - b'0')))
                    .filter(|&next| next <= max_len);
                let Some(next) = next else {
                    return Err(length_over_limit(buf, max_len));
                };
                len = next;
                digits += 1;
            }
            b':' if digits > 0 => {
                colon = Some(i);
                break;
            }
            _ if digits == 0 => return Err(SocketmapError::BadLength { got: b }),
            _ => return Err(SocketmapError::MissingColon { got: b }),
        }
    }
    let Some(colon) = colon else {
        return Ok(None);
    };
    let start = colon + 1;
    let Some(end) = start.checked_add(len) else {
        return Ok(None); // more than memory can hold: the caller's buffer cap decides
    };
    match buf.get(end) {
        None => Ok(None),
        Some(b',') => Ok(buf.get(start..end).map(|payload| (payload, end + 1))),
        Some(&got) => Err(SocketmapError::MissingComma { len, got }),
    }
}

/// The error for a length prefix at the start of `buf` that is over `limit`: its digits that
/// have arrived, at most [`MAX_SHOWN_DIGITS`] of them, and how many there are.
fn length_over_limit(buf: &[u8], limit: usize) -> SocketmapError {
    let prefix = buf.iter().take_while(|b| b.is_ascii_digit());
    SocketmapError::LengthOverLimit {
        limit,
        digits: prefix
            .clone()
            .take(MAX_SHOWN_DIGITS)
            .map(|&b| char::from(b))
            .collect(),
        count: prefix.count(),
    }
}

/// What [`SocketmapError::LengthOverLimit`]'s message adds after the digits it shows: nothing
/// when they are all of them, else how many there were.
fn elided_digits(shown: &str, count: usize) -> String {
    if count > shown.len() {
        format!("… ({count} digits)")
    } else {
        String::new()
    }
}

/// [`decode_netstring`] for a payload that must be UTF-8.
fn decode_text(buf: &[u8], max_len: usize) -> Result<Option<(&str, usize)>, SocketmapError> {
    let Some((payload, used)) = decode_netstring(buf, max_len)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(payload).map_err(|e| SocketmapError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    Ok(Some((text, used)))
}

/// Appends `payload` to `out` as a netstring.
fn encode_netstring(payload_parts: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b':');
    for part in payload_parts {
        out.extend_from_slice(part);
    }
    out.push(b',');
}

/// One lookup: `postfix example.com` asks map `postfix` for key `example.com`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    /// The name after the last `:` of `socketmap:inet:HOST:PORT:NAME` in Postfix's config.
    pub map_name: String,
    /// The lookup key, as Postfix sent it (for TLS policy: a next-hop domain, `.parent`
    /// domain or `[host]:port`). May be empty.
    pub key: String,
}

/// Decodes the first request in `buf` (see the module docs), with [`MAX_REQUEST_LEN`].
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, SocketmapError> {
    let Some((text, used)) = decode_text(buf, MAX_REQUEST_LEN)? else {
        return Ok(None);
    };
    let Some((map_name, key)) = text.split_once(' ') else {
        return Err(SocketmapError::MissingSpace {
            got: crate::domain::excerpt(text),
        });
    };
    if map_name.is_empty() {
        return Err(SocketmapError::EmptyMapName);
    }
    Ok(Some((
        Request {
            map_name: map_name.to_owned(),
            key: key.to_owned(),
        },
        used,
    )))
}

/// Appends the request `<map_name> <key>` to `out` as a netstring (what Postfix sends; for
/// clients, tests and load generators).
pub fn encode_request(map_name: &str, key: &str, out: &mut Vec<u8>) -> Result<(), SocketmapError> {
    if map_name.is_empty() {
        return Err(SocketmapError::EmptyMapName);
    }
    if map_name.contains(' ') {
        return Err(SocketmapError::SpaceInMapName {
            got: crate::domain::excerpt(map_name),
        });
    }
    check_text(map_name)?;
    check_text(key)?;
    let len = map_name.len() + 1 + key.len();
    if len > MAX_REQUEST_LEN {
        return Err(SocketmapError::TooLong {
            limit: MAX_REQUEST_LEN,
            got: len,
        });
    }
    encode_netstring(&[map_name.as_bytes(), b" ", key.as_bytes()], out);
    Ok(())
}

/// A socketmap reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reply {
    /// `OK <data>`: the key was found; for TLS policy, the data is the policy
    /// (e.g. `secure match=.example.com servername=hostname`).
    Ok(String),
    /// `NOTFOUND `: no entry; Postfix goes on with its next map or its default level.
    NotFound,
    /// `TEMP <reason>`: a temporary failure; Postfix defers the delivery.
    Temp(String),
    /// `TIMEOUT <reason>`: the lookup timed out; Postfix defers the delivery.
    Timeout(String),
    /// `PERM <reason>`: a permanent failure; Postfix treats it as a configuration error.
    Perm(String),
}

impl Reply {
    /// The status word: `OK`, `NOTFOUND`, `TEMP`, `TIMEOUT` or `PERM`.
    pub fn status(&self) -> &'static str {
        match self {
            Reply::Ok(_) => "OK",
            Reply::NotFound => "NOTFOUND",
            Reply::Temp(_) => "TEMP",
            Reply::Timeout(_) => "TIMEOUT",
            Reply::Perm(_) => "PERM",
        }
    }

    /// The data or reason after the status word (empty for `NOTFOUND`).
    pub fn text(&self) -> &str {
        match self {
            Reply::Ok(t) | Reply::Temp(t) | Reply::Timeout(t) | Reply::Perm(t) => t,
            Reply::NotFound => "",
        }
    }

    /// Appends this reply to `out` as a netstring.
    ///
    /// Fails, writing nothing, when the payload would exceed [`MAX_REPLY_LEN`] or the text
    /// holds a control character; [`sanitize_text`] makes any text acceptable.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SocketmapError> {
        let status = self.status().as_bytes();
        let text = self.text();
        check_text(text)?;
        let len = status.len() + 1 + text.len();
        if len > MAX_REPLY_LEN {
            return Err(SocketmapError::TooLong {
                limit: MAX_REPLY_LEN,
                got: len,
            });
        }
        encode_netstring(&[status, b" ", text.as_bytes()], out);
        Ok(())
    }

    /// This reply as a netstring (see [`Reply::encode`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SocketmapError> {
        let mut out = Vec::with_capacity(self.text().len() + 16);
        self.encode(&mut out)?;
        Ok(out)
    }
}

impl fmt::Display for Reply {
    /// The payload as sent, e.g. `OK encrypt` or `NOTFOUND `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.text())
    }
}

/// Decodes the first reply in `buf` (for clients: tests, `--check`, load generators), with
/// [`MAX_REPLY_LEN`], read the way Postfix's `dict_sockmap` client reads it: the status word
/// ends at the first space; `NOTFOUND` is not found whatever follows it, and `OK` with no
/// space after it (so no data at all) is not found either, while `OK ` is found with empty
/// data. `TEMP`, `TIMEOUT` and `PERM` may come without a space and reason.
pub fn decode_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, SocketmapError> {
    let Some((text, used)) = decode_text(buf, MAX_REPLY_LEN)? else {
        return Ok(None);
    };
    let (status, rest) = match text.split_once(' ') {
        Some((status, rest)) => (status, Some(rest)),
        None => (text, None),
    };
    let reason = || rest.unwrap_or_default().to_owned();
    let reply = match status {
        "OK" => rest.map_or(Reply::NotFound, |data| Reply::Ok(data.to_owned())),
        "NOTFOUND" => Reply::NotFound,
        "TEMP" => Reply::Temp(reason()),
        "TIMEOUT" => Reply::Timeout(reason()),
        "PERM" => Reply::Perm(reason()),
        _ => {
            return Err(SocketmapError::BadStatus {
                got: crate::domain::excerpt(text),
            });
        }
    };
    Ok(Some((reply, used)))
}

fn check_text(text: &str) -> Result<(), SocketmapError> {
    match text.bytes().find(|b| b.is_ascii_control()) {
        Some(byte) => Err(SocketmapError::ControlChar {
            byte,
            text: crate::domain::excerpt(text),
        }),
        None => Ok(()),
    }
}

/// Makes any text fit a reply: control characters become spaces, and the text is cut (on a
/// character boundary) so that even `TIMEOUT <text>` stays within [`MAX_REPLY_LEN`].
pub fn sanitize_text(text: &str) -> String {
    const ROOM: usize = MAX_REPLY_LEN - "TIMEOUT ".len();
    let mut out = String::with_capacity(text.len().min(ROOM));
    for c in text.chars() {
        let c = if c.is_ascii_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > ROOM {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstring_framing_errors() {
        let cases: &[(&[u8], SocketmapError)] = &[
            (b"x", SocketmapError::BadLength { got: b'x' }),
            (b":abc,", SocketmapError::BadLength { got: b':' }),
            (b" 3:abc,", SocketmapError::BadLength { got: b' ' }),
            (b"3;abc,", SocketmapError::MissingColon { got: b';' }),
            (b"3 :abc,", SocketmapError::MissingColon { got: b' ' }),
            (b"03:abc,", SocketmapError::LeadingZero),
            (b"00:", SocketmapError::LeadingZero),
            (
                b"3:abcd",
                SocketmapError::MissingComma { len: 3, got: b'd' },
            ),
            (
                b"3:abc\n",
                SocketmapError::MissingComma { len: 3, got: b'\n' },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_netstring(input, MAX_REQUEST_LEN),
                Err(want.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn netstring_need_more_and_complete() {
        type Decoded<'a> = Option<(&'a [u8], usize)>;
        let cases: &[(&[u8], Decoded)] = &[
            (b"", None),
            (b"1", None),
            (b"12", None),
            (b"3:", None),
            (b"3:ab", None),
            (b"3:abc", None),
            (b"3:abc,", Some((b"abc", 6))),
            (b"0:,", Some((b"", 3))),
            (b"0:,0:,", Some((b"", 3))),
            (b"10:0123456789,rest", Some((b"0123456789", 14))),
            (b"4096:", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_netstring(input, MAX_REQUEST_LEN),
                Ok(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_length_over_the_cap_is_reported_with_its_digits() {
        let forty_nines = "9".repeat(40);
        let twenty_nines = &forty_nines[..20];
        // (input, cap, digits shown, digit count, message)
        let cases: &[(String, usize, &str, usize, String)] = &[
            (
                "5000:".into(),
                4096,
                "5000",
                4,
                "netstring length over the limit of 4096 bytes: got 5000".into(),
            ),
            // Rejected before the colon arrives: the digits so far.
            (
                "99999".into(),
                4096,
                "99999",
                5,
                "netstring length over the limit of 4096 bytes: got 99999".into(),
            ),
            // Over any usize, every digit shown.
            (
                format!("{twenty_nines}:"),
                4096,
                twenty_nines,
                20,
                format!("netstring length over the limit of 4096 bytes: got {twenty_nines}"),
            ),
            // The multiplication overflows; the digits shown are capped.
            (
                format!("{forty_nines}:abc,"),
                usize::MAX,
                twenty_nines,
                40,
                format!(
                    "netstring length over the limit of {} bytes: got {twenty_nines}… (40 digits)",
                    usize::MAX
                ),
            ),
            // One digit more than the cap allows, followed by something else than ':'.
            (
                "40961x".into(),
                4096,
                "40961",
                5,
                "netstring length over the limit of 4096 bytes: got 40961".into(),
            ),
        ];
        for (input, cap, digits, count, message) in cases {
            let got = decode_netstring(input.as_bytes(), *cap);
            let want = SocketmapError::LengthOverLimit {
                limit: *cap,
                digits: (*digits).to_owned(),
                count: *count,
            };
            assert_eq!(got, Err(want.clone()), "{input}");
            assert_eq!(want.to_string(), *message, "{input}");
        }
        // The request decoder reports the same.
        let huge = decode_request(b"99999999999999999999:postfix example.com,");
        assert_eq!(
            huge.map_err(|e| e.to_string()),
            Err(format!(
                "netstring length over the limit of {MAX_REQUEST_LEN} bytes: got {twenty_nines}"
            ))
        );
    }

    #[test]
    fn request_errors() {
        let cases: &[(&[u8], SocketmapError)] = &[
            (
                b"11:postfix.com,",
                SocketmapError::MissingSpace {
                    got: "postfix.com".into(),
                },
            ),
            (b"4: key,", SocketmapError::EmptyMapName),
            (
                b"5:m \xff\xfeb,",
                SocketmapError::NotUtf8 { valid_up_to: 2 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(decode_request(input), Err(want.clone()));
        }
    }

    #[test]
    fn request_with_empty_key_and_spaces_in_key() {
        let (r, used) = decode_request(b"8:postfix ,").unwrap().unwrap();
        assert_eq!(
            (r.map_name.as_str(), r.key.as_str(), used),
            ("postfix", "", 11)
        );
        let (r, _) = decode_request(b"5:m a b,").unwrap().unwrap();
        assert_eq!((r.map_name.as_str(), r.key.as_str()), ("m", "a b"));
    }

    #[test]
    fn replies_encode_with_byte_lengths() {
        let cases: Vec<(Reply, &[u8])> = vec![
            (Reply::NotFound, b"9:NOTFOUND ,"),
            (Reply::Ok("encrypt".into()), b"10:OK encrypt,"),
            (Reply::Temp("dns".into()), b"8:TEMP dns,"),
            (Reply::Timeout("x".into()), b"9:TIMEOUT x,"),
            (Reply::Perm("bad".into()), b"8:PERM bad,"),
            // Length counts bytes, not characters.
            (Reply::Temp("é".into()), b"7:TEMP \xc3\xa9,"),
            // Commas and colons inside the payload need no escaping.
            (Reply::Ok("a,b:c".into()), b"8:OK a,b:c,"),
        ];
        for (reply, want) in cases {
            let bytes = reply.to_bytes().unwrap();
            assert_eq!(bytes, want, "{reply:?}");
            assert_eq!(decode_reply(&bytes), Ok(Some((reply, want.len()))));
        }
    }

    #[test]
    fn reply_limits_and_control_chars() {
        let mut out = b"keep".to_vec();
        let big = Reply::Ok("x".repeat(MAX_REPLY_LEN));
        assert_eq!(
            big.encode(&mut out),
            Err(SocketmapError::TooLong {
                limit: MAX_REPLY_LEN,
                got: MAX_REPLY_LEN + 3,
            })
        );
        let fits = Reply::Ok("x".repeat(MAX_REPLY_LEN - 3));
        assert!(fits.to_bytes().is_ok());
        for bad in ["a\r\nb", "a\0b", "a\x7fb"] {
            assert!(matches!(
                Reply::Temp(bad.into()).encode(&mut out),
                Err(SocketmapError::ControlChar { .. })
            ));
        }
        assert_eq!(out, b"keep", "a failed encode writes nothing");
    }

    #[test]
    fn sanitized_text_always_encodes() {
        let nasty = format!("line1\r\nline2\0{}", "é".repeat(MAX_REPLY_LEN));
        let clean = sanitize_text(&nasty);
        assert!(clean.starts_with("line1  line2 é"));
        for reply in [
            Reply::Ok(clean.clone()),
            Reply::Temp(clean.clone()),
            Reply::Timeout(clean.clone()),
            Reply::Perm(clean.clone()),
        ] {
            let bytes = reply.to_bytes().unwrap();
            assert!(bytes.len() <= MAX_REPLY_LEN + 8);
        }
    }

    #[test]
    fn reply_decoding() {
        // As Postfix's dict_sockmap reads them: the status word ends at the first space.
        let cases: [(&[u8], Reply); 6] = [
            (b"8:NOTFOUND,", Reply::NotFound),
            (b"10:NOTFOUND x,", Reply::NotFound),
            // No space, so no data: Postfix takes it as not found.
            (b"2:OK,", Reply::NotFound),
            (b"3:OK ,", Reply::Ok(String::new())),
            (b"4:TEMP,", Reply::Temp(String::new())),
            (b"9:PERM oops,", Reply::Perm("oops".into())),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode_reply(bytes),
                Ok(Some((want, bytes.len()))),
                "{bytes:?}"
            );
        }
        assert_eq!(
            decode_reply(b"5:MAYBE,"),
            Err(SocketmapError::BadStatus {
                got: "MAYBE".into()
            })
        );
        assert_eq!(
            decode_reply(b"6:OKAY x,"),
            Err(SocketmapError::BadStatus {
                got: "OKAY x".into()
            })
        );
        assert_eq!(decode_reply(b"10:OK enc"), Ok(None));
    }

    #[test]
    fn request_encoding() {
        let mut out = Vec::new();
        encode_request("postfix", "example.com", &mut out).unwrap();
        assert_eq!(out, b"19:postfix example.com,");
        assert_eq!(
            encode_request("a b", "k", &mut out),
            Err(SocketmapError::SpaceInMapName { got: "a b".into() })
        );
        assert_eq!(
            encode_request("", "k", &mut out),
            Err(SocketmapError::EmptyMapName)
        );
        assert!(matches!(
            encode_request("m", &"k".repeat(MAX_REQUEST_LEN), &mut out),
            Err(SocketmapError::TooLong { .. })
        ));
        assert!(matches!(
            encode_request("m", "a\nb", &mut out),
            Err(SocketmapError::ControlChar { byte: b'\n', .. })
        ));
    }
}
