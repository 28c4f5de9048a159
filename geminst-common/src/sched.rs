//! The scheduler programs: per-thread on-CPU time, context switches and run-queue wait.

/// Capacity of the `THREADS` array: threads of all traced processes over a whole trace, exited
/// ones included, since their counters are kept. Slots are never reused within a trace.
pub const MAX_THREADS: u32 = 16_384;
/// Default size of the `SLOTS` array (tid -> slot + 1, 0 for threads not traced); userspace sets
/// it to the running kernel's /proc/sys/kernel/pid_max before loading, since every tid is below it.
pub const DEFAULT_PID_MAX: u32 = 4_194_304;
/// Capacity of the `TARGETS` map (processes traced at once).
pub const MAX_TARGETS: u32 = 64;

/// `ThreadStats::flags`: the thread existed when the trace started (found in /proc, not forked).
pub const THREAD_SEEN_AT_START: u32 = 1;
/// `ThreadStats::flags`: the thread exited during the trace (`sched:sched_process_exit`).
pub const THREAD_EXITED: u32 = 2;
/// `ThreadStats::flags`: `switched_in_ns` was set when the thread was registered, not by a
/// switch in that the programs saw; the slice it starts may be shorter.
pub const THREAD_START_PROVISIONAL: u32 = 4;
/// `ThreadStats::flags`: `last_out_runtime_ns` holds the kernel's runtime of the thread.
pub const THREAD_RUNTIME_KNOWN: u32 = 8;

/// `clone(2)` flag that makes the child a thread of the caller's process.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// Bits of `sched_switch`'s `prev_state` that name a sleeping, stopped or dead state
/// (TASK_REPORT plus TASK_REPORT_IDLE, include/linux/sched.h). When none is set the task was
/// still runnable (preempted, or it yielded), which the kernel counts as an involuntary switch
/// (`nivcsw`); a preempted task is reported as TASK_REPORT_MAX (0x100), outside these bits.
pub const PREV_STATE_SLEEP_MASK: u64 = 0xff;

/// Counters of one thread, in its slot of `THREADS` (found through `SLOTS[tid]`). Times are
/// CLOCK_MONOTONIC ns (bpf_ktime_get_ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    pub tgid: u32,
    /// 0 for a slot not in use.
    pub tid: u32,
    pub flags: u32,
    pub _pad: u32,
    /// Time on a CPU, summed over complete slices seen by the trace.
    pub oncpu_ns: u64,
    /// Time runnable but waiting for a CPU (from wakeup or preemption to switch-in).
    pub wait_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub exit_ns: u64,
    /// When the current slice began; 0 while off CPU (or on CPU since before the trace).
    pub switched_in_ns: u64,
    /// When the thread became runnable; 0 when it is not waiting on a run queue.
    pub runnable_since_ns: u64,
    /// The kernel's own runtime of the thread (`task_struct.se.sum_exec_runtime`) at its last
    /// switch out, or when it was registered. Used only to measure a slice whose switch in the
    /// programs did not see (see `unseen_switch_ins`).
    pub last_out_runtime_ns: u64,
    /// Slices whose switch in no program saw: some kernels suppress tracepoints in the context of
    /// chosen tasks (a sandbox hiding its agent, for one), so a switch from such a task to this
    /// thread is invisible. The length of those slices comes from the kernel's runtime.
    pub unseen_switch_ins: u64,
    /// Wall-clock time of slices beyond the kernel's runtime for them: time the hypervisor did not
    /// run the virtual CPU while the thread was current on it (steal).
    pub stolen_ns: u64,

    // Socket, block and file I/O of the thread (sock.rs, block.rs, files.rs).
    pub sock_send_bytes: u64,
    pub sock_recv_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Block requests this thread's I/O started that completed, and their summed latency
    /// (issue to completion).
    pub block_ios: u64,
    pub block_io_ns: u64,

    // Attribution of CPU time to connections (see `crate::sock`).
    /// The socket of the thread's last socket operation (kernel address), 0 if none yet.
    pub conn_sk: u64,
    /// Its connection id, so a recycled socket address is not mistaken for the same connection.
    pub conn_id: u64,
    /// Since when the thread's CPU has not been charged: its last turn to another connection or
    /// switch in; 0 when the current slice's switch in was not seen and no turn happened since.
    pub charge_from_ns: u64,
    /// Time of the current slice charged (or passed over, before a first connection) up to
    /// `charge_from_ns`: the slice's end charges at most the rest of its runtime.
    pub slice_charged_ns: u64,
    /// The connection the start of the current slice belongs to, when its switch in was not seen
    /// and the thread turned to another connection in it; 0 if none. Charged at the slice's end,
    /// with what the slice's runtime leaves.
    pub head_conn_id: u64,
    /// CPU time charged to connections.
    pub conn_cpu_ns: u64,

    // Reads and writes on files opened by path (files.rs).
    pub file_read_bytes: u64,
    pub file_write_bytes: u64,
    /// The read or write syscall in progress: its fd and kind (`SYSCALL_*`).
    pub syscall_fd: u64,
    pub syscall_kind: u32,
    pub _pad2: u32,

    pub comm: [u8; 16],
}

/// `ThreadStats::syscall_kind`.
pub const SYSCALL_NONE: u32 = 0;
pub const SYSCALL_READ: u32 = 1;
pub const SYSCALL_WRITE: u32 = 2;

/// Byte offsets of the tracepoint fields the programs read, taken from
/// /sys/kernel/tracing/events/<group>/<name>/format at load time (they differ between kernels).
/// Handed to the programs as the read-only global `SCHED_OFFSETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedOffsets {
    /// sched:sched_switch `prev_state` and its size in bytes (4 or 8 depending on the kernel).
    pub switch_prev_state: u32,
    pub switch_prev_state_size: u32,
    /// sched:sched_switch `next_pid`.
    pub switch_next_pid: u32,
    /// sched:sched_wakeup `pid`.
    pub wakeup_pid: u32,
    /// sched:sched_wakeup_new `pid`.
    pub wakeup_new_pid: u32,
    /// task:task_newtask `pid` and `clone_flags`.
    pub newtask_pid: u32,
    pub newtask_clone_flags: u32,
    /// Byte offset of `se.sum_exec_runtime` in `struct task_struct`, from the kernel's BTF;
    /// 0 when unknown (then slices with an unseen start are lost and counted).
    pub task_sum_exec_runtime: u32,
}

crate::user_pod!(ThreadStats, SchedOffsets);
