//! Scheduler hooks: on-CPU time, voluntary and involuntary switches, and run-queue wait per thread
//! of the traced processes.
//!
//! These run on every context switch and wakeup of the machine, so the common case, a thread that
//! is not traced, must cost almost nothing: a thread is found by an array lookup (threads.rs), and
//! the clock is read only when a traced thread is involved.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_comm, bpf_get_current_task_btf},
    macros::tracepoint,
    programs::TracePointContext,
};
use geminst_common::{
    counters,
    sched::{
        CLONE_THREAD, PREV_STATE_SLEEP_MASK, SchedOffsets, THREAD_EXITED, THREAD_RUNTIME_KNOWN,
        THREAD_START_PROVISIONAL, ThreadStats,
    },
};

use crate::{
    attribution,
    shared::{
        DONE, count, current_ids, direct_at, done, field_u32, field_u64, field_uint, is_target, now_ns,
    },
    threads::{self, slot_of, stats, thread},
};

/// Field offsets, set by userspace from tracefs format files before loading (a frozen read-only
/// global: see shared::direct).
#[unsafe(no_mangle)]
static SCHED_OFFSETS: Global<SchedOffsets> = Global::new(SchedOffsets {
    switch_prev_state: 0,
    switch_prev_state_size: 0,
    switch_next_pid: 0,
    wakeup_pid: 0,
    wakeup_new_pid: 0,
    newtask_pid: 0,
    newtask_clone_flags: 0,
    task_sum_exec_runtime: 0,
});

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    done(try_sched_switch(&ctx))
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i64> {
    let off = SCHED_OFFSETS.load();
    // The tracepoint runs in the context of the task being switched out.
    let (_, prev_tid) = current_ids();
    let prev_slot = slot_of(prev_tid);
    let next_tid = field_u32(ctx, off.switch_next_pid)?;
    let next_slot = slot_of(next_tid);
    // Tested on the slot numbers: the verifier would refuse the same test on the two pointers.
    if prev_slot | next_slot == 0 {
        return Ok(());
    }
    let now = now_ns();
    if let Some(prev) = stats(prev_slot) {
        let state = field_uint(ctx, off.switch_prev_state, off.switch_prev_state_size)?;
        let (slice, wall) = switched_out(prev, now, current_runtime(off.task_sum_exec_runtime));
        attribution::charge_slice(prev, now, slice, wall);
        if state & PREV_STATE_SLEEP_MASK != 0 {
            prev.voluntary_switches += 1;
        } else {
            prev.involuntary_switches += 1;
            // Still runnable: it waits on the run queue from now.
            prev.runnable_since_ns = now;
        }
        prev.last_seen_ns = now;
        if prev.flags & THREAD_EXITED != 0 {
            // Its last switch: free the tid, which the kernel may give to a new task.
            threads::release(prev_tid);
        }
    }
    if let Some(next) = stats(next_slot) {
        next.switched_in_ns = now;
        attribution::start_slice(next, now);
        next.flags &= !THREAD_START_PROVISIONAL;
        if next.runnable_since_ns != 0 {
            next.wait_ns += now - next.runnable_since_ns;
            next.runnable_since_ns = 0;
        }
        next.last_seen_ns = now;
    }
    Ok(())
}

/// `current_runtime` could not read the runtime. A plain sentinel rather than `Option<u64>`:
/// LLVM leaves the payload of a `None` uninitialised and the verifier rejects reading it.
const RUNTIME_UNKNOWN: u64 = u64::MAX;

/// The kernel's runtime of the current task (`se.sum_exec_runtime`, brought up to date by the
/// scheduler before it switches the task out), or `RUNTIME_UNKNOWN`. A direct load through the
/// BTF-typed task pointer (the verifier checks the offset against the kernel's BTF), at the offset
/// userspace found in that BTF; `direct_at!` makes it the instruction's immediate.
#[inline(always)]
fn current_runtime(offset: u32) -> u64 {
    if offset == 0 {
        return RUNTIME_UNKNOWN;
    }
    // SAFETY: the helper takes no arguments and returns the current task, valid for this run.
    let task = unsafe { bpf_get_current_task_btf() } as *const core::ffi::c_void;
    let read: Result<u64, i64> = direct_at!(task, offset, u64, "u64", Ok(RUNTIME_UNKNOWN),
        64 72 80 88 96 104 112 120 128 136 144 152 160 168 176 184 192 200 208 216 224 232 240 248
        256 264 272 280 288 296 304 312 320 328 336 344 352 360 368 376 384 392 400 408 416 424 432
        440 448 456 464 472 480 488 496 504 512 520 528 536 544 552 560 568 576 584 592 600 608 616
        624 632 640 648 656 664 672 680 688 696 704 712 720 728 736 744 752 760 768 776 784 792 800);
    read.unwrap_or(RUNTIME_UNKNOWN)
}

/// Ends the thread's current slice at `now`; returns the slice's on-CPU time and its wall-clock
/// length (0 when its start was not seen).
///
/// On-CPU time is the growth of the kernel's own runtime of the thread since its last switch out
/// (`se.sum_exec_runtime`, brought up to date by the scheduler just before this tracepoint). It
/// leaves out what the kernel leaves out: time the hypervisor did not run this virtual CPU
/// (steal). geminst's own timestamps measure the slice too; where they give more, the difference
/// is kept as `stolen_ns`. Without the runtime (no BTF), the timestamps are the measure.
///
/// When no program saw the switch in (some kernels suppress tracepoints in the context of chosen
/// tasks, so a switch from such a task is invisible), the run-queue wait before the slice is
/// closed at the slice's start, and `unseen_switch_ins` counts it.
#[inline(always)]
fn switched_out(t: &mut ThreadStats, now: u64, runtime: u64) -> (u64, u64) {
    let known = runtime != RUNTIME_UNKNOWN;
    let kernel_slice = if known && t.flags & THREAD_RUNTIME_KNOWN != 0 && runtime >= t.last_out_runtime_ns {
        Some(runtime - t.last_out_runtime_ns)
    } else {
        None
    };
    let wall = if t.switched_in_ns != 0 { now.saturating_sub(t.switched_in_ns) } else { 0 };
    let provisional = t.flags & THREAD_START_PROVISIONAL != 0;
    let slice = match kernel_slice {
        Some(k) if t.switched_in_ns == 0 => {
            t.unseen_switch_ins += 1;
            if t.runnable_since_ns != 0 {
                let start = now.saturating_sub(k);
                t.wait_ns += start.saturating_sub(t.runnable_since_ns);
                t.runnable_since_ns = 0;
            }
            k
        }
        // Registered at the start while on a CPU: the kernel's figure includes the part of the
        // slice before the trace, the wall-clock one does not.
        Some(k) if provisional => k.min(wall),
        Some(k) => {
            t.stolen_ns += wall.saturating_sub(k);
            k
        }
        None if t.switched_in_ns != 0 => wall,
        None => {
            count(counters::SLICE_LOST);
            0
        }
    };
    t.oncpu_ns += slice;
    t.switched_in_ns = 0;
    t.flags &= !THREAD_START_PROVISIONAL;
    if known {
        t.last_out_runtime_ns = runtime;
        t.flags |= THREAD_RUNTIME_KNOWN;
    }
    (slice, wall)
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    done(mark_runnable(&ctx, SCHED_OFFSETS.load().wakeup_pid))
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    done(mark_runnable(&ctx, SCHED_OFFSETS.load().wakeup_new_pid))
}

/// A traced thread was put on a run queue: its wait starts now.
fn mark_runnable(ctx: &TracePointContext, pid_offset: u32) -> Result<(), i64> {
    let tid = field_u32(ctx, pid_offset)?;
    if let Some(t) = thread(tid) {
        t.runnable_since_ns = now_ns();
    }
    Ok(())
}

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    done(try_task_newtask(&ctx))
}

/// A task was created; the creator is the current task. A new thread of a traced process gets an
/// entry so its time is counted from its first slice.
fn try_task_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return Ok(());
    }
    let off = SCHED_OFFSETS.load();
    let flags = field_u64(ctx, off.newtask_clone_flags)?;
    if flags & CLONE_THREAD == 0 {
        // A child process, not a thread of the target: not traced (pass its pid to trace it).
        return Ok(());
    }
    let tid = field_u32(ctx, off.newtask_pid)?;
    let Some((slot, stats)) = threads::take_slot() else { return Ok(()) };
    let now = now_ns();
    *stats = ThreadStats {
        tgid,
        tid,
        // A new task's runtime starts at zero (__sched_fork).
        flags: THREAD_RUNTIME_KNOWN,
        first_seen_ns: now,
        last_seen_ns: now,
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..ThreadStats::default()
    };
    threads::publish(tid, slot);
    Ok(())
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    // The exiting thread is the current task. Its entry is kept: its counters belong to the trace.
    let (_, tid) = current_ids();
    if let Some(t) = thread(tid) {
        let now = now_ns();
        t.flags |= THREAD_EXITED;
        t.exit_ns = now;
        t.last_seen_ns = now;
        // The name it had at the end (threads often rename themselves after creation).
        if let Ok(comm) = bpf_get_current_comm() {
            t.comm = comm;
        }
    }
    DONE
}

/// An empty program, attached to sched:sched_switch beside the real one only when the kernel's
/// BPF statistics are on: its cost per event is what the statistics themselves add (two clock
/// reads around every run), so the other programs' costs can be read net of it.
#[tracepoint]
pub fn stats_floor(_ctx: TracePointContext) -> u32 {
    DONE
}
