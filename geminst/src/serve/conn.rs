//! One connection from accept to close: TLS handshake, request, response, close_notify, with each
//! step's time and byte counts put in its log record.
//!
//! rustls is driven directly over tokio's TcpStream rather than through tokio-rustls, to decide
//! which records share a syscall: after a TLS 1.3 handshake the session ticket waits and leaves
//! with the response and close_notify in one writev. Every socket read and write goes through
//! `ReadSock`/`WriteSock`, which count the bytes the syscalls return: those are the bytes the
//! kernel's send/recv accounting sees.

use std::{
    borrow::Cow,
    io::{self, IoSlice, Read, Write},
    os::fd::AsRawFd,
    sync::Arc,
    time::Duration,
};

use rustls::{ProtocolVersion, ServerConnection, server::ServerConfig};
use tokio::{io::Interest, net::TcpStream, time::timeout};

use super::{
    bench_routes::BLOCK,
    content::Body,
    handler::Handler,
    log::Record,
    request::{self, Framing, Invalid, MAX_REQUEST_BYTES},
    response::Response,
    tls::version_name,
};
use crate::clock;

/// TLS records begin with their content type; a client's first record is a handshake (22).
const TLS_HANDSHAKE: u8 = 0x16;
/// Body bytes read from a file or copied from the pattern per step.
const CHUNK: usize = 64 * 1024;
/// After answering a too-long request, how long and how much of the rest is read and dropped
/// before closing, so the close does not turn into a reset that could destroy the response.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 64 * 1024;

/// What every connection shares.
pub(crate) struct Shared {
    pub tls: Arc<ServerConfig>,
    pub handler: Handler,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
}

/// Why a connection ended early; the text goes to the record's `error`.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("handshake timeout")]
    HandshakeTimeout,
    #[error("request timeout")]
    RequestTimeout,
    #[error("write timeout")]
    WriteTimeout,
    #[error("not tls: first byte {0:#04x} is not a TLS handshake record")]
    NotTls(u8),
    #[error("tls: {0}")]
    Tls(rustls::Error),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("eof: the client closed the connection {0}")]
    Eof(&'static str),
}

fn now() -> (u64, u64) {
    (clock::monotonic_ns(), clock::unix_ns())
}

/// Serves one accepted connection and returns its record, complete but for the task's CPU
/// figures (added by `measure::Measured`).
pub(crate) async fn serve(tcp: TcpStream, mut rec: Record, shared: Arc<Shared>) -> Record {
    match ServerConnection::new(shared.tls.clone()) {
        Ok(tls) => {
            let mut conn = Conn { tcp, tls, read: 0, written: 0, first_byte: None, direct: true };
            let mut linger = false;
            if let Err(e) = conn.run(&shared, &mut rec, &mut linger).await {
                rec.error = Some(e.to_string());
            }
            (rec.tcp_bytes_read, rec.tcp_bytes_written) = conn.close(linger).await;
        }
        Err(e) => rec.error = Some(format!("tls: {e}")),
    }
    (rec.done_mono_ns, rec.done_unix_ns) = now();
    rec
}

struct Conn {
    tcp: TcpStream,
    tls: ServerConnection,
    /// Bytes read from and written to the socket.
    read: u64,
    written: u64,
    first_byte: Option<u8>,
    /// Read the socket without asking tokio's readiness first. True for the first read: the
    /// ClientHello is normally there already (TCP_DEFER_ACCEPT), while tokio knows nothing of a
    /// new socket until its event loop runs, which would cost a poll and an epoll_wait.
    direct: bool,
}

impl Conn {
    async fn run(&mut self, shared: &Shared, rec: &mut Record, linger: &mut bool) -> Result<(), ConnError> {
        match timeout(shared.handshake_timeout, self.handshake(shared.write_timeout)).await {
            Err(_) => return Err(ConnError::HandshakeTimeout),
            Ok(r) => r?,
        }
        let (mono, unix) = now();
        rec.handshake_mono_ns = Some(mono);
        rec.handshake_unix_ns = Some(unix);
        rec.sni = self.tls.server_name().map(str::to_owned);
        rec.tls_version = self.tls.protocol_version().map(|v| Cow::Borrowed(version_name(v)));
        rec.tls_cipher =
            self.tls.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).map(Cow::Borrowed);
        rec.tls_resumed = Some(self.tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed));

        let mut buf = [0u8; MAX_REQUEST_BYTES];
        let mut len = 0;
        let read = timeout(shared.request_timeout, self.read_request(&mut buf, &mut len)).await;
        rec.request_bytes = len as u64;
        let framing = match read {
            Ok(Ok(framing)) => framing,
            Ok(Err(e)) => {
                if matches!(e, ConnError::Eof(_)) {
                    self.close_notify(shared.write_timeout).await;
                }
                return Err(e);
            }
            Err(_) => {
                // No response to a request that never ends (a bare LF is not a CRLF), but a
                // proper TLS close.
                self.close_notify(shared.write_timeout).await;
                return Err(ConnError::RequestTimeout);
            }
        };
        let (mono, unix) = now();
        rec.request_mono_ns = Some(mono);
        rec.request_unix_ns = Some(unix);
        let response = match framing {
            Framing::Line(end) => {
                rec.request_bytes = end as u64 + 2;
                rec.url = Some(String::from_utf8_lossy(&buf[..end]).into_owned());
                shared.handler.handle(&buf[..end])
            }
            Framing::TooLong | Framing::Incomplete => {
                rec.url = Some(String::from_utf8_lossy(&buf[..len]).into_owned());
                *linger = true;
                Response::bad_request(Invalid::TooLong)
            }
        };
        let header = response.header();
        rec.status = Some(response.status.code());
        rec.meta = Some(response.meta);
        rec.error = response.error;
        rec.response_header_bytes = header.len() as u64;
        self.respond(&header, response.body, &mut rec.response_body_bytes, shared.write_timeout).await
    }

    /// Reads and writes until the handshake is done.
    async fn handshake(&mut self, write_timeout: Duration) -> Result<(), ConnError> {
        loop {
            if self.read_tls().await? == 0 {
                return Err(ConnError::Eof("during the TLS handshake"));
            }
            // A plaintext request (or any non-TLS bytes) gets no answer at all, not even an alert.
            match self.first_byte {
                Some(TLS_HANDSHAKE) | None => {}
                Some(other) => return Err(ConnError::NotTls(other)),
            }
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.flush(write_timeout).await; // the alert rustls queued
                return Err(ConnError::Tls(e));
            }
            let done = !self.tls.is_handshaking();
            // A TLS 1.3 server sends its Finished before the client's, so what is queued once the
            // handshake is done is the session ticket: it waits for the response and leaves in the
            // same write. A TLS 1.2 server's Finished comes last and must go now.
            let ticket_only = done && self.tls.protocol_version() == Some(ProtocolVersion::TLSv1_3);
            if self.tls.wants_write() && !ticket_only {
                self.flush(write_timeout).await?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Reads until the first CRLF or `MAX_REQUEST_BYTES` plaintext bytes, never more. `len` holds
    /// what was read so far, also when the caller's timeout ends this early.
    async fn read_request(
        &mut self,
        buf: &mut [u8; MAX_REQUEST_BYTES],
        len: &mut usize,
    ) -> Result<Framing, ConnError> {
        loop {
            let mut closed = false;
            while *len < buf.len() {
                match self.tls.reader().read(&mut buf[*len..]) {
                    Ok(0) => {
                        closed = true; // close_notify
                        break;
                    }
                    Ok(n) => *len += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        closed = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match request::frame(&buf[..*len]) {
                Framing::Incomplete if closed => return Err(ConnError::Eof("before the request's CRLF")),
                Framing::Incomplete => {}
                framing => return Ok(framing),
            }
            if self.read_tls().await? == 0 {
                return Err(ConnError::Eof("before the request's CRLF"));
            }
            self.tls.process_new_packets().map_err(ConnError::Tls)?;
        }
    }

    /// Sends the header and body, then close_notify (spec §4.1 "Gemini servers MUST send a TLS
    /// close_notify prior to closing the connection after sending a complete response"). Small
    /// responses go out in one write together with any pending session ticket.
    async fn respond(
        &mut self,
        header: &[u8],
        body: Body,
        body_bytes: &mut u64,
        t: Duration,
    ) -> Result<(), ConnError> {
        match body {
            Body::Empty => self.send(header, &[], t).await?,
            Body::Bytes(bytes) => {
                self.send(header, &bytes, t).await?;
                *body_bytes = bytes.len() as u64;
            }
            Body::Pattern(len) => {
                let mut head = header;
                let mut left = len;
                loop {
                    // BLOCK's length is a multiple of the pattern's, so each piece continues it.
                    let piece = &BLOCK[..left.min(BLOCK.len() as u64) as usize];
                    self.send(head, piece, t).await?;
                    *body_bytes += piece.len() as u64;
                    left -= piece.len() as u64;
                    head = &[];
                    if left == 0 {
                        break;
                    }
                }
            }
            Body::File { mut file, len } => {
                let mut chunk = vec![0u8; len.min(CHUNK as u64) as usize];
                let mut head = header;
                let mut left = len;
                loop {
                    // Blocking reads: capsule files are small and usually in the page cache.
                    let want = left.min(chunk.len() as u64) as usize;
                    let n = read_full(&mut file, &mut chunk[..want])?;
                    self.send(head, &chunk[..n], t).await?;
                    *body_bytes += n as u64;
                    left -= n as u64;
                    head = &[];
                    if left == 0 || n < want {
                        break;
                    }
                }
            }
        }
        self.tls.send_close_notify();
        self.flush_last(t).await
    }

    /// Hands `a` then `b` to rustls (as few records as rustls's buffer allows), writing to the
    /// socket only when that buffer is full; the final write is left to the caller.
    async fn send(&mut self, mut a: &[u8], mut b: &[u8], t: Duration) -> Result<(), ConnError> {
        while !a.is_empty() || !b.is_empty() {
            let n = self.tls.writer().write_vectored(&[IoSlice::new(a), IoSlice::new(b)])?;
            let from_a = n.min(a.len());
            a = &a[from_a..];
            b = &b[n - from_a..];
            if !a.is_empty() || !b.is_empty() {
                if n == 0 && !self.tls.wants_write() {
                    return Err(
                        io::Error::new(io::ErrorKind::WriteZero, "rustls accepted no plaintext").into()
                    );
                }
                self.flush(t).await?;
            }
        }
        Ok(())
    }

    /// One read from the socket into rustls, waiting for readability; 0 at end of stream.
    async fn read_tls(&mut self) -> Result<usize, ConnError> {
        loop {
            let direct = std::mem::take(&mut self.direct);
            let mut sock =
                ReadSock { tcp: &self.tcp, direct, count: &mut self.read, first: &mut self.first_byte };
            match self.tls.read_tls(&mut sock) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.readable().await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes everything rustls has queued, each wait for writability bounded by `t`.
    async fn flush(&mut self, t: Duration) -> Result<(), ConnError> {
        self.flush_with(t, false).await
    }

    /// The last flush of a connection: written with MSG_MORE, so the kernel holds a partial
    /// segment until `close` shuts the socket down and the FIN rides on it (one packet, one
    /// wake-up of the client, instead of the response and then a bare FIN).
    async fn flush_last(&mut self, t: Duration) -> Result<(), ConnError> {
        self.flush_with(t, true).await
    }

    async fn flush_with(&mut self, t: Duration, more: bool) -> Result<(), ConnError> {
        while self.tls.wants_write() {
            let mut sock = WriteSock { tcp: &self.tcp, more, count: &mut self.written };
            match self.tls.write_tls(&mut sock) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match timeout(t, self.tcp.writable()).await {
                        Err(_) => return Err(ConnError::WriteTimeout),
                        Ok(r) => r?,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A TLS close without a response (best effort).
    async fn close_notify(&mut self, t: Duration) {
        self.tls.send_close_notify();
        let _ = self.flush(t).await;
    }

    /// Shuts the socket down for writing (FIN after everything queued), optionally reads and
    /// drops what the client still sends, and closes it. Returns the socket byte counts.
    async fn close(mut self, linger: bool) -> (u64, u64) {
        // SAFETY: shutdown on a descriptor this connection owns; errors (e.g. ENOTCONN after a
        // reset) change nothing here. It also sends what MSG_MORE held back.
        unsafe { libc::shutdown(self.tcp.as_raw_fd(), libc::SHUT_WR) };
        if linger {
            let mut scratch = [0u8; 4096];
            let mut dropped = 0u64;
            let _ = timeout(LINGER_TIME, async {
                while dropped < LINGER_BYTES {
                    match self.tcp.try_read(&mut scratch) {
                        Ok(0) => break,
                        Ok(n) => {
                            self.read += n as u64;
                            dropped += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if self.tcp.readable().await.is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            })
            .await;
        }
        (self.read, self.written)
    }
}

/// Fills `buf` from `file` unless the file ends first; returns the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The socket as rustls reads it: non-blocking, counting bytes, noting the first byte.
struct ReadSock<'a> {
    tcp: &'a TcpStream,
    direct: bool,
    count: &'a mut u64,
    first: &'a mut Option<u8>,
}

impl Read for ReadSock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = if self.direct {
            // SAFETY: buf is valid for writes of buf.len() bytes; the socket is non-blocking.
            let n = unsafe { libc::recv(self.tcp.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            n as usize
        } else {
            self.tcp.try_read(buf)?
        };
        if *self.count == 0 && n > 0 {
            *self.first = Some(buf[0]);
        }
        *self.count += n as u64;
        Ok(n)
    }
}

/// The socket as rustls writes it: non-blocking, vectored, counting bytes; with `more`, by
/// sendmsg(MSG_MORE).
struct WriteSock<'a> {
    tcp: &'a TcpStream,
    more: bool,
    count: &'a mut u64,
}

impl Write for WriteSock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One path for both, so `more` holds whichever rustls calls.
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = if self.more {
            let fd = self.tcp.as_raw_fd();
            // Through try_io, so a WouldBlock clears tokio's readiness like its own writes do.
            self.tcp.try_io(Interest::WRITABLE, || {
                // SAFETY: msghdr points at `bufs` (IoSlice is ABI-compatible with iovec) for the
                // duration of the call; no address, no control data.
                let n = unsafe {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
                    libc::sendmsg(fd, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL)
                };
                if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
            })?
        } else {
            self.tcp.try_write_vectored(bufs)?
        };
        *self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
