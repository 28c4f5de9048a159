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

/// A connection could not be recorded: `CONNS` was full.
pub const CONN_MAP_FULL: u32 = 3;
/// A closed connection's record could not go out: the ring buffer was full. Its counters are lost.
pub const CONN_EVENT_DROPPED: u32 = 4;
/// A block request's latency could not be tracked: the in-flight map refused its entry. The map
/// evicts its oldest entry to make room, so this counts only inserts the kernel failed.
pub const BLOCK_INFLIGHT_FULL: u32 = 5;
/// A descriptor opened by path could not be recorded: the open-fd map was full, so its reads
/// and writes are not counted as file I/O.
pub const FD_MAP_FULL: u32 = 6;

/// Number of slots in `COUNTERS`; keep in step with the names below.
pub const NUM_COUNTERS: u32 = 7;

/// Names for run.json, indexed like the constants above.
pub const NAMES: [&str; NUM_COUNTERS as usize] = [
    "thread_map_full",
    "field_read_failed",
    "slice_lost",
    "conn_map_full",
    "conn_event_dropped",
    "block_inflight_full",
    "fd_map_full",
];
