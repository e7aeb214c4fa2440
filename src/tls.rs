//! TLS: the listeners' certificate, which can be replaced while serving (a reload reads the
//! files again; handshakes from then on use the new pair, connections already open keep
//! theirs), and the CA bundles that https upstreams may name instead of the system's roots.
//!
//! It owns the certificate resolver and the CA bundles; it uses rustls (through Pingora) and must
//! not reach any other module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::utils::tls::WrappedX509;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct TlsError {
    path: PathBuf,
    why: String,
}

fn error(path: &Path, why: impl ToString) -> TlsError {
    TlsError {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// The listeners' certificate chain and key, from PEM files.
#[derive(Debug)]
pub struct ServerCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ServerCert {
    /// Loads the chain in `cert_file` and the key in `key_file` (PKCS#8, PKCS#1 or SEC1), and
    /// checks that they belong together.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let pair = read_pair(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::from_pointee(pair),
        })
    }

    /// Reads the files again; on an error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// The files a reload reads.
    pub fn files(&self) -> [PathBuf; 2] {
        [self.cert_file.clone(), self.key_file.clone()]
    }

    /// Listener settings that present whatever pair is current at each handshake.
    pub fn settings(self: &Arc<Self>) -> TlsSettings {
        let mut settings = TlsSettings::intermediate("", "").expect("no files are read here");
        settings.set_cert_resolver(self.clone());
        settings
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| error(key_file, format!("no private key: {e}")))?;
    pingora_rustls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().expect("installed just above");
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| error(key_file, format!("does not match the certificate: {e}")))
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| error(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(file, e))?;
    if certs.is_empty() {
        return Err(error(file, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The certificates of a CA bundle (PEM), in the form Pingora's upstream peers take. Each is
/// checked as a trust anchor first, so a malformed one is an error here, not at connect time.
pub fn ca_bundle(file: &Path) -> Result<Arc<[WrappedX509]>, TlsError> {
    let certs = read_certs(file)?;
    let mut store = RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| error(file, e))?;
    }
    Ok(certs
        .into_iter()
        .map(|c| WrappedX509::new(c.to_vec(), pingora_core::utils::tls::parse_x509))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls").join(name)
    }

    #[test]
    fn pairs_load_reload_and_refuse_mismatches() {
        let cert = ServerCert::load(&fixture("server1.pem"), &fixture("server1.key")).unwrap();
        let first = cert.current.load().cert[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::copy(fixture("server1.pem"), &c).unwrap();
        std::fs::copy(fixture("server1.key"), &k).unwrap();
        let live = ServerCert::load(&c, &k).unwrap();
        // A half-written rotation (new certificate, old key) is refused; the old pair stays.
        std::fs::copy(fixture("server2.pem"), &c).unwrap();
        let err = live.reload().unwrap_err().to_string();
        assert!(err.contains("tls.key") && err.contains("does not match"), "{err}");
        assert_eq!(live.current.load().cert[0], first);
        std::fs::copy(fixture("server2.key"), &k).unwrap();
        live.reload().unwrap();
        assert_ne!(live.current.load().cert[0], first);

        let missing = ServerCert::load(&dir.path().join("nope"), &k).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
        let not_a_cert = ServerCert::load(&k, &k).unwrap_err().to_string();
        assert!(not_a_cert.contains("no PEM certificate"), "{not_a_cert}");
        assert_eq!(ca_bundle(&fixture("ca.pem")).unwrap().len(), 1);
        assert!(ca_bundle(&k).is_err());
    }
}
