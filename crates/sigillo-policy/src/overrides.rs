//! Static policy overrides: a small config file of `key  policy` lines that win over every
//! other source (MTA-STS, DANE, pins).
//!
//! The format is a Postfix policy map's text form:
//!
//! ```text
//! # comment lines start with '#'; blank lines are ignored
//! example.com            secure match=.example.com servername=hostname
//! .example.net           encrypt
//! [relay.example.org]:587  verify match=hostname
//! legacy.example         may
//! ```
//!
//! Keys are compared case-insensitively and without a trailing dot. A `.domain` key answers
//! Postfix's parent-domain lookups, exactly as in a Postfix map. Continuation lines (leading
//! white space) are not supported and are reported as errors, as is a key given twice.

use std::collections::HashMap;

use crate::domain::excerpt;
use crate::postfix::{NextHop, PolicyAnswer, PolicyTextError};

/// A parse error in the override file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("overrides line {line}: {kind}")]
pub struct OverridesError {
    /// The line it was found on.
    pub line: usize,
    /// What is wrong.
    pub kind: OverridesErrorKind,
}

/// What is wrong with an override line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverridesErrorKind {
    /// The line starts with white space.
    #[error(
        "expected a key at the start of the line, got white space (continuation lines are not supported)"
    )]
    LeadingSpace,
    /// A key without a policy.
    #[error("key {key:?} has no policy after it")]
    MissingPolicy { key: String },
    /// The policy text is invalid. Transparent: the message is the policy error's, and it is
    /// not also returned as the source (a printed chain would say it twice).
    #[error(transparent)]
    Policy(#[from] PolicyTextError),
    /// The key was already given.
    #[error("key {key:?} already given on line {first_line}")]
    Duplicate { key: String, first_line: usize },
}

/// Parsed overrides, looked up by next-hop key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticOverrides {
    entries: HashMap<String, (PolicyAnswer, usize)>,
}

impl StaticOverrides {
    /// Parses the file text (see the module docs).
    pub fn parse(text: &str) -> Result<Self, OverridesError> {
        let mut entries: HashMap<String, (PolicyAnswer, usize)> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |kind| OverridesError { line, kind };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if raw.starts_with(char::is_whitespace) {
                return Err(err(OverridesErrorKind::LeadingSpace));
            }
            let (key, policy) = trimmed
                .split_once(char::is_whitespace)
                .unwrap_or((trimmed, ""));
            if policy.trim().is_empty() {
                return Err(err(OverridesErrorKind::MissingPolicy { key: excerpt(key) }));
            }
            let answer: PolicyAnswer =
                policy.parse().map_err(|e: PolicyTextError| err(e.into()))?;
            let key = NextHop::parse(key).canonical_key();
            if let Some((_, first_line)) = entries.get(&key) {
                return Err(err(OverridesErrorKind::Duplicate {
                    key,
                    first_line: *first_line,
                }));
            }
            entries.insert(key, (answer, line));
        }
        Ok(Self { entries })
    }

    /// The override for a next-hop, if any (exact key: Postfix itself asks for `.parent`
    /// keys when `parent_domain_matches_subdomains` says so).
    pub fn lookup(&self, next_hop: &NextHop) -> Option<&PolicyAnswer> {
        self.entries
            .get(&next_hop.canonical_key())
            .map(|(answer, _)| answer)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_canonical() {
        let o = StaticOverrides::parse(
            "# c\n\nExample.COM.  secure match=.example.com\n.example.net\tencrypt\n\
             [Relay.example.org]:587 verify\n",
        )
        .unwrap();
        assert_eq!(o.len(), 3);
        let text = |key: &str| o.lookup(&NextHop::parse(key)).map(ToString::to_string);
        assert_eq!(
            text("example.com").as_deref(),
            Some("secure match=.example.com")
        );
        assert_eq!(text(".EXAMPLE.net").as_deref(), Some("encrypt"));
        assert_eq!(text("[relay.example.org]:587").as_deref(), Some("verify"));
        assert_eq!(text("a.example.net"), None);
        assert_eq!(text("example.net"), None);
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases: Vec<(&str, OverridesError)> = vec![
            (
                "a.example encrypt\n  b.example may\n",
                OverridesError {
                    line: 2,
                    kind: OverridesErrorKind::LeadingSpace,
                },
            ),
            (
                "\n\nlonely.example\n",
                OverridesError {
                    line: 3,
                    kind: OverridesErrorKind::MissingPolicy {
                        key: "lonely.example".into(),
                    },
                },
            ),
            (
                "a.example secure\nA.Example. encrypt\n",
                OverridesError {
                    line: 2,
                    kind: OverridesErrorKind::Duplicate {
                        key: "a.example".into(),
                        first_line: 1,
                    },
                },
            ),
            (
                "# x\na.example sekure\n",
                OverridesError {
                    line: 2,
                    kind: OverridesErrorKind::Policy(PolicyTextError::UnknownLevel {
                        got: "sekure".into(),
                    }),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(StaticOverrides::parse(text), Err(want), "{text:?}");
        }
    }

    use crate::test_support::chain;

    #[test]
    fn errors_say_each_fact_once() {
        // Bracketed next hops are valid keys; a bad policy after one is reported once.
        let err = StaticOverrides::parse("[1.2.3.4]  encrypt\n[1.2.3.4]:25  sekure\n").unwrap_err();
        let text = chain(&err);
        assert_eq!(
            text,
            "overrides line 2: unknown TLS level \"sekure\": expected none, may, encrypt, dane, \
             dane-only, fingerprint, verify or secure"
        );
        assert_eq!(text.matches("sekure").count(), 1, "{text}");
        // The kind alone, printed as a chain, does not repeat its policy error either.
        assert_eq!(chain(&err.kind), err.kind.to_string());
        assert_eq!(err.kind.to_string().matches("sekure").count(), 1);

        let err = StaticOverrides::parse("[1.2.3.4]  may\n[1.2.3.4]  encrypt\n").unwrap_err();
        assert_eq!(
            chain(&err),
            "overrides line 2: key \"[1.2.3.4]\" already given on line 1"
        );
    }
}
