//! timeseries.parquet: one row per interval of the trace. Columns in docs/schema.md.

use std::path::Path;

use anyhow::Result;

use super::Table;

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

/// What the traced processes did in one interval [start_ns, end_ns) (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeRow {
    pub start_ns: u64,
    pub end_ns: u64,
    pub counts: Counts,
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
    /// Frames the packet capture counted on the server ports, and their bytes (None: no capture).
    pub wire_packets: Option<u64>,
    pub wire_frame_bytes: Option<u64>,
}

pub const FILE: &str = "timeseries.parquet";

pub fn write(dir: &Path, rows: &[TimeRow]) -> Result<()> {
    let mut t = Table::new();
    t.u64("start_ns", rows.iter().map(|r| r.start_ns))
        .u64("end_ns", rows.iter().map(|r| r.end_ns))
        .u64("cpu_ns", rows.iter().map(|r| r.counts.cpu_ns))
        .u64("sock_send_bytes", rows.iter().map(|r| r.counts.sock_send_bytes))
        .u64("sock_recv_bytes", rows.iter().map(|r| r.counts.sock_recv_bytes))
        .u64("file_read_bytes", rows.iter().map(|r| r.counts.file_read_bytes))
        .u64("file_write_bytes", rows.iter().map(|r| r.counts.file_write_bytes))
        .u64("block_read_bytes", rows.iter().map(|r| r.counts.block_read_bytes))
        .u64("block_write_bytes", rows.iter().map(|r| r.counts.block_write_bytes))
        .u64("writeback_bytes", rows.iter().map(|r| r.counts.writeback_bytes))
        .u64("connections_closed", rows.iter().map(|r| r.counts.connections_closed))
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
