//! MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, and matching MX hosts against the
//! policy's patterns.
//!
//! ```
//! use sigillo_policy::mta_sts::{Mode, Policy, StsRecord};
//!
//! let record = StsRecord::from_txt(&["v=STSv1; id=20160831085700Z;"])?.unwrap();
//! assert_eq!(record.id, "20160831085700Z");
//!
//! let policy = Policy::parse(b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n\
//!                              mx: *.example.net\r\nmax_age: 604800\r\n")?;
//! assert_eq!(policy.mode, Mode::Enforce);
//! assert_eq!(policy.mx_matches(&["mail.example.com", "a.b.example.net"]), [true, false]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::{self, DomainError, excerpt};
use crate::txt::{self, TxtRecordError};

/// The version tag an `_mta-sts` TXT record starts with.
pub const STS_VERSION: &str = "v=STSv1";

/// Largest policy file accepted, in bytes (RFC 8461 §3.3: senders may limit it to 64 KiB).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Largest `max_age` allowed, in seconds (RFC 8461 §3.2: about one year).
pub const MAX_MAX_AGE: u32 = 31_557_600;

/// The `_mta-sts.<domain>` TXT record: `v=STSv1; id=<1-32 letters or digits>;`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsRecord {
    /// The policy id: a change tells senders to fetch the policy again.
    pub id: String,
    /// Other `name=value` fields, in order (unknown extensions are allowed).
    pub extensions: Vec<(String, String)>,
}

impl StsRecord {
    /// Parses one record (its strings already concatenated).
    pub fn parse(record: &str) -> Result<Self, TxtRecordError> {
        let (id, extensions) = txt::required_and_extensions(record, STS_VERSION, "id")?;
        let ok = (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(TxtRecordError::BadValue {
                field: "id".into(),
                expected: "1-32 letters or digits",
                got: excerpt(id),
            });
        }
        Ok(Self {
            id: id.to_owned(),
            extensions,
        })
    }

    /// The MTA-STS record among all TXT records at `_mta-sts.<domain>`, each given with its
    /// strings concatenated ([`crate::concat_strings`]). Records not starting with `v=STSv1`
    /// are ignored; `Ok(None)` when none does. More than one is an error, and by RFC 8461
    /// §3.1 so is a syntax error: either way the domain is treated as having no MTA-STS.
    pub fn from_txt<R: AsRef<[u8]>>(records: &[R]) -> Result<Option<Self>, TxtRecordError> {
        txt::parse_selected(records, STS_VERSION, Self::parse)
    }
}

/// The policy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts with a valid certificate.
    Enforce,
    /// Report failures (TLS-RPT) but deliver anyway.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    /// The keyword in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "testing" => Ok(Mode::Testing),
            "none" => Ok(Mode::None),
            _ => Err(PolicyError::BadValue {
                line: 0,
                field: "mode",
                expected: "enforce, testing or none",
                got: excerpt(s),
            }),
        }
    }
}

/// An `mx:` pattern: a host name, or `*.` and a domain, where `*` stands for exactly one
/// leftmost label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MxPattern {
    wildcard: bool,
    /// Canonical domain (lowercase, no trailing dot), without the `*.`.
    domain: String,
}

impl MxPattern {
    /// Parses `mail.example.com` or `*.example.net` (case and a trailing dot are ignored).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        Ok(Self {
            wildcard,
            domain: domain::normalize(rest)?,
        })
    }

    /// Whether this is a `*.` pattern.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The domain part: the whole host name, or what follows `*.`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `host` (an MX host name; case and one trailing dot are ignored) matches: equal
    /// to a plain pattern, or one label followed by the domain of a wildcard pattern
    /// (`*.example.net` matches `mx1.example.net`, not `example.net` nor `a.b.example.net`).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        let domain = self.domain.as_bytes();
        if !self.wildcard {
            return host.eq_ignore_ascii_case(domain);
        }
        // host = label "." domain, with a non-empty label holding no dot.
        let Some(label_len) = host.len().checked_sub(domain.len() + 1) else {
            return false;
        };
        let (label, rest) = host.split_at(label_len);
        label_len > 0
            && !label.contains(&b'.')
            && rest.first() == Some(&b'.')
            && rest
                .get(1..)
                .is_some_and(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The pattern in Postfix's `match=` syntax: `*.example.net` becomes `.example.net`,
    /// which Postfix matches against names at any depth below it: a superset of the single
    /// label RFC 8461 allows, since `match=` has no single-label form. (The
    /// `mx_host_pattern` TLSRPT attributes carry the exact patterns, for reports.)
    pub fn postfix_match(&self) -> String {
        if self.wildcard {
            format!(".{}", self.domain)
        } else {
            self.domain.clone()
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)
    }
}

impl FromStr for MxPattern {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for MxPattern {
    type Error = DomainError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<MxPattern> for String {
    fn from(p: MxPattern) -> Self {
        p.to_string()
    }
}

/// Why a policy file is invalid (RFC 8461 §3.2). Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The body is larger than [`MAX_POLICY_BYTES`].
    #[error("policy larger than {limit} bytes (got {got})")]
    TooLarge { limit: usize, got: usize },
    /// The body is not UTF-8.
    #[error("policy is not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    /// A line that is not `name: value`.
    #[error("policy line {line}: expected {expected}, got {got:?}")]
    MalformedLine {
        line: usize,
        expected: &'static str,
        got: String,
    },
    /// A known field with a value outside its syntax (line 0: not from a file).
    #[error("policy line {line}: {field}: expected {expected}, got {got:?}")]
    BadValue {
        line: usize,
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    /// A required field is absent.
    #[error("policy has no {field} field")]
    MissingField { field: &'static str },
    /// The body starts with a UTF-8 byte-order mark, which senders read as part of the first
    /// field's name.
    #[error(
        "policy starts with a UTF-8 byte-order mark (EF BB BF), which senders read as part of \
         its first field name: save it without one"
    )]
    ByteOrderMark,
}

/// A parsed and validated MTA-STS policy.
///
/// [`Policy::parse`] guarantees `max_age <= MAX_MAX_AGE` and at least one `mx` unless the
/// mode is `none`; a value built by hand should keep to that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `mode:`.
    pub mode: Mode,
    /// Every `mx:` pattern, in file order, duplicates removed.
    pub mx: Vec<MxPattern>,
    /// `max_age:`, in seconds.
    pub max_age: u32,
    /// Unknown `name: value` fields, in file order (kept for TLS-RPT policy strings).
    pub extensions: Vec<(String, String)>,
}

impl Policy {
    /// Parses a policy file body (CRLF or LF lines, at most [`MAX_POLICY_BYTES`]).
    ///
    /// Rules, from RFC 8461 §3.2 with two documented leniencies:
    /// - each line is `name: value`; names are case-sensitive; white space around names and
    ///   values is ignored; blank lines are skipped (leniency);
    /// - `version: STSv1`, `mode:` and `max_age:` (0 to [`MAX_MAX_AGE`], at most 10 digits)
    ///   are required; `mx:` may repeat and is required unless the mode is `none`
    ///   (leniency: RFC 8461 asks for it always, but a withdrawn policy needs none);
    /// - a field other than `mx` that appears again is ignored after its first occurrence;
    /// - unknown fields are kept in [`Policy::extensions`] and otherwise ignored.
    pub fn parse(body: &[u8]) -> Result<Self, PolicyError> {
        Self::parse_within(body, MAX_POLICY_BYTES)
    }

    /// [`Policy::parse`] for the text [`Policy::to_text`] made of a policy fetched before:
    /// the canonical form adds a space and a CR to lines written tightly (`mx:a\n` becomes
    /// `mx: a\r\n`), so a body just under [`MAX_POLICY_BYTES`] may come back larger. Up to
    /// twice the limit is read.
    pub fn parse_stored(text: &str) -> Result<Self, PolicyError> {
        Self::parse_within(text.as_bytes(), 2 * MAX_POLICY_BYTES)
    }

    fn parse_within(body: &[u8], limit: usize) -> Result<Self, PolicyError> {
        if body.len() > limit {
            return Err(PolicyError::TooLarge {
                limit,
                got: body.len(),
            });
        }
        let text = std::str::from_utf8(body).map_err(|e| PolicyError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        if text.starts_with('\u{feff}') {
            return Err(PolicyError::ByteOrderMark);
        }
        let mut version = false;
        let mut mode = None;
        let mut max_age = None;
        let mut mx: Vec<MxPattern> = Vec::new();
        // Seen patterns, so that thousands of `mx` lines cost linear time, not quadratic.
        let mut seen_mx: HashSet<MxPattern> = HashSet::new();
        let mut extensions: Vec<(String, String)> = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim_matches([' ', '\t']).is_empty() {
                continue;
            }
            if raw.chars().any(|c| c.is_control() && c != '\t') {
                return Err(PolicyError::MalformedLine {
                    line,
                    expected: "a line without control characters",
                    got: excerpt(raw),
                });
            }
            let Some((name, value)) = raw.split_once(':') else {
                return Err(PolicyError::MalformedLine {
                    line,
                    expected: "name: value",
                    got: excerpt(raw),
                });
            };
            let name = name.trim_matches([' ', '\t']);
            let value = value.trim_matches([' ', '\t']);
            if !txt::is_field_name(name) {
                return Err(PolicyError::MalformedLine {
                    line,
                    expected: "a field name of 1-32 letters, digits, '_', '-', '.'",
                    got: excerpt(raw),
                });
            }
            match name {
                "version" if !version => {
                    if value != "STSv1" {
                        return Err(bad(line, "version", "STSv1", value));
                    }
                    version = true;
                }
                "mode" if mode.is_none() => {
                    mode = Some(
                        value
                            .parse::<Mode>()
                            .map_err(|_| bad(line, "mode", "enforce, testing or none", value))?,
                    );
                }
                "max_age" if max_age.is_none() => {
                    max_age = Some(parse_max_age(value).ok_or_else(|| {
                        bad(line, "max_age", "an integer from 0 to 31557600", value)
                    })?);
                }
                "mx" => {
                    let pattern = MxPattern::parse(value)
                        .map_err(|_| bad(line, "mx", "a host name, or *. and a domain", value))?;
                    if seen_mx.insert(pattern.clone()) {
                        mx.push(pattern);
                    }
                }
                "version" | "mode" | "max_age" => {} // repeated: the first one counts
                _ => extensions.push((name.to_owned(), value.to_owned())),
            }
        }
        if !version {
            return Err(PolicyError::MissingField { field: "version" });
        }
        let mode = mode.ok_or(PolicyError::MissingField { field: "mode" })?;
        let max_age = max_age.ok_or(PolicyError::MissingField { field: "max_age" })?;
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::MissingField { field: "mx" });
        }
        Ok(Self {
            mode,
            mx,
            max_age,
            extensions,
        })
    }

    /// Whether `host` matches one of the `mx` patterns.
    pub fn allows_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }

    /// For each MX host name, whether it matches one of the patterns.
    pub fn mx_matches<S: AsRef<str>>(&self, hosts: &[S]) -> Vec<bool> {
        hosts.iter().map(|h| self.allows_mx(h.as_ref())).collect()
    }

    /// The policy as lines in canonical form (`version`, `mode`, each `mx`, `max_age`, then
    /// extensions), as TLS-RPT `policy-string` entries use them.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::with_capacity(self.mx.len() + 3 + self.extensions.len());
        lines.push("version: STSv1".to_owned());
        lines.push(format!("mode: {}", self.mode));
        lines.extend(self.mx.iter().map(|p| format!("mx: {p}")));
        lines.push(format!("max_age: {}", self.max_age));
        lines.extend(self.extensions.iter().map(|(k, v)| format!("{k}: {v}")));
        lines
    }

    /// The policy as a file body (CRLF lines); [`Policy::parse_stored`] reads it back as an
    /// equal value, so it is a storage format too.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in self.lines() {
            text.push_str(&line);
            text.push_str("\r\n");
        }
        text
    }
}

fn bad(line: usize, field: &'static str, expected: &'static str, got: &str) -> PolicyError {
    PolicyError::BadValue {
        line,
        field,
        expected,
        got: excerpt(got),
    }
}

/// `1*10DIGIT`, at most [`MAX_MAX_AGE`].
fn parse_max_age(value: &str) -> Option<u32> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u64>()
        .ok()
        .and_then(|v| u32::try_from(v).ok().filter(|&v| v <= MAX_MAX_AGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tightest lines a policy can have grow the most in canonical form (`mx:a\n`, 5
    /// bytes, becomes `mx: a\r\n`, 7): a body just under the fetch limit still reads back
    /// from the store, equal.
    #[test]
    fn the_stored_form_of_a_policy_at_the_limit_reads_back() {
        let mut body = String::from("version:STSv1\nmode:enforce\nmax_age:86400\n");
        let mut i = 0u32;
        while body.len() < MAX_POLICY_BYTES - 16 {
            body.push_str(&format!("mx:m{i}.e\n"));
            i += 1;
        }
        let policy = Policy::parse(body.as_bytes()).unwrap();
        let text = policy.to_text();
        assert!(text.len() > MAX_POLICY_BYTES, "{}", text.len());
        assert!(Policy::parse(text.as_bytes()).is_err());
        assert_eq!(Policy::parse_stored(&text).unwrap(), policy);
        let mut tightest = String::from("version:STSv1\nmode:enforce\nmax_age:1\n");
        while tightest.len() + 5 <= MAX_POLICY_BYTES {
            tightest.push_str("mx:a\n");
        }
        let policy = Policy::parse(tightest.as_bytes()).unwrap();
        assert_eq!(Policy::parse_stored(&policy.to_text()).unwrap(), policy);
    }

    #[test]
    fn wildcard_matching() {
        let cases = [
            ("*.example.net", "mx1.example.net", true),
            ("*.example.net", "MX1.Example.NET.", true),
            ("*.example.net", "example.net", false),
            ("*.example.net", "a.b.example.net", false),
            ("*.example.net", ".example.net", false),
            ("*.example.net", "xexample.net", false),
            ("*.example.net", "mx1.example.net.evil", false),
            ("*.example.net", "", false),
            ("mail.example.com", "mail.example.com", true),
            ("mail.example.com", "MAIL.example.com.", true),
            ("mail.example.com", "x.mail.example.com", false),
            ("mail.example.com", "example.com", false),
            ("Mail.Example.com.", "mail.example.com", true),
        ];
        for (pattern, host, want) in cases {
            let p = MxPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(host), want, "{pattern} vs {host}");
        }
    }

    #[test]
    fn pattern_forms() {
        let p = MxPattern::parse("*.Example.net.").unwrap();
        assert!(p.is_wildcard());
        assert_eq!(p.domain(), "example.net");
        assert_eq!(p.to_string(), "*.example.net");
        assert_eq!(p.postfix_match(), ".example.net");
        let p = MxPattern::parse("mx.example.net").unwrap();
        assert_eq!(p.postfix_match(), "mx.example.net");
        for bad in [
            "*",
            "*.",
            "**.example",
            "a.*.example",
            "*example.net",
            "mx_1.example",
        ] {
            assert!(MxPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_age_range() {
        let cases = [
            ("0", Some(0)),
            ("604800", Some(604_800)),
            ("31557600", Some(31_557_600)),
            ("0000000001", Some(1)),
            ("31557601", None),
            ("99999999999", None),
            ("-1", None),
            ("1e6", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_max_age(text), want, "{text:?}");
        }
    }
}
