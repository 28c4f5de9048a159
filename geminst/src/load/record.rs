//! What the client saw of one request, and the Parquet table of them (`--out`; columns in
//! docs/load-profiles.md).

use std::{fmt, net::SocketAddr, path::Path, sync::Arc};

use anyhow::Result;

use super::plan::TlsVersion;
use crate::dataset::Table;

/// The stage at which a request failed. Statuses (4x, 5x, 6x) are not errors here: the
/// exchange worked and the status says what the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// Due while `max_in_flight` requests were outstanding: never started. Counted, not delayed,
    /// so an overloaded run cannot pass for a slower schedule.
    Overload,
    /// The TCP connection failed (refused, unreachable, reset).
    Connect,
    /// The TLS handshake failed (a pinned fingerprint that did not match, a bad signature,
    /// an alert, a reset during the handshake).
    Tls,
    /// Writing the request or reading the response failed after the handshake.
    Io,
    /// The response was not Gemini: no header line, or a malformed one.
    Protocol,
    /// The request had not finished `timeout` after its start.
    Timeout,
    /// The run was stopped (Ctrl-C) while the request was in flight.
    Cancelled,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overload => "overload",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Io => "io",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

/// One request (one connection: Gemini sends one request per connection). Times are
/// CLOCK_MONOTONIC ns, the clock of the server's log and of the eBPF tracer; `None` where the
/// request never got that far.
#[derive(Debug, Clone)]
pub struct Record {
    /// Number of the request in the run, in scheduled order for open-loop phases.
    pub seq: u64,
    /// Index of the phase in the plan.
    pub phase: usize,
    /// The URL as sent, padding included.
    pub url: Arc<str>,
    /// When the request was due: its place in the open-loop schedule, or its start in a closed
    /// loop (where there is no schedule to fall behind).
    pub scheduled_ns: u64,
    pub start_ns: Option<u64>,
    /// TCP connection established.
    pub connect_ns: Option<u64>,
    /// TLS handshake complete.
    pub handshake_ns: Option<u64>,
    /// First byte of the response (the header's first byte, decrypted).
    pub first_byte_ns: Option<u64>,
    /// The server closed the connection after the response.
    pub done_ns: Option<u64>,
    pub status: Option<u8>,
    pub meta: Option<String>,
    /// Bytes of the request written (URL and CRLF), before TLS.
    pub request_bytes: u64,
    /// Bytes of the response header line, CRLF included, after TLS.
    pub response_header_bytes: u64,
    /// Bytes of the response body, after TLS.
    pub response_body_bytes: u64,
    /// Bytes written to / read from the TCP socket: TLS records, handshake included.
    pub tcp_bytes_sent: u64,
    pub tcp_bytes_received: u64,
    pub tls_version: Option<TlsVersion>,
    /// The negotiated cipher suite, as IANA names it (e.g. `TLS13_AES_128_GCM_SHA256`).
    pub tls_cipher: Option<&'static str>,
    pub tls_resumed: Option<bool>,
    /// Whether the server ended the response with a TLS close_notify (false: a bare TCP close,
    /// which cannot be told apart from a truncated body).
    pub close_notify: Option<bool>,
    pub local_addr: Option<SocketAddr>,
    pub peer_addr: SocketAddr,
    pub error: Option<RequestError>,
}

impl Record {
    pub fn new(seq: u64, phase: usize, url: Arc<str>, scheduled_ns: u64, peer_addr: SocketAddr) -> Self {
        Self {
            seq,
            phase,
            url,
            scheduled_ns,
            start_ns: None,
            connect_ns: None,
            handshake_ns: None,
            first_byte_ns: None,
            done_ns: None,
            status: None,
            meta: None,
            request_bytes: 0,
            response_header_bytes: 0,
            response_body_bytes: 0,
            tcp_bytes_sent: 0,
            tcp_bytes_received: 0,
            tls_version: None,
            tls_cipher: None,
            tls_resumed: None,
            close_notify: None,
            local_addr: None,
            peer_addr,
            error: None,
        }
    }

    /// From the scheduled start to the last byte: the latency a user arriving on schedule saw.
    pub fn latency_ns(&self) -> Option<u64> {
        self.done_ns.map(|d| d.saturating_sub(self.scheduled_ns))
    }

    /// How late the request started against its schedule.
    pub fn start_lag_ns(&self) -> Option<u64> {
        self.start_ns.map(|s| s.saturating_sub(self.scheduled_ns))
    }

    /// A response arrived (whatever its status) and no transport error happened.
    pub fn completed(&self) -> bool {
        self.error.is_none() && self.status.is_some()
    }

    /// Completed with a 2x (success) or 3x (redirect) status: the server served the request.
    /// 1x (input wanted), 4x, 5x and 6x mean it did not.
    pub fn ok(&self) -> bool {
        self.completed() && self.status.is_some_and(|s| (20..40).contains(&s))
    }

    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error.as_ref().map(|e| e.kind)
    }
}

/// Writes one row per record to `path` (atomically), with `phases` naming the phase indexes.
pub fn write_parquet(records: &[Record], phases: &[String], path: &Path) -> Result<()> {
    let mut t = Table::new();
    t.u64("seq", records.iter().map(|r| r.seq))
        .str("phase", records.iter().map(|r| phases.get(r.phase).map_or("", String::as_str)))
        .str("url", records.iter().map(|r| &*r.url))
        .u64("scheduled_ns", records.iter().map(|r| r.scheduled_ns))
        .opt_u64("start_ns", records.iter().map(|r| r.start_ns))
        .opt_u64("connect_ns", records.iter().map(|r| r.connect_ns))
        .opt_u64("handshake_ns", records.iter().map(|r| r.handshake_ns))
        .opt_u64("first_byte_ns", records.iter().map(|r| r.first_byte_ns))
        .opt_u64("done_ns", records.iter().map(|r| r.done_ns))
        .opt_u64("latency_ns", records.iter().map(Record::latency_ns))
        .opt_u64("start_lag_ns", records.iter().map(Record::start_lag_ns))
        // The table builder has no 8-bit column: the two-digit status goes in a UInt32.
        .opt_u32("status", records.iter().map(|r| r.status.map(u32::from)))
        .opt_str("meta", records.iter().map(|r| r.meta.as_deref()))
        .u64("request_bytes", records.iter().map(|r| r.request_bytes))
        .u64("response_header_bytes", records.iter().map(|r| r.response_header_bytes))
        .u64("response_body_bytes", records.iter().map(|r| r.response_body_bytes))
        .u64("tcp_bytes_sent", records.iter().map(|r| r.tcp_bytes_sent))
        .u64("tcp_bytes_received", records.iter().map(|r| r.tcp_bytes_received))
        .opt_str("tls_version", records.iter().map(|r| r.tls_version.map(TlsVersion::as_str)))
        .opt_str("tls_cipher", records.iter().map(|r| r.tls_cipher))
        // Booleans are false where the stage was not reached (the table builder has no nullable
        // boolean); handshake_ns and done_ns, null there, tell the cases apart.
        .opt_bool("tls_resumed", records.iter().map(|r| r.tls_resumed))
        .opt_bool("tls_close_notify", records.iter().map(|r| r.close_notify))
        .opt_str("local_addr", records.iter().map(|r| r.local_addr.map(|a| a.to_string())))
        .str("peer_addr", records.iter().map(|r| r.peer_addr.to_string()))
        .opt_str("error_kind", records.iter().map(|r| r.error_kind().map(ErrorKind::as_str)))
        .opt_str("error", records.iter().map(|r| r.error.as_ref().map(|e| e.message.as_str())));
    t.write(path)
}
