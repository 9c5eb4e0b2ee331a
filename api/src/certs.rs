//! A throwaway certificate authority for development and tests: one CA,
//! node certificates (the `node` principal, valid for loopback), and
//! client certificates that each name one principal (see [`crate::auth`]).
//!
//! Never for production: the CA's key is written beside the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate authority whose key is at hand.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let error = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, contents).map_err(error)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    }
    Ok(())
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "farmlog development");
    name
}

impl DevCa {
    /// A new CA.
    pub fn new() -> Result<Self, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = named("farmlog development CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate naming `principal` (a farmlog:// URI), valid
    /// for TLS clients, and for servers at `hosts` (names or IPs) when any
    /// are given. Returns (certificate PEM, key PEM).
    pub fn issue(&self, common_name: &str, principal: &str, hosts: &[&str]) -> Result<(String, String), CertError> {
        let mut params = CertificateParams::new(hosts.iter().map(|host| host.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = named(common_name);
        params
            .subject_alt_names
            .push(SanType::URI(principal.to_string().try_into()?));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if !hosts.is_empty() {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    /// Writes `ca.pem` into `dir`.
    pub fn write_ca(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join("ca.pem"), &self.pem(), false)
    }

    /// Issues and writes `<name>.pem` and `<name>.key` into `dir`; returns
    /// the files (with `ca.pem`) as a client or server uses them.
    pub fn write_issued(&self, dir: &Path, name: &str, principal: &str, hosts: &[&str]) -> Result<TlsFiles, CertError> {
        let (certificate, key) = self.issue(name, principal, hosts)?;
        let files = TlsFiles::in_dir(dir, name);
        write(&files.cert, &certificate, false)?;
        write(&files.key, &key, true)?;
        Ok(files)
    }
}
