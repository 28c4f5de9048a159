//! Indices into the `COUNTERS` per-CPU array: every way the kernel side can lose or drop data.
//! Userspace sums each slot over the CPUs and reports all of them in run.json, so nothing is
//! lost silently.

/// A new thread of a traced process could not be added because `THREADS` was full.
pub const THREAD_MAP_FULL: u32 = 0;
/// A tracepoint field could not be read (bpf_probe_read_kernel failed).
pub const FIELD_READ_FAILED: u32 = 1;

/// A slice whose switch in was not seen could not be measured (the kernel's runtime of the task
/// was unreadable), so its on-CPU time is missing.
pub const SLICE_LOST: u32 = 2;

/// Number of slots in `COUNTERS`; keep in step with the names below.
pub const NUM_COUNTERS: u32 = 3;

/// Names for run.json, indexed like the constants above.
pub const NAMES: [&str; NUM_COUNTERS as usize] = ["thread_map_full", "field_read_failed", "slice_lost"];
