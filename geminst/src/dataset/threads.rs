//! threads.parquet: one row per thread of the traced process(es). Columns in docs/schema.md.

use super::Table;
use crate::trace::ThreadRow;

pub const FILE: &str = "threads.parquet";

/// The table of `rows`, each with the energy charged to it.
pub fn table(rows: &[ThreadRow], energy_j: &[f64]) -> Table {
    let mut t = Table::new();
    t.u32("tgid", rows.iter().map(|r| r.tgid))
        .u32("tid", rows.iter().map(|r| r.tid))
        .str("comm", rows.iter().map(|r| r.comm.as_str()))
        .u64("oncpu_ns", rows.iter().map(|r| r.oncpu_ns))
        .u64("voluntary_switches", rows.iter().map(|r| r.voluntary_switches))
        .u64("involuntary_switches", rows.iter().map(|r| r.involuntary_switches))
        .u64("wait_ns", rows.iter().map(|r| r.wait_ns))
        .u64("first_seen_ns", rows.iter().map(|r| r.first_seen_ns))
        .u64("last_seen_ns", rows.iter().map(|r| r.last_seen_ns))
        .bool("seen_at_start", rows.iter().map(|r| r.seen_at_start))
        .opt_u64("exit_ns", rows.iter().map(|r| r.exit_ns))
        .u64("unseen_switch_ins", rows.iter().map(|r| r.unseen_switch_ins))
        .u64("stolen_ns", rows.iter().map(|r| r.stolen_ns))
        .u64("conn_cpu_ns", rows.iter().map(|r| r.conn_cpu_ns))
        .u64("sock_send_bytes", rows.iter().map(|r| r.sock_send_bytes))
        .u64("sock_recv_bytes", rows.iter().map(|r| r.sock_recv_bytes))
        .u64("file_read_bytes", rows.iter().map(|r| r.file_read_bytes))
        .u64("file_write_bytes", rows.iter().map(|r| r.file_write_bytes))
        .u64("block_read_bytes", rows.iter().map(|r| r.block_read_bytes))
        .u64("block_write_bytes", rows.iter().map(|r| r.block_write_bytes))
        .u64("block_ios", rows.iter().map(|r| r.block_ios))
        .u64("block_io_ns", rows.iter().map(|r| r.block_io_ns))
        .f64("energy_j", energy_j.iter().copied());
    t
}
