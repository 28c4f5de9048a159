//! Loading geminst's eBPF object, attaching its programs to their tracepoints, and reading its
//! maps. Everything attached here is detached by `detach` or when `Probes` is dropped.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::TracePoint,
};
use geminst_common::{
    counters,
    sched::{MAX_THREADS, SchedOffsets, ThreadStats},
};
use serde::Serialize;

use super::{btf::Btf, tracefs::Format};

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
#[derive(Debug, Clone)]
pub struct Offsets {
    pub sched: SchedOffsets,
    /// Why the kernel's BTF could not give `task_struct.se.sum_exec_runtime`, if it could not.
    pub btf_problem: Option<String>,
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
        let mut sched = SchedOffsets {
            switch_prev_state: prev_state.offset,
            switch_prev_state_size: prev_state.size,
            switch_next_pid: switch.field_sized("next_pid", &[4])?.offset,
            wakeup_pid: wakeup.field_sized("pid", &[4])?.offset,
            wakeup_new_pid: wakeup_new.field_sized("pid", &[4])?.offset,
            newtask_pid: newtask.field_sized("pid", &[4])?.offset,
            newtask_clone_flags: newtask.field_sized("clone_flags", &[8])?.offset,
            task_sum_exec_runtime: 0,
        };
        // Optional: without it, a slice whose switch in the kernel did not report is lost (and
        // counted) instead of measured.
        let runtime =
            Btf::vmlinux().and_then(|btf| btf.offset_of("task_struct", &["se", "sum_exec_runtime"]));
        let btf_problem = match runtime {
            Ok(offset) => {
                sched.task_sum_exec_runtime = offset;
                None
            }
            Err(e) => Some(format!("{e:#}")),
        };
        Ok(Self { sched, btf_problem })
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
            ("task_struct.se.sum_exec_runtime", s.task_sum_exec_runtime),
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
    /// Slots below this are userspace's, for threads that exist at the start.
    reserved_slots: u32,
    /// The next of those to hand out.
    next_user_slot: u32,
    /// Holds kernel BPF run-time statistics on while the trace runs (`--bpf-stats`).
    stats: Option<OwnedFd>,
}

impl Probes {
    /// Loads the object with this kernel's offsets. Nothing is attached yet.
    pub fn load(offsets: &Offsets) -> Result<Self> {
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(geminst_common::sched::DEFAULT_PID_MAX);
        let ebpf = EbpfLoader::new()
            .override_global("SCHED_OFFSETS", &offsets.sched, true)
            .map_max_entries("SLOTS", pid_max)
            .load(OBJECT)
            .context("loading geminst's eBPF object into the kernel")?;
        Ok(Self { ebpf, attached: false, reserved_slots: 0, next_user_slot: 0, stats: None })
    }

    /// Keeps the first `n` thread slots for `add_thread`; threads created from now on take the
    /// slots after them. Call once, before `attach`.
    pub fn reserve_slots(&mut self, n: u32) -> Result<()> {
        let n = n.min(MAX_THREADS);
        let mut next: Array<&mut MapData, u64> =
            Array::try_from(self.ebpf.map_mut("NEXT_SLOT").context("map NEXT_SLOT")?)?;
        next.set(0, u64::from(n), 0).context("setting NEXT_SLOT")?;
        self.reserved_slots = n;
        Ok(())
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
    /// counts provisionally from `now_ns` (right if it is on a CPU now; a switch in restarts it
    /// otherwise), and `runtime_ns`, the kernel's runtime of the thread now (schedstat), lets the
    /// programs tell the two cases apart when that switch in is not reported.
    pub fn add_thread(
        &mut self,
        tgid: u32,
        tid: u32,
        now_ns: u64,
        runtime_ns: Option<u64>,
        comm: &str,
    ) -> Result<()> {
        let [slots, threads] = self.ebpf.maps_disjoint_mut(["SLOTS", "THREADS"]);
        let mut slots: Array<&mut MapData, u32> = Array::try_from(slots.context("map SLOTS")?)?;
        let mut threads: Array<&mut MapData, ThreadStats> = Array::try_from(threads.context("map THREADS")?)?;
        if slots.get(&tid, 0).with_context(|| format!("reading SLOTS[{tid}]"))? != 0 {
            // Already added by task_newtask between attach and this call.
            return Ok(());
        }
        if self.next_user_slot >= self.reserved_slots {
            anyhow::bail!(
                "more threads appeared at the start than slots were reserved ({})",
                self.reserved_slots
            );
        }
        let slot = self.next_user_slot;
        self.next_user_slot += 1;
        let mut name = [0u8; 16];
        let bytes = comm.as_bytes();
        let n = bytes.len().min(15);
        name[..n].copy_from_slice(&bytes[..n]);
        use geminst_common::sched::{THREAD_RUNTIME_KNOWN, THREAD_SEEN_AT_START, THREAD_START_PROVISIONAL};
        let known = if runtime_ns.is_some() { THREAD_RUNTIME_KNOWN } else { 0 };
        let stats = ThreadStats {
            tgid,
            tid,
            flags: THREAD_SEEN_AT_START | THREAD_START_PROVISIONAL | known,
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            switched_in_ns: now_ns,
            last_out_runtime_ns: runtime_ns.unwrap_or(0),
            comm: name,
            ..ThreadStats::default()
        };
        threads.set(slot, stats, 0).with_context(|| format!("writing THREADS[{slot}]"))?;
        // Published last, so the programs never see a half-written slot.
        slots.set(tid, slot + 1, 0).with_context(|| format!("writing SLOTS[{tid}]"))?;
        Ok(())
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
    pub fn threads(&self) -> Result<Vec<ThreadStats>> {
        let next: Array<&MapData, u64> =
            Array::try_from(self.ebpf.map("NEXT_SLOT").context("map NEXT_SLOT")?)?;
        let used = next.get(&0, 0).context("reading NEXT_SLOT")?.min(u64::from(MAX_THREADS)) as u32;
        let threads: Array<&MapData, ThreadStats> =
            Array::try_from(self.ebpf.map("THREADS").context("map THREADS")?)?;
        let mut out = Vec::new();
        for slot in 0..used {
            let t = threads.get(&slot, 0).with_context(|| format!("reading THREADS[{slot}]"))?;
            if t.tid != 0 {
                out.push(t);
            }
        }
        Ok(out)
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
