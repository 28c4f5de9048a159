//! Scheduler hooks: on-CPU time, voluntary and involuntary switches, and run-queue wait per thread
//! of the traced processes. `THREADS` holds only those threads, so a miss there is the cheap
//! filter for every other thread on the machine.

use aya_ebpf::{
    helpers::bpf_get_current_comm,
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use geminst_common::{
    counters,
    sched::{CLONE_THREAD, MAX_THREADS, PREV_STATE_SLEEP_MASK, SchedOffsets, THREAD_EXITED, ThreadStats},
};

use crate::shared::{count, current_ids, field, field_uint, is_target, now_ns};

/// Field offsets, set by userspace from tracefs format files before loading.
#[unsafe(no_mangle)]
static SCHED_OFFSETS: SchedOffsets = SchedOffsets {
    switch_prev_state: 0,
    switch_prev_state_size: 0,
    switch_next_pid: 0,
    wakeup_pid: 0,
    wakeup_new_pid: 0,
    newtask_pid: 0,
    newtask_clone_flags: 0,
    _pad: 0,
};

/// tid -> counters, for threads of the traced processes (exited ones kept until the end).
#[map]
pub static THREADS: HashMap<u32, ThreadStats> = HashMap::with_max_entries(MAX_THREADS, 0);

#[inline(always)]
fn offsets() -> SchedOffsets {
    // SAFETY: a read of a constant global; volatile so the compiler does not fold the zeros above.
    unsafe { core::ptr::read_volatile(&SCHED_OFFSETS) }
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    match try_sched_switch(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets();
    let now = now_ns();
    // The tracepoint runs in the context of the task being switched out.
    let (_, prev_tid) = current_ids();
    if let Some(prev) = THREADS.get_ptr_mut(prev_tid) {
        let state = field_uint(ctx, off.switch_prev_state, off.switch_prev_state_size)?;
        // SAFETY: the entry stays valid for this program run; concurrent writers only touch it
        // from the CPU the thread runs on, or set runnable_since_ns when it is not running.
        let prev = unsafe { &mut *prev };
        if prev.switched_in_ns != 0 {
            prev.oncpu_ns += now - prev.switched_in_ns;
            prev.switched_in_ns = 0;
        }
        if state & PREV_STATE_SLEEP_MASK != 0 {
            prev.voluntary_switches += 1;
        } else {
            prev.involuntary_switches += 1;
            // Still runnable: it waits on the run queue from now.
            prev.runnable_since_ns = now;
        }
        prev.last_seen_ns = now;
    }
    let next_tid: i32 = field(ctx, off.switch_next_pid)?;
    if let Some(next) = THREADS.get_ptr_mut(next_tid as u32) {
        // SAFETY: as above.
        let next = unsafe { &mut *next };
        next.switched_in_ns = now;
        if next.runnable_since_ns != 0 {
            next.wait_ns += now - next.runnable_since_ns;
            next.runnable_since_ns = 0;
        }
        next.last_seen_ns = now;
    }
    Ok(())
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    match mark_runnable(&ctx, offsets().wakeup_pid) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    match mark_runnable(&ctx, offsets().wakeup_new_pid) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// A traced thread was put on a run queue: its wait starts now.
fn mark_runnable(ctx: &TracePointContext, pid_offset: u32) -> Result<(), i64> {
    let tid: i32 = field(ctx, pid_offset)?;
    if let Some(t) = THREADS.get_ptr_mut(tid as u32) {
        let now = now_ns();
        // SAFETY: see try_sched_switch.
        unsafe { (*t).runnable_since_ns = now };
    }
    Ok(())
}

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    match try_task_newtask(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// A task was created; the creator is the current task. A new thread of a traced process gets an
/// entry so its time is counted from its first slice.
fn try_task_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return Ok(());
    }
    let off = offsets();
    let flags: u64 = field(ctx, off.newtask_clone_flags)?;
    if flags & CLONE_THREAD == 0 {
        // A child process, not a thread of the target: not traced (pass its pid to trace it).
        return Ok(());
    }
    let tid: i32 = field(ctx, off.newtask_pid)?;
    let now = now_ns();
    let stats = ThreadStats {
        tgid,
        first_seen_ns: now,
        last_seen_ns: now,
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..ThreadStats::default()
    };
    if THREADS.insert(tid as u32, stats, 0).is_err() {
        count(counters::THREAD_MAP_FULL);
    }
    Ok(())
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    // The exiting thread is the current task. Its entry is kept: its counters belong to the trace.
    let (_, tid) = current_ids();
    if let Some(t) = THREADS.get_ptr_mut(tid) {
        let now = now_ns();
        // SAFETY: see try_sched_switch.
        let t = unsafe { &mut *t };
        t.flags |= THREAD_EXITED;
        t.exit_ns = now;
        t.last_seen_ns = now;
        // The name it had at the end (threads often rename themselves after creation).
        if let Ok(comm) = bpf_get_current_comm() {
            t.comm = comm;
        }
    }
    0
}
