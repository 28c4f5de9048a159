//! The energy attribution step: the machine's energy over the trace (the meter's `PowerLog`)
//! charged to each thread, connection and interval by the rule of `energy::Totals` (joules per busy
//! CPU-second of the machine times the CPU time). A request is charged its connection's energy.

use super::timeseries::TimeRow;
use crate::{
    energy::{PowerLog, Totals},
    trace::EbpfMeasurement,
};

/// The energy charged to every row of the data set, index for index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    pub totals: Option<Totals>,
    pub threads: Vec<f64>,
    pub connections: Vec<f64>,
    /// The traced processes' share of each interval's machine energy.
    pub timeseries: Vec<f64>,
}

impl Attribution {
    /// The rate over the whole trace (zero when the machine was never seen busy).
    pub fn totals(&self) -> Totals {
        self.totals.unwrap_or_else(|| Totals::new(0.0, 0))
    }
}

/// Charges `ebpf`'s threads and connections, and each time-series row, their energy.
pub fn attribute(ebpf: &EbpfMeasurement, power: &PowerLog, series: &[TimeRow]) -> Attribution {
    let totals = power.totals();
    Attribution {
        totals: Some(totals),
        threads: ebpf.threads.iter().map(|t| totals.charge(t.oncpu_ns)).collect(),
        connections: ebpf.connections.iter().map(|c| totals.charge(c.cpu_ns)).collect(),
        timeseries: series.iter().map(interval_share).collect(),
    }
}

/// The traced processes' share of an interval's machine energy, by CPU time; /proc/stat's ticks
/// are coarser than the tracer's nanoseconds, so the share is capped at the whole.
fn interval_share(row: &TimeRow) -> f64 {
    let share = if row.machine_busy_cpu_ns > 0 {
        (row.counts.cpu_ns as f64 / row.machine_busy_cpu_ns as f64).min(1.0)
    } else {
        0.0
    };
    row.machine_energy_j * share
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        energy::{CpuPowerModel, MachineInterval, PowerSourceInfo},
        trace::{ConnRow, Counts, ThreadRow},
    };

    fn power(intervals: Vec<MachineInterval>) -> PowerLog {
        PowerLog {
            source: PowerSourceInfo {
                source: "model",
                rapl_domains: None,
                rapl_unavailable: None,
                model: CpuPowerModel::new(2, 1.0, 4.0).unwrap(),
                attribution: "test",
            },
            intervals,
        }
    }

    #[test]
    fn everything_is_charged_at_the_traces_rate() {
        // 6 J over 3 busy CPU-seconds: 2 J per busy CPU-second.
        let p = power(vec![
            MachineInterval { start_ns: 0, end_ns: 10, busy_cpu_ns: 1_000_000_000, energy_j: 2.0 },
            MachineInterval { start_ns: 10, end_ns: 20, busy_cpu_ns: 2_000_000_000, energy_j: 4.0 },
        ]);
        let ebpf = EbpfMeasurement {
            threads: vec![ThreadRow { oncpu_ns: 500_000_000, ..ThreadRow::default() }],
            connections: vec![ConnRow { cpu_ns: 250_000_000, ..ConnRow::default() }],
            ..EbpfMeasurement::default()
        };
        let series = vec![
            TimeRow {
                counts: Counts { cpu_ns: 50, ..Counts::default() },
                machine_busy_cpu_ns: 100,
                machine_energy_j: 2.0,
                ..TimeRow::default()
            },
            TimeRow { machine_energy_j: 3.0, ..TimeRow::default() },
            // More traced CPU than the machine's ticks show: capped at the whole.
            TimeRow {
                counts: Counts { cpu_ns: 500, ..Counts::default() },
                machine_busy_cpu_ns: 100,
                machine_energy_j: 1.0,
                ..TimeRow::default()
            },
        ];
        let a = attribute(&ebpf, &p, &series);
        assert_eq!(a.totals().machine_energy_j, 6.0);
        assert!((a.threads[0] - 1.0).abs() < 1e-12);
        assert!((a.connections[0] - 0.5).abs() < 1e-12);
        // Half the machine's busy time was the traced processes': half its energy.
        assert!((a.timeseries[0] - 1.0).abs() < 1e-12);
        assert_eq!(a.timeseries[1], 0.0);
        assert_eq!(a.timeseries[2], 1.0);
    }
}
