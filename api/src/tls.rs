//! Mutual TLS (rustls, through tonic): a node's own certificate and key,
//! and the CA that every client and peer certificate must chain to.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Largest PEM file read (a certificate chain or a key).
pub const PEM_BYTES_MAX: u64 = 1 << 20;

/// Where a node's or a client's TLS material is, in PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signs every certificate of the cluster and its clients.
    pub ca: PathBuf,
    /// This party's certificate (chain) and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {PEM_BYTES_MAX} bytes; not a PEM certificate or key")]
    TooLarge { path: PathBuf },
    #[error("{path}: no PEM block in it")]
    NotPem { path: PathBuf },
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let length = std::fs::metadata(path).map_err(read)?.len();
    if length > PEM_BYTES_MAX {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    if !bytes.windows(10).any(|window| window == b"-----BEGIN") {
        return Err(TlsError::NotPem {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

impl TlsFiles {
    /// The files `ca.pem`, `<name>.pem` and `<name>.key` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    fn identity(&self) -> Result<Identity, TlsError> {
        Ok(Identity::from_pem(read_pem(&self.cert)?, read_pem(&self.key)?))
    }

    /// A server that requires a client certificate signed by the CA.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(Certificate::from_pem(read_pem(&self.ca)?))
            .client_auth_optional(false))
    }

    /// A client that presents its certificate and trusts only the CA.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem(&self.ca)?))
            .identity(self.identity()?))
    }
}
