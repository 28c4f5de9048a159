//! timeseries.parquet: one row per interval of the trace. Columns in docs/schema.md.

use std::path::Path;

use anyhow::Result;

use super::Table;

/// What the traced processes did in one interval [start_ns, end_ns) (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeRow {
    pub start_ns: u64,
    pub end_ns: u64,
    pub cpu_ns: u64,
    pub sock_send_bytes: u64,
    pub sock_recv_bytes: u64,
    pub file_read_bytes: u64,
    pub file_write_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Machine-wide asynchronous writeback queued in the interval (not attributable).
    pub writeback_bytes: u64,
    pub connections_closed: u64,
    /// Requests the server's log says completed in the interval (None without a log).
    pub requests_done: Option<u64>,
    /// Resident memory of the traced processes at the end of the interval.
    pub rss_bytes: Option<u64>,
    /// Busy CPU time of the whole machine (all CPUs, /proc/stat).
    pub machine_busy_cpu_ns: u64,
    /// The machine's energy in the interval (RAPL, or the model) and its mean power.
    pub machine_energy_j: f64,
    pub power_w: f64,
    /// The traced processes' share: machine energy × their CPU time / the machine's busy time.
    pub energy_j: f64,
    /// Frames the packet capture counted on the server port, and their bytes (None: no capture).
    pub wire_packets: Option<u64>,
    pub wire_frame_bytes: Option<u64>,
}

pub const FILE: &str = "timeseries.parquet";

pub fn write(dir: &Path, rows: &[TimeRow]) -> Result<()> {
    let mut t = Table::new();
    t.u64("start_ns", rows.iter().map(|r| r.start_ns))
        .u64("end_ns", rows.iter().map(|r| r.end_ns))
        .u64("cpu_ns", rows.iter().map(|r| r.cpu_ns))
        .u64("sock_send_bytes", rows.iter().map(|r| r.sock_send_bytes))
        .u64("sock_recv_bytes", rows.iter().map(|r| r.sock_recv_bytes))
        .u64("file_read_bytes", rows.iter().map(|r| r.file_read_bytes))
        .u64("file_write_bytes", rows.iter().map(|r| r.file_write_bytes))
        .u64("block_read_bytes", rows.iter().map(|r| r.block_read_bytes))
        .u64("block_write_bytes", rows.iter().map(|r| r.block_write_bytes))
        .u64("writeback_bytes", rows.iter().map(|r| r.writeback_bytes))
        .u64("connections_closed", rows.iter().map(|r| r.connections_closed))
        .opt_u64("requests_done", rows.iter().map(|r| r.requests_done))
        .opt_u64("rss_bytes", rows.iter().map(|r| r.rss_bytes))
        .u64("machine_busy_cpu_ns", rows.iter().map(|r| r.machine_busy_cpu_ns))
        .f64("machine_energy_j", rows.iter().map(|r| r.machine_energy_j))
        .f64("power_w", rows.iter().map(|r| r.power_w))
        .f64("energy_j", rows.iter().map(|r| r.energy_j))
        .opt_u64("wire_packets", rows.iter().map(|r| r.wire_packets))
        .opt_u64("wire_frame_bytes", rows.iter().map(|r| r.wire_frame_bytes));
    t.write(&dir.join(FILE))
}
