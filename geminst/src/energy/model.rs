//! The stated power model, for machines without RAPL (virtual machines, most ARM servers).
//!
//! Power is linear in CPU utilisation, per CPU: P = cpus × (idle + (busy − idle) × utilisation).
//! Over an interval of length T in which the CPUs were busy B CPU-seconds in all, the energy is
//! cpus × idle × T + (busy − idle) × B. This is the compute model of the Cloud Carbon Footprint
//! methodology; its defaults are that methodology's averages for AWS: 0.74 W per vCPU idle and
//! 3.5 W per vCPU fully busy. They are estimates, not measurements, and are recorded in run.json.

use anyhow::{Result, bail};
use serde::Serialize;

pub const DEFAULT_IDLE_W: f64 = 0.74;
pub const DEFAULT_BUSY_W: f64 = 3.5;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuPowerModel {
    pub cpus: usize,
    pub idle_w_per_cpu: f64,
    pub busy_w_per_cpu: f64,
}

impl CpuPowerModel {
    pub fn new(cpus: usize, idle_w_per_cpu: f64, busy_w_per_cpu: f64) -> Result<Self> {
        if !(idle_w_per_cpu >= 0.0 && busy_w_per_cpu >= idle_w_per_cpu && busy_w_per_cpu.is_finite()) {
            bail!(crate::exit::BadInput(format!(
                "the power model needs 0 <= idle watts <= busy watts, not idle {idle_w_per_cpu} and busy {busy_w_per_cpu}"
            )));
        }
        Ok(Self { cpus: cpus.max(1), idle_w_per_cpu, busy_w_per_cpu })
    }

    /// Joules over `interval_ns` in which the CPUs were busy `busy_cpu_ns` in all.
    pub fn joules(&self, interval_ns: u64, busy_cpu_ns: u64) -> f64 {
        // Busy time cannot exceed what the CPUs had; /proc/stat's ticks can overshoot a little.
        let busy = (busy_cpu_ns as f64).min(interval_ns as f64 * self.cpus as f64);
        (self.cpus as f64 * self.idle_w_per_cpu * interval_ns as f64
            + (self.busy_w_per_cpu - self.idle_w_per_cpu) * busy)
            / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_is_idle_floor_plus_busy_slope() {
        let m = CpuPowerModel::new(2, 1.0, 4.0).unwrap();
        // 1 s, idle: 2 CPUs × 1 W.
        assert!((m.joules(1_000_000_000, 0) - 2.0).abs() < 1e-9);
        // 1 s, one CPU busy: 2 W + 3 W.
        assert!((m.joules(1_000_000_000, 1_000_000_000) - 5.0).abs() < 1e-9);
        // Both busy: 2 × 4 W; more busy time than exists is capped.
        assert!((m.joules(1_000_000_000, 5_000_000_000) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn impossible_models_are_bad_input() {
        let e = CpuPowerModel::new(2, 5.0, 1.0).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        assert!(CpuPowerModel::new(2, -1.0, 1.0).is_err());
        assert!(CpuPowerModel::new(2, 1.0, f64::NAN).is_err());
    }
}
