//! The power meter: reads the machine's busy CPU time (/proc/stat) and, where the kernel exposes
//! it, its RAPL energy, once per time-series interval, and turns each interval into joules with
//! RAPL or the stated model. Its result is the [`PowerLog`]: one [`MachineInterval`] per interval.

use anyhow::{Result, bail};
use serde::Serialize;

use super::{CpuPowerModel, PowerArgs, PowerSource, Rapl, Totals, machine_busy_ns};

/// How a trace's attribution works, recorded in run.json beside the source.
const ATTRIBUTION: &str = "joules per busy CPU-second of the machine (machine energy / machine busy CPU time, from /proc/stat) times the CPU time of the thread, connection or request";

/// One reading of the machine: cumulative busy CPU time and, with RAPL, cumulative energy.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    mono_ns: u64,
    busy_ns: u64,
    rapl_j: Option<f64>,
}

/// What the whole machine did in one interval [start_ns, end_ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineInterval {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Busy CPU time of all CPUs (/proc/stat).
    pub busy_cpu_ns: u64,
    /// The machine's energy (RAPL, or the model).
    pub energy_j: f64,
}

/// Where the energy figures came from, as run.json records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerSourceInfo {
    /// "rapl" or "model".
    pub source: &'static str,
    pub rapl_domains: Option<Vec<String>>,
    /// Why RAPL was not used, when it was not.
    pub rapl_unavailable: Option<String>,
    pub model: CpuPowerModel,
    pub attribution: &'static str,
}

/// The meter's readings over a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerLog {
    pub source: PowerSourceInfo,
    pub intervals: Vec<MachineInterval>,
}

impl PowerLog {
    /// The machine's energy and busy CPU time over the whole trace, and the rate CPU time is
    /// charged at.
    pub fn totals(&self) -> Totals {
        Totals::new(
            self.intervals.iter().map(|i| i.energy_j).sum(),
            self.intervals.iter().map(|i| i.busy_cpu_ns).sum(),
        )
    }
}

/// Reads the machine's energy.
pub struct Meter {
    rapl: Option<Rapl>,
    model: CpuPowerModel,
    /// Why RAPL is not used, when it is not.
    why_not_rapl: Option<String>,
    last: Option<Reading>,
    intervals: Vec<MachineInterval>,
}

impl Meter {
    /// Checks the model's parameters and opens RAPL if asked for or found; nothing is read yet.
    pub fn new(args: &PowerArgs, cpus: usize) -> Result<Self> {
        let model = CpuPowerModel::new(cpus, args.idle_watts_per_cpu, args.busy_watts_per_cpu)?;
        let (rapl, why_not_rapl) = match args.power {
            PowerSource::Model => (None, Some("--power model".to_string())),
            PowerSource::Rapl | PowerSource::Auto => match Rapl::open(&args.powercap) {
                Ok(r) => (Some(r), None),
                Err(e) if args.power == PowerSource::Rapl => {
                    bail!("--power rapl, but RAPL cannot be read: {e:#}")
                }
                Err(e) => (None, Some(format!("{e:#}"))),
            },
        };
        Ok(Self { rapl, model, why_not_rapl, last: None, intervals: Vec::new() })
    }

    pub fn source(&self) -> &'static str {
        if self.rapl.is_some() { "rapl" } else { "model" }
    }

    fn read(&mut self, mono_ns: u64) -> Reading {
        Reading {
            mono_ns,
            busy_ns: machine_busy_ns().unwrap_or(0),
            rapl_j: self.rapl.as_mut().map(Rapl::read_j),
        }
    }

    /// The first reading: the first interval starts at `mono_ns`.
    pub fn begin(&mut self, mono_ns: u64) {
        self.last = Some(self.read(mono_ns));
    }

    /// Ends an interval at `mono_ns` and starts the next; returns the interval.
    pub fn sample(&mut self, mono_ns: u64) -> MachineInterval {
        let reading = self.read(mono_ns);
        let last = self.last.unwrap_or(reading);
        let interval = MachineInterval {
            start_ns: last.mono_ns,
            end_ns: reading.mono_ns,
            busy_cpu_ns: reading.busy_ns.saturating_sub(last.busy_ns),
            energy_j: self.joules(&last, &reading),
        };
        self.last = Some(reading);
        self.intervals.push(interval);
        interval
    }

    /// The machine's energy between two readings, in joules.
    fn joules(&self, a: &Reading, b: &Reading) -> f64 {
        match (a.rapl_j, b.rapl_j) {
            (Some(x), Some(y)) => (y - x).max(0.0),
            _ => self.model.joules(b.mono_ns.saturating_sub(a.mono_ns), b.busy_ns.saturating_sub(a.busy_ns)),
        }
    }

    /// The power source as recorded in run.json.
    pub fn describe(&self) -> PowerSourceInfo {
        PowerSourceInfo {
            source: self.source(),
            rapl_domains: self.rapl.as_ref().map(Rapl::domains),
            rapl_unavailable: self.why_not_rapl.clone(),
            model: self.model,
            attribution: ATTRIBUTION,
        }
    }

    /// Every interval read, and where the figures came from.
    pub fn finish(self) -> PowerLog {
        PowerLog { source: self.describe(), intervals: self.intervals }
    }
}
