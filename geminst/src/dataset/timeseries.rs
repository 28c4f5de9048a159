//! timeseries.parquet: one row per interval of the trace, differenced from the sources' cumulative
//! samples and beside the machine's power over the same interval. Columns in docs/schema.md.

use super::Table;
use crate::{capture::WireTotals, energy::MachineInterval, trace::Counts};

/// The sources' cumulative totals at the end of one interval, as a session samples them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub end_ns: u64,
    /// The traced processes' counters (eBPF).
    pub counts: Counts,
    /// Resident memory of the live targets (/proc).
    pub rss_bytes: Option<u64>,
    /// Frames and bytes the capture counted so far (None without a capture).
    pub wire: Option<WireTotals>,
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
    /// Frames the packet capture counted on the server ports, and their bytes (None: no capture).
    pub wire_packets: Option<u64>,
    pub wire_frame_bytes: Option<u64>,
}

/// The rows of a trace that started at `start_ns`: each sample differenced from the one before
/// (the counters of threads that existed before the trace start at zero, so the first row is the
/// first sample itself), beside the machine's interval of the same index.
pub fn rows(start_ns: u64, samples: &[Sample], machine: &[MachineInterval]) -> Vec<TimeRow> {
    let mut last = Sample { end_ns: start_ns, ..Sample::default() };
    let mut out = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let m = machine.get(i).copied().unwrap_or_default();
        let seconds = s.end_ns.saturating_sub(last.end_ns) as f64 / 1e9;
        let grew =
            |f: fn(&WireTotals) -> u64| s.wire.map(|w| f(&w).saturating_sub(last.wire.as_ref().map_or(0, f)));
        out.push(TimeRow {
            start_ns: last.end_ns,
            end_ns: s.end_ns,
            counts: s.counts.since(last.counts),
            requests_done: None,
            rss_bytes: s.rss_bytes,
            machine_busy_cpu_ns: m.busy_cpu_ns,
            machine_energy_j: m.energy_j,
            power_w: if seconds > 0.0 { m.energy_j / seconds } else { 0.0 },
            wire_packets: grew(|w| w.packets),
            wire_frame_bytes: grew(|w| w.frame_bytes),
        });
        // A sample without the capture's totals keeps the last ones it had.
        let wire = s.wire.or(last.wire);
        last = *s;
        last.wire = wire;
    }
    out
}

pub const FILE: &str = "timeseries.parquet";

/// The table of `rows`, each with the traced processes' share of the machine's energy.
pub fn table(rows: &[TimeRow], energy_j: &[f64]) -> Table {
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
        .f64("energy_j", energy_j.iter().copied())
        .opt_u64("wire_packets", rows.iter().map(|r| r.wire_packets))
        .opt_u64("wire_frame_bytes", rows.iter().map(|r| r.wire_frame_bytes));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_differences_and_tile_the_trace() {
        let m = [
            MachineInterval { start_ns: 1_000, end_ns: 1_100, busy_cpu_ns: 100, energy_j: 2.0 },
            MachineInterval::default(),
        ];
        let samples = [
            Sample {
                end_ns: 1_100,
                counts: Counts { cpu_ns: 50, sock_send_bytes: 10, ..Counts::default() },
                rss_bytes: Some(4096),
                wire: Some(WireTotals { packets: 7, frame_bytes: 700 }),
            },
            Sample {
                end_ns: 1_200,
                counts: Counts {
                    cpu_ns: 80,
                    sock_send_bytes: 10,
                    connections_closed: 2,
                    ..Counts::default()
                },
                rss_bytes: None,
                wire: Some(WireTotals { packets: 9, frame_bytes: 1000 }),
            },
        ];
        let rows = rows(1_000, &samples, &m);
        assert_eq!(
            (rows[0].start_ns, rows[0].end_ns, rows[0].counts.cpu_ns, rows[0].counts.sock_send_bytes),
            (1_000, 1_100, 50, 10)
        );
        assert_eq!(
            (rows[1].start_ns, rows[1].end_ns, rows[1].counts.cpu_ns, rows[1].counts.sock_send_bytes),
            (1_100, 1_200, 30, 0)
        );
        assert_eq!(rows[1].counts.connections_closed, 2);
        assert_eq!(rows[0].rss_bytes, Some(4096));
        assert!((rows[0].power_w - 2.0e7).abs() < 1e-3, "2 J in 100 ns");
        assert_eq!((rows[0].wire_packets, rows[1].wire_packets), (Some(7), Some(2)));
        assert_eq!(rows[1].wire_frame_bytes, Some(300));
    }
}
