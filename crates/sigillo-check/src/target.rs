//! What the user asked to check: a mail domain (MX lookup) or, in Postfix's bracket
//! convention, a host or an address whose MX lookup is skipped (`[mx.example.com]`,
//! `[192.0.2.1]:2525`, `[2001:db8::1]:25`).

use serde::Serialize;
use std::net::IpAddr;

/// One target as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The text as given (trimmed).
    pub input: String,
    /// What it names.
    #[serde(flatten)]
    pub spec: TargetSpec,
    /// A port given with the target, overriding `--port`.
    pub port: Option<u16>,
}

/// What a target names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum TargetSpec {
    /// A mail domain: look up its MX (falling back to A/AAAA).
    Domain(String),
    /// A host name in brackets: its addresses, no MX lookup.
    Host(String),
    /// An IP address (bracketed or bare).
    Address(IpAddr),
}

/// Why a target could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("empty target")]
    Empty,
    #[error("{input:?}: missing ']'")]
    UnclosedBracket { input: String },
    #[error("{input:?}: expected ':PORT' after ']', got {rest:?}")]
    TrailingText { input: String, rest: String },
    #[error("{input:?}: invalid port {port:?} (expected 1-65535)")]
    BadPort { input: String, port: String },
    #[error("{input:?}: invalid host name: {reason}")]
    BadName { input: String, reason: &'static str },
}

impl Target {
    /// Parses one target.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let input = text.trim();
        if input.is_empty() {
            return Err(TargetError::Empty);
        }
        let owned = || input.to_owned();
        if let Some(inner) = input.strip_prefix('[') {
            let close = inner
                .find(']')
                .ok_or_else(|| TargetError::UnclosedBracket { input: owned() })?;
            let (name, rest) = (&inner[..close], &inner[close + 1..]);
            let port = match rest {
                "" => None,
                _ => match rest.strip_prefix(':') {
                    Some(p) => Some(parse_port(input, p)?),
                    None => {
                        return Err(TargetError::TrailingText {
                            input: owned(),
                            rest: rest.to_owned(),
                        });
                    }
                },
            };
            let name = name.strip_prefix("IPv6:").unwrap_or(name);
            let spec = match name.parse::<IpAddr>() {
                Ok(ip) => TargetSpec::Address(ip),
                Err(_) => TargetSpec::Host(normalize_name(input, name)?),
            };
            return Ok(Self {
                input: owned(),
                spec,
                port,
            });
        }
        if let Ok(ip) = input.parse::<IpAddr>() {
            return Ok(Self {
                input: owned(),
                spec: TargetSpec::Address(ip),
                port: None,
            });
        }
        let (name, port) = match input.rsplit_once(':') {
            Some((name, p)) => (name, Some(parse_port(input, p)?)),
            None => (input, None),
        };
        Ok(Self {
            input: owned(),
            spec: TargetSpec::Domain(normalize_name(input, name)?),
            port,
        })
    }

    /// The name used for SNI and certificate checks, if the target has one.
    pub fn name(&self) -> Option<&str> {
        match &self.spec {
            TargetSpec::Domain(n) | TargetSpec::Host(n) => Some(n),
            TargetSpec::Address(_) => None,
        }
    }
}

fn parse_port(input: &str, text: &str) -> Result<u16, TargetError> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(TargetError::BadPort {
            input: input.to_owned(),
            port: text.to_owned(),
        }),
    }
}

/// Lower-cases a DNS name, drops a final dot, and checks it is a plausible host name.
fn normalize_name(input: &str, name: &str) -> Result<String, TargetError> {
    let bad = |reason| TargetError::BadName {
        input: input.to_owned(),
        reason,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "only letters, digits, '-' and '_' are allowed (use punycode for IDNs)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let cases: Vec<(&str, TargetSpec, Option<u16>)> = vec![
            (
                "example.com",
                TargetSpec::Domain("example.com".into()),
                None,
            ),
            (
                "Example.COM.",
                TargetSpec::Domain("example.com".into()),
                None,
            ),
            (
                "example.com:587",
                TargetSpec::Domain("example.com".into()),
                Some(587),
            ),
            (
                "[mx.example.com]",
                TargetSpec::Host("mx.example.com".into()),
                None,
            ),
            (
                "[mx.example.com]:2525",
                TargetSpec::Host("mx.example.com".into()),
                Some(2525),
            ),
            ("[192.0.2.1]:2525", TargetSpec::Address(v4), Some(2525)),
            ("[2001:db8::1]:25", TargetSpec::Address(v6), Some(25)),
            ("[IPv6:2001:db8::1]", TargetSpec::Address(v6), None),
            ("192.0.2.1", TargetSpec::Address(v4), None),
            ("2001:db8::1", TargetSpec::Address(v6), None),
            ("  lab.test  ", TargetSpec::Domain("lab.test".into()), None),
        ];
        for (input, spec, port) in cases {
            let t = Target::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((t.spec, t.port), (spec, port), "{input}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(Target::parse(" "), Err(TargetError::Empty));
        assert!(matches!(
            Target::parse("[mx.example.com"),
            Err(TargetError::UnclosedBracket { .. })
        ));
        assert!(matches!(
            Target::parse("[mx]x"),
            Err(TargetError::TrailingText { .. })
        ));
        assert!(matches!(
            Target::parse("[mx]:0"),
            Err(TargetError::BadPort { .. })
        ));
        assert!(matches!(
            Target::parse("example.com:99999"),
            Err(TargetError::BadPort { .. })
        ));
        assert!(matches!(
            Target::parse("exa mple.com"),
            Err(TargetError::BadName { .. })
        ));
        assert!(matches!(
            Target::parse("a..b"),
            Err(TargetError::BadName { .. })
        ));
        assert!(matches!(
            Target::parse("-a.b"),
            Err(TargetError::BadName { .. })
        ));
    }
}
