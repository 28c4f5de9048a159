//! Reading the built-in server's request log (one JSON object per connection; the format is in
//! docs/request-log.md). The tracer never depends on the server: this is the log's format, read
//! on its own.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
};

use anyhow::{Context, Result};
use serde::Deserialize;

/// One connection as the server logged it. Times are CLOCK_MONOTONIC (`_mono_ns`) or Unix ns.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LogRecord {
    pub req_id: u64,
    pub peer_addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub accept_mono_ns: u64,
    pub accept_unix_ns: u64,
    pub handshake_mono_ns: Option<u64>,
    pub request_mono_ns: Option<u64>,
    pub done_mono_ns: u64,
    pub sni: Option<String>,
    pub url: Option<String>,
    pub status: Option<u8>,
    pub meta: Option<String>,
    pub request_bytes: u64,
    pub response_header_bytes: u64,
    pub response_body_bytes: u64,
    pub tcp_bytes_read: u64,
    pub tcp_bytes_written: u64,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub tls_resumed: Option<bool>,
    pub tids: Vec<u32>,
    pub cpu_ns: u64,
    pub polls: u32,
    pub error: Option<String>,
}

/// A log read as far as it could be: the records, and what was wrong with the lines that could
/// not be read (a truncated last line is normal for a server that was killed).
#[derive(Debug, Default)]
pub struct ServerLog {
    pub records: Vec<LogRecord>,
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
        match serde_json::from_str::<LogRecord>(&line) {
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
