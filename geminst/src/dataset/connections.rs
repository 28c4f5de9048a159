//! connections.parquet: one row per TCP connection seen by the tracer and, beside it, the packet
//! capture's counts for the same connection; then the connections only the capture saw. Columns in
//! docs/schema.md.

use super::Table;
use crate::trace::ConnRow;

pub const FILE: &str = "connections.parquet";

/// Adds the tracer's columns to `t`, one row per entry of `rows` with its energy; None (a
/// connection only the packet capture saw) is null in every column.
pub fn columns(t: &mut Table, rows: &[Option<&ConnRow>], energy_j: &[Option<f64>]) {
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
        .opt_f64("energy_j", energy_j.iter().copied());
}
