//! DANE for SMTP (RFC 6698, 7671, 7672): TLSA records, which of them are usable for SMTP, and
//! matching them against the certificate chain an MX presented.
//!
//! The caller looks the records up at [`tlsa_owner`] and must only pass records from a
//! DNSSEC-validated answer. [`match_chain`] then says whether a record matches:
//!
//! - DANE-EE(3) matches the leaf (its full DER or its SubjectPublicKeyInfo). Per RFC 7672
//!   §3.1.1 that alone authenticates the server: no name or expiry check.
//! - DANE-TA(2) matches a certificate above the leaf. The caller must still check that the
//!   chain from the leaf up to that certificate ([`DaneMatch::cert_index`]) is correctly
//!   signed and that the leaf names the MX host or the next-hop domain (RFC 7672 §3.1.2).
//!   Only certificates present in the chain are compared: a `2 1 x` record for a trust-anchor
//!   key the server did not send cannot match here.
//! - PKIX-TA(0) and PKIX-EE(1) are unusable in SMTP (RFC 7672 §3.1.3), as are unknown usages,
//!   selectors and matching types, and digests of the wrong length.
//!
//! "Every record unusable" ([`DaneOutcome::AllUnusable`]) differs from "no usable record
//! matched" ([`DaneOutcome::NoMatch`]): with only unusable records RFC 7672 §2.2 lets the
//! sender fall back to mandatory but unauthenticated TLS, while a mismatch must not deliver.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};

use crate::domain::excerpt;
use crate::tlsrpt::ResultType;

/// The owner name of an MX host's TLSA records: `_25._tcp.<host>.` for port 25.
pub fn tlsa_owner(mx_host: &str, port: u16) -> String {
    let host = mx_host.strip_suffix('.').unwrap_or(mx_host);
    format!("_{port}._tcp.{host}.")
}

/// The certificate usage field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertUsage {
    /// 0: a CA that must also pass PKIX validation (unusable in SMTP).
    PkixTa,
    /// 1: the end-entity, plus PKIX validation (unusable in SMTP).
    PkixEe,
    /// 2: a trust anchor for the chain.
    DaneTa,
    /// 3: the end-entity certificate or key itself.
    DaneEe,
}

impl CertUsage {
    /// The usage for a field value, if it is one of the four defined.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(CertUsage::PkixTa),
            1 => Some(CertUsage::PkixEe),
            2 => Some(CertUsage::DaneTa),
            3 => Some(CertUsage::DaneEe),
            _ => None,
        }
    }
}

/// Why a TLSA record cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsaError {
    /// Wire RDATA shorter than the 3 fixed bytes.
    #[error("TLSA RDATA too short: expected at least 3 bytes, got {got}")]
    TooShort { got: usize },
    /// A presentation-format field is missing.
    #[error("TLSA record: missing {field}")]
    MissingField { field: &'static str },
    /// A presentation-format number is not 0-255.
    #[error("TLSA record {field}: expected a number from 0 to 255, got {got:?}")]
    BadNumber { field: &'static str, got: String },
    /// The association data is not hex.
    #[error("TLSA record data: expected hexadecimal digits, got {got:?}")]
    BadHex { got: String },
}

/// One TLSA record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Tlsa {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0: full certificate, 1: SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: exact bytes, 1: SHA-256, 2: SHA-512.
    pub matching_type: u8,
    /// The certificate association data.
    #[serde(serialize_with = "as_hex")]
    pub data: Vec<u8>,
}

fn as_hex<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(data))
}

impl Tlsa {
    /// Parses wire-format RDATA: usage, selector and matching type bytes, then the data.
    /// Empty data parses: such a record is there but unusable ([`Unusable::EmptyData`]),
    /// which RFC 7672 §2.2 tells apart from no record at all.
    pub fn from_rdata(rdata: &[u8]) -> Result<Self, TlsaError> {
        match rdata {
            [usage, selector, matching_type, data @ ..] => Ok(Self {
                usage: *usage,
                selector: *selector,
                matching_type: *matching_type,
                data: data.to_vec(),
            }),
            _ => Err(TlsaError::TooShort { got: rdata.len() }),
        }
    }

    /// Parses presentation format, `3 1 1 0123abcd…` (white space allowed inside the hex).
    pub fn from_presentation(text: &str) -> Result<Self, TlsaError> {
        let mut words = text.split_ascii_whitespace();
        let mut number = |field| {
            let word = words.next().ok_or(TlsaError::MissingField { field })?;
            word.parse::<u8>().map_err(|_| TlsaError::BadNumber {
                field,
                got: excerpt(word),
            })
        };
        let usage = number("usage")?;
        let selector = number("selector")?;
        let matching_type = number("matching type")?;
        let hex_text: String = words.collect();
        if hex_text.is_empty() {
            return Err(TlsaError::MissingField { field: "data" });
        }
        let data = hex::decode(&hex_text).map_err(|_| TlsaError::BadHex {
            got: excerpt(&hex_text),
        })?;
        Ok(Self {
            usage,
            selector,
            matching_type,
            data,
        })
    }

    /// Whether the record is usable for SMTP, and if not why.
    pub fn usability(&self) -> Result<CertUsage, Unusable> {
        let usage = match CertUsage::from_u8(self.usage) {
            Some(u @ (CertUsage::DaneTa | CertUsage::DaneEe)) => u,
            Some(CertUsage::PkixTa | CertUsage::PkixEe) => {
                return Err(Unusable::PkixUsage { usage: self.usage });
            }
            None => return Err(Unusable::UnknownUsage { usage: self.usage }),
        };
        if self.selector > 1 {
            return Err(Unusable::UnknownSelector {
                selector: self.selector,
            });
        }
        let expected = match self.matching_type {
            0 => None,
            1 => Some(32),
            2 => Some(64),
            other => {
                return Err(Unusable::UnknownMatchingType {
                    matching_type: other,
                });
            }
        };
        if let Some(expected) = expected
            && self.data.len() != expected
        {
            return Err(Unusable::DigestLength {
                matching_type: self.matching_type,
                expected,
                got: self.data.len(),
            });
        }
        if self.data.is_empty() {
            return Err(Unusable::EmptyData);
        }
        Ok(usage)
    }
}

impl fmt::Display for Tlsa {
    /// Presentation format: `3 1 1 <hex>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.usage,
            self.selector,
            self.matching_type,
            hex::encode(&self.data)
        )
    }
}

/// Why a TLSA record is unusable for SMTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Unusable {
    /// Usage 0 (PKIX-TA) or 1 (PKIX-EE): not for SMTP (RFC 7672 §3.1.3).
    #[error("usage {usage} (PKIX) is not usable for SMTP, expected 2 or 3")]
    PkixUsage { usage: u8 },
    /// A usage other than 0-3.
    #[error("unknown usage {usage}, expected 2 or 3")]
    UnknownUsage { usage: u8 },
    /// A selector other than 0 or 1.
    #[error("unknown selector {selector}, expected 0 or 1")]
    UnknownSelector { selector: u8 },
    /// A matching type other than 0-2.
    #[error("unknown matching type {matching_type}, expected 0, 1 or 2")]
    UnknownMatchingType { matching_type: u8 },
    /// A digest whose length does not fit its matching type.
    #[error("matching type {matching_type} needs {expected} bytes of data, got {got}")]
    DigestLength {
        matching_type: u8,
        expected: usize,
        got: usize,
    },
    /// No association data.
    #[error("empty association data")]
    EmptyData,
}

/// A record that matched a certificate of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaneMatch {
    /// Index of the record in the slice given to [`match_chain`].
    pub record: usize,
    /// [`CertUsage::DaneEe`] or [`CertUsage::DaneTa`].
    pub usage: CertUsage,
    /// Index of the matching certificate in the chain: 0 (the leaf) for DANE-EE, ≥ 1 for
    /// DANE-TA.
    pub cert_index: usize,
}

impl DaneMatch {
    /// Whether the caller still has to verify the chain up to [`DaneMatch::cert_index`] and
    /// the leaf's name (DANE-TA); a DANE-EE match needs neither.
    pub fn needs_chain_and_name_check(&self) -> bool {
        self.usage == CertUsage::DaneTa
    }
}

/// What the TLSA records say about a presented chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum DaneOutcome {
    /// No records were given.
    NoRecords,
    /// Every record is unusable: RFC 7672 §2.2 allows mandatory unauthenticated TLS.
    AllUnusable {
        /// Each record's index and why it is unusable.
        unusable: Vec<(usize, Unusable)>,
    },
    /// At least one usable record matched. DANE-EE matches come first, then DANE-TA matches
    /// from the certificate nearest the leaf; a caller may try the DANE-TA ones in order.
    Matched {
        /// Every match (non-empty).
        matches: Vec<DaneMatch>,
    },
    /// Usable records exist but none matched: authentication failed, do not deliver.
    NoMatch {
        /// How many records were usable.
        usable: usize,
    },
}

impl DaneOutcome {
    /// The TLS-RPT result type for a failure: `tlsa-invalid` when every record is unusable,
    /// `validation-failure` when none matched (RFC 8460 has no narrower type for a DANE
    /// mismatch); `None` for a match or no records.
    pub fn failure_result_type(&self) -> Option<ResultType> {
        match self {
            DaneOutcome::AllUnusable { .. } => Some(ResultType::TlsaInvalid),
            DaneOutcome::NoMatch { .. } => Some(ResultType::ValidationFailure),
            DaneOutcome::NoRecords | DaneOutcome::Matched { .. } => None,
        }
    }
}

/// The bytes a selector picks from a certificate: the whole DER (0) or the SPKI (1). `None`
/// when the certificate cannot be parsed for its SPKI.
fn selected(cert_der: &[u8], selector: u8) -> Option<Vec<u8>> {
    match selector {
        0 => Some(cert_der.to_vec()),
        1 => x509_parser::parse_x509_certificate(cert_der)
            .ok()
            .map(|(_, cert)| cert.tbs_certificate.subject_pki.raw.to_vec()),
        _ => None,
    }
}

/// (selector, matching type, certificate index).
type ValueKey = (u8, u8, usize);

fn digest(matching_type: u8, bytes: &[u8]) -> Option<Vec<u8>> {
    match matching_type {
        0 => Some(bytes.to_vec()),
        1 => Some(Sha256::digest(bytes).to_vec()),
        2 => Some(Sha512::digest(bytes).to_vec()),
        _ => None,
    }
}

/// Matches DNSSEC-validated TLSA records against a chain (DER certificates, leaf first).
///
/// Digest agility (RFC 7671 §9): when a (usage, selector) pair has a usable SHA-512 record,
/// its SHA-256 records are ignored, as Postfix does with its default
/// `tls_dane_digests = sha512 sha256`.
pub fn match_chain<C: AsRef<[u8]>>(records: &[Tlsa], chain_der: &[C]) -> DaneOutcome {
    if records.is_empty() {
        return DaneOutcome::NoRecords;
    }
    let mut usable: Vec<(usize, &Tlsa, CertUsage)> = Vec::new();
    let mut unusable = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match r.usability() {
            Ok(usage) => usable.push((i, r, usage)),
            Err(why) => unusable.push((i, why)),
        }
    }
    if usable.is_empty() {
        return DaneOutcome::AllUnusable { unusable };
    }
    let has_sha512 = |usage: u8, selector: u8| {
        usable
            .iter()
            .any(|(_, r, _)| r.usage == usage && r.selector == selector && r.matching_type == 2)
    };
    let considered: Vec<(usize, &Tlsa, CertUsage)> = usable
        .iter()
        .copied()
        .filter(|(_, r, _)| !(r.matching_type == 1 && has_sha512(r.usage, r.selector)))
        .collect();

    // The value of each (selector, matching type, certificate index), computed once.
    let mut cache: Vec<(ValueKey, Option<Vec<u8>>)> = Vec::new();
    let mut value_of = |selector: u8, matching_type: u8, index: usize, der: &[u8]| {
        let key = (selector, matching_type, index);
        if let Some((_, v)) = cache.iter().find(|(k, _)| *k == key) {
            return v.clone();
        }
        let v = selected(der, selector).and_then(|b| digest(matching_type, &b));
        cache.push((key, v.clone()));
        v
    };

    let mut matches = Vec::new();
    for (index, cert) in chain_der.iter().enumerate() {
        for &(record, r, usage) in &considered {
            let applies = match usage {
                CertUsage::DaneEe => index == 0,
                CertUsage::DaneTa => index >= 1,
                CertUsage::PkixTa | CertUsage::PkixEe => false,
            };
            if applies
                && value_of(r.selector, r.matching_type, index, cert.as_ref()).as_deref()
                    == Some(r.data.as_slice())
            {
                matches.push(DaneMatch {
                    record,
                    usage,
                    cert_index: index,
                });
            }
        }
    }
    if matches.is_empty() {
        DaneOutcome::NoMatch {
            usable: usable.len(),
        }
    } else {
        // Index 0 is only ever matched by DANE-EE, so chain order already puts EE first.
        DaneOutcome::Matched { matches }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(usage: u8, selector: u8, matching_type: u8, len: usize) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching_type,
            data: vec![0xab; len],
        }
    }

    #[test]
    fn usability_rules() {
        let cases = [
            (record(3, 1, 1, 32), Ok(CertUsage::DaneEe)),
            (record(2, 0, 2, 64), Ok(CertUsage::DaneTa)),
            (record(3, 0, 0, 300), Ok(CertUsage::DaneEe)),
            (record(0, 0, 1, 32), Err(Unusable::PkixUsage { usage: 0 })),
            (record(1, 1, 1, 32), Err(Unusable::PkixUsage { usage: 1 })),
            (
                record(4, 1, 1, 32),
                Err(Unusable::UnknownUsage { usage: 4 }),
            ),
            (
                record(3, 2, 1, 32),
                Err(Unusable::UnknownSelector { selector: 2 }),
            ),
            (
                record(3, 1, 3, 32),
                Err(Unusable::UnknownMatchingType { matching_type: 3 }),
            ),
            (
                record(3, 1, 1, 31),
                Err(Unusable::DigestLength {
                    matching_type: 1,
                    expected: 32,
                    got: 31,
                }),
            ),
            (
                record(3, 1, 2, 32),
                Err(Unusable::DigestLength {
                    matching_type: 2,
                    expected: 64,
                    got: 32,
                }),
            ),
            (record(3, 1, 0, 0), Err(Unusable::EmptyData)),
        ];
        for (r, want) in cases {
            assert_eq!(r.usability(), want, "{r}");
        }
    }

    #[test]
    fn rdata_parsing() {
        assert_eq!(
            Tlsa::from_rdata(&[3, 1, 1, 0xde, 0xad]),
            Ok(Tlsa {
                usage: 3,
                selector: 1,
                matching_type: 1,
                data: vec![0xde, 0xad]
            })
        );
        // A record with no data is a record, unusable, not no record (RFC 7672 §2.2).
        let empty = Tlsa::from_rdata(&[3, 1, 0]).unwrap();
        assert!(empty.data.is_empty());
        assert_eq!(empty.usability(), Err(Unusable::EmptyData));
        assert!(matches!(
            Tlsa::from_rdata(&[3, 1, 1]).unwrap().usability(),
            Err(Unusable::DigestLength { got: 0, .. })
        ));
        assert_eq!(
            Tlsa::from_rdata(&[3, 1]),
            Err(TlsaError::TooShort { got: 2 })
        );
        assert_eq!(Tlsa::from_rdata(&[]), Err(TlsaError::TooShort { got: 0 }));
    }

    #[test]
    fn owner_names() {
        assert_eq!(tlsa_owner("mx.example.com", 25), "_25._tcp.mx.example.com.");
        assert_eq!(
            tlsa_owner("mx.example.com.", 465),
            "_465._tcp.mx.example.com."
        );
    }

    #[test]
    fn no_records_and_empty_chain() {
        let none: [Tlsa; 0] = [];
        assert_eq!(match_chain(&none, &[vec![1u8]]), DaneOutcome::NoRecords);
        let empty: [Vec<u8>; 0] = [];
        assert_eq!(
            match_chain(&[record(3, 0, 0, 4)], &empty),
            DaneOutcome::NoMatch { usable: 1 }
        );
    }
}
