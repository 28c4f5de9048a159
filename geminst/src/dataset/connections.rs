//! connections.parquet: one row per TCP connection seen by the tracer (and, once joined, by the
//! packet capture). Columns in docs/schema.md.

use std::net::SocketAddr;

use super::Table;

/// One TCP connection as the eBPF programs saw it. Times are CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnRow {
    pub conn_id: u64,
    /// The traced process that did socket I/O on it (None: only its state changes were seen).
    pub tgid: Option<u32>,
    /// Local (server side for accepted connections) and remote endpoints; None when the tracer
    /// met the connection only through its data, with no state change to read the tuple from.
    pub local_ip: Option<String>,
    pub local_port: Option<u16>,
    pub remote_ip: Option<String>,
    pub remote_port: Option<u16>,
    /// Accepted by a listener (server side).
    pub passive: bool,
    pub created_ns: u64,
    pub established_ns: Option<u64>,
    pub fin_ns: Option<u64>,
    pub closed_ns: Option<u64>,
    pub first_io_ns: Option<u64>,
    pub last_io_ns: Option<u64>,
    pub sock_send_bytes: u64,
    pub sock_recv_bytes: u64,
    pub sock_sends: u64,
    pub sock_recvs: u64,
    pub retransmits: u64,
    pub cpu_ns: u64,
    pub file_read_bytes: u64,
    pub file_write_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Threads that did socket I/O on it, space-separated (the first four).
    pub tids: String,
    /// Energy charged for its CPU time (see energy/).
    pub energy_j: f64,
}

impl ConnRow {
    /// `ip:port` of the local end, as the server's log writes addresses (IPv6 in brackets).
    pub fn local_addr(&self) -> Option<String> {
        Some(socket_addr(self.local_ip.as_deref()?, self.local_port?))
    }

    pub fn remote_addr(&self) -> Option<String> {
        Some(socket_addr(self.remote_ip.as_deref()?, self.remote_port?))
    }

    /// For tests: connection `id` accepted on 127.0.0.1:1965 from 127.0.0.1:`remote_port`.
    #[cfg(test)]
    pub fn accepted_on_loopback(id: u64, remote_port: u16, created_ns: u64) -> Self {
        Self {
            conn_id: id,
            local_ip: Some("127.0.0.1".into()),
            local_port: Some(1965),
            remote_ip: Some("127.0.0.1".into()),
            remote_port: Some(remote_port),
            passive: true,
            created_ns,
            ..Self::default()
        }
    }

    /// (local, remote) socket addresses, when the tuple is known: the key the log and the capture
    /// are matched on.
    pub fn tuple(&self) -> Option<(SocketAddr, SocketAddr)> {
        let ip = |s: &Option<String>| s.as_deref()?.parse::<std::net::IpAddr>().ok();
        Some((
            SocketAddr::new(ip(&self.local_ip)?, self.local_port?),
            SocketAddr::new(ip(&self.remote_ip)?, self.remote_port?),
        ))
    }
}

/// `ip:port`, with an IPv6 address in brackets (the form std's SocketAddr prints).
pub fn socket_addr(ip: &str, port: u16) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

pub const FILE: &str = "connections.parquet";

/// Adds the tracer's columns to `t`, one row per entry of `rows`; None (a connection only the
/// packet capture saw) is null in every column.
pub fn columns(t: &mut Table, rows: &[Option<&ConnRow>]) {
    let u = |f: fn(&ConnRow) -> u64| rows.iter().map(move |r| r.map(f));
    let o = |f: fn(&ConnRow) -> Option<u64>| rows.iter().map(move |r| r.and_then(f));
    t.opt_u64("conn_id", u(|r| r.conn_id))
        .opt_u32("tgid", rows.iter().map(|r| r.and_then(|r| r.tgid)))
        .opt_str("local_ip", rows.iter().map(|r| r.and_then(|r| r.local_ip.as_deref())))
        .opt_u32("local_port", rows.iter().map(|r| r.and_then(|r| r.local_port.map(u32::from))))
        .opt_str("remote_ip", rows.iter().map(|r| r.and_then(|r| r.remote_ip.as_deref())))
        .opt_u32("remote_port", rows.iter().map(|r| r.and_then(|r| r.remote_port.map(u32::from))))
        .opt_bool("passive", rows.iter().map(|r| r.map(|r| r.passive)))
        .opt_u64("created_ns", u(|r| r.created_ns))
        .opt_u64("established_ns", o(|r| r.established_ns))
        .opt_u64("fin_ns", o(|r| r.fin_ns))
        .opt_u64("closed_ns", o(|r| r.closed_ns))
        .opt_u64("first_io_ns", o(|r| r.first_io_ns))
        .opt_u64("last_io_ns", o(|r| r.last_io_ns))
        .opt_u64("sock_send_bytes", u(|r| r.sock_send_bytes))
        .opt_u64("sock_recv_bytes", u(|r| r.sock_recv_bytes))
        .opt_u64("sock_sends", u(|r| r.sock_sends))
        .opt_u64("sock_recvs", u(|r| r.sock_recvs))
        .opt_u64("retransmits", u(|r| r.retransmits))
        .opt_u64("cpu_ns", u(|r| r.cpu_ns))
        .opt_u64("file_read_bytes", u(|r| r.file_read_bytes))
        .opt_u64("file_write_bytes", u(|r| r.file_write_bytes))
        .opt_u64("block_read_bytes", u(|r| r.block_read_bytes))
        .opt_u64("block_write_bytes", u(|r| r.block_write_bytes))
        .opt_str("tids", rows.iter().map(|r| r.map(|r| r.tids.as_str())))
        .opt_f64("energy_j", rows.iter().map(|r| r.map(|r| r.energy_j)));
}
