//! threads.parquet: one row per thread of the traced process(es). Columns in docs/schema.md.

use std::path::Path;

use anyhow::Result;

use super::Table;

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
    /// Energy charged for the thread's CPU time (see energy/).
    pub energy_j: f64,
}

pub const FILE: &str = "threads.parquet";

pub fn write(dir: &Path, rows: &[ThreadRow]) -> Result<()> {
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
        .f64("energy_j", rows.iter().map(|r| r.energy_j));
    t.write(&dir.join(FILE))
}
