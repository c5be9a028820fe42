//! A throw-away certificate authority and self-signed certificates (ECDSA P-256, via rcgen) as
//! PEM files in a temp dir, for the test servers' TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key as PEM files. Cheap to clone; the files live as long as any clone
/// (or the [`TestCa`] that issued it).
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The leaf certificate alone.
    pub cert_pem: PathBuf,
    /// Its private key (PKCS#8, `BEGIN PRIVATE KEY`), ECDSA P-256.
    pub key_pem: PathBuf,
    /// The leaf followed by the issuing CA certificate (what a server should present); for a
    /// self-signed certificate, the same content as `cert_pem`.
    pub chain_pem: PathBuf,
    /// The CA certificate that signed it (for self-signed: the certificate itself), to use as
    /// a client's trust anchor.
    pub ca_pem: PathBuf,
    /// The DNS names / IP addresses in the certificate (the first is also the CN).
    pub names: Vec<String>,
    _dir: Arc<tempfile::TempDir>,
}

impl CertPair {
    /// The leaf certificate's PEM text.
    pub fn cert_text(&self) -> Result<String> {
        std::fs::read_to_string(&self.cert_pem)
            .with_context(|| format!("reading {}", self.cert_pem.display()))
    }
}

/// A test certificate authority. Its files are deleted when it and every issued [`CertPair`]
/// are dropped.
pub struct TestCa {
    dir: Arc<tempfile::TempDir>,
    ca_pem: PathBuf,
    params: CertificateParams,
    key: KeyPair,
    serial: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

fn cert_dir() -> Result<Arc<tempfile::TempDir>> {
    // Readable by the MTAs' service users too (they may read the files after dropping root).
    Ok(Arc::new(crate::util::service_tempdir("sigillo-certs-")?))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn leaf_params(
    names: &[&str],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams> {
    let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params =
        CertificateParams::new(sans).with_context(|| format!("certificate names {names:?}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("sigillo test"),
    );
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn validity_days(from_days: i64, to_days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now + Duration::days(from_days),
        now + Duration::days(to_days),
    )
}

/// A self-signed certificate for `names` (valid from yesterday for 30 days).
pub fn self_signed(names: &[&str]) -> Result<CertPair> {
    let dir = cert_dir()?;
    let (nb, na) = validity_days(-1, 30);
    let params = leaf_params(names, nb, na)?;
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params.self_signed(&key).context("self-signing")?;
    let cert_pem = dir.path().join("self-signed.crt");
    let key_pem = dir.path().join("self-signed.key");
    write(&cert_pem, &cert.pem())?;
    write(&key_pem, &key.serialize_pem())?;
    Ok(CertPair {
        chain_pem: cert_pem.clone(),
        ca_pem: cert_pem.clone(),
        cert_pem,
        key_pem,
        names: names.iter().map(|s| s.to_string()).collect(),
        _dir: dir,
    })
}

impl TestCa {
    /// A new CA, "sigillo test CA", valid from yesterday for a year.
    pub fn new() -> Result<Self> {
        let dir = cert_dir()?;
        let mut params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sigillo test CA");
        dn.push(DnType::OrganizationName, "sigillo testkit");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (nb, na) = validity_days(-1, 365);
        params.not_before = nb;
        params.not_after = na;
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let ca_pem = dir.path().join("ca.crt");
        write(&ca_pem, &cert.pem())?;
        Ok(Self {
            dir,
            ca_pem,
            params,
            key,
            serial: std::sync::atomic::AtomicU32::new(1),
        })
    }

    /// The CA certificate (PEM), to trust in clients.
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// A valid server certificate for `names` (DNS names or IP addresses), from yesterday for
    /// 30 days.
    pub fn issue(&self, names: &[&str]) -> Result<CertPair> {
        self.issue_with_validity(names, -1, 30)
    }

    /// A server certificate for `names` that expired yesterday (valid 30 days before that).
    pub fn issue_expired(&self, names: &[&str]) -> Result<CertPair> {
        self.issue_with_validity(names, -31, -1)
    }

    /// A server certificate valid from `from_days` to `to_days` relative to now (negative =
    /// in the past), e.g. `(1, 30)` for one that is not valid yet.
    pub fn issue_with_validity(
        &self,
        names: &[&str],
        from_days: i64,
        to_days: i64,
    ) -> Result<CertPair> {
        let (nb, na) = validity_days(from_days, to_days);
        let params = leaf_params(names, nb, na)?;
        let key = KeyPair::generate().context("generating a key")?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).context("signing")?;
        let n = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = format!(
            "{n:03}-{}",
            names.first().copied().unwrap_or("cert").replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
                "_"
            )
        );
        let cert_pem = self.dir.path().join(format!("{base}.crt"));
        let key_pem = self.dir.path().join(format!("{base}.key"));
        let chain_pem = self.dir.path().join(format!("{base}.chain.crt"));
        let ca_text = std::fs::read_to_string(&self.ca_pem).context("reading the CA cert")?;
        write(&cert_pem, &cert.pem())?;
        write(&key_pem, &key.serialize_pem())?;
        write(&chain_pem, &format!("{}{}", cert.pem(), ca_text))?;
        Ok(CertPair {
            cert_pem,
            key_pem,
            chain_pem,
            ca_pem: self.ca_pem.clone(),
            names: names.iter().map(|s| s.to_string()).collect(),
            _dir: self.dir.clone(),
        })
    }
}
