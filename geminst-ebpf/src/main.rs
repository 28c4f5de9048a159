//! geminst's eBPF programs: one module per hook family. Everything aggregates in maps; userspace
//! reads the maps when the trace ends (and at each time-series tick).
#![no_std]
#![no_main]

mod sched;
mod shared;

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
