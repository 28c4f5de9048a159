//! The time series: cumulative totals sampled at a fixed interval, differenced into rows.

use std::time::Duration;

use crate::{
    capture::WireTotals,
    dataset::{
        threads::ThreadRow,
        timeseries::{Counts, TimeRow},
    },
};

/// The traced processes' cumulative counters from their threads' rows; `writeback_bytes` and
/// `connections_closed` come from elsewhere.
pub fn totals_of_threads(threads: &[ThreadRow], writeback_bytes: u64, connections_closed: u64) -> Counts {
    let sum = |f: fn(&ThreadRow) -> u64| threads.iter().map(f).sum();
    Counts {
        cpu_ns: sum(|t| t.oncpu_ns),
        sock_send_bytes: sum(|t| t.sock_send_bytes),
        sock_recv_bytes: sum(|t| t.sock_recv_bytes),
        file_read_bytes: sum(|t| t.file_read_bytes),
        file_write_bytes: sum(|t| t.file_write_bytes),
        block_read_bytes: sum(|t| t.block_read_bytes),
        block_write_bytes: sum(|t| t.block_write_bytes),
        writeback_bytes,
        connections_closed,
    }
}

/// What the whole machine did in an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Machine {
    pub busy_cpu_ns: u64,
    pub energy_j: f64,
}

pub struct Sampler {
    interval_ns: u64,
    last_ns: u64,
    last: Counts,
    last_wire: WireTotals,
    rows: Vec<TimeRow>,
}

impl Sampler {
    /// Starts at `start_ns` with the totals then (the counters of threads that existed before
    /// the trace start at zero, so `Counts::default()` is right at the start).
    pub fn new(start_ns: u64, interval: Duration) -> Self {
        Self {
            interval_ns: interval.as_nanos().max(1) as u64,
            last_ns: start_ns,
            last: Counts::default(),
            last_wire: WireTotals::default(),
            rows: Vec::new(),
        }
    }

    /// When the next sample is due.
    pub fn next_ns(&self) -> u64 {
        self.last_ns + self.interval_ns
    }

    /// Adds the row for [last sample, now): the traced processes' totals now, and the machine's
    /// busy CPU time and energy since the last sample.
    pub fn sample(
        &mut self,
        now_ns: u64,
        totals: Counts,
        rss_bytes: Option<u64>,
        machine: Machine,
        wire: Option<WireTotals>,
    ) {
        let counts = totals.since(self.last);
        // The traced processes' share of the machine's energy, by CPU time; /proc/stat's ticks are
        // coarser than the tracer's nanoseconds, so the share is capped at the whole.
        let share = if machine.busy_cpu_ns > 0 {
            (counts.cpu_ns as f64 / machine.busy_cpu_ns as f64).min(1.0)
        } else {
            0.0
        };
        let seconds = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.rows.push(TimeRow {
            start_ns: self.last_ns,
            end_ns: now_ns,
            counts,
            requests_done: None,
            rss_bytes,
            machine_busy_cpu_ns: machine.busy_cpu_ns,
            machine_energy_j: machine.energy_j,
            power_w: if seconds > 0.0 { machine.energy_j / seconds } else { 0.0 },
            energy_j: machine.energy_j * share,
            wire_packets: wire.map(|w| w.packets.saturating_sub(self.last_wire.packets)),
            wire_frame_bytes: wire.map(|w| w.frame_bytes.saturating_sub(self.last_wire.frame_bytes)),
        });
        if let Some(w) = wire {
            self.last_wire = w;
        }
        self.last = totals;
        self.last_ns = now_ns;
    }

    pub fn into_rows(self) -> Vec<TimeRow> {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_differences_and_tile_the_trace() {
        let mut s = Sampler::new(1_000, Duration::from_nanos(100));
        assert_eq!(s.next_ns(), 1_100);
        let m = Machine { busy_cpu_ns: 100, energy_j: 2.0 };
        let w = WireTotals { packets: 7, frame_bytes: 700 };
        s.sample(
            1_100,
            Counts { cpu_ns: 50, sock_send_bytes: 10, ..Counts::default() },
            Some(4096),
            m,
            Some(w),
        );
        let t = Counts { cpu_ns: 80, sock_send_bytes: 10, connections_closed: 2, ..Counts::default() };
        let w = WireTotals { packets: 9, frame_bytes: 1000 };
        s.sample(1_200, t, None, Machine::default(), Some(w));
        let rows = s.into_rows();
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
        // Half the machine's busy time was the traced processes': half its energy.
        assert!((rows[0].energy_j - 1.0).abs() < 1e-12);
        assert!((rows[0].power_w - 2.0e7).abs() < 1e-3, "2 J in 100 ns");
        assert_eq!(rows[1].energy_j, 0.0);
        assert_eq!((rows[0].wire_packets, rows[1].wire_packets), (Some(7), Some(2)));
        assert_eq!(rows[1].wire_frame_bytes, Some(300));
    }
}
