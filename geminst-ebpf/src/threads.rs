//! The traced threads' slots: `SLOTS` finds a thread's counters in `THREADS` by its tid.
//!
//! Every program looks a thread up here, and the scheduler programs do on every context switch of
//! the machine, so the common case, a thread that is not traced, must cost almost nothing: `SLOTS`
//! is an array indexed by tid (the verifier inlines array lookups into a bounds check and a load).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{macros::map, maps::Array};
use geminst_common::{
    counters,
    sched::{DEFAULT_PID_MAX, MAX_THREADS, ThreadStats},
};

use crate::shared::count;

/// tid -> slot in `THREADS` + 1; 0 for threads not traced. Resized to pid_max by userspace.
#[map]
pub static SLOTS: Array<u32> = Array::with_max_entries(DEFAULT_PID_MAX, 0);

/// Counters of traced threads, one slot each (exited ones kept until the end).
#[map]
pub static THREADS: Array<ThreadStats> = Array::with_max_entries(MAX_THREADS, 0);

/// The next free slot. Userspace registers the threads that exist at the start in the slots
/// below the value it sets here; new threads take slots from here on.
#[map]
pub static NEXT_SLOT: Array<u64> = Array::with_max_entries(1, 0);

/// The thread's slot + 1, or 0 if it is not traced.
#[inline(always)]
pub fn slot_of(tid: u32) -> u32 {
    SLOTS.get(tid).copied().unwrap_or(0)
}

/// The counters in slot `slot_plus_one - 1`, or None for 0.
#[inline(always)]
pub fn stats(slot_plus_one: u32) -> Option<&'static mut ThreadStats> {
    if slot_plus_one == 0 {
        return None;
    }
    // SAFETY: the slot's owner updates it only from the CPU the thread runs on, or sets
    // runnable_since_ns when it is not running; races between the two are benign.
    THREADS.get_ptr_mut(slot_plus_one - 1).map(|p| unsafe { &mut *p })
}

/// The counters of a traced thread, or None for any other thread.
#[inline(always)]
pub fn thread(tid: u32) -> Option<&'static mut ThreadStats> {
    stats(slot_of(tid))
}

/// Takes a slot for a new thread: its number and its counters, for the caller to fill before
/// `publish`. None when `THREADS` is full (counted as `thread_map_full`).
#[inline(always)]
pub fn take_slot() -> Option<(u32, &'static mut ThreadStats)> {
    let next = NEXT_SLOT.get_ptr_mut(0)?;
    // An atomic fetch-add (BPF_ATOMIC | BPF_FETCH, ISA v3). Rust's AtomicU64::fetch_add is not
    // offered on the BPF target, which lacks compare-and-swap, so the intrinsic is used directly.
    // SeqCst, not Relaxed: LLVM 22 lowers a relaxed add to the non-fetch form even when its
    // result is used, handing every thread the same slot.
    // SAFETY: a valid, aligned u64 in a map; other CPUs allocate through the same instruction.
    let slot = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(next, 1) } as u32;
    let Some(stats) = THREADS.get_ptr_mut(slot) else {
        count(counters::THREAD_MAP_FULL);
        return None;
    };
    // SAFETY: the slot was just taken by this program run and nobody else writes it yet.
    Some((slot, unsafe { &mut *stats }))
}

/// Makes a filled slot the thread's. Done last, so the other programs never see a half-written
/// slot.
#[inline(always)]
pub fn publish(tid: u32, slot: u32) {
    if let Some(entry) = SLOTS.get_ptr_mut(tid) {
        // SAFETY: a valid element of SLOTS.
        unsafe { *entry = slot + 1 };
    }
}

/// Frees the tid of a thread that has exited, which the kernel may give to a new task. Its slot
/// stays: its counters belong to the trace.
#[inline(always)]
pub fn release(tid: u32) {
    if let Some(entry) = SLOTS.get_ptr_mut(tid) {
        // SAFETY: a valid element of SLOTS.
        unsafe { *entry = 0 };
    }
}
