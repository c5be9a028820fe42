//! TLS-RPT (RFC 8460): the `_smtp._tls` TXT record that says where to send reports, and the
//! names of policy types and failure result types that reports (and sigillo's findings) use.
//!
//! ```
//! use sigillo_policy::tlsrpt::{ReportUri, ResultType, TlsRptRecord};
//!
//! let record = TlsRptRecord::parse("v=TLSRPTv1; rua=mailto:tlsrpt@example.com")?;
//! assert_eq!(record.rua, [ReportUri::Mailto("tlsrpt@example.com".into())]);
//! assert_eq!(ResultType::StsPolicyFetchError.as_str(), "sts-policy-fetch-error");
//! # Ok::<(), sigillo_policy::TxtRecordError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::excerpt;
use crate::txt::{self, TxtRecordError};

/// The version tag a `_smtp._tls` TXT record starts with.
pub const TLSRPT_VERSION: &str = "v=TLSRPTv1";

/// Where reports go: one `rua=` URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "scheme", content = "target")]
pub enum ReportUri {
    /// `mailto:` and the address after it, as written (percent-escapes kept), without any
    /// header fields (`?subject=…`).
    Mailto(String),
    /// An `https:` URI, whole.
    Https(String),
    /// A URI with another scheme, whole: syntactically fine, but RFC 8460 defines delivery
    /// only for `mailto` and `https`.
    Other(String),
}

impl fmt::Display for ReportUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportUri::Mailto(addr) => write!(f, "mailto:{addr}"),
            ReportUri::Https(uri) | ReportUri::Other(uri) => f.write_str(uri),
        }
    }
}

impl ReportUri {
    /// Parses one URI of a `rua=` list.
    fn parse(uri: &str) -> Result<Self, TxtRecordError> {
        let bad = |expected| TxtRecordError::BadValue {
            field: "rua".into(),
            expected,
            got: excerpt(uri),
        };
        let Some((scheme, rest)) = uri.split_once(':') else {
            return Err(bad("a URI (scheme:...)"));
        };
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok || rest.is_empty() || !uri.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(bad("a URI (scheme:...) of visible characters"));
        }
        // RFC 8460 §3: commas, exclamation points and semicolons "MUST be encoded" (the first
        // and last end the URI or the field anyway; a DMARC-style `!10m` size suffix is not
        // TLS-RPT's).
        if uri.contains('!') {
            return Err(bad(
                "a URI with any ! encoded as %21 (TLS-RPT has no !size suffix)",
            ));
        }
        if scheme.eq_ignore_ascii_case("mailto") {
            // The address ends where the header fields (`?subject=…`) start.
            let address = rest.split('?').next().unwrap_or_default();
            let valid = address.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            });
            if !valid {
                return Err(bad("mailto:local@domain"));
            }
            Ok(ReportUri::Mailto(address.to_owned()))
        } else if scheme.eq_ignore_ascii_case("https") {
            // The host: the authority without user information and port.
            let host_present = rest.strip_prefix("//").is_some_and(|r| {
                let authority = r.split(['/', '?', '#']).next().unwrap_or_default();
                let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                let host = match host_port.strip_prefix('[') {
                    Some(literal) => literal.split(']').next().unwrap_or_default(),
                    None => host_port.split(':').next().unwrap_or_default(),
                };
                !host.is_empty()
            });
            if !host_present {
                return Err(bad("https://host/..."));
            }
            Ok(ReportUri::Https(uri.to_owned()))
        } else {
            Ok(ReportUri::Other(uri.to_owned()))
        }
    }
}

/// The `_smtp._tls.<domain>` TXT record: `v=TLSRPTv1; rua=<uri>[,<uri>…]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRptRecord {
    /// The report destinations, in order (at least one).
    pub rua: Vec<ReportUri>,
    /// Other `name=value` fields, in order.
    pub extensions: Vec<(String, String)>,
}

impl TlsRptRecord {
    /// Parses one record (its strings already concatenated).
    pub fn parse(record: &str) -> Result<Self, TxtRecordError> {
        let (rua, extensions) = txt::required_and_extensions(record, TLSRPT_VERSION, "rua")?;
        let rua = rua
            .split(',')
            .map(|u| ReportUri::parse(u.trim_matches([' ', '\t'])))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rua, extensions })
    }

    /// The TLS-RPT record among all TXT records at `_smtp._tls.<domain>` (each with its
    /// strings concatenated): records not starting with `v=TLSRPTv1` are ignored, `Ok(None)`
    /// when none does, and more than one is an error (RFC 8460 §3).
    pub fn from_txt<R: AsRef<[u8]>>(records: &[R]) -> Result<Option<Self>, TxtRecordError> {
        txt::parse_selected(records, TLSRPT_VERSION, Self::parse)
    }
}

/// Defines a string-backed enum with `as_str`, `Display`, `FromStr` and serde as the string.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $err:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name as RFC 8460 spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName { kind: $err, got: excerpt(s) })
            }
        }
    };
}

/// A string that is not one of the RFC 8460 names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {got:?}")]
pub struct UnknownName {
    /// What was being parsed, e.g. "TLS-RPT result type".
    pub kind: &'static str,
    /// The offending text.
    pub got: String,
}

named_enum! {
    /// RFC 8460 §4.3 failure result types.
    ResultType, "TLS-RPT result type" {
        /// The MX did not offer STARTTLS (or it was stripped).
        StarttlsNotSupported = "starttls-not-supported",
        /// The certificate does not name the host.
        CertificateHostMismatch = "certificate-host-mismatch",
        /// The certificate has expired.
        CertificateExpired = "certificate-expired",
        /// The certificate does not chain to a trusted root.
        CertificateNotTrusted = "certificate-not-trusted",
        /// Any other validation failure.
        ValidationFailure = "validation-failure",
        /// No TLSA record of the RRset is usable (DANE).
        TlsaInvalid = "tlsa-invalid",
        /// DNSSEC validation failed (DANE).
        DnssecInvalid = "dnssec-invalid",
        /// DANE is required but no usable TLSA could be found.
        DaneRequired = "dane-required",
        /// The MTA-STS policy could not be fetched.
        StsPolicyFetchError = "sts-policy-fetch-error",
        /// The MTA-STS policy failed to parse or validate.
        StsPolicyInvalid = "sts-policy-invalid",
        /// The MTA-STS policy host's certificate is not PKIX-valid.
        StsWebpkiInvalid = "sts-webpki-invalid",
    }
}

named_enum! {
    /// RFC 8460 §4.4 `policy-type`.
    PolicyType, "TLS-RPT policy type" {
        /// An MTA-STS policy.
        Sts = "sts",
        /// DANE TLSA records.
        Tlsa = "tlsa",
        /// Neither.
        NoPolicyFound = "no-policy-found",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_types_round_trip_through_serde_and_strings() {
        assert_eq!(ResultType::ALL.len(), 11);
        for &rt in ResultType::ALL {
            let json = serde_json::to_string(&rt).unwrap();
            assert_eq!(json, format!("\"{}\"", rt.as_str()));
            assert_eq!(serde_json::from_str::<ResultType>(&json).unwrap(), rt);
            assert_eq!(rt.as_str().parse::<ResultType>(), Ok(rt));
        }
        assert_eq!(
            "tlsa-valid".parse::<ResultType>(),
            Err(UnknownName {
                kind: "TLS-RPT result type",
                got: "tlsa-valid".into()
            })
        );
        assert_eq!(
            serde_json::to_string(&PolicyType::NoPolicyFound).unwrap(),
            "\"no-policy-found\""
        );
    }
}
