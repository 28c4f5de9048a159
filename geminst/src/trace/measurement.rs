//! What the eBPF programs measured: the rows of threads and connections the kernel's records turn
//! into (`rows.rs`), the traced processes' cumulative counters, and the whole trace's result.

use std::{collections::BTreeMap, net::SocketAddr};

use super::probes::ProgramStats;

/// What the eBPF programs measured over a whole trace.
#[derive(Debug, Clone, Default)]
pub struct EbpfMeasurement {
    /// Every traced thread, by (tgid, tid), with its name at the end.
    pub threads: Vec<ThreadRow>,
    /// Closed connections first (in the order they closed), then those still open.
    pub connections: Vec<ConnRow>,
    /// Loss counters by name (`ebpf.<counter>`), zeros included.
    pub lost: BTreeMap<String, u64>,
    pub programs: Vec<ProgramStats>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// Targets that exited during the trace, with the time it was noticed.
    pub exited: Vec<(u32, u64)>,
    /// Every field offset used, by `tracepoint.field`.
    pub offsets: BTreeMap<String, u32>,
    /// Why the kernel's BTF gave no offset for the task runtime, if it did not.
    pub btf_problem: Option<String>,
    /// Machine-wide asynchronous writeback queued during the trace.
    pub writeback_bytes: u64,
    pub bpf_stats: bool,
    /// The traced processes' cumulative counters at the end (the time series' last sample).
    pub final_counts: Counts,
}

/// One thread's counters over the trace. Times are CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadRow {
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub oncpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub wait_ns: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// The thread existed when the trace started (else it was created during it).
    pub seen_at_start: bool,
    /// When the thread exited, if it did during the trace.
    pub exit_ns: Option<u64>,
    /// Slices whose switch in the kernel did not report; measured with its runtime accounting.
    pub unseen_switch_ins: u64,
    /// Wall-clock time of slices beyond the kernel's runtime for them (hypervisor steal).
    pub stolen_ns: u64,
    /// CPU time charged to connections (the rest of `oncpu_ns` was not for any connection).
    pub conn_cpu_ns: u64,
    pub sock_send_bytes: u64,
    pub sock_recv_bytes: u64,
    pub file_read_bytes: u64,
    pub file_write_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub block_ios: u64,
    pub block_io_ns: u64,
}

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

/// Counters of the traced processes: cumulative ones at a moment (the sampler's), or what they
/// grew by in an interval (a row's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub cpu_ns: u64,
    pub sock_send_bytes: u64,
    pub sock_recv_bytes: u64,
    pub file_read_bytes: u64,
    pub file_write_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Machine-wide asynchronous writeback queued (not attributable).
    pub writeback_bytes: u64,
    pub connections_closed: u64,
}

impl Counts {
    /// The growth since `earlier`, counter by counter (saturating: counters never go down, and
    /// a clock oddity must not make a huge row).
    pub fn since(self, earlier: Self) -> Self {
        let d = |now: u64, before: u64| now.saturating_sub(before);
        Self {
            cpu_ns: d(self.cpu_ns, earlier.cpu_ns),
            sock_send_bytes: d(self.sock_send_bytes, earlier.sock_send_bytes),
            sock_recv_bytes: d(self.sock_recv_bytes, earlier.sock_recv_bytes),
            file_read_bytes: d(self.file_read_bytes, earlier.file_read_bytes),
            file_write_bytes: d(self.file_write_bytes, earlier.file_write_bytes),
            block_read_bytes: d(self.block_read_bytes, earlier.block_read_bytes),
            block_write_bytes: d(self.block_write_bytes, earlier.block_write_bytes),
            writeback_bytes: d(self.writeback_bytes, earlier.writeback_bytes),
            connections_closed: d(self.connections_closed, earlier.connections_closed),
        }
    }
}
