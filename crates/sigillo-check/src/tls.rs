//! TLS for probes: a rustls client that completes the handshake whatever the certificate
//! (opportunistic SMTP TLS still delivers over an unverified certificate), then a separate
//! verdict on the chain and on the name, and the details of every certificate presented.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// The crypto provider used everywhere (explicit, so two enabled providers cannot clash).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate during the handshake but still checks handshake signatures, so
/// the session is real TLS with the key of the certificate presented.
#[derive(Debug)]
struct RecordOnlyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RecordOnlyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client configuration for probes: TLS 1.2 and 1.3, every suite the provider has.
pub fn client_config() -> Arc<ClientConfig> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(RecordOnlyVerifier { algorithms }))
                .with_no_client_auth()
        });
    // The versions above are always supported by the ring provider; keep a fallback anyway.
    Arc::new(config.unwrap_or_else(|_| {
        ClientConfig::builder_with_provider(self::provider())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(RecordOnlyVerifier { algorithms }))
                    .with_no_client_auth()
            })
            .unwrap_or_else(|_| unreachable_config())
    }))
}

fn unreachable_config() -> ClientConfig {
    // Only reached if the ring provider supports no TLS version at all.
    ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// The roots a chain is verified against.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
}

/// A CA file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaFileError {
    /// Not an error `source`: the message holds it, and a chain would print it twice.
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: no PEM certificate found")]
    Empty { path: String },
    #[error("{path}: certificate {index} is not a usable trust anchor: {message}")]
    BadCertificate {
        path: String,
        index: usize,
        message: String,
    },
}

impl TrustAnchors {
    /// Mozilla's roots (webpki-roots): the same verdict on every machine.
    pub fn mozilla() -> Self {
        Self {
            anchors: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
    }

    /// The anchors as a rustls root store, for an HTTPS client that verifies as usual.
    pub fn root_store(&self) -> rustls::RootCertStore {
        rustls::RootCertStore {
            roots: self.anchors.clone(),
        }
    }

    /// Adds the certificates of a PEM file.
    pub fn add_pem_file(&mut self, path: &Path) -> Result<usize, CaFileError> {
        let display = path.display().to_string();
        let data = std::fs::read(path).map_err(|error| CaFileError::Read {
            path: display.clone(),
            error,
        })?;
        self.add_pem(&data, &display)
    }

    /// Adds the certificates of PEM text; `origin` names it in errors.
    pub fn add_pem(&mut self, data: &[u8], origin: &str) -> Result<usize, CaFileError> {
        let display = origin.to_owned();
        let mut added = 0;
        for (index, item) in rustls_pemfile::certs(&mut &data[..]).enumerate() {
            let der = item.map_err(|e| CaFileError::BadCertificate {
                path: display.clone(),
                index,
                message: e.to_string(),
            })?;
            let anchor = webpki::anchor_from_trusted_cert(&der).map_err(|e| {
                CaFileError::BadCertificate {
                    path: display.clone(),
                    index,
                    message: format!("{e:?}"),
                }
            })?;
            self.anchors.push(anchor.to_owned());
            added += 1;
        }
        if added == 0 {
            return Err(CaFileError::Empty { path: display });
        }
        Ok(added)
    }
}

/// Why a chain or a name did not verify, classified as RFC 8460 result types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertProblem {
    /// `certificate-expired`.
    CertificateExpired,
    /// `certificate-not-trusted`: unknown issuer, self-signed.
    CertificateNotTrusted,
    /// `certificate-host-mismatch`.
    CertificateHostMismatch,
    /// `validation-failure`: anything else (not yet valid, bad encoding, …).
    ValidationFailure,
}

impl CertProblem {
    /// The RFC 8460 result type.
    pub fn result_type(self) -> &'static str {
        match self {
            CertProblem::CertificateExpired => "certificate-expired",
            CertProblem::CertificateNotTrusted => "certificate-not-trusted",
            CertProblem::CertificateHostMismatch => "certificate-host-mismatch",
            CertProblem::ValidationFailure => "validation-failure",
        }
    }
}

/// A failed check with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertFailure {
    pub problem: CertProblem,
    pub message: String,
}

fn classify(error: &webpki::Error) -> CertFailure {
    use webpki::Error as E;
    let (problem, message) = match error {
        E::CertExpired { .. } => (
            CertProblem::CertificateExpired,
            "certificate has expired".to_owned(),
        ),
        E::UnknownIssuer => (
            CertProblem::CertificateNotTrusted,
            "issuer not trusted (unknown CA or self-signed)".to_owned(),
        ),
        E::CaUsedAsEndEntity => (
            CertProblem::CertificateNotTrusted,
            "self-signed: a CA certificate used as the server certificate".to_owned(),
        ),
        E::CertNotValidForName(_) => (
            CertProblem::CertificateHostMismatch,
            "certificate not valid for the host name".to_owned(),
        ),
        E::CertNotValidYet { .. } => (
            CertProblem::ValidationFailure,
            "certificate not valid yet".to_owned(),
        ),
        other => (
            CertProblem::ValidationFailure,
            format!("certificate validation failed: {other:?}"),
        ),
    };
    CertFailure { problem, message }
}

/// Verifies the chain (server-auth usage, at `now`) against the anchors. Name-independent.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    anchors: &TrustAnchors,
    now: UnixTime,
) -> Result<(), CertFailure> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(CertFailure {
            problem: CertProblem::ValidationFailure,
            message: "no certificate presented".to_owned(),
        });
    };
    verify_path(leaf, &anchors.anchors, intermediates, now)
}

/// Verifies a server-auth path from `leaf` through `intermediates` to one of `anchors`.
fn verify_path(
    leaf: &CertificateDer<'static>,
    anchors: &[TrustAnchor<'_>],
    intermediates: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<(), CertFailure> {
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| classify(&e))?;
    let algorithms = provider().signature_verification_algorithms.all;
    ee.verify_for_usage(
        algorithms,
        anchors,
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| classify(&e))
}

/// Verifies the chain from the leaf up to `chain[anchor]`, taking that certificate as the
/// only trust anchor (DANE-TA, RFC 7671 §5.2.2): the leaf and `chain[1..anchor]` must form a
/// correctly signed path to the anchor's key, each certificate within its validity period at
/// `now`, with CA constraints on the intermediates and server-auth usage. The anchor's own
/// signature and dates are not checked (a trust anchor is its key and name). Name-independent:
/// see [`verify_name`].
pub fn verify_chain_to(
    chain: &[CertificateDer<'static>],
    anchor: usize,
    now: UnixTime,
) -> Result<(), CertFailure> {
    let (Some(leaf), Some(anchor_der)) = (chain.first(), chain.get(anchor)) else {
        return Err(CertFailure {
            problem: CertProblem::ValidationFailure,
            message: format!(
                "no certificate {anchor} in a chain of {} to use as trust anchor",
                chain.len()
            ),
        });
    };
    if anchor == 0 {
        return Err(CertFailure {
            problem: CertProblem::ValidationFailure,
            message: "the leaf cannot be its own trust anchor (that is DANE-EE)".to_owned(),
        });
    }
    let trust_anchor = webpki::anchor_from_trusted_cert(anchor_der).map_err(|e| CertFailure {
        problem: CertProblem::ValidationFailure,
        message: format!("certificate {anchor} is not usable as a trust anchor: {e:?}"),
    })?;
    let intermediates = chain.get(1..anchor).unwrap_or_default();
    verify_path(leaf, &[trust_anchor], intermediates, now)
}

/// Checks that the leaf is valid for `name` (a host name or an IP address).
pub fn verify_name(chain: &[CertificateDer<'static>], name: &str) -> Result<(), CertFailure> {
    let Some(leaf) = chain.first() else {
        return Err(CertFailure {
            problem: CertProblem::ValidationFailure,
            message: "no certificate presented".to_owned(),
        });
    };
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| CertFailure {
        problem: CertProblem::CertificateHostMismatch,
        message: format!("{name:?} is not a valid name to check"),
    })?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| classify(&e))?;
    ee.verify_is_valid_for_subject_name(&server_name)
        .map_err(|e| {
            let mut failure = classify(&e);
            if failure.problem == CertProblem::CertificateHostMismatch {
                failure.message = format!("certificate not valid for {name}");
            }
            failure
        })
}

/// What one certificate says, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub sans: Vec<String>,
    pub serial: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// `RSA`, `EC`, `Ed25519`, … and its size in bits.
    pub key_type: String,
    pub key_bits: Option<usize>,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, hex (DANE `3 1 1`).
    pub spki_sha256: String,
    pub self_signed: bool,
}

/// Reads the details of a DER certificate. `None` only for undecodable input.
pub fn certificate_info(der: &[u8]) -> Option<CertificateInfo> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let spki = cert.tbs_certificate.subject_pki.raw;
    let (key_type, key_bits) = match cert.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            ("RSA".to_owned(), Some(rsa.key_size()))
        }
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => ("EC".to_owned(), Some(ec.key_size())),
        Ok(x509_parser::public_key::PublicKey::DSA(_)) => ("DSA".to_owned(), None),
        _ => {
            let oid = cert.public_key().algorithm.algorithm.to_id_string();
            match oid.as_str() {
                "1.3.101.112" => ("Ed25519".to_owned(), Some(256)),
                "1.3.101.113" => ("Ed448".to_owned(), Some(456)),
                _ => (oid, None),
            }
        }
    };
    let time = |t: ASN1Time| {
        jiff::Timestamp::from_second(t.timestamp())
            .map(|ts| ts.to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    Some(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        serial: cert.raw_serial_as_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        key_type,
        key_bits,
        sha256: hex::encode(Sha256::digest(der)),
        spki_sha256: hex::encode(Sha256::digest(spki)),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// `TLSv1.3` style names.
pub fn version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        rustls::ProtocolVersion::TLSv1_1 => "TLSv1.1".to_owned(),
        rustls::ProtocolVersion::TLSv1_0 => "TLSv1".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The IANA name of a cipher suite (`TLS_AES_256_GCM_SHA384`,
/// `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`).
pub fn cipher_name(suite: rustls::CipherSuite) -> String {
    let name = suite
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{suite:?}"));
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(version_name(rustls::ProtocolVersion::TLSv1_3), "TLSv1.3");
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        );
    }

    #[test]
    fn empty_chain_is_a_failure_not_a_panic() {
        let anchors = TrustAnchors::mozilla();
        assert_eq!(
            verify_chain(&[], &anchors, UnixTime::now())
                .unwrap_err()
                .problem,
            CertProblem::ValidationFailure
        );
        assert!(verify_name(&[], "mx.example.com").is_err());
        assert!(certificate_info(b"garbage").is_none());
    }
}
