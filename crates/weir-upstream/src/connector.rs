//! Connects to one upstream endpoint: TCP with a deadline and `TCP_NODELAY`, then TLS
//! (verified by default, h2 by ALPN) when the upstream asks for it. Used by the pooled
//! client; runs only when the pool has no idle connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    #[error("bad upstream address")]
    BadAddress,
    /// Every address the name resolves to is outside what this client may reach.
    #[error("{0} resolves only to addresses outside the allowed networks")]
    NotAllowed(String),
}

/// Which resolved addresses a client may connect to.
pub type AddressFilter = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct TlsSettings {
    pub config: Arc<rustls::ClientConfig>,
    /// Overrides the name sent in SNI and verified; otherwise the target's host.
    pub sni: Option<ServerName<'static>>,
}

#[derive(Clone)]
pub struct Connector {
    timeout: Duration,
    tls: Option<TlsSettings>,
    allow: Option<AddressFilter>,
}

impl Connector {
    pub fn new(timeout: Duration, tls: Option<TlsSettings>) -> Self {
        Self {
            timeout,
            tls,
            allow: None,
        }
    }

    /// Connects only to resolved addresses `allow` accepts: the check is on the address
    /// actually dialled, so a name that resolves differently later (DNS rebinding)
    /// cannot slip past it.
    pub fn with_filter(mut self, allow: AddressFilter) -> Self {
        self.allow = Some(allow);
        self
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.timeout;
        let tls = self.tls.clone();
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::BadAddress)?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().ok_or(ConnectError::BadAddress)?;
            let connect = async {
                let tcp = match &allow {
                    None => TcpStream::connect((host.as_str(), port)).await?,
                    Some(allow) => {
                        let addr = tokio::net::lookup_host((host.as_str(), port))
                            .await?
                            .find(|a| allow(a.ip()))
                            .ok_or_else(|| ConnectError::NotAllowed(host.clone()))?;
                        TcpStream::connect(addr).await?
                    }
                };
                tcp.set_nodelay(true)?;
                let Some(tls) = tls else {
                    return Ok(Conn::Plain(TokioIo::new(tcp)));
                };
                let name = match tls.sni {
                    Some(n) => n,
                    None => {
                        ServerName::try_from(host.clone()).map_err(|_| ConnectError::BadAddress)?
                    }
                };
                let stream = TlsConnector::from(tls.config).connect(name, tcp).await?;
                Ok(Conn::Tls(Box::new(TokioIo::new(stream))))
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError::Timeout),
            }
        })
    }
}

/// A connection to an endpoint, plain or TLS.
pub enum Conn {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(_) => Connected::new(),
            Conn::Tls(s) => {
                let (_, session) = s.inner().get_ref();
                if session.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Builds the rustls client configuration for an upstream: web roots or a CA file,
/// verification on unless turned off, ALPN `h2` + `http/1.1` or `http/1.1` alone.
pub fn client_tls_config(
    ca_file: Option<&str>,
    verify: bool,
    offer_h2: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read CA file {path:?}: {e}"))?;
                for c in certs {
                    let c = c.map_err(|e| format!("bad certificate in {path:?}: {e}"))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("bad CA certificate in {path:?}: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = if offer_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate (still checking handshake signatures); only with `verify: false`.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
