//! TLS for `serve`: the certificate and key from PEM files, re-read when the files change
//! so that a renewal needs no restart, and optional client certificates for the webhook.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the TLS certificate {cert} and key {key} do not form a usable pair: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// Where the PEM files are and how often they are checked for a renewal.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose client certificates the webhook requires (mutual TLS).
    pub client_ca: Option<PathBuf>,
    pub reload_every: Duration,
}

/// A loaded TLS set-up: what accepts connections, and what keeps its certificate fresh.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    certificate: Arc<ReloadingCertificate>,
    files: TlsFiles,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = provider();
        let certificate = Arc::new(ReloadingCertificate {
            current: RwLock::new(Arc::new(read_pair(&files, &provider)?)),
            stamp: RwLock::new(stamp(&files)),
            provider: provider.clone(),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match &files.client_ca {
            // Browsers and BI tools present no certificate; the webhook's route decides
            // whether one is required, so the handshake accepts connections without one.
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca, "client CA")? {
                    roots.add(cert).map_err(|e| TlsError::File {
                        what: "client CA",
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError::Setup(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            files,
        })
    }

    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Checks the files every `reload_every` and swaps in a changed pair; a pair that
    /// does not load (a renewal caught halfway) keeps the old one until the next check.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(tls.files.reload_every.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let files = tls.files.clone();
                let certificate = tls.certificate.clone();
                let _ = tokio::task::spawn_blocking(move || certificate.reload_if_changed(&files))
                    .await;
            }
        })
    }
}

/// Serves whichever certificate was loaded last; new handshakes see a renewal at once,
/// open connections keep the one they began with.
struct ReloadingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadingCertificate")
    }
}

impl ReloadingCertificate {
    fn reload_if_changed(&self, files: &TlsFiles) {
        let now = stamp(files);
        if self.stamp.read().is_ok_and(|s| *s == now) {
            return;
        }
        match read_pair(files, &self.provider) {
            Ok(pair) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(pair);
                }
                if let Ok(mut stamp) = self.stamp.write() {
                    *stamp = now;
                }
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                metrics::counter!("chatvault_tls_certificate_reloads_total").increment(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed TLS files do not load; keeping the current certificate");
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// The modification times of both files: a renewal rewrites or replaces them.
fn stamp(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(&files.cert)?, modified(&files.key)?))
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(&files.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        what: "key",
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}
