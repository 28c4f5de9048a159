//! run.json: what was run, where, when, and every counter of data lost or dropped.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::Result;
use serde::Serialize;

use super::files::write_atomic;
use crate::clock;

/// A moment, on both clocks: CLOCK_MONOTONIC ns (to line up with every other time in the data
/// set) and Unix ns (for humans), with the UTC time spelled out.
#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub mono_ns: u64,
    pub unix_ns: u64,
    pub utc: String,
}

impl Moment {
    pub fn now() -> Self {
        let unix_ns = clock::unix_ns();
        Self { mono_ns: clock::monotonic_ns(), unix_ns, utc: clock::rfc3339(unix_ns) }
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub hostname: String,
    pub kernel_release: String,
    pub kernel_version: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub mem_total_bytes: Option<u64>,
}

impl Host {
    pub fn read() -> Self {
        let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count().max(1);
        let mem_total_bytes = read("/proc/meminfo").lines().find_map(|l| {
            let kb = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim();
            kb.parse::<u64>().ok().map(|kb| kb * 1024)
        });
        Self {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel_release: read("/proc/sys/kernel/osrelease"),
            kernel_version: read("/proc/sys/kernel/version"),
            cpu_model,
            cpus,
            mem_total_bytes,
        }
    }
}

/// The content of run.json. Capabilities add their own sections (`trace`, `capture`, `load`,
/// `power_model`, ...) and their loss counters under `lost`, named `<capability>.<counter>`.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub tool: &'static str,
    pub version: &'static str,
    /// The command line, as given.
    pub command: Vec<String>,
    pub host: Host,
    pub start: Moment,
    pub end: Option<Moment>,
    /// Why the run ended: "duration", "signal", "target_exited", "load_finished", "error".
    pub stopped_by: Option<String>,
    /// Every counter of data lost or dropped; all of them, zeros included.
    pub lost: BTreeMap<String, u64>,
    /// Things a reader of the data must know (a target that exited early, a degraded source).
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub sections: BTreeMap<String, serde_json::Value>,
}

impl RunInfo {
    /// Starts the record now, with the process's own command line.
    pub fn begin() -> Self {
        Self {
            tool: "geminst",
            version: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect(),
            host: Host::read(),
            start: Moment::now(),
            end: None,
            stopped_by: None,
            lost: BTreeMap::new(),
            notes: Vec::new(),
            sections: BTreeMap::new(),
        }
    }

    pub fn finish(&mut self, stopped_by: &str) {
        self.end = Some(Moment::now());
        self.stopped_by = Some(stopped_by.to_string());
    }

    pub fn section(&mut self, name: &str, value: impl Serialize) -> Result<()> {
        self.sections.insert(name.to_string(), serde_json::to_value(value)?);
        Ok(())
    }

    /// Writes `dir/run.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        write_atomic(&dir.join("run.json"), &json)
    }
}
