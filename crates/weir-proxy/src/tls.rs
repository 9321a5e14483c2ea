//! TLS termination: certificates loaded from PEM files and chosen by SNI (a certificate
//! serves every name it is valid for, wildcards included; the first is the default), with
//! `h2` and `http/1.1` offered by ALPN. Certificates are swapped on reload.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use weir_config::CertificateConfig;

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The leaf certificate, parsed once, for name checks.
    leaf: CertificateDer<'static>,
}

#[derive(Default)]
struct CertSet {
    certs: Vec<Loaded>,
    files: Vec<CertificateConfig>,
}

/// Picks a certificate per handshake from the current set.
pub struct CertResolver {
    set: ArcSwap<CertSet>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertResolver")
    }
}

impl CertResolver {
    pub fn new(files: &[CertificateConfig]) -> Result<Arc<Self>, String> {
        let set = load_set(files)?;
        Ok(Arc::new(Self {
            set: ArcSwap::from_pointee(set),
        }))
    }

    /// Reloads when the list of files changed; unchanged lists keep the loaded keys.
    pub fn update(&self, files: &[CertificateConfig]) -> Result<(), String> {
        if self.set.load().files == files {
            return Ok(());
        }
        self.set.store(Arc::new(load_set(files)?));
        Ok(())
    }

    /// Validates and loads without installing (used before a reload commits).
    pub fn check(files: &[CertificateConfig]) -> Result<(), String> {
        load_set(files).map(|_| ())
    }

    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The ring provider supports the safe default versions; the fallback keeps TLS 1.3.
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| {
                rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            });
        let mut cfg = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        if let Some(name) = hello.server_name()
            && let Ok(server_name) = ServerName::try_from(name)
        {
            for c in &set.certs {
                let ok = webpki::EndEntityCert::try_from(&c.leaf)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok());
                if ok {
                    return Some(Arc::clone(&c.key));
                }
            }
        }
        set.certs.first().map(|c| Arc::clone(&c.key))
    }
}

/// PEM text rather than a file path.
fn is_pem(s: &str) -> bool {
    s.trim_start().starts_with("-----BEGIN")
}

fn load_set(files: &[CertificateConfig]) -> Result<CertSet, String> {
    let mut certs = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let at = format!("listen.tls.certificates[{i}]");
        // `cert` and `key` are file paths, or the PEM text itself (certificates kept in
        // the store); messages name the file, never the key's text.
        let cert_src = if is_pem(&f.cert) {
            "the PEM given"
        } else {
            f.cert.as_str()
        };
        let chain: Vec<CertificateDer<'static>> = if is_pem(&f.cert) {
            CertificateDer::pem_slice_iter(f.cert.as_bytes()).collect::<Result<_, _>>()
        } else {
            CertificateDer::pem_file_iter(&f.cert)
                .map_err(|e| format!("{at}.cert: cannot read {:?}: {e}", f.cert))?
                .collect::<Result<_, _>>()
        }
        .map_err(|e| format!("{at}.cert: {cert_src:?} is not PEM certificates: {e}"))?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(format!("{at}.cert: {cert_src:?} holds no certificate"));
        };
        // The PEM text itself, or the path of its file (a path is not secret; the text is).
        let written = f.key.as_written();
        let key_src = if is_pem(written) {
            "the PEM given"
        } else {
            written
        };
        let key = if is_pem(written) {
            PrivateKeyDer::from_pem_slice(written.as_bytes())
        } else {
            PrivateKeyDer::from_pem_file(written)
        }
        .map_err(|e| format!("{at}.key: cannot read a private key from {key_src:?}: {e}"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("{at}.key: unsupported private key in {key_src:?}: {e}"))?;
        let ck = CertifiedKey::new(chain, signing);
        if let Err(e) = ck.keys_match() {
            return Err(format!(
                "{at}: the key does not belong to the certificate: {e}"
            ));
        }
        webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| format!("{at}.cert: cannot parse the certificate: {e}"))?;
        certs.push(Loaded {
            key: Arc::new(ck),
            leaf,
        });
    }
    Ok(CertSet {
        certs,
        files: files.to_vec(),
    })
}
