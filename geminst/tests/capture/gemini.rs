//! A small Gemini-over-TLS server and client for the capture tests (the built-in server is another
//! capability's): rustls on both ends, a self-signed ECDSA P-256 certificate from rcgen. The
//! server answers `URL\r\n` with `20 text/plain\r\n` and a body whose size the test sets, sends
//! close_notify, shuts down its write side and waits for the client to close. Both ends count the
//! bytes they write to and read from TCP, as the independent source for the wire payload.

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    ClientConfig, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
    time::timeout,
};

/// The response header the server sends: a Gemini success line.
pub const RESPONSE_HEADER: &[u8] = b"20 text/plain\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    V12,
    V13,
}

impl Tls {
    fn version(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            Tls::V12 => &rustls::version::TLS12,
            Tls::V13 => &rustls::version::TLS13,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A stream that counts the bytes through it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the server did on one connection.
#[derive(Debug, Clone)]
pub struct Served {
    pub peer: SocketAddr,
    /// Bytes the server wrote to and read from TCP (TLS records).
    pub tcp_written: u64,
    pub tcp_read: u64,
    pub error: Option<String>,
}

/// The test server, on a runtime of the test's. Dropping the runtime stops it.
pub struct Server {
    /// The certificate in use, PEM.
    pub cert_pem: String,
    /// Body bytes of each response, set by the test before each fetch.
    pub body: Arc<AtomicU64>,
    /// If not `u64::MAX`: send this many body bytes, then drop the TCP connection without
    /// close_notify (a server dying mid-response).
    pub abort_after: Arc<AtomicU64>,
    pub served: Arc<Mutex<Vec<Served>>>,
}

impl Server {
    pub fn start(rt: &Runtime, port: u16) -> Server {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_pem = ck.cert.pem();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = rt.block_on(TcpListener::bind(("127.0.0.1", port))).unwrap();
        let body = Arc::new(AtomicU64::new(0));
        let abort_after = Arc::new(AtomicU64::new(u64::MAX));
        let served = Arc::new(Mutex::new(Vec::new()));
        let (b, a, s) = (body.clone(), abort_after.clone(), served.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { break };
                let (acceptor, b, a, s) = (acceptor.clone(), b.clone(), a.clone(), s.clone());
                tokio::spawn(async move {
                    let read = Arc::new(AtomicU64::new(0));
                    let written = Arc::new(AtomicU64::new(0));
                    let counted = Counted { inner: tcp, read: read.clone(), written: written.clone() };
                    let body = b.load(Ordering::SeqCst);
                    let abort = a.load(Ordering::SeqCst);
                    let error = serve_one(acceptor, counted, body, abort).await.err().map(|e| e.to_string());
                    s.lock().unwrap().push(Served {
                        peer,
                        tcp_written: written.load(Ordering::SeqCst),
                        tcp_read: read.load(Ordering::SeqCst),
                        error,
                    });
                });
            }
        });
        Server { cert_pem, body, abort_after, served }
    }

    /// The server's record of the connection from `peer`, waiting up to 10 s for it to finish.
    pub fn served(&self, peer: SocketAddr) -> Served {
        let mut found = None;
        let ok = crate::util::wait_until(Duration::from_secs(10), || {
            found = self.served.lock().unwrap().iter().find(|s| s.peer == peer).cloned();
            found.is_some()
        });
        assert!(ok, "the server has no record of a connection from {peer}");
        found.unwrap()
    }
}

async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: Counted<TcpStream>,
    body: u64,
    abort: u64,
) -> std::io::Result<()> {
    let limit = Duration::from_secs(20);
    let mut tls = timeout(limit, acceptor.accept(tcp)).await??;
    // The request: up to and including LF, at most 1026 bytes (RFC-style Gemini limit + CRLF).
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.contains(&b'\n') && request.len() <= 1026 {
        let n = timeout(limit, tls.read(&mut buf)).await??;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let mut response = RESPONSE_HEADER.to_vec();
    response.resize(RESPONSE_HEADER.len() + body.min(abort) as usize, b'x');
    // One write, as one buffer: rustls cuts it into records of at most 2^14 bytes.
    timeout(limit, tls.write_all(&response)).await??;
    timeout(limit, tls.flush()).await??;
    if abort != u64::MAX {
        // Die mid-response: no close_notify; the kernel closes the socket (FIN, or RST if the
        // client's data is unread).
        return Ok(());
    }
    // close_notify, then FIN (tokio-rustls shuts the TCP write side after the alert).
    timeout(limit, tls.shutdown()).await??;
    // Wait for the client's close_notify and FIN, so the close is clean on both sides.
    while let Ok(Ok(n)) = timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// How the client ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Read to close_notify, send its own close_notify, close.
    Graceful,
    /// Read to close_notify and close without sending one (as geminst load does).
    Drop,
    /// After this many response bytes, reset the connection (SO_LINGER 0, close: an RST).
    ResetAfter(u64),
}

/// What the client saw.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub local: SocketAddr,
    /// CLOCK_MONOTONIC before the connect and after the close: the connection's first and last
    /// packets lie between (the 4-tuple alone may be reused by a later connection).
    pub start_ns: u64,
    pub end_ns: u64,
    /// Response bytes (header and body) the client read.
    pub response_len: u64,
    /// Bytes the client wrote to and read from TCP (TLS records).
    pub tcp_written: u64,
    pub tcp_read: u64,
    /// The TLS version negotiated.
    pub version: Option<rustls::ProtocolVersion>,
}

/// A Gemini request of exactly `n` bytes (CRLF included, or a lone LF for 1 byte).
pub fn request(n: usize) -> Vec<u8> {
    assert!(n >= 1);
    let line = n.saturating_sub(2);
    let mut r: Vec<u8> =
        b"gemini://localhost/".iter().copied().chain(std::iter::repeat(b'a')).take(line).collect();
    r.extend_from_slice(if n >= 2 { b"\r\n" } else { b"\n" });
    assert_eq!(r.len(), n);
    r
}

/// Fetches from the test server on 127.0.0.1:`port` with a request of `request_bytes`;
/// `nodelay` sets TCP_NODELAY on the client's socket.
pub async fn fetch(
    port: u16,
    tls: Tls,
    request_bytes: usize,
    ending: Ending,
    nodelay: bool,
) -> std::io::Result<Fetched> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[tls.version()])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(geminst::load::TofuVerifier::new(None, true)))
        .with_no_client_auth();
    // Every connection makes a full handshake, as a first visit does.
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let start_ns = geminst::clock::monotonic_ns();
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Ending::ResetAfter(_) = ending {
        // A small receive window, so the server cannot have sent the whole response by the time
        // the client resets: the connection really breaks off mid-response.
        socket.set_recv_buffer_size(32 * 1024)?;
    }
    let tcp = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    tcp.set_nodelay(nodelay)?;
    let local = tcp.local_addr()?;
    let fd = tcp.as_raw_fd();
    let read = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let counted = Counted { inner: tcp, read: read.clone(), written: written.clone() };
    let limit = Duration::from_secs(20);
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls_stream = timeout(limit, connector.connect(name, counted)).await??;
    let (_, conn) = tls_stream.get_ref();
    let version = conn.protocol_version();
    timeout(limit, tls_stream.write_all(&request(request_bytes))).await??;
    timeout(limit, tls_stream.flush()).await??;
    let mut response_len = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match timeout(limit, tls_stream.read(&mut buf)).await? {
            Ok(n) => n,
            // A server that dies mid-response ends the stream without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        response_len += n as u64;
        if let Ending::ResetAfter(limit_bytes) = ending
            && response_len >= limit_bytes
        {
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: fd is the connected socket, still open (owned by tls_stream).
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const _ as *const libc::c_void,
                    size_of::<libc::linger>() as u32,
                )
            };
            drop(tls_stream);
            return Ok(Fetched {
                local,
                start_ns,
                end_ns: geminst::clock::monotonic_ns(),
                response_len,
                tcp_written: written.load(Ordering::SeqCst),
                tcp_read: read.load(Ordering::SeqCst),
                version,
            });
        }
    }
    if ending == Ending::Graceful {
        // Our close_notify, then FIN.
        let _ = timeout(limit, tls_stream.shutdown()).await;
    }
    drop(tls_stream);
    Ok(Fetched {
        local,
        start_ns,
        end_ns: geminst::clock::monotonic_ns(),
        response_len,
        tcp_written: written.load(Ordering::SeqCst),
        tcp_read: read.load(Ordering::SeqCst),
        version,
    })
}

/// A two-thread runtime for a test's server and clients.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}
