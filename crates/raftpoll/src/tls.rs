//! TLS on every gRPC connection: loads and checks certificates (`[tls]` or
//! the CLI's `--ca/--cert/--key`), accepts TLS connections for the server,
//! dials TLS connections for clients, and swaps both configs on reload
//! (SIGHUP) so new connections use new certificates without a restart.
//!
//! rustls with the ring provider; tonic serves the accepted streams
//! (`serve_with_incoming`) and dials through [`TlsDialer`], so the configs
//! stay ours to swap.

use crate::config::{ClientAuth, TlsConfig};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;

/// A client that opens a TCP connection and then says nothing is dropped
/// after this long, so it cannot hold a slot forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// gRPC is HTTP/2; announcing it lets generic clients (grpcurl) talk to us.
const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{what} {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path}: {message}")]
    BadCertificate {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    // The key's own parse error is left out: it may quote the file's content.
    #[error("key file {path} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey { path: PathBuf },
    #[error("key file {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("certificate {cert} is refused: {problem} (CA file {ca})")]
    Refused {
        cert: PathBuf,
        ca: PathBuf,
        problem: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The files of one TLS identity: CA to trust, and this side's certificate
/// and key (optional for a CLI client).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_path_buf(),
        error,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            what,
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::BadKey {
        path: path.to_path_buf(),
    })
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates("CA file", ca)? {
        store.add(cert).map_err(|e| TlsError::BadCertificate {
            what: "CA file",
            path: ca.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// A certificate chain with its key, checked to belong together.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain = certificates("certificate file", cert)?;
    let key_der = private_key(key)?;
    match CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider()) {
        Ok(_) => Ok(Identity {
            chain,
            key: key_der,
        }),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        Err(_) => Err(TlsError::BadKey {
            path: key.to_path_buf(),
        }),
    }
}

/// A value read by every new connection and replaced whole on reload.
struct Swap<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Swap(self.0.clone())
    }
}

impl<T> Swap<T> {
    fn new(value: Arc<T>) -> Self {
        Swap(Arc::new(RwLock::new(value)))
    }

    fn get(&self) -> Arc<T> {
        // A writer never panics while holding the lock; recover anyway.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// The client side of TLS: what [`TlsDialer`] connects with. Cheap to clone;
/// clones see reloads.
#[derive(Clone)]
pub struct ClientTls {
    config: Swap<ClientConfig>,
}

impl ClientTls {
    /// For the CLI: trusts `files.ca`, presents `files.cert_and_key` if any.
    pub fn load(files: &TlsFiles) -> Result<ClientTls, TlsError> {
        let config = client_config(files)?;
        Ok(ClientTls {
            config: Swap::new(config),
        })
    }

    fn current(&self) -> Arc<ClientConfig> {
        self.config.get()
    }
}

fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(&files.ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &files.cert_and_key {
        Some((cert, key)) => {
            let id = identity(cert, key)?;
            builder
                .with_client_auth_cert(id.chain, id.key)
                .map_err(|e| TlsError::Setup(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The server side of TLS: what [`incoming`] accepts with.
#[derive(Clone)]
pub struct ServerTls {
    config: Swap<ServerConfig>,
}

/// A node's TLS: server and client configs from `[tls]`, reloadable.
#[derive(Clone)]
pub struct NodeTls {
    settings: TlsConfig,
    /// The host peers and clients dial this node by (from `advertise`); its
    /// certificate must be valid for it.
    host: String,
    pub server: ServerTls,
    pub client: ClientTls,
}

impl NodeTls {
    /// Loads and checks `[tls]`: readable files, a key matching its
    /// certificate, a certificate signed by the CA, valid now and for
    /// `advertise` (and for client authentication when peers require it).
    pub fn load(settings: &TlsConfig, advertise: &str) -> Result<NodeTls, TlsError> {
        let host = host_of(advertise).to_string();
        let (server, client) = node_configs(settings, &host)?;
        Ok(NodeTls {
            settings: settings.clone(),
            host,
            server: ServerTls {
                config: Swap::new(server),
            },
            client: ClientTls {
                config: Swap::new(client),
            },
        })
    }

    /// Reads the files again; on success new connections (served and dialed)
    /// use them. On error the running configs stay as they were.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (server, client) = node_configs(&self.settings, &self.host)?;
        self.server.config.set(server);
        self.client.config.set(client);
        Ok(())
    }

    pub fn files(&self) -> &TlsConfig {
        &self.settings
    }
}

fn node_configs(
    settings: &TlsConfig,
    host: &str,
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
    let id = identity(&settings.cert_file, &settings.key_file)?;
    let roots = roots(&settings.ca_file)?;
    check_own_certificate(settings, &roots, &id, host)?;

    let verifier = match settings.client_auth {
        ClientAuth::Required => {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?
        }
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain, id.key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];

    // Nodes present their own certificate when they dial each other.
    let client = client_config(&TlsFiles {
        ca: settings.ca_file.clone(),
        cert_and_key: Some((settings.cert_file.clone(), settings.key_file.clone())),
    })?;
    Ok((Arc::new(server), client))
}

/// Refuses a certificate that peers would refuse anyway, at start (or
/// reload) with the file named, instead of as handshake failures later.
fn check_own_certificate(
    settings: &TlsConfig,
    roots: &Arc<RootCertStore>,
    id: &Identity,
    host: &str,
) -> Result<(), TlsError> {
    let refused = |problem: String| TlsError::Refused {
        cert: settings.cert_file.clone(),
        ca: settings.ca_file.clone(),
        problem,
    };
    let (end_entity, intermediates) = id
        .chain
        .split_first()
        .ok_or_else(|| refused("no certificate".into()))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| refused(format!("advertise host '{host}' is not a valid TLS name")))?;
    let now = UnixTime::now();
    WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .verify_server_cert(end_entity, intermediates, &name, &[], now)
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            ) => refused(format!(
                "{} (peers dial this node by the host of `advertise`)",
                describe(&e)
            )),
            e => refused(describe(&e)),
        })?;
    if settings.client_auth == ClientAuth::Required {
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| refused(format!("as a client certificate: {}", describe(&e))))?;
    }
    Ok(())
}

/// rustls's message, with the common cases said plainly.
fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "not signed by the CA (unknown issuer)".into()
        }
        rustls::Error::InvalidCertificate(c) => c.to_string(),
        other => other.to_string(),
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub fn host_of(addr: &str) -> &str {
    let host = match addr.parse::<SocketAddr>() {
        Ok(_) => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
        Err(_) => match addr.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() => h,
            _ => addr,
        },
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `listen` only accepts connections from this machine (plaintext is
/// then acceptable without a warning).
pub fn is_loopback(listen: &SocketAddr) -> bool {
    match listen.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

// ---------------------------------------------------------------- server side

/// The TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming`. Handshakes run concurrently (a slow client delays
/// nobody) under [`HANDSHAKE_TIMEOUT`]; failed ones are logged with the
/// peer's address and never reach tonic. Each handshake uses the config
/// current when it starts. Ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.config.get());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    // A bare TCP probe (load balancer, port check) closes
                    // without a word: not worth a warning.
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(%peer, error = %e, "TLS handshake: connection closed")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "TLS handshake refused")
                    }
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

// ---------------------------------------------------------------- client side

/// tonic connector: TCP, then a TLS handshake with the client config current
/// at that moment, to the host and port of the URI (its `http://` scheme is
/// only tonic's; the bytes are TLS). tonic's connect timeout covers both.
#[derive(Clone)]
pub struct TlsDialer {
    tls: ClientTls,
}

impl TlsDialer {
    pub fn new(tls: ClientTls) -> TlsDialer {
        TlsDialer { tls }
    }
}

/// A dialed TLS connection: what the node said first, then the stream.
type Dialed = TokioIo<Primed<tokio_rustls::client::TlsStream<TcpStream>>>;
type DialFuture = Pin<Box<dyn Future<Output = Result<Dialed, io::Error>> + Send>>;

impl tower_service::Service<tonic::codegen::http::Uri> for TlsDialer {
    type Response = Dialed;
    type Error = io::Error;
    type Future = DialFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> DialFuture {
        let config = self.tls.current();
        Box::pin(async move {
            let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
            let host = uri.host().ok_or_else(|| bad("address without a host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| bad("address without a port"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| bad("host is not a valid TLS name"))?;
            let mut stream = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("TLS handshake with {host}:{port}: {e}"))
                })?;
            // With TLS 1.3 the node judges our certificate after our side of
            // the handshake is done: its refusal (an alert) only arrives with
            // the first read. The node speaks first (HTTP/2 SETTINGS), so
            // wait for that here and say why if it refuses.
            let mut head = vec![0u8; 4096];
            let n = stream.read(&mut head).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("TLS with {host}:{port}: the node refused this client: {e}"),
                )
            })?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "TLS with {host}:{port}: the node closed the connection after the handshake"
                    ),
                ));
            }
            head.truncate(n);
            Ok(TokioIo::new(Primed {
                head,
                pos: 0,
                inner: stream,
            }))
        })
    }
}

/// A stream whose first bytes were already read: they are served first.
pub struct Primed<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Primed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.pos);
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Primed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7071"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7071"), "::1");
        assert_eq!(host_of("node1.example.net:7071"), "node1.example.net");
        assert_eq!(host_of("node1"), "node1");
    }

    #[test]
    fn loopback_listen_addresses() {
        assert!(is_loopback(&"127.0.0.1:7071".parse().expect("addr")));
        assert!(is_loopback(&"[::1]:7071".parse().expect("addr")));
        assert!(!is_loopback(&"0.0.0.0:7071".parse().expect("addr")));
        assert!(!is_loopback(&"10.1.2.3:7071".parse().expect("addr")));
    }

    #[test]
    fn missing_files_are_named() {
        let files = TlsFiles {
            ca: PathBuf::from("/nonexistent/ca.pem"),
            cert_and_key: None,
        };
        let err = ClientTls::load(&files).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("CA file /nonexistent/ca.pem")),
            "{err:?}"
        );
    }
}
