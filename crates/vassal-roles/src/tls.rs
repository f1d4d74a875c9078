//! TLS at the balancer (`-lb-tls-cert`, `-lb-tls-key`): rustls with the *ring* provider,
//! offering HTTP/2 and HTTP/1.1 by ALPN.
//!
//! The certificate sits behind a resolver ([`CertStore`]) that every handshake asks, so
//! [`CertStore::reload`] (on SIGHUP) swaps it for the connections that start afterwards while
//! the open ones carry on with the one they were made with: nothing is dropped. A file that
//! cannot be read or does not hold a matching certificate and key leaves the old pair in
//! place, and the error says which file and what to do.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A PEM file larger than this is refused (a certificate chain is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The PEM files the balancer's certificate and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `-lb-tls-cert`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `-lb-tls-key`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {path}: {why}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error(
        "{flag} {path} holds no {what} (expected a PEM file with a -----BEGIN {what}----- block)"
    )]
    Empty {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("-lb-tls-key {key}: {why} (is it the key of -lb-tls-cert {cert}?)")]
    Key {
        key: PathBuf,
        cert: PathBuf,
        why: String,
    },
    #[error("TLS settings: {0}")]
    Config(String),
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |why: String| TlsError::Read {
        flag,
        path: path.to_owned(),
        why,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| read(e.to_string()))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(read(format!(
            "{len} bytes; a PEM certificate or key is at most {MAX_PEM_BYTES}"
        )));
    }
    std::fs::read(path).map_err(|e| read(e.to_string()))
}

/// Reads and checks a certificate chain and its key.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = read_pem("-lb-tls-cert", &files.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            flag: "-lb-tls-cert",
            path: files.cert.clone(),
            why: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            flag: "-lb-tls-cert",
            path: files.cert.clone(),
            what: "CERTIFICATE",
        });
    }
    let key_pem = read_pem("-lb-tls-key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Empty {
        flag: "-lb-tls-key",
        path: files.key.clone(),
        what: "PRIVATE KEY",
    })?;
    let key_err = |why: String| TlsError::Key {
        key: files.key.clone(),
        cert: files.cert.clone(),
        why,
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| key_err(format!("not a usable key: {e}")))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| key_err(format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// The balancer's current certificate, handed to every handshake.
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Reads the pair once; an error is the agent's to report at start.
    pub fn open(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let current = RwLock::new(load(&files)?);
        Ok(Arc::new(CertStore { files, current }))
    }

    /// Reads the files again and, if they hold a good pair, serves it to new connections;
    /// otherwise keeps the old one. Open connections are not touched either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A TLS acceptor offering `h2` and `http/1.1`, with this store's certificate.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_flag_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = load(&TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: empty.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cannot read -lb-tls-cert"), "{e}");
        let e = load(&TlsFiles {
            cert: empty.clone(),
            key: empty,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("-lb-tls-cert") && e.contains("-----BEGIN CERTIFICATE-----"),
            "{e}"
        );
    }
}
