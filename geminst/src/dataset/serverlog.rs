//! The built-in server's request log (one JSON object per connection; docs/request-log.md): the
//! one definition of its format, which the server writes and the join reads. The server and the
//! tracer meet here and nowhere else.

use std::{
    borrow::Cow,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One line of the request log: one TCP connection the server accepted. Times are ns, `_mono_`
/// on CLOCK_MONOTONIC (the clock of bpf_ktime_get_ns), `_unix_` on CLOCK_REALTIME; fields the
/// connection never reached are null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3... in order of accept, unique within one server run.
    pub req_id: u64,
    pub peer_addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub accept_mono_ns: u64,
    pub accept_unix_ns: u64,
    pub handshake_mono_ns: Option<u64>,
    pub handshake_unix_ns: Option<u64>,
    pub request_mono_ns: Option<u64>,
    pub request_unix_ns: Option<u64>,
    /// Response written, close_notify sent and the socket shut down and closed, or the connection
    /// abandoned.
    pub done_mono_ns: u64,
    pub done_unix_ns: u64,
    pub sni: Option<String>,
    /// The request URI as received (lossily decoded if not UTF-8).
    pub url: Option<String>,
    pub status: Option<u8>,
    pub meta: Option<String>,
    /// Request bytes read, including the CRLF.
    pub request_bytes: u64,
    pub response_header_bytes: u64,
    pub response_body_bytes: u64,
    /// Bytes read from and written to the TCP socket: TLS records, counted at the syscalls.
    pub tcp_bytes_read: u64,
    pub tcp_bytes_written: u64,
    pub tls_version: Option<Cow<'static, str>>,
    pub tls_cipher: Option<Cow<'static, str>>,
    pub tls_resumed: Option<bool>,
    /// Every thread (gettid) that polled the connection's task.
    pub tids: Vec<u32>,
    /// Sum over the task's polls of CLOCK_THREAD_CPUTIME_ID after minus before.
    pub cpu_ns: u64,
    pub polls: u32,
    pub error: Option<String>,
}

impl Record {
    /// A record for a connection just accepted; the rest is filled in as it goes.
    pub fn accepted(
        req_id: u64,
        peer_addr: SocketAddr,
        local_addr: SocketAddr,
        mono_ns: u64,
        unix_ns: u64,
    ) -> Self {
        Self {
            req_id,
            peer_addr,
            local_addr,
            accept_mono_ns: mono_ns,
            accept_unix_ns: unix_ns,
            handshake_mono_ns: None,
            handshake_unix_ns: None,
            request_mono_ns: None,
            request_unix_ns: None,
            done_mono_ns: 0,
            done_unix_ns: 0,
            sni: None,
            url: None,
            status: None,
            meta: None,
            request_bytes: 0,
            response_header_bytes: 0,
            response_body_bytes: 0,
            tcp_bytes_read: 0,
            tcp_bytes_written: 0,
            tls_version: None,
            tls_cipher: None,
            tls_resumed: None,
            tids: Vec::new(),
            cpu_ns: 0,
            polls: 0,
            error: None,
        }
    }
}

/// A log read as far as it could be: the records, and what was wrong with the lines that could
/// not be read (a truncated last line is normal for a server that was killed).
#[derive(Debug, Default)]
pub struct ServerLog {
    pub records: Vec<Record>,
    /// (line number, why), for each line skipped.
    pub skipped: Vec<(usize, String)>,
}

/// Reads a log; an unreadable file is an error, malformed lines are skipped and reported.
pub fn read(path: &Path) -> Result<ServerLog> {
    let file =
        std::fs::File::open(path).with_context(|| format!("opening the server log {}", path.display()))?;
    let mut log = ServerLog::default();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {} line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => log.records.push(r),
            Err(e) => log.skipped.push((i + 1, e.to_string())),
        }
    }
    Ok(log)
}

/// An address as the tracer prints it: IPv4-mapped IPv6 addresses (a dual-stack listener's IPv4
/// peers) as plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// A well-formed log line, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn tests_line() -> &'static str {
    tests::LINE
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const LINE: &str = r#"{"req_id":3,"peer_addr":"127.0.0.1:50000","local_addr":"127.0.0.1:1965","accept_mono_ns":100,"accept_unix_ns":1795316304410156974,"handshake_mono_ns":200,"handshake_unix_ns":1795316304410157074,"request_mono_ns":300,"request_unix_ns":1795316304410157174,"done_mono_ns":400,"done_unix_ns":1795316304410157274,"sni":"localhost","url":"gemini://localhost/","status":20,"meta":"text/gemini","request_bytes":22,"response_header_bytes":15,"response_body_bytes":1024,"tcp_bytes_read":600,"tcp_bytes_written":2400,"tls_version":"TLSv1.3","tls_cipher":"TLS13_AES_256_GCM_SHA384","tls_resumed":false,"tids":[11,12],"cpu_ns":84000,"polls":4,"error":null}"#;

    #[test]
    fn reads_records_and_skips_bad_lines_with_their_numbers() {
        let dir = std::env::temp_dir().join(format!("geminst-serverlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.jsonl");
        let truncated = &LINE[..LINE.len() / 2];
        std::fs::write(&path, format!("{LINE}\n\nnot json\n{LINE}\n{truncated}")).unwrap();
        let log = read(&path).unwrap();
        assert_eq!(log.records.len(), 2);
        assert_eq!(log.records[0].req_id, 3);
        assert_eq!(log.records[0].tids, vec![11, 12]);
        assert_eq!(log.skipped.iter().map(|s| s.0).collect::<Vec<_>>(), vec![3, 5]);
        assert!(read(&dir.join("missing.jsonl")).unwrap_err().to_string().contains("missing.jsonl"));
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(canonical(a).to_string(), "127.0.0.1:5");
        let b: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(canonical(b).to_string(), "[::1]:5");
    }
}
