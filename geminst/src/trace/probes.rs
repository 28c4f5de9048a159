//! Loading geminst's eBPF object, attaching its programs to their tracepoints, and reading its
//! maps. Everything attached here is detached by `detach` or when `Probes` is dropped.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::TracePoint,
};
use geminst_common::{
    counters,
    sched::{SchedOffsets, ThreadStats},
};
use serde::Serialize;

use super::tracefs::Format;

/// bpf_map_update_elem flag: fail if the key exists (include/uapi/linux/bpf.h).
const BPF_NOEXIST: u64 = 1;

/// The object built from geminst-ebpf by build.rs: always the current sources.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("GEMINST_EBPF_OBJECT"));

/// Program name in the object, tracepoint group, tracepoint name.
pub const PROGRAMS: &[(&str, &str, &str)] = &[
    ("sched_switch", "sched", "sched_switch"),
    ("sched_wakeup", "sched", "sched_wakeup"),
    ("sched_wakeup_new", "sched", "sched_wakeup_new"),
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

/// Offsets handed to the programs, read from this kernel's format files.
#[derive(Debug, Clone, Serialize)]
pub struct Offsets {
    #[serde(skip)]
    pub sched: SchedOffsets,
}

impl Offsets {
    /// Reads every format file the programs depend on; the first tracepoint or field this kernel
    /// lacks is named in the error.
    pub fn read() -> Result<Self> {
        let switch = Format::read("sched", "sched_switch")?;
        let wakeup = Format::read("sched", "sched_wakeup")?;
        let wakeup_new = Format::read("sched", "sched_wakeup_new")?;
        let newtask = Format::read("task", "task_newtask")?;
        // Checked for existence only: the exit program reads no field.
        Format::read("sched", "sched_process_exit")?;
        let prev_state = switch.field_sized("prev_state", &[4, 8])?;
        let sched = SchedOffsets {
            switch_prev_state: prev_state.offset,
            switch_prev_state_size: prev_state.size,
            switch_next_pid: switch.field_sized("next_pid", &[4])?.offset,
            wakeup_pid: wakeup.field_sized("pid", &[4])?.offset,
            wakeup_new_pid: wakeup_new.field_sized("pid", &[4])?.offset,
            newtask_pid: newtask.field_sized("pid", &[4])?.offset,
            newtask_clone_flags: newtask.field_sized("clone_flags", &[8])?.offset,
            _pad: 0,
        };
        Ok(Self { sched })
    }

    /// The offsets as recorded in run.json.
    pub fn describe(&self) -> BTreeMap<&'static str, u32> {
        let s = &self.sched;
        BTreeMap::from([
            ("sched_switch.prev_state", s.switch_prev_state),
            ("sched_switch.prev_state.size", s.switch_prev_state_size),
            ("sched_switch.next_pid", s.switch_next_pid),
            ("sched_wakeup.pid", s.wakeup_pid),
            ("sched_wakeup_new.pid", s.wakeup_new_pid),
            ("task_newtask.pid", s.newtask_pid),
            ("task_newtask.clone_flags", s.newtask_clone_flags),
        ])
    }
}

/// Cost of one program, from the kernel's BPF statistics.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramStats {
    pub program: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    /// run_time_ns / run_count; null when the program never ran.
    pub ns_per_event: Option<f64>,
}

pub struct Probes {
    ebpf: Ebpf,
    attached: bool,
    /// Holds kernel BPF run-time statistics on while the trace runs (`--bpf-stats`).
    stats: Option<OwnedFd>,
}

impl Probes {
    /// Loads the object with this kernel's offsets. Nothing is attached yet.
    pub fn load(offsets: &Offsets) -> Result<Self> {
        let ebpf = EbpfLoader::new()
            .override_global("SCHED_OFFSETS", &offsets.sched, true)
            .load(OBJECT)
            .context("loading geminst's eBPF object into the kernel")?;
        Ok(Self { ebpf, attached: false, stats: None })
    }

    /// Turns on the kernel's per-program run-time statistics for as long as the probes live.
    pub fn enable_stats(&mut self) -> Result<()> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling the kernel's BPF run-time statistics")?;
        self.stats = Some(fd);
        Ok(())
    }

    /// Marks a process as traced. Call before `attach`, then `add_thread` for its threads.
    pub fn add_target(&mut self, tgid: u32) -> Result<()> {
        let mut targets: BpfHashMap<&mut MapData, u32, u32> =
            BpfHashMap::try_from(self.ebpf.map_mut("TARGETS").context("map TARGETS")?)?;
        targets.insert(tgid, 1, 0).with_context(|| format!("adding pid {tgid} to TARGETS"))?;
        Ok(())
    }

    /// Adds a thread that already exists, unless the programs already know it. Its current slice
    /// counts from `now_ns`: a thread not on a CPU now must be switched in before it can be
    /// switched out, which restarts the slice, so this never over-counts.
    pub fn add_thread(&mut self, tgid: u32, tid: u32, now_ns: u64, comm: &str) -> Result<()> {
        let mut threads: BpfHashMap<&mut MapData, u32, ThreadStats> =
            BpfHashMap::try_from(self.ebpf.map_mut("THREADS").context("map THREADS")?)?;
        let mut name = [0u8; 16];
        let bytes = comm.as_bytes();
        let n = bytes.len().min(15);
        name[..n].copy_from_slice(&bytes[..n]);
        let stats = ThreadStats {
            tgid,
            flags: geminst_common::sched::THREAD_SEEN_AT_START,
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            switched_in_ns: now_ns,
            comm: name,
            ..ThreadStats::default()
        };
        match threads.insert(tid, stats, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            // Already added by task_newtask between attach and this call.
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("adding thread {tid} to THREADS")),
        }
    }

    /// Loads every program into the kernel and attaches it to its tracepoint.
    pub fn attach(&mut self) -> Result<()> {
        for &(prog, group, name) in PROGRAMS {
            let program: &mut TracePoint = self
                .ebpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} is missing from the eBPF object"))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("loading program {prog} (the verifier's log says why)"))?;
            program.attach(group, name).with_context(|| format!("attaching to tracepoint {group}:{name}"))?;
            self.attached = true;
        }
        Ok(())
    }

    /// Detaches and unloads every program; the maps stay readable.
    pub fn detach(&mut self) -> Result<()> {
        for &(prog, _, _) in PROGRAMS {
            if let Some(program) = self.ebpf.program_mut(prog) {
                let program: &mut TracePoint = program.try_into()?;
                // Unloading a program that was never loaded is an error we do not care about.
                let _ = program.unload();
            }
        }
        self.attached = false;
        Ok(())
    }

    /// Every traced thread's counters, exited ones included.
    pub fn threads(&self) -> Result<Vec<(u32, ThreadStats)>> {
        let threads: BpfHashMap<&MapData, u32, ThreadStats> =
            BpfHashMap::try_from(self.ebpf.map("THREADS").context("map THREADS")?)?;
        threads.iter().map(|r| r.context("reading THREADS")).collect()
    }

    /// The kernel side's loss counters, summed over CPUs, by name.
    pub fn lost(&self) -> Result<BTreeMap<String, u64>> {
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("map COUNTERS")?)?;
        let mut out = BTreeMap::new();
        for (i, name) in counters::NAMES.iter().enumerate() {
            let values = array.get(&(i as u32), 0).with_context(|| format!("reading counter {name}"))?;
            out.insert(format!("ebpf.{name}"), values.iter().sum());
        }
        Ok(out)
    }

    /// Per-program cost from the kernel's statistics (zeros unless `enable_stats` was called or
    /// kernel.bpf_stats_enabled is set).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        PROGRAMS
            .iter()
            .filter_map(|&(prog, _, _)| {
                let info = self.ebpf.program(prog)?.info().ok()?;
                let run_count = info.run_count();
                let run_time_ns = info.run_time().as_nanos() as u64;
                Some(ProgramStats {
                    program: prog.to_string(),
                    run_count,
                    run_time_ns,
                    ns_per_event: (run_count > 0).then(|| run_time_ns as f64 / run_count as f64),
                })
            })
            .collect()
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        if self.attached {
            let _ = self.detach();
        }
    }
}
