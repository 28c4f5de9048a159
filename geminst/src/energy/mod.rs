//! Energy: the machine's energy over a trace, from RAPL where the kernel exposes it and from a
//! stated model where it does not ([`Meter`]), and the rule by which it is attributed to what the
//! tracer measured ([`Totals`]; the attribution step itself is `dataset::attribution`).
//!
//! Attribution is by CPU time: in any period, the machine's energy divided by the CPU time all its
//! CPUs spent busy gives joules per busy CPU-second; a thread, connection or request is charged
//! its own CPU time at that rate. Idle power is thereby shared out in proportion to work, so the
//! charges of everything that ran add up to the machine's energy.

mod meter;
mod model;
mod procstat;
mod rapl;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

pub use meter::{MachineInterval, Meter, PowerLog, PowerSourceInfo};
pub use model::CpuPowerModel;
pub use procstat::machine_busy_ns;
pub use rapl::Rapl;

/// Where the machine's power comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerSource {
    /// RAPL if the kernel exposes it (powercap), else the model.
    Auto,
    /// RAPL only: fail if it is not there.
    Rapl,
    /// The model, even where RAPL exists.
    Model,
}

#[derive(Debug, Clone, Args)]
pub struct PowerArgs {
    /// Where the machine's energy comes from
    #[arg(long, value_enum, default_value_t = PowerSource::Auto)]
    pub power: PowerSource,
    /// Model: watts one CPU (hardware thread or vCPU) draws idle
    #[arg(long, value_name = "W", default_value_t = model::DEFAULT_IDLE_W)]
    pub idle_watts_per_cpu: f64,
    /// Model: watts one CPU draws fully busy
    #[arg(long, value_name = "W", default_value_t = model::DEFAULT_BUSY_W)]
    pub busy_watts_per_cpu: f64,
    /// powercap sysfs root to look for RAPL in (tests point it at a fake tree)
    #[arg(long, value_name = "DIR", default_value = "/sys/class/powercap", hide = true)]
    pub powercap: PathBuf,
}

impl Default for PowerArgs {
    fn default() -> Self {
        Self {
            power: PowerSource::Auto,
            idle_watts_per_cpu: model::DEFAULT_IDLE_W,
            busy_watts_per_cpu: model::DEFAULT_BUSY_W,
            powercap: PathBuf::from("/sys/class/powercap"),
        }
    }
}

/// Energy of the whole trace, and the rate at which CPU time is charged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Totals {
    pub machine_energy_j: f64,
    pub machine_busy_cpu_ns: u64,
    /// Joules per busy CPU-nanosecond (0 when the machine was never seen busy).
    pub joules_per_cpu_ns: f64,
}

impl Totals {
    /// From the machine's energy and busy CPU time over the trace (the sums of the intervals').
    pub fn new(machine_energy_j: f64, machine_busy_cpu_ns: u64) -> Self {
        let joules_per_cpu_ns =
            if machine_busy_cpu_ns > 0 { machine_energy_j / machine_busy_cpu_ns as f64 } else { 0.0 };
        Self { machine_energy_j, machine_busy_cpu_ns, joules_per_cpu_ns }
    }

    /// The energy charged for `cpu_ns` of CPU time.
    pub fn charge(&self, cpu_ns: u64) -> f64 {
        cpu_ns as f64 * self.joules_per_cpu_ns
    }
}
