//! geminst's eBPF programs: one module per hook family. Everything aggregates in maps; userspace
//! reads the maps when the trace ends (and at each time-series tick).
#![no_std]
#![no_main]
// For the atomic fetch-add that allocates thread slots (see threads::take_slot).
#![feature(core_intrinsics)]
// For direct loads from tracepoint records at load-time offsets (see shared::direct).
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod attribution;
mod block;
mod conns;
mod files;
mod sched;
mod shared;
mod sock;
mod threads;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach here, so this is never called.
    loop {}
}

/// GPL-compatible licence, required for the tracing helpers (bpf_probe_read_kernel and others).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
