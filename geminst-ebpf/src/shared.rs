//! Maps and helpers used by more than one hook family.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use geminst_common::{counters, sched::MAX_TARGETS};

/// The processes being traced: tgid -> 1. Filled by userspace before programs are attached.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Counters of data lost or dropped, indexed by `geminst_common::counters`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::NUM_COUNTERS, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by programs on this CPU, one at a time.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and cannot fail.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// The current thread's (tgid, tid).
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    // SAFETY: the value is only compared for presence.
    unsafe { TARGETS.get(tgid).is_some() }
}

/// Reads a tracepoint field at an offset found in the format file, counting failures.
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    // SAFETY: the offset comes from the tracepoint's own format file; the helper checks the read.
    match unsafe { ctx.read_at::<T>(offset as usize) } {
        Ok(v) => Ok(v),
        Err(e) => {
            count(counters::FIELD_READ_FAILED);
            Err(e as i64)
        }
    }
}

/// Reads an unsigned integer field whose width (4 or 8 bytes) depends on the kernel.
#[inline(always)]
pub fn field_uint(ctx: &TracePointContext, offset: u32, size: u32) -> Result<u64, i64> {
    if size == 8 { field::<u64>(ctx, offset) } else { field::<u32>(ctx, offset).map(u64::from) }
}
