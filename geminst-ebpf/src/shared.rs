//! Maps and helpers used by more than one hook family.

use aya_ebpf::{
    EbpfContext,
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

/// What every program returns. aya attaches a tracepoint program through perf, where the value
/// only decides whether perf goes on to record the event in its own buffers as well
/// (perf_trace_run_bpf_submit, kernel/events/core.c: 0 ends it at the program). Nothing here reads
/// those buffers, so a nonzero value would tell no one of a failure and only cost the kernel that
/// extra work. Failures are counted where they happen instead: every error a program meets is a
/// tracepoint field it could not read, counted as `field_read_failed` by `probe_field`, and the
/// loss counters are what userspace reports in run.json. So there is no per-program failure
/// counter, which would count the same reads twice.
pub const DONE: u32 = 0;

/// A program's return value once its work has ended, however it ended (see `DONE`).
#[inline(always)]
pub fn done(_outcome: Result<(), i64>) -> u32 {
    DONE
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

/// Reads a tracepoint field at an offset found in the format file, with bpf_probe_read_kernel.
/// For offsets `direct!` does not cover; counts failures.
#[inline(always)]
fn probe_field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    // SAFETY: the offset comes from the tracepoint's own format file; the helper checks the read.
    match unsafe { ctx.read_at::<T>(offset as usize) } {
        Ok(v) => Ok(v),
        Err(e) => {
            count(counters::FIELD_READ_FAILED);
            Err(e as i64)
        }
    }
}

/// A direct load from the tracepoint record, which the verifier allows only at an offset that is
/// a constant in the instruction, while ours come from the format file at load time. So this is a
/// `match` over every aligned offset a field of these tracepoints can have, each arm one load with
/// the offset as its immediate (inline assembly, because LLVM would otherwise merge the arms into
/// an adjusted context pointer, which the verifier refuses). The offsets live in a frozen read-only
/// global: the verifier knows their values, proves every other arm dead and hard-wires the branch,
/// leaving one load where a helper call would cost tens of nanoseconds on every context switch of
/// the machine.
macro_rules! direct {
    ($ctx:expr, $offset:expr, $t:ty, $width:literal, $($o:literal)*) => {
        direct_at!($ctx.as_ptr(), $offset, $t, $width, probe_field::<$t>($ctx, $offset), $($o)*)
    };
}

/// A load at `base + offset` with the offset as the instruction's immediate, for an offset known
/// to the verifier but not to the compiler (see `direct!`); `$fallback` for offsets not listed.
macro_rules! direct_at {
    ($base:expr, $offset:expr, $t:ty, $width:literal, $fallback:expr, $($o:literal)*) => {{
        let base = $base;
        match $offset {
            $($o => {
                let v: u64;
                // SAFETY: an aligned load inside the record; the verifier checks it again.
                unsafe {
                    core::arch::asm!(
                        concat!("{v} = *(", $width, " *)({base} + ", stringify!($o), ")"),
                        v = out(reg) v,
                        base = in(reg) base,
                        options(readonly, nostack, preserves_flags),
                    )
                };
                Ok(v as $t)
            })*
            _ => $fallback,
        }
    }};
}
pub(crate) use direct_at;

/// A 4-byte tracepoint field (pid_t, int, unsigned int).
#[inline(always)]
pub fn field_u32(ctx: &TracePointContext, offset: u32) -> Result<u32, i64> {
    direct!(ctx, offset, u32, "u32", 8 12 16 20 24 28 32 36 40 44 48 52 56 60 64 68 72 76 80)
}

/// An 8-byte tracepoint field (long, u64, pointers).
#[inline(always)]
pub fn field_u64(ctx: &TracePointContext, offset: u32) -> Result<u64, i64> {
    direct!(ctx, offset, u64, "u64", 8 16 24 32 40 48 56 64 72 80)
}

/// An unsigned integer field whose width (4 or 8 bytes) depends on the kernel.
#[inline(always)]
pub fn field_uint(ctx: &TracePointContext, offset: u32, size: u32) -> Result<u64, i64> {
    if size == 8 { field_u64(ctx, offset) } else { field_u32(ctx, offset).map(u64::from) }
}

/// A 2-byte tracepoint field (__u16 ports, families, protocols).
#[inline(always)]
pub fn field_u16(ctx: &TracePointContext, offset: u32) -> Result<u16, i64> {
    direct!(ctx, offset, u16, "u16", 8 10 12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42 44 46 48 50 52 54 56 58 60 62 64 66 68 70 72 74 76 78 80)
}

/// A 1-byte tracepoint field (a character of a string).
#[inline(always)]
pub fn field_u8(ctx: &TracePointContext, offset: u32) -> Result<u8, i64> {
    direct!(ctx, offset, u8, "u8", 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64)
}

/// A byte array field, copied with bpf_probe_read_kernel (used on rare events only).
#[inline(always)]
pub fn field_bytes<const N: usize>(ctx: &TracePointContext, offset: u32) -> Result<[u8; N], i64> {
    probe_field::<[u8; N]>(ctx, offset)
}
