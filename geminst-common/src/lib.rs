//! Types shared by geminst's eBPF programs (kernel side) and its userspace.
//!
//! Every struct is `#[repr(C)]`, ordered so that no field needs implicit padding, and uses `u32`
//! flags rather than `bool`, because both sides read the same bytes out of BPF maps.
#![no_std]

pub mod block;
pub mod counters;
pub mod files;
pub mod sched;
pub mod sock;

/// Implements `aya::Pod` for shared types on the userspace side only.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is #[repr(C)], Copy, has no padding and every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use user_pod;
