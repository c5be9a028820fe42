//! The EHLO reply as a list of service extensions (RFC 5321 §4.1.1.1), including keywords
//! a middlebox has masked, such as Cisco PIX/ASA's `XXXXXXXA` in place of `STARTTLS`.

use crate::reply::Reply;
use serde::Serialize;

/// One extension line of an EHLO reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extension {
    /// The keyword, upper-cased (`STARTTLS`, `SIZE`, `XXXXXXXA`).
    pub keyword: String,
    /// Everything after the keyword, trimmed (`10240000` for `SIZE 10240000`).
    pub params: String,
    /// The line exactly as received, for evidence.
    pub line: String,
}

impl Extension {
    /// True when the keyword looks masked by a middlebox rather than a real extension:
    /// only `X` or `*` characters (at least four), optionally ending in one `A` (the
    /// PIX/ASA pattern `XXXXXXXA`). Real X-extensions (`XFORWARD`, `XCLIENT`) are not.
    pub fn is_masked(&self) -> bool {
        is_masked_keyword(&self.keyword)
    }
}

/// See [`Extension::is_masked`].
pub fn is_masked_keyword(keyword: &str) -> bool {
    let body = keyword.strip_suffix('A').unwrap_or(keyword);
    body.len() >= 4 && (body.bytes().all(|b| b == b'X') || body.bytes().all(|b| b == b'*'))
        || keyword.len() >= 4 && keyword.bytes().all(|b| b == b'*')
}

/// A parsed 250 reply to EHLO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EhloReply {
    /// The text of the first line: the server's name and greeting.
    pub greeting: String,
    /// The extensions, in the order received.
    pub extensions: Vec<Extension>,
}

/// The reply to EHLO was not a 250.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EHLO was answered {code}, expected 250")]
#[non_exhaustive]
pub struct NotEhloSuccess {
    /// The reply code received.
    pub code: u16,
}

impl EhloReply {
    /// Reads the extensions of a 250 reply. Lines that are empty are skipped.
    pub fn parse(reply: &Reply) -> Result<Self, NotEhloSuccess> {
        if reply.code != 250 {
            return Err(NotEhloSuccess { code: reply.code });
        }
        let mut texts = reply.texts();
        let greeting = texts.next().unwrap_or("").trim().to_owned();
        let extensions = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|line| {
                let text = line.get(4..).unwrap_or("").trim();
                let mut parts = text.splitn(2, [' ', '\t']);
                let keyword = parts.next().filter(|k| !k.is_empty())?;
                Some(Extension {
                    keyword: keyword.to_ascii_uppercase(),
                    params: parts.next().unwrap_or("").trim().to_owned(),
                    line: line.clone(),
                })
            })
            .collect();
        Ok(Self {
            greeting,
            extensions,
        })
    }

    /// Whether the keyword (case-insensitive) is offered.
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.keyword.eq_ignore_ascii_case(keyword))
    }

    /// Whether STARTTLS is offered.
    pub fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }

    /// Extensions whose keyword looks masked by a middlebox.
    pub fn masked(&self) -> impl Iterator<Item = &Extension> {
        self.extensions.iter().filter(|e| e.is_masked())
    }

    /// The keywords, in order.
    pub fn keywords(&self) -> Vec<String> {
        self.extensions.iter().map(|e| e.keyword.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{ReplyLimits, parse_reply};

    fn ehlo(raw: &str) -> EhloReply {
        let (reply, _) = parse_reply(raw.as_bytes(), &ReplyLimits::default())
            .unwrap()
            .unwrap();
        EhloReply::parse(&reply).unwrap()
    }

    #[test]
    fn postfix_reply() {
        let e = ehlo(
            "250-mx.lab.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
        );
        assert_eq!(e.greeting, "mx.lab.test");
        assert!(e.starttls());
        assert_eq!(e.extensions.len(), 10);
        assert_eq!(e.extensions[1].params, "10240000");
        assert_eq!(e.masked().count(), 0);
    }

    #[test]
    fn asa_masked_starttls() {
        let e = ehlo("250-mx.lab.test\r\n250-PIPELINING\r\n250-XXXXXXXA\r\n250 8BITMIME\r\n");
        assert!(!e.starttls());
        let masked: Vec<_> = e.masked().map(|m| m.line.as_str()).collect();
        assert_eq!(masked, ["250-XXXXXXXA"]);
    }

    #[test]
    fn masked_keyword_table() {
        let cases = [
            ("XXXXXXXA", true),
            ("XXXXXXXX", true),
            ("XXXX", true),
            ("********", true),
            ("****A", true),
            ("XXX", false),
            ("XFORWARD", false),
            ("XCLIENT", false),
            ("X-LINK2STATE", false),
            ("XEXCH50", false),
            ("STARTTLS", false),
            ("AUTH", false),
        ];
        for (kw, masked) in cases {
            assert_eq!(is_masked_keyword(kw), masked, "{kw}");
        }
    }

    #[test]
    fn lowercase_keywords_and_non_250() {
        let e = ehlo("250-mx\r\n250 starttls\r\n");
        assert!(e.starttls());
        let (reply, _) = parse_reply(b"502 5.5.2 nope\r\n", &ReplyLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(EhloReply::parse(&reply), Err(NotEhloSuccess { code: 502 }));
    }
}
