//! A stand-in Gemini server for testing and benchmarking the load generator before the built-in
//! server exists: rustls with an rcgen certificate, answering `/_bench/bytes/N` with N body bytes
//! and `/_bench/cpu/US` after US µs of busy work. It records what it saw of each connection
//! (the exact request bytes, the bytes at its own TCP socket, TLS facts, the accept time) so
//! tests can check the client's figures against an independent account.
//!
//! Self-contained (no test helpers) so the benchmark can include it too.
#![allow(dead_code)]

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::oneshot,
};
use tokio_rustls::TlsAcceptor;

/// How long the server waits for the client to close after the response.
const LINGER: Duration = Duration::from_secs(5);

/// What the server saw of one connection.
#[derive(Debug, Clone)]
pub struct Seen {
    /// CLOCK_MONOTONIC ns when the connection was accepted.
    pub accept_ns: u64,
    pub peer: SocketAddr,
    /// The request exactly as read (after TLS), CRLF included.
    pub request: Vec<u8>,
    pub status: u8,
    pub body_bytes: u64,
    /// Bytes at the server's TCP socket, until the client closed.
    pub tcp_bytes_received: u64,
    pub tcp_bytes_sent: u64,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub resumed: bool,
    pub sni: Option<String>,
    pub client_cert_sha256: Option<String>,
    /// Set when the connection failed; the other fields hold what was seen before.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Stall every response that would be sent between `after` (from the first accept) and
    /// `after + length` until the end of that window, as a server frozen by a pause would.
    pub stall: Option<(Duration, Duration)>,
    /// Ask clients for a certificate (optional; any is accepted and its fingerprint recorded).
    pub request_client_cert: bool,
    /// Worker threads (default 2).
    pub threads: Option<usize>,
}

pub struct StandIn {
    pub addr: SocketAddr,
    /// SHA-256 (hex) of the server's certificate.
    pub cert_sha256: String,
    /// The certificate and key in PEM, for peers that need files.
    pub cert_pem: String,
    pub key_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    /// Starts on 127.0.0.1 on a port of its own.
    pub fn start(config: Config) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config)
    }

    pub fn start_on(addr: SocketAddr, config: Config) -> Self {
        let (cert, key, cert_pem, key_pem) = certificate(&["localhost", "127.0.0.1"]);
        let cert_sha256 = sha256_hex(cert.as_ref());
        let tls = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .unwrap();
        let tls = if config.request_client_cert {
            tls.with_client_cert_verifier(Arc::new(AnyClientCert::new())).with_single_cert(vec![cert], key)
        } else {
            tls.with_no_client_auth().with_single_cert(vec![cert], key)
        }
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let seen2 = seen.clone();
        let threads = config.threads.unwrap_or(2);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .unwrap();
            // Connections are accepted on a thread of their own that does nothing else, so the
            // accept times it records follow the clients' connects even when the workers are busy.
            let listener = std::net::TcpListener::bind(addr).unwrap();
            let local = listener.local_addr().unwrap();
            addr_tx.send(local).unwrap();
            let state = Arc::new(State { seen: seen2, config, first_accept: Mutex::new(None) });
            let handle = rt.handle().clone();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let acceptor_thread = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Relaxed) {
                            break;
                        }
                        let Ok(stream) = conn else { continue };
                        let accept_ns = monotonic_ns();
                        let Ok(peer) = stream.peer_addr() else { continue };
                        let _ = stream.set_nonblocking(true);
                        let (acceptor, state) = (acceptor.clone(), state.clone());
                        handle.spawn(async move {
                            let Ok(stream) = TcpStream::from_std(stream) else { return };
                            let seen = handle_conn(acceptor, &state, stream, peer, accept_ns).await;
                            state.seen.lock().unwrap().push(seen);
                        });
                    }
                })
            };
            let _ = rt.block_on(rx);
            // Wake the accept loop with a connection of our own so it sees the stop flag.
            stop.store(true, Relaxed);
            let _ = std::net::TcpStream::connect(local);
            let _ = acceptor_thread.join();
            // Dropping the runtime ends the connections still open.
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("stand-in server did not start");
        Self { addr, cert_sha256, cert_pem, key_pem, seen, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("gemini://{}{path}", self.addr)
    }

    /// The connections finished so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until `n` connections have finished, then returns them all.
    pub fn wait_seen(&self, n: usize, timeout: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        while self.seen.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.seen()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    seen: Arc<Mutex<Vec<Seen>>>,
    config: Config,
    first_accept: Mutex<Option<Instant>>,
}

impl State {
    /// The end of the stall window if `now` is inside it.
    fn stalled_until(&self, now: Instant) -> Option<Instant> {
        let (after, length) = self.config.stall?;
        let first = (*self.first_accept.lock().unwrap())?;
        let (start, end) = (first + after, first + after + length);
        (now >= start && now < end).then_some(end)
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec; CLOCK_MONOTONIC exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A self-signed ECDSA P-256 certificate for `names`: (DER, key, certificate PEM, key PEM).
pub fn certificate(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>, String, String) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    (ck.cert.der().clone(), key, ck.cert.pem(), ck.signing_key.serialize_pem())
}

async fn handle_conn(
    acceptor: TlsAcceptor,
    state: &State,
    stream: TcpStream,
    peer: SocketAddr,
    accept_ns: u64,
) -> Seen {
    state.first_accept.lock().unwrap().get_or_insert_with(Instant::now);
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let mut seen = Seen {
        accept_ns,
        peer,
        request: Vec::new(),
        status: 0,
        body_bytes: 0,
        tcp_bytes_received: 0,
        tcp_bytes_sent: 0,
        tls_version: None,
        cipher: None,
        resumed: false,
        sni: None,
        client_cert_sha256: None,
        error: None,
    };
    if let Err(e) =
        serve_one(acceptor, state, Counted { inner: stream, counts: counts.clone() }, &mut seen).await
    {
        seen.error = Some(e.to_string());
    }
    seen.tcp_bytes_received = counts.0.load(Relaxed);
    seen.tcp_bytes_sent = counts.1.load(Relaxed);
    seen
}

async fn serve_one(acceptor: TlsAcceptor, state: &State, stream: Counted, seen: &mut Seen) -> io::Result<()> {
    let mut tls = acceptor.accept(stream).await?;
    {
        let (_, conn) = tls.get_ref();
        seen.tls_version = conn.protocol_version().map(|v| format!("{v:?}"));
        seen.cipher = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite()));
        seen.resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        seen.sni = conn.server_name().map(str::to_string);
        seen.client_cert_sha256 =
            conn.peer_certificates().and_then(|c| c.first()).map(|c| sha256_hex(c.as_ref()));
    }
    // Read the request line, at most a little over the Gemini maximum.
    let mut buf = [0u8; 2048];
    while !seen.request.ends_with(b"\r\n") && seen.request.len() < 1100 {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        seen.request.extend_from_slice(&buf[..n]);
    }
    let (status, body) = respond(&seen.request);
    seen.status = status;
    if let Some(end) = state.stalled_until(Instant::now()) {
        tokio::time::sleep_until(end.into()).await;
    }
    let header =
        if status == 20 { "20 application/octet-stream\r\n".to_string() } else { format!("{status} no\r\n") };
    tls.write_all(header.as_bytes()).await?;
    let chunk = vec![b'x'; 16 * 1024];
    let mut left = body;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        tls.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    seen.body_bytes = body;
    // close_notify and FIN, then read until the client closes so every byte it sent is counted.
    tls.shutdown().await?;
    let mut rest = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = tls.get_mut().0.read(&mut rest).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// The status and body length for a request line.
fn respond(request: &[u8]) -> (u8, u64) {
    let Ok(text) = std::str::from_utf8(request) else { return (59, 0) };
    let Some(url) = text.strip_suffix("\r\n") else { return (59, 0) };
    let Some(rest) = url.strip_prefix("gemini://") else { return (59, 0) };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split('?').next().unwrap_or("");
    if let Some(n) = path.strip_prefix("/_bench/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        return (20, n);
    }
    if let Some(us) = path.strip_prefix("/_bench/cpu/").and_then(|n| n.parse::<u64>().ok()) {
        let end = Instant::now() + Duration::from_micros(us);
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        return (20, 0);
    }
    (51, 0)
}

/// Accepts any client certificate, checking only its handshake signature.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    fn new() -> Self {
        Self { algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TCP stream counting the bytes through the socket (received, sent).
struct Counted {
    inner: TcpStream,
    counts: Arc<(AtomicU64, AtomicU64)>,
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.counts.0.fetch_add((buf.filled().len() - before) as u64, Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            this.counts.1.fetch_add(n as u64, Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
