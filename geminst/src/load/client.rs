//! One Gemini request: connect, handshake, send the request line, read the response to the
//! server's close, noting the time of each stage and the bytes at the socket.

use std::{
    io::{self, Write as _},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use rustls::{HandshakeKind, ProtocolVersion, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::watch,
};
use tokio_rustls::TlsConnector;

use super::{
    plan::TlsVersion,
    record::{ErrorKind, Record, RequestError},
};
use crate::clock;

/// Longest response header: two status digits, a space, 1024 bytes of meta, CRLF
/// (protocol specification, "Responses").
pub const MAX_HEADER_BYTES: usize = 2 + 1 + 1024 + 2;
const READ_BUFFER: usize = 16 * 1024;

/// Where one URL of a phase goes and what it sends.
#[derive(Debug)]
pub struct Target {
    /// The URL as sent.
    pub url: Arc<str>,
    /// The request: the URL and CRLF.
    pub line: Box<[u8]>,
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
}

/// What every request of a run shares.
pub struct Client {
    pub connector: TlsConnector,
    pub timeout: Duration,
    /// Turns true when in-flight requests must give up (the run was stopped).
    pub cancel: watch::Sender<bool>,
}

impl Client {
    /// Runs one request, filling `rec` with what happened; never fails: errors go in `rec`. Its
    /// start is now, unless the caller already set it (closed loop: the same reading as its
    /// scheduled time).
    pub async fn request(&self, target: &Target, rec: &mut Record) {
        rec.start_ns.get_or_insert_with(clock::monotonic_ns);
        let counts = ByteCounts::default();
        let mut cancel = self.cancel.subscribe();
        let outcome = {
            let work = exchange(&self.connector, target, rec, &counts);
            tokio::select! {
                biased;
                r = tokio::time::timeout(self.timeout, work) => r.map_err(|_| None).and_then(|r| r.map_err(Some)),
                _ = cancel.wait_for(|c| *c) => Err(Some(fail(ErrorKind::Cancelled, "the run was stopped"))),
            }
        };
        rec.tcp_bytes_sent = counts.sent.load(Relaxed);
        rec.tcp_bytes_received = counts.received.load(Relaxed);
        match outcome {
            Ok(()) => {}
            Err(Some(e)) => rec.error = Some(e),
            Err(None) => {
                let stage = if rec.connect_ns.is_none() {
                    "connecting"
                } else if rec.handshake_ns.is_none() {
                    "in the TLS handshake"
                } else if rec.first_byte_ns.is_none() {
                    "waiting for the response"
                } else {
                    "reading the response"
                };
                let message = format!(
                    "not done {:.3} s after the start: timed out {stage}",
                    self.timeout.as_secs_f64()
                );
                rec.error = Some(fail(ErrorKind::Timeout, message));
            }
        }
    }
}

fn fail(kind: ErrorKind, message: impl Into<String>) -> RequestError {
    RequestError { kind, message: message.into() }
}

async fn exchange(
    connector: &TlsConnector,
    target: &Target,
    rec: &mut Record,
    counts: &ByteCounts,
) -> Result<(), RequestError> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| fail(ErrorKind::Connect, format!("connecting to {}: {e}", target.addr)))?;
    rec.connect_ns = Some(clock::monotonic_ns());
    rec.local_addr = stream.local_addr().ok();
    // The request follows the handshake's last flight at once rather than waiting for its ACK.
    let _ = stream.set_nodelay(true);

    // The request is handed to rustls before the handshake, which holds it until the handshake
    // is done and then sends it at once: in TLS 1.3 in the same write, and the same segment, as
    // the client's Finished. That saves a send and a wake-up on both sides; the bytes are the
    // same as writing it afterwards, and nothing is sent early (no 0-RTT).
    let mut tls = connector
        .connect_with(target.server_name.clone(), Counted { inner: stream, counts }, |conn| {
            // Cannot fail: the buffer for data written before the handshake holds 64 KiB.
            let _ = conn.writer().write_all(&target.line);
        })
        .await
        .map_err(|e| fail(ErrorKind::Tls, format!("TLS handshake: {e}")))?;
    rec.handshake_ns = Some(clock::monotonic_ns());
    let (_, conn) = tls.get_ref();
    rec.tls_version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => Some(TlsVersion::Tls13),
        Some(ProtocolVersion::TLSv1_2) => Some(TlsVersion::Tls12),
        _ => None,
    };
    rec.tls_cipher = conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str());
    rec.tls_resumed = Some(conn.handshake_kind() == Some(HandshakeKind::Resumed));

    let io_err = |what: &str, e: io::Error| fail(ErrorKind::Io, format!("{what}: {e}"));
    tls.flush().await.map_err(|e| io_err("sending the request", e))?;
    rec.request_bytes = target.line.len() as u64;

    let mut buf = vec![0u8; READ_BUFFER];
    let mut header = Header::default();
    loop {
        let n = match tls.read(&mut buf).await {
            Ok(0) => {
                rec.close_notify = Some(true);
                break;
            }
            Ok(n) => n,
            // A TCP close without close_notify; the body may be cut short, which Gemini gives
            // no length to detect, so it is recorded rather than failed.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && header.done() => {
                rec.close_notify = Some(false);
                break;
            }
            Err(e) => return Err(io_err("reading the response", e)),
        };
        if rec.first_byte_ns.is_none() {
            rec.first_byte_ns = Some(clock::monotonic_ns());
        }
        let body = header.feed(&buf[..n]).map_err(|e| fail(ErrorKind::Protocol, e))?;
        rec.response_body_bytes += body as u64;
    }
    rec.done_ns = Some(clock::monotonic_ns());
    rec.response_header_bytes = header.bytes.len() as u64;
    let (status, meta) = header.parsed.ok_or_else(|| {
        fail(
            ErrorKind::Protocol,
            format!(
                "the server closed the connection after {} bytes, before the end of the header",
                header.bytes.len()
            ),
        )
    })?;
    rec.status = Some(status);
    rec.meta = Some(meta);
    Ok(())
}

/// The response header, accumulated until its LF.
#[derive(Default)]
struct Header {
    bytes: Vec<u8>,
    parsed: Option<(u8, String)>,
}

impl Header {
    fn done(&self) -> bool {
        self.parsed.is_some()
    }

    /// Takes the next bytes of the response; returns how many of them are body.
    fn feed(&mut self, data: &[u8]) -> Result<usize, String> {
        if self.done() {
            return Ok(data.len());
        }
        match data.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.bytes.extend_from_slice(&data[..=i]);
                if self.bytes.len() > MAX_HEADER_BYTES {
                    return Err(format!(
                        "response header of {} bytes, over {MAX_HEADER_BYTES}",
                        self.bytes.len()
                    ));
                }
                self.parsed = Some(parse_header(&self.bytes)?);
                Ok(data.len() - i - 1)
            }
            None => {
                self.bytes.extend_from_slice(data);
                if self.bytes.len() > MAX_HEADER_BYTES {
                    return Err(format!("no end of the response header within {MAX_HEADER_BYTES} bytes"));
                }
                Ok(0)
            }
        }
    }
}

/// Parses `<STATUS><SPACE><META>CRLF` (the space and meta may be absent for some statuses).
fn parse_header(line: &[u8]) -> Result<(u8, String), String> {
    let shown = || String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
    let Some(body) = line.strip_suffix(b"\r\n") else {
        return Err(format!("response header {:?} does not end with CRLF", shown()));
    };
    let status = match body {
        [a @ b'1'..=b'6', b @ b'0'..=b'9', ..] => (a - b'0') * 10 + (b - b'0'),
        _ => return Err(format!("response header {:?} does not start with a two-digit status", shown())),
    };
    let meta = match &body[2..] {
        [] => "",
        [b' ', meta @ ..] => {
            std::str::from_utf8(meta).map_err(|_| format!("response meta {:?} is not UTF-8", shown()))?
        }
        _ => return Err(format!("response header {:?}: no space after the status", shown())),
    };
    Ok((status, meta.to_string()))
}

/// Bytes passed through the socket, read after the connection is gone (on a timeout the stream
/// is dropped with the future that owned it).
#[derive(Default)]
struct ByteCounts {
    sent: AtomicU64,
    received: AtomicU64,
}

/// A TCP stream that counts the bytes of every read and write: TLS records, as the kernel
/// socket sees them (not the IP and TCP headers; those are the capture's).
struct Counted<'a> {
    inner: TcpStream,
    counts: &'a ByteCounts,
}

impl AsyncRead for Counted<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.counts.received.fetch_add((buf.filled().len() - before) as u64, Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            this.counts.sent.fetch_add(n as u64, Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.counts.sent.fetch_add(n as u64, Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_status_and_meta() {
        assert_eq!(parse_header(b"20 text/gemini\r\n").unwrap(), (20, "text/gemini".into()));
        assert_eq!(parse_header(b"51 Not found\r\n").unwrap(), (51, "Not found".into()));
        assert_eq!(parse_header(b"20\r\n").unwrap(), (20, String::new()));
        assert_eq!(parse_header(b"20 \r\n").unwrap(), (20, String::new()));
        for bad in [&b"20 text\n"[..], b"2 x\r\n", b"70 x\r\n", b"20x\r\n", b"HTTP/1.1 200 OK\r\n"] {
            assert!(parse_header(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn header_split_across_reads_and_body_counted() {
        let mut h = Header::default();
        assert_eq!(h.feed(b"2").unwrap(), 0);
        assert_eq!(h.feed(b"0 text/plain\r").unwrap(), 0);
        assert_eq!(h.feed(b"\nhello").unwrap(), 5);
        assert_eq!(h.feed(b" world").unwrap(), 6);
        assert_eq!(h.parsed, Some((20, "text/plain".into())));
        assert_eq!(h.bytes.len(), 15);
    }

    #[test]
    fn endless_headers_are_refused() {
        let mut h = Header::default();
        let err = (0..10).map(|_| h.feed(&[b'a'; 200])).find_map(Result::err).unwrap();
        assert!(err.contains("1029"), "{err}");
    }
}
