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
    files::FdKey,
    sched::{MAX_THREADS, ThreadStats},
    sock::{ConnEvent, ConnStats},
};
use serde::Serialize;

use super::offsets::{Offsets, READ_SYSCALLS, WRITE_SYSCALLS};

/// The object built from geminst-ebpf by build.rs: always the current sources. Empty when this
/// geminst was built without the eBPF toolchain (see `PLACEHOLDER`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("GEMINST_EBPF_OBJECT"));

/// Why build.rs embedded an empty placeholder instead of the object (what of the eBPF toolchain
/// was missing), if it did.
const PLACEHOLDER: Option<&str> = option_env!("GEMINST_EBPF_PLACEHOLDER");

/// Programs that attach to one tracepoint each: program name, tracepoint group, tracepoint name.
const SINGLE: &[(&str, &str, &str)] = &[
    ("sched_switch", "sched", "sched_switch"),
    ("sched_wakeup", "sched", "sched_wakeup"),
    ("sched_wakeup_new", "sched", "sched_wakeup_new"),
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sock_send_length", "sock", "sock_send_length"),
    ("sock_recv_length", "sock", "sock_recv_length"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    ("block_bio_queue", "block", "block_bio_queue"),
    ("block_rq_issue", "block", "block_rq_issue"),
    ("block_rq_complete", "block", "block_rq_complete"),
    ("file_close", "syscalls", "sys_enter_close"),
];

/// The empty program whose cost per event is the statistics' own (with `enable_stats`).
pub const STATS_FLOOR: &str = "stats_floor";

/// Every program and the tracepoints it attaches to on this kernel.
fn programs(offsets: &Offsets) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let mut out: Vec<(&'static str, Vec<(&'static str, String)>)> =
        SINGLE.iter().map(|&(p, g, n)| (p, vec![(g, n.to_string())])).collect();
    let syscalls = |prefix: &str, names: &[&str]| -> Vec<(&'static str, String)> {
        names.iter().map(|n| ("syscalls", format!("{prefix}{n}"))).collect()
    };
    out.push(("file_read_enter", syscalls("sys_enter_", &READ_SYSCALLS)));
    out.push(("file_write_enter", syscalls("sys_enter_", &WRITE_SYSCALLS)));
    let rw: Vec<&str> = READ_SYSCALLS.iter().chain(&WRITE_SYSCALLS).copied().collect();
    out.push(("file_rw_exit", syscalls("sys_exit_", &rw)));
    out.push(("file_opened", syscalls("sys_exit_", &offsets.open_syscalls)));
    out
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
    programs: Vec<(&'static str, Vec<(&'static str, String)>)>,
    /// Closed connections arrive here from the kernel.
    conn_events: aya::maps::RingBuf<MapData>,
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
        if let Some(missing) = PLACEHOLDER {
            anyhow::bail!(
                "this geminst was built without its eBPF programs, because the eBPF toolchain was missing: {missing}, then build geminst again"
            );
        }
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(geminst_common::sched::DEFAULT_PID_MAX);
        let mut ebpf = EbpfLoader::new()
            .override_global("SCHED_OFFSETS", &offsets.sched, true)
            .override_global("SOCK_CONFIG", &offsets.sock, true)
            .override_global("BLOCK_OFFSETS", &offsets.block, true)
            .override_global("FILES_OFFSETS", &offsets.files, true)
            .map_max_entries("SLOTS", pid_max)
            .load(OBJECT)
            .context("loading geminst's eBPF object into the kernel")?;
        let conn_events =
            aya::maps::RingBuf::try_from(ebpf.take_map("CONN_EVENTS").context("map CONN_EVENTS")?)?;
        Ok(Self {
            ebpf,
            programs: programs(offsets),
            conn_events,
            attached: false,
            reserved_slots: 0,
            next_user_slot: 0,
            stats: None,
        })
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

    /// Turns on the kernel's per-program run-time statistics for as long as the probes live, and
    /// adds the empty `stats_floor` program on sched:sched_switch to measure what they cost.
    pub fn enable_stats(&mut self) -> Result<()> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling the kernel's BPF run-time statistics")?;
        self.stats = Some(fd);
        self.programs.push((STATS_FLOOR, vec![("sched", "sched_switch".to_string())]));
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

    /// Loads every program into the kernel and attaches it to its tracepoints.
    pub fn attach(&mut self) -> Result<()> {
        for (prog, points) in &self.programs {
            let program: &mut TracePoint = self
                .ebpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} is missing from the eBPF object"))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("loading program {prog} (the verifier's log says why)"))?;
            self.attached = true;
            for (group, name) in points {
                program
                    .attach(group, name)
                    .with_context(|| format!("attaching {prog} to tracepoint {group}:{name}"))?;
            }
        }
        Ok(())
    }

    /// Detaches and unloads every program; the maps stay readable.
    pub fn detach(&mut self) -> Result<()> {
        for (prog, _) in &self.programs {
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

    /// Marks a descriptor of a traced process as opened by path (for those open at the start).
    pub fn add_open_fd(&mut self, tgid: u32, fd: u32) -> Result<()> {
        let mut fds: BpfHashMap<&mut MapData, FdKey, u32> =
            BpfHashMap::try_from(self.ebpf.map_mut("OPEN_FDS").context("map OPEN_FDS")?)?;
        fds.insert(FdKey { tgid, fd }, 1, 0).with_context(|| format!("adding fd {fd} of {tgid} to OPEN_FDS"))
    }

    /// Connection lifecycle events since the last call, from the ring buffer.
    pub fn conn_events(&mut self) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.conn_events.next() {
            if item.len() >= std::mem::size_of::<ConnEvent>() {
                // SAFETY: the kernel writes whole ConnEvent records; read unaligned from the item.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ConnEvent) });
            }
        }
        out
    }

    /// Removes a closed connection's entry and returns it. Entries are keyed by connection id,
    /// never reused, so this cannot take another connection's.
    pub fn take_conn(&mut self, conn_id: u64) -> Result<Option<ConnStats>> {
        let mut conns: BpfHashMap<&mut MapData, u64, ConnStats> =
            BpfHashMap::try_from(self.ebpf.map_mut("CONNS").context("map CONNS")?)?;
        let Ok(c) = conns.get(&conn_id, 0) else { return Ok(None) };
        // A kernel update between the read and the removal would be lost; the grace period
        // makes one unlikely (the connection closed a second ago).
        let _ = conns.remove(&conn_id);
        Ok(Some(c))
    }

    /// Every connection still in the map: open ones, and closed ones not yet harvested.
    pub fn remaining_conns(&self) -> Result<Vec<ConnStats>> {
        let conns: BpfHashMap<&MapData, u64, ConnStats> =
            BpfHashMap::try_from(self.ebpf.map("CONNS").context("map CONNS")?)?;
        conns.iter().map(|r| r.map(|(_, c)| c).context("reading CONNS")).collect()
    }

    /// Machine-wide asynchronous writeback queued so far, summed over CPUs.
    pub fn writeback_bytes(&self) -> Result<u64> {
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("WRITEBACK_BYTES").context("map WRITEBACK_BYTES")?)?;
        Ok(array.get(&0, 0).context("reading WRITEBACK_BYTES")?.iter().sum())
    }

    /// Per-program cost from the kernel's statistics (zeros unless `enable_stats` was called or
    /// kernel.bpf_stats_enabled is set).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.programs
            .iter()
            .filter_map(|&(prog, _)| {
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
