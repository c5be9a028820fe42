//! Domain-name syntax shared by every module: validation and the canonical form (ASCII
//! lowercase, no trailing dot) that MTA-STS patterns, next-hops and map keys are compared in.
//!
//! Only LDH names (letters, digits, hyphens; RFC 5321 `Domain`) are accepted: internationalized
//! names must be passed as A-labels (`xn--…`).

/// Longest domain name accepted, in bytes, without the trailing dot (RFC 1035: 255 octets on
/// the wire, which is 253 characters in text form).
pub const MAX_DOMAIN_LEN: usize = 253;

/// Longest label, in bytes (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a string is not a valid domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// Nothing (or only a dot) was given.
    #[error("empty domain name")]
    Empty,
    /// The name is longer than [`MAX_DOMAIN_LEN`].
    #[error("domain name longer than {limit} bytes (got {got})")]
    TooLong { limit: usize, got: usize },
    /// Two dots in a row, or a leading dot.
    #[error("empty label in domain name {name:?}")]
    EmptyLabel { name: String },
    /// A label is longer than [`MAX_LABEL_LEN`].
    #[error("label longer than {limit} bytes in domain name {name:?} (got {got})")]
    LabelTooLong {
        name: String,
        limit: usize,
        got: usize,
    },
    /// A character other than a letter, digit, `-` or `.`.
    #[error("invalid character {ch:?} in domain name {name:?}: expected letters, digits, '-', '.'")]
    BadChar { name: String, ch: char },
    /// A label starts or ends with `-`.
    #[error("label starts or ends with '-' in domain name {name:?}")]
    HyphenAtEdge { name: String },
}

/// At most this many characters of offending input are copied into an error.
const EXCERPT_CHARS: usize = 100;

/// The start of `text`, for error messages (never the whole of an arbitrarily long input).
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Checks `name` and returns its canonical form: ASCII lowercase, without a trailing dot.
///
/// ```
/// use sigillo_policy::domain::normalize;
/// assert_eq!(normalize("Mail.Example.COM.").unwrap(), "mail.example.com");
/// assert!(normalize("mail..example.com").is_err());
/// ```
pub fn normalize(name: &str) -> Result<String, DomainError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(DomainError::Empty);
    }
    if trimmed.len() > MAX_DOMAIN_LEN {
        return Err(DomainError::TooLong {
            limit: MAX_DOMAIN_LEN,
            got: trimmed.len(),
        });
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(DomainError::EmptyLabel {
                name: excerpt(name),
            });
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(DomainError::LabelTooLong {
                name: excerpt(name),
                limit: MAX_LABEL_LEN,
                got: label.len(),
            });
        }
        if let Some(ch) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(DomainError::BadChar {
                name: excerpt(name),
                ch,
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DomainError::HyphenAtEdge {
                name: excerpt(name),
            });
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// Whether two host names are the same, ignoring ASCII case and one trailing dot on either.
pub fn same_host(a: &str, b: &str) -> bool {
    let a = a.strip_suffix('.').unwrap_or(a);
    let b = b.strip_suffix('.').unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_canonicalized() {
        let cases = [
            ("example.com", "example.com"),
            ("Example.COM.", "example.com"),
            ("mx-1.a.example", "mx-1.a.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("localhost", "localhost"),
            ("123.example", "123.example"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn invalid_names_say_why() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = vec!["abcdefghi"; 26].join(".");
        let cases: Vec<(&str, DomainError)> = vec![
            ("", DomainError::Empty),
            (".", DomainError::Empty),
            (
                "a..b",
                DomainError::EmptyLabel {
                    name: "a..b".into(),
                },
            ),
            (
                ".a.b",
                DomainError::EmptyLabel {
                    name: ".a.b".into(),
                },
            ),
            (
                &long_label,
                DomainError::LabelTooLong {
                    name: long_label.clone(),
                    limit: 63,
                    got: 64,
                },
            ),
            (
                &long_name,
                DomainError::TooLong {
                    limit: 253,
                    got: long_name.len(),
                },
            ),
            (
                "mail_1.example",
                DomainError::BadChar {
                    name: "mail_1.example".into(),
                    ch: '_',
                },
            ),
            (
                "bücher.example",
                DomainError::BadChar {
                    name: "bücher.example".into(),
                    ch: 'ü',
                },
            ),
            (
                "a b.example",
                DomainError::BadChar {
                    name: "a b.example".into(),
                    ch: ' ',
                },
            ),
            (
                "-mx.example",
                DomainError::HyphenAtEdge {
                    name: "-mx.example".into(),
                },
            ),
            (
                "mx-.example",
                DomainError::HyphenAtEdge {
                    name: "mx-.example".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = "é".repeat(500);
        let short = excerpt(&long);
        assert_eq!(short.chars().count(), EXCERPT_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(excerpt("abc"), "abc");
    }

    #[test]
    fn same_host_ignores_case_and_trailing_dot() {
        assert!(same_host("MX.example.com.", "mx.example.com"));
        assert!(!same_host("mx.example.com", "mx.example.org"));
        assert!(!same_host("mx.example.com..", "mx.example.com"));
    }
}
